//! The review report for the annual filtering review and the governors (DfE filtering and
//! monitoring standards): one self-contained, printable HTML page saying what is filtered
//! for whom, every change in the period with its author, reason and time, the outcomes
//! (blocks per category and month, reviews, serious blocks and how soon they were
//! reviewed, alerts delivered, requests to unblock a site and how they were decided), the self-test's history, allow entries over a year old,
//! and an honest coverage statement ([`coverage`]).
//!
//! [`gather`] reads the facts ([`facts`], the serving config, the lists, the self-test
//! history); [`render`] writes the page; [`pdf`] prints it through headless Chromium.
//! The governors' version ([`Options::governors`]) is counts, not names: no serious
//! block is listed, config diffs leave out `[[clients]]`, `[[devices]]` and
//! `[[users_to_groups]]` values, and any address, device or user name the audit log holds
//! is blanked from free text (an allow entry's reason, a diff).

pub mod coverage;
pub mod facts;
pub mod pdf;
pub mod period;
pub mod render;
pub mod trust;
pub mod trust_page;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use chrono_tz::Tz;

use self::facts::{MonthBlocks, SeriousBlock};
use crate::audit::records::AllowChange;
use crate::audit::{rfc3339, AuditError, Store};
use crate::engine::Engine;
use crate::selftest::history::RunSummary;

/// What to put in the report.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The start of the period (it ends now).
    pub since: SystemTime,
    /// The governors' version: counts, not names.
    pub governors: bool,
}

/// One group's filtering.
#[derive(Debug, Clone)]
pub struct GroupFacts {
    pub name: String,
    /// Blocked at all times, locked ones included.
    pub blocks: Vec<String>,
    pub required: Vec<String>,
    /// `weekdays 09:00-15:30: block social`.
    pub schedules: Vec<String>,
    pub safe_search: bool,
    pub youtube: String,
    pub circumvention: bool,
}

/// One category.
#[derive(Debug, Clone)]
pub struct CategoryFacts {
    pub name: String,
    pub description: String,
    pub locked: bool,
    pub alerts: bool,
}

/// One list: where it comes from, how big, how fresh.
#[derive(Debug, Clone)]
pub struct ListFacts {
    pub name: String,
    pub category: String,
    pub locked: bool,
    /// A file name, or a URL's scheme and host.
    pub source: String,
    pub entries: u64,
    pub updated: Option<SystemTime>,
    /// What is wrong, if anything (no copy yet, stale).
    pub problem: Option<String>,
}

/// A config change as the report shows it.
#[derive(Debug, Clone)]
pub struct ConfigChangeShown {
    pub at: String,
    pub why: String,
    pub diff: String,
}

/// The serious blocks in the period, counted.
#[derive(Debug, Clone, Default)]
pub struct SeriousSummary {
    pub events: usize,
    pub reviewed: usize,
    /// Hours from block to first review: the median and the longest.
    pub median_hours: Option<f64>,
    pub longest_hours: Option<f64>,
}

/// One check that failed in the period.
#[derive(Debug, Clone)]
pub struct FailureFacts {
    pub label: String,
    pub detail: String,
    pub first: String,
    pub last: String,
    pub runs: usize,
}

/// The self-test's period.
#[derive(Debug, Clone, Default)]
pub struct SelfTestFacts {
    pub runs: usize,
    pub failed_runs: usize,
    pub last: Option<RunSummary>,
    pub failures: Vec<FailureFacts>,
}

/// An allow entry added over a year ago.
#[derive(Debug, Clone)]
pub struct OldAllow {
    pub name: String,
    pub note: String,
}

