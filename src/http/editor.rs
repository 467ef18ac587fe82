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

use std::io;
use std::sync::Arc;

use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, ZipDateTimeBuilder, ZipEntryBuilder};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use chrono::{Datelike, Timelike};
use futures::{stream, StreamExt};
use tokio::io::DuplexStream;
use tokio_util::compat::FuturesAsyncWriteCompatExt;
use uuid::Uuid;

use super::rest::{authenticate, json_error, parse_uuid, AuthRejection};
use crate::auth::Identity;
use crate::backend::project_files::{
    ByteStream, FileBody, FilesError, LocalFiles, ModalFiles, ProjectFiles, ProjectPath,
};
use crate::backend::BackendKind;
use crate::state::AppState;

/// Bytes of zip between the task that writes it and the response that sends it: the
/// writer waits while the client has not taken them.
const ZIP_PIPE_BYTES: usize = 64 * 1024;

const INDEX: &str = "index.html";
const ASSETS: &str = "assets";
const THUMBNAILS: [(&str, &str); 2] = [
    ("thumbnail.webp", "image/webp"),
    ("thumbnail.png", "image/png"),
];

#[derive(Clone)]
struct EditorState {
    app: AppState,
    local: Arc<LocalFiles>,
    /// `None` when no Modal client could be built (reported at start-up).
    modal: Option<Arc<ModalFiles>>,
}

pub(super) fn routes(app: &AppState) -> Router<AppState> {
    let list_budget = app.config.limits.file_list_max_bytes;
    let local = LocalFiles::new(app.config.server.data_dir.clone(), list_budget);
    let modal = ModalFiles::new(&app.config.modal, list_budget)
        .map_err(|e| tracing::error!(error = %e, "Modal file client unavailable"))
        .ok();
    let state = EditorState {
        app: app.clone(),
        local: Arc::new(local),
        modal: modal.map(Arc::new),
    };
    Router::new()
        .route("/api/projects/{project_id}/code", get(code))
        .route("/api/projects/{project_id}/download", get(download))
        .route("/api/projects/{project_id}/preview", get(preview))
        .route("/api/projects/{project_id}/thumbnail", get(thumbnail))
        .with_state(state)
}

/// Why a route answers before reading any file.
enum Refusal {
    Auth(AuthRejection),
    BadProjectId,
    /// Not the caller's project, or no project at all.
    NoProject,
    StoreFailed,
    NoModalClient,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Auth(rejection) => rejection.into_response(),
            Self::BadProjectId => json_error(StatusCode::BAD_REQUEST, "Invalid project ID"),
            Self::NoProject => json_error(StatusCode::NOT_FOUND, "Project not found"),
            Self::StoreFailed => internal_error(),
            Self::NoModalClient => {
                json_error(StatusCode::BAD_GATEWAY, "Failed to fetch file from Modal")
            }
        }
    }
}

impl EditorState {
    /// The files of the backend new jobs go to, as the preview routes read them.
    fn files(&self) -> Result<Arc<dyn ProjectFiles>, Refusal> {
        let on_modal = self.app.selector.pick().map(|b| b.kind()).ok() == Some(BackendKind::Modal);
        if !on_modal {
            return Ok(self.local.clone());
        }
        match &self.modal {
            Some(modal) => Ok(modal.clone()),
            None => Err(Refusal::NoModalClient),
        }
    }

