//! HTTP surface: liveness, readiness, metrics, the admin backend switch, the static
//! frontend, and the WebSocket upgrade (accepted on any path, as upstream does).

mod admin_access;
pub mod client_addr;
mod editor;
mod game;
mod legacy;
mod pages;
mod rest;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

use crate::backend::project_files::Readers;
use crate::config::BackendMode;
use crate::metrics::METRICS;
use crate::state::AppState;
use admin_access::{AdminAccess, AdminGuesses};

/// Every route on one listener (no `ADMIN_LISTEN`).
pub fn router(app: AppState) -> Router {
    layered(public_routes(&app).merge(admin_routes()), app)
}

/// What browsers and the load balancer reach when `ADMIN_LISTEN` puts the operator routes on
/// their own listener: `/metrics`, `/ops` and `/admin/*` answer 404 here.
pub fn public_router(app: AppState) -> Router {
    layered(public_routes(&app), app)
}

/// The operator listener (`ADMIN_LISTEN`): metrics, the ops console, the admin API, and
/// liveness and readiness for probes that live on the private network.
pub fn admin_router(app: AppState) -> Router {
    let probes = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready));
    layered(probes.merge(admin_routes()), app)
}

fn public_routes(app: &AppState) -> Router<AppState> {
    // One reader of project files per backend, shared by the editor and game routes.
    let readers = Arc::new(Readers::new(&app.config));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(rest::routes())
        .merge(editor::routes(app, Arc::clone(&readers)))
        .merge(game::routes(app, readers))
        .merge(pages::routes(app))
        .merge(legacy::routes(app))
        .fallback(root)
}

fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/ops", get(ops_page))
        .route("/admin/status", get(ops_status))
        .route("/admin/backend", get(backend_status).post(set_backend))
        .route("/admin/keys/purge", post(purge_keys))
}

fn layered(routes: Router<AppState>, app: AppState) -> Router {
    // Wrong admin guesses are counted per client, across the listeners of this process.
    let admin_guesses = AdminGuesses::new(
        app.config.admin.max_failed_attempts,
        Duration::from_secs(app.config.admin.failed_attempts_window_secs),
    );
    routes
        .layer(axum::middleware::map_response(no_sniffing))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(Extension(admin_guesses)),
        )
        .with_state(app)
}

/// Every answer, whoever produced it (routes, static files, the legacy upstream), tells the
/// browser to use the type it names and never guess one: a game file must not become a page.
async fn no_sniffing(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    response
}

/// One span per request with its id; the path only — queries carry preview signatures.
fn request_span(request: &Request) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("http", request_id = %id, method = %request.method(), path = %request.uri().path())
}

async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 only while a new job would be accepted and could run; otherwise 503 with the reason
/// (`draining`, `store unreachable`, or `backend unusable` with `backend.problems` naming
/// what to fix).
async fn ready(State(app): State<AppState>) -> Response {
    let backend = app.selector.status();
    let accepting = app.jobs.is_accepting();
    let usable = backend.usable && backend.current.is_some();
    let store_reachable = store_answers(&app).await;
    let verdict = match (accepting, store_reachable, usable) {
        (false, _, _) => "draining",
        (true, false, _) => "store unreachable",
        (true, true, false) => "backend unusable",
        (true, true, true) => "ready",
    };
    let body = json!({
        "status": verdict,
        "backend": backend,
        "store": app.store.kind(),
        "storeReachable": store_reachable,
        "cluster": app.jobs.bus().health(),
        "runningJobs": app.jobs.running().len(),
    });
    let status = if verdict == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// How long `/ready` waits for the store's answer: a probe must answer well within a load
/// balancer's timeout, and a database this slow cannot start jobs either.
const READY_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the store answers a trivial query in time; why not is logged, never sent.
async fn store_answers(app: &AppState) -> bool {
    match tokio::time::timeout(READY_STORE_TIMEOUT, app.store.ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, store = app.store.kind(), "not ready: the store does not answer");
            false
        }
        Err(_) => {
            tracing::warn!(
                store = app.store.kind(),
                secs = READY_STORE_TIMEOUT.as_secs(),
                "not ready: the store did not answer in time"
            );
            false
        }
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        METRICS.render(),
    )
}

async fn backend_status(_: AdminAccess, State(app): State<AppState>) -> Response {
    Json(app.selector.status()).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetBackend {
    use_modal: String,
}

async fn set_backend(
    _: AdminAccess,
    State(app): State<AppState>,
    body: Option<Json<SetBackend>>,
) -> Response {
    let Some(mode) = body.and_then(|Json(b)| BackendMode::parse_use_modal(&b.use_modal)) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "useModal must be \"true\", \"false\" or \"auto\"" })),
        )
            .into_response();
    };
    match app.selector.set_mode(mode) {
        Ok(()) => Json(app.selector.status()).into_response(),
        Err(e) => (
            StatusCode::CONFLICT,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

/// The ops console; its data comes from `/admin/status` with the admin token.
async fn ops_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("ops.html"),
    )
}

async fn ops_status(_: AdminAccess, State(app): State<AppState>) -> Response {
    let jobs: Vec<_> = app
        .jobs
        .running()
        .iter()
        .map(|job| {
            let row = job.row();
            json!({
                "id": job.id,
                "userId": job.user_id,
                "projectId": job.project_id,
                "backend": job.backend,
                "status": row.as_ref().map(|r| r.status),
                "progress": row.as_ref().map_or(0, |r| r.progress),
                "elapsedSecs": job.started_at.elapsed().as_secs(),
            })
        })
        .collect();
    let by_code: serde_json::Map<String, serde_json::Value> = METRICS
        .upstream_failures
        .snapshot()
        .into_iter()
        .map(|(labels, n)| (labels.join(","), json!(n)))
        .collect();
    Json(json!({
        "backend": app.selector.status(),
        "accepting": app.jobs.is_accepting(),
        "sockets": METRICS.sockets_open.load(std::sync::atomic::Ordering::Relaxed),
        "sessions": METRICS.sessions_authenticated.load(std::sync::atomic::Ordering::Relaxed),
        "jobs": jobs,
        "failuresByCode": by_code,
        "recentFailures": app.jobs.recent_failures(),
    }))
    .into_response()
}

async fn purge_keys(_: AdminAccess, State(app): State<AppState>) -> Response {
    app.verifier.purge_keys();
    Json(json!({ "status": "purged" })).into_response()
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn root(State(app): State<AppState>, request: Request) -> Response {
    if is_websocket_upgrade(request.headers()) {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        if !crate::ws::origin_allowed(&app, origin) {
            METRICS.rate_limited.inc(&["origin"]);
            return (
                StatusCode::FORBIDDEN,
                Json(json!({ "error": "Origin not allowed" })),
            )
                .into_response();
        }
        let (mut parts, _body) = request.into_parts();
        return match axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &app).await
        {
            Ok(ws) => crate::ws::upgrade(ws, app),
            Err(rejection) => rejection.into_response(),
        };
    }
    match app.config.public_dir() {
        Some(dir) => match ServeDir::new(dir).oneshot(request).await {
            Ok(response) => response.into_response(),
            Err(never) => match never {},
        },
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": "Not found" }))).into_response(),
    }
}
