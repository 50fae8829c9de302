//! The events export (`GET /export.csv`), streamed: a blocking thread reads the matching
//! rows a chunk at a time ([`review::each`]) on a connection of its own and hands the CSV
//! to the response through a channel of a few chunks. Memory stays a few chunks whatever
//! the rows exported, so a lead's download of a year of blocks cannot take the DNS server
//! down with it; a client that stops reading stops the export after [`STALL`].
//!
//! Without a start date the export covers the [`DEFAULT_DAYS`] days up to its end date or
//! today (the events page says so in its link, with the row count), and at most [`CONCURRENT`] exports run at
//! once: a crowd of downloads waits its turn rather than filling the blocking pool.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::pages::{Export, FilterForm};
use crate::audit::review::{self, Filter, CSV_HEADER};
use crate::audit::{AuditError, Store};
use crate::config::Config;
use crate::fleet::read::{Central, CentralFilter, Scope};
use crate::fleet::FleetError;
use crate::localtime;

/// Days an export covers when its filter has no start date.
pub(crate) const DEFAULT_DAYS: u64 = 30;
/// Exports running at once.
pub(crate) const CONCURRENT: usize = 2;
/// Bytes of CSV per chunk sent to the client.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks waiting for the client at most.
const CHANNEL_CHUNKS: usize = 4;
/// How long a client may stop reading before its export is abandoned.
pub(crate) const STALL: Duration = Duration::from_secs(30);

/// The form an export runs with: `form`, covering the [`DEFAULT_DAYS`] days up to its end
/// date (or today, a date in the dashboard's zone) when it names no start; and that start
/// date when it was added.
pub(crate) fn with_default_start(
    form: &FilterForm,
    config: &Config,
    now: SystemTime,
) -> (FilterForm, Option<String>) {
    if !form.since.is_empty() {
        return (form.clone(), None);
    }
    let tz = localtime::zone(config);
    // The 30 days up to the filter's end date (inclusive), or up to today.
    let last = chrono::NaiveDate::parse_from_str(&form.until, "%Y-%m-%d")
        .unwrap_or_else(|_| localtime::day_of(now.into(), tz));
    let first = last - chrono::Days::new(DEFAULT_DAYS - 1);
    let since = first.format("%Y-%m-%d").to_string();
    let form = FilterForm {
        since: since.clone(),
        before: String::new(),
        ..form.clone()
    };
    (form, Some(since))
}

/// The link the events page offers for `form`, with what it will write.
pub(crate) fn link(form: &FilterForm, config: &Config, rows: review::Total) -> Export {
    let (form, from) = with_default_start(form, config, SystemTime::now());
    Export {
        query: form.query(),
        from,
        rows,
    }
}

/// A chunk of CSV, or why the export stopped (which cuts the download short, so the
/// client sees an incomplete file rather than a complete-looking one).
type Chunk = Result<Vec<u8>, std::io::Error>;

/// The response body: the chunks as the export thread sends them.
pub(crate) struct Body(mpsc::Receiver<Chunk>);

impl futures_core::Stream for Body {
    type Item = Chunk;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        self.0.poll_recv(cx)
    }
}

/// Start exporting `filter`'s rows from the database at `path` on a blocking thread;
/// returns the body to send. `done` is called with the rows written when it ends.
pub(crate) fn start(
    path: PathBuf,
    filter: Filter,
    permit: tokio::sync::OwnedSemaphorePermit,
    done: impl FnOnce(Result<u64, AuditError>) + Send + 'static,
) -> Body {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let result = write(&path, &filter, |chunk| {
            send(&runtime, &tx, chunk, STALL)
                .map_err(|why| AuditError::Invalid(format!("export stopped: {why}")))
        });
        if let Err(error) = &result {
            // Best effort: the client may be gone already.
            let _ = tx.try_send(Err(std::io::Error::other(error.to_string())));
        }
        drop(permit);
        done(result);
    });
    Body(rx)
}

/// Hand one chunk to the response, waiting at most `stall` for the client to take the
/// previous ones.
fn send(
    runtime: &tokio::runtime::Handle,
    tx: &mpsc::Sender<Chunk>,
    chunk: Vec<u8>,
    stall: Duration,
) -> Result<(), &'static str> {
    match runtime.block_on(tokio::time::timeout(stall, tx.send(Ok(chunk)))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("the client went away"),
        Err(_) => Err("the client stopped reading"),
    }
}

