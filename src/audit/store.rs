//! The SQLite audit store: schema, writing batches, sealing rows into the hash chain,
//! verifying the chain, and retention purges.
//!
//! Chain: every sealed row has a `seq` (1, 2, 3, … in sealing order) and
//! `hash = hex(SHA-256(previous hash ‖ canonical row))`, the first row's previous hash
//! being 64 zeros. The canonical row is `seq`, the *personal digest*, then the public
//! columns (times, count, group, type, categories, list, line, rule, response, outcome).
//! The personal digest is `SHA-256(salt ‖ client ‖ device ‖ name ‖ cname)` with a random
//! salt per row, so it reveals nothing by itself.
//!
//! Editing a sealed row changes its canonical form; deleting one leaves a gap in `seq`;
//! both make `verify` fail naming the row. A retention purge deletes the personal columns
//! and the salt but keeps the digest, so the chain still verifies across purged rows, and
//! their public columns (still hashed) show when they were due: given the retention
//! policy, `verify` also flags a row blanked before its time.
//! (A chain alone cannot show that its newest rows were cut off: the signed checkpoints
//! of `checkpoint` can, below the newest one; keep exports of the chain hashes for the
//! rest, as `audit export` includes them.) Retention purges run in small batches along
//! an index (`purge`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{rfc3339, Key, Pending};
use crate::config::AuditConfig;

/// Problems with the audit database.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("audit database {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no audit event with id {0}")]
    NoSuchEvent(i64),
    /// A stop found the database still failing: these events were answered but are not
    /// in the log.
    #[error("{events} audit events could not be written before the stop")]
    Unwritten {
        events: u64,
        source: Box<AuditError>,
    },
    #[error("{0}")]
    Invalid(String),
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The layout version, kept in SQLite's `user_version`. Bump it when the schema changes,
/// and add the step from the previous version to [`MIGRATIONS`].
const SCHEMA_VERSION: i64 = 12;

const SCHEMA: &str = r#"
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    seq         INTEGER UNIQUE,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    count       INTEGER NOT NULL,
    client_ip   TEXT NOT NULL,
    device      TEXT,
    grp         TEXT NOT NULL,
    name        TEXT NOT NULL,
    qtype       TEXT NOT NULL,
    categories  TEXT NOT NULL,
    locked      INTEGER NOT NULL,
    list        TEXT NOT NULL,
    line        INTEGER NOT NULL,
    rule        TEXT NOT NULL,
    response    TEXT NOT NULL,
    cname       TEXT,
    outcome     TEXT NOT NULL,
    salt        TEXT,
    personal    TEXT,
    hash        TEXT,
    purged      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_first_seen ON events(first_seen);
