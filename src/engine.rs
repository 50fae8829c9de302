//! The engine snapshot: one immutable bundle of everything a query reads (config,
//! matcher, per-group category sets), built in one place from a config file.
//!
//! Building is all-or-nothing: every list is read and the matcher compiled before an
//! `Engine` exists, so a caller either gets a complete snapshot or an error naming the
//! file and line at fault. Reloading (swapping a new `Engine` behind an `ArcSwap`) builds
//! a whole new one the same way and leaves the old one serving until the swap.
//!
//! The main matcher is two layers ([`Layers`], `engine::base`): the big lists in a base,
//! the small ones (≤ 500 entries: allow entries, local lists) in an overlay. A reload
//! in which none of the base's lists changed keeps the serving snapshot's base (the same
//! `Arc`) and reads only the small lists, the groups' own lists and the leases: a
//! one-entry change applies in milliseconds. Otherwise both layers are built anew; to
//! keep that cheap, a big list's rules go into the builder as they are parsed (no big
//! list is held whole) and the new node table is sized from the serving base.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError};
use crate::filter::{FilterError, Layers, ListKind, Matcher, MatcherBuilder};
use crate::lists::{self, ListError, ListReport, LoadedList};
use crate::policy::{Parts, Policy};

mod base;

use base::{BaseLayer, Source, OVERLAY_MAX_ENTRIES, SMALL_LIST_ENTRIES};

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
    /// Every group's rules: the big lists in a base layer that reloads share while
    /// none of them changes, the small lists in an overlay rebuilt by each reload
    /// (see `engine::base`).
    pub matcher: Layers,
    pub lists: Vec<LoadedList>,
    /// Clients, groups, schedules and safe search.
    pub policy: Policy,
    /// Time to read every list and compile the matcher.
    pub build_time: Duration,
    /// Unique to this snapshot within the process: what the DNS answer cache checks, so
    /// an answer allowed under an older snapshot is never served under this one.
    pub id: u64,
    /// The base layer is the previous snapshot's: only the small lists were read.
    pub base_reused: bool,
    /// What the base layer was built from, for the next reload to compare.
    base: Arc<BaseLayer>,
}

/// The next [`Engine::id`].
static NEXT_ENGINE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A snapshot's parts, as built.
struct Built {
    matcher: Layers,
    lists: Vec<LoadedList>,
    policy: Policy,
    base: Arc<BaseLayer>,
    base_reused: bool,
}

impl Engine {
    /// Read the config at `path` and build a snapshot from it.
    pub fn load(path: &Path) -> Result<Engine, EngineError> {
        Engine::build(Config::load(path)?)
    }

    /// Build a snapshot: categories, then every block list, then the allow lists.
    pub fn build(config: Config) -> Result<Engine, EngineError> {
        Engine::build_on(config, None)
    }

    /// [`Engine::load`] for a reload while `serving` serves: its base layer is kept if
    /// none of its lists changed (only the small lists are read), and otherwise the new
    /// node table is allocated once at its size (see `filter::builder`, "Memory").
    pub fn reload(path: &Path, serving: &Engine) -> Result<Engine, EngineError> {
        Engine::build_on(Config::load(path)?, Some(serving))
    }

    /// [`Engine::build`], keeping `serving`'s base layer if it can. A seed the matcher
    /// cannot use (about one build in 10^8, see `filter::builder`) is replaced by
    /// reading the lists again with a new one (and a new base).
    fn build_on(config: Config, serving: Option<&Engine>) -> Result<Engine, EngineError> {
        let started = Instant::now();
        let names = serving.map_or(0, |e| e.matcher.base().stats().names as usize);
        let mut attempt = 0;
        let built = loop {
            attempt += 1;
            let keep = serving.filter(|_| attempt == 1);
            match Engine::build_parts(&config, names, keep) {
                Err(EngineError::Filter {
                    source: FilterError::HashCollisions,
                    ..
                }) if attempt < 3 => continue,
                built => break built?,
            }
        };
        Ok(Engine {
            config,
            matcher: built.matcher,
            lists: built.lists,
            policy: built.policy,
            build_time: started.elapsed(),
            id: NEXT_ENGINE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            base_reused: built.base_reused,
            base: built.base,
        })
    }

