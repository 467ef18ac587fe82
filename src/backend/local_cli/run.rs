//! One local generation from start to end: prepare the workspace, spawn the CLI, forward its
//! output, then turn the way it ended into the terminal event (saving a version on success).

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::output::{LineSplitter, OutputParser, MAX_LINE_BYTES};
use super::process::{exit_code, CliProcess, CliUser, Launch};
use super::settings::{RunAs, Settings};
use super::{git, workspace};
use crate::backend::{status, BackendEvent, Failure, RunRequest};

/// How much of the CLI's stderr is kept for the operator-facing failure detail.
const STDERR_DETAIL_CHARS: usize = 200;
/// Stderr lines copied to the debug log per run; the rest is drained silently.
const STDERR_LOG_LINES: usize = 200;

/// How the CLI process ended, as far as the supervisor saw it.
enum End {
    Cancelled,
    TimedOut,
    Exited(std::process::ExitStatus),
    Lost(std::io::Error),
}

/// One generation's state: its settings, request, stop token and event channel.
pub(super) struct Run {
    settings: Arc<Settings>,
    request: RunRequest,
    stop: CancellationToken,
    tx: mpsc::UnboundedSender<BackendEvent>,
}

/// What reading the CLI's output left behind.
struct Output {
    end: End,
    parser: OutputParser,
    /// The first characters of stderr, for the failure detail.
    stderr_head: String,
}

impl Run {
    pub(super) fn new(
        settings: Arc<Settings>,
        request: RunRequest,
        stop: CancellationToken,
        tx: mpsc::UnboundedSender<BackendEvent>,
    ) -> Self {
        Self {
            settings,
            request,
            stop,
            tx,
        }
    }

    fn emit(&self, event: BackendEvent) {
        // A closed channel means the stream was dropped; `stop` is then cancelled too.
        let _ = self.tx.send(event);
    }

    fn cli_user(&self) -> Option<&CliUser> {
        match &self.settings.run_as {
            RunAs::User(user) => Some(user),
            RunAs::Relay | RunAs::Missing(_) => None,
        }
    }

    /// The whole run; every step that ends it early has already emitted what the user sees.
    pub(super) async fn execute(self) {
        let Some(workspace) = self.enter_workspace().await else {
            return;
        };
        let Some(mut cli) = self.spawn(&workspace) else {
            return;
        };
        let started = Instant::now();
        let output = self.read_output(&mut cli).await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let Some(status) = self.settle(&mut cli, output.end, elapsed_ms).await else {
            return;
        };
        if self.exited_cleanly(status, &output.parser, &output.stderr_head, elapsed_ms) {
            self.save_version(&workspace).await;
        }
    }

    /// Prepares the workspace and sends the environment status lines; `None` when the run
    /// failed or was cancelled there.
    async fn enter_workspace(&self) -> Option<PathBuf> {
        let workspace = match self.prepare_workspace().await {
            Ok(dir) => dir,
            Err(detail) => {
                tracing::error!(%detail, "cannot prepare the workspace");
                self.emit(BackendEvent::Failed(Failure::internal(detail)));
                return None;
            }
        };
        self.emit(BackendEvent::Status(status::ENVIRONMENT_READY.into()));
        self.emit(BackendEvent::Status(status::LOADING_SKILLS.into()));
        if self.stop.is_cancelled() {
            return None;
        }
        self.emit(BackendEvent::Status(status::STARTING_CLI.into()));
        Some(workspace)
    }

    /// Starts the CLI in `workspace` with its explicit environment; `None` after reporting
    /// why it could not start.
    fn spawn(&self, workspace: &Path) -> Option<CliProcess> {
        let program = match (&self.settings.program, &self.settings.run_as) {
            (Err(why), _) => {
                self.spawn_failed(why.clone());
                return None;
            }
            (_, RunAs::Missing(name)) => {
                self.spawn_failed(format!("LOCAL_CLI_USER {name} does not exist"));
                return None;
            }
            (Ok(program), _) => program.clone(),
        };
        let mut env = self.settings.base_env.clone();
        env.extend(self.settings.cli_env.iter().cloned());
        env.push((
            "CLAUDE_CONFIG_DIR".into(),
            workspace::config_dir(&self.settings.data_dir, self.request.user_id).into(),
        ));
        let marker = Uuid::new_v4().to_string();
        let spawned = CliProcess::spawn(Launch {
            program: &program,
            args: &self.settings.args,
            cwd: workspace,
            env: &env,
            user: self.cli_user(),
            marker: &marker,
        });
        match spawned {
            Ok(cli) => {
                tracing::info!(pid = cli.pid(), program = %program.display(), "claude started");
                Some(cli)
            }
            Err(e) => {
                self.spawn_failed(format!("{}: {e}", program.display()));
                None
            }
        }
    }

