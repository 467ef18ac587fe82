//! The cluster bus on Redis. Each job's events go, in order, into the stream
//! `dreamcore:job:<id>`, consecutive events written together as one entry whose id is the
//! relay's sequence number of its last event (`<seq>-0`, format in `batch`), trimmed to
//! a length and a byte budget and expired a while after the terminal event, then published on
//! the job's live channel. An instance following a job it does not run keeps one mirror
//! channel per job, fed from the live channel after catching up from the stream: in order,
//! nothing twice; a gap the stream cannot fill (events trimmed, or lost while Redis was down)
//! is answered with the job's state from the database. Cancel requests, lease sweeps and a
//! new follower's announcement travel on the pub/sub channel `dreamcore:control`.
//!
//! Redis failing never fails a job: events still reach this instance's sockets, writes that
//! cannot be made are dropped (followers elsewhere see a gap), and every part reconnects on
//! its own while `/ready` names what is impaired.

mod batch;
mod budget;
mod control;
mod follow;
mod followed;
mod outbox;
mod shared;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use redis::io::tcp::TcpSettings;
use redis::streams::StreamRangeReply;
use redis::{AsyncCommands, IntoConnectionInfo, RedisResult};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use super::{BusHealth, ControlRequest, EventKind, JobBus};
use crate::config::ClusterConfig;
use crate::jobs::channel::{EventForward, JobChannel};
use crate::store::models::JobRow;
use crate::store::Store;
use crate::wire::protocol::ServerMessage;
use budget::HeldLimit;
use outbox::{HandedOn, Outbox};
use shared::{decide, entry_id, entry_seq, stream_key, Health, Part, Shared, CONTROL_CHANNEL};

/// Token bucket of `ARGV[1]` generations a minute, refilled continuously, timed by the Redis
/// server's clock so that instances' clocks never matter.
const GENERATION_BUCKET: &str = r"
local capacity = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + (now - at) * capacity / 60000)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000)
return allowed
";

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("REDIS_URL: {0}")]
    Url(#[from] redis::RedisError),
}

/// The bus of a relay with `REDIS_URL`.
pub struct RedisBus {
    shared: Arc<Shared>,
    /// Jobs for the reader that feeds this instance's mirrors.
    follows: mpsc::UnboundedSender<followed::Follow>,
}

impl RedisBus {
    /// Start the bus: its writer and control listener run until the process ends, and
    /// connect (and reconnect) by themselves, so a Redis that is down now is not an error.
    pub fn start(
        settings: &ClusterConfig,
        job_timeout: Duration,
        log_max_bytes: usize,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Self>, BusError> {
        // Events are small writes that must leave at once: without TCP_NODELAY, Nagle holds
        // each one until Redis acknowledges the previous (tens of milliseconds per hop).
        let info = settings
            .redis_url
            .expose()
            .into_connection_info()?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
        let (writer, appends) = mpsc::unbounded_channel();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            client,
            settings: settings.clone(),
            log_max_bytes,
            running_expiry_secs: job_timeout.as_secs() + settings.stream_expire_secs,
            store,
            commands: tokio::sync::Mutex::new(None),
            outbox: Mutex::new(Outbox::new(writer, HeldLimit::for_streams(settings))),
            held_ready: Arc::new(Notify::new()),
            queued_bytes: AtomicUsize::new(0),
            mirrors: Mutex::new(HashMap::new()),
            control_requests: Mutex::new(Some(requests)),
            health: Health::default(),
            generation_bucket: redis::Script::new(GENERATION_BUCKET),
        });
        tokio::spawn(writer::write_events(Arc::downgrade(&shared), appends));
        tokio::spawn(control::listen_for_control(
            Arc::downgrade(&shared),
            requests_tx,
        ));
        let (follows, to_follow) = mpsc::unbounded_channel();
        tokio::spawn(
            follow::run(Arc::downgrade(&shared), to_follow)
                .instrument(tracing::info_span!("follow")),
        );
        Ok(Arc::new(Self { shared, follows }))
    }
}

impl EventForward for RedisBus {
    fn forward(&self, job_id: Uuid, first_seq: u64, events: &[(Utf8Bytes, EventKind)]) {
        if events.is_empty() {
            return;
        }
        let len = batch::encoded_len(first_seq, events);
        let queued = self.shared.queued_bytes.fetch_add(len, Ordering::AcqRel) + len;
        if queued > self.shared.settings.publish_queue_bytes {
            let mut freed = len;
            if events.last().is_some_and(|(_, kind)| kind.is_terminal()) {
                freed += self.shared.outbox.lock().abandon(job_id);
            }
            self.shared.queued_bytes.fetch_sub(freed, Ordering::AcqRel);
            self.shared
                .health
                .set(Part::Writer, "the publish queue is full");
            return;
        }
        let handed_on =
            self.shared
                .outbox
                .lock()
                .hand_on(job_id, first_seq, events, len, Instant::now);
        match handed_on {
            HandedOn::Sent | HandedOn::Held { first: false } => {}
            HandedOn::Held { first: true } => self.shared.held_ready.notify_one(),
            HandedOn::Dropped(bytes) => {
                self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            }
        }
    }
}

