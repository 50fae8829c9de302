//! The `warden audit …` commands: what the e-safety lead sees (list, summary, export,
//! review), the tamper evidence (`verify`), retention, and clear errors.
//!
//! Each test builds a real audit database through the library, the way `serve` does
//! (events into a `Sink`, a `Writer` that coalesces, writes and seals them), but without
//! any DNS; rows dated in the past are inserted as open rows and sealed by the `Writer`'s
//! start-up (see `Fixture::new`). It writes a config pointing at the database and runs
//! the real binary on it. Expected values are worked out here from the events
//! recorded, and the hash chain is recomputed here from its documented form, so the
//! tests do not trust what they test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use warden::audit::store::Retention;
use warden::audit::writer::WriterSettings;
use warden::audit::{rfc3339, Event, Outcome, Sink, Store, Writer};

const SEC: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// How `verify` describes its walk when the log has no checkpoint yet.
const FIRST: &str = "full, from seq 1: no trusted checkpoint yet";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A blocked event with plain defaults; callers change the fields they care about.
fn block(name: &str, client: &str, categories: &str, time: SystemTime) -> Event {
    Event {
        time,
        client: client.parse().unwrap(),
        device: None,
        group: "students".into(),
        name: name.into(),
        qtype: "A".into(),
        categories: categories.into(),
        locked: false,
        list: format!("{}-list", categories.split(',').next().unwrap()),
        line: 1,
        rule: name.into(),
        response: "nxdomain".into(),
        cname: None,
        outcome: Outcome::Blocked,
        identity: Default::default(),
    }
}

/// `old.example` is first seen at this fixed time, before 2026, so date filters have a
/// row on each side of 2026-01-01.
fn old_time() -> SystemTime {
    humantime::parse_rfc3339("2025-12-15T12:00:00Z").unwrap()
}

/// The standard data set (times are first sightings):
///
/// | name              | client   | device       | group    | categories     | count | time       |
/// |-------------------|----------|--------------|----------|----------------|-------|------------|
/// | adult.example     | 10.0.0.5 | lab-pc-1     | students | adult          | 3     | now ³      |
/// | promo.example     | 10.0.0.6 | –            | students | gambling ¹     | 1     | now − 2h   |
/// | both.example      | 10.0.0.7 | staff-laptop | staff    | adult,gambling | 2     | now − 3h   |
/// | extremist.example | 10.0.0.5 | lab-pc-1     | students | terrorism ²    | 1     | now − 10d  |
/// | old.example       | 10.0.0.8 | –            | staff    | adult          | 4     | 2025-12-15 |
///
/// ¹ blocked through its CNAME `casino.example`, by a rule with a comma in it.
/// ² locked (statutory).
/// ³ recorded live, three times, through the `Sink` and `Writer`: one coalesced row.
///
/// Returns (past rows with their counts, live events).
fn standard_events(now: SystemTime) -> (Vec<(Event, i64)>, Vec<Event>) {
    let mut old = block("old.example", "10.0.0.8", "adult", old_time());
    old.group = "staff".into();

    let mut extremist = block("extremist.example", "10.0.0.5", "terrorism", now - 10 * DAY);
    extremist.device = Some("lab-pc-1".into());
    extremist.locked = true;
    extremist.list = "ctiru".into();
    extremist.line = 2;
    extremist.rule = "sha256:00ff".into();

    let mut both = block("both.example", "10.0.0.7", "adult,gambling", now - 3 * HOUR);
    both.device = Some("staff-laptop".into());
    both.group = "staff".into();

    let mut promo = block("promo.example", "10.0.0.6", "gambling", now - 2 * HOUR);
    promo.cname = Some("casino.example".into());
    promo.list = "gambling-list".into();
    promo.line = 7;
    promo.rule = "||casino.example^$third-party,important".into();
    promo.response = "null".into();
    promo.qtype = "AAAA".into();

    let mut adult = block("adult.example", "10.0.0.5", "adult", now);
    adult.device = Some("lab-pc-1".into());
    adult.list = "adult-list".into();
    adult.line = 12;

    let past = vec![(old, 4), (extremist, 1), (both, 2), (promo, 1)];
    (past, vec![adult.clone(), adult.clone(), adult])
}

/// Past rows each seen once.
fn seen_once(events: Vec<Event>) -> Vec<(Event, i64)> {
    events.into_iter().map(|e| (e, 1)).collect()
}

/// A temporary folder with an audit database and a `warden.toml` pointing at it.
struct Fixture {
    dir: tempfile::TempDir,
    db: PathBuf,
    config: PathBuf,
    /// Before and after the live events were recorded: their rows' times lie between.
    live: (SystemTime, SystemTime),
}

