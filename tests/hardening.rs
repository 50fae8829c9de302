//! The serving path under hostile or careless clients: a client outside
//! `allow_networks` is refused and never forwarded; a client over its rate is limited
//! (REFUSED or dropped) while another client is unaffected, and the limited queries
//! show in `/metrics`-style counters.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;
use warden::dns;
use warden::engine::Engine;
use warden::metrics::Metrics;
use warden::upstream::Forwarder;

struct Served {
    dns: SocketAddr,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    _server: dns::RunningServer,
    _dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

async fn served(server_extra: &str) -> Served {
    let (upstream, upstream_addr, token) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), upstream_addr, "");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "listen = [\"127.0.0.1:0\"]\n",
        &format!("listen = [\"127.0.0.1:0\"]\n{server_extra}\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    let engine = Engine::load(&path).unwrap();
    let forwarder = Forwarder::new(&engine.config.upstream).unwrap();
    let metrics = Arc::new(Metrics::new());
    let handler = dns::Handler::new(Arc::new(ArcSwap::from_pointee(engine)), forwarder)
        .with_metrics(metrics.clone());
    let server = dns::start(&["127.0.0.1:0".parse().unwrap()], handler, WAIT)
        .await
        .unwrap();
    Served {
        dns: server.addrs[0],
        upstream,
        metrics,
        _server: server,
        _dir: dir,
        _stop: token.drop_guard(),
    }
}