#[async_trait]
impl JobBus for RedisBus {
    async fn flush(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.shared.queued_bytes.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn follow(&self, row: &JobRow) -> Option<Arc<JobChannel>> {
        let mut mirrors = self.shared.mirrors.lock();
        if let Some(mirror) = mirrors.get(&row.id) {
            return Some(Arc::clone(mirror));
        }
        let mirror = Arc::new(JobChannel::new(
            row.id,
            row.user_id,
            row.project_id,
            self.shared.log_max_bytes,
            None,
        ));
        mirrors.insert(row.id, Arc::clone(&mirror));
        let follow = followed::Follow {
            job_id: row.id,
            mirror: Arc::clone(&mirror),
        };
        if self.follows.send(follow).is_err() {
            mirrors.remove(&row.id);
            return None;
        }
        Some(mirror)
    }

    async fn end_orphan(&self, row: &JobRow, message: &ServerMessage) {
        let key = stream_key(row.id);
        let frame = message.to_frame();
        let result: RedisResult<()> = decide(async {
            let mut conn = self.shared.commands().await?;
            let last: StreamRangeReply = conn.xrevrange_count(&key, "+", "-", 1).await?;
            let seq = last
                .ids
                .first()
                .and_then(|entry| entry_seq(&entry.id))
                .unwrap_or(0)
                + 1;
            let entry = batch::BatchWriter::new(seq, EventKind::of(message), &frame);
            redis::pipe()
                .cmd("XADD")
                .arg(&key)
                .arg(entry_id(seq))
                .arg(batch::FIELD)
                .arg(entry.as_str())
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(self.shared.settings.stream_expire_secs)
                .ignore()
                .cmd("PUBLISH")
                .arg(CONTROL_CHANNEL)
                .arg(control::encode(ControlRequest::LeaseSwept(row.id)))
                .ignore()
                .query_async(&mut conn)
                .await
        })
        .await;
        match result {
            Ok(()) => self.shared.health.clear(Part::Commands),
            // Followers still learn the end from the database when they next look.
            Err(e) => self.shared.health.set(Part::Commands, e),
        }
    }

    async fn published_ends(&self, job_ids: &[Uuid]) -> HashMap<Uuid, Utf8Bytes> {
        if job_ids.is_empty() {
            return HashMap::new();
        }
        // One round trip for them all, so a Redis that hangs costs the sweep one timeout.
        let mut last_entries = redis::pipe();
        for job_id in job_ids {
            last_entries.xrevrange_count(stream_key(*job_id), "+", "-", 1);
        }
        let read: RedisResult<Vec<StreamRangeReply>> = decide(async {
            let mut conn = self.shared.commands().await?;
            last_entries.query_async(&mut conn).await
        })
        .await;
        let replies = match read {
            Ok(replies) => {
                self.shared.health.clear(Part::Commands);
                replies
            }
            Err(e) => {
                self.shared.health.set(Part::Commands, e);
                return HashMap::new();
            }
        };
        job_ids
            .iter()
            .zip(replies)
            .filter_map(|(job_id, reply)| Some((*job_id, terminal_frame(reply)?)))
            .collect()
    }

    async fn request_cancel(&self, job_id: Uuid) -> bool {
        let sent: RedisResult<i64> = async {
            let mut conn = self.shared.commands().await?;
            conn.publish(
                CONTROL_CHANNEL,
                control::encode(ControlRequest::Cancel(job_id)),
            )
            .await
        }
        .await;
        match sent {
            Ok(receivers) => {
                self.shared.health.clear(Part::Commands);
                receivers > 0
            }
            Err(e) => {
                self.shared.health.set(Part::Commands, e);
                false
            }
        }
    }

    fn take_control_requests(&self) -> Option<mpsc::UnboundedReceiver<ControlRequest>> {
        self.shared.control_requests.lock().take()
    }

    async fn take_generation(&self, user_id: Uuid, per_minute: u32) -> Option<bool> {
        if per_minute == 0 {
            return Some(true);
        }
        let taken: RedisResult<i64> = decide(async {
            let mut conn = self.shared.commands().await?;
            let mut invocation = self
                .shared
                .generation_bucket
                .key(format!("dreamcore:generations:{user_id}"));
            invocation.arg(per_minute);
            invocation.invoke_async(&mut conn).await
        })
        .await;
        match taken {
            Ok(allowed) => {
                self.shared.health.clear(Part::Commands);
                Some(allowed == 1)
            }
            Err(e) => {
                self.shared.health.set(Part::Commands, e);
                None
            }
        }
    }

    async fn probe(&self) {
        let pong: RedisResult<String> = decide(async {
            let mut conn = self.shared.commands().await?;
            redis::cmd("PING").query_async(&mut conn).await
        })
        .await;
        match pong {
            // The writer's next batch goes through the same connection.
            Ok(_) => {
                self.shared.health.clear(Part::Commands);
                self.shared.health.clear(Part::Writer);
            }
            Err(e) => self.shared.health.set(Part::Commands, e),
        }
    }

    fn is_clustered(&self) -> bool {
        true
    }

    fn health(&self) -> BusHealth {
        BusHealth {
            mode: "redis",
            degraded: self.shared.health.report(),
        }
    }
}

/// The frame of a stream's last entry (`XREVRANGE … COUNT 1`) when it is a terminal event.
fn terminal_frame(reply: StreamRangeReply) -> Option<Utf8Bytes> {
    let mut last = reply.ids.into_iter().next()?;
    let seq = entry_seq(&last.id)?;
    let (_, kind, frame) = batch::read_entry(seq, std::mem::take(&mut last.map))?.pop()?;
    kind.is_terminal().then_some(frame)
}
