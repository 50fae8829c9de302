//! `[alerts]`: a webhook and/or an email to the e-safety lead for each block in a
//! category that alerts, rate-limited per device and category.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::value::{duration_in, number_where, HttpUrl, Mailbox};

/// `[alerts]`: a webhook and/or an email to the e-safety lead for each block in a
/// category that alerts (`[categories.NAME] alert`), rate-limited per device and category.
/// No channel, no alerts. Read once at start-up: a change here needs a restart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// An `https://` (or `http://`) URL that gets each alert as a JSON POST.
    #[serde(default)]
    pub webhook: Option<HttpUrl>,
    /// A file holding the webhook's `Authorization` header value (or one `Name: value`
    /// header line), read at each delivery and never logged.
    #[serde(default)]
    pub webhook_auth_header_file: Option<Spanned<PathBuf>>,
    /// `[alerts.email]`: SMTP delivery.
    #[serde(default)]
    pub email: Option<EmailConfig>,
    /// Where the dashboard is (`https://warden.school.lan`): messages then link to
    /// `{dashboard_url}/events/ID`; without it they name the path `/events/ID`.
    #[serde(default)]
    pub dashboard_url: Option<HttpUrl>,
    /// How often the audit log is checked for new blocks (50ms to 1m).
    #[serde(
        default = "default_alert_poll",
        deserialize_with = "duration_in::<_, 50, 60_000>"
    )]
    pub poll_interval: Duration,
    /// After an alert for a (device, category), further blocks of that pair within this
    /// window are sent together as one digest when it ends (0s: every block alerts).
    #[serde(default = "default_alert_window", with = "humantime_serde")]
    pub rate_window: Duration,
    /// The wait before the first retry of a failed delivery; it doubles each time (to
    /// at most 10 minutes). At least 10ms.
    #[serde(
        default = "default_alert_backoff",
        deserialize_with = "duration_in::<_, 10, { u64::MAX }>"
    )]
    pub retry_backoff: Duration,
    /// How long a failed delivery is retried before it is given up (and recorded so).
    #[serde(default = "default_alert_retry_for", with = "humantime_serde")]
    pub retry_for: Duration,
    /// (device, category) pairs tracked for rate limiting at once; blocks of further
    /// pairs go into one shared digest (see the alerts module).
    #[serde(default = "default_alert_max_keys", deserialize_with = "at_least_one")]
    pub max_keys: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook: None,
            webhook_auth_header_file: None,
            email: None,
            dashboard_url: None,
            poll_interval: default_alert_poll(),
            rate_window: default_alert_window(),
            retry_backoff: default_alert_backoff(),
            retry_for: default_alert_retry_for(),
            max_keys: default_alert_max_keys(),
        }
    }
}

impl AlertsConfig {
    /// Whether any channel is configured (else alerts are off).
    pub fn enabled(&self) -> bool {
        self.webhook.is_some() || self.email.is_some()
    }
}

fn default_alert_poll() -> Duration {
    Duration::from_secs(5)
}
fn default_alert_window() -> Duration {
    Duration::from_secs(3600)
}
fn default_alert_backoff() -> Duration {
    Duration::from_secs(5)
}
fn default_alert_retry_for() -> Duration {
    Duration::from_secs(3600)
}
/// Far more devices than a school's network has, each with a few alerting categories.
fn default_alert_max_keys() -> usize {
    1_000
}
fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    number_where(d, |n: &usize| *n >= 1, "at least 1")
}

/// `[alerts.email]`: an SMTP server to send alerts through.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: Spanned<String>,
    /// 587, the submission port, by default.
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default)]
    pub starttls: StartTls,
    /// Sign in with this user name and the password in `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the SMTP password (one line), read at each delivery.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The sender, e.g. `"Warden <warden@school.example>"`.
    pub from: Spanned<Mailbox>,
    /// The recipients (the e-safety lead, a deputy).
    #[serde(default)]
    pub to: Vec<Mailbox>,
}

fn default_smtp_port() -> u16 {
    587
}

/// Whether the SMTP connection must be encrypted (STARTTLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Upgrade with STARTTLS or fail (the server's certificate is checked).
    #[default]
    Required,
    /// Upgrade when the server offers STARTTLS, else send in clear.
    Opportunistic,
    /// Never encrypt: only for a relay on this machine (loopback), e.g. a test sink.
    None,
}
