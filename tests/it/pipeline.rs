//! The pre-job pipeline through the whole relay (docs/protocol.md §4.2–§4.3): chat answers,
//! the restore confirmation, the style gate, skills in the prompt, prewarm after `init`, and
//! every failure falling back — on Modal (the fake's endpoints) and on the local backend (the
//! REAL Claude Code CLI against the fake Anthropic API).

use crate::support::{fake_anthropic, fake_modal, relay, tools};

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use fake_anthropic::{FakeAnthropic, Pipeline, Scenario};
use fake_modal::{Answer, FakeModal, Script};
use relay::{eventually, metrics, Client, TestRelay};
use serde_json::{json, Value};
use tools::{claude_bin, cli_user, git};
use uuid::Uuid;

const QUESTION: &str = "ネコのジャンプ力はどうやって決まるの？";
const UNDO: &str = "元に戻して";
const GAME: &str = "<!DOCTYPE html><html><body>neko</body></html>";

async fn modal_relay(modal: &FakeModal, extra: &[(&str, &str)]) -> TestRelay {
    let mut env = vec![("RATE_LIMIT_GENERATIONS_PER_MIN", "0")];
    env.extend_from_slice(extra);
    TestRelay::start_modal(&modal.url, &modal.secret, &env).await
}

async fn fake_modal() -> FakeModal {
    FakeModal::start(|_| Script::success(&["ゲームを作りました。"])).await
}

/// Frames of one `message` until the job's `gameUpdated`.
async fn ask(client: &mut Client, message: Value) -> Vec<Value> {
    client.send(message).await;
    client.recv_until("gameUpdated").await
}

/// `selectProject`, waiting for everything it sends (up to `versionsList`); the
/// `projectSelected` frame.
async fn select(client: &mut Client, project: Uuid) -> Value {
    client
        .send(json!({"type":"selectProject","projectId":project}))
        .await;
    let frames = client.recv_until("versionsList").await;
    frames
        .into_iter()
        .find(|f| f["type"] == "projectSelected")
        .expect("projectSelected")
}

