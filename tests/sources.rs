//! Lists from a URL, against a feed served on 127.0.0.1 by the test: the first start
//! downloads them; the auth header is sent and never logged; `warden lists update` makes
//! conditional requests (a 304 reuses the cache); a failed download at start-up falls
//! back to the cached copy; and empty, garbage or shrunk downloads are refused, keeping
//! the last good copy.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const SECRET: &str = "s3cr3t-feed-token-123";
const ENV: &str = "WARDEN_TEST_FEED_AUTH";

fn feed_body(names: usize) -> String {
    std::iter::once("feed-blocked.test\n".to_string())
        .chain((1..names).map(|i| format!("feed{i}.test\n")))
        .collect()
}

/// A config whose terrorism list comes from `feed`, with the auth header from ENV.
fn config_with_feed(dir: &Path, upstream: SocketAddr, feed: SocketAddr, admin: &str) -> PathBuf {
    let path = write_config(dir, upstream, "");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace("listen = \"127.0.0.1:0\"\ntoken_file", &format!("listen = \"{admin}\"\ntoken_file"))
        .replace(
            "name = \"ctiru\"\ncategory = \"terrorism\"\npath = \"ctiru.txt\"",
            &format!(
                "name = \"ctiru\"\ncategory = \"terrorism\"\nurl = \"http://{feed}/ctiru.txt?key=urlsecret\"\n\
                 auth_header_env = \"{ENV}\"\nmax_age = \"7d\"\nmin_entries = 5"
            ),
        );
    assert!(text.contains("auth_header_env"), "{text}");
    std::fs::write(&path, text).unwrap();
    path
}

fn lists_update(config: &Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["lists", "update", "--config", config.to_str().unwrap()])
        .env(ENV, format!("Authorization: Bearer {SECRET}"))
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn rcode(runtime: &tokio::runtime::Runtime, dns: SocketAddr, name: &str) -> ResponseCode {
    runtime.block_on(async {
        udp(dns, name, RecordType::A, true)
            .await
            .metadata
            .response_code
    })
}

#[test]
fn first_start_downloads_with_auth_and_never_logs_the_secret() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let (feed, feed_addr) = Feed::start(&feed_body(20), Some(&format!("Bearer {SECRET}")));
    let dir = tempfile::tempdir().unwrap();
    let path = config_with_feed(dir.path(), upstream_addr, feed_addr, "127.0.0.1:0");
    let warden = spawn_warden_full(&path, &[(ENV, &format!("Authorization: Bearer {SECRET}"))]);

    assert_eq!(
        rcode(&runtime, warden.dns, "www.feed-blocked.test."),
        ResponseCode::NXDomain
    );
    assert_eq!(
        rcode(&runtime, warden.dns, "allowed.test."),
        ResponseCode::NoError
    );
    let requests = feed.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].contains(&format!("authorization: Bearer {SECRET}")),
        "{}",
        requests[0]
    );
    assert!(dir.path().join("cache/ctiru.list").exists());

    let admin = warden.admin.unwrap();
    assert_eq!(http("GET", admin, "/readyz", &[]).0, 200);
    let (_, metrics) = http("GET", admin, "/metrics", &[]);
    assert!(
        metrics.contains(r#"warden_list_rules{category="terrorism",list="ctiru"} 20"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"warden_list_refreshes_total{list="ctiru",result="updated"} 1"#));
    assert!(
        metrics.contains(r#"warden_list_stale{list="ctiru"} 0"#),
        "{metrics}"
    );
    let log = warden.log_text();
    for secret in [SECRET, "urlsecret"] {
        assert!(!log.contains(secret), "secret {secret} in the log:\n{log}");
        assert!(!metrics.contains(secret));
    }
    stop_warden(warden.child);
}

#[test]
fn a_failed_first_download_leaves_the_list_empty_and_not_ready() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let (feed, feed_addr) = Feed::start(&feed_body(20), None);
    feed.state.lock().unwrap().fail = true;
    let dir = tempfile::tempdir().unwrap();
    let path = config_with_feed(dir.path(), upstream_addr, feed_addr, "127.0.0.1:0");
    let warden = spawn_warden_full(&path, &[(ENV, "x")]);
    // Other lists serve; the feed's names are not blocked yet; readiness says why.
    assert_eq!(
        rcode(&runtime, warden.dns, "blocked.test."),
        ResponseCode::NXDomain
    );
    let answer = runtime.block_on(udp(warden.dns, "feed-blocked.test.", RecordType::A, true));
    assert_eq!(ede(&answer), None, "not blocked by Warden");
    let (status, body) = http("GET", warden.admin.unwrap(), "/readyz", &[]);
    assert_eq!(status, 503);
    assert!(
        body.contains("\"ctiru\"") && body.contains("no downloaded copy"),
        "{body}"
    );
    let (_, metrics) = http("GET", warden.admin.unwrap(), "/metrics", &[]);
    assert!(
        metrics.contains(r#"warden_list_refresh_failures_total{list="ctiru"} 1"#),
        "{metrics}"
    );
    assert!(
        warden.log_text().contains("HTTP 500"),
        "{}",
        warden.log_text()
    );
    stop_warden(warden.child);
}

#[test]
fn update_is_conditional_and_refuses_bad_downloads() {
    let (feed, feed_addr) = Feed::start(&feed_body(20), Some(&format!("Bearer {SECRET}")));
    let dir = tempfile::tempdir().unwrap();
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let path = config_with_feed(dir.path(), upstream, feed_addr, "127.0.0.1:0");
    let cache = dir.path().join("cache/ctiru.list");

    let (code, out) = lists_update(&path);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ctiru") && out.contains("updated") && out.contains("20"),
        "{out}"
    );
    let (code, out) = lists_update(&path);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("not modified"), "{out}");
    let requests = feed.requests();
    assert!(
        requests[1].contains("if-none-match: \"v"),
        "conditional: {}",
        requests[1]
    );
    assert_eq!(std::fs::read_to_string(&cache).unwrap(), feed_body(20));

    // Empty, garbage, a tenth (below min_ratio 0.5), and an HTTP error: each refused,
    // exit 1, the cached copy untouched.
    let garbage = "<!doctype html>\n<html><body>\nPlease sign in\n</body></html>\n";
    for (body, fail, expect) in [
        ("", false, "no usable entries"),
        (garbage, false, "does not look like a list"),
        (&feed_body(2)[..], false, "below the floor"),
        ("x.test\n", true, "HTTP 500"),
    ] {
        feed.set_body(body);
        feed.state.lock().unwrap().fail = fail;
        let (code, out) = lists_update(&path);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("FAILED") && out.contains(expect),
            "{expect}: {out}"
        );
        assert!(out.contains("last good copy"), "{out}");
        assert!(!out.contains(SECRET) && !out.contains("urlsecret"), "{out}");
        assert_eq!(std::fs::read_to_string(&cache).unwrap(), feed_body(20));
    }
    // Without the credentials the feed says 401, and the message says so.
    feed.state.lock().unwrap().fail = false;
    feed.set_body(&feed_body(30));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["lists", "update", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains(ENV) && text.contains("not set"), "{text}");
    // A bigger list is fine.
    let (code, out) = lists_update(&path);
    assert_eq!(code, 0, "{out}");
    assert_eq!(std::fs::read_to_string(&cache).unwrap(), feed_body(30));
}

