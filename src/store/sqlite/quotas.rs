//! Plans and daily quotas: the active subscription and the per-day counters of
//! `usage_quotas`.

use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::SqliteStore;
use crate::store::{PlanCharge, PlanLimits, QuotaDecision, QuotaKind, QuotaUsage, StoreError};

fn today() -> String {
    Utc::now().date_naive().to_string()
}

fn select_plan(c: &Connection, uid: &str) -> rusqlite::Result<String> {
    c.prepare_cached("SELECT plan FROM subscriptions WHERE user_id = ?1 AND status = 'active'")?
        .query_row(params![uid], |r| r.get::<_, String>(0))
        .optional()
        .map(|plan| plan.unwrap_or_else(|| "free".to_string()))
}

/// Check-and-increment today's counter; atomic because every call runs in its own savepoint
/// inside the connection thread's write transaction.
fn consume(
    c: &Connection,
    uid: &str,
    kind: QuotaKind,
    limit: i64,
) -> rusqlite::Result<QuotaDecision> {
    let column = kind.column();
    let day = today();
    c.prepare_cached(
        "INSERT INTO usage_quotas (user_id, quota_date) VALUES (?1, ?2)
         ON CONFLICT DO NOTHING",
    )?
    .execute(params![uid, day])?;
    let count: i64 = c
        .prepare_cached(&format!(
            "SELECT {column} FROM usage_quotas WHERE user_id = ?1 AND quota_date = ?2"
        ))?
        .query_row(params![uid, day], |r| r.get(0))?;
    if limit != -1 && count >= limit {
        return Ok(QuotaDecision {
            allowed: false,
            count,
        });
    }
    c.prepare_cached(&format!(
        "UPDATE usage_quotas SET {column} = {column} + 1
         WHERE user_id = ?1 AND quota_date = ?2"
    ))?
    .execute(params![uid, day])?;
    Ok(QuotaDecision {
        allowed: true,
        count: count + 1,
    })
}

pub(super) async fn plan(store: &SqliteStore, user_id: Uuid) -> Result<String, StoreError> {
    let uid = user_id.to_string();
    store.call(move |c| select_plan(c, &uid)).await
}

pub(super) async fn consume_quota(
    store: &SqliteStore,
    user_id: Uuid,
    kind: QuotaKind,
    limit: i64,
) -> Result<QuotaDecision, StoreError> {
    let uid = user_id.to_string();
    store.call(move |c| consume(c, &uid, kind, limit)).await
}

/// The user's plan and the charge by its limit.
pub(super) fn consume_plan_quota_in(
    c: &Connection,
    uid: &str,
    kind: QuotaKind,
    limits: PlanLimits,
) -> rusqlite::Result<PlanCharge> {
    let plan = select_plan(c, uid)?;
    let Some(limit) = limits(&plan, kind) else {
        return Ok(PlanCharge::UnknownPlan(plan));
    };
    let decision = consume(c, uid, kind, limit)?;
    Ok(PlanCharge::Applied { limit, decision })
}

/// [`consume_plan_quota_in`] in one trip to the connection thread.
pub(super) async fn consume_plan_quota(
    store: &SqliteStore,
    user_id: Uuid,
    kind: QuotaKind,
    limits: PlanLimits,
) -> Result<PlanCharge, StoreError> {
    let uid = user_id.to_string();
    store
        .call(move |c| consume_plan_quota_in(c, &uid, kind, limits))
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
