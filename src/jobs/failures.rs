//! The most recent job failures, kept for the ops console.

use std::collections::VecDeque;
use std::sync::Mutex;

use uuid::Uuid;

use crate::backend::BackendKind;

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

/// How many failures the console shows.
const RECENT_FAILURES: usize = 50;

/// A bounded, newest-first list of failures.
#[derive(Default)]
pub(super) struct FailureLog {
    recent: Mutex<VecDeque<RecentFailure>>,
}

impl FailureLog {
    pub(super) fn record(&self, failure: RecentFailure) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_FAILURES {
                recent.pop_back();
            }
            recent.push_front(failure);
        }
    }

    /// Newest first.
    pub(super) fn snapshot(&self) -> Vec<RecentFailure> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}
