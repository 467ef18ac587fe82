//! dreamcore-relay: the WebSocket tier of DreamCore-V2.
//!
//! Data path: `ws` (browser sockets) → `jobs` (one job per generation, slot limits,
//! sequence-numbered event log) → `backend` (Modal `generate_game` or the local Claude CLI,
//! one normalized event stream) → back through `jobs` to every subscribed socket, as typed
//! `wire` messages. `auth` verifies Supabase tokens, `store` keeps projects, history and job
//! rows, `http` serves health, readiness, metrics and the editor's REST routes; `server` wires
//! it together. Lower layers never import higher ones (README, "How a message flows").
//!
//! Only what the binary and the integration tests use is public.

pub mod auth;
pub mod backend;
pub mod config;
mod http;
mod jobs;
mod metrics;
mod rate_limit;
pub mod server;
mod state;
pub mod store;
mod wire;
mod ws;
