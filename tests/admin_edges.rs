//! The admin listener at its edges, against the real binary:
//! - a crowd of parallel sign-ins cannot get more than five passwords checked per user
//!   name or per device (observed through `warden_dashboard_password_checks_total` and
//!   the sign-in records), and the right password still signs in under the limit;
//! - every admin route answers only requests that name the listener in `Host` (DNS
//!   rebinding), while the block page answers whatever site's name a browser sends.
//!
//! HTTP goes through `reqwest`; raw sockets only for requests reqwest will not send
//! (no `Host`, two `Host`s).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use reqwest::header::{HeaderValue, CONTENT_TYPE, COOKIE, HOST, SET_COOKIE};
use reqwest::StatusCode;

const LEAD_PASSWORD: &str = "lead password 1";
const ADMIN_PASSWORD: &str = "admin password 1";
/// The limit the dashboard promises (auth::MAX_FAILURES).
const LIMIT: u64 = warden::dashboard::auth::MAX_FAILURES as u64;

struct Daemon {
    warden: Spawned,
    admin: SocketAddr,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    _upstream: tokio_util::sync::DropGuard,
}

impl Daemon {
    /// Warden with an audit log, two users (`lead`, `admin`), `extra` appended to the
    /// `[dashboard]` section, and `blocking` in `[blocking]`.
    fn start(blocking: &str, extra: &str) -> Daemon {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (_upstream, upstream_addr, token) = runtime.block_on(start_upstream());
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), upstream_addr, blocking);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "[audit]\nflush_interval = \"100ms\"\n[dashboard]\n{extra}\n{}",
            users()
        ));
        std::fs::write(&path, text).unwrap();
        let warden = spawn_warden_full(&path, &[]);
        let admin = warden.admin.expect("admin address logged");
        Daemon {
            warden,
            admin,
            dir,
            runtime,
            _upstream: token.drop_guard(),
        }
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("warden.toml")
    }

    fn stop(self) {
        stop_warden(self.warden.child);
    }
}

