//! The dashboard over plain HTTP against the real binary: every page and form needs a
//! session; sign-in checks the password, its form token and the attempt limit; every
//! form checks the session's CSRF token; responses carry the security headers; bad input
//! gets a 4xx page that says what was wrong; a lead cannot use the admin pages; an
//! admin's allow entry takes effect on the next DNS query, and a locked name cannot be
//! allowed; a governor sees counts, never who; two-factor sign-in refuses a wrong or a
//! reused code. Users are created with the real `warden user add` and `warden user 2fa`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::dashboard::{
    add_user, dashboard_config, enrol_second_factor, request, send, sign_in, sign_in_with_code,
    totp_code, Reply, ADMIN_PASSWORD, LEAD_PASSWORD,
};
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

struct Setup {
    warden: Spawned,
    admin: SocketAddr,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    upstream: (Upstream, tokio_util::sync::CancellationToken),
}

fn setup() -> Setup {
    setup_with(|_, _| {})
}

/// [`setup`], with `prepare(folder, config)` run before Warden starts.
fn setup_with(prepare: impl FnOnce(&std::path::Path, &std::path::Path)) -> Setup {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (upstream, upstream_addr, token) = runtime.block_on(start_upstream());
    let dir = tempfile::tempdir().unwrap();
    let path = dashboard_config(dir.path(), upstream_addr);
    prepare(dir.path(), &path);
    let warden = spawn_warden_full(&path, &[]);
    let admin = warden.admin.expect("admin address logged");
    Setup {
        warden,
        admin,
        dir,
        runtime,
        upstream: (upstream, token),
    }
}

