//! Client groups over UDP: two clients in different groups get different answers for the
//! same name; a schedule window flips a category on and off (with an injected clock);
//! safe-search names are answered with CNAMEs; the DoH canary, Private Relay and DDR
//! names get their specified answers; a group's own allow list never beats a locked
//! category; and config validation refuses every attempt to allow a locked one.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, TimeZone, Utc};
use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use warden::dns;
use warden::engine::Engine;
use warden::upstream::Forwarder;

const STAFF: &str = "127.0.0.2";
const PUPIL: &str = "127.0.0.1"; // no [[clients]] entry: the default group

fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
default_group = "young-people"
timezone = "Europe/London"
[upstream]
servers = ["{upstream}"]
timeout = "1s"
[audit]
enabled = false
[categories.adult]
[categories.social]
[categories.terrorism]
locked = true

[groups.young-people]
block = ["adult"]
safe_search = true
youtube = "strict"
[[groups.young-people.schedule]]
block = ["social"]
days = ["weekdays"]
from = "09:00"
to = "17:00"

[groups.staff]
block = ["adult"]
youtube = "moderate"
circumvention = false

[[clients]]
cidr = "{STAFF}"
group = "staff"
name = "staff-laptop"
[[clients]]
cidr = "127.0.0.0/8"
group = "young-people"

[[lists]]
name = "adult"
category = "adult"
path = "adult.txt"
[[lists]]
name = "social"
category = "social"
path = "social.txt"
[[lists]]
name = "ctiru"
category = "terrorism"
path = "ctiru.txt"
[[allow]]
name = "staff-exceptions"
path = "staff-allow.txt"
groups = ["staff"]
[[deny]]
name = "pupil-extras"
path = "pupil-deny.txt"
groups = ["young-people"]
"#
    )
}

struct Site {
    dns: SocketAddr,
    clock: Arc<AtomicI64>,
    _server: dns::RunningServer,
    _dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

/// Monday 2026-11-23 at `h:m`, London time.
fn monday(h: u32, m: u32) -> DateTime<Utc> {
    chrono_tz::Europe::London
        .with_ymd_and_hms(2026, 11, 23, h, m, 0)
        .unwrap()
        .with_timezone(&Utc)
}

async fn site() -> Site {
    let (_upstream, upstream_addr, token) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("adult.txt"), "blocked.test\n").unwrap();
    std::fs::write(dir.path().join("social.txt"), "social.test\n").unwrap();
    std::fs::write(dir.path().join("ctiru.txt"), "locked.test\n").unwrap();
    std::fs::write(dir.path().join("pupil-deny.txt"), "allowed.test\n").unwrap();
    std::fs::write(
        dir.path().join("staff-allow.txt"),
        "research.blocked.test\nlocked.test\n",
    )
    .unwrap();
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, config(upstream_addr)).unwrap();
    let engine = Engine::load(&path).unwrap();
    let forwarder = Forwarder::new(&engine.config.upstream).unwrap();
    let clock = Arc::new(AtomicI64::new(monday(10, 0).timestamp()));
    let read = clock.clone();
    let handler = dns::Handler::new(Arc::new(ArcSwap::from_pointee(engine)), forwarder).with_clock(
        Arc::new(move || Utc.timestamp_opt(read.load(Ordering::Relaxed), 0).unwrap()),
    );
    let server = dns::start(&["127.0.0.1:0".parse().unwrap()], handler, WAIT)
        .await
        .unwrap();
    Site {
        dns: server.addrs[0],
        clock,
        _server: server,
        _dir: dir,
        _stop: token.drop_guard(),
    }
}

async fn ask(site: &Site, from: &str, name: &str, qtype: RecordType) -> Message {
    udp_from(from.parse::<IpAddr>().unwrap(), site.dns, name, qtype).await
}

