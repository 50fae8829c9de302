//! `[admin]` (the HTTP listener for metrics, health and reload), `[dashboard]` (the
//! e-safety lead's pages and the block page) and `[[users]]` (who may sign in).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::value::{HostName, ValueError};

/// `[admin]`: the HTTP listener for `/metrics`, `/healthz`, `/readyz` and `POST /reload`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "super::default_true")]
    pub enabled: bool,
    /// Loopback by default: metrics and reload are for this machine's admin and
    /// Prometheus, not for the LAN.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// The bearer token `POST /reload` requires (one line). Created with a random token,
    /// readable by its owner only, if it does not exist when Warden starts.
    #[serde(default = "default_token_file")]
    pub token_file: PathBuf,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: default_admin_listen(),
            token_file: default_token_file(),
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8053))
}
fn default_token_file() -> PathBuf {
    PathBuf::from("data/admin.token")
}

/// `[dashboard]`: the e-safety lead's web pages on the admin listener, and the block page.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    #[serde(default = "super::default_true")]
    pub enabled: bool,
    /// A session ends this long after sign-in.
    #[serde(default = "default_session_ttl", with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure`: set it when the dashboard is reached over HTTPS
    /// (a TLS reverse proxy in front of the admin listener).
    #[serde(default)]
    pub secure_cookie: bool,
    /// The allow entries added in the dashboard (one per line, with who and why as a
    /// comment); loaded as an allow list for every group.
    #[serde(default = "default_dashboard_allow_file")]
    pub allow_file: PathBuf,
    /// Who to ask about a block: shown on the block page.
    #[serde(default = "default_contact")]
    pub contact: String,
    /// The organisation's name, for the block page and the dashboard's title.
    #[serde(default)]
    pub organisation: String,
    /// Where to serve the block page (the address in `[blocking] block_ip`, port 80).
    /// Unset: no block page.
    #[serde(default)]
    pub block_page: Option<SocketAddr>,
    /// More names (or addresses) the admin listener answers to, on any port, besides its
    /// own address and `localhost`: e.g. the name a TLS reverse proxy forwards. Any other
    /// `Host` is refused (421), so a web page cannot reach it by DNS rebinding.
    #[serde(default)]
    pub hosts: Vec<HostName>,
    /// Roles that must sign in with a second factor (`warden user 2fa NAME`): a user of
    /// one of them without it cannot sign in until it is set up.
    #[serde(default)]
    pub require_2fa_for: Vec<Role>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            enabled: true,
            session_ttl: default_session_ttl(),
            secure_cookie: false,
            allow_file: default_dashboard_allow_file(),
            contact: default_contact(),
            organisation: String::new(),
            block_page: None,
            hosts: Vec::new(),
            require_2fa_for: Vec::new(),
        }
    }
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_dashboard_allow_file() -> PathBuf {
    PathBuf::from("data/allow-dashboard.txt")
}
fn default_contact() -> String {
    "your e-safety lead".to_string()
}

/// A dashboard user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A governor or senior leader: the overview and the review report, in counts, never
    /// who (no event page, no export).
    Governor,
    /// Reviews events and exports them.
    Lead,
    /// Also adds allow entries.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Governor => "governor",
            Role::Lead => "lead",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may see who did what: event pages, the events list, exports.
    pub fn sees_people(self) -> bool {
        matches!(self, Role::Lead | Role::Admin)
    }
}

/// `[[users]]`: one dashboard user.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: Spanned<String>,
    pub role: Role,
    /// Argon2 PHC string (`$argon2id$…`), written by `warden user add`.
    pub password_hash: Spanned<String>,
    /// On the trust's fleet dashboard, the sites (`[fleet] site` names) this user sees;
    /// without it, every site. A site's own dashboard shows only its own log.
    #[serde(default)]
    pub sites: Option<Vec<Spanned<String>>>,
    /// Two-factor sign-in: the TOTP secret (base32), written by `warden user 2fa`.
    #[serde(default)]
    pub totp_secret: Option<Spanned<String>>,
    /// The SHA-256 (hex) of each single-use recovery code, written with the secret.
    #[serde(default)]
    pub recovery_codes: Vec<Spanned<String>>,
}

/// A dashboard user name: 1–64 letters, digits, `.`, `_`, `-` or `@`.
pub fn check_user_name(name: &str) -> Result<(), ValueError> {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if name.is_empty() || name.len() > 64 || !plain {
        return Err(ValueError::new(
            name,
            "must be 1 to 64 letters, digits, '.', '_', '-' or '@'",
        ));
    }
    Ok(())
}

/// Why a TOTP secret cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("is not base32 (letters A to Z and digits 2 to 7)")]
    NotBase32,
    #[error("is {0} bits; at least 128 are needed")]
    TooShort(usize),
}

/// Decode a base32 TOTP secret, checking it is long enough to be one.
pub fn decode_totp_secret(encoded: &str) -> Result<Vec<u8>, SecretError> {
    let bytes = totp_rs::Secret::Encoded(encoded.trim().to_ascii_uppercase())
        .to_bytes()
        .map_err(|_| SecretError::NotBase32)?;
    if bytes.len() < 16 {
        return Err(SecretError::TooShort(bytes.len() * 8));
    }
    Ok(bytes)
}

/// Whether `hash` is how a recovery code is kept: 64 lowercase hex digits.
pub fn is_recovery_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
