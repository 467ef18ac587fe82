//! The relay binary as operators run it: JSON logs that carry ids and never a token or a
//! secret, and SIGHUP switching the backend for new jobs without a restart.

use crate::support::fake_modal;
use crate::support::relay;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fake_modal::{FakeModal, Script};
use relay::{token, Client, SECRET};
use serde_json::{json, Value};
use uuid::Uuid;

const MODAL_SECRET_MARK: &str = "modal-secret-never-logged-42";

struct Running {
    child: Child,
    port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(dir: &std::path::Path, fake: &FakeModal, extra: &[(&str, &str)]) -> Running {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_dreamcore-relay"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATA_DIR", dir.join("data"))
        .env("SUPABASE_JWT_SECRET", SECRET)
        .env("MODAL_ENDPOINT", &fake.url)
        .env("MODAL_INTERNAL_SECRET", MODAL_SECRET_MARK)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in extra {
        command.env(k, v);
    }
    let running = Running {
        child: command.spawn().expect("relay binary starts"),
        port,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .map(|r| r.status())
        .ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running
}

async fn ready(port: u16) -> Value {
    reqwest::get(format!("http://127.0.0.1:{port}/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn json_logs_carry_ids_and_no_secrets() {
    // The fake checks the secret; it is deliberately wrong here so the job fails and logs.
    let fake = FakeModal::start(|_| Script::success(&["ok"])).await;
    let dir = tempfile::tempdir().unwrap();
    let mut relay = start(
        dir.path(),
        &fake,
        &[
            ("USE_MODAL", "true"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let user = Uuid::new_v4();
    let good = token(user, 3600);
    let mut c = Client::connect(&format!("ws://127.0.0.1:{}/", relay.port)).await;
    assert_eq!(c.init(&good).await["type"], "init");
    c.create_project("p").await;
    c.send(json!({"type":"message","content":"go"})).await;
    let failed = c.recv_until("failed").await.pop().unwrap();
    assert_eq!(failed["code"], "UPSTREAM_AUTH_ERROR");
    let forged = format!("{}x", token(Uuid::new_v4(), 3600));
    let mut bad = Client::connect(&format!("ws://127.0.0.1:{}/", relay.port)).await;
    bad.init(&forged).await;
    let _ = reqwest::get(format!("http://127.0.0.1:{}/ready?sig=abc", relay.port)).await;

    let _ = relay.child.kill();
    let stdout = relay.child.stdout.take().unwrap();
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let parsed: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(parsed["level"].is_string(), "{line}");
        for secret in [good.as_str(), forged.as_str(), SECRET, MODAL_SECRET_MARK] {
            assert!(!line.contains(secret), "a secret reached the log: {line}");
        }
    }
    let user_id = user.to_string();
    let job_line = lines
        .iter()
        .find(|l| l.contains("job failed"))
        .expect("the failure is logged");
    assert!(
        job_line.contains(&user_id) && job_line.contains("job_id"),
        "{job_line}"
    );
    assert!(
        lines.iter().any(|l| l.contains("request_id")),
        "HTTP spans carry a request id"
    );
}

#[tokio::test]
async fn sighup_switches_the_backend_for_new_jobs() {
    let fake = FakeModal::start(|_| Script::success(&["ok"])).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "USE_MODAL=true\n").unwrap();
    let relay = start(dir.path(), &fake, &[]).await;
    assert_eq!(ready(relay.port).await["backend"]["useModal"], "true");

    std::fs::write(dir.path().join(".env"), "USE_MODAL=false\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(relay.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = ready(relay.port).await;
        if status["backend"]["useModal"] == "false" {
            assert_eq!(status["backend"]["current"], "local");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP not applied: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A bad value is refused and changes nothing.
    std::fs::write(dir.path().join(".env"), "USE_MODAL=maybe\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(relay.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ready(relay.port).await["backend"]["useModal"], "false");
}
