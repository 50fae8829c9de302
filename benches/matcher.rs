//! Matcher benchmark: build time, memory per rule and lookup time on a rule set of at
//! least 2,000,000 domains, side by side with a `HashSet<String>` parent walk built and
//! timed in the same run.
//!
//! Rule set: every list in `../shared/data/blocklists` (categories from its manifest),
//! parsed by Warden's own list parser, topped up with synthetic names to 2,000,000
//! distinct names; without `../shared`, synthetic names only. Run with
//! `cargo bench --bench matcher` (add `-- --quick` for a shorter criterion pass).
//!
//! Memory is measured, not estimated: a counting global allocator records the live heap
//! bytes before and after each structure is built.
//!
//! Lookup time is measured two ways. Criterion's medians (10,000 names per iteration,
//! each side timed in its own stretch of the run) are kept for comparison with earlier
//! results. The ratios to judge by come from **paired rounds**: one pass of Warden and
//! one of the baseline over the same names, back to back, in alternating order, many
//! times; the ratio is the median of the per-round ratios, so both sides see the same
//! machine load and a noisy neighbour moves both. Paired rounds run on the 10,000-name
//! samples (which stay in the CPU caches after the first pass) and on larger shuffled
//! samples (200,000 hits, every unblocked Umbrella name) that fit in no cache.
//! `WARDEN_BENCH_PAIRED_ONLY=1` skips the criterion pass (for quick comparisons).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use warden::filter::{CategorySet, ListKind, Matcher, MatcherBuilder};
use warden::lists::{self, Format, Rule, Syntax, Target};

// ---- measured memory ----

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

// ---- the rule set ----

/// Distinct names in the rule set under `cargo bench`.
const TARGET_NAMES: usize = 2_000_000;
/// Distinct names when run by `cargo test --all-targets` (a smoke run of this code).
const SMOKE_NAMES: usize = 50_000;
const SAMPLE: usize = 10_000;
/// Hits (and deep subdomains) in the large paired-round samples.
const LARGE_SAMPLE: usize = 200_000;
/// Paired rounds per case: on the small samples, and on the large ones.
const SMALL_ROUNDS: usize = 41;
const LARGE_ROUNDS: usize = 15;

/// A deterministic xorshift generator (the bench must be repeatable).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Fisher–Yates, so sample order carries no locality from the source list.
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// A plausible registrable name: syllables, sometimes digits or a hyphen, a common TLD,
/// sometimes a subdomain.
fn synthetic_name(rng: &mut Rng) -> String {
    const SYL: &[&str] = &[
        "ka", "lo", "mi", "zen", "tor", "bet", "win", "pix", "hub", "net", "cam", "vid", "sta",
        "ro", "qu", "ex", "an", "el", "ion", "par", "dot", "ly", "fy", "go", "max", "pro",
    ];
    const TLD: &[&str] = &[
        "com", "com", "com", "net", "org", "ru", "de", "xyz", "info", "top", "co.uk", "io",
        "online", "site", "br", "fr", "pl", "in", "cn", "biz",
    ];
    const SUB: &[&str] = &["www", "m", "cdn", "api", "img", "static", "ads", "track"];
    let mut name = String::new();
    if rng.below(4) == 0 {
        name.push_str(SUB[rng.below(SUB.len())]);
        name.push('.');
    }
    for _ in 0..2 + rng.below(3) {
        name.push_str(SYL[rng.below(SYL.len())]);
    }
    match rng.below(6) {
        0 => name.push_str(&rng.below(1000).to_string()),
        1 => {
            name.push('-');
            name.push_str(SYL[rng.below(SYL.len())]);
        }
        _ => {}
    }
    name.push('.');
    name.push_str(TLD[rng.below(TLD.len())]);
    name
}

struct RuleSet {
    /// (category, rules) per list.
    lists: Vec<(String, Vec<Rule>)>,
    categories: Vec<String>,
    distinct: Vec<String>,
    source: String,
    parse_time: Duration,
}

fn shared_data() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    dir.join("manifest.json").exists().then_some(dir)
}

