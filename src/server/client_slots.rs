//! The per-client connection cap: how many connections each client address holds open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per client address, bounded by `HTTP_MAX_CONNECTIONS_PER_CLIENT`.
pub(super) struct ClientSlots {
    /// 0 = no cap, and no bookkeeping.
    limit: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection (or proxied request) counted against its client; released on drop.
pub(super) struct ClientSlot {
    slots: Arc<ClientSlots>,
    addr: IpAddr,
}

/// The client already holds its maximum number of connections.
#[derive(Debug)]
pub(super) struct ClientFull;

impl ClientSlots {
    pub(super) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `addr`, `Ok(None)` when there is no cap.
    pub(super) fn take(self: &Arc<Self>, addr: IpAddr) -> Result<Option<ClientSlot>, ClientFull> {
        if self.limit == 0 {
            return Ok(None);
        }
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let count = held.entry(addr).or_insert(0);
        if *count >= self.limit {
            return Err(ClientFull);
        }
        *count += 1;
        Ok(Some(ClientSlot {
            slots: Arc::clone(self),
            addr,
        }))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(count) = held.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_address_and_given_back() {
        let slots = ClientSlots::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = slots.take(a).unwrap();
        let _second = slots.take(a).unwrap();
        assert!(slots.take(a).is_err());
        assert!(slots.take(b).unwrap().is_some());
        drop(first);
        assert!(slots.take(a).is_ok());
    }

    #[test]
    fn no_cap_keeps_no_books() {
        let slots = ClientSlots::new(0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(slots.take(a).unwrap().is_none());
        assert!(slots.held.lock().unwrap().is_empty());
    }
}
