//! Modal `generate_game` backend: one POST, then the SSE stream of `modal-and-cli.md` §2
//! mapped onto [`BackendEvent`]s. The POST is never re-sent (decision 4); cancelling drops
//! the upstream connection (decision 5).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::claude::{self, CliEvent};
use super::failure::UpstreamError;
use super::{Backend, BackendEvent, BackendKind, EventStream, Failure, RunRequest};
use crate::config::{ModalConfig, Secret};

const SECRET_HEADER: &str = "X-Modal-Secret";
/// How much of a non-2xx body is kept for the log line.
const ERROR_BODY_LIMIT: usize = 4096;
/// A single SSE line longer than this is dropped instead of buffered without bound. A full
/// `index.html` Write tool call is one line, so the cap is generous.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// Events read ahead of a slow consumer before the reader waits.
const CHANNEL_CAPACITY: usize = 32;

pub struct ModalBackend {
    shared: Arc<Shared>,
}

struct Shared {
    client: reqwest::Client,
    endpoint: String,
    secret: Secret,
    idle_timeout: Duration,
}

#[derive(Serialize)]
struct GenerateBody<'a> {
    user_id: String,
    project_id: String,
    prompt: &'a str,
}

impl ModalBackend {
    pub fn new(config: &ModalConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            // Only a connect timeout: a healthy generation streams for many minutes, and
            // silence is bounded by the idle timeout instead.
            .connect_timeout(config.connect_timeout())
            // A 307/308 would make reqwest POST the paid generation a second time.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                endpoint: config.endpoint.clone(),
                secret: config.secret.clone(),
                idle_timeout: config.idle_timeout(),
            }),
        })
    }
}

impl Backend for ModalBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Modal
    }

    fn blockers(&self) -> Vec<String> {
        if self.shared.secret.is_empty() {
            vec!["MODAL_INTERNAL_SECRET is empty: Modal refuses every request without it".into()]
        } else {
            Vec::new()
        }
    }

    fn run(&self, request: RunRequest, cancel: CancellationToken) -> EventStream {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let shared = Arc::clone(&self.shared);
        let span = tracing::info_span!(
            "modal_run",
            job_id = %request.job_id,
            user_id = %request.user_id,
            project_id = %request.project_id,
        );
        // The reader runs inside the consumer's own task (no extra task, no cross-thread
        // wake-up per event). Dropping the stream drops the reader and with it the response,
        // which closes the upstream connection; a cancel ends the reader at its next poll.
        let reader = async move {
            tokio::select! {
                biased;
                () = cancel.cancelled() => tracing::info!("cancelled, upstream connection dropped"),
                () = shared.execute(&request, &tx) => {}
            }
        }
        .instrument(span);
        Box::pin(Driven {
            reader: Some(Box::pin(reader)),
            events: rx,
        })
    }
}

/// A stream whose producer is polled by whoever polls the stream.
struct Driven {
    reader: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    events: mpsc::Receiver<BackendEvent>,
}

impl Stream for Driven {
    type Item = BackendEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BackendEvent>> {
        if let Some(reader) = self.reader.as_mut() {
            if reader.as_mut().poll(cx).is_ready() {
                // Its sender is gone with it: the receiver ends once drained.
                self.reader = None;
            }
        }
        self.events.poll_recv(cx)
    }
}

impl Shared {
    async fn execute(&self, request: &RunRequest, tx: &mpsc::Sender<BackendEvent>) {
        let terminal = self.generate(request, tx).await;
        match &terminal {
            BackendEvent::Failed(f) => tracing::warn!(
                code = %f.code,
                exit_code = ?f.exit_code,
                detail = %f.detail,
                "generation failed"
            ),
            _ => tracing::info!("generation completed"),
        }
        // An error means the consumer is gone, and this reader with it.
        let _ = tx.send(terminal).await;
    }

