//! Many sites, one PostgreSQL (issue #15): each site's sealed audit rows shipped to a
//! real, throwaway PostgreSQL cluster, exactly once, through database outages and a
//! site killed mid-shipping, while every site keeps answering DNS.
//!
//! The promise checked, per site: the central store holds exactly the site's sealed
//! rows (same positions, same hashes, same counts), no position twice.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dashboard::LEAD_PASSWORD;
use common::postgres::{Postgres, PASSWORD};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

/// How long any condition is waited for before the test fails.
const DEADLINE: Duration = Duration::from_secs(90);

/// Held by the one test that times how fast a change reaches the sites, and by the skew
/// test while it compiles the previous release: a build taking both cores must not be
/// what that test measures.
static TIMED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn timed() -> std::sync::MutexGuard<'static, ()> {
    TIMED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Site {
    name: String,
    dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
    dns: SocketAddr,
    admin: Option<SocketAddr>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Site {
    /// A site Warden shipping to `pg` as `name`: rows seal a second after their first
    /// sighting and ship every 200 ms, `batch_rows` at a time; no rate limit (the tests
    /// flood it from one address).
    fn start(pg: &Postgres, name: &str, batch_rows: usize) -> Site {
        Site::with(name, batch_rows, &pg.url(), "")
    }

    /// The same with the database at `url` and `extra` lines in `[fleet]`.
    fn with(name: &str, batch_rows: usize, url: &str, extra: &str) -> Site {
        let mut site = Site::configure(name, batch_rows, url, extra);
        site.run();
        site
    }

    /// [`Site::with`], not started yet.
    fn configure(name: &str, batch_rows: usize, url: &str, extra: &str) -> Site {
        let (dir, config) = fleet_config(&format!(
            "[server.rate_limit]\nqps = 0\n\
             [audit]\npath = \"audit.sqlite\"\nwindow = \"1s\"\nflush_interval = \"100ms\"\n\
             [fleet]\ndatabase = \"{url}\"\nsite = \"{name}\"\npassword_file = \"pg.pw\"\n\
             ship_interval = \"200ms\"\nbatch_rows = {batch_rows}\n{extra}"
        ));
        common::dashboard::add_user(&config, "lead", "lead", LEAD_PASSWORD);
        Site {
            name: name.to_string(),
            dir,
            config,
            child: None,
            // Until it runs and says where it listens.
            dns: "127.0.0.1:9".parse().expect("an address"),
            admin: None,
            log: Default::default(),
        }
    }

    fn run(&mut self) {
        self.run_binary(Path::new(env!("CARGO_BIN_EXE_warden")));
    }

    /// Run it with another build of Warden (the skew test's previous release).
    fn run_binary(&mut self, binary: &Path) {
        let spawned = common::spawn_binary(binary, &["serve"], &self.config, &[]);
        self.dns = spawned.dns;
        self.admin = spawned.admin;
        self.log = spawned.log;
        self.child = Some(spawned.child);
    }

    /// The overview page's text about the central store, as the site's lead sees it.
    fn overview_fleet(&self) -> String {
        let admin = self.admin.expect("the dashboard's address");
        let session = common::dashboard::sign_in(admin, "lead", LEAD_PASSWORD).expect("signed in");
        let page = common::dashboard::request("GET", admin, "/", Some(&session), None);
        assert_eq!(page.status, 200);
        let at = page
            .body
            .find("central store</h2>")
            .expect("the central store's section");
        page.body[at..].to_string()
    }

    fn log_text(&self) -> String {
        self.log.lock().expect("the log").join("\n")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }

    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            common::stop_warden_logged(child, Some(self.log.as_ref()));
        }
    }

    fn audit(&self) -> PathBuf {
        self.dir.path().join("audit.sqlite")
    }

    /// (rows, sum of counts, last seq) of the sealed rows in the site's own log.
    fn local(&self) -> (i64, i64, i64) {
        local_sealed(&self.audit())
    }
}

/// A folder with the tests' config (lists, loopback listeners; blocked names are
/// answered without an upstream, and the one named never answers), the database's
/// password in `pg.pw`, and `tail` appended to the config.
fn fleet_config(tail: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a folder");
    let upstream: SocketAddr = "127.0.0.1:9".parse().expect("an address");
    let config = common::write_config(dir.path(), upstream, "");
    std::fs::write(dir.path().join("pg.pw"), format!("{PASSWORD}\n")).expect("password");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(tail);
    std::fs::write(&config, text).expect("config");
    (dir, config)
}

impl Drop for Site {
    fn drop(&mut self) {
        self.kill();
    }
}

fn local_sealed(path: &Path) -> (i64, i64, i64) {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("the site's log");
    c.busy_timeout(Duration::from_secs(5)).expect("timeout");
    c.query_row(
        "SELECT count(*), coalesce(sum(count), 0), coalesce(max(seq), 0) FROM events \
         WHERE seq IS NOT NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .expect("counted")
}

/// (rows, sum of counts, last seq) the central store holds for `site`.
fn central(pg: &Postgres, site: &str) -> (i64, i64, i64) {
    // Before any site has connected, the schema is not there yet.
    if pg.sql("SELECT to_regclass('public.events') IS NULL") == "t" {
        return (0, 0, 0);
    }
    let out = pg.sql(&format!(
        "SELECT count(*), coalesce(sum(count), 0), coalesce(max(seq), 0) FROM events \
         WHERE site = '{site}'"
    ));
    let mut parts = out.split('|').map(|p| p.parse::<i64>().expect("a number"));
    let mut next = || parts.next().expect("three columns");
    (next(), next(), next())
}

/// Ask `name` once over UDP; the answer's code, or `None` after a second.
fn ask(dns: SocketAddr, name: &str) -> Option<ResponseCode> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a socket");
    // Generous: the floods count every answer, and on two busy cores (PostgreSQL
    // restarting beside two sites) a block answer has been seen to take over a second.
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let query = common::query_message(name, RecordType::A, false);
    socket
        .send_to(&query.to_vec().expect("encoded"), dns)
        .expect("sent");
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n])
        .ok()
        .map(|m| m.metadata.response_code)
}

/// Ask `count` distinct names under `parent` (`{prefix}{i}.{parent}`): each must be blocked.
fn block(site: &Site, prefix: &str, parent: &str, count: usize) {
    for i in 0..count {
        let name = format!("{prefix}{i}.{parent}");
        assert_eq!(ask(site.dns, &name), Some(ResponseCode::NXDomain), "{name}");
    }
}

/// Wait until `done` holds, failing with `what` (and the last state) at the deadline.
fn wait_until<T: std::fmt::Debug>(
    what: &str,
    mut state: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let start = Instant::now();
    loop {
        let now = state();
        if done(&now) {
            return now;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: still {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait until every block sent to `site` is sealed locally and shipped, then check the
/// central copy is the local one.
fn assert_shipped(pg: &Postgres, site: &Site, blocks: u64) {
    wait_until(
        &format!("{}: every block sealed locally", site.name),
        || site.local(),
        |l| l.1 == blocks as i64,
    );
    let local = site.local();
    wait_until(
        &format!("{}: the central copy catches up with {local:?}", site.name),
        || central(pg, &site.name),
        |c| *c == local,
    );
    // The same rows: position by position, the same hashes.
    let (rows, _, last) = local;
    assert_eq!(
        rows, last,
        "{}: local seqs run 1..={last} without a gap",
        site.name
    );
    let central_hashes = pg.sql(&format!(
        "SELECT string_agg(hash, ',' ORDER BY seq) FROM events WHERE site = '{}'",
        site.name
    ));
    let c = rusqlite::Connection::open(site.audit()).expect("the log");
    let local_hashes: String = c
        .query_row(
            "SELECT group_concat(hash, ',') FROM (SELECT hash FROM events WHERE seq IS NOT NULL \
             ORDER BY seq)",
            [],
            |r| r.get(0),
        )
        .expect("hashes");
    assert_eq!(
        central_hashes, local_hashes,
        "{}: the chain as shipped",
        site.name
    );
}

/// Two sites, `a` and `b`, each sent `blocks` blocks (names `{site}{i}.blocked.test`),
/// every one shipped.
fn two_sites(pg: &Postgres, a: (&str, usize), b: (&str, usize)) -> (Site, Site) {
    let sites = [a, b].map(|(name, blocks)| {
        let site = Site::start(pg, name, 500);
        block(&site, name, "blocked.test", blocks);
        site
    });
    for (site, (_, blocks)) in sites.iter().zip([a, b]) {
        assert_shipped(pg, site, blocks as u64);
    }
    let [a, b] = sites;
    (a, b)
}

fn no_position_twice(pg: &Postgres) {
    assert_eq!(
        pg.sql("SELECT count(*) FROM (SELECT site, seq FROM events GROUP BY site, seq HAVING count(*) > 1) d"),
        "0",
        "no (site, seq) stored twice"
    );
}

#[test]
fn two_sites_ship_their_blocks_with_site_device_category_and_rule() {
    let pg = Postgres::start();
    let mut a = Site::start(&pg, "st-marys", 500);
    let mut b = Site::start(&pg, "oak-academy", 500);
    block(&a, "a", "blocked.test", 30);
    block(&b, "b", "tracker.test", 20);
    assert_eq!(ask(b.dns, "locked.test"), Some(ResponseCode::NXDomain));
    assert_shipped(&pg, &a, 30);
    assert_shipped(&pg, &b, 21);
    // The locked list's block arrives as the site recorded it: its device (the client's
    // address here), group, category and rule.
    let columns = "client_ip || '|' || grp || '|' || categories || '|' || rule || '|' || list";
    let row = pg.sql(&format!(
        "SELECT {columns} FROM events WHERE site = 'oak-academy' AND name = 'locked.test'"
    ));
    let c = rusqlite::Connection::open(b.audit()).expect("the log");
    let local: String = c
        .query_row(
            &format!("SELECT {columns} FROM events WHERE name = 'locked.test'"),
            [],
            |r| r.get(0),
        )
        .expect("the local row");
    assert_eq!(row, local);
    assert!(
        row.starts_with("127.0.0.1|") && row.contains("|terrorism|"),
        "{row}"
    );
    // A review made on the site arrives centrally, on the same row.
    let id: i64 = c
        .query_row(
            "SELECT id FROM events WHERE name = 'locked.test'",
            [],
            |r| r.get(0),
        )
        .expect("the row's id");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["audit", "review", "--config"])
        .arg(&b.config)
        .args([
            &id.to_string(),
            "--outcome",
            "incident",
            "--note",
            "told the DSL",
            "--by",
            "lead",
        ])
        .output()
        .expect("warden audit review");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seq: i64 = c
        .query_row("SELECT seq FROM events WHERE id = ?1", [id], |r| r.get(0))
        .expect("the row's seq");
    wait_until(
        "the review arrives centrally",
        || pg.sql("SELECT count(*) FROM reviews"),
        |n| n == "1",
    );
    assert_eq!(
        pg.sql(
            "SELECT r.site || '|' || r.outcome || '|' || r.note || '|' || r.by || '|' || e.name \
             FROM reviews r JOIN events e ON e.site = r.site AND e.seq = r.event_seq"
        ),
        "oak-academy|incident|told the DSL|lead|locked.test"
    );
    assert_eq!(pg.sql("SELECT event_seq FROM reviews"), seq.to_string());
    let sites = pg.sql("SELECT string_agg(site || ':' || head_seq, ',' ORDER BY site) FROM sites");
    assert_eq!(
        sites,
        format!("oak-academy:{},st-marys:{}", b.local().2, a.local().2)
    );
    no_position_twice(&pg);
    a.stop();
    b.stop();
}

/// A flood of blocks from another thread: each query must be answered; returns the
/// number answered when `stop` is set (or `limit` is reached).
fn flood(
    dns: SocketAddr,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
    limit: u64,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut answered, mut unanswered) = (0u64, 0u64);
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed)
            && answered + unanswered < limit
            && started.elapsed() < DEADLINE
        {
            // A few hundred distinct names, repeated: rows and counts both grow.
            let name = format!("{prefix}{}.blocked.test", (answered + unanswered) % 300);
            match ask(dns, &name) {
                Some(ResponseCode::NXDomain) => answered += 1,
                _ => unanswered += 1,
            }
        }
        (answered, unanswered)
    })
}

