//! The fleet dashboard's reads and writes on the central store: the same events, counts,
//! reviews and overview figures a site's dashboard reads from its SQLite log, from every
//! site's shipped rows, and each within a [`Scope`]: the sites the signed-in lead may
//! see, a condition of every statement (a lead of one school asking for another's event
//! by its id finds nothing, and nothing of it is ever counted or exported).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use chrono_tz::Tz;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::connect::Settings;
use super::FleetError;
use crate::audit::review::{self, EventRow, Filter, ReviewState, Total};
use crate::audit::{rfc3339, AuditError};

/// The sites a fleet dashboard user may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A trust-wide lead or admin: every site.
    All,
    /// A lead bound to these sites (`[[users]] sites`).
    Sites(Vec<String>),
}

impl Scope {
    /// This scope narrowed to `site`: nothing at all if the scope does not hold it.
    pub fn only(&self, site: &str) -> Scope {
        let holds = match self {
            Scope::All => true,
            Scope::Sites(sites) => sites.iter().any(|s| s == site),
        };
        Scope::Sites(match holds {
            true => vec![site.to_string()],
            false => Vec::new(),
        })
    }
}

/// A dashboard filter on the central store: a site's filter, and one site (the site
/// filter of the events page).
#[derive(Debug, Clone, Default)]
pub struct CentralFilter {
    pub filter: Filter,
    pub site: Option<String>,
}

/// Connections the dashboard keeps to the central store: requests take them in turn, so
/// one slow page (a large export's next rows, a cold overview) does not queue every
/// other request behind it on one connection.
const CONNECTIONS: usize = 4;

/// The dashboard's connections to the central store, each made on first use and made
/// again after it breaks (the database restarted, the network dropped).
pub struct Central {
    settings: Settings,
    /// A site with no heartbeat for this long is shown as silent.
    silent_after: std::time::Duration,
    clients: Vec<tokio::sync::Mutex<Option<Arc<Client>>>>,
    next: std::sync::atomic::AtomicUsize,
    /// One review report's reads at a time: a year of every site is the heaviest thing
    /// the dashboard asks, and a crowd asking at once waits its turn rather than taking
    /// every connection (the overview and events pages keep theirs).
    pub(super) reports: tokio::sync::Semaphore,
}

impl Central {
    pub fn new(settings: Settings) -> Central {
        Central {
            settings,
            silent_after: std::time::Duration::from_secs(300),
            clients: (0..CONNECTIONS)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
            reports: tokio::sync::Semaphore::new(1),
        }
    }

    /// Show a site as silent after `after` without a heartbeat (`[fleet] silent_after`).
    pub fn silent_after(mut self, after: std::time::Duration) -> Central {
        self.silent_after = after;
        self
    }

    /// Where the central store is (host, port, database), for messages.
    pub fn target(&self) -> &str {
        &self.settings.target
    }

    /// A live connection (the next in turn), migrated to this Warden's central schema.
    pub(super) async fn client(&self) -> Result<Arc<Client>, FleetError> {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut held = self.clients[turn % CONNECTIONS].lock().await;
        if let Some(client) = held.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let mut client = self.settings.connect().await?;
        super::central::migrate(&mut client, &self.settings).await?;
        let client = Arc::new(client);
        *held = Some(client.clone());
        Ok(client)
    }

    pub(super) fn failed(&self, e: tokio_postgres::Error) -> FleetError {
        self.settings.database_error(e)
    }

