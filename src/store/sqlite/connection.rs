//! Opening the file: the pragmas, the schema migrations, and the conversions every row reader
//! shares. The thread that then owns the connection is in `thread`.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use uuid::Uuid;

use super::thread::{self, db_err};
use super::SqliteStore;
use crate::store::models::iso_millis;
use crate::store::StoreError;

/// Prepared statements kept by the connection: more than the store has distinct queries.
const STATEMENT_CACHE: usize = 64;

/// Each entry moves the schema one version forward; never edit a released entry.
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
ALTER TABLE jobs ADD COLUMN owner_instance TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires_at TEXT;
"#,
    r#"
CREATE TABLE relay_secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE relay_current_versions (
    project_id TEXT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    version    TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"#,
];

pub(super) fn parse_ts(raw: String) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

pub(super) fn parse_uuid(raw: String) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(&raw).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn now_text() -> String {
    iso_millis(&Utc::now())
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
        // Every statement of the store stays prepared: parsing SQL was 5 % of the relay's CPU
        // under a burst of jobs.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
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
        Ok(Self {
            tasks: thread::start(conn)?,
        })
    }
}
