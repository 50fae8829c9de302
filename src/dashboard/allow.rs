//! The allow entries added in the dashboard: a plain domain list (`[dashboard]
//! allow_file`) that the engine loads for every group. Each entry is preceded by a comment
//! saying when, by whom and why, so the file explains itself to an admin reading it.
//!
//! Edits replace the file atomically (write a temporary file, then rename), so a reload
//! or a crash never sees half a file.

use std::path::{Path, PathBuf};

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
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/allow.txt");
        assert_eq!(read(&path).unwrap(), "");
        write(&path, "a.test\n").unwrap();
        assert_eq!(read(&path).unwrap(), "a.test\n");
        assert!(!path.with_extension("tmp").exists());
    }
}
