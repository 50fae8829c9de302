//! The command line: argument definitions and one function per command.
//!
//! Commands print results on stdout and problems on stderr. Exit codes: 0 success (or
//! "all allowed" for `check`), 1 "something is blocked" for `check`, 2 any error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::audit;
use crate::dns;
use crate::engine::Engine;
use crate::filter::Verdict;
use crate::name;
use crate::reload::Reloader;
use crate::upstream::Forwarder;

/// Default config path, relative to the working directory (the repository root).
pub const DEFAULT_CONFIG: &str = "config/warden.toml";

#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about = "Content-filtering DNS proxy for safeguarding"
)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve filtered DNS on the configured addresses until SIGINT or SIGTERM.
    Serve(ConfigArg),
    /// Show whether names are blocked, and by which rule.
    Check(CheckArgs),
    /// Inspect the configured lists.
    #[command(subcommand)]
    Lists(ListsCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Review the audit log of blocks (for the e-safety lead).
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// Which audit events a command looks at.
#[derive(Debug, Args)]
pub struct AuditFilterArgs {
    /// Only events seen since: a duration (7d, 12h) or a date (2026-11-01) or RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only events first seen before this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// Only events in this category.
    #[arg(long)]
    pub category: Option<String>,
    /// Only events from this client (IP address or device name).
    #[arg(long)]
    pub client: Option<String>,
    /// Only events from clients in this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Only events nobody has reviewed yet.
    #[arg(long)]
    pub unreviewed: bool,
    /// At most this many events (newest first).
    #[arg(long)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the tamper-evidence chain: exit 0 if intact, 1 naming the first bad row.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List blocks, newest first, with their review state.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Patterns and trends: blocks per category, day and group; top devices and names.
    Summary {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        filter: AuditFilterArgs,
        #[arg(long)]
        json: bool,
    },
    /// Export events with their chain hashes, as evidence for an incident log.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        filter: AuditFilterArgs,
        #[arg(long, value_enum)]
        format: ExportFormat,
    },
    /// Record a review of an event (append-only: a later review adds, never replaces).
    Review {
        #[command(flatten)]
        config: ConfigArg,
        /// The event's id (from `audit list`).
        id: i64,
        /// incident, false-positive or no-action.
        #[arg(long)]
        outcome: String,
        /// What was found and done.
        #[arg(long)]
        note: String,
        /// Who reviewed it (default: the login name).
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// One JSON object per line instead of tab-separated text.
    #[arg(long)]
    pub json: bool,
    /// Names to check.
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ListsCommand {
    /// Per list: entries accepted, duplicates, skipped lines by reason, load time.
    Stats {
        #[command(flatten)]
        config: ConfigArg,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load the config and every list, build the matcher, and report; exit 2 on error.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Start `tracing` on stderr at a level chosen by `-v` (or `RUST_LOG`).
///
/// hickory logs every query with the client's address at INFO; that is personal data,
/// so its crates are held at WARN unless `RUST_LOG` says otherwise.
pub fn init_tracing(verbose: u8) {
    let quiet_hickory =
        "hickory_server=warn,hickory_proto=warn,hickory_resolver=warn,hickory_net=warn";
    let default = match verbose {
        0 => format!("info,{quiet_hickory}"),
        1 => format!("debug,{quiet_hickory}"),
        _ => "trace".to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Run one command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(config) => serve(&config.config),
        Command::Check(args) => check(args),
        Command::Lists(ListsCommand::Stats { config, json }) => lists_stats(&config.config, json),
        Command::Config(ConfigCommand::Check { config }) => config_check(&config.config),
        Command::Audit(command) => audit_command(command),
    }
}

fn load_engine(path: &Path) -> Result<Engine> {
    Engine::load(path).with_context(|| format!("loading {}", path.display()))
}

fn serve(path: &Path) -> Result<ExitCode> {
    // Start-up order: load and validate everything, then bind, then serve.
    let engine = load_engine(path)?;
    crate::memory::return_freed_memory();
    for warning in engine.lists.iter().filter_map(|l| l.report.warning()) {
        tracing::warn!("{warning}");
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let audit = start_audit(&engine.config)?;
    let sink = audit.as_ref().map(|(sink, _)| sink.clone());
    runtime.block_on(async move {
        let signal = shutdown_signal()?;
        let forwarder = Forwarder::new(&engine.config.upstream)?;
        let listen = engine.config.server.listen.clone();
        let tcp_timeout = engine.config.server.tcp_timeout;
        let watch_files = engine.config.reload.watch_files;
        let shared = Arc::new(ArcSwap::from_pointee(engine));
        let reloader = Arc::new(Reloader::new(path, shared.clone()));
        let mut handler = dns::Handler::new(shared, forwarder);
        if let Some(sink) = sink {
            handler = handler.with_audit(sink);
        }
        let server = dns::start(&listen, handler, tcp_timeout).await?;
        let token = server.token();
        // Every signal handler is in place before we announce that we serve.
        spawn_reload_triggers(reloader, token.clone(), watch_files)?;
        for addr in &server.addrs {
            tracing::info!("serving DNS on {addr} (UDP and TCP)");
        }
        tokio::spawn(async move {
            signal.await;
            tracing::info!("shutting down");
            token.cancel();
        });
        server.wait().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    // The server has stopped answering: now flush and seal every recorded block.
    if let Some((sink, writer)) = audit {
        writer.stop().context("flushing the audit log")?;
        tracing::info!(events = sink.received(), "audit log flushed");
    }
    Ok(ExitCode::SUCCESS)
}

/// Open the audit store and start its writer, unless `[audit] enabled = false`.
fn start_audit(config: &crate::config::Config) -> Result<Option<(audit::Sink, audit::Writer)>> {
    let settings = &config.audit;
    if !settings.enabled {
        tracing::warn!("[audit] enabled = false: blocks are not recorded");
        return Ok(None);
    }
    let store = audit::Store::open(&config.resolve(&settings.path))?;
    tracing::info!("audit log: {}", store.path().display());
    let sink = audit::Sink::new(settings.max_pending);
    let writer = audit::Writer::start(
        store,
        sink.clone(),
        audit::writer::WriterSettings {
            window: settings.window,
            flush_interval: settings.flush_interval,
            retention_days: settings.retention_days,
            retention_by_category: settings
                .retention_days_by_category
                .iter()
                .map(|(c, d)| (c.clone(), *d.get_ref()))
                .collect(),
        },
    )?;
    Ok(Some((sink, writer)))
}

/// The audit store named by the config at `path`.
fn open_audit(path: &Path) -> Result<(crate::config::Config, audit::Store)> {
    let config = crate::config::Config::load(path)?;
    let store = audit::Store::open_existing(&config.resolve(&config.audit.path))?;
    Ok((config, store))
}

/// Turn command-line filters into a query filter, refusing unknown categories and bad
/// times with a clear message (exit 2).
fn audit_filter(
    config: &crate::config::Config,
    args: AuditFilterArgs,
    default_since: Option<std::time::Duration>,
) -> Result<audit::review::Filter> {
    let now = std::time::SystemTime::now();
    if let Some(category) = &args.category {
        if !config.categories.contains_key(category) {
            anyhow::bail!(
                "unknown category {category:?}; defined categories: {}",
                config
                    .categories
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let since = match (&args.since, default_since) {
        (Some(text), _) => Some(audit::review::parse_time(text, now)?),
        (None, Some(ago)) => Some(audit::rfc3339(audit::before(now, ago))),
        (None, None) => None,
    };
    let until = args
        .until
        .as_deref()
        .map(|t| audit::review::parse_time(t, now))
        .transpose()?;
    Ok(audit::review::Filter {
        since,
        until,
        category: args.category,
        client: args.client,
        group: args.group,
        unreviewed: args.unreviewed,
        limit: args.limit,
    })
}

/// The audit events matching command-line filters, newest first (for `list`, `export`).
fn audit_rows(path: &Path, args: AuditFilterArgs) -> Result<Vec<audit::review::EventRow>> {
    let (config, store) = open_audit(path)?;
    let filter = audit_filter(&config, args, None)?;
    Ok(audit::review::list(&store, &filter)?)
}

fn audit_command(command: AuditCommand) -> Result<ExitCode> {
    use audit::review;
    let mut out = std::io::stdout().lock();
    match command {
        AuditCommand::Verify { config } => {
            let (config, store) = open_audit(&config.config)?;
            let policy = audit::store::Retention {
                default_days: config.audit.retention_days,
                by_category: config
                    .audit
                    .retention_days_by_category
                    .iter()
                    .map(|(c, d)| (c.clone(), *d.get_ref()))
                    .collect(),
            };
            match store.verify(Some(&policy), std::time::SystemTime::now())? {
                audit::store::Verification::Intact { rows, purged, open } => {
                    writeln!(
                        out,
                        "OK: {rows} sealed rows ({purged} purged by retention), chain intact; {open} rows still open"
                    )?;
                    Ok(ExitCode::SUCCESS)
                }
                audit::store::Verification::Broken { id, seq, reason } => {
                    writeln!(out, "TAMPERED: row {id} (seq {seq}): {reason}")?;
                    Ok(ExitCode::from(1))
                }
            }
        }
        AuditCommand::List {
            config,
            filter,
            json,
        } => {
            let rows = audit_rows(&config.config, filter)?;
            if json {
                for row in &rows {
                    writeln!(out, "{}", serde_json::to_string(row)?)?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            if rows.is_empty() {
                writeln!(out, "No events match.")?;
            }
            for r in &rows {
                let who = r.device.as_deref().unwrap_or(&r.client_ip);
                let review = r
                    .review
                    .as_ref()
                    .map(|v| format!("reviewed: {} by {}", v.outcome, v.by))
                    .unwrap_or_else(|| "not reviewed".to_string());
                let locked = if r.locked { " [STATUTORY]" } else { "" };
                let via = r
                    .cname
                    .as_deref()
                    .map(|c| format!(" via {c}"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "#{:<6} {}  {:<15} {} ({}){via}  {}{locked}  ×{}  {}",
                    r.id, r.first_seen, who, r.name, r.qtype, r.categories, r.count, review
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Summary {
            config,
            filter,
            json,
        } => {
            let (config, store) = open_audit(&config.config)?;
            let filter = audit_filter(&config, filter, Some(review::SUMMARY_DEFAULT_SINCE))?;
            let summary = review::summary(&store, &filter)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            writeln!(out, "{} blocks", summary.total)?;
            let sections = [
                ("By category", &summary.by_category),
                ("By day", &summary.by_day),
                ("By group", &summary.by_group),
                ("Top devices", &summary.top_devices),
                ("Top names", &summary.top_names),
            ];
            for (title, rows) in sections {
                writeln!(out, "\n{title}:")?;
                for (key, n) in rows.iter() {
                    writeln!(out, "  {n:>8}  {key}")?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export {
            config,
            filter,
            format,
        } => {
            let rows = audit_rows(&config.config, filter)?;
            match format {
                ExportFormat::Csv => {
                    writeln!(out, "{}", review::CSV_HEADER)?;
                    for row in &rows {
                        writeln!(out, "{}", row.csv())?;
                    }
                }
                ExportFormat::Jsonl => {
                    for row in &rows {
                        writeln!(out, "{}", serde_json::to_string(row)?)?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Review {
            config,
            id,
            outcome,
            note,
            by,
        } => {
            let (_, store) = open_audit(&config.config)?;
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unknown".to_string());
            let review_id = review::add_review(
                &store,
                id,
                &outcome,
                &note,
                &by,
                std::time::SystemTime::now(),
            )?;
            writeln!(
                out,
                "Recorded review {review_id} of event {id}: {outcome} by {by}."
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reload on SIGHUP and, if enabled, when a watched file changes, until `stop`.
fn spawn_reload_triggers(
    reloader: Arc<Reloader>,
    stop: tokio_util::sync::CancellationToken,
    watch_files: bool,
) -> Result<()> {
    if watch_files {
        if let Err(error) = crate::reload::watch(reloader.clone(), stop.clone()) {
            tracing::warn!(%error, "cannot watch list files; reload with SIGHUP instead");
        }
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
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
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

fn check(args: CheckArgs) -> Result<ExitCode> {
    // Validate every name before loading anything, so a typo costs no list load.
    let names = args
        .names
        .iter()
        .map(|n| name::normalize(n).with_context(|| format!("invalid name {n:?}")))
        .collect::<Result<Vec<_>>>()?;
    let engine = load_engine(&args.config.config)?;
    let active = engine.default_active();
    let mut out = std::io::stdout().lock();
    let mut any_blocked = false;
    for name in &names {
        let verdict = engine.matcher.lookup(name, active);
        any_blocked |= verdict.is_blocked();
        let line = if args.json {
            check_json(&engine, name, &verdict).to_string()
        } else {
            check_text(&engine, name, &verdict)
        };
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::from(u8::from(any_blocked)))
}

fn check_text(engine: &Engine, name: &str, verdict: &Verdict<'_>) -> String {
    match verdict {
        Verdict::Allowed { .. } => format!("{name}\tallowed"),
        Verdict::Blocked(b) => format!(
            "{name}\tblocked\t{}\t{}:{}\t{}",
            engine.matcher.category_names(b.categories),
            b.rule.list_name(),
            b.rule.line(),
            b.rule.text()
        ),
    }
}

fn check_json(engine: &Engine, name: &str, verdict: &Verdict<'_>) -> serde_json::Value {
    match verdict {
        Verdict::Allowed { exception } => serde_json::json!({
            "name": name,
            "verdict": "allowed",
            "exception": exception.map(|r| serde_json::json!({
                "list": r.list_name(), "line": r.line(), "rule": r.text(), "matched": r.matched,
            })),
        }),
        Verdict::Blocked(b) => serde_json::json!({
            "name": name,
            "verdict": "blocked",
            "categories": b.categories.iter()
                .map(|id| engine.matcher.category(id).name.clone()).collect::<Vec<_>>(),
            "locked": b.locked,
            "list": b.rule.list_name(),
            "line": b.rule.line(),
            "rule": b.rule.text(),
            "matched": b.rule.matched,
        }),
    }
}

fn lists_stats(path: &Path, json: bool) -> Result<ExitCode> {
    let engine = load_engine(path)?;
    let mut out = std::io::stdout().lock();
    if json {
        let doc = serde_json::json!({
            "lists": engine.lists,
            "matcher": engine.matcher.stats(),
            "matcher_heap_bytes": engine.matcher.heap_bytes(),
            "build_ms": engine.build_time.as_secs_f64() * 1000.0,
        });
        writeln!(out, "{doc:#}")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<32} {:<14} {:>9} {:>6} {:>8} {:>8}  FILE",
        "LIST", "CATEGORY", "ACCEPTED", "DUPS", "SKIPPED", "LOAD ms"
    )?;
    for list in &engine.lists {
        let r = &list.report;
        writeln!(
            out,
            "{:<32} {:<14} {:>9} {:>6} {:>8} {:>8.1}  {}",
            list.name,
            list.category.as_deref().unwrap_or("(allow)"),
            r.accepted,
            r.duplicates,
            r.skipped_total(),
            r.load_time.as_secs_f64() * 1000.0,
            r.path.display()
        )?;
        for (reason, tally) in &r.skipped {
            let examples = tally
                .examples
                .iter()
                .map(|e| format!("{}:{} {:?}", r.path.display(), e.line, e.text))
                .collect::<Vec<_>>()
                .join(", ");
            writeln!(out, "    skipped {:>7}  {reason}: {examples}", tally.count)?;
        }
        if let Some(warning) = r.warning() {
            writeln!(out, "    WARNING: {warning}")?;
        }
    }
    let stats = engine.matcher.stats();
    writeln!(
        out,
        "\n{} rules in {} lists: {} distinct names, {} hashed, {} shadowed by an earlier list; \
         matcher {:.1} MiB ({:.1} bytes/rule); built in {:.0} ms",
        stats.rules,
        engine.lists.len(),
        stats.names,
        stats.hashed,
        stats.shadowed,
        engine.matcher.heap_bytes() as f64 / (1024.0 * 1024.0),
        engine.matcher.heap_bytes() as f64 / stats.rules.max(1) as f64,
        engine.build_time.as_secs_f64() * 1000.0
    )?;
    Ok(ExitCode::SUCCESS)
}

fn config_check(path: &Path) -> Result<ExitCode> {
    let engine = load_engine(path)?;
    let stats = engine.matcher.stats();
    let warnings: Vec<String> = engine
        .lists
        .iter()
        .filter_map(|l| l.report.warning())
        .collect();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "{}: OK: {} categories ({} locked), {} lists, {} rules, {} groups; built in {:.0} ms",
        path.display(),
        engine.matcher.categories().len(),
        engine.matcher.locked().iter().count(),
        engine.lists.len(),
        stats.rules,
        engine.config.groups.len().max(1),
        engine.build_time.as_secs_f64() * 1000.0
    );
    Ok(ExitCode::SUCCESS)
}
