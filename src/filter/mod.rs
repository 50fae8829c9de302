//! The filter core: an immutable, compact matcher from domain names to verdicts.
//!
//! Pure: no I/O, no async, no locks. Built once from parsed rules ([`MatcherBuilder`]),
//! then shared read-only (the reload module swaps whole matchers in and out).
//!
//! # Semantics
//! - A listed domain matches itself and every subdomain (`a.test` matches `x.y.a.test`,
//!   not `xa.test`).
//! - An **allow** entry (an `[[allow]]` list, or an exception rule such as `@@||a.test^`
//!   or `CNAME rpz-passthru.` inside any list) exempts the name and its subdomains.
//! - Entries whose categories are all inactive for the asking client are ignored; among
//!   the remaining matching entries the **most specific** (longest) one decides. At equal
//!   specificity, allow beats block.
//! - A **locked** category (statutory lists: terrorism, child abuse) is always active,
//!   whatever the caller passes, and a locked match blocks whatever any allow entry says,
//!   at any depth.
//! - A name may be listed in several categories: the verdict carries every active
//!   category of the deciding entry, and names one deciding rule (list, line, rule text).
//!
//! Truth table (rules → query `x.a.test`; "adult" active, "social" inactive,
//! "terror" locked), pinned by `tests/semantics.rs`:
//!
//! | rules                                      | verdict                        |
//! |--------------------------------------------|--------------------------------|
//! | (none)                                     | allowed                        |
//! | block a.test (adult)                       | blocked adult by a.test        |
//! | block a.test (social)                      | allowed (inactive)             |
//! | block a.test (adult), allow x.a.test       | allowed (exception)            |
//! | allow a.test, block x.a.test (adult)       | blocked (more specific)        |
//! | block x.a.test (adult), allow x.a.test     | allowed (tie: allow wins)      |
//! | block a.test (terror), allow x.a.test      | blocked terror (locked)        |
//! | block a.test (adult+social)                | blocked adult only             |
//! | block test (adult) [single label]          | refused at parse time          |
//!
//! # Structure and cost
//! The matcher is a reversed-label trie stored implicitly: a node is named by a keyed
//! 64-bit hash of its label path from the root (`h(a.test) = H(h(test), "a")`), and only
//! nodes that carry rules are stored, in one open-addressing table: 12-byte slots (the
//! node hash and its value) and, in parallel, 16-bit tags in cache-line groups of 32, as
//! SwissTable does with its control bytes. A probe compares one group of tags (one cache
//! line, SIMD-friendly) and reads a slot only where a tag matches, so a miss costs about
//! one cache line per suffix. Label text is not stored at all: a verdict names the
//! matched suffix of the query itself.
//!
//! A lookup hashes the query's suffixes right to left (no memory touched), then probes
//! the table once per suffix. The probes are independent loads, so their cache misses
//! overlap instead of queueing one behind another as in a pointer-chasing trie or FST
//! (measured: see `benches/README.md`). Suffixes like `com` land on the same slot every
//! time and stay in cache.
//!
//! Exactness: the hash is keyed with a random seed per build (foldhash's quality
//! hasher), so names cannot be crafted to collide. Two distinct *listed* names that
//! collide are detected at build time, which then retries with a new seed. A query name
//! that is not listed can only match by a chance 64-bit collision with a listed node:
//! under 10^-12 per query even for millions of rules.
//!
//! The value of a slot names either one rule or a small set (a name listed in several
//! categories), and a table of runs maps a rule number back to its list, syntax and line
//! without storing a line per rule. Hashed (`sha256:`) entries live in a sorted table,
//! searched once per suffix only when any are loaded.

mod builder;

pub use builder::{FilterError, MatcherBuilder};

use crate::lists::{parse::sha256_of, Syntax};
use std::hash::BuildHasher;

use arrayvec::ArrayVec;

/// Highest number of categories (one bit each; the top bit of an entry marks "allow").
pub const MAX_CATEGORIES: usize = 63;
const ALLOW_BIT: u64 = 1 << 63;

/// A set of categories as a bit mask (bit `i` = category number `i` of the matcher).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CategorySet(pub(crate) u64);

impl CategorySet {
    pub const EMPTY: CategorySet = CategorySet(0);