impl Fixture {
    /// A database holding `past` rows (first seen at their event's time, seen `count`
    /// times 10 s apart) and then the `live` events.
    ///
    /// The query path stamps events with the current time, so past rows cannot go
    /// through the `Sink`: they are inserted as open rows, like those an unclean stop
    /// leaves, and sealed (in insertion order) by the `Writer` as it starts. The live
    /// events then go through the `Sink` and the `Writer` as in `serve`, and stopping
    /// the writer flushes and seals them.
    fn new(past: &[(Event, i64)], live: &[Event]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        // In a subfolder: `Store::open` creates the folder too.
        let db = dir.path().join("data").join("audit.sqlite");
        drop(Store::open(&db).unwrap()); // the schema
        let conn = rusqlite::Connection::open(&db).unwrap();
        for (e, count) in past {
            let last = e.time + (*count as u32 - 1) * 10 * SEC;
            conn.execute(
                "INSERT INTO events (first_seen, last_seen, count, client_ip, device, grp, name, \
                 qtype, categories, locked, list, line, rule, response, cname, outcome) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                rusqlite::params![
                    rfc3339(e.time),
                    rfc3339(last),
                    count,
                    e.client.to_string(),
                    e.device,
                    e.group,
                    e.name,
                    e.qtype,
                    e.categories,
                    e.locked,
                    e.list,
                    e.line,
                    e.rule,
                    e.response,
                    e.cname,
                    e.outcome.as_str(),
                ],
            )
            .unwrap();
        }
        drop(conn);
        let sink = Sink::new(1000);
        let writer = Writer::start(
            Store::open(&db).unwrap(),
            sink.clone(),
            WriterSettings {
                window: Duration::from_secs(60),
                flush_interval: Duration::from_millis(50),
                // Long enough that the writer's own start-up purge touches nothing.
                retention_days: 3650,
                retention_by_category: BTreeMap::new(),
            },
        )
        .unwrap();
        let before = SystemTime::now();
        for e in live {
            let event = e.clone();
            sink.record(
                e.client,
                Default::default(),
                e.outcome,
                &e.categories,
                &e.name,
                || event,
            );
        }
        let after = SystemTime::now();
        writer.stop().unwrap(); // flushes and seals every row
        let config = dir.path().join("warden.toml");
        let body = format!(
            "[categories.adult]\n[categories.gambling]\n[categories.terrorism]\nlocked = true\n\n\
             [audit]\npath = {:?}\n",
            db.to_str().unwrap()
        );
        std::fs::write(&config, body).unwrap();
        Fixture {
            dir,
            db,
            config,
            live: (before, after),
        }
    }

    /// Declare the retention policy in the config (`[audit]` is its last section), so
    /// `verify` judges purges by the policy they were made under.
    fn set_retention(&self, default_days: u32, by_category: &str) {
        let mut body = std::fs::read_to_string(&self.config).unwrap();
        body.push_str(&format!(
            "retention_days = {default_days}\nretention_days_by_category = {{ {by_category} }}\n"
        ));
        std::fs::write(&self.config, body).unwrap();
    }

    /// Set `[server] timezone` (the config has no `[server]` section otherwise).
    fn set_timezone(&self, tz: &str) {
        let body = std::fs::read_to_string(&self.config).unwrap();
        let body = format!("[server]\ntimezone = {tz:?}\n\n{body}");
        std::fs::write(&self.config, body).unwrap();
    }

    fn standard() -> (Fixture, SystemTime) {
        let now = SystemTime::now();
        let (past, live) = standard_events(now);
        (Fixture::new(&past, &live), now)
    }

    /// Whether an RFC 3339 time from the log lies within the live recording (to the ms).
    fn is_live_time(&self, v: &Value) -> bool {
        let t = humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
        let (before, after) = self.live;
        t + Duration::from_millis(1) >= before && t <= after
    }

    /// `warden audit ARGS… --config <this fixture's config>`.
    fn audit(&self, args: &[&str]) -> Output {
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", self.config.to_str().unwrap()]);
        warden_in(self.dir.path(), &all)
    }

    /// `audit list --json FILTERS…`, parsed.
    fn list_json(&self, filters: &[&str]) -> Vec<Value> {
        let mut args = vec!["list", "--json"];
        args.extend_from_slice(filters);
        let out = self.audit(&args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The names `audit list FILTERS…` shows, in its order (newest first).
    fn names(&self, filters: &[&str]) -> Vec<String> {
        self.list_json(filters)
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// The event id of the row for `name`.
    fn id_of(&self, name: &str) -> i64 {
        let rows = self.list_json(&[]);
        let row = rows.iter().find(|r| r["name"] == name).expect(name);
        row["id"].as_i64().unwrap()
    }

    /// A direct connection to the database, as someone with file access would have.
    fn sqlite(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).unwrap()
    }

    /// The id of the row at chain position `seq`.
    fn id_at_seq(&self, seq: i64) -> i64 {
        self.sqlite()
            .query_row("SELECT id FROM events WHERE seq = ?1", [seq], |r| r.get(0))
            .unwrap()
    }
}

/// Run the binary in `cwd` (a temp folder: a test that forgot `--config` must not touch
/// the repository's config or create an audit database there).
fn warden_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("warden runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn old_row(rows: &[Value], id: i64) -> &Value {
    rows.iter().find(|r| r["id"] == id).unwrap()
}

fn is_sha256_hex(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The chain hashes recomputed from exported rows, as the store documents them:
/// `hex(SHA-256(previous hash ‖ seq ‖ personal digest ‖ public columns))`, joined by
/// U+001F, NULL as U+0000, booleans as 0/1, starting from 64 zeros; the personal digest is
/// `hex(SHA-256(salt ‖ client ‖ device ‖ name ‖ cname))`. Rows must be the whole chain.
fn recompute_chain(rows: &[Value]) -> BTreeMap<i64, String> {
    use sha2::Digest;
    let text = |row: &Value, c: &str| match &row[c] {
        Value::Null => "\u{0}".to_string(),
        Value::Bool(b) => u8::from(*b).to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => panic!("unexpected {c}: {other}"),
    };
    let join = |row: &Value, columns: &[&str]| {
        columns
            .iter()
            .map(|c| text(row, c))
            .collect::<Vec<_>>()
            .join("\u{1f}")
    };
    let mut rows: Vec<&Value> = rows.iter().collect();
    rows.sort_by_key(|r| r["seq"].as_i64().unwrap());
    let personal = ["salt", "client_ip", "device", "name", "cname"];
    let public = [
        "first_seen",
        "last_seen",
        "count",
        "group",
        "qtype",
        "categories",
        "locked",
        "list",
        "line",
        "rule",
        "response",
        "outcome",
    ];
    let mut prev = "0".repeat(64);
    let mut out = BTreeMap::new();
    for row in rows {
        assert_eq!(
            row["prev_hash"].as_str(),
            Some(prev.as_str()),
            "prev_hash links the rows"
        );
        let digest = hex::encode(sha2::Sha256::digest(join(row, &personal).as_bytes()));
        let canonical = format!(
            "{}\u{1f}{digest}\u{1f}{}",
            text(row, "seq"),
            join(row, &public)
        );
        let mut h = sha2::Sha256::new();
        h.update(prev.as_bytes());
        h.update(canonical.as_bytes());
        prev = hex::encode(h.finalize());
        out.insert(row["id"].as_i64().unwrap(), prev.clone());
    }
    out
}

/// A small RFC 4180 reader (quoted fields, `""` escapes, newlines inside quotes),
/// written here so the test does not trust the exporter's own quoting.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut records, mut record, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quoted field");
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    records
}

/// `[["adult", 5], …]` (a summary section in JSON) as pairs.
fn pairs(v: &Value) -> Vec<(String, i64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_i64().unwrap()))
        .collect()
}

