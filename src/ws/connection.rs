//! One browser socket. The loop here only moves frames: `ping` is answered inline, every
//! other message is handled in its own task (so a slow handler never delays `pong`), and
//! everything the socket must receive arrives through its bounded outbound queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt;
use tracing::Instrument;

use super::handlers;
use super::session::Connection;
use crate::metrics::{gauge_add, METRICS};
use crate::rate_limit::TokenBucket;
use crate::state::AppState;
use crate::wire::deadline::Deadline;
use crate::wire::outbound::{Outbound, OutboundReceiver, OutboundSender};
use crate::wire::protocol::{texts, ClientMessage, ServerMessage};
use crate::wire::sockets::unix_millis;

enum Step {
    Continue,
    Stop,
}

/// Serves one WebSocket connection until it closes. The socket has no span of its own
/// (each idle socket would hold one in the subscriber): every message is handled in a span
/// naming the connection and, once known, the user. Nor has it a timer: the sockets' shared
/// clock ([`OpenSockets::run_clock`](crate::wire::sockets::OpenSockets::run_clock)) queues
/// its pings and its close at the authentication deadline or the token's expiry.
///
/// A plain `fn` returning an `async move` block, not an `async fn`: an `async fn` moves its
/// arguments into locals of its own, so every socket's task would hold the WebSocket twice.
#[allow(clippy::manual_async_fn)]
pub fn run(mut socket: WebSocket, app: AppState) -> impl Future<Output = ()> {
    async move {
        gauge_add(&METRICS.sockets_open, 1);
        let (conn, mut outbound) = open(&app);
        // Until the socket ends: the drain and the clock reach it through its queue.
        let _open = app.sockets.register(&conn.sink);
        let mut bucket = TokenBucket::per_minute(app.config.limits.messages_per_minute);
        serve(&mut socket, &conn, &mut outbound, &mut bucket).await;
        conn.leave();
        gauge_add(&METRICS.sockets_open, -1);
    }
}

/// A new socket's connection and queue, its authentication deadline set.
fn open(app: &AppState) -> (Arc<Connection>, OutboundReceiver) {
    let conn_id = app.next_conn_id();
    let (sink, outbound) = OutboundSender::channel(
        conn_id,
        app.config.limits.outbound_queue,
        app.config.limits.outbound_max_bytes,
    );
    let auth_timeout = Duration::from_secs(app.config.auth.init_timeout_secs);
    sink.set_deadline(Deadline::Auth(
        unix_millis().saturating_add(auth_timeout.as_millis() as u64),
    ));
    (
        Arc::new(Connection::new(conn_id, app.clone(), sink)),
        outbound,
    )
}

/// Move frames both ways until the socket closes or must be closed.
async fn serve(
    socket: &mut WebSocket,
    conn: &Arc<Connection>,
    outbound: &mut OutboundReceiver,
    bucket: &mut TokenBucket,
) {
    loop {
        let step = tokio::select! {
            biased;
            // Boxed: the rare branches' futures (and `write`'s) would otherwise sit in every
            // socket's task for its whole life (its state holds the largest of them). A queue
            // that overflowed yields its close first; the drain's close comes after what is
            // queued.
            item = outbound.recv() => Box::pin(write(socket, item, outbound)).await,
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    Box::pin(on_text(conn, socket, text, bucket)).await
                }
                Some(Ok(Message::Binary(_))) => {
                    conn.reply(ServerMessage::error(texts::INVALID_MESSAGE_FORMAT));
                    Step::Continue
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Step::Continue,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Step::Stop,
            },
        };
        if let Step::Stop = step {
            break;
        }
    }
}

async fn on_text(
    conn: &Arc<Connection>,
    socket: &mut WebSocket,
    text: Utf8Bytes,
    bucket: &mut TokenBucket,
) -> Step {
    if text.len() > conn.app.config.limits.max_message_bytes {
        conn.reply(ServerMessage::error(texts::MESSAGE_TOO_LARGE));
        return Step::Continue;
    }
    // The clock closes a quiet socket at its token's expiry; a message may come first. Its
    // close goes out after what is queued, before anything else is read.
    if conn.token_expired() {
        conn.sink.close_token_expired();
        return Step::Continue;
    }
    match ClientMessage::parse(text.as_str()) {
        // Answered right here, ahead of anything queued, so pong is never late.
        Ok(ClientMessage::Ping) => match socket
            .send(Message::Text(ServerMessage::Pong.to_frame()))
            .await
        {
            Ok(()) => Step::Continue,
            Err(_) => Step::Stop,
        },
        Ok(ClientMessage::ViewState { .. }) => Step::Continue,
        Ok(message) => {
            if bucket.try_take(std::time::Instant::now()) {
                let span =
                    tracing::info_span!("ws", conn_id = conn.id, user_id = tracing::field::Empty);
                if let Some(user_id) = conn.user_id() {
                    span.record("user_id", tracing::field::display(user_id));
                }
                tokio::spawn(handlers::handle(Arc::clone(conn), message).instrument(span));
            } else {
                METRICS.rate_limited.inc(&["socket"]);
                conn.reply(ServerMessage::rate_limited());
            }
            Step::Continue
        }
        Err(e) => {
            conn.reply(e.reply());
            Step::Continue
        }
    }
}

/// Write `first` and whatever else is already queued, then flush once.
async fn write(socket: &mut WebSocket, first: Outbound, queue: &mut OutboundReceiver) -> Step {
    const MAX_COALESCED: usize = 64;
    let mut next = Some(first);
    let mut written = 0;
    while let Some(item) = next.take() {
        let fed = match item {
            Outbound::Frame(frame) => socket.feed(Message::Text(frame)).await,
            Outbound::Batch(frames) => {
                let mut result = Ok(());
                for frame in frames {
                    result = socket.feed(Message::Text(frame)).await;
                    if result.is_err() {
                        break;
                    }
                }
                result
            }
            Outbound::Ping => socket.feed(Message::Ping(Default::default())).await,
            Outbound::Close(code, reason) => {
                let _ = socket.flush().await;
                close_with(socket, code, reason).await;
                return Step::Stop;
            }
        };
        if fed.is_err() {
            return Step::Stop;
        }
        written += 1;
        if written < MAX_COALESCED {
            next = queue.try_recv();
        }
    }
    match socket.flush().await {
        Ok(()) => Step::Continue,
        Err(_) => Step::Stop,
    }
}

async fn close_with(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}