fn progress_messages(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "progress")
        .map(|f| f["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn find<'a>(frames: &'a [Value], kind: &str) -> &'a Value {
    frames
        .iter()
        .find(|f| f["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {frames:#?}"))
}

// --- Modal --------------------------------------------------------------------------------

#[tokio::test]
async fn a_question_gets_a_chat_answer_and_no_generation() {
    let modal = fake_modal().await;
    let relay = modal_relay(&modal, &[]).await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    let project = c.create_project("新しいゲーム").await;
    modal.put_file(user, project, "index.html", GAME);
    modal.put_file(user, project, "SPEC.md", "# Neko Dash\njump with space");
    select(&mut c, project).await;

    let frames = ask(&mut c, json!({"type":"message","content":QUESTION})).await;
    let kinds = relay::types(&frames);
    assert_eq!(kinds.first().map(String::as_str), Some("jobStarted"));
    assert_eq!(
        progress_messages(&frames),
        ["意図を判定中...", "Claude Haikuで回答中...", "回答完了"]
    );
    let chat = find(&frames, "geminiChat");
    assert_eq!(
        chat,
        &json!({"type":"geminiChat","mode":"chat","message":fake_modal::CHAT_MESSAGE,"suggestions":fake_modal::CHAT_SUGGESTIONS})
    );
    let completed = find(&frames, "completed");
    assert_eq!(
        completed["result"],
        json!({"message":fake_modal::CHAT_MESSAGE,"mode":"chat","generator":"haiku"})
    );
    assert_eq!(completed["job"]["status"], "completed");
    // Order: the answer before the end of the job, `gameUpdated` last.
    let at = |k: &str| kinds.iter().position(|x| x == k).unwrap();
    assert!(at("geminiChat") < at("completed") && at("completed") < at("gameUpdated"));
    assert!(modal.requests().is_empty(), "no generate_game call");

    // What chat_haiku was given: the question, the spec and the conversation so far.
    let call = modal.calls("chat_haiku").pop().unwrap();
    assert_eq!(call["message"], QUESTION);
    assert_eq!(call["game_spec"], "# Neko Dash\njump with space");
    assert_eq!(call["conversation_history"][0]["content"], QUESTION);

    // The answer is in the history with its suggestions, as the frontend parses them back.
    let selected = select(&mut c, project).await;
    let history = selected["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(
        history[1]["content"],
        format!(
            "{}\n\n提案: ジャンプを高くして、二段ジャンプを追加して",
            fake_modal::CHAT_MESSAGE
        )
    );
}

#[tokio::test]
async fn an_undo_request_gets_the_restore_confirmation_and_no_generation() {
    let modal = fake_modal().await;
    let relay = modal_relay(&modal, &[]).await;
    let mut c = relay.user(Uuid::new_v4()).await;
    c.create_project("新しいゲーム").await;
    let frames = ask(&mut c, json!({"type":"message","content":UNDO})).await;
    assert_eq!(
        progress_messages(&frames),
        ["意図を判定中...", "リストア確認"]
    );
    assert_eq!(
        find(&frames, "geminiRestore"),
        &json!({"type":"geminiRestore","mode":"restore","message":"直前の変更を取り消して、前の状態に戻しますか？","confirmLabel":"戻す","cancelLabel":"キャンセル"})
    );
    assert_eq!(
        find(&frames, "completed")["result"],
        json!({"message":"リストア確認","mode":"restore","generator":"claude"})
    );
    assert!(modal.requests().is_empty());
    assert_eq!(modal.calls("detect_intent")[0], json!({"message": UNDO}));
}

#[tokio::test]
async fn an_edit_names_its_skills_in_the_prompt() {
    let modal = fake_modal().await;
    let relay = modal_relay(&modal, &[]).await;
    let mut c = relay.user(Uuid::new_v4()).await;
    c.create_project("新しいゲーム").await;
    let frames = ask(&mut c, json!({"type":"message","content":"敵を増やして"})).await;
    assert!(
        progress_messages(&frames)
            .contains(&"Claude CLI スキル: p5js-setup, p5js-input, game-ai".to_string()),
        "{frames:#?}"
    );
    let call = modal.calls("detect_skills").pop().unwrap();
    assert_eq!(call["message"], "敵を増やして");
    assert_eq!(call["dimension"], "2d");
    let prompt = &modal.requests()[0].prompt;
    for skill in ["p5js-setup", "p5js-input", "game-ai"] {
        assert!(
            prompt.contains(&format!("- .claude/skills/{skill}/SKILL.md")),
            "{prompt}"
        );
    }
    assert!(prompt.contains("敵を増やして"));
    assert_eq!(find(&frames, "completed")["job"]["status"], "completed");

    // With skills disabled, the prompt says so and names none.
    let frames = ask(
        &mut c,
        json!({"type":"message","content":"敵を増やして","debugOptions":{"disableSkills":true,"useClaude":false}}),
    )
    .await;
    assert!(!progress_messages(&frames)
        .iter()
        .any(|m| m.starts_with("Claude CLI スキル")));
    let prompt = &modal.requests()[1].prompt;
    assert!(prompt.contains("Skills are disabled") && !prompt.contains(".claude/skills/"));
}

#[tokio::test]
async fn a_new_2d_game_offers_styles_and_the_choice_reaches_the_prompt() {
    let modal = fake_modal().await;
    let relay = modal_relay(&modal, &[]).await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    let project = c.create_project("新しいゲーム").await;
    let request = "2Dのネコが走るゲームを作って";

    c.send(json!({"type":"message","content":request})).await;
    let offer = c.recv().await;
    assert_eq!(offer["type"], "styleOptions", "{offer}");
    assert_eq!(offer["dimension"], "2d");
    assert_eq!(offer["originalMessage"], request);
    let styles = offer["styles"].as_array().unwrap();
    assert_eq!(styles.len(), 19);
    assert_eq!(
        styles[0],
        json!({"id":"retro","name":"レトロドット絵","imageUrl":null})
    );
    eventually(".style-pending.json written", || {
        modal.file(user, project, ".style-pending.json").is_some()
    })
    .await;
    let pending: Value =
        serde_json::from_str(&modal.file(user, project, ".style-pending.json").unwrap()).unwrap();
    assert_eq!(pending, json!({"dimension":"2d","originalMessage":request}));

    // While the picker is open, another message only gets the reminder.
    c.send(json!({"type":"message","content":"はやく"})).await;
    assert_eq!(
        c.recv().await,
        json!({"type":"info","message":"スタイルを選択してください。"})
    );

    // A reconnecting tab gets the picker again after projectSelected, before versionsList.
    let mut tab = relay.user(user).await;
    tab.send(json!({"type":"selectProject","projectId":project}))
        .await;
    let frames = tab.recv_until("versionsList").await;
    assert_eq!(
        relay::types(&frames),
        ["projectSelected", "styleOptions", "versionsList"]
    );
    assert_eq!(frames[1]["originalMessage"], request);
    assert_eq!(frames[1]["styles"].as_array().unwrap().len(), 19);

    // The pick starts the job; the guide joins the request, STYLE.md records it.
    let frames = ask(
        &mut tab,
        json!({"type":"message","content":request,"selectedStyle":{"dimension":"2d","styleId":"kawaii"}}),
    )
    .await;
    assert_eq!(find(&frames, "completed")["job"]["status"], "completed");
    let prompt = &modal.requests()[0].prompt;
    assert!(prompt.contains(request), "{prompt}");
    assert!(prompt.contains("ベビーピンク #ffb6c1"), "{prompt}");
    let style = modal.file(user, project, "STYLE.md").unwrap();
    assert!(
        style.starts_with("# ビジュアルスタイル: KAWAII\n\nID: kawaii\nDimension: 2d\n\n"),
        "{style}"
    );
    eventually(".style-pending.json cleared", || {
        modal.file(user, project, ".style-pending.json").as_deref() == Some("")
    })
    .await;
    // The history holds what the user typed, not the guide.
    let selected = select(&mut tab, project).await;
    assert_eq!(selected["history"][0]["content"], request);

    // The style is decided: the same request now goes straight to a job.
    let frames = ask(&mut tab, json!({"type":"message","content":request})).await;
    assert_eq!(relay::types(&frames)[0], "jobStarted");
}

#[tokio::test]
async fn a_skipped_3d_picker_is_not_offered_again() {
    let modal = fake_modal().await;
    let relay = modal_relay(&modal, &[]).await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    let project = c.create_project("新しいゲーム").await;
    let request = "3Dのレースゲームを作って";
    c.send(json!({"type":"message","content":request})).await;
    let offer = c.recv().await;
    assert_eq!(offer["dimension"], "3d");
    assert_eq!(offer["styles"].as_array().unwrap().len(), 12);

    let frames = ask(
        &mut c,
        json!({"type":"message","content":request,"skipStyleSelection":true}),
    )
    .await;
    assert_eq!(find(&frames, "completed")["job"]["status"], "completed");
    eventually("skip marker written", || {
        modal
            .file(user, project, "STYLE.md")
            .is_some_and(|s| s.starts_with("# SKIPPED"))
    })
    .await;
    // 3D skills for a 3D request.
    assert_eq!(modal.calls("detect_skills")[0]["dimension"], "3d");
    let frames = ask(&mut c, json!({"type":"message","content":request})).await;
    assert_eq!(relay::types(&frames)[0], "jobStarted");
}

#[tokio::test]
async fn prewarm_runs_once_per_user_within_five_minutes() {
    let modal = fake_modal().await;
    let relay = modal_relay(&modal, &[]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let _a1 = relay.user(alice).await;
    let _a2 = relay.user(alice).await;
    let _b = relay.user(bob).await;
    eventually("two prewarms", || modal.calls("prewarm_sandbox").len() == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = modal.calls("prewarm_sandbox");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.contains(&json!({"user_id": alice.to_string()})));
    assert!(calls.contains(&json!({"user_id": bob.to_string()})));
    assert!(metrics(relay.addr)
        .await
        .contains("relay_modal_calls_total{endpoint=\"prewarm_sandbox\"}"));
}

#[tokio::test]
async fn a_failed_prewarm_is_retried_at_the_next_init_and_never_delays_it() {
    let modal = fake_modal().await;
    let relay = modal_relay(&modal, &[("PREWARM_TIMEOUT_SECS", "1")]).await;
    let user = Uuid::new_v4();
    modal.answer("prewarm_sandbox", Answer::Status(500));
    let _c = relay.user(user).await;
    eventually("first prewarm", || {
        modal.calls("prewarm_sandbox").len() == 1
    })
    .await;
    // The failure forgot the user: the next init tries again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    modal.answer("prewarm_sandbox", Answer::Hang);
    let started = std::time::Instant::now();
    let _c2 = relay.user(user).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "init waited for the prewarm"
    );
    eventually("second prewarm", || {
        modal.calls("prewarm_sandbox").len() == 2
    })
    .await;
    // The hung one times out and is logged; nothing else happens.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(metrics(relay.addr)
        .await
        .contains("relay_modal_call_failures_total{endpoint=\"prewarm_sandbox\"}"));
}

