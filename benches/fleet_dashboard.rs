//! Fleet dashboard page times (issue #15): `warden fleet serve` (the release binary)
//! over a central store of 1M and then 10M rows of 50 sites spread over a year, in a
//! throwaway PostgreSQL cluster this bench starts (Debian's `postgresql`, as the tests).
//!
//! The rows are made by SQL inside the server, not shipped: ingestion has its own bench
//! (`benches/fleet.rs`), and shipping 10M rows would take most of an hour to set up for
//! page reads that do not depend on how the rows arrived. They have the shipped rows'
//! shape: every column, a site's seqs without a gap, categories mixed as at a school
//! (70% adult, 15% gambling, 10% social, 4% adult and gambling, 1% terrorism, the
//! serious one, at every site), 1,500 devices a site, 1% reviewed; `category_sets`, `sites` and
//! `reviews` as ingestion keeps them; then `VACUUM ANALYZE`, as autovacuum would leave it.
//!
//! Each page is fetched once to warm up, then [`TRIES`] times: the median and the slowest
//! are reported, beside a baseline taken in the same run (`SELECT 1` over the same
//! dashboard connection path: a page that does nothing but the session check and the
//! render of an error, `/events/0`). The plans of every statement over 100 ms are
//! logged by `auto_explain`, and the slowest page's are printed.
//!
//! Run: `cargo bench --bench fleet_dashboard` (sizes from `WARDEN_FLEET_DASHBOARD_SIZES`,
//! default `1m,10m`; the table is written to `benches/results/fleet-dashboard-<date>.txt`).
//! `cargo test --all-targets` runs it at 20,000 rows as a smoke test.

#[path = "../tests/common/postgres.rs"]
mod postgres;

#[allow(dead_code)]
#[path = "../tests/common/dashboard.rs"]
mod dashboard;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use chrono::Datelike;

/// Tries per page after the warm-up.
const TRIES: usize = 7;
/// Sites in the central store.
const SITES: u64 = 50;
/// Rows inserted per statement.
const CHUNK: u64 = 1_000_000;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<u64> = match full {
        true => std::env::var("WARDEN_FLEET_DASHBOARD_SIZES")
            .unwrap_or_else(|_| "1m,10m".into())
            .split(',')
            .map(|s| parse_size(s.trim()))
            .collect(),
        false => vec![20_000],
    };
    let pg = postgres::Postgres::start();
    // Plans of the slow statements, in the server's log.
    // Loaded first: a session knows the module's settings only once it has loaded it.
    pg.superuser("ALTER SYSTEM SET session_preload_libraries = 'auto_explain'");
    pg.superuser("SELECT pg_reload_conf()");
    for setting in [
        "auto_explain.log_min_duration = '100ms'",
        "auto_explain.log_analyze = on",
        "auto_explain.log_buffers = on",
    ] {
        pg.superuser(&format!("ALTER SYSTEM SET {setting}"));
    }
    pg.superuser("SELECT pg_reload_conf()");
    let dir = tempfile::tempdir().expect("a work folder");
    let fleet = FleetServe::start(dir.path(), &pg);
    wait_for_schema(&pg);
    let session = dashboard::sign_in(fleet.addr, "trust", dashboard::LEAD_PASSWORD)
        .expect("the trust's lead signs in");
    let mut report = vec![format!(
        "Fleet dashboard, {} (PostgreSQL {}, 2 cores, {SITES} sites, rows over 360 days)",
        warden::audit::rfc3339(SystemTime::now()),
        pg.sql("SHOW server_version")
    )];
    let mut made = 0;
    let mut slowest: (f64, String, u64) = (0.0, String::new(), 0);
    for size in sizes {
        let started = Instant::now();
        fill(&pg, made, size);
        made = size;
        eprintln!(
            "{size} rows made in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        report.push(format!("\n{size} central rows:"));
        let log_from = pg.server_log().len();
        for (what, path) in pages() {
            let (median, max) = time_page(fleet.addr, &session, &path);
            report.push(format!(
                "  {what:<44} median {median:>7.3} s   slowest {max:>7.3} s"
            ));
            if median > slowest.0 {
                slowest = (median, what.to_string(), size);
            }
        }
        let plans = slow_plans(&pg.server_log()[log_from..]);
        report.push(format!(
            "  statements over 100 ms at this size: {}",
            plans.len()
        ));
        if size == made && !plans.is_empty() {
            report.push("  their plans (auto_explain):".into());
            for plan in plans.iter().take(6) {
                report.push(indent(plan));
            }
        }
    }
    report.push(format!(
        "\nslowest page: {} at {} rows, median {:.3} s",
        slowest.1, slowest.2, slowest.0
    ));
    let report = report.join("\n");
    println!("{report}");
    if full {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let day = &warden::audit::rfc3339(SystemTime::now())[..10];
        let out = root.join(format!("benches/results/fleet-dashboard-{day}.txt"));
        std::fs::write(&out, format!("{report}\n")).expect("writing the results");
        println!("written to {}", out.display());
    }
}

