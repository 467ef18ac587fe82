//! Modal's git actions on a project's volume (`apply_files` with `action`, docs/backends.md
//! §5.3): the version list, one version's diff, and restoring a version.

use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::config::{ModalConfig, UpstreamPool};

/// These are quick JSON calls; Modal itself answers a slow one with a redirect after 150 s.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call to Modal's git endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum ModalGitError {
    #[error("Modal {action} error: {status} - {body}")]
    Status {
        action: &'static str,
        status: u16,
        body: String,
    },
    #[error("Modal {action} request failed: {detail}")]
    Transport {
        action: &'static str,
        detail: String,
    },
}

/// One commit in a project's version history.
#[derive(Debug, Clone, Deserialize)]
pub struct Commit {
    /// The commit hash.
    pub hash: String,
    /// The commit message.
    pub message: String,
    /// When the commit was made, as git reports it.
    pub date: String,
}

/// A project's recent commits, as Modal returns them.
#[derive(Debug, Clone, Deserialize)]
pub struct GitLog {
    /// The commits, in the order git lists them.
    #[serde(default)]
    pub commits: Vec<Commit>,
    /// Whether Modal had to create the repository for this call.
    #[serde(default, rename = "autoInitialized")]
    pub auto_initialized: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct GitDiff {
    #[serde(default)]
    diff: String,
}

/// Modal's answer to a restore request.
#[derive(Debug, Clone, Deserialize)]
pub struct GitRestore {
    /// Whether the restore worked.
    #[serde(default)]
    pub success: bool,
    /// Why the restore failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// Client for the version history (git) that Modal keeps per project.
pub struct ModalGit {
    client: reqwest::Client,
    url: String,
    secret: HeaderValue,
}

impl ModalGit {
    /// Builds the client from the Modal configuration.
    pub fn new(config: &ModalConfig, pool: UpstreamPool) -> Result<Self, String> {
        let client = pool
            .client()
            .connect_timeout(config.connect_timeout())
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let mut secret = HeaderValue::from_str(config.secret.expose())
            .map_err(|_| "MODAL_INTERNAL_SECRET is not a valid header value".to_string())?;
        secret.set_sensitive(true);
        Ok(Self {
            client,
            url: config.endpoint_for("apply_files"),
            secret,
        })
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        action: &'static str,
        body: serde_json::Value,
    ) -> Result<T, ModalGitError> {
        let transport = |e: reqwest::Error| ModalGitError::Transport {
            action,
            detail: e.to_string(),
        };
        let response = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header("X-Modal-Secret", self.secret.clone())
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let body: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            return Err(ModalGitError::Status {
                action,
                status: status.as_u16(),
                body,
            });
        }
        response.json::<T>().await.map_err(transport)
    }

    /// Lists a project's recent commits.
    pub async fn log(&self, user_id: Uuid, project_id: Uuid) -> Result<GitLog, ModalGitError> {
        self.call(
            "git_log",
            json!({"action": "git_log", "user_id": user_id, "project_id": project_id, "limit": 50}),
        )
        .await
    }

    /// The unified diff of one commit; empty when Modal has none.
    pub async fn diff(
        &self,
        user_id: Uuid,
        project_id: Uuid,
        commit: &str,
    ) -> Result<String, ModalGitError> {
        let diff: GitDiff = self
            .call(
                "git_diff",
                json!({"action": "git_diff", "user_id": user_id, "project_id": project_id, "commit": commit}),
            )
            .await?;
        Ok(diff.diff)
    }

    /// Restores a project's files to the given commit.
    pub async fn restore(
        &self,
        user_id: Uuid,
        project_id: Uuid,
        commit: &str,
    ) -> Result<GitRestore, ModalGitError> {
        self.call(
            "git_restore",
            json!({"action": "git_restore", "user_id": user_id, "project_id": project_id, "commit": commit}),
        )
        .await
    }
}
