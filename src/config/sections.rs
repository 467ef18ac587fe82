//! The configuration sections, one struct per `[section]` of `config/default.toml`, with the
//! values derived from them (durations, Modal function URLs, effective issuers).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Secret, SecretEncoding};

/// Which backend new jobs go to (`USE_MODAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendMode {
    /// Every new job goes to Modal.
    Modal,
    /// Every new job runs the local Claude CLI.
    Local,
    /// Modal first; local while Modal keeps failing before its first event.
    Auto,
}

impl BackendMode {
    /// `USE_MODAL` semantics: exactly `true` means Modal (as in Express), `auto` the fallback
    /// mode, `false` or empty the local CLI. Anything else is a typo worth refusing.
    pub fn parse_use_modal(value: &str) -> Option<Self> {
        match value.trim() {
            "true" => Some(Self::Modal),
            "false" | "" => Some(Self::Local),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }

    /// The mode as the `USE_MODAL` value it comes from.
    pub fn as_use_modal(self) -> &'static str {
        match self {
            Self::Modal => "true",
            Self::Local => "false",
            Self::Auto => "auto",
        }
    }
}

/// Log line format (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[server]`: where the relay listens, keeps its data and serves the frontend from.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerConfig {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on.
    pub port: u16,
    /// Folder for the relay's data (workspaces, SQLite).
    pub data_dir: PathBuf,
    /// Folder of static frontend files; empty serves none.
    pub public_dir: PathBuf,
    /// How long shutdown waits for running jobs.
    pub drain_timeout_secs: u64,
    /// Log output format.
    pub log_format: LogFormat,
    /// Start even with secrets shorter than the minimums (development only).
    pub allow_weak_secrets: bool,
    /// Accept development tokens although `host` is not a loopback address.
    pub allow_dev_tokens_on_public_bind: bool,
    /// `host:port` of the operator listener (`/metrics`, `/ops`, `/admin/*`); empty = none.
    pub admin_listen: String,
}

/// `[backend]`: which backend new jobs use, and when `auto` falls back to local.
#[derive(Debug, Clone, Deserialize)]
pub struct BackendConfig {
    /// Which backend new jobs use (`USE_MODAL`).
    #[serde(deserialize_with = "de_backend_mode")]
    pub use_modal: BackendMode,
    /// Modal failures within the window that make auto mode fall back to local.
    pub auto_failure_threshold: u32,
    /// The window, in seconds, over which Modal failures are counted.
    pub auto_failure_window_secs: u64,
    /// Seconds between checks whether Modal has recovered.
    pub auto_probe_interval_secs: u64,
}

/// `[modal]`: the Modal endpoints, their shared secret and timeouts.
#[derive(Debug, Clone, Deserialize)]
pub struct ModalConfig {
    /// URL of the Modal generation endpoint.
    pub endpoint: String,
    /// Shared secret sent to Modal.
    pub secret: Secret,
    /// Seconds allowed to connect to Modal.
    pub connect_timeout_secs: u64,
    /// Seconds a Modal stream may stay silent.
    pub idle_timeout_secs: u64,
    /// Total time of one `list_files` / `get_file` call, a file's body included.
    pub file_timeout_secs: u64,
    /// URL of Modal's `get_file` endpoint.
    pub get_file_endpoint: String,
    /// URL of Modal's `list_files` endpoint.
    pub list_files_endpoint: String,
    /// URL of Modal's `apply_files` endpoint.
    pub apply_files_endpoint: String,
    /// URL of Modal's prewarm endpoint.
    pub prewarm_endpoint: String,
}

impl ModalConfig {
    /// Time allowed to connect to Modal.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
    /// How long an idle Modal stream may stay silent.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    /// Time allowed for one Modal file call.
    pub fn file_timeout(&self) -> Duration {
        Duration::from_secs(self.file_timeout_secs)
    }

    /// URL of another Modal function: the override when set, else `MODAL_ENDPOINT` with its
    /// first `generate_game` / `generate-game` replaced by the function name in kebab case.
    pub fn endpoint_for(&self, function: &str) -> String {
        let overridden = match function {
            "get_file" => &self.get_file_endpoint,
            "list_files" => &self.list_files_endpoint,
            "apply_files" => &self.apply_files_endpoint,
            "prewarm_sandbox" => &self.prewarm_endpoint,
            _ => "",
        };
        if !overridden.is_empty() {
            return overridden.to_string();
        }
        let lower = self.endpoint.to_ascii_lowercase();
        let found = ["generate_game", "generate-game"]
            .iter()
            .filter_map(|token| lower.find(token))
            .min();
        match found {
            Some(at) => format!(
                "{}{}{}",
                &self.endpoint[..at],
                function.replace('_', "-"),
                &self.endpoint[at + "generate_game".len()..]
            ),
            None => self.endpoint.clone(),
        }
    }
}

