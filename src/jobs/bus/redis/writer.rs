//! The one task that writes this instance's job events to Redis, a pipeline per batch, in
//! the order the jobs produced them, trimming each job's stream to its budgets.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use redis::RedisResult;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::shared::{
    entry_id, live_channel, live_message, stream_key, Append, Part, Shared, WRITE_BATCH,
};
use crate::config::ClusterConfig;

/// What a job's stream holds, to trim it to both budgets with one `MINID`.
#[derive(Default)]
struct StreamBudget {
    entries: VecDeque<(u64, usize)>,
    bytes: usize,
}

/// A job the writer is writing: its Redis names (made once, not per event) and its budget.
struct JobStream {
    key: String,
    channel: String,
    budget: StreamBudget,
}

impl StreamBudget {
    /// Record entry `seq` and return the lowest sequence number the stream keeps.
    fn keep(&mut self, seq: u64, len: usize, settings: &ClusterConfig) -> u64 {
        self.entries.push_back((seq, len));
        self.bytes += len;
        while self.entries.len() > 1
            && (self.entries.len() > settings.stream_max_events
                || self.bytes > settings.stream_max_bytes)
        {
            if let Some((_, dropped)) = self.entries.pop_front() {
                self.bytes -= dropped;
            }
        }
        self.entries.front().map_or(seq, |(first, _)| *first)
    }
}

/// Write queued events to their streams, a pipeline per batch, in queue order.
pub(super) async fn write_events(
    shared: std::sync::Weak<Shared>,
    mut appends: mpsc::UnboundedReceiver<Append>,
) {
    let mut streams: HashMap<Uuid, JobStream> = HashMap::new();
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while appends.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut pipe = redis::pipe();
        let mut bytes = 0;
        for append in batch.drain(..) {
            bytes += append.frame.len();
            let stream = streams.entry(append.job_id).or_insert_with(|| JobStream {
                key: stream_key(append.job_id),
                channel: live_channel(append.job_id),
                budget: StreamBudget::default(),
            });
            let min_id = stream
                .budget
                .keep(append.seq, append.frame.len(), &shared.settings);
            pipe.cmd("XADD")
                .arg(&stream.key)
                .arg("MINID")
                .arg(entry_id(min_id))
                .arg(entry_id(append.seq))
                .arg("k")
                .arg(append.kind.code())
                .arg("f")
                .arg(append.frame.as_str())
                .ignore();
            // After the stream has it: a follower that sees it live can also read it back.
            pipe.cmd("PUBLISH")
                .arg(&stream.channel)
                .arg(live_message(append.seq, append.kind, &append.frame))
                .ignore();
            if append.seq == 1 {
                pipe.cmd("EXPIRE")
                    .arg(&stream.key)
                    .arg(shared.running_expiry_secs)
                    .ignore();
            }
            if append.kind.is_terminal() {
                pipe.cmd("EXPIRE")
                    .arg(&stream.key)
                    .arg(shared.settings.stream_expire_secs)
                    .ignore();
                streams.remove(&append.job_id);
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
        assert_eq!(budget.keep(1, 10, &by_count), 1);
        assert_eq!(budget.keep(2, 10, &by_count), 1);
        assert_eq!(budget.keep(3, 10, &by_count), 1);
        assert_eq!(budget.keep(4, 10, &by_count), 2, "at most 3 entries");

        let mut budget = StreamBudget::default();
        let by_bytes = settings(100, 25);
        assert_eq!(budget.keep(1, 10, &by_bytes), 1);
        assert_eq!(budget.keep(2, 10, &by_bytes), 1);
        assert_eq!(budget.keep(3, 10, &by_bytes), 2, "at most 25 bytes");
        assert_eq!(
            budget.keep(4, 100, &by_bytes),
            4,
            "an oversized entry stays alone"
        );
    }
}
