//! DNS rebinding protection: an upstream answer must not put a public name on an
//! address inside the school's network. A web page a pupil opens could otherwise make
//! its own name resolve to, say, 192.168.1.1, and script the router or a printer from
//! the pupil's browser (the browser's same-origin rule sees one name throughout).
//! Pi-hole, AdGuard Home and Blocky block such answers too.
//!
//! Single-label names (`printer`, which never leave the LAN), names under the usual LAN
//! zones ([`LOCAL_ZONES`]) and names under the organisation's own internal domains
//! (`[rebinding] allow`) may resolve to private addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::RebindingConfig;

/// The usual names of a LAN's own zones: RFC 6761 `localhost`, RFC 6762 `local`,
/// RFC 8375 `home.arpa`, and the suffixes home routers and Active Directory installs
/// hand out.
pub(crate) const LOCAL_ZONES: [&str; 7] = [
    "localhost",
    "local",
    "lan",
    "home.arpa",
    "internal",
    "localdomain",
    "intranet",
];

/// Must an answer for `name` (the query's key form) be checked? Not when protection
/// is off, nor for single-label names or names under a LAN zone or an allowed domain.
pub fn applies(config: &RebindingConfig, name: &str) -> bool {
    config.enabled
        && name.contains('.')
        && !LOCAL_ZONES.iter().any(|zone| under(name, zone))
        && !config.allow.iter().any(|d| under(name, d.as_str()))
}

/// Is `name` `domain` or one of its subdomains?
fn under(name: &str, domain: &str) -> bool {
    name.strip_suffix(domain)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

/// Is `ip` inside a network a public name has no business pointing at: private
/// (RFC 1918, unique-local), shared (CGNAT), loopback, link-local, or "this network"
/// (0.0.0.0/8, which Linux routes to the machine itself)? IPv4-mapped and NAT64
/// (64:ff9b::/96) IPv6 addresses are judged as the IPv4 address they carry.
pub(crate) fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // 100.64.0.0/10, shared address space
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let first = segments[0];
    // 64:ff9b::/96 (NAT64) carries an IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = ip.octets();
        return internal_v4(Ipv4Addr::new(a, b, c, d));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || (first & 0xfe00) == 0xfc00 // fc00::/7, unique local
        || (first & 0xffc0) == 0xfe80 // fe80::/10, link local
        || (first & 0xffc0) == 0xfec0 // fec0::/10, the deprecated site local
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn internal_networks_are_recognised() {
        for inside in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:192.168.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::192.168.1.1",
        ] {
            assert!(is_internal(ip(inside)), "{inside} is internal");
        }
        for outside in [
            "8.8.8.8",
            "172.32.0.1",
            "192.0.2.1",
            "100.128.0.1",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ] {
            assert!(!is_internal(ip(outside)), "{outside} is public");
        }
    }

    #[test]
    fn local_domains_and_single_labels_are_exempt() {
        let config = Config::parse(
            "[rebinding]\nallow = [\"School.Example\"]\n",
            std::path::Path::new("/t/warden.toml"),
        )
        .expect("valid config");
        let r = &config.rebinding;
        assert!(applies(r, "evil.test"));
        assert!(!applies(r, "printer"));
        assert!(!applies(r, "school.example"));
        assert!(!applies(r, "nas.school.example"));
        assert!(applies(r, "notschool.example"), "a suffix is not a parent");
        assert!(!applies(r, "router.lan"), "the LAN zones stay exempt");
        let defaults = Config::parse("", std::path::Path::new("/t/warden.toml")).expect("empty");
        assert!(!applies(&defaults.rebinding, "router.lan"));
        assert!(!applies(&defaults.rebinding, "nas.home.arpa"));
        assert!(applies(&defaults.rebinding, "lan.evil.test"));
        let off = Config::parse(
            "[rebinding]\nenabled = false\n",
            std::path::Path::new("/t/w.toml"),
        )
        .expect("valid");
        assert!(!applies(&off.rebinding, "evil.test"));
    }

    #[test]
    fn a_bad_allowed_domain_names_its_line() {
        let err = Config::parse(
            "[rebinding]\nallow = [\n  \"ok.test\",\n  \"a b\",\n]\n",
            std::path::Path::new("/t/warden.toml"),
        )
        .expect_err("refused")
        .to_string();
        assert!(err.contains("line 4") || err.contains(":4"), "{err}");
        assert!(err.contains("a b"), "{err}");
    }
}
