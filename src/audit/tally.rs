//! Counting the lead's blocks without reading every row: whole UTC quarter hours (or days,
//! for the top devices and names) come from the rollup tables the store's triggers keep
//! (`tally`, `tally_who`, `tally_name`, see `store::SCHEMA_V3`); only the partial buckets
//! at the ends of a time range, and filters the rollups do not split by (a device, a
//! review state for blocks), are counted from `events`, through the index ranges of
//! [`super::select`]. The top names of whole days come from the busy-name list
//! ([`super::busy_names`]) wherever it proves the ranking.

/// Totals keyed by a device or name (keys from the log, so a seeded hasher).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use chrono::{DateTime, Timelike, Utc};
use rusqlite::params_from_iter;
use rusqlite::types::Value;

use super::busy_names;
use super::select::{self, Filter, Span};
use super::store::{AuditError, Store};

/// Only blocked rows count as blocks.
const BLOCKED: &str = "e.outcome = 'blocked'";

/// A tallied range split into whole buckets and the partial ends read from `events`.
struct Split {
    /// Whole buckets: `bucket >= from` and `bucket < to` (bucket texts).
    from: Option<String>,
    to: Option<String>,
    /// The partial ends, as `first_seen` spans (with the filter's own bounds).
    ends: Vec<Span>,
}

/// How a time is cut into buckets.
#[derive(Clone, Copy)]
enum Grain {
    Quarter,
    Day,
}

impl Grain {
    /// The bucket holding `t`, and whether `t` is its start.
    fn floor(self, t: DateTime<Utc>) -> (DateTime<Utc>, bool) {
        let day = t
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc();
        let start = match self {
            Grain::Day => day,
            Grain::Quarter => {
                let minutes = (t.hour() * 60 + t.minute()) / 15 * 15;
                day + chrono::Duration::minutes(i64::from(minutes))
            }
        };
        (start, start == t)
    }

    fn next(self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Grain::Day => t + chrono::Duration::days(1),
            Grain::Quarter => t + chrono::Duration::minutes(15),
        }
    }

    fn label(self, t: DateTime<Utc>) -> String {
        match self {
            Grain::Day => t.format("%Y-%m-%d").to_string(),
            Grain::Quarter => t.format("%Y-%m-%dT%H:%M").to_string(),
        }
    }
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Cut `filter`'s time range into whole `grain` buckets and partial ends. `None` when the
/// range cannot be cut (a time that does not read, or no whole bucket inside it).
fn split(filter: &Filter, grain: Grain) -> Option<Split> {
    let mut split = Split {
        from: None,
        to: None,
        ends: Vec::new(),
    };
    let mut first_whole = None;
    if let Some(since) = &filter.since {
        let (start, exact) = grain.floor(parse(since)?);
        let whole = if exact { start } else { grain.next(start) };
        split.from = Some(grain.label(whole));
        split.ends.push(Span {
            from: None,
            to: Some(super::rfc3339(whole.into())),
        });
        first_whole = Some(whole);
    }
    if let Some(until) = &filter.until {
        let (end, _) = grain.floor(parse(until)?);
        if first_whole.is_some_and(|w| end <= w) {
            return None;
        }
        split.to = Some(grain.label(end));
        split.ends.push(Span {
            from: Some(super::rfc3339(end.into())),
            to: None,
        });
    }
    Some(split)
}

/// Whether the rollups can answer for `filter`'s rows (they are split by time, outcome,
/// group and category set, and `tally` by review state for row counts only).
fn tallied(filter: &Filter, review_split: bool) -> bool {
    filter.client.is_none()
        && filter.user.is_none()
        && filter.before.is_none()
        && (review_split || !(filter.unreviewed || filter.reviewed))
}

/// Whole buckets of a range, read from a rollup: `bucket >= from` and `bucket < to`.
struct Whole {
    table: &'static str,
    from: Option<String>,
    to: Option<String>,
}

