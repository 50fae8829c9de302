//! `warden fleet policy …`: the trust's shared policy from the command line: history,
//! the state at a version or a past time, the difference between two versions, and
//! changes (allow, deny and list entries), each with its author and reason.
//!
//! A change is checked against the trust's own config (the file given with `--config`)
//! before it is stored, by the same checks as the trust dashboard's ([`crate::fleet::edit`]).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::config::{Config, Format};
use crate::fleet::policy::{self, Change, State};
use crate::fleet::{edit, Settings};

pub use crate::cli_args::ConfigArg;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The policy in force: every entry with its scope, version, author and reason.
    Show {
        /// As it stood at this time: a date (its midnight in `[server] timezone`), an
        /// RFC 3339 time, or a duration ago (30d).
        #[arg(long, conflicts_with = "version")]
        at: Option<String>,
        /// As it stood after this version.
        #[arg(long)]
        version: Option<i64>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Every change, oldest first: version, time, author, what changed and why.
    History {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// What differs between the policy after version FROM and after version TO.
    Diff {
        from: i64,
        to: i64,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Allow entries (for names no locked list blocks).
    #[command(subcommand)]
    Allow(EntryCommand),
    /// Deny entries.
    #[command(subcommand)]
    Deny(EntryCommand),
    /// Block lists downloaded by every site from a URL.
    #[command(subcommand)]
    List(ListCommand),
    /// The trust's categories and groups: `set FILE` (a file of `[categories.NAME]` and
    /// `[groups.NAME]` tables, as in a config, replacing the previous settings) or
    /// `clear`. Sites may add their own; they cannot define these again.
    Settings {
        #[arg(value_enum)]
        action: SettingsAction,
        /// The settings file (for `set`).
        file: Option<std::path::PathBuf>,
        #[command(flatten)]
        why: Why,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Whether site admins may add allow entries of their own on their dashboard (on,
    /// until a change says off); while off, a site's own entries are not applied.
    LocalAllow {
        #[arg(value_enum)]
        setting: OnOff,
        /// Only at this site (repeat for several); without any, the trust-wide setting
        /// (a site's own setting, where given, wins).
        #[arg(long = "site", value_name = "SITE")]
        sites: Vec<String>,
        #[command(flatten)]
        why: Why,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SettingsAction {
    Set,
    Clear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// Who makes a change and why: both are recorded with it, for ever.
#[derive(Debug, Args)]
pub struct Why {
    /// Why (recorded with the change; shown in history and at each site).
    #[arg(long)]
    reason: String,
    /// Who makes the change (a name the trust's leads will recognise).
    #[arg(long)]
    by: String,
}

#[derive(Debug, Subcommand)]
pub enum EntryCommand {
    /// Add an entry for NAME (and its subdomains).
    Add {
        name: String,
        /// For deny entries for every group: the category it is blocked under (the
        /// groups that block that category block it).
        #[arg(long)]
        category: Option<String>,
        /// Only at this site (repeat for several); without any, at every site.
        #[arg(long = "site", value_name = "SITE")]
        sites: Vec<String>,
        /// Only for this group (repeat for several); without any, every group.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        #[command(flatten)]
        why: Why,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove the entry for NAME.
    Remove {
        name: String,
        #[command(flatten)]
        why: Why,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ListCommand {
    /// Add a block list every site downloads from URL.
    Add {
        name: String,
        #[arg(long)]
        category: String,
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "auto", value_parser = parse_format)]
        format: Format,
        /// A download with fewer entries is refused.
        #[arg(long, default_value_t = 0)]
        min_entries: u64,
        #[arg(long = "site", value_name = "SITE")]
        sites: Vec<String>,
        #[command(flatten)]
        why: Why,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove the list NAME.
    Remove {
        name: String,
        #[command(flatten)]
        why: Why,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// A list format as the config writes it (`hosts`, `adblock`, …).
fn parse_format(text: &str) -> Result<Format, String> {
    use serde::de::IntoDeserializer;
    use serde::Deserialize;
    Format::deserialize(text.into_deserializer())
        .map_err(|e: serde::de::value::Error| e.to_string())
}

/// Run one `warden fleet policy` command.
pub fn run(command: PolicyCommand) -> Result<ExitCode> {
    match command {
        PolicyCommand::Show {
            at,
            version,
            config,
        } => show(&config.config, at.as_deref(), version),
        PolicyCommand::History { config } => history(&config.config),
        PolicyCommand::Diff { from, to, config } => diff(&config.config, from, to),
        PolicyCommand::Allow(command) => entry(true, command),
        PolicyCommand::Deny(command) => entry(false, command),
        PolicyCommand::List(command) => list(command),
        PolicyCommand::Settings {
            action,
            file,
            why,
            config,
        } => {
            let toml = match (action, file) {
                (SettingsAction::Set, Some(file)) => Config::local_text(&file)?,
                (SettingsAction::Set, None) => bail!("settings set needs the settings file"),
                (SettingsAction::Clear, None) => String::new(),
                (SettingsAction::Clear, Some(_)) => bail!("settings clear takes no file"),
            };
            change_of(&config, &why, Change::Settings { toml })
        }
        PolicyCommand::LocalAllow {
            setting,
            sites,
            why,
            config,
        } => change(
            &config.config,
            &why,
            Change::LocalAllow {
                allowed: setting == OnOff::On,
                sites,
            },
        ),
    }
}

/// `allow …` (`allow`: true) or `deny …`.
fn entry(allow: bool, command: EntryCommand) -> Result<ExitCode> {
    match command {
        EntryCommand::Add {
            name,
            category,
            sites,
            groups,
            why,
            config,
        } => {
            let name = domain(&name)?;
            let change = match allow {
                true if category.is_some() => bail!(
                    "--category is for deny entries: an allow entry holds for every category \
                     it is not locked in"
                ),
                true => Change::Allow {
                    name,
                    sites,
                    groups,
                },
                false => Change::Deny {
                    name,
                    category,
                    sites,
                    groups,
                },
            };
            change_of(&config, &why, change)
        }
        EntryCommand::Remove { name, why, config } => {
            let name = domain(&name)?;
            let change = match allow {
                true => Change::Unallow { name },
                false => Change::Undeny { name },
            };
            change_of(&config, &why, change)
        }
    }
}

fn list(command: ListCommand) -> Result<ExitCode> {
    match command {
        ListCommand::Add {
            name,
            category,
            url,
            format,
            min_entries,
            sites,
            why,
            config,
        } => change_of(
            &config,
            &why,
            Change::List {
                name,
                category,
                url,
                format,
                min_entries,
                sites,
            },
        ),
        ListCommand::Remove { name, why, config } => {
            change_of(&config, &why, Change::Unlist { name })
        }
    }
}

fn change_of(config: &ConfigArg, why: &Why, change: Change) -> Result<ExitCode> {
    self::change(&config.config, why, change)
}

fn domain(name: &str) -> Result<String> {
    Ok(edit::domain(name)?)
}

/// The config, its `[fleet]` settings, and a runtime to talk to the store on.
fn open(path: &Path) -> Result<(Config, Settings, tokio::runtime::Runtime)> {
    let config = Config::load(path)?;
    let Some(settings) = Settings::from_config(&config)? else {
        bail!(
            "{}: no [fleet] section: the trust's policy is kept in the central store it names",
            path.display()
        );
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok((config, settings, runtime))
}

/// Every stored version (up to `until`), on a migrated store.
fn records(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    until: Option<SystemTime>,
) -> Result<Vec<policy::Record>> {
    Ok(runtime.block_on(async {
        let mut client = settings.connect().await?;
        crate::fleet::central::migrate(&mut client, settings).await?;
        policy::read_records(&client, settings, until).await
    })?)
}

fn show(path: &Path, at: Option<&str>, version: Option<i64>) -> Result<ExitCode> {
    let (config, settings, runtime) = open(path)?;
    let until = match at {
        // An RFC 3339 time to the microsecond, as the store keeps them; else the forms
        // the audit commands take.
        Some(text) if humantime::parse_rfc3339_weak(text).is_ok() => {
            Some(humantime::parse_rfc3339_weak(text).context("reading --at")?)
        }
        Some(text) => {
            let tz = crate::localtime::zone(&config);
            let when = crate::audit::review::parse_time(
                &crate::localtime::local_dates(text, tz),
                SystemTime::now(),
            )?;
            Some(humantime::parse_rfc3339_weak(&when).context("reading --at")?)
        }
        None => None,
    };
    let all = records(&settings, &runtime, until)?;
    let upto: Vec<&policy::Record> = all
        .iter()
        .filter(|r| version.is_none_or(|v| r.version <= v))
        .collect();
    let state = State::fold(upto.iter().copied());
    match (at, version) {
        (Some(at), _) => println!("the trust's policy at {at}: version {}", state.version),
        (None, Some(v)) => println!(
            "the trust's policy after version {v}: version {}",
            state.version
        ),
        (None, None) => println!("the trust's policy now: version {}", state.version),
    }
    let lines = state.lines();
    if lines.is_empty() {
        println!("(no entries)");
    }
    for line in lines {
        println!("{line}");
    }
    if let Some((toml, _)) = &state.settings {
        println!("\nthe trust's categories and groups:\n{}", toml.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

fn history(path: &Path) -> Result<ExitCode> {
    let (_, settings, runtime) = open(path)?;
    let all = records(&settings, &runtime, None)?;
    if all.is_empty() {
        println!("no policy changes yet in {}", settings.target);
    }
    for r in &all {
        println!(
            "v{}\t{}\t{}\t{}\treason: {}",
            r.version,
            crate::audit::rfc3339(r.at),
            r.author,
            r.change.describe(),
            r.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn diff(path: &Path, from: i64, to: i64) -> Result<ExitCode> {
    let (_, settings, runtime) = open(path)?;
    let all = records(&settings, &runtime, None)?;
    let at = |v: i64| State::fold(all.iter().filter(|r| r.version <= v)).lines();
    let (before, after) = (at(from), at(to));
    let before_set: BTreeSet<&String> = before.iter().collect();
    let after_set: BTreeSet<&String> = after.iter().collect();
    println!("from version {from} to version {to}:");
    for line in before.iter().filter(|l| !after_set.contains(l)) {
        println!("- {line}");
    }
    for line in after.iter().filter(|l| !before_set.contains(l)) {
        println!("+ {line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Check `change` against the trust's config and store it as the next version.
fn change(path: &Path, why: &Why, change: Change) -> Result<ExitCode> {
    let (config, settings, runtime) = open(path)?;
    let engine = match edit::needs_lists(&change) {
        true => Some(
            crate::engine::Engine::load(path)
                .with_context(|| format!("loading the trust's lists from {}", path.display()))?,
        ),
        false => None,
    };
    let stored = runtime.block_on(async {
        let mut client = settings.connect().await?;
        edit::propose(
            &mut client,
            &settings,
            &config,
            engine.as_ref(),
            &why.by,
            &why.reason,
            &change,
        )
        .await
    })?;
    match stored {
        Ok(version) => {
            println!(
                "version {version}: {} (by {}: {}); sites apply it within moments",
                change.describe(),
                why.by.trim(),
                why.reason.trim()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(refused) => bail!("refused: {refused}"),
    }
}
