//! Who is on the other end of a socket, as proven by a verified access token.

use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

/// The signed-in user, taken from a verified access token.
#[derive(Debug, Clone)]
pub struct Identity {
    /// JWT `sub`.
    pub user_id: Uuid,
    /// The user's email address, if the token has one.
    pub email: Option<String>,
    /// JWT `exp`, seconds since the Unix epoch.
    pub expires_at: i64,
    /// The verified claims as compact JSON, exactly what PostgREST would put into
    /// `request.jwt.claims`. Kept as text, not a parsed tree: every open socket holds one,
    /// and the text is several times smaller.
    pub claims: Arc<str>,
}

impl Identity {
    /// `user_metadata` of the token, `Null` when absent.
    pub fn user_metadata(&self) -> Value {
        serde_json::from_str::<Value>(&self.claims)
            .ok()
            .and_then(|mut claims| claims.get_mut("user_metadata").map(Value::take))
            .unwrap_or(Value::Null)
    }

    /// Display name the way Supabase's `handle_new_user` derives it.
    pub fn display_name(&self) -> Option<String> {
        let meta = self.user_metadata();
        meta.get("full_name")
            .or_else(|| meta.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                self.email
                    .as_deref()
                    .and_then(|e| e.split('@').next())
                    .map(str::to_string)
            })
    }

    /// The user's avatar URL from the token's user metadata, if the token carries one.
    pub fn avatar_url(&self) -> Option<String> {
        let meta = self.user_metadata();
        meta.get("avatar_url")
            .or_else(|| meta.get("picture"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// Whether the token had expired at `now_unix`, allowing `leeway_secs` of clock skew.
    pub fn is_expired_at(&self, now_unix: i64, leeway_secs: i64) -> bool {
        now_unix > self.expires_at + leeway_secs
    }
}
