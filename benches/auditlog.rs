//! Audit log at scale (issue #13): a year of a big school's blocks, and how long the
//! e-safety lead's tools take on it.
//!
//! For each size (`WARDEN_AUDIT_BENCH_SIZES`, default `100k,1m`; `10m` takes ~4 GB of disk
//! and several minutes to generate) this generates a sealed audit log through Warden's
//! own write path (`audit::synthetic`, over `Store::write_batch`), cached under
//! `target/auditlog-bench/` by size and generator version. The mix: 1,500 devices (1,200
//! pupils, 250 staff, 50 guests, most named), 50,000 names (skewed: a few are most of the
//! blocks), a year ending now, school hours on weekdays with a little evening use,
//! a few % of rows in two categories, self-harm and (locked) terrorism among them, and 1%
//! of rows reviewed through the lead's review function.
//!
//! Then, on a copy, against the release binary (`warden serve` on loopback ephemeral
//! ports, signed in through the real login): every dashboard page (overview; events:
//! first page, a middle page by its "Older" cursor, by device, by category, by date),
//! the CLI (`audit summary --since 30d`, `audit list --category self-harm --unreviewed`,
//! `audit verify`, and `--full` where it exists), the retention purge with nothing due
//! (`Store::purge` timed in-process), the unfiltered export of the whole year (wall time,
//! Warden's peak RSS growth sampled every 10 ms, and DNS p99 for a blocked name queried
//! at 200 q/s meanwhile). Medians of 3 (the first run warms the page cache).
//!
//! Run: `WARDEN_AUDIT_BENCH_SIZES=100k,1m,10m cargo bench --bench auditlog`. The table is
//! printed and written to `benches/results/auditlog-<date>.txt`. With
//! `WARDEN_AUDIT_BENCH_GENERATE_ONLY=1` it only generates the missing logs (so they can be
//! made while the machine is busy, and measured later on an idle one).

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use warden::audit::synthetic::SyntheticWriter;
use warden::audit::{Event, Outcome};

/// Bump when the generated mix changes, so cached logs are rebuilt. (2: a row spans at
/// most the 60 s window, as live rows do; 1 let a key's repeats share a row for hours.)
const GENERATOR: u32 = 2;
const DEVICES: u64 = 1_500;
const NAMES: u64 = 50_000;
const DAYS: u64 = 365;
const LEAD: &str = "lead";
const PASSWORD: &str = "bench password 1";

/// Category sets and their weights (per mille).
const MIX: [(&str, u64); 9] = [
    ("adult", 380),
    ("gambling", 150),
    ("social", 200),
    ("malware", 120),
    ("games", 80),
    ("adult,gambling", 30),
    ("social,games", 20),
    ("self-harm", 15),
    ("terrorism", 5),
];

/// A small, fast, seeded generator (splitmix64): the same log for the same size.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Skewed towards 0: a few devices and names make most of the blocks.
    fn skewed(&mut self, n: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0).floor() as u64 % n
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: then a smoke run
    // (a small log in a temporary folder, nothing written to benches/results) keeps this
    // code from rotting without costing the test suite minutes.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = match full {
        true => std::env::var("WARDEN_AUDIT_BENCH_SIZES").unwrap_or_else(|_| "100k,1m".into()),
        false => "3650".to_string(),
    };
    let sizes: Vec<u64> = sizes.split(',').filter_map(parse_size).collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let cache = match full {
        true => root.join("target/auditlog-bench"),
        false => scratch.path().to_path_buf(),
    };
    std::fs::create_dir_all(&cache).expect("cache folder");
    let mut table: BTreeMap<&'static str, Vec<(u64, String)>> = BTreeMap::new();
    let logs: Vec<PathBuf> = sizes.iter().map(|&size| generate(&cache, size)).collect();
    if full && std::env::var_os("WARDEN_AUDIT_BENCH_GENERATE_ONLY").is_some() {
        return;
    }
    for (&size, db) in sizes.iter().zip(&logs) {
        for (what, value) in measure(db, size) {
            table.entry(what).or_default().push((size, value));
        }
    }
    let report = render(&sizes, &table);
    println!("{report}");
    if !full {
        // The smoke run checks that every operation was measured.
        assert!(table.len() >= 17, "operations measured: {:?}", table.keys());
        return;
    }
    let day = warden::audit::rfc3339(SystemTime::now())[..10].to_string();
    let out = root.join(format!("benches/results/auditlog-{day}.txt"));
    std::fs::create_dir_all(out.parent().unwrap_or(&root)).ok();
    std::fs::write(&out, &report).expect("writing the results");
    println!("written to {}", out.display());
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (digits, unit) = match text.strip_suffix('m') {
        Some(d) => (d, 1_000_000),
        None => match text.strip_suffix('k') {
            Some(d) => (d, 1_000),
            None => (text.as_str(), 1),
        },
    };
    digits.parse::<u64>().ok().map(|n| n * unit)
}

