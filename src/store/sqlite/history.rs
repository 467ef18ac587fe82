//! `chat_history`: a project's conversation, read by its owner and appended to by the owner
//! or by the relay itself.

use rusqlite::{params, Connection};
use uuid::Uuid;

use super::connection::{now_text, parse_ts};
use super::{quotas, SqliteStore};
use crate::auth::Identity;
use crate::store::models::{ChatRole, HistoryItem};
use crate::store::{PlanCharge, PlanLimits, QuotaKind, StoreError};

pub(super) async fn history(
    store: &SqliteStore,
    who: &Identity,
    project_id: Uuid,
    limit: usize,
) -> Result<Vec<HistoryItem>, StoreError> {
    let (uid, pid) = (who.user_id.to_string(), project_id.to_string());
    store
        .call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT h.role, h.message, h.created_at FROM chat_history h
                 JOIN projects p ON p.id = h.project_id
                 WHERE h.project_id = ?1 AND p.user_id = ?2 AND h.role IN ('user', 'assistant')
                 ORDER BY h.id DESC LIMIT ?3",
            )?;
            let mut items = stmt
                .query_map(params![pid, uid, limit as i64], |row| {
                    let role: String = row.get(0)?;
                    Ok(HistoryItem {
                        role: if role == "user" {
                            ChatRole::User
                        } else {
                            ChatRole::Assistant
                        },
                        content: row.get(1)?,
                        timestamp: parse_ts(row.get(2)?)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            items.reverse();
            Ok(items)
        })
        .await
}

/// The user's message in the history of project `pid`, and the project touched; only for its
/// owner `uid`.
fn add_user_message_in(
    c: &Connection,
    uid: &str,
    pid: &str,
    content: &str,
) -> rusqlite::Result<()> {
    let now = now_text();
    let touched = c
        .prepare_cached("UPDATE projects SET updated_at = ?3 WHERE id = ?1 AND user_id = ?2")?
        .execute(params![pid, uid, now])?;
    if touched == 1 {
        c.prepare_cached(
            "INSERT INTO chat_history (project_id, role, message, created_at)
             VALUES (?1, 'user', ?2, ?3)",
        )?
        .execute(params![pid, content, now])?;
    }
    Ok(())
}

pub(super) async fn add_user_message(
    store: &SqliteStore,
    who: &Identity,
    project_id: Uuid,
    content: &str,
) -> Result<(), StoreError> {
    let (uid, pid, content) = (
        who.user_id.to_string(),
        project_id.to_string(),
        content.to_string(),
    );
    store
        .call(move |c| add_user_message_in(c, &uid, &pid, &content))
        .await
}

/// The message's quota and, unless it is refused, the message itself, in one trip to the
/// store's thread.
pub(super) async fn charge_message(
    store: &SqliteStore,
    who: &Identity,
    project_id: Uuid,
    limits: PlanLimits,
    content: &str,
) -> Result<PlanCharge, StoreError> {
    let (uid, pid, content) = (
        who.user_id.to_string(),
        project_id.to_string(),
        content.to_string(),
    );
    store
        .call(move |c| {
            let charge = quotas::consume_plan_quota_in(c, &uid, QuotaKind::MessagesSent, limits)?;
            if !charge.refused() {
                add_user_message_in(c, &uid, &pid, &content)?;
            }
            Ok(charge)
        })
        .await
}

/// Append a message to the history of project `pid`, if the project exists.
fn insert_message(
    c: &Connection,
    pid: &str,
    role: ChatRole,
    content: &str,
    now: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO chat_history (project_id, role, message, created_at)
         SELECT id, ?2, ?3, ?4 FROM projects WHERE id = ?1",
    )?
    .execute(params![pid, role.as_str(), content, now])
    .map(drop)
}

/// The answer, the initialized flag and the forgotten restore marker, together.
pub(super) fn record_generation_in(
    c: &Connection,
    pid: &str,
    answer: &str,
) -> rusqlite::Result<()> {
    let now = now_text();
    insert_message(c, pid, ChatRole::Assistant, answer, &now)?;
    c.prepare_cached("UPDATE projects SET updated_at = ?2, is_initialized = 1 WHERE id = ?1")?
        .execute(params![pid, now])?;
    c.prepare_cached("DELETE FROM relay_current_versions WHERE project_id = ?1")?
        .execute(params![pid])?;
    Ok(())
}

/// [`record_generation_in`] in one trip to the store's thread.
pub(super) async fn record_generation(
    store: &SqliteStore,
    project_id: Uuid,
    answer: &str,
) -> Result<(), StoreError> {
    let (pid, answer) = (project_id.to_string(), answer.to_string());
    store
        .call(move |c| record_generation_in(c, &pid, &answer))
        .await
}

pub(super) async fn add_history(
    store: &SqliteStore,
    project_id: Uuid,
    role: ChatRole,
    content: &str,
) -> Result<(), StoreError> {
    let (pid, content) = (project_id.to_string(), content.to_string());
    store
        .call(move |c| {
            let now = now_text();
            insert_message(c, &pid, role, &content, &now)?;
            c.prepare_cached("UPDATE projects SET updated_at = ?2 WHERE id = ?1")?
                .execute(params![pid, now])?;
            Ok(())
        })
        .await
}
