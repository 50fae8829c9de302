//! The top names of many whole days without grouping every name of every day. A big
//! school blocks ~11,000 distinct names a day, so a month is ~340,000 `tally_name` rows;
//! but the names that rank are the few that were busy on most days. `tally_name_busy`
//! (store schema v7) lists, at each mark of [`BUSY_LEVELS`], each day's names with at
//! least that many blocks, so every name *not* listed for a day at a mark had fewer that
//! day. That bounds everyone: a listed name's count is known exactly on its busy days and
//! bounded on the rest; an unlisted name's total is at most `days * (mark - 1)`. The
//! candidates are resolved (their other days read by key) from the highest bound down,
//! until the `limit`-th exact total beats every bound left. When it cannot (a quiet log,
//! or names too evenly spread), the answer is `None` and the caller groups the rows.
//!
//! The highest mark that can prove the ranking lists the fewest names: marks are tried
//! from the highest down, each only when enough of its names are already known to beat
//! every unlisted one (reading a high mark's short list costs little), the lowest always.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use rusqlite::OptionalExtension;

use super::store::{AuditError, Store, BUSY_LEVELS};

/// Each busy (day, name) of a range at a mark, with its blocks. `CROSS JOIN` keeps SQLite
/// reading the short busy list and looking each up by key: left to choose, it walks every
/// `tally_name` row of the range instead (0.23 s for a month at 10M rows, not 0.02 s).
const BUSY_COUNTS: &str = "SELECT h.day, h.name, t.blocks FROM tally_name_busy h \
     CROSS JOIN tally_name t ON t.day = h.day AND t.name = h.name \
     WHERE h.level = ?1 AND h.day >= ?2 AND h.day <= ?3";

/// Most `tally_name` rows read by key before giving up (grouping a month is ~340,000).
const LOOKUP_BUDGET: usize = 20_000;

/// A name that may rank: what is known of its blocks over the range.
struct Candidate {
    name: String,
    /// Blocks known exactly: the range's partial ends plus its busy days.
    known: i64,
    /// Its busy days in the range (their counts are in `known`).
    busy: BTreeSet<String>,
}

/// The whole days of a range and the mark their busy names are read at.
struct Days<'a> {
    days: &'a [String],
    mark: i64,
}

impl Days<'_> {
    /// At most this many blocks over `quiet` days on which a name was not listed.
    fn quiet_bound(&self, quiet: usize) -> i64 {
        i64::try_from(quiet)
            .unwrap_or(i64::MAX)
            .saturating_mul(self.mark - 1)
    }

    /// At most this many blocks has `c`: every day not busy had fewer than the mark.
    fn bound(&self, c: &Candidate) -> i64 {
        c.known + self.quiet_bound(self.days.len().saturating_sub(c.busy.len()))
    }
}

/// The `limit` names with the most blocks over the whole UTC days `from..to` (day texts;
/// `None`: unbounded) plus `ends` (exact blocks per name from the range's partial ends),
/// most first, ties by name; `None` when the busy-name lists cannot prove the ranking.
pub(crate) fn top(
    store: &Store,
    from: Option<&str>,
    to: Option<&str>,
    ends: &std::collections::HashMap<String, i64, impl std::hash::BuildHasher>,
    limit: usize,
) -> Result<Option<Vec<(String, i64)>>, AuditError> {
    let Some(days) = days_in(store, from, to)? else {
        return Ok(None);
    };
    let mut budget = LOOKUP_BUDGET;
    for (i, &mark) in BUSY_LEVELS.iter().enumerate().rev() {
        let range = Days { days: &days, mark };
        let pending = candidates(store, &range, ends)?;
        if i > 0 && !promising(&range, &pending, limit) {
            continue;
        }
        if let Some(ranked) = rank(store, &range, pending, limit, &mut budget)? {
            return Ok(Some(ranked));
        }
    }
    Ok(None)
}

/// Whether a mark can be expected to prove the ranking: at least `limit` names are
/// already known to have more blocks than any name unlisted at it could. (A proof needs
/// `limit` totals above that bound; when too few are known, the lookups to find them
/// would mostly be spent on names that do not rank.)
fn promising(range: &Days, pending: &[Candidate], limit: usize) -> bool {
    let others = range.quiet_bound(range.days.len());
    pending.iter().filter(|c| c.known > others).count() >= limit
}

