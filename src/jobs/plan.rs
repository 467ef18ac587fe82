//! What a job does between `started` and the agent (docs/protocol.md §4.3): decided by a
//! [`Prepare`] the caller hands to [`super::Jobs::start`]. The answer is either a reply that
//! ends the job without a generation (a chat answer, the restore confirmation) or the skills
//! part of the generation prompt. The runner bounds this step by the job's cancel token and
//! timeout like the rest of the job, so it can never leave a job unfinished.

use async_trait::async_trait;

use crate::backend::BackendKind;
use crate::wire::protocol::{JobResult, ServerMessage};

/// Publishes `progress` on the job (value, message).
pub type Progress<'a> = &'a (dyn Fn(i32, &str) + Send + Sync);

/// The outcome of the preparation.
#[derive(Debug)]
pub enum Plan {
    /// End the job now: publish `frames`, store `history` as the assistant's entry, then
    /// `completed` with `result`.
    Answer {
        frames: Vec<ServerMessage>,
        history: Option<String>,
        result: JobResult,
    },
    /// Run the agent; `skills_block` fills the prompt template's `{{skills}}`, naming the
    /// `skills` the agent must read.
    Generate {
        skills_block: String,
        skills: Vec<String>,
    },
}

/// The per-job preparation. `backend` is where the job runs: the steps ask the same one.
#[async_trait]
pub trait Prepare: Send + 'static {
    async fn prepare(self: Box<Self>, backend: BackendKind, progress: Progress<'_>) -> Plan;
}
