//! The local backend's settings: `CliConfig` and the relay's environment resolved once into
//! the binary, its flags, the OS account, and the explicit environment of every run.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::{CliUser, RUN_MARKER_VAR};
use crate::config::CliConfig;

const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Flags of every generation run. No `-p`: with stdout a pipe the CLI is in print mode, exactly
/// as Modal and Express run it (checked with CLI 2.1.328).
const CLI_ARGS: [&str; 4] = [
    "--verbose",
    "--output-format",
    "stream-json",
    "--dangerously-skip-permissions",
];
#[derive(Debug, thiserror::Error)]
/// Why the local backend cannot be built.
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
pub(super) enum RunAs {
    /// `LOCAL_CLI_USER` unset: the relay's own account.
    Relay,
    User(CliUser),
    /// `LOCAL_CLI_USER` names no account; every run fails until it is created.
    Missing(String),
}

/// Everything a run needs, resolved once from [`CliConfig`] and the relay's environment.
#[derive(Debug)]
pub(super) struct Settings {
    /// The resolved binary, or why there is none.
    pub(super) program: Result<PathBuf, String>,
    pub(super) args: Vec<OsString>,
    pub(super) run_as: RunAs,
    pub(super) relay_is_root: bool,
    pub(super) data_dir: PathBuf,
    pub(super) skills_dir: Option<PathBuf>,
    pub(super) timeout: Duration,
    pub(super) grace: Duration,
    pub(super) line_cap: usize,
    /// PATH, HOME, USER, LANG, TMPDIR: what both the CLI and git get.
    pub(super) base_env: Vec<(OsString, OsString)>,
    /// Telemetry switches and the allow-listed variables: the CLI only.
    pub(super) cli_env: Vec<(OsString, OsString)>,
}

impl Settings {
    /// Resolve the binary and `LOCAL_CLI_USER`, and take the allow-listed variables
    /// (`cli.env_passthrough`) from `env`.
    pub(super) fn resolve(
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
        Ok(Settings {
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
        })
    }

    /// Start-up problems an operator should read before the first job fails on them.
    pub(super) fn problems(&self) -> Vec<String> {
        let s = self;
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
