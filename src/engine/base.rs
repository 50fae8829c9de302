//! Which lists go into a snapshot's base layer, and whether a reload may keep it.
//!
//! The main matcher is built in two layers (`filter::Layers`): a list of at most
//! [`SMALL_LIST_ENTRIES`] entries (the dashboard's allow entries, a school's own short
//! lists) goes to the overlay, which every reload rebuilds in milliseconds, as long as
//! the overlay stays within [`OVERLAY_MAX_ENTRIES`] (lists taken in list order, so the
//! dashboard's entries, last, are the first to miss out when many small lists fill it:
//! its changes then cost a whole build, as before layering); the others (the big
//! category lists, ~2M names) go to the base, which takes seconds to build. A reload keeps the serving snapshot's base (the same `Arc`) when everything it
//! was built from is unchanged: the categories, `max_list_bytes`, and each of its lists'
//! config entry, place in the list order and file [`Stamp`]. Otherwise it rebuilds both.
//!
//! Small is decided by entries, not by name: a list is read whole and counted only when
//! its file is at most [`SMALL_LIST_BYTES`] (a bigger file streams straight into the
//! base, as before layering, so no big list is ever held whole).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{Config, DASHBOARD_ALLOW};
use crate::lists::{Format, LoadedList};

/// Lists with at most this many entries go to the overlay (while it has room: see
/// [`OVERLAY_MAX_ENTRIES`]): what an admin edits by hand, the dashboard's allow entries.
/// Measured with the bench's rule set (`cargo bench --bench reload`, 81 real lists): at
/// 20,000 per list (no total) 66 lists, 145,000 rules, went to the overlay: small
/// reloads took 250 ms and lookups through both layers 1.27× the base's alone; at 2,000
/// (25,000 in all) 32 ms and 1.075× (the overlay's filter, 64 KiB, missed the caches).
pub(crate) const SMALL_LIST_ENTRIES: u64 = 500;

/// The most entries the overlay takes, in list order: what bounds a small reload's
/// work, and the overlay filter's size (a lookup tests it for every suffix: at this
/// size it is at most 16 KiB).
pub(crate) const OVERLAY_MAX_ENTRIES: u64 = 6_000;

/// Files at most this big are read whole and counted; bigger ones go to the base
/// unread. 500 hosts lines of the longest names fit; a file this size may hold more
/// short ones (or a gzip file many more): it is then counted and sent to the base.
pub(crate) const SMALL_LIST_BYTES: u64 = 128 * 1024;

/// What says a list file is the one the base was built from, without reading it.
///
/// Hashing the contents would cost more than the overlay's whole reload (the big lists
/// are ~60 MB). Instead: the size, the modification time, the inode change time (which
/// no user tool can set back; every write or rename moves it) and the inode (a file
/// replaced by renaming onto it, as downloads and editors do, is a new inode). Left
/// open: two writes of the same size to the same file within one tick of the kernel's
/// file clock (a few ms) on either side of a reload's `stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    changed: (i64, i64),
    inode: (u64, u64),
}

/// The stamp of the file at `path`, or `None` if it cannot be read.
pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let (changed, inode) = {
        use std::os::unix::fs::MetadataExt;
        ((meta.ctime(), meta.ctime_nsec()), (meta.dev(), meta.ino()))
    };
    #[cfg(not(unix))]
    let (changed, inode) = ((0, 0), (0, 0));
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        changed,
        inode,
    })
}

/// One list of the main matcher (every group's), as the build will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    /// Its place in the snapshot's list order (see [`rank_of_deny`]).
    pub(crate) rank: u32,
    pub(crate) name: String,
    /// The category it blocks, or `None` for an allow list.
    pub(crate) category: Option<String>,
    pub(crate) path: PathBuf,
    pub(crate) format: Format,
    /// A `url` list: a missing file is a download still awaited, not an error.
    pub(crate) downloaded: bool,
    pub(crate) stamp: Option<Stamp>,
}

impl Source {
    /// A download that has never succeeded: an empty list, not an error.
    pub(crate) fn awaited(&self) -> bool {
        self.downloaded && self.stamp.is_none()
    }

