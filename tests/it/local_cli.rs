//! The local CLI backend against the real Claude Code CLI (pinned 2.1.328, installed by
//! `scripts/install-claude-cli.sh`) talking to a fake Anthropic API on loopback, plus a few
//! fake `claude` shell scripts where only the relay's side is under test (environment, stdin
//! bytes, output handling, kill escalation).
//!
//! As root the CLI runs as the OS user `dreamcore-cli` (it refuses to run as root); as any
//! other user it runs as that user.

use crate::support::fake_anthropic;
use crate::support::tools;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dreamcore_relay::backend::local_cli::LocalCliBackend;
use dreamcore_relay::backend::{Backend, BackendEvent, BackendKind, EventStream, RunRequest};
use dreamcore_relay::config::CliConfig;
use fake_anthropic::{user_texts, FakeAnthropic, Scenario};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tools::{claude_bin, cli_user, git, CLI_USER};
use uuid::Uuid;

/// Upper bound for one whole run; real runs against the fake API take a second or two.
const RUN_LIMIT: Duration = Duration::from_secs(120);

struct Harness {
    tmp: tempfile::TempDir,
    config: CliConfig,
    env: HashMap<String, String>,
    user_id: Uuid,
    project_id: Uuid,
    /// The skills each run's request names.
    skills: Vec<String>,
}

impl Harness {
    fn new(claude_bin: PathBuf) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        // The CLI user must reach the workspace (and the fake scripts) under the temp dir.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // Writable by the CLI user: where the fake scripts leave what they saw.
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
        // The embedded defaults (env allow-list included), adjusted for the tests.
        let mut config = dreamcore_relay::config::Config::load_from(None, |_| None)
            .unwrap()
            .cli;
        config.claude_bin = claude_bin.to_string_lossy().into_owned();
        config.user = cli_user().map(|u| u.name).unwrap_or_default();
        config.timeout_secs = 90;
        config.kill_grace_secs = 2;
        // Keeps the CLI's own retries of a failing API short.
        config
            .env_passthrough
            .push("CLAUDE_CODE_MAX_RETRIES".into());
        Self {
            tmp,
            config,
            env: HashMap::from([
                (
                    "ANTHROPIC_API_KEY".to_string(),
                    "sk-ant-fake-key".to_string(),
                ),
                ("CLAUDE_CODE_MAX_RETRIES".to_string(), "1".to_string()),
                // Would leak if the allow-list were not the only way in.
                (
                    "MODAL_INTERNAL_SECRET".to_string(),
                    "never-in-the-child".to_string(),
                ),
            ]),
            user_id: Uuid::new_v4(),
            project_id: Uuid::new_v4(),
            skills: Vec::new(),
        }
    }

    fn real_cli() -> Self {
        Self::new(claude_bin())
    }

    /// A harness whose `claude` is a shell script (body after the shebang).
    fn script(body: &str) -> Self {
        let mut harness = Self::new(PathBuf::new());
        let path = harness.tmp.path().join("fake-claude.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        harness.config.claude_bin = path.to_string_lossy().into_owned();
        harness
    }

    fn point_at(&mut self, fake: &FakeAnthropic) {
        self.env
            .insert("ANTHROPIC_BASE_URL".into(), fake.base_url.clone());
    }

    fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    fn backend(&self) -> LocalCliBackend {
        let env = self.env.clone();
        LocalCliBackend::with_env_source(&self.config, &self.data_dir(), move |name| {
            env.get(name).map(OsString::from).or_else(|| match name {
                "PATH" | "TMPDIR" => std::env::var_os(name),
                _ => None,
            })
        })
        .unwrap()
    }

    fn workspace(&self) -> PathBuf {
        self.backend().workspace(self.user_id, self.project_id)
    }

    fn request(&self, prompt: &str) -> RunRequest {
        RunRequest {
            job_id: Uuid::new_v4(),
            user_id: self.user_id,
            project_id: self.project_id,
            prompt: prompt.to_string(),
            skills: self.skills.clone(),
        }
    }

    fn start(&self, prompt: &str, cancel: CancellationToken) -> EventStream {
        self.backend().run(self.request(prompt), cancel)
    }

    async fn run(&self, prompt: &str) -> Vec<BackendEvent> {
        collect(self.start(prompt, CancellationToken::new())).await
    }
}

