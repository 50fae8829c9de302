//! The trust's shared policy on the dashboards ([`crate::fleet::policy`]).
//!
//! On the trust's dashboard (`warden fleet serve`): every entry in force with its scope,
//! who added it, when and why, and every change; a trust-wide admin (role `admin`, bound
//! to no site) adds and removes allow and deny entries there, each change checked as
//! the command line's is ([`crate::fleet::edit`]) and recorded with the admin's name. On
//! a site's dashboard: the version this site applies and its entries, as written in
//! `[fleet] policy_dir`.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono_tz::Tz;
use maud::{html, Markup};

use super::auth::Session;
use super::backend::BackendError;
use super::extract::{CarriesCsrf, Reviewer, SignedForm};
use super::pages::{self, layout, urlencode};
use super::state::{html, redirect, PageResult};
use super::{Dashboard, PageError};
use crate::config::Role;
use crate::fleet::edit;
use crate::fleet::policy::{scope_line, Change, Record, State as PolicyState};
use crate::fleet::read::Scope;

/// Changes shown on the page, newest first (`warden fleet policy history` has them all).
const HISTORY_SHOWN: usize = 200;

#[derive(serde::Deserialize)]
pub(super) struct PolicyQuery {
    #[serde(default)]
    done: Option<String>,
}

/// Only a trust-wide admin changes the trust's policy.
fn may_edit(d: &Dashboard, session: &Session) -> bool {
    session.role == Role::Admin && matches!(d.scope(session), Scope::All)
}

pub(super) async fn page(
    State(d): State<Arc<Dashboard>>,
    Reviewer(session): Reviewer,
    parsed: Result<Query<PolicyQuery>, QueryRejection>,
) -> PageResult {
    let notice = super::query(parsed)?.done;
    let engine = d.engine();
    let org = engine.config.dashboard.organisation.clone();
    let tz = crate::localtime::zone(&engine.config);
    let body = match d.backend.central() {
        Some(central) => {
            let records = central.policy_records().await.map_err(BackendError::from)?;
            trust_policy(&records, may_edit(&d, &session), &session, notice, tz)
        }
        None => site_policy(&engine.config),
    };
    Ok(html(layout("Policy", &org, Some(&session), body)))
}

#[derive(serde::Deserialize)]
pub(super) struct AddForm {
    csrf: String,
    kind: String,
    name: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    sites: String,
    #[serde(default)]
    groups: String,
    #[serde(default)]
    reason: String,
}

impl CarriesCsrf for AddForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(serde::Deserialize)]
pub(super) struct RemoveForm {
    csrf: String,
    kind: String,
    name: String,
    #[serde(default)]
    reason: String,
}

