//! Who a query is for, as a forwarder in front of Warden says it in EDNS options: the
//! client's subnet (EDNS Client Subnet, RFC 7871, option 8) and its MAC address in the
//! forms dnsmasq sends (`add-mac`: option 65001 with the raw bytes; `add-mac=base64`
//! and `add-mac=text`: option 65073 with 8 base64 characters or `aa:bb:cc:dd:ee:ff`).
//!
//! These options are claims: only a trusted forwarder's are believed (a pupil's laptop
//! could send any MAC), and none of them is passed upstream (no device data leaves the
//! site): [`is_identity_option`] names every option code to strip. Parsing is strict and
//! never panics on any bytes: an option that does not follow its format is ignored as
//! a whole, never half-read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// EDNS Client Subnet (RFC 7871).
pub const CLIENT_SUBNET: u16 = 8;
/// dnsmasq `add-mac`: the MAC address's raw bytes.
pub const MAC_RAW: u16 = 65001;
/// dnsmasq `add-mac=base64` and `add-mac=text`: the MAC address as text.
pub const MAC_TEXT: u16 = 65073;
/// dnsmasq `add-cpe-id`: the forwarder's own identifier (not a device's).
pub const CPE_ID: u16 = 65074;

/// Whether an option carries client identity and so is never forwarded upstream.
pub fn is_identity_option(code: u16) -> bool {
    matches!(code, CLIENT_SUBNET | MAC_RAW | MAC_TEXT | CPE_ID)
}

/// Whether an option carries a device's MAC (in one of the forms [`mac`] reads).
fn is_mac_option(code: u16) -> bool {
    matches!(code, MAC_RAW | MAC_TEXT)
}

pub use crate::config::Mac;

/// How a MAC address came in the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacForm {
    Raw,
    Base64,
    Text,
}

