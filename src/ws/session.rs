//! What one socket knows about itself — who it is, which project it shows, which job it
//! follows — and the replies it queues. Shared by the socket loop and every handler.

use std::sync::Arc;

use parking_lot::Mutex;

use uuid::Uuid;

use crate::auth::Identity;
use crate::jobs::{JobChannel, SubscriptionKind};
use crate::metrics::{gauge_add, METRICS};
use crate::pipeline::style::PendingStyle;
use crate::state::AppState;
use crate::wire::deadline::Deadline;
use crate::wire::outbound::{Outbound, OutboundSender};
use crate::wire::protocol::ServerMessage;

/// The per-socket state a handler may change.
#[derive(Default)]
struct Session {
    identity: Option<Identity>,
    current_project: Option<Uuid>,
    /// The channel of the one job this socket follows (docs/protocol.md §5.7): the job's
    /// own when it runs here, a mirror when another instance runs it.
    following: Option<Arc<JobChannel>>,
    /// The style picker this socket is waiting on (docs/protocol.md §4.2 step 3).
    pending_style: Option<PendingStyle>,
}

/// One authenticated (or not yet authenticated) browser socket, as handlers see it.
pub struct Connection {
    /// Unique id of this connection.
    pub id: u64,
    /// The shared server state.
    pub app: AppState,
    /// This connection's outbound queue.
    pub sink: OutboundSender,
    session: Mutex<Session>,
}

impl Connection {
    /// A fresh, unauthenticated socket.
    pub(super) fn new(id: u64, app: AppState, sink: OutboundSender) -> Self {
        Self {
            id,
            app,
            sink,
            session: Mutex::new(Session::default()),
        }
    }

    /// Sends a message to this connection.
    pub fn reply(&self, message: ServerMessage) {
        self.sink.frame(message.to_frame());
    }

    /// Queue an error frame then a close, in that order.
    pub fn reject(&self, text: &str, code: u16, reason: &'static str) {
        self.reply(ServerMessage::error(text));
        self.sink.send(Outbound::Close(code, reason));
    }

    fn session(&self) -> parking_lot::MutexGuard<'_, Session> {
        self.session.lock()
    }

    /// The signed-in user, once the connection has authenticated.
    pub fn identity(&self) -> Option<Identity> {
        self.session().identity.clone()
    }

    /// The signed-in user's id, without copying the rest of the identity.
    pub fn user_id(&self) -> Option<Uuid> {
        self.session()
            .identity
            .as_ref()
            .map(|identity| identity.user_id)
    }

    /// Whether the signed-in user's token has expired (clock-skew leeway allowed).
    pub fn token_expired(&self) -> bool {
        let leeway = self.app.verifier.leeway_secs();
        self.session()
            .identity
            .as_ref()
            .is_some_and(|identity| identity.is_expired_at(chrono::Utc::now().timestamp(), leeway))
    }

    /// Record a verified identity. A different user on the same socket starts clean.
    pub fn authenticate(&self, identity: Identity) {
        let mut session = self.session();
        let first = session.identity.is_none();
        if session
            .identity
            .as_ref()
            .is_some_and(|old| old.user_id != identity.user_id)
        {
            session.current_project = None;
            if let Some(channel) = session.following.take() {
                channel.unsubscribe(self.id);
            }
        }
        // From now on the clock closes the socket when the token expires, unless a newer
        // token replaces this one first.
        let expires_at = identity.expires_at + self.app.verifier.leeway_secs() + 1;
        self.sink.set_deadline(Deadline::Token(
            u64::try_from(expires_at).unwrap_or(0).saturating_mul(1000),
        ));
        session.identity = Some(identity);
        if first {
            gauge_add(&METRICS.sessions_authenticated, 1);
        }
    }

    /// The project this connection has selected, if any.
    pub fn current_project(&self) -> Option<Uuid> {
        self.session().current_project
    }

    /// Selects a project, or clears the selection.
    pub fn set_current_project(&self, project_id: Option<Uuid>) {
        self.session().current_project = project_id;
    }

    /// The open style question, taken out while a message decides what becomes of it.
    pub fn take_pending_style(&self) -> Option<PendingStyle> {
        self.session().pending_style.take()
    }

    /// Stores, or clears, a style choice waiting for the user.
    pub fn set_pending_style(&self, pending: Option<PendingStyle>) {
        self.session().pending_style = pending;
    }

    /// Follow the job of `channel` instead of whatever this socket followed before.
    pub fn follow(&self, channel: &Arc<JobChannel>, kind: SubscriptionKind, replay: bool) {
        let mut session = self.session();
        if let Some(previous) = session.following.take() {
            if !Arc::ptr_eq(&previous, channel) {
                previous.unsubscribe(self.id);
            }
        }
        channel.subscribe(self.sink.clone(), kind, replay);
        session.following = Some(Arc::clone(channel));
    }

    /// The socket is gone: stop following its job and stop counting its session.
    pub(super) fn leave(&self) {
        let mut session = self.session();
        if let Some(channel) = session.following.take() {
            channel.unsubscribe(self.id);
        }
        if session.identity.take().is_some() {
            gauge_add(&METRICS.sessions_authenticated, -1);
        }
    }
}
