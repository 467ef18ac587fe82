//! dreamcore-relay: the WebSocket tier of DreamCore-V2.
//!
//! Data path: `ws` (browser sockets, typed protocol) → `jobs` (one job per generation, slot
//! limits, sequence-numbered event log) → `backend` (Modal `generate_game` or the local
//! Claude CLI, one normalized event stream) → back through `jobs` to every subscribed
//! socket. `auth` verifies Supabase tokens, `store` keeps projects, history and job rows,
//! `http` serves health, readiness, metrics and static files; `server` wires it together.

pub mod auth;
pub mod backend;
pub mod config;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod pipeline;
pub mod server;
pub mod state;
pub mod store;
pub mod ws;
