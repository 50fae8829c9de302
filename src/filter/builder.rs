//! Building a [`Matcher`]: number the rules, hash every name's label path, fold names
//! listed more than once into one entry, and fill the node table.

use super::{
    fingerprint, first_bucket, label_hash, overflow_bit, second_bucket, Bucket, Category,
    CategoryId, CategorySet, ListKind, ListPart, Matcher, MatcherStats, Run, Value, ALLOW_BIT,
    BUCKET, MAX_CATEGORIES, PART_HINT_SHIFT, ROOT_HASH,
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
    #[error("could not find a hash seed without collisions between listed names")]
    HashCollisions,
}

/// Share of bucket entries in use (see `fill_table` for what it costs and why 0.75).
const LOAD_FACTOR: f64 = 0.75;
/// Seeds tried before giving up (one collision among listed names is already ~10^-7, and
/// a table that cannot be filled rarer still).
const SEED_ATTEMPTS: usize = 8;
/// Displacements tried for one insertion before the seed is given up.
const MAX_KICKS: usize = 500;
/// Table sizes tried (each 1/8 larger than the last) before the seed is given up.
const GROW_ATTEMPTS: usize = 4;

/// A name waiting to be indexed: where its bytes sit in the arena, and its rule.
struct PendingName {
    start: u32,
    len: u8,
    rule: u32,
}

/// Collects categories and lists, then builds a [`Matcher`].
#[derive(Default)]
pub struct MatcherBuilder {
    categories: Vec<Category>,
    parts: Vec<ListPart>,
    part_starts: Vec<u32>,
    runs: Vec<Run>,
    arena: Vec<u8>,
    pending: Vec<PendingName>,
    hashed: Vec<([u8; 32], u32)>,
    next_rule: u32,
}

