//! Retention purges that scale: the personal data of rows past their retention is
//! deleted in small transactions, found along an index, so a year of a big school's
//! blocks (10M rows) costs nothing when nothing is due and never holds the write lock
//! long enough to make another writer (the CLI's `review`, the dashboard) give up.
//!
//! ## Exact per-category retention from index ranges
//! A row is due when it is sealed and `last_seen < expiry(categories)`, its categories'
//! longest retention ([`Retention::expiry`]). `category_sets` (filled by a trigger on
//! insert) lists every distinct `categories` value, so a purge takes each set in turn,
//! works out its own expiry `e`, and range-scans `events_categories(categories,
//! first_seen) WHERE purged = 0` for `first_seen < e`: since `first_seen <= last_seen`,
//! every due row lies in that range, and the per-row check `last_seen < e` keeps out the
//! few in it that are not due (rows whose span crosses `e`, at most `max_span` wide, and
//! open rows). Purged rows leave the partial index, so each batch starts the range
//! afresh and meets only those few again. With nothing due, a purge is one short index
//! seek per category set.
//!
//! ## Small transactions
//! [`Store::purge_step`] purges at most `limit` rows (default [`PURGE_BATCH`]) in one
//! transaction and commits; a [`PurgeRun`] remembers which category sets are left. The
//! writer runs one step per tick, between its flushes, so blocks keep being written
//! while a large purge (the first after a retention was shortened) works through
//! millions of rows. [`Store::purge`] runs the steps back to back (CLI, tests), still one
//! small transaction each, so other connections get the lock between them.
//!
//! Setting `purged = 1` fires `events_tally_gone`, which keeps the rollups right.

use std::time::{Duration, Instant, SystemTime};

use rusqlite::params;

use super::rfc3339;
use super::store::{personal_digest, AuditError, Retention, Store};

/// Rows purged per transaction. Each costs a digest, an update of the row, of its
/// partial indexes and of the rollups, about 0.14 ms at 1M rows (the `scale_tests`
/// measurement): a batch holds the write lock for about 0.15 s, far inside the 5 s
/// another writer waits for it, and the writer's one batch per tick still purges
/// millions of rows an hour.
pub const PURGE_BATCH: usize = 1000;

/// Bounds of the pause between two batches of [`Store::purge`].
const PAUSE_MIN: Duration = Duration::from_millis(1);
const PAUSE_MAX: Duration = Duration::from_millis(100);

/// The due rows of one category set, oldest first, along `events_categories`, with
/// the personal columns in the order of `store::PERSONAL_COLUMNS` (a test checks).
/// `?1` the set, `?2` its expiry, `?3` the batch limit.
pub(crate) const DUE_ROWS: &str = "SELECT id, salt, client_ip, device, name, cname, mac, \
     user_name, sources FROM events \
     WHERE categories = ?1 AND purged = 0 AND first_seen < ?2 \
     AND last_seen < ?2 AND seq IS NOT NULL ORDER BY first_seen LIMIT ?3";

/// Sign-ins past the default retention, oldest first, along `signins_at`.
pub(crate) const DUE_SIGNINS: &str =
    "DELETE FROM signins WHERE id IN (SELECT id FROM signins WHERE at < ?1 ORDER BY at LIMIT ?2)";

/// A purge in progress: the category sets still to go through, then the sign-ins.
#[derive(Debug, Clone)]
pub struct PurgeRun {
    /// Taken from the end; a set is dropped once a batch finds fewer due rows than it
    /// asked for.
    sets: Vec<String>,
    signins_done: bool,
}

/// What one [`Store::purge_step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeStep {
    /// Events whose personal data was deleted.
    pub purged: u64,
    /// Sign-in records deleted.
    pub signins: u64,
    /// Nothing more is due: the run is over.
    pub done: bool,
}

