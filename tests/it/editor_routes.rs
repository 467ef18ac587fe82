//! The editor's project-file routes on a real relay over real HTTP, on both backends: the
//! local workspace and a fake Modal `list_files` / `get_file`. `/code`, `/download` and
//! `/preview` answer the owner only; `/thumbnail` anyone. Zips are checked by unzipping them.

use crate::support::fake_get_file;
use crate::support::relay;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use fake_get_file::{Failure, FakeGetFile};
use relay::{TestRelay, WAIT};
use reqwest::header;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const PAGE: &str = "<!DOCTYPE html>\n<html><head><title>\"猫\" \\ game</title></head>\n<body>\t<script>let s = 'x';</script></body></html>\n";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A relay on the fake Modal's file endpoints (`USE_MODAL=true`).
async fn modal_relay(fake: &FakeGetFile, extra: &[(&str, &str)]) -> TestRelay {
    TestRelay::start_modal(&fake.url, &fake.secret, extra).await
}

/// A user with one project created over the WebSocket, and the user's token.
async fn user_with_project(relay: &TestRelay) -> (Uuid, Uuid, String) {
    let user = Uuid::new_v4();
    let mut client = relay.user(user).await;
    let project = client.create_project("Game").await;
    client.close().await;
    (user, project, relay.token_for(user).await)
}

