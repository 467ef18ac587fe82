//! One job from `processing` to its single terminal event. Backend events become wire
//! events the same way for both backends; the row is persisted off the hot path; whatever
//! happens — backend failure, cancel, timeout, store error — the job ends exactly once and
//! its slot is released.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::watch;
use tracing::Instrument;

use super::engine::Engine;
use super::failures::RecentFailure;
use super::limits::Slot;
use super::live::LiveJob;
use crate::backend::{Backend, BackendEvent, Failure, RunRequest};
use crate::metrics::METRICS;
use crate::store::models::{ChatRole, JobRow, JobStatus};
use crate::store::{JobUpdate, Store};
use crate::wire::protocol::{JobResult, ServerMessage};

/// Shown when the agent wrote no text of its own.
pub(super) const DEFAULT_COMPLETION: &str = "ゲームを更新しました";
const PREPARING: &str = "実行環境を準備中...";
/// Progress persisted at most this often while a job streams.
const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_millis(1000);

enum Outcome {
    Completed,
    Failed(Failure),
    Cancelled,
}

/// Progress as upstream computes it (docs/backends.md §3.3/§3.4): status lines +10 (the first
/// lands on 30), tool uses +15, never above 90 before the end.
struct ProgressMeter {
    value: i32,
}

impl ProgressMeter {
    fn status(&mut self) -> i32 {
        self.value = (self.value + 10).min(90);
        self.value
    }
    fn tool(&mut self) -> i32 {
        self.value = (self.value + 15).min(90);
        self.value
    }
}

pub(super) async fn run(
    engine: Arc<Engine>,
    job: Arc<LiveJob>,
    backend: Arc<dyn Backend>,
    request: RunRequest,
    slot: Slot,
) {
    let span = tracing::info_span!(
        "job",
        instance = %engine.instance(),
        job_id = %job.id,
        user_id = %job.user_id,
        project_id = %job.project_id,
        backend = backend.kind().as_str()
    );
    async move {
        let backend_name = backend.kind().as_str();
        METRICS.job_state("processing", backend_name, 1);
        tracing::info!("job started");

        let (row_tx, writer) = spawn_progress_writer(Arc::clone(&engine.store), job.id);
        let outcome = drive(&engine, &job, backend.as_ref(), request, &row_tx).await;
        // The terminal write is guarded by status, so an in-flight progress write can never
        // overwrite it; stop the writer instead of waiting out its interval.
        drop(row_tx);
        writer.abort();

        finish(&engine, &job, outcome, slot).await;
        METRICS.job_state("processing", backend_name, -1);
        METRICS
            .job_duration
            .observe_secs(job.started_at.elapsed().as_secs_f64());
    }
    .instrument(span)
    .await
}

