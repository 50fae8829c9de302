//! The alerts' reads and writes in the audit database: new blocked events after the
//! cursor, the cursor itself (`alert_cursor`), and one row per delivery attempt
//! (`alert_deliveries`), read back at start-up to resume what a stop interrupted.
//!
//! All of it is blocking SQLite on the alerts' own connection (the audit writer keeps
//! its own): callers run it on a blocking thread.

use std::time::SystemTime;

use rusqlite::{params, OptionalExtension};

use super::sighting::Sighting;
use crate::audit::store::Retention;
use crate::audit::{rfc3339, AuditError, Store};

/// The event columns a [`Sighting`] is read from, in its field order.
const SIGHTING_COLUMNS: &str =
    "id, first_seen, client_ip, device, grp, name, categories, list, rule, count, mac, user_name";

fn sighting(row: &rusqlite::Row<'_>) -> rusqlite::Result<Sighting> {
    Ok(Sighting {
        id: row.get(0)?,
        time: row.get(1)?,
        client: row.get(2)?,
        device: row.get(3)?,
        group: row.get(4)?,
        name: row.get(5)?,
        categories: row.get(6)?,
        list: row.get(7)?,
        rule: row.get(8)?,
        count: row.get(9)?,
        mac: row.get(10)?,
        user: row.get(11)?,
    })
}

/// The last event id alerts have dealt with, if alerts ever ran on this log.
pub(crate) fn cursor(store: &Store) -> Result<Option<i64>, AuditError> {
    store
        .conn()
        .query_row(
            "SELECT last_event FROM alert_cursor WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| store.wrap(e))
}

pub(crate) fn save_cursor(store: &Store, last_event: i64) -> Result<(), AuditError> {
    store
        .conn()
        .execute(
            "INSERT INTO alert_cursor (id, last_event) VALUES (1, ?1) \
             ON CONFLICT (id) DO UPDATE SET last_event = excluded.last_event",
            [last_event],
        )
        .map(|_| ())
        .map_err(|e| store.wrap(e))
}

/// The newest event's id (0 for an empty log).
pub(crate) fn last_event(store: &Store) -> Result<i64, AuditError> {
    store
        .conn()
        .query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))
        .map_err(|e| store.wrap(e))
}

/// Up to `limit` blocked, unpurged events after `after`, oldest first.
pub(crate) fn blocked_after(
    store: &Store,
    after: i64,
    limit: u32,
) -> Result<Vec<Sighting>, AuditError> {
    let mut stmt = store
        .conn()
        .prepare_cached(&format!(
            "SELECT {SIGHTING_COLUMNS} FROM events \
             WHERE id > ?1 AND outcome = 'blocked' AND purged = 0 ORDER BY id LIMIT ?2"
        ))
        .map_err(|e| store.wrap(e))?;
    let rows = stmt
        .query_map(params![after, limit], sighting)
        .map_err(|e| store.wrap(e))?;
    rows.collect::<rusqlite::Result<_>>()
        .map_err(|e| store.wrap(e))
}

/// The unpurged events among `ids`, oldest first.
pub fn events(store: &Store, ids: &[i64]) -> Result<Vec<Sighting>, AuditError> {
    let mut stmt = store
        .conn()
        .prepare_cached(&format!(
            "SELECT {SIGHTING_COLUMNS} FROM events WHERE id = ?1 AND purged = 0"
        ))
        .map_err(|e| store.wrap(e))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(s) = stmt
            .query_row([id], sighting)
            .optional()
            .map_err(|e| store.wrap(e))?
        {
            out.push(s);
        }
    }
    out.sort_by_key(|s| s.id);
    Ok(out)
}

/// One delivery attempt, as recorded in `alert_deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    /// RFC 3339 UTC, when the attempt ended.
    pub at: String,
    /// `webhook` or `email`.
    pub channel: String,
    /// `alert` or `digest`.
    pub kind: String,
    pub category: String,
    pub client_ip: String,
    /// The audit events the message was about, comma-separated.
    pub event_ids: String,
    /// 1 for the first attempt of this message on this channel.
    pub attempt: u32,
    /// `ok`, `failed` (to be retried) or `gave-up` (failed, and the last).
    pub result: String,
    /// Why it failed (never a secret).
    pub error: Option<String>,
}

pub fn record(store: &Store, a: &Attempt) -> Result<(), AuditError> {
    store
        .conn()
        .prepare_cached(
            "INSERT INTO alert_deliveries \
             (at, channel, kind, category, client_ip, event_ids, attempt, result, error) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                a.at,
                a.channel,
                a.kind,
                a.category,
                a.client_ip,
                a.event_ids,
                a.attempt,
                a.result,
                a.error
            ])
        })
        .map(|_| ())
        .map_err(|e| store.wrap(e))
}

/// Every attempt recorded at or after `since` (RFC 3339), oldest first.
pub(crate) fn attempts_since(store: &Store, since: &str) -> Result<Vec<Attempt>, AuditError> {
    let mut stmt = store
        .conn()
        .prepare(
            "SELECT at, channel, kind, category, client_ip, event_ids, attempt, result, error \
             FROM alert_deliveries WHERE at >= ?1 ORDER BY id",
        )
        .map_err(|e| store.wrap(e))?;
    let rows = stmt
        .query_map([since], |r| {
            Ok(Attempt {
                at: r.get(0)?,
                channel: r.get(1)?,
                kind: r.get(2)?,
                category: r.get(3)?,
                client_ip: r.get(4)?,
                event_ids: r.get(5)?,
                attempt: r.get(6)?,
                result: r.get(7)?,
                error: r.get(8)?,
            })
        })
        .map_err(|e| store.wrap(e))?;
    rows.collect::<rusqlite::Result<_>>()
        .map_err(|e| store.wrap(e))
}

