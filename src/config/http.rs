//! The `[http]` section: how the listener protects itself from slow, idle and numerous
//! connections before any request reaches a handler, and how many idle connections the relay
//! keeps to the services it calls.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// Connection-level limits of the HTTP front door.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    /// Time from a request's first byte (or a new connection's opening) to its complete head.
    pub header_read_timeout_secs: u64,
    /// Time a kept-alive connection may wait between requests.
    pub keepalive_timeout_secs: u64,
    /// Open connections (WebSockets included), also bounded by the descriptor limit.
    pub max_connections: usize,
    /// Open connections per client address; 0 = no per-client cap.
    pub max_connections_per_client: usize,
    /// Descriptors kept free of connections for files, pipes, the database and upstreams.
    pub fd_reserve: usize,
    /// Peers whose `X-Forwarded-For` names the client (addresses or CIDR ranges).
    #[serde(deserialize_with = "de_networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// Idle connections kept per upstream host for the next call.
    pub upstream_pool_max_idle: usize,
    /// How long an idle upstream connection is kept.
    pub upstream_pool_idle_secs: u64,
}

impl HttpConfig {
    /// How long a client may take to send its request headers.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    /// How long an idle keep-alive connection stays open.
    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_secs(self.keepalive_timeout_secs)
    }

    /// The connection pool every outbound HTTP client uses.
    pub fn upstream_pool(&self) -> UpstreamPool {
        UpstreamPool {
            max_idle_per_host: self.upstream_pool_max_idle,
            idle_timeout: Duration::from_secs(self.upstream_pool_idle_secs),
        }
    }
}

/// The idle connections an outbound client keeps. Without a cap, reqwest keeps every
/// connection a burst opened (1,000 jobs: 1,000 sockets to Modal, each holding its grown read
/// buffer) until 90 s of idleness, so memory stays at the burst's peak.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamPool {
    max_idle_per_host: usize,
    idle_timeout: Duration,
}

impl UpstreamPool {
    /// A client builder with this pool; callers add their timeouts and redirect policy.
    pub fn client(self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .pool_max_idle_per_host(self.max_idle_per_host)
            .pool_idle_timeout(self.idle_timeout)
    }
}

/// `10.0.0.0/8` or a bare address (a one-address network).
pub fn parse_network(raw: &str) -> Option<IpNet> {
    let raw = raw.trim();
    raw.parse::<IpNet>()
        .ok()
        .or_else(|| raw.parse::<IpAddr>().ok().map(IpNet::from))
}

fn de_networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|raw| {
            parse_network(raw).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "expected an IP address or CIDR range, got {raw:?}"
                ))
            })
        })
        .collect()
}
