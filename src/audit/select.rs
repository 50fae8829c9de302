//! How a [`Filter`] becomes index ranges over `events`, so that no read of the lead's
//! scans the table: each filter picks the index whose leading column it fixes (user,
//! device or address, then category set, then review, then group, else time alone), and every index ends in
//! `first_seen`, so the rows come newest first and a page stops after its last row.
//!
//! Reviewed rows (about 1%) have an index of their own, so a reviewed filter is read from
//! it rather than walked for across the unreviewed.
//!
//! A filter on several category sets (a row's `categories` is a set such as
//! `adult,gambling`) reads one range per set from the `category_sets` the writer keeps,
//! merged. A bound on `last_seen` (the filter's `since`) becomes a `first_seen` range
//! widened by the longest span of any row (`audit_meta`), plus the exact check on the row.

use rusqlite::types::Value;

use super::store::{AuditError, Store};

/// Which events to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// RFC 3339 lower bound on `last_seen`.
    pub since: Option<String>,
    /// RFC 3339 upper bound on `first_seen`.
    pub until: Option<String>,
    pub category: Option<String>,
    /// Client IP address or device name.
    pub client: Option<String>,
    /// The signed-in user (`[identity]`), exactly as recorded.
    pub user: Option<String>,
    pub group: Option<String>,
    pub unreviewed: bool,
    /// Only events with at least one review.
    pub reviewed: bool,
    /// Only events in at least one of these categories (empty: any).
    pub any_category: Vec<String>,
    pub limit: Option<u32>,
    /// Only events older than this one, `(first_seen, id)`: the page after the one that
    /// ended with it (keyset paging: no page skips rows by counting them).
    pub before: Option<(String, i64)>,
}

/// Extra bounds on `first_seen` (start inclusive, end exclusive, RFC 3339), on top of the
/// filter's own: the partial buckets at the ends of a tallied range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A statement and its parameters.
#[derive(Debug, Clone)]
pub(crate) struct Select {
    pub sql: String,
    pub values: Vec<Value>,
}

/// Numbered parameters: each value pushed becomes `?N`.
#[derive(Default)]
struct Params(Vec<Value>);

impl Params {
    fn push(&mut self, value: impl Into<Value>) -> String {
        self.0.push(value.into());
        format!("?{}", self.0.len())
    }
}

/// One index range: the index, and the equality on its leading column.
struct Range {
    index: &'static str,
    equal: String,
}

/// `SELECT {columns}` over the rows matching `filter` within `span` and not matching
/// `except` (an SQL condition on `e`, e.g. `e.outcome = 'blocked'`), newest first; at
/// most `limit` rows, after `filter.before`. `None` when no row can match (a category no
/// row has ever had). `columns` may name any column of `events e`.
pub(crate) fn rows(
    store: &Store,
    filter: &Filter,
    span: &Span,
    also: Option<&str>,
    columns: &str,
    limit: Option<u32>,
) -> Result<Option<Select>, AuditError> {
    let mut params = Params::default();
    let mut checks = vec!["e.purged = 0".to_string()];
    time_bounds(store, filter, span, &mut params, &mut checks)?;
    row_checks(filter, &mut params, &mut checks);
    if let Some(also) = also {
        checks.push(also.to_string());
    }
    let ranges = ranges(store, filter, &mut params)?;
    if ranges.is_empty() {
        return Ok(None);
    }
    let checks = checks.join(" AND ");
    let (order, limit) = match limit {
        Some(n) => (
            " ORDER BY e.first_seen DESC, e.id DESC",
            format!(" LIMIT {n}"),
        ),
        None => ("", String::new()),
    };
    let arm = |r: &Range| {
        format!(
            "SELECT {columns} FROM events e INDEXED BY {} WHERE {} AND {checks}{order}{limit}",
            r.index, r.equal
        )
    };
    let sql = match ranges.as_slice() {
        [one] => arm(one),
        many => {
            // Each arm is read in order and stops at the limit; the merge sorts at most
            // `limit` rows per arm.
            let arms: Vec<String> = many
                .iter()
                .map(|r| format!("SELECT * FROM ({})", arm(r)))
                .collect();
            let outer = if order.is_empty() {
                String::new()
            } else {
                format!(" ORDER BY first_seen DESC, id DESC{limit}")
            };
            format!("{}{outer}", arms.join(" UNION ALL "))
        }
    };
    Ok(Some(Select {
        sql,
        values: params.0,
    }))
}