#[test]
fn an_outage_of_the_database_loses_and_doubles_nothing() {
    let pg = Postgres::start();
    let mut a = Site::start(&pg, "north", 100);
    let mut b = Site::start(&pg, "south", 100);
    let stop = Arc::new(AtomicBool::new(false));
    let floods = [
        flood(a.dns, "n", stop.clone(), 1_000_000),
        flood(b.dns, "s", stop.clone(), 1_000_000),
    ];
    // Shipping under way, then the database goes away while the blocks keep coming.
    wait_until(
        "rows shipped before the outage",
        || central(&pg, "north").0,
        |n| *n > 0,
    );
    let before = central(&pg, "north").0;
    pg.stop();
    let at_stop = local_sealed(&a.audit()).0;
    // Sealed rows pile up in the sites' logs meanwhile, and the site's lead sees it.
    wait_until(
        "rows sealed during the outage",
        || local_sealed(&a.audit()).0,
        |n| *n > at_stop + 50,
    );
    let during = wait_until(
        "the overview shows rows waiting",
        || a.overview_fleet(),
        |t| t.contains("rows waiting"),
    );
    assert!(during.contains("as <strong>north</strong>"), "{during}");
    pg.restart();
    // The flood goes on until shipping has resumed.
    wait_until(
        "shipping resumes",
        || central(&pg, "north").0,
        |n| *n > before,
    );
    stop.store(true, Ordering::Relaxed);
    let mut totals = Vec::new();
    for f in floods {
        let (answered, unanswered) = f.join().expect("the flood");
        assert_eq!(unanswered, 0, "every query was answered throughout");
        assert!(answered > 0);
        totals.push(answered);
    }
    assert_shipped(&pg, &a, totals[0]);
    assert_shipped(&pg, &b, totals[1]);
    no_position_twice(&pg);
    let after = a.overview_fleet();
    assert!(after.contains("Nothing waiting."), "{after}");
    a.stop();
    b.stop();
}

/// A superuser session held open by the test (over the server's socket), to hold a
/// transaction across the site's attempts.
struct Session {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Session {
    fn open(pg: &Postgres) -> Session {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(pg.socket_dir())
            .port(pg.port)
            .user("postgres")
            .dbname(common::postgres::DATABASE);
        let client = runtime.block_on(async {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .expect("a session");
            tokio::spawn(connection);
            client
        });
        Session { runtime, client }
    }

    fn run(&self, sql: &str) {
        self.runtime
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Kill a site while it catches up a backlog: some batches stored, one in flight. Made
/// exact rather than timed: the test holds an uncommitted row at a later position, so
/// the batch holding that position waits on it (the earlier ones commit), and the kill
/// lands while it waits.
#[test]
fn a_site_killed_mid_shipping_resumes_exactly_once() {
    let pg = Postgres::start();
    let mut site = Site::start(&pg, "west", 20);
    // Registered, with this month's partition, before the outage.
    assert_eq!(
        ask(site.dns, "first.blocked.test"),
        Some(ResponseCode::NXDomain)
    );
    wait_until(
        "the first row shipped",
        || central(&pg, "west").0,
        |n| *n == 1,
    );
    // The site may not sign in until the test is ready for it.
    pg.sql("ALTER ROLE warden NOLOGIN");
    pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'warden'");
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, unanswered) = flood(site.dns, "w", stop, 2_000).join().expect("the flood");
    assert_eq!((answered, unanswered), (2_000, 0));
    wait_until("the flood sealed", || site.local().1, |n| *n == 2_001);
    let backlog = site.local().0;
    assert!(backlog > 150, "a backlog of many batches ({backlog} rows)");
    // Hold position 101 (as the site will ship it) in an open transaction: a purged row,
    // which the rollups' triggers leave alone (a live one would hold the site's rollup
    // row, and with it every batch, not only the one holding 101).
    let c = rusqlite::Connection::open(site.audit()).expect("the log");
    let first_seen: String = c
        .query_row("SELECT first_seen FROM events WHERE seq = 101", [], |r| {
            r.get(0)
        })
        .expect("row 101");
    let session = Session::open(&pg);
    session.run(&format!(
        "BEGIN; INSERT INTO events (site, seq, local_id, at, first_seen, last_seen, count, \
         client_ip, grp, name, qtype, categories, locked, list, line, rule, response, outcome, \
         hash, purged) VALUES ('west', 101, 0, '{first_seen}', '', '', 0, '', '', '', '', '', \
         0, '', 0, '', '', '', '', 1)"
    ));
    pg.sql("ALTER ROLE warden LOGIN");
    wait_until(
        "the site waits on the held position",
        || pg.sql("SELECT count(*) FROM pg_locks WHERE NOT granted"),
        |n| n != "0",
    );
    let part = central(&pg, "west").0;
    site.kill();
    session.run("ROLLBACK");
    assert!(
        part > 1 && part < 101,
        "killed mid-shipping: {part} of {backlog} rows stored"
    );
    site.run();
    assert_shipped(&pg, &site, 2_001);
    no_position_twice(&pg);
    site.stop();
}

/// A batch shipped again (its cursor behind the central head, as after restoring an
/// older copy of the site's log) is read back, not trusted. Over a row changed centrally,
/// shipping stops naming the position and the whole batch is refused, the rows past the
/// old head included; over a row whose central copy was moved in time (so the key no
/// longer collides and every row of the batch goes in), it stops naming the position held
/// twice.
#[test]
fn a_batch_shipped_again_over_a_changed_row_stops_shipping() {
    let pg = Postgres::start();
    let mut site = Site::start(&pg, "birch", 500);
    block(&site, "b", "blocked.test", 15);
    assert_shipped(&pg, &site, 15);
    site.stop();
    let audit = site.audit();
    let cursor_back = || {
        let c = rusqlite::Connection::open(&audit).expect("the log");
        c.execute(
            "UPDATE audit_meta SET value = 0 WHERE key = 'fleet_events_seq'",
            [],
        )
        .expect("the cursor moved back");
    };
    // As if rows 11..15 had never been shipped, and row 4 had been edited centrally.
    pg.sql("DELETE FROM events WHERE site = 'birch' AND seq > 10");
    pg.sql("UPDATE sites SET head_seq = 10 WHERE site = 'birch'");
    pg.sql("UPDATE events SET hash = repeat('0', 64) WHERE site = 'birch' AND seq = 4");
    cursor_back();
    site.run();
    let said = wait_until(
        "the site says why it stopped",
        || site.log_text(),
        |t| t.contains("row at seq 4 differs"),
    );
    assert!(said.contains("\"birch\""), "names the site: {said}");
    assert_eq!(
        central(&pg, "birch").0,
        10,
        "the batch 1..=15 was refused whole"
    );
    site.stop();
    // Only row 4 left centrally, a second earlier: every row of the batch is new by key.
    pg.sql("DELETE FROM events WHERE site = 'birch' AND seq <> 4");
    pg.sql("UPDATE events SET at = at - interval '1 second' WHERE site = 'birch'");
    cursor_back();
    site.run();
    wait_until(
        "the site says a position is held twice",
        || site.log_text(),
        |t| t.contains("holds seq 4 twice"),
    );
    assert_eq!(central(&pg, "birch").0, 1, "nothing stored beside it");
    site.stop();
}

/// `warden fleet verify` on `config`: (exit code, output).
fn fleet_verify(config: &Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["fleet", "verify", "--config"])
        .arg(config)
        .output()
        .expect("warden fleet verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn fleet_verify_names_the_site_and_row_changed_or_deleted_centrally() {
    let pg = Postgres::start();
    let (mut a, mut b) = two_sites(&pg, ("st-marys", 8), ("oak-academy", 8));
    a.stop();
    b.stop();
    let (code, text) = fleet_verify(&a.config);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("site st-marys: intact (8 rows)"), "{text}");
    assert!(text.contains("site oak-academy: intact (8 rows)"), "{text}");

