//! Arguments every command line module shares (`warden …`, `warden fleet policy …`,
//! `warden device …`), kept apart so those modules need not import one another.

use clap::Args;

use crate::config::DEFAULT_CONFIG;

/// The config file a command reads.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: std::path::PathBuf,
}
