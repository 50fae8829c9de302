//! Alerts through the real `warden serve`, delivered to a webhook receiver and an SMTP
//! sink on 127.0.0.1: a terrorism block alerts on both, repeats wait for one digest, a
//! non-alerting category sends nothing, a receiver that is down is retried and counted
//! in `/metrics` until it is back, and a restart neither repeats nor loses an alert.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use warden::alerts::db::{self, Attempt};
use warden::audit::Store;

/// Long enough for a loaded 2-core machine; every wait below ends as soon as it can.
const LIMIT: Duration = Duration::from_secs(20);

// ---- the receivers ----

/// A webhook receiver: answers 200 to every request and keeps each body.
#[derive(Clone, Default)]
struct Hook {
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Hook {
    fn start(runtime: &Runtime, addr: SocketAddr) -> (Hook, SocketAddr) {
        let listener = runtime.block_on(TcpListener::bind(addr)).unwrap();
        Hook::serve(runtime, listener)
    }

    /// Answer on `listener` (already bound, perhaps long before).
    fn serve(runtime: &Runtime, listener: TcpListener) -> (Hook, SocketAddr) {
        let addr = listener.local_addr().unwrap();
        let hook = Hook::default();
        let served = hook.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(served.clone().answer(stream));
            }
        });
        (hook, addr)
    }

    async fn answer(self, mut stream: TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
        self.heads.lock().unwrap().push(head);
        self.bodies.lock().unwrap().push(body);
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().unwrap().clone()
    }
}

/// An SMTP sink speaking just enough SMTP for one plain-text client; keeps each message.
#[derive(Clone, Default)]
struct Smtp {
    messages: Arc<Mutex<Vec<String>>>,
}

impl Smtp {
    fn start(runtime: &Runtime) -> (Smtp, SocketAddr) {
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let smtp = Smtp::default();
        let served = smtp.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(served.clone().session(stream));
            }
        });
        (smtp, addr)
    }

    async fn session(self, stream: TcpStream) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let _ = write.write_all(b"220 sink.test ESMTP\r\n").await;
        while let Ok(Ok(Some(line))) = tokio::time::timeout(WAIT, lines.next_line()).await {
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 sink.test\r\n",
                "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
                "DATA" => {
                    let _ = write.write_all(b"354 go ahead\r\n").await;
                    let mut message = String::new();
                    while let Ok(Ok(Some(line))) =
                        tokio::time::timeout(WAIT, lines.next_line()).await
                    {
                        if line == "." {
                            break;
                        }
                        message.push_str(&line);
                        message.push('\n');
                    }
                    self.messages.lock().unwrap().push(message);
                    b"250 queued\r\n"
                }
                "QUIT" => {
                    let _ = write.write_all(b"221 bye\r\n").await;
                    return;
                }
                _ => b"502 not here\r\n",
            };
            if write.write_all(reply).await.is_err() {
                return;
            }
        }
    }

    /// The messages, with quoted-printable soft line breaks undone.
    fn messages(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.replace("=\n", ""))
            .collect()
    }
}

// ---- Warden with alerts ----

