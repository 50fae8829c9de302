//! Reading the audit log for the e-safety lead: filtered event lists with their review
//! state, the patterns-and-trends summary, rows for export, and review records.
//!
//! Purged rows (past retention) are never shown: only their chain entry remains.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use chrono_tz::Tz;
use rusqlite::{params, params_from_iter, Row};

use super::rfc3339;
use super::store::{AuditError, Store};
use super::{select, tally};

pub use super::select::Filter;

/// Parse `7d`, `12h`, `30m` (that long before `now`), `2026-11-01` (midnight UTC) or a
/// full RFC 3339 time, into RFC 3339.
pub fn parse_time(text: &str, now: SystemTime) -> Result<String, AuditError> {
    let bad = || {
        AuditError::Invalid(format!(
            "bad time {text:?}: use a duration like 7d or 12h, a date like 2026-11-01, \
             or an RFC 3339 time"
        ))
    };
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(rfc3339(super::before(now, ago)));
    }
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    humantime::parse_rfc3339_weak(&full)
        .map(rfc3339)
        .map_err(|_| bad())
}

/// The latest review of an event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReviewState {
    pub outcome: String,
    pub by: String,
    pub at: String,
    pub note: String,
}

/// One audit row as the lead sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventRow {
    pub id: i64,
    /// The site that logged it: on the trust's fleet dashboard; `None` on a site's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    pub seq: Option<i64>,
    pub first_seen: String,
    pub last_seen: String,
    pub count: i64,
    pub client_ip: String,
    pub device: Option<String>,
    /// The device's MAC, the signed-in user, and where they came from, when known.
    pub mac: Option<String>,
    pub user: Option<String>,
    /// Named as its CSV column, so `list --json` and the export agree.
    #[serde(rename = "identity_sources")]
    pub sources: Option<String>,
    pub group: String,
    pub name: String,
    pub qtype: String,
    pub categories: String,
    pub locked: bool,
    pub list: String,
    pub line: i64,
    pub rule: String,
    pub response: String,
    pub cname: Option<String>,
    pub outcome: String,
    /// Chain hash (absent while the row's coalescing window is still open).
    pub hash: Option<String>,
    /// The previous row's chain hash, so an exported row can be checked on its own.
    pub prev_hash: Option<String>,
    /// The row's salt: with the personal columns it gives the digest in the chain.
    pub salt: Option<String>,
    pub review: Option<ReviewState>,
}

/// The columns of [`EventRow`] in CSV order.
pub const CSV_HEADER: &str = "id,seq,first_seen,last_seen,count,client_ip,device,group,name,qtype,\
categories,locked,list,line,rule,response,cname,outcome,hash,prev_hash,salt,review_outcome,review_by,review_at,review_note,\
mac,user,identity_sources";

impl EventRow {
    /// The row as one CSV line (RFC 4180 quoting).
    pub fn csv(&self) -> String {
        let review = self.review.as_ref();
        let fields: Vec<String> = vec![
            self.id.to_string(),
            self.seq.map(|s| s.to_string()).unwrap_or_default(),
            self.first_seen.clone(),
            self.last_seen.clone(),
            self.count.to_string(),
            self.client_ip.clone(),
            self.device.clone().unwrap_or_default(),
            self.group.clone(),
            self.name.clone(),
            self.qtype.clone(),
            self.categories.clone(),
            self.locked.to_string(),
            self.list.clone(),
            self.line.to_string(),
            self.rule.clone(),
            self.response.clone(),
            self.cname.clone().unwrap_or_default(),
            self.outcome.clone(),
            self.hash.clone().unwrap_or_default(),
            self.prev_hash.clone().unwrap_or_default(),
            self.salt.clone().unwrap_or_default(),
            review.map(|r| r.outcome.clone()).unwrap_or_default(),
            review.map(|r| r.by.clone()).unwrap_or_default(),
            review.map(|r| r.at.clone()).unwrap_or_default(),
            review.map(|r| r.note.clone()).unwrap_or_default(),
            self.mac.clone().unwrap_or_default(),
            self.user.clone().unwrap_or_default(),
            self.sources.clone().unwrap_or_default(),
        ];
        fields
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",")
    }
}

pub(crate) fn csv_field(field: &str) -> String {
    // A spreadsheet would run a field starting with these as a formula: a rule text or
    // review note must never become one in the lead's incident log (CSV injection).
    if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        return format!("\"'{}\"", field.replace('"', "\"\""));
    }
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

