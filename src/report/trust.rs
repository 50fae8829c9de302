//! The trust's review report, on `warden fleet serve`'s dashboard (`/report`) and from
//! `warden fleet report`: for the sites the reader may see, read from the central store,
//! what each site runs (its Warden, the trust's policy version applied, its lists' and
//! self-test's state), the trust's policy and every change to it in the period, each
//! site's outcomes (blocks per month, reviews, serious blocks and how soon they were
//! reviewed, alerts), the allow entries changed at the sites, and the coverage
//! statement. Each school's own report (its dashboard) adds its groups, lists and
//! configuration changes. The governors' version blanks every address, device, MAC and
//! user name the period's events hold from free text, as a site's does.

use std::collections::HashMap;
use std::time::SystemTime;

use chrono_tz::Tz;

use super::{Blanker, Options};
use crate::config::Config;
use crate::fleet::outcomes::{Outcomes, SeriousWait};
use crate::fleet::policy::{Change, State};
use crate::fleet::read::{Central, Scope, SiteState};
use crate::fleet::FleetError;

/// A change to the trust's policy, as the report shows it.
#[derive(Debug, Clone)]
pub struct PolicyChangeShown {
    pub version: i64,
    pub at: SystemTime,
    pub author: String,
    pub reason: String,
    pub change: String,
}

/// One site's serious blocks in the period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriousAtSite {
    pub site: String,
    pub events: usize,
    pub reviewed: usize,
    /// Hours from block to first review: the median and the longest.
    pub median_hours: Option<f64>,
    pub longest_hours: Option<f64>,
}

/// Everything the trust's report says.
#[derive(Debug, Clone)]
pub struct TrustReport {
    pub organisation: String,
    pub generated: SystemTime,
    pub since: SystemTime,
    pub tz: Tz,
    pub governors: bool,
    /// Whether the reader sees every site (a lead of some sites sees theirs only).
    pub whole_trust: bool,
    pub sites: Vec<SiteState>,
    /// The newest version of the trust's policy (0: none yet).
    pub policy_version: i64,
    /// Every entry in force now (for a reader of the whole trust).
    pub policy_lines: Vec<String>,
    pub policy_changes: Vec<PolicyChangeShown>,
    pub serious_categories: Vec<String>,
    pub serious: Vec<SeriousAtSite>,
    pub outcomes: Outcomes,
}

/// Gather the trust's report for `scope` from `central`, at `now`.
pub async fn gather(
    central: &Central,
    config: &Config,
    scope: &Scope,
    options: Options,
    now: SystemTime,
) -> Result<TrustReport, FleetError> {
    // Whole days (UTC), as the daily rollup counts blocks and the page states the period.
    let options = Options {
        since: day_start(options.since),
        ..options
    };
    let since = crate::audit::rfc3339(options.since);
    let serious_categories: Vec<String> = config
        .categories
        .iter()
        .filter(|(name, c)| c.alerts(name))
        .map(|(name, _)| name.clone())
        .collect();
    let outcomes = central.outcomes(scope, &since, &serious_categories).await?;
    let records = central.policy_records().await?;
    let whole_trust = *scope == Scope::All;
    let mut report = TrustReport {
        organisation: config.dashboard.organisation.clone(),
        generated: now,
        since: options.since,
        tz: crate::localtime::zone(config),
        governors: options.governors,
        whole_trust,
        sites: central.sites(scope, &since).await?,
        policy_version: records.last().map_or(0, |r| r.version),
        policy_lines: match whole_trust {
            true => State::fold(&records).lines(),
            false => Vec::new(),
        },
        policy_changes: records
            .iter()
            .filter(|r| r.at >= options.since && visible(&r.change, scope))
            .map(|r| PolicyChangeShown {
                version: r.version,
                at: r.at,
                author: r.author.clone(),
                reason: r.reason.clone(),
                change: r.change.describe(),
            })
            .collect(),
        serious: serious_by_site(&outcomes.serious),
        serious_categories,
        outcomes,
    };
    if options.governors {
        blank_identifying(&mut report);
    }
    Ok(report)
}

/// The start (UTC) of the day holding `at`.
fn day_start(at: SystemTime) -> SystemTime {
    const DAY: u64 = 86_400;
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs - secs % DAY)
}

/// Whether a reader of `scope` may see `change`: one for every site, or only for sites
/// they see (a lead of one school is not shown the names of the trust's other schools).
fn visible(change: &Change, scope: &Scope) -> bool {
    let sites = match change {
        Change::Allow { sites, .. }
        | Change::Deny { sites, .. }
        | Change::List { sites, .. }
        | Change::LocalAllow { sites, .. } => sites.as_slice(),
        Change::Unallow { .. }
        | Change::Undeny { .. }
        | Change::Unlist { .. }
        | Change::Settings { .. } => &[],
    };
    match scope {
        Scope::All => true,
        Scope::Sites(seen) => sites.iter().all(|s| seen.contains(s)),
    }
}

