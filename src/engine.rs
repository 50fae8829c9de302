//! The engine snapshot: one immutable bundle of everything a query reads (config,
//! matcher, per-group category sets), built in one place from a config file.
//!
//! Building is all-or-nothing: every list is read and the matcher compiled before an
//! `Engine` exists, so a caller either gets a complete snapshot or an error naming the
//! file and line at fault. Reloading (swapping a new `Engine` behind an `ArcSwap`) builds
//! a whole new one the same way and leaves the old one serving until the swap. To keep
//! that cheap, each block list's rules go into the matcher builder as they are parsed
//! (no list is held whole) and a reload sizes the new node table from the serving one.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError, ListConfig};
use crate::filter::{FilterError, ListKind, Matcher, MatcherBuilder};
use crate::lists::{self, ListError, ListReport, LoadedList};
use crate::policy::{Parts, Policy};

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

/// The list name of the allow entries added in the dashboard.
pub use crate::config::DASHBOARD_ALLOW;

/// Everything a query needs, immutable once built.
#[derive(Debug)]
pub struct Engine {
    pub config: Config,
    pub matcher: Matcher,
    pub lists: Vec<LoadedList>,
    /// Clients, groups, schedules and safe search.
    pub policy: Policy,
    /// Time to read every list and compile the matcher.
    pub build_time: Duration,
    /// Unique to this snapshot within the process: what the DNS answer cache checks, so
    /// an answer allowed under an older snapshot is never served under this one.
    pub id: u64,
}

