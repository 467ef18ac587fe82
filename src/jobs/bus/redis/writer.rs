//! The one task that writes this instance's job events to Redis, a pipeline per batch, in
//! the order the jobs produced them, trimming each job's stream to its budgets. A job's
//! consecutive events in one batch (a burst of the job, several, or what it held while
//! nobody followed it: [`super::outbox`]) go out as one [`BatchWriter`]: one `XADD`, one
//! `PUBLISH`, whose answer tells the outbox whether another instance follows the job.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Weak;

use redis::RedisResult;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::batch;
use super::budget::StreamBudget;
use super::outbox::Run;
use super::shared::{entry_id, live_channel, stream_key, Part, Shared, WRITE_BATCH};

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
    let mut open: HashMap<Uuid, usize> = HashMap::new();
    for next in batch.drain(..) {
        if let Some(&index) = open.get(&next.job_id) {
            let run = &mut runs[index];
            if run.events.next_seq() == next.events.first() {
                run.events.extend(&next.events);
                run.queued += next.queued;
                continue;
            }
        }
        open.insert(next.job_id, runs.len());
        runs.push(next);
    }
    runs
}

/// Write `runs` in one pipeline; tell the outbox from each `PUBLISH` whether the job is
/// followed.
async fn write(shared: &Shared, streams: &mut HashMap<Uuid, JobStream>, runs: Vec<Run>) {
    let mut pipe = redis::pipe();
    let mut queued = 0;
    let mut ended = Vec::new();
    for run in &runs {
        queued += run.queued;
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
        pipe.cmd("XADD")
            .arg(&stream.key)
            .arg("MINID")
            .arg(entry_id(min_id))
            .arg(entry_id(events.last()))
            .arg(batch::FIELD)
            .arg(events.as_str())
            .ignore();
        // After the stream has it: a follower that sees it live can also read it back. Its
        // answer, how many subscribers it reached, is kept.
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
            streams.remove(&run.job_id);
            ended.push(run.job_id);
        }
    }
    let written: RedisResult<Vec<i64>> = async {
        let mut conn = shared.commands().await?;
        pipe.query_async(&mut conn).await
    }
    .await;
    // Counted until written, so `flush` knows when nothing is left in flight.
    shared.queued_bytes.fetch_sub(queued, Ordering::AcqRel);
    let mut outbox = shared.outbox.lock();
    match written {
        Ok(reached) => {
            shared.health.clear(Part::Writer);
            for (run, reached) in runs.iter().zip(reached) {
                outbox.heard(run.job_id, reached > 0);
            }
        }
        // These events reach other instances as a gap, filled from the database.
        Err(e) => shared.health.set(Part::Writer, e),
    }
    for job_id in ended {
        outbox.ended(job_id);
    }
}

/// Write the outbox's events to their streams, a pipeline per batch, in queue order, and
/// its held events when they are due.
pub(super) async fn write_events(shared: Weak<Shared>, mut queue: mpsc::UnboundedReceiver<Run>) {
    let mut streams: HashMap<Uuid, JobStream> = HashMap::new();
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        // No strong reference across the wait: the bus ends when its last user lets go.
        let Some((next_due, held_ready)) = shared
            .upgrade()
            .map(|shared| (shared.outbox.lock().next_due(), shared.held_ready.clone()))
        else {
            return;
        };
        tokio::select! {
            received = queue.recv_many(&mut batch, WRITE_BATCH) => {
                if received == 0 {
                    return;
                }
                // Behind the sockets the same bursts woke: they write to their browsers
                // first, and what else arrives meanwhile joins this pipeline.
                tokio::task::yield_now().await;
            }
            () = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
            () = held_ready.notified(), if next_due.is_none() => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        {
            let mut outbox = shared.outbox.lock();
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
        }
        let runs = join_runs(&mut batch);
        if !runs.is_empty() {
            write(&shared, &mut streams, runs).await;
        }
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
