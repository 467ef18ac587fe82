//! Serving a game file once access is granted: from the local workspace (local CLI backend)
//! or Modal `get_file`, with content type, caching headers and, for `index.html`, the
//! preview script.

use std::io;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::access::{authorize, Signed};
use super::inject::inject_script;
use super::kinds::is_html;
use super::paths::split_path;
use super::GameState;
use crate::backend::project_files::{ByteStream, FilesError, ProjectPath};
use crate::backend::BackendKind;
use crate::http::rest::{self, json_error};

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

    let Some(file) = path.file.as_deref().and_then(ProjectPath::parse) else {
        return json_error(StatusCode::BAD_REQUEST, "Invalid file path");
    };
    let backend = app.selector.pick().map(|b| b.kind()).ok();
    let Some(files) = state.readers.for_backend(backend) else {
        return modal_failed();
    };
    match files.open(user_id, project_id, &file).await {
        Ok(Some(opened)) if file == ProjectPath::INDEX => match read_page(opened.bytes).await {
            Ok(page) => {
                let page = inject_script(&page);
                let length = page.len() as u64;
                file_response(file.as_str(), Body::from(page), Some(length))
            }
            Err(e) if backend == Some(BackendKind::Modal) => {
                tracing::warn!(error = %e, "game page unreadable");
                modal_failed()
            }
            Err(e) => {
                tracing::error!(error = %e, "game page unreadable");
                internal_error()
            }
        },
        Ok(Some(opened)) => file_response(
            file.as_str(),
            Body::from_stream(opened.bytes),
            opened.length,
        ),
        Ok(None) => json_error(StatusCode::NOT_FOUND, "File not found"),
        Err(FilesError::Modal { .. }) => modal_failed(),
        Err(e) => {
            tracing::error!(error = %e, file = %file, "game file unreadable");
            internal_error()
        }
    }
}

fn internal_error() -> Response {
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
}

fn modal_failed() -> Response {
    json_error(StatusCode::BAD_GATEWAY, "Failed to fetch file from Modal")
}

/// The whole page, for the script injection; bytes that are not UTF-8 become U+FFFD.
async fn read_page(mut bytes: ByteStream) -> io::Result<String> {
    let mut raw = Vec::new();
    while let Some(chunk) = bytes.next().await {
        raw.extend_from_slice(&chunk?);
    }
    Ok(String::from_utf8_lossy(&raw).into_owned())
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
