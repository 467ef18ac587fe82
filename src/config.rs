//! Configuration: the embedded `config/default.toml`, an optional file named by
//! `RELAY_CONFIG`, then environment variables (the Express names where they exist).
//! A bad value stops start-up with a message naming the offending key.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

const EMBEDDED_DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("configuration file {path}: {reason}")]
    File { path: String, reason: String },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// A string that never reaches a log line.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"[redacted]\"")
        }
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretEncoding {
    Raw,
    Base64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub public_dir: PathBuf,
    pub drain_timeout_secs: u64,
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BackendConfig {
    #[serde(deserialize_with = "de_backend_mode")]
    pub use_modal: BackendMode,
    pub auto_failure_threshold: u32,
    pub auto_failure_window_secs: u64,
    pub auto_probe_interval_secs: u64,
}

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

#[derive(Debug, Clone, Deserialize)]
pub struct PromptConfig {
    pub template: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub pool_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AdminConfig {
    pub token: Secret,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GameConfig {
    /// HMAC-SHA256 key of signed preview URLs; empty = a random key per process.
    pub signing_secret: Secret,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LegacyConfig {
    /// Base URL of the Express server that still answers the `/api/*` routes the relay
    /// does not implement; empty = those routes answer 404.
    pub upstream_url: String,
}

/// Running as one of several replicas (README "Scaling"), and the job leases every mode uses.
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

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub server: ServerConfig,
    pub backend: BackendConfig,
    pub modal: ModalConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub cli: CliConfig,
    pub prompt: PromptConfig,
    pub database: DatabaseConfig,
    pub admin: AdminConfig,
    pub game: GameConfig,
    pub legacy: LegacyConfig,
    pub cluster: ClusterConfig,
}

fn de_backend_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BackendMode, D::Error> {
    let raw = String::deserialize(d)?;
    BackendMode::parse_use_modal(&raw).ok_or_else(|| {
        serde::de::Error::custom(format!("expected true, false or auto, got {raw:?}"))
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    List,
}

/// Environment variable → configuration key. The first column is what operators set.
const ENV_KEYS: &[(&str, &str, Kind)] = &[
    ("HOST", "server.host", Kind::Str),
    ("PORT", "server.port", Kind::Int),
    ("DATA_DIR", "server.data_dir", Kind::Str),
    ("PUBLIC_DIR", "server.public_dir", Kind::Str),
    ("DRAIN_TIMEOUT_SECS", "server.drain_timeout_secs", Kind::Int),
    ("LOG_FORMAT", "server.log_format", Kind::Str),
    ("USE_MODAL", "backend.use_modal", Kind::Str),
    (
        "AUTO_FAILURE_THRESHOLD",
        "backend.auto_failure_threshold",
        Kind::Int,
    ),
    (
        "AUTO_FAILURE_WINDOW_SECS",
        "backend.auto_failure_window_secs",
        Kind::Int,
    ),
    (
        "AUTO_PROBE_INTERVAL_SECS",
        "backend.auto_probe_interval_secs",
        Kind::Int,
    ),
    ("MODAL_ENDPOINT", "modal.endpoint", Kind::Str),
    ("MODAL_INTERNAL_SECRET", "modal.secret", Kind::Str),
    (
        "MODAL_CONNECT_TIMEOUT_SECS",
        "modal.connect_timeout_secs",
        Kind::Int,
    ),
    (
        "MODAL_IDLE_TIMEOUT_SECS",
        "modal.idle_timeout_secs",
        Kind::Int,
    ),
    (
        "MODAL_GET_FILE_ENDPOINT",
        "modal.get_file_endpoint",
        Kind::Str,
    ),
    (
        "MODAL_LIST_FILES_ENDPOINT",
        "modal.list_files_endpoint",
        Kind::Str,
    ),
    (
        "MODAL_APPLY_FILES_ENDPOINT",
        "modal.apply_files_endpoint",
        Kind::Str,
    ),
    (
        "MODAL_PREWARM_ENDPOINT",
        "modal.prewarm_endpoint",
        Kind::Str,
    ),
    ("SUPABASE_URL", "auth.supabase_url", Kind::Str),
    ("SUPABASE_JWT_SECRET", "auth.jwt_secret", Kind::Str),
    (
        "SUPABASE_JWT_SECRET_ENCODING",
        "auth.jwt_secret_encoding",
        Kind::Str,
    ),
    ("SUPABASE_JWT_ISSUERS", "auth.issuers", Kind::List),
    ("SUPABASE_JWKS_URL", "auth.jwks_url", Kind::Str),
    ("JWT_LEEWAY_SECS", "auth.leeway_secs", Kind::Int),
    ("JWKS_TTL_SECS", "auth.jwks_ttl_secs", Kind::Int),
    (
        "JWKS_REFETCH_COOLDOWN_SECS",
        "auth.jwks_refetch_cooldown_secs",
        Kind::Int,
    ),
    (
        "JWKS_FETCH_TIMEOUT_SECS",
        "auth.jwks_fetch_timeout_secs",
        Kind::Int,
    ),
    ("JWKS_MAX_STALE_SECS", "auth.jwks_max_stale_secs", Kind::Int),
    ("AUTH_TIMEOUT_SECS", "auth.init_timeout_secs", Kind::Int),
    ("MAX_JOBS_PER_USER", "limits.max_jobs_per_user", Kind::Int),
    ("MAX_JOBS_TOTAL", "limits.max_jobs_total", Kind::Int),
    ("JOB_TIMEOUT_SECS", "limits.job_timeout_secs", Kind::Int),
    (
        "WS_MAX_MESSAGE_BYTES",
        "limits.max_message_bytes",
        Kind::Int,
    ),
    ("WS_OUTBOUND_QUEUE", "limits.outbound_queue", Kind::Int),
    (
        "WS_PING_INTERVAL_SECS",
        "limits.ws_ping_interval_secs",
        Kind::Int,
    ),
    (
        "RATE_LIMIT_MESSAGES_PER_MIN",
        "limits.messages_per_minute",
        Kind::Int,
    ),
    (
        "RATE_LIMIT_GENERATIONS_PER_MIN",
        "limits.generations_per_minute",
        Kind::Int,
    ),
    ("WS_ALLOWED_ORIGINS", "limits.allowed_origins", Kind::List),
    ("CLAUDE_BIN", "cli.claude_bin", Kind::Str),
    ("LOCAL_CLI_USER", "cli.user", Kind::Str),
    ("CLAUDE_MODEL", "cli.model", Kind::Str),
    ("CLI_TIMEOUT_SECS", "cli.timeout_secs", Kind::Int),
    ("CLI_KILL_GRACE_SECS", "cli.kill_grace_secs", Kind::Int),
    ("SKILLS_DIR", "cli.skills_dir", Kind::Str),
    ("CLI_OUTPUT_LINE_CAP", "cli.output_line_cap", Kind::Int),
    ("CLI_ENV_PASSTHROUGH", "cli.env_passthrough", Kind::List),
    ("PROMPT_TEMPLATE", "prompt.template", Kind::Str),
    ("DATABASE_URL", "database.url", Kind::Str),
    ("DATABASE_POOL_SIZE", "database.pool_size", Kind::Int),
    ("ADMIN_TOKEN", "admin.token", Kind::Str),
    ("GAME_SIGNING_SECRET", "game.signing_secret", Kind::Str),
    ("LEGACY_UPSTREAM_URL", "legacy.upstream_url", Kind::Str),
    ("REDIS_URL", "cluster.redis_url", Kind::Str),
    ("JOB_LEASE_RENEW_SECS", "cluster.lease_renew_secs", Kind::Int),
    ("JOB_LEASE_TTL_SECS", "cluster.lease_ttl_secs", Kind::Int),
    ("JOB_STREAM_MAX_EVENTS", "cluster.stream_max_events", Kind::Int),
    ("JOB_STREAM_MAX_BYTES", "cluster.stream_max_bytes", Kind::Int),
    ("JOB_STREAM_EXPIRE_SECS", "cluster.stream_expire_secs", Kind::Int),
    (
        "REDIS_PUBLISH_QUEUE_BYTES",
        "cluster.publish_queue_bytes",
        Kind::Int,
    ),
];

/// Names of every environment variable the relay reads (for `.env.example` checks).
pub fn env_keys() -> impl Iterator<Item = &'static str> {
    ENV_KEYS.iter().map(|(env, _, _)| *env)
}

impl Config {
    /// Embedded defaults, then `RELAY_CONFIG` (a TOML file) if set, then the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var("RELAY_CONFIG").ok().filter(|p| !p.is_empty());
        Self::load_from(file.as_deref(), |key| std::env::var(key).ok())
    }

    /// Testable core of [`Config::load`]: `env` answers variable look-ups.
    pub fn load_from(
        file: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            EMBEDDED_DEFAULTS
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::File {
                    path: "<embedded>".into(),
                    reason: e.to_string(),
                })?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.into(),
                reason: e.to_string(),
            })?;
            let overlay: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::File {
                        path: path.into(),
                        reason: e.message().to_string(),
                    })?;
            merge(&mut table, overlay);
        }
        for (env_key, path, kind) in ENV_KEYS {
            // An empty list means "not set": copying .env.example must not wipe a default list.
            let raw =
                env(env_key).filter(|raw| !(matches!(kind, Kind::List) && raw.trim().is_empty()));
            if let Some(raw) = raw {
                let value = match kind {
                    Kind::Str => toml::Value::String(raw.trim().to_string()),
                    Kind::Int => toml::Value::Integer(
                        raw.trim()
                            .parse::<i64>()
                            .ok()
                            .filter(|n| *n >= 0)
                            .ok_or_else(|| {
                                invalid(env_key, format!("expected a whole number, got {raw:?}"))
                            })?,
                    ),
                    Kind::List => toml::Value::Array(
                        raw.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(|s| toml::Value::String(s.to_string()))
                            .collect(),
                    ),
                };
                if *env_key == "PORT" && raw.trim().parse::<u16>().is_err() {
                    return Err(invalid(
                        env_key,
                        format!("expected a port number, got {raw:?}"),
                    ));
                }
                if *env_key == "USE_MODAL" && BackendMode::parse_use_modal(&raw).is_none() {
                    return Err(invalid(
                        env_key,
                        format!("expected true, false or auto, got {raw:?}"),
                    ));
                }
                set_path(&mut table, path, value);
            }
        }
        let config: Config = table.try_into().map_err(|e: toml::de::Error| {
            // Name the environment variable behind a key when there is one.
            let message = e.message().to_string();
            ConfigError::Invalid {
                key: "configuration".into(),
                reason: message,
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.backend.use_modal != BackendMode::Local {
            if self.modal.endpoint.is_empty() {
                return Err(invalid(
                    "MODAL_ENDPOINT",
                    "required when USE_MODAL is true or auto",
                ));
            }
            if reqwest::Url::parse(&self.modal.endpoint).is_err() {
                return Err(invalid("MODAL_ENDPOINT", "not a valid URL"));
            }
            if self.modal.secret.is_empty() {
                return Err(invalid(
                    "MODAL_INTERNAL_SECRET",
                    "required when USE_MODAL is true or auto",
                ));
            }
        }
        if !self.auth.supabase_url.is_empty()
            && reqwest::Url::parse(&self.auth.supabase_url).is_err()
        {
            return Err(invalid("SUPABASE_URL", "not a valid URL"));
        }
        if self.auth.jwt_secret_encoding == SecretEncoding::Base64
            && !self.auth.jwt_secret.is_empty()
        {
            use base64::Engine;
            if base64::engine::general_purpose::STANDARD
                .decode(self.auth.jwt_secret.expose())
                .is_err()
            {
                return Err(invalid("SUPABASE_JWT_SECRET", "not valid base64"));
            }
        }
        if self.limits.max_jobs_per_user == 0 {
            return Err(invalid("MAX_JOBS_PER_USER", "must be at least 1"));
        }
        if self.limits.max_jobs_total == 0 {
            return Err(invalid("MAX_JOBS_TOTAL", "must be at least 1"));
        }
        if self.limits.job_timeout_secs == 0 {
            return Err(invalid("JOB_TIMEOUT_SECS", "must be at least 1"));
        }
        if self.limits.outbound_queue < 8 {
            return Err(invalid("WS_OUTBOUND_QUEUE", "must be at least 8"));
        }
        if self.limits.max_message_bytes < 1024 {
            return Err(invalid("WS_MAX_MESSAGE_BYTES", "must be at least 1024"));
        }
        if !self.legacy.upstream_url.is_empty()
            && !reqwest::Url::parse(&self.legacy.upstream_url)
                .is_ok_and(|url| matches!(url.scheme(), "http" | "https"))
        {
            return Err(invalid("LEGACY_UPSTREAM_URL", "not a valid http(s) URL"));
        }
        if self.modal.idle_timeout_secs == 0 {
            return Err(invalid("MODAL_IDLE_TIMEOUT_SECS", "must be at least 1"));
        }
        if self.cluster.lease_renew_secs == 0 {
            return Err(invalid("JOB_LEASE_RENEW_SECS", "must be at least 1"));
        }
        if self.cluster.lease_ttl_secs < 2 * self.cluster.lease_renew_secs {
            return Err(invalid(
                "JOB_LEASE_TTL_SECS",
                "must be at least twice JOB_LEASE_RENEW_SECS",
            ));
        }
        if !self.cluster.redis_url.is_empty()
            && redis::Client::open(self.cluster.redis_url.expose()).is_err()
        {
            return Err(invalid("REDIS_URL", "not a valid redis:// URL"));
        }
        if self.cluster.stream_max_events == 0 || self.cluster.stream_max_bytes < 1024 {
            return Err(invalid(
                "JOB_STREAM_MAX_EVENTS",
                "streams need at least 1 event and 1024 bytes (JOB_STREAM_MAX_BYTES)",
            ));
        }
        Ok(())
    }

    pub fn job_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.job_timeout_secs)
    }

    pub fn public_dir(&self) -> Option<&std::path::Path> {
        let dir = self.server.public_dir.as_path();
        (!dir.as_os_str().is_empty()).then_some(dir)
    }
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts = path.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_string(), value);
            return;
        }
        current = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("configuration sections are tables");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_from(None, |k| map.get(k).cloned())
    }

    #[test]
    fn embedded_defaults_load() {
        let config = load(&[]).unwrap();
        assert_eq!(config.server.port, 3000);
        assert_eq!(config.backend.use_modal, BackendMode::Local);
        assert_eq!(config.limits.max_jobs_total, 50);
        assert_eq!(
            config.auth.effective_issuers(),
            vec![DEV_ISSUER.to_string()]
        );
        assert!(config.auth.effective_jwks_url().is_none());
    }

    #[test]
    fn env_overrides_apply() {
        let config = load(&[
            ("PORT", "8080"),
            ("USE_MODAL", "true"),
            (
                "MODAL_ENDPOINT",
                "https://ws--dreamcore-generate-game.modal.run",
            ),
            ("MODAL_INTERNAL_SECRET", "s3cret"),
            ("SUPABASE_URL", "https://abc.supabase.co/"),
        ])
        .unwrap();
        assert_eq!(config.server.port, 8080);
        assert_eq!(config.backend.use_modal, BackendMode::Modal);
        assert_eq!(
            config.modal.endpoint_for("list_files"),
            "https://ws--dreamcore-list-files.modal.run"
        );
        assert_eq!(
            config.auth.effective_issuers(),
            vec!["https://abc.supabase.co/auth/v1".to_string()]
        );
        assert_eq!(
            config.auth.effective_jwks_url().unwrap(),
            "https://abc.supabase.co/auth/v1/.well-known/jwks.json"
        );
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn per_endpoint_override_wins() {
        let config = load(&[
            ("USE_MODAL", "true"),
            (
                "MODAL_ENDPOINT",
                "https://x--dreamcore-generate-game.modal.run",
            ),
            ("MODAL_INTERNAL_SECRET", "s"),
            ("MODAL_LIST_FILES_ENDPOINT", "http://127.0.0.1:9/list"),
        ])
        .unwrap();
        assert_eq!(
            config.modal.endpoint_for("list_files"),
            "http://127.0.0.1:9/list"
        );
        assert_eq!(
            config.modal.endpoint_for("get_file"),
            "https://x--dreamcore-get-file.modal.run"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = load(&[("PORT", "eighty")]).unwrap_err().to_string();
        assert!(err.starts_with("PORT:"), "{err}");
        let err = load(&[("USE_MODAL", "yes")]).unwrap_err().to_string();
        assert!(err.starts_with("USE_MODAL:"), "{err}");
        let err = load(&[("USE_MODAL", "true")]).unwrap_err().to_string();
        assert!(err.starts_with("MODAL_ENDPOINT:"), "{err}");
        let err = load(&[
            ("USE_MODAL", "true"),
            ("MODAL_ENDPOINT", "http://127.0.0.1:1/generate_game"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("MODAL_INTERNAL_SECRET:"), "{err}");
        let err = load(&[("MAX_JOBS_TOTAL", "0")]).unwrap_err().to_string();
        assert!(err.starts_with("MAX_JOBS_TOTAL:"), "{err}");
        let err = load(&[("PORT", "70000")]).unwrap_err().to_string();
        assert!(err.starts_with("PORT:"), "{err}");
        let err = load(&[("LEGACY_UPSTREAM_URL", "ftp://old.example")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("LEGACY_UPSTREAM_URL:"), "{err}");
    }
}

#[cfg(test)]
mod env_example {
    /// Every variable the relay reads is documented in `.env.example`.
    #[test]
    fn env_example_lists_every_key() {
        let example = include_str!("../.env.example");
        for key in super::env_keys() {
            assert!(
                example.lines().any(|l| l.starts_with(&format!("{key}="))),
                "{key} is missing from .env.example"
            );
        }
    }

    /// `.env.example` copied to `.env` as it is must give exactly the embedded defaults.
    #[test]
    fn env_example_as_is_equals_the_defaults() {
        let vars: std::collections::HashMap<String, String> =
            dotenvy::from_read_iter(include_str!("../.env.example").as_bytes())
                .map(|item| item.expect("valid .env syntax"))
                .collect();
        let from_example = super::Config::load_from(None, |k| vars.get(k).cloned()).expect("loads");
        let defaults = super::Config::load_from(None, |_| None).expect("loads");
        assert_eq!(format!("{from_example:?}"), format!("{defaults:?}"));
    }
}
