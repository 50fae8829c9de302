//! Building a [`Matcher`]: number the rules, hash every name's label path as it is
//! added, and insert it straight into the node table, folding a name listed more than
//! once into one entry on the spot.
//!
//! # Memory
//! A hot reload builds the new matcher while the old one still serves, so what the build
//! holds beyond the new table itself is what a reload costs. Nothing per rule is kept
//! apart from the table: no name bytes, no list of (hash, rule) pairs to sort, no copy
//! of a list (`Engine::build` streams each list's rules in as they are parsed, and the
//! builder spots a list's repeated targets itself). Beside the table's buckets (64 bytes
//! per 6 nodes) the build keeps two bits per entry (2 bytes per bucket): whether the
//! entry lives in its second bucket, from which its whole hash can be recovered (see
//! [`NodeTable`]), and whether the list being added already had it. Given the number of
//! names to expect ([`MatcherBuilder::with_capacity`]; a reload passes the serving
//! snapshot's), the table is allocated once at its final size; without it the table
//! doubles as it fills and is rebuilt at its final size at the end (a cold start, where
//! no old snapshot is held beside it). A hint that is a little off is absorbed: up to
//! 6% more names fill the table past its load factor (up to `MAX_LOAD`), and up to 3%
//! fewer leave it a little emptier. Beyond that a second table is built beside the first
//! (growing by 1/8 at a time, or rebuilding at the right size at the end), and for that
//! moment a reload holds three tables, about 3× the steady state: a rule set that changed
//! by more than a few percent costs one such reload, and the next is sized right.
//!
//! Measured (`cargo bench --bench reload`, 2M names): the peak heap of a reload is 2.05×
//! the steady state, against 8.1× when the build kept every name's bytes, a pending
//! entry per rule, two copies of the keyed hashes, the folded entries, a 64-bit hash per
//! table slot, and the largest list's parsed rules.
//!
//! # Exactness
//! Names are told apart by their 64-bit keyed hash: the build no longer has the names
//! to compare. Two different listed names with the same 64-bit hash would share one entry
//! (each would match the other's rules); with 2M names that happens to about one build in
//! 10^7 (n²/2⁶⁵), with a fresh random seed each build, so it cannot be provoked. Accepted
//! and documented rather than paid for: telling them apart needs a second 32-bit hash per
//! table entry during the build (10 MiB at 2M names, over a third of the table's own
//! size, which would put a reload back above 2.2× the steady state). Fingerprint clashes
//! (two nodes with equal 48-bit fingerprints meeting in a bucket) are still found at the
//! end, from the whole hashes, and resolved by resizing the table. A name whose hash has
//! its low 48 bits all 0 cannot be stored (0 marks a free entry; about one build in
//! 10^8): the build fails with [`FilterError::HashCollisions`] and `Engine::build` reads
//! the lists again under a new seed.

use std::collections::HashSet;

use super::{
    fingerprint, first_bucket, label_hash, overflow_bit, second_bucket, second_offset, Bucket,
    Category, CategoryId, CategorySet, ListKind, ListPart, Matcher, MatcherStats, Run, Value,
    ALLOW_BIT, BUCKET, MAX_CATEGORIES, PART_HINT_SHIFT, ROOT_HASH,
};
use crate::lists::{Rule, Target};

/// Why a matcher could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("too many categories: at most {MAX_CATEGORIES} are supported")]
    TooManyCategories,
    #[error("category {0:?} is defined twice")]
    DuplicateCategory(String),
    #[error("too many lists: at most 65535 list parts are supported")]
    TooManyLists,
    #[error("too many rules: at most 2^31 are supported")]
    TooManyRules,
    /// The seed cannot be used (a name hashed to a reserved fingerprint, or a table
    /// without fingerprint clashes could not be found); building again, with a new seed,
    /// succeeds (see `Engine::build`).
    #[error("could not find a hash seed without collisions between listed names")]
    HashCollisions,
    #[error("a rule was added outside a list (call begin_list first)")]
    NoListBegun,
    /// An overlay built for another base (other categories or hash seed).
    #[error("the overlay was not built for this base matcher")]
    LayerMismatch,
}

/// Share of bucket entries in use (see [`NodeTable::place`] for what it costs and why
/// 0.75).
const LOAD_FACTOR: f64 = 0.75;
/// Highest share of entries in use before the table is grown. A table is sized for
/// [`LOAD_FACTOR`]; a reload whose lists gained up to 6% names since the last one (more
/// than the hint) fills its table up to this rather than building a second one beside
/// it, which is what a reload must avoid. Full cuckoo displacement fills 0.85 reliably,
/// and lookups at 0.85 measured the same as at 0.75 within the noise (benches/README.md).
const MAX_LOAD: f64 = 0.80;
/// Displacements tried for one insertion before the table is grown.
const MAX_KICKS: usize = 500;
/// Table sizes tried (each 1/8 larger than the last) before giving up.
const GROW_ATTEMPTS: usize = 8;
/// Smallest table allocated once a name arrives without a capacity hint.
const MIN_BUCKETS: usize = 16;
/// The low 48 bits of a hash: what a bucket entry stores.
const FINGERPRINT_BITS: u64 = 0xffff_ffff_ffff;

