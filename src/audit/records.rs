//! The dashboard's own records in the audit database: sign-ins and allow-list changes.
//! Both tables are append-only (SQLite triggers refuse UPDATE and DELETE), so the lead
//! can show who signed in and who allowed what.

use std::time::SystemTime;

use rusqlite::params;

use super::rfc3339;
use super::store::{AuditError, Store};

/// One sign-in attempt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignIn {
    pub at: String,
    pub user: String,
    pub client_ip: String,
    /// `ok`, `wrong-password`, `unknown-user` or `limited`.
    pub result: String,
}

/// One change to the dashboard's allow entries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AllowChange {
    pub at: String,
    pub by: String,
    /// `add` or `remove`.
    pub action: String,
    pub name: String,
    pub reason: String,
}

pub(crate) fn record_signin(
    store: &Store,
    at: SystemTime,
    user: &str,
    client_ip: &str,
    result: &str,
) -> Result<(), AuditError> {
    store
        .conn()
        .execute(
            "INSERT INTO signins (at, user, client_ip, result) VALUES (?1, ?2, ?3, ?4)",
            params![rfc3339(at), user, client_ip, result],
        )
        .map(|_| ())
        .map_err(|e| store.wrap(e))
}

/// Record that `user` used second factor `kind` = `value` (a TOTP step, a recovery
/// code's hash); false if it had been used before, which then must be refused.
pub(crate) fn use_second_factor(
    store: &Store,
    at: SystemTime,
    user: &str,
    kind: &str,
    value: &str,
) -> Result<bool, AuditError> {
    store
        .conn()
        .execute(
            "INSERT OR IGNORE INTO second_factor_uses (user, kind, value, at) \
             VALUES (?1, ?2, ?3, ?4)",
            params![user, kind, value, rfc3339(at)],
        )
        .map(|n| n == 1)
        .map_err(|e| store.wrap(e))
}

pub(crate) fn recent_signins(store: &Store, limit: u32) -> Result<Vec<SignIn>, AuditError> {
    let err = |e| store.wrap(e);
    let mut stmt = store
        .conn()
        .prepare("SELECT at, user, client_ip, result FROM signins ORDER BY id DESC LIMIT ?1")
        .map_err(err)?;
    let rows = stmt
        .query_map([limit], |r| {
            Ok(SignIn {
                at: r.get(0)?,
                user: r.get(1)?,
                client_ip: r.get(2)?,
                result: r.get(3)?,
            })
        })
        .map_err(err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
}

pub(crate) fn record_allow_change(store: &Store, change: &AllowChange) -> Result<(), AuditError> {
    store
        .conn()
        .execute(
            "INSERT INTO allow_changes (at, by, action, name, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                change.at,
                change.by,
                change.action,
                change.name,
                change.reason
            ],
        )
        .map(|_| ())
        .map_err(|e| store.wrap(e))
}

/// The latest `limit` allow-entry changes, newest first.
pub(crate) fn recent_allow_changes(
    store: &Store,
    limit: u32,
) -> Result<Vec<AllowChange>, AuditError> {
    allow_changes_where(
        store,
        "ORDER BY id DESC LIMIT ?1",
        rusqlite::types::Value::from(i64::from(limit)),
    )
}

/// The allow-entry changes at or after `since` (RFC 3339), oldest first.
pub(crate) fn allow_changes_since(
    store: &Store,
    since: &str,
) -> Result<Vec<AllowChange>, AuditError> {
    allow_changes_where(
        store,
        "WHERE at >= ?1 ORDER BY id",
        rusqlite::types::Value::from(since.to_string()),
    )
}

/// The allow-entry changes `tail` (a condition and order on one parameter) selects.
fn allow_changes_where(
    store: &Store,
    tail: &str,
    param: rusqlite::types::Value,
) -> Result<Vec<AllowChange>, AuditError> {
    let err = |e| store.wrap(e);
    let mut stmt = store
        .conn()
        .prepare(&format!(
            "SELECT at, by, action, name, reason FROM allow_changes {tail}"
        ))
        .map_err(err)?;
    let rows = stmt
        .query_map([param], |r| {
            Ok(AllowChange {
                at: r.get(0)?,
                by: r.get(1)?,
                action: r.get(2)?,
                name: r.get(3)?,
                reason: r.get(4)?,
            })
        })
        .map_err(err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_kept_newest_first_and_cannot_be_altered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.sqlite")).unwrap();
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        record_signin(&store, t, "lead", "127.0.0.1", "wrong-password").unwrap();
        record_signin(&store, t, "lead", "127.0.0.1", "ok").unwrap();
        let got = recent_signins(&store, 10).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].result, "ok");
        let change = AllowChange {
            at: rfc3339(t),
            by: "admin".into(),
            action: "add".into(),
            name: "example.test".into(),
            reason: "needed for lessons".into(),
        };
        record_allow_change(&store, &change).unwrap();
        assert_eq!(recent_allow_changes(&store, 5).unwrap(), vec![change]);
        let altered = store
            .conn()
            .execute("UPDATE allow_changes SET by = 'someone else'", []);
        assert!(altered.is_err(), "allow changes must be append-only");
        let erased = store.conn().execute("UPDATE signins SET result = 'ok'", []);
        assert!(erased.is_err(), "sign-ins must be append-only");
    }
}
