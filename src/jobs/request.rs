//! What asking the registry for a job gives: the request a job runs, and the outcomes and
//! refusals of starting and cancelling one (mapped to wire errors by the socket handlers).

use std::sync::Arc;

use super::live::LiveJob;
use super::plan::Prepare;
use super::quota::QuotaRefusal;
use crate::backend::selector::SelectError;
use crate::store::models::{ActiveJobInfo, JobRow};
use crate::store::StoreError;

/// What happened when a job was asked to start.
#[derive(Debug)]
pub enum StartOutcome {
    /// A new job was created and is running here.
    Started(Arc<LiveJob>, JobRow),
    /// The project's job was already running here.
    Attached(Arc<LiveJob>, JobRow),
    /// The database has an unfinished job this process does not run (another instance).
    ExistingElsewhere(JobRow),
}

/// Why a job could not be started.
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

/// What happened when a job was asked to cancel.
#[derive(Debug)]
pub enum CancelOutcome {
    /// The job was unfinished and is now cancelled.
    Cancelled,
    /// The job had already finished; nothing changed.
    AlreadyFinished,
}

/// Why a job could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("job not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One generation request as the job runs it.
pub struct JobRequest {
    /// What the user typed: their history entry.
    pub history: String,
    /// What the job works on: the request plus anything the style gate added.
    pub message: String,
    /// The pre-job pipeline's part inside the job (intent, chat, skills).
    pub prepare: Box<dyn Prepare>,
}

impl std::fmt::Debug for JobRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRequest")
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}
