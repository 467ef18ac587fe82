//! The `/api/*` routes the relay does not implement (assets, push, analytics, profiles...)
//! go to the Express server named by `LEGACY_UPSTREAM_URL`, streamed both ways; without one
//! they answer 404 `{"error":"Not found"}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use super::rest::json_error;
use crate::state::AppState;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

struct Upstream {
    base: reqwest::Url,
    http: reqwest::Client,
}

pub(super) fn routes(app: &AppState) -> Router<AppState> {
    let configured = app.config.legacy.upstream_url.as_str();
    let upstream = (!configured.is_empty())
        .then(|| {
            // The configuration check already refused anything but an http(s) URL.
            let base = reqwest::Url::parse(configured).ok()?;
            let http = app
                .config
                .http
                .upstream_pool()
                .client()
                .connect_timeout(CONNECT_TIMEOUT)
                // Redirects are the browser's to follow, not ours.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| tracing::error!(error = %e, "legacy upstream client unavailable"))
                .ok()?;
            Some(Upstream { base, http })
        })
        .flatten();
    match upstream {
        Some(upstream) => Router::new()
            .route("/api/{*rest}", any(forward))
            .with_state(Arc::new(upstream)),
        None => Router::new().route("/api/{*rest}", any(not_found)),
    }
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "Not found")
}

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// `headers` without hop-by-hop fields, including those the `Connection` header names.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name_str = name.as_str();
        if HOP_BY_HOP.contains(&name_str) || named.iter().any(|n| n == name_str) {
            continue;
        }
        kept.append(name.clone(), value.clone());
    }
    kept
}

/// How many rounds of percent-decoding are checked: an upstream, or something in front of
/// it, may decode once more than the relay does.
const DECODE_ROUNDS: usize = 3;

/// A path that could leave `/api` upstream: a `.` or `..` segment after any round of
/// decoding, or a separator hidden in a segment (an encoded `/` or `\`, or a literal `\`,
/// which some servers treat as `/`). `/api/x/..%2f..%2fctl` is the first kind and the second.
fn escapes_api(path: &str) -> bool {
    let mut current = path.to_string();
    for _ in 0..DECODE_ROUNDS {
        let unsafe_segment = current.split('/').any(|raw| {
            let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
            decoded == "." || decoded == ".." || decoded.contains(['/', '\\'])
        });
        if unsafe_segment || current.contains('\\') {
            return true;
        }
        let decoded = percent_encoding::percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == current {
            return false;
        }
        current = decoded;
    }
    // Still encoded after every round: nothing legitimate nests that deep.
    true
}

async fn forward(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if escapes_api(parts.uri.path()) {
        return json_error(StatusCode::NOT_FOUND, "Not found");
    }
    let mut url = upstream.base.clone();
    let joined = format!(
        "{}{}",
        upstream.base.path().trim_end_matches('/'),
        parts.uri.path()
    );
    url.set_path(&joined);
    url.set_query(parts.uri.query());

    let mut headers = end_to_end(&parts.headers);
    let host = headers.remove(header::HOST);
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string());
    set_forwarded(&mut headers, host, peer);

    let mut outgoing = upstream
        .http
        .request(parts.method.clone(), url)
        .headers(headers);
    if !body.is_end_stream() {
        outgoing = outgoing.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let reply = match outgoing.send().await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(error = %e, method = %parts.method, path = parts.uri.path(), "legacy upstream failed");
            return json_error(StatusCode::BAD_GATEWAY, "Bad gateway");
        }
    };
    let status = reply.status();
    let headers = end_to_end(reply.headers());
    let mut response = Body::from_stream(reply.bytes_stream()).into_response();
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// `X-Forwarded-For` gains the peer; `-Proto` and `-Host` keep what a proxy in front of
/// the relay already said, else describe this hop.
fn set_forwarded(headers: &mut HeaderMap, host: Option<HeaderValue>, peer: Option<String>) {
    const FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    const PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    if let Some(peer) = peer {
        let chain = match headers.get(&FOR).and_then(|v| v.to_str().ok()) {
            Some(earlier) if !earlier.trim().is_empty() => format!("{earlier}, {peer}"),
            _ => peer,
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert(FOR, value);
        }
    }
    if !headers.contains_key(&PROTO) {
        headers.insert(PROTO, HeaderValue::from_static("http"));
    }
    if let Some(host) = host {
        headers.entry(HOST).or_insert(host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            "keep-alive, X-Secret-Hop".parse().unwrap(),
        );
        headers.insert("x-secret-hop", "1".parse().unwrap());
        headers.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        headers.insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        let kept = end_to_end(&headers);
        assert_eq!(kept.len(), 3);
        assert_eq!(kept.get_all("x-multi").iter().count(), 2);
        assert!(kept.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn forwarded_headers_extend_a_front_proxy() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        set_forwarded(
            &mut headers,
            Some("relay.example:3000".parse().unwrap()),
            Some("10.0.0.2".into()),
        );
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 10.0.0.2");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "relay.example:3000");
    }

    #[test]
    fn dot_segments_and_hidden_separators_are_caught() {
        for path in [
            "/api/../admin",
            "/api/./admin",
            "/api/%2e%2E/admin",
            "/api/x/..%2f..%2fctl/mode/down",
            "/api/x/..%2F..%2Fctl",
            "/api/x/%2e%2e%5cctl",
            "/api/x/..\\ctl",
            "/api/a%2fb",
            "/api/x/%252e%252e/ctl",
            "/api/x/%25252e%25252e/ctl",
            "/api/x/%2525252e",
        ] {
            assert!(escapes_api(path), "{path}");
        }
    }

    #[test]
    fn plain_paths_pass() {
        for path in [
            "/api/assets/a.b",
            "/api/assets/my%20sprite.png",
            "/api/users/me",
            "/api/x/..a/b..",
            "/api/assets/%E7%8C%AB.png",
        ] {
            assert!(!escapes_api(path), "{path}");
        }
    }
}
