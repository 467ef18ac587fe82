//! Following jobs other instances run: one reader per instance feeds every mirror channel
//! from its job's stream, in order and nothing twice, with gaps and unannounced ends answered
//! from the database.
//!
//! The reader blocks in one `XREAD` over all the streams it follows, so under load one round
//! trip carries the events of many jobs (a reader per job cost a round trip per event and
//! put tens of milliseconds on the tail at 10,000 events/s). A follow that arrives while the
//! read blocks wakes it with `CLIENT UNBLOCK`, so a new mirror starts at once.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, RedisResult};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::shared::{
    entry_id, entry_seq, stream_key, Part, Shared, COMMAND_TIMEOUT, READ_BATCH, READ_BLOCK, RETRY,
};
use crate::jobs::bus::state_from_database;
use crate::jobs::channel::JobChannel;
use crate::jobs::event_kind::EventKind;

/// A job to follow, handed to the reader by [`super::RedisBus`].
pub(super) struct Follow {
    pub(super) job_id: Uuid,
    pub(super) mirror: Arc<JobChannel>,
}

/// Why a followed job stays or goes.
enum Next {
    Continue,
    Stop,
}

/// One followed job as the reader keeps it.
struct Followed {
    job_id: Uuid,
    mirror: Arc<JobChannel>,
    /// Sequence number of the last event handed to the mirror.
    delivered: u64,
    /// When the stream last gave something, or the job was last checked while quiet.
    heard: Instant,
    /// Quiet checks in a row that found no socket following the mirror.
    unwatched_checks: u32,
    /// The database said the job ended: the stream gets one more quiet period to carry the
    /// real terminal event before the database's state is sent instead.
    ended_in_database: bool,
}

impl Followed {
    fn new(follow: Follow) -> Self {
        Self {
            job_id: follow.job_id,
            mirror: follow.mirror,
            delivered: 0,
            heard: Instant::now(),
            unwatched_checks: 0,
            ended_in_database: false,
        }
    }
}

/// Feed the mirrors of every followed job until the bus is gone. A job leaves the set at its
/// terminal event, when the database says it ended, or when no socket follows it any more.
pub(super) async fn run(shared: Weak<Shared>, mut follows: mpsc::UnboundedReceiver<Follow>) {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(READ_BLOCK + COMMAND_TIMEOUT));
    let options = StreamReadOptions::default()
        .count(READ_BATCH)
        .block(READ_BLOCK.as_millis() as usize);
    let mut jobs: HashMap<String, Followed> = HashMap::new();
    // The reading connection and its client id (for `CLIENT UNBLOCK`).
    let mut reader: Option<(MultiplexedConnection, i64)> = None;
    loop {
        if jobs.is_empty() {
            match follows.recv().await {
                Some(follow) => add(&mut jobs, follow),
                None => return,
            }
        }
        while let Ok(follow) = follows.try_recv() {
            add(&mut jobs, follow);
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let keys: Vec<&String> = jobs.keys().collect();
        let ids: Vec<String> = jobs.values().map(|j| entry_id(j.delivered)).collect();
        let mut arrived = Vec::new();
        let reply: RedisResult<Option<StreamReadReply>> = async {
            let (conn, client_id) = match reader.as_mut() {
                Some(connected) => connected,
                None => {
                    let mut conn = shared
                        .client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?;
                    let id: i64 = redis::cmd("CLIENT")
                        .arg("ID")
                        .query_async(&mut conn)
                        .await?;
                    reader.insert((conn, id))
                }
            };
            let read = conn.xread_options(&keys, &ids, &options);
            tokio::pin!(read);
            let mut woken = false;
            loop {
                tokio::select! {
                    reply = &mut read => return reply,
                    Some(follow) = follows.recv(), if !woken => {
                        arrived.push(follow);
                        // The read answers at once as if its block had timed out.
                        woken = true;
                        let mut commands = shared.commands().await?;
                        redis::cmd("CLIENT")
                            .arg("UNBLOCK")
                            .arg(*client_id)
                            .query_async::<i64>(&mut commands)
                            .await?;
                    }
                }
            }
        }
        .await;
        drop(keys);
        match reply {
            Ok(reply) => {
                shared.health.clear(Part::Followers);
                for stream in reply.map(|r| r.keys).unwrap_or_default() {
                    let Some(job) = jobs.get_mut(&stream.key) else {
                        continue;
                    };
                    job.heard = Instant::now();
                    job.unwatched_checks = 0;
                    if let Next::Stop = deliver(&shared, job, stream.ids).await {
                        stop(&shared, &mut jobs, &stream.key);
                    }
                }
                check_quiet(&shared, &mut jobs).await;
            }
            Err(e) => {
                shared.health.set(Part::Followers, &e);
                reader = None;
                // Redis is away: the database still knows when a job ended.
                for job in jobs.values_mut() {
                    job.heard = Instant::now() - READ_BLOCK;
                }
                check_quiet(&shared, &mut jobs).await;
                tokio::time::sleep(RETRY).await;
            }
        }
        for follow in arrived {
            add(&mut jobs, follow);
        }
    }
}

