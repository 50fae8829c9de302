//! List sources: reading a list file (plain or gzip) through its parser into rules, with
//! a report of what was accepted, what was a duplicate, and every skipped line by reason.
//!
//! A list never fails the load because of bad lines: they are counted and the first few
//! of each reason are kept with their `file:line` for `warden lists stats`. Only a list
//! that cannot be read at all (missing, unreadable, corrupt gzip) is an error, and that
//! error names the file.
//!
//! A list file is a regular file of bounded size, and reading one can neither hang nor
//! take unbounded memory: it is opened without blocking (a FIFO with no writer would
//! otherwise block the open forever), the opened file itself is checked (`fstat`, not a
//! racy look at the path) and refused unless it is a regular file (so `/dev/zero`, a
//! FIFO, a socket or a directory is an error naming it), at most `max_bytes` are read
//! from it and, for gzip, at most `max_bytes` are decompressed (a gzip bomb is refused),
//! and no line is kept beyond [`MAX_LINE_BYTES`].

pub mod parse;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use parse::{Format, LineOutcome, LineParser, ParsedRule, SkipReason, Syntax, Target};

/// How many example lines to keep per skip reason.
const EXAMPLES_PER_REASON: usize = 3;
/// Above this share of skipped content lines a list is flagged as probably mis-declared
/// or corrupt (a warning, never a refusal: see the module doc).
const SUSPICIOUS_SKIP_RATIO: f64 = 0.5;

/// The most bytes read from one list file (and, for gzip, decompressed from it) unless
/// `[reload] max_list_bytes` says otherwise: the largest public lists are under 100 MiB.
pub use crate::config::DEFAULT_MAX_LIST_BYTES;

/// The longest line kept: longer lines are skipped ([`SkipReason::LineTooLong`]) without
/// being held whole. The longest DNS name is 253 bytes; a hosts line with many names on
/// it stays far below this.
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;

/// A list that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot open list file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "list file {path} is {kind}, not a regular file; a list must be a regular file \
         (a FIFO, device, socket or directory could block or never end)"
    )]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(
        "list file {path} {what} more than {limit} bytes, the limit ([reload] max_list_bytes); \
         nothing of it was used"
    )]
    TooLarge {
        path: PathBuf,
        /// "holds" or "decompresses to".
        what: &'static str,
        limit: u64,
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
    /// The first few names the list blocks, as written (not hashed, not wildcards, not
    /// exceptions): where the self-test takes a category's canary from.
    #[serde(skip)]
    pub samples: Vec<String>,
}

/// Names kept per list in [`ListReport::samples`].
const SAMPLES: usize = 4;

/// How one configured list loaded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadedList {
    pub name: String,
    /// The category, or `None` for an allow list.
    pub category: Option<String>,
    pub report: ListReport,
    /// A `url` list with no downloaded copy yet: it blocks nothing until one arrives.
    pub missing: bool,
}