const SELECT_EVENTS: &str = "SELECT e.id, e.seq, e.first_seen, e.last_seen, e.count, e.client_ip, \
    e.device, e.grp, e.name, e.qtype, e.categories, e.locked, e.list, e.line, e.rule, e.response, \
    e.cname, e.outcome, e.hash, r.outcome, r.by, r.at, r.note, e.salt, \
    (SELECT p.hash FROM events p WHERE p.seq = e.seq - 1), e.mac, e.user_name, e.sources \
    FROM events e LEFT JOIN reviews r ON r.id = \
      (SELECT max(id) FROM reviews WHERE event_id = e.id)";

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<EventRow> {
    let review_outcome: Option<String> = row.get(19)?;
    Ok(EventRow {
        id: row.get(0)?,
        site: None,
        seq: row.get(1)?,
        first_seen: row.get(2)?,
        last_seen: row.get(3)?,
        count: row.get(4)?,
        client_ip: row.get(5)?,
        device: row.get(6)?,
        mac: row.get(25)?,
        user: row.get(26)?,
        sources: row.get(27)?,
        group: row.get(7)?,
        name: row.get(8)?,
        qtype: row.get(9)?,
        categories: row.get(10)?,
        locked: row.get(11)?,
        list: row.get(12)?,
        line: row.get(13)?,
        rule: row.get(14)?,
        response: row.get(15)?,
        cname: row.get(16)?,
        outcome: row.get(17)?,
        hash: row.get(18)?,
        salt: row.get(23)?,
        prev_hash: match row.get::<_, Option<i64>>(1)? {
            Some(1) => Some("0".repeat(64)),
            _ => row.get(24)?,
        },
        review: match review_outcome {
            Some(outcome) => Some(ReviewState {
                outcome,
                by: row.get(20)?,
                at: row.get(21)?,
                note: row.get(22)?,
            }),
            None => None,
        },
    })
}

/// Events matching `filter`, newest first: at most `filter.limit` of them (all without
/// one), after `filter.before`. Reads the page's ids from the filter's index ranges, then
/// each row by id, so a page costs its own rows, not the table's.
pub fn list(store: &Store, filter: &Filter) -> Result<Vec<EventRow>, AuditError> {
    let mut rows = Vec::new();
    each(store, filter, |row| {
        rows.push(row);
        Ok(())
    })?;
    Ok(rows)
}

/// Rows read per statement when listing without a limit (an export).
const CHUNK: u32 = 500;

/// Call `f` on each event matching `filter`, newest first, holding at most [`CHUNK`]
/// rows at a time however many match: the export's path. Stops at `f`'s first error.
pub fn each(
    store: &Store,
    filter: &Filter,
    mut f: impl FnMut(EventRow) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let mut next = filter.clone();
    let mut left = filter.limit;
    loop {
        let take = left.map_or(CHUNK, |l| l.min(CHUNK));
        if take == 0 {
            return Ok(());
        }
        let rows = page(store, &next, take)?;
        let more = rows.len() as u32 == take;
        next.before = rows.last().map(|r| (r.first_seen.clone(), r.id));
        for row in rows {
            f(row)?;
        }
        if !more {
            return Ok(());
        }
        left = left.map(|l| l - take);
    }
}

/// The next `limit` events of `filter`, newest first: one statement, its ids from the
/// filter's index ranges, its rows by id (each with its latest review and the previous
/// row's hash). The rows are read before any is handed on, so no statement stays open
/// while an export waits for its client.
fn page(store: &Store, filter: &Filter, limit: u32) -> Result<Vec<EventRow>, AuditError> {
    let span = select::Span::default();
    let columns = "e.id AS id, e.first_seen AS first_seen";
    let Some(ids) = select::rows(store, filter, &span, None, columns, Some(limit))? else {
        return Ok(Vec::new());
    };
    let sql = format!(
        "{SELECT_EVENTS} WHERE e.id IN (SELECT id FROM ({})) \
         ORDER BY e.first_seen DESC, e.id DESC",
        ids.sql
    );
    let err = |e| store.wrap(e);
    let mut stmt = store.conn().prepare(&sql).map_err(err)?;
    let rows = stmt
        .query_map(params_from_iter(ids.values), event_from_row)
        .map_err(err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
}

/// How many events match `filter` (ignoring its limit and cursor): for paging, and what
/// an export will write. From the rollups where they answer ([`tally::count`]).
pub fn count(store: &Store, filter: &Filter) -> Result<i64, AuditError> {
    let whole = Filter {
        before: None,
        limit: None,
        ..filter.clone()
    };
    tally::count(store, &whole)
}

/// A page's count of matching events: exact, or "more than" a bound past which
/// counting would read more rows than showing a page should.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    Exact(i64),
    MoreThan(i64),
}