// ---- Generating ----

/// The cached log of `size` rows, generated if missing.
fn generate(cache: &Path, size: u64) -> PathBuf {
    let path = cache.join(format!("audit-{size}-g{GENERATOR}.sqlite"));
    if path.exists() {
        return path;
    }
    let partial = cache.join(format!("audit-{size}-g{GENERATOR}.partial.sqlite"));
    for suffix in ["", "-wal", "-shm"] {
        std::fs::remove_file(format!("{}{suffix}", partial.display())).ok();
    }
    let started = Instant::now();
    let window = Duration::from_secs(60);
    let mut writer = SyntheticWriter::open(&partial, window).expect("a new log");
    let mut rng = Rng(size);
    let end = SystemTime::now();
    let start = end - Duration::from_secs(DAYS * 86_400);
    let per_day = size / DAYS;
    let mut written = 0u64;
    for day in 0..DAYS {
        let rows = if day == DAYS - 1 {
            size - written
        } else {
            per_day
        };
        let day_start = start + Duration::from_secs(day * 86_400);
        for chunk in day_rows(&mut rng, day_start, rows).chunks(5_000) {
            let now = chunk.last().map_or(day_start, |e| e.2) + window * 2;
            writer.write(chunk.to_vec(), now).expect("writing a batch");
        }
        written += rows;
    }
    writer.seal().expect("sealing");
    review_one_percent(&writer, size, end);
    drop(writer);
    std::fs::rename(&partial, &path).expect("keeping the log");
    eprintln!(
        "generated {size} rows in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        path.display()
    );
    path
}

/// One day's rows: school hours on weekdays (some evening use, quieter weekends), each
/// row one (device, name) with a count of 1–20 sightings within a minute.
fn day_rows(rng: &mut Rng, day_start: SystemTime, rows: u64) -> Vec<(Event, u64, SystemTime)> {
    let weekday = (day_start
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 86_400
        + 4)
        % 7;
    let weekend = weekday == 0 || weekday == 6;
    let mut out: Vec<(Event, u64, SystemTime)> = (0..rows)
        .map(|_| {
            let hour = if weekend || rng.below(10) == 0 {
                rng.below(24)
            } else {
                8 + rng.below(8)
            };
            let at = day_start + Duration::from_millis(hour * 3_600_000 + rng.below(3_600_000));
            let count = 1 + rng.skewed(20);
            let last = at + Duration::from_millis(rng.below(59_000));
            (event(rng, at), count, last)
        })
        .collect();
    out.sort_by_key(|e| e.0.time);
    out
}

