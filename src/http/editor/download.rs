//! `game.zip`: `index.html` and `assets/`, compressed and sent while the files are read,
//! so no file and no archive is ever held whole.

use std::io;

use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, ZipDateTimeBuilder, ZipEntryBuilder};
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::{Datelike, Timelike};
use futures::{stream, StreamExt};
use tokio::io::DuplexStream;
use tokio_util::compat::FuturesAsyncWriteCompatExt;
use uuid::Uuid;

use super::access::OwnedFiles;
use super::{files_error, respond};
use crate::backend::project_files::{ProjectFiles, ProjectPath};
use crate::http::rest::json_error;

/// Bytes of zip between the task that writes it and the response that sends it: the
/// writer waits while the client has not taken them.
const ZIP_PIPE_BYTES: usize = 64 * 1024;
const ASSETS: &str = "assets";

pub(super) async fn download(
    OwnedFiles {
        user_id,
        project_id,
        files,
    }: OwnedFiles,
) -> Response {
    let listed = match files.list(user_id, project_id).await {
        Ok(listed) => listed,
        Err(e) => return files_error(e),
    };
    // `index.html` first, then the assets in name order (the listing is sorted).
    let entries: Vec<ProjectPath> = listed
        .iter()
        .filter(|p| **p == ProjectPath::INDEX)
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