impl std::fmt::Display for Total {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Total::Exact(n) => write!(f, "{n}"),
            Total::MoreThan(n) => write!(f, "more than {n}"),
        }
    }
}

/// Rows a page's total reads at most from `events` when the rollups do not answer.
pub const PAGE_COUNT_CAP: u32 = 10_000;

/// How many events match `filter`, for a page: exact from the rollups where they
/// answer, otherwise counted up to [`PAGE_COUNT_CAP`] (as search engines and log tools
/// do: "more than 10000").
pub fn page_total(store: &Store, filter: &Filter) -> Result<Total, AuditError> {
    let whole = Filter {
        before: None,
        limit: None,
        ..filter.clone()
    };
    Ok(match tally::count_up_to(store, &whole, PAGE_COUNT_CAP)? {
        (n, true) => Total::Exact(n),
        (_, false) => Total::MoreThan(i64::from(PAGE_COUNT_CAP)),
    })
}

/// Blocks per (day in `tz`, category) since `since` (RFC 3339), for the overview's chart.
/// A row with several categories counts under each.
pub(crate) fn daily_by_category(
    store: &Store,
    since: &str,
    tz: Tz,
) -> Result<Vec<(String, String, i64)>, AuditError> {
    let filter = Filter {
        since: Some(since.to_string()),
        ..Filter::default()
    };
    // Summed per (local day, category set) first, with a key allocated only when new:
    // a month is ~30,000 rollup rows but ~30 days of a few dozen sets.
    let mut per_set: HashMap<String, HashMap<String, i64>> = HashMap::new();
    let mut days = LocalDays::new(tz);
    tally::each_block(store, &filter, |at, categories, _group, n| {
        let day = days.of(at);
        let sets = match per_set.get_mut(day) {
            Some(sets) => sets,
            None => per_set.entry(day.to_string()).or_default(),
        };
        match sets.get_mut(categories) {
            Some(total) => *total += n,
            None => {
                sets.insert(categories.to_string(), n);
            }
        }
    })?;
    let mut out: std::collections::BTreeMap<(String, String), i64> = Default::default();
    for (day, sets) in per_set {
        for (set, n) in sets {
            // A row with several categories counts once under each of them.
            for category in set.split(',').filter(|c| !c.is_empty()) {
                *out.entry((day.clone(), category.to_string())).or_default() += n;
            }
        }
    }
    Ok(out
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|((d, c), n)| (d, c, n))
        .collect())
}

/// Blocks matching `filter` per day in `tz`, oldest first: [`Summary::by_day`] (which
/// keeps UTC days, for machines) as a person in that zone counts days.
pub(crate) fn by_local_day(
    store: &Store,
    filter: &Filter,
    tz: Tz,
) -> Result<Vec<(String, i64)>, AuditError> {
    let mut days: std::collections::BTreeMap<String, i64> = Default::default();
    let mut local = LocalDays::new(tz);
    for (at, n) in tally::blocks_by_time(store, filter)? {
        *days.entry(local.of(&at).to_string()).or_default() += n;
    }
    Ok(days.into_iter().filter(|(_, n)| *n != 0).collect())
}

/// [`local_day`] remembered for the last UTC minute asked: the rollups' rows come in
/// time order, a month's ~30,000 of them sharing ~3,000 quarter hours, and reading and
/// formatting each time was most of a month's summary.
struct LocalDays {
    tz: Tz,
    minute: String,
    day: String,
}

impl LocalDays {
    fn new(tz: Tz) -> LocalDays {
        LocalDays {
            tz,
            minute: String::new(),
            day: String::new(),
        }
    }

    fn of(&mut self, minute: &str) -> &str {
        if self.minute != minute {
            self.day = local_day(minute, self.tz);
            self.minute.clear();
            self.minute.push_str(minute);
        }
        &self.day
    }
}

/// The day in `tz` of the UTC minute `2026-07-01T20:30`; the UTC day if it cannot be read.
fn local_day(minute: &str, tz: Tz) -> String {
    match chrono::NaiveDateTime::parse_from_str(minute, "%Y-%m-%dT%H:%M") {
        Ok(t) => t
            .and_utc()
            .with_timezone(&tz)
            .format("%Y-%m-%d")
            .to_string(),
        Err(_) => minute.get(..10).unwrap_or(minute).to_string(),
    }
}

