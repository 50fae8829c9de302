//! The audit writer: a dedicated thread that owns the database connection (SQLite is
//! blocking I/O, kept off the async runtime), drains the query path's [`Sink`] at least
//! once per `flush_interval`, seals rows whose window has closed, and purges daily:
//! one small purge transaction per tick after the write, until nothing is due
//! ([`super::purge`]), so a large purge never holds up the flushes.
//!
//! ## A full or failing disk
//! An event counts as written only once the transaction holding it has committed. A
//! failed write (disk full, I/O error, database locked) keeps the whole batch in the
//! writer's [`Backlog`], merged by key with what arrives meanwhile, and retries it after
//! `flush_interval`, doubling up to [`MAX_RETRY_WAIT`]. While held, the backlog keeps at
//! most `max_pending` keys with their own detail (the earliest sightings); the rest are
//! folded into per-client, then one global, overflow entries, as the [`Sink`] does under
//! a flood: every count survives, the per-name detail degrades, memory stays bounded.
//! When the disk recovers, everything held is written. `warden_audit_pending` (answered,
//! not yet committed) and `warden_audit_write_errors_total` show the state.
//!
//! Stopping drains, writes and seals everything. If the write still fails after
//! [`STOP_GRACE`] of retries, [`Writer::stop`] returns [`AuditError::Unwritten`] with the
//! number of events not written, which `warden serve` logs and turns into its exit
//! status.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::purge::{PurgeRun, PURGE_BATCH};
use super::store::{AuditError, BatchStats, OpenRows, Retention, Store};
use super::{fold_event, Key, Pending, Sink, OVERFLOW_CLIENT, OVERFLOW_NAME};
use crate::config::AuditConfig;

/// How often retention purges run.
const PURGE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// How often the writer logs its counters (when anything happened).
const REPORT_EVERY: Duration = Duration::from_secs(300);
/// Retries of a failed write never wait longer than this.
pub(crate) const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// How long a stop keeps retrying a failing write before giving up (well within
/// systemd's stop timeout).
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(2);
/// The rule column of an overflow entry folded while writes were failing.
const BACKLOG_RULE: &str = "(write backlog: names folded)";

/// What the writer needs to know.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub window: Duration,
    pub flush_interval: Duration,
    pub retention_days: u32,
    pub retention_by_category: BTreeMap<String, u32>,
}

impl WriterSettings {
    /// The settings `[audit]` configures.
    pub fn from_config(audit: &AuditConfig) -> WriterSettings {
        let Retention {
            default_days,
            by_category,
        } = Retention::from_config(audit);
        WriterSettings {
            window: audit.window,
            flush_interval: audit.flush_interval,
            retention_days: default_days,
            retention_by_category: by_category,
        }
    }

    /// The retention the daily purge applies.
    pub fn retention(&self) -> Retention {
        Retention {
            default_days: self.retention_days,
            by_category: self.retention_by_category.clone(),
        }
    }
}

/// Counters for logs and metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub rows_inserted: AtomicU64,
    pub rows_updated: AtomicU64,
    pub rows_sealed: AtomicU64,
    /// Events in committed transactions.
    pub events_written: AtomicU64,
    pub write_errors: AtomicU64,
    pub purged: AtomicU64,
    /// Events whose name the writer folded while holding a failed write.
    pub events_folded: AtomicU64,
    /// Events held for a retry after the last write failed (0 after a success).
    pub events_held: AtomicU64,
}

impl WriterStats {
    /// Events answered but not yet committed: recorded in `sink`, queued there, or held
    /// for a retry.
    pub fn pending(&self, sink: &Sink) -> u64 {
        // Written first: both only grow and written never passes received, so a write
        // committing between the two reads cannot make the difference wrap.
        let written = self.events_written.load(Ordering::Acquire);
        sink.received().saturating_sub(written)
    }
}

/// A running writer; call [`Writer::stop`] to flush and end it.
pub struct Writer {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<Result<(), AuditError>>>,
    stats: Arc<WriterStats>,
}

