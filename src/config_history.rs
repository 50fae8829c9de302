//! Every change to the config, kept for the annual review: at start-up and after each
//! reload that serves, the config file's text (its secrets redacted) is compared with the
//! last text recorded in the audit database, and a change is stored with when, why (the
//! start, or what triggered the reload) and its unified diff. Governors can then see what
//! was changed in the filtering and when, not only what it is now.
//!
//! Recording never stands in the way of DNS: a failure is logged and the next change is
//! compared with the last text that was recorded.

use std::path::Path;
use std::time::SystemTime;

use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::audit::{rfc3339, AuditError, Store};

/// Keys whose values are secrets or sign-in material: never copied into the history.
const SECRET_KEYS: &[&str] = &["password_hash", "totp_secret", "recovery_codes"];

/// What the history shows in place of a secret.
const REDACTED: &str = "(redacted)";

/// Lines of context around each change in a diff.
const CONTEXT: usize = 2;

/// `text` (a config file) with the value of every [`SECRET_KEYS`] key replaced, wherever
/// it is (`[[users]]` included). Text that is not TOML is kept out whole: the config
/// check refuses it, so it never serves.
pub fn redact(text: &str) -> Option<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().ok()?;
    redact_table(doc.as_table_mut());
    Some(doc.to_string())
}

fn redact_table(table: &mut toml_edit::Table) {
    for (key, item) in table.iter_mut() {
        if SECRET_KEYS.contains(&key.get()) {
            *item = toml_edit::value(REDACTED);
            continue;
        }
        match item {
            toml_edit::Item::Table(inner) => redact_table(inner),
            toml_edit::Item::ArrayOfTables(array) => array.iter_mut().for_each(redact_table),
            toml_edit::Item::Value(value) => redact_value(value),
            toml_edit::Item::None => {}
        }
    }
}

/// The secrets inside an inline table or array (`users = [{ name = …, password_hash =
/// … }]`), at any depth.
fn redact_value(value: &mut toml_edit::Value) {
    match value {
        toml_edit::Value::InlineTable(inline) => {
            for (key, inner) in inline.iter_mut() {
                if SECRET_KEYS.contains(&key.get()) {
                    *inner = toml_edit::Value::from(REDACTED);
                } else {
                    redact_value(inner);
                }
            }
        }
        toml_edit::Value::Array(array) => array.iter_mut().for_each(redact_value),
        _ => {}
    }
}

/// The unified diff from `old` to `new`, line by line.
pub fn diff(old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(CONTEXT)
        .header("before", "after")
        .to_string()
}

/// Record the config at `path` if it differs from the last recorded (`why`: "start" or
/// the reload's cause). Returns whether a change was recorded.
pub fn record(store: &Store, path: &Path, why: &str, at: SystemTime) -> Result<bool, AuditError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AuditError::Invalid(format!("cannot read {}: {e}", path.display())))?;
    let Some(redacted) = redact(&text) else {
        return Ok(false);
    };
    let hash = hex::encode(Sha256::digest(redacted.as_bytes()));
    let conn = store.conn();
    let last: Option<(String, String)> = conn
        .query_row(
            "SELECT sha256, text FROM config_changes ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| store.wrap(e))?;
    if last.as_ref().is_some_and(|(h, _)| *h == hash) {
        return Ok(false);
    }
    let before = last.map(|(_, text)| text).unwrap_or_default();
    conn.execute(
        "INSERT INTO config_changes (at, why, sha256, text, diff) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![rfc3339(at), why, hash, redacted, diff(&before, &redacted)],
    )
    .map_err(|e| store.wrap(e))?;
    Ok(true)
}

/// One recorded change, newest first from [`recent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    pub at: String,
    pub why: String,
    pub diff: String,
}

/// The changes recorded since `since` (RFC 3339), newest first, at most `limit`.
pub fn recent(store: &Store, since: &str, limit: u32) -> Result<Vec<ConfigChange>, AuditError> {
    let mut stmt = store
        .conn()
        .prepare(
            "SELECT at, why, diff FROM config_changes WHERE at >= ?1 ORDER BY id DESC LIMIT ?2",
        )
        .map_err(|e| store.wrap(e))?;
    let rows = stmt
        .query_map(params![since, limit], |r| {
            Ok(ConfigChange {
                at: r.get(0)?,
                why: r.get(1)?,
                diff: r.get(2)?,
            })
        })
        .map_err(|e| store.wrap(e))?;
    rows.collect::<Result<_, _>>().map_err(|e| store.wrap(e))
}

/// One recorded change with the config's text before and after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeWithTexts {
    pub at: String,
    pub why: String,
    pub diff: String,
    pub before: String,
    pub text: String,
}

