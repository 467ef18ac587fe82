//! The Supabase store: PostgreSQL tables of docs/data-and-auth.md Appendix B, used directly.
//!
//! Every call is one transaction on a pooled connection, opened by [`begin`] the way PostgREST
//! does it (§5.3): work on a user's behalf switches to role `authenticated` with the verified
//! claims in `request.jwt.claims`, so the database's row-level security applies on top of our
//! own `user_id` predicates; job, quota and profile bookkeeping switches to `service_role`.
//! Both settings are transaction-local (`set_config(…, true)`), so a connection goes back to
//! the pool as the login role with no claims. The login role should be NOINHERIT (the stand-in's
//! `relay`): a forgotten switch then fails with "permission denied" instead of bypassing RLS.
//!
//! Statements go through `query_typed` (unnamed statements, parameter types given), so a
//! transaction-mode pooler (Supavisor :6543) works as well as session mode; with
//! `DATABASE_PREPARED_STATEMENTS` they are prepared once per connection and kept instead.
//! TLS follows libpq's `sslmode` (`prefer` by default: encrypted whenever the server offers
//! it over TCP), the server's certificate checked against the URL's `sslrootcert` when it
//! names one (`tls`).

mod history;
mod jobs;
mod pool;
mod projects;
mod quotas;
mod shared;
mod start;
mod tls;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use uuid::Uuid;

use super::models::{ActiveJobInfo, ChatRole, HistoryItem, JobRow, Project};
use super::{
    JobStart, JobUpdate, Lease, QuotaDecision, QuotaKind, QuotaUsage, StartLimits, Store,
    StoreError,
};
use crate::auth::Identity;

pub use pool::{begin, Conn, Scope, Tx};

/// The PostgreSQL (Supabase) store: a connection pool; each call is one scoped transaction.
pub struct PostgresStore {
    pool: Pool,
    /// `DATABASE_PREPARED_STATEMENTS`: statements prepared once per connection.
    prepared_statements: bool,
    /// What job starts learnt of the server's connection limit.
    connection_bound: start::ConnectionBound,
}

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }
    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.connection().await?;
        conn.batch_execute("SELECT 1").await.map_err(pool::db_err)
    }

    async fn ensure_user(&self, who: &Identity) -> Result<(), StoreError> {
        projects::ensure_user(self, who).await
    }

    async fn list_projects(&self, who: &Identity) -> Result<Vec<Project>, StoreError> {
        projects::list_projects(self, who).await
    }

    async fn get_project(
        &self,
        who: &Identity,
        project_id: Uuid,
    ) -> Result<Option<Project>, StoreError> {
        projects::get_project(self, who, project_id).await
    }

    async fn create_project(&self, who: &Identity, name: &str) -> Result<Project, StoreError> {
        projects::create_project(self, who, name).await
    }

    async fn rename_project(
        &self,
        who: &Identity,
        project_id: Uuid,
        name: &str,
    ) -> Result<Option<Project>, StoreError> {
        projects::rename_project(self, who, project_id, name).await
    }

    async fn delete_project(&self, who: &Identity, project_id: Uuid) -> Result<bool, StoreError> {
        projects::delete_project(self, who, project_id).await
    }

    async fn history(
        &self,
        who: &Identity,
        project_id: Uuid,
        limit: usize,
    ) -> Result<Vec<HistoryItem>, StoreError> {
        history::history(self, who, project_id, limit).await
    }

    async fn add_user_message(
        &self,
        who: &Identity,
        project_id: Uuid,
        content: &str,
    ) -> Result<(), StoreError> {
        history::add_user_message(self, who, project_id, content).await
    }

    async fn add_history(
        &self,
        project_id: Uuid,
        role: ChatRole,
        content: &str,
    ) -> Result<(), StoreError> {
        history::add_history(self, project_id, role, content).await
    }

    async fn mark_initialized(&self, project_id: Uuid) -> Result<(), StoreError> {
        projects::mark_initialized(self, project_id).await
    }

    async fn record_generation(&self, project_id: Uuid, answer: &str) -> Result<(), StoreError> {
        // Three transactions, each tried: `relay_current_versions` is the relay's own table
        // (sql/relay_shared_state.sql), and a database without it still keeps the answer.
        let stored = history::add_history(self, project_id, ChatRole::Assistant, answer).await;
        let initialized = projects::mark_initialized(self, project_id).await;
        let forgotten = shared::set_current_version(self, project_id, None).await;
        stored.and(initialized).and(forgotten)
    }

    async fn project_owner(&self, project_id: Uuid) -> Result<Option<Uuid>, StoreError> {
        projects::project_owner(self, project_id).await
    }

    async fn start_job(
        &self,
        user_id: Uuid,
        project_id: Uuid,
        job_id: Uuid,
        now: DateTime<Utc>,
        lease: &Lease,
        limits: StartLimits,
    ) -> Result<JobStart, StoreError> {
        start::start_job(self, user_id, project_id, job_id, now, lease, limits).await
    }

    async fn discard_job(&self, job_id: Uuid) -> Result<(), StoreError> {
        jobs::discard_job(self, job_id).await
    }

    async fn renew_leases(&self, lease: &Lease, job_ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        jobs::renew_leases(self, lease, job_ids).await
    }

    async fn update_job(
        &self,
        job_id: Uuid,
        update: &JobUpdate,
    ) -> Result<Option<JobRow>, StoreError> {
        jobs::update_job(self, job_id, update).await
    }

    async fn get_job(&self, job_id: Uuid) -> Result<Option<JobRow>, StoreError> {
        jobs::get_job(self, job_id).await
    }

    async fn active_job(&self, project_id: Uuid) -> Result<Option<JobRow>, StoreError> {
        jobs::active_job(self, project_id).await
    }

    async fn active_jobs_for_user(&self, user_id: Uuid) -> Result<Vec<ActiveJobInfo>, StoreError> {
        jobs::active_jobs_for_user(self, user_id).await
    }

    async fn count_active_jobs(&self) -> Result<usize, StoreError> {
        jobs::count_active_jobs(self).await
    }

    async fn expired_jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        jobs::expired_jobs(self).await
    }

    async fn fail_expired_jobs(&self, error: &str) -> Result<Vec<JobRow>, StoreError> {
        jobs::fail_expired_jobs(self, error).await
    }

    async fn plan(&self, user_id: Uuid) -> Result<String, StoreError> {
        quotas::plan(self, user_id).await
    }

    async fn consume_quota(
        &self,
        user_id: Uuid,
        kind: QuotaKind,
        limit: i64,
    ) -> Result<QuotaDecision, StoreError> {
        quotas::consume_quota(self, user_id, kind, limit).await
    }

    async fn quota_usage(&self, user_id: Uuid) -> Result<QuotaUsage, StoreError> {
        quotas::quota_usage(self, user_id).await
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn shared_secret(&self, name: &str, candidate: &str) -> Result<String, StoreError> {
        shared::shared_secret(self, name, candidate).await
    }

    async fn current_version(&self, project_id: Uuid) -> Result<Option<String>, StoreError> {
        shared::current_version(self, project_id).await
    }

    async fn set_current_version(
        &self,
        project_id: Uuid,
        version: Option<&str>,
    ) -> Result<(), StoreError> {
        shared::set_current_version(self, project_id, version).await
    }
}
