//! A fake Modal `get_file` and `list_files` (docs/backends.md §5.3): `GET
//! ?user_id&project_id&path` with `X-Modal-Secret`, raw bytes or 404 `{"error":"File not
//! found"}`; `GET ?user_id&project_id`, `{"files": [...]}` without hidden names (empty for a
//! missing project). It listens where the relay derives the functions' URLs from
//! `MODAL_ENDPOINT` (`.../generate_game` → `.../get-file`, `.../list-files`), and can be told
//! to fail or to hold a file back.

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
    listings: Mutex<Vec<HashMap<String, String>>>,
    failure: Mutex<Option<Failure>>,
    /// `get_file` for this path waits until `released`.
    held: Mutex<Option<String>>,
    released: std::sync::atomic::AtomicBool,
}

/// How every authorised request is answered while set.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// This status with `{"error": "..."}`.
    Status(u16),
    /// 200 with a body that is not the endpoint's JSON (`get_file` is unaffected).
    Garbage,
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
            .route("/list-files", get(list_files))
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

    /// Query parameters of every authorised `get_file` request, in arrival order.
    pub fn requests(&self) -> Vec<HashMap<String, String>> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Query parameters of every authorised `list_files` request, in arrival order.
    pub fn list_requests(&self) -> Vec<HashMap<String, String>> {
        self.inner.listings.lock().unwrap().clone()
    }

    /// Make `get_file` of `path` wait until [`FakeGetFile::release`].
    pub fn hold(&self, path: &str) {
        *self.inner.held.lock().unwrap() = Some(path.to_string());
    }

    pub fn release(&self) {
        self.inner
            .released
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Answer every request with `failure` from now on (`None`: normally again).
    pub fn fail(&self, failure: Option<Failure>) {
        *self.inner.failure.lock().unwrap() = failure;
    }
}

impl Drop for FakeGetFile {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// 401 without the secret, the configured failure status, else `None` (answer normally).
fn refusal(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    let authorised = headers
        .get("x-modal-secret")
        .is_some_and(|v| v.as_bytes() == inner.secret.as_bytes());
    if !authorised {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "Unauthorized"})),
            )
                .into_response(),
        );
    }
    match *inner.failure.lock().unwrap() {
        Some(Failure::Status(status)) => Some(
            (
                StatusCode::from_u16(status).unwrap(),
                Json(json!({"error": "simulated failure"})),
            )
                .into_response(),
        ),
        _ => None,
    }
}

async fn list_files(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = refusal(&inner, &headers) {
        return refused;
    }
    inner.listings.lock().unwrap().push(query.clone());
    if matches!(*inner.failure.lock().unwrap(), Some(Failure::Garbage)) {
        return "<html>not a listing</html>".into_response();
    }
    let files = listing(inner.files.lock().unwrap().keys(), &query);
    Json(json!({ "files": files })).into_response()
}

/// What Modal's `list_files` answers for the `user_id` and `project_id` of `query`, from the
/// fake volume's `user/project/path` keys: the paths, sorted, without hidden names.
pub fn listing<'a>(
    keys: impl Iterator<Item = &'a String>,
    query: &HashMap<String, String>,
) -> Vec<String> {
    let field = |name: &str| query.get(name).map_or("", String::as_str);
    let prefix = format!("{}/{}/", field("user_id"), field("project_id"));
    let mut files: Vec<String> = keys
        .filter_map(|key| key.strip_prefix(&prefix))
        .filter(|path| !path.split('/').any(|segment| segment.starts_with('.')))
        .map(str::to_string)
        .collect();
    files.sort();
    files
}

async fn get_file(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = refusal(&inner, &headers) {
        return refused;
    }
    inner.requests.lock().unwrap().push(query.clone());
    let held = inner.held.lock().unwrap().clone();
    if held.is_some() && held.as_ref() == query.get("path") {
        while !inner.released.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
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
