//! The one task that writes this instance's job events to Redis, a pipeline per batch, in
//! the order the jobs produced them, trimming each job's stream to its budgets. A job's
//! consecutive events in one batch (a burst of the job, or several) go out as one
//! [`BatchWriter`]: one `XADD`, one `PUBLISH`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use redis::RedisResult;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::batch::{self, BatchWriter};
use super::shared::{entry_id, live_channel, stream_key, Append, Part, Shared, WRITE_BATCH};
use crate::config::ClusterConfig;

/// What a job's stream holds, to trim it to both budgets with one `MINID`.
#[derive(Default)]
struct StreamBudget {
    /// Per entry: its id (last sequence number), events and bytes.
    entries: VecDeque<(u64, usize, usize)>,
    events: usize,
    bytes: usize,
}

/// A job the writer is writing: its Redis names (made once, not per event) and its budget.
struct JobStream {
    key: String,
    channel: String,
    budget: StreamBudget,
}

impl StreamBudget {
    /// Record entry `last` (`events` events, `len` bytes) and return the lowest entry id the
    /// stream keeps.
    fn keep(&mut self, last: u64, events: usize, len: usize, settings: &ClusterConfig) -> u64 {
        self.entries.push_back((last, events, len));
        self.events += events;
        self.bytes += len;
        while self.entries.len() > 1
            && (self.events > settings.stream_max_events || self.bytes > settings.stream_max_bytes)
        {
            if let Some((_, events, len)) = self.entries.pop_front() {
                self.events -= events;
                self.bytes -= len;
            }
        }
        self.entries.front().map_or(last, |(first, _, _)| *first)
    }
}

/// Write queued events to their streams, a pipeline per batch, in queue order.
pub(super) async fn write_events(
    shared: std::sync::Weak<Shared>,
    mut appends: mpsc::UnboundedReceiver<Append>,
) {
    let mut streams: HashMap<Uuid, JobStream> = HashMap::new();
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    // Runs of one job's consecutive events, in the order their first events came; the index
    // of each job's open run.
    let mut runs: Vec<(Uuid, BatchWriter)> = Vec::new();
    let mut open: HashMap<Uuid, usize> = HashMap::new();
    while appends.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        // Behind the sockets the same bursts woke: they write to their browsers first, and
        // what else arrives meanwhile joins this pipeline.
        tokio::task::yield_now().await;
        while batch.len() < WRITE_BATCH {
            match appends.try_recv() {
                Ok(append) => batch.push(append),
                Err(_) => break,
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut bytes = 0;
        for append in batch.drain(..) {
            bytes += append.run.as_str().len();
            if let Some(&index) = open.get(&append.job_id) {
                let run = &mut runs[index].1;
                if run.next_seq() == append.run.first() {
                    run.extend(&append.run);
                    continue;
                }
            }
            open.insert(append.job_id, runs.len());
            runs.push((append.job_id, append.run));
        }
        open.clear();
        let mut pipe = redis::pipe();
        for (job_id, run) in runs.drain(..) {
            let stream = streams.entry(job_id).or_insert_with(|| JobStream {
                key: stream_key(job_id),
                channel: live_channel(job_id),
                budget: StreamBudget::default(),
            });
            let min_id =
                stream
                    .budget
                    .keep(run.last(), run.len(), run.as_str().len(), &shared.settings);
            pipe.cmd("XADD")
                .arg(&stream.key)
                .arg("MINID")
                .arg(entry_id(min_id))
                .arg(entry_id(run.last()))
                .arg(batch::FIELD)
                .arg(run.as_str())
                .ignore();
            // After the stream has it: a follower that sees it live can also read it back.
            pipe.cmd("PUBLISH")
                .arg(&stream.channel)
                .arg(run.as_str())
                .ignore();
            if run.first() == 1 {
                pipe.cmd("EXPIRE")
                    .arg(&stream.key)
                    .arg(shared.running_expiry_secs)
                    .ignore();
            }
            if run.ends_job() {
                pipe.cmd("EXPIRE")
                    .arg(&stream.key)
                    .arg(shared.settings.stream_expire_secs)
                    .ignore();
                streams.remove(&job_id);
            }
        }
        let written: RedisResult<()> = async {
            let mut conn = shared.commands().await?;
            pipe.query_async(&mut conn).await
        }
        .await;
        // Counted until written, so `flush` knows when nothing is left in flight.
        shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        match written {
            Ok(()) => shared.health.clear(Part::Writer),
            // These events reach other instances as a gap, filled from the database.
            Err(e) => shared.health.set(Part::Writer, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_events: usize, max_bytes: usize) -> ClusterConfig {
        ClusterConfig {
            redis_url: crate::config::Secret::default(),
            lease_renew_secs: 5,
            lease_ttl_secs: 15,
            stream_max_events: max_events,
            stream_max_bytes: max_bytes,
            stream_expire_secs: 600,
            publish_queue_bytes: 1 << 20,
        }
    }

    #[test]
    fn streams_keep_both_budgets_and_never_trim_the_newest_entry() {
        let mut budget = StreamBudget::default();
        let by_count = settings(3, 1 << 20);
        assert_eq!(budget.keep(1, 1, 10, &by_count), 1);
        assert_eq!(budget.keep(2, 1, 10, &by_count), 1);
        assert_eq!(budget.keep(3, 1, 10, &by_count), 1);
        assert_eq!(budget.keep(4, 1, 10, &by_count), 2, "at most 3 events");
        assert_eq!(
            budget.keep(6, 2, 10, &by_count),
            4,
            "entries count their events"
        );

        let mut budget = StreamBudget::default();
        let by_bytes = settings(100, 25);
        assert_eq!(budget.keep(1, 1, 10, &by_bytes), 1);
        assert_eq!(budget.keep(2, 1, 10, &by_bytes), 1);
        assert_eq!(budget.keep(3, 1, 10, &by_bytes), 2, "at most 25 bytes");
        assert_eq!(
            budget.keep(9, 6, 100, &by_bytes),
            9,
            "an oversized entry stays alone"
        );
    }
}
