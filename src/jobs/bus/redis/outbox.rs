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
/// then fails anyway). 100 ms left tabs on the owner about 20 % slower than without Redis
/// (docs/benchmarks.md).
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
mod tests {
    use super::super::batch::BatchWriter;
    use super::*;
    use crate::jobs::event_kind::EventKind;

    const LIMIT: HeldLimit = HeldLimit {
        events: 1000,
        bytes: 1 << 20,
    };

    fn run(job_id: Uuid, seq: u64, kind: EventKind) -> Run {
        let events = BatchWriter::new(seq, kind, "{}");
        let queued = events.as_str().len();
        Run {
            job_id,
            events,
            queued,
        }
    }

    /// (job, first, last) of each run.
    fn spans(runs: &[Run]) -> Vec<(Uuid, u64, u64)> {
        runs.iter()
            .map(|run| (run.job_id, run.events.first(), run.events.last()))
            .collect()
    }

    fn sent(rx: &mut mpsc::UnboundedReceiver<Run>) -> Vec<(Uuid, u64, u64)> {
        let mut runs = Vec::new();
        while let Ok(run) = rx.try_recv() {
            runs.push(run);
        }
        spans(&runs)
    }

    /// An outbox that has heard that nobody follows job `id`.
    fn unfollowed(id: Uuid) -> (Outbox, mpsc::UnboundedReceiver<Run>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut outbox = Outbox::new(tx, LIMIT);
        // As a first write's answer would leave it.
        outbox.watched.insert(
            id,
            Watch {
                followed: false,
                trusted_from: 0,
            },
        );
        (outbox, rx)
    }

