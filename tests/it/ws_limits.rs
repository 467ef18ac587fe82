//! Rate limits and the Origin allow-list: exceeded → the documented error; the socket and
//! other users carry on.

use crate::support::fake_modal;
use crate::support::relay;

use fake_modal::{FakeModal, Script};
use relay::TestRelay;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

fn rate_limited() -> serde_json::Value {
    json!({"type":"error","error":{
        "code":"RATE_LIMITED",
        "message":"リクエストが多すぎます。しばらくしてからもう一度お試しください",
        "recoverable":true
    }})
}

#[tokio::test]
async fn socket_message_rate_excludes_ping() {
    let relay = TestRelay::start(&[("RATE_LIMIT_MESSAGES_PER_MIN", "5")]).await;
    let user = Uuid::new_v4();
    // init counts as one of the five.
    let mut c = relay.user(user).await;
    for _ in 0..4 {
        c.send(json!({"type":"getJobStatus","jobId":Uuid::new_v4()}))
            .await;
        assert_eq!(c.recv().await, json!({"type":"jobStatus","job":null}));
    }
    c.send(json!({"type":"getJobStatus","jobId":Uuid::new_v4()}))
        .await;
    assert_eq!(c.recv().await, rate_limited());
    for _ in 0..20 {
        c.send(json!({"type":"viewState","visible":true})).await;
        c.send(json!({"type":"ping"})).await;
        assert_eq!(c.recv().await, json!({"type":"pong"}));
    }
    // Another socket of the same user has its own budget.
    let mut other = relay.user(user).await;
    other
        .send(json!({"type":"getJobStatus","jobId":Uuid::new_v4()}))
        .await;
    assert_eq!(other.recv().await, json!({"type":"jobStatus","job":null}));
}

#[tokio::test]
async fn generation_rate_is_per_user() {
    let fake = FakeModal::start(|_| Script::success(&["ok"])).await;
    let relay = TestRelay::start(&[
        ("USE_MODAL", "true"),
        ("MODAL_ENDPOINT", fake.url.as_str()),
        ("MODAL_INTERNAL_SECRET", fake.secret.as_str()),
        ("RATE_LIMIT_GENERATIONS_PER_MIN", "2"),
    ])
    .await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    c.create_project("p").await;
    for _ in 0..2 {
        c.send(json!({"type":"message","content":"go"})).await;
        c.recv_until("gameUpdated").await;
    }
    let mut second_tab = relay.user(user).await;
    second_tab.create_project("q").await;
    second_tab
        .send(json!({"type":"message","content":"go"}))
        .await;
    assert_eq!(second_tab.recv().await, rate_limited());

    let mut someone_else = relay.user(Uuid::new_v4()).await;
    someone_else.create_project("r").await;
    someone_else
        .send(json!({"type":"message","content":"go"}))
        .await;
    let frames = someone_else.recv_until("gameUpdated").await;
    assert_eq!(frames[0]["type"], "jobStarted");
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn origin_allow_list() {
    let relay = TestRelay::start(&[(
        "WS_ALLOWED_ORIGINS",
        "https://dreamcore.gg,https://staging.dreamcore.gg",
    )])
    .await;
    let mut request = relay.url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!(
            "expected a 403 handshake refusal, got {:?}",
            other.map(|_| ())
        ),
    }
    let mut request = relay.url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://dreamcore.gg".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("allowed origin connects");
    drop(ws);
    // No Origin header at all (non-browser client) is refused when a list is configured.
    let refused = tokio_tungstenite::connect_async(relay.url()).await;
    assert!(refused.is_err());
}
