//! Why a job failed, in the exact `failed` vocabulary of `docs/backends.md` §2.7, plus the
//! relay's own codes for transport faults the upstream never reported.

use serde::Deserialize;

/// A job's failure as the browser sees it (`failed {code, userMessage, recoverable, exitCode}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: String,
    pub user_message: String,
    pub recoverable: bool,
    pub exit_code: Option<i32>,
    /// For `USE_MODAL=auto`: the upstream failed before producing a single event
    /// (connect error, 5xx), so another backend could have served the job.
    pub upstream_unavailable: bool,
    /// Operator-facing detail for the log line; never sent to the browser.
    pub detail: String,
}

const MSG_GENERAL: &str = "生成中にエラーが発生しました";
const MSG_TIMEOUT: &str = "生成に時間がかかりすぎました（5分制限）";
const MSG_KILLED: &str = "生成がキャンセルされました";
const MSG_TERMINATED: &str = "生成が中断されました";
const MSG_CONNECTION: &str = "実行環境との接続に問題があります";
const MSG_SPAWN: &str = "実行環境でエラーが発生しました";
const MSG_INTERRUPTED: &str = "生成が途中で途切れました。もう一度お試しください";
const MSG_NO_RESPONSE: &str = "実行環境からの応答が途絶えました。もう一度お試しください";

