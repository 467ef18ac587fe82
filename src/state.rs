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
use crate::pipeline::Pipeline;
use crate::rate_limit::UserBuckets;
use crate::store::Store;
use crate::wire::sockets::OpenSockets;

/// Everything the running server shares between requests.
pub struct App {
    /// The loaded configuration.
    pub config: Config,
    /// Checks access tokens.
    pub verifier: Verifier,
    /// Where users, projects and jobs are kept.
    pub store: Arc<dyn Store>,
    /// Running jobs.
    pub jobs: Arc<Jobs>,
    /// Chooses the backend for new jobs.
    pub selector: Arc<BackendSelector>,
    /// Daily quota rules.
    pub quota: QuotaPolicy,
    /// Modal's git actions, when Modal is configured (version history on the volume).
    pub modal_git: Option<ModalGit>,
    /// The pre-job pipeline: style gate, intent, chat, skills, prewarm.
    pub pipeline: Arc<Pipeline>,
    /// Generation messages per user per minute, across sockets.
    pub generation_limit: UserBuckets,
    /// Fired when the drain closes the sockets (at its start when clustered, else at its
    /// end): background loops stop.
    pub close_sockets: CancellationToken,
    /// The open sockets' queues: the drain closes them with 1012 through these.
    pub sockets: OpenSockets,
    /// WebSocket connection tasks, which axum's graceful shutdown does not track.
    pub connections: TaskTracker,
    next_conn_id: AtomicU64,
}

/// Cheap-to-clone handle on the shared server state.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

/// What the composition root built for the handlers, next to the configuration and verifier.
pub struct Parts {
    /// Where users, projects and jobs are kept.
    pub store: Arc<dyn Store>,
    /// Running jobs.
    pub jobs: Arc<Jobs>,
    /// Chooses the backend for new jobs.
    pub selector: Arc<BackendSelector>,
    /// Daily quota rules.
    pub quota: QuotaPolicy,
    /// Version history on Modal, if configured.
    pub modal_git: Option<ModalGit>,
    /// Intent, chat and style steps.
    pub pipeline: Arc<Pipeline>,
}

impl AppState {
    /// Builds the shared state from configuration and its parts.
    pub fn new(config: Config, verifier: Verifier, parts: Parts) -> Self {
        let Parts {
            store,
            jobs,
            selector,
            quota,
            modal_git,
            pipeline,
        } = parts;
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
            pipeline,
            close_sockets: CancellationToken::new(),
            sockets: OpenSockets::default(),
            connections: TaskTracker::new(),
            next_conn_id: AtomicU64::new(1),
        }))
    }

    /// A new, unique id for a connection.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}