    pub fn with(self, id: CategoryId) -> CategorySet {
        CategorySet(self.0 | 1 << id.0)
    }
    pub fn contains(self, id: CategoryId) -> bool {
        self.0 & (1 << id.0) != 0
    }
    pub fn union(self, other: CategorySet) -> CategorySet {
        CategorySet(self.0 | other.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The categories in the set, lowest number first.
    pub fn iter(self) -> impl Iterator<Item = CategoryId> {
        (0..MAX_CATEGORIES as u8)
            .filter(move |i| self.0 & (1 << i) != 0)
            .map(CategoryId)
    }
}

/// A category's number within one matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CategoryId(pub(crate) u8);

/// A category as the matcher knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub name: String,
    pub locked: bool,
}

/// What a list does: block under a category, or allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Block(CategoryId),
    Allow,
}

/// A list as the matcher knows it (a list holding exception rules appears twice: its
/// exceptions are kept as a separate allow part with the same name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListPart {
    pub(crate) name: String,
    pub(crate) kind: ListKind,
    /// Entry bits of a rule of this part: its category bit, or the allow bit.
    pub(crate) bits: u64,
}

/// A stretch of consecutive rule numbers from one list part, in one syntax, on
/// consecutive lines: `line(rule) = first_line + (rule - first_rule)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) first_rule: u32,
    pub(crate) first_line: u32,
    pub(crate) part: u16,
    pub(crate) syntax: u8,
}

/// The immutable matcher. Build it with [`MatcherBuilder`].
#[derive(Debug)]
pub struct Matcher {
    pub(crate) categories: Vec<Category>,
    pub(crate) locked: CategorySet,
    pub(crate) parts: Vec<ListPart>,
    /// First rule number of each list part, ascending (parts are numbered in order).
    pub(crate) part_starts: Vec<u32>,
    /// For each block of 2^`PART_HINT_SHIFT` rule numbers, the part of its first rule.
    pub(crate) part_hint: Vec<u16>,
    pub(crate) runs: Vec<Run>,
    /// Seeded hasher for label paths.
    pub(crate) hasher: foldhash::quality::RandomState,
    /// Open-addressing table of rule-bearing nodes…
    pub(crate) table: Vec<Slot>,
    /// …and one tag per slot, `GROUP` to a cache line: `tag_of(hash)`, or 0 if empty.
    pub(crate) groups: Vec<TagGroup>,
    /// `sha256` entries, sorted by hash.
    pub(crate) hashed: Vec<([u8; 32], Value)>,
    /// Names with several rules: entry bits, and their rules in `multi_rules`.
    pub(crate) multi_bits: Vec<u64>,
    pub(crate) multi_starts: Vec<u32>,
    pub(crate) multi_rules: Vec<u32>,
    pub(crate) stats: MatcherStats,
}

/// Counts from the build, for `lists stats` and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MatcherStats {
    /// Rules given to the builder.
    pub rules: u64,
    /// Distinct names (nodes in the table).
    pub names: u64,
    /// Distinct hashed entries.
    pub hashed: u64,
    /// Rules dropped because an earlier list already put the same name in the same
    /// category (or already allowed it).
    pub shadowed: u64,
}

/// The value stored per name: one rule (`rule << 1`) or a multi entry (`idx << 1 | 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Value(pub(crate) u32);

/// One slot of the node table. Packed to 12 bytes: the table is most of the memory.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, packed(4))]
pub(crate) struct Slot {
    pub(crate) hash: u64,
    pub(crate) value: u32,
}

/// Most labels a name can have (253 octets: 127 one-letter labels).
const MAX_LABELS: usize = 128;
/// Rule numbers per `part_hint` entry.
pub(crate) const PART_HINT_SHIFT: u32 = 12;

/// One matching entry found during a walk.
#[derive(Debug, Clone, Copy)]
struct Hit {
    /// Byte offset where the matched suffix starts in the query (smaller = more specific).
    start: usize,
    /// Entry bits (categories and allow bit) of everything listed for this suffix.
    bits: u64,
    /// The name entry, or the hashed entry when there is no name entry.
    primary: Value,
    /// The hashed entry when the suffix also has a name entry.
    secondary: Option<Value>,
}

/// The outcome of a lookup.
#[derive(Debug, Clone, Copy)]
pub enum Verdict<'a> {
    /// No rule blocks the name. `exception` names the allow rule that decided, if any.
    Allowed {
        exception: Option<RuleRef<'a>>,
    },
    Blocked(Block<'a>),
}

impl<'a> Verdict<'a> {
    pub fn is_blocked(&self) -> bool {
        matches!(self, Verdict::Blocked(_))
    }
    pub fn block(&self) -> Option<&Block<'a>> {
        match self {
            Verdict::Blocked(b) => Some(b),
            Verdict::Allowed { .. } => None,
        }
    }
}

/// Why a name is blocked.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    /// Every active category of the deciding entry.
    pub categories: CategorySet,
    /// A locked category decided (no allow entry could have changed it).
    pub locked: bool,
    pub rule: RuleRef<'a>,
}

