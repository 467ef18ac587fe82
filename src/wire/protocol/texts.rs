//! Exact texts the frontend reacts to or shows (docs/protocol.md §1.7 and §3).

/// The init message had no access token.
pub const ACCESS_TOKEN_REQUIRED: &str = "access_token required";
/// The access token has expired.
pub const TOKEN_EXPIRED: &str = "Token expired";
/// A request came before the connection was initialized (authenticated).
pub const NOT_INITIALIZED: &str = "Not initialized";
/// The request needs a selected project.
pub const NO_PROJECT_SELECTED: &str = "No project selected";
/// The request was missing a field or had a bad one.
pub const INVALID_REQUEST: &str = "Invalid request";
/// The connection has not authenticated.
pub const NOT_AUTHENTICATED: &str = "Not authenticated";
/// The project or job belongs to someone else.
pub const ACCESS_DENIED: &str = "Access denied";
/// The request had no job id.
pub const JOB_ID_REQUIRED: &str = "Job ID required";
/// No job has that id.
pub const JOB_NOT_FOUND: &str = "Job not found";
/// The frame could not be read as a client message.
pub const INVALID_MESSAGE_FORMAT: &str = "Invalid message format";
/// The version id is not a commit hash.
pub const INVALID_VERSION_ID: &str = "Invalid version ID format";
/// The job was cancelled.
pub const JOB_CANCELLED: &str = "Job cancelled";
/// The operation was cancelled.
pub const OPERATION_CANCELLED: &str = "Operation cancelled";
/// No job slot is free right now.
pub const SYSTEM_BUSY: &str = "System is busy. Please try again in a moment.";
/// The job could not be cancelled.
pub const FAILED_TO_CANCEL: &str = "Failed to cancel job";
/// Too many requests; the user should wait (Japanese, as the frontend shows it).
pub const RATE_LIMITED: &str = "リクエストが多すぎます。しばらくしてからもう一度お試しください";
/// The message exceeded the size limit.
pub const MESSAGE_TOO_LARGE: &str = "Message too large";
/// `result.message` of `completed` when the agent's answer says nothing.
pub const GAME_UPDATED: &str = "ゲームを更新しました";
