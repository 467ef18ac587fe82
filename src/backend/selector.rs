//! Which backend a new job runs on. `USE_MODAL` can change while the relay runs (docs/decisions.md,
//! decision 10): the mode lives here, new jobs read it, running jobs keep the backend they
//! started on. In `auto` mode, Modal failures that happened before any event (connect
//! error, 5xx) trip a breaker that sends new jobs to the local CLI until a probe shows
//! Modal healthy again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Backend, BackendKind, Failure};
use crate::config::BackendMode;

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("USE_MODAL={0} but that backend is not configured")]
    NotConfigured(&'static str),
}

struct Breaker {
    threshold: u32,
    window: Duration,
    recent: VecDeque<Instant>,
    tripped_at: Option<Instant>,
}

pub struct BackendSelector {
    modal: Option<Arc<dyn Backend>>,
    local: Option<Arc<dyn Backend>>,
    mode: RwLock<BackendMode>,
    breaker: Mutex<Breaker>,
}

/// The backend selection as `/ready`, `/ops` and the admin API show it (camelCase, like
/// every JSON body the relay writes).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectorStatus {
    /// `true`, `false` or `auto`, as `USE_MODAL` spells it.
    pub use_modal: &'static str,
    /// Where a job started now would run.
    pub current: Option<BackendKind>,
    /// In auto mode: Modal is considered down and new jobs go local.
    pub modal_tripped: bool,
}

impl BackendSelector {
    pub fn new(
        mode: BackendMode,
        modal: Option<Arc<dyn Backend>>,
        local: Option<Arc<dyn Backend>>,
        threshold: u32,
        window: Duration,
    ) -> Self {
        Self {
            modal,
            local,
            mode: RwLock::new(mode),
            breaker: Mutex::new(Breaker {
                threshold: threshold.max(1),
                window,
                recent: VecDeque::new(),
                tripped_at: None,
            }),
        }
    }

    pub fn mode(&self) -> BackendMode {
        self.mode.read().map(|m| *m).unwrap_or(BackendMode::Local)
    }

    /// Change the mode for new jobs. Refused when the target backend is not configured.
    pub fn set_mode(&self, mode: BackendMode) -> Result<(), SelectError> {
        match mode {
            BackendMode::Modal | BackendMode::Auto if self.modal.is_none() => {
                return Err(SelectError::NotConfigured(mode.as_use_modal()))
            }
            BackendMode::Local | BackendMode::Auto if self.local.is_none() => {
                return Err(SelectError::NotConfigured(mode.as_use_modal()))
            }
            _ => {}
        }
        if let Ok(mut current) = self.mode.write() {
            if *current != mode {
                tracing::info!(
                    from = current.as_use_modal(),
                    to = mode.as_use_modal(),
                    "backend mode changed"
                );
            }
            *current = mode;
        }
        if let Ok(mut breaker) = self.breaker.lock() {
            breaker.recent.clear();
            breaker.tripped_at = None;
        }
        Ok(())
    }

    fn modal_tripped(&self) -> bool {
        self.breaker
            .lock()
            .map(|b| b.tripped_at.is_some())
            .unwrap_or(false)
    }

    /// The backend for a job starting now.
    pub fn pick(&self) -> Result<Arc<dyn Backend>, SelectError> {
        let choose =
            |b: &Option<Arc<dyn Backend>>, name| b.clone().ok_or(SelectError::NotConfigured(name));
        match self.mode() {
            BackendMode::Modal => choose(&self.modal, "true"),
            BackendMode::Local => choose(&self.local, "false"),
            BackendMode::Auto if self.modal_tripped() => choose(&self.local, "auto"),
            BackendMode::Auto => choose(&self.modal, "auto"),
        }
    }

    pub fn status(&self) -> SelectorStatus {
        SelectorStatus {
            use_modal: self.mode().as_use_modal(),
            current: self.pick().ok().map(|b| b.kind()),
            modal_tripped: self.modal_tripped(),
        }
    }

