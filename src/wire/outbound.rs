//! A connection's bounded outbound queue. Job fan-out never blocks on a socket: when a
//! client stops reading and its queue fills — in frames or in bytes — the connection is told
//! to close instead of letting memory grow (docs/decisions.md, decisions 7 and 14).
//!
//! Hand-rolled on a `VecDeque` + `Notify` rather than `tokio::sync::mpsc` because an idle
//! queue then owns no heap memory at all, which matters with tens of thousands of mostly
//! idle sockets.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::metrics::{counter_inc, METRICS};
use crate::wire::protocol::{close, texts, ServerMessage};

/// One item waiting in a connection's outbound queue.
#[derive(Debug)]
pub enum Outbound {
    Frame(Utf8Bytes),
    /// Frames that must reach the socket back to back (a job's replayed history).
    Batch(Vec<Utf8Bytes>),
    /// Send a close frame and end the connection.
    Close(u16, &'static str),
    /// Send a WebSocket ping (keeps proxies from timing the connection out).
    Ping,
}

impl Outbound {
    /// Bytes of frame text this item holds.
    fn bytes(&self) -> usize {
        match self {
            Outbound::Frame(frame) => frame.len(),
            Outbound::Batch(frames) => frames.iter().map(|frame| frame.len()).sum(),
            Outbound::Close(..) | Outbound::Ping => 0,
        }
    }
}

/// What a socket's clock waits for, in Unix milliseconds. The sockets' one shared clock
/// ([`OpenSockets`](super::sockets::OpenSockets)) acts on it, so no socket holds a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// The client must have authenticated by then.
    Auth(u64),
    /// The client's token has expired by then (clock-skew leeway included).
    Token(u64),
}

/// [`Deadline`] packed into one word: the top bit marks a token's expiry; all ones, none.
#[derive(Debug)]
struct PackedDeadline(AtomicU64);

impl PackedDeadline {
    const NONE: u64 = u64::MAX;
    const TOKEN: u64 = 1 << 63;

    fn pack(deadline: Deadline) -> u64 {
        match deadline {
            Deadline::Auth(at) => at.min(Self::TOKEN - 1),
            Deadline::Token(at) => at.min(Self::TOKEN - 2) | Self::TOKEN,
        }
    }

    fn unpack(word: u64) -> Option<Deadline> {
        match word {
            Self::NONE => None,
            w if w & Self::TOKEN != 0 => Some(Deadline::Token(w & !Self::TOKEN)),
            w => Some(Deadline::Auth(w)),
        }
    }

    fn at(word: u64) -> u64 {
        word & !Self::TOKEN
    }
}

/// The queued items and the bytes of text they hold.
#[derive(Default)]
struct Queue {
    items: VecDeque<Outbound>,
    bytes: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Notify,
    max_items: usize,
    /// One item always fits an empty queue, so a frame above the budget still reaches a
    /// client that reads; every frame is itself bounded by another budget.
    max_bytes: usize,
    closed: AtomicBool,
    /// Set when a send found the queue full: the receiver's next item is then the close.
    overflowed: AtomicBool,
    deadline: PackedDeadline,
}

/// The sending side of a connection's outbound queue.
#[derive(Clone)]
pub struct OutboundSender {
    conn_id: u64,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OutboundSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundSender")
            .field("conn_id", &self.conn_id)
            .finish()
    }
}

/// The connection task's end of the queue. Dropping it closes the queue.
pub struct OutboundReceiver {
    shared: Arc<Shared>,
}