#[tokio::test]
async fn every_intent_failure_means_a_generation() {
    for answer in [Answer::Hang, Answer::Status(500), Answer::Garbage] {
        let modal = fake_modal().await;
        let relay = modal_relay(&modal, &[("PIPELINE_INTENT_TIMEOUT_SECS", "1")]).await;
        modal.answer("detect_intent", answer.clone());
        let mut c = relay.user(Uuid::new_v4()).await;
        c.create_project("新しいゲーム").await;
        let frames = ask(&mut c, json!({"type":"message","content":UNDO})).await;
        assert!(
            frames.iter().all(|f| f["type"] != "geminiRestore"),
            "{answer:?}: {frames:#?}"
        );
        assert_eq!(find(&frames, "completed")["job"]["status"], "completed");
        assert_eq!(modal.requests().len(), 1, "{answer:?}");
        let text = metrics(relay.addr).await;
        assert!(
            text.contains("relay_modal_call_failures_total{endpoint=\"detect_intent\"}"),
            "{answer:?}"
        );
        assert!(
            text.contains("relay_modal_call_duration_seconds_count{endpoint=\"detect_intent\"}")
        );
    }
}

/// The game's code is read while the intent is asked, not after: with `detect_intent`
/// hanging, `get_file` for `index.html` is already called.
#[tokio::test]
async fn the_game_is_read_while_the_intent_is_asked() {
    let modal = fake_modal().await;
    let relay = modal_relay(&modal, &[("PIPELINE_INTENT_TIMEOUT_SECS", "30")]).await;
    modal.answer("detect_intent", Answer::Hang);
    let mut c = relay.user(Uuid::new_v4()).await;
    c.create_project("新しいゲーム").await;
    c.send(json!({"type":"message","content":"敵を増やして"}))
        .await;
    eventually("the intent is asked", || {
        modal.calls("detect_intent").len() == 1
    })
    .await;
    eventually("index.html is read meanwhile", || {
        modal.calls("get_file").iter().any(|query| {
            query["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("index.html"))
        })
    })
    .await;
    assert!(
        modal.requests().is_empty(),
        "no generation before the intent"
    );
}

#[tokio::test]
async fn a_failed_chat_answer_falls_back_to_a_generation() {
    let modal = fake_modal().await;
    let relay = modal_relay(&modal, &[("PIPELINE_CHAT_TIMEOUT_SECS", "1")]).await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    let project = c.create_project("新しいゲーム").await;
    modal.put_file(user, project, "index.html", GAME);
    for answer in [Answer::Status(500), Answer::Hang, Answer::Garbage] {
        modal.answer("chat_haiku", answer.clone());
        let frames = ask(&mut c, json!({"type":"message","content":QUESTION})).await;
        assert!(
            frames.iter().all(|f| f["type"] != "geminiChat"),
            "{answer:?}"
        );
        assert_eq!(find(&frames, "completed")["result"]["mode"], Value::Null);
    }
    assert_eq!(modal.requests().len(), 3);
    // A question about a project with no game yet is answered by making it.
    let mut c2 = relay.user(Uuid::new_v4()).await;
    c2.create_project("新しいゲーム").await;
    modal.answer("chat_haiku", Answer::Normal);
    let frames = ask(&mut c2, json!({"type":"message","content":QUESTION})).await;
    assert!(frames.iter().all(|f| f["type"] != "geminiChat"));
    assert_eq!(modal.requests().len(), 4);
}

#[tokio::test]
async fn failed_skill_selection_uses_the_keyword_rules() {
    let modal = fake_modal().await;
    let relay = modal_relay(&modal, &[]).await;
    modal.answer("detect_skills", Answer::Garbage);
    let mut c = relay.user(Uuid::new_v4()).await;
    c.create_project("新しいゲーム").await;
    let frames = ask(
        &mut c,
        json!({"type":"message","content":"3Dのボールで敵から逃げる"}),
    )
    .await;
    assert!(
        progress_messages(&frames)
            .contains(&"Claude CLI スキル: threejs-setup, game-ai".to_string()),
        "{frames:#?}"
    );
    assert!(modal.requests()[0]
        .prompt
        .contains("- .claude/skills/threejs-setup/SKILL.md"));
}

#[tokio::test]
async fn a_chat_answer_is_cancellable_and_ends_once() {
    let modal = fake_modal().await;
    let relay = modal_relay(&modal, &[]).await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    let project = c.create_project("新しいゲーム").await;
    modal.put_file(user, project, "index.html", GAME);
    modal.answer("chat_haiku", Answer::Hang);
    c.send(json!({"type":"message","content":QUESTION})).await;
    let frames = c.recv_until("progress").await;
    let job = frames[0]["job"]["id"].as_str().unwrap().to_string();
    c.recv_until("progress").await; // 意図を判定中... then 回答中
    c.send(json!({"type":"cancel","jobId":job})).await;
    let frames = c.recv_until("cancelled").await;
    assert_eq!(frames.last().unwrap()["job"]["status"], "cancelled");
    assert_eq!(
        c.recv().await,
        json!({"type":"cancelled","message":"Job cancelled","jobId":job})
    );
    // The project is free again.
    modal.answer("chat_haiku", Answer::Normal);
    let frames = ask(&mut c, json!({"type":"message","content":QUESTION})).await;
    assert_eq!(find(&frames, "jobStarted")["isExisting"], false);
    assert!(frames.iter().any(|f| f["type"] == "geminiChat"));
}

// --- local backend: the real CLI against the fake Anthropic API -------------------------

/// How long one frame may take when the real CLI answers several questions per job on a
/// loaded machine.
const CLI_WAIT: Duration = Duration::from_secs(120);

/// A relay on the local backend whose CLI talks to `anthropic`.
async fn local_relay(
    anthropic: &FakeAnthropic,
    skills: Option<&std::path::Path>,
    extra: &[(&str, &str)],
) -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let claude = claude_bin().display().to_string();
    let cli_user = cli_user().map(|u| u.name).unwrap_or_default();
    let skills = skills.map(|p| p.display().to_string()).unwrap_or_default();
    let mut env: Vec<(&str, &str)> = vec![
        ("USE_MODAL", "false"),
        ("CLAUDE_BIN", &claude),
        ("LOCAL_CLI_USER", &cli_user),
        ("CLI_KILL_GRACE_SECS", "2"),
        (
            "CLI_ENV_PASSTHROUGH",
            "ANTHROPIC_API_KEY,ANTHROPIC_BASE_URL,CLAUDE_CODE_MAX_RETRIES",
        ),
        ("RATE_LIMIT_GENERATIONS_PER_MIN", "0"),
        ("SKILLS_DIR", &skills),
        // Generous for the real CLI on a loaded machine; the timeout test sets its own.
        ("PIPELINE_INTENT_TIMEOUT_SECS", "60"),
        ("PIPELINE_CHAT_TIMEOUT_SECS", "60"),
        ("PIPELINE_SKILLS_TIMEOUT_SECS", "60"),
    ];
    env.extend_from_slice(extra);
    let cli_env = HashMap::from([
        ("ANTHROPIC_API_KEY".to_string(), "sk-ant-test".to_string()),
        ("ANTHROPIC_BASE_URL".to_string(), anthropic.base_url.clone()),
        ("CLAUDE_CODE_MAX_RETRIES".to_string(), "0".to_string()),
    ]);
    TestRelay::start_with_cli_env(dir, &env, cli_env).await
}

