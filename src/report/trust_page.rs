//! The trust's review report ([`super::trust`]) as one self-contained HTML page, in the
//! site report's style and print layout ([`super::render`]).

use std::collections::{BTreeMap, BTreeSet};

use maud::{html, Markup};

use super::render::{coverage, day, document, nav, signoff, stored, time, Nav};
use super::trust::TrustReport;
use crate::fleet::read::SiteState;

/// The whole page, with the dashboard's links when `links` is given.
pub fn page(r: &TrustReport, links: Option<&Nav>) -> String {
    let title = match r.governors {
        true => "Trust filtering review: governors' report",
        false => "Trust filtering review: full report",
    };
    let body = html! {
        @if let Some(n) = links { (nav(n, r.governors)) }
        h1 { (title) }
        p {
            strong { (r.organisation) } br;
            "Period: " (day(r.since, r.tz)) " to " (day(r.generated, r.tz))
            ". Written by Warden from the trust's central store at " (time(r.generated, r.tz)) "."
        }
        p.muted {
            @if r.whole_trust { "Every site of the trust. " } @else { "The sites you oversee. " }
            "Each school's own dashboard has its report (Report in its menu), with its groups, lists and configuration changes."
        }
        @if r.governors {
            p.muted { "This version gives counts, not names: no pupil, device or address appears in it." }
        }
        (sites(r))
        (policy(r))
        (outcomes(r))
        (allow_changes(r))
        (coverage(5))
        (signoff(6))
    };
    document(title, &r.organisation, body)
}

/// 1. Each site: what it runs, and whether its filtering checks pass.
fn sites(r: &TrustReport) -> Markup {
    html! {
        h2 { "1. Sites" }
        @if r.sites.is_empty() { p.bad { "No site has reported to the trust's store." } } @else {
            table {
                thead { tr {
                    th { "Site" } th { "Last heard" } th { "Warden" } th { "Trust policy applied" }
                    th { "Locked lists" } th { "Last self-test" }
                } }
                tbody { @for s in &r.sites { (site_row(s, r)) } }
            }
        }
    }
}

fn site_row(s: &SiteState, r: &TrustReport) -> Markup {
    let Some(h) = &s.health else {
        return html! {
            tr { td { (s.site) } td.bad colspan="5" { "No heartbeat: the site runs an old Warden or has not connected." } }
        };
    };
    html! {
        tr {
            td { (s.site) }
            td { @if h.silent { span.bad { "silent since " (stored(&h.at, r.tz)) } } @else { (stored(&h.at, r.tz)) } }
            td { (h.warden_version) }
            td {
                "version " (h.policy_version)
                @if h.behind() { " " span.bad { "(newest " (h.newest_policy) ")" } }
                @if let Some((version, error)) = &h.refused { br; span.bad { "refused version " (version) ": " (error) } }
            }
            td { @if h.stale_locked.is_empty() { "up to date" } @else { span.bad { "stale: " (h.stale_locked) } } }
            td {
                @if h.selftest.is_empty() { "none reported" }
                @else if h.selftest.contains("checks fail") { span.bad { (h.selftest) } }
                @else { (h.selftest) }
            }
        }
    }
}

/// 2. The trust's policy: in force now, and every change in the period.
fn policy(r: &TrustReport) -> Markup {
    html! {
        h2 { "2. The trust's policy" }
        @if r.policy_version == 0 { p { "The trust has no shared policy: each site filters by its own configuration." } } @else {
            p { "Version " (r.policy_version) " is the newest." }
            @if r.whole_trust {
                h3 { "In force now" }
                @if r.policy_lines.is_empty() { p { "No entries." } } @else { pre { @for l in &r.policy_lines { (l) "\n" } } }
            }
            h3 { "Changes in the period" }
            @if r.policy_changes.is_empty() { p { "The trust's policy did not change." } } @else {
                table {
                    thead { tr { th { "Version" } th { "When" } th { "By" } th { "Reason" } th { "Change" } } }
                    tbody { @for c in &r.policy_changes {
                        tr { td { (c.version) } td { (time(c.at, r.tz)) } td { (c.author) } td { (c.reason) } td { (c.change) } }
                    } }
                }
            }
        }
    }
}

