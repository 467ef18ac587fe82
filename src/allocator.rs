//! The process's allocator: jemalloc, tuned so memory goes back after a burst.
//!
//! The system allocator keeps freed memory in its per-thread arenas, so RSS stays near the
//! peak of a burst (many jobs, large outputs); jemalloc's background thread hands dirty pages
//! back to the kernel about a second after they are freed, even while the relay is idle.
//! What it does not reclaim on its own is each thread's cache of freed blocks, collected only
//! while that thread allocates: an idle runtime worker would hold it for ever, so workers
//! flush theirs when they go idle. Measured with `examples/loadgen.rs` (docs/benchmarks.md).

use std::cell::Cell;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads these options at its start (`_RJEM_MALLOC_CONF` in the environment
/// overrides them): purge from a background thread, and return dirty pages after 1 s instead
/// of 10 s; `muzzy_decay_ms:0` releases lazily purged pages at once.
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &u8 = &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

/// A busy worker parks thousands of times a second; it flushes at most this often, so its
/// cache still serves the allocations of a steady load.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

thread_local! {
    static LAST_FLUSH: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Called by a runtime worker about to park: return this thread's cached blocks to the
/// shared arenas (from where the background thread purges them), unless it did so within
/// `FLUSH_INTERVAL`.
pub fn return_cache_when_idle() {
    let now = Instant::now();
    let due = LAST_FLUSH.with(|last| match last.get() {
        Some(at) if now.duration_since(at) < FLUSH_INTERVAL => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        // SAFETY: `thread.tcache.flush` takes no input and gives no output (all pointers
        // null, length 0) and only touches the calling thread's cache.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                c"thread.tcache.flush".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            );
        }
    }
}