fn load_rule_set(rng: &mut Rng, target_names: usize) -> RuleSet {
    let mut lists: Vec<(String, Vec<Rule>)> = Vec::new();
    let mut source = "synthetic only (../shared/data not found)".to_string();
    let started = Instant::now();
    if let Some(dir) = shared_data().filter(|_| target_names == TARGET_NAMES) {
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        let mut files = 0;
        for entry in manifest.as_array().unwrap() {
            let dest = entry["dest"].as_str().unwrap();
            if !dest.starts_with("blocklists/") {
                continue;
            }
            let category = entry["category"].as_str().unwrap().to_string();
            let parsed = lists::load_file(&dir.join(dest), Format::Auto).unwrap();
            lists.push((category, parsed.rules));
            files += 1;
        }
        source = format!("{files} real lists from ../shared/data/blocklists + synthetic top-up");
    }
    let parse_time = started.elapsed();
    let mut seen: HashSet<String> = HashSet::new();
    for (_, rules) in &lists {
        for r in rules {
            if let Target::Name(n) = &r.target {
                seen.insert(n.clone());
            }
        }
    }
    let mut synthetic = Vec::new();
    let mut line = 0;
    while seen.len() < target_names {
        let name = synthetic_name(rng);
        if seen.insert(name.clone()) {
            line += 1;
            synthetic.push(Rule {
                target: Target::Name(name),
                syntax: Syntax::Domain,
                line,
            });
        }
    }
    lists.push(("synthetic".to_string(), synthetic));
    let mut categories: Vec<String> = lists.iter().map(|(c, _)| c.clone()).collect();
    categories.sort();
    categories.dedup();
    let mut distinct: Vec<String> = seen.into_iter().collect();
    distinct.sort_unstable();
    RuleSet {
        lists,
        categories,
        distinct,
        source,
        parse_time,
    }
}

fn rule_count(set: &RuleSet) -> usize {
    set.lists.iter().map(|(_, r)| r.len()).sum()
}

fn build_matcher(set: &RuleSet) -> Matcher {
    let mut b = MatcherBuilder::new();
    let ids: Vec<_> = set
        .categories
        .iter()
        .map(|c| b.add_category(c, false).unwrap())
        .collect();
    for (i, (category, rules)) in set.lists.iter().enumerate() {
        let id = ids[set.categories.iter().position(|c| c == category).unwrap()];
        b.add_list(&format!("list{i}"), ListKind::Block(id), rules)
            .unwrap();
    }
    b.build().unwrap()
}

fn build_hashset(set: &RuleSet) -> HashSet<String> {
    let mut h = HashSet::new();
    for (_, rules) in &set.lists {
        for r in rules {
            if let Target::Name(n) = &r.target {
                h.insert(n.clone());
            }
        }
    }
    h
}

/// The baseline: look the name up, then each parent, in a `HashSet<String>`.
fn hashset_blocked(set: &HashSet<String>, name: &str) -> bool {
    if set.contains(name) {
        return true;
    }
    name.match_indices('.')
        .any(|(i, _)| set.contains(&name[i + 1..]))
}

// ---- query samples ----

struct Samples {
    hits: Vec<String>,
    misses: Vec<String>,
    deep: Vec<String>,
    miss_source: &'static str,
    /// Larger, shuffled samples for the paired rounds that fit in no cache.
    large_hits: Vec<String>,
    large_misses: Vec<String>,
    large_deep: Vec<String>,
}

