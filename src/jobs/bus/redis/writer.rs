//! The one task that writes this instance's job events to Redis, a pipeline per batch, in
//! the order the jobs produced them, trimming each job's stream to its budgets. A job's
//! consecutive events in one batch (a burst of the job, or several) go out as one
//! [`BatchWriter`]: one `XADD`, one `PUBLISH`.
//!
//! A job that no other instance follows (its last `PUBLISH` reached no subscriber) is
//! written lazily: its events wait up to [`UNFOLLOWED_DELAY`] and go out together, one entry
//! for several. Its stream is then only there to catch up from, and an instance that starts
//! following subscribes before it reads the stream, so the job's next `PUBLISH` counts it
//! and the job is written at once from then on: the follower misses nothing and waits for
//! its first live events at most that delay.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use redis::RedisResult;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::batch::{self, BatchWriter};
use super::budget::StreamBudget;
use super::shared::{entry_id, live_channel, stream_key, Append, Part, Shared, WRITE_BATCH};

/// How long the events of a job nobody follows may wait to be written. Longer saves Redis
/// more commands when jobs stream fast (at 50 events a second, five events per entry);
/// shorter lets a newly following instance see live events sooner.
const UNFOLLOWED_DELAY: Duration = Duration::from_millis(100);

/// A job the writer is writing: its Redis names (made once, not per event), its budget,
/// and whether another instance follows it.
struct JobStream {
    key: String,
    channel: String,
    budget: StreamBudget,
    /// Whether the job's last `PUBLISH` reached a subscriber; until the first answer, as if
    /// it had (a follower may be waiting from the start).
    followed: bool,
    /// Events waiting while nobody follows.
    held: Option<Held>,
}

impl JobStream {
    fn new(job_id: Uuid) -> Self {
        Self {
            key: stream_key(job_id),
            channel: live_channel(job_id),
            budget: StreamBudget::default(),
            followed: true,
            held: None,
        }
    }
}

/// A run on its way to Redis, and the bytes of the publish queue it frees once written.
struct Run {
    job_id: Uuid,
    events: BatchWriter,
    queued: usize,
}

/// Events of a job nobody follows, waiting until `due`.
struct Held {
    events: BatchWriter,
    queued: usize,
    due: Instant,
}

/// The writer's state between batches.
#[derive(Default)]
struct Writer {
    streams: HashMap<Uuid, JobStream>,
    /// Jobs with held events, by when those are due (holding order is due order). An entry
    /// whose events left early is skipped.
    due: VecDeque<(Instant, Uuid)>,
}

