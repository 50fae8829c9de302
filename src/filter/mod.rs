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
//! nodes that carry rules are stored. Label text is not stored at all: a verdict names
//! the matched suffix of the query itself.
//!
//! The nodes live in one two-choice bucketed hash table (as in cuckoo hashing). A bucket
//! is one 64-byte cache line holding up to six nodes, each a 48-bit fingerprint of its
//! hash and its 32-bit value, and a 32-bit *overflow filter*. Each node has a first and a
//! second bucket, both computed from its hash; it lives in its first unless that filled
//! up at build time, in which case it lives in its second and sets one bit (5 bits of its
//! hash) in its first bucket's filter.
//!
//! A lookup hashes the query's suffixes right to left (no memory touched) and starts
//! loading every suffix's first bucket, then probes shortest suffix first. The loads are
//! independent, so their cache misses overlap instead of queueing one behind another as
//! in a pointer-chasing trie or FST. A probe reads the one line: a hit finds its value
//! there, in the same line (no second, dependent load, unlike a separate tag array and
//! slot array, which is what this design replaced: see `benches/README.md`); a miss ends
//! there unless the filter has its bit. Only a hit on a node living in its second bucket
//! (11% of nodes) or a miss meeting a set bit (about 1.5%) reads a second line, after the
//! first. Suffixes like `com` land on the same line every time and stay in cache.
//!
//! The table's memory is asked to be backed by 2 MiB pages: lookups land on random lines
//! of a table of tens of MB, and with 4 KiB pages nearly every one also missed the TLB
//! (measured: see `benches/README.md`). It is a hint; without it results are the same.
//!
//! Exactness: the hash is keyed with a random seed per build (foldhash's quality
//! hasher), so names cannot be crafted to collide. The build tells names apart by their
//! whole 64-bit hash (it does not keep the names: see `builder`, "Memory"), so two
//! distinct listed names with equal hashes would share one node; with 2M names that is
//! about one build in 10^7, a fresh seed each build, accepted and documented there.
//! Distinct listed nodes whose 48-bit fingerprints meet in a bucket either of them is
//! looked up in are detected at build time and moved apart by resizing the table. A
//! query name that is not listed can only match by a chance equality of its 48-bit
//! fingerprint with one of the at most 12 nodes in the lines it reads: about 10^-13 per
//! suffix, whatever the number of rules.
//!
//! The value of a node names either one rule or a small set (a name listed in several
//! categories), and a table of runs maps a rule number back to its list, syntax and line
//! without storing a line per rule. Hashed (`sha256:`) entries live in a sorted table,
//! searched once per suffix only when any are loaded.

mod builder;
mod layered;

pub use builder::{FilterError, MatcherBuilder};
pub use layered::Layers;

use crate::lists::{parse::sha256_of, Syntax};
use std::hash::BuildHasher;

use arrayvec::ArrayVec;

