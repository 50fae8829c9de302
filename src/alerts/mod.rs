//! Alerts: the e-safety lead hears within a minute about a block in a category that
//! alerts (`[categories.NAME] alert`; by default the locked ones, terrorism, child-abuse
//! and self-harm), by webhook and/or email (`[alerts]`).
//!
//! ## Off the query path
//! Alerts never touch a DNS answer. A task reads the audit log ([`crate::audit`]) on its
//! own connection every `poll_interval`: the new `events` rows (the writer commits at
//! least once a second, and coalesces a device's repeats of one name into one row, so a
//! new row is a new sighting). Rows in an alerting category of the live snapshot (a
//! reload that turns `alert` on or off applies at the next poll) go to the [`limit`]er:
//! the first block of a (device address, category) alerts at once, later ones within
//! `rate_window` go out as one digest when it ends.
//!
//! ## Delivery
//! Each message goes to every channel ([`channel`]) as its own delivery, retried after
//! `retry_backoff`, doubling (at most 10 minutes apart), for up to `retry_for`. Every
//! attempt is a row in `alert_deliveries` ([`db`]) and a count in
//! `warden_alert_deliveries_total{channel,result}`; failures are logged at WARN. A
//! record's client address is deleted when the audit retention of its category ends.
//!
//! ## Stopping and starting again
//! `alert_cursor` holds the last event dealt with. It never passes an event held for a
//! digest, or one whose first delivery attempt is not recorded yet, so nothing is lost
//! by a stop. At start the recent attempts are read back: events already in a recorded
//! message are not alerted twice, the rate windows of recent alerts are restored, and
//! deliveries whose last attempt failed are resumed where they were. On the very first
//! start the cursor is set to the newest event: the history already in the log does not
//! alert (it is there to review), and neither does an event older than a day (as after
//! alerts were switched off for a while).

pub mod channel;
pub mod db;
mod error;
pub mod limit;
pub mod message;
pub mod notice;
pub mod sighting;

pub use self::error::AlertError;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::channel::Channel;
use self::limit::{Limiter, Offer};
use self::message::{Kind, Message, Wording};
use self::notice::backoff;
#[cfg(test)]
use self::notice::MAX_BACKOFF;
use self::sighting::Key;
use crate::audit::store::Retention;
use crate::audit::{before, rfc3339, AuditError, Store};
use crate::config::AlertsConfig;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::sync::lock;

/// Events older than this when first read are not alerted (only reviewable).
const STALE: Duration = Duration::from_secs(24 * 3600);
/// Events read per query.
const BATCH: u32 = 1000;
/// How often delivery records past retention lose their client address.
const PURGE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The running alerts task.
pub struct Alerts {
    task: tokio::task::JoinHandle<()>,
}