fn write_game() -> Scenario {
    Scenario::Write {
        file_path: "index.html".into(),
        content: GAME.into(),
        final_text: "作りました。".into(),
    }
}

/// Skills the CLI user can read.
fn skills_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["p5js-setup", "game-ai", "threejs-setup"] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(
            dir.path().join(name).join("SKILL.md"),
            format!("# {name}\n"),
        )
        .unwrap();
    }
    dir
}

#[tokio::test]
async fn local_question_and_undo_are_answered_by_the_small_model() {
    let anthropic = FakeAnthropic::start(write_game()).await;
    let relay = local_relay(&anthropic, None, &[]).await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    c.set_wait(CLI_WAIT);
    let project = c.create_project("新しいゲーム").await;

    // First a game (an edit), so a question has something to be about.
    let frames = ask(
        &mut c,
        json!({"type":"message","content":"ネコのゲームにして"}),
    )
    .await;
    assert_eq!(find(&frames, "completed")["job"]["status"], "completed");
    assert_eq!(anthropic.pipeline_requests("intent").len(), 1);
    let generations = anthropic.generation_requests().len();
    assert!(generations >= 2, "the Write turn and the final turn");

    let frames = ask(&mut c, json!({"type":"message","content":QUESTION})).await;
    assert_eq!(
        find(&frames, "geminiChat"),
        &json!({"type":"geminiChat","mode":"chat","message":fake_anthropic::CHAT_MESSAGE,"suggestions":fake_anthropic::CHAT_SUGGESTIONS})
    );
    assert_eq!(find(&frames, "completed")["result"]["generator"], "haiku");
    assert_eq!(
        anthropic.generation_requests().len(),
        generations,
        "no generation"
    );
    // The small model got the conversation.
    let chat = fake_anthropic::user_texts(&anthropic.pipeline_requests("chat")[0]).join("\n");
    assert!(chat.contains("user: ネコのゲームにして") && chat.contains(QUESTION));

    // An undo: the confirmation, then the frontend's restore flow restores the version.
    let frames = ask(&mut c, json!({"type":"message","content":UNDO})).await;
    assert_eq!(find(&frames, "geminiRestore")["confirmLabel"], "戻す");
    assert_eq!(
        anthropic.generation_requests().len(),
        generations,
        "no generation"
    );
    let dir = relay.workspace(user, project);
    std::fs::write(dir.join("index.html"), "<p>broken</p>").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "a worse version"]);
    c.send(json!({"type":"getVersions","projectId":project}))
        .await;
    let list = c.recv_until("versionsList").await.pop().unwrap();
    let previous = list["versions"][1]["id"].as_str().unwrap().to_string();
    c.send(json!({"type":"restoreVersion","projectId":project,"versionId":previous}))
        .await;
    let done = c.recv_until("versionRestored").await.pop().unwrap();
    assert_eq!(done["versionId"], previous);
    assert_eq!(
        std::fs::read_to_string(dir.join("index.html")).unwrap(),
        GAME
    );
}