    /// Feed the outcome of a Modal run into the auto-mode breaker.
    pub fn record_modal_failure(&self, failure: &Failure) {
        if !failure.upstream_unavailable || self.mode() != BackendMode::Auto {
            return;
        }
        let Ok(mut breaker) = self.breaker.lock() else {
            return;
        };
        let now = Instant::now();
        let window = breaker.window;
        breaker.recent.push_back(now);
        while breaker
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            breaker.recent.pop_front();
        }
        if breaker.tripped_at.is_none() && breaker.recent.len() as u32 >= breaker.threshold {
            breaker.tripped_at = Some(now);
            tracing::warn!(
                failures = breaker.recent.len(),
                window_secs = window.as_secs(),
                "Modal unavailable; new jobs switch to the local CLI until a probe succeeds"
            );
        }
    }

    /// Called by the prober when Modal answered healthily.
    pub fn record_modal_healthy(&self) {
        if let Ok(mut breaker) = self.breaker.lock() {
            if breaker.tripped_at.take().is_some() {
                tracing::info!("Modal healthy again; new jobs switch back to Modal");
            }
            breaker.recent.clear();
        }
    }

    pub fn needs_probe(&self) -> bool {
        self.mode() == BackendMode::Auto && self.modal_tripped()
    }
}

/// Health probe of Modal: `list_files` for the all-zero ids, where 2xx or 404 means the
/// endpoint answers (the upstream's own health check convention).
pub async fn probe_modal(client: &reqwest::Client, list_files_url: &str, secret: &str) -> bool {
    let zero = "00000000-0000-0000-0000-000000000000";
    match client
        .get(list_files_url)
        .query(&[("user_id", zero), ("project_id", zero)])
        .header("X-Modal-Secret", secret)
        .send()
        .await
    {
        Ok(resp) => resp.status().is_success() || resp.status() == reqwest::StatusCode::NOT_FOUND,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendEvent, EventStream, RunRequest};
    use tokio_util::sync::CancellationToken;

    struct Named(BackendKind);
    impl Backend for Named {
        fn kind(&self) -> BackendKind {
            self.0
        }
        fn run(&self, _: RunRequest, _: CancellationToken) -> EventStream {
            Box::pin(futures::stream::iter(vec![BackendEvent::Completed {
                commit: None,
            }]))
        }
    }

    fn selector(mode: BackendMode) -> BackendSelector {
        BackendSelector::new(
            mode,
            Some(Arc::new(Named(BackendKind::Modal))),
            Some(Arc::new(Named(BackendKind::Local))),
            2,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn flips_between_backends() {
        let s = selector(BackendMode::Modal);
        assert_eq!(s.pick().unwrap().kind(), BackendKind::Modal);
        s.set_mode(BackendMode::Local).unwrap();
        assert_eq!(s.pick().unwrap().kind(), BackendKind::Local);
    }

    #[test]
    fn auto_trips_after_threshold_and_recovers() {
        let s = selector(BackendMode::Auto);
        let down = Failure::network("refused");
        s.record_modal_failure(&down);
        assert_eq!(s.pick().unwrap().kind(), BackendKind::Modal);
        // A failure after events were produced does not count.
        s.record_modal_failure(&Failure::stream_incomplete());
        assert_eq!(s.pick().unwrap().kind(), BackendKind::Modal);
        s.record_modal_failure(&down);
        assert_eq!(s.pick().unwrap().kind(), BackendKind::Local);
        assert!(s.needs_probe());
        s.record_modal_healthy();
        assert_eq!(s.pick().unwrap().kind(), BackendKind::Modal);
    }

    #[test]
    fn refuses_unconfigured_backend() {
        let s = BackendSelector::new(
            BackendMode::Local,
            None,
            Some(Arc::new(Named(BackendKind::Local))),
            3,
            Duration::from_secs(1),
        );
        assert!(s.set_mode(BackendMode::Modal).is_err());
        assert_eq!(s.mode(), BackendMode::Local);
    }
}
