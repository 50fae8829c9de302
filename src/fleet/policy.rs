//! The trust's shared policy: allow entries, deny entries and extra lists by URL, set
//! once in the central store and followed by every site ([`super::follow`]).
//!
//! The store keeps *changes*, never a current state: each change is a new version
//! (`policy_changes`, append-only) with its author, reason and time. The policy at
//! version V, or at any past time, is the fold of the changes up to it ([`State`]), so
//! "what was allowed at this school on 14 March, and who decided it" always has an
//! answer, and history, show and diff all read the same rows.
//!
//! A site turns the policy into config sections ([`SiteView::render`]): the entries as
//! list files and a `policy.toml` that names them, read with the site's own config by
//! the same parser and checks as any config file (see `Config::parse_with_policy`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::connect::Settings;
use super::FleetError;
use crate::config::Format;

/// The channel a new version is announced on (its payload: the version).
pub const CHANNEL: &str = "warden_policy";

/// Serialises writers, so versions become visible in the order they are numbered (a
/// site that has read version 12 never later finds an 11 it missed).
const POLICY_LOCK: i64 = 0x5761_7264_656e_0002;

/// The longest reason kept with a change.
pub const MAX_REASON: usize = 500;

/// One change to the policy, as stored (JSON in `policy_changes.change`). A site that
/// meets a kind or a field it does not know refuses that version (and says to upgrade)
/// rather than apply part of it: an unknown field may be what narrows an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Change {
    /// Allow `name` (and its subdomains) wherever no locked list blocks it.
    Allow {
        name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sites: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        groups: Vec<String>,
    },
    /// Remove the allow entry for `name`.
    Unallow { name: String },
    /// Block `name` (and its subdomains): under `category` for every group that blocks
    /// it, or for the named groups only (as their own deny list).
    Deny {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sites: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        groups: Vec<String>,
    },
    /// Remove the deny entry for `name`.
    Undeny { name: String },
    /// A block list downloaded from `url` at each site, in `category`.
    List {
        name: String,
        category: String,
        url: String,
        #[serde(default)]
        format: Format,
        #[serde(default)]
        min_entries: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sites: Vec<String>,
    },
    /// Remove the list called `name`.
    Unlist { name: String },
    /// The trust's categories and groups (`[categories.NAME]` and `[groups.NAME]` tables
    /// as in a config file), replacing the previous ones; empty: none. Every site reads
    /// them with its own config, which may add categories and groups of its own but
    /// cannot define these again (that is a conflict: the version is refused there).
    Settings { toml: String },
    /// Whether site admins may add allow entries of their own on their site's dashboard:
    /// at the named sites, or (none named) wherever no site-specific setting says.
    LocalAllow {
        allowed: bool,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sites: Vec<String>,
    },
}

impl Change {
    /// One line for history and errors: `allow example.org (sites: a, b)`.
    pub fn describe(&self) -> String {
        let scope = |sites: &[String], groups: &[String]| {
            let mut parts = Vec::new();
            if !sites.is_empty() {
                parts.push(format!("sites: {}", sites.join(", ")));
            }
            if !groups.is_empty() {
                parts.push(format!("groups: {}", groups.join(", ")));
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!(" ({})", parts.join("; "))
            }
        };
        match self {
            Change::Allow {
                name,
                sites,
                groups,
            } => format!("allow {name}{}", scope(sites, groups)),
            Change::Unallow { name } => format!("remove allow {name}"),
            Change::Deny {
                name,
                category,
                sites,
                groups,
            } => {
                let under = category
                    .as_ref()
                    .map(|c| format!(" as {c}"))
                    .unwrap_or_default();
                format!("deny {name}{under}{}", scope(sites, groups))
            }
            Change::Undeny { name } => format!("remove deny {name}"),
            Change::List {
                name,
                category,
                url,
                sites,
                ..
            } => format!(
                "list {name} ({category}) from {}{}",
                shown_url(url),
                scope(sites, &[])
            ),
            Change::Unlist { name } => format!("remove list {name}"),
            Change::Settings { toml } => match settings_names(toml) {
                Ok(names) if names.is_empty() => "settings cleared".to_string(),
                Ok(names) => format!("settings: {}", names.join(", ")),
                Err(_) => "settings (unreadable)".to_string(),
            },
            Change::LocalAllow { allowed, sites } => format!(
                "local allow entries {}{}",
                if *allowed {
                    "permitted"
                } else {
                    "not permitted"
                },
                scope(sites, &[])
            ),
        }
    }
}

