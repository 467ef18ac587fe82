//! One accepted TCP connection, served as HTTP/1.1 (with upgrades) under two clocks: a
//! request head must be complete within the header-read timeout of the connection opening
//! or of its first byte, and a kept-alive connection may wait for its next request only
//! for the keep-alive timeout. While a request is being answered neither clock runs: the
//! handlers bound their own work.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::client_slots::{ClientSlot, ClientSlots};
use crate::http::client_addr::{ClientAddr, TrustedProxies};
use crate::metrics::METRICS;

/// `head_started` when no byte of a next request has arrived.
const NOT_STARTED: u64 = u64::MAX;

/// The two clocks of an HTTP connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub header_read: Duration,
    pub keepalive: Duration,
}

/// What a connection's task, its socket and its requests share.
pub(super) struct ConnState {
    pub(super) id: u64,
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last response ended.
    idle_since: AtomicU64,
    /// Milliseconds after `opened` of the next request's first byte, or [`NOT_STARTED`].
    head_started: AtomicU64,
    /// Wakes the task when a clock changes (a request begins to arrive or the last one in
    /// flight ends) or on eviction.
    changed: Notify,
    evicted: AtomicBool,
    /// A proxied client's slot, held by an upgraded connection until its socket closes.
    upgraded_slot: Mutex<Option<ClientSlot>>,
}

impl ConnState {
    pub(super) fn new(id: u64) -> Self {
        Self {
            id,
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection's head clock starts when it opens: silence is no excuse.
            head_started: AtomicU64::new(0),
            changed: Notify::new(),
            evicted: AtomicBool::new(false),
            upgraded_slot: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    fn on_bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let started = self.head_started.compare_exchange(
                NOT_STARTED,
                self.now_ms(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            if started.is_ok() {
                // The header clock is usually the nearer one: the task must re-arm.
                self.changed.notify_one();
            }
        }
    }

    fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NOT_STARTED, Ordering::Release);
        RequestGuard(Arc::clone(self))
    }

    /// When the connection must be closed if nothing changes, `None` while a request is
    /// being answered; and which clock that is.
    fn deadline(&self, timeouts: Timeouts) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.head_started.load(Ordering::Acquire) {
            NOT_STARTED => Some((
                self.at(self.idle_since.load(Ordering::Acquire)) + timeouts.keepalive,
                "keepalive_timeout",
            )),
            started => Some((self.at(started) + timeouts.header_read, "header_timeout")),
        }
    }

    /// Neither answering a request nor already on its way out.
    pub(super) fn is_evictable(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && !self.evicted.load(Ordering::Acquire)
    }

    /// Close this connection at once to make room for a new one.
    pub(super) fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.changed.notify_one();
    }
}

/// One request being answered on a connection; its drop restarts the keep-alive clock.
struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let conn = &self.0;
        if conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            conn.idle_since.store(conn.now_ms(), Ordering::Release);
            conn.changed.notify_one();
        }
    }
}

/// The TCP stream, noting when bytes arrive; it holds the connection's places under the
/// global and per-client caps for as long as the socket lives (an upgraded WebSocket too).
pub(super) struct TrackedStream {
    inner: TcpStream,
    conn: Arc<ConnState>,
    _permit: OwnedSemaphorePermit,
    _client: Option<ClientSlot>,
}

impl TrackedStream {
    pub(super) fn new(
        inner: TcpStream,
        conn: Arc<ConnState>,
        permit: OwnedSemaphorePermit,
        client: Option<ClientSlot>,
    ) -> Self {
        METRICS
            .http_connections_open
            .fetch_add(1, Ordering::Relaxed);
        Self {
            inner,
            conn,
            _permit: permit,
            _client: client,
        }
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        METRICS
            .http_connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.on_bytes_read();
        }
        polled
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted (and a proxied client's slot taken)
/// until hyper has written it to the end or dropped it.
struct GuardedBody {
    body: Body,
    _request: RequestGuard,
    _client: Option<ClientSlot>,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What every request needs, whichever connection it arrives on.
pub(super) struct RequestContext {
    pub router: Router,
    pub trusted: TrustedProxies,
    pub clients: Arc<ClientSlots>,
}

impl RequestContext {
    /// Route one request, tagged with its peer and client address. Behind a trusted proxy
    /// every request (and an upgraded socket for its lifetime) takes its client's slot.
    async fn handle(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
        conn: &Arc<ConnState>,
    ) -> Response<GuardedBody> {
        let guard = conn.begin_request();
        let client = self.trusted.client_of(peer, request.headers());
        let slot = if self.trusted.contains(peer.ip()) {
            match self.clients.take(client) {
                Ok(slot) => slot,
                Err(_) => {
                    METRICS.http_connections_shed.inc(&["client"]);
                    return too_many_connections().map(|body| GuardedBody {
                        body,
                        _request: guard,
                        _client: None,
                    });
                }
            }
        } else {
            None
        };
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(ClientAddr(client));
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let slot = if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            *conn
                .upgraded_slot
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()) = slot;
            None
        } else {
            slot
        };
        response.map(|body| GuardedBody {
            body,
            _request: guard,
            _client: slot,
        })
    }
}

fn too_many_connections() -> Response<Body> {
    let mut response = Response::new(Body::from(r#"{"error":"Too many connections"}"#));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// Serve `stream` until it closes, is upgraded, times out, is evicted, or — once `stop`
/// fires — finishes the request in progress.
pub(super) async fn serve(
    context: Arc<RequestContext>,
    stream: TrackedStream,
    peer: SocketAddr,
    timeouts: Timeouts,
    stop: CancellationToken,
) {
    let conn = Arc::clone(&stream.conn);
    let service = {
        let conn = Arc::clone(&conn);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let context = Arc::clone(&context);
            let conn = Arc::clone(&conn);
            async move { Ok::<_, Infallible>(context.handle(request, peer, &conn).await) }
        })
    };
    let http = hyper::server::conn::http1::Builder::new()
        // The clocks above replace hyper's, which would also cut the keep-alive wait short.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(http);
    let mut stopping = false;
    loop {
        let deadline = conn.deadline(timeouts);
        let expired = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = http.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                http.as_mut().graceful_shutdown();
            }
            _ = conn.changed.notified() => {
                if conn.evicted.load(Ordering::Acquire) {
                    METRICS.http_connections_shed.inc(&["evicted"]);
                    return;
                }
            }
            _ = expired => {
                // Still past it now? A request may have begun in the meantime.
                if let Some((at, clock)) = conn.deadline(timeouts) {
                    if at <= Instant::now() {
                        METRICS.http_connections_shed.inc(&[clock]);
                        return;
                    }
                }
            }
        }
    }
}
