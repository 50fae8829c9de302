//! The TOML configuration: schema, defaults and validation, nothing else.
//!
//! Unknown fields are refused (a typo must not silently disable a list). Syntax and type
//! errors come from the `toml` parser with line and column; the checks that need the
//! whole file (a list naming an undefined category, two lists with one name, …) report
//! `file:line` themselves, using the spans the parser keeps for those fields.
//! Relative list paths are relative to the config file's folder.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::lists::Format;

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

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
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
    /// Folder of the config file: relative list paths start here. Not part of the file.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where the config was read from. Not part of the file.
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[server]`: where Warden listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// UDP and TCP addresses to serve DNS on.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// The group of clients that no `[[clients]]` entry names.
    #[serde(default = "default_group")]
    pub default_group: String,
    /// How long a TCP connection may sit idle.
    #[serde(default = "default_tcp_timeout", with = "humantime_serde")]
    pub tcp_timeout: Duration,
    /// Open TCP connections allowed at once; more are closed on arrival.
    #[serde(default = "default_tcp_connections")]
    pub tcp_max_connections: usize,
    /// Open TCP connections allowed at once from one client address; more are closed on
    /// arrival (at least 1).
    #[serde(default = "default_tcp_connections_per_client")]
    pub tcp_connections_per_client: Spanned<usize>,
    /// The IANA time zone schedules are written in.
    #[serde(default = "default_timezone")]
    pub timezone: Spanned<String>,
    /// A DHCP lease file (dnsmasq or ISC dhcpd) naming devices for the audit log.
    #[serde(default)]
    pub dhcp_leases: Option<PathBuf>,
    /// Clients allowed to ask; everyone else gets REFUSED (never an open resolver).
    #[serde(default = "default_allow_networks")]
    pub allow_networks: Vec<Spanned<String>>,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

/// `[server.rate_limit]`: a token bucket per client address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained queries per second per client (0: no limit).
    #[serde(default = "default_qps")]
    pub qps: f64,
    /// Queries a client may send at once before the rate applies.
    #[serde(default = "default_burst")]
    pub burst: f64,
    /// What an over-limit query gets.
    #[serde(default)]
    pub action: LimitAction,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            qps: default_qps(),
            burst: default_burst(),
            action: LimitAction::default(),
        }
    }
}

/// What an over-limit query gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitAction {
    /// REFUSED (the client knows, and stops retrying sooner).
    #[default]
    Refuse,
    /// No answer at all (cheapest under a flood).
    Drop,
}

/// A busy device stays far below this; a NAT in front of many devices may need more.
fn default_qps() -> f64 {
    100.0
}
fn default_burst() -> f64 {
    500.0
}

/// Loopback, RFC 1918, ULA and link-local: the networks a LAN filter serves.
fn default_allow_networks() -> Vec<Spanned<String>> {
    [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    ]
    .into_iter()
    .map(|n| Spanned::new(0..0, n.to_string()))
    .collect()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            default_group: default_group(),
            tcp_timeout: default_tcp_timeout(),
            tcp_max_connections: default_tcp_connections(),
            tcp_connections_per_client: default_tcp_connections_per_client(),
            timezone: default_timezone(),
            dhcp_leases: None,
            allow_networks: default_allow_networks(),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 5353))]
}
fn default_group() -> String {
    "default".to_string()
}
fn default_timezone() -> Spanned<String> {
    Spanned::new(0..0, "Europe/London".to_string())
}
fn default_tcp_connections() -> usize {
    crate::dns::server::DEFAULT_TCP_CONNECTIONS
}
fn default_tcp_connections_per_client() -> Spanned<usize> {
    Spanned::new(0..0, crate::dns::server::DEFAULT_TCP_CONNECTIONS_PER_CLIENT)
}
fn default_tcp_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[upstream]`: the resolvers allowed names are forwarded to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `IP:port` (UDP with TCP fallback), `tcp://IP:port`, or `tls://IP:port@server.name`.
    #[serde(default = "default_upstreams")]
    pub servers: Vec<Spanned<String>>,
    /// How long one client query may wait for upstream before it gets SERVFAIL.
    #[serde(default = "default_upstream_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Answers kept in the response cache.
    #[serde(default = "default_cache_size")]
    pub cache_size: u64,
    /// When every upstream fails, answer from the last good answer for up to this long
    /// after it expired (RFC 8767 "serve stale"; 0s turns it off).
    #[serde(default = "default_serve_stale", with = "humantime_serde")]
    pub serve_stale: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            servers: default_upstreams(),
            timeout: default_upstream_timeout(),
            cache_size: default_cache_size(),
            serve_stale: default_serve_stale(),
        }
    }
}

