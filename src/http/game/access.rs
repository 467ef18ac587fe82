//! Who may read a game file (docs/protocol.md §8): a valid `sig`+`exp` pair, the owner's token, or,
//! for the sub-resources a page loads only (`kinds`), a Referer from the same project folder
//! on this host.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::kinds::{is_html, loadable_by_referer};
use super::paths::GamePath;
use crate::http::rest::{self, json_error, SignatureError};
use crate::state::AppState;

/// The optional `sig` and `exp` query parameters of a signed preview URL.
#[derive(Deserialize)]
pub(super) struct Signed {
    pub(super) sig: Option<String>,
    pub(super) exp: Option<String>,
}

/// Checks the request's credentials for `path`; the refusal is the response to send.
pub(super) async fn authorize(
    app: &AppState,
    headers: &HeaderMap,
    signed: &Signed,
    user_id: Uuid,
    project_id: Uuid,
    path: &GamePath<'_>,
) -> Result<(), Response> {
    if let (Some(sig), Some(exp)) = (signed.sig.as_deref(), signed.exp.as_deref()) {
        let verdict = match rest::signing_key(&app.config) {
            Some(key) => rest::verify_signature(key, user_id, project_id, sig, exp),
            None => Err(SignatureError::Invalid),
        };
        match verdict {
            Ok(()) => {}
            Err(SignatureError::Expired) => {
                return Err(json_error(StatusCode::FORBIDDEN, "URL expired"))
            }
            Err(SignatureError::Invalid) => {
                return Err(json_error(StatusCode::FORBIDDEN, "Invalid signature"))
            }
        }
    } else if let Ok(who) = rest::authenticate(app, headers).await {
        if who.user_id != user_id {
            return Err(json_error(StatusCode::FORBIDDEN, "Access denied"));
        }
    } else if referer_in_folder(headers, path.user, path.project) {
        // A Referer is easy to forge outside a browser: never enough for a page, nor for
        // anything a browser could render as one.
        match path.file.as_deref() {
            Some(file) if is_html(file) => {
                return Err(json_error(
                    StatusCode::UNAUTHORIZED,
                    "Authentication required for HTML files",
                ))
            }
            Some(file) if !loadable_by_referer(file) => {
                return Err(json_error(
                    StatusCode::UNAUTHORIZED,
                    "Authentication required",
                ))
            }
            // An unsafe path is refused as such further on.
            _ => {}
        }
    } else {
        return Err(json_error(
            StatusCode::UNAUTHORIZED,
            "Authentication required",
        ));
    }
    Ok(())
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
