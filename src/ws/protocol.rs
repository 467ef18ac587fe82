//! The browser ⇄ relay WebSocket messages (`ws-protocol.md` §2 and §3), as typed enums.
//! Every frame is one JSON object whose `type` names the variant.

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::store::models::{ActiveJobInfo, HistoryItem, JobRow, ProjectListItem, ProjectSummary};

/// Client → server. Fields are optional because the server, not serde, decides which
/// reply a missing field earns (`Invalid request`, `Access denied`, ...).
#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ClientMessage {
    Init {
        #[serde(rename = "access_token")]
        access_token: Option<String>,
        session_id: Option<String>,
    },
    Ping,
    ViewState {
        project_id: Option<String>,
        visible: Option<Value>,
    },
    DeselectProject,
    SelectProject {
        project_id: Option<String>,
    },
    CreateProject {
        name: Option<String>,
    },
    DeleteProject {
        project_id: Option<String>,
    },
    RenameProject {
        project_id: Option<String>,
        name: Option<String>,
    },
    GetProjectInfo {
        project_id: Option<String>,
    },
    Message(GenerationRequest),
    Cancel {
        job_id: Option<String>,
    },
    GetVersions {
        project_id: Option<String>,
    },
    GetVersionEdits {
        project_id: Option<String>,
        version_hash: Option<String>,
    },
    RestoreVersion {
        project_id: Option<String>,
        version_id: Option<String>,
    },
    GetJobStatus {
        job_id: Option<String>,
    },
    SubscribeJob {
        job_id: Option<String>,
    },
    CancelJob {
        job_id: Option<String>,
    },
    TestError {
        error_type: Option<String>,
    },
    #[serde(other)]
    Unknown,
}

/// The `message` request (§2.10). Only `content` drives generation; the rest is echoed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationRequest {
    pub content: Option<String>,
    pub raw_content: Option<String>,
    pub attached_assets: Option<Value>,
    pub debug_options: Option<Value>,
    pub auto_fix: Option<Value>,
    pub selected_style: Option<Value>,
    pub skip_style_selection: Option<Value>,
}

/// `message.debugOptions` (§2.10): hidden toggles of the editor.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DebugOptions {
    #[serde(default, deserialize_with = "truthy")]
    pub disable_skills: bool,
    #[serde(default, deserialize_with = "truthy")]
    pub use_claude: bool,
}

/// `message.selectedStyle` (§2.10): the card the user clicked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectedStyle {
    #[serde(default)]
    pub dimension: String,
    #[serde(default)]
    pub style_id: String,
}

/// JavaScript truthiness for the flags the frontend sends as `true` (the server never
/// type-checked them, so `1` or `"yes"` count too).
fn truthy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => false,
        Value::Bool(b) => b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    })
}

impl GenerationRequest {
    /// `debugOptions`, any malformed part read as off.
    pub fn debug_options(&self) -> DebugOptions {
        self.debug_options
            .as_ref()
            .and_then(|v| DebugOptions::deserialize(v).ok())
            .unwrap_or_default()
    }

    pub fn auto_fix(&self) -> bool {
        self.auto_fix.as_ref().is_some_and(is_truthy)
    }

    pub fn skip_style_selection(&self) -> bool {
        self.skip_style_selection.as_ref().is_some_and(is_truthy)
    }

    /// The clicked card, when `selectedStyle` is an object (anything else counts as absent).
    pub fn selected_style(&self) -> Option<SelectedStyle> {
        let value = self.selected_style.as_ref().filter(|v| is_truthy(v))?;
        SelectedStyle::deserialize(value).ok()
    }
}

fn is_truthy(value: &Value) -> bool {
    truthy(value.clone()).unwrap_or(false)
}

/// Why an inbound frame could not be turned into a [`ClientMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON, not an object, no string `type`, or a known type with ill-typed fields.
    Malformed,
    /// A well-formed object whose `type` the relay does not know.
    UnknownType,
}

impl ParseError {
    pub fn reply(self) -> ServerMessage {
        match self {
            Self::Malformed => ServerMessage::error("Invalid message format"),
            Self::UnknownType => ServerMessage::error("Unknown message type"),
        }
    }
}

