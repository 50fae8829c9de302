//! Replays every input under `tests/fuzz_regressions/<target>/` (seeds, and every crash
//! the fuzz targets in `fuzz/` ever found) through the same entry points the fuzzers
//! use: none may panic.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} panicked", path.display());
        count += 1;
    }
    assert!(count > 0, "no inputs in {}", dir.display());
}

#[test]
fn list_parser_inputs() {
    replay("list_parser", warden::fuzzing::list);
}

#[test]
fn config_loader_inputs() {
    replay("config_loader", warden::fuzzing::config);
}

#[test]
fn query_packet_inputs() {
    replay("query_packet", warden::fuzzing::packet);
}

#[test]
fn edns_identity_inputs() {
    replay("edns_identity", warden::fuzzing::edns_identity);
}

#[test]
fn radius_accounting_inputs() {
    replay("radius_accounting", warden::fuzzing::radius_accounting);
}