/// 3. Outcomes at each site: blocks, reviews, serious blocks, alerts.
fn outcomes(r: &TrustReport) -> Markup {
    let o = &r.outcomes;
    let months: BTreeSet<&str> = o.months.iter().map(|m| m.month.as_str()).collect();
    let mut by_site: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
    let mut by_category: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
    for m in &o.months {
        let month = m.month.as_str();
        *by_site
            .entry(&m.site)
            .or_default()
            .entry(month)
            .or_default() += m.blocks;
        *by_category
            .entry(&m.categories)
            .or_default()
            .entry(month)
            .or_default() += m.blocks;
    }
    let hours = |h: Option<f64>| h.map_or("-".to_string(), |h| format!("{h:.1} hours"));
    html! {
        h2 { "3. Outcomes" }
        @if months.is_empty() { p { "No blocks in the period." } } @else {
            h3 { "Blocks per site per month" }
            (month_table("Site", &months, &by_site))
            h3 { "Blocks per category per month (every site)" }
            (month_table("Category", &months, &by_category))
        }
        h3 { "Reviews by outcome" }
        @if o.reviews.is_empty() { p { "No reviews were recorded in the period." } } @else {
            table {
                thead { tr { th { "Site" } th { "Outcome" } th { "Reviews" } } }
                tbody { @for (site, outcome, n) in &o.reviews { tr { td { (site) } td { (outcome) } td { (n) } } } }
            }
        }
        h3 { "Serious blocks (" (r.serious_categories.join(", ")) ")" }
        @if r.serious.is_empty() { p { "No serious blocks in the period." } } @else {
            table {
                thead { tr { th { "Site" } th { "Serious blocks" } th { "Reviewed" } th { "Not reviewed" } th { "Median time to review" } th { "Longest" } } }
                tbody { @for s in &r.serious {
                    tr {
                        td { (s.site) } td { (s.events) } td { (s.reviewed) }
                        td { @if s.events > s.reviewed { span.bad { (s.events - s.reviewed) } } @else { "0" } }
                        td { (hours(s.median_hours)) } td { (hours(s.longest_hours)) }
                    }
                } }
            }
        }
        h3 { "Alerts sent" }
        @if o.deliveries.is_empty() { p { "No alerts or notices were sent." } } @else {
            table {
                thead { tr { th { "Site" } th { "Kind" } th { "Result" } th { "Messages" } } }
                tbody { @for (site, kind, result, n) in &o.deliveries { tr { td { (site) } td { (kind) } td { (result) } td { (n) } } } }
            }
        }
    }
}

/// A table of counts: one row per key, one column per month, and a total.
fn month_table(
    key: &str,
    months: &BTreeSet<&str>,
    rows: &BTreeMap<&str, BTreeMap<&str, i64>>,
) -> Markup {
    html! {
        table {
            thead { tr { th { (key) } @for m in months { th { (m) } } th { "Total" } } }
            tbody { @for (name, counts) in rows {
                tr {
                    td { (name) }
                    @for m in months { td { (counts.get(m).copied().unwrap_or(0)) } }
                    td { (counts.values().sum::<i64>()) }
                }
            } }
        }
    }
}

/// 4. Allow entries added, removed or ended at the sites.
fn allow_changes(r: &TrustReport) -> Markup {
    let changes = &r.outcomes.allow_changes;
    html! {
        h2 { "4. Allow entries changed at the sites" }
        @if changes.is_empty() { p { "No site added, removed or ended an allow entry of its own." } } @else {
            table {
                thead { tr { th { "Site" } th { "When" } th { "By" } th { "Change" } th { "Name" } th { "Reason" } } }
                tbody { @for (site, c) in changes {
                    tr { td { (site) } td { (stored(&c.at, r.tz)) } td { (c.by) } td { (c.action) } td { (c.name) } td { (c.reason) } }
                } }
            }
        }
    }
}
