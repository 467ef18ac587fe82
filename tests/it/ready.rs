//! `/ready` tells the truth: 503 with the reason when the configured backend cannot run a job
//! (no Claude CLI, no usable `LOCAL_CLI_USER`, no Modal secret), 200 when it can, re-checked
//! when the backend is switched.

use crate::support::fake_modal;
use crate::support::relay;
use crate::support::tools;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use fake_modal::{FakeModal, Script};
use relay::TestRelay;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "ready-test-admin-token";

async fn ready(relay: &TestRelay) -> (u16, Value) {
    relay::ready(relay.addr).await
}

fn problems(body: &Value) -> String {
    body["backend"]["problems"].to_string()
}

/// The installed CLI and the account it must run as: a local backend that can run a job.
fn usable_cli_env() -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("USE_MODAL", "false".to_string()),
        ("CLAUDE_BIN", tools::claude_bin().display().to_string()),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
    ];
    if let Some(user) = tools::cli_user() {
        env.push(("LOCAL_CLI_USER", user.name));
    }
    env
}

async fn start(env: &[(&str, String)]) -> TestRelay {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestRelay::start(&env).await
}

fn with(
    mut env: Vec<(&'static str, String)>,
    key: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    env.retain(|(k, _)| *k != key);
    env.push((key, value.to_string()));
    env
}

#[tokio::test]
async fn a_usable_local_cli_is_ready() {
    let relay = start(&usable_cli_env()).await;
    let (status, body) = ready(&relay).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["backend"]["usable"], true);
    assert_eq!(body["backend"]["problems"], json!([]));
}

#[tokio::test]
async fn a_missing_cli_binary_is_not_ready() {
    let relay = start(&with(usable_cli_env(), "CLAUDE_BIN", "/nonexistent/claude")).await;
    let (status, body) = ready(&relay).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "backend unusable");
    assert!(
        problems(&body).contains("CLAUDE_BIN /nonexistent/claude"),
        "{body}"
    );

    let relay = start(&with(
        usable_cli_env(),
        "CLAUDE_BIN",
        "no-such-claude-binary",
    ))
    .await;
    let (status, body) = ready(&relay).await;
    assert_eq!(status, 503, "{body}");
    assert!(problems(&body).contains("not found in PATH"), "{body}");
}

#[tokio::test]
async fn a_cli_binary_that_is_not_executable_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("claude");
    std::fs::write(&bin, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let relay = start(&with(
        usable_cli_env(),
        "CLAUDE_BIN",
        &bin.display().to_string(),
    ))
    .await;
    let (status, body) = ready(&relay).await;
    assert_eq!(status, 503, "{body}");
    assert!(problems(&body).contains("not an executable file"), "{body}");
}

#[tokio::test]
async fn the_cli_account_must_be_usable() {
    let relay = start(&with(
        usable_cli_env(),
        "LOCAL_CLI_USER",
        "no-such-user-dreamcore",
    ))
    .await;
    let (status, body) = ready(&relay).await;
    assert_eq!(status, 503, "{body}");
    assert!(problems(&body).contains("no such OS user"), "{body}");

    // As root the CLI refuses to run without an unprivileged account; as anyone else the
    // relay's own account is the right one.
    let mut env = usable_cli_env();
    env.retain(|(k, _)| *k != "LOCAL_CLI_USER");
    let relay = start(&env).await;
    let (status, body) = ready(&relay).await;
    if nix::unistd::geteuid().is_root() {
        assert_eq!(status, 503, "{body}");
        assert!(
            problems(&body).contains("LOCAL_CLI_USER is not set"),
            "{body}"
        );
    } else {
        assert_eq!(status, 200, "{body}");
    }
}

async fn switch(relay: &TestRelay, use_modal: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{}/admin/backend", relay.addr))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "useModal": use_modal }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn switching_the_backend_rechecks_readiness() {
    let fake = FakeModal::start(|_| Script::success(&["ok"])).await;
    let env = with(usable_cli_env(), "CLAUDE_BIN", "/nonexistent/claude");
    let env = with(env, "USE_MODAL", "true");
    let env = with(env, "MODAL_ENDPOINT", &fake.url);
    let env = with(env, "MODAL_INTERNAL_SECRET", &fake.secret);
    let relay = start(&env).await;
    assert_eq!(ready(&relay).await.0, 200);

    assert_eq!(switch(&relay, "false").await, 200);
    let (status, body) = ready(&relay).await;
    assert_eq!(status, 503, "{body}");
    assert!(problems(&body).contains("CLAUDE_BIN"), "{body}");

    // Auto is usable while either backend is.
    assert_eq!(switch(&relay, "auto").await, 200);
    assert_eq!(ready(&relay).await.0, 200);
    assert_eq!(switch(&relay, "true").await, 200);
    assert_eq!(ready(&relay).await.0, 200);
}

#[tokio::test]
async fn modal_without_its_secret_is_not_ready() {
    // Reachable by switching: the secret is only required at start for USE_MODAL=true.
    let fake = FakeModal::start(|_| Script::success(&["ok"])).await;
    let env = with(usable_cli_env(), "MODAL_ENDPOINT", &fake.url);
    let relay = start(&env).await;
    assert_eq!(ready(&relay).await.0, 200);
    assert_eq!(switch(&relay, "true").await, 200);
    let (status, body) = ready(&relay).await;
    assert_eq!(status, 503, "{body}");
    assert!(problems(&body).contains("MODAL_INTERNAL_SECRET"), "{body}");
}

/// The reason is in the start-up log too, before anyone asks `/ready`.
#[test]
fn the_start_up_log_names_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dreamcore-relay"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", port.to_string())
        .env("DATA_DIR", dir.path().join("data"))
        .env("SUPABASE_JWT_SECRET", relay::SECRET)
        .env("CLAUDE_BIN", "/nonexistent/claude")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("relay binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let found = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| {
            seen.push(line.clone());
            line.contains("not ready") && line.contains("CLAUDE_BIN /nonexistent/claude")
                || line.contains("listening on")
        });
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no log line: {seen:#?}");
    assert!(
        seen.iter()
            .any(|l| l.contains("not ready") && l.contains("/nonexistent/claude")),
        "the reason must come before `listening on`: {seen:#?}"
    );
}