impl Failure {
    fn new(
        code: &str,
        user_message: impl Into<String>,
        recoverable: bool,
        exit_code: Option<i32>,
    ) -> Self {
        Self {
            code: code.to_string(),
            user_message: user_message.into(),
            recoverable,
            exit_code,
            upstream_unavailable: false,
            detail: String::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// The CLI exit-code table (§2.7.1), used for Modal's fallback and the local process.
    pub fn from_exit_code(exit_code: i32) -> Self {
        match exit_code {
            124 => Self::new("CLI_TIMEOUT", MSG_TIMEOUT, true, Some(124)),
            137 => Self::new("CLI_KILLED", MSG_KILLED, true, Some(137)),
            143 => Self::new("CLI_TERMINATED", MSG_TERMINATED, true, Some(143)),
            n => Self::new("CLI_GENERAL_ERROR", MSG_GENERAL, false, Some(n)),
        }
    }

    /// The local CLI ran past its own time limit (exit-124 semantics).
    pub fn cli_timeout() -> Self {
        Self::from_exit_code(124)
    }

    /// The whole job ran past `JOB_TIMEOUT_SECS`. Unlike upstream, the text states the real limit.
    pub fn job_timeout(limit_secs: u64) -> Self {
        let minutes = limit_secs.div_ceil(60).max(1);
        Self::new(
            "CLI_TIMEOUT",
            format!("生成に時間がかかりすぎました（{minutes}分制限）"),
            true,
            Some(124),
        )
    }

    /// The CLI finished its run but reported `is_error` in its `result` line.
    pub fn cli_reported_error(exit_code: Option<i32>) -> Self {
        Self::new("CLI_GENERAL_ERROR", MSG_GENERAL, false, exit_code)
    }

    pub fn spawn_error(detail: impl Into<String>) -> Self {
        Self::new("CLI_SPAWN_ERROR", MSG_SPAWN, false, None).with_detail(detail)
    }

    /// Could not connect to the upstream at all.
    pub fn network(detail: impl Into<String>) -> Self {
        let mut f = Self::new("NETWORK_ERROR", MSG_CONNECTION, true, None).with_detail(detail);
        f.upstream_unavailable = true;
        f
    }

    /// Non-2xx answer to the generation request; nothing was generated.
    pub fn upstream_http(status: u16, body: &str) -> Self {
        let snippet: String = body.chars().take(200).collect();
        let detail = format!("upstream answered HTTP {status}: {snippet}");
        match status {
            401 | 403 => {
                Self::new("UPSTREAM_AUTH_ERROR", MSG_CONNECTION, false, None).with_detail(detail)
            }
            400 | 404 | 405 | 413 | 422 => {
                Self::new("UPSTREAM_BAD_REQUEST", MSG_CONNECTION, false, None).with_detail(detail)
            }
            _ => {
                let mut f =
                    Self::new("SANDBOX_ERROR", MSG_CONNECTION, true, None).with_detail(detail);
                f.upstream_unavailable = status >= 500;
                f
            }
        }
    }

    /// The stream ended cleanly but without `done` or `error`.
    pub fn stream_incomplete() -> Self {
        Self::new("STREAM_INCOMPLETE", MSG_INTERRUPTED, true, None)
            .with_detail("stream ended without a terminal event")
    }

    /// The connection broke in the middle of the stream.
    pub fn stream_dropped(detail: impl Into<String>) -> Self {
        Self::new("STREAM_DROPPED", MSG_INTERRUPTED, true, None).with_detail(detail)
    }

    /// Nothing arrived for longer than the idle-read timeout.
    pub fn stream_idle(idle_secs: u64) -> Self {
        Self::new("STREAM_IDLE_TIMEOUT", MSG_NO_RESPONSE, true, None)
            .with_detail(format!("no upstream data for {idle_secs} s"))
    }

    /// The instance shut down before the job finished (drain timeout); retrying reaches
    /// another instance.
    pub fn server_shutdown() -> Self {
        Self::new(
            "SERVER_RESTARTING",
            "サーバーの再起動により生成が中断されました。もう一度お試しください",
            true,
            None,
        )
        .with_detail("drain timeout reached")
    }

    /// The instance running the job stopped renewing its lease (killed, lost its node);
    /// another instance failed the job so the user can retry.
    pub fn instance_lost() -> Self {
        Self::new(
            "SERVER_RESTARTING",
            "サーバーの再起動により生成が中断されました。もう一度お試しください",
            true,
            None,
        )
        .with_detail("the job's instance stopped renewing its lease")
    }

    /// The relay itself could not run the job (store failure, bad workspace...).
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new("OPERATION_FAILED", MSG_GENERAL, true, None).with_detail(detail)
    }
}

/// Modal's `error` event (§2.7): `code`, `userMessage`, `recoverable`, optional `exitCode`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamError {
    pub code: Option<String>,
    pub user_message: Option<String>,
    pub message: Option<String>,
    pub error: Option<String>,
    pub recoverable: Option<bool>,
    pub exit_code: Option<i32>,
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Self {
        let user_message = e
            .user_message
            .or(e.message)
            .or(e.error)
            .unwrap_or_else(|| "Modal execution failed".to_string());
        Failure::new(
            e.code.as_deref().unwrap_or("UNKNOWN_ERROR"),
            user_message,
            e.recoverable.unwrap_or(false),
            e.exit_code,
        )
        .with_detail("upstream error event")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_table() {
        assert_eq!(Failure::from_exit_code(124).code, "CLI_TIMEOUT");
        assert!(Failure::from_exit_code(124).recoverable);
        assert_eq!(
            Failure::from_exit_code(137).user_message,
            "生成がキャンセルされました"
        );
        assert_eq!(Failure::from_exit_code(143).code, "CLI_TERMINATED");
        let f = Failure::from_exit_code(2);
        assert_eq!(
            (f.code.as_str(), f.recoverable, f.exit_code),
            ("CLI_GENERAL_ERROR", false, Some(2))
        );
    }

    #[test]
    fn job_timeout_names_the_real_limit() {
        assert_eq!(
            Failure::job_timeout(600).user_message,
            "生成に時間がかかりすぎました（10分制限）"
        );
    }

    #[test]
    fn upstream_error_event_defaults() {
        let e: UpstreamError = serde_json::from_str(r#"{"type":"error"}"#).unwrap();
        let f = Failure::from(e);
        assert_eq!(
            (f.code.as_str(), f.user_message.as_str(), f.recoverable),
            ("UNKNOWN_ERROR", "Modal execution failed", false)
        );
    }
}
