//! The stop drains (issue #14): `warden serve` flooded with distinct blocked names over
//! UDP and TCP by several clients at once, some blocked at once (a listed domain's
//! subdomains) and some only after upstream answers (the CNAME-chain check, behind an
//! upstream that holds each answer for a while), gets SIGTERM while queries of both
//! transports are waiting for upstream. Then:
//! - every query that was waiting for upstream when the signal came is still answered
//!   (with its block), over UDP and over TCP;
//! - `sum(count)` in the audit log equals the block answers the clients received: no
//!   block recorded that nobody got, none given that the log lacks;
//! - the process exits 0 within a bound.
//!
//! The clients keep the books exact: a UDP client keeps at most [`WINDOW`] queries
//! outstanding (so no answer can overflow its socket buffer), a TCP client sends one
//! query at a time and reads its answer before the next (so the server's close never
//! discards an answer), and nobody retries. Every loop is bounded in count and time.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long the upstream holds each answer: queries are surely waiting for it when the
/// signal comes, and it is well within the drain bound (2 s).
const UPSTREAM_DELAY: Duration = Duration::from_millis(300);
/// Queries a UDP client keeps outstanding at most.
const WINDOW: usize = 16;
/// Queries one client sends at most (also keeps UDP query IDs distinct).
const MAX_QUERIES: usize = 20_000;
/// TCP connections one client opens at most.
const MAX_CONNECTIONS: usize = 100;
/// Longest a client runs, whatever happens.
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);
/// Block answers the clients must have had before the signal: the flood is under way.
const FLOOD_BEFORE_SIGNAL: u64 = 2_000;
/// Longest the process may take to exit after SIGTERM: the drain bound and a margin
/// for a busy machine.
const EXIT_BOUND: Duration = Duration::from_secs(10);
/// After the process has exited, a UDP client reads until its socket has been quiet
/// this long (loopback delivery may trail the sender's exit by a moment).
const QUIET: Duration = Duration::from_millis(500);

// ---- the upstream: answers every name under cloak.test late, with a blocked alias ----

/// Answers `NAME.cloak.test.` after [`UPSTREAM_DELAY`] with a CNAME to
/// `x.tracker.test.` (blocked by the list) and that name's address; anything else with
/// NXDOMAIN at once. Knows which names it is still holding.
#[derive(Clone, Default)]
struct SlowUpstream {
    holding: Arc<Mutex<BTreeSet<String>>>,
}

impl SlowUpstream {
    fn holding(&self) -> BTreeSet<String> {
        self.holding.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl RequestHandler for SlowUpstream {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut responder: R,
    ) -> ResponseInfo {
        let info = request.request_info().unwrap();
        let name = info.query.name().to_string().to_lowercase();
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        let mut answers = Vec::new();
        if name.ends_with(".cloak.test.") {
            self.holding.lock().unwrap().insert(name.clone());
            tokio::time::sleep(UPSTREAM_DELAY).await;
            let target = Name::from_ascii("x.tracker.test.").unwrap();
            answers.push(Record::from_rdata(
                dns_name(&name),
                60,
                RData::CNAME(CNAME(target.clone())),
            ));
            answers.push(Record::from_rdata(
                target,
                60,
                RData::A(A::new(192, 0, 2, 9)),
            ));
        } else {
            meta.response_code = ResponseCode::NXDomain;
        }
        let response = MessageResponseBuilder::from_message_request(request).build(
            meta,
            answers.iter(),
            [],
            [],
            [],
        );
        let sent = responder.send_response(response).await.unwrap();
        self.holding.lock().unwrap().remove(&name);
        sent
    }
}

/// Start the slow upstream on 127.0.0.1 (UDP and TCP); it stops when the guard drops.
async fn start_slow_upstream() -> (SlowUpstream, SocketAddr, tokio_util::sync::DropGuard) {
    let upstream = SlowUpstream::default();
    let mut server = hickory_server::Server::new(upstream.clone());
    let (udp, tcp) = bind_udp_and_tcp().await;
    let addr = udp.local_addr().unwrap();
    server.register_socket(udp);
    server.register_listener(tcp, WAIT, 16);
    let guard = server.shutdown_token().clone().drop_guard();
    tokio::spawn(async move {
        let _ = server.block_until_done().await;
    });
    (upstream, addr, guard)
}

/// A config blocking `blocked.test` and `tracker.test` with their subdomains, answered
/// NXDOMAIN with EDE 15; no rate limit (the flood comes from one address), no admin
/// listener, the audit log in `dir`.
fn write_drain_config(dir: &Path, upstream: SocketAddr) -> PathBuf {
    std::fs::write(dir.join("adult.txt"), "blocked.test\n||tracker.test^\n").unwrap();
    let config = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
[server.rate_limit]
qps = 0
[admin]
enabled = false
[sources]
cache_dir = "cache"
[upstream]
servers = ["{upstream}"]
timeout = "5s"
[blocking]
response = "nxdomain"
[audit]
path = "audit.sqlite"
[categories.adult]
[[lists]]
name = "adult"
category = "adult"
path = "adult.txt"
"#
    );
    let path = dir.join("warden.toml");
    std::fs::write(&path, config).unwrap();
    path
}