/// Collects categories and lists, then builds a [`Matcher`].
pub struct MatcherBuilder {
    categories: Vec<Category>,
    parts: Vec<ListPart>,
    part_starts: Vec<u32>,
    runs: Vec<Run>,
    hasher: foldhash::quality::RandomState,
    table: NodeTable,
    /// Names expected (from [`MatcherBuilder::with_capacity`]), 0 if unknown.
    hint: usize,
    multi: MultiTable,
    shadowed: u64,
    hashed: Vec<([u8; 32], u32)>,
    next_rule: u32,
    open: Option<OpenList>,
    /// The rank given to the parts of lists added from now on (see
    /// [`MatcherBuilder::rank_next_lists`]); by default, the part's number.
    rank: Option<u32>,
}

impl Default for MatcherBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

/// A list being streamed in ([`MatcherBuilder::begin_list`]): its exception rules wait
/// here until the list ends (they are numbered after its other rules, as a part of their
/// own), and its hashed targets are remembered to spot duplicates.
struct OpenList {
    name: String,
    kind: ListKind,
    part: Option<u16>,
    exceptions: Vec<Rule>,
    exception_targets: HashSet<Target>,
    hashed_seen: HashSet<[u8; 32]>,
}

impl MatcherBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder expecting about `names` distinct names (a reload passes the serving
    /// snapshot's count), so the node table is allocated once at its final size.
    pub fn with_capacity(names: usize) -> Self {
        MatcherBuilder {
            categories: Vec::new(),
            parts: Vec::new(),
            part_starts: Vec::new(),
            runs: Vec::new(),
            hasher: foldhash::quality::RandomState::default(),
            table: NodeTable::with_buckets(if names > 0 { buckets_for(names) } else { 0 }),
            hint: names,
            multi: MultiTable::default(),
            shadowed: 0,
            hashed: Vec::new(),
            next_rule: 0,
            open: None,
            rank: None,
        }
    }

    /// A builder for a layer consulted together with `base` (see [`super::Layers`]):
    /// the same categories, and the same hash seed, so that one hashing of a query's
    /// suffixes serves both layers.
    pub fn layer_over(base: &Matcher) -> Self {
        MatcherBuilder {
            categories: base.categories.clone(),
            hasher: base.hasher.clone(),
            ..Self::default()
        }
    }

    /// A builder for a layer consulted together with the matcher this builder will
    /// build: its categories so far and its hash seed.
    pub fn layer_beside(&self) -> Self {
        MatcherBuilder {
            categories: self.categories.clone(),
            hasher: self.hasher.clone(),
            ..Self::default()
        }
    }

    /// Rank the lists added from now on at `rank` in the order of the whole rule set
    /// (several layers): a verdict names the rule of the lowest-ranked list, as one
    /// matcher holding every list would. Ranks must grow with the lists added.
    pub fn rank_next_lists(&mut self, rank: u32) {
        self.rank = Some(rank);
    }

    /// Define a category; `locked` ones are always active and beat every allow entry.
    pub fn add_category(&mut self, name: &str, locked: bool) -> Result<CategoryId, FilterError> {
        if self.categories.iter().any(|c| c.name == name) {
            return Err(FilterError::DuplicateCategory(name.to_string()));
        }
        if self.categories.len() >= MAX_CATEGORIES {
            return Err(FilterError::TooManyCategories);
        }
        self.categories.push(Category {
            name: name.to_string(),
            locked,
        });
        Ok(CategoryId((self.categories.len() - 1) as u8))
    }

    /// Add a list's rules (in file order). Exception rules in a block list (`@@||x^`,
    /// `rpz-passthru`) become an allow part under the same list name. Every rule is
    /// numbered, even one repeating an earlier rule of the list (see
    /// [`MatcherBuilder::add_rule`] for a list read line by line).
    pub fn add_list(
        &mut self,
        name: &str,
        kind: ListKind,
        rules: &[Rule],
    ) -> Result<(), FilterError> {
        self.end_list()?;
        let (exceptions, normal): (Vec<&Rule>, Vec<&Rule>) =
            rules.iter().partition(|r| r.syntax.is_exception());
        self.add_part(name, kind, &normal)?;
        if !exceptions.is_empty() {
            self.add_part(name, ListKind::Allow, &exceptions)?;
        }
        Ok(())
    }

    fn add_part(&mut self, name: &str, kind: ListKind, rules: &[&Rule]) -> Result<(), FilterError> {
        let part = self.new_part(name, kind)?;
        for rule in rules {
            self.push_rule(rule, part, None)?;
        }
        Ok(())
    }

    /// Start a list read line by line: give its rules to [`MatcherBuilder::add_rule`] in
    /// file order, then call [`MatcherBuilder::end_list`]. The result is the same as
    /// [`MatcherBuilder::add_list`] with the list's rules minus repeated targets, without
    /// ever holding the list.
    pub(crate) fn begin_list(&mut self, name: &str, kind: ListKind) -> Result<(), FilterError> {
        self.end_list()?;
        // Nodes touched by the previous list are not this list's duplicates.
        self.table.clear_marks();
        self.open = Some(OpenList {
            name: name.to_string(),
            kind,
            part: None,
            exceptions: Vec::new(),
            exception_targets: HashSet::new(),
            hashed_seen: HashSet::new(),
        });
        Ok(())
    }

    /// Add the next rule of the list begun last. `Ok(false)` if the list already had this
    /// target (a duplicate: not numbered, not stored), as the list parser counts them.
    pub(crate) fn add_rule(&mut self, rule: Rule) -> Result<bool, FilterError> {
        let Some(open) = self.open.as_mut() else {
            return Err(FilterError::NoListBegun);
        };
        let hash = match &rule.target {
            Target::Name(n) => Some(path_hash(&self.hasher, n.as_bytes())),
            Target::Hash(_) => None,
        };
        let seen = match (&rule.target, hash) {
            (Target::Hash(h), _) => !open.hashed_seen.insert(*h),
            (_, Some(hash)) => {
                open.exception_targets.contains(&rule.target) || self.table.marked(hash)
            }
            (_, None) => false,
        };
        if seen {
            return Ok(false);
        }
        if rule.syntax.is_exception() {
            if let Target::Name(_) = rule.target {
                open.exception_targets.insert(rule.target.clone());
            }
            open.exceptions.push(rule);
            return Ok(true);
        }
        let part = match open.part {
            Some(p) => p,
            None => {
                let (name, kind) = (open.name.clone(), open.kind);
                let p = self.new_part(&name, kind)?;
                if let Some(open) = self.open.as_mut() {
                    open.part = Some(p);
                }
                p
            }
        };
        self.push_rule(&rule, part, hash)?;
        Ok(true)
    }

    /// Finish the list begun last: its exception rules, if any, become its allow part.
    pub(crate) fn end_list(&mut self) -> Result<(), FilterError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        // A list with no rules at all still gets its (empty) part, as `add_list` gives.
        if open.part.is_none() {
            self.new_part(&open.name, open.kind)?;
        }
        if !open.exceptions.is_empty() {
            let part = self.new_part(&open.name, ListKind::Allow)?;
            for rule in &open.exceptions {
                self.push_rule(rule, part, None)?;
            }
        }
        Ok(())
    }

    fn new_part(&mut self, name: &str, kind: ListKind) -> Result<u16, FilterError> {
        let part = u16::try_from(self.parts.len()).map_err(|_| FilterError::TooManyLists)?;
        let bits = match kind {
            ListKind::Block(id) => 1u64 << id.0,
            ListKind::Allow => ALLOW_BIT,
        };
        let rank = self.rank.unwrap_or(u32::from(part));
        self.parts.push(ListPart {
            name: name.to_string(),
            kind,
            bits,
            rank,
        });
        self.part_starts.push(self.next_rule);
        Ok(part)
    }

    /// Number `rule` as the next rule of `part` and index its target (`hash`: its name's
    /// hash, if already computed).
    fn push_rule(&mut self, rule: &Rule, part: u16, hash: Option<u64>) -> Result<(), FilterError> {
        let id = self.next_rule;
        if id >= 1 << 31 {
            return Err(FilterError::TooManyRules);
        }
        self.next_rule += 1;
        self.extend_runs(id, rule, part);
        match &rule.target {
            Target::Name(n) => {
                let hash = hash.unwrap_or_else(|| path_hash(&self.hasher, n.as_bytes()));
                self.add_node(hash, id, self.parts[part as usize].bits)?;
            }
            Target::Hash(h) => self.hashed.push((*h, id)),
        }
        Ok(())
    }

    /// Index rule `id` (entry bits `bits`) under the node `hash`: a new entry, or folded
    /// into the entry already there.
    fn add_node(&mut self, hash: u64, id: u32, bits: u64) -> Result<(), FilterError> {
        // The entry stores 48 bits, 0 meaning free (the 16 others are recovered from the
        // bucket: see `NodeTable`). A hash with its low 48 bits 0 could not be stored
        // exactly: a new seed is needed (about one build in 10^8).
        if hash & FINGERPRINT_BITS == 0 {
            return Err(FilterError::HashCollisions);
        }
        if let Some((b, i)) = self.table.locate(hash) {
            let old = Value(self.table.buckets[b].values[i]);
            let (value, dropped) = self
                .multi
                .merge(old, id, bits, &self.parts, &self.part_starts);
            self.shadowed += dropped;
            self.table.buckets[b].values[i] = value.0;
            self.table.marks[b] |= 1 << i;
            return Ok(());
        }
        let n = self.table.buckets.len();
        if self.table.len + 1 > capacity(n, MAX_LOAD) {
            let names = (self.table.len + 1).max(self.hint);
            // Without a hint, doubling: each name is moved about once more on average.
            // Past the hint (the lists grew more than MAX_LOAD allows for), by 1/8 at a
            // time: a reload holds old and new tables meanwhile, so each step is small.
            let step = if self.hint > 0 { n / 8 + 1 } else { n };
            let n = buckets_for(names).max(n + step).max(MIN_BUCKETS);
            self.table = self.table.resized(n, None)?;
        }
        let entry = Entry {
            hash,
            value: id << 1,
            mark: true,
        };
        if let Err(homeless) = self.table.place(entry) {
            let n = self.table.buckets.len();
            self.table = self.table.resized(n + n / 8 + 1, Some(homeless))?;
        }
        Ok(())
    }

    /// Start a new run unless `rule` continues the last one (same part and syntax, next
    /// line).
    fn extend_runs(&mut self, id: u32, rule: &Rule, part: u16) {
        let syntax = rule.syntax as u8;
        if let Some(last) = self.runs.last() {
            let expected_line = last.first_line as u64 + (id - last.first_rule) as u64;
            if last.part == part && last.syntax == syntax && expected_line == rule.line as u64 {
                return;
            }
        }
        self.runs.push(Run {
            first_rule: id,
            first_line: rule.line,
            part,
            syntax,
        });
    }

    /// Compile everything into an immutable [`Matcher`].
    pub fn build(mut self) -> Result<Matcher, FilterError> {
        self.end_list()?;
        let MatcherBuilder {
            categories,
            parts,
            part_starts,
            mut runs,
            hasher,
            table,
            multi: mut multi_table,
            mut shadowed,
            mut hashed,
            next_rule,
            ..
        } = self;
        let locked = categories
            .iter()
            .enumerate()
            .filter(|(_, c)| c.locked)
            .fold(CategorySet::EMPTY, |s, (i, _)| s.with(CategoryId(i as u8)));
        let name_count = table.len as u64;
        let buckets = table.finish()?;
        hashed.sort_unstable();
        let (mut hashed_values, dropped) =
            fold_duplicates(&hashed, &mut multi_table, &parts, &part_starts);
        drop(hashed);
        shadowed += dropped;
        hashed_values.shrink_to_fit();
        runs.shrink_to_fit();
        let (bits, starts, rules) = multi_table.finish();
        let part_hint = (0..=(next_rule >> PART_HINT_SHIFT))
            .map(|block| {
                let first = block << PART_HINT_SHIFT;
                part_starts
                    .partition_point(|&s| s <= first)
                    .saturating_sub(1) as u16
            })
            .collect();
        let stats = MatcherStats {
            rules: u64::from(next_rule),
            names: name_count,
            hashed: hashed_values.len() as u64,
            shadowed,
        };
        Ok(Matcher {
            categories,
            locked,
            parts,
            part_starts,
            part_hint,
            runs,
            hasher,
            buckets,
            hashed: hashed_values,
            multi_bits: bits,
            multi_starts: starts,
            multi_rules: rules,
            stats,
        })
    }
}

