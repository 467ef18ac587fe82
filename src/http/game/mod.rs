//! `GET /game/<userId>/<projectId>/<path>`: the files of a project for the editor's preview
//! iframe, from the local workspace (local CLI backend) or Modal `get_file`.
//!
//! Access (docs/protocol.md §8): a valid `sig`+`exp` pair or the owner's token opens any file; a
//! Referer inside the same `/game/<userId>/<projectId>/` folder of this host opens the
//! non-HTML files the page loads. `index.html` gets a script that sets `ASSET_BASE_URL` and
//! reports errors and the load to the editor (`gameError` / `gameLoaded`).

mod access;
mod inject;
mod paths;
mod serve;

use std::time::Duration;

use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// Longest a single `get_file` read may stall; files are small and Modal answers quickly.
const MODAL_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What the `/game` handlers share: the app and the `get_file` HTTP client.
#[derive(Clone)]
struct GameState {
    app: AppState,
    http: reqwest::Client,
}

pub(super) fn routes(app: &AppState) -> Router<AppState> {
    let http = reqwest::Client::builder()
        .connect_timeout(app.config.modal.connect_timeout())
        .read_timeout(MODAL_READ_TIMEOUT)
        .build()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "get_file client with timeouts unavailable; using defaults");
            reqwest::Client::new()
        });
    let state = GameState {
        app: app.clone(),
        http,
    };
    Router::new()
        .route("/game/{user_id}/{project_id}/", get(serve::serve))
        .route("/game/{user_id}/{project_id}/{*path}", get(serve::serve))
        .with_state(state)
}
