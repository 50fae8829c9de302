//! Two matchers consulted as one: a large *base* (the big lists, rebuilt only when one
//! of them changes, shared by `Arc` from one snapshot to the next) and a small
//! *overlay* (the small, often edited lists: allow entries, local lists), rebuilt on
//! every change in milliseconds.
//!
//! A lookup gives exactly the verdict one matcher holding every list would give (the
//! semantics in the parent module; `tests/semantics.rs` checks it over random splits):
//! both layers share categories and hash seed, so the query's suffixes are hashed once
//! and each suffix is probed in both; per suffix the entry bits of both layers are
//! combined before the precedence rules (most specific wins, allow wins a tie, locked
//! always wins) are applied; and the rule a verdict names is the one the single matcher
//! would name: the first in list order (each list part carries its rank in the whole
//! rule set's order), name entries before hashed ones.
//!
//! Without an overlay, a lookup is the base's own, at its cost. With one, a filter of
//! the overlay's names (a bit per slice of hash values) sends a query none of whose
//! suffixes can be in it to the base alone, after one bit test per suffix.

use std::sync::Arc;

use super::{
    label_hash, Block, Category, CategoryId, CategorySet, FilterError, Matcher, MatcherStats,
    RuleRef, Suffixes, Value, Verdict, ALLOW_BIT, ROOT_HASH,
};

/// A base matcher and an optional overlay, looked up as one.
#[derive(Debug)]
pub struct Layers {
    base: Arc<Matcher>,
    /// `None` when the overlay holds no rule: lookups then cost what the base's do.
    overlay: Option<Matcher>,
    /// One bit per slice of hash values, set where the overlay has a name: most of a
    /// query's suffixes are in no small list, and testing a bit costs less than probing
    /// the overlay's table (measured: `cargo bench --bench reload`).
    filter: Vec<u64>,
}

/// Filter bits per overlay name (about 1 suffix in 16 not in the overlay is probed).
const FILTER_BITS_PER_NAME: usize = 16;

/// What one layer lists for one suffix of the query.
#[derive(Debug, Clone, Copy, Default)]
struct Side {
    /// The name entry.
    name: Option<Value>,
    /// The hashed (`sha256:`) entry.
    hashed: Option<Value>,
}

/// A suffix listed in either layer.
#[derive(Debug, Clone, Copy)]
struct Hit {
    /// Byte offset where the suffix starts in the query.
    start: usize,
    /// Entry bits of both layers, restricted to the active categories (and allow).
    bits: u64,
    base: Side,
    overlay: Side,
}

impl Layers {
    /// One matcher, no overlay.
    pub fn single(matcher: Matcher) -> Layers {
        Layers {
            base: Arc::new(matcher),
            overlay: None,
            filter: Vec::new(),
        }
    }

    /// `base` with `overlay`, which must have been built for it
    /// ([`super::MatcherBuilder::layer_over`] or `layer_beside`): same categories, same
    /// hash seed.
    pub fn new(base: Arc<Matcher>, overlay: Matcher) -> Result<Layers, FilterError> {
        let probe = |m: &Matcher| label_hash(&m.hasher, ROOT_HASH, b"warden");
        if base.categories != overlay.categories || probe(&base) != probe(&overlay) {
            return Err(FilterError::LayerMismatch);
        }
        if overlay.stats.rules == 0 {
            return Ok(Layers {
                base,
                overlay: None,
                filter: Vec::new(),
            });
        }
        let words = (overlay.stats.names as usize * FILTER_BITS_PER_NAME)
            .div_ceil(64)
            .next_power_of_two();
        let mut filter = vec![0u64; words];
        // A bucket keeps hash bits 0..48 of each name (`hi` is bits 16..48): enough to
        // place its bit, the same one `filter_bit` finds from the query's whole hash.
        for bucket in &overlay.buckets {
            for i in 0..super::BUCKET {
                if (bucket.hi[i], bucket.lo[i]) != (0, 0) {
                    let (word, bit) = filter_bit(u64::from(bucket.hi[i]) << 16, words);
                    filter[word] |= bit;
                }
            }
        }
        Ok(Layers {
            base,
            overlay: Some(overlay),
            filter,
        })
    }