/// `[[users]]` for `lead` and `admin`, hashed as `warden user add` hashes them.
fn users() -> String {
    use warden::dashboard::auth::hash_password;
    [("lead", LEAD_PASSWORD), ("admin", ADMIN_PASSWORD)]
        .iter()
        .map(|(name, password)| {
            format!(
                "[[users]]\nname = \"{name}\"\nrole = \"{name}\"\npassword_hash = \"{}\"\n",
                hash_password(password).unwrap()
            )
        })
        .collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A sign-in form token: the double-submit cookie and field carry the same value.
async fn form_token(client: &reqwest::Client, admin: SocketAddr) -> String {
    let form = client
        .get(format!("http://{admin}/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    form.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("warden_login="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .expect("the form sets its token cookie")
}

/// POST /login; the status and the session cookie, if one was set.
async fn sign_in(
    client: &reqwest::Client,
    admin: SocketAddr,
    token: &str,
    user: &str,
    password: &str,
) -> (StatusCode, Option<String>) {
    let reply = client
        .post(format!("http://{admin}/login"))
        .header(COOKIE, format!("warden_login={token}"))
        .form(&[("csrf", token), ("user", user), ("password", password)])
        .send()
        .await
        .unwrap();
    let session = reply
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("warden_session=") && !v.starts_with("warden_session=;"))
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    (reply.status(), session)
}

/// `count` sign-ins at once, each for the user `users(i)`; their statuses.
async fn crowd(
    admin: SocketAddr,
    token: &str,
    count: usize,
    users: impl Fn(usize) -> &'static str,
    password: &'static str,
) -> Vec<StatusCode> {
    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (client, token, user) = (client.clone(), token.to_string(), users(i));
        tasks.spawn(async move { sign_in(&client, admin, &token, user, password).await.0 });
    }
    let mut statuses = Vec::with_capacity(count);
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses
}

/// The value of an unlabelled sample, or of `name{result="…"}`, on /metrics (0 if absent).
async fn metric(admin: SocketAddr, sample: &str) -> u64 {
    let text = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix(sample))
        .filter_map(|rest| rest.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

const CHECKS: &str = "warden_dashboard_password_checks_total";

/// Sign-in records in the audit database, by result, for `user` (any user if `None`).
fn records(dir: &Path, result: &str, user: Option<&str>) -> u64 {
    let db = rusqlite::Connection::open(dir.join("data/audit.sqlite")).unwrap();
    let n: i64 = db
        .query_row(
            "SELECT count(*) FROM signins WHERE result = ?1 AND (?2 IS NULL OR user = ?2)",
            rusqlite::params![result, user],
            |r| r.get(0),
        )
        .unwrap();
    n as u64
}

fn count(statuses: &[StatusCode], status: StatusCode) -> u64 {
    statuses.iter().filter(|s| **s == status).count() as u64
}

#[test]
fn a_crowd_gets_at_most_five_passwords_checked_per_name_and_per_device() {
    let d = Daemon::start("", "");
    let admin = d.admin;
    d.runtime.block_on(async {
        let token = form_token(&client(), admin).await;
        assert_eq!(metric(admin, CHECKS).await, 0);
        let started = Instant::now();
        let limited = |statuses: &[StatusCode]| count(statuses, StatusCode::TOO_MANY_REQUESTS);

        // 100 wrong passwords for one user from one device, all at once.
        let statuses = crowd(admin, &token, 100, |_| "lead", "guess").await;
        let allowed = [
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
        ];
        assert!(statuses.iter().all(|s| allowed.contains(s)), "{statuses:?}");
        let checked = metric(admin, CHECKS).await;
        assert!(
            (1..=LIMIT).contains(&checked),
            "{checked} passwords checked for one name from one device"
        );
        // Each check is one refusal and one record; the rest were never checked.
        let wrong = count(&statuses, StatusCode::UNAUTHORIZED);
        assert_eq!(wrong, checked, "{statuses:?}");
        assert_eq!(
            records(d.dir.path(), "wrong-password", Some("lead")),
            checked
        );
        let mut refused = limited(&statuses);

        // Per device: other names from this device share its five. Use up what the
        // crowd left (only checks that ran count), one at a time and bounded ...
        let client = client();
        for _ in 0..LIMIT {
            let (status, _) = sign_in(&client, admin, &token, "admin", "guess").await;
            if status == StatusCode::TOO_MANY_REQUESTS {
                refused += 1;
                break;
            }
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(metric(admin, CHECKS).await, LIMIT);
        // ... then a crowd for other names, known and unknown, gets nothing checked,
        // and neither does the right password.
        let names = ["admin", "nobody", "LEAD", "someone"];
        let statuses = crowd(admin, &token, 60, |i| names[i % 4], "guess").await;
        assert_eq!(limited(&statuses), 60, "{statuses:?}");
        let (status, session) = sign_in(&client, admin, &token, "admin", ADMIN_PASSWORD).await;
        assert_eq!((status, session), (StatusCode::TOO_MANY_REQUESTS, None));
        refused += 60 + 1;
        assert_eq!(metric(admin, CHECKS).await, LIMIT);
        let counted = metric(admin, "warden_dashboard_signins_total{result=\"limited\"}").await;
        assert_eq!(counted, refused);
        // Refusals are recorded, but only once a minute per device (the disk stays safe).
        let recorded = records(d.dir.path(), "limited", None);
        let minutes = started.elapsed().as_secs() / 60 + 1;
        assert!(
            (1..=minutes).contains(&recorded),
            "{recorded} refusals recorded in {minutes} minute(s)"
        );
    });
    d.stop();
}

#[test]
fn the_right_password_signs_in_while_under_the_limit() {
    let d = Daemon::start("", "");
    let admin = d.admin;
    d.runtime.block_on(async {
        let token = form_token(&client(), admin).await;
        // Four wrong at once, then the right one: still under the limit of five.
        let statuses = crowd(admin, &token, (LIMIT - 1) as usize, |_| "lead", "typo").await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
            "{statuses:?}"
        );
        let client = client();
        let (status, session) = sign_in(&client, admin, &token, "lead", LEAD_PASSWORD).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let session = session.expect("a session cookie");
        let overview = client
            .get(format!("http://{admin}/"))
            .header(COOKIE, &session)
            .send()
            .await
            .unwrap();
        assert_eq!(overview.status(), StatusCode::OK);
        assert_eq!(metric(admin, CHECKS).await, LIMIT);
        assert_eq!(
            metric(admin, "warden_dashboard_signins_total{result=\"ok\"}").await,
            1
        );
        // The success did not count against the device: it has one failure left,
        // which the admin may use, and then the device is limited.
        let (status, _) = sign_in(&client, admin, &token, "admin", "typo").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = sign_in(&client, admin, &token, "admin", ADMIN_PASSWORD).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    });
    d.stop();
}

/// GET `path` on `addr` with `Host: host`.
async fn get_as(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, String, String) {
    let reply = client()
        .get(format!("http://{addr}{path}"))
        .header(HOST, HeaderValue::from_str(host).unwrap())
        .send()
        .await
        .unwrap();
    let status = reply.status();
    let kind = reply
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, kind, reply.text().await.unwrap())
}

async fn reload_as(d: &Daemon, host: &str) -> StatusCode {
    let token = std::fs::read_to_string(d.dir.path().join("admin.token")).unwrap();
    client()
        .post(format!("http://{}/reload", d.admin))
        .header(HOST, HeaderValue::from_str(host).unwrap())
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .status()
}

/// The block page's address, from the log.
fn block_page(d: &Daemon) -> SocketAddr {
    let log = d.warden.log_text();
    log.split("block page on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("block page address logged:\n{log}"))
}

#[test]
fn the_admin_listener_answers_only_its_own_names() {
    let d = Daemon::start(
        "response = \"ip\"\nblock_ip = [\"127.0.0.1\"]",
        "block_page = \"127.0.0.1:0\"\nhosts = [\"Warden.School.Lan\"]",
    );
    let (admin, port) = (d.admin, d.admin.port());
    d.runtime.block_on(async {
        let paths = [
            "/", "/login", "/metrics", "/healthz", "/readyz", "/events", "/nothing",
        ];
        let foreign = [
            "evil.example".to_string(),
            format!("evil.example:{port}"),
            format!("localhost:{}", port ^ 1),
            format!("127.0.0.2:{port}"),
            "school.lan".to_string(),
        ];
        for host in &foreign {
            for path in paths {
                let (status, kind, body) = get_as(admin, host, path).await;
                assert_eq!(
                    status,
                    StatusCode::MISDIRECTED_REQUEST,
                    "Host {host} {path}"
                );
                assert!(kind.starts_with("text/plain"), "{kind}");
                assert!(body.contains("does not answer to the name"), "{body}");
            }
            assert_eq!(
                reload_as(&d, host).await,
                StatusCode::MISDIRECTED_REQUEST,
                "{host}"
            );
        }
        let own = [
            admin.to_string(),
            format!("localhost:{port}"),
            format!("LOCALHOST.:{port}"),
            format!("[::1]:{port}"),
            "warden.school.lan".to_string(),
            "warden.school.lan:443".to_string(),
        ];
        for host in &own {
            for path in ["/login", "/metrics", "/healthz"] {
                let (status, _, body) = get_as(admin, host, path).await;
                assert_eq!(status, StatusCode::OK, "Host {host} {path}: {body}");
            }
            let (status, _, _) = get_as(admin, host, "/").await;
            assert_eq!(
                status,
                StatusCode::SEE_OTHER,
                "Host {host} /: to the sign-in"
            );
        }
        assert_eq!(reload_as(&d, &own[0]).await, StatusCode::OK);

        // A name added to `hosts` is answered after a reload, without a restart.
        let new = "dashboard.school.lan";
        assert_eq!(
            get_as(admin, new, "/healthz").await.0,
            StatusCode::MISDIRECTED_REQUEST
        );
        let config = std::fs::read_to_string(d.config()).unwrap().replace(
            "hosts = [\"Warden.School.Lan\"]",
            "hosts = [\"Warden.School.Lan\", \"dashboard.school.lan\"]",
        );
        std::fs::write(d.config(), config).unwrap();
        assert_eq!(
            reload_as(&d, "localhost").await,
            StatusCode::MISDIRECTED_REQUEST
        );
        assert_eq!(
            reload_as(&d, &format!("localhost:{port}")).await,
            StatusCode::OK
        );
        assert_eq!(get_as(admin, new, "/healthz").await.0, StatusCode::OK);

        // The block page is reached under the blocked site's name, and answers any.
        let page = block_page(&d);
        let (status, _, body) = get_as(page, "www.blocked.test", "/some/page").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            body.contains("www.blocked.test</strong> is blocked"),
            "{body}"
        );
        let (status, _, body) = get_as(page, "evil.example", "/").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("The site you asked for is blocked"), "{body}");
    });
    d.stop();
}

