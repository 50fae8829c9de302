//! Fleet ingestion (issue #15): how fast sites' sealed audit rows reach the trust's
//! central PostgreSQL, through Warden's own shipper (`fleet::ship::run`, the same task a
//! site runs), into a throwaway cluster this bench starts (Debian's `postgresql`).
//!
//! Measured, each against a baseline taken in the same run on the same cluster:
//! - one site catching up a backlog of 1M sealed rows (rows/s, batches of 2,000);
//! - 20 sites shipping 50,000 rows each at once;
//! - the bytes a row takes centrally (table and indexes);
//! - the baseline: PostgreSQL copying the same rows table-to-table inside the server
//!   (`INSERT … SELECT`), the most any client could hope to reach.
//!
//! Run: `cargo bench --bench fleet` (the table is printed and written to
//! `benches/results/fleet-<date>.txt`). `cargo test --all-targets` runs it small, as a
//! smoke test. The fleet dashboard's page times join this bench when it exists.

#[path = "../tests/common/postgres.rs"]
mod postgres;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use warden::audit::synthetic::SyntheticWriter;
use warden::audit::{Event, Outcome};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (backlog, sites, per_site) = match full {
        true => (1_000_000, 20, 50_000),
        false => (2_000, 3, 300),
    };
    let pg = postgres::Postgres::start();
    let dir = tempfile::tempdir().expect("a work folder");
    let started = Instant::now();
    let one = generate(dir.path(), "catching-up", backlog);
    let many: Vec<PathBuf> = (0..sites)
        .map(|i| generate(dir.path(), &format!("site-{i:02}"), per_site))
        .collect();
    eprintln!(
        "generated the logs in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut report = vec![format!(
        "Fleet ingestion, {} (PostgreSQL {}, 2 cores)\n",
        warden::audit::rfc3339(SystemTime::now()),
        pg.sql("SHOW server_version")
    )];
    let logged = log_statements(&pg, true);
    let single = ship(&pg, dir.path(), &[("catching-up", one)]);
    let busy = statement_time(&pg.server_log()[logged..]);
    log_statements(&pg, false);
    report.push(format!(
        "one site catching up {backlog} rows: {:.1} s, {:.0} rows/s",
        single.as_secs_f64(),
        backlog as f64 / single.as_secs_f64()
    ));
    report.push(format!(
        "  the server ran the shipper's statements for {:.1} s of it ({:.0}%)",
        busy.as_secs_f64(),
        100.0 * busy.as_secs_f64() / single.as_secs_f64()
    ));
    let named: Vec<(String, PathBuf)> = many
        .into_iter()
        .enumerate()
        .map(|(i, p)| (format!("site-{i:02}"), p))
        .collect();
    let refs: Vec<(&str, PathBuf)> = named.iter().map(|(n, p)| (n.as_str(), p.clone())).collect();
    let together = ship(&pg, dir.path(), &refs);
    let total = sites * per_site;
    report.push(format!(
        "{sites} sites at once, {per_site} rows each: {:.1} s, {:.0} rows/s",
        together.as_secs_f64(),
        total as f64 / together.as_secs_f64()
    ));
    let rows: f64 = pg.sql("SELECT count(*) FROM events").parse().unwrap_or(0.0);
    let bytes: f64 = pg
        .sql(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits \
             WHERE inhparent = 'events'::regclass",
        )
        .parse()
        .unwrap_or(0.0);
    report.push(format!(
        "central size: {:.0} bytes a row with its indexes ({rows} rows)",
        bytes / rows.max(1.0)
    ));
    let baseline = server_copy(&pg);
    report.push(format!(
        "baseline, the server copying the same {rows} rows table to table: {:.1} s, {:.0} rows/s",
        baseline.as_secs_f64(),
        rows / baseline.as_secs_f64()
    ));
    report.push(format!(
        "shipping vs the server's own copy: one site {:.2}x, {sites} sites {:.2}x of its rate",
        (backlog as f64 / single.as_secs_f64()) / (rows / baseline.as_secs_f64()),
        (total as f64 / together.as_secs_f64()) / (rows / baseline.as_secs_f64()),
    ));
    let report = report.join("\n");
    println!("{report}");
    if full {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let day = &warden::audit::rfc3339(SystemTime::now())[..10];
        let out = root.join(format!("benches/results/fleet-{day}.txt"));
        std::fs::write(&out, format!("{report}\n")).expect("writing the results");
        println!("written to {}", out.display());
    }
}

/// A sealed log of `rows` rows (one device, distinct names a second apart, as a busy
/// site's day), through Warden's own write path.
fn generate(dir: &Path, site: &str, rows: u64) -> PathBuf {
    let path = dir.join(format!("{site}.sqlite"));
    let window = Duration::from_secs(60);
    let mut writer = SyntheticWriter::open(&path, window).expect("a log");
    let start = SystemTime::now() - Duration::from_secs(rows + 3_600);
    let mut written = 0;
    while written < rows {
        let chunk: Vec<(Event, u64, SystemTime)> = (written..(written + 10_000).min(rows))
            .map(|i| {
                let at = start + Duration::from_secs(i);
                (event(i, at), 1 + i % 7, at + Duration::from_millis(500))
            })
            .collect();
        written += chunk.len() as u64;
        let now = start + Duration::from_secs(written) + window * 2;
        writer.write(chunk, now).expect("a batch");
    }
    writer.seal().expect("sealed");
    path
}