fn samples(set: &RuleSet, baseline: &HashSet<String>, rng: &mut Rng, large: usize) -> Samples {
    let hits: Vec<String> = (0..SAMPLE)
        .map(|_| set.distinct[rng.below(set.distinct.len())].clone())
        .collect();
    let deep_of = |h: &String| format!("a1.b2.c3.img.cdn.{h}");
    let deep: Vec<String> = hits.iter().map(deep_of).collect();
    // Misses: real popular names that no list blocks, else synthetic names under a TLD
    // no list uses.
    let mut all_misses = Vec::new();
    let mut miss_source = "synthetic names under .example";
    if let Some(dir) = shared_data().filter(|_| set.distinct.len() >= TARGET_NAMES) {
        let text =
            std::fs::read_to_string(dir.join("queries/umbrella-top-100k.txt")).unwrap_or_default();
        all_misses = text
            .lines()
            .filter_map(|l| warden::name::normalize(l).ok())
            .filter(|n| !hashset_blocked(baseline, n))
            .collect();
        miss_source = "Umbrella top-100k names no list blocks";
    }
    while all_misses.len() < SAMPLE {
        all_misses.push(format!("{}.example", synthetic_name(rng)));
    }
    let misses = all_misses[..SAMPLE].to_vec();
    // Large samples: hits drawn afresh (so the small sample is not favoured), every
    // unblocked Umbrella name, all shuffled.
    let large_hits: Vec<String> = (0..large)
        .map(|_| set.distinct[rng.below(set.distinct.len())].clone())
        .collect();
    let large_deep = large_hits.iter().map(deep_of).collect();
    let mut large_misses = all_misses;
    rng.shuffle(&mut large_misses);
    Samples {
        hits,
        misses,
        deep,
        miss_source,
        large_hits,
        large_misses,
        large_deep,
    }
}

// ---- paired rounds ----

/// One pass over `names` with `blocked`: nanoseconds per name.
fn pass(names: &[String], blocked: impl Fn(&str) -> bool) -> f64 {
    let t = Instant::now();
    let count = names.iter().filter(|n| blocked(n)).count();
    std::hint::black_box(count);
    t.elapsed().as_nanos() as f64 / names.len() as f64
}

/// Median ns per name of each side and median of the per-round ratios (a / b) over
/// `rounds` rounds of one pass each, the side going first alternating between rounds.
fn paired(
    rounds: usize,
    names: &[String],
    a: impl Fn(&str) -> bool,
    b: impl Fn(&str) -> bool,
) -> (f64, f64, f64) {
    // One untimed pass each first, so neither side pays for page faults or cold code.
    pass(names, &a);
    pass(names, &b);
    let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (x, y) = if round % 2 == 0 {
            let x = pass(names, &a);
            (x, pass(names, &b))
        } else {
            let y = pass(names, &b);
            (pass(names, &a), y)
        };
        ta.push(x);
        tb.push(y);
        ratios.push(x / y);
    }
    (median(&mut ta), median(&mut tb), median(&mut ratios))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|x, y| x.total_cmp(y));
    v[v.len() / 2]
}

// ---- reading criterion's results ----

/// Criterion's median (ns per iteration) for one benchmark of this run.
fn criterion_median(group: &str, function: &str) -> f64 {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target
        .join("criterion")
        .join(group.replace('/', "_"))
        .join(function)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["median"]["point_estimate"].as_f64().unwrap()
}

