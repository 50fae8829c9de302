//! `[server]`: where Warden listens, who may ask, and the limits that keep one client from
//! starving the rest.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::value::{number_where, Net, TimeZone};

/// Open TCP connections allowed at once (`[server] tcp_max_connections`).
pub const DEFAULT_TCP_CONNECTIONS: usize = 512;

/// Open TCP connections allowed at once from one client address (a device behind its
/// /64 for IPv6) unless configured otherwise: far more than a stub resolver uses (one or
/// two, reused), and at most a sixteenth of the default cap, so it takes many addresses
/// to put the cap under pressure.
pub const DEFAULT_TCP_CONNECTIONS_PER_CLIENT: usize = 32;

/// `[server]`: where Warden listens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// UDP and TCP addresses to serve DNS on.
    #[serde(default = "default_listen", deserialize_with = "non_empty")]
    pub listen: Vec<SocketAddr>,
    /// The group of clients that no `[[clients]]` entry names.
    #[serde(default = "default_group")]
    pub default_group: Spanned<String>,
    /// How long a TCP connection may sit idle.
    #[serde(default = "default_tcp_timeout", with = "humantime_serde")]
    pub tcp_timeout: Duration,
    /// Open TCP connections allowed at once; more are closed on arrival.
    #[serde(default = "default_tcp_connections")]
    pub tcp_max_connections: usize,
    /// Open TCP connections allowed at once from one client address; more are closed on
    /// arrival (at least 1).
    #[serde(
        default = "default_tcp_connections_per_client",
        deserialize_with = "at_least_one"
    )]
    pub tcp_connections_per_client: usize,
    /// The IANA time zone schedules are written in and times are shown in.
    #[serde(default = "default_timezone")]
    pub timezone: TimeZone,
    /// A DHCP lease file (dnsmasq or ISC dhcpd) naming devices for the audit log.
    #[serde(default)]
    pub dhcp_leases: Option<PathBuf>,
    /// Clients allowed to ask; everyone else gets REFUSED (never an open resolver).
    #[serde(default = "default_allow_networks")]
    pub allow_networks: Vec<Net>,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Forwarders in front of Warden (a router running dnsmasq, a Pi-hole) whose
    /// identity options are believed: from these addresses only, EDNS Client Subnet
    /// gives the device's address and dnsmasq's `add-mac` option its MAC. From anyone
    /// else those options are ignored (a pupil's laptop cannot claim a staff MAC), and
    /// the forwarder must strip the ones its clients send (dnsmasq `strip-mac`,
    /// `strip-subnet`): a query with two of a kind has both ignored.
    #[serde(default)]
    pub trusted_forwarders: Vec<Net>,
    /// Load balancers whose TCP connections start with a PROXY protocol v2 header
    /// naming the real client. A connection from one of these without the header is
    /// closed; a header from anyone else is never read as one.
    #[serde(default)]
    pub proxy_protocol: Vec<Net>,
}

impl ServerConfig {
    /// The configured time zone.
    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone.0
    }
}

/// `[server.rate_limit]`: a token bucket per client address.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained queries per second per client (0: no limit).
    #[serde(default = "default_qps", deserialize_with = "qps")]
    pub qps: f64,
    /// Queries a client may send at once before the rate applies.
    #[serde(default = "default_burst", deserialize_with = "burst")]
    pub burst: f64,
    /// What an over-limit query gets.
    #[serde(default)]
    pub action: LimitAction,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            qps: default_qps(),
            burst: default_burst(),
            action: LimitAction::default(),
        }
    }
}

/// What an over-limit query gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitAction {
    /// REFUSED (the client knows, and stops retrying sooner).
    #[default]
    Refuse,
    /// No answer at all (cheapest under a flood).
    Drop,
}

/// A busy device stays far below this; a NAT in front of many devices may need more.
fn default_qps() -> f64 {
    100.0
}
fn default_burst() -> f64 {
    500.0
}
fn qps<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    number_where(
        d,
        |q: &f64| q.is_finite() && *q >= 0.0,
        "a number of queries per second, 0 or more (0 turns the limit off)",
    )
}
fn burst<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    number_where(d, |b: &f64| b.is_finite() && *b >= 1.0, "at least 1")
}
/// 0 would refuse every TCP client.
fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    number_where(
        d,
        |n: &usize| *n >= 1,
        "at least 1 (0 would refuse every TCP client)",
    )
}

/// Loopback, RFC 1918, ULA and link-local: the networks a LAN filter serves.
fn default_allow_networks() -> Vec<Net> {
    [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    ]
    .into_iter()
    .filter_map(|n| n.parse().ok())
    .collect()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            default_group: default_group(),
            tcp_timeout: default_tcp_timeout(),
            tcp_max_connections: default_tcp_connections(),
            tcp_connections_per_client: default_tcp_connections_per_client(),
            timezone: default_timezone(),
            dhcp_leases: None,
            allow_networks: default_allow_networks(),
            rate_limit: RateLimitConfig::default(),
            trusted_forwarders: Vec::new(),
            proxy_protocol: Vec::new(),
        }
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 5353))]
}
fn non_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let listen = Vec::<SocketAddr>::deserialize(d)?;
    if listen.is_empty() {
        return Err(serde::de::Error::custom("must name at least one address"));
    }
    Ok(listen)
}
fn default_group() -> Spanned<String> {
    Spanned::new(0..0, "default".to_string())
}
fn default_timezone() -> TimeZone {
    TimeZone(chrono_tz::Europe::London)
}
fn default_tcp_connections() -> usize {
    DEFAULT_TCP_CONNECTIONS
}
fn default_tcp_connections_per_client() -> usize {
    DEFAULT_TCP_CONNECTIONS_PER_CLIENT
}
fn default_tcp_timeout() -> Duration {
    Duration::from_secs(10)
}
