//! The checks that need the whole file, and turning positions into `file:line`.
//!
//! Values were parsed into their types (and checked against their ranges) by the
//! deserializer; what is left is how sections refer to each other: lists name defined
//! categories, clients and allow lists name defined groups, no group or schedule
//! unblocks a locked category, names are unique, a channel has what it needs. Each check
//! reports the line of the value at fault; a setting that is at fault only because of a
//! default (an undefined default group) names the line of the section that makes it so.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::{BlockResponse, Config, ConfigError, ListConfig, StartTls};
use super::{CIRCUMVENTION, DASHBOARD_ALLOW, MAX_CATEGORIES};

/// A parse or type error from the TOML parser, as `file:line: [section] key: message`.
pub(super) fn parse_error(text: &str, path: &Path, error: &toml::de::Error) -> ConfigError {
    let Some(span) = error.span() else {
        return ConfigError::Syntax {
            path: path.to_path_buf(),
            message: error.message().trim_end().to_string(),
        };
    };
    let line = line_of(text, value_start(text, span, error.message()));
    let message = match field_at(text, line) {
        Some(field) => format!("{field}: {}", error.message().trim_end()),
        None => error.message().trim_end().to_string(),
    };
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// Where the value at fault starts. The parser reports an error in an array's element at
/// the array; the typed values' errors begin with the text they refused, quoted, so the
/// element is found by that text within the array (the array's start if it is not).
fn value_start(text: &str, span: Range<usize>, message: &str) -> usize {
    let quoted = message
        .strip_prefix('"')
        .and_then(|rest| rest.find('"').map(|end| &message[..end + 2]));
    let within = text.get(span.clone()).unwrap_or("");
    quoted
        .and_then(|q| within.find(q))
        .map_or(span.start, |at| span.start + at)
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The field on `line` as a reader would name it: `[section] key`. The key is the one
/// assigned on that line, or (inside a multi-line array or table) the nearest one above.
fn field_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().take(line).collect();
    let header = lines.iter().rev().find_map(|l| table_header(l));
    let key = lines
        .iter()
        .rev()
        .take_while(|l| table_header(l).is_none())
        .find_map(|l| assigned_key(l));
    match (header, key) {
        (Some(h), Some(k)) => Some(format!("{h} {k}")),
        (None, Some(k)) => Some(k.to_string()),
        (Some(h), None) => Some(h.to_string()),
        (None, None) => None,
    }
}

/// `servers` in `servers = [` (or `"a key" = 1`).
fn assigned_key(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let plain = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'));
    (!key.is_empty() && plain).then_some(key.trim_matches('"'))
}

/// `[server.rate_limit]` or `[[lists]]`: a table header line, as written.
fn table_header(line: &str) -> Option<&str> {
    let line = line.trim();
    (line.starts_with('[') && line.ends_with(']')).then_some(line)
}

/// Whole-file checks, with the source text at hand to turn spans into line numbers.
pub(super) struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl<'a> Validator<'a> {
    pub(super) fn new(text: &'a str, path: &'a Path) -> Validator<'a> {
        Validator { text, path }
    }

    /// Every check, in the order a reader would fix them.
    pub(super) fn check(&self, config: &Config) -> Result<(), ConfigError> {
        self.check_categories(config)?;
        self.check_list_names(config)?;
        for list in &config.lists {
            self.check_list(config, list)?;
        }
        self.check_users(config)?;
        self.check_groups(config)?;
        self.check_members(config)?;
        self.check_retention(config)?;
        self.check_alerts(config)?;
        self.check_email(config)?;
        self.check_fleet(config)?;
        self.check_selftest(config)?;
        self.check_blocking(config)
    }

    /// `[selftest]` checks defined groups; each canary is a name that can be asked.
    fn check_selftest(&self, config: &Config) -> Result<(), ConfigError> {
        for group in &config.selftest.groups {
            self.group_exists(config, group, "[selftest] groups")?;
        }
        for (name, category) in &config.categories {
            let Some(canary) = &category.canary else {
                continue;
            };
            let text = canary.get_ref().trim_end_matches('.');
            if !valid_hostname(text) || !text.contains('.') {
                return self.error(
                    canary.span(),
                    format!(
                        "[categories.{name}] canary {:?} is not a domain name (like \"canary.example.org\")",
                        canary.get_ref()
                    ),
                );
            }
        }
        Ok(())
    }

    /// `[fleet]`: a PostgreSQL URL without a password (it would be logged), TLS unless
    /// the database is on this machine, one source for the password, a usable site name,
    /// and an audit log to ship.
    fn check_fleet(&self, config: &Config) -> Result<(), ConfigError> {
        let Some(fleet) = &config.fleet else {
            return Ok(());
        };
        self.check_fleet_database(fleet)?;
        let span = fleet.database.span();
        if fleet.password_file.is_some() && fleet.password_env.is_some() {
            return self.error(
                span,
                "[fleet] password_file and password_env: give one, not both".into(),
            );
        }
        if let Some(site) = &fleet.site {
            if let Some(problem) = super::site_name_problem(site.get_ref()) {
                return self.error(site.span(), problem);
            }
        }
        let batch = *fleet.batch_rows.get_ref();
        if !(1..=super::MAX_BATCH_ROWS).contains(&batch) {
            return self.error(
                fleet.batch_rows.span(),
                format!(
                    "[fleet] batch_rows must be 1 to {}, not {batch}",
                    super::MAX_BATCH_ROWS
                ),
            );
        }
        if !config.audit.enabled() {
            return self.error(
                span,
                "[fleet] needs the audit log ([audit] enabled = true): it ships the log".into(),
            );
        }
        Ok(())
    }

    /// `[fleet] database`: a PostgreSQL URL naming a user, a database and a host, with no
    /// password in it, and TLS unless the database is on this machine.
    fn check_fleet_database(&self, fleet: &super::FleetConfig) -> Result<(), ConfigError> {
        let url = fleet.database.get_ref();
        let span = fleet.database.span();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return self.error(
                span,
                "[fleet] database must be a postgres:// URL (postgres://user@host/database)".into(),
            );
        }
        let parsed = match url.parse::<tokio_postgres::Config>() {
            Ok(parsed) => parsed,
            Err(e) => {
                return self.error(
                    span,
                    format!("[fleet] database is not a PostgreSQL URL: {e}"),
                )
            }
        };
        if parsed.get_password().is_some() {
            return self.error(
                span,
                "[fleet] database holds a password: URLs are logged and shown in errors; \
                 put it in password_file or password_env"
                    .into(),
            );
        }
        if parsed.get_user().is_none() {
            return self.error(
                span,
                "[fleet] database names no user (postgres://user@host/db)".into(),
            );
        }
        if parsed.get_dbname().is_none() {
            return self.error(
                span,
                "[fleet] database names no database (postgres://user@host/db)".into(),
            );
        }
        if parsed.get_hosts().is_empty() {
            return self.error(span, "[fleet] database names no host".into());
        }
        if parsed.get_ssl_mode() == tokio_postgres::config::SslMode::Disable
            && !super::fleet::hosts_are_local(&parsed)
        {
            return self.error(
                span,
                "[fleet] sslmode=disable is only for a database on this machine: the audit \
                 log crosses the network encrypted"
                    .into(),
            );
        }
        Ok(())
    }

    fn error<T>(&self, span: Range<usize>, message: String) -> Result<T, ConfigError> {
        self.error_at(line_of(self.text, span.start), message)
    }

    fn error_at<T>(&self, line: usize, message: String) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            message,
        })
    }

    /// The line of the first table header that starts with `prefix` (`[groups`), for an
    /// error about a section as a whole.
    fn header_line(&self, prefix: &str) -> usize {
        self.text
            .lines()
            .position(|l| l.trim_start().starts_with(prefix))
            .map_or(1, |i| i + 1)
    }

    /// No more categories than the matcher can hold.
    fn check_categories(&self, config: &Config) -> Result<(), ConfigError> {
        if config.categories.len() <= MAX_CATEGORIES {
            return Ok(());
        }
        // The last one defined is the one too many (the built-in one is not in the file).
        let lines: Vec<&str> = self.text.lines().collect();
        let line = lines
            .iter()
            .rposition(|l| l.trim_start().starts_with("[categories."))
            .map_or(1, |i| i + 1);
        self.error_at(
            line,
            format!(
                "{} categories defined; at most {MAX_CATEGORIES} are supported",
                config.categories.len()
            ),
        )
    }

    /// Every list name (block, allow and deny lists share one namespace) is plain, unique
    /// and not the dashboard's.
    fn check_list_names(&self, config: &Config) -> Result<(), ConfigError> {
        let mut names = BTreeSet::new();
        let all_names = config
            .lists
            .iter()
            .map(|l| &l.name)
            .chain(config.allow.iter().map(|a| &a.name))
            .chain(config.deny.iter().map(|d| &d.name));
        for name in all_names {
            let n = name.get_ref().as_str();
            let plain = n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if n.is_empty() || !plain {
                return self.error(
                    name.span(),
                    format!("list name {n:?} must be non-empty and use only letters, digits, '-' and '_'"),
                );
            }
            if !names.insert(n) {
                return self.error(name.span(), format!("list name {n:?} is used twice"));
            }
            if n == DASHBOARD_ALLOW {
                return self.error(
                    name.span(),
                    format!("list name {n:?} is reserved for the dashboard's allow entries"),
                );
            }
        }
        Ok(())
    }

    /// A block list: a defined category, exactly one of `path` and `url`, URL options
    /// only with a URL, `max_age` only for a locked category.
    fn check_list(&self, config: &Config, list: &ListConfig) -> Result<(), ConfigError> {
        let name = list.name.get_ref();
        self.category_exists(config, &list.category, &format!("list {name:?} names"))?;
        let at = list.name.span();
        match (&list.path, &list.url) {
            (Some(_), Some(_)) => {
                return self.error(at, format!("list {name:?} has both path and url; give one"))
            }
            (None, None) => return self.error(at, format!("list {name:?} needs a path or a url")),
            (Some(_), None)
                if list.auth_header_file.is_some() || list.auth_header_env.is_some() =>
            {
                return self.error(
                    at,
                    format!("list {name:?}: auth_header_file and auth_header_env need a url"),
                );
            }
            _ => {}
        }
        if list.auth_header_file.is_some() && list.auth_header_env.is_some() {
            return self.error(
                at,
                format!("list {name:?}: give auth_header_file or auth_header_env, not both"),
            );
        }
        if let (Some(origin), None) = (list.allow_redirect_to.first(), &list.url) {
            return self.error(
                origin.span(),
                format!("list {name:?}: allow_redirect_to needs a url"),
            );
        }
        let locked = config
            .categories
            .get(list.category.get_ref())
            .is_some_and(|c| c.locked);
        if list.max_age.is_some() && !locked {
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

    /// User names are unique and plain; every password hash is an Argon2 PHC string.
    fn check_users(&self, config: &Config) -> Result<(), ConfigError> {
        let mut seen = BTreeSet::new();
        for user in &config.users {
            let name = user.name.get_ref();
            if let Err(reason) = super::check_user_name(name) {
                return self.error(user.name.span(), format!("[[users]] name: {reason}"));
            }
            if !seen.insert(name.as_str()) {
                return self.error(
                    user.name.span(),
                    format!("[[users]] name {name:?} is used twice"),
                );
            }
            if let Some(sites) = &user.sites {
                self.check_user_sites(name, user.name.span(), sites)?;
            }
            let argon = argon2::PasswordHash::new(user.password_hash.get_ref())
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
            self.check_second_factor(user)?;
        }
        Ok(())
    }

    /// A user's TOTP secret decodes and is long enough; recovery codes are kept as
    /// hashes, and only beside a secret.
    fn check_second_factor(&self, user: &super::UserConfig) -> Result<(), ConfigError> {
        let name = user.name.get_ref();
        if let Some(secret) = &user.totp_secret {
            if let Err(problem) = super::decode_totp_secret(secret.get_ref()) {
                return self.error(
                    secret.span(),
                    format!(
                        "[[users]] {name:?}: totp_secret {problem}; \
                         set it up again with `warden user 2fa {name}`"
                    ),
                );
            }
        }
        for code in &user.recovery_codes {
            if user.totp_secret.is_none() {
                return self.error(
                    code.span(),
                    format!("[[users]] {name:?}: recovery_codes without a totp_secret"),
                );
            }
            if !super::is_recovery_hash(code.get_ref()) {
                return self.error(
                    code.span(),
                    format!(
                        "[[users]] {name:?}: recovery_codes holds what is not a SHA-256 \
                         hash; they are written by `warden user 2fa {name}`"
                    ),
                );
            }
        }
        Ok(())
    }

    /// A user's `sites` names at least one site, each a usable site name.
    fn check_user_sites(
        &self,
        name: &str,
        name_span: Range<usize>,
        sites: &[Spanned<String>],
    ) -> Result<(), ConfigError> {
        if sites.is_empty() {
            return self.error(
                name_span,
                format!(
                    "[[users]] {name:?}: sites = [] would show them no site: name their \
                     sites, or leave sites out for a trust-wide user"
                ),
            );
        }
        for site in sites {
            if let Some(problem) = super::site_name_problem(site.get_ref()) {
                return self.error(site.span(), format!("[[users]] {name:?} sites: {problem}"));
            }
        }
        Ok(())
    }

    /// Groups block defined categories; the default group exists; no group turns off a
    /// locked circumvention category; schedules are sound.
    fn check_groups(&self, config: &Config) -> Result<(), ConfigError> {
        let default = &config.server.default_group;
        if !config.groups.is_empty() && !config.groups.contains_key(default.get_ref()) {
            let line = match default.span() {
                span if span.is_empty() => self.header_line("[groups"),
                span => line_of(self.text, span.start),
            };
            return self.error_at(
                line,
                format!(
                    "[server] default_group {:?} is not defined under [groups]",
                    default.get_ref()
                ),
            );
        }
        let locked = |c: &str| config.categories.get(c).is_some_and(|c| c.locked);
        for (group, settings) in &config.groups {
            for category in &settings.block {
                self.category_exists(config, category, &format!("group {group:?} blocks"))?;
            }
            for category in &settings.required {
                self.category_exists(config, category, &format!("group {group:?} requires"))?;
            }
            if !settings.circumvention.get_ref() && locked(CIRCUMVENTION) {
                return self.error(
                    settings.circumvention.span(),
                    format!("group {group:?}: circumvention is a locked category here; no group can turn it off"),
                );
            }
            for window in &settings.schedule {
                self.check_window(config, group, window)?;
            }
        }
        Ok(())
    }

    /// A schedule window names defined categories, allows no locked one, does something,
    /// and does not start and end at the same time.
    fn check_window(
        &self,
        config: &Config,
        group: &str,
        window: &super::ScheduleConfig,
    ) -> Result<(), ConfigError> {
        let what = format!("group {group:?} schedule");
        for category in window.block.iter().chain(&window.allow) {
            self.category_exists(config, category, &format!("{what} names"))?;
        }
        let locked = |c: &str| config.categories.get(c).is_some_and(|c| c.locked);
        if let Some(category) = window.allow.iter().find(|c| locked(c.get_ref())) {
            return self.error(
                category.span(),
                format!(
                    "{what}: category {:?} is locked: it is blocked for every group at \
                     all times, and no schedule, group or allow entry can allow it",
                    category.get_ref()
                ),
            );
        }
        if window.block.is_empty() && window.allow.is_empty() {
            return self.error(
                window.from.span(),
                format!("{what}: the window neither blocks nor allows a category"),
            );
        }
        if *window.from.get_ref() == window.to {
            return self.error(
                window.from.span(),
                format!(
                    "{what}: the window starts and ends at the same time ({})",
                    window.to
                ),
            );
        }
        Ok(())
    }

    /// Clients, allow lists and deny lists name defined groups.
    fn check_members(&self, config: &Config) -> Result<(), ConfigError> {
        for client in &config.clients {
            self.group_exists(config, &client.group, "[[clients]]")?;
            if client.cidr.is_some() == client.mac.is_some() {
                return self.error(
                    client.group.span(),
                    "[[clients]] needs a cidr or a mac, and not both (one entry per \
                     network or device)"
                        .to_string(),
                );
            }
            // A device name is written into the audit log, shown on the dashboard and
            // shipped to the fleet's PostgreSQL (whose text cannot hold a NUL byte).
            if let Some(name) = client
                .name
                .as_deref()
                .filter(|n| n.chars().any(char::is_control))
            {
                return self.error(
                    client.group.span(),
                    format!("[[clients]] name {name:?} holds a control character"),
                );
            }
        }
        for entry in &config.users_to_groups {
            self.group_exists(config, &entry.group, "[[users_to_groups]]")?;
            if entry.user.is_some() == entry.directory_group.is_some() {
                return self.error(
                    entry.group.span(),
                    "[[users_to_groups]] needs a directory_group or a user, and not both"
                        .to_string(),
                );
            }
        }
        self.check_feeds(config)?;
        self.check_encrypted(config)?;
        for allow in &config.allow {
            let what = format!("allow list {:?}", allow.name.get_ref());
            for group in &allow.groups {
                self.group_exists(config, group, &what)?;
            }
        }
        for deny in &config.deny {
            let what = format!("deny list {:?}", deny.name.get_ref());
            for group in &deny.groups {
                self.group_exists(config, group, &what)?;
            }
        }
        Ok(())
    }

    /// Per-category retention names defined categories.
    fn check_retention(&self, config: &Config) -> Result<(), ConfigError> {
        for (category, days) in &config.audit.retention_days_by_category {
            if !config.categories.contains_key(category) {
                return self.error(
                    days.span(),
                    format!(
                        "[audit] retention_days_by_category names undefined category {category:?}; defined categories: {}",
                        config.category_names()
                    ),
                );
            }
        }
        Ok(())
    }

    /// Alerts are read from the audit log, and the webhook's header needs a webhook.
    fn check_alerts(&self, config: &Config) -> Result<(), ConfigError> {
        let alerts = &config.alerts;
        if let (None, Some(file)) = (&alerts.webhook, &alerts.webhook_auth_header_file) {
            return self.error(
                file.span(),
                "[alerts] webhook_auth_header_file needs a webhook".into(),
            );
        }
        if alerts.enabled() && !config.audit.enabled() {
            return self.error(
                config.audit.enabled.span(),
                "[alerts] needs the audit log ([audit] enabled = true): alerts are read from it"
                    .into(),
            );
        }
        Ok(())
    }

    /// `[alerts.email]`: a host, encryption unless the relay is on this machine, both or
    /// neither of the credentials, and someone to send to.
    fn check_email(&self, config: &Config) -> Result<(), ConfigError> {
        let Some(email) = &config.alerts.email else {
            return Ok(());
        };
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
        Ok(())
    }

    /// `response = "ip"` needs the block page's address.
    fn check_blocking(&self, config: &Config) -> Result<(), ConfigError> {
        let response = &config.blocking.response;
        if *response.get_ref() == BlockResponse::Ip && config.blocking.block_ip.is_empty() {
            return self.error(
                response.span(),
                "[blocking] response = \"ip\" needs block_ip = [\"…\"] (the block-page address)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Sign-in feeds have distinct names fit for the audit log; RADIUS accounting names
    /// the controllers that may send it.
    fn check_feeds(&self, config: &Config) -> Result<(), ConfigError> {
        if let Some(radius) = &config.identity.radius {
            if radius.clients.get_ref().is_empty() {
                return self.error(
                    radius.clients.span(),
                    "[identity.radius] clients is empty: name the controllers (addresses or networks) that send accounting".into(),
                );
            }
        }
        let mut seen = std::collections::HashSet::new();
        for feed in &config.identity.feeds {
            let name = feed.name.get_ref();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return self.error(
                    feed.name.span(),
                    format!("[[identity.feeds]] name {name:?}: only letters, digits, '-' and '_'"),
                );
            }
            if !seen.insert(name.as_str()) {
                return self.error(
                    feed.name.span(),
                    format!("[[identity.feeds]] name {name:?} is used twice"),
                );
            }
        }
        Ok(())
    }

    /// `[encrypted]` names a usable host and both certificate files or neither; every
    /// `[[devices]]` entry has an ID fit for a TLS name, used once, and a known group.
    fn check_encrypted(&self, config: &Config) -> Result<(), ConfigError> {
        let encrypted = &config.encrypted;
        let host = encrypted.hostname.get_ref();
        if !valid_hostname(host) {
            return self.error(
                encrypted.hostname.span(),
                format!("[encrypted] hostname {host:?} is not a DNS name (warden.school.example)"),
            );
        }
        if encrypted.cert_file.is_some() != encrypted.key_file.is_some() {
            return self.error_at(
                self.header_line("[encrypted]"),
                "[encrypted] cert_file and key_file go together (neither: a self-signed certificate)".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for device in &config.devices {
            let id = device.id.get_ref();
            if !super::valid_device_id(id) {
                return self.error(
                    device.id.span(),
                    format!(
                        "[[devices]] id of {:?}: 8 to 63 lowercase letters and digits",
                        device.name
                    ),
                );
            }
            if !seen.insert(id.as_str()) {
                return self.error(
                    device.id.span(),
                    format!("[[devices]] id of {:?} is used twice", device.name),
                );
            }
            let texts = [Some(device.name.as_str()), device.user.as_deref()];
            if device.name.is_empty()
                || texts
                    .iter()
                    .flatten()
                    .any(|t| t.chars().any(char::is_control))
            {
                return self.error(
                    device.id.span(),
                    format!(
                        "[[devices]] {:?}: the name is empty or a name holds a control character",
                        device.name
                    ),
                );
            }
            self.group_exists(config, &device.group, "[[devices]]")?;
        }
        Ok(())
    }

    /// The group a client or list names exists.
    fn group_exists(
        &self,
        config: &Config,
        group: &Spanned<String>,
        what: &str,
    ) -> Result<(), ConfigError> {
        let name = group.get_ref();
        let default = config.default_group();
        let known = if config.groups.is_empty() {
            name == default
        } else {
            config.groups.contains_key(name)
        };
        if known {
            return Ok(());
        }
        let defined = if config.groups.is_empty() {
            format!("{default} (the default group; add [groups.NAME] sections for more)")
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
                "{what} undefined category {:?}; defined categories: {}",
                category.get_ref(),
                config.category_names()
            ),
        )
    }
}

/// Whether `host` is a DNS host name: dot-separated labels of letters, digits and
/// hyphens (not at either end of a label), 253 characters at most.
fn valid_hostname(host: &str) -> bool {
    host.len() <= 253
        && !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
