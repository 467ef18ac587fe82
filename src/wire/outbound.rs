//! A connection's bounded outbound queue. Job fan-out never blocks on a socket: when a
//! client stops reading and its queue fills — in frames or in bytes — the connection is told
//! to close instead of letting memory grow (docs/decisions.md, decisions 7 and 14). A job
//! may wait between bursts for a queue that backs up ([`OutboundSender::drained`]), briefly.
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

use super::deadline::{Deadline, PackedDeadline};
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

/// The queued items and the bytes of text they hold.
#[derive(Default)]
struct Queue {
    items: VecDeque<Outbound>,
    bytes: usize,
}

impl Queue {
    /// At most a quarter of either budget queued.
    fn is_drained(&self, shared: &Shared) -> bool {
        self.bytes <= shared.max_bytes / 4 && self.items.len() <= shared.max_items / 4
    }
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Notify,
    /// Tells a job waiting for this queue to drain (see [`OutboundSender::drained`]) that
    /// it has: notified only while `drain_awaited` is set, so writing costs nothing extra
    /// when nobody waits.
    drained: Notify,
    drain_awaited: AtomicBool,
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
            drained: Notify::new(),
            drain_awaited: AtomicBool::new(false),
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
                    self.shared.drained.notify_waiters();
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

    /// Whether more than half of either budget is queued: the client reads slower than its
    /// job produces.
    pub fn is_backlogged(&self) -> bool {
        let queue = self.shared.queue.lock();
        queue.bytes > self.shared.max_bytes / 2 || queue.items.len() > self.shared.max_items / 2
    }

    /// Wait until at most a quarter of either budget is queued, or the connection is gone.
    pub async fn drained(&self) {
        loop {
            let notified = self.shared.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.shared.drain_awaited.store(true, Ordering::Release);
            if self.is_closed() || self.shared.queue.lock().is_drained(&self.shared) {
                return;
            }
            notified.await;
        }
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
        if queue.is_drained(&self.shared) && self.shared.drain_awaited.swap(false, Ordering::AcqRel)
        {
            self.shared.drained.notify_waiters();
        }
        Some(item)
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        let mut queue = self.shared.queue.lock();
        *queue = Queue::default();
        drop(queue);
        self.shared.drained.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_backlogged_queue_is_waited_for_until_a_quarter_is_left() {
        let (tx, mut rx) = OutboundSender::channel(1, 1024, 100);
        for _ in 0..6 {
            assert!(tx.send(Outbound::Frame(Utf8Bytes::from("0123456789"))));
        }
        assert!(tx.is_backlogged(), "60 of 100 bytes queued");
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.drained().await }
        });
        for _ in 0..3 {
            rx.try_recv();
            tokio::task::yield_now().await;
        }
        assert!(
            !waiting.is_finished(),
            "30 bytes queued, more than a quarter"
        );
        rx.try_recv();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("20 bytes queued: drained")
            .unwrap();
        assert!(!tx.is_backlogged());

        // A connection that goes away releases its waiter too.
        for _ in 0..5 {
            tx.send(Outbound::Frame(Utf8Bytes::from("0123456789")));
        }
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.drained().await }
        });
        tokio::task::yield_now().await;
        drop(rx);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("a closed queue is not waited for")
            .unwrap();
    }

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