async fn get(relay: &TestRelay, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = http().get(format!("http://{}{path}", relay.addr));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn text_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn header_of(response: &reqwest::Response, name: header::HeaderName) -> &str {
    response
        .headers()
        .get(&name)
        .map_or("", |v| v.to_str().unwrap())
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Bytes no compressor shrinks much, so the zip really carries them.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// Every entry of a zip, by name.
fn unzip(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    let mut entries = BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let mut content = Vec::new();
        file.read_to_end(&mut content).unwrap();
        entries.insert(file.name().unwrap().to_string(), content);
    }
    entries
}

/// The status of a request sent byte for byte as given: no client normalises the path.
async fn raw_status(relay: &TestRelay, path: &str, token: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
        relay.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {reply:?}"))
}

const GET_FILE_FAILURES: &str = "relay_modal_call_failures_total{endpoint=\"get_file\"}";
const LIST_FILES_FAILURES: &str = "relay_modal_call_failures_total{endpoint=\"list_files\"}";

/// The value of one series in a `/metrics` text, 0 when absent.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

// --- local workspace -------------------------------------------------------------------------

#[tokio::test]
async fn code_gives_the_owner_index_html_as_json() {
    let relay = TestRelay::start(&[]).await;
    let (user, project, token) = user_with_project(&relay).await;
    write(
        &relay.workspace(user, project).join("index.html"),
        PAGE.as_bytes(),
    );

    let response = get(
        &relay,
        &format!("/api/projects/{project}/code"),
        Some(&token),
    )
    .await;
    assert_eq!(
        header_of(&response, header::CONTENT_TYPE),
        "application/json"
    );
    assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-store");
    assert_eq!(
        header_of(&response, header::X_CONTENT_TYPE_OPTIONS),
        "nosniff"
    );
    assert_eq!(json_of(response).await, (200, json!({ "code": PAGE })));

    // Bytes that are not UTF-8 arrive as U+FFFD, like a UTF-8 read of the file.
    write(
        &relay.workspace(user, project).join("index.html"),
        b"<p>\xff\xfe</p>",
    );
    let response = get(
        &relay,
        &format!("/api/projects/{project}/code"),
        Some(&token),
    )
    .await;
    assert_eq!(
        json_of(response).await,
        (200, json!({ "code": "<p>\u{FFFD}\u{FFFD}</p>" }))
    );
}

#[tokio::test]
async fn preview_serves_the_owner_the_page_unchanged() {
    let relay = TestRelay::start(&[]).await;
    let (user, project, token) = user_with_project(&relay).await;
    write(
        &relay.workspace(user, project).join("index.html"),
        PAGE.as_bytes(),
    );

    let response = get(
        &relay,
        &format!("/api/projects/{project}/preview"),
        Some(&token),
    )
    .await;
    assert_eq!(
        header_of(&response, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-store");
    assert_eq!(text_of(response).await, (200, PAGE.to_string()));
}

#[tokio::test]
async fn download_zips_index_html_and_assets_only() {
    let relay = TestRelay::start(&[]).await;
    let (user, project, token) = user_with_project(&relay).await;
    let root = relay.workspace(user, project);
    let sprite = noise(2 * 1024 * 1024 + 17, 1);
    write(&root.join("index.html"), PAGE.as_bytes());
    write(&root.join("assets/player.png"), &sprite);
    write(&root.join("assets/levels/1.json"), b"{\"w\":3}");
    // Not part of the game download: other top-level files, hidden files anywhere.
    write(&root.join("STYLE.md"), b"style");
    write(&root.join("js/game.js"), b"game()");
    write(&root.join("assets/.cache"), b"hidden");
    write(&root.join(".git/config"), b"[core]");

    let response = get(
        &relay,
        &format!("/api/projects/{project}/download"),
        Some(&token),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header_of(&response, header::CONTENT_TYPE),
        "application/zip"
    );
    assert_eq!(
        header_of(&response, header::CONTENT_DISPOSITION),
        "attachment; filename=\"game.zip\""
    );
    let entries = unzip(&response.bytes().await.unwrap());
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        ["assets/levels/1.json", "assets/player.png", "index.html"]
    );
    assert_eq!(entries["index.html"], PAGE.as_bytes());
    assert_eq!(entries["assets/player.png"], sprite);
    assert_eq!(entries["assets/levels/1.json"], b"{\"w\":3}");
}

#[tokio::test]
async fn thumbnail_is_public_webp_before_png() {
    let relay = TestRelay::start(&[]).await;
    let (user, project, _) = user_with_project(&relay).await;
    let root = relay.workspace(user, project);
    let png = noise(3000, 2);
    let webp = noise(2000, 3);

    let path = format!("/api/projects/{project}/thumbnail");
    let response = get(&relay, &path, None).await;
    assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-store");
    assert_eq!(text_of(response).await, (404, "Not found".to_string()));

    write(&root.join("thumbnail.png"), &png);
    let response = get(&relay, &path, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header_of(&response, header::CONTENT_TYPE), "image/png");
    assert_eq!(response.bytes().await.unwrap(), png);

    write(&root.join("thumbnail.webp"), &webp);
    // Anyone's token, or none, is the same for this route.
    let stranger = relay.token_for(Uuid::new_v4()).await;
    let response = get(&relay, &path, Some(&stranger)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header_of(&response, header::CONTENT_TYPE), "image/webp");
    assert_eq!(response.bytes().await.unwrap(), webp);

    for unknown in [Uuid::new_v4().to_string(), "not-a-project".to_string()] {
        let response = get(&relay, &format!("/api/projects/{unknown}/thumbnail"), None).await;
        assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-store");
        assert_eq!(text_of(response).await, (404, "Not found".to_string()));
    }
}

#[tokio::test]
async fn a_project_without_a_game_has_nothing_to_show() {
    let relay = TestRelay::start(&[]).await;
    let (_, project, token) = user_with_project(&relay).await;
    let at = |route: &str| format!("/api/projects/{project}/{route}");

    let not_found = (404, json!({"error": "Project not found"}));
    assert_eq!(
        json_of(get(&relay, &at("code"), Some(&token)).await).await,
        not_found
    );
    assert_eq!(
        json_of(get(&relay, &at("download"), Some(&token)).await).await,
        not_found
    );
    assert_eq!(
        text_of(get(&relay, &at("preview"), Some(&token)).await).await,
        (404, "Game file not found".to_string())
    );
    let thumbnail = get(&relay, &at("thumbnail"), None).await;
    assert_eq!(header_of(&thumbnail, header::CACHE_CONTROL), "no-store");
    assert_eq!(thumbnail.status(), 404);
}

/// Every owner-only route refuses the same way on `relay`, whose backend holds a game for
/// the project.
async fn owner_only_routes_refuse_everyone_else(relay: &TestRelay, project: Uuid) {
    let stranger = relay.token_for(Uuid::new_v4()).await;
    for route in ["code", "download", "preview"] {
        let path = format!("/api/projects/{project}/{route}");
        assert_eq!(
            json_of(get(relay, &path, None).await).await,
            (401, json!({"error": "No access token provided"})),
            "{route}"
        );
        assert_eq!(
            json_of(get(relay, &path, Some("not.a.token")).await).await,
            (401, json!({"error": "Invalid or expired token"})),
            "{route}"
        );
        // Someone else's project reads exactly like no project at all.
        assert_eq!(
            json_of(get(relay, &path, Some(&stranger)).await).await,
            (404, json!({"error": "Project not found"})),
            "{route}"
        );
        let unknown = format!("/api/projects/{}/{route}", Uuid::new_v4());
        assert_eq!(
            json_of(get(relay, &unknown, Some(&stranger)).await).await,
            (404, json!({"error": "Project not found"})),
            "{route}"
        );
        let malformed = format!("/api/projects/{}/{route}", "0".repeat(36));
        assert_eq!(
            json_of(get(relay, &malformed, Some(&stranger)).await).await,
            (400, json!({"error": "Invalid project ID"})),
            "{route}"
        );
    }
}

#[tokio::test]
async fn owner_only_routes_refuse_other_users_locally() {
    let relay = TestRelay::start(&[]).await;
    let (user, project, token) = user_with_project(&relay).await;
    write(
        &relay.workspace(user, project).join("index.html"),
        PAGE.as_bytes(),
    );
    owner_only_routes_refuse_everyone_else(&relay, project).await;
    // The owner still gets the game.
    let response = get(
        &relay,
        &format!("/api/projects/{project}/code"),
        Some(&token),
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn traversal_and_links_out_of_the_project_are_refused() {
    let relay = TestRelay::start(&[]).await;
    let (user, project, token) = user_with_project(&relay).await;
    let root = relay.workspace(user, project);
    let outside = tempfile::tempdir().unwrap();
    let secret = b"SECRET-OUTSIDE-THE-PROJECT";
    write(&outside.path().join("secret.txt"), secret);
    write(&outside.path().join("dir/inner.png"), secret);

    // Encoded separators and dot segments in the id never name a project.
    for path in [
        "/api/projects/..%2F..%2F..%2Fetc%2Fpasswd/code",
        "/api/projects/%2e%2e/download",
        &format!("/api/projects/{project}%2F..%2F..%2Fx/preview"),
    ] {
        assert_eq!(raw_status(&relay, path, &token).await, 400, "{path}");
    }
    // Dot segments around the route leave it: nothing under /api/projects answers.
    let dotted = format!("/api/projects/{project}/../../../../etc/passwd");
    assert_eq!(raw_status(&relay, &dotted, &token).await, 404);

    // Links inside the workspace that lead out of it read as missing.
    std::fs::create_dir_all(root.join("assets")).unwrap();
    let link =
        |target: &Path, name: &str| std::os::unix::fs::symlink(target, root.join(name)).unwrap();
    link(&outside.path().join("secret.txt"), "index.html");
    link(&outside.path().join("secret.txt"), "thumbnail.png");
    link(&outside.path().join("secret.txt"), "assets/leak.txt");
    link(&outside.path().join("dir"), "assets/dir");
    write(&root.join("assets/ok.txt"), b"inside");

    let at = |route: &str| format!("/api/projects/{project}/{route}");
    assert_eq!(
        json_of(get(&relay, &at("code"), Some(&token)).await).await,
        (404, json!({"error": "Project not found"}))
    );
    assert_eq!(
        text_of(get(&relay, &at("preview"), Some(&token)).await).await,
        (404, "Game file not found".to_string())
    );
    assert_eq!(get(&relay, &at("thumbnail"), None).await.status(), 404);
    let zip = get(&relay, &at("download"), Some(&token)).await;
    assert_eq!(zip.status(), 200);
    let entries = unzip(&zip.bytes().await.unwrap());
    assert_eq!(entries.keys().collect::<Vec<_>>(), ["assets/ok.txt"]);
}

// --- Modal -----------------------------------------------------------------------------------

#[tokio::test]
async fn modal_routes_read_through_list_files_and_get_file() {
    let fake = FakeGetFile::start().await;
    let relay = modal_relay(&fake, &[]).await;
    let (user, project, token) = user_with_project(&relay).await;
    let sound = noise(700_000, 4);
    let png = noise(1500, 5);
    fake.put(user, project, "index.html", PAGE.as_bytes());
    fake.put(user, project, "assets/theme.mp3", &sound);
    fake.put(user, project, "assets/img/cat.png", &png);
    fake.put(user, project, "thumbnail.png", &png);
    fake.put(user, project, "STYLE.md", b"style");
    // A stale local copy must not win over Modal.
    write(
        &relay.workspace(user, project).join("index.html"),
        b"stale local copy",
    );
    let at = |route: &str| format!("/api/projects/{project}/{route}");

    assert_eq!(
        json_of(get(&relay, &at("code"), Some(&token)).await).await,
        (200, json!({ "code": PAGE }))
    );
    let preview = get(&relay, &at("preview"), Some(&token)).await;
    assert_eq!(
        header_of(&preview, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_eq!(text_of(preview).await, (200, PAGE.to_string()));

    let zip = get(&relay, &at("download"), Some(&token)).await;
    assert_eq!(zip.status(), 200);
    assert_eq!(
        header_of(&zip, header::CONTENT_DISPOSITION),
        "attachment; filename=\"game.zip\""
    );
    let entries = unzip(&zip.bytes().await.unwrap());
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        ["assets/img/cat.png", "assets/theme.mp3", "index.html"]
    );
    assert_eq!(entries["assets/theme.mp3"], sound);
    assert_eq!(entries["index.html"], PAGE.as_bytes());

    let thumbnail = get(&relay, &at("thumbnail"), None).await;
    assert_eq!(header_of(&thumbnail, header::CONTENT_TYPE), "image/png");
    assert_eq!(thumbnail.bytes().await.unwrap(), png);

    // Every call named the owner's project; the fake refuses calls without the secret.
    let expected = (user.to_string(), project.to_string());
    for query in fake.requests().iter().chain(&fake.list_requests()) {
        assert_eq!(
            (query["user_id"].clone(), query["project_id"].clone()),
            expected
        );
    }
    assert_eq!(fake.list_requests().len(), 1);

    // The counters are the process's, shared with the other tests running in it.
    let metrics = text_of(get(&relay, "/metrics", None).await).await.1;
    for series in [
        "relay_modal_calls_total{endpoint=\"get_file\"}",
        "relay_modal_calls_total{endpoint=\"list_files\"}",
        "relay_modal_call_duration_seconds_count{endpoint=\"get_file\"}",
        "relay_modal_call_duration_seconds_bucket{endpoint=\"list_files\",le=\"+Inf\"}",
    ] {
        assert!(
            metric(&metrics, series) >= 1,
            "{series} missing from\n{metrics}"
        );
    }
}

#[tokio::test]
async fn owner_only_routes_refuse_other_users_on_modal() {
    let fake = FakeGetFile::start().await;
    let relay = modal_relay(&fake, &[]).await;
    let (user, project, _) = user_with_project(&relay).await;
    fake.put(user, project, "index.html", PAGE.as_bytes());
    owner_only_routes_refuse_everyone_else(&relay, project).await;
    // Refused before Modal is asked anything.
    assert!(fake.requests().is_empty() && fake.list_requests().is_empty());
}

#[tokio::test]
async fn modal_project_without_a_game() {
    let fake = FakeGetFile::start().await;
    let relay = modal_relay(&fake, &[]).await;
    let (_, project, token) = user_with_project(&relay).await;
    let at = |route: &str| format!("/api/projects/{project}/{route}");
    let not_found = (404, json!({"error": "Project not found"}));
    assert_eq!(
        json_of(get(&relay, &at("code"), Some(&token)).await).await,
        not_found
    );
    assert_eq!(
        json_of(get(&relay, &at("download"), Some(&token)).await).await,
        not_found
    );
    assert_eq!(
        text_of(get(&relay, &at("preview"), Some(&token)).await).await,
        (404, "Game file not found".to_string())
    );
    let thumbnail = get(&relay, &at("thumbnail"), None).await;
    assert_eq!(thumbnail.status(), 404);
    assert_eq!(header_of(&thumbnail, header::CACHE_CONTROL), "no-store");
}

#[tokio::test]
async fn modal_failures_are_reported_and_counted() {
    let fake = FakeGetFile::start().await;
    let relay = modal_relay(&fake, &[]).await;
    let (user, project, token) = user_with_project(&relay).await;
    fake.put(user, project, "index.html", PAGE.as_bytes());
    fake.put(user, project, "thumbnail.png", b"png");
    let at = |route: &str| format!("/api/projects/{project}/{route}");
    let bad_gateway = (502, json!({"error": "Failed to fetch file from Modal"}));

    let before = text_of(get(&relay, "/metrics", None).await).await.1;
    fake.fail(Some(Failure::Status(500)));
    assert_eq!(
        json_of(get(&relay, &at("code"), Some(&token)).await).await,
        bad_gateway
    );
    assert_eq!(
        json_of(get(&relay, &at("download"), Some(&token)).await).await,
        bad_gateway
    );
    assert_eq!(
        text_of(get(&relay, &at("preview"), Some(&token)).await).await,
        (502, "Error loading game".to_string())
    );
    // The public thumbnail hides every failure behind one uncached 404.
    let thumbnail = get(&relay, &at("thumbnail"), None).await;
    assert_eq!(thumbnail.status(), 404);
    assert_eq!(header_of(&thumbnail, header::CACHE_CONTROL), "no-store");

    fake.fail(Some(Failure::Garbage));
    assert_eq!(
        json_of(get(&relay, &at("download"), Some(&token)).await).await,
        bad_gateway
    );

    // code, preview and thumbnail (webp) on get_file; the download's 500 and its garbage.
    // Other tests of this process may add to the same counters meanwhile.
    let after = text_of(get(&relay, "/metrics", None).await).await.1;
    for (series, failed) in [(GET_FILE_FAILURES, 3), (LIST_FILES_FAILURES, 2)] {
        assert!(
            metric(&after, series) >= metric(&before, series) + failed,
            "{series}: {} then {}",
            metric(&before, series),
            metric(&after, series)
        );
    }

    fake.fail(None);
    assert_eq!(
        json_of(get(&relay, &at("code"), Some(&token)).await).await,
        (200, json!({ "code": PAGE }))
    );
}

#[tokio::test]
async fn a_stalled_modal_call_ends_at_the_file_timeout() {
    let fake = FakeGetFile::start().await;
    let relay = modal_relay(&fake, &[("MODAL_FILE_TIMEOUT_SECS", "1")]).await;
    let (user, project, token) = user_with_project(&relay).await;
    fake.put(user, project, "index.html", PAGE.as_bytes());
    fake.hold("index.html");

    let started = Instant::now();
    let response = get(
        &relay,
        &format!("/api/projects/{project}/code"),
        Some(&token),
    )
    .await;
    assert_eq!(
        json_of(response).await,
        (502, json!({"error": "Failed to fetch file from Modal"}))
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    fake.release();
}

#[tokio::test]
async fn download_streams_while_files_are_still_being_read() {
    let fake = FakeGetFile::start().await;
    let relay = modal_relay(&fake, &[]).await;
    let (user, project, token) = user_with_project(&relay).await;
    let last = noise(300_000, 6);
    fake.put(user, project, "index.html", PAGE.as_bytes());
    fake.put(user, project, "assets/z-last.bin", &last);
    fake.hold("assets/z-last.bin");

    let mut response = get(
        &relay,
        &format!("/api/projects/{project}/download"),
        Some(&token),
    )
    .await;
    assert_eq!(response.status(), 200);
    // The first entry arrives while Modal still holds the second file back.
    let mut received = Vec::new();
    while received.len() < 30 + "index.html".len() {
        let chunk = tokio::time::timeout(WAIT, response.chunk())
            .await
            .expect("zip bytes before the last file is read")
            .unwrap()
            .expect("more zip");
        received.extend_from_slice(&chunk);
    }
    assert_eq!(&received[..4], b"PK\x03\x04");
    assert_eq!(&received[30..30 + "index.html".len()], b"index.html");
    let asked_for_last = || {
        fake.requests()
            .iter()
            .any(|q| q["path"] == "assets/z-last.bin")
    };
    let deadline = Instant::now() + WAIT;
    while !asked_for_last() {
        assert!(
            Instant::now() < deadline,
            "the last file was never asked for"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    fake.release();
    while let Some(chunk) = tokio::time::timeout(WAIT, response.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        received.extend_from_slice(&chunk);
    }
    let entries = unzip(&received);
    assert_eq!(entries["assets/z-last.bin"], last);
    assert_eq!(entries["index.html"], PAGE.as_bytes());
}
