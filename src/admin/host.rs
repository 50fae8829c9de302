//! Which `Host` the admin listener answers to: its own names only, so a web page a staff
//! member opens cannot reach the dashboard, `/metrics` or `POST /reload` by DNS
//! rebinding (pointing its own name at the listener's address: the browser then sends
//! that name as `Host`, and a name is all it can send).
//!
//! A request is answered when its `Host` (and the authority of an absolute request
//! target, if any) is one of:
//! - the address the connection arrived on, with the listener's port (the configured
//!   `[admin] listen` address, or the machine's address when it listens on `0.0.0.0`);
//! - `localhost`, `127.0.0.1` or `[::1]` with the listener's port;
//! - a name or address in `[dashboard] hosts`, on any port (a TLS reverse proxy or a
//!   tunnel may front it on another one).
//!
//! Anything else is refused with 421 Misdirected Request; a request with no `Host` at all
//! on HTTP/1.1, or with two, or with one that is not a host, gets 400. HTTP/1.0 may omit
//! `Host` (no browser does).
//!
//! The block page is a separate listener (`[dashboard] block_page`) and answers any
//! `Host`: browsers reach it under the blocked site's name.

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, uri::Authority, HeaderMap, Request, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};

use crate::config::HostName;

/// Why a request's `Host` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostError {
    #[error("a Host header is required")]
    Missing,
    #[error("more than one Host header")]
    Repeated,
    #[error("the Host header is not a host name or address: {0:?}")]
    Malformed(String),
    #[error("this is Warden's admin listener; it does not answer to the name {0:?}. If that name is this machine's, add it to [dashboard] hosts")]
    Foreign(String),
}

impl HostError {
    pub fn status(&self) -> StatusCode {
        match self {
            HostError::Foreign(_) => StatusCode::MISDIRECTED_REQUEST,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for HostError {
    fn into_response(self) -> Response {
        let text = format!("{self}\n");
        (
            self.status(),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response()
    }
}

/// A host as a request names it: lower case, no trailing dot, an IPv6 address without
/// its brackets; with the port, if one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestHost {
    pub host: String,
    pub port: Option<u16>,
}

impl RequestHost {
    fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// `host[:port]` as it appears in `Host` or a request target's authority.
pub(crate) fn parse_authority(text: &str) -> Result<RequestHost, HostError> {
    let malformed = || HostError::Malformed(shorten(text));
    // An authority may carry user information (`user@host`); a Host header may not.
    if text.is_empty() || text.contains('@') {
        return Err(malformed());
    }
    let authority: Authority = text.parse().map_err(|_| malformed())?;
    let host = authority.host();
    let host = match host.strip_prefix('[') {
        // Brackets hold an IPv6 address and nothing else.
        Some(inner) => {
            let inner = inner.strip_suffix(']').ok_or_else(malformed)?;
            inner
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| malformed())?
                .to_string()
        }
        None => crate::name::host_name(host).ok_or_else(malformed)?,
    };
    // What follows the host is nothing, `:` (an empty port) or `:` and a port number.
    let rest = authority
        .as_str()
        .get(authority.host().len()..)
        .unwrap_or("");
    let port = authority.port_u16();
    if rest.len() > 1 && port.is_none() {
        return Err(malformed());
    }
    Ok(RequestHost { host, port })
}

/// What the listener knows about itself and the connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Listener {
    /// The port it is bound to.
    pub port: u16,
    /// The address this connection arrived on, if known.
    pub local: Option<IpAddr>,
}

/// Whether `host` names this listener (see the module's rules). `hosts` are
/// `[dashboard] hosts` entries.
pub(crate) fn is_ours(host: &RequestHost, listener: Listener, hosts: &[HostName]) -> bool {
    if hosts.iter().any(|h| h.0 == host.host) {
        return true;
    }
    // Without a port a browser means HTTP's default.
    if host.port.unwrap_or(80) != listener.port {
        return false;
    }
    let loopback = ["localhost", "127.0.0.1", "::1"].contains(&host.host.as_str());
    let arrived_on = match (host.ip(), listener.local) {
        (Some(ip), Some(local)) => ip.to_canonical() == local.to_canonical(),
        _ => false,
    };
    loopback || arrived_on
}

/// Check a request's `Host` header and target against the listener's names.
pub fn check<B>(
    request: &Request<B>,
    listener: Listener,
    hosts: &[HostName],
) -> Result<(), HostError> {
    let named = names(request.headers(), request.uri(), request.version())?;
    for text in named {
        let host = parse_authority(text)?;
        if !is_ours(&host, listener, hosts) {
            return Err(HostError::Foreign(shorten(text)));
        }
    }
    Ok(())
}

/// The authorities a request names: its `Host` header and an absolute target's.
fn names<'a>(
    headers: &'a HeaderMap,
    uri: &'a Uri,
    version: Version,
) -> Result<Vec<&'a str>, HostError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Repeated);
    }
    let mut named = Vec::with_capacity(2);
    if let Some(value) = header {
        let text = value.to_str().map_err(|_| {
            HostError::Malformed(shorten(&String::from_utf8_lossy(value.as_bytes())))
        })?;
        named.push(text);
    }
    if let Some(authority) = uri.authority() {
        named.push(authority.as_str());
    }
    let optional = version == Version::HTTP_10 || version == Version::HTTP_09;
    if named.is_empty() && !optional {
        return Err(HostError::Missing);
    }
    Ok(named)
}

