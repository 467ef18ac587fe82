//! The REST calls the editor makes around the socket (docs/protocol.md §8): the access gate,
//! the daily quota, and signed preview URLs. Also the REST authentication shared by the
//! other REST modules (docs/data-and-auth.md §4.1: `Authorization: Bearer` or `X-Auth-Token`).

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::auth::Identity;
use crate::config::Config;
use crate::jobs::quota::{next_reset, QuotaPolicy};
use crate::metrics::METRICS;
use crate::state::AppState;
use crate::store::models::iso_millis;
use crate::store::QuotaKind;

/// How long a signed game URL stays valid (the editor caches it for 4 minutes).
const GAME_URL_TTL_SECS: i64 = 300;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/check-access", get(check_access))
        .route("/api/quota", get(quota))
        .route("/api/game-url/{project_id}", get(game_url))
}

/// `{"error": text}` with `status`, the shape of every REST error upstream.
pub(super) fn json_error(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "error": text }))).into_response()
}

/// A project or user id in the hyphenated 8-4-4-4-12 form upstream's check accepts.
pub(super) fn parse_uuid(raw: &str) -> Option<Uuid> {
    (raw.len() == 36).then(|| Uuid::parse_str(raw).ok())?
}

// --- authentication ------------------------------------------------------------------------

/// The access token of a REST call: `Authorization: Bearer`, else `X-Auth-Token`.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer
        .or_else(|| headers.get("x-auth-token").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AuthRejection {
    Missing,
    Invalid,
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        // "Invalid or expired" is one of the texts that make the browser refresh its token.
        let text = match self {
            Self::Missing => "No access token provided",
            Self::Invalid => "Invalid or expired token",
        };
        json_error(StatusCode::UNAUTHORIZED, text)
    }
}

/// Verify the token a REST request carries.
pub(super) async fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
) -> Result<Identity, AuthRejection> {
    let Some(token) = presented_token(headers) else {
        return Err(AuthRejection::Missing);
    };
    app.verifier.verify(token).await.map_err(|e| {
        METRICS.auth_failures.inc(&[e.metric_reason()]);
        tracing::debug!(reason = %e, "REST access token refused");
        AuthRejection::Invalid
    })
}

/// A verified caller; requests without a valid token get 401 JSON.
pub(super) struct RestUser(pub Identity);

impl FromRequestParts<AppState> for RestUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(app, &parts.headers).await.map(RestUser)
    }
}

// --- signed game URLs ----------------------------------------------------------------------

/// The preview-URL signing key: `GAME_SIGNING_SECRET`, which start-up fills in when it is
/// not configured (the replicas' shared key, or one of this process). `None` when empty.
pub(super) fn signing_key(config: &Config) -> Option<&[u8]> {
    let key = config.game.signing_secret.expose();
    (!key.is_empty()).then_some(key.as_bytes())
}

/// Hex HMAC-SHA256 of `userId:projectId:exp`, the payload upstream signs.
pub(super) fn sign(key: &[u8], user_id: Uuid, project_id: Uuid, exp: i64) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(format!("{user_id}:{project_id}:{exp}").as_bytes());
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// Why a signed URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SignatureError {
    Expired,
    Invalid,
}

/// Check `sig` and `exp` of a game URL; the comparison takes the same time wherever the
/// presented signature differs.
pub(super) fn verify_signature(
    key: &[u8],
    user_id: Uuid,
    project_id: Uuid,
    sig: &str,
    exp: &str,
) -> Result<(), SignatureError> {
    let exp: i64 = exp.parse().map_err(|_| SignatureError::Expired)?;
    if Utc::now().timestamp() > exp {
        return Err(SignatureError::Expired);
    }
    let expected = sign(key, user_id, project_id, exp).ok_or(SignatureError::Invalid)?;
    if bool::from(expected.as_bytes().ct_eq(sig.as_bytes())) {
        Ok(())
    } else {
        Err(SignatureError::Invalid)
    }
}

async fn game_url(
    State(app): State<AppState>,
    RestUser(who): RestUser,
    Path(project_id): Path<String>,
) -> Response {
    let Some(project_id) = parse_uuid(&project_id) else {
        return json_error(StatusCode::BAD_REQUEST, "Invalid project ID");
    };
    match app.store.get_project(&who, project_id).await {
        Ok(Some(_)) => {}
        // Someone else's project and no project at all get the same answer.
        Ok(None) => return json_error(StatusCode::FORBIDDEN, "Access denied"),
        Err(e) => {
            tracing::error!(error = %e, %project_id, "project lookup failed");
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
        }
    }
    let expires_at = Utc::now().timestamp() + GAME_URL_TTL_SECS;
    let Some(sig) =
        signing_key(&app.config).and_then(|key| sign(key, who.user_id, project_id, expires_at))
    else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "url": format!(
                "/game/{}/{project_id}/index.html?sig={sig}&exp={expires_at}",
                who.user_id
            ),
            "expiresAt": expires_at,
        })),
    )
        .into_response()
}