fn event(rng: &mut Rng, time: SystemTime) -> Event {
    let device = rng.skewed(DEVICES);
    let group = match device {
        0..1_200 => "pupils",
        1_200..1_450 => "staff",
        _ => "guests",
    };
    let mut pick = rng.below(1_000);
    let categories = MIX
        .iter()
        .find(|(_, w)| {
            let hit = pick < *w;
            pick = pick.saturating_sub(*w);
            hit
        })
        .map_or("adult", |(c, _)| c);
    let name = format!("site{}.example{}", rng.skewed(NAMES), rng.below(3));
    Event {
        time,
        client: std::net::IpAddr::from([10, 20, (device / 250) as u8, (device % 250) as u8]),
        device: (!device.is_multiple_of(10)).then(|| format!("{group}-device-{device}")),
        group: group.to_string(),
        rule: name.clone(),
        name,
        qtype: "A".into(),
        categories: categories.to_string(),
        locked: categories == "terrorism",
        list: categories.split(',').next().unwrap_or("adult").to_string(),
        line: 1 + rng.below(100_000) as u32,
        response: "nxdomain".into(),
        cname: None,
        outcome: Outcome::Blocked,
        identity: Default::default(),
    }
}

/// Review 1% of the rows, picked at random, through the lead's function.
fn review_one_percent(writer: &SyntheticWriter, size: u64, at: SystemTime) {
    let mut rng = Rng(size ^ 0xABCD);
    for _ in 0..size / 100 {
        let id = 1 + rng.below(size) as i64;
        let outcome = ["incident", "false-positive", "no-action"][rng.below(3) as usize];
        // A row may be picked twice: a second review is what a lead would add.
        writer.review(id, outcome, LEAD, at).ok();
    }
}

// ---- Measuring ----

/// Everything measured on the log at `db`: (what, value) pairs.
fn measure(db: &Path, size: u64) -> Vec<(&'static str, String)> {
    let dir = tempfile::tempdir().expect("a work folder");
    let work = dir.path().join("audit.sqlite");
    std::fs::copy(db, &work).expect("copying the log");
    // A checkpoint in the cached log was signed with a key the copy does not have, so
    // every verify would report it as forged and walk the whole chain.
    let signed: i64 = rusqlite::Connection::open(&work)
        .and_then(|c| c.query_row("SELECT count(*) FROM checkpoints", [], |r| r.get(0)))
        .unwrap_or(0);
    assert_eq!(
        signed,
        0,
        "{} carries a signed checkpoint (was it verified by hand?): delete it to regenerate",
        db.display()
    );
    let config = write_config(dir.path(), &work, 400);
    let mut out = Vec::new();
    out.push((
        "purge, nothing due",
        secs(median3(|| purge_nothing_due(&work))),
    ));
    let (mut child, dns, admin) = serve(&config);
    let session = sign_in(admin);
    for (what, path) in pages(admin, &session) {
        // Every page timed shows events: a filter that matched nothing would time nothing.
        let (_, body) = get(admin, &session, &path);
        assert!(
            body.contains("href=\"/events/"),
            "{what}: {path} shows no events"
        );
        out.push((what, secs(median3(|| get(admin, &session, &path).0))));
    }
    for (what, args) in cli_commands() {
        out.push((what, secs(median3(|| cli(&config, &args)))));
    }
    if help_mentions(&config, "--full") {
        out.push((
            "audit verify --full",
            secs(median3(|| cli(&config, &["audit", "verify", "--full"]))),
        ));
    }
    let export = export_under_load(admin, &session, dns, child.id());
    out.extend(export);
    stop(&mut child);
    eprintln!("measured {size} rows");
    out
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn median3(mut run: impl FnMut() -> Duration) -> Duration {
    let mut runs = [run(), run(), run()];
    runs.sort();
    runs[1]
}

fn write_config(dir: &Path, audit: &Path, retention_days: u32) -> PathBuf {
    let mut categories = String::new();
    let mut lists = String::new();
    for name in [
        "adult",
        "gambling",
        "social",
        "malware",
        "games",
        "self-harm",
        "terrorism",
    ] {
        let file = dir.join(format!("{name}.txt"));
        std::fs::write(&file, format!("blocked-{name}.test\n")).expect("a list");
        let locked = if name == "terrorism" {
            "locked = true\n"
        } else {
            ""
        };
        categories.push_str(&format!("[categories.{name}]\n{locked}"));
        lists.push_str(&format!(
            "[[lists]]\nname = \"{name}\"\ncategory = \"{name}\"\npath = \"{name}.txt\"\n"
        ));
    }
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         token_file = \"admin.token\"\n[sources]\ncache_dir = \"cache\"\n\
         [upstream]\nservers = [\"127.0.0.1:9\"]\ntimeout = \"1s\"\n\
         [audit]\npath = \"{}\"\nretention_days = {retention_days}\n\
         [dashboard]\norganisation = \"Bench School\"\n{categories}{lists}",
        audit.display()
    );
    let path = dir.join("warden.toml");
    std::fs::write(&path, config).expect("the config");
    add_user(&path);
    path
}

