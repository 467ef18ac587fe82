//! Following jobs other instances run: one task per instance feeds every mirror channel, in
//! order and nothing twice, with gaps and unannounced ends answered from the database.
//!
//! Live events come by pub/sub: the owner publishes each batch of events on the job's live
//! channel right after adding it to the job's stream, and Redis pushes it to the followers without
//! waiting for a request (a blocking `XREAD` per batch put a round trip, and under load tens
//! of milliseconds, on every event). The stream is read only to catch up: after subscribing,
//! after a reconnect, and when a sequence number is skipped.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use redis::aio::PubSubSink;
use redis::streams::StreamRangeReply;
use redis::{AsyncCommands, RedisResult};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::batch;
use super::control;
use super::followed::{Follow, Followed, Next};
use super::shared::{
    decide, entry_id, entry_seq, live_channel, stream_key, Part, Shared, CONTROL_CHANNEL, QUIET,
    READ_BATCH, RETRY,
};
use crate::jobs::bus::state_from_database;
use crate::jobs::channel::HeldWakes;

/// Live events kept while a gap waits to be filled (only while reading the stream fails).
const AHEAD_MAX_EVENTS: usize = 4096;

/// Live messages handed on at most before the sockets they fed are woken.
const LIVE_BURST_MAX: usize = 256;

/// The followed jobs, by live channel name.
type Jobs = HashMap<String, Followed>;