/// The MAC address in option `code`'s `data`, if it is one of the MAC options and holds
/// a well-formed 48-bit address.
pub fn mac(code: u16, data: &[u8]) -> Option<(Mac, MacForm)> {
    match code {
        MAC_RAW => <[u8; 6]>::try_from(data)
            .ok()
            .map(|b| (Mac(b), MacForm::Raw)),
        MAC_TEXT => {
            let text = std::str::from_utf8(data).ok()?;
            match text.len() {
                8 => base64_mac(text).map(|m| (m, MacForm::Base64)),
                17 => Mac::parse(text).map(|m| (m, MacForm::Text)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Six bytes as eight base64 characters (the standard alphabet; six bytes need no
/// padding).
fn base64_mac(text: &str) -> Option<Mac> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = [0u8; 6];
    for (group, chunk) in text.as_bytes().chunks(4).enumerate() {
        let mut bits = 0u32;
        for &c in chunk {
            bits = (bits << 6) | value(c)?;
        }
        out[group * 3..group * 3 + 3].copy_from_slice(&bits.to_be_bytes()[1..]);
    }
    Some(Mac(out))
}

/// An EDNS Client Subnet option: the client's address, kept to its source prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    pub addr: IpAddr,
    pub source_prefix: u8,
}

impl ClientSubnet {
    /// Whether it names one address (a /32 or /128), as a forwarder passing its
    /// client's address does; a shorter prefix names a network, not a device.
    pub fn is_host(&self) -> bool {
        match self.addr {
            IpAddr::V4(_) => self.source_prefix == 32,
            IpAddr::V6(_) => self.source_prefix == 128,
        }
    }
}

/// The option's data as RFC 7871 lays it out (family, source and scope prefix, the
/// address in exactly as many bytes as the source prefix needs, the bits past the
/// prefix zero), or `None` if it is not: such a query is answered as if it had no
/// subnet (RFC 7871 asks for FORMERR; a filter must not drop a client's DNS over it).
pub fn client_subnet(data: &[u8]) -> Option<ClientSubnet> {
    let (head, address) = data.split_at_checked(4)?;
    let family = u16::from_be_bytes([head[0], head[1]]);
    let (source_prefix, scope_prefix) = (head[2], head[3]);
    let width: u8 = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    if source_prefix > width || scope_prefix != 0 {
        return None;
    }
    if address.len() != usize::from(source_prefix).div_ceil(8) {
        return None;
    }
    let mut full = [0u8; 16];
    full[..address.len()].copy_from_slice(address);
    if source_prefix % 8 != 0 {
        let last = address.len() - 1;
        if full[last] & (0xff >> (source_prefix % 8)) != 0 {
            return None;
        }
    }
    let addr = match family {
        1 => IpAddr::V4(Ipv4Addr::new(full[0], full[1], full[2], full[3])),
        _ => IpAddr::V6(Ipv6Addr::from(full)),
    };
    Some(ClientSubnet {
        addr,
        source_prefix,
    })
}

/// What the options of one query say about its client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Carried {
    pub subnet: Option<ClientSubnet>,
    pub mac: Option<(Mac, MacForm)>,
}

impl Carried {
    /// Read every option (code, data) of a query's OPT record. A kind (client subnet,
    /// MAC) that appears more than once counts as absent: two claims mean one of them is
    /// not the forwarder's (a client's own option that the forwarder kept and added to),
    /// and neither can be told from the other.
    pub fn from_options<'a>(options: impl IntoIterator<Item = (u16, &'a [u8])>) -> Carried {
        let mut subnets = Claims::default();
        let mut macs = Claims::default();
        for (code, data) in options {
            if code == CLIENT_SUBNET {
                subnets.add(client_subnet(data));
            } else if is_mac_option(code) {
                macs.add(mac(code, data));
            }
        }
        Carried {
            subnet: subnets.only(),
            mac: macs.only(),
        }
    }
}

/// The claims of one kind seen in a query: the one there is, if exactly one.
struct Claims<T> {
    first: Option<T>,
    count: usize,
}

impl<T> Default for Claims<T> {
    fn default() -> Self {
        Claims {
            first: None,
            count: 0,
        }
    }
}

impl<T> Claims<T> {
    /// One more option of the kind (`None`: it did not parse, but still counts as a
    /// claim).
    fn add(&mut self, value: Option<T>) {
        self.count += 1;
        if self.count == 1 {
            self.first = value;
        }
    }

    fn only(self) -> Option<T> {
        if self.count == 1 {
            self.first
        } else {
            None
        }
    }
}

/// The options of an OPT record's data (`code`, `length`, `data`, …): each well-formed
/// one, stopping at the first that runs past the end.
pub fn options(rdata: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = rdata;
    std::iter::from_fn(move || {
        let (head, tail) = rest.split_at_checked(4)?;
        let code = u16::from_be_bytes([head[0], head[1]]);
        let length = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let (data, after) = tail.split_at_checked(length)?;
        rest = after;
        Some((code, data))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ecs(family: u16, source: u8, scope: u8, addr: &[u8]) -> Vec<u8> {
        let mut out = family.to_be_bytes().to_vec();
        out.extend([source, scope]);
        out.extend_from_slice(addr);
        out
    }

    #[test]
    fn a_client_subnet_is_read_as_rfc_7871_lays_it_out() {
        let host = client_subnet(&ecs(1, 32, 0, &[10, 0, 1, 5])).unwrap();
        assert_eq!(host.addr, "10.0.1.5".parse::<IpAddr>().unwrap());
        assert!(host.is_host());
        let net = client_subnet(&ecs(1, 24, 0, &[10, 0, 1])).unwrap();
        assert_eq!(net.addr, "10.0.1.0".parse::<IpAddr>().unwrap());
        assert!(!net.is_host());
        let v6 = client_subnet(&ecs(2, 56, 0, &[0x20, 1, 0xd, 0xb8, 0, 0, 0x12])).unwrap();
        assert_eq!(v6.addr, "2001:db8:0:1200::".parse::<IpAddr>().unwrap());
        assert_eq!(client_subnet(&ecs(1, 0, 0, &[])).unwrap().source_prefix, 0);
        for bad in [
            ecs(1, 33, 0, &[10, 0, 1, 5, 0]), // prefix past the family's width
            ecs(1, 24, 0, &[10, 0, 1, 5]),    // more address bytes than the prefix needs
            ecs(1, 32, 0, &[10, 0, 1]),       // fewer
            ecs(1, 23, 0, &[10, 0, 1]),       // a bit set past the prefix
            ecs(1, 32, 8, &[10, 0, 1, 5]),    // a scope in a query
            ecs(3, 8, 0, &[10]),              // an unknown family
            vec![0, 1, 32],                   // cut short
        ] {
            assert_eq!(client_subnet(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_mac_is_read_in_each_form_dnsmasq_sends() {
        let want = Mac([0x00, 0x1b, 0x21, 0x3c, 0x4d, 0x5e]);
        assert_eq!(mac(MAC_RAW, &want.0), Some((want, MacForm::Raw)));
        // Six bytes in standard base64 are eight characters without padding.
        assert_eq!(mac(MAC_TEXT, b"ABshPE1e"), Some((want, MacForm::Base64)));
        assert_eq!(
            mac(MAC_TEXT, b"00:1b:21:3c:4d:5e"),
            Some((want, MacForm::Text))
        );
        assert_eq!(want.to_string(), "00:1b:21:3c:4d:5e");
        assert_eq!(Mac::parse("00-1B-21-3C-4D-5E"), Some(want));
        for (code, bad) in [
            (MAC_RAW, &b"\x00\x1b\x21\x3c\x4d"[..]),
            (MAC_TEXT, b"ABshPE1"),
            (MAC_TEXT, b"ABshPE1*"),
            (MAC_TEXT, b"00:1b:21:3c:4d:5"),
            (MAC_TEXT, b"00:1b:21:3c:4d:5g"),
            (CPE_ID, b"ABshPE1e"),
        ] {
            assert_eq!(mac(code, bad), None, "{code} {bad:?}");
        }
        assert!(Mac::parse("00:1b:21:3c:4d:5e:7f").is_none());
        assert!(Mac::parse("0:1b:21:3c:4d:5e").is_none());
    }

    #[test]
    fn a_kind_claimed_twice_counts_as_absent() {
        let staff = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01];
        let own = [0x02, 0, 0, 0, 0, 0x07];
        let one = Carried::from_options([(MAC_RAW, &own[..])]);
        assert_eq!(one.mac, Some((Mac(own), MacForm::Raw)));
        // A client's own claim kept beside the forwarder's: neither is believed.
        let two = Carried::from_options([(MAC_RAW, &staff[..]), (MAC_RAW, &own[..])]);
        assert_eq!(two.mac, None);
        let text = b"aa:bb:cc:dd:ee:01";
        let mixed = Carried::from_options([(MAC_TEXT, &text[..]), (MAC_RAW, &own[..])]);
        assert_eq!(mixed.mac, None);
        // Even an unreadable second claim spoils the first.
        let bad = Carried::from_options([(MAC_RAW, &own[..]), (MAC_RAW, &[1u8][..])]);
        assert_eq!(bad.mac, None);
        let a = ecs(1, 32, 0, &[10, 0, 0, 5]);
        let b = ecs(1, 32, 0, &[10, 9, 9, 9]);
        let subnets = Carried::from_options([(CLIENT_SUBNET, &a[..]), (CLIENT_SUBNET, &b[..])]);
        assert_eq!(subnets.subnet, None);
        // One of each kind is fine.
        let both = Carried::from_options([(CLIENT_SUBNET, &a[..]), (MAC_RAW, &own[..])]);
        assert!(both.subnet.is_some() && both.mac.is_some());
    }

    #[test]
    fn the_options_of_an_opt_record_are_walked_to_the_first_one_cut_short() {
        let mut rdata = Vec::new();
        for (code, data) in [(10u16, &[1u8, 2][..]), (MAC_RAW, &[1, 2, 3, 4, 5, 6])] {
            rdata.extend(code.to_be_bytes());
            rdata.extend((data.len() as u16).to_be_bytes());
            rdata.extend_from_slice(data);
        }
        rdata.extend([0, 8, 0, 9, 0]); // claims 9 bytes, has 1
        let seen: Vec<u16> = options(&rdata).map(|(code, _)| code).collect();
        assert_eq!(seen, [10, MAC_RAW]);
        let carried = Carried::from_options(options(&rdata));
        assert_eq!(carried.mac, Some((Mac([1, 2, 3, 4, 5, 6]), MacForm::Raw)));
        assert_eq!(carried.subnet, None);
        assert!(is_identity_option(CLIENT_SUBNET) && is_identity_option(CPE_ID));
        assert!(!is_identity_option(10), "cookies are not identity");
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused_without_a_panic(code: u16, data: Vec<u8>) {
            let _ = mac(code, &data);
            let _ = client_subnet(&data);
            let _ = Carried::from_options(options(&data));
        }

        #[test]
        fn every_mac_reads_back_in_each_form(bytes: [u8; 6]) {
            let m = Mac(bytes);
            prop_assert_eq!(mac(MAC_RAW, &bytes), Some((m, MacForm::Raw)));
            prop_assert_eq!(mac(MAC_TEXT, m.to_string().as_bytes()), Some((m, MacForm::Text)));
            prop_assert_eq!(Mac::parse(&m.to_string().to_uppercase()), Some(m));
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            prop_assert_eq!(mac(MAC_TEXT, encoded.as_bytes()), Some((m, MacForm::Base64)));
        }

        #[test]
        fn a_subnet_read_is_a_subnet_written(v4: [u8; 4], prefix in 0u8..=32) {
            let mut addr = u32::from_be_bytes(v4);
            if prefix < 32 {
                addr &= !(u32::MAX >> prefix);
            }
            let bytes = addr.to_be_bytes();
            let kept = &bytes[..usize::from(prefix).div_ceil(8)];
            let read = client_subnet(&ecs(1, prefix, 0, kept));
            prop_assert_eq!(
                read,
                Some(ClientSubnet { addr: IpAddr::V4(Ipv4Addr::from(addr)), source_prefix: prefix })
            );
        }
    }
}
