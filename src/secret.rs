//! Shared secrets kept in files (the admin token, sign-in feed tokens, the RADIUS
//! secret): read as the first line of a small regular file, and compared in constant
//! time, so how long a refusal takes says nothing about how much of a guess was right.
//! Files holding secrets Warden makes (a TLS key, the sign-ins) are written whole and
//! readable by their owner only ([`write_private`]).

use std::path::Path;

use subtle::ConstantTimeEq;

/// The most of a secret file read.
const MAX_SECRET_BYTES: u64 = 4096;

/// The first line of the file at `path`, without its line ending (other whitespace is
/// kept: a RADIUS secret may hold spaces). A FIFO or device in its place is refused.
pub fn first_line(path: &Path) -> std::io::Result<String> {
    let text = crate::lists::read_small(path, MAX_SECRET_BYTES)?;
    let line = text.split('\n').next().unwrap_or("");
    Ok(line.strip_suffix('\r').unwrap_or(line).to_string())
}

/// Whether `presented` is `expected`, compared in constant time for equal lengths. An
/// empty secret matches nothing.
pub fn matches(presented: &[u8], expected: &[u8]) -> bool {
    !expected.is_empty() && bool::from(presented.ct_eq(expected))
}

/// Write `bytes` to `path` readable by its owner only (a key, the sign-ins): whole or
/// not at all (a temporary file beside it, synced, then renamed over it), making its
/// folder if need be.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
    temp_name.push(".tmp");
    let temp = path.with_file_name(temp_name);
    // A leftover temporary file would keep its own permissions: start afresh.
    let _ = std::fs::remove_file(&temp);
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_whole_and_never_when_empty() {
        assert!(matches(b"abc", b"abc"));
        assert!(!matches(b"abd", b"abc"));
        assert!(!matches(b"ab", b"abc"));
        assert!(!matches(b"abcd", b"abc"));
        assert!(!matches(b"", b""));
    }

    #[test]
    fn the_first_line_keeps_inner_spaces_and_drops_its_ending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, " two words \r\nsecond\n").unwrap();
        assert_eq!(first_line(&path).unwrap(), " two words ");
        std::fs::write(&path, "").unwrap();
        assert_eq!(first_line(&path).unwrap(), "");
        assert!(first_line(&dir.path().join("missing")).is_err());
    }
}