impl Store {
    /// Delete the personal data (client, device, name, CNAME, salt) of sealed rows past
    /// their retention, keeping the personal digest and the public columns so the chain
    /// still verifies; and delete sign-ins past the default retention. Runs
    /// [`Store::purge_step`]s of [`PURGE_BATCH`] rows until nothing is due, each its own
    /// transaction. Returns how many events were purged.
    pub fn purge(&mut self, now: SystemTime, policy: &Retention) -> Result<u64, AuditError> {
        let mut run = self.start_purge()?;
        let mut total = 0;
        loop {
            let began = Instant::now();
            let step = self.purge_step(&mut run, now, policy, PURGE_BATCH)?;
            total += step.purged;
            if step.done {
                return Ok(total);
            }
            // Leave the lock free as long again as the batch held it: another writer's
            // busy handler retries every few (up to 100) milliseconds, and would seldom
            // catch a lock freed only for the instant between two transactions.
            std::thread::sleep(began.elapsed().clamp(PAUSE_MIN, PAUSE_MAX));
        }
    }

    /// A new purge run over the category sets the log holds now (sets first seen later
    /// are purged by the next run).
    pub fn start_purge(&self) -> Result<PurgeRun, AuditError> {
        let mut stmt = self
            .conn()
            .prepare("SELECT categories FROM category_sets ORDER BY categories DESC")
            .map_err(|e| self.wrap(e))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.wrap(e))?;
        let sets = rows
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.wrap(e))?;
        Ok(PurgeRun {
            sets,
            signins_done: false,
        })
    }

    /// Purge at most `limit` due rows (from as many category sets as it takes), then,
    /// once every set is done, up to the rest of `limit` sign-ins; all in one
    /// transaction. Expiries are worked out from `now` at each step.
    pub fn purge_step(
        &mut self,
        run: &mut PurgeRun,
        now: SystemTime,
        policy: &Retention,
        limit: usize,
    ) -> Result<PurgeStep, AuditError> {
        let limit = limit.max(1);
        let path = self.path().to_path_buf();
        let err = |source| AuditError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.transaction().map_err(err)?;
        let mut step = PurgeStep::default();
        while let Some(set) = run.sets.last() {
            let room = limit - step.purged as usize;
            if room == 0 {
                break;
            }
            let due = rfc3339(policy.expiry(set, now));
            let n = purge_set(&tx, set, &due, room).map_err(err)?;
            step.purged += n as u64;
            if n < room {
                run.sets.pop();
            }
        }
        let room = limit - step.purged as usize;
        if run.sets.is_empty() && !run.signins_done && room > 0 {
            // Sign-in records hold staff members' addresses: kept as long as the
            // default retention, then deleted (they are not part of the chain).
            let due = rfc3339(policy.expiry("", now));
            let n = tx
                .prepare_cached(DUE_SIGNINS)
                .and_then(|mut s| s.execute(params![due, room as i64]))
                .map_err(err)?;
            step.signins = n as u64;
            run.signins_done = n < room;
            // Requests to unblock a site say who asked: blanked at the same age (what
            // was asked and decided stays, for the review).
            tx.prepare_cached(DUE_REQUESTS)
                .and_then(|mut s| s.execute(params![due]))
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        step.done = run.sets.is_empty() && run.signins_done;
        Ok(step)
    }
}

/// Blank who asked in requests to unblock a site filed before `?1`
/// ([`crate::requests`]).
const DUE_REQUESTS: &str = "UPDATE unblock_requests SET client_ip = '', device = NULL, \
     requester = NULL WHERE at < ?1 AND (client_ip <> '' OR device IS NOT NULL OR requester IS NOT NULL)";

