//! Rough measurements of retention purges and verify at a big school's scale (issue #13,
//! item 3), `#[ignore]`d because they take minutes:
//!
//! ```sh
//! WARDEN_SCALE_ROWS=1000000 cargo test --lib audit::scale_tests -- --ignored --nocapture
//! ```
//!
//! A year of rows is written through the writer's own path ([`Store::write_batch`]),
//! then each operation is timed and printed beside a baseline timed in the same run (the
//! v3 purge's candidate query, a full scan; the full verify). Nothing about time is
//! asserted: results only, as the house rules ask.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use super::checkpoint::{self, Mode};
use super::purge::tests::row;
use super::purge::PURGE_BATCH;
use super::rfc3339;
use super::store::{Retention, Store};
use super::{Key, Pending};

const SETS: [&str; 8] = [
    "adult",
    "gambling",
    "social",
    "games",
    "adult,gambling",
    "terrorism",
    "self-harm",
    "malware",
];
const DAY: u64 = 86_400;

/// `rows` rows spread evenly over the year before `now`, in batches of 10 000.
fn write_year(store: &mut Store, rows: u64, now: SystemTime) {
    let step_ms = 365 * DAY * 1000 / rows;
    let start = now - Duration::from_secs(365 * DAY);
    let mut done = 0;
    while done < rows {
        let batch: Vec<(Key, Pending)> = (done..(done + 10_000).min(rows))
            .map(|i| {
                let first = start + Duration::from_millis(i * step_ms);
                let last = first + Duration::from_secs(i % 50);
                let set = SETS[(i % 97 % SETS.len() as u64) as usize];
                row(&format!("site{}.example", i % 50_000), set, first, last)
            })
            .collect();
        let last = batch.last().map(|(_, p)| p.last).unwrap_or(now);
        store
            .write_batch(
                &batch,
                &mut crate::audit::store::OpenRows::default(),
                Duration::from_secs(60),
                last,
                true,
            )
            .unwrap();
        done += batch.len() as u64;
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let began = Instant::now();
    let out = f();
    (out, began.elapsed())
}

/// The v3 purge's first statement: every sealed, unpurged row last seen before the
/// shortest retention's horizon (no index on `last_seen`: a full scan).
fn old_candidates(store: &Store, horizon: SystemTime) -> i64 {
    store
        .conn()
        .query_row(
            "SELECT count(*) FROM (SELECT id, last_seen, categories FROM events \
             WHERE seq IS NOT NULL AND purged = 0 AND last_seen < ?1)",
            [rfc3339(horizon)],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
#[ignore]
fn purge_and_verify_at_scale() {
    let rows: u64 = std::env::var("WARDEN_SCALE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scale.sqlite");
    let mut store = Store::open(&path).unwrap();
    let now = SystemTime::now();
    let ((), t) = timed(|| write_year(&mut store, rows, now));
    let size = std::fs::metadata(&path).unwrap().len() + wal_size(&path);
    println!("wrote {rows} rows in {t:.1?} ({} MB)", size >> 20);
    // Nothing due: kept 400 days, terrorism 7 years.
    let keep = Retention {
        default_days: 400,
        by_category: BTreeMap::from([("terrorism".to_string(), 2555)]),
    };
    nothing_due(&mut store, &keep, now);
    verify_modes(&mut store, rows, now);
    // A month due: kept 335 days.
    let shorter = Retention {
        default_days: 335,
        ..keep.clone()
    };
    purge_batches(&mut store, &shorter, now);
    nothing_due(&mut store, &shorter, now);
}

fn wal_size(db: &std::path::Path) -> u64 {
    let wal = std::path::PathBuf::from(format!("{}-wal", db.display()));
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// Time a purge that finds nothing, against the v3 purge's scan.
fn nothing_due(store: &mut Store, policy: &Retention, now: SystemTime) {
    let horizon = now - Duration::from_secs(DAY * 335);
    let mut base = Vec::new();
    let mut new = Vec::new();
    for _ in 0..5 {
        base.push(timed(|| old_candidates(store, horizon)).1);
        let (n, t) = timed(|| store.purge(now, policy).unwrap());
        assert_eq!(n, 0);
        new.push(t);
    }
    let (b, n) = (median(&mut base), median(&mut new));
    println!(
        "purge, nothing due: {n:.2?} (v3 candidate scan: {b:.2?}; ratio {:.4}), median of 5",
        n.as_secs_f64() / b.as_secs_f64()
    );
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Full verify (records a checkpoint), then a day's rows, then the incremental verify.
fn verify_modes(store: &mut Store, rows: u64, now: SystemTime) {
    let (full, t_full) = timed(|| checkpoint::verify(store, Mode::Full, None, now).unwrap());
    assert!(full.is_intact(), "{full:?}");
    let day = rows / 365;
    let later: Vec<(Key, Pending)> = (0..day)
        .map(|i| {
            let t = now + Duration::from_millis(i * 1000 * DAY / day.max(1));
            row(&format!("new{i}.example"), "adult", t, t)
        })
        .collect();
    let last = later.last().map(|(_, p)| p.last).unwrap_or(now);
    store
        .write_batch(
            &later,
            &mut crate::audit::store::OpenRows::default(),
            Duration::from_secs(60),
            last,
            true,
        )
        .unwrap();
    let (quick, t_quick) =
        timed(|| checkpoint::verify(store, Mode::Incremental, None, now).unwrap());
    assert!(quick.is_intact(), "{quick:?}");
    println!(
        "verify full ({} rows): {t_full:.2?}; incremental after a day's {day} rows: \
         {t_quick:.2?} (ratio {:.4})",
        full.head,
        t_quick.as_secs_f64() / t_full.as_secs_f64()
    );
}

/// A purge with a month of rows due, batch by batch: how long each holds the lock.
fn purge_batches(store: &mut Store, policy: &Retention, now: SystemTime) {
    let mut run = store.start_purge().unwrap();
    let (mut times, mut total) = (Vec::new(), 0);
    let began = Instant::now();
    loop {
        let (step, t) = timed(|| {
            store
                .purge_step(&mut run, now, policy, PURGE_BATCH)
                .unwrap()
        });
        times.push(t);
        total += step.purged;
        if step.done {
            break;
        }
    }
    let all = began.elapsed();
    let max = times.iter().max().copied().unwrap_or_default();
    println!(
        "purge of {total} due rows: {all:.2?} in {} transactions of <= {PURGE_BATCH} rows; \
         median {:.1?}, longest {max:.1?} per transaction",
        times.len(),
        median(&mut times)
    );
}
