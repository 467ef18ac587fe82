//! Project files on Modal's volume: `list_files` and `get_file` (docs/backends.md §5.3),
//! each call with a connect and a total timeout, `X-Modal-Secret`, and its count, failures
//! and latency in `/metrics`.

use std::time::Instant;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::HeaderValue;
use reqwest::StatusCode;
use serde::Deserialize;
use uuid::Uuid;

use super::{FileBody, FilesError, ProjectFiles, ProjectPath};
use crate::config::{ModalConfig, UpstreamPool};
use crate::metrics::METRICS;

const LIST_FILES: &str = "list_files";
const GET_FILE: &str = "get_file";

/// The Modal file reader.
pub struct ModalFiles {
    client: reqwest::Client,
    list_url: String,
    get_url: String,
    secret: HeaderValue,
    list_budget: usize,
}

#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    files: Vec<String>,
}

impl ModalFiles {
    /// `list_budget` is the most bytes of a `list_files` answer read.
    pub fn new(
        config: &ModalConfig,
        pool: UpstreamPool,
        list_budget: usize,
    ) -> Result<Self, String> {
        let client = pool
            .client()
            .connect_timeout(config.connect_timeout())
            // A whole call, a file's body included.
            .timeout(config.file_timeout())
            .build()
            .map_err(|e| e.to_string())?;
        let mut secret = HeaderValue::from_str(config.secret.expose())
            .map_err(|_| "MODAL_INTERNAL_SECRET is not a valid header value".to_string())?;
        secret.set_sensitive(true);
        Ok(Self {
            client,
            list_url: config.endpoint_for(LIST_FILES),
            get_url: config.endpoint_for(GET_FILE),
            secret,
            list_budget,
        })
    }

    /// Send one GET and record it; `Ok(None)` for a 404.
    async fn get(
        &self,
        endpoint: &'static str,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<Option<reqwest::Response>, FilesError> {
        let started = Instant::now();
        let sent = self
            .client
            .get(url)
            .query(query)
            .header("X-Modal-Secret", self.secret.clone())
            .send()
            .await;
        let answer = match sent {
            Ok(response) if response.status().is_success() => Ok(Some(response)),
            Ok(response) if response.status() == StatusCode::NOT_FOUND => Ok(None),
            Ok(response) => Err(format!("status {}", response.status())),
            Err(e) => Err(e.to_string()),
        };
        METRICS.modal_call(endpoint, answer.is_ok(), started.elapsed().as_secs_f64());
        answer.map_err(|detail| failed(endpoint, detail))
    }
}

fn failed(endpoint: &'static str, detail: String) -> FilesError {
    FilesError::Modal { endpoint, detail }
}

/// A failure after the status line: counted, the call itself already was.
fn body_failed(endpoint: &'static str, detail: String) -> FilesError {
    METRICS.modal_call_failures.inc(&[endpoint]);
    failed(endpoint, detail)
}

#[async_trait]
impl ProjectFiles for ModalFiles {
    async fn list(&self, user_id: Uuid, project_id: Uuid) -> Result<Vec<ProjectPath>, FilesError> {
        let (user, project) = (user_id.to_string(), project_id.to_string());
        let query = [("user_id", user.as_str()), ("project_id", project.as_str())];
        // Modal answers 200 with an empty list for a missing project; a 404 means the same.
        let Some(response) = self.get(LIST_FILES, &self.list_url, &query).await? else {
            return Ok(Vec::new());
        };
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| body_failed(LIST_FILES, e.to_string()))?;
            if body.len() + chunk.len() > self.list_budget {
                METRICS.modal_call_failures.inc(&[LIST_FILES]);
                return Err(FilesError::ListTooLarge {
                    budget: self.list_budget,
                });
            }
            body.extend_from_slice(&chunk);
        }
        let listing: Listing = serde_json::from_slice(&body)
            .map_err(|e| body_failed(LIST_FILES, format!("not a file list: {e}")))?;
        // Modal already leaves hidden names out; anything else unsafe is dropped too.
        let mut files: Vec<ProjectPath> = listing
            .files
            .iter()
            .filter_map(|raw| ProjectPath::parse(raw))
            .collect();
        files.sort();
        files.dedup();
        Ok(files)
    }

    async fn open(
        &self,
        user_id: Uuid,
        project_id: Uuid,
        path: &ProjectPath,
    ) -> Result<Option<FileBody>, FilesError> {
        let (user, project) = (user_id.to_string(), project_id.to_string());
        let query = [
            ("user_id", user.as_str()),
            ("project_id", project.as_str()),
            ("path", path.as_str()),
        ];
        let Some(response) = self.get(GET_FILE, &self.get_url, &query).await? else {
            return Ok(None);
        };
        let length = response.content_length();
        let bytes = response.bytes_stream().map_err(|e| {
            METRICS.modal_call_failures.inc(&[GET_FILE]);
            std::io::Error::other(e)
        });
        Ok(Some(FileBody {
            length,
            bytes: Box::pin(bytes),
        }))
    }
}