fn parse_size(text: &str) -> u64 {
    let (digits, scale) = match text.strip_suffix('m') {
        Some(d) => (d, 1_000_000),
        None => match text.strip_suffix('k') {
            Some(d) => (d, 1_000),
            None => (text, 1),
        },
    };
    digits.parse::<u64>().expect("a size like 1m or 200k") * scale
}

/// The pages timed: what each shows, and its address.
fn pages() -> Vec<(&'static str, String)> {
    let day = |days: u64| {
        let t = SystemTime::now() - Duration::from_secs(days * 86_400);
        warden::audit::rfc3339(t)[..10].to_string()
    };
    vec![
        (
            "baseline: unknown event (session + 404)",
            "/events/0".into(),
        ),
        ("overview", "/".into()),
        ("overview, one site", "/?site=site-07".into()),
        ("events, newest (all sites)", "/events".into()),
        ("events, one site", "/events?site=site-07".into()),
        (
            "events, category gambling",
            "/events?category=gambling".into(),
        ),
        (
            "events, serious unreviewed",
            "/events?category=terrorism&state=unreviewed".into(),
        ),
        ("events, reviewed", "/events?state=reviewed".into()),
        (
            "events, one device",
            "/events?device=pupils-device-42".into(),
        ),
        (
            "events, a week 3 months ago",
            format!("/events?since={}&until={}", day(97), day(90)),
        ),
        (
            "export, one site's 30 days (CSV)",
            "/export.csv?site=site-07".into(),
        ),
        (
            "review report, a year of every site",
            "/report?since=12m".into(),
        ),
        (
            "review report, governors' (names blanked)",
            "/report?since=12m&governors=yes".into(),
        ),
    ]
}

/// Median and slowest of [`TRIES`] fetches of `path`, after one to warm up.
fn time_page(addr: SocketAddr, session: &str, path: &str) -> (f64, f64) {
    let mut times = Vec::with_capacity(TRIES);
    for i in 0..=TRIES {
        let started = Instant::now();
        let reply = dashboard::request("GET", addr, path, Some(session), None);
        let took = started.elapsed().as_secs_f64();
        let expected = if path == "/events/0" { 404 } else { 200 };
        assert_eq!(reply.status, expected, "{path}: {}", reply.body);
        if i > 0 {
            times.push(took);
        }
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() - 1])
}

/// Add rows `from..to` (the same rows whatever the steps: row `g` is site `g % 50`, its
/// seq `g / 50 + 1`, at a time spread over 360 days by a permutation of `g`).
fn fill(pg: &postgres::Postgres, from: u64, to: u64) {
    let end = SystemTime::now() - Duration::from_secs(3_600);
    let end = warden::audit::rfc3339(end);
    if from == 0 {
        pg.sql(&format!(
            "INSERT INTO sites (site, instance, head_seq, head_hash, shipped_at) \
             SELECT 'site-' || lpad(s::text, 2, '0'), s, 0, '', now() \
             FROM generate_series(0, {}) s;",
            SITES - 1
        ));
        let first = SystemTime::now() - Duration::from_secs(370 * 86_400);
        let mut month = chrono::DateTime::<chrono::Utc>::from(first)
            .date_naive()
            .with_day(1)
            .expect("a first of the month");
        let last = chrono::Utc::now().date_naive();
        while month <= last {
            let next = month
                .checked_add_months(chrono::Months::new(1))
                .expect("a next month");
            pg.sql(&format!(
                "CREATE TABLE IF NOT EXISTS events_{} PARTITION OF events \
                 FOR VALUES FROM ('{month} 00:00:00+00') TO ('{next} 00:00:00+00')",
                month.format("%Y_%m")
            ));
            month = next;
        }
    }
    let mut start = from;
    while start < to {
        let stop = (start + CHUNK).min(to);
        pg.sql(&format!(
            "WITH made AS (INSERT INTO events (site, seq, local_id, at, first_seen, last_seen, \
               count, client_ip, device, grp, name, qtype, categories, locked, list, line, rule, \
               response, cname, outcome, salt, personal, hash, purged, reviewed) \
             SELECT 'site-' || lpad((g % {SITES})::text, 2, '0'), g / {SITES} + 1, \
               g / {SITES} + 1, t, \
               to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
               to_char((t + interval '500 milliseconds') AT TIME ZONE 'UTC', \
                 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
               1 + g % 7, '10.' || (g % 6) || '.' || (g / 6 % 250) || '.' || (g % 250), \
               'pupils-device-' || (g / {SITES} % 1500), \
               CASE WHEN g % 10 = 0 THEN 'staff' ELSE 'pupils' END, \
               'site' || (g % 50000) || '.example' || (g % 3), 'A', \
               CASE WHEN g / {SITES} % 100 < 70 THEN 'adult' \
                 WHEN g / {SITES} % 100 < 85 THEN 'gambling' \
                 WHEN g / {SITES} % 100 < 95 THEN 'social' \
                 WHEN g / {SITES} % 100 < 99 THEN 'adult,gambling' ELSE 'terrorism' END, \
               (g / {SITES} % 100 = 99)::int, 'list', 1 + g % 100000, 'rule', 'nxdomain', \
               NULL, 'blocked', md5(g::text), NULL, md5(g::text) || md5((g + 1)::text), 0, \
               g / {SITES} % 100 = 3 \
             FROM (SELECT g, '{end}'::timestamptz \
                     - ((g * 7919) % 31104000) * interval '1 second' AS t \
                   FROM generate_series({start}::bigint, {}::bigint) g) rows \
             RETURNING site, seq, first_seen, reviewed) \
             INSERT INTO reviews (site, local_id, event_seq, at, by, outcome, note) \
             SELECT site, seq, seq, first_seen, 'lead', 'no-action', 'bench' FROM made \
             WHERE reviewed",
            stop - 1
        ));
        eprintln!("  {stop} rows");
        start = stop;
    }
    pg.sql(
        "INSERT INTO category_sets SELECT unnest(ARRAY['adult', 'gambling', 'social', \
         'adult,gambling', 'terrorism']) ON CONFLICT DO NOTHING; \
         UPDATE sites s SET head_seq = (SELECT max(seq) FROM events e WHERE e.site = s.site), \
         max_span_ms = 500;",
    );
    pg.sql("VACUUM ANALYZE");
}

