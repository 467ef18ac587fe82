//! Browser WebSocket: protocol types and connection handling.

pub mod protocol;
