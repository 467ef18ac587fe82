//! Verification of Supabase access tokens (docs/data-and-auth.md §4.3).
//!
//! Algorithm confusion is impossible by construction: the header only *selects* a key, and the
//! key decides the algorithm. HS256 tokens go to the configured secret and nothing else;
//! ES256/RS256 tokens go to the JWKS entry named by `kid`, whose own key type fixed its
//! algorithm when the set was loaded. A public key therefore never reaches HMAC.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::error::clip;
use super::jwks::{JwksCache, JwksTiming};
use super::{AuthError, Identity};
use crate::config::AuthConfig;

/// Audience of every Supabase user access token.
const AUDIENCE: &str = "authenticated";
/// The only `role` a user token carries; `anon` / `service_role` are API keys, not users.
const USER_ROLE: &str = "authenticated";

/// Verifies access tokens; cheap to clone, shared by every socket.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    hs256: Option<DecodingKey>,
    jwks: Option<Arc<JwksCache>>,
    /// Accepted `iss` values, without trailing slashes.
    issuers: Vec<String>,
    leeway_secs: u64,
    hs256_validation: Validation,
    es256_validation: Validation,
    rs256_validation: Validation,
}

/// The two header members that matter, read before any key is chosen.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl Verifier {
    /// `hs256_secret`: the resolved HS256 key bytes (None = HS256 disabled).
    pub fn new(config: &AuthConfig, hs256_secret: Option<Vec<u8>>, http: reqwest::Client) -> Self {
        let jwks = config.effective_jwks_url().map(|url| {
            let timing = JwksTiming {
                ttl: Duration::from_secs(config.jwks_ttl_secs),
                cooldown: Duration::from_secs(config.jwks_refetch_cooldown_secs),
                fetch_timeout: Duration::from_secs(config.jwks_fetch_timeout_secs),
                max_stale: Duration::from_secs(config.jwks_max_stale_secs),
            };
            Arc::new(JwksCache::new(url, http, timing))
        });
        let leeway_secs = config.leeway_secs;
        Self {
            inner: Arc::new(Inner {
                // An empty HMAC key would let anyone mint tokens: treat it as "no secret".
                hs256: hs256_secret
                    .filter(|secret| !secret.is_empty())
                    .map(|secret| DecodingKey::from_secret(&secret)),
                jwks,
                issuers: config.effective_issuers(),
                leeway_secs,
                hs256_validation: validation(Algorithm::HS256, leeway_secs),
                es256_validation: validation(Algorithm::ES256, leeway_secs),
                rs256_validation: validation(Algorithm::RS256, leeway_secs),
            }),
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = read_header(token)?;
        let claims = match header.alg.as_str() {
            "HS256" => {
                let key = self
                    .inner
                    .hs256
                    .as_ref()
                    .ok_or_else(|| AuthError::UnsupportedAlgorithm("HS256".to_string()))?;
                self.decode(token, key, Algorithm::HS256)?
            }
            "ES256" | "RS256" => {
                let kid = header.kid.ok_or(AuthError::UnknownKey(None))?;
                let jwks = self
                    .inner
                    .jwks
                    .as_ref()
                    .ok_or_else(|| AuthError::UnknownKey(Some(clip(&kid))))?;
                let entry = jwks.key(&kid).await?;
                if header.alg != alg_name(entry.alg) {
                    return Err(AuthError::UnsupportedAlgorithm(format!(
                        "{} with a {} key",
                        header.alg,
                        alg_name(entry.alg)
                    )));
                }
                self.decode(token, &entry.key, entry.alg)?
            }
            other => return Err(AuthError::UnsupportedAlgorithm(clip(other))),
        };
        self.identity(claims)
    }

    /// Drop cached JWKS keys (emergency revocation, called on SIGHUP / admin).
    pub fn purge_keys(&self) {
        if let Some(jwks) = &self.inner.jwks {
            jwks.purge();
        }
    }

    pub fn leeway_secs(&self) -> i64 {
        i64::try_from(self.inner.leeway_secs).unwrap_or(i64::MAX)
    }

    fn decode(&self, token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Value, AuthError> {
        let validation = match alg {
            Algorithm::ES256 => &self.inner.es256_validation,
            Algorithm::RS256 => &self.inner.rs256_validation,
            _ => &self.inner.hs256_validation,
        };
        jsonwebtoken::decode::<Value>(token, key, validation)
            .map(|data| data.claims)
            .map_err(map_error)
    }

    /// Checks jsonwebtoken does not do, then the identity handed downstream.
    fn identity(&self, claims: Value) -> Result<Identity, AuthError> {
        let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX);
        let leeway = self.leeway_secs();
        let invalid = |reason: &str| AuthError::InvalidClaims(reason.to_string());

        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("iss"))?;
        let iss = iss.trim_end_matches('/');
        if !self.inner.issuers.iter().any(|accepted| accepted == iss) {
            return Err(invalid("iss not accepted"));
        }
        if claims.get("role").and_then(Value::as_str) != Some(USER_ROLE) {
            return Err(invalid("role is not authenticated"));
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // Only the canonical hyphenated form, the one Supabase issues and `auth.uid()` expects.
        let user_id = Uuid::try_parse(sub)
            .ok()
            .filter(|_| sub.len() == 36)
            .ok_or_else(|| invalid("sub is not a UUID"))?;
        if let Some(iat) = claims.get("iat") {
            let iat = numeric(iat).ok_or_else(|| invalid("iat"))?;
            if iat > now.saturating_add(leeway) {
                return Err(invalid("iat in the future"));
            }
        }
        match claims.get("is_anonymous") {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => return Err(invalid("anonymous user")),
            Some(_) => return Err(invalid("is_anonymous")),
        }
        let expires_at = claims
            .get("exp")
            .and_then(numeric)
            .ok_or_else(|| invalid("exp"))?;
        // Phone-only users carry `email: ""`; Express turns that into null too.
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .filter(|email| !email.is_empty())
            .map(str::to_string);
        Ok(Identity {
            user_id,
            email,
            expires_at,
            claims: Arc::from(claims.to_string()),
        })
    }
}

