//! `warden serve`: the running daemon's start-up order and wiring, top to bottom.
//!
//! 1. download any `url` list that has no cached copy yet (first start only);
//! 2. load and validate the config and every list into the first snapshot (any error
//!    stops here, before a socket is bound);
//! 3. open the audit log and start its writer, then the alerts that read it (if
//!    `[alerts]` has a channel);
//! 4. bind DNS (UDP and TCP) and the admin listener;
//! 5. install the reload triggers (SIGHUP, file watcher, list refresh timers, stale-list
//!    watch) and the shutdown signals, then announce that we serve;
//! 6. on SIGTERM/SIGINT, the stop drains: stop accepting (DNS, admin, block page), let
//!    the queries in flight finish (those waiting for upstream, and TCP queries already
//!    read; at most [`dns::server::DRAIN_TIMEOUT`], then the rest are cut off), stop the
//!    alerts (saving their cursor), and only then flush and seal the audit log, when
//!    nothing is left that could record a block. If the audit log still cannot be
//!    written (disk full), the log says how many blocks are missing from it and the
//!    process exits with [`EXIT_AUDIT_UNWRITTEN`].

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dns::tcp::TcpLimits;
use crate::engine::Engine;
use crate::identity::Sessions;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::upstream::{Forwarder, LiveForwarder};
use crate::{admin, alerts, audit, dns, sources};

/// Exit status of a `warden serve` that stopped with blocks it could not write to the
/// audit log (0 is a clean stop, 2 an error).
pub const EXIT_AUDIT_UNWRITTEN: u8 = 3;

/// How long the runtime's end waits for blocking threads (see [`run`]).
pub(crate) const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);

/// Serve until SIGINT or SIGTERM.
pub fn run(path: &Path) -> Result<ExitCode> {
    crate::memory::configure();
    let runtime = runtime()?;
    let metrics = start_metrics();

    // 1–2. The first snapshot.
    let engine = first_snapshot(path, &runtime, &metrics)?;

    // 3. The audit log (its writer is a thread of its own, outside the runtime).
    let audit = start_audit(&engine.config)?;
    if let Some((sink, writer)) = &audit {
        metrics.watch_audit(sink.clone(), writer.stats_handle());
    }
    let sink = audit.as_ref().map(|(sink, _)| sink.clone());

    // 3–6. Serve until a signal, then drain.
    let served = runtime.block_on(serve_until_stopped(path, engine, &metrics, sink));
    // A reload's build stuck reading a file (abandoned, see `reload`) must not hold the
    // process: dropping the runtime would wait for its thread for ever. Every DNS task
    // has drained or been cut off by now, and the runtime's end drops whatever else is
    // left: nothing can record a block after this line.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    served?;

    // 6 (end). The server has stopped answering: now flush and seal every recorded block.
    seal_audit(audit)
}

/// The multi-threaded runtime everything async runs on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The metrics registry. hickory counts each upstream response through the global
/// `metrics` recorder at query time: route those into our registry too (one recorder
/// per process).
pub(crate) fn start_metrics() -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::new());
    if ::metrics::set_global_recorder(metrics.resolver_bridge()).is_err() {
        tracing::debug!("a metrics recorder is already installed");
    }
    metrics
}

/// Steps 1–2: the config, any list never downloaded yet, and the first snapshot built
/// from them. A config error is reported before any download.
pub(crate) fn first_snapshot(
    path: &Path,
    runtime: &tokio::runtime::Runtime,
    metrics: &Arc<Metrics>,
) -> Result<Engine> {
    let config = Config::load(path)?;
    runtime.block_on(sources::prime_missing(&config, metrics));
    let engine = Engine::build(config).with_context(|| format!("loading {}", path.display()))?;
    crate::memory::return_freed_memory();
    log_loaded(&engine, path);
    Ok(engine)
}