impl Alerts {
    /// Wait for the task to end (after the stop token given to [`start`] fires). It
    /// saves the cursor first; deliveries still being retried resume at the next start.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Start alerting with the `[alerts]` channels of the serving snapshot's config; `None`
/// when no channel is configured. The audit log must exist (its writer has started).
pub async fn start(
    engine: Arc<ArcSwap<Engine>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<Option<Alerts>, AlertError> {
    let current = engine.load_full();
    let config = &current.config;
    let settings = config.alerts.clone();
    if !settings.enabled() {
        return Ok(None);
    }
    let channels: Vec<Arc<Channel>> = Channel::all(config)?.into_iter().map(Arc::new).collect();
    let path = config.resolve(&config.audit.path);
    let store = tokio::task::spawn_blocking(move || Store::open_existing(&path))
        .await
        .map_err(|e| AlertError::Task(e.to_string()))??;
    let shared = Arc::new(Shared {
        db: Mutex::new(store),
        metrics,
        wording: Wording::from_config(config),
        channels,
        retry_backoff: settings.retry_backoff,
        unrecorded: Mutex::new(BTreeMap::new()),
    });
    let mut poller = Poller {
        limiter: Limiter::new(settings.rate_window, settings.max_keys),
        retention: Retention::from_config(&config.audit),
        shared,
        engine: engine.clone(),
        settings,
        last_read: 0,
        saved: None,
        covered: HashSet::new(),
        tasks: JoinSet::new(),
        warned_reload: false,
        last_purge: None,
    };
    poller.recover().await?;
    let names: Vec<&str> = poller.shared.channels.iter().map(|c| c.name()).collect();
    tracing::info!(
        channels = %names.join(", "),
        "alerts on, for categories: {}",
        alerting(&current).join(", ")
    );
    Ok(Some(Alerts {
        task: tokio::spawn(poller.run(stop)),
    }))
}

/// The categories of `engine` whose blocks alert.
fn alerting(engine: &Engine) -> Vec<&str> {
    engine
        .config
        .categories
        .iter()
        .filter(|(name, c)| c.alerts(name))
        .map(|(name, _)| name.as_str())
        .collect()
}

/// What the poller and its delivery tasks share.
struct Shared {
    /// The alerts' own connection to the audit log (the writer has another).
    db: Mutex<Store>,
    metrics: Arc<Metrics>,
    wording: Wording,
    channels: Vec<Arc<Channel>>,
    retry_backoff: Duration,
    /// First event id of each delivery whose first attempt is not recorded yet
    /// (with how many such deliveries): the cursor must not pass them.
    unrecorded: Mutex<BTreeMap<i64, u32>>,
}

/// Run `f` on the alerts' connection, on a blocking thread.
async fn with_db<T, F>(shared: &Arc<Shared>, f: F) -> Result<T, AlertError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, AuditError> + Send + 'static,
{
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || f(&lock(&shared.db)))
        .await
        .map_err(|e| AlertError::Task(e.to_string()))?
        .map_err(AlertError::from)
}

/// Reads new events, rate-limits them and raises messages.
struct Poller {
    shared: Arc<Shared>,
    engine: Arc<ArcSwap<Engine>>,
    /// `[alerts]` as started (channel changes need a restart).
    settings: AlertsConfig,
    limiter: Limiter,
    retention: Retention,
    /// The newest event read.
    last_read: i64,
    /// The cursor as last saved.
    saved: Option<i64>,
    /// Events after the cursor already in a recorded message (from before a restart).
    covered: HashSet<i64>,
    tasks: JoinSet<()>,
    warned_reload: bool,
    last_purge: Option<Instant>,
}

impl Poller {
    async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(error) = self.poll(Instant::now()).await {
                tracing::warn!(%error, "alerts: cannot read the audit log; trying again");
            }
        }
        // Held blocks and unfinished deliveries are not lost: the cursor stays before
        // them, and the next start picks them up.
        if let Err(error) = self.save_cursor().await {
            tracing::warn!(%error, "alerts: cannot save the cursor");
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let held = self.limiter.held();
        if held > 0 {
            tracing::info!(
                held,
                "alerts stopped; held blocks go out after the next start"
            );
        }
    }

