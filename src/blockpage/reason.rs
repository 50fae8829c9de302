//! Why a name is blocked for a device, as the block page says it and as a request to
//! unblock it is filed: looked up in the current rules for the device's group, so the
//! page agrees with the DNS answer.

use axum::http::{header, HeaderMap};

/// What the page says about one blocked name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reason {
    pub name: String,
    /// A category of the deciding rule is locked: no request can unblock it.
    pub locked: bool,
    /// (category, description, signpost) for each category of the deciding rule.
    pub categories: Vec<(String, String, String)>,
}

/// `host[:port]` or `[v6]:port` → host.
pub(crate) fn strip_port(host: &str) -> &str {
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
    // As the DNS answer has it: a group's own allow entry (an approved request) lets
    // the name through; its own deny lists block it.
    let block = verdict.block().filter(|b| !who.group.allows(name, b))?;
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
        locked: block.locked,
        categories,
    })
}

/// The blocked name the browser asked for: the request's `Host`, normalised.
pub(crate) fn host_of(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    crate::name::normalize(strip_port(host)).ok()
}
