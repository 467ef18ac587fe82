//! One followed job as the follower task keeps it: what was handed to its mirror, what
//! waits ahead of a gap, and how long it has been quiet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use uuid::Uuid;

use crate::jobs::channel::JobChannel;
use crate::jobs::event_kind::EventKind;

/// A job to follow, handed to the follower task by [`super::RedisBus`].
pub(super) struct Follow {
    pub(super) job_id: Uuid,
    pub(super) mirror: Arc<JobChannel>,
}

/// Whether a followed job stays or goes.
#[derive(PartialEq, Eq)]
pub(super) enum Next {
    Continue,
    Stop,
}

/// One followed job as the follower task keeps it.
pub(super) struct Followed {
    pub(super) job_id: Uuid,
    pub(super) mirror: Arc<JobChannel>,
    /// Sequence number of the last event handed to the mirror.
    pub(super) delivered: u64,
    /// Live events that arrived ahead of a gap, waiting for it to be filled.
    pub(super) ahead: BTreeMap<u64, (EventKind, Utf8Bytes)>,
    /// When the job last gave an event, or was last checked while quiet.
    pub(super) heard: Instant,
    /// Quiet checks in a row that found no socket following the mirror.
    pub(super) unwatched_checks: u32,
    /// The database said the job ended: one more quiet period is given to the real terminal
    /// event before the database's state is sent instead.
    pub(super) ended_in_database: bool,
}

impl Followed {
    pub(super) fn new(follow: Follow) -> Self {
        Self {
            job_id: follow.job_id,
            mirror: follow.mirror,
            delivered: 0,
            ahead: BTreeMap::new(),
            heard: Instant::now(),
            unwatched_checks: 0,
            ended_in_database: false,
        }
    }

    /// Hand event `seq` to the mirror if it is the next one. Stops at the terminal event.
    pub(super) fn hand_on(&mut self, seq: u64, kind: EventKind, frame: Utf8Bytes) -> Next {
        if seq != self.delivered + 1 {
            return Next::Continue;
        }
        self.delivered = seq;
        self.heard = Instant::now();
        self.unwatched_checks = 0;
        self.mirror.push(frame, kind);
        if kind.is_terminal() {
            Next::Stop
        } else {
            Next::Continue
        }
    }

    /// Hand on the waiting live events that now follow without a gap.
    pub(super) fn drain_ahead(&mut self) -> Next {
        self.ahead = self.ahead.split_off(&(self.delivered + 1));
        while let Some((kind, frame)) = self.ahead.remove(&(self.delivered + 1)) {
            if self.hand_on(self.delivered + 1, kind, frame) == Next::Stop {
                return Next::Stop;
            }
        }
        Next::Continue
    }
}
