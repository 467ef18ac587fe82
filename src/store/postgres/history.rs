//! `chat_history`: reading a project's conversation and appending to it.

use tokio_postgres::types::Type;
use uuid::Uuid;

use super::pool::{begin, commit, get, query, Scope};
use super::PostgresStore;
use crate::auth::Identity;
use crate::store::models::{ChatRole, HistoryItem};
use crate::store::StoreError;

pub(super) async fn history(
    store: &PostgresStore,
    who: &Identity,
    project_id: Uuid,
    limit: usize,
) -> Result<Vec<HistoryItem>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::User(who)).await?;
    // `id` breaks ties: production ids are time-ordered v7.
    let rows = query(
        &tx,
        "SELECT h.role, h.message, coalesce(h.created_at, 'epoch'::timestamptz) FROM chat_history h
         WHERE h.project_id = $1 AND h.role IN ('user', 'assistant')
           AND EXISTS (SELECT 1 FROM projects p WHERE p.id = h.project_id AND p.user_id = $2)
         ORDER BY h.created_at DESC NULLS LAST, h.id DESC LIMIT $3",
        &[
            (&project_id, Type::UUID),
            (&who.user_id, Type::UUID),
            (&limit, Type::INT8),
        ],
    )
    .await?;
    commit(tx).await?;
    let mut items = rows
        .iter()
        .map(|row| {
            let role: String = get(row, 0)?;
            Ok(HistoryItem {
                role: if role == "user" {
                    ChatRole::User
                } else {
                    ChatRole::Assistant
                },
                content: get(row, 1)?,
                timestamp: get(row, 2)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    items.reverse();
    Ok(items)
}

pub(super) async fn add_user_message(
    store: &PostgresStore,
    who: &Identity,
    project_id: Uuid,
    content: &str,
) -> Result<(), StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::User(who)).await?;
    let touched = query(
        &tx,
        "UPDATE projects SET updated_at = now() WHERE id = $1 AND user_id = $2 RETURNING id",
        &[(&project_id, Type::UUID), (&who.user_id, Type::UUID)],
    )
    .await?;
    // Only the owner may write into a project's history (RLS would refuse it anyway).
    if !touched.is_empty() {
        query(
            &tx,
            "INSERT INTO chat_history (project_id, role, message) VALUES ($1, 'user', $2)",
            &[(&project_id, Type::UUID), (&content, Type::TEXT)],
        )
        .await?;
    }
    commit(tx).await
}

pub(super) async fn add_history(
    store: &PostgresStore,
    project_id: Uuid,
    role: ChatRole,
    content: &str,
) -> Result<(), StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    query(
        &tx,
        "INSERT INTO chat_history (project_id, role, message) SELECT id, $2, $3 FROM projects WHERE id = $1",
        &[(&project_id, Type::UUID), (&role.as_str(), Type::TEXT), (&content, Type::TEXT)],
    )
    .await?;
    query(
        &tx,
        "UPDATE projects SET updated_at = now() WHERE id = $1",
        &[(&project_id, Type::UUID)],
    )
    .await?;
    commit(tx).await
}