    /// Runs the request and forwards non-terminal events; returns the terminal event.
    async fn generate(
        &self,
        request: &RunRequest,
        tx: &mpsc::Sender<BackendEvent>,
    ) -> BackendEvent {
        let mut response = match self.post(request).await {
            Ok(response) => response,
            Err(failure) => return BackendEvent::Failed(failure),
        };
        let mut lines = SseLines::new(MAX_LINE_BYTES);
        let mut state = StreamState::default();
        loop {
            let chunk = match timeout(self.idle_timeout, response.chunk()).await {
                Err(_) => {
                    return BackendEvent::Failed(Failure::stream_idle(self.idle_timeout.as_secs()))
                }
                Ok(Err(e)) => {
                    return BackendEvent::Failed(Failure::stream_dropped(error_chain(&e)))
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
            for payload in lines.push(&chunk) {
                if let Some(terminal) = forward(state.on_payload(&payload), tx).await {
                    return terminal;
                }
            }
        }
        // Like Express, a final `data:` line without its newline still counts.
        if let Some(payload) = lines.finish() {
            if let Some(terminal) = forward(state.on_payload(&payload), tx).await {
                return terminal;
            }
        }
        state.at_end()
    }

    async fn post(&self, request: &RunRequest) -> Result<reqwest::Response, Failure> {
        let mut secret = HeaderValue::from_str(self.secret.expose())
            .map_err(|_| Failure::internal("MODAL_INTERNAL_SECRET is not a valid header value"))?;
        secret.set_sensitive(true);
        let body = GenerateBody {
            user_id: request.user_id.hyphenated().to_string(),
            project_id: request.project_id.hyphenated().to_string(),
            prompt: &request.prompt,
        };
        let send = self
            .client
            .post(&self.endpoint)
            .header(CONTENT_TYPE, "application/json")
            .header(SECRET_HEADER, secret)
            .json(&body)
            .send();
        // Waiting for the response head is waiting for upstream data too.
        let response = match timeout(self.idle_timeout, send).await {
            Err(_) => return Err(Failure::stream_idle(self.idle_timeout.as_secs())),
            Ok(Err(e)) => return Err(Failure::network(error_chain(&e))),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            let body = self.read_error_body(response).await;
            return Err(Failure::upstream_http(status.as_u16(), &body));
        }
        Ok(response)
    }

    /// The first few KiB of an error body, for the log line; whatever arrived in time.
    async fn read_error_body(&self, mut response: reqwest::Response) -> String {
        let mut body = Vec::new();
        let read = async {
            while body.len() < ERROR_BODY_LIMIT {
                match response.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    _ => break,
                }
            }
        };
        let _ = timeout(self.idle_timeout, read).await;
        body.truncate(ERROR_BODY_LIMIT);
        String::from_utf8_lossy(&body).into_owned()
    }
}

/// Sends the non-terminal events in order; returns the terminal one, if any, unsent.
async fn forward(
    events: Vec<BackendEvent>,
    tx: &mpsc::Sender<BackendEvent>,
) -> Option<BackendEvent> {
    for event in events {
        if event.is_terminal() {
            return Some(event);
        }
        // An error means the consumer is gone, and this reader with it.
        let _ = tx.send(event).await;
    }
    None
}

/// `error: cause: cause...` — reqwest's own message omits the useful part (e.g. "Connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What the stream has told us so far, and how each payload maps onto backend events.
#[derive(Debug, Default)]
struct StreamState {
    /// The CLI's `result` line said `is_error` (Modal itself only looks at the exit code).
    cli_error: bool,
    exit_code: Option<i32>,
    git_commit: Option<String>,
}

impl StreamState {
    /// Interprets one `data:` payload: zero or more non-terminal events, or one terminal event.
    fn on_payload(&mut self, payload: &str) -> Vec<BackendEvent> {
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
            _ => claude::interpret(&value)
                .into_iter()
                .filter_map(|event| match event {
                    CliEvent::Text(text) => Some(BackendEvent::Text(text)),
                    CliEvent::ToolUse(name) => Some(BackendEvent::ToolUse(name)),
                    CliEvent::Result { is_error, .. } => {
                        self.cli_error |= is_error;
                        None
                    }
                })
                .collect(),
        }
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

