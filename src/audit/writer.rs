//! The audit writer: a dedicated thread that owns the database connection (SQLite is
//! blocking I/O, kept off the async runtime), drains the query path's [`Sink`] at least
//! once per `flush_interval`, seals rows whose window has closed, and purges daily.
//!
//! A failed write (disk full, database locked) keeps the drained batch and retries it
//! with the next one, merged by key, so memory stays bounded by the number of keys and
//! nothing recorded is lost while the disk recovers. Stopping drains and seals
//! everything before the thread ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::store::{AuditError, OpenRow, Retention, Store};
use super::{Key, Pending, Sink};

/// How often retention purges run.
const PURGE_EVERY: Duration = Duration::from_secs(24 * 3600);
/// How often the writer logs its counters (when anything happened).
const REPORT_EVERY: Duration = Duration::from_secs(300);

/// What the writer needs to know.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub window: Duration,
    pub flush_interval: Duration,
    pub retention_days: u32,
    pub retention_by_category: BTreeMap<String, u32>,
}

/// Counters for logs and metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub rows_inserted: AtomicU64,
    pub rows_updated: AtomicU64,
    pub rows_sealed: AtomicU64,
    pub events_written: AtomicU64,
    pub write_errors: AtomicU64,
    pub purged: AtomicU64,
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
    pub fn stats_handle(&self) -> Arc<WriterStats> {
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
    let mut open: HashMap<Key, OpenRow> = HashMap::new();
    let mut retry: HashMap<Key, Pending> = HashMap::new();
    let mut last_purge: Option<Instant> = None;
    let mut last_report = (Instant::now(), 0u64);
    loop {
        let stopping = match stopped.recv_timeout(settings.flush_interval) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        };
        for (key, pending) in sink.drain() {
            merge(&mut retry, key, pending);
        }
        let batch: Vec<(Key, Pending)> = retry.drain().collect();
        let events: u64 = batch.iter().map(|(_, p)| p.count).sum();
        match store.write_batch(
            &batch,
            &mut open,
            settings.window,
            SystemTime::now(),
            stopping,
        ) {
            Ok(s) => {
                stats.rows_inserted.fetch_add(s.inserted, Ordering::Relaxed);
                stats.rows_updated.fetch_add(s.updated, Ordering::Relaxed);
                stats.rows_sealed.fetch_add(s.sealed, Ordering::Relaxed);
                stats.events_written.fetch_add(events, Ordering::Relaxed);
            }
            Err(error) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, events, "audit write failed; keeping the events to retry");
                for (key, pending) in batch {
                    merge(&mut retry, key, pending);
                }
                if stopping {
                    return Err(error);
                }
            }
        }
        if last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
            last_purge = Some(Instant::now());
            let policy = Retention {
                default_days: settings.retention_days,
                by_category: settings.retention_by_category.clone(),
            };
            match store.purge(SystemTime::now(), &policy) {
                Ok(n) => {
                    stats.purged.fetch_add(n, Ordering::Relaxed);
                    if n > 0 {
                        tracing::info!(rows = n, "purged audit rows past their retention");
                    }
                }
                Err(error) => tracing::error!(%error, "audit retention purge failed"),
            }
        }
        let received = sink.received();
        if stopping || (last_report.0.elapsed() >= REPORT_EVERY && received != last_report.1) {
            report(&sink, stats, open.len() + retry.len());
            last_report = (Instant::now(), received);
        }
        if stopping {
            return Ok(());
        }
    }
}

/// One log line with the writer's counters (the ones a metrics endpoint will export).
fn report(sink: &Sink, stats: &WriterStats, open_rows: usize) {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let received = sink.received();
    let rows = get(&stats.rows_inserted);
    tracing::info!(
        events_received = received,
        rows_written = rows,
        events_coalesced = received.saturating_sub(rows),
        events_folded = sink.folded(),
        queue_depth = sink.queue_depth(),
        open_rows,
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
