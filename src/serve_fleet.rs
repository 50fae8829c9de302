//! `warden fleet serve`: the trust's dashboard over the central store, without DNS. The
//! same pages and handlers as a site's dashboard ([`crate::dashboard`]), reading every
//! site's shipped rows from PostgreSQL, each user scoped to their `[[users]] sites`. It
//! reads the same kind of config file as a site (categories, `[[users]]`, `[dashboard]`,
//! `[admin] listen`, `[fleet] database`); `[fleet] site` is not needed, and nothing is
//! shipped or answered. It also runs the central store's retention
//! ([`crate::fleet::retention`]) by the config's `[audit]` rules.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::audit::Retention;
use crate::engine::Engine;
use crate::fleet::read::Central;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::serve::{
    first_snapshot, runtime, shutdown_signal, spawn_reload_triggers, start_metrics, stop_on,
    RUNTIME_SHUTDOWN,
};

/// Serve the fleet dashboard until SIGINT or SIGTERM.
pub fn run(path: &Path) -> Result<ExitCode> {
    let runtime = runtime()?;
    let metrics = start_metrics();
    let engine = first_snapshot(path, &runtime, &metrics)?;
    let served = runtime.block_on(serve(path, engine, metrics));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    served.map(|()| ExitCode::SUCCESS)
}

async fn serve(path: &Path, engine: Engine, metrics: Arc<Metrics>) -> Result<()> {
    let config = engine.config.clone();
    let Some(settings) = crate::fleet::Settings::from_config(&config)? else {
        bail!(
            "{}: no [fleet] section: the fleet dashboard reads the trust's central store \
             named by [fleet] database",
            path.display()
        );
    };
    if !config.admin.enabled || !config.dashboard.enabled {
        bail!(
            "{}: the fleet dashboard is served on the admin listener: set [admin] enabled \
             and [dashboard] enabled",
            path.display()
        );
    }
    let signal = shutdown_signal()?;
    let shared = Arc::new(ArcSwap::from_pointee(engine));
    let reloader = Arc::new(Reloader::new(path, shared).with_metrics(metrics.clone()));
    let silent_after = config.fleet.as_ref().map(|f| f.silent_after);
    let mut central = Central::new(settings.clone());
    if let Some(after) = silent_after {
        central = central.silent_after(after);
    }
    let central = Arc::new(central);
    let target = central.target().to_string();
    let watched = central.clone();
    let dashboard = crate::dashboard::Dashboard::fleet(central, reloader.clone(), metrics.clone())
        .context("starting the fleet dashboard")?;
    let stop = CancellationToken::new();
    let token = admin::load_or_create_token(&config.resolve(&config.admin.token_file))?;
    let server = admin::start(
        config.admin.listen,
        token,
        admin::Shared {
            metrics: metrics.clone(),
            reloader: reloader.clone(),
            // No DNS here: the health check reports the dashboard's own process.
            serving: Arc::new(AtomicBool::new(true)),
            dashboard: Some(Arc::new(dashboard)),
            // No DNS here either: sign-ins posted to the trust dashboard reach no one.
            sessions: Arc::new(crate::identity::Sessions::new()),
            // Nor a listener for a self-test to ask.
            selftest: None,
        },
        stop.clone(),
    )
    .await?;
    tracing::info!(
        "fleet dashboard on http://{}/ over the central store {target}",
        server.addr
    );
    if config.users.is_empty() {
        tracing::warn!("no [[users]] yet: add one with `warden user add NAME --role lead`");
    }
    tokio::spawn(watch_sites(watched, metrics.clone(), stop.clone()));
    let rules = reloader.clone();
    tokio::spawn(crate::fleet::retention::run(
        settings,
        move || Retention::from_config(&rules.current().config.audit),
        stop.clone(),
    ));
    let reload_stop = reloader.stop_token();
    spawn_reload_triggers(&config, reloader, metrics, stop.clone())?;
    tokio::spawn(stop_on(signal, stop, reload_stop));
    server.wait().await;
    Ok(())
}

/// How often the sites' heartbeats are read into `/metrics`.
const SITE_WATCH: std::time::Duration = std::time::Duration::from_secs(15);

/// Keep each site's health in `/metrics` (silent, policy behind or refused, heartbeat
/// age), for the trust's alert rules; a store out of reach leaves the last figures.
async fn watch_sites(central: Arc<Central>, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SITE_WATCH);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match central.health(&crate::fleet::read::Scope::All).await {
            Ok(sites) => {
                for (site, h) in sites {
                    let behind = (h.newest_policy - h.policy_version).max(0);
                    let refused = h
                        .refused
                        .as_ref()
                        .is_some_and(|(v, _)| *v == h.newest_policy);
                    metrics.fleet_site(&site, h.age_secs, h.silent, behind, refused);
                }
            }
            Err(error) => tracing::warn!(%error, "fleet: cannot read the sites' health"),
        }
    }
}
