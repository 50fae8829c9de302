//! Shared by the end-to-end tests: an in-test upstream that counts what reaches it,
//! a config writer, a Warden harness on 127.0.0.1:0, and a tiny DNS client.
#![allow(dead_code)] // each test binary uses a different part

pub mod browser;
pub mod dashboard;
pub mod postgres;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, Metadata, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use warden::dns::{self, RunningServer};
use warden::engine::Engine;
use warden::upstream::Forwarder;

pub const WAIT: Duration = Duration::from_secs(5);

// ---- the in-test upstream ----

/// Answers a few fixed names and counts the lookups it receives, by name.
///
/// A lookup is counted once however often it arrives: Warden's resolver resends an
/// unanswered UDP query with the same message ID after 333 ms (more than this
/// upstream's slow answers take on a loaded machine), and that resend is the same
/// question, not a second one Warden asked.
#[derive(Clone, Default)]
pub struct Upstream {
    pub seen: Arc<Mutex<HashMap<String, usize>>>,
    /// The code of every EDNS option any query brought (to show what leaves the site).
    pub options: Arc<Mutex<Vec<u16>>>,
    lookups: Arc<Mutex<std::collections::HashSet<(String, RecordType, u16)>>>,
}

impl Upstream {
    pub fn count(&self, name: &str) -> usize {
        self.seen.lock().unwrap().get(name).copied().unwrap_or(0)
    }
    pub fn total(&self) -> usize {
        self.seen.lock().unwrap().values().sum()
    }
}

pub fn record(name: &str, data: RData) -> Record {
    Record::from_rdata(dns_name(name), 60, data)
}

/// A name from presentation text, where `\032` in a label is a space byte (which
/// `Name::from_ascii` refuses): lets tests send names no list entry can hold.
pub fn dns_name(text: &str) -> Name {
    let labels: Vec<Vec<u8>> = text
        .trim_end_matches('.')
        .split('.')
        .map(|l| l.replace("\\032", " ").into_bytes())
        .collect();
    let mut name = Name::from_labels(labels).unwrap();
    name.set_fqdn(true);
    name
}

