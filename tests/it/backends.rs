//! Both backends through the whole relay, with the REAL Claude Code CLI (pointed at a fake
//! Anthropic API on loopback) for the local one: the file the CLI writes, the commit, parity
//! of what the browser sees, cancel and timeout, and a live backend flip under load.

use crate::support::fake_anthropic;
use crate::support::fake_modal;
use crate::support::relay;
use crate::support::tools;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use fake_anthropic::{user_texts, FakeAnthropic, Scenario};
use fake_modal::{FakeModal, Script, Step};
use relay::TestRelay;
use serde_json::{json, Value};
use tools::{claude_bin, cli_user, git};
use uuid::Uuid;

/// A data directory the CLI user can reach.
fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

struct Setup<'a> {
    use_modal: &'a str,
    modal: Option<&'a FakeModal>,
    anthropic: &'a FakeAnthropic,
    claude_bin: String,
    extra: Vec<(&'a str, &'a str)>,
}

impl<'a> Setup<'a> {
    fn new(use_modal: &'a str, modal: Option<&'a FakeModal>, anthropic: &'a FakeAnthropic) -> Self {
        Self {
            use_modal,
            modal,
            anthropic,
            claude_bin: claude_bin().display().to_string(),
            extra: Vec::new(),
        }
    }

    async fn start(&self) -> TestRelay {
        let cli_user = cli_user().map(|u| u.name).unwrap_or_default();
        let mut env: Vec<(&str, &str)> = vec![
            ("USE_MODAL", self.use_modal),
            ("CLAUDE_BIN", &self.claude_bin),
            ("LOCAL_CLI_USER", cli_user.as_str()),
            ("CLI_KILL_GRACE_SECS", "2"),
            (
                "CLI_ENV_PASSTHROUGH",
                "ANTHROPIC_API_KEY,ANTHROPIC_BASE_URL,CLAUDE_CODE_MAX_RETRIES",
            ),
            ("RATE_LIMIT_GENERATIONS_PER_MIN", "0"),
        ];
        if let Some(modal) = self.modal {
            env.push(("MODAL_ENDPOINT", modal.url.as_str()));
            env.push(("MODAL_INTERNAL_SECRET", modal.secret.as_str()));
        }
        env.extend(self.extra.iter().copied());
        let cli_env = HashMap::from([
            ("ANTHROPIC_API_KEY".to_string(), "sk-ant-test".to_string()),
            (
                "ANTHROPIC_BASE_URL".to_string(),
                self.anthropic.base_url.clone(),
            ),
            ("CLAUDE_CODE_MAX_RETRIES".to_string(), "0".to_string()),
        ]);
        TestRelay::start_with_cli_env(shared_tempdir(), &env, cli_env).await
    }
}

/// What the browser sees of a job, ids and times aside.
fn visible(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| match f["type"].as_str().unwrap_or_default() {
            "jobStarted" => json!({"type":"jobStarted","isExisting":f["isExisting"],"status":f["job"]["status"]}),
            "started" | "cancelled" => json!({"type":f["type"],"status":f["job"]["status"]}),
            "progress" => json!({"type":"progress","progress":f["progress"],"message":f["message"]}),
            "completed" => json!({"type":"completed","result":f["result"],"status":f["job"]["status"]}),
            "failed" => json!({"type":"failed","code":f["code"],"userMessage":f["userMessage"],"recoverable":f["recoverable"],"exitCode":f["exitCode"]}),
            "gameUpdated" => json!({"type":"gameUpdated"}),
            _ => f.clone(),
        })
        .collect()
}

const GAME: &str = "<!DOCTYPE html>\n<html><head><title>Neko Dash</title></head><body>🐱 \"jump\" & run</body></html>\n";

