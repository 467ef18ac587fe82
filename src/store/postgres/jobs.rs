//! `jobs`: updating a job until it is terminal, and reading it (starts: `start`).

use tokio_postgres::types::Type;
use tokio_postgres::Row;
use uuid::Uuid;

use super::pool::{begin, commit, decode_err, get, query, query_one, query_opt, Scope, Tx};
use super::PostgresStore;
use crate::store::models::{ActiveJobInfo, JobRow, JobStatus};
use crate::store::{JobUpdate, Lease, StoreError};

fn parse_status(raw: Option<String>) -> Result<JobStatus, StoreError> {
    raw.as_deref()
        .and_then(JobStatus::parse)
        .ok_or_else(|| decode_err("job status"))
}

// `progress` and the timestamps are nullable in the Supabase schema; the rows we write always
// have them, the fallbacks only keep a hand-edited row readable.
const JOB_COLUMNS: &str =
    "id, user_id, project_id, status, coalesce(progress, 0), progress_message, result, error,
     coalesce(created_at, 'epoch'::timestamptz), coalesce(updated_at, 'epoch'::timestamptz)";

pub(super) fn job_from_row(row: &Row) -> Result<JobRow, StoreError> {
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

async fn select_active_job(tx: &Tx<'_>, project_id: &Uuid) -> Result<Option<JobRow>, StoreError> {
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

pub(super) async fn expired_jobs(store: &PostgresStore) -> Result<Vec<JobRow>, StoreError> {
    let mut conn = store.connection().await?;
    let tx = begin(&mut conn, Scope::Service).await?;
    let rows = query(
        &tx,
        &format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE status IN ('pending', 'processing')
               AND (lease_expires_at IS NULL OR lease_expires_at < now())"
        ),
        &[],
    )
    .await?;
    commit(tx).await?;
    rows.iter().map(job_from_row).collect()
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
