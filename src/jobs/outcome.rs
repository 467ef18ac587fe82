//! How a job ends: its outcome, written to its row and told to its watchers exactly once,
//! after its project and slot are freed.

use super::engine::Engine;
use super::failures::RecentFailure;
use super::limits::Slot;
use super::live::LiveJob;
use super::unwritten::JobEnd;
use crate::backend::Failure;
use crate::metrics::METRICS;
use crate::store::models::JobStatus;
use crate::store::{JobUpdate, StoreError};
use crate::wire::protocol::{JobResult, ServerMessage};

/// How a job's run ended.
pub(super) enum Outcome {
    /// Done; `generated` is the answer of a generation, recorded with the terminal write.
    Completed {
        generated: Option<String>,
    },
    Failed(Failure),
    Cancelled,
}

/// Persist the terminal status, free the project and the slot, then publish the terminal
/// event.
pub(super) async fn finish(engine: &Engine, job: &LiveJob, mut outcome: Outcome, slot: Slot) {
    let (status, label) = match &outcome {
        Outcome::Completed { .. } => (JobStatus::Completed, "completed"),
        Outcome::Failed(_) => (JobStatus::Failed, "failed"),
        Outcome::Cancelled => (JobStatus::Cancelled, "cancelled"),
    };
    let error = match &outcome {
        Outcome::Failed(f) => Some(f.user_message.clone()),
        _ => None,
    };
    let row = job.update_row(|r| {
        r.status = status;
        if status == JobStatus::Completed {
            r.progress = 100;
        }
        if let Some(e) = &error {
            r.error = Some(e.clone());
        }
    });
    if let Some(row) = &row {
        let update = JobUpdate {
            status: Some(status),
            progress: Some(row.progress),
            progress_message: row.progress_message.clone(),
            result: row.result.clone(),
            error: row.error.clone(),
        };
        let end = JobEnd {
            job_id: job.id,
            update,
            // Taken, not copied: the answer can be `JOB_ANSWER_MAX_BYTES` long.
            generated: match &mut outcome {
                Outcome::Completed { generated } => {
                    generated.take().map(|answer| (job.project_id, answer))
                }
                _ => None,
            },
        };
        match end.write(engine.store.as_ref()).await {
            Ok(()) => {}
            Err(e @ StoreError::Unavailable(_)) => {
                tracing::warn!(error = %e, "the store is unreachable; the job's end is written when it answers again");
                engine
                    .unwritten
                    .keep(end, std::sync::Arc::clone(&engine.store));
            }
            Err(e) => {
                tracing::error!(error = %e, "could not persist the terminal status; the row is reaped when its lease expires");
            }
        }
    }
    // Free the project and the slot before telling anyone, so a follow-up message
    // starts a new job instead of attaching to this one or hitting the limit.
    engine.live.remove(job);
    drop(slot);
    METRICS.jobs_finished.inc(&[label, job.backend.as_str()]);

    let Some(row) = row else {
        job.mark_finished();
        return;
    };
    match outcome {
        Outcome::Completed { .. } => {
            let result = JobResult::stored_or_default(row.result.as_deref());
            tracing::info!("job completed");
            job.channel
                .publish(&ServerMessage::Completed { job: row, result });
        }
        Outcome::Failed(failure) => {
            tracing::warn!(code = %failure.code, detail = %failure.detail, exit_code = ?failure.exit_code, "job failed");
            METRICS.upstream_failures.inc(&[&failure.code]);
            engine.failures.record(RecentFailure {
                at: crate::store::models::iso_millis(&chrono::Utc::now()),
                job_id: job.id,
                backend: job.backend,
                code: failure.code.clone(),
                detail: failure.detail.clone(),
            });
            if job.backend == crate::backend::BackendKind::Modal {
                engine.selector.record_modal_failure(&failure);
            }
            job.channel.publish(&ServerMessage::Failed {
                job: row,
                error: failure.user_message.clone(),
                code: failure.code,
                user_message: failure.user_message,
                recoverable: failure.recoverable,
                exit_code: failure.exit_code,
            });
        }
        Outcome::Cancelled => {
            tracing::info!("job cancelled");
            job.channel.publish(&ServerMessage::Cancelled {
                job: Some(row),
                message: None,
                job_id: None,
            });
        }
    }
    job.mark_finished();
}
