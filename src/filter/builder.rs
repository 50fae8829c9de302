//! Building a [`Matcher`]: number the rules, sort the names, fold names listed more than
//! once into one entry, and compile the FST.

use super::{
    Category, CategoryId, CategorySet, ListKind, ListPart, Matcher, MatcherStats, Run, Value,
    ALLOW_BIT, MAX_CATEGORIES,
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
    #[error("building the name index failed: {0}")]
    Fst(#[from] fst::Error),
}

/// A name waiting to be indexed: where its reversed bytes sit in the arena, and its rule.
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
    runs: Vec<super::Run>,
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
                    self.arena.extend(n.bytes().rev());
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
            mut pending,
            mut hashed,
            next_rule,
        } = self;
        let locked = categories
            .iter()
            .enumerate()
            .filter(|(_, c)| c.locked)
            .fold(CategorySet::EMPTY, |s, (i, _)| s.with(CategoryId(i as u8)));
        let key = |p: &PendingName| &arena[p.start as usize..p.start as usize + p.len as usize];
        pending.sort_unstable_by(|a, b| key(a).cmp(key(b)).then(a.rule.cmp(&b.rule)));

        let mut multi = MultiTable::default();
        let mut shadowed = 0u64;
        let mut names = fst::MapBuilder::memory();
        let mut name_count = 0u64;
        let mut i = 0;
        while i < pending.len() {
            let mut j = i + 1;
            while j < pending.len() && key(&pending[j]) == key(&pending[i]) {
                j += 1;
            }
            let rules = pending[i..j].iter().map(|p| p.rule);
            let (value, dropped) = multi.entry(rules, &parts, &part_starts);
            shadowed += dropped;
            names.insert(key(&pending[i]), value.0)?;
            name_count += 1;
            i = j;
        }
        drop(pending);
        let names = fst::Map::new(names.into_inner()?)?;

        hashed.sort_unstable();
        let mut hashed_values = Vec::new();
        let mut i = 0;
        while i < hashed.len() {
            let mut j = i + 1;
            while j < hashed.len() && hashed[j].0 == hashed[i].0 {
                j += 1;
            }
            let (value, dropped) =
                multi.entry(hashed[i..j].iter().map(|h| h.1), &parts, &part_starts);
            shadowed += dropped;
            hashed_values.push((hashed[i].0, value.0));
            i = j;
        }
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
            runs,
            names,
            hashed: hashed_values,
            multi_bits: bits,
            multi_starts: starts,
            multi_rules: rules,
            stats,
        })
    }
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
            return (Value(u64::from(kept[0]) << 1), dropped);
        }
        let index = self.bits.len() as u64;
        self.bits.push(bits);
        self.starts.push(self.rules.len() as u32);
        self.rules.extend(kept);
        (Value(index << 1 | 1), dropped)
    }
}
