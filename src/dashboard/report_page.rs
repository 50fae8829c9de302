//! The review report on the dashboard (`/report`): the page `warden report` writes
//! ([`crate::report`]), for the period asked (`?since=12m`). A governor always gets the
//! governors' version (counts, not names); the lead and the admin get the full one, or
//! the governors' with `?governors=yes`. The page prints to A4 from the browser. On the
//! trust's dashboard (`warden fleet serve`) it is the trust's report ([`trust`]) over the
//! sites the user sees.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use maud::PreEscaped;

use super::backend::BackendError;
use super::extract::Signed;
use super::state::{html, PageResult};
use super::{Dashboard, PageError};
use crate::report::{period, render, trust, trust_page, Options};

#[derive(serde::Deserialize)]
pub(super) struct ReportQuery {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    governors: Option<String>,
}

pub(super) async fn page(
    State(d): State<Arc<Dashboard>>,
    Signed(session): Signed,
    parsed: Result<Query<ReportQuery>, QueryRejection>,
) -> PageResult {
    let asked = super::query(parsed)?;
    let engine = d.engine();
    let now = SystemTime::now();
    let tz = crate::localtime::zone(&engine.config);
    let since_text = asked.since.unwrap_or_else(|| "12m".to_string());
    let since =
        period::since(&since_text, now, tz).map_err(|e| PageError::BadRequest(e.to_string()))?;
    let wants_governors = asked
        .governors
        .is_some_and(|g| matches!(g.as_str(), "yes" | "1" | "true" | "on"));
    let options = Options {
        since,
        governors: wants_governors || !session.role.sees_people(),
    };
    let nav = render::Nav {
        since: since_text,
        may_choose: session.role.sees_people(),
    };
    let page = match d.backend.central() {
        // The trust's dashboard: the sites this user sees, from the central store.
        Some(central) => {
            let scope = d.scope(&session);
            let report = trust::gather(central, &engine.config, &scope, options, now)
                .await
                .map_err(BackendError::from)?;
            trust_page::page(&report, Some(&nav))
        }
        None => {
            let report = d
                .db(move |store| crate::report::gather(&engine, store, options, now))
                .await?;
            render::page_with_nav(&report, Some(&nav))
        }
    };
    let mut response = html(PreEscaped(page));
    if let Ok(policy) = HeaderValue::from_str(&render::content_security_policy()) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    Ok(response)
}
