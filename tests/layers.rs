//! Reloads in two layers (issue #13 item 5): a change to a small list (the dashboard's
//! allow entries, a short local list) keeps the serving snapshot's base layer, the very
//! same `Arc`, and applies; a changed big list, or a new one, rebuilds it; the overlay
//! stops at its total and later small lists go to the base; locked
//! categories win over an overlay allow entry; and a snapshot built on a kept base
//! reports and decides exactly as one built from scratch. Through `Engine::reload` and
//! the `Reloader` (fail-closed checks, generation counter) on lists written to a
//! temporary folder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use warden::engine::Engine;
use warden::filter::Verdict;
use warden::reload::{ReloadError, Reloader};

/// Entries in the big lists: over the overlay's limit of 500 per list.
const BIG: usize = 25_000;

/// A folder with a config: a big `adult` list, a small locked `ctiru` list, a big
/// locked `iwf` list, a small `local` block list and a small `exceptions` allow list.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let big = |prefix: &str| {
        (0..BIG)
            .map(|i| format!("{prefix}{i}.test\n"))
            .collect::<String>()
    };
    std::fs::write(dir.path().join("adult.txt"), big("adult")).unwrap();
    std::fs::write(dir.path().join("iwf.txt"), big("iwf")).unwrap();
    std::fs::write(dir.path().join("ctiru.txt"), "ctiru.test\n").unwrap();
    std::fs::write(dir.path().join("local.txt"), "local.test\nadult7.test\n").unwrap();
    std::fs::write(dir.path().join("allow.txt"), "ok.adult1.test\n").unwrap();
    let config = r#"
[server]
listen = ["127.0.0.1:0"]
[audit]
enabled = false
[admin]
enabled = false
[reload]
watch_files = false
[dashboard]
allow_file = "allow-dashboard.txt"
[categories.adult]
[categories.local]
[categories.terrorism]
locked = true
[categories.iwf]
locked = true
[[lists]]
name = "adult"
category = "adult"
path = "adult.txt"
[[lists]]
name = "ctiru"
category = "terrorism"
path = "ctiru.txt"
[[lists]]
name = "local"
category = "local"
path = "local.txt"
[[lists]]
name = "iwf"
category = "iwf"
path = "iwf.txt"
[[allow]]
name = "exceptions"
path = "allow.txt"
"#;
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

/// Replace a file by renaming a new one onto it, as an editor or a download does.
fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn append(path: &Path, text: &str) {
    let mut old = std::fs::read_to_string(path).unwrap_or_default();
    old.push_str(text);
    replace(path, &old);
}

/// Every verdict detail for `name` with every category active.
fn verdict(engine: &Engine, name: &str) -> String {
    let m = &engine.matcher;
    match m.lookup(name, m.all_categories()) {
        Verdict::Allowed { exception } => format!(
            "allowed {:?}",
            exception.map(|r| (r.list_name(), r.line(), r.matched))
        ),
        Verdict::Blocked(b) => format!(
            "blocked {} locked={} {} {} {}",
            m.category_names(b.categories),
            b.locked,
            b.rule.list_name(),
            b.rule.line(),
            b.rule.matched
        ),
    }
}

/// The list reports' names, categories and counts, in order.
fn reports(engine: &Engine) -> Vec<(String, Option<String>, u64)> {
    engine
        .lists
        .iter()
        .map(|l| (l.name.clone(), l.category.clone(), l.report.accepted))
        .collect()
}

/// Names worth asking about: listed, under listed, allowed, and unlisted.
const NAMES: [&str; 12] = [
    "adult1.test",
    "ok.adult1.test",
    "www.adult7.test",
    "local.test",
    "ctiru.test",
    "www.ctiru.test",
    "iwf3.test",
    "x.iwf3.test",
    "adult24999.test",
    "new.test",
    "www.new.test",
    "unlisted.test",
];

/// The snapshot built on a kept base and one built from scratch agree on every name
/// and report the same lists in the same order.
fn assert_same_as_fresh(engine: &Engine, config: &Path) {
    let fresh = Engine::load(config).unwrap();
    assert!(!fresh.base_reused);
    for name in NAMES {
        assert_eq!(verdict(engine, name), verdict(&fresh, name), "{name}");
    }
    assert_eq!(reports(engine), reports(&fresh));
    assert_eq!(engine.matcher.stats().rules, fresh.matcher.stats().rules);
}