/// Block `name` over DNS and wait (bounded) until its audit row is on the events page.
fn block_and_wait(s: &Setup, name: &str, session: &str) -> i64 {
    let reply = s
        .runtime
        .block_on(udp(s.warden.dns, &format!("{name}."), RecordType::A, true));
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = request("GET", s.admin, "/events", Some(session), None);
        assert_eq!(page.status, 200);
        if let Some(id) = event_id(&page.body, name) {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached the events page"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The id of the first event row showing `name`.
fn event_id(body: &str, name: &str) -> Option<i64> {
    body.split("<tr>")
        .find(|row| row.contains(&format!("<td>{name}</td>")))
        .and_then(|row| {
            let start = row.find("href=\"/events/")? + "href=\"/events/".len();
            let end = row[start..].find('"')?;
            row[start..start + end].parse().ok()
        })
}

/// The HTML of the first event row showing `name`.
fn row_of<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.split("<tr>")
        .find(|row| row.contains(&format!("<td>{name}</td>")))
}

/// The first column of `sql`'s rows in the audit database, as text.
fn strings(s: &Setup, sql: &str) -> Vec<String> {
    let db = rusqlite::Connection::open(s.dir.path().join("data/audit.sqlite")).unwrap();
    let mut stmt = db.prepare(sql).unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

fn csrf(s: &Setup, session: &str) -> String {
    request("GET", s.admin, "/", Some(session), None)
        .hidden("csrf")
        .expect("the page's forms carry a csrf token")
}

fn assert_message(reply: &Reply, status: u16, text: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert!(
        reply.body.contains(text),
        "expected {text:?} in {}",
        reply.body
    );
    assert!(
        reply.body.contains("<html"),
        "an error is a page, not a bare string"
    );
}

#[test]
fn every_page_and_form_needs_a_session() {
    let s = setup();
    for path in ["/", "/events", "/events/1", "/export.csv", "/admin"] {
        let reply = request("GET", s.admin, path, None, None);
        assert_eq!(reply.status, 303, "GET {path}");
        assert_eq!(reply.header("location"), Some("/login"), "GET {path}");
        // A forged or ended session is no better.
        let forged = request("GET", s.admin, path, Some("warden_session=00ff"), None);
        assert_eq!(forged.status, 303, "GET {path} with a forged session");
    }
    for path in [
        "/events/1/review",
        "/admin/allow",
        "/admin/allow/remove",
        "/logout",
    ] {
        let reply = request("POST", s.admin, path, None, Some(&[("csrf", "x")]));
        assert_message(&reply, 401, "Sign in again");
    }
    // The metrics and health endpoints stay as they were.
    assert_eq!(request("GET", s.admin, "/healthz", None, None).status, 200);
    assert_eq!(request("GET", s.admin, "/metrics", None, None).status, 200);
    stop_warden(s.warden.child);
}

#[test]
fn sign_in_checks_password_form_token_and_attempts_and_is_recorded() {
    let s = setup();
    // The form sets its own token cookie, HttpOnly and SameSite=Strict.
    let form = request("GET", s.admin, "/login", None, None);
    assert_eq!(form.status, 200);
    let set = form
        .set_cookie("warden_login")
        .expect("the form sets its token cookie");
    assert!(set.http_only && set.same_site_strict, "{set:?}");
    // Without the matching cookie the form is refused, whatever the password.
    let form_token = form.hidden("csrf").unwrap();
    let forged = request(
        "POST",
        s.admin,
        "/login",
        Some("warden_login=somethingelse"),
        Some(&[
            ("csrf", &form_token),
            ("user", "lead"),
            ("password", LEAD_PASSWORD),
        ]),
    );
    assert_eq!(forged.status, 403);
    assert!(forged.cookie("warden_session").is_none());

    let wrong = sign_in(s.admin, "lead", "not the password").unwrap_err();
    assert_message(&wrong, 401, "do not match");
    let unknown = sign_in(s.admin, "nobody", "whatever password").unwrap_err();
    assert_message(&unknown, 401, "do not match");

    let session = sign_in(s.admin, "lead", LEAD_PASSWORD).expect("the right password signs in");
    let ok = request("GET", s.admin, "/", Some(&session), None);
    assert_eq!(ok.status, 200);
    assert!(ok.body.contains("Overview") && ok.body.contains("Hillside School"));

    // After five failures the next attempt is refused even with the right password,
    // and says for how long.
    // (This address already failed twice above, and is limited on its own count too.)
    for _ in 0..5 {
        let status = sign_in(s.admin, "admin", "guessing").unwrap_err().status;
        assert!(status == 401 || status == 429, "{status}");
    }
    let limited = sign_in(s.admin, "admin", ADMIN_PASSWORD).unwrap_err();
    assert_message(&limited, 429, "Too many failed sign-ins");

    // Every attempt is recorded, and the admin page shows them.
    let results = strings(&s, "SELECT user || ':' || result FROM signins ORDER BY id");
    assert_eq!(
        results[..3],
        ["lead:wrong-password", "nobody:unknown-user", "lead:ok"]
    );
    assert_eq!(results.last().map(String::as_str), Some("admin:limited"));

    // Signing out ends the session on the server, not just in the browser.
    let token = csrf(&s, &session);
    let out = request(
        "POST",
        s.admin,
        "/logout",
        Some(&session),
        Some(&[("csrf", &token)]),
    );
    assert_eq!(out.status, 303);
    assert_eq!(
        request("GET", s.admin, "/", Some(&session), None).status,
        303
    );
    stop_warden(s.warden.child);
}

#[test]
fn pages_carry_security_headers_and_forms_check_csrf() {
    let s = setup();
    let session = sign_in(s.admin, "lead", LEAD_PASSWORD).unwrap();
    for path in ["/login", "/", "/events", "/static/warden.css"] {
        let reply = request("GET", s.admin, path, Some(&session), None);
        let csp = reply.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
    }
    let id = block_and_wait(&s, "csrf.blocked.test", &session);
    let path = format!("/events/{id}/review");
    let forged = request(
        "POST",
        s.admin,
        &path,
        Some(&session),
        Some(&[
            ("csrf", "0000"),
            ("outcome", "incident"),
            ("note", "forged"),
        ]),
    );
    assert_message(&forged, 403, "expired");
    let missing = request(
        "POST",
        s.admin,
        &path,
        Some(&session),
        Some(&[("outcome", "incident"), ("note", "no token")]),
    );
    assert_message(&missing, 400, "could not be read");
    let page = request(
        "GET",
        s.admin,
        &format!("/events/{id}"),
        Some(&session),
        None,
    );
    assert!(
        page.body.contains("Not yet reviewed"),
        "no review was recorded"
    );

    let token = csrf(&s, &session);
    let saved = request(
        "POST",
        s.admin,
        &path,
        Some(&session),
        Some(&[
            ("csrf", &token),
            ("outcome", "incident"),
            ("note", "spoke to the pupil"),
        ]),
    );
    assert_eq!(saved.status, 303);
    let page = request(
        "GET",
        s.admin,
        &format!("/events/{id}?saved=1"),
        Some(&session),
        None,
    );
    assert!(
        page.body.contains("Your review was saved") && page.body.contains("spoke to the pupil")
    );
    stop_warden(s.warden.child);
}

#[test]
fn malformed_input_gets_a_4xx_that_says_why() {
    let s = setup();
    let session = sign_in(s.admin, "lead", LEAD_PASSWORD).unwrap();
    let get = |path: &str| request("GET", s.admin, path, Some(&session), None);
    assert_message(&get("/events/abc"), 400, "whole number");
    assert_message(&get("/events/99999"), 404, "no event 99999");
    assert_message(&get("/events?since=last-tuesday"), 400, "not a date");
    assert_message(&get("/events?category=nonsense"), 400, "no category");
    assert_message(&get("/events?state=maybe"), 400, "Review state");
    assert_message(
        &get("/events?before=-3"),
        400,
        "page link could not be read",
    );
    assert_message(
        &get("/events?before=2026-13-01T00:00:00Z,5"),
        400,
        "page link could not be read",
    );
    assert_message(&get("/export.csv?until=31/12/2026"), 400, "not a date");

    let id = block_and_wait(&s, "bad.blocked.test", &session);
    let token = csrf(&s, &session);
    let path = format!("/events/{id}/review");
    let bad_outcome = request(
        "POST",
        s.admin,
        &path,
        Some(&session),
        Some(&[("csrf", &token), ("outcome", "shrug"), ("note", "")]),
    );
    assert_message(&bad_outcome, 400, "unknown outcome");
    let long = "x".repeat(2001);
    let too_long = request(
        "POST",
        s.admin,
        &path,
        Some(&session),
        Some(&[("csrf", &token), ("outcome", "incident"), ("note", &long)]),
    );
    assert_message(&too_long, 400, "at most 2000");
    // Not a form at all.
    let garbage = send("POST", s.admin, &path, |request| {
        request
            .header(reqwest::header::COOKIE, &session)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("{}")
    });
    assert!((400..500).contains(&garbage.status), "{}", garbage.status);
    stop_warden(s.warden.child);
}

#[test]
fn leads_cannot_use_admin_pages_and_admins_allow_within_the_rules() {
    let s = setup();
    let lead = sign_in(s.admin, "lead", LEAD_PASSWORD).unwrap();
    assert_message(
        &request("GET", s.admin, "/admin", Some(&lead), None),
        403,
        "Only an admin",
    );
    let token = csrf(&s, &lead);
    let tried = request(
        "POST",
        s.admin,
        "/admin/allow",
        Some(&lead),
        Some(&[
            ("csrf", &token),
            ("name", "blocked.test"),
            ("reason", "please"),
        ]),
    );
    assert_message(&tried, 403, "Only an admin");
    assert!(!request("GET", s.admin, "/", Some(&lead), None)
        .body
        .contains("href=\"/admin\""));

    let admin = sign_in(s.admin, "admin", ADMIN_PASSWORD).unwrap();
    let token = csrf(&s, &admin);
    let post = |name: &str, reason: &str| {
        request(
            "POST",
            s.admin,
            "/admin/allow",
            Some(&admin),
            Some(&[("csrf", &token), ("name", name), ("reason", reason)]),
        )
    };
    // The statutory list wins: refused, and the name stays blocked.
    assert_message(&post("locked.test", "research"), 409, "statutory list");
    assert_message(&post("not a name!", "x"), 400, "not a domain name");
    assert_message(&post("blocked.test", "  "), 400, "give a reason");
    assert_message(
        &post("blocked.test", "a lesson\u{0}"),
        400,
        "control character U+0000",
    );

    // Whether a query for `name` is answered by Warden's block (true) or forwarded.
    let blocked = |name: &str| {
        let before = s.upstream.0.count(name);
        let reply = s
            .runtime
            .block_on(udp(s.warden.dns, name, RecordType::A, true));
        let forwarded = s.upstream.0.count(name) > before;
        assert_eq!(forwarded, ede(&reply).is_none(), "{name}: {reply:?}");
        !forwarded
    };
    assert!(blocked("blocked.test."));
    let added = post("Blocked.Test", "needed for a lesson on online safety");
    assert_eq!(added.status, 303, "{}", added.body);
    // The reload has happened by the time the form answers.
    assert!(!blocked("blocked.test."));
    assert!(!blocked("www.blocked.test."));
    assert!(blocked("locked.test."));
    assert_message(&post("blocked.test", "again"), 409, "already allowed");

    let page = request("GET", s.admin, "/admin", Some(&admin), None);
    assert!(
        page.body.contains("needed for a lesson on online safety"),
        "{}",
        page.body
    );
    let file = std::fs::read_to_string(s.dir.path().join("data/allow-dashboard.txt")).unwrap();
    assert!(
        file.contains("by admin: needed for a lesson") && file.contains("\nblocked.test\n"),
        "{file}"
    );

    let removed = request(
        "POST",
        s.admin,
        "/admin/allow/remove",
        Some(&admin),
        Some(&[
            ("csrf", &token),
            ("name", "blocked.test"),
            ("reason", "lesson over"),
        ]),
    );
    assert_eq!(removed.status, 303, "{}", removed.body);
    assert!(blocked("x.blocked.test."));
    let changes = strings(&s, "SELECT by || ' ' || action || ' ' || name || ': ' || reason FROM allow_changes ORDER BY id");
    assert_eq!(
        changes,
        [
            "admin add blocked.test: needed for a lesson on online safety",
            "admin remove blocked.test: lesson over"
        ]
    );
    stop_warden(s.warden.child);
}

#[test]
fn export_is_the_filtered_events_as_csv() {
    let s = setup();
    let session = sign_in(s.admin, "lead", LEAD_PASSWORD).unwrap();
    block_and_wait(&s, "one.blocked.test", &session);
    block_and_wait(&s, "locked.test", &session);
    let csv = request(
        "GET",
        s.admin,
        "/export.csv?category=adult",
        Some(&session),
        None,
    );
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv
        .header("content-disposition")
        .unwrap()
        .contains("attachment"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert!(lines[0].starts_with("id,seq,first_seen"), "{}", lines[0]);
    assert_eq!(lines.len(), 2, "{}", csv.body);
    assert!(lines[1].contains(",one.blocked.test,") && lines[1].contains(",adult,"));
    // It says how many rows it writes, and the events page's link says so too, with the
    // date range an export without a start date covers.
    assert_eq!(csv.header("x-warden-rows"), Some("1"));
    let page = request("GET", s.admin, "/events", Some(&session), None);
    assert!(
        page.body.contains("Download the 2 events since "),
        "{}",
        page.body
    );
    stop_warden(s.warden.child);
}

#[test]
fn the_block_page_says_why_and_whom_to_ask() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        upstream_addr,
        "response = \"ip\"\nblock_ip = [\"127.0.0.1\"]",
    );
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[categories.adult]\n",
        "[categories.adult]\ndescription = \"Adult content\"\nsignpost = \"Worried? Talk to Childline on 0800 1111.\"\n",
    ) + "[dashboard]\norganisation = \"Hillside School\"\ncontact = \"Ms Patel\"\nblock_page = \"127.0.0.1:0\"\n";
    std::fs::write(&path, text).unwrap();
    let warden = spawn_warden_full(&path, &[]);
    let log = warden.log_text();
    let addr: SocketAddr = log
        .split("block page on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("block page address logged:\n{log}"));

    // The DNS answer points the browser at the block page.
    let reply = runtime.block_on(udp(warden.dns, "www.blocked.test.", RecordType::A, true));
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(
        format!("{:?}", reply.answers).contains("127.0.0.1"),
        "{reply:?}"
    );

    // The browser asks the block page's address for the blocked site's page.
    let page = send("GET", addr, "/some/page", |request| {
        request.header(reqwest::header::HOST, "www.blocked.test")
    });
    assert_eq!(page.status, 403);
    for expected in [
        "www.blocked.test</strong> is blocked under Hillside School's e-safety policy",
        "Category: adult",
        "Adult content",
        "Worried? Talk to Childline on 0800 1111.",
        "ask Ms Patel",
    ] {
        assert!(
            page.body.contains(expected),
            "{expected:?} in {}",
            page.body
        );
    }
    assert!(page
        .header("content-security-policy")
        .is_some_and(|c| c.contains("frame-ancestors 'none'")));
    // A name that is not blocked (a stale answer on the device) gets the general page.
    let general = send("GET", addr, "/", |request| {
        request.header(reqwest::header::HOST, "fine.test:80")
    });
    assert!(
        general.body.contains("The site you asked for is blocked"),
        "{}",
        general.body
    );
    assert!(!general.body.contains("Category:"));
    stop_warden(warden.child);
}

#[test]
fn a_reset_password_ends_the_users_sessions() {
    let s = setup();
    let lead = sign_in(s.admin, "lead", LEAD_PASSWORD).unwrap();
    let admin = sign_in(s.admin, "admin", ADMIN_PASSWORD).unwrap();
    assert_eq!(request("GET", s.admin, "/", Some(&lead), None).status, 200);
    // `warden user add` on an existing user resets the password; the config watcher
    // reloads it within seconds.
    add_user(
        &s.dir.path().join("warden.toml"),
        "lead",
        "lead",
        "a brand new password",
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while request("GET", s.admin, "/", Some(&lead), None).status == 200 {
        assert!(Instant::now() < deadline, "the old session still works");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        request("GET", s.admin, "/", Some(&admin), None).status,
        200,
        "others stay signed in"
    );
    assert!(sign_in(s.admin, "lead", LEAD_PASSWORD).is_err());
    assert!(sign_in(s.admin, "lead", "a brand new password").is_ok());
    stop_warden(s.warden.child);
}

/// Two blocks recorded before the start, at known times, in a category that alerts (so
/// the overview lists them): a summer evening in UTC that is already the next day in
/// India, and a winter morning. The audit log keeps them ten years.
fn known_blocks(dir: &std::path::Path, config: &std::path::Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let text = text
        .replacen("[server]\n", "[server]\ntimezone = \"Asia/Kolkata\"\n", 1)
        .replacen("[audit]\n", "[audit]\nretention_days = 3650\n", 1);
    std::fs::write(config, text).unwrap();
    let db = dir.join("data").join("audit.sqlite");
    drop(warden::audit::Store::open(&db).unwrap()); // the schema
    let conn = rusqlite::Connection::open(&db).unwrap();
    for (name, at) in [
        ("summer.zone.test", "2026-07-01T20:00:00.000Z"),
        ("winter.zone.test", "2026-01-15T09:30:05.000Z"),
    ] {
        conn.execute(
            "INSERT INTO events (first_seen, last_seen, count, client_ip, grp, name, qtype, \
             categories, locked, list, line, rule, response, outcome) \
             VALUES (?1, ?1, 1, '10.0.0.9', 'default', ?2, 'A', 'terrorism', 1, 'ctiru', 1, \
             'sha256:00ff', 'nxdomain', 'blocked')",
            rusqlite::params![at, name],
        )
        .unwrap();
    }
}

/// The review time an event page shows (`… by lead at 2026-07-02 01:30:00 +05:30: …`).
fn review_time(body: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let start = body.find("by lead at ").expect("a review by lead") + "by lead at ".len();
    let text = &body[start..start + "2026-07-02 01:30:00 +05:30".len()];
    chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S %:z")
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn times_are_shown_in_the_configured_zone_with_their_offset() {
    let s = setup_with(known_blocks);
    let session = sign_in(s.admin, "lead", LEAD_PASSWORD).unwrap();
    let get = |path: &str| {
        let reply = request("GET", s.admin, path, Some(&session), None);
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        reply.body
    };
    // The events list and the overview's blocks to review: 20:00 UTC is 01:30 the next
    // day in India (+05:30), 09:30:05 UTC is 15:00:05.
    let summer = "2026-07-02 01:30:00 +05:30";
    let winter = "2026-01-15 15:00:05 +05:30";
    for path in ["/events", "/"] {
        let body = get(path);
        let row = |name| row_of(&body, name).unwrap_or_else(|| panic!("{name} on {path}"));
        assert!(row("summer.zone.test").contains(summer), "{path}: {body}");
        assert!(row("winter.zone.test").contains(winter), "{path}: {body}");
        assert!(!body.contains(" UTC"), "{path}: {body}");
    }
    // A date in the filter is that day in India (from 18:30 UTC the day before).
    let body = get("/events?since=2026-07-02");
    assert!(row_of(&body, "summer.zone.test").is_some(), "{body}");
    assert!(row_of(&body, "winter.zone.test").is_none(), "{body}");
    let body = get("/events?until=2026-07-01");
    assert!(row_of(&body, "summer.zone.test").is_none(), "{body}");
    assert!(row_of(&body, "winter.zone.test").is_some(), "{body}");

    // The event page: first and last seen; then the review history.
    let id = event_id(&get("/events"), "summer.zone.test").unwrap();
    let page = get(&format!("/events/{id}"));
    assert_eq!(
        page.matches(&format!("<dd>{summer}</dd>")).count(),
        2,
        "{page}"
    );
    let token = csrf(&s, &session);
    let before = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    let saved = request(
        "POST",
        s.admin,
        &format!("/events/{id}/review"),
        Some(&session),
        Some(&[("csrf", &token), ("outcome", "no-action"), ("note", "ok")]),
    );
    assert_eq!(saved.status, 303, "{}", saved.body);
    let after = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
    let reviewed = review_time(&get(&format!("/events/{id}")));
    assert_eq!(reviewed.offset().local_minus_utc(), 5 * 3600 + 30 * 60);
    assert!(before <= reviewed && reviewed <= after, "{reviewed}");

    // Without `[server] timezone` it is London: +01:00 in summer, +00:00 in winter. The
    // config watcher reloads the edited file (bounded wait).
    let config = s.dir.path().join("warden.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("timezone = \"Asia/Kolkata\"\n", "")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let body = get("/events");
        if body.contains("2026-07-01 21:00:00 +01:00") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "London times never shown: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let winter_row = row_of(&body, "winter.zone.test").unwrap();
    assert!(winter_row.contains("2026-01-15 09:30:05 +00:00"), "{body}");
    stop_warden(s.warden.child);
}

/// All event ids linked from an events page, in page order.
fn event_ids(body: &str) -> Vec<i64> {
    body.split("href=\"/events/")
        .skip(1)
        .filter_map(|rest| rest[..rest.find('"')?].parse().ok())
        .collect()
}

/// The "Older" link of an events page, if it has one.
fn older_link(body: &str) -> Option<String> {
    let at = body.find("rel=\"next\"")?;
    let start = body[..at].rfind("href=\"")? + "href=\"".len();
    let end = body[start..].find('"')?;
    Some(body[start..start + end].replace("&amp;", "&"))
}

/// Paging walks every matching event once, newest first, by its "Older" links (keyset
/// paging: rows that share a time are neither skipped nor repeated), and the count and
/// the export agree with the pages.
#[test]
fn older_links_walk_every_event_once() {
    let s = setup();
    let session = sign_in(s.admin, "lead", LEAD_PASSWORD).unwrap();
    block_and_wait(&s, "first.blocked.test", &session);
    // 130 more rows, 10 to each second: beside the running server, as its writer would.
    let db = rusqlite::Connection::open(s.dir.path().join("data/audit.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    for i in 0..130 {
        db.execute(
            "INSERT INTO events (first_seen, last_seen, count, client_ip, grp, name, qtype, \
             categories, locked, list, line, rule, response, outcome) VALUES \
             (?1, ?1, 1, '10.0.0.9', 'default', ?2, 'A', 'adult', 0, 'adult', 1, 'x', \
             'nxdomain', 'blocked')",
            rusqlite::params![
                format!("2026-06-01T10:00:{:02}.000Z", i / 10),
                format!("n{i}.paged.test")
            ],
        )
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut path = "/events?category=adult".to_string();
    for _ in 0..10 {
        let page = request("GET", s.admin, &path, Some(&session), None);
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(page.body.contains("131 matching events"), "{}", page.body);
        seen.extend(event_ids(&page.body));
        match older_link(&page.body) {
            Some(next) => path = next,
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no event on two pages");
    assert_eq!(seen.len(), 131, "every event on some page");
    // The export of the same filter, from its own start date, writes the same rows.
    let csv = request(
        "GET",
        s.admin,
        "/export.csv?category=adult&since=2026-01-01",
        Some(&session),
        None,
    );
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("x-warden-rows"), Some("131"));
    assert_eq!(csv.body.lines().count(), 132, "header and 131 rows");
    stop_warden(s.warden.child);
}

/// A device's page counts its events up to 10,000 and then says "more than": counting
/// the busiest device's year would cost more than showing the page. Filters the rollups
/// answer stay exact however many rows match.
#[test]
fn a_device_page_counts_up_to_a_bound() {
    let s = setup();
    let session = sign_in(s.admin, "lead", LEAD_PASSWORD).unwrap();
    block_and_wait(&s, "first.blocked.test", &session);
    let mut db = rusqlite::Connection::open(s.dir.path().join("data/audit.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let tx = db.transaction().unwrap();
    for i in 0..10_001 {
        tx.execute(
            "INSERT INTO events (first_seen, last_seen, count, client_ip, device, grp, name, \
             qtype, categories, locked, list, line, rule, response, outcome) VALUES \
             (?1, ?1, 1, '10.0.0.9', 'busy-laptop', 'default', ?2, 'A', 'adult', 0, 'adult', \
             1, 'x', 'nxdomain', 'blocked')",
            rusqlite::params![
                format!("2026-06-01T10:{:02}:{:02}.000Z", i / 600 % 60, i / 10 % 60),
                format!("n{i}.busy.test")
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let device = request(
        "GET",
        s.admin,
        "/events?device=busy-laptop",
        Some(&session),
        None,
    );
    assert_eq!(device.status, 200, "{}", device.body);
    assert!(
        device.body.contains("more than 10000 matching events"),
        "{}",
        device.body
    );
    let category = request(
        "GET",
        s.admin,
        "/events?category=adult",
        Some(&session),
        None,
    );
    assert!(
        category.body.contains("10002 matching events"),
        "{}",
        category.body
    );
    stop_warden(s.warden.child);
}

const GOVERNOR_PASSWORD: &str = "governors review annually";

#[test]
fn a_governor_sees_the_overview_in_counts_and_never_who() {
    let s = setup_with(|_, config| add_user(config, "governor", "governor", GOVERNOR_PASSWORD));
    let lead = sign_in(s.admin, "lead", LEAD_PASSWORD).unwrap();
    let id = block_and_wait(&s, "locked.test", &lead);
    // The lead's overview names the serious block and the device.
    let wait_for = |session: &str, text: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let page = request("GET", s.admin, "/", Some(session), None);
            if page.body.contains(text) || Instant::now() > deadline {
                return page;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let page = wait_for(&lead, "/events?device=");
    assert!(page.body.contains("locked.test"), "{}", page.body);

    let governor = sign_in(s.admin, "governor", GOVERNOR_PASSWORD).unwrap();
    let page = request("GET", s.admin, "/", Some(&governor), None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Blocks per category"), "{}", page.body);
    assert!(
        page.body.contains("waiting for the e-safety lead"),
        "{}",
        page.body
    );
    for who in ["locked.test", "/events", "127.0.0.1"] {
        assert!(!page.body.contains(who), "{who} on a governor's page");
    }
    for path in [
        "/events".to_string(),
        format!("/events/{id}"),
        "/export.csv".to_string(),
        "/policy".to_string(),
    ] {
        assert_message(
            &request("GET", s.admin, &path, Some(&governor), None),
            403,
            "in counts",
        );
    }
    assert_message(
        &request("GET", s.admin, "/admin", Some(&governor), None),
        403,
        "Only an admin",
    );
    let token = csrf(&s, &governor);
    let review = request(
        "POST",
        s.admin,
        &format!("/events/{id}/review"),
        Some(&governor),
        Some(&[("csrf", &token), ("outcome", "no-action"), ("note", "x")]),
    );
    assert_message(&review, 403, "in counts");
    stop_warden(s.warden.child);
}

#[test]
fn two_factor_sign_in_refuses_a_wrong_or_reused_code() {
    let enrolled = std::sync::Mutex::new(None);
    let s = setup_with(|_, config| {
        *enrolled.lock().unwrap() = Some(enrol_second_factor(config, "lead"));
        let mut text = std::fs::read_to_string(config).unwrap();
        text = text.replace(
            "[dashboard]\n",
            "[dashboard]\nrequire_2fa_for = [\"admin\"]\n",
        );
        std::fs::write(config, text).unwrap();
    });
    let (secret, recovery) = enrolled.into_inner().unwrap().unwrap();
    let refused = |code: &str| {
        let reply = sign_in_with_code(s.admin, "lead", LEAD_PASSWORD, code).unwrap_err();
        assert_message(&reply, 401, "do not match");
    };
    // The right password alone, or with a code from ten minutes ahead, is not enough.
    refused("");
    refused(&totp_code(&secret, 600));
    // The code the app shows now signs in; the same code again does not.
    let code = totp_code(&secret, 0);
    let session = sign_in_with_code(s.admin, "lead", LEAD_PASSWORD, &code)
        .expect("the current code signs in");
    assert_eq!(
        request("GET", s.admin, "/", Some(&session), None).status,
        200
    );
    refused(&code);
    // A recovery code signs in once.
    assert!(sign_in_with_code(s.admin, "lead", LEAD_PASSWORD, &recovery[0]).is_ok());
    refused(&recovery[0]);
    // An admin's role needs a second factor, and theirs is not set up: not signed in,
    // and told what to do.
    let admin = sign_in(s.admin, "admin", ADMIN_PASSWORD).unwrap_err();
    assert_message(&admin, 403, "warden user 2fa admin");

    let results = strings(&s, "SELECT user || ':' || result FROM signins ORDER BY id");
    assert_eq!(
        results,
        [
            "lead:wrong-code",
            "lead:wrong-code",
            "lead:ok",
            "lead:reused-code",
            "lead:ok",
            "lead:reused-code",
            "admin:needs-2fa",
        ]
    );
    stop_warden(s.warden.child);
}

/// Whether Warden blocks `name` (its answer carries the Blocked extended error; a name
/// it forwards gets the test upstream's answer without one).
fn is_blocked(s: &Setup, name: &str) -> bool {
    let reply = s
        .runtime
        .block_on(udp(s.warden.dns, &format!("{name}."), RecordType::A, true));
    ede(&reply).is_some()
}

#[test]
fn an_allow_entry_with_an_end_date_ends_then_and_says_so() {
    let s = setup_with(|dir, _| {
        // As the form writes them: one that ended yesterday, one that holds for years.
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(
            dir.join("data/allow-dashboard.txt"),
            "# 2025-11-05T09:00:00Z by admin until 2025-11-06T00:00:00Z: the Year 9 trip\n\
             blocked.test\n\
             # 2025-11-05T09:00:00Z by admin until 2099-01-01T00:00:00Z: science lessons\n\
             tracker.test\n",
        )
        .unwrap();
    });
    // The ended one is taken out at start-up (and recorded); the other stays allowed.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !is_blocked(&s, "blocked.test") {
        assert!(Instant::now() < deadline, "the ended entry still allows");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!is_blocked(&s, "tracker.test"));
    assert!(is_blocked(&s, "www.blocked.test"));
    let file = std::fs::read_to_string(s.dir.path().join("data/allow-dashboard.txt")).unwrap();
    assert!(
        !file.contains("blocked.test") && file.contains("tracker.test"),
        "{file}"
    );
    let changes = strings(&s, "SELECT by || ' ' || action || ' ' || name || ': ' || reason FROM allow_changes ORDER BY id");
    assert_eq!(changes, ["warden expire blocked.test: the Year 9 trip"]);

    // The form takes a last day: not in the past, not beyond a year, a real date.
    let admin = sign_in(s.admin, "admin", ADMIN_PASSWORD).unwrap();
    let today = chrono::Utc::now().date_naive();
    let post = |name: &str, until: &str| {
        let token = csrf(&s, &admin);
        request(
            "POST",
            s.admin,
            "/admin/allow",
            Some(&admin),
            Some(&[
                ("csrf", &token),
                ("name", name),
                ("reason", "a lesson"),
                ("until", until),
            ]),
        )
    };
    let past = (today - chrono::Days::new(3)).to_string();
    assert_message(&post("ok1.test", &past), 400, "in the past");
    let far = (today + chrono::Days::new(400)).to_string();
    assert_message(&post("ok1.test", &far), 400, "at most a year ahead");
    assert_message(&post("ok1.test", "next friday"), 400, "is not a date");
    let tomorrow = today + chrono::Days::new(1);
    assert_eq!(post("ok1.test", &tomorrow.to_string()).status, 303);
    let file = std::fs::read_to_string(s.dir.path().join("data/allow-dashboard.txt")).unwrap();
    let ends = format!("until {}T00:00:00", tomorrow + chrono::Days::new(1));
    assert!(file.contains(&ends), "{file}");
    let page = request("GET", s.admin, "/admin", Some(&admin), None);
    assert!(page.body.contains("until "), "{}", page.body);
    // Added over a year ago: the page asks whether it is still needed.
    assert!(page.body.contains("still needed"), "{}", page.body);
    stop_warden(s.warden.child);
}

#[test]
fn every_config_change_is_recorded_with_its_diff_and_no_secret() {
    let s = setup();
    let config = s.dir.path().join("warden.toml");
    let db = s.dir.path().join("data/audit.sqlite");
    let rows = || -> Vec<(String, String, String)> {
        let Ok(db) = rusqlite::Connection::open(&db) else {
            return Vec::new();
        };
        let Ok(mut stmt) = db.prepare("SELECT why, diff, text FROM config_changes ORDER BY id")
        else {
            return Vec::new();
        };
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map(|rows| rows.filter_map(Result::ok).collect())
            .unwrap_or_default()
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = rows();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let started = wait_for(1);
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].0, "start");
    // The watcher reloads an edited config; the change is recorded with its diff.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("Hillside School", "Hillside Academy")).unwrap();
    let changed = wait_for(2);
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert_eq!(changed[1].0, "reload");
    assert!(
        changed[1].1.contains("-organisation = \"Hillside School\""),
        "{}",
        changed[1].1
    );
    assert!(
        changed[1]
            .1
            .contains("+organisation = \"Hillside Academy\""),
        "{}",
        changed[1].1
    );
    // The users' password hashes never reach the history.
    assert!(text.contains("$argon2id$"));
    for (_, diff, text) in &changed {
        assert!(!diff.contains("$argon2id$") && !text.contains("$argon2id$"));
    }
    // The admin page shows the change.
    let admin = sign_in(s.admin, "admin", ADMIN_PASSWORD).unwrap();
    let page = request("GET", s.admin, "/admin", Some(&admin), None);
    assert!(page.body.contains("Recent config changes"), "{}", page.body);
    assert!(
        page.body
            .contains("+organisation = &quot;Hillside Academy&quot;"),
        "{}",
        page.body
    );
    stop_warden(s.warden.child);
}