    /// Events matching `filter` within `scope`, newest first: at most `limit`, after
    /// `filter.filter.before`.
    pub async fn list(
        &self,
        scope: &Scope,
        filter: &CentralFilter,
        limit: u32,
    ) -> Result<Vec<EventRow>, FleetError> {
        let client = self.client().await?;
        let mut params = Params::default();
        let c = conditions(&client, &self.settings, scope, filter, &mut params).await?;
        let order = format!("ORDER BY e.at DESC, e.id DESC LIMIT {limit}");
        // Each category set read newest first along its own index range, and only the
        // page's rows of each merged: no sort of every row of a category.
        let page = match &c.sets {
            None => format!("SELECT * FROM events e WHERE {} {order}", c.checks),
            Some(sets) if sets.is_empty() => return Ok(Vec::new()),
            Some(sets) => {
                let arms: Vec<String> = sets
                    .iter()
                    .map(|set| {
                        format!(
                            "(SELECT * FROM events e WHERE {} AND e.categories = {} {order})",
                            c.checks,
                            params.push(set.clone())
                        )
                    })
                    .collect();
                format!("SELECT * FROM ({}) e {order}", arms.join(" UNION ALL "))
            }
        };
        let sql = format!("{SELECT_EVENTS} FROM ({page}) e {LATEST_REVIEW} {order}");
        let rows = client
            .query(sql.as_str(), &params.refs())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(event_from_row).collect())
    }

    /// How many events match `filter` within `scope` (ignoring its cursor).
    pub async fn count(&self, scope: &Scope, filter: &CentralFilter) -> Result<i64, FleetError> {
        let client = self.client().await?;
        let mut whole = filter.clone();
        whole.filter.before = None;
        let mut params = Params::default();
        let c = conditions(&client, &self.settings, scope, &whole, &mut params).await?;
        let sql = format!("SELECT count(*) FROM events e WHERE {}", c.all(&mut params));
        let row = client
            .query_one(sql.as_str(), &params.refs())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(row.get(0))
    }

    /// A page's count: exact up to [`review::PAGE_COUNT_CAP`], "more than" past it.
    pub async fn page_total(
        &self,
        scope: &Scope,
        filter: &CentralFilter,
    ) -> Result<Total, FleetError> {
        let client = self.client().await?;
        let mut whole = filter.clone();
        whole.filter.before = None;
        let mut params = Params::default();
        let c = conditions(&client, &self.settings, scope, &whole, &mut params).await?;
        let cap = review::PAGE_COUNT_CAP;
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM events e WHERE {} LIMIT {}) AS n",
            c.all(&mut params),
            cap + 1
        );
        let n: i64 = client
            .query_one(sql.as_str(), &params.refs())
            .await
            .map_err(|e| self.failed(e))?
            .get(0);
        Ok(if n > i64::from(cap) {
            Total::MoreThan(i64::from(cap))
        } else {
            Total::Exact(n)
        })
    }

    /// Blocks per (day in `tz`, category) since `since` (RFC 3339, a midnight in `tz`)
    /// within `scope`, by first-seen time, a row with several categories counted under
    /// each; and the blocks in all. From the hourly rollup where `tz`'s days are whole UTC hours (every zone
    /// whose offset is whole hours), else from the rows.
    pub async fn daily_by_category(
        &self,
        scope: &Scope,
        since: &str,
        tz: Tz,
    ) -> Result<(Vec<(String, String, i64)>, i64), FleetError> {
        let client = self.client().await?;
        let mut params = Params::default();
        let only = scope_condition(scope, "t.site", &mut params);
        let from = params.push(since.to_string());
        let zone = params.push(tz.name().to_string());
        let sql = match whole_hours(tz, since) {
            true => format!(
                "SELECT to_char(t.hour AT TIME ZONE {zone}, 'YYYY-MM-DD'), t.categories, \
                 sum(t.blocks)::bigint FROM tally_hour t \
                 WHERE t.hour >= {from}::text::timestamptz AND {only} GROUP BY 1, 2"
            ),
            false => format!(
                "SELECT to_char(t.at AT TIME ZONE {zone}, 'YYYY-MM-DD'), t.categories, \
                 sum(t.count)::bigint FROM events t WHERE t.at >= {from}::text::timestamptz \
                 AND t.purged = 0 AND t.outcome = 'blocked' AND {only} GROUP BY 1, 2"
            ),
        };
        let rows = client
            .query(sql.as_str(), &params.refs())
            .await
            .map_err(|e| self.failed(e))?;
        let mut out: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut total = 0;
        for row in &rows {
            let (day, set, n): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
            total += n;
            for category in set.split(',').filter(|c| !c.is_empty()) {
                *out.entry((day.clone(), category.to_string())).or_default() += n;
            }
        }
        let daily = out
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|((d, c), n)| (d, c, n))
            .collect();
        Ok((daily, total))
    }

    /// Rows not yet reviewed within `scope` (from the per-site rollup).
    pub async fn unreviewed(&self, scope: &Scope) -> Result<i64, FleetError> {
        let client = self.client().await?;
        let mut params = Params::default();
        let only = scope_condition(scope, "t.site", &mut params);
        let sql =
            format!("SELECT coalesce(sum(t.unreviewed), 0)::bigint FROM tally_site t WHERE {only}");
        let row = client
            .query_one(sql.as_str(), &params.refs())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(row.get(0))
    }

    /// Every site in `scope` with its shipping state and its blocks first seen since
    /// `since` (a whole UTC hour) per category, from the hourly rollup.
    pub async fn sites(&self, scope: &Scope, since: &str) -> Result<Vec<SiteState>, FleetError> {
        let client = self.client().await?;
        let mut params = Params::default();
        let only = scope_condition(scope, "s.site", &mut params);
        let sql = format!(
            "SELECT s.site, s.head_seq, s.shipped_at FROM sites s WHERE {only} ORDER BY s.site"
        );
        let rows = client
            .query(sql.as_str(), &params.refs())
            .await
            .map_err(|e| self.failed(e))?;
        let mut health = self.health(scope).await?;
        let mut sites: Vec<SiteState> = rows
            .iter()
            .map(|r| SiteState {
                site: r.get(0),
                head_seq: r.get(1),
                shipped_at: r.get::<_, Option<SystemTime>>(2).map(rfc3339),
                blocks: Vec::new(),
                health: None,
            })
            .collect();
        for site in &mut sites {
            site.health = health.remove(&site.site);
        }
        // A site that reports its health but has shipped nothing yet is still shown.
        sites.extend(health.into_iter().map(|(site, h)| SiteState {
            site,
            head_seq: 0,
            shipped_at: None,
            blocks: Vec::new(),
            health: Some(h),
        }));
        sites.sort_by(|a, b| a.site.cmp(&b.site));
        let mut params = Params::default();
        let only = scope_condition(scope, "t.site", &mut params);
        let from = params.push(since.to_string());
        let sql = format!(
            "SELECT t.site, t.categories, sum(t.blocks)::bigint FROM tally_hour t \
             WHERE t.hour >= date_trunc('hour', {from}::text::timestamptz) AND {only} \
             GROUP BY 1, 2"
        );
        let rows = client
            .query(sql.as_str(), &params.refs())
            .await
            .map_err(|e| self.failed(e))?;
        let mut per_site: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
        for row in &rows {
            let (site, set, n): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
            let categories = per_site.entry(site).or_default();
            for category in set.split(',').filter(|c| !c.is_empty()) {
                *categories.entry(category.to_string()).or_default() += n;
            }
        }
        for site in &mut sites {
            if let Some(categories) = per_site.remove(&site.site) {
                site.blocks = categories.into_iter().filter(|(_, n)| *n != 0).collect();
                site.blocks
                    .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            }
        }
        Ok(sites)
    }

    /// Every site in `scope` that has sent a heartbeat, with its last one.
    pub async fn health(&self, scope: &Scope) -> Result<HashMap<String, SiteHealth>, FleetError> {
        let client = self.client().await?;
        let mut params = Params::default();
        let only = scope_condition(scope, "h.site", &mut params);
        let sql = format!(
            "SELECT h.site, h.at, extract(epoch FROM now() - h.at)::float8, h.warden_version, \
             h.policy_version, (SELECT coalesce(max(version), 0) FROM policy_changes), \
             h.refused_version, h.refused_error, h.policy_notes, h.rules, h.last_reload, \
             h.backlog_rows, h.queries_per_min, h.blocks_per_min, h.stale_locked, h.selftest \
             FROM site_health h WHERE {only}"
        );
        let rows = client
            .query(sql.as_str(), &params.refs())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows
            .iter()
            .map(|r| {
                let age_secs: f64 = r.get(2);
                let refused = match (r.get::<_, Option<i64>>(6), r.get::<_, Option<String>>(7)) {
                    (Some(v), e) => Some((v, e.unwrap_or_default())),
                    _ => None,
                };
                let notes: String = r.get(8);
                let health = SiteHealth {
                    at: rfc3339(r.get(1)),
                    age_secs,
                    silent: age_secs > self.silent_after.as_secs_f64(),
                    warden_version: r.get(3),
                    policy_version: r.get(4),
                    newest_policy: r.get(5),
                    refused,
                    notes: notes.lines().map(str::to_string).collect(),
                    rules: r.get(9),
                    last_reload: r.get(10),
                    backlog_rows: r.get(11),
                    queries_per_min: r.get(12),
                    blocks_per_min: r.get(13),
                    stale_locked: r.get(14),
                    selftest: r.get(15),
                };
                (r.get(0), health)
            })
            .collect())
    }

    /// Every version of the trust's policy, oldest first.
    pub async fn policy_records(&self) -> Result<Vec<super::policy::Record>, FleetError> {
        let client = self.client().await?;
        super::policy::read_records(&*client, &self.settings, None).await
    }

    /// Check and store a change to the trust's policy ([`super::edit::propose`]), on a
    /// connection of its own (a change takes a transaction; changes are rare).
    pub async fn propose(
        &self,
        config: &crate::config::Config,
        engine: Option<&crate::engine::Engine>,
        author: &str,
        reason: &str,
        change: &super::policy::Change,
    ) -> Result<Result<i64, super::policy::Refused>, FleetError> {
        let mut client = self.settings.connect().await?;
        super::edit::propose(
            &mut client,
            &self.settings,
            config,
            engine,
            author,
            reason,
            change,
        )
        .await
    }

    /// Every site's name, in order.
    pub async fn site_names(&self) -> Result<Vec<String>, FleetError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT site FROM sites ORDER BY site", &[])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Event `id` if `scope` sees it (else [`AuditError::NoSuchEvent`], as for an id that
    /// does not exist: a lead learns nothing of another site's rows), with every review
    /// of it, oldest first.
    pub async fn get(
        &self,
        scope: &Scope,
        id: i64,
    ) -> Result<(EventRow, Vec<ReviewState>), FleetError> {
        let client = self.client().await?;
        let mut params = Params::default();
        let only = scope_condition(scope, "e.site", &mut params);
        let wanted = params.push(id);
        let sql = format!(
            "{SELECT_EVENTS} FROM events e {LATEST_REVIEW} \
             WHERE e.id = {wanted} AND e.purged = 0 AND {only}"
        );
        let rows = client
            .query(sql.as_str(), &params.refs())
            .await
            .map_err(|e| self.failed(e))?;
        let event = rows
            .first()
            .map(event_from_row)
            .ok_or(FleetError::Audit(AuditError::NoSuchEvent(id)))?;
        let site = event.site.clone().unwrap_or_default();
        let seq = event.seq.unwrap_or(0);
        let reviews = client
            .query(
                "SELECT outcome, by, at, note FROM all_reviews \
                 WHERE site = $1 AND event_seq = $2 ORDER BY at",
                &[&site, &seq],
            )
            .await
            .map_err(|e| self.failed(e))?
            .iter()
            .map(|r| ReviewState {
                outcome: r.get(0),
                by: r.get(1),
                at: r.get(2),
                note: r.get(3),
            })
            .collect();
        Ok((event, reviews))
    }

    /// Review event `id` (if `scope` sees it) as `by`: kept centrally and sent back to
    /// its site by the site's shipper. The same checks as a site's own review.
    pub async fn add_review(
        &self,
        scope: &Scope,
        id: i64,
        outcome: &str,
        note: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<i64, FleetError> {
        review::check_review(outcome, note)?;
        let (event, _) = self.get(scope, id).await?;
        let (site, seq) = (event.site.unwrap_or_default(), event.seq.unwrap_or(0));
        let client = self.client().await?;
        let at = rfc3339(now);
        let row = client
            .query_one(
                "WITH review AS (INSERT INTO central_reviews (site, event_seq, at, by, outcome, note) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id), \
                 marked AS (UPDATE events SET reviewed = true \
                 WHERE site = $1 AND seq = $2 AND NOT reviewed) \
                 SELECT id FROM review",
                &[&site, &seq, &at, &by, &outcome, &note],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(row.get(0))
    }

    /// Record a sign-in attempt on the fleet dashboard.
    pub async fn record_signin(
        &self,
        at: &str,
        user: &str,
        client_ip: &str,
        result: &str,
    ) -> Result<(), FleetError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO dashboard_signins (at, \"user\", client_ip, result) \
                 VALUES ($1, $2, $3, $4)",
                &[
                    &at,
                    &super::central::pg_text(user.to_string()),
                    &client_ip,
                    &result,
                ],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// Record that `user` used second factor `kind` = `value` (a TOTP step, a recovery
    /// code's hash); false if it had been used before, which then must be refused.
    pub async fn use_second_factor(
        &self,
        at: &str,
        user: &str,
        kind: &str,
        value: &str,
    ) -> Result<bool, FleetError> {
        let client = self.client().await?;
        let inserted = client
            .execute(
                "INSERT INTO dashboard_second_factor_uses (\"user\", kind, value, at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[
                    &super::central::pg_text(user.to_string()),
                    &kind,
                    &value,
                    &at,
                ],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(inserted == 1)
    }
}

/// A site as the fleet overview shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteState {
    pub site: String,
    /// The last chain position shipped.
    pub head_seq: i64,
    /// When it last shipped a batch (RFC 3339).
    pub shipped_at: Option<String>,
    /// Blocks in the period per category, most first.
    pub blocks: Vec<(String, i64)>,
    /// Its last heartbeat, if it has sent one.
    pub health: Option<SiteHealth>,
}

/// A site's last heartbeat, and what it says against the trust's newest policy.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteHealth {
    /// When it came (RFC 3339) and how long ago, by the database's clock.
    pub at: String,
    pub age_secs: f64,
    /// No heartbeat within `[fleet] silent_after`.
    pub silent: bool,
    pub warden_version: String,
    /// The policy version it applies, and the newest stored.
    pub policy_version: i64,
    pub newest_policy: i64,
    /// A newer version it refused, and why.
    pub refused: Option<(i64, String)>,
    /// Entries it left out or cannot apply as written.
    pub notes: Vec<String>,
    pub rules: i64,
    pub last_reload: String,
    pub backlog_rows: i64,
    /// Its last self-test, in words (empty: none yet, or a Warden without one).
    pub selftest: String,
    pub queries_per_min: f64,
    pub blocks_per_min: f64,
    /// Locked lists past their `max_age`, comma-separated.
    pub stale_locked: String,
}

