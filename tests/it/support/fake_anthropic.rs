//! A fake Anthropic Messages API on 127.0.0.1:0, good enough for the real Claude Code CLI
//! (checked with 2.1.328): `POST /v1/messages` streams SSE (`message_start`,
//! `content_block_start`, `content_block_delta` with `text_delta` / `input_json_delta`,
//! `content_block_stop`, `message_delta`, `message_stop`); non-streaming requests get a JSON
//! message; anything else (the CLI's `HEAD /api/hello`) gets `200 {}` and is logged.
//! Every request body is recorded so tests can check what the CLI sent.
//!

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::stream::{self, BoxStream, StreamExt};
use serde_json::{json, Value};

/// What the fake model does.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// Answer with this text.
    Text(String),
    /// Turn 1: a short text, then a `Write` tool call; turn 2 (once the request carries the
    /// `tool_result`): `final_text`.
    Write {
        file_path: String,
        content: String,
        final_text: String,
    },
    /// Turn 1: a `Bash` tool call running `command`; turn 2: the text `done`.
    Bash { command: String },
    /// `chunks` text deltas, one every `interval`.
    Slow { chunks: usize, interval: Duration },
    /// Every messages request fails with this status and an Anthropic error body; with
    /// `retry: false` the response says `x-should-retry: false`, which the CLI honours.
    Error { status: u16, retry: bool },
    /// `message_start`, then the stream stays open and silent forever.
    Hang,
}

#[derive(Default)]
struct Recorded {
    requests: Vec<Value>,
    other_calls: Vec<String>,
}

struct Shared {
    scenario: Scenario,
    recorded: Mutex<Recorded>,
    notify: tokio::sync::Notify,
}

pub struct FakeAnthropic {
    pub base_url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeAnthropic {
    pub async fn start(scenario: Scenario) -> Self {
        let shared = Arc::new(Shared {
            scenario,
            recorded: Mutex::new(Recorded::default()),
            notify: tokio::sync::Notify::new(),
        });
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .fallback(other)
            // The CLI sends the whole conversation; a 1 MiB prompt is well over axum's default.
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url,
            shared,
            server,
        }
    }

    /// Bodies of every `POST /v1/messages`, in arrival order.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.recorded.lock().unwrap().requests.clone()
    }

    /// `METHOD path` of every other call.
    pub fn other_calls(&self) -> Vec<String> {
        self.shared.recorded.lock().unwrap().other_calls.clone()
    }

    /// Wait until at least `n` messages requests arrived (panics after `limit`).
    pub async fn wait_for_requests(&self, n: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.shared.notify.notified();
            if self.requests().len() >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "fake API: expected {n} requests within {limit:?}, got {}",
                    self.requests().len()
                );
            }
        }
    }
}

/// Every text block of every user message of a request, in order (the CLI puts the prompt in
/// the first user message, after its own `<system-reminder>` blocks).
pub fn user_texts(request: &Value) -> Vec<String> {
    let mut texts = Vec::new();
    for message in request["messages"].as_array().into_iter().flatten() {
        if message["role"] != "user" {
            continue;
        }
        match &message["content"] {
            Value::String(text) => texts.push(text.clone()),
            Value::Array(blocks) => texts.extend(
                blocks
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str().map(str::to_string)),
            ),
            _ => {}
        }
    }
    texts
}

fn has_tool_result(request: &Value) -> bool {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| {
            m["content"]
                .as_array()
                .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
        })
}

async fn other(State(shared): State<Arc<Shared>>, method: Method, uri: Uri) -> impl IntoResponse {
    let call = format!("{method} {uri}");
    eprintln!("fake API: unexpected call {call}");
    shared.recorded.lock().unwrap().other_calls.push(call);
    (StatusCode::OK, [("content-type", "application/json")], "{}")
}

