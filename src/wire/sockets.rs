//! Every open socket's outbound queue, by connection id. The drain closes the sockets
//! through their queues, after whatever each has queued, so no socket has to hold a
//! shutdown signal of its own (an idle socket's memory is mostly its task).

use std::collections::HashMap;

use parking_lot::Mutex;

use super::outbound::OutboundSender;
use super::protocol::close;

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
}