/// The changes recorded since `since` (RFC 3339), oldest first, each with the text
/// before it (the previous change's, or empty for the first ever recorded).
pub fn with_texts(store: &Store, since: &str) -> Result<Vec<ChangeWithTexts>, AuditError> {
    let conn = store.conn();
    let mut before: String = conn
        .query_row(
            "SELECT text FROM config_changes WHERE at < ?1 ORDER BY id DESC LIMIT 1",
            [since],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| store.wrap(e))?
        .unwrap_or_default();
    let mut stmt = conn
        .prepare("SELECT at, why, diff, text FROM config_changes WHERE at >= ?1 ORDER BY id")
        .map_err(|e| store.wrap(e))?;
    let rows = stmt
        .query_map([since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(|e| store.wrap(e))?;
    let mut out = Vec::new();
    for row in rows {
        let (at, why, diff, text) = row.map_err(|e| store.wrap(e))?;
        let previous = std::mem::replace(&mut before, text.clone());
        out.push(ChangeWithTexts {
            at,
            why,
            diff,
            before: previous,
            text,
        });
    }
    Ok(out)
}

/// Tables whose entries name people and devices: their values are left out of the
/// governors' report (the keys stay, so the change is still seen).
const PERSONAL_TABLES: &[&str] = &["clients", "devices", "users_to_groups"];
/// Within those, the keys kept as written (what the entry does, not whom it is about).
const KEPT_KEYS: &[&str] = &["group", "directory_group"];

/// `text` (a redacted config) with every value in [`PERSONAL_TABLES`] entries replaced,
/// except [`KEPT_KEYS`]. Text that is not TOML becomes empty.
pub fn anonymise(text: &str) -> String {
    let Ok(mut doc) = text.parse::<toml_edit::DocumentMut>() else {
        return String::new();
    };
    for table in PERSONAL_TABLES {
        let Some(item) = doc.get_mut(table) else {
            continue;
        };
        match item {
            toml_edit::Item::ArrayOfTables(array) => array.iter_mut().for_each(anonymise_table),
            toml_edit::Item::Value(toml_edit::Value::Array(array)) => {
                for value in array.iter_mut() {
                    if let toml_edit::Value::InlineTable(inline) = value {
                        for (key, inner) in inline.iter_mut() {
                            if !KEPT_KEYS.contains(&key.get()) {
                                *inner = toml_edit::Value::from(PERSONAL);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    doc.to_string()
}

/// What the governors' report shows in place of a person's or device's value.
const PERSONAL: &str = "(personal)";

fn anonymise_table(table: &mut toml_edit::Table) {
    for (key, item) in table.iter_mut() {
        if !KEPT_KEYS.contains(&key.get()) {
            *item = toml_edit::value(PERSONAL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "# The admin's comment.\n[server]\nlisten = [\"127.0.0.1:5353\"]\n\n\
        [[users]]\nname = \"lead\"\nrole = \"lead\"\npassword_hash = \"$argon2id$v=19$secret\"\n\
        totp_secret = \"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\"\nrecovery_codes = [\n  \"5e88\",\n]\n";

    #[test]
    fn secrets_are_redacted_and_the_rest_kept_as_written() {
        let redacted = redact(CONFIG).unwrap();
        for secret in ["$argon2id", "JBSWY3DP", "5e88"] {
            assert!(!redacted.contains(secret), "{secret} in {redacted}");
        }
        assert!(redacted.contains("# The admin's comment."));
        assert!(redacted.contains("name = \"lead\""));
        assert_eq!(redacted.matches(REDACTED).count(), 3, "{redacted}");
        let inline = "users = [{ name = \"a\", password_hash = \"$argon2id$x\" }]\n";
        assert!(!redact(inline).unwrap().contains("argon2id"));
        assert_eq!(redact("not = toml = at all"), None);
    }

    #[test]
    fn a_change_is_recorded_once_with_its_diff() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("audit.sqlite")).unwrap();
        let path = dir.path().join("warden.toml");
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        std::fs::write(&path, CONFIG).unwrap();
        assert!(record(&store, &path, "start", t0).unwrap());
        assert!(!record(&store, &path, "start", t0).unwrap(), "unchanged");
        // A new password hash alone is not a change to the filtering worth a row.
        std::fs::write(
            &path,
            CONFIG.replace("$argon2id$v=19$secret", "$argon2id$new"),
        )
        .unwrap();
        assert!(!record(&store, &path, "reload", t0).unwrap());
        let edited = CONFIG.replace("5353", "53");
        std::fs::write(&path, &edited).unwrap();
        assert!(record(&store, &path, "reload: file changed", t0).unwrap());
        let changes = recent(&store, "2000-01-01T00:00:00Z", 10).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].why, "reload: file changed");
        assert!(
            changes[0].diff.contains("-listen = [\"127.0.0.1:5353\"]"),
            "{}",
            changes[0].diff
        );
        assert!(
            changes[0].diff.contains("+listen = [\"127.0.0.1:53\"]"),
            "{}",
            changes[0].diff
        );
        assert!(!changes[0].diff.contains("argon2id"));
        assert!(changes[1].diff.contains("+[server]"), "{}", changes[1].diff);
        // A file that cannot be read is an error, not a silent skip.
        std::fs::remove_file(&path).unwrap();
        assert!(record(&store, &path, "reload", t0).is_err());
    }
}

#[cfg(test)]
mod anonymise_tests {
    use super::*;

    #[test]
    fn who_is_who_is_left_out_and_what_it_does_kept() {
        let text = "users_to_groups = [{ user = \"pupil7\", group = \"pupils\" }]\n\
                    [server]\nlisten = [\"10.0.0.1:53\"]\n\
                    [[clients]]\ncidr = \"10.0.1.23\"\nname = \"ipad-3\"\ngroup = \"pupils\"\n\
                    [[devices]]\nid = \"abcdefgh1\"\nname = \"Sam's laptop\"\nuser = \"sam\"\ngroup = \"staff\"\n";
        let shown = anonymise(text);
        for gone in [
            "10.0.1.23",
            "ipad-3",
            "abcdefgh1",
            "Sam's laptop",
            "\"sam\"",
            "pupil7",
        ] {
            assert!(!shown.contains(gone), "{gone} in\n{shown}");
        }
        for kept in [
            "10.0.0.1:53",
            "group = \"pupils\"",
            "group = \"staff\"",
            "[[clients]]",
        ] {
            assert!(shown.contains(kept), "{kept} not in\n{shown}");
        }
        assert_eq!(anonymise("not = [toml"), "");
    }
}
