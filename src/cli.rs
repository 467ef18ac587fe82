//! The command line. Parsed before any configuration is read, so `--help` and `--version`
//! work on a machine with nothing configured.

use clap::{Parser, Subcommand};
use uuid::Uuid;

/// The WebSocket tier of DreamCore-V2: verifies Supabase tokens, turns generation requests into
/// jobs, runs them on Modal or the local Claude CLI and relays their events to the browser.
#[derive(Debug, Parser)]
#[command(name = "dreamcore-relay", version, about, long_about = None)]
#[command(
    after_help = "Configuration comes from config/default.toml (embedded), the file named \
by RELAY_CONFIG, .env and the environment; `dreamcore-relay config` shows the result and \
.env.example documents every variable."
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay (the default): HTTP and WebSocket on HOST:PORT until SIGTERM, then drain.
    Serve,
    /// Print a development access token signed with the relay's HS256 secret.
    ///
    /// Without SUPABASE_URL or SUPABASE_JWT_SECRET the secret is the one the relay creates in
    /// DATA_DIR/dev-jwt-secret. Send it as the first frame:
    /// {"type":"init","access_token":"<token>"}.
    DevToken {
        /// The token's subject (user id); a random one when omitted.
        #[arg(long)]
        user: Option<Uuid>,
        /// The token's `email` claim.
        #[arg(long, default_value = "dev@example.com")]
        email: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Exit 0 when GET /health on 127.0.0.1:PORT answers 200 within 2 s (the Docker HEALTHCHECK).
    Healthcheck,
    /// Print the effective configuration: every variable, its value (secrets redacted) and
    /// where it came from (default, the RELAY_CONFIG file, .env, or the environment).
    ///
    /// Exits 2 with the same message as start-up when a value is invalid.
    Config,
}
