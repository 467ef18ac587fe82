//! The harness every integration test shares: the relay under test, the fake upstreams
//! (Modal, the Anthropic API), and the real programs the tests drive (PostgreSQL, Redis,
//! nginx, Chromium, the Claude CLI).

pub mod balancer;
pub mod chromium;
pub mod fake_anthropic;
pub mod fake_get_file;
pub mod fake_modal;
pub mod fake_modal_endpoints;
pub mod nginx;
pub mod own_postgres;
pub mod postgres;
pub mod redis;
pub mod relay;
pub mod relay_process;
pub mod socket_link;
pub mod tools;