/// A config with the common lists, an audit log in `dir`, a device name for
/// 127.0.0.2, and `alerts` as the `[alerts]` table (fast polls and retries).
fn config(dir: &Path, upstream: SocketAddr, alerts: &str) -> std::path::PathBuf {
    let path = write_config(dir, upstream, "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        r#"
[[clients]]
cidr = "127.0.0.2"
group = "default"
name = "ipad-3"
[audit]
path = "audit.sqlite"
flush_interval = "100ms"
[alerts]
poll_interval = "200ms"
retry_backoff = "200ms"
retry_for = "1m"
{alerts}
"#
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn email(smtp: SocketAddr) -> String {
    format!(
        "[alerts.email]\nhost = \"127.0.0.1\"\nport = {}\nstarttls = \"none\"\n\
         from = \"Warden <warden@school.test>\"\nto = [\"lead@school.test\"]\n",
        smtp.port()
    )
}

/// Block `name` for `client` (127.0.0.1 or 127.0.0.2).
fn block(runtime: &Runtime, warden: &Spawned, client: &str, name: &str) {
    let client: IpAddr = client.parse().unwrap();
    let answer = runtime.block_on(udp_from(client, warden.dns, name, RecordType::A));
    assert_eq!(
        answer.metadata.response_code,
        ResponseCode::NXDomain,
        "{name}"
    );
}

/// Wait (at most `limit`) until `check` gives a value; on timeout fail with the log.
fn wait_for<T>(
    warden: &Spawned,
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{}",
            warden.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One series' value from `/metrics` (0 when absent).
fn metric(warden: &Spawned, series: &str) -> f64 {
    let (status, body) = http("GET", warden.admin.unwrap(), "/metrics", &[]);
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn names(body: &serde_json::Value) -> Vec<String> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

fn deliveries(dir: &Path) -> Vec<Attempt> {
    db::deliveries(&Store::open(&dir.join("audit.sqlite")).unwrap()).unwrap()
}

#[test]
fn a_terrorism_block_alerts_by_webhook_and_email_and_repeats_wait_for_one_digest() {
    let runtime = Runtime::new().unwrap();
    let (_upstream, upstream_addr, _stop) = runtime.block_on(start_upstream());
    let (hook, hook_addr) = Hook::start(&runtime, "127.0.0.1:0".parse().unwrap());
    let (smtp, smtp_addr) = Smtp::start(&runtime);
    let dir = tempfile::tempdir().unwrap();
    let alerts = format!(
        "webhook = \"http://{hook_addr}/hooks/warden\"\nrate_window = \"4s\"\n{}",
        email(smtp_addr)
    );
    let path = config(dir.path(), upstream_addr, &alerts);
    let warden = spawn_warden_full(&path, &[]);

    block(&runtime, &warden, "127.0.0.1", "a.locked.test.");
    let first = wait_for(&warden, "the first webhook alert", LIMIT, || {
        hook.bodies().first().cloned()
    });
    assert_eq!(first["kind"], "alert");
    assert_eq!(first["category"], "terrorism");
    assert_eq!(first["client_ip"], "127.0.0.1");
    assert_eq!(names(&first), ["a.locked.test"]);
    let event = &first["events"][0];
    assert_eq!(event["categories"], "terrorism");
    assert_eq!(event["list"], "ctiru");
    assert_eq!(
        event["link"],
        format!("/events/{}", event["id"].as_i64().unwrap())
    );
    let mail = wait_for(&warden, "the first email", LIMIT, || {
        smtp.messages().first().cloned()
    });
    assert!(
        mail.contains("Subject: Warden alert: terrorism block on 127.0.0.1")
            && mail.contains("To: lead@school.test")
            && mail.contains("What was blocked:  a.locked.test"),
        "{mail}"
    );

    // Within the window: two more from the same device are held; another device gets
    // its own alert at once; an adult block (not an alerting category) sends nothing.
    block(&runtime, &warden, "127.0.0.1", "b.locked.test.");
    block(&runtime, &warden, "127.0.0.1", "c.locked.test.");
    block(&runtime, &warden, "127.0.0.1", "www.blocked.test.");
    block(&runtime, &warden, "127.0.0.2", "x.locked.test.");
    let second = wait_for(&warden, "the second device's alert", LIMIT, || {
        hook.bodies().get(1).cloned()
    });
    assert_eq!(
        (second["kind"].as_str(), second["client_ip"].as_str()),
        (Some("alert"), Some("127.0.0.2")),
        "{second}"
    );
    assert_eq!(second["device"], "ipad-3");
    assert_eq!(names(&second), ["x.locked.test"]);

    let digest = wait_for(&warden, "the digest", LIMIT, || {
        hook.bodies().get(2).cloned()
    });
    assert_eq!(
        (digest["kind"].as_str(), digest["client_ip"].as_str()),
        (Some("digest"), Some("127.0.0.1")),
        "{digest}"
    );
    // Both, in the order they happened (here, possibly within one millisecond).
    let mut held = names(&digest);
    held.sort();
    assert_eq!(held, ["b.locked.test", "c.locked.test"]);
    let mails = wait_for(&warden, "three emails", LIMIT, || {
        Some(smtp.messages()).filter(|m| m.len() >= 3)
    });
    let summary = mails
        .iter()
        .find(|m| m.contains("Subject: Warden alert summary: 2 more terrorism blocks on 127.0.0.1"))
        .unwrap_or_else(|| panic!("no digest email in {mails:#?}"));
    assert!(summary.contains("b.locked.test") && summary.contains("c.locked.test"));

    // Nothing more: one message per key per window, nothing for the adult block.
    std::thread::sleep(Duration::from_millis(1000));
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 3, "{bodies:#?}");
    assert!(bodies
        .iter()
        .all(|b| !b.to_string().contains("blocked.test\"")));
    assert_eq!(smtp.messages().len(), 3);
    assert_eq!(
        metric(
            &warden,
            r#"warden_alert_deliveries_total{channel="webhook",result="ok"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &warden,
            r#"warden_alert_deliveries_total{channel="email",result="ok"}"#
        ),
        3.0
    );
    assert_eq!(metric(&warden, "warden_alerts_pending"), 0.0);
    assert!(stop_warden(warden.child).success());

    let rows = deliveries(dir.path());
    assert_eq!(rows.len(), 6, "{rows:#?}");
    assert!(rows.iter().all(|r| r.result == "ok" && r.attempt == 1));
    let kinds: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.channel.as_str(), r.kind.as_str()))
        .collect();
    for want in [
        ("webhook", "digest"),
        ("email", "digest"),
        ("email", "alert"),
    ] {
        assert!(kinds.contains(&want), "{want:?} not in {kinds:?}");
    }
}

#[test]
fn a_receiver_that_is_down_is_retried_and_counted_until_it_is_back() {
    let runtime = Runtime::new().unwrap();
    let (_upstream, upstream_addr, _stop) = runtime.block_on(start_upstream());
    // A port nobody listens on (for now): bound but not listening, so connections to it
    // are refused, yet no other process can take it before the receiver comes back.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = reserved.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alerts = format!("webhook = \"http://{closed}/hooks/T0K3N-in-path\"\n");
    let path = config(dir.path(), upstream_addr, &alerts);
    let warden = spawn_warden_full(&path, &[]);
    let failed = r#"warden_alert_deliveries_total{channel="webhook",result="failed"}"#;

    block(&runtime, &warden, "127.0.0.1", "a.locked.test.");
    wait_for(&warden, "two failed attempts in /metrics", LIMIT, || {
        (metric(&warden, failed) >= 2.0).then_some(())
    });
    assert_eq!(metric(&warden, "warden_alerts_pending"), 1.0);

    let listener = runtime.block_on(async { reserved.listen(64) }).unwrap();
    let (hook, _) = Hook::serve(&runtime, listener);
    let body = wait_for(&warden, "the retried delivery", LIMIT, || {
        hook.bodies().first().cloned()
    });
    assert_eq!(names(&body), ["a.locked.test"]);
    let ok = r#"warden_alert_deliveries_total{channel="webhook",result="ok"}"#;
    wait_for(&warden, "the success in /metrics", LIMIT, || {
        (metric(&warden, ok) == 1.0).then_some(())
    });
    assert_eq!(metric(&warden, "warden_alerts_pending"), 0.0);
    let log = warden.log_text();
    assert!(log.contains("alert delivery failed; will retry"), "{log}");
    assert!(
        !log.contains("T0K3N"),
        "the URL's path stays out of the log"
    );
    assert!(stop_warden(warden.child).success());

    let rows = deliveries(dir.path());
    let failures: Vec<&Attempt> = rows.iter().filter(|r| r.result == "failed").collect();
    assert!(failures.len() >= 2, "{rows:#?}");
    let last = rows.last().unwrap();
    assert_eq!(
        (last.result.as_str(), last.attempt as usize),
        ("ok", rows.len())
    );
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(row.attempt as usize, n + 1, "attempts numbered in order");
    }
    let error = failures[0].error.as_deref().unwrap_or("");
    assert!(
        error.contains(&format!("http://{closed}/")) && !error.contains("T0K3N"),
        "{error}"
    );
}