#[async_trait::async_trait]
impl RequestHandler for Upstream {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut responder: R,
    ) -> ResponseInfo {
        let info = request.request_info().unwrap();
        let name = info.query.name().to_string().to_lowercase();
        let qtype = info.query.query_type();
        if let Some(edns) = &request.edns {
            let codes = edns.options().options.iter().map(|(c, _)| u16::from(*c));
            self.options.lock().unwrap().extend(codes);
        }
        let lookup = (name.clone(), qtype, request.metadata.id);
        if self.lookups.lock().unwrap().insert(lookup) {
            *self.seen.lock().unwrap().entry(name.clone()).or_default() += 1;
        }
        let a = |ip: [u8; 4]| RData::A(A(Ipv4Addr::from(ip)));
        let cname = |t: &str| RData::CNAME(CNAME(Name::from_ascii(t).unwrap()));
        let answers: Vec<Record> = match (name.as_str(), qtype) {
            ("allowed.test.", RecordType::A) => vec![record("allowed.test.", a([192, 0, 2, 1]))],
            ("allowed.test.", RecordType::AAAA) => vec![record(
                "allowed.test.",
                RData::AAAA(AAAA("2001:db8::1".parse().unwrap())),
            )],
            ("cloaked.test.", _) => vec![
                record("cloaked.test.", cname("edge.cdn.test.")),
                record("edge.cdn.test.", cname("x.tracker.test.")),
                record("x.tracker.test.", a([192, 0, 2, 66])),
            ],
            // A name no list can hold (a space in a label) aliasing a blocked one.
            (n, _) if n.starts_with("odd") && n.ends_with("name.test.") => vec![
                record("odd\\032name.test.", cname("x.tracker.test.")),
                record("x.tracker.test.", a([192, 0, 2, 67])),
            ],
            // An alias whose target holds a byte no list entry can (a space) under a
            // locked name: the chain check must see through it.
            ("hidden-alias.test.", _) => vec![
                record(
                    "hidden-alias.test.",
                    RData::CNAME(CNAME(dns_name("www\\032.locked.test."))),
                ),
                record("www\\032.locked.test.", a([192, 0, 2, 68])),
            ],
            // Public names on internal addresses (DNS rebinding), and the LAN's own.
            ("rebind.test.", RecordType::A) => vec![record(&name, a([192, 168, 1, 1]))],
            ("rebind.test.", RecordType::AAAA) => {
                vec![record(&name, RData::AAAA(AAAA("fd00::1".parse().unwrap())))]
            }
            ("rebind.test.", RecordType::HTTPS) => {
                use hickory_proto::rr::rdata::svcb::{IpHint, SvcParamKey, SvcParamValue, SVCB};
                let hint = IpHint(vec![A(Ipv4Addr::new(192, 168, 1, 1))]);
                let svcb = SVCB::new(
                    1,
                    Name::root(),
                    vec![(SvcParamKey::Ipv4Hint, SvcParamValue::Ipv4Hint(hint))],
                );
                vec![record(
                    &name,
                    RData::HTTPS(hickory_proto::rr::rdata::HTTPS(svcb)),
                )]
            }
            ("router.lan.", RecordType::A) | ("nas.school.example.", RecordType::A) => {
                vec![record(&name, a([10, 0, 0, 2]))]
            }
            ("via-lan.test.", _) => vec![
                record("via-lan.test.", cname("router.lan.")),
                record("router.lan.", a([10, 0, 0, 2])),
            ],
            // The safe-search hosts (addresses as their operators publish them).
            ("forcesafesearch.google.com.", RecordType::A) => {
                vec![record(&name, a([216, 239, 38, 120]))]
            }
            ("restrict.youtube.com.", RecordType::A) => vec![record(&name, a([216, 239, 38, 120]))],
            ("restrictmoderate.youtube.com.", RecordType::A) => {
                vec![record(&name, a([216, 239, 38, 119]))]
            }
            ("strict.bing.com.", RecordType::A) => vec![record(&name, a([204, 79, 197, 220]))],
            ("safe.duckduckgo.com.", RecordType::A) => vec![record(&name, a([52, 142, 124, 215]))],
            ("social.test.", RecordType::A) => vec![record(&name, a([192, 0, 2, 5]))],
            // Answers slowly (for in-flight de-duplication) or expires at once (stale).
            ("slow.test.", RecordType::A) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                vec![record(&name, a([192, 0, 2, 7]))]
            }
            ("short.test.", RecordType::A) => {
                vec![Record::from_rdata(dns_name(&name), 1, a([192, 0, 2, 8]))]
            }
            ("alias.test.", _) => vec![
                record("alias.test.", cname("real.test.")),
                record("real.test.", a([192, 0, 2, 3])),
            ],
            _ => Vec::new(),
        };
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        let soa = record(
            "test.",
            RData::SOA(SOA::new(
                Name::from_ascii("ns.test.").unwrap(),
                Name::from_ascii("host.test.").unwrap(),
                1,
                3600,
                600,
                86400,
                30,
            )),
        );
        let authorities = if answers.is_empty() {
            meta.response_code = if name == "allowed.test." {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
            vec![soa]
        } else {
            Vec::new()
        };
        let response = MessageResponseBuilder::from_message_request(request).build(
            meta,
            answers.iter(),
            authorities.iter(),
            [],
            [],
        );
        responder.send_response(response).await.unwrap()
    }
}

/// How many fresh ports a helper tries before giving up on binding UDP and TCP together.
pub const BIND_ATTEMPTS: usize = 20;

/// A UDP socket and a TCP listener on the same ephemeral 127.0.0.1 port. The kernel
/// picks a port free for UDP; another process may hold it for TCP, so on `AddrInUse`
/// this tries a fresh port (at most [`BIND_ATTEMPTS`] times).
pub async fn bind_udp_and_tcp() -> (UdpSocket, tokio::net::TcpListener) {
    let mut last = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("a UDP port");
        let addr = udp.local_addr().expect("the UDP socket's address");
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => return (udp, tcp),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => panic!("TCP on {addr}: {e}"),
        }
    }
    panic!("no port free for both UDP and TCP in {BIND_ATTEMPTS} tries: {last:?}")
}

/// Start the upstream on 127.0.0.1:0 (UDP and TCP); cancel the token to stop it.
pub async fn start_upstream() -> (Upstream, SocketAddr, CancellationToken) {
    let upstream = Upstream::default();
    let mut server = hickory_server::Server::new(upstream.clone());
    let (udp, tcp) = bind_udp_and_tcp().await;
    let addr = udp.local_addr().unwrap();
    server.register_socket(udp);
    server.register_listener(tcp, WAIT, 16);
    let token = server.shutdown_token().clone();
    tokio::spawn(async move {
        let _ = server.block_until_done().await;
    });
    (upstream, addr, token)
}