/// The rule that decided, resolvable to list name, line and text without allocating
/// until asked for the text.
#[derive(Debug, Clone, Copy)]
pub struct RuleRef<'a> {
    matcher: &'a Matcher,
    rule: u32,
    /// The listed name (a suffix of the query).
    pub matched: &'a str,
}

impl<'a> RuleRef<'a> {
    fn run(&self) -> &'a Run {
        let runs = &self.matcher.runs;
        let i = runs.partition_point(|r| r.first_rule <= self.rule);
        &runs[i - 1] // rule numbers start at run 0's first_rule = 0
    }
    pub fn list_name(&self) -> &'a str {
        &self.matcher.parts[self.run().part as usize].name
    }
    pub fn line(&self) -> u32 {
        let run = self.run();
        run.first_line + (self.rule - run.first_rule)
    }
    pub fn syntax(&self) -> Syntax {
        Syntax::ALL[self.run().syntax as usize]
    }
    /// The rule in the syntax its list used (canonical form; `line()` locates the
    /// original text).
    pub fn text(&self) -> String {
        self.syntax().render(self.matched)
    }
}

impl Matcher {
    /// Decide `name` (already normalised: lower case, no trailing dot) for a client whose
    /// active categories are `active`. Locked categories are added to `active` here, so no
    /// caller can switch them off. Does not allocate.
    pub fn lookup<'a>(&'a self, name: &'a str, active: CategorySet) -> Verdict<'a> {
        let active = active.union(self.locked).0 | ALLOW_BIT;
        // Suffixes come shortest first, so a later hit is always the more specific one.
        let mut decisive: Option<Hit> = None;
        let mut locked: Option<Hit> = None;
        self.walk(name, |hit| {
            let hit = Hit {
                bits: hit.bits & active,
                ..hit
            };
            if hit.bits & self.locked.0 != 0 {
                locked = Some(hit);
            }
            if hit.bits != 0 {
                decisive = Some(hit);
            }
        });
        if let Some(hit) = locked {
            return Verdict::Blocked(self.block_from(hit, name, true));
        }
        match decisive {
            None => Verdict::Allowed { exception: None },
            Some(hit) if hit.bits & ALLOW_BIT != 0 => Verdict::Allowed {
                exception: Some(self.rule_ref(self.pick_rule(&hit, ALLOW_BIT), name, hit)),
            },
            Some(hit) => Verdict::Blocked(self.block_from(hit, name, false)),
        }
    }

    /// Report every listed suffix of `name`, shortest first, once each, combining the
    /// node table and (when any are loaded) the hashed entries per suffix.
    fn walk(&self, name: &str, mut report: impl FnMut(Hit)) {
        let bytes = name.as_bytes();
        // Pass 1: hash every suffix and start loading its tag group. No table memory is
        // read yet, so the loads run side by side instead of one after another.
        let mut hashes: ArrayVec<u64, MAX_LABELS> = ArrayVec::new();
        let n = self.groups.len();
        let mut hash = ROOT_HASH;
        let mut end = bytes.len();
        while end > 0 && !hashes.is_full() {
            let start = label_start(bytes, end);
            hash = label_hash(&self.hasher, hash, &bytes[start..end]);
            if n > 0 {
                prefetch(&self.groups[home(hash, n)]);
            }
            hashes.push(hash);
            if start == 0 {
                break;
            }
            end = start - 1;
        }
        // Pass 2: probe, shortest suffix first.
        let hashed = !self.hashed.is_empty();
        let mut end = bytes.len();
        for &hash in &hashes {
            let start = label_start(bytes, end);
            end = start.saturating_sub(1);
            let by_name = self.find(hash);
            let by_hash = if hashed {
                self.hashed_value(&name[start..])
            } else {
                None
            };
            let (primary, secondary) = match (by_name, by_hash) {
                (Some(a), b) => (a, b),
                (None, Some(b)) => (b, None),
                (None, None) => continue,
            };
            let bits = self.entry_bits(primary) | secondary.map_or(0, |v| self.entry_bits(v));
            report(Hit {
                start,
                bits,
                primary,
                secondary,
            });
        }
    }

    /// Probe group by group from the node's home group: compare the tags, read a slot
    /// only where its tag matches; a group with a free tag ends the search.
    fn find(&self, hash: u64) -> Option<Value> {
        let n = self.groups.len();
        if n == 0 {
            return None;
        }
        let tag = tag_of(hash);
        let mut g = home(hash, n);
        loop {
            let group = &self.groups[g];
            let mut matches = group.matching(tag);
            while matches != 0 {
                let i = matches.trailing_zeros() as usize;
                let slot = self.table[g * GROUP + i];
                if slot.hash == hash {
                    return Some(Value(slot.value));
                }
                matches &= matches - 1;
            }
            if group.matching(0) != 0 {
                return None;
            }
            g = if g + 1 == n { 0 } else { g + 1 };
        }
    }