impl Writer {
    /// Seal rows a crash left open, then start writing `sink`'s events to `store`.
    pub fn start(
        mut store: Store,
        sink: Sink,
        settings: WriterSettings,
    ) -> Result<Writer, AuditError> {
        store.use_for_writing()?;
        let resealed = store.seal_open_rows()?;
        if resealed > 0 {
            tracing::warn!(
                rows = resealed,
                "sealed audit rows left open by an unclean stop"
            );
        }
        let stats = Arc::new(WriterStats::default());
        let (stop, stopped) = mpsc::channel();
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run(store, sink, settings, stopped, &thread_stats))
            .map_err(|e| AuditError::Invalid(format!("cannot start the audit writer: {e}")))?;
        Ok(Writer {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    /// The counters, shareable (for `/metrics`).
    pub(crate) fn stats_handle(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Drain, write and seal everything, then stop.
    pub fn stop(mut self) -> Result<(), AuditError> {
        let _ = self.stop.send(());
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(AuditError::Invalid("the audit writer panicked".into())),
            None => Ok(()),
        }
    }
}

fn run(
    mut store: Store,
    sink: Sink,
    settings: WriterSettings,
    stopped: mpsc::Receiver<()>,
    stats: &WriterStats,
) -> Result<(), AuditError> {
    yield_to_queries();
    let mut backlog = Backlog::new(sink.max_pending(), settings.window);
    let mut wait = settings.flush_interval;
    let mut purger = Purger::default();
    let mut last_report = (Instant::now(), 0u64);
    loop {
        if let Ok(()) | Err(RecvTimeoutError::Disconnected) = stopped.recv_timeout(wait) {
            let result = finish(&mut backlog, &mut store, &sink, &settings, stats);
            report(&sink, stats, &backlog);
            return result;
        }
        wait = match backlog.write(&mut store, &sink, stats, SystemTime::now(), false) {
            Ok(_) => settings.flush_interval,
            Err(error) => {
                let wait = retry_wait(settings.flush_interval, backlog.failures);
                tracing::error!(
                    %error,
                    events = backlog.held_events(),
                    retry_in = ?wait,
                    "audit write failed; holding the events to retry"
                );
                wait
            }
        };
        purger.tick(&mut store, &settings, stats);
        let received = sink.received();
        if last_report.0.elapsed() >= REPORT_EVERY && received != last_report.1 {
            report(&sink, stats, &backlog);
            last_report = (Instant::now(), received);
        }
    }
}

/// Lower this thread's priority to the least: on a two-core Pi the writer shares a core
/// with the DNS threads, and a transaction of a few milliseconds must not delay the
/// answers queued behind it. `SCHED_IDLE`, because the kernel then preempts the writer
/// the moment a DNS thread wakes; at nice 19 alone a woken DNS thread could wait for the
/// writer's time slice (milliseconds: it tripled blocked p99 at 50k q/s). The writer
/// still gets the time the query path leaves, and some under full load; under a
/// sustained flood the coalescer's bounds (folding, counts kept) take the strain, not
/// the answers. Nice 19 too, for systems that refuse the policy.
fn yield_to_queries() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on this thread's own id; `param` outlives the call.
        let (niced, idle) = unsafe {
            let tid = libc::gettid();
            let niced = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) == 0;
            let param = libc::sched_param { sched_priority: 0 };
            let idle = libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) == 0;
            (niced, idle)
        };
        if !(niced && idle) {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                niced,
                idle,
                "could not lower the audit writer's priority"
            );
        }
    }
}

/// The last write, sealing every open row: retried for up to [`STOP_GRACE`], then
/// given up, saying how many events it could not write.
fn finish(
    backlog: &mut Backlog,
    store: &mut Store,
    sink: &Sink,
    settings: &WriterSettings,
    stats: &WriterStats,
) -> Result<(), AuditError> {
    let deadline = Instant::now() + STOP_GRACE;
    // A fresh schedule: a long backoff from before the stop must not use up the grace.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match backlog.write(store, sink, stats, SystemTime::now(), true) {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        let wait = retry_wait(settings.flush_interval, attempt);
        if Instant::now() + wait > deadline {
            return Err(AuditError::Unwritten {
                events: backlog.held_events(),
                source: Box::new(error),
            });
        }
        tracing::warn!(%error, events = backlog.held_events(), "audit write failed while stopping; retrying");
        std::thread::sleep(wait);
    }
}

