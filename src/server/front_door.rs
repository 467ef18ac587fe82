//! The listener side of the HTTP front door: a cap on open connections (at most the
//! descriptor limit minus a reserve), an optional cap per client address, and accept
//! errors handled without spinning. At the cap, the connection that has waited longest for
//! a request is closed to admit the new one, so half-sent requests cannot starve `/health`.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client_slots::ClientSlots;
use super::connection::{self, ConnState, RequestContext, Timeouts, TrackedStream};
use crate::config::HttpConfig;
use crate::http::client_addr::TrustedProxies;
use crate::metrics::METRICS;

/// How long the accept loop waits for an evicted connection to give its place back.
const EVICTION_WAIT: Duration = Duration::from_secs(1);
/// Pause after the process ran out of descriptors, so a full table is not polled in a loop.
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections within the caps and serves each on its own task.
pub(super) struct FrontDoor {
    context: Arc<RequestContext>,
    timeouts: Timeouts,
    capacity: Arc<Semaphore>,
    /// Connections not yet upgraded, oldest first: the candidates for eviction.
    open: Mutex<BTreeMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    /// Tells every connection to finish its request in progress and close.
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// `HTTP_MAX_CONNECTIONS`, lowered to what the descriptor limit allows after the reserve.
pub(super) fn connection_cap(config: &HttpConfig) -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return config.max_connections;
    };
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    let allowed = match soft.checked_sub(config.fd_reserve) {
        Some(allowed) if allowed > 0 => allowed,
        // A limit below the reserve: keep half the descriptors for everything else.
        _ => (soft / 2).max(1),
    };
    config.max_connections.min(allowed)
}

impl FrontDoor {
    pub(super) fn new(router: Router, config: &HttpConfig) -> Arc<Self> {
        let cap = connection_cap(config);
        tracing::info!(
            max_connections = cap,
            per_client = config.max_connections_per_client,
            "HTTP front door"
        );
        Arc::new(Self {
            context: Arc::new(RequestContext {
                router,
                trusted: TrustedProxies::new(config.trusted_proxies.clone()),
                clients: ClientSlots::new(config.max_connections_per_client),
            }),
            timeouts: Timeouts {
                header_read: config.header_read_timeout(),
                keepalive: config.keepalive_timeout(),
            },
            capacity: Arc::new(Semaphore::new(cap)),
            open: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    /// Accept until `shutdown` resolves, then let every connection finish its request in
    /// progress and wait for them (upgraded WebSockets are not waited for here).
    pub(super) async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut spare = spare_descriptor();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => self.admit(stream, peer).await,
                Err(e) if is_connection_error(&e) => {}
                Err(e) if is_exhaustion(&e) => self.exhausted(&e, &listener, &mut spare).await,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(EXHAUSTED_BACKOFF).await;
                }
            }
        }
        drop(listener);
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    async fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let Some(permit) = self.place().await else {
            METRICS.http_connections_shed.inc(&["capacity"]);
            return;
        };
        let client = if self.context.trusted.contains(peer.ip()) {
            // Behind a proxy the client is only known per request (X-Forwarded-For).
            None
        } else {
            match self.context.clients.take(peer.ip().to_canonical()) {
                Ok(slot) => slot,
                Err(_) => {
                    METRICS.http_connections_shed.inc(&["client"]);
                    return;
                }
            }
        };
        // Every WebSocket frame is a small write that must leave at once: Nagle would hold
        // it until the browser acknowledges the previous one.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let conn = Arc::new(ConnState::new(self.next_id.fetch_add(1, Ordering::Relaxed)));
        self.open_table().insert(conn.id, Arc::clone(&conn));
        let stream = TrackedStream::new(stream, Arc::clone(&conn), permit, client);
        let door = Arc::clone(self);
        self.tasks.spawn(async move {
            connection::serve(
                Arc::clone(&door.context),
                stream,
                peer,
                door.timeouts,
                door.stop.clone(),
            )
            .await;
            door.open_table().remove(&conn.id);
        });
    }

    /// A place under the cap: a free one, or the one an evicted connection gives back.
    async fn place(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.capacity).try_acquire_owned() {
            return Some(permit);
        }
        if !self.evict_oldest_idle() {
            return None;
        }
        let freed = Arc::clone(&self.capacity).acquire_owned();
        tokio::time::timeout(EVICTION_WAIT, freed).await.ok()?.ok()
    }

    /// Close the oldest connection that is not answering a request; false when every
    /// connection is busy.
    fn evict_oldest_idle(&self) -> bool {
        let open = self.open_table();
        match open.values().find(|conn| conn.is_evictable()) {
            Some(conn) => {
                conn.evict();
                true
            }
            None => false,
        }
    }

    /// Out of descriptors: free some by evicting an idle connection; failing that, spend
    /// the spare descriptor to take one waiting connection off the backlog and close it (so
    /// the listener is not ready again at once), then re-arm the spare.
    async fn exhausted(
        &self,
        error: &io::Error,
        listener: &TcpListener,
        spare: &mut Option<std::fs::File>,
    ) {
        METRICS.http_connections_shed.inc(&["descriptors"]);
        tracing::warn!(error = %error, "accept failed: out of descriptors");
        if !self.evict_oldest_idle() {
            spare.take();
            if let Some(Ok((refused, _))) = listener.accept().now_or_never() {
                drop(refused);
            }
            *spare = spare_descriptor();
        }
        tokio::time::sleep(EXHAUSTED_BACKOFF).await;
    }

    fn open_table(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnState>>> {
        self.open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A descriptor held in reserve for [`FrontDoor::exhausted`].
fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// The peer went away before we accepted: nothing to do.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The process or the system is out of descriptors or socket memory.
fn is_exhaustion(e: &io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}
