//! Modal `generate_game` backend: one POST, then the SSE stream of `docs/backends.md` §2
//! mapped onto [`BackendEvent`]s. The POST is never re-sent (docs/decisions.md, decision 4); cancelling drops
//! the upstream connection (docs/decisions.md, decision 5). This file holds the [`Backend`] impl; the HTTP
//! exchange, the SSE line decoder and the event mapping live in their own files.

mod client;
mod direct;
mod events;
pub mod pipeline;
pub mod sse;
mod stream;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Backend, BackendKind, EventStream, RunRequest};
use crate::config::{ModalConfig, UpstreamPool};
pub use client::BuildError;
use client::Shared;
use stream::ModalStream;

/// The Modal backend: a shared HTTP client and endpoint, one POST per run.
pub struct ModalBackend {
    shared: Arc<Shared>,
}

impl ModalBackend {
    /// Builds the Modal backend and its HTTP clients from configuration.
    pub fn new(config: &ModalConfig, pool: UpstreamPool) -> Result<Self, BuildError> {
        Ok(Self {
            shared: Arc::new(Shared::new(config, pool)?),
        })
    }
}

impl Backend for ModalBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Modal
    }

    fn blockers(&self) -> Vec<String> {
        if self.shared.has_secret() {
            Vec::new()
        } else {
            vec!["MODAL_INTERNAL_SECRET is empty: Modal refuses every request without it".into()]
        }
    }

    fn hands_over_events(&self) -> bool {
        !self.shared.takes_own_connection()
    }

    fn run(&self, request: RunRequest, cancel: CancellationToken) -> EventStream {
        // Dropping the stream drops the response, which closes the upstream connection; a
        // cancel ends it within a few polls (`stream.rs`).
        Box::pin(ModalStream::new(Arc::clone(&self.shared), request, cancel))
    }
}
