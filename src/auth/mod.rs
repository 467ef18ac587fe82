//! Supabase access-token verification, in-process (docs/decisions.md, decision 8).

mod dev;
mod error;
mod identity;
mod jwks;
mod verifier;

pub use dev::{mint_hs256, resolve_hs256_secret, DEV_SECRET_FILE};
pub use error::AuthError;
pub use identity::Identity;
pub use verifier::Verifier;
