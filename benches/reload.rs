//! Reload benchmark: how long a hot reload of the whole rule set takes, and how much
//! memory it needs while the old snapshot still serves, against the steady state
//! measured in the same run.
//!
//! Rule set: every list in `../shared/data/blocklists` (categories from its manifest)
//! plus a synthetic list topping the set up to 2,000,000 distinct names, written to a
//! temporary folder with a config naming them all; without `../shared`, synthetic only.
//! Run with `cargo bench --bench reload`; `cargo test --all-targets` runs a small smoke
//! set through the same code.
//!
//! Measured per full reload (five of them, each after the previous snapshot was swapped
//! in, each after the big synthetic list was replaced by an identical copy so that its
//! layer must be rebuilt): wall time of `Reloader::reload` (read every list, build,
//! check, swap), the peak of live heap bytes (a counting allocator) and the peak
//! resident set (`VmHWM`, reset through `/proc/self/clear_refs` before each reload).
//! The baselines: the first, cold `Engine::load` for time; live heap and RSS at rest,
//! after loading, for memory.
//!
//! Then small changes (issue #13 item 5), ten of each, idle and under load: one allow
//! entry added to the dashboard's file (as the dashboard writes it), and one name added
//! to a small local block list (300 names). Each is timed from the write to the
//! return of `Reloader::reload`, after which the change must be in force (checked).
//! Under load, a thread on the other core looks names up through the serving snapshot
//! without pause, as the query path does. Baseline: the full reload's median, same run.
//! Finally the cost of a lookup through both layers against the base layer alone, in
//! paired rounds over the same names.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use warden::engine::Engine;
use warden::reload::Reloader;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const TARGET_NAMES: usize = 2_000_000;
/// Over the overlay's limits, so that the smoke run has a base too.
const SMOKE_NAMES: usize = 30_000;
const RELOADS: usize = 5;
/// One-entry changes timed per kind and load.
const SMALL_CHANGES: usize = 10;
/// Names of the small local list.
const LOCAL_NAMES: usize = 300;
/// Pairs of rounds timing lookups through both layers against the base alone.
const ROUND_PAIRS: usize = 21;

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A field of `/proc/self/status` in bytes (Linux), or 0 elsewhere.
fn proc_status(field: &str) -> isize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<isize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Reset the kernel's peak-RSS mark to the current RSS.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn shared_data() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    dir.join("manifest.json").exists().then_some(dir)
}