/// The tables the trust's settings define (`categories.adult`, `groups.staff`, …), or why
/// the text is not settings: TOML holding only `[categories.NAME]` and `[groups.NAME]`.
pub fn settings_names(toml: &str) -> Result<Vec<String>, Refused> {
    let first = toml
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    if first.is_some_and(|l| !l.starts_with('[')) {
        return Err(Refused(
            "the settings begin with a table header ([categories.NAME] or [groups.NAME]): \
             they are read after a site's own config"
                .to_string(),
        ));
    }
    let table: toml::Table = toml::from_str(toml)
        .map_err(|e| Refused(format!("the settings are not TOML: {}", e.message().trim())))?;
    let mut names = Vec::new();
    for (section, value) in &table {
        if section != "categories" && section != "groups" {
            return Err(Refused(format!(
                "the settings hold [{section}]: the trust's settings are [categories.NAME] and \
                 [groups.NAME] tables only (everything else is each site's own)"
            )));
        }
        let Some(entries) = value.as_table() else {
            return Err(Refused(format!(
                "{section} must be tables: [{section}.NAME]"
            )));
        };
        for (name, entry) in entries {
            if !entry.is_table() {
                return Err(Refused(format!(
                    "{section}.{name} must be a table: [{section}.{name}]"
                )));
            }
            names.push(format!("{section}.{name}"));
        }
    }
    Ok(names)
}

/// A URL as it may be shown: no user info, query or fragment (a feed's token).
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

/// One stored version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub version: i64,
    pub at: SystemTime,
    pub author: String,
    pub reason: String,
    pub change: Change,
}

/// Who made an entry, when and why: kept with every entry in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub version: i64,
    pub at: SystemTime,
    pub author: String,
    pub reason: String,
}

impl Origin {
    /// `v12 by j.smith: reason`, ending each line of `show`.
    fn tail(&self) -> String {
        format!("v{} by {}: {}", self.version, self.author, self.reason)
    }
}

/// An allow or deny entry in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub origin: Origin,
    pub category: Option<String>,
    pub sites: Vec<String>,
    pub groups: Vec<String>,
}

/// A list by URL in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub origin: Origin,
    pub category: String,
    pub url: String,
    pub format: Format,
    pub min_entries: u64,
    pub sites: Vec<String>,
}

impl ListEntry {
    /// The list a `List` change adds (`None` for any other change).
    fn from_change(change: &Change, origin: Origin) -> Option<ListEntry> {
        let Change::List {
            category,
            url,
            format,
            min_entries,
            sites,
            ..
        } = change
        else {
            return None;
        };
        Some(ListEntry {
            origin,
            category: category.clone(),
            url: url.clone(),
            format: *format,
            min_entries: *min_entries,
            sites: sites.clone(),
        })
    }
}

/// The policy as it stands after some version: the fold of every change up to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The last version folded in (0: none).
    pub version: i64,
    pub allow: BTreeMap<String, Entry>,
    pub deny: BTreeMap<String, Entry>,
    pub lists: BTreeMap<String, ListEntry>,
    /// Whether sites' own allow entries are permitted: everywhere (until a change says,
    /// they are), and at particular sites.
    pub local_allow: Option<(bool, Origin)>,
    pub local_allow_at: BTreeMap<String, (bool, Origin)>,
    /// The trust's categories and groups, as TOML (see [`Change::Settings`]).
    pub settings: Option<(String, Origin)>,
}