    // A count raised centrally.
    pg.sql("UPDATE events SET count = count + 1 WHERE site = 'st-marys' AND seq = 3");
    let (code, text) = fleet_verify(&a.config);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("site st-marys: NOT INTACT after 2 rows: seq 3"),
        "{text}"
    );
    assert!(text.contains("site oak-academy: intact"), "{text}");
    pg.sql("UPDATE events SET count = count - 1 WHERE site = 'st-marys' AND seq = 3");
    assert_eq!(fleet_verify(&a.config).0, 0);

    // A row deleted from the middle, then one from the end.
    pg.sql("DELETE FROM events WHERE site = 'oak-academy' AND seq = 5");
    let (code, text) = fleet_verify(&a.config);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("site oak-academy: NOT INTACT after 4 rows: seq 5 is missing"),
        "{text}"
    );
    assert!(text.contains("site st-marys: intact"), "{text}");
    pg.sql("DELETE FROM events WHERE site = 'st-marys' AND seq = 8");
    let (code, text) = fleet_verify(&a.config);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("site st-marys: NOT INTACT after 7 rows: the chain ends at seq 7, but the site last reported seq 8"), "{text}");
}

#[test]
fn a_site_ships_over_tls_and_refuses_a_certificate_it_cannot_trust() {
    let pg = Postgres::start_with_tls();
    let url = format!("{}?sslmode=require", pg.url());
    let ca = |path: PathBuf| format!("ca_file = \"{}\"\n", path.display());
    let mut trusting = Site::with("tls-site", 100, &url, &ca(pg.ca_file()));
    let mut wary = Site::with("wary-site", 100, &url, &ca(pg.other_ca_file()));
    block(&trusting, "t", "blocked.test", 3);
    block(&wary, "w", "blocked.test", 3);
    assert_shipped(&pg, &trusting, 3);
    // Its connection is encrypted.
    assert_eq!(
        pg.sql(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.usename = 'warden'"
        ),
        "t"
    );
    // The other does not trust the server's certificate: it never signs in, says why,
    // and keeps its rows (and answering DNS).
    wait_until(
        "the wary site says why it cannot ship",
        || wary.log_text(),
        |log| log.contains("fleet:") && log.contains("certificate"),
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM sites WHERE site = 'wary-site'"),
        "0"
    );
    assert_eq!(wary.local().1, 3);
    assert_eq!(
        ask(wary.dns, "again.blocked.test"),
        Some(ResponseCode::NXDomain)
    );
    trusting.stop();
    wary.stop();
}

/// `SELECT {columns}` over `table` in the site's log, rows joined by `,` in id order, as
/// the central store should hold them (a NUL as U+FFFD).
fn local_records(site: &Site, table: &str, columns: &str) -> String {
    let c = rusqlite::Connection::open(site.audit()).expect("the log");
    c.busy_timeout(Duration::from_secs(5)).expect("timeout");
    let text: Option<String> = c
        .query_row(
            &format!(
                "SELECT group_concat(r, ',') FROM (SELECT {columns} AS r FROM {table} ORDER BY id)"
            ),
            [],
            |r| r.get(0),
        )
        .expect("read");
    text.unwrap_or_default().replace('\0', "\u{fffd}")
}

/// The same rows as the central store holds them for `site`.
fn central_records(pg: &Postgres, site: &Site, table: &str, columns: &str) -> String {
    if pg.sql(&format!("SELECT to_regclass('public.{table}') IS NULL")) == "t" {
        return String::new();
    }
    pg.sql(&format!(
        "SELECT coalesce(string_agg({columns}, ',' ORDER BY local_id), '') FROM {table} \
         WHERE site = '{}'",
        site.name
    ))
}

/// What a site records beside its rows arrives centrally as recorded: sign-ins (one with
/// a NUL typed into the user name, recorded as U+FFFD), an allow change, an alert
/// delivery whose error holds a NUL, and reviews, one whose note holds a NUL (stored by
/// an older Warden: the dashboard now refuses one). PostgreSQL's text cannot hold a NUL:
/// it arrives as U+FFFD and shipping goes on. After a restart, what is recorded next
/// arrives too, and nothing shipped before is lost or doubled.
#[test]
fn a_site_ships_its_sign_ins_allow_changes_alert_deliveries_and_reviews() {
    use common::dashboard::{request, sign_in, ADMIN_PASSWORD};
    let pg = Postgres::start();
    let mut site = Site::start(&pg, "elm-primary", 500);
    // An admin too (users are read at start).
    site.stop();
    common::dashboard::add_user(&site.config, "admin", "admin", ADMIN_PASSWORD);
    site.run();
    let admin_addr = site.admin.expect("the dashboard");
    let admin = sign_in(admin_addr, "admin", ADMIN_PASSWORD).expect("the admin signs in");
    assert!(sign_in(admin_addr, "eve\u{0}x", "not the password").is_err());
    let lead = sign_in(admin_addr, "lead", LEAD_PASSWORD).expect("the lead signs in");
    let csrf = |session: &str| {
        request("GET", admin_addr, "/", Some(session), None)
            .hidden("csrf")
            .expect("a csrf token")
    };
    let token = csrf(&admin);
    let allowed = request(
        "POST",
        admin_addr,
        "/admin/allow",
        Some(&admin),
        Some(&[
            ("csrf", &token),
            ("name", "www.blocked.test"),
            ("reason", "a lesson on online safety"),
        ]),
    );
    assert_eq!(allowed.status, 303, "{}", allowed.body);
    block(&site, "r", "blocked.test", 1);
    wait_until("the block is sealed", || site.local(), |l| l.0 == 1);
    let token = csrf(&lead);
    let review = |note: &str| {
        request(
            "POST",
            admin_addr,
            "/events/1/review",
            Some(&lead),
            Some(&[("csrf", &token), ("outcome", "no-action"), ("note", note)]),
        )
    };
    // A NUL typed into a note is refused now; an older Warden stored one as typed.
    let refused = review("seen\u{0}by the DSL");
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("U+0000"), "{}", refused.body);
    let reviewed = review("seen by the DSL");
    assert_eq!(reviewed.status, 303, "{}", reviewed.body);
    // An alert delivery as the alerts task records one (no alert channel runs here).
    let log = rusqlite::Connection::open(site.audit()).expect("the log");
    log.busy_timeout(Duration::from_secs(5)).expect("timeout");
    log.execute(
        "INSERT INTO reviews (event_id, at, by, outcome, note) \
         VALUES (1, '2026-12-01T10:00:00.000Z', 'lead', 'incident', ?1)",
        ["typed by an older Warden\u{0}"],
    )
    .expect("an older review");
    log.execute(
        "INSERT INTO alert_deliveries (at, channel, kind, category, client_ip, event_ids, \
             attempt, result, error) VALUES ('2026-12-03T10:00:00.000Z', 'dsl-mail', \
             'immediate', 'terrorism', '127.0.0.1', '1', 2, 'failed', ?1)",
        ["reply: 550\u{0}x"],
    )
    .expect("recorded");
    let tables = [
        (
            "signins",
            "at || '|' || \"user\" || '|' || client_ip || '|' || result",
        ),
        (
            "allow_changes",
            "at || '|' || by || '|' || action || '|' || name || '|' || reason",
        ),
        (
            "alert_deliveries",
            "at || '|' || channel || '|' || kind || '|' || category || '|' || client_ip \
             || '|' || event_ids || '|' || attempt || '|' || result || '|' || error",
        ),
        (
            "reviews",
            "at || '|' || by || '|' || outcome || '|' || note",
        ),
    ];
    let all_arrive = |site: &Site| {
        for (table, columns) in tables {
            let local = local_records(site, table, columns);
            assert!(!local.is_empty(), "{table}: something recorded");
            wait_until(
                &format!("{table} arrive centrally as recorded"),
                || central_records(&pg, site, table, columns),
                |central| *central == local,
            );
        }
    };
    all_arrive(&site);
    assert!(
        central_records(&pg, &site, "signins", "\"user\"").contains("eve\u{fffd}x"),
        "the typed NUL was recorded as U+FFFD"
    );
    site.stop();
    site.run();
    let admin_addr = site.admin.expect("the dashboard");
    sign_in(admin_addr, "lead", LEAD_PASSWORD).expect("the lead signs in again");
    all_arrive(&site);
    assert_eq!(
        pg.sql("SELECT count(*) FROM signins WHERE site = 'elm-primary'"),
        "4"
    );
    site.stop();
}

/// The trust's dashboard (`warden fleet serve`) over the central store, as a test starts
/// it: `users` as (name, sites; empty for every site), each a lead.
struct FleetDashboard {
    _dir: tempfile::TempDir,
    child: Option<Child>,
    addr: SocketAddr,
}

impl FleetDashboard {
    fn start(pg: &Postgres, users: &[(&str, &[&str])]) -> FleetDashboard {
        FleetDashboard::with(pg, users, "")
    }

    /// [`FleetDashboard::start`] with `extra` lines at the end of its config.
    fn with(pg: &Postgres, users: &[(&str, &[&str])], extra: &str) -> FleetDashboard {
        let users: Vec<(&str, &str, &[&str])> = users
            .iter()
            .map(|(name, sites)| (*name, "lead", *sites))
            .collect();
        FleetDashboard::of(pg, &users, extra)
    }

    /// Users as (name, role, sites), each with [`LEAD_PASSWORD`].
    fn of(pg: &Postgres, users: &[(&str, &str, &[&str])], extra: &str) -> FleetDashboard {
        FleetDashboard::prepared(pg, users, extra, |_| {})
    }

