//! The lead's reads against a reference: every count, page, summary and chart that the
//! index ranges and rollups ([`super::select`], [`super::tally`]) compute must equal what
//! plain SQL over the whole `events` table says (the queries Warden ran before it had
//! rollups), for random rows (reviewed, purged, deleted, spanning bucket edges) and random
//! filters. And no read's query plan scans `events`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use proptest::prelude::*;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter};

use super::review::{self, Filter};
use super::store::Store;

const CATEGORY_SETS: [&str; 6] = [
    "adult",
    "gambling",
    "adult,gambling",
    "self-harm",
    "terrorism",
    "adult,self-harm",
];
const GROUPS: [&str; 3] = ["pupils", "staff", "guests"];
const CLIENTS: [&str; 4] = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::7"];
/// Device names; one is another client's address.
const DEVICES: [Option<&str>; 4] = [None, Some("ipad-1"), Some("ipad-2"), Some("10.0.0.2")];
/// Signed-in users; a row's is fixed by its client and device (see [`user_of`]).
const USERS: [Option<&str>; 3] = [None, Some("pupil7"), Some("jsmith")];
const NAMES: [&str; 5] = ["a.test", "b.test", "c.test", "d.test", "*"];
const CATEGORIES: [&str; 4] = ["adult", "gambling", "self-harm", "terrorism"];

/// Start of the generated rows: 2026-03-01T00:00:00Z. They span two days.
const START: i64 = 1_772_323_200;

#[derive(Debug, Clone)]
struct Row {
    /// Milliseconds after [`START`].
    at_ms: i64,
    span_ms: i64,
    set: usize,
    group: usize,
    client: usize,
    device: usize,
    name: usize,
    blocked: bool,
    count: i64,
    reviewed: bool,
    purged: bool,
    deleted: bool,
}

fn row() -> impl Strategy<Value = Row> {
    (
        // Two days, crowded enough that rows straddle every kind of bucket edge.
        (0i64..2 * 86_400_000, span(), 0..6usize, 0..3usize),
        (0..4usize, 0..4usize, 0..5usize, prop::bool::weighted(0.85)),
        (
            1i64..6,
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.05),
        ),
    )
        .prop_map(
            |((at_ms, span_ms, set, group), (client, device, name, blocked), rest)| Row {
                at_ms,
                span_ms,
                set,
                group,
                client,
                device,
                name,
                blocked,
                count: rest.0,
                reviewed: rest.1,
                purged: rest.2,
                deleted: rest.3,
            },
        )
}

/// The user signed in for a row: the same person on several devices, and devices with
/// nobody signed in.
fn user_of(r: &Row) -> Option<&'static str> {
    USERS[(r.client + r.device) % USERS.len()]
}

/// Most rows span a few seconds; some reach across quarter hours.
fn span() -> impl Strategy<Value = i64> {
    prop_oneof![3 => 0i64..60_000, 1 => 0i64..1_800_000]
}

fn time(ms: i64) -> String {
    super::rfc3339(
        SystemTime::UNIX_EPOCH + std::time::Duration::from_millis((START * 1000 + ms) as u64),
    )
}

/// A time near a row or a bucket edge: whole quarter hours, days, and odd milliseconds.
fn bound() -> impl Strategy<Value = i64> {
    prop_oneof![
        (0i64..2 * 96).prop_map(|q| q * 900_000),
        // Just either side of a quarter hour.
        (0i64..2 * 96, -120_000i64..120_000).prop_map(|(q, d)| q * 900_000 + d),
        (0i64..3).prop_map(|d| d * 86_400_000),
        -3_600_000i64..2 * 86_400_000 + 3_600_000,
    ]
}