/// One value per distinct key of `sorted` (pairs of key and rule, sorted by key): a
/// single rule, or a multi entry for a key listed by several rules. Returns the values and
/// how many rules were shadowed (same key, same category, an earlier list).
fn fold_duplicates<K: Copy + PartialEq>(
    sorted: &[(K, u32)],
    multi: &mut MultiTable,
    parts: &[ListPart],
    part_starts: &[u32],
) -> (Vec<(K, Value)>, u64) {
    let mut shadowed = 0;
    let values = sorted
        .chunk_by(|a, b| a.0 == b.0)
        .map(|same| {
            let first = same[0].1;
            let mut value = Value(first << 1);
            for &(_, rule) in &same[1..] {
                let bits = rule_bits(rule, parts, part_starts);
                let (v, dropped) = multi.merge(value, rule, bits, parts, part_starts);
                value = v;
                shadowed += dropped;
            }
            (same[0].0, value)
        })
        .collect();
    (values, shadowed)
}

/// Entries for names listed by more than one rule, built a rule at a time: entry bits
/// per entry, and (entry, rule) pairs grouped per entry when the matcher is built.
#[derive(Default)]
struct MultiTable {
    bits: Vec<u64>,
    pairs: Vec<(u32, u32)>,
}

impl MultiTable {
    /// The value for a node holding `old` once `rule` (entry bits `bits`, numbered after
    /// every rule in `old`) is added: one rule per category and one allow rule are kept
    /// (the first in list order, as rules arrive in order). Returns whether it was
    /// dropped (1) or kept (0).
    fn merge(
        &mut self,
        old: Value,
        rule: u32,
        bits: u64,
        parts: &[ListPart],
        part_starts: &[u32],
    ) -> (Value, u64) {
        if old.0 & 1 == 0 {
            let first = old.0 >> 1;
            let first_bits = rule_bits(first, parts, part_starts);
            if first_bits & bits != 0 {
                return (old, 1);
            }
            let index = self.bits.len() as u32;
            self.bits.push(first_bits | bits);
            self.pairs.push((index, first));
            self.pairs.push((index, rule));
            return (Value(index << 1 | 1), 0);
        }
        let index = old.0 >> 1;
        let entry = &mut self.bits[index as usize];
        if *entry & bits != 0 {
            return (old, 1);
        }
        *entry |= bits;
        self.pairs.push((index, rule));
        (old, 0)
    }

