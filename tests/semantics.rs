//! The matcher's semantics: a truth table of the precedence rules, and a property test
//! against a naive reference (a `HashMap` walk over every parent of the name).

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use warden::filter::{CategorySet, ListKind, Matcher, MatcherBuilder, Verdict};
use warden::lists::{parse::sha256_of, Rule, Syntax, Target};

fn rule(name: &str, line: u32) -> Rule {
    Rule {
        target: Target::Name(name.to_string()),
        syntax: Syntax::Domain,
        line,
    }
}

/// Categories: 0 adult (active), 1 social (inactive), 2 terror (locked).
fn matcher(block: &[(&str, u8)], allow: &[&str]) -> Matcher {
    let mut b = MatcherBuilder::new();
    let adult = b.add_category("adult", false).unwrap();
    let social = b.add_category("social", false).unwrap();
    let terror = b.add_category("terror", true).unwrap();
    let ids = [adult, social, terror];
    for (i, (name, cat)) in block.iter().enumerate() {
        let kind = ListKind::Block(ids[*cat as usize]);
        b.add_list(&format!("list{i}"), kind, &[rule(name, 10 + i as u32)])
            .unwrap();
    }
    let allow_rules: Vec<Rule> = allow.iter().map(|n| rule(n, 1)).collect();
    b.add_list("allow", ListKind::Allow, &allow_rules).unwrap();
    b.build().unwrap()
}

/// (blocked?, categories, matched suffix, locked?) for `x.a.test` with adult active.
fn decide(block: &[(&str, u8)], allow: &[&str]) -> (bool, String, String, bool) {
    let m = matcher(block, allow);
    let active = CategorySet::EMPTY.with(m.category_id("adult").unwrap());
    match m.lookup("x.a.test", active) {
        Verdict::Allowed { exception } => (
            false,
            String::new(),
            exception.map(|r| r.matched.to_string()).unwrap_or_default(),
            false,
        ),
        Verdict::Blocked(b) => (
            true,
            m.category_names(b.categories).into_owned(),
            b.rule.matched.to_string(),
            b.locked,
        ),
    }
}

#[test]
fn truth_table() {
    let allowed = |matched: &str| (false, String::new(), matched.to_string(), false);
    let blocked = |cats: &str, matched: &str, locked: bool| {
        (true, cats.to_string(), matched.to_string(), locked)
    };
    assert_eq!(decide(&[], &[]), allowed(""));
    assert_eq!(
        decide(&[("a.test", 0)], &[]),
        blocked("adult", "a.test", false)
    );
    assert_eq!(
        decide(&[("a.test", 1)], &[]),
        allowed(""),
        "inactive category"
    );
    assert_eq!(
        decide(&[("a.test", 0)], &["x.a.test"]),
        allowed("x.a.test"),
        "exception"
    );
    assert_eq!(
        decide(&[("x.a.test", 0)], &["a.test"]),
        blocked("adult", "x.a.test", false),
        "more specific block beats allow"
    );
    assert_eq!(
        decide(&[("x.a.test", 0)], &["x.a.test"]),
        allowed("x.a.test"),
        "tie: allow wins"
    );
    assert_eq!(
        decide(&[("a.test", 2)], &["x.a.test"]),
        blocked("terror", "a.test", true),
        "locked beats a more specific allow"
    );
    assert_eq!(
        decide(&[("a.test", 0), ("a.test", 1)], &[]),
        blocked("adult", "a.test", false),
        "only active categories are reported"
    );
    assert_eq!(
        decide(&[("a.test", 0), ("a.test", 2)], &["a.test"]),
        blocked("adult,terror", "a.test", true),
        "all active categories of the deciding entry"
    );
    assert_eq!(
        decide(&[("xa.test", 0), ("test", 0)], &[]),
        blocked("adult", "test", false),
        "a suffix only matches at a label boundary"
    );
    assert_eq!(
        decide(&[("b.x.a.test", 0)], &[]),
        allowed(""),
        "children do not block parents"
    );
}

