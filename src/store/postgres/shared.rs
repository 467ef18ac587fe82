//! State every replica must see alike (README "Scaling"): the secrets a relay makes up when
//! none is configured (`relay_secrets`) and the version a restore made current
//! (`relay_current_versions`). Both tables are the relay's own (sql/relay_shared_state.sql).

use tokio_postgres::types::Type;
use uuid::Uuid;

use super::pool::{begin, commit, get, query, query_one, query_opt, Scope};
use super::PostgresStore;
use crate::store::StoreError;

pub(super) async fn shared_secret(
    store: &PostgresStore,
    name: &str,
    candidate: &str,
) -> Result<String, StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    // Two statements, not one: under READ COMMITTED the SELECT takes a fresh snapshot, so it
    // sees the row of a racing replica whose insert made ours do nothing.
    query(
        &tx,
        "INSERT INTO relay_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[(&name, Type::TEXT), (&candidate, Type::TEXT)],
    )
    .await?;
    let row = query_one(
        &tx,
        "SELECT value FROM relay_secrets WHERE name = $1",
        &[(&name, Type::TEXT)],
    )
    .await?;
    commit(tx).await?;
    get(&row, 0)
}

pub(super) async fn current_version(
    store: &PostgresStore,
    project_id: Uuid,
) -> Result<Option<String>, StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    let row = query_opt(
        &tx,
        "SELECT version FROM relay_current_versions WHERE project_id = $1",
        &[(&project_id, Type::UUID)],
    )
    .await?;
    commit(tx).await?;
    row.map(|row| get(&row, 0)).transpose()
}

pub(super) async fn set_current_version(
    store: &PostgresStore,
    project_id: Uuid,
    version: Option<&str>,
) -> Result<(), StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    match version {
        Some(version) => {
            query(
                &tx,
                "INSERT INTO relay_current_versions (project_id, version) VALUES ($1, $2)
                 ON CONFLICT (project_id) DO UPDATE SET version = excluded.version, updated_at = now()",
                &[(&project_id, Type::UUID), (&version, Type::TEXT)],
            )
            .await?;
        }
        None => {
            query(
                &tx,
                "DELETE FROM relay_current_versions WHERE project_id = $1",
                &[(&project_id, Type::UUID)],
            )
            .await?;
        }
    }
    commit(tx).await
}
