//! `thumbnail.webp`, else `thumbnail.png`, to anyone: the create page's `<img>` tags send
//! no token.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{respond, with_length, EditorState};
use crate::backend::project_files::{FileBody, ProjectPath};
use crate::http::rest::parse_uuid;

/// In the order they are looked for.
const THUMBNAILS: [(ProjectPath, &str); 2] = [
    (ProjectPath::THUMBNAIL_WEBP, "image/webp"),
    (ProjectPath::THUMBNAIL_PNG, "image/png"),
];

/// 404 `Not found`, never cached: a thumbnail may be generated a minute later.
fn no_thumbnail() -> Response {
    let mut response = respond(
        "text/plain; charset=utf-8",
        "no-store",
        Body::from("Not found"),
    );
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

pub(super) async fn thumbnail(
    State(state): State<EditorState>,
    Path(project_id): Path<String>,
) -> Response {
    let Some(project_id) = parse_uuid(&project_id) else {
        return no_thumbnail();
    };
    // Public: the owner comes from the project row, not from a token.
    let owner = match state.app.store.project_owner(project_id).await {
        Ok(Some(owner)) => owner,
        Ok(None) => return no_thumbnail(),
        Err(e) => {
            tracing::error!(error = %e, %project_id, "thumbnail owner lookup failed");
            return no_thumbnail();
        }
    };
    let Ok(files) = state.files() else {
        return no_thumbnail();
    };
    for (path, content_type) in &THUMBNAILS {
        match files.open(owner, project_id, path).await {
            Ok(Some(FileBody { length, bytes })) => {
                return with_length(
                    respond(content_type, "no-cache", Body::from_stream(bytes)),
                    length,
                )
            }
            Ok(None) => continue,
            // Upstream hides every failure of this public route behind the same 404.
            Err(e) => {
                tracing::warn!(error = %e, %project_id, "thumbnail unavailable");
                return no_thumbnail();
            }
        }
    }
    no_thumbnail()
}
