//! Durable state: users, projects, chat history, jobs, quotas. One trait, two
//! implementations: SQLite (embedded default) and PostgreSQL (Supabase, with RLS).
//!
//! Methods taking an [`Identity`] act on the user's behalf: on PostgreSQL they run under the
//! `authenticated` role with the verified claims, so row-level security applies. The others
//! are the relay's own bookkeeping (service role).

pub mod models;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::auth::Identity;
use models::{ActiveJobInfo, ChatRole, HistoryItem, JobRow, JobStatus, Project};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// Outcome of asking for a new job on a project.
#[derive(Debug, Clone)]
pub enum JobStart {
    /// A fresh `pending` job was inserted.
    Created(JobRow),
    /// The project already had an unfinished job; nothing was inserted.
    Existing(JobRow),
    /// The user already has `StartLimits::per_user` unfinished jobs; nothing was inserted.
    UserFull,
    /// `StartLimits::total` unfinished jobs exist; nothing was inserted.
    Full,
}

/// Limits a job start checks in the same transaction as its insert (the cluster-wide slots:
/// several instances share the database). `None`: not checked there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartLimits {
    /// Unfinished jobs one user may have.
    pub per_user: Option<usize>,
    /// Unfinished jobs all users together may have.
    pub total: Option<usize>,
}

impl StartLimits {
    /// No limit checked by the store (one instance: its own slot limiter decides).
    pub const NONE: StartLimits = StartLimits {
        per_user: None,
        total: None,
    };
}

/// A change to a job row. Applied only while the job is still `pending` or `processing`,
/// so a terminal status is written exactly once and never overwritten.
#[derive(Debug, Clone, Default)]
pub struct JobUpdate {
    /// New status, if it changes.
    pub status: Option<JobStatus>,
    /// New progress percentage, if it changes.
    pub progress: Option<i32>,
    /// New progress text, if it changes.
    pub progress_message: Option<String>,
    /// The result, once there is one.
    pub result: Option<String>,
    /// The error, once there is one.
    pub error: Option<String>,
}

/// Which daily quota: projects created or messages sent.
/// The instance running a job, and how long after each renewal the job may be presumed alive.
/// Expiry is computed by the database's clock, so instances never compare their own clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub instance: Uuid,
    pub ttl: std::time::Duration,
}

impl Lease {
    fn ttl_millis(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    ProjectsCreated,
    MessagesSent,
}

impl QuotaKind {
    /// The database column that counts this quota.
    pub fn column(self) -> &'static str {
        match self {
            Self::ProjectsCreated => "projects_created",
            Self::MessagesSent => "messages_sent",
        }
    }
}

/// The store's answer to a quota check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDecision {
    /// Whether the use was allowed.
    pub allowed: bool,
    /// Today's count after the call (post-increment when allowed).
    pub count: i64,
}

/// A plan's daily limit for a quota: -1 is unlimited, `None` a plan the relay has no limits
/// for.
pub type PlanLimits = fn(&str, QuotaKind) -> Option<i64>;

/// What charging a quota by the user's plan did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanCharge {
    /// The plan's limit was applied.
    Applied {
        /// The limit of the user's plan.
        limit: i64,
        /// Whether the use was counted, and today's count.
        decision: QuotaDecision,
    },
    /// The plan has no known limit; nothing was counted.
    UnknownPlan(String),
}

impl PlanCharge {
    /// Whether the plan's limit refused the use.
    pub fn refused(&self) -> bool {
        matches!(self, Self::Applied { decision, .. } if !decision.allowed)
    }
}

/// A user's usage today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaUsage {
    /// Projects created today.
    pub projects_created: i64,
    /// Messages sent today.
    pub messages_sent: i64,
}

