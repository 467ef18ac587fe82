//! Plans and daily quotas: the active subscription and the per-day counters of
//! `usage_quotas`.

use chrono::Utc;
use rusqlite::{params, OptionalExtension};
use uuid::Uuid;

use super::SqliteStore;
use crate::store::{QuotaDecision, QuotaKind, QuotaUsage, StoreError};

fn today() -> String {
    Utc::now().date_naive().to_string()
}

pub(super) async fn plan(store: &SqliteStore, user_id: Uuid) -> Result<String, StoreError> {
    let uid = user_id.to_string();
    store
        .call(move |c| {
            c.prepare_cached(
                "SELECT plan FROM subscriptions WHERE user_id = ?1 AND status = 'active'",
            )?
            .query_row(params![uid], |r| r.get::<_, String>(0))
            .optional()
            .map(|plan| plan.unwrap_or_else(|| "free".to_string()))
        })
        .await
}

pub(super) async fn consume_quota(
    store: &SqliteStore,
    user_id: Uuid,
    kind: QuotaKind,
    limit: i64,
) -> Result<QuotaDecision, StoreError> {
    let uid = user_id.to_string();
    let column = kind.column();
    store
        .call(move |c| {
            let tx = c.savepoint()?;
            let day = today();
            tx.prepare_cached(
                "INSERT INTO usage_quotas (user_id, quota_date) VALUES (?1, ?2)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![uid, day])?;
            let count: i64 = tx
                .prepare_cached(&format!(
                    "SELECT {column} FROM usage_quotas WHERE user_id = ?1 AND quota_date = ?2"
                ))?
                .query_row(params![uid, day], |r| r.get(0))?;
            if limit != -1 && count >= limit {
                tx.commit()?;
                return Ok(QuotaDecision {
                    allowed: false,
                    count,
                });
            }
            tx.prepare_cached(&format!(
                "UPDATE usage_quotas SET {column} = {column} + 1
                 WHERE user_id = ?1 AND quota_date = ?2"
            ))?
            .execute(params![uid, day])?;
            tx.commit()?;
            Ok(QuotaDecision {
                allowed: true,
                count: count + 1,
            })
        })
        .await
}

pub(super) async fn quota_usage(
    store: &SqliteStore,
    user_id: Uuid,
) -> Result<QuotaUsage, StoreError> {
    let uid = user_id.to_string();
    store
        .call(move |c| {
            c.prepare_cached(
                "SELECT projects_created, messages_sent FROM usage_quotas
                 WHERE user_id = ?1 AND quota_date = ?2",
            )?
            .query_row(params![uid, today()], |r| {
                Ok(QuotaUsage {
                    projects_created: r.get(0)?,
                    messages_sent: r.get(1)?,
                })
            })
            .optional()
            .map(Option::unwrap_or_default)
        })
        .await
}
