//! What the registry that starts jobs and the runner that drives them share: the store,
//! the backend selector, the job bus, the live-job map, the failure log and the drain's
//! abort reason.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::bus::JobBus;
use super::failures::FailureLog;
use super::live::LiveJobs;
use super::prompt::PromptTemplate;
use super::unwritten::UnwrittenEnds;
use crate::backend::selector::BackendSelector;
use crate::backend::Failure;
use crate::store::{Lease, Store};

/// Settings of the job engine.
pub struct JobsConfig {
    /// The longest a job may run.
    pub job_timeout: Duration,
    /// How long a cancel waits for the backend to wind down before answering.
    pub cancel_wait: Duration,
    /// Absolute data directory (the local CLI's workspaces live below it).
    pub data_dir: PathBuf,
    /// What a job keeps for sockets that subscribe mid-job (`JOB_LOG_MAX_BYTES`).
    pub log_max_bytes: usize,
    /// The answer a job accumulates, stores and sends with `completed` (`JOB_ANSWER_MAX_BYTES`).
    pub answer_max_bytes: usize,
    /// This instance's lease on the jobs it runs.
    pub lease: Lease,
    /// How often leases are renewed and expired ones swept.
    pub lease_renew: Duration,
}

/// State shared by every job of this process.
pub(super) struct Engine {
    pub(super) store: Arc<dyn Store>,
    pub(super) selector: Arc<BackendSelector>,
    pub(super) bus: Arc<dyn JobBus>,
    pub(super) config: JobsConfig,
    pub(super) live: LiveJobs,
    pub(super) failures: FailureLog,
    /// Ends of jobs the store could not take when they ended, written when it answers again.
    pub(super) unwritten: Arc<UnwrittenEnds>,
    /// The agent's prompt, rendered once the pipeline chose the skills.
    pub(super) prompt: PromptTemplate,
    /// Set when the drain ran out of time: cancelled jobs then fail recoverably instead.
    aborted: OnceLock<Failure>,
}

impl Engine {
    pub(super) fn new(
        store: Arc<dyn Store>,
        selector: Arc<BackendSelector>,
        bus: Arc<dyn JobBus>,
        config: JobsConfig,
        prompt: PromptTemplate,
    ) -> Self {
        Self {
            store,
            selector,
            bus,
            config,
            prompt,
            live: LiveJobs::default(),
            failures: FailureLog::default(),
            unwritten: Arc::default(),
            aborted: OnceLock::new(),
        }
    }

    /// This process's instance id (job rows name it as their owner).
    pub(super) fn instance(&self) -> uuid::Uuid {
        self.config.lease.instance
    }

    /// From now on, cancelled jobs end as this failure (the drain ran out of time).
    pub(super) fn abort_with(&self, failure: Failure) {
        let _ = self.aborted.set(failure);
    }

    /// Why cancelled jobs end as failures, when the instance is shutting down.
    pub(super) fn abort_reason(&self) -> Option<Failure> {
        self.aborted.get().cloned()
    }
}
