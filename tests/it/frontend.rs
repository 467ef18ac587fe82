//! The unchanged upstream frontend (`public/` of DreamCore-V2) in a real headless Chromium
//! against the relay on the Modal backend (the fake): the editor shows the chat answer with its
//! suggestion buttons, the restore confirmation, the style picker, the code viewer, a download
//! the browser really saves, and the answer's suggestions again after a reload.
//!
//! Upstream's files are not ours to ship, so this test is ignored by default and run on
//! purpose with a copy of them: `scripts/check-frontend.sh <upstream checkout>`.

use crate::support::chromium;
use crate::support::fake_modal;
use crate::support::relay;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chromium::{Chromium, Page};
use fake_modal::{FakeModal, Script};
use relay::{eventually, TestRelay};
use serde_json::json;
use uuid::Uuid;

const NEW_GAME: &str = "2Dのネコが走るゲームを作って";
const QUESTION: &str = "ネコのジャンプ力はどうやって決まるの？";
const UNDO: &str = "元に戻して";
const GAME: &str = "<!DOCTYPE html><html><body><canvas id=\"neko\"></canvas></body></html>";

/// The upstream `public/` folder this run serves.
fn upstream_public() -> PathBuf {
    let dir = std::env::var_os("UPSTREAM_PUBLIC_DIR").map(PathBuf::from);
    match dir {
        Some(dir) if dir.join("editor.html").is_file() => dir,
        _ => panic!(
            "UPSTREAM_PUBLIC_DIR must name upstream's public/ folder (with editor.html); \
             scripts/check-frontend.sh sets it"
        ),
    }
}

/// What the frontend keeps after a Supabase sign-in: its own session cache and the SDK's
/// stored session, both holding an access token the relay accepts.
fn sign_in_script(user: Uuid, token: &str) -> String {
    let expires_at = unix_now_secs() + 3600;
    let session = json!({
        "access_token": token,
        "refresh_token": "unused-refresh-token",
        "token_type": "bearer",
        "expires_in": 3600,
        "expires_at": expires_at,
        "user": {
            "id": user,
            "aud": "authenticated",
            "role": "authenticated",
            "email": "neko@example.com",
            "app_metadata": {"provider": "google"},
            "user_metadata": {"full_name": "Neko"},
        },
    });
    format!(
        r#"(() => {{
  const session = {session};
  sessionStorage.setItem("dreamcore_session_cache", JSON.stringify({{ session, timestamp: Date.now() }}));
  localStorage.setItem("sb-tcynrijrovktirsvwiqb-auth-token", JSON.stringify(session));
  return true;
}})()"#
    )
}

fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Type `text` into the chat box and press the send button, as a person does.
async fn send_chat(page: &mut Page, text: &str) {
    let script = format!(
        r#"(() => {{
  const input = document.getElementById("chatInput");
  input.value = {};
  input.dispatchEvent(new Event("input", {{ bubbles: true }}));
  document.getElementById("sendButton").click();
  return true;
}})()"#,
        json!(text)
    );
    page.eval(&script).await;
}

/// The labels of the chat's suggestion buttons, once there are any.
async fn suggestion_buttons(page: &mut Page) -> serde_json::Value {
    page.wait_for(
        "[...document.querySelectorAll('.chat-suggestions .suggestion-btn')].map(b => b.textContent)",
        |v| v.as_array().is_some_and(|a| !a.is_empty()),
    )
    .await
}

/// Wait until the app has no job running.
async fn wait_idle(page: &mut Page) {
    page.wait_for("window.app && window.app.isProcessing === false", |v| {
        v == &json!(true)
    })
    .await;
}