    /// Entry bits, the start of each entry's rules (and the end of the last), and the
    /// rules in entry order, ascending within an entry.
    fn finish(self) -> (Vec<u64>, Vec<u32>, Vec<u32>) {
        let MultiTable {
            mut bits,
            mut pairs,
            ..
        } = self;
        pairs.sort_unstable();
        let mut starts = Vec::with_capacity(bits.len() + 1);
        let mut rules = Vec::with_capacity(pairs.len());
        for (i, &(index, rule)) in pairs.iter().enumerate() {
            while starts.len() <= index as usize {
                starts.push(i as u32);
            }
            rules.push(rule);
        }
        drop(pairs);
        while starts.len() <= bits.len() {
            starts.push(rules.len() as u32);
        }
        bits.shrink_to_fit();
        (bits, starts, rules)
    }
}

/// Entry bits of the part rule `rule` belongs to.
fn rule_bits(rule: u32, parts: &[ListPart], part_starts: &[u32]) -> u64 {
    parts[part_starts.partition_point(|&s| s <= rule) - 1].bits
}

/// The hash of a whole name's label path, as the lookup computes it suffix by suffix.
fn path_hash(hasher: &foldhash::quality::RandomState, name: &[u8]) -> u64 {
    name.rsplit(|&b| b == b'.')
        .fold(ROOT_HASH, |parent, label| label_hash(hasher, parent, label))
}

