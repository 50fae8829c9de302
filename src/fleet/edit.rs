//! Changing the trust's policy: the checks every change goes through before it is
//! stored, whoever makes it (`warden fleet policy` or the trust dashboard's policy page).
//!
//! A change is checked against the trust's own config: the policy it makes is rendered
//! and parsed with that config by the same code as at a site (`Config::parse_with_policy`),
//! so a category or group that does not exist is refused here rather than found out at
//! every school; an allow entry for a name a locked list blocks is refused (it could
//! never take effect); a deny entry or a list cannot go into a locked category. Each site
//! checks every version again against its own config.

use std::collections::BTreeSet;
use std::path::Path;

use tokio_postgres::Client;

use super::connect::Settings;
use super::policy::{Change, Refused, State, Store, MAX_REASON};
use super::FleetError;
use crate::config::{site_name_problem, Config};
use crate::engine::Engine;

/// `text` trimmed, if it is fit to record as `what` (who or why): not empty, one line,
/// at most [`MAX_REASON`] characters.
pub fn check_text(what: &str, text: &str) -> Result<String, Refused> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Refused(format!(
            "{what} is needed: every change is recorded with who made it and why"
        )));
    }
    if text.chars().count() > MAX_REASON {
        return Err(Refused(format!(
            "{what} can be at most {MAX_REASON} characters"
        )));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(Refused(format!(
            "{what} is one line of text: it cannot hold the control character U+{:04X}",
            u32::from(c)
        )));
    }
    Ok(text.to_string())
}

/// A domain name as entries hold it (normalised), or why it is not one.
pub fn domain(name: &str) -> Result<String, Refused> {
    crate::name::normalize(name)
        .map_err(|e| Refused(format!("{:?} is not a domain name: {e}", name.trim())))
}

/// The sites a change names are names a site can have.
fn check_sites(change: &Change) -> Result<(), Refused> {
    let sites: &[String] = match change {
        Change::Allow { sites, .. }
        | Change::Deny { sites, .. }
        | Change::List { sites, .. }
        | Change::LocalAllow { sites, .. } => sites,
        _ => &[],
    };
    for site in sites {
        if let Some(problem) = site_name_problem(site) {
            return Err(Refused(format!("site: {problem}")));
        }
    }
    Ok(())
}

/// Whether the change needs the trust's lists loaded (to refuse an allow entry that a
/// locked list overrides).
pub fn needs_lists(change: &Change) -> bool {
    matches!(change, Change::Allow { .. })
}

/// Refuse a change that touches a locked category: an allow entry for a name a locked
/// list blocks (by `engine`, built from the trust's config and lists), a deny entry or a
/// list in a locked category.
fn check_locked(config: &Config, engine: Option<&Engine>, change: &Change) -> Result<(), Refused> {
    let is_locked = |c: &str| config.categories.get(c).is_some_and(|c| c.locked);
    match change {
        Change::Allow { name, .. } => {
            let Some(engine) = engine else {
                return Err(Refused(
                    "an allow entry is checked against the trust's locked lists, which are not loaded"
                        .to_string(),
                ));
            };
            let verdict = engine.matcher.lookup(name, engine.matcher.all_categories());
            match verdict.block().filter(|b| b.locked) {
                Some(block) => Err(Refused(format!(
                    "{name} is on a locked list ({}): those names stay blocked for every group \
                     at every site, and no allow entry can unblock them",
                    engine.matcher.category_names(block.categories)
                ))),
                None => Ok(()),
            }
        }
        Change::Deny {
            category: Some(category),
            ..
        }
        | Change::List { category, .. }
            if is_locked(category) =>
        {
            Err(Refused(format!(
                "{category} is a locked category: its lists come only from their own \
                 restricted source, not from the trust's entries"
            )))
        }
        Change::Settings { toml } => super::policy::settings_names(toml).map(drop),
        Change::Deny {
            category: None,
            groups,
            ..
        } if groups.is_empty() => Err(Refused(
            "a deny entry for every group needs a category (the groups that block it block \
             the name); or name groups for a group's own deny entry"
                .to_string(),
        )),
        _ => Ok(()),
    }
}

/// Check `change` (by `author`, for `reason`) against the trust's `config` (and, for an
/// allow entry, its lists in `engine`) and the policy as it stands, and store it as the
/// next version. The outer error is the database's; the inner one why it was refused.
pub async fn propose(
    client: &mut Client,
    settings: &Settings,
    config: &Config,
    engine: Option<&Engine>,
    author: &str,
    reason: &str,
    change: &Change,
) -> Result<Result<i64, Refused>, FleetError> {
    let checked = check_text("who", author)
        .and_then(|author| check_text("a reason", reason).map(|reason| (author, reason)))
        .and_then(|whys| check_sites(change).map(|()| whys))
        .and_then(|whys| check_locked(config, engine, change).map(|()| whys));
    let (author, reason) = match checked {
        Ok(whys) => whys,
        Err(refused) => return Ok(Err(refused)),
    };
    let text = match Config::local_text(&config.path) {
        Ok(text) => text,
        Err(e) => return Ok(Err(Refused(e.to_string()))),
    };
    let groups: BTreeSet<String> = config.groups.keys().cloned().collect();
    let path = config.path.clone();
    let check = |state: &State| -> Result<(), Refused> {
        let view = state.for_site(None, &groups);
        if let Some(note) = view.notes.first() {
            return Err(Refused(format!("{note} (in {})", path.display())));
        }
        view.check_names()?;
        let rendered = view.render(Path::new("fleet-policy-check"));
        Config::parse_with_policy(
            &text,
            &path,
            &rendered.sections,
            Path::new("(the new policy)"),
        )
        .map(drop)
        .map_err(|e| Refused(e.to_string()))
    };
    crate::fleet::central::migrate(client, settings).await?;
    let mut store = Store { client, settings };
    store.append(&author, &reason, change, check).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_and_why_are_one_line_of_text() {
        assert_eq!(check_text("a reason", "  lessons  ").unwrap(), "lessons");
        assert!(check_text("a reason", " ").is_err());
        assert!(check_text("a reason", "a\nb").is_err());
        assert!(check_text("a reason", &"x".repeat(MAX_REASON + 1)).is_err());
        assert!(domain("Example.ORG.").is_ok_and(|d| d == "example.org"));
        assert!(domain("not a name").is_err());
    }
}
