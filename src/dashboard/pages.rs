//! The dashboard's HTML, rendered on the server with `maud` (which escapes every value).
//!
//! Written for a non-technical reader on a phone or a desktop: plain words, one column
//! on narrow screens, a label on every field, visible focus, and no JavaScript.

use chrono_tz::Tz;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::auth::Session;
use crate::audit::records::{AllowChange, SignIn};
use crate::audit::review::{EventRow, ReviewState, OUTCOMES};
use crate::config::Role;
use crate::fleet::read::{SiteHealth, SiteState};

/// The stylesheet, served at `/static/warden.css` (the CSP allows no inline styles).
pub const CSS: &str = r#"
:root { --ink: #1b1b1b; --muted: #4a4a4a; --line: #c8c8c8; --accent: #1f5fa8; --bad: #a4161a; --bg: #ffffff; --soft: #f3f5f8; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--bg); }
a { color: var(--accent); }
a:focus, button:focus, input:focus, select:focus, textarea:focus, summary:focus { outline: 3px solid #f0b400; outline-offset: 2px; }
.skip { position: absolute; left: -999px; } .skip:focus { left: 8px; top: 8px; background: #fff; padding: 4px; }
header { background: #12355b; color: #fff; padding: 8px 16px; display: flex; flex-wrap: wrap; gap: 12px; align-items: center; justify-content: space-between; }
header a { color: #fff; } header nav a { margin-right: 14px; font-weight: 600; }
header form { display: inline; } header button { background: #fff; color: #12355b; }
main { padding: 16px; max-width: 1100px; margin: 0 auto; }
h1 { font-size: 1.5rem; margin: 8px 0 16px; } h2 { font-size: 1.2rem; margin-top: 28px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; word-break: break-word; }
thead th { background: var(--soft); }
.scroll { overflow-x: auto; }
form.filters { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-end; background: var(--soft); padding: 10px; }
label { display: block; font-weight: 600; font-size: .9rem; }
input, select, textarea, button { font: inherit; padding: 6px 8px; border: 1px solid #767676; border-radius: 4px; }
button { background: var(--accent); color: #fff; border-color: var(--accent); cursor: pointer; }
textarea { width: 100%; min-height: 5em; }
.field { margin-bottom: 12px; }
.serious { color: var(--bad); font-weight: 700; }
.badge { display: inline-block; padding: 0 6px; border-radius: 4px; background: var(--soft); border: 1px solid var(--line); font-size: .85rem; }
.badge.serious { background: #fde8e8; border-color: var(--bad); }
.notice { background: #e8f3e8; border-left: 4px solid #2e7d32; padding: 8px 12px; }
.error { background: #fde8e8; border-left: 4px solid var(--bad); padding: 8px 12px; }
dl.fields { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; }
dl.fields dt { font-weight: 600; } dl.fields dd { margin: 0; word-break: break-word; }
.chart svg.plot { width: 100%; height: auto; max-height: 260px; }
ul.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 4px 14px; }
.pager { display: flex; gap: 16px; align-items: center; }
.login { max-width: 360px; margin: 40px auto; }
@media (max-width: 640px) { dl.fields { grid-template-columns: 1fr; } main { padding: 10px; } }
"#;

/// The frame every page shares.
pub fn layout(title: &str, org: &str, session: Option<&Session>, body: Markup) -> Markup {
    let heading = if org.is_empty() {
        "Warden".to_string()
    } else {
        format!("Warden · {org}")
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Warden" }
                link rel="stylesheet" href="/static/warden.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    strong { (heading) }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            a href="/" { "Overview" }
                            a href="/report" { "Report" }
                            @if s.role.sees_people() {
                                a href="/events" { "Events" }
                                a href="/requests" { "Requests" }
                                a href="/policy" { "Policy" }
                            }
                            @if s.role == Role::Admin { a href="/admin" { "Admin" } }
                        }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span { (s.user) " (" (s.role.as_str()) ") " }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// A page that only says what went wrong.
pub fn message(title: &str, text: &str, session: Option<&Session>) -> Markup {
    layout(
        title,
        "",
        session,
        html! {
            h1 { (title) }
            p.error role="alert" { (text) }
            p { a href="/" { "Back to the overview" } }
        },
    )
}

pub fn login(org: &str, csrf: &str, error: Option<&str>, user: &str) -> Markup {
    layout(
        "Sign in",
        org,
        None,
        html! {
            div.login {
                h1 { "Sign in" }
                @if let Some(e) = error { p.error role="alert" { (e) } }
                form method="post" action="/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    div.field {
                        label for="user" { "User name" }
                        input id="user" name="user" autocomplete="username" required value=(user);
                    }
                    div.field {
                        label for="password" { "Password" }
                        input id="password" name="password" type="password" autocomplete="current-password" required;
                    }
                    div.field {
                        label for="code" { "Code from your authenticator app, or a recovery code (if two-factor sign-in is set up for you)" }
                        input id="code" name="code" autocomplete="one-time-code" inputmode="numeric" maxlength="32";
                    }
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// One list's health on the overview.
pub struct ListHealth {
    pub name: String,
    pub category: String,
    pub entries: u64,
    pub refreshed: String,
    pub failures: u64,
    pub problem: Option<String>,
}

pub struct Overview<'a> {
    pub chart: Markup,
    pub serious: &'a [EventRow],
    pub unreviewed_total: i64,
    pub top_devices: &'a [(String, i64)],
    pub lists: &'a [ListHealth],
    pub total_30d: i64,
    /// The zone every time on the page is shown in (`[server] timezone`).
    pub tz: Tz,
    /// Shipping to the trust's central store, when `[fleet]` is set.
    pub fleet: Option<FleetState>,
    /// On the fleet dashboard: every site the user sees.
    pub sites: Option<&'a [SiteState]>,
    /// On the fleet dashboard: the one site shown, when one was asked for.
    pub only: Option<&'a str>,
    /// This Warden's latest self-test runs, newest first (none on the fleet dashboard).
    pub selftest: Option<&'a [crate::selftest::history::RunSummary]>,
    /// Requests to unblock a site waiting for a decision (lead and admin only).
    pub requests_waiting: Option<i64>,
}

/// How far this site's audit log has reached the trust's central store.
pub struct FleetState {
    pub site: String,
    /// Sealed rows the central store confirmed (the chain position shipped up to).
    pub shipped: i64,
    /// Sealed rows waiting to be shipped.
    pub waiting: i64,
    /// When the oldest waiting row was first seen (stored RFC 3339 time).
    pub oldest: Option<String>,
    /// Whether the oldest has waited longer than the central view may lag.
    pub late: bool,
}

pub fn overview(o: &Overview<'_>, org: &str, session: &Session, serious: &[String]) -> Markup {
    layout(
        "Overview",
        org,
        Some(session),
        html! {
            h1 { "Overview" }
            @if let Some(site) = o.only {
                p { "Showing " strong { (site) } " only. " a href="/" { "Show every site" } }
            }
            @if let Some(n) = o.requests_waiting.filter(|n| *n > 0) {
                p { a href="/requests" { (n) " request" @if n != 1 { "s" } " to unblock a site waiting for a decision" } }
            }
            @if let Some(runs) = o.selftest { (selftest_section(runs, o.tz)) }
            @if session.role.sees_people() {
            h2 { "Serious blocks to review" }
            @if o.serious.is_empty() {
                p { "None waiting: every serious block has been reviewed." }
            } @else {
                p { "Blocks in the categories you must act on (" (serious.join(", ")) "), newest first." }
                (event_table(o.serious, serious, o.tz))
            }
            p { a href="/events?state=unreviewed" { "All unreviewed events (" (o.unreviewed_total) ")" } }
            } @else {
            // A governor sees how many, never who.
            p { "Events waiting for the e-safety lead's review: " strong { (o.unreviewed_total) } "." }
            }
            h2 { "Blocks per category, last 30 days (" (o.total_30d) " in all)" }
            (o.chart)
            @if o.sites.is_none() && session.role.sees_people() {
            h2 { "Devices with the most blocks, last 30 days" }
            @if o.top_devices.is_empty() { p { "No blocks in the last 30 days." } } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Device" } th scope="col" { "Blocks" } } }
                    tbody { @for (device, n) in o.top_devices {
                        tr { td { a href=(format!("/events?device={}", urlencode(device))) { (device) } } td { (n) } }
                    } }
                } }
            }
            }
            @if let Some(sites) = o.sites { (fleet_sites(sites, o.tz, session.role.sees_people())) }
            @if o.sites.is_none() {
            h2 { "Block lists" }
            div.scroll { table {
                thead { tr {
                    th scope="col" { "List" } th scope="col" { "Category" } th scope="col" { "Entries" }
                    th scope="col" { "Last updated" } th scope="col" { "Failed updates" } th scope="col" { "State" }
                } }
                tbody { @for l in o.lists {
                    tr {
                        td { (l.name) } td { (l.category) } td { (l.entries) } td { (l.refreshed) }
                        td { (l.failures) }
                        td { @if let Some(p) = &l.problem { span.serious { (p) } } @else { "OK" } }
                    }
                } }
            } }
            }
            @if let Some(f) = &o.fleet { (fleet_state(f, o.tz)) }
        },
    )
}

/// "Filtering checked at 10:42: 14 of 14 checks pass", what fails now, and the latest
/// runs.
fn selftest_section(runs: &[crate::selftest::history::RunSummary], tz: Tz) -> Markup {
    html! {
        h2 { "Filtering self-test" }
        @match runs.first() {
            None => p { "Filtering not checked yet: the first check runs soon after Warden starts." },
            Some(last) => {
                p {
                    @let words = format!("Filtering checked at {}: {} of {} checks pass", when(&last.at, tz), last.passed, last.total);
                    @if last.ok() { (words) "." } @else { span.serious { (words) "." } }
                }
                @if !last.ok() {
                    ul { @for f in &last.failures { li { strong { (f.label()) } ": " (f.detail) } } }
                }
                details {
                    summary { "The latest " (runs.len()) " checks" }
                    div.scroll { table {
                        thead { tr { th scope="col" { "When" } th scope="col" { "Why" } th scope="col" { "Result" } } }
                        tbody { @for r in runs {
                            tr {
                                td { (when(&r.at, tz)) } td { (r.trigger) }
                                td { @if r.ok() { (r.passed) " of " (r.total) " pass" } @else { span.serious { (r.total - r.passed) " of " (r.total) " fail" } } }
                            }
                        } }
                    } }
                }
            }
        }
    }
}

/// The fleet overview's sites: each with its blocks per category over the last 30 days
/// and how far its log has reached the central store.
fn fleet_sites(sites: &[SiteState], tz: Tz, links_to_events: bool) -> Markup {
    html! {
        h2 { "Sites, last 30 days" }
        @if sites.is_empty() { p { "No site has shipped its log yet." } } @else {
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Location" } th scope="col" { "Blocks" }
                    th scope="col" { "By category" } th scope="col" { "Log shipped up to" }
                    th scope="col" { "Health" }
                } }
                tbody { @for site in sites {
                    tr {
                        td { a href=(format!("/?site={}", urlencode(&site.site))) { (site.site) } }
                        td { (site.blocks.iter().map(|(_, n)| n).sum::<i64>()) }
                        td { @for (category, n) in &site.blocks {
                            @if links_to_events {
                                a href=(format!("/events?site={}&category={}", urlencode(&site.site), urlencode(category))) { (category) }
                            } @else { (category) }
                            " " (n) "; "
                        } }
                        td { "row " (site.head_seq)
                            @if let Some(at) = &site.shipped_at { ", last batch " (when(at, tz)) } }
                        td { (site_health(site.health.as_ref(), tz)) }
                    }
                } }
            } }
        }
    }
}

/// A site's heartbeat at a glance: flags first (silent, refused or old policy, stale
/// locked lists, conflicts), then its figures.
fn site_health(health: Option<&SiteHealth>, tz: Tz) -> Markup {
    let Some(h) = health else {
        return html! { span.serious { "No heartbeat yet" } };
    };
    let minutes = (h.age_secs / 60.0).floor() as i64;
    html! {
        @if h.silent {
            span.serious { "SILENT: last heard " (when(&h.at, tz)) " (" (minutes) " min ago)" } br;
        }
        @if let Some((version, error)) = &h.refused {
            span.serious { "REFUSED policy v" (version) ": " (error) } br;
        }
        @if h.behind() {
            span.serious { "OLD POLICY: v" (h.policy_version) " of v" (h.newest_policy) } br;
        } @else {
            "Policy v" (h.policy_version) " (newest)" br;
        }
        @if !h.stale_locked.is_empty() {
            span.serious { "Locked list stale: " (h.stale_locked) } br;
        }
        @for note in &h.notes { span.serious { "Conflict: " (note) } br; }
        @if h.selftest.contains("fail") { span.serious { "Filtering check: " (h.selftest) } br; }
        @else if !h.selftest.is_empty() { "Filtering check: " (h.selftest) br; }
        "Warden " (h.warden_version) ", " (h.rules) " rules, "
        (format!("{:.0}", h.queries_per_min)) " queries/min, "
        (format!("{:.0}", h.blocks_per_min)) " blocks/min, backlog " (h.backlog_rows) " rows"
        @if !h.silent { ", last heard " (when(&h.at, tz)) }
    }
}

fn fleet_state(f: &FleetState, tz: Tz) -> Markup {
    html! {
        h2 { "Trust's central store" }
        p { "This site ships its audit log to the trust's central store as " strong { (f.site) } "." }
        p { "Shipped: " (f.shipped) " rows. "
            @if f.waiting == 0 { "Nothing waiting." } @else {
                @let oldest = f.oldest.as_deref().map(|t| when(t, tz)).unwrap_or_default();
                @if f.late {
                    span.serious { (f.waiting) " rows waiting, the oldest since " (oldest)
                        ": the central store cannot be reached (see Warden's log). Every row is kept here and ships when it can." }
                } @else {
                    (f.waiting) " rows waiting (the oldest since " (oldest) ")."
                }
            }
        }
    }
}

/// Form values of the events filter, as the user typed them.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct FilterForm {
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub device: String,
    /// The signed-in person, across every device they used.
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub state: String,
    /// On the fleet dashboard: one site's events.
    #[serde(default)]
    pub site: String,
    /// Where the page starts: the events older than `first_seen,id` (the "Older" link's
    /// cursor; empty for the newest).
    #[serde(default)]
    pub before: String,
}

impl FilterForm {
    /// The filter as a query string (without the page), for links that keep it.
    pub fn query(&self) -> String {
        let pairs = [
            ("since", &self.since),
            ("until", &self.until),
            ("category", &self.category),
            ("group", &self.group),
            ("device", &self.device),
            ("user", &self.user),
            ("state", &self.state),
            ("site", &self.site),
        ];
        pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

pub struct EventsPage<'a> {
    pub form: &'a FilterForm,
    /// On the fleet dashboard, the sites the user may pick from (none on a site's own).
    pub sites: &'a [String],
    pub rows: &'a [EventRow],
    pub total: crate::audit::review::Total,
    /// The cursor of the next (older) page, if there is one.
    pub older: Option<String>,
    /// What the export link writes: its query (the filter, with a start date when the
    /// filter has none), the first day it covers when that was added, and its row count.
    pub export: &'a Export,
    pub categories: &'a [String],
    pub groups: &'a [String],
    pub serious: &'a [String],
    /// The zone every time on the page is shown in (`[server] timezone`).
    pub tz: Tz,
}

/// The events page's export link.
pub struct Export {
    pub query: String,
    pub from: Option<String>,
    pub rows: crate::audit::review::Total,
}

pub fn events(p: &EventsPage<'_>, org: &str, session: &Session) -> Markup {
    let f = p.form;
    let query = f.query();
    let with_query = |extra: &str| match (query.is_empty(), extra.is_empty()) {
        (true, _) => format!("/events?{extra}"),
        (false, true) => format!("/events?{query}"),
        (false, false) => format!("/events?{query}&{extra}"),
    };
    let export = format!("/export.csv?{}", p.export.query);
    let export_text = match &p.export.from {
        Some(day) => format!("Download the {} events since {day} as CSV", p.export.rows),
        None => format!("Download these {} events as CSV", p.export.rows),
    };
    layout(
        "Events",
        org,
        Some(session),
        html! {
            h1 { "Events" }
            form.filters method="get" action="/events" aria-label="Filter events" {
                @if !p.sites.is_empty() {
                    div { label for="site" { "Location" }
                        select id="site" name="site" {
                            option value="" { "Any" }
                            @for site in p.sites { option value=(site) selected[*site == f.site] { (site) } }
                        }
                    }
                }
                div { label for="since" { "From" } input id="since" name="since" type="date" value=(f.since); }
                div { label for="until" { "Until" } input id="until" name="until" type="date" value=(f.until); }
                div { label for="category" { "Category" }
                    select id="category" name="category" {
                        option value="" { "Any" }
                        @for c in p.categories { option value=(c) selected[*c == f.category] { (c) } }
                    }
                }
                div { label for="group" { "Group" }
                    select id="group" name="group" {
                        option value="" { "Any" }
                        @for g in p.groups { option value=(g) selected[*g == f.group] { (g) } }
                    }
                }
                div { label for="device" { "Device or address" } input id="device" name="device" value=(f.device); }
                div { label for="user" { "User" } input id="user" name="user" value=(f.user); }
                div { label for="state" { "Review" }
                    select id="state" name="state" {
                        option value="" selected[f.state.is_empty()] { "Any" }
                        option value="unreviewed" selected[f.state == "unreviewed"] { "Not yet reviewed" }
                        option value="reviewed" selected[f.state == "reviewed"] { "Reviewed" }
                    }
                }
                div { button type="submit" { "Show" } }
            }
            p {
                (p.total) " matching events. "
                a href=(export) download { (export_text) }
            }
            (event_table(p.rows, p.serious, p.tz))
            @if !f.before.is_empty() || p.older.is_some() {
                nav.pager aria-label="Pages" {
                    @if !f.before.is_empty() { a href=(with_query("")) { "Newest" } }
                    @if let Some(older) = &p.older {
                        a href=(with_query(&format!("before={}", urlencode(older)))) rel="next" { "Older" }
                    }
                }
            }
        },
    )
}

fn event_table(rows: &[EventRow], serious: &[String], tz: Tz) -> Markup {
    let fleet = rows.iter().any(|e| e.site.is_some());
    html! {
        @if rows.is_empty() { p { "No events match." } } @else {
            div.scroll { table.events {
                thead { tr {
                    th scope="col" { "When" }
                    @if fleet { th scope="col" { "Location" } }
                    th scope="col" { "Device" } th scope="col" { "User" } th scope="col" { "Group" }
                    th scope="col" { "Site" } th scope="col" { "Category" } th scope="col" { "Times" }
                    th scope="col" { "Review" }
                } }
                tbody { @for e in rows {
                    tr {
                        td { a href=(format!("/events/{}", e.id)) { (when(&e.first_seen, tz)) } }
                        @if fleet { td { (e.site.as_deref().unwrap_or("")) } }
                        td { (device(e)) }
                        td { @if let Some(user) = &e.user { a href=(user_link(user)) { (user) } } }
                        td { (e.group) }
                        td { (e.name) }
                        td { (categories(&e.categories, serious)) }
                        td { (e.count) }
                        td { (review_state(e.review.as_ref())) }
                    }
                } }
            } }
        }
    }
}

fn categories(list: &str, serious: &[String]) -> Markup {
    html! {
        @for c in list.split(',').filter(|c| !c.is_empty()) {
            @if serious.iter().any(|s| s == c) { span.badge.serious { (c) } " " } @else { span.badge { (c) } " " }
        }
    }
}

fn review_state(review: Option<&ReviewState>) -> Markup {
    html! {
        @match review {
            Some(r) => { (r.outcome) " (" (r.by) ")" }
            None => { "Not yet reviewed" }
        }
    }
}

/// The events page filtered to one person's blocks on every device.
fn user_link(user: &str) -> String {
    format!("/events?user={}", urlencode(user))
}

fn device(e: &EventRow) -> String {
    match &e.device {
        Some(d) => format!("{d} ({})", e.client_ip),
        None => e.client_ip.clone(),
    }
}

/// A stored time as the reader's clock showed it: `2026-11-22 10:15:02 +00:00`.
pub(crate) fn when(rfc3339: &str, tz: Tz) -> String {
    crate::localtime::show(rfc3339, tz)
}

pub(crate) struct Detail<'a> {
    pub event: &'a EventRow,
    pub reviews: &'a [ReviewState],
    pub others: &'a [EventRow],
    /// The same person's other recent blocks, on any device (when a user is known).
    pub person: &'a [EventRow],
    pub serious: &'a [String],
    pub saved: bool,
    /// The zone every time on the page is shown in (`[server] timezone`).
    pub tz: Tz,
}

pub(crate) fn event_detail(d: &Detail<'_>, org: &str, session: &Session) -> Markup {
    let e = d.event;
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    layout(
        &format!("Event {}", e.id),
        org,
        Some(session),
        html! {
            h1 { "Blocked: " (e.name) }
            @if d.saved { p.notice role="status" { "Your review was saved." } }
            dl.fields {
                dt { "Event" } dd { (e.id) }
                @if let Some(site) = &e.site { dt { "Location" } dd { (site) } }
                dt { "First seen" } dd { (when(&e.first_seen, d.tz)) }
                dt { "Last seen" } dd { (when(&e.last_seen, d.tz)) }
                dt { "Times" } dd { (e.count) }
                dt { "Device" } dd { (opt(&e.device)) }
                dt { "Address" } dd { (e.client_ip) }
                dt { "MAC address" } dd { (opt(&e.mac)) }
                dt { "User" } dd {
                    @if let Some(user) = &e.user { a href=(user_link(user)) { (user) } } @else { "-" }
                }
                dt { "Identified by" } dd { (opt(&e.sources)) }
                dt { "Group" } dd { (e.group) }
                dt { "Site asked for" } dd { (e.name) }
                dt { "Record type" } dd { (e.qtype) }
                dt { "Category" } dd { (categories(&e.categories, d.serious)) }
                dt { "Statutory (locked) list" } dd { (if e.locked { "yes" } else { "no" }) }
                dt { "List and line" } dd { (e.list) ":" (e.line) }
                dt { "Rule" } dd { code { (e.rule) } }
                dt { "Answer given" } dd { (e.response) }
                dt { "Through alias" } dd { (opt(&e.cname)) }
                dt { "Outcome" } dd { (e.outcome) }
                dt { "Log position" } dd { (e.seq.map(|s| s.to_string()).unwrap_or_else(|| "open (still counting repeats)".into())) }
                dt { "Chain hash" } dd { code { (opt(&e.hash)) } }
            }
            h2 { "Reviews" }
            @if d.reviews.is_empty() { p { "Not yet reviewed." } } @else {
                ul { @for r in d.reviews {
                    li { strong { (r.outcome) } " by " (r.by) " at " (when(&r.at, d.tz)) ": " (r.note) }
                } }
            }
            h2 { "Record a review" }
            form method="post" action=(format!("/events/{}/review", e.id)) {
                input type="hidden" name="csrf" value=(session.csrf);
                div.field {
                    label for="outcome" { "Outcome" }
                    select id="outcome" name="outcome" required {
                        @for o in OUTCOMES { option value=(o) { (o) } }
                    }
                }
                div.field {
                    label for="note" { "Note (what you did, and why)" }
                    textarea id="note" name="note" maxlength="2000" {}
                }
                button type="submit" { "Save review" }
            }
            h2 { "This device's other recent blocks" }
            (event_table(d.others, d.serious, d.tz))
            @if let Some(user) = &e.user {
                h2 { (user) "'s other recent blocks, on any device" }
                (event_table(d.person, d.serious, d.tz))
            }
        },
    )
}

pub struct AdminPage<'a> {
    /// (group, or empty for every group; name; comment).
    pub entries: &'a [(String, String, String)],
    pub changes: &'a [AllowChange],
    pub users: &'a [(String, Role)],
    pub signins: &'a [SignIn],
    pub notice: Option<String>,
    /// The zone every time on the page is shown in (`[server] timezone`).
    pub tz: Tz,
    /// Whether the trust's policy permits this site's own allow entries.
    pub local_allow: bool,
    /// Entries added before this are flagged for review (a year on).
    pub review_before: std::time::SystemTime,
    /// The latest recorded changes to the config, newest first.
    pub config_changes: &'a [crate::config_history::ConfigChange],
    /// The groups an entry may be for alone.
    pub groups: &'a [String],
}

/// An allow entry's comment (`AT by USER [until END]: REASON`) with its times shown in
/// `tz`; a comment in another shape (written by hand) as it is.
fn allow_note(note: &str, tz: Tz) -> Markup {
    let Some((head, reason)) = note.split_once(": ") else {
        return html! { (note) };
    };
    let mut words = head.split(' ');
    let (Some(at), Some("by"), Some(user)) = (words.next(), words.next(), words.next()) else {
        return html! { (note) };
    };
    let until = match (words.next(), words.next()) {
        (Some("until"), Some(end)) => Some(end),
        _ => None,
    };
    html! {
        (when(at, tz)) " by " (user)
        @if let Some(end) = until { ", " strong { "until " (when(end, tz)) } }
        ": " (reason)
    }
}

/// The latest recorded config changes, each with its diff folded away.
fn config_changes(changes: &[crate::config_history::ConfigChange], tz: Tz) -> Markup {
    html! {
        h2 { "Recent config changes" }
        p { "Recorded at start-up and after each reload that changed the config file (secrets redacted), for the annual review." }
        @if changes.is_empty() { p { "None recorded yet." } } @else {
            @for c in changes {
                details {
                    summary { (when(&c.at, tz)) " (" (c.why) ")" }
                    pre { (c.diff) }
                }
            }
        }
    }
}

pub fn admin(a: &AdminPage<'_>, org: &str, session: &Session) -> Markup {
    layout(
        "Admin",
        org,
        Some(session),
        html! {
            h1 { "Admin" }
            @if let Some(n) = &a.notice { p.notice role="status" { (n) } }
            h2 { "Allow a site" }
            @if !a.local_allow {
                p.serious { "The trust's policy keeps allow entries to the trust: the entries below are not applied, \
                    and new ones are added by the trust's admin (see the Policy page)." }
            }
            p { "An allow entry unblocks the site and its subdomains for every group, within a few seconds. \
                 Sites on the statutory lists (terrorism, child abuse) cannot be allowed." }
            @if a.local_allow { form method="post" action="/admin/allow" {
                input type="hidden" name="csrf" value=(session.csrf);
                div.field { label for="name" { "Site (domain name)" } input id="name" name="name" required maxlength="253"; }
                div.field { label for="reason" { "Reason (recorded with your name)" } input id="reason" name="reason" required maxlength="500"; }
                div.field { label for="until" { "Until (the last day it holds, for a trip or a lesson; empty: until removed)" } input id="until" name="until" type="date"; }
                div.field { label for="group" { "For" } select id="group" name="group" {
                    option value="" { "every group" }
                    @for g in a.groups { option value=(g) { "group " (g) " only" } }
                } }
                button type="submit" { "Allow" }
            } }
            h2 { "Allowed in the dashboard" }
            @if a.entries.is_empty() { p { "None yet." } } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Site" } th scope="col" { "For" } th scope="col" { "Added" } th scope="col" { "Remove" } } }
                    tbody { @for (group, name, note) in a.entries {
                        tr {
                            td { (name) }
                            td { @if group.is_empty() { "every group" } @else { "group " (group) } }
                            td {
                                (allow_note(note, a.tz))
                                @if super::allow::added(note).is_some_and(|t| t < a.review_before) {
                                    " " span.serious { "Added over a year ago: is it still needed?" }
                                }
                            }
                            td {
                                form method="post" action="/admin/allow/remove" {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    input type="hidden" name="name" value=(name);
                                    input type="hidden" name="group" value=(group);
                                    label for=(format!("reason-{group}-{name}")) { "Reason" }
                                    input id=(format!("reason-{group}-{name}")) name="reason" required maxlength="500";
                                    " "
                                    button type="submit" { "Remove" }
                                }
                            }
                        }
                    } }
                } }
            }
            (config_changes(a.config_changes, a.tz))
            h2 { "Recent allow-list changes" }
            @if a.changes.is_empty() { p { "None." } } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Change" } th scope="col" { "Site" } th scope="col" { "Reason" } } }
                    tbody { @for c in a.changes {
                        tr { td { (when(&c.at, a.tz)) } td { (c.by) } td { (c.action) } td { (c.name) } td { (c.reason) } }
                    } }
                } }
            }
            h2 { "Users" }
            p { "Add or reset a user on the Warden machine with " code { "warden user add NAME --role lead" } "." }
            ul { @for (name, role) in a.users { li { (name) " (" (role.as_str()) ")" } } }
            h2 { "Recent sign-ins" }
            div.scroll { table {
                thead { tr { th scope="col" { "When" } th scope="col" { "User" } th scope="col" { "From" } th scope="col" { "Result" } } }
                tbody { @for s in a.signins {
                    tr { td { (when(&s.at, a.tz)) } td { (s.user) } td { (s.client_ip) } td { (s.result) } }
                } }
            } }
        },
    )
}

/// Percent-encode a query value.
pub(crate) fn urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Raw markup, for the chart (already rendered by `maud`).
pub fn raw(markup: String) -> Markup {
    PreEscaped(markup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_queries_encoded() {
        let page = message("Oops", "<script>alert(1)</script>", None).into_string();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        assert_eq!(urlencode("a b&c=d"), "a%20b%26c%3Dd");
        let form = FilterForm {
            category: "self-harm".into(),
            device: "ipad 3".into(),
            ..FilterForm::default()
        };
        assert_eq!(form.query(), "category=self-harm&device=ipad%203");
    }
}
