//! Relay → client messages (docs/protocol.md §3), serialized once per event.

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::texts;
use crate::store::models::{ActiveJobInfo, HistoryItem, JobRow, ProjectListItem, ProjectSummary};

/// Server → client.
#[derive(Debug, Clone, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage {
    Init {
        user_id: Uuid,
        projects: Vec<ProjectListItem>,
    },
    Pong,
    Error(ErrorBody),
    ProjectCreated {
        project: ProjectSummary,
        projects: Vec<ProjectListItem>,
    },
    ProjectSelected {
        project_id: Uuid,
        history: Vec<HistoryItem>,
        versions: Vec<VersionItem>,
        active_job: Option<JobRow>,
    },
    ProjectDeleted {
        project_id: Uuid,
        projects: Vec<ProjectListItem>,
    },
    ProjectRenamed {
        project: Option<ProjectSummary>,
        #[serde(skip_serializing_if = "Option::is_none")]
        projects: Option<Vec<ProjectListItem>>,
    },
    ProjectInfo {
        project: ProjectSummary,
    },
    VersionsList {
        project_id: Uuid,
        versions: Vec<VersionItem>,
        current_head: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        auto_initialized: Option<bool>,
    },
    VersionEdits {
        project_id: Uuid,
        version_hash: String,
        edits: Vec<Value>,
        summary: String,
    },
    RestoreProgress {
        stage: String,
        message: String,
    },
    VersionRestored {
        project_id: Uuid,
        version_id: String,
    },
    JobStarted {
        job: JobRow,
        is_existing: bool,
    },
    Started {
        job: JobRow,
    },
    Progress {
        job: JobRow,
        progress: i32,
        message: Option<String>,
    },
    Stream {
        content: String,
    },
    Completed {
        job: JobRow,
        result: JobResult,
    },
    Failed {
        job: JobRow,
        error: String,
        code: String,
        user_message: String,
        recoverable: bool,
        exit_code: Option<i32>,
    },
    Cancelled {
        #[serde(skip_serializing_if = "Option::is_none")]
        job: Option<JobRow>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        job_id: Option<Uuid>,
    },
    GameUpdated {
        user_id: Uuid,
        project_id: Uuid,
    },
    LimitExceeded {
        limit: usize,
        in_progress: usize,
        jobs: Vec<ActiveJobInfo>,
        pending_prompt: PendingPrompt,
    },
    JobStatus {
        job: Option<JobRow>,
    },
    Subscribed {
        job_id: Uuid,
    },
    JobCancelled {
        job_id: Uuid,
    },
}

/// Both error envelopes of §1.7: `{message}` or `{error:{code, message, ...}}`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<CodedError>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CodedError {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<String>,
    /// Set on errors the user can simply retry (e.g. while an instance drains).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recoverable: Option<bool>,
}

/// `completed.result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionItem {
    pub id: String,
    pub number: usize,
    pub message: String,
    pub timestamp: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingPrompt {
    pub content: String,
    pub attached_assets: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected_style: Option<Value>,
}

impl ServerMessage {
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error(ErrorBody {
            message: Some(message.into()),
            error: None,
        })
    }

    pub fn coded_error(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Error(ErrorBody {
            message: None,
            error: Some(CodedError {
                code: code.into(),
                message: message.into(),
                remaining: None,
                limit: None,
                reset_at: None,
                recoverable: None,
            }),
        })
    }

    /// A coded error the user can simply retry later.
    pub fn retryable_error(code: impl Into<String>, message: impl Into<String>) -> Self {
        let mut error = Self::coded_error(code, message);
        if let Self::Error(ErrorBody {
            error: Some(coded), ..
        }) = &mut error
        {
            coded.recoverable = Some(true);
        }
        error
    }

    pub fn rate_limited() -> Self {
        Self::retryable_error("RATE_LIMITED", texts::RATE_LIMITED)
    }

    /// One serialization, shared by every socket the frame goes to.
    pub fn to_frame(&self) -> Utf8Bytes {
        // Serializing these plain data types cannot fail: no maps with non-string keys,
        // no custom serializers that error.
        match serde_json::to_string(self) {
            Ok(text) => Utf8Bytes::from(text),
            Err(e) => {
                tracing::error!(error = %e, "server message failed to serialize");
                Utf8Bytes::from_static(r#"{"type":"error","message":"Invalid message format"}"#)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::texts;
    use uuid::Uuid;

    #[test]
    fn serializes_exact_wire_shapes() {
        let frame = ServerMessage::Pong.to_frame();
        assert_eq!(frame.as_str(), r#"{"type":"pong"}"#);
        let frame = ServerMessage::error("Access denied").to_frame();
        assert_eq!(
            frame.as_str(),
            r#"{"type":"error","message":"Access denied"}"#
        );
        let frame =
            ServerMessage::coded_error("SYSTEM_LIMIT_EXCEEDED", texts::SYSTEM_BUSY).to_frame();
        assert_eq!(
            frame.as_str(),
            r#"{"type":"error","error":{"code":"SYSTEM_LIMIT_EXCEEDED","message":"System is busy. Please try again in a moment."}}"#
        );
        let id = Uuid::nil();
        let frame = ServerMessage::Cancelled {
            job: None,
            message: Some(texts::JOB_CANCELLED.into()),
            job_id: Some(id),
        }
        .to_frame();
        assert_eq!(
            frame.as_str(),
            r#"{"type":"cancelled","message":"Job cancelled","jobId":"00000000-0000-0000-0000-000000000000"}"#
        );
        let frame = ServerMessage::GameUpdated {
            user_id: id,
            project_id: id,
        }
        .to_frame();
        assert!(frame
            .as_str()
            .starts_with(r#"{"type":"gameUpdated","userId":"#));
    }
}
