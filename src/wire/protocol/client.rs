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
    /// The message to act on.
    pub content: Option<String>,
    /// The message as the user typed it, if it differs from `content`.
    pub raw_content: Option<String>,
    /// Assets the user attached.
    pub attached_assets: Option<Value>,
    /// Debug switches (see `DebugOptions`).
    pub debug_options: Option<Value>,
    /// Set when the frontend asks to fix an error automatically.
    pub auto_fix: Option<Value>,
    /// The style the user chose (see `SelectedStyle`).
    pub selected_style: Option<Value>,
    /// Truthy to skip the style choice.
    pub skip_style_selection: Option<Value>,
}

/// `message.debugOptions` (§2.10): hidden toggles of the editor.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DebugOptions {
    /// Turns skills off for this job.
    #[serde(default, deserialize_with = "truthy")]
    pub disable_skills: bool,
}

/// `message.selectedStyle` (§2.10): the card the user clicked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectedStyle {
    /// "2d" or "3d".
    #[serde(default)]
    pub dimension: String,
    /// The chosen style preset's id.
    #[serde(default)]
    pub style_id: String,
}

/// JavaScript truthiness for the flags the frontend sends as `true` (the server never
/// type-checked them, so `1` or `"yes"` count too).
fn truthy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(is_truthy(&Value::deserialize(d)?))
}

fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

impl GenerationRequest {
    /// `debugOptions`, any malformed part read as off.
    pub fn debug_options(&self) -> DebugOptions {
        self.debug_options
            .as_ref()
            .and_then(|v| DebugOptions::deserialize(v).ok())
            .unwrap_or_default()
    }

    /// Whether the client asked to skip the style choice.
    pub fn skip_style_selection(&self) -> bool {
        self.skip_style_selection.as_ref().is_some_and(is_truthy)
    }

    /// The clicked card, when `selectedStyle` is an object (anything else counts as absent).
    pub fn selected_style(&self) -> Option<SelectedStyle> {
        let value = self.selected_style.as_ref().filter(|v| is_truthy(v))?;
        SelectedStyle::deserialize(value).ok()
    }
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
    /// The error reply sent for this parse failure.
    pub fn reply(self) -> ServerMessage {
        match self {
            Self::Malformed => ServerMessage::error("Invalid message format"),
            Self::UnknownType => ServerMessage::error("Unknown message type"),
        }
    }
}

impl ClientMessage {
    /// Parses one text frame from the client.
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