fn default_upstreams() -> Vec<Spanned<String>> {
    ["9.9.9.9:53", "149.112.112.112:53"]
        .into_iter()
        .map(|s| Spanned::new(0..0, s.to_string()))
        .collect()
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_serve_stale() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_cache_size() -> u64 {
    8192
}

/// How a blocked name is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockResponse {
    /// NXDOMAIN with a SOA for negative caching.
    #[default]
    Nxdomain,
    /// 0.0.0.0 / :: for A / AAAA, NODATA for other types.
    Null,
    /// The configured `block_ip` addresses (a block page) for A / AAAA.
    Ip,
}

impl BlockResponse {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockResponse::Nxdomain => "nxdomain",
            BlockResponse::Null => "null",
            BlockResponse::Ip => "ip",
        }
    }
}

/// `[blocking]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockingConfig {
    #[serde(default)]
    pub response: BlockResponse,
    /// TTL of blocked answers (and of the SOA minimum for NXDOMAIN).
    #[serde(default = "default_block_ttl")]
    pub ttl: u32,
    /// Block-page addresses for `response = "ip"` (one IPv4 and/or one IPv6).
    #[serde(default)]
    pub block_ip: Vec<IpAddr>,
}

impl Default for BlockingConfig {
    fn default() -> Self {
        BlockingConfig {
            response: BlockResponse::default(),
            ttl: default_block_ttl(),
            block_ip: Vec::new(),
        }
    }
}

fn default_block_ttl() -> u32 {
    300
}

/// `[rebinding]`: DNS rebinding protection. An upstream answer that puts a public name
/// on a private, loopback or link-local address is blocked (a web page could otherwise
/// use such a name to reach the school's own devices from a pupil's browser), except
/// for single-label names, names under the usual LAN zones (`lan`, `home.arpa`, …) and
/// names under `allow` (the organisation's own internal domains).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebindingConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Domains whose names may resolve to private addresses (with all their subdomains),
    /// besides the usual LAN zones, which always may.
    #[serde(default)]
    pub allow: Vec<Spanned<Domain>>,
}

impl Default for RebindingConfig {
    fn default() -> Self {
        RebindingConfig {
            enabled: true,
            allow: Vec::new(),
        }
    }
}

/// A domain name from the config, normalised while loading (lower case, punycode, no
/// trailing dot) by [`Config::parse`], which refuses one that is not valid with its line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Domain(String);

impl Domain {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Normalise in place; the error says why the text is not a domain name.
    fn normalize(&mut self) -> Result<(), crate::name::NameError> {
        self.0 = crate::name::normalize(&self.0)?;
        Ok(())
    }
}

/// `[audit]`: the audit log of blocks for the e-safety lead.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Record blocks (on by default; off only for testing or a privacy review).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The SQLite file (relative to the config file's folder). Created with its folder,
    /// readable by its owner only.
    #[serde(default = "default_audit_path")]
    pub path: PathBuf,
    /// Repeats of the same (client, name, categories) within this window share one row.
    #[serde(default = "default_audit_window", with = "humantime_serde")]
    pub window: Duration,
    /// The writer commits at least this often (at most 1s).
    #[serde(default = "default_audit_flush", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Days a row is kept before its personal data is purged.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Longer (or shorter) retention for rows of these categories, e.g.
    /// `retention_days_by_category = { terrorism = 2555 }`.
    #[serde(default)]
    pub retention_days_by_category: BTreeMap<String, Spanned<u32>>,
    /// Also record allowed queries (off by default: data minimisation).
    #[serde(default)]
    pub log_allowed: bool,
    /// Distinct (client, name, categories) keys held between two flushes before a flood's
    /// per-name detail is folded (see the audit module).
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            path: default_audit_path(),
            window: default_audit_window(),
            flush_interval: default_audit_flush(),
            retention_days: default_retention_days(),
            retention_days_by_category: BTreeMap::new(),
            log_allowed: false,
            max_pending: default_max_pending(),
        }
    }
}

fn default_true() -> bool {
    true
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

/// `[reload]`: the guard against lists that shrink suspiciously.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// A reload is refused if any list would keep fewer than this share of the entries
    /// it has now (0.5: a list may lose half its entries, not more).
    #[serde(default = "default_min_ratio")]
    pub min_ratio: f64,
    /// Reload when the config or a local list file changes.
    #[serde(default = "default_true")]
    pub watch_files: bool,
    /// The most bytes read from one list file (and decompressed from a gzip one); a
    /// bigger list is refused, naming it. Lists are also always regular files.
    #[serde(default = "default_max_list_bytes")]
    pub max_list_bytes: u64,
    /// A reload that has not finished in this time (a list on a stuck network mount) is
    /// abandoned and counted as failed; the rules in force stay.
    #[serde(default = "default_reload_timeout", with = "humantime_serde")]
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

fn default_max_list_bytes() -> u64 {
    crate::lists::DEFAULT_MAX_LIST_BYTES
}
fn default_reload_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_min_ratio() -> f64 {
    0.5
}

/// `[admin]`: the HTTP listener for `/metrics`, `/healthz`, `/readyz` and `POST /reload`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_true")]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    #[serde(default = "default_true")]
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
    pub hosts: Vec<Spanned<String>>,
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
    /// Reviews events and exports them.
    Lead,
    /// Also adds allow entries.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Lead => "lead",
            Role::Admin => "admin",
        }
    }
}

