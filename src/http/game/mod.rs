//! `GET /game/<userId>/<projectId>/<path>`: the files of a project for the editor's preview
//! iframe, from the local workspace (local CLI backend) or Modal `get_file`.
//!
//! Access (docs/protocol.md §8): a valid `sig`+`exp` pair or the owner's token opens any file; a
//! Referer inside the same `/game/<userId>/<projectId>/` folder of this host opens only the
//! sub-resources a page loads (images, audio, fonts, scripts, styles, JSON, wasm: `kinds`). `index.html` gets a script that sets `ASSET_BASE_URL` and
//! reports errors and the load to the editor (`gameError` / `gameLoaded`).

mod access;
mod inject;
mod kinds;
mod paths;
mod serve;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::backend::project_files::Readers;
use crate::state::AppState;

/// What the `/game` handlers share: the app and the project-file readers.
#[derive(Clone)]
struct GameState {
    app: AppState,
    readers: Arc<Readers>,
}

pub(super) fn routes(app: &AppState, readers: Arc<Readers>) -> Router<AppState> {
    let state = GameState {
        app: app.clone(),
        readers,
    };
    Router::new()
        .route("/game/{user_id}/{project_id}/", get(serve::serve))
        .route("/game/{user_id}/{project_id}/{*path}", get(serve::serve))
        .with_state(state)
}
