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
//! Measured per reload (five of them, each after the previous snapshot was swapped in):
//! wall time of `Reloader::reload` (read every list, build, check, swap), the peak of
//! live heap bytes (a counting allocator) and the peak resident set (`VmHWM`, reset
//! through `/proc/self/clear_refs` before each reload). The baselines: the first,
//! cold `Engine::load` for time; live heap and RSS at rest, after loading, for memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicIsize, Ordering};
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
const SMOKE_NAMES: usize = 20_000;
const RELOADS: usize = 5;

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
         [reload]\nwatch_files = false\n",
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

    let mut reloads = Vec::new();
    for _ in 0..RELOADS {
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        reset_peak_rss();
        let started = Instant::now();
        runtime.block_on(reloader.reload("benchmark")).unwrap();
        reloads.push(Reload {
            wall: started.elapsed(),
            peak_heap: PEAK.load(Ordering::Relaxed),
            peak_rss: proc_status("VmHWM:"),
        });
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
    println!("| reload | wall time | vs cold load | peak heap | vs heap at rest | peak RSS | vs RSS at rest |");
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
}