// ---- the clients ----

/// What the test and its clients share: the signal and exit moments, and the block
/// answers received so far (to know the flood is under way).
#[derive(Default)]
struct Run {
    signalled: AtomicBool,
    exited: AtomicBool,
    blocks: AtomicU64,
}

impl Run {
    fn signalled(&self) -> bool {
        self.signalled.load(Ordering::SeqCst)
    }
    fn exited(&self) -> bool {
        self.exited.load(Ordering::SeqCst)
    }
}

/// One client's books: the names answered with a block, and anything else it got.
#[derive(Default)]
struct Tally {
    blocked: BTreeSet<String>,
    other: Vec<String>,
}

impl Tally {
    /// Book the answer to `name` (asked with ID `id`).
    fn book(&mut self, run: &Run, name: &str, id: u16, answer: &Message) {
        let question = answer.queries.first().map(|q| q.name().to_string());
        let block = answer.metadata.id == id
            && question.as_deref() == Some(name)
            && answer.metadata.response_code == ResponseCode::NXDomain
            && ede(answer).map(|e| e.0) == Some(15);
        if !block {
            let rcode = answer.metadata.response_code;
            self.other.push(format!("{name}: {rcode:?} {question:?}"));
        } else if self.blocked.insert(name.to_string()) {
            run.blocks.fetch_add(1, Ordering::SeqCst);
        } else {
            self.other.push(format!("{name}: answered twice"));
        }
    }
}

/// Who a client is: its label (unique, starts every name it asks) and whether its names
/// are listed (blocked at once) or under `cloak.test` (blocked after upstream answers).
#[derive(Clone, Copy)]
struct Client {
    label: &'static str,
    index: usize,
    cloaked: bool,
}

impl Client {
    fn name(&self, i: usize) -> String {
        let domain = if self.cloaked { "cloak" } else { "blocked" };
        format!("{}{}-{i}.{domain}.test.", self.label, self.index)
    }
}

fn query(name: &str, id: u16) -> Vec<u8> {
    let mut msg = query_message(name, RecordType::A, true);
    msg.metadata.id = id;
    msg.to_vec().unwrap()
}

/// A UDP client: up to [`WINDOW`] queries outstanding, until the process has exited;
/// then it reads what is left in its socket.
async fn udp_client(client: Client, server: SocketAddr, run: Arc<Run>) -> Tally {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut outstanding: HashMap<u16, String> = HashMap::new();
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 4096];
    let mut sent = 0;
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let book = |tally: &mut Tally, bytes: &[u8], outstanding: &mut HashMap<u16, String>| {
        let answer = Message::from_vec(bytes).expect("a DNS message");
        match outstanding.remove(&answer.metadata.id) {
            Some(name) => tally.book(&run, &name, answer.metadata.id, &answer),
            None => tally
                .other
                .push(format!("unasked ID {}", answer.metadata.id)),
        }
    };
    while !run.exited() && Instant::now() < deadline {
        while outstanding.len() < WINDOW && sent < MAX_QUERIES {
            let name = client.name(sent);
            let id = u16::try_from(sent).expect("MAX_QUERIES fits an ID");
            sock.send_to(&query(&name, id), server).await.unwrap();
            outstanding.insert(id, name);
            sent += 1;
        }
        let wait = Duration::from_millis(50);
        if let Ok(received) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
            let (n, _) = received.expect("a UDP receive");
            book(&mut tally, &buf[..n], &mut outstanding);
        }
    }
    for _ in 0..MAX_QUERIES {
        match tokio::time::timeout(QUIET, sock.recv_from(&mut buf)).await {
            Ok(received) => {
                let (n, _) = received.expect("a UDP receive");
                book(&mut tally, &buf[..n], &mut outstanding);
            }
            Err(_) => break,
        }
    }
    tally
}

/// A TCP client: one query at a time on a connection, a new connection when the server
/// closes one, until the listener is gone (after the signal) or the process has exited.
async fn tcp_client(client: Client, server: SocketAddr, run: Arc<Run>) -> Tally {
    let mut tally = Tally::default();
    let mut i = 0;
    let deadline = Instant::now() + CLIENT_DEADLINE;
    for _ in 0..MAX_CONNECTIONS {
        if run.exited() || Instant::now() >= deadline || i >= MAX_QUERIES {
            break;
        }
        let connected = tokio::time::timeout(WAIT, TcpStream::connect(server)).await;
        let mut stream = match connected {
            Ok(Ok(stream)) => stream,
            _ if run.signalled() => break, // the listener has closed: the stop is on
            other => panic!("cannot connect before the stop: {other:?}"),
        };
        while !run.exited() && Instant::now() < deadline && i < MAX_QUERIES {
            let name = client.name(i);
            let id = u16::try_from(i).expect("MAX_QUERIES fits an ID");
            i += 1;
            let Some(answer) = tcp_ask(&mut stream, &query(&name, id)).await else {
                break; // closed by the server (the stop): try a new connection
            };
            tally.book(&run, &name, id, &answer);
        }
    }
    tally
}