/// The `first_seen` range of `filter` and `span`, and the exact `last_seen` check.
fn time_bounds(
    store: &Store,
    filter: &Filter,
    span: &Span,
    params: &mut Params,
    checks: &mut Vec<String>,
) -> Result<(), AuditError> {
    let mut from = span.from.clone();
    if let Some(since) = &filter.since {
        checks.push(format!("e.last_seen >= {}", params.push(since.clone())));
        let earliest = earlier_by(since, store.max_span()?);
        from = Some(from.map_or(earliest.clone(), |f| f.max(earliest)));
    }
    let to = match (&filter.until, &span.to) {
        (Some(a), Some(b)) => Some(a.min(b).clone()),
        (a, b) => a.clone().or_else(|| b.clone()),
    };
    if let Some(from) = from {
        checks.push(format!("e.first_seen >= {}", params.push(from)));
    }
    if let Some(to) = to {
        checks.push(format!("e.first_seen < {}", params.push(to)));
    }
    if let Some((first_seen, id)) = &filter.before {
        let (t, i) = (params.push(first_seen.clone()), params.push(*id));
        checks.push(format!("(e.first_seen, e.id) < ({t}, {i})"));
    }
    Ok(())
}

/// The filter's conditions checked on each row of a range.
fn row_checks(filter: &Filter, params: &mut Params, checks: &mut Vec<String>) {
    if let Some(user) = &filter.user {
        checks.push(format!("e.user_name = {}", params.push(user.clone())));
    }
    if let Some(client) = &filter.client {
        let c = params.push(client.clone());
        checks.push(format!("(e.client_ip = {c} OR e.device = {c})"));
    }
    if let Some(group) = &filter.group {
        checks.push(format!("e.grp = {}", params.push(group.clone())));
    }
    if let Some(category) = &filter.category {
        // instr, not LIKE: exact and case-sensitive, and `_` is not a wildcard.
        let c = params.push(category.clone());
        checks.push(format!(
            "instr(',' || e.categories || ',', ',' || {c} || ',') > 0"
        ));
    }
    if !filter.any_category.is_empty() {
        let any: Vec<String> = filter
            .any_category
            .iter()
            .map(|c| {
                let c = params.push(c.clone());
                format!("instr(',' || e.categories || ',', ',' || {c} || ',') > 0")
            })
            .collect();
        checks.push(format!("({})", any.join(" OR ")));
    }
    if filter.unreviewed {
        checks.push("e.reviewed = 0".to_string());
    }
    if filter.reviewed {
        checks.push("e.reviewed = 1".to_string());
    }
}

/// The index ranges that cover `filter`'s rows, each row in exactly one.
fn ranges(store: &Store, filter: &Filter, params: &mut Params) -> Result<Vec<Range>, AuditError> {
    // A person's rows across every device they used: the user's own index.
    if let Some(user) = &filter.user {
        return Ok(vec![Range {
            index: "events_user",
            equal: format!("e.user_name = {}", params.push(user.clone())),
        }]);
    }
    if let Some(client) = &filter.client {
        let c = params.push(client.clone());
        return Ok(vec![
            Range {
                index: "events_client",
                equal: format!("e.client_ip = {c}"),
            },
            // A device named like an address already read above is not read twice.
            Range {
                index: "events_device",
                equal: format!("e.device = {c} AND e.client_ip != {c}"),
            },
        ]);
    }
    if filter.category.is_some() || !filter.any_category.is_empty() {
        let index = if filter.unreviewed {
            "events_unreviewed"
        } else {
            "events_categories"
        };
        return Ok(category_sets(store, filter)?
            .into_iter()
            .map(|set| Range {
                index,
                equal: format!("e.categories = {}", params.push(set)),
            })
            .collect());
    }
    if filter.reviewed {
        return Ok(vec![Range {
            index: "events_reviewed",
            equal: "1".to_string(),
        }]);
    }
    if let Some(group) = &filter.group {
        return Ok(vec![Range {
            index: "events_group",
            equal: format!("e.grp = {}", params.push(group.clone())),
        }]);
    }
    Ok(vec![Range {
        index: "events_live",
        equal: "1".to_string(),
    }])
}

/// The category sets ever recorded that hold the filter's category and any of its
/// `any_category`.
pub(crate) fn category_sets(store: &Store, filter: &Filter) -> Result<Vec<String>, AuditError> {
    let err = |e| store.wrap(e);
    let mut stmt = store
        .conn()
        .prepare_cached("SELECT categories FROM category_sets ORDER BY categories")
        .map_err(err)?;
    let all = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(err)?
        .collect::<rusqlite::Result<Vec<String>>>()
        .map_err(err)?;
    Ok(all
        .into_iter()
        .filter(|set| set_matches(set, filter))
        .collect())
}

/// Whether the category set `set` (`adult,gambling`) passes `filter`'s category terms.
pub(crate) fn set_matches(set: &str, filter: &Filter) -> bool {
    let has = |c: &str| set.split(',').any(|s| s == c);
    filter.category.as_deref().is_none_or(has)
        && (filter.any_category.is_empty() || filter.any_category.iter().any(|c| has(c)))
}

/// The RFC 3339 time `ms` milliseconds before `time` (the same text if it cannot be read:
/// then the `last_seen` check alone still holds, only slower).
pub(crate) fn earlier_by(time: &str, ms: i64) -> String {
    match humantime::parse_rfc3339_weak(time) {
        Ok(t) => super::rfc3339(super::before(
            t,
            std::time::Duration::from_millis(ms.max(0) as u64),
        )),
        Err(_) => String::new(),
    }
}