/// Run the backend until a terminal event, a cancel or the job timeout.
async fn drive(
    engine: &Engine,
    job: &LiveJob,
    backend: &dyn Backend,
    request: RunRequest,
    row_tx: &watch::Sender<Option<JobRow>>,
) -> Outcome {
    if let Some(row) = job.update_row(|r| r.status = JobStatus::Processing) {
        let update = JobUpdate {
            status: Some(JobStatus::Processing),
            ..JobUpdate::default()
        };
        if let Err(e) = engine.store.update_job(job.id, &update).await {
            tracing::warn!(error = %e, "could not persist processing status");
        }
        job.channel.publish(&ServerMessage::Started { job: row });
    }
    let publish_progress = |progress: i32, message: String| {
        if let Some(row) = job.update_row(|r| {
            r.progress = progress;
            r.progress_message = Some(message.clone());
        }) {
            let _ = row_tx.send(Some(row.clone()));
            job.channel.publish(&ServerMessage::Progress {
                job: row,
                progress,
                message: Some(message),
            });
        }
    };
    publish_progress(15, PREPARING.to_string());

    let backend_cancel = job.cancel_token().child_token();
    let mut events = backend.run(request, backend_cancel.clone());
    let timeout = tokio::time::sleep(engine.config.job_timeout);
    tokio::pin!(timeout);
    let mut meter = ProgressMeter { value: 20 };
    let mut answer = String::new();

    // Made once: a fresh `cancelled()` per event would join and leave the waiter list each time.
    let cancelled = job.cancel_token().cancelled();
    tokio::pin!(cancelled);

    let outcome = loop {
        tokio::select! {
            biased;
            _ = &mut cancelled => break match (job.ended_elsewhere(), engine.abort_reason()) {
                // Another instance ended the row (a cancel it wrote, or a lease sweep): say
                // what the database says.
                (Some(row), _) if row.status == JobStatus::Failed => Outcome::Failed(
                    Failure::instance_lost().with_detail("the job was failed by another instance"),
                ),
                (Some(_), _) => Outcome::Cancelled,
                (None, Some(failure)) => Outcome::Failed(failure),
                (None, None) => Outcome::Cancelled,
            },
            _ = &mut timeout => {
                backend_cancel.cancel();
                break Outcome::Failed(Failure::job_timeout(engine.config.job_timeout.as_secs()));
            }
            event = events.next() => {
                let received = Instant::now();
                match event {
                    Some(BackendEvent::Status(text)) => publish_progress(meter.status(), text),
                    Some(BackendEvent::Text(text)) => {
                        answer.push_str(&text);
                        job.channel.publish(&ServerMessage::Stream { content: text });
                    }
                    Some(BackendEvent::ToolUse(name)) => {
                        publish_progress(meter.tool(), format!("実行中: {name}"));
                        job.channel.publish(&ServerMessage::Stream { content: format!("\n[{name}]\n") });
                    }
                    Some(BackendEvent::Completed { commit }) => {
                        tracing::info!(commit = commit.as_deref().unwrap_or("-"), "backend completed");
                        break Outcome::Completed;
                    }
                    Some(BackendEvent::Failed(failure)) => break Outcome::Failed(failure),
                    None => break Outcome::Failed(Failure::stream_incomplete().with_detail("backend ended without an outcome")),
                }
                METRICS.relay_latency.observe_secs(received.elapsed().as_secs_f64());
            }
        }
    };

    if matches!(outcome, Outcome::Cancelled | Outcome::Failed(_)) {
        // Let the backend finish stopping (process group gone, connection closed) before the
        // job is reported over, bounded so a stuck backend cannot hold the job forever.
        backend_cancel.cancel();
        let wind_down = async { while events.next().await.is_some() {} };
        if tokio::time::timeout(engine.config.cancel_wait, wind_down)
            .await
            .is_err()
        {
            tracing::warn!("backend did not stop within the cancel wait");
        }
    }
    if let Outcome::Completed = outcome {
        return finish_answer(engine, job, answer).await;
    }
    outcome
}

/// Store the assistant's answer before the job is reported complete, so a socket that
/// re-selects the project right after `completed` sees it in `history`.
async fn finish_answer(engine: &Engine, job: &LiveJob, answer: String) -> Outcome {
    let message = match answer.trim() {
        "" => DEFAULT_COMPLETION.to_string(),
        text => text.to_string(),
    };
    if let Err(e) = engine
        .store
        .add_history(job.project_id, ChatRole::Assistant, &message)
        .await
    {
        tracing::warn!(error = %e, "could not store the assistant message");
    }
    if let Err(e) = engine.store.mark_initialized(job.project_id).await {
        tracing::warn!(error = %e, "could not mark the project initialized");
    }
    // A new version supersedes the one a restore had made current.
    if let Err(e) = engine.store.set_current_version(job.project_id, None).await {
        tracing::warn!(error = %e, "could not clear the current version");
    }
    let result = JobResult {
        message,
        mode: None,
        generator: None,
        html: None,
    };
    job.update_row(|r| r.result = serde_json::to_string(&result).ok());
    Outcome::Completed
}

async fn finish(engine: &Engine, job: &LiveJob, outcome: Outcome, slot: Slot) {
    let (status, label) = match &outcome {
        Outcome::Completed => (JobStatus::Completed, "completed"),
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
        if let Err(e) = engine.store.update_job(job.id, &update).await {
            tracing::error!(error = %e, "could not persist the terminal status; the row is reaped at next start");
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
        Outcome::Completed => {
            let result = row
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str::<JobResult>(r).ok())
                .unwrap_or(JobResult {
                    message: DEFAULT_COMPLETION.into(),
                    mode: None,
                    generator: None,
                    html: None,
                });
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

/// Persist the latest progress at most once per interval, without ever delaying an event.
fn spawn_progress_writer(
    store: Arc<dyn Store>,
    job_id: uuid::Uuid,
) -> (watch::Sender<Option<JobRow>>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = watch::channel::<Option<JobRow>>(None);
    let handle = tokio::spawn(
        async move {
            while rx.changed().await.is_ok() {
                let latest = rx.borrow_and_update().clone();
                if let Some(row) = latest {
                    let update = JobUpdate {
                        progress: Some(row.progress),
                        progress_message: row.progress_message,
                        ..JobUpdate::default()
                    };
                    if let Err(e) = store.update_job(job_id, &update).await {
                        tracing::debug!(error = %e, "progress write failed");
                    }
                }
                tokio::time::sleep(PROGRESS_WRITE_INTERVAL).await;
            }
        }
        .in_current_span(),
    );
    (tx, handle)
}