/// The only `.zip` the browser saved into `dir`, once it is complete.
async fn saved_zip(dir: &Path) -> PathBuf {
    let deadline = tokio::time::Instant::now() + chromium::WAIT;
    loop {
        let names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let done = names
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == "zip"));
        let partial = names
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "crdownload"));
        if let (Some(zip), false) = (done, partial) {
            return zip.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no download in {}: {names:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn unzip(path: &Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(path).expect("the saved zip");
    let mut archive = zip::ZipArchive::new(file).expect("a zip");
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).expect("entry");
            let mut content = Vec::new();
            entry.read_to_end(&mut content).expect("entry bytes");
            (entry.name().expect("entry name").to_string(), content)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs upstream's public/: run scripts/check-frontend.sh"]
async fn the_upstream_editor_shows_chat_restore_styles_code_and_download() {
    let public = upstream_public();
    let modal = FakeModal::start(|_| Script::success(&["ネコのゲームを作りました。"])).await;
    let public_dir = public.to_string_lossy().into_owned();
    let relay = TestRelay::start_modal(
        &modal.url,
        &modal.secret,
        &[
            ("PUBLIC_DIR", &public_dir),
            ("RATE_LIMIT_GENERATIONS_PER_MIN", "0"),
        ],
    )
    .await;
    let origin = format!("http://{}", relay.addr);
    let user = Uuid::new_v4();
    let token = relay.token_for(user).await;
    let project = {
        let mut client = relay.user(user).await;
        let project = client.create_project("ネコラン").await;
        client.close().await;
        project
    };

    let browser = Chromium::start().await;
    let mut page = browser.page().await;
    let downloads = tempfile::tempdir().expect("download dir");
    page.call(
        "Page.setDownloadBehavior",
        json!({"behavior": "allow", "downloadPath": downloads.path()}),
    )
    .await;

    // Signed in: the session the frontend stores after Google sign-in, then the editor.
    page.navigate(&format!("{}/icons/icon-192.png", origin))
        .await;
    page.eval(&sign_in_script(user, &token)).await;
    page.navigate(&format!("{}/project/{project}", origin))
        .await;
    let ready = format!(
        "window.app && window.app.currentProjectId === {} && window.app.ws && window.app.ws.readyState === 1",
        json!(project)
    );
    page.wait_for(&ready, |v| v == &json!(true)).await;
    wait_idle(&mut page).await;

    // A new 2D game: the style picker; a card click starts the generation with that style.
    send_chat(&mut page, NEW_GAME).await;
    let cards = page
        .wait_for(
            "document.querySelectorAll('.style-card-chat').length",
            |v| v.as_u64().unwrap_or(0) > 0,
        )
        .await;
    let first = page
        .eval("document.querySelector('.style-card-chat').dataset.styleId")
        .await;
    assert_eq!(first, json!("retro"), "{cards} cards");
    modal.put_file(user, project, "index.html", GAME);
    page.eval("document.querySelector('.style-card-chat').click(), true")
        .await;
    eventually("the style pick starts a generation", || {
        !modal.requests().is_empty()
    })
    .await;
    wait_idle(&mut page).await;
    let prompt = &modal.requests()[0].prompt;
    assert!(prompt.contains(NEW_GAME), "{prompt}");
    assert!(
        modal
            .file(user, project, "STYLE.md")
            .is_some_and(|style| style.contains("ID: retro")),
        "STYLE.md"
    );

    // A question: the answer bubble with its suggestion buttons, and no generation.
    send_chat(&mut page, QUESTION).await;
    assert_eq!(
        suggestion_buttons(&mut page).await,
        json!(fake_modal::CHAT_SUGGESTIONS)
    );
    let answer = page
        .eval("[...document.querySelectorAll('.message.assistant')].map(m => m.textContent).join('\\n')")
        .await;
    assert!(
        answer
            .as_str()
            .is_some_and(|a| a.contains(fake_modal::CHAT_MESSAGE)),
        "{answer}"
    );
    wait_idle(&mut page).await;
    assert_eq!(modal.requests().len(), 1, "a question runs no generation");

    // An undo request: the restore confirmation with its two buttons.
    send_chat(&mut page, UNDO).await;
    let buttons = page
        .wait_for(
            "document.querySelectorAll('.message.restore-confirm .restore-btn').length",
            |v| v == &json!(2),
        )
        .await;
    assert_eq!(buttons, json!(2));
    wait_idle(&mut page).await;
    assert_eq!(
        modal.requests().len(),
        1,
        "an undo request runs no generation"
    );

    // The code viewer shows the game's index.html.
    page.eval("document.getElementById('viewCodeButton').click(), true")
        .await;
    let code = page
        .wait_for(
            "(() => { const m = document.getElementById('codeViewerModal'); return m.classList.contains('hidden') ? null : document.getElementById('codeViewerCode').textContent; })()",
            |v| !v.is_null(),
        )
        .await;
    assert_eq!(code, json!(GAME));
    page.eval("window.app.hideCodeViewer(), true").await;

    // The download button saves a zip holding the game.
    page.eval("document.getElementById('downloadButton').click(), true")
        .await;
    let zip = saved_zip(downloads.path()).await;
    let entries = unzip(&zip);
    assert_eq!(
        entries,
        vec![("index.html".to_string(), GAME.as_bytes().to_vec())],
        "{}",
        zip.display()
    );

    // A reload rebuilds the conversation from the stored history: the answer keeps its
    // suggestion buttons.
    page.navigate(&format!("{origin}/project/{project}")).await;
    assert_eq!(
        suggestion_buttons(&mut page).await,
        json!(fake_modal::CHAT_SUGGESTIONS)
    );
}
