//! `GET /game/<userId>/<projectId>/<path>`: the files of a project for the editor's preview
//! iframe, from the local workspace (local CLI backend) or Modal `get_file`.
//!
//! Access (ws-protocol §8): a valid `sig`+`exp` pair or the owner's token opens any file; a
//! Referer inside the same `/game/<userId>/<projectId>/` folder of this host opens the
//! non-HTML files the page loads. `index.html` gets a script that sets `ASSET_BASE_URL` and
//! reports errors and the load to the editor (`gameError` / `gameLoaded`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use uuid::Uuid;

use super::rest::{self, json_error, SignatureError};
use crate::backend::BackendKind;
use crate::state::AppState;

/// Longest a single `get_file` read may stall; files are small and Modal answers quickly.
const MODAL_READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct GameState {
    app: AppState,
    http: reqwest::Client,
}

pub(super) fn routes(app: &AppState) -> Router<AppState> {
    let http = reqwest::Client::builder()
        .connect_timeout(app.config.modal.connect_timeout())
        .read_timeout(MODAL_READ_TIMEOUT)
        .build()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "get_file client with timeouts unavailable; using defaults");
            reqwest::Client::new()
        });
    let state = GameState {
        app: app.clone(),
        http,
    };
    Router::new()
        .route("/game/{user_id}/{project_id}/", get(serve))
        .route("/game/{user_id}/{project_id}/{*path}", get(serve))
        .with_state(state)
}

#[derive(Deserialize)]
struct Signed {
    sig: Option<String>,
    exp: Option<String>,
}

/// The raw path split into its ids and the file's decoded segments.
struct GamePath<'a> {
    user: &'a str,
    project: &'a str,
    /// `None` when the tail is not a safe relative path.
    file: Option<String>,
}

fn split_path(raw: &str) -> Option<GamePath<'_>> {
    let rest = raw.strip_prefix("/game/")?;
    let mut parts = rest.splitn(3, '/');
    let user = parts.next()?;
    let project = parts.next()?;
    let file = match parts.next().unwrap_or("") {
        "" => Some("index.html".to_string()),
        tail => safe_relative_path(tail),
    };
    Some(GamePath {
        user,
        project,
        file,
    })
}

/// Decode a URL tail into a relative path made only of plain segments: no `.`/`..`, no
/// hidden names (`.git`, `.claude`), no empty segment (so nothing absolute), and no
/// separator, backslash or NUL smuggled in through percent-encoding.
fn safe_relative_path(tail: &str) -> Option<String> {
    let mut segments = Vec::new();
    for raw in tail.split('/') {
        let segment = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .ok()?;
        let bad =
            segment.is_empty() || segment.starts_with('.') || segment.contains(['/', '\\', '\0']);
        if bad {
            return None;
        }
        segments.push(segment.into_owned());
    }
    Some(segments.join("/"))
}

fn is_html(file: &str) -> bool {
    let lower = file.to_ascii_lowercase();
    lower.ends_with(".html") || lower.ends_with(".htm")
}

/// The page that loaded this file lives in the same project folder on this host.
fn referer_in_folder(headers: &HeaderMap, user: &str, project: &str) -> bool {
    let Some(referer) = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| reqwest::Url::parse(v).ok())
    else {
        return false;
    };
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    let referer_authority = match (referer.host_str(), referer.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return false,
    };
    host.is_some_and(|h| h.eq_ignore_ascii_case(&referer_authority))
        && referer
            .path()
            .starts_with(&format!("/game/{user}/{project}/"))
}

