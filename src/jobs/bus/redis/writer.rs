//! The one task that writes this instance's job events to Redis, a pipeline per batch, in
//! the order the jobs produced them, trimming each job's stream to its budgets. A job's
//! consecutive events in one batch (a burst of the job, several, or what it held while
//! nobody followed it: [`super::outbox`]) go out as one [`super::batch::BatchWriter`]: one
//! `XADD`, one `PUBLISH`, whose answer tells the outbox whether another instance follows
//! the job. A batch leaves as soon as it is made, up to [`MAX_IN_FLIGHT`] pipelines ahead of
//! their answers, in the order they were made.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Weak;

use futures::stream::{FuturesOrdered, StreamExt};

use redis::RedisResult;
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::batch;
use super::batch::Run;
use super::budget::StreamBudget;
use super::shared::{live_channel, stream_key, EntryId, Part, Shared, WRITE_BATCH};

/// A job the writer is writing: its Redis names (made once, not per event) and its budget.
struct JobStream {
    key: String,
    channel: String,
    budget: StreamBudget,
}

impl JobStream {
    fn new(job_id: Uuid) -> Self {
        Self {
            key: stream_key(job_id),
            channel: live_channel(job_id),
            budget: StreamBudget::default(),
        }
    }
}

/// A job's consecutive runs in `batch` joined into one, in the order their first events came.
fn join_runs(batch: &mut Vec<Run>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::with_capacity(batch.len());
    // The index of each job's open run in `runs`.
    let mut open: FxHashMap<Uuid, usize> = FxHashMap::default();
    for next in batch.drain(..) {
        if let Some(&index) = open.get(&next.job_id) {
            if runs[index].join(&next) {
                continue;
            }
        }
        open.insert(next.job_id, runs.len());
        runs.push(next);
    }
    runs
}

/// What a pipeline in flight carries for its answer: its number (from the outbox), the jobs
/// it published (in order), the jobs it ended, and the publish-queue bytes it frees.
struct Sent {
    number: u64,
    jobs: Vec<Uuid>,
    ended: Vec<Uuid>,
    queued: usize,
}

/// A pipeline on its way: its answer (how many subscribers each `PUBLISH` reached) and what
/// it carried.
type InFlight = Pin<Box<dyn Future<Output = (RedisResult<Vec<i64>>, Sent)> + Send>>;

/// Pipelines sent and not yet answered, at most: the next batch leaves without waiting for
/// the previous answer, so an event never waits a Redis round trip behind another. One
/// after a failed answer: while the connection is being made again, a pipeline cannot be
/// handed to it at once, and two waiting for it could reach Redis in either order.
const MAX_IN_FLIGHT: usize = 4;

/// The pipeline that writes `runs`.
fn pipeline(
    shared: &Shared,
    streams: &mut FxHashMap<Uuid, JobStream>,
    number: u64,
    runs: Vec<Run>,
) -> (redis::Pipeline, Sent) {
    // Room for each run's `XADD` and `PUBLISH` and an `EXPIRE` or two.
    let mut pipe = redis::Pipeline::with_capacity(runs.len() * 2 + 2);
    let mut sent = Sent {
        number,
        jobs: Vec::with_capacity(runs.len()),
        ended: Vec::new(),
        queued: 0,
    };
    for run in &runs {
        sent.queued += run.queued;
        sent.jobs.push(run.job_id);
        let events = &run.events;
        let stream = streams
            .entry(run.job_id)
            .or_insert_with(|| JobStream::new(run.job_id));
        let min_id = stream.budget.keep(
            events.last(),
            events.len(),
            events.as_str().len(),
            &shared.settings,
        );
        let (min_id, last_id) = (EntryId::new(min_id), EntryId::new(events.last()));
        let args = [
            b"XADD".as_slice(),
            stream.key.as_bytes(),
            b"MINID",
            min_id.as_bytes(),
            last_id.as_bytes(),
            batch::FIELD.as_bytes(),
            events.as_str().as_bytes(),
        ];
        pipe.add_command(command(&args)).ignore();
        // After the stream has it: a follower that sees it live can also read it back. Its
        // answer, how many subscribers it reached, is kept.
        let args = [
            b"PUBLISH".as_slice(),
            stream.channel.as_bytes(),
            events.as_str().as_bytes(),
        ];
        pipe.add_command(command(&args));
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
            streams.remove(&run.job_id);
            sent.ended.push(run.job_id);
        }
    }
    (pipe, sent)
}

/// A command of `args`, its buffer sized once: a run's events are the bulk of it, and
/// growing the buffer argument by argument copied them again.
fn command(args: &[&[u8]]) -> redis::Cmd {
    let bytes = args.iter().map(|arg| arg.len()).sum();
    let mut cmd = redis::Cmd::with_capacity(args.len(), bytes);
    for arg in args {
        cmd.arg(*arg);
    }
    cmd
}

