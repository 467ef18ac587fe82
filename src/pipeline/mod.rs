//! The pre-job pipeline (docs/protocol.md §4.2–§4.3, docs/decisions.md decision 1), between
//! the socket handlers and the jobs: the style gate before a job starts, then inside the job
//! the intent (restore → the restore confirmation, chat → a chat answer, edit → generation)
//! and the skills of the generation prompt; and the sandbox prewarm after `init`.
//!
//! Every step asks the backend the job runs on: Modal's endpoints when it is Modal, the small
//! local model through the Claude CLI otherwise. Every failure has a fallback (intent → edit,
//! chat → generation, skills → upstream's keyword rules, files → the gate steps aside), so
//! nothing here can fail or stall a job.

mod ask;
mod chat;
mod files;
mod gate;
mod intent;
mod prepare;
mod prewarm;
mod service;
mod skills;
pub mod style;
mod templates;

pub use ask::AskSettings;
pub use gate::Gate;
pub use service::{Pipeline, PipelineParts};
pub use templates::{Prompts, PromptsError};
