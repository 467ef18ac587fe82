//! What one socket knows about itself — who it is, which project it shows, which job it
//! follows — and the replies it queues. Shared by the socket loop and every handler.

use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::auth::Identity;
use crate::jobs::{JobChannel, SubscriptionKind};
use crate::metrics::{gauge_add, METRICS};
use crate::state::AppState;
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
}

/// One authenticated (or not yet authenticated) browser socket, as handlers see it.
pub struct Connection {
    pub id: u64,
    pub app: AppState,
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

    pub fn reply(&self, message: ServerMessage) {
        self.sink.frame(message.to_frame());
    }

    /// Queue an error frame then a close, in that order.
    pub fn reject(&self, text: &str, code: u16, reason: &'static str) {
        self.reply(ServerMessage::error(text));
        self.sink.send(Outbound::Close(code, reason));
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        match self.session.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn identity(&self) -> Option<Identity> {
        self.session().identity.clone()
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
        session.identity = Some(identity);
        if first {
            gauge_add(&METRICS.sessions_authenticated, 1);
        }
    }

    pub fn current_project(&self) -> Option<Uuid> {
        self.session().current_project
    }

    pub fn set_current_project(&self, project_id: Option<Uuid>) {
        self.session().current_project = project_id;
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