/// Each site's serious blocks, counted, with the median and longest wait for a review.
pub fn serious_by_site(serious: &[SeriousWait]) -> Vec<SeriousAtSite> {
    let mut per_site: HashMap<&str, (SeriousAtSite, Vec<f64>)> = HashMap::new();
    for s in serious {
        let (entry, waits) = per_site.entry(s.site.as_str()).or_default();
        entry.events += 1;
        let Some(reviewed) = &s.reviewed_at else {
            continue;
        };
        entry.reviewed += 1;
        let at = humantime::parse_rfc3339_weak(&s.at);
        let done = humantime::parse_rfc3339_weak(reviewed);
        if let (Ok(at), Ok(done)) = (at, done) {
            let wait = done.duration_since(at).unwrap_or_default();
            waits.push(wait.as_secs_f64() / 3600.0);
        }
    }
    let mut out: Vec<SeriousAtSite> = per_site
        .into_iter()
        .map(|(site, (mut entry, mut waits))| {
            waits.sort_by(f64::total_cmp);
            entry.site = site.to_string();
            entry.median_hours = waits.get(waits.len() / 2).copied();
            entry.longest_hours = waits.last().copied();
            entry
        })
        .collect();
    out.sort_by(|a, b| a.site.cmp(&b.site));
    out
}

/// Blank every value that says who asked out of the report's free text.
fn blank_identifying(report: &mut TrustReport) {
    let blanker = Blanker::new(&report.outcomes.identifying);
    for (_, change) in &mut report.outcomes.allow_changes {
        blanker.blank(&mut change.reason);
        blanker.blank(&mut change.name);
    }
    for change in &mut report.policy_changes {
        blanker.blank(&mut change.reason);
        blanker.blank(&mut change.change);
    }
    for line in &mut report.policy_lines {
        blanker.blank(line);
    }
    report.outcomes.identifying.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(site: &str, at: &str, reviewed: Option<&str>) -> SeriousWait {
        SeriousWait {
            site: site.to_string(),
            at: at.to_string(),
            reviewed_at: reviewed.map(str::to_string),
        }
    }

    #[test]
    fn serious_blocks_are_counted_per_site_with_the_median_and_longest_wait() {
        let found = serious_by_site(&[
            wait("oak", "2026-03-01T10:00:00Z", Some("2026-03-01T11:00:00Z")),
            wait("elm", "2026-03-01T10:00:00Z", None),
            wait(
                "oak",
                "2026-03-02T10:00:00Z",
                Some("2026-03-02T13:00:00.500Z"),
            ),
            wait("oak", "2026-03-03T10:00:00Z", Some("2026-03-03T12:00:00Z")),
            wait("oak", "2026-03-04T10:00:00Z", None),
        ]);
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].site.as_str(), found[0].events, found[0].reviewed),
            ("elm", 1, 0)
        );
        assert_eq!(found[0].median_hours, None);
        assert_eq!(
            (found[1].site.as_str(), found[1].events, found[1].reviewed),
            ("oak", 4, 3)
        );
        assert_eq!(found[1].median_hours, Some(2.0));
        let longest = found[1].longest_hours.unwrap();
        assert!((longest - (3.0 + 0.5 / 3600.0)).abs() < 1e-9, "{longest}");
    }

    #[test]
    fn the_period_starts_at_the_start_of_its_first_day() {
        let at = humantime::parse_rfc3339("2025-12-06T13:45:10.250Z").unwrap();
        let start = humantime::parse_rfc3339("2025-12-06T00:00:00Z").unwrap();
        assert_eq!(day_start(at), start);
        assert_eq!(day_start(start), start);
    }

    #[test]
    fn a_lead_of_some_sites_sees_only_changes_for_every_site_or_theirs() {
        let deny = |sites: &[&str]| Change::Deny {
            name: "x.test".to_string(),
            category: None,
            sites: sites.iter().map(|s| s.to_string()).collect(),
            groups: Vec::new(),
        };
        let elm = Scope::Sites(vec!["elm".to_string()]);
        assert!(visible(&deny(&[]), &elm));
        assert!(visible(&deny(&["elm"]), &elm));
        assert!(!visible(&deny(&["elm", "oak"]), &elm));
        assert!(!visible(&deny(&["oak"]), &elm));
        assert!(visible(&deny(&["oak"]), &Scope::All));
        let remove = Change::Undeny {
            name: "x.test".to_string(),
        };
        assert!(visible(&remove, &elm));
    }
}
