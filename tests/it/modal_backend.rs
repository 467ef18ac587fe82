//! `ModalBackend::run` against the fake `generate_game` (`tests/support/fake_modal.rs`).

use crate::support::fake_modal;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use dreamcore_relay::backend::modal::{BuildError, ModalBackend};
use dreamcore_relay::backend::{
    Backend, BackendEvent, BackendKind, EventStream, Failure, RunRequest,
};
use dreamcore_relay::config::Config;
use fake_modal::{
    api_error_event, assistant_text, assistant_tool_use, cli_result, python_json, status,
    FakeModal, Script, Step, COMMIT, TEST_ERROR_STATUS,
};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Generous bound on any single run; a hang fails the test instead of blocking it.
const DEADLINE: Duration = Duration::from_secs(30);
const USER: &str = "6b229f33-0c1e-4d5a-9a61-1f0e2b7c9d10";
const PROJECT: &str = "019c390f-7a2b-7c11-8e3d-55aa90c4b021";

/// The backend as the relay builds it from `config`.
fn new_backend(config: &Config) -> Result<ModalBackend, BuildError> {
    ModalBackend::new(&config.modal, config.http.upstream_pool())
}

fn config(endpoint: &str, secret: &str, idle_secs: u64) -> Config {
    let vars: HashMap<&str, String> = HashMap::from([
        ("USE_MODAL", "true".to_string()),
        ("MODAL_ENDPOINT", endpoint.to_string()),
        ("MODAL_INTERNAL_SECRET", secret.to_string()),
        ("MODAL_IDLE_TIMEOUT_SECS", idle_secs.to_string()),
    ]);
    Config::load_from(None, |k| vars.get(k).cloned()).unwrap()
}

fn request(prompt: &str) -> RunRequest {
    RunRequest {
        job_id: Uuid::now_v7(),
        user_id: Uuid::parse_str(USER).unwrap(),
        project_id: Uuid::parse_str(PROJECT).unwrap(),
        prompt: prompt.to_string(),
        skills: Vec::new(),
    }
}

async fn collect(backend: &ModalBackend, request: RunRequest) -> Vec<BackendEvent> {
    let stream = backend.run(request, CancellationToken::new());
    tokio::time::timeout(DEADLINE, stream.collect::<Vec<_>>())
        .await
        .expect("run did not end")
}

async fn run_against(fake: &FakeModal, idle_secs: u64) -> Vec<BackendEvent> {
    let backend = new_backend(&config(&fake.url, &fake.secret, idle_secs)).unwrap();
    collect(&backend, request("<user>\nMake a game\n</user>")).await
}

/// Runs one scripted stream with a 30 s idle timeout.
async fn run_script(script: Script) -> Vec<BackendEvent> {
    let script = Mutex::new(Some(script));
    let fake =
        FakeModal::start(move |_| script.lock().unwrap().take().expect("one request only")).await;
    let events = run_against(&fake, 30).await;
    assert_eq!(
        fake.requests().len(),
        1,
        "the POST must be sent exactly once"
    );
    events
}

fn statuses(messages: &[&str]) -> Vec<BackendEvent> {
    messages
        .iter()
        .map(|m| BackendEvent::Status(m.to_string()))
        .collect()
}

const STARTUP: [&str; 3] = [
    "Sandbox connected (warm)",
    "Loading skills...",
    "Starting Claude CLI...",
];

fn startup() -> Vec<BackendEvent> {
    statuses(&STARTUP)
}

fn startup_steps() -> Vec<Step> {
    STARTUP.iter().map(|s| status(s)).collect()
}

/// Splits events into the non-terminal ones and the single terminal one, which must be last.
fn split_terminal(mut events: Vec<BackendEvent>) -> (Vec<BackendEvent>, BackendEvent) {
    let last = events.pop().expect("no events");
    assert!(last.is_terminal(), "last event is not terminal: {last:?}");
    assert!(
        !events.iter().any(BackendEvent::is_terminal),
        "more than one terminal event"
    );
    (events, last)
}