/// Why a change cannot be made to a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl State {
    /// The state after `records` (in version order).
    pub fn fold<'a>(records: impl IntoIterator<Item = &'a Record>) -> State {
        let mut state = State::default();
        for record in records {
            state.apply(record);
        }
        state
    }

    /// Whether `change` makes sense on this state (it adds what is not there, removes
    /// what is): checked before a change is stored.
    pub fn admits(&self, change: &Change) -> Result<(), Refused> {
        let fail = |m: String| Err(Refused(m));
        match change {
            Change::Allow { name, .. } if self.allow.contains_key(name) => fail(format!(
                "{name} is already allowed by the trust's policy (remove it first to change its scope)"
            )),
            Change::Deny { name, .. } if self.deny.contains_key(name) => fail(format!(
                "{name} is already denied by the trust's policy (remove it first to change its scope)"
            )),
            Change::List { name, .. } if self.lists.contains_key(name) => fail(format!(
                "the trust's policy already has a list called {name}"
            )),
            Change::Unallow { name } if !self.allow.contains_key(name) => {
                fail(format!("{name} is not allowed by the trust's policy"))
            }
            Change::Undeny { name } if !self.deny.contains_key(name) => {
                fail(format!("{name} is not denied by the trust's policy"))
            }
            Change::Unlist { name } if !self.lists.contains_key(name) => {
                fail(format!("the trust's policy has no list called {name}"))
            }
            _ => Ok(()),
        }
    }

    /// Fold one record in. A removal of what is not there changes nothing (a writer
    /// checks [`State::admits`] first; the fold never fails, so history always reads).
    pub fn apply(&mut self, record: &Record) {
        let origin = Origin {
            version: record.version,
            at: record.at,
            author: record.author.clone(),
            reason: record.reason.clone(),
        };
        self.version = record.version;
        let entry = |category: &Option<String>, sites: &[String], groups: &[String]| Entry {
            origin: origin.clone(),
            category: category.clone(),
            sites: sites.to_vec(),
            groups: groups.to_vec(),
        };
        match &record.change {
            Change::Allow {
                name,
                sites,
                groups,
            } => {
                self.allow.insert(name.clone(), entry(&None, sites, groups));
            }
            Change::Deny {
                name,
                category,
                sites,
                groups,
            } => {
                self.deny
                    .insert(name.clone(), entry(category, sites, groups));
            }
            Change::Unallow { name } => {
                self.allow.remove(name);
            }
            Change::Undeny { name } => {
                self.deny.remove(name);
            }
            Change::Unlist { name } => {
                self.lists.remove(name);
            }
            Change::List { name, .. } => {
                if let Some(list) = ListEntry::from_change(&record.change, origin) {
                    self.lists.insert(name.clone(), list);
                }
            }
            Change::Settings { toml } if toml.trim().is_empty() => self.settings = None,
            Change::Settings { toml } => self.settings = Some((toml.clone(), origin)),
            Change::LocalAllow { allowed, sites } if sites.is_empty() => {
                self.local_allow = Some((*allowed, origin));
            }
            Change::LocalAllow { allowed, sites } => {
                for site in sites {
                    self.local_allow_at
                        .insert(site.clone(), (*allowed, origin.clone()));
                }
            }
        }
    }

    /// Every entry in force, one line each, in a stable order (for `show` and `diff`).
    pub fn lines(&self) -> Vec<String> {
        let mut out = self.entry_lines();
        out.extend(self.setting_lines());
        for (name, l) in &self.lists {
            out.push(format!(
                "list {name} ({}) from {} [{}] {}",
                l.category,
                shown_url(&l.url),
                scope_line(&l.sites, &[]),
                l.origin.tail()
            ));
        }
        out
    }

    fn entry_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, e) in &self.allow {
            out.push(format!(
                "allow {name} [{}] {}",
                scope_line(&e.sites, &e.groups),
                e.origin.tail()
            ));
        }
        for (name, e) in &self.deny {
            let under = e.category.as_deref().unwrap_or("group-deny");
            out.push(format!(
                "deny {name} as {under} [{}] {}",
                scope_line(&e.sites, &e.groups),
                e.origin.tail()
            ));
        }
        out
    }

    fn setting_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((toml, o)) = &self.settings {
            let names = settings_names(toml)
                .map(|n| n.join(", "))
                .unwrap_or_default();
            out.push(format!("settings {names} {}", o.tail()));
        }
        let permitted = |allowed: bool| {
            if allowed {
                "permitted"
            } else {
                "not permitted"
            }
        };
        let sites = self
            .local_allow
            .iter()
            .map(|s| ("all sites".to_string(), s));
        let each = self
            .local_allow_at
            .iter()
            .map(|(site, s)| (format!("sites {site}"), s));
        for (scope, (allowed, o)) in sites.chain(each) {
            out.push(format!(
                "local allow entries {} [{scope}] {}",
                permitted(*allowed),
                o.tail()
            ));
        }
        out
    }

    /// What applies at `site`, whose config defines `groups` (`None`: every entry, as
    /// the trust's own config checks them).
    pub fn for_site(&self, site: Option<&str>, groups: &BTreeSet<String>) -> SiteView {
        let here = |sites: &[String]| {
            site.is_none_or(|site| sites.is_empty() || sites.iter().any(|s| s == site))
        };
        let local_allow = site
            .and_then(|site| self.local_allow_at.get(site))
            .or(self.local_allow.as_ref())
            .is_none_or(|(allowed, _)| *allowed);
        let mut view = SiteView {
            version: self.version,
            local_allow,
            settings: self.settings.clone(),
            ..SiteView::default()
        };
        for (kind, entries) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (name, e) in entries.iter().filter(|(_, e)| here(&e.sites)) {
                let (known, unknown): (Vec<String>, Vec<String>) =
                    e.groups.iter().cloned().partition(|g| groups.contains(g));
                if !unknown.is_empty() {
                    view.notes.push(format!(
                        "{kind} {name} (v{}) names groups this site does not have: {}",
                        e.origin.version,
                        unknown.join(", ")
                    ));
                    if known.is_empty() {
                        continue;
                    }
                }
                let entry = SiteEntry {
                    name: name.clone(),
                    comment: comment(&e.origin),
                    category: e.category.clone(),
                    groups: known,
                };
                match kind {
                    "allow" => view.allow.push(entry),
                    _ => view.deny.push(entry),
                }
            }
        }
        view.lists = self
            .lists
            .iter()
            .filter(|(_, l)| here(&l.sites))
            .map(|(name, l)| (name.clone(), l.clone()))
            .collect();
        view
    }
}

