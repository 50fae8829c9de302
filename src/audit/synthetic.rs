//! Synthetic audit logs for the benchmarks (`benches/auditlog.rs`): events written through
//! the writer's own path ([`Store::write_batch`]: coalescing, sealing, the hash chain, and
//! whatever indexes and rollups the store keeps), and reviews through the lead's own
//! function. Not used by Warden itself.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::store::{AuditError, OpenRows, Store};
use super::{Event, Key, Pending};

/// Writes batches of events into a new or existing log.
#[doc(hidden)]
pub struct SyntheticWriter {
    store: Store,
    open: OpenRows,
    window: Duration,
}

impl SyntheticWriter {
    /// Open (or create) the log at `path`; repeats within `window` share a row.
    pub fn open(path: &Path, window: Duration) -> Result<SyntheticWriter, AuditError> {
        Ok(SyntheticWriter {
            store: Store::open(path)?,
            open: OpenRows::default(),
            window,
        })
    }

    /// Write one flush: each `(event, count, last seen)` counted under its key (first seen
    /// at `event.time`), as the writer would at `now`; rows whose window has closed by
    /// `now` are sealed.
    pub fn write(
        &mut self,
        events: Vec<(Event, u64, SystemTime)>,
        now: SystemTime,
    ) -> Result<(), AuditError> {
        let mut batch: HashMap<Key, Pending> = HashMap::with_capacity(events.len());
        for (event, count, last) in events {
            let key = Key::new(event.client, event.outcome, &event.categories, &event.name);
            let first = event.time;
            batch
                .entry(key)
                .and_modify(|p| {
                    p.count += count;
                    p.last = p.last.max(last);
                })
                .or_insert(Pending {
                    count,
                    first,
                    last,
                    event,
                });
        }
        let batch: Vec<(Key, Pending)> = batch.into_iter().collect();
        self.store
            .write_batch(&batch, &mut self.open, self.window, now, false)?;
        Ok(())
    }

    /// Record a review of row `id` by `by`, as the dashboard does.
    pub fn review(
        &self,
        id: i64,
        outcome: &str,
        by: &str,
        at: SystemTime,
    ) -> Result<(), AuditError> {
        super::review::add_review(&self.store, id, outcome, "synthetic", by, at).map(|_| ())
    }

    /// Seal every row still open (the log is complete); returns how many.
    pub fn seal(&mut self) -> Result<u64, AuditError> {
        self.open.clear();
        self.store.seal_open_rows()
    }
}
