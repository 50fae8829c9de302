//! The settings a running Warden reads once, at start-up, and so cannot take from a
//! reload: the listeners (DNS, admin, block page), the audit log and its writer, the
//! alerts, the list downloads and the file watcher. A reload applies everything else
//! (the snapshot, and with it the forwarder, the rate and TCP limits, the networks).
//!
//! [`needed`] compares a reloaded config with the one the process started with and
//! names each such setting whose value differs, so the reload can say so (in its
//! result, the log and `/metrics`) rather than the file and the process silently
//! disagreeing. Each section's fields are listed by destructuring: a new config field
//! does not compile until it is sorted here into "applies on reload" or "needs a
//! restart".

use std::collections::BTreeSet;

use crate::config::{
    AdminConfig, AlertsConfig, AuditConfig, Config, DashboardConfig, EncryptedConfig,
    IdentityConfig, ListConfig, ReloadConfig, ServerConfig, SourcesConfig,
};

/// The settings that differ between `started` (the config the process started with)
/// and `new` and that only a restart applies, each named as in the file
/// (`[server] listen`, `[[lists]] NAME url`), in the file's section order.
pub fn needed(started: &Config, new: &Config) -> Vec<String> {
    let mut diff = Diff(Vec::new());
    // Every section, so a new one must be sorted too. `_`: applies on reload (read from
    // the snapshot by every query or request, or built into it).
    let Config {
        server,
        upstream: _,
        blocking: _,
        rebinding: _,
        audit,
        reload,
        admin,
        sources,
        categories: _, // descriptions in alert messages: see `alert_wording`
        groups: _,
        lists: _, // downloads: see `downloads`
        allow: _,
        deny: _,
        clients: _,
        dashboard,
        users: _,
        alerts,
        fleet,
        identity,
        users_to_groups: _, // built into the snapshot's policy
        encrypted,
        devices: _,  // built into the snapshot's policy
        selftest: _, // read from the snapshot at each run
        base_dir: _, // the same file's folder
        path: _,
    } = started;
    diff.server(server, &new.server);
    diff.audit(audit, &new.audit);
    diff.reload(reload, &new.reload, has_downloads(started));
    diff.admin(admin, &new.admin);
    diff.sources(sources, &new.sources, has_downloads(started));
    diff.downloads(started, new);
    diff.dashboard(dashboard, &new.dashboard);
    diff.alerts(alerts, &new.alerts);
    // The shipper is started once, with its database, site and schedule.
    diff.check("[fleet]", fleet, &new.fleet);
    diff.identity(identity, &new.identity);
    diff.encrypted(encrypted, &new.encrypted);
    if alerts.enabled() && audit.enabled() {
        diff.alert_wording(started, new);
    }
    diff.0
}

/// Does `config` download any list (then a refresher runs for each, from start-up)?
fn has_downloads(config: &Config) -> bool {
    config.lists.iter().any(|l| l.url.is_some())
}

/// The settings found to differ so far.
struct Diff(Vec<String>);

impl Diff {
    fn check<T: PartialEq + ?Sized>(&mut self, setting: &str, started: &T, new: &T) {
        if started != new {
            self.0.push(setting.to_string());
        }
    }

    fn server(&mut self, started: &ServerConfig, new: &ServerConfig) {
        let ServerConfig {
            listen,
            default_group: _,
            tcp_timeout: _,                // the TCP table follows reloads
            tcp_max_connections: _,        // ditto
            tcp_connections_per_client: _, // ditto
            timezone: _,                   // schedules: the snapshot's; alerts: see below
            dhcp_leases: _,                // read at each build
            allow_networks: _,             // the snapshot's policy
            rate_limit: _,                 // read from the snapshot by each query
            trusted_forwarders: _,         // the snapshot's policy
            proxy_protocol: _,             // read from the snapshot by each connection
        } = started;
        self.check("[server] listen", listen, &new.listen);
    }