fn filter() -> impl Strategy<Value = Filter> {
    (
        (
            prop::option::of(bound()),
            prop::option::of(bound()),
            prop::option::of(0..4usize),
        ),
        (
            prop::option::of(0..3usize),
            prop::option::of(0..5usize),
            0..3u8,
        ),
        (
            prop::collection::vec(0..4usize, 0..3),
            prop::option::of(1..USERS.len()),
        ),
    )
        .prop_map(
            |((since, until, category), (group, client, review), (any, user))| Filter {
                since: since.map(time),
                until: until.map(time),
                category: category.map(|c| CATEGORIES[c].to_string()),
                group: group.map(|g| GROUPS[g].to_string()),
                client: client.map(|c| match c {
                    4 => "ipad-1".to_string(),
                    c => CLIENTS[c].to_string(),
                }),
                user: user.and_then(|u| USERS[u]).map(str::to_string),
                unreviewed: review == 1,
                reviewed: review == 2,
                any_category: any.into_iter().map(|c| CATEGORIES[c].to_string()).collect(),
                ..Filter::default()
            },
        )
}

/// A store holding `rows`, written the way the writer and the lead's tools write them:
/// inserts, count updates, reviews, purges, deletes.
fn store_with(rows: &[Row]) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("audit.sqlite")).unwrap();
    let c = store.conn();
    for r in rows {
        c.execute(
            "INSERT INTO events (first_seen, last_seen, count, client_ip, device, grp, name, \
             qtype, categories, locked, list, line, rule, response, outcome, user_name) \
             VALUES (?1, ?1, 1, ?2, ?3, ?4, ?5, 'A', ?6, 0, 'l', 1, 'r', 'nxdomain', ?7, ?8)",
            params![
                time(r.at_ms),
                CLIENTS[r.client],
                DEVICES[r.device],
                GROUPS[r.group],
                NAMES[r.name],
                CATEGORY_SETS[r.set],
                if r.blocked { "blocked" } else { "allowed" },
                user_of(r),
            ],
        )
        .unwrap();
        let id = c.last_insert_rowid();
        // Repeats counted into the open row, as the writer adds them.
        c.execute(
            "UPDATE events SET count = count + ?1, last_seen = max(last_seen, ?2) WHERE id = ?3",
            params![r.count - 1, time(r.at_ms + r.span_ms), id],
        )
        .unwrap();
        if r.reviewed {
            review::add_review(&store, id, "no-action", "", "lead", SystemTime::now()).unwrap();
        }
        if r.purged {
            c.execute(
                "UPDATE events SET purged = 1, client_ip = '', device = NULL, name = '', \
                 user_name = NULL WHERE id = ?1",
                [id],
            )
            .unwrap();
        }
        // Reviews are append-only, so only an unreviewed row can be deleted.
        if r.deleted && !r.reviewed {
            c.execute("DELETE FROM events WHERE id = ?1", [id]).unwrap();
        }
    }
    // The writer records the longest span it writes.
    let longest = rows.iter().map(|r| r.span_ms).max().unwrap_or(0);
    c.execute(
        "UPDATE audit_meta SET value = ?1 WHERE key = 'max_span_ms'",
        [longest],
    )
    .unwrap();
    (dir, store)
}

/// The reference: the WHERE clause Warden used before it had index ranges and rollups.
fn reference_where(filter: &Filter) -> (String, Vec<Value>) {
    let mut clauses = vec!["e.purged = 0".to_string()];
    let mut values: Vec<Value> = Vec::new();
    let mut add = |clause: &str, value: String| {
        values.push(Value::Text(value));
        clauses.push(clause.replace('?', &format!("?{}", values.len())));
    };
    if let Some(since) = &filter.since {
        add("e.last_seen >= ?", since.clone());
    }
    if let Some(until) = &filter.until {
        add("e.first_seen < ?", until.clone());
    }
    if let Some(category) = &filter.category {
        add(
            "instr(',' || e.categories || ',', ',' || ? || ',') > 0",
            category.clone(),
        );
    }
    if let Some(client) = &filter.client {
        add("(e.client_ip = ? OR e.device = ?)", client.clone());
    }
    if let Some(group) = &filter.group {
        add("e.grp = ?", group.clone());
    }
    if let Some(user) = &filter.user {
        add("e.user_name = ?", user.clone());
    }
    if filter.unreviewed {
        clauses.push("NOT EXISTS (SELECT 1 FROM reviews WHERE event_id = e.id)".to_string());
    }
    if filter.reviewed {
        clauses.push("EXISTS (SELECT 1 FROM reviews WHERE event_id = e.id)".to_string());
    }
    if !filter.any_category.is_empty() {
        let mut any = Vec::new();
        for category in &filter.any_category {
            values.push(Value::Text(category.clone()));
            any.push(format!(
                "instr(',' || e.categories || ',', ',' || ?{} || ',') > 0",
                values.len()
            ));
        }
        clauses.push(format!("({})", any.join(" OR ")));
    }
    (clauses.join(" AND "), values)
}