fn failure(event: BackendEvent) -> Failure {
    match event {
        BackendEvent::Failed(f) => f,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn happy_path_maps_every_event_kind() {
    let events = run_script(Script::success(&[
        "ジャンプ力を上げます。",
        "完成しました 🎮",
    ]))
    .await;
    let mut expected = startup();
    expected.extend([
        BackendEvent::Text("ジャンプ力を上げます。".into()),
        BackendEvent::Text("完成しました 🎮".into()),
        BackendEvent::ToolUse("Write".into()),
        BackendEvent::Status("Saving version history...".into()),
        BackendEvent::Completed {
            commit: Some(COMMIT.into()),
        },
    ]);
    assert_eq!(events, expected);
}

#[tokio::test]
async fn raw_cli_events_keep_their_order() {
    let events = run_script(Script::wrap_cli(vec![
        json!({"type": "system", "subtype": "init", "tools": ["Write"]}),
        json!({"type": "assistant", "message": {"content": [
            {"type": "text", "text": "まず"},
            {"type": "tool_use", "id": "t1", "name": "Read", "input": {}},
            {"type": "thinking", "thinking": "..."},
            {"type": "text", "text": "次に"}
        ]}}),
        json!({"type": "stream_event", "event": {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Δ"}}}),
        assistant_tool_use("Edit", json!({"file_path": "index.html", "old_string": "a", "new_string": "b"})),
        json!({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}}),
        json!({"type": "some_future_type", "payload": 1}),
        json!(42),
        assistant_text("終わり"),
        cli_result(false),
    ]))
    .await;
    let (events, terminal) = split_terminal(events);
    let mut expected = startup();
    expected.extend([
        BackendEvent::Text("まず".into()),
        BackendEvent::ToolUse("Read".into()),
        BackendEvent::Text("次に".into()),
        BackendEvent::Text("Δ".into()),
        BackendEvent::ToolUse("Edit".into()),
        BackendEvent::Text("終わり".into()),
        BackendEvent::Status("Saving version history...".into()),
    ]);
    assert_eq!(events, expected);
    assert_eq!(
        terminal,
        BackendEvent::Completed {
            commit: Some(COMMIT.into())
        }
    );
}

#[tokio::test]
async fn only_a_hex_hash_is_reported_as_commit() {
    for (reported, expected) in [
        ("nothing to commit, working tree clean", None),
        ("abc12", None),
        (
            "0123456789abcdef0123456789abcdef01234567",
            Some("0123456789abcdef0123456789abcdef01234567"),
        ),
    ] {
        let mut steps = startup_steps();
        steps.extend([
            status("Saving version history..."),
            Step::Modal(json!({"type": "log", "content": format!("Git commit created: {reported}"), "level": "info"})),
            Step::Modal(json!({"type": "debug", "exit_code": 0, "elapsed_seconds": 3.25, "output_line_count": 0,
                               "sandbox_reused": false, "git_commit": reported})),
            Step::Modal(json!({"type": "done", "exit_code": 0})),
        ]);
        let (_, terminal) = split_terminal(run_script(Script::Stream(steps)).await);
        assert_eq!(
            terminal,
            BackendEvent::Completed {
                commit: expected.map(str::to_string)
            },
            "{reported}"
        );
    }
}

#[tokio::test]
async fn every_test_error_value_maps_to_its_outcome() {
    let cases = [
        (
            "timeout",
            Some((
                "CLI_TIMEOUT",
                "生成に時間がかかりすぎました（5分制限）",
                true,
                Some(124),
            )),
        ),
        (
            "general",
            Some((
                "CLI_GENERAL_ERROR",
                "生成中にエラーが発生しました",
                false,
                Some(1),
            )),
        ),
        (
            "sandbox",
            Some(("SANDBOX_ERROR", "実行環境の準備に失敗しました", false, None)),
        ),
        (
            "network",
            Some((
                "NETWORK_ERROR",
                "ネットワーク接続に問題があります",
                true,
                None,
            )),
        ),
        (
            "rate_limit",
            Some(("RATE_LIMIT", "APIの利用制限に達しました", true, None)),
        ),
        ("anything_else", None),
    ];
    // Each case pauses 1 s upstream; run them side by side.
    let runs = cases.iter().map(|&(kind, _)| async move {
        let fake = FakeModal::start(move |_| Script::test_error(kind)).await;
        run_against(&fake, 30).await
    });
    let results = futures::future::join_all(runs).await;
    for ((kind, expected), events) in cases.into_iter().zip(results) {
        let (events, terminal) = split_terminal(events);
        assert_eq!(events, statuses(&[TEST_ERROR_STATUS]), "{kind}");
        match expected {
            Some((code, message, recoverable, exit_code)) => {
                let f = failure(terminal);
                assert_eq!(
                    (
                        f.code.as_str(),
                        f.user_message.as_str(),
                        f.recoverable,
                        f.exit_code
                    ),
                    (code, message, recoverable, exit_code),
                    "{kind}"
                );
                assert!(!f.upstream_unavailable, "{kind}");
            }
            None => assert_eq!(terminal, BackendEvent::Completed { commit: None }, "{kind}"),
        }
    }
}

#[tokio::test]
async fn cli_exit_codes_fail_with_the_upstream_error() {
    let cases = [
        (
            1,
            "CLI_GENERAL_ERROR",
            "生成中にエラーが発生しました".to_string(),
            false,
        ),
        (
            124,
            "CLI_TIMEOUT",
            "生成に時間がかかりすぎました（5分制限）".to_string(),
            true,
        ),
        (
            137,
            "CLI_KILLED",
            "生成がキャンセルされました".to_string(),
            true,
        ),
        (
            143,
            "CLI_TERMINATED",
            "生成が中断されました".to_string(),
            true,
        ),
        (
            2,
            "CLI_UNKNOWN_ERROR",
            "予期しないエラーが発生しました (コード: 2)".to_string(),
            false,
        ),
    ];
    for (exit_code, code, message, recoverable) in cases {
        let (events, terminal) = split_terminal(run_script(Script::cli_exit(exit_code)).await);
        let mut expected = startup();
        expected.push(BackendEvent::Status("Saving version history...".into()));
        assert_eq!(events, expected);
        let f = failure(terminal);
        assert_eq!(
            (
                f.code.as_str(),
                f.user_message.as_str(),
                f.recoverable,
                f.exit_code
            ),
            (code, message.as_str(), recoverable, Some(exit_code))
        );
    }
}

#[tokio::test]
async fn cli_result_error_turns_done_into_failure() {
    let events = run_script(Script::wrap_cli(vec![
        assistant_text("やってみます"),
        cli_result(true),
    ]))
    .await;
    let (events, terminal) = split_terminal(events);
    assert!(events.contains(&BackendEvent::Text("やってみます".into())));
    let f = failure(terminal);
    assert_eq!(
        (f.code.as_str(), f.recoverable, f.exit_code),
        ("CLI_GENERAL_ERROR", false, Some(0))
    );
}

#[tokio::test]
async fn wrong_secret_is_an_upstream_auth_failure() {
    let fake = FakeModal::start(|_| Script::success(&[])).await;
    let backend = new_backend(&config(&fake.url, "not-the-modal-secret", 30)).unwrap();
    let events = collect(&backend, request("hi")).await;
    assert_eq!(events.len(), 1);
    let f = failure(events.into_iter().next().unwrap());
    assert_eq!(f.code, "UPSTREAM_AUTH_ERROR");
    assert!(!f.upstream_unavailable);
    assert!(
        f.detail.contains("401") && f.detail.contains(r#"{"error":"Unauthorized"}"#),
        "{}",
        f.detail
    );
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn rejected_request_is_an_upstream_bad_request() {
    let fake = FakeModal::start(|_| Script::success(&[])).await;
    let events = {
        let backend = new_backend(&config(&fake.url, &fake.secret, 30)).unwrap();
        collect(&backend, request("")).await
    };
    assert_eq!(events.len(), 1);
    let f = failure(events.into_iter().next().unwrap());
    assert_eq!(f.code, "UPSTREAM_BAD_REQUEST");
    assert!(f.detail.contains("prompt is required"), "{}", f.detail);
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn server_errors_mark_upstream_unavailable() {
    for (status, body) in [
        (500, "Internal Server Error".to_string()),
        (502, "<html><body>Bad Gateway</body></html>".to_string()),
        (503, json!({"error": "app stopped"}).to_string()),
    ] {
        let events = run_script(Script::Http {
            status,
            body: body.clone(),
        })
        .await;
        assert_eq!(events.len(), 1, "{status}");
        let f = failure(events.into_iter().next().unwrap());
        assert_eq!(
            (f.code.as_str(), f.recoverable),
            ("SANDBOX_ERROR", true),
            "{status}"
        );
        assert!(f.upstream_unavailable, "{status}");
        assert!(
            f.detail.contains(&status.to_string()) && f.detail.contains(&body),
            "{}",
            f.detail
        );
    }
}

#[tokio::test]
async fn malformed_and_foreign_lines_are_skipped() {
    let mut steps = vec![
        Step::Raw(b"data: {not json\n\n".to_vec()),
        Step::Raw(
            b"data: \n\n: keep-alive comment\n\nevent: status\nid: 7\nretry: 10\n\n".to_vec(),
        ),
        Step::Raw(
            "data: {\"type\": \"status\", \"message\": \"tr\u{fc}ncated\"\n\n"
                .as_bytes()
                .to_vec(),
        ),
        Step::Raw(b"data:{\"type\":\"status\",\"message\":\"no space\"}\r\n\r\n".to_vec()),
        Step::Raw(b"data: [1, 2\n\ndata: \"just a string\"\n\n".to_vec()),
    ];
    steps.extend(startup_steps());
    steps.push(Step::Modal(json!({"type": "done", "exit_code": 0})));
    let events = run_script(Script::Stream(steps)).await;
    let mut expected = statuses(&["no space"]);
    expected.extend(startup());
    expected.push(BackendEvent::Completed { commit: None });
    assert_eq!(events, expected);
}

#[tokio::test]
async fn chunks_split_anywhere_even_inside_characters() {
    let line = format!("data: {}\n\n", assistant_text("日本語のテキスト🎮"));
    let bytes = line.as_bytes();
    let mut steps = startup_steps();
    // One event per cut position, each written as two chunks.
    for cut in 0..=bytes.len() {
        steps.push(Step::Raw(bytes[..cut].to_vec()));
        steps.push(Step::Sleep(Duration::from_millis(2)));
        steps.push(Step::Raw(bytes[cut..].to_vec()));
    }
    // Then a whole Modal-made event one byte per chunk.
    let status_line = format!(
        "data: {}\n\n",
        python_json(&json!({"type": "status", "message": "一バイトずつ"}))
    );
    for byte in status_line.bytes() {
        steps.push(Step::Raw(vec![byte]));
        steps.push(Step::Sleep(Duration::from_millis(1)));
    }
    steps.push(Step::Modal(json!({"type": "done", "exit_code": 0})));
    let events = run_script(Script::Stream(steps)).await;
    let mut expected = startup();
    expected.extend(std::iter::repeat_n(
        BackendEvent::Text("日本語のテキスト🎮".into()),
        bytes.len() + 1,
    ));
    expected.push(BackendEvent::Status("一バイトずつ".into()));
    expected.push(BackendEvent::Completed { commit: None });
    assert_eq!(events, expected);
}

#[tokio::test]
async fn last_line_without_newline_still_counts() {
    let mut steps = startup_steps();
    steps.push(Step::Raw(
        b"data: {\"type\": \"done\", \"exit_code\": 0}".to_vec(),
    ));
    let (_, terminal) = split_terminal(run_script(Script::Stream(steps)).await);
    assert_eq!(terminal, BackendEvent::Completed { commit: None });
}

#[tokio::test]
async fn slow_stream_longer_than_the_idle_timeout_completes() {
    let script = Script::success(&["ゆっくり"]);
    let Script::Stream(steps) = script else {
        unreachable!()
    };
    let count = steps.len();
    // Each gap is well under the 2 s idle timeout; together they exceed it.
    let paced: Vec<Step> = steps
        .into_iter()
        .flat_map(|step| [Step::Sleep(Duration::from_millis(250)), step])
        .collect();
    assert!(count as u64 * 250 > 2000);
    let script = Mutex::new(Some(Script::Stream(paced)));
    let fake = FakeModal::start(move |_| script.lock().unwrap().take().unwrap()).await;
    let (_, terminal) = split_terminal(run_against(&fake, 2).await);
    assert_eq!(
        terminal,
        BackendEvent::Completed {
            commit: Some(COMMIT.into())
        }
    );
}

#[tokio::test]
async fn dropped_connection_is_stream_dropped() {
    let mut steps = startup_steps();
    steps.push(Step::Cli(assistant_text("途中")));
    steps.push(Step::Drop);
    let (events, terminal) = split_terminal(run_script(Script::Stream(steps)).await);
    let mut expected = startup();
    expected.push(BackendEvent::Text("途中".into()));
    assert_eq!(events, expected);
    let f = failure(terminal);
    assert_eq!((f.code.as_str(), f.recoverable), ("STREAM_DROPPED", true));
    assert!(!f.upstream_unavailable);
}

#[tokio::test]
async fn stream_without_terminal_is_incomplete() {
    let mut steps = startup_steps();
    steps.push(Step::Cli(assistant_text("書いています")));
    steps.push(Step::Cli(cli_result(false)));
    let (events, terminal) = split_terminal(run_script(Script::Stream(steps)).await);
    assert_eq!(events.len(), 4);
    assert_eq!(failure(terminal).code, "STREAM_INCOMPLETE");
}

#[tokio::test]
async fn nonzero_debug_exit_without_terminal_fails_with_that_code() {
    for (exit_code, code) in [
        (137, "CLI_KILLED"),
        (124, "CLI_TIMEOUT"),
        (2, "CLI_GENERAL_ERROR"),
    ] {
        let mut steps = startup_steps();
        steps.push(Step::Modal(
            json!({"type": "debug", "exit_code": exit_code, "elapsed_seconds": 9.5,
                                       "output_line_count": 0, "sandbox_reused": true}),
        ));
        let (_, terminal) = split_terminal(run_script(Script::Stream(steps)).await);
        let f = failure(terminal);
        assert_eq!((f.code.as_str(), f.exit_code), (code, Some(exit_code)));
    }
}

#[tokio::test]
async fn silent_stream_hits_the_idle_timeout() {
    let fake = FakeModal::start(|_| {
        let mut steps = startup_steps();
        steps.push(Step::Hang);
        Script::Stream(steps)
    })
    .await;
    let (events, terminal) = split_terminal(run_against(&fake, 1).await);
    assert_eq!(events, startup());
    let f = failure(terminal);
    assert_eq!(
        (f.code.as_str(), f.recoverable),
        ("STREAM_IDLE_TIMEOUT", true)
    );
    wait_until_closed(&fake).await;
}

#[tokio::test]
async fn refused_connection_is_a_network_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let backend = new_backend(&config(
        &format!("http://127.0.0.1:{port}/generate_game"),
        "modal-internal-secret",
        5,
    ))
    .unwrap();
    let events = collect(&backend, request("hi")).await;
    assert_eq!(events.len(), 1);
    let f = failure(events.into_iter().next().unwrap());
    assert_eq!((f.code.as_str(), f.recoverable), ("NETWORK_ERROR", true));
    assert!(f.upstream_unavailable);
    assert!(!f.detail.is_empty());
}

async fn wait_until_closed(fake: &FakeModal) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.open_streams() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream stream still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hanging_fake_script() -> Script {
    let mut steps = startup_steps();
    steps.push(Step::Hang);
    Script::Stream(steps)
}

/// A run against `fake` with its cancel token, read past the startup statuses.
async fn run_past_startup(fake: &FakeModal) -> (EventStream, CancellationToken) {
    let backend = new_backend(&config(&fake.url, &fake.secret, 60)).unwrap();
    let cancel = CancellationToken::new();
    let mut stream = backend.run(request("hi"), cancel.clone());
    for expected in startup() {
        let event = tokio::time::timeout(DEADLINE, stream.next()).await.unwrap();
        assert_eq!(event, Some(expected));
    }
    (stream, cancel)
}

#[tokio::test]
async fn cancel_ends_the_stream_and_closes_the_upstream_connection() {
    let fake = FakeModal::start(|_| hanging_fake_script()).await;
    let (stream, cancel) = run_past_startup(&fake).await;
    assert_eq!(fake.open_streams(), 1);
    cancel.cancel();
    let rest: Vec<BackendEvent> = tokio::time::timeout(DEADLINE, stream.collect())
        .await
        .unwrap();
    assert!(rest.is_empty(), "nothing may follow a cancel: {rest:?}");
    wait_until_closed(&fake).await;
    assert_eq!(fake.requests().len(), 1);
}

/// A body that never makes the reader wait: the cancel is still seen within a few events,
/// not after everything already received.
#[tokio::test]
async fn cancel_ends_a_stream_whose_data_is_always_ready() {
    const BURST: usize = 2000;
    let fake = FakeModal::start(|_| {
        let mut steps = startup_steps();
        let burst: String = (0..BURST)
            .map(|i| format!("data: {}\n\n", assistant_text(&format!("t{i}"))))
            .collect();
        steps.push(Step::Raw(burst.into_bytes()));
        steps.push(Step::Hang);
        Script::Stream(steps)
    })
    .await;
    let (mut stream, cancel) = run_past_startup(&fake).await;
    let first = tokio::time::timeout(DEADLINE, stream.next()).await.unwrap();
    assert_eq!(first, Some(BackendEvent::Text("t0".into())));
    cancel.cancel();
    let rest: Vec<BackendEvent> = tokio::time::timeout(DEADLINE, stream.collect())
        .await
        .unwrap();
    assert!(rest.len() < 16, "{} events followed the cancel", rest.len());
    wait_until_closed(&fake).await;
}

#[tokio::test]
async fn dropping_the_event_stream_closes_the_upstream_connection() {
    let fake = FakeModal::start(|_| hanging_fake_script()).await;
    let backend = new_backend(&config(&fake.url, &fake.secret, 60)).unwrap();
    let mut stream = backend.run(request("hi"), CancellationToken::new());
    let first = tokio::time::timeout(DEADLINE, stream.next()).await.unwrap();
    assert_eq!(first, Some(BackendEvent::Status(STARTUP[0].into())));
    assert_eq!(fake.open_streams(), 1);
    drop(stream);
    wait_until_closed(&fake).await;
}

#[tokio::test]
async fn cancel_before_the_first_poll_sends_nothing_upstream() {
    let fake = FakeModal::start(|_| Script::success(&[])).await;
    let backend = new_backend(&config(&fake.url, &fake.secret, 60)).unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let events: Vec<BackendEvent> =
        tokio::time::timeout(DEADLINE, backend.run(request("hi"), cancel).collect())
            .await
            .unwrap();
    assert!(events.is_empty());
    assert!(fake.requests().is_empty());
    assert_eq!(backend.kind(), BackendKind::Modal);
}

/// A bare recorder (not the fake) so every header and body byte is visible.
#[tokio::test]
async fn request_has_exactly_the_documented_shape() {
    type Seen = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;
    let seen: Seen = Arc::default();
    let recorder = {
        let seen = Arc::clone(&seen);
        axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: HeaderMap,
                  body: Bytes| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock()
                        .unwrap()
                        .push((format!("{method} {uri}"), headers, body));
                    (
                        [("content-type", "text/event-stream; charset=utf-8")],
                        "data: {\"type\": \"done\", \"exit_code\": 0}\n\n",
                    )
                }
            },
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, recorder).await.unwrap() });

    let backend = new_backend(&config(
        &format!("http://{addr}/generate_game"),
        "the-modal-secret",
        30,
    ))
    .unwrap();
    let prompt = "<system>\nルール\n</system>\n\n<user>\nジャンプ \"高く\"\n</user>";
    let events = collect(&backend, request(prompt)).await;
    server.abort();
    assert_eq!(events, vec![BackendEvent::Completed { commit: None }]);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "exactly one POST");
    let (line, headers, body) = &seen[0];
    assert_eq!(line, "POST /generate_game");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-modal-secret"], "the-modal-secret");
    assert!(headers.get("authorization").is_none());
    let body: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        body,
        json!({"user_id": USER, "project_id": PROJECT, "prompt": prompt})
    );
}

