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
    /// Sent once the sandbox is ready.
    pub const ENVIRONMENT_READY: &str = "Sandbox connected (warm)";
    /// Sent while skill files are loaded.
    pub const LOADING_SKILLS: &str = "Loading skills...";
    /// Sent just before the CLI starts.
    pub const STARTING_CLI: &str = "Starting Claude CLI...";
    /// Sent while the result is committed to version history.
    pub const SAVING_VERSION: &str = "Saving version history...";
}

/// What a backend needs to run one generation.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The job being run.
    pub job_id: Uuid,
    /// Who started the job.
    pub user_id: Uuid,
    /// The project the job works on.
    pub project_id: Uuid,
    /// The complete prompt, already built from the template.
    pub prompt: String,
    /// The skills the prompt names; the local CLI copies just these into the workspace.
    pub skills: Vec<String>,
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
    /// Whether this event ends the job (completed or failed).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed { .. } | Self::Failed(_))
    }
}

/// Which backend runs a job: the Modal sandbox or the local CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Modal,
    Local,
}

impl BackendKind {
    /// The lowercase name used in logs, metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Modal => "modal",
            Self::Local => "local",
        }
    }
}

/// The stream of events one backend run produces.
pub type EventStream = Pin<Box<dyn Stream<Item = BackendEvent> + Send + 'static>>;

/// Something that can run a generation job and stream its events.
pub trait Backend: Send + Sync + 'static {
    fn kind(&self) -> BackendKind;
    fn run(&self, request: RunRequest, cancel: CancellationToken) -> EventStream;
    /// Why a job started now would fail before doing any work (no binary, no account, no
    /// secret), one sentence per reason naming the setting; empty when it can run. `/ready`
    /// reports these, so an unusable backend is caught before the first generation.
    fn blockers(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether a run's events are read by a task of its own and handed over (the local CLI's
    /// reader, a proxied Modal run's connection task): then one more turn of the scheduler
    /// may bring the next event, worth waiting for before a burst wakes its sockets. A run
    /// read in the job's own task has nothing more to bring after that turn.
    fn hands_over_events(&self) -> bool {
        true
    }
}