fn warden() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warden"))
}

fn add_user(config: &Path) {
    use std::io::Write;
    let mut child = warden()
        .args(["user", "add", LEAD, "--role", "lead", "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("warden user add");
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{PASSWORD}").expect("the password");
    }
    assert!(child.wait().expect("user add ends").success(), "user add");
}

/// `Store::purge` with nothing due (retention longer than the log), in-process.
fn purge_nothing_due(db: &Path) -> Duration {
    let mut store = warden::audit::Store::open(db).expect("the log");
    let policy = warden::audit::store::Retention {
        default_days: 400,
        by_category: Default::default(),
    };
    let started = Instant::now();
    let purged = store.purge(SystemTime::now(), &policy).expect("purge");
    assert_eq!(purged, 0, "nothing is due");
    started.elapsed()
}

/// `warden serve` on the config; its DNS and admin addresses from its log.
fn serve(config: &Path) -> (Child, SocketAddr, SocketAddr) {
    use std::io::BufRead;
    let mut child = warden()
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("warden serve");
    let stderr = child.stderr.take().expect("its log");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut admin = None;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let after = |marker: &str| {
                line.split(marker)
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            };
            if let Some(a) = after("admin HTTP on ") {
                admin = Some(a);
            }
            if let (Some(dns), Some(admin)) = (after("serving DNS on "), admin) {
                let _ = tx.send((dns, admin));
            }
        }
    });
    let (dns, admin) = rx
        .recv_timeout(Duration::from_secs(600))
        .expect("warden says where it listens");
    (child, dns, admin)
}

fn stop(child: &mut Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}

fn client() -> &'static reqwest::blocking::Client {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(3_600))
            .build()
            .expect("an HTTP client")
    })
}

fn sign_in(admin: SocketAddr) -> String {
    let form = client()
        .get(format!("http://{admin}/login"))
        .send()
        .expect("the login form");
    let login = form
        .cookies()
        .find(|c| c.name() == "warden_login")
        .map(|c| c.value().to_string())
        .expect("a login cookie");
    let body = form.text().expect("the form");
    let marker = "name=\"csrf\" value=\"";
    let start = body.find(marker).expect("a csrf field") + marker.len();
    let csrf = &body[start..start + body[start..].find('"').unwrap_or(0)];
    let reply = client()
        .post(format!("http://{admin}/login"))
        .header("cookie", format!("warden_login={login}"))
        .form(&[("csrf", csrf), ("user", LEAD), ("password", PASSWORD)])
        .send()
        .expect("signing in");
    let token = reply
        .cookies()
        .find(|c| c.name() == "warden_session")
        .map(|c| c.value().to_string())
        .expect("a session");
    format!("warden_session={token}")
}

/// GET `path`: the time to the whole body, and the body.
fn get(admin: SocketAddr, session: &str, path: &str) -> (Duration, String) {
    let started = Instant::now();
    let reply = client()
        .get(format!("http://{admin}{path}"))
        .header("cookie", session)
        .send()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = reply.status();
    let body = reply.text().unwrap_or_default();
    assert!(status.is_success(), "GET {path}: {status}: {body}");
    (started.elapsed(), body)
}

