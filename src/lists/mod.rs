//! List sources: reading a list file (plain or gzip) through its parser into rules, with
//! a report of what was accepted, what was a duplicate, and every skipped line by reason.
//!
//! A list never fails the load because of bad lines: they are counted and the first few
//! of each reason are kept with their `file:line` for `warden lists stats`. Only a list
//! that cannot be read at all (missing, unreadable, corrupt gzip) is an error, and that
//! error names the file.

pub mod parse;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use parse::{Format, LineOutcome, LineParser, ParsedRule, SkipReason, Syntax, Target};

/// How many example lines to keep per skip reason.
const EXAMPLES_PER_REASON: usize = 3;
/// Above this share of skipped content lines a list is flagged as probably mis-declared
/// or corrupt (a warning, never a refusal: see the module doc).
const SUSPICIOUS_SKIP_RATIO: f64 = 0.5;

/// A list that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot open list file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read list file {path} (after line {line}): {source}")]
    Read {
        path: PathBuf,
        line: u32,
        source: std::io::Error,
    },
}

/// A rule with the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub target: Target,
    pub syntax: Syntax,
    pub line: u32,
}

/// One skipped line kept as an example.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Example {
    pub line: u32,
    pub text: String,
}

/// The count and first examples of one skip reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SkipTally {
    pub count: u64,
    pub examples: Vec<Example>,
}

/// What loading one list found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ListReport {
    pub path: PathBuf,
    pub lines: u64,
    pub ignorable: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub skipped: BTreeMap<&'static str, SkipTally>,
    #[serde(serialize_with = "serialize_ms")]
    pub load_time: Duration,
}

fn serialize_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl ListReport {
    /// Total skipped lines (a line that yields several skips counts once per skip).
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().map(|t| t.count).sum()
    }

    /// A warning when most content lines were unusable.
    pub fn warning(&self) -> Option<String> {
        let skipped = self.skipped_total();
        let content = skipped + self.accepted + self.duplicates;
        if content > 0 && skipped as f64 > content as f64 * SUSPICIOUS_SKIP_RATIO {
            Some(format!(
                "{}: {skipped} of {content} content lines were skipped; is the format right?",
                self.path.display()
            ))
        } else {
            None
        }
    }

    fn record_skip(&mut self, reason: SkipReason, line: u32, text: &str) {
        let tally = self.skipped.entry(reason.as_str()).or_default();
        tally.count += 1;
        if tally.examples.len() < EXAMPLES_PER_REASON {
            let trimmed = text.trim();
            let mut text: String = trimmed.chars().take(120).collect();
            if text.len() < trimmed.len() {
                text.push('…');
            }
            tally.examples.push(Example { line, text });
        }
    }
}

/// A parsed list: its rules in file order and its report.
#[derive(Debug, Clone)]
pub struct ParsedList {
    pub rules: Vec<Rule>,
    pub report: ListReport,
}

/// Read and parse the list at `path`. Gzip files (by their magic bytes, whatever their
/// name: a download may be compressed) are decompressed on the fly.
pub fn load_file(path: &Path, format: Format) -> Result<ParsedList, ListError> {
    collect(|accept| load_file_with(path, format, accept))
}

/// [`load_file`], giving each rule to `accept` as it is read instead of collecting them:
/// `accept` returns `false` for a target the list already had (counted as a duplicate).
/// Returns the report (its `load_time` then includes what `accept` spends). This is how
/// a snapshot is built without holding a whole list.
pub fn load_file_with(
    path: &Path,
    format: Format,
    accept: impl FnMut(Rule) -> bool,
) -> Result<ListReport, ListError> {
    let open_err = |source| ListError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut file = BufReader::with_capacity(1 << 16, File::open(path).map_err(open_err)?);
    let gzip = file
        .fill_buf()
        .map_err(open_err)?
        .starts_with(&[0x1f, 0x8b]);
    if gzip {
        let reader = flate2::bufread::MultiGzDecoder::new(file);
        parse_reader_with(
            BufReader::with_capacity(1 << 16, reader),
            path,
            format,
            accept,
        )
    } else {
        parse_reader_with(file, path, format, accept)
    }
}

