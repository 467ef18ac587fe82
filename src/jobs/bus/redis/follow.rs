//! Following jobs other instances run: one task per instance feeds every mirror channel, in
//! order and nothing twice, with gaps and unannounced ends answered from the database.
//!
//! Live events come by pub/sub: the owner publishes each batch of events on the job's live
//! channel right after adding it to the job's stream, and Redis pushes it to the followers without
//! waiting for a request (a blocking `XREAD` per batch put a round trip, and under load tens
//! of milliseconds, on every event). The stream is read only to catch up: after subscribing,
//! after a reconnect, and when a sequence number is skipped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use futures::{FutureExt, StreamExt};
use redis::aio::PubSubSink;
use redis::streams::StreamRangeReply;
use redis::{AsyncCommands, RedisResult};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::batch;
use super::shared::{
    entry_id, entry_seq, live_channel, stream_key, Part, Shared, QUIET, READ_BATCH, RETRY,
};
use crate::jobs::bus::state_from_database;
use crate::jobs::channel::{HeldWakes, JobChannel};
use crate::jobs::event_kind::EventKind;

/// Live events kept while a gap waits to be filled (only while reading the stream fails).
const AHEAD_MAX_EVENTS: usize = 4096;

/// Live messages handed on at most before the sockets they fed are woken.
const LIVE_BURST_MAX: usize = 256;

/// A job to follow, handed to the follower task by [`super::RedisBus`].
pub(super) struct Follow {
    pub(super) job_id: Uuid,
    pub(super) mirror: Arc<JobChannel>,
}

/// Whether a followed job stays or goes.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Stop,
}

/// One followed job as the follower task keeps it.
struct Followed {
    job_id: Uuid,
    mirror: Arc<JobChannel>,
    /// Sequence number of the last event handed to the mirror.
    delivered: u64,
    /// Live events that arrived ahead of a gap, waiting for it to be filled.
    ahead: BTreeMap<u64, (EventKind, Utf8Bytes)>,
    /// When the job last gave an event, or was last checked while quiet.
    heard: Instant,
    /// Quiet checks in a row that found no socket following the mirror.
    unwatched_checks: u32,
    /// The database said the job ended: one more quiet period is given to the real terminal
    /// event before the database's state is sent instead.
    ended_in_database: bool,
}

impl Followed {
    fn new(follow: Follow) -> Self {
        Self {
            job_id: follow.job_id,
            mirror: follow.mirror,
            delivered: 0,
            ahead: BTreeMap::new(),
            heard: Instant::now(),
            unwatched_checks: 0,
            ended_in_database: false,
        }
    }

    /// Hand event `seq` to the mirror if it is the next one. Stops at the terminal event.
    fn hand_on(&mut self, seq: u64, kind: EventKind, frame: Utf8Bytes) -> Next {
        if seq != self.delivered + 1 {
            return Next::Continue;
        }
        self.delivered = seq;
        self.heard = Instant::now();
        self.unwatched_checks = 0;
        self.mirror.push(frame, kind);
        if kind.is_terminal() {
            Next::Stop
        } else {
            Next::Continue
        }
    }

    /// Hand on the waiting live events that now follow without a gap.
    fn drain_ahead(&mut self) -> Next {
        self.ahead = self.ahead.split_off(&(self.delivered + 1));
        while let Some((kind, frame)) = self.ahead.remove(&(self.delivered + 1)) {
            if self.hand_on(self.delivered + 1, kind, frame) == Next::Stop {
                return Next::Stop;
            }
        }
        Next::Continue
    }
}

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
                        if let Err(e) = on_live(&shared, &mut sink, &mut jobs, &channel, payload).await {
                            shared.health.set(Part::Followers, e);
                        }
                        handled += 1;
                        if handled < LIVE_BURST_MAX {
                            next = messages.next().now_or_never();
                        }
                    }
                    drop(held);
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
    jobs.insert(channel.clone(), Followed::new(follow));
    sink.subscribe(&channel).await?;
    let Some(job) = jobs.get_mut(&channel) else {
        return Ok(());
    };
    if catch_up(shared, job).await? == Next::Stop {
        leave(shared, Some(sink), jobs, &channel).await;
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
        if catch_up(shared, job).await? == Next::Stop {
            leave(shared, Some(sink), jobs, &channel).await;
        }
    }
    Ok(())
}

/// One live batch: each event handed on when it is the next, else kept until the stream
/// fills the gap.
async fn on_live(
    shared: &Shared,
    sink: &mut PubSubSink,
    jobs: &mut Jobs,
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
    if next == Next::Stop {
        leave(shared, Some(sink), jobs, channel).await;
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

/// Stop following the job of `channel`: forget its mirror and, when Redis is reachable
/// (`sink`), unsubscribe from its live channel.
async fn leave(shared: &Shared, sink: Option<&mut PubSubSink>, jobs: &mut Jobs, channel: &str) {
    let Some(job) = jobs.remove(channel) else {
        return;
    };
    shared.forget_mirror(job.job_id, &job.mirror);
    if let Some(sink) = sink {
        if let Err(e) = sink.unsubscribe(channel).await {
            tracing::debug!(job_id = %job.job_id, error = %e, "could not unsubscribe");
        }
    }
}

/// The jobs that said nothing for [`QUIET`]: stop following those nobody watches, and end
/// those the database says ended. The database is asked for all of them at once, so a crowd
/// of quiet jobs holds up the busy ones for one round trip only. Without `sink` (Redis is
/// away) every job is checked.
async fn check_quiet(shared: &Shared, jobs: &mut Jobs, mut sink: Option<&mut PubSubSink>) {
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
    for channel in stops {
        leave(shared, sink.as_deref_mut(), jobs, &channel).await;
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
