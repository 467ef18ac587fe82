//! A connection's bounded outbound queue. Job fan-out never blocks on a socket: when a
//! client stops reading and its queue fills, the connection is told to close instead of
//! letting memory grow (spec decision 7).

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub enum Outbound {
    Frame(Utf8Bytes),
    /// Frames that must reach the socket back to back (a job's replayed history).
    Batch(Vec<Utf8Bytes>),
    /// Send a close frame and end the connection.
    Close(u16, &'static str),
}

#[derive(Clone, Debug)]
pub struct OutboundSender {
    conn_id: u64,
    tx: mpsc::Sender<Outbound>,
    overflowed: CancellationToken,
}

impl OutboundSender {
    pub fn channel(conn_id: u64, capacity: usize) -> (Self, mpsc::Receiver<Outbound>, CancellationToken) {
        let (tx, rx) = mpsc::channel(capacity);
        let overflowed = CancellationToken::new();
        (
            Self {
                conn_id,
                tx,
                overflowed: overflowed.clone(),
            },
            rx,
            overflowed,
        )
    }

    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// Queue without waiting. False when the connection is gone or could not keep up (it is
    /// then closed by its own task).
    pub fn send(&self, item: Outbound) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.overflowed.is_cancelled() {
                    tracing::warn!(conn_id = self.conn_id, "outbound queue full; disconnecting slow client");
                    crate::metrics::counter_inc(&crate::metrics::METRICS.outbound_overflow_disconnects);
                }
                self.overflowed.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub fn frame(&self, frame: Utf8Bytes) -> bool {
        self.send(Outbound::Frame(frame))
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}