fn serialize_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl ListReport {
    /// Total skipped lines (a line that yields several skips counts once per skip).
    pub(crate) fn skipped_total(&self) -> u64 {
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

/// Read and parse the list at `path`, reading at most [`DEFAULT_MAX_LIST_BYTES`]. Gzip
/// files (by their magic bytes, whatever their name: a download may be compressed) are
/// decompressed on the fly.
pub fn load_file(path: &Path, format: Format) -> Result<ParsedList, ListError> {
    load_file_capped(path, format, DEFAULT_MAX_LIST_BYTES)
}

/// [`load_file`] reading (and decompressing) at most `max_bytes`.
pub(crate) fn load_file_capped(
    path: &Path,
    format: Format,
    max_bytes: u64,
) -> Result<ParsedList, ListError> {
    collect(|accept| load_file_with(path, format, max_bytes, accept))
}

/// [`load_file_capped`], giving each rule to `accept` as it is read instead of
/// collecting them: `accept` returns `false` for a target the list already had (counted
/// as a duplicate). Returns the report (its `load_time` then includes what `accept`
/// spends). This is how a snapshot is built without holding a whole list.
pub(crate) fn load_file_with(
    path: &Path,
    format: Format,
    max_bytes: u64,
    accept: impl FnMut(Rule) -> bool,
) -> Result<ListReport, ListError> {
    let open_err = |source| ListError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = open_regular(path)?;
    let size = file.metadata().map_err(open_err)?.len();
    if size > max_bytes {
        return Err(ListError::TooLarge {
            path: path.to_path_buf(),
            what: "holds",
            limit: max_bytes,
        });
    }
    // The cap holds while reading too: the file may grow after the size was read.
    let mut file = BufReader::with_capacity(1 << 16, Capped::new(file, max_bytes, false));
    let gzip = file
        .fill_buf()
        .map_err(|e| read_error(path, 0, e))?
        .starts_with(&[0x1f, 0x8b]);
    if gzip {
        let reader = flate2::bufread::MultiGzDecoder::new(file);
        parse_reader_with(
            BufReader::with_capacity(1 << 16, Capped::new(reader, max_bytes, true)),
            path,
            format,
            accept,
        )
    } else {
        parse_reader_with(file, path, format, accept)
    }
}

/// Open `path` for reading only if it is a regular file, without ever blocking.
///
/// `O_NONBLOCK` makes opening a FIFO that has no writer return at once (a blocking open
/// would wait for a writer forever) and an open that would wait for a lease break fail
/// instead of waiting; it changes nothing for reading a regular file. The type is then
/// checked on the opened file (`fstat`), so a path swapped between a check and the
/// open cannot slip through. A look at the path first keeps us from even opening a
/// device (opening some has side effects); the check after the open is the one that
/// counts.
pub(crate) fn open_regular(path: &Path) -> Result<File, ListError> {
    let open_err = |source| ListError::Open {
        path: path.to_path_buf(),
        source,
    };
    let not_regular = |file_type: std::fs::FileType| ListError::NotRegular {
        path: path.to_path_buf(),
        kind: describe(file_type),
    };
    let before = std::fs::metadata(path).map_err(open_err)?;
    if !before.is_file() {
        return Err(not_regular(before.file_type()));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options.open(path).map_err(open_err)?;
    let opened = file.metadata().map_err(open_err)?;
    if !opened.is_file() {
        return Err(not_regular(opened.file_type()));
    }
    Ok(file)
}

/// A small regular file's text (lossy UTF-8), at most `max` bytes, opened as
/// [`open_regular`] does: a FIFO or a device in its place cannot hang the reader.
/// For the files beside the lists: leases, secrets, tokens, sign-in state.
pub(crate) fn read_small(path: &Path, max: u64) -> Result<String, std::io::Error> {
    let bytes = read_small_bytes(path, max)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// [`read_small`] as bytes.
pub(crate) fn read_small_bytes(path: &Path, max: u64) -> Result<Vec<u8>, std::io::Error> {
    let file = open_regular(path).map_err(|e| match e {
        ListError::Open { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    })?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What a file that is not a regular one is, for the error message.
fn describe(file_type: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// The payload of the I/O error [`Capped`] returns once its limit is passed.
#[derive(Debug, thiserror::Error)]
#[error("more than {limit} bytes")]
struct LimitExceeded {
    limit: u64,
    decompressed: bool,
}

/// A reader that fails (with [`LimitExceeded`]) rather than give more than `limit`
/// bytes.
struct Capped<R> {
    inner: R,
    remaining: u64,
    limit: u64,
    decompressed: bool,
}

impl<R: Read> Capped<R> {
    fn new(inner: R, limit: u64, decompressed: bool) -> Self {
        Capped {
            inner,
            remaining: limit,
            limit,
            decompressed,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // One byte more than the limit allows tells "exactly at the limit" from "over".
        let room = usize::try_from(self.remaining.saturating_add(1)).unwrap_or(usize::MAX);
        let len = buf.len().min(room);
        let n = self.inner.read(&mut buf[..len])?;
        if n as u64 > self.remaining {
            return Err(std::io::Error::other(LimitExceeded {
                limit: self.limit,
                decompressed: self.decompressed,
            }));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Read one line (through its `\n`) into `buf`, keeping at most `max` bytes of it.
/// Returns the bytes consumed (0 at the end) and whether the line was cut short.
fn read_line_bounded(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let (mut consumed, mut cut) = (0, false);
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((consumed, cut));
        }
        let (len, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        cut |= len > room;
        buf.extend_from_slice(&available[..len.min(room)]);
        reader.consume(len);
        consumed += len;
        if done {
            return Ok((consumed, cut));
        }
    }
}

/// Parse a list from any reader; `path` names it in reports and errors.
pub(crate) fn parse_reader(
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
pub(crate) fn parse_reader_with(
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
        let (n, cut) = read_line_bounded(&mut reader, &mut buf, MAX_LINE_BYTES)
            .map_err(|source| read_error(path, line_no, source))?;
        if n == 0 {
            break;
        }
        line_no = line_no.saturating_add(1);
        report.lines += 1;
        if cut {
            report.record_skip(
                SkipReason::LineTooLong,
                line_no,
                &String::from_utf8_lossy(&buf),
            );
            continue;
        }
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
            let sample = match (&parsed.target, parsed.syntax) {
                (_, Syntax::Wildcard | Syntax::AdblockException | Syntax::RpzPassthru) => None,
                (Target::Name(name), _) if report.samples.len() < SAMPLES => Some(name.clone()),
                _ => None,
            };
            let rule = Rule {
                target: parsed.target,
                syntax: parsed.syntax,
                line: line_no,
            };
            if accept(rule) {
                report.accepted += 1;
                report.samples.extend(sample);
            } else {
                report.duplicates += 1;
            }
        }
    }
    report.load_time = started.elapsed();
    Ok(report)
}

/// A read error; passing the byte cap is [`ListError::TooLarge`].
fn read_error(path: &Path, line: u32, source: std::io::Error) -> ListError {
    match source
        .get_ref()
        .and_then(|e| e.downcast_ref::<LimitExceeded>())
    {
        Some(exceeded) => ListError::TooLarge {
            path: path.to_path_buf(),
            what: if exceeded.decompressed {
                "decompresses to"
            } else {
                "holds"
            },
            limit: exceeded.limit,
        },
        None => ListError::Read {
            path: path.to_path_buf(),
            line,
            source,
        },
    }
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

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn a_fifo_is_refused_at_once_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipe.txt");
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // No writer ever opens it: a blocking open would never return.
        let err = load_file(&path, Format::Auto).unwrap_err();
        assert!(matches!(err, ListError::NotRegular { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("pipe.txt") && text.contains("FIFO"), "{text}");
    }

    #[test]
    fn devices_directories_and_links_to_them_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("zero.txt");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let err = load_file(&zero, Format::Auto).unwrap_err().to_string();
        assert!(
            err.contains("zero.txt") && err.contains("character device"),
            "{err}"
        );
        let err = load_file(dir.path(), Format::Auto).unwrap_err().to_string();
        assert!(err.contains("a directory"), "{err}");
        // A link to a regular file is a regular file.
        let real = dir.path().join("real.txt");
        std::fs::write(&real, "a.test\n").unwrap();
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(load_file(&link, Format::Auto).unwrap().report.accepted, 1);
    }

    #[test]
    fn a_gzip_bomb_is_refused_by_its_decompressed_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.txt.gz");
        let packed = gzip(&vec![b'a'; 8 << 20]);
        assert!(packed.len() < 64 << 10);
        std::fs::write(&path, &packed).unwrap();
        let err = load_file_capped(&path, Format::Auto, 1 << 20).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, ListError::TooLarge { what: "decompresses to", limit, .. } if limit == 1 << 20),
            "{text}"
        );
        assert!(text.contains("bomb.txt.gz"), "{text}");
    }

    #[test]
    fn an_endless_line_is_skipped_without_being_held() {
        let mut text = vec![b'x'; 3 * MAX_LINE_BYTES];
        text.extend_from_slice(b"\na.test\n");
        let list = parse_reader(&text[..], Path::new("long.txt"), Format::Auto).unwrap();
        assert_eq!(list.report.accepted, 1);
        assert_eq!(list.rules[0].line, 2);
        let long = &list.report.skipped[SkipReason::LineTooLong.as_str()];
        assert_eq!(long.count, 1);
        assert_eq!(long.examples[0].line, 1);
    }

    /// A list's lines as the parser sees them: names, junk, long lines, any line ends.
    fn list_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let line = prop_oneof![
            "[a-z]{1,10}\\.test".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..40),
            (1usize..3).prop_map(|k| vec![b'y'; k * MAX_LINE_BYTES]),
        ];
        proptest::collection::vec(line, 0..12).prop_map(|lines| lines.join(&b'\n'))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Invariant: a list of `len` bytes loads if and only if `len <= cap` (plain or
        /// gzip: the decompressed bytes count), and when it loads, gzip changes nothing.
        #[test]
        fn the_cap_admits_exactly_the_lists_within_it(
            body in list_bytes(),
            slack in -64i64..64,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let plain = dir.path().join("l.txt");
            let packed = dir.path().join("l.txt.gz");
            std::fs::write(&plain, &body).unwrap();
            let packed_bytes = gzip(&body);
            std::fs::write(&packed, &packed_bytes).unwrap();
            let cap = (body.len() as i64 + slack).max(0) as u64;
            let got = load_file_capped(&plain, Format::Auto, cap);
            proptest::prop_assert_eq!(got.is_ok(), body.len() as u64 <= cap);
            let unpacked = load_file_capped(&packed, Format::Auto, cap);
            let fits = body.len() as u64 <= cap && packed_bytes.len() as u64 <= cap;
            proptest::prop_assert_eq!(unpacked.is_ok(), fits);
            if let (Ok(a), Ok(b)) = (got, unpacked) {
                proptest::prop_assert_eq!(a.rules, b.rules);
                proptest::prop_assert_eq!(a.report.lines, b.report.lines);
                proptest::prop_assert_eq!(a.report.skipped, b.report.skipped);
            }
        }

        /// Invariant: a bounded line read keeps at most `max` bytes, consumes the whole
        /// line, and reads as many lines as the input has.
        #[test]
        fn bounded_lines_hold_at_most_the_bound(body in list_bytes(), max in 1usize..300) {
            let mut reader = std::io::BufReader::with_capacity(7, &body[..]);
            let (mut buf, mut lines, mut total) = (Vec::new(), 0, 0);
            loop {
                buf.clear();
                let (n, cut) = read_line_bounded(&mut reader, &mut buf, max).unwrap();
                if n == 0 {
                    break;
                }
                proptest::prop_assert_eq!(buf.len(), n.min(max));
                proptest::prop_assert_eq!(cut, n > max);
                proptest::prop_assert_eq!(&buf[..], &body[total..total + n.min(max)]);
                total += n;
                lines += 1;
            }
            proptest::prop_assert_eq!(total, body.len());
            let expected = body.split(|&b| b == b'\n').count() - usize::from(body.ends_with(b"\n") || body.is_empty());
            proptest::prop_assert_eq!(lines, expected);
        }
    }

    #[test]
    fn flags_lists_that_are_mostly_unusable() {
        let text = "1.1.1.1\n2.2.2.2\na.test\n";
        let list = parse_reader(text.as_bytes(), Path::new("x"), Format::Auto).unwrap();
        assert!(list.report.warning().is_some());
    }
}
