//! Memory is bounded by configuration, never by the input (decision 14): a generation that
//! streams 24 MB of assistant text through a real relay process costs the relay a bounded
//! amount of memory (RSS read from /proc), and the project's `projectSelected` afterwards
//! stays small, with the cut answer marked; a burst of jobs leaves no more upstream
//! connections behind than the pool keeps.

use std::time::Duration;

use crate::support::fake_modal::{assistant_text, FakeModal, Script, Step};
use crate::support::relay::{stream_text, Received};
use crate::support::relay_process::RelayProcess;
use futures::future::join_all;
use serde_json::json;
use uuid::Uuid;

/// 3,000 assistant events of 8 KB: the output that took the relay from 13 MB to 245–320 MB.
const EVENTS: usize = 3_000;
const EVENT_BYTES: usize = 8 * 1024;
/// What one such job may add to the relay's resident memory at its peak.
const PEAK_GROWTH_LIMIT_KIB: u64 = 48 * 1024;
const PROJECT_SELECTED_LIMIT: usize = 1024 * 1024;
/// What ends an answer cut at `JOB_ANSWER_MAX_BYTES`.
const CUT_MARKER: &str = "\n…（長いため以降は省略されました）";

/// Each event's text is distinct (its number first), so the tail a client sees can be checked.
fn event_text(n: usize) -> String {
    let head = format!("<{n}>");
    format!("{head}{}", "あ".repeat((EVENT_BYTES - head.len()) / 3))
}

/// `events` of [`event_text`], in bursts of 20 (160 KB) as a real upstream's reads arrive.
fn paced(events: usize) -> Script {
    let Script::Stream(steps) = Script::wrap_cli(
        (0..events)
            .map(|n| assistant_text(&event_text(n)))
            .collect(),
    ) else {
        unreachable!("wrap_cli makes a stream")
    };
    let mut paced = Vec::with_capacity(steps.len() + events / 20);
    for (i, step) in steps.into_iter().enumerate() {
        paced.push(step);
        if i % 20 == 19 {
            paced.push(Step::Sleep(Duration::from_millis(2)));
        }
    }
    Script::Stream(paced)
}

#[tokio::test]
async fn a_24_mb_answer_costs_bounded_memory_and_a_small_project_selected() {
    // Paced in bursts of 20 events (160 KB) as a real upstream's reads arrive; an unpaced
    // 24 MB burst on two busy cores can outrun the reading client, which the relay then
    // closes as too slow by design (its outbound queue is bounded too).
    let fake = FakeModal::start(|_| paced(EVENTS)).await;
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::on_fake_modal(data.path(), &fake, "").await;
    let user = Uuid::new_v4();
    let (mut client, _) = relay.user(user).await;
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
    assert!(message.starts_with("<0>") && message.ends_with(CUT_MARKER));

    // A tab that opens the project afterwards gets a bounded frame, the cut answer marked.
    let (mut late, _) = relay.user(user).await;
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
    assert!(answer.ends_with(CUT_MARKER));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_too_slow_and_the_job_goes_on() {
    let fake = FakeModal::start(|_| paced(EVENTS)).await;
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::on_fake_modal_with(
        data.path(),
        &fake,
        "",
        &[
            ("WS_OUTBOUND_QUEUE", "256"),
            ("WS_OUTBOUND_MAX_BYTES", "2097152"),
        ],
    )
    .await;
    let user = Uuid::new_v4();
    let (mut stalled, _) = relay.user(user).await;
    let project = stalled.create_project("big").await;
    stalled.select(project).await;

    // 24 MB, more than both kernel buffers hold: once the job has started, the stalled
    // socket reads nothing more and its queue overflows.
    stalled
        .send(json!({"type":"message","content":"大きなゲームを作って"}))
        .await;
    let job_id = stalled.recv_until("jobStarted").await.pop().unwrap()["job"]["id"].clone();
    let (mut watcher, _) = relay.user(user).await;
    watcher
        .send(json!({"type":"subscribeJob","jobId":job_id}))
        .await;
    let seen = watcher.recv_until("completed").await;
    assert_eq!(
        seen.last().unwrap()["job"]["status"],
        "completed",
        "the job went on"
    );

    // What the kernel held arrives, then the close, well before all 3,000 events.
    let mut frames = 0;
    let closed = loop {
        match stalled.next().await {
            Received::Json(_) => frames += 1,
            Received::Closed(close) => break close,
        }
    };
    assert_eq!(closed, Some((1008, "Client too slow".to_string())));
    assert!(
        frames < EVENTS,
        "{frames} frames reached the stalled client"
    );
}

/// Jobs of this burst run at the same time, each holding its own upstream connections.
const BURST_JOBS: usize = 16;
/// Idle connections per upstream host the relay is told to keep.
const POOL_MAX_IDLE: usize = 1;
/// The relay's outbound clients that took part (generation stream, pipeline calls, file
/// reads, file writes), each allowed its pool.
const OUTBOUND_CLIENTS: usize = 4;

#[tokio::test]
async fn a_burst_of_jobs_leaves_no_more_upstream_connections_than_the_pool_keeps() {
    // Each job streams for about half a second, so the burst's jobs overlap.
    let texts: Vec<String> = (0..10).map(|n| format!("part {n};")).collect();
    let fake = FakeModal::start(move |_| Script::paced(&texts, Duration::from_millis(50))).await;
    let data = tempfile::tempdir().unwrap();
    let pool = POOL_MAX_IDLE.to_string();
    let relay = RelayProcess::on_fake_modal_with(
        data.path(),
        &fake,
        "",
        &[
            ("HTTP_UPSTREAM_POOL_MAX_IDLE", pool.as_str()),
            ("RATE_LIMIT_GENERATIONS_PER_MIN", "0"),
        ],
    )
    .await;
    let before = relay.open_fds();

    let mut clients = Vec::new();
    for n in 0..BURST_JOBS {
        let (mut client, _) = relay.user(Uuid::new_v4()).await;
        let project = client.create_project(&format!("burst {n}")).await;
        client.select(project).await;
        clients.push(client);
    }
    join_all(clients.iter_mut().map(|c| async {
        c.send(json!({"type":"message","content":"ゲームを作って"}))
            .await;
        let frames = c.recv_until("gameUpdated").await;
        assert!(frames.iter().any(|f| f["type"] == "completed"));
    }))
    .await;
    for client in clients {
        client.close().await;
    }

    // Sockets closed and connections returned: what stays open is the pools' idle share.
    let allowed = before + POOL_MAX_IDLE * OUTBOUND_CLIENTS;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let open = relay.open_fds();
        if open <= allowed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} descriptors open after the burst: {before} before it, at most {allowed} allowed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
