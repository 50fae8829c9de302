//! An allow entry added through the dashboard of the real `warden serve` is in force at
//! the next query once the form answers, with the big list's layer kept (the reload
//! says `base_reused=true` in the log), recorded in the audit log's allow changes, and
//! unable to override a locked name; an edit of the big list then rebuilds that layer
//! (`POST /reload` answers `base_reused: false`) and keeps the allow entry in force.

mod common;

use std::time::{Duration, Instant};

use common::dashboard::{dashboard_config, request, sign_in, ADMIN_PASSWORD};
use common::*;
use hickory_proto::rr::RecordType;

/// Names added to the adult list: over the overlay's limit, so it is in the base.
const BIG: usize = 25_000;

/// Wait (bounded) for a log line with every one of `parts`.
fn logged(warden: &Spawned, parts: &[&str]) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let log = warden.log_text();
        if log.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_dashboard_allow_entry_applies_at_the_next_query_without_rebuilding_the_big_list() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let dir = tempfile::tempdir().unwrap();
    let config = dashboard_config(dir.path(), upstream_addr);
    let many: String = (0..BIG).map(|i| format!("big{i}.test\n")).collect();
    std::fs::write(dir.path().join("adult.txt"), format!("{ADULT}{many}")).unwrap();
    let warden = spawn_warden_full(&config, &[]);
    let admin = warden.admin.expect("admin address logged");

    // Whether a query for `name` is answered by Warden's block (true) or forwarded
    // (each name is asked once: a repeat would be answered from the forwarder's cache).
    let blocked = |name: &str| {
        let before = upstream.count(name);
        let reply = runtime.block_on(udp(warden.dns, name, RecordType::A, true));
        let forwarded = upstream.count(name) > before;
        assert_eq!(forwarded, ede(&reply).is_none(), "{name}: {reply:?}");
        !forwarded
    };
    assert!(blocked("www.big7.test."));
    assert!(blocked("locked.test."));

    let session = sign_in(admin, "admin", ADMIN_PASSWORD).unwrap();
    let page = request("GET", admin, "/admin", Some(&session), None);
    let csrf = page.hidden("csrf").expect("csrf field");
    let added = request(
        "POST",
        admin,
        "/admin/allow",
        Some(&session),
        Some(&[
            ("csrf", &csrf),
            ("name", "big7.test"),
            ("reason", "a lesson"),
        ]),
    );
    assert_eq!(added.status, 303, "{}", added.body);
    // The reload has returned by the time the form answers: in force now.
    assert!(!blocked("www.big7.test."));
    assert!(blocked("big8.test."));
    assert!(blocked("locked.test."));
    assert!(
        logged(
            &warden,
            &[
                "reloaded the rules",
                "admin add big7.test",
                "base_reused=true"
            ]
        ),
        "{}",
        warden.log_text()
    );
    let db = rusqlite::Connection::open(dir.path().join("data/audit.sqlite")).unwrap();
    let recorded: i64 = db
        .query_row(
            "SELECT count(*) FROM allow_changes WHERE action = 'add' AND name = 'big7.test'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(recorded, 1);

    // The big list edited: its layer is rebuilt, and the allow entry stays in force.
    let adult = dir.path().join("adult.txt");
    let text = std::fs::read_to_string(&adult).unwrap();
    std::fs::write(&adult, format!("{text}extra.test\n")).unwrap();
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let (status, body) = http("POST", admin, "/reload", &[("Authorization", &bearer)]);
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["base_reused"], false, "{body}");
    assert!(blocked("extra.test."));
    // (A name not asked before: the forwarder's cache would answer a repeat.)
    assert!(!blocked("mail.big7.test."));
    stop_warden(warden.child);
}
