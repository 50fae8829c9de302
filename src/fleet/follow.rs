//! A site following the trust's policy ([`super::policy`]) and reporting its health.
//!
//! One task, one connection of its own: it `LISTEN`s for new versions (applied within
//! moments of the change) and also checks every `[fleet] policy_poll` (a notification
//! lost with a broken connection is caught up), and writes a heartbeat row every
//! `[fleet] heartbeat`.
//!
//! Applying a version is fail-closed. The site's view of it is rendered, parsed with
//! the local config (the same parser and checks as any config), its new lists by URL
//! are downloaded and validated (a URL answering garbage refuses the version), and only
//! then are the files written and the rules reloaded; a reload that fails puts the
//! previous files back. A refused version is reported in the site's heartbeat and the
//! rules in force stay. The files in `policy_dir` are always the last version applied,
//! so a site that starts with the database out of reach filters as before (they are
//! read with the config file: see `Config::load`).
//!
//! DNS never waits on any of this: the database down only delays a change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::connect::Settings;
use super::policy::{self, State};
use super::FleetError;
use crate::config::{Config, FleetConfig, POLICY_FILE};
use crate::metrics::Metrics;
use crate::reload::{ReloadError, Reloader};

/// The file in the policy folder that records the version the files hold.
const VERSION_FILE: &str = "version";

/// Waits between failed attempts to reach the database: doubling up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why a version was not applied.
#[derive(Debug)]
enum NotApplied {
    /// The version cannot be applied here as it stands (reported; not retried until a
    /// newer version comes).
    Refused(String),
    /// Something passing went wrong (the server stopping, a reload timed out, a file
    /// not written): tried again at the next check.
    Later(String),
}

/// What the follower knows about the policy here (reported by each heartbeat).
#[derive(Debug, Default)]
struct Applied {
    version: i64,
    refused: Option<(i64, String)>,
    notes: Vec<String>,
}

/// A site's follower: built at start-up from the config it started with.
pub struct Follower {
    settings: Settings,
    fleet: FleetConfig,
    config_path: PathBuf,
    /// The policy folder, resolved against the config file's folder.
    dir: PathBuf,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    applied: Applied,
    /// Refresh timers this follower started for lists the policy added since start-up
    /// (those in the config at start have theirs already), by list name.
    refreshers: HashMap<String, CancellationToken>,
    started_with: BTreeSet<String>,
    /// Figures at the last heartbeat, for the rates per minute.
    last_beat: Option<(Instant, u64, u64)>,
}

impl Follower {
    pub fn new(
        settings: Settings,
        config: &Config,
        reloader: Arc<Reloader>,
        metrics: Arc<Metrics>,
    ) -> Option<Follower> {
        let fleet = config.fleet.clone()?;
        let dir = config.resolve(&fleet.policy_dir);
        let version = read_version(&dir);
        metrics.fleet_policy(version, 0, 0);
        Some(Follower {
            settings,
            config_path: config.path.clone(),
            dir,
            fleet,
            reloader,
            metrics,
            applied: Applied {
                version,
                ..Applied::default()
            },
            refreshers: HashMap::new(),
            started_with: crate::sources::Source::all(config)
                .into_iter()
                .map(|s| s.name)
                .collect(),
            last_beat: None,
        })
    }

