//! Which group (and device name) an address belongs to: `[[clients]]` entries compiled
//! into a longest-prefix index, and device names from a DHCP lease file.
//!
//! The index holds one hash map per prefix length in use, longest first, so a lookup
//! costs one probe per distinct length (a handful in practice), never a scan of every
//! entry. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.5`, as a dual-stack socket reports
//! IPv4 clients) are looked up as the IPv4 address they are.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

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

/// Device names from a DHCP lease file: dnsmasq's (`expiry mac ip name clientid` per
/// line) or ISC dhcpd's (`lease IP { … client-hostname "name"; … }`), detected from the
/// content. Unreadable or unnamed entries are skipped: names are labels for the audit
/// log, so a bad lease file must never stop DNS. Read like a list: a regular file only
/// (a FIFO or device in its place cannot hang a reload), at most [`MAX_LEASE_BYTES`].
pub(crate) fn read_leases(path: &Path) -> Result<HashMap<IpAddr, String>, crate::lists::ListError> {
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
        isc_leases(&text)
    } else {
        dnsmasq_leases(&text)
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

fn dnsmasq_leases(text: &str) -> HashMap<IpAddr, String> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let ip = fields.get(2)?.parse::<IpAddr>().ok()?;
            Some((ip, clean_name(fields.get(3)?)?))
        })
        .collect()
}

fn isc_leases(text: &str) -> HashMap<IpAddr, String> {
    let mut out = HashMap::new();
    for block in text.split("lease ").skip(1) {
        let Some((head, body)) = block.split_once('{') else {
            continue;
        };
        let Ok(ip) = head.trim().parse::<IpAddr>() else {
            continue;
        };
        let body = body.split('}').next().unwrap_or("");
        let name = body.split(';').find_map(|stmt| {
            let stmt = stmt.trim();
            stmt.strip_prefix("client-hostname ")
                .or_else(|| stmt.strip_prefix("ddns-hostname "))
                .and_then(clean_name)
        });
        // Later leases for the same address are newer: they win.
        if let Some(name) = name {
            out.insert(ip, name);
        }
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
        assert_eq!(
            "10.0.1.7/24"
                .parse::<crate::config::Net>()
                .unwrap()
                .0
                .trunc()
                .to_string(),
            "10.0.1.0/24"
        );
        let net = |t: &str| t.parse::<crate::config::Net>();
        assert_eq!(net("fe80::1").unwrap().0.to_string(), "fe80::1/128");
        assert!(net("10.0.1.0/33").is_err());
        assert!(net("reception")
            .unwrap_err()
            .to_string()
            .contains("reception"));
    }

    #[test]
    fn lease_files_of_both_kinds() {
        let dnsmasq = "1767225600 aa:bb:cc:dd:ee:ff 10.0.1.23 reception-laptop 01:aa\n\
                       1767225600 aa:bb:cc:dd:ee:00 10.0.1.24 * *\n\
                       garbage line\n";
        let got = dnsmasq_leases(dnsmasq);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[&"10.0.1.23".parse::<IpAddr>().unwrap()],
            "reception-laptop"
        );
        let isc = "lease 10.0.2.5 {\n  starts 4 2026/11/19 10:00:00;\n  client-hostname \"old-name\";\n}\n\
                   lease 10.0.2.5 {\n  client-hostname \"library-pc-3\";\n}\n\
                   lease 10.0.2.6 {\n  hardware ethernet 00:11:22:33:44:55;\n}\n";
        let got = isc_leases(isc);
        assert_eq!(got.len(), 1);
        assert_eq!(got[&"10.0.2.5".parse::<IpAddr>().unwrap()], "library-pc-3");
    }
}
