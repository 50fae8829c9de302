//! The requests to unblock a site filed from the block page ([`crate::requests`]), on
//! the dashboard (`/requests`): the lead and the admin see the queue and the latest
//! decisions; the admin approves one (an allow entry with the request as its reason, for
//! every group or the chosen one, perhaps until a date: the same entry as the admin
//! page's, so it is reloaded, recorded and ends like one) or declines it with a note.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use chrono_tz::Tz;
use maud::{html, Markup};

use super::auth::Session;
use super::extract::{require_admin, CarriesCsrf, Reviewer, SignedForm};
use super::pages::{layout, urlencode, when};
use super::state::{html, redirect, PageResult};
use super::{Dashboard, PageError};
use crate::config::Role;
use crate::requests::{self, Decision, Request, RequestError};

/// Decided requests shown under the queue.
const DECIDED_SHOWN: u32 = 50;
/// The longest note a decline takes.
const MAX_NOTE: usize = 500;

#[derive(serde::Deserialize)]
pub(super) struct QueueQuery {
    #[serde(default)]
    done: Option<String>,
}

pub(super) async fn page(
    State(d): State<Arc<Dashboard>>,
    Reviewer(session): Reviewer,
    parsed: Result<Query<QueueQuery>, QueryRejection>,
) -> PageResult {
    let notice = super::query(parsed)?.done;
    let engine = d.engine();
    let (open, decided) = d.db(|s| requests::queue(s, DECIDED_SHOWN)).await?;
    let view = Queue {
        open: &open,
        decided: &decided,
        groups: &engine.config.group_names(),
        tz: crate::localtime::zone(&engine.config),
        notice,
    };
    let org = &engine.config.dashboard.organisation;
    Ok(html(layout(
        "Requests",
        org,
        Some(&session),
        queue(&view, &session),
    )))
}

/// The approve and decline forms' fields.
#[derive(serde::Deserialize)]
pub(super) struct DecisionForm {
    csrf: String,
    /// `approve` or `decline`.
    decision: String,
    /// Approve: the group it is for (empty: every group), and the last day (optional).
    #[serde(default)]
    group: String,
    #[serde(default)]
    until: String,
    /// Decline: why (shown to the lead; required).
    #[serde(default)]
    note: String,
}