impl SiteView {
    /// Refuse a view whose entry names are not plain domain names as a writer stores
    /// them (normalised): a name holding a line break would add lines of its own to a
    /// list file. The writers check every name; this guards a store edited by hand.
    pub fn check_names(&self) -> Result<(), Refused> {
        if let Some((toml, _)) = &self.settings {
            settings_names(toml)?;
        }
        for entry in self.allow.iter().chain(&self.deny) {
            match crate::name::normalize(&entry.name) {
                Ok(name) if name == entry.name => {}
                _ => {
                    return Err(Refused(format!(
                        "the entry {:?} is not a domain name as Warden writes them",
                        entry.name
                    )))
                }
            }
        }
        Ok(())
    }
}

/// An entry's scope in a line: `all sites; groups staff`.
pub(crate) fn scope_line(sites: &[String], groups: &[String]) -> String {
    let sites = if sites.is_empty() {
        "all sites".to_string()
    } else {
        format!("sites {}", sites.join(","))
    };
    let groups = if groups.is_empty() {
        "all groups".to_string()
    } else {
        format!("groups {}", groups.join(","))
    };
    format!("{sites}; {groups}")
}

/// The comment written above an entry in a site's list file.
fn comment(origin: &Origin) -> String {
    let line = format!(
        "v{} {} by {}: {}",
        origin.version,
        crate::audit::rfc3339(origin.at),
        origin.author,
        origin.reason
    );
    line.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// One entry as a site applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteEntry {
    pub name: String,
    pub comment: String,
    pub category: Option<String>,
    /// Empty: every group.
    pub groups: Vec<String>,
}

/// The policy as one site applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteView {
    pub version: i64,
    pub allow: Vec<SiteEntry>,
    pub deny: Vec<SiteEntry>,
    pub lists: Vec<(String, ListEntry)>,
    /// Entries left out here, and why (reported with the site's health).
    pub notes: Vec<String>,
    /// Whether this site's admins may add allow entries of their own.
    pub local_allow: bool,
    /// The trust's categories and groups.
    pub settings: Option<(String, Origin)>,
}

