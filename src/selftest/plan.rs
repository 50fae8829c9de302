//! What one self-test checks, from the serving snapshot: for every group checked, each
//! category it blocks now or must block (its `required` ones and every locked one), its
//! safe search and YouTube setting, and the circumvention canary. Most checks are a
//! question to ask the listener and the answer expected; some are decided here without
//! asking (a required category the group does not block, a category with no name to ask
//! for, a locked list past its `max_age`).

use std::time::SystemTime;

use chrono::{DateTime, Utc};

use crate::config::{YouTubeMode, CIRCUMVENTION};
use crate::engine::Engine;
use crate::filter::CategorySet;
use crate::policy::{safe_search, Group};

/// The label of a group's safe-search check (`warden_selftest_ok{category=…}`).
pub const SAFE_SEARCH: &str = "safe-search";
/// The label of a group's YouTube restricted-mode check.
pub const YOUTUBE: &str = "youtube";
/// Firefox's canary: a group that blocks circumvention answers it NXDOMAIN.
const CIRCUMVENTION_CANARY: &str = "use-application-dns.net";
/// The names asked for safe search and YouTube.
const SEARCH_NAME: &str = "www.google.com";
const YOUTUBE_NAME: &str = "www.youtube.com";

/// What a check expects of the answer to its question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A block (EDE "Blocked") naming this category.
    Blocked { category: String },
    /// The built-in circumvention answer: NXDOMAIN, EDE "Filtered".
    Circumvention,
    /// A CNAME to the enforced host.
    Alias { target: &'static str },
}

/// One question for the listener: asked as `group`'s member, for `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub group: String,
    /// The category label the result is reported under.
    pub category: String,
    pub name: String,
    pub expect: Expect,
}

/// A check decided without asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub group: String,
    pub category: String,
    pub ok: bool,
    pub detail: String,
}

/// One planned check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    Ask(Question),
    Decided(Decided),
}

/// Every check of `engine` at `now` (`wall` is the same instant, for list ages).
pub fn plan(engine: &Engine, now: DateTime<Utc>, wall: SystemTime) -> Vec<Planned> {
    let config = &engine.config;
    let chosen = &config.selftest.groups;
    let stale = crate::sources::stale_lists(config, wall);
    let mut out = Vec::new();
    for group in &engine.policy.groups {
        if !chosen.is_empty() && !chosen.iter().any(|g| *g.get_ref() == group.name) {
            continue;
        }
        let active = engine.policy.active(group, now);
        for category in categories_checked(engine, group, active) {
            out.push(category_check(engine, group, active, &category));
            for (list, late) in &stale {
                let Some(late) = late else { continue };
                if list_category(engine, list) == Some(category.as_str()) {
                    out.push(Planned::Decided(Decided {
                        group: group.name.clone(),
                        category: category.clone(),
                        ok: false,
                        detail: format!(
                            "the locked list {list:?} has not been refreshed for {} (max_age {})",
                            age_words(late.age),
                            humantime::format_duration(late.max_age)
                        ),
                    }));
                }
            }
        }
        out.extend(search_checks(group));
        out.extend(circumvention_check(engine, group, active));
    }
    out
}

