//! The fake Modal's other endpoints (docs/backends.md §5.3): `detect_intent`, `chat_haiku`,
//! `detect_skills`, `prewarm_sandbox`, `get_file`, `list_files` and `apply_files` (file writes), with their
//! response shapes and failure modes (hang, HTTP error, garbage). Served by the same server as
//! the fake `generate_game`, at the URLs the relay derives from `MODAL_ENDPOINT`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

/// How one of the short endpoints answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The endpoint's normal answer.
    Normal,
    /// Accept the request and never answer.
    Hang,
    /// This status with a JSON `{"error": ...}` body (chat: plus its apology and no suggestions).
    Status(u16),
    /// 200 with a body that is not the endpoint's JSON.
    Garbage,
}

/// The fixed chat answer of the fake `chat_haiku`.
pub const CHAT_MESSAGE: &str = "ジャンプ力は jumpPower の値で決まります。";
pub const CHAT_SUGGESTIONS: [&str; 2] = ["ジャンプを高くして", "二段ジャンプを追加して"];

/// The endpoints' state: how each answers, what they were asked, the files on the volume.
pub struct Endpoints {
    secret: String,
    answers: Mutex<HashMap<String, Answer>>,
    /// (endpoint, body or query) of every authorized call, in order.
    calls: Mutex<Vec<(String, Value)>>,
    /// `user/project/path` → text, shared by `get_file` and `apply_files`.
    files: Mutex<HashMap<String, String>>,
}