/// Parse a list from any reader; `path` names it in reports and errors.
pub fn parse_reader(
    reader: impl BufRead,
    path: &Path,
    format: Format,
) -> Result<ParsedList, ListError> {
    collect(|accept| parse_reader_with(reader, path, format, accept))
}

/// Run `read` with an `accept` that keeps each target's first rule, in order.
fn collect(
    read: impl FnOnce(&mut dyn FnMut(Rule) -> bool) -> Result<ListReport, ListError>,
) -> Result<ParsedList, ListError> {
    let mut rules = Vec::new();
    let mut seen: HashSet<Target> = HashSet::new();
    let report = read(&mut |rule: Rule| {
        if seen.contains(&rule.target) {
            return false;
        }
        seen.insert(rule.target.clone());
        rules.push(rule);
        true
    })?;
    Ok(ParsedList { rules, report })
}

/// [`parse_reader`], giving each rule to `accept` in file order (see
/// [`load_file_with`]).
pub fn parse_reader_with(
    mut reader: impl BufRead,
    path: &Path,
    format: Format,
    mut accept: impl FnMut(Rule) -> bool,
) -> Result<ListReport, ListError> {
    let started = Instant::now();
    let mut report = ListReport {
        path: path.to_path_buf(),
        ..ListReport::default()
    };
    let mut parser = LineParser::new(format);
    let mut outcome = LineOutcome::default();
    let mut buf = Vec::with_capacity(256);
    let mut line_no: u32 = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| ListError::Read {
                path: path.to_path_buf(),
                line: line_no,
                source,
            })?;
        if n == 0 {
            break;
        }
        line_no = line_no.saturating_add(1);
        report.lines += 1;
        let Ok(text) = std::str::from_utf8(&buf) else {
            report.record_skip(SkipReason::NotUtf8, line_no, &String::from_utf8_lossy(&buf));
            continue;
        };
        parser.parse(text, &mut outcome);
        if outcome.ignorable {
            report.ignorable += 1;
        }
        for reason in &outcome.skips {
            report.record_skip(*reason, line_no, text);
        }
        for parsed in outcome.rules.drain(..) {
            let rule = Rule {
                target: parsed.target,
                syntax: parsed.syntax,
                line: line_no,
            };
            if accept(rule) {
                report.accepted += 1;
            } else {
                report.duplicates += 1;
            }
        }
    }
    report.load_time = started.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_duplicates_and_skips_with_positions() {
        let text = "a.test\nA.TEST.\n# comment\n\n1.2.3.4\nb.test\nhttp://c.test/x\n";
        let list = parse_reader(text.as_bytes(), Path::new("t.txt"), Format::Auto).unwrap();
        assert_eq!(list.report.accepted, 2);
        assert_eq!(list.report.duplicates, 1);
        assert_eq!(list.report.ignorable, 2);
        let ip = &list.report.skipped[SkipReason::IpAddress.as_str()];
        assert_eq!(
            ip.examples[0],
            Example {
                line: 5,
                text: "1.2.3.4".into()
            }
        );
        assert_eq!(list.rules[1].line, 6);
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load_file(Path::new("/nonexistent/list.txt"), Format::Auto).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/list.txt"), "{err}");
    }

    #[test]
    fn reads_gzip_transparently() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.txt.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"a.test\n||b.test^\n").unwrap();
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        let list = load_file(&path, Format::Auto).unwrap();
        assert_eq!(list.report.accepted, 2);
    }

    #[test]
    fn corrupt_gzip_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.txt.gz");
        std::fs::write(&path, b"\x1f\x8b\x08\x00garbage that is not deflate").unwrap();
        let err = load_file(&path, Format::Auto).unwrap_err();
        assert!(err.to_string().contains("bad.txt.gz"), "{err}");
    }

    #[test]
    fn flags_lists_that_are_mostly_unusable() {
        let text = "1.1.1.1\n2.2.2.2\na.test\n";
        let list = parse_reader(text.as_bytes(), Path::new("x"), Format::Auto).unwrap();
        assert!(list.report.warning().is_some());
    }
}