    #[test]
    fn a_job_goes_at_once_until_redis_says_nobody_follows_it() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut outbox = Outbox::new(tx, LIMIT);
        assert_eq!(
            outbox.hand_on(run(id, 1, EventKind::Other), now),
            HandedOn::Sent
        );
        assert_eq!(sent(&mut rx), vec![(id, 1, 1)]);
        outbox.heard(id, 0, false);
        assert_eq!(
            outbox.hand_on(run(id, 2, EventKind::Stream), now),
            HandedOn::Held { first: true }
        );
        assert!(sent(&mut rx).is_empty());
    }

    #[test]
    fn an_unfollowed_job_waits_and_leaves_as_one_run_when_due() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let (mut outbox, mut rx) = unfollowed(id);
        for seq in 1..=3 {
            let at = now + Duration::from_millis(seq * 10);
            assert_eq!(
                outbox.hand_on(run(id, seq, EventKind::Stream), at),
                HandedOn::Held { first: seq == 1 }
            );
        }
        // Due a delay after the first of them was held.
        let due = now + Duration::from_millis(10) + UNFOLLOWED_DELAY;
        assert_eq!(outbox.next_due(), Some(due));
        let mut out = Vec::new();
        outbox.take_due(due - 2 * DUE_TOGETHER, &mut out);
        assert!(out.is_empty(), "taken before it was due");
        outbox.take_due(due - DUE_TOGETHER, &mut out);
        assert_eq!(spans(&out), vec![(id, 1, 3)]);
        let queued: usize = (1..=3)
            .map(|seq| run(id, seq, EventKind::Stream).queued)
            .sum();
        assert_eq!(
            out[0].queued, queued,
            "frees what the publish queue counted"
        );
        assert!(sent(&mut rx).is_empty(), "held events never pass the queue");
        out.clear();
        outbox.take_due(now + 3 * UNFOLLOWED_DELAY, &mut out);
        assert!(out.is_empty(), "taken twice");
        assert_eq!(outbox.next_due(), None);
    }

    #[test]
    fn the_terminal_event_takes_the_held_ones_along_at_once() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let (mut outbox, mut rx) = unfollowed(id);
        outbox.hand_on(run(id, 1, EventKind::Stream), now);
        assert_eq!(
            outbox.hand_on(run(id, 2, EventKind::Completed), now),
            HandedOn::Sent
        );
        assert_eq!(sent(&mut rx), vec![(id, 1, 2)]);
        let mut out = Vec::new();
        outbox.take_due(now + 2 * UNFOLLOWED_DELAY, &mut out);
        assert!(out.is_empty(), "nothing left held");
    }

    #[test]
    fn held_events_go_first_when_events_were_dropped_or_the_job_is_followed_again() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let (mut outbox, mut rx) = unfollowed(id);
        outbox.hand_on(run(id, 1, EventKind::Stream), now);
        // Events 2 and 3 never reached the outbox (the publish queue was full).
        outbox.hand_on(run(id, 4, EventKind::Stream), now);
        assert_eq!(
            sent(&mut rx),
            vec![(id, 1, 1)],
            "the held event leaves alone"
        );
        outbox.heard(id, 0, true);
        assert_eq!(
            outbox.hand_on(run(id, 5, EventKind::Stream), now),
            HandedOn::Sent
        );
        assert_eq!(sent(&mut rx), vec![(id, 4, 5)], "the held event joins");
    }

    #[test]
    fn a_new_follower_elsewhere_gets_the_held_events_at_once() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let (mut outbox, mut rx) = unfollowed(id);
        outbox.hand_on(run(id, 1, EventKind::Stream), now);
        outbox.hand_on(run(id, 2, EventKind::Stream), now);
        assert_eq!(outbox.followed_elsewhere(id), 0);
        assert_eq!(sent(&mut rx), vec![(id, 1, 2)]);
        assert_eq!(
            outbox.hand_on(run(id, 3, EventKind::Stream), now),
            HandedOn::Sent
        );
        assert_eq!(sent(&mut rx), vec![(id, 3, 3)]);
        let mut out = Vec::new();
        outbox.take_due(now + 2 * UNFOLLOWED_DELAY, &mut out);
        assert!(out.is_empty(), "the held events left once");
        // A job that does not run here is none of this instance's business.
        let elsewhere = Uuid::new_v4();
        assert_eq!(outbox.followed_elsewhere(elsewhere), 0);
        assert!(!outbox.watched.contains_key(&elsewhere));
    }

    #[test]
    fn a_job_whose_end_could_not_be_queued_is_forgotten_with_what_it_held() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let (mut outbox, mut rx) = unfollowed(id);
        let held = run(id, 1, EventKind::Stream);
        let bytes = held.queued;
        outbox.hand_on(held, now);
        assert_eq!(outbox.abandon(id), bytes, "the held bytes are freed");
        assert!(outbox.watched.is_empty());
        assert_eq!(outbox.take_abandoned(), vec![id]);
        assert!(outbox.take_abandoned().is_empty());
        let mut out = Vec::new();
        outbox.take_due(now + 2 * UNFOLLOWED_DELAY, &mut out);
        assert!(
            out.is_empty() && sent(&mut rx).is_empty(),
            "nothing written"
        );
    }

    #[test]
    fn an_answer_after_the_jobs_end_leaves_nothing_behind() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut outbox = Outbox::new(tx, LIMIT);
        outbox.hand_on(run(id, 1, EventKind::Stream), now);
        outbox.hand_on(run(id, 2, EventKind::Completed), now);
        outbox.ended(id);
        // The first pipeline's answer arrives late.
        outbox.heard(id, 0, false);
        assert!(outbox.watched.is_empty());
    }

    #[test]
    fn held_events_leave_once_they_reach_the_limit() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let (mut outbox, mut rx) = unfollowed(id);
        outbox.limit = HeldLimit {
            events: 2,
            bytes: 1 << 20,
        };
        outbox.hand_on(run(id, 1, EventKind::Stream), now);
        assert_eq!(
            outbox.hand_on(run(id, 2, EventKind::Stream), now),
            HandedOn::Sent
        );
        assert_eq!(sent(&mut rx), vec![(id, 1, 2)]);
    }

    #[test]
    fn a_gone_writer_gives_the_bytes_back() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let (tx, rx) = mpsc::unbounded_channel();
        drop(rx);
        let mut outbox = Outbox::new(tx, LIMIT);
        let one = run(id, 1, EventKind::Stream);
        let bytes = one.queued;
        assert_eq!(outbox.hand_on(one, now), HandedOn::Dropped(bytes));
    }
}
