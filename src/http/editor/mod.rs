//! The editor's project-file routes (docs/protocol.md §8), on whichever backend keeps the
//! project's files:
//!
//! - `GET /api/projects/:id/code`: `{code}`, the game's `index.html` (owner only);
//! - `GET /api/projects/:id/download`: `index.html` and `assets/` as `game.zip`, streamed
//!   while the files are read (owner only);
//! - `GET /api/projects/:id/preview`: the game's `index.html` as a page (owner only);
//! - `GET /api/projects/:id/thumbnail`: `thumbnail.webp`, else `thumbnail.png` (public, for
//!   `<img>` tags that send no token).
//!
//! Ownership answers as upstream's row-level-secured lookup does: someone else's project
//! and no project at all are the same 404 `{"error":"Project not found"}`.

mod access;
mod download;
mod index;
mod thumbnail;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::rest::json_error;
use crate::backend::project_files::{FilesError, Readers};
use crate::state::AppState;

/// What the routes share: the caller checks, and a reader for each backend.
#[derive(Clone)]
struct EditorState {
    app: AppState,
    readers: Arc<Readers>,
}

pub(super) fn routes(app: &AppState, readers: Arc<Readers>) -> Router<AppState> {
    let state = EditorState {
        app: app.clone(),
        readers,
    };
    Router::new()
        .route("/api/projects/{project_id}/code", get(index::code))
        .route(
            "/api/projects/{project_id}/download",
            get(download::download),
        )
        .route("/api/projects/{project_id}/preview", get(index::preview))
        .route(
            "/api/projects/{project_id}/thumbnail",
            get(thumbnail::thumbnail),
        )
        .with_state(state)
}

fn internal_error() -> Response {
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
}

fn files_error(error: FilesError) -> Response {
    match error {
        FilesError::Modal { .. } => {
            tracing::warn!(error = %error, "project files unavailable");
            json_error(StatusCode::BAD_GATEWAY, "Failed to fetch file from Modal")
        }
        FilesError::ListTooLarge { .. } | FilesError::Io(_) => {
            tracing::error!(error = %error, "project files unreadable");
            internal_error()
        }
    }
}

/// `body` with its type and caching (`nosniff` is added to every answer of the relay).
fn respond(content_type: &'static str, cache: &'static str, body: Body) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

fn with_length(mut response: Response, length: Option<u64>) -> Response {
    if let Some(length) = length {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}
