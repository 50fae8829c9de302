//! The command line: argument definitions and one function per command.
//!
//! Commands print results on stdout and problems on stderr. Exit codes: 0 success (or
//! "all allowed" for `check`), 1 "something is blocked" for `check`, 2 any error.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::audit;
use crate::engine::Engine;
use crate::filter::Verdict;
use crate::name;

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
    /// Ask the running Warden to reload its config and lists now (over the admin API).
    Reload(ConfigArg),
    /// Write the review report for the annual filtering review and the governors.
    Report(crate::cli_report::ReportArgs),
    /// Ask the running Warden to check its filtering now: every group's categories, safe
    /// search and circumvention answers. Exit 1 if any check fails.
    Selftest(ConfigArg),
    /// Manage who can sign in to the dashboard (`[[users]]` in the config file).
    #[command(subcommand)]
    User(UserCommand),
    /// Enrolled devices (`[[devices]]`) for DNS over TLS and HTTPS, and their profiles.
    #[command(subcommand)]
    Device(crate::cli_device::DeviceCommand),
    /// The trust's central store (`[fleet]`).
    #[command(subcommand)]
    Fleet(FleetCommand),
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Check every site's chain in the central store: exit 0 if all are intact, 1 naming
    /// each site and row at fault (a missing, changed or cut-off row).
    Verify {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Serve the trust's dashboard over the central store (every site's events, each
    /// user scoped to their `sites`), without DNS, until stopped.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The trust's shared policy: show, history, diff, and allow, deny and list entries.
    #[command(subcommand)]
    Policy(crate::cli_policy::PolicyCommand),
    /// Write the trust's review report for every site (from the central store) as HTML,
    /// and optionally PDF.
    Report(crate::cli_report::ReportArgs),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user, or reset an existing user's role and password. Prompts for the
    /// password (twice) on a terminal; otherwise reads one line from standard input.
    Add {
        /// The name they sign in with.
        name: String,
        /// `governor` sees the overview and the review report in counts; `lead` reviews
        /// events; `admin` also manages allow entries.
        #[arg(long, value_enum, default_value = "lead")]
        role: RoleArg,
        /// On the trust's fleet dashboard, a site this user sees (repeat for several);
        /// without any, every site. Given on a reset, replaces the user's sites.
        #[arg(long = "site", value_name = "SITE")]
        sites: Vec<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove a user.
    Remove {
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the users and their roles.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Set up two-factor sign-in for a user: prints the enrolment URI, a QR code to scan
    /// with an authenticator app, and ten single-use recovery codes (shown only now).
    /// Setting it up again replaces the secret and the codes, and ends their sessions.
    #[command(name = "2fa")]
    TwoFactor {
        name: String,
        /// Remove the user's second factor instead.
        #[arg(long)]
        remove: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    Governor,
    Lead,
    Admin,
}

/// Which audit events a command looks at.
#[derive(Debug, Args)]
pub struct AuditFilterArgs {
    /// Only events seen since: a duration (7d, 12h), a date (2026-11-01, from midnight in
    /// `[server] timezone`) or an RFC 3339 time.
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
    /// Starts from the newest signed checkpoint (recording a new one when intact).
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// Walk the whole chain from seq 1, and check every checkpoint against it (finds
        /// edits before the newest checkpoint, which the quick verify skips).
        #[arg(long)]
        full: bool,
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

pub use crate::cli_args::ConfigArg;

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// One JSON object per line instead of tab-separated text.
    #[arg(long)]
    pub json: bool,
    /// Decide as for this client address (its group; default: the default group).
    #[arg(long)]
    pub client: Option<std::net::IpAddr>,
    /// Decide as for this device MAC (`[[clients]] mac` entries).
    #[arg(long)]
    pub mac: Option<crate::config::Mac>,
    /// Decide as for this signed-in user: their group by `[[users_to_groups]]`, from the
    /// directory file's groups and any given with `--groups`.
    #[arg(long)]
    pub user: Option<String>,
    /// The user's directory groups, comma-separated, as a sign-in would carry them.
    #[arg(long, requires = "user", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Decide as at this time: "2026-11-23T10:00" (local, in the configured time zone) or RFC
    /// 3339 with an offset (default: now).
    #[arg(long)]
    pub at: Option<String>,
    /// Names to check.
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ListsCommand {
    /// Download every list that has a url now (conditional GET), validate, and cache it;
    /// then ask the running Warden, if any, to reload. Exit 1 if any list failed.
    Update {
        #[command(flatten)]
        config: ConfigArg,
    },
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
    // A log line that cannot be written (stderr closed: the journal restarted, or the
    // parent that read our output exited) is dropped. tracing's default is to report it
    // with eprintln!, which panics on a closed stderr and would take down whatever task
    // was logging, the shutdown path included.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Run one command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(config) => crate::serve::run(&config.config),
        Command::Check(args) => check(args),
        Command::Lists(ListsCommand::Stats { config, json }) => lists_stats(&config.config, json),
        Command::Lists(ListsCommand::Update { config }) => lists_update(&config.config),
        Command::Reload(config) => reload(&config.config),
        Command::Selftest(config) => crate::cli_selftest::run(&config.config),
        Command::Report(args) => crate::cli_report::run(args),
        Command::Config(ConfigCommand::Check { config }) => config_check(&config.config),
        Command::Audit(command) => audit_command(command),
        Command::User(command) => user_command(command),
        Command::Device(command) => crate::cli_device::run(command),
        Command::Fleet(FleetCommand::Verify { config }) => {
            fleet_verify(&config.config, &mut std::io::stdout().lock())
        }
        Command::Fleet(FleetCommand::Serve { config }) => crate::serve_fleet::run(&config.config),
        Command::Fleet(FleetCommand::Policy(command)) => crate::cli_policy::run(command),
        Command::Fleet(FleetCommand::Report(args)) => crate::cli_report::run_fleet(args),
    }
}

fn user_command(command: UserCommand) -> Result<ExitCode> {
    match command {
        UserCommand::Add {
            name,
            role,
            sites,
            config,
        } => {
            let role = match role {
                RoleArg::Governor => crate::config::Role::Governor,
                RoleArg::Lead => crate::config::Role::Lead,
                RoleArg::Admin => crate::config::Role::Admin,
            };
            crate::config::check_user_name(&name).map_err(anyhow::Error::msg)?;
            let password = crate::users::read_password(&name)?;
            let new = crate::users::add(&config.config, &name, role, &password, &sites)?;
            let done = if new { "added" } else { "updated" };
            println!(
                "{done} {name} ({}) in {}; a running Warden picks it up at its next reload",
                role.as_str(),
                config.config.display()
            );
        }
        UserCommand::Remove { name, config } => {
            crate::users::remove(&config.config, &name)?;
            println!("removed {name} from {}", config.config.display());
        }
        UserCommand::List { config } => {
            let loaded = crate::config::Config::load(&config.config)?;
            if loaded.users.is_empty() {
                println!("no users yet: add one with `warden user add NAME --role lead`");
            }
            for user in &loaded.users {
                let factor = match &user.totp_secret {
                    Some(_) => "two-factor",
                    None => "password only",
                };
                println!("{}\t{}\t{factor}", user.name.get_ref(), user.role.as_str());
            }
        }
        UserCommand::TwoFactor {
            name,
            remove,
            config,
        } => crate::users::two_factor(&config.config, &name, remove)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn load_engine(path: &Path) -> Result<Engine> {
    Engine::load(path).with_context(|| format!("loading {}", path.display()))
}

/// The audit store named by the config at `path`.
/// `warden fleet verify`: one line per site; exit 1 if any is not intact.
fn fleet_verify(path: &Path, out: &mut impl Write) -> Result<ExitCode> {
    let config = crate::config::Config::load(path)?;
    let Some(settings) = crate::fleet::Settings::from_config(&config)? else {
        anyhow::bail!(
            "{}: no [fleet] section: there is no central store to verify",
            path.display()
        );
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let verdicts = runtime.block_on(async {
        let client = settings.connect().await?;
        crate::fleet::verify::verify(&client, &settings).await
    })?;
    if verdicts.is_empty() {
        writeln!(out, "no site has shipped rows to {} yet", settings.target)?;
    }
    let mut intact = true;
    for v in &verdicts {
        match &v.problem {
            None => writeln!(out, "site {}: intact ({} rows)", v.site, v.rows)?,
            Some(problem) => {
                intact = false;
                writeln!(
                    out,
                    "site {}: NOT INTACT after {} rows: {problem}",
                    v.site, v.rows
                )?;
            }
        }
    }
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

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
                config.category_names()
            );
        }
    }
    // A date is a day in the zone the times are shown in.
    let tz = crate::localtime::zone(config);
    let parse =
        |text: &str| audit::review::parse_time(&crate::localtime::local_dates(text, tz), now);
    let since = match (&args.since, default_since) {
        (Some(text), _) => Some(parse(text)?),
        (None, Some(ago)) => Some(audit::rfc3339(audit::before(now, ago))),
        (None, None) => None,
    };
    let until = args.until.as_deref().map(parse).transpose()?;
    Ok(audit::review::Filter {
        since,
        until,
        category: args.category,
        client: args.client,
        group: args.group,
        unreviewed: args.unreviewed,
        limit: args.limit,
        ..Default::default()
    })
}

/// The audit store, the query for command-line filters (checked: an unknown category or
/// a bad time fails here, before anything is printed), and the zone times are shown in.
fn audit_query(
    path: &Path,
    args: AuditFilterArgs,
) -> Result<(audit::Store, audit::review::Filter, chrono_tz::Tz)> {
    let (config, store) = open_audit(path)?;
    let filter = audit_filter(&config, args, None)?;
    Ok((store, filter, crate::localtime::zone(&config)))
}

/// Call `f` on each audit event matching `filter`, newest first, a chunk at a time (for
/// `list`, `export`: memory stays bounded however many rows match). Returns how many.
fn each_audit_row(
    store: &audit::Store,
    filter: &audit::review::Filter,
    mut f: impl FnMut(&audit::review::EventRow) -> Result<()>,
) -> Result<u64> {
    let mut rows = 0u64;
    let mut failed = None;
    let read = audit::review::each(store, filter, |row| {
        rows += 1;
        f(&row).map_err(|e| {
            let message = e.to_string();
            failed = Some(e);
            audit::AuditError::Invalid(message)
        })
    });
    if let Some(error) = failed {
        return Err(error);
    }
    read?;
    Ok(rows)
}

/// One line of `audit list`: when (in `tz`, with its offset), who, what, why, how often,
/// and whether it has been reviewed.
fn list_line(r: &audit::review::EventRow, tz: chrono_tz::Tz) -> String {
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
    format!(
        "#{:<6} {}  {:<15} {} ({}){via}  {}{locked}  ×{}  {}",
        r.id,
        crate::localtime::show(&r.first_seen, tz),
        who,
        r.name,
        r.qtype,
        r.categories,
        r.count,
        review
    )
}

/// The summary for a reader: its days are days in `[server] timezone` (the JSON keeps
/// UTC days).
fn summary_in_zone(
    summary: audit::review::Summary,
    store: &audit::Store,
    filter: &audit::review::Filter,
    config: &crate::config::Config,
) -> Result<audit::review::Summary> {
    let by_day = audit::review::by_local_day(store, filter, crate::localtime::zone(config))?;
    Ok(audit::review::Summary { by_day, ..summary })
}

fn audit_command(command: AuditCommand) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        AuditCommand::Verify { config, full } => audit_verify(&config.config, full, &mut out),
        AuditCommand::List {
            config,
            filter,
            json,
        } => audit_list(&config.config, filter, json, &mut out),
        AuditCommand::Summary {
            config,
            filter,
            json,
        } => audit_summary(&config.config, filter, json, &mut out),
        AuditCommand::Export {
            config,
            filter,
            format,
        } => audit_export(&config.config, filter, format, &mut out),
        AuditCommand::Review {
            config,
            id,
            outcome,
            note,
            by,
        } => audit_review(&config.config, id, &outcome, &note, by, &mut out),
    }
}

/// `warden audit verify [--full]`: exit 0 if the chain (and every checkpoint it met) is
/// intact, 1 naming the first bad row or checkpoint. Each line says which walk ran.
fn audit_verify(path: &Path, full: bool, out: &mut impl Write) -> Result<ExitCode> {
    use audit::checkpoint::Mode;
    use audit::store::Verification;
    let (config, store) = open_audit(path)?;
    let policy = audit::store::Retention::from_config(&config.audit);
    let mode = if full { Mode::Full } else { Mode::Incremental };
    let report =
        audit::checkpoint::verify(&store, mode, Some(&policy), std::time::SystemTime::now())?;
    for c in &report.untrusted {
        writeln!(
            out,
            "TAMPERED: checkpoint {} (seq {}, signed {}): its MAC does not match this log's \
             key (forged or edited, or the key file was replaced); not trusted",
            c.id, c.seq, c.at
        )?;
    }
    let walk = match (&report.from, mode) {
        (Some(c), _) => format!("incremental, from checkpoint {} at seq {}", c.id, c.seq),
        (None, Mode::Full) => "full, from seq 1".to_string(),
        (None, Mode::Incremental) => "full, from seq 1: no trusted checkpoint yet".to_string(),
    };
    match &report.result {
        Verification::Intact { rows, purged, open } => {
            writeln!(
                out,
                "OK ({walk}): {rows} sealed rows checked ({purged} purged by retention), chain \
                 intact to seq {}; {open} rows still open",
                report.head
            )?;
            if let Some(seq) = report.recorded {
                writeln!(out, "checkpoint recorded at seq {seq}")?;
            }
        }
        Verification::Broken { id, seq, reason } => {
            writeln!(out, "TAMPERED ({walk}): row {id} (seq {seq}): {reason}")?;
        }
        Verification::Checkpoint {
            checkpoint,
            seq,
            reason,
        } => {
            writeln!(
                out,
                "TAMPERED ({walk}): checkpoint {checkpoint} (seq {seq}): {reason}"
            )?;
        }
    }
    if let Some(note) = &report.note {
        writeln!(out, "note: {note}")?;
    }
    Ok(if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `warden audit list`: one line (or JSON object) per event, newest first.
fn audit_list(
    path: &Path,
    filter: AuditFilterArgs,
    json: bool,
    out: &mut impl Write,
) -> Result<ExitCode> {
    let (store, filter, tz) = audit_query(path, filter)?;
    let rows = each_audit_row(&store, &filter, |row| {
        if json {
            writeln!(out, "{}", serde_json::to_string(row)?)?;
        } else {
            writeln!(out, "{}", list_line(row, tz))?;
        }
        Ok(())
    })?;
    if rows == 0 && !json {
        writeln!(out, "No events match.")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `warden audit summary`: blocks per category, day and group; top devices and names.
fn audit_summary(
    path: &Path,
    filter: AuditFilterArgs,
    json: bool,
    out: &mut impl Write,
) -> Result<ExitCode> {
    use audit::review;
    let (config, store) = open_audit(path)?;
    let filter = audit_filter(&config, filter, Some(review::SUMMARY_DEFAULT_SINCE))?;
    let summary = review::summary(&store, &filter)?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let summary = summary_in_zone(summary, &store, &filter, &config)?;
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

/// `warden audit export`: the events with their chain hashes, as CSV or JSON lines.
fn audit_export(
    path: &Path,
    filter: AuditFilterArgs,
    format: ExportFormat,
    out: &mut impl Write,
) -> Result<ExitCode> {
    let (store, filter, _) = audit_query(path, filter)?;
    if let ExportFormat::Csv = format {
        writeln!(out, "{}", audit::review::CSV_HEADER)?;
    }
    each_audit_row(&store, &filter, |row| {
        match format {
            ExportFormat::Csv => writeln!(out, "{}", row.csv())?,
            ExportFormat::Jsonl => writeln!(out, "{}", serde_json::to_string(row)?)?,
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `warden audit review`: record a review (`outcome`, `note`) of event `id` by `by`,
/// or by the login name.
fn audit_review(
    path: &Path,
    id: i64,
    outcome: &str,
    note: &str,
    by: Option<String>,
    out: &mut impl Write,
) -> Result<ExitCode> {
    let (_, store) = open_audit(path)?;
    let by = by
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".to_string());
    let review_id =
        audit::review::add_review(&store, id, outcome, note, &by, std::time::SystemTime::now())?;
    writeln!(
        out,
        "Recorded review {review_id} of event {id}: {outcome} by {by}."
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `warden reload`: POST /reload to the admin listener named in the config.
fn reload(path: &Path) -> Result<ExitCode> {
    let config = crate::config::Config::load(path)?;
    let runtime = crate::cli_daemon::current_thread_runtime()?;
    let reply = runtime.block_on(ask_daemon_to_reload(&config))?;
    let ok = reply.get("ok").and_then(|v| v.as_bool()).unwrap_or(false);
    if ok {
        println!(
            "reloaded: snapshot {} with {} rules in {} ms",
            reply["generation"], reply["rules"], reply["duration_ms"]
        );
        for line in restart_lines(&reply) {
            println!("{line}");
        }
        Ok(ExitCode::SUCCESS)
    } else {
        let error = reply
            .get("error")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown error");
        eprintln!("warden: reload rejected, the previous rules stay in force: {error}");
        Ok(ExitCode::from(2))
    }
}

/// A line for each setting a reload's answer says only a restart applies.
fn restart_lines(reply: &serde_json::Value) -> Vec<String> {
    let settings = reply["restart_needed"].as_array().into_iter().flatten();
    settings
        .filter_map(|s| s.as_str())
        .map(|setting| {
            format!(
                "restart needed for {setting}: the running Warden keeps the value it started \
                 with until it is restarted"
            )
        })
        .collect()
}

/// POST /reload with the admin token; the daemon's JSON reply.
async fn ask_daemon_to_reload(config: &crate::config::Config) -> Result<serde_json::Value> {
    anyhow::ensure!(
        config.admin.enabled,
        "[admin] enabled = false: reload with SIGHUP instead"
    );
    crate::cli_daemon::post(config, "/reload").await
}

/// `warden lists update`: fetch every URL list now, with progress and a result table.
fn lists_update(path: &Path) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let config = crate::config::Config::load(path)?;
    let list_sources = crate::sources::Source::all(&config);
    if list_sources.is_empty() {
        println!("no list in {} has a url", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let fetcher = crate::sources::Fetcher::new(&config)?;
    let runtime = crate::cli_daemon::current_thread_runtime()?;
    let terminal = std::io::stderr().is_terminal();
    let rows: Vec<UpdateRow> = list_sources
        .iter()
        .map(|source| update_list(&runtime, &fetcher, source, terminal))
        .collect();
    let failed = rows.iter().any(|r| r.failed);
    let mut out = std::io::stdout().lock();
    write_update_table(&mut out, &rows)?;
    if failed {
        writeln!(out, "failed lists keep their last good copy")?;
    }
    if rows.iter().any(|r| r.updated) {
        let reply = runtime.block_on(ask_daemon_to_reload(&config));
        write_reload_reply(&mut out, reply)?;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One list's line in the `lists update` table.
struct UpdateRow {
    /// List, result, entries, bytes, time, note.
    cells: [String; 6],
    /// New content was accepted.
    updated: bool,
    failed: bool,
}

/// Fetch one list's source, with a progress bar on a terminal and a line before and
/// after otherwise.
fn update_list(
    runtime: &tokio::runtime::Runtime,
    fetcher: &crate::sources::Fetcher,
    source: &crate::sources::Source,
    terminal: bool,
) -> UpdateRow {
    use crate::sources::Fetched;
    let bar = progress_bar(terminal, &source.name);
    if !terminal {
        eprintln!("{}: fetching {}", source.name, source.shown_url());
    }
    let started = std::time::Instant::now();
    let result = runtime.block_on(fetcher.fetch(source, &|bytes, total| {
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(bytes);
    }));
    bar.finish_and_clear();
    let secs = format!("{:.1}s", started.elapsed().as_secs_f64());
    let name = source.name.clone();
    let row = match result {
        Ok(Fetched::Updated { entries, bytes }) => UpdateRow {
            cells: [
                name,
                "updated".into(),
                entries.to_string(),
                bytes.to_string(),
                secs,
                String::new(),
            ],
            updated: true,
            failed: false,
        },
        Ok(Fetched::NotModified { entries }) => UpdateRow {
            cells: [
                name,
                "not modified".into(),
                entries.to_string(),
                "0".into(),
                secs,
                String::new(),
            ],
            updated: false,
            failed: false,
        },
        Err(error) => UpdateRow {
            cells: [
                name,
                "FAILED".into(),
                source.meta().entries.to_string(),
                "0".into(),
                secs,
                error.to_string(),
            ],
            updated: false,
            failed: true,
        },
    };
    if !terminal {
        eprintln!("{}: {}", row.cells[0], row.cells[1]);
    }
    row
}

fn write_update_table(out: &mut impl Write, rows: &[UpdateRow]) -> Result<()> {
    writeln!(
        out,
        "{:<20} {:<13} {:>10} {:>12} {:>7}  note",
        "list", "result", "entries", "bytes", "time"
    )?;
    for UpdateRow { cells, .. } in rows {
        let [name, result, entries, bytes, secs, note] = cells;
        writeln!(
            out,
            "{name:<20} {result:<13} {entries:>10} {bytes:>12} {secs:>7}  {note}"
        )?;
    }
    Ok(())
}

/// What the running Warden said to the reload after an update (or that none answered).
fn write_reload_reply(out: &mut impl Write, reply: Result<serde_json::Value>) -> Result<()> {
    match reply {
        Ok(reply) if reply["ok"].as_bool() == Some(true) => writeln!(
            out,
            "the running Warden reloaded (snapshot {})",
            reply["generation"]
        )?,
        Ok(reply) => writeln!(
            out,
            "the running Warden refused the reload: {}",
            reply["error"]
        )?,
        Err(error) => writeln!(
            out,
            "not reloaded ({error:#}); a running Warden uses the new copies at its next reload"
        )?,
    }
    Ok(())
}

fn progress_bar(terminal: bool, name: &str) -> indicatif::ProgressBar {
    if !terminal {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:<20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(name.to_string());
    bar
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    // Validate every name before loading anything, so a typo costs no list load.
    let names = args
        .names
        .iter()
        .map(|n| name::key_from_text(n).with_context(|| format!("invalid name {n:?}")))
        .collect::<Result<Vec<_>>>()?;
    let engine = load_engine(&args.config.config)?;
    let policy = &engine.policy;
    let at = match &args.at {
        Some(text) => parse_at(text, policy.tz)?,
        None => chrono::Utc::now(),
    };
    let session = args.user.as_ref().map(|user| crate::identity::Session {
        user: user.clone(),
        groups: args.groups.iter().map(|g| g.trim().to_string()).collect(),
        mac: None,
        until: std::time::SystemTime::now() + std::time::Duration::from_secs(60),
        source: crate::identity::Source::File,
        id: None,
    });
    let who = match (args.client, args.mac, &session) {
        (None, None, None) => policy.default_who(),
        (client, mac, session) => policy.identify(&crate::policy::Seen {
            address: client,
            mac,
            session: session.as_ref(),
            device_id: None,
        }),
    };
    let (active, open) = policy.active_at(who.group, at);
    let asked_for_someone = args.client.is_some() || args.mac.is_some() || args.user.is_some();
    let context = (asked_for_someone || args.at.is_some()).then_some(CheckContext {
        who,
        open: &open,
        user: args
            .user
            .as_deref()
            .map(|u| (u, policy.directory_groups(u))),
    });
    let checker = Checker {
        engine: &engine,
        who,
        active,
        open: &open,
        context,
        json: args.json,
    };
    let mut out = std::io::stdout().lock();
    let mut any_blocked = false;
    for name in &names {
        let (line, blocked) = checker.line(name);
        any_blocked |= blocked;
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::from(u8::from(any_blocked)))
}

/// What `check` decides names by: the snapshot, who asks, and what applies to them then.
struct Checker<'a> {
    engine: &'a Engine,
    who: crate::policy::Who<'a>,
    active: crate::filter::CategorySet,
    open: &'a [&'a crate::policy::schedule::Window],
    /// For `--client/--at`, said after each text line.
    context: Option<CheckContext<'a>>,
    json: bool,
}

impl Checker<'_> {
    /// The line `check` prints for `name`, and whether `name` is blocked.
    fn line(&self, name: &str) -> (String, bool) {
        let verdict = match self.engine.matcher.lookup(name, self.active) {
            Verdict::Blocked(b) if self.who.group.allows(name, &b) => {
                Verdict::Allowed { exception: None }
            }
            other => other,
        };
        // The group's own deny lists, named by their own category.
        if let Some(b) = self.who.group.denies(name, &verdict) {
            return (self.group_deny_line(name, &b), true);
        }
        let special = crate::policy::special(name).filter(|_| {
            self.engine
                .matcher
                .category_id(crate::policy::CIRCUMVENTION)
                .is_some_and(|id| self.active.contains(id))
        });
        let blocked = verdict.is_blocked() || special.is_some();
        let line = if self.json {
            self.json_line(name, &verdict, special)
        } else if let Some(kind) = special {
            self.special_line(name, kind)
        } else {
            self.verdict_line(name, &verdict)
        };
        (line, blocked)
    }

    /// `name` is on one of the group's own deny lists.
    fn group_deny_line(&self, name: &str, b: &crate::filter::Block<'_>) -> String {
        if self.json {
            return serde_json::json!({
                "name": name, "verdict": "blocked", "categories": [crate::policy::GROUP_DENY],
                "locked": false, "list": b.rule.list_name(), "line": b.rule.line(),
                "rule": b.rule.text(), "group": self.who.group.name,
            })
            .to_string();
        }
        let mut line = format!(
            "{name}\tblocked\t{}\t{}:{}\t{}",
            crate::policy::GROUP_DENY,
            b.rule.list_name(),
            b.rule.line(),
            b.rule.text()
        );
        if let Some(ctx) = &self.context {
            line.push_str(&ctx.suffix(None));
        }
        line
    }

    /// The JSON line of `name`: its verdict, or the built-in `special` answer.
    fn json_line(
        &self,
        name: &str,
        verdict: &Verdict<'_>,
        special: Option<crate::policy::Special>,
    ) -> String {
        let mut value = check_json(self.engine, name, verdict);
        value["group"] = self.who.group.name.clone().into();
        value["group_by"] = self.who.group_from.describe().into();
        if let Some(kind) = special {
            value["verdict"] = "blocked".into();
            value["categories"] = serde_json::json!([crate::policy::CIRCUMVENTION]);
            value["list"] = "built-in".into();
            value["answer"] = format!("{kind:?}").into();
        }
        value["schedule"] = self
            .open
            .iter()
            .map(|w| w.label.clone())
            .collect::<Vec<_>>()
            .into();
        value.to_string()
    }

    /// `name` is a built-in circumvention name answered by Warden itself.
    fn special_line(&self, name: &str, kind: crate::policy::Special) -> String {
        let mut line = format!(
            "{name}\tblocked\t{}\tbuilt-in\t{kind:?}",
            crate::policy::CIRCUMVENTION
        );
        if let Some(ctx) = &self.context {
            line.push_str(&ctx.suffix(None));
        }
        line
    }

    /// The text line of `name`'s verdict (or its safe-search rewrite).
    fn verdict_line(&self, name: &str, verdict: &Verdict<'_>) -> String {
        let group = self.who.group;
        let mut line = check_text(self.engine, name, verdict);
        if let Some(target) =
            crate::policy::safe_search::target(name, group.safe_search, group.youtube)
                .filter(|_| !verdict.is_blocked())
        {
            line = format!("{name}\tsafe-search\t{target}");
        }
        if let Some(ctx) = &self.context {
            line.push_str(&ctx.suffix(verdict.block().map(|b| b.categories)));
        }
        line
    }
}

/// For `check --client/--at`: the group, and the schedule windows that decided.
struct CheckContext<'a> {
    who: crate::policy::Who<'a>,
    open: &'a [&'a crate::policy::schedule::Window],
    /// `--user`: the name, and their groups in the directory file.
    user: Option<(&'a str, &'a [String])>,
}

impl CheckContext<'_> {
    fn suffix(&self, blocked_by: Option<crate::filter::CategorySet>) -> String {
        let mut text = format!("\tgroup {}", self.who.group.name);
        if let Some((user, listed)) = self.user {
            text.push_str(&format!(
                " ({})\tuser {user}",
                self.who.group_from.describe()
            ));
            if !listed.is_empty() {
                text.push_str(&format!(" (directory: {})", listed.join(", ")));
            }
        }
        let deciding: Vec<&str> = self
            .open
            .iter()
            .filter(|w| match blocked_by {
                Some(set) => w.block.0 & set.0 != 0,
                None => !w.allow.is_empty(),
            })
            .map(|w| w.label.as_str())
            .collect();
        if !deciding.is_empty() {
            text.push_str(&format!("\tschedule {}", deciding.join("; ")));
        }
        text
    }
}

/// `--at`: RFC 3339 with an offset, or a local date and time in the config's time zone.
fn parse_at(text: &str, tz: chrono_tz::Tz) -> Result<chrono::DateTime<chrono::Utc>> {
    use chrono::TimeZone;
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let naive = ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .with_context(|| format!("--at {text:?}: expected a time like 2026-11-23T10:00"))?;
    let local = tz
        .from_local_datetime(&naive)
        .earliest()
        .with_context(|| format!("--at {text:?} does not exist in {tz} (the clocks skip it)"))?;
    Ok(local.with_timezone(&chrono::Utc))
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
