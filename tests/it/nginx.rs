//! The relay behind a real nginx configured like the production deploy (docs/protocol.md §1.1):
//! the whole protocol passes the proxy unchanged, stream frames are not held back by it
//! (docs/backends.md §7 item 1), and the drain's 1012 reaches every browser through it.

use crate::support::fake_modal;
use crate::support::nginx;
use crate::support::relay;

use std::time::Duration;

use fake_modal::{FakeModal, Script, Step};
use nginx::Nginx;
use relay::{stream_text, token, Client, Received, TestRelay};
use serde_json::{json, Value};
use uuid::Uuid;

/// A connected, initialised client for `user`, through nginx.
async fn proxied_user(nginx: &Nginx, user: Uuid) -> Client {
    let mut client = Client::connect(&nginx.ws_url()).await;
    let reply = client.init(&token(user, 3600)).await;
    assert_eq!(reply["type"], "init", "{reply}");
    client
}

async fn http_status(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("request through nginx");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Poll until the upstream stream is closed (the relay dropped it).
async fn wait_streams_closed(fake: &FakeModal) {
    let deadline = tokio::time::Instant::now() + relay::WAIT;
    while fake.open_streams() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream stream left open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn health_and_ready_through_nginx() {
    let fake = FakeModal::start(|_| Script::success(&["ok"])).await;
    let relay = TestRelay::start_modal(&fake.url, &fake.secret, &[]).await;
    let nginx = Nginx::start(relay.addr).await;
    let (status, body) = http_status(&nginx.http_url("/health")).await;
    assert_eq!((status, body), (200, json!({"status":"ok"})));
    let (status, body) = http_status(&nginx.http_url("/ready")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["backend"]["current"], "modal");
}

#[tokio::test]
async fn full_protocol_through_nginx() {
    let fake = FakeModal::start(|_| Script::success(&["ネコのゲームを", "作りました。"])).await;
    let relay = TestRelay::start_modal(&fake.url, &fake.secret, &[]).await;
    let nginx = Nginx::start(relay.addr).await;
    let user = Uuid::new_v4();

    let mut c = Client::connect(&nginx.ws_url()).await;
    // An unauthenticated ping is answered through the proxy too.
    c.send(json!({"type":"ping"})).await;
    assert_eq!(c.recv().await, json!({"type":"pong"}));
    assert_eq!(
        c.init(&token(user, 3600)).await,
        json!({"type":"init","userId":user,"projects":[]})
    );
    let project = c.create_project("新しいゲーム").await;
    let selected = c.select(project).await;
    assert_eq!(
        selected,
        json!({"type":"projectSelected","projectId":project,"history":[],"versions":[],"activeJob":null})
    );
    c.recv_until("versionsList").await;

    // The style picker first (a new 2D game), then the job once it is skipped.
    c.send(json!({"type":"message","content":"2Dのネコゲームを作って"}))
        .await;
    assert_eq!(c.recv().await["type"], "styleOptions");
    c.send(json!({"type":"message","content":"2Dのネコゲームを作って","skipStyleSelection":true}))
        .await;
    let frames = c.recv_until("gameUpdated").await;
    let kinds = relay::types(&frames);
    assert_eq!(kinds[..2], ["jobStarted", "started"], "{kinds:?}");
    assert_eq!(&kinds[kinds.len() - 2..], ["completed", "gameUpdated"]);
    assert!(kinds.contains(&"progress".to_string()), "{kinds:?}");
    assert_eq!(
        stream_text(&frames),
        "ネコのゲームを作りました。\n[Write]\n"
    );
    let completed = &frames[frames.len() - 2];
    assert_eq!(completed["job"]["status"], "completed");
    assert_eq!(completed["job"]["id"], frames[0]["job"]["id"]);
    assert_eq!(
        frames.last().unwrap(),
        &json!({"type":"gameUpdated","userId":user,"projectId":project})
    );

    // Error frames pass unchanged and the socket survives them.
    c.send_text("{not json").await;
    assert_eq!(
        c.recv().await,
        json!({"type":"error","message":"Invalid message format"})
    );
    c.send(json!({"type":"teleport"})).await;
    assert_eq!(
        c.recv().await,
        json!({"type":"error","message":"Unknown message type"})
    );
    c.send(json!({"type":"ping"})).await;
    assert_eq!(c.recv().await, json!({"type":"pong"}));

    // The relay's close code and reason reach the browser through nginx.
    let mut refused = Client::connect(&nginx.ws_url()).await;
    assert_eq!(
        refused.init(&token(user, -120)).await,
        json!({"type":"error","message":"Token expired"})
    );
    assert_eq!(
        refused.expect_close().await,
        Some((4001, "Authentication failed".into()))
    );
}

/// The upstream sends one CLI text event and then goes silent with the stream open. The
/// browser must see that event while the job is still running: a proxy (or relay) that
/// buffered until the end would deliver nothing until the job finished, and this job only
/// finishes when the test cancels it.
#[tokio::test]
async fn stream_frames_pass_nginx_before_the_job_ends() {
    let fake = FakeModal::start(|_| {
        Script::Stream(vec![
            fake_modal::status("Sandbox connected (warm)"),
            Step::Cli(fake_modal::assistant_text("first;")),
            Step::Hang,
        ])
    })
    .await;
    let relay = TestRelay::start_modal(&fake.url, &fake.secret, &[]).await;
    let nginx = Nginx::start(relay.addr).await;
    let mut c = proxied_user(&nginx, Uuid::new_v4()).await;
    c.create_project("p").await;
    c.send(json!({"type":"message","content":"go"})).await;

    let frames = c.recv_until("stream").await;
    assert_eq!(frames.last().unwrap()["content"], "first;");
    let kinds = relay::types(&frames);
    assert!(
        !kinds
            .iter()
            .any(|k| ["completed", "failed", "cancelled"].contains(&k.as_str())),
        "{kinds:?}"
    );
    assert_eq!(fake.open_streams(), 1, "upstream still streaming");
    assert_eq!(relay.app.running_jobs(), 1, "job still running");
    let job_id = frames[0]["job"]["id"].clone();

    c.send(json!({"type":"cancel","jobId":job_id})).await;
    let cancelled = c.recv_until("cancelled").await.pop().unwrap();
    assert_eq!(cancelled["job"]["id"], job_id);
    wait_streams_closed(&fake).await;
}

/// As soon as the drain starts the relay refuses new connections, so nginx stops sending it
/// any (here: 502, it is the only upstream) while its job runs on; when the job ends the
/// open socket gets 1012 through nginx and the server stops.
#[tokio::test]
async fn a_draining_relay_leaves_nginx_at_once_and_its_socket_gets_1012() {
    let fake = FakeModal::start(|_| {
        Script::Stream(vec![
            Step::Cli(fake_modal::assistant_text("a;")),
            Step::Hang,
        ])
    })
    .await;
    let mut relay =
        TestRelay::start_modal(&fake.url, &fake.secret, &[("DRAIN_TIMEOUT_SECS", "60")]).await;
    let nginx = Nginx::start(relay.addr).await;
    let mut c = proxied_user(&nginx, Uuid::new_v4()).await;
    c.create_project("p").await;
    c.send(json!({"type":"message","content":"go"})).await;
    let started = c.recv_until("stream").await.remove(0);

    let server = relay.server.take().expect("server task");
    let _data_dir = relay.stop().await;
    // The draining relay refuses connections: nginx, whose only upstream it is, answers 502.
    let deadline = tokio::time::Instant::now() + relay::WAIT;
    loop {
        let (status, body) = http_status(&nginx.http_url("/ready")).await;
        if status == 502 {
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(tokio::time::Instant::now() < deadline, "/ready stayed 200");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    c.send(json!({"type":"cancel","jobId":started["job"]["id"]}))
        .await;
    c.recv_until("cancelled").await;
    assert_eq!(c.expect_close().await.map(|c| c.0), Some(1012));
    tokio::time::timeout(relay::WAIT, server)
        .await
        .expect("server stops once the job ended")
        .expect("server task")
        .expect("serve");
}

const SOCKETS: usize = 200;
const EVENTS: usize = 30;

/// How one socket's job ended, and how the socket was closed.
#[derive(Debug)]
struct Outcome {
    terminals: Vec<Value>,
    text: String,
    close: Option<(u16, String)>,
}

async fn run_until_closed(mut c: Client, started: tokio::sync::mpsc::Sender<()>) -> Outcome {
    c.send(json!({"type":"message","content":"go"})).await;
    let mut frames = c.recv_until("started").await;
    started.send(()).await.expect("test alive");
    let close = loop {
        match c.next().await {
            Received::Json(frame) => frames.push(frame),
            Received::Closed(close) => break close,
        }
    };
    Outcome {
        terminals: frames
            .iter()
            .filter(|f| {
                ["completed", "failed", "cancelled"].contains(&f["type"].as_str().unwrap_or(""))
            })
            .cloned()
            .collect(),
        text: stream_text(&frames),
        close,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_through_nginx_with_200_sockets() {
    let fake = FakeModal::start(|_| {
        let mut steps = Vec::new();
        for i in 0..EVENTS {
            steps.push(Step::Cli(fake_modal::assistant_text(&format!("e{i};"))));
            steps.push(Step::Sleep(Duration::from_millis(100)));
        }
        steps.push(Step::Modal(json!({"type":"done","exit_code":0})));
        Script::Stream(steps)
    })
    .await;
    let drain_timeout = Duration::from_secs(30);
    let mut relay = TestRelay::start_modal(
        &fake.url,
        &fake.secret,
        &[("MAX_JOBS_TOTAL", "500"), ("DRAIN_TIMEOUT_SECS", "30")],
    )
    .await;
    let nginx = Nginx::start(relay.addr).await;

    // Distinct users: slots, quotas and rate limits are per user.
    let clients = futures::future::join_all((0..SOCKETS).map(|_| async {
        let mut c = proxied_user(&nginx, Uuid::new_v4()).await;
        c.create_project("p").await;
        c
    }))
    .await;
    let (started_tx, mut started_rx) = tokio::sync::mpsc::channel(SOCKETS);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(run_until_closed(c, started_tx.clone())))
        .collect();
    drop(started_tx);
    for _ in 0..SOCKETS {
        started_rx.recv().await.expect("every job started");
    }
    // Jobs last about 3 s and the last one started just now: the drain has work to wait for.
    assert!(relay.app.running_jobs() != 0);

    let server = relay.server.take().expect("server task");
    let _data_dir = relay.stop().await;
    tokio::time::timeout(drain_timeout, server)
        .await
        .expect("server stops before DRAIN_TIMEOUT_SECS")
        .expect("server task")
        .expect("serve");

    let expected: String = (0..EVENTS).map(|i| format!("e{i};")).collect();
    let (mut completed, mut failed, mut problems) = (0, 0, Vec::new());
    for task in tasks {
        let outcome = task.await.expect("client task");
        let ok = match outcome.terminals.as_slice() {
            [t] if t["type"] == "completed" && outcome.text == expected => {
                completed += 1;
                true
            }
            [t] if t["type"] == "failed" && t["recoverable"] == true => {
                failed += 1;
                true
            }
            _ => false,
        };
        if !ok || outcome.close.as_ref().map(|c| c.0) != Some(1012) {
            problems.push(outcome);
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {SOCKETS} sockets did not get exactly one terminal event (completed, or failed \
         recoverably) followed by close 1012; first: {:?}",
        problems.len(),
        problems[0]
    );
    assert_eq!(completed + failed, SOCKETS);
}