/// Steps 3 (alerts) to 6 (the stop, up to the audit log's seal): start everything that
/// serves, announce it, and when a signal comes, stop it in order.
async fn serve_until_stopped(
    path: &Path,
    engine: Engine,
    metrics: &Arc<Metrics>,
    sink: Option<audit::Sink>,
) -> Result<()> {
    let signal = shutdown_signal()?;
    let config = engine.config.clone();
    let forwarder = Forwarder::instrumented(&config.upstream, metrics)?;
    let upstream = Arc::new(LiveForwarder::new(forwarder));
    let shared = Arc::new(ArcSwap::from_pointee(engine));
    let reloader = start_reloader(path, &shared, metrics, &upstream);
    record_config_history(&config, &reloader);
    // Alerts read what the audit writer commits; they stop after DNS does.
    let alerts_stop = CancellationToken::new();
    let alerts = match &sink {
        Some(_) => alerts::start(shared.clone(), metrics.clone(), alerts_stop.clone()).await?,
        None => None,
    };
    // The fleet shipper reads what the audit writer seals; it and the policy follower
    // stop with the alerts.
    let fleet = start_fleet(&config, metrics, &reloader, &alerts_stop)?;

    // 4. Listeners. Sign-ins (RADIUS, feeds, the sessions file) are shared by the DNS
    //    handler, which reads them, and the listeners that write them.
    let sessions = sign_ins(&config, &reloader);
    let handler = dns::Handler::with_upstream(shared.clone(), upstream)
        .with_metrics(metrics.clone())
        .with_sessions(sessions.clone());
    let probe = handler.probe_key();
    let server = start_dns(&config, handler, sink).await?;
    // A reload's TCP limits apply to the next connections.
    let tcp = server.tcp_table();
    reloader.on_swap(move |engine| tcp.set_limits(TcpLimits::from_config(&engine.config.server)));
    let stop = server.token();
    if let Some(radius) = crate::identity::start(&config, &sessions, metrics, &stop).await? {
        tracing::info!("RADIUS accounting on {radius} (UDP)");
    }
    let selftest = start_selftest(&config, &server, shared, probe, metrics, &stop)?;
    let serving = Arc::new(AtomicBool::new(false));
    let listeners = AdminParts {
        serving: serving.clone(),
        sessions: sessions.clone(),
        selftest,
    };
    let admin = start_admin(&config, metrics, &reloader, listeners, &stop).await?;
    if let Some(addr) = config.dashboard.block_page {
        let store = requests_store(&config);
        let bound = crate::blockpage::start(addr, reloader.clone(), store, stop.clone()).await?;
        tracing::info!("block page on http://{bound}/");
    }

    // 5. Triggers, then the announcement.
    let reload_stop = reloader.stop_token();
    spawn_reload_triggers(&config, reloader, metrics.clone(), stop.clone())?;
    serving.store(true, Ordering::Relaxed);
    announce(&server);
    tokio::spawn(stop_on(signal, stop, reload_stop));

    // 6. DNS drains (its queries in flight finish or are cut off), then the alerts save
    //    their cursor, then the admin listener ends.
    let behind_dns = BehindDns {
        alerts_stop,
        alerts,
        fleet,
        admin,
    };
    server.wait().await?;
    tracing::debug!("stopping: DNS drained");
    behind_dns.stop().await;
    Ok(())
}

/// Where the block page files requests to unblock a site: the audit database, on a
/// connection of its own (none with the audit log off: the page then offers no form).
fn requests_store(config: &Config) -> Option<audit::Store> {
    if !config.audit.enabled() {
        return None;
    }
    match audit::Store::open(&config.resolve(&config.audit.path)) {
        Ok(store) => Some(store),
        Err(error) => {
            tracing::warn!(%error, "the block page takes no requests");
            None
        }
    }
}

/// Who is signed in where: shared by the DNS handler, which reads it, and the
/// listeners that write it; a reload applies its lifetime and checks the feeds' tokens.
fn sign_ins(config: &Config, reloader: &Reloader) -> Arc<Sessions> {
    let sessions = Arc::new(Sessions::new());
    sessions.set_lifetime(config.identity.session_lifetime);
    let lifetimes = sessions.clone();
    reloader.on_swap(move |engine| {
        let config = &engine.config;
        lifetimes.set_lifetime(config.identity.session_lifetime);
        for problem in
            crate::identity::feed::token_problems(&config.identity.feeds, &config.base_dir)
        {
            tracing::warn!("{problem}: the feed accepts nothing until it is fixed");
        }
    });
    sessions
}

/// Say where DNS is served (plain last: tests and scripts wait for that line).
fn announce(server: &dns::RunningServer) {
    for addr in &server.dot_addrs {
        tracing::info!("DNS over TLS on {addr}");
    }
    for addr in &server.doh_addrs {
        tracing::info!("DNS over HTTPS on https://{addr}{}", dns::doh::PATH);
    }
    for addr in &server.addrs {
        tracing::info!("serving DNS on {addr} (UDP and TCP)");
    }
}