#[test]
fn a_restart_neither_repeats_nor_loses_an_alert() {
    let runtime = Runtime::new().unwrap();
    let (_upstream, upstream_addr, _stop) = runtime.block_on(start_upstream());
    let (hook, hook_addr) = Hook::start(&runtime, "127.0.0.1:0".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let alerts = format!("webhook = \"http://{hook_addr}/hook\"\nrate_window = \"1h\"\n");
    let path = config(dir.path(), upstream_addr, &alerts);
    let warden = spawn_warden_full(&path, &[]);
    block(&runtime, &warden, "127.0.0.1", "a.locked.test.");
    wait_for(&warden, "the alert", LIMIT, || {
        hook.bodies().first().cloned()
    });
    // Held for the hour's digest when Warden stops.
    block(&runtime, &warden, "127.0.0.1", "b.locked.test.");
    wait_for(&warden, "the held block", LIMIT, || {
        (metric(&warden, "warden_alerts_held") == 1.0).then_some(())
    });
    assert!(stop_warden(warden.child).success());

    // Started again with a short window: the restored window of the first alert ends
    // soon, and the held block goes out then, once; the first alert is not repeated.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("rate_window = \"1h\"", "rate_window = \"3s\"");
    std::fs::write(&path, text).unwrap();
    let warden = spawn_warden_full(&path, &[]);
    let body = wait_for(&warden, "the held block after the restart", LIMIT, || {
        hook.bodies().get(1).cloned()
    });
    assert_eq!(names(&body), ["b.locked.test"], "{body}");
    block(&runtime, &warden, "127.0.0.2", "x.locked.test.");
    wait_for(&warden, "a new alert after the restart", LIMIT, || {
        hook.bodies().get(2).cloned()
    });
    std::thread::sleep(Duration::from_millis(1000));
    let all: Vec<Vec<String>> = hook.bodies().iter().map(names).collect();
    assert_eq!(
        all,
        [
            vec!["a.locked.test".to_string()],
            vec!["b.locked.test".to_string()],
            vec!["x.locked.test".to_string()]
        ]
    );
    assert!(stop_warden(warden.child).success());
}