impl SiteHealth {
    /// On an older policy version than the newest.
    pub fn behind(&self) -> bool {
        self.policy_version < self.newest_policy
    }
}

/// Whether the days of `tz` from `since` (RFC 3339) to now start on whole UTC hours: its
/// offset is whole hours at both ends (daylight saving moves it by an hour).
fn whole_hours(tz: Tz, since: &str) -> bool {
    use chrono::{Offset, TimeZone};
    let Ok(start) = humantime::parse_rfc3339_weak(since) else {
        return false;
    };
    [start, SystemTime::now()].into_iter().all(|t| {
        let utc = chrono::DateTime::<chrono::Utc>::from(t).naive_utc();
        tz.offset_from_utc_datetime(&utc).fix().local_minus_utc() % 3600 == 0
    })
}

/// The columns of [`event_from_row`], from rows `e` joined with [`LATEST_REVIEW`] `r`.
const SELECT_EVENTS: &str = "SELECT e.id, e.site, e.seq, e.first_seen, e.last_seen, e.count, \
    e.client_ip, e.device, e.grp, e.name, e.qtype, e.categories, e.locked, e.list, e.line, \
    e.rule, e.response, e.cname, e.outcome, e.hash, e.salt, r.outcome, r.by, r.at, r.note, \
    CASE WHEN e.seq = 1 THEN repeat('0', 64) ELSE \
      (SELECT p.hash FROM events p WHERE p.site = e.site AND p.seq = e.seq - 1 LIMIT 1) END, \
    e.mac, e.user_name, e.sources";