// ---- Warden under test ----

pub const ADULT: &str = "blocked.test\n||tracker.test^\n";

pub fn write_config(dir: &Path, upstream: SocketAddr, blocking: &str) -> std::path::PathBuf {
    use sha2::Digest;
    std::fs::write(dir.join("adult.txt"), ADULT).unwrap();
    let hash = hex::encode(sha2::Sha256::digest(b"locked.test"));
    std::fs::write(dir.join("ctiru.txt"), format!("sha256:{hash}\n")).unwrap();
    std::fs::write(dir.join("allow.txt"), "ok.blocked.test\n").unwrap();
    let config = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
[admin]
listen = "127.0.0.1:0"
token_file = "admin.token"
[sources]
cache_dir = "cache"
[upstream]
servers = ["{upstream}"]
timeout = "1s"
[blocking]
{blocking}
[categories.adult]
[categories.terrorism]
locked = true
canary = "locked.test"
[[lists]]
name = "adult"
category = "adult"
path = "adult.txt"
[[lists]]
name = "ctiru"
category = "terrorism"
path = "ctiru.txt"
[[allow]]
name = "exceptions"
path = "allow.txt"
"#
    );
    let path = dir.join("warden.toml");
    std::fs::write(&path, config).unwrap();
    path
}

pub struct Harness {
    pub upstream: Upstream,
    pub warden: SocketAddr,
    pub dir: tempfile::TempDir,
    pub server: Option<RunningServer>,
    pub _upstream_stop: tokio_util::sync::DropGuard,
}

pub async fn harness(blocking: &str) -> Harness {
    let (upstream, upstream_addr, upstream_token) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), upstream_addr, blocking);
    let engine = Engine::load(&path).unwrap();
    let forwarder = Forwarder::new(&engine.config.upstream).unwrap();
    let listen = engine.config.server.listen.clone();
    let handler = dns::Handler::new(Arc::new(ArcSwap::from_pointee(engine)), forwarder);
    let server = dns::start(&listen, handler, WAIT).await.unwrap();
    Harness {
        upstream,
        warden: server.addrs[0],
        dir,
        server: Some(server),
        _upstream_stop: upstream_token.drop_guard(),
    }
}

// ---- a tiny client ----

pub fn query_message(name: &str, qtype: RecordType, edns: bool) -> Message {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(dns_name(name), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        msg.set_edns(e);
    }
    msg
}

pub async fn udp_exchange(server: SocketAddr, bytes: &[u8]) -> Option<Message> {
    udp_exchange_within(server, bytes, WAIT).await
}

pub async fn udp_exchange_within(
    server: SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(bytes, server).await.unwrap();
    reply_to(&sock, server, bytes, wait).await
}

/// The reply on `sock` from `server` to the query `sent` (its ID), within `wait`. Any
/// other datagram is passed over: the port may be one a finished exchange of another
/// test used, and that test's late answer may still arrive on it.
async fn reply_to(
    sock: &UdpSocket,
    server: SocketAddr,
    sent: &[u8],
    wait: Duration,
) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        let ours = sent.len() < 2 || (n >= 2 && buf[..2] == sent[..2]);
        if from == server && ours {
            return Some(Message::from_vec(&buf[..n]).unwrap());
        }
    }
}

/// A query sent from `source` (any loopback address: 127.0.0.2 is a second client).
pub async fn udp_from(
    source: std::net::IpAddr,
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
) -> Message {
    let msg = query_message(name, qtype, true);
    let sock = UdpSocket::bind(SocketAddr::new(source, 0)).await.unwrap();
    let bytes = msg.to_vec().unwrap();
    sock.send_to(&bytes, server).await.unwrap();
    let resp = reply_to(&sock, server, &bytes, WAIT)
        .await
        .expect("an answer in time");
    assert_eq!(resp.metadata.id, msg.metadata.id);
    resp
}

pub async fn udp(server: SocketAddr, name: &str, qtype: RecordType, edns: bool) -> Message {
    let msg = query_message(name, qtype, edns);
    let resp = udp_exchange(server, &msg.to_vec().unwrap())
        .await
        .expect("an answer in time");
    assert_eq!(resp.metadata.id, msg.metadata.id, "the ID is echoed");
    assert_eq!(resp.metadata.message_type, MessageType::Response);
    resp
}

