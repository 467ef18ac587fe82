//! `jobs`: starting one job per project, updating it until it is terminal, and reading it.

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::types::Type;
use tokio_postgres::Row;
use uuid::Uuid;

use super::pool::{
    begin, commit, decode_err, get, one_flight, query, query_one, query_opt, Param, Scope,
};
use super::PostgresStore;
use crate::store::models::{ActiveJobInfo, JobRow, JobStatus};
use crate::store::{JobStart, JobUpdate, Lease, StartLimits, StoreError};

fn parse_status(raw: Option<String>) -> Result<JobStatus, StoreError> {
    raw.as_deref()
        .and_then(JobStatus::parse)
        .ok_or_else(|| decode_err("job status"))
}

// `progress` and the timestamps are nullable in the Supabase schema; the rows we write always
// have them, the fallbacks only keep a hand-edited row readable.
/// Advisory lock of cluster-wide job starts; outside the 32-bit range of the per-project
/// `hashtext` locks, so the two never collide.
const START_LOCK_KEY: i64 = 0x6472_6561_6d63_6f72;

const JOB_COLUMNS: &str =
    "id, user_id, project_id, status, coalesce(progress, 0), progress_message, result, error,
     coalesce(created_at, 'epoch'::timestamptz), coalesce(updated_at, 'epoch'::timestamptz)";

fn job_from_row(row: &Row) -> Result<JobRow, StoreError> {
    Ok(JobRow {
        id: get(row, 0)?,
        user_id: get(row, 1)?,
        project_id: get(row, 2)?,
        status: parse_status(get(row, 3)?)?,
        progress: get(row, 4)?,
        progress_message: get(row, 5)?,
        result: get(row, 6)?,
        error: get(row, 7)?,
        created_at: get(row, 8)?,
        updated_at: get(row, 9)?,
    })
}

fn job_opt(row: Option<Row>) -> Result<Option<JobRow>, StoreError> {
    row.as_ref().map(job_from_row).transpose()
}

async fn select_active_job(
    tx: &Transaction<'_>,
    project_id: &Uuid,
) -> Result<Option<JobRow>, StoreError> {
    let row = query_opt(
        tx,
        &format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE project_id = $1 AND status IN ('pending', 'processing')
             ORDER BY created_at DESC LIMIT 1"
        ),
        &[(project_id, Type::UUID)],
    )
    .await?;
    job_opt(row)
}

pub(super) async fn start_job(
    store: &PostgresStore,
    user_id: Uuid,
    project_id: Uuid,
    job_id: Uuid,
    now: DateTime<Utc>,
    lease: &Lease,
    limits: StartLimits,
) -> Result<JobStart, StoreError> {
    // As the database keeps it (microseconds), so the row we return is the row stored.
    let now = now.trunc_subsecs(6);
    let ttl_ms = lease.ttl_millis();
    let total = limits.total.map(limit_param);
    let per_user = limits.per_user.map(limit_param);
    // Advisory locks serialise check-then-insert per project (the shared schema has no unique
    // index on active jobs) and, clustered, the slot counts. Always taken in this order —
    // the project's, all starts', the user's — so two starts never wait on each other in
    // opposite order. Released at COMMIT, after the new row is visible to the next holder.
    let project_param = [(&project_id as _, Type::UUID)];
    let start_param = [(&START_LOCK_KEY as _, Type::INT8)];
    let user_param = [(&user_id as _, Type::UUID)];
    let mut statements: Vec<(&str, &[Param<'_>])> = vec![(
        "SELECT pg_advisory_xact_lock(hashtext($1::text))",
        &project_param,
    )];
    if total.is_some() {
        statements.push(("SELECT pg_advisory_xact_lock($1)", &start_param));
    }
    if per_user.is_some() {
        statements.push((
            "SELECT pg_advisory_xact_lock(hashtext('user:' || $1::text))",
            &user_param,
        ));
    }
    let start_params = [
        (&job_id as _, Type::UUID),
        (&user_id as _, Type::UUID),
        (&project_id as _, Type::UUID),
        (&now as _, Type::TIMESTAMPTZ),
        (&lease.instance as _, Type::UUID),
        (&ttl_ms as _, Type::INT8),
        (&total as _, Type::INT8),
        (&per_user as _, Type::INT8),
    ];
    statements.push((START_SQL, &start_params));
    let conn = store.connection().await?;
    let mut replies = one_flight(&conn, &statements).await?;
    let reply = replies.pop().and_then(|rows| rows.into_iter().next());
    let Some(row) = reply else {
        return Err(decode_err("answer to a job start"));
    };
    if get::<Option<Uuid>>(&row, 0)?.is_some() {
        return Ok(JobStart::Existing(job_from_row(&row)?));
    }
    if get::<Option<Uuid>>(&row, 10)?.is_some() {
        return Ok(JobStart::Created(JobRow::new_pending(
            job_id, user_id, project_id, now,
        )));
    }
    let (everyone, mine): (i64, i64) = (get(&row, 11)?, get(&row, 12)?);
    if total.is_some_and(|limit| everyone >= limit) {
        return Ok(JobStart::Full);
    }
    if per_user.is_some_and(|limit| mine >= limit) {
        return Ok(JobStart::UserFull);
    }
    Err(decode_err("job start that neither started nor was refused"))
}

