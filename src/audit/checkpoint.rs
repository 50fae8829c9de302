//! Signed checkpoints of the hash chain, so `warden audit verify` stays fast at a year
//! of blocks, and catches what the chain alone cannot: rows cut off its end.
//!
//! A verify that finds the chain intact records a checkpoint `(seq, hash, at, mac)` of
//! the head it verified, `mac = HMAC-SHA256(key, seq ‖ hash ‖ at)` under a random key
//! per database, kept beside it in `<db>.checkpoint-key` (created readable by its owner
//! only, on first use). The next verify ([`Mode::Incremental`]) starts from the signed
//! checkpoint with the highest seq whose MAC is good, provided the row at that seq still
//! has the hash it signed, and walks only the rows after it (with the retention check
//! for those rows). [`Mode::Full`] walks from seq 1, as before, and then checks every
//! signed checkpoint against the chain.
//!
//! What the checks show:
//! - a checkpoint whose MAC is wrong (forged, edited, or signed under another key) is
//!   reported and never trusted;
//! - a head below a signed checkpoint's seq is rows cut off the end; a different hash
//!   at its seq is the chain rewritten from there on. Both are reported as broken.
//!
//! Without its key (unreadable, or not creatable on a full disk) a verify walks from
//! seq 1 and notes why; a checkpoint that cannot be stored is noted, not an error.
//!
//! By design, an incremental verify does not look at rows up to its checkpoint: an
//! edit there whose row hash was left alone (the hash check would catch it) is only
//! found by `--full`. Nor does it repeat the purged-too-early check for them.
//!
//! What the key protects against, and what not: someone who can change the database
//! but cannot read the key file (an SQL-level write, a copy of the database edited and
//! put back, a tool that reaches the file but not the folder's other files) cannot sign
//! a checkpoint, so rewriting the chain's hashes below a signed head, or cutting rows
//! off the end, is caught. Anyone who can read the key (root, the account Warden runs
//! as) can rewrite the chain and sign new checkpoints: keep exports of the chain hashes
//! elsewhere for that. Deleting checkpoints (the append-only triggers can be dropped) is
//! not detected: verify then starts from an older checkpoint or from seq 1. Losing the
//! key makes every older checkpoint unverifiable: keep it with the database's backups.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use rusqlite::{params, OptionalExtension};
use sha2::Sha256;

use super::rfc3339;
use super::store::{restrict, AuditError, ChainPoint, Retention, Store, Verification, Walk};

/// Which walk `verify` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// From the newest trusted checkpoint (from seq 1 if there is none).
    Incremental,
    /// From seq 1, then every checkpoint checked against the chain.
    Full,
}

/// A recorded checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub id: i64,
    pub seq: i64,
    pub hash: String,
    /// When it was signed (RFC 3339 UTC).
    pub at: String,
    mac: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The mode asked for.
    pub mode: Mode,
    /// The checkpoint the walk started after; `None`: from seq 1.
    pub from: Option<Checkpoint>,
    /// Checkpoints whose MAC is wrong: reported, not trusted.
    pub untrusted: Vec<Checkpoint>,
    /// The walk: in [`Verification::Intact`], `rows` and `purged` count the rows walked.
    pub result: Verification,
    /// The seq of the last row walked (the head, when intact).
    pub head: i64,
    /// The seq of the checkpoint this verify recorded, if it recorded one.
    pub recorded: Option<i64>,
    /// Why checkpoints were not used or not recorded (no key, a full disk), if so.
    pub note: Option<String>,
}

impl Report {
    /// Nothing walked yet.
    fn new(mode: Mode) -> Report {
        Report {
            mode,
            from: None,
            untrusted: Vec::new(),
            result: Verification::Intact {
                rows: 0,
                purged: 0,
                open: 0,
            },
            head: 0,
            recorded: None,
            note: None,
        }
    }

    /// The chain and the checkpoints are as they should be.
    pub fn is_intact(&self) -> bool {
        matches!(self.result, Verification::Intact { .. }) && self.untrusted.is_empty()
    }
}

