//! The `users` profile and `projects`: ownership-scoped reads and writes of a user's projects.

use rusqlite::{params, OptionalExtension, Row};
use uuid::Uuid;

use super::connection::{now_text, parse_ts, parse_uuid};
use super::SqliteStore;
use crate::auth::Identity;
use crate::store::models::Project;
use crate::store::StoreError;

/// The `projects` columns in the order [`project_from_row`] reads them.
const PROJECT_COLUMNS: &str =
    "id, user_id, name, description, is_public, remixed_from, is_initialized, created_at, updated_at";

fn project_from_row(row: &Row<'_>) -> rusqlite::Result<Project> {
    Ok(Project {
        id: parse_uuid(row.get(0)?)?,
        user_id: parse_uuid(row.get(1)?)?,
        name: row.get(2)?,
        description: row.get(3)?,
        is_public: row.get(4)?,
        remixed_from: row
            .get::<_, Option<String>>(5)?
            .map(parse_uuid)
            .transpose()?,
        is_initialized: row.get(6)?,
        created_at: parse_ts(row.get(7)?)?,
        updated_at: parse_ts(row.get(8)?)?,
    })
}

pub(super) async fn ensure_user(store: &SqliteStore, who: &Identity) -> Result<(), StoreError> {
    let (id, email, name, avatar) = (
        who.user_id.to_string(),
        who.email.clone(),
        who.display_name(),
        who.avatar_url(),
    );
    store
        .call(move |c| {
            let now = now_text();
            c.prepare_cached(
                "INSERT INTO users (id, email, display_name, avatar_url, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![id, email, name, avatar, now])
            .map(|_| ())
        })
        .await
}

pub(super) async fn list_projects(
    store: &SqliteStore,
    who: &Identity,
) -> Result<Vec<Project>, StoreError> {
    let uid = who.user_id.to_string();
    store
        .call(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {PROJECT_COLUMNS} FROM projects WHERE user_id = ?1 ORDER BY updated_at DESC"
            ))?;
            let rows = stmt.query_map(params![uid], project_from_row)?;
            rows.collect()
        })
        .await
}

pub(super) async fn get_project(
    store: &SqliteStore,
    who: &Identity,
    project_id: Uuid,
) -> Result<Option<Project>, StoreError> {
    let (uid, pid) = (who.user_id.to_string(), project_id.to_string());
    store
        .call(move |c| {
            c.prepare_cached(&format!(
                "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?1 AND user_id = ?2"
            ))?
            .query_row(params![pid, uid], project_from_row)
            .optional()
        })
        .await
}

pub(super) async fn create_project(
    store: &SqliteStore,
    who: &Identity,
    name: &str,
) -> Result<Project, StoreError> {
    let (uid, name) = (who.user_id.to_string(), name.to_string());
    let id = Uuid::now_v7().to_string();
    store
        .call(move |c| {
            let now = now_text();
            c.prepare_cached(&format!(
                "INSERT INTO projects (id, user_id, name, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 RETURNING {PROJECT_COLUMNS}"
            ))?
            .query_row(params![id, uid, name, now], project_from_row)
        })
        .await
}

pub(super) async fn rename_project(
    store: &SqliteStore,
    who: &Identity,
    project_id: Uuid,
    name: &str,
) -> Result<Option<Project>, StoreError> {
    let (uid, pid, name) = (
        who.user_id.to_string(),
        project_id.to_string(),
        name.to_string(),
    );
    store
        .call(move |c| {
            c.prepare_cached(&format!(
                "UPDATE projects SET name = ?3, updated_at = ?4 WHERE id = ?1 AND user_id = ?2
                     RETURNING {PROJECT_COLUMNS}"
            ))?
            .query_row(params![pid, uid, name, now_text()], project_from_row)
            .optional()
        })
        .await
}

pub(super) async fn delete_project(
    store: &SqliteStore,
    who: &Identity,
    project_id: Uuid,
) -> Result<bool, StoreError> {
    let (uid, pid) = (who.user_id.to_string(), project_id.to_string());
    store
        .call(move |c| {
            c.prepare_cached("DELETE FROM projects WHERE id = ?1 AND user_id = ?2")?
                .execute(params![pid, uid])
                .map(|n| n > 0)
        })
        .await
}

pub(super) async fn mark_initialized(
    store: &SqliteStore,
    project_id: Uuid,
) -> Result<(), StoreError> {
    let pid = project_id.to_string();
    store
        .call(move |c| {
            c.prepare_cached("UPDATE projects SET is_initialized = 1 WHERE id = ?1")?
                .execute(params![pid])
                .map(|_| ())
        })
        .await
}

pub(super) async fn project_owner(
    store: &SqliteStore,
    project_id: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    let pid = project_id.to_string();
    store
        .call(move |c| {
            c.prepare_cached("SELECT user_id FROM projects WHERE id = ?1")?
                .query_row(params![pid], |row| parse_uuid(row.get(0)?))
                .optional()
        })
        .await
}
