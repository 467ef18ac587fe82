//! The HTTP side of a Modal run: the `generate_game` POST with `X-Modal-Secret`, reading the
//! response body under the idle timeout, and handing each decoded payload to the event mapping.

use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::events::StreamState;
use super::sse::SseLines;
use crate::backend::{BackendEvent, Failure, RunRequest};
use crate::config::{ModalConfig, Secret, UpstreamPool};

const SECRET_HEADER: &str = "X-Modal-Secret";
/// How much of a non-2xx body is kept for the log line.
const ERROR_BODY_LIMIT: usize = 4096;
/// A single SSE line longer than this is dropped instead of buffered without bound. A full
/// `index.html` Write tool call is one line, so the cap is generous.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// What every run of one backend shares: the HTTP client, the endpoint and its secret.
pub(super) struct Shared {
    client: reqwest::Client,
    endpoint: String,
    secret: Secret,
    idle_timeout: Duration,
}

/// The JSON body of the `generate_game` POST.
#[derive(Serialize)]
struct GenerateBody<'a> {
    user_id: String,
    project_id: String,
    prompt: &'a str,
}

impl Shared {
    pub(super) fn new(config: &ModalConfig, pool: UpstreamPool) -> Result<Self, reqwest::Error> {
        let client = pool
            .client()
            .use_rustls_tls()
            // Only a connect timeout: a healthy generation streams for many minutes, and
            // silence is bounded by the idle timeout instead.
            .connect_timeout(config.connect_timeout())
            // A 307/308 would make reqwest POST the paid generation a second time.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            client,
            endpoint: config.endpoint.clone(),
            secret: config.secret.clone(),
            idle_timeout: config.idle_timeout(),
        })
    }

    /// Modal refuses every request without the shared secret.
    pub(super) fn has_secret(&self) -> bool {
        !self.secret.is_empty()
    }

    pub(super) async fn execute(&self, request: &RunRequest, tx: &mpsc::Sender<BackendEvent>) {
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
        // One timer for the whole stream, moved on only when it fires: a fresh timeout per
        // chunk put a timer-wheel insert and removal on every event.
        let idle = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(idle);
        let mut last_data = Instant::now();
        loop {
            let read = tokio::select! {
                biased;
                read = response.chunk() => read,
                () = &mut idle => {
                    let quiet_until = last_data + self.idle_timeout;
                    if Instant::now() >= quiet_until {
                        return BackendEvent::Failed(Failure::stream_idle(self.idle_timeout.as_secs()));
                    }
                    idle.as_mut().reset(quiet_until);
                    continue;
                }
            };
            let chunk = match read {
                Err(e) => return BackendEvent::Failed(Failure::stream_dropped(error_chain(&e))),
                Ok(None) => break,
                Ok(Some(chunk)) => chunk,
            };
            last_data = Instant::now();
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
