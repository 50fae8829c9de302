//! `[encrypted]` and `[[devices]]`: DNS over TLS (RFC 7858) and over HTTPS (RFC 8484)
//! for enrolled devices (a school laptop at home, an iPad on a trip) and browsers that
//! insist on encrypted DNS; and the devices themselves, each with an ID it presents in
//! the DoH path or the DoT TLS name, which chooses its group wherever it is.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::server::RateLimitConfig;

/// `[encrypted]`. Nothing listens unless `dot_listen` or `doh_listen` names an address.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptedConfig {
    /// DNS over TLS addresses (the standard port is 853).
    #[serde(default)]
    pub dot_listen: Vec<SocketAddr>,
    /// DNS over HTTPS addresses (the standard port is 443): `GET` and `POST` on
    /// `/dns-query` and `/dns-query/{device id}`, HTTP/2 and HTTP/1.1.
    #[serde(default)]
    pub doh_listen: Vec<SocketAddr>,
    /// The name devices reach Warden by (`warden.school.example`): the DoH URL of a
    /// profile, and DoT's TLS name `{device id}.{hostname}`.
    #[serde(default = "default_hostname")]
    pub hostname: Spanned<String>,
    /// The certificate chain (PEM) for `hostname` and `*.{hostname}`, re-read when it
    /// changes (a Let's Encrypt renewal applies to the next connection). Without it (and
    /// `key_file`), a self-signed certificate is made on first start and kept in
    /// `self_signed_dir`: enough for the LAN, with its fingerprint logged and put in the
    /// profiles.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM) of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Where the self-signed certificate and its key are kept.
    #[serde(default = "default_self_signed_dir")]
    pub self_signed_dir: PathBuf,
    /// What a query with a device ID that is not enrolled gets.
    #[serde(default)]
    pub unknown_device: UnknownDevice,
    /// The addresses devices reach Warden at (a Windows DoH profile names the server by
    /// address as well as by URL).
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// The port devices reach DNS over HTTPS at, when a port forward or a reverse proxy
    /// makes it differ from `doh_listen`'s (the profiles' URLs use it).
    #[serde(default)]
    pub public_port: Option<u16>,
    /// `[encrypted.device_rate_limit]`: a token bucket per enrolled device (queries
    /// without an ID are held to `[server.rate_limit]` by address, as on UDP).
    #[serde(default)]
    pub device_rate_limit: RateLimitConfig,
}

impl EncryptedConfig {
    /// Whether any encrypted listener is configured.
    pub fn enabled(&self) -> bool {
        !self.dot_listen.is_empty() || !self.doh_listen.is_empty()
    }

    /// The DoH URL of the device with ID `id` (`None`: the endpoint without one), as a
    /// device outside reaches it: `hostname`, and `public_port` or the first
    /// `doh_listen` port unless it is 443.
    pub fn doh_url(&self, id: Option<&str>) -> String {
        let port = self
            .public_port
            .or_else(|| self.doh_listen.first().map(SocketAddr::port))
            .filter(|p| *p != 443 && *p != 0);
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let id = id.map(|i| format!("/{i}")).unwrap_or_default();
        format!("https://{}{port}/dns-query{id}", self.hostname.get_ref())
    }
}

impl Default for EncryptedConfig {
    fn default() -> Self {
        EncryptedConfig {
            dot_listen: Vec::new(),
            doh_listen: Vec::new(),
            hostname: default_hostname(),
            cert_file: None,
            key_file: None,
            self_signed_dir: default_self_signed_dir(),
            unknown_device: UnknownDevice::default(),
            addresses: Vec::new(),
            public_port: None,
            device_rate_limit: RateLimitConfig::default(),
        }
    }
}

fn default_hostname() -> Spanned<String> {
    Spanned::new(0..0, "warden.lan".to_string())
}

fn default_self_signed_dir() -> PathBuf {
    PathBuf::from("data/tls")
}

/// What a query whose device ID is not enrolled gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownDevice {
    /// Treated as a query without an ID: filtered by its address on the LAN (the
    /// default group when nothing else matches), refused from outside
    /// `[server] allow_networks`. Never an open resolver.
    #[default]
    Default,
    /// REFUSED, wherever it comes from.
    Refuse,
}

/// `[[devices]]`: one enrolled device (`warden device add` writes these).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The device's ID: lowercase letters and digits, 8 to 63 (it is a DNS label in the
    /// DoT TLS name). Whoever knows it is filtered as this device, so it is as secret as
    /// the device's profile.
    pub id: Spanned<String>,
    /// What the audit log, the dashboard and alerts call it.
    pub name: String,
    /// The group it filters as.
    pub group: Spanned<String>,
    /// The person it belongs to, if it is one person's (recorded as the user of its
    /// blocks).
    #[serde(default)]
    pub user: Option<String>,
}

/// Shortest and longest device ID.
pub const DEVICE_ID_LEN: std::ops::RangeInclusive<usize> = 8..=63;

/// Whether `id` can be a device ID: lowercase ASCII letters and digits, of a length in
/// [`DEVICE_ID_LEN`].
pub fn valid_device_id(id: &str) -> bool {
    DEVICE_ID_LEN.contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A device ID cut short for logs and errors (its first four characters): enough to
/// tell devices apart, too little to be one.
pub fn shown_device_id(id: &str) -> String {
    let head: String = id
        .chars()
        .take(4)
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!("{head}…")
}