/// Write a config naming the real lists (when present) and a synthetic list that tops
/// the set up to `target` distinct names. Returns the config path and a description.
fn write_rule_set(dir: &Path, target: usize) -> (PathBuf, String) {
    let mut config = String::from(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[audit]\nenabled = false\n[admin]\nenabled = false\n\
         [reload]\nwatch_files = false\n[dashboard]\nallow_file = \"allow-dashboard.txt\"\n",
    );
    let mut lists = String::new();
    let mut categories = HashSet::new();
    let mut seen = HashSet::new();
    let mut source = "synthetic only (../shared/data not found)".to_string();
    if let Some(data) = shared_data().filter(|_| target == TARGET_NAMES) {
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(data.join("manifest.json")).unwrap())
                .unwrap();
        let mut files = 0;
        for entry in manifest.as_array().unwrap() {
            let dest = entry["dest"].as_str().unwrap();
            if !dest.starts_with("blocklists/") {
                continue;
            }
            let category = entry["category"].as_str().unwrap().to_string();
            let path = data.join(dest);
            let parsed = warden::lists::load_file(&path, warden::lists::Format::Auto).unwrap();
            for rule in parsed.rules {
                if let warden::lists::Target::Name(n) = rule.target {
                    seen.insert(n);
                }
            }
            let _ = write!(
                lists,
                "[[lists]]\nname = \"real{files}\"\ncategory = \"{category}\"\npath = {:?}\n",
                path.display().to_string()
            );
            categories.insert(category);
            files += 1;
        }
        source = format!("{files} real lists from ../shared/data/blocklists + synthetic top-up");
    }
    let mut synthetic = String::new();
    let mut n = 0u64;
    while seen.len() < target {
        n += 1;
        // Distinct, plausible names: a hashed stem under a handful of TLDs.
        let stem = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
        let tld = ["com", "net", "org", "xyz", "co.uk", "ru"][(n % 6) as usize];
        let name = format!("s{stem:x}.{tld}");
        if seen.insert(name.clone()) {
            synthetic.push_str(&name);
            synthetic.push('\n');
        }
    }
    std::fs::write(dir.join("synthetic.txt"), synthetic).unwrap();
    let _ = write!(
        lists,
        "[[lists]]\nname = \"synthetic\"\ncategory = \"synthetic\"\npath = \"synthetic.txt\"\n"
    );
    categories.insert("synthetic".to_string());
    // A school's own short list: what an admin edits by hand.
    let local: String = (0..LOCAL_NAMES)
        .map(|i| format!("local{i}.example\n"))
        .collect();
    std::fs::write(dir.join("local.txt"), local).unwrap();
    let _ = write!(
        lists,
        "[[lists]]\nname = \"local\"\ncategory = \"local\"\npath = \"local.txt\"\n"
    );
    categories.insert("local".to_string());
    for c in categories {
        let _ = writeln!(config, "[categories.{c}]");
    }
    config.push_str(&lists);
    let path = dir.join("warden.toml");
    std::fs::write(&path, config).unwrap();
    (path, source)
}

struct Reload {
    wall: Duration,
    peak_heap: isize,
    peak_rss: isize,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not (smoke run).
    let full = std::env::args().any(|a| a == "--bench");
    // As `warden serve` does at start-up.
    warden::memory::configure();
    let target = if full { TARGET_NAMES } else { SMOKE_NAMES };
    let dir = tempfile::tempdir().unwrap();
    let (config, source) = write_rule_set(dir.path(), target);

