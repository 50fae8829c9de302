//! The engine snapshot: one immutable bundle of everything a query reads (config,
//! matcher, per-group category sets), built in one place from a config file.
//!
//! Building is all-or-nothing: every list is read and the matcher compiled before an
//! `Engine` exists, so a caller either gets a complete snapshot or an error naming the
//! file and line at fault. Reloading (swapping a new `Engine` behind an `ArcSwap`) builds
//! a whole new one the same way and leaves the old one serving until the swap.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError};
use crate::filter::{CategorySet, FilterError, ListKind, Matcher, MatcherBuilder};
use crate::lists::{self, ListError, ListReport};

/// Why a snapshot could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("list {list:?}: {source}")]
    List { list: String, source: ListError },
    #[error("{path}: {source}")]
    Filter { path: String, source: FilterError },
}

/// How one configured list loaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadedList {
    pub name: String,
    /// The category, or `None` for an allow list.
    pub category: Option<String>,
    pub report: ListReport,
    /// A `url` list with no downloaded copy yet: it blocks nothing until one arrives.
    pub missing: bool,
}

/// Everything a query needs, immutable once built.
#[derive(Debug)]
pub struct Engine {
    pub config: Config,
    pub matcher: Matcher,
    pub lists: Vec<LoadedList>,
    /// Active categories per group (locked ones included).
    groups: BTreeMap<String, CategorySet>,
    /// Time to read every list and compile the matcher.
    pub build_time: Duration,
}

impl Engine {
    /// Read the config at `path` and build a snapshot from it.
    pub fn load(path: &Path) -> Result<Engine, EngineError> {
        Engine::build(Config::load(path)?)
    }

    /// Build a snapshot: categories, then every block list, then the allow lists.
    pub fn build(config: Config) -> Result<Engine, EngineError> {
        let started = Instant::now();
        let filter_err = |source| EngineError::Filter {
            path: config.path.display().to_string(),
            source,
        };
        let mut builder = MatcherBuilder::new();
        for (name, category) in &config.categories {
            builder
                .add_category(name, category.locked)
                .map_err(filter_err)?;
        }
        let mut lists = Vec::with_capacity(config.lists.len() + config.allow.len());
        for list in &config.lists {
            let name = list.name.get_ref();
            let category = list.category.get_ref();
            // Validation guarantees the category exists.
            let kind = match builder_category(&config, category) {
                Some(id) => ListKind::Block(id),
                None => continue,
            };
            let file = list.file(&config);
            // A download that has never succeeded leaves its list empty (and the
            // daemon not ready), rather than stopping every other list from serving.
            let missing = list.url.is_some() && !file.exists();
            let parsed = if missing {
                lists::ParsedList {
                    rules: Vec::new(),
                    report: ListReport {
                        path: file,
                        ..ListReport::default()
                    },
                }
            } else {
                load(name, &file, list.format)?
            };
            builder
                .add_list(name, kind, &parsed.rules)
                .map_err(filter_err)?;
            lists.push(LoadedList {
                name: name.clone(),
                category: Some(category.clone()),
                report: parsed.report,
                missing,
            });
        }
        for allow in &config.allow {
            let name = allow.name.get_ref();
            let parsed = load(name, &config.resolve(&allow.path), allow.format)?;
            builder
                .add_list(name, ListKind::Allow, &parsed.rules)
                .map_err(filter_err)?;
            lists.push(LoadedList {
                name: name.clone(),
                category: None,
                report: parsed.report,
                missing: false,
            });
        }
        let matcher = builder.build().map_err(filter_err)?;
        let groups = group_sets(&config, &matcher);
        Ok(Engine {
            config,
            matcher,
            lists,
            groups,
            build_time: started.elapsed(),
        })
    }

    /// The categories active for `group` (locked ones always included). An unknown group
    /// gets every category: failing closed is the safe default for a filter.
    pub fn active_for(&self, group: &str) -> CategorySet {
        self.groups
            .get(group)
            .copied()
            .unwrap_or_else(|| self.matcher.all_categories())
    }

    /// The categories active for clients of the default group.
    pub fn default_active(&self) -> CategorySet {
        self.active_for(&self.config.server.default_group)
    }
}

/// Category numbers follow the config's (sorted) category order, as added above.
fn builder_category(config: &Config, name: &str) -> Option<crate::filter::CategoryId> {
    config
        .categories
        .keys()
        .position(|c| c == name)
        .map(|i| crate::filter::CategoryId(i as u8))
}

fn load(name: &str, path: &Path, format: lists::Format) -> Result<lists::ParsedList, EngineError> {
    lists::load_file(path, format).map_err(|source| EngineError::List {
        list: name.to_string(),
        source,
    })
}

fn group_sets(config: &Config, matcher: &Matcher) -> BTreeMap<String, CategorySet> {
    let mut groups = BTreeMap::new();
    let names: Vec<String> = if config.groups.is_empty() {
        vec![config.server.default_group.clone()]
    } else {
        config.groups.keys().cloned().collect()
    };
    for group in names {
        let set = config
            .group_blocks(&group)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| matcher.category_id(c))
            .fold(matcher.locked(), |s, id| s.with(id));
        groups.insert(group, set);
    }
    groups
}