fn add(jobs: &mut HashMap<String, Followed>, follow: Follow) {
    let key = stream_key(follow.job_id);
    // A mirror made after the previous one of the job was dropped starts afresh.
    let known = jobs
        .get(&key)
        .is_some_and(|job| Arc::ptr_eq(&job.mirror, &follow.mirror));
    if !known {
        jobs.insert(key, Followed::new(follow));
    }
}

fn stop(shared: &Shared, jobs: &mut HashMap<String, Followed>, key: &str) {
    if let Some(job) = jobs.remove(key) {
        shared.forget_mirror(job.job_id, &job.mirror);
    }
}

/// The jobs whose stream said nothing for a whole block: stop following those nobody
/// watches, and end those the database says ended. The database is asked for all of them
/// at once, so a crowd of quiet jobs holds up the busy ones for one round trip only.
async fn check_quiet(shared: &Shared, jobs: &mut HashMap<String, Followed>) {
    let checks = jobs
        .iter_mut()
        .filter(|(_, job)| job.heard.elapsed() >= READ_BLOCK)
        .map(|(key, job)| async move {
            job.heard = Instant::now();
            job.unwatched_checks = if job.mirror.has_subscribers() {
                0
            } else {
                job.unwatched_checks + 1
            };
            let next = if job.unwatched_checks >= 2 {
                Next::Stop
            } else {
                check_database(shared, job).await
            };
            (key.clone(), next)
        });
    for (key, next) in futures::future::join_all(checks).await {
        if let Next::Stop = next {
            stop(shared, jobs, &key);
        }
    }
}

/// Hand `entries` to the mirror in order, filling a gap from the database.
async fn deliver(shared: &Shared, job: &mut Followed, entries: Vec<StreamId>) -> Next {
    for entry in entries {
        let Some(seq) = entry_seq(&entry.id) else {
            continue;
        };
        if seq <= job.delivered {
            continue;
        }
        if seq != job.delivered + 1 {
            tracing::info!(
                job_id = %job.job_id,
                from = job.delivered,
                to = seq,
                "gap in the job's stream; answering from the database"
            );
            if let Next::Stop = answer_from_database(shared, job).await {
                return Next::Stop;
            }
        }
        job.delivered = seq;
        let kind = entry
            .get::<String>("k")
            .and_then(|code| EventKind::parse(&code));
        let (Some(kind), Some(frame)) = (kind, entry.get::<String>("f")) else {
            tracing::warn!(job_id = %job.job_id, seq, "malformed stream entry skipped");
            continue;
        };
        job.mirror.push(Utf8Bytes::from(frame), kind);
        if kind.is_terminal() {
            return Next::Stop;
        }
    }
    Next::Continue
}

/// The job's state from the database as one event; stops following when the job ended (or
/// is gone).
async fn answer_from_database(shared: &Shared, job: &Followed) -> Next {
    match shared.store.get_job(job.job_id).await {
        Ok(Some(row)) => {
            let (message, kind) = state_from_database(&row);
            job.mirror.push(message.to_frame(), kind);
            if kind.is_terminal() {
                Next::Stop
            } else {
                Next::Continue
            }
        }
        Ok(None) => Next::Stop,
        Err(e) => {
            tracing::warn!(job_id = %job.job_id, error = %e, "could not read the job to fill a gap");
            Next::Continue
        }
    }
}

/// While the stream is quiet: end the mirror with the database's terminal state when the
/// job ended without the stream saying so (its instance died, or Redis lost the event).
async fn check_database(shared: &Shared, job: &mut Followed) -> Next {
    let row = match shared.store.get_job(job.job_id).await {
        Ok(Some(row)) => row,
        Ok(None) => return Next::Stop,
        Err(e) => {
            tracing::debug!(job_id = %job.job_id, error = %e, "could not check the job's status");
            return Next::Continue;
        }
    };
    if row.status.is_active() {
        return Next::Continue;
    }
    if !job.ended_in_database {
        job.ended_in_database = true;
        return Next::Continue;
    }
    let (message, kind) = state_from_database(&row);
    job.mirror.push(message.to_frame(), kind);
    Next::Stop
}
