//! What the fleet shipper reads from the site's log: sealed rows after a cursor, in chain
//! order, exactly as stored (so the central copy hashes as the local one does), and the
//! cursor itself, kept in the log (`audit_meta`) so a restart resumes after the last
//! batch the central store confirmed. The log stays the durable buffer: nothing here
//! deletes or changes a row.

use rusqlite::{params, OptionalExtension};

use super::personal::{joined, Cell, Personal};
use super::store::{AuditError, Store};

/// A sealed row as stored, every column the chain hashes plus where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow {
    pub id: i64,
    pub seq: i64,
    pub first_seen: String,
    pub last_seen: String,
    pub count: i64,
    pub client_ip: String,
    pub device: Option<String>,
    pub grp: String,
    pub name: String,
    pub qtype: String,
    pub categories: String,
    pub locked: i64,
    pub list: String,
    pub line: i64,
    pub rule: String,
    pub response: String,
    pub cname: Option<String>,
    pub outcome: String,
    pub salt: Option<String>,
    pub personal: Option<String>,
    pub hash: String,
    pub purged: i64,
    /// Who asked beyond the address: MAC, user, and where they came from.
    pub mac: Option<String>,
    pub user_name: Option<String>,
    pub sources: Option<String>,
}

impl SealedRow {
    /// The row's canonical form, as the chain hashes it (the same text
    /// `store::canonical_from_row` makes from the stored columns): `seq`, the digest of
    /// the personal columns (the stored one once purged), the public columns.
    pub fn canonical(&self) -> String {
        let personal = if self.purged != 0 {
            self.personal.clone().unwrap_or_default()
        } else {
            Personal {
                salt: self.salt.as_deref(),
                client_ip: &self.client_ip,
                device: self.device.as_deref(),
                name: &self.name,
                cname: self.cname.as_deref(),
                mac: self.mac.as_deref(),
                user: self.user_name.as_deref(),
                sources: self.sources.as_deref(),
            }
            .digest()
        };
        let public = [
            Cell::Text(&self.first_seen),
            Cell::Text(&self.last_seen),
            Cell::Int(self.count),
            Cell::Text(&self.grp),
            Cell::Text(&self.qtype),
            Cell::Text(&self.categories),
            Cell::Int(self.locked),
            Cell::Text(&self.list),
            Cell::Int(self.line),
            Cell::Text(&self.rule),
            Cell::Text(&self.response),
            Cell::Text(&self.outcome),
        ];
        format!("{}\u{1f}{personal}\u{1f}{}", self.seq, joined(&public))
    }

    /// Whether the row's stored hash follows from `previous` (the hash of the row before
    /// it in the chain, or [`genesis`] for the first).
    pub fn follows(&self, previous: &str) -> bool {
        super::store::chain_hash(previous, &self.canonical()) == self.hash
    }
}

/// The hash before the first row of every chain.
pub fn genesis() -> String {
    super::store::ChainPoint::genesis().hash
}

/// A review with the chain position of the row it reviews: one of the site's own as
/// stored, shipped to the central store, or one written on the trust's dashboard, brought
/// back to the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedReview {
    /// Its id where it was written: the site's log, or the central store.
    pub id: i64,
    pub event_seq: i64,
    pub at: String,
    pub by: String,
    pub outcome: String,
    pub note: String,
}

/// A table of the site's records shipped as stored: appended to on the site (sign-ins
/// are also purged by age, their ids never reused: store schema v8), keyed centrally by
/// site and local id. Each has its own cursor, the last id shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordTable {
    /// Its name, the same on the site and centrally.
    pub table: &'static str,
    /// Its columns after `id`, and whether each holds an integer (the rest are text).
    pub columns: &'static [(&'static str, bool)],
    /// The key in `audit_meta` of its cursor.
    cursor: &'static str,
}