    /// Whether the overlay may list a name with hash `hash`.
    #[inline(always)]
    fn in_overlay(&self, hash: u64) -> bool {
        let (word, bit) = filter_bit(hash, self.filter.len());
        self.filter[word] & bit != 0
    }

    /// The base layer (shared with the snapshots built on it).
    pub fn base(&self) -> &Arc<Matcher> {
        &self.base
    }

    /// The overlay, if it holds any rule.
    pub fn overlay(&self) -> Option<&Matcher> {
        self.overlay.as_ref()
    }

    /// Decide `name` as [`Matcher::lookup`] does, over both layers. Does not allocate.
    pub fn lookup<'a>(&'a self, name: &'a str, active: CategorySet) -> Verdict<'a> {
        let Some(overlay) = &self.overlay else {
            return self.base.lookup(name, active);
        };
        // One hashing serves both layers (same seed). When no suffix is in the overlay
        // (and it has no hashed entries), the base decides alone, at its own cost plus a
        // bit test per suffix: the overlay's table is probed only where the filter has
        // the bit (a false one, say on `com`, would otherwise send every name under it
        // down the slower path below).
        let suffixes = self.base.suffixes(name);
        let in_overlay =
            |&(hash, _): &(u64, usize)| self.in_overlay(hash) && overlay.find(hash).is_some();
        if overlay.hashed.is_empty() && !suffixes.iter().any(in_overlay) {
            return self.base.decide(name, &suffixes, active);
        }
        let active = active.union(self.base.locked).0 | ALLOW_BIT;
        let locked_bits = self.base.locked.0;
        // Suffixes come shortest first, so a later hit is always the more specific one.
        let mut decisive: Option<Hit> = None;
        let mut locked: Option<Hit> = None;
        self.walk(overlay, name, &suffixes, |hit| {
            let hit = Hit {
                bits: hit.bits & active,
                ..hit
            };
            if hit.bits & locked_bits != 0 {
                locked = Some(hit);
            }
            if hit.bits != 0 {
                decisive = Some(hit);
            }
        });
        if let Some(hit) = locked {
            return Verdict::Blocked(self.block_from(overlay, hit, name, true));
        }
        match decisive {
            None => Verdict::Allowed { exception: None },
            Some(hit) if hit.bits & ALLOW_BIT != 0 => Verdict::Allowed {
                exception: Some(self.rule_ref(overlay, &hit, ALLOW_BIT, name)),
            },
            Some(hit) => Verdict::Blocked(self.block_from(overlay, hit, name, false)),
        }
    }

    /// Report every suffix of `name` listed in either layer, shortest first (as
    /// `Matcher::walk` does for one).
    fn walk(
        &self,
        overlay: &Matcher,
        name: &str,
        suffixes: &Suffixes,
        mut report: impl FnMut(Hit),
    ) {
        let base = &*self.base;
        let overlay_hashed = !overlay.hashed.is_empty();
        for &(hash, start) in suffixes {
            let b = side(base, hash, name, start);
            let o = if overlay_hashed || self.in_overlay(hash) {
                side(overlay, hash, name, start)
            } else {
                Side::default()
            };
            let bits = side_bits(base, b) | side_bits(overlay, o);
            if bits != 0 {
                report(Hit {
                    start,
                    bits,
                    base: b,
                    overlay: o,
                });
            }
        }
    }

