//! `[selftest]`: how often Warden checks its own filtering (see [`crate::selftest`]), for
//! which groups, and how long the history is kept for the annual review.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::value::duration_in;

/// `[selftest]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTestConfig {
    /// Check every `interval` (on by default; `warden selftest` works either way).
    #[serde(default = "default_on")]
    pub enabled: bool,
    /// Between two checks (1 second to 1 day).
    #[serde(
        default = "default_interval",
        deserialize_with = "duration_in::<_, 1_000, 86_400_000>"
    )]
    pub interval: Duration,
    /// The groups checked (none: every group).
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
    /// How long one check's answer may take (100 ms to 30 s).
    #[serde(
        default = "default_timeout",
        deserialize_with = "duration_in::<_, 100, 30_000>"
    )]
    pub timeout: Duration,
    /// Days the results are kept (the review looks back a year).
    #[serde(default = "default_keep_days")]
    pub keep_days: u32,
}

impl Default for SelfTestConfig {
    fn default() -> Self {
        SelfTestConfig {
            enabled: true,
            interval: default_interval(),
            groups: Vec::new(),
            timeout: default_timeout(),
            keep_days: default_keep_days(),
        }
    }
}

fn default_on() -> bool {
    true
}

fn default_interval() -> Duration {
    Duration::from_secs(300)
}

fn default_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_keep_days() -> u32 {
    400
}
