//! Concurrency slots: per user and for the whole process (docs/protocol.md §5.1). A slot is an
//! RAII guard, so every path that ends a job — success, failure, cancel, panic — frees it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("user already runs {in_progress} job(s)")]
    User { in_progress: usize },
    #[error("the relay runs its maximum number of jobs")]
    System,
}

#[derive(Default)]
struct Counts {
    per_user: HashMap<Uuid, usize>,
    total: usize,
}

pub struct SlotLimiter {
    per_user: usize,
    total: usize,
    counts: Arc<Mutex<Counts>>,
}

pub struct Slot {
    user_id: Uuid,
    counts: Arc<Mutex<Counts>>,
}

impl SlotLimiter {
    pub fn new(per_user: usize, total: usize) -> Self {
        Self {
            per_user,
            total,
            counts: Arc::new(Mutex::new(Counts::default())),
        }
    }

    pub fn per_user_limit(&self) -> usize {
        self.per_user
    }

    pub fn total_limit(&self) -> usize {
        self.total
    }

    pub fn try_acquire(&self, user_id: Uuid) -> Result<Slot, SlotError> {
        let mut counts = self.counts.lock().map_err(|_| SlotError::System)?;
        let mine = counts.per_user.get(&user_id).copied().unwrap_or(0);
        if mine >= self.per_user {
            return Err(SlotError::User { in_progress: mine });
        }
        if counts.total >= self.total {
            return Err(SlotError::System);
        }
        counts.total += 1;
        *counts.per_user.entry(user_id).or_insert(0) += 1;
        Ok(Slot {
            user_id,
            counts: Arc::clone(&self.counts),
        })
    }

    /// Slots held now, across users.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.counts.lock().map(|c| c.total).unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.total = counts.total.saturating_sub(1);
            if let Some(n) = counts.per_user.get_mut(&self.user_id) {
                *n -= 1;
                if *n == 0 {
                    counts.per_user.remove(&self.user_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_and_total_limits_and_release() {
        let limiter = SlotLimiter::new(1, 2);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let slot_a = limiter.try_acquire(a).unwrap();
        assert_eq!(
            limiter.try_acquire(a).err(),
            Some(SlotError::User { in_progress: 1 })
        );
        let _slot_b = limiter.try_acquire(b).unwrap();
        assert_eq!(limiter.try_acquire(c).err(), Some(SlotError::System));
        drop(slot_a);
        assert!(limiter.try_acquire(c).is_ok());
        assert_eq!(limiter.in_use(), 1);
    }
}
