//! One function per client message (docs/protocol.md §2). Each runs in its own task and answers
//! through the connection's outbound queue. Internal errors are typed; this is the edge
//! where they become the exact wire replies.

use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use super::session::Connection;
use crate::auth::Identity;
use crate::jobs::{CancelError, StartError, StartOutcome, SubscriptionKind};
use crate::metrics::METRICS;
use crate::store::models::{ProjectListItem, ProjectSummary};
use crate::store::QuotaKind;
use crate::wire::protocol::{
    close, parse_id, texts, ClientMessage, GenerationRequest, PendingPrompt, ServerMessage,
};

const HISTORY_LIMIT: usize = 50;
/// Upper bound on project names; the frontend itself never sends more than a short title.
const MAX_PROJECT_NAME_CHARS: usize = 200;
const DEFAULT_PROJECT_NAME: &str = "New Game";

pub async fn handle(conn: Arc<Connection>, message: ClientMessage) {
    match message {
        ClientMessage::Init { access_token, .. } => init(&conn, access_token).await,
        // Answered inline by the connection loop.
        ClientMessage::Ping => {}
        // Only used upstream to suppress web push, which the relay does not send.
        ClientMessage::ViewState { .. } | ClientMessage::DeselectProject => {}
        ClientMessage::SelectProject { project_id } => select_project(&conn, project_id).await,
        ClientMessage::CreateProject { name } => create_project(&conn, name).await,
        ClientMessage::DeleteProject { project_id } => delete_project(&conn, project_id).await,
        ClientMessage::RenameProject { project_id, name } => {
            rename_project(&conn, project_id, name).await
        }
        ClientMessage::GetProjectInfo { project_id } => project_info(&conn, project_id).await,
        ClientMessage::Message(request) => generate(&conn, request).await,
        ClientMessage::Cancel { job_id } => cancel(&conn, job_id).await,
        ClientMessage::GetJobStatus { job_id } => job_status(&conn, job_id).await,
        ClientMessage::SubscribeJob { job_id } => subscribe_job(&conn, job_id).await,
        ClientMessage::CancelJob { job_id } => cancel_job(&conn, job_id).await,
        ClientMessage::GetVersions { project_id } => super::versions::list(&conn, project_id).await,
        ClientMessage::GetVersionEdits {
            project_id,
            version_hash,
        } => super::versions::edits(&conn, project_id, version_hash).await,
        ClientMessage::RestoreVersion {
            project_id,
            version_id,
        } => super::versions::restore(&conn, project_id, version_id).await,
        // Upstream's diagnostic hook (never sent by the frontend) is not carried over.
        ClientMessage::TestError { .. } => conn.reply(ServerMessage::error(
            match conn.app.selector.status().current {
                Some(crate::backend::BackendKind::Modal) => {
                    "testError is not supported by this relay"
                }
                _ => "Test errors only available in Modal mode",
            },
        )),
        ClientMessage::Unknown => conn.reply(ServerMessage::error("Unknown message type")),
    }
}

async fn init(conn: &Connection, token: Option<String>) {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        METRICS.auth_failures.inc(&["missing"]);
        conn.reject(
            texts::ACCESS_TOKEN_REQUIRED,
            close::AUTH_FAILED,
            close::REASON_AUTH_REQUIRED,
        );
        return;
    };
    let identity = match conn.app.verifier.verify(&token).await {
        Ok(identity) => identity,
        Err(e) => {
            METRICS.auth_failures.inc(&[e.metric_reason()]);
            tracing::info!(conn_id = conn.id, reason = %e, "access token refused");
            conn.reject(
                e.client_message(),
                close::AUTH_FAILED,
                close::REASON_AUTH_FAILED,
            );
            return;
        }
    };
    if let Err(e) = conn.app.store.ensure_user(&identity).await {
        tracing::warn!(user_id = %identity.user_id, error = %e, "could not ensure the users row");
    }
    let projects = project_list(conn, &identity).await;
    let user_id = identity.user_id;
    tracing::Span::current().record("user_id", tracing::field::display(user_id));
    conn.authenticate(identity);
    tracing::debug!(conn_id = conn.id, %user_id, "socket authenticated");
    conn.reply(ServerMessage::Init { user_id, projects });
}

async fn project_list(conn: &Connection, who: &Identity) -> Vec<ProjectListItem> {
    match conn.app.store.list_projects(who).await {
        Ok(projects) => projects.iter().map(ProjectListItem::from).collect(),
        Err(e) => {
            tracing::warn!(user_id = %who.user_id, error = %e, "could not list projects");
            Vec::new()
        }
    }
}

