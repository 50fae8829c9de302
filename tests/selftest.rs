//! The self-test through the real `warden serve`: it passes on a sound config without a
//! row in the audit log, a count in the block metrics or a refusal by the rate limit; a
//! list emptied by a refused reload fails nothing; a category whose canary is gone from
//! its list, and a group that stops blocking a category required of it, fail the next
//! run: `warden_selftest_ok` goes to 0, the lead gets a notice on the webhook (recorded
//! in `alert_deliveries`), and `warden selftest` exits 1.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;
use warden::alerts::db;
use warden::audit::Store;

/// Long enough for a loaded 2-core machine; every wait ends as soon as it can.
const LIMIT: Duration = Duration::from_secs(30);

/// A webhook receiver on loopback: answers 200 and keeps each JSON body.
#[derive(Clone, Default)]
struct Hook {
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Hook {
    fn start() -> (Hook, SocketAddr) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hook = Hook::default();
        let kept = hook.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                kept.answer(stream);
            }
        });
        (hook, addr)
    }

    fn answer(&self, mut stream: std::net::TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(json) = serde_json::from_slice(&body) {
            self.bodies.lock().unwrap().push(json);
        }
        let _ =
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }

    fn texts(&self) -> Vec<String> {
        let bodies = self.bodies.lock().unwrap();
        bodies
            .iter()
            .map(|b| b["text"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// The common lists, with `blocked.test` as the adult category's canary, two groups
/// (`default` must block adult; `staff` blocks nothing of its own), a tight rate limit
/// (the self-test is not subject to it), alerts to `hook`, and a self-test every second.
fn config(dir: &Path, upstream: SocketAddr, hook: SocketAddr, default_blocks: &str) {
    let path = write_config(dir, upstream, "");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace(
            "[categories.adult]\n",
            "[categories.adult]\ncanary = \"blocked.test\"\n",
        )
        .replace(
            "path = \"adult.txt\"\n",
            "path = \"adult.txt\"\nmin_entries = 1\n",
        );
    let text = format!(
        "{text}
[groups.default]
block = [{default_blocks}]
required = [\"adult\"]
[groups.staff]
[[clients]]
cidr = \"127.0.0.9\"
group = \"staff\"
[audit]
path = \"audit.sqlite\"
flush_interval = \"100ms\"
[alerts]
webhook = \"http://{hook}/hook\"
poll_interval = \"200ms\"
retry_backoff = \"200ms\"
retry_for = \"1m\"
[selftest]
interval = \"1s\"
timeout = \"2s\"
[server.rate_limit]
qps = 1.0
burst = 1.0
"
    );
    std::fs::write(&path, text).unwrap();
}

/// The config as a command beside the daemon reads it: the same, with the admin
/// listener's real address (the daemon's says port 0).
fn cli_config(dir: &Path, admin: SocketAddr) -> std::path::PathBuf {
    let text = std::fs::read_to_string(dir.join("warden.toml")).unwrap();
    let from = "[admin]\nlisten = \"127.0.0.1:0\"";
    assert!(text.contains(from));
    let cli = dir.join("cli.toml");
    std::fs::write(
        &cli,
        text.replace(from, &format!("[admin]\nlisten = \"{admin}\"")),
    )
    .unwrap();
    cli
}

/// `warden selftest`, asking the daemon in `dir`: its exit code and output.
fn cli_selftest(dir: &Path, admin: SocketAddr) -> (i32, String) {
    let config = cli_config(dir, admin);
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["selftest", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// The value of `warden_selftest_ok` for (group, category), if the metric has it.
fn selftest_ok(warden: &Spawned, group: &str, category: &str) -> Option<f64> {
    let (_, text) = http("GET", warden.admin.unwrap(), "/metrics", &[]);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    scrape.samples.iter().find_map(|s| {
        let labels = &s.labels;
        let wanted = s.metric == "warden_selftest_ok"
            && labels.get("group") == Some(group)
            && labels.get("category") == Some(category);
        match (wanted, &s.value) {
            (true, prometheus_parse::Value::Gauge(v)) => Some(*v),
            _ => None,
        }
    })
}

/// Wait (bounded) until `done` holds; `what` says what was awaited.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Rows in the audit log's events table.
fn events(dir: &Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("audit.sqlite")).unwrap();
    conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap()
}

/// `warden_blocks_total` summed over its series.
fn blocks_total(warden: &Spawned) -> f64 {
    let (_, text) = http("GET", warden.admin.unwrap(), "/metrics", &[]);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "warden_blocks_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn a_broken_category_fails_the_next_self_test_alerts_and_the_cli_exits_1() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_upstream, upstream_addr, _stop) = runtime.block_on(start_upstream());
    let (hook, hook_addr) = Hook::start();
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), upstream_addr, hook_addr, "\"adult\"");
    let path = dir.path().join("warden.toml");
    let warden = spawn_warden_full(&path, &[]);
    let admin = warden.admin.unwrap();

    // A sound config passes, for every group and the locked category too (staff block
    // it though they block nothing of their own)…
    wait_until("the first self-test", || {
        selftest_ok(&warden, "default", "adult") == Some(1.0)
    });
    for (group, category) in [("default", "terrorism"), ("staff", "terrorism")] {
        assert_eq!(
            selftest_ok(&warden, group, category),
            Some(1.0),
            "{group} {category}"
        );
    }
    assert_eq!(
        selftest_ok(&warden, "staff", "adult"),
        None,
        "not required of staff"
    );
    let (code, out) = cli_selftest(dir.path(), admin);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(" checks pass") && !out.contains("FAIL"),
        "{out}"
    );
    // …without a row in the audit log or a count in the block metrics (the writer
    // flushes every 100 ms: a real block shows in both, so the absence means something).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        events(dir.path()),
        0,
        "the self-test's blocks are not recorded"
    );
    assert_eq!(blocks_total(&warden), 0.0);
    let answer = runtime.block_on(udp(warden.dns, "blocked.test", RecordType::A, true));
    assert!(ede(&answer).is_some(), "a device's block");
    wait_until("the device's block in the audit log", || {
        events(dir.path()) == 1
    });
    assert_eq!(blocks_total(&warden), 1.0);
    assert!(
        hook.texts().is_empty(),
        "no notice while every check passes"
    );

    // A list emptied by a reload that is refused (min_entries) keeps the last good copy:
    // nothing fails.
    std::fs::write(dir.path().join("adult.txt"), "").unwrap();
    let cli = cli_config(dir.path(), admin);
    let refused = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["reload", "--config", cli.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "the emptied list is refused");
    let (code, out) = cli_selftest(dir.path(), admin);
    assert_eq!(code, 0, "{out}");

    // A list replaced by one that loads but lacks the canary: the next run fails it.
    std::fs::write(dir.path().join("adult.txt"), "other.test\n").unwrap();
    cli_reload(&cli_config(dir.path(), admin));
    let (code, out) = cli_selftest(dir.path(), admin);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL default / adult (blocked.test): not blocked"),
        "{out}"
    );
    assert_eq!(selftest_ok(&warden, "default", "adult"), Some(0.0));
    assert_eq!(selftest_ok(&warden, "default", "terrorism"), Some(1.0));
    wait_until("the notice of the missing canary", || {
        hook.texts()
            .iter()
            .any(|t| t.contains("default / adult (blocked.test)"))
    });

    // The canary back, but the group no longer blocks the category required of it.
    std::fs::write(dir.path().join("adult.txt"), ADULT).unwrap();
    config(dir.path(), upstream_addr, hook_addr, "");
    cli_reload(&cli_config(dir.path(), admin));
    let (code, out) = cli_selftest(dir.path(), admin);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL default / adult: group \"default\" does not block \"adult\" now"),
        "{out}"
    );
    assert_eq!(selftest_ok(&warden, "default", "adult"), Some(0.0));
    wait_until("the notice of the category no longer blocked", || {
        hook.texts()
            .iter()
            .any(|t| t.contains("does not block \"adult\""))
    });
    // Each new failure was told once, and every delivery is recorded for the review.
    let notices = hook.texts();
    assert_eq!(notices.len(), 2, "{notices:#?}");
    // The delivery is recorded once the webhook has answered: the hook may hold the
    // text a moment before the row is written.
    let store = Store::open(&dir.path().join("audit.sqlite")).unwrap();
    let delivered = || {
        db::deliveries(&store)
            .unwrap()
            .into_iter()
            .filter(|a| a.kind == "selftest" && a.result == "ok")
            .count()
    };
    wait_until("both notices recorded as delivered", || delivered() >= 2);
    let recorded = db::deliveries(&store).unwrap();
    assert_eq!(delivered(), 2, "{recorded:#?}");
    stop_warden(warden.child);
}
