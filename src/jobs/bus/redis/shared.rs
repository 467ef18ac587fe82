//! What the parts of the Redis bus share: the client and its command connection, the
//! settings, the mirrors this instance feeds, the health `/ready` reports, and the stream
//! naming (a job's stream entry id is its sequence number).

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisResult;
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

use super::outbox::Outbox;
use crate::config::ClusterConfig;
use crate::jobs::bus::ControlRequest;
use crate::jobs::channel::JobChannel;
use crate::store::Store;

pub(super) const CONTROL_CHANNEL: &str = "dreamcore:control";
/// A followed job that gave no event for this long is checked: against the database (did it
/// end without saying so?) and for sockets still following it.
pub(super) const QUIET: Duration = Duration::from_secs(2);
/// Entries one `XRANGE` of a catching-up follower returns at most.
pub(super) const READ_BATCH: usize = 512;
/// Events one pipeline writes at most.
pub(super) const WRITE_BATCH: usize = 512;
/// Pause before reconnecting a part that lost Redis.
pub(super) const RETRY: Duration = Duration::from_millis(500);
/// Commands other than a blocking read answer within this, or count as a failure.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// A Redis round trip on a request's path (a generation token) or on the lease
/// upkeep's waits at most this: beyond it the instance goes on alone rather than hold a user
/// up or delay the renewal of its leases.
pub(super) const DECISION_TIMEOUT: Duration = Duration::from_millis(500);

/// `what` within [`DECISION_TIMEOUT`], a timeout counting as a Redis error.
pub(super) async fn decide<T>(
    what: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match tokio::time::timeout(DECISION_TIMEOUT, what).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no answer within the decision timeout",
        ))),
    }
}

pub(super) fn stream_key(job_id: Uuid) -> String {
    format!("dreamcore:job:{job_id}")
}

pub(super) fn entry_id(seq: u64) -> String {
    // ASCII digits and `-0`: the lossy conversion never replaces anything.
    String::from_utf8_lossy(EntryId::new(seq).as_bytes()).into_owned()
}

/// The longest entry id: the 20 digits of `u64::MAX` and `-0`.
const ENTRY_ID_MAX_LEN: usize = 22;

/// A job's stream entry id (`{seq}-0`) on the stack, for the writer's commands (two per run
/// written); [`entry_id`] where a `String` is wanted.
pub(super) struct EntryId {
    bytes: [u8; ENTRY_ID_MAX_LEN],
    len: usize,
}

impl EntryId {
    pub(super) fn new(seq: u64) -> Self {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(seq).as_bytes();
        let mut bytes = [0; ENTRY_ID_MAX_LEN];
        bytes[..digits.len()].copy_from_slice(digits);
        bytes[digits.len()..digits.len() + 2].copy_from_slice(b"-0");
        Self {
            bytes,
            len: digits.len() + 2,
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

pub(super) fn entry_seq(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

/// The pub/sub channel on which a job's event batches go live to followers.
pub(super) fn live_channel(job_id: Uuid) -> String {
    format!("dreamcore:live:{job_id}")
}

/// The parts of the bus that can each lose Redis, for `/ready`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Part {
    Writer,
    Followers,
    Control,
    Commands,
}

impl Part {
    pub(super) const ALL: [Part; 4] =
        [Part::Writer, Part::Followers, Part::Control, Part::Commands];

    pub(super) fn name(self) -> &'static str {
        match self {
            Part::Writer => "publishing events",
            Part::Followers => "following other instances' jobs",
            Part::Control => "receiving cancel requests",
            Part::Commands => "commands",
        }
    }
}

#[derive(Default)]
pub(super) struct Health {
    problems: Mutex<[Option<String>; 4]>,
}

impl Health {
    pub(super) fn set(&self, part: Part, problem: impl std::fmt::Display) {
        let mut problems = self.problems.lock();
        let slot = &mut problems[part as usize];
        if slot.is_none() {
            tracing::warn!(part = part.name(), %problem, "redis bus degraded");
        }
        *slot = Some(problem.to_string());
    }

    pub(super) fn clear(&self, part: Part) {
        if self.problems.lock()[part as usize].take().is_some() {
            tracing::info!(part = part.name(), "redis bus recovered");
        }
    }

    pub(super) fn report(&self) -> Option<String> {
        let problems = self.problems.lock();
        let parts: Vec<String> = Part::ALL
            .iter()
            .filter_map(|&part| {
                problems[part as usize]
                    .as_ref()
                    .map(|p| format!("{}: {p}", part.name()))
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

pub(super) struct Shared {
    pub(super) client: redis::Client,
    pub(super) settings: ClusterConfig,
    /// Replay-log budget of each mirror channel (`JOB_LOG_MAX_BYTES`).
    pub(super) log_max_bytes: usize,
    /// A job's stream outlives a job that never ends (its instance died) by this much.
    pub(super) running_expiry_secs: u64,
    pub(super) store: Arc<dyn Store>,
    pub(super) commands: tokio::sync::Mutex<Option<ConnectionManager>>,
    /// Every event of a job running here goes to the bus writer through this.
    pub(super) outbox: Mutex<Outbox>,
    /// Wakes the writer when events are held while none were: it then has a time to wake at.
    pub(super) held_ready: Arc<Notify>,
    pub(super) queued_bytes: AtomicUsize,
    pub(super) mirrors: Mutex<HashMap<Uuid, Arc<JobChannel>>>,
    pub(super) control_requests: Mutex<Option<mpsc::UnboundedReceiver<ControlRequest>>>,
    pub(super) health: Health,
    pub(super) generation_bucket: redis::Script,
}

impl Shared {
    /// The shared command connection, (re)made on demand; it reconnects by itself after.
    pub(super) async fn commands(&self) -> RedisResult<ConnectionManager> {
        let mut slot = self.commands.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1);
        let conn = self
            .client
            .get_connection_manager_with_config(config)
            .await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    pub(super) fn forget_mirror(&self, job_id: Uuid, mirror: &Arc<JobChannel>) {
        let mut mirrors = self.mirrors.lock();
        if mirrors.get(&job_id).is_some_and(|m| Arc::ptr_eq(m, mirror)) {
            mirrors.remove(&job_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_are_sequence_numbers() {
        assert_eq!(entry_id(42), "42-0");
        assert_eq!(EntryId::new(0).as_bytes(), b"0-0");
        assert_eq!(
            EntryId::new(u64::MAX).as_bytes(),
            b"18446744073709551615-0",
            "the longest id fits"
        );
        assert_eq!(entry_seq("42-0"), Some(42));
        assert_eq!(entry_seq("1700000000000-3"), Some(1_700_000_000_000));
        assert_eq!(entry_seq("nonsense"), None);
    }
}