    /// The caller and the project id, if the request's token is valid and `raw` names one
    /// of the caller's projects.
    async fn owned(&self, headers: &HeaderMap, raw: &str) -> Result<(Identity, Uuid), Refusal> {
        let who = authenticate(&self.app, headers)
            .await
            .map_err(Refusal::Auth)?;
        let Some(project_id) = parse_uuid(raw) else {
            return Err(Refusal::BadProjectId);
        };
        match self.app.store.get_project(&who, project_id).await {
            Ok(Some(_)) => Ok((who, project_id)),
            Ok(None) => Err(Refusal::NoProject),
            Err(e) => {
                tracing::error!(error = %e, %project_id, "project lookup failed");
                Err(Refusal::StoreFailed)
            }
        }
    }
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

fn index_path() -> ProjectPath {
    ProjectPath::parse(INDEX).unwrap_or_else(|| unreachable!("a plain file name"))
}

/// `body` with the headers every answer of these routes carries.
fn respond(content_type: &'static str, cache: &'static str, body: Body) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
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

// --- code ------------------------------------------------------------------------------------

async fn code(
    State(state): State<EditorState>,
    headers: HeaderMap,
    Path(project_id): Path<String>,
) -> Response {
    let (who, project_id) = match state.owned(&headers, &project_id).await {
        Ok(owned) => owned,
        Err(refusal) => return refusal.into_response(),
    };
    let files = match state.files() {
        Ok(files) => files,
        Err(refusal) => return refusal.into_response(),
    };
    match files.open(who.user_id, project_id, &index_path()).await {
        Ok(Some(file)) => respond(
            "application/json",
            "no-store",
            Body::from_stream(json_code(file.bytes)),
        ),
        // Upstream's text for a project without a game.
        Ok(None) => json_error(StatusCode::NOT_FOUND, "Project not found"),
        Err(e) => files_error(e),
    }
}

/// `{"code": "<the file as a JSON string>"}`, escaped chunk by chunk as the file arrives.
/// Bytes that are not UTF-8 become U+FFFD, as a UTF-8 read of the file would make them.
fn json_code(bytes: ByteStream) -> impl futures::Stream<Item = io::Result<Bytes>> + Send {
    let open = stream::once(async { Ok(Bytes::from_static(b"{\"code\":\"")) });
    let body = stream::unfold(
        (bytes, Vec::new(), false),
        |(mut bytes, mut carry, done)| async move {
            if done {
                return None;
            }
            match bytes.next().await {
                Some(Ok(chunk)) => {
                    let out = escape_chunk(&mut carry, &chunk, false);
                    Some((Ok(Bytes::from(out)), (bytes, carry, false)))
                }
                Some(Err(e)) => Some((Err(e), (bytes, carry, true))),
                None => {
                    let mut out = escape_chunk(&mut carry, &[], true);
                    out.push_str("\"}");
                    Some((Ok(Bytes::from(out)), (bytes, carry, true)))
                }
            }
        },
    );
    open.chain(body)
}

/// JSON-escape `chunk` after the bytes `carry` held back; a UTF-8 sequence cut by the chunk
/// boundary goes back into `carry` unless this is the `last` chunk.
fn escape_chunk(carry: &mut Vec<u8>, chunk: &[u8], last: bool) -> String {
    let mut input = std::mem::take(carry);
    input.extend_from_slice(chunk);
    let mut out = String::with_capacity(input.len() + input.len() / 8);
    let mut rest = input.as_slice();
    loop {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                escape_into(&mut out, text);
                return out;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                escape_into(&mut out, &String::from_utf8_lossy(valid));
                match e.error_len() {
                    Some(bad) => {
                        out.push('\u{FFFD}');
                        rest = &after[bad..];
                    }
                    None if last => {
                        out.push('\u{FFFD}');
                        return out;
                    }
                    None => {
                        *carry = after.to_vec();
                        return out;
                    }
                }
            }
        }
    }
}

/// The inside of a JSON string literal, as `JSON.stringify` writes it.
fn escape_into(out: &mut String, text: &str) {
    use std::fmt::Write;
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

// --- preview ---------------------------------------------------------------------------------

async fn preview(
    State(state): State<EditorState>,
    headers: HeaderMap,
    Path(project_id): Path<String>,
) -> Response {
    let (who, project_id) = match state.owned(&headers, &project_id).await {
        Ok(owned) => owned,
        Err(refusal) => return refusal.into_response(),
    };
    let files = match state.files() {
        Ok(files) => files,
        Err(refusal) => return refusal.into_response(),
    };
    // Upstream answers this route in plain text.
    let text = |status: StatusCode, message: &'static str| {
        let mut response = respond("text/plain; charset=utf-8", "no-store", Body::from(message));
        *response.status_mut() = status;
        response
    };
    match files.open(who.user_id, project_id, &index_path()).await {
        Ok(Some(FileBody { length, bytes })) => with_length(
            respond(
                "text/html; charset=utf-8",
                "no-store",
                Body::from_stream(bytes),
            ),
            length,
        ),
        Ok(None) => text(StatusCode::NOT_FOUND, "Game file not found"),
        Err(e) => {
            tracing::warn!(error = %e, %project_id, "preview unavailable");
            let status = match e {
                FilesError::Modal { .. } => StatusCode::BAD_GATEWAY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            text(status, "Error loading game")
        }
    }
}

// --- thumbnail -------------------------------------------------------------------------------

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

async fn thumbnail(State(state): State<EditorState>, Path(project_id): Path<String>) -> Response {
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
    for (name, content_type) in THUMBNAILS {
        let Some(path) = ProjectPath::parse(name) else {
            continue;
        };
        match files.open(owner, project_id, &path).await {
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

// --- download --------------------------------------------------------------------------------

async fn download(
    State(state): State<EditorState>,
    headers: HeaderMap,
    Path(project_id): Path<String>,
) -> Response {
    let (who, project_id) = match state.owned(&headers, &project_id).await {
        Ok(owned) => owned,
        Err(refusal) => return refusal.into_response(),
    };
    let files = match state.files() {
        Ok(files) => files,
        Err(refusal) => return refusal.into_response(),
    };
    let user_id = who.user_id;
    let listed = match files.list(user_id, project_id).await {
        Ok(listed) => listed,
        Err(e) => return files_error(e),
    };
    // `index.html` first, then the assets in name order (the listing is sorted).
    let entries: Vec<ProjectPath> = listed
        .iter()
        .filter(|p| p.as_str() == INDEX)
        .chain(listed.iter().filter(|p| p.is_under(ASSETS)))
        .cloned()
        .collect();
    if entries.is_empty() {
        return json_error(StatusCode::NOT_FOUND, "Project not found");
    }

    let (sink, source) = tokio::io::duplex(ZIP_PIPE_BYTES);
    let (outcome_tx, outcome_rx) = tokio::sync::oneshot::channel();
    let span = tracing::info_span!("zip", %user_id, %project_id);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let outcome = write_zip(files.as_ref(), user_id, project_id, &entries, sink).await;
            if let Err(e) = &outcome {
                tracing::warn!(error = %e, "zip download cut short");
            }
            // The pipe is closed by now; the response learns whether the end was clean.
            let _ = outcome_tx.send(outcome);
        },
        span,
    ));
    let zip = tokio_util::io::ReaderStream::new(source);
    // A writer that failed turns the end of the pipe into an error, so the client sees an
    // aborted transfer instead of a well-formed but truncated file.
    let verdict = stream::once(async move {
        match outcome_rx.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(Err(e)),
            Err(_) => Some(Err(io::Error::other("zip writer stopped"))),
        }
    })
    .filter_map(std::future::ready);
    let mut response = respond(
        "application/zip",
        "no-store",
        Body::from_stream(zip.chain(verdict)),
    );
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"game.zip\""),
    );
    response
}

