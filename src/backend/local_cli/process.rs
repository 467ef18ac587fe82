//! The CLI process: started as the unprivileged user with an explicit environment in its own
//! process group, and taken down completely. A process-group signal does not reach commands the
//! CLI's `Bash` tool starts (they run in a session of their own), so every process of a run also
//! carries a marker variable and a sweep of `/proc` finds the ones that left the group.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Name of the variable that tags every process of one run.
pub const RUN_MARKER_VAR: &str = "DREAMCORE_CLI_RUN";

/// How long the sweep keeps looking for stragglers of a run before giving up.
const SWEEP_LIMIT: Duration = Duration::from_secs(5);
const SWEEP_PAUSE: Duration = Duration::from_millis(50);

/// The OS account the CLI runs as.
#[derive(Debug, Clone)]
pub struct CliUser {
    /// The account name.
    pub name: String,
    /// The account's user id.
    pub uid: u32,
    /// The account's group id.
    pub gid: u32,
    /// The account's home folder.
    pub home: std::path::PathBuf,
}

/// Everything needed to start one CLI process.
pub struct Launch<'a> {
    /// The program to run.
    pub program: &'a Path,
    /// Its arguments.
    pub args: &'a [OsString],
    /// The folder it runs in.
    pub cwd: &'a Path,
    /// Its environment variables.
    pub env: &'a [(OsString, OsString)],
    /// The user it runs as, if not the relay's own.
    pub user: Option<&'a CliUser>,
    /// Unique per run; exported as [`RUN_MARKER_VAR`].
    pub marker: &'a str,
}

/// A running CLI. Dropping it before [`CliProcess::terminate`] or [`CliProcess::sweep`] has
/// finished kills the group and every marked process, so nothing outlives an abandoned run.
pub struct CliProcess {
    /// The running child process.
    pub child: Child,
    pgid: Pid,
    marker_entry: Vec<u8>,
    exit: Option<ExitStatus>,
    swept: bool,
}

impl CliProcess {
    /// Starts the CLI in its own process group so it can be stopped as a whole.
    pub fn spawn(launch: Launch<'_>) -> io::Result<Self> {
        let mut command = Command::new(launch.program);
        command
            .args(launch.args)
            .current_dir(launch.cwd)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env(RUN_MARKER_VAR, launch.marker)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own group: a signal to the group reaches the CLI and its ordinary children.
            .process_group(0);
        if let Some(user) = launch.user {
            command.uid(user.uid).gid(user.gid);
        }
        let child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("child exited before its pid was read"))?;
        let pid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
        Ok(Self {
            child,
            pgid: Pid::from_raw(pid),
            marker_entry: format!("{RUN_MARKER_VAR}={}", launch.marker).into_bytes(),
            exit: None,
            swept: false,
        })
    }

    /// The process group id, used to signal the CLI and its children.
    pub fn pid(&self) -> i32 {
        self.pgid.as_raw()
    }

    /// Wait for the CLI itself to exit (cancel-safe).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        let status = self.child.wait().await?;
        self.exit = Some(status);
        Ok(status)
    }

    /// SIGTERM to the group, SIGKILL after `grace`, reap the CLI, then sweep every process of
    /// the run that is still alive. Returns the CLI's exit status when it could be reaped.
    pub async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            // Only signal the group while its leader is unreaped: its pgid cannot be reused yet.
            signal_group(self.pgid, Signal::SIGTERM);
            if tokio::time::timeout(grace, self.wait()).await.is_err() {
                tracing::warn!(
                    pid = self.pid(),
                    "claude ignored SIGTERM; sending SIGKILL to its process group"
                );
                signal_group(self.pgid, Signal::SIGKILL);
                if tokio::time::timeout(grace, self.wait()).await.is_err() {
                    tracing::error!(pid = self.pid(), "claude survived SIGKILL");
                }
            }
        }
        self.sweep().await;
        self.exit
    }

    /// SIGKILL every process still carrying this run's marker (tool commands that outlived the
    /// CLI or left its group), until none is left or the sweep limit passes.
    pub async fn sweep(&mut self) {
        let marker = self.marker_entry.clone();
        let result = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let mut killed = 0;
            loop {
                let found = signal_marked(&marker, Signal::SIGKILL);
                if found == 0 {
                    return (killed, true);
                }
                killed += found;
                if started.elapsed() > SWEEP_LIMIT {
                    return (killed, false);
                }
                std::thread::sleep(SWEEP_PAUSE);
            }
        })
        .await;
        match result {
            Ok((0, _)) => {}
            Ok((killed, true)) => {
                tracing::info!(killed, "killed leftover processes of the claude run")
            }
            Ok((killed, false)) => {
                tracing::error!(
                    killed,
                    "processes of the claude run are still alive after the sweep"
                )
            }
            Err(e) => tracing::error!(error = %e, "process sweep task failed"),
        }
        self.swept = true;
    }
}

impl Drop for CliProcess {
    fn drop(&mut self) {
        if self.swept {
            return;
        }
        if self.exit.is_none() {
            signal_group(self.pgid, Signal::SIGKILL);
        }
        let killed = signal_marked(&self.marker_entry, Signal::SIGKILL);
        tracing::warn!(
            pid = self.pid(),
            killed,
            "claude run abandoned; killed its processes"
        );
    }
}

fn signal_group(pgid: Pid, signal: Signal) {
    if let Err(e) = killpg(pgid, signal) {
        if e != nix::errno::Errno::ESRCH {
            tracing::warn!(pgid = pgid.as_raw(), %signal, error = %e, "cannot signal the claude process group");
        }
    }
}

/// Send `signal` to every process whose initial environment holds `marker_entry`
/// (`NAME=value`). Zombies have no environment left and are skipped. Returns how many matched.
fn signal_marked(marker_entry: &[u8], signal: Signal) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id();
    let mut found = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|var| var == marker_entry) {
            if let Ok(raw) = i32::try_from(pid) {
                found += 1;
                let _ = kill(Pid::from_raw(raw), signal);
            }
        }
    }
    found
}

/// The conventional shell exit code: the code itself, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(2 << 8)), 2);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }
}
