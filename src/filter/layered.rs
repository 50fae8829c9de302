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
//! Without an overlay, a lookup is the base's own, at its cost.

use std::sync::Arc;

use arrayvec::ArrayVec;

use super::{
    first_bucket, label_hash, label_start, prefetch, Block, Category, CategoryId, CategorySet,
    FilterError, Matcher, MatcherStats, RuleRef, Value, Verdict, ALLOW_BIT, MAX_LABELS, ROOT_HASH,
};

/// A base matcher and an optional overlay, looked up as one.
#[derive(Debug)]
pub struct Layers {
    base: Arc<Matcher>,
    /// `None` when the overlay holds no rule: lookups then cost what the base's do.
    overlay: Option<Matcher>,
}

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
        let empty = overlay.stats.rules == 0;
        Ok(Layers {
            base,
            overlay: (!empty).then_some(overlay),
        })
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
        let active = active.union(self.base.locked).0 | ALLOW_BIT;
        let locked_bits = self.base.locked.0;
        // Suffixes come shortest first, so a later hit is always the more specific one.
        let mut decisive: Option<Hit> = None;
        let mut locked: Option<Hit> = None;
        self.walk(overlay, name, |hit| {
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
    /// [`Matcher::walk`], probing the overlay with the same hashes).
    fn walk(&self, overlay: &Matcher, name: &str, mut report: impl FnMut(Hit)) {
        let base = &*self.base;
        let bytes = name.as_bytes();
        let mut suffixes: ArrayVec<(u64, usize), MAX_LABELS> = ArrayVec::new();
        let n = base.buckets.len();
        let mut hash = ROOT_HASH;
        let mut end = bytes.len();
        while end > 0 && !suffixes.is_full() {
            let start = label_start(bytes, end);
            hash = label_hash(&base.hasher, hash, &bytes[start..end]);
            if n > 0 {
                prefetch(&base.buckets[first_bucket(hash, n)]);
            }
            suffixes.push((hash, start));
            if start == 0 {
                break;
            }
            end = start - 1;
        }
        for &(hash, start) in &suffixes {
            let (b, o) = (
                side(base, hash, name, start),
                side(overlay, hash, name, start),
            );
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