/// Feed the mirrors of every followed job until the bus is gone. A job leaves the set at its
/// terminal event, when the database says it ended, or when no socket follows it any more.
pub(super) async fn run(shared: Weak<Shared>, mut follows: mpsc::UnboundedReceiver<Follow>) {
    let mut jobs = Jobs::new();
    let mut ticks = tokio::time::interval(QUIET / 2);
    loop {
        let Some(client) = shared.upgrade().map(|s| s.client.clone()) else {
            return;
        };
        let (mut sink, mut messages) = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub.split(),
            Err(e) => {
                if let Some(shared) = shared.upgrade() {
                    shared.health.set(Part::Followers, e);
                    check_quiet(&shared, &mut jobs, None).await;
                }
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        // Whatever was followed before the connection was lost: subscribe again, then read
        // from the stream what went by meanwhile.
        let channels: Vec<String> = jobs.keys().cloned().collect();
        let resubscribed = match shared.upgrade() {
            Some(shared) => resubscribe(&shared, &mut sink, &mut jobs, channels).await,
            None => return,
        };
        if let Err(e) = resubscribed {
            if let Some(shared) = shared.upgrade() {
                shared.health.set(Part::Followers, e);
            }
            tokio::time::sleep(RETRY).await;
            continue;
        }
        if let Some(shared) = shared.upgrade() {
            shared.health.clear(Part::Followers);
        }
        loop {
            tokio::select! {
                follow = follows.recv() => {
                    let (Some(follow), Some(shared)) = (follow, shared.upgrade()) else {
                        return;
                    };
                    if let Err(e) = add(&shared, &mut sink, &mut jobs, follow).await {
                        shared.health.set(Part::Followers, e);
                        break;
                    }
                }
                message = messages.next() => {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    // The messages that came with this one are handed on before any socket
                    // is woken, so each socket writes them together.
                    let mut held: HashMap<Uuid, HeldWakes> = HashMap::new();
                    // Jobs that ended in this burst: unsubscribed together once it is handed
                    // on, so the other jobs' events never wait behind a round trip per end.
                    let mut ended = Vec::new();
                    let mut next = Some(message);
                    let mut handled = 0;
                    let mut lost = false;
                    while let Some(message) = next.take() {
                        let Some(message) = message else {
                            shared.health.set(Part::Followers, "the live subscription was lost");
                            lost = true;
                            break;
                        };
                        let channel = message.get_channel_name().to_string();
                        if let Some(job) = jobs.get(&channel) {
                            held.entry(job.job_id).or_insert_with(|| job.mirror.hold_wakes());
                        }
                        let payload: Vec<u8> = message.get_payload_bytes().to_vec();
                        if let Err(e) = on_live(&shared, &mut jobs, &mut ended, &channel, payload).await {
                            shared.health.set(Part::Followers, e);
                        }
                        handled += 1;
                        if handled < LIVE_BURST_MAX {
                            next = messages.next().now_or_never();
                        }
                    }
                    drop(held);
                    unsubscribe(&mut sink, ended).await;
                    if lost {
                        break;
                    }
                }
                _ = ticks.tick() => {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    check_quiet(&shared, &mut jobs, Some(&mut sink)).await;
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Start following: subscribe first, then read the stream so far, so that every event is
/// either in what was read or in what the subscription brings.
async fn add(
    shared: &Shared,
    sink: &mut PubSubSink,
    jobs: &mut Jobs,
    follow: Follow,
) -> RedisResult<()> {
    let channel = live_channel(follow.job_id);
    // A mirror made after the previous one of the job was dropped starts afresh.
    let known = jobs
        .get(&channel)
        .is_some_and(|job| Arc::ptr_eq(&job.mirror, &follow.mirror));
    if known {
        return Ok(());
    }
    // Kept from now on, so that when Redis fails below, the reconnect subscribes it again
    // and catches it up like every other followed job.
    let job_id = follow.job_id;
    jobs.insert(channel.clone(), Followed::new(follow));
    sink.subscribe(&channel).await?;
    announce(shared, job_id).await;
    let Some(job) = jobs.get_mut(&channel) else {
        return Ok(());
    };
    if catch_up(shared, job).await? == Next::Stop {
        leave(shared, sink, jobs, &channel).await;
    }
    Ok(())
}

async fn resubscribe(
    shared: &Shared,
    sink: &mut PubSubSink,
    jobs: &mut Jobs,
    channels: Vec<String>,
) -> RedisResult<()> {
    for channel in channels {
        sink.subscribe(&channel).await?;
        let Some(job) = jobs.get_mut(&channel) else {
            continue;
        };
        announce(shared, job.job_id).await;
        if catch_up(shared, job).await? == Next::Stop {
            leave(shared, sink, jobs, &channel).await;
        }
    }
    Ok(())
}

/// Tell the job's owner, once subscribed, that its events are followed here: it may be
/// holding them back while nobody was ([`super::outbox`]). Unheard, the held events still
/// come, only later.
async fn announce(shared: &Shared, job_id: Uuid) {
    let sent: RedisResult<i64> = decide(async {
        let mut conn = shared.commands().await?;
        conn.publish(CONTROL_CHANNEL, control::following(job_id))
            .await
    })
    .await;
    if let Err(e) = sent {
        tracing::debug!(%job_id, error = %e, "could not announce a follower");
    }
}

/// One live batch: each event handed on when it is the next, else kept until the stream
/// fills the gap.
async fn on_live(
    shared: &Shared,
    jobs: &mut Jobs,
    ended: &mut Vec<String>,
    channel: &str,
    payload: Vec<u8>,
) -> RedisResult<()> {
    let Some(job) = jobs.get_mut(channel) else {
        return Ok(());
    };
    let Some(events) = batch::read_live(payload) else {
        tracing::warn!(job_id = %job.job_id, "malformed live events skipped");
        return Ok(());
    };
    let mut next = Next::Continue;
    for (seq, kind, frame) in events {
        if seq == job.delivered + 1 {
            next = match job.hand_on(seq, kind, frame) {
                Next::Stop => Next::Stop,
                Next::Continue => job.drain_ahead(),
            };
            if next == Next::Stop {
                break;
            }
        } else if seq > job.delivered {
            if job.ahead.len() >= AHEAD_MAX_EVENTS {
                // The stream holds them too: the catch-up reads them back from there.
                job.ahead.clear();
            }
            job.ahead.insert(seq, (kind, frame));
        }
    }
    if next == Next::Continue && !job.ahead.is_empty() {
        next = catch_up(shared, job).await?;
    }
    if next == Next::Stop && forget(shared, jobs, channel) {
        ended.push(channel.to_string());
    }
    Ok(())
}

/// Read the job's stream from the next undelivered event on, then hand on the live events
/// that waited. What the stream no longer has (trimmed, or never written while Redis was
/// away) is answered with the job's state from the database.
async fn catch_up(shared: &Shared, job: &mut Followed) -> RedisResult<Next> {
    let key = stream_key(job.job_id);
    loop {
        let mut conn = shared.commands().await?;
        let reply: StreamRangeReply = conn
            .xrange_count(&key, entry_id(job.delivered + 1), "+", READ_BATCH)
            .await?;
        let read = reply.ids.len();
        for mut entry in reply.ids {
            let Some(last) = entry_seq(&entry.id) else {
                continue;
            };
            let Some(events) = batch::read_entry(last, std::mem::take(&mut entry.map)) else {
                // Left undelivered: the events after it find the gap and fill it from the
                // database.
                tracing::warn!(job_id = %job.job_id, seq = last, "malformed stream entry skipped");
                continue;
            };
            for (seq, kind, frame) in events {
                if seq <= job.delivered {
                    continue;
                }
                if seq > job.delivered + 1
                    && fill_from_database(shared, job, seq).await == Next::Stop
                {
                    return Ok(Next::Stop);
                }
                if job.hand_on(seq, kind, frame) == Next::Stop {
                    return Ok(Next::Stop);
                }
            }
        }
        if read < READ_BATCH {
            break;
        }
    }
    if job.drain_ahead() == Next::Stop {
        return Ok(Next::Stop);
    }
    if let Some(&first) = job.ahead.keys().next() {
        // The stream has nothing between what was delivered and what waits: gone.
        if fill_from_database(shared, job, first).await == Next::Stop {
            return Ok(Next::Stop);
        }
        return Ok(job.drain_ahead());
    }
    Ok(Next::Continue)
}

/// Events up to `next_seq` are lost: send the job's state from the database in their place
/// and go on from `next_seq`.
async fn fill_from_database(shared: &Shared, job: &mut Followed, next_seq: u64) -> Next {
    tracing::info!(
        job_id = %job.job_id,
        from = job.delivered,
        to = next_seq,
        "gap in the job's events; answering from the database"
    );
    job.delivered = next_seq - 1;
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

/// Stop following the job of `channel`, now and from Redis.
async fn leave(shared: &Shared, sink: &mut PubSubSink, jobs: &mut Jobs, channel: &str) {
    if forget(shared, jobs, channel) {
        unsubscribe(sink, vec![channel.to_string()]).await;
    }
}

/// Forget the job of `channel` and its mirror; whether it was followed. The caller still
/// unsubscribes from the channel (when Redis is reachable).
fn forget(shared: &Shared, jobs: &mut Jobs, channel: &str) -> bool {
    let Some(job) = jobs.remove(channel) else {
        return false;
    };
    shared.forget_mirror(job.job_id, &job.mirror);
    true
}

/// Unsubscribe from `channels` in one command.
async fn unsubscribe(sink: &mut PubSubSink, channels: Vec<String>) {
    if channels.is_empty() {
        return;
    }
    if let Err(e) = sink.unsubscribe(&channels).await {
        tracing::debug!(channels = channels.len(), error = %e, "could not unsubscribe");
    }
}

/// The jobs that said nothing for [`QUIET`]: stop following those nobody watches, and end
/// those the database says ended. The database is asked for all of them at once, so a crowd
/// of quiet jobs holds up the busy ones for one round trip only. Without `sink` (Redis is
/// away) every job is checked.
async fn check_quiet(shared: &Shared, jobs: &mut Jobs, sink: Option<&mut PubSubSink>) {
    let everyone = sink.is_none();
    let checks = jobs
        .iter_mut()
        .filter(|(_, job)| everyone || job.heard.elapsed() >= QUIET)
        .map(|(channel, job)| async move {
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
            (channel.clone(), next)
        });
    let stops: Vec<String> = futures::future::join_all(checks)
        .await
        .into_iter()
        .filter(|(_, next)| *next == Next::Stop)
        .map(|(channel, _)| channel)
        .collect();
    let ended: Vec<String> = stops
        .into_iter()
        .filter(|channel| forget(shared, jobs, channel))
        .collect();
    if let Some(sink) = sink {
        unsubscribe(sink, ended).await;
    }
}

/// While the job is quiet: end the mirror with the database's terminal state when the job
/// ended without its events saying so (its instance died, or Redis lost the event).
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