/// Every review of event `id`, oldest first.
pub(crate) fn reviews_of(store: &Store, id: i64) -> Result<Vec<ReviewState>, AuditError> {
    let err = |e| store.wrap(e);
    let mut stmt = store
        .conn()
        .prepare("SELECT outcome, by, at, note FROM reviews WHERE event_id = ?1 ORDER BY id")
        .map_err(err)?;
    let rows = stmt
        .query_map([id], |r| {
            Ok(ReviewState {
                outcome: r.get(0)?,
                by: r.get(1)?,
                at: r.get(2)?,
                note: r.get(3)?,
            })
        })
        .map_err(err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
}

/// One event by id.
pub fn get(store: &Store, id: i64) -> Result<EventRow, AuditError> {
    let sql = format!("{SELECT_EVENTS} WHERE e.id = ?1 AND e.purged = 0");
    store
        .conn()
        .query_row(&sql, [id], event_from_row)
        .map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => AuditError::NoSuchEvent(id),
            other => store.wrap(other),
        })
}

/// Blocks counted by category, day, group, device and name: the trends view.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub total: i64,
    pub by_category: Vec<(String, i64)>,
    /// Per UTC day (see [`by_local_day`] for a reader's days).
    pub by_day: Vec<(String, i64)>,
    pub by_group: Vec<(String, i64)>,
    pub top_devices: Vec<(String, i64)>,
    pub top_names: Vec<(String, i64)>,
}

/// How many entries the "top" lists of a summary hold.
const TOP: usize = 10;

/// Summarise the blocks matching `filter`.
pub fn summary(store: &Store, filter: &Filter) -> Result<Summary, AuditError> {
    counts(store, filter, true)
}

/// [`summary`] without the top names (the overview does not show them, and they are its
/// costliest part).
pub(crate) fn summary_without_names(store: &Store, filter: &Filter) -> Result<Summary, AuditError> {
    counts(store, filter, false)
}

fn counts(store: &Store, filter: &Filter, names: bool) -> Result<Summary, AuditError> {
    use std::collections::BTreeMap;
    let (mut total, mut by_category, mut by_day, mut by_group) = (
        0,
        BTreeMap::<String, i64>::new(),
        BTreeMap::<String, i64>::new(),
        BTreeMap::<String, i64>::new(),
    );
    tally::each_day_block(store, filter, |at, categories, group, n| {
        total += n;
        // A row with several categories counts once under each of them.
        for c in categories.split(',').filter(|c| !c.is_empty()) {
            *by_category.entry(c.to_string()).or_default() += n;
        }
        *by_day
            .entry(at.get(..10).unwrap_or(at).to_string())
            .or_default() += n;
        *by_group.entry(group.to_string()).or_default() += n;
    })?;
    let ranked = |map: BTreeMap<String, i64>| {
        let mut v: Vec<(String, i64)> = map.into_iter().filter(|(_, n)| *n != 0).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    };
    let tops = tally::tops(store, filter, TOP, names)?;
    Ok(Summary {
        total,
        by_category: ranked(by_category),
        by_day: by_day.into_iter().filter(|(_, n)| *n != 0).collect(),
        by_group: ranked(by_group),
        top_devices: tops.devices,
        top_names: tops.names,
    })
}

/// The outcomes a review can record.
pub(crate) const OUTCOMES: [&str; 3] = ["incident", "false-positive", "no-action"];

/// Why a review with `outcome` and `note` cannot be recorded, if it cannot (the same
/// check on a site's log and in the trust's central store).
pub(crate) fn check_review(outcome: &str, note: &str) -> Result<(), AuditError> {
    if !OUTCOMES.contains(&outcome) {
        return Err(AuditError::Invalid(format!(
            "unknown outcome {outcome:?}: use one of {}",
            OUTCOMES.join(", ")
        )));
    }
    // Line breaks and tabs are a note's own; any other control character is not text a
    // person meant (a NUL cannot even be stored centrally), so it is refused, named.
    if let Some(c) = note
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(AuditError::Invalid(format!(
            "a review note cannot hold the control character U+{:04X}",
            u32::from(c)
        )));
    }
    Ok(())
}

