//! A job running in this process, and the map that finds it by job or by project.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use chrono::Utc;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::bus::JobBus;
use super::channel::{EventForward, JobChannel};
use crate::backend::BackendKind;
use crate::store::models::JobRow;

/// A job running in this process.
pub struct LiveJob {
    /// The job's id.
    pub id: Uuid,
    /// Who started it.
    pub user_id: Uuid,
    /// The project it works on.
    pub project_id: Uuid,
    /// The backend running it.
    pub backend: BackendKind,
    /// Sends its events to watching connections (and to the bus).
    pub channel: Arc<JobChannel>,
    /// When it started, for its duration.
    pub started_at: Instant,
    row: Mutex<JobRow>,
    cancel: CancellationToken,
    finished: CancellationToken,
    /// The row as another instance ended it (a cancel or a sweep written to the database).
    ended_elsewhere: OnceLock<JobRow>,
}

impl LiveJob {
    /// A job about to run, from its freshly created row; its events also go to `bus`.
    /// `log_max_bytes` bounds the job's replay log.
    pub(super) fn new(
        row: JobRow,
        backend: BackendKind,
        bus: Arc<dyn JobBus>,
        log_max_bytes: usize,
    ) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            project_id: row.project_id,
            backend,
            channel: Arc::new(JobChannel::new(
                row.id,
                row.user_id,
                row.project_id,
                log_max_bytes,
                // Alone, nobody else needs the events: no hand-off per event at all.
                bus.is_clustered().then_some(bus as Arc<dyn EventForward>),
            )),
            started_at: Instant::now(),
            row: Mutex::new(row),
            cancel: CancellationToken::new(),
            finished: CancellationToken::new(),
            ended_elsewhere: OnceLock::new(),
        }
    }

    /// A copy of the job's current row.
    pub fn row(&self) -> Option<JobRow> {
        Some(self.row.lock().clone())
    }

    /// Mutate the in-memory row and return a copy for the event.
    pub(super) fn update_row(&self, f: impl FnOnce(&mut JobRow)) -> Option<JobRow> {
        let mut row = self.row.lock();
        f(&mut row);
        row.updated_at = Utc::now();
        Some(row.clone())
    }

    /// Fired by a cancel (or an aborted drain); the runner stops the backend.
    pub(super) fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Ask the runner to stop the job.
    pub(super) fn request_cancel(&self) {
        self.cancel.cancel();
    }

    /// Another instance ended the job's row: stop the job and report what the row says.
    pub(super) fn end_as(&self, row: JobRow) {
        let _ = self.ended_elsewhere.set(row);
        self.cancel.cancel();
    }

    /// The row as another instance ended it, if one did.
    pub(super) fn ended_elsewhere(&self) -> Option<&JobRow> {
        self.ended_elsewhere.get()
    }

    /// Called by the runner once the terminal event went out.
    pub(super) fn mark_finished(&self) {
        self.finished.cancel();
    }

    /// Resolves once the terminal event went out.
    pub(super) async fn finished(&self) {
        self.finished.cancelled().await
    }
}

impl std::fmt::Debug for LiveJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveJob")
            .field("id", &self.id)
            .field("backend", &self.backend)
            .finish()
    }
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<Uuid, Arc<LiveJob>>,
    by_project: HashMap<Uuid, Uuid>,
}

/// The jobs this process runs, by id and by project (at most one per project).
#[derive(Default)]
pub(super) struct LiveJobs {
    maps: Mutex<Maps>,
}

impl LiveJobs {
    pub(super) fn insert(&self, job: &Arc<LiveJob>) {
        let mut maps = self.maps.lock();
        maps.by_id.insert(job.id, Arc::clone(job));
        maps.by_project.insert(job.project_id, job.id);
    }

    pub(super) fn for_project(&self, project_id: Uuid) -> Option<Arc<LiveJob>> {
        let maps = self.maps.lock();
        let id = maps.by_project.get(&project_id)?;
        maps.by_id.get(id).cloned()
    }

    pub(super) fn get(&self, job_id: Uuid) -> Option<Arc<LiveJob>> {
        self.maps.lock().by_id.get(&job_id).cloned()
    }

    pub(super) fn all(&self) -> Vec<Arc<LiveJob>> {
        self.maps.lock().by_id.values().cloned().collect()
    }

    /// Forget a finished job (called by its runner just before the terminal event).
    pub(super) fn remove(&self, job: &LiveJob) {
        let mut maps = self.maps.lock();
        maps.by_id.remove(&job.id);
        if maps.by_project.get(&job.project_id) == Some(&job.id) {
            maps.by_project.remove(&job.project_id);
        }
    }
}