fn blocked(m: &Message) -> bool {
    ede(m).is_some_and(|(code, _)| code == 15 || code == 17)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_get_their_own_answers_and_schedules_flip() {
    let site = site().await;
    // Monday 10:00: school hours. Young people have social blocked; staff do not.
    assert!(blocked(
        &ask(&site, PUPIL, "social.test.", RecordType::A).await
    ));
    let staff = ask(&site, STAFF, "social.test.", RecordType::A).await;
    assert!(!blocked(&staff));
    assert_eq!(staff.metadata.response_code, ResponseCode::NoError);

    // 17:00: the window closes and social opens for young people too.
    site.clock
        .store(monday(17, 0).timestamp(), Ordering::Relaxed);
    assert!(!blocked(
        &ask(&site, PUPIL, "social.test.", RecordType::A).await
    ));
    // Saturday 10:00: a weekday-only window stays shut.
    let saturday = monday(10, 0) + chrono::Duration::days(5);
    site.clock.store(saturday.timestamp(), Ordering::Relaxed);
    assert!(!blocked(
        &ask(&site, PUPIL, "social.test.", RecordType::A).await
    ));
    // Back to Monday 16:59: on again.
    site.clock
        .store(monday(16, 59).timestamp(), Ordering::Relaxed);
    assert!(blocked(
        &ask(&site, PUPIL, "social.test.", RecordType::A).await
    ));

    // Staff's own allow list exempts a more specific name from adult, for staff only.
    assert!(!blocked(
        &ask(&site, STAFF, "research.blocked.test.", RecordType::A).await
    ));
    assert!(blocked(
        &ask(&site, PUPIL, "research.blocked.test.", RecordType::A).await
    ));
    assert!(blocked(
        &ask(&site, STAFF, "www.blocked.test.", RecordType::A).await
    ));
    // Young people's own deny list blocks a name for them only.
    let r = ask(&site, PUPIL, "allowed.test.", RecordType::A).await;
    assert_eq!(
        ede(&r).map(|e| e.1),
        Some("blocked by Warden: group-deny".to_string())
    );
    let r = ask(&site, STAFF, "allowed.test.", RecordType::A).await;
    assert_eq!(r.answers.len(), 1, "staff get the real answer");
    // …and never a locked category, whatever its allow list says.
    for who in [STAFF, PUPIL] {
        let r = ask(&site, who, "locked.test.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{who}");
        assert!(blocked(&r));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_search_names_are_answered_with_cnames() {
    let site = site().await;
    let cases = [
        (
            PUPIL,
            "www.google.com.",
            "forcesafesearch.google.com.",
            [216, 239, 38, 120],
        ),
        (
            PUPIL,
            "www.google.co.uk.",
            "forcesafesearch.google.com.",
            [216, 239, 38, 120],
        ),
        (
            PUPIL,
            "www.bing.com.",
            "strict.bing.com.",
            [204, 79, 197, 220],
        ),
        (
            PUPIL,
            "duckduckgo.com.",
            "safe.duckduckgo.com.",
            [52, 142, 124, 215],
        ),
        (
            PUPIL,
            "www.youtube.com.",
            "restrict.youtube.com.",
            [216, 239, 38, 120],
        ),
        (
            PUPIL,
            "youtubei.googleapis.com.",
            "restrict.youtube.com.",
            [216, 239, 38, 120],
        ),
        (
            STAFF,
            "m.youtube.com.",
            "restrictmoderate.youtube.com.",
            [216, 239, 38, 119],
        ),
    ];
    for (who, name, target, ip) in cases {
        let r = ask(&site, who, name, RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(r.answers.len(), 2, "{name}: {:?}", r.answers);
        assert_eq!(r.answers[0].name.to_string(), name);
        match &r.answers[0].data {
            RData::CNAME(c) => assert_eq!(c.0.to_string(), target, "{name}"),
            other => panic!("{name}: expected a CNAME first, got {other:?}"),
        }
        assert_eq!(r.answers[1].name.to_string(), target);
        assert_eq!(
            r.answers[1].data,
            RData::A(hickory_proto::rr::rdata::A(ip.into()))
        );
    }
    // Staff have no search rewriting (safe_search is off for them).
    let r = ask(&site, STAFF, "www.google.com.", RecordType::A).await;
    assert!(r.answers.iter().all(|a| !matches!(a.data, RData::CNAME(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circumvention_names_get_their_specified_answers() {
    let site = site().await;
    for name in [
        "use-application-dns.net.",
        "mask.icloud.com.",
        "mask-h2.icloud.com.",
    ] {
        let r = ask(&site, PUPIL, name, RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(r.answers.is_empty());
        assert_eq!(ede(&r).map(|e| e.0), Some(17), "{name}: EDE Filtered");
    }
    let ddr = ask(&site, PUPIL, "_dns.resolver.arpa.", RecordType::SVCB).await;
    assert_eq!(ddr.metadata.response_code, ResponseCode::NoError);
    assert!(ddr.answers.is_empty(), "NODATA");
    assert!(blocked(&ddr));
    // Staff turned circumvention off: the canary goes upstream like any name.
    let r = ask(&site, STAFF, "use-application-dns.net.", RecordType::A).await;
    assert!(!blocked(&r));
}

fn refused(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a.test\n").unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(&path, text).unwrap();
    warden::config::Config::load(&path).unwrap_err().to_string()
}

#[test]
fn config_refuses_to_allow_a_locked_category_for_any_group() {
    let head = "[categories.terrorism]\nlocked = true\n[categories.social]\n";
    let err = refused(&format!(
        "{head}[groups.default]\nblock = [\"social\"]\n[[groups.default.schedule]]\nallow = [\"terrorism\"]\nfrom = \"12:00\"\nto = \"13:00\"\n"
    ));
    assert!(
        err.contains(":7:") && err.contains("\"terrorism\" is locked"),
        "{err}"
    );
    let err = refused(&format!(
        "{head}[categories.circumvention]\nlocked = true\n[groups.default]\ncircumvention = false\n"
    ));
    assert!(
        err.contains(":7:") && err.contains("no group can turn it off"),
        "{err}"
    );
    // Other mistakes name their line too.
    let err = refused(&format!(
        "{head}[groups.default]\n[[groups.default.schedule]]\nblock = [\"social\"]\ndays = [\"funday\"]\nfrom = \"09:00\"\nto = \"17:00\"\n"
    ));
    assert!(err.contains(":7:") && err.contains("funday"), "{err}");
    let err = refused(&format!(
        "{head}[groups.default]\n[[groups.default.schedule]]\nblock = [\"social\"]\nfrom = \"09:00\"\nto = \"25:00\"\n"
    ));
    assert!(err.contains(":8:") && err.contains("25:00"), "{err}");
    let err = refused(&format!(
        "{head}[[clients]]\ncidr = \"10.0.0.0/8\"\ngroup = \"pupils\"\n"
    ));
    assert!(
        err.contains(":6:") && err.contains("undefined group \"pupils\""),
        "{err}"
    );
    let err = refused(&format!(
        "{head}[[clients]]\ncidr = \"10.0.0.0/40\"\ngroup = \"default\"\n"
    ));
    assert!(err.contains(":5:") && err.contains("10.0.0.0/40"), "{err}");
    let err = refused("[server]\ntimezone = \"Mars/Olympus\"\n");
    assert!(err.contains(":2:") && err.contains("Mars/Olympus"), "{err}");
}

#[test]
fn check_names_group_schedule_and_category_for_a_client_and_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("adult.txt"), "blocked.test\n").unwrap();
    std::fs::write(dir.path().join("social.txt"), "social.test\n").unwrap();
    std::fs::write(dir.path().join("ctiru.txt"), "locked.test\n").unwrap();
    std::fs::write(dir.path().join("pupil-deny.txt"), "allowed.test\n").unwrap();
    std::fs::write(
        dir.path().join("staff-allow.txt"),
        "research.blocked.test\n",
    )
    .unwrap();
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, config("127.0.0.1:9".parse().unwrap())).unwrap();
    let check = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["check", "--config", path.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, _) = check(&[
        "--client",
        PUPIL,
        "--at",
        "2026-11-23T10:00",
        "www.social.test",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(
        out,
        "www.social.test\tblocked\tsocial\tsocial:1\tsocial.test\tgroup young-people\tschedule weekdays 09:00-17:00"
    );
    let (code, out, _) = check(&[
        "--client",
        PUPIL,
        "--at",
        "2026-11-23T18:00",
        "www.social.test",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "www.social.test\tallowed\tgroup young-people")
    );
    let (code, out, _) = check(&[
        "--client",
        STAFF,
        "--at",
        "2026-11-23T10:00",
        "social.test",
        "research.blocked.test",
        "www.google.com",
    ]);
    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "social.test\tallowed\tgroup staff");
    assert_eq!(lines[1], "research.blocked.test\tallowed\tgroup staff");
    assert_eq!(lines[2], "www.google.com\tallowed\tgroup staff");
    let (_, out, _) = check(&[
        "--at",
        "2026-11-23T10:00",
        "www.google.com",
        "use-application-dns.net",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "www.google.com\tsafe-search\tforcesafesearch.google.com\tgroup young-people"
    );
    assert_eq!(
        lines[1],
        "use-application-dns.net\tblocked\tcircumvention\tbuilt-in\tNxDomain\tgroup young-people"
    );
    // A local time the clocks skip, and nonsense, are clear errors (exit 2).
    let (code, out, _) = check(&["--client", PUPIL, "www.allowed.test"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        out,
        "www.allowed.test\tblocked\tgroup-deny\tpupil-extras:1\tallowed.test\tgroup young-people"
    );
    let (code, _, err) = check(&["--at", "2026-03-29T01:30", "a.test"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("2026-03-29T01:30") && err.contains("skip"),
        "{err}"
    );
    let (code, _, err) = check(&["--at", "tomorrow", "a.test"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("tomorrow"), "{err}");
}

#[test]
fn the_audit_log_names_the_group_and_device() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("adult.txt"), "blocked.test\n").unwrap();
    std::fs::write(dir.path().join("social.txt"), "social.test\n").unwrap();
    std::fs::write(dir.path().join("ctiru.txt"), "locked.test\n").unwrap();
    std::fs::write(dir.path().join("staff-allow.txt"), "x.test\n").unwrap();
    std::fs::write(dir.path().join("pupil-deny.txt"), "allowed.test\n").unwrap();
    let text = config(upstream_addr).replace(
        "[audit]\nenabled = false",
        "[audit]\npath = \"audit.sqlite\"\nflush_interval = \"100ms\"\n[admin]\nenabled = false",
    );
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, text).unwrap();
    let (child, dns) = spawn_warden(&path);
    runtime.block_on(async {
        udp_from(
            STAFF.parse().unwrap(),
            dns,
            "www.blocked.test.",
            RecordType::A,
        )
        .await;
        udp_from(
            PUPIL.parse().unwrap(),
            dns,
            "mask.icloud.com.",
            RecordType::A,
        )
        .await;
    });
    assert!(stop_warden(child).success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "audit",
            "list",
            "--json",
            "--config",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let by_name = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap().clone();
    let staff = by_name("www.blocked.test");
    assert_eq!(
        (staff["group"].as_str(), staff["device"].as_str()),
        (Some("staff"), Some("staff-laptop")),
        "{staff}"
    );
    let relay = by_name("mask.icloud.com");
    assert_eq!(relay["group"], "young-people");
    assert_eq!(relay["categories"], "circumvention");
    assert_eq!(relay["list"], "built-in");
}
