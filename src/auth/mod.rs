//! Supabase access-token verification, in-process (docs/decisions.md, decision 8).

mod dev;
mod error;
mod identity;
mod jwks;
mod verifier;

pub use dev::{
    hs256_source, mint_hs256, random_hex_secret, resolve_hs256_secret, Hs256Source, DEV_SECRET_FILE,
};
pub use error::AuthError;
pub use identity::Identity;
pub use verifier::Verifier;
