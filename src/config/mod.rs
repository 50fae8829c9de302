//! The TOML configuration as typed data: one file per section, each value parsed once
//! into its real type while the file is read (addresses, networks, time zones, times of
//! day, upstream servers, URLs, durations within their bounds), so the domain modules
//! take typed values and never parse a string from the config again.
//!
//! This module sits at the bottom of the crate: it imports nothing from the domain
//! modules, and the constants that describe defaults (TCP limits, the largest list, the
//! reserved list name, the built-in category) live here.
//!
//! Errors name `file:line` and the field. A value that does not parse, or is out of its
//! range, fails at its own position (the TOML parser keeps every value's span); the
//! checks that need the whole file (a list naming an undefined category, two lists with
//! one name, …) are in [`check`] and use the spans kept for those fields. Unknown fields
//! are refused: a typo must not silently disable a list. Relative paths are relative to
//! the config file's folder.

mod alerts;
mod audit;
mod blocking;
mod check;
mod dashboard;
mod encrypted;
mod fleet;
mod identity;
mod lists;
mod policy;
mod selftest;
mod server;
mod upstream;
mod value;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use alerts::{AlertsConfig, EmailConfig, StartTls};
pub use audit::{AuditConfig, RetentionDays, MAX_RETENTION_DAYS};
pub use blocking::{BlockResponse, BlockingConfig, RebindingConfig};
pub use dashboard::{
    check_user_name, decode_totp_secret, is_recovery_hash, AdminConfig, DashboardConfig, Role,
    SecretError, UserConfig,
};
pub use encrypted::{
    shown_device_id, valid_device_id, DeviceConfig, EncryptedConfig, UnknownDevice, DEVICE_ID_LEN,
};
pub use fleet::{
    hosts_are_local, site_name_problem, FleetConfig, LOCAL_ALLOW_OFF, MAX_BATCH_ROWS,
    POLICY_ENTRY_LISTS, POLICY_FILE,
};
pub use identity::{FeedConfig, IdentityConfig, RadiusConfig, UserGroupConfig};
pub use lists::{
    AllowConfig, DenyConfig, Format, ListConfig, ReloadConfig, SourcesConfig, DASHBOARD_ALLOW,
    DEFAULT_MAX_LIST_BYTES,
};
pub use policy::{
    CategoryConfig, ClientConfig, GroupConfig, ScheduleConfig, YouTubeMode, ALERT_BY_DEFAULT,
    CIRCUMVENTION, MAX_CATEGORIES,
};
pub use selftest::SelfTestConfig;
pub use server::{
    LimitAction, RateLimitConfig, ServerConfig, DEFAULT_TCP_CONNECTIONS,
    DEFAULT_TCP_CONNECTIONS_PER_CLIENT,
};
pub use upstream::{ServerSpec, UpstreamConfig};
pub use value::{
    Days, Domain, HostName, HttpUrl, Mac, Mailbox, Net, Origin, TimeOfDay, TimeZone, ValueError,
};

/// The config file every command reads unless given `--config`.
pub const DEFAULT_CONFIG: &str = "config/warden.toml";

/// The largest config file read: far above any real one (a big trust's is tens of KiB),
/// and a bound if the path names something endless.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl ConfigError {
    /// The line an error names, if it names one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub blocking: BlockingConfig,
    /// `[rebinding]`: upstream answers that put a public name on a private address.
    #[serde(default)]
    pub rebinding: RebindingConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub sources: SourcesConfig,
    #[serde(default)]
    pub categories: BTreeMap<String, CategoryConfig>,
    #[serde(default)]
    pub groups: BTreeMap<String, GroupConfig>,
    #[serde(default)]
    pub lists: Vec<ListConfig>,
    #[serde(default)]
    pub allow: Vec<AllowConfig>,
    /// `[[deny]]`: lists that block only for the groups they name.
    #[serde(default)]
    pub deny: Vec<DenyConfig>,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub dashboard: DashboardConfig,
    /// `[[users]]`: who may sign in to the dashboard (`warden user add` writes these).
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// `[alerts]`: tell the e-safety lead at once about blocks in alerting categories.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// `[fleet]`: ship the audit log to the trust's central PostgreSQL (none: this site
    /// stands alone).
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
    /// `[identity]`: who is signed in where (RADIUS accounting, sign-in feeds, files).
    #[serde(default)]
    pub identity: IdentityConfig,
    /// `[[users_to_groups]]`: a person's directory group chooses their Warden group.
    #[serde(default)]
    pub users_to_groups: Vec<UserGroupConfig>,
    /// `[encrypted]`: DNS over TLS and over HTTPS, for enrolled devices and browsers.
    #[serde(default)]
    pub encrypted: EncryptedConfig,
    /// `[[devices]]`: enrolled devices and their IDs (`warden device add` writes these).
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// `[selftest]`: Warden checking its own filtering, every few minutes.
    #[serde(default)]
    pub selftest: SelfTestConfig,
    /// Folder of the config file: relative list paths start here. Not part of the file.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where the config was read from. Not part of the file.
    #[serde(skip)]
    pub path: PathBuf,
}

fn default_true() -> bool {
    true
}

