//! A fake Modal `generate_game` speaking the contract of `docs/backends.md` §1.3–§2.8:
//! validation order and texts, SSE headers and framing, Python-`json.dumps`-style Modal
//! events next to compact raw-UTF-8 CLI passthrough lines, and the `_test_error` hook.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

/// A running fake; the server stops when this is dropped.
pub struct FakeModal {
    /// Full `generate_game` URL (what `MODAL_ENDPOINT` holds).
    pub url: String,
    pub secret: String,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

/// A POST that passed validation (§1.2).
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub user_id: String,
    pub project_id: String,
    pub prompt: String,
    pub test_error: Option<String>,
}

/// What the fake answers to a valid request (ignored when `_test_error` is set, as upstream).
pub enum Script {
    /// A plain response instead of a stream (`application/json` when `body` parses as JSON).
    Http {
        status: u16,
        body: String,
    },
    Stream(Vec<Step>),
}

pub enum Step {
    /// A Modal-made event: `data: <python json.dumps>` + blank line.
    Modal(Value),
    /// A CLI passthrough event: `data: <compact raw UTF-8 JSON>` + blank line.
    Cli(Value),
    /// Bytes written as one chunk, unframed.
    Raw(Vec<u8>),
    Sleep(Duration),
    /// Abort the connection without ending the chunked body.
    Drop,
    /// Keep the connection open, never send more.
    Hang,
}

type ScriptFn = dyn Fn(&GenerateRequest) -> Script + Send + Sync;

struct Inner {
    secret: String,
    script: Box<ScriptFn>,
    requests: Mutex<Vec<GenerateRequest>>,
    open_streams: AtomicUsize,
    shutdown: CancellationToken,
}

impl FakeModal {
    pub async fn start(
        script: impl Fn(&GenerateRequest) -> Script + Send + Sync + 'static,
    ) -> FakeModal {
        let secret = format!("fake-modal-secret-{}", uuid::Uuid::new_v4());
        let inner = Arc::new(Inner {
            secret: secret.clone(),
            script: Box::new(script),
            requests: Mutex::new(Vec::new()),
            open_streams: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
        });
        let app = Router::new()
            .route("/generate_game", post(generate_game))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeModal {
            url: format!("http://{addr}/generate_game"),
            secret,
            inner,
            server,
        }
    }

    /// Every POST that passed validation, in arrival order.
    pub fn requests(&self) -> Vec<GenerateRequest> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Responses currently being streamed; drops when the client disconnects.
    pub fn open_streams(&self) -> usize {
        self.inner.open_streams.load(Ordering::SeqCst)
    }
}

impl Drop for FakeModal {
    fn drop(&mut self) {
        // Stop accepting, and abort streams still hanging or sleeping.
        self.server.abort();
        self.inner.shutdown.cancel();
    }
}

const STARTUP: [&str; 3] = [
    "Sandbox connected (warm)",
    "Loading skills...",
    "Starting Claude CLI...",
];
pub const COMMIT: &str = "3f9c2ab";
pub const TEST_ERROR_STATUS: &str = "テストエラーをシミュレート中...";
const SESSION: &str = "a1b2c3d4-0000-4000-8000-000000000001";

pub fn status(message: &str) -> Step {
    Step::Modal(json!({"type": "status", "message": message}))
}

fn done() -> Step {
    Step::Modal(json!({"type": "done", "exit_code": 0}))
}

/// The CLI exit-code error of §2.7.1.
pub fn cli_error_event(exit_code: i32) -> Value {
    let (code, message, recoverable) = match exit_code {
        1 => (
            "CLI_GENERAL_ERROR",
            "生成中にエラーが発生しました".to_string(),
            false,
        ),
        124 => (
            "CLI_TIMEOUT",
            "生成に時間がかかりすぎました（5分制限）".to_string(),
            true,
        ),
        137 => ("CLI_KILLED", "生成がキャンセルされました".to_string(), true),
        143 => ("CLI_TERMINATED", "生成が中断されました".to_string(), true),
        n => (
            "CLI_UNKNOWN_ERROR",
            format!("予期しないエラーが発生しました (コード: {n})"),
            false,
        ),
    };
    json!({"type": "error", "exitCode": exit_code, "code": code, "userMessage": message, "recoverable": recoverable})
}