CREATE INDEX IF NOT EXISTS events_open ON events(seq) WHERE seq IS NULL;
CREATE TABLE reviews (
    id        INTEGER PRIMARY KEY,
    event_id  INTEGER NOT NULL REFERENCES events(id),
    at        TEXT NOT NULL,
    by        TEXT NOT NULL,
    outcome   TEXT NOT NULL CHECK (outcome IN ('incident', 'false-positive', 'no-action')),
    note      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_event ON reviews(event_id);
CREATE TRIGGER IF NOT EXISTS reviews_append_only_u BEFORE UPDATE ON reviews
    BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END;
CREATE TRIGGER IF NOT EXISTS reviews_append_only_d BEFORE DELETE ON reviews
    BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END;
"#;

/// Version 2: the dashboard's and the alerts' records, added to a version 1 log in place
/// (new tables only: the evidence already stored is untouched).
const SCHEMA_V2: &str = r#"
CREATE TABLE IF NOT EXISTS signins (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    user       TEXT NOT NULL,
    client_ip  TEXT NOT NULL,
    result     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS allow_changes (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    by         TEXT NOT NULL,
    action     TEXT NOT NULL,
    name       TEXT NOT NULL,
    reason     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_deliveries (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    channel    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    category   TEXT NOT NULL,
    client_ip  TEXT NOT NULL,
    event_ids  TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    result     TEXT NOT NULL,
    error      TEXT
);
CREATE TABLE IF NOT EXISTS alert_cursor (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    last_event INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS signins_append_only_u BEFORE UPDATE ON signins
    BEGIN SELECT RAISE(ABORT, 'sign-ins are append-only'); END;
CREATE TRIGGER IF NOT EXISTS allow_changes_append_only_u BEFORE UPDATE ON allow_changes
    BEGIN SELECT RAISE(ABORT, 'allow changes are append-only'); END;
CREATE TRIGGER IF NOT EXISTS allow_changes_append_only_d BEFORE DELETE ON allow_changes
    BEGIN SELECT RAISE(ABORT, 'allow changes are append-only'); END;
"#;

/// Version 3: the lead's reads shaped as index ranges and rollups, so that a year of a
/// big school's blocks reads as fast as a week's (issue #13). Nothing in the hash chain
/// changes: `reviewed` and the tallies are derived, kept from the rows and the reviews by
/// triggers, whoever writes them (`reviews_mark` below; the rollups' in [`SCHEMA_V5`]).
///
/// - Every index is partial on `purged = 0` (purged rows are never shown) and ends in
///   `first_seen`, so each filter is an equality on its column plus a time range, read in
///   the pages' order (newest first) and stopped at the page's end.
/// - `events_unreviewed` holds only unreviewed rows: "serious and not yet reviewed" stays
///   a short range however many reviewed rows lie between; `events_reviewed` holds the
///   few reviewed ones.
/// - `tally` counts blocks, rows and unreviewed rows per UTC quarter hour (every time
///   zone's offset is whole quarter hours, so local days are exact), outcome, group and
///   category set (version 5 adds `tally_day`, the same per UTC day); `tally_who` and
///   `tally_name` count blocks per UTC day per device and per name, for the top lists
///   (versions 6 and 7 add `tally_name_busy`, the busy names of each day). Counts over whole buckets come from them, and only the
///   partial buckets at a range's ends are counted from `events`.
/// - `audit_meta` keeps the longest `last_seen - first_seen` of any row (`max_span_ms`),
///   so a filter on `last_seen` becomes a bounded `first_seen` range.
const SCHEMA_V3: &str = r#"
ALTER TABLE events ADD COLUMN reviewed INTEGER NOT NULL DEFAULT 0;
UPDATE events SET reviewed = 1 WHERE id IN (SELECT event_id FROM reviews);
DROP INDEX IF EXISTS events_first_seen;
CREATE INDEX events_live ON events(first_seen) WHERE purged = 0;
CREATE INDEX events_client ON events(client_ip, first_seen) WHERE purged = 0;
CREATE INDEX events_device ON events(device, first_seen) WHERE purged = 0;
CREATE INDEX events_group ON events(grp, first_seen) WHERE purged = 0;
CREATE INDEX events_categories ON events(categories, first_seen) WHERE purged = 0;
CREATE INDEX events_unreviewed ON events(categories, first_seen)
    WHERE purged = 0 AND reviewed = 0;
CREATE INDEX events_reviewed ON events(first_seen) WHERE purged = 0 AND reviewed = 1;
CREATE TABLE audit_meta (
    key    TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO audit_meta (key, value) SELECT 'max_span_ms', coalesce(
    max(CAST(round((julianday(last_seen) - julianday(first_seen)) * 86400000) AS INTEGER)), 0)
    FROM events;
CREATE TABLE category_sets (categories TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO category_sets SELECT DISTINCT categories FROM events;
CREATE TABLE tally (
    bucket      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    grp         TEXT NOT NULL,
    categories  TEXT NOT NULL,
    blocks      INTEGER NOT NULL,
    events      INTEGER NOT NULL,
    unreviewed  INTEGER NOT NULL,
    PRIMARY KEY (bucket, outcome, grp, categories)
) WITHOUT ROWID;
CREATE TABLE tally_who (
    day     TEXT NOT NULL,
    who     TEXT NOT NULL,
    blocks  INTEGER NOT NULL,
    PRIMARY KEY (day, who)
) WITHOUT ROWID;
CREATE TABLE tally_name (
    day     TEXT NOT NULL,
    name    TEXT NOT NULL,
    blocks  INTEGER NOT NULL,
    PRIMARY KEY (day, name)
) WITHOUT ROWID;
INSERT INTO tally SELECT QUARTER(first_seen), outcome, grp, categories, sum(count), count(*),
    sum(reviewed = 0) FROM events WHERE purged = 0 GROUP BY 1, 2, 3, 4;
INSERT INTO tally_who SELECT substr(first_seen, 1, 10), coalesce(device, client_ip), sum(count)
    FROM events WHERE purged = 0 AND outcome = 'blocked' GROUP BY 1, 2;
INSERT INTO tally_name SELECT substr(first_seen, 1, 10), name, sum(count)
    FROM events WHERE purged = 0 AND outcome = 'blocked' GROUP BY 1, 2;
CREATE TRIGGER reviews_mark AFTER INSERT ON reviews BEGIN
    UPDATE events SET reviewed = 1 WHERE id = NEW.event_id AND reviewed = 0;
END;
"#;

/// Version 4: retention and verify that scale to a year of a big school's blocks
/// (issue #13).
///
/// - `checkpoints`: the heads a `verify` found intact, each signed with an HMAC under a
///   key kept beside the database (see `checkpoint`), so the next `verify` can start
///   there instead of at seq 1, and a chain cut short below a signed head is caught.
///   Append-only, like the reviews; `checkpoints_seq` finds the highest signed head.
/// - `signins_at`: sign-ins are purged by time, in small batches, along this index.
///
/// The events' purge needs no new index: it range-scans `events_categories` (v3) once
/// per category set in `category_sets` (v3, filled by `events_tally_i`).
const SCHEMA_V4: &str = r#"
CREATE TABLE checkpoints (
    id    INTEGER PRIMARY KEY,
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL,
    at    TEXT NOT NULL,
    mac   TEXT NOT NULL
);
CREATE INDEX checkpoints_seq ON checkpoints(seq);
CREATE TRIGGER checkpoints_append_only_u BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER checkpoints_append_only_d BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE INDEX signins_at ON signins(at);
"#;

/// Version 5: a per-day rollup beside the quarter-hour one, for counts over long ranges
/// (a year is ~10,000 rows of `tally_day` against ~1M of `tally`): the events page's total
/// and the overview's unreviewed count read it. It also creates the triggers that keep
/// every rollup up to date (v3's tables and its own), in one place: a log is migrated in
/// one open, so no rows are written between the two steps.
const SCHEMA_V5: &str = r#"
CREATE TABLE tally_day (
    bucket      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    grp         TEXT NOT NULL,
    categories  TEXT NOT NULL,
    blocks      INTEGER NOT NULL,
    events      INTEGER NOT NULL,
    unreviewed  INTEGER NOT NULL,
    PRIMARY KEY (bucket, outcome, grp, categories)
) WITHOUT ROWID;
INSERT INTO tally_day SELECT substr(first_seen, 1, 10), outcome, grp, categories, sum(count),
    count(*), sum(reviewed = 0) FROM events WHERE purged = 0 GROUP BY 1, 2, 3, 4;
DROP TRIGGER IF EXISTS events_tally_i;
DROP TRIGGER IF EXISTS events_tally_count;
DROP TRIGGER IF EXISTS events_tally_reviewed;
DROP TRIGGER IF EXISTS events_tally_gone;
DROP TRIGGER IF EXISTS events_tally_d;
CREATE TRIGGER events_tally_i AFTER INSERT ON events WHEN NEW.purged = 0 BEGIN
    INSERT OR IGNORE INTO category_sets VALUES (NEW.categories);
    INSERT INTO tally VALUES (QUARTER(NEW.first_seen), NEW.outcome, NEW.grp, NEW.categories,
        NEW.count, 1, NEW.reviewed = 0)
        ON CONFLICT DO UPDATE SET blocks = blocks + excluded.blocks, events = events + 1,
        unreviewed = unreviewed + excluded.unreviewed;
    INSERT INTO tally_day VALUES (substr(NEW.first_seen, 1, 10), NEW.outcome, NEW.grp, NEW.categories,
        NEW.count, 1, NEW.reviewed = 0)
        ON CONFLICT DO UPDATE SET blocks = blocks + excluded.blocks, events = events + 1,
        unreviewed = unreviewed + excluded.unreviewed;
    INSERT INTO tally_who SELECT substr(NEW.first_seen, 1, 10),
        coalesce(NEW.device, NEW.client_ip), NEW.count WHERE NEW.outcome = 'blocked'
        ON CONFLICT DO UPDATE SET blocks = blocks + excluded.blocks;
    INSERT INTO tally_name SELECT substr(NEW.first_seen, 1, 10), NEW.name, NEW.count
        WHERE NEW.outcome = 'blocked'
        ON CONFLICT DO UPDATE SET blocks = blocks + excluded.blocks;
END;
CREATE TRIGGER events_tally_count AFTER UPDATE OF count ON events
    WHEN NEW.purged = 0 AND OLD.purged = 0 AND NEW.count != OLD.count BEGIN
    UPDATE tally SET blocks = blocks + NEW.count - OLD.count
        WHERE bucket = QUARTER(OLD.first_seen) AND outcome = OLD.outcome AND grp = OLD.grp
        AND categories = OLD.categories;
    UPDATE tally_day SET blocks = blocks + NEW.count - OLD.count
        WHERE bucket = substr(OLD.first_seen, 1, 10) AND outcome = OLD.outcome AND grp = OLD.grp
        AND categories = OLD.categories;
    UPDATE tally_who SET blocks = blocks + NEW.count - OLD.count
        WHERE OLD.outcome = 'blocked' AND day = substr(OLD.first_seen, 1, 10)
        AND who = coalesce(OLD.device, OLD.client_ip);
    UPDATE tally_name SET blocks = blocks + NEW.count - OLD.count
        WHERE OLD.outcome = 'blocked' AND day = substr(OLD.first_seen, 1, 10)
        AND name = OLD.name;
END;
CREATE TRIGGER events_tally_reviewed AFTER UPDATE OF reviewed ON events
    WHEN NEW.purged = 0 AND OLD.purged = 0 AND NEW.reviewed != OLD.reviewed BEGIN
    UPDATE tally SET unreviewed = unreviewed + (NEW.reviewed = 0) - (OLD.reviewed = 0)
        WHERE bucket = QUARTER(OLD.first_seen) AND outcome = OLD.outcome AND grp = OLD.grp
        AND categories = OLD.categories;
    UPDATE tally_day SET unreviewed = unreviewed + (NEW.reviewed = 0) - (OLD.reviewed = 0)
        WHERE bucket = substr(OLD.first_seen, 1, 10) AND outcome = OLD.outcome AND grp = OLD.grp
        AND categories = OLD.categories;
END;
CREATE TRIGGER events_tally_gone AFTER UPDATE OF purged ON events
    WHEN OLD.purged = 0 AND NEW.purged != 0 BEGIN
    LEAVE_ROLLUPS
END;
CREATE TRIGGER events_tally_d AFTER DELETE ON events WHEN OLD.purged = 0 BEGIN
    LEAVE_ROLLUPS
END;
"#;

/// What a row leaving the live log (purged or deleted) takes out of every rollup: the
/// body shared by `events_tally_gone` and `events_tally_d` in [`SCHEMA_V5`].
const LEAVE_ROLLUPS: &str = r#"
    UPDATE tally SET blocks = blocks - OLD.count, events = events - 1,
        unreviewed = unreviewed - (OLD.reviewed = 0)
        WHERE bucket = QUARTER(OLD.first_seen) AND outcome = OLD.outcome AND grp = OLD.grp
        AND categories = OLD.categories;
    UPDATE tally_day SET blocks = blocks - OLD.count, events = events - 1,
        unreviewed = unreviewed - (OLD.reviewed = 0)
        WHERE bucket = substr(OLD.first_seen, 1, 10) AND outcome = OLD.outcome AND grp = OLD.grp
        AND categories = OLD.categories;
    UPDATE tally_who SET blocks = blocks - OLD.count
        WHERE OLD.outcome = 'blocked' AND day = substr(OLD.first_seen, 1, 10)
        AND who = coalesce(OLD.device, OLD.client_ip);
    UPDATE tally_name SET blocks = blocks - OLD.count
        WHERE OLD.outcome = 'blocked' AND day = substr(OLD.first_seen, 1, 10)
        AND name = OLD.name;
"#;

/// [`SCHEMA_V5`] as executed: the shared trigger body in place, `QUARTER` expanded.
fn schema_v5() -> String {
    expand_quarter(&SCHEMA_V5.replace("LEAVE_ROLLUPS", LEAVE_ROLLUPS.trim()))
}

/// Version 6: which names were busy on which day, so a month's top names need not group
/// every name of every day (~11,000 a day at a big school). `tally_name_hot` holds each
/// (day, name) whose `tally_name` blocks reached [`HOT_NAME_BLOCKS`]; a name absent for a
/// day had fewer that day. A row is added when a day's count crosses the mark (once per
/// day and name, so the writer pays almost nothing) and never removed: a purge only
/// lowers counts, and a listed name is only a candidate whose exact count is read (see
/// `busy_names`). Version 7 replaces it with a list at several marks; a log still passes
/// through this step on its way there.
const SCHEMA_V6: &str = r#"
CREATE TABLE tally_name_hot (
    day     TEXT NOT NULL,
    name    TEXT NOT NULL,
    PRIMARY KEY (day, name)
) WITHOUT ROWID;
INSERT INTO tally_name_hot SELECT day, name FROM tally_name WHERE blocks >= HOT;
CREATE TRIGGER tally_name_hot_i AFTER INSERT ON tally_name WHEN NEW.blocks >= HOT BEGIN
    HOT_INSERT
END;
CREATE TRIGGER tally_name_hot_u AFTER UPDATE OF blocks ON tally_name
    WHEN NEW.blocks >= HOT AND OLD.blocks < HOT BEGIN
    HOT_INSERT
END;
"#;

/// Blocks a name had to reach in one UTC day to be listed in version 6's `tally_name_hot`.
const HOT_NAME_BLOCKS: i64 = 64;

/// Lists a (day, name) as busy unless it is already: a name can cross the mark again after
/// a purge lowered its count. Not `INSERT OR IGNORE`: inside a trigger, the conflict
/// policy of the statement that fired it wins (the rollups' upsert, which aborts).
const HOT_INSERT: &str = "INSERT INTO tally_name_hot SELECT NEW.day, NEW.name WHERE NOT EXISTS \
     (SELECT 1 FROM tally_name_hot WHERE day = NEW.day AND name = NEW.name);";

/// [`SCHEMA_V6`] as executed, with [`HOT_NAME_BLOCKS`] and the shared insert in place.
fn schema_v6() -> String {
    SCHEMA_V6
        .replace("HOT_INSERT", HOT_INSERT)
        .replace("HOT", &HOT_NAME_BLOCKS.to_string())
}

/// The marks of `tally_name_busy` ([`schema_v7`]), lowest first: blocks a name reaches in
/// one UTC day to be listed at that level. Eight times apart, so whatever a school's size,
/// some level lists a few dozen names a day.
pub(crate) const BUSY_LEVELS: [i64; 4] = [64, 512, 4_096, 32_768];

/// Schema version 7: the busy names of each day at every mark of [`BUSY_LEVELS`], in
/// place of version 6's one mark. At one mark the list grows with the school: a month of a
/// big school (10M rows a year) lists ~7,500 names at 64 blocks a day, where its top names
/// have thousands a day; at 512 it lists ~800, as a small school's month does at 64. A row
/// is added when a day's count crosses a mark (so the writer pays only at the crossing)
/// and never removed: a purge only lowers counts, and a listed name is only a candidate
/// whose exact count is read (see `busy_names`).
fn schema_v7() -> String {
    let mut sql = String::from(
        "DROP TRIGGER tally_name_hot_i; DROP TRIGGER tally_name_hot_u; DROP TABLE tally_name_hot;
CREATE TABLE tally_name_busy (
    level   INTEGER NOT NULL,
    day     TEXT NOT NULL,
    name    TEXT NOT NULL,
    PRIMARY KEY (level, day, name)
) WITHOUT ROWID;
",
    );
    for level in BUSY_LEVELS {
        sql.push_str(&format!(
            "INSERT INTO tally_name_busy SELECT {level}, day, name FROM tally_name \
             WHERE blocks >= {level};\n"
        ));
    }
    // Lists a (level, day, name) unless it is already: a name can cross a mark again
    // after a purge lowered its count. Not `INSERT OR IGNORE`: inside a trigger, the
    // conflict policy of the statement that fired it wins (the rollups' upsert, which
    // aborts).
    let inserts = |crossed: &dyn Fn(i64) -> String| {
        BUSY_LEVELS
            .iter()
            .map(|l| {
                format!(
                    "    INSERT INTO tally_name_busy SELECT {l}, NEW.day, NEW.name \
                     WHERE {} AND NOT EXISTS (SELECT 1 FROM tally_name_busy \
                     WHERE level = {l} AND day = NEW.day AND name = NEW.name);\n",
                    crossed(*l)
                )
            })
            .collect::<String>()
    };
    let lowest = BUSY_LEVELS[0];
    let on_insert = |l: i64| format!("NEW.blocks >= {l}");
    let on_update = |l: i64| format!("(NEW.blocks >= {l} AND OLD.blocks < {l})");
    let any_crossed = BUSY_LEVELS
        .iter()
        .map(|l| on_update(*l))
        .collect::<Vec<_>>()
        .join(" OR ");
    sql.push_str(&format!(
        "CREATE TRIGGER tally_name_busy_i AFTER INSERT ON tally_name \
         WHEN NEW.blocks >= {lowest} BEGIN\n{}END;\n\
         CREATE TRIGGER tally_name_busy_u AFTER UPDATE OF blocks ON tally_name \
         WHEN {any_crossed} BEGIN\n{}END;\n",
        inserts(&on_insert),
        inserts(&on_update)
    ));
    sql
}

/// `QUARTER(t)` in [`SCHEMA_V3`]: the RFC 3339 time `t` floored to its UTC quarter hour,
/// `2026-07-01T20:30`. Spelled out in SQL (SQLite has no such function, and a function
/// registered from Rust would make the file unreadable to other SQLite tools' triggers).
const QUARTER: &str = "(substr({t}, 1, 14) || CASE WHEN substr({t}, 15, 2) < '15' THEN '00' \
     WHEN substr({t}, 15, 2) < '30' THEN '15' WHEN substr({t}, 15, 2) < '45' THEN '30' \
     ELSE '45' END)";

/// [`SCHEMA_V3`] with each `QUARTER(x)` spelled out.
fn schema_v3() -> String {
    expand_quarter(SCHEMA_V3)
}

/// Replace each `QUARTER(arg)` in `sql` by [`QUARTER`] with `{t}` as `arg`.
pub(crate) fn expand_quarter(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() * 2);
    let mut rest = sql;
    while let Some(at) = rest.find("QUARTER(") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "QUARTER(".len()..];
        let end = after.find(')').unwrap_or(after.len());
        out.push_str(&QUARTER.replace("{t}", &after[..end]));
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Version 8: sign-in ids are never used twice. The fleet ships each record table after a
/// cursor on its ids; sign-ins are the one table purged by age, and SQLite gives a plain
/// `INTEGER PRIMARY KEY` the highest id plus one, so once every sign-in had been purged
/// new ones would reuse ids at or below the cursor and never be shipped. `AUTOINCREMENT`
/// remembers the highest id ever used. (SQLite cannot add it in place: the table is
/// copied, with its index and trigger.)
const SCHEMA_V8: &str = r#"
CREATE TABLE signins_v8 (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    user       TEXT NOT NULL,
    client_ip  TEXT NOT NULL,
    result     TEXT NOT NULL
);
INSERT INTO signins_v8 (id, at, user, client_ip, result)
    SELECT id, at, user, client_ip, result FROM signins;
DROP TABLE signins;
ALTER TABLE signins_v8 RENAME TO signins;
CREATE INDEX signins_at ON signins(at);
CREATE TRIGGER signins_append_only_u BEFORE UPDATE ON signins
    BEGIN SELECT RAISE(ABORT, 'sign-ins are append-only'); END;
"#;

/// v9: a review written on the trust's fleet dashboard, kept beside the site's own
/// with the central id it came with (each arrives once; none is shipped back).
const SCHEMA_V9: &str = r#"
ALTER TABLE reviews ADD COLUMN central_id INTEGER;
CREATE UNIQUE INDEX reviews_central ON reviews(central_id) WHERE central_id IS NOT NULL;
"#;

/// v10: who asked beyond the address (`[identity]`, trusted forwarders): the device's
/// MAC, the signed-in user, and where they came from. Personal data, hashed into the
/// chain with the other personal columns when present (a row without them hashes as
/// before) and purged with them. `events_user` serves the dashboard's user filter.
const SCHEMA_V10: &str = r#"
ALTER TABLE events ADD COLUMN mac TEXT;
ALTER TABLE events ADD COLUMN user_name TEXT;
ALTER TABLE events ADD COLUMN sources TEXT;
CREATE INDEX events_user ON events(user_name, first_seen) WHERE purged = 0 AND user_name IS NOT NULL;
"#;

/// v11: the dashboard's second factors used (a TOTP step, a recovery code's hash), so
/// none is accepted twice; and every change to the config, secrets redacted, with its
/// diff (`crate::config_history`), for the annual review. Neither is personal data
/// about pupils, and neither is purged with the events.
const SCHEMA_V11: &str = r#"
CREATE TABLE second_factor_uses (
    user TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (user, kind, value)
) WITHOUT ROWID;
CREATE TABLE config_changes (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    why TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    text TEXT NOT NULL,
    diff TEXT NOT NULL
);
"#;

/// v12: the self-test's results (`crate::selftest`): one row per run, with what failed,
/// for the dashboard and the annual review (no personal data); and the requests to
/// unblock a site filed from the block page (`crate::requests`), whose address, device
/// and name are personal data, blanked with the audit log's retention.
const SCHEMA_V12: &str = r#"
CREATE TABLE unblock_requests (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    device TEXT,
    grp TEXT NOT NULL,
    site TEXT NOT NULL,
    categories TEXT NOT NULL,
    what TEXT NOT NULL,
    requester TEXT,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'approved', 'declined')),
    decided_at TEXT,
    decided_by TEXT,
    note TEXT,
    allow_group TEXT,
    allow_until TEXT
);
CREATE INDEX unblock_requests_state ON unblock_requests(state, id);
CREATE INDEX unblock_requests_at ON unblock_requests(at);
CREATE TABLE selftest_runs (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    trigger TEXT NOT NULL,
    passed INTEGER NOT NULL,
    total INTEGER NOT NULL,
    failures TEXT NOT NULL
);
CREATE INDEX selftest_runs_at ON selftest_runs(at);
"#;

/// `(from version, SQL)`: the step that takes a log from `from` to `from + 1`.
fn migrations() -> [(i64, String); 11] {
    [
        (1, SCHEMA_V2.to_string()),
        (2, schema_v3()),
        (3, SCHEMA_V4.to_string()),
        (4, schema_v5()),
        (5, schema_v6()),
        (6, schema_v7()),
        (7, SCHEMA_V8.to_string()),
        (8, SCHEMA_V9.to_string()),
        (9, SCHEMA_V10.to_string()),
        (10, SCHEMA_V11.to_string()),
        (11, SCHEMA_V12.to_string()),
    ]
}

/// The personal columns, digested (with the row's salt) into the canonical form (see
/// [`super::personal::Personal`] for how).
pub(crate) const PERSONAL_COLUMNS: &str =
    "salt, client_ip, device, name, cname, mac, user_name, sources";
/// The public columns of the canonical form, after `seq` and the personal digest.
const PUBLIC_COLUMNS: &str = "first_seen, last_seen, count, grp, qtype, categories, locked, \
     list, line, rule, response, outcome";
/// Everything needed to recompute a row's hash: personal columns, stored digest (for
/// purged rows), seq, public columns.
const CHAIN_SELECT: &str = "purged, personal, salt, client_ip, device, name, cname, mac, \
     user_name, sources, seq, \
     first_seen, last_seen, count, grp, qtype, categories, locked, list, line, rule, response, outcome";

/// Result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every row walked fits: `rows` sealed rows walked (`purged` of them purged by
    /// retention), and `open` rows not sealed yet.
    Intact { rows: u64, purged: u64, open: u64 },
    /// Row `id`, at chain position `seq`, does not fit.
    Broken { id: i64, seq: i64, reason: String },
    /// The chain no longer holds what signed checkpoint `checkpoint` vouched for at
    /// `seq` (rows cut off the end, or the chain rewritten from there on).
    Checkpoint {
        checkpoint: i64,
        seq: i64,
        reason: String,
    },
}

/// A position on the chain: the row at `seq` has hash `hash` (seq 0 and 64 zeros
/// before the first row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainPoint {
    pub seq: i64,
    pub hash: String,
}

impl ChainPoint {
    /// Before the first row.
    pub(crate) fn genesis() -> ChainPoint {
        ChainPoint {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }
}

/// What [`Store::walk`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Walk {
    /// Every row walked fits; `head` is the last one (the start if there were none).
    Intact {
        head: ChainPoint,
        rows: u64,
        purged: u64,
    },
    Broken {
        id: i64,
        seq: i64,
        reason: String,
    },
}

/// Counts from one batch write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BatchStats {
    pub inserted: u64,
    pub updated: u64,
    pub sealed: u64,
}