/// `[auth]`: how Supabase tokens are verified (HS256 secret, issuers, JWKS).
#[derive(Debug, Clone, Deserialize)]
pub struct AuthConfig {
    /// Base URL of the Supabase project.
    pub supabase_url: String,
    /// Secret for HS256 tokens.
    pub jwt_secret: Secret,
    /// How `jwt_secret` is written (plain text or base64).
    pub jwt_secret_encoding: SecretEncoding,
    /// Token issuers that are accepted.
    pub issuers: Vec<String>,
    /// Where the public signing keys are fetched from.
    pub jwks_url: String,
    /// Allowed clock skew, in seconds, when checking token times.
    pub leeway_secs: u64,
    /// Seconds the fetched keys are used before refetching.
    pub jwks_ttl_secs: u64,
    /// Least seconds between refetches for an unknown key id.
    pub jwks_refetch_cooldown_secs: u64,
    /// Seconds allowed for one key fetch.
    pub jwks_fetch_timeout_secs: u64,
    /// Longest, in seconds, stale keys are still used when fetching fails.
    pub jwks_max_stale_secs: u64,
    /// Seconds a new socket has to send `init`.
    pub init_timeout_secs: u64,
}

impl AuthConfig {
    /// The Supabase URL without a trailing slash.
    pub fn supabase_base(&self) -> &str {
        self.supabase_url.trim_end_matches('/')
    }

    /// Issuers accepted in `iss`; default `<SUPABASE_URL>/auth/v1`, or the development issuer
    /// when no Supabase project is configured.
    pub fn effective_issuers(&self) -> Vec<String> {
        if !self.issuers.is_empty() {
            return self
                .issuers
                .iter()
                .map(|i| i.trim_end_matches('/').to_string())
                .collect();
        }
        if self.supabase_base().is_empty() {
            vec![DEV_ISSUER.to_string()]
        } else {
            vec![format!("{}/auth/v1", self.supabase_base())]
        }
    }

    /// JWKS address, `None` when the relay has no Supabase project (HS256 only).
    pub fn effective_jwks_url(&self) -> Option<String> {
        if !self.jwks_url.is_empty() {
            Some(self.jwks_url.clone())
        } else if self.supabase_base().is_empty() {
            None
        } else {
            Some(format!(
                "{}/auth/v1/.well-known/jwks.json",
                self.supabase_base()
            ))
        }
    }
}

/// Issuer of tokens minted by `dreamcore-relay dev-token` when no Supabase project is set.
pub const DEV_ISSUER: &str = "dreamcore-relay-dev";

/// `[limits]`: job, socket and rate budgets.
#[derive(Debug, Clone, Deserialize)]
pub struct LimitsConfig {
    /// Jobs one user may run at once.
    pub max_jobs_per_user: usize,
    /// Jobs that may run at once in total.
    pub max_jobs_total: usize,
    /// Seconds a job may run before it is stopped.
    pub job_timeout_secs: u64,
    /// Largest client message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Frames queued per socket before a non-reading client is dropped.
    pub outbound_queue: usize,
    /// Bytes queued per socket before a non-reading client is dropped.
    pub outbound_max_bytes: usize,
    /// Frames written to a socket together are gathered up to this many bytes per write.
    pub ws_write_coalesce_bytes: usize,
    /// What a job keeps for sockets that subscribe mid-job.
    pub job_log_max_bytes: usize,
    /// The answer a job accumulates, stores and sends with `completed`.
    pub job_answer_max_bytes: usize,
    /// Chat history entries sent with `projectSelected` (the most recent ones).
    pub history_max_entries: usize,
    /// Bytes of chat history text sent with `projectSelected`.
    pub history_max_bytes: usize,
    /// Seconds between pings to each socket.
    pub ws_ping_interval_secs: u64,
    /// Messages per minute per socket (ping and viewState excluded); 0 disables.
    pub messages_per_minute: u32,
    /// Generation messages per minute per user; 0 disables.
    pub generations_per_minute: u32,
    /// Browser origins allowed to open a WebSocket; empty allows any.
    pub allowed_origins: Vec<String>,
    /// The most bytes of paths one listing of a project's files may hold (downloads).
    pub file_list_max_bytes: usize,
}

/// `[cli]`: the local Claude CLI backend.
#[derive(Debug, Clone, Deserialize)]
pub struct CliConfig {
    /// Path or name of the Claude CLI binary.
    pub claude_bin: String,
    /// Account the CLI runs as.
    pub user: String,
    /// Model the CLI uses for generation.
    pub model: String,
    /// Seconds a CLI run may take.
    pub timeout_secs: u64,
    /// Seconds between asking the CLI to stop and killing it.
    pub kill_grace_secs: u64,
    /// Folder of skill files given to the CLI.
    pub skills_dir: PathBuf,
    /// Longest CLI output line kept, in bytes.
    pub output_line_cap: usize,
    /// Names of relay environment variables handed to the CLI; nothing else is inherited.
    pub env_passthrough: Vec<String>,
}