    fn hashed_value(&self, suffix: &str) -> Option<Value> {
        let hash = sha256_of(suffix);
        self.hashed
            .binary_search_by(|(h, _)| h.cmp(&hash))
            .ok()
            .map(|i| self.hashed[i].1)
    }

    /// Category bits (and allow bit) of an entry, before restricting to active ones.
    fn entry_bits(&self, value: Value) -> u64 {
        if value.0 & 1 == 1 {
            self.multi_bits[(value.0 >> 1) as usize]
        } else {
            self.parts[self.part_of(value.0 >> 1)].bits
        }
    }

    /// The list part a rule belongs to: a table lookup, then rarely a step or two.
    fn part_of(&self, rule: u32) -> usize {
        let mut part = usize::from(self.part_hint[(rule >> PART_HINT_SHIFT) as usize]);
        while part + 1 < self.part_starts.len() && self.part_starts[part + 1] <= rule {
            part += 1;
        }
        part
    }

    /// The first rule of the hit (name entry first, then hashed) whose list's bits meet
    /// `wanted`.
    fn pick_rule(&self, hit: &Hit, wanted: u64) -> u32 {
        if hit.secondary.is_none() && hit.primary.0 & 1 == 0 {
            return hit.primary.0 >> 1; // one rule: the hit's bits are its bits
        }
        let candidates = self
            .rules_of(hit.primary)
            .chain(hit.secondary.into_iter().flat_map(|v| self.rules_of(v)));
        let mut first = None;
        for rule in candidates {
            first.get_or_insert(rule);
            if self.parts[self.part_of(rule)].bits & wanted != 0 {
                return rule;
            }
        }
        first.unwrap_or(0) // every value names at least one rule
    }

    /// The rules behind a value.
    fn rules_of(&self, value: Value) -> impl Iterator<Item = u32> + '_ {
        let (single, range) = if value.0 & 1 == 0 {
            (Some(value.0 >> 1), 0..0)
        } else {
            let i = (value.0 >> 1) as usize;
            let range = self.multi_starts[i] as usize..self.multi_starts[i + 1] as usize;
            (None, range)
        };
        single
            .into_iter()
            .chain(self.multi_rules[range].iter().copied())
    }

    fn block_from<'a>(&'a self, hit: Hit, name: &'a str, locked: bool) -> Block<'a> {
        let categories = hit.bits & !ALLOW_BIT;
        let wanted = if locked {
            categories & self.locked.0
        } else {
            categories
        };
        Block {
            categories: CategorySet(categories),
            locked,
            rule: self.rule_ref(self.pick_rule(&hit, wanted), name, hit),
        }
    }

    fn rule_ref<'a>(&'a self, rule: u32, name: &'a str, hit: Hit) -> RuleRef<'a> {
        RuleRef {
            matcher: self,
            rule,
            matched: &name[hit.start..],
        }
    }

    /// The categories, numbered as [`CategoryId`]s.
    pub fn categories(&self) -> &[Category] {
        &self.categories
    }
    pub fn category(&self, id: CategoryId) -> &Category {
        &self.categories[id.0 as usize]
    }
    pub fn category_id(&self, name: &str) -> Option<CategoryId> {
        self.categories
            .iter()
            .position(|c| c.name == name)
            .map(|i| CategoryId(i as u8))
    }
    /// Names of the categories in `set`, comma-separated (for output and logs). Borrows
    /// when there is one category, the usual case, so the query path need not allocate.
    pub fn category_names(&self, set: CategorySet) -> std::borrow::Cow<'_, str> {
        let mut ids = set.iter();
        match (ids.next(), ids.next()) {
            (None, _) => std::borrow::Cow::Borrowed(""),
            (Some(only), None) => std::borrow::Cow::Borrowed(&self.category(only).name),
            _ => std::borrow::Cow::Owned(
                set.iter()
                    .map(|id| self.category(id).name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        }
    }
    pub fn locked(&self) -> CategorySet {
        self.locked
    }
    /// Every category (for clients with no group restriction).
    pub fn all_categories(&self) -> CategorySet {
        CategorySet(((1u128 << self.categories.len()) - 1) as u64)
    }
    pub fn stats(&self) -> MatcherStats {
        self.stats
    }

    /// Heap bytes held by this matcher (what the benchmarks report per rule).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.table.capacity() * size_of::<Slot>()
            + self.groups.capacity() * size_of::<TagGroup>()
            + self.runs.capacity() * size_of::<Run>()
            + self.part_starts.capacity() * 4
            + self.part_hint.capacity() * 2
            + self.hashed.capacity() * size_of::<([u8; 32], Value)>()
            + self.multi_bits.capacity() * 8
            + self.multi_starts.capacity() * 4
            + self.multi_rules.capacity() * 4
            + self
                .parts
                .iter()
                .map(|p| size_of::<ListPart>() + p.name.capacity())
                .sum::<usize>()
            + self
                .categories
                .iter()
                .map(|c| size_of::<Category>() + c.name.capacity())
                .sum::<usize>()
    }
}

