//! Following a job another instance runs: a mirror channel fed from the job's stream, in
//! order and nothing twice, with gaps and unannounced ends answered from the database.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, RedisResult};
use uuid::Uuid;

use super::shared::{
    entry_id, entry_seq, stream_key, Part, Shared, COMMAND_TIMEOUT, READ_BATCH, READ_BLOCK, RETRY,
};
use crate::jobs::bus::state_from_database;
use crate::jobs::channel::JobChannel;
use crate::jobs::event_kind::EventKind;

/// Why a follower stops.
pub(super) enum Next {
    Continue,
    Stop,
}

/// Feed `mirror` from the job's stream until its terminal event, the database says it
/// ended, or no socket follows it any more.
pub(super) async fn read_stream(shared: Arc<Shared>, job_id: Uuid, mirror: Arc<JobChannel>) {
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
pub(super) async fn deliver(
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
pub(super) async fn answer_from_database(
    shared: &Shared,
    job_id: Uuid,
    mirror: &JobChannel,
) -> Next {
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
pub(super) async fn check_database(
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
