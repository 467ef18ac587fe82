//! Live jobs of this process: start (or attach to) the one job of a project, find, cancel,
//! drain. Durable rows live in the store; the registry holds what only a running process
//! has — the event log, subscribers, the cancel handle and the concurrency slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use parking_lot::Mutex;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::bus::{state_from_database, JobBus};
use super::channel::JobChannel;
use super::engine::{Engine, JobsConfig};
use super::failures::RecentFailure;
use super::limits::{Slot, SlotError, SlotLimiter};
use super::live::LiveJob;
use super::prompt::PromptTemplate;
use super::published_end;
use super::quota::QuotaPolicy;
use super::request::{CancelError, CancelOutcome, JobRequest, StartError, StartOutcome};
use super::runner;
use crate::auth::Identity;
use crate::backend::selector::{BackendSelector, SelectError};
use crate::backend::{Backend, BackendKind, Failure};
use crate::metrics::METRICS;
use crate::store::models::{JobRow, JobStatus};
use crate::store::{JobStart, JobUpdate, QuotaKind, StartLimits, Store, StoreError};

/// How often a cancel of another instance's job checks whether the row ended.
const REMOTE_CANCEL_POLL: Duration = Duration::from_millis(50);

/// Starts, finds, cancels and drains the jobs of this process.
pub struct Jobs {
    engine: Arc<Engine>,
    limiter: SlotLimiter,
    quota: QuotaPolicy,
    start_locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    tracker: TaskTracker,
    accepting: AtomicBool,
}

/// Why a start was refused before it reached the store.
enum Refused {
    NoBackend(SelectError),
    Slot(SlotError),
}