/// Every recorded delivery attempt, oldest first (for tests, the CLI and the dashboard).
pub fn deliveries(store: &Store) -> Result<Vec<Attempt>, AuditError> {
    attempts_since(store, "")
}

/// Blank the client address of attempts past their category's retention, as the
/// audit log does for its events (the address is personal data). Returns how many.
pub fn purge(store: &Store, policy: &Retention, now: SystemTime) -> Result<u64, AuditError> {
    let categories: Vec<String> = {
        let mut stmt = store
            .conn()
            .prepare("SELECT DISTINCT category FROM alert_deliveries WHERE client_ip != ''")
            .map_err(|e| store.wrap(e))?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .map_err(|e| store.wrap(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| store.wrap(e))?
    };
    let mut purged = 0;
    for category in categories {
        let horizon = rfc3339(policy.expiry(&category, now));
        purged += store
            .conn()
            .execute(
                "UPDATE alert_deliveries SET client_ip = '' \
                 WHERE category = ?1 AND client_ip != '' AND at < ?2",
                params![category, horizon],
            )
            .map_err(|e| store.wrap(e))? as u64;
    }
    Ok(purged)
}

/// Parse `event_ids` back into ids (unreadable parts are skipped).
pub(crate) fn parse_ids(text: &str) -> Vec<i64> {
    text.split(',')
        .filter_map(|id| id.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn attempt(at: SystemTime, category: &str) -> Attempt {
        Attempt {
            at: rfc3339(at),
            channel: "email".into(),
            kind: "alert".into(),
            category: category.into(),
            client_ip: "10.0.0.7".into(),
            event_ids: "3,5".into(),
            attempt: 1,
            result: "ok".into(),
            error: None,
        }
    }

    #[test]
    fn cursor_attempts_and_retention_of_the_delivery_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("audit.sqlite")).unwrap();
        assert_eq!(cursor(&store).unwrap(), None);
        save_cursor(&store, 7).unwrap();
        save_cursor(&store, 9).unwrap();
        assert_eq!(cursor(&store).unwrap(), Some(9));

        let now = SystemTime::now();
        let days = |n: u64| now - Duration::from_secs(n * 86_400);
        record(&store, &attempt(days(40), "self-harm")).unwrap();
        record(&store, &attempt(days(40), "terrorism")).unwrap();
        record(&store, &attempt(days(1), "self-harm")).unwrap();
        let recent = attempts_since(&store, &rfc3339(days(2))).unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(parse_ids(&recent[0].event_ids), [3, 5]);

        // Thirty days by default, terrorism kept for seven years: only the old
        // self-harm record loses its address.
        let policy = Retention {
            default_days: 30,
            by_category: BTreeMap::from([("terrorism".to_string(), 2555)]),
        };
        assert_eq!(purge(&store, &policy, now).unwrap(), 1);
        let addresses: Vec<(String, String)> = deliveries(&store)
            .unwrap()
            .into_iter()
            .map(|a| (a.category, a.client_ip))
            .collect();
        assert_eq!(
            addresses,
            [
                ("self-harm".to_string(), String::new()),
                ("terrorism".to_string(), "10.0.0.7".to_string()),
                ("self-harm".to_string(), "10.0.0.7".to_string()),
            ]
        );
        assert_eq!(purge(&store, &policy, now).unwrap(), 0);
    }
    /// One device's blocks in one flush of the audit writer come back in the order
    /// they were seen, so an instant alert names the device's first block (the
    /// writer used to insert a batch in hash-map order).
    #[test]
    fn new_blocks_are_read_in_the_order_they_were_seen() {
        use crate::audit::writer::{Writer, WriterSettings};
        use crate::audit::{Event, Outcome, Sink};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.sqlite");
        let sink = Sink::new(1000);
        let writer = Writer::start(
            Store::open(&path).unwrap(),
            sink.clone(),
            WriterSettings {
                window: Duration::from_secs(60),
                flush_interval: Duration::from_secs(1),
                retention_days: 30,
                retention_by_category: BTreeMap::new(),
            },
        )
        .unwrap();
        let client = std::net::IpAddr::from([10, 0, 0, 9]);
        // Zero-padded, so names seen in the same instant tie-break in the same order.
        let names: Vec<String> = (0..64).map(|i| format!("n{i:03}.terror.test")).collect();
        for name in &names {
            sink.record(
                client,
                Default::default(),
                Outcome::Blocked,
                "terrorism",
                name,
                || Event {
                    time: SystemTime::now(),
                    client,
                    device: None,
                    group: "pupils".into(),
                    name: name.clone(),
                    qtype: "A".into(),
                    categories: "terrorism".into(),
                    locked: true,
                    list: "ctiru".into(),
                    line: 1,
                    rule: name.clone(),
                    response: "nxdomain".into(),
                    cname: None,
                    outcome: Outcome::Blocked,
                    identity: Default::default(),
                },
            );
        }
        writer.stop().unwrap();
        let store = Store::open(&path).unwrap();
        let read: Vec<String> = blocked_after(&store, 0, 1000)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(read, names);
    }
}
