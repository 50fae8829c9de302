//! A reload applies what it can, and says what it cannot: against the real `warden
//! serve`, a reload that changes `[upstream] servers` asks the new servers (and one that
//! leaves `[upstream]` alone keeps the forwarder and its cache); a lowered rate limit, a
//! narrowed `allow_networks` and a lowered `tcp_connections_per_client` are enforced from
//! the next query or connection; and a change to `[server] listen` or `[admin] listen`,
//! which only a restart applies, is reported in the reload's answer, in `warden
//! reload`'s output, in the log and in `/metrics`, while the process keeps serving on
//! its old addresses (and the report clears once the file agrees again).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

/// A running `warden serve` whose config file the test edits and then reloads.
struct Daemon {
    warden: Spawned,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Serve the common test config (upstream `upstream`) with `extra` appended. No
    /// file watcher: only the test's `POST /reload` reloads.
    fn start(upstream: SocketAddr, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), upstream, "");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str("[reload]\nwatch_files = false\n[audit]\nenabled = false\n");
        text.push_str(extra);
        std::fs::write(&config, text).unwrap();
        let warden = spawn_warden_full(&config, &[]);
        Daemon {
            warden,
            config,
            dir,
        }
    }

    fn admin(&self) -> SocketAddr {
        self.warden
            .admin
            .expect("the admin listener's address in the log")
    }

    /// Replace `from` (which must be there) by `to` in the config file.
    fn edit(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "{from:?} in\n{text}");
        std::fs::write(&self.config, text.replacen(from, to, 1)).unwrap();
    }

    /// `POST /reload`, which must succeed; its JSON answer.
    fn reload(&self) -> Value {
        let (status, body) = post_reload(self.admin(), self.dir.path());
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn metrics(&self) -> String {
        http("GET", self.admin(), "/metrics", &[]).1
    }

    /// Wait (bounded) for a log line containing `text`.
    fn logged(&self, text: &str) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.warden.log_text().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn stop(self) {
        assert!(stop_warden(self.warden.child).success());
    }
}

fn post_reload(admin: SocketAddr, dir: &Path) -> (u16, String) {
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    http("POST", admin, "/reload", &[("Authorization", &bearer)])
}

fn rcode(runtime: &Runtime, dns: SocketAddr, name: &str) -> ResponseCode {
    let answer = runtime.block_on(udp(dns, name, RecordType::A, true));
    answer.metadata.response_code
}

/// The value of the series written exactly `series` in a `/metrics` text.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_changed_upstream_is_asked_from_the_next_query_and_an_unchanged_one_keeps_its_cache() {
    let runtime = Runtime::new().unwrap();
    let (a, a_addr, _a_stop) = runtime.block_on(start_upstream());
    let (b, b_addr, _b_stop) = runtime.block_on(start_upstream());
    let daemon = Daemon::start(a_addr, "");
    let dns = daemon.warden.dns;
    assert_eq!(rcode(&runtime, dns, "allowed.test."), ResponseCode::NoError);
    assert_eq!((a.count("allowed.test."), b.total()), (1, 0));

    daemon.edit(
        &format!("servers = [\"{a_addr}\"]"),
        &format!("servers = [\"{b_addr}\"]"),
    );
    let asked_a = a.total();
    let reply = daemon.reload();
    // A name never asked before, and one A answered before (its answer is in A's
    // forwarder's cache, not in the new one's): both go to B now.
    let answer = runtime.block_on(udp(dns, "alias.test.", RecordType::A, true));
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(!answer.answers.is_empty(), "{answer:?}");
    assert_eq!(rcode(&runtime, dns, "allowed.test."), ResponseCode::NoError);
    assert_eq!(b.count("alias.test."), 1);
    assert_eq!(b.count("allowed.test."), 1);
    assert_eq!(a.total(), asked_a, "A is asked no more");
    assert_eq!(reply["upstream_rebuilt"], true, "{reply}");
    assert_eq!(reply["restart_needed"], json!([]), "{reply}");

    // A reload that leaves [upstream] as it is keeps the forwarder, cache and all.
    daemon.edit("[blocking]\n", "[blocking]\nttl = 301\n");
    let reply = daemon.reload();
    assert_eq!(reply["upstream_rebuilt"], false, "{reply}");
    assert_eq!(rcode(&runtime, dns, "allowed.test."), ResponseCode::NoError);
    assert_eq!(b.count("allowed.test."), 1, "answered from the kept cache");
    daemon.stop();
}