/// Highest number of categories (one bit each; the top bit of an entry marks "allow").
pub const MAX_CATEGORIES: usize = crate::config::MAX_CATEGORIES;
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
    pub(crate) fn union(self, other: CategorySet) -> CategorySet {
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
    /// The list's place in the whole rule set's order, which decides which rule a
    /// verdict names when layers ([`Layers`]) hold rules for the same name (in one
    /// matcher, rule numbers already follow it).
    pub(crate) rank: u32,
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
    /// Two-choice table of rule-bearing nodes, one cache line per bucket (see the module
    /// documentation).
    pub(crate) buckets: Vec<Bucket>,
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

/// Most labels a name can have (253 octets: 127 one-letter labels).
const MAX_LABELS: usize = 128;

/// A query's suffixes, shortest first: the hash of each one's label path, and the byte
/// offset where it starts in the query.
pub(crate) type Suffixes = ArrayVec<(u64, usize), MAX_LABELS>;
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
        let suffixes = self.suffixes(name);
        self.decide(name, &suffixes, active)
    }

    /// [`Matcher::lookup`] once `suffixes` are `self.suffixes(name)` (or hashed with
    /// the same seed: see [`Layers`]).
    #[inline(always)]
    pub(crate) fn decide<'a>(
        &'a self,
        name: &'a str,
        suffixes: &Suffixes,
        active: CategorySet,
    ) -> Verdict<'a> {
        let active = active.union(self.locked).0 | ALLOW_BIT;
        // Suffixes come shortest first, so a later hit is always the more specific one.
        let mut decisive: Option<Hit> = None;
        let mut locked: Option<Hit> = None;
        self.walk(name, suffixes, |hit| {
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

    /// Hash every suffix of `name` (and note where it starts), shortest first, and start
    /// loading its first bucket. No table memory is read yet, so the loads run side by
    /// side instead of one after another.
    #[inline(always)]
    pub(crate) fn suffixes(&self, name: &str) -> Suffixes {
        let bytes = name.as_bytes();
        let mut suffixes = Suffixes::new();
        let n = self.buckets.len();
        let mut hash = ROOT_HASH;
        let mut end = bytes.len();
        while end > 0 && !suffixes.is_full() {
            let start = label_start(bytes, end);
            hash = label_hash(&self.hasher, hash, &bytes[start..end]);
            if n > 0 {
                prefetch(&self.buckets[first_bucket(hash, n)]);
            }
            suffixes.push((hash, start));
            if start == 0 {
                break;
            }
            end = start - 1;
        }
        suffixes
    }

    /// Report every listed suffix of `name` (`suffixes`, from [`Matcher::suffixes`]),
    /// shortest first, once each, combining the node table and (when any are loaded) the
    /// hashed entries per suffix.
    #[inline(always)]
    fn walk(&self, name: &str, suffixes: &Suffixes, mut report: impl FnMut(Hit)) {
        // Probe, shortest suffix first.
        let hashed = !self.hashed.is_empty();
        for &(hash, start) in suffixes {
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

    #[inline(always)]
    fn find(&self, hash: u64) -> Option<Value> {
        find(&self.buckets, hash)
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
    pub(crate) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.buckets.capacity() * size_of::<Bucket>()
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

/// The hash of the node one label below `parent`. Never 0 (the build marks free entries
/// with 0).
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

/// The value of the node with `hash`: look in its first bucket, and in its second only if
/// the first's overflow filter has the node's bit.
#[inline(always)]
pub(crate) fn find(buckets: &[Bucket], hash: u64) -> Option<Value> {
    let n = buckets.len();
    if n == 0 {
        return None;
    }
    let fp = fingerprint(hash);
    let first = &buckets[first_bucket(hash, n)];
    if let Some(v) = first.get(fp) {
        return Some(v);
    }
    if first.overflow & overflow_bit(hash) == 0 {
        return None;
    }
    buckets[second_bucket(hash, n)].get(fp)
}

/// `hash` scaled onto `0..n` (no power-of-two sizing).
pub(crate) fn home(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// A node's first-choice bucket: where it lives unless that bucket filled up.
pub(crate) fn first_bucket(hash: u64, n: usize) -> usize {
    home(hash, n)
}

/// A node's second-choice bucket: independent of the first (a remix of the hash's low 48
/// bits, while the first comes from its top bits), and never the same bucket.
#[inline(always)]
pub(crate) fn second_bucket(hash: u64, n: usize) -> usize {
    if n < 2 {
        return 0;
    }
    let b = first_bucket(hash, n) + second_offset(hash, n);
    if b >= n {
        b - n
    } else {
        b
    }
}

/// How many buckets on from the first (wrapping around) a node's second bucket is:
/// 1 to n - 1, from the low 48 bits of its hash only (the fingerprint), so that the
/// build can find a node's first bucket from its second (see `builder::NodeTable`).
#[inline(always)]
pub(crate) fn second_offset(hash: u64, n: usize) -> usize {
    // splitmix64's finaliser: every bit of the fingerprint moves the result.
    let mut x = hash & 0xffff_ffff_ffff;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    // One of the other n - 1 buckets (no division).
    1 + home(x, n - 1)
}

/// Entries per bucket: six 80-bit entries (48-bit fingerprint, 32-bit value) fill a
/// cache line with the overflow bits.
pub(crate) const BUCKET: usize = 6;

/// One cache line of the node table: up to six nodes, each a 48-bit fingerprint (`hi`
/// and `lo`, 0 when free) and its value, and a 32-bit filter of the nodes whose first
/// choice this bucket was but which live in their second bucket.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
pub(crate) struct Bucket {
    pub(crate) hi: [u32; BUCKET],
    pub(crate) lo: [u16; BUCKET],
    pub(crate) values: [u32; BUCKET],
    pub(crate) overflow: u32,
}

impl Bucket {
    /// The value stored under fingerprint `(hi, lo)`, if any.
    #[inline(always)]
    pub(crate) fn get(&self, (hi, lo): (u32, u16)) -> Option<Value> {
        let mut matches = self.matching_hi(hi);
        while matches != 0 {
            let i = matches.trailing_zeros() as usize;
            if self.lo[i] == lo {
                return Some(Value(self.values[i]));
            }
            matches &= matches - 1;
        }
        None
    }

    /// Bit `i` set where `self.hi[i] == hi`.
    #[inline(always)]
    fn matching_hi(&self, hi: u32) -> u32 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is part of the x86_64 baseline. The bucket is 64-byte aligned and
        // `hi` is its first field, so the load of `hi[0..4]` is aligned; `hi[2..6]` is
        // read unaligned. Both stay inside `hi`.
        unsafe {
            use std::arch::x86_64::*;
            let needle = _mm_set1_epi32(hi as i32);
            let p = self.hi.as_ptr();
            let low = _mm_cmpeq_epi32(_mm_load_si128(p.cast()), needle);
            let high = _mm_cmpeq_epi32(_mm_loadu_si128(p.add(2).cast()), needle);
            let low = _mm_movemask_ps(_mm_castsi128_ps(low)) as u32;
            let high = _mm_movemask_ps(_mm_castsi128_ps(high)) as u32;
            low | high << 2
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let mut mask = 0u32;
            for (i, &h) in self.hi.iter().enumerate() {
                mask |= u32::from(h == hi) << i;
            }
            mask
        }
    }

    /// The first free entry.
    pub(crate) fn free(&self) -> Option<usize> {
        (0..BUCKET).find(|&i| self.hi[i] == 0 && self.lo[i] == 0)
    }
}

/// The 48 bits of a node hash kept in its entry: the low bits, which the bucket choice
/// hardly uses. Never 0 (a free entry).
pub(crate) fn fingerprint(hash: u64) -> (u32, u16) {
    let fp = (hash & 0xffff_ffff_ffff).max(1);
    ((fp >> 16) as u32, fp as u16)
}

/// A node's bit in its first bucket's overflow filter (5 low bits: independent of which
/// bucket is first).
pub(crate) fn overflow_bit(hash: u64) -> u32 {
    1 << (hash & 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }

    #[test]
    fn bucket_lookup_agrees_with_a_plain_scan() {
        let mut bucket = Bucket::default();
        let his = [0x8000_0001u32, 7, 7, u32::MAX, 0, 7];
        for (i, &hi) in his.iter().enumerate() {
            bucket.hi[i] = hi;
            bucket.lo[i] = i as u16;
            bucket.values[i] = 100 + i as u32;
        }
        for hi in [0x8000_0001u32, 7, u32::MAX, 0, 5] {
            for lo in 0..8u16 {
                let expected = (0..BUCKET)
                    .find(|&i| bucket.hi[i] == hi && bucket.lo[i] == lo)
                    .map(|i| 100 + i as u32);
                assert_eq!(bucket.get((hi, lo)).map(|v| v.0), expected, "{hi:#x} {lo}");
            }
        }
    }

    #[test]
    fn home_spreads_over_the_table() {
        assert_eq!(home(0, 10), 0);
        assert_eq!(home(u64::MAX, 10), 9);
        assert_eq!(home(u64::MAX / 2, 10), 4);
    }

    #[test]
    fn second_bucket_differs_from_the_first_and_stays_in_range() {
        for n in [2usize, 3, 7, 1000] {
            for i in 0..1000u64 {
                let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let (a, b) = (first_bucket(h, n), second_bucket(h, n));
                assert!(a < n && b < n && a != b, "{h:#x} {n}");
            }
        }
    }

    #[test]
    fn fingerprints_are_never_free() {
        assert_ne!(fingerprint(0), (0, 0));
        assert_ne!(fingerprint(1 << 48), (0, 0));
    }
}