fn reference_pairs(store: &Store, filter: &Filter, select: &str, tail: &str) -> Vec<(String, i64)> {
    let (clause, values) = reference_where(filter);
    let sql = format!("SELECT {select} FROM events e WHERE {clause} {tail}");
    let mut stmt = store.conn().prepare(&sql).unwrap();
    let rows = stmt
        .query_map(params_from_iter(values), |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    rows.collect::<rusqlite::Result<Vec<_>>>().unwrap()
}

/// The reference summary, as Warden computed it before (six grouped scans).
fn reference_summary(store: &Store, filter: &Filter) -> review::Summary {
    let blocked = "AND e.outcome = 'blocked'";
    let grouped = |expr: &str, order: &str| {
        reference_pairs(
            store,
            filter,
            &format!("{expr} AS k, sum(e.count) AS n"),
            &format!("{blocked} GROUP BY k ORDER BY {order}"),
        )
    };
    let mut by_category: BTreeMap<String, i64> = BTreeMap::new();
    for (set, n) in grouped("e.categories", "k") {
        for c in set.split(',') {
            *by_category.entry(c.to_string()).or_default() += n;
        }
    }
    let mut by_category: Vec<(String, i64)> = by_category.into_iter().collect();
    by_category.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = |expr: &str| {
        let mut v = grouped(expr, "n DESC, k");
        v.truncate(10);
        v
    };
    review::Summary {
        total: grouped("'all'", "k").first().map_or(0, |t| t.1),
        by_category,
        by_day: grouped("substr(e.first_seen, 1, 10)", "k"),
        by_group: grouped("e.grp", "n DESC, k"),
        top_devices: top("coalesce(e.device, e.client_ip)"),
        top_names: top("e.name"),
    }
}

fn reference_local_days(store: &Store, filter: &Filter, tz: chrono_tz::Tz) -> Vec<(String, i64)> {
    let mut days: BTreeMap<String, i64> = BTreeMap::new();
    for (minute, n) in reference_pairs(
        store,
        filter,
        "substr(e.first_seen, 1, 16) AS m, sum(e.count)",
        "AND e.outcome = 'blocked' GROUP BY m",
    ) {
        let t = chrono::NaiveDateTime::parse_from_str(&minute, "%Y-%m-%dT%H:%M").unwrap();
        let day = t
            .and_utc()
            .with_timezone(&tz)
            .format("%Y-%m-%d")
            .to_string();
        *days.entry(day).or_default() += n;
    }
    days.into_iter().collect()
}

/// Every page of `filter`, `size` rows at a time, through the "Older" cursor.
fn paged_ids(store: &Store, filter: &Filter, size: u32) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut page = Filter {
        limit: Some(size),
        ..filter.clone()
    };
    for _ in 0..1000 {
        let rows = review::list(store, &page).unwrap();
        ids.extend(rows.iter().map(|r| r.id));
        match rows.last() {
            Some(last) if rows.len() == size as usize => {
                page.before = Some((last.first_seen.clone(), last.id));
            }
            _ => return ids,
        }
    }
    panic!("paging did not end");
}

