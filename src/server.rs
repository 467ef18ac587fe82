//! The composition root: build every part from the configuration, serve, drain.

mod background;
mod client_slots;
mod connection;
mod front_door;
mod keys;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::backend::local_cli::LocalCliBackend;
use crate::backend::modal::pipeline::{CallTimeouts, ModalPipeline};
use crate::backend::modal::ModalBackend;
use crate::backend::modal_git::ModalGit;
use crate::backend::selector::BackendSelector;
use crate::backend::Backend;
use crate::config::{BackendMode, Config};
use crate::jobs::bus::{BusError, JobBus, MemoryBus, RedisBus};
use crate::jobs::limits::SlotLimiter;
use crate::jobs::prompt::PromptTemplate;
use crate::jobs::quota::QuotaPolicy;
use crate::jobs::{Jobs, JobsConfig};
use crate::pipeline::style::StyleCatalog;
use crate::pipeline::{AskSettings, Pipeline, PipelineParts, Prompts};
use crate::state::AppState;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

pub use keys::development_secret;

/// How long a draining relay waits for its jobs' last events to reach Redis.
const BUS_FLUSH_WAIT: Duration = Duration::from_secs(5);
/// How long every socket together gets to flush and close with 1012.
const SOCKETS_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("DATA_DIR {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Prompt(#[from] crate::jobs::prompt::TemplateError),
    #[error(transparent)]
    PipelinePrompts(#[from] crate::pipeline::PromptsError),
    #[error(transparent)]
    Styles(#[from] crate::pipeline::style::StylesError),
    #[error("MODAL_ENDPOINT: {0}")]
    Modal(String),
    #[error("USE_MODAL={mode}: {reason}")]
    Backend { mode: &'static str, reason: String },
    #[error("HTTP client: {0}")]
    Http(String),
    #[error("no random source for a new key: {0}")]
    Random(std::io::Error),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// A relay built from its configuration, ready to serve.
pub struct Relay {
    app: AppState,
}

/// What the binary and the tests may do with a relay that is serving: read-only views and
/// the SIGHUP reload.
#[derive(Clone)]
pub struct RelayHandle {
    app: AppState,
}

impl RelayHandle {
    /// The absolute data directory the relay uses.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.app.config.server.data_dir
    }

    /// How many jobs run in this process now.
    pub fn running_jobs(&self) -> usize {
        self.app.jobs.running().len()
    }

    /// Apply a re-read configuration (SIGHUP): `USE_MODAL` for new jobs; cached JWKS keys
    /// are purged either way.
    pub fn reload(&self, config: &Config) {
        match self.app.selector.set_mode(config.backend.use_modal) {
            Ok(()) => tracing::info!(
                use_modal = config.backend.use_modal.as_use_modal(),
                "configuration reloaded"
            ),
            Err(e) => tracing::error!("reload: {e}; keeping the current backend"),
        }
        self.app.verifier.purge_keys();
    }

    /// Purge cached JWKS keys without changing anything else (a reload whose file was bad).
    pub fn purge_keys(&self) {
        self.app.verifier.purge_keys();
    }
}

/// The absolute data directory, created if missing.
fn data_dir(config: &Config) -> Result<PathBuf, StartupError> {
    let dir = &config.server.data_dir;
    let err = |source| StartupError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    dir.canonicalize().map_err(err)
}

/// The pre-job pipeline with its prompts, presets and clients.
fn build_pipeline(
    config: &Config,
    store: Arc<dyn Store>,
    local: Option<LocalCliBackend>,
) -> Result<Arc<Pipeline>, StartupError> {
    let p = &config.pipeline;
    let secs = Duration::from_secs;
    let modal = if config.modal.endpoint.is_empty() {
        None
    } else {
        let timeouts = CallTimeouts {
            intent: secs(p.intent_timeout_secs),
            chat: secs(p.chat_timeout_secs),
            skills: secs(p.skills_timeout_secs),
            prewarm: secs(p.prewarm_timeout_secs),
            files: secs(p.file_timeout_secs),
        };
        let pool = config.http.upstream_pool();
        let client = ModalPipeline::new(&config.modal, pool, timeouts, p.max_file_bytes)
            .map_err(|e| StartupError::Modal(e.to_string()))?;
        Some(Arc::new(client))
    };
    Ok(Pipeline::new(PipelineParts {
        ask: AskSettings {
            small_model: p.small_model.trim().to_string(),
            intent_timeout: secs(p.intent_timeout_secs),
            chat_timeout: secs(p.chat_timeout_secs),
            skills_timeout: secs(p.skills_timeout_secs),
            max_answer_chars: p.max_answer_chars,
        },
        prompts: Prompts::load(&p.prompts)?,
        styles: StyleCatalog::load(&p.styles, config.public_dir())?,
        store,
        modal,
        local,
        max_file_bytes: p.max_file_bytes,
        pending_style_ttl: secs(p.style_pending_ttl_secs),
        prewarm_dedup: secs(p.prewarm_dedup_secs),
    }))
}

/// Where the local CLI's pass-through variables come from.
pub type EnvSource = dyn Fn(&str) -> Option<std::ffi::OsString> + Send + Sync;

impl Relay {
    /// Build from `config`, passing the process environment on to the local CLI.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        Self::build_with_env(config, &|name: &str| std::env::var_os(name)).await
    }

    /// [`Relay::build`] with the environment the local CLI inherits answered by `env`.
    pub async fn build_with_env(mut config: Config, env: &EnvSource) -> Result<Self, StartupError> {
        let data_dir = data_dir(&config)?;
        config.server.data_dir = data_dir.clone();

        let store: Arc<dyn Store> = if config.database.url.is_empty() {
            Arc::new(SqliteStore::open(&data_dir.join("relay.db"))?)
        } else {
            Arc::new(
                PostgresStore::connect(config.database.url.expose(), config.database.pool_size)
                    .await?
                    .with_prepared_statements(config.database.prepared_statements),
            )
        };

        let (hs256, is_dev_secret) = keys::hs256_key(&config, &data_dir, store.as_ref()).await?;
        if is_dev_secret {
            tracing::warn!(
                "no SUPABASE_URL or SUPABASE_JWT_SECRET: accepting development tokens signed with {} \
                 (mint one with `dreamcore-relay dev-token`)",
                if store.is_shared() { "the secret the replicas share through the database".to_string() }
                else { format!("{}/dev-jwt-secret", data_dir.display()) }
            );
        }
        config.game.signing_secret = keys::game_signing_secret(&config, store.as_ref()).await?;
        let pool = config.http.upstream_pool();
        let http = pool
            .client()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| StartupError::Http(e.to_string()))?;
        let verifier = Verifier::new(&config.auth, hs256, http.clone());

        let modal = (!config.modal.endpoint.is_empty())
            .then(|| ModalBackend::new(&config.modal, pool))
            .transpose()
            .map_err(|e| StartupError::Modal(e.to_string()))?
            .map(|backend| Arc::new(backend) as Arc<dyn Backend>);
        let local_cli = LocalCliBackend::with_env_source(&config.cli, &data_dir, env);
        let pipeline_cli = local_cli.as_ref().ok().cloned();
        let mode = config.backend.use_modal;
        let local: Option<Arc<dyn Backend>> = match local_cli {
            Ok(cli) => {
                // In the other modes the selector reports these as why the relay is not ready.
                if mode == BackendMode::Modal {
                    for problem in cli.blockers() {
                        tracing::info!(%problem, "local CLI backend not usable (only needed for USE_MODAL=false)");
                    }
                }
                for problem in cli.warnings() {
                    tracing::warn!(%problem, "local CLI backend");
                }
                Some(Arc::new(cli))
            }
            Err(e) if mode == BackendMode::Modal => {
                tracing::info!(error = %e, "local CLI backend unavailable (only needed for USE_MODAL=false)");
                None
            }
            Err(e) => {
                return Err(StartupError::Backend {
                    mode: mode.as_use_modal(),
                    reason: e.to_string(),
                })
            }
        };
        let selector = Arc::new(BackendSelector::new(
            mode,
            modal,
            local,
            config.backend.auto_failure_threshold,
            Duration::from_secs(config.backend.auto_failure_window_secs),
        ));

        let instance = uuid::Uuid::new_v4();
        let bus: Arc<dyn JobBus> = if config.cluster.redis_url.is_empty() {
            Arc::new(MemoryBus)
        } else {
            RedisBus::start(
                &config.cluster,
                config.job_timeout(),
                config.limits.job_log_max_bytes,
                Arc::clone(&store),
            )?
        };
        let quota = QuotaPolicy::new(true);
        let jobs = Jobs::new(
            Arc::clone(&store),
            Arc::clone(&selector),
            bus,
            SlotLimiter::new(
                config.limits.max_jobs_per_user,
                config.limits.max_jobs_total,
            ),
            quota.clone(),
            PromptTemplate::load(&config.prompt.template)?,
            JobsConfig {
                job_timeout: config.job_timeout(),
                cancel_wait: Duration::from_secs(config.cli.kill_grace_secs + 5),
                data_dir,
                log_max_bytes: config.limits.job_log_max_bytes,
                answer_max_bytes: config.limits.job_answer_max_bytes,
                lease: crate::store::Lease {
                    instance,
                    ttl: config.cluster.lease_ttl(),
                },
                lease_renew: config.cluster.lease_renew(),
            },
        );
        // Alone, an expired lease is this instance's own from before a crash: failed at once.
        // Clustered, a replica may start just after a database outage that lapsed live
        // replicas' leases too; its first sweep waits a lease TTL (jobs/lease.rs).
        if !jobs.bus().is_clustered() {
            jobs.sweep_expired().await?;
        }
        crate::jobs::lease::spawn(&jobs, Arc::clone(&store), config.cluster.lease_ttl());
        tracing::info!(
            use_modal = mode.as_use_modal(),
            store = store.kind(),
            %instance,
            bus = jobs.bus().health().mode,
            "relay ready"
        );
        let modal_git = if config.modal.endpoint.is_empty() {
            None
        } else {
            Some(ModalGit::new(&config.modal, pool).map_err(StartupError::Modal)?)
        };
        let pipeline = build_pipeline(&config, Arc::clone(&store), pipeline_cli)?;
        let parts = crate::state::Parts {
            store,
            jobs,
            selector,
            quota,
            modal_git,
            pipeline,
        };
        let app = AppState::new(config, verifier, parts);
        background::spawn_modal_prober(&app, http);
        background::spawn_socket_clock(&app);
        Ok(Self { app })
    }

    /// A handle that stays valid while the relay serves.
    pub fn handle(&self) -> RelayHandle {
        RelayHandle {
            app: self.app.clone(),
        }
    }

    /// Serve until `shutdown` resolves, then drain (docs/operations.md §4): the listening
    /// socket closes at once, so a load balancer of any kind (passive checks only, too) sends
    /// newcomers to another replica; requests in progress finish. New jobs are refused,
    /// running ones finish within `DRAIN_TIMEOUT_SECS`, every socket is closed with 1012
    /// (clustered: at once, since its tab can follow the job from another replica), stop.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = crate::http::router(self.app.clone());
        self.serve_router(listener, router, shutdown).await
    }

    /// [`Relay::serve`] with the operator routes (`/metrics`, `/ops`, `/admin/*`) on `admin`
    /// instead (`ADMIN_LISTEN`). The admin listener stays up through the drain, so metrics
    /// show it, and stops with the public one.
    pub async fn serve_with_admin(
        self,
        listener: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stop_admin = CancellationToken::new();
        let stopped = stop_admin.clone();
        let admin_service = crate::http::admin_router(self.app.clone())
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let admin_server = tokio::spawn(async move {
            axum::serve(admin, admin_service)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        });
        let router = crate::http::public_router(self.app.clone());
        let served = self.serve_router(listener, router, shutdown).await;
        stop_admin.cancel();
        let admin_result = admin_server
            .await
            .map_err(|e| std::io::Error::other(format!("admin listener task: {e}")))?;
        served.and(admin_result)
    }

    async fn serve_router(
        self,
        listener: TcpListener,
        router: axum::Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.app;
        let door = front_door::FrontDoor::new(router, &app.config.http);
        let stopping = CancellationToken::new();
        tokio::join!(
            async {
                shutdown.await;
                stopping.cancel();
            },
            door.run(listener, stopping.cancelled()),
            async {
                stopping.cancelled().await;
                drain(&app).await;
            },
        );
        Ok(())
    }
}

