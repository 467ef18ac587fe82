//! The outbox's tests: what is sent at once, held, joined, and let go.

use super::super::batch::{encoded_len, BatchWriter};
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

/// Hand event `seq` of job `id` (a frame `{}`) to the outbox at `at`.
fn hand_on(outbox: &mut Outbox, id: Uuid, seq: u64, kind: EventKind, at: Instant) -> HandedOn {
    let events = [("{}", kind)];
    outbox.hand_on(id, seq, &events, encoded_len(seq, &events), || at)
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
    outbox.jobs.insert(
        id,
        Job {
            followed: false,
            trusted_from: 0,
            held: None,
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
        hand_on(&mut outbox, id, 1, EventKind::Other, now),
        HandedOn::Sent
    );
    assert_eq!(sent(&mut rx), vec![(id, 1, 1)]);
    outbox.heard(id, 0, false);
    assert_eq!(
        hand_on(&mut outbox, id, 2, EventKind::Stream, now),
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
            hand_on(&mut outbox, id, seq, EventKind::Stream, at),
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
    hand_on(&mut outbox, id, 1, EventKind::Stream, now);
    assert_eq!(
        hand_on(&mut outbox, id, 2, EventKind::Completed, now),
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
    hand_on(&mut outbox, id, 1, EventKind::Stream, now);
    // Events 2 and 3 never reached the outbox (the publish queue was full).
    hand_on(&mut outbox, id, 4, EventKind::Stream, now);
    assert_eq!(
        sent(&mut rx),
        vec![(id, 1, 1)],
        "the held event leaves alone"
    );
    outbox.heard(id, 0, true);
    assert_eq!(
        hand_on(&mut outbox, id, 5, EventKind::Stream, now),
        HandedOn::Sent
    );
    assert_eq!(sent(&mut rx), vec![(id, 4, 5)], "the held event joins");
}

#[test]
fn a_new_follower_elsewhere_gets_the_held_events_at_once() {
    let (id, now) = (Uuid::new_v4(), Instant::now());
    let (mut outbox, mut rx) = unfollowed(id);
    hand_on(&mut outbox, id, 1, EventKind::Stream, now);
    hand_on(&mut outbox, id, 2, EventKind::Stream, now);
    assert_eq!(outbox.followed_elsewhere(id), 0);
    assert_eq!(sent(&mut rx), vec![(id, 1, 2)]);
    assert_eq!(
        hand_on(&mut outbox, id, 3, EventKind::Stream, now),
        HandedOn::Sent
    );
    assert_eq!(sent(&mut rx), vec![(id, 3, 3)]);
    let mut out = Vec::new();
    outbox.take_due(now + 2 * UNFOLLOWED_DELAY, &mut out);
    assert!(out.is_empty(), "the held events left once");
    // A job that does not run here is none of this instance's business.
    let elsewhere = Uuid::new_v4();
    assert_eq!(outbox.followed_elsewhere(elsewhere), 0);
    assert!(!outbox.jobs.contains_key(&elsewhere));
}

#[test]
fn a_job_whose_end_could_not_be_queued_is_forgotten_with_what_it_held() {
    let (id, now) = (Uuid::new_v4(), Instant::now());
    let (mut outbox, mut rx) = unfollowed(id);
    let bytes = run(id, 1, EventKind::Stream).queued;
    hand_on(&mut outbox, id, 1, EventKind::Stream, now);
    assert_eq!(outbox.abandon(id), bytes, "the held bytes are freed");
    assert!(outbox.jobs.is_empty());
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
    hand_on(&mut outbox, id, 1, EventKind::Stream, now);
    hand_on(&mut outbox, id, 2, EventKind::Completed, now);
    outbox.ended(id);
    // The first pipeline's answer arrives late.
    outbox.heard(id, 0, false);
    assert!(outbox.jobs.is_empty());
}

#[test]
fn held_events_leave_once_they_reach_the_limit() {
    let (id, now) = (Uuid::new_v4(), Instant::now());
    let (mut outbox, mut rx) = unfollowed(id);
    outbox.limit = HeldLimit {
        events: 2,
        bytes: 1 << 20,
    };
    hand_on(&mut outbox, id, 1, EventKind::Stream, now);
    assert_eq!(
        hand_on(&mut outbox, id, 2, EventKind::Stream, now),
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
    let bytes = run(id, 1, EventKind::Stream).queued;
    assert_eq!(
        hand_on(&mut outbox, id, 1, EventKind::Stream, now),
        HandedOn::Dropped(bytes)
    );
}

#[test]
fn an_answer_from_before_a_followers_announcement_is_not_believed() {
    let (id, now) = (Uuid::new_v4(), Instant::now());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut outbox = Outbox::new(tx, LIMIT);
    hand_on(&mut outbox, id, 1, EventKind::Stream, now);
    let early = outbox.make_pipeline();
    // The follower subscribed and announced itself after that pipeline reached Redis.
    outbox.followed_elsewhere(id);
    outbox.heard(id, early, false);
    hand_on(&mut outbox, id, 2, EventKind::Stream, now);
    assert_eq!(sent(&mut rx), vec![(id, 1, 1), (id, 2, 2)]);
    // A pipeline made after the announcement is believed.
    let later = outbox.make_pipeline();
    outbox.heard(id, later, false);
    assert_eq!(
        hand_on(&mut outbox, id, 3, EventKind::Stream, now),
        HandedOn::Held { first: true }
    );
}
