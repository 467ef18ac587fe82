//! Plans and daily quotas: the active subscription and the `try_consume_quota` / `get_quota`
//! functions of the shared schema.

use tokio_postgres::types::Type;
use uuid::Uuid;

use super::pool::{begin, commit, get, query_one, query_opt, Scope};
use super::PostgresStore;
use crate::store::{QuotaDecision, QuotaKind, QuotaUsage, StoreError};

fn quota_limit(limit: i64) -> Result<i32, StoreError> {
    i32::try_from(limit)
        .map_err(|_| StoreError::Database(format!("quota limit {limit} out of range")))
}

pub(super) async fn plan(store: &PostgresStore, user_id: Uuid) -> Result<String, StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    let row = query_opt(
        &tx,
        "SELECT plan FROM subscriptions WHERE user_id = $1 AND status = 'active'",
        &[(&user_id, Type::UUID)],
    )
    .await?;
    commit(tx).await?;
    match row {
        Some(row) => get(&row, 0),
        None => Ok("free".to_string()),
    }
}

pub(super) async fn consume_quota(
    store: &PostgresStore,
    user_id: Uuid,
    kind: QuotaKind,
    limit: i64,
) -> Result<QuotaDecision, StoreError> {
    let limit = quota_limit(limit)?;
    let field = kind.column();
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    let row = query_one(
        &tx,
        "SELECT allowed, current_count FROM try_consume_quota($1, $2, $3)",
        &[
            (&user_id, Type::UUID),
            (&field, Type::TEXT),
            (&limit, Type::INT4),
        ],
    )
    .await?;
    commit(tx).await?;
    let count: i32 = get(&row, 1)?;
    Ok(QuotaDecision {
        allowed: get(&row, 0)?,
        count: count.into(),
    })
}

pub(super) async fn quota_usage(
    store: &PostgresStore,
    user_id: Uuid,
) -> Result<QuotaUsage, StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    let row = query_opt(
        &tx,
        "SELECT projects_created, messages_sent FROM get_quota($1)",
        &[(&user_id, Type::UUID)],
    )
    .await?;
    commit(tx).await?;
    let Some(row) = row else {
        return Ok(QuotaUsage::default());
    };
    let (projects, messages): (i32, i32) = (get(&row, 0)?, get(&row, 1)?);
    Ok(QuotaUsage {
        projects_created: projects.into(),
        messages_sent: messages.into(),
    })
}
