//! The e-safety lead's web dashboard, served by the admin listener next to `/metrics`.
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET/POST /login`, `POST /logout` | anyone | sign in and out |
//! | `GET /` | governor, lead, admin | blocks per category per day, serious blocks to review, top devices, list health (a governor: counts only) |
//! | `GET /events` | lead, admin | filter by dates, category, group, device, review state; paged |
//! | `GET /events/{id}`, `POST /events/{id}/review` | lead, admin | every audit field; append a review |
//! | `GET /export.csv` | lead, admin | the current filter's events as CSV, for the incident log |
//! | `GET /admin`, `POST /admin/allow`, `POST /admin/allow/remove` | admin | allow entries, users, sign-ins |
//! | `GET /policy` | lead, admin | the trust's policy: on the trust's dashboard every entry and change, on a site's the version it applies |
//! | `POST /policy/add`, `POST /policy/remove` | trust-wide admin | change the trust's policy (trust's dashboard only) |
//!
//! Every page needs a session ([`auth`]) and every form POST the session's CSRF token,
//! checked by the handlers' extractors (`extract.rs`) before they run; every response carries a strict Content-Security-Policy and no-sniff/no-frame headers.
//! Bad input (a malformed form, an unknown event, a bad date) is answered with a 4xx page
//! that says what was wrong, never a 500. Database work runs on blocking threads, on a
//! connection of the dashboard's own beside the audit writer's.

pub mod allow;
mod allow_edit;
pub mod auth;
mod backend;
pub mod chart;
mod expiry;
use self::allow_edit::{change_allow_file, AllowEdit};
pub(crate) use self::expiry::run as end_allow_entries_at_their_date;
mod export;
mod extract;
pub mod pages;
mod policy;
mod report_page;
mod requests_page;
pub mod second_factor;
pub mod signin;
mod state;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono_tz::Tz;

use self::auth::{Session, SESSION_COOKIE};
use self::extract::{
    require_admin, require_reviewer, Admin, CarriesCsrf, Reviewer, Signed, SignedForm,
};
use self::state::{cookie, html, login_page, redirect, PageResult};
pub use self::state::{Dashboard, DashboardError, PageError};
use crate::audit::records;
use crate::audit::review::{EventRow, Filter};
use crate::audit::rfc3339;
use crate::config::{Config, Role};
use crate::engine::Engine;
use crate::fleet::read::{CentralFilter, Scope};
use crate::localtime;
use crate::metrics::Metrics;

/// Events per page.
const PAGE_SIZE: u32 = 50;
/// Longest review note and allow reason accepted.
const MAX_NOTE: usize = 2000;
const MAX_REASON: usize = 500;

/// The dashboard's routes, with security headers on every response.
pub fn routes(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_form).post(signin::login_submit))
        .route("/logout", post(logout))
        .route("/events", get(events))
        .route("/events/{id}", get(event_detail))
        .route("/events/{id}/review", post(review_submit))
        .route("/export.csv", get(export_csv))
        .route("/admin", get(admin_page))
        .route("/admin/allow", post(allow_add))
        .route("/admin/allow/remove", post(allow_remove))
        .route("/report", get(report_page::page))
        .route("/requests", get(requests_page::page))
        .route("/requests/{id}", post(requests_page::decide))
        .route("/policy", get(policy::page))
        .route("/policy/add", post(policy::add))
        .route("/policy/remove", post(policy::remove))
        .route("/static/warden.css", get(stylesheet))
        .with_state(dashboard)
        .layer(axum::middleware::map_response(security_headers))
}

/// Headers that keep the pages from being framed, sniffed, cached or scripted.
pub(crate) async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    // A page that sets its own policy keeps it (the report: its inline style by hash).
    for (name, value) in set {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        pages::CSS,
    )
        .into_response()
}

// ---- Sign-in ----

async fn login_form(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> PageResult {
    if d.session(&headers).is_some() {
        return Ok(redirect("/"));
    }
    login_page(&d, None, "", StatusCode::OK)
}

/// The sign-in form with a fresh double-submit token in its cookie and its field.

#[derive(serde::Deserialize)]
struct CsrfForm {
    csrf: String,
}

impl CarriesCsrf for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn logout(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    _: SignedForm<CsrfForm>,
) -> PageResult {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        d.sessions.end(token);
    }
    let mut response = redirect("/login");
    let gone = auth::set_cookie(SESSION_COOKIE, "", "/", Duration::ZERO, false);
    if let Ok(value) = HeaderValue::from_str(&gone) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

// ---- Overview ----

/// The categories whose blocks the lead must act on: those that alert.
fn serious_categories(config: &Config) -> Vec<String> {
    config
        .categories
        .iter()
        .filter(|(name, c)| c.alerts(name))
        .map(|(name, _)| name.clone())
        .collect()
}

#[derive(serde::Deserialize)]
struct OverviewQuery {
    /// On the fleet dashboard: one site's overview.
    #[serde(default)]
    site: Option<String>,
}

/// Self-test runs listed on the overview.
const SELFTEST_RUNS_SHOWN: u32 = 12;

async fn overview(
    State(d): State<Arc<Dashboard>>,
    Signed(session): Signed,
    parsed: Result<Query<OverviewQuery>, QueryRejection>,
) -> PageResult {
    let only = query(parsed)?.site.filter(|s| !s.is_empty());
    let scope = match &only {
        Some(site) => d.scope(&session).only(site),
        None => d.scope(&session),
    };
    let engine = d.engine();
    let serious = serious_categories(&engine.config);
    let now = SystemTime::now();
    let tz = localtime::zone(&engine.config);
    let (days, since) = last_30_days(now, tz);
    let site = engine
        .config
        .fleet
        .as_ref()
        .and_then(|f| f.site.as_ref())
        .map(|s| s.get_ref().clone());
    let fleet = match site.filter(|_| !d.backend.is_fleet()) {
        Some(site) => Some(d.db(move |s| fleet_state(s, site, now)).await?),
        None => None,
    };
    let data = d
        .backend
        .overview(&scope, since, tz, serious.clone())
        .await?;
    let series = chart::Series::new(days, &data.daily);
    let chart = chart::render(&series, "Blocks per category per day, last 30 days");
    // The lists are this Warden's own: the fleet dashboard shows the sites instead.
    let lists = match d.backend.is_fleet() {
        true => Vec::new(),
        false => list_health(&engine, &d.metrics, now),
    };
    // So is the self-test: the trust's dashboard has no listener of its own.
    let (selftest, requests_waiting) = match d.backend.is_fleet() {
        true => (None, None),
        false => {
            let (runs, waiting) = d
                .db(|s| {
                    Ok((
                        crate::selftest::history::recent(s, "", SELFTEST_RUNS_SHOWN)?,
                        crate::requests::open_count(s)?,
                    ))
                })
                .await?;
            (Some(runs), Some(waiting))
        }
    };
    // A governor's overview is counts only: the rows that name a device are not sent.
    let (serious_rows, top_devices) = match session.role.sees_people() {
        true => (&data.serious[..], &data.top_devices[..]),
        false => (&[][..], &[][..]),
    };
    let page = pages::Overview {
        chart,
        serious: serious_rows,
        unreviewed_total: data.unreviewed_total,
        top_devices,
        lists: &lists,
        total_30d: data.total,
        tz,
        fleet,
        sites: data.sites.as_deref(),
        only: only.as_deref().filter(|_| d.backend.is_fleet()),
        selftest: selftest.as_deref(),
        requests_waiting: requests_waiting.filter(|_| session.role.sees_people()),
    };
    Ok(html(pages::overview(
        &page,
        &engine.config.dashboard.organisation,
        &session,
        &serious,
    )))
}

/// How long the oldest unshipped row may wait before the overview calls it late (the
/// Prometheus rule in `deploy/prometheus/alerts.yml` uses the same).
const FLEET_LATE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// This site's shipping state, read from its own log.
fn fleet_state(
    store: &crate::audit::Store,
    site: String,
    now: SystemTime,
) -> Result<pages::FleetState, crate::audit::AuditError> {
    let (waiting, oldest) = store.unshipped()?;
    let late = oldest
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|age| age > FLEET_LATE);
    Ok(pages::FleetState {
        site,
        shipped: store.shipped_seq()?,
        waiting,
        oldest,
        late,
    })
}

/// The last 30 days in `tz` (`YYYY-MM-DD`, oldest first, today last), and the start of
/// the first of them as stored (RFC 3339 UTC).
fn last_30_days(now: SystemTime, tz: Tz) -> (Vec<String>, String) {
    let today = localtime::day_of(now.into(), tz);
    let first = today - chrono::Days::new(29);
    let days = first
        .iter_days()
        .take(30)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .collect();
    let since = rfc3339(localtime::start_of_day(first, tz).into());
    (days, since)
}

/// Each list's entries, last update, failed updates and any problem.
fn list_health(engine: &Engine, metrics: &Metrics, now: SystemTime) -> Vec<pages::ListHealth> {
    let config = &engine.config;
    let tz = localtime::zone(config);
    let stale: std::collections::HashMap<String, Option<crate::sources::Stale>> =
        crate::sources::stale_lists(config, now)
            .into_iter()
            .collect();
    engine
        .lists
        .iter()
        .map(|list| {
            let configured = config.lists.iter().find(|l| *l.name.get_ref() == list.name);
            let refreshed = match configured {
                Some(l) if l.url.is_some() => {
                    let file = l.file(config);
                    crate::sources::Source::all(config)
                        .into_iter()
                        .find(|s| s.file == file)
                        .map(|s| s.meta().checked_at)
                        .filter(|&t| t > 0)
                        .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t))
                }
                _ => std::fs::metadata(&list.report.path)
                    .and_then(|m| m.modified())
                    .ok(),
            };
            let problem = if list.missing {
                Some("never downloaded: blocks nothing yet".to_string())
            } else if let Some(Some(s)) = stale.get(&list.name) {
                Some(format!(
                    "out of date: last updated {} ago",
                    humantime::format_duration(Duration::from_secs(
                        s.age.as_secs().min(u32::MAX as u64)
                    ))
                ))
            } else {
                None
            };
            pages::ListHealth {
                name: list.name.clone(),
                category: list
                    .category
                    .clone()
                    .unwrap_or_else(|| "allow list".to_string()),
                entries: list.report.accepted,
                refreshed: refreshed
                    .map(|t| localtime::show_system(t, tz))
                    .unwrap_or_else(|| "never".to_string()),
                failures: metrics.list_refresh_failure_count(&list.name),
                problem,
            }
        })
        .collect()
}

// ---- Events ----

/// The audit filter for the form's values, or a message saying which value is wrong.
fn to_filter(f: &pages::FilterForm, config: &Config) -> Result<CentralFilter, PageError> {
    let now = SystemTime::now();
    let tz = localtime::zone(config);
    // A date is a day in the zone the pages show times in.
    let date = |text: &str, what: &str| -> Result<Option<String>, PageError> {
        if text.is_empty() {
            return Ok(None);
        }
        crate::audit::review::parse_time(&localtime::local_dates(text, tz), now)
            .map(Some)
            .map_err(|_| {
                PageError::BadRequest(format!("{what} {text:?} is not a date like 2026-11-01."))
            })
    };
    let since = date(&f.since, "From")?;
    // "Until" a date includes that whole day: up to the start of the next one.
    let until = match next_day(&f.until) {
        Some(next) => date(&next, "Until")?,
        None => date(&f.until, "Until")?
            .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
            .map(|t| rfc3339(t + Duration::from_secs(86_400))),
    };
    if !f.category.is_empty() && !config.categories.contains_key(&f.category) {
        return Err(PageError::BadRequest(format!(
            "There is no category {:?}.",
            f.category
        )));
    }
    let (unreviewed, reviewed) = match f.state.as_str() {
        "" | "any" => (false, false),
        "unreviewed" => (true, false),
        "reviewed" => (false, true),
        other => {
            return Err(PageError::BadRequest(format!(
                "Review state {other:?} is not one of: unreviewed, reviewed."
            )))
        }
    };
    let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    Ok(CentralFilter {
        filter: Filter {
            since,
            until,
            category: some(&f.category),
            client: some(&f.device),
            user: some(&f.user),
            group: some(&f.group),
            unreviewed,
            reviewed,
            ..Filter::default()
        },
        site: some(&f.site),
    })
}

/// The day after the date `text` (`2026-11-01`), if it is one.
fn next_day(text: &str) -> Option<String> {
    let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let next = day.succ_opt().filter(|_| text.len() == 10)?;
    Some(next.format("%Y-%m-%d").to_string())
}

fn query<T>(parsed: Result<Query<T>, QueryRejection>) -> Result<T, PageError> {
    parsed.map(|Query(v)| v).map_err(|e| {
        PageError::BadRequest(format!("The address could not be read: {}", e.body_text()))
    })
}

async fn events(
    State(d): State<Arc<Dashboard>>,
    Reviewer(session): Reviewer,
    parsed: Result<Query<pages::FilterForm>, QueryRejection>,
) -> PageResult {
    let form = query(parsed)?;
    let engine = d.engine();
    let scope = d.scope(&session);
    let mut filter = to_filter(&form, &engine.config)?;
    filter.filter.before = cursor(&form.before)?;
    let (export_form, _) = export::with_default_start(&form, &engine.config, SystemTime::now());
    let export_filter = to_filter(&export_form, &engine.config)?;
    let total = d.backend.page_total(&scope, filter.clone()).await?;
    let export_rows = d.backend.export_count(&scope, export_filter).await?;
    // One more than a page: whether there is an older page, without counting.
    let mut rows = d.backend.list(&scope, filter, PAGE_SIZE + 1).await?;
    let older = (rows.len() > PAGE_SIZE as usize).then(|| {
        rows.truncate(PAGE_SIZE as usize);
        rows.last()
            .map(|r| format!("{},{}", r.first_seen, r.id))
            .unwrap_or_default()
    });
    let export = export::link(&form, &engine.config, export_rows);
    let categories: Vec<String> = engine.config.categories.keys().cloned().collect();
    let mut groups: Vec<String> = engine.config.groups.keys().cloned().collect();
    if groups.is_empty() {
        groups.push(engine.config.default_group().to_string());
    }
    let serious = serious_categories(&engine.config);
    let sites = match (d.backend.is_fleet(), scope) {
        (false, _) => Vec::new(),
        (true, Scope::Sites(sites)) => sites,
        (true, Scope::All) => d.backend.site_names().await?,
    };
    let view = pages::EventsPage {
        form: &form,
        sites: &sites,
        rows: &rows,
        total,
        older,
        export: &export,
        categories: &categories,
        groups: &groups,
        serious: &serious,
        tz: localtime::zone(&engine.config),
    };
    Ok(html(pages::events(
        &view,
        &engine.config.dashboard.organisation,
        &session,
    )))
}

fn event_id(parsed: Result<Path<i64>, PathRejection>) -> Result<i64, PageError> {
    parsed
        .map(|Path(id)| id)
        .map_err(|_| PageError::BadRequest("An event number must be a whole number.".to_string()))
}

#[derive(serde::Deserialize)]
struct DetailQuery {
    #[serde(default)]
    saved: Option<u8>,
}

async fn event_detail(
    State(d): State<Arc<Dashboard>>,
    Reviewer(session): Reviewer,
    id: Result<Path<i64>, PathRejection>,
    parsed: Result<Query<DetailQuery>, QueryRejection>,
) -> PageResult {
    let id = event_id(id)?;
    let saved = query(parsed)?.saved.is_some();
    let scope = d.scope(&session);
    let (event, reviews) = d.backend.event(&scope, id).await?;
    // The same device's other blocks: at its own site (addresses repeat across sites).
    let same_device = CentralFilter {
        filter: Filter {
            client: Some(event.client_ip.clone()),
            ..Filter::default()
        },
        site: event.site.clone(),
    };
    let others: Vec<EventRow> = d
        .backend
        .list(&scope, same_device, 21)
        .await?
        .into_iter()
        .filter(|e| e.id != id)
        .take(20)
        .collect();
    // The same person's, on any device and (on the fleet dashboard) at any site.
    let person: Vec<EventRow> = match &event.user {
        None => Vec::new(),
        Some(user) => {
            let same_person = CentralFilter {
                filter: Filter {
                    user: Some(user.clone()),
                    ..Filter::default()
                },
                site: None,
            };
            d.backend
                .list(&scope, same_person, 21)
                .await?
                .into_iter()
                .filter(|e| e.id != id || e.site != event.site)
                .take(20)
                .collect()
        }
    };
    let engine = d.engine();
    let serious = serious_categories(&engine.config);
    let view = pages::Detail {
        event: &event,
        reviews: &reviews,
        others: &others,
        person: &person,
        serious: &serious,
        saved,
        tz: localtime::zone(&engine.config),
    };
    Ok(html(pages::event_detail(
        &view,
        &engine.config.dashboard.organisation,
        &session,
    )))
}

#[derive(serde::Deserialize)]
struct ReviewForm {
    csrf: String,
    outcome: String,
    #[serde(default)]
    note: String,
}

impl CarriesCsrf for ReviewForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn review_submit(
    State(d): State<Arc<Dashboard>>,
    id: Result<Path<i64>, PathRejection>,
    SignedForm(session, review_form): SignedForm<ReviewForm>,
) -> PageResult {
    require_reviewer(&session)?;
    let id = event_id(id)?;
    if review_form.note.chars().count() > MAX_NOTE {
        return Err(PageError::BadRequest(format!(
            "A note can be at most {MAX_NOTE} characters."
        )));
    }
    d.backend
        .add_review(
            &d.scope(&session),
            id,
            review_form.outcome,
            review_form.note.trim().to_string(),
            session.user.clone(),
        )
        .await?;
    tracing::info!(user = %session.user, event = id, "event reviewed in the dashboard");
    Ok(redirect(&format!("/events/{id}?saved=1")))
}

/// The page cursor `first_seen,id` of an "Older" link; empty for the newest page.
fn cursor(text: &str) -> Result<Option<(String, i64)>, PageError> {
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || PageError::BadRequest("The page link could not be read.".to_string());
    let (time, id) = text.rsplit_once(',').ok_or_else(bad)?;
    let id: i64 = id.parse().map_err(|_| bad())?;
    humantime::parse_rfc3339_weak(time).map_err(|_| bad())?;
    Ok(Some((time.to_string(), id)))
}

async fn export_csv(
    State(d): State<Arc<Dashboard>>,
    Reviewer(session): Reviewer,
    parsed: Result<Query<pages::FilterForm>, QueryRejection>,
) -> PageResult {
    let form = query(parsed)?;
    let config = d.engine().config.clone();
    let (form, _) = export::with_default_start(&form, &config, SystemTime::now());
    let filter = to_filter(&form, &config)?;
    let Ok(permit) = d.exports.clone().try_acquire_owned() else {
        return Err(PageError::Busy(format!(
            "{} exports are running already. Try again when one has finished.",
            export::CONCURRENT
        )));
    };
    let scope = d.scope(&session);
    let rows = d.backend.count(&scope, filter.clone()).await?;
    let user = session.user.clone();
    let body = d
        .backend
        .export(scope, filter, permit, move |result| match result {
            Ok(rows) => tracing::info!(user = %user, rows, "events exported from the dashboard"),
            Err(error) => tracing::warn!(user = %user, ?error, "dashboard export cut short"),
        });
    let day = rfc3339(SystemTime::now())[..10].to_string();
    let disposition = format!("attachment; filename=\"warden-events-{day}.csv\"");
    let mut response = (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        axum::body::Body::from_stream(body),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    // The rows the export will write, counted as it started (new blocks may add some).
    headers.insert("x-warden-rows", HeaderValue::from(rows));
    Ok(response)
}

// ---- Admin ----

#[derive(serde::Deserialize)]
struct AdminQuery {
    #[serde(default)]
    done: Option<String>,
}

/// The dashboard's allow entries, for every group and each group's own: (group or
/// empty, name, comment).
fn every_allow_entry(config: &Config) -> Result<Vec<(String, String, String)>, PageError> {
    let mut out = Vec::new();
    let files = std::iter::once(None).chain(config.group_names().into_iter().map(Some));
    for group in files {
        let path = allow_edit::allow_file_of(config, group.as_deref());
        let text = allow::read(&path).map_err(|e| PageError::Internal(e.to_string()))?;
        for (name, note) in allow::entries(&text) {
            out.push((group.clone().unwrap_or_default(), name, note));
        }
    }
    Ok(out)
}

async fn admin_page(
    State(d): State<Arc<Dashboard>>,
    Admin(session): Admin,
    parsed: Result<Query<AdminQuery>, QueryRejection>,
) -> PageResult {
    let notice = query(parsed)?.done;
    not_on_the_fleet_dashboard(&d)?;
    let engine = d.engine();
    let entries = every_allow_entry(&engine.config)?;
    let (changes, signins, config_changes) = d
        .db(|s| {
            Ok((
                records::recent_allow_changes(s, 20)?,
                records::recent_signins(s, 20)?,
                crate::config_history::recent(s, "", 10)?,
            ))
        })
        .await?;
    let users: Vec<(String, Role)> = engine
        .config
        .users
        .iter()
        .map(|u| (u.name.get_ref().clone(), u.role))
        .collect();
    let view = pages::AdminPage {
        entries: &entries,
        changes: &changes,
        users: &users,
        signins: &signins,
        notice,
        tz: localtime::zone(&engine.config),
        local_allow: engine.config.local_allow_permitted(),
        review_before: SystemTime::now() - std::time::Duration::from_secs(365 * 86_400),
        config_changes: &config_changes,
        groups: &engine.config.group_names(),
    };
    Ok(html(pages::admin(
        &view,
        &engine.config.dashboard.organisation,
        &session,
    )))
}

#[derive(serde::Deserialize)]
struct AllowForm {
    csrf: String,
    name: String,
    #[serde(default)]
    reason: String,
    /// The last day the entry holds (`YYYY-MM-DD`, in `[server] timezone`); empty for
    /// one that stays until removed.
    #[serde(default)]
    until: String,
    /// The group whose own entry it is (empty: the entries for every group).
    #[serde(default)]
    group: String,
}

/// The group a form names (`None` for every group), which must be one of `config`'s.
fn form_group<'f>(config: &Config, group: &'f str) -> Result<Option<&'f str>, PageError> {
    let group = group.trim();
    if group.is_empty() {
        return Ok(None);
    }
    if !config.group_names().iter().any(|g| g == group) {
        return Err(PageError::BadRequest(format!(
            "There is no group {group:?}."
        )));
    }
    Ok(Some(group))
}

/// Longest an entry with an end may last: beyond a year it is a standing decision, and
/// should be made (and reviewed) as one.
const MAX_UNTIL_DAYS: u64 = 366;

/// When an entry that holds through `day` (as typed) ends: the start of the next day in
/// `tz`. `None` for an empty field.
fn allow_until(
    day: &str,
    now: SystemTime,
    tz: chrono_tz::Tz,
) -> Result<Option<SystemTime>, PageError> {
    let day = day.trim();
    if day.is_empty() {
        return Ok(None);
    }
    let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map_err(|_| PageError::BadRequest(format!("{day:?} is not a date (YYYY-MM-DD).")))?;
    let today = localtime::day_of(now.into(), tz);
    if date < today {
        return Err(PageError::BadRequest(format!("{day} is in the past.")));
    }
    if date > today + chrono::Days::new(MAX_UNTIL_DAYS) {
        return Err(PageError::BadRequest(
            "An allow entry can end at most a year ahead; leave the date empty for one that \
             stays until it is removed."
                .to_string(),
        ));
    }
    let end = localtime::start_of_day(date + chrono::Days::new(1), tz);
    Ok(Some(end.into()))
}

impl CarriesCsrf for AllowForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The admin pages edit this Warden's own allow list and show its own sign-ins: the
/// fleet dashboard has neither (each site keeps its own until the trust's shared policy).
fn not_on_the_fleet_dashboard(d: &Dashboard) -> Result<(), PageError> {
    if d.backend.is_fleet() {
        return Err(PageError::NotFound(
            "Allow entries and sign-in records are kept on each site's own dashboard.".to_string(),
        ));
    }
    Ok(())
}

/// The checks every allow-list change needs after its CSRF token; returns the normalised
/// name and reason.
fn check_allow_form(
    d: &Dashboard,
    session: &Session,
    f: &AllowForm,
) -> Result<(String, String), PageError> {
    require_admin(session)?;
    not_on_the_fleet_dashboard(d)?;
    let name = crate::name::normalize(&f.name).map_err(|e| {
        PageError::BadRequest(format!("{:?} is not a domain name: {e}.", f.name.trim()))
    })?;
    let reason = f.reason.trim().to_string();
    if reason.is_empty() {
        return Err(PageError::BadRequest(
            "Please give a reason: it is recorded with your name.".into(),
        ));
    }
    if reason.chars().count() > MAX_REASON {
        return Err(PageError::BadRequest(format!(
            "A reason can be at most {MAX_REASON} characters."
        )));
    }
    if let Some(c) = reason.chars().find(|c| c.is_control()) {
        return Err(PageError::BadRequest(format!(
            "A reason is one line of text: it cannot hold the control character U+{:04X}.",
            u32::from(c)
        )));
    }
    Ok((name, reason))
}

async fn allow_add(
    State(d): State<Arc<Dashboard>>,
    SignedForm(session, f): SignedForm<AllowForm>,
) -> PageResult {
    let (name, reason) = check_allow_form(&d, &session, &f)?;
    let group = form_group(&d.engine().config, &f.group)?;
    add_allow_entry(&d, &session.user, &name, &reason, &f.until, group).await?;
    Ok(redirect(&format!(
        "/admin?done={}",
        pages::urlencode(&format!("{name} is now allowed."))
    )))
}

/// Allow `name` for `group` (`None`: every group) as `user`'s entry with `reason`, until
/// the end of the day `until` if one is given (`YYYY-MM-DD`). Refused for a name on a
/// locked list, one already allowed there, or when the trust keeps allow entries.
pub(crate) async fn add_allow_entry(
    d: &Dashboard,
    user: &str,
    name: &str,
    reason: &str,
    until: &str,
    group: Option<&str>,
) -> Result<(), PageError> {
    let engine = d.engine();
    if !engine.config.local_allow_permitted() {
        return Err(PageError::Forbidden(
            "The trust's policy keeps allow entries to the trust: ask the trust's admin to add \
             one (they are listed on the Policy page)."
                .to_string(),
        ));
    }
    // A locked (statutory) list always wins over an allow entry: refuse to pretend.
    if let Some(block) = engine
        .matcher
        .lookup(name, engine.matcher.all_categories())
        .block()
    {
        if block.locked {
            let categories = engine.matcher.category_names(block.categories);
            return Err(PageError::Conflict(format!(
                "{name} is on a statutory list ({categories}). Those sites stay blocked for everyone; \
                 no allow entry can unblock them."
            )));
        }
    }
    let now = SystemTime::now();
    let comment = match allow_until(until, now, localtime::zone(&engine.config))? {
        Some(end) => format!(
            "{} by {user} until {}: {reason}",
            rfc3339(now),
            rfc3339(end)
        ),
        None => format!("{} by {user}: {reason}", rfc3339(now)),
    };
    change_allow_file(d, user, group, |text| {
        if allow::entries(text).iter().any(|(n, _)| *n == name) {
            return Err(PageError::Conflict(format!("{name} is already allowed.")));
        }
        let change = AllowEdit::new("add", name, reason);
        Ok((allow::with_entry(text, name, &comment), vec![change]))
    })
    .await?;
    Ok(())
}

async fn allow_remove(
    State(d): State<Arc<Dashboard>>,
    SignedForm(session, f): SignedForm<AllowForm>,
) -> PageResult {
    let (name, reason) = check_allow_form(&d, &session, &f)?;
    let group = form_group(&d.engine().config, &f.group)?;
    change_allow_file(&d, &session.user, group, |text| {
        let after = allow::without_entry(text, &name).ok_or_else(|| {
            PageError::NotFound(format!("{name} is not in the dashboard's allow list."))
        })?;
        Ok((after, vec![AllowEdit::new("remove", &name, &reason)]))
    })
    .await?;
    Ok(redirect(&format!(
        "/admin?done={}",
        pages::urlencode(&format!("{name} is blocked again as its lists say."))
    )))
}