    // Baselines: a cold load, then memory at rest with that snapshot serving.
    let started = Instant::now();
    let engine = Engine::load(&config).unwrap();
    let cold = started.elapsed();
    let rules = engine.matcher.stats().rules;
    warden::memory::return_freed_memory();
    let shared = Arc::new(ArcSwap::from_pointee(engine));
    let reloader = Reloader::new(&config, shared.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let steady_heap = LIVE.load(Ordering::Relaxed);
    let steady_rss = proc_status("VmRSS:");

    let synthetic = dir.path().join("synthetic.txt");
    let mut reloads = Vec::new();
    for _ in 0..RELOADS {
        // A new file with the same text: the big list's layer must be rebuilt.
        replace_with_copy(&synthetic);
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        reset_peak_rss();
        let started = Instant::now();
        let done = runtime.block_on(reloader.reload("benchmark")).unwrap();
        reloads.push(Reload {
            wall: started.elapsed(),
            peak_heap: PEAK.load(Ordering::Relaxed),
            peak_rss: proc_status("VmHWM:"),
        });
        assert!(!done.base_reused, "a changed big list rebuilds the base");
    }
    let after_heap = LIVE.load(Ordering::Relaxed);
    let after_rss = proc_status("VmRSS:");

    println!("reload benchmark: {rules} rules, {target} distinct names ({source})");
    println!(
        "cold load: {:.2} s; at rest: heap {:.1} MiB, RSS {:.1} MiB",
        cold.as_secs_f64(),
        mib(steady_heap),
        mib(steady_rss)
    );
    println!("| full reload | wall time | vs cold load | peak heap | vs heap at rest | peak RSS | vs RSS at rest |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in reloads.iter().enumerate() {
        println!(
            "| {} | {:.2} s | {:.2}× | {:.1} MiB | {:.2}× | {:.1} MiB | {:.2}× |",
            i + 1,
            r.wall.as_secs_f64(),
            r.wall.as_secs_f64() / cold.as_secs_f64(),
            mib(r.peak_heap),
            r.peak_heap as f64 / steady_heap as f64,
            mib(r.peak_rss),
            r.peak_rss as f64 / steady_rss.max(1) as f64,
        );
    }
    println!(
        "after {RELOADS} reloads: heap {:.1} MiB, RSS {:.1} MiB (nothing leaks from one snapshot to the next)",
        mib(after_heap),
        mib(after_rss)
    );
    // The smoke run checks the numbers are sane, so this code cannot rot silently.
    assert!(reloads.iter().all(|r| r.peak_heap >= steady_heap));
    assert_eq!(shared.load().matcher.stats().rules, rules);

    let mut walls: Vec<f64> = reloads.iter().map(|r| r.wall.as_secs_f64()).collect();
    let full_median = median(&mut walls);
    let bench = SmallChanges {
        runtime: &runtime,
        reloader: &reloader,
        shared: &shared,
        dir: dir.path(),
        listed: listed_names(&synthetic, 4 * SMALL_CHANGES),
        done: 0,
    };
    bench.run(full_median);
    // Past the names the dashboard changes allowed (the base alone still blocks those).
    let skip = 4 * SMALL_CHANGES;
    lookup_cost(
        &shared.load(),
        &listed_names(&synthetic, 5_000 + skip)[skip..],
    );
}

/// Replace `path` by a copy of itself (renamed onto it): the same text in a new file.
fn replace_with_copy(path: &Path) {
    let copy = path.with_extension("copy");
    std::fs::copy(path, &copy).unwrap();
    std::fs::rename(&copy, path).unwrap();
}

/// The first `n` names of a list file.
fn listed_names(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().take(n).map(str::to_string).collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The one-entry changes (see the file's doc).
struct SmallChanges<'a> {
    runtime: &'a tokio::runtime::Runtime,
    reloader: &'a Reloader,
    shared: &'a Arc<ArcSwap<Engine>>,
    dir: &'a Path,
    /// Names on the big list, for allow entries (each used once).
    listed: Vec<String>,
    done: usize,
}

#[derive(Clone, Copy, Debug)]
enum Change {
    DashboardAllow,
    LocalListEdit,
}

impl SmallChanges<'_> {
    fn run(mut self, full_median: f64) {
        println!(
            "\n| one-entry change ({SMALL_CHANGES} each) | load | median | min | max | vs full reload median | lookups/s meanwhile |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|");
        for change in [Change::DashboardAllow, Change::LocalListEdit] {
            for loaded in [false, true] {
                let stop = Arc::new(AtomicBool::new(false));
                let load = loaded.then(|| self.start_load(stop.clone()));
                let started = Instant::now();
                let mut times: Vec<f64> = (0..SMALL_CHANGES).map(|_| self.one(change)).collect();
                let elapsed = started.elapsed().as_secs_f64();
                stop.store(true, Ordering::Relaxed);
                let lookups = load.map(|t| t.join().unwrap() as f64 / elapsed);
                let (min, max) = (times[0].min(times[1]), 0.0f64);
                let max = times.iter().copied().fold(max, f64::max);
                let min = times.iter().copied().fold(min, f64::min);
                let mid = median(&mut times);
                println!(
                    "| {change:?} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.4}× | {} |",
                    if loaded {
                        "lookups on the other core"
                    } else {
                        "idle"
                    },
                    mid * 1e3,
                    min * 1e3,
                    max * 1e3,
                    mid / full_median,
                    lookups.map_or("-".to_string(), |l| format!("{:.2} M", l / 1e6)),
                );
            }
        }
    }

    /// One change, timed from the write to the reload's return; then checked in force.
    fn one(&mut self, change: Change) -> f64 {
        let i = self.done;
        self.done += 1;
        let (name, blocked_after) = match change {
            Change::DashboardAllow => (self.listed[i].clone(), false),
            Change::LocalListEdit => (format!("new{i}.example"), true),
        };
        assert_ne!(
            self.blocked(&name),
            blocked_after,
            "{name} before the change"
        );
        let started = Instant::now();
        match change {
            Change::DashboardAllow => {
                let file = self.dir.join("allow-dashboard.txt");
                let mut text = warden::dashboard::allow::read(&file).unwrap();
                let _ = write!(text, "# benchmark entry {i}\n{name}\n");
                warden::dashboard::allow::write(&file, &text).unwrap();
            }
            Change::LocalListEdit => {
                let file = self.dir.join("local.txt");
                let mut text = std::fs::read_to_string(&file).unwrap();
                let _ = writeln!(text, "{name}");
                std::fs::write(&file, text).unwrap();
            }
        }
        let done = self
            .runtime
            .block_on(self.reloader.reload("benchmark"))
            .unwrap();
        let wall = started.elapsed().as_secs_f64();
        assert!(done.base_reused, "a small change keeps the base");
        assert_eq!(
            self.blocked(&name),
            blocked_after,
            "{name} after the change"
        );
        wall
    }

    fn blocked(&self, name: &str) -> bool {
        let engine = self.shared.load();
        let m = &engine.matcher;
        m.lookup(name, m.all_categories()).is_blocked()
    }

    /// A thread looking names up through the serving snapshot until `stop`, as the
    /// query path does (one snapshot load per query); returns how many it did.
    fn start_load(&self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
        let shared = self.shared.clone();
        let names: Vec<String> = self
            .listed
            .iter()
            .map(|n| format!("www.{n}"))
            .chain((0..1000).map(|i| format!("unlisted{i}.example.org")))
            .collect();
        std::thread::spawn(move || {
            let mut count = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for name in &names {
                    let engine = shared.load();
                    let m = &engine.matcher;
                    std::hint::black_box(m.lookup(name, m.all_categories()).is_blocked());
                }
                count += names.len() as u64;
            }
            count
        })
    }
}

