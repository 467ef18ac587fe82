//! Memory is bounded by configuration, never by the input (decision 14): a generation that
//! streams 24 MB of assistant text through a real relay process costs the relay a bounded
//! amount of memory (RSS read from /proc), and the project's `projectSelected` afterwards
//! stays small, with the cut answer marked.

#[path = "support/fake_modal.rs"]
mod fake_modal;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/relay.rs"]
mod relay;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fake_modal::{assistant_text, FakeModal, Script};
use relay::{stream_text, token, Client, SECRET};
use serde_json::json;
use uuid::Uuid;

/// 3,000 assistant events of 8 KB: the output that took the relay from 13 MB to 245–320 MB.
const EVENTS: usize = 3_000;
const EVENT_BYTES: usize = 8 * 1024;
/// What one such job may add to the relay's resident memory at its peak.
const PEAK_GROWTH_LIMIT_KIB: u64 = 48 * 1024;
const PROJECT_SELECTED_LIMIT: usize = 1024 * 1024;

/// The relay binary as its own process, so that its RSS is its own.
struct RelayProcess {
    child: Child,
    port: u16,
}

impl RelayProcess {
    async fn start(data_dir: &std::path::Path, fake: &FakeModal) -> RelayProcess {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let child = Command::new(env!("CARGO_BIN_EXE_dreamcore-relay"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATA_DIR", data_dir)
            .env("SUPABASE_JWT_SECRET", SECRET)
            .env("USE_MODAL", "true")
            .env("MODAL_ENDPOINT", &fake.url)
            .env("MODAL_INTERNAL_SECRET", &fake.secret)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("relay binary starts");
        let process = RelayProcess { child, port };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/health")).await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "relay did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process
    }

    /// A `VmRSS:`/`VmHWM:` figure of the relay process, in KiB.
    fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("relay /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("figure in /proc status")
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each event's text is distinct (its number first), so the tail a client sees can be checked.
fn event_text(n: usize) -> String {
    let head = format!("<{n}>");
    format!("{head}{}", "あ".repeat((EVENT_BYTES - head.len()) / 3))
}

#[tokio::test]
async fn a_24_mb_answer_costs_bounded_memory_and_a_small_project_selected() {
    let fake = FakeModal::start(|_| {
        Script::wrap_cli(
            (0..EVENTS)
                .map(|n| assistant_text(&event_text(n)))
                .collect(),
        )
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), &fake).await;
    let url = format!("ws://127.0.0.1:{}/", relay.port);
    let user = Uuid::new_v4();
    let mut client = Client::connect(&url).await;
    client.init(&token(user, 3600)).await;
    let project = client.create_project("big").await;
    client.select(project).await;

    let before = relay.status_kib("VmRSS:");
    client
        .send(json!({"type":"message","content":"大きなゲームを作って"}))
        .await;
    let frames = client.recv_until("gameUpdated").await;
    let peak_growth = relay.status_kib("VmHWM:").saturating_sub(before);

    // The live stream is the whole output, unchanged.
    let output: String = (0..EVENTS).map(event_text).collect();
    assert!(
        stream_text(&frames) == output,
        "the stream differs from the output"
    );
    let completed = frames.iter().find(|f| f["type"] == "completed").unwrap();
    let message = completed["result"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("<0>") && message.ends_with(dreamcore_relay::jobs::TRUNCATED_MARKER)
    );

    // A tab that opens the project afterwards gets a bounded frame, the cut answer marked.
    let mut late = Client::connect(&url).await;
    late.init(&token(user, 3600)).await;
    late.send(json!({"type":"selectProject","projectId":project}))
        .await;
    let selected = late.recv_until("projectSelected").await.pop().unwrap();
    let selected_bytes = selected.to_string().len();
    let history = selected["history"].as_array().unwrap();
    let answer = history.last().unwrap()["content"].as_str().unwrap();

    eprintln!("relay peak RSS growth {peak_growth} KiB, projectSelected {selected_bytes} bytes");
    assert!(
        peak_growth <= PEAK_GROWTH_LIMIT_KIB,
        "relay RSS grew {} MiB at its peak (limit {} MiB)",
        peak_growth / 1024,
        PEAK_GROWTH_LIMIT_KIB / 1024
    );
    assert!(
        selected_bytes <= PROJECT_SELECTED_LIMIT,
        "projectSelected is {selected_bytes} bytes"
    );
    assert!(answer.ends_with(dreamcore_relay::jobs::TRUNCATED_MARKER));
}