    /// One round: read new events, raise alerts and due digests, save the cursor.
    async fn poll(&mut self, now: Instant) -> Result<(), AlertError> {
        while self.tasks.try_join_next().is_some() {}
        let engine = self.engine.load_full();
        if engine.config.alerts != self.settings && !self.warned_reload {
            self.warned_reload = true;
            tracing::warn!(
                "[alerts] changed in the reloaded config: restart Warden to apply it \
                 (category alert settings apply at once)"
            );
        }
        let alerting = alerting(&engine);
        let stale = rfc3339(before(SystemTime::now(), STALE));
        let mut skipped = 0u64;
        loop {
            let after = self.last_read;
            let batch = with_db(&self.shared, move |s| db::blocked_after(s, after, BATCH)).await?;
            let full = batch.len() == BATCH as usize;
            for sighting in batch {
                self.last_read = self.last_read.max(sighting.id);
                if self.covered.remove(&sighting.id) {
                    continue;
                }
                let Some(category) = sighting
                    .categories
                    .split(',')
                    .find(|c| alerting.contains(c))
                else {
                    continue;
                };
                if sighting.time < stale {
                    skipped += 1;
                    continue;
                }
                let key = Key::new(&sighting.client, category);
                if self.limiter.offer(key.clone(), sighting.clone(), now) == Offer::Alert {
                    self.raise(Message::alert(key, sighting));
                }
            }
            if !full {
                break;
            }
        }
        if skipped > 0 {
            tracing::info!(
                events = skipped,
                "alerts: events over a day old not alerted (review them in the audit log)"
            );
        }
        for held in self.limiter.due(now) {
            self.raise(Message::digest(held));
        }
        self.shared.metrics.alerts_held(self.limiter.held());
        self.save_cursor().await?;
        if self.last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
            self.last_purge = Some(Instant::now());
            let policy = self.retention.clone();
            let purged = with_db(&self.shared, move |s| {
                db::purge(s, &policy, SystemTime::now())
            })
            .await?;
            if purged > 0 {
                tracing::info!(
                    rows = purged,
                    "alert delivery records past retention purged"
                );
            }
        }
        Ok(())
    }

    /// Send `message` on every channel.
    fn raise(&mut self, message: Message) {
        let kind = message.kind.as_str();
        self.shared.metrics.alert_raised(kind);
        // Names and addresses stay in the audit log and the message, not the daemon log.
        tracing::info!(
            kind,
            category = %message.key.category,
            events = %message.event_ids(),
            "alert raised"
        );
        let message = Arc::new(message);
        let deadline = Instant::now() + self.settings.retry_for;
        for channel in self.shared.channels.clone() {
            self.deliver(channel, message.clone(), 0, deadline);
        }
    }

    /// Start one delivery of `message` on `channel`, after `attempts` earlier attempts.
    fn deliver(
        &mut self,
        channel: Arc<Channel>,
        message: Arc<Message>,
        attempts: u32,
        deadline: Instant,
    ) {
        let flight = InFlight::new(self.shared.clone(), message.first_id());
        self.tasks
            .spawn(run_delivery(flight, channel, message, attempts, deadline));
    }

    /// The last event id that needs nothing more: everything up to it was sent, or
    /// had its first attempt recorded, or did not alert.
    fn cursor(&self) -> i64 {
        let mut cursor = self.last_read;
        if let Some(id) = self.limiter.first_held_id() {
            cursor = cursor.min(id - 1);
        }
        if let Some(id) = lock(&self.shared.unrecorded).keys().next() {
            cursor = cursor.min(id - 1);
        }
        cursor
    }

    async fn save_cursor(&mut self) -> Result<(), AlertError> {
        let cursor = self.cursor();
        if self.saved != Some(cursor) {
            with_db(&self.shared, move |s| db::save_cursor(s, cursor)).await?;
            self.saved = Some(cursor);
        }
        Ok(())
    }

    /// Pick up where the last run stopped (see the module documentation).
    async fn recover(&mut self) -> Result<(), AlertError> {
        let cursor = match with_db(&self.shared, db::cursor).await? {
            Some(cursor) => cursor,
            None => {
                let last = with_db(&self.shared, db::last_event).await?;
                with_db(&self.shared, move |s| db::save_cursor(s, last)).await?;
                tracing::info!(
                    "alerts start after audit event {last}: earlier blocks are not alerted"
                );
                last
            }
        };
        self.last_read = cursor;
        self.saved = Some(cursor);

        let now = SystemTime::now();
        let window = self.settings.rate_window;
        let retry_for = self.settings.retry_for;
        let since = rfc3339(before(now, window.max(retry_for)));
        let attempts = with_db(&self.shared, move |s| db::attempts_since(s, &since)).await?;
        // One delivery = one message on one channel: its first and its last attempt.
        let mut deliveries: BTreeMap<(String, String, String), (db::Attempt, db::Attempt)> =
            BTreeMap::new();
        for a in attempts {
            let key = (a.channel.clone(), a.kind.clone(), a.event_ids.clone());
            deliveries
                .entry(key)
                .and_modify(|(_, last)| *last = a.clone())
                .or_insert_with(|| (a.clone(), a));
        }
        let mut resumed = 0;
        for ((channel, kind, ids), (first, last)) in deliveries {
            let ids = db::parse_ids(&ids);
            self.covered.extend(ids.iter().filter(|id| **id > cursor));
            let age = humantime::parse_rfc3339_weak(&first.at)
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or(Duration::MAX);
            let key = Key::new(&first.client_ip, &first.category);
            if kind == "alert" && age < window && !first.client_ip.is_empty() {
                let opened = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                self.limiter.restore(key.clone(), opened);
            }
            let channel = self.shared.channels.iter().find(|c| c.name() == channel);
            let (Some(channel), Some(kind)) = (channel.cloned(), Kind::parse(&kind)) else {
                continue;
            };
            if last.result != "failed" || age >= retry_for {
                continue;
            }
            let sightings = with_db(&self.shared, move |s| db::events(s, &ids)).await?;
            if sightings.is_empty() {
                continue;
            }
            let message = match kind {
                Kind::Alert => Message {
                    kind,
                    key,
                    sightings,
                    more: 0,
                },
                Kind::Digest => Message::digest(limit::Held {
                    key,
                    sightings,
                    more: 0,
                }),
            };
            let deadline = Instant::now() + (retry_for - age);
            self.deliver(channel, Arc::new(message), last.attempt, deadline);
            resumed += 1;
        }
        if resumed > 0 {
            tracing::info!(
                deliveries = resumed,
                "alerts: resuming deliveries a stop interrupted"
            );
        }
        Ok(())
    }
}