/// Pairs of rounds over the same names (listed ones under `www.`, and as many
/// unlisted): a pass through both layers then one through the base alone, then the
/// other way round; the median of the pairs' ratios.
fn lookup_cost(engine: &Engine, listed: &[String]) {
    let names: Vec<String> = listed
        .iter()
        .map(|n| format!("www.{n}"))
        .chain((0..listed.len()).map(|i| format!("host{i}.unlisted{i}.org")))
        .collect();
    let layers = &engine.matcher;
    let base = layers.base();
    let all = layers.all_categories();
    let pass = |f: &dyn Fn(&str) -> bool| {
        let started = Instant::now();
        let blocked = names.iter().filter(|n| f(n)).count();
        std::hint::black_box(blocked);
        started.elapsed().as_secs_f64() / names.len() as f64
    };
    let both = |n: &str| layers.lookup(n, all).is_blocked();
    let alone = |n: &str| base.lookup(n, all).is_blocked();
    assert_eq!(
        names.iter().filter(|n| both(n)).count(),
        names.iter().filter(|n| alone(n)).count()
    );
    // The side going second in a round finds the names' lines cached by the first: a
    // round's ratio is biased by its order, so each ratio is over two rounds, one in
    // each order.
    let (mut ratios, mut layered, mut single) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUND_PAIRS {
        let (a1, b1) = (pass(&both), pass(&alone));
        let b2 = pass(&alone);
        let a2 = pass(&both);
        ratios.push((a1 + a2) / (b1 + b2));
        layered.extend([a1, a2]);
        single.extend([b1, b2]);
    }
    println!(
        "\nlookup through both layers (overlay: {} rules) vs the base alone, {} names, {ROUND_PAIRS} \
         pairs of rounds: {:.1} ns vs {:.1} ns (medians), median ratio {:.3}×",
        layers.overlay().map_or(0, |o| o.stats().rules),
        names.len(),
        median(&mut layered) * 1e9,
        median(&mut single) * 1e9,
        median(&mut ratios)
    );
}