/// Where the key for `db`'s checkpoints lives: beside it.
pub fn key_path(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}.checkpoint-key", db.display()))
}

/// Verify `store`'s chain in `mode` (see the module doc), judging purges by `policy`,
/// and record a checkpoint at the head when the chain is intact.
pub fn verify(
    store: &Store,
    mode: Mode,
    policy: Option<&Retention>,
    now: SystemTime,
) -> Result<Report, AuditError> {
    let mut report = Report::new(mode);
    // Without its key (unreadable, or not creatable on a full disk) no checkpoint can
    // be trusted, but the chain can still be walked: a verify must work when it is
    // needed most.
    let key = load_key(store.path())
        .map_err(|e| report.note = Some(format!("checkpoints not used: {e}")))
        .ok();
    let (trusted, untrusted) = match &key {
        Some(key) => split(checkpoints(store)?, key),
        None => (Vec::new(), Vec::new()),
    };
    report.untrusted = untrusted;
    // Highest seq first: a copy of an old, genuine checkpoint must not hide a cut
    // below a newer one.
    let newest = trusted.first().cloned();
    let start = match (mode, &newest) {
        (Mode::Incremental, Some(c)) => {
            // Only the forgeries above the checkpoint it trusts concern this walk.
            report.untrusted.retain(|u| (u.seq, u.id) > (c.seq, c.id));
            report.from = Some(c.clone());
            if let Some(broken) = check(store, c)? {
                report.result = broken;
                return Ok(report);
            }
            ChainPoint {
                seq: c.seq,
                hash: c.hash.clone(),
            }
        }
        _ => ChainPoint::genesis(),
    };
    let head = match store.walk(&start, policy, now)? {
        Walk::Intact { head, rows, purged } => {
            report.result = Verification::Intact {
                rows,
                purged,
                open: store.open_rows()?,
            };
            head
        }
        Walk::Broken { id, seq, reason } => {
            report.result = Verification::Broken { id, seq, reason };
            report.head = seq;
            return Ok(report);
        }
    };
    report.head = head.seq;
    if mode == Mode::Full {
        for c in &trusted {
            if let Some(broken) = check(store, c)? {
                report.result = broken;
                return Ok(report);
            }
        }
    }
    // No new checkpoint over a forgery: it would become the trusted start, and the next
    // verify would no longer walk (or report) what the forgery tried to hide. Every
    // verify reports it until someone looks (`--full` walks everything meanwhile).
    let forged = !report.untrusted.is_empty();
    let Some(key) =
        key.filter(|_| !forged && head.seq > 0 && newest.is_none_or(|c| c.seq < head.seq))
    else {
        return Ok(report);
    };
    // The walk's result stands even if its checkpoint cannot be stored (a full disk).
    match record(store, &key, &head, now) {
        Ok(()) => report.recorded = Some(head.seq),
        Err(e) => report.note = Some(format!("checkpoint not recorded: {e}")),
    }
    Ok(report)
}

/// The checkpoints whose MAC is good under `key`, and the others.
fn split(all: Vec<Checkpoint>, key: &[u8; 32]) -> (Vec<Checkpoint>, Vec<Checkpoint>) {
    all.into_iter()
        .partition(|c| c.mac == sign(key, c.seq, &c.hash, &c.at))
}

/// Whether the chain still holds what the (trusted) checkpoint `c` signed.
fn check(store: &Store, c: &Checkpoint) -> Result<Option<Verification>, AuditError> {
    let err = |e| store.wrap(e);
    let conn = store.conn();
    let head: i64 = conn
        .query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))
        .map_err(err)?;
    let row: Option<(i64, Option<String>)> = conn
        .query_row("SELECT id, hash FROM events WHERE seq = ?1", [c.seq], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(err)?;
    let reason = match row {
        _ if head < c.seq => format!(
            "the chain now ends at seq {head}, below this signed head (rows cut off the end)"
        ),
        None => format!("no row has seq {} any more (deleted?)", c.seq),
        Some((id, hash)) if hash.as_deref() != Some(c.hash.as_str()) => format!(
            "row {id} at seq {} has another hash now (the chain rewritten from there?)",
            c.seq
        ),
        Some(_) => return Ok(None),
    };
    Ok(Some(Verification::Checkpoint {
        checkpoint: c.id,
        seq: c.seq,
        reason,
    }))
}

