//! A fake Modal `get_file` (docs/backends.md §5.3): `GET ?user_id&project_id&path` with
//! `X-Modal-Secret`, raw bytes or 404 `{"error":"File not found"}`. It listens where the relay
//! derives the function's URL from `MODAL_ENDPOINT` (`.../generate_game` → `.../get-file`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

#[derive(Default)]
struct Inner {
    secret: String,
    /// `user/project/path` → bytes.
    files: Mutex<HashMap<String, Vec<u8>>>,
    requests: Mutex<Vec<HashMap<String, String>>>,
}

pub struct FakeGetFile {
    /// What `MODAL_ENDPOINT` holds.
    pub url: String,
    pub secret: String,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeGetFile {
    pub async fn start() -> FakeGetFile {
        let secret = format!("fake-get-file-secret-{}", uuid::Uuid::new_v4());
        let inner = Arc::new(Inner {
            secret: secret.clone(),
            ..Inner::default()
        });
        let app = Router::new()
            .route("/get-file", get(get_file))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeGetFile {
            url: format!("http://{addr}/generate_game"),
            secret,
            inner,
            server,
        }
    }

    pub fn put(&self, user: uuid::Uuid, project: uuid::Uuid, path: &str, bytes: &[u8]) {
        self.inner
            .files
            .lock()
            .unwrap()
            .insert(format!("{user}/{project}/{path}"), bytes.to_vec());
    }

    /// Query parameters of every authorised request, in arrival order.
    pub fn requests(&self) -> Vec<HashMap<String, String>> {
        self.inner.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeGetFile {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn get_file(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let authorised = headers
        .get("x-modal-secret")
        .is_some_and(|v| v.as_bytes() == inner.secret.as_bytes());
    if !authorised {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Unauthorized"})),
        )
            .into_response();
    }
    inner.requests.lock().unwrap().push(query.clone());
    let key = format!(
        "{}/{}/{}",
        query.get("user_id").map_or("", String::as_str),
        query.get("project_id").map_or("", String::as_str),
        query.get("path").map_or("index.html", String::as_str),
    );
    match inner.files.lock().unwrap().get(&key) {
        Some(bytes) => (
            [
                ("content-type", "application/octet-stream"),
                ("cache-control", "public, max-age=3600"),
            ],
            bytes.clone(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "File not found"})),
        )
            .into_response(),
    }
}
