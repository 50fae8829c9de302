//! The PROXY protocol, version 2 (HAProxy's specification, section 2.2): the binary
//! header a load balancer puts in front of a TCP connection to say which client it
//! carries. Read only from the load balancers `[server] proxy_protocol` names, where it
//! is required: a connection from one of them without a valid header is closed, and
//! bytes that look like a header from anyone else are never read as one (they are
//! simply a DNS message length, and the message fails).
//!
//! Only what DNS over TCP needs is read: the command (`LOCAL` for the balancer's own
//! health checks, `PROXY` for a client), the TCP-over-IPv4/IPv6 source address, and the
//! length of what follows (TLVs, skipped). Parsing is strict and bounded: at most
//! [`MAX_HEADER`] bytes, never a panic on any bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part: signature, version and command, family, length.
pub const FIXED: usize = 16;
/// The most a header may hold after the fixed part: addresses and a few TLVs. Longer
/// ones are refused (a balancer sends far less).
pub const MAX_HEADER: usize = 512;

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The balancer's own connection (a health check): the peer is the client.
    Local,
    /// A client's connection, from this address.
    Proxied(SocketAddr),
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY protocol v2 signature")]
    Signature,
    #[error("PROXY protocol version {0} (only 2 is spoken)")]
    Version(u8),
    #[error("unknown PROXY protocol command {0}")]
    Command(u8),
    #[error("PROXY protocol header of {0} bytes (at most {MAX_HEADER})")]
    TooLong(usize),
    #[error("PROXY protocol address block shorter than its family needs")]
    Short,
    #[error("PROXY protocol family {0:#04x} is not TCP over IPv4 or IPv6")]
    Family(u8),
}

/// The length of the rest of the header, from its fixed part.
pub fn rest_len(fixed: &[u8; FIXED]) -> Result<usize, ProxyError> {
    if fixed[..12] != SIGNATURE {
        return Err(ProxyError::Signature);
    }
    let version = fixed[12] >> 4;
    if version != 2 {
        return Err(ProxyError::Version(version));
    }
    let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if length > MAX_HEADER {
        return Err(ProxyError::TooLong(length));
    }
    Ok(length)
}

/// Read a whole header: its fixed part and the `rest_len` bytes after it.
pub fn parse(fixed: &[u8; FIXED], rest: &[u8]) -> Result<Header, ProxyError> {
    let length = rest_len(fixed)?;
    if rest.len() != length {
        return Err(ProxyError::Short);
    }
    match fixed[12] & 0x0f {
        0 => return Ok(Header::Local),
        1 => {}
        other => return Err(ProxyError::Command(other)),
    }
    let port = |at: usize| u16::from_be_bytes([rest[at], rest[at + 1]]);
    match fixed[13] {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            if rest.len() < 12 {
                return Err(ProxyError::Short);
            }
            let ip = Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]);
            Ok(Header::Proxied(SocketAddr::new(IpAddr::V4(ip), port(8))))
        }
        // TCP over IPv6.
        0x21 => {
            if rest.len() < 36 {
                return Err(ProxyError::Short);
            }
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&rest[..16]);
            let ip = Ipv6Addr::from(octets);
            Ok(Header::Proxied(SocketAddr::new(IpAddr::V6(ip), port(32))))
        }
        other => Err(ProxyError::Family(other)),
    }
}

/// Parse a header from one buffer (fixed part and rest), for tests and fuzzing.
pub fn parse_bytes(bytes: &[u8]) -> Result<Header, ProxyError> {
    let fixed: &[u8; FIXED] = bytes
        .get(..FIXED)
        .and_then(|b| b.try_into().ok())
        .ok_or(ProxyError::Short)?;
    let length = rest_len(fixed)?;
    let rest = bytes.get(FIXED..FIXED + length).ok_or(ProxyError::Short)?;
    parse(fixed, rest)
}

/// A header for `client` (PROXY over TCP), as a balancer writes it.
pub fn header_for(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(0x21);
    match (client.ip(), server.ip()) {
        (IpAddr::V4(c), IpAddr::V4(s)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&c.octets());
            out.extend_from_slice(&s.octets());
        }
        (c, s) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(c).octets());
            out.extend_from_slice(&v6(s).octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&server.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_balancers_header_names_the_client() {
        let client: SocketAddr = "10.9.9.9:5555".parse().unwrap();
        let server: SocketAddr = "10.0.0.1:53".parse().unwrap();
        assert_eq!(
            parse_bytes(&header_for(client, server)),
            Ok(Header::Proxied(client))
        );
        let client6: SocketAddr = "[fd00::9]:4444".parse().unwrap();
        let server6: SocketAddr = "[fd00::1]:53".parse().unwrap();
        assert_eq!(
            parse_bytes(&header_for(client6, server6)),
            Ok(Header::Proxied(client6))
        );
        // LOCAL: the balancer's own health check.
        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse_bytes(&local), Ok(Header::Local));
    }

    #[test]
    fn bad_headers_are_named() {
        let good = header_for(
            "10.0.0.9:1".parse().unwrap(),
            "10.0.0.1:53".parse().unwrap(),
        );
        let mut wrong = good.clone();
        wrong[0] = b'X';
        assert_eq!(parse_bytes(&wrong), Err(ProxyError::Signature));
        let mut v1 = good.clone();
        v1[12] = 0x11;
        assert_eq!(parse_bytes(&v1), Err(ProxyError::Version(1)));
        let mut command = good.clone();
        command[12] = 0x2f;
        assert_eq!(parse_bytes(&command), Err(ProxyError::Command(15)));
        let mut udp = good.clone();
        udp[13] = 0x12;
        assert_eq!(parse_bytes(&udp), Err(ProxyError::Family(0x12)));
        let mut long = good.clone();
        long[14..16].copy_from_slice(&600u16.to_be_bytes());
        assert_eq!(parse_bytes(&long), Err(ProxyError::TooLong(600)));
        let mut short = good.clone();
        short[14..16].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(parse_bytes(&short), Err(ProxyError::Short));
        assert_eq!(parse_bytes(&good[..20]), Err(ProxyError::Short));
        // A DNS-over-TCP message is never taken for a header.
        assert_eq!(
            parse_bytes(&[0, 29, 0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProxyError::Signature)
        );
    }

    proptest! {
        #[test]
        fn any_bytes_are_a_header_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_bytes(&bytes);
            let mut signed = SIGNATURE.to_vec();
            signed.extend_from_slice(&bytes);
            let _ = parse_bytes(&signed);
        }
    }
}
