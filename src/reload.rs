//! Hot reload: build a whole new [`Engine`] off the query path, check it, and swap it in
//! behind the `ArcSwap` that queries read. Queries never wait: they keep the snapshot they
//! loaded until they finish, and the next query sees the new one.
//!
//! Triggers: SIGHUP, a change to the config file or any local list file (watched, and
//! debounced so that an editor's or a copy's several writes make one reload), or a direct
//! call. One reload runs at a time.
//!
//! A reload whose big lists are unchanged (same config entries, same files by size,
//! times and inode) keeps the serving snapshot's base layer and rebuilds only the small
//! lists' overlay (see [`crate::engine`]): everything below (fail-closed checks,
//! generation, metrics, the swap) still runs, in milliseconds rather than seconds.
//! [`Reloaded::base_reused`] says which it was.
//!
//! Fail closed: a snapshot that fails to build (bad config, unreadable list) is rejected,
//! and so is one in which a list *shrank suspiciously*: fewer entries than `min_ratio` of
//! the entries it had in the snapshot serving now, or fewer than its own `min_entries`.
//! A list replaced by garbage, an empty file or a truncated download therefore never
//! empties a category. On rejection the serving snapshot stays, the error (naming the
//! list) is logged, and the failure is counted.
//!
//! Bounded in time: a build that has not finished within `[reload] timeout` (a list on a
//! stuck network mount) is abandoned. Its thread cannot be interrupted, so it is left to
//! finish on its own and its result is thrown away; the reload counts as failed and the
//! next one may start. At most [`MAX_ABANDONED`] such builds may be running before new
//! reloads are refused, so a mount that stays stuck cannot use up the blocking threads.
//! A reload never delays shutdown: once the reloader's stop token fires, a reload in
//! progress returns at once ([`ReloadError::Stopping`]), and `serve` does not wait for
//! the abandoned thread.
//!
//! What runs follows the file, or says why not. Besides the snapshot, a reload applies
//! what was built from the config at start-up: a changed `[upstream]` gets a new
//! forwarder ([`Reloader::with_upstream`]; built before the swap, so one that cannot be
//! built rejects the reload), and whoever registered with [`Reloader::on_swap`] (the TCP
//! limits) is handed the new snapshot. The rest is read from the snapshot as it is used.
//! Settings only a restart applies (listen addresses, the audit log, …: see
//! [`crate::restart`]) are compared with the config the process started with, and each
//! one that differs is reported in the reload's result ([`Reloaded::restart_needed`]),
//! as a warning in the log, and as `warden_restart_needed{setting}` in `/metrics` (back
//! to 0 once a reload puts it back).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{Engine, EngineError};
use crate::metrics::Metrics;
use crate::sync::lock;
use crate::upstream::{Forwarder, LiveForwarder, UpstreamError};

/// Quiet time after the last file change before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// Abandoned builds that may still be running before new reloads are refused.
pub const MAX_ABANDONED: usize = 4;

/// What builds a snapshot from the config at a path, given the serving snapshot (whose
/// base layer it keeps if it can): [`Engine::reload`], unless a test stands in for a
/// stuck file system.
pub(crate) type BuildFn = dyn Fn(&Path, &Engine) -> Result<Engine, EngineError> + Send + Sync;

/// Told of each snapshot swapped in (see [`Reloader::on_swap`]).
pub(crate) type SwapFn = dyn Fn(&Engine) + Send + Sync;

/// What a reload that was accepted did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The generation of the snapshot serving now.
    pub generation: u64,
    /// Rules in it.
    pub rules: u64,
    pub duration_ms: u64,
    /// `[upstream]` changed: a forwarder built from the new section serves now (its
    /// cache starts empty).
    pub upstream_rebuilt: bool,
    /// Only the small lists were read: the big ones' layer is the previous snapshot's.
    pub base_reused: bool,
    /// Settings whose value in the file differs from the one the process started with
    /// and that only a restart applies, named as in the file (`[server] listen`); the
    /// process keeps the old values. Empty when the file and the process agree.
    pub restart_needed: Vec<String>,
}

/// Why a reload was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Build(#[from] EngineError),
    #[error(
        "list {list:?} shrank from {old} to {new} entries (below {limit}); keeping the rules \
         in force. If the change is intended, lower [reload] min_ratio or the list's min_entries"
    )]
    Shrunk {
        list: String,
        old: u64,
        new: u64,
        limit: u64,
    },
    #[error("the reload task failed: {0}")]
    Task(String),
    #[error(
        "the reload did not finish within {0:?} ([reload] timeout) and was abandoned; the \
         rules in force stay (is a list on a slow or stuck network mount?)"
    )]
    TimedOut(Duration),
    #[error(
        "{0} abandoned reloads are still stuck reading their files; no new reload starts \
         until one of them ends (is a list on a stuck network mount?)"
    )]
    Stuck(usize),
    #[error("the server is stopping; reload not done")]
    Stopping,
    #[error("cannot build the forwarder for the new [upstream]: {0}")]
    Upstream(#[from] UpstreamError),
}