impl Default for SiteView {
    fn default() -> SiteView {
        SiteView {
            version: 0,
            allow: Vec::new(),
            deny: Vec::new(),
            lists: Vec::new(),
            notes: Vec::new(),
            local_allow: true,
            settings: None,
        }
    }
}

/// A site's view written out: `policy.toml` and the list files it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The config sections (`policy.toml`).
    pub sections: String,
    /// List files: (file name in the policy folder, text).
    pub files: Vec<(String, String)>,
}

use crate::config::LOCAL_ALLOW_OFF;
use crate::config::POLICY_ENTRY_LISTS as ENTRY_LIST_PREFIX;

impl SiteView {
    /// The sections and files for this view, the files named in `dir` as the config
    /// gives it (relative to the config file's folder, or absolute).
    pub fn render(&self, dir: &Path) -> Rendered {
        let mut out = Rendered {
            sections: format!(
                "# The trust's policy, version {}, as this site applies it. Written by Warden\n\
                 # from the central store: do not edit (the next version replaces it).\n",
                self.version
            ),
            files: Vec::new(),
        };
        if let Some((toml, o)) = &self.settings {
            out.sections.push_str(&format!(
                "\n# The trust's categories and groups: v{} by {}: {}\n{}\n",
                o.version,
                comment_text(&o.author),
                comment_text(&o.reason),
                toml.trim_end()
            ));
        }
        self.render_allow(dir, &mut out);
        self.render_deny(dir, &mut out);
        self.render_lists(&mut out);
        if !self.local_allow {
            out.files.push((
                LOCAL_ALLOW_OFF.to_string(),
                format!(
                    "The trust's policy (version {}) does not permit allow entries of this site's own.\n",
                    self.version
                ),
            ));
        }
        out
    }

    /// Allow entries: one list for every group, one per set of groups.
    fn render_allow(&self, dir: &Path, out: &mut Rendered) {
        let mut by_groups: BTreeMap<Vec<String>, Vec<&SiteEntry>> = BTreeMap::new();
        for e in &self.allow {
            by_groups.entry(e.groups.clone()).or_default().push(e);
        }
        for (i, (groups, entries)) in by_groups.iter().enumerate() {
            let file = format!("allow-{i}.list");
            out.sections.push_str(&format!(
                "\n[[allow]]\nname = {}\npath = {}\nformat = \"domains\"\n",
                toml_string(&format!("{ENTRY_LIST_PREFIX}allow-{i}")),
                toml_string(&dir.join(&file).to_string_lossy()),
            ));
            if !groups.is_empty() {
                out.sections
                    .push_str(&format!("groups = {}\n", toml_strings(groups)));
            }
            out.files.push((file, list_text(entries)));
        }
    }

    /// Deny entries: for every group under their category, or a group's own list.
    fn render_deny(&self, dir: &Path, out: &mut Rendered) {
        let mut by_category: BTreeMap<&str, Vec<&SiteEntry>> = BTreeMap::new();
        let mut by_groups: BTreeMap<Vec<String>, Vec<&SiteEntry>> = BTreeMap::new();
        for e in &self.deny {
            match (&e.category, e.groups.is_empty()) {
                (Some(category), true) => by_category.entry(category).or_default().push(e),
                _ => by_groups.entry(e.groups.clone()).or_default().push(e),
            }
        }
        for (i, (category, entries)) in by_category.iter().enumerate() {
            let file = format!("deny-{i}.list");
            out.sections.push_str(&format!(
                "\n[[lists]]\nname = {}\ncategory = {}\npath = {}\nformat = \"domains\"\n",
                toml_string(&format!("{ENTRY_LIST_PREFIX}deny-{i}")),
                toml_string(category),
                toml_string(&dir.join(&file).to_string_lossy()),
            ));
            out.files.push((file, list_text(entries)));
        }
        for (i, (groups, entries)) in by_groups.iter().enumerate() {
            let file = format!("deny-group-{i}.list");
            out.sections.push_str(&format!(
                "\n[[deny]]\nname = {}\npath = {}\nformat = \"domains\"\ngroups = {}\n",
                toml_string(&format!("{ENTRY_LIST_PREFIX}deny-group-{i}")),
                toml_string(&dir.join(&file).to_string_lossy()),
                toml_strings(groups),
            ));
            out.files.push((file, list_text(entries)));
        }
    }