    /// Small enough to read whole and count (see [`SMALL_LIST_BYTES`]).
    pub(crate) fn may_be_small(&self) -> bool {
        self.stamp
            .as_ref()
            .is_none_or(|s| s.len <= SMALL_LIST_BYTES)
    }
}

/// The main matcher's lists in build order, each stamped now (before it is read, so a
/// write during the build shows as a change at the next reload): the block lists, the
/// allow lists for every group, then the dashboard's allow entries if the file exists.
pub(crate) fn sources(config: &Config) -> Vec<Source> {
    let mut out = Vec::with_capacity(config.lists.len() + config.allow.len() + 1);
    for (i, list) in config.lists.iter().enumerate() {
        let path = list.file(config);
        out.push(Source {
            rank: i as u32,
            name: list.name.get_ref().clone(),
            category: Some(list.category.get_ref().clone()),
            stamp: stamp(&path),
            path,
            format: list.format,
            downloaded: list.url.is_some(),
        });
    }
    for (j, allow) in config.allow.iter().enumerate() {
        if !allow.groups.is_empty() {
            continue; // in the groups' own matchers, rebuilt by every reload
        }
        let path = config.resolve(&allow.path);
        out.push(Source {
            rank: rank_of_allow(config, j),
            name: allow.name.get_ref().clone(),
            category: None,
            stamp: stamp(&path),
            path,
            format: allow.format,
            downloaded: false,
        });
    }
    let path = config.resolve(&config.dashboard.allow_file);
    // The trust's policy may keep allow entries to the trust: the site's own then stay
    // in their file (shown, not applied) until it permits them again.
    let permitted = config.local_allow_permitted();
    if let Some(stamp) = stamp(&path).filter(|_| permitted) {
        out.push(Source {
            rank: rank_of_allow(config, config.allow.len()),
            name: DASHBOARD_ALLOW.to_string(),
            category: None,
            path,
            format: Format::Domains,
            downloaded: false,
            stamp: Some(stamp),
        });
    }
    out
}

/// The rank of the `j`th allow list (`allow.len()`: the dashboard's entries).
pub(crate) fn rank_of_allow(config: &Config, j: usize) -> u32 {
    (config.lists.len() + j) as u32
}

/// The rank of the `k`th deny list: after every list of the main matcher.
pub(crate) fn rank_of_deny(config: &Config, k: usize) -> u32 {
    (config.lists.len() + config.allow.len() + 1 + k) as u32
}

/// What a base layer was built from, and its lists' load reports (which a snapshot
/// keeping the base reports again).
#[derive(Debug)]
pub(crate) struct BaseLayer {
    categories: Vec<(String, bool)>,
    max_list_bytes: u64,
    sources: Vec<Source>,
    pub(crate) reports: Vec<(u32, LoadedList)>,
}

impl BaseLayer {
    pub(crate) fn new(
        config: &Config,
        sources: Vec<Source>,
        reports: Vec<(u32, LoadedList)>,
    ) -> BaseLayer {
        BaseLayer {
            categories: categories(config),
            max_list_bytes: config.reload.max_list_bytes,
            sources,
            reports,
        }
    }

    /// Whether a snapshot of `config`, whose main lists are `sources`, may keep this
    /// base: same categories and size cap, and every list of the base still there,
    /// unchanged and in the same place.
    pub(crate) fn reusable(&self, config: &Config, sources: &[Source]) -> bool {
        self.categories == categories(config)
            && self.max_list_bytes == config.reload.max_list_bytes
            && self.sources.iter().all(|s| sources.contains(s))
    }

    /// Whether `source` (unchanged) is in this base.
    pub(crate) fn holds(&self, source: &Source) -> bool {
        self.sources.contains(source)
    }

    /// How many lists it holds.
    pub(crate) fn len(&self) -> usize {
        self.sources.len()
    }
}

fn categories(config: &Config) -> Vec<(String, bool)> {
    config
        .categories
        .iter()
        .map(|(name, c)| (name.clone(), c.locked))
        .collect()
}
