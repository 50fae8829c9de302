//! The audit log through a running server: every block becomes a row with every field,
//! allowed queries none; a flood loses no count and DNS keeps answering; a SIGKILL
//! loses nothing committed and leaves a chain that verifies.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use warden::audit::review::{self, Filter};
use warden::audit::store::Verification;
use warden::audit::writer::WriterSettings;
use warden::audit::{Sink, Store, Writer};
use warden::dns;
use warden::engine::Engine;
use warden::upstream::Forwarder;

/// Warden with an audit writer on a database in the harness folder.
struct Audited {
    warden: SocketAddr,
    upstream: Upstream,
    server: dns::RunningServer,
    writer: Writer,
    sink: Sink,
    blocked: Arc<AtomicU64>,
    db: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _upstream_stop: tokio_util::sync::DropGuard,
}

async fn audited(max_pending: usize) -> Audited {
    audited_with(max_pending, "").await
}

/// As [`audited`], with `extra` appended to the config.
async fn audited_with(max_pending: usize, extra: &str) -> Audited {
    let (upstream, upstream_addr, token) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), upstream_addr, "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();
    let engine = Engine::load(&path).unwrap();
    let db = dir.path().join("audit/audit.sqlite");
    let sink = Sink::new(max_pending);
    let writer = Writer::start(
        Store::open(&db).unwrap(),
        sink.clone(),
        WriterSettings {
            window: Duration::from_secs(60),
            flush_interval: Duration::from_millis(100),
            retention_days: 365,
            retention_by_category: BTreeMap::new(),
        },
    )
    .unwrap();
    let forwarder = Forwarder::new(&engine.config.upstream).unwrap();
    let handler = dns::Handler::new(Arc::new(ArcSwap::from_pointee(engine)), forwarder)
        .with_audit(sink.clone());
    let blocked = handler.blocked_counter();
    let server = dns::start(&["127.0.0.1:0".parse().unwrap()], handler, WAIT)
        .await
        .unwrap();
    Audited {
        warden: server.addrs[0],
        upstream,
        server,
        writer,
        sink,
        blocked,
        db,
        _dir: dir,
        _upstream_stop: token.drop_guard(),
    }
}

