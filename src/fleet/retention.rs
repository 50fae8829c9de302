//! Retention in the central store, by the same rules as a site's log (`[audit]
//! retention_days` and `retention_days_by_category` of the trust's config), run by
//! `warden fleet serve`: a row past its categories' longest retention keeps its chain
//! position, public columns and the digest of its personal columns, and loses the
//! personal columns themselves (client, device, name, CNAME, salt), so `warden fleet
//! verify` still proves the chain. Sign-ins, the dashboard's sign-ins and alert
//! deliveries past the default retention are deleted.
//!
//! Each category set (`category_sets`, kept at ingest) is one range of the partial index
//! `events_live_categories (categories, at) WHERE purged = 0`: purged rows leave it, so
//! with nothing due a purge is one index probe per set, and each batch of at most
//! [`BATCH`] rows is one short transaction.

use std::time::{Duration, SystemTime};

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::connect::Settings;
use super::FleetError;
use crate::audit::personal::Personal;
use crate::audit::{rfc3339, Retention};

/// Rows purged per transaction.
pub const BATCH: i64 = 1000;
/// How often `warden fleet serve` runs the purge.
pub const EVERY: Duration = Duration::from_secs(600);

/// What a purge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Rows whose personal columns were deleted.
    pub rows: u64,
    /// Sign-in and alert delivery records deleted.
    pub records: u64,
}

/// Purge what `policy` says is due at `now`.
pub async fn purge(
    client: &mut Client,
    settings: &Settings,
    policy: &Retention,
    now: SystemTime,
) -> Result<Purged, FleetError> {
    let failed = |e| settings.database_error(e);
    let sets: Vec<String> = client
        .query(
            "SELECT categories FROM category_sets ORDER BY categories",
            &[],
        )
        .await
        .map_err(failed)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut purged = Purged::default();
    for set in sets {
        let due = rfc3339(policy.expiry(&set, now));
        loop {
            let n = purge_batch(client, settings, &set, &due).await?;
            purged.rows += n;
            if n < BATCH as u64 {
                break;
            }
        }
    }
    // Records kept beside the rows, by the default retention (as a site's sign-ins).
    let due = rfc3339(policy.expiry("", now));
    for table in ["signins", "dashboard_signins", "alert_deliveries"] {
        purged.records += client
            .execute(&format!("DELETE FROM {table} WHERE at < $1"), &[&due])
            .await
            .map_err(failed)?;
    }
    Ok(purged)
}

/// Purge up to [`BATCH`] due rows of category set `set` (due: last seen before `due`);
/// returns how many.
async fn purge_batch(
    client: &mut Client,
    settings: &Settings,
    set: &str,
    due: &str,
) -> Result<u64, FleetError> {
    let failed = |e| settings.database_error(e);
    let tx = client.transaction().await.map_err(failed)?;
    let rows = tx
        .query(
            "SELECT site, seq, at, salt, client_ip, device, name, cname, mac, user_name, \
             sources FROM events \
             WHERE categories = $1 AND purged = 0 AND at < $2::text::timestamptz \
             AND last_seen < $2 ORDER BY at LIMIT $3 FOR UPDATE",
            &[&set, &due, &BATCH],
        )
        .await
        .map_err(failed)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let (mut sites, mut seqs, mut ats, mut digests) = (vec![], vec![], vec![], vec![]);
    for row in &rows {
        sites.push(row.get::<_, String>(0));
        seqs.push(row.get::<_, i64>(1));
        ats.push(row.get::<_, SystemTime>(2));
        digests.push(
            Personal {
                salt: row.get(3),
                client_ip: row.get(4),
                device: row.get(5),
                name: row.get(6),
                cname: row.get(7),
                mac: row.get(8),
                user: row.get(9),
                sources: row.get(10),
            }
            .digest(),
        );
    }
    let n = tx
        .execute(
            "UPDATE events e SET purged = 1, personal = u.digest, salt = NULL, client_ip = '', \
             device = NULL, name = '', cname = NULL, mac = NULL, user_name = NULL, sources = NULL \
             FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::text[]) \
               AS u(site, seq, at, digest) \
             WHERE e.site = u.site AND e.seq = u.seq AND e.at = u.at",
            &[&sites, &seqs, &ats, &digests],
        )
        .await
        .map_err(failed)?;
    tx.commit().await.map_err(failed)?;
    Ok(n)
}

/// Purge every [`EVERY`] until `stop`, by the retention `policy` gives at each run (the
/// config in force: a reload applies to the next run); a failure is logged and tried again next time.
pub async fn run(settings: Settings, policy: impl Fn() -> Retention, stop: CancellationToken) {
    loop {
        let policy = policy();
        match once(&settings, &policy).await {
            Ok(p) if p.rows + p.records > 0 => tracing::info!(
                rows = p.rows,
                records = p.records,
                "central retention: personal data past its retention deleted"
            ),
            Ok(_) => tracing::debug!("central retention: nothing due"),
            Err(e) => tracing::warn!("central retention: {e}; trying again in {EVERY:?}"),
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn once(settings: &Settings, policy: &Retention) -> Result<Purged, FleetError> {
    let mut client = settings.connect().await?;
    super::central::migrate(&mut client, settings).await?;
    purge(&mut client, settings, policy, SystemTime::now()).await
}