/// The ranking proven at `range`'s mark, or `None`. Spends lookups from `budget`.
fn rank(
    store: &Store,
    range: &Days,
    mut pending: Vec<Candidate>,
    limit: usize,
    budget: &mut usize,
) -> Result<Option<Vec<(String, i64)>>, AuditError> {
    let others = range.quiet_bound(range.days.len());
    let mut exact: Vec<(String, i64)> = Vec::new();
    loop {
        exact.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let kth = exact.get(limit.saturating_sub(1)).map(|e| e.1);
        // The unresolved candidate that could rank highest.
        let next = pending
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| range.bound(c))
            .map(|(i, c)| (i, range.bound(c)));
        let could_rank = |bound: i64| kth.is_none_or(|k| bound >= k);
        match next.filter(|(_, bound)| could_rank(*bound)) {
            Some((i, _)) => {
                let c = pending.swap_remove(i);
                let lookups = range.days.len().saturating_sub(c.busy.len());
                if lookups > *budget {
                    return Ok(None);
                }
                *budget -= lookups;
                let total = c.known + quiet_days_blocks(store, range.days, &c)?;
                exact.push((c.name, total));
            }
            None => {
                // Every candidate that could rank is exact; the ranking stands if no
                // unlisted name could reach its last place (a tie would sort by name).
                let proven = kth.map_or(others == 0, |k| k > others);
                if !proven {
                    return Ok(None);
                }
                break;
            }
        }
    }
    exact.retain(|(_, n)| *n > 0);
    exact.truncate(limit);
    Ok(Some(exact))
}

/// Every calendar day from `from` (or the first day in `tally_name`) up to but not
/// including `to` (or past the last). `None` when a day does not read as a date.
fn days_in(
    store: &Store,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Option<Vec<String>>, AuditError> {
    let (first, last): (Option<String>, Option<String>) = store
        .conn()
        // Two subqueries: SQLite reads a lone min() or max() from the key's ends, but
        // both in one select would walk the whole table.
        .query_row(
            "SELECT (SELECT min(day) FROM tally_name), (SELECT max(day) FROM tally_name)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| store.wrap(e))?;
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(Some(Vec::new()));
    };
    let date = |t: &str| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok();
    let (Some(first), Some(last)) = (date(&first), date(&last)) else {
        return Ok(None);
    };
    let start = match from {
        Some(f) => match date(f) {
            Some(f) => f.max(first),
            None => return Ok(None),
        },
        None => first,
    };
    let end = match to {
        Some(t) => match date(t) {
            Some(t) => t.min(last + chrono::Days::new(1)),
            None => return Ok(None),
        },
        None => last + chrono::Days::new(1),
    };
    Ok(Some(
        start
            .iter_days()
            .take_while(|d| *d < end)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .collect(),
    ))
}

/// The busy names of `range` at its mark and the names of the partial ends, with what is
/// known of each.
fn candidates(
    store: &Store,
    range: &Days,
    ends: &std::collections::HashMap<String, i64, impl std::hash::BuildHasher>,
) -> Result<Vec<Candidate>, AuditError> {
    let mut by_name: BTreeMap<String, Candidate> = ends
        .iter()
        .map(|(name, n)| {
            let c = Candidate {
                name: name.clone(),
                known: *n,
                busy: BTreeSet::new(),
            };
            (name.clone(), c)
        })
        .collect();
    let (Some(first), Some(last)) = (range.days.first(), range.days.last()) else {
        return Ok(by_name.into_values().collect());
    };
    let err = |e| store.wrap(e);
    let mut stmt = store.conn().prepare_cached(BUSY_COUNTS).map_err(err)?;
    let rows = stmt
        .query_map(rusqlite::params![range.mark, first, last], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })
        .map_err(err)?;
    for row in rows {
        let (day, name, blocks): (String, String, i64) = row.map_err(err)?;
        let c = by_name.entry(name.clone()).or_insert_with(|| Candidate {
            name,
            known: 0,
            busy: BTreeSet::new(),
        });
        c.known += blocks;
        c.busy.insert(day);
    }
    Ok(by_name.into_values().collect())
}