#[tokio::test]
async fn real_cli_writes_the_game_and_commits_it() {
    let anthropic = FakeAnthropic::start(Scenario::Write {
        file_path: "index.html".into(),
        content: GAME.into(),
        final_text: "ネコのゲームを作りました。".into(),
    })
    .await;
    let relay = Setup::new("false", None, &anthropic).start().await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    let project = c.create_project("新しいゲーム").await;
    let message = "2Dのネコが走るゲームを作って。\"quotes\" $(whoami) `id` \n second line";
    c.send(json!({"type":"message","content":message})).await;
    let frames = c.recv_until("gameUpdated").await;
    let kinds = relay::types(&frames);
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("jobStarted"),
        "{frames:?}"
    );
    assert!(kinds.contains(&"completed".to_string()), "{frames:?}");
    let completed = frames.iter().find(|f| f["type"] == "completed").unwrap();
    assert!(
        completed["result"]["message"]
            .as_str()
            .unwrap()
            .ends_with("ネコのゲームを作りました。"),
        "{completed}"
    );
    assert!(frames
        .iter()
        .any(|f| f["type"] == "progress" && f["message"] == "実行中: Write"));

    // The real CLI wrote the file the fake model asked for, and the relay committed it.
    let dir = relay.workspace(user, project);
    assert_eq!(
        std::fs::read_to_string(dir.join("index.html")).unwrap(),
        GAME
    );
    let log = git(&dir, &["log", "--format=%h %s"]);
    let mut commits = log.lines();
    let head = commits.next().expect("a commit");
    assert!(head.ends_with(" Update via Claude CLI"), "{log}");
    assert!(commits.next().is_none(), "{log}");

    // The prompt reached the model byte for byte, inside our template.
    let first = &anthropic.requests()[0];
    assert!(
        user_texts(first).iter().any(|t| t.contains(message)),
        "prompt not found verbatim"
    );

    // The version list reads the same repository.
    c.send(json!({"type":"getVersions","projectId":project}))
        .await;
    let versions = c.recv_until("versionsList").await.pop().unwrap();
    assert_eq!(versions["versions"][0]["message"], "Update via Claude CLI");
    assert_eq!(
        versions["versions"][0]["id"],
        json!(head.split(' ').next().unwrap())
    );
    assert_eq!(versions["currentHead"], versions["versions"][0]["id"]);
}

#[tokio::test]
async fn both_backends_show_the_browser_the_same_sequence() {
    let anthropic = FakeAnthropic::start(Scenario::Write {
        file_path: "index.html".into(),
        content: GAME.into(),
        final_text: "完成しました。".into(),
    })
    .await;
    // Record exactly what the real CLI prints, by wrapping it in `tee`.
    let capture = shared_tempdir();
    let out = capture.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let wrapper = capture.path().join("claude-tee.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nset -o pipefail\n'{}' \"$@\" | tee '{}/cli.jsonl'\n",
            claude_bin().display(),
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut setup = Setup::new("false", None, &anthropic);
    setup.claude_bin = wrapper.display().to_string();
    let local = setup.start().await;
    let mut c = local.user(Uuid::new_v4()).await;
    c.create_project("p").await;
    c.send(json!({"type":"message","content":"作って"})).await;
    let local_frames = c.recv_until("gameUpdated").await;

    let lines: Vec<Value> = std::fs::read_to_string(out.join("cli.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        lines.iter().any(|l| l["type"] == "assistant"),
        "nothing captured: {lines:?}"
    );
    let modal = FakeModal::start(move |_| Script::wrap_cli(lines.clone())).await;
    let remote = Setup::new("true", Some(&modal), &anthropic).start().await;
    let mut c = remote.user(Uuid::new_v4()).await;
    c.create_project("p").await;
    c.send(json!({"type":"message","content":"作って"})).await;
    let modal_frames = c.recv_until("gameUpdated").await;

    assert_eq!(visible(&local_frames), visible(&modal_frames));
}

/// Processes whose working directory is inside `dir`.
fn processes_in(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
        })
        .collect()
}