#[tokio::test]
async fn local_style_choice_and_skills_reach_the_prompt_and_the_workspace() {
    let anthropic = FakeAnthropic::start(write_game()).await;
    let skills = skills_dir();
    let relay = local_relay(&anthropic, Some(skills.path()), &[]).await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    c.set_wait(CLI_WAIT);
    let project = c.create_project("新しいゲーム").await;
    let request = "2Dのネコのゲームを作って";
    c.send(json!({"type":"message","content":request})).await;
    assert_eq!(c.recv().await["type"], "styleOptions");
    let dir = relay.workspace(user, project);
    eventually("pending file in the workspace", || {
        dir.join(".style-pending.json").is_file()
    })
    .await;

    // Reconnect: offered again from the workspace's pending file.
    let mut tab = relay.user(user).await;
    tab.set_wait(CLI_WAIT);
    tab.send(json!({"type":"selectProject","projectId":project}))
        .await;
    let frames = tab.recv_until("versionsList").await;
    assert_eq!(frames[1]["type"], "styleOptions", "{frames:#?}");

    let frames = ask(
        &mut tab,
        json!({"type":"message","content":request,"selectedStyle":{"dimension":"2d","styleId":"retro"}}),
    )
    .await;
    assert_eq!(find(&frames, "completed")["job"]["status"], "completed");
    assert!(
        progress_messages(&frames).contains(&"Claude CLI スキル: p5js-setup, game-ai".to_string())
    );
    let style = std::fs::read_to_string(dir.join("STYLE.md")).unwrap();
    assert!(
        style.starts_with("# ビジュアルスタイル: レトロドット絵"),
        "{style}"
    );
    // The generation's prompt carries the guide and the required reading, and the files it
    // names exist in the workspace.
    let first = anthropic.generation_requests()[0].clone();
    let prompt = fake_anthropic::user_texts(&first).join("\n");
    assert!(prompt.contains("ライムグリーン #00ff00"), "{prompt}");
    assert!(
        prompt.contains("- .claude/skills/game-ai/SKILL.md"),
        "{prompt}"
    );
    assert!(dir.join(".claude/skills/game-ai/SKILL.md").is_file());
    // Only what was chosen is copied: SKILLS_DIR's other skills stay out of the workspace.
    assert!(dir.join(".claude/skills/p5js-setup/SKILL.md").is_file());
    assert!(!dir.join(".claude/skills/threejs-setup").exists());
    // The skills question listed only what SKILLS_DIR has.
    let asked = fake_anthropic::user_texts(&anthropic.pipeline_requests("skills")[0]).join("\n");
    assert!(asked.contains("- threejs-setup") && !asked.contains("kawaii-ui"));
}

