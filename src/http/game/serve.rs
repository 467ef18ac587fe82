//! Serving a game file once access is granted: from the local workspace (local CLI backend)
//! or Modal `get_file`, with content type, caching headers and, for `index.html`, the
//! preview script.

use std::io;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::access::{authorize, Signed};
use super::inject::inject_script;
use super::paths::{is_html, open_beneath, split_path};
use super::GameState;
use crate::backend::BackendKind;
use crate::http::rest::{self, json_error};
use crate::state::AppState;

pub(super) async fn serve(
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
    if let Err(refused) = authorize(app, &headers, &signed, user_id, project_id, &path).await {
        return refused;
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

/// A local file opened for serving.
enum Local {
    /// `index.html`, read whole for the script injection.
    Page(String),
    File(std::fs::File, u64),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a/b.png"), "image/png");
        assert_eq!(content_type("data.json"), "application/json; charset=utf-8");
        assert_eq!(content_type("blob.unknownext"), "application/octet-stream");
    }
}
