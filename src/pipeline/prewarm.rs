//! Sandbox prewarm after `init` (docs/backends.md §5.3 `prewarm_sandbox`): the first
//! generation of a session then skips Modal's cold start. Fire-and-forget, at most once per
//! user per dedup window; a failure is logged and forgets the user, so the next `init` retries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::Instrument;
use uuid::Uuid;

use crate::backend::modal::pipeline::ModalPipeline;

/// Remembers whom it prewarmed recently.
pub struct Prewarmer {
    modal: Arc<ModalPipeline>,
    dedup: Duration,
    recent: Mutex<HashMap<Uuid, Instant>>,
}

impl Prewarmer {
    /// A prewarmer that skips repeat requests within `dedup`.
    pub fn new(modal: Arc<ModalPipeline>, dedup: Duration) -> Arc<Self> {
        Arc::new(Self {
            modal,
            dedup,
            recent: Mutex::new(HashMap::new()),
        })
    }

    /// Start a prewarm for `user_id` unless one started within the window. Never waits.
    pub fn trigger(self: &Arc<Self>, user_id: Uuid) {
        {
            let mut recent = self.recent.lock();
            let now = Instant::now();
            // Forget expired entries, so the map holds only users seen within the window.
            recent.retain(|_, at| now.duration_since(*at) < self.dedup);
            if recent.contains_key(&user_id) {
                return;
            }
            recent.insert(user_id, now);
        }
        let this = Arc::clone(self);
        let span = tracing::info_span!("prewarm", %user_id);
        tokio::spawn(
            async move {
                match this.modal.prewarm(user_id).await {
                    Ok(status) => tracing::info!(%status, "sandbox prewarmed"),
                    Err(e) => {
                        tracing::warn!(error = %e, "sandbox prewarm failed");
                        let mut recent = this.recent.lock();
                        recent.remove(&user_id);
                    }
                }
            }
            .instrument(span),
        );
    }
}
