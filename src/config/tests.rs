//! The config's promises: defaults fill an empty file, and every error names the line at
//! fault (one case per check in `check.rs` and per typed or bounded value).

use std::path::{Path, PathBuf};

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("conf/w.toml"))
}

#[test]
fn defaults_fill_an_empty_file() {
    let c = parse("").unwrap();
    assert_eq!(c.server.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
    assert_eq!(*c.blocking.response.get_ref(), BlockResponse::Nxdomain);
    assert_eq!(c.base_dir, PathBuf::from("conf"));
    assert_eq!(c.server.tz(), chrono_tz::Europe::London);
    assert_eq!(c.server.allow_networks.len(), 8);
    assert_eq!(c.upstream.servers.len(), 2);
    assert!(c.categories.contains_key(CIRCUMVENTION));
}

#[test]
fn values_arrive_typed() {
    let c = parse(
        "[server]\ntimezone = \"Asia/Kolkata\"\nallow_networks = [\"10.1.0.0/16\", \"192.0.2.7\"]\n\
         [upstream]\nservers = [\"tls://9.9.9.9@dns.quad9.net\"]\n\
         [categories.social]\n[groups.default]\n[[groups.default.schedule]]\n\
         days = [\"weekdays\"]\nfrom = \"09:00\"\nto = \"17:30\"\nblock = [\"social\"]\n",
    )
    .unwrap();
    assert_eq!(c.server.tz(), chrono_tz::Asia::Kolkata);
    assert_eq!(c.server.allow_networks[1].0.to_string(), "192.0.2.7/32");
    assert_eq!(
        c.upstream.servers,
        vec![ServerSpec::Tls(
            "9.9.9.9:853".parse().unwrap(),
            "dns.quad9.net".into()
        )]
    );
    let window = &c.groups["default"].schedule[0];
    assert_eq!(
        (window.day_mask(), window.to),
        (0b1_1111, TimeOfDay(17 * 60 + 30))
    );
    assert_eq!(window.label(), "weekdays 09:00-17:30");
}

/// A list that parses, for cases about something else.
const LIST: &str =
    "[categories.adult]\n[[lists]]\nname = \"a\"\ncategory = \"adult\"\npath = \"a.txt\"\n";
const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$Z7h0S0wn9S8mC3ysX9x8pUKYtSp3xg5tZ2jC2D5Z1rY";

/// A TOTP secret and a recovery-code hash that parse.
const T: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const R: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

/// `(what, config text, the line the error must name, a fragment of its message)`.
type Case = (&'static str, String, usize, &'static str);

/// One case per check in `check.rs` (see `every_check_has_a_case`).
fn check_cases() -> Vec<Case> {
    let many: String = (0..64).map(|i| format!("[categories.c{i:02}]\n")).collect();
    let s = |t: &str| t.to_string();
    vec![
        ("too many categories", many, 64, "at most 63"),
        ("fleet url scheme", s("[fleet]\ndatabase = \"mysql://w@db.example/w\"\nsite = \"a\"\n"), 2, "must be a postgres:// URL"),
        ("fleet url", s("[fleet]\ndatabase = \"postgres://w@db.example:port/w\"\nsite = \"a\"\n"), 2, "is not a PostgreSQL URL"),
        ("fleet password in url", s("[fleet]\ndatabase = \"postgres://w:secret@db.example/w\"\nsite = \"a\"\n"), 2, "holds a password"),
        ("fleet no user", s("[fleet]\ndatabase = \"postgres://db.example/w\"\nsite = \"a\"\n"), 2, "names no user"),
        ("fleet no database", s("[fleet]\ndatabase = \"postgres://w@db.example\"\nsite = \"a\"\n"), 2, "names no database"),
        ("fleet no host", s("[fleet]\ndatabase = \"postgres:///w?user=w\"\nsite = \"a\"\n"), 2, "names no host"),
        ("fleet plain text", s("[fleet]\ndatabase = \"postgres://w@db.example/w?sslmode=disable\"\nsite = \"a\"\n"), 2, "only for a database on this machine"),
        ("fleet two passwords", s("[fleet]\ndatabase = \"postgres://w@db.example/w\"\nsite = \"a\"\npassword_file = \"p\"\npassword_env = \"P\"\n"), 2, "give one, not both"),
        ("fleet site", s("[fleet]\ndatabase = \"postgres://w@db.example/w\"\nsite = \"st marys\"\n"), 3, "holds ' '"),
        ("fleet batch", s("[fleet]\ndatabase = \"postgres://w@db.example/w\"\nsite = \"a\"\nbatch_rows = 0\n"), 4, "batch_rows must be 1 to"),
        ("fleet without audit", s("[audit]\nenabled = false\n[fleet]\ndatabase = \"postgres://w@db.example/w\"\nsite = \"a\"\n"), 4, "needs the audit log"),
        ("list name chars", s("[categories.a]\n[[lists]]\nname = \"a b\"\ncategory = \"a\"\npath = \"x\"\n"), 3, "only letters"),
        ("list name twice", format!("{LIST}[[allow]]\nname = \"a\"\npath = \"y\"\n"), 7, "used twice"),
        ("list name reserved", s("[categories.a]\n[[lists]]\nname = \"dashboard\"\ncategory = \"a\"\npath = \"x\"\n"), 3, "reserved"),
        ("both path and url", s("[categories.a]\n[[lists]]\nname = \"a\"\ncategory = \"a\"\npath = \"x\"\nurl = \"https://f.example/l\"\n"), 3, "both path and url"),
        ("neither path nor url", s("[categories.a]\n[[lists]]\nname = \"a\"\ncategory = \"a\"\n"), 3, "needs a path or a url"),
        ("auth without url", format!("{LIST}auth_header_env = \"T\"\n"), 3, "need a url"),
        ("auth twice", s("[categories.a]\n[[lists]]\nname = \"a\"\ncategory = \"a\"\nurl = \"https://f.example/l\"\nauth_header_env = \"T\"\nauth_header_file = \"t\"\n"), 3, "not both"),
        ("redirect without url", format!("{LIST}allow_redirect_to = [\n  \"https://cdn.example\",\n]\n"), 7, "needs a url"),
        ("max_age unlocked", format!("{LIST}max_age = \"2d\"\n"), 3, "max_age is for lists of locked"),
        ("user name", format!("[[users]]\nname = \"a b\"\nrole = \"lead\"\npassword_hash = \"{HASH}\"\n"), 2, "[[users]] name"),
        ("user twice", format!("[[users]]\nname = \"a\"\nrole = \"lead\"\npassword_hash = \"{HASH}\"\n[[users]]\nname = \"a\"\nrole = \"admin\"\npassword_hash = \"{HASH}\"\n"), 6, "used twice"),
        ("user hash", s("[[users]]\nname = \"a\"\nrole = \"lead\"\npassword_hash = \"plain\"\n"), 4, "not an Argon2 hash"),
        ("totp secret", format!("[[users]]\nname = \"a\"\nrole = \"lead\"\npassword_hash = \"{HASH}\"\ntotp_secret = \"JBSWY3DPEHPK3PXP\"\n"), 5, "totp_secret is 80 bits"),
        ("recovery without totp", format!("[[users]]\nname = \"a\"\nrole = \"lead\"\npassword_hash = \"{HASH}\"\nrecovery_codes = [\n  \"{R}\",\n]\n"), 6, "without a totp_secret"),
        ("recovery hash", format!("[[users]]\nname = \"a\"\nrole = \"lead\"\npassword_hash = \"{HASH}\"\ntotp_secret = \"{T}\"\nrecovery_codes = [\n  \"abcde-fghjk\",\n]\n"), 7, "not a SHA-256"),
        ("client cidr and mac", s("[[clients]]\ncidr = \"10.0.0.1\"\nmac = \"aa:bb:cc:dd:ee:ff\"\ngroup = \"default\"\n"), 4, "needs a cidr or a mac"),
        ("users_to_groups both", s("[[users_to_groups]]\nuser = \"a\"\ndirectory_group = \"Staff\"\ngroup = \"default\"\n"), 4, "needs a directory_group or a user"),
        ("feed name", s("[[identity.feeds]]\nname = \"a b\"\ntoken_file = \"t\"\n"), 2, "only letters"),
        ("radius clients", s("[identity.radius]\nlisten = \"127.0.0.1:0\"\nsecret_file = \"s\"\nclients = []\n"), 4, "name the controllers"),
        ("encrypted hostname", s("[encrypted]\nhostname = \"warden..example\"\n"), 2, "is not a DNS name"),
        ("encrypted cert alone", s("[encrypted]\ncert_file = \"c.pem\"\n"), 1, "go together"),
        ("device id", s("[[devices]]\nid = \"Short\"\nname = \"iPad 1\"\ngroup = \"default\"\n"), 2, "8 to 63 lowercase"),
        ("device id twice", s("[[devices]]\nid = \"abcdefgh1\"\nname = \"a\"\ngroup = \"default\"\n[[devices]]\nid = \"abcdefgh1\"\nname = \"b\"\ngroup = \"default\"\n"), 6, "used twice"),
        ("device name", s("[[devices]]\nid = \"abcdefgh1\"\nname = \"\"\ngroup = \"default\"\n"), 2, "the name is empty"),
        ("feed twice", s("[[identity.feeds]]\nname = \"a\"\ntoken_file = \"t\"\n[[identity.feeds]]\nname = \"a\"\ntoken_file = \"u\"\n"), 5, "used twice"),
        ("default group", s("[server]\ndefault_group = \"kids\"\n[groups.staff]\n"), 2, "default_group \"kids\""),
        ("circumvention locked", s("[categories.circumvention]\nlocked = true\n[groups.default]\ncircumvention = false\n"), 4, "no group can turn it off"),
        ("schedule allows locked", s("[categories.t]\nlocked = true\n[groups.default]\n[[groups.default.schedule]]\nfrom = \"09:00\"\nto = \"10:00\"\nallow = [\"t\"]\n"), 7, "is locked"),
        ("empty window", s("[groups.default]\n[[groups.default.schedule]]\nfrom = \"09:00\"\nto = \"10:00\"\n"), 3, "neither blocks nor allows"),
        ("same start and end", s("[categories.a]\n[groups.default]\n[[groups.default.schedule]]\nblock = [\"a\"]\nfrom = \"09:00\"\nto = \"09:00\"\n"), 5, "starts and ends at the same time"),
        ("canary", s("[categories.adult]\ncanary = \"not a name\"\n"), 2, "canary \"not a name\" is not a domain name"),
        ("retention category", s("[audit]\nretention_days_by_category = { nope = 30 }\n"), 2, "undefined category \"nope\""),
        ("webhook header alone", s("[alerts]\nwebhook_auth_header_file = \"h\"\n"), 2, "needs a webhook"),
        ("alerts without audit", s("[audit]\nenabled = false\n[alerts]\nwebhook = \"https://hook.example/x\"\n"), 2, "needs the audit log"),
        ("email host", s("[alerts.email]\nhost = \"\"\nfrom = \"w@s.example\"\nto = [\"l@s.example\"]\n"), 2, "host is empty"),
        ("email plain text", s("[alerts.email]\nhost = \"mail.example\"\nstarttls = \"none\"\nfrom = \"w@s.example\"\nto = [\"l@s.example\"]\n"), 2, "only for a relay on this machine"),
        ("email credentials", s("[alerts.email]\nhost = \"mail.example\"\nusername = \"u\"\nfrom = \"w@s.example\"\nto = [\"l@s.example\"]\n"), 2, "go together"),
        ("email recipients", s("[alerts.email]\nhost = \"mail.example\"\nfrom = \"w@s.example\"\n"), 3, "at least one recipient"),
        ("block page address", s("[blocking]\nttl = 60\nresponse = \"ip\"\n"), 3, "needs block_ip"),
        ("undefined group", s("[[clients]]\ncidr = \"10.0.0.0/8\"\ngroup = \"staff\"\n"), 3, "undefined group \"staff\""),
        ("client name", s("[[clients]]\ncidr = \"10.0.0.1\"\ngroup = \"default\"\nname = \"tab\\u0000let\"\n"), 3, "holds a control character"),
        ("undefined category", s("[categories.adult]\n\n[[lists]]\nname = \"x\"\ncategory = \"gamblin\"\npath = \"x.txt\"\n"), 5, "defined categories: adult, circumvention"),
        ("user sites", s("[[users]]\nname = \"elm-lead\"\nrole = \"lead\"\npassword_hash = \"x\"\nsites = []\n"), 2, "sites = [] would show them no site"),
        ("user site name", s("[[users]]\nname = \"elm-lead\"\nrole = \"lead\"\npassword_hash = \"x\"\nsites = [\n  \"elm\",\n  \"a b\",\n]\n"), 7, "sites: [fleet] site \"a b\" holds ' '"),
    ]
}

/// One case per value the deserializer parses into a type or checks against a range.
fn value_cases() -> Vec<Case> {
    let s = |t: &str| t.to_string();
    vec![
        ("upstream server", s("[upstream]\nservers = [\n  \"9.9.9.9:53\",\n  \"dns.quad9.net\",\n]\n"), 4, "[upstream] servers: \"dns.quad9.net\" is not an upstream server"),
        ("no upstreams", s("[upstream]\ntimeout = \"2s\"\nservers = []\n"), 3, "at least one resolver"),
        ("no listen", s("[server]\nlisten = []\n"), 2, "at least one address"),
        ("per client", s("[server]\n\ntcp_connections_per_client = 0\n"), 3, "tcp_connections_per_client: must be at least 1"),
        ("qps", s("[server.rate_limit]\nqps = -1.0\n"), 2, "qps: must be a number of queries"),
        ("burst", s("[server.rate_limit]\nburst = 0.5\n"), 2, "burst: must be at least 1"),
        ("time zone", s("[server]\ntimezone = \"Mars/Olympus\"\n"), 2, "not an IANA time zone"),
        ("allowed network", s("[server]\nallow_networks = [\"10.0.0.0/8\", \"lan\"]\n"), 2, "[server] allow_networks: \"lan\" is neither"),
        ("client network", s("[[clients]]\ngroup = \"default\"\ncidr = \"10.0.0/8\"\n"), 3, "[[clients]] cidr"),
        ("required category", s("[categories.a]\n[groups.default]\nrequired = [\"b\"]\n"), 3, "group \"default\" requires undefined category \"b\""),
        ("selftest group", s("[selftest]\ngroups = [\"kids\"]\n"), 2, "[selftest] groups names undefined group \"kids\""),
        ("selftest interval", s("[selftest]\ninterval = \"10ms\"\n"), 2, "interval"),
        ("schedule day", s("[categories.a]\n[groups.default]\n[[groups.default.schedule]]\nblock = [\"a\"]\ndays = [\"mon\", \"funday\"]\nfrom = \"09:00\"\nto = \"10:00\"\n"), 5, "\"funday\" is not one of"),
        ("schedule time", s("[categories.a]\n[groups.default]\n[[groups.default.schedule]]\nblock = [\"a\"]\nfrom = \"09:00\"\nto = \"25:00\"\n"), 6, "to: \"25:00\" is not a time of day"),
        ("list url", s("[categories.a]\n[[lists]]\nname = \"a\"\ncategory = \"a\"\nurl = \"ftp://f.example/l\"\n"), 5, "is not an https://"),
        ("refresh", s("[categories.a]\n[[lists]]\nname = \"a\"\ncategory = \"a\"\nurl = \"https://f.example/l\"\nrefresh = \"30s\"\n"), 6, "refresh: must be at least 1m"),
        ("max age", format!("{LIST}max_age = \"5s\"\n"), 6, "max_age: must be at least 1m"),
        ("redirect origin", format!("{LIST}allow_redirect_to = [\"https://cdn.example/path\"]\n"), 6, "must be an origin only"),
        ("min ratio", s("[reload]\nmin_ratio = 2.0\n"), 2, "min_ratio: must be between 0 and 1"),
        ("list bytes", s("[reload]\nmax_list_bytes = 10\n"), 2, "must be at least 1024"),
        ("reload timeout", s("[reload]\ntimeout = \"2h\"\n"), 2, "must be between 1s and 1h"),
        ("flush", s("[audit]\n\nflush_interval = \"2s\"\n"), 3, "flush_interval: must be between 1ms and 1s"),
        ("retention", s("[audit]\nretention_days = 40000\n"), 2, "at most 36500 days"),
        ("per-client bound", s("[audit]\nmax_pending_per_client = 0\n"), 2, "max_pending_per_client: must be at least 1, not 0"),
        ("category retention", s("[categories.t]\n[audit]\nretention_days_by_category = { t = 40000 }\n"), 3, "at most 36500 days"),
        ("poll", s("[alerts]\npoll_interval = \"10ms\"\n"), 2, "between 50ms and 1m"),
        ("backoff", s("[alerts]\nretry_backoff = \"1ms\"\n"), 2, "at least 10ms"),
        ("max keys", s("[alerts]\nmax_keys = 0\n"), 2, "max_keys: must be at least 1"),
        ("webhook", s("[alerts]\nwebhook = \"hook.example\"\n"), 2, "webhook: \"hook.example\" is not an https://"),
        ("dashboard url", s("[alerts]\ndashboard_url = \"/events\"\n"), 2, "dashboard_url"),
        ("email from", s("[alerts.email]\nhost = \"localhost\"\nfrom = \"warden\"\nto = [\"l@s.example\"]\n"), 3, "not an email address"),
        ("email to", s("[alerts.email]\nhost = \"localhost\"\nfrom = \"w@s.example\"\nto = [\n  \"l@s.example\",\n  \"deputy\",\n]\n"), 6, "\"deputy\" is not an email address"),
        ("dashboard host", s("[dashboard]\nhosts = [\n  \"ok.lan\",\n  \"warden.lan:8053\",\n]\n"), 4, "without a port"),
        ("rebinding domain", s("[rebinding]\nallow = [\n  \"ok.test\",\n  \"a b\",\n]\n"), 4, "is not a domain name"),
        ("client bad mac", s("[[clients]]\nmac = \"aa:bb:cc:dd:ee\"\ngroup = \"default\"\n"), 2, "is not a MAC address"),
        ("users_to_groups group", s("[groups.default]\n[[users_to_groups]]\nuser = \"a\"\ngroup = \"kids\"\n"), 4, "kids"),
        ("session lifetime", s("[identity]\nsession_lifetime = \"5s\"\n"), 2, "session_lifetime"),
        ("unknown field", s("[server]\nlisten = [\"127.0.0.1:53\"]\nlistne = 1\n"), 3, "unknown field `listne`"),
        ("enum", s("[blocking]\nresponse = \"drop\"\n"), 2, "[blocking] response"),
        ("type", s("[upstream]\ntimeout = \"soon\"\n"), 2, "[upstream] timeout"),
    ]
}

#[test]
fn every_error_names_its_line_and_what_is_wrong() {
    for (what, text, line, fragment) in check_cases().into_iter().chain(value_cases()) {
        let err = parse(&text).expect_err(what);
        let shown = err.to_string();
        assert_eq!(err.line(), Some(line), "{what}: {shown}");
        assert!(
            shown.starts_with(&format!("conf/w.toml:{line}: ")) && shown.contains(fragment),
            "{what}: {shown}"
        );
    }
}

/// Each `self.error(` / `self.error_at(` call in `check.rs` is one check; the table above
/// must have a case for each, so a new check cannot land without its line being tested.
#[test]
fn every_check_has_a_case() {
    let source = include_str!("check.rs");
    let code = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
    // `fn error` itself calls `self.error_at(` once.
    let calls = code.matches("self.error(").count() + code.matches("self.error_at(").count() - 1;
    assert_eq!(
        calls,
        check_cases().len(),
        "check.rs has {calls} error sites; give each a case in check_cases()"
    );
}

#[test]
fn the_default_group_is_blamed_on_the_groups_when_it_is_not_written() {
    let err = parse("[categories.a]\n\n[groups.staff]\n").unwrap_err();
    assert_eq!(err.line(), Some(3), "{err}");
}

#[test]
fn a_config_that_is_not_a_regular_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("w.toml");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let err = Config::load(&fifo).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    let err = Config::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
}
