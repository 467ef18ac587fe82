//! The Supabase store: PostgreSQL tables of data-and-auth.md Appendix B, used directly.
//!
//! Every call is one transaction on a pooled connection, opened by [`begin`] the way PostgREST
//! does it (§5.3): work on a user's behalf switches to role `authenticated` with the verified
//! claims in `request.jwt.claims`, so the database's row-level security applies on top of our
//! own `user_id` predicates; job, quota and profile bookkeeping switches to `service_role`.
//! Both settings are transaction-local (`set_config(…, true)`), so a connection goes back to
//! the pool as the login role with no claims. The login role should be NOINHERIT (the stand-in's
//! `relay`): a forgotten switch then fails with "permission denied" instead of bypassing RLS.
//!
//! Statements go through `query_typed` (unnamed statements, parameter types given), never
//! named prepared statements, so a transaction-mode pooler (Supavisor :6543) works as well as
//! session mode. `sslmode=require` in the URL selects rustls with the webpki roots; anything
//! else (unix sockets, localhost) connects without TLS.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Transaction,
};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use super::models::{ActiveJobInfo, ChatRole, HistoryItem, JobRow, JobStatus, Project};
use super::{
    JobStart, JobUpdate, Lease, QuotaDecision, QuotaKind, QuotaUsage, Store, StoreError,
};
use crate::auth::Identity;

/// Supabase's own `statement_timeout` for `authenticated`; role settings are not applied by a
/// role switch, so it is set per transaction.
const USER_STATEMENT_TIMEOUT: &str = "8s";
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Whose authority a transaction runs with.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// On the user's behalf: role `authenticated`, RLS applies to the verified claims.
    User(&'a Identity),
    /// The relay's bookkeeping: role `service_role`, which bypasses RLS.
    Service,
}

pub struct PostgresStore {
    pool: Pool,
}

type Param<'a> = (&'a (dyn ToSql + Sync), Type);

fn db_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Database(describe(&e))
}

/// The error with its causes (tokio-postgres' own Display omits them), but of a database
/// error only the message and SQLSTATE: its DETAIL can quote row values such as e-mails.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let db = err
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)
            .or_else(|| err.downcast_ref::<tokio_postgres::error::DbError>());
        let part = match db {
            Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
            None => err.to_string(),
        };
        // Wrappers such as the pool's error repeat their cause in their own text.
        if !text.ends_with(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        next = err.source();
    }
    text
}

fn decode_err(what: &str) -> StoreError {
    StoreError::Database(format!("unexpected {what} in the database"))
}

/// Open a transaction on `conn` under `scope`. Role and claims are transaction-local: they end
/// with COMMIT or ROLLBACK (dropping the transaction rolls back).
pub async fn begin<'c>(
    conn: &'c mut Object,
    scope: Scope<'_>,
) -> Result<Transaction<'c>, StoreError> {
    let tx = conn.transaction().await.map_err(db_err)?;
    match scope {
        Scope::User(who) => {
            let claims: &str = &who.claims;
            // Fixed role names only: the token's own `role` claim never picks the role.
            tx.query_typed(
                "SELECT set_config('role', 'authenticated', true),
                        set_config('request.jwt.claims', $1, true),
                        set_config('statement_timeout', $2, true),
                        set_config('TimeZone', 'UTC', true)",
                &[(&claims, Type::TEXT), (&USER_STATEMENT_TIMEOUT, Type::TEXT)],
            )
            .await
            .map_err(db_err)?;
        }
        Scope::Service => {
            // UTC so `current_date` in the quota functions is the UTC day, as on Supabase.
            tx.query_typed(
                "SELECT set_config('role', 'service_role', true), set_config('TimeZone', 'UTC', true)",
                &[],
            )
            .await
            .map_err(db_err)?;
        }
    }
    Ok(tx)
}