/// At most 100 characters of `text`, for a message that echoes it.
fn shorten(text: &str) -> String {
    text.chars().take(100).collect()
}

/// The connection's addresses, kept by the admin listener for every request.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub peer: SocketAddr,
    pub local: Option<SocketAddr>,
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Connection
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Connection {
            peer: *stream.remote_addr(),
            local: stream.io().local_addr().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> RequestHost {
        parse_authority(text).unwrap()
    }

    const PORT: u16 = 8053;

    fn on(local: &str) -> Listener {
        Listener {
            port: PORT,
            local: Some(local.parse().unwrap()),
        }
    }

    #[test]
    fn hosts_parse_to_a_lower_case_name_and_port() {
        assert_eq!(
            host("Warden.School.LAN.:443"),
            RequestHost {
                host: "warden.school.lan".into(),
                port: Some(443)
            }
        );
        assert_eq!(host("[::1]:8053").host, "::1");
        assert_eq!(host("127.0.0.1").port, None);
        for bad in [
            "",
            "a b",
            "user@host",
            "host:port",
            "[::1",
            "a..b",
            "é.test",
            "[x]:1",
        ] {
            assert!(parse_authority(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_listener_answers_its_own_names_only() {
        let hosts = vec![
            HostName("warden.school.lan".into()),
            HostName("192.168.1.9".into()),
        ];
        let lan = on("192.168.1.2");
        let ours = |text: &str, l: Listener| is_ours(&host(text), l, &hosts);
        for yes in [
            "192.168.1.2:8053",
            "localhost:8053",
            "LOCALHOST.:8053",
            "127.0.0.1:8053",
            "[::1]:8053",
            "warden.school.lan",
            "warden.school.lan:443",
            "192.168.1.9:9000",
        ] {
            assert!(ours(yes, lan), "{yes}");
        }
        for no in [
            "evil.example:8053",
            "evil.example",
            "192.168.1.2:80",
            "192.168.1.2",
            "localhost",
            "localhost:8054",
            "10.0.0.1:8053",
            "school.lan:8053",
            "warden.school.lan.evil.example",
        ] {
            assert!(!ours(no, lan), "{no}");
        }
        // A v4 client on a dual-stack socket arrives on a v4-mapped address.
        assert!(ours("192.168.1.2:8053", on("::ffff:192.168.1.2")));
        // On port 80 a browser leaves the port out.
        let port_80 = Listener {
            port: 80,
            local: None,
        };
        assert!(ours("localhost", port_80));
    }

    fn request(head: &[(&str, &str)], uri: &str, version: Version) -> Request<()> {
        let mut builder = Request::builder().uri(uri).version(version);
        for (k, v) in head {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn requests_without_one_clear_host_are_bad() {
        let l = on("127.0.0.1");
        let verdict = |r: &Request<()>| check(r, l, &[]);
        let v11 = Version::HTTP_11;
        assert_eq!(verdict(&request(&[], "/", v11)), Err(HostError::Missing));
        assert_eq!(verdict(&request(&[], "/", Version::HTTP_10)), Ok(()));
        let two = request(
            &[("host", "localhost:8053"), ("host", "localhost:8053")],
            "/",
            v11,
        );
        assert_eq!(verdict(&two), Err(HostError::Repeated));
        let odd = request(&[("host", "local host")], "/", v11);
        assert!(matches!(verdict(&odd), Err(HostError::Malformed(_))));
        // An absolute target must name us too, whatever Host says.
        let target = request(&[("host", "localhost:8053")], "http://evil.example/", v11);
        assert!(matches!(verdict(&target), Err(HostError::Foreign(_))));
        let fine = request(&[("host", "localhost:8053")], "http://127.0.0.1:8053/", v11);
        assert_eq!(verdict(&fine), Ok(()));
        let status = HostError::Foreign("x".into()).status();
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    }

    proptest::proptest! {
        /// No name outside the listener's own is ever answered, whatever its port.
        #[test]
        fn foreign_names_are_never_ours(
            name in "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){0,3}",
            port in proptest::option::of(1u16..),
        ) {
            let hosts = vec![HostName("warden.school.lan".into())];
            let text = match port { Some(p) => format!("{name}:{p}"), None => name.clone() };
            let parsed = parse_authority(&text).unwrap();
            let expected = name == "localhost" && port.unwrap_or(80) == PORT
                || name == "warden.school.lan";
            proptest::prop_assert_eq!(is_ours(&parsed, on("192.168.1.2"), &hosts), expected);
        }
    }
}