async fn messages(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad json: {e}")).into_response(),
    };
    {
        shared
            .recorded
            .lock()
            .unwrap()
            .requests
            .push(request.clone());
    }
    shared.notify.notify_waiters();
    let model = request["model"]
        .as_str()
        .unwrap_or("claude-fake")
        .to_string();

    if let Scenario::Error { status, retry } = &shared.scenario {
        let kind = if *status == 529 {
            "overloaded_error"
        } else {
            "api_error"
        };
        let body =
            json!({"type":"error","error":{"type":kind,"message":"fake failure"}}).to_string();
        let mut response = (
            StatusCode::from_u16(*status).unwrap(),
            [("content-type", "application/json")],
            body,
        )
            .into_response();
        if !retry {
            response
                .headers_mut()
                .insert("x-should-retry", "false".parse().unwrap());
        }
        return response;
    }
    if request["stream"] != true {
        let message = json!({
            "id": "msg_fake_plain", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 1, "output_tokens": 1}
        });
        return ([("content-type", "application/json")], message.to_string()).into_response();
    }

    let second_turn = has_tool_result(&request);
    let events: BoxStream<'static, (&'static str, Value)> = match &shared.scenario {
        Scenario::Text(text) => stream::iter(text_message(&model, text)).boxed(),
        Scenario::Write {
            file_path,
            content,
            final_text,
        } => {
            if second_turn {
                stream::iter(text_message(&model, final_text)).boxed()
            } else {
                let input = json!({"file_path": file_path, "content": content});
                stream::iter(tool_message(&model, "Write", &input)).boxed()
            }
        }
        Scenario::Bash { command } => {
            if second_turn {
                stream::iter(text_message(&model, "done")).boxed()
            } else {
                let input = json!({"command": command, "description": "run the command"});
                stream::iter(tool_message(&model, "Bash", &input)).boxed()
            }
        }
        Scenario::Slow { chunks, interval } => {
            let interval = *interval;
            let deltas = stream::iter(0..*chunks).then(move |i| async move {
                tokio::time::sleep(interval).await;
                ("content_block_delta", text_delta(0, &format!("chunk {i} ")))
            });
            stream::iter(vec![
                message_start(&model),
                block_start(0, json!({"type":"text","text":""})),
            ])
            .chain(deltas)
            .chain(stream::iter(vec![
                (
                    "content_block_stop",
                    json!({"type":"content_block_stop","index":0}),
                ),
                message_delta("end_turn"),
                ("message_stop", json!({"type":"message_stop"})),
            ]))
            .boxed()
        }
        Scenario::Hang => stream::iter(vec![message_start(&model)])
            .chain(stream::pending())
            .boxed(),
        Scenario::Error { .. } => unreachable!("answered above"),
    };
    let body = events.map(|(name, data)| {
        Ok::<_, Infallible>(Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(body))
        .unwrap()
}

fn message_start(model: &str) -> (&'static str, Value) {
    (
        "message_start",
        json!({"type":"message_start","message":{
            "id":"msg_fake","type":"message","role":"assistant","model":model,"content":[],
            "stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}),
    )
}

fn block_start(index: usize, block: Value) -> (&'static str, Value) {
    (
        "content_block_start",
        json!({"type":"content_block_start","index":index,"content_block":block}),
    )
}

fn text_delta(index: usize, text: &str) -> Value {
    json!({"type":"content_block_delta","index":index,"delta":{"type":"text_delta","text":text}})
}

fn message_delta(stop_reason: &str) -> (&'static str, Value) {
    (
        "message_delta",
        json!({"type":"message_delta","delta":{"stop_reason":stop_reason,"stop_sequence":null},"usage":{"output_tokens":5}}),
    )
}

fn text_message(model: &str, text: &str) -> Vec<(&'static str, Value)> {
    vec![
        message_start(model),
        block_start(0, json!({"type":"text","text":""})),
        ("content_block_delta", text_delta(0, text)),
        (
            "content_block_stop",
            json!({"type":"content_block_stop","index":0}),
        ),
        message_delta("end_turn"),
        ("message_stop", json!({"type":"message_stop"})),
    ]
}

/// A short text block, then one tool call whose input arrives in three `input_json_delta`s.
fn tool_message(model: &str, tool: &str, input: &Value) -> Vec<(&'static str, Value)> {
    let input = input.to_string();
    let chars: Vec<char> = input.chars().collect();
    let third = chars.len().div_ceil(3).max(1);
    let mut events = vec![
        message_start(model),
        block_start(0, json!({"type":"text","text":""})),
        (
            "content_block_delta",
            text_delta(0, &format!("Using {tool}.")),
        ),
        (
            "content_block_stop",
            json!({"type":"content_block_stop","index":0}),
        ),
        block_start(
            1,
            json!({"type":"tool_use","id":"toolu_fake_1","name":tool,"input":{}}),
        ),
    ];
    for part in chars.chunks(third) {
        let partial: String = part.iter().collect();
        events.push((
            "content_block_delta",
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":partial}}),
        ));
    }
    events.push((
        "content_block_stop",
        json!({"type":"content_block_stop","index":1}),
    ));
    events.push(message_delta("tool_use"));
    events.push(("message_stop", json!({"type":"message_stop"})));
    events
}
