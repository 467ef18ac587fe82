//! `jobs`: starting a project's one unfinished job, progress updates, and the lookups and
//! clean-up of unfinished jobs.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use super::connection::{now_text, parse_ts, parse_uuid};
use super::history;
use super::SqliteStore;
use crate::store::models::{iso_millis, ActiveJobInfo, JobRow, JobStatus};
use crate::store::{JobStart, JobUpdate, Lease, StartLimits, StoreError};

/// The `jobs` columns in the order [`job_from_row`] reads them.
const JOB_COLUMNS: &str =
    "id, user_id, project_id, status, progress, progress_message, result, error, created_at, updated_at";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<JobRow> {
    let status: String = row.get(3)?;
    Ok(JobRow {
        id: parse_uuid(row.get(0)?)?,
        user_id: parse_uuid(row.get(1)?)?,
        project_id: parse_uuid(row.get(2)?)?,
        status: JobStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Text,
                format!("unknown job status {status:?}").into(),
            )
        })?,
        progress: row.get(4)?,
        progress_message: row.get(5)?,
        result: row.get(6)?,
        error: row.get(7)?,
        created_at: parse_ts(row.get(8)?)?,
        updated_at: parse_ts(row.get(9)?)?,
    })
}

fn select_job(conn: &Connection, job_id: &str) -> rusqlite::Result<Option<JobRow>> {
    conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row(params![job_id], job_from_row)
        .optional()
}

fn select_active_job(conn: &Connection, project_id: &str) -> rusqlite::Result<Option<JobRow>> {
    conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs
         WHERE project_id = ?1 AND status IN ('pending', 'processing')
         ORDER BY created_at DESC LIMIT 1"
    ))?
    .query_row(params![project_id], job_from_row)
    .optional()
}

/// When a lease taken or renewed now expires. One machine's clock is the database's clock here.
fn lease_expiry(lease: &Lease) -> String {
    iso_millis(&(Utc::now() + chrono::Duration::milliseconds(lease.ttl_millis())))
}

pub(super) async fn start_job(
    store: &SqliteStore,
    user_id: Uuid,
    project_id: Uuid,
    job_id: Uuid,
    now: DateTime<Utc>,
    lease: &Lease,
    limits: StartLimits,
) -> Result<JobStart, StoreError> {
    let (uid, pid, jid) = (
        user_id.to_string(),
        project_id.to_string(),
        job_id.to_string(),
    );
    let (owner, expiry) = (lease.instance.to_string(), lease_expiry(lease));
    store
        .call(move |c| {
            // Inside the thread's transaction, which took the write lock first (BEGIN
            // IMMEDIATE): check-then-insert is atomic across processes.
            if let Some(existing) = select_active_job(c, &pid)? {
                return Ok(JobStart::Existing(existing));
            }
            let reaches =
                |count: i64, limit: usize| usize::try_from(count).unwrap_or(usize::MAX) >= limit;
            if let Some(total) = limits.total {
                let active: i64 = c
                    .prepare_cached(
                        "SELECT count(*) FROM jobs WHERE status IN ('pending', 'processing')",
                    )?
                    .query_row([], |row| row.get(0))?;
                if reaches(active, total) {
                    return Ok(JobStart::Full);
                }
            }
            if let Some(per_user) = limits.per_user {
                let mine: i64 = c
                    .prepare_cached(
                        "SELECT count(*) FROM jobs WHERE user_id = ?1
                     AND status IN ('pending', 'processing')",
                    )?
                    .query_row(params![uid], |row| row.get(0))?;
                if reaches(mine, per_user) {
                    return Ok(JobStart::UserFull);
                }
            }
            let now = iso_millis(&now);
            c.prepare_cached(
                "INSERT INTO jobs (id, user_id, project_id, status, progress, created_at,
                                   updated_at, owner_instance, lease_expires_at)
                 VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4, ?5, ?6)",
            )?
            .execute(params![jid, uid, pid, now, owner, expiry])?;
            let row = select_job(c, &jid)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            Ok(JobStart::Created(row))
        })
        .await
}

pub(super) async fn discard_job(store: &SqliteStore, job_id: Uuid) -> Result<(), StoreError> {
    let jid = job_id.to_string();
    store
        .call(move |c| {
            c.prepare_cached("DELETE FROM jobs WHERE id = ?1 AND status = 'pending'")?
                .execute(params![jid])
                .map(|_| ())
        })
        .await
}

/// Apply `update` to job `jid` if it is unfinished; the row after it.
fn update_row(c: &Connection, jid: &str, update: &JobUpdate) -> rusqlite::Result<Option<JobRow>> {
    c.prepare_cached(&format!(
        "UPDATE jobs SET
                status = coalesce(?2, status),
                progress = coalesce(?3, progress),
                progress_message = coalesce(?4, progress_message),
                result = coalesce(?5, result),
                error = coalesce(?6, error),
                updated_at = ?7
             WHERE id = ?1 AND status IN ('pending', 'processing')
             RETURNING {JOB_COLUMNS}"
    ))?
    .query_row(
        params![
            jid,
            update.status.map(JobStatus::as_str),
            update.progress,
            update.progress_message,
            update.result,
            update.error,
            now_text()
        ],
        job_from_row,
    )
    .optional()
}

