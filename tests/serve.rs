//! End-to-end serving over real loopback sockets: Warden in-process (and once as the
//! real binary) in front of an in-test upstream that counts what reaches it.
//!
//! Every network wait is bounded by a timeout; every server binds 127.0.0.1:0.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use common::*;
use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, RecordType};
use warden::dns;
use warden::engine::Engine;
use warden::upstream::Forwarder;

// ---- the tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_mode_blocks_every_query_type_with_ede_and_never_asks_upstream() {
    let h = harness("response = \"nxdomain\"\nttl = 120").await;
    for qtype in ALL_TYPES {
        let resp = udp(h.warden, "www.blocked.test.", qtype, true).await;
        assert_eq!(
            resp.metadata.response_code,
            ResponseCode::NXDomain,
            "{qtype}"
        );
        assert!(resp.metadata.recursion_available);
        assert!(resp.answers.is_empty(), "{qtype}");
        assert_eq!(
            soa_owner(&resp).as_deref(),
            Some("blocked.test."),
            "{qtype}"
        );
        let (code, text) = ede(&resp).expect("EDE with EDNS");
        assert_eq!(code, 15);
        assert!(text.contains("adult"), "{text}");
        // Without EDNS: same answer, no OPT record at all.
        let plain = udp(h.warden, "www.blocked.test.", qtype, false).await;
        assert_eq!(plain.metadata.response_code, ResponseCode::NXDomain);
        assert!(plain.edns.is_none(), "no OPT without EDNS in the query");
    }
    assert_eq!(h.upstream.total(), 0, "blocked names never reach upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_mode_answers_unspecified_addresses_and_nodata() {
    let h = harness("response = \"null\"\nttl = 60").await;
    let a = udp(h.warden, "blocked.test.", RecordType::A, true).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a.answers[0].data, RData::A(A(Ipv4Addr::UNSPECIFIED)));
    assert_eq!(a.answers[0].ttl, 60);
    let aaaa = udp(h.warden, "blocked.test.", RecordType::AAAA, true).await;
    assert_eq!(
        aaaa.answers[0].data,
        RData::AAAA(AAAA(Ipv6Addr::UNSPECIFIED))
    );
    for qtype in [
        RecordType::HTTPS,
        RecordType::MX,
        RecordType::TXT,
        RecordType::ANY,
    ] {
        let r = udp(h.warden, "blocked.test.", qtype, true).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{qtype}");
        assert!(r.answers.is_empty(), "{qtype}: NODATA");
        assert!(soa_owner(&r).is_some(), "{qtype}: SOA for negative caching");
        assert_eq!(ede(&r).map(|e| e.0), Some(15));
    }
    assert_eq!(h.upstream.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_mode_answers_the_block_page_addresses() {
    let h = harness("response = \"ip\"\nblock_ip = [\"192.0.2.10\", \"2001:db8::10\"]").await;
    let a = udp(h.warden, "x.tracker.test.", RecordType::A, true).await;
    assert_eq!(
        a.answers[0].data,
        RData::A(A("192.0.2.10".parse().unwrap()))
    );
    let aaaa = udp(h.warden, "x.tracker.test.", RecordType::AAAA, false).await;
    assert_eq!(
        aaaa.answers[0].data,
        RData::AAAA(AAAA("2001:db8::10".parse().unwrap()))
    );
    let svcb = udp(h.warden, "x.tracker.test.", RecordType::SVCB, true).await;
    assert!(
        svcb.answers.is_empty(),
        "no address hints leak through SVCB"
    );
    assert_eq!(h.upstream.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_names_are_answered_from_upstream_over_udp_and_tcp() {
    let h = harness("").await;
    let resp = udp(h.warden, "allowed.test.", RecordType::A, true).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        resp.answers[0].data,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))
    );
    assert!(resp.metadata.recursion_desired && resp.metadata.recursion_available);
    assert!(ede(&resp).is_none(), "no EDE on an allowed answer");
    let resp = tcp(h.warden, "allowed.test.", RecordType::AAAA).await;
    assert_eq!(
        resp.answers[0].data,
        RData::AAAA(AAAA("2001:db8::1".parse().unwrap()))
    );
    assert!(h.upstream.count("allowed.test.") >= 1);
    // The allow-list exception under a blocked name is forwarded too.
    let resp = udp(h.warden, "ok.blocked.test.", RecordType::A, true).await;
    assert_eq!(
        resp.metadata.response_code,
        ResponseCode::NXDomain,
        "upstream's answer"
    );
    assert!(ede(&resp).is_none(), "…not a block");
    assert_eq!(h.upstream.count("ok.blocked.test."), 1);
    // Upstream's NXDOMAIN comes through with its SOA.
    let resp = udp(h.warden, "nowhere.test.", RecordType::A, true).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(soa_owner(&resp).as_deref(), Some("test."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_over_tcp_and_locked_hashed_entries_beat_the_allow_list() {
    let h = harness("").await;
    let resp = tcp(h.warden, "www.blocked.test.", RecordType::A).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ede(&resp).map(|e| e.0), Some(15));
    let resp = udp(h.warden, "deep.locked.test.", RecordType::A, true).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    assert!(ede(&resp).unwrap().1.contains("terrorism"));
    assert_eq!(h.upstream.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cname_chain_through_a_blocked_name_is_blocked() {
    let h = harness("").await;
    let resp = udp(h.warden, "cloaked.test.", RecordType::A, true).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    assert!(resp.answers.is_empty(), "no part of the chain leaks");
    assert_eq!(ede(&resp).map(|e| e.0), Some(15));
    // Also when the query name itself could never be listed (a space in a label).
    let resp = udp(h.warden, "odd\\032name.test.", RecordType::A, true).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        resp.answers.is_empty(),
        "no address of the blocked target leaks"
    );
    assert_eq!(
        ede(&resp).map(|e| e.0),
        Some(15),
        "Warden's block, not upstream's NXDOMAIN"
    );
    let seen: Vec<String> = h.upstream.seen.lock().unwrap().keys().cloned().collect();
    assert!(
        seen.iter()
            .any(|n| n.starts_with("odd") && n.ends_with("name.test.")),
        "{seen:?}"
    );
    // A clean chain is answered as upstream gave it.
    let resp = udp(h.warden, "alias.test.", RecordType::A, true).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(resp.answers.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_case_insensitive_and_the_question_keeps_its_case() {
    let h = harness("").await;
    let resp = udp(h.warden, "WwW.BlOcKeD.TeSt.", RecordType::A, true).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(resp.queries[0].name().to_string(), "WwW.BlOcKeD.TeSt.");
    let resp = udp(h.warden, "ALLOWED.test.", RecordType::A, true).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(resp.queries[0].name().to_string(), "ALLOWED.test.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_gives_servfail_within_the_timeout() {
    // A socket that receives and never answers: the worst kind of dead upstream.
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), black_hole.local_addr().unwrap(), "");
    let engine = Engine::load(&path).unwrap();
    let forwarder = Forwarder::new(&engine.config.upstream).unwrap();
    let handler = dns::Handler::new(Arc::new(ArcSwap::from_pointee(engine)), forwarder);
    let server = dns::start(&["127.0.0.1:0".parse().unwrap()], handler, WAIT)
        .await
        .unwrap();
    let started = Instant::now();
    let resp = udp(server.addrs[0], "allowed.test.", RecordType::A, true).await;
    let elapsed = started.elapsed();
    assert_eq!(resp.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(ede(&resp).map(|e| e.0), Some(22), "No Reachable Authority");
    assert!(
        elapsed < Duration::from_millis(2500),
        "took {elapsed:?} with a 1 s timeout"
    );
    // Blocking still works with no upstream at all.
    let resp = udp(server.addrs[0], "blocked.test.", RecordType::A, true).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_get_formerr_or_are_dropped_and_serving_goes_on() {
    let h = harness("").await;
    // Shorter than a header: dropped, there is no ID to answer to.
    let short = udp_exchange_within(h.warden, b"\x12\x34\x01", Duration::from_millis(300)).await;
    assert!(short.is_none(), "a 3-byte packet gets no answer: {short:?}");
    // A header claiming a question that is not there: FORMERR.
    let header_only = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let resp = udp_exchange(h.warden, &header_only).await.expect("FORMERR");
    assert_eq!(resp.metadata.id, 0xabcd);
    assert_eq!(resp.metadata.response_code, ResponseCode::FormErr);
    // Random garbage after a header.
    let mut junk = vec![0x11, 0x22, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    junk.extend_from_slice(&[0xff; 40]);
    let resp = udp_exchange(h.warden, &junk).await.expect("FORMERR");
    assert_eq!(resp.metadata.response_code, ResponseCode::FormErr);
    // No question, and two questions: FORMERR from the handler.
    let mut none = Message::query();
    none.metadata.recursion_desired = true;
    let resp = udp_exchange(h.warden, &none.to_vec().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.metadata.response_code, ResponseCode::FormErr);
    let mut two = query_message("allowed.test.", RecordType::A, false);
    two.add_query(Query::query(
        Name::from_ascii("blocked.test.").unwrap(),
        RecordType::A,
    ));
    let resp = udp_exchange(h.warden, &two.to_vec().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.metadata.response_code, ResponseCode::FormErr);
    // A non-query opcode: NOTIMP.
    let mut notify = query_message("allowed.test.", RecordType::SOA, false);
    notify.metadata.op_code = OpCode::Notify;
    let resp = udp_exchange(h.warden, &notify.to_vec().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.metadata.response_code, ResponseCode::NotImp);
    // And the server still answers.
    let resp = udp(h.warden, "blocked.test.", RecordType::A, false).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(h.upstream.total(), 0, "nothing malformed was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_upstream_fails_over_to_the_next() {
    let (upstream, upstream_addr, token) = start_upstream().await;
    let _stop = token.drop_guard();
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), upstream_addr, "");
    // Put the dead server first.
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("servers = [\"{upstream_addr}\"]"),
        &format!(
            "servers = [\"{}\", \"{upstream_addr}\"]",
            black_hole.local_addr().unwrap()
        ),
    );
    std::fs::write(&path, text).unwrap();
    let engine = Engine::load(&path).unwrap();
    assert_eq!(engine.config.upstream.servers.len(), 2);
    let forwarder = Forwarder::new(&engine.config.upstream).unwrap();
    let handler = dns::Handler::new(Arc::new(ArcSwap::from_pointee(engine)), forwarder);
    let server = dns::start(&["127.0.0.1:0".parse().unwrap()], handler, WAIT)
        .await
        .unwrap();
    let started = Instant::now();
    let resp = udp(server.addrs[0], "allowed.test.", RecordType::A, true).await;
    assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        resp.answers[0].data,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "within the 1 s timeout"
    );
    assert_eq!(upstream.count("allowed.test."), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edns_answers_echo_do_and_offer_at_most_1232_bytes() {
    let h = harness("").await;
    for (do_bit, payload) in [(true, 4096u16), (false, 700)] {
        let mut msg = query_message("www.blocked.test.", RecordType::A, false);
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_max_payload(payload);
        edns.set_dnssec_ok(do_bit);
        msg.set_edns(edns);
        let resp = udp_exchange(h.warden, &msg.to_vec().unwrap())
            .await
            .unwrap();
        let got = resp.edns.expect("EDNS answered with EDNS");
        assert_eq!(got.flags().dnssec_ok, do_bit);
        assert_eq!(got.max_payload(), payload.min(1232));
        assert!(
            !resp.metadata.authentic_data,
            "a local block is not DNSSEC-validated data"
        );
    }
}

#[test]
fn the_real_binary_serves_a_block_and_an_allow_on_port_0() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), upstream_addr, "");
    let (child, addr) = spawn_warden(&path);
    runtime.block_on(async {
        let blocked = udp(addr, "www.blocked.test.", RecordType::A, true).await;
        assert_eq!(blocked.metadata.response_code, ResponseCode::NXDomain);
        let allowed = udp(addr, "allowed.test.", RecordType::A, true).await;
        assert_eq!(
            allowed.answers[0].data,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))
        );
    });
    assert_eq!(upstream.count("www.blocked.test."), 0);
    assert_eq!(upstream.count("allowed.test."), 1);
    let status = stop_warden(child);
    assert!(status.success(), "SIGTERM stops it cleanly: {status:?}");
}

/// With its stderr closed (the journal restarted, or the process reading its log
/// exited), Warden keeps serving and still stops cleanly on SIGTERM: a log line it
/// cannot write is dropped, never a panic in the task that wrote it.
#[test]
fn a_closed_stderr_does_not_stop_serving_or_shutdown() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), upstream_addr, "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("serving DNS on ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next().map(str::to_string))
        })
        .expect("serving")
        .parse()
        .unwrap();
    drop(lines); // close our end of its stderr
                 // Blocks are logged at DEBUG: the log write fails, the answer still comes.
    let resp = runtime.block_on(udp(addr, "www.blocked.test.", RecordType::A, true));
    assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
    let status = stop_warden(child);
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_come_from_the_answer_cache_until_a_reload_changes_the_verdict() {
    let (upstream, upstream_addr, stop) = start_upstream().await;
    let _stop = stop.drop_guard();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), upstream_addr, "");
    let engine = Arc::new(ArcSwap::from_pointee(Engine::load(&path).unwrap()));
    let forwarder = Forwarder::new(&engine.load().config.upstream).unwrap();
    let listen = engine.load().config.server.listen.clone();
    let server = dns::start(&listen, dns::Handler::new(engine.clone(), forwarder), WAIT)
        .await
        .unwrap();
    let warden = server.addrs[0];

    let first = udp(warden, "alias.test.", RecordType::A, true).await;
    assert_eq!(first.metadata.response_code, ResponseCode::NoError);
    assert_eq!(first.answers.len(), 2, "the CNAME and the address");
    // Another asker, other case, no EDNS: the same records, its own ID and question.
    let again = udp(warden, "ALIAS.Test.", RecordType::A, false).await;
    assert_eq!(again.queries[0].name().to_string(), "ALIAS.Test.");
    assert!(again.edns.is_none(), "no OPT for a client that sent none");
    assert_eq!(again.answers.len(), 2);
    let third = udp(warden, "alias.test.", RecordType::A, true).await;
    assert_eq!(
        third.answers.iter().map(|r| &r.data).collect::<Vec<_>>(),
        first.answers.iter().map(|r| &r.data).collect::<Vec<_>>()
    );
    for (kept, fresh) in third.answers.iter().zip(&first.answers) {
        assert!(kept.ttl <= fresh.ttl, "TTLs count down, never up");
    }
    assert_eq!(
        upstream.count("alias.test."),
        1,
        "repeats never reach upstream"
    );

    // The CNAME's target is listed by a reload: the kept answer must not be served.
    std::fs::write(dir.path().join("adult.txt"), format!("{ADULT}real.test\n")).unwrap();
    engine.store(Arc::new(Engine::load(&path).unwrap()));
    let after = udp(warden, "alias.test.", RecordType::A, true).await;
    assert_eq!(after.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        ede(&after).map(|e| e.0),
        Some(15),
        "blocked through its CNAME"
    );
    server.shutdown().await.unwrap();
}
