//! `warden report`: write the review report ([`crate::report`]) for a period as one
//! self-contained HTML file, and with `--pdf` print it through headless Chromium. It
//! reads the config, its lists and the audit database, and needs no running Warden.
//! `warden fleet report` writes the trust's report ([`crate::report::trust`]) from the
//! central store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use crate::cli_args::ConfigArg;

/// `warden report` arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The period, back from now: 12m (months), 52w, 90d, 1y, or a date (2025-09-01).
    #[arg(long, default_value = "12m")]
    pub since: String,
    /// Where to write the HTML.
    #[arg(long)]
    pub out: PathBuf,
    /// Also print it to this PDF (needs Chromium).
    #[arg(long)]
    pub pdf: Option<PathBuf>,
    /// The governors' version: counts, not names.
    #[arg(long)]
    pub governors: bool,
}

/// Run `warden report`.
pub(crate) fn run(args: ReportArgs) -> Result<ExitCode> {
    let config = crate::config::Config::load(&args.config.config)?;
    let now = std::time::SystemTime::now();
    let since = crate::report::period::since(&args.since, now, crate::localtime::zone(&config))?;
    let store = crate::audit::Store::open_existing(&config.resolve(&config.audit.path))?;
    let engine = crate::engine::Engine::build(config).context("loading the lists")?;
    let options = crate::report::Options {
        since,
        governors: args.governors,
    };
    let report = crate::report::gather(&engine, &store, options, now)?;
    write(&args.out, &crate::report::render::page(&report))?;
    println!("wrote {}", args.out.display());
    if let Some(pdf) = &args.pdf {
        crate::report::pdf::print(&args.out, pdf)?;
        println!("wrote {}", pdf.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Run `warden fleet report`: the trust's report over every site, from the central
/// store named by the config's `[fleet] database`.
pub(crate) fn run_fleet(args: ReportArgs) -> Result<ExitCode> {
    let path = &args.config.config;
    let config = crate::config::Config::load(path)?;
    let Some(settings) = crate::fleet::Settings::from_config(&config)? else {
        anyhow::bail!(
            "{}: no [fleet] section: the trust's report reads the central store named by \
             [fleet] database",
            path.display()
        );
    };
    let now = std::time::SystemTime::now();
    let since = crate::report::period::since(&args.since, now, crate::localtime::zone(&config))?;
    let options = crate::report::Options {
        since,
        governors: args.governors,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let central = crate::fleet::read::Central::new(settings);
    let scope = crate::fleet::read::Scope::All;
    let report = runtime.block_on(crate::report::trust::gather(
        &central, &config, &scope, options, now,
    ))?;
    write(&args.out, &crate::report::trust_page::page(&report, None))?;
    println!("wrote {}", args.out.display());
    if let Some(pdf) = &args.pdf {
        crate::report::pdf::print(&args.out, pdf)?;
        println!("wrote {}", pdf.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Write `text` to `path` whole (a temporary file renamed over it).
fn write(path: &Path, text: &str) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
