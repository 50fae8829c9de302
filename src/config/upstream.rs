//! `[upstream]`: the resolvers allowed names are forwarded to, each parsed while the
//! config loads into a [`ServerSpec`] the forwarder takes as it is.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::value::ValueError;

/// `[upstream]`: the resolvers allowed names are forwarded to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `IP:port` (UDP with TCP fallback), `tcp://IP:port`, or `tls://IP:port@server.name`.
    #[serde(default = "default_upstreams", deserialize_with = "non_empty")]
    pub servers: Vec<ServerSpec>,
    /// How long one client query may wait for upstream before it gets SERVFAIL.
    #[serde(default = "default_upstream_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Answers kept in the response cache.
    #[serde(default = "default_cache_size")]
    pub cache_size: u64,
    /// When every upstream fails, answer from the last good answer for up to this long
    /// after it expired (RFC 8767 "serve stale"; 0s turns it off).
    #[serde(default = "default_serve_stale", with = "humantime_serde")]
    pub serve_stale: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            servers: default_upstreams(),
            timeout: default_upstream_timeout(),
            cache_size: default_cache_size(),
            serve_stale: default_serve_stale(),
        }
    }
}

/// Quad9's two addresses: filtering-neutral, no logging of client addresses.
fn default_upstreams() -> Vec<ServerSpec> {
    let quad9 = [[9, 9, 9, 9], [149, 112, 112, 112]];
    quad9
        .into_iter()
        .map(|ip| ServerSpec::Udp(SocketAddr::from((ip, 53))))
        .collect()
}
fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ServerSpec>, D::Error> {
    let servers = Vec::<ServerSpec>::deserialize(d)?;
    if servers.is_empty() {
        return Err(serde::de::Error::custom("must name at least one resolver"));
    }
    Ok(servers)
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_serve_stale() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_cache_size() -> u64 {
    8192
}

/// One upstream server as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSpec {
    /// `IP:port`: UDP, with TCP when an answer is truncated.
    Udp(SocketAddr),
    /// `tcp://IP:port`.
    Tcp(SocketAddr),
    /// `tls://IP:port@server.name` (port 853 if omitted): DNS over TLS.
    Tls(SocketAddr, String),
}

impl FromStr for ServerSpec {
    type Err = ValueError;

    /// One `[upstream] servers` entry. A bare IP means port 53.
    fn from_str(text: &str) -> Result<ServerSpec, ValueError> {
        let bad = |reason: &str| ValueError::new(text, reason);
        let addr = |s: &str, default_port: u16| -> Result<SocketAddr, ValueError> {
            s.parse::<SocketAddr>()
                .or_else(|_| {
                    s.trim_matches(['[', ']'])
                        .parse::<IpAddr>()
                        .map(|ip| SocketAddr::new(ip, default_port))
                })
                .map_err(|_| {
                    bad("is not an upstream server: expected an IP address with an optional port, e.g. 9.9.9.9:53")
                })
        };
        if let Some(rest) = text.strip_prefix("tls://") {
            let (host, server_name) = rest.split_once('@').ok_or_else(|| {
                bad("is not an upstream server: DNS over TLS needs the certificate name, tls://IP@name")
            })?;
            if server_name.is_empty() {
                return Err(bad("has an empty certificate name after '@'"));
            }
            return Ok(ServerSpec::Tls(addr(host, 853)?, server_name.to_string()));
        }
        if let Some(rest) = text.strip_prefix("tcp://") {
            return Ok(ServerSpec::Tcp(addr(rest, 53)?));
        }
        if text.contains("://") {
            return Err(bad(
                "has an unsupported scheme: use IP:port, tcp://IP:port or tls://IP@name",
            ));
        }
        Ok(ServerSpec::Udp(addr(text, 53)?))
    }
}

impl<'de> Deserialize<'de> for ServerSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_server_form() {
        assert_eq!(
            "9.9.9.9".parse::<ServerSpec>().unwrap(),
            ServerSpec::Udp("9.9.9.9:53".parse().unwrap())
        );
        assert_eq!(
            "[2620:fe::fe]:53".parse::<ServerSpec>().unwrap(),
            ServerSpec::Udp("[2620:fe::fe]:53".parse().unwrap())
        );
        assert_eq!(
            "tcp://127.0.0.1:5300".parse::<ServerSpec>().unwrap(),
            ServerSpec::Tcp("127.0.0.1:5300".parse().unwrap())
        );
        assert_eq!(
            "tls://9.9.9.9@dns.quad9.net".parse::<ServerSpec>().unwrap(),
            ServerSpec::Tls("9.9.9.9:853".parse().unwrap(), "dns.quad9.net".into())
        );
    }

    #[test]
    fn rejects_bad_servers_naming_them() {
        for bad in [
            "dns.quad9.net",
            "tls://9.9.9.9",
            "https://1.1.1.1/dns-query",
            "1.2.3.4:99999",
        ] {
            let err = bad.parse::<ServerSpec>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
