//! The local backend: the Claude Code CLI run on this machine, reproducing what Modal's
//! `generate_game` does in its sandbox (`docs/backends.md` §2.4, §2.9, §4) without the
//! upstream's faults: an explicit environment instead of the relay's secrets, a per-process
//! timeout, cancel that takes the whole process tree down, and a real commit hash.

mod git;
mod output;
mod process;
mod run;
mod settings;
mod workspace;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::{Backend, BackendKind, EventStream, RunRequest};
use crate::config::CliConfig;
use run::Run;
use settings::Settings;

pub use process::RUN_MARKER_VAR;
pub use settings::LocalCliError;

/// Runs generations with the local Claude CLI. Cheap to share: the settings sit behind an `Arc`.
/// `run` spawns the work on the current Tokio runtime.
#[derive(Debug, Clone)]
pub struct LocalCliBackend {
    settings: Arc<Settings>,
}

impl LocalCliBackend {
    /// Resolve the binary and `LOCAL_CLI_USER`, and take the allow-listed variables
    /// (`cli.env_passthrough`) from the relay's environment once.
    pub fn new(cli: &CliConfig, data_dir: &Path) -> Result<Self, LocalCliError> {
        Self::with_env_source(cli, data_dir, |name| std::env::var_os(name))
    }

    /// [`LocalCliBackend::new`] with the relay environment answered by `env` (tests, embedding).
    pub fn with_env_source(
        cli: &CliConfig,
        data_dir: &Path,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self, LocalCliError> {
        Ok(Self {
            settings: Arc::new(Settings::resolve(cli, data_dir, env)?),
        })
    }

    /// Start-up problems an operator should read before the first job fails on them.
    pub fn preflight(&self) -> Vec<String> {
        self.settings.problems()
    }

    /// `<data_dir>/users/<user_id>/projects/<project_id>`.
    pub fn workspace(&self, user_id: Uuid, project_id: Uuid) -> PathBuf {
        workspace::path(&self.settings.data_dir, user_id, project_id)
    }
}

/// A project's directory under `data_dir`: `users/<user_id>/projects/<project_id>`. The
/// local CLI works there; previews and version history read from there.
pub fn project_dir(data_dir: &Path, user_id: Uuid, project_id: Uuid) -> PathBuf {
    workspace::path(data_dir, user_id, project_id)
}

impl Backend for LocalCliBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    fn run(&self, request: RunRequest, cancel: CancellationToken) -> EventStream {
        // Unbounded is bounded in practice: at most `line_cap` output events plus a handful.
        let (tx, rx) = mpsc::unbounded_channel();
        // Cancelled by the caller's token, or by dropping the stream (the guard below).
        let stop = cancel.child_token();
        let span = tracing::info_span!(
            "local_cli",
            job_id = %request.job_id,
            user_id = %request.user_id,
            project_id = %request.project_id,
        );
        let run = Run::new(Arc::clone(&self.settings), request, stop.clone(), tx);
        tokio::spawn(run.execute().instrument(span));
        let guard = stop.drop_guard();
        futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
            rx.recv().await.map(|event| (event, (rx, guard)))
        })
        .boxed()
    }
}