/// Where the label ending at `end` starts (just after the dot before it, or at 0).
fn label_start(bytes: &[u8], end: usize) -> usize {
    bytes[..end]
        .iter()
        .rposition(|&b| b == b'.')
        .map_or(0, |dot| dot + 1)
}

/// The hash of the root (the empty label path).
const ROOT_HASH: u64 = 0x9e37_79b9_7f4a_7c15;

/// The hash of the node one label below `parent`. Never 0 (0 marks an empty slot).
pub(crate) fn label_hash(
    hasher: &foldhash::quality::RandomState,
    parent: u64,
    label: &[u8],
) -> u64 {
    use std::hash::Hasher;
    // No length prefix needed: foldhash folds the length into `write` itself.
    let mut h = hasher.build_hasher();
    h.write_u64(parent);
    h.write(label);
    h.finish().max(1)
}

/// Ask the CPU to start loading `slot`'s cache line (a hint: no effect on results).
#[inline(always)]
fn prefetch<T>(slot: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint and never faults; the pointer comes from a reference.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((slot as *const T).cast());
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `prfm` is a hint and never faults; the pointer comes from a reference.
    unsafe {
        std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) slot as *const T, options(nostack, readonly, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = slot;
}

/// A node's preferred slot: the hash scaled onto the table (no power-of-two sizing).
pub(crate) fn home(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// Slots per tag group: 32 tags of 16 bits fill one 64-byte cache line.
pub(crate) const GROUP: usize = 32;

/// The tags of one group of slots, aligned to a cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct TagGroup(pub(crate) [u16; GROUP]);

impl TagGroup {
    /// Bit `i` set where tag `i` equals `tag`.
    #[inline(always)]
    pub(crate) fn matching(&self, tag: u16) -> u32 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is part of the x86_64 baseline; the group is 64-byte aligned, so
        // the four aligned 16-byte loads stay inside it.
        unsafe {
            use std::arch::x86_64::*;
            let needle = _mm_set1_epi16(tag as i16);
            let p = self.0.as_ptr().cast::<__m128i>();
            let mut mask = 0u32;
            for half in 0..2 {
                let a = _mm_cmpeq_epi16(_mm_load_si128(p.add(2 * half)), needle);
                let b = _mm_cmpeq_epi16(_mm_load_si128(p.add(2 * half + 1)), needle);
                // Narrow 16 lanes of 0/0xFFFF to bytes, then one bit per tag.
                let bytes = _mm_packs_epi16(a, b);
                mask |= (_mm_movemask_epi8(bytes) as u32) << (16 * half);
            }
            mask
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let mut mask = 0u32;
            for (i, &t) in self.0.iter().enumerate() {
                mask |= u32::from(t == tag) << i;
            }
            mask
        }
    }
}

/// A slot's tag: 16 bits of its hash that `home` hardly uses, never 0 (empty).
pub(crate) fn tag_of(hash: u64) -> u16 {
    (hash as u16).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_group_matching_agrees_with_a_plain_scan() {
        let mut group = TagGroup([0; GROUP]);
        for (i, t) in group.0.iter_mut().enumerate() {
            *t = match i % 5 {
                0 => 0,
                1 => 0x8001, // high bit set: must not be mistaken by signed packing
                2 => 7,
                3 => 0xffff,
                _ => i as u16,
            };
        }
        for tag in [0u16, 7, 0x8001, 0xffff, 4, 9, 31, 12345] {
            let expected = group
                .0
                .iter()
                .enumerate()
                .fold(0u32, |m, (i, &t)| m | (u32::from(t == tag) << i));
            assert_eq!(group.matching(tag), expected, "tag {tag:#x}");
        }
    }

    #[test]
    fn home_spreads_over_the_table() {
        assert_eq!(home(0, 10), 0);
        assert_eq!(home(u64::MAX, 10), 9);
        assert_eq!(home(u64::MAX / 2, 10), 4);
    }
}
