//! A job's event log and its subscribers. Every event gets the next sequence number and is
//! appended and delivered under one lock, so a socket that subscribes mid-job receives the
//! log up to some sequence number and then every later event: nothing lost, nothing twice.
//! The log is bounded in bytes ([`EventLog`]). The same lock hands each event of a job
//! running here to the job bus ([`EventForward`]), so other instances see the same order.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use serde::Deserialize;
use uuid::Uuid;

use super::event_kind::EventKind;
use super::event_log::{EventLog, FrameKind};
use crate::metrics::{counter_inc, METRICS};
use crate::wire::outbound::{Outbound, OutboundSender};
use crate::wire::protocol::ServerMessage;

/// Where the events of a job running here also go (the job bus), in sequence order.
pub trait EventForward: Send + Sync {
    /// Hand on consecutive events of `job_id`, numbered from `first_seq` on: one, or a
    /// burst released together. Called under the channel's lock, so it never waits.
    fn forward(&self, job_id: Uuid, first_seq: u64, events: &[(Utf8Bytes, EventKind)]);
}

/// How a socket came to follow the job; decides whether `gameUpdated` follows `completed`
/// (docs/protocol.md §4.2 step 8d and §5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// The socket sent the `message` that started or attached to the job.
    Message,
    /// The socket selected the project (or used `subscribeJob`) while the job ran.
    Observer,
}

struct Subscriber {
    sink: OutboundSender,
    kind: SubscriptionKind,
    /// The job waits for this socket when its queue backs up; cleared once the socket has
    /// kept the job waiting for a whole grace period (it is then left to overflow).
    paced: bool,
}

struct Inner {
    log: EventLog,
    subscribers: Vec<Subscriber>,
    /// Open [`HeldWakes`] guards: events are queued to the sockets without waking them.
    holds: u32,
    /// Events were queued under a hold and their sockets not woken yet.
    unwoken: bool,
    /// Events held for the forward while a hold is open (the log's newest): a burst reaches
    /// the bus as one run.
    forward_held: Vec<(Utf8Bytes, EventKind)>,
}

/// While alive, the channel's events reach the subscribers' queues without waking their
/// tasks; dropping it wakes each once. A burst of events then leaves in one write per
/// socket instead of one per event.
pub struct HeldWakes {
    channel: Arc<JobChannel>,
}

impl Drop for HeldWakes {
    fn drop(&mut self) {
        let mut inner = self.channel.inner.lock();
        inner.holds -= 1;
        if inner.holds > 0 {
            return;
        }
        if std::mem::take(&mut inner.unwoken) {
            for sub in &inner.subscribers {
                sub.sink.wake();
            }
        }
        // The sockets first, as in `deliver`.
        if !inner.forward_held.is_empty() {
            if let Some(forward) = &self.channel.forward {
                let first = inner.log.last_seq() + 1 - inner.forward_held.len() as u64;
                forward.forward(self.channel.job_id, first, &inner.forward_held);
            }
            inner.forward_held.clear();
        }
    }
}

/// One job's events as this process has them, fanned out to the connections watching it:
/// the job's own, when it runs here, or the mirror of a job another instance runs (fed
/// from the bus).
pub struct JobChannel {
    job_id: Uuid,
    user_id: Uuid,
    project_id: Uuid,
    /// Where the events of a job running here also go; `None` on a mirror.
    forward: Option<Arc<dyn EventForward>>,
    inner: Mutex<Inner>,
}

/// The part of a `stream` frame a mirror needs to merge it into its log.
#[derive(Deserialize)]
struct StreamFrame {
    content: String,
}

impl JobChannel {
    /// `log_max_bytes` bounds what the job keeps for late subscribers.
    pub fn new(
        job_id: Uuid,
        user_id: Uuid,
        project_id: Uuid,
        log_max_bytes: usize,
        forward: Option<Arc<dyn EventForward>>,
    ) -> Self {
        Self {
            job_id,
            user_id,
            project_id,
            forward,
            inner: Mutex::new(Inner {
                log: EventLog::new(log_max_bytes),
                subscribers: Vec::new(),
                holds: 0,
                unwoken: false,
                forward_held: Vec::new(),
            }),
        }
    }

    fn game_updated(&self) -> Utf8Bytes {
        ServerMessage::GameUpdated {
            user_id: self.user_id,
            project_id: self.project_id,
        }
        .to_frame()
    }

    /// Queue events without waking the subscribers until the guard is dropped.
    pub fn hold_wakes(self: &Arc<Self>) -> HeldWakes {
        self.inner.lock().holds += 1;
        HeldWakes {
            channel: Arc::clone(self),
        }
    }