// --- access gate and quota -----------------------------------------------------------------

/// The waitlist gate: every verified user is approved (the waitlist is not the relay's).
async fn check_access(State(app): State<AppState>, headers: HeaderMap) -> Response {
    // Upstream's texts for this route differ from the other REST routes.
    match authenticate(&app, &headers).await {
        Ok(_) => Json(json!({ "allowed": true, "status": "approved" })).into_response(),
        Err(AuthRejection::Missing) => json_error(StatusCode::UNAUTHORIZED, "Unauthorized"),
        Err(AuthRejection::Invalid) => json_error(StatusCode::UNAUTHORIZED, "Invalid token"),
    }
}

/// `{used, limit, remaining}`; an unlimited (or unknown, hence unenforced) plan reports -1.
fn quota_entry(plan: &str, kind: QuotaKind, used: i64) -> serde_json::Value {
    let limit = QuotaPolicy::limit(plan, kind).unwrap_or(-1);
    let remaining = if limit < 0 { -1 } else { (limit - used).max(0) };
    json!({ "used": used, "limit": limit, "remaining": remaining })
}

async fn quota(State(app): State<AppState>, RestUser(who): RestUser) -> Response {
    let looked_up = async {
        let plan = app.store.plan(who.user_id).await?;
        let usage = app.store.quota_usage(who.user_id).await?;
        Ok::<_, crate::store::StoreError>((plan, usage))
    };
    match looked_up.await {
        Ok((plan, usage)) => Json(json!({
            "projects": quota_entry(&plan, QuotaKind::ProjectsCreated, usage.projects_created),
            "messages": quota_entry(&plan, QuotaKind::MessagesSent, usage.messages_sent),
            "plan": plan,
            "resetAt": iso_millis(&next_reset(Utc::now())),
        }))
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "quota lookup failed");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "Failed to get quota")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"unit-test-key";

    #[test]
    fn signature_round_trip_and_tampering() {
        let (user, project) = (Uuid::new_v4(), Uuid::new_v4());
        let exp = Utc::now().timestamp() + 60;
        let sig = sign(KEY, user, project, exp).unwrap();
        assert_eq!(sig.len(), 64);
        let exp_text = exp.to_string();
        assert_eq!(
            verify_signature(KEY, user, project, &sig, &exp_text),
            Ok(())
        );
        // Another project, another expiry, another key, a truncated signature: all refused.
        let other = Uuid::new_v4();
        let later = (exp + 1).to_string();
        for (key, proj, sig, exp) in [
            (KEY, other, sig.as_str(), exp_text.as_str()),
            (KEY, project, sig.as_str(), later.as_str()),
            (
                b"other-key".as_slice(),
                project,
                sig.as_str(),
                exp_text.as_str(),
            ),
            (KEY, project, &sig[..63], exp_text.as_str()),
        ] {
            assert_eq!(
                verify_signature(key, user, proj, sig, exp),
                Err(SignatureError::Invalid)
            );
        }
    }

    #[test]
    fn past_or_garbled_expiry_is_expired() {
        let (user, project) = (Uuid::new_v4(), Uuid::new_v4());
        let exp = Utc::now().timestamp() - 1;
        let sig = sign(KEY, user, project, exp).unwrap();
        assert_eq!(
            verify_signature(KEY, user, project, &sig, &exp.to_string()),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify_signature(KEY, user, project, &sig, "soon"),
            Err(SignatureError::Expired)
        );
    }

    #[test]
    fn token_from_bearer_or_x_auth_token() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_token(&headers), None);
        headers.insert("x-auth-token", "abc".parse().unwrap());
        assert_eq!(presented_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert_eq!(presented_token(&headers), Some("xyz"));
        headers.insert(header::AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(presented_token(&headers), Some("abc"));
    }

    #[test]
    fn quota_entries() {
        assert_eq!(
            quota_entry("free", QuotaKind::ProjectsCreated, 1),
            json!({"used":1,"limit":3,"remaining":2})
        );
        assert_eq!(
            quota_entry("free", QuotaKind::MessagesSent, 25),
            json!({"used":25,"limit":20,"remaining":0})
        );
        assert_eq!(
            quota_entry("team", QuotaKind::MessagesSent, 7),
            json!({"used":7,"limit":-1,"remaining":-1})
        );
    }

    #[test]
    fn uuid_form() {
        assert!(parse_uuid("3f2504e0-4f89-41d3-9a0c-0305e82c3301").is_some());
        assert!(parse_uuid("3f2504e04f8941d39a0c0305e82c3301").is_none());
        assert!(parse_uuid("../etc").is_none());
    }
}
