//! The local backend: the Claude Code CLI run on this machine, reproducing what Modal's
//! `generate_game` does in its sandbox (`modal-and-cli.md` §2.4, §2.9, §4) without the
//! upstream's faults: an explicit environment instead of the relay's secrets, a per-process
//! timeout, cancel that takes the whole process tree down, and a real commit hash.

mod ask;
mod git;
mod output;
mod process;
mod workspace;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::{status, Backend, BackendEvent, BackendKind, EventStream, Failure, RunRequest};
use crate::config::CliConfig;
use output::{LineSplitter, OutputParser, MAX_LINE_BYTES};
use process::{exit_code, CliProcess, CliUser, Launch};

pub use ask::{AskError, Question};
pub use process::RUN_MARKER_VAR;

const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Flags of every generation run. No `-p`: with stdout a pipe the CLI is in print mode, exactly
/// as Modal and Express run it (checked with CLI 2.1.328).
const CLI_ARGS: [&str; 4] = [
    "--verbose",
    "--output-format",
    "stream-json",
    "--dangerously-skip-permissions",
];
/// How much of the CLI's stderr is kept for the operator-facing failure detail.
const STDERR_DETAIL_CHARS: usize = 200;
/// Stderr lines copied to the debug log per run; the rest is drained silently.
const STDERR_LOG_LINES: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum LocalCliError {
    #[error("cannot look up LOCAL_CLI_USER {user:?}: {source}")]
    UserLookup { user: String, source: nix::Error },
    #[error("data directory {path:?}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Which OS account runs the CLI.
#[derive(Debug, Clone)]
enum RunAs {
    /// `LOCAL_CLI_USER` unset: the relay's own account.
    Relay,
    User(CliUser),
    /// `LOCAL_CLI_USER` names no account; every run fails until it is created.
    Missing(String),
}

#[derive(Debug)]
struct Settings {
    /// The resolved binary, or why there is none.
    program: Result<PathBuf, String>,
    args: Vec<OsString>,
    run_as: RunAs,
    relay_is_root: bool,
    data_dir: PathBuf,
    skills_dir: Option<PathBuf>,
    timeout: Duration,
    grace: Duration,
    line_cap: usize,
    /// PATH, HOME, USER, LANG, TMPDIR: what both the CLI and git get.
    base_env: Vec<(OsString, OsString)>,
    /// Telemetry switches and the allow-listed variables: the CLI only.
    cli_env: Vec<(OsString, OsString)>,
}

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
        let data_dir = std::path::absolute(data_dir).map_err(|source| LocalCliError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let run_as = match cli.user.trim() {
            "" => RunAs::Relay,
            name => match nix::unistd::User::from_name(name) {
                Ok(Some(user)) => RunAs::User(CliUser {
                    name: user.name,
                    uid: user.uid.as_raw(),
                    gid: user.gid.as_raw(),
                    home: user.dir,
                }),
                Ok(None) => RunAs::Missing(name.to_string()),
                Err(source) => {
                    return Err(LocalCliError::UserLookup {
                        user: name.to_string(),
                        source,
                    })
                }
            },
        };
        let path = env("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        let program = resolve_program(&cli.claude_bin, &path);

        let (home, user_name) = match &run_as {
            RunAs::User(user) => (
                user.home.clone().into_os_string(),
                OsString::from(&user.name),
            ),
            RunAs::Relay | RunAs::Missing(_) => (
                env("HOME").unwrap_or_else(|| "/".into()),
                env("USER").unwrap_or_else(current_user_name),
            ),
        };
        let base_env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), path),
            ("HOME".into(), home),
            ("USER".into(), user_name),
            ("LANG".into(), "C.UTF-8".into()),
            (
                "TMPDIR".into(),
                env("TMPDIR").unwrap_or_else(|| "/tmp".into()),
            ),
        ];
        let mut cli_env: Vec<(OsString, OsString)> = vec![
            ("DISABLE_TELEMETRY".into(), "1".into()),
            (
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
                "1".into(),
            ),
        ];
        for name in &cli.env_passthrough {
            let name = name.trim();
            let fixed = base_env.iter().chain(&cli_env).any(|(k, _)| k == name);
            if name.is_empty() || fixed || name == RUN_MARKER_VAR {
                continue;
            }
            if let Some(value) = env(name) {
                cli_env.push((name.into(), value));
            }
        }

        let mut args: Vec<OsString> = CLI_ARGS.iter().map(OsString::from).collect();
        if !cli.model.trim().is_empty() {
            args.push("--model".into());
            args.push(cli.model.trim().into());
        }
        let skills_dir = (!cli.skills_dir.as_os_str().is_empty()).then(|| cli.skills_dir.clone());
        Ok(Self {
            settings: Arc::new(Settings {
                program,
                args,
                run_as,
                relay_is_root: nix::unistd::geteuid().is_root(),
                data_dir,
                skills_dir,
                timeout: Duration::from_secs(cli.timeout_secs.max(1)),
                grace: Duration::from_secs(cli.kill_grace_secs.max(1)),
                line_cap: cli.output_line_cap,
                base_env,
                cli_env,
            }),
        })
    }

    /// Start-up problems an operator should read before the first job fails on them.
    pub fn preflight(&self) -> Vec<String> {
        let s = &self.settings;
        let mut problems = Vec::new();
        match &s.program {
            Err(why) => problems.push(why.clone()),
            Ok(path) => match std::fs::metadata(path) {
                Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {}
                Ok(_) => problems.push(format!(
                    "CLAUDE_BIN {} is not an executable file",
                    path.display()
                )),
                Err(e) => problems.push(format!("CLAUDE_BIN {}: {e}", path.display())),
            },
        }
        match &s.run_as {
            RunAs::Relay if s.relay_is_root => problems.push(
                "the relay runs as root and LOCAL_CLI_USER is not set: the Claude CLI refuses \
                 --dangerously-skip-permissions as root (run scripts/install-claude-cli.sh and set \
                 LOCAL_CLI_USER=dreamcore-cli)"
                    .to_string(),
            ),
            RunAs::Relay => {}
            RunAs::User(user) if !s.relay_is_root => problems.push(format!(
                "LOCAL_CLI_USER={} is set but the relay is not root, so it cannot switch to that user",
                user.name
            )),
            RunAs::User(_) => {}
            RunAs::Missing(name) => problems.push(format!(
                "LOCAL_CLI_USER={name}: no such OS user (scripts/install-claude-cli.sh creates dreamcore-cli)"
            )),
        }
        if let Some(dir) = &s.skills_dir {
            if !dir.is_dir() {
                problems.push(format!("SKILLS_DIR {} is not a directory", dir.display()));
            }
        }
        problems
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
        let run = Run {
            settings: Arc::clone(&self.settings),
            request,
            stop: stop.clone(),
            tx,
        };
        tokio::spawn(run.execute().instrument(span));
        let guard = stop.drop_guard();
        futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
            rx.recv().await.map(|event| (event, (rx, guard)))
        })
        .boxed()
    }
}

