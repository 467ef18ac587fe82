//! Two tabs racing `message` on one project get one job and one attach, every time.

use crate::support::fake_modal;
use crate::support::relay;

use fake_modal::{FakeModal, Script};
use relay::TestRelay;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn hundred_races_yield_one_job_each() {
    let fake = FakeModal::start(|_| Script::success(&["ok"])).await;
    let relay = TestRelay::start(&[
        ("USE_MODAL", "true"),
        ("MODAL_ENDPOINT", fake.url.as_str()),
        ("MODAL_INTERNAL_SECRET", fake.secret.as_str()),
    ])
    .await;
    for race in 0..100 {
        let user = Uuid::new_v4();
        let mut a = relay.user(user).await;
        let project = a.create_project("race").await;
        let mut b = relay.user(user).await;
        b.select(project).await;
        b.recv_until("versionsList").await;
        let message = json!({"type":"message","content":format!("race {race}")});
        tokio::join!(a.send(message.clone()), b.send(message));
        let (a_started, b_started) =
            tokio::join!(a.recv_until("jobStarted"), b.recv_until("jobStarted"));
        let (a_started, b_started) = (a_started.last().unwrap(), b_started.last().unwrap());
        assert_eq!(
            a_started["job"]["id"], b_started["job"]["id"],
            "race {race}: two jobs"
        );
        let fresh = [&a_started, &b_started]
            .iter()
            .filter(|s| s["isExisting"] == false)
            .count();
        assert_eq!(fresh, 1, "race {race}: exactly one new job");
        a.recv_until("gameUpdated").await;
        b.recv_until("gameUpdated").await;
    }
    assert_eq!(fake.requests().len(), 100);
}
