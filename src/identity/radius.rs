//! RADIUS accounting (RFC 2866): a Wi-Fi controller or 802.1X switch tells Warden who
//! signed in on which address. Start and Interim-Update sign the `User-Name` in at the
//! `Framed-IP-Address` (or `Framed-IPv6-Address`, RFC 6911), Stop signs them out.
//!
//! Replays: a Start or Interim-Update whose `Acct-Event-Timestamp` is more than
//! [`MAX_SKEW`] from now is answered but not acted on, and one for a session whose Stop
//! has been seen (by `Acct-Session-Id`) signs no one back in; a Stop acts whenever it
//! comes, and ends its session by ID even without an address.
//!
//! Only accounting is spoken, and only as a receiver: an Accounting-Request whose
//! Request Authenticator does not match the shared secret (RFC 2866 §3), that comes from
//! an address not allowed to send, or that does not parse is dropped without an answer
//! and counted; a good one is acted on and answered with an Accounting-Response (whose
//! Response Authenticator the sender checks), so the controller stops retrying.
//!
//! Written by hand: the format is small (a 20-byte header and type-length-value
//! attributes), the Rust RADIUS crates are client/server frameworks far bigger than
//! this, and parsing is strict and bounded (never a panic on any bytes; fuzzed).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use md5::{Digest, Md5};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{Session, Sessions, Source};
use crate::config::Mac;

/// Accounting-Request and Accounting-Response codes.
pub const ACCOUNTING_REQUEST: u8 = 4;
pub const ACCOUNTING_RESPONSE: u8 = 5;
/// The smallest and largest packets RFC 2865 §3 allows.
const MIN_LEN: usize = 20;
pub const MAX_LEN: usize = 4096;

/// Attribute types read.
const USER_NAME: u8 = 1;
const FRAMED_IP_ADDRESS: u8 = 8;
const FILTER_ID: u8 = 11;
const CLASS: u8 = 25;
const CALLING_STATION_ID: u8 = 31;
const ACCT_STATUS_TYPE: u8 = 40;
const ACCT_SESSION_ID: u8 = 44;
const EVENT_TIMESTAMP: u8 = 55;
const FRAMED_IPV6_ADDRESS: u8 = 168;

/// How far an `Acct-Event-Timestamp` may be from Warden's clock for a sign-in to be
/// taken: a controller's clock a little off, or accounting buffered for a few minutes,
/// is fine; a packet captured and sent again later is not.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// `Acct-Status-Type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Start,
    Stop,
    InterimUpdate,
    /// Accounting-On/Off and the rest: answered, nothing to do.
    Other(u32),
}

impl Status {
    fn from_u32(v: u32) -> Status {
        match v {
            1 => Status::Start,
            2 => Status::Stop,
            3 => Status::InterimUpdate,
            other => Status::Other(other),
        }
    }
}

/// What an Accounting-Request says about a sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounting {
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub status: Option<Status>,
    pub user: Option<String>,
    pub address: Option<IpAddr>,
    pub mac: Option<Mac>,
    /// `Class` and `Filter-Id` values that are text: the directory groups a RADIUS
    /// server put there.
    pub groups: Vec<String>,
    /// `Acct-Session-Id`: the controller's name for the session.
    pub session_id: Option<String>,
    /// `Acct-Event-Timestamp`: when the controller says this happened.
    pub event_time: Option<SystemTime>,
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("not a well-formed RADIUS packet")]
    Malformed,
    #[error("not an Accounting-Request")]
    NotAccounting,
    #[error("Request Authenticator does not match the shared secret")]
    BadAuthenticator,
    #[error("sender not allowed to send accounting")]
    UnknownClient,
}

impl Dropped {
    /// The `result` label of `warden_radius_packets_total`.
    pub fn label(self) -> &'static str {
        match self {
            Dropped::Malformed => "malformed",
            Dropped::NotAccounting => "not_accounting",
            Dropped::BadAuthenticator => "bad_authenticator",
            Dropped::UnknownClient => "unknown_client",
        }
    }
}

/// The attributes of `packet` (type, value), checked to fill its `Length` exactly.
fn attributes(packet: &[u8]) -> Result<Vec<(u8, &[u8])>, Dropped> {
    let mut out = Vec::new();
    let mut rest = packet.get(MIN_LEN..).ok_or(Dropped::Malformed)?;
    while !rest.is_empty() {
        let (&kind, tail) = rest.split_first().ok_or(Dropped::Malformed)?;
        let len = usize::from(*tail.first().ok_or(Dropped::Malformed)?);
        if len < 2 || len > rest.len() {
            return Err(Dropped::Malformed);
        }
        out.push((kind, &rest[2..len]));
        rest = &rest[len..];
    }
    Ok(out)
}

