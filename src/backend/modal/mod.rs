//! Modal `generate_game` backend: one POST, then the SSE stream of `docs/backends.md` §2
//! mapped onto [`BackendEvent`]s. The POST is never re-sent (docs/decisions.md, decision 4); cancelling drops
//! the upstream connection (docs/decisions.md, decision 5). This file holds the [`Backend`] impl; the HTTP
//! exchange, the SSE line decoder and the event mapping live in their own files.

mod client;
mod events;
pub mod pipeline;
pub mod sse;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Backend, BackendEvent, BackendKind, EventStream, RunRequest};
use crate::config::{ModalConfig, UpstreamPool};
use client::Shared;

/// Events read ahead of a slow consumer before the reader waits.
const CHANNEL_CAPACITY: usize = 32;

/// The Modal backend: a shared HTTP client and endpoint, one POST per run.
pub struct ModalBackend {
    shared: Arc<Shared>,
}

impl ModalBackend {
    /// Builds the Modal backend and its HTTP client from configuration.
    pub fn new(config: &ModalConfig, pool: UpstreamPool) -> Result<Self, reqwest::Error> {
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

    fn run(&self, request: RunRequest, cancel: CancellationToken) -> EventStream {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let shared = Arc::clone(&self.shared);
        let span = tracing::info_span!(
            "modal_run",
            job_id = %request.job_id,
            user_id = %request.user_id,
            project_id = %request.project_id,
        );
        // The reader runs inside the consumer's own task (no extra task, no cross-thread
        // wake-up per event). Dropping the stream drops the reader and with it the response,
        // which closes the upstream connection; a cancel ends the reader at its next poll.
        let reader = async move {
            tokio::select! {
                biased;
                () = cancel.cancelled() => tracing::info!("cancelled, upstream connection dropped"),
                () = shared.execute(&request, &tx) => {}
            }
        }
        .instrument(span);
        Box::pin(Driven {
            reader: Some(Box::pin(reader)),
            events: rx,
        })
    }
}

/// A stream whose producer is polled by whoever polls the stream.
struct Driven {
    reader: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    events: mpsc::Receiver<BackendEvent>,
}

impl Stream for Driven {
    type Item = BackendEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BackendEvent>> {
        if let Some(reader) = self.reader.as_mut() {
            if reader.as_mut().poll(cx).is_ready() {
                // Its sender is gone with it: the receiver ends once drained.
                self.reader = None;
            }
        }
        self.events.poll_recv(cx)
    }
}
