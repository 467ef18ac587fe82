//! Version history over the WebSocket: from the local git workspace, and from Modal's
//! `apply_files` git actions when Modal is the backend.

use crate::support::fake_modal;
use crate::support::relay;
use crate::support::tools;

use std::sync::{Arc, Mutex};

use axum::routing::post;
use axum::{Json, Router};
use fake_modal::{FakeModal, Script};
use relay::TestRelay;
use serde_json::{json, Value};
use tools::git;
use uuid::Uuid;

#[tokio::test]
async fn local_history_lists_diffs_and_restores() {
    let relay = TestRelay::start(&[]).await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    let project = c.create_project("p").await;
    let dir = relay
        .data_dir
        .path()
        .join(format!("users/{user}/projects/{project}"));
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q"]);
    std::fs::write(dir.join("index.html"), "v1").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "Initial project setup"]);
    std::fs::write(dir.join("index.html"), "v2").unwrap();
    git(&dir, &["commit", "-qam", "ジャンプを追加"]);
    let v2 = git(&dir, &["rev-parse", "--short", "HEAD"]);
    std::fs::write(dir.join("index.html"), "v3").unwrap();
    std::fs::write(dir.join("SPEC.md"), "spec").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "Update via Claude CLI"]);
    let v3 = git(&dir, &["rev-parse", "--short", "HEAD"]);

    c.send(json!({"type":"getVersions","projectId":project}))
        .await;
    let list = c.recv_until("versionsList").await.pop().unwrap();
    let ids: Vec<&str> = list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [v3.as_str(), v2.as_str()],
        "setup commit hidden, newest first"
    );
    assert_eq!(list["versions"][1]["number"], 2);
    assert_eq!(list["currentHead"], json!(v3));
    assert_eq!(list["autoInitialized"], false);

    c.send(json!({"type":"getVersionEdits","projectId":project,"versionHash":v2}))
        .await;
    let edits = c.recv_until("versionEdits").await.pop().unwrap();
    assert_eq!(edits["versionHash"], json!(v2));
    assert!(edits["edits"][0]["diff"].as_str().unwrap().contains("+v2"));

    c.send(json!({"type":"restoreVersion","projectId":project,"versionId":"nothing to commit"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type":"error","message":"Invalid version ID format"})
    );
    c.send(json!({"type":"restoreVersion","projectId":project,"versionId":v2}))
        .await;
    let frames = c.recv_until("versionRestored").await;
    assert_eq!(
        frames[0],
        json!({"type":"restoreProgress","stage":"checkout","message":"ファイルを復元中..."})
    );
    assert_eq!(
        frames.last().unwrap(),
        &json!({"type":"versionRestored","projectId":project,"versionId":v2})
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("index.html")).unwrap(),
        "v2"
    );
    assert!(
        !dir.join("SPEC.md").exists(),
        "SPEC.md absent from that version is removed"
    );

    c.send(json!({"type":"getVersions","projectId":project}))
        .await;
    let list = c.recv_until("versionsList").await.pop().unwrap();
    assert_eq!(list["currentHead"], json!(v2));

    let mut other = relay.user(Uuid::new_v4()).await;
    other
        .send(json!({"type":"restoreVersion","projectId":project,"versionId":v3}))
        .await;
    assert_eq!(
        other.recv().await,
        json!({"type":"error","message":"Access denied"})
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("index.html")).unwrap(),
        "v2"
    );
}

/// A stand-in for Modal's `apply_files` git actions, recording every body.
async fn fake_apply_files(seen: Arc<Mutex<Vec<Value>>>) -> String {
    let app = Router::new().route(
        "/apply_files",
        post(move |Json(body): Json<Value>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(body.clone());
                Json(match body["action"].as_str() {
                    Some("git_log") => json!({"commits":[
                        {"hash":"c0ffee1","message":"ネコのジャンプを追加","date":"2026-02-08T01:05:00+09:00"},
                        {"hash":"b0b0b0b","message":"Restored to a1b2c3d","date":"2026-02-08T01:00:00+09:00"},
                        {"hash":"a1b2c3d","message":"Update via Claude CLI","date":"2026-02-07T21:01:30+09:00"}
                    ],"_v":2}),
                    Some("git_diff") => json!({"diff":"diff --git a/index.html b/index.html\n+jump"}),
                    Some("git_restore") => json!({"success":true,"restored_files":["index.html"]}),
                    _ => json!({"error":"Unknown action"}),
                })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/apply_files")
}

#[tokio::test]
async fn modal_history_uses_apply_files_git_actions() {
    let fake = FakeModal::start(|_| Script::success(&["ok"])).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let apply = fake_apply_files(Arc::clone(&seen)).await;
    let relay = TestRelay::start(&[
        ("USE_MODAL", "true"),
        ("MODAL_ENDPOINT", fake.url.as_str()),
        ("MODAL_INTERNAL_SECRET", fake.secret.as_str()),
        ("MODAL_APPLY_FILES_ENDPOINT", apply.as_str()),
    ])
    .await;
    let user = Uuid::new_v4();
    let mut c = relay.user(user).await;
    let project = c.create_project("p").await;
    c.send(json!({"type":"getVersions","projectId":project}))
        .await;
    let list = c.recv_until("versionsList").await.pop().unwrap();
    assert_eq!(
        list,
        json!({"type":"versionsList","projectId":project,"versions":[
            {"id":"c0ffee1","number":1,"message":"ネコのジャンプを追加","timestamp":"2026-02-08T01:05:00+09:00","hash":"c0ffee1"},
            {"id":"a1b2c3d","number":2,"message":"Update via Claude CLI","timestamp":"2026-02-07T21:01:30+09:00","hash":"a1b2c3d"}
        ],"currentHead":"c0ffee1","autoInitialized":false})
    );
    c.send(json!({"type":"getVersionEdits","projectId":project,"versionHash":"a1b2c3d"}))
        .await;
    let edits = c.recv_until("versionEdits").await.pop().unwrap();
    assert_eq!(
        edits["edits"],
        json!([{"diff":"diff --git a/index.html b/index.html\n+jump"}])
    );
    c.send(json!({"type":"restoreVersion","projectId":project,"versionId":"a1b2c3d"}))
        .await;
    let frames = c.recv_until("versionRestored").await;
    let stages: Vec<&str> = frames.iter().filter_map(|f| f["stage"].as_str()).collect();
    assert_eq!(stages, ["checkout", "sync"]);
    c.send(json!({"type":"getVersions","projectId":project}))
        .await;
    assert_eq!(
        c.recv_until("versionsList").await.pop().unwrap()["currentHead"],
        "a1b2c3d"
    );

    // A new generation makes the newest version current again.
    c.send(json!({"type":"message","content":"go"})).await;
    c.recv_until("gameUpdated").await;
    c.send(json!({"type":"getVersions","projectId":project}))
        .await;
    assert_eq!(
        c.recv_until("versionsList").await.pop().unwrap()["currentHead"],
        "c0ffee1"
    );

    let bodies = seen.lock().unwrap().clone();
    assert_eq!(
        bodies[0],
        json!({"action":"git_log","user_id":user,"project_id":project,"limit":50})
    );
    assert!(bodies.iter().any(|b| b == &json!({"action":"git_restore","user_id":user,"project_id":project,"commit":"a1b2c3d"})));
}
