//! The way every event of a job running here takes to the bus writer: at once, or held back
//! while no other instance follows the job (its last `PUBLISH` reached no subscriber).
//!
//! Held events wait up to [`UNFOLLOWED_DELAY`] and are then written together, one stream
//! entry for several, and without waking the writer for each: a job whose tabs all watch on
//! its own instance costs Redis and the writer a fraction of one write per event. An
//! instance that starts following a job subscribes before it reads the stream, so the job's
//! next `PUBLISH` counts it and the job's events go at once from then on: the follower
//! misses nothing and waits for its first live events at most that delay.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::batch::BatchWriter;

/// How long the events of a job nobody follows may wait to be written. Longer spares Redis
/// more commands when jobs stream fast (at 50 events a second, five events per entry);
/// shorter lets a newly following instance see live events sooner.
const UNFOLLOWED_DELAY: Duration = Duration::from_millis(100);

/// Held events due this soon after the ones that woke the writer leave with them, so the
/// writer wakes for held events at most about once per this.
const DUE_TOGETHER: Duration = Duration::from_millis(10);

/// A run of one job's consecutive events on its way to Redis, and the bytes of the publish
/// queue it frees once written.
pub(super) struct Run {
    pub(super) job_id: Uuid,
    pub(super) events: BatchWriter,
    pub(super) queued: usize,
}

impl Run {
    /// Append `next` if it continues this run without a gap; false (and nothing changed)
    /// otherwise.
    pub(super) fn join(&mut self, next: &Run) -> bool {
        if self.events.next_seq() != next.events.first() {
            return false;
        }
        self.events.extend(&next.events);
        self.queued += next.queued;
        true
    }
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
    held: HashMap<Uuid, Held>,
    /// Jobs with held events, by when those are due (holding order is due order). An entry
    /// whose events left early is skipped.
    due: VecDeque<(Instant, Uuid)>,
    /// Jobs whose last `PUBLISH` reached nobody. A job starts as followed: a follower may be
    /// waiting from its first event.
    unfollowed: HashSet<Uuid>,
}

impl Outbox {
    pub(super) fn new(writer: mpsc::UnboundedSender<Run>) -> Self {
        Self {
            writer,
            held: HashMap::new(),
            due: VecDeque::new(),
            unfollowed: HashSet::new(),
        }
    }

    /// Send `run` to the writer, behind what the job holds, or hold it all if nobody
    /// follows the job and it goes on.
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
        if !self.unfollowed.contains(&job_id) || run.events.ends_job() {
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

    /// What the job's last `PUBLISH` said: whether it reached a subscriber.
    pub(super) fn heard(&mut self, job_id: Uuid, followed: bool) {
        if followed {
            self.unfollowed.remove(&job_id);
        } else {
            self.unfollowed.insert(job_id);
        }
    }

    /// The job's terminal event was written: nothing more of it comes.
    pub(super) fn ended(&mut self, job_id: Uuid) {
        self.unfollowed.remove(&job_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::event_kind::EventKind;

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
        let mut outbox = Outbox::new(tx);
        outbox.heard(id, false);
        (outbox, rx)
    }

    #[test]
    fn a_job_goes_at_once_until_redis_says_nobody_follows_it() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut outbox = Outbox::new(tx);
        assert_eq!(
            outbox.hand_on(run(id, 1, EventKind::Other), now),
            HandedOn::Sent
        );
        assert_eq!(sent(&mut rx), vec![(id, 1, 1)]);
        outbox.heard(id, false);
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
        outbox.heard(id, true);
        assert_eq!(
            outbox.hand_on(run(id, 5, EventKind::Stream), now),
            HandedOn::Sent
        );
        assert_eq!(sent(&mut rx), vec![(id, 4, 5)], "the held event joins");
    }

    #[test]
    fn a_gone_writer_gives_the_bytes_back() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let (tx, rx) = mpsc::unbounded_channel();
        drop(rx);
        let mut outbox = Outbox::new(tx);
        let one = run(id, 1, EventKind::Stream);
        let bytes = one.queued;
        assert_eq!(outbox.hand_on(one, now), HandedOn::Dropped(bytes));
    }
}
