//! Shipping this site's sealed audit rows to the central store, off the query path.
//!
//! Exactly once, with the site's SQLite log as the durable buffer: a batch is read after
//! the cursor kept in the log, stored centrally in one transaction (idempotent: keyed by
//! site and chain position, a row already there is checked, not doubled), and only then
//! is the cursor moved. A crash between the two ships the batch again, harmlessly; a
//! database or WAN outage leaves the rows in the log until it ends. DNS never waits on
//! any of it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::central::{self, Partitions};
use super::connect::Settings;
use super::FleetError;
use crate::audit::outbox::RECORD_TABLES;
use crate::audit::Store;
use crate::metrics::Metrics;

/// Waits between attempts after a failure: doubled each time up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Ship until `stop`; the last batch in flight completes or is shipped again next start.
pub async fn run(
    settings: Settings,
    audit: PathBuf,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let store = match open(&audit).await {
        Ok(store) => store,
        Err(e) => {
            tracing::error!("fleet: shipping is off: {e}");
            return;
        }
    };
    let mut backoff = settings.ship_interval;
    loop {
        let outcome = tokio::select! {
            outcome = connected(&settings, &store, &metrics, &stop) => outcome,
            () = stop.cancelled() => return,
        };
        match outcome {
            Ok(()) => return,
            Err(FleetError::Conflict { site, message }) => {
                metrics.fleet_error();
                // A person must look: retrying would only repeat the refusal, so slowly.
                tracing::error!("fleet: shipping for site {site:?} stopped: {message}");
                backoff = MAX_BACKOFF;
            }
            Err(e) => {
                metrics.fleet_error();
                tracing::warn!("fleet: {e}; retrying in {}s", backoff.as_secs_f64());
            }
        }
        update_backlog(&store, &metrics).await;
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The shipper's own connection to the log (reads rows, writes only its cursor).
async fn open(audit: &std::path::Path) -> Result<Arc<std::sync::Mutex<Store>>, FleetError> {
    let path = audit.to_path_buf();
    let store = tokio::task::spawn_blocking(move || Store::open(&path))
        .await
        .map_err(|e| FleetError::Config(format!("opening the audit log: {e}")))??;
    Ok(Arc::new(std::sync::Mutex::new(store)))
}

/// One connection's life: register, then ship whatever is sealed, every interval,
/// until `stop` (`Ok`) or a failure (`Err`: the caller reconnects).
async fn connected(
    settings: &Settings,
    store: &Arc<std::sync::Mutex<Store>>,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Result<(), FleetError> {
    let mut client = settings.connect().await?;
    central::migrate(&mut client, settings).await?;
    let instance = blocking(store, |s| s.fleet_instance()).await?;
    let central_head = central::register(&client, settings, instance).await?;
    let local = blocking(store, |s| s.shipped_seq()).await?;
    if central_head < local {
        return Err(FleetError::Conflict {
            site: settings.site.clone(),
            message: format!(
                "this log says rows up to seq {local} were shipped, but the central store \
                 holds only up to {central_head}: rows were deleted centrally"
            ),
        });
    }
    tracing::info!(
        "fleet: shipping site {:?} to {} from seq {}",
        settings.site,
        settings.target,
        local + 1
    );
    let mut partitions = Partitions::default();
    loop {
        ship_backlog(&mut client, settings, store, metrics, &mut partitions, stop).await?;
        tokio::select! {
            () = tokio::time::sleep(settings.ship_interval) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}

/// Ship batches until nothing sealed is left unshipped (or `stop`). While PostgreSQL
/// stores one batch, the next is read from the log (the rows after it are sealed
/// whatever becomes of the batch in flight), so a site catching up a backlog keeps both
/// its cores busy. A row read here and purged by retention before it is stored arrives
/// unpurged, as one shipped a minute before its purge does: the central retention
/// ([`super::retention`]) purges it by the same rules.
async fn ship_backlog(
    client: &mut tokio_postgres::Client,
    settings: &Settings,
    store: &Arc<std::sync::Mutex<Store>>,
    metrics: &Metrics,
    partitions: &mut Partitions,
    stop: &CancellationToken,
) -> Result<(), FleetError> {
    let batch = settings.batch_rows;
    // The cursor as stored; only this task moves it.
    let shipped = blocking(store, |s| s.shipped_seq()).await?;
    let mut rows = blocking(store, move |s| s.sealed_after(shipped, batch)).await?;
    loop {
        let Some(last) = rows.last().map(|r| r.seq) else {
            ship_records(client, settings, store).await?;
            update_backlog(store, metrics).await;
            return Ok(());
        };
        let more = rows.len() == batch && !stop.is_cancelled();
        let ahead = more.then(|| {
            let store = store.clone();
            tokio::spawn(
                async move { blocking(&store, move |s| s.sealed_after(last, batch)).await },
            )
        });
        central::store_batch(client, settings, partitions, &rows).await?;
        blocking(store, move |s| s.set_shipped_seq(last)).await?;
        metrics.fleet_shipped(rows.len());
        update_backlog(store, metrics).await;
        let Some(ahead) = ahead.filter(|_| !stop.is_cancelled()) else {
            return ship_records(client, settings, store).await;
        };
        rows = ahead
            .await
            .map_err(|e| FleetError::Config(format!("audit log task failed: {e}")))??;
    }
}

/// Ship what the site records beside its rows: the reviews of rows already shipped, then
/// sign-ins, allow changes and alert deliveries, each after its own cursor.
async fn ship_records(
    client: &mut tokio_postgres::Client,
    settings: &Settings,
    store: &Arc<std::sync::Mutex<Store>>,
) -> Result<(), FleetError> {
    ship_reviews(client, settings, store).await?;
    take_central_reviews(client, settings, store).await?;
    let batch = settings.batch_rows;
    for table in RECORD_TABLES {
        loop {
            let after = blocking(store, move |s| s.shipped_record(&table)).await?;
            let records = blocking(store, move |s| s.records_after(&table, after, batch)).await?;
            let Some(last) = records.last().map(|r| r.id) else {
                break;
            };
            central::store_records(client, settings, &table, &records).await?;
            blocking(store, move |s| s.set_shipped_record(&table, last)).await?;
            if records.len() < batch {
                break;
            }
        }
    }
    Ok(())
}

/// Ship the reviews of rows already shipped, after the reviews' own cursor.
async fn ship_reviews(
    client: &mut tokio_postgres::Client,
    settings: &Settings,
    store: &Arc<std::sync::Mutex<Store>>,
) -> Result<(), FleetError> {
    let batch = settings.batch_rows;
    loop {
        let (after, shipped) =
            blocking(store, |s| Ok((s.shipped_review()?, s.shipped_seq()?))).await?;
        let reviews = blocking(store, move |s| s.reviews_after(after, shipped, batch)).await?;
        let Some(last) = reviews.last().map(|r| r.id) else {
            return Ok(());
        };
        central::store_reviews(client, settings, &reviews).await?;
        blocking(store, move |s| s.set_shipped_review(last)).await?;
        if reviews.len() < batch {
            return Ok(());
        }
    }
}

/// Keep the reviews written on the trust's dashboard for this site's rows beside the
/// site's own (so the site's lead sees them), after their own cursor.
async fn take_central_reviews(
    client: &tokio_postgres::Client,
    settings: &Settings,
    store: &Arc<std::sync::Mutex<Store>>,
) -> Result<(), FleetError> {
    let batch = settings.batch_rows;
    loop {
        let after = blocking(store, |s| s.central_review_cursor()).await?;
        let reviews = central::central_reviews_after(client, settings, after, batch).await?;
        let taken = reviews.len();
        if taken == 0 {
            return Ok(());
        }
        let added = blocking(store, move |s| s.add_central_reviews(&reviews)).await?;
        tracing::debug!("fleet: {added} reviews from the trust's dashboard");
        if taken < batch {
            return Ok(());
        }
    }
}

/// `/metrics`: sealed rows not shipped, and how long the oldest of them has waited.
async fn update_backlog(store: &Arc<std::sync::Mutex<Store>>, metrics: &Metrics) {
    let Ok((rows, oldest)) = blocking(store, |s| s.unshipped()).await else {
        return;
    };
    let age = oldest
        .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    metrics.fleet_backlog(rows, age);
}

/// Run `f` on the log off the runtime's threads.
async fn blocking<T: Send + 'static>(
    store: &Arc<std::sync::Mutex<Store>>,
    f: impl FnOnce(&Store) -> Result<T, crate::audit::AuditError> + Send + 'static,
) -> Result<T, FleetError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&crate::sync::lock(&store)))
        .await
        .map_err(|e| FleetError::Config(format!("audit log task failed: {e}")))?
        .map_err(FleetError::from)
}