async fn serve(
    State(state): State<GameState>,
    uri: Uri,
    query: Result<Query<Signed>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Some(path) = split_path(uri.path()) else {
        return json_error(StatusCode::BAD_REQUEST, "Invalid file path");
    };
    let (Some(user_id), Some(project_id)) =
        (rest::parse_uuid(path.user), rest::parse_uuid(path.project))
    else {
        return json_error(StatusCode::BAD_REQUEST, "Invalid ID format");
    };
    let signed = query.map(|Query(q)| q).unwrap_or(Signed {
        sig: None,
        exp: None,
    });

    let app = &state.app;
    if let (Some(sig), Some(exp)) = (signed.sig.as_deref(), signed.exp.as_deref()) {
        let verdict = match rest::signing_key(&app.config) {
            Some(key) => rest::verify_signature(key, user_id, project_id, sig, exp),
            None => Err(SignatureError::Invalid),
        };
        match verdict {
            Ok(()) => {}
            Err(SignatureError::Expired) => {
                return json_error(StatusCode::FORBIDDEN, "URL expired")
            }
            Err(SignatureError::Invalid) => {
                return json_error(StatusCode::FORBIDDEN, "Invalid signature")
            }
        }
    } else if let Ok(who) = rest::authenticate(app, &headers).await {
        if who.user_id != user_id {
            return json_error(StatusCode::FORBIDDEN, "Access denied");
        }
    } else if referer_in_folder(&headers, path.user, path.project) {
        // A Referer is easy to forge outside a browser: never enough for a page.
        if path.file.as_deref().is_some_and(is_html) {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "Authentication required for HTML files",
            );
        }
    } else {
        return json_error(StatusCode::UNAUTHORIZED, "Authentication required");
    }

    let Some(file) = path.file else {
        return json_error(StatusCode::BAD_REQUEST, "Invalid file path");
    };
    let inject = file == "index.html";
    let from_modal = app.selector.pick().map(|b| b.kind()).ok() == Some(BackendKind::Modal);
    let body = if from_modal {
        modal_file(&state, user_id, project_id, &file, inject).await
    } else {
        local_file(app, user_id, project_id, &file, inject).await
    };
    match body {
        Ok((body, length)) => file_response(&file, body, length),
        Err(response) => response,
    }
}

fn file_response(file: &str, body: Body, length: Option<u64>) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type(file));
    // A regenerated game keeps its file names: nothing may be reused without asking.
    let cache = if is_html(file) {
        "no-store"
    } else {
        "no-cache"
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

fn content_type(file: &str) -> HeaderValue {
    let mime = mime_guess::from_path(file).first_or_octet_stream();
    let textual = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.essence_str(),
            "application/javascript" | "application/json" | "image/svg+xml"
        );
    let value = if textual {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.essence_str().to_string()
    };
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "File not found")
}

// --- local workspace -----------------------------------------------------------------------

async fn local_file(
    app: &AppState,
    user_id: Uuid,
    project_id: Uuid,
    file: &str,
    inject: bool,
) -> Result<(Body, Option<u64>), Response> {
    // The local CLI backend's layout: <DATA_DIR>/users/<user>/projects/<project>.
    let root =
        crate::backend::local_cli::project_dir(&app.config.server.data_dir, user_id, project_id);
    let relative = PathBuf::from(file);
    let opened = tokio::task::spawn_blocking(move || -> io::Result<Local> {
        let (mut handle, length) = open_beneath(&root, &relative)?;
        if !inject {
            return Ok(Local::File(handle, length));
        }
        let mut raw = Vec::new();
        io::Read::read_to_end(&mut handle, &mut raw)?;
        Ok(Local::Page(String::from_utf8_lossy(&raw).into_owned()))
    })
    .await;
    match opened {
        Ok(Ok(Local::Page(html))) => {
            let page = inject_script(&html);
            let length = page.len() as u64;
            Ok((Body::from(page), Some(length)))
        }
        Ok(Ok(Local::File(handle, length))) => {
            let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(handle));
            Ok((Body::from_stream(stream), Some(length)))
        }
        Ok(Err(e)) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!(error = %e, file, "game file refused");
            }
            Err(not_found())
        }
        Err(e) => {
            tracing::error!(error = %e, "game file task failed");
            Err(json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error",
            ))
        }
    }
}

