//! Client → relay messages (docs/protocol.md §2) and how an inbound frame is decoded.

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::server::ServerMessage;

/// Client → server. Fields are optional because the server, not serde, decides which
/// reply a missing field earns (`Invalid request`, `Access denied`, ...). Fields the relay
/// does not act on are still declared: a known type with an ill-typed field is malformed.
#[allow(dead_code)]
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

/// The `message` request (§2.10). Fields the relay does not act on are declared so that an
/// ill-typed one makes the frame malformed, as upstream's validation does.
#[allow(dead_code)]
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

/// A client-sent id: only the hyphenated 8-4-4-4-12 form, as upstream's regex accepts.
pub fn parse_id(raw: Option<&str>) -> Option<Uuid> {
    let raw = raw?;
    (raw.len() == 36)
        .then(|| Uuid::parse_str(raw).ok())
        .flatten()
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
}
