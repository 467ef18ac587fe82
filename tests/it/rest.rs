//! The editor's REST routes on a real relay over real HTTP: the access gate, signed game
//! URLs, game files (local workspace and a fake Modal `get_file`), the quota, legacy
//! forwarding and the static frontend.

use crate::support::fake_get_file;
use crate::support::relay;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use fake_get_file::FakeGetFile;
use hmac::{Hmac, Mac};
use relay::{token, TestRelay, WAIT};
use reqwest::header;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const SIGNING_SECRET: &str = "rest-test-game-signing-secret-0123";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn base(relay: &TestRelay) -> String {
    format!("http://{}", relay.addr)
}

async fn start(extra: &[(&str, &str)]) -> TestRelay {
    let mut env = vec![("GAME_SIGNING_SECRET", SIGNING_SECRET)];
    env.extend_from_slice(extra);
    TestRelay::start(&env).await
}

fn sign(user: Uuid, project: Uuid, exp: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).unwrap();
    mac.update(format!("{user}:{project}:{exp}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A user with one project created over the WebSocket.
async fn user_with_project(relay: &TestRelay) -> (Uuid, Uuid) {
    let user = Uuid::new_v4();
    let mut client = relay.user(user).await;
    let project = client.create_project("Game").await;
    client.close().await;
    (user, project)
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

const INDEX: &str = "<!DOCTYPE html><html><head><title>t</title></head><body><canvas id=\"game\"></canvas><script src=\"js/game.js\"></script></body></html>";

async fn get_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A signed URL straight from `/api/game-url`.
async fn game_url(relay: &TestRelay, user: Uuid, project: Uuid) -> String {
    let response = http()
        .get(format!("{}/api/game-url/{project}", base(relay)))
        .bearer_auth(token(user, 600))
        .send()
        .await
        .unwrap();
    let (status, body) = get_json(response).await;
    assert_eq!(status, 200, "{body}");
    body["url"].as_str().unwrap().to_string()
}

/// A GET written byte for byte, so `..` and odd escapes reach the relay unnormalised.
async fn raw_get(relay: &TestRelay, target: &str, headers: &[(&str, String)]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        relay.addr
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("response within deadline")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

// --- check-access ----------------------------------------------------------------------------

#[tokio::test]
async fn check_access_approves_valid_tokens_only() {
    let relay = start(&[]).await;
    let url = format!("{}/api/check-access", base(&relay));
    let ok = http()
        .get(&url)
        .bearer_auth(token(Uuid::new_v4(), 600))
        .send()
        .await
        .unwrap();
    assert_eq!(
        get_json(ok).await,
        (200, json!({"allowed": true, "status": "approved"}))
    );

    let missing = http().get(&url).send().await.unwrap();
    assert_eq!(
        get_json(missing).await,
        (401, json!({"error": "Unauthorized"}))
    );
    for bad in [token(Uuid::new_v4(), -60), "not-a-jwt".to_string()] {
        let refused = http().get(&url).bearer_auth(bad).send().await.unwrap();
        assert_eq!(
            get_json(refused).await,
            (401, json!({"error": "Invalid token"}))
        );
    }
}

// --- game-url and signatures -----------------------------------------------------------------

#[tokio::test]
async fn game_url_is_signed_and_opens_the_injected_page() {
    let relay = start(&[]).await;
    let (user, project) = user_with_project(&relay).await;
    write(
        &relay.workspace(user, project).join("index.html"),
        INDEX.as_bytes(),
    );

    let before = now();
    let response = http()
        .get(format!("{}/api/game-url/{project}", base(&relay)))
        .header("X-Auth-Token", token(user, 600))
        .send()
        .await
        .unwrap();
    let (status, body) = get_json(response).await;
    assert_eq!(status, 200, "{body}");
    let exp = body["expiresAt"].as_i64().unwrap();
    assert!((before + 299..=now() + 301).contains(&exp), "{exp}");
    let expected = format!(
        "/game/{user}/{project}/index.html?sig={}&exp={exp}",
        sign(user, project, exp)
    );
    assert_eq!(body["url"], expected.as_str());
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");

    // The editor appends a cache buster.
    let page = http()
        .get(format!("{}{expected}&t=1700000000000", base(&relay)))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert_eq!(page.headers()[header::CACHE_CONTROL], "no-store");
    let html = page.text().await.unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html><html><head><script>"),
        "script goes first into <head>: {html}"
    );
    for needle in [
        "window.ASSET_BASE_URL",
        "type: \"gameError\"",
        "type: \"gameLoaded\"",
        "errorCount",
        "unhandledrejection",
        "console.error",
    ] {
        assert!(html.contains(needle), "{needle} missing");
    }
    assert!(html.ends_with("<script src=\"js/game.js\"></script></body></html>"));
}

#[tokio::test]
async fn game_url_refuses_bad_ids_and_foreign_projects_alike() {
    let relay = start(&[]).await;
    let (owner, project) = user_with_project(&relay).await;
    let stranger = Uuid::new_v4();
    let call = |project: String, who: Option<Uuid>| {
        let mut request = http().get(format!("{}/api/game-url/{project}", base(&relay)));
        if let Some(who) = who {
            request = request.bearer_auth(token(who, 600));
        }
        async move { get_json(request.send().await.unwrap()).await }
    };

    let foreign = call(project.to_string(), Some(stranger)).await;
    let missing = call(Uuid::new_v4().to_string(), Some(stranger)).await;
    assert_eq!(foreign, (403, json!({"error": "Access denied"})));
    assert_eq!(missing, foreign, "a foreign project looks like no project");
    assert_eq!(
        call("not-a-uuid".into(), Some(owner)).await,
        (400, json!({"error": "Invalid project ID"}))
    );
    assert_eq!(
        call(project.to_string(), None).await,
        (401, json!({"error": "No access token provided"}))
    );
    let expired = http()
        .get(format!("{}/api/game-url/{project}", base(&relay)))
        .bearer_auth(token(owner, -60))
        .send()
        .await
        .unwrap();
    assert_eq!(
        get_json(expired).await,
        (401, json!({"error": "Invalid or expired token"}))
    );
}

#[tokio::test]
async fn expired_forged_and_misapplied_signatures_are_refused() {
    let relay = start(&[]).await;
    let (user, project) = user_with_project(&relay).await;
    write(
        &relay.workspace(user, project).join("index.html"),
        INDEX.as_bytes(),
    );
    let (other_user, other_project) = user_with_project(&relay).await;
    write(
        &relay
            .workspace(other_user, other_project)
            .join("index.html"),
        b"<html><head></head>other</html>",
    );
    let page = |owner: Uuid, proj: Uuid, sig: String, exp: i64| {
        let url = format!(
            "{}/game/{owner}/{proj}/index.html?sig={sig}&exp={exp}",
            base(&relay)
        );
        async move { get_json(http().get(url).send().await.unwrap()).await }
    };

    let past = now() - 1;
    assert_eq!(
        page(user, project, sign(user, project, past), past).await,
        (403, json!({"error": "URL expired"}))
    );
    let exp = now() + 120;
    let mut forged = sign(user, project, exp);
    forged.replace_range(0..1, if forged.starts_with('0') { "1" } else { "0" });
    assert_eq!(
        page(user, project, forged, exp).await,
        (403, json!({"error": "Invalid signature"}))
    );
    // A later expiry under the old signature, and one project's signature on another.
    assert_eq!(
        page(user, project, sign(user, project, exp), exp + 3600).await,
        (403, json!({"error": "Invalid signature"}))
    );
    assert_eq!(
        page(other_user, other_project, sign(user, project, exp), exp).await,
        (403, json!({"error": "Invalid signature"}))
    );

    // The signed URL of one user opens nothing of another.
    let url = game_url(&relay, user, project).await;
    let (_, query) = url.split_once('?').unwrap();
    let misapplied = http()
        .get(format!(
            "{}/game/{other_user}/{other_project}/index.html?{query}",
            base(&relay)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(misapplied.status(), 403);
    assert!(!misapplied.text().await.unwrap().contains("other"));

    let bad_id = http()
        .get(format!("{}/game/nobody/{project}/index.html", base(&relay)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        get_json(bad_id).await,
        (400, json!({"error": "Invalid ID format"}))
    );
}

// --- local workspace files -------------------------------------------------------------------

#[tokio::test]
async fn local_files_follow_the_access_rules_with_their_content_types() {
    let relay = start(&[]).await;
    let (user, project) = user_with_project(&relay).await;
    let dir = relay.workspace(user, project);
    write(&dir.join("index.html"), INDEX.as_bytes());
    write(&dir.join("js/game.js"), b"console.log('hi');");
    write(&dir.join("style.css"), b"body{margin:0}");
    write(&dir.join("levels/one.json"), b"{\"w\":3}");
    let png: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    write(&dir.join("assets/hero.png"), &png);
    write(&dir.join("pages/help.html"), b"<p>help</p>");

    let signed = game_url(&relay, user, project).await;
    let (_, query) = signed.split_once('?').unwrap();
    let prefix = format!("{}/game/{user}/{project}", base(&relay));
    let page_referer = format!("{}{signed}", base(&relay));

    // A signature opens any file, with its type.
    for (file, content_type) in [
        ("js/game.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("levels/one.json", "application/json; charset=utf-8"),
        ("assets/hero.png", "image/png"),
    ] {
        let response = http()
            .get(format!("{prefix}/{file}?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{file}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], content_type);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
    }

    // The page's sub-resources load by Referer, bytes intact.
    let hero = http()
        .get(format!("{prefix}/assets/hero.png"))
        .header(header::REFERER, &page_referer)
        .send()
        .await
        .unwrap();
    assert_eq!(hero.status(), 200);
    assert_eq!(hero.bytes().await.unwrap().as_ref(), png.as_slice());
    let script = http()
        .get(format!("{prefix}/js/game.js"))
        .header(header::REFERER, format!("{prefix}/js/game.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.text().await.unwrap(), "console.log('hi');");

    // ... but never a page, and not for another folder or another host.
    let json_of = |response: reqwest::Response| get_json(response);
    let html_by_referer = http()
        .get(format!("{prefix}/pages/help.html"))
        .header(header::REFERER, &page_referer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(html_by_referer).await,
        (
            401,
            json!({"error": "Authentication required for HTML files"})
        )
    );
    let other_project = Uuid::new_v4();
    for referer in [
        format!("{}/game/{user}/{other_project}/index.html", base(&relay)),
        format!("http://elsewhere.example/game/{user}/{project}/index.html"),
        format!("{}/?/game/{user}/{project}/", base(&relay)),
    ] {
        let refused = http()
            .get(format!("{prefix}/js/game.js"))
            .header(header::REFERER, referer)
            .send()
            .await
            .unwrap();
        assert_eq!(
            json_of(refused).await,
            (401, json!({"error": "Authentication required"}))
        );
    }
    let bare = http()
        .get(format!("{prefix}/index.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);

    // The owner's token opens pages too; another user's token does not.
    let owned = http()
        .get(format!("{prefix}/"))
        .bearer_auth(token(user, 600))
        .send()
        .await
        .unwrap();
    assert_eq!(owned.status(), 200);
    assert!(owned.text().await.unwrap().contains("gameLoaded"));
    let foreign = http()
        .get(format!("{prefix}/index.html"))
        .bearer_auth(token(Uuid::new_v4(), 600))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(foreign).await,
        (403, json!({"error": "Access denied"}))
    );

    // Only the top-level index.html is injected; a missing file is a plain 404.
    let help = http()
        .get(format!("{prefix}/pages/help.html?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(help.text().await.unwrap(), "<p>help</p>");
    let missing = http()
        .get(format!("{prefix}/nope.js?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(missing).await,
        (404, json!({"error": "File not found"}))
    );
}

fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            }
            out.push((entry.path(), meta.len()));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn traversal_hidden_files_and_escaping_links_leak_nothing() {
    let relay = start(&[]).await;
    let (user, project) = user_with_project(&relay).await;
    let dir = relay.workspace(user, project);
    write(&dir.join("index.html"), INDEX.as_bytes());
    write(&dir.join("js/game.js"), b"ok();");
    write(&dir.join(".git/config"), b"GIT-SECRET");
    write(&dir.join(".claude/settings.json"), b"CLAUDE-SECRET");
    let data_dir = relay.app.data_dir().to_path_buf();
    write(&data_dir.join("users").join("secret.txt"), b"TOP-SECRET");
    // Temporary directories are named `.tmp…`; this one has no hidden component to trip on.
    let outside = tempfile::Builder::new()
        .prefix("outside-")
        .tempdir()
        .unwrap();
    write(&outside.path().join("secret.txt"), b"TOP-SECRET");
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), dir.join("escape.js")).unwrap();
    std::os::unix::fs::symlink("../../../../secret.txt", dir.join("js/relative.js")).unwrap();
    std::os::unix::fs::symlink(".git/config", dir.join("inside-hidden.js")).unwrap();
    std::os::unix::fs::symlink("js/game.js", dir.join("alias.js")).unwrap();
    let users = data_dir.join("users");
    let before = listing(&users);

    let auth = vec![("Authorization", format!("Bearer {}", token(user, 600)))];
    let prefix = format!("/game/{user}/{project}");
    let cases = [
        ("../../../secret.txt", 400),
        ("js/../../../../secret.txt", 400),
        ("%2e%2e/%2e%2e/%2e%2e/secret.txt", 400),
        ("%2E%2E%2F%2E%2E%2F%2E%2E%2Fsecret.txt", 400),
        ("js%2F..%2F..%2F..%2F..%2Fsecret.txt", 400),
        ("js%5C..%5C..%5Csecret.txt", 400),
        ("index.html%00.js", 400),
        (".git/config", 400),
        ("%2Egit/config", 400),
        (".claude/settings.json", 400),
        ("js//game.js", 400),
        ("escape.js", 404),
        ("js/relative.js", 404),
        ("inside-hidden.js", 404),
        ("js", 404),
    ];
    for (tail, status) in cases {
        let (got, text) = raw_get(&relay, &format!("{prefix}/{tail}"), &auth).await;
        assert_eq!(got, status, "{tail}: {text}");
        for secret in ["TOP-SECRET", "GIT-SECRET", "CLAUDE-SECRET"] {
            assert!(!text.contains(secret), "{tail} leaked {secret}");
        }
    }
    // A literal `..` in the id positions is not an id.
    let (got, _) = raw_get(&relay, &format!("/game/{user}/../secret.txt"), &auth).await;
    assert_eq!(got, 400);
    // A link that stays inside the project is followed.
    let (got, text) = raw_get(&relay, &format!("{prefix}/alias.js"), &auth).await;
    assert_eq!(got, 200);
    assert!(text.ends_with("ok();"), "{text}");

    assert_eq!(listing(&users), before, "nothing is written");
}

// --- Modal get_file --------------------------------------------------------------------------

#[tokio::test]
async fn modal_backend_serves_files_from_get_file() {
    let fake = FakeGetFile::start().await;
    let relay = start(&[
        ("USE_MODAL", "true"),
        ("MODAL_ENDPOINT", fake.url.as_str()),
        ("MODAL_INTERNAL_SECRET", fake.secret.as_str()),
    ])
    .await;
    let (user, project) = user_with_project(&relay).await;
    fake.put(
        user,
        project,
        "index.html",
        b"<html><head></head><body>from modal</body></html>",
    );
    let sound: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    fake.put(user, project, "assets/theme.mp3", &sound);
    // A stale local copy must not win over Modal.
    write(
        &relay.workspace(user, project).join("index.html"),
        b"<html><head></head><body>stale local</body></html>",
    );

    let signed = game_url(&relay, user, project).await;
    let page = http()
        .get(format!("{}{signed}", base(&relay)))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()[header::CACHE_CONTROL], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.starts_with("<html><head><script>"), "{html}");
    assert!(html.ends_with("<body>from modal</body></html>"));

    let prefix = format!("{}/game/{user}/{project}", base(&relay));
    let audio = http()
        .get(format!("{prefix}/assets/theme.mp3"))
        .header(header::REFERER, format!("{}{signed}", base(&relay)))
        .send()
        .await
        .unwrap();
    assert_eq!(audio.status(), 200);
    assert_eq!(audio.headers()[header::CONTENT_TYPE], "audio/mpeg");
    assert_eq!(audio.headers()[header::CACHE_CONTROL], "no-cache");
    assert_eq!(audio.bytes().await.unwrap().as_ref(), sound.as_slice());

    let missing = http()
        .get(format!("{prefix}/gone.js"))
        .bearer_auth(token(user, 600))
        .send()
        .await
        .unwrap();
    assert_eq!(
        get_json(missing).await,
        (404, json!({"error": "File not found"}))
    );

    let asked: Vec<(String, String, String)> = fake
        .requests()
        .into_iter()
        .map(|q| {
            (
                q["user_id"].clone(),
                q["project_id"].clone(),
                q["path"].clone(),
            )
        })
        .collect();
    let expect = |path: &str| (user.to_string(), project.to_string(), path.to_string());
    assert_eq!(
        asked,
        vec![
            expect("index.html"),
            expect("assets/theme.mp3"),
            expect("gone.js")
        ]
    );

    // Unsafe paths never reach Modal.
    let auth = vec![("Authorization", format!("Bearer {}", token(user, 600)))];
    let (status, _) = raw_get(
        &relay,
        &format!("/game/{user}/{project}/.git/config"),
        &auth,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(fake.requests().len(), 3);
}

// --- quota -----------------------------------------------------------------------------------

#[tokio::test]
async fn quota_reports_todays_usage_for_the_free_plan() {
    let relay = start(&[]).await;
    let (user, _) = user_with_project(&relay).await;
    let tomorrow = || {
        (chrono::Utc::now().date_naive() + chrono::Duration::days(1))
            .format("%Y-%m-%dT00:00:00.000Z")
            .to_string()
    };
    let asked_on = tomorrow();
    let response = http()
        .get(format!("{}/api/quota", base(&relay)))
        .bearer_auth(token(user, 600))
        .send()
        .await
        .unwrap();
    let (status, mut body) = get_json(response).await;
    assert_eq!(status, 200, "{body}");
    // The request may straddle midnight UTC.
    let reset_at = body["resetAt"].take();
    assert!(
        reset_at == asked_on.as_str() || reset_at == tomorrow().as_str(),
        "{reset_at}"
    );
    assert_eq!(
        body,
        json!({
            "projects": {"used": 1, "limit": 3, "remaining": 2},
            "messages": {"used": 0, "limit": 20, "remaining": 20},
            "plan": "free",
            "resetAt": null,
        })
    );
    let anonymous = http()
        .get(format!("{}/api/quota", base(&relay)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        get_json(anonymous).await,
        (401, json!({"error": "No access token provided"}))
    );
}

// --- legacy forwarding -----------------------------------------------------------------------

/// What the echo upstream saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    uri: String,
    headers: axum::http::HeaderMap,
}

/// An upstream that answers 201 with the request body streamed back, a few headers of its
/// own, and a redirect on `/api/moved`.
async fn echo_upstream() -> (String, Arc<Mutex<Vec<Seen>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |request: Request| {
        let log = Arc::clone(&log);
        async move {
            let (parts, body) = request.into_parts();
            log.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                headers: parts.headers.clone(),
            });
            if parts.uri.path() == "/api/moved" {
                return Response::builder()
                    .status(302)
                    .header("location", "/api/elsewhere")
                    .body(Body::empty())
                    .unwrap();
            }
            let mut response = Body::from_stream(body.into_data_stream()).into_response();
            *response.status_mut() = axum::http::StatusCode::CREATED;
            let headers = response.headers_mut();
            headers.insert("x-upstream", "echo".parse().unwrap());
            headers.append("set-cookie", "a=1".parse().unwrap());
            headers.append("set-cookie", "b=2".parse().unwrap());
            response
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), seen, server)
}

#[tokio::test]
async fn other_api_routes_are_forwarded_to_the_legacy_server() {
    let (upstream, seen, server) = echo_upstream().await;
    let relay = start(&[("LEGACY_UPSTREAM_URL", upstream.as_str())]).await;

    // A body sent in chunks comes back whole.
    let chunks: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 4096]).collect();
    let expected: Vec<u8> = chunks.concat();
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    let response = http()
        .post(format!(
            "{}/api/assets/upload?projectId=p1&x=%20y",
            base(&relay)
        ))
        .bearer_auth("legacy-token")
        .header("x-custom", "kept")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-upstream"], "echo");
    let cookies: Vec<_> = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        expected.as_slice()
    );

    let first = seen.lock().unwrap()[0].clone();
    assert_eq!(first.method, "POST");
    assert_eq!(first.uri, "/api/assets/upload?projectId=p1&x=%20y");
    assert_eq!(first.headers["authorization"], "Bearer legacy-token");
    assert_eq!(first.headers["x-custom"], "kept");
    assert_eq!(first.headers["content-type"], "application/octet-stream");
    assert_eq!(first.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(first.headers["x-forwarded-proto"], "http");
    assert_eq!(first.headers["x-forwarded-host"], relay.addr.to_string());

    // A body with a length keeps it.
    let sized = http()
        .put(format!("{}/api/assets/a1", base(&relay)))
        .json(&json!({"name": "hero"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sized.status(), 201);
    assert_eq!(sized.text().await.unwrap(), r#"{"name":"hero"}"#);
    assert_eq!(seen.lock().unwrap()[1].headers["content-length"], "15");

    // Redirects go back to the browser untouched; other methods pass as they are.
    let moved = http()
        .delete(format!("{}/api/moved", base(&relay)))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 302);
    assert_eq!(moved.headers()[header::LOCATION], "/api/elsewhere");
    assert_eq!(seen.lock().unwrap()[2].method, "DELETE");

    // The relay's own routes are not forwarded, nor are dot segments.
    let quota = http()
        .get(format!("{}/api/quota", base(&relay)))
        .send()
        .await
        .unwrap();
    assert_eq!(quota.status(), 401);
    let (status, _) = raw_get(&relay, "/api/../admin/secret", &[]).await;
    assert_eq!(status, 404);
    assert_eq!(seen.lock().unwrap().len(), 3);

    // An upstream that went away is a 502.
    server.abort();
    let _ = server.await;
    let down = http()
        .get(format!("{}/api/users/me", base(&relay)))
        .send()
        .await
        .unwrap();
    assert_eq!(get_json(down).await, (502, json!({"error": "Bad gateway"})));
}

#[tokio::test]
async fn other_api_routes_are_404_json_without_a_legacy_server() {
    let relay = start(&[]).await;
    for path in [
        "/api/users/me",
        "/api/assets/search?q=x",
        "/api/push/vapid-key",
    ] {
        let response = http()
            .get(format!("{}{path}", base(&relay)))
            .send()
            .await
            .unwrap();
        assert_eq!(
            get_json(response).await,
            (404, json!({"error": "Not found"})),
            "{path}"
        );
    }
}

// --- static frontend -------------------------------------------------------------------------

#[tokio::test]
async fn public_dir_is_served_with_clean_urls() {
    let public = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("create.html", "CREATE PAGE"),
        ("editor.html", "EDITOR PAGE"),
        ("index.html", "LOGIN PAGE"),
        ("app.js", "APP JS"),
    ] {
        write(&public.path().join(file), text.as_bytes());
    }
    let dir = public.path().display().to_string();
    let relay = start(&[("PUBLIC_DIR", dir.as_str())]).await;
    let get = |path: String| {
        let url = format!("{}{path}", base(&relay));
        async move { http().get(url).send().await.unwrap() }
    };

    for (path, text) in [
        ("/".to_string(), "CREATE PAGE"),
        ("/create".to_string(), "CREATE PAGE"),
        (format!("/project/{}", Uuid::new_v4()), "EDITOR PAGE"),
        ("/login".to_string(), "LOGIN PAGE"),
    ] {
        let response = get(path.clone()).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html",
            "{path}"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(response.text().await.unwrap(), text);
    }
    let script = get("/app.js".into()).await;
    assert_eq!(script.status(), 200);
    assert_eq!(script.text().await.unwrap(), "APP JS");
    let moved = get("/create.html?lang=ja".into()).await;
    assert_eq!(moved.status(), 301);
    assert_eq!(moved.headers()[header::LOCATION], "/create?lang=ja");

    // `/` still upgrades to the WebSocket.
    let mut client = relay.user(Uuid::new_v4()).await;
    client.send(json!({"type": "ping"})).await;
    assert_eq!(client.recv().await["type"], "pong");
}

#[tokio::test]
async fn no_clean_urls_without_public_dir() {
    let relay = start(&[]).await;
    for path in ["/create", "/project/x"] {
        let response = http()
            .get(format!("{}{path}", base(&relay)))
            .send()
            .await
            .unwrap();
        assert_eq!(
            get_json(response).await,
            (404, json!({"error": "Not found"}))
        );
    }
}