enum Local {
    /// `index.html`, read whole for the script injection.
    Page(String),
    File(std::fs::File, u64),
}

/// Open `relative` inside `root` for reading, following symbolic links only while they stay
/// inside `root` and lead to a visible regular file. Every refusal is `NotFound`, so nothing
/// tells a caller what lies outside.
fn open_beneath(root: &Path, relative: &Path) -> io::Result<(std::fs::File, u64)> {
    let outside = || io::Error::new(io::ErrorKind::NotFound, "outside the workspace");
    let root = root.canonicalize()?;
    let target = root.join(relative).canonicalize()?;
    let inside = target.strip_prefix(&root).map_err(|_| outside())?;
    let hidden = inside
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
    if hidden {
        return Err(outside());
    }
    let handle = std::fs::File::open(&target)?;
    let meta = handle.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "not a file"));
    }
    // A directory swapped for a link between the check and the open is caught here: the
    // kernel names the file actually opened.
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", handle.as_raw_fd()))?;
        if !opened.starts_with(&root) {
            return Err(outside());
        }
    }
    Ok((handle, meta.len()))
}

// --- Modal get_file ------------------------------------------------------------------------

async fn modal_file(
    state: &GameState,
    user_id: Uuid,
    project_id: Uuid,
    file: &str,
    inject: bool,
) -> Result<(Body, Option<u64>), Response> {
    let modal = &state.app.config.modal;
    let failed = |detail: String| {
        tracing::warn!(%detail, file, "Modal get_file failed");
        json_error(StatusCode::BAD_GATEWAY, "Failed to fetch file from Modal")
    };
    let response = state
        .http
        .get(modal.endpoint_for("get_file"))
        .query(&[
            ("user_id", user_id.to_string()),
            ("project_id", project_id.to_string()),
            ("path", file.to_string()),
        ])
        .header("X-Modal-Secret", modal.secret.expose())
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    match response.status() {
        s if s.is_success() => {}
        reqwest::StatusCode::NOT_FOUND => return Err(not_found()),
        s => return Err(failed(format!("status {s}"))),
    }
    if inject {
        let raw = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        let page = inject_script(&String::from_utf8_lossy(&raw));
        let length = page.len() as u64;
        return Ok((Body::from(page), Some(length)));
    }
    let length = response.content_length();
    Ok((Body::from_stream(response.bytes_stream()), length))
}

// --- the injected script -------------------------------------------------------------------

