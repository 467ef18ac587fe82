//! The embedded store: one SQLite file under `DATA_DIR`, created and migrated at start.
//! One connection owned by one dedicated thread executes every call in turn (SQLite allows
//! one writer anyway): the async runtime never waits on disk, and a burst of requests queues
//! as closures instead of parking hundreds of blocking-pool threads on a lock.
//!
//! This file holds the store type and forwards the [`Store`] trait; `connection` opens the
//! file and migrates the schema, `thread` runs the calls (grouped into shared transactions),
//! and one file per table group holds the queries.

mod connection;
mod history;
mod jobs;
mod projects;
mod quotas;
mod shared;
mod thread;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::models::{ActiveJobInfo, ChatRole, HistoryItem, JobRow, Project};
use super::{
    JobStart, JobUpdate, Lease, PlanCharge, PlanLimits, QuotaDecision, QuotaKind, QuotaUsage,
    StartLimits, Store, StoreError,
};
use crate::auth::Identity;

/// The SQLite store: a queue into the one thread that owns the database connection.
pub struct SqliteStore {
    tasks: std::sync::mpsc::Sender<thread::Task>,
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
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
        history::record_generation(self, project_id, answer).await
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
        jobs::start_job(self, user_id, project_id, job_id, now, lease, limits).await
    }

    async fn discard_job(&self, job_id: Uuid) -> Result<(), StoreError> {
        jobs::discard_job(self, job_id).await
    }

    async fn renew_leases(&self, lease: &Lease, job_ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        jobs::renew_leases(self, lease, job_ids).await
    }

    async fn complete_generation(
        &self,
        job_id: Uuid,
        update: &JobUpdate,
        project_id: Uuid,
        answer: &str,
    ) -> Result<Option<JobRow>, StoreError> {
        jobs::complete_generation(self, job_id, update, project_id, answer).await
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

    async fn consume_plan_quota(
        &self,
        user_id: Uuid,
        kind: QuotaKind,
        limits: PlanLimits,
    ) -> Result<PlanCharge, StoreError> {
        quotas::consume_plan_quota(self, user_id, kind, limits).await
    }

    async fn charge_message(
        &self,
        who: &Identity,
        project_id: Uuid,
        limits: PlanLimits,
        content: &str,
    ) -> Result<PlanCharge, StoreError> {
        history::charge_message(self, who, project_id, limits, content).await
    }

    async fn quota_usage(&self, user_id: Uuid) -> Result<QuotaUsage, StoreError> {
        quotas::quota_usage(self, user_id).await
    }

    fn is_shared(&self) -> bool {
        false
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