    /// The body ended without `done` or `error`: never a success (spec §7 item 3).
    fn at_end(&self) -> BackendEvent {
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

/// Splits an SSE body into `data:` payloads (§3.1). Bytes are buffered until a `\n`, so a
/// chunk may end anywhere, even inside a UTF-8 character. Written by hand because
/// `eventsource-stream` 0.2 stalls for good on one invalid UTF-8 byte and drops a final
/// line without its blank line.
struct SseLines {
    buffer: Vec<u8>,
    max_line: usize,
    /// The current line outgrew `max_line`; skip to its end.
    discarding: bool,
}

impl SseLines {
    fn new(max_line: usize) -> Self {
        Self {
            buffer: Vec::new(),
            max_line,
            discarding: false,
        }
    }

    fn push(&mut self, mut chunk: &[u8]) -> Vec<String> {
        let mut payloads = Vec::new();
        while let Some(at) = chunk.iter().position(|&b| b == b'\n') {
            if !self.discarding {
                self.buffer.extend_from_slice(&chunk[..at]);
                payloads.extend(data_payload(&self.buffer));
            }
            self.buffer.clear();
            self.discarding = false;
            chunk = &chunk[at + 1..];
        }
        if !self.discarding {
            self.buffer.extend_from_slice(chunk);
            if self.buffer.len() > self.max_line {
                tracing::warn!(limit = self.max_line, "skipping an overlong SSE line");
                self.buffer = Vec::new();
                self.discarding = true;
            }
        }
        payloads
    }

    /// The unterminated last line, if it is a `data:` line.
    fn finish(&mut self) -> Option<String> {
        let line = std::mem::take(&mut self.buffer);
        if self.discarding {
            return None;
        }
        data_payload(&line)
    }
}

/// The payload of a `data:` line (one optional space after the colon), trimmed; other
/// lines (blank, `event:`, `id:`, comments) carry nothing for us.
fn data_payload(line: &[u8]) -> Option<String> {
    // Lossy: an invalid byte spoils at most its own line.
    let line = String::from_utf8_lossy(line);
    let rest = line.trim().strip_prefix("data:")?;
    let payload = rest.strip_prefix(' ').unwrap_or(rest).trim();
    (!payload.is_empty()).then(|| payload.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(lines: &mut SseLines, chunks: &[&[u8]]) -> Vec<String> {
        let mut out: Vec<String> = chunks.iter().flat_map(|c| lines.push(c)).collect();
        out.extend(lines.finish());
        out
    }

    #[test]
    fn lines_split_at_every_byte_including_inside_characters() {
        let body = "data: {\"t\":\"ジャンプ力\"}\n\n: comment\nevent: x\r\ndata:{\"n\":1}\r\n\r\n";
        let bytes = body.as_bytes();
        let expected = vec![
            "{\"t\":\"ジャンプ力\"}".to_string(),
            "{\"n\":1}".to_string(),
        ];
        for cut in 0..=bytes.len() {
            let mut lines = SseLines::new(1024);
            assert_eq!(
                feed_all(&mut lines, &[&bytes[..cut], &bytes[cut..]]),
                expected,
                "cut at {cut}"
            );
        }
        let mut lines = SseLines::new(1024);
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(feed_all(&mut lines, &singles), expected);
    }

    #[test]
    fn final_line_without_newline_counts() {
        let mut lines = SseLines::new(1024);
        assert_eq!(
            feed_all(&mut lines, &[b"data: {\"a\":1}\n\ndata: {\"b\":2}"]),
            vec!["{\"a\":1}", "{\"b\":2}"]
        );
    }

    #[test]
    fn invalid_utf8_spoils_only_its_line() {
        let mut lines = SseLines::new(1024);
        let out = feed_all(
            &mut lines,
            &[b"data: {\"a\":\"\xff\xfe\"}\n\n", b"data: {\"b\":2}\n\n"],
        );
        assert_eq!(out, vec!["{\"a\":\"\u{fffd}\u{fffd}\"}", "{\"b\":2}"]);
    }

    #[test]
    fn overlong_line_is_skipped_and_reading_goes_on() {
        let mut lines = SseLines::new(16);
        let long = format!("data: {}", "x".repeat(40));
        let out = feed_all(
            &mut lines,
            &[
                long.as_bytes(),
                b"yyy\n",
                b"data: 1\n",
                b"data: zzzzzzzzzzzzzzzzzzzz",
            ],
        );
        assert_eq!(out, vec!["1"]);
    }

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
