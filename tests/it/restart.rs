//! SIGKILL of the relay mid-job, then a restart on the same data: nothing is lost, nothing
//! is left half-alive (no zombie job blocking the project once its lease expired).

use crate::support::fake_modal;
use crate::support::postgres;
use crate::support::relay_process::RelayProcess;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fake_modal::{FakeModal, Script, Step};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn sigkill_mid_job_then_restart_loses_nothing_and_leaves_no_zombie() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let fake = FakeModal::start(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            // The first generation never finishes on its own.
            Script::Stream(vec![
                Step::Modal(json!({"type":"status","message":"Sandbox connected (warm)"})),
                Step::Hang,
            ])
        } else {
            Script::success(&["直しました。"])
        }
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let user = Uuid::new_v4();
    // The same test on PostgreSQL when the suite runs with RELAY_TEST_STORE=postgres.
    let pg = match std::env::var("RELAY_TEST_STORE").as_deref() {
        Ok("postgres") => Some(postgres::PgDb::create().await),
        _ => None,
    };
    let database_url = pg.as_ref().map(|db| db.relay_url()).unwrap_or_default();
    if let Some(db) = &pg {
        db.register_user(user, "survivor@example.com").await;
    }

    let mut first = RelayProcess::on_fake_modal(data.path(), &fake, &database_url).await;
    let (mut c, _) = first.user(user).await;
    let project = c.create_project("生き残るゲーム").await;
    c.send(json!({"type":"message","content":"作って"})).await;
    let job_id = c.recv_until("jobStarted").await.pop().unwrap()["job"]["id"].clone();
    c.recv_until("progress").await;
    // Kill only once the generation really reached Modal: the first `progress` is the
    // relay's own "preparing" line, sent before the upstream call.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "generate_game never called"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill();
    drop(first);

    let second = RelayProcess::on_fake_modal(data.path(), &fake, &database_url).await;
    let (mut c, init) = second.user(user).await;
    assert_eq!(
        init["projects"][0]["id"],
        json!(project),
        "project still listed"
    );
    // The new instance never fails a job whose lease is live; this one's lease runs out
    // because nobody renews it any more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        c.send(json!({"type":"getJobStatus","jobId":job_id})).await;
        let status = c.recv_until("jobStatus").await.pop().unwrap();
        if status["job"]["status"] == "failed" {
            assert_eq!(
                status["job"]["error"],
                "サーバーの再起動により生成が中断されました。もう一度お試しください"
            );
            break;
        }
        assert_eq!(status["job"]["status"], "processing", "{status}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the killed instance's job was never failed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let selected = c.select(project).await;
    assert_eq!(
        selected["activeJob"],
        serde_json::Value::Null,
        "no zombie job"
    );
    assert_eq!(selected["history"][0]["content"], "作って");

    c.send(json!({"type":"message","content":"もう一度"})).await;
    let frames = c.recv_until("gameUpdated").await;
    // `versionsList` from the select may still arrive first: look the reply up by type.
    let started = frames
        .iter()
        .find(|f| f["type"] == "jobStarted")
        .expect("jobStarted");
    assert_eq!(started["isExisting"], false);
    let completed = frames.iter().find(|f| f["type"] == "completed").unwrap();
    assert_eq!(completed["result"]["message"], "直しました。");
    drop(second);
    if let Some(db) = pg {
        db.drop_db().await;
    }
}
