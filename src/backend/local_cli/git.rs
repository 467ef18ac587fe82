//! "Saving version history": commit the workspace after a successful run, as Modal does
//! (`docs/backends.md` §2.9 step 7), but report a real hash, or none when nothing changed.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::process::CliUser;

const AUTHOR_NAME: &str = "Game Creator";
const AUTHOR_EMAIL: &str = "gamecreator@dreamcore.app";
const COMMIT_MESSAGE: &str = "Update via Claude CLI";
/// Per git command, as upstream.
const GIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The skills are copied into every run; they are not part of the game's history.
const PATHSPEC: [&str; 3] = ["--", ".", ":(exclude).claude/skills"];

/// Why saving a version failed; it never fails the generation, only the log line says so.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git {args}: {source}")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("git {args} took longer than {GIT_TIMEOUT:?}")]
    Timeout { args: String },
    #[error("git {args} failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("git rev-parse printed {0:?}, not a commit hash")]
    NotAHash(String),
}

/// Runs git in one workspace as the CLI user, with the same explicit environment.
pub struct Git<'a> {
    pub workspace: &'a Path,
    pub env: &'a [(OsString, OsString)],
    pub user: Option<&'a CliUser>,
}

impl Git<'_> {
    /// Commit every change; `Ok(None)` when the tree was already clean.
    pub async fn save_version(&self) -> Result<Option<String>, GitError> {
        if !self.workspace.join(".git").exists() {
            self.run(&["init", "-q"]).await?;
            tracing::info!("git repository initialized");
        }
        if self.run(&["config", "--get", "user.email"]).await.is_err() {
            self.run(&["config", "user.name", AUTHOR_NAME]).await?;
            self.run(&["config", "user.email", AUTHOR_EMAIL]).await?;
        }
        let status = self.run(&with_pathspec(&["status", "--porcelain"])).await?;
        if status.trim().is_empty() {
            return Ok(None);
        }
        self.run(&with_pathspec(&["add", "-A"])).await?;
        self.run(&["commit", "-q", "--no-verify", "-m", COMMIT_MESSAGE])
            .await?;
        let hash = self.run(&["rev-parse", "--short", "HEAD"]).await?;
        let hash = hash.trim();
        if (7..=40).contains(&hash.len()) && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Some(hash.to_string()))
        } else {
            Err(GitError::NotAHash(hash.to_string()))
        }
    }

    async fn run(&self, args: &[&str]) -> Result<String, GitError> {
        let joined = args.join(" ");
        let mut command = Command::new("git");
        command
            .args(args)
            .current_dir(self.workspace)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(user) = self.user {
            command.uid(user.uid).gid(user.gid);
        }
        let output = tokio::time::timeout(GIT_TIMEOUT, command.output())
            .await
            .map_err(|_| GitError::Timeout {
                args: joined.clone(),
            })?
            .map_err(|source| GitError::Spawn {
                args: joined.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(GitError::Failed {
                args: joined,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr)
                    .chars()
                    .take(300)
                    .collect(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

fn with_pathspec<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().chain(PATHSPEC).collect()
}