/// The daily retention purge, spread over the writer's ticks: one transaction of at
/// most [`PURGE_BATCH`] rows per tick, after the tick's write, until nothing is due. A
/// failure is logged and the purge retried the next day.
#[derive(Default)]
struct Purger {
    /// When the last run started.
    started: Option<Instant>,
    run: Option<PurgeRun>,
    /// Events purged by the current run.
    purged: u64,
}

impl Purger {
    fn tick(&mut self, store: &mut Store, settings: &WriterSettings, stats: &WriterStats) {
        if self.run.is_none() {
            if self.started.is_some_and(|t| t.elapsed() < PURGE_EVERY) {
                return;
            }
            self.started = Some(Instant::now());
            self.purged = 0;
            match store.start_purge() {
                Ok(run) => self.run = Some(run),
                Err(error) => {
                    tracing::error!(%error, "audit retention purge failed");
                    return;
                }
            }
        }
        let Some(run) = self.run.as_mut() else {
            return;
        };
        match store.purge_step(run, SystemTime::now(), &settings.retention(), PURGE_BATCH) {
            Ok(step) => {
                stats.purged.fetch_add(step.purged, Ordering::Relaxed);
                self.purged += step.purged;
                if step.done {
                    self.run = None;
                    if self.purged > 0 {
                        tracing::info!(
                            rows = self.purged,
                            "purged audit rows past their retention"
                        );
                    }
                }
            }
            Err(error) => {
                self.run = None;
                tracing::error!(%error, "audit retention purge failed");
            }
        }
    }
}

/// How long to wait after `failures` failed writes in a row: `flush` doubling per
/// failure, at most [`MAX_RETRY_WAIT`] (and never less than `flush`).
pub(crate) fn retry_wait(flush: Duration, failures: u32) -> Duration {
    flush
        .saturating_mul(1u32 << failures.min(20))
        .min(MAX_RETRY_WAIT)
        .max(flush)
}

/// What the writer holds between two writes: the rows open in the database, and the
/// events not committed yet.
pub(crate) struct Backlog {
    open: OpenRows,
    held: HashMap<Key, Pending>,
    max_pending: usize,
    window: Duration,
    /// Failed writes in a row (0 after a success).
    failures: u32,
}

impl Backlog {
    pub(crate) fn new(max_pending: usize, window: Duration) -> Backlog {
        Backlog {
            open: OpenRows::default(),
            held: HashMap::new(),
            max_pending: max_pending.max(1),
            window,
            failures: 0,
        }
    }