proptest! {
    // Each case builds a database: enough cases to cross every edge, few enough to be quick.
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_read_equals_plain_sql_over_the_whole_table(
        rows in prop::collection::vec(row(), 0..150),
        filters in prop::collection::vec(filter(), 1..6),
        size in 1u32..7,
    ) {
        let (_dir, store) = store_with(&rows);
        for filter in &filters {
            let expected_ids: Vec<i64> = reference_pairs(
                &store, filter, "CAST(e.id AS TEXT), 0", "ORDER BY e.first_seen DESC, e.id DESC",
            ).into_iter().map(|(id, _)| id.parse().unwrap()).collect();
            let expected = expected_ids.len() as i64;
            prop_assert_eq!(review::count(&store, filter).unwrap(), expected,
                "count of {:?}", filter);
            prop_assert_eq!(review::page_total(&store, filter).unwrap(),
                review::Total::Exact(expected), "page total of {:?}", filter);
            // A cap as small as a page: exact, or "more than" only when it is.
            match super::tally::count_up_to(&store, filter, size).unwrap() {
                (n, true) => prop_assert_eq!(n, expected, "capped count of {:?}", filter),
                (n, false) => {
                    prop_assert!(expected > i64::from(size), "more than {} of {:?}", size, filter);
                    prop_assert_eq!(n, i64::from(size) + 1);
                }
            }
            prop_assert_eq!(&paged_ids(&store, filter, size), &expected_ids, "pages of {:?}", filter);
            let all: Vec<i64> = review::list(&store, filter).unwrap().iter().map(|r| r.id).collect();
            prop_assert_eq!(&all, &expected_ids, "list of {:?}", filter);
            let got = review::summary(&store, filter).unwrap();
            let want = reference_summary(&store, filter);
            prop_assert_eq!(got.total, want.total, "total of {:?}", filter);
            prop_assert_eq!(&got.by_category, &want.by_category, "categories of {:?}", filter);
            prop_assert_eq!(&got.by_day, &want.by_day, "days of {:?}", filter);
            prop_assert_eq!(&got.by_group, &want.by_group, "groups of {:?}", filter);
            prop_assert_eq!(&got.top_devices, &want.top_devices, "devices of {:?}", filter);
            prop_assert_eq!(&got.top_names, &want.top_names, "names of {:?}", filter);
            for tz in [chrono_tz::Asia::Kathmandu, chrono_tz::America::St_Johns] {
                prop_assert_eq!(
                    review::by_local_day(&store, filter, tz).unwrap(),
                    reference_local_days(&store, filter, tz),
                    "local days of {:?}", filter
                );
            }
        }
    }
}