impl Config {
    /// Read, parse and validate the config at `path`. Only a regular file is read (a FIFO
    /// or a device would block or never end), and at most [`MAX_CONFIG_BYTES`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_text(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::parse(&text, path)?;
        let Some(fleet) = &config.fleet else {
            return Ok(config);
        };
        let policy = config.resolve(&fleet.policy_dir).join(POLICY_FILE);
        match read_text(&policy) {
            Ok(sections) => Config::parse_with_policy(&text, path, &sections, &policy),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(config),
            Err(source) => Err(ConfigError::Read {
                path: policy,
                source,
            }),
        }
    }

    /// The text of the config file at `path` alone (without the trust's policy), read
    /// as [`Config::load`] reads it.
    pub fn local_text(path: &Path) -> Result<String, ConfigError> {
        read_text(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parse the local config `text` with the trust's policy sections (`sections`, as
    /// `[fleet] policy_dir` holds them) after it, as one file: the same parser and the
    /// same checks as any config, so a policy is held to exactly the rules of a local
    /// file (a list naming an unknown category, a name taken twice, …). An error in the
    /// policy's lines names `policy_path` and its own line.
    pub fn parse_with_policy(
        text: &str,
        path: &Path,
        sections: &str,
        policy_path: &Path,
    ) -> Result<Config, ConfigError> {
        let mut joined = String::with_capacity(text.len() + sections.len() + 1);
        joined.push_str(text);
        if !joined.ends_with('\n') {
            joined.push('\n');
        }
        let local_lines = joined.matches('\n').count();
        joined.push_str(sections);
        Config::parse(&joined, path).map_err(|e| match e {
            ConfigError::Invalid {
                line,
                message,
                path: _,
            } if line > local_lines => ConfigError::Invalid {
                path: policy_path.to_path_buf(),
                line: line - local_lines,
                message: format!("in the trust's policy: {message}"),
            },
            other => other,
        })
    }

    /// Parse and validate `text`; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| check::parse_error(text, path, &e))?;
        config.path = path.to_path_buf();
        // The built-in category of ways round the filter exists whether or not the file
        // defines it (its DoH-canary, Private Relay and DDR answers need it).
        config
            .categories
            .entry(CIRCUMVENTION.to_string())
            .or_insert_with(CategoryConfig::circumvention);
        config.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        check::Validator::new(text, path).check(&config)?;
        Ok(config)
    }

    /// A path as given, resolved against the config file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The categories the group `name` blocks (locked ones are added by the matcher).
    /// With no `[groups]` at all, every category is active.
    pub(crate) fn group_blocks(&self, name: &str) -> Option<Vec<&str>> {
        if self.groups.is_empty() {
            return Some(self.categories.keys().map(String::as_str).collect());
        }
        self.groups
            .get(name)
            .map(|g| g.block.iter().map(|c| c.get_ref().as_str()).collect())
    }

    /// The defined categories, `adult, circumvention, …`, for messages that name one
    /// that is not.
    pub fn category_names(&self) -> String {
        let names: Vec<&str> = self.categories.keys().map(String::as_str).collect();
        names.join(", ")
    }

    /// Whether the list called `name` holds entries of the trust's policy: named as the
    /// policy names them, and read from `[fleet] policy_dir`.
    pub fn is_policy_entry_list(&self, name: &str) -> bool {
        let Some(fleet) = &self.fleet else {
            return false;
        };
        if !name.starts_with(POLICY_ENTRY_LISTS) {
            return false;
        }
        let dir = self.resolve(&fleet.policy_dir);
        let inside = |path: &Path| self.resolve(path).starts_with(&dir);
        self.allow
            .iter()
            .filter(|a| a.name.get_ref() == name)
            .any(|a| inside(&a.path))
            || self
                .deny
                .iter()
                .filter(|d| d.name.get_ref() == name)
                .any(|d| inside(&d.path))
            || self
                .lists
                .iter()
                .filter(|l| l.name.get_ref() == name)
                .any(|l| l.path.as_deref().is_some_and(inside))
    }

    /// Whether this site's own allow entries (the dashboard's) may be added and are
    /// applied: always without `[fleet]`; with it, unless the trust's policy as last
    /// applied here says not (a file in `policy_dir`).
    pub fn local_allow_permitted(&self) -> bool {
        self.fleet.as_ref().is_none_or(|fleet| {
            !self
                .resolve(&fleet.policy_dir)
                .join(LOCAL_ALLOW_OFF)
                .exists()
        })
    }

    /// Where the dashboard keeps allow entries for one group only: beside
    /// `[dashboard] allow_file`, named after the group (`allow-dashboard-pupils.txt`), any
    /// character that a file name should not hold written as `%XX`.
    pub fn group_allow_file(&self, group: &str) -> PathBuf {
        let main = self.resolve(&self.dashboard.allow_file);
        let stem = main.file_stem().map_or("allow-dashboard".into(), |s| {
            s.to_string_lossy().into_owned()
        });
        let safe: String = group
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c.to_string(),
                other => format!("%{:02X}", u32::from(other)),
            })
            .collect();
        let name = match main.extension() {
            Some(ext) => format!("{stem}-{safe}.{}", ext.to_string_lossy()),
            None => format!("{stem}-{safe}"),
        };
        main.with_file_name(name)
    }

    /// The names of every group (the default one alone when none is configured).
    pub fn group_names(&self) -> Vec<String> {
        if self.groups.is_empty() {
            return vec![self.default_group().to_string()];
        }
        self.groups.keys().cloned().collect()
    }

    /// The default group's name (`[server] default_group`).
    pub fn default_group(&self) -> &str {
        self.server.default_group.get_ref()
    }
}

impl ListConfig {
    /// The file this list is read from: its `path`, or the cached copy of its `url`.
    pub fn file(&self, config: &Config) -> PathBuf {
        match &self.path {
            Some(path) => config.resolve(path),
            None => config
                .resolve(&config.sources.cache_dir)
                .join(format!("{}.list", self.name.get_ref())),
        }
    }
}

/// The config file's text: a regular file (checked on the open handle, opened without
/// blocking so a FIFO cannot hang the caller), at most [`MAX_CONFIG_BYTES`].
fn read_text(path: &Path) -> std::io::Result<String> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests;
