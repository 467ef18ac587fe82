//! Before a sweep fails expired leases: a job whose events on the bus already end with a
//! terminal event did not die with its instance. Its instance ended it while cut off from the
//! database alone (its end kept, unwritten, and its lease left to lapse), and every watcher
//! saw that end; the row takes the same end instead of `failed`. The answer's history entry
//! is still the owner's to write, when the database answers it again.

use serde::Deserialize;

use super::engine::Engine;
use crate::store::models::JobStatus;
use crate::store::{JobUpdate, StoreError};

/// The part of a terminal event (`completed`, `failed`, `cancelled`) its row is ended with:
/// the job as its instance last had it.
#[derive(Deserialize)]
struct TerminalEvent {
    job: EndedJob,
}

/// The row fields a terminal event carries (the relay's copy of the row, snake_case).
#[derive(Deserialize)]
struct EndedJob {
    status: JobStatus,
    progress: i32,
    progress_message: Option<String>,
    result: Option<String>,
    error: Option<String>,
}

/// End every expired job whose events end with a terminal event as that event says; returns
/// how many expired jobs are left for the sweep to fail, or `None` when it did not look (only
/// a cluster has instances other than this one, whose own unwritten ends are written before
/// any sweep).
pub(super) async fn write_published_ends(engine: &Engine) -> Result<Option<usize>, StoreError> {
    if !engine.bus.is_clustered() {
        return Ok(None);
    }
    let expired = engine.store.expired_jobs().await?;
    let ids: Vec<_> = expired.iter().map(|row| row.id).collect();
    let ends = engine.bus.published_ends(&ids).await;
    let mut left = 0;
    for row in expired {
        let Some(frame) = ends.get(&row.id) else {
            left += 1;
            continue;
        };
        let Some(update) = update_from(frame) else {
            tracing::warn!(job_id = %row.id, "the job's terminal event on the bus is unreadable; left to the sweep");
            left += 1;
            continue;
        };
        // `None`: ended meanwhile (its owner came back, or another sweep); nothing to fail.
        if let Some(ended) = engine.store.update_job(row.id, &update).await? {
            tracing::info!(
                job_id = %row.id,
                user_id = %row.user_id,
                status = ended.status.as_str(),
                "expired job had ended on its instance; its row ends as its watchers saw"
            );
        }
    }
    Ok(Some(left))
}

/// The terminal update a terminal event's frame describes; `None` for anything else.
fn update_from(frame: &str) -> Option<JobUpdate> {
    let TerminalEvent { job } = serde_json::from_str(frame).ok()?;
    (!job.status.is_active()).then_some(JobUpdate {
        status: Some(job.status),
        progress: Some(job.progress),
        progress_message: job.progress_message,
        result: job.result,
        error: job.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::models::JobRow;
    use crate::wire::protocol::{JobResult, ServerMessage};
    use uuid::Uuid;

    fn row(status: JobStatus) -> JobRow {
        let mut row = JobRow::new_pending(
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            chrono::Utc::now(),
        );
        row.status = status;
        row.progress = 100;
        row.progress_message = Some("完了".into());
        row.result = Some(r#"{"message":"できました"}"#.into());
        row
    }

    #[test]
    fn a_terminal_event_gives_the_row_its_end() {
        let job = row(JobStatus::Completed);
        let result = JobResult::stored_or_default(job.result.as_deref());
        let frame = ServerMessage::Completed { job, result }.to_frame();
        let update = update_from(&frame).expect("a completed event");
        assert_eq!(update.status, Some(JobStatus::Completed));
        assert_eq!(update.progress, Some(100));
        assert_eq!(update.progress_message.as_deref(), Some("完了"));
        assert_eq!(
            update.result.as_deref(),
            Some(r#"{"message":"できました"}"#)
        );

        let mut job = row(JobStatus::Cancelled);
        job.result = None;
        let frame = ServerMessage::Cancelled {
            job: Some(job),
            message: None,
            job_id: None,
        }
        .to_frame();
        let update = update_from(&frame).expect("a cancelled event");
        assert_eq!(update.status, Some(JobStatus::Cancelled));
        assert_eq!(update.result, None);
    }

    #[test]
    fn anything_but_an_ended_job_is_not_an_end() {
        let job = row(JobStatus::Processing);
        let frame = ServerMessage::Progress {
            progress: 40,
            message: None,
            job,
        }
        .to_frame();
        assert!(update_from(&frame).is_none());
        assert!(update_from(r#"{"type":"cancelled","jobId":"x"}"#).is_none());
        assert!(update_from("not json").is_none());
    }
}