    /// [`FleetDashboard::of`], with `prepare(config)` run once the users are added.
    fn prepared(
        pg: &Postgres,
        users: &[(&str, &str, &[&str])],
        extra: &str,
        prepare: impl FnOnce(&std::path::Path),
    ) -> FleetDashboard {
        let (dir, config) = fleet_config(&format!(
            "[fleet]\ndatabase = \"{}\"\npassword_file = \"pg.pw\"\n{extra}",
            pg.url()
        ));
        for (name, role, sites) in users {
            common::dashboard::add_user_of(&config, name, role, LEAD_PASSWORD, sites);
        }
        prepare(&config);
        let spawned = common::spawn_warden_command(&["fleet", "serve"], &config, &[]);
        FleetDashboard {
            _dir: dir,
            child: Some(spawned.child),
            addr: spawned.admin.expect("the fleet dashboard's address"),
        }
    }
}

impl Drop for FleetDashboard {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            common::stop_warden(child);
        }
    }
}

/// A signed-in lead on a dashboard: pages, and forms posted with the session's token.
struct Lead {
    addr: SocketAddr,
    session: String,
}

impl Lead {
    fn sign_in(addr: SocketAddr, name: &str) -> Lead {
        let session = common::dashboard::sign_in(addr, name, LEAD_PASSWORD).expect("signed in");
        Lead { addr, session }
    }

    fn get(&self, path: &str) -> common::dashboard::Reply {
        common::dashboard::request("GET", self.addr, path, Some(&self.session), None)
    }

    fn review(&self, id: i64, note: &str) -> common::dashboard::Reply {
        let csrf = self.get("/").hidden("csrf").expect("a csrf token");
        common::dashboard::request(
            "POST",
            self.addr,
            &format!("/events/{id}/review"),
            Some(&self.session),
            Some(&[("csrf", &csrf), ("outcome", "incident"), ("note", note)]),
        )
    }

    /// The export's data lines (the header dropped).
    fn export(&self) -> Vec<String> {
        let reply = self.get("/export.csv");
        assert_eq!(reply.status, 200, "{}", reply.body);
        let mut lines: Vec<String> = reply.body.lines().map(str::to_string).collect();
        assert!(lines.first().is_some_and(|h| h.starts_with("site,id,seq,")));
        lines.remove(0);
        lines
    }
}

/// The central rollups agree with the rows: per site, hour and category set, the blocks
/// of live (unpurged) blocked rows; per site, the live rows not yet reviewed.
fn assert_tallies(pg: &Postgres) {
    let from_rows = pg.sql(
        "SELECT coalesce(string_agg(k || '=' || n, ' ' ORDER BY k), '') FROM (SELECT site || '/' \
         || date_trunc('hour', at) || '/' || categories AS k, sum(count) AS n FROM events \
         WHERE purged = 0 AND outcome = 'blocked' GROUP BY 1) d",
    );
    let from_tally = pg.sql(
        "SELECT coalesce(string_agg(k || '=' || n, ' ' ORDER BY k), '') FROM (SELECT site || '/' \
         || hour || '/' || categories AS k, blocks AS n FROM tally_hour WHERE blocks <> 0) d",
    );
    assert_eq!(from_tally, from_rows, "tally_hour = the live blocked rows");
    let unreviewed_rows = pg.sql(
        "SELECT coalesce(string_agg(site || '=' || n, ' ' ORDER BY site), '') FROM (SELECT site, \
         count(*) AS n FROM events WHERE purged = 0 AND NOT reviewed GROUP BY 1) d",
    );
    let unreviewed_tally = pg.sql(
        "SELECT coalesce(string_agg(site || '=' || unreviewed, ' ' ORDER BY site), '') \
         FROM tally_site WHERE unreviewed <> 0",
    );
    assert_eq!(
        unreviewed_tally, unreviewed_rows,
        "tally_site = the unreviewed rows"
    );
    let all_rows = pg.sql(
        "SELECT coalesce(string_agg(k || '=' || n, ' ' ORDER BY k), '') FROM (SELECT site || '/' \
         || (at AT TIME ZONE 'UTC')::date || '/' || categories AS k, sum(count) AS n FROM events \
         WHERE outcome = 'blocked' GROUP BY 1) d",
    );
    let day_tally = pg.sql(
        "SELECT coalesce(string_agg(k || '=' || n, ' ' ORDER BY k), '') FROM (SELECT site || '/' \
         || day || '/' || categories AS k, blocks AS n FROM tally_day WHERE blocks <> 0) d",
    );
    assert_eq!(
        day_tally, all_rows,
        "tally_day = every blocked row, purged or not"
    );
}

/// The central id of `site`'s row at `seq`, and its id in the site's own log.
fn central_ids(pg: &Postgres, site: &str, seq: i64) -> (i64, i64) {
    let ids = pg.sql(&format!(
        "SELECT id || ',' || local_id FROM events WHERE site = '{site}' AND seq = {seq}"
    ));
    let (id, local) = ids.split_once(',').expect("the row is central");
    (
        id.parse().expect("an id"),
        local.parse().expect("a local id"),
    )
}

/// Scoping: a lead bound to site A lists, opens, reviews and exports only A's events
/// (B's event by its id is 404, a review of it is refused and nothing is stored, the
/// CSV has no row of B's, the site filter set to B shows nothing); a trust-wide lead
/// sees both sites. Reviews both ways: one written on the fleet dashboard shows on the
/// site's own dashboard (and is not shipped back as the site's), one written on a site
/// shows on the fleet dashboard.
#[test]
fn the_fleet_dashboard_scopes_each_lead_and_shares_reviews_with_the_sites() {
    let pg = Postgres::start();
    let (mut elm, mut oak) = two_sites(&pg, ("elm", 3), ("oak", 2));
    let fleet = FleetDashboard::start(&pg, &[("trust", &[]), ("elm-lead", &["elm"])]);
    let (elm_id, elm_local) = central_ids(&pg, "elm", 1);
    let (oak_id, oak_local) = central_ids(&pg, "oak", 1);

    let scoped = Lead::sign_in(fleet.addr, "elm-lead");
    let listed = scoped.get("/events");
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(listed.body.contains("elm0.blocked.test"), "{}", listed.body);
    assert!(
        !listed.body.contains("oak0.blocked.test"),
        "{}",
        listed.body
    );
    assert!(
        !scoped.get("/").body.contains("oak"),
        "the overview names no other site"
    );
    let filtered = scoped.get("/events?site=oak");
    assert_eq!(filtered.status, 200);
    assert!(
        filtered.body.contains("No events match."),
        "{}",
        filtered.body
    );
    assert_eq!(scoped.get(&format!("/events/{elm_id}")).status, 200);
    assert_eq!(scoped.get(&format!("/events/{oak_id}")).status, 404);
    let refused = scoped.review(oak_id, "not mine to review");
    assert_eq!(refused.status, 404, "{}", refused.body);
    assert_eq!(pg.sql("SELECT count(*) FROM central_reviews"), "0");
    let rows = scoped.export();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r.starts_with("elm,")), "{rows:?}");

    let other = scoped.get("/?site=oak");
    assert_eq!(other.status, 200);
    assert!(
        other.body.contains("last 30 days (0 in all)"),
        "{}",
        other.body
    );

    let trust = Lead::sign_in(fleet.addr, "trust");
    let listed = trust.get("/events").body;
    assert!(listed.contains("elm0.blocked.test") && listed.contains("oak0.blocked.test"));
    assert!(trust.get("/").body.contains("last 30 days (5 in all)"));
    assert!(trust
        .get("/?site=oak")
        .body
        .contains("last 30 days (2 in all)"));
    assert_eq!(trust.get(&format!("/events/{oak_id}")).status, 200);
    let rows = trust.export();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r.starts_with("oak,")).count(), 2);

    // The trust's review reaches oak's own dashboard.
    let saved = trust.review(oak_id, "called the DSL at oak");
    assert_eq!(saved.status, 303, "{}", saved.body);
    let at_oak = Lead::sign_in(oak.admin.expect("oak's dashboard"), "lead");
    wait_until(
        "the trust's review shows on oak's dashboard",
        || at_oak.get(&format!("/events/{oak_local}")).body,
        |page| page.contains("called the DSL at oak") && page.contains("(trust dashboard)"),
    );
    // elm's own review reaches the trust's dashboard.
    let at_elm = Lead::sign_in(elm.admin.expect("elm's dashboard"), "lead");
    let saved = at_elm.review(elm_local, "spoke to the pupil at elm");
    assert_eq!(saved.status, 303, "{}", saved.body);
    wait_until(
        "elm's review shows on the fleet dashboard",
        || scoped.get(&format!("/events/{elm_id}")).body,
        |page| page.contains("spoke to the pupil at elm"),
    );
    let reviewed = trust.get("/events?state=reviewed").body;
    assert!(reviewed.contains("oak0.blocked.test") && reviewed.contains("elm0.blocked.test"));
    // The trust's review stays the trust's: oak never ships it back as its own.
    elm.stop();
    oak.stop();
    assert_tallies(&pg);
    assert_eq!(
        pg.sql("SELECT count(*) FROM reviews WHERE site = 'oak'"),
        "0"
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM reviews WHERE site = 'elm'"),
        "1"
    );
}

/// A sealed log of blocks by (days ago, categories, name), each from its own device,
/// through Warden's own write path; every other one (the first, third, …) by `pupil7`,
/// signed in over RADIUS, with the device's MAC.
fn old_log(path: &Path, rows: &[(u64, &str, &str)]) {
    use warden::audit::synthetic::SyntheticWriter;
    use warden::audit::{Event, Outcome};
    let now = std::time::SystemTime::now();
    let mut writer = SyntheticWriter::open(path, Duration::from_secs(1)).expect("a log");
    let events = rows
        .iter()
        .enumerate()
        .map(|(i, (days, categories, name))| {
            let time = now - Duration::from_secs(days * 86_400 + i as u64);
            let event = Event {
                time,
                client: std::net::IpAddr::from([10, 0, 0, i as u8 + 1]),
                device: Some(format!("laptop-{i}")),
                group: "default".into(),
                name: name.to_string(),
                qtype: "A".into(),
                categories: categories.to_string(),
                locked: *categories == "terrorism",
                list: "adult".into(),
                line: 1,
                rule: name.to_string(),
                response: "nxdomain".into(),
                cname: None,
                outcome: Outcome::Blocked,
                identity: match i % 2 {
                    0 => warden::audit::Identity {
                        mac: Some(format!("aa:bb:cc:dd:ee:{i:02x}")),
                        user: Some("pupil7".into()),
                        sources: Some("user from RADIUS accounting; group by user".into()),
                    },
                    _ => Default::default(),
                },
            };
            (event, 1, time)
        })
        .collect();
    writer.write(events, now).expect("written");
    writer.seal().expect("sealed");
}