/// The plans `auto_explain` logged in `log`, each as logged.
fn slow_plans(log: &str) -> Vec<String> {
    let mut plans = Vec::new();
    let mut current: Option<String> = None;
    for line in log.lines() {
        if line.contains("LOG:  duration:") && line.contains("plan:") {
            if let Some(plan) = current.take() {
                plans.push(plan);
            }
            current = Some(line.to_string());
        } else if let Some(plan) = current.as_mut() {
            if line.starts_with(char::is_whitespace) || line.starts_with("Query Text") {
                plan.push('\n');
                plan.push_str(line);
            } else {
                plans.push(current.take().unwrap_or_default());
            }
        }
    }
    plans.extend(current);
    plans
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Wait (bounded) until `warden fleet serve` has brought the central schema up.
fn wait_for_schema(pg: &postgres::Postgres) {
    let started = Instant::now();
    while pg.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'category_sets'") != "1" {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the fleet dashboard did not create the central schema"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `warden fleet serve` over `pg`, with a trust-wide lead.
struct FleetServe {
    child: Child,
    addr: SocketAddr,
}

impl FleetServe {
    fn start(dir: &Path, pg: &postgres::Postgres) -> FleetServe {
        let config = write_config(dir, "127.0.0.1:9".parse().expect("an address"), "");
        std::fs::write(dir.join("pg.pw"), format!("{}\n", postgres::PASSWORD)).expect("pw");
        let mut text = std::fs::read_to_string(&config).expect("config");
        text.push_str(&format!(
            "[fleet]\ndatabase = \"{}\"\npassword_file = \"pg.pw\"\n",
            pg.url()
        ));
        std::fs::write(&config, text).expect("config");
        dashboard::add_user(&config, "trust", "lead", dashboard::LEAD_PASSWORD);
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["fleet", "serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("warden fleet serve");
        let stderr = child.stderr.take().expect("its log");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("fleet dashboard on http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the fleet dashboard says where it listens")
            .parse()
            .expect("an address");
        FleetServe { child, addr }
    }
}

impl Drop for FleetServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The trust's config: the categories the rows have (terrorism locked, so serious), one
/// small list each, the admin listener on loopback. (`dashboard::dashboard_config`, which
/// the bench does not use, names this as `super::write_config`.)
fn write_config(dir: &Path, _upstream: SocketAddr, _blocking: &str) -> PathBuf {
    let mut text = String::from(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         token_file = \"admin.token\"\n[upstream]\nservers = [\"127.0.0.1:9\"]\n",
    );
    for (category, locked) in [
        ("adult", false),
        ("gambling", false),
        ("social", false),
        ("terrorism", true),
    ] {
        std::fs::write(
            dir.join(format!("{category}.txt")),
            format!("{category}.test\n"),
        )
        .expect("a list");
        text.push_str(&format!(
            "[categories.{category}]\nlocked = {locked}\n[[lists]]\nname = \"{category}\"\n\
             category = \"{category}\"\npath = \"{category}.txt\"\n"
        ));
    }
    let path = dir.join("warden.toml");
    std::fs::write(&path, text).expect("the config");
    path
}

/// The HTTP client `dashboard` uses (as the tests' own).
fn http_client() -> &'static reqwest::blocking::Client {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(300))
            .build()
            .expect("an HTTP client")
    })
}
