//! The self-test: Warden checking, every `[selftest] interval` and on demand (`warden
//! selftest`, `POST /selftest`), that it filters as configured, by asking its own DNS
//! listener what a pupil's device would ask.
//!
//! For every group ([`plan`]): each category the group blocks now or must block (its
//! `required` ones and every locked one) is asked for by a canary name
//! (`[categories.NAME] canary`, else a name from the category's lists) and must come back
//! blocked as that category; safe search and YouTube must come back as the enforced
//! host; the circumvention canary must get the built-in answer; a locked list past its
//! `max_age` fails its category. The questions go over UDP to the listener, so the whole
//! query path is checked (the socket, the handler, the group, the matcher, the answer),
//! each marked ([`crate::dns::probe`]) with the group it checks and a key only this
//! process has: the marked query is answered as that group's member, but no audit row,
//! no block count and no rate limit applies, since no device asked.
//!
//! Each run is recorded ([`history`]), sets `warden_selftest_ok{group,category}`, and a
//! check that starts failing is sent to the lead on the alert channels (once, until it
//! passes again) and logged at ERROR.

pub mod ask;
pub mod history;
pub mod outcome;
pub mod plan;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use chrono::Utc;
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub use self::outcome::{Outcome, Run};
use self::plan::{Planned, Question};
use crate::alerts::message::Letter;
use crate::alerts::notice::Notifier;
use crate::audit::Store;
use crate::dns::probe::ProbeKey;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::sync::lock;

/// The kind of notice a failing self-test sends (in `alert_deliveries`).
pub const NOTICE_KIND: &str = "selftest";

/// The self-test of one running Warden.
pub struct SelfTester {
    engine: Arc<ArcSwap<Engine>>,
    /// The listener asked (a bound UDP address; unspecified ones on loopback).
    server: SocketAddr,
    key: ProbeKey,
    metrics: Arc<Metrics>,
    /// The audit database, where runs are recorded (none: `[audit]` is off).
    store: Option<Arc<Mutex<Store>>>,
    notifier: Option<Notifier>,
    /// The checks that failed in the last run, so a failure is sent once.
    failing: Mutex<Option<BTreeSet<String>>>,
    /// One run at a time (the timer's and `warden selftest`'s).
    running: tokio::sync::Mutex<()>,
}

impl SelfTester {
    pub fn new(
        engine: Arc<ArcSwap<Engine>>,
        server: SocketAddr,
        key: ProbeKey,
        metrics: Arc<Metrics>,
    ) -> SelfTester {
        SelfTester {
            engine,
            server: ask::target(server),
            key,
            metrics,
            store: None,
            notifier: None,
            failing: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Record runs in `store`.
    pub fn with_store(mut self, store: Store) -> SelfTester {
        self.store = Some(Arc::new(Mutex::new(store)));
        self
    }

    /// Tell the lead about new failures through `notifier`.
    pub fn with_notifier(mut self, notifier: Option<Notifier>) -> SelfTester {
        self.notifier = notifier;
        self
    }

    /// Run every `[selftest] interval` (read from the serving snapshot each time, so a
    /// reload applies), the first soon after start, until `stop`.
    pub async fn run_forever(self: Arc<Self>, stop: CancellationToken) {
        // The first run waits for the listeners to settle, not a whole interval.
        let mut wait = std::time::Duration::from_secs(2);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let settings = self.engine.load().config.selftest.clone();
            wait = settings.interval;
            if settings.enabled {
                self.run("interval").await;
            }
        }
    }

    /// One run now: ask every planned question, record the results, set the metrics,
    /// and send what newly fails.
    pub async fn run(&self, trigger: &str) -> Run {
        let _one_at_a_time = self.running.lock().await;
        let engine = self.engine.load_full();
        let at = SystemTime::now();
        let timeout = engine.config.selftest.timeout;
        let mut outcomes = Vec::new();
        for planned in plan::plan(&engine, Utc::now(), at) {
            outcomes.push(match planned {
                Planned::Decided(d) => Outcome {
                    group: d.group,
                    category: d.category,
                    check: String::new(),
                    ok: d.ok,
                    detail: d.detail,
                },
                Planned::Ask(question) => self.check(&question, timeout).await,
            });
        }
        let run = Run {
            at,
            trigger: trigger.to_string(),
            outcomes,
        };
        self.metrics.selftest(&run.by_category(), at, run.summary());
        self.record(&run, engine.config.selftest.keep_days).await;
        self.tell(&engine, &run).await;
        run
    }

    async fn check(&self, question: &Question, timeout: std::time::Duration) -> Outcome {
        let result = ask::ask(self.server, &self.key, question, timeout).await;
        Outcome {
            group: question.group.clone(),
            category: question.category.clone(),
            check: question.name.clone(),
            ok: result.is_ok(),
            detail: result.err().unwrap_or_default(),
        }
    }

    /// Keep `run` in the audit database (a failure to is logged: the run still counts).
    async fn record(&self, run: &Run, keep_days: u32) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let run = run.clone();
        let written =
            tokio::task::spawn_blocking(move || history::record(&lock(&store), &run, keep_days))
                .await;
        if let Ok(Err(error)) = written {
            tracing::warn!(%error, "cannot record the self-test's results");
        }
    }

