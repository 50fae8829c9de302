//! `[blocking]` (how a blocked name is answered) and `[rebinding]` (upstream answers that
//! put a public name on a private address).

use std::net::IpAddr;

use serde::Deserialize;
use toml::Spanned;

use super::value::Domain;

/// How a blocked name is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockResponse {
    /// NXDOMAIN with a SOA for negative caching.
    #[default]
    Nxdomain,
    /// 0.0.0.0 / :: for A / AAAA, NODATA for other types.
    Null,
    /// The configured `block_ip` addresses (a block page) for A / AAAA.
    Ip,
}

impl BlockResponse {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockResponse::Nxdomain => "nxdomain",
            BlockResponse::Null => "null",
            BlockResponse::Ip => "ip",
        }
    }
}

/// `[blocking]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockingConfig {
    #[serde(default = "default_response")]
    pub response: Spanned<BlockResponse>,
    /// TTL of blocked answers (and of the SOA minimum for NXDOMAIN).
    #[serde(default = "default_block_ttl")]
    pub ttl: u32,
    /// Block-page addresses for `response = "ip"` (one IPv4 and/or one IPv6).
    #[serde(default)]
    pub block_ip: Vec<IpAddr>,
}

impl Default for BlockingConfig {
    fn default() -> Self {
        BlockingConfig {
            response: default_response(),
            ttl: default_block_ttl(),
            block_ip: Vec::new(),
        }
    }
}

fn default_response() -> Spanned<BlockResponse> {
    Spanned::new(0..0, BlockResponse::default())
}
fn default_block_ttl() -> u32 {
    300
}

/// `[rebinding]`: DNS rebinding protection. An upstream answer that puts a public name
/// on a private, loopback or link-local address is blocked (a web page could otherwise
/// use such a name to reach the school's own devices from a pupil's browser), except
/// for single-label names, names under the usual LAN zones (`lan`, `home.arpa`, …) and
/// names under `allow` (the organisation's own internal domains).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebindingConfig {
    #[serde(default = "super::default_true")]
    pub enabled: bool,
    /// Domains whose names may resolve to private addresses (with all their subdomains),
    /// besides the usual LAN zones, which always may.
    #[serde(default)]
    pub allow: Vec<Domain>,
}

impl Default for RebindingConfig {
    fn default() -> Self {
        RebindingConfig {
            enabled: true,
            allow: Vec::new(),
        }
    }
}