    /// Writes the prompt, forwards stdout as events and collects the head of stderr, until
    /// the CLI is done, cancelled or out of time.
    async fn read_output(&self, cli: &mut CliProcess) -> Output {
        if let Some(mut stdin) = cli.child.stdin.take() {
            let prompt = self.request.prompt.clone().into_bytes();
            tokio::spawn(async move {
                // The CLI reads the whole prompt, then EOF; a CLI that dies first gives EPIPE.
                if let Err(e) = stdin.write_all(&prompt).await {
                    tracing::debug!(error = %e, "prompt not fully written to claude");
                }
            });
        }
        let stderr = cli
            .child
            .stderr
            .take()
            .map(|pipe| tokio::spawn(drain_stderr(pipe)));
        let mut parser = OutputParser::new(self.settings.line_cap);
        let end = match cli.child.stdout.take() {
            Some(stdout) => self.supervise(cli, stdout, &mut parser).await,
            None => End::Lost(std::io::Error::other("stdout was not captured")),
        };
        let stderr_head = match stderr {
            // Bounded: after the sweep nothing can hold the pipe, but never wait on it forever.
            Some(task) => match tokio::time::timeout(self.settings.grace, task).await {
                Ok(Ok(head)) => head,
                _ => String::new(),
            },
            None => String::new(),
        };
        Output {
            end,
            parser,
            stderr_head,
        }
    }

    /// The exit status of a CLI that exited on its own; otherwise takes the process tree
    /// down, reports the timeout or loss, and returns `None`.
    async fn settle(&self, cli: &mut CliProcess, end: End, elapsed_ms: u64) -> Option<ExitStatus> {
        match end {
            End::Exited(status) => Some(status),
            End::Cancelled => {
                let status = cli.terminate(self.settings.grace).await;
                tracing::info!(elapsed_ms, ?status, "claude cancelled");
                None
            }
            End::TimedOut => {
                cli.terminate(self.settings.grace).await;
                let limit = self.settings.timeout.as_secs();
                tracing::warn!(elapsed_ms, limit_secs = limit, "claude timed out");
                self.emit(BackendEvent::Failed(
                    Failure::cli_timeout().with_detail(format!("claude ran longer than {limit} s")),
                ));
                None
            }
            End::Lost(e) => {
                cli.terminate(self.settings.grace).await;
                tracing::error!(error = %e, "lost track of the claude process");
                self.emit(BackendEvent::Failed(Failure::internal(format!(
                    "waiting for claude: {e}"
                ))));
                None
            }
        }
    }

    /// Logs how the CLI exited and reports a failed exit; true when it succeeded.
    fn exited_cleanly(
        &self,
        status: ExitStatus,
        parser: &OutputParser,
        stderr_head: &str,
        elapsed_ms: u64,
    ) -> bool {
        let code = exit_code(status);
        tracing::info!(
            exit_code = code,
            elapsed_ms,
            output_lines = parser.lines(),
            "claude exited"
        );
        if code != 0 {
            let detail = format!("claude exited with {code}: {stderr_head}");
            self.emit(BackendEvent::Failed(
                Failure::from_exit_code(code).with_detail(detail),
            ));
            return false;
        }
        if parser.reported_error() {
            self.emit(BackendEvent::Failed(
                Failure::cli_reported_error(Some(0))
                    .with_detail("claude's result line has is_error: true"),
            ));
            return false;
        }
        true
    }

    /// "Saving version history": commits the workspace and completes the run with the hash.
    async fn save_version(&self, workspace: &Path) {
        self.emit(BackendEvent::Status(status::SAVING_VERSION.into()));
        let git = git::Git {
            workspace,
            env: &self.settings.base_env,
            user: self.cli_user(),
        };
        let commit = tokio::select! {
            _ = self.stop.cancelled() => return,
            saved = git.save_version() => match saved {
                Ok(commit) => commit,
                Err(e) => {
                    // As on Modal, a git problem does not fail a generation that succeeded.
                    tracing::warn!(error = %e, "git commit failed");
                    None
                }
            },
        };
        tracing::info!(commit = commit.as_deref().unwrap_or("-"), "version saved");
        self.emit(BackendEvent::Completed { commit });
    }

