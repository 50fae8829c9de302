//! TCP stays fair to every client (issue #20): one address holding more idle
//! connections than the cap cannot keep another address from being answered (the
//! oldest idle connections are closed to make room), a client at its own connection
//! limit is refused while others are not, idle connections drain within seconds under
//! pressure, and a response (QR=1) sent over TCP is dropped, never answered or forwarded.
//!
//! A second client is a second loopback address: the client socket is bound to
//! 127.0.0.2 before it connects (all of 127/8 is loopback on Linux).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use common::*;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use warden::dns::{self, tcp::TcpLimits};
use warden::engine::Engine;
use warden::upstream::Forwarder;

const HOLDER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The idle timeout in these tests: far longer than any of them runs, so a connection
/// closed during a test was closed by the caps or by pressure, not by this timeout.
const LONG_IDLE: Duration = Duration::from_secs(60);

struct Served {
    addr: SocketAddr,
    upstream: Upstream,
    server: Option<dns::RunningServer>,
    _stop: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            tokio::time::timeout(WAIT, server.shutdown())
                .await
                .expect("the server stops in time")
                .unwrap();
        }
    }
}

async fn served(max_connections: usize, per_client: usize, idle: Duration) -> Served {
    let (upstream, upstream_addr, token) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), upstream_addr, "");
    let engine = Engine::load(&path).unwrap();
    let forwarder = Forwarder::new(&engine.config.upstream).unwrap();
    let handler = dns::Handler::new(Arc::new(ArcSwap::from_pointee(engine)), forwarder);
    let limits = TcpLimits {
        max_connections,
        per_client,
        idle,
    };
    let server = dns::start_with(&["127.0.0.1:0".parse().unwrap()], handler, limits)
        .await
        .unwrap();
    Served {
        addr: server.addrs[0],
        upstream,
        server: Some(server),
        _stop: token.drop_guard(),
        _dir: dir,
    }
}

/// A connection to `server` from the loopback address `source`. Binding to port 0
/// cannot collide, but the machine may be short of ephemeral ports for a moment: a few
/// tries.
async fn connect_from(source: IpAddr, server: SocketAddr) -> TcpStream {
    let mut last = None;
    for _ in 0..5 {
        let socket = TcpSocket::new_v4().unwrap();
        if let Err(error) = socket.bind(SocketAddr::new(source, 0)) {
            last = Some(error);
            continue;
        }
        match tokio::time::timeout(WAIT, socket.connect(server)).await {
            Ok(Ok(stream)) => return stream,
            Ok(Err(error)) => last = Some(error),
            Err(_) => panic!("connecting from {source} took longer than {WAIT:?}"),
        }
    }
    panic!("cannot connect from {source}: {last:?}");
}

