//! `warden fleet policy …`: the trust's shared policy from the command line: history,
//! the state at a version or a past time, the difference between two versions, and
//! changes (allow, deny and list entries), each with its author and reason.
//!
//! A change is checked before it is stored, against the trust's own config (the file
//! given with `--config`): the policy it makes is rendered and parsed with that config
//! by the same code as at a site, so a category or group that does not exist is
//! refused here, not found out at every school; an allow entry for a name a locked
//! list blocks is refused (it could never take effect); a deny entry cannot go into a
//! locked category. Each site checks every version again against its own config.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::config::{site_name_problem, Config, Format, DEFAULT_CONFIG};
use crate::fleet::policy::{self, Change, Refused, State, Store, MAX_REASON};
use crate::fleet::Settings;

/// The trust's config file (as every command takes it).
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: std::path::PathBuf,
}

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
        #[arg(long, value_enum, default_value = "auto")]
        format: FormatArg,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Auto,
    Hosts,
    Domains,
    Adblock,
    Dnsmasq,
    Unbound,
    Rpz,
    Hashed,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Auto => Format::Auto,
            FormatArg::Hosts => Format::Hosts,
            FormatArg::Domains => Format::Domains,
            FormatArg::Adblock => Format::Adblock,
            FormatArg::Dnsmasq => Format::Dnsmasq,
            FormatArg::Unbound => Format::Unbound,
            FormatArg::Rpz => Format::Rpz,
            FormatArg::Hashed => Format::Hashed,
        }
    }
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
        PolicyCommand::Allow(EntryCommand::Add {
            name,
            category,
            sites,
            groups,
            why,
            config,
        }) => {
            if category.is_some() {
                bail!("--category is for deny entries: an allow entry holds for every category it is not locked in");
            }
            let name = domain(&name)?;
            change(
                &config.config,
                &why,
                Change::Allow {
                    name,
                    sites,
                    groups,
                },
            )
        }
        PolicyCommand::Deny(EntryCommand::Add {
            name,
            category,
            sites,
            groups,
            why,
            config,
        }) => {
            if category.is_none() && groups.is_empty() {
                bail!(
                    "a deny entry for every group needs --category (the groups that block it \
                     block the name); or give --group for a group's own deny entry"
                );
            }
            let name = domain(&name)?;
            change(
                &config.config,
                &why,
                Change::Deny {
                    name,
                    category,
                    sites,
                    groups,
                },
            )
        }
        PolicyCommand::Allow(EntryCommand::Remove { name, why, config }) => {
            let name = domain(&name)?;
            change(&config.config, &why, Change::Unallow { name })
        }
        PolicyCommand::Deny(EntryCommand::Remove { name, why, config }) => {
            let name = domain(&name)?;
            change(&config.config, &why, Change::Undeny { name })
        }
        PolicyCommand::List(ListCommand::Add {
            name,
            category,
            url,
            format,
            min_entries,
            sites,
            why,
            config,
        }) => change(
            &config.config,
            &why,
            Change::List {
                name,
                category,
                url,
                format: format.into(),
                min_entries,
                sites,
            },
        ),
        PolicyCommand::List(ListCommand::Remove { name, why, config }) => {
            change(&config.config, &why, Change::Unlist { name })
        }
    }
}

fn domain(name: &str) -> Result<String> {
    crate::name::normalize(name).map_err(|e| anyhow::anyhow!("{name:?} is not a domain name: {e}"))
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
    check_why(why)?;
    let (config, settings, runtime) = open(path)?;
    check_scope(&change)?;
    let locked_check = locked(path, &config, &change)?;
    if let Some(refused) = locked_check {
        bail!("{refused}");
    }
    let text = Config::local_text(path)?;
    let groups: BTreeSet<String> = config.groups.keys().cloned().collect();
    let check = |state: &State| -> Result<(), Refused> {
        let view = state.for_site(None, &groups);
        if let Some(note) = view.notes.first() {
            return Err(Refused(format!("{note} (in {})", path.display())));
        }
        let rendered = view.render(Path::new("fleet-policy-check"));
        Config::parse_with_policy(
            &text,
            path,
            &rendered.sections,
            Path::new("(the new policy)"),
        )
        .map(drop)
        .map_err(|e| Refused(e.to_string()))
    };
    let stored = runtime.block_on(async {
        let mut client = settings.connect().await?;
        crate::fleet::central::migrate(&mut client, &settings).await?;
        let mut store = Store {
            client: &mut client,
            settings: &settings,
        };
        store
            .append(why.by.trim(), why.reason.trim(), &change, check)
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

fn check_why(why: &Why) -> Result<()> {
    for (what, text) in [("--reason", &why.reason), ("--by", &why.by)] {
        let text = text.trim();
        if text.is_empty() {
            bail!("{what} is needed: every change is recorded with who made it and why");
        }
        if text.chars().count() > MAX_REASON {
            bail!("{what} can be at most {MAX_REASON} characters");
        }
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            bail!(
                "{what} is one line of text: it cannot hold the control character U+{:04X}",
                u32::from(c)
            );
        }
    }
    Ok(())
}

fn check_scope(change: &Change) -> Result<()> {
    let sites: &[String] = match change {
        Change::Allow { sites, .. } | Change::Deny { sites, .. } | Change::List { sites, .. } => {
            sites
        }
        _ => &[],
    };
    for site in sites {
        if let Some(problem) = site_name_problem(site) {
            bail!("--site: {problem}");
        }
    }
    Ok(())
}

/// Why a change touching a locked category is refused, if it is: an allow entry for a
/// name a locked list blocks (by the trust's own lists), a deny entry or a list in a
/// locked category.
fn locked(path: &Path, config: &Config, change: &Change) -> Result<Option<String>> {
    let is_locked = |c: &str| config.categories.get(c).is_some_and(|c| c.locked);
    Ok(match change {
        Change::Allow { name, .. } => {
            let engine = crate::engine::Engine::load(path)
                .with_context(|| format!("loading the trust's lists from {}", path.display()))?;
            let verdict = engine.matcher.lookup(name, engine.matcher.all_categories());
            verdict.block().filter(|b| b.locked).map(|block| {
                format!(
                    "{name} is on a locked list ({}): those names stay blocked for every group \
                     at every site, and no allow entry can unblock them",
                    engine.matcher.category_names(block.categories)
                )
            })
        }
        Change::Deny {
            category: Some(category),
            ..
        }
        | Change::List { category, .. }
            if is_locked(category) =>
        {
            Some(format!(
                "{category} is a locked category: its lists come only from their own \
                 restricted source, not from the trust's entries"
            ))
        }
        _ => None,
    })
}