    /// The RADIUS listener and the sessions file's watcher start once, with their
    /// settings; feeds are read by each request, the directory by each build, and the
    /// session lifetime from the sign-ins map, which each reload sets.
    fn identity(&mut self, started: &IdentityConfig, new: &IdentityConfig) {
        let IdentityConfig {
            session_lifetime: _,
            directory: _,
            sessions_file,
            radius,
            feeds: _,
            state_file,
        } = started;
        self.check("[identity] state_file", state_file, &new.state_file);
        self.check(
            "[identity] sessions_file",
            sessions_file,
            &new.sessions_file,
        );
        self.check("[identity.radius]", radius, &new.radius);
    }

    /// The encrypted listeners bind once, with their certificate's files and name; what
    /// an unknown ID gets and the device rate are read by each query, and the
    /// certificate's contents are re-read when the files change.
    fn encrypted(&mut self, started: &EncryptedConfig, new: &EncryptedConfig) {
        let EncryptedConfig {
            dot_listen,
            doh_listen,
            hostname,
            cert_file,
            key_file,
            self_signed_dir,
            unknown_device: _,
            addresses: _,   // read by `warden device profile`
            public_port: _, // read by `warden device profile`
            device_rate_limit: _,
        } = started;
        self.check("[encrypted] dot_listen", dot_listen, &new.dot_listen);
        self.check("[encrypted] doh_listen", doh_listen, &new.doh_listen);
        self.check(
            "[encrypted] hostname",
            hostname.get_ref(),
            new.hostname.get_ref(),
        );
        self.check("[encrypted] cert_file", cert_file, &new.cert_file);
        self.check("[encrypted] key_file", key_file, &new.key_file);
        self.check(
            "[encrypted] self_signed_dir",
            self_signed_dir,
            &new.self_signed_dir,
        );
    }

    /// Read at start to open the log and start its writer; `log_allowed` is read by
    /// each query. With the log off before and after, its other settings do nothing.
    fn audit(&mut self, started: &AuditConfig, new: &AuditConfig) {
        let AuditConfig {
            enabled,
            path,
            window,
            flush_interval,
            retention_days,
            retention_days_by_category,
            log_allowed: _,
            max_pending,
            max_pending_per_client,
        } = started;
        self.check("[audit] enabled", enabled, &new.enabled);
        if !(*enabled.get_ref() && new.enabled()) {
            return;
        }
        self.check("[audit] path", path, &new.path);
        self.check("[audit] window", window, &new.window);
        self.check(
            "[audit] flush_interval",
            flush_interval,
            &new.flush_interval,
        );
        self.check(
            "[audit] retention_days",
            retention_days,
            &new.retention_days,
        );
        self.check(
            "[audit] retention_days_by_category",
            retention_days_by_category,
            &new.retention_days_by_category,
        );
        self.check("[audit] max_pending", max_pending, &new.max_pending);
        self.check(
            "[audit] max_pending_per_client",
            max_pending_per_client,
            &new.max_pending_per_client,
        );
    }

    /// The watcher starts (or not) at start-up; downloads check what they fetch with
    /// the start-up ratio and size (reloads themselves use the new ones).
    fn reload(&mut self, started: &ReloadConfig, new: &ReloadConfig, downloads: bool) {
        let ReloadConfig {
            min_ratio,
            watch_files,
            max_list_bytes,
            timeout: _,
        } = started;
        self.check("[reload] watch_files", watch_files, &new.watch_files);
        if downloads {
            let (ratio, bytes) = (&new.min_ratio, &new.max_list_bytes);
            self.check("[reload] min_ratio (for downloads)", min_ratio, ratio);
            self.check(
                "[reload] max_list_bytes (for downloads)",
                max_list_bytes,
                bytes,
            );
        }
    }

    /// The listener is bound and its token read at start-up.
    fn admin(&mut self, started: &AdminConfig, new: &AdminConfig) {
        let AdminConfig {
            enabled,
            listen,
            token_file,
        } = started;
        self.check("[admin] enabled", enabled, &new.enabled);
        if *enabled && new.enabled {
            self.check("[admin] listen", listen, &new.listen);
            self.check("[admin] token_file", token_file, &new.token_file);
        }
    }