/// A delivery under way: counted in `warden_alerts_pending`, and holding the cursor
/// back until its first attempt is recorded.
struct InFlight {
    shared: Arc<Shared>,
    first_id: i64,
    unrecorded: bool,
}

impl InFlight {
    fn new(shared: Arc<Shared>, first_id: i64) -> InFlight {
        *lock(&shared.unrecorded).entry(first_id).or_default() += 1;
        shared.metrics.alerts_pending_add(1);
        InFlight {
            shared,
            first_id,
            unrecorded: true,
        }
    }

    /// An attempt is recorded: the cursor may pass this delivery's events.
    fn recorded(&mut self) {
        if !std::mem::take(&mut self.unrecorded) {
            return;
        }
        let mut unrecorded = lock(&self.shared.unrecorded);
        if let Some(n) = unrecorded.get_mut(&self.first_id) {
            *n -= 1;
            if *n == 0 {
                unrecorded.remove(&self.first_id);
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.recorded();
        self.shared.metrics.alerts_pending_add(-1);
    }
}

/// Try `message` on `channel` until it is delivered or `deadline` would pass, recording
/// every attempt.
async fn run_delivery(
    mut flight: InFlight,
    channel: Arc<Channel>,
    message: Arc<Message>,
    mut attempt: u32,
    deadline: Instant,
) {
    let shared = flight.shared.clone();
    loop {
        let result = channel.send(&message.letter(&shared.wording)).await;
        attempt += 1;
        let delay = backoff(shared.retry_backoff, attempt);
        let outcome = match &result {
            Ok(()) => "ok",
            Err(_) if Instant::now() + delay <= deadline => "failed",
            Err(_) => "gave-up",
        };
        let error = result.err().map(|e| e.to_string());
        let record = db::Attempt {
            at: rfc3339(SystemTime::now()),
            channel: channel.name().to_string(),
            kind: message.kind.as_str().to_string(),
            category: message.key.category.clone(),
            client_ip: message.key.client.clone(),
            event_ids: message.event_ids(),
            attempt,
            result: outcome.to_string(),
            error: error.clone(),
        };
        if let Err(error) = with_db(&shared, move |s| db::record(s, &record)).await {
            tracing::warn!(%error, "alerts: cannot record a delivery attempt");
        }
        flight.recorded();
        shared.metrics.alert_delivery(channel.name(), outcome);
        let (channel, kind) = (channel.name(), message.kind.as_str());
        let error = error.unwrap_or_default();
        match outcome {
            "ok" => {
                tracing::info!(channel, kind, attempt, "alert delivered");
                return;
            }
            "failed" => tracing::warn!(
                channel,
                kind,
                attempt,
                %error,
                retry_in = %humantime::format_duration(delay),
                "alert delivery failed; will retry"
            ),
            _ => {
                tracing::error!(
                    channel,
                    kind,
                    attempt,
                    %error,
                    "alert delivery failed; giving up (recorded in alert_deliveries)"
                );
                return;
            }
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(text, Path::new("conf/w.toml"))
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(5);
        let waits: Vec<u64> = (1..=5).map(|a| backoff(base, a).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80]);
        assert_eq!(backoff(base, 30), MAX_BACKOFF);
        assert_eq!(backoff(base, u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn alerts_are_off_without_a_channel_and_defaults_are_documented_ones() {
        let c = parse("").unwrap();
        assert!(!c.alerts.enabled());
        assert_eq!(c.alerts.poll_interval, Duration::from_secs(5));
        assert_eq!(c.alerts.rate_window, Duration::from_secs(3600));
        assert_eq!(c.alerts.retry_for, Duration::from_secs(3600));
        let c = parse(
            "[alerts]\nwebhook = \"https://hooks.example/x\"\n[alerts.email]\nhost = \"smtp.example\"\n\
             from = \"Warden <w@school.example>\"\nto = [\"lead@school.example\"]\n",
        )
        .unwrap();
        assert!(c.alerts.enabled());
        let email = c.alerts.email.unwrap();
        assert_eq!(
            (email.port, email.starttls),
            (587, crate::config::StartTls::Required)
        );
    }

    #[test]
    fn bad_alert_settings_are_refused_naming_the_field_and_line() {
        let email = |extra: &str| {
            format!("[alerts.email]\nhost = \"smtp.example\"\nfrom = \"w@school.example\"\n{extra}")
        };
        let cases = [
            (
                "[alerts]\nwebhook = \"ftp://x.example/\"\n".to_string(),
                ":2:",
                "webhook",
            ),
            (email(""), ":3:", "to must name at least one recipient"),
            (
                email("to = [\"not an address\"]\n"),
                ":4:",
                "to: \"not an address\"",
            ),
            (
                email("to = [\"a@b.example\"]\nstarttls = \"none\"\n"),
                ":2:",
                "starttls = \"none\" is only for a relay on this machine",
            ),
            (
                email("to = [\"a@b.example\"]\nusername = \"warden\"\n"),
                ":2:",
                "username and password_file go together",
            ),
            (
                "[alerts]\nwebhook_auth_header_file = \"x\"\n".to_string(),
                ":2:",
                "needs a webhook",
            ),
            (
                "[alerts]\nwebhook = \"https://h.example/\"\npoll_interval = \"5m\"\n".to_string(),
                ":3:",
                "poll_interval",
            ),
            (
                "[audit]\nenabled = false\n[alerts]\nwebhook = \"https://h.example/\"\n"
                    .to_string(),
                ":2:",
                "needs the audit log",
            ),
            (
                "[alerts]\nwebhok = \"https://h.example/\"\n".to_string(),
                "",
                "webhok",
            ),
        ];
        for (text, line, want) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{want:?} not in {err:?} for\n{text}");
            if !line.is_empty() {
                assert!(
                    err.starts_with(&format!("conf/w.toml{line}")),
                    "{err} for\n{text}"
                );
            }
        }
        // A loopback sink may be plain text.
        parse(
            &email("to = [\"a@b.example\"]\nstarttls = \"none\"\n")
                .replace("smtp.example", "127.0.0.1"),
        )
        .unwrap();
    }
}