fn owned(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// The day (UTC) of a time, as the summary's JSON keys it.
fn day_of(time: SystemTime) -> String {
    rfc3339(time)[..10].to_string()
}

/// A stored RFC 3339 time as the human output shows it in `tz`: `2026-07-01 14:03:22 +01:00`.
fn shown_in(rfc3339: &str, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

// ---------------------------------------------------------------------------------------
// audit list
// ---------------------------------------------------------------------------------------

#[test]
fn list_json_shows_each_coalesced_row_with_its_details_and_chain_hash() {
    let (fx, _) = Fixture::standard();
    let rows = fx.list_json(&[]);
    // Newest first; 11 blocks, 5 rows.
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "adult.example",
            "promo.example",
            "both.example",
            "extremist.example",
            "old.example"
        ]
    );
    let by_name = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap();

    let a = by_name("adult.example");
    assert_eq!(a["count"], 3, "three sightings in one window share one row");
    // First and last sighting: the first and the third record() call.
    assert!(fx.is_live_time(&a["first_seen"]), "{a}");
    assert!(fx.is_live_time(&a["last_seen"]), "{a}");
    assert!(a["first_seen"].as_str() <= a["last_seen"].as_str(), "{a}");
    assert_eq!(a["client_ip"], "10.0.0.5");
    assert_eq!(a["device"], "lab-pc-1");
    assert_eq!(a["group"], "students");
    assert_eq!(a["categories"], "adult");
    assert_eq!(a["locked"], false);
    assert_eq!(a["list"], "adult-list");
    assert_eq!(a["line"], 12);
    assert_eq!(a["rule"], "adult.example");
    assert_eq!(a["response"], "nxdomain");
    assert_eq!(a["qtype"], "A");
    assert_eq!(a["cname"], Value::Null);
    assert_eq!(a["outcome"], "blocked");
    assert_eq!(a["review"], Value::Null, "not reviewed yet");

    let b = by_name("promo.example");
    assert_eq!(b["count"], 1);
    assert_eq!(b["cname"], "casino.example");
    assert_eq!(b["rule"], "||casino.example^$third-party,important");
    assert_eq!(b["list"], "gambling-list");
    assert_eq!(b["line"], 7);
    assert_eq!(b["response"], "null");
    assert_eq!(b["qtype"], "AAAA");
    assert_eq!(b["device"], Value::Null);

    assert_eq!(by_name("both.example")["count"], 2);
    assert_eq!(by_name("both.example")["categories"], "adult,gambling");
    assert_eq!(by_name("extremist.example")["locked"], true);
    assert_eq!(by_name("old.example")["count"], 4);
    assert_eq!(by_name("old.example")["first_seen"], rfc3339(old_time()));
    assert_eq!(
        by_name("old.example")["last_seen"],
        rfc3339(old_time() + 30 * SEC)
    );

    // Every row is sealed: a chain position 1..=5 and a distinct SHA-256 hash.
    let seqs: BTreeSet<i64> = rows.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=5).collect());
    for r in &rows {
        assert!(is_sha256_hex(&r["hash"]), "{r}");
    }
    let hashes: BTreeSet<&str> = rows.iter().map(|r| r["hash"].as_str().unwrap()).collect();
    assert_eq!(hashes.len(), 5);
}

#[test]
fn list_filters_by_category_client_device_and_group() {
    let (fx, _) = Fixture::standard();
    // A row with two categories is found under either.
    assert_eq!(
        fx.names(&["--category", "adult"]),
        ["adult.example", "both.example", "old.example"]
    );
    assert_eq!(
        fx.names(&["--category", "gambling"]),
        ["promo.example", "both.example"]
    );
    assert_eq!(
        fx.names(&["--category", "terrorism"]),
        ["extremist.example"]
    );
    // --client takes an IP address or a device name.
    assert_eq!(
        fx.names(&["--client", "10.0.0.5"]),
        ["adult.example", "extremist.example"]
    );
    assert_eq!(
        fx.names(&["--client", "lab-pc-1"]),
        ["adult.example", "extremist.example"]
    );
    assert_eq!(fx.names(&["--client", "staff-laptop"]), ["both.example"]);
    assert_eq!(fx.names(&["--client", "10.0.0.99"]), Vec::<String>::new());
    assert_eq!(
        fx.names(&["--group", "staff"]),
        ["both.example", "old.example"]
    );
    // Filters combine with AND.
    assert_eq!(
        fx.names(&["--group", "students", "--category", "adult"]),
        ["adult.example"]
    );
}

#[test]
fn list_filters_by_time_as_duration_or_date() {
    let (fx, _) = Fixture::standard();
    // extremist.example (10 days ago) and old.example (2025) are older than 7 days.
    assert_eq!(
        fx.names(&["--since", "7d"]),
        ["adult.example", "promo.example", "both.example"]
    );
    // A date is midnight in the configured zone (London: +00:00 in winter): only
    // old.example is before 2026.
    assert_eq!(
        fx.names(&["--since", "2026-01-01"]),
        [
            "adult.example",
            "promo.example",
            "both.example",
            "extremist.example"
        ]
    );
    assert_eq!(fx.names(&["--until", "2026-01-01"]), ["old.example"]);
    assert_eq!(
        fx.names(&["--until", "7d"]),
        ["extremist.example", "old.example"]
    );
    assert_eq!(
        fx.names(&["--since", "2026-01-01", "--until", "7d"]),
        ["extremist.example"]
    );
    // A full RFC 3339 time works too: 11:00 on the day of old.example's noon sighting.
    assert_eq!(
        fx.names(&[
            "--since",
            "2025-12-15T11:00:00Z",
            "--until",
            "2025-12-15T13:00:00Z"
        ]),
        ["old.example"]
    );
    // 90 minutes back reaches only the live row (promo.example is 2 hours old).
    assert_eq!(fx.names(&["--since", "90m"]), ["adult.example"]);
}

