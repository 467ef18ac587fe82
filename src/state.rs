//! Everything a request handler needs, shared by HTTP routes and WebSocket connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::backend::modal_git::ModalGit;
use crate::backend::selector::BackendSelector;
use crate::config::Config;
use crate::jobs::quota::QuotaPolicy;
use crate::jobs::Jobs;
use crate::rate_limit::UserBuckets;
use crate::store::Store;

pub struct App {
    pub config: Config,
    pub verifier: Verifier,
    pub store: Arc<dyn Store>,
    pub jobs: Arc<Jobs>,
    pub selector: Arc<BackendSelector>,
    pub quota: QuotaPolicy,
    /// Modal's git actions, when Modal is configured (version history on the volume).
    pub modal_git: Option<ModalGit>,
    /// Generation messages per user per minute, across sockets.
    pub generation_limit: UserBuckets,
    /// Fired when the drain is over: every socket closes with 1012.
    pub close_sockets: CancellationToken,
    /// WebSocket connection tasks, which axum's graceful shutdown does not track.
    pub connections: TaskTracker,
    next_conn_id: AtomicU64,
}

#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl AppState {
    pub fn new(
        config: Config,
        verifier: Verifier,
        store: Arc<dyn Store>,
        jobs: Arc<Jobs>,
        selector: Arc<BackendSelector>,
        quota: QuotaPolicy,
        modal_git: Option<ModalGit>,
    ) -> Self {
        let generation_limit = UserBuckets::per_minute(config.limits.generations_per_minute);
        Self(Arc::new(App {
            generation_limit,
            config,
            verifier,
            store,
            jobs,
            selector,
            quota,
            modal_git,
            close_sockets: CancellationToken::new(),
            connections: TaskTracker::new(),
            next_conn_id: AtomicU64::new(1),
        }))
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}