/// The packet as its `Length` field says (octets past it are padding, RFC 2865 §3), or
/// why it is not one.
fn framed(datagram: &[u8]) -> Result<&[u8], Dropped> {
    let head = datagram.get(..MIN_LEN).ok_or(Dropped::Malformed)?;
    let length = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if !(MIN_LEN..=MAX_LEN).contains(&length) {
        return Err(Dropped::Malformed);
    }
    datagram.get(..length).ok_or(Dropped::Malformed)
}

/// Parse and authenticate an Accounting-Request with `secret`.
pub fn parse(datagram: &[u8], secret: &[u8]) -> Result<Accounting, Dropped> {
    let packet = framed(datagram)?;
    if packet[0] != ACCOUNTING_REQUEST {
        return Err(Dropped::NotAccounting);
    }
    let attributes = attributes(packet)?;
    let mut authenticator = [0u8; 16];
    authenticator.copy_from_slice(&packet[4..20]);
    let expected = request_authenticator(packet, secret).ok_or(Dropped::Malformed)?;
    if !crate::secret::matches(&expected, &authenticator) {
        return Err(Dropped::BadAuthenticator);
    }
    let mut accounting = Accounting {
        identifier: packet[1],
        authenticator,
        status: None,
        user: None,
        address: None,
        mac: None,
        groups: Vec::new(),
        session_id: None,
        event_time: None,
    };
    for (kind, value) in attributes {
        read_attribute(&mut accounting, kind, value);
    }
    Ok(accounting)
}

/// Take what one attribute says; a malformed value is ignored (the rest still count).
fn read_attribute(accounting: &mut Accounting, kind: u8, value: &[u8]) {
    let text = || std::str::from_utf8(value).ok().map(str::trim);
    match kind {
        USER_NAME => accounting.user = text().map(str::to_string),
        FRAMED_IP_ADDRESS => {
            if let Ok(octets) = <[u8; 4]>::try_from(value) {
                accounting.address = Some(IpAddr::V4(Ipv4Addr::from(octets)));
            }
        }
        // RFC 6911: the 16 bytes of the address.
        FRAMED_IPV6_ADDRESS => {
            if let Ok(octets) = <[u8; 16]>::try_from(value) {
                accounting.address = Some(IpAddr::V6(Ipv6Addr::from(octets)));
            }
        }
        ACCT_STATUS_TYPE => {
            if let Ok(bytes) = <[u8; 4]>::try_from(value) {
                accounting.status = Some(Status::from_u32(u32::from_be_bytes(bytes)));
            }
        }
        CALLING_STATION_ID => accounting.mac = text().and_then(Mac::parse),
        ACCT_SESSION_ID => {
            accounting.session_id = text()
                .filter(|id| super::valid_text(id))
                .map(str::to_string)
        }
        EVENT_TIMESTAMP => {
            if let Ok(bytes) = <[u8; 4]>::try_from(value) {
                let seconds = u64::from(u32::from_be_bytes(bytes));
                accounting.event_time = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
            }
        }
        CLASS | FILTER_ID => {
            if let Some(group) = text().filter(|g| super::valid_text(g)) {
                if accounting.groups.len() < super::MAX_GROUPS {
                    accounting.groups.push(group.to_string());
                }
            }
        }
        _ => {}
    }
}

/// `MD5(Code ‖ Identifier ‖ Length ‖ 16 zero octets ‖ Attributes ‖ Secret)` (RFC 2866
/// §3); `None` for fewer than 20 octets.
pub(crate) fn request_authenticator(packet: &[u8], secret: &[u8]) -> Option<[u8; 16]> {
    let mut md5 = Md5::new();
    md5.update(packet.get(..4)?);
    md5.update([0u8; 16]);
    md5.update(packet.get(MIN_LEN..)?);
    md5.update(secret);
    Some(md5.finalize().into())
}

/// The Accounting-Response to `request` (no attributes): `MD5(Code ‖ Identifier ‖
/// Length ‖ Request Authenticator ‖ Secret)` as its authenticator.
pub fn response(request: &Accounting, secret: &[u8]) -> [u8; MIN_LEN] {
    let mut out = [0u8; MIN_LEN];
    out[0] = ACCOUNTING_RESPONSE;
    out[1] = request.identifier;
    out[2..4].copy_from_slice(&(MIN_LEN as u16).to_be_bytes());
    let mut md5 = Md5::new();
    md5.update(&out[..4]);
    md5.update(request.authenticator);
    md5.update(secret);
    let digest: [u8; 16] = md5.finalize().into();
    out[4..].copy_from_slice(&digest);
    out
}

