//! Where the dashboard's events live: this site's SQLite audit log, or, for `warden fleet
//! serve`, the trust's central PostgreSQL. The handlers ask [`Backend`] for the same
//! things either way (a page of events, counts, one event with its reviews, the overview's
//! figures, a review, an export) and render the same pages from the answers.
//!
//! Every call carries the signed-in user's [`Scope`]. The central store applies it in
//! every statement; a site's own log holds only its own site, so there it has nothing
//! to narrow.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chrono_tz::Tz;

use super::export;
use crate::audit::records;
use crate::audit::review::{self, EventRow, Filter, ReviewState, Total};
use crate::audit::{AuditError, Store};
use crate::fleet::read::{Central, CentralFilter, Scope, SiteState};
use crate::fleet::FleetError;

/// The dashboard's store of events.
pub(crate) enum Backend {
    /// This site's log: a connection of the dashboard's own beside the writer's.
    Site {
        store: Arc<Mutex<Store>>,
        /// The log's file, which each export opens on its own connection.
        path: PathBuf,
    },
    /// Every site's shipped rows, in the trust's central store.
    Fleet(Arc<Central>),
}

/// The overview's figures.
pub(crate) struct OverviewData {
    pub daily: Vec<(String, String, i64)>,
    pub serious: Vec<EventRow>,
    pub unreviewed_total: i64,
    pub total: i64,
    pub top_devices: Vec<(String, i64)>,
    /// Every site in scope, on the fleet dashboard.
    pub sites: Option<Vec<SiteState>>,
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// A page of a site's own dashboard, asked of the fleet dashboard.
    #[error("{0}")]
    NotHere(String),
    #[error("database task failed: {0}")]
    Task(String),
}