/// What stops after DNS, in order: the alerts (saving their cursor), the fleet tasks,
/// the admin listener. Each step is logged, so a stop that hangs says where.
struct BehindDns {
    alerts_stop: CancellationToken,
    alerts: Option<alerts::Alerts>,
    fleet: Vec<tokio::task::JoinHandle<()>>,
    admin: Option<admin::AdminServer>,
}

impl BehindDns {
    async fn stop(self) {
        self.alerts_stop.cancel();
        if let Some(alerts) = self.alerts {
            alerts.wait().await;
            tracing::debug!("stopping: alerts stopped");
        }
        for task in self.fleet {
            let _ = task.await;
        }
        tracing::debug!("stopping: fleet tasks stopped");
        if let Some(admin) = self.admin {
            admin.wait().await;
            tracing::debug!("stopping: admin listener stopped");
        }
    }
}

/// The reloader over the serving snapshot (and the forwarder a reload of `[upstream]`
/// replaces), and the list-freshness gauge that reads it.
fn start_reloader(
    path: &Path,
    shared: &Arc<ArcSwap<Engine>>,
    metrics: &Arc<Metrics>,
    upstream: &Arc<LiveForwarder>,
) -> Arc<Reloader> {
    let serving_rules = shared.clone();
    metrics.watch_list_freshness(move || {
        sources::freshness(&serving_rules.load().config, std::time::SystemTime::now())
    });
    let reloader = Reloader::new(path, shared.clone())
        .with_metrics(metrics.clone())
        .with_upstream(upstream.clone());
    Arc::new(reloader)
}

/// Bind DNS (UDP and TCP) on every `[server] listen` address, with `handler`
/// recording blocks in `sink`.
async fn start_dns(
    config: &Config,
    mut handler: dns::Handler,
    sink: Option<audit::Sink>,
) -> Result<dns::RunningServer> {
    if let Some(sink) = sink {
        handler = handler.with_audit(sink);
    }
    let limits = TcpLimits::from_config(&config.server);
    let encrypted = encrypted_setup(config)?;
    Ok(dns::start_full(&config.server.listen, handler, limits, encrypted).await?)
}

/// DNS over TLS and over HTTPS, if `[encrypted]` asks for them: the certificate loaded
/// (or made, self-signed) and its fingerprint logged, for the admin to compare with
/// what a device shows.
fn encrypted_setup(config: &Config) -> Result<Option<dns::EncryptedSetup>> {
    let encrypted = &config.encrypted;
    if !encrypted.enabled() {
        return Ok(None);
    }
    let certs = crate::tls::Certs::load(config).context("[encrypted] certificate")?;
    let files = certs.files();
    tracing::info!(
        cert = %files.cert.display(),
        self_signed = files.self_signed,
        "TLS certificate SHA-256 fingerprint {}",
        certs.fingerprint()
    );
    Ok(Some(dns::EncryptedSetup {
        dot: encrypted.dot_listen.clone(),
        doh: encrypted.doh_listen.clone(),
        certs,
        hostname: encrypted.hostname.get_ref().clone(),
    }))
}

/// On `signal`, stop every listener (DNS starts draining) and any reload in progress
/// (its build is left to the blocking thread).
pub(crate) async fn stop_on(
    signal: impl std::future::Future<Output = ()>,
    stop: CancellationToken,
    reload_stop: CancellationToken,
) {
    signal.await;
    // Stop first, log second: nothing may stand between a signal and the stop.
    stop.cancel();
    reload_stop.cancel();
    tracing::info!("shutting down");
}

/// Flush and seal the audit log, once nothing can record a block any more: a clean
/// stop, or [`EXIT_AUDIT_UNWRITTEN`] if blocks could not be written.
fn seal_audit(audit: Option<(audit::Sink, audit::Writer)>) -> Result<ExitCode> {
    let Some((sink, writer)) = audit else {
        return Ok(ExitCode::SUCCESS);
    };
    match writer.stop() {
        Ok(()) => {
            tracing::info!(events = sink.received(), "audit log flushed");
            Ok(ExitCode::SUCCESS)
        }
        Err(audit::AuditError::Unwritten { events, source }) => {
            tracing::error!(
                events,
                error = %source,
                "stopped with {events} events not written to the audit log"
            );
            Ok(ExitCode::from(EXIT_AUDIT_UNWRITTEN))
        }
        Err(error) => Err(error).context("flushing the audit log"),
    }
}