impl Endpoints {
    pub fn new(secret: String) -> Arc<Self> {
        Arc::new(Self {
            secret,
            answers: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
            files: Mutex::new(HashMap::new()),
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/detect-intent", post(detect_intent))
            .route("/chat-haiku", post(chat_haiku))
            .route("/detect-skills", post(detect_skills))
            .route("/prewarm-sandbox", post(prewarm_sandbox))
            .route("/get-file", get(get_file))
            .route("/list-files", get(list_files))
            .route("/apply-files", post(apply_files))
            .with_state(Arc::clone(self))
    }

    pub fn answer(&self, endpoint: &str, answer: Answer) {
        self.answers
            .lock()
            .unwrap()
            .insert(endpoint.to_string(), answer);
    }

    pub fn calls(&self, endpoint: &str) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(e, _)| e == endpoint)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn file(&self, user: uuid::Uuid, project: uuid::Uuid, path: &str) -> Option<String> {
        self.files
            .lock()
            .unwrap()
            .get(&format!("{user}/{project}/{path}"))
            .cloned()
    }

    pub fn put_file(&self, user: uuid::Uuid, project: uuid::Uuid, path: &str, text: &str) {
        self.files
            .lock()
            .unwrap()
            .insert(format!("{user}/{project}/{path}"), text.to_string());
    }

    /// The configured answer of an authorized call (recorded); `None` without the secret.
    fn pipeline_call(&self, endpoint: &str, headers: &HeaderMap, body: Value) -> Option<Answer> {
        let authorized = headers
            .get("x-modal-secret")
            .is_some_and(|v| v.as_bytes() == self.secret.as_bytes());
        if !authorized {
            return None;
        }
        self.calls
            .lock()
            .unwrap()
            .push((endpoint.to_string(), body));
        Some(
            self.answers
                .lock()
                .unwrap()
                .get(endpoint)
                .cloned()
                .unwrap_or(Answer::Normal),
        )
    }
}

/// The non-normal answers shared by every JSON endpoint.
async fn abnormal(answer: &Answer, error_body: Value) -> Option<Response> {
    match answer {
        Answer::Normal => None,
        Answer::Hang => {
            std::future::pending::<()>().await;
            None
        }
        Answer::Status(status) => Some(http_response(*status, error_body.to_string())),
        Answer::Garbage => Some(http_response(
            200,
            "<html>upstream proxy error</html>".into(),
        )),
    }
}

async fn detect_intent(
    State(inner): State<Arc<Endpoints>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(answer) = inner.pipeline_call("detect_intent", &headers, body.clone()) else {
        return json_error(401, "Unauthorized");
    };
    if let Some(response) = abnormal(&answer, json!({"error": "sandbox failed"})).await {
        return response;
    }
    let message = body["message"].as_str().unwrap_or_default().to_lowercase();
    if message.is_empty() {
        return json_error(400, "message is required");
    }
    // What Haiku answers for the tests' requests: undo words, then questions.
    let intent = if ["元に戻", "戻して", "undo"]
        .iter()
        .any(|k| message.contains(k))
    {
        "restore"
    } else if message.ends_with('?') || message.ends_with('？') {
        "chat"
    } else {
        "edit"
    };
    http_response(
        200,
        json!({"intent": intent, "raw_response": intent}).to_string(),
    )
}

async fn chat_haiku(
    State(inner): State<Arc<Endpoints>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(answer) = inner.pipeline_call("chat_haiku", &headers, body) else {
        return json_error(401, "Unauthorized");
    };
    let apology = json!({
        "error": "sandbox failed",
        "message": "申し訳ございません。回答の生成中にエラーが発生しました。",
        "suggestions": [],
    });
    if let Some(response) = abnormal(&answer, apology).await {
        return response;
    }
    http_response(
        200,
        json!({"message": CHAT_MESSAGE, "suggestions": CHAT_SUGGESTIONS}).to_string(),
    )
}

async fn detect_skills(
    State(inner): State<Arc<Endpoints>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(answer) = inner.pipeline_call("detect_skills", &headers, body.clone()) else {
        return json_error(401, "Unauthorized");
    };
    if let Some(response) = abnormal(&answer, json!({"error": "sandbox failed"})).await {
        return response;
    }
    let skills = if body["dimension"] == "3d" {
        json!(["threejs-setup", "threejs-lighting", "game-ai"])
    } else {
        json!(["p5js-setup", "p5js-input", "game-ai"])
    };
    http_response(
        200,
        json!({"skills": skills, "raw_response": skills.to_string()}).to_string(),
    )
}

async fn prewarm_sandbox(
    State(inner): State<Arc<Endpoints>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(answer) = inner.pipeline_call("prewarm_sandbox", &headers, body.clone()) else {
        return json_error(401, "Unauthorized");
    };
    if let Some(response) = abnormal(&answer, json!({"error": "sandbox create failed"})).await {
        return response;
    }
    let user = body["user_id"].as_str().unwrap_or_default();
    if !is_uuid(user) {
        return json_error(400, "Invalid user_id");
    }
    http_response(
        200,
        json!({"status": "warmed", "sandbox_name": format!("user-{user}")}).to_string(),
    )
}

async fn get_file(
    State(inner): State<Arc<Endpoints>>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let Some(answer) = inner.pipeline_call("get_file", &headers, json!(query)) else {
        return json_error(401, "Unauthorized");
    };
    if let Some(response) = abnormal(&answer, json!({"error": "volume error"})).await {
        return response;
    }
    let field = |name: &str| query.get(name).cloned().unwrap_or_default();
    let path = query
        .get("path")
        .map(|p| p.trim_start_matches('/').to_string())
        .unwrap_or_else(|| "index.html".into());
    if path.contains("..") {
        return json_error(400, "Invalid file path");
    }
    let key = format!("{}/{}/{path}", field("user_id"), field("project_id"));
    match inner.files.lock().unwrap().get(&key) {
        Some(text) => http_response(200, text.clone()),
        None => json_error(404, "File not found"),
    }
}

/// The project's files without hidden names, sorted, as Modal's `list_files` answers.
async fn list_files(
    State(inner): State<Arc<Endpoints>>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let Some(answer) = inner.pipeline_call("list_files", &headers, json!(query)) else {
        return json_error(401, "Unauthorized");
    };
    if let Some(response) = abnormal(&answer, json!({"error": "volume error"})).await {
        return response;
    }
    let files = super::fake_get_file::listing(inner.files.lock().unwrap().keys(), &query);
    http_response(200, json!({ "files": files }).to_string())
}

/// File writes only; the git actions are not part of this fake (404, as before it had them).
async fn apply_files(
    State(inner): State<Arc<Endpoints>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if body.get("action").is_some() {
        return json_error(404, "Not Found");
    }
    let Some(answer) = inner.pipeline_call("apply_files", &headers, body.clone()) else {
        return json_error(401, "Unauthorized");
    };
    let mut events = vec![json!({"type": "status", "message": "Creating project directory..."})];
    if answer == Answer::Normal {
        let (user, project) = (
            body["user_id"].as_str().unwrap_or_default(),
            body["project_id"].as_str().unwrap_or_default(),
        );
        let mut written = Vec::new();
        for file in body["files"].as_array().into_iter().flatten() {
            let path = file["path"].as_str().unwrap_or_default();
            let content = file["content"].as_str().unwrap_or_default();
            inner
                .files
                .lock()
                .unwrap()
                .insert(format!("{user}/{project}/{path}"), content.to_string());
            events.push(json!({"type": "status", "message": format!("Writing {path}...")}));
            written.push(json!({"path": path, "action": "create", "size": content.len()}));
        }
        events.push(json!({"type": "log", "message": "Committed: 1a2b3c4"}));
        events.push(json!({"type": "result", "files": written}));
        events.push(json!({"type": "done", "exit_code": 0, "duration_ms": 12}));
    } else if let Some(response) = abnormal(&answer, json!({"error": "volume error"})).await {
        return response;
    }
    let text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from(text))
        .unwrap()
}

fn http_response(status: u16, body: String) -> Response {
    let content_type = if serde_json::from_str::<Value>(&body).is_ok() {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

fn json_error(status: u16, text: &str) -> Response {
    http_response(status, json!({ "error": text }).to_string())
}

/// Case-insensitive 8-4-4-4-12 hex, any version.
fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}