async fn drain(app: &AppState) {
    let running = app.jobs.running().len();
    app.jobs.stop_accepting();
    let clustered = app.jobs.bus().is_clustered();
    if clustered {
        tracing::info!(
            running,
            "draining: no new connections or jobs; sockets closed now (their tabs follow the jobs \
             from another replica), waiting for running jobs"
        );
        close_sockets(app).await;
    } else {
        tracing::info!(
            running,
            "draining: no new connections or jobs, waiting for running ones"
        );
    }
    let timeout = Duration::from_secs(app.config.server.drain_timeout_secs);
    if !app.jobs.wait_idle(timeout).await {
        tracing::warn!("drain timeout reached; failing the remaining jobs as recoverable");
        app.jobs.abort_all();
        app.jobs
            .wait_idle(Duration::from_secs(app.config.cli.kill_grace_secs + 5))
            .await;
    }
    let unwritten = app.jobs.write_unwritten_ends().await;
    if unwritten > 0 {
        tracing::error!(jobs = unwritten, "exiting with job ends the store never took; their rows are failed when their leases expire");
    }
    // The jobs' last events must reach the replicas whose sockets follow them.
    app.jobs.bus().flush(BUS_FLUSH_WAIT).await;
    if !clustered {
        close_sockets(app).await;
    }
    tracing::info!("drain complete");
}

/// Close every socket with 1012 and wait (bounded) for them to go.
async fn close_sockets(app: &AppState) {
    app.close_sockets.cancel();
    app.sockets.close_all();
    app.connections.close();
    if tokio::time::timeout(SOCKETS_CLOSE_WAIT, app.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some sockets did not close within 5 s");
    }
}