impl OutboundSender {
    /// A queue of at most `max_items` items holding at most `max_bytes` of frame text.
    pub fn channel(conn_id: u64, max_items: usize, max_bytes: usize) -> (Self, OutboundReceiver) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            max_items,
            max_bytes,
            closed: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            deadline: PackedDeadline(AtomicU64::new(PackedDeadline::NONE)),
        });
        (
            Self {
                conn_id,
                shared: Arc::clone(&shared),
            },
            OutboundReceiver { shared },
        )
    }

    /// The connection this queue belongs to.
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// Queue without waiting. False when the connection is gone or could not keep up (it is
    /// then closed by its own task).
    pub fn send(&self, item: Outbound) -> bool {
        self.queue(item, true)
    }

    /// Queue without waking the connection task: the caller queues more and then calls
    /// [`wake`](Self::wake), so the task writes them all with one system call.
    pub fn send_later(&self, item: Outbound) -> bool {
        self.queue(item, false)
    }

    /// Wake the connection task for what [`send_later`](Self::send_later) queued.
    pub fn wake(&self) {
        self.shared.ready.notify_one();
    }

    fn queue(&self, item: Outbound, wake: bool) -> bool {
        if self.is_closed() {
            return false;
        }
        let bytes = item.bytes();
        {
            let mut queue = self.shared.queue.lock();
            let full = queue.items.len() >= self.shared.max_items
                || (!queue.items.is_empty() && queue.bytes + bytes > self.shared.max_bytes);
            if full {
                drop(queue);
                if !self.shared.overflowed.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        conn_id = self.conn_id,
                        "outbound queue full; disconnecting slow client"
                    );
                    counter_inc(&METRICS.outbound_overflow_disconnects);
                    self.shared.ready.notify_one();
                }
                return false;
            }
            queue.bytes += bytes;
            queue.items.push_back(item);
        }
        if wake {
            // Stores a permit when the connection task is not waiting right now.
            self.shared.ready.notify_one();
        }
        true
    }

    /// Queue the close, behind what is queued and past the queue's limits (it holds no
    /// frame text); false if the connection is already gone.
    pub fn close(&self, code: u16, reason: &'static str) -> bool {
        self.push_past_limits([Outbound::Close(code, reason)])
    }

    /// Queue what a socket whose token expired is told last — the error the page matches
    /// on to refresh its session, then the close — past the queue's limits: one small frame
    /// cannot overflow it. False if the connection is already gone.
    pub fn close_token_expired(&self) -> bool {
        let frame = ServerMessage::error(texts::TOKEN_EXPIRED).to_frame();
        self.push_past_limits([
            Outbound::Frame(frame),
            Outbound::Close(close::AUTH_FAILED, texts::TOKEN_EXPIRED),
        ])
    }

    /// Queue a WebSocket ping unless something is queued already (the socket is then
    /// writing anyway, or too slow to be helped by one more item).
    pub fn ping(&self) {
        if self.is_closed() {
            return;
        }
        let mut queue = self.shared.queue.lock();
        if queue.items.is_empty() {
            queue.items.push_back(Outbound::Ping);
            drop(queue);
            self.shared.ready.notify_one();
        }
    }

    /// Queue `items` back to back whatever the limits: the last words of a connection.
    fn push_past_limits<const N: usize>(&self, items: [Outbound; N]) -> bool {
        if self.shared.closed.load(Ordering::Acquire) {
            return false;
        }
        let mut queue = self.shared.queue.lock();
        for item in items {
            queue.bytes += item.bytes();
            queue.items.push_back(item);
        }
        drop(queue);
        self.shared.ready.notify_one();
        true
    }

    /// Set (or replace) what the connection's clock waits for.
    pub fn set_deadline(&self, deadline: Deadline) {
        self.shared
            .deadline
            .0
            .store(PackedDeadline::pack(deadline), Ordering::Release);
    }

    /// The deadline if it has passed at `now_ms`, cleared so that it fires once.
    pub fn take_due(&self, now_ms: u64) -> Option<Deadline> {
        let word = &self.shared.deadline.0;
        let due = word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (current != PackedDeadline::NONE && PackedDeadline::at(current) <= now_ms)
                    .then_some(PackedDeadline::NONE)
            })
            .ok()?;
        PackedDeadline::unpack(due)
    }

    /// Queues one frame; false if the connection is closed.
    pub fn frame(&self, frame: Utf8Bytes) -> bool {
        self.send(Outbound::Frame(frame))
    }

    /// Whether the connection is closed or has overflowed its queue.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire) || self.shared.overflowed.load(Ordering::Acquire)
    }
}

impl OutboundReceiver {
    /// The next queued item, waiting for one; once the queue has overflowed, the close of a
    /// client too slow to keep up, ahead of whatever is still queued.
    pub async fn recv(&mut self) -> Outbound {
        loop {
            if self.shared.overflowed.load(Ordering::Acquire) {
                return Outbound::Close(close::POLICY, close::REASON_TOO_SLOW);
            }
            if let Some(item) = self.try_recv() {
                return item;
            }
            self.shared.ready.notified().await;
        }
    }

