//! Start-up refusals for settings that would leave the relay open: secrets too short to
//! resist guessing, and development tokens accepted on a non-loopback address. Each has an
//! explicit override for development (`ALLOW_WEAK_SECRETS`, `ALLOW_DEV_TOKENS_ON_PUBLIC_BIND`).

use std::net::IpAddr;

use super::{invalid, Config, ConfigError, SecretEncoding};

/// HMAC keys (`SUPABASE_JWT_SECRET` once decoded, `GAME_SIGNING_SECRET`): SHA-256's size.
const MIN_KEY_BYTES: usize = 32;
/// Shared bearer values compared in constant time (`ADMIN_TOKEN`, `MODAL_INTERNAL_SECRET`).
const MIN_TOKEN_CHARS: usize = 16;

/// Every secret that is set is long enough, unless `ALLOW_WEAK_SECRETS=true`. An empty one
/// is not weak: it turns its feature off (or, for the signing key, picks a random one).
pub(super) fn refuse_weak_secrets(config: &Config) -> Result<(), ConfigError> {
    if config.server.allow_weak_secrets {
        return Ok(());
    }
    let jwt = &config.auth.jwt_secret;
    if !jwt.is_empty() {
        let bytes = match config.auth.jwt_secret_encoding {
            SecretEncoding::Raw => jwt.expose().len(),
            SecretEncoding::Base64 => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(jwt.expose().trim())
                    .map_err(|_| invalid("SUPABASE_JWT_SECRET", "not valid base64"))?
                    .len()
            }
        };
        if bytes < MIN_KEY_BYTES {
            return Err(weak("SUPABASE_JWT_SECRET", bytes, MIN_KEY_BYTES, "bytes"));
        }
    }
    let game = config.game.signing_secret.expose();
    if !game.is_empty() && game.len() < MIN_KEY_BYTES {
        return Err(weak(
            "GAME_SIGNING_SECRET",
            game.len(),
            MIN_KEY_BYTES,
            "bytes",
        ));
    }
    for (key, value) in [
        ("ADMIN_TOKEN", config.admin.token.expose()),
        ("MODAL_INTERNAL_SECRET", config.modal.secret.expose()),
    ] {
        let chars = value.chars().count();
        if chars > 0 && chars < MIN_TOKEN_CHARS {
            return Err(weak(key, chars, MIN_TOKEN_CHARS, "characters"));
        }
    }
    Ok(())
}

fn weak(key: &str, got: usize, min: usize, unit: &str) -> ConfigError {
    invalid(
        key,
        format!(
            "{got} {unit} is too short to resist guessing (at least {min}); \
             set ALLOW_WEAK_SECRETS=true to start anyway in development"
        ),
    )
}

/// Without `SUPABASE_URL` and `SUPABASE_JWT_SECRET` the relay accepts development tokens
/// (signed with a key in `DATA_DIR`); that is only for a machine's own loopback.
pub(super) fn refuse_public_dev_tokens(config: &Config) -> Result<(), ConfigError> {
    let dev_tokens = config.auth.supabase_url.is_empty() && config.auth.jwt_secret.is_empty();
    if !dev_tokens
        || config.server.allow_dev_tokens_on_public_bind
        || is_loopback(&config.server.host)
    {
        return Ok(());
    }
    Err(invalid(
        "HOST",
        format!(
            "{:?} is not a loopback address, and without SUPABASE_URL or SUPABASE_JWT_SECRET \
             the relay would accept development tokens from anyone who can reach it; \
             configure Supabase, bind 127.0.0.1, or set ALLOW_DEV_TOKENS_ON_PUBLIC_BIND=true",
            config.server.host
        ),
    ))
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
