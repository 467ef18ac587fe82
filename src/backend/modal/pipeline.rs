//! The Modal endpoints of the pre-job pipeline (`modal-and-cli.md` §5.3): `detect_intent`,
//! `chat_haiku`, `detect_skills`, `prewarm_sandbox`, and the two file calls the style gate
//! needs (`get_file`, `apply_files`). Unlike `generate_game`, these are short calls: each has
//! a connect timeout and a total timeout, carries `X-Modal-Secret`, and is counted in
//! `/metrics` by endpoint and outcome with its latency.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::sse::SseLines;
use crate::config::{ModalConfig, UpstreamPool};
use crate::metrics::METRICS;

const SECRET_HEADER: &str = "X-Modal-Secret";
/// How much of an error body is kept for the log line.
const ERROR_BODY_CHARS: usize = 200;

/// Why a Modal call gave no usable answer. Callers fall back; the text is only logged.
#[derive(Debug, thiserror::Error)]
pub enum ModalCallError {
    #[error("Modal {endpoint} timed out after {secs} s")]
    Timeout { endpoint: &'static str, secs: u64 },
    #[error("Modal {endpoint} request failed: {detail}")]
    Transport {
        endpoint: &'static str,
        detail: String,
    },
    #[error("Modal {endpoint} error: {status} - {body}")]
    Status {
        endpoint: &'static str,
        status: u16,
        body: String,
    },
    #[error("Modal {endpoint} answered something unusable: {detail}")]
    Garbage {
        endpoint: &'static str,
        detail: String,
    },
    #[error("MODAL_INTERNAL_SECRET is not a valid header value")]
    Secret,
}

/// Total time each kind of call may take (connect timeout comes from `MODAL_CONNECT_TIMEOUT_SECS`).
#[derive(Debug, Clone, Copy)]
pub struct CallTimeouts {
    /// Time allowed to detect a message's intent.
    pub intent: Duration,
    /// Time allowed for a chat answer.
    pub chat: Duration,
    /// Time allowed to detect skills.
    pub skills: Duration,
    /// Time allowed for a prewarm call.
    pub prewarm: Duration,
    /// Time allowed for a file call.
    pub files: Duration,
}

/// `chat_haiku`'s default-mode answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChatReply {
    /// The answer text.
    #[serde(default)]
    pub message: String,
    /// Follow-up prompts offered to the user.
    #[serde(default)]
    pub suggestions: Vec<String>,
}

/// One `{role, content}` entry of `chat_haiku`'s `conversation_history`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatTurn {
    /// Who spoke: user or assistant.
    pub role: String,
    /// What was said.
    pub content: String,
}

#[derive(Deserialize)]
struct IntentReply {
    intent: String,
}

#[derive(Deserialize)]
struct SkillsReply {
    skills: Vec<String>,
}

#[derive(Deserialize)]
struct PrewarmReply {
    status: String,
}

/// Client for those endpoints. Cheap to share behind an `Arc`.
pub struct ModalPipeline {
    client: reqwest::Client,
    secret: HeaderValue,
    timeouts: CallTimeouts,
    max_bytes: usize,
    intent_url: String,
    chat_url: String,
    skills_url: String,
    prewarm_url: String,
    get_file_url: String,
    apply_files_url: String,
}

