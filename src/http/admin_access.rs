//! Access to `/admin/*`: `Authorization: Bearer <ADMIN_TOKEN>`, compared in constant time,
//! with wrong guesses counted per client address. A client that guessed wrong
//! `ADMIN_MAX_FAILED_ATTEMPTS` times within `ADMIN_FAILED_ATTEMPTS_WINDOW_SECS` gets 429
//! with `Retry-After` until that window ends — even with the right token, so the answer
//! never tells a locked-out guesser whether it was right.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::client_addr::ClientAddr;
use crate::state::AppState;

/// Clients whose failures are remembered at once; past it the oldest window is forgotten.
/// Each entry is a few dozen bytes, so the map stays under half a megabyte.
const TRACKED_CLIENTS: usize = 8192;

/// Wrong admin tokens per client address, in fixed windows.
pub struct AdminGuesses {
    max_failures: u32,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, Window>>,
}

/// One client's failures since `started`.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl AdminGuesses {
    /// `max_failures` 0 turns the limit off.
    pub fn new(max_failures: u32, window: Duration) -> Arc<Self> {
        Arc::new(Self {
            max_failures,
            window,
            clients: Mutex::new(HashMap::new()),
        })
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        self.clients
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// How long `client` must still wait, if it used up its guesses.
    fn locked_for(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        if self.max_failures == 0 {
            return None;
        }
        let clients = self.clients();
        let window = clients.get(&client)?;
        let ends = window.started + self.window;
        (window.failures >= self.max_failures && ends > now).then(|| ends - now)
    }

    fn record_failure(&self, client: IpAddr, now: Instant) {
        if self.max_failures == 0 {
            return;
        }
        let mut clients = self.clients();
        if clients.len() >= TRACKED_CLIENTS && !clients.contains_key(&client) {
            clients.retain(|_, w| w.started + self.window > now);
            if clients.len() >= TRACKED_CLIENTS {
                if let Some(oldest) = clients
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(a, _)| *a)
                {
                    clients.remove(&oldest);
                }
            }
        }
        let window = clients.entry(client).or_insert(Window {
            started: now,
            failures: 0,
        });
        if window.started + self.window <= now {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures += 1;
    }
}

/// Proof that a request carries the admin token; extracting it answers 401 or 429 otherwise.
pub struct AdminAccess;

impl FromRequestParts<AppState> for AdminAccess {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        use subtle::ConstantTimeEq;
        // Requests always arrive through the server, which tags them; a router driven
        // directly (without a peer) counts as one unknown client.
        let client = parts
            .extensions
            .get::<ClientAddr>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0);
        // The router adds the guesses' table to every request (see `super::router`).
        let Extension(guesses) = Extension::<Arc<AdminGuesses>>::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let now = Instant::now();
        if let Some(wait) = guesses.locked_for(client, now) {
            return Err(too_many_guesses(wait));
        }
        let expected = app.config.admin.token.expose();
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // No token configured: the admin routes are off.
        let allowed =
            !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()));
        if allowed {
            return Ok(AdminAccess);
        }
        guesses.record_failure(client, now);
        Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "Unauthorized" })),
        )
            .into_response())
    }
}

fn too_many_guesses(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({ "error": "Too many attempts" })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_locked_after_its_failures_until_the_window_ends() {
        let guesses = AdminGuesses::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(guesses.locked_for(a, t0), None);
            guesses.record_failure(a, t0);
        }
        assert_eq!(
            guesses.locked_for(a, t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(guesses.locked_for(b, t0), None);
        assert_eq!(guesses.locked_for(a, t0 + Duration::from_secs(60)), None);
        // A new window starts from scratch.
        guesses.record_failure(a, t0 + Duration::from_secs(61));
        assert_eq!(guesses.locked_for(a, t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let guesses = AdminGuesses::new(1, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..(TRACKED_CLIENTS as u32 + 100) {
            guesses.record_failure(IpAddr::V4(Ipv4Addr::from(i)), now);
        }
        assert!(guesses.clients().len() <= TRACKED_CLIENTS);
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let guesses = AdminGuesses::new(0, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..100 {
            guesses.record_failure(a, now);
        }
        assert_eq!(guesses.locked_for(a, now), None);
        assert!(guesses.clients().is_empty());
    }
}
