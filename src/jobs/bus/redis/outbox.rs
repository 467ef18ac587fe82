//! The way every event of a job running here takes to the bus writer: at once, or held back
//! while no other instance follows the job (its last `PUBLISH` reached no subscriber).
//!
//! Held events wait up to [`UNFOLLOWED_DELAY`] and are then written together, one stream
//! entry for several, and without waking the writer for each: a job whose tabs all watch on
//! its own instance costs Redis and the writer a fraction of one write per event. An
//! instance that starts following a job subscribes, then announces itself on the control
//! channel ([`Outbox::followed_elsewhere`]): what the job holds is written at once, and its
//! events from then on. Without the announcement (lost with a Redis hiccup), the job's next
//! `PUBLISH` counts the follower all the same; it then waits at most that delay.

use std::collections::VecDeque;
use std::ops::Deref;
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::batch::{BatchWriter, Run};
use super::budget::HeldLimit;
use crate::jobs::event_kind::EventKind;

/// How long the events of a job nobody follows may wait to be written. Longer spares Redis
/// and the writer more work when jobs stream fast (at 50 events a second, 25 events per
/// entry); what it delays is a replica's first live events when it starts following and its
/// announcement is lost, and what a SIGKILL of this instance loses from the stream (the job
/// then fails anyway). At 100 ms Redis spent two to three times the CPU on tabs that all
/// watch on the owner (docs/benchmarks.md).
const UNFOLLOWED_DELAY: Duration = Duration::from_millis(500);

/// Held events due this soon after the ones that woke the writer leave with them, so the
/// writer wakes for held events at most about once per this.
const DUE_TOGETHER: Duration = Duration::from_millis(50);

/// What the outbox knows of a job running here: one lookup per event.
struct Job {
    /// Whether the job's last `PUBLISH` reached a subscriber (or a follower announced
    /// itself since).
    followed: bool,
    /// Pipelines numbered below this were made before a follower announced itself: their
    /// answer that nobody listened is older news.
    trusted_from: u64,
    /// Events waiting while nobody follows the job.
    held: Option<Held>,
}

/// Events of a job nobody follows, waiting until `due`.
struct Held {
    run: Run,
    due: Instant,
}

/// What became of a run handed to the [`Outbox`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HandedOn {
    /// Queued for the writer.
    Sent,
    /// Held; `first` when nothing else was (the writer then has no time to wake at yet).
    Held { first: bool },
    /// The writer is gone: these bytes of the publish queue are free again.
    Dropped(usize),
}

/// The writer's queue and the held events, under one lock: the writer drains its queue and
/// takes the due held events while holding it, so a job's events are written in order
/// whichever way each went.
pub(super) struct Outbox {
    writer: mpsc::UnboundedSender<Run>,
    limit: HeldLimit,
    /// Jobs handed on and not ended. A job starts as followed: a follower may be waiting
    /// from its first event. Only jobs in here are marked, so an answer that comes after a
    /// job's end adds nothing.
    jobs: FxHashMap<Uuid, Job>,
    /// Jobs with held events, by when those are due (holding order is due order). An entry
    /// whose events left early is skipped.
    due: VecDeque<(Instant, Uuid)>,
    /// Pipelines the writer has made (the next one's number).
    pipelines: u64,
    /// Jobs whose terminal event could not be queued, for the writer to forget.
    abandoned: Vec<Uuid>,
}

impl Outbox {
    pub(super) fn new(writer: mpsc::UnboundedSender<Run>, limit: HeldLimit) -> Self {
        Self {
            writer,
            limit,
            jobs: FxHashMap::default(),
            due: VecDeque::new(),
            pipelines: 0,
            abandoned: Vec::new(),
        }
    }