#[test]
fn list_limit_keeps_the_newest_and_unreviewed_hides_reviewed() {
    let (fx, _) = Fixture::standard();
    assert_eq!(
        fx.names(&["--limit", "2"]),
        ["adult.example", "promo.example"]
    );
    assert_eq!(
        fx.names(&["--limit", "1", "--category", "gambling"]),
        ["promo.example"]
    );
    assert_eq!(fx.names(&["--unreviewed"]).len(), 5);
    let id = fx.id_of("promo.example").to_string();
    let out = fx.audit(&[
        "review",
        &id,
        "--outcome",
        "no-action",
        "--note",
        "ok",
        "--by",
        "lead",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fx.names(&["--unreviewed"]),
        [
            "adult.example",
            "both.example",
            "extremist.example",
            "old.example"
        ]
    );
}

#[test]
fn list_text_is_one_readable_line_per_event() {
    let (fx, _) = Fixture::standard();
    let out = fx.audit(&["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    let adult = fx.list_json(&["--limit", "1"]).remove(0);
    let (id, first_seen) = (&adult["id"], adult["first_seen"].as_str().unwrap());
    // The time in the configured zone (London by default), then the device name rather
    // than IP when known; count; review state.
    let shown = shown_in(first_seen, chrono_tz::Europe::London);
    assert!(
        lines[0].starts_with(&format!("#{:<6} {shown}  ", id.to_string())),
        "{text}"
    );
    assert!(lines[0].contains("lab-pc-1"), "{text}");
    assert!(lines[0].contains("adult.example (A)"), "{text}");
    assert!(lines[0].contains("×3"), "{text}");
    assert!(lines[0].ends_with("not reviewed"), "{text}");
    // An IP when no device; the CNAME the block came through.
    assert!(lines[1].contains("10.0.0.6"), "{text}");
    assert!(
        lines[1].contains("promo.example (AAAA) via casino.example"),
        "{text}"
    );
    // Statutory categories are marked.
    assert!(lines[3].contains("extremist.example"), "{text}");
    assert!(lines[3].contains("terrorism [STATUTORY]"), "{text}");
    assert!(!lines[0].contains("STATUTORY"), "{text}");

    let out = fx.audit(&["list", "--client", "nobody"]);
    assert_eq!(stdout(&out), "No events match.\n");
}

/// Two rows at known times: a summer evening in UTC that is already the next day in
/// India, and a winter morning.
fn zone_fixture() -> Fixture {
    let at = |t: &str| humantime::parse_rfc3339(t).unwrap();
    let summer = block(
        "summer.example",
        "10.0.0.5",
        "adult",
        at("2026-07-01T20:00:00Z"),
    );
    let winter = block(
        "winter.example",
        "10.0.0.6",
        "adult",
        at("2026-01-15T09:30:05Z"),
    );
    Fixture::new(&seen_once(vec![winter, summer]), &[])
}

/// `audit list` text, as `(name, line)` pairs.
fn list_lines(fx: &Fixture, filters: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["list"];
    args.extend_from_slice(filters);
    let out = fx.audit(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| {
            let name = l.split_whitespace().find(|w| w.ends_with(".example"));
            (name.unwrap_or("").to_string(), l.to_string())
        })
        .collect()
}

#[test]
fn list_and_summary_show_times_and_days_in_the_configured_zone() {
    let fx = zone_fixture();
    fx.set_timezone("Asia/Kolkata");
    let lines = list_lines(&fx, &[]);
    let line = |name: &str| {
        lines
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l.clone())
            .unwrap_or_else(|| panic!("{name} in {lines:?}"))
    };
    // 20:00 UTC is 01:30 the next day in India (+05:30); 09:30:05 UTC is 15:00:05.
    assert!(
        line("summer.example").contains(" 2026-07-02 01:30:00 +05:30  "),
        "{lines:?}"
    );
    assert!(
        line("winter.example").contains(" 2026-01-15 15:00:05 +05:30  "),
        "{lines:?}"
    );
    // A typed date is that day in India: from 18:30 UTC the day before.
    let names = |filters: &[&str]| -> Vec<String> {
        list_lines(&fx, filters)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    };
    assert_eq!(names(&["--since", "2026-07-02"]), ["summer.example"]);
    assert_eq!(names(&["--until", "2026-07-02"]), ["winter.example"]);
    // The summary counts the summer block on India's 2 July.
    let out = fx.audit(&["summary", "--since", "2026-01-01"]);
    let text = stdout(&out);
    assert!(
        text.contains("\nBy day:\n         1  2026-01-15\n         1  2026-07-02\n"),
        "{text}"
    );
    // The machine-readable outputs keep RFC 3339 UTC (and UTC days).
    let rows = fx.names(&[]);
    assert_eq!(rows, ["summer.example", "winter.example"]);
    let summer = fx.list_json(&["--limit", "1"]).remove(0);
    assert_eq!(summer["first_seen"], "2026-07-01T20:00:00.000Z");
    let json: Value = serde_json::from_str(&stdout(&fx.audit(&[
        "summary",
        "--json",
        "--since",
        "2026-01-01",
    ])))
    .unwrap();
    assert_eq!(
        pairs(&json["by_day"]),
        owned(&[("2026-01-15", 1), ("2026-07-01", 1)])
    );
    let csv = stdout(&fx.audit(&["export", "--format", "csv"]));
    assert!(csv.contains(",2026-07-01T20:00:00.000Z,"), "{csv}");

    // New York is behind UTC: the same evening is still 1 July there.
    let fx = zone_fixture();
    fx.set_timezone("America/New_York");
    let lines = list_lines(&fx, &[]);
    assert!(
        lines[0].1.contains(" 2026-07-01 16:00:00 -04:00  "),
        "{lines:?}"
    );
    assert!(
        lines[1].1.contains(" 2026-01-15 04:30:05 -05:00  "),
        "{lines:?}"
    );
}

#[test]
fn london_is_gmt_in_winter_and_bst_in_summer() {
    // No `[server] timezone`: Europe/London, the default.
    let fx = zone_fixture();
    let lines = list_lines(&fx, &[]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].0, "summer.example");
    assert!(
        lines[0].1.contains(" 2026-07-01 21:00:00 +01:00  "),
        "{lines:?}"
    );
    assert_eq!(lines[1].0, "winter.example");
    assert!(
        lines[1].1.contains(" 2026-01-15 09:30:05 +00:00  "),
        "{lines:?}"
    );
}

// ---------------------------------------------------------------------------------------
// audit summary
// ---------------------------------------------------------------------------------------

#[test]
fn summary_json_sums_counts_by_category_day_group_device_and_name() {
    let (fx, now) = Fixture::standard();
    // Default window: the last 30 days, so old.example (2025) is left out.
    let out = fx.audit(&["summary", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        s["total"], 7,
        "3 + 1 + 2 + 1 blocks: sums of count, not rows"
    );
    // both.example (adult,gambling ×2) counts under both categories.
    assert_eq!(
        pairs(&s["by_category"]),
        owned(&[("adult", 5), ("gambling", 3), ("terrorism", 1)])
    );
    let mut days: BTreeMap<String, i64> = BTreeMap::new();
    let live = fx.list_json(&["--limit", "1"]).remove(0);
    let live_day = live["first_seen"].as_str().unwrap()[..10].to_string();
    *days.entry(live_day).or_default() += 3;
    for (time, n) in [
        (now - 2 * HOUR, 1),
        (now - 3 * HOUR, 2),
        (now - 10 * DAY, 1),
    ] {
        *days.entry(day_of(time)).or_default() += n;
    }
    assert_eq!(pairs(&s["by_day"]), days.into_iter().collect::<Vec<_>>());
    assert_eq!(
        pairs(&s["by_group"]),
        owned(&[("students", 5), ("staff", 2)])
    );
    // A device name where known, else the IP address.
    assert_eq!(
        pairs(&s["top_devices"]),
        owned(&[("lab-pc-1", 4), ("staff-laptop", 2), ("10.0.0.6", 1)])
    );
    assert_eq!(
        pairs(&s["top_names"]),
        owned(&[
            ("adult.example", 3),
            ("both.example", 2),
            ("extremist.example", 1),
            ("promo.example", 1)
        ])
    );

    // With an explicit --since, older rows count too.
    let out = fx.audit(&["summary", "--json", "--since", "2025-01-01"]);
    let s: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(s["total"], 11);
    assert_eq!(
        pairs(&s["by_category"]),
        owned(&[("adult", 9), ("gambling", 3), ("terrorism", 1)])
    );
    assert!(pairs(&s["by_day"]).contains(&("2025-12-15".to_string(), 4)));
    assert_eq!(
        pairs(&s["by_group"]),
        owned(&[("staff", 6), ("students", 5)])
    );

    // Filters apply: the gambling rows, whose other categories still show.
    let out = fx.audit(&["summary", "--json", "--category", "gambling"]);
    let s: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(s["total"], 3);
    assert_eq!(
        pairs(&s["by_category"]),
        owned(&[("gambling", 3), ("adult", 2)])
    );
}

#[test]
fn summary_text_has_the_same_numbers_in_sections() {
    let (fx, _) = Fixture::standard();
    let out = fx.audit(&["summary"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let json: Value = serde_json::from_str(&stdout(&fx.audit(&["summary", "--json"]))).unwrap();
    // "7 blocks", then titled sections of "  <count>  <key>" lines.
    let mut blocks = text.split("\n\n");
    assert_eq!(blocks.next().unwrap().trim(), "7 blocks", "{text}");
    let mut sections: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for block in blocks {
        let mut lines = block.lines();
        let title = lines.next().unwrap().trim_end_matches(':').to_string();
        let rows = lines
            .map(|l| {
                let (n, key) = l.trim_start().split_once("  ").unwrap();
                (key.to_string(), n.parse().unwrap())
            })
            .collect();
        sections.insert(title, rows);
    }
    // The text's days are London days (the JSON's are UTC days): worked out here from
    // the rows the summary covers (its default: the last 30 days).
    let mut days: BTreeMap<String, i64> = BTreeMap::new();
    for row in fx.list_json(&["--since", "30d"]) {
        let day = shown_in(
            row["first_seen"].as_str().unwrap(),
            chrono_tz::Europe::London,
        );
        *days.entry(day[..10].to_string()).or_default() += row["count"].as_i64().unwrap();
    }
    assert_eq!(
        sections["By day"],
        days.into_iter().collect::<Vec<_>>(),
        "{text}"
    );
    for (title, field) in [
        ("By category", "by_category"),
        ("By group", "by_group"),
        ("Top devices", "top_devices"),
        ("Top names", "top_names"),
    ] {
        assert_eq!(sections[title], pairs(&json[field]), "{title} in\n{text}");
    }
    assert!(
        text.contains("\nBy category:\n         5  adult\n"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// audit export
// ---------------------------------------------------------------------------------------

#[test]
fn export_csv_quotes_fields_and_carries_the_chain_hashes() {
    let (fx, _) = Fixture::standard();
    // A review note with a comma and quotes, to be quoted in the CSV.
    let note = r#"Parent informed, see "log 7""#;
    let id = fx.id_of("adult.example");
    let out = fx.audit(&[
        "review",
        &id.to_string(),
        "--outcome",
        "incident",
        "--note",
        note,
        "--by",
        "lead",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = fx.audit(&["export", "--format", "csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], warden::audit::review::CSV_HEADER);
    assert_eq!(
        lines.len(),
        1 + 5,
        "a header and one line per event:\n{text}"
    );
    assert!(
        text.contains(r#","Parent informed, see ""log 7""""#),
        "RFC 4180 quoting:\n{text}"
    );
    assert!(
        text.contains(r#","||casino.example^$third-party,important","#),
        "{text}"
    );

    // Every field, parsed independently, equals what `list --json` shows.
    let records = parse_csv(&text);
    let header: Vec<&str> = warden::audit::review::CSV_HEADER.split(',').collect();
    assert_eq!(records[0], header);
    let rows = fx.list_json(&[]);
    assert_eq!(records.len() - 1, rows.len());
    let text_of = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for (record, row) in records[1..].iter().zip(&rows) {
        assert_eq!(record.len(), header.len(), "{record:?}");
        let field = |h: &str| record[header.iter().position(|c| *c == h).unwrap()].as_str();
        for column in header.iter().filter(|c| !c.starts_with("review_")) {
            assert_eq!(field(column), text_of(&row[*column]), "{column} of {row}");
        }
        let review = &row["review"];
        for part in ["outcome", "by", "at", "note"] {
            assert_eq!(field(&format!("review_{part}")), text_of(&review[part]));
        }
        assert_eq!(field("hash"), row["hash"].as_str().unwrap());
    }
    let adult = &records[1..]
        .iter()
        .find(|r| r[0] == id.to_string())
        .unwrap();
    let column = |h: &str| header.iter().position(|c| *c == h).unwrap();
    assert_eq!(adult[column("review_note")], note);
    assert_eq!(adult[column("review_outcome")], "incident");
    assert_eq!(adult[column("review_by")], "lead");

    // Filters apply to exports too.
    let out = fx.audit(&["export", "--format", "csv", "--category", "terrorism"]);
    let records = parse_csv(&stdout(&out));
    assert_eq!(records.len(), 2);
    assert_eq!(records[1][8], "extremist.example");
}

#[test]
fn export_jsonl_matches_list_and_its_hashes_recompute_independently() {
    let (fx, _) = Fixture::standard();
    let out = fx.audit(&["export", "--format", "jsonl"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let exported: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), 5);
    assert_eq!(exported, fx.list_json(&[]));
    // Someone holding only the export can check the chain: each hash recomputes from
    // the exported fields and the previous hash.
    let recomputed = recompute_chain(&exported);
    for row in &exported {
        let id = row["id"].as_i64().unwrap();
        assert_eq!(row["hash"].as_str().unwrap(), recomputed[&id], "{row}");
    }
    let out = fx.audit(&[
        "export", "--format", "jsonl", "--client", "lab-pc-1", "--since", "7d",
    ]);
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["name"], "adult.example");
}

// ---------------------------------------------------------------------------------------
// audit review
// ---------------------------------------------------------------------------------------

#[test]
fn review_is_recorded_shown_and_a_later_one_is_appended() {
    let (fx, _) = Fixture::standard();
    let id = fx.id_of("both.example");
    let ids = id.to_string();
    let before = SystemTime::now();
    let out = fx.audit(&[
        "review",
        &ids,
        "--outcome",
        "incident",
        "--note",
        "Raised with the head of year",
        "--by",
        "lead",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("Recorded review 1 of event {id}: incident by lead.\n")
    );
    let row = |fx: &Fixture| {
        fx.list_json(&[])
            .into_iter()
            .find(|r| r["id"] == id)
            .unwrap()
    };
    let review = row(&fx)["review"].clone();
    assert_eq!(review["outcome"], "incident");
    assert_eq!(review["by"], "lead");
    assert_eq!(review["note"], "Raised with the head of year");
    let at = humantime::parse_rfc3339(review["at"].as_str().unwrap()).unwrap();
    assert!(at + SEC >= before && at <= SystemTime::now(), "{review}");
    assert!(!fx
        .names(&["--unreviewed"])
        .contains(&"both.example".to_string()));

    // A second review adds a record; the latest is shown.
    let out = fx.audit(&[
        "review",
        &ids,
        "--outcome",
        "false-positive",
        "--note",
        "Recipe site, miscategorised",
        "--by",
        "lead",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(row(&fx)["review"]["outcome"], "false-positive");
    // Without --by, the reviewer is the login name.
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "audit",
            "review",
            &ids,
            "--outcome",
            "no-action",
            "--note",
            "Closed",
        ])
        .args(["--config", fx.config.to_str().unwrap()])
        .current_dir(fx.dir.path())
        .env("USER", "deputy")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("Recorded review 3 of event {id}: no-action by deputy.\n")
    );
    let review = row(&fx)["review"].clone();
    assert_eq!(review["outcome"], "no-action");
    assert_eq!(review["by"], "deputy");
    assert_eq!(review["note"], "Closed");
    // All three records are kept, in order.
    let db = fx.sqlite();
    let mut stmt = db
        .prepare("SELECT outcome FROM reviews WHERE event_id = ?1 ORDER BY id")
        .unwrap();
    let outcomes: Vec<String> = stmt
        .query_map([id], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(outcomes, ["incident", "false-positive", "no-action"]);
}

#[test]
fn reviews_cannot_be_edited_or_deleted_even_with_direct_database_access() {
    let (fx, _) = Fixture::standard();
    let id = fx.id_of("adult.example").to_string();
    let out = fx.audit(&[
        "review",
        &id,
        "--outcome",
        "incident",
        "--note",
        "n",
        "--by",
        "lead",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let db = fx.sqlite();
    let update = db
        .execute("UPDATE reviews SET outcome = 'no-action'", [])
        .unwrap_err();
    assert!(update.to_string().contains("append-only"), "{update}");
    let delete = db.execute("DELETE FROM reviews", []).unwrap_err();
    assert!(delete.to_string().contains("append-only"), "{delete}");
    // An outcome outside the list is refused by the schema itself.
    let bad = db.execute(
        "INSERT INTO reviews (event_id, at, by, outcome, note) VALUES (1, 'x', 'x', 'whatever', '')",
        [],
    );
    assert!(bad.is_err());
    let (n, outcome): (i64, String) = db
        .query_row("SELECT count(*), max(outcome) FROM reviews", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((n, outcome.as_str()), (1, "incident"));
}

#[test]
fn review_refuses_unknown_outcomes_and_unknown_events() {
    let (fx, _) = Fixture::standard();
    let id = fx.id_of("adult.example").to_string();
    let out = fx.audit(&[
        "review",
        &id,
        "--outcome",
        "resolved",
        "--note",
        "n",
        "--by",
        "lead",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("\"resolved\"") && err.contains("incident, false-positive, no-action"),
        "{err}"
    );
    let out = fx.audit(&[
        "review",
        "9999",
        "--outcome",
        "incident",
        "--note",
        "n",
        "--by",
        "lead",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no audit event with id 9999"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
    // Nothing was recorded by either.
    let n: i64 = fx
        .sqlite()
        .query_row("SELECT count(*) FROM reviews", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

// ---------------------------------------------------------------------------------------
// Bad arguments
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_category_exits_2_listing_the_defined_ones() {
    let (fx, _) = Fixture::standard();
    for command in [
        vec!["list"],
        vec!["summary"],
        vec!["export", "--format", "csv"],
    ] {
        let mut args = command.clone();
        args.extend_from_slice(&["--category", "gamblng"]);
        let out = fx.audit(&args);
        assert_eq!(out.status.code(), Some(2), "{command:?}");
        let err = stderr(&out);
        assert!(
            err.contains("unknown category \"gamblng\"")
                && err.contains("defined categories: adult, circumvention, gambling, terrorism"),
            "{command:?}: {err}"
        );
        assert!(stdout(&out).is_empty(), "{command:?}: nothing half-printed");
    }
}

#[test]
fn bad_times_exit_2_saying_what_is_accepted() {
    let (fx, _) = Fixture::standard();
    for (flag, value) in [
        ("--since", "yesterday"),
        ("--since", "2026-13-01"),
        ("--until", "2026-02-30"),
        ("--since", "7 days ago"),
    ] {
        let out = fx.audit(&["list", flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("bad time {value:?}")) && err.contains("like 7d"),
            "{flag} {value}: {err}"
        );
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn missing_config_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = warden_in(
        dir.path(),
        &["audit", "verify", "--config", missing.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot read config file {}", missing.display())),
        "{err}"
    );
    // Without --config: the default path, relative to the working directory.
    let out = warden_in(dir.path(), &["audit", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("config/warden.toml"),
        "{}",
        stderr(&out)
    );
    // And no audit database was created anywhere on the way.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn usage_errors_exit_2_from_the_argument_parser() {
    let (fx, _) = Fixture::standard();
    let cases: [(&[&str], &[&str]); 5] = [
        (&["review", "1", "--note", "n"], &["--outcome"]),
        (
            &["review", "--outcome", "incident", "--note", "n"],
            &["<ID>"],
        ),
        (
            &["review", "abc", "--outcome", "incident", "--note", "n"],
            &["abc"],
        ),
        (&["export"], &["--format"]),
        (&["export", "--format", "xml"], &["xml", "csv", "jsonl"]),
    ];
    for (args, expected) in cases {
        let out = fx.audit(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        for word in expected {
            assert!(err.contains(word), "{args:?}: {word} missing from {err}");
        }
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    let out = fx.audit(&["list", "--limit", "-1"]);
    assert_eq!(out.status.code(), Some(2));
}

// ---------------------------------------------------------------------------------------
// audit verify: tamper evidence
// ---------------------------------------------------------------------------------------

#[test]
fn verify_passes_a_freshly_sealed_log() {
    let (fx, _) = Fixture::standard();
    let out = fx.audit(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "OK (full, from seq 1: no trusted checkpoint yet): 5 sealed rows checked (0 purged by \
         retention), chain intact to seq 5; 0 rows still open\ncheckpoint recorded at seq 5\n"
    );
}

#[test]
fn verify_names_an_edited_row() {
    let (fx, _) = Fixture::standard();
    let n = fx.id_at_seq(3);
    let changed = fx
        .sqlite()
        .execute("UPDATE events SET name = 'x.test' WHERE id = ?1", [n])
        .unwrap();
    assert_eq!(changed, 1);
    let out = fx.audit(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "TAMPERED ({FIRST}): row {n} (seq 3): its contents do not match its hash (edited?)\n"
        )
    );
}

#[test]
fn verify_names_the_row_after_a_deleted_one() {
    let (fx, _) = Fixture::standard();
    let (m, after) = (fx.id_at_seq(3), fx.id_at_seq(4));
    fx.sqlite()
        .execute("DELETE FROM events WHERE id = ?1", [m])
        .unwrap();
    let out = fx.audit(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "TAMPERED ({FIRST}): row {after} (seq 4): rows with seq 3..3 are missing before it \
             (deleted?)\n"
        )
    );
}

#[test]
fn verify_detects_an_edited_count_even_on_the_newest_row() {
    let (fx, _) = Fixture::standard();
    // The chain's head: no later row vouches for it, only its own hash.
    let head = fx.id_at_seq(5);
    fx.sqlite()
        .execute("UPDATE events SET count = count - 1 WHERE id = ?1", [head])
        .unwrap();
    let out = fx.audit(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with(&format!("TAMPERED ({FIRST}): row {head} (seq 5): ")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn verify_catches_an_edit_whose_own_hash_was_recomputed() {
    // Someone who knows the algorithm edits row 2 and gives it a matching hash: row 2
    // now checks out, but row 3 was chained to the old hash.
    let (fx, _) = Fixture::standard();
    let (two, three) = (fx.id_at_seq(2), fx.id_at_seq(3));
    let db = fx.sqlite();
    db.execute("UPDATE events SET name = 'x.test' WHERE id = ?1", [two])
        .unwrap();
    let rows = fx.list_json(&[]);
    let upto2: Vec<Value> = rows
        .into_iter()
        .filter(|r| r["seq"].as_i64() <= Some(2))
        .collect();
    let forged = recompute_chain(&upto2)[&two].clone();
    db.execute(
        "UPDATE events SET hash = ?1 WHERE id = ?2",
        rusqlite::params![forged, two],
    )
    .unwrap();
    let out = fx.audit(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        format!(
            "TAMPERED ({FIRST}): row {three} (seq 3): its contents do not match its hash \
             (edited?)\n"
        )
    );
}

/// `verify` starts from the newest signed checkpoint (the last intact verify's head)
/// and says so; `verify --full` walks from seq 1, so it finds an edit before the
/// checkpoint, which the quick verify skips by design. The checkpoints' key sits beside
/// the database, readable by its owner only.
#[test]
fn verify_starts_from_its_last_checkpoint_and_full_from_seq_1() {
    let (fx, _) = Fixture::standard();
    assert_eq!(fx.audit(&["verify"]).status.code(), Some(0));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = PathBuf::from(format!("{}.checkpoint-key", fx.db.display()));
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let quick = "OK (incremental, from checkpoint 1 at seq 5): 0 sealed rows checked (0 purged \
                 by retention), chain intact to seq 5; 0 rows still open\n";
    let out = fx.audit(&["verify"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), quick));

    let two = fx.id_at_seq(2);
    fx.sqlite()
        .execute("UPDATE events SET name = 'x.test' WHERE id = ?1", [two])
        .unwrap();
    let out = fx.audit(&["verify"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), quick),
        "before the checkpoint: not walked"
    );
    let out = fx.audit(&["verify", "--full"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        format!(
            "TAMPERED (full, from seq 1): row {two} (seq 2): its contents do not match its hash \
             (edited?)\n"
        )
    );
}

/// What the chain alone could not show: its newest rows cut off. And a checkpoint
/// nobody with the key signed is reported, not trusted.
#[test]
fn verify_reports_rows_cut_off_the_end_and_forged_checkpoints() {
    let (fx, _) = Fixture::standard();
    assert_eq!(fx.audit(&["verify"]).status.code(), Some(0));
    fx.sqlite()
        .execute("DELETE FROM events WHERE seq = 5", [])
        .unwrap();
    for (args, walk) in [
        (&["verify"][..], "incremental, from checkpoint 1 at seq 5"),
        (&["verify", "--full"][..], "full, from seq 1"),
    ] {
        let out = fx.audit(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stdout(&out),
            format!(
                "TAMPERED ({walk}): checkpoint 1 (seq 5): the chain now ends at seq 4, below \
                 this signed head (rows cut off the end)\n"
            )
        );
    }

    let (fx, _) = Fixture::standard();
    assert_eq!(fx.audit(&["verify"]).status.code(), Some(0));
    fx.sqlite()
        .execute(
            "INSERT INTO checkpoints (seq, hash, at, mac) SELECT seq, hash, \
             '2030-01-01T00:00:00.000Z', 'forged' FROM events WHERE seq = 5",
            [],
        )
        .unwrap();
    let out = fx.audit(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "TAMPERED: checkpoint 2 (seq 5, signed 2030-01-01T00:00:00.000Z): its MAC does not \
         match this log's key (forged or edited, or the key file was replaced); not trusted\n\
         OK (incremental, from checkpoint 1 at seq 5): 0 sealed rows checked (0 purged by \
         retention), chain intact to seq 5; 0 rows still open\n"
    );
}

// ---------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------

#[test]
fn retention_purges_personal_data_but_the_chain_still_verifies() {
    let now = SystemTime::now();
    let mut events = vec![
        block("old-adult.example", "10.0.1.1", "adult", now - 40 * DAY),
        block(
            "old-terror.example",
            "10.0.1.2",
            "terrorism",
            now - 40 * DAY,
        ),
        block(
            "old-mixed.example",
            "10.0.1.3",
            "adult,terrorism",
            now - 40 * DAY,
        ),
        block("new-adult.example", "10.0.1.4", "adult", now - 10 * DAY),
        block(
            "ancient-terror.example",
            "10.0.1.5",
            "terrorism",
            now - 400 * DAY,
        ),
    ];
    events[0].device = Some("pupil-tablet".into());
    let fx = Fixture::new(&seen_once(events), &[]);
    let before = fx.list_json(&[]);
    let purged_names = ["old-adult.example", "ancient-terror.example"];
    let purged_ids: Vec<i64> = purged_names.iter().map(|n| fx.id_of(n)).collect();

    // 30 days by default; terrorism rows 365. A row is kept as long as its longest
    // category says: old-mixed (adult,terrorism) stays.
    let by_category = BTreeMap::from([("terrorism".to_string(), 365)]);
    fx.set_retention(30, "terrorism = 365");
    let mut store = Store::open(&fx.db).unwrap();
    assert_eq!(
        store
            .purge(
                now,
                &Retention {
                    default_days: 30,
                    by_category: by_category.clone()
                }
            )
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .purge(
                now,
                &Retention {
                    default_days: 30,
                    by_category: by_category.clone()
                }
            )
            .unwrap(),
        0,
        "idempotent"
    );
    drop(store);

    let mut kept = fx.names(&[]);
    kept.sort();
    assert_eq!(
        kept,
        [
            "new-adult.example",
            "old-mixed.example",
            "old-terror.example"
        ]
    );
    let out = fx.audit(&["export", "--format", "csv"]);
    assert_eq!(stdout(&out).lines().count(), 1 + 3, "{}", stdout(&out));
    let out = fx.audit(&["summary", "--json", "--since", "2000-01-01"]);
    let s: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(s["total"], 3);
    assert_eq!(
        pairs(&s["by_category"]),
        owned(&[("adult", 2), ("terrorism", 2)])
    );

    // Purged rows keep their chain entry: the chain verifies across them.
    let out = fx.audit(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "OK (full, from seq 1: no trusted checkpoint yet): 5 sealed rows checked (2 purged by \
         retention), chain intact to seq 5; 0 rows still open\ncheckpoint recorded at seq 5\n"
    );

    // Their personal data is gone from the file; seq and hash are unchanged.
    let db = fx.sqlite();
    for (id, name) in purged_ids.iter().zip(purged_names) {
        let (purged, ip, device, stored_name, cats, rule, seq, hash): (
            bool,
            String,
            Option<String>,
            String,
            String,
            String,
            i64,
            String,
        ) = db
            .query_row(
                "SELECT purged, client_ip, device, name, categories, rule, seq, hash \
                 FROM events WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                },
            )
            .unwrap();
        assert!(purged, "{name}");
        assert_eq!(
            (
                ip.as_str(),
                device,
                stored_name.as_str(),
                cats.as_str(),
                rule.as_str()
            ),
            (
                "",
                None,
                "",
                old_row(&before, *id)["categories"].as_str().unwrap(),
                old_row(&before, *id)["rule"].as_str().unwrap()
            ),
            "{name}: who and what name are gone; the public columns (category, the list's \
             rule) stay, hashed, to show when the purge was due"
        );
        let old = before.iter().find(|r| r["id"] == *id).unwrap();
        assert_eq!(Some(seq), old["seq"].as_i64(), "{name}");
        assert_eq!(hash, old["hash"].as_str().unwrap(), "{name}");
    }
    let leftovers: i64 = db
        .query_row(
            "SELECT count(*) FROM events WHERE name LIKE 'old-adult%' OR client_ip = '10.0.1.1' \
             OR device = 'pupil-tablet'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(leftovers, 0);

    // A purged event can no longer be reviewed.
    let id = purged_ids[0].to_string();
    let out = fx.audit(&[
        "review",
        &id,
        "--outcome",
        "incident",
        "--note",
        "n",
        "--by",
        "lead",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(&format!("no audit event with id {id}")));

    // And an edit after the purge is still caught: by a full verify, since the row lies
    // before the checkpoint the verify above recorded (which a quick verify starts from).
    let n = fx.id_of("new-adult.example");
    db.execute(
        "UPDATE events SET client_ip = '10.9.9.9' WHERE id = ?1",
        [n],
    )
    .unwrap();
    let out = fx.audit(&["verify", "--full"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with(&format!("TAMPERED (full, from seq 1): row {n} ")),
        "{}",
        stdout(&out)
    );
}

/// `retention_days_by_category` is documented as "Longer (or shorter) retention" (config.rs)
/// and "the longest retention among a row's categories, else default_days" (store.rs),
/// but `Store::purge` always adds `default_days` to the max, so a shorter per-category
/// retention never takes effect.
#[test]
fn retention_shorter_for_one_category_purges_it_sooner() {
    let now = SystemTime::now();
    let fx = Fixture::new(
        &seen_once(vec![
            block("adult-40d.example", "10.0.2.1", "adult", now - 40 * DAY),
            block(
                "gambling-40d.example",
                "10.0.2.2",
                "gambling",
                now - 40 * DAY,
            ),
        ]),
        &[],
    );
    let by_category = BTreeMap::from([("adult".to_string(), 30)]);
    let mut store = Store::open(&fx.db).unwrap();
    assert_eq!(
        store
            .purge(
                now,
                &Retention {
                    default_days: 365,
                    by_category: by_category.clone()
                }
            )
            .unwrap(),
        1
    );
    drop(store);
    assert_eq!(fx.names(&[]), ["gambling-40d.example"]);
}

// ---------------------------------------------------------------------------------------
// File permissions
// ---------------------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new").join("audit.sqlite");
    let store = Store::open(&db).unwrap();
    assert_eq!(mode(&db), 0o600, "created private");
    // The WAL side files hold the same data.
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", db.display()));
        if side.exists() {
            assert_eq!(mode(&side), 0o600, "{}", side.display());
        }
    }
    drop(store);

    // A database someone made world-readable is made private again when opened.
    let (fx, _) = Fixture::standard();
    assert_eq!(mode(&fx.db), 0o600);
    std::fs::set_permissions(&fx.db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = fx.audit(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(mode(&fx.db), 0o600);
}

// ---------------------------------------------------------------------------------------
// Regressions: problems found in review, fixed, and pinned here
// ---------------------------------------------------------------------------------------

/// `parse_time` clamps a duration reaching before 1970 to the epoch, but `rfc3339` then
/// panics on times before 1970 (humantime's formatter), so the command dies with exit
/// 101 and a backtrace instead of listing everything.
#[test]
fn since_reaching_before_1970_lists_everything() {
    let (fx, _) = Fixture::standard();
    let out = fx.audit(&["list", "--since", "100y"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 5);
}

/// `retention_days` is not bounded by the config check, and `Store::purge` formats
/// `now - days` with `rfc3339`, which panics before 1970: with `retention_days = 30000`
/// the writer thread dies at its first purge and later blocks are never written.
#[test]
fn writer_survives_a_retention_reaching_before_1970() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.sqlite");
    let sink = Sink::new(100);
    let writer = Writer::start(
        Store::open(&db).unwrap(),
        sink.clone(),
        WriterSettings {
            window: Duration::from_secs(60),
            flush_interval: Duration::from_millis(20),
            retention_days: 30_000,
            retention_by_category: BTreeMap::new(),
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100)); // past the first flush and purge
    let e = block("late.example", "10.0.3.1", "adult", SystemTime::now());
    sink.record(
        e.client,
        Default::default(),
        e.outcome,
        "adult",
        "late.example",
        || e.clone(),
    );
    writer.stop().expect("the writer is still running");
    let n: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

/// `verify` skips the hash check of rows flagged `purged`, and the flag itself is not
/// chained: anyone with write access can blank a recent row (say, the evidence of an
/// incident) by marking it purged, and `verify` reports it as an ordinary retention purge.
#[test]
fn verify_flags_a_recent_row_blanked_as_if_purged() {
    let (fx, _) = Fixture::standard();
    let id = fx.id_of("adult.example"); // an hour old, far within any retention
    fx.sqlite()
        .execute(
            "UPDATE events SET purged = 1, name = '', client_ip = '', device = NULL WHERE id = ?1",
            [id],
        )
        .unwrap();
    let out = fx.audit(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}
