//! Upstream's clean page URLs over `PUBLIC_DIR` (`/create`, `/project/<id>`, ...), and the
//! 301s from the old `.html` addresses. Everything else in `PUBLIC_DIR` is served as it is
//! by the fallback.

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::state::AppState;

/// Clean URL → page file, as upstream routes them.
const PAGES: [(&str, &str); 11] = [
    ("/create", "create.html"),
    ("/login", "index.html"),
    ("/mypage", "mypage.html"),
    ("/discover", "discover.html"),
    ("/notifications", "notifications.html"),
    ("/waitlist", "waitlist.html"),
    ("/editor", "editor.html"),
    ("/publish", "publish.html"),
    // The editor reads the project id from the address.
    ("/project/{id}", "editor.html"),
    ("/zap/{id}", "discover.html"),
    ("/game/{game_id}", "game.html"),
];

/// Old addresses that now redirect, query string kept.
const MOVED: [(&str, &str); 8] = [
    ("/create.html", "/create"),
    ("/mypage.html", "/mypage"),
    ("/discover.html", "/discover"),
    ("/notifications.html", "/notifications"),
    ("/waitlist.html", "/waitlist"),
    ("/editor.html", "/editor"),
    ("/publish.html", "/publish"),
    ("/index.html", "/login"),
];

pub(super) fn routes(app: &AppState) -> Router<AppState> {
    let Some(dir) = app.config.public_dir() else {
        return Router::new();
    };
    let home = dir.join("create.html");
    let mut router = Router::new().route(
        "/",
        get(move |state: State<AppState>, request: Request| home_or_socket(home, state, request)),
    );
    for (path, file) in PAGES {
        let file = dir.join(file);
        router = router.route(path, get(move |request: Request| page(file, request)));
    }
    for (from, to) in MOVED {
        router = router.route(from, get(move |uri: Uri| moved(to, uri)));
    }
    router
}

/// `/` is the create page for browsers and the WebSocket endpoint for the app.
async fn home_or_socket(home: PathBuf, state: State<AppState>, request: Request) -> Response {
    if super::is_websocket_upgrade(request.headers()) {
        return super::root(state, request).await;
    }
    page(home, request).await
}

async fn page(file: PathBuf, request: Request) -> Response {
    let mut response = serve_file(&file, request).await;
    if response.status().is_success() {
        // Pages change with every deploy: always revalidate.
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

async fn serve_file(file: &Path, request: Request) -> Response {
    match ServeFile::new(file).oneshot(request).await {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    }
}

async fn moved(to: &'static str, uri: Uri) -> Response {
    let location = match uri.query() {
        Some(query) => format!("{to}?{query}"),
        None => to.to_string(),
    };
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, location)],
    )
        .into_response()
}
