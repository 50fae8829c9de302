//! Notices: messages to the lead that are not about blocks (the self-test finding the
//! filtering broken), sent on every `[alerts]` channel with the same retries as an alert
//! and recorded in `alert_deliveries` under their own kind, so the review sees them with
//! the alerts. A notice is not tied to the audit cursor: one lost to a stop is raised
//! again by whatever raised it (the self-test's next failing run after a start).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::channel::Channel;
use super::db::{self, Attempt};
use super::error::AlertError;
use super::message::Letter;
use crate::audit::{rfc3339, Store};
use crate::config::Config;
use crate::metrics::Metrics;

/// Retries never wait longer than this between two attempts.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The wait after failed attempt number `attempt` (1, 2, …): `base`, doubling, capped.
pub(super) fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(MAX_BACKOFF)
}

/// Where notices go: the channels of `[alerts]` as Warden started.
#[derive(Clone)]
pub struct Notifier {
    channels: Vec<Arc<Channel>>,
    audit: PathBuf,
    metrics: Arc<Metrics>,
    retry_backoff: Duration,
    retry_for: Duration,
}

impl Notifier {
    /// The notifier of `config`'s `[alerts]`; `None` without a channel or an audit log.
    pub fn from_config(
        config: &Config,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Notifier>, AlertError> {
        if !config.alerts.enabled() || !config.audit.enabled() {
            return Ok(None);
        }
        let channels = Channel::all(config)?.into_iter().map(Arc::new).collect();
        Ok(Some(Notifier {
            channels,
            audit: config.resolve(&config.audit.path),
            metrics,
            retry_backoff: config.alerts.retry_backoff,
            retry_for: config.alerts.retry_for,
        }))
    }

    /// Send `letter` (of `kind`, about `about`) on every channel, each in a task of its
    /// own that retries until delivered or `retry_for` has passed.
    pub fn send(&self, kind: &'static str, about: &str, letter: Letter) {
        self.metrics.alert_raised(kind);
        let letter = Arc::new(letter);
        let deadline = Instant::now() + self.retry_for;
        for channel in &self.channels {
            let delivery = Delivery {
                notifier: self.clone(),
                channel: channel.clone(),
                kind,
                about: about.to_string(),
                letter: letter.clone(),
                deadline,
            };
            tokio::spawn(delivery.run());
        }
    }
}

/// One notice on one channel.
struct Delivery {
    notifier: Notifier,
    channel: Arc<Channel>,
    kind: &'static str,
    about: String,
    letter: Arc<Letter>,
    deadline: Instant,
}

impl Delivery {
    async fn run(self) {
        let mut attempt = 0;
        loop {
            let result = self.channel.send(&self.letter).await;
            attempt += 1;
            let delay = backoff(self.notifier.retry_backoff, attempt);
            let outcome = match &result {
                Ok(()) => "ok",
                Err(_) if Instant::now() + delay <= self.deadline => "failed",
                Err(_) => "gave-up",
            };
            let error = result.err().map(|e| e.to_string());
            self.record(attempt, outcome, error.clone()).await;
            self.notifier
                .metrics
                .alert_delivery(self.channel.name(), outcome);
            let (channel, kind) = (self.channel.name(), self.kind);
            match outcome {
                "ok" => {
                    tracing::info!(channel, kind, attempt, "notice delivered");
                    return;
                }
                "failed" => tracing::warn!(
                    channel,
                    kind,
                    attempt,
                    error = error.unwrap_or_default(),
                    "notice delivery failed; will retry"
                ),
                _ => {
                    tracing::error!(
                        channel,
                        kind,
                        attempt,
                        error = error.unwrap_or_default(),
                        "notice delivery failed; giving up (recorded in alert_deliveries)"
                    );
                    return;
                }
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// Record one attempt in `alert_deliveries` (a failure to is logged, not fatal).
    async fn record(&self, attempt: u32, outcome: &str, error: Option<String>) {
        let record = Attempt {
            at: rfc3339(SystemTime::now()),
            channel: self.channel.name().to_string(),
            kind: self.kind.to_string(),
            category: self.about.clone(),
            client_ip: String::new(),
            event_ids: String::new(),
            attempt,
            result: outcome.to_string(),
            error,
        };
        let path = self.notifier.audit.clone();
        let written = tokio::task::spawn_blocking(move || {
            Store::open_existing(&path).and_then(|store| db::record(&store, &record))
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot record a notice's delivery"),
            Err(error) => tracing::warn!(%error, "cannot record a notice's delivery"),
        }
    }
}
