//! The admin listener of the real binary: `/metrics` parses as Prometheus text and its
//! counters move with queries; health and readiness; `POST /reload` needs the token, and
//! `warden reload` uses it; a list replaced by garbage, an empty file or a tenth of
//! itself is refused, and the refusal shows in `/metrics` and the log.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Every sample of a `/metrics` page, keyed `name{label="v",…}` (labels sorted), after
/// checking that the page parses as Prometheus text exposition.
fn scrape(admin: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = http("GET", admin, "/metrics", &[]);
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    assert!(!parsed.samples.is_empty());
    // The parser is lenient; insist on the format's basics ourselves too.
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "{line}"
            );
        } else {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line: {line}");
        }
    }
    let mut out = HashMap::new();
    for sample in parsed.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            sample.metric.clone()
        } else {
            format!("{}{{{}}}", sample.metric, labels.join(","))
        };
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|c| c.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => 0.0,
        };
        out.insert(key, value);
    }
    out
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[test]
fn metrics_parse_and_move_with_queries() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), upstream_addr, "");
    let warden = spawn_warden_full(&path, &[]);
    let admin = warden.admin.expect("admin address logged");

    let before = scrape(admin);
    assert_eq!(get(&before, "warden_snapshot_generation"), 1.0);
    assert_eq!(
        get(
            &before,
            r#"warden_list_rules{category="adult",list="adult"}"#
        ),
        2.0
    );
    assert_eq!(
        get(&before, r#"warden_category_rules{category="terrorism"}"#),
        1.0
    );

    runtime.block_on(async {
        for i in 0..5 {
            let r = udp(
                warden.dns,
                &format!("n{i}.blocked.test."),
                RecordType::A,
                true,
            )
            .await;
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        }
        udp(warden.dns, "locked.test.", RecordType::AAAA, true).await;
        for _ in 0..3 {
            let r = udp(warden.dns, "allowed.test.", RecordType::A, true).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        }
    });
    assert_eq!(
        upstream.count("allowed.test."),
        1,
        "two of three from the cache"
    );

    // The audit counters are read at scrape time; give the writer its flush interval.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let m = scrape(admin);
        if get(&m, "warden_audit_rows_written_total") >= 2.0 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let moved = |key: &str| get(&after, key) - get(&before, key);
    assert_eq!(
        moved(r#"warden_queries_total{outcome="blocked",qtype="A"}"#),
        5.0
    );
    assert_eq!(
        moved(r#"warden_queries_total{outcome="blocked",qtype="AAAA"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"warden_queries_total{outcome="allowed",qtype="A"}"#),
        3.0
    );
    assert_eq!(
        moved(r#"warden_blocks_total{category="adult",group="default"}"#),
        5.0
    );
    assert_eq!(
        moved(r#"warden_blocks_total{category="terrorism",group="default"}"#),
        1.0
    );
    assert_eq!(moved("warden_cache_misses_total"), 1.0);
    assert_eq!(moved("warden_cache_hits_total"), 2.0);
    assert_eq!(
        moved("warden_upstream_duration_seconds"),
        1.0,
        "one upstream round trip observed"
    );
    assert_eq!(moved("warden_audit_events_total"), 6.0);
    // Upstream health: each server's responses by status.
    let healthy = r#"warden_upstream_responses_total{server="127.0.0.1",status="success"}"#;
    assert!(get(&after, healthy) >= 1.0, "{healthy} missing");
    assert!(get(&after, "warden_audit_rows_written_total") >= 2.0);
    assert!(get(&after, "warden_snapshot_age_seconds") >= 0.0);

    // Labels stay low-cardinality: no query names, no client addresses.
    let (_, text) = http("GET", admin, "/metrics", &[]);
    // (The upstream servers' own addresses label their health series; clients never do.)
    let leaks: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("blocked.test") || l.contains("127.0.0.1"))
        .filter(|l| !l.contains("warden_upstream_responses_total{server="))
        .collect();
    assert!(leaks.is_empty(), "{leaks:?}");
    stop_warden(warden.child);
}

#[test]
fn health_readiness_and_reload_with_its_token() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), upstream_addr, "");
    let warden = spawn_warden_full(&path, &[]);
    let admin = warden.admin.unwrap();

    let (status, body) = http("GET", admin, "/healthz", &[]);
    assert_eq!((status, body.starts_with("ok")), (200, true), "{body}");
    assert_eq!(http("GET", admin, "/readyz", &[]).0, 200);
    assert_eq!(http("GET", admin, "/nothing", &[]).0, 404);
    assert_eq!(http("GET", admin, "/reload", &[]).0, 405);

    // The token was created at start-up, private to its owner.
    let token_file = dir.path().join("admin.token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(token.len(), 64);
    for bad in ["", "Bearer nope", "Basic abc", &format!("Bearer {token}x")] {
        let headers: &[(&str, &str)] = if bad.is_empty() {
            &[]
        } else {
            &[("Authorization", bad)]
        };
        let (status, body) = http("POST", admin, "/reload", headers);
        assert_eq!(status, 401, "{bad:?}: {body}");
    }
    let bearer = format!("Bearer {token}");
    let (status, body) = http("POST", admin, "/reload", &[("Authorization", &bearer)]);
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["generation"], 2);

    // `warden reload` finds the listener and token through the config.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["reload", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The config says port 0, so the CLI cannot know the port: it must say so clearly.
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no running Warden answered"), "{stderr}");

    // With the real port in the config, it works.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{admin}\""));
    let fixed = dir.path().join("cli.toml");
    std::fs::write(&fixed, text).unwrap();
    let stdout = common::cli_reload(&fixed);
    assert!(stdout.starts_with("reloaded: snapshot 3"), "{stdout}");
    let m = scrape(admin);
    assert_eq!(get(&m, "warden_reloads_total"), 2.0);
    assert_eq!(get(&m, "warden_snapshot_generation"), 3.0);

    // The token never reaches the log.
    assert!(!warden.log_text().contains(&token));
    stop_warden(warden.child);
}

