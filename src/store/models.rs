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

/// Where a job is in its life.
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
    /// The status as stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Reads a status stored in the database.
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

    /// Whether the job is still pending or running.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Processing)
    }
}

/// The `jobs` row, sent raw (snake_case) inside job events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    /// The job's id.
    pub id: Uuid,
    /// Who started it.
    pub user_id: Uuid,
    /// The project it works on.
    pub project_id: Uuid,
    /// Where it is in its life.
    pub status: JobStatus,
    /// Progress percentage.
    pub progress: i32,
    /// Latest progress text.
    pub progress_message: Option<String>,
    /// JSON-encoded completion result, as upstream stores it.
    pub result: Option<String>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// When it was created.
    #[serde(serialize_with = "ser_ts")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(serialize_with = "ser_ts")]
    pub updated_at: DateTime<Utc>,
}

impl JobRow {
    /// A new pending job row.
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
    /// The project's id.
    pub id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Whether others may see it.
    pub is_public: bool,
    /// The project it was remixed from, if any.
    pub remixed_from: Option<Uuid>,
    /// Whether its files have been set up.
    pub is_initialized: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Item of `init.projects` and the other project lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectListItem {
    /// The project's id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Whether others may see it.
    pub is_public: bool,
    /// The project it was remixed from, if any.
    pub remixed_from: Option<Uuid>,
    /// When it was created.
    #[serde(serialize_with = "ser_ts")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(serialize_with = "ser_ts")]
    pub updated_at: DateTime<Utc>,
}

/// `project` of `projectCreated`, `projectRenamed` and `projectInfo`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSummary {
    /// The project's id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// When it was created.
    #[serde(serialize_with = "ser_ts")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
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

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    User,
    Assistant,
}

impl ChatRole {
    /// The role as stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One message of a project's chat history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryItem {
    /// Who wrote it.
    pub role: ChatRole,
    /// The message text.
    pub content: String,
    /// When it was written.
    #[serde(serialize_with = "ser_ts")]
    pub timestamp: DateTime<Utc>,
}

/// One of the user's unfinished jobs, for `limitExceeded.jobs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveJobInfo {
    /// The job's id.
    pub job_id: Uuid,
    /// The project it works on.
    pub project_id: Uuid,
    /// That project's name.
    pub project_name: String,
    /// Where the job is in its life.
    pub status: JobStatus,
    /// When the job was created.
    #[serde(serialize_with = "ser_ts")]
    pub created_at: DateTime<Utc>,
}