impl ClientMessage {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let value: Value = serde_json::from_str(text).map_err(|_| ParseError::Malformed)?;
        match value.get("type") {
            Some(Value::String(_)) => {}
            _ => return Err(ParseError::Malformed),
        }
        match ClientMessage::deserialize(value) {
            Ok(ClientMessage::Unknown) => Err(ParseError::UnknownType),
            Ok(message) => Ok(message),
            Err(_) => Err(ParseError::Malformed),
        }
    }
}

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

/// One card of `styleOptions`; `imageUrl` is `null` when the style has no picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StyleCard {
    pub id: String,
    pub name: String,
    pub image_url: Option<String>,
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

/// Exact texts the frontend reacts to or shows.
pub mod texts {
    pub const ACCESS_TOKEN_REQUIRED: &str = "access_token required";
    pub const TOKEN_EXPIRED: &str = "Token expired";
    pub const NOT_INITIALIZED: &str = "Not initialized";
    pub const NO_PROJECT_SELECTED: &str = "No project selected";
    pub const INVALID_REQUEST: &str = "Invalid request";
    pub const NOT_AUTHENTICATED: &str = "Not authenticated";
    pub const ACCESS_DENIED: &str = "Access denied";
    pub const JOB_ID_REQUIRED: &str = "Job ID required";
    pub const JOB_NOT_FOUND: &str = "Job not found";
    pub const INVALID_MESSAGE_FORMAT: &str = "Invalid message format";
    pub const INVALID_VERSION_ID: &str = "Invalid version ID format";
    pub const JOB_CANCELLED: &str = "Job cancelled";
    pub const OPERATION_CANCELLED: &str = "Operation cancelled";
    pub const SYSTEM_BUSY: &str = "System is busy. Please try again in a moment.";
    pub const FAILED_TO_CANCEL: &str = "Failed to cancel job";
    pub const RATE_LIMITED: &str = "リクエストが多すぎます。しばらくしてからもう一度お試しください";
    pub const MESSAGE_TOO_LARGE: &str = "Message too large";
}

/// WebSocket close codes and reasons of §1.3 plus the drain code.
pub mod close {
    pub const AUTH_FAILED: u16 = 4001;
    pub const AUTH_TIMEOUT: u16 = 4008;
    /// "Service restart": the frontend reconnects, the load balancer picks another instance.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Policy violation: an oversized frame, or a client too slow to read its queue.
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const REASON_AUTH_REQUIRED: &str = "Authentication required";
    pub const REASON_AUTH_FAILED: &str = "Authentication failed";
    pub const REASON_AUTH_TIMEOUT: &str = "Authentication timeout";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_messages() {
        let m =
            ClientMessage::parse(r#"{"type":"init","access_token":"t","sessionId":"s"}"#).unwrap();
        assert!(
            matches!(m, ClientMessage::Init { access_token: Some(t), session_id: Some(s) } if t == "t" && s == "s")
        );
        let m = ClientMessage::parse(r#"{"type":"ping","extra":1}"#).unwrap();
        assert!(matches!(m, ClientMessage::Ping));
        let m =
            ClientMessage::parse(r#"{"type":"message","content":"hi","autoFix":true}"#).unwrap();
        assert!(
            matches!(m, ClientMessage::Message(GenerationRequest { content: Some(c), .. }) if c == "hi")
        );
        let m = ClientMessage::parse(r#"{"type":"cancel"}"#).unwrap();
        assert!(matches!(m, ClientMessage::Cancel { job_id: None }));
    }

    #[test]
    fn distinguishes_malformed_from_unknown() {
        assert_eq!(
            ClientMessage::parse("{not json").unwrap_err(),
            ParseError::Malformed
        );
        assert_eq!(
            ClientMessage::parse("[1,2]").unwrap_err(),
            ParseError::Malformed
        );
        assert_eq!(
            ClientMessage::parse(r#"{"x":1}"#).unwrap_err(),
            ParseError::Malformed
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":5}"#).unwrap_err(),
            ParseError::Malformed
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"selectProject","projectId":7}"#).unwrap_err(),
            ParseError::Malformed
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"fly"}"#).unwrap_err(),
            ParseError::UnknownType
        );
    }

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
