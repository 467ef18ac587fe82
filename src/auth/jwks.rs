//! The Supabase JWKS as a key store: `kid` → (algorithm, key), refreshed from
//! `<SUPABASE_URL>/auth/v1/.well-known/jwks.json`.
//!
//! Timing rules (docs/data-and-auth.md §4.3 item 6):
//! * keys younger than the TTL are used as they are;
//! * older keys keep being served for at most `max_stale` beyond the TTL while a background
//!   refresh runs (and keeps failing, if the endpoint is down); after that verification waits
//!   for a fetch and fails closed when it fails;
//! * an unknown `kid` triggers a fetch only when the cooldown since the last attempt has elapsed,
//!   so a client spraying random kids cannot turn the relay into a JWKS hammer;
//! * all fetches are single-flight: callers arriving while one is in flight await its result
//!   instead of starting another.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::error::clip;
use super::AuthError;

/// A JWKS larger than this is not a Supabase key set; refuse it rather than buffer it.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One verification key and the only algorithm it may verify.
#[derive(Debug)]
pub(crate) struct KeyEntry {
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct JwksTiming {
    pub(crate) ttl: Duration,
    pub(crate) cooldown: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) max_stale: Duration,
}

/// Completion of the one fetch in flight; every caller that needs it awaits a clone.
type PendingFetch = Shared<BoxFuture<'static, ()>>;

#[derive(Default)]
struct State {
    keys: HashMap<String, Arc<KeyEntry>>,
    /// Last successful fetch; `None` until one succeeded (or after a purge).
    fetched_at: Option<Instant>,
    /// Last fetch attempt, successful or not; the cooldown counts from here.
    attempted_at: Option<Instant>,
    last_attempt_failed: bool,
    in_flight: Option<PendingFetch>,
}

enum Decision {
    Use(Arc<KeyEntry>),
    Reject(AuthError),
    /// Usable now, but past its TTL: serve it and refresh in the background.
    UseAndRefresh(Arc<KeyEntry>),
    /// Wait for a fetch (joining the one in flight, if any), then answer.
    Fetch,
}

pub(crate) struct JwksCache {
    url: String,
    http: reqwest::Client,
    timing: JwksTiming,
    /// TTL plus max-stale: past this age a set whose refresh failed verifies nothing.
    usable_for: Duration,
    /// Never held across an await.
    state: RwLock<State>,
}

impl JwksCache {
    pub(crate) fn new(url: String, http: reqwest::Client, timing: JwksTiming) -> Self {
        Self {
            url,
            http,
            timing,
            usable_for: timing.ttl.saturating_add(timing.max_stale),
            state: RwLock::new(State::default()),
        }
    }

    /// The key published under `kid`, fetching the set when the rules above allow it.
    pub(crate) async fn key(self: &Arc<Self>, kid: &str) -> Result<Arc<KeyEntry>, AuthError> {
        let now = Instant::now();
        // Own statement, so the read guard is gone before any branch takes the write lock.
        let decision = self.decide(&self.read(), kid, now);
        let pending = match decision {
            Decision::Use(entry) => return Ok(entry),
            Decision::Reject(err) => return Err(err),
            Decision::UseAndRefresh(entry) => {
                self.refresh_in_background(now);
                return Ok(entry);
            }
            Decision::Fetch => {
                // Decide again under the write lock: another caller may have fetched (or
                // started fetching) since the read above.
                let mut state = self.write();
                match self.decide(&state, kid, now) {
                    Decision::Use(entry) => return Ok(entry),
                    Decision::Reject(err) => return Err(err),
                    Decision::UseAndRefresh(entry) => {
                        drop(self.pending_fetch(&mut state));
                        return Ok(entry);
                    }
                    Decision::Fetch => self.pending_fetch(&mut state),
                }
            }
        };
        pending.await;
        self.after_fetch(&self.read(), kid, Instant::now())
    }

    /// Forget every key: the next verification fetches the set again, cooldown or not.
    pub(crate) fn purge(&self) {
        let mut state = self.write();
        state.keys.clear();
        state.fetched_at = None;
        state.attempted_at = None;
    }