/// Buckets for `names` nodes at [`LOAD_FACTOR`].
fn buckets_for(names: usize) -> usize {
    ((names as f64 / (LOAD_FACTOR * BUCKET as f64)).ceil() as usize).max(2)
}

/// Nodes `n` buckets take at `load`.
fn capacity(n: usize, load: f64) -> usize {
    (n as f64 * load * BUCKET as f64) as usize
}

/// The first bucket of a node living in bucket `second` as its second choice, from the
/// low 48 bits of its hash (the inverse of [`second_bucket`]'s offset).
fn first_from_second(second: usize, low: u64, n: usize) -> usize {
    (second + n - second_offset(low, n)) % n
}

/// A node on its way into the table.
#[derive(Clone, Copy)]
struct Entry {
    hash: u64,
    value: u32,
    /// Seen in the list being added.
    mark: bool,
}

/// The node table while it is built: the buckets the matcher will keep, and beside them
/// two bits per entry that only the build needs (2 bytes per bucket of 64).
///
/// A bucket keeps only the low 48 bits of a node's hash, but moving a node to its other
/// bucket, or telling a name already listed from a new one, needs all 64. They are
/// recovered rather than stored: the first bucket is the hash scaled onto the table
/// (`home`), so in a table of more than 2^16 buckets the bucket number pins the top bits
/// to one value given the low 48; and the second bucket is an offset from the first that
/// depends on the low 48 bits only, so from a node's second bucket its first is known.
/// What remains is which of its buckets a node sits in: one bit. Smaller tables keep the
/// top 16 bits per entry instead (at most 768 KiB).
struct NodeTable {
    buckets: Vec<Bucket>,
    /// Bit `i`: entry `i` lives in its second bucket.
    second: Vec<u8>,
    /// Bit `i`: entry `i` was touched by the list being added (its duplicates).
    marks: Vec<u8>,
    /// Small tables only: the top 16 bits of each entry's hash.
    tops: Vec<[u16; BUCKET]>,
    len: usize,
    /// Taking turns among a full bucket's entries, so a displacement chain does not cycle.
    turn: usize,
}

/// Tables with more buckets than this recover hashes from bucket numbers (see
/// [`NodeTable`]); a bucket then spans fewer than 2^48 hash values.
const RECOVERABLE_ABOVE: usize = 1 << 16;

impl NodeTable {
    fn with_buckets(n: usize) -> Self {
        let mut buckets: Vec<Bucket> = Vec::with_capacity(n);
        advise_huge_pages(&mut buckets);
        buckets.resize(n, Bucket::default());
        let tops = if n > RECOVERABLE_ABOVE {
            Vec::new()
        } else {
            vec![[0; BUCKET]; n]
        };
        NodeTable {
            buckets,
            second: vec![0; n],
            marks: vec![0; n],
            tops,
            len: 0,
            turn: 0,
        }
    }

