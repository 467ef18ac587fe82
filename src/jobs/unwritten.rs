//! A job's end that the store could not take (the database was unreachable when the job
//! ended), kept and written again until it lands. Without this the row would stay
//! `processing` and, once its lease ran out, a sweep would end it `failed` — unlike what
//! its watchers were told.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;
use uuid::Uuid;

use crate::store::{JobUpdate, Store, StoreError};

/// How often unwritten ends are tried again while any wait.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// At most this many ends wait; beyond it the oldest is given up (its row is then ended by
/// the sweep of expired leases, as after a crash).
pub const MAX_UNWRITTEN_ENDS: usize = 10_000;
/// Answers kept for unwritten ends, in bytes altogether; past it an end keeps only its
/// terminal update (the answer is in the `completed` frame its watchers received).
pub const MAX_UNWRITTEN_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// What a job's end writes: the terminal update, and a generation's answer with it.
pub(super) struct JobEnd {
    /// The job whose row ends.
    pub job_id: Uuid,
    /// Its terminal status, progress, result and error.
    pub update: JobUpdate,
    /// A completed generation's project and answer, recorded with the update.
    pub generated: Option<(Uuid, String)>,
}

impl JobEnd {
    /// Write the end: the answer together with the update where the store can, and the update
    /// alone when the answer cannot be recorded.
    pub(super) async fn write(&self, store: &dyn Store) -> Result<(), StoreError> {
        if let Some((project_id, answer)) = &self.generated {
            let together = store
                .complete_generation(self.job_id, &self.update, *project_id, answer)
                .instrument(store_write("complete_generation"))
                .await;
            match together {
                Ok(_) => return Ok(()),
                Err(e @ StoreError::Unavailable(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "could not record the generation (answer, initialized, version)")
                }
            }
        }
        store
            .update_job(self.job_id, &self.update)
            .instrument(store_write("update_job"))
            .await
            .map(drop)
    }

    fn answer_bytes(&self) -> usize {
        self.generated
            .as_ref()
            .map_or(0, |(_, answer)| answer.len())
    }
}

/// A child span of the job for one store write (`op` names the store call).
pub(super) fn store_write(op: &'static str) -> tracing::Span {
    tracing::info_span!("store_write", op)
}

/// The ends waiting for the store, oldest first.
#[derive(Default)]
struct Waiting {
    ends: VecDeque<JobEnd>,
    answer_bytes: usize,
    /// Whether a task is retrying them.
    retrying: bool,
}

/// The ends of this instance's jobs that the store has not taken yet.
#[derive(Default)]
pub(super) struct UnwrittenEnds {
    waiting: std::sync::Mutex<Waiting>,
    /// One writer at a time: an end written twice would record its answer twice.
    writing: tokio::sync::Mutex<()>,
}

impl UnwrittenEnds {
    /// Keep `end` and try it again every second until the store takes it.
    pub(super) fn keep(self: &Arc<Self>, mut end: JobEnd, store: Arc<dyn Store>) {
        let start_retrying = {
            let Ok(mut waiting) = self.waiting.lock() else {
                return;
            };
            if waiting.answer_bytes + end.answer_bytes() > MAX_UNWRITTEN_ANSWER_BYTES {
                end.generated = None;
            }
            waiting.answer_bytes += end.answer_bytes();
            waiting.ends.push_back(end);
            while waiting.ends.len() > MAX_UNWRITTEN_ENDS {
                if let Some(dropped) = waiting.ends.pop_front() {
                    waiting.answer_bytes -= dropped.answer_bytes();
                    tracing::error!(job_id = %dropped.job_id, "too many job ends wait for the store; this one is given up");
                }
            }
            !std::mem::replace(&mut waiting.retrying, true)
        };
        if start_retrying {
            let ends = Arc::clone(self);
            let span = tracing::info_span!("unwritten_ends");
            tokio::spawn(
                async move {
                    loop {
                        tokio::time::sleep(RETRY_EVERY).await;
                        if ends.write(store.as_ref()).await == 0 {
                            return;
                        }
                    }
                }
                .instrument(span),
            );
        }
    }

    /// Whether no end waits (most of the time: a lock and a length, no store call).
    pub(super) fn is_empty(&self) -> bool {
        self.waiting
            .lock()
            .map_or(true, |waiting| waiting.ends.is_empty())
    }

    /// Write what waits, oldest first, stopping at the first the store refuses. Returns how
    /// many still wait; at 0 the retrying task ends (the next `keep` starts another).
    pub(super) async fn write(&self, store: &dyn Store) -> usize {
        let _one_writer = self.writing.lock().await;
        loop {
            let next = {
                let Ok(mut waiting) = self.waiting.lock() else {
                    return 0;
                };
                match waiting.ends.pop_front() {
                    Some(end) => end,
                    None => {
                        waiting.retrying = false;
                        return 0;
                    }
                }
            };
            let written = next.write(store).instrument(job_span(next.job_id)).await;
            let Ok(mut waiting) = self.waiting.lock() else {
                return 0;
            };
            match written {
                Ok(()) => {
                    waiting.answer_bytes -= next.answer_bytes();
                    tracing::info!(job_id = %next.job_id, "job's end written after the store came back");
                }
                Err(e @ StoreError::Unavailable(_)) => {
                    tracing::debug!(error = %e, waiting = waiting.ends.len() + 1, "the store is still unreachable");
                    waiting.ends.push_front(next);
                    return waiting.ends.len();
                }
                Err(e) => {
                    // Reached, and refused: writing it again would fail the same way.
                    waiting.answer_bytes -= next.answer_bytes();
                    tracing::error!(job_id = %next.job_id, error = %e, "could not persist the job's end");
                }
            }
        }
    }
}

fn job_span(job_id: Uuid) -> tracing::Span {
    tracing::info_span!("job_end", %job_id)
}