/// Where users, projects, jobs and chat history are kept.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which implementation, for logs and `/ready`.
    fn kind(&self) -> &'static str;
    /// One trivial round trip: whether the store answers at all, for `/ready`.
    async fn ping(&self) -> Result<(), StoreError>;

    // --- on the user's behalf -------------------------------------------------------------
    /// Make sure the `users` row exists (idempotent, safe under concurrent inits).
    async fn ensure_user(&self, who: &Identity) -> Result<(), StoreError>;
    /// The user's projects, newest `updated_at` first, with draft descriptions.
    async fn list_projects(&self, who: &Identity) -> Result<Vec<Project>, StoreError>;
    /// The project if it exists and belongs to the user.
    async fn get_project(
        &self,
        who: &Identity,
        project_id: Uuid,
    ) -> Result<Option<Project>, StoreError>;
    async fn create_project(&self, who: &Identity, name: &str) -> Result<Project, StoreError>;
    async fn rename_project(
        &self,
        who: &Identity,
        project_id: Uuid,
        name: &str,
    ) -> Result<Option<Project>, StoreError>;
    /// True when a row was deleted. History and jobs go with it.
    async fn delete_project(&self, who: &Identity, project_id: Uuid) -> Result<bool, StoreError>;
    /// The last `limit` entries, oldest first.
    async fn history(
        &self,
        who: &Identity,
        project_id: Uuid,
        limit: usize,
    ) -> Result<Vec<HistoryItem>, StoreError>;
    /// Store the user's message and touch the project's `updated_at`.
    async fn add_user_message(
        &self,
        who: &Identity,
        project_id: Uuid,
        content: &str,
    ) -> Result<(), StoreError>;

    // --- relay bookkeeping ----------------------------------------------------------------
    async fn add_history(
        &self,
        project_id: Uuid,
        role: ChatRole,
        content: &str,
    ) -> Result<(), StoreError>;
    async fn mark_initialized(&self, project_id: Uuid) -> Result<(), StoreError>;
    /// A generation's end: the assistant's `answer` in the history, the project initialized,
    /// and a version a restore had made current forgotten (the new one supersedes it).
    async fn record_generation(&self, project_id: Uuid, answer: &str) -> Result<(), StoreError>;
    /// Whose project this is, for the public routes that find a project's files by its id
    /// alone (the thumbnail).
    async fn project_owner(&self, project_id: Uuid) -> Result<Option<Uuid>, StoreError>;
    /// Atomically: the project's unfinished job if there is one, else — unless `limits`
    /// refuse, counting the unfinished jobs of every instance — a new `pending` job held
    /// under `lease`.
    async fn start_job(
        &self,
        user_id: Uuid,
        project_id: Uuid,
        job_id: Uuid,
        now: DateTime<Utc>,
        lease: &Lease,
        limits: StartLimits,
    ) -> Result<JobStart, StoreError>;
    /// Remove a job that never ran (still `pending`): its start was refused after the row was
    /// made (the daily quota).
    async fn discard_job(&self, job_id: Uuid) -> Result<(), StoreError>;
    /// Extend the lease of those of `job_ids` that are still unfinished, under `lease`'s
    /// instance. Returns the ids renewed: a job missing from the answer was ended elsewhere.
    async fn renew_leases(&self, lease: &Lease, job_ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError>;
    /// Apply `update` if the job is unfinished; the row after the update, `None` if it was
    /// missing or already terminal.
    async fn update_job(
        &self,
        job_id: Uuid,
        update: &JobUpdate,
    ) -> Result<Option<JobRow>, StoreError>;
    /// A completed generation's two writes: [`Store::record_generation`], then
    /// [`Store::update_job`] with the terminal `update`; one trip where the store can.
    async fn complete_generation(
        &self,
        job_id: Uuid,
        update: &JobUpdate,
        project_id: Uuid,
        answer: &str,
    ) -> Result<Option<JobRow>, StoreError> {
        self.record_generation(project_id, answer).await?;
        self.update_job(job_id, update).await
    }
    async fn get_job(&self, job_id: Uuid) -> Result<Option<JobRow>, StoreError>;
    /// Newest unfinished job of the project.
    async fn active_job(&self, project_id: Uuid) -> Result<Option<JobRow>, StoreError>;
    /// The user's unfinished jobs with project names, newest first.
    async fn active_jobs_for_user(&self, user_id: Uuid) -> Result<Vec<ActiveJobInfo>, StoreError>;
    /// How many jobs are unfinished, on every instance.
    async fn count_active_jobs(&self) -> Result<usize, StoreError>;
    /// The unfinished jobs whose lease expired (their instance stopped renewing it).
    async fn expired_jobs(&self) -> Result<Vec<JobRow>, StoreError>;
    /// Mark failed, with `error`, every unfinished job whose lease expired (its instance
    /// died). Jobs of live instances are never touched. Returns the rows it failed.
    async fn fail_expired_jobs(&self, error: &str) -> Result<Vec<JobRow>, StoreError>;
    /// The user's plan (`free` unless an active subscription says otherwise).
    async fn plan(&self, user_id: Uuid) -> Result<String, StoreError>;
    /// Check-and-increment today's (UTC) counter; `limit` -1 is unlimited.
    async fn consume_quota(
        &self,
        user_id: Uuid,
        kind: QuotaKind,
        limit: i64,
    ) -> Result<QuotaDecision, StoreError>;
    /// The user's plan, then [`Store::consume_quota`] with that plan's limit. Stores that can
    /// do both in one trip do.
    async fn consume_plan_quota(
        &self,
        user_id: Uuid,
        kind: QuotaKind,
        limits: PlanLimits,
    ) -> Result<PlanCharge, StoreError> {
        let plan = self.plan(user_id).await?;
        let Some(limit) = limits(&plan, kind) else {
            return Ok(PlanCharge::UnknownPlan(plan));
        };
        let decision = self.consume_quota(user_id, kind, limit).await?;
        Ok(PlanCharge::Applied { limit, decision })
    }
    /// A message that starts a job: [`Store::consume_plan_quota`] for `messages_sent`, then,
    /// unless that refused it, [`Store::add_user_message`]; one trip where the store can.
    async fn charge_message(
        &self,
        who: &Identity,
        project_id: Uuid,
        limits: PlanLimits,
        content: &str,
    ) -> Result<PlanCharge, StoreError> {
        let charge = self
            .consume_plan_quota(who.user_id, QuotaKind::MessagesSent, limits)
            .await?;
        if !charge.refused() {
            self.add_user_message(who, project_id, content).await?;
        }
        Ok(charge)
    }
    async fn quota_usage(&self, user_id: Uuid) -> Result<QuotaUsage, StoreError>;

    /// Whether several relays may use this store at once (PostgreSQL): then the keys a relay
    /// makes up for itself live in the store, so that every replica uses the same.
    fn is_shared(&self) -> bool;
    /// The relay secret stored under `name`, storing `candidate` first when there is none:
    /// every relay asking for the same name gets the value of the first one that asked.
    async fn shared_secret(&self, name: &str, candidate: &str) -> Result<String, StoreError>;
    /// The version a restore made current on the project (docs/protocol.md §6.5), if any.
    async fn current_version(&self, project_id: Uuid) -> Result<Option<String>, StoreError>;
    /// Record the version a restore made current; `None` forgets it (a new version was made).
    async fn set_current_version(
        &self,
        project_id: Uuid,
        version: Option<&str>,
    ) -> Result<(), StoreError>;
}