    /// The full hash of entry `i` of bucket `b` (0 if free).
    fn hash_at(&self, b: usize, i: usize) -> u64 {
        let bucket = &self.buckets[b];
        let low = u64::from(bucket.hi[i]) << 16 | u64::from(bucket.lo[i]);
        if low == 0 {
            return 0;
        }
        if !self.tops.is_empty() {
            return u64::from(self.tops[b][i]) << 48 | low;
        }
        let n = self.buckets.len();
        let first = if self.second[b] & 1 << i == 0 {
            b
        } else {
            first_from_second(b, low, n)
        };
        // The one hash with these low bits that `home` maps onto `first`: the smallest
        // at or above the bucket's lower bound.
        let lower = ((first as u128) << 64).div_ceil(n as u128);
        let top = (lower.saturating_sub(u128::from(low))).div_ceil(1 << 48);
        ((top as u64) << 48) | low
    }

    /// Where the node `hash` is, if it is in the table. Looks where a lookup would
    /// (second bucket only when the first's filter has the bit), comparing whole hashes.
    fn locate(&self, hash: u64) -> Option<(usize, usize)> {
        let n = self.buckets.len();
        if n == 0 {
            return None;
        }
        let first = first_bucket(hash, n);
        let fp = fingerprint(hash);
        // The fingerprint first: recovering a whole hash costs a division.
        let found = |b: usize| {
            let bucket = &self.buckets[b];
            (0..BUCKET).find(|&i| (bucket.hi[i], bucket.lo[i]) == fp && self.hash_at(b, i) == hash)
        };
        if let Some(i) = found(first) {
            return Some((first, i));
        }
        if self.buckets[first].overflow & overflow_bit(hash) == 0 {
            return None;
        }
        let second = second_bucket(hash, n);
        found(second).map(|i| (second, i))
    }

    /// Whether the node `hash` was touched by the list being added.
    fn marked(&self, hash: u64) -> bool {
        self.locate(hash)
            .is_some_and(|(b, i)| self.marks[b] & 1 << i != 0)
    }

    fn clear_marks(&mut self) {
        self.marks.fill(0);
    }

    fn put(&mut self, b: usize, i: usize, e: Entry) {
        (self.buckets[b].hi[i], self.buckets[b].lo[i]) = fingerprint(e.hash);
        self.buckets[b].values[i] = e.value;
        if !self.tops.is_empty() {
            self.tops[b][i] = (e.hash >> 48) as u16;
        }
        let set = |bits: &mut u8, on: bool| *bits = (*bits & !(1 << i)) | u8::from(on) << i;
        set(
            &mut self.second[b],
            b != first_bucket(e.hash, self.buckets.len()),
        );
        set(&mut self.marks[b], e.mark);
    }

    fn take(&self, b: usize, i: usize) -> Entry {
        Entry {
            hash: self.hash_at(b, i),
            value: self.buckets[b].values[i],
            mark: self.marks[b] & 1 << i != 0,
        }
    }

    /// Insert a node not yet in the table: in its first bucket if that has room, else in
    /// its second, setting its bit in the first bucket's overflow filter. When both are
    /// full, it takes another's place and that one moves on to its other bucket (cuckoo
    /// hashing). `Err` with the node left without a place if that fails (the caller grows
    /// the table).
    ///
    /// Invariant the lookup relies on: a node living in its second bucket has its bit set
    /// in its first. The bit is set before a node enters its second bucket and bits are
    /// never cleared (a bit left behind by a node that later moved home costs a miss a
    /// second line now and then, never a wrong answer).
    ///
    /// Measured on the bench's 2M names at 0.75: 11% of nodes live in their second
    /// bucket (a hit on one of those reads a second line, after the first) and a filter
    /// has 0.47 bits set on average, so a miss reads a second line about 1.5% of the
    /// time. At 0.85 (10% less memory) 19% of nodes live in their second bucket; lookups
    /// measured the same within the noise.
    fn place(&mut self, entry: Entry) -> Result<(), Entry> {
        let n = self.buckets.len();
        // `from`: the bucket the entry in hand was just moved out of (none at first).
        let (mut e, mut from) = (entry, usize::MAX);
        for _ in 0..=MAX_KICKS {
            let (first, second) = (first_bucket(e.hash, n), second_bucket(e.hash, n));
            if let Some(i) = self.buckets[first].free() {
                self.put(first, i, e);
                self.len += 1;
                return Ok(());
            }
            self.buckets[first].overflow |= overflow_bit(e.hash);
            if let Some(i) = self.buckets[second].free() {
                self.put(second, i, e);
                self.len += 1;
                return Ok(());
            }
            // Both full: take an entry's place in the bucket the entry in hand did not
            // just leave; that entry moves on.
            let target = if from == second { first } else { second };
            self.turn += 1;
            let i = self.turn % BUCKET;
            let moved = self.take(target, i);
            self.put(target, i, e);
            (e, from) = (moved, target);
        }
        Err(e)
    }

