//! The report as one self-contained HTML page (its style inline, nothing fetched), laid
//! out to print on A4: the same page the dashboard serves, `warden report` writes, and
//! Chromium prints to PDF.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use chrono_tz::Tz;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::coverage::{Met, CRITERIA};
use super::Report;

/// The style: readable on screen, A4 in print, tables that break between rows.
pub(super) const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #111; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2rem; border-bottom: 2px solid #333; }
table { border-collapse: collapse; width: 100%; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #bbb; padding: 0.25rem 0.4rem; text-align: left; vertical-align: top; }
th { background: #eee; } tr { break-inside: avoid; }
pre { white-space: pre-wrap; font-size: 0.8rem; background: #f6f6f6; padding: 0.5rem; }
.bad { color: #a00; font-weight: bold; } .muted { color: #555; }
.signoff td { height: 2.5rem; }
@page { size: A4; margin: 15mm; }
@media print { body { margin: 0; max-width: none; } .noprint { display: none; } }
";

/// The page's Content-Security-Policy: nothing but its own inline style (by hash).
pub fn content_security_policy() -> String {
    use base64::Engine as _;
    use sha2::Digest;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'none'; \
         frame-ancestors 'none'; base-uri 'none'"
    )
}

/// The links the dashboard's copy of the page carries (not printed).
pub struct Nav {
    /// The period as asked (`12m`).
    pub since: String,
    /// Whether the reader may choose the full version (not a governor).
    pub may_choose: bool,
}

/// The whole page, as a file.
pub fn page(r: &Report) -> String {
    page_with_nav(r, None)
}

/// The dashboard's links, hidden in print.
pub(super) fn nav(n: &Nav, governors: bool) -> Markup {
    let since = crate::dashboard::pages::urlencode(&n.since);
    html! {
        p.noprint {
            a href="/" { "Dashboard" } " · "
            @if n.may_choose {
                @if governors { a href=(format!("/report?since={since}")) { "Full version" } }
                @else { a href=(format!("/report?since={since}&governors=yes")) { "Governors' version" } }
                " · "
            }
            "Print this page (or save it as PDF) from the browser's print menu."
        }
    }
}

/// The whole page, with the dashboard's links when `nav` is given.
pub fn page_with_nav(r: &Report, links: Option<&Nav>) -> String {
    let title = match r.governors {
        true => "Filtering review: governors' report",
        false => "Filtering review: full report",
    };
    let body = html! {
        @if let Some(n) = links { (nav(n, r.governors)) }
        h1 { (title) }
        p {
            strong { (r.organisation) } br;
            "Period: " (day(r.since, r.tz)) " to " (day(r.generated, r.tz))
            ". Written by Warden at " (time(r.generated, r.tz)) "."
        }
        @if r.governors {
            p.muted { "This version gives counts, not names: no pupil, device or address appears in it." }
        }
        (filtered(r))
        (changes(r))
        (outcomes(r))
        (selftest(r))
        (old_allow(r))
        (coverage(6))
        (signoff(7))
    };
    document(title, &r.organisation, body)
}

/// A whole page: `body` under the report's head (title and inline style).
pub(super) fn document(title: &str, organisation: &str, body: Markup) -> String {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " – " (organisation) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    };
    markup.into_string()
}

pub(super) fn time(at: SystemTime, tz: Tz) -> String {
    crate::localtime::show_system(at, tz)
}

pub(super) fn day(at: SystemTime, tz: Tz) -> String {
    chrono::DateTime::<chrono::Utc>::from(at)
        .with_timezone(&tz)
        .format("%-d %B %Y")
        .to_string()
}

pub(super) fn stored(rfc3339: &str, tz: Tz) -> String {
    crate::localtime::show(rfc3339, tz)
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// 1. What is filtered, for whom.
fn filtered(r: &Report) -> Markup {
    html! {
        h2 { "1. What is filtered, for whom" }
        h3 { "Groups" }
        table {
            thead { tr { th { "Group" } th { "Blocks" } th { "Must block" } th { "Schedules" } th { "Safe search" } th { "YouTube" } th { "Circumvention blocked" } } }
            tbody { @for g in &r.groups {
                tr {
                    td { (g.name) } td { (g.blocks.join(", ")) } td { (g.required.join(", ")) }
                    td { @for s in &g.schedules { (s) br; } }
                    td { (yes(g.safe_search)) } td { (g.youtube) } td { (yes(g.circumvention)) }
                }
            } }
        }
        h3 { "Categories" }
        table {
            thead { tr { th { "Category" } th { "What it is" } th { "Locked (statutory)" } th { "Alerts the lead" } } }
            tbody { @for c in &r.categories {
                tr { td { (c.name) } td { (c.description) } td { (yes(c.locked)) } td { (yes(c.alerts)) } }
            } }
        }
        @if let Some(policy) = &r.trust_policy {
            h3 { "The trust's policy (version " (policy.version) " applies here)" }
            @if policy.entries.is_empty() { p { "No entries." } } @else {
                table {
                    thead { tr { th { "Entry" } th { "Name" } th { "Version, time, by and reason" } } }
                    tbody { @for (kind, name, note) in &policy.entries { tr { td { (kind) } td { (name) } td { (note) } } } }
                }
            }
        }
        h3 { "Lists" }
        table {
            thead { tr { th { "List" } th { "Category" } th { "Source" } th { "Entries" } th { "Last updated" } th { "State" } } }
            tbody { @for l in &r.lists {
                tr {
                    td { (l.name) @if l.locked { " (locked)" } } td { (l.category) } td { (l.source) }
                    td { (l.entries) }
                    td { @match l.updated { Some(t) => (time(t, r.tz)), None => "never" } }
                    td { @match &l.problem { Some(p) => span.bad { (p) }, None => "OK" } }
                }
            } }
        }
    }
}

/// 2. Every change in the period.
fn changes(r: &Report) -> Markup {
    html! {
        h2 { "2. Changes in the period" }
        h3 { "Allow entries" }
        @if r.allow_changes.is_empty() { p { "No allow entries were added, removed or ended." } } @else {
            table {
                thead { tr { th { "When" } th { "By" } th { "Change" } th { "Name" } th { "Reason" } } }
                tbody { @for c in &r.allow_changes {
                    tr { td { (stored(&c.at, r.tz)) } td { (c.by) } td { (c.action) } td { (c.name) } td { (c.reason) } }
                } }
            }
        }
        h3 { "Configuration changes" }
        @if r.config_changes.is_empty() { p { "The configuration did not change." } } @else {
            @for c in &r.config_changes {
                p { strong { (stored(&c.at, r.tz)) } " (" (c.why) ")" }
                pre { (c.diff) }
            }
        }
    }
}

/// 3. Outcomes: blocks, reviews, serious blocks, alerts.
fn outcomes(r: &Report) -> Markup {
    let months: BTreeSet<&str> = r.months.iter().map(|m| m.month.as_str()).collect();
    let mut by_category: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
    for m in &r.months {
        *by_category
            .entry(m.categories.as_str())
            .or_default()
            .entry(m.month.as_str())
            .or_default() += m.blocks;
    }
    let s = &r.serious_summary;
    let hours = |h: Option<f64>| h.map_or("-".to_string(), |h| format!("{h:.1} hours"));
    html! {
        h2 { "3. Outcomes" }
        h3 { "Blocks per category per month" }
        @if months.is_empty() { p { "No blocks in the period." } } @else {
            table {
                thead { tr { th { "Category" } @for m in &months { th { (m) } } } }
                tbody { @for (category, counts) in &by_category {
                    tr { td { (category) } @for m in &months { td { (counts.get(m).copied().unwrap_or(0)) } } }
                } }
            }
        }
        h3 { "Reviews by outcome" }
        @if r.reviews.is_empty() { p { "No reviews were recorded in the period." } } @else {
            table { tbody { @for (outcome, n) in &r.reviews { tr { td { (outcome) } td { (n) } } } } }
        }
        h3 { "Serious blocks (" (r.serious_categories.join(", ")) ")" }
        p {
            (s.events) " serious blocks, " (s.reviewed) " reviewed"
            @if s.events > s.reviewed { ", " span.bad { (s.events - s.reviewed) " not reviewed" } }
            ". Time from block to review: median " (hours(s.median_hours)) ", longest " (hours(s.longest_hours)) "."
        }
        @if !r.serious.is_empty() {
            table {
                thead { tr { th { "Event" } th { "When" } th { "Device" } th { "Person" } th { "Category" } th { "Name" } th { "Reviewed" } } }
                tbody { @for b in &r.serious {
                    tr {
                        td { (b.id) } td { (stored(&b.at, r.tz)) } td { (b.who) } td { (b.user.as_deref().unwrap_or("")) }
                        td { (b.categories) } td { (b.name) }
                        td { @match (&b.reviewed_at, &b.outcome) {
                            (Some(at), Some(o)) => { (stored(at, r.tz)) ": " (o) },
                            _ => span.bad { "not reviewed" },
                        } }
                    }
                } }
            }
        }
        h3 { "Requests to unblock a site" }
        @if r.requests.is_empty() { p { "No one asked for a site to be unblocked from the block page." } } @else {
            table {
                thead { tr { th { "Decision" } th { "Requests" } } }
                tbody { @for (state, n) in &r.requests { tr { td { (state) } td { (n) } } } }
            }
        }
        h3 { "Alerts sent" }
        @if r.deliveries.is_empty() { p { "No alerts or notices were sent." } } @else {
            table {
                thead { tr { th { "Kind" } th { "Result" } th { "Messages" } } }
                tbody { @for (kind, result, n) in &r.deliveries { tr { td { (kind) } td { (result) } td { (n) } } } }
            }
        }
    }
}

/// 4. The self-test's history.
fn selftest(r: &Report) -> Markup {
    let t = &r.selftest;
    html! {
        h2 { "4. Self-test history" }
        @if t.runs == 0 { p.bad { "No self-test ran in the period." } } @else {
            p {
                "Warden checked its own filtering " (t.runs) " times in the period; "
                @if t.failed_runs == 0 { "every check passed every time." } @else { span.bad { (t.failed_runs) " runs had a failing check." } }
                @if let Some(last) = &t.last {
                    " The last check, at " (stored(&last.at, r.tz)) ": " (last.passed) " of " (last.total) " pass."
                }
            }
            @if !t.failures.is_empty() {
                table {
                    thead { tr { th { "Check" } th { "Failed first" } th { "Failed last" } th { "Runs" } th { "Why (last)" } } }
                    tbody { @for f in &t.failures {
                        tr { td { (f.label) } td { (stored(&f.first, r.tz)) } td { (stored(&f.last, r.tz)) } td { (f.runs) } td { (f.detail) } }
                    } }
                }
            }
        }
    }
}

/// 5. Allow entries due for a second look.
fn old_allow(r: &Report) -> Markup {
    html! {
        h2 { "5. Allow entries over a year old" }
        @if r.old_allow.is_empty() { p { "None: every allow entry was added within the last year." } } @else {
            p { "Check these are still needed:" }
            table {
                thead { tr { th { "Name" } th { "Added" } } }
                tbody { @for a in &r.old_allow { tr { td { (a.name) } td { (a.note) } } } }
            }
        }
    }
}

/// 6. What Warden covers, against the UK Safer Internet Centre's criteria.
pub(super) fn coverage(number: u8) -> Markup {
    html! {
        h2 { (number) ". Coverage: what DNS filtering can and cannot do" }
        p {
            "Against the UK Safer Internet Centre's \"appropriate filtering\" criteria. Warden filters by the "
            "names devices look up; it never sees pages, search terms, images or what happens inside an app."
        }
        table {
            thead { tr { th { "Criterion" } th { "Warden" } th { "How, and what to add" } } }
            tbody { @for c in CRITERIA {
                tr {
                    td { (c.criterion) }
                    td { @if c.met == Met::No { span.bad { (c.met.as_str()) } } @else { (c.met.as_str()) } }
                    td { (c.how) }
                }
            } }
        }
    }
}

/// Room to record the review itself.
pub(super) fn signoff(number: u8) -> Markup {
    html! {
        h2 { (number) ". Review record" }
        table.signoff {
            tbody {
                tr { th { "Reviewed by (senior leader)" } td {} }
                tr { th { "Reviewed by (governor)" } td {} }
                tr { th { "Date" } td {} }
                tr { th { "Actions agreed" } td {} }
            }
        }
    }
}
