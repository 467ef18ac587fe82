//! Jobs: one per generation request. Registry and slot limits, the sequence-numbered event
//! log each job keeps for its subscribers, the bus that carries it to other instances, job
//! leases, daily quotas, prompts, and the runner that turns backend events into wire events.

pub mod bus;
mod channel;
mod engine;
mod failures;
pub mod lease;
pub mod limits;
mod live;
pub mod prompt;
pub mod quota;
mod registry;
mod runner;

pub use channel::{JobChannel, SubscriptionKind};
pub use engine::JobsConfig;
pub use registry::{CancelError, Jobs, StartError, StartOutcome};
