//! Live jobs of this process: start (or attach to) the one job of a project, find, cancel,
//! drain. Durable rows live in the store; the registry holds what only a running process
//! has — the event log, subscribers, the cancel handle and the concurrency slot.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::bus::{state_from_database, JobBus};
use super::channel::JobChannel;
use super::limits::{SlotError, SlotLimiter};
use super::prompt::PromptTemplate;
use super::quota::{QuotaPolicy, QuotaRefusal};
use super::runner;
use crate::auth::Identity;
use crate::backend::selector::{BackendSelector, SelectError};
use crate::backend::{BackendKind, RunRequest};
use crate::store::models::{ActiveJobInfo, JobRow, JobStatus};
use crate::store::{JobStart, JobUpdate, Lease, QuotaKind, Store, StoreError};

/// A job running in this process.
pub struct LiveJob {
    pub id: Uuid,
    pub user_id: Uuid,
    pub project_id: Uuid,
    pub backend: BackendKind,
    pub channel: Arc<JobChannel>,
    pub started_at: Instant,
    row: Mutex<JobRow>,
    cancel: CancellationToken,
    finished: CancellationToken,
    /// The row as another instance ended it (a cancel or a sweep written to the database).
    ended_elsewhere: std::sync::OnceLock<JobRow>,
}

impl LiveJob {
    pub fn row(&self) -> Option<JobRow> {
        self.row.lock().ok().map(|r| r.clone())
    }

    /// Mutate the in-memory row and return a copy for the event.
    pub(super) fn update_row(&self, f: impl FnOnce(&mut JobRow)) -> Option<JobRow> {
        let mut row = self.row.lock().ok()?;
        f(&mut row);
        row.updated_at = Utc::now();
        Some(row.clone())
    }

    pub(super) fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    pub(super) fn mark_finished(&self) {
        self.finished.cancel();
    }

    pub(super) fn ended_elsewhere(&self) -> Option<&JobRow> {
        self.ended_elsewhere.get()
    }
}

#[derive(Debug)]
pub enum StartOutcome {
    /// A new job was created and is running here.
    Started(Arc<LiveJob>, JobRow),
    /// The project's job was already running here.
    Attached(Arc<LiveJob>, JobRow),
    /// The database has an unfinished job this process does not run (another instance).
    ExistingElsewhere(JobRow),
}

impl std::fmt::Debug for LiveJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveJob")
            .field("id", &self.id)
            .field("backend", &self.backend)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("user slot limit reached")]
    UserLimit {
        limit: usize,
        in_progress: usize,
        jobs: Vec<ActiveJobInfo>,
    },
    #[error("system slot limit reached")]
    SystemBusy,
    #[error("daily message quota exhausted")]
    Quota(QuotaRefusal),
    #[error("the relay is draining")]
    Draining,
    #[error(transparent)]
    NoBackend(#[from] SelectError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
pub enum CancelOutcome {
    /// The job was unfinished and is now cancelled; its row.
    Cancelled(Option<JobRow>),
    /// The job had already finished; nothing changed.
    AlreadyFinished,
}

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("job not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct JobsConfig {
    pub job_timeout: Duration,
    /// How long a cancel waits for the backend to wind down before answering.
    pub cancel_wait: Duration,
    /// Absolute data directory (the local CLI's workspaces live below it).
    pub data_dir: PathBuf,
    /// This instance's lease on the jobs it runs.
    pub lease: Lease,
    /// How often leases are renewed and expired ones swept.
    pub lease_renew: Duration,
}

/// A failure kept for the ops console.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentFailure {
    pub at: String,
    pub job_id: Uuid,
    pub backend: BackendKind,
    pub code: String,
    pub detail: String,
}

const RECENT_FAILURES: usize = 50;

#[derive(Default)]
struct Maps {
    by_id: HashMap<Uuid, Arc<LiveJob>>,
    by_project: HashMap<Uuid, Uuid>,
}

