//! Building a [`Matcher`]: number the rules, hash every name's label path, fold names
//! listed more than once into one entry, and fill the node table.

use super::{
    home, label_hash, tag_of, Category, CategoryId, CategorySet, ListKind, ListPart, Matcher,
    MatcherStats, Run, Slot, TagGroup, Value, ALLOW_BIT, GROUP, MAX_CATEGORIES, PART_HINT_SHIFT,
    ROOT_HASH,
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

/// Share of table slots in use. At 0.85 a group of 32 is full about one time in five,
/// so a miss reads 1.2 tag groups (cache lines) on average.
const LOAD_FACTOR: f64 = 0.85;
/// Seeds tried before giving up (one collision among listed names is already ~10^-7).
const SEED_ATTEMPTS: usize = 8;

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
        let mut multi = MultiTable::default();
        let (hasher, keyed) = hash_names(&pending, &name)?;
        drop(pending);
        // One entry per distinct name (and per distinct hashed entry): (key, value).
        let (entries, mut shadowed) = fold_duplicates(&keyed, &mut multi, &parts, &part_starts);
        drop(keyed);
        let name_count = entries.len() as u64;
        let (table, groups) = fill_table(&entries);
        drop(entries);
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
            table,
            groups,
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

/// Hash every pending name with a fresh random seed, sorted by (hash, rule). A seed under
/// which two different names share a hash is discarded and another tried.
#[allow(clippy::type_complexity)]
fn hash_names<'a>(
    pending: &[PendingName],
    name: &impl Fn(&PendingName) -> &'a [u8],
) -> Result<(foldhash::quality::RandomState, Vec<(u64, u32)>), FilterError> {
    for _ in 0..SEED_ATTEMPTS {
        let hasher = foldhash::quality::RandomState::default();
        let mut keyed: Vec<(u64, u32, u32)> = pending
            .iter()
            .enumerate()
            .map(|(i, p)| (path_hash(&hasher, name(p)), p.rule, i as u32))
            .collect();
        keyed.sort_unstable();
        let collision = keyed.windows(2).any(|w| {
            w[0].0 == w[1].0 && name(&pending[w[0].2 as usize]) != name(&pending[w[1].2 as usize])
        });
        if !collision {
            return Ok((hasher, keyed.into_iter().map(|(h, r, _)| (h, r)).collect()));
        }
    }
    Err(FilterError::HashCollisions)
}

/// The hash of a whole name's label path, as the lookup computes it suffix by suffix.
fn path_hash(hasher: &foldhash::quality::RandomState, name: &[u8]) -> u64 {
    name.rsplit(|&b| b == b'.')
        .fold(ROOT_HASH, |parent, label| label_hash(hasher, parent, label))
}

/// Insert every entry into the first free slot of its home group or the groups after
/// it, with tables sized for [`LOAD_FACTOR`]; returns the slots and the tag groups.
fn fill_table(entries: &[(u64, Value)]) -> (Vec<Slot>, Vec<TagGroup>) {
    if entries.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let slots = ((entries.len() as f64 / LOAD_FACTOR).ceil() as usize).max(entries.len() + 1);
    let n = slots.div_ceil(GROUP);
    let mut table = vec![Slot::default(); n * GROUP];
    let mut groups = vec![TagGroup([0; GROUP]); n];
    for &(hash, value) in entries {
        let mut g = home(hash, n);
        let i = loop {
            let free = groups[g].matching(0);
            if free != 0 {
                break free.trailing_zeros() as usize;
            }
            g = if g + 1 == n { 0 } else { g + 1 };
        };
        groups[g].0[i] = tag_of(hash);
        table[g * GROUP + i] = Slot {
            hash,
            value: value.0,
        };
    }
    (table, groups)
}