/// Append a review record to event `id`. Returns the review's id.
pub(crate) fn add_review(
    store: &Store,
    id: i64,
    outcome: &str,
    note: &str,
    by: &str,
    now: SystemTime,
) -> Result<i64, AuditError> {
    check_review(outcome, note)?;
    get(store, id)?; // exists and not purged
    store
        .conn()
        .execute(
            "INSERT INTO reviews (event_id, at, by, outcome, note) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, rfc3339(now), by, outcome, note],
        )
        .map_err(|e| store.wrap(e))?;
    Ok(store.conn().last_insert_rowid())
}

/// Default `--since` for summaries.
pub(crate) const SUMMARY_DEFAULT_SINCE: Duration = Duration::from_secs(30 * 86_400);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times() {
        let now = humantime::parse_rfc3339("2026-11-22T10:00:00Z").unwrap();
        assert_eq!(parse_time("7d", now).unwrap(), "2026-11-15T10:00:00.000Z");
        assert_eq!(
            parse_time("2026-11-01", now).unwrap(),
            "2026-11-01T00:00:00.000Z"
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("2026-13-01", now).is_err());
    }

    /// A note keeps its line breaks and tabs; any other control character is refused,
    /// named, and nothing is recorded.
    #[test]
    fn a_review_note_cannot_hold_a_control_character() {
        let (_dir, store) = store_with(&[("2026-11-01T10:00:00.000Z", "adult", 1)]);
        let now = SystemTime::now();
        add_review(
            &store,
            1,
            "incident",
            "told the DSL\r\n\tat 10:05",
            "lead",
            now,
        )
        .expect("a note with line breaks");
        for bad in [
            "seen\0by the DSL",
            "bell\u{7}",
            "esc\u{1b}[31m",
            "next\u{85}line",
        ] {
            let err = add_review(&store, 1, "incident", bad, "lead", now).unwrap_err();
            assert!(
                err.to_string().contains("control character U+"),
                "{bad:?}: {err}"
            );
        }
        assert_eq!(reviews_of(&store, 1).unwrap().len(), 1);
    }

    /// A store holding blocked rows of (first seen, categories, count).
    fn store_with(rows: &[(&str, &str, i64)]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("audit.sqlite")).unwrap();
        for (at, categories, count) in rows {
            store
                .conn()
                .execute(
                    "INSERT INTO events (first_seen, last_seen, count, client_ip, grp, name, \
                     qtype, categories, locked, list, line, rule, response, outcome) \
                     VALUES (?1, ?1, ?2, '10.0.0.1', 'g', 'n.test', 'A', ?3, 0, 'l', 1, 'r', \
                     'nxdomain', 'blocked')",
                    params![at, count, categories],
                )
                .unwrap();
        }
        (dir, store)
    }

    #[test]
    fn days_are_counted_in_the_zone_asked_for() {
        let (_dir, store) = store_with(&[
            ("2026-07-01T17:00:00.000Z", "adult,gambling", 1),
            ("2026-07-01T20:00:00.000Z", "adult", 2),
            ("2026-07-02T01:00:00.000Z", "gambling", 4),
        ]);
        let all = Filter::default();
        let owned = |v: &[(&str, i64)]| -> Vec<(String, i64)> {
            v.iter().map(|(d, n)| (d.to_string(), *n)).collect()
        };
        // Kolkata (+05:30): 22:30 on the 1st, then 01:30 and 06:30 on the 2nd.
        let kolkata = chrono_tz::Asia::Kolkata;
        assert_eq!(
            by_local_day(&store, &all, kolkata).unwrap(),
            owned(&[("2026-07-01", 1), ("2026-07-02", 6)])
        );
        // New York (-04:00): all three on the 1st.
        assert_eq!(
            by_local_day(&store, &all, chrono_tz::America::New_York).unwrap(),
            owned(&[("2026-07-01", 7)])
        );
        // The summary (and its JSON) keeps UTC days.
        let utc = owned(&[("2026-07-01", 3), ("2026-07-02", 4)]);
        assert_eq!(summary(&store, &all).unwrap().by_day, utc);
        assert_eq!(by_local_day(&store, &all, chrono_tz::UTC).unwrap(), utc);
        let chart = daily_by_category(&store, "2026-06-01T00:00:00.000Z", kolkata).unwrap();
        let chart: Vec<(&str, &str, i64)> = chart
            .iter()
            .map(|(d, c, n)| (d.as_str(), c.as_str(), *n))
            .collect();
        assert_eq!(
            chart,
            [
                ("2026-07-01", "adult", 1),
                ("2026-07-01", "gambling", 1),
                ("2026-07-02", "adult", 2),
                ("2026-07-02", "gambling", 4),
            ]
        );
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-1"), "\"'-1\"");
    }
}
