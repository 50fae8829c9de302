//! `warden device add|list|remove`: the enrolled devices (`[[devices]]`), edited in the
//! config file itself ([`crate::config_edit`]). Each new device gets a random ID of
//! [`ID_LEN`] characters from a 32-letter alphabet (100 bits: not guessable, and a DNS
//! label, so it can sit in a DoT TLS name).

use std::path::Path;

use toml_edit::Table;

use crate::config::{Config, DeviceConfig};
use crate::config_edit::{load, save, tables_mut, EditError};

/// Characters in a new device ID.
pub const ID_LEN: usize = 20;
/// Lowercase letters and digits that cannot be misread for one another (base32's).
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A new random device ID.
pub fn new_id() -> Result<String, EditError> {
    let mut bytes = [0u8; ID_LEN];
    getrandom::fill(&mut bytes)
        .map_err(|e| EditError::Invalid(format!("no randomness for a device ID: {e}")))?;
    // 256 is a multiple of 32: every letter is equally likely.
    Ok(bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b % 32)]))
        .collect())
}

/// Enrol a device called `name` in `group` (belonging to `user`, if given): its new
/// ID. The config check (run before the file is written) refuses an unknown group.
pub fn add(path: &Path, name: &str, group: &str, user: Option<&str>) -> Result<String, EditError> {
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        return Err(EditError::Invalid(
            "a device name must be text without control characters".into(),
        ));
    }
    let (_, mut doc) = load(path)?;
    let id = new_id()?;
    let devices = tables_mut(&mut doc, path, "devices")?;
    if devices
        .iter()
        .any(|t| t.get("name").and_then(|v| v.as_str()) == Some(name))
    {
        return Err(EditError::Invalid(format!(
            "a device called {name:?} is enrolled already (remove it first, or choose another name)"
        )));
    }
    let mut table = Table::new();
    table["id"] = toml_edit::value(&id);
    table["name"] = toml_edit::value(name);
    table["group"] = toml_edit::value(group);
    if let Some(user) = user {
        table["user"] = toml_edit::value(user);
    }
    devices.push(table);
    save(path, &doc.to_string())?;
    Ok(id)
}

/// Remove the device whose ID or name is `which`: its name.
pub fn remove(path: &Path, which: &str) -> Result<String, EditError> {
    let (_, mut doc) = load(path)?;
    let devices = tables_mut(&mut doc, path, "devices")?;
    let field = |t: &Table, key: &str| t.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let matching: Vec<usize> = devices
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            field(t, "id").as_deref() == Some(which) || field(t, "name").as_deref() == Some(which)
        })
        .map(|(i, _)| i)
        .collect();
    let index = match matching.as_slice() {
        [one] => *one,
        [] => {
            return Err(EditError::Invalid(format!(
                "no device has the ID or name {which:?} in {}",
                path.display()
            )))
        }
        _ => {
            return Err(EditError::Invalid(format!(
                "several devices are called {which:?}: remove one by its ID (`warden device list`)"
            )))
        }
    };
    let name = devices
        .get(index)
        .and_then(|t| field(t, "name"))
        .unwrap_or_default();
    devices.remove(index);
    if devices.is_empty() {
        doc.remove("devices");
    }
    save(path, &doc.to_string())?;
    Ok(name)
}

/// The enrolled device whose ID or name is `which` in `config`.
pub fn find<'c>(config: &'c Config, which: &str) -> Result<&'c DeviceConfig, EditError> {
    let by_id = config.devices.iter().find(|d| d.id.get_ref() == which);
    if let Some(device) = by_id {
        return Ok(device);
    }
    let named: Vec<&DeviceConfig> = config.devices.iter().filter(|d| d.name == which).collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => Err(EditError::Invalid(format!(
            "no device has the ID or name {which:?} (see `warden device list`)"
        ))),
        _ => Err(EditError::Invalid(format!(
            "several devices are called {which:?}: name one by its ID"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::valid_device_id;

    const CONFIG: &str =
        "# Devices are added below.\n[groups.pupils]\n[groups.staff]\n[server]\ndefault_group = \"pupils\"\n";

    #[test]
    fn new_ids_are_valid_and_differ() {
        let ids: Vec<String> = (0..50).map(|_| new_id().unwrap()).collect();
        assert!(ids
            .iter()
            .all(|id| valid_device_id(id) && id.len() == ID_LEN));
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn devices_are_added_found_and_removed_keeping_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.toml");
        std::fs::write(&path, CONFIG).unwrap();
        let ipad = add(&path, "iPad 7", "pupils", Some("pupil7")).unwrap();
        let laptop = add(&path, "Staff laptop 3", "staff", None).unwrap();
        assert_ne!(ipad, laptop);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Devices are added below."), "{text}");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.devices.len(), 2);
        let found = find(&config, "iPad 7").unwrap();
        assert_eq!(
            (
                found.id.get_ref(),
                found.group.get_ref().as_str(),
                found.user.as_deref()
            ),
            (&ipad, "pupils", Some("pupil7"))
        );
        assert_eq!(find(&config, &laptop).unwrap().name, "Staff laptop 3");
        // The same name twice, an unknown group: refused, nothing written.
        let before = std::fs::read_to_string(&path).unwrap();
        assert!(add(&path, "iPad 7", "pupils", None).is_err());
        let unknown = add(&path, "Phone", "nobody", None).unwrap_err().to_string();
        assert!(unknown.contains("nobody"), "{unknown}");
        assert!(add(&path, "bad\u{7}name", "pupils", None).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        // Removed by name, then by ID.
        assert_eq!(remove(&path, "iPad 7").unwrap(), "iPad 7");
        assert_eq!(remove(&path, &laptop).unwrap(), "Staff laptop 3");
        assert!(remove(&path, "iPad 7").is_err());
        let config = Config::load(&path).unwrap();
        assert!(config.devices.is_empty());
    }
}