/// The statements `read` runs on `store`, with their values, as SQLite ran them.
fn traced(store: &mut Store, read: impl FnOnce(&Store)) -> Vec<String> {
    use rusqlite::trace::{TraceEvent, TraceEventCodes};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    store
        .conn_mut()
        .trace_v2(
            TraceEventCodes::SQLITE_TRACE_STMT,
            Some(move |event: TraceEvent<'_>| {
                if let TraceEvent::Stmt(stmt, sql) = event {
                    // Trigger programs are announced as `-- TRIGGER name`.
                    if !sql.starts_with("--") {
                        let expanded = stmt.expanded_sql().unwrap_or_else(|| sql.to_string());
                        sink.lock().unwrap().push(expanded);
                    }
                }
            }),
        )
        .unwrap();
    read(store);
    store
        .conn_mut()
        .trace_v2(TraceEventCodes::empty(), None::<fn(TraceEvent<'_>)>)
        .unwrap();
    let statements = seen.lock().unwrap().clone();
    statements
}

/// The plan's lines that read all of `events` (as `events`, or its aliases `e` and `p`).
/// Walking a whole index in order is allowed only in a statement with a LIMIT: it stops
/// at the page's end.
fn full_scans(store: &Store, sql: &str) -> Vec<String> {
    let mut stmt = store
        .conn()
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap();
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    lines
        .into_iter()
        .filter(|line| {
            let mut words = line.split_whitespace();
            let scan = words.next() == Some("SCAN");
            let table = words.next().unwrap_or("");
            let events = matches!(table, "events" | "e" | "p");
            let ordered_walk =
                line.contains("USING INDEX") || line.contains("USING COVERING INDEX");
            scan && events && !(ordered_walk && sql.contains(" LIMIT "))
        })
        .collect()
}

/// The filters the dashboard and the CLI ask for.
fn dashboard_filters() -> Vec<Filter> {
    let since = Some(time(86_400_000 + 123));
    let until = Some(time(3 * 86_400_000));
    let serious = vec!["self-harm".to_string(), "terrorism".to_string()];
    let f = Filter::default;
    vec![
        f(),
        Filter {
            since: since.clone(),
            ..f()
        },
        Filter {
            since: since.clone(),
            until: until.clone(),
            ..f()
        },
        Filter {
            until: until.clone(),
            ..f()
        },
        Filter {
            category: Some("self-harm".into()),
            unreviewed: true,
            ..f()
        },
        Filter {
            category: Some("adult".into()),
            since: since.clone(),
            ..f()
        },
        Filter {
            any_category: serious,
            unreviewed: true,
            ..f()
        },
        Filter {
            client: Some("10.0.0.2".into()),
            ..f()
        },
        Filter {
            client: Some("ipad-1".into()),
            since: since.clone(),
            ..f()
        },
        Filter {
            group: Some("pupils".into()),
            since: since.clone(),
            ..f()
        },
        Filter {
            reviewed: true,
            ..f()
        },
        Filter {
            unreviewed: true,
            ..f()
        },
        Filter {
            before: Some((time(2 * 86_400_000), 40)),
            ..f()
        },
    ]
}

#[test]
fn no_read_of_the_lead_scans_the_events_table() {
    let rows: Vec<Row> = (0..200)
        .map(|i| Row {
            at_ms: i * 1_700_000,
            span_ms: 30_000,
            set: (i % 6) as usize,
            group: (i % 3) as usize,
            client: (i % 4) as usize,
            device: (i % 4) as usize,
            name: (i % 5) as usize,
            blocked: i % 7 != 0,
            count: 1 + i % 3,
            reviewed: i % 5 == 0,
            purged: i % 11 == 0,
            deleted: false,
        })
        .collect();
    let (_dir, mut store) = store_with(&rows);
    let tz = chrono_tz::Europe::London;
    let mut checked = 0;
    for filter in dashboard_filters() {
        let page = Filter {
            limit: Some(51),
            ..filter.clone()
        };
        // Summaries always have a start: `audit summary` defaults it, the overview asks for
        // 30 days.
        let summarised = Filter {
            since: filter.since.clone().or_else(|| Some(time(86_400_000))),
            ..filter.clone()
        };
        let statements = traced(&mut store, |s| {
            review::list(s, &page).unwrap();
            review::count(s, &filter).unwrap();
            review::page_total(s, &filter).unwrap();
            review::summary(s, &summarised).unwrap();
            review::summary_without_names(s, &summarised).unwrap();
            review::by_local_day(s, &summarised, tz).unwrap();
            if let Some(since) = &filter.since {
                review::daily_by_category(s, since, tz).unwrap();
            }
            review::get(s, 3).unwrap();
            review::reviews_of(s, 5).unwrap();
        });
        for sql in statements {
            let scans = full_scans(&store, &sql);
            assert!(scans.is_empty(), "{sql}\nscans events: {scans:?}");
            checked += 1;
        }
    }
    // The test is not vacuous: it saw the reads' statements, including index ranges.
    assert!(checked > 100, "only {checked} statements traced");
}

/// The check above can fail: the queries Warden ran before version 3 of the log did.
#[test]
fn the_plan_check_catches_a_scan() {
    let (_dir, store) = store_with(&[]);
    let (clause, _) = reference_where(&Filter {
        since: Some(time(0)),
        ..Filter::default()
    });
    let old_summary = format!(
        "SELECT e.grp, sum(e.count) FROM events e WHERE {} GROUP BY e.grp",
        clause.replace("?1", "'2026-03-01T00:00:00.000Z'")
    );
    assert!(!full_scans(&store, &old_summary).is_empty());
}