    /// Read every list into the layers (and the groups' own matchers), then compile
    /// them and the policy. With `keep`, first try on its base: that fails over to a
    /// whole build when a list that is not in it turns out big.
    fn build_parts(
        config: &Config,
        names: usize,
        keep: Option<&Engine>,
    ) -> Result<Built, EngineError> {
        let sources = base::sources(config);
        if let Some(old) = keep.filter(|old| old.base.reusable(config, &sources)) {
            let mut parts = PartsBuilder::on_base(config, old);
            if parts.add_sources(&sources)? {
                return parts.finish();
            }
            tracing::debug!("a new list is too big for the overlay: rebuilding the base");
        }
        let mut parts = PartsBuilder::new(config, names)?;
        parts.add_sources(&sources)?;
        parts.finish()
    }
}

/// A group's own deny matcher, with the number of its one category.
type GroupDeny = (MatcherBuilder, crate::filter::CategoryId);

/// The base layer while a snapshot is built: a new one, or the serving snapshot's.
enum BaseBuild {
    New {
        builder: Box<MatcherBuilder>,
        sources: Vec<Source>,
        reports: Vec<(u32, LoadedList)>,
    },
    Kept(Arc<Matcher>, Arc<BaseLayer>),
}

/// The snapshot's matchers and list reports while they are being built.
struct PartsBuilder<'a> {
    config: &'a Config,
    base: BaseBuild,
    /// The small lists, for every group.
    overlay: MatcherBuilder,
    /// Reports of the lists outside the base, with their ranks.
    lists: Vec<(u32, LoadedList)>,
    /// Entries in the overlay so far.
    overlay_entries: u64,
}