/// Everything the report says.
#[derive(Debug, Clone)]
pub struct Report {
    pub organisation: String,
    pub generated: SystemTime,
    pub since: SystemTime,
    pub tz: Tz,
    pub governors: bool,
    pub groups: Vec<GroupFacts>,
    pub categories: Vec<CategoryFacts>,
    pub lists: Vec<ListFacts>,
    pub allow_changes: Vec<AllowChange>,
    pub config_changes: Vec<ConfigChangeShown>,
    pub months: Vec<MonthBlocks>,
    pub reviews: Vec<(String, i64)>,
    /// Listed in the lead's version only (empty in the governors').
    pub serious: Vec<SeriousBlock>,
    pub serious_summary: SeriousSummary,
    pub serious_categories: Vec<String>,
    /// (kind, result, messages).
    pub deliveries: Vec<(String, String, i64)>,
    /// Requests to unblock a site from the block page: (state, count).
    pub requests: Vec<(String, i64)>,
    pub selftest: SelfTestFacts,
    pub old_allow: Vec<OldAllow>,
    /// The trust's policy applied here (with `[fleet]`).
    pub trust_policy: Option<TrustPolicy>,
}

/// The trust's policy as applied at this site.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    pub version: String,
    /// (allow or deny, name, its version, time, author and reason).
    pub entries: Vec<(String, String, String)>,
}

/// Gather the report for `engine`'s config from `store`, at `now`.
pub fn gather(
    engine: &Engine,
    store: &Store,
    options: Options,
    now: SystemTime,
) -> Result<Report, AuditError> {
    let config = &engine.config;
    let since = rfc3339(options.since);
    let serious_categories: Vec<String> = config
        .categories
        .iter()
        .filter(|(name, c)| c.alerts(name))
        .map(|(name, _)| name.clone())
        .collect();
    let serious = facts::serious_blocks(store, &since, &serious_categories)?;
    let serious_summary = summarise(&serious);
    let mut report = Report {
        organisation: config.dashboard.organisation.clone(),
        generated: now,
        since: options.since,
        tz: crate::localtime::zone(config),
        governors: options.governors,
        groups: groups(engine),
        categories: categories(engine),
        lists: lists(engine, now),
        allow_changes: crate::audit::records::allow_changes_since(store, &since)?,
        config_changes: config_changes(store, &since, options.governors)?,
        months: facts::blocks_by_month(store, &since)?,
        reviews: facts::reviews_by_outcome(store, &since)?,
        serious: if options.governors {
            Vec::new()
        } else {
            serious
        },
        serious_summary,
        serious_categories,
        deliveries: facts::deliveries(store, &since)?,
        requests: crate::requests::counts_since(store, &since)?,
        selftest: selftest(store, &since)?,
        old_allow: old_allow(engine, now),
        trust_policy: trust_policy(engine),
    };
    if options.governors {
        let identifying = facts::identifying(store, &since)?;
        blank_identifying(&mut report, &identifying);
    }
    Ok(report)
}

/// Each group's filtering, from the snapshot's config (locked categories added).
fn groups(engine: &Engine) -> Vec<GroupFacts> {
    let config = &engine.config;
    let locked: Vec<String> = config
        .categories
        .iter()
        .filter(|(_, c)| c.locked)
        .map(|(n, _)| n.clone())
        .collect();
    let names = |v: &[toml::Spanned<String>]| -> Vec<String> {
        v.iter().map(|s| s.get_ref().clone()).collect()
    };
    let mut configured: Vec<(String, Option<&crate::config::GroupConfig>)> = config
        .groups
        .iter()
        .map(|(name, g)| (name.clone(), Some(g)))
        .collect();
    if configured.is_empty() {
        configured.push((config.server.default_group.get_ref().clone(), None));
    }
    configured
        .into_iter()
        .map(|(name, g)| {
            let mut blocks = g
                .map(|g| names(&g.block))
                .unwrap_or_else(|| config.categories.keys().cloned().collect());
            blocks.extend(locked.iter().cloned());
            blocks.sort();
            blocks.dedup();
            GroupFacts {
                name,
                blocks,
                required: g.map(|g| names(&g.required)).unwrap_or_default(),
                schedules: g
                    .map(|g| g.schedule.iter().map(schedule_words).collect())
                    .unwrap_or_default(),
                safe_search: g.is_some_and(|g| g.safe_search),
                youtube: g.map_or("off".to_string(), |g| {
                    format!("{:?}", g.youtube).to_lowercase()
                }),
                circumvention: g.is_none_or(|g| *g.circumvention.get_ref()),
            }
        })
        .collect()
}