fn main() {
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    // `cargo bench` passes --bench; `cargo test --all-targets` does not (smoke run).
    let full = std::env::args().any(|a| a == "--bench");
    let target_names = if full { TARGET_NAMES } else { SMOKE_NAMES };
    eprintln!("building a rule set of {target_names} distinct names…");
    let set = load_rule_set(&mut rng, target_names);
    let rules = rule_count(&set);

    let before = live();
    let t = Instant::now();
    let matcher = build_matcher(&set);
    let matcher_build = t.elapsed();
    let matcher_bytes = (live() - before) as f64;

    let before = live();
    let t = Instant::now();
    let baseline = build_hashset(&set);
    let hashset_build = t.elapsed();
    let hashset_bytes = (live() - before) as f64;

    let all: CategorySet = matcher.all_categories();
    let large = if full { LARGE_SAMPLE } else { SAMPLE };
    let s = samples(&set, &baseline, &mut rng, large);
    // Sanity: both agree on every sample, or the timings compare different work.
    for name in s
        .hits
        .iter()
        .chain(&s.misses)
        .chain(&s.deep)
        .chain(&s.large_hits)
        .chain(&s.large_misses)
        .chain(&s.large_deep)
    {
        assert_eq!(
            matcher.lookup(name, all).is_blocked(),
            hashset_blocked(&baseline, name),
            "{name}"
        );
    }

    let warden_blocked = |n: &str| matcher.lookup(n, all).is_blocked();
    let baseline_blocked = |n: &str| hashset_blocked(&baseline, n);
    let (small_rounds, large_rounds) = if full {
        (SMALL_ROUNDS, LARGE_ROUNDS)
    } else {
        (3, 3)
    };
    let mut paired_table = Vec::new();
    for (case, small, large) in [
        ("hits", &s.hits, &s.large_hits),
        ("misses", &s.misses, &s.large_misses),
        ("deep subdomains", &s.deep, &s.large_deep),
    ] {
        let small = paired(small_rounds, small, warden_blocked, baseline_blocked);
        let large_result = paired(large_rounds, large, warden_blocked, baseline_blocked);
        paired_table.push((case, small, large.len(), large_result));
    }
    let paired_only = std::env::var_os("WARDEN_BENCH_PAIRED_ONLY").is_some();

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut table = Vec::new();
    for (case, names) in [
        ("hits", &s.hits),
        ("misses", &s.misses),
        ("deep subdomains", &s.deep),
    ] {
        if paired_only {
            break;
        }
        let group_name = format!("lookup/{case}");
        let mut group = c.benchmark_group(&group_name);
        group.throughput(Throughput::Elements(names.len() as u64));
        group.bench_function("warden", |b| {
            b.iter(|| {
                names
                    .iter()
                    .filter(|n| matcher.lookup(n, all).is_blocked())
                    .count()
            })
        });
        group.bench_function("hashset", |b| {
            b.iter(|| {
                names
                    .iter()
                    .filter(|n| hashset_blocked(&baseline, n))
                    .count()
            })
        });
        group.finish();
        if full {
            let per_name = |f| criterion_median(&group_name, f) / names.len() as f64;
            table.push((case, per_name("warden"), per_name("hashset")));
        }
    }
    c.final_summary();
    if !full {
        println!(
            "smoke run of the matcher bench: ok ({rules} rules; use `cargo bench` to measure)"
        );
        return;
    }

    let stats = matcher.stats();
    println!(
        "\n## Matcher vs HashSet<String> parent walk ({})",
        set.source
    );
    println!(
        "rules: {rules} ({} distinct names, {} categories); list parse time {:.2} s; misses: {}",
        stats.names,
        set.categories.len(),
        set.parse_time.as_secs_f64(),
        s.miss_source
    );
    println!("| measure | warden | HashSet baseline | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| build time (s) | {:.2} | {:.2} | {:.2}× |",
        matcher_build.as_secs_f64(),
        hashset_build.as_secs_f64(),
        matcher_build.as_secs_f64() / hashset_build.as_secs_f64()
    );
    println!(
        "| memory (bytes/rule, measured) | {:.1} | {:.1} | {:.3}× |",
        matcher_bytes / rules as f64,
        hashset_bytes / rules as f64,
        matcher_bytes / hashset_bytes
    );
    println!(
        "| memory (MiB) | {:.1} | {:.1} | |",
        matcher_bytes / 1048576.0,
        hashset_bytes / 1048576.0
    );
    for (case, w, h) in table {
        println!(
            "| lookup {case} (criterion median, ns) | {w:.0} | {h:.0} | {:.2}× |",
            w / h
        );
    }
    for (case, (w, h, ratio), large_len, (lw, lh, lratio)) in paired_table {
        println!(
            "| lookup {case}, {SAMPLE} names (paired rounds, ns) | {w:.0} | {h:.0} | {ratio:.2}× |"
        );
        println!(
            "| lookup {case}, {large_len} shuffled names (paired rounds, ns) | {lw:.0} | {lh:.0} | {lratio:.2}× |"
        );
    }
    println!(
        "(paired rounds: median of {small_rounds} alternating rounds on {SAMPLE} names, \
         {large_rounds} on the large samples; the ratio is the median of per-round ratios)"
    );
}
