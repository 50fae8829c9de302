//! A lookup must not allocate: counted with a global allocator wrapper.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use warden::filter::{ListKind, MatcherBuilder};
use warden::lists::{parse::sha256_of, Rule, Syntax, Target};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn lookups_do_not_allocate() {
    let mut b = MatcherBuilder::new();
    let adult = b.add_category("adult", false).unwrap();
    let terror = b.add_category("terror", true).unwrap();
    let rule = |n: &str, syntax| Rule {
        target: Target::Name(n.into()),
        syntax,
        line: 1,
    };
    b.add_list(
        "a",
        ListKind::Block(adult),
        &[
            rule("a.test", Syntax::Domain),
            rule("x.b.test", Syntax::Domain),
        ],
    )
    .unwrap();
    b.add_list(
        "b",
        ListKind::Block(adult),
        &[rule("a.test", Syntax::Domain)],
    )
    .unwrap();
    let hashed = Rule {
        target: Target::Hash(sha256_of("t.test")),
        syntax: Syntax::Hashed,
        line: 2,
    };
    b.add_list("t", ListKind::Block(terror), &[hashed]).unwrap();
    b.add_list(
        "allow",
        ListKind::Allow,
        &[rule("ok.a.test", Syntax::Domain)],
    )
    .unwrap();
    let m = b.build().unwrap();
    let all = m.all_categories();
    let names = [
        "www.a.test",
        "ok.a.test",
        "y.x.b.test",
        "b.test",
        "deep.sub.t.test",
        "none.example",
    ];
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut blocked = 0;
    for _ in 0..100 {
        for name in names {
            let v = m.lookup(name, all);
            if let Some(b) = v.block() {
                blocked += 1;
                // Reading the list name and line does not allocate either.
                assert!(!b.rule.list_name().is_empty() && b.rule.line() > 0);
            }
        }
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(blocked, 300);
    assert_eq!(
        after - before,
        0,
        "lookups allocated {} times",
        after - before
    );
}