    /// Drain `sink` and write it, with everything held, in one transaction. On success
    /// the events count as written; on failure they are all kept (folded to the bound)
    /// for the next attempt.
    pub(crate) fn write(
        &mut self,
        store: &mut Store,
        sink: &Sink,
        stats: &WriterStats,
        now: SystemTime,
        seal_all: bool,
    ) -> Result<BatchStats, AuditError> {
        for (key, pending) in sink.drain() {
            merge(&mut self.held, key, pending);
        }
        let batch: Vec<(Key, Pending)> = self.held.drain().collect();
        let events: u64 = batch.iter().map(|(_, p)| p.count).sum();
        match store.write_batch(&batch, &mut self.open, self.window, now, seal_all) {
            Ok(s) => {
                stats.rows_inserted.fetch_add(s.inserted, Ordering::Relaxed);
                stats.rows_updated.fetch_add(s.updated, Ordering::Relaxed);
                stats.rows_sealed.fetch_add(s.sealed, Ordering::Relaxed);
                stats.events_written.fetch_add(events, Ordering::Release);
                stats.events_held.store(0, Ordering::Relaxed);
                if self.failures > 0 {
                    tracing::info!(
                        events,
                        failed_writes = self.failures,
                        "audit writes recovered: the held events are written"
                    );
                }
                self.failures = 0;
                Ok(s)
            }
            Err(error) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                self.failures = self.failures.saturating_add(1);
                self.held.extend(batch);
                let folded = fold_excess(&mut self.held, self.max_pending);
                stats.events_folded.fetch_add(folded, Ordering::Relaxed);
                stats.events_held.store(events, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    /// Events held for a retry.
    pub(crate) fn held_events(&self) -> u64 {
        self.held.values().map(|p| p.count).sum()
    }
}

/// Keep at most `max` held keys with their own detail, the earliest sightings (a
/// device's first block is where an alert and a review start); fold the others into
/// their client's overflow entry, and once there are `2 * max` keys, into the global
/// one. Counts are kept. Returns how many events were folded.
fn fold_excess(held: &mut HashMap<Key, Pending>, max: usize) -> u64 {
    if held.len() <= max {
        return 0;
    }
    let mut entries: Vec<(Key, Pending)> = held.drain().collect();
    entries.sort_by(|a, b| a.1.first.cmp(&b.1.first).then_with(|| a.0.cmp(&b.0)));
    let rest = entries.split_off(max);
    held.extend(entries);
    let mut folded = 0;
    for (key, mut pending) in rest {
        let e = &pending.event;
        let mut client = e.client;
        let mut target = Key::overflow(client, e.outcome, &e.categories);
        if held.len() >= 2 * max && !held.contains_key(&target) {
            client = OVERFLOW_CLIENT;
            target = Key::overflow(client, e.outcome, &e.categories);
        }
        if target != key {
            if pending.event.name != OVERFLOW_NAME {
                folded += pending.count;
            }
            fold_event(&mut pending.event, client, BACKLOG_RULE);
        }
        merge(held, target, pending);
    }
    folded
}

/// One log line with the writer's counters (the ones a metrics endpoint will export).
fn report(sink: &Sink, stats: &WriterStats, backlog: &Backlog) {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let received = sink.received();
    let rows = get(&stats.rows_inserted);
    tracing::info!(
        events_received = received,
        events_written = get(&stats.events_written),
        events_held = backlog.held_events(),
        rows_written = rows,
        events_coalesced = received.saturating_sub(rows),
        events_folded = sink.folded() + get(&stats.events_folded),
        queue_depth = sink.queue_depth(),
        open_rows = backlog.open.len(),
        rows_sealed = get(&stats.rows_sealed),
        write_errors = get(&stats.write_errors),
        rows_purged = get(&stats.purged),
        "audit writer"
    );
}

/// Fold `pending` into `map` under `key`.
fn merge(map: &mut HashMap<Key, Pending>, key: Key, pending: Pending) {
    map.entry(key)
        .and_modify(|p| {
            p.count += pending.count;
            p.first = p.first.min(pending.first);
            p.last = p.last.max(pending.last);
        })
        .or_insert(pending);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::store::Verification;
    use crate::audit::{Event, Outcome, OVERFLOW_NAME};
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn event(client: IpAddr, name: &str) -> Event {
        Event {
            time: SystemTime::now(),
            client,
            device: None,
            group: "default".into(),
            name: name.into(),
            qtype: "A".into(),
            categories: "adult".into(),
            locked: false,
            list: "adult".into(),
            line: 1,
            rule: name.into(),
            response: "nxdomain".into(),
            cname: None,
            outcome: Outcome::Blocked,
            identity: Default::default(),
        }
    }

    fn record(sink: &Sink, client: [u8; 4], name: &str) {
        let e = event(IpAddr::from(client), name);
        sink.record(
            e.client,
            Default::default(),
            e.outcome,
            "adult",
            name,
            || e.clone(),
        );
    }

    /// A name long enough that a few hundred of them need many database pages.
    fn long_name(i: usize) -> String {
        format!("{i}-{}.blocked.test", "x".repeat(400))
    }

    /// Cap the database at its current size, as a full disk does ("database or disk is
    /// full"), or lift the cap.
    fn disk_full(store: &Store, full: bool) {
        let pages: i64 = store
            .conn()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let cap = if full { pages } else { 1 << 30 };
        let set: i64 = store
            .conn()
            .query_row(&format!("PRAGMA max_page_count = {cap}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(set, cap);
    }

    /// Sum of `count` over all rows, and rows still open.
    fn counted(store: &Store) -> (u64, u64) {
        store
            .conn()
            .query_row(
                "SELECT coalesce(sum(count), 0), count(*) FILTER (WHERE seq IS NULL) FROM events",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .unwrap()
    }

    fn intact(store: &Store) {
        let v = store.verify(None, SystemTime::now()).unwrap();
        assert!(matches!(v, Verification::Intact { .. }), "{v:?}");
    }

    /// The writer runs at the lowest priority, so the DNS threads go first on a shared core.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_writer_thread_runs_at_the_lowest_priority() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.sqlite")).unwrap();
        let sink = Sink::new(10);
        let settings = WriterSettings {
            flush_interval: Duration::from_millis(20),
            ..WriterSettings::from_config(&crate::config::AuditConfig::default())
        };
        let writer = Writer::start(store, sink, settings).unwrap();
        // (nice, scheduling policy) of the writer thread.
        let nice_of_writer = || {
            std::fs::read_dir("/proc/self/task").ok()?.find_map(|task| {
                let task = task.ok()?.path();
                let comm = std::fs::read_to_string(task.join("comm")).ok()?;
                if comm.trim() != "audit-writer" {
                    return None;
                }
                // Field 19 of stat is the nice value; the name (field 2) may hold spaces,
                // so count from its closing parenthesis.
                let stat = std::fs::read_to_string(task.join("stat")).ok()?;
                // Field 41 is the scheduling policy.
                let after = &stat[stat.rfind(')')? + 2..];
                let fields: Vec<&str> = after.split_whitespace().collect();
                Some((
                    fields.get(16)?.parse::<i32>().ok()?,
                    fields.get(38)?.parse::<i32>().ok()?,
                ))
            })
        };
        let lowest = Some((19, libc::SCHED_IDLE));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut nice = nice_of_writer();
        while nice != lowest && std::time::Instant::now() < deadline {
            std::thread::yield_now();
            nice = nice_of_writer();
        }
        writer.stop().unwrap();
        assert_eq!(nice, lowest, "the writer thread's nice value and policy");
        // The rest of the process keeps its own.
        let own = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        assert_eq!(own, 0);
    }

    #[test]
    fn retry_waits_double_from_the_flush_interval_up_to_the_cap() {
        let flush = Duration::from_millis(100);
        let waits: Vec<u128> = (1..=5).map(|f| retry_wait(flush, f).as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200]);
        assert_eq!(retry_wait(flush, 0), flush);
        assert_eq!(retry_wait(flush, 9), MAX_RETRY_WAIT);
        assert_eq!(retry_wait(flush, u32::MAX), MAX_RETRY_WAIT);
        // A flush interval above the cap is never shortened.
        let slow = MAX_RETRY_WAIT * 2;
        assert_eq!(retry_wait(slow, 3), slow);
    }

    /// The defect of a full disk: a rolled-back batch must leave the writer's map of
    /// open rows as the database is, so counts added to those rows later are kept and
    /// the final seal finds every row.
    #[test]
    fn a_failed_write_keeps_every_event_until_a_commit_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("audit.sqlite")).unwrap();
        let sink = Sink::new(10_000);
        let stats = WriterStats::default();
        let mut backlog = Backlog::new(sink.max_pending(), Duration::from_secs(60));
        let now = SystemTime::now;
        for i in 0..5 {
            record(&sink, [10, 0, 0, 1], &long_name(i));
        }
        backlog
            .write(&mut store, &sink, &stats, now(), false)
            .unwrap();
        assert_eq!(stats.events_written.load(Ordering::Relaxed), 5);

        disk_full(&store, true);
        for round in 0..3 {
            // Repeats of the open rows and new names: some inserts fit in the pages
            // already there before the batch fails.
            for i in 0..300 {
                record(&sink, [10, 0, 0, 1], &long_name(i));
            }
            let error = backlog
                .write(&mut store, &sink, &stats, now(), false)
                .unwrap_err();
            assert!(error.to_string().contains("full"), "{error}");
            let expected_held = 300 * (round + 1);
            assert_eq!(backlog.held_events(), expected_held);
            assert_eq!(stats.events_held.load(Ordering::Relaxed), expected_held);
            assert_eq!(
                stats.events_written.load(Ordering::Relaxed),
                5,
                "not committed"
            );
            assert_eq!(stats.pending(&sink), expected_held);
            assert_eq!(backlog.failures, round as u32 + 1);
        }
        assert_eq!(stats.write_errors.load(Ordering::Relaxed), 3);
        assert_eq!(
            counted(&store).0,
            5,
            "the failed batches left nothing behind"
        );

        disk_full(&store, false);
        backlog
            .write(&mut store, &sink, &stats, now(), false)
            .unwrap();
        assert_eq!((stats.pending(&sink), backlog.failures), (0, 0));
        assert_eq!(stats.events_held.load(Ordering::Relaxed), 0);
        // Later repeats land in the rows that exist, and the final seal finds them all.
        for i in 0..300 {
            record(&sink, [10, 0, 0, 1], &long_name(i));
        }
        backlog
            .write(&mut store, &sink, &stats, now(), true)
            .unwrap();
        assert_eq!(counted(&store), (sink.received(), 0));
        assert_eq!(sink.received(), 5 + 900 + 300);
        assert_eq!(
            stats.events_written.load(Ordering::Relaxed),
            sink.received()
        );
        assert!(backlog.open.is_empty());
        intact(&store);
    }

    #[test]
    fn held_events_are_folded_to_the_bound_and_every_count_reaches_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("audit.sqlite")).unwrap();
        let max = 8;
        let sink = Sink::new(max);
        let stats = WriterStats::default();
        let mut backlog = Backlog::new(sink.max_pending(), Duration::from_secs(60));
        disk_full(&store, true);
        let first = long_name(0);
        record(&sink, [10, 0, 0, 1], &first);
        for round in 0..20 {
            for i in 0..30 {
                record(
                    &sink,
                    [10, 0, 0, (i % 5) as u8],
                    &long_name(round * 30 + i + 1),
                );
            }
            assert!(backlog
                .write(&mut store, &sink, &stats, SystemTime::now(), false)
                .is_err());
            // The clients' overflow entries (5) fit within twice the bound.
            assert!(backlog.held.len() <= 2 * max, "{}", backlog.held.len());
            assert_eq!(backlog.held_events(), sink.received(), "no count lost");
        }
        assert!(stats.events_folded.load(Ordering::Relaxed) > 0);
        // The earliest sighting keeps its detail.
        assert!(backlog.held.values().any(|p| p.event.name == first));

        disk_full(&store, false);
        backlog
            .write(&mut store, &sink, &stats, SystemTime::now(), true)
            .unwrap();
        assert_eq!(counted(&store), (sink.received(), 0));
        // The writer folds into the clients' overflow entries (here already opened by
        // the sink, whose bound the flood passed too).
        let folded_rows: i64 = store
            .conn()
            .query_row(
                "SELECT count(*) FROM events WHERE name = ?1",
                [OVERFLOW_NAME],
                |r| r.get(0),
            )
            .unwrap();
        assert!(folded_rows > 0);
        intact(&store);
    }