    fn spawn_failed(&self, detail: String) {
        tracing::error!(%detail, "cannot start claude");
        self.emit(BackendEvent::Failed(Failure::spawn_error(detail)));
    }

    async fn prepare_workspace(&self) -> Result<PathBuf, String> {
        let settings = Arc::clone(&self.settings);
        let (user_id, project_id) = (self.request.user_id, self.request.project_id);
        let chosen = self.request.skills.clone();
        let owner = self.cli_user().map(|u| (u.uid, u.gid));
        let prepared = tokio::task::spawn_blocking(move || {
            let dir = workspace::prepare(&settings.data_dir, user_id, project_id, owner)
                .map_err(|e| format!("workspace for project {project_id}: {e}"))?;
            if let Some(skills) = &settings.skills_dir {
                // As on Modal, a skills problem does not stop the generation.
                if let Err(e) = workspace::install_skills(&dir, skills, &chosen, owner) {
                    tracing::warn!(error = %e, skills = %skills.display(), "cannot copy skills");
                }
            }
            Ok(dir)
        })
        .await;
        prepared.map_err(|e| format!("workspace task: {e}"))?
    }

    /// Forward output until the CLI has exited and its stdout is drained, or until the run is
    /// cancelled or times out.
    async fn supervise(
        &self,
        cli: &mut CliProcess,
        mut stdout: impl AsyncRead + Unpin,
        parser: &mut OutputParser,
    ) -> End {
        let deadline = Instant::now() + self.settings.timeout;
        let mut splitter = LineSplitter::new(MAX_LINE_BYTES);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut stdout_open = true;
        let mut exited = None;
        // Once the CLI is gone, its output is already in the pipe: drain it, but boundedly.
        let mut drain_deadline = deadline;
        let end = loop {
            if let (Some(status), false) = (exited, stdout_open) {
                break End::Exited(status);
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break End::Cancelled,
                _ = tokio::time::sleep_until(deadline), if exited.is_none() => break End::TimedOut,
                status = cli.wait(), if exited.is_none() => match status {
                    Ok(status) => {
                        exited = Some(status);
                        // Leftover tool processes would keep the pipe open (and keep running).
                        cli.sweep().await;
                        drain_deadline = Instant::now() + self.settings.grace;
                    }
                    Err(e) => break End::Lost(e),
                },
                read = stdout.read(&mut chunk), if stdout_open => match read {
                    Ok(0) => stdout_open = false,
                    Ok(n) => splitter.push(&chunk[..n], |line| {
                        for event in parser.line(line) {
                            self.emit(event);
                        }
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading claude stdout failed");
                        stdout_open = false;
                    }
                },
                _ = tokio::time::sleep_until(drain_deadline), if exited.is_some() => {
                    tracing::warn!("claude's stdout stayed open after it exited; stopped reading");
                    stdout_open = false;
                }
            }
        };
        if let Some(tail) = splitter.finish() {
            for event in parser.line(&tail) {
                self.emit(event);
            }
        }
        parser.finish();
        if splitter.dropped() > 0 {
            tracing::warn!(
                dropped = splitter.dropped(),
                limit = MAX_LINE_BYTES,
                "dropped oversized claude output lines"
            );
        }
        end
    }
}

/// Read stderr to the end so the CLI never blocks on it; log a bounded number of lines at debug
/// level and keep the first characters for the failure detail.
async fn drain_stderr(mut pipe: impl AsyncRead + Unpin) -> String {
    let mut splitter = LineSplitter::new(64 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut head = String::new();
    let mut logged = 0;
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => splitter.push(&chunk[..n], |line| {
                let line = String::from_utf8_lossy(line);
                let line = line.trim();
                if line.is_empty() {
                    return;
                }
                if head.chars().count() < STDERR_DETAIL_CHARS {
                    if !head.is_empty() {
                        head.push(' ');
                    }
                    head.extend(line.chars().take(STDERR_DETAIL_CHARS));
                }
                if logged < STDERR_LOG_LINES {
                    logged += 1;
                    tracing::debug!(line, "claude stderr");
                }
            }),
        }
    }
    if let Some(tail) = splitter.finish() {
        let tail = String::from_utf8_lossy(&tail);
        if head.is_empty() {
            head = tail.trim().chars().take(STDERR_DETAIL_CHARS).collect();
        }
    }
    head.chars().take(STDERR_DETAIL_CHARS).collect()
}