impl Audited {
    /// Stop serving, flush and seal the log, and open it for reading.
    async fn finish(self) -> (Store, u64, Upstream) {
        self.server.shutdown().await.unwrap();
        self.writer.stop().unwrap();
        (
            Store::open(&self.db).unwrap(),
            self.blocked.load(Ordering::Relaxed),
            self.upstream,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_become_rows_with_every_field_and_allowed_queries_none() {
    let a = audited(1000).await;
    for _ in 0..3 {
        let r = udp(a.warden, "www.blocked.test.", RecordType::A, true).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    udp(a.warden, "www.blocked.test.", RecordType::AAAA, true).await;
    udp(a.warden, "cloaked.test.", RecordType::A, true).await;
    udp(a.warden, "deep.locked.test.", RecordType::HTTPS, false).await;
    let allowed = udp(a.warden, "allowed.test.", RecordType::A, true).await;
    assert_eq!(allowed.metadata.response_code, ResponseCode::NoError);
    let (store, blocked, _) = a.finish().await;
    assert_eq!(blocked, 6);

    let rows = review::list(&store, &Filter::default()).unwrap();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert!(
        rows.iter().all(|r| r.name != "allowed.test"),
        "allowed queries are not recorded"
    );
    let total: i64 = rows.iter().map(|r| r.count).sum();
    assert_eq!(total as u64, blocked, "every block counted");

    let www = rows.iter().find(|r| r.name == "www.blocked.test").unwrap();
    assert_eq!(
        www.count, 4,
        "A and AAAA repeats share the (client, name, categories) row"
    );
    assert_eq!(www.client_ip, "127.0.0.1");
    assert_eq!(www.group, "default");
    assert_eq!(www.categories, "adult");
    assert!(!www.locked);
    assert_eq!(
        (www.list.as_str(), www.line, www.rule.as_str()),
        ("adult", 1, "blocked.test")
    );
    assert_eq!(www.response, "nxdomain");
    assert_eq!(www.qtype, "A");
    assert_eq!(www.outcome, "blocked");
    assert!(
        www.first_seen.ends_with('Z') && www.first_seen.len() == 24,
        "{}",
        www.first_seen
    );
    assert!(www.last_seen >= www.first_seen);
    assert_eq!(
        www.hash.as_deref().map(str::len),
        Some(64),
        "sealed into the chain"
    );

    let cloaked = rows.iter().find(|r| r.name == "cloaked.test").unwrap();
    assert_eq!(cloaked.cname.as_deref(), Some("x.tracker.test"));
    assert_eq!(cloaked.rule, "||tracker.test^");

    let locked = rows.iter().find(|r| r.name == "deep.locked.test").unwrap();
    assert!(locked.locked);
    assert_eq!(locked.categories, "terrorism");
    assert_eq!(locked.qtype, "HTTPS");
    assert!(matches!(
        store.verify(None, std::time::SystemTime::now()).unwrap(),
        Verification::Intact { rows: 3, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_queries_are_recorded_only_when_log_allowed_is_set() {
    let a = audited_with(1000, "[audit]\nlog_allowed = true\n").await;
    udp(a.warden, "allowed.test.", RecordType::A, true).await;
    udp(a.warden, "allowed.test.", RecordType::AAAA, true).await;
    udp(a.warden, "blocked.test.", RecordType::A, true).await;
    let (store, blocked, _) = a.finish().await;
    assert_eq!(blocked, 1);
    let rows = review::list(&store, &Filter::default()).unwrap();
    let allowed = rows
        .iter()
        .find(|r| r.name == "allowed.test")
        .expect("recorded");
    assert_eq!((allowed.outcome.as_str(), allowed.count), ("allowed", 2));
    assert_eq!(
        (allowed.categories.as_str(), allowed.response.as_str()),
        ("", "forwarded")
    );
    let summary = review::summary(&store, &Filter::default()).unwrap();
    assert_eq!(summary.total, 1, "trends count blocks only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_loses_no_count_and_dns_keeps_answering() {
    // A small bound, so the flood overflows it and per-name detail gets folded; no rate
    // limit, since the flood and the probe share one loopback address.
    let a = audited_with(64, "[server.rate_limit]\nqps = 0\n").await;
    let deadline = Instant::now() + Duration::from_secs(3);
    let received = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (server, received) = (a.warden, received.clone());
        clients.push(tokio::spawn(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut buf = vec![0u8; 1500];
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let name = format!("n{c}-{}.blocked.test.", i % 500);
                let msg = query_message(&name, RecordType::A, false).to_vec().unwrap();
                sock.send_to(&msg, server).await.unwrap();
                let reply =
                    tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf))
                        .await;
                if reply.is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Meanwhile an ordinary client must keep getting answers promptly.
    let probe_ok = Arc::new(AtomicBool::new(true));
    let probe = {
        let (server, ok) = (a.warden, probe_ok.clone());
        tokio::spawn(async move {
            let mut answered = 0;
            while Instant::now() < deadline {
                let started = Instant::now();
                let msg = query_message("allowed.test.", RecordType::A, false);
                match udp_exchange_within(server, &msg.to_vec().unwrap(), Duration::from_secs(1))
                    .await
                {
                    Some(r) if r.metadata.response_code == ResponseCode::NoError => answered += 1,
                    _ => ok.store(false, Ordering::Relaxed),
                }
                assert!(started.elapsed() < Duration::from_secs(1));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answered
        })
    };
    for c in clients {
        c.await.unwrap();
    }
    let probes = probe.await.unwrap();
    let folded = a.sink.folded();
    let (store, blocked, _) = a.finish().await;
    assert!(
        probe_ok.load(Ordering::Relaxed) && probes >= 20,
        "DNS kept answering ({probes} probes)"
    );
    let received = received.load(Ordering::Relaxed);
    assert!(received > 1000, "the flood was a flood: {received} answers");
    assert!(received <= blocked);
    let rows = review::list(&store, &Filter::default()).unwrap();
    let total: i64 = rows.iter().map(|r| r.count).sum();
    assert_eq!(
        total as u64, blocked,
        "sum(count) equals the blocked answers given"
    );
    assert!(
        folded > 0,
        "the bound was reached and detail folded, counts kept"
    );
    assert!(matches!(
        store.verify(None, std::time::SystemTime::now()).unwrap(),
        Verification::Intact { .. }
    ));
}

#[test]
fn sigkill_loses_nothing_committed_and_the_chain_still_verifies() {
    use std::process::Command;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), upstream_addr, "");
    // Flush often, and log to a file in the test folder.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("[audit]\npath = \"audit.sqlite\"\nflush_interval = \"100ms\"\n");
    std::fs::write(&path, text).unwrap();
    let config = path.to_str().unwrap();

    let (mut child, addr) = spawn_warden(&path);
    let sent = 40;
    runtime.block_on(async {
        for i in 0..sent {
            let name = format!("n{}.blocked.test.", i % 10);
            let r = udp(addr, &name, RecordType::A, false).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        }
    });
    // Kill only once every block is committed (the writer flushes every 100 ms, later on
    // a busy machine): what is asserted below is that nothing committed is lost.
    let db = dir.path().join("audit.sqlite");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let committed: i64 =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| {
                    c.query_row("SELECT coalesce(sum(count), 0) FROM events", [], |r| {
                        r.get(0)
                    })
                })
                .unwrap_or(0);
        if committed == sent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {committed} of {sent} blocks committed to {}",
            db.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL: no chance to flush
    child.wait().unwrap();

    let audit = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(args)
            .args(["--config", config])
            .output()
            .unwrap()
    };
    let verify = audit(&["audit", "verify"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let list = audit(&["audit", "list", "--json"]);
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let counted: i64 = rows.iter().map(|r| r["count"].as_i64().unwrap()).sum();
    assert_eq!(
        counted, sent,
        "every block committed before the kill is there"
    );
    assert_eq!(rows.len(), 10);

    // A restart seals what the crash left open, and the chain verifies with all rows.
    let (child, _) = spawn_warden(&path);
    assert!(stop_warden(child).success());
    let verify = audit(&["audit", "verify"]);
    let out = String::from_utf8_lossy(&verify.stdout).to_string();
    assert_eq!(verify.status.code(), Some(0), "{out}");
    assert!(
        out.contains("chain intact to seq 10") && out.contains("0 rows still open"),
        "{out}"
    );
}