    fn decide(&self, state: &State, kid: &str, now: Instant) -> Decision {
        let age = state.fetched_at.map(|at| now.saturating_duration_since(at));
        let cooled_down = state
            .attempted_at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.timing.cooldown);
        let may_refresh = cooled_down && state.in_flight.is_none();
        match (state.keys.get(kid), age) {
            (Some(entry), Some(age)) if age < self.timing.ttl => Decision::Use(entry.clone()),
            (Some(entry), Some(age)) if age < self.usable_for => {
                if may_refresh {
                    Decision::UseAndRefresh(entry.clone())
                } else {
                    Decision::Use(entry.clone())
                }
            }
            _ if cooled_down || state.in_flight.is_some() => Decision::Fetch,
            // No fetch allowed yet: answer from what we know.
            _ => match self.after_fetch(state, kid, now) {
                Ok(entry) => Decision::Use(entry),
                Err(err) => Decision::Reject(err),
            },
        }
    }

    /// The answer once no further fetch will happen for this call.
    fn after_fetch(
        &self,
        state: &State,
        kid: &str,
        now: Instant,
    ) -> Result<Arc<KeyEntry>, AuthError> {
        // A set whose last refresh succeeded is as current as the cooldown allows; one whose
        // refresh failed is trusted only up to TTL + max-stale.
        let usable = state.fetched_at.is_some_and(|at| {
            !state.last_attempt_failed || now.saturating_duration_since(at) < self.usable_for
        });
        if !usable {
            return Err(AuthError::KeysUnavailable(
                "no usable JWKS (fetch failing)".to_string(),
            ));
        }
        state
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| AuthError::UnknownKey(Some(clip(kid))))
    }

    fn refresh_in_background(self: &Arc<Self>, now: Instant) {
        let mut state = self.write();
        let cooled_down = state
            .attempted_at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.timing.cooldown);
        if cooled_down && state.in_flight.is_none() {
            drop(self.pending_fetch(&mut state));
        }
    }

    /// The fetch in flight, or a new one. The fetch runs in its own task so that a caller that
    /// goes away (socket closed mid-handshake) cannot cancel it half-way.
    fn pending_fetch(self: &Arc<Self>, state: &mut State) -> PendingFetch {
        if let Some(pending) = &state.in_flight {
            return pending.clone();
        }
        state.attempted_at = Some(Instant::now());
        let this = Arc::clone(self);
        let task = tokio::spawn(async move { this.refresh().await });
        let pending = async move {
            // A join error means the runtime is shutting down; callers answer from the state.
            let _ = task.await;
        }
        .boxed()
        .shared();
        state.in_flight = Some(pending.clone());
        pending
    }

    /// One fetch attempt; on success the set is replaced, on failure the old one stays.
    async fn refresh(&self) {
        let result = self.fetch().await;
        match &result {
            Ok(keys) => tracing::debug!(url = %self.url, keys = keys.len(), "JWKS fetched"),
            Err(reason) => tracing::warn!(url = %self.url, %reason, "JWKS fetch failed"),
        }
        let mut state = self.write();
        state.in_flight = None;
        state.last_attempt_failed = result.is_err();
        if let Ok(keys) = result {
            state.keys = keys;
            state.fetched_at = Some(Instant::now());
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<KeyEntry>>, String> {
        let mut response = self
            .http
            .get(&self.url)
            .timeout(self.timing.fetch_timeout)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // Every write is a handful of plain assignments that cannot panic half-way, so a
        // poisoned lock still guards a consistent state.
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<Value>,
}

/// Parse a JWKS document. Entries the relay cannot or must not use are skipped one by one, so a
/// new key type published next to a usable key never breaks verification; an empty set is
/// valid (a project that signs with its shared secret only).
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Arc<KeyEntry>>, String> {
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = HashMap::with_capacity(raw.keys.len());
    for value in raw.keys {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(jwk) => jwk,
            Err(e) => {
                tracing::debug!(error = %e, "JWKS entry skipped: unparsable");
                continue;
            }
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            tracing::debug!("JWKS entry skipped: no kid");
            continue;
        };
        match entry_for(&jwk) {
            Ok(entry) => {
                keys.insert(kid, Arc::new(entry));
            }
            Err(reason) => tracing::debug!(kid, reason, "JWKS entry skipped"),
        }
    }
    Ok(keys)
}

/// The algorithm a JWK may verify is decided here, from its key type (and its own `alg`, which
/// must agree), never from a token header.
fn entry_for(jwk: &Jwk) -> Result<KeyEntry, &'static str> {
    let common = &jwk.common;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err("use is not sig");
    }
    if let Some(ops) = &common.key_operations {
        if !ops.contains(&KeyOperations::Verify) {
            return Err("key_ops lacks verify");
        }
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        _ => return Err("unsupported key type"),
    };
    let declared_matches = match common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(_) => false,
    };
    if !declared_matches {
        return Err("alg does not match the key type or is not accepted");
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "key material invalid")?;
    Ok(KeyEntry { alg, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_unusable_entries_and_keeps_the_rest() {
        let body = br#"{"keys":[
            {"kty":"EC","crv":"P-256","kid":"ec","alg":"ES256","use":"sig","key_ops":["verify"],
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-256","kid":"ec-wrong-alg","alg":"RS256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-256","kid":"ec-enc","use":"enc",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"RSA","kid":"rsa-ps","alg":"PS256","n":"sXch","e":"AQAB"},
            {"kty":"RSA","kid":"rsa","n":"sXch","e":"AQAB"},
            {"kty":"oct","kid":"shared","k":"c2VjcmV0"},
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"EC","crv":"P-256","alg":"ES256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"mystery","kid":"future"}
        ]}"#;
        let keys = parse_jwks(body).unwrap();
        let mut kids: Vec<_> = keys.keys().cloned().collect();
        kids.sort();
        assert_eq!(kids, ["ec", "rsa"]);
        assert_eq!(keys["ec"].alg, Algorithm::ES256);
        assert_eq!(keys["rsa"].alg, Algorithm::RS256);
    }

    #[test]
    fn empty_set_is_valid_and_garbage_is_not() {
        assert!(parse_jwks(br#"{"keys":[]}"#).unwrap().is_empty());
        assert!(parse_jwks(b"<html>").is_err());
        assert!(parse_jwks(br#"{"nokeys":1}"#).is_err());
    }
}
