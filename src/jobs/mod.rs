//! Jobs: one per generation request. Registry and slot limits, the sequence-numbered event
//! log each job keeps for its subscribers, daily quotas, prompts, and the runner that turns
//! backend events into wire events.

pub mod channel;
pub mod limits;
pub mod plan;
pub mod prompt;
pub mod quota;
pub mod registry;
mod runner;

pub use channel::SubscriptionKind;
pub use registry::{
    CancelError, CancelOutcome, JobRequest, Jobs, JobsConfig, LiveJob, RecentFailure, StartError,
    StartOutcome,
};