/// Sets the asset base and reports to the editor, which listens for
/// `{type:"gameError", errors}` and `{type:"gameLoaded", success, errorCount, errors}` with
/// errors shaped `{type, message, file?, line?, column?, stack?}`.
const PREVIEW_SCRIPT: &str = r#"<script>
(function () {
  "use strict";
  window.ASSET_BASE_URL = window.location.origin;
  var MAX = 10;
  var errors = [];
  function tell(message) {
    try { window.parent.postMessage(message, "*"); } catch (ignored) {}
  }
  function keep(entry) {
    if (errors.length >= MAX) { return; }
    errors.push(entry);
    tell({ type: "gameError", errors: errors });
  }
  function describe(value) {
    if (value instanceof Error) { return value.message; }
    if (typeof value === "object" && value !== null) {
      try { return JSON.stringify(value); } catch (ignored) { return "[Object]"; }
    }
    return String(value);
  }
  function shortName(url) {
    // The page's own address carries the signature: report the bare file name only.
    return url ? String(url).split(/[?#]/)[0].split("/").pop() : "unknown";
  }
  window.addEventListener("error", function (event) {
    var error = event.error;
    keep({
      type: "error",
      message: event.message || describe(error),
      file: shortName(event.filename),
      line: event.lineno,
      column: event.colno,
      stack: error && error.stack ? String(error.stack) : null
    });
  });
  window.addEventListener("unhandledrejection", function (event) {
    var reason = event.reason;
    keep({
      type: "unhandledrejection",
      message: reason ? (reason.message || String(reason)) : "Unknown promise rejection",
      stack: reason && reason.stack ? String(reason.stack) : null
    });
  });
  var consoleError = console.error;
  console.error = function () {
    var parts = [];
    for (var i = 0; i < arguments.length; i++) { parts.push(describe(arguments[i])); }
    keep({ type: "console.error", message: parts.join(" ") });
    return consoleError.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    setTimeout(function () {
      tell({ type: "gameLoaded", success: errors.length === 0, errorCount: errors.length, errors: errors });
    }, 500);
  });
})();
</script>
"#;

/// Byte offset just after the opening tag `<name ...>` (ASCII case-insensitive), if any.
fn after_open_tag(html: &str, name: &str) -> Option<usize> {
    let lower = html.to_ascii_lowercase();
    let needle = format!("<{name}");
    let mut from = 0;
    while let Some(found) = lower[from..].find(&needle) {
        let start = from + found;
        let next = lower.as_bytes().get(start + needle.len()).copied();
        // `<head>` or `<head lang=..>`, not `<header>`.
        if matches!(next, Some(b'>' | b'/')) || next.is_some_and(|b| b.is_ascii_whitespace()) {
            return lower[start..].find('>').map(|end| start + end + 1);
        }
        from = start + needle.len();
    }
    None
}

/// Insert the script as early as possible without pushing the page out of standards mode:
/// into `<head>`, else after `<html>`, else after the doctype, else at the very top.
fn inject_script(html: &str) -> String {
    let at = after_open_tag(html, "head")
        .or_else(|| after_open_tag(html, "html"))
        .or_else(|| after_open_tag(html, "!doctype"))
        .unwrap_or(0);
    let mut page = String::with_capacity(html.len() + PREVIEW_SCRIPT.len());
    page.push_str(&html[..at]);
    page.push_str(PREVIEW_SCRIPT);
    page.push_str(&html[at..]);
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass() {
        assert_eq!(safe_relative_path("js/game.js"), Some("js/game.js".into()));
        assert_eq!(
            safe_relative_path("assets/my%20sprite.png"),
            Some("assets/my sprite.png".into())
        );
    }

    #[test]
    fn traversal_and_hidden_paths_are_refused() {
        for tail in [
            "..",
            "../secret",
            "a/../../b",
            "%2e%2e/x",
            "%2E%2E%2Fx",
            "a%2Fb",
            "a%5cb",
            "a\\b",
            "a%00b",
            ".git/config",
            "sub/.claude/settings.json",
            "./index.html",
            "a//b",
            "/etc/passwd",
            "%ff",
        ] {
            assert_eq!(safe_relative_path(tail), None, "{tail}");
        }
    }

    #[test]
    fn split_defaults_to_index() {
        let path = split_path("/game/u/p/").unwrap();
        assert_eq!((path.user, path.project), ("u", "p"));
        assert_eq!(path.file, Some("index.html".into()));
    }

    #[test]
    fn script_goes_into_head() {
        let page =
            inject_script("<!DOCTYPE html><html><HEAD lang=\"ja\"><title>x</title></head></html>");
        assert!(
            page.starts_with("<!DOCTYPE html><html><HEAD lang=\"ja\"><script>"),
            "{page}"
        );
        let page = inject_script("<!doctype html><header>h</header>");
        assert!(page.starts_with("<!doctype html><script>"), "{page}");
        let page = inject_script("<p>bare</p>");
        assert!(page.starts_with("<script>") && page.ends_with("<p>bare</p>"));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a/b.png"), "image/png");
        assert_eq!(content_type("data.json"), "application/json; charset=utf-8");
        assert_eq!(content_type("blob.unknownext"), "application/octet-stream");
    }
}
