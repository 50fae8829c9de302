//! The trust's review report's reads of the central store ([`crate::report::trust`]):
//! over a period and within the reader's [`Scope`], each site's blocks per month and
//! category, reviews by outcome, serious blocks with their first review, allow changes
//! and alert deliveries, and the values that say who asked (which the governors' version
//! blanks). Blocks are counted from the events themselves: a purged row keeps its time,
//! categories and count, so a year is counted whole.

use super::read::{scope_condition, Central, Params, Scope};
use super::FleetError;
use crate::audit::records::AllowChange;

/// Blocks at one site in one month (`2026-03`, UTC) and category set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteMonth {
    pub site: String,
    pub month: String,
    pub categories: String,
    pub blocks: i64,
}

/// A serious block: when, and when it was first reviewed (at the site or centrally).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriousWait {
    pub site: String,
    pub at: String,
    pub reviewed_at: Option<String>,
}

/// What the trust's sites did in a period.
#[derive(Debug, Clone, Default)]
pub struct Outcomes {
    pub months: Vec<SiteMonth>,
    /// (site, outcome, reviews).
    pub reviews: Vec<(String, String, i64)>,
    pub serious: Vec<SeriousWait>,
    /// (site, change), oldest first.
    pub allow_changes: Vec<(String, AllowChange)>,
    /// (site, kind, result of the last attempt, messages).
    pub deliveries: Vec<(String, String, String, i64)>,
    /// Addresses, device names, MACs and user names in the period's events.
    pub identifying: Vec<String>,
}

impl Central {
    /// Everything [`Outcomes`] holds since `since` (RFC 3339) within `scope`; serious
    /// blocks are those in any of `serious`.
    pub async fn outcomes(
        &self,
        scope: &Scope,
        since: &str,
        serious: &[String],
    ) -> Result<Outcomes, FleetError> {
        // The semaphore is never closed; a closed one would only mean no turn to wait for.
        let _turn = self.reports.acquire().await.ok();
        Ok(Outcomes {
            months: self.months(scope, since).await?,
            reviews: self.reviews_by_outcome(scope, since).await?,
            serious: self.serious_waits(scope, since, serious).await?,
            allow_changes: self.allow_changes(scope, since).await?,
            deliveries: self.deliveries(scope, since).await?,
            identifying: self.identifying(scope, since).await?,
        })
    }

    /// The rows of `sql`, whose `{since}` and `{only}` are the period's start and the
    /// scope on `site_column`.
    async fn period_rows(
        &self,
        scope: &Scope,
        since: &str,
        site_column: &str,
        sql: &str,
    ) -> Result<Vec<tokio_postgres::Row>, FleetError> {
        let client = self.client().await?;
        let mut params = Params::default();
        let from = params.push(since.to_string());
        let only = scope_condition(scope, site_column, &mut params);
        let sql = sql.replace("{since}", &from).replace("{only}", &only);
        client
            .query(sql.as_str(), &params.refs())
            .await
            .map_err(|e| self.failed(e))
    }