/// Central retention by the trust's rules (`adult` kept 30 days, the rest a year): the
/// shipped adult rows older than 30 days lose their personal columns (client, device,
/// name) and only they; the chain still verifies; the fleet dashboard no longer shows
/// them; sign-ins past the default retention are deleted.
#[test]
fn central_retention_purges_by_category_and_the_chain_still_verifies() {
    let pg = Postgres::start();
    let mut site = Site::configure("ash", 500, &pg.url(), "");
    let rows = [
        (40, "adult", "old0.blocked.test"),
        (40, "adult", "old1.blocked.test"),
        (35, "adult,terrorism", "both.blocked.test"),
        (40, "terrorism", "kept.locked.test"),
        (10, "adult", "recent.blocked.test"),
    ];
    old_log(&site.audit(), &rows);
    site.run();
    wait_until(
        "the old log is central",
        || central(&pg, "ash"),
        |c| c.0 == 5,
    );
    pg.sql(
        "INSERT INTO signins (site, local_id, at, \"user\", client_ip, result) VALUES \
         ('ash', 100, '2025-01-01T00:00:00.000Z', 'lead', '10.0.0.9', 'ok')",
    );
    let fleet = FleetDashboard::with(
        &pg,
        &[("trust", &[])],
        "[audit]\nretention_days = 365\nretention_days_by_category = { adult = 30 }\n",
    );
    let names = || {
        pg.sql(
            "SELECT string_agg(name || ':' || purged || ':' || client_ip || ':' || \
             coalesce(device, '-'), ' ' ORDER BY seq) FROM events WHERE site = 'ash'",
        )
    };
    let after = wait_until(
        "the adult rows past 30 days are purged centrally",
        names,
        |n| n.matches(":1:").count() == 2,
    );
    assert!(
        after.contains("both.blocked.test:0:")
            && after.contains("kept.locked.test:0:")
            && after.contains("recent.blocked.test:0:"),
        "only the due rows: {after}"
    );
    assert!(
        !after.contains("old0") && !after.contains("old1"),
        "{after}"
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM signins WHERE local_id = 100"),
        "0"
    );
    assert_tallies(&pg);
    // Who asked (user, MAC) was shipped with the rows, and purged with the due ones.
    let who = pg.sql(
        "SELECT string_agg(name || ':' || coalesce(user_name, '-') || ':' || \
         coalesce(mac, '-'), ' ' ORDER BY seq) FROM events WHERE site = 'ash'",
    );
    assert!(
        who.contains("both.blocked.test:pupil7:aa:bb:cc:dd:ee:02")
            && who.contains("kept.locked.test:-:-")
            && who.contains("recent.blocked.test:pupil7:aa:bb:cc:dd:ee:04")
            && who.matches(":-:-").count() == 3,
        "{who}"
    );
    let trust = Lead::sign_in(fleet.addr, "trust");
    let listed = trust.get("/events").body;
    assert!(listed.contains("recent.blocked.test") && !listed.contains("old0"));
    // The trust's dashboard filters by the person, across the site's devices.
    let pupil = trust.get("/events?user=pupil7").body;
    assert!(
        pupil.contains("recent.blocked.test")
            && pupil.contains("both.blocked.test")
            && !pupil.contains("kept.locked.test"),
        "{pupil}"
    );
    let (status, out) = fleet_verify(&site.config);
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("site ash: intact (5 rows)"), "{out}");
    site.stop();
}

// ---- The trust's shared policy (`warden fleet policy`, followed by every site) ----

/// The trust's own config: the same lists and categories as the sites, `[fleet]` without
/// a site, as the IT lead's `warden fleet policy` reads it.
fn trust_config(pg: &Postgres) -> (tempfile::TempDir, PathBuf) {
    fleet_config(&format!(
        "[fleet]\ndatabase = \"{}\"\npassword_file = \"pg.pw\"\n",
        pg.url()
    ))
}