/// What one authenticated request did to the sign-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    SignedIn,
    SignedOut,
    /// Authenticated and answered, but nothing to act on (no user or address, or a
    /// status such as Accounting-On).
    Nothing,
    /// A sign-in the map refused (a name it cannot keep, the map full).
    Refused,
    /// A sign-in whose event time is more than [`MAX_SKEW`] away: answered, not taken.
    Stale,
    /// An update for a session already stopped: answered, not taken.
    Ended,
}

impl Applied {
    /// The `result` label of `warden_radius_packets_total`.
    pub fn label(self) -> &'static str {
        match self {
            Applied::SignedIn => "signed_in",
            Applied::SignedOut => "signed_out",
            Applied::Nothing => "nothing",
            Applied::Refused => "refused",
            Applied::Stale => "stale",
            Applied::Ended => "ended_session",
        }
    }
}

/// Act on an authenticated request.
pub fn apply(
    accounting: &Accounting,
    sessions: &Sessions,
    lifetime: Duration,
    now: SystemTime,
) -> Applied {
    match accounting.status {
        Some(Status::Start | Status::InterimUpdate) => sign_in(accounting, sessions, lifetime, now),
        Some(Status::Stop) => sign_out(accounting, sessions, now),
        Some(Status::Other(_)) | None => Applied::Nothing,
    }
}

/// A Start or Interim-Update: sign the user in at the address, unless it is stale or
/// its session has stopped.
fn sign_in(
    accounting: &Accounting,
    sessions: &Sessions,
    lifetime: Duration,
    now: SystemTime,
) -> Applied {
    let (Some(user), Some(address)) = (&accounting.user, accounting.address) else {
        return Applied::Nothing;
    };
    if accounting
        .event_time
        .is_some_and(|t| skew(t, now) > MAX_SKEW)
    {
        return Applied::Stale;
    }
    if let Some(id) = &accounting.session_id {
        if sessions.ended(id, now) {
            return Applied::Ended;
        }
    }
    let session = Session {
        user: user.clone(),
        groups: accounting.groups.clone(),
        mac: accounting.mac,
        until: now + lifetime,
        source: Source::Radius,
        id: accounting.session_id.clone(),
    };
    match sessions.sign_in(address, session, now) {
        Ok(()) => Applied::SignedIn,
        Err(_) => Applied::Refused,
    }
}

/// A Stop: end the session by its ID (wherever it is, and for good) and the user's
/// sign-in at the address.
fn sign_out(accounting: &Accounting, sessions: &Sessions, now: SystemTime) -> Applied {
    let by_id = accounting
        .session_id
        .as_deref()
        .is_some_and(|id| sessions.end_session(&Source::Radius, id, now));
    let by_address = match (&accounting.user, accounting.address) {
        (Some(user), Some(address)) => sessions.sign_out(address, Some(user)),
        _ => false,
    };
    if by_id || by_address {
        Applied::SignedOut
    } else {
        Applied::Nothing
    }
}

/// How far apart two times are, either way.
fn skew(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap_or_default()
}

/// Who may send accounting, the secret, and what to count.
pub struct Listener {
    pub socket: UdpSocket,
    pub secret: Vec<u8>,
    pub clients: Vec<ipnet::IpNet>,
    pub sessions: Arc<Sessions>,
    /// Called with each packet's `result` label.
    pub count: Box<dyn Fn(&'static str) + Send + Sync>,
    /// When a bad authenticator was last logged (at most one warning a minute: a
    /// controller with the wrong secret sends thousands).
    pub warned: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Listener {
    /// Answer accounting until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut buf = vec![0u8; MAX_LEN + 1];
        loop {
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.socket.recv_from(&mut buf) => r,
            };
            let Ok((n, from)) = received else {
                continue; // an ICMP error reported on the socket: nothing to answer
            };
            let result = self.handle(&buf[..n], from, SystemTime::now()).await;
            (self.count)(result);
        }
    }