    /// Send the job's consecutive `events` (from `first_seq` on, `queued` bytes of the
    /// publish queue) to the writer, behind what the job holds, or hold them all if nobody
    /// follows the job, it goes on and what it holds stays within the limit. `now` is asked
    /// only when a hold starts.
    pub(super) fn hand_on<F: Deref<Target = str>>(
        &mut self,
        job_id: Uuid,
        first_seq: u64,
        events: &[(F, EventKind)],
        queued: usize,
        now: impl FnOnce() -> Instant,
    ) -> HandedOn {
        let job = self.jobs.entry(job_id).or_insert(Job {
            followed: true,
            trusted_from: 0,
            held: None,
        });
        let mut dropped = 0;
        let mut due = None;
        let run = match job.held.take() {
            // Straight into what the job holds: no batch of their own to make and join.
            Some(mut held) if held.run.events.next_seq() == first_seq => {
                held.run.events.append(events);
                held.run.queued += queued;
                due = Some(held.due);
                held.run
            }
            held => {
                // Events in between were dropped (the publish queue was full): the held
                // ones go first, on their own.
                if let Some(held) = held {
                    dropped += send(&self.writer, held.run);
                }
                Run {
                    job_id,
                    events: BatchWriter::of(first_seq, events),
                    queued,
                }
            }
        };
        let batch = &run.events;
        if job.followed || batch.ends_job() || !self.limit.admits(batch.len(), batch.as_str().len())
        {
            dropped += send(&self.writer, run);
            return if dropped > 0 {
                HandedOn::Dropped(dropped)
            } else {
                HandedOn::Sent
            };
        }
        let first = self.due.is_empty();
        let due = due.unwrap_or_else(|| {
            let at = now() + UNFOLLOWED_DELAY;
            self.due.push_back((at, job_id));
            at
        });
        job.held = Some(Held { run, due });
        if dropped > 0 {
            return HandedOn::Dropped(dropped);
        }
        HandedOn::Held { first }
    }

    /// When the earliest held events are due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.due.front().map(|(at, _)| *at)
    }

    /// Move the held events due by `now` (or soon after) to `out`.
    pub(super) fn take_due(&mut self, now: Instant, out: &mut Vec<Run>) {
        let horizon = now + DUE_TOGETHER;
        while let Some(&(at, job_id)) = self.due.front() {
            if at > horizon {
                break;
            }
            self.due.pop_front();
            let taken = self
                .jobs
                .get_mut(&job_id)
                .and_then(|job| job.held.take_if(|held| held.due <= horizon));
            if let Some(held) = taken {
                out.push(held.run);
            }
        }
    }

    /// The number of the pipeline the writer makes now, from what it takes out of here.
    pub(super) fn make_pipeline(&mut self) -> u64 {
        self.pipelines += 1;
        self.pipelines - 1
    }

    /// What the job's `PUBLISH` in pipeline `pipeline` said: whether it reached a subscriber.
    pub(super) fn heard(&mut self, job_id: Uuid, pipeline: u64, followed: bool) {
        if let Some(job) = self.jobs.get_mut(&job_id) {
            if followed || pipeline >= job.trusted_from {
                job.followed = followed;
            }
        }
    }

    /// Another instance subscribed to the job's live channel: write what the job holds now
    /// and its events at once from now on. Returns the bytes of the publish queue to free
    /// (the writer is gone).
    pub(super) fn followed_elsewhere(&mut self, job_id: Uuid) -> usize {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return 0;
        };
        job.followed = true;
        // A pipeline already made may have reached Redis before the follower subscribed.
        job.trusted_from = self.pipelines;
        // Its entry in `due` is skipped when reached.
        job.held
            .take()
            .map_or(0, |held| send(&self.writer, held.run))
    }

    /// The job's terminal event was written: nothing more of it comes.
    pub(super) fn ended(&mut self, job_id: Uuid) {
        // Nothing is held: the terminal event took it along.
        self.jobs.remove(&job_id);
    }

    /// The job's terminal event could not be queued (the publish queue was full): forget
    /// the job and what it held (its followers learn the end from the database). Returns
    /// the publish-queue bytes the held events took.
    pub(super) fn abandon(&mut self, job_id: Uuid) -> usize {
        self.abandoned.push(job_id);
        self.jobs
            .remove(&job_id)
            .and_then(|job| job.held)
            .map_or(0, |held| held.run.queued)
    }

    /// Jobs abandoned since the last call.
    pub(super) fn take_abandoned(&mut self) -> Vec<Uuid> {
        std::mem::take(&mut self.abandoned)
    }
}

/// Queue `run` for the writer; the bytes it held when the writer is gone.
fn send(writer: &mpsc::UnboundedSender<Run>, run: Run) -> usize {
    let queued = run.queued;
    match writer.send(run) {
        Ok(()) => 0,
        Err(_) => queued,
    }
}

#[cfg(test)]
mod tests;
