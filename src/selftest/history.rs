//! The self-test's results in the audit database (`selftest_runs`): one row per run with
//! what failed, kept `[selftest] keep_days` for the dashboard and the annual review.

use std::time::{Duration, SystemTime};

use rusqlite::params;

use super::outcome::{Outcome, Run};
use crate::audit::{before, rfc3339, AuditError, Store};

/// One recorded run, as the dashboard and the report show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// RFC 3339, UTC.
    pub at: String,
    /// `interval`, `start`, `on demand`.
    pub trigger: String,
    pub passed: u32,
    pub total: u32,
    pub failures: Vec<Outcome>,
}

impl RunSummary {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Record `run`, and forget runs older than `keep_days`.
pub fn record(store: &Store, run: &Run, keep_days: u32) -> Result<(), AuditError> {
    let failures: Vec<&Outcome> = run.outcomes.iter().filter(|o| !o.ok).collect();
    let failures = serde_json::to_string(&failures)
        .map_err(|e| AuditError::Invalid(format!("self-test failures: {e}")))?;
    let conn = store.conn();
    conn.execute(
        "INSERT INTO selftest_runs (at, trigger, passed, total, failures) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            rfc3339(run.at),
            run.trigger,
            run.passed(),
            run.outcomes.len() as u32,
            failures
        ],
    )
    .map_err(|e| store.wrap(e))?;
    let horizon = before(run.at, Duration::from_secs(u64::from(keep_days) * 86_400));
    conn.execute(
        "DELETE FROM selftest_runs WHERE at < ?1",
        [rfc3339(horizon)],
    )
    .map_err(|e| store.wrap(e))?;
    Ok(())
}

/// The runs since `since` (RFC 3339), newest first, at most `limit`.
pub fn recent(store: &Store, since: &str, limit: u32) -> Result<Vec<RunSummary>, AuditError> {
    let mut stmt = store
        .conn()
        .prepare(
            "SELECT at, trigger, passed, total, failures FROM selftest_runs \
             WHERE at >= ?1 ORDER BY id DESC LIMIT ?2",
        )
        .map_err(|e| store.wrap(e))?;
    let rows = stmt
        .query_map(params![since, limit], |r| {
            let failures: String = r.get(4)?;
            Ok(RunSummary {
                at: r.get(0)?,
                trigger: r.get(1)?,
                passed: r.get(2)?,
                total: r.get(3)?,
                // A row this version cannot read shows as failing with no detail,
                // never as passing.
                failures: serde_json::from_str(&failures).unwrap_or_else(|_| {
                    vec![Outcome {
                        group: String::new(),
                        category: String::new(),
                        check: String::new(),
                        ok: false,
                        detail: "unreadable record".into(),
                    }]
                }),
            })
        })
        .map_err(|e| store.wrap(e))?;
    rows.collect::<Result<_, _>>().map_err(|e| store.wrap(e))
}

/// The newest run, if any.
pub fn latest(store: &Store) -> Result<Option<RunSummary>, AuditError> {
    Ok(recent(store, "", 1)?.into_iter().next())
}

/// How many runs since `since` passed and failed (for the report).
pub fn counts_since(store: &Store, since: SystemTime) -> Result<(i64, i64), AuditError> {
    store
        .conn()
        .query_row(
            "SELECT count(*) FILTER (WHERE passed = total), count(*) FILTER (WHERE passed < total) \
             FROM selftest_runs WHERE at >= ?1",
            [rfc3339(since)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| store.wrap(e))
}
