//! Which group (and device name) an address belongs to: `[[clients]]` entries compiled
//! into a longest-prefix index (and a map for MAC entries), and device names and MACs
//! from a DHCP lease file.
//!
//! The index holds one hash map per prefix length in use, longest first, so a lookup
//! costs one probe per distinct length (a handful in practice), never a scan of every
//! entry. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.5`, as a dual-stack socket reports
//! IPv4 clients) are looked up as the IPv4 address they are.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use crate::config::Mac;

/// The address a device is counted as by per-client limits (TCP connections, sign-in
/// attempts): an IPv4 address as it is (an IPv4-mapped one unwrapped), an IPv6 address
/// by its /64. One IPv6 device holds many addresses in its /64 (privacy addresses,
/// SLAAC, containers), so counting each would multiply its allowance.
pub(crate) fn device_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// Where a client belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub group: usize,
    pub name: Option<String>,
}

/// Fast, unkeyed hashing is fine here: the keys come from the admin's config, not from
/// the network.
type Map = HashMap<IpAddr, Membership, foldhash::fast::FixedState>;

/// Longest-prefix match from address to membership.
#[derive(Debug, Default)]
pub(crate) struct ClientIndex {
    /// (prefix length, is IPv6, network address → membership), longest prefix first.
    levels: Vec<(u8, bool, Map)>,
}

impl ClientIndex {
    /// Build from (network, membership) pairs. A later entry for the same network
    /// replaces an earlier one.
    pub fn new(entries: impl IntoIterator<Item = (IpNet, Membership)>) -> ClientIndex {
        let mut levels: Vec<(u8, bool, Map)> = Vec::new();
        for (net, member) in entries {
            let net = net.trunc();
            let key = (net.prefix_len(), matches!(net, IpNet::V6(_)));
            match levels.iter_mut().find(|(p, v6, _)| (*p, *v6) == key) {
                Some((_, _, map)) => {
                    map.insert(net.network(), member);
                }
                None => {
                    let mut map = Map::default();
                    map.insert(net.network(), member);
                    levels.push((key.0, key.1, map));
                }
            }
        }
        levels.sort_by_key(|level| std::cmp::Reverse(level.0));
        ClientIndex { levels }
    }

    /// The most specific entry containing `ip`, if any.
    pub fn lookup(&self, ip: IpAddr) -> Option<&Membership> {
        let ip = ip.to_canonical();
        let v6 = ip.is_ipv6();
        self.levels
            .iter()
            .filter(|(_, is_v6, _)| *is_v6 == v6)
            .find_map(|(prefix, _, map)| {
                let net = IpNet::new(ip, *prefix).ok()?.trunc();
                map.get(&net.network())
            })
    }
}

/// The most of a lease file read: tens of thousands of leases, far beyond a site's.
const MAX_LEASE_BYTES: u64 = 16 * 1024 * 1024;

/// What the DHCP server's leases say: each address's device name and MAC, and each
/// MAC's name (so a device named by its lease keeps its name at another address).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leases {
    pub by_address: HashMap<IpAddr, Lease>,
    pub name_by_mac: HashMap<Mac, String>,
}

/// One lease: the device's name and MAC, as far as the lease gives them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: Option<String>,
    pub mac: Option<Mac>,
}

impl Leases {
    fn from_entries(entries: impl IntoIterator<Item = (IpAddr, Lease)>) -> Leases {
        let mut leases = Leases::default();
        for (ip, lease) in entries {
            if lease.name.is_none() && lease.mac.is_none() {
                continue;
            }
            if let (Some(mac), Some(name)) = (lease.mac, &lease.name) {
                leases.name_by_mac.insert(mac, name.clone());
            }
            // Later leases for the same address are newer: they win.
            leases.by_address.insert(ip.to_canonical(), lease);
        }
        leases
    }
}

/// Device names and MACs from a DHCP lease file: dnsmasq's (`expiry mac ip name
/// clientid` per line) or ISC dhcpd's (`lease IP { … hardware ethernet MAC;
/// client-hostname "name"; … }`), detected from the content. Unreadable entries are
/// skipped: a bad lease file must never stop DNS. Read like a list: a regular file only
/// (a FIFO or device in its place cannot hang a reload), at most [`MAX_LEASE_BYTES`].
pub(crate) fn read_leases(path: &Path) -> Result<Leases, crate::lists::ListError> {
    use std::io::Read;
    let file = crate::lists::open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_LEASE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|source| crate::lists::ListError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(if text.contains("lease ") && text.contains('{') {
        Leases::from_entries(isc_leases(&text))
    } else {
        Leases::from_entries(dnsmasq_leases(&text))
    })
}

fn clean_name(name: &str) -> Option<String> {
    let name = name.trim().trim_matches('"');
    let ok = !name.is_empty()
        && name != "*"
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    ok.then(|| name.to_string())
}

fn dnsmasq_leases(text: &str) -> Vec<(IpAddr, Lease)> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let ip = fields.get(2)?.parse::<IpAddr>().ok()?;
            let lease = Lease {
                name: fields.get(3).and_then(|n| clean_name(n)),
                mac: fields.get(1).and_then(|m| Mac::parse(m)),
            };
            Some((ip, lease))
        })
        .collect()
}

fn isc_leases(text: &str) -> Vec<(IpAddr, Lease)> {
    let mut out = Vec::new();
    for block in text.split("lease ").skip(1) {
        let Some((head, body)) = block.split_once('{') else {
            continue;
        };
        let Ok(ip) = head.trim().parse::<IpAddr>() else {
            continue;
        };
        let body = body.split('}').next().unwrap_or("");
        let mut lease = Lease::default();
        for stmt in body.split(';').map(str::trim) {
            if let Some(name) = stmt
                .strip_prefix("client-hostname ")
                .or_else(|| stmt.strip_prefix("ddns-hostname "))
                .and_then(clean_name)
            {
                lease.name.get_or_insert(name);
            }
            if let Some(mac) = stmt.strip_prefix("hardware ethernet ").and_then(Mac::parse) {
                lease.mac = Some(mac);
            }
        }
        out.push((ip, lease));
    }
    out
}