    fn block_from<'a>(
        &'a self,
        overlay: &'a Matcher,
        hit: Hit,
        name: &'a str,
        locked: bool,
    ) -> Block<'a> {
        let categories = hit.bits & !ALLOW_BIT;
        let wanted = if locked {
            categories & self.base.locked.0
        } else {
            categories
        };
        Block {
            categories: CategorySet(categories),
            locked,
            rule: self.rule_ref(overlay, &hit, wanted, name),
        }
    }

    /// The rule one matcher of every list would name for `hit`: among the rules whose
    /// list's bits meet `wanted`, name entries first, then hashed ones, the first in list
    /// order.
    fn rule_ref<'a>(
        &'a self,
        overlay: &'a Matcher,
        hit: &Hit,
        wanted: u64,
        name: &'a str,
    ) -> RuleRef<'a> {
        let layers = [(&*self.base, hit.base), (overlay, hit.overlay)];
        let first = |pick: fn(Side) -> Option<Value>| {
            layers
                .iter()
                .filter_map(|&(m, s)| {
                    let rule = m
                        .rules_of(pick(s)?)
                        .find(|&r| rule_bits(m, r) & wanted != 0)?;
                    Some((m, rule))
                })
                .min_by_key(|&(m, rule)| m.parts[m.part_of(rule)].rank)
        };
        // Some rule always meets `wanted` (it is drawn from the hit's bits); the
        // fallback only keeps this total.
        let (matcher, rule) = first(|s| s.name)
            .or_else(|| first(|s| s.hashed))
            .unwrap_or((&*self.base, 0));
        RuleRef {
            matcher,
            rule,
            matched: &name[hit.start..],
        }
    }

    /// The categories, numbered as [`CategoryId`]s (both layers share them).
    pub fn categories(&self) -> &[Category] {
        self.base.categories()
    }
    pub fn category(&self, id: CategoryId) -> &Category {
        self.base.category(id)
    }
    pub fn category_id(&self, name: &str) -> Option<CategoryId> {
        self.base.category_id(name)
    }
    /// See [`Matcher::category_names`].
    pub fn category_names(&self, set: CategorySet) -> std::borrow::Cow<'_, str> {
        self.base.category_names(set)
    }
    pub fn locked(&self) -> CategorySet {
        self.base.locked()
    }
    pub fn all_categories(&self) -> CategorySet {
        self.base.all_categories()
    }

    /// Both layers' counts added up (a name listed in both counts twice in `names`).
    pub fn stats(&self) -> MatcherStats {
        let (b, o) = (
            self.base.stats(),
            self.overlay
                .as_ref()
                .map(Matcher::stats)
                .unwrap_or_default(),
        );
        MatcherStats {
            rules: b.rules + o.rules,
            names: b.names + o.names,
            hashed: b.hashed + o.hashed,
            shadowed: b.shadowed + o.shadowed,
        }
    }

    /// Heap bytes held by both layers.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.base.heap_bytes() + self.overlay.as_ref().map_or(0, Matcher::heap_bytes)
    }
}

/// The filter word and bit of a name whose hash is `hash`, in a filter of `words`
/// words (a power of 2). From hash bits 16..48: a bucket keeps them as they are (`hi`;
/// the build refuses the one hash a fingerprint would alter), and the table's bucket
/// choice hardly uses them.
#[inline(always)]
fn filter_bit(hash: u64, words: usize) -> (usize, u64) {
    let slice = (hash >> 16) as u32 as usize;
    ((slice >> 6) & (words - 1), 1 << (slice & 63))
}

/// What `m` lists for the suffix of `name` at `start` whose hash is `hash`.
#[inline(always)]
fn side(m: &Matcher, hash: u64, name: &str, start: usize) -> Side {
    Side {
        name: m.find(hash),
        hashed: if m.hashed.is_empty() {
            None
        } else {
            m.hashed_value(&name[start..])
        },
    }
}

/// Entry bits of everything `m` lists for a suffix.
#[inline(always)]
fn side_bits(m: &Matcher, s: Side) -> u64 {
    s.name.map_or(0, |v| m.entry_bits(v)) | s.hashed.map_or(0, |v| m.entry_bits(v))
}

/// Entry bits of the list part rule `rule` of `m` belongs to.
fn rule_bits(m: &Matcher, rule: u32) -> u64 {
    m.parts[m.part_of(rule)].bits
}
