//! The job bus: the one seam through which a job's events, cancel requests and generation
//! tokens reach the other instances of a cluster. [`MemoryBus`] is the single embedded
//! instance (a job's events live only in its in-process [`JobChannel`]); [`RedisBus`] adds a
//! Redis stream and a live channel per job, a control channel and the cluster-wide generation
//! bucket (README "Scaling").

mod memory;
mod redis;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use uuid::Uuid;

pub use memory::MemoryBus;
pub use redis::{BusError, RedisBus};

use super::channel::{EventForward, JobChannel};
pub use super::event_kind::EventKind;
use crate::store::models::{JobRow, JobStatus};
use crate::wire::protocol::{JobResult, ServerMessage};

/// The bus as `/ready` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BusHealth {
    /// `embedded` (one instance) or `redis`.
    pub mode: &'static str,
    /// Why delivery to other instances is impaired right now; `None` when it is not.
    pub degraded: Option<String>,
}

/// What another instance asks of the instance that runs a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    /// A user cancelled the job on that instance.
    Cancel(Uuid),
    /// That instance found the job's lease expired and failed its row: this instance could not
    /// renew it (cut off from the database alone), and its tabs must see the end the row says.
    LeaseSwept(Uuid),
}

/// How jobs reach the other instances; its [`EventForward`] half takes the events of the
/// jobs running here, in sequence order, without ever waiting.
#[async_trait]
pub trait JobBus: EventForward + 'static {
    /// A channel following the unfinished job `row`, which runs on another instance: its
    /// events so far, then live ones, up to its terminal event. `None` when no other
    /// instance can be reached.
    fn follow(&self, row: &JobRow) -> Option<Arc<JobChannel>>;

    /// Give followers on every instance the terminal event of a job whose lease the sweep
    /// just failed, and tell its instance, should it still run the job.
    async fn end_orphan(&self, row: &JobRow, message: &ServerMessage);

    /// For each of `job_ids` whose events on the bus end with a terminal event, that event:
    /// a job whose lease expired after it ended (its instance, cut off from the database,
    /// kept the end unwritten) rather than one whose instance died. Empty when the bus
    /// cannot tell.
    async fn published_ends(&self, job_ids: &[Uuid]) -> HashMap<Uuid, Utf8Bytes>;

    /// Ask whichever instance runs `job_id` to cancel it; true when the request went out.
    async fn request_cancel(&self, job_id: Uuid) -> bool;

    /// Requests other instances address to the jobs running here; handed out once.
    fn take_control_requests(&self) -> Option<mpsc::UnboundedReceiver<ControlRequest>>;

    /// Take one of the user's generations for this minute across the cluster: `Some(false)`
    /// when the limit is reached, `None` when only this instance can decide.
    async fn take_generation(&self, user_id: Uuid, per_minute: u32) -> Option<bool>;

    /// Check the connection to the other instances (every lease tick), so that `/ready`
    /// recovers when the cluster does, even while no event flows.
    async fn probe(&self);

    /// True when other instances share the database and the limits.
    fn is_clustered(&self) -> bool;

    /// Wait, at most `within`, until every event handed on so far has reached the other
    /// instances (a draining instance, before it exits). Nothing to wait for in one process.
    async fn flush(&self, _within: std::time::Duration) {}

    fn health(&self) -> BusHealth;
}

/// The job's state from the database, as the event a follower gets when the bus cannot
/// tell it what happened (a gap it cannot fill, or an end it never carried).
pub fn state_from_database(row: &JobRow) -> (ServerMessage, EventKind) {
    let job = row.clone();
    let message = match row.status {
        JobStatus::Pending | JobStatus::Processing => ServerMessage::Progress {
            progress: row.progress,
            message: row.progress_message.clone(),
            job,
        },
        JobStatus::Completed => {
            let result = JobResult::stored_or_default(row.result.as_deref());
            ServerMessage::Completed { job, result }
        }
        JobStatus::Failed => {
            let failure = crate::backend::Failure::instance_lost();
            let error = row.error.clone().unwrap_or(failure.user_message);
            ServerMessage::Failed {
                job,
                error: error.clone(),
                code: failure.code,
                user_message: error,
                recoverable: failure.recoverable,
                exit_code: None,
            }
        }
        JobStatus::Cancelled => ServerMessage::Cancelled {
            job: Some(job),
            message: None,
            job_id: None,
        },
    };
    let kind = EventKind::of(&message);
    (message, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: JobStatus) -> JobRow {
        JobRow {
            id: Uuid::nil(),
            user_id: Uuid::nil(),
            project_id: Uuid::nil(),
            status,
            progress: 40,
            progress_message: Some("Loading skills...".into()),
            result: None,
            error: Some("落ちました".into()),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn database_state_is_a_progress_or_the_terminal_event() {
        let (message, kind) = state_from_database(&row(JobStatus::Processing));
        assert_eq!(kind, EventKind::Progress);
        assert!(matches!(
            message,
            ServerMessage::Progress { progress: 40, message: Some(ref m), .. } if m == "Loading skills..."
        ));

        let (message, kind) = state_from_database(&row(JobStatus::Failed));
        assert_eq!(kind, EventKind::Ended);
        assert!(matches!(
            message,
            ServerMessage::Failed { ref error, recoverable: true, .. } if error == "落ちました"
        ));

        let (message, kind) = state_from_database(&row(JobStatus::Completed));
        assert_eq!(kind, EventKind::Completed);
        assert!(matches!(
            message,
            ServerMessage::Completed { ref result, .. } if result.message == crate::wire::protocol::texts::GAME_UPDATED
        ));
        assert_eq!(
            state_from_database(&row(JobStatus::Cancelled)).1,
            EventKind::Ended
        );
    }
}
