//! Browser WebSocket: protocol types, the connection loop, message handlers.

mod connection;
mod handlers;
mod session;
mod versions;

use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;

use crate::state::AppState;

/// Whether the browser origin may open a socket (`WS_ALLOWED_ORIGINS`; empty allows any).
pub fn origin_allowed(app: &AppState, origin: Option<&str>) -> bool {
    let allowed = &app.config.limits.allowed_origins;
    allowed.is_empty() || origin.is_some_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
}

/// Accept the upgrade with buffers sized for many mostly idle sockets.
pub fn upgrade(ws: WebSocketUpgrade, app: AppState) -> Response {
    // Frames above the protocol limit are refused by the handler with an error while the
    // socket stays open; only absurd frames (16x the limit) make the codec drop the socket.
    let codec_cap = app.config.limits.max_message_bytes.saturating_mul(16);
    let tracker = app.connections.clone();
    ws.read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(codec_cap)
        .max_frame_size(codec_cap)
        .on_upgrade(move |socket| tracker.track_future(connection::run(socket, app)))
}