pub struct Jobs {
    pub(super) store: Arc<dyn Store>,
    pub(super) selector: Arc<BackendSelector>,
    pub(super) config: JobsConfig,
    bus: Arc<dyn JobBus>,
    limiter: SlotLimiter,
    quota: QuotaPolicy,
    prompt: PromptTemplate,
    maps: Mutex<Maps>,
    start_locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    tracker: TaskTracker,
    accepting: AtomicBool,
    recent_failures: Mutex<std::collections::VecDeque<RecentFailure>>,
    /// Set when the drain ran out of time: cancelled jobs then fail recoverably instead.
    aborted: std::sync::OnceLock<crate::backend::Failure>,
}

impl Jobs {
    pub fn new(
        store: Arc<dyn Store>,
        selector: Arc<BackendSelector>,
        bus: Arc<dyn JobBus>,
        limiter: SlotLimiter,
        quota: QuotaPolicy,
        prompt: PromptTemplate,
        config: JobsConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            selector,
            bus,
            config,
            limiter,
            quota,
            prompt,
            maps: Mutex::new(Maps::default()),
            start_locks: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            accepting: AtomicBool::new(true),
            recent_failures: Mutex::new(std::collections::VecDeque::new()),
            aborted: std::sync::OnceLock::new(),
        })
    }

    /// This process's instance id (job rows name it as their owner).
    pub fn instance(&self) -> Uuid {
        self.config.lease.instance
    }

    pub fn bus(&self) -> &Arc<dyn JobBus> {
        &self.bus
    }

    /// The channel to follow the unfinished job `row` through: its own when it runs here,
    /// else a mirror of the instance running it (`None` on a single instance).
    pub fn channel_for(&self, row: &JobRow) -> Option<Arc<JobChannel>> {
        match self.live(row.id) {
            Some(job) => Some(Arc::clone(&job.channel)),
            None if row.status.is_active() => self.bus.follow(row),
            None => None,
        }
    }

    pub fn live_for_project(&self, project_id: Uuid) -> Option<Arc<LiveJob>> {
        let maps = self.maps.lock().ok()?;
        let id = maps.by_project.get(&project_id)?;
        maps.by_id.get(id).cloned()
    }

    pub fn live(&self, job_id: Uuid) -> Option<Arc<LiveJob>> {
        self.maps.lock().ok()?.by_id.get(&job_id).cloned()
    }

    pub fn running(&self) -> Vec<Arc<LiveJob>> {
        self.maps
            .lock()
            .map(|m| m.by_id.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// Stop taking new jobs (drain). Running jobs continue.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// Wait until every job task has finished, or `timeout` passes. True when all finished.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok()
    }

    /// End every running job as failed-recoverable (a drain that ran out of time).
    pub fn abort_all(&self) {
        let _ = self.aborted.set(crate::backend::Failure::server_shutdown());
        for job in self.running() {
            job.cancel.cancel();
        }
    }

    /// Why cancelled jobs end as failures, when the instance is shutting down.
    pub(super) fn abort_reason(&self) -> Option<crate::backend::Failure> {
        self.aborted.get().cloned()
    }

    async fn project_lock(&self, project_id: Uuid) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = match self.start_locks.lock() {
                Ok(l) => l,
                Err(poisoned) => poisoned.into_inner(),
            };
            // Forget locks nobody holds any more, so the map stays small.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            Arc::clone(locks.entry(project_id).or_default())
        };
        lock.lock_owned().await
    }

    /// Start the project's job, or return the one already unfinished. Quota and history are
    /// spent only when a new job really starts.
    pub async fn start(
        self: &Arc<Self>,
        who: &Identity,
        project_id: Uuid,
        content: &str,
    ) -> Result<StartOutcome, StartError> {
        if !self.is_accepting() {
            return Err(StartError::Draining);
        }
        // One start per user at a time across the cluster (the process's own lock below
        // serializes a project within this instance).
        let _turn = self.bus.start_turn(who.user_id).await;
        let _serialized = self.project_lock(project_id).await;
        if let Some(job) = self.live_for_project(project_id) {
            if let Some(row) = job.row() {
                return Ok(StartOutcome::Attached(job, row));
            }
        }
        if let Some(row) = self.store.active_job(project_id).await? {
            return Ok(StartOutcome::ExistingElsewhere(row));
        }
        let backend = self.selector.pick()?;
        if self.bus.is_clustered() {
            // Jobs on every instance count: the database knows them all.
            let jobs = self.store.active_jobs_for_user(who.user_id).await?;
            if jobs.len() >= self.limiter.per_user_limit() {
                return Err(StartError::UserLimit {
                    limit: self.limiter.per_user_limit(),
                    in_progress: jobs.len(),
                    jobs,
                });
            }
        }
        let slot = match self.limiter.try_acquire(who.user_id) {
            Ok(slot) => slot,
            Err(SlotError::User { in_progress }) => {
                let jobs = self
                    .store
                    .active_jobs_for_user(who.user_id)
                    .await
                    .unwrap_or_default();
                return Err(StartError::UserLimit {
                    limit: self.limiter.per_user_limit(),
                    in_progress,
                    jobs,
                });
            }
            Err(SlotError::System) => return Err(StartError::SystemBusy),
        };
        self.quota
            .consume(self.store.as_ref(), who.user_id, QuotaKind::MessagesSent)
            .await
            .map_err(StartError::Quota)?;
        self.store
            .add_user_message(who, project_id, content)
            .await?;
        let job_id = Uuid::now_v7();
        let row = match self
            .store
            .start_job(
                who.user_id,
                project_id,
                job_id,
                Utc::now(),
                &self.config.lease,
            )
            .await?
        {
            JobStart::Existing(row) => return Ok(StartOutcome::ExistingElsewhere(row)),
            JobStart::Created(row) => row,
        };
        let job = Arc::new(LiveJob {
            id: job_id,
            user_id: who.user_id,
            project_id,
            backend: backend.kind(),
            channel: Arc::new(JobChannel::new(
                job_id,
                who.user_id,
                project_id,
                Some(Arc::clone(&self.bus)),
            )),
            started_at: Instant::now(),
            row: Mutex::new(row.clone()),
            cancel: CancellationToken::new(),
            finished: CancellationToken::new(),
            ended_elsewhere: std::sync::OnceLock::new(),
        });
        if let Ok(mut maps) = self.maps.lock() {
            maps.by_id.insert(job_id, Arc::clone(&job));
            maps.by_project.insert(project_id, job_id);
        }
        let workspace = match backend.kind() {
            BackendKind::Modal => format!("/data/users/{}/projects/{project_id}", who.user_id),
            BackendKind::Local => crate::backend::local_cli::project_dir(
                &self.config.data_dir,
                who.user_id,
                project_id,
            )
            .display()
            .to_string(),
        };
        let request = RunRequest {
            job_id,
            user_id: who.user_id,
            project_id,
            prompt: self.prompt.render(&workspace, content),
        };
        let jobs = Arc::clone(self);
        self.tracker
            .spawn(runner::run(jobs, Arc::clone(&job), backend, request, slot));
        Ok(StartOutcome::Started(job, row))
    }

    pub(super) fn record_failure(&self, failure: RecentFailure) {
        if let Ok(mut recent) = self.recent_failures.lock() {
            if recent.len() == RECENT_FAILURES {
                recent.pop_back();
            }
            recent.push_front(failure);
        }
    }

    /// Newest first.
    pub fn recent_failures(&self) -> Vec<RecentFailure> {
        self.recent_failures
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forget a finished job (called by its runner just before the terminal event).
    pub(super) fn unregister(&self, job: &LiveJob) {
        if let Ok(mut maps) = self.maps.lock() {
            maps.by_id.remove(&job.id);
            if maps.by_project.get(&job.project_id) == Some(&job.id) {
                maps.by_project.remove(&job.project_id);
            }
        }
    }

    /// Cancel a job the user owns. Waits (bounded) until the backend stopped and the
    /// `cancelled` event went out, so the caller's reply follows it.
    pub async fn cancel(&self, user_id: Uuid, job_id: Uuid) -> Result<CancelOutcome, CancelError> {
        if let Some(job) = self.live(job_id) {
            if job.user_id != user_id {
                return Err(CancelError::NotFound);
            }
            job.cancel.cancel();
            let _ = tokio::time::timeout(self.config.cancel_wait, job.finished.cancelled()).await;
            return Ok(CancelOutcome::Cancelled(job.row()));
        }
        let row = self
            .store
            .get_job(job_id)
            .await?
            .filter(|row| row.user_id == user_id)
            .ok_or(CancelError::NotFound)?;
        if !row.status.is_active() {
            return Ok(CancelOutcome::AlreadyFinished);
        }
        // Unfinished in the database but not running here: ask the instance running it,
        // and wait (bounded) for it to stop the work and end the row.
        if self.bus.request_cancel(job_id).await {
            let deadline = tokio::time::Instant::now() + self.config.cancel_wait;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(REMOTE_CANCEL_POLL).await;
                match self.store.get_job(job_id).await? {
                    Some(row) if !row.status.is_active() => {
                        return Ok(CancelOutcome::Cancelled(Some(row)));
                    }
                    Some(_) => {}
                    None => return Err(CancelError::NotFound),
                }
            }
        }
        // Nobody answered (an orphan, or Redis is down): end the row here. A live owner sees
        // it at its next lease renewal and stops the work then.
        let update = JobUpdate {
            status: Some(JobStatus::Cancelled),
            ..JobUpdate::default()
        };
        Ok(CancelOutcome::Cancelled(
            self.store.update_job(job_id, &update).await?,
        ))
    }

    /// A job row the user owns (live copy first).
    pub async fn job_for_user(
        &self,
        user_id: Uuid,
        job_id: Uuid,
    ) -> Result<Option<JobRow>, StoreError> {
        if let Some(job) = self.live(job_id) {
            return Ok(job.row().filter(|r| r.user_id == user_id));
        }
        Ok(self
            .store
            .get_job(job_id)
            .await?
            .filter(|r| r.user_id == user_id))
    }

    /// The project's unfinished job as `activeJob` shows it: live row first, else the store's.
    pub async fn active_row(&self, project_id: Uuid) -> Result<Option<JobRow>, StoreError> {
        if let Some(job) = self.live_for_project(project_id) {
            return Ok(job.row());
        }
        self.store.active_job(project_id).await
    }

    /// Fail the jobs whose instance stopped renewing their lease (it died), and give their
    /// followers on every instance the `failed` event. Jobs of live instances are never
    /// touched. Returns how many were failed.
    pub async fn sweep_expired(&self) -> Result<usize, StoreError> {
        let failure = crate::backend::Failure::instance_lost();
        let rows = self.store.fail_expired_jobs(&failure.user_message).await?;
        for row in &rows {
            tracing::warn!(job_id = %row.id, user_id = %row.user_id, "job's instance stopped renewing its lease; failed");
            let (message, _) = state_from_database(row);
            self.bus.end_orphan(row, &message).await;
        }
        Ok(rows.len())
    }

    /// Extend the leases of the jobs running here. A job whose row another instance ended
    /// (a cancel or sweep written to the database) is stopped. A store that cannot be
    /// reached fails nothing: the leases are simply not extended this time.
    pub async fn renew_leases(&self) {
        let running = self.running();
        if running.is_empty() {
            return;
        }
        let ids: Vec<Uuid> = running.iter().map(|job| job.id).collect();
        let renewed = match self.store.renew_leases(&self.config.lease, &ids).await {
            Ok(renewed) => renewed,
            Err(e) => {
                tracing::warn!(error = %e, jobs = ids.len(), "could not renew job leases");
                return;
            }
        };
        for job in running.iter().filter(|job| !renewed.contains(&job.id)) {
            match self.store.get_job(job.id).await {
                Ok(Some(row)) if !row.status.is_active() => {
                    tracing::info!(job_id = %job.id, status = row.status.as_str(), "job ended by another instance");
                    let _ = job.ended_elsewhere.set(row);
                    job.cancel.cancel();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not read a job whose lease was not renewed"),
            }
        }
    }

    /// Another instance asked to cancel `job_id`: stop it if it runs here.
    pub fn cancel_requested(&self, job_id: Uuid) {
        if let Some(job) = self.live(job_id) {
            tracing::info!(%job_id, "cancel requested by another instance");
            job.cancel.cancel();
        }
    }
}

/// How often a cancel of another instance's job checks whether the row ended.
const REMOTE_CANCEL_POLL: Duration = Duration::from_millis(50);