fn log_loaded(engine: &Engine, path: &Path) {
    for warning in engine.lists.iter().filter_map(|l| l.report.warning()) {
        tracing::warn!("{warning}");
    }
    for list in engine.lists.iter().filter(|l| l.missing) {
        tracing::error!(
            list = list.name,
            "no downloaded copy of this list yet: it blocks nothing until a download succeeds"
        );
    }
    let stats = engine.matcher.stats();
    tracing::info!(
        rules = stats.rules,
        names = stats.names,
        lists = engine.lists.len(),
        build_ms = engine.build_time.as_millis() as u64,
        "rules loaded from {}",
        path.display()
    );
}

/// Open the audit store and start its writer, unless `[audit] enabled = false`.
fn start_audit(config: &Config) -> Result<Option<(audit::Sink, audit::Writer)>> {
    let settings = &config.audit;
    if !settings.enabled() {
        tracing::warn!("[audit] enabled = false: blocks are not recorded");
        return Ok(None);
    }
    let store = audit::Store::open(&config.resolve(&settings.path))?;
    tracing::info!("audit log: {}", store.path().display());
    let sink =
        audit::Sink::with_client_bound(settings.max_pending, settings.max_pending_per_client);
    let writer = audit::Writer::start(
        store,
        sink.clone(),
        audit::writer::WriterSettings::from_config(settings),
    )?;
    Ok(Some((sink, writer)))
}

/// Record the config as it starts and as each reload leaves it, for the annual review
/// ([`crate::config_history`]), on a connection of its own to the audit log.
fn record_config_history(config: &Config, reloader: &Reloader) {
    if !config.audit.enabled() {
        return;
    }
    let store = match audit::Store::open(&config.resolve(&config.audit.path)) {
        Ok(store) => Arc::new(std::sync::Mutex::new(store)),
        Err(error) => {
            tracing::warn!(%error, "config changes are not recorded for the review");
            return;
        }
    };
    record_config(&store, config.path.clone(), "start");
    reloader.on_swap(move |engine| record_config(&store, engine.config.path.clone(), "reload"));
}

fn record_config(
    store: &Arc<std::sync::Mutex<audit::Store>>,
    path: std::path::PathBuf,
    why: &'static str,
) {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let store = crate::sync::lock(&store);
        match crate::config_history::record(&store, &path, why, std::time::SystemTime::now()) {
            Ok(true) => tracing::info!(why, "config change recorded for the review"),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "could not record the config's change"),
        }
    });
}

/// Ship the audit log to the trust's central store and follow the trust's policy, if
/// `[fleet]` is set (the config check made sure the audit log is on).
fn start_fleet(
    config: &Config,
    metrics: &Arc<Metrics>,
    reloader: &Arc<Reloader>,
    stop: &CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let Some(settings) = crate::fleet::Settings::from_config(config)? else {
        return Ok(Vec::new());
    };
    if settings.site.is_empty() {
        anyhow::bail!(
            "{}: [fleet] has no site: a site's Warden ships its log under its own name \
             (site = \"st-marys\"); only `warden fleet serve` and `fleet verify` run without one",
            config.path.display()
        );
    }
    let audit = config.resolve(&config.audit.path);
    let mut tasks = vec![tokio::spawn(crate::fleet::ship::run(
        settings.clone(),
        audit,
        metrics.clone(),
        stop.clone(),
    ))];
    let follower =
        crate::fleet::follow::Follower::new(settings, config, reloader.clone(), metrics.clone());
    if let Some(follower) = follower {
        tasks.push(tokio::spawn(follower.run(stop.clone())));
    }
    Ok(tasks)
}