impl<'a> PartsBuilder<'a> {
    /// A new base sized for about `names` distinct names, with the config's categories.
    fn new(config: &'a Config, names: usize) -> Result<PartsBuilder<'a>, EngineError> {
        let mut builder = MatcherBuilder::with_capacity(names);
        for (name, category) in &config.categories {
            builder
                .add_category(name, category.locked)
                .map_err(|e| filter_error(config, e))?;
        }
        Ok(PartsBuilder {
            config,
            overlay: builder.layer_beside(),
            base: BaseBuild::New {
                builder: Box::new(builder),
                sources: Vec::new(),
                reports: Vec::new(),
            },
            lists: Vec::with_capacity(config.lists.len() + config.allow.len()),
            overlay_entries: 0,
        })
    }

    /// Keep `serving`'s base (its categories are the config's: see
    /// [`BaseLayer::reusable`]).
    fn on_base(config: &'a Config, serving: &Engine) -> PartsBuilder<'a> {
        let matcher = serving.matcher.base().clone();
        PartsBuilder {
            config,
            overlay: MatcherBuilder::layer_over(&matcher),
            base: BaseBuild::Kept(matcher, serving.base.clone()),
            lists: Vec::with_capacity(config.lists.len() + config.allow.len()),
            overlay_entries: 0,
        }
    }

    fn filter_err(&self, source: FilterError) -> EngineError {
        filter_error(self.config, source)
    }

    /// Every main list into its layer. `Ok(false)` if the base is kept and a list that
    /// is not in it is too big for the overlay.
    fn add_sources(&mut self, sources: &[Source]) -> Result<bool, EngineError> {
        for source in sources {
            if !self.add_source(source)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One main list: nothing to read if the kept base holds it; into the overlay if it
    /// is small; else into a new base (`Ok(false)` if the base is kept).
    fn add_source(&mut self, source: &Source) -> Result<bool, EngineError> {
        if let BaseBuild::Kept(_, layer) = &self.base {
            if layer.holds(source) {
                return Ok(true);
            }
        }
        // Validation guarantees the category exists.
        let Some(kind) = self.kind_of(source) else {
            return Ok(true);
        };
        let mut report = ListReport {
            path: source.path.clone(),
            ..ListReport::default()
        };
        if source.awaited() {
            // A download that has never succeeded leaves its list empty (and the daemon
            // not ready), rather than stopping every other list from serving.
            self.overlay.rank_next_lists(source.rank);
            self.overlay
                .add_list(&source.name, kind, &[])
                .map_err(|e| self.filter_err(e))?;
        } else if source.may_be_small() {
            let parsed = load(self.config, &source.name, &source.path, source.format)?;
            let entries = parsed.report.accepted;
            let small = entries <= SMALL_LIST_ENTRIES
                && self.overlay_entries + entries <= OVERLAY_MAX_ENTRIES;
            if small {
                self.overlay_entries += entries;
            }
            let layer = match &mut self.base {
                _ if small => &mut self.overlay,
                BaseBuild::New { builder, .. } => builder,
                BaseBuild::Kept(..) => return Ok(false),
            };
            layer.rank_next_lists(source.rank);
            layer
                .add_list(&source.name, kind, &parsed.rules)
                .map_err(|e| filter_error(self.config, e))?;
            report = parsed.report;
            if !small {
                return self.record_in_base(source, report);
            }
        } else {
            if let BaseBuild::Kept(..) = self.base {
                return Ok(false);
            }
            report = self.stream_into_base(source, kind)?;
            return self.record_in_base(source, report);
        }
        self.lists.push((source.rank, loaded(source, report)));
        Ok(true)
    }

    /// Record `source` (already read into the new base) as one of its lists.
    fn record_in_base(&mut self, source: &Source, report: ListReport) -> Result<bool, EngineError> {
        if let BaseBuild::New {
            sources, reports, ..
        } = &mut self.base
        {
            sources.push(source.clone());
            reports.push((source.rank, loaded(source, report)));
        }
        Ok(true)
    }

    /// What the list does in the matcher: block in its category, or allow. `None` for
    /// a category the config does not define.
    fn kind_of(&self, source: &Source) -> Option<ListKind> {
        match &source.category {
            Some(c) => builder_category(self.config, c).map(ListKind::Block),
            None => Some(ListKind::Allow),
        }
    }

    /// Read a big list into the new base rule by rule: the list is never held whole
    /// (the largest would cost ~50 MiB during a reload). The builder tells duplicates
    /// within the list apart, as the parser's own set would.
    fn stream_into_base(
        &mut self,
        source: &Source,
        kind: ListKind,
    ) -> Result<ListReport, EngineError> {
        let BaseBuild::New { builder, .. } = &mut self.base else {
            return Err(self.filter_err(FilterError::NoListBegun));
        };
        let config = self.config;
        builder.rank_next_lists(source.rank);
        builder
            .begin_list(&source.name, kind)
            .map_err(|e| filter_error(config, e))?;
        let mut failed = None;
        let max = config.reload.max_list_bytes;
        let report = lists::load_file_with(&source.path, source.format, max, |rule| {
            builder.add_rule(rule).unwrap_or_else(|e| {
                failed.get_or_insert(e);
                true
            })
        })
        .map_err(|error| EngineError::List {
            list: source.name.clone(),
            source: error,
        })?;
        builder.end_list().map_err(|e| filter_error(config, e))?;
        match failed {
            Some(e) => Err(filter_error(config, e)),
            None => Ok(report),
        }
    }

    /// Allow lists of some groups only go into a small matcher of each such group
    /// (consulted after the main one), returned. (Allow lists for every group are
    /// main lists: see [`PartsBuilder::add_source`].)
    fn add_group_allow_lists(&mut self) -> Result<BTreeMap<String, MatcherBuilder>, EngineError> {
        let config = self.config;
        let mut group_allow: BTreeMap<String, MatcherBuilder> = BTreeMap::new();
        for (j, allow) in config.allow.iter().enumerate() {
            if allow.groups.is_empty() {
                continue;
            }
            let name = allow.name.get_ref();
            let parsed = load(config, name, &config.resolve(&allow.path), allow.format)?;
            for group in &allow.groups {
                group_allow
                    .entry(group.get_ref().clone())
                    .or_default()
                    .add_list(name, ListKind::Allow, &parsed.rules)
                    .map_err(|e| self.filter_err(e))?;
            }
            let loaded = LoadedList {
                name: name.clone(),
                category: None,
                report: parsed.report,
                missing: false,
            };
            self.lists.push((base::rank_of_allow(config, j), loaded));
        }
        self.add_group_dashboard_allow(&mut group_allow)?;
        Ok(group_allow)
    }

    /// The dashboard's allow entries for one group (an approved request, say), each
    /// group's file into its own matcher, when the trust's policy permits local entries.
    fn add_group_dashboard_allow(
        &mut self,
        group_allow: &mut BTreeMap<String, MatcherBuilder>,
    ) -> Result<(), EngineError> {
        let config = self.config;
        if !config.local_allow_permitted() {
            return Ok(());
        }
        for group in config.group_names() {
            let path = config.group_allow_file(&group);
            if !path.exists() {
                continue;
            }
            let name = format!("{DASHBOARD_ALLOW}:{group}");
            let parsed = load(config, &name, &path, crate::config::Format::Domains)?;
            group_allow
                .entry(group)
                .or_default()
                .add_list(&name, ListKind::Allow, &parsed.rules)
                .map_err(|e| self.filter_err(e))?;
            let loaded = LoadedList {
                name,
                category: None,
                report: parsed.report,
                missing: false,
            };
            self.lists
                .push((base::rank_of_allow(config, config.allow.len()), loaded));
        }
        Ok(())
    }

    /// A group's own deny lists, under one category of their own, in a matcher per group.
    fn add_deny_lists(&mut self) -> Result<BTreeMap<String, GroupDeny>, EngineError> {
        let config = self.config;
        let mut group_deny: BTreeMap<String, GroupDeny> = BTreeMap::new();
        for (k, deny) in config.deny.iter().enumerate() {
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
            let loaded = LoadedList {
                name: name.clone(),
                category: Some(crate::policy::GROUP_DENY.to_string()),
                report: parsed.report,
                missing: false,
            };
            self.lists.push((base::rank_of_deny(config, k), loaded));
        }
        Ok(group_deny)
    }

    /// Read the groups' own lists, then compile the layers, the groups' matchers and the
    /// policy.
    fn finish(mut self) -> Result<Built, EngineError> {
        let group_allow = self.add_group_allow_lists()?;
        let group_deny = self.add_deny_lists()?;
        let config = self.config;
        let filter_err = |e| filter_error(config, e);
        let (base, layer, base_reused) = match self.base {
            BaseBuild::New {
                builder,
                sources,
                reports,
            } => {
                let matcher = Arc::new(builder.build().map_err(filter_err)?);
                (
                    matcher,
                    Arc::new(BaseLayer::new(config, sources, reports)),
                    false,
                )
            }
            BaseBuild::Kept(matcher, layer) => (matcher, layer, true),
        };
        let overlay = self.overlay.build().map_err(filter_err)?;
        let matcher = Layers::new(base, overlay).map_err(filter_err)?;
        let mut lists = self.lists;
        lists.extend(layer.reports.iter().cloned());
        lists.sort_by_key(|(rank, _)| *rank);
        let policy = Policy::build(
            config,
            matcher.base(),
            Parts {
                allow: build_all(group_allow).map_err(filter_err)?,
                deny: build_all(group_deny.into_iter().map(|(g, (b, _))| (g, b)))
                    .map_err(filter_err)?,
                leases: read_leases(config),
                directory: read_directory(config),
            },
        );
        tracing::debug!(
            base_reused,
            base_lists = layer.len(),
            "built the main matcher in two layers"
        );
        Ok(Built {
            matcher,
            lists: lists.into_iter().map(|(_, l)| l).collect(),
            policy,
            base: layer,
            base_reused,
        })
    }
}

/// Each group's matcher, built.
fn build_all(
    builders: impl IntoIterator<Item = (String, MatcherBuilder)>,
) -> Result<BTreeMap<String, Matcher>, FilterError> {
    builders
        .into_iter()
        .map(|(group, b)| b.build().map(|m| (group, m)))
        .collect()
}

/// The load report of a main list.
fn loaded(source: &Source, report: ListReport) -> LoadedList {
    LoadedList {
        name: source.name.clone(),
        category: source.category.clone(),
        report,
        missing: source.awaited(),
    }
}

/// A matcher that would not build, named by the config file it was built from.
fn filter_error(config: &Config, source: FilterError) -> EngineError {
    EngineError::Filter {
        path: config.path.display().to_string(),
        source,
    }
}

/// Device names and MACs from `[server] dhcp_leases`, if set. A lease file that cannot
/// be read is logged and ignored: names are labels for the audit log, never worth
/// failing over.
fn read_leases(config: &Config) -> crate::policy::clients::Leases {
    let Some(path) = &config.server.dhcp_leases else {
        return Default::default();
    };
    let path = config.resolve(path);
    crate::policy::clients::read_leases(&path, std::time::SystemTime::now()).unwrap_or_else(|error| {
        tracing::warn!(path = %path.display(), %error, "cannot read the DHCP lease file; devices are shown by address");
        Default::default()
    })
}

/// Directory groups from `[identity] directory`, if set. A file that cannot be read is
/// logged and ignored (people then filter by their device's group); bad lines are
/// named and skipped.
fn read_directory(config: &Config) -> crate::identity::Directory {
    let Some(path) = &config.identity.directory else {
        return Default::default();
    };
    let path = config.resolve(path);
    match crate::identity::Directory::read(&path) {
        Ok((directory, problems)) => {
            for (line, why) in problems {
                tracing::warn!("{}:{line}: {why} (line skipped)", path.display());
            }
            directory
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the [identity] directory file; people filter by their device's group");
            Default::default()
        }
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
