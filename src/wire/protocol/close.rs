//! WebSocket close codes and reasons (docs/protocol.md §1.3), plus the drain code.

/// Close code: authentication failed (token missing or rejected).
pub const AUTH_FAILED: u16 = 4001;
/// Close code: the client did not authenticate in time.
pub const AUTH_TIMEOUT: u16 = 4008;
/// "Service restart": the frontend reconnects, the load balancer picks another instance.
pub const SERVICE_RESTART: u16 = 1012;
/// Policy violation: an oversized frame, or a client too slow to read its queue.
pub const POLICY: u16 = 1008;
/// Close reason: the init message had no access token.
pub const REASON_AUTH_REQUIRED: &str = "Authentication required";
/// Close reason: the access token was rejected.
pub const REASON_AUTH_FAILED: &str = "Authentication failed";
/// Close reason: the client did not authenticate in time.
pub const REASON_AUTH_TIMEOUT: &str = "Authentication timeout";
/// Reason sent with [`SERVICE_RESTART`] when the drain closes the sockets.
pub const REASON_SERVICE_RESTART: &str = "Server restarting";
/// Reason sent with [`POLICY`] to a client whose outbound queue overflowed.
pub const REASON_TOO_SLOW: &str = "Client too slow";