    /// Append an event and deliver it to every subscriber. Returns its sequence number.
    pub fn publish(&self, message: &ServerMessage) -> u64 {
        let text = match message {
            ServerMessage::Stream { content } => Some(content.as_str()),
            _ => None,
        };
        self.deliver(message.to_frame(), EventKind::of(message), text)
    }

    /// Append an already serialized event (a mirror's, read from the bus) and deliver it.
    pub fn push(&self, frame: Utf8Bytes, kind: EventKind) -> u64 {
        let stream = (kind == EventKind::Stream)
            .then(|| serde_json::from_str::<StreamFrame>(&frame).ok())
            .flatten();
        self.deliver(frame, kind, stream.as_ref().map(|s| s.content.as_str()))
    }

    /// `stream_text` is the content of a `stream` event, which the log merges.
    fn deliver(&self, frame: Utf8Bytes, kind: EventKind, stream_text: Option<&str>) -> u64 {
        let game_updated = (kind == EventKind::Completed).then(|| self.game_updated());
        let mut inner = self.inner.lock();
        let seq = match (stream_text, kind) {
            (Some(text), _) => inner.log.append_stream(text),
            (None, EventKind::Progress) => {
                inner.log.append_frame(frame.clone(), FrameKind::Progress)
            }
            (None, EventKind::Completed) => {
                inner.log.append_frame(frame.clone(), FrameKind::Completed)
            }
            (None, _) => inner.log.append_frame(frame.clone(), FrameKind::Other),
        };
        let wake = inner.holds == 0;
        inner.unwoken |= !wake;
        inner.subscribers.retain(|sub| {
            let item = match (&game_updated, sub.kind) {
                (Some(extra), SubscriptionKind::Message) => {
                    Outbound::Batch(vec![frame.clone(), extra.clone()])
                }
                _ => Outbound::Frame(frame.clone()),
            };
            let delivered = if wake {
                sub.sink.send(item)
            } else {
                sub.sink.send_later(item)
            };
            if delivered {
                counter_inc(&METRICS.events_relayed);
            }
            // A socket that is gone or cannot keep up is being closed: stop feeding it.
            delivered
        });
        // After the sockets here are woken, so the bus's work never delays them; still
        // under the lock, so the bus gets the job's events in order.
        if let Some(forward) = &self.forward {
            if wake {
                forward.forward(self.job_id, seq, &[(frame, kind)]);
            } else {
                inner.forward_held.push((frame, kind));
            }
        }
        seq
    }

    /// Follow the job. With `replay`, the socket first receives every event so far (in one
    /// batch), then live events. A socket already subscribed is not added twice.
    pub fn subscribe(&self, sink: OutboundSender, kind: SubscriptionKind, replay: bool) {
        let mut inner = self.inner.lock();
        if let Some(existing) = inner
            .subscribers
            .iter_mut()
            .find(|s| s.sink.conn_id() == sink.conn_id())
        {
            // A `message` on a job the socket already follows upgrades it to message-path.
            if kind == SubscriptionKind::Message {
                existing.kind = kind;
            }
            return;
        }
        if replay && inner.log.last_seq() > 0 {
            let game_updated = (kind == SubscriptionKind::Message).then(|| self.game_updated());
            sink.send(Outbound::Batch(inner.log.replay(game_updated.as_ref())));
        }
        inner.subscribers.push(Subscriber {
            sink,
            kind,
            paced: true,
        });
    }

    /// Stops sending this job's events to a connection.
    pub fn unsubscribe(&self, conn_id: u64) {
        let mut inner = self.inner.lock();
        let unwoken = inner.unwoken;
        inner.subscribers.retain(|s| {
            let leaving = s.sink.conn_id() == conn_id;
            if leaving && unwoken {
                // What it was sent under a hold still reaches it.
                s.sink.wake();
            }
            !leaving
        });
    }

    /// A socket whose queue is backing up and that the job still waits for: the job reads
    /// no further until it drains (or gives up on it, [`stop_pacing`](Self::stop_pacing)).
    pub fn backlogged(&self) -> Option<OutboundSender> {
        self.inner
            .lock()
            .subscribers
            .iter()
            .find(|sub| sub.paced && sub.sink.is_backlogged())
            .map(|sub| sub.sink.clone())
    }

    /// Stop waiting for this connection's queue: a client that stays this slow is closed
    /// when its queue overflows, and the job goes on.
    pub fn stop_pacing(&self, conn_id: u64) {
        for sub in self.inner.lock().subscribers.iter_mut() {
            if sub.sink.conn_id() == conn_id {
                sub.paced = false;
            }
        }
    }