/// Every checkpoint, highest seq (then newest) first.
fn checkpoints(store: &Store) -> Result<Vec<Checkpoint>, AuditError> {
    let err = |e| store.wrap(e);
    let mut stmt = store
        .conn()
        .prepare("SELECT id, seq, hash, at, mac FROM checkpoints ORDER BY seq DESC, id DESC")
        .map_err(err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Checkpoint {
                id: r.get(0)?,
                seq: r.get(1)?,
                hash: r.get(2)?,
                at: r.get(3)?,
                mac: r.get(4)?,
            })
        })
        .map_err(err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(err)
}

/// Sign and store a checkpoint at `head`.
fn record(
    store: &Store,
    key: &[u8; 32],
    head: &ChainPoint,
    now: SystemTime,
) -> Result<(), AuditError> {
    let at = rfc3339(now);
    let mac = sign(key, head.seq, &head.hash, &at);
    store
        .conn()
        .execute(
            "INSERT INTO checkpoints (seq, hash, at, mac) VALUES (?1, ?2, ?3, ?4)",
            params![head.seq, head.hash, at, mac],
        )
        .map_err(|e| store.wrap(e))?;
    Ok(())
}

/// `hex(HMAC-SHA256(key, seq ‖ U+001F ‖ hash ‖ U+001F ‖ at))`.
fn sign(key: &[u8; 32], seq: i64, hash: &str, at: &str) -> String {
    // Not input: HMAC takes keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{seq}\u{1f}{hash}\u{1f}{at}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The key for `db`'s checkpoints, created (32 random bytes, hex, mode 0600) if there
/// is none yet.
fn load_key(db: &Path) -> Result<[u8; 32], AuditError> {
    let path = key_path(db);
    match std::fs::metadata(&path) {
        Ok(_) => {
            restrict(&path).map_err(|source| AuditError::Io {
                path: path.clone(),
                source,
            })?;
            load_key_at(&path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(&path),
        Err(source) => Err(AuditError::Io { path, source }),
    }
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    hex::decode(text.trim()).ok()?.try_into().ok()
}

/// Write a new key to `path`, unless another process got there first (then read
/// theirs): the key is written whole to a private temporary file and hard-linked into
/// place, which never replaces an existing key.
fn create_key(path: &Path) -> Result<[u8; 32], AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| AuditError::Invalid(format!("no randomness for the checkpoint key: {e}")))?;
    let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(hex::encode(key).as_bytes())?;
        f.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_key_at(path),
        Err(e) => Err(io(e)),
    }
}