impl Writer {
    /// The runs to write now: the appends in `batch`, a job's consecutive events as one
    /// run, joined by its held events; then the held events that are due. Runs of jobs
    /// nobody follows are held instead.
    fn take(&mut self, batch: &mut Vec<Append>, now: Instant) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::new();
        // The index of each job's open run in `runs`.
        let mut open: HashMap<Uuid, usize> = HashMap::new();
        for append in batch.drain(..) {
            let queued = append.run.as_str().len();
            if let Some(&index) = open.get(&append.job_id) {
                let run = &mut runs[index];
                if run.events.next_seq() == append.run.first() {
                    run.events.extend(&append.run);
                    run.queued += queued;
                    continue;
                }
            }
            open.insert(append.job_id, runs.len());
            runs.push(Run {
                job_id: append.job_id,
                events: append.run,
                queued,
            });
        }
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            self.hold_or_send(run, now, &mut out);
        }
        while let Some(&(at, job_id)) = self.due.front() {
            if at > now {
                break;
            }
            self.due.pop_front();
            let Some(stream) = self.streams.get_mut(&job_id) else {
                continue;
            };
            if stream.held.as_ref().is_some_and(|held| held.due <= now) {
                if let Some(held) = stream.held.take() {
                    out.push(Run {
                        job_id,
                        events: held.events,
                        queued: held.queued,
                    });
                }
            }
        }
        out
    }

    /// Join `run` to the job's held events, then hold them all if nobody follows the job and
    /// it goes on; otherwise send them.
    fn hold_or_send(&mut self, run: Run, now: Instant, out: &mut Vec<Run>) {
        let Run {
            job_id,
            mut events,
            mut queued,
        } = run;
        let stream = self
            .streams
            .entry(job_id)
            .or_insert_with(|| JobStream::new(job_id));
        let mut due = None;
        if let Some(held) = stream.held.take() {
            if held.events.next_seq() == events.first() {
                let mut joined = held.events;
                joined.extend(&events);
                events = joined;
                queued += held.queued;
                due = Some(held.due);
            } else {
                // Events in between were dropped (the publish queue was full): the held
                // ones go first, on their own.
                out.push(Run {
                    job_id,
                    events: held.events,
                    queued: held.queued,
                });
            }
        }
        if stream.followed || events.ends_job() {
            out.push(Run {
                job_id,
                events,
                queued,
            });
            return;
        }
        let due = due.unwrap_or_else(|| {
            let at = now + UNFOLLOWED_DELAY;
            self.due.push_back((at, job_id));
            at
        });
        stream.held = Some(Held {
            events,
            queued,
            due,
        });
    }

    /// Write `runs` in one pipeline and learn from each `PUBLISH` whether the job is followed.
    async fn write(&mut self, shared: &Shared, runs: Vec<Run>) {
        let mut pipe = redis::pipe();
        let mut queued = 0;
        for run in &runs {
            queued += run.queued;
            let events = &run.events;
            let stream = self
                .streams
                .entry(run.job_id)
                .or_insert_with(|| JobStream::new(run.job_id));
            let min_id = stream.budget.keep(
                events.last(),
                events.len(),
                events.as_str().len(),
                &shared.settings,
            );
            pipe.cmd("XADD")
                .arg(&stream.key)
                .arg("MINID")
                .arg(entry_id(min_id))
                .arg(entry_id(events.last()))
                .arg(batch::FIELD)
                .arg(events.as_str())
                .ignore();
            // After the stream has it: a follower that sees it live can also read it back.
            // The answer, how many subscribers it reached, is kept.
            pipe.cmd("PUBLISH")
                .arg(&stream.channel)
                .arg(events.as_str());
            if events.first() == 1 {
                pipe.cmd("EXPIRE")
                    .arg(&stream.key)
                    .arg(shared.running_expiry_secs)
                    .ignore();
            }
            if events.ends_job() {
                pipe.cmd("EXPIRE")
                    .arg(&stream.key)
                    .arg(shared.settings.stream_expire_secs)
                    .ignore();
                self.streams.remove(&run.job_id);
            }
        }
        let written: RedisResult<Vec<i64>> = async {
            let mut conn = shared.commands().await?;
            pipe.query_async(&mut conn).await
        }
        .await;
        // Counted until written, so `flush` knows when nothing is left in flight.
        shared.queued_bytes.fetch_sub(queued, Ordering::AcqRel);
        match written {
            Ok(reached) => {
                shared.health.clear(Part::Writer);
                for (run, reached) in runs.iter().zip(reached) {
                    if let Some(stream) = self.streams.get_mut(&run.job_id) {
                        stream.followed = reached > 0;
                    }
                }
            }
            // These events reach other instances as a gap, filled from the database.
            Err(e) => shared.health.set(Part::Writer, e),
        }
    }
}