impl MatcherBuilder {
    pub fn new() -> Self {
        Self::default()
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
    /// `rpz-passthru`) become an allow part under the same list name.
    pub fn add_list(
        &mut self,
        name: &str,
        kind: ListKind,
        rules: &[Rule],
    ) -> Result<(), FilterError> {
        let (exceptions, normal): (Vec<&Rule>, Vec<&Rule>) =
            rules.iter().partition(|r| r.syntax.is_exception());
        self.add_part(name, kind, &normal)?;
        if !exceptions.is_empty() {
            self.add_part(name, ListKind::Allow, &exceptions)?;
        }
        Ok(())
    }

    fn add_part(&mut self, name: &str, kind: ListKind, rules: &[&Rule]) -> Result<(), FilterError> {
        let part = u16::try_from(self.parts.len()).map_err(|_| FilterError::TooManyLists)?;
        let bits = match kind {
            ListKind::Block(id) => 1u64 << id.0,
            ListKind::Allow => ALLOW_BIT,
        };
        self.parts.push(ListPart {
            name: name.to_string(),
            kind,
            bits,
        });
        self.part_starts.push(self.next_rule);
        for rule in rules {
            let id = self.next_rule;
            if id >= 1 << 31 {
                return Err(FilterError::TooManyRules);
            }
            self.next_rule += 1;
            self.extend_runs(id, rule, part);
            match &rule.target {
                Target::Name(n) => {
                    let start = self.arena.len() as u32;
                    self.arena.extend(n.bytes());
                    self.pending.push(PendingName {
                        start,
                        len: n.len() as u8, // names are ≤ 253 octets (see `name`)
                        rule: id,
                    });
                }
                Target::Hash(h) => self.hashed.push((*h, id)),
            }
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
    pub fn build(self) -> Result<Matcher, FilterError> {
        let MatcherBuilder {
            categories,
            parts,
            part_starts,
            mut runs,
            arena,
            pending,
            mut hashed,
            next_rule,
        } = self;
        let locked = categories
            .iter()
            .enumerate()
            .filter(|(_, c)| c.locked)
            .fold(CategorySet::EMPTY, |s, (i, _)| s.with(CategoryId(i as u8)));
        let name = |p: &PendingName| &arena[p.start as usize..p.start as usize + p.len as usize];
        // A seed is given up if two listed names collide, or if the table cannot be
        // filled with it (both are rare: about 10^-7 and far less).
        let mut built = None;
        for _ in 0..SEED_ATTEMPTS {
            let hasher = foldhash::quality::RandomState::default();
            let Some(keyed) = hash_names(&hasher, &pending, &name) else {
                continue;
            };
            let mut multi = MultiTable::default();
            // One entry per distinct name: (hash, value).
            let (entries, shadowed) = fold_duplicates(&keyed, &mut multi, &parts, &part_starts);
            drop(keyed);
            if let Some(buckets) = fill_table(&entries) {
                built = Some((hasher, multi, shadowed, entries.len() as u64, buckets));
                break;
            }
        }
        let (hasher, mut multi, mut shadowed, name_count, buckets) =
            built.ok_or(FilterError::HashCollisions)?;
        drop(pending);
        hashed.sort_unstable();
        let (mut hashed_values, dropped) =
            fold_duplicates(&hashed, &mut multi, &parts, &part_starts);
        shadowed += dropped;
        hashed_values.shrink_to_fit();
        runs.shrink_to_fit();
        let MultiTable {
            mut bits,
            mut starts,
            mut rules,
        } = multi;
        starts.push(rules.len() as u32);
        bits.shrink_to_fit();
        starts.shrink_to_fit();
        rules.shrink_to_fit();
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
            let (value, dropped) = multi.entry(same.iter().map(|k| k.1), parts, part_starts);
            shadowed += dropped;
            (same[0].0, value)
        })
        .collect();
    (values, shadowed)
}

/// Entries for names listed by more than one rule.
#[derive(Default)]
struct MultiTable {
    bits: Vec<u64>,
    starts: Vec<u32>,
    rules: Vec<u32>,
}

impl MultiTable {
    /// The value for a name listed by `rules` (ascending). Keeps one rule per category and
    /// one allow rule (the first in list order); returns how many were dropped.
    fn entry(
        &mut self,
        rules: impl Iterator<Item = u32>,
        parts: &[ListPart],
        part_starts: &[u32],
    ) -> (Value, u64) {
        let mut kept: Vec<u32> = Vec::new();
        let mut bits = 0u64;
        let mut dropped = 0;
        for rule in rules {
            let part = part_starts.partition_point(|&s| s <= rule) - 1;
            let rule_bits = parts[part].bits;
            if bits & rule_bits != 0 {
                dropped += 1;
                continue;
            }
            bits |= rule_bits;
            kept.push(rule);
        }
        if kept.len() == 1 {
            return (Value(kept[0] << 1), dropped);
        }
        let index = self.bits.len() as u32;
        self.bits.push(bits);
        self.starts.push(self.rules.len() as u32);
        self.rules.extend(kept);
        (Value(index << 1 | 1), dropped)
    }
}

/// Hash every pending name with `hasher`, sorted by (hash, rule); `None` if two different
/// names share a hash.
fn hash_names<'a>(
    hasher: &foldhash::quality::RandomState,
    pending: &[PendingName],
    name: &impl Fn(&PendingName) -> &'a [u8],
) -> Option<Vec<(u64, u32)>> {
    let mut keyed: Vec<(u64, u32, u32)> = pending
        .iter()
        .enumerate()
        .map(|(i, p)| (path_hash(hasher, name(p)), p.rule, i as u32))
        .collect();
    keyed.sort_unstable();
    let collision = keyed.windows(2).any(|w| {
        w[0].0 == w[1].0 && name(&pending[w[0].2 as usize]) != name(&pending[w[1].2 as usize])
    });
    (!collision).then(|| keyed.into_iter().map(|(h, r, _)| (h, r)).collect())
}

/// The hash of a whole name's label path, as the lookup computes it suffix by suffix.
fn path_hash(hasher: &foldhash::quality::RandomState, name: &[u8]) -> u64 {
    name.rsplit(|&b| b == b'.')
        .fold(ROOT_HASH, |parent, label| label_hash(hasher, parent, label))
}

/// Fill a two-choice table sized for [`LOAD_FACTOR`]: each node goes to its first
/// bucket if that has room, else to its second, setting its bit in the first bucket's
/// overflow filter. When both are full, the node takes another's place and that one moves
/// on to its other bucket (cuckoo hashing).
///
/// Invariant the lookup relies on: a node living in its second bucket has its bit set in
/// its first. The bit is set before a node enters its second bucket and bits are never
/// cleared (a bit left behind by a node that later moved home costs a miss a second line
/// now and then, never a wrong answer).
///
/// Measured on the bench's 2M names at 0.75: 11% of nodes live in their second bucket (a
/// hit on one of those reads a second line, after the first) and a filter has 0.47 bits
/// set on average, so a miss reads a second line about 1.5% of the time. At 0.85 (10%
/// less memory) 19% of nodes live in their second bucket; lookups measured the same
/// within the noise.
///
/// If a node cannot be placed, the table is grown. `None` if that fails too, or if a
/// node's fingerprint also belongs to another node in one of its buckets (a lookup could
/// then return the wrong value); the caller retries with another seed.
fn fill_table(entries: &[(u64, Value)]) -> Option<Vec<Bucket>> {
    if entries.is_empty() {
        return Some(Vec::new());
    }
    let mut n = ((entries.len() as f64 / (LOAD_FACTOR * BUCKET as f64)).ceil() as usize).max(2);
    for _ in 0..GROW_ATTEMPTS {
        if let Some(buckets) = fill_buckets(entries, n) {
            return Some(buckets);
        }
        n += n / 8 + 1;
    }
    None
}

/// [`fill_table`] with `n` buckets.
fn fill_buckets(entries: &[(u64, Value)], n: usize) -> Option<Vec<Bucket>> {
    let mut buckets: Vec<Bucket> = Vec::with_capacity(n);
    advise_huge_pages(&mut buckets);
    buckets.resize(n, Bucket::default());
    // Buckets keep only fingerprints; a moved entry's buckets come from its full hash,
    // kept here during the build (0 = free: node hashes are never 0).
    let mut full = vec![[0u64; BUCKET]; n];
    let put = |buckets: &mut [Bucket], full: &mut [[u64; BUCKET]], b: usize, i, hash, value| {
        (buckets[b].hi[i], buckets[b].lo[i]) = fingerprint(hash);
        buckets[b].values[i] = value;
        full[b][i] = hash;
    };
    let mut turn = 0usize;
    for &(hash, Value(value)) in entries {
        // `from`: the bucket the entry in hand was just moved out of (none at first).
        let (mut hash, mut value, mut from) = (hash, value, usize::MAX);
        let mut kicks = 0;
        loop {
            let (first, second) = (first_bucket(hash, n), second_bucket(hash, n));
            if let Some(i) = buckets[first].free() {
                put(&mut buckets, &mut full, first, i, hash, value);
                break;
            }
            buckets[first].overflow |= overflow_bit(hash);
            if let Some(i) = buckets[second].free() {
                put(&mut buckets, &mut full, second, i, hash, value);
                break;
            }
            kicks += 1;
            if kicks > MAX_KICKS {
                return None;
            }
            // Both full: take an entry's place (taking turns, so a chain does not cycle)
            // in the bucket the entry in hand did not just leave; that entry moves on.
            let target = if from == second { first } else { second };
            turn += 1;
            let i = turn % BUCKET;
            let (moved_hash, moved_value) = (full[target][i], buckets[target].values[i]);
            put(&mut buckets, &mut full, target, i, hash, value);
            (hash, value, from) = (moved_hash, moved_value, target);
        }
    }
    // Only 48 bits are compared: make sure no listed node can meet another's entry with
    // the same fingerprint in either of its buckets.
    for hashes in &full {
        for &hash in hashes.iter().filter(|&&h| h != 0) {
            let fp = fingerprint(hash);
            for other in [first_bucket(hash, n), second_bucket(hash, n)] {
                let clash = (0..BUCKET).any(|i| {
                    full[other][i] != hash && (buckets[other].hi[i], buckets[other].lo[i]) == fp
                });
                if clash {
                    return None;
                }
            }
        }
    }
    Some(buckets)
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
        for count in [1usize, 2, 5, 13, 100, 5_000, 60_000] {
            let mut x = 0x1234_5678_9abc_def1u64 ^ count as u64;
            let mut entries: Vec<(u64, Value)> = (0..count as u32)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x.max(1), Value(i << 1))
                })
                .collect();
            entries.sort_unstable_by_key(|e| e.0);
            entries.dedup_by_key(|e| e.0);
            let buckets = fill_table(&entries).expect("table fills");
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
}