    /// Every node.
    fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        (0..self.buckets.len())
            .flat_map(move |b| (0..BUCKET).map(move |i| (b, i)))
            .filter(move |&(b, i)| (self.buckets[b].hi[i], self.buckets[b].lo[i]) != (0, 0))
            .map(move |(b, i)| self.take(b, i))
    }

    /// The same nodes (and `extra`) in a table of at least `n` buckets, grown by 1/8 at
    /// a time while some node cannot be placed.
    fn resized(&self, mut n: usize, extra: Option<Entry>) -> Result<NodeTable, FilterError> {
        for _ in 0..GROW_ATTEMPTS {
            let mut table = NodeTable::with_buckets(n);
            let placed = self
                .entries()
                .chain(extra)
                .try_for_each(|e| table.place(e).map_err(|_| ()));
            if placed.is_ok() {
                return Ok(table);
            }
            n += n / 8 + 1;
        }
        Err(FilterError::HashCollisions)
    }

    /// The buckets of the final table: at the size [`LOAD_FACTOR`] asks for (rebuilt if
    /// it grew past it, or if the hint was well over the names that came), and with no
    /// node whose fingerprint also belongs to another node in one of its buckets (a
    /// lookup could then return the wrong value; resizing moves them apart).
    fn finish(self) -> Result<Vec<Bucket>, FilterError> {
        if self.len == 0 {
            return Ok(Vec::new());
        }
        let want = buckets_for(self.len);
        let n = self.buckets.len();
        // Kept as allocated when at most 1/32 over the ideal size and not fuller than
        // MAX_LOAD: rebuilding would hold two tables at once (what a reload with a good
        // hint avoids).
        let mut table = if n <= want + want / 32 && self.len <= capacity(n, MAX_LOAD) {
            self
        } else {
            self.resized(want, None)?
        };
        for _ in 0..GROW_ATTEMPTS {
            if !table.fingerprint_clash() {
                return Ok(table.buckets);
            }
            let n = table.buckets.len();
            table = table.resized(n + 1, None)?;
        }
        Err(FilterError::HashCollisions)
    }

    /// Only 48 bits are compared by a lookup: whether some node can meet another's entry
    /// with the same fingerprint in either of its buckets.
    fn fingerprint_clash(&self) -> bool {
        let n = self.buckets.len();
        self.entries().any(|e| {
            let fp = fingerprint(e.hash);
            [first_bucket(e.hash, n), second_bucket(e.hash, n)]
                .into_iter()
                .any(|other| {
                    (0..BUCKET).any(|i| {
                        let b = &self.buckets[other];
                        (b.hi[i], b.lo[i]) == fp && self.hash_at(other, i) != e.hash
                    })
                })
        })
    }
}