/// `weekdays 09:00-15:30: block social, gaming; allow …`.
fn schedule_words(s: &crate::config::ScheduleConfig) -> String {
    let days: Vec<&str> = s.days.iter().map(|d| d.text.as_str()).collect();
    let list = |v: &[toml::Spanned<String>]| {
        v.iter()
            .map(|c| c.get_ref().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut words = format!("{} {}-{}", days.join(", "), s.from.get_ref(), s.to);
    if !s.block.is_empty() {
        words.push_str(&format!(": block {}", list(&s.block)));
    }
    if !s.allow.is_empty() {
        words.push_str(&format!("; allow {}", list(&s.allow)));
    }
    words
}

fn categories(engine: &Engine) -> Vec<CategoryFacts> {
    engine
        .config
        .categories
        .iter()
        .map(|(name, c)| CategoryFacts {
            name: name.clone(),
            description: c.description.clone(),
            locked: c.locked,
            alerts: c.alerts(name),
        })
        .collect()
}

/// Every block list with its source, size and freshness.
fn lists(engine: &Engine, now: SystemTime) -> Vec<ListFacts> {
    let config = &engine.config;
    let freshness = crate::sources::freshness(config, now);
    let stale = crate::sources::stale_lists(config, now);
    config
        .lists
        .iter()
        .map(|list| {
            let name = list.name.get_ref().clone();
            let loaded = engine.lists.iter().find(|l| l.name == name);
            let (source, updated) = match &list.url {
                Some(url) => (
                    crate::alerts::channel::shown_url(url.as_str()),
                    freshness
                        .iter()
                        .find(|f| f.list == name)
                        .and_then(|f| f.checked_at),
                ),
                None => {
                    let path = list.file(config);
                    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                    let file = path
                        .file_name()
                        .map_or(String::new(), |f| f.to_string_lossy().into_owned());
                    (format!("file {file}"), modified)
                }
            };
            let late = stale
                .iter()
                .find(|(l, _)| *l == name)
                .and_then(|(_, s)| s.as_ref());
            let problem = match (loaded.is_some_and(|l| l.missing), late) {
                (true, _) => Some("no copy yet: blocks nothing".to_string()),
                (false, Some(s)) => Some(format!(
                    "not refreshed within its max_age ({})",
                    humantime::format_duration(s.max_age)
                )),
                (false, None) => None,
            };
            ListFacts {
                locked: config
                    .categories
                    .get(list.category.get_ref())
                    .is_some_and(|c| c.locked),
                category: list.category.get_ref().clone(),
                name,
                source,
                entries: loaded.map_or(0, |l| l.report.accepted),
                updated,
                problem,
            }
        })
        .collect()
}

/// The config changes in the period; for the governors, each diff is taken again
/// between the two texts with who-is-who left out.
fn config_changes(
    store: &Store,
    since: &str,
    governors: bool,
) -> Result<Vec<ConfigChangeShown>, AuditError> {
    let changes = crate::config_history::with_texts(store, since)?;
    Ok(changes
        .into_iter()
        .map(|c| {
            let diff = match governors {
                false => c.diff,
                true => crate::config_history::diff(
                    &crate::config_history::anonymise(&c.before),
                    &crate::config_history::anonymise(&c.text),
                ),
            };
            ConfigChangeShown {
                at: c.at,
                why: c.why,
                diff,
            }
        })
        .collect())
}

/// How many serious blocks, how many reviewed, and how soon.
fn summarise(serious: &[SeriousBlock]) -> SeriousSummary {
    let hours = |b: &SeriousBlock| -> Option<f64> {
        let at = humantime::parse_rfc3339_weak(&b.at).ok()?;
        let reviewed = humantime::parse_rfc3339_weak(b.reviewed_at.as_deref()?).ok()?;
        Some(
            reviewed
                .duration_since(at)
                .unwrap_or_default()
                .as_secs_f64()
                / 3600.0,
        )
    };
    let mut waits: Vec<f64> = serious.iter().filter_map(hours).collect();
    waits.sort_by(f64::total_cmp);
    SeriousSummary {
        events: serious.len(),
        reviewed: serious.iter().filter(|b| b.reviewed_at.is_some()).count(),
        median_hours: waits.get(waits.len() / 2).copied(),
        longest_hours: waits.last().copied(),
    }
}

/// The self-test's runs in the period, and each check that failed in it.
fn selftest(store: &Store, since: &str) -> Result<SelfTestFacts, AuditError> {
    let runs = crate::selftest::history::recent(store, since, u32::MAX)?;
    let mut failures: BTreeMap<String, FailureFacts> = BTreeMap::new();
    // Oldest first, so `first` is the earliest and `detail` the latest.
    for run in runs.iter().rev() {
        for f in &run.failures {
            let entry = failures.entry(f.label()).or_insert_with(|| FailureFacts {
                label: f.label(),
                detail: String::new(),
                first: run.at.clone(),
                last: String::new(),
                runs: 0,
            });
            entry.detail = f.detail.clone();
            entry.last = run.at.clone();
            entry.runs += 1;
        }
    }
    Ok(SelfTestFacts {
        runs: runs.len(),
        failed_runs: runs.iter().filter(|r| !r.ok()).count(),
        last: runs.first().cloned(),
        failures: failures.into_values().collect(),
    })
}

/// The trust's policy as applied here, entry by entry.
fn trust_policy(engine: &Engine) -> Option<TrustPolicy> {
    let (version, files) = crate::fleet::policy::applied_here(&engine.config)?;
    let entries = files
        .iter()
        .flat_map(|(file, text)| {
            let kind = if file.starts_with("allow") {
                "allow"
            } else {
                "deny"
            };
            crate::dashboard::allow::entries(text)
                .into_iter()
                .map(move |(name, note)| (kind.to_string(), name, note))
        })
        .collect();
    Some(TrustPolicy { version, entries })
}

/// The dashboard's allow entries added over a year before `now`.
fn old_allow(engine: &Engine, now: SystemTime) -> Vec<OldAllow> {
    const YEAR: Duration = Duration::from_secs(365 * 86_400);
    let path = engine.config.resolve(&engine.config.dashboard.allow_file);
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    crate::dashboard::allow::entries(&text)
        .into_iter()
        .filter(|(_, note)| {
            crate::dashboard::allow::added(note)
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() > YEAR)
        })
        .map(|(name, note)| OldAllow { name, note })
        .collect()
}

/// Blanks the values that say who asked (addresses, devices, MACs, user names) out of
/// free text, case-insensitively, the longest match first. Values under three
/// characters are left: they would blank ordinary words.
pub(crate) struct Blanker {
    matcher: Option<aho_corasick::AhoCorasick>,
    values: usize,
}

impl Blanker {
    pub(crate) fn new(identifying: &[String]) -> Blanker {
        let values: Vec<&str> = identifying
            .iter()
            .map(String::as_str)
            .filter(|v| v.len() >= 3)
            .collect();
        let matcher = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&values)
            .ok()
            .filter(|_| !values.is_empty());
        Blanker {
            matcher,
            values: values.len(),
        }
    }

    pub(crate) fn blank(&self, text: &mut String) {
        if let Some(matcher) = &self.matcher {
            let replacements = vec!["(personal)"; self.values];
            *text = matcher.replace_all(text, &replacements);
        }
    }
}

/// Blank every value in `identifying` out of the report's free text.
fn blank_identifying(report: &mut Report, identifying: &[String]) {
    let blanker = Blanker::new(identifying);
    for change in &mut report.allow_changes {
        blanker.blank(&mut change.reason);
        blanker.blank(&mut change.name);
    }
    for change in &mut report.config_changes {
        blanker.blank(&mut change.diff);
    }
    for entry in &mut report.old_allow {
        blanker.blank(&mut entry.note);
    }
    if let Some(policy) = &mut report.trust_policy {
        for (_, _, note) in &mut policy.entries {
            blanker.blank(note);
        }
    }
}