/// `warden fleet policy ARGS… --config CONFIG`: (exit code, stdout, stderr).
fn policy_run(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["fleet", "policy"])
        .args(args)
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .output()
        .expect("warden fleet policy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`policy_run`]: (exit code, stdout and stderr together).
fn policy(config: &Path, args: &[&str]) -> (i32, String) {
    let (code, out, err) = policy_run(config, args);
    (code, format!("{out}{err}"))
}

/// A command that must succeed; returns its standard output.
fn policy_ok(config: &Path, args: &[&str]) -> String {
    let (code, out, err) = policy_run(config, args);
    assert_eq!(code, 0, "warden fleet policy {args:?}: {out}{err}");
    out
}

/// Store a trust-wide deny entry for `name` under `adult` (as `a`, for `reason`).
fn deny_adult(config: &Path, name: &str, reason: &str) {
    policy_ok(
        config,
        &[
            "deny",
            "add",
            name,
            "--category",
            "adult",
            "--reason",
            reason,
            "--by",
            "a",
        ],
    );
}

/// Wait until `site` blocks `name` (or, with `blocked` false, answers it).
fn wait_blocked(site: &Site, name: &str, blocked: bool) {
    wait_until(
        &format!("{}: {name} blocked {blocked}", site.name),
        || blocks(site, name),
        |b| *b == blocked,
    );
}

/// A site following the policy closely: checks every second, beats every second.
fn policy_site(pg: &Postgres, name: &str) -> Site {
    Site::with(
        name,
        500,
        &pg.url(),
        "policy_poll = \"1s\"\nheartbeat = \"1s\"\n",
    )
}

/// Whether `site` answers `name` with a block (NXDOMAIN, as the tests' config blocks).
fn blocks(site: &Site, name: &str) -> bool {
    ask(site.dns, name) == Some(ResponseCode::NXDomain)
}

/// The site's heartbeat row: (policy version, refused version or "", refused error); ""
/// while there is none. A site migrates the central store in the background once its DNS
/// is up, so the table itself may not exist yet when a test starts asking.
fn health(pg: &Postgres, site: &str) -> String {
    if pg.sql("SELECT to_regclass('site_health') IS NOT NULL") != "t" {
        return String::new();
    }
    pg.sql(&format!(
        "SELECT policy_version || '|' || coalesce(refused_version::text, '') || '|' || \
         coalesce(refused_error, '') FROM site_health WHERE site = '{site}'"
    ))
}

#[test]
fn a_trust_wide_deny_is_blocked_at_two_sites_within_seconds_and_a_locked_allow_is_refused() {
    let _alone = timed();
    let pg = Postgres::start();
    // Polling once an hour: a change reaches them within seconds only by notification.
    let notified = |name: &str| {
        Site::with(
            name,
            500,
            &pg.url(),
            "policy_poll = \"1h\"\nheartbeat = \"1s\"\n",
        )
    };
    let north = notified("north");
    let south = notified("south");
    let (_trust, config) = trust_config(&pg);
    // Both follow before the change (their first heartbeat says so).
    for site in ["north", "south"] {
        wait_until(
            &format!("{site}'s first heartbeat"),
            || health(&pg, site),
            |h| h.starts_with("0|"),
        );
    }
    assert!(!blocks(&north, "www.phish.example"));

    let started = Instant::now();
    let out = policy_ok(
        &config,
        &[
            "deny",
            "add",
            "phish.example",
            "--category",
            "adult",
            "--reason",
            "phishing seen at north",
            "--by",
            "it-lead",
        ],
    );
    assert!(out.contains("version 1"), "{out}");
    for site in [&north, &south] {
        wait_until(
            &format!("{}: phish.example blocked", site.name),
            || blocks(site, "www.phish.example"),
            |b| *b,
        );
    }
    let took = started.elapsed();
    eprintln!("a deny entry reached both sites in {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "applied at both sites in {took:?}"
    );
    // The block is audited under the entry's category, as any block.
    assert!(blocks(&north, "phish.example"));

    // An allow entry for a name on a locked list is refused, naming the list; nothing
    // is stored.
    let (code, text) = policy(
        &config,
        &[
            "allow",
            "add",
            "locked.test",
            "--reason",
            "research",
            "--by",
            "it-lead",
        ],
    );
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("locked.test is on a locked list (terrorism)"),
        "{text}"
    );
    // A deny entry into a locked category, an unknown category, a group that does not
    // exist: each refused with what is wrong.
    for (args, says) in [
        (
            vec!["deny", "add", "x.example", "--category", "terrorism"],
            "terrorism is a locked category",
        ),
        (
            vec!["deny", "add", "x.example", "--category", "nope"],
            "nope",
        ),
        (
            vec!["allow", "add", "x.example", "--group", "nobody"],
            "nobody",
        ),
    ] {
        let mut args = args.clone();
        args.extend(["--reason", "r", "--by", "it-lead"]);
        let (code, text) = policy(&config, &args);
        assert_ne!(code, 0, "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
    }
    assert_eq!(pg.sql("SELECT count(*) FROM policy_changes"), "1");

    // A site-scoped allow entry: north stops blocking blocked.test; south still blocks.
    policy_ok(
        &config,
        &[
            "allow",
            "add",
            "blocked.test",
            "--site",
            "north",
            "--reason",
            "used in lessons",
            "--by",
            "it-lead",
        ],
    );
    wait_blocked(&north, "blocked.test", false);
    wait_until(
        "north: on version 2",
        || health(&pg, "north"),
        |h| h.starts_with("2|"),
    );
    wait_until(
        "south: on version 2",
        || health(&pg, "south"),
        |h| h.starts_with("2|"),
    );
    assert!(blocks(&south, "blocked.test"));
    assert!(blocks(&north, "phish.example"));
}

#[test]
fn a_site_restarted_with_the_database_down_filters_by_its_last_policy_then_catches_up() {
    let pg = Postgres::start();
    let mut site = policy_site(&pg, "north");
    let (_trust, config) = trust_config(&pg);
    deny_adult(&config, "first.example", "r1");
    wait_blocked(&site, "first.example", true);
    site.stop();
    // A change the site has not seen, then the database goes away.
    deny_adult(&config, "second.example", "r2");
    pg.stop();
    site.run();
    assert!(
        blocks(&site, "first.example"),
        "the last good policy is kept on disk"
    );
    assert!(
        !blocks(&site, "second.example"),
        "a version it never saw cannot be in force"
    );
    pg.restart();
    wait_blocked(&site, "second.example", true);
    assert!(blocks(&site, "first.example"));
    wait_until(
        "reported on version 2",
        || health(&pg, "north"),
        |h| h.starts_with("2|"),
    );
}

#[test]
fn a_store_with_an_older_policy_than_the_site_applied_is_not_followed() {
    let pg = Postgres::start();
    let site = policy_site(&pg, "north");
    let (_trust, config) = trust_config(&pg);
    deny_adult(&config, "kept.example", "r1");
    wait_blocked(&site, "kept.example", true);
    // The database emptied (restored from an old backup, or another one): the site keeps
    // its rules and says why.
    pg.sql("DELETE FROM policy_changes");
    let refused = wait_until(
        "refused",
        || health(&pg, "north"),
        |h| h.starts_with("1|0|"),
    );
    assert!(
        refused.contains("older than the 1 applied here"),
        "{refused}"
    );
    assert!(blocks(&site, "kept.example"));
}

#[test]
fn a_version_that_does_not_build_at_a_site_is_refused_there_reported_and_the_rules_stay() {
    let pg = Postgres::start();
    let site = policy_site(&pg, "north");
    let dashboard = FleetDashboard::with(&pg, &[("trustlead", &[])], "silent_after = \"10s\"\n");
    let (_trust, config) = trust_config(&pg);
    deny_adult(&config, "kept.example", "r1");
    wait_blocked(&site, "kept.example", true);

    // A list whose URL answers a login page instead of a list.
    let (feed, addr) = common::Feed::start(
        "<html>\n<head><title>Sign in</title></head>\n<body>please sign in</body>\n</html>\n",
        None,
    );
    let url = format!("http://{addr}/list.txt");
    policy_ok(
        &config,
        &[
            "list",
            "add",
            "extra",
            "--category",
            "adult",
            "--url",
            &url,
            "--reason",
            "a second source",
            "--by",
            "a",
        ],
    );
    let refused = wait_until(
        "version 2 refused",
        || health(&pg, "north"),
        |h| h.starts_with("1|2|"),
    );
    assert!(refused.contains("extra"), "{refused}");
    assert!(!feed.requests().is_empty());
    // The rules in force stay, and nothing of version 2 is on disk.
    assert!(blocks(&site, "kept.example"));
    let lead = Lead::sign_in(dashboard.addr, "trustlead");
    let page = wait_until(
        "the fleet overview shows the refusal",
        || lead.get("/").body,
        |b| b.contains("REFUSED policy v2"),
    );
    assert!(page.contains("OLD POLICY: v1 of v2"), "{page}");

    // The list's server fixed: the site takes version 2 at its next poll.
    feed.set_body("listed.example\nalso.example\n");
    wait_until(
        "version 2 applied",
        || health(&pg, "north"),
        |h| h.starts_with("2||"),
    );
    assert!(blocks(&site, "www.listed.example"));
    assert!(blocks(&site, "kept.example"));
}

#[test]
fn history_shows_every_change_and_the_policy_at_a_past_time() {
    let pg = Postgres::start();
    let (_trust, config) = trust_config(&pg);
    policy_ok(
        &config,
        &[
            "deny",
            "add",
            "one.example",
            "--category",
            "adult",
            "--reason",
            "seen in lessons",
            "--by",
            "alice",
        ],
    );
    policy_ok(
        &config,
        &[
            "allow",
            "add",
            "two.example",
            "--site",
            "north",
            "--reason",
            "music department",
            "--by",
            "bob",
        ],
    );
    policy_ok(
        &config,
        &[
            "deny",
            "remove",
            "one.example",
            "--reason",
            "the site is clean now",
            "--by",
            "carol",
        ],
    );
    let history = policy_ok(&config, &["history"]);
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 3, "{history}");
    assert!(
        lines[0].starts_with("v1\t")
            && lines[0].contains("\talice\tdeny one.example as adult\treason: seen in lessons"),
        "{history}"
    );
    assert!(
        lines[1].contains("\tbob\tallow two.example (sites: north)\treason: music department"),
        "{history}"
    );
    assert!(
        lines[2].contains("\tcarol\tremove deny one.example\treason: the site is clean now"),
        "{history}"
    );

    // The policy as it stood just after version 2, by its time.
    let at = pg.sql(
        "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
         FROM policy_changes WHERE version = 2",
    );
    let then = policy_ok(&config, &["show", "--at", &at]);
    assert!(then.contains("version 2"), "{then}");
    assert!(
        then.contains(
            "deny one.example as adult [all sites; all groups] v1 by alice: seen in lessons"
        ),
        "{then}"
    );
    assert!(
        then.contains("allow two.example [sites north; all groups] v2 by bob"),
        "{then}"
    );
    let now = policy_ok(&config, &["show"]);
    assert!(!now.contains("one.example"), "{now}");
    assert!(now.contains("two.example"), "{now}");
    let diff = policy_ok(&config, &["diff", "1", "3"]);
    assert!(diff.contains("- deny one.example"), "{diff}");
    assert!(diff.contains("+ allow two.example"), "{diff}");
    // A change needs who and why.
    let (code, text) = policy(
        &config,
        &["allow", "add", "x.example", "--reason", " ", "--by", "a"],
    );
    assert_ne!(code, 0);
    assert!(text.contains("a reason is needed"), "{text}");
}

#[test]
fn a_silent_site_and_one_on_an_old_policy_are_flagged_on_the_fleet_overview_with_each_self_test() {
    let pg = Postgres::start();
    let north = policy_site(&pg, "north");
    let mut south = policy_site(&pg, "south");
    let dashboard = FleetDashboard::with(&pg, &[("trustlead", &[])], "silent_after = \"10s\"\n");
    let lead = Lead::sign_in(dashboard.addr, "trustlead");
    for site in ["north", "south"] {
        wait_until(
            &format!("{site} heard"),
            || health(&pg, site),
            |h| h.starts_with("0|"),
        );
    }
    south.kill();
    let (_trust, config) = trust_config(&pg);
    deny_adult(&config, "new.example", "r");
    wait_until(
        "north applies version 1",
        || health(&pg, "north"),
        |h| h.starts_with("1|"),
    );
    let page = wait_until(
        "south shown silent",
        || lead.get("/").body,
        |b| b.contains("SILENT"),
    );
    let row = |site: &str| {
        let at = page.find(&format!(">{site}</a>")).expect("the site's row");
        let end = page[at..].find("</tr>").map_or(page.len(), |e| at + e);
        page[at..end].to_string()
    };
    let (north_row, south_row) = (row("north"), row("south"));
    assert!(south_row.contains("SILENT"), "{south_row}");
    assert!(south_row.contains("OLD POLICY: v0 of v1"), "{south_row}");
    assert!(!north_row.contains("SILENT"), "{north_row}");
    assert!(north_row.contains("Policy v1 (newest)"), "{north_row}");
    // Each site's last self-test travels in its heartbeat.
    assert!(
        north_row.contains("Filtering check: ") && north_row.contains(" checks pass at 20"),
        "{north_row}"
    );
    // The site's review report shows the trust's policy as applied there.
    let report = north.dir.path().join("report.html");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["report", "--config", north.config.to_str().unwrap()])
        .args(["--out", report.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("The trust's policy (version 1 applies here)")
            && html.contains("new.example"),
        "{html}"
    );
    drop(north);
}

impl Lead {
    /// Post `form` (with the session's CSRF token) to `path`.
    fn post(&self, path: &str, form: &[(&str, &str)]) -> common::dashboard::Reply {
        let csrf = self.get("/").hidden("csrf").expect("a csrf token");
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend_from_slice(form);
        common::dashboard::request("POST", self.addr, path, Some(&self.session), Some(&fields))
    }
}

#[test]
fn a_trust_wide_admin_changes_the_policy_on_the_trust_dashboard_and_every_user_sees_it() {
    let pg = Postgres::start();
    let north = policy_site(&pg, "north");
    let dashboard = FleetDashboard::of(
        &pg,
        &[
            ("trustadmin", "admin", &[]),
            ("northadmin", "admin", &["north"]),
            ("trustlead", "lead", &[]),
        ],
        "",
    );
    let admin = Lead::sign_in(dashboard.addr, "trustadmin");
    let page = admin.get("/policy");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Version 0.") && page.body.contains("Add an entry"),
        "{}",
        page.body
    );

    let added = admin.post(
        "/policy/add",
        &[
            ("kind", "deny"),
            ("name", "Dash.Example."),
            ("category", "adult"),
            ("reason", "seen in a lesson"),
        ],
    );
    assert_eq!(added.status, 303, "{}", added.body);
    wait_blocked(&north, "dash.example", true);
    let (_trust, config) = trust_config(&pg);
    let history = policy_ok(&config, &["history"]);
    assert!(
        history.contains("\ttrustadmin\tdeny dash.example as adult\treason: seen in a lesson"),
        "{history}"
    );

    // The same checks as the command line's: a name a locked list blocks is refused.
    let refused = admin.post(
        "/policy/add",
        &[
            ("kind", "allow"),
            ("name", "locked.test"),
            ("reason", "research"),
        ],
    );
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(
        refused.body.contains("locked list (terrorism)"),
        "{}",
        refused.body
    );
    // A school's own admin, and a lead, cannot change the trust's policy.
    let school = Lead::sign_in(dashboard.addr, "northadmin");
    let denied = school.post(
        "/policy/add",
        &[
            ("kind", "deny"),
            ("name", "x.example"),
            ("category", "adult"),
            ("reason", "r"),
        ],
    );
    assert_eq!(denied.status, 403, "{}", denied.body);
    let lead = Lead::sign_in(dashboard.addr, "trustlead");
    let denied = lead.post(
        "/policy/remove",
        &[("kind", "deny"), ("name", "dash.example"), ("reason", "r")],
    );
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(pg.sql("SELECT count(*) FROM policy_changes"), "1");
    // Every user sees the entries in force and who made them.
    let seen = lead.get("/policy");
    assert_eq!(seen.status, 200);
    assert!(seen.body.contains("dash.example") && seen.body.contains("seen in a lesson"));
    assert!(!seen.body.contains("Add an entry"));
    // The site's own dashboard shows the version it applies.
    let site_lead = Lead::sign_in(north.admin.expect("north's dashboard"), "lead");
    let here = wait_until(
        "north's dashboard shows version 1",
        || site_lead.get("/policy").body,
        |b| b.contains("Version 1 applies here"),
    );
    assert!(here.contains("dash.example"), "{here}");

    let removed = admin.post(
        "/policy/remove",
        &[
            ("kind", "deny"),
            ("name", "dash.example"),
            ("reason", "lesson over"),
        ],
    );
    assert_eq!(removed.status, 303, "{}", removed.body);
    wait_blocked(&north, "dash.example", false);
}