/// The dashboard pages timed, with paths found the way a lead finds them.
fn pages(admin: SocketAddr, session: &str) -> Vec<(&'static str, String)> {
    let (_, first) = get(admin, session, "/events");
    let middle = middle_cursor(admin, session, &first);
    let device = first
        .split("<td>")
        .find(|cell| cell.contains("-device-"))
        // The cell reads `name (address)`: the filter takes the name.
        .and_then(|cell| cell.split([' ', '<']).next())
        .unwrap_or("pupils-device-1")
        .to_string();
    let day = warden::audit::rfc3339(SystemTime::now() - Duration::from_secs(100 * 86_400));
    let day = &day[..10];
    vec![
        ("dashboard overview /", "/".to_string()),
        ("/events first page", "/events".to_string()),
        ("/events middle page", middle),
        ("/events by device", format!("/events?device={device}")),
        (
            "/events by category",
            "/events?category=self-harm".to_string(),
        ),
        (
            "/events by date",
            format!("/events?since={day}&until={day}"),
        ),
        (
            "/events unreviewed self-harm",
            "/events?category=self-harm&state=unreviewed".to_string(),
        ),
    ]
}

/// A page from the middle of the log: the "Older" link of the page whose cursor is the
/// middle row's (found by date: half a year back, then its page's "Older" link).
fn middle_cursor(admin: SocketAddr, session: &str, _first: &str) -> String {
    let day = warden::audit::rfc3339(SystemTime::now() - Duration::from_secs(182 * 86_400));
    let (_, page) = get(admin, session, &format!("/events?until={}", &day[..10]));
    let at = page.find("rel=\"next\"").expect("an Older link");
    let start = page[..at].rfind("href=\"").expect("its href") + "href=\"".len();
    let end = page[start..].find('"').expect("its end");
    page[start..start + end].replace("&amp;", "&")
}

fn cli_commands() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        (
            "audit summary --since 30d",
            vec!["audit", "summary", "--since", "30d"],
        ),
        (
            "audit list --category self-harm --unreviewed",
            vec![
                "audit",
                "list",
                "--category",
                "self-harm",
                "--unreviewed",
                "--limit",
                "50",
            ],
        ),
        ("audit verify", vec!["audit", "verify"]),
    ]
}