#[test]
fn verdict_names_list_line_and_rule_text() {
    let mut b = MatcherBuilder::new();
    let adult = b.add_category("adult", false).unwrap();
    let rules = vec![
        Rule {
            target: Target::Name("a.test".into()),
            syntax: Syntax::Adblock,
            line: 3,
        },
        Rule {
            target: Target::Name("b.test".into()),
            syntax: Syntax::Adblock,
            line: 4,
        },
        Rule {
            target: Target::Name("c.test".into()),
            syntax: Syntax::Wildcard,
            line: 9,
        },
        Rule {
            target: Target::Name("d.test".into()),
            syntax: Syntax::AdblockException,
            line: 10,
        },
    ];
    b.add_list("mixed", ListKind::Block(adult), &rules).unwrap();
    let m = b.build().unwrap();
    let all = m.all_categories();
    let block = |name: &'static str| {
        let v = m.lookup(name, all);
        let b = *v.block().expect("blocked");
        (b.rule.list_name().to_string(), b.rule.line(), b.rule.text())
    };
    assert_eq!(block("www.b.test"), ("mixed".into(), 4, "||b.test^".into()));
    assert_eq!(block("c.test"), ("mixed".into(), 9, "*.c.test".into()));
    match m.lookup("d.test", all) {
        Verdict::Allowed { exception: Some(r) } => {
            assert_eq!(
                (r.list_name(), r.line(), r.text()),
                ("mixed", 10, "@@||d.test^".into())
            )
        }
        other => panic!("expected an exception, got {other:?}"),
    }
}

#[test]
fn hashed_entries_match_every_suffix_and_lock() {
    let mut b = MatcherBuilder::new();
    let terror = b.add_category("terror", true).unwrap();
    let hashed = Rule {
        target: Target::Hash(sha256_of("bad.test")),
        syntax: Syntax::Hashed,
        line: 7,
    };
    b.add_list("ctiru", ListKind::Block(terror), &[hashed])
        .unwrap();
    b.add_list("allow", ListKind::Allow, &[rule("www.bad.test", 1)])
        .unwrap();
    let m = b.build().unwrap();
    // Locked categories apply even when the caller passes no active category.
    let v = m.lookup("www.bad.test", CategorySet::EMPTY);
    let block = v
        .block()
        .expect("locked hashed entry blocks despite the allow entry");
    assert!(block.locked);
    assert_eq!(block.rule.matched, "bad.test");
    assert_eq!(block.rule.line(), 7);
    assert_eq!(
        block.rule.text(),
        format!("sha256:{}", hex::encode(sha256_of("bad.test")))
    );
    assert!(!m.lookup("notbad.test", CategorySet::EMPTY).is_blocked());
}

// ---- property test against a naive reference ----

#[derive(Debug, Clone)]
enum RefKind {
    Block(u8),
    Allow,
}

/// The reference: every rule in a `HashMap` from name to kinds; a lookup visits every
/// parent of the name and applies the documented precedence.
struct Reference {
    rules: HashMap<String, Vec<RefKind>>,
    locked: u8,
}

#[derive(Debug, PartialEq, Eq)]
enum RefVerdict {
    Allowed(Option<String>),
    Blocked {
        cats: BTreeSet<u8>,
        matched: String,
        locked: bool,
    },
}

impl Reference {
    fn lookup(&self, name: &str, active: &BTreeSet<u8>) -> RefVerdict {
        let labels: Vec<&str> = name.split('.').collect();
        let mut decisive: Option<(String, BTreeSet<u8>, bool)> = None;
        let mut locked: Option<(String, BTreeSet<u8>)> = None;
        // Shortest suffix first, so later (longer) suffixes override.
        for depth in 1..=labels.len() {
            let suffix = labels[labels.len() - depth..].join(".");
            let Some(kinds) = self.rules.get(&suffix) else {
                continue;
            };
            let mut cats = BTreeSet::new();
            let mut allow = false;
            for k in kinds {
                match k {
                    RefKind::Block(c) if active.contains(c) || *c == self.locked => {
                        cats.insert(*c);
                    }
                    RefKind::Block(_) => {}
                    RefKind::Allow => allow = true,
                }
            }
            if cats.contains(&self.locked) {
                locked = Some((suffix.clone(), cats.clone()));
            }
            if allow || !cats.is_empty() {
                decisive = Some((suffix, cats, allow));
            }
        }
        if let Some((matched, cats)) = locked {
            return RefVerdict::Blocked {
                cats,
                matched,
                locked: true,
            };
        }
        match decisive {
            None => RefVerdict::Allowed(None),
            Some((matched, _, true)) => RefVerdict::Allowed(Some(matched)),
            Some((matched, cats, false)) => RefVerdict::Blocked {
                cats,
                matched,
                locked: false,
            },
        }
    }
}

fn label() -> impl Strategy<Value = String> {
    // A small alphabet so that rules and queries overlap often.
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("ab".to_string()),
        Just("xn--d-ya".to_string()),
        Just("c-d".to_string()),
        Just("_e".to_string()),
        "[a-z0-9]{1,3}",
    ]
}

fn domain(max_labels: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..=max_labels).prop_map(|l| l.join("."))
}