    /// One datagram: drop it (returning why) or act on it and answer.
    async fn handle(&self, datagram: &[u8], from: SocketAddr, now: SystemTime) -> &'static str {
        let sender = from.ip().to_canonical();
        if !self.clients.iter().any(|net| net.contains(&sender)) {
            return Dropped::UnknownClient.label();
        }
        let accounting = match parse(datagram, &self.secret) {
            Ok(a) => a,
            Err(drop) => {
                if drop == Dropped::BadAuthenticator && self.time_to_warn() {
                    tracing::warn!(target: "warden::radius", %from, "accounting dropped: its authenticator does not match [identity.radius] secret_file (is the controller's secret the same?); see warden_radius_packets_total");
                }
                tracing::debug!(target: "warden::radius", %from, %drop, "accounting packet dropped");
                return drop.label();
            }
        };
        let lifetime = self.sessions.lifetime();
        let applied = apply(&accounting, &self.sessions, lifetime, now);
        // Answered even when nothing changed, so the controller stops retrying; a send
        // that fails is the sender's retry to make.
        let _ = self
            .socket
            .send_to(&response(&accounting, &self.secret), from)
            .await;
        applied.label()
    }

    /// Whether a minute has passed since the last warning (and if so, that it is now).
    fn time_to_warn(&self) -> bool {
        let mut warned = crate::sync::lock(&self.warned);
        let now = std::time::Instant::now();
        if warned.is_some_and(|at| now.duration_since(at) < Duration::from_secs(60)) {
            return false;
        }
        *warned = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"testing123";

    fn attr(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![kind, (value.len() + 2) as u8];
        out.extend_from_slice(value);
        out
    }

    /// An Accounting-Request signed with `secret`.
    fn request(secret: &[u8], attributes: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = attributes.concat();
        let mut packet = vec![ACCOUNTING_REQUEST, 42];
        packet.extend_from_slice(&((MIN_LEN + body.len()) as u16).to_be_bytes());
        packet.extend_from_slice(&[0u8; 16]);
        packet.extend_from_slice(&body);
        let auth = request_authenticator(&packet, secret);
        packet[4..20].copy_from_slice(&auth.unwrap());
        packet
    }

    fn start(user: &str, ip: [u8; 4]) -> Vec<u8> {
        request(
            SECRET,
            &[
                attr(ACCT_STATUS_TYPE, &1u32.to_be_bytes()),
                attr(USER_NAME, user.as_bytes()),
                attr(FRAMED_IP_ADDRESS, &ip),
                attr(CALLING_STATION_ID, b"AA-BB-CC-DD-EE-01"),
                attr(CLASS, b"Year 7"),
            ],
        )
    }

    #[test]
    fn a_signed_start_is_read_and_a_wrong_secret_is_not() {
        let packet = start("pupil7", [127, 0, 0, 5]);
        let a = parse(&packet, SECRET).unwrap();
        assert_eq!(a.status, Some(Status::Start));
        assert_eq!(a.user.as_deref(), Some("pupil7"));
        assert_eq!(a.address, Some("127.0.0.5".parse().unwrap()));
        assert_eq!(a.mac.unwrap().to_string(), "aa:bb:cc:dd:ee:01");
        assert_eq!(a.groups, ["Year 7"]);
        assert_eq!(parse(&packet, b"wrong"), Err(Dropped::BadAuthenticator));
        // One changed attribute octet breaks the authenticator too.
        let mut changed = packet.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert_eq!(parse(&changed, SECRET), Err(Dropped::BadAuthenticator));
        // Octets past Length are padding.
        let mut padded = packet.clone();
        padded.extend_from_slice(&[0xff; 7]);
        assert!(parse(&padded, SECRET).is_ok());
    }

    #[test]
    fn the_response_authenticator_is_rfc_2866s() {
        let a = parse(&start("pupil7", [10, 0, 0, 1]), SECRET).unwrap();
        let reply = response(&a, SECRET);
        assert_eq!(reply[0], ACCOUNTING_RESPONSE);
        assert_eq!(reply[1], 42);
        assert_eq!(u16::from_be_bytes([reply[2], reply[3]]), 20);
        let mut md5 = Md5::new();
        md5.update(&reply[..4]);
        md5.update(a.authenticator);
        md5.update(SECRET);
        let want: [u8; 16] = md5.finalize().into();
        assert_eq!(reply[4..], want);
    }

    #[test]
    fn start_signs_in_and_stop_signs_out() {
        let sessions = Sessions::new();
        let now = SystemTime::now();
        let life = Duration::from_secs(3600);
        let a = parse(&start("pupil7", [10, 0, 0, 7]), SECRET).unwrap();
        assert_eq!(apply(&a, &sessions, life, now), Applied::SignedIn);
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let s = sessions.find(ip, now).unwrap();
        assert_eq!(
            (s.user.as_str(), s.groups.as_slice()),
            ("pupil7", &["Year 7".to_string()][..])
        );
        let stop = request(
            SECRET,
            &[
                attr(ACCT_STATUS_TYPE, &2u32.to_be_bytes()),
                attr(USER_NAME, b"pupil7"),
                attr(FRAMED_IP_ADDRESS, &[10, 0, 0, 7]),
            ],
        );
        let stop = parse(&stop, SECRET).unwrap();
        assert_eq!(apply(&stop, &sessions, life, now), Applied::SignedOut);
        assert!(sessions.find(ip, now).is_none());
    }

    fn with_session(status: u32, id: &str, stamp: Option<u32>, address: bool) -> Accounting {
        let mut attributes = vec![
            attr(ACCT_STATUS_TYPE, &status.to_be_bytes()),
            attr(USER_NAME, b"pupil7"),
            attr(ACCT_SESSION_ID, id.as_bytes()),
        ];
        if address {
            attributes.push(attr(FRAMED_IP_ADDRESS, &[10, 0, 0, 9]));
        }
        if let Some(stamp) = stamp {
            attributes.push(attr(EVENT_TIMESTAMP, &stamp.to_be_bytes()));
        }
        parse(&request(SECRET, &attributes), SECRET).unwrap()
    }

    #[test]
    fn stale_and_ended_sessions_sign_no_one_in_and_a_stop_ends_its_session_by_id() {
        let sessions = Sessions::new();
        let life = Duration::from_secs(3600);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let stamp = |ago: u64| Some(1_800_000_000u32 - ago as u32);
        // Stamped just now, or a little off: taken. Stamped an hour ago: not.
        assert_eq!(
            apply(&with_session(1, "a", stamp(0), true), &sessions, life, now),
            Applied::SignedIn
        );
        assert_eq!(
            apply(
                &with_session(3, "a", stamp(200), true),
                &sessions,
                life,
                now
            ),
            Applied::SignedIn
        );
        assert_eq!(
            apply(
                &with_session(3, "b", stamp(3600), true),
                &sessions,
                life,
                now
            ),
            Applied::Stale
        );
        assert_eq!(
            sessions.find(ip, now).and_then(|s| s.id.clone()).as_deref(),
            Some("a")
        );
        // A Stop naming only the session ends it; the session's updates then sign no
        // one in, however fresh.
        assert_eq!(
            apply(&with_session(2, "a", None, false), &sessions, life, now),
            Applied::SignedOut
        );
        assert!(sessions.find(ip, now).is_none());
        assert_eq!(
            apply(&with_session(3, "a", stamp(0), true), &sessions, life, now),
            Applied::Ended
        );
        assert!(sessions.find(ip, now).is_none());
        // Another session is unaffected; a day later the ended ID is forgotten.
        assert_eq!(
            apply(&with_session(1, "c", None, true), &sessions, life, now),
            Applied::SignedIn
        );
        let tomorrow = now + super::super::ENDED_KEPT;
        assert!(!sessions.ended("a", tomorrow));
        // A second Stop for an ended session changes nothing.
        assert_eq!(
            apply(&with_session(2, "a", None, false), &sessions, life, now),
            Applied::Nothing
        );
    }

    #[test]
    fn malformed_packets_are_named() {
        assert_eq!(parse(&[4, 1, 0], SECRET), Err(Dropped::Malformed));
        let mut short = start("a", [10, 0, 0, 1]);
        short[3] += 1; // Length past the datagram
        assert_eq!(parse(&short, SECRET), Err(Dropped::Malformed));
        let mut zero_len = request(SECRET, &[]);
        zero_len.extend_from_slice(&[1, 0]);
        let len = zero_len.len() as u16;
        zero_len[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(parse(&zero_len, SECRET), Err(Dropped::Malformed));
        let mut access = start("a", [10, 0, 0, 1]);
        access[0] = 1;
        assert_eq!(parse(&access, SECRET), Err(Dropped::NotAccounting));
    }

    proptest! {
        /// Any bytes: a result, never a panic; and nothing unsigned is ever accepted.
        #[test]
        fn any_bytes_are_parsed_or_dropped(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(a) = parse(&bytes, SECRET) {
                let framed = framed(&bytes).unwrap();
                prop_assert_eq!(request_authenticator(framed, SECRET), Some(a.authenticator));
            }
        }

        /// A well-signed request with any attribute values parses, whatever they hold.
        #[test]
        fn signed_requests_with_any_values_parse(values in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..12)) {
            let attributes: Vec<Vec<u8>> = values.iter().map(|(k, v)| attr(*k, v)).collect();
            let packet = request(SECRET, &attributes);
            prop_assert!(parse(&packet, SECRET).is_ok());
        }
    }
}