    /// The next queued item, if any, without waiting.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let mut queue = self.shared.queue.lock();
        let item = queue.items.pop_front()?;
        queue.bytes -= item.bytes();
        // Give back the memory of a burst once it has been written.
        if queue.items.is_empty() && queue.items.capacity() > 64 {
            queue.items.shrink_to(0);
        }
        Some(item)
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        let mut queue = self.shared.queue.lock();
        *queue = Queue::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_and_wakes_the_receiver() {
        let (tx, mut rx) = OutboundSender::channel(1, 8, 1 << 20);
        let waiter = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..3 {
                if let Outbound::Frame(f) = rx.recv().await {
                    got.push(f.to_string());
                }
            }
            got
        });
        for text in ["a", "b", "c"] {
            assert!(tx.frame(Utf8Bytes::from(text)));
        }
        assert_eq!(waiter.await.unwrap(), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn overflow_closes_ahead_of_the_queue_and_closed_refuses() {
        let (tx, mut rx) = OutboundSender::channel(1, 2, 1 << 20);
        assert!(tx.frame(Utf8Bytes::from_static("1")) && tx.frame(Utf8Bytes::from_static("2")));
        assert!(!tx.is_closed());
        assert!(!tx.frame(Utf8Bytes::from_static("3")));
        assert!(tx.is_closed());
        assert!(matches!(
            rx.recv().await,
            Outbound::Close(close::POLICY, close::REASON_TOO_SLOW)
        ));
        let (tx, rx) = OutboundSender::channel(2, 2, 1 << 20);
        drop(rx);
        assert!(tx.is_closed());
        assert!(!tx.frame(Utf8Bytes::from_static("1")));
    }

    #[test]
    fn a_deadline_fires_once_when_due_and_can_be_replaced() {
        let (tx, _rx) = OutboundSender::channel(1, 8, 1 << 20);
        assert_eq!(tx.take_due(u64::MAX - 1), None, "no deadline set");
        tx.set_deadline(Deadline::Auth(1_000));
        assert_eq!(tx.take_due(999), None);
        tx.set_deadline(Deadline::Token(2_000));
        assert_eq!(tx.take_due(1_999), None, "the token's expiry replaced it");
        assert_eq!(tx.take_due(2_000), Some(Deadline::Token(2_000)));
        assert_eq!(tx.take_due(5_000), None, "fired once");
        tx.set_deadline(Deadline::Auth(3_000));
        assert_eq!(tx.take_due(3_001), Some(Deadline::Auth(3_000)));
    }

    #[test]
    fn pings_only_an_idle_queue_and_last_words_pass_the_limits() {
        let (tx, mut rx) = OutboundSender::channel(1, 1, 4);
        tx.ping();
        tx.ping();
        assert!(matches!(rx.try_recv(), Some(Outbound::Ping)));
        assert!(rx.try_recv().is_none(), "one ping while one is queued");
        assert!(tx.frame(Utf8Bytes::from_static("full")));
        tx.ping();
        assert!(tx.close_token_expired());
        assert!(matches!(rx.try_recv(), Some(Outbound::Frame(f)) if f == "full"));
        assert!(
            matches!(rx.try_recv(), Some(Outbound::Frame(f)) if f == r#"{"type":"error","message":"Token expired"}"#)
        );
        assert!(matches!(rx.try_recv(), Some(Outbound::Close(4001, _))));
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn bytes_trip_before_frames_and_come_back_as_frames_leave() {
        let (tx, mut rx) = OutboundSender::channel(1, 100, 10);
        let six = || Utf8Bytes::from_static("123456");
        // One item always fits an empty queue, even above the budget.
        assert!(tx.send(Outbound::Batch(vec![six(), six()])));
        assert!(rx.try_recv().is_some());
        assert!(tx.frame(six()));
        assert!(rx.try_recv().is_some());
        assert!(tx.frame(six()));
        assert!(!tx.frame(six()), "12 bytes queued would exceed 10");
        assert!(tx.is_closed());
    }
}