/// How the CLI process ended, as far as the supervisor saw it.
enum End {
    Cancelled,
    TimedOut,
    Exited(std::process::ExitStatus),
    Lost(std::io::Error),
}

struct Run {
    settings: Arc<Settings>,
    request: RunRequest,
    stop: CancellationToken,
    tx: mpsc::UnboundedSender<BackendEvent>,
}

impl Run {
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

    async fn execute(self) {
        let workspace = match self.prepare_workspace().await {
            Ok(dir) => dir,
            Err(detail) => {
                tracing::error!(%detail, "cannot prepare the workspace");
                self.emit(BackendEvent::Failed(Failure::internal(detail)));
                return;
            }
        };
        self.emit(BackendEvent::Status(status::ENVIRONMENT_READY.into()));
        self.emit(BackendEvent::Status(status::LOADING_SKILLS.into()));
        if self.stop.is_cancelled() {
            return;
        }
        self.emit(BackendEvent::Status(status::STARTING_CLI.into()));
        let program = match (&self.settings.program, &self.settings.run_as) {
            (Err(why), _) => return self.spawn_failed(why.clone()),
            (_, RunAs::Missing(name)) => {
                return self.spawn_failed(format!("LOCAL_CLI_USER {name} does not exist"))
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
            cwd: &workspace,
            env: &env,
            user: self.cli_user(),
            marker: &marker,
        });
        let mut cli = match spawned {
            Ok(cli) => cli,
            Err(e) => return self.spawn_failed(format!("{}: {e}", program.display())),
        };
        tracing::info!(pid = cli.pid(), program = %program.display(), "claude started");
        let started = Instant::now();

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
            Some(stdout) => self.supervise(&mut cli, stdout, &mut parser).await,
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
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

        let status = match end {
            End::Cancelled => {
                let status = cli.terminate(self.settings.grace).await;
                tracing::info!(elapsed_ms, ?status, "claude cancelled");
                return;
            }
            End::TimedOut => {
                cli.terminate(self.settings.grace).await;
                let limit = self.settings.timeout.as_secs();
                tracing::warn!(elapsed_ms, limit_secs = limit, "claude timed out");
                self.emit(BackendEvent::Failed(
                    Failure::cli_timeout().with_detail(format!("claude ran longer than {limit} s")),
                ));
                return;
            }
            End::Lost(e) => {
                cli.terminate(self.settings.grace).await;
                tracing::error!(error = %e, "lost track of the claude process");
                self.emit(BackendEvent::Failed(Failure::internal(format!(
                    "waiting for claude: {e}"
                ))));
                return;
            }
            End::Exited(status) => status,
        };
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
            return;
        }
        if parser.reported_error() {
            self.emit(BackendEvent::Failed(
                Failure::cli_reported_error(Some(0))
                    .with_detail("claude's result line has is_error: true"),
            ));
            return;
        }
        self.emit(BackendEvent::Status(status::SAVING_VERSION.into()));
        let git = git::Git {
            workspace: &workspace,
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
        let owner = self.cli_user().map(|u| (u.uid, u.gid));
        let prepared = tokio::task::spawn_blocking(move || {
            let dir = workspace::prepare(&settings.data_dir, user_id, project_id, owner)
                .map_err(|e| format!("workspace for project {project_id}: {e}"))?;
            if let Some(skills) = &settings.skills_dir {
                // As on Modal, a skills problem does not stop the generation.
                if let Err(e) = workspace::install_skills(&dir, skills, owner) {
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

/// `CLAUDE_BIN` as an absolute path: a name without `/` is looked up in `PATH`, like a shell.
fn resolve_program(bin: &str, path: &std::ffi::OsStr) -> Result<PathBuf, String> {
    let bin = bin.trim();
    if bin.is_empty() {
        return Err("CLAUDE_BIN is empty".to_string());
    }
    if bin.contains('/') {
        return std::path::absolute(bin).map_err(|e| format!("CLAUDE_BIN {bin}: {e}"));
    }
    std::env::split_paths(path)
        .map(|dir| dir.join(bin))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!("CLAUDE_BIN {bin} not found in PATH (run scripts/install-claude-cli.sh and point CLAUDE_BIN at it)")
        })
}

fn current_user_name() -> OsString {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| OsString::from(u.name))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_are_found_in_path_and_paths_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("claude");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        let path = std::env::join_paths(["/nonexistent", tmp.path().to_str().unwrap()]).unwrap();
        assert_eq!(resolve_program("claude", &path).unwrap(), bin);
        assert!(
            resolve_program("claude", std::ffi::OsStr::new("/nonexistent"))
                .unwrap_err()
                .contains("not found in PATH")
        );
        assert_eq!(
            resolve_program("/opt/x/claude", &path).unwrap(),
            PathBuf::from("/opt/x/claude")
        );
        assert!(resolve_program(" ", &path).is_err());
    }
}