/// The caller's identity and an owned project, or the exact reply for why not.
async fn owned_project(
    conn: &Connection,
    raw_id: Option<String>,
    unauthenticated: &'static str,
) -> Result<(Identity, crate::store::models::Project), &'static str> {
    let who = conn.identity().ok_or(unauthenticated)?;
    if raw_id.as_deref().is_none_or(str::is_empty) {
        return Err(texts::INVALID_REQUEST);
    }
    let project_id = parse_id(raw_id.as_deref()).ok_or(texts::ACCESS_DENIED)?;
    match conn.app.store.get_project(&who, project_id).await {
        Ok(Some(project)) => Ok((who, project)),
        Ok(None) => Err(texts::ACCESS_DENIED),
        Err(e) => {
            tracing::warn!(user_id = %who.user_id, error = %e, "ownership check failed");
            Err(texts::ACCESS_DENIED)
        }
    }
}

async fn select_project(conn: &Connection, project_id: Option<String>) {
    let Some(who) = conn.identity() else {
        conn.reply(ServerMessage::error(texts::NOT_INITIALIZED));
        return;
    };
    let owned = match parse_id(project_id.as_deref()) {
        Some(id) => conn.app.store.get_project(&who, id).await.ok().flatten(),
        None => None,
    };
    let Some(project) = owned else {
        conn.reply(ServerMessage::error(texts::ACCESS_DENIED));
        return;
    };
    conn.set_current_project(Some(project.id));
    let history = conn
        .app
        .store
        .history(&who, project.id, HISTORY_LIMIT)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read history");
            Vec::new()
        });
    let active_job = conn
        .app
        .jobs
        .active_row(project.id)
        .await
        .unwrap_or_default();
    let channel = active_job
        .as_ref()
        .and_then(|row| conn.app.jobs.channel_for(row));
    conn.reply(ServerMessage::ProjectSelected {
        project_id: project.id,
        history,
        versions: Vec::new(),
        active_job,
    });
    if let Some(channel) = channel {
        // Everything the job emitted so far, then live events (docs/decisions.md, decision
        // 6), from whichever instance runs it.
        conn.follow(&channel, SubscriptionKind::Observer, true);
    }
    super::versions::send_list(conn, &who, project.id, false).await;
}

async fn create_project(conn: &Connection, name: Option<String>) {
    let Some(who) = conn.identity() else {
        conn.reply(ServerMessage::error(texts::NOT_INITIALIZED));
        return;
    };
    let name = name.unwrap_or_else(|| DEFAULT_PROJECT_NAME.to_string());
    if name.chars().count() > MAX_PROJECT_NAME_CHARS {
        conn.reply(ServerMessage::error(texts::INVALID_REQUEST));
        return;
    }
    if let Err(refusal) = conn
        .app
        .quota
        .consume(
            conn.app.store.as_ref(),
            who.user_id,
            QuotaKind::ProjectsCreated,
        )
        .await
    {
        conn.reply(refusal.to_message());
        return;
    }
    let project = match conn.app.store.create_project(&who, &name).await {
        Ok(project) => project,
        Err(e) => {
            tracing::warn!(user_id = %who.user_id, error = %e, "project insert failed");
            conn.reply(ServerMessage::error(texts::INVALID_MESSAGE_FORMAT));
            return;
        }
    };
    conn.set_current_project(Some(project.id));
    let projects = project_list(conn, &who).await;
    conn.reply(ServerMessage::ProjectCreated {
        project: ProjectSummary::from(&project),
        projects,
    });
}

async fn delete_project(conn: &Connection, project_id: Option<String>) {
    let (who, project) = match owned_project(conn, project_id, texts::INVALID_REQUEST).await {
        Ok(found) => found,
        Err(text) => return conn.reply(ServerMessage::error(text)),
    };
    // A job still running on the project would write into rows that no longer exist.
    if let Ok(Some(job)) = conn.app.jobs.active_row(project.id).await {
        let _ = conn.app.jobs.cancel(who.user_id, job.id).await;
    }
    if let Err(e) = conn.app.store.delete_project(&who, project.id).await {
        tracing::warn!(error = %e, "project delete failed");
        return conn.reply(ServerMessage::error(texts::INVALID_MESSAGE_FORMAT));
    }
    if conn.current_project() == Some(project.id) {
        conn.set_current_project(None);
    }
    let projects = project_list(conn, &who).await;
    conn.reply(ServerMessage::ProjectDeleted {
        project_id: project.id,
        projects,
    });
}

