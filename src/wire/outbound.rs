//! A connection's bounded outbound queue. Job fan-out never blocks on a socket: when a
//! client stops reading and its queue fills, the connection is told to close instead of
//! letting memory grow (docs/decisions.md, decision 7).
//!
//! Hand-rolled on a `VecDeque` + `Notify` rather than `tokio::sync::mpsc` because an idle
//! queue then owns no heap memory at all, which matters with tens of thousands of mostly
//! idle sockets.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::{counter_inc, METRICS};

#[derive(Debug)]
pub enum Outbound {
    Frame(Utf8Bytes),
    /// Frames that must reach the socket back to back (a job's replayed history).
    Batch(Vec<Utf8Bytes>),
    /// Send a close frame and end the connection.
    Close(u16, &'static str),
}

struct Shared {
    queue: Mutex<VecDeque<Outbound>>,
    ready: Notify,
    capacity: usize,
    closed: AtomicBool,
    /// Checked on every send; the token's own check takes a lock.
    overflow_tripped: AtomicBool,
    /// Wakes the connection task so it closes the socket.
    overflowed: CancellationToken,
}

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
    pub fn channel(conn_id: u64, capacity: usize) -> (Self, OutboundReceiver, CancellationToken) {
        let overflowed = CancellationToken::new();
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity,
            closed: AtomicBool::new(false),
            overflow_tripped: AtomicBool::new(false),
            overflowed: overflowed.clone(),
        });
        (
            Self {
                conn_id,
                shared: Arc::clone(&shared),
            },
            OutboundReceiver { shared },
            overflowed,
        )
    }

    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// Queue without waiting. False when the connection is gone or could not keep up (it is
    /// then closed by its own task).
    pub fn send(&self, item: Outbound) -> bool {
        if self.is_closed() {
            return false;
        }
        {
            let Ok(mut queue) = self.shared.queue.lock() else {
                return false;
            };
            if queue.len() >= self.shared.capacity {
                drop(queue);
                if !self.shared.overflow_tripped.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        conn_id = self.conn_id,
                        "outbound queue full; disconnecting slow client"
                    );
                    counter_inc(&METRICS.outbound_overflow_disconnects);
                }
                self.shared.overflowed.cancel();
                return false;
            }
            queue.push_back(item);
        }
        // Stores a permit when the connection task is not waiting right now.
        self.shared.ready.notify_one();
        true
    }

    pub fn frame(&self, frame: Utf8Bytes) -> bool {
        self.send(Outbound::Frame(frame))
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
            || self.shared.overflow_tripped.load(Ordering::Acquire)
    }
}

impl OutboundReceiver {
    /// The next queued item, waiting for one.
    pub async fn recv(&mut self) -> Outbound {
        loop {
            if let Some(item) = self.try_recv() {
                return item;
            }
            self.shared.ready.notified().await;
        }
    }

    pub fn try_recv(&mut self) -> Option<Outbound> {
        let mut queue = self.shared.queue.lock().ok()?;
        let item = queue.pop_front();
        // Give back the memory of a burst once it has been written.
        if queue.is_empty() && queue.capacity() > 64 {
            queue.shrink_to(0);
        }
        item
    }
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        if let Ok(mut queue) = self.shared.queue.lock() {
            queue.clear();
            queue.shrink_to(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_and_wakes_the_receiver() {
        let (tx, mut rx, _) = OutboundSender::channel(1, 8);
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

    #[test]
    fn overflow_trips_and_closed_refuses() {
        let (tx, rx, overflowed) = OutboundSender::channel(1, 2);
        assert!(tx.frame(Utf8Bytes::from_static("1")) && tx.frame(Utf8Bytes::from_static("2")));
        assert!(!tx.frame(Utf8Bytes::from_static("3")));
        assert!(overflowed.is_cancelled());
        drop(rx);
        assert!(tx.is_closed());
    }
}
