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

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use maud::{html, Markup, DOCTYPE};

use crate::reload::Reloader;

/// Why the block page cannot start.
#[derive(Debug, thiserror::Error)]
#[error("[dashboard] block_page {addr}: cannot bind: {source}")]
pub(crate) struct BlockPageError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Bind `addr` and serve the block page until `stop`. Returns the bound address.
pub async fn start(
    addr: SocketAddr,
    reloader: Arc<Reloader>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<SocketAddr, BlockPageError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BlockPageError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| BlockPageError { addr, source })?;
    let app = Router::new()
        .fallback(page)
        .with_state(reloader)
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

/// What the page says about one blocked name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reason {
    pub name: String,
    /// (category, description, signpost) for each category of the deciding rule.
    pub categories: Vec<(String, String, String)>,
}

async fn page(
    State(reloader): State<Arc<Reloader>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let engine = reloader.current();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(strip_port)
        .unwrap_or("");
    let reason = crate::name::normalize(host)
        .ok()
        .and_then(|name| reason(&engine, &name, peer.ip()));
    let dashboard = &engine.config.dashboard;
    let body = render(reason.as_ref(), &dashboard.organisation, &dashboard.contact);
    // 403 with a page: the browser shows it, and nothing caches it as the site.
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body.into_string(),
    )
        .into_response()
}

/// `host[:port]` or `[v6]:port` → host.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Why `name` is blocked for `client`, or `None` if it is not (then the page stays
/// general: the device may have a stale DNS answer).
pub fn reason(
    engine: &crate::engine::Engine,
    name: &str,
    client: std::net::IpAddr,
) -> Option<Reason> {
    let who = engine.policy.who(client);
    let active = engine.policy.active_now(who.group);
    let verdict = engine.matcher.lookup(name, active);
    let block = verdict.block()?;
    let categories = block
        .categories
        .iter()
        .map(|id| {
            let category = engine.matcher.category(id).name.clone();
            let config = engine.config.categories.get(&category);
            (
                category,
                config.map(|c| c.description.clone()).unwrap_or_default(),
                config.map(|c| c.signpost.clone()).unwrap_or_default(),
            )
        })
        .collect();
    Some(Reason {
        name: name.to_string(),
        categories,
    })
}

/// The page for `reason` (or a general one).
pub fn render(reason: Option<&Reason>, organisation: &str, contact: &str) -> Markup {
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
                    p { "If you think this is a mistake, or you need this site for your work, ask " (contact) "." }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
        )
        .into_string();
        for expected in [
            "harm.test",
            "Hillside School's e-safety policy",
            "Category: self-harm",
            "Samaritans: call 116 123",
            "Ms Patel, the e-safety lead",
        ] {
            assert!(page.contains(expected), "{expected} missing from {page}");
        }
    }
}