/// An open row: where it is and when its window started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenRow {
    id: i64,
    first: SystemTime,
}

/// The rows open in the database (their window not closed yet), by key.
///
/// Held by key *digest*, not by key: a school's minute of distinct names is hundreds of
/// thousands of open rows, and a key (address, categories, name) is a heap allocation of
/// ~100 bytes where the digest is 16 inline bytes. The digest is keyed by two random
/// per-process SipHash keys (128 bits), so no one can make two keys share a row.
#[derive(Default)]
pub(crate) struct OpenRows {
    rows: HashMap<u128, OpenRow, foldhash::fast::RandomState>,
    keys: Digester,
}

/// Two independently, randomly keyed SipHash-1-3 hashers.
#[derive(Default)]
struct Digester([std::hash::RandomState; 2]);

impl OpenRows {
    /// The digest `key` is held under.
    fn digest(&self, key: &Key) -> u128 {
        use std::hash::BuildHasher;
        let [a, b] = &self.keys.0;
        (u128::from(a.hash_one(key)) << 64) | u128::from(b.hash_one(key))
    }

    fn get(&self, key: &Key) -> Option<&OpenRow> {
        self.rows.get(&self.digest(key))
    }

    /// Rows open.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Forget every row (after they were all sealed).
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
    }
}

