//! The SQLite audit store: schema, writing batches, sealing rows into the hash chain,
//! verifying the chain, and retention purges.
//!
//! Chain: every sealed row has a `seq` (1, 2, 3, … in sealing order) and
//! `hash = hex(SHA-256(previous hash ‖ canonical row))`, the first row's previous hash
//! being 64 zeros. Editing a sealed row changes its canonical form; deleting one leaves a
//! gap in `seq`; both make `verify` fail naming the row. A purge (retention) blanks a
//! row's personal data but keeps its `seq` and `hash`, so the chain still verifies
//! across it: such a row is a checkpoint that vouches for everything before it.
//! (A chain cannot show that its newest rows were cut off; keep exports of the chain
//! hashes for that, as `audit export` includes them.)

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{rfc3339, Key, Pending};

/// Problems with the audit database.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("audit database {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no audit event with id {0}")]
    NoSuchEvent(i64),
    #[error("{0}")]
    Invalid(String),
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    seq         INTEGER UNIQUE,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    count       INTEGER NOT NULL,
    client_ip   TEXT NOT NULL,
    device      TEXT,
    grp         TEXT NOT NULL,
    name        TEXT NOT NULL,
    qtype       TEXT NOT NULL,
    categories  TEXT NOT NULL,
    locked      INTEGER NOT NULL,
    list        TEXT NOT NULL,
    line        INTEGER NOT NULL,
    rule        TEXT NOT NULL,
    response    TEXT NOT NULL,
    cname       TEXT,
    outcome     TEXT NOT NULL,
    hash        TEXT,
    purged      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_first_seen ON events(first_seen);
CREATE INDEX IF NOT EXISTS events_open ON events(seq) WHERE seq IS NULL;
CREATE TABLE IF NOT EXISTS reviews (
    id        INTEGER PRIMARY KEY,
    event_id  INTEGER NOT NULL REFERENCES events(id),
    at        TEXT NOT NULL,
    by        TEXT NOT NULL,
    outcome   TEXT NOT NULL CHECK (outcome IN ('incident', 'false-positive', 'no-action')),
    note      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_event ON reviews(event_id);
CREATE TRIGGER IF NOT EXISTS reviews_append_only_u BEFORE UPDATE ON reviews
    BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END;
CREATE TRIGGER IF NOT EXISTS reviews_append_only_d BEFORE DELETE ON reviews
    BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END;
"#;

/// The columns that make up a row's canonical form, in chain order.
const CANONICAL_COLUMNS: &str = "seq, first_seen, last_seen, count, client_ip, device, grp, \
     name, qtype, categories, locked, list, line, rule, response, cname, outcome";

/// Result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Intact { rows: u64, purged: u64, open: u64 },
    Broken { id: i64, seq: i64, reason: String },
}

/// Counts from one batch write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub inserted: u64,
    pub updated: u64,
    pub sealed: u64,
}

/// An open row: where it is and when its window started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenRow {
    id: i64,
    first: SystemTime,
}

/// The audit database, owned by one writer (or one CLI command) at a time.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    head_seq: i64,
    head_hash: String,
}

