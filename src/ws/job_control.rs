//! The job-control messages of a socket: `cancel`, `getJobStatus`, `subscribeJob` and
//! `cancelJob` (docs/protocol.md §2.11 and §2.15–§2.17).

use super::session::Connection;
use crate::auth::Identity;
use crate::jobs::{CancelError, SubscriptionKind};
use crate::wire::protocol::{parse_id, texts, ServerMessage};
use uuid::Uuid;

pub(super) async fn cancel(conn: &Connection, job_id: Option<String>) {
    let Some(raw) = job_id else {
        // Stop pressed before `jobStarted` arrived: stop the current project's job if any.
        let (Some(who), Some(project_id)) = (conn.identity(), conn.current_project()) else {
            return;
        };
        if let Ok(Some(job)) = conn.app.jobs.active_row(project_id).await {
            let _ = conn.app.jobs.cancel(who.user_id, job.id).await;
        }
        return conn.reply(ServerMessage::Cancelled {
            job: None,
            message: Some(texts::OPERATION_CANCELLED.into()),
            job_id: None,
        });
    };
    let (Some(who), Some(job_id)) = (conn.identity(), parse_id(Some(&raw))) else {
        return conn.reply(ServerMessage::error(texts::ACCESS_DENIED));
    };
    match conn.app.jobs.cancel(who.user_id, job_id).await {
        Ok(_) => conn.reply(ServerMessage::Cancelled {
            job: None,
            message: Some(texts::JOB_CANCELLED.into()),
            job_id: Some(job_id),
        }),
        Err(_) => conn.reply(ServerMessage::error(texts::ACCESS_DENIED)),
    }
}

/// Shared guard of `getJobStatus` / `subscribeJob` / `cancelJob`.
fn job_request(
    conn: &Connection,
    job_id: Option<String>,
) -> Result<(Identity, Option<Uuid>), &'static str> {
    let who = conn.identity().ok_or(texts::NOT_AUTHENTICATED)?;
    let raw = job_id
        .filter(|j| !j.is_empty())
        .ok_or(texts::JOB_ID_REQUIRED)?;
    Ok((who, parse_id(Some(&raw))))
}

pub(super) async fn job_status(conn: &Connection, job_id: Option<String>) {
    let (who, job_id) = match job_request(conn, job_id) {
        Ok(found) => found,
        Err(text) => return conn.reply(ServerMessage::error(text)),
    };
    let job = match job_id {
        Some(id) => conn
            .app
            .jobs
            .job_for_user(who.user_id, id)
            .await
            .unwrap_or_default(),
        None => None,
    };
    conn.reply(ServerMessage::JobStatus { job });
}

pub(super) async fn subscribe_job(conn: &Connection, job_id: Option<String>) {
    let (who, job_id) = match job_request(conn, job_id) {
        Ok(found) => found,
        Err(text) => return conn.reply(ServerMessage::error(text)),
    };
    let Some(job_id) = job_id else {
        return conn.reply(ServerMessage::error(texts::JOB_NOT_FOUND));
    };
    match conn.app.jobs.job_for_user(who.user_id, job_id).await {
        Ok(Some(row)) => {
            conn.reply(ServerMessage::Subscribed { job_id });
            if let Some(channel) = conn.app.jobs.channel_for(&row) {
                conn.follow(&channel, SubscriptionKind::Observer, false);
            }
        }
        _ => conn.reply(ServerMessage::error(texts::JOB_NOT_FOUND)),
    }
}

pub(super) async fn cancel_job(conn: &Connection, job_id: Option<String>) {
    let (who, job_id) = match job_request(conn, job_id) {
        Ok(found) => found,
        Err(text) => return conn.reply(ServerMessage::error(text)),
    };
    let Some(job_id) = job_id else {
        return conn.reply(ServerMessage::error(texts::JOB_NOT_FOUND));
    };
    match conn.app.jobs.cancel(who.user_id, job_id).await {
        Ok(_) => conn.reply(ServerMessage::JobCancelled { job_id }),
        Err(CancelError::NotFound) => conn.reply(ServerMessage::error(texts::JOB_NOT_FOUND)),
        Err(CancelError::Store(e)) => {
            tracing::warn!(error = %e, "cancel failed");
            conn.reply(ServerMessage::error(texts::FAILED_TO_CANCEL));
        }
    }
}
