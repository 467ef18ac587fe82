//! Maps decoded SSE `data:` payloads of `generate_game` (`docs/backends.md` §2) onto
//! [`BackendEvent`]s, and decides the terminal event when the stream ends.

use serde_json::Value;

use crate::backend::claude::{self, CliEvent};
use crate::backend::failure::UpstreamError;
use crate::backend::{BackendEvent, Failure};

/// What the stream has told us so far, and how each payload maps onto backend events.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    /// The CLI's `result` line said `is_error` (Modal itself only looks at the exit code).
    cli_error: bool,
    exit_code: Option<i32>,
    git_commit: Option<String>,
}

impl StreamState {
    /// Interprets one `data:` payload: zero or more non-terminal events, or one terminal event.
    pub(super) fn on_payload(&mut self, payload: &str) -> Vec<BackendEvent> {
        if let Some(events) = claude::interpret_assistant(payload) {
            return self.cli_events(events);
        }
        let value: Value = match serde_json::from_str(payload) {
            Ok(value) => value,
            Err(e) => {
                tracing::warn!(error = %e, bytes = payload.len(), "skipping malformed SSE data line");
                return Vec::new();
            }
        };
        let text = |key: &str| value.get(key).and_then(Value::as_str);
        match text("type") {
            Some("status") => text("message")
                .map(|message| BackendEvent::Status(message.to_string()))
                .into_iter()
                .collect(),
            Some("log") => {
                tracing::debug!(
                    content = text("content"),
                    level = text("level"),
                    "modal log"
                );
                Vec::new()
            }
            Some("warning") => {
                tracing::warn!(message = text("message"), "modal warning");
                Vec::new()
            }
            Some("debug") => {
                if let Some(code) = value.get("exit_code").and_then(Value::as_i64) {
                    self.exit_code = i32::try_from(code).ok();
                }
                if let Some(commit) = text("git_commit") {
                    self.git_commit = Some(commit.to_string());
                }
                tracing::debug!(exit_code = ?self.exit_code, git_commit = ?self.git_commit, "modal debug");
                Vec::new()
            }
            Some("done") => vec![self.done()],
            Some("error") => vec![BackendEvent::Failed(Failure::from(upstream_error(value)))],
            _ => self.cli_events(claude::interpret(&value)),
        }
    }

    fn cli_events(&mut self, events: Vec<CliEvent>) -> Vec<BackendEvent> {
        events
            .into_iter()
            .filter_map(|event| match event {
                CliEvent::Text(text) => Some(BackendEvent::Text(text)),
                CliEvent::ToolUse(name) => Some(BackendEvent::ToolUse(name)),
                CliEvent::Result { is_error, .. } => {
                    self.cli_error |= is_error;
                    None
                }
            })
            .collect()
    }

    fn done(&self) -> BackendEvent {
        if self.cli_error {
            return BackendEvent::Failed(
                Failure::cli_reported_error(Some(0))
                    .with_detail("CLI result reported is_error, Modal sent done"),
            );
        }
        BackendEvent::Completed {
            commit: self
                .git_commit
                .as_deref()
                .filter(|c| is_commit_hash(c))
                .map(str::to_string),
        }
    }

    /// The body ended without `done` or `error`: never a success (docs/backends.md §7 item 3).
    pub(super) fn at_end(&self) -> BackendEvent {
        match self.exit_code {
            Some(code) if code != 0 => BackendEvent::Failed(
                Failure::from_exit_code(code)
                    .with_detail(format!("stream ended after CLI exit code {code}")),
            ),
            _ => BackendEvent::Failed(Failure::stream_incomplete()),
        }
    }
}

fn upstream_error(value: Value) -> UpstreamError {
    serde_json::from_value(value).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "upstream error event has unexpected field types");
        UpstreamError {
            code: None,
            user_message: None,
            message: None,
            error: None,
            recoverable: None,
            exit_code: None,
        }
    })
}

/// Upstream reports git's last output line as the hash, e.g. "nothing to commit, working tree clean".
fn is_commit_hash(text: &str) -> bool {
    (7..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_must_be_a_hash() {
        assert!(is_commit_hash("3f9c2ab"));
        assert!(is_commit_hash(&"a".repeat(40)));
        assert!(!is_commit_hash("3f9c2a"));
        assert!(!is_commit_hash(&"a".repeat(41)));
        assert!(!is_commit_hash("nothing to commit, working tree clean"));
    }

    #[test]
    fn payloads_map_to_events() {
        let mut state = StreamState::default();
        assert_eq!(
            state.on_payload(r#"{"type": "status", "message": "Loading skills..."}"#),
            vec![BackendEvent::Status("Loading skills...".into())]
        );
        assert!(state
            .on_payload(r#"{"type": "log", "content": "Git commit created: 3f9c2ab"}"#)
            .is_empty());
        assert!(state
            .on_payload(r#"{"type": "warning", "message": "Output limit reached"}"#)
            .is_empty());
        assert!(state.on_payload("{oops").is_empty());
        assert_eq!(
            state.on_payload(r#"{"type":"assistant","message":{"content":[{"type":"text","text":"hi"},{"type":"tool_use","name":"Write"}]}}"#),
            vec![BackendEvent::Text("hi".into()), BackendEvent::ToolUse("Write".into())]
        );
        assert!(state
            .on_payload(r#"{"type": "debug", "exit_code": 0, "git_commit": "3f9c2ab"}"#)
            .is_empty());
        assert_eq!(
            state.on_payload(r#"{"type": "done", "exit_code": 0}"#),
            vec![BackendEvent::Completed {
                commit: Some("3f9c2ab".into())
            }]
        );
    }

    #[test]
    fn cli_error_result_turns_done_into_failure() {
        let mut state = StreamState::default();
        assert!(state
            .on_payload(r#"{"type":"result","is_error":true,"subtype":"error_during_execution"}"#)
            .is_empty());
        match state
            .on_payload(r#"{"type": "done", "exit_code": 0}"#)
            .as_slice()
        {
            [BackendEvent::Failed(f)] => assert_eq!(
                (f.code.as_str(), f.exit_code),
                ("CLI_GENERAL_ERROR", Some(0))
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn error_event_with_odd_types_still_fails() {
        let mut state = StreamState::default();
        match state
            .on_payload(r#"{"type": "error", "code": 7}"#)
            .as_slice()
        {
            [BackendEvent::Failed(f)] => assert_eq!(f.code, "UNKNOWN_ERROR"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn end_without_terminal_is_a_failure() {
        let mut state = StreamState::default();
        assert_eq!(
            state.at_end(),
            BackendEvent::Failed(Failure::stream_incomplete())
        );
        state.on_payload(r#"{"type": "debug", "exit_code": 137}"#);
        match state.at_end() {
            BackendEvent::Failed(f) => {
                assert_eq!((f.code.as_str(), f.exit_code), ("CLI_KILLED", Some(137)))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
