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
    /// The style picker (§3.13).
    StyleOptions {
        dimension: String,
        styles: Vec<StyleCard>,
        original_message: String,
    },
    /// A system line; only the style gate's reminder (§3.14).
    Info {
        message: String,
    },
    /// A chat answer with suggestion buttons (§3.20); `mode` is always `chat`.
    GeminiChat {
        mode: String,
        message: String,
        suggestions: Vec<String>,
    },
    /// The restore confirmation (§3.21); `mode` is always `restore`.
    GeminiRestore {
        mode: String,
        message: String,
        confirm_label: String,
        cancel_label: String,
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
    /// Plain error text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Coded error, instead of plain text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<CodedError>,
}

/// An error with a machine-readable code.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CodedError {
    /// Machine-readable error code.
    pub code: String,
    /// Text the user is shown.
    pub message: String,
    /// Uses left, for quota errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
    /// The limit, for quota errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// When the quota resets, for quota errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<String>,
    /// Set on errors the user can simply retry (e.g. while an instance drains).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recoverable: Option<bool>,
}

/// `completed.result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// Text shown when the job completes.
    pub message: String,
    /// Generation mode, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Which generator produced it, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
    /// The generated page, if sent inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

impl JobResult {
    /// The result a job row stores (`jobs.result`, JSON), or the plain "game updated" one
    /// when it stores none that reads.
    pub fn stored_or_default(stored: Option<&str>) -> Self {
        stored
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_else(|| JobResult {
                message: super::texts::GAME_UPDATED.into(),
                mode: None,
                generator: None,
                html: None,
            })
    }
}

/// One entry of a project's version list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionItem {
    /// The version's id (its commit hash).
    pub id: String,
    /// Position in the list, starting at 1.
    pub number: usize,
    /// The commit message.
    pub message: String,
    /// When the version was saved.
    pub timestamp: String,
    /// The commit hash.
    pub hash: String,
}

/// One card of `styleOptions`; `imageUrl` is `null` when the style has no picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StyleCard {
    /// The style's id.
    pub id: String,
    /// Name shown to the user.
    pub name: String,
    /// Preview image, if there is one.
    pub image_url: Option<String>,
}

/// A prompt waiting for the user's style choice.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingPrompt {
    /// The waiting message.
    pub content: String,
    /// Assets attached to it.
    pub attached_assets: Value,
    /// The style already chosen, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected_style: Option<Value>,
}

impl ServerMessage {
    /// A plain error message.
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error(ErrorBody {
            message: Some(message.into()),
            error: None,
        })
    }

    /// An error with a code and a message.
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

    /// The reply sent when a user is rate limited.
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