impl Store {
    /// Open (creating it, its folder, and the schema) the database at `path`. The file
    /// is made readable by its owner only: it holds personal data.
    pub fn open(path: &Path) -> Result<Store, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        create_private(path).map_err(io)?;
        let conn = Connection::open(path).map_err(|source| AuditError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            head_seq: 0,
            head_hash: GENESIS.to_string(),
        };
        store.sql(|c| {
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "NORMAL")?;
            c.busy_timeout(Duration::from_secs(5))?;
            c.execute_batch(SCHEMA)
        })?;
        for suffix in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{suffix}", path.display()));
            if side.exists() {
                restrict(&side).map_err(io)?;
            }
        }
        store.load_head()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    fn sql<T>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, AuditError> {
        f(&mut self.conn).map_err(|source| AuditError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    pub(crate) fn wrap(&self, source: rusqlite::Error) -> AuditError {
        AuditError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn load_head(&mut self) -> Result<(), AuditError> {
        let head: Option<(i64, String)> = self.sql(|c| {
            c.query_row(
                "SELECT seq, hash FROM events WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })?;
        if let Some((seq, hash)) = head {
            self.head_seq = seq;
            self.head_hash = hash;
        }
        Ok(())
    }

    /// Write one drained batch in one transaction: add to open rows within their
    /// window, open new rows otherwise; then seal the rows whose window has closed
    /// (all open rows when `seal_all`, as at shutdown).
    pub(crate) fn write_batch(
        &mut self,
        batch: &[(Key, Pending)],
        open: &mut HashMap<Key, OpenRow>,
        window: Duration,
        now: SystemTime,
        seal_all: bool,
    ) -> Result<BatchStats, AuditError> {
        let mut stats = BatchStats::default();
        let path = self.path.clone();
        let err = |source| AuditError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        for (key, pending) in batch {
            let within = open
                .get(key)
                .filter(|row| pending.last.duration_since(row.first).unwrap_or_default() < window);
            if let Some(row) = within {
                tx.execute(
                    "UPDATE events SET count = count + ?1, last_seen = max(last_seen, ?2) WHERE id = ?3",
                    params![pending.count as i64, rfc3339(pending.last), row.id],
                )
                .map_err(err)?;
                stats.updated += 1;
                continue;
            }
            let e = &pending.event;
            tx.execute(
                "INSERT INTO events (first_seen, last_seen, count, client_ip, device, grp, name, qtype, \
                 categories, locked, list, line, rule, response, cname, outcome) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                params![
                    rfc3339(pending.first),
                    rfc3339(pending.last),
                    pending.count as i64,
                    e.client.to_string(),
                    e.device,
                    e.group,
                    e.name,
                    e.qtype,
                    e.categories,
                    e.locked,
                    e.list,
                    e.line,
                    e.rule,
                    e.response,
                    e.cname,
                    e.outcome.as_str(),
                ],
            )
            .map_err(err)?;
            open.insert(
                key.clone(),
                OpenRow {
                    id: tx.last_insert_rowid(),
                    first: pending.first,
                },
            );
            stats.inserted += 1;
        }
        // Seal in insertion order, so the chain follows the order events were opened.
        let mut closing: Vec<(Key, OpenRow)> = open
            .iter()
            .filter(|(_, row)| {
                seal_all || now.duration_since(row.first).unwrap_or_default() >= window
            })
            .map(|(k, r)| (k.clone(), *r))
            .collect();
        closing.sort_by_key(|(_, r)| r.id);
        let (mut seq, mut hash) = (self.head_seq, self.head_hash.clone());
        for (key, row) in &closing {
            seq += 1;
            hash = seal_row(&tx, row.id, seq, &hash).map_err(err)?;
            open.remove(key);
            stats.sealed += 1;
        }
        tx.commit().map_err(err)?;
        self.head_seq = seq;
        self.head_hash = hash;
        Ok(stats)
    }

    /// Seal every open row (left by a crash, or at shutdown). Returns how many.
    pub fn seal_open_rows(&mut self) -> Result<u64, AuditError> {
        let path = self.path.clone();
        let err = |source| AuditError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let ids: Vec<i64> = {
            let mut stmt = tx
                .prepare("SELECT id FROM events WHERE seq IS NULL AND purged = 0 ORDER BY id")
                .map_err(err)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(err)?
        };
        let (mut seq, mut hash) = (self.head_seq, self.head_hash.clone());
        for id in &ids {
            seq += 1;
            hash = seal_row(&tx, *id, seq, &hash).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        self.head_seq = seq;
        self.head_hash = hash;
        Ok(ids.len() as u64)
    }

    /// Walk the whole chain and report the first row that does not fit.
    pub fn verify(&self) -> Result<Verification, AuditError> {
        let err = |source| self.wrap(source);
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT id, hash, purged, {CANONICAL_COLUMNS} FROM events WHERE seq IS NOT NULL ORDER BY seq"
            ))
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        let (mut prev_hash, mut expected_seq) = (GENESIS.to_string(), 1i64);
        let (mut count, mut purged) = (0u64, 0u64);
        while let Some(row) = rows.next().map_err(err)? {
            let id: i64 = row.get(0).map_err(err)?;
            let stored: String = row.get(1).map_err(err)?;
            let is_purged: bool = row.get(2).map_err(err)?;
            let seq: i64 = row.get(3).map_err(err)?;
            if seq != expected_seq {
                return Ok(Verification::Broken {
                    id,
                    seq,
                    reason: format!(
                        "rows with seq {expected_seq}..{} are missing before it (deleted?)",
                        seq - 1
                    ),
                });
            }
            if is_purged {
                purged += 1;
            } else {
                let canonical = canonical_from_row(row, 3).map_err(err)?;
                let computed = chain_hash(&prev_hash, &canonical);
                if computed != stored {
                    return Ok(Verification::Broken {
                        id,
                        seq,
                        reason: "its contents do not match its hash (edited?)".to_string(),
                    });
                }
            }
            prev_hash = stored;
            expected_seq += 1;
            count += 1;
        }
        let open: i64 = self
            .conn
            .query_row("SELECT count(*) FROM events WHERE seq IS NULL", [], |r| {
                r.get(0)
            })
            .map_err(err)?;
        Ok(Verification::Intact {
            rows: count,
            purged,
            open: open as u64,
        })
    }

    /// Blank the personal data of sealed rows older than their retention: the longest
    /// retention among a row's categories (`by_category`), else `default_days`.
    /// The rows keep `seq` and `hash`, so the chain still verifies. Returns how many.
    pub fn purge(
        &mut self,
        now: SystemTime,
        default_days: u32,
        by_category: &BTreeMap<String, u32>,
    ) -> Result<u64, AuditError> {
        let day = Duration::from_secs(86_400);
        let shortest = by_category
            .values()
            .copied()
            .chain([default_days])
            .min()
            .unwrap_or(default_days);
        let horizon = rfc3339(
            now.checked_sub(day * shortest)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        let path = self.path.clone();
        let err = |source| AuditError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let candidates: Vec<(i64, String, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT id, last_seen, categories FROM events \
                     WHERE seq IS NOT NULL AND purged = 0 AND last_seen < ?1",
                )
                .map_err(err)?;
            let rows = stmt
                .query_map([&horizon], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(err)?
        };
        let mut purged = 0;
        for (id, last_seen, categories) in candidates {
            let days = categories
                .split(',')
                .filter_map(|c| by_category.get(c).copied())
                .chain([default_days])
                .max()
                .unwrap_or(default_days);
            let limit = rfc3339(
                now.checked_sub(day * days)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            );
            if last_seen < limit {
                tx.execute(
                    "UPDATE events SET purged = 1, client_ip = '', device = NULL, name = '', \
                     qtype = '', categories = '', list = '', line = 0, rule = '', response = '', \
                     cname = NULL, grp = '' WHERE id = ?1",
                    [id],
                )
                .map_err(err)?;
                purged += 1;
            }
        }
        tx.commit().map_err(err)?;
        Ok(purged)
    }
}

/// Compute and store a row's chain position and hash; returns the hash.
fn seal_row(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    seq: i64,
    prev_hash: &str,
) -> rusqlite::Result<String> {
    tx.execute("UPDATE events SET seq = ?1 WHERE id = ?2", params![seq, id])?;
    let canonical = tx.query_row(
        &format!("SELECT {CANONICAL_COLUMNS} FROM events WHERE id = ?1"),
        [id],
        |row| canonical_from_row(row, 0),
    )?;
    let hash = chain_hash(prev_hash, &canonical);
    tx.execute(
        "UPDATE events SET hash = ?1 WHERE id = ?2",
        params![hash, id],
    )?;
    Ok(hash)
}

/// The canonical form of a row: its chained columns as text, separated by U+001F.
fn canonical_from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<String> {
    use rusqlite::types::ValueRef;
    let columns = CANONICAL_COLUMNS.split(',').count();
    let mut out = String::with_capacity(256);
    for i in first..first + columns {
        if i > first {
            out.push('\u{1f}');
        }
        match row.get_ref(i)? {
            ValueRef::Null => out.push('\u{0}'),
            ValueRef::Integer(n) => out.push_str(&n.to_string()),
            ValueRef::Real(f) => out.push_str(&f.to_string()),
            ValueRef::Text(t) | ValueRef::Blob(t) => out.push_str(&String::from_utf8_lossy(t)),
        }
    }
    Ok(out)
}

/// `hex(SHA-256(prev_hash ‖ canonical))`.
pub fn chain_hash(prev_hash: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// Create `path` readable and writable by its owner only, if it does not exist yet.
fn create_private(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return restrict(path);
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(|_| ())
}

fn restrict(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let _ = path;
    Ok(())
}
