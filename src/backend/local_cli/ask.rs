//! Short questions to a small model for the pre-job pipeline (intent, chat answer, skills):
//! `claude -p --model <small>`, prompt on stdin, plain text on stdout, run exactly like a
//! generation (the CLI user, the explicit environment, its own process group) but in an empty
//! per-user directory, without `--dangerously-skip-permissions`, and under a short timeout.
//! This is what Modal's `detect_intent` / `chat_haiku` / `detect_skills` do in their helper
//! sandboxes (`modal-and-cli.md` §4.10, §5.4).

use std::ffi::OsString;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use super::process::{exit_code, CliProcess, Launch};
use super::settings::{RunAs, Settings};
use super::workspace;
use crate::metrics::METRICS;

/// Why a question got no answer. Callers fall back; the text is only logged.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("the local CLI cannot run: {0}")]
    Unavailable(String),
    #[error("claude did not answer within {0} s")]
    Timeout(u64),
    #[error("claude exited with {0}")]
    Exit(i32),
    #[error("claude: {0}")]
    Io(#[from] std::io::Error),
}

impl AskError {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Timeout(_) => "timeout",
            Self::Exit(_) => "exit",
            Self::Io(_) => "error",
        }
    }
}

/// One question.
pub struct Question<'a> {
    /// Metric label: `intent`, `chat`, `skills`.
    pub purpose: &'static str,
    /// Whose question it is, for the workspace and logs.
    pub user_id: Uuid,
    /// The model to ask.
    pub model: &'a str,
    /// The full prompt.
    pub prompt: &'a str,
    /// How long to wait for the answer.
    pub timeout: Duration,
    /// Output beyond this is dropped (the answers are a word, a list or a short reply).
    pub max_output_bytes: usize,
}

/// Ask the small model one question and return its printed answer.
pub(super) async fn ask(settings: &Settings, question: Question<'_>) -> Result<String, AskError> {
    let result = ask_inner(settings, &question).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    METRICS.pipeline_cli_calls.inc(&[question.purpose, outcome]);
    result
}

async fn ask_inner(s: &Settings, question: &Question<'_>) -> Result<String, AskError> {
    let program = match (&s.program, &s.run_as) {
        (Err(why), _) => return Err(AskError::Unavailable(why.clone())),
        (_, RunAs::Missing(name)) => {
            return Err(AskError::Unavailable(format!(
                "LOCAL_CLI_USER {name} does not exist"
            )))
        }
        (Ok(program), _) => program.clone(),
    };
    let user = match &s.run_as {
        RunAs::User(user) => Some(user.clone()),
        RunAs::Relay | RunAs::Missing(_) => None,
    };
    let owner = user.as_ref().map(|u| (u.uid, u.gid));
    let (data_dir, user_id) = (s.data_dir.clone(), question.user_id);
    let cwd = tokio::task::spawn_blocking(move || workspace::scratch(&data_dir, user_id, owner))
        .await
        .map_err(|e| AskError::Unavailable(format!("scratch directory task: {e}")))??;

    let mut env = s.base_env.clone();
    env.extend(s.cli_env.iter().cloned());
    env.push((
        "CLAUDE_CONFIG_DIR".into(),
        workspace::config_dir(&s.data_dir, user_id).into(),
    ));
    let args: Vec<OsString> = vec!["-p".into(), "--model".into(), question.model.into()];
    let marker = Uuid::new_v4().to_string();
    let mut cli = CliProcess::spawn(Launch {
        program: &program,
        args: &args,
        cwd: &cwd,
        env: &env,
        user: user.as_ref(),
        marker: &marker,
    })?;
    if let Some(mut stdin) = cli.child.stdin.take() {
        let prompt = question.prompt.as_bytes().to_vec();
        tokio::spawn(async move {
            if let Err(e) = stdin.write_all(&prompt).await {
                tracing::debug!(error = %e, "question not fully written to claude");
            }
        });
    }
    // Stderr is not needed; drained so the CLI never blocks on it.
    if let Some(mut stderr) = cli.child.stderr.take() {
        tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut stderr, &mut sink).await;
        });
    }
    let Some(mut stdout) = cli.child.stdout.take() else {
        cli.terminate(s.grace).await;
        return Err(AskError::Io(std::io::Error::other(
            "stdout was not captured",
        )));
    };
    let limit = question.max_output_bytes;
    let read_and_wait = async {
        let mut output = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = stdout.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            let room = limit.saturating_sub(output.len());
            output.extend_from_slice(&chunk[..n.min(room)]);
        }
        let status = cli.wait().await?;
        Ok::<_, std::io::Error>((output, status))
    };
    let (output, status) = match tokio::time::timeout(question.timeout, read_and_wait).await {
        Ok(read) => read?,
        Err(_) => {
            cli.terminate(s.grace).await;
            return Err(AskError::Timeout(question.timeout.as_secs()));
        }
    };
    // Tools the model might have started must not outlive the question.
    cli.sweep().await;
    let code = exit_code(status);
    if code != 0 {
        return Err(AskError::Exit(code));
    }
    Ok(String::from_utf8_lossy(&output).trim().to_string())
}