#[test]
fn big_lists_form_the_base_and_small_ones_the_overlay() {
    let (_dir, config) = setup();
    let engine = Engine::load(&config).unwrap();
    let base = engine.matcher.base();
    let overlay = engine
        .matcher
        .overlay()
        .expect("small lists in the overlay");
    assert_eq!(base.stats().names, 2 * BIG as u64);
    // ctiru, local (2), exceptions.
    assert_eq!(overlay.stats().rules, 4);
    let names: Vec<String> = reports(&engine).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["adult", "ctiru", "local", "iwf", "exceptions"]);
    assert_eq!(
        verdict(&engine, "ok.adult1.test"),
        "allowed Some((\"exceptions\", 1, \"ok.adult1.test\"))"
    );
    // adult7.test is on adult (base, line 8) and local (overlay): both categories,
    // and the rule named is the first list's, as one matcher would name it.
    assert_eq!(
        verdict(&engine, "www.adult7.test"),
        "blocked adult,local locked=false adult 8 adult7.test"
    );
}

#[test]
fn a_dashboard_allow_entry_keeps_the_base_and_applies() {
    let (dir, config) = setup();
    let first = Engine::load(&config).unwrap();
    assert!(verdict(&first, "www.adult5.test").starts_with("blocked adult"));
    // The first entry creates the file: a new small list.
    append(
        &dir.path().join("allow-dashboard.txt"),
        "# why\nadult5.test\n",
    );
    let second = Engine::reload(&config, &first).unwrap();
    assert!(second.base_reused);
    assert!(Arc::ptr_eq(first.matcher.base(), second.matcher.base()));
    assert_eq!(
        verdict(&second, "www.adult5.test"),
        "allowed Some((\"dashboard\", 2, \"adult5.test\"))"
    );
    // A second entry, and a locked name, which no allow entry overrides: one on the
    // big locked list (in the base) and one on the small one (in the overlay).
    append(
        &dir.path().join("allow-dashboard.txt"),
        "adult6.test\niwf3.test\nctiru.test\n",
    );
    let third = Engine::reload(&config, &second).unwrap();
    assert!(Arc::ptr_eq(first.matcher.base(), third.matcher.base()));
    assert!(verdict(&third, "adult6.test").starts_with("allowed"));
    assert_eq!(
        verdict(&third, "x.iwf3.test"),
        "blocked iwf locked=true iwf 4 iwf3.test"
    );
    assert_eq!(
        verdict(&third, "www.ctiru.test"),
        "blocked terrorism locked=true ctiru 1 ctiru.test"
    );
    assert_same_as_fresh(&third, &config);
}

#[test]
fn an_edited_small_list_keeps_the_base_and_applies() {
    let (dir, config) = setup();
    let first = Engine::load(&config).unwrap();
    append(&dir.path().join("local.txt"), "new.test\n");
    append(&dir.path().join("allow.txt"), "adult9.test\n");
    let second = Engine::reload(&config, &first).unwrap();
    assert!(second.base_reused);
    assert!(Arc::ptr_eq(first.matcher.base(), second.matcher.base()));
    assert_eq!(
        verdict(&second, "www.new.test"),
        "blocked local locked=false local 3 new.test"
    );
    assert!(verdict(&second, "adult9.test").starts_with("allowed"));
    assert_same_as_fresh(&second, &config);
}

#[test]
fn a_changed_big_list_rebuilds_the_base() {
    let (dir, config) = setup();
    let first = Engine::load(&config).unwrap();
    append(&dir.path().join("adult.txt"), "new.test\n");
    let second = Engine::reload(&config, &first).unwrap();
    assert!(!second.base_reused);
    assert!(!Arc::ptr_eq(first.matcher.base(), second.matcher.base()));
    assert!(verdict(&second, "www.new.test").starts_with("blocked adult"));
    // Rewritten in place, same size: the inode change time tells it apart.
    let adult = dir.path().join("adult.txt");
    let text = std::fs::read_to_string(&adult).unwrap();
    std::fs::write(&adult, text.replace("new.test", "wen.test")).unwrap();
    let third = Engine::reload(&config, &second).unwrap();
    assert!(!third.base_reused);
    assert!(verdict(&third, "www.new.test").starts_with("allowed"));
    assert!(verdict(&third, "wen.test").starts_with("blocked adult"));
    // Nothing changed: the base is kept.
    let fourth = Engine::reload(&config, &third).unwrap();
    assert!(Arc::ptr_eq(third.matcher.base(), fourth.matcher.base()));
    assert_same_as_fresh(&fourth, &config);
}