impl ModalPipeline {
    /// `max_bytes` bounds every answer read (STYLE.md, SPEC.md, index.html, JSON replies).
    pub fn new(
        config: &ModalConfig,
        pool: UpstreamPool,
        timeouts: CallTimeouts,
        max_bytes: usize,
    ) -> Result<Self, ModalCallError> {
        let client = pool
            .client()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout())
            .build()
            .map_err(|e| ModalCallError::Transport {
                endpoint: "client",
                detail: e.to_string(),
            })?;
        let mut secret =
            HeaderValue::from_str(config.secret.expose()).map_err(|_| ModalCallError::Secret)?;
        secret.set_sensitive(true);
        Ok(Self {
            client,
            secret,
            timeouts,
            max_bytes,
            intent_url: config.endpoint_for("detect_intent"),
            chat_url: config.endpoint_for("chat_haiku"),
            skills_url: config.endpoint_for("detect_skills"),
            prewarm_url: config.endpoint_for("prewarm_sandbox"),
            get_file_url: config.endpoint_for("get_file"),
            apply_files_url: config.endpoint_for("apply_files"),
        })
    }

    /// `restore`, `chat` or `edit`, as Modal's `detect_intent` spells it.
    pub async fn detect_intent(&self, message: &str) -> Result<String, ModalCallError> {
        let reply: IntentReply = self
            .post_json(
                "detect_intent",
                &self.intent_url,
                self.timeouts.intent,
                json!({ "message": message }),
            )
            .await?;
        Ok(reply.intent)
    }

    /// Asks Modal for a chat answer about the game, without changing any files.
    pub async fn chat(
        &self,
        message: &str,
        game_spec: &str,
        history: &[ChatTurn],
    ) -> Result<ChatReply, ModalCallError> {
        let reply: ChatReply = self
            .post_json(
                "chat_haiku",
                &self.chat_url,
                self.timeouts.chat,
                json!({
                    "message": message,
                    "game_spec": game_spec,
                    "conversation_history": history,
                }),
            )
            .await?;
        if reply.message.trim().is_empty() {
            return Err(ModalCallError::Garbage {
                endpoint: "chat_haiku",
                detail: "empty message".into(),
            });
        }
        Ok(reply)
    }

    /// Asks Modal which skills a message needs for the given dimension.
    pub async fn detect_skills(
        &self,
        message: &str,
        dimension: &str,
        existing_code: &str,
    ) -> Result<Vec<String>, ModalCallError> {
        let reply: SkillsReply = self
            .post_json(
                "detect_skills",
                &self.skills_url,
                self.timeouts.skills,
                json!({
                    "message": message,
                    "dimension": dimension,
                    "existing_code": existing_code,
                }),
            )
            .await?;
        Ok(reply.skills)
    }

    /// `already_warm` or `warmed`.
    pub async fn prewarm(&self, user_id: Uuid) -> Result<String, ModalCallError> {
        let reply: PrewarmReply = self
            .post_json(
                "prewarm_sandbox",
                &self.prewarm_url,
                self.timeouts.prewarm,
                json!({ "user_id": user_id }),
            )
            .await?;
        Ok(reply.status)
    }

    /// A project file as text; `None` when Modal has no such file (404).
    pub async fn get_file(
        &self,
        user_id: Uuid,
        project_id: Uuid,
        path: &str,
    ) -> Result<Option<String>, ModalCallError> {
        const ENDPOINT: &str = "get_file";
        let started = Instant::now();
        let call = async {
            let response = self
                .client
                .get(&self.get_file_url)
                .query(&[
                    ("user_id", user_id.to_string()),
                    ("project_id", project_id.to_string()),
                    ("path", path.to_string()),
                ])
                .header(SECRET_HEADER, self.secret.clone())
                .send()
                .await
                .map_err(|e| transport(ENDPOINT, &e))?;
            let status = response.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(status_error(ENDPOINT, response).await);
            }
            let body = self.read_bounded(ENDPOINT, response).await?;
            Ok(Some(String::from_utf8_lossy(&body).into_owned()))
        };
        self.measured(ENDPOINT, started, self.timeouts.files, call)
            .await
    }

    /// Write text files through `apply_files` (SSE; one commit on the volume). Succeeds when the
    /// stream ends with `done`; an `error` event or a stream without `done` is a failure.
    pub async fn put_files(
        &self,
        user_id: Uuid,
        project_id: Uuid,
        files: &[(&str, &str)],
        commit_message: &str,
    ) -> Result<(), ModalCallError> {
        const ENDPOINT: &str = "apply_files";
        let files: Vec<_> = files
            .iter()
            .map(|(path, content)| json!({"path": path, "content": content, "action": "create"}))
            .collect();
        let body = json!({
            "user_id": user_id,
            "project_id": project_id,
            "files": files,
            "commit_message": commit_message,
        });
        let started = Instant::now();
        let call = async {
            let mut response = self
                .client
                .post(&self.apply_files_url)
                .header(CONTENT_TYPE, "application/json")
                .header(SECRET_HEADER, self.secret.clone())
                .json(&body)
                .send()
                .await
                .map_err(|e| transport(ENDPOINT, &e))?;
            if !response.status().is_success() {
                return Err(status_error(ENDPOINT, response).await);
            }
            let mut lines = SseLines::new(self.max_bytes);
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| transport(ENDPOINT, &e))?
            {
                for payload in lines.push(&chunk) {
                    let event: serde_json::Value =
                        serde_json::from_str(&payload).unwrap_or_default();
                    match event["type"].as_str() {
                        Some("done") => return Ok(()),
                        Some("error") => {
                            return Err(ModalCallError::Garbage {
                                endpoint: ENDPOINT,
                                detail: payload.chars().take(ERROR_BODY_CHARS).collect(),
                            })
                        }
                        _ => {}
                    }
                }
            }
            Err(ModalCallError::Garbage {
                endpoint: ENDPOINT,
                detail: "stream ended without done".into(),
            })
        };
        self.measured(ENDPOINT, started, self.timeouts.files, call)
            .await
    }

    async fn post_json<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        url: &str,
        limit: Duration,
        body: serde_json::Value,
    ) -> Result<T, ModalCallError> {
        let started = Instant::now();
        let call = async {
            let response = self
                .client
                .post(url)
                .header(CONTENT_TYPE, "application/json")
                .header(SECRET_HEADER, self.secret.clone())
                .json(&body)
                .send()
                .await
                .map_err(|e| transport(endpoint, &e))?;
            if !response.status().is_success() {
                return Err(status_error(endpoint, response).await);
            }
            let bytes = self.read_bounded(endpoint, response).await?;
            serde_json::from_slice::<T>(&bytes).map_err(|e| ModalCallError::Garbage {
                endpoint,
                detail: e.to_string(),
            })
        };
        self.measured(endpoint, started, limit, call).await
    }

    /// The whole body, refused when it grows past `max_bytes` (no answer here is that large).
    async fn read_bounded(
        &self,
        endpoint: &'static str,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, ModalCallError> {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport(endpoint, &e))?
        {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(ModalCallError::Garbage {
                    endpoint,
                    detail: format!("answer larger than {} bytes", self.max_bytes),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Run `call` under its total timeout and record the outcome and latency.
    async fn measured<T>(
        &self,
        endpoint: &'static str,
        started: Instant,
        limit: Duration,
        call: impl std::future::Future<Output = Result<T, ModalCallError>>,
    ) -> Result<T, ModalCallError> {
        let result = match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(ModalCallError::Timeout {
                endpoint,
                secs: limit.as_secs(),
            }),
        };
        METRICS.modal_calls.inc(&[endpoint]);
        if let Err(e) = &result {
            tracing::debug!(error = %e, "Modal call failed");
            METRICS.modal_call_failures.inc(&[endpoint]);
        }
        METRICS
            .modal_call_duration
            .observe_secs(endpoint, started.elapsed().as_secs_f64());
        result
    }
}

fn transport(endpoint: &'static str, error: &reqwest::Error) -> ModalCallError {
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    ModalCallError::Transport { endpoint, detail }
}

async fn status_error(endpoint: &'static str, response: reqwest::Response) -> ModalCallError {
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(ERROR_BODY_CHARS)
        .collect();
    ModalCallError::Status {
        endpoint,
        status,
        body,
    }
}