    /// Follow until `stop`, reconnecting with backoff whenever the database goes away.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut wait = Duration::from_secs(1);
        loop {
            match self.session(&stop).await {
                Ok(()) => return,
                Err(error) => {
                    self.metrics.fleet_error();
                    tracing::warn!(%error, retry_in = ?wait, "fleet: policy and heartbeat paused; the rules in force stay");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection's life: listen, check, beat. `Ok` only when stopped.
    async fn session(&mut self, stop: &CancellationToken) -> Result<(), FleetError> {
        let (mut client, mut notified) = self.settings.connect_listening().await?;
        super::central::migrate(&mut client, &self.settings).await?;
        client
            .batch_execute(&format!("LISTEN {}", policy::CHANNEL))
            .await
            .map_err(|e| self.settings.database_error(e))?;
        let mut poll = tokio::time::interval(self.fleet.policy_poll);
        let mut beat = tokio::time::interval(self.fleet.heartbeat);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                message = notified.recv() => {
                    if message.is_none() {
                        return Err(FleetError::Database {
                            target: self.settings.target.clone(),
                            message: "the connection ended".into(),
                        });
                    }
                    self.check(&client, stop, false).await?;
                    self.heartbeat(&client).await?;
                }
                // A poll also tries a refused version again: a list's server may have
                // been down, or this site's config changed since.
                _ = poll.tick() => self.check(&client, stop, true).await?,
                _ = beat.tick() => self.heartbeat(&client).await?,
            }
        }
    }

    /// Apply the newest version if it is not the one in force (nor one refused, unless
    /// `retry`).
    async fn check(
        &mut self,
        client: &Client,
        stop: &CancellationToken,
        retry: bool,
    ) -> Result<(), FleetError> {
        let latest = policy::latest_version(client, &self.settings).await?;
        let refused = self.applied.refused.as_ref().map(|(v, _)| *v);
        if latest == self.applied.version || (Some(latest) == refused && !retry) {
            return Ok(());
        }
        if latest < self.applied.version {
            // Not a change anyone made: another or a restored database. Going back (or to
            // no policy at all) could drop deny entries, so a person decides.
            let error = format!(
                "the central store's newest policy version is {latest}, older than the {} applied \
                 here: is this the trust's database, or a restored copy? The rules in force stay; \
                 to follow this store, delete {} and restart",
                self.applied.version,
                self.dir.join(VERSION_FILE).display()
            );
            if self.applied.refused.as_ref().map(|(v, _)| *v) != Some(latest) {
                tracing::error!(version = latest, %error, "fleet: policy version refused; the rules in force stay");
            }
            self.applied.refused = Some((latest, error));
            self.metrics.fleet_policy(
                self.applied.version,
                latest.max(1),
                self.applied.notes.len(),
            );
            return Ok(());
        }
        let outcome = match policy::read_records(client, &self.settings, None).await {
            Ok(records) => {
                let state = State::fold(&records);
                self.apply(&state, stop)
                    .await
                    .map(|notes| (state.version, notes))
            }
            Err(FleetError::Config(unreadable)) => Err(NotApplied::Refused(unreadable)),
            Err(e) => return Err(e),
        };
        match outcome {
            Ok((version, notes)) => {
                tracing::info!(
                    version,
                    conflicts = notes.len(),
                    "fleet: the trust's policy applied"
                );
                for note in &notes {
                    tracing::warn!("fleet policy: {note}");
                }
                self.applied = Applied {
                    version,
                    refused: None,
                    notes,
                };
            }
            Err(NotApplied::Refused(error)) => {
                tracing::error!(version = latest, %error, "fleet: policy version refused; the rules in force stay");
                self.applied.refused = Some((latest, error));
            }
            Err(NotApplied::Later(error)) => {
                tracing::warn!(version = latest, %error, "fleet: policy version not applied yet; trying again");
            }
        }
        let refused = self.applied.refused.as_ref().map_or(0, |(v, _)| *v);
        self.metrics
            .fleet_policy(self.applied.version, refused, self.applied.notes.len());
        Ok(())
    }

    /// Apply `state` here: returns the notes (entries left out or without effect).
    async fn apply(
        &mut self,
        state: &State,
        stop: &CancellationToken,
    ) -> Result<Vec<String>, NotApplied> {
        let refused = |e: &dyn std::fmt::Display| NotApplied::Refused(e.to_string());
        let text = Config::local_text(&self.config_path).map_err(|e| refused(&e))?;
        let local = Config::parse(&text, &self.config_path).map_err(|e| refused(&e))?;
        let site = self.settings.site.clone();
        let view = state.for_site(Some(&site), &local.groups.keys().cloned().collect());
        view.check_names().map_err(|e| refused(&e))?;
        let rendered = view.render(&self.fleet.policy_dir);
        let policy_path = self.dir.join(POLICY_FILE);
        let candidate =
            Config::parse_with_policy(&text, &self.config_path, &rendered.sections, &policy_path)
                .map_err(|e| refused(&e))?;
        let added = self.download_new_lists(&candidate, &view).await?;
        let previous = read_folder(&self.dir).map_err(|e| NotApplied::Later(e.to_string()))?;
        let mut files: BTreeMap<String, String> = rendered.files.into_iter().collect();
        files.insert(POLICY_FILE.to_string(), rendered.sections);
        files.insert(VERSION_FILE.to_string(), format!("{}\n", state.version));
        write_folder(&self.dir, &files, &previous).map_err(|e| NotApplied::Later(e.to_string()))?;
        let why = format!("fleet policy version {}", state.version);
        if let Err(error) = self.reloader.reload(&why).await {
            let restored = write_folder(&self.dir, &previous, &files);
            if let Err(e) = &restored {
                tracing::error!(error = %e, "fleet: cannot put the previous policy files back");
            }
            return Err(match error {
                ReloadError::Stopping | ReloadError::TimedOut(_) | ReloadError::Stuck(_) => {
                    NotApplied::Later(error.to_string())
                }
                _ => NotApplied::Refused(format!("the rules did not build: {error}")),
            });
        }
        self.follow_lists(&added, &candidate, stop);
        Ok(self.notes(&view))
    }

    /// Download every list by URL of the policy that has no copy here yet, through the
    /// same download and validation as any list: one that fails refuses the version.
    async fn download_new_lists(
        &self,
        candidate: &Config,
        view: &policy::SiteView,
    ) -> Result<Vec<crate::sources::Source>, NotApplied> {
        let wanted: BTreeSet<&str> = view.lists.iter().map(|(n, _)| n.as_str()).collect();
        let new: Vec<crate::sources::Source> = crate::sources::Source::all(candidate)
            .into_iter()
            .filter(|s| wanted.contains(s.name.as_str()) && !s.file.exists())
            .collect();
        if new.is_empty() {
            return Ok(new);
        }
        let fetcher = crate::sources::Fetcher::new(candidate)
            .map_err(|e| NotApplied::Later(e.to_string()))?;
        for source in &new {
            if let Err(error) = fetcher.fetch(source, &|_, _| {}).await {
                return Err(NotApplied::Refused(error.to_string()));
            }
            self.metrics
                .list_refreshed(&source.name, "updated", SystemTime::now());
        }
        Ok(new)
    }

    /// Keep the policy's lists by URL refreshed: a timer for each one added since
    /// start-up; the timers of lists the policy no longer has are stopped.
    fn follow_lists(
        &mut self,
        added: &[crate::sources::Source],
        config: &Config,
        stop: &CancellationToken,
    ) {
        let present: BTreeSet<String> = crate::sources::Source::all(config)
            .into_iter()
            .map(|s| s.name)
            .collect();
        self.refreshers.retain(|name, token| {
            let keep = present.contains(name);
            if !keep {
                token.cancel();
            }
            keep
        });
        let Ok(fetcher) = crate::sources::Fetcher::new(config) else {
            return;
        };
        for source in added {
            if self.started_with.contains(&source.name)
                || self.refreshers.contains_key(&source.name)
            {
                continue;
            }
            let token = stop.child_token();
            self.refreshers.insert(source.name.clone(), token.clone());
            tokio::spawn(crate::sources::refresh_forever(
                source.clone(),
                fetcher.clone(),
                self.reloader.clone(),
                self.metrics.clone(),
                token,
            ));
        }
    }

    /// The view's notes, and each allow entry that a locked list blocks here anyway
    /// (it stays blocked: a locked list wins over every allow entry).
    fn notes(&self, view: &policy::SiteView) -> Vec<String> {
        let engine = self.reloader.current();
        let mut notes = view.notes.clone();
        for allow in &view.allow {
            let verdict = engine
                .matcher
                .lookup(&allow.name, engine.matcher.all_categories());
            if let Some(block) = verdict.block().filter(|b| b.locked) {
                notes.push(format!(
                    "allow {} has no effect here: it is on a locked list ({})",
                    allow.name,
                    engine.matcher.category_names(block.categories)
                ));
            }
        }
        notes
    }

    /// Report this site's state: one row per site, replaced at each beat.
    async fn heartbeat(&mut self, client: &Client) -> Result<(), FleetError> {
        let engine = self.reloader.current();
        let stats = self.reloader.stats();
        let (queries, blocks, backlog) = self.metrics.heartbeat_figures();
        let now = Instant::now();
        let (q_rate, b_rate) = match self.last_beat {
            Some((then, q, b)) => {
                let minutes = now.duration_since(then).as_secs_f64() / 60.0;
                if minutes > 0.0 {
                    (
                        queries.saturating_sub(q) as f64 / minutes,
                        blocks.saturating_sub(b) as f64 / minutes,
                    )
                } else {
                    (0.0, 0.0)
                }
            }
            None => (0.0, 0.0),
        };
        self.last_beat = Some((now, queries, blocks));
        let generation = stats.generation.load(std::sync::atomic::Ordering::Relaxed);
        let last_reload = match crate::sync::lock(&stats.last_error).clone() {
            Some(error) => format!("generation {generation}; last failure: {error}"),
            None => format!("generation {generation}; no failure"),
        };
        let stale: Vec<String> = crate::sources::stale_lists(&engine.config, SystemTime::now())
            .into_iter()
            .filter_map(|(name, stale)| stale.map(|_| name))
            .collect();
        let (refused_version, refused_error) = match &self.applied.refused {
            Some((v, e)) => (Some(*v), Some(e.clone())),
            None => (None, None),
        };
        let rules = i64::try_from(engine.matcher.stats().rules).unwrap_or(i64::MAX);
        client
            .execute(
                "INSERT INTO site_health (site, at, warden_version, policy_version, \
                 refused_version, refused_error, policy_notes, rules, last_reload, \
                 backlog_rows, queries_per_min, blocks_per_min, stale_locked, selftest) \
                 VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (site) DO UPDATE SET at = now(), \
                 warden_version = EXCLUDED.warden_version, policy_version = EXCLUDED.policy_version, \
                 refused_version = EXCLUDED.refused_version, refused_error = EXCLUDED.refused_error, \
                 policy_notes = EXCLUDED.policy_notes, rules = EXCLUDED.rules, \
                 last_reload = EXCLUDED.last_reload, backlog_rows = EXCLUDED.backlog_rows, \
                 queries_per_min = EXCLUDED.queries_per_min, \
                 blocks_per_min = EXCLUDED.blocks_per_min, stale_locked = EXCLUDED.stale_locked, \
                 selftest = EXCLUDED.selftest",
                &[
                    &self.settings.site,
                    &env!("CARGO_PKG_VERSION"),
                    &self.applied.version,
                    &refused_version,
                    &refused_error,
                    &self.applied.notes.join("\n"),
                    &rules,
                    &last_reload,
                    &backlog,
                    &q_rate,
                    &b_rate,
                    &stale.join(", "),
                    &self.metrics.selftest_summary(),
                ],
            )
            .await
            .map_err(|e| self.settings.database_error(e))?;
        Ok(())
    }
}

/// The version the policy folder holds (0: none, or unreadable).
fn read_version(dir: &Path) -> i64 {
    std::fs::read_to_string(dir.join(VERSION_FILE))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// The policy folder's files (name → text); empty if the folder does not exist.
fn read_folder(dir: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && !name.ends_with(".tmp") {
            files.insert(name, std::fs::read_to_string(entry.path())?);
        }
    }
    Ok(files)
}

/// Make the folder hold exactly `files`: each written atomically (a temporary file
/// renamed into place), the version file last, then the files of `before` that `files`
/// does not name removed.
fn write_folder(
    dir: &Path,
    files: &BTreeMap<String, String>,
    before: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let ordered = files
        .iter()
        .filter(|(name, _)| name.as_str() != VERSION_FILE)
        .chain(files.get_key_value(VERSION_FILE));
    for (name, text) in ordered {
        if before.get(name) == Some(text) {
            continue;
        }
        let temp = dir.join(format!("{name}.tmp"));
        std::fs::write(&temp, text)?;
        std::fs::rename(&temp, dir.join(name))?;
    }
    for name in before.keys().filter(|n| !files.contains_key(*n)) {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}
