//! One behavioural suite for every `Store` implementation: each function in `suite` runs
//! against SQLite and against PostgreSQL with the Supabase stand-in schema and policies.
//!
//! PostgreSQL comes from `bash scripts/test-postgres.sh`, which writes its socket directory to
//! `target/test-postgres/socket_dir` (or set `TEST_PG_SOCKET_DIR`). Each test copies the
//! `relay_template` database and connects as the NOINHERIT `relay` login role; without the
//! cluster the PostgreSQL tests fail, they never skip.

use crate::support::postgres;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dreamcore_relay::auth::Identity;
use dreamcore_relay::store::models::{ChatRole, HistoryItem, JobRow, JobStatus};
use dreamcore_relay::store::postgres::{self as pg, PostgresStore, Scope};
use dreamcore_relay::store::sqlite::SqliteStore;
use dreamcore_relay::store::{
    JobStart, JobUpdate, Lease, PlanCharge, QuotaDecision, QuotaKind, QuotaUsage, StartLimits,
    Store,
};
use postgres::PgDb;
use serde_json::json;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// What a test needs beyond the store: seeding users and subscriptions the way the rest of
/// the system (GoTrue, billing) would.
enum Env {
    Sqlite {
        /// A second connection to the store's file, when the test writes tables directly.
        side: Option<Mutex<rusqlite::Connection>>,
        _dir: Option<tempfile::TempDir>,
    },
    Postgres(PgDb),
}

struct Fixture {
    store: Box<dyn Store>,
    env: Env,
}

pub(crate) fn identity(user_id: Uuid) -> Identity {
    let email = format!("u{}@example.test", user_id.simple());
    Identity {
        user_id,
        email: Some(email.clone()),
        expires_at: Utc::now().timestamp() + 3600,
        claims: Arc::from(json!({
            "sub": user_id.to_string(),
            "aud": "authenticated",
            "role": "authenticated",
            "email": email,
            "exp": Utc::now().timestamp() + 3600,
            "user_metadata": {"full_name": "Test User", "avatar_url": "https://example.test/a.png"},
        })
        .to_string()
        .as_str()),
    }
}

impl Env {
    /// A new user as GoTrue leaves it. On PostgreSQL the `auth.users` row exists but the
    /// profile does not (as when the trigger did not run), so `ensure_user` has real work.
    async fn user(&self) -> Identity {
        let who = identity(Uuid::new_v4());
        if let Env::Postgres(db) = self {
            db.admin
                .execute(
                    "INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES ($1, $2, '{}')",
                    &[&who.user_id, &who.email],
                )
                .await
                .unwrap();
            db.admin
                .execute("DELETE FROM public.users WHERE id = $1", &[&who.user_id])
                .await
                .unwrap();
        }
        who
    }

    async fn subscribe(&self, user_id: Uuid, plan: &str, status: &str) {
        match self {
            Env::Sqlite { side, .. } => {
                let side = side
                    .as_ref()
                    .expect("this test needs a file-backed SQLite fixture");
                side.lock()
                    .unwrap()
                    .execute(
                        "INSERT INTO subscriptions (user_id, plan, status) VALUES (?1, ?2, ?3)",
                        rusqlite::params![user_id.to_string(), plan, status],
                    )
                    .unwrap();
            }
            Env::Postgres(db) => {
                db.admin
                    .execute(
                        "INSERT INTO subscriptions (user_id, plan, status) VALUES ($1, $2, $3)",
                        &[&user_id, &plan, &status],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("seed subscription: {e}"));
            }
        }
    }
}

impl Fixture {
    async fn sqlite_memory() -> Self {
        Self {
            store: Box::new(SqliteStore::in_memory().unwrap()),
            env: Env::Sqlite {
                side: None,
                _dir: None,
            },
        }
    }

    async fn sqlite_file() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let store = SqliteStore::open(&path).unwrap();
        let side = rusqlite::Connection::open(&path).unwrap();
        side.busy_timeout(Duration::from_secs(5)).unwrap();
        Self {
            store: Box::new(store),
            env: Env::Sqlite {
                side: Some(Mutex::new(side)),
                _dir: Some(dir),
            },
        }
    }

    async fn postgres() -> Self {
        Self::postgres_with(false).await
    }

    /// PostgreSQL with `DATABASE_PREPARED_STATEMENTS`: every statement prepared and kept.
    async fn postgres_prepared() -> Self {
        Self::postgres_with(true).await
    }

    async fn postgres_with(prepared_statements: bool) -> Self {
        let db = PgDb::create().await;
        let store = PostgresStore::connect(&db.relay_url(), 8)
            .await
            .unwrap()
            .with_prepared_statements(prepared_statements);
        Self {
            store: Box::new(store),
            env: Env::Postgres(db),
        }
    }

    async fn finish(self) {
        drop(self.store);
        if let Env::Postgres(db) = self.env {
            db.drop_db().await;
        }
    }
}

/// A lease of a live instance (it outlasts any test).
fn live() -> Lease {
    Lease {
        instance: Uuid::new_v4(),
        ttl: Duration::from_secs(600),
    }
}

/// Runs each suite function once per backend (PostgreSQL with and without prepared
/// statements).
macro_rules! both_backends {
    ($($name:ident: $sqlite:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fx = super::Fixture::$sqlite().await;
                    super::suite::$name(fx.store.as_ref(), &fx.env).await;
                    fx.finish().await;
                }
            )*
        }
        one_fixture!(on_postgres, postgres, $($name),*);
        one_fixture!(on_postgres_prepared, postgres_prepared, $($name),*);
    };
}

/// A module running each suite function on `Fixture::$fixture`.
macro_rules! one_fixture {
    ($module:ident, $fixture:ident, $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fx = super::Fixture::$fixture().await;
                    super::suite::$name(fx.store.as_ref(), &fx.env).await;
                    fx.finish().await;
                }
            )*
        }
    };
}

both_backends! {
    ensure_user_is_idempotent_and_concurrent: sqlite_memory,
    projects_are_owned: sqlite_memory,
    project_list_is_newest_first: sqlite_memory,
    history_keeps_order_and_limit: sqlite_memory,
    a_generation_is_recorded_together: sqlite_memory,
    a_completed_generation_is_one_write: sqlite_memory,
    start_job_is_atomic_under_races: sqlite_memory,
    start_job_holds_the_total_under_races: sqlite_file,
    update_job_never_overwrites_terminal_states: sqlite_memory,
    active_jobs_with_project_names: sqlite_memory,
    sweeps_fail_only_expired_leases: sqlite_memory,
    quotas_refuse_after_limit: sqlite_memory,
    parallel_consumes_never_exceed_the_limit: sqlite_memory,
    plan_comes_from_active_subscription: sqlite_file,
    plan_quota_applies_the_plans_limit: sqlite_file,
    a_refused_message_is_neither_counted_nor_stored: sqlite_memory,
}

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

