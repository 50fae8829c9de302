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
use std::time::SystemTime;

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
                // Nothing known (or a lease no longer in force): the address is
                // no one's by its lease.
                leases.by_address.remove(&ip.to_canonical());
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
/// clientid` per line) or ISC dhcpd's (`lease IP { … binding state active; hardware
/// ethernet MAC; client-hostname "name"; … }`), detected from the content. Only leases
/// in force at `now` count: an expired or freed lease names the device that *had* the
/// address. Unreadable entries are skipped: a bad lease file must never stop DNS. Read
/// like a list: a regular file only (a FIFO or device in its place cannot hang a
/// reload), at most [`MAX_LEASE_BYTES`].
pub(crate) fn read_leases(path: &Path, now: SystemTime) -> Result<Leases, std::io::Error> {
    let text = crate::lists::read_small(path, MAX_LEASE_BYTES)?;
    Ok(if text.contains("lease ") && text.contains('{') {
        Leases::from_entries(isc_leases(&text))
    } else {
        Leases::from_entries(dnsmasq_leases(&text, now))
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

/// dnsmasq's leases: the first field is when the lease expires (seconds since 1970; 0
/// for never): expired ones are left out.
fn dnsmasq_leases(text: &str, now: SystemTime) -> Vec<(IpAddr, Lease)> {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let expiry = fields.first()?.parse::<u64>().ok()?;
            if expiry != 0 && expiry <= now {
                return None;
            }
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
        // Without a binding state (old dhcpd) the lease is taken as active.
        let mut active = true;
        for stmt in body.split(';').map(str::trim) {
            if let Some(state) = stmt.strip_prefix("binding state ") {
                active = state.trim() == "active";
            }
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
        // A later block for the address is newer: a freed lease after an active one
        // ends it (an empty lease overrides the older one's name and MAC).
        out.push((ip, if active { lease } else { Lease::default() }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_counted_by_ipv4_address_or_ipv6_slash_64() {
        let key = |t: &str| device_key(t.parse().expect("test address"));
        assert_eq!(key("10.0.0.5"), key("::ffff:10.0.0.5"));
        assert_ne!(key("10.0.0.5"), key("10.0.0.6"));
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:1234:5678:9abc")
        );
        assert_eq!(
            key("2001:db8:1:2::1"),
            "2001:db8:1:2::".parse::<IpAddr>().expect("net")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    fn member(group: usize, name: Option<&str>) -> Membership {
        Membership {
            group,
            name: name.map(str::to_string),
        }
    }

    #[test]
    fn most_specific_entry_wins_for_v4_and_v6() {
        let entries = [
            ("10.0.0.0/8", 1, None),
            ("10.0.1.0/24", 2, None),
            ("10.0.1.23", 3, Some("reception-laptop")),
            ("2001:db8::/32", 4, None),
            ("2001:db8:1::/48", 5, None),
            ("0.0.0.0/0", 6, None),
        ];
        let index = ClientIndex::new(entries.iter().map(|(n, g, name)| {
            (
                n.parse::<crate::config::Net>().unwrap().0,
                member(*g, *name),
            )
        }));
        let cases: [(&str, Option<usize>); 9] = [
            ("10.0.1.23", Some(3)),
            ("10.0.1.24", Some(2)),
            ("10.9.9.9", Some(1)),
            ("192.168.1.1", Some(6)),
            ("::ffff:10.0.1.23", Some(3)),
            ("2001:db8:1::5", Some(5)),
            ("2001:db8:2::5", Some(4)),
            ("2001:db9::1", None),
            ("::1", None),
        ];
        for (ip, want) in cases {
            let got = index.lookup(ip.parse().unwrap()).map(|m| m.group);
            assert_eq!(got, want, "{ip}");
        }
        assert_eq!(
            index
                .lookup("10.0.1.23".parse().unwrap())
                .unwrap()
                .name
                .as_deref(),
            Some("reception-laptop")
        );
        assert!(ClientIndex::default()
            .lookup("10.0.0.1".parse().unwrap())
            .is_none());
    }

    #[test]
    fn networks_parse_and_host_bits_are_ignored() {
        let net = |t: &str| t.parse::<crate::config::Net>();
        assert_eq!(
            net("10.0.1.7/24").unwrap().0.trunc().to_string(),
            "10.0.1.0/24"
        );
        assert_eq!(net("fe80::1").unwrap().0.to_string(), "fe80::1/128");
        assert!(net("10.0.1.0/33").is_err());
        assert!(net("reception")
            .unwrap_err()
            .to_string()
            .contains("reception"));
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn mac(text: &str) -> Mac {
        Mac::parse(text).unwrap()
    }

    #[test]
    fn dnsmasq_leases_in_force_give_names_and_macs() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_000);
        let text = "1767225600 aa:bb:cc:dd:ee:ff 10.0.1.23 reception-laptop 01:aa\n\
                    1767225600 aa:bb:cc:dd:ee:00 10.0.1.24 * *\n\
                    1767224000 aa:bb:cc:dd:ee:01 10.0.1.25 gone-home *\n\
                    0 aa:bb:cc:dd:ee:02 10.0.1.26 forever *\n\
                    garbage line\n";
        let leases = Leases::from_entries(dnsmasq_leases(text, now));
        let at = |a: &str| leases.by_address.get(&ip(a)).cloned();
        assert_eq!(
            at("10.0.1.23").and_then(|l| l.name).as_deref(),
            Some("reception-laptop")
        );
        assert_eq!(
            at("10.0.1.23").and_then(|l| l.mac),
            Some(mac("aa:bb:cc:dd:ee:ff"))
        );
        // Unnamed, but its MAC is known.
        assert_eq!(
            at("10.0.1.24").map(|l| (l.name, l.mac)),
            Some((None, Some(mac("aa:bb:cc:dd:ee:00"))))
        );
        // Expired: nobody's.
        assert_eq!(at("10.0.1.25"), None);
        assert_eq!(
            at("10.0.1.26").and_then(|l| l.name).as_deref(),
            Some("forever")
        );
        assert_eq!(
            leases
                .name_by_mac
                .get(&mac("aa:bb:cc:dd:ee:ff"))
                .map(String::as_str),
            Some("reception-laptop")
        );
        assert_eq!(leases.by_address.len(), 3);
    }

    #[test]
    fn isc_leases_count_only_while_active_and_the_newest_block_wins() {
        let text = "lease 10.0.2.5 {\n  binding state active;\n  client-hostname \"old-name\";\n}\n\
                    lease 10.0.2.5 {\n  binding state active;\n  hardware ethernet 00:11:22:33:44:55;\n  client-hostname \"library-pc-3\";\n}\n\
                    lease 10.0.2.6 {\n  hardware ethernet 00:11:22:33:44:66;\n}\n\
                    lease 10.0.2.7 {\n  binding state active;\n  hardware ethernet 00:11:22:33:44:77;\n}\n\
                    lease 10.0.2.7 {\n  binding state free;\n  hardware ethernet 00:11:22:33:44:77;\n}\n\
                    lease 10.0.2.8 {\n  binding state expired;\n  client-hostname \"stale\";\n}\n";
        let leases = Leases::from_entries(isc_leases(text));
        let at = |a: &str| leases.by_address.get(&ip(a)).cloned();
        let newest = at("10.0.2.5").unwrap();
        assert_eq!(newest.name.as_deref(), Some("library-pc-3"));
        assert_eq!(newest.mac, Some(mac("00:11:22:33:44:55")));
        // No binding state (an old dhcpd): taken as active.
        assert_eq!(
            at("10.0.2.6").and_then(|l| l.mac),
            Some(mac("00:11:22:33:44:66"))
        );
        // Freed after it was active, or expired: the address is no one's by its lease.
        assert_eq!(at("10.0.2.7"), None);
        assert_eq!(at("10.0.2.8"), None);
    }
}