/// Purge up to `limit` due rows of category set `categories` (expiry `due`); returns
/// how many.
fn purge_set(
    tx: &rusqlite::Transaction<'_>,
    categories: &str,
    due: &str,
    limit: usize,
) -> rusqlite::Result<usize> {
    // Read the batch first, then update: the updates take the rows out of the index
    // being read.
    let rows: Vec<(i64, String)> = {
        let mut stmt = tx.prepare_cached(DUE_ROWS)?;
        let rows = stmt.query_map(params![categories, due, limit as i64], |row| {
            Ok((row.get(0)?, personal_digest(row, 1)?))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut update = tx.prepare_cached(
        "UPDATE events SET purged = 1, personal = ?2, salt = NULL, client_ip = '', \
         device = NULL, name = '', cname = NULL, mac = NULL, user_name = NULL, sources = NULL \
         WHERE id = ?1",
    )?;
    for (id, digest) in &rows {
        update.execute(params![id, digest])?;
    }
    Ok(rows.len())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audit::review;
    use crate::audit::store::Verification;
    use crate::audit::{Event, Key, Outcome, Pending};
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    const WINDOW: Duration = Duration::from_secs(60);
    const DAY: u64 = 86_400;
    /// 2027-01-15T08:00:00Z: rows are generated after it.
    pub(crate) const T0: u64 = 1_800_000_000;

    pub(crate) fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A new row's entry: `name` blocked for `categories`, seen from `first` to `last`.
    pub(crate) fn row(
        name: &str,
        categories: &str,
        first: SystemTime,
        last: SystemTime,
    ) -> (Key, Pending) {
        let client = std::net::IpAddr::from([10, 0, 0, 4]);
        let event = Event {
            time: first,
            client,
            device: Some("tablet".into()),
            group: "pupils".into(),
            name: name.into(),
            qtype: "A".into(),
            categories: categories.into(),
            locked: false,
            list: "l".into(),
            line: 1,
            rule: name.into(),
            response: "nxdomain".into(),
            cname: Some("alias.test".into()),
            outcome: Outcome::Blocked,
            identity: Default::default(),
        };
        let key = Key::of(&event);
        let pending = Pending {
            count: 2,
            first,
            last,
            event,
        };
        (key, pending)
    }

    /// Write `rows` through the writer's path, every one sealed.
    pub(crate) fn write_sealed(store: &mut Store, rows: &[(Key, Pending)]) {
        let now = rows.iter().map(|(_, p)| p.last).max().unwrap_or(at(T0));
        store
            .write_batch(
                rows,
                &mut crate::audit::store::OpenRows::default(),
                WINDOW,
                now,
                true,
            )
            .unwrap();
    }

    /// Write `rows` as open rows (their window not closed yet: never purged).
    fn write_open(store: &mut Store, rows: &[(Key, Pending)]) {
        let now = rows.iter().map(|(_, p)| p.first).min().unwrap_or(at(T0));
        let stats = store
            .write_batch(
                rows,
                &mut crate::audit::store::OpenRows::default(),
                WINDOW,
                now,
                false,
            )
            .unwrap();
        assert_eq!(stats.sealed, 0);
    }

    fn one(store: &Store, sql: &str) -> i64 {
        store.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    const SETS: [&str; 5] = [
        "adult",
        "gambling",
        "terrorism",
        "adult,terrorism",
        "gambling,adult",
    ];
    const CATEGORIES: [&str; 3] = ["adult", "gambling", "terrorism"];

    /// A row's retention in days, worked out here from the policy's definition (the
    /// longest of its categories' retentions, a category without its own taking the
    /// default), not by the code under test.
    fn days_kept(categories: &str, default: u32, by: &BTreeMap<String, u32>) -> u64 {
        let days = categories.split(',').map(|c| by.get(c).unwrap_or(&default));
        u64::from(*days.max().unwrap_or(&default))
    }

    /// A row's first minute after `T0`, within 10 days; half of them within two
    /// minutes of a whole day, where expiries fall.
    fn minute() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..10 * 1440,
            (1u64..10, 0u64..5).prop_map(|(day, jitter)| day * 1440 + jitter - 2),
        ]
    }

    /// The names (from `names`, by id) of the rows purged with every personal column
    /// blanked and the digest kept.
    fn blanked(store: &Store, names: &HashMap<i64, String>) -> BTreeSet<String> {
        let mut stmt = store
            .conn()
            .prepare(
                "SELECT id FROM events WHERE purged = 1 AND client_ip = '' AND name = '' \
                 AND device IS NULL AND cname IS NULL AND salt IS NULL \
                 AND personal IS NOT NULL",
            )
            .unwrap();
        let ids = stmt.query_map([], |r| r.get::<_, i64>(0)).unwrap();
        ids.map(|id| names[&id.unwrap()].clone()).collect()
    }

    proptest! {
        // Each case writes a database: a couple of dozen cover the shapes.
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// After a purge in batches of any size, exactly the sealed rows last seen
        /// before their retention ended are purged (a row whose last sighting is the
        /// expiry itself is kept; open rows are never purged), their personal data is
        /// gone, the chain verifies with no early purge, the rollups count only the
        /// rows left, and a second purge finds nothing.
        #[test]
        fn purge_is_exact_per_category_and_batch_size(
            rows in prop::collection::vec(
                (minute(), 0u64..4, 0..SETS.len(), prop::bool::weighted(0.15)),
                1..120,
            ),
            default_days in 0u32..8,
            overrides in prop::collection::btree_map(0..CATEGORIES.len(), 0u32..8, 0..3),
            limit in 1usize..40,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(&dir.path().join("a.sqlite")).unwrap();
            let by: BTreeMap<String, u32> = overrides
                .iter()
                .map(|(c, d)| (CATEGORIES[*c].to_string(), *d))
                .collect();
            let policy = Retention { default_days, by_category: by.clone() };
            // Whole minutes, spans of 0-3 minutes, and `now` a whole number of days
            // later: many rows are last seen at or next to their expiry.
            let now = at(T0 + 10 * DAY);
            let mut expected = BTreeSet::new();
            let (mut sealed, mut open) = (Vec::new(), Vec::new());
            for (i, (minute, span, set, is_open)) in rows.iter().enumerate() {
                let name = format!("r{i}.test");
                let first = T0 + minute * 60;
                let last = first + span * 60;
                let entry = row(&name, SETS[*set], at(first), at(last));
                let expiry = (T0 + 10 * DAY).saturating_sub(days_kept(SETS[*set], default_days, &by) * DAY);
                if *is_open {
                    open.push(entry);
                } else {
                    if last < expiry {
                        expected.insert(name);
                    }
                    sealed.push(entry);
                }
            }
            write_sealed(&mut store, &sealed);
            write_open(&mut store, &open);
            let names: HashMap<i64, String> = {
                let mut stmt = store.conn().prepare("SELECT id, name FROM events").unwrap();
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
                rows.collect::<rusqlite::Result<_>>().unwrap()
            };
            let mut run = store.start_purge().unwrap();
            let mut total = 0;
            for _ in 0..=rows.len() + SETS.len() + 1 {
                let step = store.purge_step(&mut run, now, &policy, limit).unwrap();
                prop_assert!(step.purged as usize <= limit);
                total += step.purged;
                if step.done {
                    break;
                }
            }
            prop_assert_eq!(&blanked(&store, &names), &expected);
            prop_assert_eq!(total as usize, expected.len());
            prop_assert_eq!(one(&store, "SELECT count(*) FROM events WHERE purged = 1"), expected.len() as i64);
            prop_assert_eq!(
                store.verify(Some(&policy), now).unwrap(),
                Verification::Intact {
                    rows: sealed.len() as u64,
                    purged: expected.len() as u64,
                    open: open.len() as u64,
                }
            );
            prop_assert_eq!(
                one(&store, "SELECT coalesce(sum(blocks), 0) FROM tally"),
                one(&store, "SELECT coalesce(sum(count), 0) FROM events WHERE purged = 0")
            );
            prop_assert_eq!(
                one(&store, "SELECT coalesce(sum(events), 0) FROM tally"),
                one(&store, "SELECT count(*) FROM events WHERE purged = 0")
            );
            prop_assert_eq!(store.purge(now, &policy).unwrap(), 0);
        }
    }

    /// The rows a purge reads are index ranges: with nothing due it costs one short
    /// seek per category set, however large the log.
    #[test]
    fn the_purge_reads_along_indexes_never_scanning_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("a.sqlite")).unwrap();
        write_sealed(&mut store, &[row("a.test", "adult", at(T0), at(T0 + 5))]);
        let plan = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Vec<String> {
            let mut stmt = store
                .conn()
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let rows = stmt.query_map(params, |r| r.get::<_, String>(3)).unwrap();
            rows.collect::<rusqlite::Result<_>>().unwrap()
        };
        let due = plan(DUE_ROWS, &[&"adult", &"2027-01-01T00:00:00.000Z", &2000]);
        assert_eq!(
            due,
            ["SEARCH events USING INDEX events_categories (categories=? AND first_seen<?)"],
            "{due:?}"
        );
        let signins = plan(DUE_SIGNINS, &[&"2027-01-01T00:00:00.000Z", &2000]);
        assert!(
            signins
                .iter()
                .any(|d| d.contains("USING COVERING INDEX signins_at (at<?)")
                    || d.contains("USING INDEX signins_at (at<?)")),
            "{signins:?}"
        );
        assert!(
            !signins.iter().any(|d| d.starts_with("SCAN")),
            "{signins:?}"
        );
    }

    /// `DUE_ROWS` hands `personal_digest` the personal columns in the chain's order.
    #[test]
    fn the_due_rows_select_the_personal_columns_in_chain_order() {
        let columns = crate::audit::store::PERSONAL_COLUMNS;
        assert!(DUE_ROWS.starts_with(&format!("SELECT id, {columns} FROM events")));
    }

    /// A purge of many rows commits in batches: a review written from another
    /// connection while it runs gets the lock (within its 5 s busy timeout) and commits
    /// before the purge has finished.
    #[test]
    fn a_large_purge_leaves_the_write_lock_free_between_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sqlite");
        let mut store = Store::open(&path).unwrap();
        let total = 4 * PURGE_BATCH + 100;
        let mut rows: Vec<(Key, Pending)> = (0..total)
            .map(|i| {
                let t = at(T0 + i as u64);
                row(&format!("old{i}.test"), "adult", t, t)
            })
            .collect();
        let recent = at(T0 + 100 * DAY);
        rows.push(row("recent.test", "adult", recent, recent));
        write_sealed(&mut store, &rows);
        let other = Store::open(&path).unwrap();
        let recent_id = one(&other, "SELECT id FROM events WHERE name = 'recent.test'");
        let now = at(T0 + 101 * DAY);
        let policy = Retention {
            default_days: 30,
            by_category: BTreeMap::new(),
        };
        let purge = std::thread::spawn(move || store.purge(now, &policy).map(|n| (n, store)));
        let purged = || one(&other, "SELECT count(*) FROM events WHERE purged = 1");
        // Wait (bounded) for proof that the purge is mid-way: a batch committed.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = purged();
            if n > 0 {
                assert!((n as usize) < total, "the purge ended before it was seen");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no purge batch committed in 60 s"
            );
            std::thread::yield_now();
        }
        review::add_review(&other, recent_id, "incident", "mid-purge", "lead", now)
            .expect("a write from another connection gets the lock during a large purge");
        let n = purged();
        assert!(
            (n as usize) < total,
            "the review committed only after the purge ended"
        );
        let (n, store) = purge.join().unwrap().unwrap();
        assert_eq!(n as usize, total);
        assert_eq!(one(&store, "SELECT count(*) FROM reviews"), 1);
        assert!(matches!(
            store.verify(None, now).unwrap(),
            Verification::Intact { purged, .. } if purged as usize == total
        ));
    }
}
