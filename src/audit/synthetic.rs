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

    /// Write a stretch of events: each `(event, count, last seen)` counted under its key
    /// (first seen at `event.time`), as the writer would at `now`; rows whose window has
    /// closed by `now` are sealed. A key seen again once its window has closed starts a
    /// new row, as the live writer's once-a-second flushes would make it: the events are
    /// cut into batches in which no key's entry spans more than the window (a longer span
    /// would make every `since` filter read further back than the live log needs).
    pub fn write(
        &mut self,
        mut events: Vec<(Event, u64, SystemTime)>,
        now: SystemTime,
    ) -> Result<(), AuditError> {
        events.sort_by_key(|e| e.0.time);
        let mut batches: Vec<HashMap<Key, Pending>> = Vec::new();
        // The batch holding each key's latest entry.
        let mut latest: HashMap<Key, usize> = HashMap::with_capacity(events.len());
        for (event, count, last) in events {
            let key = Key::of(&event);
            let slot = match latest.get(&key) {
                Some(&i) => {
                    let open = &batches[i][&key];
                    let within = last.duration_since(open.first).unwrap_or_default() < self.window;
                    if within {
                        i
                    } else {
                        i + 1
                    }
                }
                None => 0,
            };
            if slot == batches.len() {
                batches.push(HashMap::new());
            }
            let first = event.time;
            batches[slot]
                .entry(key.clone())
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
            latest.insert(key, slot);
        }
        for batch in batches {
            let batch: Vec<(Key, Pending)> = batch.into_iter().collect();
            self.store
                .write_batch(&batch, &mut self.open, self.window, now, false)?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::purge::tests::row;

    /// One key seen every 50 s for an hour, written as one stretch: rows as the live writer
    /// makes them (a new row once the 60 s window has closed), each spanning less than
    /// the window, and every sighting counted.
    #[test]
    fn a_stretch_is_cut_at_each_window() {
        let dir = tempfile::tempdir().expect("a folder");
        let path = dir.path().join("audit.sqlite");
        let window = Duration::from_secs(60);
        let mut writer = SyntheticWriter::open(&path, window).expect("a log");
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let events: Vec<_> = (0..72u64)
            .map(|i| {
                let at = start + Duration::from_secs(50 * i);
                let (_, pending) = row("a.test", "adult", at, at);
                (pending.event, 3, at + Duration::from_secs(5))
            })
            .collect();
        writer
            .write(events, start + Duration::from_secs(7_200))
            .expect("written");
        let (rows, total): (i64, i64) = writer
            .store
            .conn()
            .query_row("SELECT count(*), sum(count) FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("counted");
        assert_eq!(total, 72 * 3, "every sighting is counted");
        // Sightings at 0 and 50 s share a row; the one at 100 s is past the window.
        assert_eq!(rows, 36);
        assert!(writer.store.max_span().expect("the span") <= 60_000 + 1_000);
    }
}
