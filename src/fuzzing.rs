//! Entry points for the fuzz targets in `fuzz/` and for replaying their findings in the
//! test suite (`tests/fuzz_regressions.rs`): the list parser, the config loader, the
//! query handler's packet entry and the EDNS identity options. Each takes arbitrary
//! bytes and must not panic.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler};

use crate::config::Config;
use crate::dns::answer::EncodeAndDrop;
use crate::dns::{wire, Handler, Now};
use crate::engine::Engine;
use crate::lists::{self, Format};
use crate::metrics::QueryOutcome;
use crate::upstream::Forwarder;
use hickory_server::proto::op::{Message, ResponseCode};

/// Parse `data` as a list in every format; every accepted name must normalise to itself.
pub fn list(data: &[u8]) {
    for format in [
        Format::Auto,
        Format::Hosts,
        Format::Domains,
        Format::Adblock,
        Format::Dnsmasq,
        Format::Unbound,
        Format::Rpz,
        Format::Hashed,
    ] {
        let Ok(parsed) = lists::parse_reader(data, Path::new("fuzz.txt"), format) else {
            continue;
        };
        for rule in &parsed.rules {
            if let lists::Target::Name(name) = &rule.target {
                let again = crate::name::normalize(name).ok();
                assert_eq!(
                    again.as_deref(),
                    Some(name.as_str()),
                    "{format:?}: {name:?}"
                );
            }
        }
    }
}

/// Load `data` as a config file: an error or a config, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, Path::new("/fuzz/warden.toml"));
    }
}

/// Hand `data` to the real query handler as a UDP packet from a LAN client, the way
/// the UDP listener does: the fast path for an ordinary query (whose answer must then
/// decode as DNS, with the query's ID), hickory's decoder for anything else. The client
/// is a trusted forwarder, so identity options choose the device (and with it the group,
/// see [`harness`]): a locked name is blocked whatever they say; the adult list's names
/// whenever they claim nothing.
pub fn packet(data: &[u8]) {
    let (runtime, handler) = harness();
    let client = std::net::SocketAddr::from(([10, 0, 0, 7], 53000));
    if let Some(query) = wire::Query::parse(data) {
        let mut out = Vec::new();
        let sent = match handler.answer_now(&query, client, &mut out) {
            Now::Send => true,
            Now::Drop => false,
            Now::Later => {
                runtime.block_on(handler.answer_later(&query, client, &mut out));
                true
            }
        };
        if sent {
            let answer = Message::from_vec(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
            assert_eq!(answer.metadata.id, query.id);
            assert!(out.len() <= usize::from(query.max_udp_payload()));
            // No subdomain of a listed name is ever forwarded, whatever bytes its labels
            // hold: a forwarded query gets NOERROR or (nothing listens upstream) SERVFAIL.
            let code = answer.metadata.response_code;
            let forwarded = code == ResponseCode::NoError || code == ResponseCode::ServFail;
            let claims = claims_identity(wire_option_codes(query.opt_options()));
            assert!(
                !(forwarded && listed(query.labels(), claims)),
                "{code:?} for a listed name: {:?}",
                query.name()
            );
        }
        return;
    }
    let Ok(request) = Request::from_bytes(data.to_vec(), client, Protocol::Udp) else {
        return; // hickory refused to parse it: nothing reaches Warden
    };
    runtime.block_on(async {
        handler
            .handle_request::<_, TokioTime>(&request, EncodeAndDrop)
            .await;
        // The same invariant on this path: a listed name is never forwarded.
        let Ok(info) = request.request_info() else {
            return;
        };
        let labels: Vec<&[u8]> = info.query.name().iter().collect();
        let codes = request.edns.iter().flat_map(|e| {
            e.options()
                .options
                .iter()
                .map(|(code, _)| u16::from(*code))
                .collect::<Vec<_>>()
        });
        if listed(labels, claims_identity(codes)) {
            let outcome = handler.resolve(&request).await.map(|r| r.outcome);
            assert!(
                !matches!(
                    outcome,
                    Some(QueryOutcome::Allowed | QueryOutcome::UpstreamFailed)
                ),
                "{outcome:?} for a listed name: {:?}",
                info.query.name()
            );
        }
    });
}

/// The option codes of an OPT record's raw options.
fn wire_option_codes(mut rest: &[u8]) -> Vec<u16> {
    let mut codes = Vec::new();
    while rest.len() >= 4 {
        codes.push(u16::from_be_bytes([rest[0], rest[1]]));
        let length = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        rest = rest.get(4 + length..).unwrap_or(&[]);
    }
    codes
}

/// Does a query carry an option that may name the device (client subnet, a MAC)?
fn claims_identity(codes: impl IntoIterator<Item = u16>) -> bool {
    codes
        .into_iter()
        .any(crate::dns::client_id::is_identity_option)
}

/// Is a query name (its raw labels) under a name the harness's lists block for the
/// client? Locked names always; the adult list's unless the query claims an identity
/// (which may put it in the staff group). Decided from the raw bytes, independently of
/// the matcher's key form.
fn listed<'a>(labels: impl IntoIterator<Item = &'a [u8]>, claims_identity: bool) -> bool {
    let labels: Vec<Vec<u8>> = labels.into_iter().map(<[u8]>::to_ascii_lowercase).collect();
    let under = |parent: &[&[u8]], strictly: bool| {
        labels.len() >= parent.len() + usize::from(strictly)
            && labels[labels.len() - parent.len()..]
                .iter()
                .zip(parent)
                .all(|(a, b)| a.as_slice() == *b)
    };
    let locked = under(&[b"locked", b"test"], false);
    let adult = (under(&[b"blocked", b"test"], false)
        && !under(&[b"ok", b"blocked", b"test"], false))
        || under(&[b"tracker", b"test"], false)
        || under(&[b"wild", b"test"], true);
    locked || (adult && !claims_identity)
}