/// Send `text` as a whole request over a raw socket (bounded in time); the status.
fn raw_status(addr: SocketAddr, text: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(text.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    // Read to the end of the connection (every request says Connection: close).
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, reply)
}

#[test]
fn requests_without_one_clear_host_are_refused() {
    let d = Daemon::start("", "");
    let admin = d.admin;
    let cases = [
        ("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(), 400, "Host header is required"),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: {admin}\r\nHost: {admin}\r\nConnection: close\r\n\r\n"),
            400,
            "more than one Host",
        ),
        ("GET /healthz HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n".to_string(), 400, "not a host name"),
        // An absolute target names the host too, and wins over Host.
        (
            format!("GET http://evil.example/healthz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"),
            421,
            "evil.example",
        ),
        (
            format!("GET http://{admin}/healthz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"),
            200,
            "ok: serving",
        ),
        // HTTP/1.0 may leave Host out; no browser does.
        ("GET /healthz HTTP/1.0\r\n\r\n".to_string(), 200, "ok: serving"),
    ];
    for (request, status, text) in cases {
        let (got, reply) = raw_status(admin, &request);
        assert_eq!(got, status, "{request:?}: {reply}");
        assert!(reply.contains(text), "{request:?}: {reply}");
    }
    // Still serving after all that.
    let (status, _) = raw_status(
        admin,
        &format!("GET /healthz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200);
    d.stop();
}