mod suite {
    use super::*;

    /// SQLite keeps millisecond timestamps: let the clock move before an ordering-relevant
    /// write so "newest first" has one right answer on both backends.
    async fn tick() {
        tokio::time::sleep(Duration::from_millis(3)).await;
    }

    async fn user(store: &dyn Store, env: &Env) -> Identity {
        let who = env.user().await;
        store.ensure_user(&who).await.unwrap();
        who
    }

    async fn started(
        store: &dyn Store,
        who: &Identity,
        project_id: Uuid,
        at: DateTime<Utc>,
    ) -> JobRow {
        started_under(store, who, project_id, at, &live()).await
    }

    async fn started_under(
        store: &dyn Store,
        who: &Identity,
        project_id: Uuid,
        at: DateTime<Utc>,
        lease: &Lease,
    ) -> JobRow {
        match store
            .start_job(
                who.user_id,
                project_id,
                Uuid::now_v7(),
                at,
                lease,
                StartLimits::NONE,
            )
            .await
            .unwrap()
        {
            JobStart::Created(job) => job,
            other => panic!("expected a new job, got {other:?}"),
        }
    }

    /// A history's roles and texts, oldest first, to compare with a literal.
    fn conversation(history: &[HistoryItem]) -> Vec<(ChatRole, &str)> {
        history
            .iter()
            .map(|h| (h.role, h.content.as_str()))
            .collect()
    }

    fn status(status: JobStatus) -> JobUpdate {
        JobUpdate {
            status: Some(status),
            ..JobUpdate::default()
        }
    }

    pub async fn ensure_user_is_idempotent_and_concurrent(store: &dyn Store, env: &Env) {
        let who = env.user().await;
        store.ensure_user(&who).await.unwrap();
        store.ensure_user(&who).await.unwrap();
        // The profile exists: projects reference it.
        store.create_project(&who, "after ensure").await.unwrap();

        // Racing first inits (several tabs at once); a collision window is narrow, so race
        // many fresh users.
        for _ in 0..25 {
            let racer = env.user().await;
            let results =
                futures::future::join_all((0..8).map(|_| store.ensure_user(&racer))).await;
            for result in results {
                result.unwrap();
            }
            store
                .create_project(&racer, "after racing inits")
                .await
                .unwrap();
            assert_eq!(store.list_projects(&racer).await.unwrap().len(), 1);
        }
    }

