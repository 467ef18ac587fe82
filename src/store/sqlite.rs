//! The embedded store: one SQLite file under `DATA_DIR`, created and migrated at start.
//! One connection owned by one dedicated thread executes every call in turn (SQLite allows
//! one writer anyway): the async runtime never waits on disk, and a burst of requests queues
//! as closures instead of parking hundreds of blocking-pool threads on a lock.

use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

use super::models::{iso_millis, ActiveJobInfo, ChatRole, HistoryItem, JobRow, JobStatus, Project};
use super::{
    JobStart, JobUpdate, Lease, QuotaDecision, QuotaKind, QuotaUsage, Store, StoreError,
};
use crate::auth::Identity;

/// Each entry moves the schema one version forward; never edit a released entry.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE users (
    id           TEXT PRIMARY KEY,
    email        TEXT,
    display_name TEXT,
    avatar_url   TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE TABLE projects (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    is_public      INTEGER NOT NULL DEFAULT 0,
    remixed_from   TEXT,
    is_initialized INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX idx_projects_user_updated ON projects(user_id, updated_at DESC);
CREATE TABLE chat_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    message    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX idx_chat_history_project ON chat_history(project_id, id DESC);
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id       TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    status           TEXT NOT NULL
                     CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    progress         INTEGER NOT NULL DEFAULT 0,
    progress_message TEXT,
    result           TEXT,
    error            TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX idx_jobs_user_status ON jobs(user_id, status);
-- One unfinished job per project, enforced by the database itself.
CREATE UNIQUE INDEX idx_jobs_one_active ON jobs(project_id) WHERE status IN ('pending', 'processing');
CREATE TABLE subscriptions (
    user_id TEXT PRIMARY KEY,
    plan    TEXT NOT NULL DEFAULT 'free',
    status  TEXT NOT NULL DEFAULT 'active'
);
CREATE TABLE usage_quotas (
    user_id          TEXT NOT NULL,
    quota_date       TEXT NOT NULL,
    projects_created INTEGER NOT NULL DEFAULT 0,
    messages_sent    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, quota_date)
);
"#, r#"
ALTER TABLE jobs ADD COLUMN owner_instance TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires_at TEXT;
"#];

type Task = Box<dyn FnOnce(&mut Connection) + Send>;

pub struct SqliteStore {
    tasks: std::sync::mpsc::Sender<Task>,
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

fn parse_ts(raw: String) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

fn parse_uuid(raw: String) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(&raw).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

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

fn now_text() -> String {
    iso_millis(&Utc::now())
}

/// When a lease taken or renewed now expires. One machine's clock is the database's clock here.
fn lease_expiry(lease: &Lease) -> String {
    iso_millis(&(Utc::now() + chrono::Duration::milliseconds(lease.ttl_millis())))
}

fn today() -> String {
    Utc::now().date_naive().to_string()
}

impl SqliteStore {
    /// Open (creating if needed) `path` and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        Self::init(conn)
    }

