//! The HS256 key the relay verifies with, and minting of tokens shaped like GoTrue's (for the
//! `dev-token` subcommand and tests).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use uuid::Uuid;

use crate::config::{AuthConfig, SecretEncoding};

/// File name of the development secret inside the data directory.
pub const DEV_SECRET_FILE: &str = "dev-jwt-secret";

/// Where the HS256 key the relay verifies with comes from.
pub enum Hs256Source {
    /// SUPABASE_JWT_SECRET, decoded (raw or base64 per config).
    Configured(Vec<u8>),
    /// A real project without its secret: asymmetric keys from the JWKS only.
    JwksOnly,
    /// Neither a secret nor SUPABASE_URL: a development secret the relay makes up once.
    Development,
}

/// Decide where the HS256 key comes from, decoding a configured one.
pub fn hs256_source(config: &AuthConfig) -> io::Result<Hs256Source> {
    if !config.jwt_secret.is_empty() {
        let text = config.jwt_secret.expose();
        let key = match config.jwt_secret_encoding {
            SecretEncoding::Raw => text.as_bytes().to_vec(),
            SecretEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "SUPABASE_JWT_SECRET is not valid base64",
                    )
                })?,
        };
        return Ok(Hs256Source::Configured(key));
    }
    if !config.supabase_base().is_empty() {
        return Ok(Hs256Source::JwksOnly);
    }
    Ok(Hs256Source::Development)
}

/// 32 random bytes as hex: a fresh development secret or signing key.
pub fn random_hex_secret() -> io::Result<String> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(hex::encode(random))
}

/// Resolve the HS256 key for a relay on its own: SUPABASE_JWT_SECRET (raw or base64 per
/// config); when neither a secret nor SUPABASE_URL is configured, a development secret stored
/// in `<data_dir>/dev-jwt-secret` (created with 32 random bytes hex, file mode 0600, on first
/// use) so a fresh checkout works. Returns (key bytes or None, a flag telling whether it is
/// the dev secret). Replicas sharing a store keep the development secret there instead.
///
/// The dev secret's key bytes are the hex *text*, the way Supabase uses its legacy JWT secret,
/// so the file's content also works as `SUPABASE_JWT_SECRET` with raw encoding.
pub fn resolve_hs256_secret(
    config: &AuthConfig,
    data_dir: &Path,
) -> io::Result<(Option<Vec<u8>>, bool)> {
    Ok(match hs256_source(config)? {
        Hs256Source::Configured(key) => (Some(key), false),
        Hs256Source::JwksOnly => (None, false),
        Hs256Source::Development => (Some(dev_secret(data_dir)?), true),
    })
}

fn dev_secret(data_dir: &Path) -> io::Result<Vec<u8>> {
    let path = data_dir.join(DEV_SECRET_FILE);
    std::fs::create_dir_all(data_dir)?;
    let secret = random_hex_secret()?;
    // `create_new` makes two racing first starts agree: the loser reads the winner's file.
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(format!("{secret}\n").as_bytes())?;
            file.sync_all()?;
            return Ok(secret.into_bytes());
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let secret = std::fs::read_to_string(&path)?.trim().to_string();
    if secret.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is empty; delete it to generate a new one",
                path.display()
            ),
        ));
    }
    Ok(secret.into_bytes())
}

/// Mint an HS256 access token with the exact GoTrue claim layout (iss, aud "authenticated",
/// exp, iat, sub, email, phone "", role "authenticated", aal "aal1", session_id, is_anonymous false,
/// app_metadata, user_metadata). Used by the `dev-token` subcommand and by tests.
pub fn mint_hs256(
    secret: &[u8],
    issuer: &str,
    user_id: Uuid,
    email: &str,
    ttl_secs: i64,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": issuer,
        "sub": user_id,
        "aud": "authenticated",
        "exp": now.saturating_add(ttl_secs),
        "iat": now,
        "email": email,
        "phone": "",
        "app_metadata": { "provider": "email", "providers": ["email"] },
        "user_metadata": {
            "email": email,
            "email_verified": true,
            "phone_verified": false,
            "sub": user_id,
        },
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{ "method": "password", "timestamp": now }],
        "session_id": Uuid::new_v4(),
        "is_anonymous": false,
    });
    // HMAC over serialised JSON has no failure mode; this is not a request path.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing of JSON claims cannot fail")
}