/// A pipeline's answer: free its bytes, tell the outbox whether each job is followed.
/// Returns whether Redis answered.
fn answered(shared: &Shared, written: RedisResult<Vec<i64>>, sent: Sent) -> bool {
    // Counted until written, so `flush` knows when nothing is left in flight.
    shared.queued_bytes.fetch_sub(sent.queued, Ordering::AcqRel);
    let mut outbox = shared.outbox.lock();
    for job_id in &sent.ended {
        outbox.ended(*job_id);
    }
    match written {
        Ok(reached) => {
            shared.health.clear(Part::Writer);
            for (job_id, reached) in sent.jobs.iter().zip(reached) {
                if !sent.ended.contains(job_id) {
                    outbox.heard(*job_id, sent.number, reached > 0);
                }
            }
            true
        }
        // These events reach other instances as a gap, filled from the database.
        Err(e) => {
            shared.health.set(Part::Writer, e);
            false
        }
    }
}

/// How many pipelines may be in flight after an answer (see [`MAX_IN_FLIGHT`]).
fn in_flight_after(answered: bool) -> usize {
    if answered {
        MAX_IN_FLIGHT
    } else {
        1
    }
}

/// Write the outbox's events to their streams, a pipeline per batch, in queue order, and
/// its held events when they are due.
pub(super) async fn write_events(shared: Weak<Shared>, mut queue: mpsc::UnboundedReceiver<Run>) {
    let mut streams: FxHashMap<Uuid, JobStream> = FxHashMap::default();
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
    let mut max_in_flight = MAX_IN_FLIGHT;
    loop {
        // No strong reference across the wait: the bus ends when its last user lets go.
        let Some((next_due, held_ready)) = shared
            .upgrade()
            .map(|shared| (shared.outbox.lock().next_due(), shared.held_ready.clone()))
        else {
            return;
        };
        // With as many pipelines in flight as allowed, only an answer is waited for.
        let may_send = in_flight.len() < max_in_flight;
        tokio::select! {
            Some((written, sent)) = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(shared) = shared.upgrade() {
                    max_in_flight = in_flight_after(answered(&shared, written, sent));
                }
                continue;
            }
            received = queue.recv_many(&mut batch, WRITE_BATCH), if may_send => {
                if received == 0 {
                    return;
                }
                // Behind the sockets the same bursts woke: they write to their browsers
                // first, and what else arrives meanwhile joins this pipeline.
                tokio::task::yield_now().await;
            }
            () = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if may_send && next_due.is_some() => {}
            () = held_ready.notified(), if may_send && next_due.is_none() => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (number, abandoned) = {
            let mut outbox = shared.outbox.lock();
            let number = outbox.make_pipeline();
            while batch.len() < WRITE_BATCH {
                match queue.try_recv() {
                    Ok(run) => batch.push(run),
                    Err(_) => break,
                }
            }
            // Only behind everything queued before them: a job's held events are always
            // newer than its queued ones.
            if batch.len() < WRITE_BATCH {
                outbox.take_due(Instant::now(), &mut batch);
            }
            // A job is abandoned after all its queued runs, and only the outbox queues runs
            // (under this lock): with the queue empty, they are all in this batch.
            let abandoned = if queue.is_empty() {
                outbox.take_abandoned()
            } else {
                Vec::new()
            };
            (number, abandoned)
        };
        let runs = join_runs(&mut batch);
        let built = (!runs.is_empty()).then(|| pipeline(&shared, &mut streams, number, runs));
        for job_id in abandoned {
            streams.remove(&job_id);
        }
        let Some((pipe, sent)) = built else {
            continue;
        };
        let conn = match shared.commands().await {
            Ok(conn) => conn,
            Err(e) => {
                max_in_flight = in_flight_after(answered(&shared, Err(e), sent));
                continue;
            }
        };
        let mut query: InFlight = Box::pin(async move {
            let mut conn = conn;
            (pipe.query_async(&mut conn).await, sent)
        });
        // Polled once now, which hands the pipeline to the connection: pipelines reach
        // Redis in the order they were made.
        if let std::task::Poll::Ready((written, sent)) = futures::poll!(query.as_mut()) {
            max_in_flight = in_flight_after(answered(&shared, written, sent));
            continue;
        }
        in_flight.push_back(query);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::event_kind::EventKind;

    fn run(job_id: Uuid, seq: u64) -> Run {
        Run {
            job_id,
            events: batch::BatchWriter::new(seq, EventKind::Stream, "{}"),
            queued: 1,
        }
    }

    #[test]
    fn a_jobs_consecutive_runs_join_and_a_gap_starts_a_new_one() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut batch = vec![run(a, 1), run(b, 7), run(a, 2), run(a, 5), run(b, 8)];
        let runs = join_runs(&mut batch);
        let spans: Vec<_> = runs
            .iter()
            .map(|r| (r.job_id, r.events.first(), r.events.last(), r.queued))
            .collect();
        assert_eq!(
            spans,
            vec![(a, 1, 2, 2), (b, 7, 8, 2), (a, 5, 5, 1)],
            "in the order their first events came"
        );
        assert!(batch.is_empty());
    }
}
