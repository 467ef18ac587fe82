//! Browser WebSocket: protocol types, the connection loop, message handlers.

mod connection;
mod handlers;
mod history;
mod job_control;
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
    // Frames the socket task feeds before one flush go out in one write of up to this many
    // bytes, instead of one system call per frame. The read buffer starts small: once a
    // frame's header is read, room for its whole length is reserved, so a large message costs
    // one more read, and every idle socket 0.1–0.25 KiB less (`loadgen idle`).
    ws.read_buffer_size(256)
        .write_buffer_size(app.config.limits.ws_write_coalesce_bytes)
        .max_message_size(codec_cap)
        .max_frame_size(codec_cap)
        .on_upgrade(move |socket| tracker.track_future(connection::run(socket, app)))
}