/// `filter`'s time range cut into whole UTC days (from `tally_day`), the whole quarter
/// hours either side of them (from `tally`), and the partial quarter hours at its ends
/// (spans of `events`). `None` when the range has no whole quarter hour, or a time does
/// not read: then it is all read from `events`.
fn pieces(filter: &Filter) -> Option<(Vec<Whole>, Vec<Span>)> {
    let quarters = split(filter, Grain::Quarter)?;
    let first_day = match &filter.since {
        Some(since) => {
            let (day, exact) = Grain::Day.floor(parse(since)?);
            Some(if exact { day } else { Grain::Day.next(day) })
        }
        None => None,
    };
    let last_day = match &filter.until {
        Some(until) => Some(Grain::Day.floor(parse(until)?).0),
        None => None,
    };
    let quarter = |t| Some(Grain::Quarter.label(t));
    let whole = match (first_day, last_day) {
        (Some(a), Some(b)) if a >= b => vec![Whole {
            table: "tally",
            from: quarters.from,
            to: quarters.to,
        }],
        _ => {
            let mut whole = vec![Whole {
                table: "tally_day",
                from: first_day.map(|d| Grain::Day.label(d)),
                to: last_day.map(|d| Grain::Day.label(d)),
            }];
            if let Some(a) = first_day {
                whole.push(Whole {
                    table: "tally",
                    from: quarters.from.clone(),
                    to: quarter(a),
                });
            }
            if let Some(b) = last_day {
                whole.push(Whole {
                    table: "tally",
                    from: quarter(b),
                    to: quarters.to.clone(),
                });
            }
            whole
        }
    };
    Some((whole, quarters.ends))
}

/// Rows (events) matching `filter`, for paging and the overview's unreviewed total.
pub(crate) fn count(store: &Store, filter: &Filter) -> Result<i64, AuditError> {
    let Some((whole, ends)) = pieces(filter).filter(|_| tallied(filter, true)) else {
        return count_rows(store, filter, &Span::default());
    };
    let column = if filter.unreviewed {
        "unreviewed"
    } else if filter.reviewed {
        "events - unreviewed"
    } else {
        "events"
    };
    let mut n = 0;
    for w in &whole {
        let (clause, values) = tally_where(store, filter, w)?;
        if let Some(clause) = clause {
            let sql = format!(
                "SELECT coalesce(sum({column}), 0) FROM {} WHERE {clause}",
                w.table
            );
            n += store
                .conn()
                .query_row(&sql, params_from_iter(values), |r| r.get::<_, i64>(0))
                .map_err(|e| store.wrap(e))?;
        }
    }
    for end in &ends {
        n += count_rows(store, filter, end)?;
    }
    Ok(n)
}

/// Like [`count`], but where the rollups do not answer (a device or address filter) it
/// reads at most `cap + 1` rows: `(cap + 1, false)` then stands for "more than `cap`".
/// A page's total must not cost a scan of the busiest device's year. Returns the count
/// and whether it is exact.
pub(crate) fn count_up_to(
    store: &Store,
    filter: &Filter,
    cap: u32,
) -> Result<(i64, bool), AuditError> {
    if pieces(filter).is_some() && tallied(filter, true) {
        return Ok((count(store, filter)?, true));
    }
    let columns = "e.first_seen AS first_seen, e.id AS id";
    let Some(select) = select::rows(
        store,
        filter,
        &Span::default(),
        None,
        columns,
        Some(cap + 1),
    )?
    else {
        return Ok((0, true));
    };
    let sql = format!("SELECT count(*) FROM ({})", select.sql);
    let n: i64 = store
        .conn()
        .query_row(&sql, params_from_iter(select.values), |r| r.get(0))
        .map_err(|e| store.wrap(e))?;
    Ok((n, n <= i64::from(cap)))
}

fn count_rows(store: &Store, filter: &Filter, span: &Span) -> Result<i64, AuditError> {
    let Some(select) = select::rows(store, filter, span, None, "e.id", None)? else {
        return Ok(0);
    };
    let sql = format!("SELECT count(*) FROM ({})", select.sql);
    store
        .conn()
        .query_row(&sql, params_from_iter(select.values), |r| r.get(0))
        .map_err(|e| store.wrap(e))
}