#[test]
fn a_failed_download_at_start_up_uses_the_cached_copy() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let (feed, feed_addr) = Feed::start(&feed_body(20), None);
    let dir = tempfile::tempdir().unwrap();
    // A fixed free port, so `lists update` can reach the daemon's admin listener.
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let path = config_with_feed(
        dir.path(),
        upstream_addr,
        feed_addr,
        &admin_port.to_string(),
    );
    let (code, out) = lists_update(&path);
    assert_eq!(code, 0, "{out}");

    // The feed is down and the copy is due for a refresh: start-up serves from the
    // cache, and the refresh failure is counted.
    feed.state.lock().unwrap().fail = true;
    let meta_file = dir.path().join("cache/ctiru.meta.json");
    let meta = std::fs::read_to_string(&meta_file).unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    meta["checked_at"] = 0.into();
    std::fs::write(&meta_file, meta.to_string()).unwrap();
    let warden = spawn_warden_full(&path, &[(ENV, "x")]);
    let admin = warden.admin.unwrap();
    assert_eq!(
        rcode(&runtime, warden.dns, "feed7.test."),
        ResponseCode::NXDomain
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, m) = http("GET", admin, "/metrics", &[]);
        if m.contains(r#"warden_list_refresh_failures_total{list="ctiru"} 1"#) {
            // Never refreshed within max_age (7d) since 1970: flagged, still blocking.
            assert!(m.contains(r#"warden_list_stale{list="ctiru"} 1"#), "{m}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "refresh failure not counted:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        rcode(&runtime, warden.dns, "feed7.test."),
        ResponseCode::NXDomain
    );
    assert!(
        warden.log_text().contains("locked list is stale"),
        "{}",
        warden.log_text()
    );

    // The feed recovers with new names: `lists update` fetches them and has the running
    // daemon reload.
    feed.state.lock().unwrap().fail = false;
    feed.set_body(&(feed_body(20) + "fresh.test\n"));
    let (code, out) = lists_update(&path);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("the running Warden reloaded"), "{out}");
    assert_eq!(
        rcode(&runtime, warden.dns, "fresh.test."),
        ResponseCode::NXDomain
    );
    stop_warden(warden.child);
}