/// Sign-ins, allow changes and alert deliveries: the records beside the events that the
/// trust's lead and auditors need centrally.
pub const RECORD_TABLES: [RecordTable; 3] = [
    RecordTable {
        table: "signins",
        columns: &[
            ("at", false),
            ("user", false),
            ("client_ip", false),
            ("result", false),
        ],
        cursor: "fleet_signins_id",
    },
    RecordTable {
        table: "allow_changes",
        columns: &[
            ("at", false),
            ("by", false),
            ("action", false),
            ("name", false),
            ("reason", false),
        ],
        cursor: "fleet_allow_changes_id",
    },
    RecordTable {
        table: "alert_deliveries",
        columns: &[
            ("at", false),
            ("channel", false),
            ("kind", false),
            ("category", false),
            ("client_ip", false),
            ("event_ids", false),
            ("attempt", true),
            ("result", false),
            ("error", false),
        ],
        cursor: "fleet_alert_deliveries_id",
    },
];

/// One record as stored: its id and its columns in [`RecordTable::columns`] order, as
/// text (an integer written out; `None` for NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: i64,
    pub values: Vec<Option<String>>,
}

/// The key in `audit_meta` of the shipped events' cursor (the last seq shipped).
const EVENTS_CURSOR: &str = "fleet_events_seq";
/// The key of the shipped reviews' cursor (the last review id shipped).
const REVIEWS_CURSOR: &str = "fleet_reviews_id";
/// The last review taken from the trust's dashboard.
const CENTRAL_REVIEWS_CURSOR: &str = "fleet_central_reviews_id";
/// The key of this log's identity in the fleet: a random number made once, so two
/// Wardens configured with the same site name cannot interleave their chains.
const INSTANCE: &str = "fleet_instance";

