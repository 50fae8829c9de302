//! "I think this was blocked wrongly" on the block page: the form the page shows (for a
//! category that is not locked), and `POST /request`, which files what the person wrote
//! as a request ([`crate::requests`]) for the site their browser asked for (the `Host`
//! header) with their device, group and the category, for the admin to decide on the
//! dashboard. Nobody signs in: each device may file [`BURST`] at once and one more a
//! minute after, a body is at most [`BODY_LIMIT`], and a locked category takes no
//! request at all (the page says whom to speak to; the block stays in the audit log).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::{html, Markup, DOCTYPE};

use super::reason::{host_of, reason, Reason};
use crate::audit::Store;
use crate::dns::limit::RateLimiter;
use crate::reload::Reloader;
use crate::requests::{self, NewRequest, RequestError};

/// Requests a device may file at once; then one a minute.
pub const BURST: f64 = 5.0;
const PER_SECOND: f64 = 1.0 / 60.0;
/// The largest form body taken.
pub const BODY_LIMIT: usize = 4 * 1024;

/// What the block page's handlers share.
#[derive(Clone)]
pub struct PageState {
    pub reloader: Arc<Reloader>,
    /// Where requests are filed (none: the audit log is off, and the form is not shown).
    pub store: Option<Arc<Mutex<Store>>>,
    pub limiter: Arc<RateLimiter<IpAddr>>,
}

/// The form's fields.
#[derive(serde::Deserialize)]
pub struct RequestForm {
    #[serde(default)]
    what: String,
    #[serde(default)]
    name: String,
}

/// Whether the page for `reason` offers the form: requests are kept, and no category
/// of the block is locked.
pub fn offers_form(state: &PageState, reason: Option<&Reason>) -> bool {
    state.store.is_some() && reason.is_some_and(|r| !r.locked)
}

/// The form.
pub fn form() -> Markup {
    html! {
        h2 { "Think this was blocked wrongly?" }
        form method="post" action="/request" {
            p {
                label for="what" { "What were you trying to do?" } br;
                textarea id="what" name="what" rows="3" cols="50" maxlength=(requests::MAX_WHAT) required {}
            }
            p {
                label for="name" { "Your name (optional)" } br;
                input id="name" name="name" type="text" maxlength=(requests::MAX_NAME);
            }
            button type="submit" { "Ask for it to be unblocked" }
        }
    }
}

/// What the page says to a request: the status, the heading and the text.
struct Reply(StatusCode, &'static str, String);

impl Reply {
    fn not_sent(status: StatusCode, text: &str) -> Reply {
        Reply(status, "Not sent", text.to_string())
    }
}

/// `POST /request`.
pub async fn submit(
    State(state): State<PageState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<RequestForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let engine = state.reloader.current();
    let dashboard = &engine.config.dashboard;
    let filed = match checked(&state, &engine, peer.ip().to_canonical(), &headers, form) {
        Ok((store, request)) => file(store, request, &dashboard.organisation).await,
        Err(reply) => Err(reply),
    };
    let Reply(status, heading, text) = filed.unwrap_or_else(|reply| reply);
    answer(status, page(heading, &text, &dashboard.contact))
}

/// The request `form` makes from `client` for the site in `headers`, with where to file
/// it; or why it is not taken (in the order a person would want to hear it).
fn checked(
    state: &PageState,
    engine: &crate::engine::Engine,
    client: IpAddr,
    headers: &HeaderMap,
    form: Result<Form<RequestForm>, axum::extract::rejection::FormRejection>,
) -> Result<(Arc<Mutex<Store>>, NewRequest), Reply> {
    let form = match form {
        Ok(Form(form)) => form,
        // Too long (413), not a form (415), unreadable (400).
        Err(rejection) => {
            return Err(Reply::not_sent(
                rejection.status(),
                "The form could not be read.",
            ));
        }
    };
    let Some(reason) = host_of(headers).and_then(|name| reason(engine, &name, client)) else {
        return Err(Reply::not_sent(
            StatusCode::BAD_REQUEST,
            "This site is not blocked for this device, so there is nothing to ask for.",
        ));
    };
    if reason.locked {
        let text = format!(
            "{} is on a list the law requires every school to block.",
            reason.name
        );
        return Err(Reply(
            StatusCode::FORBIDDEN,
            "This cannot be unblocked",
            text,
        ));
    }
    let store = state
        .store
        .clone()
        .ok_or_else(|| Reply::not_sent(StatusCode::NOT_FOUND, "Requests are not taken here."))?;
    if !state
        .limiter
        .allow(client, PER_SECOND, BURST, Instant::now())
    {
        return Err(Reply(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            "This device has sent several requests just now. Please wait a few minutes.".into(),
        ));
    }
    let (what, requester) = requests::checked_text(&form.what, &form.name)
        .map_err(|e| Reply::not_sent(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let who = engine.policy.who(client);
    let categories: Vec<&str> = reason
        .categories
        .iter()
        .map(|(c, _, _)| c.as_str())
        .collect();
    let request = NewRequest {
        client,
        device: who.device.map(str::to_string),
        group: who.group.name.clone(),
        site: reason.name.clone(),
        categories: categories.join(","),
        what,
        requester,
    };
    Ok((store, request))
}

/// File `request` in `store`: the page that says so, or why not.
async fn file(
    store: Arc<Mutex<Store>>,
    request: NewRequest,
    organisation: &str,
) -> Result<Reply, Reply> {
    let filed = tokio::task::spawn_blocking(move || {
        requests::file(&crate::sync::lock(&store), &request, SystemTime::now())
    })
    .await;
    let unrecorded = |error: &dyn std::fmt::Display| {
        tracing::warn!(%error, "a request from the block page could not be recorded");
        Reply::not_sent(StatusCode::SERVICE_UNAVAILABLE, "It could not be recorded.")
    };
    match filed {
        Ok(Ok(id)) => {
            tracing::info!(
                request = id,
                "a request to unblock a site was filed from the block page"
            );
            let to = match organisation {
                "" => "the people who run this network",
                org => org,
            };
            Ok(Reply(
                StatusCode::OK,
                "Request sent",
                format!(
                    "Your request (number {id}) has been sent to {to}. If it is agreed, the \
                     site will open for you."
                ),
            ))
        }
        Ok(Err(RequestError::Full)) => Err(Reply::not_sent(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many requests are waiting just now.",
        )),
        Ok(Err(error)) => Err(unrecorded(&error)),
        Err(error) => Err(unrecorded(&error)),
    }
}

/// A short page: `heading`, `text`, and whom to ask.
fn page(heading: &str, text: &str, contact: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (heading) } }
            body { main {
                h1 { (heading) }
                p { (text) }
                @if !contact.is_empty() { p { "You can also ask " (contact) "." } }
            } }
        }
    }
}

fn answer(status: StatusCode, body: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body.into_string(),
    )
        .into_response()
}
