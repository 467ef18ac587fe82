//! One Modal run as a [`Stream`] of [`BackendEvent`]s, polled by whoever consumes it: the
//! POST, then the body's chunks decoded into SSE payloads and mapped onto events as the
//! consumer asks for them. No task and no channel of its own, so an event costs no hand-over
//! between a reader and its consumer; the consumer's pace is the backpressure.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::{Instrument, Span};

use super::client::{error_chain, Body, Shared};
use super::events::StreamState;
use super::sse::SseLines;
use crate::backend::{BackendEvent, Failure, RunRequest};

/// A single SSE line longer than this is dropped instead of buffered without bound. A full
/// `index.html` Write tool call is one line, so the cap is generous.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Polls that may pass without a look at the cancel token while the body keeps data ready
/// (a look costs a lock); a poll that finds nothing to read always looks, so a cancel
/// wakes the stream.
const CANCEL_CHECK_EVERY: u8 = 16;

type Posting = Pin<Box<dyn Future<Output = Result<Body, Failure>> + Send>>;

/// Where the run is.
enum Phase {
    /// Waiting for the response head.
    Posting(Posting),
    /// Reading the body.
    Reading(Body),
    /// The terminal event is decided (it may still wait in `pending`), or the run was
    /// cancelled: the response is dropped, which closes the upstream connection.
    Over,
}

/// A Modal run driven by its consumer's polls.
pub(super) struct ModalStream {
    phase: Phase,
    /// Events decoded from a chunk and not yet taken; the terminal event, if decided, last.
    pending: VecDeque<BackendEvent>,
    lines: SseLines,
    state: StreamState,
    cancel: Pin<Box<WaitForCancellationFutureOwned>>,
    polls_since_cancel_check: u8,
    /// One timer for the whole body, moved on only when it fires: a fresh timeout per chunk
    /// would put a timer-wheel insert and removal on every event.
    idle: Pin<Box<Sleep>>,
    idle_timeout: std::time::Duration,
    last_data: Instant,
    span: Span,
}

impl ModalStream {
    pub(super) fn new(
        shared: Arc<Shared>,
        request: RunRequest,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Self {
        let span = tracing::info_span!(
            "modal_run",
            job_id = %request.job_id,
            user_id = %request.user_id,
            project_id = %request.project_id,
        );
        let idle_timeout = shared.idle_timeout();
        let posting: Posting =
            Box::pin(async move { shared.post(&request).await }.instrument(span.clone()));
        Self {
            phase: Phase::Posting(posting),
            pending: VecDeque::new(),
            lines: SseLines::new(MAX_LINE_BYTES),
            state: StreamState::default(),
            cancel: Box::pin(cancel.cancelled_owned()),
            polls_since_cancel_check: 0,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            last_data: Instant::now(),
            span,
        }
    }

    /// Whether the run was cancelled; if so it is over, and its connection dropped.
    fn cancelled(&mut self, cx: &mut Context<'_>) -> bool {
        self.polls_since_cancel_check = 0;
        if self.cancel.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.span
            .in_scope(|| tracing::info!("cancelled, upstream connection dropped"));
        self.phase = Phase::Over;
        self.pending.clear();
        true
    }

    /// Decide the terminal event: logged once, queued after what is already pending.
    fn end(&mut self, terminal: BackendEvent) {
        self.span.in_scope(|| match &terminal {
            BackendEvent::Failed(f) => tracing::warn!(
                code = %f.code,
                exit_code = ?f.exit_code,
                detail = %f.detail,
                "generation failed"
            ),
            _ => tracing::info!("generation completed"),
        });
        self.pending.push_back(terminal);
        self.phase = Phase::Over;
    }

    /// Read until a chunk yields events, the body ends, or nothing more is ready.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Phase::Reading(body) = &mut self.phase else {
                return Poll::Ready(());
            };
            match body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    self.last_data = Instant::now();
                    let terminal = {
                        // The decoder's and the mapping's warnings name the job.
                        let _in_run = self.span.enter();
                        let (state, pending) = (&mut self.state, &mut self.pending);
                        let mut terminal = None;
                        self.lines.push_each(&chunk, |payload| {
                            if terminal.is_none() {
                                terminal = take_payload(state, pending, payload);
                            }
                        });
                        terminal
                    };
                    if let Some(terminal) = terminal {
                        self.end(terminal);
                    }
                    if !self.pending.is_empty() {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.end(BackendEvent::Failed(Failure::stream_dropped(error_chain(
                        &*e,
                    ))));
                    return Poll::Ready(());
                }
                Poll::Ready(None) => {
                    // Like Express, a final `data:` line without its newline still counts.
                    let last = self.lines.finish();
                    let terminal = last
                        .and_then(|payload| {
                            take_payload(&mut self.state, &mut self.pending, &payload)
                        })
                        .unwrap_or_else(|| self.state.at_end());
                    self.end(terminal);
                    return Poll::Ready(());
                }
                Poll::Pending => return self.poll_idle(cx),
            }
        }
    }

    /// Nothing to read: fail the run if the body has been silent for the idle timeout.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.idle.as_mut().poll(cx).is_ready() {
            let quiet_until = self.last_data + self.idle_timeout;
            if Instant::now() >= quiet_until {
                let secs = self.idle_timeout.as_secs();
                self.end(BackendEvent::Failed(Failure::stream_idle(secs)));
                return Poll::Ready(());
            }
            self.idle.as_mut().reset(quiet_until);
        }
        Poll::Pending
    }
}

/// Queue a payload's events before the first terminal one, which is returned: it ends the run,
/// and nothing after it is looked at.
fn take_payload(
    state: &mut StreamState,
    pending: &mut VecDeque<BackendEvent>,
    payload: &str,
) -> Option<BackendEvent> {
    for event in state.on_payload(payload) {
        if event.is_terminal() {
            return Some(event);
        }
        pending.push_back(event);
    }
    None
}

impl Stream for ModalStream {
    type Item = BackendEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BackendEvent>> {
        let this = &mut *self;
        // Once the terminal event is decided the upstream is done with; until then a cancel
        // ends the stream, even with decoded events still waiting.
        if !matches!(this.phase, Phase::Over) {
            this.polls_since_cancel_check += 1;
            let reading = matches!(this.phase, Phase::Reading(_));
            if (!reading || this.polls_since_cancel_check >= CANCEL_CHECK_EVERY)
                && this.cancelled(cx)
            {
                return Poll::Ready(None);
            }
        }
        if let Some(event) = this.pending.pop_front() {
            return Poll::Ready(Some(event));
        }
        if matches!(this.phase, Phase::Over) {
            return Poll::Ready(None);
        }
        if let Phase::Posting(posting) = &mut this.phase {
            match posting.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(failure)) => this.end(BackendEvent::Failed(failure)),
                Poll::Ready(Ok(body)) => {
                    this.last_data = Instant::now();
                    this.idle.as_mut().reset(this.last_data + this.idle_timeout);
                    this.phase = Phase::Reading(body);
                }
            }
        }
        match this.poll_body(cx) {
            Poll::Pending if this.cancelled(cx) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(this.pending.pop_front()),
        }
    }
}
