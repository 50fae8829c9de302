//! One edit of the dashboard's allow file, whoever makes it (an admin's form, an entry
//! reaching its end): written, reloaded, put back if the reload fails, and each change
//! recorded in the allow-change log.

use std::time::SystemTime;

use super::allow;
use super::state::{Dashboard, PageError};
use crate::audit::records::{self, AllowChange};
use crate::audit::rfc3339;
use crate::config::Config;

/// Where the dashboard's allow file is.
pub(super) fn allow_file(config: &Config) -> std::path::PathBuf {
    config.resolve(&config.dashboard.allow_file)
}

/// One change an edit of the allow file makes: (action, name, reason).
pub(crate) struct AllowEdit {
    action: &'static str,
    name: String,
    reason: String,
}

impl AllowEdit {
    pub(crate) fn new(action: &'static str, name: &str, reason: &str) -> AllowEdit {
        AllowEdit {
            action,
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Where the allow entries of `group` are kept: the file for every group (`None`), or
/// that group's own.
pub(crate) fn allow_file_of(config: &Config, group: Option<&str>) -> std::path::PathBuf {
    match group {
        Some(group) => config.group_allow_file(group),
        None => allow_file(config),
    }
}

/// Edit the allow file of `group` (`None`: every group's) with `edit` (the new text and
/// the changes it makes), reload, and record each change as `by`'s (a group's change
/// says which group in its reason). If the reload fails the file is put back, so the file
/// and the rules in force never disagree. Returns how many changes were made.
pub(crate) async fn change_allow_file(
    d: &Dashboard,
    by: &str,
    group: Option<&str>,
    edit: impl FnOnce(&str) -> Result<(String, Vec<AllowEdit>), PageError>,
) -> Result<usize, PageError> {
    let _one_at_a_time = d.allow_edit.lock().await;
    let path = allow_file_of(&d.engine().config, group);
    let before = allow::read(&path).map_err(|e| PageError::Internal(e.to_string()))?;
    let (after, edits) = edit(&before)?;
    if edits.is_empty() {
        return Ok(0);
    }
    allow::write(&path, &after).map_err(|e| PageError::Internal(e.to_string()))?;
    let what: Vec<String> = edits
        .iter()
        .map(|e| format!("{} {}", e.action, e.name))
        .collect();
    let why = format!("dashboard: {by} {}", what.join(", "));
    if let Err(error) = d.reloader.reload(&why).await {
        let restored = allow::write(&path, &before);
        tracing::error!(%error, restored = restored.is_ok(), "allow-list change rolled back");
        return Err(PageError::Internal(format!(
            "the new rules did not load, so nothing was changed: {error}"
        )));
    }
    let at = rfc3339(SystemTime::now());
    let changes: Vec<AllowChange> = edits
        .into_iter()
        .map(|e| {
            tracing::info!(user = %by, action = e.action, name = %e.name, reason = %e.reason, "allow list changed in the dashboard");
            AllowChange {
                at: at.clone(),
                by: by.to_string(),
                action: e.action.to_string(),
                name: e.name,
                reason: match group {
                    Some(group) => format!("for group {group} only: {}", e.reason),
                    None => e.reason,
                },
            }
        })
        .collect();
    let made = changes.len();
    d.db(move |s| {
        for change in &changes {
            records::record_allow_change(s, change)?;
        }
        Ok(())
    })
    .await?;
    Ok(made)
}