/// `c`'s blocks on the days of `days` that were not busy for it, read by key.
fn quiet_days_blocks(store: &Store, days: &[String], c: &Candidate) -> Result<i64, AuditError> {
    let err = |e| store.wrap(e);
    let mut stmt = store
        .conn()
        .prepare_cached("SELECT blocks FROM tally_name WHERE day = ?1 AND name = ?2")
        .map_err(err)?;
    let mut sum = 0;
    for day in days.iter().filter(|d| !c.busy.contains(*d)) {
        let n: Option<i64> = stmt
            .query_row([day, &c.name], |r| r.get(0))
            .optional()
            .map_err(err)?;
        sum += n.unwrap_or(0);
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use proptest::prelude::*;
    use rusqlite::params;

    use std::collections::HashMap;

    use super::*;
    use crate::audit::select::Filter;
    use crate::audit::tally;

    /// 2026-03-01T00:00:00Z.
    const START: u64 = 1_772_323_200;
    const DAYS: u32 = 6;

    fn time(day: u32, second: u32) -> String {
        let at = START + u64::from(day) * 86_400 + u64::from(second);
        crate::audit::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(at))
    }

    fn day(d: u32) -> String {
        time(d, 0)[..10].to_string()
    }

    /// A row as the writer makes one: inserted, then repeats counted in; some purged.
    #[derive(Debug, Clone)]
    struct Row {
        day: u32,
        second: u32,
        name: usize,
        count: i64,
        blocked: bool,
        purged: bool,
    }

    fn store_with(rows: &[Row]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("a folder");
        let store = Store::open(&dir.path().join("audit.sqlite")).expect("a log");
        let c = store.conn();
        for r in rows {
            c.execute(
                "INSERT INTO events (first_seen, last_seen, count, client_ip, grp, name, qtype, \
                 categories, locked, list, line, rule, response, outcome) VALUES (?1, ?1, 1, \
                 '10.0.0.1', 'pupils', ?2, 'A', 'adult', 0, 'l', 1, 'r', 'nxdomain', ?3)",
                params![
                    time(r.day, r.second),
                    format!("n{}.test", r.name),
                    if r.blocked { "blocked" } else { "allowed" },
                ],
            )
            .expect("inserted");
            let id = c.last_insert_rowid();
            c.execute(
                "UPDATE events SET count = count + ?1 WHERE id = ?2",
                params![r.count - 1, id],
            )
            .expect("counted");
            if r.purged {
                c.execute(
                    "UPDATE events SET purged = 1, client_ip = '', name = '' WHERE id = ?1",
                    [id],
                )
                .expect("purged");
            }
        }
        (dir, store)
    }

    /// Plain SQL over `tally_name` and the ends: the ranking the busy list must equal.
    fn reference(
        store: &Store,
        from: Option<&str>,
        to: Option<&str>,
        ends: &HashMap<String, i64>,
        limit: usize,
    ) -> Vec<(String, i64)> {
        let mut totals: BTreeMap<String, i64> = ends.clone().into_iter().collect();
        let mut stmt = store
            .conn()
            .prepare(
                "SELECT name, sum(blocks) FROM tally_name WHERE day >= ?1 AND day < ?2 \
                 GROUP BY name",
            )
            .expect("prepared");
        let rows = stmt
            .query_map([from.unwrap_or(""), to.unwrap_or("~")], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .expect("read");
        for row in rows {
            let (name, n) = row.expect("a row");
            *totals.entry(name).or_default() += n;
        }
        let mut v: Vec<(String, i64)> = totals.into_iter().filter(|(_, n)| *n > 0).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(limit);
        v
    }

    /// The (day, name) pairs at or over a mark that are not listed at it (the invariant:
    /// none).
    fn unlisted_busy(store: &Store) -> i64 {
        BUSY_LEVELS
            .iter()
            .map(|mark| {
                store
                    .conn()
                    .query_row(
                        "SELECT count(*) FROM tally_name t WHERE t.blocks >= ?1 AND NOT EXISTS \
                         (SELECT 1 FROM tally_name_busy h WHERE h.level = ?1 \
                         AND h.day = t.day AND h.name = t.name)",
                        [mark],
                        |r| r.get::<_, i64>(0),
                    )
                    .expect("counted")
            })
            .sum()
    }

    /// Three days: two names busy every day (`busy` blocks a day each, reached in two
    /// steps, so each mark is crossed by an update), and names 2.. up to `names` with
    /// `quiet` blocks a day.
    fn three_days(busy: [i64; 2], names: usize, quiet: i64) -> Vec<Row> {
        let mut rows = Vec::new();
        for d in 0..3 {
            for (name, count) in [(0, busy[0]), (1, busy[1])] {
                for half in 0..2 {
                    rows.push(Row {
                        day: d,
                        second: 3_600 + half,
                        name,
                        count: count / 2,
                        blocked: true,
                        purged: false,
                    });
                }
            }
            for name in 2..names {
                rows.push(Row {
                    day: d,
                    second: 7_200,
                    name,
                    count: quiet,
                    blocked: true,
                    purged: false,
                });
            }
        }
        rows
    }

    /// Two names busy every day, twenty quiet ones.
    fn skewed() -> Vec<Row> {
        three_days([100, 80], 22, 10)
    }

    #[test]
    fn busy_names_prove_a_skewed_ranking() {
        let (_dir, store) = store_with(&skewed());
        assert_eq!(unlisted_busy(&store), 0);
        let ends = HashMap::new();
        let got = top(&store, None, None, &ends, 2).expect("read");
        assert_eq!(
            got,
            Some(vec![
                ("n0.test".to_string(), 300),
                ("n1.test".to_string(), 240)
            ])
        );
        // The ends can lift a quiet name into the ranking.
        let ends = HashMap::from([("n5.test".to_string(), 1_000)]);
        let got = top(&store, Some(&day(1)), None, &ends, 2).expect("read");
        assert_eq!(got, Some(reference(&store, Some(&day(1)), None, &ends, 2)));
        assert_eq!(got.as_ref().map(|v| v[0].1), Some(1_020));
    }

    /// A big school's month in small: two names with hundreds of blocks a day, and many
    /// more over the lowest mark. The ranking is proven at the mark of 512 from its two
    /// names, where the lowest mark lists every one.
    #[test]
    fn a_busy_log_is_ranked_from_a_higher_mark() {
        let rows = three_days([1_000, 900], 40, 100);
        let (_dir, store) = store_with(&rows);
        assert_eq!(unlisted_busy(&store), 0);
        let ends = HashMap::new();
        let days: Vec<String> = (0..3).map(day).collect();
        let at = |mark| Days { days: &days, mark };
        let listed = |mark| candidates(&store, &at(mark), &ends).expect("read");
        assert_eq!(listed(64).len(), 40);
        assert_eq!(listed(512).len(), 2);
        assert!(listed(4_096).is_empty());
        assert!(!promising(&at(4_096), &listed(4_096), 2));
        assert!(promising(&at(512), &listed(512), 2));
        let want = reference(&store, None, None, &ends, 2);
        let mut budget = LOOKUP_BUDGET;
        let at_512 = rank(&store, &at(512), listed(512), 2, &mut budget).expect("read");
        assert_eq!(at_512.as_ref(), Some(&want));
        assert_eq!(
            budget, LOOKUP_BUDGET,
            "both names were busy every day: no lookups"
        );
        assert_eq!(top(&store, None, None, &ends, 2).expect("read"), Some(want));
    }

    #[test]
    fn an_even_spread_falls_back_to_grouping() {
        let (_dir, store) = store_with(&skewed());
        // Third place is a quiet name with 30 blocks; an unlisted name could have up to
        // 3 * 63: only grouping the rows can tell.
        assert_eq!(
            top(&store, None, None, &HashMap::new(), 3).expect("read"),
            None
        );
        // The caller's answer is still right.
        let filter = Filter::default();
        let got = tally::tops(&store, &filter, 3, true).expect("read").names;
        assert_eq!(got, reference(&store, None, None, &HashMap::new(), 3));
    }

    /// The busy list is read first and `tally_name` only by key, whatever SQLite's
    /// estimates.
    #[test]
    fn busy_counts_read_the_busy_list_and_look_up_by_key() {
        let (_dir, store) = store_with(&skewed());
        let mut stmt = store
            .conn()
            .prepare(&format!("EXPLAIN QUERY PLAN {BUSY_COUNTS}"))
            .expect("a plan");
        let steps: Vec<String> = stmt
            .query_map(rusqlite::params![512, "2026-03-01", "2026-03-31"], |r| {
                r.get::<_, String>(3)
            })
            .expect("read")
            .collect::<rusqlite::Result<_>>()
            .expect("steps");
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert!(
            steps[0].starts_with("SEARCH h USING PRIMARY KEY (level=? AND day>? AND day<?)"),
            "{steps:?}"
        );
        assert!(
            steps[1].starts_with("SEARCH t USING PRIMARY KEY (day=? AND name=?)"),
            "{steps:?}"
        );
    }

    fn row() -> impl Strategy<Value = Row> {
        (
            0..DAYS,
            0u32..86_400,
            // Skewed: low names are picked most.
            (0usize..4, 0usize..12).prop_map(|(a, b)| a.min(b)),
            prop_oneof![6 => 1i64..8, 2 => 8i64..120, 1 => 120i64..1_200],
            prop::bool::weighted(0.9),
            prop::bool::weighted(0.05),
        )
            .prop_map(|(day, second, name, count, blocked, purged)| Row {
                day,
                second,
                name,
                count,
                blocked,
                purged,
            })
    }

    fn day_bound() -> impl Strategy<Value = Option<String>> {
        prop::option::of((0..DAYS + 2).prop_map(day))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the rows, purges and range: every busy (day, name) is listed, and
        /// when the busy list answers, it equals grouping every row.
        #[test]
        fn the_busy_list_never_changes_the_ranking(
            rows in prop::collection::vec(row(), 0..120),
            from in day_bound(),
            to in day_bound(),
            ends in prop::collection::hash_map(
                (0usize..14).prop_map(|n| format!("n{n}.test")), 0i64..300, 0..4),
            limit in 1usize..5,
        ) {
            let (_dir, store) = store_with(&rows);
            prop_assert_eq!(unlisted_busy(&store), 0);
            let got = top(&store, from.as_deref(), to.as_deref(), &ends, limit).expect("read");
            if let Some(got) = got {
                let want = reference(&store, from.as_deref(), to.as_deref(), &ends, limit);
                prop_assert_eq!(got, want);
            }
        }
    }
}