    /// Lists by URL, each downloaded into the site's `[sources] cache_dir`.
    fn render_lists(&self, out: &mut Rendered) {
        for (name, l) in &self.lists {
            out.sections.push_str(&format!(
                "\n# v{} by {}: {}\n[[lists]]\nname = {}\ncategory = {}\nurl = {}\nformat = {}\n\
                 min_entries = {}\n",
                l.origin.version,
                comment_text(&l.origin.author),
                comment_text(&l.origin.reason),
                toml_string(name),
                toml_string(&l.category),
                toml_string(&l.url),
                toml_string(&format_name(l.format)),
                l.min_entries,
            ));
        }
    }
}

/// A list file's text: each entry under its comment.
fn list_text(entries: &[&SiteEntry]) -> String {
    let mut text = String::new();
    for e in entries {
        text.push_str(&format!("# {}\n{}\n", e.comment, e.name));
    }
    text
}

fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A format as the config writes it (its serde name).
/// The trust's policy as last applied at this site (`[fleet] policy_dir`): its version
/// and each entry list's file name and text; `None` without `[fleet]` or before the
/// first version is applied.
pub fn applied_here(config: &crate::config::Config) -> Option<(String, Vec<(String, String)>)> {
    let dir = config.resolve(&config.fleet.as_ref()?.policy_dir);
    if !dir.join(crate::config::POLICY_FILE).exists() {
        return None;
    }
    let version = std::fs::read_to_string(dir.join("version")).unwrap_or_default();
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".list"))
                .filter_map(|n| {
                    let text = std::fs::read_to_string(dir.join(&n)).ok()?;
                    Some((n, text))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    Some((version.trim().to_string(), files))
}

pub fn format_name(format: Format) -> String {
    serde_json::to_value(format)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "auto".to_string())
}

/// The central store's side: append a change, read the changes.
pub struct Store<'a> {
    pub client: &'a mut Client,
    pub settings: &'a Settings,
}

impl Store<'_> {
    /// Store `change` as the next version, if the policy as it stands admits it and
    /// `check` accepts the state it makes; announce it. Returns the new version.
    pub async fn append(
        &mut self,
        author: &str,
        reason: &str,
        change: &Change,
        check: impl FnOnce(&State) -> Result<(), Refused>,
    ) -> Result<Result<i64, Refused>, FleetError> {
        let settings = self.settings;
        let failed = |e| settings.database_error(e);
        let tx = self.client.transaction().await.map_err(failed)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&POLICY_LOCK])
            .await
            .map_err(failed)?;
        let records = read_records(&tx, settings, None).await?;
        let mut state = State::fold(&records);
        if let Err(refused) = state.admits(change) {
            return Ok(Err(refused));
        }
        // Checked before it is stored, and numbered by hand under the lock: a refused
        // change leaves no gap in the versions.
        let version = state.version + 1;
        let at: SystemTime = tx
            .query_one("SELECT now()", &[])
            .await
            .map_err(failed)?
            .get(0);
        state.apply(&Record {
            version,
            at,
            author: author.to_string(),
            reason: reason.to_string(),
            change: change.clone(),
        });
        if let Err(refused) = check(&state) {
            return Ok(Err(refused));
        }
        let text = serde_json::to_string(change)
            .map_err(|e| FleetError::Config(format!("cannot store the change: {e}")))?;
        tx.execute(
            "INSERT INTO policy_changes (version, at, author, reason, change) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&version, &at, &author, &reason, &text],
        )
        .await
        .map_err(failed)?;
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &version.to_string()],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(Ok(version))
    }
}

