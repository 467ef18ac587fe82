//! A job stream's two budgets (`JOB_STREAM_MAX_EVENTS`, `JOB_STREAM_MAX_BYTES`), kept by
//! the writer as it adds entries, so one `MINID` on the `XADD` trims the stream to both.

use std::collections::VecDeque;

use crate::config::ClusterConfig;

/// What a job's stream holds, to trim it to both budgets with one `MINID`.
#[derive(Default)]
pub(super) struct StreamBudget {
    /// Per entry: its id (last sequence number), events and bytes.
    entries: VecDeque<(u64, usize, usize)>,
    events: usize,
    bytes: usize,
}

impl StreamBudget {
    /// Record entry `last` (`events` events, `len` bytes) and return the lowest entry id the
    /// stream keeps.
    pub(super) fn keep(
        &mut self,
        last: u64,
        events: usize,
        len: usize,
        settings: &ClusterConfig,
    ) -> u64 {
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

/// The most one job's held events may grow to before they are written anyway
/// ([`super::outbox`]): half of either stream budget, so the stream can still be trimmed to
/// them in steps, and at most [`HELD_MAX_BYTES`].
#[derive(Clone, Copy)]
pub(super) struct HeldLimit {
    pub(super) events: usize,
    pub(super) bytes: usize,
}

/// Past this, writing more events per entry saves Redis little: the bytes dominate.
const HELD_MAX_BYTES: usize = 64 * 1024;

impl HeldLimit {
    pub(super) fn for_streams(settings: &ClusterConfig) -> Self {
        Self {
            events: (settings.stream_max_events / 2).max(1),
            bytes: (settings.stream_max_bytes / 2).clamp(1, HELD_MAX_BYTES),
        }
    }

    /// Whether a run of `events` events and `len` bytes may be held longer.
    pub(super) fn admits(&self, events: usize, len: usize) -> bool {
        events < self.events && len < self.bytes
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