/// The self-test ([`crate::selftest`]), asking the first DNS address bound, recording
/// in the audit log and alerting on the `[alerts]` channels; its timer ends with `stop`.
fn start_selftest(
    config: &Config,
    server: &dns::RunningServer,
    engine: Arc<ArcSwap<Engine>>,
    probe: dns::probe::ProbeKey,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> Result<Option<Arc<crate::selftest::SelfTester>>> {
    let Some(&addr) = server.addrs.first() else {
        return Ok(None);
    };
    let mut tester =
        crate::selftest::SelfTester::new(engine, addr, probe, metrics.clone()).with_notifier(
            alerts::notice::Notifier::from_config(config, metrics.clone())?,
        );
    if config.audit.enabled() {
        match audit::Store::open(&config.resolve(&config.audit.path)) {
            Ok(store) => tester = tester.with_store(store),
            Err(error) => tracing::warn!(%error, "self-test results are not recorded"),
        }
    }
    let tester = Arc::new(tester);
    tokio::spawn(tester.clone().run_forever(stop.clone()));
    Ok(Some(tester))
}

/// What the admin listener serves besides metrics and reloads.
struct AdminParts {
    serving: Arc<AtomicBool>,
    sessions: Arc<Sessions>,
    selftest: Option<Arc<crate::selftest::SelfTester>>,
}

/// The admin listener, unless `[admin] enabled = false`.
async fn start_admin(
    config: &Config,
    metrics: &Arc<Metrics>,
    reloader: &Arc<Reloader>,
    parts: AdminParts,
    stop: &CancellationToken,
) -> Result<Option<admin::AdminServer>> {
    let settings = &config.admin;
    if !settings.enabled {
        return Ok(None);
    }
    let token = admin::load_or_create_token(&config.resolve(&settings.token_file))?;
    let dashboard = open_dashboard(config, metrics, reloader)?;
    if let Some(dashboard) = &dashboard {
        tokio::spawn(crate::dashboard::end_allow_entries_at_their_date(
            dashboard.clone(),
            stop.clone(),
        ));
    }
    let server = admin::start(
        settings.listen,
        token,
        admin::Shared {
            metrics: metrics.clone(),
            reloader: reloader.clone(),
            serving: parts.serving,
            dashboard: dashboard.clone(),
            sessions: parts.sessions,
            selftest: parts.selftest,
        },
        stop.clone(),
    )
    .await?;
    if !server.addr.ip().is_loopback() {
        tracing::warn!(
            "the admin listener is reachable from the network; keep it behind a firewall"
        );
    }
    tracing::info!(
        "admin HTTP on {} (/metrics, /healthz, /readyz, POST /reload, POST /selftest, POST /identity/signin)",
        server.addr
    );
    if dashboard.is_some() {
        tracing::info!("dashboard on http://{}/", server.addr);
        if config.users.is_empty() {
            tracing::warn!("no [[users]] yet: add one with `warden user add NAME --role lead`");
        }
    }
    Ok(Some(server))
}

/// The dashboard, when it is on and there is an audit log for it to show.
fn open_dashboard(
    config: &Config,
    metrics: &Arc<Metrics>,
    reloader: &Arc<Reloader>,
) -> Result<Option<Arc<crate::dashboard::Dashboard>>> {
    if !config.dashboard.enabled {
        return Ok(None);
    }
    if !config.audit.enabled() {
        tracing::warn!("[audit] enabled = false: the dashboard is off (it shows the audit log)");
        return Ok(None);
    }
    let path = config.resolve(&config.audit.path);
    let dashboard = crate::dashboard::Dashboard::open(&path, reloader.clone(), metrics.clone())
        .context("opening the audit log for the dashboard")?;
    Ok(Some(Arc::new(dashboard)))
}

/// Everything that reloads the rules: SIGHUP, the file watcher (if enabled), one refresh
/// timer per `url` list, and the stale-list watch. All end with `stop`.
pub(crate) fn spawn_reload_triggers(
    config: &Config,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<()> {
    if config.reload.watch_files {
        if let Err(error) = crate::reload::watch(reloader.clone(), stop.clone()) {
            tracing::warn!(%error, "cannot watch list files; reload with SIGHUP instead");
        }
    }
    let list_sources = sources::Source::all(config);
    if !list_sources.is_empty() {
        let fetcher = sources::Fetcher::new(config)?;
        for source in list_sources {
            tokio::spawn(sources::refresh_forever(
                source,
                fetcher.clone(),
                reloader.clone(),
                metrics.clone(),
                stop.clone(),
            ));
        }
    }
    if config.lists.iter().any(|l| l.max_age.is_some()) {
        tokio::spawn(sources::watch_staleness(
            reloader.clone(),
            metrics,
            stop.clone(),
        ));
    }
    #[cfg(unix)]
    {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    got = hangup.recv() => if got.is_none() { return },
                }
                let _ = reloader.reload("SIGHUP").await;
            }
        });
    }
    Ok(())
}

/// SIGINT (Ctrl-C) or, on Unix, SIGTERM (systemd's stop). Registers the handlers when
/// called, so call it before announcing that we serve: a signal sent right after the
/// announcement must find them in place.
pub(crate) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let ctrl_c = tokio::signal::ctrl_c();
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    })
}
