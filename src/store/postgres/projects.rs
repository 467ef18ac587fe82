//! The `users` profile and `projects` (with their publish-draft descriptions).

use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::Row;
use uuid::Uuid;

use super::pool::{begin, commit, db_err, get, query, query_opt, Param, Scope};
use super::PostgresStore;
use crate::auth::Identity;
use crate::store::models::Project;
use crate::store::StoreError;

/// Project columns over `projects p LEFT JOIN publish_drafts d`: the draft description comes
/// in the same query (upstream fetched it with one extra request per project).
const PROJECT_COLUMNS: &str =
    "p.id, p.user_id, p.name, coalesce(d.description, ''), p.is_public, p.remixed_from,
     coalesce(p.is_initialized, false), p.created_at, p.updated_at";

fn project_from_row(row: &Row) -> Result<Project, StoreError> {
    Ok(Project {
        id: get(row, 0)?,
        user_id: get(row, 1)?,
        name: get(row, 2)?,
        description: get(row, 3)?,
        is_public: get(row, 4)?,
        remixed_from: get(row, 5)?,
        is_initialized: get(row, 6)?,
        created_at: get(row, 7)?,
        updated_at: get(row, 8)?,
    })
}

/// One project row read under the user's scope.
async fn project_query(
    store: &PostgresStore,
    who: &Identity,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Option<Project>, StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::User(who)).await?;
    let project = query_opt(&tx, sql, params)
        .await?
        .as_ref()
        .map(project_from_row)
        .transpose()?;
    commit(tx).await?;
    Ok(project)
}

pub(super) async fn ensure_user(store: &PostgresStore, who: &Identity) -> Result<(), StoreError> {
    let (email, name, avatar) = (who.email.clone(), who.display_name(), who.avatar_url());
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    // No conflict target: with `(id)` only, two concurrent first inits of one user can
    // still collide on the unique e-mail index and fail.
    let inserted = tx
        .query_typed(
            "INSERT INTO users (id, email, display_name, avatar_url) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING RETURNING id",
            &[
                (&who.user_id, Type::UUID),
                (&email, Type::TEXT),
                (&name, Type::TEXT),
                (&avatar, Type::TEXT),
            ],
        )
        .await;
    match inserted {
        Ok(rows) if !rows.is_empty() => commit(tx).await,
        Ok(_) => {
            let exists = query_opt(
                &tx,
                "SELECT 1 FROM users WHERE id = $1",
                &[(&who.user_id, Type::UUID)],
            )
            .await?;
            commit(tx).await?;
            if exists.is_none() {
                tracing::warn!(user_id = %who.user_id, "users profile not created: its e-mail belongs to another profile");
            }
            Ok(())
        }
        // `users.id` references `auth.users`: without that row (never the case for a token
        // GoTrue issued) the profile cannot exist; later writes will say so.
        Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
            tracing::warn!(user_id = %who.user_id, "no auth.users row; users profile not created");
            Ok(())
        }
        Err(e) => Err(db_err(e)),
    }
}

pub(super) async fn list_projects(
    store: &PostgresStore,
    who: &Identity,
) -> Result<Vec<Project>, StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::User(who)).await?;
    let rows = query(
        &tx,
        &format!(
            "SELECT {PROJECT_COLUMNS} FROM projects p LEFT JOIN publish_drafts d ON d.project_id = p.id
             WHERE p.user_id = $1 ORDER BY p.updated_at DESC"
        ),
        &[(&who.user_id, Type::UUID)],
    )
    .await?;
    commit(tx).await?;
    rows.iter().map(project_from_row).collect()
}

pub(super) async fn get_project(
    store: &PostgresStore,
    who: &Identity,
    project_id: Uuid,
) -> Result<Option<Project>, StoreError> {
    project_query(store,
        who,
        &format!(
            "SELECT {PROJECT_COLUMNS} FROM projects p LEFT JOIN publish_drafts d ON d.project_id = p.id
             WHERE p.id = $1 AND p.user_id = $2"
        ),
        &[(&project_id, Type::UUID), (&who.user_id, Type::UUID)],
    )
    .await
}

pub(super) async fn create_project(
    store: &PostgresStore,
    who: &Identity,
    name: &str,
) -> Result<Project, StoreError> {
    let id = Uuid::now_v7();
    project_query(
        store,
        who,
        &format!(
            "WITH p AS (INSERT INTO projects (id, user_id, name) VALUES ($1, $2, $3) RETURNING *)
             SELECT {PROJECT_COLUMNS} FROM p LEFT JOIN publish_drafts d ON d.project_id = p.id"
        ),
        &[
            (&id, Type::UUID),
            (&who.user_id, Type::UUID),
            (&name, Type::TEXT),
        ],
    )
    .await?
    .ok_or_else(|| StoreError::Database("project insert returned no row".into()))
}

pub(super) async fn rename_project(
    store: &PostgresStore,
    who: &Identity,
    project_id: Uuid,
    name: &str,
) -> Result<Option<Project>, StoreError> {
    // `updated_at` is bumped by the `projects_updated_at` trigger.
    project_query(
        store,
        who,
        &format!(
            "WITH p AS (UPDATE projects SET name = $3 WHERE id = $1 AND user_id = $2 RETURNING *)
             SELECT {PROJECT_COLUMNS} FROM p LEFT JOIN publish_drafts d ON d.project_id = p.id"
        ),
        &[
            (&project_id, Type::UUID),
            (&who.user_id, Type::UUID),
            (&name, Type::TEXT),
        ],
    )
    .await
}

pub(super) async fn delete_project(
    store: &PostgresStore,
    who: &Identity,
    project_id: Uuid,
) -> Result<bool, StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::User(who)).await?;
    let rows = query(
        &tx,
        "DELETE FROM projects WHERE id = $1 AND user_id = $2 RETURNING id",
        &[(&project_id, Type::UUID), (&who.user_id, Type::UUID)],
    )
    .await?;
    commit(tx).await?;
    Ok(!rows.is_empty())
}

pub(super) async fn mark_initialized(
    store: &PostgresStore,
    project_id: Uuid,
) -> Result<(), StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    query(
        &tx,
        "UPDATE projects SET is_initialized = true WHERE id = $1",
        &[(&project_id, Type::UUID)],
    )
    .await?;
    commit(tx).await
}

pub(super) async fn project_owner(
    store: &PostgresStore,
    project_id: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    let row = query_opt(
        &tx,
        "SELECT user_id FROM projects WHERE id = $1",
        &[(&project_id, Type::UUID)],
    )
    .await?;
    commit(tx).await?;
    row.map(|row| get::<Uuid>(&row, 0)).transpose()
}