impl CarriesCsrf for DecisionForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /requests/{id}`: the admin's decision.
pub(super) async fn decide(
    State(d): State<Arc<Dashboard>>,
    id: Result<Path<i64>, PathRejection>,
    SignedForm(session, f): SignedForm<DecisionForm>,
) -> PageResult {
    require_admin(&session)?;
    let Path(id) = id.map_err(|_| PageError::NotFound("There is no such request.".into()))?;
    let request = d
        .db(move |s| requests::get(s, id))
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no request {id}.")))?;
    if request.state != "open" {
        return Err(PageError::Conflict(format!(
            "Request {id} was already {}.",
            request.state
        )));
    }
    let config = d.engine().config.clone();
    let (decision, done) = match f.decision.as_str() {
        "approve" => {
            let group = super::form_group(&config, &f.group)?;
            let reason = reason_of(&request);
            super::add_allow_entry(&d, &session.user, &request.site, &reason, &f.until, group)
                .await?;
            let decision = Decision {
                approved: true,
                by: session.user.clone(),
                note: String::new(),
                allow_group: group.map(str::to_string),
                allow_until: (!f.until.trim().is_empty()).then(|| f.until.trim().to_string()),
            };
            (
                decision,
                format!("{} is now allowed (request {id}).", request.site),
            )
        }
        "decline" => {
            let note = declined_note(&f.note)?;
            let decision = Decision {
                approved: false,
                by: session.user.clone(),
                note,
                allow_group: None,
                allow_until: None,
            };
            (decision, format!("Request {id} was declined."))
        }
        _ => return Err(PageError::BadRequest("Approve or decline?".into())),
    };
    d.db(move |s| {
        requests::decide(s, id, &decision, SystemTime::now()).map_err(|e| match e {
            RequestError::Store(e) => e,
            other => crate::audit::AuditError::Invalid(other.to_string()),
        })
    })
    .await?;
    tracing::info!(request = id, user = %session.user, decision = %f.decision, "a request to unblock a site was decided");
    Ok(redirect(&format!("/requests?done={}", urlencode(&done))))
}

/// The allow entry's reason: the request, on one line, within the reason's length.
fn reason_of(r: &Request) -> String {
    let what: String = r
        .what
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(400)
        .collect();
    format!("request {} from the block page: {what}", r.id)
}

/// A decline's note: one line, not empty, at most [`MAX_NOTE`] characters.
fn declined_note(note: &str) -> Result<String, PageError> {
    let note = note.trim();
    if note.is_empty() {
        return Err(PageError::BadRequest(
            "Please say why it is declined: the lead sees it.".into(),
        ));
    }
    if note.chars().count() > MAX_NOTE || note.chars().any(char::is_control) {
        return Err(PageError::BadRequest(format!(
            "A note is one line of at most {MAX_NOTE} characters."
        )));
    }
    Ok(note.to_string())
}

struct Queue<'a> {
    open: &'a [Request],
    decided: &'a [Request],
    groups: &'a [String],
    tz: Tz,
    notice: Option<String>,
}

fn queue(q: &Queue<'_>, session: &Session) -> Markup {
    let admin = session.role == Role::Admin;
    html! {
        h1 { "Requests to unblock a site" }
        @if let Some(done) = &q.notice { p.notice role="status" { (done) } }
        p { "Filed from the block page by people who think a site was blocked wrongly. Requests for a locked (statutory) category are not taken." }
        h2 { "Waiting (" (q.open.len()) ")" }
        @if q.open.is_empty() { p { "None waiting." } } @else {
            @for r in q.open {
                section.request {
                    h3 { "Request " (r.id) ": " (r.site) }
                    (facts(r, q.tz))
                    @if admin { (decision_forms(r, q.groups, session)) }
                }
            }
        }
        h2 { "Decided" }
        @if q.decided.is_empty() { p { "None yet." } } @else {
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Request" } th scope="col" { "Site" } th scope="col" { "Decision" }
                    th scope="col" { "By" } th scope="col" { "When" } th scope="col" { "Note" }
                } }
                tbody { @for r in q.decided {
                    tr {
                        td { (r.id) } td { (r.site) }
                        td { (r.state) @if let Some(g) = &r.allow_group { " (group " (g) ")" } }
                        td { (r.decided_by.as_deref().unwrap_or("")) }
                        td { (r.decided_at.as_deref().map(|t| when(t, q.tz)).unwrap_or_default()) }
                        td { (r.note.as_deref().unwrap_or("")) }
                    }
                } }
            } }
        }
    }
}

/// What a request says.
fn facts(r: &Request, tz: Tz) -> Markup {
    let device = match (&r.device, r.client.is_empty()) {
        (Some(device), false) => format!("{device} ({})", r.client),
        (Some(device), true) => device.clone(),
        (None, false) => r.client.clone(),
        (None, true) => "(no longer kept)".to_string(),
    };
    html! {
        dl {
            dt { "When" } dd { (when(&r.at, tz)) }
            dt { "Device" } dd { (device) ", group " (r.group) }
            @if let Some(name) = &r.requester { dt { "Name given" } dd { (name) } }
            dt { "Blocked as" } dd { (r.categories) }
            dt { "What they were doing" } dd { (r.what) }
        }
    }
}

/// The admin's approve and decline forms for `r`.
fn decision_forms(r: &Request, groups: &[String], session: &Session) -> Markup {
    let id = r.id;
    html! {
        form method="post" action=(format!("/requests/{id}")) class="approve" {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="decision" value="approve";
            div.field { label for=(format!("group-{id}")) { "Allow for" } select id=(format!("group-{id}")) name="group" {
                option value=(r.group) { "group " (r.group) " (theirs)" }
                option value="" { "every group" }
                @for g in groups.iter().filter(|g| **g != r.group) { option value=(g) { "group " (g) } }
            } }
            div.field { label for=(format!("until-{id}")) { "Until (optional last day)" } input id=(format!("until-{id}")) name="until" type="date"; }
            button type="submit" { "Approve" }
        }
        form method="post" action=(format!("/requests/{id}")) class="decline" {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="decision" value="decline";
            div.field { label for=(format!("note-{id}")) { "Why not" } input id=(format!("note-{id}")) name="note" required maxlength="500"; }
            button type="submit" { "Decline" }
        }
    }
}