#[test]
fn a_site_adds_its_own_allow_entries_only_where_the_trust_permits() {
    let pg = Postgres::start();
    let mut north = Site::configure(
        "north",
        500,
        &pg.url(),
        "policy_poll = \"1s\"\nheartbeat = \"1s\"\n",
    );
    common::dashboard::add_user(&north.config, "admin", "admin", LEAD_PASSWORD);
    north.run();
    let admin = Lead::sign_in(north.admin.expect("north's dashboard"), "admin");
    let add = |name: &str| admin.post("/admin/allow", &[("name", name), ("reason", "lessons")]);
    assert_eq!(add("blocked.test").status, 303);
    wait_blocked(&north, "blocked.test", false);

    let (_trust, config) = trust_config(&pg);
    policy_ok(
        &config,
        &[
            "local-allow",
            "off",
            "--site",
            "north",
            "--reason",
            "central list only",
            "--by",
            "it-lead",
        ],
    );
    // Its own entry is no longer applied, and no new one can be added.
    wait_blocked(&north, "blocked.test", true);
    let refused = add("tracker.test");
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("keeps allow entries to the trust"),
        "{}",
        refused.body
    );
    let page = admin.get("/admin");
    assert!(
        page.body.contains("the entries below are not applied"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("blocked.test"),
        "the entry is kept, shown"
    );
    let shown = policy_ok(&config, &["show"]);
    assert!(
        shown.contains("local allow entries not permitted [sites north] v1 by it-lead"),
        "{shown}"
    );

    policy_ok(
        &config,
        &[
            "local-allow",
            "on",
            "--site",
            "north",
            "--reason",
            "trial over",
            "--by",
            "it-lead",
        ],
    );
    wait_blocked(&north, "blocked.test", false);
    assert_eq!(add("tracker.test").status, 303);
}

#[test]
fn the_trusts_groups_apply_at_every_site_and_a_site_cannot_define_them_again() {
    let pg = Postgres::start();
    let north = policy_site(&pg, "north");
    // South defines the default group itself: the trust's cannot be read with it.
    let _south = Site::with(
        "south",
        500,
        &pg.url(),
        "policy_poll = \"1s\"\nheartbeat = \"1s\"\n[groups.default]\nblock = [\"adult\"]\n",
    );
    let (trust, config) = trust_config(&pg);
    let settings = trust.path().join("settings.toml");
    let set = |text: &str, reason: &str| {
        std::fs::write(&settings, text).expect("settings");
        policy(
            &config,
            &[
                "settings",
                "set",
                settings.to_str().expect("a path"),
                "--reason",
                reason,
                "--by",
                "it-lead",
            ],
        )
    };
    let (code, out) = set(
        "[groups.default]\nblock = [\"adult\"]\n[groups.staff]\nblock = []\n",
        "one policy for every school",
    );
    assert_eq!(code, 0, "{out}");
    wait_until(
        "north on version 1",
        || health(&pg, "north"),
        |h| h.starts_with("1|"),
    );
    assert!(blocks(&north, "blocked.test"));
    let refused = wait_until(
        "south refuses version 1",
        || health(&pg, "south"),
        |h| h.starts_with("0|1|"),
    );
    assert!(
        refused.contains("policy.toml") && refused.contains("default"),
        "{refused}"
    );

    // The default group no longer blocks adult at any site; a locked list still blocks.
    let (code, out) = set(
        "[groups.default]\nblock = []\n",
        "adult filtering moves to the firewall",
    );
    assert_eq!(code, 0, "{out}");
    wait_blocked(&north, "blocked.test", false);
    assert!(
        blocks(&north, "locked.test"),
        "a locked list blocks every group"
    );

    // Settings are categories and groups only, and cannot redefine the trust's own
    // categories (a locked one least of all).
    for (text, says) in [
        ("[server]\nlisten = []\n", "[server]"),
        ("[categories.terrorism]\nlocked = false\n", "terrorism"),
        ("[groups.default]\nblock = [\"nope\"]\n", "nope"),
        ("block = []\n", "table header"),
    ] {
        let (code, out) = set(text, "r");
        assert_ne!(code, 0, "{text}: {out}");
        assert!(out.contains(says), "{text}: {out}");
    }
    let shown = policy_ok(&config, &["show"]);
    assert!(
        shown.contains("settings groups.default v2 by it-lead"),
        "{shown}"
    );
    assert!(shown.contains("[groups.default]\nblock = []"), "{shown}");
}

// ---- Skew: the previous release against the new central schema ----

/// The release before the shared policy: central schema 4, the last commit before this
/// release's schema 5. The skew test runs it as a site and as a trust dashboard.
const PREVIOUS_RELEASE: &str = "c75ede83407955610ef0e1afedb3962c6ac1b67a";

/// The previous release's `warden`, built once into this target folder (named
/// `warden-previous`, so it shares the compiled dependencies and overwrites nothing).
/// Its source comes from this repository's history.
fn previous_release() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_warden"));
    let profile_dir = bin.parent().expect("target/debug");
    let target = profile_dir.parent().expect("target");
    let source =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("previous-{PREVIOUS_RELEASE}"));
    let ready = source.join(".extracted");
    if !ready.exists() {
        let _ = std::fs::remove_dir_all(&source);
        std::fs::create_dir_all(&source).expect("a folder for the previous release");
        let archive = std::process::Command::new("git")
            .args([
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "archive",
                "--format=tar",
                PREVIOUS_RELEASE,
            ])
            .output()
            .expect("git");
        assert!(
            archive.status.success(),
            "the skew test needs the previous release {PREVIOUS_RELEASE} from this repository's \
             history (a shallow clone lacks it: git fetch --unshallow): {}",
            String::from_utf8_lossy(&archive.stderr)
        );
        let mut tar = std::process::Command::new("tar")
            .args(["-x", "-C"])
            .arg(&source)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("tar");
        use std::io::Write;
        tar.stdin
            .take()
            .expect("stdin")
            .write_all(&archive.stdout)
            .expect("unpacked");
        assert!(tar.wait().expect("tar").success());
        // Its own package and binary name; the library keeps its name (its main.rs uses it).
        let manifest = source.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).expect("its Cargo.toml");
        let renamed = text
            .replacen("[package]\nname = \"warden\"\n", "[package]\nname = \"warden-previous\"\n", 1)
            .replacen("default-run = \"warden\"\n", "default-run = \"warden-previous\"\n", 1)
            .replacen(
                "[[bin]]\nname = \"warden\"\npath = \"src/main.rs\"",
                "[lib]\nname = \"warden\"\npath = \"src/lib.rs\"\n\n[[bin]]\nname = \"warden-previous\"\npath = \"src/main.rs\"",
                1,
            );
        assert!(
            renamed.contains("name = \"warden-previous\"\npath"),
            "{renamed}"
        );
        std::fs::write(&manifest, renamed).expect("renamed");
        std::fs::write(&ready, PREVIOUS_RELEASE).expect("marked");
    }
    // With an example beside the binary, the dev-dependencies' features are unified as in
    // this test build, so every dependency already compiled here is used as it is.
    let _alone = timed();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = std::process::Command::new(cargo)
        .args([
            "build",
            "--offline",
            "--bin",
            "warden-previous",
            "--example",
            "stub_upstream",
            "--target-dir",
        ])
        .arg(target)
        .current_dir(&source)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo build of the previous release");
    assert!(
        out.status.success(),
        "building the previous release: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    profile_dir.join("warden-previous")
}

/// Take out of `config` the settings the previous release does not know (it refuses
/// unknown keys): the self-test's canary.
fn for_previous_release(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("canary ="))
        .collect();
    std::fs::write(config, kept.join("\n") + "\n").unwrap();
}