/// The API/sandbox error of §2.7.2 (no `elapsed_seconds`, as in test mode).
pub fn api_error_event(code: &str) -> Value {
    let (message, recoverable) = match code {
        "NETWORK_ERROR" => ("ネットワーク接続に問題があります", true),
        "AUTH_ERROR" => ("認証に失敗しました", false),
        "RATE_LIMIT" => ("APIの利用制限に達しました", true),
        "API_TIMEOUT" => ("APIの応答がタイムアウトしました", true),
        "SANDBOX_ERROR" => ("実行環境の準備に失敗しました", false),
        _ => ("予期しないエラーが発生しました", false),
    };
    json!({"type": "error", "code": code, "userMessage": message, "recoverable": recoverable})
}

pub fn assistant_text(text: &str) -> Value {
    json!({"type": "assistant", "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}, "session_id": SESSION})
}

pub fn assistant_tool_use(name: &str, input: Value) -> Value {
    json!({"type": "assistant", "message": {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": name, "input": input}]}, "session_id": SESSION})
}

pub fn cli_result(is_error: bool) -> Value {
    if is_error {
        json!({"type": "result", "subtype": "error_during_execution", "is_error": true, "duration_ms": 5120, "num_turns": 2, "session_id": SESSION})
    } else {
        json!({"type": "result", "subtype": "success", "is_error": false, "result": "ゲームを作りました。", "duration_ms": 92000, "num_turns": 3, "total_cost_usd": 0.21, "session_id": SESSION})
    }
}

impl Script {
    /// The happy path of §2.4/§6.1: `Sandbox connected (warm)`, `Loading skills...`,
    /// `Starting Claude CLI...`, system init, one assistant text event per `texts` item, an
    /// assistant Write tool_use for index.html, a user tool_result, a CLI result,
    /// `Saving version history...`, log `Git commit created: 3f9c2ab`, debug (exit 0,
    /// git_commit "3f9c2ab"), done.
    pub fn success(texts: &[&str]) -> Script {
        let mut events = vec![json!({
            "type": "system", "subtype": "init", "session_id": SESSION,
            "cwd": "/data/users/u/projects/p", "model": "claude-opus-4",
            "tools": ["Read", "Write", "Edit", "Bash", "Glob", "Grep"]
        })];
        events.extend(texts.iter().map(|t| assistant_text(t)));
        events.push(assistant_tool_use(
            "Write",
            json!({"file_path": "index.html", "content": "<!DOCTYPE html><title>ゲーム</title>"}),
        ));
        events.push(json!({"type": "user", "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "File created successfully"}]}, "session_id": SESSION}));
        events.push(cli_result(false));
        Script::wrap_cli(events)
    }

    /// Wrap an arbitrary list of raw CLI events the way generate_game would (statuses
    /// before, saving/debug/done after).
    pub fn wrap_cli(events: Vec<Value>) -> Script {
        let count = events.len();
        let mut steps: Vec<Step> = STARTUP.iter().map(|s| status(s)).collect();
        steps.extend(events.into_iter().map(Step::Cli));
        steps.push(status("Saving version history..."));
        steps.push(Step::Modal(json!({"type": "log", "content": format!("Git commit created: {COMMIT}"), "level": "info"})));
        steps.push(Step::Modal(json!({
            "type": "debug", "exit_code": 0, "elapsed_seconds": 101.37,
            "output_line_count": count, "sandbox_reused": true, "git_commit": COMMIT
        })));
        steps.push(done());
        Script::Stream(steps)
    }

    /// Like [`Script::success`], with one assistant text event per `texts` item and `gap`
    /// before each: a job that streams for a while.
    pub fn paced(texts: &[String], gap: Duration) -> Script {
        let mut steps: Vec<Step> = STARTUP.iter().map(|s| status(s)).collect();
        for text in texts {
            steps.push(Step::Sleep(gap));
            steps.push(Step::Cli(assistant_text(text)));
        }
        steps.push(Step::Cli(cli_result(false)));
        steps.push(status("Saving version history..."));
        steps.push(Step::Modal(json!({
            "type": "debug", "exit_code": 0, "elapsed_seconds": 1.0,
            "output_line_count": texts.len(), "sandbox_reused": true, "git_commit": COMMIT
        })));
        steps.push(done());
        Script::Stream(steps)
    }

    /// CLI exit code N: statuses, `Saving version history...`, debug {exit_code N}, then the
    /// §2.7.1 error event (N=124 adds timeout_reached + message).
    pub fn cli_exit(code: i32) -> Script {
        let mut steps: Vec<Step> = STARTUP.iter().map(|s| status(s)).collect();
        steps.push(status("Saving version history..."));
        let mut debug = json!({
            "type": "debug", "exit_code": code, "elapsed_seconds": 42.5,
            "output_line_count": 0, "sandbox_reused": true
        });
        if code == 124 {
            debug["timeout_reached"] = json!(true);
            debug["message"] = json!("CLI timed out after 300 seconds");
        }
        steps.push(Step::Modal(debug));
        // Exit 0 is never an error (§2.6).
        steps.push(if code == 0 {
            done()
        } else {
            Step::Modal(cli_error_event(code))
        });
        Script::Stream(steps)
    }

    /// What generate_game streams for `_test_error: kind` (§2.8).
    pub fn test_error(kind: &str) -> Script {
        let terminal = match kind {
            "timeout" => cli_error_event(124),
            "general" => cli_error_event(1),
            "sandbox" => api_error_event("SANDBOX_ERROR"),
            "network" => api_error_event("NETWORK_ERROR"),
            "rate_limit" => api_error_event("RATE_LIMIT"),
            _ => json!({"type": "done", "exit_code": 0}),
        };
        Script::Stream(vec![
            status(TEST_ERROR_STATUS),
            Step::Sleep(Duration::from_secs(1)),
            Step::Modal(terminal),
        ])
    }
}

async fn generate_game(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Plain string equality (§1.1); a missing header never matches.
    let authorized = headers
        .get("x-modal-secret")
        .is_some_and(|v| v.as_bytes() == inner.secret.as_bytes());
    let request = match authorized.then(|| validate(&body)) {
        None => return json_error(401, "Unauthorized").into_response(),
        Some(Err(rejection)) => return rejection.into_response(),
        Some(Ok(request)) => request,
    };
    inner.requests.lock().unwrap().push(request.clone());
    let script = match request.test_error.as_deref().filter(|t| !t.is_empty()) {
        Some(kind) => Script::test_error(kind),
        None => (inner.script)(&request),
    };
    match script {
        Script::Http { status, body } => http_response(status, body),
        Script::Stream(steps) => sse_response(inner, steps),
    }
}

/// §1.3, in upstream's order. Python truthiness decides "missing"; a value of the wrong
/// type makes the handler raise, which FastAPI answers with a plain-text 500.
fn validate(body: &[u8]) -> Result<GenerateRequest, Rejection> {
    let data: Value = serde_json::from_slice(body).map_err(|_| json_error(400, "Invalid JSON"))?;
    let Value::Object(fields) = data else {
        return Err(internal_error());
    };
    let user_id = uuid_field(&fields, "user_id")?;
    let project_id = uuid_field(&fields, "project_id")?;
    let prompt = match fields.get("prompt") {
        v if is_falsy(v) => return Err(json_error(400, "prompt is required")),
        Some(Value::String(s)) => s.clone(),
        _ => return Err(internal_error()),
    };
    let test_error = fields
        .get("_test_error")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(GenerateRequest {
        user_id,
        project_id,
        prompt,
        test_error,
    })
}

fn uuid_field(fields: &Map<String, Value>, name: &str) -> Result<String, Rejection> {
    match fields.get(name) {
        v if is_falsy(v) => Err(json_error(400, &format!("{name} is required"))),
        Some(Value::String(s)) if is_uuid(s) => Ok(s.clone()),
        Some(Value::String(_)) => Err(json_error(
            400,
            &format!("Invalid {name}: must be UUID format"),
        )),
        _ => Err(internal_error()),
    }
}

fn is_falsy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => true,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    }
}

/// Case-insensitive 8-4-4-4-12 hex, any version.
fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A pre-stream error answer (§1.3).
struct Rejection {
    status: u16,
    body: String,
}

impl Rejection {
    fn into_response(self) -> Response {
        http_response(self.status, self.body)
    }
}

fn json_error(status: u16, text: &str) -> Rejection {
    // Starlette's JSONResponse is compact.
    Rejection {
        status,
        body: json!({ "error": text }).to_string(),
    }
}

fn internal_error() -> Rejection {
    Rejection {
        status: 500,
        body: "Internal Server Error".to_string(),
    }
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

/// Counts a response as open while its body exists; hyper drops the body when the client goes.
struct OpenStream(Arc<Inner>);

impl OpenStream {
    fn new(inner: Arc<Inner>) -> Self {
        inner.open_streams.fetch_add(1, Ordering::SeqCst);
        Self(inner)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Playback {
    steps: std::vec::IntoIter<Step>,
    guard: OpenStream,
}

fn sse_response(inner: Arc<Inner>, steps: Vec<Step>) -> Response {
    let playback = Playback {
        steps: steps.into_iter(),
        guard: OpenStream::new(inner),
    };
    let body = futures::stream::unfold(playback, |mut playback| async move {
        let shutdown = playback.guard.0.shutdown.clone();
        loop {
            let chunk = match playback.steps.next()? {
                Step::Modal(value) => frame(&python_json(&value)),
                Step::Cli(value) => frame(&value.to_string()),
                Step::Raw(bytes) => Ok(Bytes::from(bytes)),
                Step::Sleep(pause) => {
                    let stopped = tokio::select! {
                        () = tokio::time::sleep(pause) => false,
                        () = shutdown.cancelled() => true,
                    };
                    if !stopped {
                        continue;
                    }
                    aborted()
                }
                Step::Drop => {
                    // hyper discards unflushed bytes when a body fails; one Pending lets it
                    // flush the events already produced, as a real mid-stream drop would.
                    tokio::task::yield_now().await;
                    aborted()
                }
                Step::Hang => {
                    shutdown.cancelled().await;
                    aborted()
                }
            };
            if chunk.is_err() {
                // Nothing may follow an abort.
                playback.steps = Vec::new().into_iter();
            }
            return Some((chunk, playback));
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::CONNECTION, HeaderValue::from_static("keep-alive"))
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(body))
        .unwrap()
}

fn frame(json: &str) -> Result<Bytes, std::io::Error> {
    Ok(Bytes::from(format!("data: {json}\n\n")))
}

/// A body error makes hyper close the connection without the final chunk.
fn aborted() -> Result<Bytes, std::io::Error> {
    Err(std::io::Error::other(
        "fake generate_game aborted the stream",
    ))
}

/// Key order of the dicts `generate_game` builds; serde_json's map is sorted, Python's is not.
const PYTHON_KEY_ORDER: [&str; 14] = [
    "type",
    "exitCode",
    "code",
    "userMessage",
    "recoverable",
    "exit_code",
    "elapsed_seconds",
    "output_line_count",
    "sandbox_reused",
    "git_commit",
    "timeout_reached",
    "message",
    "content",
    "level",
];

/// `json.dumps(value)` with Python's defaults: `", "` / `": "` separators, non-ASCII as
/// `\uXXXX` (surrogate pairs beyond the BMP), keys in `generate_game`'s insertion order.
pub fn python_json(value: &Value) -> String {
    let mut out = String::new();
    write_python(&mut out, value);
    out
}

fn write_python(out: &mut String, value: &Value) {
    match value {
        Value::String(s) => write_python_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python(out, item);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            let rank = |k: &str| {
                PYTHON_KEY_ORDER
                    .iter()
                    .position(|o| *o == k)
                    .unwrap_or(usize::MAX)
            };
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort_by_key(|k| rank(k));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_str(out, key);
                out.push_str(": ");
                write_python(out, &fields[key.as_str()]);
            }
            out.push('}');
        }
        // null, true/false and numbers print the same in both languages for our values.
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_python_str(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}
