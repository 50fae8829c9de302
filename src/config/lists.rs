//! `[[lists]]`, `[[allow]]`, `[[deny]]`, `[sources]` and `[reload]`: which list files are
//! read, where downloads come from and are kept, and the guards on reading them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::value::{duration_in, number_where, optional_duration_in, HttpUrl, Origin};

/// The most bytes read from one list file unless `[reload] max_list_bytes` says otherwise:
/// four times the largest real list we know of (about 120 MiB of hosts lines).
pub const DEFAULT_MAX_LIST_BYTES: u64 = 512 * 1024 * 1024;

/// The list name of the allow entries added in the dashboard (reserved: no configured
/// list may take it).
pub const DASHBOARD_ALLOW: &str = "dashboard";

/// How a list file is written. `Auto` sniffs each line on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Auto,
    Hosts,
    Domains,
    Adblock,
    Dnsmasq,
    Unbound,
    Rpz,
    Hashed,
}

/// `[[lists]]`: a block list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListConfig {
    pub name: Spanned<String>,
    pub category: Spanned<String>,
    /// A local file. Exactly one of `path` and `url` is given.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// An `https://` (or, for testing, `http://`) source, downloaded into
    /// `[sources] cache_dir` and refreshed every `refresh`.
    #[serde(default)]
    pub url: Option<HttpUrl>,
    /// A file holding one HTTP header line sent with the download, e.g.
    /// `Authorization: Bearer …` (a line without a colon is the Authorization value).
    #[serde(default)]
    pub auth_header_file: Option<PathBuf>,
    /// An environment variable holding that header line instead.
    #[serde(default)]
    pub auth_header_env: Option<String>,
    /// At least a minute: a source is someone else's server.
    #[serde(
        default = "default_refresh",
        deserialize_with = "duration_in::<_, 60_000, { u64::MAX }>"
    )]
    pub refresh: Duration,
    /// For a locked category's list: warn (log and metric) when the source has not
    /// refreshed for this long. The list keeps blocking.
    #[serde(
        default,
        deserialize_with = "optional_duration_in::<_, 60_000, { u64::MAX }>"
    )]
    pub max_age: Option<Duration>,
    #[serde(default)]
    pub format: Format,
    /// A reload or download that leaves this list with fewer entries is refused.
    #[serde(default)]
    pub min_entries: u64,
    /// Origins (`https://cdn.example`, `https://cdn.example:8443`) a download may be
    /// redirected to. A redirect to any other origin is refused; credentials are sent
    /// only to the origin of `url`, never to these.
    #[serde(default)]
    pub allow_redirect_to: Vec<Spanned<Origin>>,
}

fn default_refresh() -> Duration {
    Duration::from_secs(12 * 3600)
}

/// `[[allow]]`: an allow list (exceptions for non-locked categories).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowConfig {
    pub name: Spanned<String>,
    pub path: PathBuf,
    #[serde(default)]
    pub format: Format,
    /// Only for these groups (default: every group).
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
}

/// `[[deny]]`: a group's own block list (blocks for the named groups only, under the
/// category `group-deny`; the most specific entry still decides against allow entries).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyConfig {
    pub name: Spanned<String>,
    pub path: PathBuf,
    #[serde(default)]
    pub format: Format,
    pub groups: Vec<Spanned<String>>,
}

/// `[sources]`: how lists with a `url` are downloaded and kept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    /// Where each download's last good copy is kept (relative to the config's folder).
    /// At start-up these copies are used at once, so a machine that boots without
    /// internet blocks everything it blocked before.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// Whole-download time limit.
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest download accepted, in bytes (as sent, before gunzip).
    #[serde(default = "default_max_size")]
    pub max_size: u64,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            cache_dir: default_cache_dir(),
            timeout: default_fetch_timeout(),
            max_size: default_max_size(),
        }
    }
}

fn default_cache_dir() -> PathBuf {
    PathBuf::from("data/lists")
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_size() -> u64 {
    256 * 1024 * 1024
}

/// `[reload]`: the guard against lists that shrink suspiciously, and the bounds on
/// reading them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// A reload is refused if any list would keep fewer than this share of the entries
    /// it has now (0.5: a list may lose half its entries, not more).
    #[serde(default = "default_min_ratio", deserialize_with = "ratio")]
    pub min_ratio: f64,
    /// Reload when the config or a local list file changes.
    #[serde(default = "super::default_true")]
    pub watch_files: bool,
    /// The most bytes read from one list file (and decompressed from a gzip one); a
    /// bigger list is refused, naming it. Lists are also always regular files.
    #[serde(default = "default_max_list_bytes", deserialize_with = "list_bytes")]
    pub max_list_bytes: u64,
    /// A reload that has not finished in this time (a list on a stuck network mount) is
    /// abandoned and counted as failed; the rules in force stay. 1s to 1h.
    #[serde(
        default = "default_reload_timeout",
        deserialize_with = "duration_in::<_, 1_000, 3_600_000>"
    )]
    pub timeout: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            min_ratio: default_min_ratio(),
            watch_files: true,
            max_list_bytes: default_max_list_bytes(),
            timeout: default_reload_timeout(),
        }
    }
}

fn ratio<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    number_where(d, |r: &f64| (0.0..=1.0).contains(r), "between 0 and 1")
}
fn list_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    number_where(d, |n: &u64| *n >= 1024, "at least 1024")
}
fn default_max_list_bytes() -> u64 {
    DEFAULT_MAX_LIST_BYTES
}
fn default_reload_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_min_ratio() -> f64 {
    0.5
}
