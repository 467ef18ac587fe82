//! The game's `index.html`: as `{code}` for the code viewer, and as a page.

use std::io;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use futures::{stream, StreamExt};

use super::access::OwnedFiles;
use super::{files_error, respond, with_length};
use crate::backend::project_files::{ByteStream, FileBody, FilesError, ProjectPath};
use crate::http::rest::json_error;

pub(super) async fn code(
    OwnedFiles {
        user_id,
        project_id,
        files,
    }: OwnedFiles,
) -> Response {
    match files.open(user_id, project_id, &ProjectPath::INDEX).await {
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

pub(super) async fn preview(
    OwnedFiles {
        user_id,
        project_id,
        files,
    }: OwnedFiles,
) -> Response {
    // Upstream answers this route in plain text.
    let text = |status: StatusCode, message: &'static str| {
        let mut response = respond("text/plain; charset=utf-8", "no-store", Body::from(message));
        *response.status_mut() = status;
        response
    };
    match files.open(user_id, project_id, &ProjectPath::INDEX).await {
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
