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
//! Names are stored reversed (`test.a.x` order of bytes: `tset.a.x`) as keys of a finite
//! state transducer (the `fst` crate), whose shared prefixes *and* suffixes make it far
//! smaller than a hash set of strings. A lookup walks the query name from its last byte
//! towards its first, once, and checks for a final state only where a label starts: the
//! walk visits every listed suffix of the name in one pass and stops at the first byte no
//! key continues with. The value of a final state names either one rule or a small set
//! (a name listed in several lists), and a table of runs maps a rule number back to its
//! list, syntax and line without storing a line per rule. Hashed (`sha256:`) entries live
//! in a sorted table, searched once per suffix only when any are loaded.

mod builder;

pub use builder::{FilterError, MatcherBuilder};

use crate::lists::{parse::sha256_of, Syntax};
use fst::raw::Output;

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
    pub(crate) runs: Vec<Run>,
    /// Reversed names → value (see [`Value`]).
    pub(crate) names: fst::Map<Vec<u8>>,
    /// `sha256` entries, sorted by hash.
    pub(crate) hashed: Vec<([u8; 32], u64)>,
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
    /// Distinct names (keys of the name index).
    pub names: u64,
    /// Distinct hashed entries.
    pub hashed: u64,
    /// Rules dropped because an earlier list already put the same name in the same
    /// category (or already allowed it).
    pub shadowed: u64,
}

/// The value stored per name: one rule (`rule << 1`) or a multi entry (`idx << 1 | 1`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Value(pub(crate) u64);

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

    /// Report every listed suffix of `name`, shortest first, once each: the FST walk
    /// (reversed bytes, checking finality where a label starts) and, when any are
    /// loaded, the hashed entries, combined per suffix.
    fn walk(&self, name: &str, mut report: impl FnMut(Hit)) {
        let bytes = name.as_bytes();
        let fst = self.names.as_fst();
        let mut node = Some(fst.root());
        let mut out = Output::zero();
        let hashed = !self.hashed.is_empty();
        for i in (0..bytes.len()).rev() {
            if let Some(current) = node {
                node = current.find_input(bytes[i]).map(|t| {
                    let tr = current.transition(t);
                    out = out.cat(tr.out);
                    fst.node(tr.addr)
                });
            }
            if node.is_none() && !hashed {
                return; // no key continues this suffix: nothing longer can match
            }
            if i != 0 && bytes[i - 1] != b'.' {
                continue; // not the start of a label
            }
            let by_name = node
                .filter(|n| n.is_final())
                .map(|n| Value(out.cat(n.final_output()).value()));
            let by_hash = if hashed {
                self.hashed_value(&name[i..])
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
                start: i,
                bits,
                primary,
                secondary,
            });
        }
    }

    fn hashed_value(&self, suffix: &str) -> Option<Value> {
        let hash = sha256_of(suffix);
        self.hashed
            .binary_search_by(|(h, _)| h.cmp(&hash))
            .ok()
            .map(|i| Value(self.hashed[i].1))
    }

    /// Category bits (and allow bit) of an entry, before restricting to active ones.
    fn entry_bits(&self, value: Value) -> u64 {
        if value.0 & 1 == 1 {
            self.multi_bits[(value.0 >> 1) as usize]
        } else {
            self.parts[self.part_of(value.0 >> 1) as usize].bits
        }
    }

    fn part_of(&self, rule: u64) -> usize {
        self.part_starts.partition_point(|&s| u64::from(s) <= rule) - 1
    }

    /// The first rule of the hit (name entry first, then hashed) whose list's bits meet
    /// `wanted`.
    fn pick_rule(&self, hit: &Hit, wanted: u64) -> u32 {
        let candidates = self
            .rules_of(hit.primary)
            .chain(hit.secondary.into_iter().flat_map(|v| self.rules_of(v)));
        let mut first = None;
        for rule in candidates {
            first.get_or_insert(rule);
            if self.parts[self.part_of(u64::from(rule))].bits & wanted != 0 {
                return rule;
            }
        }
        first.unwrap_or(0) // every value names at least one rule
    }

    /// The rules behind a value.
    fn rules_of(&self, value: Value) -> impl Iterator<Item = u32> + '_ {
        let (single, range) = if value.0 & 1 == 0 {
            (Some((value.0 >> 1) as u32), 0..0)
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
    /// Names of the categories in `set`, comma-separated (for output and logs).
    pub fn category_names(&self, set: CategorySet) -> String {
        set.iter()
            .map(|id| self.category(id).name.as_str())
            .collect::<Vec<_>>()
            .join(",")
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
        self.names.as_fst().as_bytes().len()
            + self.runs.capacity() * size_of::<Run>()
            + self.part_starts.capacity() * 4
            + self.hashed.capacity() * size_of::<([u8; 32], u64)>()
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