/// `[prompt]`: the generation prompt template.
#[derive(Debug, Clone, Deserialize)]
pub struct PromptConfig {
    /// Path of the generation prompt template.
    pub template: PathBuf,
}

/// The pre-job pipeline: intent, chat answers, skills, the style gate, prewarm.
#[derive(Debug, Clone, Deserialize)]
pub struct PipelineConfig {
    /// Model of the local CLI's short questions (`claude -p --model <this>`).
    pub small_model: String,
    /// Total time of one intent question (Modal `detect_intent` or the local CLI).
    pub intent_timeout_secs: u64,
    /// Total time of one chat answer, in seconds.
    pub chat_timeout_secs: u64,
    /// Total time of one skills question, in seconds.
    pub skills_timeout_secs: u64,
    /// Modal `get_file` / `apply_files` of the style files.
    pub file_timeout_secs: u64,
    /// Total time of one prewarm call, in seconds.
    pub prewarm_timeout_secs: u64,
    /// A user is prewarmed at most once in this window.
    pub prewarm_dedup_secs: u64,
    /// How long an open style question is remembered per socket.
    pub style_pending_ttl_secs: u64,
    /// Largest project file the pipeline reads (STYLE.md, SPEC.md, index.html).
    pub max_file_bytes: usize,
    /// Longest chat answer kept, in characters.
    pub max_answer_chars: usize,
    /// Path of the pipeline's prompt texts.
    pub prompts: PathBuf,
    /// Path of the style catalog.
    pub styles: PathBuf,
}

/// `[database]`: PostgreSQL (Supabase) URL and pool size; an empty URL selects SQLite.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    /// Database URL; empty selects SQLite.
    pub url: Secret,
    /// Most database connections kept open.
    pub pool_size: usize,
    /// Prepare each statement once per connection and keep it. Off by default: a
    /// transaction-mode pooler (Supavisor on port 6543) does not keep prepared statements.
    pub prepared_statements: bool,
}

/// `[admin]`: the bearer token of the admin routes; empty turns them off.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminConfig {
    /// Bearer token of the admin routes; empty turns them off.
    pub token: Secret,
    /// Wrong tokens a client may present per window before it gets 429; 0 = no limit.
    pub max_failed_attempts: u32,
    /// Seconds over which wrong admin tokens are counted.
    pub failed_attempts_window_secs: u64,
}

/// `[game]`: signed preview URLs.
#[derive(Debug, Clone, Deserialize)]
pub struct GameConfig {
    /// HMAC-SHA256 key of signed preview URLs; empty = a random key per process.
    pub signing_secret: Secret,
}

/// `[legacy]`: the Express server behind the routes the relay does not implement.
#[derive(Debug, Clone, Deserialize)]
pub struct LegacyConfig {
    /// Base URL of the Express server that still answers the `/api/*` routes the relay
    /// does not implement; empty = those routes answer 404.
    pub upstream_url: String,
}

/// `[telemetry]`: OpenTelemetry export.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetryConfig {
    /// Base URL of an OTLP/HTTP collector (`/v1/traces` is appended); empty = no export.
    pub otlp_endpoint: String,
}

/// `[cluster]`: running as one of several replicas (README "Scaling"), and the job leases
/// every mode uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterConfig {
    /// Redis shared by the replicas; empty = a single embedded instance.
    pub redis_url: Secret,
    /// How often the owner renews its jobs' leases and every instance sweeps expired ones.
    pub lease_renew_secs: u64,
    /// How long a lease outlives its last renewal (database time).
    pub lease_ttl_secs: u64,
    /// Most events a job's Redis stream keeps.
    pub stream_max_events: usize,
    /// Most bytes of frames a job's Redis stream keeps.
    pub stream_max_bytes: usize,
    /// How long a job's stream stays after its terminal event.
    pub stream_expire_secs: u64,
    /// Bytes of events waiting to be written to Redis; beyond, events skip Redis (a gap).
    pub publish_queue_bytes: usize,
}

impl ClusterConfig {
    /// How often leases are renewed and expired ones swept.
    pub fn lease_renew(&self) -> Duration {
        Duration::from_secs(self.lease_renew_secs)
    }

    /// How long a lease outlives its last renewal.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }
}

fn de_backend_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BackendMode, D::Error> {
    let raw = String::deserialize(d)?;
    BackendMode::parse_use_modal(&raw).ok_or_else(|| {
        serde::de::Error::custom(format!("expected true, false or auto, got {raw:?}"))
    })
}
