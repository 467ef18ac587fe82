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

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::batch::Run;
use super::budget::HeldLimit;

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

/// What the outbox knows of a job running here.
struct Watch {
    /// Whether the job's last `PUBLISH` reached a subscriber (or a follower announced
    /// itself since).
    followed: bool,
    /// Pipelines numbered below this were made before a follower announced itself: their
    /// answer that nobody listened is older news.
    trusted_from: u64,
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
    held: HashMap<Uuid, Held>,
    /// Jobs with held events, by when those are due (holding order is due order). An entry
    /// whose events left early is skipped.
    due: VecDeque<(Instant, Uuid)>,
    /// Jobs handed on and not ended. A job starts as followed: a follower may be waiting
    /// from its first event. Only jobs in here are marked, so an answer that comes after a
    /// job's end adds nothing.
    watched: HashMap<Uuid, Watch>,
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
            held: HashMap::new(),
            due: VecDeque::new(),
            watched: HashMap::new(),
            pipelines: 0,
            abandoned: Vec::new(),
        }
    }

    /// Send `run` to the writer, behind what the job holds, or hold it all if nobody
    /// follows the job, it goes on and what it holds stays within the limit.
    pub(super) fn hand_on(&mut self, mut run: Run, now: Instant) -> HandedOn {
        let job_id = run.job_id;
        let mut due = None;
        let mut dropped = 0;
        if let Some(mut held) = self.held.remove(&job_id) {
            if held.run.join(&run) {
                run = held.run;
                due = Some(held.due);
            } else {
                // Events in between were dropped (the publish queue was full): the held
                // ones go first, on their own.
                dropped += self.send(held.run);
            }
        }
        let followed = self
            .watched
            .entry(job_id)
            .or_insert(Watch {
                followed: true,
                trusted_from: 0,
            })
            .followed;
        let events = &run.events;
        if followed || events.ends_job() || !self.limit.admits(events.len(), events.as_str().len())
        {
            dropped += self.send(run);
            return if dropped > 0 {
                HandedOn::Dropped(dropped)
            } else {
                HandedOn::Sent
            };
        }
        let first = self.due.is_empty();
        let due = due.unwrap_or_else(|| {
            let at = now + UNFOLLOWED_DELAY;
            self.due.push_back((at, job_id));
            at
        });
        self.held.insert(job_id, Held { run, due });
        if dropped > 0 {
            return HandedOn::Dropped(dropped);
        }
        HandedOn::Held { first }
    }

    /// Queue `run` for the writer; the bytes it held when the writer is gone.
    fn send(&self, run: Run) -> usize {
        let queued = run.queued;
        match self.writer.send(run) {
            Ok(()) => 0,
            Err(_) => queued,
        }
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
            if self
                .held
                .get(&job_id)
                .is_some_and(|held| held.due <= horizon)
            {
                if let Some(held) = self.held.remove(&job_id) {
                    out.push(held.run);
                }
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
        if let Some(watch) = self.watched.get_mut(&job_id) {
            if followed || pipeline >= watch.trusted_from {
                watch.followed = followed;
            }
        }
    }

    /// Another instance subscribed to the job's live channel: write what the job holds now
    /// and its events at once from now on. Returns the bytes of the publish queue to free
    /// (the writer is gone).
    pub(super) fn followed_elsewhere(&mut self, job_id: Uuid) -> usize {
        let Some(watch) = self.watched.get_mut(&job_id) else {
            return 0;
        };
        watch.followed = true;
        // A pipeline already made may have reached Redis before the follower subscribed.
        watch.trusted_from = self.pipelines;
        // Its entry in `due` is skipped when reached.
        self.held
            .remove(&job_id)
            .map_or(0, |held| self.send(held.run))
    }

    /// The job's terminal event was written: nothing more of it comes.
    pub(super) fn ended(&mut self, job_id: Uuid) {
        self.watched.remove(&job_id);
    }

    /// The job's terminal event could not be queued (the publish queue was full): forget
    /// the job and what it held (its followers learn the end from the database). Returns
    /// the publish-queue bytes the held events took.
    pub(super) fn abandon(&mut self, job_id: Uuid) -> usize {
        self.watched.remove(&job_id);
        self.abandoned.push(job_id);
        self.held.remove(&job_id).map_or(0, |held| held.run.queued)
    }

    /// Jobs abandoned since the last call.
    pub(super) fn take_abandoned(&mut self) -> Vec<Uuid> {
        std::mem::take(&mut self.abandoned)
    }
}

#[cfg(test)]
mod tests;
