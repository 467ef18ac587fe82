//! Daily quotas over the WebSocket: the structured refusals, and quota spent only when work
//! really starts (never on an attach or a slot refusal).

use crate::support::fake_modal;
use crate::support::relay;

use std::time::Duration;

use fake_modal::{FakeModal, Script, Step};
use relay::TestRelay;
use serde_json::json;
use uuid::Uuid;

fn next_midnight() -> String {
    let tomorrow = chrono::Utc::now().date_naive() + chrono::Duration::days(1);
    format!("{tomorrow}T00:00:00.000Z")
}

#[tokio::test]
async fn project_quota_refuses_the_fourth_project_of_the_day() {
    let relay = TestRelay::start(&[]).await;
    let mut c = relay.user(Uuid::new_v4()).await;
    for i in 0..3 {
        c.create_project(&format!("p{i}")).await;
    }
    c.send(json!({"type":"createProject","name":"p4"})).await;
    assert_eq!(
        c.recv().await,
        json!({"type":"error","error":{
            "code":"DAILY_PROJECT_LIMIT_EXCEEDED",
            "message":"本日のプロジェクト作成上限（3回）に達しました",
            "remaining":0,"limit":3,"resetAt":next_midnight()
        }})
    );
}

#[tokio::test]
async fn message_quota_counts_only_started_work() {
    let fake = FakeModal::start(|req| {
        if req.prompt.contains("slow") {
            let mut steps = vec![Step::Modal(
                json!({"type":"status","message":"Sandbox connected (warm)"}),
            )];
            steps.push(Step::Sleep(Duration::from_millis(800)));
            steps.push(Step::Modal(json!({"type":"done","exit_code":0})));
            Script::Stream(steps)
        } else {
            Script::success(&["ok"])
        }
    })
    .await;
    let relay = TestRelay::start(&[
        ("USE_MODAL", "true"),
        ("MODAL_ENDPOINT", fake.url.as_str()),
        ("MODAL_INTERNAL_SECRET", fake.secret.as_str()),
        ("RATE_LIMIT_GENERATIONS_PER_MIN", "0"),
    ])
    .await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    let project = c.create_project("p").await;
    let other = c.create_project("q").await;
    c.select(project).await;

    // One slow job, plus an attach and a slot refusal while it runs: one unit spent.
    c.send(json!({"type":"message","content":"slow"})).await;
    c.recv_until("started").await;
    c.send(json!({"type":"message","content":"again"})).await;
    assert_eq!(
        c.recv_until("jobStarted").await.pop().unwrap()["isExisting"],
        true
    );
    let mut tab = relay.user(user).await;
    tab.select(other).await;
    tab.send(json!({"type":"message","content":"elsewhere"}))
        .await;
    tab.recv_until("limitExceeded").await;
    c.recv_until("gameUpdated").await;

    // 19 more generations fit in the free plan's 20; the next is refused.
    for i in 0..19 {
        c.send(json!({"type":"message","content":format!("m{i}")}))
            .await;
        c.recv_until("gameUpdated").await;
    }
    c.send(json!({"type":"message","content":"one too many"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type":"error","error":{
            "code":"DAILY_MESSAGE_LIMIT_EXCEEDED",
            "message":"本日のメッセージ上限（20回）に達しました",
            "remaining":0,"limit":20,"resetAt":next_midnight()
        }})
    );
    // Refused work leaves no trace in the history either.
    let selected = c.select(project).await;
    let history = selected["history"].as_array().unwrap();
    assert!(history
        .iter()
        .all(|h| h["content"] != "one too many" && h["content"] != "again"));
    assert_eq!(fake.requests().len(), 20);
}
