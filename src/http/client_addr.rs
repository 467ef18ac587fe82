//! Which address a request comes from: the TCP peer, or — when the peer is a configured
//! trusted proxy — the nearest untrusted address in its `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client address of a request, inserted into its extensions by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client behind `peer`: from the right of `X-Forwarded-For`, skipping proxies we
    /// trust, the first address is the one the last trusted proxy saw. An address a client
    /// wrote itself sits further left and is never reached; a malformed entry stops the walk
    /// at the last trusted hop, which is then the client.
    pub fn client_of(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.ip().to_canonical();
        if !self.contains(client) {
            return client;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(addr) => {
                    client = addr.to_canonical();
                    if !self.contains(client) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_network;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().filter_map(|s| parse_network(s)).collect())
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let peer: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let got = proxies(&["10.0.0.0/8"]).client_of(peer, &forwarded("203.0.113.1"));
        assert_eq!(got, "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn trusted_peer_names_the_nearest_untrusted_hop() {
        let peer: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let trusted = proxies(&["10.0.0.0/8", "127.0.0.1"]);
        // The client forged the first entry; nginx appended what it saw.
        let got = trusted.client_of(peer, &forwarded("1.1.1.1, 203.0.113.9, 10.0.0.5"));
        assert_eq!(got, "203.0.113.9".parse::<IpAddr>().unwrap());
        let got = trusted.client_of(peer, &HeaderMap::new());
        assert_eq!(got, "10.1.2.3".parse::<IpAddr>().unwrap());
        let got = trusted.client_of(peer, &forwarded("203.0.113.9, junk"));
        assert_eq!(got, "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn mapped_ipv4_peer_matches_an_ipv4_range() {
        let peer: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let got = proxies(&["127.0.0.1"]).client_of(peer, &forwarded("192.0.2.4"));
        assert_eq!(got, "192.0.2.4".parse::<IpAddr>().unwrap());
    }
}