/// Send one query from `source`; the answer, or `None` after a short wait.
async fn try_from(source: &str, server: SocketAddr, name: &str) -> Option<Message> {
    let msg = query_message(name, RecordType::A, true);
    let sock = UdpSocket::bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
        .await
        .unwrap();
    sock.send_to(&msg.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(Message::from_vec(&buf[..n]).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_outside_allow_networks_is_refused_and_never_forwarded() {
    let s = served("allow_networks = [\"127.0.0.1/32\", \"::1\"]").await;
    let outside = try_from("127.0.0.2", s.dns, "allowed.test.").await.unwrap();
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
    assert!(outside.answers.is_empty());
    let blocked = try_from("127.0.0.2", s.dns, "blocked.test.").await.unwrap();
    assert_eq!(
        blocked.metadata.response_code,
        ResponseCode::Refused,
        "not even a block"
    );
    assert_eq!(
        s.upstream.total(),
        0,
        "nothing from outside reaches upstream"
    );
    let inside = try_from("127.0.0.1", s.dns, "allowed.test.").await.unwrap();
    assert_eq!(inside.metadata.response_code, ResponseCode::NoError);
    assert_eq!(s.upstream.count("allowed.test."), 1);
    let text = s.metrics.render();
    assert!(
        text.contains(r#"warden_queries_total{outcome="refused",qtype="A"} 2"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_networks_admit_the_lan_and_loopback() {
    // Without allow_networks, loopback (and the private ranges) are served.
    let s = served("").await;
    let r = try_from("127.0.0.2", s.dns, "allowed.test.").await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
}

async fn burst(source: &str, server: SocketAddr, n: usize) -> (usize, usize, usize) {
    let (mut answered, mut refused, mut silent) = (0, 0, 0);
    for i in 0..n {
        match try_from(source, server, &format!("n{i}.blocked.test.")).await {
            Some(m) if m.metadata.response_code == ResponseCode::Refused => refused += 1,
            Some(_) => answered += 1,
            None => silent += 1,
        }
    }
    (answered, refused, silent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_is_refused_while_another_is_unaffected() {
    // 1 query/s with a burst of 10: the 11th query within the second is over.
    let s = served("[server.rate_limit]\nqps = 1\nburst = 10").await;
    let (answered, limited, silent) = burst("127.0.0.2", s.dns, 25).await;
    assert!((10..=12).contains(&answered), "answered {answered}");
    assert_eq!(answered + limited, 25);
    assert_eq!(silent, 0);
    // The other client has its own bucket.
    let (answered, refused, _) = burst("127.0.0.1", s.dns, 5).await;
    assert_eq!((answered, refused), (5, 0));
    let text = s.metrics.render();
    let line = format!(r#"warden_queries_total{{outcome="rate_limited",qtype="A"}} {limited}"#);
    assert!(text.contains(&line), "{line} not in:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_mode_sends_nothing_to_a_client_over_its_rate() {
    let s = served("[server.rate_limit]\nqps = 1\nburst = 3\naction = \"drop\"").await;
    let (answered, refused, silent) = burst("127.0.0.2", s.dns, 6).await;
    assert_eq!(refused, 0);
    assert!((3..=4).contains(&answered), "answered {answered}");
    assert_eq!(answered + silent, 6);
    let r = try_from("127.0.0.1", s.dns, "blocked.test.").await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn bad_networks_and_limits_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(
        &path,
        "[server]\nallow_networks = [\n  \"10.0.0.0/8\",\n  \"lan\",\n]\n",
    )
    .unwrap();
    let err = warden::config::Config::load(&path).unwrap_err().to_string();
    assert!(err.contains(":4:") && err.contains("\"lan\""), "{err}");
    std::fs::write(&path, "[server.rate_limit]\nqps = -1\n").unwrap();
    let err = warden::config::Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("qps"), "{err}");
    std::fs::write(&path, "[server.rate_limit]\naction = \"ignore\"\n").unwrap();
    let err = warden::config::Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("ignore") && err.contains("w.toml:2:"), "{err}");
}

async fn tcp_served(
    max_connections: usize,
    idle: Duration,
) -> (
    SocketAddr,
    dns::RunningServer,
    tokio_util::sync::DropGuard,
    tempfile::TempDir,
) {
    let (_upstream, upstream_addr, token) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), upstream_addr, "");
    let engine = Engine::load(&path).unwrap();
    let forwarder = Forwarder::new(&engine.config.upstream).unwrap();
    let handler = dns::Handler::new(Arc::new(ArcSwap::from_pointee(engine)), forwarder);
    let limits = dns::tcp::TcpLimits {
        max_connections,
        per_client: max_connections,
        idle,
    };
    let server = dns::start_with(&["127.0.0.1:0".parse().unwrap()], handler, limits)
        .await
        .unwrap();
    (server.addrs[0], server, token.drop_guard(), dir)
}

async fn send_query(stream: &mut tokio::net::TcpStream, name: &str) -> u16 {
    use tokio::io::AsyncWriteExt;
    let msg = query_message(name, RecordType::A, false);
    let bytes = msg.to_vec().unwrap();
    stream.write_u16(bytes.len() as u16).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    msg.metadata.id
}

async fn read_answer(stream: &mut tokio::net::TcpStream) -> Option<Message> {
    use tokio::io::AsyncReadExt;
    let len = tokio::time::timeout(Duration::from_secs(2), stream.read_u16())
        .await
        .ok()?
        .ok()?;
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await.ok()?;
    Some(Message::from_vec(&buf).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pipelines_queries_on_one_connection() {
    let (addr, _server, _stop, _dir) = tcp_served(8, Duration::from_secs(5)).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut ids = Vec::new();
    for name in ["allowed.test.", "www.blocked.test.", "alias.test."] {
        ids.push(send_query(&mut stream, name).await);
    }
    let mut answered = Vec::new();
    for _ in 0..3 {
        let m = read_answer(&mut stream)
            .await
            .expect("three answers on one connection");
        answered.push((m.metadata.id, m.metadata.response_code));
    }
    answered.sort_by_key(|a| a.0);
    let mut want: Vec<_> = ids
        .iter()
        .zip([
            ResponseCode::NoError,
            ResponseCode::NXDomain,
            ResponseCode::NoError,
        ])
        .map(|(id, rc)| (*id, rc))
        .collect();
    want.sort_by_key(|w| w.0);
    assert_eq!(answered, want);
}

/// Has the server closed `stream`? Waits at most `wait` for the close to show.
async fn closed_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(wait, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("unexpected bytes from the server"),
        Err(_) => false,
    }
}

// The caps themselves (per client, and the oldest idle connection closed to make room
// at the cap) are tested in tests/tcp_fair.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connections_time_out_and_free_their_slots() {
    let (addr, _server, _stop, _dir) = tcp_served(2, Duration::from_millis(500)).await;
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
    for stream in [&mut first, &mut second] {
        send_query(stream, "allowed.test.").await;
        assert!(read_answer(stream).await.is_some());
    }
    // Idle past the timeout: closed by the server (a bounded wait for the close).
    for stream in [&mut first, &mut second] {
        assert!(
            closed_within(stream, WAIT).await,
            "idle connection not closed"
        );
    }
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    send_query(&mut third, "www.blocked.test.").await;
    let m = read_answer(&mut third).await.expect("a slot is free again");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}