/// The WHERE clause on a rollup for `filter`'s group, category sets and whole buckets;
/// `None` when no category set matches.
fn tally_where(
    store: &Store,
    filter: &Filter,
    split: &Whole,
) -> Result<(Option<String>, Vec<Value>), AuditError> {
    let mut clauses = vec!["1".to_string()];
    let mut values: Vec<Value> = Vec::new();
    let mut push = |clause: &str, value: String| {
        values.push(Value::Text(value));
        clauses.push(clause.replace('?', &format!("?{}", values.len())));
    };
    if let Some(from) = &split.from {
        push("bucket >= ?", from.clone());
    }
    if let Some(to) = &split.to {
        push("bucket < ?", to.clone());
    }
    if let Some(group) = &filter.group {
        push("grp = ?", group.clone());
    }
    if filter.category.is_some() || !filter.any_category.is_empty() {
        let sets = select::category_sets(store, filter)?;
        if sets.is_empty() {
            return Ok((None, values));
        }
        let mut marks = Vec::new();
        for set in sets {
            values.push(Value::Text(set));
            marks.push(format!("?{}", values.len()));
        }
        clauses.push(format!("categories IN ({})", marks.join(", ")));
    }
    Ok((Some(clauses.join(" AND ")), values))
}

fn query_triples(
    store: &Store,
    sql: &str,
    values: Vec<Value>,
) -> Result<Vec<(String, String, i64)>, AuditError> {
    let err = |e| store.wrap(e);
    let mut stmt = store.conn().prepare(sql).map_err(err)?;
    let rows = stmt
        .query_map(params_from_iter(values), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
}

/// Call `f(time, category set, group, blocks)` for the blocks matching `filter` per (UTC
/// quarter hour or minute, category set, group): the source of every per-local-day count
/// by category. Times are `YYYY-MM-DDTHH:MM`; a minute and its quarter hour fall on the
/// same day in every time zone. Nothing is allocated per row: a month of a big school's
/// rollup is ~30,000 rows, read for every overview.
pub(crate) fn each_block(
    store: &Store,
    filter: &Filter,
    mut f: impl FnMut(&str, &str, &str, i64),
) -> Result<(), AuditError> {
    let split = split(filter, Grain::Quarter).filter(|_| tallied(filter, false));
    let Some(split) = split else {
        return each_block_of_rows(store, filter, &Span::default(), &mut f);
    };
    let whole = Whole {
        table: "tally",
        from: split.from,
        to: split.to,
    };
    each_whole_block(store, filter, &whole, &mut f)?;
    for end in &split.ends {
        each_block_of_rows(store, filter, end, &mut f)?;
    }
    Ok(())
}

/// [`each_block`] at a coarser grain where it can: whole UTC days as `YYYY-MM-DD`, for
/// the counts that need no finer time (totals, categories, groups, UTC days).
pub(crate) fn each_day_block(
    store: &Store,
    filter: &Filter,
    mut f: impl FnMut(&str, &str, &str, i64),
) -> Result<(), AuditError> {
    let Some((whole, ends)) = pieces(filter).filter(|_| tallied(filter, false)) else {
        return each_block_of_rows(store, filter, &Span::default(), &mut f);
    };
    for w in &whole {
        each_whole_block(store, filter, w, &mut f)?;
    }
    for end in &ends {
        each_block_of_rows(store, filter, end, &mut f)?;
    }
    Ok(())
}

/// The blocks per (bucket, category set, group) of the whole buckets `whole`.
fn each_whole_block(
    store: &Store,
    filter: &Filter,
    whole: &Whole,
    f: &mut impl FnMut(&str, &str, &str, i64),
) -> Result<(), AuditError> {
    let (clause, mut values) = tally_where(store, filter, whole)?;
    let Some(clause) = clause else {
        return Ok(());
    };
    values.push(Value::Text("blocked".into()));
    // No GROUP BY: with the outcome fixed, the key (bucket, outcome, group, category
    // set) makes each row its own, and grouping would sort them.
    let sql = format!(
        "SELECT bucket, categories, grp, blocks FROM {} WHERE {clause} AND outcome = ?{}",
        whole.table,
        values.len()
    );
    each_quad(store, &sql, values, f)
}

fn each_block_of_rows(
    store: &Store,
    filter: &Filter,
    span: &Span,
    f: &mut impl FnMut(&str, &str, &str, i64),
) -> Result<(), AuditError> {
    let columns = "substr(e.first_seen, 1, 16) AS k, e.categories AS c, e.grp AS g, e.count AS n";
    let Some(select) = select::rows(store, filter, span, Some(BLOCKED), columns, None)? else {
        return Ok(());
    };
    let sql = format!(
        "SELECT k, c, g, sum(n) FROM ({}) GROUP BY k, c, g",
        select.sql
    );
    each_quad(store, &sql, select.values, f)
}

/// Run `sql`, whose rows are `(text, text, text, integer)`, calling `f` on each.
fn each_quad(
    store: &Store,
    sql: &str,
    values: Vec<Value>,
    f: &mut impl FnMut(&str, &str, &str, i64),
) -> Result<(), AuditError> {
    let err = |e| store.wrap(e);
    let mut stmt = store.conn().prepare(sql).map_err(err)?;
    let mut rows = stmt.query(params_from_iter(values)).map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        let get = |i| row.get_ref(i).map(|v| v.as_str().unwrap_or(""));
        let (a, b, c) = (
            get(0).map_err(err)?,
            get(1).map_err(err)?,
            get(2).map_err(err)?,
        );
        f(a, b, c, row.get(3).map_err(err)?);
    }
    Ok(())
}

