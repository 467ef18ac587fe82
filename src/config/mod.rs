//! Configuration: the embedded `config/default.toml`, an optional file named by
//! `RELAY_CONFIG`, then environment variables (the Express names where they exist).
//! A bad value stops start-up with a message naming the offending key.

mod env_keys;
mod http;
mod provenance;
mod secret;
mod sections;
mod security;
mod sources;

use std::time::Duration;

use serde::Deserialize;

pub use env_keys::env_keys;
pub use http::{parse_network, HttpConfig, UpstreamPool};
pub use provenance::{explain, render, Origin, Setting};
pub use secret::{Secret, SecretEncoding};
pub use sections::{
    AdminConfig, AuthConfig, BackendConfig, BackendMode, CliConfig, ClusterConfig, DatabaseConfig,
    GameConfig, LegacyConfig, LimitsConfig, LogFormat, ModalConfig, PipelineConfig, PromptConfig,
    ServerConfig, TelemetryConfig, DEV_ISSUER,
};

/// Why the configuration cannot be loaded; the message names the offending key.
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

/// The relay's whole configuration, one field per section.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Listener, data and static file settings.
    pub server: ServerConfig,
    /// Backend choice and fallback settings.
    pub backend: BackendConfig,
    /// Modal endpoints and timeouts.
    pub modal: ModalConfig,
    /// Token verification settings.
    pub auth: AuthConfig,
    /// Job, socket and rate limits.
    pub limits: LimitsConfig,
    /// Local Claude CLI settings.
    pub cli: CliConfig,
    /// The generation prompt template.
    pub prompt: PromptConfig,
    /// Intent, chat, skills and style pipeline settings.
    pub pipeline: PipelineConfig,
    /// Database connection settings.
    pub database: DatabaseConfig,
    /// Admin route settings.
    pub admin: AdminConfig,
    /// Game-related settings.
    pub game: GameConfig,
    /// Legacy HTTP route settings.
    pub legacy: LegacyConfig,
    /// HTTP server timeouts.
    pub http: HttpConfig,
    /// Tracing and telemetry settings.
    pub telemetry: TelemetryConfig,
    /// Replicas, the job bus and job leases.
    pub cluster: ClusterConfig,
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
        let table = sources::layered_table(file, &env)?;
        let config: Config = table
            .try_into()
            .map_err(|e| sources::blame::<Config>(file, &env, &e))?;
        config.validate()?;
        security::refuse_weak_secrets(&config)?;
        security::refuse_public_dev_tokens(&config)?;
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
        if self.modal.file_timeout_secs == 0 {
            return Err(invalid("MODAL_FILE_TIMEOUT_SECS", "must be at least 1"));
        }
        if self.limits.file_list_max_bytes < 1024 {
            return Err(invalid(
                "PROJECT_FILE_LIST_MAX_BYTES",
                "must be at least 1024",
            ));
        }
        if self.limits.outbound_queue < 8 {
            return Err(invalid("WS_OUTBOUND_QUEUE", "must be at least 8"));
        }
        if self.limits.max_message_bytes < 1024 {
            return Err(invalid("WS_MAX_MESSAGE_BYTES", "must be at least 1024"));
        }
        if self.limits.job_log_max_bytes < 4096 {
            return Err(invalid("JOB_LOG_MAX_BYTES", "must be at least 4096"));
        }
        // A late joiner's replay is one queued batch: it must fit with room to spare.
        if self.limits.outbound_max_bytes < 2 * self.limits.job_log_max_bytes {
            return Err(invalid(
                "WS_OUTBOUND_MAX_BYTES",
                "must be at least twice JOB_LOG_MAX_BYTES",
            ));
        }
        if self.limits.job_answer_max_bytes < 1024 {
            return Err(invalid("JOB_ANSWER_MAX_BYTES", "must be at least 1024"));
        }
        if self.limits.history_max_entries == 0 {
            return Err(invalid("HISTORY_MAX_ENTRIES", "must be at least 1"));
        }
        if self.limits.history_max_bytes < 1024 {
            return Err(invalid("HISTORY_MAX_BYTES", "must be at least 1024"));
        }
        if !self.legacy.upstream_url.is_empty()
            && !reqwest::Url::parse(&self.legacy.upstream_url)
                .is_ok_and(|url| matches!(url.scheme(), "http" | "https"))
        {
            return Err(invalid("LEGACY_UPSTREAM_URL", "not a valid http(s) URL"));
        }
        if self.http.header_read_timeout_secs == 0 {
            return Err(invalid(
                "HTTP_HEADER_READ_TIMEOUT_SECS",
                "must be at least 1",
            ));
        }
        if self.http.keepalive_timeout_secs == 0 {
            return Err(invalid("HTTP_KEEPALIVE_TIMEOUT_SECS", "must be at least 1"));
        }
        if self.http.upstream_pool_idle_secs == 0 {
            return Err(invalid(
                "HTTP_UPSTREAM_POOL_IDLE_SECS",
                "must be at least 1",
            ));
        }
        if self.http.max_connections == 0 {
            return Err(invalid("HTTP_MAX_CONNECTIONS", "must be at least 1"));
        }
        if self.admin.failed_attempts_window_secs == 0 {
            return Err(invalid(
                "ADMIN_FAILED_ATTEMPTS_WINDOW_SECS",
                "must be at least 1",
            ));
        }
        if !self.server.admin_listen.is_empty()
            && self
                .server
                .admin_listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(invalid(
                "ADMIN_LISTEN",
                "expected an address and port such as 127.0.0.1:9090",
            ));
        }
        if !self.telemetry.otlp_endpoint.is_empty()
            && !reqwest::Url::parse(&self.telemetry.otlp_endpoint)
                .is_ok_and(|url| matches!(url.scheme(), "http" | "https"))
        {
            return Err(invalid(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "not a valid http(s) URL",
            ));
        }
        if self.modal.idle_timeout_secs == 0 {
            return Err(invalid("MODAL_IDLE_TIMEOUT_SECS", "must be at least 1"));
        }
        let p = &self.pipeline;
        for (key, value) in [
            ("PIPELINE_INTENT_TIMEOUT_SECS", p.intent_timeout_secs),
            ("PIPELINE_CHAT_TIMEOUT_SECS", p.chat_timeout_secs),
            ("PIPELINE_SKILLS_TIMEOUT_SECS", p.skills_timeout_secs),
            ("PIPELINE_FILE_TIMEOUT_SECS", p.file_timeout_secs),
            ("PREWARM_TIMEOUT_SECS", p.prewarm_timeout_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if p.small_model.trim().is_empty() {
            return Err(invalid("PIPELINE_SMALL_MODEL", "must name a model"));
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

    /// The longest a generation job may run before it is stopped.
    pub fn job_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.job_timeout_secs)
    }

    /// The folder of static files to serve, if one is configured.
    pub fn public_dir(&self) -> Option<&std::path::Path> {
        let dir = self.server.public_dir.as_path();
        (!dir.as_os_str().is_empty()).then_some(dir)
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
            ("MODAL_INTERNAL_SECRET", "s3cret-modal-internal"),
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
        assert!(!format!("{config:?}").contains("s3cret-modal-internal"));
    }

    #[test]
    fn per_endpoint_override_wins() {
        let config = load(&[
            ("USE_MODAL", "true"),
            (
                "MODAL_ENDPOINT",
                "https://x--dreamcore-generate-game.modal.run",
            ),
            ("MODAL_INTERNAL_SECRET", "modal-internal-secret"),
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

    #[test]
    fn memory_budgets_are_settings_checked_against_each_other() {
        let config = load(&[
            ("JOB_LOG_MAX_BYTES", "65536"),
            ("HISTORY_MAX_BYTES", "2048"),
        ])
        .expect("config");
        assert_eq!(config.limits.job_log_max_bytes, 65536);
        assert_eq!(config.limits.history_max_bytes, 2048);
        for (key, value) in [
            ("JOB_LOG_MAX_BYTES", "100"),
            ("JOB_ANSWER_MAX_BYTES", "10"),
            ("HISTORY_MAX_ENTRIES", "0"),
            ("HISTORY_MAX_BYTES", "1"),
        ] {
            let err = load(&[(key, value)]).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{key}:")), "{err}");
        }
        // A replay batch must fit the outbound queue of the socket that receives it.
        let err = load(&[("JOB_LOG_MAX_BYTES", "4194304")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("WS_OUTBOUND_MAX_BYTES:"), "{err}");
    }
}