impl ReloadError {
    /// The list at fault, if one is.
    pub fn list(&self) -> Option<&str> {
        match self {
            ReloadError::Build(EngineError::List { list, .. }) => Some(list),
            ReloadError::Shrunk { list, .. } => Some(list),
            _ => None,
        }
    }
}

/// Counters and state for logs and metrics.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Snapshots swapped in since start (the first one is generation 1).
    pub generation: AtomicU64,
    pub reloads: AtomicU64,
    pub failures: AtomicU64,
    /// Duration of the last successful reload, in milliseconds.
    pub last_duration_ms: AtomicU64,
    /// When the serving snapshot was swapped in (seconds since 1970).
    pub loaded_at: AtomicU64,
    /// The last failure, for `/readyz` and logs.
    pub last_error: Mutex<Option<String>>,
}

/// Rebuilds and swaps the serving snapshot.
pub struct Reloader {
    config_path: PathBuf,
    shared: Arc<ArcSwap<Engine>>,
    stats: Arc<ReloadStats>,
    metrics: Arc<Metrics>,
    one_at_a_time: tokio::sync::Mutex<()>,
    build: Arc<BuildFn>,
    /// Builds given up on after `[reload] timeout` (see the module doc).
    abandoned: Mutex<Vec<tokio::task::JoinHandle<Result<Engine, EngineError>>>>,
    stop: CancellationToken,
    /// The config the process started with: settings read only at start-up still run
    /// with its values.
    started: Config,
    /// The forwarder queries ask, swapped when `[upstream]` changes.
    upstream: Option<Arc<LiveForwarder>>,
    /// Told of each new snapshot once it serves.
    followers: Mutex<Vec<Box<SwapFn>>>,
    /// Every setting ever reported as needing a restart (for the gauge's zeros).
    restart_reported: Mutex<BTreeSet<String>>,
}

impl Reloader {
    /// A reloader for the snapshot `shared`, built from `config_path`.
    pub fn new(config_path: &Path, shared: Arc<ArcSwap<Engine>>) -> Reloader {
        let stats = ReloadStats::default();
        stats.generation.store(1, Ordering::Relaxed);
        stats.loaded_at.store(unix_now(), Ordering::Relaxed);
        let started = shared.load().config.clone();
        Reloader {
            config_path: config_path.to_path_buf(),
            shared,
            stats: Arc::new(stats),
            metrics: Arc::new(Metrics::new()),
            one_at_a_time: tokio::sync::Mutex::new(()),
            build: Arc::new(Engine::reload),
            abandoned: Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
            started,
            upstream: None,
            followers: Mutex::new(Vec::new()),
            restart_reported: Mutex::new(BTreeSet::new()),
        }
    }

    /// Swap `upstream`'s forwarder when a reload changes `[upstream]` (the handler asks
    /// through the same one).
    pub(crate) fn with_upstream(mut self, upstream: Arc<LiveForwarder>) -> Reloader {
        self.upstream = Some(upstream);
        self
    }

    /// Call `apply` with each new snapshot once it serves: for what was built from the
    /// config at start-up and can be updated in place (the TCP limits).
    pub(crate) fn on_swap(&self, apply: impl Fn(&Engine) + Send + Sync + 'static) {
        lock(&self.followers).push(Box::new(apply));
    }

    /// Build snapshots with `build` instead of [`Engine::reload`]. Tests use this to
    /// stand in for a list whose reads never return.
    pub fn with_builder(
        mut self,
        build: impl Fn(&Path, &Engine) -> Result<Engine, EngineError> + Send + Sync + 'static,
    ) -> Reloader {
        self.build = Arc::new(build);
        self
    }

