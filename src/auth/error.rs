//! Why a token was refused, and the exact text the browser is told.

use thiserror::Error;

/// Why a token was refused. `client_message` is the exact text sent in the `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("signature does not verify")]
    BadSignature,
    #[error("claim check failed: {0}")]
    InvalidClaims(String),
    #[error("token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("algorithm {0} is not accepted")]
    UnsupportedAlgorithm(String),
    #[error("no verification key for kid {0:?}")]
    UnknownKey(Option<String>),
    #[error("verification keys unavailable: {0}")]
    KeysUnavailable(String),
}

impl AuthError {
    /// The exact text of the `error` frame the browser receives.
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::Expired => "Token expired",
            Self::BadSignature | Self::UnknownKey(_) => "Invalid token signature",
            Self::InvalidClaims(_) => "Token validation failed",
            Self::Malformed(_) | Self::UnsupportedAlgorithm(_) => "Invalid access token",
            Self::KeysUnavailable(_) => "Server configuration error",
        }
    }

    /// Label for the `auth_failures_total{reason}` metric.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::BadSignature => "bad_signature",
            Self::InvalidClaims(_) => "invalid_claims",
            Self::Malformed(_) => "malformed",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::UnknownKey(_) => "unknown_key",
            Self::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}

/// Longest attacker-chosen header value copied into an error.
const MAX_ECHO_CHARS: usize = 64;

/// Copy of an attacker-chosen header value short enough to put into an error.
pub(super) fn clip(text: &str) -> String {
    text.chars().take(MAX_ECHO_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_header_values_are_clipped() {
        assert_eq!(clip(&"x".repeat(500)).len(), MAX_ECHO_CHARS);
        assert_eq!(clip("short"), "short");
    }
}
