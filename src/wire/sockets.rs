//! Every open socket's outbound queue, by connection id, and the one clock they share. The
//! drain closes the sockets through their queues, after whatever each has queued; the clock
//! closes those past their deadline and pings the others. So no socket holds a shutdown
//! signal or a timer of its own (an idle socket's memory is mostly its task).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::deadline::Deadline;
use super::outbound::OutboundSender;
use super::protocol::close;

/// How often the clock looks at every socket: the precision of the authentication deadline
/// and of a token's expiry on a socket that sends nothing.
const CLOCK_TICK: Duration = Duration::from_millis(250);

/// The open sockets' queues.
#[derive(Default)]
pub struct OpenSockets {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    queues: HashMap<u64, OutboundSender>,
    /// Set by [`OpenSockets::close_all`]: a socket that opens afterwards is closed at once.
    closing: bool,
}

/// A socket's entry in [`OpenSockets`], removed when this is dropped.
pub struct Registration<'a> {
    sockets: &'a OpenSockets,
    conn_id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.sockets.inner.lock().queues.remove(&self.conn_id);
    }
}

impl OpenSockets {
    /// Count `queue`'s socket as open until the returned registration is dropped.
    pub fn register(&self, queue: &OutboundSender) -> Registration<'_> {
        let mut inner = self.inner.lock();
        if inner.closing {
            queue.close(close::SERVICE_RESTART, close::REASON_SERVICE_RESTART);
        }
        inner.queues.insert(queue.conn_id(), queue.clone());
        Registration {
            sockets: self,
            conn_id: queue.conn_id(),
        }
    }

    /// Run the sockets' clock until `stop` fires: every [`CLOCK_TICK`], close the sockets
    /// whose deadline passed and ping each socket once per `ping_every`, their turns spread
    /// over the interval rather than all at once.
    pub async fn run_clock(&self, ping_every: Duration, stop: CancellationToken) {
        let turns_per_ping = (ping_every.as_millis() / CLOCK_TICK.as_millis()).max(1) as u64;
        let mut tick = tokio::time::interval(CLOCK_TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut turn = 0u64;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    turn = turn.wrapping_add(1);
                    self.tick(unix_millis(), turn, turns_per_ping);
                }
            }
        }
    }

    fn tick(&self, now_ms: u64, turn: u64, turns_per_ping: u64) {
        let inner = self.inner.lock();
        for (conn_id, queue) in &inner.queues {
            match queue.take_due(now_ms) {
                Some(Deadline::Auth(_)) => {
                    queue.close(close::AUTH_TIMEOUT, close::REASON_AUTH_TIMEOUT);
                }
                Some(Deadline::Token(_)) => {
                    queue.close_token_expired();
                }
                None if conn_id.wrapping_add(turn) % turns_per_ping == 0 => queue.ping(),
                None => {}
            }
        }
    }

    /// Close every socket, now open or opened later, with 1012 once it has written what it
    /// had queued: the browser reconnects, and the load balancer picks another instance.
    pub fn close_all(&self) {
        let mut inner = self.inner.lock();
        inner.closing = true;
        for queue in inner.queues.values() {
            queue.close(close::SERVICE_RESTART, close::REASON_SERVICE_RESTART);
        }
    }
}

/// Now, in the milliseconds [`Deadline`]s are given in.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::outbound::Outbound;
    use axum::extract::ws::Utf8Bytes;

    #[test]
    fn close_all_reaches_open_and_later_sockets_after_their_queued_frames() {
        let sockets = OpenSockets::default();
        let (open, mut open_rx) = OutboundSender::channel(1, 1, 1 << 20);
        let registered = sockets.register(&open);
        assert!(open.frame(Utf8Bytes::from_static("last")));
        sockets.close_all();
        assert!(matches!(open_rx.try_recv(), Some(Outbound::Frame(f)) if f == "last"));
        assert!(matches!(
            open_rx.try_recv(),
            Some(Outbound::Close(1012, "Server restarting"))
        ));
        let (late, mut late_rx) = OutboundSender::channel(2, 1, 1 << 20);
        let _late = sockets.register(&late);
        assert!(matches!(late_rx.try_recv(), Some(Outbound::Close(1012, _))));
        drop(registered);
        sockets.close_all();
        assert!(
            open_rx.try_recv().is_none(),
            "a socket that ended is no longer reached"
        );
    }

    #[test]
    fn the_clock_closes_sockets_past_their_deadline_and_pings_each_in_turn() {
        let sockets = OpenSockets::default();
        let (waiting, mut waiting_rx) = OutboundSender::channel(0, 8, 1 << 20);
        let (expiring, mut expiring_rx) = OutboundSender::channel(1, 8, 1 << 20);
        waiting.set_deadline(Deadline::Auth(1_000));
        expiring.set_deadline(Deadline::Token(2_000));
        let _w = sockets.register(&waiting);
        let _e = sockets.register(&expiring);

        // A socket's turn to be pinged comes when its id plus the turn divides by 4.
        sockets.tick(500, 3, 4);
        assert!(matches!(expiring_rx.try_recv(), Some(Outbound::Ping)));
        assert!(
            waiting_rx.try_recv().is_none(),
            "socket 0 pings on another turn"
        );
        sockets.tick(500, 4, 4);
        assert!(matches!(waiting_rx.try_recv(), Some(Outbound::Ping)));
        assert!(expiring_rx.try_recv().is_none());

        sockets.tick(1_500, 1, 4);
        assert!(matches!(
            waiting_rx.try_recv(),
            Some(Outbound::Close(4008, "Authentication timeout"))
        ));
        assert!(expiring_rx.try_recv().is_none());
        sockets.tick(2_000, 1, 4);
        assert!(
            matches!(expiring_rx.try_recv(), Some(Outbound::Frame(f)) if f.contains("Token expired"))
        );
        assert!(matches!(
            expiring_rx.try_recv(),
            Some(Outbound::Close(4001, "Token expired"))
        ));
        sockets.tick(9_000, 2, 4);
        assert!(waiting_rx.try_recv().is_none(), "a deadline fires once");
    }
}