    /// A private in-memory database (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(db_err)?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        // WAL + NORMAL: a crash loses at most the last transactions, never corrupts.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err)?;
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map_err(db_err)? as usize;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Unavailable(format!(
                "database schema version {version} is newer than this relay ({})",
                MIGRATIONS.len()
            )));
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction().map_err(db_err)?;
            tx.execute_batch(sql).map_err(db_err)?;
            tx.pragma_update(None, "user_version", (index + 1) as i64)
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
        }
        let (tasks, queue) = std::sync::mpsc::channel::<Task>();
        std::thread::Builder::new()
            .name("sqlite".into())
            .spawn(move || {
                let mut conn = conn;
                // Ends when the store (every sender) is dropped.
                for task in queue {
                    task(&mut conn);
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite thread: {e}")))?;
        Ok(Self { tasks })
    }

    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let stopped = || StoreError::Unavailable("the SQLite thread stopped".into());
        self.tasks
            .send(Box::new(move |conn: &mut Connection| {
                let _ = reply.send(f(conn).map_err(db_err));
            }))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn select_job(conn: &Connection, job_id: &str) -> rusqlite::Result<Option<JobRow>> {
    conn.query_row(
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
        params![job_id],
        job_from_row,
    )
    .optional()
}

fn select_active_job(conn: &Connection, project_id: &str) -> rusqlite::Result<Option<JobRow>> {
    conn.query_row(
        &format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE project_id = ?1 AND status IN ('pending', 'processing')
             ORDER BY created_at DESC LIMIT 1"
        ),
        params![project_id],
        job_from_row,
    )
    .optional()
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn ensure_user(&self, who: &Identity) -> Result<(), StoreError> {
        let (id, email, name, avatar) = (
            who.user_id.to_string(),
            who.email.clone(),
            who.display_name(),
            who.avatar_url(),
        );
        self.call(move |c| {
            let now = now_text();
            c.execute(
                "INSERT INTO users (id, email, display_name, avatar_url, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (id) DO NOTHING",
                params![id, email, name, avatar, now],
            )
            .map(|_| ())
        })
        .await
    }

    async fn list_projects(&self, who: &Identity) -> Result<Vec<Project>, StoreError> {
        let uid = who.user_id.to_string();
        self.call(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {PROJECT_COLUMNS} FROM projects WHERE user_id = ?1 ORDER BY updated_at DESC"
            ))?;
            let rows = stmt.query_map(params![uid], project_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn get_project(
        &self,
        who: &Identity,
        project_id: Uuid,
    ) -> Result<Option<Project>, StoreError> {
        let (uid, pid) = (who.user_id.to_string(), project_id.to_string());
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?1 AND user_id = ?2"),
                params![pid, uid],
                project_from_row,
            )
            .optional()
        })
        .await
    }

    async fn create_project(&self, who: &Identity, name: &str) -> Result<Project, StoreError> {
        let (uid, name) = (who.user_id.to_string(), name.to_string());
        let id = Uuid::now_v7().to_string();
        self.call(move |c| {
            let now = now_text();
            c.query_row(
                &format!(
                    "INSERT INTO projects (id, user_id, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
                     RETURNING {PROJECT_COLUMNS}"
                ),
                params![id, uid, name, now],
                project_from_row,
            )
        })
        .await
    }

    async fn rename_project(
        &self,
        who: &Identity,
        project_id: Uuid,
        name: &str,
    ) -> Result<Option<Project>, StoreError> {
        let (uid, pid, name) = (
            who.user_id.to_string(),
            project_id.to_string(),
            name.to_string(),
        );
        self.call(move |c| {
            c.query_row(
                &format!(
                    "UPDATE projects SET name = ?3, updated_at = ?4 WHERE id = ?1 AND user_id = ?2
                     RETURNING {PROJECT_COLUMNS}"
                ),
                params![pid, uid, name, now_text()],
                project_from_row,
            )
            .optional()
        })
        .await
    }

    async fn delete_project(&self, who: &Identity, project_id: Uuid) -> Result<bool, StoreError> {
        let (uid, pid) = (who.user_id.to_string(), project_id.to_string());
        self.call(move |c| {
            c.execute(
                "DELETE FROM projects WHERE id = ?1 AND user_id = ?2",
                params![pid, uid],
            )
            .map(|n| n > 0)
        })
        .await
    }

    async fn history(
        &self,
        who: &Identity,
        project_id: Uuid,
        limit: usize,
    ) -> Result<Vec<HistoryItem>, StoreError> {
        let (uid, pid) = (who.user_id.to_string(), project_id.to_string());
        self.call(move |c| {
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

    async fn add_user_message(
        &self,
        who: &Identity,
        project_id: Uuid,
        content: &str,
    ) -> Result<(), StoreError> {
        let (uid, pid, content) = (
            who.user_id.to_string(),
            project_id.to_string(),
            content.to_string(),
        );
        self.call(move |c| {
            let tx = c.transaction()?;
            let now = now_text();
            let touched = tx.execute(
                "UPDATE projects SET updated_at = ?3 WHERE id = ?1 AND user_id = ?2",
                params![pid, uid, now],
            )?;
            // Only the owner may write into a project's history.
            if touched == 1 {
                tx.execute(
                    "INSERT INTO chat_history (project_id, role, message, created_at) VALUES (?1, 'user', ?2, ?3)",
                    params![pid, content, now],
                )?;
            }
            tx.commit()
        })
        .await
    }

    async fn add_history(
        &self,
        project_id: Uuid,
        role: ChatRole,
        content: &str,
    ) -> Result<(), StoreError> {
        let (pid, content) = (project_id.to_string(), content.to_string());
        self.call(move |c| {
            let tx = c.transaction()?;
            let now = now_text();
            tx.execute(
                "INSERT INTO chat_history (project_id, role, message, created_at)
                 SELECT id, ?2, ?3, ?4 FROM projects WHERE id = ?1",
                params![pid, role.as_str(), content, now],
            )?;
            tx.execute(
                "UPDATE projects SET updated_at = ?2 WHERE id = ?1",
                params![pid, now],
            )?;
            tx.commit()
        })
        .await
    }

    async fn mark_initialized(&self, project_id: Uuid) -> Result<(), StoreError> {
        let pid = project_id.to_string();
        self.call(move |c| {
            c.execute(
                "UPDATE projects SET is_initialized = 1 WHERE id = ?1",
                params![pid],
            )
            .map(|_| ())
        })
        .await
    }

    async fn start_job(
        &self,
        user_id: Uuid,
        project_id: Uuid,
        job_id: Uuid,
        now: DateTime<Utc>,
        lease: &Lease,
    ) -> Result<JobStart, StoreError> {
        let (uid, pid, jid) = (
            user_id.to_string(),
            project_id.to_string(),
            job_id.to_string(),
        );
        let (owner, expiry) = (lease.instance.to_string(), lease_expiry(lease));
        self.call(move |c| {
            // IMMEDIATE takes the write lock first, so check-then-insert is atomic across processes.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if let Some(existing) = select_active_job(&tx, &pid)? {
                return Ok(JobStart::Existing(existing));
            }
            let now = iso_millis(&now);
            tx.execute(
                "INSERT INTO jobs (id, user_id, project_id, status, progress, created_at, updated_at,
                                   owner_instance, lease_expires_at)
                 VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4, ?5, ?6)",
                params![jid, uid, pid, now, owner, expiry],
            )?;
            let row = select_job(&tx, &jid)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            tx.commit()?;
            Ok(JobStart::Created(row))
        })
        .await
    }

    async fn update_job(
        &self,
        job_id: Uuid,
        update: &JobUpdate,
    ) -> Result<Option<JobRow>, StoreError> {
        let jid = job_id.to_string();
        let update = update.clone();
        self.call(move |c| {
            c.query_row(
                &format!(
                    "UPDATE jobs SET
                        status = coalesce(?2, status),
                        progress = coalesce(?3, progress),
                        progress_message = coalesce(?4, progress_message),
                        result = coalesce(?5, result),
                        error = coalesce(?6, error),
                        updated_at = ?7
                     WHERE id = ?1 AND status IN ('pending', 'processing')
                     RETURNING {JOB_COLUMNS}"
                ),
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
        })
        .await
    }

    async fn get_job(&self, job_id: Uuid) -> Result<Option<JobRow>, StoreError> {
        let jid = job_id.to_string();
        self.call(move |c| select_job(c, &jid)).await
    }

    async fn active_job(&self, project_id: Uuid) -> Result<Option<JobRow>, StoreError> {
        let pid = project_id.to_string();
        self.call(move |c| select_active_job(c, &pid)).await
    }

    async fn active_jobs_for_user(&self, user_id: Uuid) -> Result<Vec<ActiveJobInfo>, StoreError> {
        let uid = user_id.to_string();
        self.call(move |c| {
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

    async fn renew_leases(&self, lease: &Lease, job_ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let ids: Vec<String> = job_ids.iter().map(Uuid::to_string).collect();
        let (owner, expiry) = (lease.instance.to_string(), lease_expiry(lease));
        self.call(move |c| {
            let tx = c.transaction()?;
            let mut renewed = Vec::with_capacity(ids.len());
            {
                let mut stmt = tx.prepare_cached(
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
            tx.commit()?;
            Ok(renewed)
        })
        .await
    }

    async fn fail_expired_jobs(&self, error: &str) -> Result<Vec<JobRow>, StoreError> {
        let error = error.to_string();
        self.call(move |c| {
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

    async fn plan(&self, user_id: Uuid) -> Result<String, StoreError> {
        let uid = user_id.to_string();
        self.call(move |c| {
            c.query_row(
                "SELECT plan FROM subscriptions WHERE user_id = ?1 AND status = 'active'",
                params![uid],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|plan| plan.unwrap_or_else(|| "free".to_string()))
        })
        .await
    }

    async fn consume_quota(
        &self,
        user_id: Uuid,
        kind: QuotaKind,
        limit: i64,
    ) -> Result<QuotaDecision, StoreError> {
        let uid = user_id.to_string();
        let column = kind.column();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let day = today();
            tx.execute(
                "INSERT INTO usage_quotas (user_id, quota_date) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![uid, day],
            )?;
            let count: i64 = tx.query_row(
                &format!("SELECT {column} FROM usage_quotas WHERE user_id = ?1 AND quota_date = ?2"),
                params![uid, day],
                |r| r.get(0),
            )?;
            if limit != -1 && count >= limit {
                tx.commit()?;
                return Ok(QuotaDecision { allowed: false, count });
            }
            tx.execute(
                &format!("UPDATE usage_quotas SET {column} = {column} + 1 WHERE user_id = ?1 AND quota_date = ?2"),
                params![uid, day],
            )?;
            tx.commit()?;
            Ok(QuotaDecision {
                allowed: true,
                count: count + 1,
            })
        })
        .await
    }

    async fn quota_usage(&self, user_id: Uuid) -> Result<QuotaUsage, StoreError> {
        let uid = user_id.to_string();
        self.call(move |c| {
            c.query_row(
                "SELECT projects_created, messages_sent FROM usage_quotas WHERE user_id = ?1 AND quota_date = ?2",
                params![uid, today()],
                |r| {
                    Ok(QuotaUsage {
                        projects_created: r.get(0)?,
                        messages_sent: r.get(1)?,
                    })
                },
            )
            .optional()
            .map(Option::unwrap_or_default)
        })
        .await
    }
}