impl Jobs {
    /// Builds the registry of running jobs.
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
            engine: Arc::new(Engine::new(store, selector, bus, config, prompt)),
            limiter,
            quota,
            start_locks: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            accepting: AtomicBool::new(true),
        })
    }

    /// This process's instance id (job rows name it as their owner).
    pub fn instance(&self) -> Uuid {
        self.engine.instance()
    }

    /// How often leases are renewed and expired ones swept.
    pub fn lease_renew(&self) -> Duration {
        self.engine.config.lease_renew
    }

    pub fn bus(&self) -> &Arc<dyn JobBus> {
        &self.engine.bus
    }

    /// The channel to follow the unfinished job `row` through: its own when it runs here,
    /// else a mirror of the instance running it (`None` on a single instance).
    pub fn channel_for(&self, row: &JobRow) -> Option<Arc<JobChannel>> {
        match self.live(row.id) {
            Some(job) => Some(Arc::clone(&job.channel)),
            None if row.status.is_active() => self.engine.bus.follow(row),
            None => None,
        }
    }

    /// The project's job, if it runs in this process.
    pub fn live_for_project(&self, project_id: Uuid) -> Option<Arc<LiveJob>> {
        self.engine.live.for_project(project_id)
    }

    /// The job, if it runs in this process.
    pub fn live(&self, job_id: Uuid) -> Option<Arc<LiveJob>> {
        self.engine.live.get(job_id)
    }

    /// Every job running in this process.
    pub fn running(&self) -> Vec<Arc<LiveJob>> {
        self.engine.live.all()
    }

    /// Whether new jobs are accepted (false while draining).
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

    /// Write the ends the store could not take when their jobs ended; returns how many still
    /// wait (for a drain, the last chance before their rows are left to the lease sweep).
    pub async fn write_unwritten_ends(&self) -> usize {
        self.engine
            .unwritten
            .write(self.engine.store.as_ref())
            .await
    }

    /// End every running job as failed-recoverable (a drain that ran out of time).
    pub fn abort_all(&self) {
        self.engine.abort_with(Failure::server_shutdown());
        for job in self.running() {
            job.request_cancel();
        }
    }

    /// Take one of the user's daily messages and store the request in the chat history, in
    /// one store call; when the quota cannot be checked, the message is allowed and stored.
    async fn charge(
        &self,
        who: &Identity,
        project_id: Uuid,
        history: &str,
    ) -> Result<(), StartError> {
        let store = self.engine.store.as_ref();
        if self.quota.enabled() {
            let charged = store
                .charge_message(who, project_id, QuotaPolicy::limit, history)
                .await;
            if QuotaPolicy::judge(charged, QuotaKind::MessagesSent).map_err(StartError::Quota)? {
                return Ok(());
            }
        }
        store.add_user_message(who, project_id, history).await?;
        Ok(())
    }

    /// The refusal of a start over the user's slots, listing the jobs that hold them.
    async fn user_limit(&self, who: &Identity, in_progress: usize) -> StartError {
        let jobs = self
            .engine
            .store
            .active_jobs_for_user(who.user_id)
            .await
            .unwrap_or_default();
        StartError::UserLimit {
            limit: self.limiter.per_user_limit(),
            in_progress: in_progress.max(jobs.len()),
            jobs,
        }
    }

    /// The backend the job runs on and one of the user's slots.
    fn backend_and_slot(&self, user_id: Uuid) -> Result<(Arc<dyn Backend>, Slot), Refused> {
        let backend = self.engine.selector.pick().map_err(Refused::NoBackend)?;
        let slot = self.limiter.try_acquire(user_id).map_err(Refused::Slot)?;
        Ok((backend, slot))
    }

    async fn project_lock(&self, project_id: Uuid) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.start_locks.lock();
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
        request: JobRequest,
    ) -> Result<StartOutcome, StartError> {
        if !self.is_accepting() {
            return Err(StartError::Draining);
        }
        // The process's own lock serializes a project within this instance; the store's
        // transaction serializes it across instances.
        let _serialized = self.project_lock(project_id).await;
        if let Some(job) = self.live_for_project(project_id) {
            if let Some(row) = job.row() {
                return Ok(StartOutcome::Attached(job, row));
            }
        }
        let (backend, slot) = match self.backend_and_slot(who.user_id) {
            Ok(taken) => taken,
            Err(refused) => {
                // A job of the project running elsewhere is otherwise found by `start_job`;
                // a message refused before it attaches to that job rather than failing.
                if let Some(row) = self.engine.store.active_job(project_id).await? {
                    return Ok(StartOutcome::ExistingElsewhere(row));
                }
                return Err(match refused {
                    Refused::NoBackend(e) => StartError::NoBackend(e),
                    Refused::Slot(SlotError::User { in_progress }) => {
                        self.user_limit(who, in_progress).await
                    }
                    Refused::Slot(SlotError::System) => StartError::SystemBusy,
                });
            }
        };
        if !self.engine.unwritten.is_empty() {
            // An ended job's row left `processing` would be taken for the project's running job.
            self.write_unwritten_ends().await;
        }
        let job_id = Uuid::now_v7();
        // Clustered, the slots count every instance's jobs, checked and taken in the job's
        // own transaction; alone, the slot limiter above holds them.
        let limits = if self.engine.bus.is_clustered() {
            StartLimits {
                per_user: Some(self.limiter.per_user_limit()),
                total: Some(self.limiter.total_limit()),
            }
        } else {
            StartLimits::NONE
        };
        let row = match self
            .engine
            .store
            .start_job(
                who.user_id,
                project_id,
                job_id,
                Utc::now(),
                &self.engine.config.lease,
                limits,
            )
            .await?
        {
            JobStart::Existing(row) => return Ok(StartOutcome::ExistingElsewhere(row)),
            JobStart::UserFull => {
                let in_progress = self.limiter.per_user_limit();
                return Err(self.user_limit(who, in_progress).await);
            }
            JobStart::Full => return Err(StartError::SystemBusy),
            JobStart::Created(row) => row,
        };
        // Quota and history only for a job that really starts; a refusal takes the row back.
        if let Err(refused) = self.charge(who, project_id, &request.history).await {
            if let Err(e) = self.engine.store.discard_job(job_id).await {
                tracing::warn!(error = %e, %job_id, "could not discard a refused job");
            }
            return Err(refused);
        }
        let job = Arc::new(LiveJob::new(
            row.clone(),
            backend.kind(),
            Arc::clone(&self.engine.bus),
            self.engine.config.log_max_bytes,
        ));
        self.engine.live.insert(&job);
        let workspace = match backend.kind() {
            BackendKind::Modal => format!("/data/users/{}/projects/{project_id}", who.user_id),
            BackendKind::Local => crate::backend::local_cli::project_dir(
                &self.engine.config.data_dir,
                who.user_id,
                project_id,
            )
            .display()
            .to_string(),
        };
        let work = runner::Work {
            workspace,
            message: request.message,
            prepare: request.prepare,
        };
        let engine = Arc::clone(&self.engine);
        self.tracker
            .spawn(runner::run(engine, Arc::clone(&job), backend, work, slot));
        Ok(StartOutcome::Started(job, row))
    }

    /// Newest first.
    pub fn recent_failures(&self) -> Vec<RecentFailure> {
        self.engine.failures.snapshot()
    }

    /// Cancel a job the user owns. Waits (bounded) until the backend stopped and the
    /// `cancelled` event went out, so the caller's reply follows it.
    pub async fn cancel(&self, user_id: Uuid, job_id: Uuid) -> Result<CancelOutcome, CancelError> {
        if let Some(job) = self.live(job_id) {
            if job.user_id != user_id {
                return Err(CancelError::NotFound);
            }
            job.request_cancel();
            let _ = tokio::time::timeout(self.engine.config.cancel_wait, job.finished()).await;
            return Ok(CancelOutcome::Cancelled);
        }
        let row = self
            .engine
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
        if self.engine.bus.request_cancel(job_id).await {
            let deadline = tokio::time::Instant::now() + self.engine.config.cancel_wait;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(REMOTE_CANCEL_POLL).await;
                match self.engine.store.get_job(job_id).await? {
                    Some(row) if !row.status.is_active() => return Ok(CancelOutcome::Cancelled),
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
        self.engine.store.update_job(job_id, &update).await?;
        Ok(CancelOutcome::Cancelled)
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
            .engine
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
        self.engine.store.active_job(project_id).await
    }

    /// Fail the jobs whose instance stopped renewing their lease (it died), and give their
    /// followers on every instance the `failed` event. Jobs of live instances are never
    /// touched. Returns how many were failed.
    pub async fn sweep_expired(&self) -> Result<usize, StoreError> {
        // Ends first, so rows end as their watchers saw them end: this instance's own, then
        // those other instances published but could not write.
        self.write_unwritten_ends().await;
        if published_end::write_published_ends(&self.engine).await? == Some(0) {
            // Every expired job just read is ended: the same `WHERE` again would find nothing
            // (a lease lapsing meanwhile is the next tick's).
            return Ok(0);
        }
        let failure = Failure::instance_lost();
        let rows = self
            .engine
            .store
            .fail_expired_jobs(&failure.user_message)
            .await?;
        METRICS
            .jobs_lease_swept
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        for row in &rows {
            tracing::warn!(job_id = %row.id, user_id = %row.user_id, "job's instance stopped renewing its lease; failed");
            let (message, _) = state_from_database(row);
            self.engine.bus.end_orphan(row, &message).await;
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
        let store = &self.engine.store;
        let renewed = match store.renew_leases(&self.engine.config.lease, &ids).await {
            Ok(renewed) => renewed,
            Err(e) => {
                tracing::warn!(error = %e, jobs = ids.len(), "could not renew job leases");
                return;
            }
        };
        for job in running.iter().filter(|job| !renewed.contains(&job.id)) {
            match store.get_job(job.id).await {
                Ok(Some(row)) if !row.status.is_active() => {
                    tracing::info!(job_id = %job.id, status = row.status.as_str(), "job ended by another instance");
                    job.end_as(row);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not read a job whose lease was not renewed")
                }
            }
        }
    }
}