/// Blocks matching `filter` per UTC quarter hour or minute (`YYYY-MM-DDTHH:MM`), not split
/// by category set or group: a reader's days need only the time, and a month of a big
/// school's rollup is ~30,000 (quarter hour, category set, group) rows but ~3,000 quarter
/// hours.
pub(crate) fn blocks_by_time(
    store: &Store,
    filter: &Filter,
) -> Result<Vec<(String, i64)>, AuditError> {
    let split = split(filter, Grain::Quarter).filter(|_| tallied(filter, false));
    let Some(split) = split else {
        return times_from_rows(store, filter, &Span::default());
    };
    let whole = Whole {
        table: "tally",
        from: split.from,
        to: split.to,
    };
    let mut out = Vec::new();
    let (clause, mut values) = tally_where(store, filter, &whole)?;
    if let Some(clause) = clause {
        values.push(Value::Text("blocked".into()));
        // In key order (the key starts with the bucket): no sort.
        let sql = format!(
            "SELECT bucket, '', sum(blocks) FROM tally WHERE {clause} AND outcome = ?{} \
             GROUP BY bucket",
            values.len()
        );
        out.extend(pairs(query_triples(store, &sql, values)?));
    }
    for end in &split.ends {
        out.extend(times_from_rows(store, filter, end)?);
    }
    Ok(out)
}

fn times_from_rows(
    store: &Store,
    filter: &Filter,
    span: &Span,
) -> Result<Vec<(String, i64)>, AuditError> {
    let columns = "substr(e.first_seen, 1, 16) AS k, e.count AS n";
    let Some(select) = select::rows(store, filter, span, Some(BLOCKED), columns, None)? else {
        return Ok(Vec::new());
    };
    let sql = format!("SELECT k, '', sum(n) FROM ({}) GROUP BY k", select.sql);
    Ok(pairs(query_triples(store, &sql, select.values)?).collect())
}

fn pairs(triples: Vec<(String, String, i64)>) -> impl Iterator<Item = (String, i64)> {
    triples.into_iter().map(|(k, _, n)| (k, n))
}

/// The devices (name, or address when the device is not named) and names with the most
/// blocks, most first.
#[derive(Debug, Default)]
pub(crate) struct Tops {
    pub devices: Vec<(String, i64)>,
    pub names: Vec<(String, i64)>,
}

type Totals = HashMap<String, i64>;

