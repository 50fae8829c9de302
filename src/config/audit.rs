//! `[audit]`: the audit log of blocks for the e-safety lead, and how long its personal
//! data is kept.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::value::{duration_in, number_where};

/// A century is plenty, and keeps every retention date after 1970.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// `[audit]`: the audit log of blocks for the e-safety lead.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Record blocks (on by default; off only for testing or a privacy review).
    #[serde(default = "default_enabled")]
    pub enabled: Spanned<bool>,
    /// The SQLite file (relative to the config file's folder). Created with its folder,
    /// readable by its owner only.
    #[serde(default = "default_audit_path")]
    pub path: PathBuf,
    /// Repeats of the same (client, name, categories) within this window share one row.
    #[serde(default = "default_audit_window", with = "humantime_serde")]
    pub window: Duration,
    /// The writer commits at least this often (1ms to 1s).
    #[serde(
        default = "default_audit_flush",
        deserialize_with = "duration_in::<_, 1, 1_000>"
    )]
    pub flush_interval: Duration,
    /// Days a row is kept before its personal data is purged.
    #[serde(default = "default_retention_days", deserialize_with = "retention")]
    pub retention_days: u32,
    /// Longer (or shorter) retention for rows of these categories, e.g.
    /// `retention_days_by_category = { terrorism = 2555 }`.
    #[serde(default)]
    pub retention_days_by_category: BTreeMap<String, Spanned<RetentionDays>>,
    /// Also record allowed queries (off by default: data minimisation).
    #[serde(default)]
    pub log_allowed: bool,
    /// Distinct (client, name, categories) keys held between two flushes before a flood's
    /// per-name detail is folded (see the audit module).
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Distinct names one client may add between two flushes before its further names
    /// are folded into its overflow entry (counts kept): a device flooding generated
    /// names cannot make the writer insert thousands of rows a second.
    #[serde(
        default = "default_max_pending_per_client",
        deserialize_with = "at_least_one"
    )]
    pub max_pending_per_client: usize,
}

impl AuditConfig {
    /// Whether blocks are recorded.
    pub fn enabled(&self) -> bool {
        *self.enabled.get_ref()
    }

    /// The retention of each category that has its own, in days.
    pub fn retention_by_category(&self) -> BTreeMap<String, u32> {
        self.retention_days_by_category
            .iter()
            .map(|(c, d)| (c.clone(), d.get_ref().0))
            .collect()
    }
}

/// A retention in days, at most [`MAX_RETENTION_DAYS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RetentionDays(#[serde(deserialize_with = "retention")] pub u32);

fn retention<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    number_where(
        d,
        |days: &u32| *days <= MAX_RETENTION_DAYS,
        &format!("at most {MAX_RETENTION_DAYS} days (a century)"),
    )
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: default_enabled(),
            path: default_audit_path(),
            window: default_audit_window(),
            flush_interval: default_audit_flush(),
            retention_days: default_retention_days(),
            retention_days_by_category: BTreeMap::new(),
            log_allowed: false,
            max_pending: default_max_pending(),
            max_pending_per_client: default_max_pending_per_client(),
        }
    }
}

fn default_enabled() -> Spanned<bool> {
    Spanned::new(0..0, true)
}
fn default_audit_path() -> PathBuf {
    PathBuf::from("data/audit.sqlite")
}
fn default_audit_window() -> Duration {
    Duration::from_secs(60)
}
fn default_audit_flush() -> Duration {
    Duration::from_secs(1)
}
fn default_retention_days() -> u32 {
    365
}
/// 5,000 distinct (device, name, categories) keys per flush: far above a LAN's real
/// blocks (a few per second per device), and a bound on a flood's cost: at most this many
/// new rows per second for the writer, and about 3 MB of keys between flushes.
fn default_max_pending() -> usize {
    5_000
}
/// 200 distinct blocked names from one device within a flush (a second by default):
/// several times a heavy page's trackers all at once; a device past it is flooding.
fn default_max_pending_per_client() -> usize {
    200
}
fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    number_where(d, |n: &usize| *n >= 1, "at least 1")
}