#[test]
fn the_previous_release_keeps_working_against_the_new_central_schema() {
    let previous = previous_release();
    let pg = Postgres::start();
    // The previous release sets the central store up (schema 4) and ships.
    let mut old = Site::configure("old-school", 500, &pg.url(), "");
    for_previous_release(&old.config);
    old.run_binary(&previous);
    block(&old, "old", "blocked.test", 20);
    assert_shipped(&pg, &old, 20);
    assert_eq!(pg.sql("SELECT version FROM warden_schema"), "4");

    // This release joins: it migrates the store (schemas 5 to 9 add: policy, the
    // identity columns, the dashboard's second factors, the self-test in the heartbeat,
    // the daily tally; a Warden of schema 4 may still use it) and follows the trust's
    // policy.
    let new = policy_site(&pg, "new-school");
    wait_until(
        "the new site's heartbeat",
        || health(&pg, "new-school"),
        |h| h.starts_with("0|"),
    );
    assert_eq!(
        pg.sql("SELECT version || ',' || applied FROM warden_schema"),
        "4,9"
    );
    let (_trust, config) = trust_config(&pg);
    deny_adult(&config, "skew.example", "r");
    wait_blocked(&new, "skew.example", true);
    block(&new, "new", "blocked.test", 10);
    assert_shipped(&pg, &new, 11);

    // The previous release, restarted against the newer store, starts and ships.
    old.stop();
    old.run_binary(&previous);
    block(&old, "again", "blocked.test", 5);
    assert_shipped(&pg, &old, 25);
    no_position_twice(&pg);

    // Its trust dashboard reads the newer store too.
    let (dir, dash_config) = fleet_config(&format!(
        "[fleet]\ndatabase = \"{}\"\npassword_file = \"pg.pw\"\n",
        pg.url()
    ));
    common::dashboard::add_user_of(&dash_config, "trustlead", "lead", LEAD_PASSWORD, &[]);
    for_previous_release(&dash_config);
    let spawned = common::spawn_binary(&previous, &["fleet", "serve"], &dash_config, &[]);
    let mut dashboard = FleetDashboard {
        _dir: dir,
        child: Some(spawned.child),
        addr: spawned.admin.expect("its address"),
    };
    let lead = Lead::sign_in(dashboard.addr, "trustlead");
    let page = lead.get("/");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(">old-school</a>") && page.body.contains(">new-school</a>"));
    if let Some(child) = dashboard.child.take() {
        common::stop_warden(child);
    }
    // And this release's verify finds both chains intact.
    let (code, text) = fleet_verify(&config);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("site old-school: intact (25 rows)"), "{text}");
    assert!(text.contains("site new-school: intact (11 rows)"), "{text}");
}

#[test]
fn the_trust_dashboard_refuses_a_reused_code_and_shows_a_governor_counts_only() {
    let pg = Postgres::start();
    let (mut elm, mut oak) = two_sites(&pg, ("elm", 1), ("oak", 1));
    let enrolled = std::sync::Mutex::new(None);
    let fleet = FleetDashboard::prepared(
        &pg,
        &[("trust", "lead", &[]), ("governor", "governor", &[])],
        "",
        |config| {
            *enrolled.lock().unwrap() =
                Some(common::dashboard::enrol_second_factor(config, "trust"));
        },
    );
    let (secret, _) = enrolled.into_inner().unwrap().unwrap();
    let code = common::dashboard::totp_code(&secret, 0);
    let sign_in =
        |code: &str| common::dashboard::sign_in_with_code(fleet.addr, "trust", LEAD_PASSWORD, code);
    assert_eq!(sign_in("").unwrap_err().status, 401);
    let session = sign_in(&code).expect("the current code signs in");
    let trust = Lead {
        addr: fleet.addr,
        session,
    };
    assert_eq!(sign_in(&code).unwrap_err().status, 401, "a reused code");
    assert_eq!(
        pg.sql("SELECT count(*) FROM dashboard_second_factor_uses WHERE \"user\" = 'trust'"),
        "1"
    );
    // The lead's overview links each site's blocks to its events; the governor's
    // shows the counts without them, and no event page opens for them.
    wait_until(
        "both sites on the trust's overview",
        || trust.get("/").body,
        |page| page.contains("/events?site=elm") && page.contains("/events?site=oak"),
    );
    let governor = Lead::sign_in(fleet.addr, "governor");
    let page = governor.get("/");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("elm") && page.body.contains("oak"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("/events"), "{}", page.body);
    assert_eq!(governor.get("/events").status, 403);
    assert_eq!(governor.get("/export.csv").status, 403);
    elm.stop();
    oak.stop();
}

/// The cells of `row_key`'s row in the table under the heading `heading` of `page`.
fn table_row(page: &str, heading: &str, row_key: &str) -> Vec<String> {
    let at = page
        .find(&format!("{heading}</h3>"))
        .unwrap_or_else(|| panic!("no {heading:?} in {page}"));
    let section = &page[at..];
    let section = &section[..section.find("</table>").unwrap_or(section.len())];
    let row_at = section
        .find(&format!("<tr><td>{row_key}</td>"))
        .unwrap_or_else(|| panic!("no {row_key:?} row under {heading:?} in {section}"));
    let row = &section[row_at..];
    let row = &row[..row.find("</tr>").expect("the row's end")];
    row.split("<td>")
        .skip(1)
        .map(|cell| cell.split("</td>").next().unwrap_or("").to_string())
        .collect()
}

/// The trust's review report on `warden fleet serve` and from `warden fleet report`:
/// each site's blocks, serious blocks and how soon the trust reviewed them, reviews,
/// allow changes and the trust's policy changes, within the reader's sites; the
/// governors' version (asked for, or a governor's) blanks every address the events hold.
#[test]
fn the_trust_report_counts_each_site_in_the_readers_scope_and_names_no_one_for_governors() {
    let pg = Postgres::start();
    let (mut elm, mut oak) = two_sites(&pg, ("elm", 3), ("oak", 2));
    // A serious block at elm (the locked terrorism list).
    assert_eq!(ask(elm.dns, "locked.test"), Some(ResponseCode::NXDomain));
    assert_shipped(&pg, &elm, 4);
    // An allow change elm's admin made, whose reason names the asking address.
    let log = rusqlite::Connection::open(elm.audit()).expect("elm's log");
    log.busy_timeout(Duration::from_secs(5)).expect("timeout");
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    log.execute(
        "INSERT INTO allow_changes (at, by, action, name, reason) \
         VALUES (?1, 'elm-admin', 'add', 'maths.blocked.test', 'asked for by 127.0.0.1 in maths')",
        [&now],
    )
    .expect("an allow change");
    wait_until(
        "elm's allow change arrives centrally",
        || pg.sql("SELECT count(*) FROM allow_changes WHERE site = 'elm'"),
        |n| n == "1",
    );
    let (trust_dir, trust_config) = trust_config(&pg);
    deny_adult(&trust_config, "casino.test", "agreed by the trust's DSLs");
    let fleet = FleetDashboard::of(
        &pg,
        &[
            ("trust", "lead", &[]),
            ("elm-lead", "lead", &["elm"]),
            ("governor", "governor", &[]),
        ],
        "",
    );
    let trust = Lead::sign_in(fleet.addr, "trust");
    let (serious_id, _) = central_ids(&pg, "elm", 4);
    assert_eq!(
        trust.review(serious_id, "called the DSL at elm").status,
        303
    );

    let full = trust.get("/report?since=12m");
    assert_eq!(full.status, 200, "{}", full.body);
    let page = &full.body;
    for section in [
        "1. Sites",
        "2. The trust's policy",
        "3. Outcomes",
        "4. Allow entries changed at the sites",
        "5. Coverage",
        "6. Review record",
    ] {
        assert!(page.contains(section), "{section} in {page}");
    }
    let total = |site: &str| {
        table_row(page, "Blocks per site per month", site)
            .last()
            .cloned()
    };
    assert_eq!(total("elm").as_deref(), Some("4"));
    assert_eq!(total("oak").as_deref(), Some("2"));
    // elm: one serious block, reviewed; oak: none.
    let serious = table_row(page, "Serious blocks (terrorism)", "elm");
    assert_eq!(serious[..3], ["elm", "1", "1"], "{serious:?}");
    assert!(serious[4].ends_with("hours"), "{serious:?}");
    assert_eq!(
        table_row(page, "Reviews by outcome", "elm"),
        ["elm", "incident", "1"]
    );
    assert!(page.contains("agreed by the trust's DSLs"), "{page}");
    assert!(page.contains("deny casino.test"), "{page}");
    assert!(
        page.contains("asked for by 127.0.0.1 in maths"),
        "the lead's version names who asked: {page}"
    );

    // A crowd asking at once is served in turn, each page whole.
    let crowd: Vec<String> = std::thread::scope(|s| {
        let asks: Vec<_> = (0..6)
            .map(|_| s.spawn(|| trust.get("/report?since=52w")))
            .collect();
        asks.into_iter()
            .map(|a| {
                let reply = a.join().expect("a request");
                assert_eq!(reply.status, 200, "{}", reply.body);
                reply.body
            })
            .collect()
    });
    for page in &crowd {
        assert_eq!(
            table_row(page, "Blocks per site per month", "elm")
                .last()
                .map(String::as_str),
            Some("4")
        );
    }

    // A lead of elm sees elm only.
    let elm_lead = Lead::sign_in(fleet.addr, "elm-lead");
    let scoped = elm_lead.get("/report").body;
    assert_eq!(
        table_row(&scoped, "Blocks per site per month", "elm")
            .last()
            .map(String::as_str),
        Some("4")
    );
    assert!(!scoped.contains("oak"), "{scoped}");

    // The governors' version: asked for by the lead, and a governor's always.
    let governor = Lead::sign_in(fleet.addr, "governor");
    for (who, reply) in [
        ("lead", trust.get("/report?governors=yes")),
        ("governor", governor.get("/report?governors=no")),
    ] {
        assert_eq!(reply.status, 200, "{who}: {}", reply.body);
        let page = &reply.body;
        assert!(page.contains("governors' report"), "{who}: {page}");
        assert!(
            page.contains("asked for by (personal) in maths"),
            "{who}: {page}"
        );
        assert!(!page.contains("127.0.0.1"), "{who}: {page}");
        assert_eq!(
            table_row(page, "Blocks per site per month", "oak")
                .last()
                .map(String::as_str),
            Some("2")
        );
    }

    // The same report from the command line, for every site.
    let out = trust_dir.path().join("trust-report.html");
    let written = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["fleet", "report", "--governors", "--since", "90d", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(&trust_config)
        .output()
        .expect("warden fleet report");
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let file = std::fs::read_to_string(&out).expect("the report");
    assert_eq!(
        table_row(&file, "Blocks per site per month", "elm")
            .last()
            .map(String::as_str),
        Some("4")
    );
    assert!(file.contains("agreed by the trust's DSLs"));
    assert!(!file.contains("127.0.0.1"), "{file}");
    elm.stop();
    oak.stop();
}
