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
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub public_dir: PathBuf,
    pub drain_timeout_secs: u64,
    pub log_format: LogFormat,
    /// Start even with secrets shorter than the minimums (development only).
    pub allow_weak_secrets: bool,
    /// Accept development tokens although `host` is not a loopback address.
    pub allow_dev_tokens_on_public_bind: bool,
}

/// `[backend]`: which backend new jobs use, and when `auto` falls back to local.
#[derive(Debug, Clone, Deserialize)]
pub struct BackendConfig {
    #[serde(deserialize_with = "de_backend_mode")]
    pub use_modal: BackendMode,
    pub auto_failure_threshold: u32,
    pub auto_failure_window_secs: u64,
    pub auto_probe_interval_secs: u64,
}

/// `[modal]`: the Modal endpoints, their shared secret and timeouts.
#[derive(Debug, Clone, Deserialize)]
pub struct ModalConfig {
    pub endpoint: String,
    pub secret: Secret,
    pub connect_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub get_file_endpoint: String,
    pub list_files_endpoint: String,
    pub apply_files_endpoint: String,
    pub prewarm_endpoint: String,
}

impl ModalConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
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
    pub supabase_url: String,
    pub jwt_secret: Secret,
    pub jwt_secret_encoding: SecretEncoding,
    pub issuers: Vec<String>,
    pub jwks_url: String,
    pub leeway_secs: u64,
    pub jwks_ttl_secs: u64,
    pub jwks_refetch_cooldown_secs: u64,
    pub jwks_fetch_timeout_secs: u64,
    pub jwks_max_stale_secs: u64,
    pub init_timeout_secs: u64,
}

impl AuthConfig {
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
    pub max_jobs_per_user: usize,
    pub max_jobs_total: usize,
    pub job_timeout_secs: u64,
    pub max_message_bytes: usize,
    pub outbound_queue: usize,
    pub ws_ping_interval_secs: u64,
    /// Messages per minute per socket (ping and viewState excluded); 0 disables.
    pub messages_per_minute: u32,
    /// Generation messages per minute per user; 0 disables.
    pub generations_per_minute: u32,
    /// Browser origins allowed to open a WebSocket; empty allows any.
    pub allowed_origins: Vec<String>,
}

/// `[cli]`: the local Claude CLI backend.
#[derive(Debug, Clone, Deserialize)]
pub struct CliConfig {
    pub claude_bin: String,
    pub user: String,
    pub model: String,
    pub timeout_secs: u64,
    pub kill_grace_secs: u64,
    pub skills_dir: PathBuf,
    pub output_line_cap: usize,
    /// Names of relay environment variables handed to the CLI; nothing else is inherited.
    pub env_passthrough: Vec<String>,
}

/// `[prompt]`: the generation prompt template.
#[derive(Debug, Clone, Deserialize)]
pub struct PromptConfig {
    pub template: PathBuf,
}

/// `[database]`: PostgreSQL (Supabase) URL and pool size; an empty URL selects SQLite.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub pool_size: usize,
}

/// `[admin]`: the bearer token of the admin routes; empty turns them off.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminConfig {
    pub token: Secret,
    /// Wrong tokens a client may present per window before it gets 429; 0 = no limit.
    pub max_failed_attempts: u32,
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
    pub fn lease_renew(&self) -> Duration {
        Duration::from_secs(self.lease_renew_secs)
    }

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