/// Send one query on `stream` and read its answer; `None` if the connection closes
/// first (or nothing comes within [`WAIT`]).
async fn tcp_ask(stream: &mut TcpStream, query: &[u8]) -> Option<Message> {
    let mut framed = u16::try_from(query.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.ok()?;
    let read = async {
        let len = stream.read_u16().await.ok()?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.ok()?;
        Some(Message::from_vec(&buf).expect("a DNS message"))
    };
    tokio::time::timeout(WAIT, read).await.ok().flatten()
}

// ---- the test ----

/// Wait (bounded) until the flood is under way and the upstream holds a query from a
/// UDP client and one from a TCP client; returns the names it holds then.
fn wait_for_queries_in_flight(
    run: &Run,
    upstream: &SlowUpstream,
    log: &Spawned,
) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let holding = upstream.holding();
        let udp = holding.iter().any(|n| n.starts_with("uc"));
        let tcp = holding.iter().any(|n| n.starts_with("tc"));
        if udp && tcp && run.blocks.load(Ordering::SeqCst) >= FLOOD_BEFORE_SIGNAL {
            return holding;
        }
        assert!(
            Instant::now() < deadline,
            "no flood with queries in flight over UDP and TCP ({} blocks, holding {holding:?}); log:\n{}",
            run.blocks.load(Ordering::SeqCst),
            log.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait (bounded by [`EXIT_BOUND`]) for the child to exit; its status and how long it took.
fn wait_for_exit(warden: &mut Spawned) -> (std::process::ExitStatus, Duration) {
    let signalled = Instant::now();
    loop {
        if let Some(status) = warden.child.try_wait().unwrap() {
            return (status, signalled.elapsed());
        }
        if signalled.elapsed() > EXIT_BOUND {
            let _ = warden.child.kill();
            panic!(
                "warden did not exit within {EXIT_BOUND:?} of SIGTERM; log:\n{}",
                warden.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `sum(count)` over the audit log's rows.
fn audited_blocks(db: &Path) -> u64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("the audit log");
    let sum: i64 = conn
        .query_row("SELECT coalesce(sum(count), 0) FROM events", [], |r| {
            r.get(0)
        })
        .unwrap();
    u64::try_from(sum).unwrap()
}

#[test]
fn sigterm_in_a_flood_answers_the_queries_in_flight_and_the_audit_log_counts_every_block() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (upstream, upstream_addr, _upstream_stop) = runtime.block_on(start_slow_upstream());
    let dir = tempfile::tempdir().unwrap();
    let config = write_drain_config(dir.path(), upstream_addr);
    // Per-block debug lines would only slow the flood down.
    let mut warden = spawn_warden_full(&config, &[("RUST_LOG", "info")]);
    let server = warden.dns;

    let run = Arc::new(Run::default());
    let mut clients = Vec::new();
    for index in 0..3 {
        for (label, cloaked) in [("ul", false), ("uc", true)] {
            let client = Client {
                label,
                index,
                cloaked,
            };
            clients.push(runtime.spawn(udp_client(client, server, run.clone())));
        }
        for (label, cloaked) in [("tl", false), ("tc", true)] {
            let client = Client {
                label,
                index,
                cloaked,
            };
            clients.push(runtime.spawn(tcp_client(client, server, run.clone())));
        }
    }

    let in_flight = wait_for_queries_in_flight(&run, &upstream, &warden);
    // Marked before it is sent: a TCP client refused from now on knows why.
    run.signalled.store(true, Ordering::SeqCst);
    signal(&warden.child, "-TERM");
    let (status, took) = wait_for_exit(&mut warden);
    run.exited.store(true, Ordering::SeqCst);
    let tallies: Vec<Tally> = runtime.block_on(async {
        let mut tallies = Vec::new();
        for client in clients {
            let tally = tokio::time::timeout(CLIENT_DEADLINE, client).await;
            tallies.push(tally.expect("the client ends").expect("the client task"));
        }
        tallies
    });
    let log = warden.log_text();
    assert!(status.success(), "a clean stop: {status:?}; log:\n{log}");

    let blocked: BTreeSet<&String> = tallies.iter().flat_map(|t| &t.blocked).collect();
    let other: Vec<&String> = tallies.iter().flat_map(|t| &t.other).collect();
    assert!(other.is_empty(), "every answer is a block: {other:?}");
    let unanswered: Vec<&String> = in_flight.iter().filter(|n| !blocked.contains(n)).collect();
    assert!(
        unanswered.is_empty(),
        "queries waiting for upstream at the signal are answered: {unanswered:?} of {in_flight:?} were not; log:\n{log}"
    );
    let received = u64::try_from(blocked.len()).unwrap();
    let audited = audited_blocks(&dir.path().join("audit.sqlite"));
    assert_eq!(
        audited, received,
        "sum(count) in the audit log equals the block answers received; log:\n{log}"
    );
    assert!(
        !log.contains("cut off"),
        "nothing cut off by the drain bound; log:\n{log}"
    );
    eprintln!(
        "{received} blocks received and audited; {} in flight at the signal; exit {took:?} after it",
        in_flight.len()
    );
}