fn cli(config: &Path, args: &[&str]) -> Duration {
    let started = Instant::now();
    let out = warden()
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("the CLI runs");
    assert!(
        out.status.success() || args.contains(&"verify"),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

fn help_mentions(config: &Path, flag: &str) -> bool {
    let _ = config;
    let out = warden().args(["audit", "verify", "--help"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
        .unwrap_or(false)
}

/// The unfiltered export of the whole year, while DNS is asked for a blocked name at
/// 200 q/s: wall time, rows, Warden's peak RSS growth, and DNS p99 meanwhile.
fn export_under_load(
    admin: SocketAddr,
    session: &str,
    dns: SocketAddr,
    pid: u32,
) -> Vec<(&'static str, String)> {
    let running = Arc::new(AtomicBool::new(true));
    let rss = {
        let running = running.clone();
        std::thread::spawn(move || sample_rss(pid, &running))
    };
    let probe = {
        let running = running.clone();
        std::thread::spawn(move || probe_dns(dns, &running))
    };
    let since = warden::audit::rfc3339(SystemTime::now() - Duration::from_secs(400 * 86_400));
    let started = Instant::now();
    let reply = client()
        .get(format!("http://{admin}/export.csv?since={}", &since[..10]))
        .header("cookie", session)
        .send()
        .expect("the export");
    let mut reader = reply;
    let mut bytes = 0u64;
    let mut lines = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        use std::io::Read;
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                bytes += n as u64;
                lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            }
            Err(e) => panic!("reading the export: {e}"),
        }
    }
    let took = started.elapsed();
    running.store(false, Ordering::Relaxed);
    let (before, peak) = rss.join().expect("the RSS sampler");
    let mut latencies = probe.join().expect("the DNS probe");
    latencies.sort();
    let p99 = latencies
        .get(latencies.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default();
    vec![
        ("export, unfiltered year: wall s", secs(took)),
        ("export: rows", (lines.saturating_sub(1)).to_string()),
        ("export: MB", format!("{:.0}", bytes as f64 / 1e6)),
        (
            "export: Warden RSS growth MB",
            format!("{:.1}", (peak.saturating_sub(before)) as f64 / 1024.0),
        ),
        (
            "export: DNS p99 ms meanwhile",
            format!("{:.2}", p99.as_secs_f64() * 1e3),
        ),
        ("export: DNS answers meanwhile", latencies.len().to_string()),
    ]
}

/// VmRSS of `pid` in KiB: at the start, and the peak until `running` clears.
fn sample_rss(pid: u32, running: &AtomicBool) -> (u64, u64) {
    let read = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let before = read();
    let mut peak = before;
    while running.load(Ordering::Relaxed) {
        peak = peak.max(read());
        std::thread::sleep(Duration::from_millis(10));
    }
    (before, peak)
}

/// Query a blocked name at 200 q/s until `running` clears; each answer's latency.
fn probe_dns(dns: SocketAddr, running: &AtomicBool) -> Vec<Duration> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a probe socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("a timeout");
    let mut latencies = Vec::new();
    let mut id: u16 = 0;
    let mut answer = [0u8; 512];
    while running.load(Ordering::Relaxed) {
        id = id.wrapping_add(1);
        let query = dns_query(id, "blocked-adult.test");
        let started = Instant::now();
        socket.send_to(&query, dns).expect("sending a query");
        loop {
            match socket.recv(&mut answer) {
                Ok(n) if n >= 2 && answer[..2] == id.to_be_bytes() => {
                    latencies.push(started.elapsed());
                    break;
                }
                Ok(_) => continue,
                Err(_) => {
                    latencies.push(Duration::from_secs(2));
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    latencies
}

/// A DNS query for `name`, type A, recursion desired.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

// ---- Reporting ----

/// The targets, beside the rows they apply to.
fn target(what: &str) -> &'static str {
    match what {
        "dashboard overview /" => "<= 0.300 at 10M",
        w if w.starts_with("/events") => "<= 0.150 at 10M",
        "audit summary --since 30d" => "<= 0.500 at 10M",
        w if w.starts_with("audit list") => "<= 0.300 at 10M",
        "audit verify" => "<= 1 s after a checkpoint",
        "purge, nothing due" => "<= 0.050 at 10M",
        "export: Warden RSS growth MB" => "<= 64",
        "export: DNS p99 ms meanwhile" => "<= 5",
        _ => "",
    }
}

fn render(sizes: &[u64], table: &BTreeMap<&'static str, Vec<(u64, String)>>) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Audit log at scale, {} (seconds unless named; medians of 3)\n\n| operation |",
        warden::audit::rfc3339(SystemTime::now())
    ));
    for size in sizes {
        out.push_str(&format!(" {size} rows |"));
    }
    out.push_str(" growth last/previous | target |\n|---|");
    for _ in sizes {
        out.push_str("---:|");
    }
    out.push_str("---:|---|\n");
    for (what, values) in table {
        out.push_str(&format!("| {what} |"));
        for size in sizes {
            let v = values
                .iter()
                .find(|(s, _)| s == size)
                .map_or("", |(_, v)| v);
            out.push_str(&format!(" {v} |"));
        }
        let growth = match values.as_slice() {
            [.., (_, a), (_, b)] => match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(a), Ok(b)) if a > 0.0 => format!("{:.2}x", b / a),
                _ => String::new(),
            },
            _ => String::new(),
        };
        out.push_str(&format!(" {growth} | {} |\n", target(what)));
    }
    out
}