fn tls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Unavailable(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl PostgresStore {
    /// Pool up to `max_connections` connections to `url` and check that one can be opened.
    pub async fn connect(url: &str, max_connections: usize) -> Result<Self, StoreError> {
        // The parse error never echoes the URL, so the password stays out of logs.
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("invalid DATABASE_URL: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name("dreamcore-relay");
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if config.get_ssl_mode() == SslMode::Require {
            Manager::from_config(config, tls_connector()?, manager_config)
        } else {
            Manager::from_config(config, NoTls, manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let store = Self { pool };
        // Fail at start-up, not on the first message, when the database is unreachable.
        drop(store.connection().await?);
        Ok(store)
    }

    /// A pooled connection, for [`begin`].
    pub async fn connection(&self) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("database connection: {}", describe(&e))))
    }
}

async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Vec<Row>, StoreError> {
    tx.query_typed(sql, params).await.map_err(db_err)
}

async fn query_opt(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Option<Row>, StoreError> {
    tx.query_typed_opt(sql, params).await.map_err(db_err)
}

async fn query_one(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Row, StoreError> {
    tx.query_typed_one(sql, params).await.map_err(db_err)
}

async fn commit(tx: Transaction<'_>) -> Result<(), StoreError> {
    tx.commit().await.map_err(db_err)
}

fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
    row: &'r Row,
    idx: usize,
) -> Result<T, StoreError> {
    row.try_get(idx).map_err(db_err)
}

fn parse_status(raw: Option<String>) -> Result<JobStatus, StoreError> {
    raw.as_deref()
        .and_then(JobStatus::parse)
        .ok_or_else(|| decode_err("job status"))
}

/// Project columns over `projects p LEFT JOIN publish_drafts d`: the draft description comes
/// in the same query (upstream fetched it with one extra request per project).
const PROJECT_COLUMNS: &str =
    "p.id, p.user_id, p.name, coalesce(d.description, ''), p.is_public, p.remixed_from,
     coalesce(p.is_initialized, false), p.created_at, p.updated_at";

fn project_from_row(row: &Row) -> Result<Project, StoreError> {
    Ok(Project {
        id: get(row, 0)?,
        user_id: get(row, 1)?,
        name: get(row, 2)?,
        description: get(row, 3)?,
        is_public: get(row, 4)?,
        remixed_from: get(row, 5)?,
        is_initialized: get(row, 6)?,
        created_at: get(row, 7)?,
        updated_at: get(row, 8)?,
    })
}

// `progress` and the timestamps are nullable in the Supabase schema; the rows we write always
// have them, the fallbacks only keep a hand-edited row readable.
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

fn quota_limit(limit: i64) -> Result<i32, StoreError> {
    i32::try_from(limit)
        .map_err(|_| StoreError::Database(format!("quota limit {limit} out of range")))
}

impl PostgresStore {
    async fn project_query(
        &self,
        who: &Identity,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Option<Project>, StoreError> {
        let mut conn = self.connection().await?;
        let tx = begin(&mut conn, Scope::User(who)).await?;
        let project = query_opt(&tx, sql, params)
            .await?
            .as_ref()
            .map(project_from_row)
            .transpose()?;
        commit(tx).await?;
        Ok(project)
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn ensure_user(&self, who: &Identity) -> Result<(), StoreError> {
        let (email, name, avatar) = (who.email.clone(), who.display_name(), who.avatar_url());
        let mut conn = self.connection().await?;
        let tx = begin(&mut conn, Scope::Service).await?;
        // No conflict target: with `(id)` only, two concurrent first inits of one user can
        // still collide on the unique e-mail index and fail.
        let inserted = tx
            .query_typed(
                "INSERT INTO users (id, email, display_name, avatar_url) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING RETURNING id",
                &[
                    (&who.user_id, Type::UUID),
                    (&email, Type::TEXT),
                    (&name, Type::TEXT),
                    (&avatar, Type::TEXT),
                ],
            )
            .await;
        match inserted {
            Ok(rows) if !rows.is_empty() => commit(tx).await,
            Ok(_) => {
                let exists = query_opt(
                    &tx,
                    "SELECT 1 FROM users WHERE id = $1",
                    &[(&who.user_id, Type::UUID)],
                )
                .await?;
                commit(tx).await?;
                if exists.is_none() {
                    tracing::warn!(user_id = %who.user_id, "users profile not created: its e-mail belongs to another profile");
                }
                Ok(())
            }
            // `users.id` references `auth.users`: without that row (never the case for a token
            // GoTrue issued) the profile cannot exist; later writes will say so.
            Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
                tracing::warn!(user_id = %who.user_id, "no auth.users row; users profile not created");
                Ok(())
            }
            Err(e) => Err(db_err(e)),
        }
    }

    async fn list_projects(&self, who: &Identity) -> Result<Vec<Project>, StoreError> {
        let mut conn = self.connection().await?;
        let tx = begin(&mut conn, Scope::User(who)).await?;
        let rows = query(
            &tx,
            &format!(
                "SELECT {PROJECT_COLUMNS} FROM projects p LEFT JOIN publish_drafts d ON d.project_id = p.id
                 WHERE p.user_id = $1 ORDER BY p.updated_at DESC"
            ),
            &[(&who.user_id, Type::UUID)],
        )
        .await?;
        commit(tx).await?;
        rows.iter().map(project_from_row).collect()
    }

    async fn get_project(
        &self,
        who: &Identity,
        project_id: Uuid,
    ) -> Result<Option<Project>, StoreError> {
        self.project_query(
            who,
            &format!(
                "SELECT {PROJECT_COLUMNS} FROM projects p LEFT JOIN publish_drafts d ON d.project_id = p.id
                 WHERE p.id = $1 AND p.user_id = $2"
            ),
            &[(&project_id, Type::UUID), (&who.user_id, Type::UUID)],
        )
        .await
    }

    async fn create_project(&self, who: &Identity, name: &str) -> Result<Project, StoreError> {
        let id = Uuid::now_v7();
        self.project_query(
            who,
            &format!(
                "WITH p AS (INSERT INTO projects (id, user_id, name) VALUES ($1, $2, $3) RETURNING *)
                 SELECT {PROJECT_COLUMNS} FROM p LEFT JOIN publish_drafts d ON d.project_id = p.id"
            ),
            &[(&id, Type::UUID), (&who.user_id, Type::UUID), (&name, Type::TEXT)],
        )
        .await?
        .ok_or_else(|| StoreError::Database("project insert returned no row".into()))
    }

    async fn rename_project(
        &self,
        who: &Identity,
        project_id: Uuid,
        name: &str,
    ) -> Result<Option<Project>, StoreError> {
        // `updated_at` is bumped by the `projects_updated_at` trigger.
        self.project_query(
            who,
            &format!(
                "WITH p AS (UPDATE projects SET name = $3 WHERE id = $1 AND user_id = $2 RETURNING *)
                 SELECT {PROJECT_COLUMNS} FROM p LEFT JOIN publish_drafts d ON d.project_id = p.id"
            ),
            &[(&project_id, Type::UUID), (&who.user_id, Type::UUID), (&name, Type::TEXT)],
        )
        .await
    }

    async fn delete_project(&self, who: &Identity, project_id: Uuid) -> Result<bool, StoreError> {
        let mut conn = self.connection().await?;
        let tx = begin(&mut conn, Scope::User(who)).await?;
        let rows = query(
            &tx,
            "DELETE FROM projects WHERE id = $1 AND user_id = $2 RETURNING id",
            &[(&project_id, Type::UUID), (&who.user_id, Type::UUID)],
        )
        .await?;
        commit(tx).await?;
        Ok(!rows.is_empty())
    }

    async fn history(
        &self,
        who: &Identity,
        project_id: Uuid,
        limit: usize,
    ) -> Result<Vec<HistoryItem>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.connection().await?;
        let tx = begin(&mut conn, Scope::User(who)).await?;
        // `id` breaks ties: production ids are time-ordered v7.
        let rows = query(
            &tx,
            "SELECT h.role, h.message, coalesce(h.created_at, 'epoch'::timestamptz) FROM chat_history h
             WHERE h.project_id = $1 AND h.role IN ('user', 'assistant')
               AND EXISTS (SELECT 1 FROM projects p WHERE p.id = h.project_id AND p.user_id = $2)
             ORDER BY h.created_at DESC NULLS LAST, h.id DESC LIMIT $3",
            &[(&project_id, Type::UUID), (&who.user_id, Type::UUID), (&limit, Type::INT8)],
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

    async fn add_user_message(
        &self,
        who: &Identity,
        project_id: Uuid,
        content: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
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

    async fn add_history(
        &self,
        project_id: Uuid,
        role: ChatRole,
        content: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
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

    async fn mark_initialized(&self, project_id: Uuid) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let tx = begin(&mut conn, Scope::Service).await?;
        query(
            &tx,
            "UPDATE projects SET is_initialized = true WHERE id = $1",
            &[(&project_id, Type::UUID)],
        )
        .await?;
        commit(tx).await
    }

    async fn start_job(
        &self,
        user_id: Uuid,
        project_id: Uuid,
        job_id: Uuid,
        now: DateTime<Utc>,
        lease: &Lease,
    ) -> Result<JobStart, StoreError> {
        let ttl_ms = lease.ttl_millis();
        let mut conn = self.connection().await?;
        let tx = begin(&mut conn, Scope::Service).await?;
        // Serialises check-then-insert per project across connections and relay instances
        // (the shared schema has no unique index on active jobs). Released at COMMIT, after the
        // new row is visible to the next holder's fresh READ COMMITTED snapshot.
        query(
            &tx,
            "SELECT pg_advisory_xact_lock(hashtext($1::text))",
            &[(&project_id, Type::UUID)],
        )
        .await?;
        if let Some(existing) = select_active_job(&tx, &project_id).await? {
            commit(tx).await?;
            return Ok(JobStart::Existing(existing));
        }
        let row = query_one(
            &tx,
            &format!(
                "INSERT INTO jobs (id, user_id, project_id, status, progress, created_at, updated_at,
                                   owner_instance, lease_expires_at)
                 VALUES ($1, $2, $3, 'pending', 0, $4, $4, $5, now() + $6 * interval '1 millisecond')
                 RETURNING {JOB_COLUMNS}"
            ),
            &[
                (&job_id, Type::UUID),
                (&user_id, Type::UUID),
                (&project_id, Type::UUID),
                (&now, Type::TIMESTAMPTZ),
                (&lease.instance, Type::UUID),
                (&ttl_ms, Type::INT8),
            ],
        )
        .await?;
        let job = job_from_row(&row)?;
        commit(tx).await?;
        Ok(JobStart::Created(job))
    }

    async fn update_job(
        &self,
        job_id: Uuid,
        update: &JobUpdate,
    ) -> Result<Option<JobRow>, StoreError> {
        let status = update.status.map(JobStatus::as_str);
        let mut conn = self.connection().await?;
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

    async fn get_job(&self, job_id: Uuid) -> Result<Option<JobRow>, StoreError> {
        let mut conn = self.connection().await?;
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

    async fn active_job(&self, project_id: Uuid) -> Result<Option<JobRow>, StoreError> {
        let mut conn = self.connection().await?;
        let tx = begin(&mut conn, Scope::Service).await?;
        let job = select_active_job(&tx, &project_id).await?;
        commit(tx).await?;
        Ok(job)
    }

    async fn active_jobs_for_user(&self, user_id: Uuid) -> Result<Vec<ActiveJobInfo>, StoreError> {
        let mut conn = self.connection().await?;
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

    async fn renew_leases(&self, lease: &Lease, job_ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ttl_ms = lease.ttl_millis();
        let ids = job_ids.to_vec();
        let mut conn = self.connection().await?;
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

    async fn fail_expired_jobs(&self, error: &str) -> Result<Vec<JobRow>, StoreError> {
        let mut conn = self.connection().await?;
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

    async fn plan(&self, user_id: Uuid) -> Result<String, StoreError> {
        let mut conn = self.connection().await?;
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

    async fn consume_quota(
        &self,
        user_id: Uuid,
        kind: QuotaKind,
        limit: i64,
    ) -> Result<QuotaDecision, StoreError> {
        let limit = quota_limit(limit)?;
        let field = kind.column();
        let mut conn = self.connection().await?;
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

    async fn quota_usage(&self, user_id: Uuid) -> Result<QuotaUsage, StoreError> {
        let mut conn = self.connection().await?;
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
}