/// `[[users]]`: one dashboard user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: Spanned<String>,
    pub role: Role,
    /// Argon2 PHC string (`$argon2id$…`), written by `warden user add`.
    pub password_hash: Spanned<String>,
}

/// `[sources]`: how lists with a `url` are downloaded and kept.
#[derive(Debug, Clone, Deserialize)]
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
fn default_refresh() -> Duration {
    Duration::from_secs(12 * 3600)
}

/// `[categories.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryConfig {
    /// Statutory categories: on for every group, never overridden by an allow entry.
    #[serde(default)]
    pub locked: bool,
    #[serde(default)]
    pub description: String,
    /// Tell the e-safety lead at once about a block in this category (webhook/email,
    /// `[alerts]`). Unset: on for the serious categories, [`ALERT_BY_DEFAULT`].
    #[serde(default)]
    pub alert: Option<bool>,
    /// Shown on the block page under the reason: where to get help (e.g. support lines
    /// for self-harm).
    #[serde(default)]
    pub signpost: String,
}

/// Categories that alert unless `alert = false`: the statutory ones and self-harm, which
/// the lead must hear about at once.
pub const ALERT_BY_DEFAULT: &[&str] = &["terrorism", "child-abuse", "self-harm"];

impl CategoryConfig {
    /// Whether a block in category `name` (configured as `self`) raises an alert.
    pub fn alerts(&self, name: &str) -> bool {
        self.alert
            .unwrap_or_else(|| self.locked || ALERT_BY_DEFAULT.contains(&name))
    }
}

/// `[groups.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Categories blocked for this group (locked ones are added regardless).
    #[serde(default)]
    pub block: Vec<Spanned<String>>,
    /// Time windows that block (or allow) more categories.
    #[serde(default)]
    pub schedule: Vec<ScheduleConfig>,
    /// Block the built-in `circumvention` category (DoH canary, Private Relay, DDR and
    /// the circumvention lists). On unless turned off here.
    #[serde(default = "default_on")]
    pub circumvention: Spanned<bool>,
    /// Rewrite Google, Bing and DuckDuckGo to their safe-search addresses.
    #[serde(default)]
    pub safe_search: bool,
    /// YouTube restricted mode.
    #[serde(default)]
    pub youtube: YouTubeMode,
    /// How this group's blocked names are answered (default: `[blocking] response`).
    #[serde(default)]
    pub block_response: Option<BlockResponse>,
}

/// YouTube's restricted modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum YouTubeMode {
    #[default]
    Off,
    Moderate,
    Strict,
}

/// `[[groups.NAME.schedule]]`: in the window, `block` categories are added to the
/// group's and `allow` categories taken away (never a locked one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    #[serde(default)]
    pub block: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// `mon`…`sun`, or `weekdays`, `weekends`, `daily`.
    #[serde(default = "default_days")]
    pub days: Vec<Spanned<String>>,
    /// Local start, `HH:MM`.
    pub from: Spanned<String>,
    /// Local end, `HH:MM`; earlier than `from` means the window runs past midnight.
    pub to: Spanned<String>,
}

fn default_on() -> Spanned<bool> {
    Spanned::new(0..0, true)
}

fn default_days() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "daily".to_string())]
}

/// `[[deny]]`: a group's own block list (blocks for the named groups only, under the
/// category `group-deny`; the most specific entry still decides against allow entries).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyConfig {
    pub name: Spanned<String>,
    pub path: PathBuf,
    #[serde(default)]
    pub format: Format,
    pub groups: Vec<Spanned<String>>,
}

/// `[[clients]]`: an address or network and the group (and device name) it belongs to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `10.0.1.0/24`, `2001:db8::/64`, or one address.
    pub cidr: Spanned<String>,
    pub group: Spanned<String>,
    /// A device name for the audit log (a label only, never a policy key).
    #[serde(default)]
    pub name: Option<String>,
}

/// `[[lists]]`: a block list.
#[derive(Debug, Clone, Deserialize)]
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
    pub url: Option<Spanned<String>>,
    /// A file holding one HTTP header line sent with the download, e.g.
    /// `Authorization: Bearer …` (a line without a colon is the Authorization value).
    #[serde(default)]
    pub auth_header_file: Option<PathBuf>,
    /// An environment variable holding that header line instead.
    #[serde(default)]
    pub auth_header_env: Option<String>,
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh: Duration,
    /// For a locked category's list: warn (log and metric) when the source has not
    /// refreshed for this long. The list keeps blocking.
    #[serde(default, with = "humantime_serde")]
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
    pub allow_redirect_to: Vec<Spanned<String>>,
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