    /// Whether any connection of this process follows the job.
    pub fn has_subscribers(&self) -> bool {
        !self.inner.lock().subscribers.is_empty()
    }

    /// Whether a connection receives this job's events.
    pub fn is_subscribed(&self, conn_id: u64) -> bool {
        self.inner
            .lock()
            .subscribers
            .iter()
            .any(|s| s.sink.conn_id() == conn_id)
    }

    /// Sequence number of the newest event (0 before the first).
    #[cfg(test)]
    fn last_seq(&self) -> u64 {
        self.inner.lock().log.last_seq()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::outbound::OutboundSender;

    fn texts(rx: &mut crate::wire::outbound::OutboundReceiver) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(item) = rx.try_recv() {
            match item {
                Outbound::Frame(f) => out.push(f.to_string()),
                Outbound::Batch(fs) => out.extend(fs.into_iter().map(|f| f.to_string())),
                Outbound::Close(..) => out.push("close".into()),
                Outbound::Ping => out.push("ping".into()),
            }
        }
        out
    }

    fn stream(n: usize) -> ServerMessage {
        ServerMessage::Stream {
            content: format!("e{n}"),
        }
    }

    #[test]
    fn late_subscriber_gets_log_then_live_without_duplicates() {
        let channel = JobChannel::new(Uuid::nil(), Uuid::nil(), Uuid::nil(), 1 << 20, None);
        let (early, mut early_rx) = OutboundSender::channel(1, 64, 1 << 20);
        channel.subscribe(early, SubscriptionKind::Message, true);
        for n in 0..3 {
            channel.publish(&stream(n));
        }
        let (late, mut late_rx) = OutboundSender::channel(2, 64, 1 << 20);
        channel.subscribe(late.clone(), SubscriptionKind::Observer, true);
        channel.subscribe(late, SubscriptionKind::Observer, true);
        for n in 3..5 {
            channel.publish(&stream(n));
        }
        let live: Vec<String> = (0..5)
            .map(|n| format!(r#"{{"type":"stream","content":"e{n}"}}"#))
            .collect();
        assert_eq!(texts(&mut early_rx), live);
        // The log holds consecutive stream texts as one.
        let mut replayed = vec![r#"{"type":"stream","content":"e0e1e2"}"#.to_string()];
        replayed.extend_from_slice(&live[3..]);
        assert_eq!(texts(&mut late_rx), replayed);
        assert_eq!(channel.last_seq(), 5);
    }

    /// A job's channel and the queue of socket 1, which follows it.
    fn observed_by_socket_1() -> (Arc<JobChannel>, crate::wire::outbound::OutboundReceiver) {
        let channel = Arc::new(JobChannel::new(
            Uuid::nil(),
            Uuid::nil(),
            Uuid::nil(),
            1 << 20,
            None,
        ));
        let (sink, rx) = OutboundSender::channel(1, 64, 1 << 20);
        channel.subscribe(sink, SubscriptionKind::Observer, false);
        (channel, rx)
    }

    #[tokio::test]
    async fn held_events_wake_each_socket_once_when_released() {
        let (channel, mut rx) = observed_by_socket_1();
        let reader = tokio::spawn(async move {
            let first = rx.recv().await;
            (first, texts(&mut rx))
        });
        tokio::task::yield_now().await;
        let held = channel.hold_wakes();
        for n in 0..3 {
            channel.publish(&stream(n));
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!reader.is_finished(), "woken while the events were held");
        drop(held);
        let (first, rest) = reader.await.unwrap();
        assert!(matches!(first, Outbound::Frame(f) if f.as_str().contains("e0")));
        assert_eq!(rest.len(), 2, "the rest was queued by then: {rest:?}");
    }

    #[tokio::test]
    async fn a_socket_leaving_under_a_hold_still_gets_what_it_was_sent() {
        let (channel, mut rx) = observed_by_socket_1();
        let reader = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        let _held = channel.hold_wakes();
        channel.publish(&stream(0));
        channel.unsubscribe(1);
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
        assert!(woken.is_ok(), "the leaving socket was never woken");
    }

    #[test]
    fn full_queue_drops_the_subscriber() {
        let channel = JobChannel::new(Uuid::nil(), Uuid::nil(), Uuid::nil(), 1 << 20, None);
        let (slow, _rx) = OutboundSender::channel(1, 8, 1 << 20);
        channel.subscribe(slow.clone(), SubscriptionKind::Observer, false);
        for n in 0..20 {
            channel.publish(&stream(n));
        }
        assert!(slow.is_closed());
    }
}