/// The categories checked for `group`: those it blocks now, those required of it, and
/// the locked ones; circumvention only if it has a list (its built-in answers are a
/// check of their own).
fn categories_checked(engine: &Engine, group: &Group, active: CategorySet) -> Vec<String> {
    let matcher = &engine.matcher;
    let required = required_of(engine, &group.name);
    let mut names: Vec<String> = matcher
        .categories()
        .iter()
        .map(|c| c.name.to_string())
        .filter(|name| {
            let on = matcher
                .category_id(name)
                .is_some_and(|id| active.contains(id));
            on || required.contains(name)
        })
        .filter(|name| name != CIRCUMVENTION || has_lists(engine, name))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// What the organisation requires `group` to block: its `required` categories and every
/// locked one.
fn required_of(engine: &Engine, group: &str) -> Vec<String> {
    let config = &engine.config;
    let mut required: Vec<String> = config
        .groups
        .get(group)
        .map(|g| g.required.iter().map(|c| c.get_ref().clone()).collect())
        .unwrap_or_default();
    required.extend(
        config
            .categories
            .iter()
            .filter(|(_, c)| c.locked)
            .map(|(name, _)| name.clone()),
    );
    required
}

/// The check of one category for `group`.
fn category_check(engine: &Engine, group: &Group, active: CategorySet, category: &str) -> Planned {
    let decided = |ok: bool, detail: String| {
        Planned::Decided(Decided {
            group: group.name.clone(),
            category: category.to_string(),
            ok,
            detail,
        })
    };
    let on = engine
        .matcher
        .category_id(category)
        .is_some_and(|id| active.contains(id));
    if !on {
        return decided(
            false,
            format!(
                "group {:?} does not block {category:?} now, and it is required to",
                group.name
            ),
        );
    }
    match canary(engine, group, active, category) {
        Some(name) => Planned::Ask(Question {
            group: group.name.clone(),
            category: category.to_string(),
            name,
            expect: Expect::Blocked {
                category: category.to_string(),
            },
        }),
        None if entries(engine, category) > 0 => decided(
            false,
            format!(
                "no name to check {category:?} with: its lists are hashed; set \
                 [categories.{category}] canary to a test name the list's provider gives"
            ),
        ),
        None => decided(
            false,
            format!("the lists of {category:?} have no entries: nothing is blocked in it"),
        ),
    }
}

/// The name asked to check `category`: the configured canary, else a name from its
/// lists, preferring one the snapshot blocks for `group` (a name an allow entry lets
/// through says nothing about the category).
fn canary(engine: &Engine, group: &Group, active: CategorySet, category: &str) -> Option<String> {
    if let Some(canary) = engine
        .config
        .categories
        .get(category)
        .and_then(|c| c.canary.as_ref())
    {
        return Some(canary.get_ref().trim_end_matches('.').to_ascii_lowercase());
    }
    let samples: Vec<&String> = engine
        .lists
        .iter()
        .filter(|l| l.category.as_deref() == Some(category))
        .flat_map(|l| l.report.samples.iter())
        .collect();
    let blocked_here = |name: &&&String| {
        let verdict = engine.matcher.lookup(name, active);
        verdict.block().is_some_and(|b| {
            !group.allows(name, b)
                && engine
                    .matcher
                    .category_names(b.categories)
                    .split(',')
                    .any(|c| c == category)
        })
    };
    samples
        .iter()
        .find(blocked_here)
        .or(samples.first())
        .map(|s| s.to_string())
}

/// The entries loaded into `category`'s lists.
fn entries(engine: &Engine, category: &str) -> u64 {
    engine
        .lists
        .iter()
        .filter(|l| l.category.as_deref() == Some(category))
        .map(|l| l.report.accepted)
        .sum()
}

/// Whether any configured list is in `category`.
fn has_lists(engine: &Engine, category: &str) -> bool {
    engine
        .config
        .lists
        .iter()
        .any(|l| l.category.get_ref() == category)
}

/// The category of the list named `list`.
fn list_category<'e>(engine: &'e Engine, list: &str) -> Option<&'e str> {
    engine
        .config
        .lists
        .iter()
        .find(|l| l.name.get_ref() == list)
        .map(|l| l.category.get_ref().as_str())
}

/// Safe search, YouTube and the circumvention canary, as `group` has them on.
fn search_checks(group: &Group) -> Vec<Planned> {
    let ask = |category: &str, name: &str, expect: Expect| {
        Planned::Ask(Question {
            group: group.name.clone(),
            category: category.to_string(),
            name: name.to_string(),
            expect,
        })
    };
    let mut out = Vec::new();
    if group.safe_search {
        if let Some(target) = safe_search::target(SEARCH_NAME, true, YouTubeMode::Off) {
            out.push(ask(SAFE_SEARCH, SEARCH_NAME, Expect::Alias { target }));
        }
    }
    if group.youtube != YouTubeMode::Off {
        if let Some(target) = safe_search::target(YOUTUBE_NAME, false, group.youtube) {
            out.push(ask(YOUTUBE, YOUTUBE_NAME, Expect::Alias { target }));
        }
    }
    out
}

/// The circumvention canary's check, if `group` blocks circumvention now (`active`).
fn circumvention_check(engine: &Engine, group: &Group, active: CategorySet) -> Option<Planned> {
    let id = engine.matcher.category_id(CIRCUMVENTION)?;
    active.contains(id).then(|| {
        Planned::Ask(Question {
            group: group.name.clone(),
            category: CIRCUMVENTION.to_string(),
            name: CIRCUMVENTION_CANARY.to_string(),
            expect: Expect::Circumvention,
        })
    })
}

