//! Allow entries that end (for a trip or a lesson): taken out of the dashboard's allow
//! file once their `until` has come, at start-up and then every [`SWEEP`], through the
//! same edit as the admin's (reloaded, put back if the reload fails) and recorded as an
//! `expire` change by `warden` with the entry's own reason, so the admin page and the
//! review report show when each one ended.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::allow;
use super::allow_edit::{change_allow_file, AllowEdit};
use super::state::{Dashboard, PageError};

/// How often ended entries are looked for: an entry ends at most this late.
pub(crate) const SWEEP: Duration = Duration::from_secs(30);

/// Who the change log names for an entry that ended on its own.
const BY: &str = "warden";

/// Take ended entries out until `stop`. Only a site's own dashboard has an allow file.
pub(crate) async fn run(d: Arc<Dashboard>, stop: CancellationToken) {
    if d.backend.is_fleet() {
        return;
    }
    loop {
        match sweep(&d, SystemTime::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(ended = n, "allow entries ended at their date"),
            // Tried again at the next sweep; until then the entry stays (and says when
            // it should have ended).
            Err(error) => tracing::warn!(?error, "could not end allow entries at their date"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SWEEP) => {}
        }
    }
}

/// Take out the entries ended by `now`, from the file for every group and each group's
/// own; how many were.
pub(super) async fn sweep(d: &Dashboard, now: SystemTime) -> Result<usize, PageError> {
    let mut ended = sweep_file(d, None, now).await?;
    for group in d.engine().config.group_names() {
        ended += sweep_file(d, Some(&group), now).await?;
    }
    Ok(ended)
}

/// Take out the entries of `group`'s file ended by `now`.
async fn sweep_file(
    d: &Dashboard,
    group: Option<&str>,
    now: SystemTime,
) -> Result<usize, PageError> {
    change_allow_file(d, BY, group, |text| {
        let mut after = text.to_string();
        let mut edits = Vec::new();
        for (name, comment) in allow::ended(text, now) {
            if let Some(without) = allow::without_entry(&after, &name) {
                after = without;
                let reason = comment
                    .split_once(": ")
                    .map(|(_, reason)| reason)
                    .unwrap_or(&comment);
                edits.push(AllowEdit::new("expire", &name, reason));
            }
        }
        Ok((after, edits))
    })
    .await
}