    /// Log the run's failures, and send the lead those that were not failing in the last
    /// run (the first run after a start compares with the last recorded).
    async fn tell(&self, engine: &Engine, run: &Run) {
        let now_failing: BTreeSet<String> = run
            .outcomes
            .iter()
            .filter(|o| !o.ok)
            .map(Outcome::label)
            .collect();
        let known = lock(&self.failing).clone();
        let before = match known {
            Some(before) => before,
            None => self.last_recorded_failures().await,
        };
        *lock(&self.failing) = Some(now_failing.clone());
        // Each failure is logged when it starts, not at every run; so is its end.
        for fixed in before.difference(&now_failing) {
            tracing::info!(check = %fixed, "self-test check passes again");
        }
        let new: Vec<&Outcome> = run
            .outcomes
            .iter()
            .filter(|o| !o.ok && !before.contains(&o.label()))
            .collect();
        for o in &new {
            tracing::error!(check = o.label(), "self-test failed: {}", o.detail);
        }
        if new.is_empty() {
            return;
        }
        if let Some(notifier) = &self.notifier {
            notifier.send(NOTICE_KIND, "selftest", letter(engine, run, &new));
        }
    }

    /// The failures of the run recorded before this one (none without a store).
    async fn last_recorded_failures(&self) -> BTreeSet<String> {
        let Some(store) = self.store.clone() else {
            return BTreeSet::new();
        };
        let runs = tokio::task::spawn_blocking(move || history::recent(&lock(&store), "", 2))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        // The newest is the run just recorded; the one before it is the last run's.
        runs.get(1)
            .map(|r| r.failures.iter().map(Outcome::label).collect())
            .unwrap_or_default()
    }
}

/// The message to the lead about a run with `new` failures.
fn letter(engine: &Engine, run: &Run, new: &[&Outcome]) -> Letter {
    let failed = run.outcomes.len() - run.passed() as usize;
    let subject = format!(
        "Warden self-test: {failed} of {} filtering checks fail",
        run.outcomes.len()
    );
    let tz = engine.config.server.tz();
    let when = chrono::DateTime::<Utc>::from(run.at)
        .with_timezone(&tz)
        .format("%A %-d %B %Y at %H:%M");
    let mut text = format!(
        "Warden checked its own filtering on {when} and found that some of it is\n\
         not working as configured. Until it is fixed, devices may reach sites\n\
         that should be blocked.\n\nNewly failing:\n"
    );
    for o in new {
        text.push_str(&format!("  {}: {}\n", o.label(), o.detail));
    }
    text.push_str(&format!(
        "\n{} of {} checks pass. Ask whoever looks after Warden to look at it now\n\
         (the dashboard's overview shows every check; `warden selftest` runs them again).\n\
         \n-- \nSent by Warden, the web filter.\n",
        run.passed(),
        run.outcomes.len()
    ));
    let json = json!({
        "kind": NOTICE_KIND,
        "subject": subject,
        "text": text,
        "at": crate::audit::rfc3339(run.at),
        "passed": run.passed(),
        "total": run.outcomes.len(),
        "failures": new,
    });
    Letter {
        subject,
        text,
        json,
    }
}
