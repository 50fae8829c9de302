//! Golden-file test: the nasty fixture list through the production load path
//! (`lists::load_file`), every accepted rule and every skipped line with its reason.
//! Regenerate after an intended change with `UPDATE_GOLDEN=1 cargo test --test golden`,
//! then review the diff of `tests/fixtures/*.golden` like code.

use std::fmt::Write;
use std::path::Path;

use warden::lists::{self, Format, Target};

fn render(path: &Path, format: Format) -> String {
    let list = lists::load_file(path, format).expect("fixture loads");
    let mut out = String::new();
    for rule in &list.rules {
        let target = match &rule.target {
            Target::Name(n) => n.clone(),
            Target::Hash(h) => format!("sha256:{}", hex::encode(h)),
        };
        writeln!(out, "rule {:>3} {:?} {target}", rule.line, rule.syntax).unwrap();
    }
    let r = &list.report;
    writeln!(
        out,
        "lines {} ignorable {} accepted {} duplicates {}",
        r.lines, r.ignorable, r.accepted, r.duplicates
    )
    .unwrap();
    for (reason, tally) in &r.skipped {
        writeln!(out, "skipped {} x {reason}", tally.count).unwrap();
        for e in &tally.examples {
            writeln!(out, "    line {}: {}", e.line, e.text).unwrap();
        }
    }
    out
}

fn check_golden(fixture: &str, format: Format) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let actual = render(&dir.join(fixture), format);
    let golden = dir.join(format!("{fixture}.{format:?}.golden").to_lowercase());
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            golden.display()
        )
    });
    assert!(
        actual == expected,
        "{} differs from the parse of {fixture}:\n--- expected\n{expected}\n--- actual\n{actual}",
        golden.display()
    );
}

#[test]
fn nasty_list_auto() {
    check_golden("nasty.txt", Format::Auto);
}

#[test]
fn nasty_list_as_declared_hosts() {
    // The same file declared as hosts: only hosts lines count, the rest is "wrong format".
    check_golden("nasty.txt", Format::Hosts);
}

#[test]
fn gzip_and_plain_parse_identically() {
    use std::io::Write as _;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let gz = tmp.path().join("nasty.txt.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&std::fs::read(dir.join("nasty.txt")).unwrap())
        .unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let plain = lists::load_file(&dir.join("nasty.txt"), Format::Auto).unwrap();
    let packed = lists::load_file(&gz, Format::Auto).unwrap();
    assert_eq!(plain.rules, packed.rules);
    assert_eq!(plain.report.skipped, packed.report.skipped);
}