#[tokio::test]
async fn fake_validates_in_upstream_order() {
    let fake = FakeModal::start(|_| Script::success(&[])).await;
    let client = reqwest::Client::new();
    let post = |secret: Option<&str>, body: &str| {
        let mut builder = client
            .post(&fake.url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(secret) = secret {
            builder = builder.header("x-modal-secret", secret);
        }
        async move {
            let response = builder.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let secret = Some(fake.secret.as_str());
    let ok_ids = format!(r#""user_id":"{USER}","project_id":"{PROJECT}""#);
    let unauthorized = (401, r#"{"error":"Unauthorized"}"#.to_string());
    assert_eq!(post(None, "{").await, unauthorized);
    assert_eq!(post(Some("wrong"), "{").await, unauthorized);
    assert_eq!(post(Some(""), "{}").await, unauthorized);
    let bad = |text: &str| (400, json!({ "error": text }).to_string());
    assert_eq!(post(secret, "{").await, bad("Invalid JSON"));
    assert_eq!(post(secret, "{}").await, bad("user_id is required"));
    assert_eq!(
        post(secret, r#"{"user_id":"","prompt":"x"}"#).await,
        bad("user_id is required")
    );
    assert_eq!(
        post(secret, r#"{"user_id":"abc"}"#).await,
        bad("Invalid user_id: must be UUID format")
    );
    assert_eq!(
        post(
            secret,
            &format!(r#"{{"user_id":"{}"}}"#, USER.to_uppercase())
        )
        .await,
        bad("project_id is required")
    );
    assert_eq!(
        post(
            secret,
            &format!(r#"{{"user_id":"{USER}","project_id":"{USER}x"}}"#)
        )
        .await,
        bad("Invalid project_id: must be UUID format")
    );
    assert_eq!(
        post(secret, &format!("{{{ok_ids}}}")).await,
        bad("prompt is required")
    );
    assert_eq!(
        post(secret, &format!(r#"{{{ok_ids},"prompt":""}}"#)).await,
        bad("prompt is required")
    );
    assert_eq!(post(secret, "[1]").await.0, 500);
    assert_eq!(post(secret, r#"{"user_id":5}"#).await.0, 500);
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn fake_test_error_mode_matches_the_wire_format() {
    let fake = FakeModal::start(|_| panic!("test mode must not consult the script")).await;
    let body = json!({"user_id": USER, "project_id": PROJECT, "prompt": "p", "_test_error": "timeout", "extra": 1});
    let response = reqwest::Client::new()
        .post(&fake.url)
        .header("x-modal-secret", &fake.secret)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-length").is_none());
    let text = response.text().await.unwrap();
    assert_eq!(
        text,
        concat!(
            "data: {\"type\": \"status\", \"message\": \"\\u30c6\\u30b9\\u30c8\\u30a8\\u30e9\\u30fc\\u3092",
            "\\u30b7\\u30df\\u30e5\\u30ec\\u30fc\\u30c8\\u4e2d...\"}\n\n",
            "data: {\"type\": \"error\", \"exitCode\": 124, \"code\": \"CLI_TIMEOUT\", \"userMessage\": ",
            "\"\\u751f\\u6210\\u306b\\u6642\\u9593\\u304c\\u304b\\u304b\\u308a\\u3059\\u304e\\u307e\\u3057\\u305f",
            "\\uff085\\u5206\\u5236\\u9650\\uff09\", \"recoverable\": true}\n\n",
        )
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].test_error.as_deref(), Some("timeout"));
    assert_eq!(
        (requests[0].user_id.as_str(), requests[0].prompt.as_str()),
        (USER, "p")
    );
}

#[test]
fn python_serializer_matches_json_dumps() {
    assert_eq!(
        python_json(
            &json!({"type": "debug", "git_commit": "3f9c2ab", "exit_code": 0, "elapsed_seconds": 101.37,
                            "sandbox_reused": true, "output_line_count": 4})
        ),
        r#"{"type": "debug", "exit_code": 0, "elapsed_seconds": 101.37, "output_line_count": 4, "sandbox_reused": true, "git_commit": "3f9c2ab"}"#
    );
    assert_eq!(
        python_json(
            &json!({"type": "log", "content": "a\"b\\c\nd\té🎮\u{1}\u{7f}", "level": null})
        ),
        r#"{"type": "log", "content": "a\"b\\c\nd\t\u00e9\ud83c\udfae\u0001\u007f", "level": null}"#
    );
    assert_eq!(
        python_json(&api_error_event("SANDBOX_ERROR")),
        r#"{"type": "error", "code": "SANDBOX_ERROR", "userMessage": "\u5b9f\u884c\u74b0\u5883\u306e\u6e96\u5099\u306b\u5931\u6557\u3057\u307e\u3057\u305f", "recoverable": false}"#
    );
}