/// Each row's latest review, if it has one.
const LATEST_REVIEW: &str = "LEFT JOIN LATERAL (SELECT a.outcome, a.by, a.at, a.note \
    FROM all_reviews a WHERE a.site = e.site AND a.event_seq = e.seq ORDER BY a.at DESC \
    LIMIT 1) r ON e.reviewed";

fn event_from_row(row: &Row) -> EventRow {
    let review_outcome: Option<String> = row.get(21);
    EventRow {
        id: row.get(0),
        site: Some(row.get(1)),
        seq: Some(row.get(2)),
        first_seen: row.get(3),
        last_seen: row.get(4),
        count: row.get(5),
        client_ip: row.get(6),
        device: row.get(7),
        mac: row.get(26),
        user: row.get(27),
        sources: row.get(28),
        group: row.get(8),
        name: row.get(9),
        qtype: row.get(10),
        categories: row.get(11),
        locked: row.get::<_, i64>(12) != 0,
        list: row.get(13),
        line: row.get(14),
        rule: row.get(15),
        response: row.get(16),
        cname: row.get(17),
        outcome: row.get(18),
        hash: Some(row.get(19)),
        salt: row.get(20),
        prev_hash: row.get(25),
        review: review_outcome.map(|outcome| ReviewState {
            outcome,
            by: row.get(22),
            at: row.get(23),
            note: row.get(24),
        }),
    }
}