/// Write the CSV of `filter`'s rows in chunks of about [`CHUNK_BYTES`] to `emit`; returns
/// the rows written.
pub(crate) fn write(
    path: &std::path::Path,
    filter: &Filter,
    mut emit: impl FnMut(Vec<u8>) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    let store = Store::open_existing(path)?;
    let mut buf = String::with_capacity(CHUNK_BYTES + 4096);
    buf.push_str(CSV_HEADER);
    buf.push_str("\r\n");
    let mut rows = 0u64;
    review::each(&store, filter, |row| {
        buf.push_str(&row.csv());
        buf.push_str("\r\n");
        rows += 1;
        if buf.len() >= CHUNK_BYTES {
            emit(std::mem::take(&mut buf).into_bytes())?;
            buf.reserve(CHUNK_BYTES + 4096);
        }
        Ok(())
    })?;
    if !buf.is_empty() {
        emit(buf.into_bytes())?;
    }
    Ok(rows)
}

/// Rows read from the central store per statement.
const CENTRAL_PAGE: u32 = 500;

/// Start exporting `filter`'s rows within `scope` from the trust's central store; returns
/// the body to send. As [`start`], a page of rows at a time: each row with its site first.
pub(crate) fn start_central(
    central: Arc<Central>,
    scope: Scope,
    filter: CentralFilter,
    permit: tokio::sync::OwnedSemaphorePermit,
    done: impl FnOnce(Result<u64, FleetError>) + Send + 'static,
) -> Body {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    tokio::spawn(async move {
        let result = write_central(&central, &scope, filter, &tx).await;
        if let Err(error) = &result {
            let _ = tx.try_send(Err(std::io::Error::other(error.to_string())));
        }
        drop(permit);
        done(result);
    });
    Body(rx)
}

async fn write_central(
    central: &Central,
    scope: &Scope,
    mut filter: CentralFilter,
    tx: &mpsc::Sender<Chunk>,
) -> Result<u64, FleetError> {
    let stopped =
        |why: &str| FleetError::Audit(AuditError::Invalid(format!("export stopped: {why}")));
    let mut buf = format!("site,{CSV_HEADER}\r\n");
    let mut rows = 0u64;
    loop {
        let page = central.list(scope, &filter, CENTRAL_PAGE).await?;
        let more = page.len() == CENTRAL_PAGE as usize;
        filter.filter.before = page.last().map(|r| (r.first_seen.clone(), r.id));
        for row in &page {
            buf.push_str(&review::csv_field(row.site.as_deref().unwrap_or("")));
            buf.push(',');
            buf.push_str(&row.csv());
            buf.push_str("\r\n");
            rows += 1;
        }
        if buf.len() >= CHUNK_BYTES || !more {
            let chunk = std::mem::take(&mut buf).into_bytes();
            match tokio::time::timeout(STALL, tx.send(Ok(chunk))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(stopped("the client went away")),
                Err(_) => return Err(stopped("the client stopped reading")),
            }
        }
        if !more {
            return Ok(rows);
        }
    }
}

/// The export slots, shared by the dashboard's handlers.
pub(crate) fn slots() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(CONCURRENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_without_a_start_covers_the_30_days_up_to_its_end() {
        let config = Config::parse(
            "[server]\ntimezone = \"Europe/London\"\n",
            "t.toml".as_ref(),
        )
        .unwrap();
        let now = humantime::parse_rfc3339("2026-12-03T10:00:00Z").unwrap();
        let form = |since: &str, until: &str| FilterForm {
            since: since.into(),
            until: until.into(),
            ..FilterForm::default()
        };
        let (open, added) = with_default_start(&form("", ""), &config, now);
        assert_eq!(
            (open.since.as_str(), added.as_deref()),
            ("2026-11-04", Some("2026-11-04"))
        );
        let (ended, _) = with_default_start(&form("", "2026-06-30"), &config, now);
        assert_eq!(
            (ended.since.as_str(), ended.until.as_str()),
            ("2026-06-01", "2026-06-30")
        );
        let (given, added) = with_default_start(&form("2025-01-01", ""), &config, now);
        assert_eq!((given.since.as_str(), added), ("2025-01-01", None));
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_stops_the_export() {
        let (tx, mut rx) = mpsc::channel(1);
        let runtime = tokio::runtime::Handle::current();
        let outcome = tokio::task::spawn_blocking(move || {
            let stall = Duration::from_millis(50);
            let first = send(&runtime, &tx, vec![1], stall);
            // The channel holds one chunk: nobody reads, so the second waits, then gives up.
            let second = send(&runtime, &tx, vec![2], stall);
            (first, second)
        })
        .await
        .unwrap();
        assert_eq!(outcome, (Ok(()), Err("the client stopped reading")));
        assert_eq!(rx.recv().await.unwrap().unwrap(), vec![1]);
    }

    #[tokio::test]
    async fn a_client_that_went_away_stops_the_export() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let runtime = tokio::runtime::Handle::current();
        let outcome = tokio::task::spawn_blocking(move || {
            send(&runtime, &tx, vec![1], Duration::from_secs(5))
        })
        .await
        .unwrap();
        assert_eq!(outcome, Err("the client went away"));
    }
}
