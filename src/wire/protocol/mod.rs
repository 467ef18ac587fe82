//! The browser ⇄ relay WebSocket messages (docs/protocol.md §2 and §3), as typed enums.
//! Every frame is one JSON object whose `type` names the variant.

mod client;
#[cfg(test)]
mod client_properties;
pub mod close;
mod server;
pub mod texts;

pub use client::{parse_id, ClientMessage, GenerationRequest};
pub use server::{CodedError, ErrorBody, JobResult, PendingPrompt, ServerMessage, VersionItem};