/// The audit database, owned by one writer (or one CLI command) at a time.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    head_seq: i64,
    head_hash: String,
    /// The longest span of any row, as stored in `audit_meta` (see [`SCHEMA_V3`]).
    max_span_ms: i64,
}

impl Store {
    /// Open (creating it, its folder, and the schema) the database at `path`. The file
    /// is made readable by its owner only: it holds personal data.
    pub fn open(path: &Path) -> Result<Store, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        create_private(path).map_err(io)?;
        let conn = Connection::open(path).map_err(|source| AuditError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            head_seq: 0,
            head_hash: GENESIS.to_string(),
            max_span_ms: 0,
        };
        store
            .sql(|c| {
                // Wait for a writer's lock (e.g. a CLI command beside a running server)
                // before anything else touches the file.
                c.busy_timeout(Duration::from_secs(5))?;
                c.pragma_update(None, "journal_mode", "WAL")?;
                c.pragma_update(None, "synchronous", "NORMAL")?;
                let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
                let tables: i64 = c.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                    [],
                    |r| r.get(0),
                )?;
                if tables == 0 {
                    // One transaction: a crash cannot leave tables without their version.
                    c.execute_batch(&format!(
                        "BEGIN; {SCHEMA} {SCHEMA_V2} {} {SCHEMA_V4} {} {} {} {SCHEMA_V8} \
                         {SCHEMA_V9} {SCHEMA_V10} {SCHEMA_V11} {SCHEMA_V12} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;",
                        schema_v3(),
                        schema_v5(),
                        schema_v6(),
                        schema_v7()
                    ))?;
                    return Ok((tables, SCHEMA_VERSION));
                }
                let mut version = version;
                for (from, step) in migrations() {
                    if version == from {
                        c.execute_batch(&format!(
                            "BEGIN; {step} PRAGMA user_version = {}; COMMIT;",
                            from + 1
                        ))?;
                        version = from + 1;
                    }
                }
                Ok((tables, version))
            })
            .and_then(|(tables, version)| {
                // Never write into a log of another layout: rows would fail one by one
                // (or worse, half-fit). Refuse at start-up, naming the file.
                if tables > 0 && version != SCHEMA_VERSION {
                    return Err(AuditError::Invalid(format!(
                    "audit database {} has schema version {version}, this Warden writes version \
                     {SCHEMA_VERSION}; keep it as evidence and set [audit] path to a new file",
                    path.display()
                )));
                }
                Ok(())
            })?;
        for suffix in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{suffix}", path.display()));
            if side.exists() {
                restrict(&side).map_err(io)?;
            }
        }
        store.load_head()?;
        Ok(store)
    }

    /// Make this connection the writer's: its statement journals (one per statement
    /// that fires the rollup triggers) live in memory. On a file they were half the
    /// writer's CPU (a `pwrite` per page), and each is bounded by one statement's
    /// changes. Readers keep temporary files: a large sort must not grow the heap.
    pub(crate) fn use_for_writing(&self) -> Result<(), AuditError> {
        self.conn
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(|e| self.wrap(e))
    }

    /// Open an existing database: for review commands, which must not mistake a wrong
    /// or deleted path for an empty, intact log.
    pub(crate) fn open_existing(path: &Path) -> Result<Store, AuditError> {
        if !path.exists() {
            return Err(AuditError::Invalid(format!(
                "no audit database at {} (has `warden serve` run with this config?)",
                path.display()
            )));
        }
        Store::open(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// For tests that trace the statements a read runs.
    #[cfg(test)]
    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// A transaction on the store's connection (for the purge's batches).
    pub(crate) fn transaction(&mut self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        self.conn.transaction()
    }

    fn sql<T>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, AuditError> {
        f(&mut self.conn).map_err(|source| AuditError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    pub(crate) fn wrap(&self, source: rusqlite::Error) -> AuditError {
        AuditError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn load_head(&mut self) -> Result<(), AuditError> {
        let head: Option<(i64, String)> = self.sql(|c| {
            c.query_row(
                "SELECT seq, hash FROM events WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })?;
        if let Some((seq, hash)) = head {
            self.head_seq = seq;
            self.head_hash = hash;
        }
        self.max_span_ms = self.max_span()?;
        Ok(())
    }

    /// The longest `last_seen - first_seen` of any row, in milliseconds: a row last seen
    /// at or after `t` was first seen at or after `t` minus this. Read from the file each
    /// time (the writer raises it), rounded up to a whole second against rounding.
    pub(crate) fn max_span(&self) -> Result<i64, AuditError> {
        let ms: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM audit_meta WHERE key = 'max_span_ms'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.wrap(e))?;
        Ok(ms.unwrap_or(0).max(0).saturating_add(1000))
    }

    /// Write one drained batch in one transaction: add to open rows within their
    /// window, open new rows otherwise; then seal the rows whose window has closed
    /// (all open rows when `seal_all`, as at shutdown).
    ///
    /// `open` describes the rows open in the database, and is changed only once the
    /// transaction has committed: a failed write (disk full) rolls the rows back, and
    /// the map must not keep ids of rows that do not exist (their later updates would
    /// change nothing and lose the counts). New rows are inserted in order of first
    /// sighting, so ids follow time: alerts read new rows by id and alert on a device's
    /// first block.
    pub(crate) fn write_batch(
        &mut self,
        batch: &[(Key, Pending)],
        open: &mut OpenRows,
        window: Duration,
        now: SystemTime,
        seal_all: bool,
    ) -> Result<BatchStats, AuditError> {
        let mut order: Vec<&(Key, Pending)> = batch.iter().collect();
        order.sort_by(|a, b| a.1.first.cmp(&b.1.first).then_with(|| a.0.cmp(&b.0)));
        let path = self.path.clone();
        let err = |source| AuditError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let (mut stats, mut changes) = write_rows(&tx, &order, open, window).map_err(err)?;
        // Readers turn a `last_seen` bound into a `first_seen` range this much wider.
        let span = longest_span(&order, open, window);
        if span > self.max_span_ms {
            tx.execute(
                "UPDATE audit_meta SET value = max(value, ?1) WHERE key = 'max_span_ms'",
                [span],
            )
            .map_err(err)?;
        }
        // Seal in insertion order, so the chain follows the order events were opened.
        let reopened: HashSet<u128> = changes.opened.iter().map(|(k, _)| *k).collect();
        let due =
            |row: &OpenRow| seal_all || now.duration_since(row.first).unwrap_or_default() >= window;
        let mut closing: Vec<(u128, OpenRow)> = open
            .rows
            .iter()
            .filter(|(key, row)| !reopened.contains(key) && due(row))
            .map(|(k, r)| (*k, *r))
            .chain(changes.opened.iter().filter(|(_, row)| due(row)).cloned())
            .chain(changes.replaced.iter().cloned())
            .collect();
        closing.sort_by_key(|(_, r)| r.id);
        let (mut seq, mut hash) = (self.head_seq, self.head_hash.clone());
        for (key, row) in closing {
            seq += 1;
            hash = seal_row(&tx, row.id, seq, &hash).map_err(err)?;
            changes.closed.push((key, row.id));
            stats.sealed += 1;
        }
        tx.commit().map_err(err)?;
        changes.apply(open);
        self.head_seq = seq;
        self.head_hash = hash;
        self.max_span_ms = self.max_span_ms.max(span);
        Ok(stats)
    }

    /// Seal every open row (left by a crash, or at shutdown). Returns how many.
    pub(crate) fn seal_open_rows(&mut self) -> Result<u64, AuditError> {
        let path = self.path.clone();
        let err = |source| AuditError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let ids: Vec<i64> = {
            let mut stmt = tx
                .prepare("SELECT id FROM events WHERE seq IS NULL AND purged = 0 ORDER BY id")
                .map_err(err)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(err)?
        };
        let (mut seq, mut hash) = (self.head_seq, self.head_hash.clone());
        for id in &ids {
            seq += 1;
            hash = seal_row(&tx, *id, seq, &hash).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        self.head_seq = seq;
        self.head_hash = hash;
        Ok(ids.len() as u64)
    }

    /// Walk the whole chain and report the first row that does not fit. With a
    /// retention `policy`, also report a purged row whose retention had not run out.
    /// (`checkpoint::verify` adds the signed checkpoints: a walk from the newest one,
    /// and cut-off tails.)
    pub fn verify(
        &self,
        policy: Option<&Retention>,
        now: SystemTime,
    ) -> Result<Verification, AuditError> {
        Ok(match self.walk(&ChainPoint::genesis(), policy, now)? {
            Walk::Intact { rows, purged, .. } => Verification::Intact {
                rows,
                purged,
                open: self.open_rows()?,
            },
            Walk::Broken { id, seq, reason } => Verification::Broken { id, seq, reason },
        })
    }

    /// Rows not sealed into the chain yet (their window is still open).
    pub(crate) fn open_rows(&self) -> Result<u64, AuditError> {
        let open: i64 = self
            .conn
            .query_row("SELECT count(*) FROM events WHERE seq IS NULL", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.wrap(e))?;
        Ok(open as u64)
    }

    /// Walk the chain from the row after `from` to the head, checking that each row's
    /// seq follows, its hash chains to the previous one, and (given a `policy`) that a
    /// purged row was due. Reads along the `seq` index, one row at a time.
    pub(crate) fn walk(
        &self,
        from: &ChainPoint,
        policy: Option<&Retention>,
        now: SystemTime,
    ) -> Result<Walk, AuditError> {
        let err = |source| self.wrap(source);
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT id, hash, {CHAIN_SELECT} FROM events WHERE seq > ?1 ORDER BY seq"
            ))
            .map_err(err)?;
        let mut rows = stmt.query([from.seq]).map_err(err)?;
        let mut head = from.clone();
        let (mut count, mut purged) = (0u64, 0u64);
        while let Some(row) = rows.next().map_err(err)? {
            let id: i64 = row.get(0).map_err(err)?;
            let stored: Option<String> = row.get(1).map_err(err)?;
            // Past `id, hash`, CHAIN_SELECT's `purged, personal`, the personal columns.
            let seq_col = 4 + PERSONAL_COLUMNS.split(',').count();
            let seq: i64 = row.get(seq_col).map_err(err)?;
            let broken = |reason: String| Ok(Walk::Broken { id, seq, reason });
            if seq != head.seq + 1 {
                return broken(format!(
                    "rows with seq {}..{} are missing before it (deleted?)",
                    head.seq + 1,
                    seq - 1
                ));
            }
            let canonical = canonical_from_row(row, 2).map_err(err)?;
            if stored.as_deref() != Some(chain_hash(&head.hash, &canonical).as_str()) {
                return broken("its contents do not match its hash (edited?)".to_string());
            }
            if row.get::<_, bool>(2).map_err(err)? {
                purged += 1;
                // PUBLIC_COLUMNS: first_seen, last_seen, count, grp, qtype, categories…
                let last_seen: String = row.get(seq_col + 2).map_err(err)?;
                let categories: String = row.get(seq_col + 6).map_err(err)?;
                if let Some(policy) = policy {
                    let due = rfc3339(policy.expiry(&categories, now));
                    if last_seen >= due {
                        return broken(format!(
                            "its personal data was deleted before its retention ended \
                             (last seen {last_seen}, due after {due})"
                        ));
                    }
                }
            }
            head = ChainPoint {
                seq,
                hash: stored.unwrap_or_default(),
            };
            count += 1;
        }
        Ok(Walk::Intact {
            head,
            rows: count,
            purged,
        })
    }
}

/// How long rows are kept: a default, and per-category overrides (longer or shorter).
/// A row in several categories is kept for the longest of their retentions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub default_days: u32,
    pub by_category: BTreeMap<String, u32>,
}

impl Retention {
    /// The retention `[audit]` configures (`retention_days`, `retention_days_by_category`).
    pub fn from_config(audit: &AuditConfig) -> Retention {
        Retention {
            default_days: audit.retention_days,
            by_category: audit.retention_by_category(),
        }
    }

    fn days(&self, categories: &str) -> u32 {
        categories
            .split(',')
            .filter(|c| !c.is_empty())
            .map(|c| {
                self.by_category
                    .get(c)
                    .copied()
                    .unwrap_or(self.default_days)
            })
            .max()
            .unwrap_or(self.default_days)
    }

    /// Rows of `categories` last seen before this are due for purging.
    pub(crate) fn expiry(&self, categories: &str, now: SystemTime) -> SystemTime {
        super::before(now, Duration::from_secs(86_400) * self.days(categories))
    }
}

/// What a batch changes in the writer's map of open rows, applied only after its
/// transaction has committed.
#[derive(Default)]
struct OpenChanges {
    /// Rows inserted by the batch (by key digest).
    opened: Vec<(u128, OpenRow)>,
    /// Open rows whose key got a new row because an event fell outside their window:
    /// their window has closed, so they are sealed in the same batch.
    replaced: Vec<(u128, OpenRow)>,
    /// Rows sealed by the batch, by id.
    closed: Vec<(u128, i64)>,
}

impl OpenChanges {
    fn apply(self, open: &mut OpenRows) {
        for (key, row) in self.opened {
            open.rows.insert(key, row);
        }
        // By id: a key whose old row was sealed keeps its new one.
        for (key, id) in self.closed {
            if open.rows.get(&key).is_some_and(|row| row.id == id) {
                open.rows.remove(&key);
            }
        }
    }
}

/// The longest `last_seen - first_seen`, in milliseconds, of the rows `order` writes:
/// an added entry stretches its open row to its own last sighting, a new row spans its
/// entry (which may be long: events held through a full disk keep their first time).
fn longest_span(order: &[&(Key, Pending)], open: &OpenRows, window: Duration) -> i64 {
    order
        .iter()
        .map(|(key, pending)| {
            let first = match open.get(key) {
                Some(row)
                    if pending.last.duration_since(row.first).unwrap_or_default() < window =>
                {
                    row.first
                }
                _ => pending.first,
            };
            let span = pending.last.duration_since(first).unwrap_or_default();
            i64::try_from(span.as_millis()).unwrap_or(i64::MAX)
        })
        .max()
        .unwrap_or(0)
}

/// Add each pending entry to its open row, or insert a new row. Reads `open`, never
/// changes it (see [`Store::write_batch`]).
fn write_rows(
    tx: &rusqlite::Transaction<'_>,
    order: &[&(Key, Pending)],
    open: &OpenRows,
    window: Duration,
) -> rusqlite::Result<(BatchStats, OpenChanges)> {
    let mut stats = BatchStats::default();
    let mut changes = OpenChanges::default();
    for (key, pending) in order.iter().copied() {
        let key = open.digest(key);
        if let Some(row) = open.rows.get(&key) {
            if pending.last.duration_since(row.first).unwrap_or_default() >= window {
                changes.replaced.push((key, *row));
            } else if add_to_row(tx, row.id, pending)? {
                stats.updated += 1;
                continue;
            } else {
                // The open row is gone (deleted outside Warden): a new row keeps the
                // count rather than an update that changes nothing.
                tracing::warn!(
                    id = row.id,
                    "an open audit row is missing; opening a new one"
                );
            }
        }
        let id = insert_row(tx, pending)?;
        let row = OpenRow {
            id,
            first: pending.first,
        };
        changes.opened.push((key, row));
        stats.inserted += 1;
    }
    Ok((stats, changes))
}

/// Add a pending entry's count to open row `id`; false if there is no such row.
fn add_to_row(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    pending: &Pending,
) -> rusqlite::Result<bool> {
    // Cached statements: the writer runs these thousands of times a second.
    let changed = tx
        .prepare_cached(
            "UPDATE events SET count = count + ?1, last_seen = max(last_seen, ?2) WHERE id = ?3",
        )?
        .execute(params![pending.count as i64, rfc3339(pending.last), id])?;
    Ok(changed == 1)
}

/// Insert a new open row for a pending entry; returns its id.
fn insert_row(tx: &rusqlite::Transaction<'_>, pending: &Pending) -> rusqlite::Result<i64> {
    let e = &pending.event;
    tx.prepare_cached(
        "INSERT INTO events (first_seen, last_seen, count, client_ip, device, grp, name, qtype, \
         categories, locked, list, line, rule, response, cname, outcome, salt, mac, user_name, \
         sources) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
         ?17, ?18, ?19, ?20)",
    )?
    .execute(params![
        rfc3339(pending.first),
        rfc3339(pending.last),
        pending.count as i64,
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
        new_salt(),
        e.identity.mac,
        e.identity.user,
        e.identity.sources,
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Compute and store a row's chain position and hash; returns the hash.
fn seal_row(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    seq: i64,
    prev_hash: &str,
) -> rusqlite::Result<String> {
    // Cached statements: a flood of distinct names seals thousands of rows a second,
    // and parsing these statements each time cost more than running them. The row is
    // read with its new `seq` given as a parameter (the canonical form includes it), so
    // one UPDATE writes both the position and the hash.
    static SELECT_CHAIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let columns = CHAIN_SELECT.replacen(" seq,", " ?2 AS seq,", 1);
        format!("SELECT {columns} FROM events WHERE id = ?1")
    });
    let canonical = tx
        .prepare_cached(&SELECT_CHAIN)?
        .query_row(params![id, seq], |row| canonical_from_row(row, 0))?;
    let hash = chain_hash(prev_hash, &canonical);
    tx.prepare_cached("UPDATE events SET seq = ?1, hash = ?2 WHERE id = ?3")?
        .execute(params![seq, hash, id])?;
    Ok(hash)
}

/// Column values as text, separated by U+001F (NULL as U+0000).
fn join_columns(
    row: &rusqlite::Row<'_>,
    columns: std::ops::Range<usize>,
) -> rusqlite::Result<String> {
    use rusqlite::types::ValueRef;
    let mut out = String::with_capacity(256);
    for i in columns.clone() {
        if i > columns.start {
            out.push('\u{1f}');
        }
        match row.get_ref(i)? {
            ValueRef::Null => out.push('\u{0}'),
            ValueRef::Integer(n) => out.push_str(&n.to_string()),
            ValueRef::Real(f) => out.push_str(&f.to_string()),
            ValueRef::Text(t) | ValueRef::Blob(t) => out.push_str(&String::from_utf8_lossy(t)),
        }
    }
    Ok(out)
}

/// The digest of the [`PERSONAL_COLUMNS`] starting at column `first` (see
/// [`super::personal::Personal::digest`]).
pub(crate) fn personal_digest(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<String> {
    let text = |i: usize| row.get::<_, Option<String>>(first + i);
    let (salt, client_ip, device, name, cname) = (text(0)?, text(1)?, text(2)?, text(3)?, text(4)?);
    let (mac, user, sources) = (text(5)?, text(6)?, text(7)?);
    Ok(super::personal::Personal {
        salt: salt.as_deref(),
        client_ip: client_ip.as_deref().unwrap_or_default(),
        device: device.as_deref(),
        name: name.as_deref().unwrap_or_default(),
        cname: cname.as_deref(),
        mac: mac.as_deref(),
        user: user.as_deref(),
        sources: sources.as_deref(),
    }
    .digest())
}

/// The canonical form of a row selected with [`CHAIN_SELECT`] from column `first`:
/// `seq ‖ personal digest ‖ public columns`. A purged row's digest is the stored one.
fn canonical_from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<String> {
    let purged: bool = row.get(first)?;
    let digest = if purged {
        row.get::<_, Option<String>>(first + 1)?.unwrap_or_default()
    } else {
        personal_digest(row, first + 2)?
    };
    let seq_col = first + 2 + PERSONAL_COLUMNS.split(',').count();
    let seq: i64 = row.get(seq_col)?;
    let public = join_columns(
        row,
        seq_col + 1..seq_col + 1 + PUBLIC_COLUMNS.split(',').count(),
    )?;
    Ok(format!("{seq}\u{1f}{digest}\u{1f}{public}"))
}

/// A random salt for a new row (16 bytes, hex).
fn new_salt() -> String {
    use std::hash::{BuildHasher, Hasher};
    // Two independent randomly seeded hashers: 128 unpredictable bits without a new
    // dependency; the salt only has to be unguessable, not a key.
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    hex::encode(bytes)
}

/// `hex(SHA-256(prev_hash ‖ canonical))`.
pub(crate) fn chain_hash(prev_hash: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// Create `path` readable and writable by its owner only, if it does not exist yet.
fn create_private(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return restrict(path);
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(|_| ())
}

/// Make `path` readable and writable by its owner only.
pub(crate) fn restrict(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_read_from_the_audit_section() {
        let audit: AuditConfig = toml::from_str(
            "retention_days = 10\nretention_days_by_category = { terrorism = 2555, adult = 3 }",
        )
        .unwrap();
        assert_eq!(
            Retention::from_config(&audit),
            Retention {
                default_days: 10,
                by_category: BTreeMap::from([
                    ("adult".to_string(), 3),
                    ("terrorism".to_string(), 2555)
                ]),
            }
        );
        // A row in both categories is kept for the longer of the two.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000 * 86_400);
        let kept = Retention::from_config(&audit).expiry("adult,terrorism", now);
        assert_eq!(
            kept,
            crate::audit::before(now, Duration::from_secs(2555 * 86_400))
        );
    }

    #[test]
    fn a_database_of_another_layout_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, name TEXT);")
                .unwrap();
        }
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("old.sqlite") && err.contains("schema version 0"),
            "{err}"
        );
        // A new file gets the current layout, and opens again.
        let fresh = dir.path().join("new.sqlite");
        drop(Store::open(&fresh).unwrap());
        assert!(Store::open(&fresh).is_ok());
    }

    #[test]
    fn a_version_1_log_is_migrated_in_place_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(&format!("BEGIN; {SCHEMA} PRAGMA user_version = 1; COMMIT;"))
                .unwrap();
            c.execute(
                "INSERT INTO events (first_seen, last_seen, count, client_ip, grp, name, qtype, \
                 categories, locked, list, line, rule, response, outcome) VALUES \
                 ('2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z', 3, '10.0.0.9', 'pupils', \
                 'a.test', 'A', 'adult', 0, 'adult', 1, 'a.test', 'nxdomain', 'blocked')",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let version: i64 = store
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let count: i64 = store
            .conn()
            .query_row("SELECT count FROM events WHERE name = 'a.test'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(count, 3);
        for table in [
            "signins",
            "allow_changes",
            "alert_deliveries",
            "alert_cursor",
        ] {
            let n: i64 = store
                .conn()
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 0, "{table}");
        }
        drop(store);
        assert!(Store::open(&path).is_ok(), "a migrated log opens again");
    }
    /// A version 2 log (rows, a review) gets the read indexes and rollups
    /// in place: the rows are untouched, the chain still verifies, and the rollups count
    /// what the rows say.
    #[test]
    fn a_version_2_log_is_migrated_with_its_rollups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.sqlite");
        {
            let mut store = Store::open(&path).unwrap();
            let mut open = OpenRows::default();
            let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let batch: Vec<(Key, Pending)> = (0..30)
                .map(|i| {
                    entry(
                        &format!("n{i}.test"),
                        t0 + Duration::from_secs(i * 400),
                        1 + i,
                    )
                })
                .collect();
            store
                .write_batch(&batch, &mut open, WINDOW, t0, true)
                .unwrap();
            let c = store.conn();
            c.execute(
                "INSERT INTO reviews (event_id, at, by, outcome, note) \
                 VALUES (3, 'x', 'lead', 'incident', '')",
                [],
            )
            .unwrap();
            // Back to version 2: what the rows held before versions 3 and 4 existed.
            c.execute_batch(&format!(
                "{V12_UNDO} {V11_UNDO} {V10_UNDO} {V9_UNDO} {} {V6_UNDO} {V5_UNDO} {V4_UNDO} PRAGMA user_version = 3;",
                v7_undo()
            ))
            .unwrap();
            c.execute_batch(
                "DROP TABLE tally; DROP TABLE tally_who; DROP TABLE tally_name; \
                 DROP TABLE category_sets; DROP TABLE audit_meta; \
                 DROP TRIGGER reviews_mark; DROP TRIGGER events_tally_i; \
                 DROP TRIGGER events_tally_count; DROP TRIGGER events_tally_reviewed; \
                 DROP TRIGGER events_tally_gone; DROP TRIGGER events_tally_d; \
                 DROP INDEX events_live; DROP INDEX events_client; \
                 DROP INDEX events_device; DROP INDEX events_group; \
                 DROP INDEX events_categories; DROP INDEX events_unreviewed; \
                 DROP INDEX events_reviewed; \
                 ALTER TABLE events DROP COLUMN reviewed; \
                 CREATE INDEX events_first_seen ON events(first_seen); \
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let c = store.conn();
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let one = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(one("SELECT count(*) FROM events"), 30);
        assert_eq!(one("SELECT reviewed FROM events WHERE id = 3"), 1);
        assert_eq!(
            one("SELECT sum(blocks) FROM tally"),
            one("SELECT sum(count) FROM events WHERE purged = 0")
        );
        assert_eq!(one("SELECT sum(events) FROM tally"), 30);
        assert_eq!(one("SELECT sum(unreviewed) FROM tally"), 29);
        assert_eq!(
            one("SELECT sum(blocks) FROM tally_name"),
            one("SELECT sum(count) FROM events WHERE purged = 0")
        );
        assert!(matches!(
            store.verify(None, SystemTime::now()).unwrap(),
            Verification::Intact { rows: 30, .. }
        ));
        drop(store);
        assert!(Store::open(&path).is_ok(), "a migrated log opens again");
    }

    /// Takes a version 4 log back to version 3 (the schema of commit e7dcc2f).
    const V4_UNDO: &str = "DROP TABLE checkpoints; DROP INDEX signins_at;";
    /// Version 5's day rollup (its triggers are replaced again by the step).
    const V5_UNDO: &str = "DROP TABLE tally_day;";
    /// Version 6's busy names and the triggers that keep them.
    const V6_UNDO: &str = "DROP TRIGGER tally_name_hot_i; DROP TRIGGER tally_name_hot_u; \
         DROP TABLE tally_name_hot;";
    /// Takes a version 7 log back to version 6: one mark's busy list, from the rollup.
    fn v7_undo() -> String {
        format!(
            "DROP TRIGGER tally_name_busy_i; DROP TRIGGER tally_name_busy_u; \
             DROP TABLE tally_name_busy; {}",
            schema_v6()
        )
    }

    /// The (level, name) pairs listed as busy, in order.
    fn busy_levels(store: &Store) -> Vec<String> {
        column::<String>(
            store,
            "SELECT level || ' ' || name FROM tally_name_busy ORDER BY level, name",
        )
    }

    /// A version 5 log, and a version 6 log with one mark's list, get their busy names
    /// listed at every level from the rollup, and the triggers keep the lists from then on
    /// (a count crossing two marks at once is listed at both).
    #[test]
    fn a_version_5_or_6_log_gets_its_busy_names_at_every_level() {
        for (version, undo) in [
            (
                5,
                format!(
                    "{V12_UNDO} {V11_UNDO} {V10_UNDO} {V9_UNDO} {} {V6_UNDO}",
                    v7_undo()
                ),
            ),
            (
                6,
                format!("{V12_UNDO} {V11_UNDO} {V10_UNDO} {V9_UNDO} {}", v7_undo()),
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.sqlite");
            let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            {
                let mut store = Store::open(&path).unwrap();
                let batch: Vec<(Key, Pending)> = [10, 63, 64, 600, 5_000]
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| {
                        entry(&format!("n{i}.test"), t0 + Duration::from_secs(i as u64), n)
                    })
                    .collect();
                store
                    .write_batch(&batch, &mut OpenRows::default(), WINDOW, t0, false)
                    .unwrap();
                store
                    .conn()
                    .execute_batch(&format!("{undo} PRAGMA user_version = {version};"))
                    .unwrap();
            }
            let store = Store::open(&path).unwrap();
            let before = [
                "64 n2.test",
                "64 n3.test",
                "64 n4.test",
                "512 n3.test",
                "512 n4.test",
                "4096 n4.test",
            ];
            assert_eq!(busy_levels(&store), before, "from version {version}");
            let bump = |name: &str, by: i64| {
                store
                    .conn()
                    .execute(
                        "UPDATE events SET count = count + ?1 WHERE name = ?2",
                        params![by, name],
                    )
                    .unwrap();
            };
            bump("n1.test", 1);
            bump("n0.test", 600);
            bump("n2.test", 1);
            let mut after: Vec<&str> = before.to_vec();
            after.extend(["64 n0.test", "64 n1.test", "512 n0.test"]);
            after.sort_by_key(|e| {
                let (level, name) = e.split_once(' ').unwrap();
                (level.parse::<i64>().unwrap(), name.to_string())
            });
            assert_eq!(busy_levels(&store), after, "from version {version}");
        }
    }

    /// Takes a version 9 log back to version 8: no reviews from the fleet dashboard.
    const V12_UNDO: &str = "DROP TABLE selftest_runs; DROP TABLE unblock_requests;";
    const V11_UNDO: &str = "DROP TABLE second_factor_uses; DROP TABLE config_changes;";
    const V10_UNDO: &str = "DROP INDEX events_user; ALTER TABLE events DROP COLUMN mac; \
         ALTER TABLE events DROP COLUMN user_name; ALTER TABLE events DROP COLUMN sources;";
    const V9_UNDO: &str = "DROP INDEX reviews_central; ALTER TABLE reviews DROP COLUMN central_id;";

    /// Takes a version 8 log back to version 7: sign-ins keyed by a plain rowid.
    const V8_UNDO: &str = "CREATE TABLE signins_v7 (id INTEGER PRIMARY KEY, at TEXT NOT NULL, \
         user TEXT NOT NULL, client_ip TEXT NOT NULL, result TEXT NOT NULL); \
         INSERT INTO signins_v7 SELECT id, at, user, client_ip, result FROM signins; \
         DROP TABLE signins; ALTER TABLE signins_v7 RENAME TO signins; \
         CREATE INDEX signins_at ON signins(at); \
         CREATE TRIGGER signins_append_only_u BEFORE UPDATE ON signins \
         BEGIN SELECT RAISE(ABORT, 'sign-ins are append-only'); END;";

    /// Once every sign-in has been purged, the next one still gets a new id (the fleet's
    /// cursor on sign-in ids would skip a reused one), in a new log and in one migrated
    /// from version 7, whose sign-ins, index and append-only trigger are kept.
    #[test]
    fn sign_in_ids_are_never_reused_after_a_purge() {
        let sign_in = |store: &Store, at: &str| {
            store
                .conn()
                .execute(
                    "INSERT INTO signins (at, user, client_ip, result) \
                     VALUES (?1, 'lead', '10.0.0.1', 'ok')",
                    [at],
                )
                .unwrap();
            store.conn().last_insert_rowid()
        };
        for from_v7 in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.sqlite");
            {
                let store = Store::open(&path).unwrap();
                for day in 1..=3 {
                    sign_in(&store, &format!("2026-11-0{day}T09:00:00.000Z"));
                }
                if from_v7 {
                    store
                        .conn()
                        .execute_batch(&format!(
                            "{V12_UNDO} {V11_UNDO} {V10_UNDO} {V9_UNDO} {V8_UNDO} PRAGMA user_version = 7;"
                        ))
                        .unwrap();
                }
            }
            let store = Store::open(&path).unwrap();
            assert_eq!(column::<i64>(&store, "SELECT id FROM signins"), [1, 2, 3]);
            let change = store
                .conn()
                .execute("UPDATE signins SET user = 'x' WHERE id = 1", []);
            assert!(change.is_err(), "still append-only (from v7: {from_v7})");
            let plan = column::<String>(
                &store,
                "SELECT name FROM sqlite_master WHERE tbl_name = 'signins' AND type = 'index' \
                 AND name = 'signins_at'",
            );
            assert_eq!(plan, ["signins_at"]);
            // What the retention purge does, to every sign-in.
            store.conn().execute("DELETE FROM signins", []).unwrap();
            assert_eq!(
                sign_in(&store, "2026-12-01T09:00:00.000Z"),
                4,
                "from v7: {from_v7}"
            );
        }
    }

    /// A version 3 log (rows sealed, one purged, a sign-in) gets the checkpoints and
    /// the sign-ins' index in place: its rows and chain are untouched, it verifies, and
    /// its first verify records a checkpoint.
    #[test]
    fn a_version_3_log_is_migrated_in_place_keeps_its_rows_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.sqlite");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let before: Vec<(i64, String)> = {
            let mut store = Store::open(&path).unwrap();
            let batch: Vec<(Key, Pending)> = (0..20)
                .map(|i| entry(&format!("m{i}.test"), t0 + Duration::from_secs(i * 90), 1))
                .collect();
            store
                .write_batch(&batch, &mut OpenRows::default(), WINDOW, t0, true)
                .unwrap();
            let policy = Retention {
                default_days: 1,
                by_category: BTreeMap::new(),
            };
            // One day after the first rows: the first 2 rows (0 s, 90 s) are due.
            let now = t0 + Duration::from_secs(86_400 + 100);
            assert_eq!(store.purge(now, &policy).unwrap(), 2);
            store
                .conn()
                .execute_batch(&format!(
                    "INSERT INTO signins (at, user, client_ip, result) \
                     VALUES ('2026-01-01T00:00:00Z', 'lead', '10.0.0.1', 'ok'); \
                     {V12_UNDO} {V11_UNDO} {V10_UNDO} {V9_UNDO} {} {V6_UNDO} {V5_UNDO} {V4_UNDO} PRAGMA user_version = 3;",
                    v7_undo()
                ))
                .unwrap();
            column(&store, "SELECT seq FROM events ORDER BY seq")
                .into_iter()
                .zip(column::<String>(
                    &store,
                    "SELECT hash FROM events ORDER BY seq",
                ))
                .collect()
        };
        let store = Store::open(&path).unwrap();
        let c = store.conn();
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let after: Vec<(i64, String)> = column(&store, "SELECT seq FROM events ORDER BY seq")
            .into_iter()
            .zip(column::<String>(
                &store,
                "SELECT hash FROM events ORDER BY seq",
            ))
            .collect();
        assert_eq!(after, before, "every row and hash kept");
        assert_eq!(column::<i64>(&store, "SELECT count(*) FROM signins"), [1]);
        assert_eq!(
            column::<i64>(&store, "SELECT count(*) FROM events WHERE purged = 1"),
            [2]
        );
        let report = crate::audit::checkpoint::verify(
            &store,
            crate::audit::checkpoint::Mode::Incremental,
            None,
            t0,
        )
        .unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(
            report.result,
            Verification::Intact {
                rows: 20,
                purged: 2,
                open: 0
            }
        );
        assert_eq!(report.recorded, Some(20));
        drop(store);
        assert!(Store::open(&path).is_ok(), "a migrated log opens again");
    }

    /// Who asked (MAC, user, where they came from) is hashed into the chain when it is
    /// there: an edit to it breaks the chain; a row without it hashes as rows did
    /// before the columns existed (the older releases' chains still verify).
    #[test]
    fn identity_is_in_the_chain_and_an_edit_to_it_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("a.sqlite")).unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (key, mut with) = entry("who.test", t0, 1);
        with.event.identity = super::super::Identity {
            mac: Some("aa:bb:cc:dd:ee:01".into()),
            user: Some("pupil7".into()),
            sources: Some("mac: query; user: radius; group: user".into()),
        };
        let batch = vec![(key, with), entry("plain.test", t0, 1)];
        store
            .write_batch(&batch, &mut OpenRows::default(), WINDOW, t0, true)
            .unwrap();
        let intact = |store: &Store| {
            matches!(
                store.verify(None, SystemTime::now()).unwrap(),
                Verification::Intact { rows: 2, .. }
            )
        };
        assert!(intact(&store));
        // The row without identity hashes exactly as the five personal columns did.
        let (salt, client, name): (String, String, String) = store
            .conn()
            .query_row(
                "SELECT salt, client_ip, name FROM events WHERE name = 'plain.test'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let old = format!("{salt}\u{1f}{client}\u{1f}\u{0}\u{1f}{name}\u{1f}\u{0}");
        let digest = super::super::personal::Personal {
            salt: Some(&salt),
            client_ip: &client,
            device: None,
            name: &name,
            cname: None,
            mac: None,
            user: None,
            sources: None,
        }
        .digest();
        assert_eq!(digest, hex::encode(Sha256::digest(old.as_bytes())));
        for edit in [
            "UPDATE events SET user_name = 'someone-else' WHERE name = 'who.test'",
            "UPDATE events SET mac = NULL WHERE name = 'who.test'",
            "UPDATE events SET sources = 'group: default' WHERE name = 'who.test'",
        ] {
            let saved: (Option<String>, Option<String>, Option<String>) = store
                .conn()
                .query_row(
                    "SELECT mac, user_name, sources FROM events WHERE name = 'who.test'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap();
            store.conn().execute(edit, []).unwrap();
            assert!(!intact(&store), "{edit} goes unnoticed");
            store
                .conn()
                .execute(
                    "UPDATE events SET mac = ?1, user_name = ?2, sources = ?3 WHERE name = 'who.test'",
                    params![saved.0, saved.1, saved.2],
                )
                .unwrap();
            assert!(intact(&store));
        }
    }

    fn entry(name: &str, first: SystemTime, count: u64) -> (Key, Pending) {
        let client = std::net::IpAddr::from([10, 0, 0, 3]);
        let event = super::super::Event {
            time: first,
            client,
            device: None,
            group: "default".into(),
            name: name.into(),
            qtype: "A".into(),
            categories: "terrorism".into(),
            locked: true,
            list: "ctiru".into(),
            line: 1,
            rule: name.into(),
            response: "nxdomain".into(),
            cname: None,
            outcome: super::super::Outcome::Blocked,
            identity: Default::default(),
        };
        let key = Key::of(&event);
        let pending = Pending {
            count,
            first,
            last: first,
            event,
        };
        (key, pending)
    }

    fn column<T: rusqlite::types::FromSql>(store: &Store, sql: &str) -> Vec<T> {
        let mut stmt = store.conn().prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    const WINDOW: Duration = Duration::from_secs(60);

    proptest::proptest! {
        // Each case creates a database: a few dozen cases cover the orders.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// Row ids follow the time of first sighting, within a batch and across
        /// batches: alerts read new rows by id and alert on a device's first block.
        #[test]
        fn row_ids_follow_first_sighting(
            batches in proptest::collection::vec(
                proptest::collection::btree_map(0u16..500, 0u32..1000, 1..40), 1..4),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(&dir.path().join("a.sqlite")).unwrap();
            let mut open = OpenRows::default();
            let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            for (round, names) in batches.iter().enumerate() {
                // Each batch's sightings are later than the previous batch's.
                let start = base + Duration::from_secs(round as u64);
                let batch: Vec<(Key, Pending)> = names
                    .iter()
                    .map(|(name, ms)| {
                        let first = start + Duration::from_millis(u64::from(*ms));
                        entry(&format!("r{round}-n{name}.test"), first, 1)
                    })
                    .collect();
                store.write_batch(&batch, &mut open, WINDOW, start, false).unwrap();
            }
            let firsts: Vec<String> = column(&store, "SELECT first_seen FROM events ORDER BY id");
            proptest::prop_assert!(firsts.windows(2).all(|w| w[0] <= w[1]), "{firsts:?}");
            let total: usize = batches.iter().map(|b| b.len()).sum();
            proptest::prop_assert_eq!(firsts.len(), total);
        }
    }

    #[test]
    fn a_repeat_after_the_window_opens_a_new_row_and_seals_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("a.sqlite")).unwrap();
        let mut open = OpenRows::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let batch = [entry("x.test", t0, 2)];
        store
            .write_batch(&batch, &mut open, WINDOW, t0, false)
            .unwrap();
        let later = t0 + WINDOW + Duration::from_secs(1);
        let batch = [entry("x.test", later, 3)];
        let stats = store
            .write_batch(&batch, &mut open, WINDOW, later, false)
            .unwrap();
        assert_eq!((stats.inserted, stats.updated, stats.sealed), (1, 0, 1));
        let seqs: Vec<Option<i64>> = column(&store, "SELECT seq FROM events ORDER BY id");
        assert_eq!(
            seqs,
            [Some(1), None],
            "the old row is sealed, the new one open"
        );
        assert_eq!(open.len(), 1);
        store
            .write_batch(&[], &mut open, WINDOW, later, true)
            .unwrap();
        assert!(open.is_empty());
        assert!(matches!(
            store.verify(None, later).unwrap(),
            Verification::Intact {
                rows: 2,
                open: 0,
                ..
            }
        ));
        let counts: Vec<i64> = column(&store, "SELECT count FROM events ORDER BY id");
        assert_eq!(counts, [2, 3]);
    }

    /// An open row deleted behind the writer's back: the next repeat opens a new row
    /// instead of an update that changes nothing, and sealing does not trip on it.
    #[test]
    fn a_vanished_open_row_gets_a_new_row_not_a_lost_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("a.sqlite")).unwrap();
        let mut open = OpenRows::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        store
            .write_batch(&[entry("y.test", t0, 1)], &mut open, WINDOW, t0, false)
            .unwrap();
        store.conn().execute("DELETE FROM events", []).unwrap();
        let t1 = t0 + Duration::from_secs(1);
        let stats = store
            .write_batch(&[entry("y.test", t1, 4)], &mut open, WINDOW, t1, true)
            .unwrap();
        assert_eq!((stats.inserted, stats.updated, stats.sealed), (1, 0, 1));
        let counts: Vec<i64> = column(&store, "SELECT count FROM events");
        assert_eq!(counts, [4]);
        assert!(open.is_empty());
    }
}