/// The `limit` devices and, when `names`, the `limit` names with the most blocks matching
/// `filter`. Whole days come from `tally_who` and `tally_name` (names through the busy-name
/// list where it proves the ranking); the partial day at each end is read from `events`
/// once for both lists.
pub(crate) fn tops(
    store: &Store,
    filter: &Filter,
    limit: usize,
    names: bool,
) -> Result<Tops, AuditError> {
    let plain = filter.group.is_none() && filter.category.is_none();
    let split = split(filter, Grain::Day)
        .filter(|_| plain && filter.any_category.is_empty() && tallied(filter, false));
    let (mut devices, mut named) = (Totals::default(), Totals::default());
    let ends = match &split {
        Some(split) => split.ends.clone(),
        None => vec![Span::default()],
    };
    for end in &ends {
        add_rows(store, filter, end, names, &mut devices, &mut named)?;
    }
    let Some(split) = split else {
        return Ok(Tops {
            devices: ranked(devices, limit),
            names: ranked(named, limit),
        });
    };
    let (from, to) = (split.from.as_deref(), split.to.as_deref());
    add_days(store, "tally_who", "who", from, to, &mut devices)?;
    let names = if !names {
        Vec::new()
    } else if let Some(ranked) = busy_names::top(store, from, to, &named, limit)? {
        ranked
    } else {
        add_days(store, "tally_name", "name", from, to, &mut named)?;
        ranked(named, limit)
    };
    Ok(Tops {
        devices: ranked(devices, limit),
        names,
    })
}

/// Add the blocks of `filter`'s rows within `span` per device and, when `names`, per name.
/// Summed here rather than by GROUP BY: one read serves both lists.
fn add_rows(
    store: &Store,
    filter: &Filter,
    span: &Span,
    names: bool,
    devices: &mut Totals,
    named: &mut Totals,
) -> Result<(), AuditError> {
    let name = if names { "e.name" } else { "''" };
    let columns = format!("coalesce(e.device, e.client_ip) AS k, {name} AS m, e.count AS n");
    let Some(select) = select::rows(store, filter, span, Some(BLOCKED), &columns, None)? else {
        return Ok(());
    };
    let err = |e| store.wrap(e);
    let mut stmt = store.conn().prepare(&select.sql).map_err(err)?;
    let mut rows = stmt.query(params_from_iter(select.values)).map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        let n: i64 = row.get(2).map_err(err)?;
        add(
            devices,
            row.get_ref(0).map_err(err)?.as_str().unwrap_or(""),
            n,
        );
        if names {
            add(
                named,
                row.get_ref(1).map_err(err)?.as_str().unwrap_or(""),
                n,
            );
        }
    }
    Ok(())
}

/// Add the blocks per key of the whole days `from..to` of a per-day rollup (`tally_who`
/// or `tally_name`). Summed here rather than by GROUP BY: SQLite would sort every row of
/// the range first (a month of devices is ~44,000 rows at a big school).
fn add_days(
    store: &Store,
    table: &str,
    key: &str,
    from: Option<&str>,
    to: Option<&str>,
    totals: &mut Totals,
) -> Result<(), AuditError> {
    let mut clauses = vec!["1".to_string()];
    let mut values = Vec::new();
    if let Some(from) = from {
        values.push(Value::Text(from.to_string()));
        clauses.push(format!("day >= ?{}", values.len()));
    }
    if let Some(to) = to {
        values.push(Value::Text(to.to_string()));
        clauses.push(format!("day < ?{}", values.len()));
    }
    let sql = format!(
        "SELECT {key}, blocks FROM {table} WHERE {}",
        clauses.join(" AND ")
    );
    let err = |e| store.wrap(e);
    let mut stmt = store.conn().prepare(&sql).map_err(err)?;
    let mut rows = stmt.query(params_from_iter(values)).map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        let n: i64 = row.get(1).map_err(err)?;
        add(
            totals,
            row.get_ref(0).map_err(err)?.as_str().unwrap_or(""),
            n,
        );
    }
    Ok(())
}

/// `totals[key] += n`, allocating the key only when it is new.
fn add(totals: &mut Totals, key: &str, n: i64) {
    match totals.get_mut(key) {
        Some(total) => *total += n,
        None => {
            totals.insert(key.to_string(), n);
        }
    }
}

/// The `limit` entries of `totals` with the most blocks (none with 0), most first, ties by
/// key.
fn ranked(totals: HashMap<String, i64>, limit: usize) -> Vec<(String, i64)> {
    let mut ranked: Vec<(String, i64)> = totals.into_iter().filter(|(_, n)| *n > 0).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(limit);
    ranked
}
