//! `[fleet]`: this site's place in a trust's fleet: its audit log shipped to a central
//! PostgreSQL, where the trust's leads review every site. Without it nothing changes.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::value::duration_in;

/// `[fleet]`: ship this site's sealed audit rows to the trust's PostgreSQL.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `postgres://user@host:port/database`, without a password (see `password_file`
    /// and `password_env`: a URL is logged and shown in errors, a password must not be).
    pub database: Spanned<String>,
    /// This site's name, as the trust's leads see it (`st-marys`): letters, digits,
    /// `.`, `_` and `-`, at most 64. Needed to ship a site's log (`warden serve`); the
    /// trust's own `warden fleet serve` and `fleet verify` run without one.
    pub site: Option<Spanned<String>>,
    /// A file holding the database password (relative to the config file's folder).
    pub password_file: Option<PathBuf>,
    /// Or the environment variable holding it.
    pub password_env: Option<String>,
    /// PEM certificates of the CA that signed the database's certificate (a trust's own
    /// CA); without it, the public web roots.
    pub ca_file: Option<PathBuf>,
    /// How often sealed rows are shipped (100ms to 1h).
    #[serde(
        default = "default_ship_interval",
        deserialize_with = "duration_in::<_, 100, 3_600_000>"
    )]
    pub ship_interval: Duration,
    /// Rows per shipped batch (one transaction each).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: Spanned<usize>,
    /// Where this site keeps the trust's policy as last applied (relative to the config
    /// file's folder): the entries as list files and `policy.toml`, which is read with
    /// this config file, so a site that starts with the database out of reach filters
    /// exactly as it did.
    #[serde(default = "default_policy_dir")]
    pub policy_dir: PathBuf,
    /// How often the trust's policy is checked for a new version when no notification
    /// comes (notifications apply a change at once; 1s to 1h).
    #[serde(
        default = "default_policy_poll",
        deserialize_with = "duration_in::<_, 1_000, 3_600_000>"
    )]
    pub policy_poll: Duration,
    /// How often this site reports its health to the central store (1s to 1h).
    #[serde(
        default = "default_heartbeat",
        deserialize_with = "duration_in::<_, 1_000, 3_600_000>"
    )]
    pub heartbeat: Duration,
    /// On the fleet dashboard: a site whose last heartbeat is older than this is shown
    /// as silent (10s to 7 days).
    #[serde(
        default = "default_silent_after",
        deserialize_with = "duration_in::<_, 10_000, 604_800_000>"
    )]
    pub silent_after: Duration,
}

/// How the list names the trust's policy writes for its entries begin. Such lists
/// shrink on purpose (an entry removed), so the reload's shrink guard leaves them alone
/// when they are in `policy_dir` (see [`super::Config::is_policy_entry_list`]).
pub const POLICY_ENTRY_LISTS: &str = "fleet-";

/// The file in `policy_dir` whose presence says the trust's policy does not permit this
/// site's own allow entries (see [`super::Config::local_allow_permitted`]).
pub const LOCAL_ALLOW_OFF: &str = "local-allow-off";

/// The file in `policy_dir` that holds the trust's policy sections for this site.
pub const POLICY_FILE: &str = "policy.toml";

fn default_policy_dir() -> PathBuf {
    PathBuf::from("data/fleet-policy")
}

fn default_policy_poll() -> Duration {
    Duration::from_secs(30)
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(30)
}

fn default_silent_after() -> Duration {
    Duration::from_secs(300)
}

/// The largest batch: a transaction of ~20 MB at most.
pub const MAX_BATCH_ROWS: usize = 50_000;

fn default_ship_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_batch_rows() -> Spanned<usize> {
    Spanned::new(0..0, 2_000)
}

/// Why a `[fleet] site` name is refused, if it is.
pub fn site_name_problem(site: &str) -> Option<String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if site.is_empty() || site.len() > 64 {
        return Some(format!(
            "[fleet] site must be 1 to 64 characters, not {}",
            site.len()
        ));
    }
    site.chars().find(|c| !ok(*c)).map(|c| {
        format!("[fleet] site {site:?} holds {c:?}: use letters, digits, '.', '_' and '-'")
    })
}

/// Whether every host of a PostgreSQL config is on this machine (a Unix socket or a
/// loopback name): only then may the connection go without TLS.
pub fn hosts_are_local(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    config.get_hosts().iter().all(|host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    })
}