impl Store {
    /// Up to `limit` sealed rows after chain position `seq`, in chain order.
    pub fn sealed_after(&self, seq: i64, limit: usize) -> Result<Vec<SealedRow>, AuditError> {
        let err = |e| self.wrap(e);
        let mut stmt = self
            .conn()
            .prepare_cached(
                "SELECT id, seq, first_seen, last_seen, count, client_ip, device, grp, name, \
                 qtype, categories, locked, list, line, rule, response, cname, outcome, salt, \
                 personal, hash, purged, mac, user_name, sources FROM events WHERE seq > ?1 \
                 ORDER BY seq LIMIT ?2",
            )
            .map_err(err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![seq, limit], |r| {
                Ok(SealedRow {
                    id: r.get(0)?,
                    seq: r.get(1)?,
                    first_seen: r.get(2)?,
                    last_seen: r.get(3)?,
                    count: r.get(4)?,
                    client_ip: r.get(5)?,
                    device: r.get(6)?,
                    grp: r.get(7)?,
                    name: r.get(8)?,
                    qtype: r.get(9)?,
                    categories: r.get(10)?,
                    locked: r.get(11)?,
                    list: r.get(12)?,
                    line: r.get(13)?,
                    rule: r.get(14)?,
                    response: r.get(15)?,
                    cname: r.get(16)?,
                    outcome: r.get(17)?,
                    salt: r.get(18)?,
                    personal: r.get(19)?,
                    hash: r.get::<_, Option<String>>(20)?.unwrap_or_default(),
                    purged: r.get(21)?,
                    mac: r.get(22)?,
                    user_name: r.get(23)?,
                    sources: r.get(24)?,
                })
            })
            .map_err(err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
    }

    /// The last chain position shipped (0: none yet).
    pub fn shipped_seq(&self) -> Result<i64, AuditError> {
        self.meta(EVENTS_CURSOR).map(|v| v.unwrap_or(0))
    }

    /// Record that the central store holds every row up to `seq`.
    pub fn set_shipped_seq(&self, seq: i64) -> Result<(), AuditError> {
        self.set_meta(EVENTS_CURSOR, seq)
    }

    fn set_meta(&self, key: &str, value: i64) -> Result<(), AuditError> {
        self.conn()
            .execute(
                "INSERT INTO audit_meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// Sealed rows not shipped yet, and the first seen time of the oldest of them.
    pub fn unshipped(&self) -> Result<(i64, Option<String>), AuditError> {
        let shipped = self.shipped_seq()?;
        let err = |e| self.wrap(e);
        let head: i64 = self
            .conn()
            .query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(err)?;
        let oldest: Option<String> = self
            .conn()
            .query_row(
                "SELECT first_seen FROM events WHERE seq = ?1",
                [shipped + 1],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        Ok(((head - shipped).max(0), oldest))
    }

    /// Up to `limit` reviews after review `id`, in order, stopping at the first whose row
    /// is not shipped yet (not sealed, or after chain position `shipped`): a review
    /// arrives centrally after its row, and none is skipped.
    pub fn reviews_after(
        &self,
        id: i64,
        shipped: i64,
        limit: usize,
    ) -> Result<Vec<ShippedReview>, AuditError> {
        let err = |e| self.wrap(e);
        let mut stmt = self
            .conn()
            .prepare_cached(
                "SELECT r.id, e.seq, r.at, r.by, r.outcome, r.note FROM reviews r \
                 JOIN events e ON e.id = r.event_id \
                 WHERE r.id > ?1 AND r.central_id IS NULL ORDER BY r.id LIMIT ?2",
            )
            .map_err(err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![id, limit], |r| {
                Ok((
                    r.get::<_, Option<i64>>(1)?,
                    ShippedReview {
                        id: r.get(0)?,
                        event_seq: 0,
                        at: r.get(2)?,
                        by: r.get(3)?,
                        outcome: r.get(4)?,
                        note: r.get(5)?,
                    },
                ))
            })
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, review) = row.map_err(err)?;
            match seq {
                Some(seq) if seq <= shipped => out.push(ShippedReview {
                    event_seq: seq,
                    ..review
                }),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The last review shipped (0: none yet).
    pub fn shipped_review(&self) -> Result<i64, AuditError> {
        self.meta(REVIEWS_CURSOR).map(|v| v.unwrap_or(0))
    }

    /// Record that the central store holds every review up to `id`.
    pub fn set_shipped_review(&self, id: i64) -> Result<(), AuditError> {
        self.set_meta(REVIEWS_CURSOR, id)
    }

    /// The last review taken from the trust's dashboard (0: none yet).
    pub fn central_review_cursor(&self) -> Result<i64, AuditError> {
        self.meta(CENTRAL_REVIEWS_CURSOR).map(|v| v.unwrap_or(0))
    }

    /// Keep `reviews` (written on the trust's dashboard, in central id order) beside this
    /// site's own, and move the cursor past the last, in one transaction. One already kept
    /// is not doubled; one of a row this log no longer shows (purged) is passed over.
    /// Returns how many were new.
    pub fn add_central_reviews(&self, reviews: &[ShippedReview]) -> Result<usize, AuditError> {
        let Some(last) = reviews.last().map(|r| r.id) else {
            return Ok(0);
        };
        let err = |e| self.wrap(e);
        let tx = self.conn().unchecked_transaction().map_err(err)?;
        let mut added = 0;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO reviews (event_id, at, by, outcome, note, central_id) \
                     SELECT id, ?2, ?3, ?4, ?5, ?6 FROM events WHERE seq = ?1 AND purged = 0",
                )
                .map_err(err)?;
            for r in reviews {
                added += insert
                    .execute(params![r.event_seq, r.at, r.by, r.outcome, r.note, r.id])
                    .map_err(err)?;
            }
        }
        tx.execute(
            "INSERT INTO audit_meta (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![CENTRAL_REVIEWS_CURSOR, last],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(added)
    }

    /// Up to `limit` records of `table` after id `after`, in id order.
    pub fn records_after(
        &self,
        table: &RecordTable,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Record>, AuditError> {
        let err = |e| self.wrap(e);
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        let sql = format!(
            "SELECT id, {} FROM {} WHERE id > ?1 ORDER BY id LIMIT ?2",
            columns.join(", "),
            table.table
        );
        let mut stmt = self.conn().prepare_cached(&sql).map_err(err)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![after, limit], |r| {
                let mut values = Vec::with_capacity(table.columns.len());
                for i in 1..=table.columns.len() {
                    values.push(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => None,
                        rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
                        rusqlite::types::ValueRef::Real(x) => Some(x.to_string()),
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            Some(String::from_utf8_lossy(t).into_owned())
                        }
                    });
                }
                Ok(Record {
                    id: r.get(0)?,
                    values,
                })
            })
            .map_err(err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
    }

    /// The last record of `table` shipped (0: none yet).
    pub fn shipped_record(&self, table: &RecordTable) -> Result<i64, AuditError> {
        self.meta(table.cursor).map(|v| v.unwrap_or(0))
    }

    /// Record that the central store holds every record of `table` up to `id`.
    pub fn set_shipped_record(&self, table: &RecordTable, id: i64) -> Result<(), AuditError> {
        self.set_meta(table.cursor, id)
    }

    /// This log's identity in the fleet, made on first use.
    pub fn fleet_instance(&self) -> Result<i64, AuditError> {
        if let Some(id) = self.meta(INSTANCE)? {
            return Ok(id);
        }
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| {
            AuditError::Invalid(format!("no randomness for the fleet identity: {e}"))
        })?;
        // Positive, so it reads the same in every tool.
        let id = i64::from_le_bytes(bytes) & i64::MAX;
        self.conn()
            .execute(
                "INSERT OR IGNORE INTO audit_meta (key, value) VALUES (?1, ?2)",
                params![INSTANCE, id],
            )
            .map_err(|e| self.wrap(e))?;
        // Another process may have made it first: the stored one counts.
        self.meta(INSTANCE).map(|v| v.unwrap_or(id))
    }

    fn meta(&self, key: &str) -> Result<Option<i64>, AuditError> {
        self.conn()
            .query_row("SELECT value FROM audit_meta WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.wrap(e))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::audit::purge::tests::row;
    use crate::audit::store::{OpenRows, Retention};

    /// Rows as stored, live and purged, rebuild their chain from the shipped columns
    /// alone: what the central verify relies on.
    #[test]
    fn shipped_rows_rebuild_the_chain() {
        let dir = tempfile::tempdir().expect("a folder");
        let mut store = Store::open(&dir.path().join("audit.sqlite")).expect("a log");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let batch: Vec<_> = (0..6u64)
            .map(|i| {
                row(
                    &format!("n{i}.test"),
                    "adult",
                    t0 + Duration::from_secs(i * 90),
                    t0,
                )
            })
            .collect();
        store
            .write_batch(
                &batch,
                &mut OpenRows::default(),
                Duration::from_secs(60),
                t0,
                true,
            )
            .expect("written");
        let policy = Retention {
            default_days: 1,
            by_category: Default::default(),
        };
        // The first two rows are a day old by then: their personal data is purged.
        let purged = store
            .purge(t0 + Duration::from_secs(86_400 + 100), &policy)
            .expect("purged");
        assert_eq!(purged, 2);
        let rows = store.sealed_after(0, 100).expect("read");
        assert_eq!(rows.len(), 6);
        let mut previous = genesis();
        for r in &rows {
            assert!(r.follows(&previous), "seq {} rebuilds its hash", r.seq);
            previous = r.hash.clone();
        }
        // An edit anywhere breaks it.
        let mut edited = rows[3].clone();
        edited.count += 1;
        assert!(!edited.follows(&rows[2].hash));
        let mut renamed = rows[4].clone();
        renamed.name = "other.test".into();
        assert!(!renamed.follows(&rows[3].hash));
    }
}