fn validation(alg: Algorithm, leeway_secs: u64) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = leeway_secs;
    validation.validate_nbf = true;
    validation.set_audience(&[AUDIENCE]);
    // `iss` is required here but compared in `identity`, which tolerates a trailing slash.
    validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
    validation
}

fn read_header(token: &str) -> Result<RawHeader, AuthError> {
    let encoded = token
        .split_once('.')
        .map(|(header, _)| header)
        .ok_or_else(|| AuthError::Malformed("not a JWT".to_string()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| AuthError::Malformed("header is not base64url".to_string()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed("header is not a JWT header".to_string()))
}

fn map_error(err: jsonwebtoken::errors::Error) -> AuthError {
    match err.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::MissingRequiredClaim(claim) => {
            AuthError::InvalidClaims(format!("{claim} missing"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::InvalidClaims(format!("{claim} malformed"))
        }
        ErrorKind::InvalidAudience => AuthError::InvalidClaims("aud not accepted".to_string()),
        ErrorKind::ImmatureSignature => AuthError::InvalidClaims("nbf in the future".to_string()),
        ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => {
            AuthError::InvalidClaims(err.to_string())
        }
        ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => AuthError::UnsupportedAlgorithm(err.to_string()),
        // The key came from our own store: a published key the crypto backend refuses is a
        // server-side problem, not the client's.
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            tracing::warn!(error = %err, "verification key unusable");
            AuthError::KeysUnavailable("verification key unusable".to_string())
        }
        _ => AuthError::Malformed(err.to_string()),
    }
}

/// A JSON number as whole seconds (JWT NumericDate may be fractional).
fn numeric(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_f64().map(|f| f as i64))
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ES256",
        Algorithm::RS256 => "RS256",
        Algorithm::HS256 => "HS256",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_reading_rejects_garbage() {
        assert!(matches!(read_header("abc"), Err(AuthError::Malformed(_))));
        assert!(matches!(
            read_header("!!!.x.y"),
            Err(AuthError::Malformed(_))
        ));
        // {"typ":"JWT"}: no alg.
        assert!(matches!(
            read_header("eyJ0eXAiOiJKV1QifQ.e30.x"),
            Err(AuthError::Malformed(_))
        ));
        // {"alg":"none"}
        let header = read_header("eyJhbGciOiJub25lIn0.e30.").unwrap();
        assert_eq!(header.alg, "none");
        assert!(header.kid.is_none());
    }

    #[test]
    fn numeric_dates_may_be_fractional() {
        assert_eq!(numeric(&serde_json::json!(12)), Some(12));
        assert_eq!(numeric(&serde_json::json!(12.9)), Some(12));
        assert_eq!(numeric(&serde_json::json!("12")), None);
    }
}