    /// The download client and the cache folder are set at start-up.
    fn sources(&mut self, started: &SourcesConfig, new: &SourcesConfig, downloads: bool) {
        let SourcesConfig {
            cache_dir,
            timeout,
            max_size,
        } = started;
        if downloads {
            self.check("[sources] cache_dir", cache_dir, &new.cache_dir);
            self.check("[sources] timeout", timeout, &new.timeout);
            self.check("[sources] max_size", max_size, &new.max_size);
        }
    }

    /// Each `url` list gets its refresher at start-up, with what to fetch, how often
    /// and how to check it; the staleness watch starts only if some list had a
    /// `max_age` then. A `url` list added or removed by a reload is reported as its
    /// `url`.
    fn downloads<'a>(&mut self, started: &'a Config, new: &'a Config) {
        let urls = |config: &Config| -> BTreeSet<String> {
            let url_lists = config.lists.iter().filter(|l| l.url.is_some());
            url_lists.map(|l| l.name.get_ref().clone()).collect()
        };
        for name in urls(started).union(&urls(new)) {
            let find = |config: &'a Config| -> Option<&'a ListConfig> {
                let mut lists = config.lists.iter();
                lists.find(|l| l.name.get_ref() == name && l.url.is_some())
            };
            match (find(started), find(new)) {
                (Some(old), Some(now)) => self.download(name, old, now),
                _ => self.0.push(format!("[[lists]] {name} url")),
            }
        }
        let watched = started.lists.iter().any(|l| l.max_age.is_some());
        for list in new.lists.iter().filter(|l| l.max_age.is_some() && !watched) {
            self.0
                .push(format!("[[lists]] {} max_age", list.name.get_ref()));
        }
    }

    /// One `url` list's download settings, as its refresher took them at start-up.
    fn download(&mut self, name: &str, started: &ListConfig, new: &ListConfig) {
        let ListConfig {
            name: _,
            category: _, // the snapshot's
            path,
            url,
            auth_header_file,
            auth_header_env,
            refresh,
            max_age: _, // the staleness watch reads the snapshot's
            format,
            min_entries,
            allow_redirect_to,
        } = started;
        let mut field = |field: &str, same: bool| {
            if !same {
                self.0.push(format!("[[lists]] {name} {field}"));
            }
        };
        field("url", *url == new.url);
        field("path", *path == new.path);
        field("refresh", *refresh == new.refresh);
        field("format", *format == new.format);
        field("min_entries", *min_entries == new.min_entries);
        field(
            "auth_header_file",
            *auth_header_file == new.auth_header_file,
        );
        field("auth_header_env", *auth_header_env == new.auth_header_env);
        field(
            "allow_redirect_to",
            *allow_redirect_to == new.allow_redirect_to,
        );
    }

    /// Whether the dashboard is served, and the block page's listener, are decided at
    /// start-up; the rest is read from the snapshot by each request.
    fn dashboard(&mut self, started: &DashboardConfig, new: &DashboardConfig) {
        let DashboardConfig {
            enabled,
            session_ttl: _,
            secure_cookie: _,
            allow_file: _,
            contact: _,
            organisation: _,
            block_page,
            hosts: _,
            require_2fa_for: _,
        } = started;
        self.check("[dashboard] enabled", enabled, &new.enabled);
        self.check("[dashboard] block_page", block_page, &new.block_page);
    }

    /// `[alerts]` is read once at start-up (its doc says so), every field of it.
    fn alerts(&mut self, started: &AlertsConfig, new: &AlertsConfig) {
        let AlertsConfig {
            webhook,
            webhook_auth_header_file,
            email,
            dashboard_url,
            poll_interval,
            rate_window,
            retry_backoff,
            retry_for,
            max_keys,
        } = started;
        self.check("[alerts] webhook", webhook, &new.webhook);
        let auth = (webhook_auth_header_file, &new.webhook_auth_header_file);
        self.check("[alerts] webhook_auth_header_file", auth.0, auth.1);
        self.check("[alerts.email]", email, &new.email);
        self.check("[alerts] dashboard_url", dashboard_url, &new.dashboard_url);
        self.check("[alerts] poll_interval", poll_interval, &new.poll_interval);
        self.check("[alerts] rate_window", rate_window, &new.rate_window);
        self.check("[alerts] retry_backoff", retry_backoff, &new.retry_backoff);
        self.check("[alerts] retry_for", retry_for, &new.retry_for);
        self.check("[alerts] max_keys", max_keys, &new.max_keys);
    }

    /// Running alerts word their messages with the time zone and the category
    /// descriptions they started with.
    fn alert_wording(&mut self, started: &Config, new: &Config) {
        let zone = (&started.server.timezone, &new.server.timezone);
        self.check("[server] timezone (for alerts)", zone.0, zone.1);
        for (name, category) in &new.categories {
            let before = started.categories.get(name).map(|c| &c.description);
            if before.is_some_and(|d| *d != category.description) {
                let setting = format!("[categories.{name}] description (for alerts)");
                self.0.push(setting);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("w.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    const BASE: &str = r#"
[server]
listen = ["127.0.0.1:5353"]
[admin]
listen = "127.0.0.1:8053"
[upstream]
servers = ["127.0.0.1:53"]
[categories.adult]
description = "Adult content"
"#;

    /// One edit of a config.
    type Change = Box<dyn FnOnce(&mut Config)>;

    /// What `needed` says of BASE changed by `change`.
    fn after(change: impl FnOnce(&mut Config)) -> Vec<String> {
        let started = config(BASE);
        let mut new = started.clone();
        change(&mut new);
        needed(&started, &new)
    }

    #[test]
    fn the_same_config_needs_nothing() {
        assert_eq!(needed(&config(BASE), &config(BASE)), Vec::<String>::new());
    }

    #[test]
    fn each_start_up_setting_is_named_when_it_changes() {
        fn addr(text: &str) -> std::net::SocketAddr {
            text.parse().unwrap()
        }
        let cases: Vec<(&str, Change)> = vec![
            (
                "[server] listen",
                Box::new(|c| c.server.listen = vec![addr("127.0.0.1:5354")]),
            ),
            (
                "[admin] listen",
                Box::new(|c| c.admin.listen = addr("127.0.0.1:8054")),
            ),
            ("[admin] enabled", Box::new(|c| c.admin.enabled = false)),
            (
                "[admin] token_file",
                Box::new(|c| c.admin.token_file = "t".into()),
            ),
            (
                "[dashboard] enabled",
                Box::new(|c| c.dashboard.enabled = false),
            ),
            (
                "[dashboard] block_page",
                Box::new(|c| c.dashboard.block_page = Some(addr("127.0.0.1:80"))),
            ),
            (
                "[audit] enabled",
                Box::new(|c| c.audit.enabled = toml::Spanned::new(0..0, false)),
            ),
            (
                "[audit] path",
                Box::new(|c| c.audit.path = "a.sqlite".into()),
            ),
            ("[audit] window", Box::new(|c| c.audit.window *= 2)),
            (
                "[audit] flush_interval",
                Box::new(|c| c.audit.flush_interval /= 2),
            ),
            (
                "[audit] retention_days",
                Box::new(|c| c.audit.retention_days = 30),
            ),
            (
                "[audit] max_pending",
                Box::new(|c| c.audit.max_pending = 10),
            ),
            (
                "[reload] watch_files",
                Box::new(|c| c.reload.watch_files = false),
            ),
            (
                "[alerts] rate_window",
                Box::new(|c| c.alerts.rate_window *= 2),
            ),
            ("[alerts] max_keys", Box::new(|c| c.alerts.max_keys = 1)),
        ];
        for (setting, change) in cases {
            assert_eq!(after(change), vec![setting.to_string()], "{setting}");
        }
    }

    #[test]
    fn what_a_reload_applies_is_not_named() {
        let cases: Vec<Change> = vec![
            Box::new(|c| c.upstream = config("[upstream]\nservers = [\"127.0.0.2:53\"]").upstream),
            Box::new(|c| c.upstream.cache_size = 10),
            Box::new(|c| c.server.tcp_max_connections = 4),
            Box::new(|c| c.server.tcp_timeout *= 2),
            Box::new(|c| c.server.rate_limit.qps = 1.0),
            Box::new(|c| c.server.allow_networks.clear()),
            Box::new(|c| c.server.default_group = toml::Spanned::new(0..0, "staff".into())),
            Box::new(|c| c.audit.log_allowed = true),
            Box::new(|c| c.reload.min_ratio = 0.1),
            Box::new(|c| c.reload.timeout *= 2),
            Box::new(|c| c.dashboard.organisation = "Example School".into()),
            Box::new(|c| c.dashboard.session_ttl *= 2),
            Box::new(|c| c.sources.timeout *= 2),
            Box::new(|c| c.categories.get_mut("adult").unwrap().description = "x".into()),
        ];
        for (i, change) in cases.into_iter().enumerate() {
            assert_eq!(after(change), Vec::<String>::new(), "case {i}");
        }
        let tighter =
            config(&BASE.replace("[server]\n", "[server]\ntcp_connections_per_client = 2\n"));
        assert_eq!(needed(&config(BASE), &tighter), Vec::<String>::new());
    }

    #[test]
    fn a_disabled_audit_log_or_admin_listener_has_nothing_to_restart_for() {
        let mut started = config(BASE);
        started.audit.enabled = toml::Spanned::new(0..0, false);
        started.admin.enabled = false;
        let mut new = started.clone();
        new.audit.path = "elsewhere.sqlite".into();
        new.admin.listen = "127.0.0.1:9999".parse().unwrap();
        assert_eq!(needed(&started, &new), Vec::<String>::new());
    }

    #[test]
    fn list_downloads_are_named_by_list_and_setting() {
        let list = |url: &str, refresh: &str| {
            config(&format!(
                "{BASE}[[lists]]\nname = \"adult\"\ncategory = \"adult\"\n\
                 url = \"{url}\"\nrefresh = \"{refresh}\"\n"
            ))
        };
        let started = list("https://lists.example/a", "1h");
        let moved = list("https://lists.example/b", "2h");
        assert_eq!(
            needed(&started, &moved),
            vec!["[[lists]] adult url", "[[lists]] adult refresh"]
        );
        // A url list added by a reload has no refresher; one removed keeps its own.
        assert_eq!(needed(&config(BASE), &started), vec!["[[lists]] adult url"]);
        assert_eq!(needed(&started, &config(BASE)), vec!["[[lists]] adult url"]);
        // With downloads running, [sources] and the download checks were set at start.
        let mut tighter = started.clone();
        tighter.sources.max_size = 10;
        tighter.reload.min_ratio = 0.9;
        assert_eq!(
            needed(&started, &tighter),
            vec!["[reload] min_ratio (for downloads)", "[sources] max_size"]
        );
        // A max_age with no staleness watch running.
        let mut aged = started.clone();
        aged.lists[0].max_age = Some(std::time::Duration::from_secs(3600));
        assert_eq!(needed(&started, &aged), vec!["[[lists]] adult max_age"]);
    }

    #[test]
    fn alert_wording_is_named_only_while_alerts_run() {
        let mut started = config(BASE);
        started.alerts = config("[alerts]\nwebhook = \"https://hooks.example/x\"").alerts;
        let mut new = started.clone();
        new.categories.get_mut("adult").unwrap().description = "Grown-up".into();
        new.server.timezone = crate::config::TimeZone(chrono_tz::Asia::Kolkata);
        assert_eq!(
            needed(&started, &new),
            vec![
                "[server] timezone (for alerts)",
                "[categories.adult] description (for alerts)"
            ]
        );
    }
}
