//! "I think this was blocked wrongly": requests filed from the block page
//! ([`crate::blockpage`]) and decided on the dashboard. A request keeps the site, its
//! categories, the device, its group, when, what the person was trying to do and,
//! if they gave it, their name; the admin approves it (an allow entry with the request
//! as its reason, for one group or every group, perhaps until a date) or declines it
//! with a note, and the review report counts them.
//!
//! A request is personal data (who asked, what for): the device, address and name are
//! blanked with the audit log's retention (`[audit] retention_days`, by its purge). The block page
//! refuses a request for a locked category, limits each device's rate, and stops taking
//! requests while [`MAX_OPEN`] are waiting, so nobody can fill the disk with them.

use std::net::IpAddr;
use std::time::SystemTime;

use rusqlite::{params, OptionalExtension};

use crate::audit::{rfc3339, AuditError, Store};

/// Requests waiting at most: beyond this the block page takes no more until some are
/// decided (a flood from many addresses cannot grow the database without bound).
pub const MAX_OPEN: i64 = 1000;
/// The longest description of what the person was doing, in characters.
pub const MAX_WHAT: usize = 500;
/// The longest name they may give.
pub const MAX_NAME: usize = 80;

/// Why a request was not filed or decided.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Invalid(String),
    #[error("{MAX_OPEN} requests are already waiting for a decision")]
    Full,
    #[error("request {0} is not waiting for a decision")]
    NotOpen(i64),
    #[error(transparent)]
    Store(#[from] AuditError),
}

/// A request as filed from the block page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    pub client: IpAddr,
    pub device: Option<String>,
    pub group: String,
    pub site: String,
    pub categories: String,
    pub what: String,
    pub requester: Option<String>,
}

/// What the person wrote, checked: `what` 1 to [`MAX_WHAT`] characters, the name at
/// most [`MAX_NAME`], no control characters but line breaks in `what`.
pub fn checked_text(what: &str, name: &str) -> Result<(String, Option<String>), RequestError> {
    let what = what.trim();
    let name = name.trim();
    if what.is_empty() {
        return Err(RequestError::Invalid(
            "Please say what you were trying to do.".into(),
        ));
    }
    if what.chars().count() > MAX_WHAT || name.chars().count() > MAX_NAME {
        return Err(RequestError::Invalid(format!(
            "Please keep it shorter (at most {MAX_WHAT} characters, and {MAX_NAME} for a name)."
        )));
    }
    let bad = |c: char, newlines: bool| c.is_control() && !(newlines && (c == '\n' || c == '\r'));
    if what.chars().any(|c| bad(c, true)) || name.chars().any(|c| bad(c, false)) {
        return Err(RequestError::Invalid(
            "The text holds characters that cannot be kept.".into(),
        ));
    }
    let name = (!name.is_empty()).then(|| name.to_string());
    Ok((what.replace("\r\n", "\n"), name))
}

/// File `request` at `at`; its number.
pub fn file(store: &Store, request: &NewRequest, at: SystemTime) -> Result<i64, RequestError> {
    let conn = store.conn();
    let open: i64 = conn
        .query_row(
            "SELECT count(*) FROM unblock_requests WHERE state = 'open'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| store.wrap(e))?;
    if open >= MAX_OPEN {
        return Err(RequestError::Full);
    }
    conn.execute(
        "INSERT INTO unblock_requests (at, client_ip, device, grp, site, categories, what, requester) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            rfc3339(at),
            request.client.to_string(),
            request.device,
            request.group,
            request.site,
            request.categories,
            request.what,
            request.requester
        ],
    )
    .map_err(|e| store.wrap(e))?;
    Ok(conn.last_insert_rowid())
}

/// A filed request, as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: i64,
    pub at: String,
    pub client: String,
    pub device: Option<String>,
    pub group: String,
    pub site: String,
    pub categories: String,
    pub what: String,
    pub requester: Option<String>,
    /// `open`, `approved` or `declined`.
    pub state: String,
    pub decided_at: Option<String>,
    pub decided_by: Option<String>,
    pub note: Option<String>,
    /// Approved for this group only (none: every group).
    pub allow_group: Option<String>,
}

const COLUMNS: &str = "id, at, client_ip, device, grp, site, categories, what, requester, state, \
    decided_at, decided_by, note, allow_group";

fn request(r: &rusqlite::Row<'_>) -> rusqlite::Result<Request> {
    Ok(Request {
        id: r.get(0)?,
        at: r.get(1)?,
        client: r.get(2)?,
        device: r.get(3)?,
        group: r.get(4)?,
        site: r.get(5)?,
        categories: r.get(6)?,
        what: r.get(7)?,
        requester: r.get(8)?,
        state: r.get(9)?,
        decided_at: r.get(10)?,
        decided_by: r.get(11)?,
        note: r.get(12)?,
        allow_group: r.get(13)?,
    })
}