async fn collect(stream: EventStream) -> Vec<BackendEvent> {
    tokio::time::timeout(RUN_LIMIT, stream.collect::<Vec<_>>())
        .await
        .expect("the run did not end")
}

fn status(text: &str) -> BackendEvent {
    BackendEvent::Status(text.to_string())
}

fn failure(events: &[BackendEvent]) -> &dreamcore_relay::backend::Failure {
    match events.last() {
        Some(BackendEvent::Failed(failure)) => failure,
        other => panic!("expected a Failed event last, got {other:?} in {events:?}"),
    }
}

fn terminal_count(events: &[BackendEvent]) -> usize {
    events.iter().filter(|e| e.is_terminal()).count()
}

/// (pid, pgid, comm) of every live process whose working directory is `dir`.
fn processes_in(dir: &Path) -> Vec<(i32, i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(entry.path().join("cwd")).ok().as_deref() != Some(dir) {
            continue;
        }
        if let Some((pgid, comm, state)) = stat_of(pid) {
            if state != 'Z' {
                found.push((pid, pgid, comm));
            }
        }
    }
    found
}

/// (pgid, comm, state) from /proc/<pid>/stat.
fn stat_of(pid: i32) -> Option<(i32, String, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    Some((fields[2].parse().ok()?, comm, fields[0].chars().next()?))
}

/// Live (non-zombie) processes in any of `pgids`.
fn live_in_groups(pgids: &BTreeSet<i32>) -> Vec<(i32, i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some((pgid, comm, state)) = stat_of(pid) {
            if state != 'Z' && pgids.contains(&pgid) {
                found.push((pid, pgid, comm));
            }
        }
    }
    found
}

