//! Graceful drain (SIGTERM): new connections are refused at once, new jobs on open sockets
//! are refused with a recoverable error, running jobs finish (or fail recoverably at the drain timeout), every
//! socket gets 1012, the server stops cleanly.

use crate::support::fake_modal;
use crate::support::relay;

use std::time::Duration;

use fake_modal::{FakeModal, Script, Step};
use relay::TestRelay;
use serde_json::json;
use uuid::Uuid;

fn slow(n: usize, gap_ms: u64) -> Script {
    let mut steps = Vec::new();
    for i in 0..n {
        steps.push(Step::Cli(json!({"type":"assistant","message":{"content":[{"type":"text","text":format!("e{i};")}]}})));
        steps.push(Step::Sleep(Duration::from_millis(gap_ms)));
    }
    steps.push(Step::Modal(json!({"type":"done","exit_code":0})));
    Script::Stream(steps)
}

async fn relay_with(fake: &FakeModal, drain_secs: &str) -> TestRelay {
    TestRelay::start_modal(
        &fake.url,
        &fake.secret,
        &[("DRAIN_TIMEOUT_SECS", drain_secs)],
    )
    .await
}

async fn ready_status(addr: std::net::SocketAddr) -> u16 {
    reqwest::get(format!("http://{addr}/ready"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn running_jobs_finish_then_sockets_get_1012() {
    let fake = FakeModal::start(|_| slow(30, 50)).await;
    let relay = relay_with(&fake, "60").await;
    let addr = relay.addr;
    assert_eq!(ready_status(addr).await, 200);

    let mut running = relay.user(Uuid::new_v4()).await;
    running.create_project("p").await;
    running.send(json!({"type":"message","content":"go"})).await;
    running.recv_until("started").await;
    let mut idle = relay.user(Uuid::new_v4()).await;
    idle.create_project("q").await;

    let stopper = tokio::spawn(relay.stop());
    // Drain began: new connections are refused at once (the listening socket is closed, so
    // any load balancer moves on), and new work on open sockets is refused recoverably.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the draining relay still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    idle.send(json!({"type":"message","content":"go"})).await;
    let refused = idle.recv().await;
    assert_eq!(refused["error"]["code"], "SERVER_DRAINING");
    assert_eq!(refused["error"]["recoverable"], true);

    let frames = running.recv_until("gameUpdated").await;
    let text: String = frames
        .iter()
        .filter(|f| f["type"] == "stream")
        .map(|f| f["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, (0..30).map(|i| format!("e{i};")).collect::<String>());
    assert_eq!(running.expect_close().await.map(|c| c.0), Some(1012));
    assert_eq!(idle.expect_close().await.map(|c| c.0), Some(1012));
    tokio::time::timeout(Duration::from_secs(10), stopper)
        .await
        .expect("server stops")
        .unwrap();
}

#[tokio::test]
async fn drain_timeout_fails_jobs_recoverably() {
    let fake = FakeModal::start(|_| slow(1000, 50)).await;
    let relay = relay_with(&fake, "1").await;
    let mut c = relay.user(Uuid::new_v4()).await;
    c.create_project("p").await;
    c.send(json!({"type":"message","content":"go"})).await;
    c.recv_until("started").await;
    let stopper = tokio::spawn(relay.stop());
    let failed = c.recv_until("failed").await.pop().unwrap();
    assert_eq!(failed["code"], "SERVER_RESTARTING");
    assert_eq!(failed["recoverable"], true);
    assert_eq!(failed["job"]["status"], "failed");
    assert_eq!(c.expect_close().await.map(|c| c.0), Some(1012));
    tokio::time::timeout(Duration::from_secs(10), stopper)
        .await
        .expect("server stops")
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fake.open_streams() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream left open after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
