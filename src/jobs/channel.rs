//! A job's event log and its subscribers. Every event gets the next sequence number and is
//! appended and delivered under one lock, so a socket that subscribes mid-job receives the
//! log up to some sequence number and then every later event: nothing lost, nothing twice.
//! The same lock hands each event to the job bus, so other instances see the same order.

use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use uuid::Uuid;

use super::bus::{EventKind, JobBus};
use crate::metrics::{counter_inc, METRICS};
use crate::wire::outbound::{Outbound, OutboundSender};
use crate::wire::protocol::ServerMessage;

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
}

struct Entry {
    frame: Utf8Bytes,
    completed: bool,
}

struct Inner {
    log: Vec<Entry>,
    subscribers: Vec<Subscriber>,
    next_seq: u64,
}

/// One job's events as this process has them: the job's own, when it runs here, or the
/// mirror of a job another instance runs (fed from the bus).
pub struct JobChannel {
    job_id: Uuid,
    user_id: Uuid,
    project_id: Uuid,
    /// Where the events of a job running here also go; `None` on a mirror.
    bus: Option<Arc<dyn JobBus>>,
    inner: Mutex<Inner>,
}

impl JobChannel {
    pub fn new(
        job_id: Uuid,
        user_id: Uuid,
        project_id: Uuid,
        bus: Option<Arc<dyn JobBus>>,
    ) -> Self {
        Self {
            job_id,
            user_id,
            project_id,
            bus,
            inner: Mutex::new(Inner {
                log: Vec::new(),
                subscribers: Vec::new(),
                next_seq: 1,
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

    /// Append an event and deliver it to every subscriber. Returns its sequence number.
    pub fn publish(&self, message: &ServerMessage) -> u64 {
        self.push(message.to_frame(), EventKind::of(message))
    }

    /// Append an already serialized event (a mirror's, read from the bus) and deliver it.
    pub fn push(&self, frame: Utf8Bytes, kind: EventKind) -> u64 {
        let completed = kind == EventKind::Completed;
        let game_updated = completed.then(|| self.game_updated());
        let Ok(mut inner) = self.inner.lock() else {
            return 0;
        };
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if let Some(bus) = &self.bus {
            bus.append(self.job_id, seq, &frame, kind);
        }
        inner.log.push(Entry {
            frame: frame.clone(),
            completed,
        });
        inner.subscribers.retain(|sub| {
            let delivered = match (&game_updated, sub.kind) {
                (Some(extra), SubscriptionKind::Message) => sub
                    .sink
                    .send(Outbound::Batch(vec![frame.clone(), extra.clone()])),
                _ => sub.sink.frame(frame.clone()),
            };
            if delivered {
                counter_inc(&METRICS.events_relayed);
            }
            // A socket that is gone or cannot keep up is being closed: stop feeding it.
            delivered
        });
        seq
    }

    /// Follow the job. With `replay`, the socket first receives every event so far (in one
    /// batch), then live events. A socket already subscribed is not added twice.
    pub fn subscribe(&self, sink: OutboundSender, kind: SubscriptionKind, replay: bool) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
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
        if replay && !inner.log.is_empty() {
            let mut frames = Vec::with_capacity(inner.log.len() + 1);
            for entry in &inner.log {
                frames.push(entry.frame.clone());
                if entry.completed && kind == SubscriptionKind::Message {
                    frames.push(self.game_updated());
                }
            }
            sink.send(Outbound::Batch(frames));
        }
        inner.subscribers.push(Subscriber { sink, kind });
    }

    pub fn unsubscribe(&self, conn_id: u64) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.subscribers.retain(|s| s.sink.conn_id() != conn_id);
        }
    }

    pub fn has_subscribers(&self) -> bool {
        self.inner
            .lock()
            .map(|i| !i.subscribers.is_empty())
            .unwrap_or(false)
    }

    pub fn is_subscribed(&self, conn_id: u64) -> bool {
        self.inner
            .lock()
            .map(|i| i.subscribers.iter().any(|s| s.sink.conn_id() == conn_id))
            .unwrap_or(false)
    }

    /// Sequence number of the newest event (0 before the first).
    #[cfg(test)]
    fn last_seq(&self) -> u64 {
        self.inner.lock().map(|i| i.next_seq - 1).unwrap_or(0)
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
        let channel = JobChannel::new(Uuid::nil(), Uuid::nil(), Uuid::nil(), None);
        let (early, mut early_rx, _) = OutboundSender::channel(1, 64);
        channel.subscribe(early, SubscriptionKind::Message, true);
        for n in 0..3 {
            channel.publish(&stream(n));
        }
        let (late, mut late_rx, _) = OutboundSender::channel(2, 64);
        channel.subscribe(late.clone(), SubscriptionKind::Observer, true);
        channel.subscribe(late, SubscriptionKind::Observer, true);
        for n in 3..5 {
            channel.publish(&stream(n));
        }
        let expected: Vec<String> = (0..5)
            .map(|n| format!(r#"{{"type":"stream","content":"e{n}"}}"#))
            .collect();
        assert_eq!(texts(&mut early_rx), expected);
        assert_eq!(texts(&mut late_rx), expected);
        assert_eq!(channel.last_seq(), 5);
    }

    #[test]
    fn full_queue_drops_the_subscriber() {
        let channel = JobChannel::new(Uuid::nil(), Uuid::nil(), Uuid::nil(), None);
        let (slow, _rx, overflowed) = OutboundSender::channel(1, 8);
        channel.subscribe(slow, SubscriptionKind::Observer, false);
        for n in 0..20 {
            channel.publish(&stream(n));
        }
        assert!(overflowed.is_cancelled());
    }
}