pub async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let msg = query_message(name, qtype, true);
    let bytes = msg.to_vec().unwrap();
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(server))
        .await
        .unwrap()
        .unwrap();
    stream.write_u16(bytes.len() as u16).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let len = tokio::time::timeout(WAIT, stream.read_u16())
        .await
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; len as usize];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    Message::from_vec(&buf).unwrap()
}

pub fn ede(resp: &Message) -> Option<(u16, String)> {
    let edns = resp.edns.as_ref()?;
    match edns.option(EdnsCode::Unknown(15))? {
        EdnsOption::Unknown(15, data) => Some((
            u16::from_be_bytes([data[0], data[1]]),
            String::from_utf8_lossy(&data[2..]).into_owned(),
        )),
        _ => None,
    }
}

pub fn soa_owner(resp: &Message) -> Option<String> {
    resp.authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| r.name.to_string())
}

pub const ALL_TYPES: [RecordType; 8] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::HTTPS,
    RecordType::SVCB,
    RecordType::CNAME,
    RecordType::MX,
    RecordType::TXT,
    RecordType::ANY,
];

/// A `warden serve` child process and what its log said.
pub struct Spawned {
    pub child: std::process::Child,
    pub dns: SocketAddr,
    pub admin: Option<SocketAddr>,
    /// Every log line so far (the reader thread keeps appending).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Spawned {
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// Read the child's log until it names its DNS address (bounded in time), keeping
/// every line.
fn read_log(
    child: &mut std::process::Child,
) -> (
    SocketAddr,
    Option<SocketAddr>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::BufRead;
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = log.clone();
    std::thread::spawn(move || {
        let mut admin = None;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let word_after = |marker: &str| {
                line.split(marker)
                    .nth(1)
                    .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
            };
            if let Some(addr) = word_after("admin HTTP on ") {
                admin = addr.parse::<SocketAddr>().ok();
            }
            if let Some(addr) = word_after("serving DNS on ") {
                let _ = tx.send((addr, admin));
            }
            // `warden fleet serve` answers no DNS: its dashboard's address stands for both.
            if let Some(addr) = word_after("fleet dashboard on http://") {
                let addr = addr.trim_end_matches('/').to_string();
                admin = addr.parse::<SocketAddr>().ok();
                let _ = tx.send((addr, admin));
            }
            lines.lock().unwrap().push(line);
        }
    });
    let (dns, admin) = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "warden says where it listens; log:\n{}",
                log.lock().unwrap().join("\n")
            )
        });
    (dns.parse().unwrap(), admin, log)
}

/// Start the real `warden serve --config CONFIG`; returns it with its DNS address.
pub fn spawn_warden(config: &Path) -> (std::process::Child, SocketAddr) {
    let spawned = spawn_warden_full(config, &[]);
    (spawned.child, spawned.dns)
}

/// Start the real `warden serve --config CONFIG` with extra environment variables.
pub fn spawn_warden_full(config: &Path, env: &[(&str, &str)]) -> Spawned {
    spawn_warden_command(&["serve"], config, env)
}

/// Start the real `warden COMMAND… --config CONFIG` (`serve`, or `fleet serve`: then
/// `dns` is the dashboard's address too) with extra environment variables.
pub fn spawn_warden_command(command: &[&str], config: &Path, env: &[(&str, &str)]) -> Spawned {
    spawn_binary(
        Path::new(env!("CARGO_BIN_EXE_warden")),
        command,
        config,
        env,
    )
}

/// [`spawn_warden_command`] with another build of Warden (the skew test's previous
/// release).
pub fn spawn_binary(
    binary: &Path,
    command: &[&str],
    config: &Path,
    env: &[(&str, &str)],
) -> Spawned {
    use std::process::{Command, Stdio};
    let mut command_line = Command::new(binary);
    let command = command_line
        .args(command)
        .args(["--config", config.to_str().unwrap()])
        .env(
            "RUST_LOG",
            "debug,hickory_server=warn,hickory_proto=warn,hickory_resolver=warn,hickory_net=warn",
        )
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    // If the test's thread ends without stopping it (a failed assertion), the kernel
    // sends it SIGTERM: a failing test leaves no daemon behind.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let (dns, admin, log) = read_log(&mut child);
    Spawned {
        child,
        dns,
        admin,
        log,
    }
}

/// One HTTP client for the tests (reqwest, blocking: call it from sync code): loopback
/// only, no proxy, redirects not followed (tests assert them), bounded in time. No idle
/// connections are kept: a request on a kept connection that the server is just closing
/// fails, and each test's server is gone (its port perhaps reused) when the next starts.
pub fn http_client() -> &'static reqwest::blocking::Client {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client")
    })
}