/// Write queued events to their streams, a pipeline per batch, in queue order; the events
/// of jobs nobody follows when they are due.
pub(super) async fn write_events(
    shared: Weak<Shared>,
    mut appends: mpsc::UnboundedReceiver<Append>,
) {
    let mut writer = Writer::default();
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let next_due = writer.due.front().map(|(at, _)| *at);
        tokio::select! {
            received = appends.recv_many(&mut batch, WRITE_BATCH) => {
                if received == 0 {
                    return;
                }
                // Behind the sockets the same bursts woke: they write to their browsers
                // first, and what else arrives meanwhile joins this pipeline.
                tokio::task::yield_now().await;
                while batch.len() < WRITE_BATCH {
                    match appends.try_recv() {
                        Ok(append) => batch.push(append),
                        Err(_) => break,
                    }
                }
            }
            () = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let runs = writer.take(&mut batch, Instant::now());
        if !runs.is_empty() {
            writer.write(&shared, runs).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::event_kind::EventKind;

    fn append(job_id: Uuid, seq: u64, kind: EventKind) -> Append {
        Append {
            job_id,
            run: BatchWriter::new(seq, kind, "{}"),
        }
    }

    /// (job, first, last) of each run.
    fn spans(runs: &[Run]) -> Vec<(Uuid, u64, u64)> {
        runs.iter()
            .map(|run| (run.job_id, run.events.first(), run.events.last()))
            .collect()
    }

    /// A writer that has written job `id` once and heard that nobody follows it.
    fn unfollowed(id: Uuid) -> Writer {
        let mut writer = Writer::default();
        let mut stream = JobStream::new(id);
        stream.followed = false;
        writer.streams.insert(id, stream);
        writer
    }

    #[test]
    fn a_job_is_written_at_once_until_redis_says_nobody_follows_it() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let mut writer = Writer::default();
        let mut batch = vec![
            append(id, 1, EventKind::Other),
            append(id, 2, EventKind::Stream),
        ];
        let runs = writer.take(&mut batch, now);
        assert_eq!(spans(&runs), vec![(id, 1, 2)], "one run, sent now");
        assert!(batch.is_empty());
        assert!(writer.due.is_empty());
    }

    #[test]
    fn an_unfollowed_job_waits_and_leaves_as_one_run_when_due() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let mut writer = unfollowed(id);
        for seq in 1..=3 {
            let at = now + Duration::from_millis(seq * 10);
            let runs = writer.take(&mut vec![append(id, seq, EventKind::Stream)], at);
            assert!(runs.is_empty(), "event {seq} was sent before it was due");
        }
        let before_due = now + UNFOLLOWED_DELAY;
        assert!(writer.take(&mut Vec::new(), before_due).is_empty());
        let due = now + Duration::from_millis(10) + UNFOLLOWED_DELAY;
        let runs = writer.take(&mut Vec::new(), due);
        assert_eq!(spans(&runs), vec![(id, 1, 3)]);
        let queued: usize = (1..=3)
            .map(|seq| append(id, seq, EventKind::Stream).run.as_str().len())
            .sum();
        assert_eq!(
            runs[0].queued, queued,
            "frees what the publish queue counted"
        );
        assert!(writer.take(&mut Vec::new(), due).is_empty(), "sent once");
    }

    #[test]
    fn the_terminal_event_takes_the_held_ones_along_at_once() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let mut writer = unfollowed(id);
        assert!(writer
            .take(&mut vec![append(id, 1, EventKind::Stream)], now)
            .is_empty());
        let runs = writer.take(&mut vec![append(id, 2, EventKind::Completed)], now);
        assert_eq!(spans(&runs), vec![(id, 1, 2)]);
        assert!(runs[0].events.ends_job());
        let later = now + 2 * UNFOLLOWED_DELAY;
        assert!(
            writer.take(&mut Vec::new(), later).is_empty(),
            "nothing left held"
        );
    }

    #[test]
    fn held_events_go_first_when_events_were_dropped_or_the_job_is_followed_again() {
        let (id, now) = (Uuid::new_v4(), Instant::now());
        let mut writer = unfollowed(id);
        assert!(writer
            .take(&mut vec![append(id, 1, EventKind::Stream)], now)
            .is_empty());
        // Events 2 and 3 never reached the writer (the publish queue was full).
        let runs = writer.take(&mut vec![append(id, 4, EventKind::Stream)], now);
        assert_eq!(
            spans(&runs),
            vec![(id, 1, 1)],
            "the held event leaves on its own"
        );
        if let Some(stream) = writer.streams.get_mut(&id) {
            stream.followed = true;
        }
        let runs = writer.take(&mut vec![append(id, 5, EventKind::Stream)], now);
        assert_eq!(
            spans(&runs),
            vec![(id, 4, 5)],
            "the held event joins the followed one"
        );
        let due = now + UNFOLLOWED_DELAY;
        assert!(writer.take(&mut Vec::new(), due).is_empty(), "sent once");
    }
}
