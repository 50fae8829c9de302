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
/// decode as DNS, with the query's ID), hickory's decoder for anything else.
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
            assert!(
                !(forwarded && listed(query.labels())),
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
        if listed(labels) {
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

/// Is a query name (its raw labels) under a name the harness's lists block for its
/// group? Decided from the raw bytes, independently of the matcher's key form.
fn listed<'a>(labels: impl IntoIterator<Item = &'a [u8]>) -> bool {
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
    locked || adult
}

/// One engine and handler for every fuzz input: a few lists, a group with schedules and
/// safe search, and an upstream that refuses at once (nothing listens on port 1).
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
            "[server]\ndefault_group = \"kids\"\n[server.rate_limit]\nqps = 0\n\
             [upstream]\nservers = [\"127.0.0.1:1\"]\ntimeout = \"50ms\"\n\
             [audit]\nenabled = false\n[admin]\nenabled = false\n\
             [categories.adult]\n[categories.terrorism]\nlocked = true\n\
             [groups.kids]\nblock = [\"adult\"]\nsafe_search = true\nyoutube = \"strict\"\n\
             [[groups.kids.schedule]]\nblock = [\"adult\"]\nfrom = \"22:00\"\nto = \"06:00\"\n\
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
/// MAC read must print as one and parse back; any subnet must fit its family.
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
}