/// The stored versions (up to the time `until`), oldest first. A change this Warden
/// cannot read is an error naming its version: a site must not apply part of a policy.
pub async fn read_records(
    client: &impl tokio_postgres::GenericClient,
    settings: &Settings,
    until: Option<SystemTime>,
) -> Result<Vec<Record>, FleetError> {
    let failed = |e| settings.database_error(e);
    let rows = match until {
        Some(t) => client
            .query(
                "SELECT version, at, author, reason, change FROM policy_changes \
                 WHERE at <= $1 ORDER BY version",
                &[&t],
            )
            .await
            .map_err(failed)?,
        None => client
            .query(
                "SELECT version, at, author, reason, change FROM policy_changes ORDER BY version",
                &[],
            )
            .await
            .map_err(failed)?,
    };
    rows.iter()
        .map(|row| {
            let version: i64 = row.get(0);
            let text: String = row.get(4);
            let change = serde_json::from_str(&text).map_err(|e| {
                FleetError::Config(format!(
                    "policy version {version} holds a change this Warden does not know ({e}): \
                     upgrade this Warden to follow the trust's policy"
                ))
            })?;
            Ok(Record {
                version,
                at: row.get(1),
                author: row.get(2),
                reason: row.get(3),
                change,
            })
        })
        .collect()
}

