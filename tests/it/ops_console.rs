//! The ops console (`/ops`) in a real headless Chromium: it reads the live state from
//! `/admin/status` with the admin token, shows sockets, running jobs, failures by code and
//! the current backend, and switches the backend through `POST /admin/backend`.

use crate::support::chromium;
use crate::support::fake_modal;
use crate::support::relay;

use std::sync::atomic::{AtomicUsize, Ordering};

use chromium::{Chromium, Page};
use fake_modal::{FakeModal, Script, Step};
use relay::TestRelay;
use serde_json::{json, Value};
use uuid::Uuid;

const ADMIN_TOKEN: &str = "ops-console-admin-token-0123456789";

/// What the console shows, read from its DOM.
const SNAPSHOT: &str = r#"(() => {
  const text = (id) => document.getElementById(id).textContent;
  const rows = (id) => [...document.getElementById(id).rows].map(r => [...r.cells].map(c => c.textContent));
  return {
    state: text("state"), sockets: text("sockets"), backend: text("backend"),
    useModal: text("useModal"), running: text("running"),
    jobs: rows("jobs"), codes: rows("codes"), recent: rows("recent"),
  };
})()"#;

/// Type `token` into the token field the way a person does (the page listens to `change`).
async fn enter_token(page: &mut Page, token: &str) {
    let script = format!(
        r#"(() => {{
  const input = document.getElementById("token");
  input.value = {};
  input.dispatchEvent(new Event("change"));
}})()"#,
        json!(token)
    );
    page.eval(&script).await;
}

fn figure(snapshot: &Value, key: &str) -> i64 {
    snapshot[key]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1)
}

async fn admin_get(relay: &TestRelay, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("http://{}{path}", relay.addr));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_console_shows_live_state_and_switches_backend() {
    let browser = Chromium::start().await;
    // The first generation fails with CLI exit 1; later ones stream one line and stay open.
    let calls = AtomicUsize::new(0);
    let fake = FakeModal::start(move |_| {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            Script::cli_exit(1)
        } else {
            Script::Stream(vec![
                fake_modal::status("Sandbox connected (warm)"),
                Step::Cli(fake_modal::assistant_text("working;")),
                Step::Hang,
            ])
        }
    })
    .await;
    // USE_MODAL=true selects Modal; the local CLI backend exists too, so it can be switched to.
    let relay = TestRelay::start(&[
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("USE_MODAL", "true"),
        ("MODAL_ENDPOINT", fake.url.as_str()),
        ("MODAL_INTERNAL_SECRET", fake.secret.as_str()),
    ])
    .await;

    let mut failing = relay.user(Uuid::new_v4()).await;
    failing.create_project("fails").await;
    failing.send(json!({"type":"message","content":"go"})).await;
    let failed = failing.recv_until("failed").await.pop().unwrap();
    assert_eq!(failed["code"], "CLI_GENERAL_ERROR");

    let mut running = relay.user(Uuid::new_v4()).await;
    running.create_project("runs").await;
    running.send(json!({"type":"message","content":"go"})).await;
    let job_id = running.recv_until("stream").await[0]["job"]["id"].clone();

    let (status, _) = admin_get(&relay, "/admin/status", None).await;
    assert_eq!(status, 401, "/admin/status without the token");
    let (status, _) = admin_get(&relay, "/admin/status", Some("wrong-token")).await;
    assert_eq!(status, 401, "/admin/status with a wrong token");

    let mut page = browser.page().await;
    page.navigate(&format!("http://{}/ops", relay.addr)).await;
    page.wait_for(SNAPSHOT, |s| s["state"] == "enter the admin token")
        .await;

    enter_token(&mut page, "wrong-token").await;
    page.wait_for(SNAPSHOT, |s| s["state"] == "token refused")
        .await;

    enter_token(&mut page, ADMIN_TOKEN).await;
    let shown = page
        .wait_for(SNAPSHOT, |s| {
            s["state"] == "live"
                && figure(s, "sockets") >= 2
                && figure(s, "running") == 1
                && s["backend"] == "modal"
                && s["useModal"] == "true"
                && s["codes"]
                    .as_array()
                    .is_some_and(|rows| rows.iter().any(|r| r[0] == "CLI_GENERAL_ERROR"))
                && s["recent"].as_array().is_some_and(|rows| !rows.is_empty())
        })
        .await;
    assert_eq!(shown["jobs"].as_array().map(Vec::len), Some(1), "{shown}");
    let job = &shown["jobs"][0];
    assert_eq!(job[0], job_id, "{shown}");
    assert_eq!(job[1], "modal", "{shown}");
    assert_eq!(job[2], "processing", "{shown}");
    assert_eq!(shown["codes"], json!([["CLI_GENERAL_ERROR", "1"]]));
    assert_eq!(shown["recent"][0][1], "CLI_GENERAL_ERROR", "{shown}");
    assert_eq!(shown["recent"][0][2], "modal", "{shown}");

    page.eval(
        r#"(() => {
  document.getElementById("mode").value = "false";
  document.getElementById("flip").click();
})()"#,
    )
    .await;
    let shown = page
        .wait_for(SNAPSHOT, |s| {
            s["backend"] == "local" && s["useModal"] == "false"
        })
        .await;
    // The running job stays on the backend it started on.
    assert_eq!(shown["jobs"][0][1], "modal", "{shown}");
    let (status, backend) = admin_get(&relay, "/admin/backend", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(backend["useModal"], "false");
    assert_eq!(backend["current"], "local");

    running.send(json!({"type":"cancel","jobId":job_id})).await;
    running.recv_until("cancelled").await;
}