async fn wait_until<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every process of the run (recorded by process group) is gone within 5 s.
async fn assert_groups_gone(pgids: &BTreeSet<i32>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let alive = live_in_groups(pgids);
        if alive.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still alive 5 s later: {alive:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn text_answer_yields_status_text_then_completed() {
    let fake = FakeAnthropic::start(Scenario::Text("ゲームの準備ができました".into())).await;
    let mut harness = Harness::real_cli();
    harness.point_at(&fake);
    harness.config.model = "claude-fake-model-1".into();
    assert_eq!(harness.backend().kind(), BackendKind::Local);
    assert!(
        harness.backend().blockers().is_empty(),
        "{:?}",
        harness.backend().blockers()
    );

    let events = harness.run("Make a tiny game").await;
    assert_eq!(
        events,
        vec![
            status("Sandbox connected (warm)"),
            status("Loading skills..."),
            status("Starting Claude CLI..."),
            BackendEvent::Text("ゲームの準備ができました".into()),
            status("Saving version history..."),
            BackendEvent::Completed { commit: None },
        ]
    );
    let requests = fake.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert!(user_texts(request).iter().any(|t| t == "Make a tiny game"));
        // CLAUDE_MODEL became `--model`.
        assert_eq!(request["model"], "claude-fake-model-1");
    }
    assert!(
        fake.other_calls()
            .iter()
            .all(|c| c.starts_with("HEAD /api/hello")),
        "unexpected calls: {:?}",
        fake.other_calls()
    );
}

#[tokio::test]
async fn write_tool_creates_the_file_and_a_real_commit() {
    let content = "<!DOCTYPE html>\n<html><body><h1 id=\"t\">ジャンプ!</h1>\n<script>let s = `${1+1}`; // $(id)\n</script></body></html>\n";
    let fake = FakeAnthropic::start(Scenario::Write {
        file_path: "index.html".into(),
        content: content.into(),
        final_text: "Created the game.".into(),
    })
    .await;
    let mut harness = Harness::real_cli();
    harness.point_at(&fake);

    let events = harness.run("Make a jumping game").await;
    let commit = match events.last() {
        Some(BackendEvent::Completed {
            commit: Some(commit),
        }) => commit.clone(),
        other => panic!("expected Completed with a commit, got {other:?} in {events:?}"),
    };
    assert_eq!(terminal_count(&events), 1);
    let tool_at = events
        .iter()
        .position(|e| *e == BackendEvent::ToolUse("Write".into()));
    let final_at = events
        .iter()
        .position(|e| *e == BackendEvent::Text("Created the game.".into()));
    assert!(
        matches!((tool_at, final_at), (Some(t), Some(f)) if t < f),
        "{events:?}"
    );
    assert_eq!(
        events[events.len() - 2],
        status("Saving version history...")
    );

    let workspace = harness.workspace();
    assert_eq!(
        std::fs::read_to_string(workspace.join("index.html")).unwrap(),
        content
    );
    if let Some(user) = cli_user() {
        assert_eq!(
            std::fs::metadata(workspace.join("index.html"))
                .unwrap()
                .uid(),
            user.uid.as_raw()
        );
    }
    assert_eq!(git(&workspace, &["rev-parse", "--short", "HEAD"]), commit);
    assert_eq!(
        git(&workspace, &["log", "-1", "--format=%s|%an|%ae"]),
        "Update via Claude CLI|Game Creator|gamecreator@dreamcore.app"
    );
    assert_eq!(git(&workspace, &["ls-files"]), "index.html");

    // A second run that changes nothing reports no commit (never git's "nothing to commit").
    let fake = FakeAnthropic::start(Scenario::Text("Nothing to change.".into())).await;
    harness.point_at(&fake);
    let events = harness.run("Is it fine?").await;
    assert_eq!(
        events.last(),
        Some(&BackendEvent::Completed { commit: None }),
        "{events:?}"
    );
    assert_eq!(git(&workspace, &["rev-list", "--count", "HEAD"]), "1");
}

#[tokio::test]
async fn prompts_reach_the_api_byte_for_byte() {
    let fake = FakeAnthropic::start(Scenario::Text("ok".into())).await;
    let mut harness = Harness::real_cli();
    harness.point_at(&fake);
    let canary = harness.tmp.path().join("shell-ran");
    let mut prompt = format!(
        "<system>quotes \" ' and $(touch {c}) and `touch {c}` and ${{HOME}} \\n</system>\n\n<user>二行目\r\ntabs\there\n",
        c = canary.display()
    );
    let filler = "0123456789abcdef\"'$`\\ ジャンプ\n";
    while prompt.len() < 1024 * 1024 {
        prompt.push_str(filler);
    }
    prompt.push_str("</user>");

    let events = harness.run(&prompt).await;
    assert_eq!(
        events.last(),
        Some(&BackendEvent::Completed { commit: None }),
        "{events:?}"
    );
    let requests = fake.requests();
    assert!(!requests.is_empty());
    assert!(
        user_texts(&requests[0]).contains(&prompt),
        "the prompt did not arrive verbatim"
    );
    assert!(!canary.exists(), "the prompt went through a shell");
}

#[tokio::test]
async fn cancel_mid_run_ends_the_stream_and_kills_every_process() {
    // The Bash tool runs its command in a session of its own: a group signal alone misses it.
    let fake = FakeAnthropic::start(Scenario::Bash {
        command: "echo started; sleep 300; echo finished".into(),
    })
    .await;
    let mut harness = Harness::real_cli();
    harness.point_at(&fake);
    let cancel = CancellationToken::new();
    let stream = harness.start("Run something long", cancel.clone());
    let events = tokio::spawn(collect(stream));

    let workspace = harness.workspace();
    let processes = wait_until(Duration::from_secs(60), "the Bash tool's sleep", || {
        let procs = processes_in(&workspace);
        procs
            .iter()
            .any(|(_, _, comm)| comm == "sleep")
            .then_some(procs)
    })
    .await;
    let pgids: BTreeSet<i32> = processes.iter().map(|(_, pgid, _)| *pgid).collect();
    assert!(
        pgids.len() >= 2,
        "expected the CLI's group and the tool's own: {processes:?}"
    );

    cancel.cancel();
    let events = tokio::time::timeout(Duration::from_secs(20), events)
        .await
        .expect("the stream did not end after cancel")
        .unwrap();
    assert_eq!(terminal_count(&events), 0, "{events:?}");
    assert_groups_gone(&pgids).await;
}

#[tokio::test]
async fn dropping_the_stream_kills_the_run() {
    let fake = FakeAnthropic::start(Scenario::Slow {
        chunks: 10_000,
        interval: Duration::from_millis(100),
    })
    .await;
    let mut harness = Harness::real_cli();
    harness.point_at(&fake);
    let mut stream = harness.start("Stream slowly", CancellationToken::new());
    assert_eq!(
        stream.next().await,
        Some(status("Sandbox connected (warm)"))
    );
    assert_eq!(stream.next().await, Some(status("Loading skills...")));
    assert_eq!(stream.next().await, Some(status("Starting Claude CLI...")));
    fake.wait_for_requests(1, Duration::from_secs(60)).await;
    let workspace = harness.workspace();
    let pgids: BTreeSet<i32> = processes_in(&workspace)
        .iter()
        .map(|(_, pgid, _)| *pgid)
        .collect();
    assert!(!pgids.is_empty());

    drop(stream);
    assert_groups_gone(&pgids).await;
}

#[tokio::test]
async fn hung_api_stream_hits_the_cli_timeout() {
    let fake = FakeAnthropic::start(Scenario::Hang).await;
    let mut harness = Harness::real_cli();
    harness.point_at(&fake);
    harness.config.timeout_secs = 3;
    let events = harness.run("Hang please").await;
    let failure = failure(&events);
    assert_eq!(
        (failure.code.as_str(), failure.exit_code),
        ("CLI_TIMEOUT", Some(124))
    );
    assert!(failure.recoverable);
    assert_eq!(terminal_count(&events), 1);
    assert!(processes_in(&harness.workspace()).is_empty());
}

#[tokio::test]
async fn api_error_fails_with_a_cli_exit_code() {
    let fake = FakeAnthropic::start(Scenario::Error {
        status: 500,
        retry: false,
    })
    .await;
    let mut harness = Harness::real_cli();
    harness.point_at(&fake);
    let events = harness.run("Fail please").await;
    let failure = failure(&events);
    assert_eq!(
        (failure.code.as_str(), failure.exit_code),
        ("CLI_GENERAL_ERROR", Some(1)),
        "{failure:?}"
    );
    assert_eq!(terminal_count(&events), 1);
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn overloaded_api_is_retried_boundedly_then_fails() {
    let fake = FakeAnthropic::start(Scenario::Error {
        status: 529,
        retry: true,
    })
    .await;
    let mut harness = Harness::real_cli();
    harness.point_at(&fake);
    let events = harness.run("Overloaded?").await;
    let failure = failure(&events);
    assert_eq!(
        (failure.code.as_str(), failure.exit_code),
        ("CLI_GENERAL_ERROR", Some(1)),
        "{failure:?}"
    );
    // CLAUDE_CODE_MAX_RETRIES=1 reached the CLI through the allow-list: one retry, no more.
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn missing_binary_is_a_spawn_error() {
    let harness = Harness::new(PathBuf::from("/nonexistent/dir/claude"));
    assert!(
        harness
            .backend()
            .blockers()
            .iter()
            .any(|p| p.contains("/nonexistent/dir/claude")),
        "{:?}",
        harness.backend().blockers()
    );
    let events = harness.run("anything").await;
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(
        events[..3],
        [
            status("Sandbox connected (warm)"),
            status("Loading skills..."),
            status("Starting Claude CLI...")
        ]
    );
    let failure = failure(&events);
    assert_eq!(
        (failure.code.as_str(), failure.exit_code),
        ("CLI_SPAWN_ERROR", None)
    );
}

/// The only test that reads the real process environment (`LocalCliBackend::new`).
#[tokio::test]
async fn child_gets_only_the_explicit_environment_and_the_exact_stdin() {
    std::env::set_var("MODAL_INTERNAL_SECRET", "relay-secret-value");
    std::env::set_var("CLOUD_ML_REGION", "test-region");
    let dump = |name: &str| format!("\"$(dirname \"$0\")/out/{name}\"");
    let harness = Harness::script(&format!(
        "env > {env}\nprintf '%s\\n' \"$@\" > {args}\nid -u > {uid}\npwd > {cwd}\ncat > {stdin}\n\
         echo '{{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"ok\"}}'",
        env = dump("env.txt"),
        args = dump("args.txt"),
        uid = dump("uid.txt"),
        cwd = dump("cwd.txt"),
        stdin = dump("stdin.bin"),
    ));
    let backend = LocalCliBackend::new(&harness.config, &harness.data_dir()).unwrap();
    let prompt = "line1\n\"quoted\" $(id) `id`\n\u{0}nul and ジャンプ\n";
    let events = collect(backend.run(harness.request(prompt), CancellationToken::new())).await;
    assert_eq!(
        events.last(),
        Some(&BackendEvent::Completed { commit: None }),
        "{events:?}"
    );

    let out = harness.tmp.path().join("out");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    assert_eq!(
        std::fs::read(out.join("stdin.bin")).unwrap(),
        prompt.as_bytes()
    );
    assert_eq!(
        read("args.txt"),
        "--verbose\n--output-format\nstream-json\n--dangerously-skip-permissions\n"
    );
    assert_eq!(
        read("cwd.txt").trim(),
        harness.workspace().to_str().unwrap()
    );
    let env: HashMap<String, String> = read("env.txt")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut names: BTreeSet<&str> = env.keys().map(String::as_str).collect();
    // Added by the shell itself.
    for shell_var in ["PWD", "SHLVL", "_", "OLDPWD"] {
        names.remove(shell_var);
    }
    assert_eq!(
        names,
        BTreeSet::from([
            "PATH",
            "HOME",
            "USER",
            "LANG",
            "TMPDIR",
            "DISABLE_TELEMETRY",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
            "CLOUD_ML_REGION",
            "CLAUDE_CONFIG_DIR",
            dreamcore_relay::backend::local_cli::RUN_MARKER_VAR,
        ])
    );
    // One configuration directory per user, outside every project, owned by the CLI user.
    let config_dir = harness
        .data_dir()
        .join("users")
        .join(harness.user_id.to_string())
        .join(".claude-config");
    assert_eq!(env["CLAUDE_CONFIG_DIR"], config_dir.to_str().unwrap());
    assert!(config_dir.is_dir());
    assert_eq!(env["CLOUD_ML_REGION"], "test-region");
    assert_eq!(env["LANG"], "C.UTF-8");
    assert_eq!(env["DISABLE_TELEMETRY"], "1");
    assert_eq!(env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"], "1");
    assert!(!read("env.txt").contains("relay-secret-value"));
    if let Some(user) = cli_user() {
        assert_eq!(read("uid.txt").trim(), user.uid.to_string());
        assert_eq!(env["HOME"], user.dir.to_string_lossy());
        assert_eq!(env["USER"], CLI_USER);
    }
}

#[tokio::test]
async fn skills_are_copied_with_replace_semantics() {
    let mut harness = Harness::script(
        "cat > /dev/null\n[ -f game.js ] || echo 'let x = 1;' > game.js\n\
         echo '{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"ok\"}'",
    );
    let skills = harness.tmp.path().join("skills");
    std::fs::create_dir_all(skills.join("p5js-setup")).unwrap();
    std::fs::create_dir_all(skills.join("game-ai")).unwrap();
    std::fs::write(skills.join("p5js-setup/SKILL.md"), "version 1").unwrap();
    std::fs::write(skills.join("game-ai/SKILL.md"), "ai").unwrap();
    harness.config.skills_dir = skills.clone();
    harness.skills = vec!["p5js-setup".into(), "game-ai".into()];

    let events = harness.run("first").await;
    assert!(
        matches!(
            events.last(),
            Some(BackendEvent::Completed { commit: Some(_) })
        ),
        "{events:?}"
    );
    // The copy is not part of the game's history.
    assert_eq!(git(&harness.workspace(), &["ls-files"]), "game.js");
    let copied = harness.workspace().join(".claude/skills");
    assert_eq!(
        std::fs::read_to_string(copied.join("p5js-setup/SKILL.md")).unwrap(),
        "version 1"
    );

    std::fs::write(skills.join("p5js-setup/SKILL.md"), "version 2").unwrap();
    std::fs::remove_dir_all(skills.join("game-ai")).unwrap();
    let events = harness.run("second").await;
    assert_eq!(
        events.last(),
        Some(&BackendEvent::Completed { commit: None }),
        "{events:?}"
    );
    assert_eq!(
        std::fs::read_to_string(copied.join("p5js-setup/SKILL.md")).unwrap(),
        "version 2"
    );
    assert!(
        !copied.join("skills").exists(),
        "skills nested into skills/skills"
    );
    assert!(!copied.join("game-ai").exists(), "a removed skill survived");
}

#[tokio::test]
async fn flooding_output_is_capped_and_drained() {
    let mut harness = Harness::script(
        "cat > /dev/null\ni=0\nwhile [ $i -lt 20000 ]; do\n\
         echo '{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"flood line with some padding to fill the pipe quickly ........\"}]}}'\n\
         i=$((i+1))\ndone\n\
         echo '{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"ok\"}'",
    );
    harness.config.output_line_cap = 50;
    let events = harness.run("flood").await;
    let texts = events
        .iter()
        .filter(|e| matches!(e, BackendEvent::Text(_)))
        .count();
    assert_eq!(texts, 50);
    assert_eq!(
        events.last(),
        Some(&BackendEvent::Completed { commit: None })
    );
}

#[tokio::test]
async fn result_with_is_error_fails_even_after_the_cap() {
    let mut harness = Harness::script(
        "cat > /dev/null\nfor i in 1 2 3; do echo '{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}}'; done\n\
         echo 'plain log line'\n\
         echo '{\"type\":\"result\",\"subtype\":\"error_during_execution\",\"is_error\":true}'",
    );
    harness.config.output_line_cap = 2;
    let events = harness.run("error").await;
    let failure = failure(&events);
    assert_eq!(
        (failure.code.as_str(), failure.exit_code),
        ("CLI_GENERAL_ERROR", Some(0))
    );
    assert!(!events.contains(&status("Saving version history...")));
}

#[tokio::test]
async fn cli_dying_mid_line_fails_with_its_signal_code() {
    let harness = Harness::script(
        "cat > /dev/null\necho '{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"whole\"}]}}'\n\
         printf '%s' '{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"cut'\n\
         kill -9 $$",
    );
    let events = harness.run("die").await;
    assert!(events.contains(&BackendEvent::Text("whole".into())));
    assert!(!events
        .iter()
        .any(|e| matches!(e, BackendEvent::Text(t) if t.contains("cut"))));
    let failure = failure(&events);
    assert_eq!(
        (failure.code.as_str(), failure.exit_code),
        ("CLI_KILLED", Some(137))
    );
}

#[tokio::test]
async fn timeout_escalates_to_sigkill_and_sweeps_escaped_processes() {
    // Ignores SIGTERM (so does everything it starts) and starts a process in a new session.
    let mut harness = Harness::script(
        "trap '' TERM\ncat > /dev/null\n\
         setsid sh -c 'echo $$ > \"$0\"; exec sleep 300' \"$(dirname \"$0\")/out/escaped.pid\" &\n\
         sleep 300",
    );
    harness.config.timeout_secs = 2;
    harness.config.kill_grace_secs = 1;
    let events = harness.run("hang").await;
    let failure = failure(&events);
    assert_eq!(failure.code, "CLI_TIMEOUT");

    let pid_file = harness.tmp.path().join("out/escaped.pid");
    let escaped: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while matches!(stat_of(escaped), Some((_, comm, state)) if comm == "sleep" && state != 'Z') {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the escaped process survived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(processes_in(&harness.workspace()).is_empty());
}