impl CarriesCsrf for RemoveForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Comma- or space-separated names, without empties.
fn names(text: &str) -> Vec<String> {
    text.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub(super) async fn add(
    State(d): State<Arc<Dashboard>>,
    SignedForm(session, f): SignedForm<AddForm>,
) -> PageResult {
    let name = edit::domain(&f.name).map_err(|e| PageError::BadRequest(e.0))?;
    let (sites, groups) = (names(&f.sites), names(&f.groups));
    let category = Some(f.category.trim().to_string()).filter(|c| !c.is_empty());
    let change =
        match f.kind.as_str() {
            "allow" if category.is_some() => return Err(PageError::BadRequest(
                "An allow entry has no category: it holds wherever no locked list blocks the name."
                    .into(),
            )),
            "allow" => Change::Allow {
                name,
                sites,
                groups,
            },
            "deny" => Change::Deny {
                name,
                category,
                sites,
                groups,
            },
            other => {
                return Err(PageError::BadRequest(format!(
                    "Unknown entry kind {other:?}."
                )))
            }
        };
    propose(&d, &session, &f.reason, change).await
}

pub(super) async fn remove(
    State(d): State<Arc<Dashboard>>,
    SignedForm(session, f): SignedForm<RemoveForm>,
) -> PageResult {
    let name = edit::domain(&f.name).map_err(|e| PageError::BadRequest(e.0))?;
    let change = match f.kind.as_str() {
        "allow" => Change::Unallow { name },
        "deny" => Change::Undeny { name },
        other => {
            return Err(PageError::BadRequest(format!(
                "Unknown entry kind {other:?}."
            )))
        }
    };
    propose(&d, &session, &f.reason, change).await
}

/// Check and store `change` for the signed-in trust-wide admin.
async fn propose(d: &Dashboard, session: &Session, reason: &str, change: Change) -> PageResult {
    let Some(central) = d.backend.central() else {
        return Err(PageError::NotFound(
            "The trust's policy is changed on the trust's dashboard.".into(),
        ));
    };
    if !may_edit(d, session) {
        return Err(PageError::Forbidden(
            "Only a trust-wide admin (role admin, bound to no site) changes the trust's policy."
                .into(),
        ));
    }
    let engine = d.engine();
    let stored = central
        .propose(
            &engine.config,
            Some(&engine),
            &session.user,
            reason,
            &change,
        )
        .await
        .map_err(BackendError::from)?;
    match stored {
        Ok(version) => {
            tracing::info!(user = %session.user, version, change = %change.describe(), "trust policy changed in the dashboard");
            Ok(redirect(&format!(
                "/policy?done={}",
                urlencode(&format!(
                    "Version {version}: {}. Sites apply it within moments.",
                    change.describe()
                ))
            )))
        }
        Err(refused) => Err(PageError::Conflict(format!("Not changed: {refused}."))),
    }
}

fn trust_policy(
    records: &[Record],
    editable: bool,
    session: &Session,
    notice: Option<String>,
    tz: Tz,
) -> Markup {
    let state = PolicyState::fold(records);
    let at = |r: &crate::fleet::policy::Origin| pages::when(&crate::audit::rfc3339(r.at), tz);
    html! {
        h1 { "The trust's policy" }
        @if let Some(n) = &notice { p.notice role="status" { (n) } }
        p { "Version " (state.version) ". Every site applies it within moments of a change, and keeps the \
             last version it applied if it cannot reach the trust's database. Names on a locked list stay \
             blocked whatever is allowed here." }
        p { (local_allow_text(&state)) }
        h2 { "Entries in force" }
        @if state.allow.is_empty() && state.deny.is_empty() && state.lists.is_empty() { p { "None yet." } } @else {
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Entry" } th scope="col" { "Name" } th scope="col" { "Where" }
                    th scope="col" { "Version" } th scope="col" { "Added" } th scope="col" { "By" } th scope="col" { "Reason" }
                    @if editable { th scope="col" { "Remove" } }
                } }
                tbody {
                    @for (kind, name, e) in state.allow.iter().map(|(n, e)| ("allow", n, e)).chain(state.deny.iter().map(|(n, e)| ("deny", n, e))) {
                        tr {
                            td { (kind) @if let Some(c) = &e.category { " (" (c) ")" } }
                            td { (name) } td { (scope_line(&e.sites, &e.groups)) }
                            td { "v" (e.origin.version) } td { (at(&e.origin)) } td { (e.origin.author) } td { (e.origin.reason) }
                            @if editable { td { (remove_form(kind, name, session)) } }
                        }
                    }
                    @for (name, l) in &state.lists {
                        tr {
                            td { "list (" (l.category) ")" } td { (name) } td { (scope_line(&l.sites, &[])) }
                            td { "v" (l.origin.version) } td { (at(&l.origin)) } td { (l.origin.author) } td { (l.origin.reason) }
                            @if editable { td { code { "warden fleet policy list remove" } } }
                        }
                    }
                }
            } }
        }
        @if let Some((toml, o)) = &state.settings {
            h2 { "The trust's categories and groups" }
            p { "Version " (o.version) ", " (at(o)) " by " (o.author) ": " (o.reason)
                ". Sites read these with their own config; they may add categories and groups of their own. \
                 Change them with " code { "warden fleet policy settings set FILE" } "." }
            pre { (toml) }
        }
        @if editable { (add_form(session)) }
        h2 { "Changes" }
        @if records.is_empty() { p { "None yet." } } @else {
            div.scroll { table {
                thead { tr { th scope="col" { "Version" } th scope="col" { "When" } th scope="col" { "By" } th scope="col" { "Change" } th scope="col" { "Reason" } } }
                tbody { @for r in records.iter().rev().take(HISTORY_SHOWN) {
                    tr { td { "v" (r.version) } td { (pages::when(&crate::audit::rfc3339(r.at), tz)) } td { (r.author) } td { (r.change.describe()) } td { (r.reason) } }
                } }
            } }
        }
    }
}

