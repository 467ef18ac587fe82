//! Exact texts the frontend reacts to or shows (docs/protocol.md §1.7 and §3).

pub const ACCESS_TOKEN_REQUIRED: &str = "access_token required";
pub const TOKEN_EXPIRED: &str = "Token expired";
pub const NOT_INITIALIZED: &str = "Not initialized";
pub const NO_PROJECT_SELECTED: &str = "No project selected";
pub const INVALID_REQUEST: &str = "Invalid request";
pub const NOT_AUTHENTICATED: &str = "Not authenticated";
pub const ACCESS_DENIED: &str = "Access denied";
pub const JOB_ID_REQUIRED: &str = "Job ID required";
pub const JOB_NOT_FOUND: &str = "Job not found";
pub const INVALID_MESSAGE_FORMAT: &str = "Invalid message format";
pub const INVALID_VERSION_ID: &str = "Invalid version ID format";
pub const JOB_CANCELLED: &str = "Job cancelled";
pub const OPERATION_CANCELLED: &str = "Operation cancelled";
pub const SYSTEM_BUSY: &str = "System is busy. Please try again in a moment.";
pub const FAILED_TO_CANCEL: &str = "Failed to cancel job";
pub const RATE_LIMITED: &str = "リクエストが多すぎます。しばらくしてからもう一度お試しください";
pub const MESSAGE_TOO_LARGE: &str = "Message too large";