fn framed(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// The next message on `stream`, or `None` if it is closed (or reset) or nothing comes
/// within `wait`.
async fn read_message(stream: &mut TcpStream, wait: Duration) -> Option<Message> {
    let read = async {
        let len = stream.read_u16().await.ok()?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.ok()?;
        Some(Message::from_vec(&buf).expect("a DNS message"))
    };
    tokio::time::timeout(wait, read).await.ok().flatten()
}

/// Ask `name` on `stream`: the answer with the query's ID, or `None` if the connection
/// is closed without one (a write into a closed connection may fail or not).
async fn ask(stream: &mut TcpStream, name: &str) -> Option<Message> {
    let msg = query_message(name, RecordType::A, false);
    stream
        .write_all(&framed(&msg.to_vec().unwrap()))
        .await
        .ok()?;
    let answer = read_message(stream, WAIT).await?;
    assert_eq!(answer.metadata.id, msg.metadata.id);
    Some(answer)
}

/// Has the server closed `stream`? Waits at most `wait` for the close to show.
async fn closed_by_server(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(wait, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("unexpected bytes from the server"),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_more_than_the_cap_cannot_keep_another_from_tcp() {
    const CAP: usize = 16;
    const HELD: usize = 40;
    const ATTEMPTS: usize = 10;
    // The per-client limit above the cap: only eviction can let the other client in.
    let s = served(CAP, 64, LONG_IDLE).await;
    // The holder opens more than the cap, one at a time; each newcomer is answered, the
    // oldest idle connection making room for it.
    let mut held = Vec::with_capacity(HELD + 4 * ATTEMPTS);
    for i in 0..HELD {
        let mut stream = connect_from(HOLDER, s.addr).await;
        let answer = ask(&mut stream, "www.blocked.test.").await;
        assert!(
            answer.is_some(),
            "connection {i} of the holder was not served"
        );
        held.push(stream);
    }
    // The oldest went first: the first HELD - CAP are closed.
    for (i, stream) in held.iter_mut().take(HELD - CAP).enumerate() {
        assert!(
            closed_by_server(stream, WAIT).await,
            "held connection {i} still open beyond the cap"
        );
    }
    for attempt in 0..ATTEMPTS {
        // The holder tops up with idle connections that send nothing…
        for _ in 0..4 {
            held.push(connect_from(HOLDER, s.addr).await);
        }
        // …and the other address is answered every time, allowed and blocked names.
        let mut stream = connect_from(OTHER, s.addr).await;
        let (name, rcode) = if attempt % 2 == 0 {
            ("allowed.test.", ResponseCode::NoError)
        } else {
            ("www.blocked.test.", ResponseCode::NXDomain)
        };
        let answer = ask(&mut stream, name)
            .await
            .unwrap_or_else(|| panic!("attempt {attempt} from {OTHER} was not answered"));
        assert_eq!(answer.metadata.response_code, rcode);
        assert_eq!(answer.answers.is_empty(), rcode != ResponseCode::NoError);
        drop(stream);
    }
    assert!(s.upstream.count("allowed.test.") >= 1);
    drop(held);
    s.stop().await;
}

/// A message trickled in (its length sent, its body never finished) does not make a
/// connection busy: at the cap such connections are closed to make room like idle ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_trickling_a_message_cannot_keep_another_from_tcp() {
    const CAP: usize = 8;
    let s = served(CAP, 64, LONG_IDLE).await;
    let mut held = Vec::with_capacity(CAP);
    for _ in 0..CAP {
        let mut stream = connect_from(HOLDER, s.addr).await;
        // A 40-byte message announced, one byte of it sent, the rest held back.
        stream.write_all(&[0, 40, 0x12]).await.expect("write");
        held.push(stream);
    }
    let mut stream = connect_from(OTHER, s.addr).await;
    let answer = ask(&mut stream, "www.blocked.test.")
        .await
        .expect("the other address is answered while the cap is held by tricklers");
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        closed_by_server(&mut held[0], WAIT).await,
        "the oldest trickler made room"
    );
    drop(held);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_its_connection_limit_is_refused_and_another_is_not() {
    const PER_CLIENT: usize = 4;
    let s = served(64, PER_CLIENT, LONG_IDLE).await;
    let mut held = Vec::new();
    for i in 0..PER_CLIENT {
        let mut stream = connect_from(HOLDER, s.addr).await;
        assert!(ask(&mut stream, "allowed.test.").await.is_some(), "{i}");
        held.push(stream);
    }
    // Beyond its limit: closed unanswered, however many it tries.
    for i in 0..3 {
        let mut extra = connect_from(HOLDER, s.addr).await;
        assert!(
            ask(&mut extra, "www.blocked.test.").await.is_none(),
            "connection {} of one client answered beyond its limit",
            PER_CLIENT + i
        );
    }
    // Another client is served; the held connections were not closed to make room.
    let mut other = connect_from(OTHER, s.addr).await;
    assert!(ask(&mut other, "www.blocked.test.").await.is_some());
    for stream in &mut held {
        let answer = ask(stream, "allowed.test.").await.expect("still served");
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    }
    // When the client closes one, it may open another (once the server has seen the
    // close: try a bounded number of times).
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut served_again = false;
    while !served_again && tokio::time::Instant::now() < deadline {
        let mut stream = connect_from(HOLDER, s.addr).await;
        served_again = ask(&mut stream, "www.blocked.test.").await.is_some();
        if !served_again {
            tokio::time::sleep(Duration::from_millis(50)).await; // pacing between tries
        }
    }
    assert!(served_again, "a freed slot is usable again");
    drop((held, other));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_pressure_idle_connections_are_closed_within_seconds() {
    // Cap 8: above 6 open is pressure, and the idle timeout drops from a minute to
    // tcp::PRESSURE_IDLE (2 s) until no more than 6 are open.
    const CAP: usize = 8;
    const CALM: usize = 6;
    let s = served(CAP, CAP, LONG_IDLE).await;
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut stream = connect_from(HOLDER, s.addr).await;
        assert!(ask(&mut stream, "www.blocked.test.").await.is_some());
        held.push(stream);
    }
    // Watch them all (bounded): idle ones close within seconds, not a minute, until
    // the pressure is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut closed = vec![false; CAP];
    while closed.iter().filter(|c| **c).count() < CAP - CALM {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {:?} closed under pressure in 20 s",
            closed
        );
        for (stream, closed) in held.iter_mut().zip(closed.iter_mut()) {
            if !*closed {
                *closed = closed_by_server(stream, Duration::from_millis(50)).await;
            }
        }
    }
    // Once no more than three quarters are open, the rest keep their long timeout.
    let mut open = 0;
    for (stream, _) in held.iter_mut().zip(&closed).filter(|(_, c)| !**c) {
        let answer = ask(stream, "www.blocked.test.").await;
        assert!(answer.is_some(), "closed without pressure");
        open += 1;
    }
    assert_eq!(open, CALM);
    drop(held);
    s.stop().await;
}

/// A header-only message (12 bytes) claiming one question it does not carry.
fn truncated_header(id: u16, response: bool) -> Vec<u8> {
    let flags: u8 = if response { 0x81 } else { 0x01 }; // QR, RD
    vec![(id >> 8) as u8, id as u8, flags, 0, 0, 1, 0, 0, 0, 0, 0, 0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_sent_over_tcp_is_dropped_and_never_forwarded() {
    let s = served(16, 8, LONG_IDLE).await;
    let mut stream = connect_from(HOLDER, s.addr).await;
    let mut dropped_ids = Vec::new();
    // Responses (QR=1): one that would be forwarded, one that would be blocked, one
    // that cannot be decoded. None may be answered.
    for name in ["reflected.test.", "www.blocked.test."] {
        let mut msg = query_message(name, RecordType::A, false);
        msg.metadata.message_type = MessageType::Response;
        dropped_ids.push(msg.metadata.id);
        stream
            .write_all(&framed(&msg.to_vec().unwrap()))
            .await
            .unwrap();
    }
    stream
        .write_all(&framed(&truncated_header(0x5151, true)))
        .await
        .unwrap();
    dropped_ids.push(0x5151);
    // A query that cannot be decoded gets FORMERR, as over UDP.
    stream
        .write_all(&framed(&truncated_header(0x4242, false)))
        .await
        .unwrap();
    // Then a real query, forwarded: when its answer is back, the responses sent before
    // it have long been read.
    let query = query_message("after.test.", RecordType::A, false);
    stream
        .write_all(&framed(&query.to_vec().unwrap()))
        .await
        .unwrap();
    let (mut formerr, mut answered) = (false, false);
    for _ in 0..4 {
        if formerr && answered {
            break;
        }
        let m = read_message(&mut stream, WAIT)
            .await
            .expect("the FORMERR and the answer come");
        assert!(
            !dropped_ids.contains(&m.metadata.id),
            "a response was answered: {m:?}"
        );
        if m.metadata.id == 0x4242 {
            assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
            formerr = true;
        } else {
            assert_eq!(m.metadata.id, query.metadata.id);
            answered = true;
        }
    }
    assert!(formerr && answered);
    // Nothing else comes (a bounded look for a late answer to a response).
    assert!(read_message(&mut stream, Duration::from_millis(500))
        .await
        .is_none());
    assert_eq!(s.upstream.count("after.test."), 1);
    assert_eq!(
        s.upstream.count("reflected.test."),
        0,
        "a response was forwarded upstream"
    );
    drop(stream);
    s.stop().await;
}

#[test]
fn the_per_client_limit_is_configured_and_checked_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(
        &path,
        "[server]\ntcp_max_connections = 100\ntcp_connections_per_client = 7\n",
    )
    .unwrap();
    let config = warden::config::Config::load(&path).unwrap();
    let limits = TcpLimits::from_config(&config.server);
    assert_eq!((limits.max_connections, limits.per_client), (100, 7));
    let defaults =
        TcpLimits::from_config(&warden::config::Config::parse("", &path).unwrap().server);
    assert_eq!(
        defaults.per_client,
        dns::server::DEFAULT_TCP_CONNECTIONS_PER_CLIENT
    );
    std::fs::write(&path, "[server]\n\ntcp_connections_per_client = 0\n").unwrap();
    let err = warden::config::Config::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("w.toml:3:") && err.contains("tcp_connections_per_client"),
        "{err}"
    );
    std::fs::write(&path, "[server]\ntcp_connections_per_client = -1\n").unwrap();
    let err = warden::config::Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("w.toml:2:"), "{err}");
}
