//! The HTTP side of a Modal run: the client, and the `generate_game` POST with
//! `X-Modal-Secret` up to a response with a success status.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use serde::Serialize;
use tokio::time::timeout;

use super::direct::{proxy_in_environment, Connector, ExchangeError};
use crate::backend::{Failure, RunRequest};
use crate::config::{ModalConfig, Secret, UpstreamPool};

/// In lower case, as `HeaderName::from_static` requires (header names are case-insensitive).
const SECRET_HEADER: &str = "x-modal-secret";
/// How much of a non-2xx body is kept for the log line.
const ERROR_BODY_LIMIT: usize = 4096;

/// Why the backend's HTTP clients could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The pooled client (reqwest) could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The TLS set-up of the runs' own connections failed.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A response body's chunks.
pub(super) type Body = Pin<Box<dyn Stream<Item = Result<Bytes, ExchangeError>> + Send>>;

/// What every run of one backend shares: the HTTP client, the endpoint and its secret.
pub(super) struct Shared {
    client: reqwest::Client,
    endpoint: String,
    /// The endpoint and how to connect to it, when its runs take a connection of their own
    /// (`direct.rs`); `None` when a proxy must carry them.
    direct: Option<(hyper::Uri, Connector)>,
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
    pub(super) fn new(config: &ModalConfig, pool: UpstreamPool) -> Result<Self, BuildError> {
        let client = pool
            .client()
            .use_rustls_tls()
            // Only a connect timeout: a healthy generation streams for many minutes, and
            // silence is bounded by the idle timeout instead.
            .connect_timeout(config.connect_timeout())
            // A 307/308 would make reqwest POST the paid generation a second time.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let direct = match config.endpoint.parse::<hyper::Uri>() {
            Ok(uri) if takes_own_connection(&uri) => {
                Some((uri, Connector::new(config.connect_timeout())?))
            }
            _ => None,
        };
        Ok(Self {
            client,
            endpoint: config.endpoint.clone(),
            direct,
            secret: config.secret.clone(),
            idle_timeout: config.idle_timeout(),
        })
    }

    /// How long the upstream may stay silent, for the response head and between chunks.
    pub(super) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Whether runs go over a connection of their own, read in the job's task (no proxy).
    pub(super) fn takes_own_connection(&self) -> bool {
        self.direct.is_some()
    }

    /// Modal refuses every request without the shared secret.
    pub(super) fn has_secret(&self) -> bool {
        !self.secret.is_empty()
    }

    /// Sends the POST; the body of a response with a success status, or the failure that
    /// ends the run.
    pub(super) async fn post(&self, request: &RunRequest) -> Result<Body, Failure> {
        let mut secret = HeaderValue::from_str(self.secret.expose())
            .map_err(|_| Failure::internal("MODAL_INTERNAL_SECRET is not a valid header value"))?;
        secret.set_sensitive(true);
        let body = GenerateBody {
            user_id: request.user_id.hyphenated().to_string(),
            project_id: request.project_id.hyphenated().to_string(),
            prompt: &request.prompt,
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| Failure::internal(format!("generate_game body: {e}")))?;
        let headers = [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (HeaderName::from_static(SECRET_HEADER), secret),
        ];
        let send = async {
            if let Some((uri, connector)) = &self.direct {
                let (status, body) = connector.post(uri, headers, Bytes::from(body)).await?;
                return Ok::<_, ExchangeError>((status.as_u16(), Box::pin(body) as Body));
            }
            let mut post = self.client.post(&self.endpoint).body(body);
            for (name, value) in headers {
                post = post.header(name, value);
            }
            let response = post.send().await?;
            let status = response.status().as_u16();
            Ok((
                status,
                Box::pin(response.bytes_stream().map_err(ExchangeError::from)) as Body,
            ))
        };
        // Waiting for the response head is waiting for upstream data too.
        let (status, body) = match timeout(self.idle_timeout, send).await {
            Err(_) => return Err(Failure::stream_idle(self.idle_timeout.as_secs())),
            Ok(Err(e)) => return Err(Failure::network(error_chain(&*e))),
            Ok(Ok(response)) => response,
        };
        if !(200..300).contains(&status) {
            let text = self.read_error_body(body).await;
            return Err(Failure::upstream_http(status, &text));
        }
        Ok(body)
    }

    /// The first few KiB of an error body, for the log line; whatever arrived in time.
    async fn read_error_body(&self, mut response: Body) -> String {
        let mut body = Vec::new();
        let read = async {
            while body.len() < ERROR_BODY_LIMIT {
                match response.next().await {
                    Some(Ok(chunk)) => body.extend_from_slice(&chunk),
                    _ => break,
                }
            }
        };
        let _ = timeout(self.idle_timeout, read).await;
        body.truncate(ERROR_BODY_LIMIT);
        String::from_utf8_lossy(&body).into_owned()
    }
}

/// Whether runs on `uri` take a connection of their own: an HTTP(S) URL that no proxy in the
/// environment must carry.
fn takes_own_connection(uri: &hyper::Uri) -> bool {
    match uri.scheme_str() {
        Some(scheme @ ("http" | "https")) => {
            uri.host().is_some() && !proxy_in_environment(scheme, |name| std::env::var_os(name))
        }
        _ => false,
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
