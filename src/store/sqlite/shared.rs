//! The relay's own secrets and the version a restore made current, in the same tables the
//! PostgreSQL store uses (README "Scaling"), so one code path serves both stores.

use rusqlite::{params, OptionalExtension};
use uuid::Uuid;

use super::connection::now_text;
use super::SqliteStore;
use crate::store::StoreError;

pub(super) async fn shared_secret(
    store: &SqliteStore,
    name: &str,
    candidate: &str,
) -> Result<String, StoreError> {
    let (name, candidate) = (name.to_string(), candidate.to_string());
    store
        .call(move |c| {
            c.prepare_cached(
                "INSERT INTO relay_secrets (name, value, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
            )?
            .execute(params![name, candidate, now_text()])?;
            c.prepare_cached("SELECT value FROM relay_secrets WHERE name = ?1")?
                .query_row(params![name], |r| r.get(0))
        })
        .await
}

pub(super) async fn current_version(
    store: &SqliteStore,
    project_id: Uuid,
) -> Result<Option<String>, StoreError> {
    let project = project_id.to_string();
    store
        .call(move |c| {
            c.prepare_cached("SELECT version FROM relay_current_versions WHERE project_id = ?1")?
                .query_row(params![project], |r| r.get(0))
                .optional()
        })
        .await
}

pub(super) async fn set_current_version(
    store: &SqliteStore,
    project_id: Uuid,
    version: Option<&str>,
) -> Result<(), StoreError> {
    let project = project_id.to_string();
    let version = version.map(str::to_string);
    store
        .call(move |c| {
            match version {
                Some(version) => c
                    .prepare_cached(
                        "INSERT INTO relay_current_versions (project_id, version, updated_at)
                     VALUES (?1, ?2, ?3)
                     ON CONFLICT (project_id) DO UPDATE SET version = excluded.version,
                                                            updated_at = excluded.updated_at",
                    )?
                    .execute(params![project, version, now_text()]),
                None => c
                    .prepare_cached("DELETE FROM relay_current_versions WHERE project_id = ?1")?
                    .execute(params![project]),
            }
            .map(drop)
        })
        .await
}
