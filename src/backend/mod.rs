//! Generation backends. Modal's `generate_game` and the local Claude CLI sit behind one
//! trait that yields one normalized event stream, so the job runner cannot tell them apart.

pub mod claude;
pub mod failure;
pub mod local_cli;
pub mod modal;
pub mod modal_git;
pub mod project_files;
pub mod selector;

use std::pin::Pin;

use futures::Stream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use failure::Failure;

/// The status lines users see while the agent runs, exactly as Modal's `generate_game`
/// sends them on its warm path. The local backend emits the same lines at the same points,
/// so nobody can tell from the browser which backend served a job.
pub mod status {
    pub const ENVIRONMENT_READY: &str = "Sandbox connected (warm)";
    pub const LOADING_SKILLS: &str = "Loading skills...";
    pub const STARTING_CLI: &str = "Starting Claude CLI...";
    pub const SAVING_VERSION: &str = "Saving version history...";
}

/// What a backend needs to run one generation.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub job_id: Uuid,
    pub user_id: Uuid,
    pub project_id: Uuid,
    /// The complete prompt, already built from the template.
    pub prompt: String,
}

/// One normalized event. A run yields non-terminal events, then exactly one terminal event
/// (`Completed` or `Failed`), then ends. When its cancel token fires, a backend stops its work
/// (drops the upstream stream, or terminates the process group) and ends the stream, possibly
/// without a terminal event; the job runner reports the cancellation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendEvent {
    /// A progress line from the execution environment (`Starting Claude CLI...`).
    Status(String),
    /// Assistant text.
    Text(String),
    /// The agent used a tool.
    ToolUse(String),
    /// The run succeeded; `commit` is the short git hash of the saved version, if any.
    Completed {
        commit: Option<String>,
    },
    Failed(Failure),
}

impl BackendEvent {
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed { .. } | Self::Failed(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Modal,
    Local,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Modal => "modal",
            Self::Local => "local",
        }
    }
}

pub type EventStream = Pin<Box<dyn Stream<Item = BackendEvent> + Send + 'static>>;

pub trait Backend: Send + Sync + 'static {
    fn kind(&self) -> BackendKind;
    fn run(&self, request: RunRequest, cancel: CancellationToken) -> EventStream;
}
