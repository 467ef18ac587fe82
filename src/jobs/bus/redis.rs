//! The cluster bus on Redis. Each job's events go, in order, into the stream
//! `dreamcore:job:<id>` with the relay's sequence number as entry id (`<seq>-0`), trimmed to
//! a length and a byte budget and expired a while after the terminal event. An instance
//! following a job it does not run keeps one mirror channel per job, fed by a reader that
//! `XREAD BLOCK`s from the last entry it delivered: in order, nothing twice; a gap it cannot
//! fill (events trimmed, or lost while Redis was down) is answered with the job's state from
//! the database. Cancel requests travel on the pub/sub channel `dreamcore:control`.
//!
//! Redis failing never fails a job: events still reach this instance's sockets, writes that
//! cannot be made are dropped (followers elsewhere see a gap), and every part reconnects on
//! its own while `/ready` names what is impaired.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, RedisResult};
use tokio::sync::mpsc;
use tracing::Instrument;
use uuid::Uuid;

use super::{state_from_database, BusHealth, EventKind, JobBus, StartTurn};
use crate::config::ClusterConfig;
use crate::jobs::channel::{EventForward, JobChannel};
use crate::store::models::JobRow;
use crate::store::Store;
use crate::wire::protocol::ServerMessage;

const CONTROL_CHANNEL: &str = "dreamcore:control";
/// How long a follower's `XREAD` blocks before it checks the database and its sockets.
const READ_BLOCK: Duration = Duration::from_secs(2);
/// Entries one `XREAD` returns at most.
const READ_BATCH: usize = 512;
/// Events one pipeline writes at most.
const WRITE_BATCH: usize = 512;
/// Pause before reconnecting a part that lost Redis.
const RETRY: Duration = Duration::from_millis(500);
/// Commands other than a blocking read answer within this, or count as a failure.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// A start turn is held at most this long (a crashed holder cannot block a user for longer)
/// and waited for at most as long.
const START_TURN_TTL: Duration = Duration::from_secs(15);
const START_TURN_POLL: Duration = Duration::from_millis(10);
/// A Redis round trip on a request's path (a start turn, a generation token) or on the lease
/// upkeep's waits at most this: beyond it the instance goes on alone rather than hold a user
/// up or delay the renewal of its leases.
const DECISION_TIMEOUT: Duration = Duration::from_millis(500);

/// `what` within [`DECISION_TIMEOUT`], a timeout counting as a Redis error.
async fn decide<T>(what: impl std::future::Future<Output = RedisResult<T>>) -> RedisResult<T> {
    match tokio::time::timeout(DECISION_TIMEOUT, what).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no answer within the decision timeout",
        ))),
    }
}

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

/// Deletes the start turn only if this instance still holds it.
const RELEASE_TURN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("REDIS_URL: {0}")]
    Url(#[from] redis::RedisError),
}

fn stream_key(job_id: Uuid) -> String {
    format!("dreamcore:job:{job_id}")
}

fn entry_id(seq: u64) -> String {
    format!("{seq}-0")
}

fn entry_seq(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

/// The parts of the bus that can each lose Redis, for `/ready`.
#[derive(Debug, Clone, Copy)]
enum Part {
    Writer,
    Followers,
    Control,
    Commands,
}

impl Part {
    const ALL: [Part; 4] = [Part::Writer, Part::Followers, Part::Control, Part::Commands];

    fn name(self) -> &'static str {
        match self {
            Part::Writer => "publishing events",
            Part::Followers => "following other instances' jobs",
            Part::Control => "receiving cancel requests",
            Part::Commands => "commands",
        }
    }
}

#[derive(Default)]
struct Health {
    problems: Mutex<[Option<String>; 4]>,
}

impl Health {
    fn set(&self, part: Part, problem: impl std::fmt::Display) {
        let mut problems = self.problems.lock();
        let slot = &mut problems[part as usize];
        if slot.is_none() {
            tracing::warn!(part = part.name(), %problem, "redis bus degraded");
        }
        *slot = Some(problem.to_string());
    }

    fn clear(&self, part: Part) {
        if self.problems.lock()[part as usize].take().is_some() {
            tracing::info!(part = part.name(), "redis bus recovered");
        }
    }