/// A job start in one statement, run once the locks are held (so with a fresh READ COMMITTED
/// snapshot): the project's unfinished job if it has one, else the new row if the slots
/// allow it. Columns 0–9 the unfinished job (NULL when none), 10 the inserted id, 11 and 12
/// the unfinished jobs of everyone and of the user (0 when that limit is not asked for).
const START_SQL: &str = "
WITH active AS (
    SELECT id, user_id, project_id, status, coalesce(progress, 0) AS progress, progress_message,
           result, error, coalesce(created_at, 'epoch'::timestamptz) AS created_at,
           coalesce(updated_at, 'epoch'::timestamptz) AS updated_at
    FROM jobs WHERE project_id = $3 AND status IN ('pending', 'processing')
    ORDER BY created_at DESC LIMIT 1
), counts AS (
    SELECT CASE WHEN $7::int8 IS NULL THEN 0 ELSE
               (SELECT count(*) FROM jobs WHERE status IN ('pending', 'processing')) END AS everyone,
           CASE WHEN $8::int8 IS NULL THEN 0 ELSE
               (SELECT count(*) FROM jobs WHERE user_id = $2
                                           AND status IN ('pending', 'processing')) END AS mine
), inserted AS (
    INSERT INTO jobs (id, user_id, project_id, status, progress, created_at, updated_at,
                      owner_instance, lease_expires_at)
    SELECT $1, $2, $3, 'pending', 0, $4, $4, $5, now() + $6 * interval '1 millisecond'
    FROM counts
    WHERE NOT EXISTS (SELECT 1 FROM active)
      AND ($7::int8 IS NULL OR counts.everyone < $7)
      AND ($8::int8 IS NULL OR counts.mine < $8)
    RETURNING id
)
SELECT a.id, a.user_id, a.project_id, a.status, a.progress, a.progress_message, a.result,
       a.error, a.created_at, a.updated_at, (SELECT id FROM inserted), c.everyone, c.mine
FROM counts c LEFT JOIN active a ON true";

/// A slot limit as the query's `int8` parameter.
fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(super) async fn discard_job(store: &PostgresStore, job_id: Uuid) -> Result<(), StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    query(
        &tx,
        "DELETE FROM jobs WHERE id = $1 AND status = 'pending'",
        &[(&job_id, Type::UUID)],
    )
    .await?;
    commit(tx).await
}