    /// From the daily rollup (`tally_day`, every blocked row, purged or not), days from
    /// `since`'s (UTC) on.
    async fn months(&self, scope: &Scope, since: &str) -> Result<Vec<SiteMonth>, FleetError> {
        let rows = self
            .period_rows(
                scope,
                since,
                "t.site",
                "SELECT t.site, to_char(t.day, 'YYYY-MM'), t.categories, sum(t.blocks)::bigint \
                 FROM tally_day t \
                 WHERE t.day >= ({since}::text::timestamptz AT TIME ZONE 'UTC')::date AND {only} \
                 GROUP BY 1, 2, 3 HAVING sum(t.blocks) <> 0 ORDER BY 1, 2, 3",
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| SiteMonth {
                site: r.get(0),
                month: r.get(1),
                categories: r.get(2),
                blocks: r.get(3),
            })
            .collect())
    }

    async fn reviews_by_outcome(
        &self,
        scope: &Scope,
        since: &str,
    ) -> Result<Vec<(String, String, i64)>, FleetError> {
        let rows = self
            .period_rows(
                scope,
                since,
                "r.site",
                "SELECT r.site, r.outcome, count(*) FROM all_reviews r \
                 WHERE r.at >= {since} AND {only} GROUP BY 1, 2 ORDER BY 1, 2",
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Blocked events in a category set holding any of `serious`, oldest first.
    async fn serious_waits(
        &self,
        scope: &Scope,
        since: &str,
        serious: &[String],
    ) -> Result<Vec<SeriousWait>, FleetError> {
        let client = self.client().await?;
        let sets: Vec<String> = client
            .query("SELECT categories FROM category_sets", &[])
            .await
            .map_err(|e| self.failed(e))?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .filter(|set| set.split(',').any(|c| serious.iter().any(|s| s == c)))
            .collect();
        if sets.is_empty() {
            return Ok(Vec::new());
        }
        let mut params = Params::default();
        let from = params.push(since.to_string());
        let only = scope_condition(scope, "e.site", &mut params);
        let sets = params.push(sets);
        let sql = format!(
            "SELECT e.site, e.first_seen, (SELECT min(r.at) FROM all_reviews r \
                 WHERE r.site = e.site AND r.event_seq = e.seq) \
             FROM events e WHERE e.at >= {from}::text::timestamptz AND e.outcome = 'blocked' \
             AND e.categories = ANY({sets}::text[]) AND {only} ORDER BY e.at, e.site"
        );
        let rows = client
            .query(sql.as_str(), &params.refs())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows
            .iter()
            .map(|r| SeriousWait {
                site: r.get(0),
                at: r.get(1),
                reviewed_at: r.get(2),
            })
            .collect())
    }

    async fn allow_changes(
        &self,
        scope: &Scope,
        since: &str,
    ) -> Result<Vec<(String, AllowChange)>, FleetError> {
        let rows = self
            .period_rows(
                scope,
                since,
                "a.site",
                "SELECT a.site, a.at, a.by, a.action, a.name, a.reason FROM allow_changes a \
                 WHERE a.at >= {since} AND {only} ORDER BY a.at, a.site, a.local_id",
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let change = AllowChange {
                    at: r.get(1),
                    by: r.get(2),
                    action: r.get(3),
                    name: r.get(4),
                    reason: r.get(5),
                };
                (r.get(0), change)
            })
            .collect())
    }

    /// A message is one (site, kind, channel, events) delivery; its result is its last
    /// attempt's.
    async fn deliveries(
        &self,
        scope: &Scope,
        since: &str,
    ) -> Result<Vec<(String, String, String, i64)>, FleetError> {
        let rows = self
            .period_rows(
                scope,
                since,
                "d.site",
                "SELECT site, kind, result, count(*) FROM ( \
                     SELECT d.site, d.kind, \
                        (SELECT l.result FROM alert_deliveries l WHERE l.site = d.site \
                           AND l.kind = d.kind AND l.channel = d.channel \
                           AND l.event_ids = d.event_ids AND l.at >= {since} \
                           ORDER BY l.local_id DESC LIMIT 1) AS result \
                     FROM alert_deliveries d WHERE d.at >= {since} AND d.attempt = 1 AND {only} \
                 ) m GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    /// Every address, device, MAC and user name of the live rows since `since` (a purged
    /// row has none left).
    async fn identifying(&self, scope: &Scope, since: &str) -> Result<Vec<String>, FleetError> {
        let mut values = Vec::new();
        for column in ["client_ip", "device", "mac", "user_name"] {
            values.extend(self.distinct(scope, since, column).await?);
        }
        Ok(values)
    }

    /// The distinct values of `column` (one of [`Central::identifying`]'s) in live rows
    /// since `since`, read by skipping through its index value by value (a year of a
    /// trust's rows holds far fewer devices than rows).
    async fn distinct(
        &self,
        scope: &Scope,
        since: &str,
        column: &str,
    ) -> Result<Vec<String>, FleetError> {
        let next = |after: &str| {
            format!(
                "SELECT e.{column} FROM events e WHERE e.purged = 0 AND e.{column} > {after} \
                 AND e.at >= {{since}}::text::timestamptz AND {{only}} \
                 ORDER BY e.{column} LIMIT 1"
            )
        };
        let sql = format!(
            "WITH RECURSIVE v(x) AS (({}) UNION ALL SELECT ({}) FROM v WHERE v.x IS NOT NULL) \
             SELECT x FROM v WHERE x IS NOT NULL",
            next("''"),
            next("v.x")
        );
        let rows = self.period_rows(scope, since, "e.site", &sql).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