/// The newest version stored (0: none).
pub async fn latest_version(client: &Client, settings: &Settings) -> Result<i64, FleetError> {
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM policy_changes", &[])
        .await
        .map_err(|e| settings.database_error(e))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: i64, change: Change) -> Record {
        Record {
            version,
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(version as u64 * 60),
            author: "it-lead".into(),
            reason: format!("reason {version}"),
            change,
        }
    }

    fn allow(name: &str, sites: &[&str], groups: &[&str]) -> Change {
        Change::Allow {
            name: name.into(),
            sites: sites.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_state_at_a_version_is_the_fold_of_the_changes_up_to_it() {
        let records = vec![
            record(1, allow("a.example", &[], &[])),
            record(
                2,
                Change::Deny {
                    name: "bad.example".into(),
                    category: Some("adult".into()),
                    sites: vec![],
                    groups: vec![],
                },
            ),
            record(
                3,
                Change::Unallow {
                    name: "a.example".into(),
                },
            ),
        ];
        let at2 = State::fold(&records[..2]);
        assert_eq!(at2.version, 2);
        assert!(at2.allow.contains_key("a.example"));
        assert_eq!(at2.deny["bad.example"].origin.author, "it-lead");
        let at3 = State::fold(&records);
        assert!(at3.allow.is_empty());
        assert_eq!(at3.deny.len(), 1);
        assert!(at3
            .admits(&Change::Unallow {
                name: "a.example".into()
            })
            .is_err());
        assert!(at2.admits(&allow("a.example", &[], &[])).is_err());
        assert!(at3.admits(&allow("a.example", &[], &[])).is_ok());
    }

    #[test]
    fn a_change_of_an_unknown_kind_or_field_does_not_read() {
        assert!(serde_json::from_str::<Change>(r#"{"kind":"allow","name":"a.test"}"#).is_ok());
        assert!(serde_json::from_str::<Change>(r#"{"kind":"categories","toml":""}"#).is_err());
        assert!(serde_json::from_str::<Change>(
            r#"{"kind":"allow","name":"a.test","until":"2027-01-01"}"#
        )
        .is_err());
        let change = allow("a.test", &["st-marys"], &[]);
        let text = serde_json::to_string(&change).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"allow","name":"a.test","sites":["st-marys"]}"#
        );
        assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), change);
    }

    #[test]
    fn a_site_sees_its_own_entries_and_notes_groups_it_lacks() {
        let records = vec![
            record(1, allow("every.example", &[], &[])),
            record(2, allow("other.example", &["st-johns"], &[])),
            record(3, allow("staff.example", &[], &["staff", "sixth-form"])),
            record(4, allow("gone.example", &[], &["sixth-form"])),
        ];
        let state = State::fold(&records);
        let groups: BTreeSet<String> = ["staff".to_string(), "pupils".to_string()].into();
        let view = state.for_site(Some("st-marys"), &groups);
        let names: Vec<&str> = view.allow.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["every.example", "staff.example"]);
        assert_eq!(view.allow[1].groups, ["staff"]);
        assert_eq!(view.notes.len(), 2, "{:?}", view.notes);
        assert!(view.notes[0].contains("gone.example") && view.notes[1].contains("staff.example"));
        let rendered = view.render(Path::new("data/fleet-policy"));
        assert_eq!(rendered.files.len(), 2);
        assert!(rendered.files[0].1.contains("every.example"));
        assert!(rendered.files[0].1.starts_with("# v1 "));
        assert!(rendered.sections.contains("groups = [\"staff\"]"));
    }

    #[test]
    fn a_site_setting_for_local_allow_entries_wins_over_the_trust_wide_one() {
        let local = |allowed: bool, sites: &[&str]| Change::LocalAllow {
            allowed,
            sites: sites.iter().map(|s| s.to_string()).collect(),
        };
        let none = BTreeSet::new();
        let state = State::fold(&[]);
        assert!(
            state.for_site(Some("a"), &none).local_allow,
            "permitted until said"
        );
        let state = State::fold(&[record(1, local(false, &[])), record(2, local(true, &["a"]))]);
        assert!(state.for_site(Some("a"), &none).local_allow);
        let b = state.for_site(Some("b"), &none);
        assert!(!b.local_allow);
        assert!(b
            .render(Path::new("p"))
            .files
            .iter()
            .any(|(name, _)| name == LOCAL_ALLOW_OFF));
        let state = State::fold(&[record(1, local(false, &["a"])), record(2, local(true, &[]))]);
        assert!(!state.for_site(Some("a"), &none).local_allow);
        assert!(state.for_site(Some("b"), &none).local_allow);
    }

    #[test]
    fn settings_are_category_and_group_tables_only() {
        assert_eq!(
            settings_names("# ours\n[categories.x]\n[groups.a]\nblock = [\"x\"]\n").unwrap(),
            ["categories.x", "groups.a"]
        );
        for bad in [
            "[server]\n",
            "groups.a.block = []\n",
            "[groups]\na = 1\n",
            "[groups.a\n",
            "[[lists]]\nname = \"x\"\n",
        ] {
            assert!(settings_names(bad).is_err(), "{bad:?}");
        }
        let state = State::fold(&[record(
            1,
            Change::Settings {
                toml: "[groups.a]\nblock = []\n".into(),
            },
        )]);
        let view = state.for_site(Some("x"), &BTreeSet::new());
        let rendered = view.render(Path::new("p"));
        assert!(rendered.sections.contains("\n[groups.a]\nblock = []\n"));
        let cleared = State::fold(&[
            record(
                1,
                Change::Settings {
                    toml: "[groups.a]\n".into(),
                },
            ),
            record(2, Change::Settings { toml: " ".into() }),
        ]);
        assert!(cleared.settings.is_none());
    }

    #[test]
    fn a_name_that_is_not_a_plain_domain_refuses_the_view() {
        for bad in ["a.example\nevil.example", "A.EXAMPLE", "a..example", ""] {
            let state = State::fold(&[record(1, allow(bad, &[], &[]))]);
            let view = state.for_site(Some("x"), &BTreeSet::new());
            assert!(view.check_names().is_err(), "{bad:?}");
        }
        let state = State::fold(&[record(1, allow("ok.example", &[], &[]))]);
        assert!(state.for_site(None, &BTreeSet::new()).check_names().is_ok());
    }

    #[test]
    fn rendered_sections_parse_as_toml_whatever_the_names_hold() {
        let records = vec![
            record(
                1,
                Change::Deny {
                    name: "x.example".into(),
                    category: Some("odd \"cat\"\nname".into()),
                    sites: vec![],
                    groups: vec![],
                },
            ),
            record(
                2,
                Change::List {
                    name: "feed".into(),
                    category: "adult".into(),
                    url: "https://lists.example/feed?token=secret".into(),
                    format: Format::Hosts,
                    min_entries: 10,
                    sites: vec![],
                },
            ),
        ];
        let mut state = State::fold(&records);
        state.lists.get_mut("feed").unwrap().origin.reason = "new\nline".into();
        let rendered = state
            .for_site(Some("a"), &BTreeSet::new())
            .render(Path::new("/var/lib/warden/policy \"x\""));
        let value: toml::Table = toml::from_str(&rendered.sections).unwrap();
        assert_eq!(value["lists"].as_array().unwrap().len(), 2);
        assert!(
            rendered.sections.contains("format = \"hosts\""),
            "{}",
            rendered.sections
        );
        assert!(state.lines()[1].contains("https://lists.example/feed"));
        assert!(!state.lines()[1].contains("secret"));
    }
}
