//! The environment variables the relay reads, each with the configuration key it sets: the
//! Express names where they exist, so an existing `.env` keeps working.

/// How an environment variable's text becomes a TOML value.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Str,
    Int,
    Bool,
    List,
}

/// Environment variable → configuration key. The first column is what operators set.
pub(super) const ENV_KEYS: &[(&str, &str, Kind)] = &[
    ("HOST", "server.host", Kind::Str),
    ("PORT", "server.port", Kind::Int),
    ("DATA_DIR", "server.data_dir", Kind::Str),
    ("PUBLIC_DIR", "server.public_dir", Kind::Str),
    ("DRAIN_TIMEOUT_SECS", "server.drain_timeout_secs", Kind::Int),
    ("LOG_FORMAT", "server.log_format", Kind::Str),
    (
        "ALLOW_WEAK_SECRETS",
        "server.allow_weak_secrets",
        Kind::Bool,
    ),
    ("ADMIN_LISTEN", "server.admin_listen", Kind::Str),
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
        "MODAL_FILE_TIMEOUT_SECS",
        "modal.file_timeout_secs",
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
    (
        "ALLOW_DEV_TOKENS_ON_PUBLIC_BIND",
        "server.allow_dev_tokens_on_public_bind",
        Kind::Bool,
    ),
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
        "WS_OUTBOUND_MAX_BYTES",
        "limits.outbound_max_bytes",
        Kind::Int,
    ),
    (
        "WS_WRITE_COALESCE_BYTES",
        "limits.ws_write_coalesce_bytes",
        Kind::Int,
    ),
    ("JOB_LOG_MAX_BYTES", "limits.job_log_max_bytes", Kind::Int),
    (
        "JOB_ANSWER_MAX_BYTES",
        "limits.job_answer_max_bytes",
        Kind::Int,
    ),
    (
        "HISTORY_MAX_ENTRIES",
        "limits.history_max_entries",
        Kind::Int,
    ),
    ("HISTORY_MAX_BYTES", "limits.history_max_bytes", Kind::Int),
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
    (
        "PROJECT_FILE_LIST_MAX_BYTES",
        "limits.file_list_max_bytes",
        Kind::Int,
    ),
    ("CLAUDE_BIN", "cli.claude_bin", Kind::Str),
    ("LOCAL_CLI_USER", "cli.user", Kind::Str),
    ("CLAUDE_MODEL", "cli.model", Kind::Str),
    ("CLI_TIMEOUT_SECS", "cli.timeout_secs", Kind::Int),
    ("CLI_KILL_GRACE_SECS", "cli.kill_grace_secs", Kind::Int),
    ("SKILLS_DIR", "cli.skills_dir", Kind::Str),
    ("CLI_OUTPUT_LINE_CAP", "cli.output_line_cap", Kind::Int),
    ("CLI_ENV_PASSTHROUGH", "cli.env_passthrough", Kind::List),
    ("PROMPT_TEMPLATE", "prompt.template", Kind::Str),
    ("PIPELINE_SMALL_MODEL", "pipeline.small_model", Kind::Str),
    (
        "PIPELINE_INTENT_TIMEOUT_SECS",
        "pipeline.intent_timeout_secs",
        Kind::Int,
    ),
    (
        "PIPELINE_CHAT_TIMEOUT_SECS",
        "pipeline.chat_timeout_secs",
        Kind::Int,
    ),
    (
        "PIPELINE_SKILLS_TIMEOUT_SECS",
        "pipeline.skills_timeout_secs",
        Kind::Int,
    ),
    (
        "PIPELINE_FILE_TIMEOUT_SECS",
        "pipeline.file_timeout_secs",
        Kind::Int,
    ),
    (
        "PREWARM_TIMEOUT_SECS",
        "pipeline.prewarm_timeout_secs",
        Kind::Int,
    ),
    (
        "PREWARM_DEDUP_SECS",
        "pipeline.prewarm_dedup_secs",
        Kind::Int,
    ),
    (
        "STYLE_PENDING_TTL_SECS",
        "pipeline.style_pending_ttl_secs",
        Kind::Int,
    ),
    (
        "PIPELINE_MAX_FILE_BYTES",
        "pipeline.max_file_bytes",
        Kind::Int,
    ),
    (
        "PIPELINE_MAX_ANSWER_CHARS",
        "pipeline.max_answer_chars",
        Kind::Int,
    ),
    ("PIPELINE_PROMPTS", "pipeline.prompts", Kind::Str),
    ("STYLE_PRESETS", "pipeline.styles", Kind::Str),
    ("DATABASE_URL", "database.url", Kind::Str),
    ("DATABASE_POOL_SIZE", "database.pool_size", Kind::Int),
    (
        "DATABASE_PREPARED_STATEMENTS",
        "database.prepared_statements",
        Kind::Bool,
    ),
    ("ADMIN_TOKEN", "admin.token", Kind::Str),
    (
        "ADMIN_MAX_FAILED_ATTEMPTS",
        "admin.max_failed_attempts",
        Kind::Int,
    ),
    (
        "ADMIN_FAILED_ATTEMPTS_WINDOW_SECS",
        "admin.failed_attempts_window_secs",
        Kind::Int,
    ),
    ("GAME_SIGNING_SECRET", "game.signing_secret", Kind::Str),
    ("LEGACY_UPSTREAM_URL", "legacy.upstream_url", Kind::Str),
    (
        "HTTP_HEADER_READ_TIMEOUT_SECS",
        "http.header_read_timeout_secs",
        Kind::Int,
    ),
    (
        "HTTP_KEEPALIVE_TIMEOUT_SECS",
        "http.keepalive_timeout_secs",
        Kind::Int,
    ),
    ("HTTP_MAX_CONNECTIONS", "http.max_connections", Kind::Int),
    (
        "HTTP_MAX_CONNECTIONS_PER_CLIENT",
        "http.max_connections_per_client",
        Kind::Int,
    ),
    ("HTTP_FD_RESERVE", "http.fd_reserve", Kind::Int),
    ("TRUSTED_PROXIES", "http.trusted_proxies", Kind::List),
    (
        "HTTP_UPSTREAM_POOL_MAX_IDLE",
        "http.upstream_pool_max_idle",
        Kind::Int,
    ),
    (
        "HTTP_UPSTREAM_POOL_IDLE_SECS",
        "http.upstream_pool_idle_secs",
        Kind::Int,
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "telemetry.otlp_endpoint",
        Kind::Str,
    ),
    ("REDIS_URL", "cluster.redis_url", Kind::Str),
    (
        "JOB_LEASE_RENEW_SECS",
        "cluster.lease_renew_secs",
        Kind::Int,
    ),
    ("JOB_LEASE_TTL_SECS", "cluster.lease_ttl_secs", Kind::Int),
    (
        "JOB_STREAM_MAX_EVENTS",
        "cluster.stream_max_events",
        Kind::Int,
    ),
    (
        "JOB_STREAM_MAX_BYTES",
        "cluster.stream_max_bytes",
        Kind::Int,
    ),
    (
        "JOB_STREAM_EXPIRE_SECS",
        "cluster.stream_expire_secs",
        Kind::Int,
    ),
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

#[cfg(test)]
mod tests {
    /// Every variable the relay reads is documented in `.env.example`.
    #[test]
    fn env_example_lists_every_key() {
        let example = include_str!("../../.env.example");
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
            dotenvy::from_read_iter(include_str!("../../.env.example").as_bytes())
                .map(|item| item.expect("valid .env syntax"))
                .collect();
        let from_example =
            crate::config::Config::load_from(None, |k| vars.get(k).cloned()).expect("loads");
        let defaults = crate::config::Config::load_from(None, |_| None).expect("loads");
        assert_eq!(format!("{from_example:?}"), format!("{defaults:?}"));
    }
}