#[test]
fn a_small_list_grown_big_or_a_new_big_list_rebuilds_the_base() {
    let (dir, config) = setup();
    let first = Engine::load(&config).unwrap();
    let many: String = (0..BIG).map(|i| format!("many{i}.test\n")).collect();
    append(&dir.path().join("local.txt"), &many);
    let second = Engine::reload(&config, &first).unwrap();
    assert!(!second.base_reused);
    // adult, iwf, and local's own names (adult7.test is adult's already).
    assert_eq!(second.matcher.base().stats().names, 3 * BIG as u64 + 1);
    assert!(verdict(&second, "many7.test").starts_with("blocked local"));
    assert_same_as_fresh(&second, &config);

    // And a category changed in the config rebuilds it too.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[categories.local]", "[categories.local]\nlocked = true"),
    )
    .unwrap();
    let third = Engine::reload(&config, &second).unwrap();
    assert!(!third.base_reused);
    assert!(verdict(&third, "many7.test").starts_with("blocked local locked=true"));

    // A new list, too big for the overlay: the reload tries the kept base, finds it,
    // and builds both layers anew.
    let more: String = (0..BIG).map(|i| format!("more{i}.test\n")).collect();
    std::fs::write(dir.path().join("more.txt"), more).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[[lists]]\nname = \"more\"\ncategory = \"adult\"\npath = \"more.txt\"\n");
    std::fs::write(&config, text).unwrap();
    let fourth = Engine::reload(&config, &third).unwrap();
    assert!(!fourth.base_reused);
    assert_eq!(fourth.matcher.base().stats().names, 4 * BIG as u64 + 1);
    assert!(verdict(&fourth, "x.more9.test").starts_with("blocked adult"));
    assert_same_as_fresh(&fourth, &config);
}

/// Through the reloader: a small reload still counts a generation, still refuses a
/// small list that shrank suspiciously (keeping the rules in force), and a later good
/// one still keeps the base.
#[test]
fn a_small_reload_is_a_reload_with_its_checks() {
    let (dir, config) = setup();
    let shared = Arc::new(ArcSwap::from_pointee(Engine::load(&config).unwrap()));
    let base = shared.load().matcher.base().clone();
    let reloader = Reloader::new(&config, shared.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    append(&dir.path().join("allow-dashboard.txt"), "adult5.test\n");
    let done = runtime.block_on(reloader.reload("test")).unwrap();
    assert!(done.base_reused);
    assert_eq!(done.generation, 2);
    assert!(verdict(&shared.load(), "adult5.test").starts_with("allowed"));

    // The local list emptied: below min_ratio of its 2 entries, refused.
    replace(&dir.path().join("local.txt"), "");
    let refused = runtime.block_on(reloader.reload("test"));
    assert!(
        matches!(&refused, Err(ReloadError::Shrunk { list, .. }) if list == "local"),
        "{refused:?}"
    );
    assert!(verdict(&shared.load(), "local.test").starts_with("blocked local"));
    assert_eq!(
        reloader
            .stats()
            .generation
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );

    replace(&dir.path().join("local.txt"), "local.test\nother.test\n");
    let done = runtime.block_on(reloader.reload("test")).unwrap();
    assert!(done.base_reused && done.generation == 3);
    assert!(Arc::ptr_eq(&base, shared.load().matcher.base()));
    let cats: BTreeSet<String> = shared
        .load()
        .matcher
        .categories()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert!(cats.contains("iwf"));
}

/// The overlay takes small lists in list order up to its total (6,000 entries): with
/// fifteen lists of 500, the first twelve fill it and the last three go to the base. An
/// edit of one of those rebuilds the base; an edit of one in the overlay keeps it.
#[test]
fn the_overlay_takes_small_lists_up_to_its_total() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[audit]\nenabled = false\n[admin]\nenabled = false\n\
         [categories.adult]\n",
    );
    for l in 0..15 {
        let names: String = (0..500).map(|i| format!("l{l}n{i}.test\n")).collect();
        std::fs::write(dir.path().join(format!("l{l}.txt")), names).unwrap();
        config.push_str(&format!(
            "[[lists]]\nname = \"l{l}\"\ncategory = \"adult\"\npath = \"l{l}.txt\"\n"
        ));
    }
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, config).unwrap();
    let first = Engine::load(&path).unwrap();
    assert_eq!(
        first.matcher.overlay().map(|o| o.stats().rules),
        Some(6_000)
    );
    assert_eq!(first.matcher.base().stats().names, 1_500);
    assert!(verdict(&first, "x.l14n499.test").starts_with("blocked adult locked=false l14 500"));

    // Still 500 entries (one more would make it too big for the overlay).
    let l0 = dir.path().join("l0.txt");
    replace(
        &l0,
        &std::fs::read_to_string(&l0)
            .unwrap()
            .replace("l0n0.test", "new.test"),
    );
    let second = Engine::reload(&path, &first).unwrap();
    assert!(Arc::ptr_eq(first.matcher.base(), second.matcher.base()));
    assert!(verdict(&second, "new.test").starts_with("blocked adult locked=false l0 1"));
    assert!(verdict(&second, "l0n0.test").starts_with("allowed"));

    append(&dir.path().join("l13.txt"), "newer.test\n");
    let third = Engine::reload(&path, &second).unwrap();
    assert!(!third.base_reused);
    assert!(verdict(&third, "newer.test").starts_with("blocked adult locked=false l13 501"));
    assert_same_as_fresh(&third, &path);
}