pub(super) async fn update_job(
    store: &SqliteStore,
    job_id: Uuid,
    update: &JobUpdate,
) -> Result<Option<JobRow>, StoreError> {
    let jid = job_id.to_string();
    let update = update.clone();
    store.call(move |c| update_row(c, &jid, &update)).await
}

/// The generation recorded and the job's terminal update, in one trip to the store's thread.
pub(super) async fn complete_generation(
    store: &SqliteStore,
    job_id: Uuid,
    update: &JobUpdate,
    project_id: Uuid,
    answer: &str,
) -> Result<Option<JobRow>, StoreError> {
    let (jid, pid) = (job_id.to_string(), project_id.to_string());
    let (update, answer) = (update.clone(), answer.to_string());
    store
        .call(move |c| {
            history::record_generation_in(c, &pid, &answer)?;
            update_row(c, &jid, &update)
        })
        .await
}

pub(super) async fn get_job(
    store: &SqliteStore,
    job_id: Uuid,
) -> Result<Option<JobRow>, StoreError> {
    let jid = job_id.to_string();
    store.call(move |c| select_job(c, &jid)).await
}

pub(super) async fn active_job(
    store: &SqliteStore,
    project_id: Uuid,
) -> Result<Option<JobRow>, StoreError> {
    let pid = project_id.to_string();
    store.call(move |c| select_active_job(c, &pid)).await
}

pub(super) async fn active_jobs_for_user(
    store: &SqliteStore,
    user_id: Uuid,
) -> Result<Vec<ActiveJobInfo>, StoreError> {
    let uid = user_id.to_string();
    store
        .call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT j.id, j.project_id, p.name, j.status, j.created_at FROM jobs j
                 JOIN projects p ON p.id = j.project_id
                 WHERE j.user_id = ?1 AND j.status IN ('pending', 'processing')
                 ORDER BY j.created_at DESC",
            )?;
            let rows = stmt.query_map(params![uid], |row| {
                let status: String = row.get(3)?;
                Ok(ActiveJobInfo {
                    job_id: parse_uuid(row.get(0)?)?,
                    project_id: parse_uuid(row.get(1)?)?,
                    project_name: row.get(2)?,
                    status: JobStatus::parse(&status).unwrap_or(JobStatus::Pending),
                    created_at: parse_ts(row.get(4)?)?,
                })
            })?;
            rows.collect()
        })
        .await
}

pub(super) async fn count_active_jobs(store: &SqliteStore) -> Result<usize, StoreError> {
    store
        .call(|c| {
            c.prepare_cached("SELECT count(*) FROM jobs WHERE status IN ('pending', 'processing')")?
                .query_row([], |row| row.get::<_, i64>(0))
                .map(|n| usize::try_from(n).unwrap_or(0))
        })
        .await
}

pub(super) async fn renew_leases(
    store: &SqliteStore,
    lease: &Lease,
    job_ids: &[Uuid],
) -> Result<Vec<Uuid>, StoreError> {
    let ids: Vec<String> = job_ids.iter().map(Uuid::to_string).collect();
    let (owner, expiry) = (lease.instance.to_string(), lease_expiry(lease));
    store
        .call(move |c| {
            let mut renewed = Vec::with_capacity(ids.len());
            {
                let mut stmt = c.prepare_cached(
                    "UPDATE jobs SET owner_instance = ?2, lease_expires_at = ?3
                     WHERE id = ?1 AND status IN ('pending', 'processing') RETURNING id",
                )?;
                for id in &ids {
                    if let Some(raw) = stmt
                        .query_row(params![id, owner, expiry], |row| row.get::<_, String>(0))
                        .optional()?
                    {
                        renewed.push(parse_uuid(raw)?);
                    }
                }
            }
            Ok(renewed)
        })
        .await
}

pub(super) async fn expired_jobs(store: &SqliteStore) -> Result<Vec<JobRow>, StoreError> {
    store
        .call(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs
                 WHERE status IN ('pending', 'processing')
                   AND (lease_expires_at IS NULL OR lease_expires_at < ?1)"
            ))?;
            let rows = stmt.query_map(params![now_text()], job_from_row)?;
            rows.collect()
        })
        .await
}

pub(super) async fn fail_expired_jobs(
    store: &SqliteStore,
    error: &str,
) -> Result<Vec<JobRow>, StoreError> {
    let error = error.to_string();
    store
        .call(move |c| {
            let now = now_text();
            let mut stmt = c.prepare_cached(&format!(
                "UPDATE jobs SET status = 'failed', error = ?1, updated_at = ?2
                 WHERE status IN ('pending', 'processing')
                   AND (lease_expires_at IS NULL OR lease_expires_at < ?2)
                 RETURNING {JOB_COLUMNS}"
            ))?;
            let rows = stmt.query_map(params![error, now], job_from_row)?;
            rows.collect()
        })
        .await
}