/// (name, kind, hashed?) with kind 0..=2 a category (2 locked) and 3 allow.
fn rule_set() -> impl Strategy<Value = Vec<(String, u8, bool)>> {
    prop::collection::vec((domain(3), 0u8..=3, prop::bool::weighted(0.15)), 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn matcher_agrees_with_reference(
        rules in rule_set(),
        queries in prop::collection::vec(domain(5), 1..20),
        active_mask in 0u8..4,
    ) {
        let mut b = MatcherBuilder::new();
        let ids = [
            b.add_category("c0", false).unwrap(),
            b.add_category("c1", false).unwrap(),
            b.add_category("c2", true).unwrap(),
        ];
        let mut reference = Reference { rules: HashMap::new(), locked: 2 };
        // One list per rule, so every rule has its own list name and precedence is tested
        // across lists as it happens in production.
        for (i, (name, kind, hashed)) in rules.iter().enumerate() {
            let target = if *hashed { Target::Hash(sha256_of(name)) } else { Target::Name(name.clone()) };
            let syntax = if *hashed { Syntax::Hashed } else { Syntax::Domain };
            let r = Rule { target, syntax, line: 1 };
            let (list_kind, ref_kind) = match kind {
                3 => (ListKind::Allow, RefKind::Allow),
                c => (ListKind::Block(ids[*c as usize]), RefKind::Block(*c)),
            };
            b.add_list(&format!("l{i}"), list_kind, &[r]).unwrap();
            reference.rules.entry(name.clone()).or_default().push(ref_kind);
        }
        let m = b.build().unwrap();
        let active: BTreeSet<u8> = (0..2).filter(|c| active_mask & (1 << c) != 0).collect();
        let active_set = active.iter().fold(CategorySet::EMPTY, |s, c| s.with(ids[*c as usize]));
        for q in &queries {
            let expected = reference.lookup(q, &active);
            let got = match m.lookup(q, active_set) {
                Verdict::Allowed { exception } => RefVerdict::Allowed(exception.map(|r| r.matched.to_string())),
                Verdict::Blocked(b) => {
                    // The named rule must come from a list of one of the reported categories.
                    let list_kind = rules[b.rule.list_name()[1..].parse::<usize>().unwrap()].1;
                    prop_assert!(b.categories.iter().any(|c| ids[list_kind as usize] == c));
                    RefVerdict::Blocked {
                        cats: (0..3u8).filter(|c| b.categories.contains(ids[*c as usize])).collect(),
                        matched: b.rule.matched.to_string(),
                        locked: b.locked,
                    }
                }
            };
            prop_assert_eq!(got, expected, "query {}", q);
        }
    }
}

// ---- layers: any split of the lists between base and overlay gives the same verdicts ----

/// Everything a verdict says, to compare two matchers' answers exactly.
fn describe(v: Verdict<'_>, names: impl Fn(CategorySet) -> String) -> String {
    let rule = |r: warden::filter::RuleRef<'_>| {
        format!("{} {} {} {}", r.list_name(), r.line(), r.text(), r.matched)
    };
    match v {
        Verdict::Allowed { exception } => format!("allowed {:?}", exception.map(rule)),
        Verdict::Blocked(b) => format!(
            "blocked [{}] locked={} {}",
            names(b.categories),
            b.locked,
            rule(b.rule)
        ),
    }
}

/// Lists of one to four rules each: (rules as (name, hashed?, exception?), kind 0..=2 a
/// category (2 locked) or 3 allow, in the overlay?).
type LayeredList = (Vec<(String, bool, bool)>, u8, bool);

fn layered_lists() -> impl Strategy<Value = Vec<LayeredList>> {
    let rule = (
        domain(3),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
    );
    let list = (prop::collection::vec(rule, 1..4), 0u8..=3, prop::bool::ANY);
    prop::collection::vec(list, 0..16)
}

/// The rules of one generated list, on lines 1, 2, …
fn layered_rules(rules: &[(String, bool, bool)]) -> Vec<Rule> {
    rules
        .iter()
        .enumerate()
        .map(|(i, (name, hashed, exception))| {
            let (target, syntax) = match (hashed, exception) {
                (true, _) => (Target::Hash(sha256_of(name)), Syntax::Hashed),
                (false, true) => (Target::Name(name.clone()), Syntax::AdblockException),
                (false, false) => (Target::Name(name.clone()), Syntax::Domain),
            };
            Rule {
                target,
                syntax,
                line: i as u32 + 1,
            }
        })
        .collect()
}