/// Ask Linux to back `v`'s (not yet touched) capacity with 2 MiB pages: a lookup reads
/// random lines all over the table, and with 4 KiB pages nearly every one also misses
/// the TLB. A hint only: nothing changes if the kernel declines.
fn advise_huge_pages<T>(v: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = v.as_mut_ptr() as usize;
        let end = start + v.capacity() * std::mem::size_of::<T>();
        let aligned = start.next_multiple_of(PAGE);
        if end > aligned {
            // SAFETY: the range lies inside `v`'s allocation; MADV_HUGEPAGE changes how
            // pages are backed, never their contents.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every node placed is found with its value, whatever the table size (tiny tables
    /// fill and grow; larger ones exercise displacement chains).
    #[test]
    fn every_entry_is_found_after_filling() {
        // 400,000 nodes take more than 2^16 buckets: hashes recovered from bucket numbers.
        for count in [1usize, 2, 5, 13, 100, 5_000, 60_000, 400_000] {
            let mut x = 0x1234_5678_9abc_def1u64 ^ count as u64;
            let mut entries: Vec<(u64, Value)> = (0..count as u32)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x.max(1) | 1 << 20, Value(i << 1))
                })
                .collect();
            entries.sort_unstable_by_key(|e| e.0);
            entries.dedup_by_key(|e| e.0);
            // Grown from empty as the builder does without a hint, then finished.
            let mut table = NodeTable::with_buckets(0);
            for &(hash, value) in &entries {
                if table.len + 1 > capacity(table.buckets.len(), LOAD_FACTOR) {
                    let n = (table.buckets.len() * 2).max(MIN_BUCKETS);
                    table = table.resized(n, None).expect("table grows");
                }
                let entry = Entry {
                    hash,
                    value: value.0,
                    mark: false,
                };
                if let Err(homeless) = table.place(entry) {
                    let n = table.buckets.len();
                    table = table.resized(n + n / 8 + 1, Some(homeless)).expect("grows");
                }
            }
            let buckets = table.finish().expect("table fills");
            for &(hash, value) in &entries {
                assert_eq!(crate::filter::find(&buckets, hash), Some(value), "{count}");
            }
            // Hashes never inserted are not found (a 48-bit fingerprint match is ~10^-13).
            for k in 0..1000u64 {
                let absent = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1 << 63;
                if entries.binary_search_by_key(&absent, |e| e.0).is_err() {
                    assert_eq!(crate::filter::find(&buckets, absent), None);
                }
            }
        }
    }

    /// In a table of more than 2^16 buckets no top bits are stored: every placed hash is
    /// recovered exactly from its bucket, in its first bucket or its second.
    #[test]
    fn hashes_are_recovered_from_bucket_numbers() {
        let n = RECOVERABLE_ABOVE + 12_345;
        let mut table = NodeTable::with_buckets(n);
        assert!(table.tops.is_empty());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut placed = Vec::new();
        while table.len < capacity(n, LOAD_FACTOR) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let hash = x | 1;
            if table.locate(hash).is_some() {
                continue;
            }
            let entry = Entry {
                hash,
                value: 0,
                mark: false,
            };
            table.place(entry).map_err(|_| ()).expect("room");
            placed.push(hash);
        }
        let mut recovered: Vec<u64> = table.entries().map(|e| e.hash).collect();
        assert!(
            table.second.iter().any(|&s| s != 0),
            "some nodes in their second bucket"
        );
        recovered.sort_unstable();
        placed.sort_unstable();
        assert_eq!(recovered, placed);
        assert!(placed.iter().all(|&h| table.locate(h).is_some()));
    }

    /// Streaming a list in (`begin_list`, `add_rule`, `end_list`, as `Engine::build`
    /// does) gives the same report and the same matcher as parsing it whole and adding
    /// its rules, including repeats within a list (plain and exception forms, and a name
    /// an earlier list already shadows).
    #[test]
    fn streaming_a_list_matches_adding_it_whole() {
        use crate::filter::{CategorySet, Verdict};
        use crate::lists::{parse_reader, parse_reader_with, Format};
        use std::path::Path;
        let first = "a.test\nshadow.test\n";
        let second = "b.test\n@@||x.b.test^\n||b.test^\nshadow.test\nx.b.test\n\
                      @@||x.b.test^\n||shadow.test^\nc.test\n@@||c.test^\nshadow.test\n";
        let lists = [("one", first), ("two", second)];
        let mut whole = MatcherBuilder::new();
        let mut streamed = MatcherBuilder::with_capacity(3);
        let mut reports = Vec::new();
        for b in [&mut whole, &mut streamed] {
            b.add_category("ads", false).unwrap();
        }
        let kind = ListKind::Block(CategoryId(0));
        for (name, text) in lists {
            let parsed = parse_reader(text.as_bytes(), Path::new(name), Format::Auto).unwrap();
            whole.add_list(name, kind, &parsed.rules).unwrap();
            streamed.begin_list(name, kind).unwrap();
            let report = parse_reader_with(text.as_bytes(), Path::new(name), Format::Auto, |r| {
                streamed.add_rule(r).unwrap()
            })
            .unwrap();
            streamed.end_list().unwrap();
            reports.push((parsed.report, report));
        }
        for (a, b) in &reports {
            assert_eq!((a.accepted, a.duplicates), (b.accepted, b.duplicates));
        }
        assert_eq!(reports[1].0.duplicates, 6);
        let (whole, streamed) = (whole.build().unwrap(), streamed.build().unwrap());
        assert_eq!(whole.stats(), streamed.stats());
        assert_eq!(whole.runs, streamed.runs);
        let all = CategorySet::EMPTY.with(CategoryId(0));
        let show = |v: Verdict| match v {
            Verdict::Blocked(b) => format!(
                "block {} {} {}",
                b.rule.list_name(),
                b.rule.line(),
                b.rule.text()
            ),
            Verdict::Allowed { exception: Some(r) } => {
                format!("allow {} {} {}", r.list_name(), r.line(), r.text())
            }
            Verdict::Allowed { exception: None } => "allow".to_string(),
        };
        for name in [
            "a.test",
            "shadow.test",
            "b.test",
            "x.b.test",
            "y.x.b.test",
            "c.test",
            "d.test",
        ] {
            assert_eq!(
                show(whole.lookup(name, all)),
                show(streamed.lookup(name, all)),
                "{name}"
            );
        }
    }

    /// A hint a little under the names that come (lists grew since the last reload) is
    /// absorbed by the table allocated for it, up to MAX_LOAD; far off hints still give a
    /// correct table.
    #[test]
    fn a_close_hint_keeps_its_table() {
        for (hint, names) in [(100_000usize, 104_000usize), (1_000, 3_000), (5_000, 1_000)] {
            let mut b = MatcherBuilder::with_capacity(hint);
            let id = b.add_category("ads", false).unwrap();
            let allocated = b.table.buckets.len();
            let rules: Vec<Rule> = (0..names)
                .map(|i| Rule {
                    target: Target::Name(format!("n{i}.test")),
                    syntax: crate::lists::Syntax::Domain,
                    line: i as u32 + 1,
                })
                .collect();
            b.add_list("l", ListKind::Block(id), &rules).unwrap();
            if names <= hint * 106 / 100 {
                assert_eq!(b.table.buckets.len(), allocated, "{hint} {names}");
            }
            let m = b.build().unwrap();
            assert_eq!(m.stats().names, names as u64);
            let all = CategorySet::EMPTY.with(id);
            for i in (0..names).step_by(7) {
                assert!(m.lookup(&format!("x.n{i}.test"), all).is_blocked(), "{i}");
            }
            assert!(!m.lookup("absent.test", all).is_blocked());
        }
    }
}
