//! The report's reads of the audit database, each over the period: blocks per month and
//! category, reviews by outcome, serious blocks and how soon each was reviewed, alert
//! deliveries, and the identifying values the governors' version must not show. Counts
//! come from the events themselves (a purged event keeps its time, category and count;
//! only who asked is gone), so a year is counted whole.

use rusqlite::params;

use crate::audit::{AuditError, Store};

/// Blocks in one month (`2026-03`, UTC) and category set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthBlocks {
    pub month: String,
    pub categories: String,
    pub blocks: i64,
}

/// Blocks per month and category set since `since` (RFC 3339).
pub fn blocks_by_month(store: &Store, since: &str) -> Result<Vec<MonthBlocks>, AuditError> {
    rows(
        store,
        "SELECT substr(first_seen, 1, 7), categories, sum(count) FROM events \
         WHERE first_seen >= ?1 AND outcome = 'blocked' GROUP BY 1, 2 ORDER BY 1, 2",
        since,
        |r| {
            Ok(MonthBlocks {
                month: r.get(0)?,
                categories: r.get(1)?,
                blocks: r.get(2)?,
            })
        },
    )
}

/// Reviews written since `since`, by outcome.
pub fn reviews_by_outcome(store: &Store, since: &str) -> Result<Vec<(String, i64)>, AuditError> {
    rows(
        store,
        "SELECT outcome, count(*) FROM reviews WHERE at >= ?1 GROUP BY 1 ORDER BY 1",
        since,
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// One blocked event in a serious category, with its first review if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriousBlock {
    pub id: i64,
    pub at: String,
    pub categories: String,
    pub name: String,
    /// Who asked: the device's name, else its address (empty once purged).
    pub who: String,
    pub user: Option<String>,
    pub reviewed_at: Option<String>,
    pub outcome: Option<String>,
}

/// Blocked events since `since` in any of `categories`, oldest first.
pub fn serious_blocks(
    store: &Store,
    since: &str,
    categories: &[String],
) -> Result<Vec<SeriousBlock>, AuditError> {
    let mut out = Vec::new();
    for category in categories {
        let pattern = format!("%,{category},%");
        let mut stmt = store
            .conn()
            .prepare(
                "SELECT e.id, e.first_seen, e.categories, e.name, coalesce(e.device, e.client_ip), \
                        e.user_name, \
                        (SELECT min(at) FROM reviews r WHERE r.event_id = e.id), \
                        (SELECT outcome FROM reviews r WHERE r.event_id = e.id ORDER BY at LIMIT 1) \
                 FROM events e WHERE e.first_seen >= ?1 AND e.outcome = 'blocked' \
                 AND ',' || e.categories || ',' LIKE ?2",
            )
            .map_err(|e| store.wrap(e))?;
        let found = stmt
            .query_map(params![since, pattern], |r| {
                Ok(SeriousBlock {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    categories: r.get(2)?,
                    name: r.get(3)?,
                    who: r.get(4)?,
                    user: r.get(5)?,
                    reviewed_at: r.get(6)?,
                    outcome: r.get(7)?,
                })
            })
            .map_err(|e| store.wrap(e))?;
        for block in found {
            out.push(block.map_err(|e| store.wrap(e))?);
        }
    }
    out.sort_by(|a, b| (&a.at, a.id).cmp(&(&b.at, b.id)));
    out.dedup_by_key(|b| b.id);
    Ok(out)
}

/// Alert and notice deliveries since `since`: (kind, result of the last attempt,
/// messages), a message being one (kind, events, channel) delivery.
pub fn deliveries(store: &Store, since: &str) -> Result<Vec<(String, String, i64)>, AuditError> {
    rows(
        store,
        "SELECT kind, result, count(*) FROM ( \
             SELECT kind, channel, event_ids, \
                    (SELECT result FROM alert_deliveries l WHERE l.kind = d.kind \
                       AND l.channel = d.channel AND l.event_ids = d.event_ids \
                       AND l.at >= ?1 ORDER BY l.id DESC LIMIT 1) AS result \
             FROM alert_deliveries d WHERE d.at >= ?1 AND d.attempt = 1 \
         ) GROUP BY 1, 2 ORDER BY 1, 2",
        since,
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

/// Every value in the audit log since `since` that says who asked: addresses, device
/// names, MACs and user names (the governors' version must show none of them).
pub fn identifying(store: &Store, since: &str) -> Result<Vec<String>, AuditError> {
    rows(
        store,
        "SELECT client_ip FROM events WHERE first_seen >= ?1 AND client_ip <> '' \
         UNION SELECT device FROM events WHERE first_seen >= ?1 AND device IS NOT NULL \
         UNION SELECT mac FROM events WHERE first_seen >= ?1 AND mac IS NOT NULL \
         UNION SELECT user_name FROM events WHERE first_seen >= ?1 AND user_name IS NOT NULL",
        since,
        |r| r.get(0),
    )
}

/// The rows of `sql` (one parameter, `since`), read with `read`.
fn rows<T>(
    store: &Store,
    sql: &str,
    since: &str,
    read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, AuditError> {
    let mut stmt = store.conn().prepare(sql).map_err(|e| store.wrap(e))?;
    let found = stmt.query_map([since], read).map_err(|e| store.wrap(e))?;
    found.collect::<Result<_, _>>().map_err(|e| store.wrap(e))
}
