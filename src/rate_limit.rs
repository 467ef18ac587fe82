//! Token buckets for the upstream limits that Express defined but never wired:
//! 120 messages a minute per socket (ping and viewState excluded) and 8 generation
//! messages a minute per user, across all of that user's sockets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// `capacity` tokens, refilled at `capacity` per minute. Zero disables the limit.
    pub fn per_minute(capacity: u32) -> Self {
        Self {
            capacity: f64::from(capacity),
            per_second: f64::from(capacity) / 60.0,
            tokens: f64::from(capacity),
            updated: Instant::now(),
        }
    }

    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.capacity == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full_at(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * self.per_second >= self.capacity
    }
}

/// Per-user buckets shared by every socket of the process.
pub struct UserBuckets {
    capacity: u32,
    buckets: Mutex<HashMap<Uuid, TokenBucket>>,
    last_sweep: Mutex<Instant>,
}

impl UserBuckets {
    pub fn per_minute(capacity: u32) -> Self {
        Self {
            capacity,
            buckets: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    pub fn try_take(&self, user: Uuid) -> bool {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        // Full buckets carry no information; drop them now and then to bound memory.
        if let Ok(mut last) = self.last_sweep.lock() {
            if now.duration_since(*last) > Duration::from_secs(60) {
                buckets.retain(|_, b| !b.is_full_at(now));
                *last = now;
            }
        }
        buckets
            .entry(user)
            .or_insert_with(|| TokenBucket::per_minute(self.capacity))
            .try_take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_capacity_then_refills() {
        let mut bucket = TokenBucket::per_minute(3);
        let t0 = Instant::now();
        assert!(bucket.try_take(t0) && bucket.try_take(t0) && bucket.try_take(t0));
        assert!(!bucket.try_take(t0));
        assert!(bucket.try_take(t0 + Duration::from_secs(20)));
        assert!(!bucket.try_take(t0 + Duration::from_secs(20)));
    }

    #[test]
    fn zero_capacity_disables() {
        let mut bucket = TokenBucket::per_minute(0);
        assert!((0..1000).all(|_| bucket.try_take(Instant::now())));
    }

    #[test]
    fn users_are_limited_separately() {
        let buckets = UserBuckets::per_minute(2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(buckets.try_take(a) && buckets.try_take(a));
        assert!(!buckets.try_take(a));
        assert!(buckets.try_take(b));
    }
}