/// One engine and handler for every fuzz input: a few lists, a group with schedules and
/// safe search, a staff group that blocks only the locked list (chosen by a MAC or a
/// network a trusted forwarder's options can name), and an upstream that refuses at
/// once (nothing listens on port 1).
fn harness() -> &'static (tokio::runtime::Runtime, Handler) {
    static HARNESS: OnceLock<(tokio::runtime::Runtime, Handler)> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("warden-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let write = |name: &str, text: &str| {
            let _ = std::fs::write(dir.join(name), text);
        };
        write("adult.txt", "blocked.test\n||tracker.test^\n*.wild.test\n");
        write("ctiru.txt", "locked.test\n");
        write("allow.txt", "ok.blocked.test\n");
        write(
            "warden.toml",
            "[server]\ndefault_group = \"kids\"\ntrusted_forwarders = [\"10.0.0.7\"]\n\
             [server.rate_limit]\nqps = 0\n\
             [upstream]\nservers = [\"127.0.0.1:1\"]\ntimeout = \"50ms\"\n\
             [audit]\nenabled = false\n[admin]\nenabled = false\n\
             [categories.adult]\n[categories.terrorism]\nlocked = true\n\
             [groups.kids]\nblock = [\"adult\"]\nsafe_search = true\nyoutube = \"strict\"\n\
             [[groups.kids.schedule]]\nblock = [\"adult\"]\nfrom = \"22:00\"\nto = \"06:00\"\n\
             [groups.staff]\n\
             [[clients]]\nmac = \"aa:bb:cc:dd:ee:ff\"\ngroup = \"staff\"\n\
             [[clients]]\ncidr = \"10.99.0.0/16\"\ngroup = \"staff\"\n\
             [[lists]]\nname = \"adult\"\ncategory = \"adult\"\npath = \"adult.txt\"\n\
             [[lists]]\nname = \"ctiru\"\ncategory = \"terrorism\"\npath = \"ctiru.txt\"\n\
             [[allow]]\nname = \"allow\"\npath = \"allow.txt\"\n",
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let engine = Engine::load(&dir.join("warden.toml")).unwrap_or_else(|e| panic!("{e}"));
        let handler = runtime.block_on(async {
            let forwarder =
                Forwarder::new(&engine.config.upstream).unwrap_or_else(|e| panic!("{e}"));
            Handler::new(Arc::new(ArcSwap::from_pointee(engine)), forwarder)
        });
        (runtime, handler)
    })
}

