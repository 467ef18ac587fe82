//! Jobs: one per generation request. Registry and slot limits, the sequence-numbered event
//! log each job keeps for its subscribers, the bus that carries it to other instances, job
//! leases, daily quotas, prompts, and the runner that turns backend events into wire events.

pub mod bus;
pub mod channel;
pub mod lease;
pub mod limits;
pub mod prompt;
pub mod quota;
pub mod registry;
mod runner;

pub use channel::SubscriptionKind;
pub use registry::{
    CancelError, CancelOutcome, Jobs, JobsConfig, LiveJob, RecentFailure, StartError, StartOutcome,
};