    /// A stop while the database still fails gives up after the grace period and says
    /// how many events it could not write.
    #[test]
    fn a_stop_while_full_reports_the_events_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("audit.sqlite")).unwrap();
        disk_full(&store, true);
        let sink = Sink::new(100);
        let stats = WriterStats::default();
        let mut backlog = Backlog::new(sink.max_pending(), Duration::from_secs(60));
        for i in 0..40 {
            record(&sink, [10, 0, 0, 2], &long_name(i % 25));
        }
        let settings = WriterSettings {
            window: Duration::from_secs(60),
            flush_interval: Duration::from_millis(50),
            retention_days: 30,
            retention_by_category: BTreeMap::new(),
        };
        let started = Instant::now();
        match finish(&mut backlog, &mut store, &sink, &settings, &stats) {
            Err(AuditError::Unwritten { events, source }) => {
                assert_eq!(events, 40);
                assert!(source.to_string().contains("full"), "{source}");
            }
            other => panic!("expected Unwritten, got {other:?}"),
        }
        assert!(started.elapsed() <= STOP_GRACE + Duration::from_secs(1));
        assert!(stats.write_errors.load(Ordering::Relaxed) > 1, "retried");
        assert_eq!(counted(&store).0, 0);
    }

    fn pending_strategy() -> impl Strategy<Value = Vec<(u8, u8, u16, u32)>> {
        // (client, categories, name, first-seen offset in ms)
        proptest::collection::vec((0u8..6, 0u8..3, 0u16..400, 0u32..10_000), 0..300)
    }

    proptest! {
        /// Folding keeps every count, bounds the keys, and keeps the detail of the
        /// earliest sightings.
        #[test]
        fn folding_keeps_counts_and_bounds_the_keys(
            entries in pending_strategy(),
            max in 1usize..40,
        ) {
            let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let mut held: HashMap<Key, Pending> = HashMap::new();
            for (client, cats, name, offset) in &entries {
                let categories = ["adult", "gambling", "adult,social"][*cats as usize];
                let client = IpAddr::from([10, 0, 0, *client]);
                let mut e = event(client, &format!("n{name}.test"));
                e.categories = categories.to_string();
                let time = base + Duration::from_millis(u64::from(*offset));
                let key = Key::of(&e);
                merge(&mut held, key, Pending { count: 1, first: time, last: time, event: e });
            }
            let before: u64 = held.values().map(|p| p.count).sum();
            let mut firsts: Vec<(SystemTime, Key)> =
                held.iter().map(|(k, p)| (p.first, k.clone())).collect();
            firsts.sort();
            let folded = fold_excess(&mut held, max);
            let after: u64 = held.values().map(|p| p.count).sum();
            prop_assert_eq!(before, after);
            // Twice the bound, plus one global entry per categories seen.
            prop_assert!(held.len() <= 2 * max + 3, "{} keys", held.len());
            for (_, key) in firsts.iter().take(max) {
                prop_assert!(held.contains_key(key), "an earliest sighting was folded");
            }
            let named: u64 = held
                .values()
                .filter(|p| p.event.name != OVERFLOW_NAME)
                .map(|p| p.count)
                .sum();
            prop_assert_eq!(named + folded, before);
            for (key, p) in &held {
                let e = &p.event;
                prop_assert_eq!(key, &Key::of(e), "each entry sits under its own key");
            }
        }
    }

    /// The daily purge is spread over the writer's ticks: each tick (after its write)
    /// purges at most one batch, in its own transaction, until nothing is due; the next
    /// run starts a day later.
    #[test]
    fn the_daily_purge_takes_one_batch_per_tick_until_done() {
        use crate::audit::purge::tests::{row, write_sealed};
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("a.sqlite")).unwrap();
        // Due for years: first seen in 2020, kept for a day.
        let total = 2 * PURGE_BATCH + 10;
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        let rows: Vec<(Key, Pending)> = (0..total)
            .map(|i| {
                let t = old + Duration::from_secs(i as u64);
                row(&format!("n{i}.test"), "adult", t, t)
            })
            .collect();
        write_sealed(&mut store, &rows);
        let settings = WriterSettings {
            window: Duration::from_secs(60),
            flush_interval: Duration::from_millis(50),
            retention_days: 1,
            retention_by_category: BTreeMap::new(),
        };
        let stats = WriterStats::default();
        let mut purger = Purger::default();
        let purged = |stats: &WriterStats| stats.purged.load(Ordering::Relaxed) as usize;
        purger.tick(&mut store, &settings, &stats);
        assert_eq!(purged(&stats), PURGE_BATCH);
        assert!(purger.run.is_some(), "more is due: the run goes on");
        purger.tick(&mut store, &settings, &stats);
        assert_eq!(purged(&stats), 2 * PURGE_BATCH);
        purger.tick(&mut store, &settings, &stats);
        assert_eq!(purged(&stats), total);
        assert!(purger.run.is_none(), "nothing left: the run is over");
        purger.tick(&mut store, &settings, &stats);
        assert!(purger.run.is_none(), "the next run starts a day later");
        let n: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM events WHERE purged = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n as usize, total);
    }
}
