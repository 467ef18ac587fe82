//! WebSocket close codes and reasons (docs/protocol.md §1.3), plus the drain code.

pub const AUTH_FAILED: u16 = 4001;
pub const AUTH_TIMEOUT: u16 = 4008;
/// "Service restart": the frontend reconnects, the load balancer picks another instance.
pub const SERVICE_RESTART: u16 = 1012;
/// Policy violation: an oversized frame, or a client too slow to read its queue.
pub const POLICY: u16 = 1008;
pub const REASON_AUTH_REQUIRED: &str = "Authentication required";
pub const REASON_AUTH_FAILED: &str = "Authentication failed";
pub const REASON_AUTH_TIMEOUT: &str = "Authentication timeout";