async fn rename_project(conn: &Connection, project_id: Option<String>, name: Option<String>) {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return conn.reply(ServerMessage::error(texts::INVALID_REQUEST));
    };
    if name.chars().count() > MAX_PROJECT_NAME_CHARS {
        return conn.reply(ServerMessage::error(texts::INVALID_REQUEST));
    }
    let (who, project) = match owned_project(conn, project_id, texts::INVALID_REQUEST).await {
        Ok(found) => found,
        Err(text) => return conn.reply(ServerMessage::error(text)),
    };
    let renamed = match conn.app.store.rename_project(&who, project.id, &name).await {
        Ok(renamed) => renamed,
        Err(e) => {
            tracing::warn!(error = %e, "project rename failed");
            None
        }
    };
    let projects = project_list(conn, &who).await;
    conn.reply(ServerMessage::ProjectRenamed {
        project: renamed.as_ref().map(ProjectSummary::from),
        projects: Some(projects),
    });
}

async fn project_info(conn: &Connection, project_id: Option<String>) {
    match owned_project(conn, project_id, texts::INVALID_REQUEST).await {
        Ok((_, project)) => conn.reply(ServerMessage::ProjectInfo {
            project: ProjectSummary::from(&project),
        }),
        Err(text) => conn.reply(ServerMessage::error(text)),
    }
}

async fn generate(conn: &Connection, request: GenerationRequest) {
    let (Some(who), Some(project_id)) = (conn.identity(), conn.current_project()) else {
        return conn.reply(ServerMessage::error(texts::NO_PROJECT_SELECTED));
    };
    let content = request.content.clone().unwrap_or_default();
    if content.trim().is_empty() {
        return conn.reply(ServerMessage::error(texts::INVALID_REQUEST));
    }
    let per_minute = conn.app.config.limits.generations_per_minute;
    let allowed = match conn
        .app
        .jobs
        .bus()
        .take_generation(who.user_id, per_minute)
        .await
    {
        Some(allowed) => allowed,
        None => conn.app.generation_limit.try_take(who.user_id),
    };
    if !allowed {
        METRICS.rate_limited.inc(&["generation"]);
        return conn.reply(ServerMessage::rate_limited());
    }
    match conn.app.jobs.start(&who, project_id, &content).await {
        Ok(StartOutcome::Started(job, row)) => {
            conn.reply(ServerMessage::JobStarted {
                job: row,
                is_existing: false,
            });
            conn.follow(&job.channel, SubscriptionKind::Message, true);
        }
        Ok(StartOutcome::Attached(job, row)) => {
            conn.reply(ServerMessage::JobStarted {
                job: row,
                is_existing: true,
            });
            let already = job.channel.is_subscribed(conn.id);
            conn.follow(&job.channel, SubscriptionKind::Message, !already);
        }
        Ok(StartOutcome::ExistingElsewhere(row)) => {
            let channel = conn.app.jobs.channel_for(&row);
            conn.reply(ServerMessage::JobStarted {
                job: row,
                is_existing: true,
            });
            if let Some(channel) = channel {
                let already = channel.is_subscribed(conn.id);
                conn.follow(&channel, SubscriptionKind::Message, !already);
            }
        }
        Err(StartError::UserLimit {
            limit,
            in_progress,
            jobs,
        }) => conn.reply(ServerMessage::LimitExceeded {
            limit,
            in_progress,
            jobs,
            pending_prompt: PendingPrompt {
                content: request.raw_content.unwrap_or(content),
                attached_assets: request.attached_assets.unwrap_or(Value::Array(Vec::new())),
                selected_style: request.selected_style,
            },
        }),
        Err(StartError::SystemBusy) => conn.reply(ServerMessage::coded_error(
            "SYSTEM_LIMIT_EXCEEDED",
            texts::SYSTEM_BUSY,
        )),
        Err(StartError::Quota(refusal)) => conn.reply(refusal.to_message()),
        Err(StartError::Draining) => conn.reply(ServerMessage::retryable_error(
            "SERVER_DRAINING",
            "サーバーを更新中です。数秒後にもう一度お試しください",
        )),
        Err(e @ (StartError::NoBackend(_) | StartError::Store(_))) => {
            tracing::error!(user_id = %who.user_id, %project_id, error = %e, "job could not start");
            conn.reply(ServerMessage::coded_error(
                "OPERATION_FAILED",
                "Failed to create job",
            ));
        }
    }
}

async fn cancel(conn: &Connection, job_id: Option<String>) {
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

async fn job_status(conn: &Connection, job_id: Option<String>) {
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

async fn subscribe_job(conn: &Connection, job_id: Option<String>) {
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

async fn cancel_job(conn: &Connection, job_id: Option<String>) {
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