    pub async fn projects_are_owned(store: &dyn Store, env: &Env) {
        let (a, b) = (user(store, env).await, user(store, env).await);
        let project = store.create_project(&a, "Alpha").await.unwrap();
        assert_eq!(project.user_id, a.user_id);
        assert_eq!(project.name, "Alpha");
        assert_eq!(project.description, "");
        assert!(!project.is_public && !project.is_initialized);
        assert_eq!(project.remixed_from, None);
        assert_eq!(
            store.get_project(&a, project.id).await.unwrap(),
            Some(project.clone())
        );
        store
            .add_user_message(&a, project.id, "hello")
            .await
            .unwrap();

        // Another user sees nothing and changes nothing.
        assert_eq!(store.get_project(&b, project.id).await.unwrap(), None);
        assert!(store.list_projects(&b).await.unwrap().is_empty());
        assert_eq!(
            store
                .rename_project(&b, project.id, "stolen")
                .await
                .unwrap(),
            None
        );
        assert!(!store.delete_project(&b, project.id).await.unwrap());
        assert!(store.history(&b, project.id, 50).await.unwrap().is_empty());
        store
            .add_user_message(&b, project.id, "intruder")
            .await
            .unwrap();
        let history = store.history(&a, project.id, 50).await.unwrap();
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(history[0].content, "hello");
        assert_eq!(
            store
                .get_project(&a, project.id)
                .await
                .unwrap()
                .unwrap()
                .name,
            "Alpha"
        );

        // The owner can.
        tick().await;
        let renamed = store
            .rename_project(&a, project.id, "Beta")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renamed.name, "Beta");
        assert_eq!(renamed.created_at, project.created_at);
        assert!(renamed.updated_at > project.updated_at);
        let job = started(store, &a, project.id, Utc::now()).await;
        assert!(store.delete_project(&a, project.id).await.unwrap());
        assert_eq!(store.get_project(&a, project.id).await.unwrap(), None);
        assert!(!store.delete_project(&a, project.id).await.unwrap());
        // History and jobs go with the project.
        assert!(store.history(&a, project.id, 50).await.unwrap().is_empty());
        assert_eq!(store.get_job(job.id).await.unwrap(), None);
        assert_eq!(
            store.rename_project(&a, project.id, "gone").await.unwrap(),
            None
        );
    }

    pub async fn project_list_is_newest_first(store: &dyn Store, env: &Env) {
        let a = user(store, env).await;
        let mut ids = Vec::new();
        for name in ["one", "two", "three"] {
            tick().await;
            ids.push(store.create_project(&a, name).await.unwrap().id);
        }
        let names = |list: Vec<dreamcore_relay::store::models::Project>| {
            list.into_iter().map(|p| p.name).collect::<Vec<_>>()
        };
        assert_eq!(
            names(store.list_projects(&a).await.unwrap()),
            ["three", "two", "one"]
        );

        tick().await;
        store
            .rename_project(&a, ids[0], "one*")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            names(store.list_projects(&a).await.unwrap()),
            ["one*", "three", "two"]
        );

        // A user message touches the project.
        tick().await;
        store.add_user_message(&a, ids[1], "bump").await.unwrap();
        assert_eq!(
            names(store.list_projects(&a).await.unwrap()),
            ["two", "one*", "three"]
        );
    }

    pub async fn history_keeps_order_and_limit(store: &dyn Store, env: &Env) {
        let a = user(store, env).await;
        let project = store.create_project(&a, "chatty").await.unwrap();
        let other = store.create_project(&a, "quiet").await.unwrap();
        assert!(store.history(&a, project.id, 50).await.unwrap().is_empty());
        for n in 0..60 {
            let text = format!("m{n}");
            if n % 2 == 0 {
                store.add_user_message(&a, project.id, &text).await.unwrap();
            } else {
                store
                    .add_history(project.id, ChatRole::Assistant, &text)
                    .await
                    .unwrap();
            }
        }
        let last50 = store.history(&a, project.id, 50).await.unwrap();
        let contents: Vec<_> = last50.iter().map(|h| h.content.clone()).collect();
        let expected: Vec<_> = (10..60).map(|n| format!("m{n}")).collect();
        assert_eq!(contents, expected);
        for (item, n) in last50.iter().zip(10..) {
            let role = if n % 2 == 0 {
                ChatRole::User
            } else {
                ChatRole::Assistant
            };
            assert_eq!(item.role, role);
        }
        assert!(last50.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));

        let last3 = store.history(&a, project.id, 3).await.unwrap();
        let contents: Vec<_> = last3.iter().map(|h| h.content.as_str()).collect();
        assert_eq!(contents, ["m57", "m58", "m59"]);
        assert!(store.history(&a, other.id, 50).await.unwrap().is_empty());

        // Assistant history for a missing project is dropped, not an error.
        store
            .add_history(Uuid::new_v4(), ChatRole::Assistant, "orphan")
            .await
            .unwrap();
    }

    /// The end of a generation: the answer last in the history, the project initialized,
    /// and the version a restore had made current forgotten.
    pub async fn a_generation_is_recorded_together(store: &dyn Store, env: &Env) {
        let a = user(store, env).await;
        let project = store.create_project(&a, "fresh").await.unwrap();
        store
            .add_user_message(&a, project.id, "make it")
            .await
            .unwrap();
        store
            .set_current_version(project.id, Some("abc1234"))
            .await
            .unwrap();
        let before = store.get_project(&a, project.id).await.unwrap().unwrap();
        assert!(!before.is_initialized);
        tick().await;
        store
            .record_generation(project.id, "done: 遊べます")
            .await
            .unwrap();
        let history = store.history(&a, project.id, 10).await.unwrap();
        let last = history.last().unwrap();
        assert_eq!(
            (last.role, last.content.as_str()),
            (ChatRole::Assistant, "done: 遊べます")
        );
        let after = store.get_project(&a, project.id).await.unwrap().unwrap();
        assert!(after.is_initialized);
        assert!(after.updated_at > before.updated_at);
        assert_eq!(store.current_version(project.id).await.unwrap(), None);
    }

    pub async fn a_completed_generation_is_one_write(store: &dyn Store, env: &Env) {
        let a = user(store, env).await;
        let project = store.create_project(&a, "fresh").await.unwrap();
        let job = started(store, &a, project.id, Utc::now()).await;
        let done = JobUpdate {
            status: Some(JobStatus::Completed),
            progress: Some(100),
            result: Some(r#"{"message":"遊べます"}"#.into()),
            ..JobUpdate::default()
        };
        let row = store
            .complete_generation(job.id, &done, project.id, "遊べます")
            .await
            .unwrap()
            .expect("the unfinished job is ended");
        assert_eq!((row.status, row.progress), (JobStatus::Completed, 100));
        assert_eq!(row.result.as_deref(), Some(r#"{"message":"遊べます"}"#));
        let history = store.history(&a, project.id, 10).await.unwrap();
        assert_eq!(conversation(&history), [(ChatRole::Assistant, "遊べます")]);
        assert!(
            store
                .get_project(&a, project.id)
                .await
                .unwrap()
                .unwrap()
                .is_initialized
        );
        // A job already ended is left as it is.
        let again = store
            .complete_generation(job.id, &status(JobStatus::Failed), project.id, "later")
            .await
            .unwrap();
        assert_eq!(again, None);
        assert_eq!(
            store.get_job(job.id).await.unwrap().unwrap().status,
            JobStatus::Completed
        );
    }

    const TOTAL_3: StartLimits = StartLimits {
        per_user: None,
        total: Some(3),
    };

    /// The cluster-wide slots: of many starts racing on different projects at the limit, as
    /// many succeed as there is room for; a discarded job frees its place; a user at their
    /// own limit is refused whatever the total.
    pub async fn start_job_holds_the_total_under_races(store: &dyn Store, env: &Env) {
        let a = user(store, env).await;
        let mut projects = Vec::new();
        for n in 0..8 {
            projects.push(store.create_project(&a, &format!("p{n}")).await.unwrap());
        }
        let lease = live();
        let starts = projects
            .iter()
            .map(|p| store.start_job(a.user_id, p.id, Uuid::now_v7(), Utc::now(), &lease, TOTAL_3));
        let outcomes = futures::future::join_all(starts).await;
        let created: Vec<JobRow> = outcomes
            .into_iter()
            .filter_map(|o| match o.unwrap() {
                JobStart::Created(job) => Some(job),
                JobStart::Full => None,
                other => panic!("no project had a job, nor the user a limit: {other:?}"),
            })
            .collect();
        assert_eq!(created.len(), 3, "exactly the total starts");
        assert_eq!(store.count_active_jobs().await.unwrap(), 3);
        store.discard_job(created[0].id).await.unwrap();
        assert_eq!(store.get_job(created[0].id).await.unwrap(), None);
        let freed = created[0].project_id;
        assert!(matches!(
            store
                .start_job(
                    a.user_id,
                    freed,
                    Uuid::now_v7(),
                    Utc::now(),
                    &lease,
                    TOTAL_3
                )
                .await
                .unwrap(),
            JobStart::Created(_)
        ));
        // Only a job that never ran can be discarded.
        store
            .update_job(created[1].id, &status(JobStatus::Processing))
            .await
            .unwrap();
        store.discard_job(created[1].id).await.unwrap();
        assert!(store.get_job(created[1].id).await.unwrap().is_some());

        let b = user(store, env).await;
        let mine = [
            store.create_project(&b, "b1").await.unwrap(),
            store.create_project(&b, "b2").await.unwrap(),
        ];
        let one_each = StartLimits {
            per_user: Some(1),
            total: Some(100),
        };
        let starts = mine.iter().map(|p| {
            store.start_job(
                b.user_id,
                p.id,
                Uuid::now_v7(),
                Utc::now(),
                &lease,
                one_each,
            )
        });
        let mut outcomes: Vec<&str> = futures::future::join_all(starts)
            .await
            .into_iter()
            .map(|o| match o.unwrap() {
                JobStart::Created(_) => "created",
                JobStart::UserFull => "user full",
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        outcomes.sort();
        assert_eq!(outcomes, ["created", "user full"]);
    }

    pub async fn start_job_is_atomic_under_races(store: &dyn Store, env: &Env) {
        let a = user(store, env).await;
        let project = store.create_project(&a, "racy").await.unwrap();
        for race in 0..100 {
            let (lease_a, lease_b) = (live(), live());
            let (first, second) = tokio::join!(
                store.start_job(
                    a.user_id,
                    project.id,
                    Uuid::now_v7(),
                    Utc::now(),
                    &lease_a,
                    StartLimits::NONE
                ),
                store.start_job(
                    a.user_id,
                    project.id,
                    Uuid::now_v7(),
                    Utc::now(),
                    &lease_b,
                    StartLimits::NONE
                ),
            );
            let (created, existing) = match (first.unwrap(), second.unwrap()) {
                (JobStart::Created(c), JobStart::Existing(e))
                | (JobStart::Existing(e), JobStart::Created(c)) => (c, e),
                other => {
                    panic!("race {race}: expected one Created and one Existing, got {other:?}")
                }
            };
            assert_eq!(created.id, existing.id, "race {race}");
            assert_eq!(created.status, JobStatus::Pending);
            assert_eq!(created.progress, 0);
            assert_eq!(
                store.active_job(project.id).await.unwrap().map(|j| j.id),
                Some(created.id)
            );
            store
                .update_job(created.id, &status(JobStatus::Completed))
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(store.active_job(project.id).await.unwrap(), None);
    }

    pub async fn update_job_never_overwrites_terminal_states(store: &dyn Store, env: &Env) {
        let a = user(store, env).await;
        let project = store.create_project(&a, "jobs").await.unwrap();
        let job = started(store, &a, project.id, Utc::now()).await;
        assert_eq!(store.get_job(job.id).await.unwrap(), Some(job.clone()));

        let processing = store
            .update_job(
                job.id,
                &JobUpdate {
                    status: Some(JobStatus::Processing),
                    progress: Some(10),
                    progress_message: Some("考え中".into()),
                    ..JobUpdate::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(processing.status, JobStatus::Processing);
        assert_eq!(
            (processing.progress, processing.progress_message.as_deref()),
            (10, Some("考え中"))
        );

        // A progress-only update keeps the other fields.
        let progressed = store
            .update_job(
                job.id,
                &JobUpdate {
                    progress: Some(50),
                    ..JobUpdate::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(progressed.status, JobStatus::Processing);
        assert_eq!(
            (progressed.progress, progressed.progress_message.as_deref()),
            (50, Some("考え中"))
        );

        let result = r#"{"message":"done","html":"<p>"}"#;
        let completed = store
            .update_job(
                job.id,
                &JobUpdate {
                    status: Some(JobStatus::Completed),
                    progress: Some(100),
                    result: Some(result.into()),
                    ..JobUpdate::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(completed.status, JobStatus::Completed);
        assert_eq!(completed.result.as_deref(), Some(result));

        // Cancel of a completed job is a no-op; so is every later write.
        assert_eq!(
            store
                .update_job(job.id, &status(JobStatus::Cancelled))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .update_job(job.id, &status(JobStatus::Failed))
                .await
                .unwrap(),
            None
        );
        let late_progress = JobUpdate {
            progress: Some(1),
            ..JobUpdate::default()
        };
        assert_eq!(
            store.update_job(job.id, &late_progress).await.unwrap(),
            None
        );
        let stored = store.get_job(job.id).await.unwrap().unwrap();
        assert_eq!(stored.status, JobStatus::Completed);
        assert_eq!(
            (stored.progress, stored.result.as_deref()),
            (100, Some(result))
        );

        // Failed is terminal too.
        let second = started(store, &a, project.id, Utc::now()).await;
        let failed = JobUpdate {
            status: Some(JobStatus::Failed),
            error: Some("boom".into()),
            ..JobUpdate::default()
        };
        store.update_job(second.id, &failed).await.unwrap().unwrap();
        assert_eq!(
            store
                .update_job(second.id, &status(JobStatus::Completed))
                .await
                .unwrap(),
            None
        );
        let stored = store.get_job(second.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.status, stored.error.as_deref()),
            (JobStatus::Failed, Some("boom"))
        );

        assert_eq!(
            store
                .update_job(Uuid::new_v4(), &status(JobStatus::Cancelled))
                .await
                .unwrap(),
            None
        );
        assert_eq!(store.get_job(Uuid::new_v4()).await.unwrap(), None);
    }

    pub async fn active_jobs_with_project_names(store: &dyn Store, env: &Env) {
        let (a, b) = (user(store, env).await, user(store, env).await);
        let alpha = store.create_project(&a, "Alpha").await.unwrap();
        let beta = store.create_project(&a, "Beta").await.unwrap();
        let theirs = store.create_project(&b, "Theirs").await.unwrap();
        let t0 = Utc::now();
        let job_alpha = started(store, &a, alpha.id, t0).await;
        let job_beta = started(store, &a, beta.id, t0 + chrono::Duration::seconds(1)).await;
        started(store, &b, theirs.id, t0).await;

        assert_eq!(
            store.active_job(alpha.id).await.unwrap().map(|j| j.id),
            Some(job_alpha.id)
        );
        let active = store.active_jobs_for_user(a.user_id).await.unwrap();
        let seen: Vec<_> = active
            .iter()
            .map(|j| (j.job_id, j.project_id, j.project_name.as_str(), j.status))
            .collect();
        assert_eq!(
            seen,
            [
                (job_beta.id, beta.id, "Beta", JobStatus::Pending),
                (job_alpha.id, alpha.id, "Alpha", JobStatus::Pending)
            ]
        );
        assert_eq!(active[1].created_at, job_alpha.created_at);

        store
            .update_job(job_beta.id, &status(JobStatus::Processing))
            .await
            .unwrap()
            .unwrap();
        store
            .update_job(job_alpha.id, &status(JobStatus::Cancelled))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.active_job(alpha.id).await.unwrap(), None);
        let active = store.active_jobs_for_user(a.user_id).await.unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(
            (active[0].job_id, active[0].status),
            (job_beta.id, JobStatus::Processing)
        );
        assert_eq!(
            store.active_jobs_for_user(b.user_id).await.unwrap().len(),
            1
        );
    }

    pub async fn sweeps_fail_only_expired_leases(store: &dyn Store, env: &Env) {
        let a = user(store, env).await;
        let projects = [
            store.create_project(&a, "p1").await.unwrap(),
            store.create_project(&a, "p2").await.unwrap(),
            store.create_project(&a, "p3").await.unwrap(),
            store.create_project(&a, "p4").await.unwrap(),
        ];
        let alive = live();
        // An instance that dies right away: its leases expire after a millisecond.
        let dead = Lease {
            instance: Uuid::new_v4(),
            ttl: Duration::from_millis(1),
        };
        let running = started_under(store, &a, projects[0].id, Utc::now(), &alive).await;
        let pending = started_under(store, &a, projects[1].id, Utc::now(), &dead).await;
        let processing = started_under(store, &a, projects[2].id, Utc::now(), &dead).await;
        store
            .update_job(processing.id, &status(JobStatus::Processing))
            .await
            .unwrap()
            .unwrap();
        let done = started_under(store, &a, projects[3].id, Utc::now(), &dead).await;
        store
            .update_job(done.id, &status(JobStatus::Completed))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.count_active_jobs().await.unwrap(), 3);

        let mut expired: Vec<Uuid> = store
            .expired_jobs()
            .await
            .unwrap()
            .iter()
            .map(|row| row.id)
            .collect();
        expired.sort();
        let mut failed: Vec<Uuid> = store
            .fail_expired_jobs("instance lost")
            .await
            .unwrap()
            .iter()
            .map(|row| row.id)
            .collect();
        failed.sort();
        let mut expected = vec![pending.id, processing.id];
        expected.sort();
        assert_eq!(
            expired, expected,
            "listed: only the dead instance's unfinished jobs"
        );
        assert_eq!(failed, expected, "only the dead instance's unfinished jobs");
        assert!(store.expired_jobs().await.unwrap().is_empty());
        for id in [pending.id, processing.id] {
            let job = store.get_job(id).await.unwrap().unwrap();
            assert_eq!(
                (job.status, job.error.as_deref()),
                (JobStatus::Failed, Some("instance lost"))
            );
        }
        let done = store.get_job(done.id).await.unwrap().unwrap();
        assert_eq!((done.status, done.error), (JobStatus::Completed, None));
        assert!(store.fail_expired_jobs("again").await.unwrap().is_empty());

        // Renewal answers which jobs are still unfinished; ended ones are not renewed.
        let renewed = store
            .renew_leases(&alive, &[running.id, pending.id, done.id])
            .await
            .unwrap();
        assert_eq!(renewed, vec![running.id]);
        assert!(store.renew_leases(&alive, &[]).await.unwrap().is_empty());
        let still = store.get_job(running.id).await.unwrap().unwrap();
        assert_eq!(
            still.status,
            JobStatus::Pending,
            "a live lease is never swept"
        );
        // A lease that is not renewed expires, and then the job is swept.
        store.renew_leases(&dead, &[running.id]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let swept = store.fail_expired_jobs("instance lost").await.unwrap();
        assert_eq!(swept.len(), 1);
        assert_eq!(swept[0].id, running.id);
        assert_eq!(store.count_active_jobs().await.unwrap(), 0);
        assert!(store
            .active_jobs_for_user(a.user_id)
            .await
            .unwrap()
            .is_empty());
    }

    pub async fn quotas_refuse_after_limit(store: &dyn Store, env: &Env) {
        let a = user(store, env).await;
        assert_eq!(store.plan(a.user_id).await.unwrap(), "free");
        assert_eq!(
            store.quota_usage(a.user_id).await.unwrap(),
            QuotaUsage::default()
        );

        for n in 1..=3 {
            let d = store
                .consume_quota(a.user_id, QuotaKind::ProjectsCreated, 3)
                .await
                .unwrap();
            assert_eq!((d.allowed, d.count), (true, n));
        }
        let refused = store
            .consume_quota(a.user_id, QuotaKind::ProjectsCreated, 3)
            .await
            .unwrap();
        assert_eq!((refused.allowed, refused.count), (false, 3));

        for n in 1..=20 {
            let d = store
                .consume_quota(a.user_id, QuotaKind::MessagesSent, 20)
                .await
                .unwrap();
            assert_eq!((d.allowed, d.count), (true, n));
        }
        let refused = store
            .consume_quota(a.user_id, QuotaKind::MessagesSent, 20)
            .await
            .unwrap();
        assert_eq!((refused.allowed, refused.count), (false, 20));
        assert_eq!(
            store.quota_usage(a.user_id).await.unwrap(),
            QuotaUsage {
                projects_created: 3,
                messages_sent: 20
            }
        );

        // -1 is unlimited, and counts keep going.
        for n in 21..=40 {
            let d = store
                .consume_quota(a.user_id, QuotaKind::MessagesSent, -1)
                .await
                .unwrap();
            assert_eq!((d.allowed, d.count), (true, n));
        }
        // Counters are per user.
        let b = user(store, env).await;
        let d = store
            .consume_quota(b.user_id, QuotaKind::ProjectsCreated, 3)
            .await
            .unwrap();
        assert_eq!((d.allowed, d.count), (true, 1));
        assert_eq!(store.quota_usage(b.user_id).await.unwrap().messages_sent, 0);
    }

    pub async fn parallel_consumes_never_exceed_the_limit(store: &dyn Store, env: &Env) {
        let a = user(store, env).await;
        let decisions = futures::future::join_all(
            (0..30).map(|_| store.consume_quota(a.user_id, QuotaKind::MessagesSent, 10)),
        )
        .await;
        let mut allowed_counts: Vec<i64> = decisions
            .into_iter()
            .map(Result::unwrap)
            .filter(|d| d.allowed)
            .map(|d| d.count)
            .collect();
        allowed_counts.sort_unstable();
        assert_eq!(allowed_counts, (1..=10).collect::<Vec<_>>());
        assert_eq!(
            store.quota_usage(a.user_id).await.unwrap().messages_sent,
            10
        );
    }

    pub async fn plan_quota_applies_the_plans_limit(store: &dyn Store, env: &Env) {
        fn limits(plan: &str, _: QuotaKind) -> Option<i64> {
            match plan {
                "free" => Some(1),
                "pro" => Some(2),
                _ => None,
            }
        }
        let (free, pro, odd) = (
            user(store, env).await,
            user(store, env).await,
            user(store, env).await,
        );
        env.subscribe(pro.user_id, "pro", "active").await;
        env.subscribe(odd.user_id, "gold", "active").await;
        let charge = |user_id| store.consume_plan_quota(user_id, QuotaKind::MessagesSent, limits);
        let applied = |limit, allowed, count| PlanCharge::Applied {
            limit,
            decision: QuotaDecision { allowed, count },
        };
        assert_eq!(charge(free.user_id).await.unwrap(), applied(1, true, 1));
        assert_eq!(charge(free.user_id).await.unwrap(), applied(1, false, 1));
        assert_eq!(charge(pro.user_id).await.unwrap(), applied(2, true, 1));
        assert_eq!(charge(pro.user_id).await.unwrap(), applied(2, true, 2));
        assert_eq!(charge(pro.user_id).await.unwrap(), applied(2, false, 2));
        assert_eq!(
            charge(odd.user_id).await.unwrap(),
            PlanCharge::UnknownPlan("gold".into())
        );
        assert_eq!(
            store.quota_usage(odd.user_id).await.unwrap(),
            QuotaUsage::default(),
            "an unknown plan counts nothing"
        );
        assert_eq!(
            store.quota_usage(pro.user_id).await.unwrap().messages_sent,
            2
        );
    }

    pub async fn a_refused_message_is_neither_counted_nor_stored(store: &dyn Store, env: &Env) {
        fn one_a_day(_: &str, _: QuotaKind) -> Option<i64> {
            Some(1)
        }
        let a = user(store, env).await;
        let project = store.create_project(&a, "chatty").await.unwrap();
        let first = store
            .charge_message(&a, project.id, one_a_day, "make a game")
            .await
            .unwrap();
        assert!(!first.refused(), "{first:?}");
        let second = store
            .charge_message(&a, project.id, one_a_day, "and another")
            .await
            .unwrap();
        assert!(second.refused(), "{second:?}");
        let history = store.history(&a, project.id, 10).await.unwrap();
        assert_eq!(conversation(&history), [(ChatRole::User, "make a game")]);
        assert_eq!(store.quota_usage(a.user_id).await.unwrap().messages_sent, 1);
    }

    pub async fn plan_comes_from_active_subscription(store: &dyn Store, env: &Env) {
        let (pro, lapsed, team, none) = (
            user(store, env).await,
            user(store, env).await,
            user(store, env).await,
            user(store, env).await,
        );
        env.subscribe(pro.user_id, "pro", "active").await;
        env.subscribe(lapsed.user_id, "pro", "cancelled").await;
        env.subscribe(team.user_id, "team", "active").await;
        assert_eq!(store.plan(pro.user_id).await.unwrap(), "pro");
        assert_eq!(store.plan(lapsed.user_id).await.unwrap(), "free");
        assert_eq!(store.plan(team.user_id).await.unwrap(), "team");
        assert_eq!(store.plan(none.user_id).await.unwrap(), "free");
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: the database enforces the rules, not just our WHERE clauses
// ---------------------------------------------------------------------------------------------

async fn pg_store(max_connections: usize) -> (PostgresStore, Env) {
    let db = PgDb::create().await;
    let store = PostgresStore::connect(&db.relay_url(), max_connections)
        .await
        .unwrap();
    (store, Env::Postgres(db))
}

async fn finish_pg(store: PostgresStore, env: Env) {
    Fixture {
        store: Box::new(store),
        env,
    }
    .finish()
    .await;
}

fn err_text(result: Result<impl std::fmt::Debug, tokio_postgres::Error>) -> String {
    let err = result.expect_err("expected the database to refuse");
    err.as_db_error()
        .map(|db| db.message().to_string())
        .unwrap_or_else(|| err.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_user_scope_is_enforced_by_row_level_security() {
    let (store, env) = pg_store(4).await;
    let (a, b) = (env.user().await, env.user().await);
    store.ensure_user(&a).await.unwrap();
    store.ensure_user(&b).await.unwrap();
    let project = store.create_project(&a, "A's game").await.unwrap();
    store
        .add_user_message(&a, project.id, "secret prompt")
        .await
        .unwrap();
    store
        .start_job(
            a.user_id,
            project.id,
            Uuid::now_v7(),
            Utc::now(),
            &live(),
            StartLimits::NONE,
        )
        .await
        .unwrap();

    // Unscoped statements, as user B, through the helper every user-scoped call uses.
    let mut conn = store.connection().await.unwrap();
    let tx = pg::begin(&mut conn, Scope::User(&b)).await.unwrap();
    let who: String = tx
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "authenticated");
    let timeout: String = tx
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeout, "8s");
    for table in ["projects", "chat_history", "jobs", "users"] {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        let expected = i64::from(table == "users"); // B's own profile only
        assert_eq!(n, expected, "user B counted {n} rows in {table}");
    }
    assert_eq!(
        tx.execute("UPDATE projects SET name = 'x'", &[])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        tx.execute("DELETE FROM chat_history", &[]).await.unwrap(),
        0
    );
    assert_eq!(tx.execute("DELETE FROM projects", &[]).await.unwrap(), 0);
    tx.commit().await.unwrap();

    // Forged rows for A are refused by the policies' WITH CHECK.
    let tx = pg::begin(&mut conn, Scope::User(&b)).await.unwrap();
    let forged = tx
        .execute(
            "INSERT INTO projects (user_id, name) VALUES ($1, 'forged')",
            &[&a.user_id],
        )
        .await;
    assert!(err_text(forged).contains("row-level security"));
    drop(tx);
    let tx = pg::begin(&mut conn, Scope::User(&b)).await.unwrap();
    let forged = tx
        .execute(
            "INSERT INTO chat_history (project_id, role, message) VALUES ($1, 'user', 'x')",
            &[&project.id],
        )
        .await;
    assert!(err_text(forged).contains("row-level security"));
    drop(tx);
    // Jobs change only as the service: an authenticated UPDATE, even by the owner, does nothing.
    let tx = pg::begin(&mut conn, Scope::User(&a)).await.unwrap();
    assert_eq!(
        tx.execute("UPDATE jobs SET status = 'failed'", &[])
            .await
            .unwrap(),
        0
    );
    let own: i64 = tx
        .query_one("SELECT count(*) FROM projects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        own, 1,
        "the owner sees their project through the same helper"
    );
    tx.commit().await.unwrap();

    let kept = store.get_project(&a, project.id).await.unwrap().unwrap();
    assert_eq!(kept.name, "A's game");
    assert_eq!(store.history(&a, project.id, 50).await.unwrap().len(), 1);
    assert!(store.active_job(project.id).await.unwrap().is_some());

    // The service scope is the relay's own role.
    let tx = pg::begin(&mut conn, Scope::Service).await.unwrap();
    let who: String = tx
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "service_role");
    tx.commit().await.unwrap();

    // A forgotten role switch under the NOINHERIT login role fails loudly.
    let tx = conn.transaction().await.unwrap();
    let who: String = tx
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "relay");
    let denied = tx.query_one("SELECT count(*) FROM projects", &[]).await;
    assert!(err_text(denied).contains("permission denied"));
    drop(tx);
    drop(conn);
    finish_pg(store, env).await;
}

/// Far from the total, starts hold the start lock shared and leave room for every connection
/// the server allows; near it, one at a time. Racing across the boundary, exactly the total
/// starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_shared_and_exclusive_starts_together_hold_the_total() {
    let (store, env) = pg_store(16).await;
    let a = env.user().await;
    store.ensure_user(&a).await.unwrap();
    let max_connections: i64 = {
        let mut conn = store.connection().await.unwrap();
        let tx = pg::begin(&mut conn, Scope::Service).await.unwrap();
        let shown: String = tx
            .query_one("SHOW max_connections", &[])
            .await
            .unwrap()
            .get(0);
        tx.commit().await.unwrap();
        shown.parse().unwrap()
    };
    // Room for a few starts the shared way, then only the exclusive way.
    let total = usize::try_from(max_connections).unwrap() + 5;
    let mut projects = Vec::new();
    for n in 0..total + 10 {
        projects.push(store.create_project(&a, &format!("p{n}")).await.unwrap());
    }
    let limits = StartLimits {
        per_user: None,
        total: Some(total),
    };
    let lease = live();
    let starts = projects
        .iter()
        .map(|p| store.start_job(a.user_id, p.id, Uuid::now_v7(), Utc::now(), &lease, limits));
    let mut created = 0;
    let mut full = 0;
    for outcome in futures::future::join_all(starts).await {
        match outcome.unwrap() {
            JobStart::Created(_) => created += 1,
            JobStart::Full => full += 1,
            other => panic!("no project had a job, nor the user a limit: {other:?}"),
        }
    }
    assert_eq!((created, full), (total, 10));
    assert_eq!(store.count_active_jobs().await.unwrap(), total);
    finish_pg(store, env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_pooled_connection_is_clean_after_transactions() {
    // One connection, so every call below reuses it.
    let (store, env) = pg_store(1).await;
    let a = env.user().await;
    store.ensure_user(&a).await.unwrap();
    let project = store.create_project(&a, "clean").await.unwrap();
    store.list_projects(&a).await.unwrap();
    store
        .consume_quota(a.user_id, QuotaKind::MessagesSent, 20)
        .await
        .unwrap();
    store
        .start_job(
            a.user_id,
            project.id,
            Uuid::now_v7(),
            Utc::now(),
            &live(),
            StartLimits::NONE,
        )
        .await
        .unwrap();

    async fn assert_clean(conn: &deadpool_postgres::Object, when: &str) {
        let row = conn
            .query_one(
                "SELECT current_user::text, coalesce(current_setting('request.jwt.claims', true), ''),
                        current_setting('statement_timeout')",
                &[],
            )
            .await
            .unwrap();
        let (who, claims, timeout): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            (who.as_str(), claims.as_str(), timeout.as_str()),
            ("relay", "", "0"),
            "{when}"
        );
    }

    let mut conn = store.connection().await.unwrap();
    assert_clean(&conn, "after committed store calls").await;
    // A transaction dropped half-way (an error path) rolls back its settings too.
    {
        let tx = pg::begin(&mut conn, Scope::User(&a)).await.unwrap();
        tx.query_one("SELECT 1", &[]).await.unwrap();
    }
    assert_clean(&conn, "after a dropped transaction").await;
    drop(conn);
    // A failed statement inside a store call leaves no trace either.
    let b = env.user().await;
    let err = store
        .create_project(&b, "no profile yet")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("foreign key constraint"), "{err}");
    let conn = store.connection().await.unwrap();
    assert_clean(&conn, "after a failed store call").await;
    drop(conn);

    // A job start goes out as one flight (BEGIN … COMMIT): a statement failing in it (no such
    // project) rolls the whole flight back, locks included.
    let limits = StartLimits {
        per_user: Some(2),
        total: Some(10),
    };
    let err = store
        .start_job(
            a.user_id,
            Uuid::new_v4(),
            Uuid::now_v7(),
            Utc::now(),
            &live(),
            limits,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("foreign key constraint"), "{err}");
    let conn = store.connection().await.unwrap();
    assert_clean(&conn, "after a failed job start").await;
    assert_no_transaction(&conn, "after a failed job start").await;
    drop(conn);
    // A start dropped after its first poll has sent every message: the server still runs it
    // to its COMMIT, and the connection goes back to the pool outside any transaction.
    let other = store.create_project(&a, "cut off").await.unwrap();
    let job_id = Uuid::now_v7();
    let lease = live();
    {
        let start = store.start_job(a.user_id, other.id, job_id, Utc::now(), &lease, limits);
        let mut start = std::pin::pin!(start);
        assert!(futures::poll!(start.as_mut()).is_pending());
    }
    let conn = store.connection().await.unwrap();
    assert_no_transaction(&conn, "after a dropped job start").await;
    assert_clean(&conn, "after a dropped job start").await;
    drop(conn);
    let row = store.get_job(job_id).await.unwrap();
    assert_eq!(row.map(|r| r.status), Some(JobStatus::Pending));
    finish_pg(store, env).await;
}

/// No transaction left open on `conn`: no advisory lock held and a fresh transaction per
/// statement.
async fn assert_no_transaction(conn: &deadpool_postgres::Object, when: &str) {
    let row = conn
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0, "{when}: advisory locks still held");
    let first = conn.query_one("SELECT now()", &[]).await.unwrap();
    let second = conn.query_one("SELECT now()", &[]).await.unwrap();
    let (first, second): (chrono::DateTime<Utc>, chrono::DateTime<Utc>) =
        (first.get(0), second.get(0));
    assert_ne!(first, second, "{when}: still inside one transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_profile_and_draft_descriptions() {
    let (store, env) = pg_store(2).await;
    let a = env.user().await;
    store.ensure_user(&a).await.unwrap();
    let Env::Postgres(db) = &env else {
        unreachable!()
    };
    let row = db
        .admin
        .query_one(
            "SELECT email, display_name, avatar_url FROM public.users WHERE id = $1",
            &[&a.user_id],
        )
        .await
        .unwrap();
    let profile: (String, Option<String>, Option<String>) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        profile,
        (
            a.email.clone().unwrap(),
            Some("Test User".into()),
            Some("https://example.test/a.png".into())
        )
    );

    // The normal production path: GoTrue's trigger already made the profile.
    let with_profile = identity(Uuid::new_v4());
    db.admin
        .execute(
            "INSERT INTO auth.users (id, email) VALUES ($1, $2)",
            &[&with_profile.user_id, &with_profile.email],
        )
        .await
        .unwrap();
    store.ensure_user(&with_profile).await.unwrap();
    // No auth.users row: logged, not an error (production always has one).
    store.ensure_user(&identity(Uuid::new_v4())).await.unwrap();
    // An e-mail already used by another profile: logged, no profile for this id.
    let mut twin = env.user().await;
    twin.email = a.email.clone();
    store.ensure_user(&twin).await.unwrap();
    assert!(store.create_project(&twin, "no profile").await.is_err());

    let drafted = store.create_project(&a, "drafted").await.unwrap();
    let plain = store.create_project(&a, "plain").await.unwrap();
    db.admin
        .execute(
            "INSERT INTO publish_drafts (project_id, description) VALUES ($1, 'A jumping game')",
            &[&drafted.id],
        )
        .await
        .unwrap();
    let list = store.list_projects(&a).await.unwrap();
    let described: Vec<_> = list
        .iter()
        .map(|p| (p.id, p.description.as_str()))
        .collect();
    assert_eq!(described, [(plain.id, ""), (drafted.id, "A jumping game")]);
    let got = store.get_project(&a, drafted.id).await.unwrap().unwrap();
    assert_eq!(got.description, "A jumping game");

    store.mark_initialized(drafted.id).await.unwrap();
    assert!(
        store
            .get_project(&a, drafted.id)
            .await
            .unwrap()
            .unwrap()
            .is_initialized
    );
    finish_pg(store, env).await;
}

// ---------------------------------------------------------------------------------------------
// Connection setup (no cluster needed)
// ---------------------------------------------------------------------------------------------

/// What the first bytes from a client said: a TLS ClientHello after SSLRequest, or a plain
/// StartupMessage.
#[derive(Debug, PartialEq)]
enum Opening {
    TlsHello,
    PlainStartup,
    Other,
}

/// A fake server on 127.0.0.1:0 that accepts one client, answers SSLRequest with 'S' and
/// reports what the client sent next.
async fn fake_server() -> (u16, tokio::task::JoinHandle<Opening>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 8];
        socket.read_exact(&mut head).await.unwrap();
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        match code {
            80_877_103 => {
                socket.write_all(b"S").await.unwrap();
                let mut first = [0u8; 1];
                socket.read_exact(&mut first).await.unwrap();
                if first[0] == 0x16 {
                    Opening::TlsHello
                } else {
                    Opening::Other
                }
            }
            196_608 => Opening::PlainStartup,
            _ => Opening::Other,
        }
    });
    (port, task)
}

#[tokio::test]
async fn tls_is_asked_for_unless_sslmode_is_disable() {
    for mode in ["?sslmode=require", "?sslmode=prefer", ""] {
        let (port, server) = fake_server().await;
        let url = format!("postgresql://relay:secret-pw@127.0.0.1:{port}/db{mode}");
        assert!(PostgresStore::connect(&url, 1).await.is_err());
        assert_eq!(server.await.unwrap(), Opening::TlsHello, "{mode:?}");
    }

    let (port, server) = fake_server().await;
    let url = format!("postgresql://relay:secret-pw@127.0.0.1:{port}/db?sslmode=disable");
    assert!(PostgresStore::connect(&url, 1).await.is_err());
    assert_eq!(server.await.unwrap(), Opening::PlainStartup);
}

#[tokio::test]
async fn connect_errors_are_unavailable_and_never_echo_the_password() {
    for url in [
        "postgresql://relay:secret-pw@/db?host=/nonexistent-socket-dir",
        "postgresql://relay:secret-pw@/db?host=/x&sslmode=bogus",
    ] {
        let err = match PostgresStore::connect(url, 1).await {
            Ok(_) => panic!("{url} connected"),
            Err(e) => e,
        };
        assert!(
            matches!(err, dreamcore_relay::store::StoreError::Unavailable(_)),
            "{err:?}"
        );
        assert!(!err.to_string().contains("secret-pw"), "{err}");
    }
}

/// A CA of its own and a certificate it signed for `localhost`, as PEM files in `dir`
/// (`ca.pem`, `server.pem`, `server.key`).
fn write_tls_files(dir: &std::path::Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

/// `sslmode` as libpq means it, against a real PostgreSQL serving TLS with a certificate of a
/// private CA (as Supabase does): encrypted without `sslrootcert` (under `require` and the
/// default `prefer`), checked against the CA it names, refused when that CA did not sign the
/// server's certificate.
#[tokio::test]
async fn sslmode_require_encrypts_and_sslrootcert_verifies() {
    use crate::support::own_postgres::OwnPostgres;
    let tls = tempfile::tempdir().unwrap();
    write_tls_files(tls.path());
    let other = tempfile::tempdir().unwrap();
    write_tls_files(other.path());
    let port = crate::support::relay_process::free_port();
    let server = OwnPostgres::start_tls(tls.path(), port).await;
    let admin = server.admin().await;
    let base = format!("postgresql://relay:relay-test@localhost:{port}/relay_dev?sslmode=require");
    let encrypted_sessions = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
                 WHERE application_name = 'dreamcore-relay' AND ssl",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };

    let store = PostgresStore::connect(&base, 1)
        .await
        .expect("a server certificate of a private CA is accepted under require");
    store.ping().await.unwrap();
    assert_eq!(encrypted_sessions().await, 1, "the connection is encrypted");
    drop(store);
    // libpq's default, `prefer`, encrypts too when the server offers TLS (a Supabase URL as
    // the dashboard shows it names no `sslmode`).
    let unnamed = format!("postgresql://relay:relay-test@localhost:{port}/relay_dev");
    let store = PostgresStore::connect(&unnamed, 1).await.unwrap();
    store.ping().await.unwrap();
    assert_eq!(encrypted_sessions().await, 1, "encrypted without sslmode");
    drop(store);

    let ca = tls.path().join("ca.pem");
    let verified = format!("{base}&sslrootcert={}", ca.display());
    let store = PostgresStore::connect(&verified, 1)
        .await
        .expect("the server's certificate chains to sslrootcert");
    store.ping().await.unwrap();
    drop(store);

    let wrong = format!(
        "{base}&sslrootcert={}",
        other.path().join("ca.pem").display()
    );
    let refused = match PostgresStore::connect(&wrong, 1).await {
        Ok(_) => panic!("a certificate the named CA did not sign was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(refused.contains("certificate"), "{refused}");
    assert!(!refused.contains("relay-test"), "{refused}");
}