/// `[[allow]]`: an allow list (exceptions for non-locked categories).
#[derive(Debug, Clone, Deserialize)]
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

/// `[alerts]`: a webhook and/or an email to the e-safety lead for each block in a
/// category that alerts (`[categories.NAME] alert`), rate-limited per device and category.
/// No channel, no alerts. Read once at start-up: a change here needs a restart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// An `https://` (or `http://`) URL that gets each alert as a JSON POST.
    #[serde(default)]
    pub webhook: Option<Spanned<String>>,
    /// A file holding the webhook's `Authorization` header value (or one `Name: value`
    /// header line), read at each delivery and never logged.
    #[serde(default)]
    pub webhook_auth_header_file: Option<PathBuf>,
    /// `[alerts.email]`: SMTP delivery.
    #[serde(default)]
    pub email: Option<EmailConfig>,
    /// Where the dashboard is (`https://warden.school.lan`): messages then link to
    /// `{dashboard_url}/events/ID`; without it they name the path `/events/ID`.
    #[serde(default)]
    pub dashboard_url: Option<Spanned<String>>,
    /// How often the audit log is checked for new blocks (50ms to 1m).
    #[serde(default = "default_alert_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// After an alert for a (device, category), further blocks of that pair within this
    /// window are sent together as one digest when it ends (0s: every block alerts).
    #[serde(default = "default_alert_window", with = "humantime_serde")]
    pub rate_window: Duration,
    /// The wait before the first retry of a failed delivery; it doubles each time (to
    /// at most 10 minutes).
    #[serde(default = "default_alert_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// How long a failed delivery is retried before it is given up (and recorded so).
    #[serde(default = "default_alert_retry_for", with = "humantime_serde")]
    pub retry_for: Duration,
    /// (device, category) pairs tracked for rate limiting at once; blocks of further
    /// pairs go into one shared digest (see the alerts module).
    #[serde(default = "default_alert_max_keys")]
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
    pub from: Spanned<String>,
    /// The recipients (the e-safety lead, a deputy).
    #[serde(default)]
    pub to: Vec<Spanned<String>>,
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

impl Config {
    /// Read, parse and validate the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parse and validate `text`; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.path = path.to_path_buf();
        // The built-in category of ways round the filter exists whether or not the file
        // defines it (its DoH-canary, Private Relay and DDR answers need it).
        config
            .categories
            .entry(crate::policy::CIRCUMVENTION.to_string())
            .or_insert_with(|| CategoryConfig {
                locked: false,
                description: "Ways round the filter: DoH/DoT resolvers, VPNs, proxies, \
                              iCloud Private Relay (built in)"
                    .to_string(),
                ..CategoryConfig::default()
            });
        config.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let validator = Validator { text, path };
        for domain in &mut config.rebinding.allow {
            let span = domain.span();
            if let Err(e) = domain.get_mut().normalize() {
                let text = domain.get_ref().as_str();
                return validator.error(span, format!("[rebinding] allow: {text:?}: {e}"));
            }
        }
        validator.check(&config)?;
        Ok(config)
    }

    /// A list path as given, resolved against the config file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The categories the group `name` blocks (locked ones are added by the matcher).
    /// With no `[groups]` at all, every category is active.
    pub fn group_blocks(&self, name: &str) -> Option<Vec<&str>> {
        if self.groups.is_empty() {
            return Some(self.categories.keys().map(String::as_str).collect());
        }
        self.groups
            .get(name)
            .map(|g| g.block.iter().map(|c| c.get_ref().as_str()).collect())
    }
}

/// A dashboard user name: 1–64 letters, digits, `.`, `_`, `-` or `@`.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if name.is_empty() || name.len() > 64 || !plain {
        return Err(format!(
            "{name:?} must be 1 to 64 letters, digits, '.', '_', '-' or '@'"
        ));
    }
    Ok(())
}

/// An origin as `allow_redirect_to` takes it: `http(s)://host[:port]`, nothing more.
/// The reason it is not one, if it is not.
fn check_origin(text: &str) -> Result<(), &'static str> {
    let url = reqwest::Url::parse(text).map_err(|_| "is not a URL")?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err("must be an http:// or https:// origin, e.g. \"https://cdn.example\"");
    }
    let bare = url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    if !bare {
        return Err(
            "must be an origin only (scheme, host and port), without a path, query or user",
        );
    }
    Ok(())
}

