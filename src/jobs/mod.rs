//! Jobs: one per generation request. Registry and slot limits, the sequence-numbered event
//! log each job keeps for its subscribers, the bus that carries it to other instances, job
//! leases, daily quotas, prompts, and the runner that turns backend events into wire events.

mod answer;
pub mod bus;
mod channel;
mod engine;
mod event_kind;
mod event_log;
mod failures;
pub mod lease;
pub mod limits;
mod live;
mod outcome;
pub mod plan;
pub mod prompt;
mod published_end;
pub mod quota;
mod registry;
mod request;
mod runner;
mod unwritten;

pub use answer::TRUNCATED_MARKER;
pub use channel::{JobChannel, SubscriptionKind};
pub use engine::JobsConfig;
pub use registry::Jobs;
pub use request::{CancelError, JobRequest, StartError, StartOutcome};