#[tokio::test]
async fn local_failures_fall_back_to_edit_and_keyword_skills() {
    let anthropic = FakeAnthropic::start(write_game()).await;
    let skills = skills_dir();
    let relay = local_relay(
        &anthropic,
        Some(skills.path()),
        &[("PIPELINE_INTENT_TIMEOUT_SECS", "3")],
    )
    .await;
    anthropic.pipeline("intent", Pipeline::Hang);
    anthropic.pipeline("skills", Pipeline::Error);
    let mut c = relay.user(Uuid::new_v4()).await;
    c.set_wait(CLI_WAIT);
    c.create_project("新しいゲーム").await;
    let frames = ask(
        &mut c,
        json!({"type":"message","content":"敵から逃げるゲームにして？"}),
    )
    .await;
    assert!(frames.iter().all(|f| f["type"] != "geminiChat"));
    assert_eq!(find(&frames, "completed")["job"]["status"], "completed");
    assert!(
        progress_messages(&frames).contains(&"Claude CLI スキル: p5js-setup, game-ai".to_string()),
        "{frames:#?}"
    );
    let text = metrics(relay.addr).await;
    assert!(text.contains("relay_pipeline_cli_calls_total{purpose=\"intent\",outcome=\"timeout\"}"));
    assert!(text.contains("relay_pipeline_fallbacks_total{step=\"skills\"}"));
    // Garbage answers: edit, and the keyword rules again.
    anthropic.pipeline("intent", Pipeline::Garbage);
    anthropic.pipeline("skills", Pipeline::Garbage);
    let frames = ask(&mut c, json!({"type":"message","content":"敵を増やして"})).await;
    assert_eq!(find(&frames, "completed")["job"]["status"], "completed");
}