#[test]
fn a_lowered_rate_limit_applies_from_the_next_query() {
    let runtime = Runtime::new().unwrap();
    let (_up, up_addr, _stop) = runtime.block_on(start_upstream());
    let daemon = Daemon::start(up_addr, "[server.rate_limit]\nqps = 0\n");
    let dns = daemon.warden.dns;
    // No limit: twenty blocked names in a row are all answered as blocks.
    for _ in 0..20 {
        assert_eq!(
            rcode(&runtime, dns, "blocked.test."),
            ResponseCode::NXDomain
        );
    }
    daemon.edit("qps = 0\n", "qps = 1\nburst = 3\n");
    daemon.reload();
    // Three at once, then one a second: of twenty sent within a second or two, most
    // are refused.
    let started = Instant::now();
    let refused = (0..20)
        .filter(|_| rcode(&runtime, dns, "blocked.test.") == ResponseCode::Refused)
        .count();
    let refilled = started.elapsed().as_secs() as usize + 1;
    assert!(refused >= 20 - 3 - refilled, "{refused} refused");
    // The action follows too: over the limit, `drop` sends nothing.
    daemon.edit("burst = 3\n", "burst = 3\naction = \"drop\"\n");
    daemon.reload();
    let query = query_message("blocked.test.", RecordType::A, true)
        .to_vec()
        .unwrap();
    let dropped = (0..10).any(|_| {
        let wait = Duration::from_millis(300);
        runtime
            .block_on(udp_exchange_within(dns, &query, wait))
            .is_none()
    });
    assert!(dropped, "an over-limit query gets no answer");
    daemon.stop();
}

#[test]
fn narrowed_allow_networks_refuse_the_client_after_a_reload() {
    let runtime = Runtime::new().unwrap();
    let (up, up_addr, _stop) = runtime.block_on(start_upstream());
    let daemon = Daemon::start(up_addr, "");
    let dns = daemon.warden.dns;
    assert_eq!(rcode(&runtime, dns, "allowed.test."), ResponseCode::NoError);
    let listen = "listen = [\"127.0.0.1:0\"]\n";
    daemon.edit(
        listen,
        &format!("{listen}allow_networks = [\"10.0.0.0/8\"]\n"),
    );
    daemon.reload();
    let asked = up.total();
    for name in ["allowed.test.", "alias.test.", "blocked.test."] {
        assert_eq!(rcode(&runtime, dns, name), ResponseCode::Refused, "{name}");
    }
    let answer = runtime.block_on(tcp(dns, "alias.test.", RecordType::A));
    assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
    assert_eq!(up.total(), asked, "nothing from outside is forwarded");
    daemon.stop();
}

/// A TCP connection to `server` from `source` (a loopback address: each is a client).
async fn connect_from(source: IpAddr, server: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    tokio::time::timeout(WAIT, socket.connect(server))
        .await
        .expect("connected in time")
        .unwrap()
}

/// Ask `name` on an open connection; `None` if the connection is closed unanswered.
async fn ask(stream: &mut tokio::net::TcpStream, name: &str) -> Option<Message> {
    let bytes = query_message(name, RecordType::A, true).to_vec().unwrap();
    let length = u16::try_from(bytes.len()).unwrap().to_be_bytes();
    stream.write_all(&length).await.ok()?;
    stream.write_all(&bytes).await.ok()?;
    let read = async {
        let length = stream.read_u16().await.ok()?;
        let mut answer = vec![0; usize::from(length)];
        stream.read_exact(&mut answer).await.ok()?;
        Message::from_vec(&answer).ok()
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("an answer or a close in time")
}

#[test]
fn a_lowered_tcp_connections_per_client_applies_to_the_next_connection() {
    let runtime = Runtime::new().unwrap();
    let (_up, up_addr, _stop) = runtime.block_on(start_upstream());
    let daemon = Daemon::start(up_addr, "");
    let dns = daemon.warden.dns;
    // Three connections each (held open) from two clients: under the default cap.
    let (first, second): (IpAddr, IpAddr) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
    let mut held: Vec<_> = runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut stream = connect_from(first, dns).await;
            assert!(ask(&mut stream, "blocked.test.").await.is_some());
            held.push(stream);
        }
        held
    });
    let listen = "listen = [\"127.0.0.1:0\"]\n";
    daemon.edit(listen, &format!("{listen}tcp_connections_per_client = 2\n"));
    daemon.reload();
    runtime.block_on(async {
        // The second client: two connections, and a third is closed unanswered.
        let mut two = Vec::new();
        for _ in 0..2 {
            let mut stream = connect_from(second, dns).await;
            let answer = ask(&mut stream, "blocked.test.").await;
            assert!(answer.is_some(), "within the new cap");
            two.push(stream);
        }
        let mut third = connect_from(second, dns).await;
        assert!(
            ask(&mut third, "blocked.test.").await.is_none(),
            "over the new cap"
        );
        // The first client's connections stay open (and answered), but it gets no
        // new one while it holds more than the new cap.
        assert!(ask(&mut held[0], "blocked.test.").await.is_some());
        let mut more = connect_from(first, dns).await;
        assert!(ask(&mut more, "blocked.test.").await.is_none());
    });
    drop(held);
    daemon.stop();
}

