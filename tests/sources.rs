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
    assert!(
        metrics.contains(r#"warden_list_missing{list="ctiru"} 1"#),
        "{metrics}"
    );
    // A locked list with no copy is not "stale but blocking": the log says plainly that
    // it is not in force, at ERROR.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let log = warden.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("NOT in force")) {
            break line.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no NOT-in-force line:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(line.contains("ERROR") && line.contains("ctiru"), "{line}");
    assert!(
        !warden.log_text().contains("it keeps blocking"),
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

    // The daemon's own refresh failed, yet its freshness metrics show the check that
    // `lists update` made as another process, at the next scrape.
    let checked_at = |meta_file: &Path| -> u64 {
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(meta_file).unwrap()).unwrap();
        meta["checked_at"].as_u64().unwrap()
    };
    let fresh = |m: &str, at: u64| {
        m.contains(&format!(
            "warden_list_last_success_timestamp_seconds{{list=\"ctiru\"}} {at}\n"
        )) && m.contains(r#"warden_list_stale{list="ctiru"} 0"#)
            && m.contains(r#"warden_list_missing{list="ctiru"} 0"#)
    };
    let (_, m) = http("GET", admin, "/metrics", &[]);
    assert!(fresh(&m, checked_at(&meta_file)), "{m}");
    // Made stale behind the daemon's back, then refreshed by a check that finds no
    // change (a 304: no reload): each shows at the next scrape, not a minute later.
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_file).unwrap()).unwrap();
    meta["checked_at"] = 0.into();
    std::fs::write(&meta_file, meta.to_string()).unwrap();
    let (_, m) = http("GET", admin, "/metrics", &[]);
    assert!(m.contains(r#"warden_list_stale{list="ctiru"} 1"#), "{m}");
    let (code, out) = lists_update(&path);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("not modified"), "{out}");
    let (_, m) = http("GET", admin, "/metrics", &[]);
    assert!(fresh(&m, checked_at(&meta_file)), "{m}");
    stop_warden(warden.child);
}

/// What an [`Origin`] answers on one path.
#[derive(Clone)]
enum Route {
    /// 302 to this location (absolute or relative).
    Redirect(String),
    /// 200 with this body, if the request carries the header line `needs` (lower case).
    Body { body: String, needs: Option<String> },
}

/// A second kind of HTTP server on 127.0.0.1 (its own port, so its own origin): answers
/// by path from a routing table and records every request's head.
#[derive(Clone, Default)]
struct Origin {
    routes: std::sync::Arc<std::sync::Mutex<Vec<(String, Route)>>>,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Origin {
    fn start() -> (Origin, SocketAddr) {
        let origin = Origin::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = origin.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                served.answer(stream);
            }
        });
        (origin, addr)
    }

    fn route(&self, path: &str, route: Route) {
        let mut routes = self.routes.lock().unwrap();
        routes.retain(|(p, _)| p != path);
        routes.push((path.to_string(), route));
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn answer(&self, mut stream: std::net::TcpStream) {
        use std::io::Write;
        let head = read_request_head(&stream);
        self.requests.lock().unwrap().push(head.clone());
        let path = head.split_whitespace().nth(1).unwrap_or("");
        let path = path.split('?').next().unwrap_or("");
        let route = self
            .routes
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, r)| r.clone());
        let lower = head.to_ascii_lowercase();
        let (status, extra, body) = match route {
            Some(Route::Redirect(to)) => {
                ("302 Found", format!("Location: {to}\r\n"), String::new())
            }
            Some(Route::Body { needs, .. })
                if needs.as_ref().is_some_and(|n| !lower.contains(n.as_str())) =>
            {
                ("401 Unauthorized", String::new(), "who are you".into())
            }
            Some(Route::Body { body, .. }) => ("200 OK", String::new(), body),
            None => ("404 Not Found", String::new(), String::new()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes());
    }
}

const API_KEY: &str = "x-api-key: k3y-for-the-feed-only";

