//! The block page: with `[blocking] response = "ip"`, blocked names resolve to the
//! `block_ip` address, and a browser that follows lands here (`[dashboard] block_page`,
//! e.g. `"192.168.1.2:80"`). The page says the site was blocked under the organisation's
//! e-safety policy, in which category, whom to ask, and the category's signposting text
//! (e.g. support lines for self-harm).
//!
//! The blocked name comes from the request's `Host` header; the reason is looked up in the
//! current rules for the asking device's group, so the page agrees with the DNS answer.
//! Only plain HTTP can be answered: an HTTPS site cannot be impersonated without a
//! certificate, so browsers show their own error for those.
//!
//! For a category that is not locked the page also offers "I think this was blocked
//! wrongly" ([`request`]): a short form filed as a request for the admin.

pub mod reason;
pub mod request;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use maud::{html, Markup, DOCTYPE};

use self::reason::{host_of, reason, Reason};
use self::request::{offers_form, PageState};
use crate::audit::Store;
use crate::dns::limit::RateLimiter;
use crate::reload::Reloader;

/// Why the block page cannot start.
#[derive(Debug, thiserror::Error)]
#[error("[dashboard] block_page {addr}: cannot bind: {source}")]
pub(crate) struct BlockPageError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Bind `addr` and serve the block page until `stop`, filing requests in `store` (none:
/// no form). Returns the bound address.
pub async fn start(
    addr: SocketAddr,
    reloader: Arc<Reloader>,
    store: Option<Store>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<SocketAddr, BlockPageError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BlockPageError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| BlockPageError { addr, source })?;
    let state = PageState {
        reloader,
        store: store.map(|s| Arc::new(Mutex::new(s))),
        limiter: Arc::new(RateLimiter::new()),
    };
    let app = Router::new()
        .route("/request", post(request::submit))
        .fallback(page)
        .layer(axum::extract::DefaultBodyLimit::max(request::BODY_LIMIT))
        .with_state(state)
        .layer(axum::middleware::map_response(
            crate::dashboard::security_headers,
        ))
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "block page listener failed");
        }
    });
    Ok(bound)
}

async fn page(
    State(state): State<PageState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let engine = state.reloader.current();
    let reason =
        host_of(&headers).and_then(|name| reason(&engine, &name, peer.ip().to_canonical()));
    let dashboard = &engine.config.dashboard;
    let form = offers_form(&state, reason.as_ref());
    let body = render(
        reason.as_ref(),
        &dashboard.organisation,
        &dashboard.contact,
        form,
    );
    // 403 with a page: the browser shows it, and nothing caches it as the site.
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body.into_string(),
    )
        .into_response()
}

/// The page for `reason` (or a general one), with the request form if `form`.
pub fn render(reason: Option<&Reason>, organisation: &str, contact: &str, form: bool) -> Markup {
    let policy = if organisation.is_empty() {
        "this network's e-safety policy".to_string()
    } else {
        format!("{organisation}'s e-safety policy")
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Site blocked" }
            }
            body {
                main {
                    h1 { "This site is blocked" }
                    @match reason {
                        Some(r) => {
                            p { strong { (r.name) } " is blocked under " (policy) "." }
                            @for (category, description, signpost) in &r.categories {
                                h2 { "Category: " (category) }
                                @if !description.is_empty() { p { (description) } }
                                @if !signpost.is_empty() { p { strong { "Help: " } (signpost) } }
                            }
                        }
                        None => { p { "The site you asked for is blocked under " (policy) "." } }
                    }
                    @if reason.is_some_and(|r| r.locked) {
                        p { "This site is on a list the law requires every school to block, so it cannot be unblocked on request. If you want to talk about it, speak to " (contact) "." }
                    } @else {
                        p { "If you think this is a mistake, or you need this site for your work, ask " (contact) "." }
                    }
                    @if form { (request::form()) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reason::strip_port;
    use super::*;

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(strip_port("a.test:8080"), "a.test");
        assert_eq!(strip_port("a.test"), "a.test");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }

    #[test]
    fn the_page_names_the_site_category_help_and_contact() {
        let reason = Reason {
            name: "harm.test".into(),
            locked: false,
            categories: vec![(
                "self-harm".into(),
                "Self-harm and suicide promotion".into(),
                "Samaritans: call 116 123".into(),
            )],
        };
        let page = render(
            Some(&reason),
            "Hillside School",
            "Ms Patel, the e-safety lead",
            true,
        )
        .into_string();
        for expected in [
            "harm.test",
            "Hillside School's e-safety policy",
            "Category: self-harm",
            "Samaritans: call 116 123",
            "Ms Patel, the e-safety lead",
            "Think this was blocked wrongly?",
        ] {
            assert!(page.contains(expected), "{expected} missing from {page}");
        }
    }
}