impl Backend {
    /// Run `f` on the site's log on a blocking thread; on the fleet dashboard, which has
    /// no log of its own, a page that needs one is not there.
    pub(super) async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, AuditError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let Backend::Site { store, .. } = self else {
            return Err(BackendError::NotHere(
                "That page is on each site's own dashboard.".to_string(),
            ));
        };
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let store = crate::sync::lock(&store);
            f(&store)
        })
        .await
        .map_err(|e| BackendError::Task(e.to_string()))?
        .map_err(BackendError::from)
    }

    /// The trust's central store, on the fleet dashboard.
    pub(super) fn central(&self) -> Option<&Arc<Central>> {
        match self {
            Backend::Fleet(central) => Some(central),
            Backend::Site { .. } => None,
        }
    }

    pub(super) fn is_fleet(&self) -> bool {
        matches!(self, Backend::Fleet(_))
    }

    /// The overview's figures since `since` (RFC 3339), days counted in `tz`; serious
    /// blocks are those in `serious` categories.
    pub(super) async fn overview(
        &self,
        scope: &Scope,
        since: String,
        tz: Tz,
        serious: Vec<String>,
    ) -> Result<OverviewData, BackendError> {
        let serious_filter = Filter {
            unreviewed: true,
            any_category: serious,
            ..Filter::default()
        };
        let unreviewed = Filter {
            unreviewed: true,
            ..Filter::default()
        };
        match self {
            Backend::Site { .. } => {
                self.db(move |s| {
                    let daily = review::daily_by_category(s, &since, tz)?;
                    let serious = review::list(
                        s,
                        &Filter {
                            limit: Some(20),
                            ..serious_filter
                        },
                    )?;
                    let unreviewed_total = review::count(s, &unreviewed)?;
                    let summary = review::summary_without_names(
                        s,
                        &Filter {
                            since: Some(since),
                            ..Filter::default()
                        },
                    )?;
                    Ok(OverviewData {
                        daily,
                        serious,
                        unreviewed_total,
                        total: summary.total,
                        top_devices: summary.top_devices,
                        sites: None,
                    })
                })
                .await
            }
            Backend::Fleet(central) => {
                let (daily, total) = central.daily_by_category(scope, &since, tz).await?;
                let serious = central.list(scope, &plain(serious_filter), 20).await?;
                let unreviewed_total = central.unreviewed(scope).await?;
                let sites = central.sites(scope, &since).await?;
                // The sites' table stands where a site's overview lists its devices.
                Ok(OverviewData {
                    total,
                    daily,
                    serious,
                    unreviewed_total,
                    top_devices: Vec::new(),
                    sites: Some(sites),
                })
            }
        }
    }

    /// Up to `limit` events of `filter`, newest first, after its cursor.
    pub(super) async fn list(
        &self,
        scope: &Scope,
        filter: CentralFilter,
        limit: u32,
    ) -> Result<Vec<EventRow>, BackendError> {
        match self {
            Backend::Site { .. } => {
                let filter = Filter {
                    limit: Some(limit),
                    ..filter.filter
                };
                self.db(move |s| review::list(s, &filter)).await
            }
            Backend::Fleet(central) => Ok(central.list(scope, &filter, limit).await?),
        }
    }

    /// How many events `filter` matches (ignoring its cursor).
    pub(super) async fn count(
        &self,
        scope: &Scope,
        filter: CentralFilter,
    ) -> Result<i64, BackendError> {
        match self {
            Backend::Site { .. } => self.db(move |s| review::count(s, &filter.filter)).await,
            Backend::Fleet(central) => Ok(central.count(scope, &filter).await?),
        }
    }

    /// What the export link says it will write: exact on a site's log (its rollups
    /// count), capped as a page's count on the central store.
    pub(super) async fn export_count(
        &self,
        scope: &Scope,
        filter: CentralFilter,
    ) -> Result<Total, BackendError> {
        match self {
            Backend::Site { .. } => Ok(Total::Exact(self.count(scope, filter).await?)),
            Backend::Fleet(_) => self.page_total(scope, filter).await,
        }
    }

    /// A page's count of `filter`'s events: exact, or "more than" a bound.
    pub(super) async fn page_total(
        &self,
        scope: &Scope,
        filter: CentralFilter,
    ) -> Result<Total, BackendError> {
        match self {
            Backend::Site { .. } => {
                self.db(move |s| review::page_total(s, &filter.filter))
                    .await
            }
            Backend::Fleet(central) => Ok(central.page_total(scope, &filter).await?),
        }
    }

    /// Event `id` (not found unless `scope` sees it) and its reviews, oldest first.
    pub(super) async fn event(
        &self,
        scope: &Scope,
        id: i64,
    ) -> Result<(EventRow, Vec<ReviewState>), BackendError> {
        match self {
            Backend::Site { .. } => {
                self.db(move |s| Ok((review::get(s, id)?, review::reviews_of(s, id)?)))
                    .await
            }
            Backend::Fleet(central) => Ok(central.get(scope, id).await?),
        }
    }

    /// Review event `id` (not found unless `scope` sees it) as `by`.
    pub(super) async fn add_review(
        &self,
        scope: &Scope,
        id: i64,
        outcome: String,
        note: String,
        by: String,
    ) -> Result<(), BackendError> {
        let now = SystemTime::now();
        match self {
            Backend::Site { .. } => {
                self.db(move |s| review::add_review(s, id, &outcome, &note, &by, now))
                    .await?;
            }
            Backend::Fleet(central) => {
                central
                    .add_review(scope, id, &outcome, &note, &by, now)
                    .await?;
            }
        }
        Ok(())
    }

    /// The sites the central store holds (none on a site's own dashboard).
    pub(super) async fn site_names(&self) -> Result<Vec<String>, BackendError> {
        match self {
            Backend::Site { .. } => Ok(Vec::new()),
            Backend::Fleet(central) => Ok(central.site_names().await?),
        }
    }

    /// Record a sign-in attempt.
    pub(super) async fn record_signin(
        &self,
        at: SystemTime,
        user: String,
        client: String,
        result: &'static str,
    ) -> Result<(), BackendError> {
        match self {
            Backend::Site { .. } => {
                self.db(move |s| records::record_signin(s, at, &user, &client, result))
                    .await
            }
            Backend::Fleet(central) => Ok(central
                .record_signin(&crate::audit::rfc3339(at), &user, &client, result)
                .await?),
        }
    }

    /// Record a second factor's use; false if it had been used before.
    pub(super) async fn use_second_factor(
        &self,
        at: SystemTime,
        user: String,
        kind: &'static str,
        value: String,
    ) -> Result<bool, BackendError> {
        match self {
            Backend::Site { .. } => {
                self.db(move |s| records::use_second_factor(s, at, &user, kind, &value))
                    .await
            }
            Backend::Fleet(central) => Ok(central
                .use_second_factor(&crate::audit::rfc3339(at), &user, kind, &value)
                .await?),
        }
    }

    /// Stream `filter`'s events as CSV; `done` is told the rows written when it ends.
    pub(super) fn export(
        &self,
        scope: Scope,
        filter: CentralFilter,
        permit: tokio::sync::OwnedSemaphorePermit,
        done: impl FnOnce(Result<u64, BackendError>) + Send + 'static,
    ) -> export::Body {
        match self {
            Backend::Site { path, .. } => {
                export::start(path.clone(), filter.filter, permit, move |r| {
                    done(r.map_err(BackendError::from))
                })
            }
            Backend::Fleet(central) => {
                export::start_central(central.clone(), scope, filter, permit, move |r| {
                    done(r.map_err(BackendError::from))
                })
            }
        }
    }
}

/// A filter without a site.
pub(super) fn plain(filter: Filter) -> CentralFilter {
    CentralFilter { filter, site: None }
}
