//! Jobs: one per generation request. Registry and slot limits, the sequence-numbered event
//! log each job keeps for its subscribers, daily quotas, prompts, and the runner that turns
//! backend events into wire events.

mod answer;
pub mod channel;
mod event_log;
pub mod limits;
pub mod prompt;
pub mod quota;
pub mod registry;
mod runner;

pub use answer::TRUNCATED_MARKER;
pub use channel::SubscriptionKind;
pub use registry::{
    CancelError, CancelOutcome, Jobs, JobsConfig, LiveJob, RecentFailure, StartError, StartOutcome,
};