fn event(i: u64, time: SystemTime) -> Event {
    let name = format!("site{}.example{}", i % 50_000, i % 3);
    Event {
        time,
        client: std::net::IpAddr::from([10, 20, (i % 6) as u8, (i % 250) as u8]),
        device: Some(format!("pupils-device-{}", i % 1_500)),
        group: "pupils".into(),
        rule: name.clone(),
        name,
        qtype: "A".into(),
        categories: "adult".into(),
        locked: false,
        list: "adult".into(),
        line: 1 + (i % 100_000) as u32,
        response: "nxdomain".into(),
        cname: None,
        outcome: Outcome::Blocked,
        identity: Default::default(),
    }
}

/// Ship every log in `sites` at once with the shipper a site runs; the time until the
/// central store holds all their rows.
fn ship(pg: &postgres::Postgres, dir: &Path, sites: &[(&str, PathBuf)]) -> Duration {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mut expected = central_heads(pg);
    let stop = CancellationToken::new();
    let password = dir.join("pg.pw");
    std::fs::write(&password, format!("{}\n", postgres::PASSWORD)).expect("password");
    let mut settings = Vec::new();
    for (site, log) in sites {
        let config = dir.join(format!("{site}.toml"));
        std::fs::write(
            &config,
            format!(
                "[audit]\npath = \"{}\"\n[fleet]\ndatabase = \"{}\"\nsite = \"{site}\"\n\
                 password_file = \"{}\"\nship_interval = \"100ms\"\n",
                log.display(),
                pg.url(),
                password.display()
            ),
        )
        .expect("a config");
        let config = warden::config::Config::load(&config).expect("the config");
        let rows = warden::audit::Store::open(log)
            .and_then(|s| s.unshipped())
            .expect("the log")
            .0;
        expected += rows as u64;
        let fleet = warden::fleet::Settings::from_config(&config)
            .expect("[fleet]")
            .expect("set");
        settings.push((fleet, log.clone()));
    }
    let started = Instant::now();
    for (fleet, log) in settings {
        let metrics = std::sync::Arc::new(warden::metrics::Metrics::new());
        runtime.spawn(warden::fleet::ship::run(fleet, log, metrics, stop.clone()));
    }
    let deadline = started + Duration::from_secs(3_600);
    // Polled from the sites' heads, not by counting rows: a count of a million rows
    // every poll would take a core from the server being measured.
    while central_heads(pg) < expected {
        assert!(
            Instant::now() < deadline,
            "shipping did not finish in an hour"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    stop.cancel();
    runtime.shutdown_timeout(Duration::from_secs(10));
    took
}

/// The sum of every site's central head: the rows stored, since each site's chain
/// starts at 1 and a head moves only over rows all stored.
fn central_heads(pg: &postgres::Postgres) -> u64 {
    if pg.sql("SELECT to_regclass('public.sites') IS NULL") == "t" {
        return 0;
    }
    pg.sql("SELECT coalesce(sum(head_seq), 0) FROM sites")
        .parse()
        .unwrap_or(0)
}

/// Log every statement's duration (without its parameters) from now, or no longer;
/// returns the length of the server's log so far.
fn log_statements(pg: &postgres::Postgres, on: bool) -> usize {
    let setting = if on { "0" } else { "DEFAULT" };
    pg.superuser(&format!(
        "ALTER SYSTEM SET log_min_duration_statement = {setting}"
    ));
    pg.superuser("ALTER SYSTEM SET log_parameter_max_length = 0");
    pg.superuser("SELECT pg_reload_conf()");
    pg.server_log().len()
}

/// The summed durations `log` gives for the statements of the shipper (those of this
/// bench's polling left out): how long the server was busy on its behalf.
fn statement_time(log: &str) -> Duration {
    let ms: f64 = log
        .lines()
        .filter(|l| !l.contains("head_seq), 0) FROM sites") && !l.contains("to_regclass"))
        .filter_map(|l| l.split("duration: ").nth(1)?.split(" ms").next())
        .filter_map(|ms| ms.parse::<f64>().ok())
        .sum();
    Duration::from_secs_f64(ms / 1000.0)
}

/// The same rows copied inside the server into a table of the same shape (partitions and
/// indexes), timed: the ceiling for any client.
fn server_copy(pg: &postgres::Postgres) -> Duration {
    pg.sql("CREATE TABLE copy_events (LIKE events INCLUDING ALL) PARTITION BY RANGE (at)");
    let months = pg.sql(
        "SELECT string_agg(DISTINCT to_char(date_trunc('month', at), 'YYYY-MM'), ',') FROM events",
    );
    for month in months.split(',').filter(|m| !m.is_empty()) {
        let name = month.replace('-', "_");
        pg.sql(&format!(
            "CREATE TABLE copy_events_{name} PARTITION OF copy_events FOR VALUES FROM \
             ('{month}-01 00:00:00+00') TO (('{month}-01 00:00:00+00'::timestamptz + interval '1 month'))"
        ));
    }
    let started = Instant::now();
    pg.sql("INSERT INTO copy_events SELECT * FROM events");
    let took = started.elapsed();
    pg.sql("DROP TABLE copy_events");
    took
}
