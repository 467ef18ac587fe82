//! Starting a project's job: one flight of advisory locks and one statement that returns the
//! project's unfinished job or inserts the new one within the slot limits.
//!
//! The cluster-wide total (`StartLimits::total`) is a count over every instance's jobs, so a
//! start must not count while another instance's insert is still uncommitted and could push
//! the total over. Holding one exclusive lock around every count would do, but it queues all
//! starts of the cluster behind each other (and behind any holder the scheduler preempts).
//! Far from the limit no queue is needed: starts hold the start lock *shared* and insert only
//! if the committed count plus the server's `max_connections` stays within the limit. Every
//! start still uncommitted holds a connection, so at most `max_connections` of them overlap
//! any one count, and the total never passes the limit. A start that finds itself that close
//! goes again holding the lock *exclusively*, which waits for the shared holders to commit
//! and then counts exactly.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SubsecRound, Utc};
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::jobs::job_from_row;
use super::pool::{decode_err, get, one_flight, Param};
use super::PostgresStore;
use crate::store::models::JobRow;
use crate::store::{JobStart, Lease, StartLimits, StoreError};

/// Advisory lock of cluster-wide job starts; outside the 32-bit range of the per-project
/// `hashtext` locks, so the two never collide.
const START_LOCK_KEY: i64 = 0x6472_6561_6d63_6f72;

/// The server's `max_connections` as the last shared start read it (0: not yet known), so a
/// limit too small for the shared way ever to admit a start goes exclusive at once.
#[derive(Debug, Default)]
pub struct ConnectionBound(AtomicI64);

/// How a start holds the cluster-wide start lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Far from the total: many starts at once, each leaving room for every connection.
    Shared,
    /// Near the total: one start at a time, counting exactly.
    Exclusive,
}

/// What one flight of a start found.
enum Attempt {
    Done(JobStart),
    /// The shared way found the total within `max_connections`: go again exclusively.
    NearTotal,
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
    let start = Start {
        store,
        user_id,
        project_id,
        job_id,
        now,
        lease,
        total: limits.total.map(limit_param),
        per_user: limits.per_user.map(limit_param),
    };
    let known_bound = store.connection_bound.0.load(Ordering::Relaxed);
    let hold = match start.total {
        Some(total) if known_bound > 0 && total <= known_bound => Hold::Exclusive,
        _ => Hold::Shared,
    };
    match start.attempt(hold).await? {
        Attempt::Done(outcome) => Ok(outcome),
        Attempt::NearTotal => match start.attempt(Hold::Exclusive).await? {
            Attempt::Done(outcome) => Ok(outcome),
            Attempt::NearTotal => Err(decode_err("exclusive job start near the total")),
        },
    }
}

/// One job start's inputs, as the statements bind them.
struct Start<'a> {
    store: &'a PostgresStore,
    user_id: Uuid,
    project_id: Uuid,
    job_id: Uuid,
    now: DateTime<Utc>,
    lease: &'a Lease,
    total: Option<i64>,
    per_user: Option<i64>,
}

