//! Edits to the config file by the command line (`warden user`, `warden device`):
//! made with `toml_edit` on the file itself, so the admin's comments and layout
//! survive; the new text is validated as a whole config before it replaces the old
//! file (atomically, keeping its permissions), so a bad edit never leaves a config
//! Warden would refuse at its next start.

use std::path::{Path, PathBuf};

use toml_edit::{ArrayOfTables, DocumentMut, Item};

use crate::config::Config;

/// Why an edit could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EditError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("the edited config would not load, so it was not written: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Hash(#[from] crate::dashboard::auth::AuthError),
}

/// The config file's text and its editable document.
pub(crate) fn load(path: &Path) -> Result<(String, DocumentMut), EditError> {
    let text = std::fs::read_to_string(path).map_err(|source| EditError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let doc = text.parse::<DocumentMut>().map_err(|e| EditError::Toml {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    Ok((text, doc))
}

/// The `[[key]]` tables of `doc`, made if there are none.
pub(crate) fn tables_mut<'a>(
    doc: &'a mut DocumentMut,
    path: &Path,
    key: &str,
) -> Result<&'a mut ArrayOfTables, EditError> {
    let item = doc
        .entry(key)
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    item.as_array_of_tables_mut()
        .ok_or_else(|| EditError::Toml {
            path: path.to_path_buf(),
            message: format!("`{key}` must be written as [[{key}]] tables"),
        })
}

/// Validate `text` as a config, then replace the file with it.
pub(crate) fn save(path: &Path, text: &str) -> Result<(), EditError> {
    Config::parse(text, path)?;
    let temp = path.with_extension("toml.tmp");
    let write = |source| EditError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&temp, text).map_err(write)?;
    // Keep the config's permissions (it holds password hashes and device IDs).
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&temp, meta.permissions()).map_err(write)?;
    }
    std::fs::rename(&temp, path).map_err(write)
}