/// GET or POST over plain HTTP on loopback (bounded in time); status and body.
pub fn http(method: &str, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let reply = dashboard::send(method, addr, path, |mut request| {
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request
    });
    (reply.status, reply.body)
}

/// `warden reload --config PATH` must succeed; its standard output.
pub fn cli_reload(config: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["reload", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Send `signal` (e.g. "-HUP") to the child.
/// Sent with kill(2), not the `kill` program, which a minimal machine may not have.
pub fn signal(child: &std::process::Child, signal: &str) {
    let number = match signal {
        "-HUP" => libc::SIGHUP,
        "-INT" => libc::SIGINT,
        "-TERM" => libc::SIGTERM,
        "-KILL" => libc::SIGKILL,
        "-USR1" => libc::SIGUSR1,
        other => panic!("signal {other}: not one the tests send"),
    };
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
    let sent = unsafe { libc::kill(pid, number) };
    assert_eq!(
        sent,
        0,
        "kill {signal} {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// SIGTERM the child and wait (at most 10 s) for it to exit; returns its status.
pub fn stop_warden(child: std::process::Child) -> std::process::ExitStatus {
    stop_warden_logged(child, None)
}

/// [`stop_warden`], showing the end of `log` (the child's stderr as read so far) if it
/// does not stop: its last lines say where the stop hung.
pub fn stop_warden_logged(
    mut child: std::process::Child,
    log: Option<&std::sync::Mutex<Vec<String>>>,
) -> std::process::ExitStatus {
    signal(&child, "-TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let tail = log.map_or_else(String::new, |log| {
                let lines = log.lock().unwrap();
                lines[lines.len().saturating_sub(40)..].join("\n")
            });
            let _ = child.kill();
            panic!("warden did not stop on SIGTERM; the end of its log:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A list feed on 127.0.0.1 for URL-source tests: serves `body` with an ETag, answers
/// 304 to a matching If-None-Match, 401 without the expected Authorization header, 500
/// when told to fail, and records every request's head.
#[derive(Clone, Default)]
pub struct Feed {
    pub state: std::sync::Arc<std::sync::Mutex<FeedState>>,
}

#[derive(Default)]
pub struct FeedState {
    pub body: Vec<u8>,
    pub etag: String,
    pub auth: Option<String>,
    pub fail: bool,
    pub requests: Vec<String>,
}

impl Feed {
    /// Start serving on an ephemeral loopback port (a thread that lives with the test).
    pub fn start(body: &str, auth: Option<&str>) -> (Feed, SocketAddr) {
        let feed = Feed::default();
        feed.set_body(body);
        feed.state.lock().unwrap().auth = auth.map(str::to_string);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = feed.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                served.answer(stream);
            }
        });
        (feed, addr)
    }

    pub fn set_body(&self, body: &str) {
        let mut state = self.state.lock().unwrap();
        state.body = body.as_bytes().to_vec();
        state.etag = format!("\"v{}\"", body.len());
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    fn answer(&self, mut stream: std::net::TcpStream) {
        use std::io::Write;
        let head = read_request_head(&stream);
        let lower = head.to_ascii_lowercase();
        let mut state = self.state.lock().unwrap();
        state.requests.push(head.clone());
        let header = |name: &str| {
            lower.lines().find_map(|l| {
                l.strip_prefix(&format!("{name}: "))
                    .map(|v| v.trim().to_string())
            })
        };
        let (status, body): (&str, Vec<u8>) = if state.fail {
            ("500 Internal Server Error", b"down".to_vec())
        } else if state.auth.as_ref().is_some_and(|want| {
            header("authorization").as_deref() != Some(&want.to_ascii_lowercase())
        }) {
            ("401 Unauthorized", b"who are you".to_vec())
        } else if header("if-none-match").as_deref() == Some(&state.etag.to_ascii_lowercase()) {
            ("304 Not Modified", Vec::new())
        } else {
            ("200 OK", state.body.clone())
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nETag: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            state.etag,
            body.len()
        );
        let _ = stream.write_all(response.as_bytes());
        let _ = stream.write_all(&body);
    }
}

/// An HTTP request's head (request line and headers, up to the blank line), read from a
/// test server's accepted `stream` with a bounded wait; the body is left unread.
pub fn read_request_head(stream: &std::net::TcpStream) -> String {
    use std::io::BufRead;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    head
}