    /// Cancelling this ends any reload in progress at once ([`ReloadError::Stopping`])
    /// and refuses later ones: for shutdown, which must never wait on a reload.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Record reloads in `metrics` (and describe the serving snapshot there now).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Reloader {
        metrics.snapshot_swapped(
            self.stats.generation.load(Ordering::Relaxed),
            &self.shared.load().lists,
        );
        self.metrics = metrics;
        self
    }

    pub fn stats(&self) -> Arc<ReloadStats> {
        self.stats.clone()
    }

    /// The snapshot serving now.
    pub fn current(&self) -> Arc<Engine> {
        self.shared.load_full()
    }

    /// Build a new snapshot on a blocking thread (within `[reload] timeout`), check it,
    /// and swap it in. On error the serving snapshot is untouched.
    pub async fn reload(&self, reason: &str) -> Result<Reloaded, ReloadError> {
        tracing::debug!(reason, "reloading");
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => Err(ReloadError::Stopping),
            result = self.reload_now(reason) => result,
        }
    }

    async fn reload_now(&self, reason: &str) -> Result<Reloaded, ReloadError> {
        let _one = self.one_at_a_time.lock().await;
        let started = Instant::now();
        let built = self.build_within_limit().await.and_then(|engine| {
            check_shrink(&self.shared.load(), &engine)?;
            let forwarder = self.prepare_upstream(&engine)?;
            Ok((engine, forwarder))
        });
        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
        match built {
            Ok((engine, forwarder)) => Ok(self.swap_in(engine, forwarder, started, reason)),
            Err(error) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                let generation = self.stats.generation.load(Ordering::Relaxed);
                self.metrics
                    .reload_done(started.elapsed(), generation, None);
                if let Some(list) = error.list() {
                    self.metrics.list_refresh_failed(list);
                }
                *lock(&self.stats.last_error) = Some(error.to_string());
                tracing::error!(reason, %error, "reload rejected; the previous rules stay in force");
                Err(error)
            }
        }
    }

    /// Build on a blocking thread; give up on it after `[reload] timeout` (of the
    /// snapshot serving now: the new config is what is being read).
    async fn build_within_limit(&self) -> Result<Engine, ReloadError> {
        let still_running = {
            let mut abandoned = lock(&self.abandoned);
            abandoned.retain(|build| !build.is_finished());
            abandoned.len()
        };
        if still_running >= MAX_ABANDONED {
            return Err(ReloadError::Stuck(still_running));
        }
        // The build keeps the serving snapshot's base layer if none of its lists changed,
        // and otherwise sizes the new one from it (the rule set rarely changes much).
        let current = self.shared.load_full();
        let limit = current.config.reload.timeout;
        let (build, path) = (self.build.clone(), self.config_path.clone());
        let mut task = tokio::task::spawn_blocking(move || build(&path, &current));
        match tokio::time::timeout(limit, &mut task).await {
            Ok(joined) => joined
                .map_err(|e| ReloadError::Task(e.to_string()))?
                .map_err(ReloadError::from),
            Err(_) => {
                // Kept only to count it while it runs; its result is never used.
                lock(&self.abandoned).push(task);
                Err(ReloadError::TimedOut(limit))
            }
        }
    }

    /// A new forwarder if the new snapshot's `[upstream]` differs from the serving
    /// forwarder's (built now, so a failure rejects the reload with nothing changed).
    fn prepare_upstream(&self, engine: &Engine) -> Result<Option<Forwarder>, ReloadError> {
        match &self.upstream {
            Some(upstream) => Ok(upstream.prepare(&engine.config.upstream)?),
            None => Ok(None),
        }
    }

    fn swap_in(
        &self,
        engine: Engine,
        forwarder: Option<Forwarder>,
        started: Instant,
        reason: &str,
    ) -> Reloaded {
        let rules = engine.matcher.stats().rules;
        let base_reused = engine.base_reused;
        let restart_needed = crate::restart::needed(&self.started, &engine.config);
        let engine = Arc::new(engine);
        let upstream_rebuilt = forwarder.is_some();
        if let (Some(upstream), Some(forwarder)) = (&self.upstream, forwarder) {
            upstream.install(forwarder);
        }
        // The previous snapshot is freed when its last query finishes; give the
        // build's scratch memory back now.
        self.shared.store(engine.clone());
        for apply in lock(&self.followers).iter() {
            apply(&engine);
        }
        crate::memory::return_freed_memory();
        let generation = self.stats.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics
            .reload_done(started.elapsed(), generation, Some(&engine.lists));
        let ms = started.elapsed().as_millis() as u64;
        self.stats.last_duration_ms.store(ms, Ordering::Relaxed);
        self.stats.loaded_at.store(unix_now(), Ordering::Relaxed);
        *lock(&self.stats.last_error) = None;
        tracing::info!(
            reason,
            generation,
            rules,
            ms,
            upstream_rebuilt,
            base_reused,
            "reloaded the rules"
        );
        self.report_restart_needed(&restart_needed);
        Reloaded {
            generation,
            rules,
            duration_ms: ms,
            upstream_rebuilt,
            base_reused,
            restart_needed,
        }
    }

    /// Say which settings need a restart to apply: a warning for each, and the gauge
    /// at 1 for each and at 0 for those reported before that agree again.
    fn report_restart_needed(&self, needed: &[String]) {
        for setting in needed {
            tracing::warn!(
                setting = setting.as_str(),
                "restart needed for {setting}: the reloaded config changes it, and it is \
                 read only at start-up; the value the process started with stays in force"
            );
        }
        let mut reported = lock(&self.restart_reported);
        reported.extend(needed.iter().cloned());
        for setting in reported.iter() {
            self.metrics
                .restart_needed(setting, needed.contains(setting));
        }
    }

    /// The files whose change should trigger a reload: the config and its local lists.
    /// (Downloaded lists are reloaded by their refresher, once per accepted download.)
    pub(crate) fn watched_files(&self) -> Vec<PathBuf> {
        let engine = self.shared.load();
        let config = &engine.config;
        let mut files = vec![self.config_path.clone()];
        files.extend(
            config
                .lists
                .iter()
                .filter_map(|l| l.path.as_ref())
                .map(|p| config.resolve(p)),
        );
        files.extend(config.allow.iter().map(|a| config.resolve(&a.path)));
        files
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Refuse `new` if any list present in both snapshots lost too many entries, or any list
/// is below its own `min_entries`.
fn check_shrink(old: &Engine, new: &Engine) -> Result<(), ReloadError> {
    let min_ratio = new.config.reload.min_ratio;
    let before: BTreeMap<&str, u64> = old
        .lists
        .iter()
        .map(|l| (l.name.as_str(), l.report.accepted))
        .collect();
    let minimums: BTreeMap<&str, u64> = new
        .config
        .lists
        .iter()
        .map(|l| (l.name.get_ref().as_str(), l.min_entries))
        .collect();
    for list in &new.lists {
        let had_none = before.get(list.name.as_str()).is_none_or(|&n| n == 0);
        if list.missing && had_none {
            continue; // a download still awaited: nothing to shrink from
        }
        if list.name == crate::config::DASHBOARD_ALLOW {
            continue; // edited only by the dashboard, one entry at a time, on purpose
        }
        if new.config.is_policy_entry_list(&list.name) {
            continue; // the trust's entries: each removal a recorded version
        }
        let now = list.report.accepted;
        let own_minimum = minimums.get(list.name.as_str()).copied().unwrap_or(0);
        let ratio_minimum = before
            .get(list.name.as_str())
            .map_or(0, |&old| (old as f64 * min_ratio).ceil() as u64);
        let limit = own_minimum.max(ratio_minimum);
        if now < limit {
            return Err(ReloadError::Shrunk {
                list: list.name.clone(),
                old: before.get(list.name.as_str()).copied().unwrap_or(0),
                new: now,
                limit,
            });
        }
    }
    Ok(())
}

/// Does this event change what a file holds? Reading a list (inotify's access, open and
/// close-without-writing events) or touching its metadata must not trigger a reload.
fn changes_content(event: &notify::Event) -> bool {
    use notify::event::{EventKind, ModifyKind};
    matches!(
        event.kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            | EventKind::Any
    ) || matches!(
        event.kind,
        EventKind::Access(notify::event::AccessKind::Close(
            notify::event::AccessMode::Write
        ))
    )
}

/// Watch `files` (through their folders, so replacing a file by renaming onto it counts)
/// and reload after each burst of changes. The watcher thread and task end with
/// `stop`. Returns an error if the platform's file watching cannot start.
pub fn watch(
    reloader: Arc<Reloader>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Some(event) = event.ok().filter(changes_content) {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })?;
    let mut watching = HashSet::new();
    let mut rewatch = move |watcher: &mut notify::RecommendedWatcher, files: &[PathBuf]| {
        for dir in files.iter().filter_map(|f| f.parent()) {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if watching.insert(dir.to_path_buf()) {
                if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), %error, "cannot watch for list changes");
                }
            }
        }
    };
    let mut files = reloader.watched_files();
    rewatch(&mut watcher, &files);
    Ok(tokio::spawn(async move {
        let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let mut wanted: HashSet<PathBuf> = files.iter().map(|f| canonical(f)).collect();
        loop {
            // Wait for a change to one of our files…
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                path = rx.recv() => match path { Some(p) => p, None => return },
            };
            if !wanted.contains(&canonical(&first)) {
                continue;
            }
            // …then for quiet, so one copy or save makes one reload.
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(DEBOUNCE) => break,
                    more = rx.recv() => if more.is_none() { return },
                }
            }
            let _ = reloader.reload("a watched file changed").await;
            files = reloader.watched_files();
            rewatch(&mut watcher, &files);
            wanted = files.iter().map(|f| canonical(f)).collect();
        }
    }))
}