/// Where site admins may add allow entries of their own.
fn local_allow_text(state: &PolicyState) -> String {
    let everywhere = state.local_allow.as_ref().is_none_or(|(a, _)| *a);
    let sites = |allowed: bool| {
        let names: Vec<&str> = state
            .local_allow_at
            .iter()
            .filter(|(_, (a, _))| *a == allowed)
            .map(|(site, _)| site.as_str())
            .collect();
        names.join(", ")
    };
    let (yes, no) = (sites(true), sites(false));
    match (everywhere, no.is_empty(), yes.is_empty()) {
        (true, true, _) => {
            "Site admins may add allow entries of their own at every site.".to_string()
        }
        (true, false, _) => {
            format!("Site admins may add allow entries of their own, except at {no}.")
        }
        (false, _, true) => {
            "Allow entries are kept to the trust: no site adds its own.".to_string()
        }
        (false, _, false) => format!("Allow entries are kept to the trust, except at {yes}."),
    }
}

fn remove_form(kind: &str, name: &str, session: &Session) -> Markup {
    let id = format!("reason-{kind}-{name}");
    html! {
        form method="post" action="/policy/remove" {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="kind" value=(kind);
            input type="hidden" name="name" value=(name);
            label for=(id) { "Reason" }
            input id=(id) name="reason" required maxlength="500";
            " "
            button type="submit" { "Remove" }
        }
    }
}

fn add_form(session: &Session) -> Markup {
    html! {
        h2 { "Add an entry" }
        p { "An allow entry unblocks the name and its subdomains; a deny entry blocks them, for every group that \
             blocks its category (or for the groups named). Leave sites and groups empty for all." }
        form method="post" action="/policy/add" {
            input type="hidden" name="csrf" value=(session.csrf);
            div.field { label for="kind" { "Entry" }
                select id="kind" name="kind" { option value="deny" { "deny" } option value="allow" { "allow" } } }
            div.field { label for="name" { "Name (domain)" } input id="name" name="name" required maxlength="253"; }
            div.field { label for="category" { "Category (deny entries for every group)" } input id="category" name="category" maxlength="64"; }
            div.field { label for="sites" { "Only at these sites (comma-separated)" } input id="sites" name="sites" maxlength="2000"; }
            div.field { label for="groups" { "Only for these groups (comma-separated)" } input id="groups" name="groups" maxlength="2000"; }
            div.field { label for="reason" { "Reason (recorded with your name)" } input id="reason" name="reason" required maxlength="500"; }
            button type="submit" { "Add" }
        }
    }
}

/// A site's view: the version it applies and the entries in its policy folder.
fn site_policy(config: &crate::config::Config) -> Markup {
    if config.fleet.is_none() {
        return html! {
            h1 { "Policy" }
            p { "This Warden follows no trust's policy ([fleet] is not set): its own allow entries are on the Admin page." }
        };
    }
    let applied = crate::fleet::policy::applied_here(config);
    html! {
        h1 { "The trust's policy at this site" }
        @if let Some((version, files)) = &applied {
            p { "Version " (version) " applies here (from the trust's central store; the trust's dashboard shows who changed what and why)." }
            div.scroll { table {
                thead { tr { th scope="col" { "List" } th scope="col" { "Name" } th scope="col" { "Version, time, by and reason" } } }
                tbody { @for (file, text) in files { @for (name, note) in super::allow::entries(text) {
                    tr { td { (if file.starts_with("allow") { "allow" } else { "deny" }) } td { (name) } td { (note) } }
                } } }
            } }
        } @else { p { "No version applied yet." } }
    }
}
