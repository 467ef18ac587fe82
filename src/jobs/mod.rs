//! Jobs: one per generation request. Registry and slot limits, the sequence-numbered event
//! log each job keeps for its subscribers, daily quotas, prompts, and the runner that turns
//! backend events into wire events.

mod channel;
mod engine;
mod failures;
pub mod limits;
mod live;
pub mod prompt;
pub mod quota;
mod registry;
mod runner;

pub use channel::SubscriptionKind;
pub use engine::JobsConfig;
pub use live::LiveJob;
pub use registry::{CancelError, Jobs, StartError, StartOutcome};
