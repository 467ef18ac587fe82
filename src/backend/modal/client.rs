//! The HTTP side of a Modal run: the client, and the `generate_game` POST with
//! `X-Modal-Secret` up to a response with a success status.

use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use serde::Serialize;
use tokio::time::timeout;

use crate::backend::{Failure, RunRequest};
use crate::config::{ModalConfig, Secret, UpstreamPool};

const SECRET_HEADER: &str = "X-Modal-Secret";
/// How much of a non-2xx body is kept for the log line.
const ERROR_BODY_LIMIT: usize = 4096;

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

    /// How long the upstream may stay silent, for the response head and between chunks.
    pub(super) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Modal refuses every request without the shared secret.
    pub(super) fn has_secret(&self) -> bool {
        !self.secret.is_empty()
    }

    /// Sends the POST; a response with a success status, or the failure that ends the run.
    pub(super) async fn post(&self, request: &RunRequest) -> Result<reqwest::Response, Failure> {
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

/// `error: cause: cause...` — reqwest's own message omits the useful part (e.g. "Connection refused").
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