async fn assert_no_cli_left_in(dir: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !processes_in(dir).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "CLI processes left: {:?}",
            processes_in(dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cancel_leaves_no_cli_process() {
    // The default CLI timeout: on a loaded machine the CLI can take seconds to start, and the
    // cancel must hit a CLI that is really talking to the model.
    let anthropic = FakeAnthropic::start(Scenario::Hang).await;
    let relay = Setup::new("false", None, &anthropic).start().await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    let project = c.create_project("p").await;

    c.send(json!({"type":"message","content":"hang"})).await;
    let job = c.recv_until("jobStarted").await.pop().unwrap()["job"]["id"].clone();
    anthropic
        .wait_for_requests(1, Duration::from_secs(60))
        .await;
    let dir = relay.workspace(user, project);
    assert!(!processes_in(&dir).is_empty(), "the CLI should be running");
    c.send(json!({"type":"cancel","jobId":job})).await;
    let event = c.recv_until("cancelled").await.pop().unwrap();
    assert_eq!(event["job"]["status"], "cancelled");
    assert_no_cli_left_in(&dir).await;
    c.recv_until("cancelled").await;
}

#[tokio::test]
async fn a_hung_cli_times_out_and_leaves_no_process() {
    let anthropic = FakeAnthropic::start(Scenario::Hang).await;
    let mut setup = Setup::new("false", None, &anthropic);
    setup.extra.push(("CLI_TIMEOUT_SECS", "4"));
    let relay = setup.start().await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    let project = c.create_project("p").await;

    c.send(json!({"type":"message","content":"hang"})).await;
    let failed = c.recv_until("failed").await.pop().unwrap();
    assert_eq!(failed["code"], "CLI_TIMEOUT");
    assert_eq!(failed["exitCode"], 124);
    assert_eq!(failed["recoverable"], true);
    // The job ends only after its process group is gone.
    assert!(processes_in(&relay.workspace(user, project)).is_empty());
}

fn slow_modal(events: usize) -> Script {
    let mut steps = vec![Step::Modal(
        json!({"type":"status","message":"Sandbox connected (warm)"}),
    )];
    for i in 0..events {
        steps.push(Step::Cli(json!({"type":"assistant","message":{"content":[{"type":"text","text":format!("m{i};")}]}})));
        steps.push(Step::Sleep(Duration::from_millis(150)));
    }
    steps.push(Step::Modal(json!({"type":"done","exit_code":0})));
    Script::Stream(steps)
}

async fn flip(relay: &TestRelay, use_modal: &str) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/admin/backend", relay.addr))
        .bearer_auth("ops-token-0123456789")
        .json(&json!({"useModal": use_modal}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let ready: Value = reqwest::get(format!("http://{}/ready", relay.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["backend"]["useModal"], use_modal);
}

#[tokio::test]
async fn twenty_jobs_in_flight_while_the_backend_flips_twice() {
    let anthropic = FakeAnthropic::start(Scenario::Slow {
        chunks: 8,
        interval: Duration::from_millis(200),
    })
    .await;
    let modal = FakeModal::start(|_| slow_modal(12)).await;
    let mut setup = Setup::new("true", Some(&modal), &anthropic);
    setup.extra.push(("ADMIN_TOKEN", "ops-token-0123456789"));
    let relay = setup.start().await;

    let mut clients = Vec::new();
    let mut waves: Vec<Vec<Uuid>> = vec![Vec::new(), Vec::new(), Vec::new()];
    for (wave, (count, next_mode)) in [(7, Some("false")), (7, Some("true")), (6, None)]
        .into_iter()
        .enumerate()
    {
        for _ in 0..count {
            let mut c = relay.user(Uuid::new_v4()).await;
            let project = c.create_project("flip").await;
            c.send(json!({"type":"message","content":"go"})).await;
            c.recv_until("started").await;
            waves[wave].push(project);
            clients.push(c);
        }
        if let Some(mode) = next_mode {
            flip(&relay, mode).await;
        }
    }
    let mut failures = Vec::new();
    for c in &mut clients {
        let frames = c.recv_until("gameUpdated").await;
        failures.extend(frames.into_iter().filter(|f| f["type"] == "failed"));
    }
    assert!(failures.is_empty(), "{failures:?}");

    // Every job ran on the backend that was current when it started.
    let on_modal: HashSet<String> = modal.requests().into_iter().map(|r| r.project_id).collect();
    let expected_modal: HashSet<String> = waves[0]
        .iter()
        .chain(&waves[2])
        .map(Uuid::to_string)
        .collect();
    assert_eq!(on_modal, expected_modal);
    let local_prompts: Vec<String> = anthropic.requests().iter().flat_map(user_texts).collect();
    for project in &waves[1] {
        assert!(
            local_prompts
                .iter()
                .any(|t| t.contains(&project.to_string())),
            "project {project} did not run on the local CLI"
        );
    }
}