impl Start<'_> {
    async fn attempt(&self, hold: Hold) -> Result<Attempt, StoreError> {
        let ttl_ms = self.lease.ttl_millis();
        let shared = hold == Hold::Shared;
        // Advisory locks serialise check-then-insert per project (the shared schema has no
        // unique index on active jobs) and the user's slots; the start lock guards the total.
        // Always taken in this order — the project's, all starts', the user's — so two starts
        // never wait on each other in opposite order. Released at COMMIT, after the new row
        // is visible to the next holder.
        let project_param = [(&self.project_id as _, Type::UUID)];
        let start_param = [(&START_LOCK_KEY as _, Type::INT8)];
        let user_param = [(&self.user_id as _, Type::UUID)];
        let mut statements: Vec<(&str, &[Param<'_>])> = vec![(
            "SELECT pg_advisory_xact_lock(hashtext($1::text))",
            &project_param,
        )];
        match (self.total, hold) {
            (None, _) => {}
            (Some(_), Hold::Shared) => {
                statements.push(("SELECT pg_advisory_xact_lock_shared($1)", &start_param))
            }
            (Some(_), Hold::Exclusive) => {
                statements.push(("SELECT pg_advisory_xact_lock($1)", &start_param))
            }
        }
        if self.per_user.is_some() {
            statements.push((
                "SELECT pg_advisory_xact_lock(hashtext('user:' || $1::text))",
                &user_param,
            ));
        }
        let start_params = [
            (&self.job_id as _, Type::UUID),
            (&self.user_id as _, Type::UUID),
            (&self.project_id as _, Type::UUID),
            (&self.now as _, Type::TIMESTAMPTZ),
            (&self.lease.instance as _, Type::UUID),
            (&ttl_ms as _, Type::INT8),
            (&self.total as _, Type::INT8),
            (&self.per_user as _, Type::INT8),
            (&shared as _, Type::BOOL),
        ];
        statements.push((START_SQL, &start_params));
        let conn = self.store.connection().await?;
        let mut replies = one_flight(&conn, &statements).await?;
        let reply = replies.pop().and_then(|rows| rows.into_iter().next());
        let Some(row) = reply else {
            return Err(decode_err("answer to a job start"));
        };
        if get::<Option<Uuid>>(&row, 0)?.is_some() {
            return Ok(Attempt::Done(JobStart::Existing(job_from_row(&row)?)));
        }
        if get::<Option<Uuid>>(&row, 10)?.is_some() {
            return Ok(Attempt::Done(JobStart::Created(JobRow::new_pending(
                self.job_id,
                self.user_id,
                self.project_id,
                self.now,
            ))));
        }
        let (everyone, mine, bound): (i64, i64, i64) =
            (get(&row, 11)?, get(&row, 12)?, get(&row, 13)?);
        if shared {
            self.store
                .connection_bound
                .0
                .store(bound, Ordering::Relaxed);
        }
        if self.total.is_some_and(|limit| everyone >= limit) {
            return Ok(Attempt::Done(JobStart::Full));
        }
        if self.per_user.is_some_and(|limit| mine >= limit) {
            return Ok(Attempt::Done(JobStart::UserFull));
        }
        if shared && self.total.is_some() {
            return Ok(Attempt::NearTotal);
        }
        Err(decode_err("job start that neither started nor was refused"))
    }
}

/// A job start in one statement, run once the locks are held (so with a fresh READ COMMITTED
/// snapshot): the project's unfinished job if it has one, else the new row if the slots
/// allow it. Columns 0–9 the unfinished job (NULL when none), 10 the inserted id, 11 and 12
/// the unfinished jobs of everyone and of the user (0 when that limit is not asked for), 13
/// the room a shared start leaves for the starts overlapping it (`max_connections`; 0 when
/// exclusive: nobody overlaps).
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
                                           AND status IN ('pending', 'processing')) END AS mine,
           CASE WHEN $9::bool THEN current_setting('max_connections')::int8 ELSE 0 END AS overlap
), inserted AS (
    INSERT INTO jobs (id, user_id, project_id, status, progress, created_at, updated_at,
                      owner_instance, lease_expires_at)
    SELECT $1, $2, $3, 'pending', 0, $4, $4, $5, now() + $6 * interval '1 millisecond'
    FROM counts
    WHERE NOT EXISTS (SELECT 1 FROM active)
      AND ($7::int8 IS NULL OR counts.everyone + counts.overlap < $7)
      AND ($8::int8 IS NULL OR counts.mine < $8)
    RETURNING id
)
SELECT a.id, a.user_id, a.project_id, a.status, a.progress, a.progress_message, a.result,
       a.error, a.created_at, a.updated_at, (SELECT id FROM inserted), c.everyone, c.mine,
       c.overlap
FROM counts c LEFT JOIN active a ON true";

/// A slot limit as the query's `int8` parameter.
fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