#[test]
fn refused_list_changes_show_in_metrics_and_the_log() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), upstream_addr, "");
    let list = dir.path().join("adult.txt");
    let full: String = std::iter::once("blocked.test\n".to_string())
        .chain((0..99).map(|i| format!("site{i}.test\n")))
        .collect();
    std::fs::write(&list, &full).unwrap();
    let warden = spawn_warden_full(&path, &[]);
    let admin = warden.admin.unwrap();
    assert_eq!(
        get(
            &scrape(admin),
            r#"warden_list_rules{category="adult",list="adult"}"#
        ),
        100.0
    );

    let tenth: String = full.lines().take(10).map(|l| format!("{l}\n")).collect();
    let garbage = "<html><body>\nSign in to continue\n</body></html>\n";
    for (round, replacement) in [garbage, "", tenth.as_str()].into_iter().enumerate() {
        std::fs::write(&list, replacement).unwrap();
        // The watcher reloads after its debounce; wait for the refusal to be counted.
        let deadline = Instant::now() + Duration::from_secs(15);
        let m = loop {
            let m = scrape(admin);
            if get(&m, "warden_reload_failures_total") > round as f64 || Instant::now() > deadline {
                break m;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(
            get(&m, "warden_reload_failures_total"),
            (round + 1) as f64,
            "round {round}"
        );
        assert_eq!(
            get(&m, r#"warden_list_refresh_failures_total{list="adult"}"#),
            (round + 1) as f64
        );
        assert_eq!(
            get(&m, "warden_snapshot_generation"),
            1.0,
            "the old snapshot serves"
        );
        assert_eq!(
            get(&m, r#"warden_list_rules{category="adult",list="adult"}"#),
            100.0
        );
        let rcode = runtime.block_on(async {
            udp(warden.dns, "site50.test.", RecordType::A, true)
                .await
                .metadata
                .response_code
        });
        assert_eq!(
            rcode,
            ResponseCode::NXDomain,
            "old rules still apply (round {round})"
        );
    }
    let log = warden.log_text();
    let refusals = log
        .lines()
        .filter(|l| l.contains("reload rejected") && l.contains("adult"))
        .count();
    assert_eq!(refusals, 3, "{log}");
    stop_warden(warden.child);
}
