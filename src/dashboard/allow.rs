//! The allow entries added in the dashboard: a plain domain list (`[dashboard]
//! allow_file`) that the engine loads for every group. Each entry is preceded by a comment
//! saying when, by whom and why, so the file explains itself to an admin reading it.
//!
//! Edits replace the file atomically (write a temporary file, then rename), so a reload
//! or a crash never sees half a file.
//!
//! An entry may end (for a trip or a lesson): its comment then says `until` when, as
//! `2026-12-06T10:00:00Z by admin until 2026-12-21T00:00:00Z: the Year 9 trip`, and
//! [`super::expiry`] takes it out of the file at that time.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Why the allow file could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum AllowFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The entries in `text`: (name, the comment that introduced it).
pub fn entries(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut note = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(comment) = line.strip_prefix('#') {
            note = comment.trim().to_string();
        } else if !line.is_empty() {
            out.push((line.to_string(), std::mem::take(&mut note)));
        }
    }
    out
}

/// When the entry with `comment` ends, if it says: the time after `until` in the part
/// before the first `": "` (the reason after it may say anything).
pub fn until(comment: &str) -> Option<SystemTime> {
    let head = comment.split(": ").next()?;
    let (_, when) = head.split_once(" until ")?;
    humantime::parse_rfc3339_weak(when.trim()).ok()
}

/// When the entry with `comment` was added: the time it starts with.
pub fn added(comment: &str) -> Option<SystemTime> {
    let first = comment.split_whitespace().next()?;
    humantime::parse_rfc3339_weak(first).ok()
}

/// The entries in `text` that have ended by `now`: (name, comment).
pub fn ended(text: &str, now: SystemTime) -> Vec<(String, String)> {
    entries(text)
        .into_iter()
        .filter(|(_, comment)| until(comment).is_some_and(|t| t <= now))
        .collect()
}

/// `text` with `name` added, under a comment line. Control characters in the comment
/// are replaced by spaces, so a reason cannot add lines of its own.
pub(crate) fn with_entry(text: &str, name: &str, comment: &str) -> String {
    let comment: String = comment
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("# {comment}\n{name}\n"));
    out
}

/// `text` without `name` (and the comment just before it). `None` if it is not there.
pub(crate) fn without_entry(text: &str, name: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.trim() == name)?;
    let start = if at > 0 && lines[at - 1].trim_start().starts_with('#') {
        at - 1
    } else {
        at
    };
    let kept: Vec<&str> = lines[..start]
        .iter()
        .chain(&lines[at + 1..])
        .copied()
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Some(out)
}

/// The file's text ("" if it does not exist yet).
pub fn read(path: &Path) -> Result<String, AllowFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(AllowFileError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replace the file with `text`, atomically.
pub fn write(path: &Path, text: &str) -> Result<(), AllowFileError> {
    let io = |source| AllowFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).map_err(io)?;
    std::fs::rename(&temp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_added_listed_and_removed_with_their_comment() {
        let text = with_entry("", "a.test", "2026-11-22 by admin: lessons");
        let text = with_entry(&text, "b.test", "evil\nc.test");
        assert_eq!(
            entries(&text),
            vec![
                (
                    "a.test".to_string(),
                    "2026-11-22 by admin: lessons".to_string()
                ),
                ("b.test".to_string(), "evil c.test".to_string()),
            ]
        );
        let removed = without_entry(&text, "a.test").unwrap();
        assert_eq!(removed, "# evil c.test\nb.test\n");
        assert!(without_entry(&removed, "a.test").is_none());
        assert_eq!(without_entry("b.test\n", "b.test").unwrap(), "");
    }

    #[test]
    fn an_entry_ends_when_its_comment_says_until() {
        let t = |s: &str| humantime::parse_rfc3339_weak(s).unwrap();
        let text = with_entry(
            "",
            "trip.test",
            "2026-12-06T10:00:00Z by admin until 2026-12-21T00:00:00Z: Year 9 trip",
        );
        let text = with_entry(
            &text,
            "always.test",
            "2026-12-06T10:00:00Z by admin: lessons",
        );
        // A reason that says "until" is a reason, not an end.
        let text = with_entry(
            &text,
            "reason.test",
            "2026-12-06T10:00:00Z by admin: until 2026-12-07T00:00:00Z, says the head",
        );
        assert_eq!(until(&entries(&text)[0].1), Some(t("2026-12-21T00:00:00Z")));
        assert_eq!(until(&entries(&text)[1].1), None);
        assert_eq!(until(&entries(&text)[2].1), None);
        assert!(ended(&text, t("2026-12-20T23:59:59Z")).is_empty());
        let gone = ended(&text, t("2026-12-21T00:00:00Z"));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, "trip.test");
        assert!(ended(&text, t("2099-01-01T00:00:00Z")).len() == 1);
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/allow.txt");
        assert_eq!(read(&path).unwrap(), "");
        write(&path, "a.test\n").unwrap();
        assert_eq!(read(&path).unwrap(), "a.test\n");
        assert!(!path.with_extension("tmp").exists());
    }
}