/// Read the key at `path` itself (not derived from a database path).
fn load_key_at(path: &Path) -> Result<[u8; 32], AuditError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_key(&text).ok_or_else(|| {
        AuditError::Invalid(format!(
            "{} is not a checkpoint key (64 hex digits)",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::purge::tests::{at, row, write_sealed, T0};

    const DAY: u64 = 86_400;

    /// Add `n` sealed rows, a minute apart, after the `done` already written.
    fn add(store: &mut Store, done: u64, n: u64) {
        let rows: Vec<_> = (done..done + n)
            .map(|i| {
                let t = at(T0 + i * 60);
                row(&format!("n{i}.test"), "adult", t, t)
            })
            .collect();
        write_sealed(store, &rows);
    }

    /// A log of `n` sealed rows.
    fn log(dir: &tempfile::TempDir, n: u64) -> Store {
        let mut store = Store::open(&dir.path().join("a.sqlite")).unwrap();
        add(&mut store, 0, n);
        store
    }

    fn run(store: &Store, mode: Mode) -> Report {
        verify(store, mode, None, at(T0 + DAY)).unwrap()
    }

    fn sql(store: &Store, sql: &str) {
        store.conn().execute_batch(sql).unwrap();
    }

    fn intact(rows: u64) -> Verification {
        Verification::Intact {
            rows,
            purged: 0,
            open: 0,
        }
    }

    #[test]
    fn the_first_verify_walks_from_seq_1_and_the_next_starts_at_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("a.sqlite")).unwrap();
        let empty = run(&store, Mode::Incremental);
        assert_eq!((empty.result, empty.recorded), (intact(0), None));
        add(&mut store, 0, 10);
        let first = run(&store, Mode::Incremental);
        assert!(first.is_intact() && first.from.is_none(), "{first:?}");
        assert_eq!(
            (first.result, first.head, first.recorded),
            (intact(10), 10, Some(10))
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = std::fs::metadata(key_path(store.path())).unwrap();
            assert_eq!(
                key.permissions().mode() & 0o777,
                0o600,
                "the key is private"
            );
        }
        let again = run(&store, Mode::Incremental);
        assert_eq!(again.from.as_ref().map(|c| c.seq), Some(10));
        assert_eq!((again.result, again.recorded), (intact(0), None));
        add(&mut store, 10, 5);
        let next = run(&store, Mode::Incremental);
        assert_eq!(next.from.as_ref().map(|c| c.seq), Some(10));
        assert_eq!(
            (next.result, next.head, next.recorded),
            (intact(5), 15, Some(15))
        );
        let full = run(&store, Mode::Full);
        assert!(full.is_intact() && full.from.is_none(), "{full:?}");
        assert_eq!((full.result, full.recorded), (intact(15), None));
        // Append-only.
        for change in ["UPDATE checkpoints SET seq = 1", "DELETE FROM checkpoints"] {
            let e = store.conn().execute_batch(change).unwrap_err().to_string();
            assert!(e.contains("checkpoints are append-only"), "{e}");
        }
    }

    /// Checkpoint at seq 10, then five more rows.
    fn checkpointed(dir: &tempfile::TempDir) -> Store {
        let mut store = log(dir, 10);
        assert_eq!(run(&store, Mode::Incremental).recorded, Some(10));
        add(&mut store, 10, 5);
        store
    }

    fn broken_at(report: &Report) -> (i64, String) {
        match &report.result {
            Verification::Broken { seq, reason, .. } => (*seq, reason.clone()),
            other => panic!("not broken: {other:?}"),
        }
    }

    #[test]
    fn incremental_verify_finds_an_edit_and_a_deletion_after_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = checkpointed(&dir);
        sql(&store, "UPDATE events SET name = 'x.test' WHERE seq = 12");
        let edited = run(&store, Mode::Incremental);
        assert_eq!(edited.from.as_ref().map(|c| c.seq), Some(10));
        let (seq, reason) = broken_at(&edited);
        assert_eq!(seq, 12);
        assert!(reason.contains("edited?"), "{reason}");
        assert_eq!(edited.recorded, None, "no checkpoint over a broken chain");

        let dir = tempfile::tempdir().unwrap();
        let store = checkpointed(&dir);
        sql(&store, "DELETE FROM events WHERE seq = 13");
        let (seq, reason) = broken_at(&run(&store, Mode::Incremental));
        assert_eq!(seq, 14);
        assert!(reason.contains("seq 13..13 are missing"), "{reason}");
    }

    #[test]
    fn a_chain_cut_below_a_signed_head_is_broken_in_both_modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = checkpointed(&dir);
        assert_eq!(run(&store, Mode::Incremental).recorded, Some(15));
        sql(&store, "DELETE FROM events WHERE seq >= 14");
        // The chain alone still looks whole: its new end vouches for itself.
        assert_eq!(store.verify(None, at(T0)).unwrap(), intact(13));
        for mode in [Mode::Incremental, Mode::Full] {
            match run(&store, mode).result {
                Verification::Checkpoint { seq, reason, .. } => {
                    assert_eq!(seq, 15);
                    assert!(reason.contains("ends at seq 13"), "{reason}");
                }
                other => panic!("{mode:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_checkpoint_with_a_bad_mac_is_reported_and_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = checkpointed(&dir);
        // Hide an edit at seq 12 behind a forged checkpoint at the head, which would
        // make an incremental verify skip it.
        sql(&store, "UPDATE events SET name = 'x.test' WHERE seq = 12");
        sql(
            &store,
            "INSERT INTO checkpoints (seq, hash, at, mac) SELECT seq, hash, \
             '2027-01-20T00:00:00.000Z', 'forged' FROM events WHERE seq = 15",
        );
        let report = run(&store, Mode::Incremental);
        assert_eq!(report.untrusted.len(), 1);
        assert_eq!(report.untrusted[0].seq, 15);
        assert_eq!(report.from.as_ref().map(|c| c.seq), Some(10), "fell back");
        assert_eq!(broken_at(&report).0, 12);
        assert!(!report.is_intact());

        // A genuine checkpoint edited (here its time) no longer checks out either.
        let dir = tempfile::tempdir().unwrap();
        let store = checkpointed(&dir);
        sql(
            &store,
            "DROP TRIGGER checkpoints_append_only_u; \
             UPDATE checkpoints SET at = '2030-01-01T00:00:00.000Z'",
        );
        let report = run(&store, Mode::Incremental);
        assert_eq!(report.untrusted.len(), 1);
        assert!(report.from.is_none(), "no trusted checkpoint: from seq 1");
        assert_eq!(
            (report.result.clone(), report.recorded),
            (intact(15), None),
            "no checkpoint is recorded over a forgery"
        );
        assert!(!report.is_intact(), "the forgery is reported");
        // And it still is the next time: nothing new was trusted in between.
        let again = run(&store, Mode::Incremental);
        assert_eq!(again.untrusted.len(), 1);
        assert!(!again.is_intact(), "the forgery is reported again");
    }

    /// A key that cannot be read (or, on a full disk, created) costs the checkpoints,
    /// not the verify: the chain is walked from seq 1 and the reason noted.
    #[test]
    fn without_its_key_verify_still_walks_the_whole_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = checkpointed(&dir);
        std::fs::remove_file(key_path(store.path())).unwrap();
        std::fs::create_dir(key_path(store.path())).unwrap();
        let report = run(&store, Mode::Incremental);
        assert_eq!((report.from.clone(), report.recorded), (None, None));
        assert_eq!(report.result, intact(15));
        assert!(report.is_intact());
        let note = report.note.unwrap_or_default();
        assert!(note.contains("checkpoints not used"), "{note}");
    }

    /// By design an incremental verify does not look at the rows up to its checkpoint:
    /// an edit there that left the row's hash alone is only found by a full verify.
    #[test]
    fn full_verify_finds_an_edit_before_the_checkpoint_that_incremental_skips() {
        let dir = tempfile::tempdir().unwrap();
        let store = checkpointed(&dir);
        assert_eq!(run(&store, Mode::Incremental).recorded, Some(15));
        sql(&store, "UPDATE events SET name = 'x.test' WHERE seq = 3");
        let quick = run(&store, Mode::Incremental);
        assert!(quick.is_intact(), "{quick:?}");
        assert_eq!(quick.result, intact(0));
        assert_eq!(broken_at(&run(&store, Mode::Full)).0, 3);
    }

    /// Someone who knows the chain's form edits row 5 and recomputes every hash from
    /// there on: the chain walks clean, but the signed head at seq 15 no longer matches.
    #[test]
    fn a_chain_rewritten_under_a_signed_checkpoint_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let store = checkpointed(&dir);
        assert_eq!(run(&store, Mode::Incremental).recorded, Some(15));
        let path = store.path().to_path_buf();
        sql(
            &store,
            "UPDATE events SET name = 'x.test' WHERE seq = 5; \
             UPDATE events SET seq = NULL, hash = NULL WHERE seq >= 5;",
        );
        drop(store);
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.seal_open_rows().unwrap(), 11);
        assert_eq!(store.verify(None, at(T0)).unwrap(), intact(15));
        for mode in [Mode::Incremental, Mode::Full] {
            match run(&store, mode).result {
                Verification::Checkpoint { seq, reason, .. } => {
                    assert_eq!(seq, 15);
                    assert!(reason.contains("another hash"), "{reason}");
                }
                other => panic!("{mode:?}: {other:?}"),
            }
        }
    }
}
