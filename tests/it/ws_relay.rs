//! The relay driven by a real WebSocket client, with a fake Modal `generate_game` upstream.

use crate::support::fake_modal;
use crate::support::relay;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_modal::{FakeModal, Script, Step};
use relay::{stream_text, token, Received, TestRelay};
use serde_json::{json, Value};
use uuid::Uuid;

/// A stream of `n` assistant texts `e0..e{n-1}`, `gap` apart.
fn numbered(n: usize, gap: Duration) -> Script {
    let mut steps = vec![Step::Modal(
        json!({"type":"status","message":"Sandbox connected (warm)"}),
    )];
    for i in 0..n {
        steps.push(Step::Cli(fake_modal::assistant_text(&format!("e{i};"))));
        steps.push(Step::Sleep(gap));
    }
    steps.push(Step::Modal(json!({"type":"debug","exit_code":0})));
    steps.push(Step::Modal(json!({"type":"done","exit_code":0})));
    Script::Stream(steps)
}

#[tokio::test]
async fn init_succeeds_and_lists_projects() {
    let relay = TestRelay::start(&[]).await;
    let user = Uuid::new_v4();
    let mut client = relay.client().await;
    let reply = client.init(&relay.token_for(user).await).await;
    assert_eq!(reply, json!({"type":"init","userId":user,"projects":[]}));
    let id = client.create_project("新しいゲーム").await;
    let mut again = relay.client().await;
    let reply = again.init(&relay.token_for(user).await).await;
    let project = &reply["projects"][0];
    assert_eq!(project["id"], json!(id));
    assert_eq!(project["name"], "新しいゲーム");
    assert_eq!(project["description"], "");
    assert_eq!(project["isPublic"], false);
    assert_eq!(project["remixedFrom"], Value::Null);
    assert!(project["createdAt"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn auth_failures_send_the_reason_then_close_4001() {
    let relay = TestRelay::start(&[]).await;
    let user = Uuid::new_v4();

    let mut c = relay.client().await;
    c.send(json!({"type":"init"})).await;
    assert_eq!(
        c.recv().await,
        json!({"type":"error","message":"access_token required"})
    );
    assert_eq!(
        c.expect_close().await,
        Some((4001, "Authentication required".into()))
    );

    let mut c = relay.client().await;
    assert_eq!(
        c.init(&token(user, -120)).await,
        json!({"type":"error","message":"Token expired"})
    );
    assert_eq!(
        c.expect_close().await,
        Some((4001, "Authentication failed".into()))
    );

    let forged = {
        let t = token(user, 3600);
        let (head, _) = t.rsplit_once('.').unwrap();
        format!("{head}.c2lnbmF0dXJl")
    };
    let mut c = relay.client().await;
    assert_eq!(
        c.init(&forged).await,
        json!({"type":"error","message":"Invalid token signature"})
    );
    assert_eq!(
        c.expect_close().await,
        Some((4001, "Authentication failed".into()))
    );

    let mut c = relay.client().await;
    assert_eq!(c.init("not-a-jwt").await["type"], "error");
    assert_eq!(c.expect_close().await.map(|c| c.0), Some(4001));
}

#[tokio::test]
async fn no_init_closes_4008_without_an_error() {
    let relay = TestRelay::start(&[("AUTH_TIMEOUT_SECS", "1")]).await;
    let mut c = relay.client().await;
    // Unauthenticated pings are answered, but do not count as authentication.
    c.send(json!({"type":"ping"})).await;
    assert_eq!(c.recv().await, json!({"type":"pong"}));
    assert_eq!(
        c.next().await,
        Received::Closed(Some((4008, "Authentication timeout".into())))
    );
}

#[tokio::test]
async fn unauthenticated_requests_get_upstream_replies() {
    let relay = TestRelay::start(&[]).await;
    let mut c = relay.client().await;
    for (msg, reply) in [
        (
            json!({"type":"selectProject","projectId":Uuid::new_v4()}),
            "Not initialized",
        ),
        (json!({"type":"createProject"}), "Not initialized"),
        (
            json!({"type":"message","content":"x"}),
            "No project selected",
        ),
        (
            json!({"type":"renameProject","projectId":Uuid::new_v4(),"name":"x"}),
            "Invalid request",
        ),
        (
            json!({"type":"getJobStatus","jobId":Uuid::new_v4()}),
            "Not authenticated",
        ),
        (
            json!({"type":"cancel","jobId":Uuid::new_v4()}),
            "Access denied",
        ),
    ] {
        c.send(msg).await;
        assert_eq!(c.recv().await, json!({"type":"error","message":reply}));
    }
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_socket_survives() {
    let relay = TestRelay::start(&[]).await;
    let mut c = relay.user(Uuid::new_v4()).await;
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
    let huge = json!({"type":"message","content":"x".repeat(1_200_000)});
    c.send(huge).await;
    assert_eq!(
        c.recv().await,
        json!({"type":"error","message":"Message too large"})
    );
    c.send(json!({"type":"ping"})).await;
    assert_eq!(c.recv().await, json!({"type":"pong"}));
}

#[tokio::test]
async fn full_generation_sequence_with_exact_fields() {
    let fake = FakeModal::start(|_| Script::success(&["ネコのゲームを", "作りました。"])).await;
    let relay = TestRelay::start_modal(&fake.url, &fake.secret, &[]).await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    let project = c.create_project("新しいゲーム").await;
    let selected = c.select(project).await;
    assert_eq!(
        selected,
        json!({"type":"projectSelected","projectId":project,"history":[],"versions":[],"activeJob":null})
    );
    c.recv_until("versionsList").await;

    // A new game that names 2D first gets the style picker; skipping it starts the job.
    c.send(json!({"type":"message","content":"2Dのネコゲームを作って"}))
        .await;
    let offer = c.recv().await;
    assert_eq!(offer["type"], "styleOptions");
    assert_eq!(offer["originalMessage"], "2Dのネコゲームを作って");
    c.send(json!({"type":"message","content":"2Dのネコゲームを作って","skipStyleSelection":true}))
        .await;
    let frames = c.recv_until("gameUpdated").await;
    let kinds = relay::types(&frames);
    assert_eq!(kinds[0], "jobStarted");
    assert_eq!(kinds[1], "started");
    assert_eq!(&kinds[kinds.len() - 2..], ["completed", "gameUpdated"]);

    let started = &frames[0];
    assert_eq!(started["isExisting"], false);
    let job = &started["job"];
    assert_eq!(job["status"], "pending");
    assert_eq!(job["user_id"], json!(user));
    assert_eq!(job["project_id"], json!(project));
    assert_eq!(job["progress"], 0);
    let job_id = job["id"].clone();
    assert_eq!(frames[1]["job"]["status"], "processing");

    let progress: Vec<(i64, String)> = frames
        .iter()
        .filter(|f| f["type"] == "progress")
        .map(|f| {
            (
                f["progress"].as_i64().unwrap(),
                f["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        progress,
        vec![
            (5, "意図を判定中...".to_string()),
            (
                10,
                "Claude CLI スキル: p5js-setup, p5js-input, game-ai".to_string()
            ),
            (15, "実行環境を準備中...".to_string()),
            (30, "Sandbox connected (warm)".to_string()),
            (40, "Loading skills...".to_string()),
            (50, "Starting Claude CLI...".to_string()),
            (65, "実行中: Write".to_string()),
            (75, "Saving version history...".to_string()),
        ]
    );
    assert_eq!(
        stream_text(&frames),
        "ネコのゲームを作りました。\n[Write]\n"
    );

    let completed = &frames[frames.len() - 2];
    assert_eq!(completed["job"]["id"], job_id);
    assert_eq!(completed["job"]["status"], "completed");
    assert_eq!(completed["job"]["progress"], 100);
    assert_eq!(
        completed["result"],
        json!({"message":"ネコのゲームを作りました。"})
    );
    assert_eq!(
        frames.last().unwrap(),
        &json!({"type":"gameUpdated","userId":user,"projectId":project})
    );

    // The request upstream: exact ids, the template around the user's text.
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].user_id, user.to_string());
    assert_eq!(requests[0].project_id, project.to_string());
    assert!(requests[0]
        .prompt
        .contains("<user>\n2Dのネコゲームを作って\n</user>"));
    assert!(requests[0]
        .prompt
        .contains(&format!("/data/users/{user}/projects/{project}")));

    // History survives for the next visit.
    let selected = c.select(project).await;
    let history = selected["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["role"], "user");
    assert_eq!(history[0]["content"], "2Dのネコゲームを作って");
    assert_eq!(history[1]["role"], "assistant");
    assert_eq!(history[1]["content"], "ネコのゲームを作りました。");
    assert_eq!(selected["activeJob"], Value::Null);
}

#[tokio::test]
async fn upstream_failure_becomes_failed_with_code() {
    let fake = FakeModal::start(|_| Script::cli_exit(124)).await;
    let relay = TestRelay::start_modal(&fake.url, &fake.secret, &[]).await;
    let mut c = relay.user(Uuid::new_v4()).await;
    let project = c.create_project("p").await;
    c.send(json!({"type":"message","content":"go"})).await;
    let frames = c.recv_until("failed").await;
    let failed = frames.last().unwrap();
    assert_eq!(failed["code"], "CLI_TIMEOUT");
    assert_eq!(failed["exitCode"], 124);
    assert_eq!(failed["recoverable"], true);
    assert_eq!(
        failed["userMessage"],
        "生成に時間がかかりすぎました（5分制限）"
    );
    assert_eq!(failed["error"], failed["userMessage"]);
    assert_eq!(failed["job"]["status"], "failed");
    // No gameUpdated after a failure, and the project is free again.
    let selected = c.select(project).await;
    assert_eq!(selected["activeJob"], Value::Null);
}

#[tokio::test]
async fn second_message_attaches_and_other_project_hits_the_limit() {
    let fake = FakeModal::start(|_| numbered(30, Duration::from_millis(50))).await;
    let relay = TestRelay::start_modal(&fake.url, &fake.secret, &[]).await;
    let user = Uuid::new_v4();
    let mut a = relay.user(user).await;
    let project = a.create_project("Space Cat Runner").await;
    let other = a.create_project("other").await;
    a.select(project).await;
    a.send(json!({"type":"message","content":"first"})).await;
    let first = a.recv_until("jobStarted").await.pop().unwrap();

    let mut b = relay.user(user).await;
    b.select(project).await;
    b.send(json!({"type":"message","content":"second"})).await;
    // Selecting the project already replayed the job's events to b.
    let mut b_frames = b.recv_until("jobStarted").await;
    let attached = b_frames.last().unwrap().clone();
    assert_eq!(attached["isExisting"], true);
    assert_eq!(attached["job"]["id"], first["job"]["id"]);

    let mut c = relay.user(user).await;
    c.select(other).await;
    c.send(json!({"type":"message","content":"elsewhere","rawContent":"elsewhere"}))
        .await;
    let limit = c.recv_until("limitExceeded").await.pop().unwrap();
    assert_eq!(limit["limit"], 1);
    assert_eq!(limit["inProgress"], 1);
    assert_eq!(limit["jobs"][0]["projectName"], "Space Cat Runner");
    assert_eq!(limit["jobs"][0]["jobId"], first["job"]["id"]);
    assert_eq!(
        limit["pendingPrompt"],
        json!({"content":"elsewhere","attachedAssets":[]})
    );

    // Both sockets on the job see every event, in order, once.
    let a_frames = a.recv_until("gameUpdated").await;
    b_frames.extend(b.recv_until("gameUpdated").await);
    let expected: String = (0..30).map(|i| format!("e{i};")).collect();
    assert_eq!(stream_text(&a_frames), expected);
    assert_eq!(stream_text(&b_frames), expected);
    assert_eq!(
        fake.requests().len(),
        1,
        "the attach must not start a second generation"
    );
}

#[tokio::test]
async fn system_limit_is_reported() {
    let fake = FakeModal::start(|_| numbered(20, Duration::from_millis(50))).await;
    let relay = TestRelay::start_modal(&fake.url, &fake.secret, &[("MAX_JOBS_TOTAL", "1")]).await;
    let mut a = relay.user(Uuid::new_v4()).await;
    a.create_project("a").await;
    a.send(json!({"type":"message","content":"go"})).await;
    a.recv_until("started").await;
    let mut b = relay.user(Uuid::new_v4()).await;
    b.create_project("b").await;
    b.send(json!({"type":"message","content":"go"})).await;
    assert_eq!(
        b.recv().await,
        json!({"type":"error","error":{"code":"SYSTEM_LIMIT_EXCEEDED","message":"System is busy. Please try again in a moment."}})
    );
}

#[tokio::test]
async fn cancel_stops_the_upstream_and_reports_once() {
    let fake = FakeModal::start(|_| numbered(1000, Duration::from_millis(20))).await;
    let relay = TestRelay::start_modal(&fake.url, &fake.secret, &[]).await;
    let mut c = relay.user(Uuid::new_v4()).await;
    let project = c.create_project("p").await;
    c.send(json!({"type":"message","content":"go"})).await;
    let job_id = c.recv_until("jobStarted").await.pop().unwrap()["job"]["id"].clone();
    c.recv_until("stream").await;
    assert_eq!(fake.open_streams(), 1);
    c.send(json!({"type":"cancel","jobId":job_id})).await;
    let frames = c.recv_until("cancelled").await;
    let event = frames.last().unwrap();
    assert_eq!(event["job"]["status"], "cancelled");
    assert_eq!(event["job"]["id"], job_id);
    let reply = c.recv_until("cancelled").await.pop().unwrap();
    assert_eq!(
        reply,
        json!({"type":"cancelled","message":"Job cancelled","jobId":job_id})
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fake.open_streams() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream stream still open after cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let selected = c.select(project).await;
    assert_eq!(selected["activeJob"], Value::Null);
    // A new message starts a new job right away.
    c.send(json!({"type":"message","content":"again"})).await;
    let again = c.recv_until("jobStarted").await.pop().unwrap();
    assert_eq!(again["isExisting"], false);
}

#[tokio::test]
async fn reselect_after_disconnect_replays_without_loss_or_duplicates() {
    let fake = FakeModal::start(|_| numbered(60, Duration::from_millis(25))).await;
    let relay = TestRelay::start_modal(&fake.url, &fake.secret, &[]).await;
    let user = Uuid::new_v4();
    let mut a = relay.user(user).await;
    let project = a.create_project("p").await;
    a.send(json!({"type":"message","content":"go"})).await;
    // Read a few events, then drop the socket mid-job.
    let mut seen = 0;
    while seen < 5 {
        if a.recv().await["type"] == "stream" {
            seen += 1;
        }
    }
    a.close().await;

    let mut b = relay.user(user).await;
    let selected = b.select(project).await;
    let active = &selected["activeJob"];
    assert_eq!(active["status"], "processing");
    let frames = b.recv_until("completed").await;
    let expected: String = (0..60).map(|i| format!("e{i};")).collect();
    assert_eq!(stream_text(&frames), expected);
    // Re-select path: no gameUpdated is added (docs/protocol.md §5.6).
    b.send(json!({"type":"ping"})).await;
    let mut after = Vec::new();
    loop {
        let v = b.recv().await;
        if v["type"] == "pong" {
            break;
        }
        after.push(v);
    }
    assert!(
        after.iter().all(|f| f["type"] != "gameUpdated"),
        "{after:?}"
    );
}

#[tokio::test]
async fn pong_is_not_held_behind_a_slow_handler() {
    // A JWKS endpoint that answers after 3 s makes `init` with an unknown key slow.
    let hits = Arc::new(Mutex::new(0));
    let jwks = slow_jwks(Arc::clone(&hits)).await;
    let relay = TestRelay::start(&[
        ("SUPABASE_URL", jwks.as_str()),
        ("SUPABASE_JWT_ISSUERS", "x"),
    ])
    .await;
    let mut c = relay.client().await;
    let rs256 = "eyJhbGciOiJSUzI1NiIsImtpZCI6InVua25vd24ifQ.e30.c2ln";
    c.send(json!({"type":"init","access_token":rs256})).await;
    c.send(json!({"type":"ping"})).await;
    // The pong overtakes the init reply, which waits for the slow key fetch.
    assert_eq!(c.recv().await, json!({"type":"pong"}));
    assert_eq!(c.recv().await["type"], "error");
    assert_eq!(*hits.lock().unwrap(), 1);
}

async fn slow_jwks(hits: Arc<Mutex<usize>>) -> String {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/auth/v1/.well-known/jwks.json",
        get(move || {
            let hits = Arc::clone(&hits);
            async move {
                *hits.lock().unwrap() += 1;
                tokio::time::sleep(Duration::from_secs(3)).await;
                axum::Json(json!({"keys":[]}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn another_users_ids_are_refused_without_revealing_them() {
    let fake = FakeModal::start(|_| numbered(40, Duration::from_millis(50))).await;
    let relay = TestRelay::start_modal(&fake.url, &fake.secret, &[]).await;
    let mut alice = relay.user(Uuid::new_v4()).await;
    let project = alice.create_project("alice's").await;
    alice.send(json!({"type":"message","content":"go"})).await;
    let job_id = alice.recv_until("jobStarted").await.pop().unwrap()["job"]["id"].clone();

    let mut bob = relay.user(Uuid::new_v4()).await;
    bob.send(json!({"type":"selectProject","projectId":project}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type":"error","message":"Access denied"})
    );
    bob.send(json!({"type":"selectProject","projectId":"not-a-uuid"}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type":"error","message":"Access denied"})
    );
    bob.send(json!({"type":"cancel","jobId":job_id})).await;
    assert_eq!(
        bob.recv().await,
        json!({"type":"error","message":"Access denied"})
    );
    bob.send(json!({"type":"getJobStatus","jobId":job_id}))
        .await;
    assert_eq!(bob.recv().await, json!({"type":"jobStatus","job":null}));
    bob.send(json!({"type":"subscribeJob","jobId":job_id}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type":"error","message":"Job not found"})
    );
    bob.send(json!({"type":"cancelJob","jobId":job_id})).await;
    assert_eq!(
        bob.recv().await,
        json!({"type":"error","message":"Job not found"})
    );
    bob.send(json!({"type":"renameProject","projectId":project,"name":"mine"}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type":"error","message":"Access denied"})
    );
    bob.send(json!({"type":"deleteProject","projectId":project}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type":"error","message":"Access denied"})
    );

    // Alice's job is untouched.
    let frames = alice.recv_until("gameUpdated").await;
    assert!(frames.iter().any(|f| f["type"] == "completed"));
    alice
        .send(json!({"type":"getJobStatus","jobId":job_id}))
        .await;
    let status = alice.recv().await;
    assert_eq!(status["job"]["status"], "completed");
}

#[tokio::test]
async fn token_expiry_is_rechecked_on_every_message() {
    let relay = TestRelay::start(&[]).await;
    let mut c = relay.client().await;
    assert_eq!(c.init(&token(Uuid::new_v4(), 2)).await["type"], "init");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    c.send(json!({"type":"createProject","name":"late"})).await;
    assert_eq!(
        c.recv().await,
        json!({"type":"error","message":"Token expired"})
    );
    assert_eq!(c.expect_close().await.map(|c| c.0), Some(4001));
}

#[tokio::test]
async fn an_idle_socket_is_pinged_and_closed_when_its_token_expires() {
    let relay = TestRelay::start(&[("WS_PING_INTERVAL_SECS", "1"), ("JWT_LEEWAY_SECS", "0")]).await;
    let mut c = relay.client().await;
    let started = tokio::time::Instant::now();
    assert_eq!(c.init(&token(Uuid::new_v4(), 3)).await["type"], "init");
    c.expect_ping().await;
    c.expect_ping().await;
    // The client sends nothing: the relay's clock notices the expiry on its own.
    assert_eq!(
        c.recv().await,
        json!({"type":"error","message":"Token expired"})
    );
    assert_eq!(c.expect_close().await, Some((4001, "Token expired".into())));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn jobs_outlive_their_socket() {
    let fake = FakeModal::start(|_| numbered(20, Duration::from_millis(25))).await;
    let relay = TestRelay::start_modal(&fake.url, &fake.secret, &[]).await;
    let user = Uuid::new_v4();
    let mut a = relay.user(user).await;
    let project = a.create_project("p").await;
    a.send(json!({"type":"message","content":"go"})).await;
    a.recv_until("started").await;
    a.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut b = relay.user(user).await;
        let selected = b.select(project).await;
        if selected["history"].as_array().unwrap().len() == 2 {
            let expected: String = (0..20).map(|i| format!("e{i};")).collect();
            assert_eq!(selected["history"][1]["content"], expected);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job did not finish without its socket"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