pub(super) async fn update_job(
    store: &PostgresStore,
    job_id: Uuid,
    update: &JobUpdate,
) -> Result<Option<JobRow>, StoreError> {
    let status = update.status.map(JobStatus::as_str);
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    let row = query_opt(
        &tx,
        &format!(
            "UPDATE jobs SET
                status = coalesce($2, status),
                progress = coalesce($3, progress),
                progress_message = coalesce($4, progress_message),
                result = coalesce($5, result),
                error = coalesce($6, error),
                updated_at = now()
             WHERE id = $1 AND status IN ('pending', 'processing')
             RETURNING {JOB_COLUMNS}"
        ),
        &[
            (&job_id, Type::UUID),
            (&status, Type::TEXT),
            (&update.progress, Type::INT4),
            (&update.progress_message, Type::TEXT),
            (&update.result, Type::TEXT),
            (&update.error, Type::TEXT),
        ],
    )
    .await?;
    commit(tx).await?;
    job_opt(row)
}

pub(super) async fn get_job(
    store: &PostgresStore,
    job_id: Uuid,
) -> Result<Option<JobRow>, StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    let row = query_opt(
        &tx,
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
        &[(&job_id, Type::UUID)],
    )
    .await?;
    commit(tx).await?;
    job_opt(row)
}

pub(super) async fn active_job(
    store: &PostgresStore,
    project_id: Uuid,
) -> Result<Option<JobRow>, StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    let job = select_active_job(&tx, &project_id).await?;
    commit(tx).await?;
    Ok(job)
}

pub(super) async fn active_jobs_for_user(
    store: &PostgresStore,
    user_id: Uuid,
) -> Result<Vec<ActiveJobInfo>, StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    let rows = query(
        &tx,
        "SELECT j.id, j.project_id, p.name, j.status, coalesce(j.created_at, 'epoch'::timestamptz)
         FROM jobs j JOIN projects p ON p.id = j.project_id
         WHERE j.user_id = $1 AND j.status IN ('pending', 'processing')
         ORDER BY j.created_at DESC",
        &[(&user_id, Type::UUID)],
    )
    .await?;
    commit(tx).await?;
    rows.iter()
        .map(|row| {
            Ok(ActiveJobInfo {
                job_id: get(row, 0)?,
                project_id: get(row, 1)?,
                project_name: get(row, 2)?,
                status: parse_status(get(row, 3)?)?,
                created_at: get(row, 4)?,
            })
        })
        .collect()
}

pub(super) async fn count_active_jobs(store: &PostgresStore) -> Result<usize, StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    let row = query_one(
        &tx,
        "SELECT count(*) FROM jobs WHERE status IN ('pending', 'processing')",
        &[],
    )
    .await?;
    commit(tx).await?;
    let count: i64 = get(&row, 0)?;
    usize::try_from(count).map_err(|_| decode_err("job count"))
}

pub(super) async fn renew_leases(
    store: &PostgresStore,
    lease: &Lease,
    job_ids: &[Uuid],
) -> Result<Vec<Uuid>, StoreError> {
    if job_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ttl_ms = lease.ttl_millis();
    let ids = job_ids.to_vec();
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    // Database time (`now()`): a relay with a skewed clock still renews correctly.
    let rows = query(
        &tx,
        "UPDATE jobs SET owner_instance = $1,
                         lease_expires_at = now() + $2 * interval '1 millisecond'
         WHERE id = ANY($3) AND status IN ('pending', 'processing') RETURNING id",
        &[
            (&lease.instance, Type::UUID),
            (&ttl_ms, Type::INT8),
            (&ids, Type::UUID_ARRAY),
        ],
    )
    .await?;
    commit(tx).await?;
    rows.iter().map(|row| get(row, 0)).collect()
}

pub(super) async fn fail_expired_jobs(
    store: &PostgresStore,
    error: &str,
) -> Result<Vec<JobRow>, StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    let rows = query(
        &tx,
        &format!(
            "UPDATE jobs SET status = 'failed', error = $1, updated_at = now()
             WHERE status IN ('pending', 'processing')
               AND (lease_expires_at IS NULL OR lease_expires_at < now())
             RETURNING {JOB_COLUMNS}"
        ),
        &[(&error, Type::TEXT)],
    )
    .await?;
    commit(tx).await?;
    rows.iter().map(job_from_row).collect()
}