/// `3 days 4h`, or `ever` for a list never refreshed.
fn age_words(age: std::time::Duration) -> String {
    if age == std::time::Duration::MAX {
        return "ever (never refreshed)".to_string();
    }
    humantime::format_duration(std::time::Duration::from_secs(age.as_secs() / 60 * 60)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// An engine over an adult list (`adult`), a hashed locked terrorism list, an allow
    /// list (`allow`), and `extra` config (inside `[categories.terrorism]` at first).
    fn build(adult: &str, allow: &str, extra: &str) -> (tempfile::TempDir, Engine) {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("adult.txt"), adult).unwrap();
        std::fs::write(dir.path().join("allow.txt"), allow).unwrap();
        let hash = hex::encode(sha2::Sha256::digest(b"locked.test"));
        std::fs::write(dir.path().join("ctiru.txt"), format!("sha256:{hash}\n")).unwrap();
        let config = format!(
            "[categories.adult]\n[categories.terrorism]\nlocked = true\n{extra}\
             [[lists]]\nname = \"adult\"\ncategory = \"adult\"\npath = \"adult.txt\"\n\
             [[lists]]\nname = \"ctiru\"\ncategory = \"terrorism\"\npath = \"ctiru.txt\"\n\
             [[allow]]\nname = \"allow\"\npath = \"allow.txt\"\n"
        );
        let path = dir.path().join("w.toml");
        std::fs::write(&path, config).unwrap();
        let engine = Engine::load(&path).unwrap();
        (dir, engine)
    }

    fn checks(engine: &Engine) -> Vec<Planned> {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap();
        plan(engine, now, SystemTime::from(now))
    }

    fn asked(p: &[Planned], group: &str, category: &str) -> Option<String> {
        p.iter().find_map(|c| match c {
            Planned::Ask(q) if q.group == group && q.category == category => Some(q.name.clone()),
            _ => None,
        })
    }

    fn failed(p: &[Planned], group: &str, category: &str) -> Option<String> {
        p.iter().find_map(|c| match c {
            Planned::Decided(d) if d.group == group && d.category == category && !d.ok => {
                Some(d.detail.clone())
            }
            _ => None,
        })
    }

    #[test]
    fn each_group_is_checked_for_what_it_blocks_and_what_is_required_of_it() {
        let extra =
            "[groups.default]\nblock = [\"adult\"]\nsafe_search = true\nyoutube = \"strict\"\n\
                     [groups.staff]\nrequired = [\"adult\"]\ncircumvention = false\n";
        let (_dir, engine) = build("a.test\nb.test\n", "", extra);
        let p = checks(&engine);
        assert_eq!(asked(&p, "default", "adult").as_deref(), Some("a.test"));
        assert_eq!(
            asked(&p, "default", SAFE_SEARCH).as_deref(),
            Some(SEARCH_NAME)
        );
        assert_eq!(asked(&p, "default", YOUTUBE).as_deref(), Some(YOUTUBE_NAME));
        assert_eq!(
            asked(&p, "default", CIRCUMVENTION).as_deref(),
            Some(CIRCUMVENTION_CANARY)
        );
        // Staff: adult is required but not blocked; circumvention is off, so not asked.
        let detail = failed(&p, "staff", "adult").unwrap();
        assert!(detail.contains("does not block \"adult\""), "{detail}");
        assert_eq!(asked(&p, "staff", CIRCUMVENTION), None);
        assert_eq!(asked(&p, "staff", SAFE_SEARCH), None);
        // The locked category is checked for every group; a hashed list gives no name.
        for group in ["default", "staff"] {
            let detail = failed(&p, group, "terrorism").unwrap();
            assert!(detail.contains("hashed"), "{detail}");
        }
    }

    #[test]
    fn a_configured_canary_wins_and_a_sample_an_allow_entry_lets_through_is_passed_over() {
        let (_dir, engine) = build("first.test\nsecond.test\n", "first.test\n", "");
        let p = checks(&engine);
        assert_eq!(
            asked(&p, "default", "adult").as_deref(),
            Some("second.test")
        );
        // A canary for the hashed locked list: asked, not failed beforehand.
        let (_dir, engine) = build("first.test\n", "", "canary = \"Locked.Test.\"\n");
        let p = checks(&engine);
        assert_eq!(
            asked(&p, "default", "terrorism").as_deref(),
            Some("locked.test")
        );
        assert_eq!(failed(&p, "default", "terrorism"), None);
        // An empty list is said to be empty, not hashed.
        let (_dir, engine) = build("", "", "");
        let detail = failed(&checks(&engine), "default", "adult").unwrap();
        assert!(detail.contains("no entries"), "{detail}");
    }
}
