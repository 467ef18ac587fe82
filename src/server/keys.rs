//! The keys a relay makes up when none is configured: the development-token secret and the
//! preview-URL signing key. With a store several replicas share (PostgreSQL), the first replica
//! to start stores each key and every other one reads it, so a token or a signed URL made by
//! any replica works on all (README "Scaling"). With the embedded SQLite store the development
//! secret stays in `DATA_DIR` and the signing key belongs to the process.

use std::path::Path;

use super::StartupError;
use crate::auth::{self, Hs256Source};
use crate::config::{Config, Secret};
use crate::store::postgres::PostgresStore;
use crate::store::Store;

/// Names of the keys in the store's `relay_secrets`.
const DEV_SECRET: &str = "dev-jwt-secret";
const GAME_SIGNING_SECRET: &str = "game-signing-secret";

fn no_random(source: std::io::Error) -> StartupError {
    StartupError::Random(source)
}

/// The HS256 verification key (None: JWKS only) and whether it is the development secret.
pub(super) async fn hs256_key(
    config: &Config,
    data_dir: &Path,
    store: &dyn Store,
) -> Result<(Option<Vec<u8>>, bool), StartupError> {
    let data_dir_err = |source| StartupError::DataDir {
        path: data_dir.display().to_string(),
        source,
    };
    match auth::hs256_source(&config.auth).map_err(data_dir_err)? {
        Hs256Source::Configured(key) => Ok((Some(key), false)),
        Hs256Source::JwksOnly => Ok((None, false)),
        Hs256Source::Development if store.is_shared() => {
            let candidate = auth::random_hex_secret().map_err(no_random)?;
            let secret = store.shared_secret(DEV_SECRET, &candidate).await?;
            Ok((Some(secret.into_bytes()), true))
        }
        Hs256Source::Development => {
            auth::resolve_hs256_secret(&config.auth, data_dir).map_err(data_dir_err)
        }
    }
}

/// `GAME_SIGNING_SECRET`, else the key the replicas sharing the store agreed on, else a
/// random key of this process.
pub(super) async fn game_signing_secret(
    config: &Config,
    store: &dyn Store,
) -> Result<Secret, StartupError> {
    if !config.game.signing_secret.is_empty() {
        return Ok(config.game.signing_secret.clone());
    }
    let candidate = auth::random_hex_secret().map_err(no_random)?;
    if store.is_shared() {
        tracing::info!("GAME_SIGNING_SECRET is not set: preview URLs are signed with the key the replicas share through the database");
        return Ok(Secret::new(
            store.shared_secret(GAME_SIGNING_SECRET, &candidate).await?,
        ));
    }
    tracing::warn!(
        "GAME_SIGNING_SECRET is not set: preview URLs are signed with a random key of this process \
         and stop working when it restarts"
    );
    Ok(Secret::new(candidate))
}

/// The secret `dreamcore-relay dev-token` signs with: the one the running relays verify with
/// (SUPABASE_JWT_SECRET, the shared development secret in PostgreSQL, or `DATA_DIR`'s file).
pub async fn development_secret(config: &Config) -> Result<Option<Vec<u8>>, StartupError> {
    let data_dir = &config.server.data_dir;
    if config.database.url.is_empty() {
        return auth::resolve_hs256_secret(&config.auth, data_dir)
            .map(|(key, _)| key)
            .map_err(|source| StartupError::DataDir {
                path: data_dir.display().to_string(),
                source,
            });
    }
    let store = PostgresStore::connect(config.database.url.expose(), 1).await?;
    hs256_key(config, data_dir, &store)
        .await
        .map(|(key, _)| key)
}