/// The next [`Engine::id`].
static NEXT_ENGINE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Engine {
    /// Read the config at `path` and build a snapshot from it.
    pub fn load(path: &Path) -> Result<Engine, EngineError> {
        Engine::build(Config::load(path)?)
    }

    /// Build a snapshot: categories, then every block list, then the allow lists.
    pub fn build(config: Config) -> Result<Engine, EngineError> {
        Engine::build_expecting(config, 0)
    }

    /// [`Engine::load`] for a reload: `names` is the serving snapshot's count of distinct
    /// names, so the new node table is allocated once at its final size (see
    /// `filter::builder`, "Memory").
    pub fn reload(path: &Path, names: usize) -> Result<Engine, EngineError> {
        Engine::build_expecting(Config::load(path)?, names)
    }

    /// [`Engine::build`] expecting about `names` distinct names (0: unknown). A seed the
    /// matcher cannot use (about one build in 10^8, see `filter::builder`) is replaced by
    /// reading the lists again with a new one.
    pub(crate) fn build_expecting(config: Config, names: usize) -> Result<Engine, EngineError> {
        let started = Instant::now();
        let mut attempt = 0;
        let (matcher, lists, policy) = loop {
            attempt += 1;
            match Engine::build_parts(&config, names) {
                Err(EngineError::Filter {
                    source: FilterError::HashCollisions,
                    ..
                }) if attempt < 3 => continue,
                built => break built?,
            }
        };
        Ok(Engine {
            config,
            matcher,
            lists,
            policy,
            build_time: started.elapsed(),
            id: NEXT_ENGINE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Read every list into the matcher (and the groups' own matchers), then compile
    /// them and the policy.
    fn build_parts(
        config: &Config,
        names: usize,
    ) -> Result<(Matcher, Vec<LoadedList>, Policy), EngineError> {
        let mut parts = PartsBuilder::new(config, names)?;
        for list in &config.lists {
            parts.add_block_list(list)?;
        }
        let group_allow = parts.add_allow_lists()?;
        parts.add_dashboard_allow()?;
        let group_deny = parts.add_deny_lists()?;
        parts.finish(group_allow, group_deny)
    }
}

/// A group's own deny matcher, with the number of its one category.
type GroupDeny = (MatcherBuilder, crate::filter::CategoryId);

/// The snapshot's matcher and list reports while they are being built.
struct PartsBuilder<'a> {
    config: &'a Config,
    /// The main matcher: every block list, and the allow lists of every group.
    builder: MatcherBuilder,
    lists: Vec<LoadedList>,
}

impl<'a> PartsBuilder<'a> {
    /// A builder sized for about `names` distinct names, with the config's categories.
    fn new(config: &'a Config, names: usize) -> Result<PartsBuilder<'a>, EngineError> {
        let mut builder = MatcherBuilder::with_capacity(names);
        for (name, category) in &config.categories {
            builder
                .add_category(name, category.locked)
                .map_err(|e| filter_error(config, e))?;
        }
        Ok(PartsBuilder {
            config,
            builder,
            lists: Vec::with_capacity(config.lists.len() + config.allow.len()),
        })
    }

    fn filter_err(&self, source: FilterError) -> EngineError {
        filter_error(self.config, source)
    }

    /// One block list, read straight into the matcher.
    fn add_block_list(&mut self, list: &ListConfig) -> Result<(), EngineError> {
        let name = list.name.get_ref();
        let category = list.category.get_ref();
        // Validation guarantees the category exists.
        let Some(id) = builder_category(self.config, category) else {
            return Ok(());
        };
        let file = list.file(self.config);
        // A download that has never succeeded leaves its list empty (and the daemon not
        // ready), rather than stopping every other list from serving.
        let missing = list.url.is_some() && !file.exists();
        self.builder
            .begin_list(name, ListKind::Block(id))
            .map_err(|e| self.filter_err(e))?;
        let report = if missing {
            ListReport {
                path: file,
                ..ListReport::default()
            }
        } else {
            self.read_rules(name, &file, list.format)?
        };
        self.builder.end_list().map_err(|e| self.filter_err(e))?;
        self.lists.push(LoadedList {
            name: name.clone(),
            category: Some(category.clone()),
            report,
            missing,
        });
        Ok(())
    }

    /// Read the block list `name` from `file` into the list begun in the matcher.
    fn read_rules(
        &mut self,
        name: &str,
        file: &Path,
        format: lists::Format,
    ) -> Result<ListReport, EngineError> {
        // Rules go straight into the matcher as they are read: the list is never held
        // whole (the largest would cost ~50 MiB during a reload). The builder tells
        // duplicates within the list apart, as the parser's own set would.
        let mut failed = None;
        let max = self.config.reload.max_list_bytes;
        let builder = &mut self.builder;
        let report = lists::load_file_with(file, format, max, |rule| {
            builder.add_rule(rule).unwrap_or_else(|e| {
                failed.get_or_insert(e);
                true
            })
        })
        .map_err(|source| EngineError::List {
            list: name.to_string(),
            source,
        })?;
        match failed {
            Some(e) => Err(self.filter_err(e)),
            None => Ok(report),
        }
    }

    /// Allow lists for every group go into the main matcher; a group's own allow lists
    /// into a small matcher of that group's (consulted after the main one), returned.
    fn add_allow_lists(&mut self) -> Result<BTreeMap<String, MatcherBuilder>, EngineError> {
        let config = self.config;
        let mut group_allow: BTreeMap<String, MatcherBuilder> = BTreeMap::new();
        for allow in &config.allow {
            let name = allow.name.get_ref();
            let parsed = load(config, name, &config.resolve(&allow.path), allow.format)?;
            if allow.groups.is_empty() {
                self.builder
                    .add_list(name, ListKind::Allow, &parsed.rules)
                    .map_err(|e| self.filter_err(e))?;
            }
            for group in &allow.groups {
                group_allow
                    .entry(group.get_ref().clone())
                    .or_default()
                    .add_list(name, ListKind::Allow, &parsed.rules)
                    .map_err(|e| self.filter_err(e))?;
            }
            self.lists.push(LoadedList {
                name: name.clone(),
                category: None,
                report: parsed.report,
                missing: false,
            });
        }
        Ok(group_allow)
    }

    /// The dashboard's allow entries (`[dashboard] allow_file`), for every group, once
    /// the first one has been added.
    fn add_dashboard_allow(&mut self) -> Result<(), EngineError> {
        let dashboard_file = self.config.resolve(&self.config.dashboard.allow_file);
        if !dashboard_file.exists() {
            return Ok(());
        }
        let parsed = load(
            self.config,
            DASHBOARD_ALLOW,
            &dashboard_file,
            lists::Format::Domains,
        )?;
        self.builder
            .add_list(DASHBOARD_ALLOW, ListKind::Allow, &parsed.rules)
            .map_err(|e| self.filter_err(e))?;
        self.lists.push(LoadedList {
            name: DASHBOARD_ALLOW.to_string(),
            category: None,
            report: parsed.report,
            missing: false,
        });
        Ok(())
    }

    /// A group's own deny lists, under one category of their own, in a matcher per group.
    fn add_deny_lists(&mut self) -> Result<BTreeMap<String, GroupDeny>, EngineError> {
        let config = self.config;
        let mut group_deny: BTreeMap<String, GroupDeny> = BTreeMap::new();
        for deny in &config.deny {
            let name = deny.name.get_ref();
            let parsed = load(config, name, &config.resolve(&deny.path), deny.format)?;
            for group in &deny.groups {
                let (b, id) = match group_deny.entry(group.get_ref().clone()) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let mut b = MatcherBuilder::new();
                        let id = b
                            .add_category(crate::policy::GROUP_DENY, false)
                            .map_err(|e| self.filter_err(e))?;
                        e.insert((b, id))
                    }
                };
                b.add_list(name, ListKind::Block(*id), &parsed.rules)
                    .map_err(|e| self.filter_err(e))?;
            }
            self.lists.push(LoadedList {
                name: name.clone(),
                category: Some(crate::policy::GROUP_DENY.to_string()),
                report: parsed.report,
                missing: false,
            });
        }
        Ok(group_deny)
    }

    /// Compile the matchers and the policy.
    fn finish(
        self,
        group_allow: BTreeMap<String, MatcherBuilder>,
        group_deny: BTreeMap<String, GroupDeny>,
    ) -> Result<(Matcher, Vec<LoadedList>, Policy), EngineError> {
        let config = self.config;
        let filter_err = |e| filter_error(config, e);
        let matcher = self.builder.build().map_err(filter_err)?;
        let deny = group_deny
            .into_iter()
            .map(|(group, (b, _))| b.build().map(|m| (group, m)))
            .collect::<Result<_, _>>()
            .map_err(filter_err)?;
        let allow = group_allow
            .into_iter()
            .map(|(group, b)| b.build().map(|m| (group, m)))
            .collect::<Result<_, _>>()
            .map_err(filter_err)?;
        let leases = read_leases(config);
        let policy = Policy::build(
            config,
            &matcher,
            Parts {
                allow,
                deny,
                leases,
            },
        );
        Ok((matcher, self.lists, policy))
    }
}

/// A matcher that would not build, named by the config file it was built from.
fn filter_error(config: &Config, source: FilterError) -> EngineError {
    EngineError::Filter {
        path: config.path.display().to_string(),
        source,
    }
}

/// Device names from `[server] dhcp_leases`, if set. A lease file that cannot be read
/// is logged and ignored: names are labels for the audit log, never worth failing over.
fn read_leases(config: &Config) -> HashMap<IpAddr, String> {
    let Some(path) = &config.server.dhcp_leases else {
        return HashMap::new();
    };
    let path = config.resolve(path);
    crate::policy::clients::read_leases(&path).unwrap_or_else(|error| {
        tracing::warn!(path = %path.display(), %error, "cannot read the DHCP lease file; devices are shown by address");
        HashMap::new()
    })
}

/// Category numbers follow the config's (sorted) category order, as added above.
fn builder_category(config: &Config, name: &str) -> Option<crate::filter::CategoryId> {
    config
        .categories
        .keys()
        .position(|c| c == name)
        .map(|i| crate::filter::CategoryId(i as u8))
}

fn load(
    config: &Config,
    name: &str,
    path: &Path,
    format: lists::Format,
) -> Result<lists::ParsedList, EngineError> {
    let max = config.reload.max_list_bytes;
    lists::load_file_capped(path, format, max).map_err(|source| EngineError::List {
        list: name.to_string(),
        source,
    })
}