fn categories(b: &mut MatcherBuilder) -> [warden::filter::CategoryId; 3] {
    [
        b.add_category("c0", false).unwrap(),
        b.add_category("c1", false).unwrap(),
        b.add_category("c2", true).unwrap(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// The lists split at random between a base and an overlay (built for that base, as
    /// a reload that keeps the base builds it) answer every query exactly as one
    /// matcher of all the lists: verdict, categories, locked, and the rule named (list,
    /// line, text, matched suffix).
    #[test]
    fn layers_agree_with_one_matcher(
        lists in layered_lists(),
        queries in prop::collection::vec(domain(5), 1..20),
        active_mask in 0u8..4,
    ) {
        let mut single = MatcherBuilder::new();
        let ids = categories(&mut single);
        let mut base = MatcherBuilder::new();
        categories(&mut base);
        let kind = |k: u8| match k {
            3 => ListKind::Allow,
            c => ListKind::Block(ids[c as usize]),
        };
        for (i, (rules, k, in_overlay)) in lists.iter().enumerate() {
            if !in_overlay {
                base.rank_next_lists(i as u32);
                base.add_list(&format!("l{i}"), kind(*k), &layered_rules(rules)).unwrap();
            }
            single.add_list(&format!("l{i}"), kind(*k), &layered_rules(rules)).unwrap();
        }
        let base = std::sync::Arc::new(base.build().unwrap());
        let mut overlay = MatcherBuilder::layer_over(&base);
        for (i, (rules, k, _)) in lists.iter().enumerate().filter(|(_, l)| l.2) {
            overlay.rank_next_lists(i as u32);
            overlay.add_list(&format!("l{i}"), kind(*k), &layered_rules(rules)).unwrap();
        }
        let layers = warden::filter::Layers::new(base, overlay.build().unwrap()).unwrap();
        let single = single.build().unwrap();
        let active = (0..2u8)
            .filter(|c| active_mask & (1 << c) != 0)
            .fold(CategorySet::EMPTY, |s, c| s.with(ids[c as usize]));
        for q in &queries {
            let names = |s| single.category_names(s).into_owned();
            prop_assert_eq!(
                describe(layers.lookup(q, active), names),
                describe(single.lookup(q, active), names),
                "query {}", q
            );
        }
        prop_assert_eq!(layers.stats().rules, single.stats().rules);
    }
}

/// An allow entry in the overlay cannot override a locked entry in the base, nor a
/// locked entry in the overlay an allow entry in the base; an overlay block decides over
/// a less specific base allow.
#[test]
fn locked_entries_win_across_layers() {
    let mut base = MatcherBuilder::new();
    let [adult, _, terror] = categories(&mut base);
    base.add_list("ctiru", ListKind::Block(terror), &[rule("bad.test", 1)])
        .unwrap();
    base.add_list("allow", ListKind::Allow, &[rule("x.worse.test", 1)])
        .unwrap();
    base.add_list("site-allow", ListKind::Allow, &[rule("site.test", 1)])
        .unwrap();
    let base = std::sync::Arc::new(base.build().unwrap());
    let mut overlay = MatcherBuilder::layer_over(&base);
    overlay
        .add_list("dashboard", ListKind::Allow, &[rule("www.bad.test", 1)])
        .unwrap();
    overlay
        .add_list("local", ListKind::Block(terror), &[rule("worse.test", 1)])
        .unwrap();
    overlay
        .add_list(
            "local-adult",
            ListKind::Block(adult),
            &[rule("x.site.test", 4)],
        )
        .unwrap();
    let layers = warden::filter::Layers::new(base, overlay.build().unwrap()).unwrap();
    for (name, list) in [("www.bad.test", "ctiru"), ("a.x.worse.test", "local")] {
        let v = layers.lookup(name, CategorySet::EMPTY);
        let b = v.block().expect("locked blocks whatever allows it");
        assert!(b.locked, "{name}");
        assert_eq!(b.rule.list_name(), list);
    }
    let v = layers.lookup("a.x.site.test", CategorySet::EMPTY.with(adult));
    assert_eq!(v.block().map(|b| b.rule.list_name()), Some("local-adult"));
    assert!(!layers
        .lookup("y.site.test", CategorySet::EMPTY.with(adult))
        .is_blocked());
}

/// An overlay built for another base (another hash seed) is refused: its entries would
/// never be found.
#[test]
fn an_overlay_for_another_base_is_refused() {
    let mut one = MatcherBuilder::new();
    categories(&mut one);
    let mut other = MatcherBuilder::new();
    categories(&mut other);
    let one = std::sync::Arc::new(one.build().unwrap());
    let result = warden::filter::Layers::new(one, other.build().unwrap());
    assert!(matches!(
        result,
        Err(warden::filter::FilterError::LayerMismatch)
    ));
}