#[test]
fn listen_addresses_need_a_restart_and_the_reload_says_so_everywhere() {
    let runtime = Runtime::new().unwrap();
    let (_up, up_addr, _stop) = runtime.block_on(start_upstream());
    let daemon = Daemon::start(up_addr, "");
    let (dns, admin) = (daemon.warden.dns, daemon.admin());
    let original = std::fs::read_to_string(&daemon.config).unwrap();
    let blocks = |runtime: &Runtime| {
        let answer = runtime.block_on(udp(dns, "now-blocked.test.", RecordType::A, true));
        ede(&answer).is_some()
    };
    assert!(!blocks(&runtime));

    // New listen addresses (what a restart would bind), and a new list entry (what
    // the reload applies).
    daemon.edit(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.2:5399\"]",
    );
    daemon.edit("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.2:8099\"");
    let list = daemon.dir.path().join("adult.txt");
    std::fs::write(&list, format!("{ADULT}now-blocked.test\n")).unwrap();
    let reply = daemon.reload();
    let wanted = json!(["[server] listen", "[admin] listen"]);
    assert_eq!(reply["restart_needed"], wanted, "{reply}");
    assert_eq!(reply["ok"], true);
    assert!(blocks(&runtime), "the rest applied");
    // Still serving on the old addresses (the admin listener too: `metrics` below).
    assert_eq!(rcode(&runtime, dns, "allowed.test."), ResponseCode::NoError);
    for setting in ["[server] listen", "[admin] listen"] {
        let warning = format!("restart needed for {setting}");
        assert!(
            daemon.logged(&warning),
            "{warning}:\n{}",
            daemon.warden.log_text()
        );
        let series = format!("warden_restart_needed{{setting=\"{setting}\"}}");
        assert_eq!(sample(&daemon.metrics(), &series), Some(1.0), "{series}");
    }
    let warn_line = daemon.warden.log_text();
    let warn_line = warn_line
        .lines()
        .find(|l| l.contains("restart needed for [server] listen"));
    assert!(
        warn_line.is_some_and(|l| l.contains("WARN")),
        "{warn_line:?}"
    );

    // `warden reload` prints the same (given the admin listener's real address).
    let cli = daemon.dir.path().join("cli.toml");
    let edited = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &cli,
        edited.replace("\"127.0.0.2:8099\"", &format!("\"{admin}\"")),
    )
    .unwrap();
    let stdout = common::cli_reload(&cli);
    assert!(stdout.starts_with("reloaded: snapshot 3"), "{stdout}");
    for setting in ["[server] listen", "[admin] listen"] {
        assert!(
            stdout.contains(&format!("restart needed for {setting}")),
            "{stdout}"
        );
    }

    // The file put back: nothing needs a restart, and the gauges say 0.
    std::fs::write(&daemon.config, &original).unwrap();
    let reply = daemon.reload();
    assert_eq!(reply["restart_needed"], json!([]), "{reply}");
    let metrics = daemon.metrics();
    for setting in ["[server] listen", "[admin] listen"] {
        let series = format!("warden_restart_needed{{setting=\"{setting}\"}}");
        assert_eq!(sample(&metrics, &series), Some(0.0), "{series}: {metrics}");
    }
    daemon.stop();
}