/// Whole-file checks, with the source text at hand to turn spans into line numbers.
struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Validator<'_> {
    fn error<T>(&self, span: std::ops::Range<usize>, message: String) -> Result<T, ConfigError> {
        let line = self.text[..span.start.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1;
        Err(ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            message,
        })
    }

    fn defined(&self, config: &Config) -> String {
        if config.categories.is_empty() {
            "none (add [categories.NAME] sections)".to_string()
        } else {
            config
                .categories
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// The groups a client or allow list names exist.
    fn group_exists(
        &self,
        config: &Config,
        group: &Spanned<String>,
        what: &str,
    ) -> Result<(), ConfigError> {
        let name = group.get_ref();
        let known = if config.groups.is_empty() {
            *name == config.server.default_group
        } else {
            config.groups.contains_key(name)
        };
        if known {
            return Ok(());
        }
        let defined = if config.groups.is_empty() {
            format!(
                "{} (the default group; add [groups.NAME] sections for more)",
                config.server.default_group
            )
        } else {
            config.groups.keys().cloned().collect::<Vec<_>>().join(", ")
        };
        self.error(
            group.span(),
            format!("{what} names undefined group {name:?}; defined groups: {defined}"),
        )
    }

    fn category_exists(
        &self,
        config: &Config,
        category: &Spanned<String>,
        what: &str,
    ) -> Result<(), ConfigError> {
        if config.categories.contains_key(category.get_ref()) {
            return Ok(());
        }
        self.error(
            category.span(),
            format!(
                "{what} names undefined category {:?}; defined categories: {}",
                category.get_ref(),
                self.defined(config)
            ),
        )
    }

    /// User names are unique and plain; every password hash is an Argon2 PHC string.
    fn check_users(&self, config: &Config) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for user in &config.users {
            let name = user.name.get_ref();
            if let Err(reason) = check_user_name(name) {
                return self.error(user.name.span(), format!("[[users]] name: {reason}"));
            }
            if !seen.insert(name.as_str()) {
                return self.error(
                    user.name.span(),
                    format!("[[users]] name {name:?} is used twice"),
                );
            }
            let hash = user.password_hash.get_ref();
            let argon = argon2::PasswordHash::new(hash)
                .ok()
                .filter(|h| h.algorithm.as_str().starts_with("argon2"));
            if argon.is_none() {
                return self.error(
                    user.password_hash.span(),
                    format!(
                        "[[users]] {name:?}: password_hash is not an Argon2 hash; \
                         set it with `warden user add {name}`"
                    ),
                );
            }
        }
        Ok(())
    }

    /// Time zone, clients, per-group allow lists and schedules; and the rule that no
    /// group, schedule or allow list can unblock a locked category.
    fn check_policy(&self, config: &Config) -> Result<(), ConfigError> {
        let tz = &config.server.timezone;
        if tz.get_ref().parse::<chrono_tz::Tz>().is_err() {
            return self.error(
                tz.span(),
                format!("[server] timezone {:?} is not an IANA time zone name such as \"Europe/London\"", tz.get_ref()),
            );
        }
        for net in &config.server.allow_networks {
            if let Err(reason) = crate::policy::clients::parse_net(net.get_ref()) {
                return self.error(net.span(), format!("[server] allow_networks: {reason}"));
            }
        }
        let limit = &config.server.rate_limit;
        let sane = limit.qps >= 0.0
            && limit.qps.is_finite()
            && limit.burst >= 1.0
            && limit.burst.is_finite();
        if !sane {
            return self.error(
                0..0,
                format!(
                    "[server.rate_limit] needs qps >= 0 (0 turns it off) and burst >= 1, not qps = {}, burst = {}",
                    limit.qps, limit.burst
                ),
            );
        }
        for client in &config.clients {
            if let Err(reason) = crate::policy::clients::parse_net(client.cidr.get_ref()) {
                return self.error(client.cidr.span(), format!("[[clients]] cidr: {reason}"));
            }
            self.group_exists(config, &client.group, "[[clients]]")?;
        }
        for allow in &config.allow {
            for group in &allow.groups {
                self.group_exists(
                    config,
                    group,
                    &format!("allow list {:?}", allow.name.get_ref()),
                )?;
            }
        }
        let locked = |c: &str| config.categories.get(c).is_some_and(|c| c.locked);
        for (group, settings) in &config.groups {
            if !settings.circumvention.get_ref() && locked(crate::policy::CIRCUMVENTION) {
                return self.error(
                    settings.circumvention.span(),
                    format!("group {group:?}: circumvention is a locked category here; no group can turn it off"),
                );
            }
            for window in &settings.schedule {
                let what = format!("group {group:?} schedule");
                for category in window.block.iter().chain(&window.allow) {
                    self.category_exists(config, category, &what)?;
                }
                for category in &window.allow {
                    if locked(category.get_ref()) {
                        return self.error(
                            category.span(),
                            format!(
                                "{what}: category {:?} is locked: it is blocked for every group at \
                                 all times, and no schedule, group or allow entry can allow it",
                                category.get_ref()
                            ),
                        );
                    }
                }
                if window.block.is_empty() && window.allow.is_empty() {
                    return self.error(
                        window.from.span(),
                        format!("{what}: the window neither blocks nor allows a category"),
                    );
                }
                let days: Vec<&str> = window.days.iter().map(|d| d.get_ref().as_str()).collect();
                let checked = crate::policy::schedule::Window::new(
                    &days,
                    window.from.get_ref(),
                    window.to.get_ref(),
                    crate::filter::CategorySet::EMPTY,
                    crate::filter::CategorySet::EMPTY,
                );
                if let Err(error) = checked {
                    let span = match &error {
                        crate::policy::schedule::ScheduleError::Day(d) => window
                            .days
                            .iter()
                            .find(|s| s.get_ref() == d)
                            .map_or(window.from.span(), |s| s.span()),
                        crate::policy::schedule::ScheduleError::Time(t)
                            if t == window.to.get_ref() =>
                        {
                            window.to.span()
                        }
                        _ => window.from.span(),
                    };
                    return self.error(span, format!("{what}: {error}"));
                }
            }
        }
        Ok(())
    }

    /// `allow_redirect_to`: only with a url, and each entry an origin.
    fn check_redirects(&self, list: &ListConfig) -> Result<(), ConfigError> {
        let name = list.name.get_ref();
        for origin in &list.allow_redirect_to {
            if list.url.is_none() {
                return self.error(
                    origin.span(),
                    format!("list {name:?}: allow_redirect_to needs a url"),
                );
            }
            if let Err(why) = check_origin(origin.get_ref()) {
                return self.error(
                    origin.span(),
                    format!(
                        "list {name:?}: allow_redirect_to {:?} {why}",
                        origin.get_ref()
                    ),
                );
            }
        }
        Ok(())
    }

    /// `[reload]`'s limits on reading lists.
    fn check_reload(&self, config: &Config) -> Result<(), ConfigError> {
        if config.reload.max_list_bytes < 1024 {
            return self.error(
                0..0,
                format!(
                    "[reload] max_list_bytes must be at least 1024, not {}",
                    config.reload.max_list_bytes
                ),
            );
        }
        let timeout = config.reload.timeout;
        if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(3600) {
            return self.error(
                0..0,
                format!("[reload] timeout must be between 1s and 1h, not {timeout:?}"),
            );
        }
        Ok(())
    }

    /// A list has exactly one of `path` and `url`, and URL options only with a URL.
    fn check_source(&self, config: &Config, list: &ListConfig) -> Result<(), ConfigError> {
        let name = list.name.get_ref();
        let at = list.name.span();
        match (&list.path, &list.url) {
            (Some(_), Some(url)) => {
                return self.error(
                    url.span(),
                    format!("list {name:?} has both path and url; give one"),
                )
            }
            (None, None) => {
                return self.error(at, format!("list {name:?} needs a path or a url"));
            }
            (Some(_), None) => {
                if list.auth_header_file.is_some() || list.auth_header_env.is_some() {
                    return self.error(
                        at,
                        format!("list {name:?}: auth_header_file and auth_header_env need a url"),
                    );
                }
            }
            (None, Some(url)) => {
                let text = url.get_ref();
                if !(text.starts_with("https://") || text.starts_with("http://")) {
                    return self.error(
                        url.span(),
                        format!("list {name:?}: url must start with https:// (or http://)"),
                    );
                }
                if list.auth_header_file.is_some() && list.auth_header_env.is_some() {
                    return self.error(
                        at,
                        format!(
                            "list {name:?}: give auth_header_file or auth_header_env, not both"
                        ),
                    );
                }
                if list.refresh < Duration::from_secs(60) {
                    return self.error(
                        at,
                        format!(
                            "list {name:?}: refresh must be at least 1m, not {:?}",
                            list.refresh
                        ),
                    );
                }
            }
        }
        if list.max_age.is_some()
            && !config
                .categories
                .get(list.category.get_ref())
                .is_some_and(|c| c.locked)
        {
            return self.error(
                at,
                format!(
                    "list {name:?}: max_age is for lists of locked categories; {:?} is not locked",
                    list.category.get_ref()
                ),
            );
        }
        Ok(())
    }

    /// `[dashboard] hosts`: each a host name or address, with no port, scheme or path.
    fn check_dashboard_hosts(&self, config: &Config) -> Result<(), ConfigError> {
        for entry in &config.dashboard.hosts {
            if let Err(reason) = crate::admin::host::parse_entry(entry.get_ref()) {
                return self.error(entry.span(), format!("[dashboard] hosts: {reason}"));
            }
        }
        Ok(())
    }

    /// `[alerts]`: channels that can work, and settings in range.
    fn check_alerts(&self, config: &Config) -> Result<(), ConfigError> {
        let alerts = &config.alerts;
        let http_url = |url: &str| {
            reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        };
        if let Some(url) = &alerts.webhook {
            if !http_url(url.get_ref()) {
                return self.error(
                    url.span(),
                    "[alerts] webhook must be an https:// (or http://) URL".into(),
                );
            }
        } else if alerts.webhook_auth_header_file.is_some() {
            return self.error(
                0..0,
                "[alerts] webhook_auth_header_file needs a webhook".into(),
            );
        }
        if let Some(url) = &alerts.dashboard_url {
            if !http_url(url.get_ref()) {
                return self.error(
                    url.span(),
                    "[alerts] dashboard_url must be an https:// (or http://) URL".into(),
                );
            }
        }
        if let Some(email) = &alerts.email {
            let host = email.host.get_ref();
            if host.is_empty() {
                return self.error(email.host.span(), "[alerts.email] host is empty".into());
            }
            let loopback =
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if email.starttls == StartTls::None && !loopback {
                return self.error(
                    email.host.span(),
                    format!(
                        "[alerts.email] starttls = \"none\" is only for a relay on this machine \
                         (localhost), not {host:?}: use \"required\" (or \"opportunistic\")"
                    ),
                );
            }
            if email.username.is_some() != email.password_file.is_some() {
                return self.error(
                    email.host.span(),
                    "[alerts.email] username and password_file go together: give both or neither"
                        .into(),
                );
            }
            if email.to.is_empty() {
                return self.error(
                    email.from.span(),
                    "[alerts.email] to must name at least one recipient".into(),
                );
            }
            let addresses =
                std::iter::once(("from", &email.from)).chain(email.to.iter().map(|t| ("to", t)));
            for (field, address) in addresses {
                if address
                    .get_ref()
                    .parse::<lettre::message::Mailbox>()
                    .is_err()
                {
                    return self.error(
                        address.span(),
                        format!(
                            "[alerts.email] {field}: {:?} is not an email address",
                            address.get_ref()
                        ),
                    );
                }
            }
        }
        if alerts.enabled() && !config.audit.enabled {
            return self.error(
                0..0,
                "[alerts] needs the audit log ([audit] enabled = true): alerts are read from it"
                    .into(),
            );
        }
        let poll = alerts.poll_interval;
        if poll < Duration::from_millis(50) || poll > Duration::from_secs(60) {
            return self.error(
                0..0,
                format!("[alerts] poll_interval must be between 50ms and 1m, not {poll:?}"),
            );
        }
        if alerts.retry_backoff < Duration::from_millis(10) {
            return self.error(
                0..0,
                format!(
                    "[alerts] retry_backoff must be at least 10ms, not {:?}",
                    alerts.retry_backoff
                ),
            );
        }
        if alerts.max_keys == 0 {
            return self.error(0..0, "[alerts] max_keys must be at least 1".into());
        }
        Ok(())
    }

    fn check(&self, config: &Config) -> Result<(), ConfigError> {
        if config.categories.len() > crate::filter::MAX_CATEGORIES {
            return self.error(
                0..0,
                format!(
                    "{} categories defined; at most {} are supported",
                    config.categories.len(),
                    crate::filter::MAX_CATEGORIES
                ),
            );
        }
        let mut names: BTreeMap<&str, ()> = BTreeMap::new();
        let all_names = config
            .lists
            .iter()
            .map(|l| &l.name)
            .chain(config.allow.iter().map(|a| &a.name))
            .chain(config.deny.iter().map(|d| &d.name));
        for name in all_names {
            let n = name.get_ref().as_str();
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return self.error(
                    name.span(),
                    format!("list name {n:?} must be non-empty and use only letters, digits, '-' and '_'"),
                );
            }
            if names.insert(n, ()).is_some() {
                return self.error(name.span(), format!("list name {n:?} is used twice"));
            }
            if n == crate::engine::DASHBOARD_ALLOW {
                return self.error(
                    name.span(),
                    format!("list name {n:?} is reserved for the dashboard's allow entries"),
                );
            }
        }
        for list in &config.lists {
            self.check_source(config, list)?;
            self.check_redirects(list)?;
        }
        self.check_users(config)?;
        self.check_dashboard_hosts(config)?;
        for list in &config.lists {
            let category = list.category.get_ref();
            if !config.categories.contains_key(category) {
                return self.error(
                    list.category.span(),
                    format!(
                        "list {:?} names undefined category {category:?}; defined categories: {}",
                        list.name.get_ref(),
                        self.defined(config)
                    ),
                );
            }
        }
        for (group, settings) in &config.groups {
            for category in &settings.block {
                if !config.categories.contains_key(category.get_ref()) {
                    return self.error(
                        category.span(),
                        format!(
                            "group {group:?} blocks undefined category {:?}; defined categories: {}",
                            category.get_ref(),
                            self.defined(config)
                        ),
                    );
                }
            }
        }
        self.check_policy(config)?;
        if !config.groups.is_empty() && !config.groups.contains_key(&config.server.default_group) {
            return self.error(
                0..0,
                format!(
                    "[server] default_group {:?} is not defined under [groups]",
                    config.server.default_group
                ),
            );
        }
        for (category, days) in &config.audit.retention_days_by_category {
            if !config.categories.contains_key(category) {
                return self.error(
                    days.span(),
                    format!(
                        "[audit] retention_days_by_category names undefined category {category:?}; defined categories: {}",
                        self.defined(config)
                    ),
                );
            }
        }
        if !(0.0..=1.0).contains(&config.reload.min_ratio) {
            return self.error(
                0..0,
                format!(
                    "[reload] min_ratio must be between 0 and 1, not {}",
                    config.reload.min_ratio
                ),
            );
        }
        self.check_reload(config)?;
        // A century is plenty, and keeps every retention date after 1970.
        const MAX_RETENTION_DAYS: u32 = 36_500;
        let too_long = std::iter::once(config.audit.retention_days)
            .chain(
                config
                    .audit
                    .retention_days_by_category
                    .values()
                    .map(|d| *d.get_ref()),
            )
            .find(|d| *d > MAX_RETENTION_DAYS);
        if let Some(days) = too_long {
            return self.error(
                0..0,
                format!("[audit] retention of {days} days is more than {MAX_RETENTION_DAYS} (a century)"),
            );
        }
        let flush = config.audit.flush_interval;
        if flush.is_zero() || flush > Duration::from_secs(1) {
            return self.error(
                0..0,
                format!("[audit] flush_interval must be between 1ms and 1s, not {flush:?}"),
            );
        }
        self.check_alerts(config)?;
        if config.upstream.servers.is_empty() {
            return self.error(
                0..0,
                "[upstream] servers must name at least one resolver".into(),
            );
        }
        for server in &config.upstream.servers {
            if let Err(e) = crate::upstream::ServerSpec::parse(server.get_ref()) {
                return self.error(server.span(), e.to_string());
            }
        }
        if config.server.listen.is_empty() {
            return self.error(
                0..0,
                "[server] listen must name at least one address".into(),
            );
        }
        let per_client = &config.server.tcp_connections_per_client;
        if *per_client.get_ref() == 0 {
            return self.error(
                per_client.span(),
                "[server] tcp_connections_per_client must be at least 1 (0 would refuse every TCP client)".into(),
            );
        }
        if config.blocking.response == BlockResponse::Ip && config.blocking.block_ip.is_empty() {
            return self.error(
                0..0,
                "[blocking] response = \"ip\" needs block_ip = [\"…\"] (the block-page address)"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("conf/w.toml"))
    }

    #[test]
    fn defaults_fill_an_empty_file() {
        let c = parse("").unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(c.blocking.response, BlockResponse::Nxdomain);
        assert_eq!(c.base_dir, PathBuf::from("conf"));
    }

    #[test]
    fn undefined_category_names_line_and_defined_ones() {
        let text = "[categories.adult]\n\n[[lists]]\nname = \"x\"\ncategory = \"gamblin\"\npath = \"x.txt\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with("conf/w.toml:5:"), "{err}");
        assert!(
            err.contains("\"gamblin\"") && err.contains("defined categories: adult"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_is_refused_with_its_position() {
        let err = parse("[server]\nlisten = []\nlistne = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listne") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn duplicate_list_names_are_refused() {
        let text = "[categories.a]\n[[lists]]\nname = \"x\"\ncategory = \"a\"\npath = \"1\"\n[[allow]]\nname = \"x\"\npath = \"2\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(":7:") && err.contains("used twice"), "{err}");
    }

    #[test]
    fn group_with_undefined_category_is_refused() {
        let text = "[categories.a]\n[groups.default]\nblock = [\"a\", \"b\"]\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(":3:") && err.contains("\"b\""), "{err}");
    }

    #[test]
    fn bad_upstreams_are_refused_at_load_with_their_line() {
        let err = parse("[upstream]\nservers = [\n  \"9.9.9.9:53\",\n  \"dns.quad9.net\",\n]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("conf/w.toml:4:") && err.contains("dns.quad9.net"),
            "{err}"
        );
        let err = parse("[upstream]\nservers = []\n").unwrap_err().to_string();
        assert!(err.contains("at least one resolver"), "{err}");
    }

    #[test]
    fn dashboard_hosts_are_names_without_ports() {
        let c = parse("[dashboard]\nhosts = [\"warden.school.lan\", \"192.168.1.2\"]\n").unwrap();
        assert_eq!(c.dashboard.hosts.len(), 2);
        assert!(parse("").unwrap().dashboard.hosts.is_empty());
        let err = parse("[dashboard]\nhosts = [\n  \"ok.lan\",\n  \"warden.lan:8053\",\n]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("conf/w.toml:4:") && err.contains("without a port"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = parse("[blocking]\nresponse = \"drop\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("response") || err.contains("drop"), "{err}");
        let err = parse("[upstream]\ntimeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