/// Numbered parameters: each value pushed becomes `$N`.
#[derive(Default)]
pub(super) struct Params(Vec<Box<dyn ToSql + Sync + Send>>);

impl Params {
    pub(super) fn push(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.0.push(Box::new(value));
        format!("${}", self.0.len())
    }

    pub(super) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// `column` within `scope`: `true` for every site.
pub(super) fn scope_condition(scope: &Scope, column: &str, params: &mut Params) -> String {
    match scope {
        Scope::All => "true".to_string(),
        Scope::Sites(sites) => format!("{column} = ANY({}::text[])", params.push(sites.clone())),
    }
}

/// The conditions on `events e` of `filter` within `scope` (purged rows never match).
/// A category term becomes the category sets that pass it (`category_sets`), one range
/// each of `events_live_categories`: [`Conditions::all`] asks for any of them,
/// [`Central::list`] reads each in order.
struct Conditions {
    checks: String,
    /// The category sets a row may have; `None` for any.
    sets: Option<Vec<String>>,
}

impl Conditions {
    /// Every condition, the sets included, for statements that need no order.
    fn all(&self, params: &mut Params) -> String {
        match &self.sets {
            None => self.checks.clone(),
            Some(sets) => format!(
                "{} AND e.categories = ANY({}::text[])",
                self.checks,
                params.push(sets.clone())
            ),
        }
    }
}

async fn conditions(
    client: &Client,
    settings: &Settings,
    scope: &Scope,
    filter: &CentralFilter,
    params: &mut Params,
) -> Result<Conditions, FleetError> {
    let mut checks = vec![
        "e.purged = 0".to_string(),
        scope_condition(scope, "e.site", params),
    ];
    if let Some(site) = &filter.site {
        checks.push(format!("e.site = {}", params.push(site.clone())));
    }
    let f = &filter.filter;
    if let Some(since) = &f.since {
        // A bound on last_seen, read from first_seen (the partition key) widened by the
        // longest span any site has shipped.
        let span: i64 = client
            .query_one("SELECT coalesce(max(max_span_ms), 0) FROM sites", &[])
            .await
            .map_err(|e| settings.database_error(e))?
            .get(0);
        let from = crate::audit::select::earlier_by(since, span);
        checks.push(format!("e.last_seen >= {}", params.push(since.clone())));
        if !from.is_empty() {
            checks.push(format!("e.at >= {}::text::timestamptz", params.push(from)));
        }
    }
    if let Some(until) = &f.until {
        checks.push(format!(
            "e.at < {}::text::timestamptz",
            params.push(until.clone())
        ));
    }
    if let Some((first_seen, id)) = &f.before {
        let (t, i) = (params.push(first_seen.clone()), params.push(*id));
        checks.push(format!("(e.at, e.id) < ({t}::text::timestamptz, {i})"));
    }
    if let Some(client_text) = &f.client {
        let c = params.push(client_text.clone());
        checks.push(format!("(e.client_ip = {c} OR e.device = {c})"));
    }
    if let Some(group) = &f.group {
        checks.push(format!("e.grp = {}", params.push(group.clone())));
    }
    if let Some(user) = &f.user {
        checks.push(format!("e.user_name = {}", params.push(user.clone())));
    }
    if f.unreviewed {
        checks.push("NOT e.reviewed".to_string());
    }
    if f.reviewed {
        checks.push("e.reviewed".to_string());
    }
    let sets = match f.category.is_some() || !f.any_category.is_empty() {
        false => None,
        true => Some(
            client
                .query(
                    "SELECT categories FROM category_sets ORDER BY categories",
                    &[],
                )
                .await
                .map_err(|e| settings.database_error(e))?
                .iter()
                .map(|r| r.get::<_, String>(0))
                .filter(|set| crate::audit::select::set_matches(set, f))
                .collect(),
        ),
    };
    Ok(Conditions {
        checks: checks.join(" AND "),
        sets,
    })
}
