//! One job from `processing` to its single terminal event. Backend events become wire
//! events the same way for both backends; the row is persisted off the hot path; whatever
//! happens — backend failure, cancel, timeout, store error — the job ends exactly once and
//! its slot is released.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tracing::Instrument;

use super::answer::Answer;
use super::engine::Engine;
use super::limits::Slot;
use super::live::LiveJob;
use super::outcome::{finish, Outcome};
use super::plan::{Plan, Prepare};
use super::unwritten::store_write;
use crate::backend::{Backend, BackendEvent, Failure, RunRequest};
use crate::metrics::METRICS;
use crate::store::models::{ChatRole, JobRow, JobStatus};
use crate::store::{JobUpdate, Store};
use crate::wire::protocol::{texts, JobResult, ServerMessage};

const PREPARING: &str = "実行環境を準備中...";
/// Backend events handled at most before the sockets are woken and the cancel and the
/// timeout are looked at again.
const BURST_MAX: usize = 64;
/// How long a job waits at most for a socket whose queue backs up before it leaves that
/// socket to overflow: a stalled tab costs the job this once, a slow one nothing.
const PACE_GRACE: Duration = Duration::from_secs(2);
/// Progress persisted at most this often while a job streams.
const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_millis(1000);

/// What a started job works on.
pub(super) struct Work {
    /// The project directory as the agent sees it.
    pub workspace: String,
    /// The user's message.
    pub message: String,
    /// The steps run before the backend starts.
    pub prepare: Box<dyn Prepare>,
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
    work: Work,
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
        let outcome = drive(&engine, &job, backend.as_ref(), work, &row_tx).await;
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

/// Prepare (the pipeline), then run the backend until a terminal event, a cancel or the job
/// timeout. The timeout and the cancel cover the preparation too.
async fn drive(
    engine: &Engine,
    job: &LiveJob,
    backend: &dyn Backend,
    work: Work,
    row_tx: &watch::Sender<Option<JobRow>>,
) -> Outcome {
    if let Some(row) = job.update_row(|r| r.status = JobStatus::Processing) {
        let update = JobUpdate {
            status: Some(JobStatus::Processing),
            ..JobUpdate::default()
        };
        let written = engine
            .store
            .update_job(job.id, &update)
            .instrument(store_write("update_job"))
            .await;
        if let Err(e) = written {
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
    let timeout = tokio::time::sleep(engine.config.job_timeout);
    tokio::pin!(timeout);
    // Made once: a fresh `cancelled()` per event would join and leave the waiter list each time.
    let cancelled = job.cancel_token().cancelled();
    tokio::pin!(cancelled);

    let progress = |value: i32, message: &str| publish_progress(value, message.to_string());
    let plan = tokio::select! {
        biased;
        _ = &mut cancelled => return cancelled_outcome(engine, job),
        _ = &mut timeout => {
            return Outcome::Failed(Failure::job_timeout(engine.config.job_timeout.as_secs()))
        }
        plan = work.prepare.prepare(backend.kind(), &progress) => plan,
    };
    let (skills_block, skills) = match plan {
        Plan::Answer {
            frames,
            history,
            result,
        } => return answer_without_generation(engine, job, frames, history, result).await,
        Plan::Generate {
            skills_block,
            skills,
        } => (skills_block, skills),
    };
    let request = RunRequest {
        job_id: job.id,
        user_id: job.user_id,
        project_id: job.project_id,
        prompt: engine
            .prompt
            .render(&work.workspace, &skills_block, &work.message),
        skills,
    };
    publish_progress(15, PREPARING.to_string());

    let backend_cancel = job.cancel_token().child_token();
    // The backend's own spans (and its task) start inside this one, so a trace shows the run
    // as one stage of the job.
    let run_span = tracing::info_span!("backend_run", backend = backend.kind().as_str());
    let mut events = run_span.in_scope(|| backend.run(request, backend_cancel.clone()));
    let hands_over = backend.hands_over_events();
    let mut meter = ProgressMeter { value: 20 };
    let mut answer = Answer::new(engine.config.answer_max_bytes);

    // One event's effect; `Some` ends the run.
    let mut handle = |event: Option<BackendEvent>| -> Option<Outcome> {
        let received = Instant::now();
        match event {
            Some(BackendEvent::Status(text)) => publish_progress(meter.status(), text),
            Some(BackendEvent::Text(text)) => {
                answer.push(&text);
                job.channel
                    .publish(&ServerMessage::Stream { content: text });
            }
            Some(BackendEvent::ToolUse(name)) => {
                publish_progress(meter.tool(), format!("実行中: {name}"));
                job.channel.publish(&ServerMessage::Stream {
                    content: format!("\n[{name}]\n"),
                });
            }
            Some(BackendEvent::Completed { commit }) => {
                tracing::info!(
                    commit = commit.as_deref().unwrap_or("-"),
                    "backend completed"
                );
                return Some(Outcome::Completed { generated: None });
            }
            Some(BackendEvent::Failed(failure)) => return Some(Outcome::Failed(failure)),
            // A backend ends its stream when the job's cancel reaches it, which can be seen
            // here before the cancel itself is.
            None if job.cancel_token().is_cancelled() => {
                return Some(cancelled_outcome(engine, job))
            }
            None => {
                return Some(Outcome::Failed(
                    Failure::stream_incomplete().with_detail("backend ended without an outcome"),
                ))
            }
        }
        METRICS
            .relay_latency
            .observe_secs(received.elapsed().as_secs_f64());
        None
    };
    let outcome = async {
        loop {
            tokio::select! {
                biased;
                _ = &mut cancelled => break cancelled_outcome(engine, job),
                _ = &mut timeout => {
                    backend_cancel.cancel();
                    break Outcome::Failed(Failure::job_timeout(engine.config.job_timeout.as_secs()));
                }
                event = events.next() => {
                    // The events that came with this one are handled before the sockets
                    // are woken, so each writes them together.
                    let held = job.channel.hold_wakes();
                    let mut ended = handle(event);
                    let mut handled = 1;
                    while ended.is_none() && handled < BURST_MAX {
                        // A backend whose reader is a task of its own (the local CLI, a
                        // proxied Modal run) hands over what it already read after one
                        // turn of the scheduler; waiting that turn for a run read here
                        // would only hold back the sockets' wake-ups.
                        let mut next = events.next().now_or_never();
                        if next.is_none() && hands_over {
                            tokio::task::yield_now().await;
                            next = events.next().now_or_never();
                        }
                        let Some(event) = next else { break };
                        ended = handle(event);
                        handled += 1;
                    }
                    if let Some(outcome) = ended {
                        break outcome;
                    }
                    drop(held);
                    if handled == BURST_MAX {
                        // More is ready: the sockets just woken write this burst before the
                        // next is read, and one whose queue backs up is waited for (a while),
                        // so a browser that reads keeps pace with however fast the upstream is.
                        tokio::task::yield_now().await;
                        if let Some(sink) = job.channel.backlogged() {
                            tokio::select! {
                                biased;
                                _ = &mut cancelled => break cancelled_outcome(engine, job),
                                drained = tokio::time::timeout(PACE_GRACE, sink.drained()) => {
                                    if drained.is_err() {
                                        job.channel.stop_pacing(sink.conn_id());
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    .instrument(run_span.clone())
    .await;

    if matches!(outcome, Outcome::Cancelled | Outcome::Failed(_)) {
        // Let the backend finish stopping (process group gone, connection closed) before the
        // job is reported over, bounded so a stuck backend cannot hold the job forever.
        backend_cancel.cancel();
        let wind_down = async { while events.next().await.is_some() {} }.instrument(run_span);
        if tokio::time::timeout(engine.config.cancel_wait, wind_down)
            .await
            .is_err()
        {
            tracing::warn!("backend did not stop within the cancel wait");
        }
    }
    if let Outcome::Completed { .. } = outcome {
        return finish_answer(job, answer);
    }
    outcome
}

/// What a fired cancel token means: another instance ended the row (a cancel it wrote, or a
/// lease sweep: say what the database says), the drain ran out of time, or a cancel.
fn cancelled_outcome(engine: &Engine, job: &LiveJob) -> Outcome {
    match (job.ended_elsewhere(), engine.abort_reason()) {
        (Some(row), _) if row.status == JobStatus::Failed => Outcome::Failed(
            Failure::instance_lost().with_detail("the job was failed by another instance"),
        ),
        (Some(_), _) => Outcome::Cancelled,
        (None, Some(failure)) => Outcome::Failed(failure),
        (None, None) => Outcome::Cancelled,
    }
}

/// A job the pipeline answered itself (a chat answer, the restore confirmation): its frames,
/// its history entry, then `completed` with its result.
async fn answer_without_generation(
    engine: &Engine,
    job: &LiveJob,
    frames: Vec<ServerMessage>,
    history: Option<String>,
    result: JobResult,
) -> Outcome {
    for frame in &frames {
        job.channel.publish(frame);
    }
    if let Some(entry) = history {
        if let Err(e) = engine
            .store
            .add_history(job.project_id, ChatRole::Assistant, &entry)
            .await
        {
            tracing::warn!(error = %e, "could not store the answer");
        }
    }
    job.update_row(|r| r.result = serde_json::to_string(&result).ok());
    Outcome::Completed { generated: None }
}

/// The assistant's answer as the job's result, and to be recorded with the terminal write.
fn finish_answer(job: &LiveJob, answer: Answer) -> Outcome {
    let message = answer
        .finish()
        .unwrap_or_else(|| texts::GAME_UPDATED.to_string());
    let result = JobResult {
        message,
        mode: None,
        generator: None,
        html: None,
    };
    job.update_row(|r| r.result = serde_json::to_string(&result).ok());
    Outcome::Completed {
        generated: Some(result.message),
    }
}

/// Persist the latest progress one interval after it changed, at most once per interval,
/// without ever delaying an event: a row's progress is at most that late, and a job that ends
/// sooner (its terminal write says it all) writes none.
fn spawn_progress_writer(
    store: Arc<dyn Store>,
    job_id: uuid::Uuid,
) -> (watch::Sender<Option<JobRow>>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = watch::channel::<Option<JobRow>>(None);
    let handle = tokio::spawn(
        async move {
            while rx.changed().await.is_ok() {
                tokio::time::sleep(PROGRESS_WRITE_INTERVAL).await;
                let latest = rx.borrow_and_update().clone();
                if let Some(row) = latest {
                    let update = JobUpdate {
                        progress: Some(row.progress),
                        progress_message: row.progress_message,
                        ..JobUpdate::default()
                    };
                    let written = store
                        .update_job(job_id, &update)
                        .instrument(store_write("update_job"))
                        .await;
                    if let Err(e) = written {
                        tracing::debug!(error = %e, "progress write failed");
                    }
                }
            }
        }
        .in_current_span(),
    );
    (tx, handle)
}