/// The open requests, oldest first, and the latest `decided` decided ones, newest first.
pub fn queue(store: &Store, decided: u32) -> Result<(Vec<Request>, Vec<Request>), AuditError> {
    let read = |sql: String, limit: u32| -> Result<Vec<Request>, AuditError> {
        let mut stmt = store.conn().prepare(&sql).map_err(|e| store.wrap(e))?;
        let rows = stmt
            .query_map([limit], request)
            .map_err(|e| store.wrap(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| store.wrap(e))
    };
    let open = read(
        format!("SELECT {COLUMNS} FROM unblock_requests WHERE state = 'open' ORDER BY id LIMIT ?1"),
        MAX_OPEN as u32,
    )?;
    let done = read(
        format!(
            "SELECT {COLUMNS} FROM unblock_requests WHERE state <> 'open' \
             ORDER BY decided_at DESC, id DESC LIMIT ?1"
        ),
        decided,
    )?;
    Ok((open, done))
}

/// Request `id`, if there is one.
pub fn get(store: &Store, id: i64) -> Result<Option<Request>, AuditError> {
    store
        .conn()
        .query_row(
            &format!("SELECT {COLUMNS} FROM unblock_requests WHERE id = ?1"),
            [id],
            request,
        )
        .optional()
        .map_err(|e| store.wrap(e))
}

/// How a request was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub approved: bool,
    pub by: String,
    pub note: String,
    pub allow_group: Option<String>,
    pub allow_until: Option<String>,
}

/// Record `decision` on open request `id` (a request is decided once).
pub fn decide(
    store: &Store,
    id: i64,
    decision: &Decision,
    at: SystemTime,
) -> Result<(), RequestError> {
    let changed = store
        .conn()
        .execute(
            "UPDATE unblock_requests SET state = ?2, decided_at = ?3, decided_by = ?4, note = ?5, \
             allow_group = ?6, allow_until = ?7 WHERE id = ?1 AND state = 'open'",
            params![
                id,
                if decision.approved {
                    "approved"
                } else {
                    "declined"
                },
                rfc3339(at),
                decision.by,
                decision.note,
                decision.allow_group,
                decision.allow_until
            ],
        )
        .map_err(|e| store.wrap(e))?;
    match changed {
        1 => Ok(()),
        _ => Err(RequestError::NotOpen(id)),
    }
}

/// Requests filed since `since` (RFC 3339) by state: (state, count).
pub fn counts_since(store: &Store, since: &str) -> Result<Vec<(String, i64)>, AuditError> {
    let mut stmt = store
        .conn()
        .prepare(
            "SELECT state, count(*) FROM unblock_requests WHERE at >= ?1 GROUP BY 1 ORDER BY 1",
        )
        .map_err(|e| store.wrap(e))?;
    let rows = stmt
        .query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(|e| store.wrap(e))?;
    rows.collect::<Result<_, _>>().map_err(|e| store.wrap(e))
}

/// Requests waiting for a decision.
pub fn open_count(store: &Store) -> Result<i64, AuditError> {
    store
        .conn()
        .query_row(
            "SELECT count(*) FROM unblock_requests WHERE state = 'open'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| store.wrap(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(site: &str) -> NewRequest {
        NewRequest {
            client: "10.0.0.7".parse().unwrap(),
            device: Some("ipad-3".into()),
            group: "pupils".into(),
            site: site.into(),
            categories: "social".into(),
            what: "Research for history homework".into(),
            requester: Some("Sam".into()),
        }
    }

    #[test]
    fn a_request_is_filed_decided_once_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.sqlite")).unwrap();
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let id = file(&store, &new("forum.test"), at).unwrap();
        assert_eq!(open_count(&store).unwrap(), 1);
        let decision = Decision {
            approved: true,
            by: "admin".into(),
            note: String::new(),
            allow_group: Some("pupils".into()),
            allow_until: None,
        };
        decide(&store, id, &decision, at).unwrap();
        assert!(matches!(
            decide(&store, id, &decision, at),
            Err(RequestError::NotOpen(_))
        ));
        let got = get(&store, id).unwrap().unwrap();
        assert_eq!(
            (got.state.as_str(), got.allow_group.as_deref()),
            ("approved", Some("pupils"))
        );
        assert_eq!(
            counts_since(&store, "").unwrap(),
            [("approved".to_string(), 1)]
        );
        // Retention (the audit log's default) blanks who asked, and keeps what was
        // asked and decided.
        let mut store = store;
        let policy = crate::audit::store::Retention {
            default_days: 30,
            by_category: Default::default(),
        };
        store
            .purge(at + std::time::Duration::from_secs(31 * 86_400), &policy)
            .unwrap();
        let got = get(&store, id).unwrap().unwrap();
        assert_eq!(
            (got.client.as_str(), got.device, got.requester),
            ("", None, None)
        );
        assert_eq!(
            (got.site.as_str(), got.state.as_str()),
            ("forum.test", "approved")
        );
    }

    #[test]
    fn what_a_person_writes_is_checked() {
        assert_eq!(
            checked_text("  homework \r\n more ", " Sam ").unwrap(),
            ("homework \n more".to_string(), Some("Sam".to_string()))
        );
        assert_eq!(checked_text("x", "").unwrap().1, None);
        for (what, name) in [
            ("", "Sam"),
            ("  ", ""),
            (&"x".repeat(MAX_WHAT + 1)[..], ""),
            ("ok", &"n".repeat(MAX_NAME + 1)[..]),
            ("bell\u{7}", ""),
            ("ok", "line\nbreak"),
        ] {
            assert!(checked_text(what, name).is_err(), "{what:?} {name:?}");
        }
    }
}
