//! Who is asking (issue #17), end to end with the real `warden serve`: identity carried
//! in the query by a trusted forwarder (EDNS Client Subnet, dnsmasq's MAC options),
//! ignored from anyone else and never passed upstream; sign-ins from RADIUS accounting
//! (sent by FreeRADIUS's own `radclient`) and from the sign-in feed; each choosing the
//! group and landing in the audit row.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{start_upstream, Spawned, Upstream, WAIT};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::RecordType;

/// The shared RADIUS secret of the tests.
const SECRET: &str = "radius-test-secret";
/// The sign-in feed's token.
const FEED_TOKEN: &str = "feed-token-0123456789-abcdefghijklmnop";
const DC_TOKEN: &str = "dc-token-0123456789-abcdefghijklmnopqrs";
const PC_TOKEN: &str = "pc-token-0123456789-abcdefghijklmnopqrs";

/// Pupils block `adult`; staff (the default group) block only the locked category.
/// 127.0.0.1 is the trusted forwarder; 127.0.0.2 and the rest are ordinary clients.
fn write_site(dir: &Path, upstream: SocketAddr, identity: &str) -> PathBuf {
    std::fs::write(dir.join("adult.txt"), "blocked.test\n").unwrap();
    std::fs::write(dir.join("ctiru.txt"), "locked.test\n").unwrap();
    std::fs::write(dir.join("radius.secret"), format!("{SECRET}\n")).unwrap();
    std::fs::write(dir.join("feed.token"), format!("{FEED_TOKEN}\n")).unwrap();
    std::fs::write(dir.join("dc.token"), format!("{DC_TOKEN}\n")).unwrap();
    std::fs::write(dir.join("pc.token"), format!("{PC_TOKEN}\n")).unwrap();
    std::fs::write(
        dir.join("directory.csv"),
        "pupil7,Year 7;Pupils\njsmith,Staff\n",
    )
    .unwrap();
    let config = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
default_group = "staff"
trusted_forwarders = ["127.0.0.1/32"]
[admin]
listen = "127.0.0.1:0"
token_file = "admin.token"
[audit]
path = "audit.db"
flush_interval = "50ms"
log_allowed = true
[upstream]
servers = ["{upstream}"]
timeout = "1s"
[categories.adult]
[categories.terrorism]
locked = true
[[lists]]
name = "adult"
category = "adult"
path = "adult.txt"
[[lists]]
name = "ctiru"
category = "terrorism"
path = "ctiru.txt"
[groups.staff]
[groups.pupils]
block = ["adult"]
[[clients]]
mac = "aa:bb:cc:dd:ee:01"
group = "pupils"
name = "pupil-ipad"
[[clients]]
cidr = "10.9.9.9"
group = "pupils"
name = "lab-pc"
[[users_to_groups]]
directory_group = "year 7"
group = "pupils"
[[users_to_groups]]
directory_group = "Staff"
group = "staff"
{identity}
"#
    );
    let path = dir.join("warden.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// One site: its upstream, its directory, the running Warden.
struct Site {
    upstream: Upstream,
    dir: tempfile::TempDir,
    warden: Spawned,
    _upstream_stop: tokio_util::sync::DropGuard,
}

async fn site(identity: &str) -> Site {
    site_with("", identity).await
}

/// A site with more `[server]` settings (`server`) and `[identity]` ones.
async fn site_with(server: &str, identity: &str) -> Site {
    let (upstream, addr, stop) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_site(dir.path(), addr, identity);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[server]\n",
        &format!("[server]\n{server}"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let warden = tokio::task::spawn_blocking(move || common::spawn_warden_full(&config, &[]))
        .await
        .unwrap();
    Site {
        upstream,
        dir,
        warden,
        _upstream_stop: stop.drop_guard(),
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.warden.child.kill();
        let _ = self.warden.child.wait();
    }
}

/// What a query carries about the device behind the forwarder.
#[derive(Clone, Copy, Default)]
struct Carry<'a> {
    subnet: Option<(&'a str, u8)>,
    /// `(option code, data)`: 65001 raw, 65073 text or base64.
    mac: Option<(u16, &'a [u8])>,
}

fn query_with(name: &str, carry: Carry<'_>) -> Message {
    let mut msg = common::query_message(name, RecordType::A, true);
    let edns = msg.edns.as_mut().unwrap();
    if let Some((ip, prefix)) = carry.subnet {
        let subnet = ClientSubnet::new(ip.parse().unwrap(), prefix, 0);
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
    }
    if let Some((code, data)) = carry.mac {
        edns.options_mut()
            .insert(EdnsOption::Unknown(code, data.to_vec()));
    }
    msg
}

/// Ask over UDP from `source` (any 127/8 address).
async fn ask_udp(source: &str, server: SocketAddr, name: &str, carry: Carry<'_>) -> Message {
    let msg = query_with(name, carry);
    let sock = tokio::net::UdpSocket::bind(SocketAddr::new(source.parse().unwrap(), 0))
        .await
        .unwrap();
    sock.send_to(&msg.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

/// Ask over TCP from `source` (hickory's decoder, not the UDP fast path).
async fn ask_tcp(source: &str, server: SocketAddr, name: &str, carry: Carry<'_>) -> Message {
    let bytes = query_with(name, carry).to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    tcp_raw(source, server, &framed)
        .await
        .expect("an answer over TCP")
}

/// Warden's block: NXDOMAIN with the Extended DNS Error "Blocked" (15) saying why.
fn blocked(answer: &Message) -> bool {
    answer.metadata.response_code == ResponseCode::NXDomain
        && common::ede(answer).is_some_and(|(code, _)| code == 15)
}

/// Forwarded: upstream's answer (its NXDOMAIN for a name it does not know), no EDE.
fn allowed(answer: &Message) -> bool {
    common::ede(answer).is_none()
        && matches!(
            answer.metadata.response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        )
}

/// One audit row as the site's log holds it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    client: String,
    device: Option<String>,
    mac: Option<String>,
    user: Option<String>,
    sources: Option<String>,
    group: String,
    name: String,
    outcome: String,
}

/// The audit rows for `name` once `want` of them are written (bounded in time).
fn rows_for(dir: &Path, name: &str, want: usize) -> Vec<Row> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = read_rows(dir, name);
        if rows.len() >= want || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_rows(dir: &Path, name: &str) -> Vec<Row> {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        dir.join("audit.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return Vec::new();
    };
    let _ = db.busy_timeout(Duration::from_secs(5));
    let Ok(mut stmt) = db.prepare(
        "SELECT client_ip, device, mac, user_name, sources, grp, name, outcome FROM events \
         WHERE name = ?1 ORDER BY id",
    ) else {
        return Vec::new();
    };
    stmt.query_map([name], |r| {
        Ok(Row {
            client: r.get(0)?,
            device: r.get(1)?,
            mac: r.get(2)?,
            user: r.get(3)?,
            sources: r.get(4)?,
            group: r.get(5)?,
            name: r.get(6)?,
            outcome: r.get(7)?,
        })
    })
    .map(|rows| rows.filter_map(Result::ok).collect())
    .unwrap_or_default()
}

/// Every EDNS option code the upstream has received so far that carries identity.
fn identity_options_upstream(upstream: &Upstream) -> Vec<u16> {
    let codes = upstream.options.lock().unwrap().clone();
    codes
        .into_iter()
        .filter(|c| matches!(*c, 8 | 65001 | 65073 | 65074))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_forwarders_subnet_and_mac_choose_the_group_and_are_recorded() {
    let site = site("").await;
    let dns = site.warden.dns;
    let raw_mac: &[u8] = &[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01];
    // The MAC in each of dnsmasq's forms, over UDP and TCP: the pupils' device.
    let forms: [(u16, &[u8]); 3] = [
        (65001, raw_mac),
        (65073, b"AA:BB:CC:DD:EE:01"),
        (65073, b"qrvM3e4B"),
    ];
    for (code, data) in forms {
        let carry = Carry {
            mac: Some((code, data)),
            ..Carry::default()
        };
        assert!(
            blocked(&ask_udp("127.0.0.1", dns, "blocked.test", carry).await),
            "{code}"
        );
        assert!(
            blocked(&ask_tcp("127.0.0.1", dns, "blocked.test", carry).await),
            "{code}"
        );
    }
    // A host subnet names the device: the lab PC's address puts it with the pupils.
    let lab = Carry {
        subnet: Some(("10.9.9.9", 32)),
        ..Carry::default()
    };
    assert!(blocked(
        &ask_udp("127.0.0.1", dns, "sub.blocked.test", lab).await
    ));
    assert!(blocked(
        &ask_tcp("127.0.0.1", dns, "tcp.blocked.test", lab).await
    ));
    // Without either, the forwarder's own queries are staff's (the default group).
    let plain = Carry::default();
    assert!(allowed(
        &ask_udp("127.0.0.1", dns, "blocked.test", plain).await
    ));

    let rows = rows_for(site.dir.path(), "blocked.test", 2);
    let blocked_rows: Vec<&Row> = rows.iter().filter(|r| r.outcome == "blocked").collect();
    assert!(!blocked_rows.is_empty(), "{rows:?}");
    for row in &blocked_rows {
        assert_eq!(row.mac.as_deref(), Some("aa:bb:cc:dd:ee:01"), "{row:?}");
        assert_eq!(row.device.as_deref(), Some("pupil-ipad"), "{row:?}");
        assert_eq!(row.group, "pupils");
        let sources = row.sources.as_deref().unwrap_or("");
        assert!(
            sources.contains("MAC from forwarder") && sources.contains("group by MAC"),
            "{row:?}"
        );
    }
    let lab_rows = rows_for(site.dir.path(), "sub.blocked.test", 1);
    assert_eq!(lab_rows.len(), 1, "{lab_rows:?}");
    let lab_row = &lab_rows[0];
    assert_eq!(
        (
            lab_row.client.as_str(),
            lab_row.device.as_deref(),
            lab_row.group.as_str()
        ),
        ("10.9.9.9", Some("lab-pc"), "pupils")
    );
    assert!(
        lab_row
            .sources
            .as_deref()
            .unwrap_or("")
            .contains("address via forwarder 127.0.0.1"),
        "{lab_row:?}"
    );
    assert_eq!(
        rows_for(site.dir.path(), "tcp.blocked.test", 1)[0].client,
        "10.9.9.9"
    );

    // Allowed names are forwarded, but never with the device's subnet or MAC.
    let everything = Carry {
        subnet: Some(("10.9.9.9", 32)),
        mac: Some((65001, raw_mac)),
    };
    assert!(allowed(
        &ask_udp("127.0.0.1", dns, "allowed.test", everything).await
    ));
    assert!(allowed(
        &ask_tcp("127.0.0.1", dns, "allowed.test", everything).await
    ));
    assert!(site.upstream.count("allowed.test.") >= 1);
    assert_eq!(identity_options_upstream(&site.upstream), Vec::<u16>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_options_from_an_untrusted_client_are_ignored_and_never_forwarded() {
    let site = site("").await;
    let dns = site.warden.dns;
    let claim = Carry {
        subnet: Some(("10.9.9.9", 32)),
        mac: Some((65001, &[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01])),
    };
    // 127.0.0.2 is not a trusted forwarder: its claim to be the pupils' device (or the
    // lab PC) changes nothing; it is staff, by its own address, and so allowed.
    assert!(allowed(
        &ask_udp("127.0.0.2", dns, "blocked.test", claim).await
    ));
    assert!(allowed(
        &ask_tcp("127.0.0.2", dns, "blocked.test", claim).await
    ));
    let rows = rows_for(site.dir.path(), "blocked.test", 1);
    assert!(!rows.is_empty());
    for row in &rows {
        assert_eq!(row.client, "127.0.0.2", "{row:?}");
        assert_eq!(
            (row.mac.as_deref(), row.device.as_deref()),
            (None, None),
            "{row:?}"
        );
        assert_eq!(
            (row.group.as_str(), row.outcome.as_str()),
            ("staff", "allowed")
        );
    }
    assert!(site.upstream.count("blocked.test.") >= 1);
    assert_eq!(identity_options_upstream(&site.upstream), Vec::<u16>::new());
}

/// `radclient` sends `attributes` as an accounting request with `secret`; whether an
/// answer came back.
fn radclient(port: u16, secret: &str, attributes: &str) -> bool {
    use std::io::Write;
    let mut child = std::process::Command::new("radclient")
        .args(["-r", "1", "-t", "2", "-q"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["acct", secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("radclient (Debian's freeradius-utils; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(attributes.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    out.status.success()
}

/// The port a log line `RADIUS accounting on ADDR` names.
/// [`radclient`] off the async runtime: whether an Accounting-Response came back.
async fn account(port: u16, secret: &'static str, attributes: &'static str) -> bool {
    tokio::task::spawn_blocking(move || radclient(port, secret, attributes))
        .await
        .expect("radclient task")
}

fn radius_port(site: &Site) -> u16 {
    let log = site.warden.log_text();
    let addr = log
        .split("RADIUS accounting on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the log names the RADIUS listener:\n{log}"));
    addr.parse::<SocketAddr>().unwrap().port()
}

/// A metric's value from `/metrics` (0 if absent).
fn metric(site: &Site, series: &str) -> f64 {
    let admin = site.warden.admin.unwrap();
    let (_, text) = tokio::task::block_in_place(|| common::http("GET", admin, "/metrics", &[]));
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Ask until `ok` holds for the answer (bounded), returning whether it did.
async fn eventually(source: &str, dns: SocketAddr, name: &str, ok: fn(&Message) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if ok(&ask_udp(source, dns, name, Carry::default()).await) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radius_accounting_from_radclient_signs_a_pupil_in_and_out() {
    let site = site(
        "[identity]\ndirectory = \"directory.csv\"\n\
         [identity.radius]\nlisten = \"127.0.0.1:0\"\nsecret_file = \"radius.secret\"\n\
         clients = [\"127.0.0.1\"]\n",
    )
    .await;
    let (dns, port) = (site.warden.dns, radius_port(&site));
    // Nobody signed in at 127.0.0.5: staff by default, allowed.
    assert!(allowed(
        &ask_udp("127.0.0.5", dns, "blocked.test", Carry::default()).await
    ));

    let start = "User-Name = \"pupil7\", Acct-Status-Type = Start, \
                 Framed-IP-Address = 127.0.0.5, Calling-Station-Id = \"AA-BB-CC-00-00-07\", \
                 Acct-Session-Id = \"s1\"\n";
    let answered = account(port, SECRET, start).await;
    assert!(answered, "radclient got an Accounting-Response");
    // pupil7 is in "Year 7" (the directory file): the pupils' group, whatever the device.
    assert!(blocked(
        &ask_udp("127.0.0.5", dns, "r.blocked.test", Carry::default()).await
    ));
    let rows = rows_for(site.dir.path(), "r.blocked.test", 1);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(
        (row.client.as_str(), row.user.as_deref(), row.group.as_str()),
        ("127.0.0.5", Some("pupil7"), "pupils"),
        "{row:?}"
    );
    assert_eq!(row.mac.as_deref(), Some("aa:bb:cc:00:00:07"));
    let sources = row.sources.as_deref().unwrap_or("");
    assert!(
        sources.contains("user from RADIUS") && sources.contains("group by user"),
        "{row:?}"
    );

    // A packet under the wrong secret is dropped (no answer) and counted.
    let forged = "User-Name = \"jsmith\", Acct-Status-Type = Start, \
                  Framed-IP-Address = 127.0.0.5\n";
    let answered = account(port, "wrong-secret", forged).await;
    assert!(!answered, "a forged packet gets no answer");
    assert!(
        metric(
            &site,
            "warden_radius_packets_total{result=\"bad_authenticator\"}"
        ) >= 1.0
    );
    // …and changed nothing: pupil7 is still signed in there.
    assert!(blocked(
        &ask_udp("127.0.0.5", dns, "blocked.test", Carry::default()).await
    ));

    let stop = "User-Name = \"pupil7\", Acct-Status-Type = Stop, \
                Framed-IP-Address = 127.0.0.5, Acct-Session-Id = \"s1\"\n";
    let answered = account(port, SECRET, stop).await;
    assert!(answered);
    // Stop ends it: staff again.
    assert!(allowed(
        &ask_udp("127.0.0.5", dns, "blocked.test", Carry::default()).await
    ));
    assert!(metric(&site, "warden_radius_packets_total{result=\"signed_in\"}") >= 1.0);
    assert!(metric(&site, "warden_radius_packets_total{result=\"signed_out\"}") >= 1.0);

    // The captured Start sent again after its Stop: answered, but no one is signed in.
    let answered = account(port, SECRET, start).await;
    assert!(answered);
    assert!(
        metric(
            &site,
            "warden_radius_packets_total{result=\"ended_session\"}"
        ) >= 1.0
    );
    assert!(allowed(
        &ask_udp("127.0.0.5", dns, "blocked.test", Carry::default()).await
    ));
    // A Start stamped an hour ago (a replay, or a clock far off) is not taken either.
    let stale = "User-Name = \"pupil7\", Acct-Status-Type = Start, \
                 Framed-IP-Address = 127.0.0.5, Acct-Session-Id = \"s2\", \
                 Event-Timestamp = 1000000000\n";
    let answered = account(port, SECRET, stale).await;
    assert!(answered);
    assert!(metric(&site, "warden_radius_packets_total{result=\"stale\"}") >= 1.0);
    assert!(allowed(
        &ask_udp("127.0.0.5", dns, "blocked.test", Carry::default()).await
    ));
    // A fresh session, ended by a Stop that names only the session.
    let fresh = "User-Name = \"pupil7\", Acct-Status-Type = Start, \
                 Framed-IP-Address = 127.0.0.5, Acct-Session-Id = \"s3\"\n";
    assert!(account(port, SECRET, fresh).await);
    assert!(blocked(
        &ask_udp("127.0.0.5", dns, "blocked.test", Carry::default()).await
    ));
    let bare_stop = "User-Name = \"pupil7\", Acct-Status-Type = Stop, Acct-Session-Id = \"s3\"\n";
    assert!(account(port, SECRET, bare_stop).await);
    assert!(allowed(
        &ask_udp("127.0.0.5", dns, "blocked.test", Carry::default()).await
    ));
}

/// POST a sign-in (or sign-out) to the feed.
fn post_feed(site: &Site, path: &str, token: &str, body: &str) -> (u16, String) {
    let admin = site.warden.admin.unwrap();
    let auth = format!("Bearer {token}");
    let reply = common::dashboard::send("POST", admin, path, |request| {
        request
            .header("Authorization", auth.as_str())
            .header("Content-Type", "application/json")
            .body(body.to_string())
    });
    (reply.status, reply.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_feed_refuses_a_wrong_token_and_a_sign_in_ends_at_its_lifetime() {
    let site = site(
        "[identity]\ndirectory = \"directory.csv\"\n\
         [[identity.feeds]]\nname = \"logon\"\ntoken_file = \"feed.token\"\n\
         [[identity.feeds]]\nname = \"dc\"\ntoken_file = \"dc.token\"\nfrom = [\"10.0.0.2\"]\n\
         [[identity.feeds]]\nname = \"pcs\"\ntoken_file = \"pc.token\"\nagents = true\n",
    )
    .await;
    let dns = site.warden.dns;
    let sign_in = r#"{"user": "pupil7", "address": "127.0.0.6", "lifetime": "3s"}"#;
    let wrong = tokio::task::block_in_place(|| {
        post_feed(
            &site,
            "/identity/signin",
            "not-the-token-0123456789-abcdefghij",
            sign_in,
        )
    });
    assert_eq!(wrong.0, 401, "{wrong:?}");
    assert!(allowed(
        &ask_udp("127.0.0.6", dns, "blocked.test", Carry::default()).await
    ));

    let signed = Instant::now();
    let ok =
        tokio::task::block_in_place(|| post_feed(&site, "/identity/signin", FEED_TOKEN, sign_in));
    assert_eq!(ok.0, 200, "{ok:?}");
    assert!(blocked(
        &ask_udp("127.0.0.6", dns, "f.blocked.test", Carry::default()).await
    ));
    let rows = rows_for(site.dir.path(), "f.blocked.test", 1);
    assert_eq!(rows[0].user.as_deref(), Some("pupil7"), "{rows:?}");
    assert!(rows[0]
        .sources
        .as_deref()
        .unwrap_or("")
        .contains("user from sign-in feed logon"));
    // The lifetime runs out: the address is nobody's again (staff, allowed).
    assert!(eventually("127.0.0.6", dns, "blocked.test", allowed).await);
    assert!(
        signed.elapsed() >= Duration::from_secs(3),
        "not before its lifetime"
    );

    // A sign-in whose groups say Staff, and an explicit sign-out.
    let staff = r#"{"user": "visitor", "address": "127.0.0.7", "groups": ["Staff"]}"#;
    let pupil = r#"{"user": "pupil7", "address": "127.0.0.8"}"#;
    for body in [staff, pupil] {
        let reply =
            tokio::task::block_in_place(|| post_feed(&site, "/identity/signin", FEED_TOKEN, body));
        assert_eq!(reply.0, 200, "{reply:?}");
    }
    assert!(allowed(
        &ask_udp("127.0.0.7", dns, "blocked.test", Carry::default()).await
    ));
    assert!(blocked(
        &ask_udp("127.0.0.8", dns, "blocked.test", Carry::default()).await
    ));
    let out = r#"{"address": "127.0.0.8", "user": "pupil7"}"#;
    let reply =
        tokio::task::block_in_place(|| post_feed(&site, "/identity/signout", FEED_TOKEN, out));
    assert_eq!(reply.0, 200, "{reply:?}");
    assert!(allowed(
        &ask_udp("127.0.0.8", dns, "blocked.test", Carry::default()).await
    ));
    // Bad bodies are refused with a reason, and nothing is signed in.
    for bad in [
        r#"{"user": "", "address": "127.0.0.9"}"#,
        r#"{"user": "x", "address": "not-an-ip"}"#,
        r#"{"user": "x", "address": "127.0.0.9", "lifetime": "9 years"}"#,
        "not json",
    ] {
        let reply =
            tokio::task::block_in_place(|| post_feed(&site, "/identity/signin", FEED_TOKEN, bad));
        assert_eq!(reply.0, 400, "{bad}: {reply:?}");
    }
    assert!(allowed(
        &ask_udp("127.0.0.9", dns, "blocked.test", Carry::default()).await
    ));

    // A feed limited to its server refuses its own token from here; an agents feed
    // signs in only the poster's own address, and never chooses a group.
    let elsewhere = r#"{"user": "pupil7", "address": "127.0.0.11"}"#;
    let reply =
        tokio::task::block_in_place(|| post_feed(&site, "/identity/signin", DC_TOKEN, elsewhere));
    assert_eq!(reply.0, 400, "{reply:?}");
    assert!(reply.1.contains("not accepted from 127.0.0.1"), "{reply:?}");
    let reply =
        tokio::task::block_in_place(|| post_feed(&site, "/identity/signin", PC_TOKEN, elsewhere));
    assert!(
        reply.0 == 400 && reply.1.contains("only the address it posts from"),
        "{reply:?}"
    );
    // From 127.0.0.1 for 127.0.0.1: taken, recorded, but pupil7's group does not follow.
    let own = r#"{"user": "pupil7", "address": "127.0.0.1", "groups": ["Year 7"]}"#;
    let reply = tokio::task::block_in_place(|| post_feed(&site, "/identity/signin", PC_TOKEN, own));
    assert_eq!(reply.0, 200, "{reply:?}");
    assert!(allowed(
        &ask_udp("127.0.0.1", dns, "a.blocked.test", Carry::default()).await
    ));
    let rows = rows_for(site.dir.path(), "a.blocked.test", 1);
    let row = rows
        .first()
        .expect("the allowed query is logged (log_allowed)");
    assert_eq!(
        (row.user.as_deref(), row.group.as_str()),
        (Some("pupil7"), "staff")
    );
    assert!(
        row.sources
            .as_deref()
            .unwrap_or("")
            .contains("the device's own sign-in (feed pcs)"),
        "{row:?}"
    );

    // A restart keeps who is signed in (the state file), so the pupil stays a pupil.
    let kept = r#"{"user": "pupil7", "address": "127.0.0.10", "lifetime": "1h"}"#;
    let reply =
        tokio::task::block_in_place(|| post_feed(&site, "/identity/signin", FEED_TOKEN, kept));
    assert_eq!(reply.0, 200, "{reply:?}");
    assert!(blocked(
        &ask_udp("127.0.0.10", dns, "blocked.test", Carry::default()).await
    ));
    let mut site = site;
    let old = std::mem::replace(
        &mut site.warden.child,
        std::process::Command::new("true").spawn().unwrap(),
    );
    assert!(common::stop_warden(old).success());
    let config = site.dir.path().join("warden.toml");
    site.warden = tokio::task::spawn_blocking(move || common::spawn_warden_full(&config, &[]))
        .await
        .unwrap();
    let dns = site.warden.dns;
    assert!(blocked(
        &ask_udp("127.0.0.10", dns, "blocked.test", Carry::default()).await
    ));
    assert!(allowed(
        &ask_udp("127.0.0.8", dns, "blocked.test", Carry::default()).await
    ));
}

/// `warden check` for a person and a device, as the issue's `--client --user` asks.
fn check(config: &Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("check")
        .args(["--config", config.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn warden_check_shows_the_decision_for_a_person_and_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_site(
        dir.path(),
        "127.0.0.1:1".parse().unwrap(),
        "[identity]\ndirectory = \"directory.csv\"\n",
    );
    let (code, out) = check(
        &config,
        &["--client", "10.0.1.5", "--user", "pupil7", "blocked.test"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("blocked")
            && out.contains("group pupils (group by user)")
            && out.contains("user pupil7 (directory: Year 7, Pupils)"),
        "{out}"
    );
    let (code, out) = check(
        &config,
        &["--client", "10.0.1.5", "--user", "jsmith", "blocked.test"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("allowed") && out.contains("group staff"),
        "{out}"
    );
    // Someone the directory does not know, with the groups a sign-in would carry.
    let (code, out) = check(
        &config,
        &["--user", "newpupil", "--groups", "Year 7", "blocked.test"],
    );
    assert_eq!(code, 1, "{out}");
    // A device by its MAC; the locked list for everyone.
    let (code, out) = check(&config, &["--mac", "aa:bb:cc:dd:ee:01", "blocked.test"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("group pupils"), "{out}");
    let (code, out) = check(&config, &["--user", "jsmith", "locked.test"]);
    assert_eq!(code, 1, "{out}");
    let (code, out) = check(&config, &["--mac", "not-a-mac", "blocked.test"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("MAC"), "{out}");
}

/// Send `bytes` on a TCP connection from `source`, then read one framed answer (or
/// `None` if the connection is closed or silent for 8 s).
async fn tcp_raw(source: &str, server: SocketAddr, bytes: &[u8]) -> Option<Message> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    let mut stream = tokio::time::timeout(WAIT, socket.connect(server))
        .await
        .unwrap()
        .unwrap();
    stream.write_all(bytes).await.ok()?;
    let read = async {
        let len = stream.read_u16().await.ok()?;
        let mut answer = vec![0u8; usize::from(len)];
        stream.read_exact(&mut answer).await.ok()?;
        Message::from_vec(&answer).ok()
    };
    tokio::time::timeout(Duration::from_secs(8), read)
        .await
        .ok()?
}

fn framed(name: &str) -> Vec<u8> {
    let bytes = common::query_message(name, RecordType::A, true)
        .to_vec()
        .unwrap();
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&bytes);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancers_proxy_header_names_the_client_and_is_required_from_it() {
    let site = site_with("proxy_protocol = [\"127.0.0.3\"]\n", "").await;
    let dns = site.warden.dns;
    let header = |client: &str| warden::dns::proxy::header_for(client.parse().unwrap(), dns);
    // Through the balancer, the lab PC (10.9.9.9, the pupils' group) is blocked, and
    // the audit row names it, and the balancer.
    let mut bytes = header("10.9.9.9:40000");
    bytes.extend_from_slice(&framed("p.blocked.test"));
    let answer = tcp_raw("127.0.0.3", dns, &bytes).await.expect("an answer");
    assert!(blocked(&answer), "{answer:?}");
    let rows = rows_for(site.dir.path(), "p.blocked.test", 1);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].client.as_str(), rows[0].device.as_deref()),
        ("10.9.9.9", Some("lab-pc"))
    );
    assert!(
        rows[0]
            .sources
            .as_deref()
            .unwrap_or("")
            .contains("address via proxy 127.0.0.3"),
        "{rows:?}"
    );
    // Another client through it: staff, allowed.
    let mut bytes = header("10.1.2.3:40001");
    bytes.extend_from_slice(&framed("blocked.test"));
    let answer = tcp_raw("127.0.0.3", dns, &bytes).await.expect("an answer");
    assert!(allowed(&answer), "{answer:?}");
    // From the balancer without a header: closed unanswered.
    assert!(tcp_raw("127.0.0.3", dns, &framed("blocked.test"))
        .await
        .is_none());
    // From anyone else a header is not one: it claims nothing, and gets no answer.
    let mut bytes = header("10.9.9.9:40002");
    bytes.extend_from_slice(&framed("q.blocked.test"));
    assert!(tcp_raw("127.0.0.2", dns, &bytes).await.is_none());
    // …while their ordinary queries are answered as theirs (staff).
    let answer = tcp_raw("127.0.0.2", dns, &framed("blocked.test"))
        .await
        .expect("an answer");
    assert!(allowed(&answer), "{answer:?}");
    assert!(read_rows(site.dir.path(), "q.blocked.test").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_holding_headers_back_is_capped_and_then_served_again() {
    let site = site_with("proxy_protocol = [\"127.0.0.3\"]\n", "").await;
    let dns = site.warden.dns;
    // Connections from the balancer that never send their header, up to the cap.
    let mut stalled = Vec::new();
    for _ in 0..warden::dns::tcp::PENDING_HEADERS {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new("127.0.0.3".parse().unwrap(), 0))
            .unwrap();
        stalled.push(socket.connect(dns).await.unwrap());
    }
    // One more, header and all, is closed unanswered: the cap holds.
    let mut bytes = warden::dns::proxy::header_for("10.1.2.3:40001".parse().unwrap(), dns);
    bytes.extend_from_slice(&framed("blocked.test"));
    assert!(tcp_raw("127.0.0.3", dns, &bytes).await.is_none());
    // Once the stalled ones go, the balancer is served again.
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(answer) = tcp_raw("127.0.0.3", dns, &bytes).await {
            assert!(allowed(&answer), "{answer:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the balancer is not served again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_will_not_start_with_a_feed_whose_token_file_is_missing() {
    use std::process::{Command, Stdio};
    let (_upstream, addr, stop) = start_upstream().await;
    let _stop = stop.drop_guard();
    let dir = tempfile::tempdir().unwrap();
    let config = write_site(
        dir.path(),
        addr,
        "[[identity.feeds]]\nname = \"lost\"\ntoken_file = \"lost.token\"\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("warden started with a feed whose token file is missing");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("[[identity.feeds]] \"lost\" token_file") && stderr.contains("lost.token"),
        "{stderr}"
    );
}