/// A config whose ctiru list comes from `feed` with a custom auth header from a file
/// and a token in the query string; `allow` is put in its `allow_redirect_to`.
fn restricted_config(dir: &Path, feed: SocketAddr, allow: &[String]) -> PathBuf {
    let path = write_config(dir, "127.0.0.1:9".parse().unwrap(), "");
    std::fs::write(dir.join("feed.key"), "X-Api-Key: k3y-for-the-feed-only\n").unwrap();
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "name = \"ctiru\"\ncategory = \"terrorism\"\npath = \"ctiru.txt\"",
        &format!(
            "name = \"ctiru\"\ncategory = \"terrorism\"\nurl = \"http://{feed}/ctiru.txt?token=urlsecret\"\n\
             auth_header_file = \"feed.key\"\nallow_redirect_to = {allow:?}"
        ),
    );
    assert!(text.contains("auth_header_file"), "{text}");
    std::fs::write(&path, text).unwrap();
    path
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_redirect_to_another_origin_is_refused_and_gets_no_credentials() {
    let (feed, feed_addr) = Origin::start();
    let (other, other_addr) = Origin::start();
    let body = feed_body(20);
    feed.route(
        "/ctiru.txt",
        Route::Body {
            body: body.clone(),
            needs: Some(API_KEY.into()),
        },
    );
    other.route(
        "/list.txt",
        Route::Body {
            body: feed_body(40),
            needs: None,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = restricted_config(dir.path(), feed_addr, &[]);
    let cache = dir.path().join("cache/ctiru.list");
    let (code, out) = lists_update(&path);
    assert_eq!(code, 0, "{out}");
    assert_eq!(std::fs::read_to_string(&cache).unwrap(), body);

    // The feed now redirects to another port on the same host: another origin.
    feed.route(
        "/ctiru.txt",
        Route::Redirect(format!("http://{other_addr}/list.txt")),
    );
    let (code, out) = lists_update(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAILED")
            && out.contains("another origin")
            && out.contains("allow_redirect_to")
            && out.contains(&format!("http://{other_addr}")),
        "{out}"
    );
    assert!(!out.contains("urlsecret") && !out.contains("k3y"), "{out}");
    for request in other.requests() {
        let lower = request.to_ascii_lowercase();
        assert!(
            !lower.contains("k3y") && !lower.contains("urlsecret") && !lower.contains("referer"),
            "credentials reached the other origin: {request}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&cache).unwrap(),
        body,
        "the last good copy stays"
    );
}

#[test]
fn a_named_redirect_target_is_used_without_the_credentials() {
    let (feed, feed_addr) = Origin::start();
    let (cdn, cdn_addr) = Origin::start();
    feed.route(
        "/ctiru.txt",
        Route::Redirect(format!("http://{cdn_addr}/list.txt?sig=cdn")),
    );
    cdn.route(
        "/list.txt",
        Route::Body {
            body: feed_body(30),
            needs: None,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = restricted_config(dir.path(), feed_addr, &[format!("http://{cdn_addr}")]);
    let (code, out) = lists_update(&path);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cache/ctiru.list")).unwrap(),
        feed_body(30)
    );
    let asked = feed.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].to_ascii_lowercase().contains(API_KEY),
        "{}",
        asked[0]
    );
    let served = cdn.requests();
    assert_eq!(served.len(), 1, "{served:?}");
    let lower = served[0].to_ascii_lowercase();
    assert!(lower.contains("get /list.txt?sig=cdn "), "{lower}");
    for leaked in ["k3y", "x-api-key", "authorization", "urlsecret", "referer"] {
        assert!(!lower.contains(leaked), "{leaked} sent to the CDN: {lower}");
    }
}

#[test]
fn a_same_origin_redirect_keeps_the_credentials_and_the_copy_is_private() {
    let (feed, feed_addr) = Origin::start();
    feed.route("/ctiru.txt", Route::Redirect("/v2/ctiru.txt".into()));
    feed.route(
        "/v2/ctiru.txt",
        Route::Body {
            body: feed_body(25),
            needs: Some(API_KEY.into()),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = restricted_config(dir.path(), feed_addr, &[]);
    // A cache folder left open by an older version is made private.
    let cache_dir = dir.path().join("cache");
    std::fs::create_dir(&cache_dir).unwrap();
    std::fs::set_permissions(
        &cache_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (code, out) = lists_update(&path);
    assert_eq!(code, 0, "{out}");
    let asked = feed.requests();
    assert_eq!(asked.len(), 2, "{asked:?}");
    for request in &asked {
        assert!(request.to_ascii_lowercase().contains(API_KEY), "{request}");
        assert!(
            !request.to_ascii_lowercase().contains("referer"),
            "{request}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(cache_dir.join("ctiru.list")).unwrap(),
        feed_body(25)
    );
    assert_eq!(mode(&cache_dir), 0o700);
    assert_eq!(mode(&cache_dir.join("ctiru.list")), 0o600);
    assert_eq!(mode(&cache_dir.join("ctiru.meta.json")), 0o600);
    // Nothing else is left in the folder (no partial download).
    let names: Vec<String> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn allow_redirect_to_must_be_an_origin() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, why) in [
        ("https://cdn.example/lists/", "origin only"),
        ("ftp://cdn.example", "http:// or https://"),
        ("cdn.example", "not a URL"),
    ] {
        let path = restricted_config(dir.path(), "127.0.0.1:9".parse().unwrap(), &[bad.into()]);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["config", "check", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {text}");
        let config = std::fs::read_to_string(&path).unwrap();
        let line = 1 + config
            .lines()
            .position(|l| l.starts_with("allow_redirect_to"))
            .unwrap();
        assert!(
            text.contains(&format!("warden.toml:{line}: "))
                && text.contains("allow_redirect_to")
                && text.contains(why),
            "{bad}: {text}"
        );
    }
}
