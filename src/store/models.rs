//! Rows as the frontend sees them. Field names and shapes follow `docs/protocol.md` §3.0.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

/// `2026-02-01T10:00:00.000Z`, the shape JavaScript's `toISOString()` produces.
pub fn iso_millis(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ser_ts<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&iso_millis(at))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "pending" => Self::Pending,
            "processing" => Self::Processing,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Processing)
    }
}

/// The `jobs` row, sent raw (snake_case) inside job events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub project_id: Uuid,
    pub status: JobStatus,
    pub progress: i32,
    pub progress_message: Option<String>,
    /// JSON-encoded completion result, as upstream stores it.
    pub result: Option<String>,
    pub error: Option<String>,
    #[serde(serialize_with = "ser_ts")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "ser_ts")]
    pub updated_at: DateTime<Utc>,
}

impl JobRow {
    pub fn new_pending(id: Uuid, user_id: Uuid, project_id: Uuid, now: DateTime<Utc>) -> Self {
        Self {
            id,
            user_id,
            project_id,
            status: JobStatus::Pending,
            progress: 0,
            progress_message: None,
            result: None,
            error: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A project as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub description: String,
    pub is_public: bool,
    pub remixed_from: Option<Uuid>,
    pub is_initialized: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Item of `init.projects` and the other project lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectListItem {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub is_public: bool,
    pub remixed_from: Option<Uuid>,
    #[serde(serialize_with = "ser_ts")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "ser_ts")]
    pub updated_at: DateTime<Utc>,
}

/// `project` of `projectCreated`, `projectRenamed` and `projectInfo`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSummary {
    pub id: Uuid,
    pub name: String,
    #[serde(serialize_with = "ser_ts")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "ser_ts")]
    pub updated_at: DateTime<Utc>,
}

impl From<&Project> for ProjectListItem {
    fn from(p: &Project) -> Self {
        Self {
            id: p.id,
            name: p.name.clone(),
            description: p.description.clone(),
            is_public: p.is_public,
            remixed_from: p.remixed_from,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

impl From<&Project> for ProjectSummary {
    fn from(p: &Project) -> Self {
        Self {
            id: p.id,
            name: p.name.clone(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    User,
    Assistant,
}

impl ChatRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryItem {
    pub role: ChatRole,
    pub content: String,
    #[serde(serialize_with = "ser_ts")]
    pub timestamp: DateTime<Utc>,
}

/// One of the user's unfinished jobs, for `limitExceeded.jobs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveJobInfo {
    pub job_id: Uuid,
    pub project_id: Uuid,
    pub project_name: String,
    pub status: JobStatus,
    #[serde(serialize_with = "ser_ts")]
    pub created_at: DateTime<Utc>,
}