/// Write the zip of `entries` into `sink`, one file at a time, each streamed through the
/// compressor. A file that vanished since the listing is left out.
async fn write_zip(
    files: &dyn ProjectFiles,
    user_id: Uuid,
    project_id: Uuid,
    entries: &[ProjectPath],
    sink: DuplexStream,
) -> io::Result<()> {
    let zip_error = |e: async_zip::error::ZipError| io::Error::other(e);
    let now = chrono::Utc::now();
    let modified = ZipDateTimeBuilder::new()
        .year(now.year())
        .month(now.month())
        .day(now.day())
        .hour(now.hour())
        .minute(now.minute())
        .second(now.second())
        .build();
    let mut zip = ZipFileWriter::with_tokio(sink);
    for path in entries {
        let file = match files.open(user_id, project_id, path).await {
            Ok(Some(file)) => file,
            Ok(None) => continue,
            Err(e) => return Err(io::Error::other(e)),
        };
        let entry = ZipEntryBuilder::new(path.as_str().into(), Compression::Deflate)
            .last_modification_date(modified)
            .unix_permissions(0o644);
        let mut writer = zip
            .write_entry_stream(entry)
            .await
            .map_err(zip_error)?
            .compat_write();
        let mut reader = tokio_util::io::StreamReader::new(file.bytes);
        tokio::io::copy(&mut reader, &mut writer).await?;
        writer.into_inner().close().await.map_err(zip_error)?;
    }
    zip.close().await.map_err(zip_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(chunks: &[&[u8]]) -> String {
        let mut carry = Vec::new();
        let mut out = String::new();
        for chunk in chunks {
            out.push_str(&escape_chunk(&mut carry, chunk, false));
        }
        out.push_str(&escape_chunk(&mut carry, &[], true));
        out
    }

    #[test]
    fn escaping_matches_a_json_encoder() {
        let text = "<script>\"a\\b\"\n\t\r\u{1}\u{8}\u{c}</script> 日本語 😀";
        let expected = serde_json::to_string(text).unwrap();
        assert_eq!(format!("\"{}\"", escaped(&[text.as_bytes()])), expected);
    }

    #[test]
    fn utf8_cut_between_chunks_survives() {
        let text = "ゲーム😀";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            assert_eq!(
                escaped(&[&bytes[..cut], &bytes[cut..]]),
                text,
                "cut at {cut}"
            );
        }
        // Byte by byte.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(escaped(&singles), text);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(escaped(&[b"a\xffb"]), "a\u{FFFD}b");
        // A sequence cut off by the end of the file.
        assert_eq!(escaped(&[b"a\xe3\x82"]), "a\u{FFFD}");
        assert_eq!(escaped(&[b"a\xe3\x82", b"\xb2b"]), "a\u{30b2}b".to_string());
    }
}