    fn report(&self) -> Option<String> {
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

/// One event on its way to Redis.
struct Append {
    job_id: Uuid,
    seq: u64,
    frame: Utf8Bytes,
    kind: EventKind,
}

/// What a job's stream holds, to trim it to both budgets with one `MINID`.
#[derive(Default)]
struct StreamBudget {
    entries: VecDeque<(u64, usize)>,
    bytes: usize,
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

struct Shared {
    client: redis::Client,
    settings: ClusterConfig,
    /// Replay-log budget of each mirror channel (`JOB_LOG_MAX_BYTES`).
    log_max_bytes: usize,
    /// A job's stream outlives a job that never ends (its instance died) by this much.
    running_expiry_secs: u64,
    store: Arc<dyn Store>,
    commands: tokio::sync::Mutex<Option<ConnectionManager>>,
    writer: mpsc::UnboundedSender<Append>,
    queued_bytes: AtomicUsize,
    mirrors: Mutex<HashMap<Uuid, Arc<JobChannel>>>,
    cancel_requests: Mutex<Option<mpsc::UnboundedReceiver<Uuid>>>,
    health: Health,
    generation_bucket: redis::Script,
    release_turn: redis::Script,
}

impl Shared {
    /// The shared command connection, (re)made on demand; it reconnects by itself after.
    async fn commands(&self) -> RedisResult<ConnectionManager> {
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

    fn forget_mirror(&self, job_id: Uuid, mirror: &Arc<JobChannel>) {
        let mut mirrors = self.mirrors.lock();
        if mirrors.get(&job_id).is_some_and(|m| Arc::ptr_eq(m, mirror)) {
            mirrors.remove(&job_id);
        }
    }
}

/// The bus of a relay with `REDIS_URL`.
pub struct RedisBus {
    shared: Arc<Shared>,
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
        let client = redis::Client::open(settings.redis_url.expose())?;
        let (writer, appends) = mpsc::unbounded_channel();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            client,
            settings: settings.clone(),
            log_max_bytes,
            running_expiry_secs: job_timeout.as_secs() + settings.stream_expire_secs,
            store,
            commands: tokio::sync::Mutex::new(None),
            writer,
            queued_bytes: AtomicUsize::new(0),
            mirrors: Mutex::new(HashMap::new()),
            cancel_requests: Mutex::new(Some(requests)),
            health: Health::default(),
            generation_bucket: redis::Script::new(GENERATION_BUCKET),
            release_turn: redis::Script::new(RELEASE_TURN),
        });
        tokio::spawn(write_events(Arc::downgrade(&shared), appends));
        tokio::spawn(listen_for_control(Arc::downgrade(&shared), requests_tx));
        Ok(Arc::new(Self { shared }))
    }
}

impl EventForward for RedisBus {
    fn forward(&self, job_id: Uuid, seq: u64, frame: &Utf8Bytes, kind: EventKind) {
        let len = frame.len();
        let queued = self.shared.queued_bytes.fetch_add(len, Ordering::AcqRel) + len;
        if queued > self.shared.settings.publish_queue_bytes {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.shared
                .health
                .set(Part::Writer, "the publish queue is full");
            return;
        }
        let append = Append {
            job_id,
            seq,
            frame: frame.clone(),
            kind,
        };
        if self.shared.writer.send(append).is_err() {
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
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
        let span = tracing::info_span!("follow", job_id = %row.id, user_id = %row.user_id);
        tokio::spawn(
            read_stream(Arc::clone(&self.shared), row.id, Arc::clone(&mirror)).instrument(span),
        );
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
            redis::pipe()
                .cmd("XADD")
                .arg(&key)
                .arg(entry_id(seq))
                .arg("k")
                .arg(EventKind::of(message).code())
                .arg("f")
                .arg(frame.as_str())
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(self.shared.settings.stream_expire_secs)
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

    async fn request_cancel(&self, job_id: Uuid) -> bool {
        let sent: RedisResult<i64> = async {
            let mut conn = self.shared.commands().await?;
            conn.publish(CONTROL_CHANNEL, format!("cancel:{job_id}"))
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

    fn take_cancel_requests(&self) -> Option<mpsc::UnboundedReceiver<Uuid>> {
        self.shared.cancel_requests.lock().take()
    }

    async fn start_turn(&self, user_id: Uuid) -> StartTurn {
        let key = format!("dreamcore:start:{user_id}");
        let token = Uuid::new_v4().to_string();
        let deadline = tokio::time::Instant::now() + START_TURN_TTL;
        let mut conn = match decide(self.shared.commands()).await {
            Ok(conn) => conn,
            Err(e) => {
                self.shared.health.set(Part::Commands, e);
                return StartTurn::local();
            }
        };
        loop {
            let taken: RedisResult<Option<String>> = decide(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(START_TURN_TTL.as_millis() as u64)
                    .query_async(&mut conn),
            )
            .await;
            match taken {
                Ok(Some(_)) => break,
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(START_TURN_POLL).await;
                }
                Ok(None) => {
                    tracing::warn!(%user_id, "start turn not released in time; starting anyway");
                    return StartTurn::local();
                }
                Err(e) => {
                    self.shared.health.set(Part::Commands, e);
                    return StartTurn::local();
                }
            }
        }
        let shared = Arc::clone(&self.shared);
        StartTurn {
            release: Some(Box::new(move || {
                tokio::spawn(async move {
                    let mut invocation = shared.release_turn.key(&key);
                    invocation.arg(&token);
                    if let Err(e) = invocation.invoke_async::<i64>(&mut conn).await {
                        // The turn expires by itself.
                        tracing::debug!(error = %e, "could not release the start turn");
                    }
                });
            })),
        }
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

/// Write queued events to their streams, a pipeline per batch, in queue order.
async fn write_events(
    shared: std::sync::Weak<Shared>,
    mut appends: mpsc::UnboundedReceiver<Append>,
) {
    let mut budgets: HashMap<Uuid, StreamBudget> = HashMap::new();
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while appends.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut pipe = redis::pipe();
        let mut bytes = 0;
        for append in batch.drain(..) {
            bytes += append.frame.len();
            let key = stream_key(append.job_id);
            let budget = budgets.entry(append.job_id).or_default();
            let min_id = budget.keep(append.seq, append.frame.len(), &shared.settings);
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MINID")
                .arg(entry_id(min_id))
                .arg(entry_id(append.seq))
                .arg("k")
                .arg(append.kind.code())
                .arg("f")
                .arg(append.frame.as_str())
                .ignore();
            if append.seq == 1 {
                pipe.cmd("EXPIRE")
                    .arg(&key)
                    .arg(shared.running_expiry_secs)
                    .ignore();
            }
            if append.kind.is_terminal() {
                budgets.remove(&append.job_id);
                pipe.cmd("EXPIRE")
                    .arg(&key)
                    .arg(shared.settings.stream_expire_secs)
                    .ignore();
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

/// Forward cancel requests from the control channel, resubscribing whenever Redis drops.
async fn listen_for_control(
    shared: std::sync::Weak<Shared>,
    requests: mpsc::UnboundedSender<Uuid>,
) {
    loop {
        let Some(client) = shared.upgrade().map(|s| s.client.clone()) else {
            return;
        };
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CONTROL_CHANNEL).await?;
            RedisResult::Ok(pubsub)
        }
        .await;
        match subscribed {
            Ok(mut pubsub) => {
                if let Some(s) = shared.upgrade() {
                    s.health.clear(Part::Control);
                }
                let mut messages = pubsub.on_message();
                loop {
                    // The jobs that take the requests are gone: so is the need to listen.
                    let message = tokio::select! {
                        message = messages.next() => message,
                        _ = requests.closed() => return,
                    };
                    let Some(message) = message else {
                        break;
                    };
                    let Ok(payload) = message.get_payload::<String>() else {
                        continue;
                    };
                    let Some(job_id) = payload
                        .strip_prefix("cancel:")
                        .and_then(|id| Uuid::parse_str(id).ok())
                    else {
                        continue;
                    };
                    if requests.send(job_id).is_err() {
                        return;
                    }
                }
                if let Some(s) = shared.upgrade() {
                    s.health.set(Part::Control, "the subscription was lost");
                }
            }
            Err(e) => {
                if let Some(s) = shared.upgrade() {
                    s.health.set(Part::Control, e);
                }
            }
        }
        if requests.is_closed() {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Why a follower stops.
enum Next {
    Continue,
    Stop,
}

/// Feed `mirror` from the job's stream until its terminal event, the database says it
/// ended, or no socket follows it any more.
async fn read_stream(shared: Arc<Shared>, job_id: Uuid, mirror: Arc<JobChannel>) {
    let key = stream_key(job_id);
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(READ_BLOCK + COMMAND_TIMEOUT));
    let options = StreamReadOptions::default()
        .count(READ_BATCH)
        .block(READ_BLOCK.as_millis() as usize);
    let mut conn: Option<MultiplexedConnection> = None;
    let mut delivered = 0u64;
    let mut unwatched_checks = 0;
    // The database said the job ended: give the stream one more read to carry the real
    // terminal event before answering from the database.
    let mut ended_in_database = false;
    loop {
        let reply: RedisResult<Option<StreamReadReply>> = async {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(
                    shared
                        .client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ),
            };
            c.xread_options(&[&key], &[entry_id(delivered)], &options)
                .await
        }
        .await;
        let next = match reply {
            Ok(Some(reply)) => {
                shared.health.clear(Part::Followers);
                deliver(&shared, job_id, &mirror, reply, &mut delivered).await
            }
            Ok(None) => {
                shared.health.clear(Part::Followers);
                unwatched_checks = if mirror.has_subscribers() {
                    0
                } else {
                    unwatched_checks + 1
                };
                if unwatched_checks >= 2 {
                    Next::Stop
                } else {
                    check_database(&shared, job_id, &mirror, &mut ended_in_database).await
                }
            }
            Err(e) => {
                shared.health.set(Part::Followers, &e);
                conn = None;
                let next = check_database(&shared, job_id, &mirror, &mut ended_in_database).await;
                tokio::time::sleep(RETRY).await;
                next
            }
        };
        if let Next::Stop = next {
            break;
        }
    }
    shared.forget_mirror(job_id, &mirror);
}

/// Hand the entries of `reply` to the mirror in order, filling a gap from the database.
async fn deliver(
    shared: &Shared,
    job_id: Uuid,
    mirror: &JobChannel,
    reply: StreamReadReply,
    delivered: &mut u64,
) -> Next {
    for entry in reply.keys.into_iter().flat_map(|key| key.ids) {
        let Some(seq) = entry_seq(&entry.id) else {
            continue;
        };
        if seq <= *delivered {
            continue;
        }
        if seq != *delivered + 1 {
            tracing::info!(
                from = *delivered,
                to = seq,
                "gap in the job's stream; answering from the database"
            );
            if let Next::Stop = answer_from_database(shared, job_id, mirror).await {
                return Next::Stop;
            }
        }
        *delivered = seq;
        let kind = entry
            .get::<String>("k")
            .and_then(|code| EventKind::parse(&code));
        let (Some(kind), Some(frame)) = (kind, entry.get::<String>("f")) else {
            tracing::warn!(seq, "malformed stream entry skipped");
            continue;
        };
        mirror.push(Utf8Bytes::from(frame), kind);
        if kind.is_terminal() {
            return Next::Stop;
        }
    }
    Next::Continue
}

/// The job's state from the database as one event; stops the follower when the job ended
/// (or is gone).
async fn answer_from_database(shared: &Shared, job_id: Uuid, mirror: &JobChannel) -> Next {
    match shared.store.get_job(job_id).await {
        Ok(Some(row)) => {
            let (message, kind) = state_from_database(&row);
            mirror.push(message.to_frame(), kind);
            if kind.is_terminal() {
                Next::Stop
            } else {
                Next::Continue
            }
        }
        Ok(None) => Next::Stop,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the job to fill a gap");
            Next::Continue
        }
    }
}

/// While the stream is quiet: end the mirror with the database's terminal state when the
/// job ended without the stream saying so (its instance died, or Redis lost the event).
async fn check_database(
    shared: &Shared,
    job_id: Uuid,
    mirror: &JobChannel,
    ended_in_database: &mut bool,
) -> Next {
    let row = match shared.store.get_job(job_id).await {
        Ok(Some(row)) => row,
        Ok(None) => return Next::Stop,
        Err(e) => {
            tracing::debug!(error = %e, "could not check the job's status");
            return Next::Continue;
        }
    };
    if row.status.is_active() {
        return Next::Continue;
    }
    if !*ended_in_database {
        *ended_in_database = true;
        return Next::Continue;
    }
    let (message, kind) = state_from_database(&row);
    mirror.push(message.to_frame(), kind);
    Next::Stop
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

    #[test]
    fn entry_ids_are_sequence_numbers() {
        assert_eq!(entry_id(42), "42-0");
        assert_eq!(entry_seq("42-0"), Some(42));
        assert_eq!(entry_seq("1700000000000-3"), Some(1_700_000_000_000));
        assert_eq!(entry_seq("nonsense"), None);
    }
}
