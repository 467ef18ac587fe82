//! Daily quotas per plan (docs/data-and-auth.md §3.4): consume-first, one atomic check-and-increment
//! in the store, fail-open when the store cannot answer.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::store::models::iso_millis;
use crate::store::{PlanCharge, QuotaKind, Store, StoreError};
use crate::wire::protocol::{CodedError, ErrorBody, ServerMessage};

/// A refusal because the user reached a daily quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRefusal {
    /// Which quota was reached.
    pub kind: QuotaKind,
    /// The daily limit.
    pub limit: i64,
    /// When the quota resets.
    pub reset_at: DateTime<Utc>,
}

impl QuotaRefusal {
    /// The error reply the client is sent for this refusal.
    pub fn to_message(&self) -> ServerMessage {
        let (code, text) = match self.kind {
            QuotaKind::ProjectsCreated => (
                "DAILY_PROJECT_LIMIT_EXCEEDED",
                format!("本日のプロジェクト作成上限（{}回）に達しました", self.limit),
            ),
            QuotaKind::MessagesSent => (
                "DAILY_MESSAGE_LIMIT_EXCEEDED",
                format!("本日のメッセージ上限（{}回）に達しました", self.limit),
            ),
        };
        ServerMessage::Error(ErrorBody {
            message: None,
            error: Some(CodedError {
                code: code.into(),
                message: text,
                remaining: Some(0),
                limit: Some(self.limit),
                reset_at: Some(iso_millis(&self.reset_at)),
                recoverable: None,
            }),
        })
    }
}

/// The next 00:00 UTC, when every daily counter starts over.
pub fn next_reset(now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = now.date_naive() + Duration::days(1);
    tomorrow
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now)
}

/// Decides whether daily quotas are enforced.
#[derive(Debug, Clone)]
pub struct QuotaPolicy {
    enabled: bool,
}

impl QuotaPolicy {
    /// A policy that enforces quotas only when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self { enabled }
    }

    /// Limit per day for a plan; -1 is unlimited, `None` an unknown plan (fail-open).
    pub fn limit(plan: &str, kind: QuotaKind) -> Option<i64> {
        Some(match (plan, kind) {
            ("free", QuotaKind::ProjectsCreated) => 3,
            ("free", QuotaKind::MessagesSent) => 20,
            ("pro", QuotaKind::ProjectsCreated) => 100,
            ("pro", QuotaKind::MessagesSent) => 500,
            ("team", _) => -1,
            _ => return None,
        })
    }

    /// Whether quotas are enforced.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Counts one use against the user's daily quota, or refuses it.
    pub async fn consume(
        &self,
        store: &dyn Store,
        user_id: Uuid,
        kind: QuotaKind,
    ) -> Result<(), QuotaRefusal> {
        if !self.enabled {
            return Ok(());
        }
        Self::judge(
            store.consume_plan_quota(user_id, kind, Self::limit).await,
            kind,
        )
        .map(drop)
    }

    /// What the store's answer means for the request: refused at the plan's limit, allowed
    /// otherwise. An unknown plan is logged and allowed; so is a store that could not answer
    /// (fail-open), for which the answer is `Ok(false)`: whatever the store was to write with
    /// the charge was not written.
    pub fn judge(
        answer: Result<PlanCharge, StoreError>,
        kind: QuotaKind,
    ) -> Result<bool, QuotaRefusal> {
        match answer {
            Ok(PlanCharge::Applied { limit, decision }) if !decision.allowed => Err(QuotaRefusal {
                kind,
                limit,
                reset_at: next_reset(Utc::now()),
            }),
            Ok(PlanCharge::Applied { .. }) => Ok(true),
            Ok(PlanCharge::UnknownPlan(plan)) => {
                tracing::warn!(plan, "unknown plan; quota not enforced");
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "quota check failed; allowing the request");
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn reset_is_next_utc_midnight() {
        let now = Utc.with_ymd_and_hms(2026, 2, 8, 23, 59, 59).unwrap();
        assert_eq!(iso_millis(&next_reset(now)), "2026-02-09T00:00:00.000Z");
    }

    #[test]
    fn refusal_payload_is_exact() {
        let refusal = QuotaRefusal {
            kind: QuotaKind::MessagesSent,
            limit: 20,
            reset_at: Utc.with_ymd_and_hms(2026, 2, 9, 0, 0, 0).unwrap(),
        };
        assert_eq!(
            refusal.to_message().to_frame().as_str(),
            r#"{"type":"error","error":{"code":"DAILY_MESSAGE_LIMIT_EXCEEDED","message":"本日のメッセージ上限（20回）に達しました","remaining":0,"limit":20,"resetAt":"2026-02-09T00:00:00.000Z"}}"#
        );
    }
}