/// Read `data` as an OPT record's options, the way identity is taken from a query: any
/// MAC read must print as one and parse back; any subnet must fit its family. Then send
/// queries carrying those options from the harness's trusted forwarder through the whole
/// query path: whatever identity they claim, a locked name stays blocked.
pub fn edns_identity(data: &[u8]) {
    use crate::dns::client_id::{Carried, Mac};
    let carried = Carried::from_options(crate::dns::client_id::options(data));
    if let Some((mac, _)) = carried.mac {
        assert_eq!(Mac::parse(&mac.to_string()), Some(mac));
    }
    if let Some(subnet) = carried.subnet {
        let width = if subnet.addr.is_ipv4() { 32 } else { 128 };
        assert!(subnet.source_prefix <= width);
    }
    for name in [
        &b"\x06locked\x04test\x00"[..],
        b"\x01x\x07blocked\x04test\x00",
    ] {
        packet(&query_with_options(name, data));
    }
}

/// A query for the wire name `name` with an OPT record whose options are `options`
/// (cut to fit a UDP message).
fn query_with_options(name: &[u8], options: &[u8]) -> Vec<u8> {
    let options = &options[..options.len().min(1200)];
    let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    packet.extend_from_slice(name);
    packet.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    packet.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]); // OPT, 1232, v0
    packet.extend_from_slice(&(options.len() as u16).to_be_bytes());
    packet.extend_from_slice(options);
    packet
}

/// Read `data` as a RADIUS accounting packet, as the listener does: a result, never a
/// panic. Then the same bytes signed with the secret (so the attributes are read, not
/// only the authenticator checked): they parse or are malformed, never mistaken for
/// forged, and what they say is applied to the sign-ins without breaking their rules.
pub fn radius_accounting(data: &[u8]) {
    use crate::identity::radius::{self, Applied, Dropped};
    use crate::identity::Sessions;
    const SECRET: &[u8] = b"fuzz-secret";
    let _ = radius::parse(data, SECRET);
    if data.len() < 20 || data.len() > radius::MAX_LEN {
        return;
    }
    let mut signed = data.to_vec();
    signed[0] = radius::ACCOUNTING_REQUEST;
    let length = signed.len() as u16;
    signed[2..4].copy_from_slice(&length.to_be_bytes());
    let Some(authenticator) = radius::request_authenticator(&signed, SECRET) else {
        return;
    };
    signed[4..20].copy_from_slice(&authenticator);
    let accounting = match radius::parse(&signed, SECRET) {
        Ok(a) => a,
        Err(Dropped::Malformed) => return,
        Err(other) => panic!("a signed accounting request refused as {other:?}"),
    };
    let sessions = Sessions::new();
    let now = std::time::SystemTime::now();
    let life = std::time::Duration::from_secs(3600);
    match radius::apply(&accounting, &sessions, life, now) {
        Applied::SignedIn => {
            let address = accounting
                .address
                .unwrap_or_else(|| panic!("signed in nowhere"));
            let session = sessions
                .find(address, now)
                .unwrap_or_else(|| panic!("not kept"));
            assert_eq!(Some(&session.user), accounting.user.as_ref());
            assert!(crate::identity::valid_text(&session.user));
        }
        Applied::Stale => {
            let at = accounting
                .event_time
                .unwrap_or_else(|| panic!("stale without a time"));
            assert!(
                at.duration_since(now)
                    .or_else(|_| now.duration_since(at))
                    .unwrap_or_default()
                    > radius::MAX_SKEW
            );
            assert!(sessions.is_empty());
        }
        Applied::SignedOut | Applied::Nothing | Applied::Refused | Applied::Ended => {}
    }
    assert_eq!(
        radius::response(&accounting, SECRET)[1],
        accounting.identifier
    );
}
