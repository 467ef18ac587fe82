//! Supabase access-token verification, in-process (spec decision 8).

mod error;
mod identity;

pub use error::AuthError;
pub use identity::Identity;
