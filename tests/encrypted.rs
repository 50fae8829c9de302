//! DNS over TLS and over HTTPS with enrolled devices, driven by real clients: Knot's
//! `kdig` (`+tls`, `+https`) and `curl --doh-url`, against the real binary. Each checks
//! what the issue promises: a device's ID (in the TLS name or the DoH path) chooses its
//! group and names it in the audit log; an unknown ID gets the configured answer; a
//! certificate replaced on disk is served to the next connection; the profiles parse;
//! queries multiplexed on one HTTP/2 connection are each answered.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{start_upstream, Spawned};

/// The enrolled iPad (pupils, who block `adult`) and staff laptop.
const IPAD: &str = "ipad7pupil7k3j5h7g9";
const LAPTOP: &str = "laptop3staffm2n4p6q8";
/// A second pupils' iPad, nobody's in particular.
const IPAD8: &str = "ipad8sharedz9y8x7w6";
const HOST: &str = "warden.test";

struct Site {
    dir: tempfile::TempDir,
    warden: Spawned,
    dot: SocketAddr,
    doh: SocketAddr,
    config: PathBuf,
    _upstream_stop: tokio_util::sync::DropGuard,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.warden.child.kill();
        let _ = self.warden.child.wait();
    }
}

/// A site with DoT and DoH on loopback and two enrolled devices; `encrypted` adds to
/// `[encrypted]`, `files` are written first (name, contents).
async fn site(encrypted: &str, files: &[(&str, Vec<u8>)]) -> Site {
    site_with("", encrypted, files).await
}

/// [`site`] with more `[server]` settings.
async fn site_with(server: &str, encrypted: &str, files: &[(&str, Vec<u8>)]) -> Site {
    let (_upstream, addr, stop) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    std::fs::write(dir.path().join("adult.txt"), "blocked.test\n").unwrap();
    let config = dir.path().join("warden.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
default_group = "staff"
{server}
[admin]
listen = "127.0.0.1:0"
[audit]
path = "audit.db"
flush_interval = "50ms"
[upstream]
servers = ["{addr}"]
timeout = "1s"
[categories.adult]
[[lists]]
name = "adult"
category = "adult"
path = "adult.txt"
[groups.staff]
[groups.pupils]
block = ["adult"]
[encrypted]
dot_listen = ["127.0.0.1:0"]
doh_listen = ["127.0.0.1:0"]
hostname = "{HOST}"
addresses = ["192.0.2.53"]
{encrypted}
[[devices]]
id = "{IPAD}"
name = "iPad 7"
group = "pupils"
user = "pupil7"
[[devices]]
id = "{LAPTOP}"
name = "Staff laptop 3"
group = "staff"
[[devices]]
id = "{IPAD8}"
name = "iPad 8"
group = "pupils"
"#
        ),
    )
    .unwrap();
    let path = config.clone();
    let warden = tokio::task::spawn_blocking(move || common::spawn_warden_full(&path, &[]))
        .await
        .unwrap();
    let log = warden.log_text();
    let after = |marker: &str| -> SocketAddr {
        let rest = log.split(marker).nth(1).expect(marker);
        let word = rest.split_whitespace().next().unwrap();
        word.trim_end_matches("/dns-query").parse().expect(marker)
    };
    let (dot, doh) = (
        after("DNS over TLS on "),
        after("DNS over HTTPS on https://"),
    );
    Site {
        dir,
        warden,
        dot,
        doh,
        config,
        _upstream_stop: stop.drop_guard(),
    }
}

/// `kdig` with `args` (bounded by its own timeout): its standard output.
fn kdig(args: &[String]) -> String {
    let out = Command::new("kdig")
        .args(["+timeout=5", "+retry=0"])
        .args(args)
        .output()
        .expect("kdig (knot-dnsutils) is installed by .ci/run");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Ask `name` over DNS over TLS, presenting TLS name `sni` (if any).
fn dot(site: &Site, name: &str, sni: Option<&str>) -> String {
    let mut args = vec![
        format!("@{}", site.dot.ip()),
        "-p".into(),
        site.dot.port().to_string(),
        "+tls".into(),
    ];
    if let Some(sni) = sni {
        args.push(format!("+tls-sni={sni}"));
    }
    args.push(name.into());
    kdig(&args)
}

/// Ask `name` over DNS over HTTPS at `path` (POST, or GET).
fn doh(site: &Site, name: &str, path: &str, get: bool) -> String {
    let mut args = vec![
        format!("@{}", site.doh.ip()),
        "-p".into(),
        site.doh.port().to_string(),
        format!("+https={path}"),
    ];
    if get {
        args.push("+https-get".into());
    }
    args.push(name.into());
    kdig(&args)
}

/// The DNS status in kdig's header line (not the HTTP one).
fn status(output: &str) -> &str {
    output
        .split("->>HEADER<<-")
        .nth(1)
        .and_then(|header| header.split("status: ").nth(1))
        .and_then(|s| s.split(';').next())
        .unwrap_or("(no answer)")
}

/// Blocked by Warden: the Extended DNS Error it adds to every block.
fn blocked(output: &str) -> bool {
    status(output) == "NXDOMAIN" && output.contains("EDE: 15 (Blocked)")
}

/// The audit rows of `name`, waiting (bounded) for `want` of them.
fn rows(dir: &Path, name: &str, want: usize) -> Vec<(String, String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = read_rows(dir, name);
        if rows.len() >= want || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (device, group, user, sources) of each row of `name`.
fn read_rows(dir: &Path, name: &str) -> Vec<(String, String, String, String)> {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        dir.join("audit.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return Vec::new();
    };
    let _ = db.busy_timeout(Duration::from_secs(5));
    let Ok(mut stmt) = db.prepare(
        "SELECT coalesce(device, '-'), grp, coalesce(user_name, '-'), coalesce(sources, '') \
         FROM events WHERE name = ?1 ORDER BY id",
    ) else {
        return Vec::new();
    };
    stmt.query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdig_over_tls_and_https_is_filtered_as_the_enrolled_device() {
    let site = site("", &[]).await;
    tokio::task::block_in_place(|| {
        // DoT, the ID in the TLS name: the iPad is a pupil's, so `adult` is blocked.
        let answer = dot(&site, "blocked.test", Some(&format!("{IPAD}.{HOST}")));
        assert!(blocked(&answer), "{answer}");
        let answer = dot(&site, "allowed.test", Some(&format!("{IPAD}.{HOST}")));
        assert_eq!(status(&answer), "NOERROR", "{answer}");
        assert!(answer.contains("192.0.2.1"), "{answer}");
        // DoH, the ID in the path, by POST and by GET.
        let answer = doh(
            &site,
            "a.blocked.test",
            &format!("/dns-query/{IPAD}"),
            false,
        );
        assert!(blocked(&answer), "{answer}");
        assert!(answer.contains("status: 200"), "{answer}");
        let answer = doh(&site, "allowed.test", &format!("/dns-query/{IPAD}"), true);
        assert!(answer.contains("HTTP/2-GET"), "{answer}");
        assert_eq!(status(&answer), "NOERROR", "{answer}");
        // The staff laptop's ID: staff do not block `adult`.
        let answer = doh(
            &site,
            "blocked.test",
            &format!("/dns-query/{LAPTOP}"),
            false,
        );
        assert!(!blocked(&answer), "{answer}");
        let answer = dot(&site, "blocked.test", Some(&format!("{LAPTOP}.{HOST}")));
        assert!(!blocked(&answer), "{answer}");
        // Each block is recorded with the device's name, group and person.
        for name in ["blocked.test", "a.blocked.test"] {
            let found = rows(site.dir.path(), name, 1);
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            let (device, group, user, sources) = &found[0];
            assert_eq!(
                (device.as_str(), group.as_str(), user.as_str()),
                ("iPad 7", "pupils", "pupil7"),
                "{name}"
            );
            assert!(sources.contains("group by enrolled device ID"), "{sources}");
        }
        // Two devices behind one address (a home router) are two rows.
        for id in [IPAD, IPAD8] {
            let answer = dot(&site, "c.blocked.test", Some(&format!("{id}.{HOST}")));
            assert!(blocked(&answer), "{answer}");
        }
        let found = rows(site.dir.path(), "c.blocked.test", 2);
        let devices: Vec<&str> = found.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(devices, ["iPad 7", "iPad 8"], "{found:?}");
        // Metrics count queries by transport, and never show an ID.
        let admin = site.warden.admin.expect("the admin listener");
        let (_, metrics) = common::http("GET", admin, "/metrics", &[]);
        for transport in ["dot", "doh"] {
            let series = format!("warden_queries_by_transport_total{{transport=\"{transport}\"}}");
            let value: f64 = metrics
                .lines()
                .find_map(|l| l.strip_prefix(&series))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0);
            assert!(value >= 3.0, "{series} = {value}");
        }
        assert!(!metrics.contains(IPAD) && !metrics.contains(LAPTOP));
        assert!(!site.warden.log_text().contains(IPAD), "an ID in the log");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_resolves_through_doh_a_blocked_and_an_allowed_name() {
    let site = site("", &[]).await;
    let url = format!("https://{}/dns-query/{IPAD}", site.doh);
    let curl = |name: &str| {
        let out = Command::new("curl")
            .args(["-sv", "--doh-insecure", "--doh-url", &url])
            .args(["--connect-timeout", "1", "--max-time", "10"])
            .arg(format!("http://{name}/"))
            .output()
            .expect("curl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    tokio::task::block_in_place(|| {
        // Blocked: curl cannot resolve it (exit code 6).
        let (code, log) = curl("blocked.test");
        assert_eq!(code, Some(6), "{log}");
        // Allowed: resolved through Warden to the upstream's address, which curl then
        // tries (and cannot reach: it is a documentation address).
        let (_, log) = curl("allowed.test");
        assert!(log.contains("192.0.2.1"), "{log}");
        let found = rows(site.dir.path(), "blocked.test", 1);
        assert_eq!(
            found.first().map(|r| r.0.as_str()),
            Some("iPad 7"),
            "{found:?}"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_id_gets_the_configured_answer() {
    let refuse = site("unknown_device = \"refuse\"\n", &[]).await;
    tokio::task::block_in_place(|| {
        let answer = dot(
            &refuse,
            "allowed.test",
            Some(&format!("nosuchdevice1.{HOST}")),
        );
        assert_eq!(status(&answer), "REFUSED", "{answer}");
        let answer = doh(&refuse, "allowed.test", "/dns-query/nosuchdevice1", false);
        assert_eq!(status(&answer), "REFUSED", "{answer}");
        // No ID at all: the address decides (loopback: the default group, staff).
        let answer = dot(&refuse, "allowed.test", None);
        assert_eq!(status(&answer), "NOERROR", "{answer}");
    });
    let default = site("unknown_device = \"default\"\n", &[]).await;
    tokio::task::block_in_place(|| {
        // Treated as no ID: answered as the address's group (staff: not blocked).
        let answer = doh(&default, "blocked.test", "/dns-query/nosuchdevice1", false);
        assert!(!blocked(&answer), "{answer}");
        assert_ne!(status(&answer), "REFUSED", "{answer}");
        // A known ID still decides.
        let answer = doh(
            &default,
            "blocked.test",
            &format!("/dns-query/{IPAD}"),
            false,
        );
        assert!(blocked(&answer), "{answer}");
    });
}

/// A certificate and key for `warden.test` and its devices' names, as PEM.
fn cert_pair() -> (String, String, String) {
    let made = rcgen::generate_simple_self_signed(vec![HOST.into(), format!("*.{HOST}")]).unwrap();
    let pin = spki_pin(made.cert.der());
    (made.cert.pem(), made.signing_key.serialize_pem(), pin)
}

/// kdig's `+tls-pin`: base64 of the SHA-256 of the certificate's public key info.
fn spki_pin(der: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let digest = sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    base64::engine::general_purpose::STANDARD.encode(digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_is_served_to_the_next_connection() {
    let (cert_a, key_a, pin_a) = cert_pair();
    let (cert_b, key_b, pin_b) = cert_pair();
    let site = site(
        "cert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n",
        &[
            ("cert.pem", cert_a.into_bytes()),
            ("key.pem", key_a.into_bytes()),
        ],
    )
    .await;
    let pinned = |pin: &str| {
        let args = [
            format!("@{}", site.dot.ip()),
            "-p".into(),
            site.dot.port().to_string(),
            format!("+tls-pin={pin}"),
            "allowed.test".into(),
        ];
        status(&kdig(&args)).to_string()
    };
    tokio::task::block_in_place(|| {
        assert_eq!(pinned(&pin_a), "NOERROR");
        assert_eq!(
            pinned(&pin_b),
            "(no answer)",
            "a pin that does not match is refused"
        );
        // A renewal writes the new pair; no restart, no reload.
        std::fs::write(site.dir.path().join("key.pem"), key_b).unwrap();
        std::fs::write(site.dir.path().join("cert.pem"), cert_b).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while pinned(&pin_b) != "NOERROR" {
            assert!(
                Instant::now() < deadline,
                "the new certificate is not served"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            pinned(&pin_a),
            "(no answer)",
            "the old certificate is still served"
        );
    });
}

/// `warden device profile DEVICE --format FORMAT`: (success, stdout, stderr).
fn profile(config: &Path, device: &str, format: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["device", "profile", device, "--format", format, "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_profiles_parse_with_the_documented_keys() {
    // Devices reach DoH through a port forward on 8443.
    let site = site("public_port = 8443\n", &[]).await;
    tokio::task::block_in_place(|| {
        let url = format!("https://{HOST}:8443/dns-query/{IPAD}");
        // Apple: a property list Python's plistlib reads, with the DNS settings payload
        // and, the certificate being self-signed, that certificate to trust.
        let (ok, plist, err) = profile(&site.config, "iPad 7", "mobileconfig");
        assert!(ok, "{err}");
        let path = site.dir.path().join("ipad.mobileconfig");
        std::fs::write(&path, &plist).unwrap();
        let script = r#"
import plistlib, ssl, sys
p = plistlib.load(open(sys.argv[1], "rb"))
assert p["PayloadType"] == "Configuration", p
dns, cert = p["PayloadContent"]
assert dns["PayloadType"] == "com.apple.dnsSettings.managed", dns
assert dns["DNSSettings"]["DNSProtocol"] == "HTTPS", dns
assert dns["DNSSettings"]["ServerURL"] == sys.argv[2], dns
assert dns["DNSSettings"]["ServerAddresses"] == ["192.0.2.53"], dns
assert cert["PayloadType"] == "com.apple.security.root", cert
served = ssl.PEM_cert_to_DER_cert(open(sys.argv[3]).read())
assert cert["PayloadContent"] == served, "the served certificate"
for payload in [p, dns, cert]:
    for key in ["PayloadIdentifier", "PayloadUUID", "PayloadVersion", "PayloadDisplayName"]:
        assert key in payload, (key, payload)
print("ok")
"#;
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&path)
            .arg(&url)
            .arg(site.dir.path().join("data/tls/cert.pem"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Made again: the same UUIDs, so it replaces the installed one.
        assert_eq!(profile(&site.config, IPAD, "mobileconfig").1, plist);
        // Chrome and Edge: JSON with the two documented policy keys.
        let (ok, json, err) = profile(&site.config, IPAD, "chrome");
        assert!(ok, "{err}");
        let policy: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(policy["DnsOverHttpsMode"], "secure");
        assert_eq!(policy["DnsOverHttpsTemplates"], url.as_str());
        // Windows: the DoH template registered for Warden's address, no fallback.
        let (ok, ps, err) = profile(&site.config, IPAD, "windows");
        assert!(ok, "{err}");
        assert!(ps.contains(&format!("$template = '{url}'")), "{ps}");
        assert!(ps.contains("$servers = @('192.0.2.53')"), "{ps}");
        assert!(ps.contains("-AllowFallbackToUdp $false"), "{ps}");
        // An unknown device is named.
        let (ok, _, err) = profile(&site.config, "nobody", "chrome");
        assert!(!ok && err.contains("\"nobody\""), "{err}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doh_speaks_http_1_1_and_refuses_what_is_not_a_query() {
    let site = site("", &[]).await;
    let base = format!("https://{}", site.doh);
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version} %{content_type}",
            ])
            .args(["--max-time", "10"])
            .args(args)
            .output()
            .expect("curl");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // A GET query for allowed.test, as RFC 8484's example encodes one (ID 0).
    use base64::Engine as _;
    let query = common::query_message("allowed.test", hickory_proto::rr::RecordType::A, false)
        .to_vec()
        .unwrap();
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(query);
    tokio::task::block_in_place(|| {
        let got = curl(&[
            "--http1.1",
            &format!("{base}/dns-query/{IPAD}?dns={encoded}"),
        ]);
        assert_eq!(got, "200 1.1 application/dns-message");
        let got = curl(&["--http2", &format!("{base}/dns-query?dns={encoded}")]);
        assert_eq!(got, "200 2 application/dns-message");
        assert!(curl(&[&format!("{base}/elsewhere")]).starts_with("404"));
        assert!(curl(&["-X", "PUT", &format!("{base}/dns-query")]).starts_with("405"));
        assert!(curl(&[&format!("{base}/dns-query")]).starts_with("400"));
        assert!(curl(&[&format!("{base}/dns-query?dns=!!!")]).starts_with("400"));
        let wrong_type = curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: text/plain",
            "--data",
            "x",
            &format!("{base}/dns-query"),
        ]);
        assert!(wrong_type.starts_with("415"), "{wrong_type}");
        let garbage = curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/dns-message",
            "--data-binary",
            "not dns",
            &format!("{base}/dns-query"),
        ]);
        assert!(garbage.starts_with("400"), "{garbage}");
    });
}

/// Queries multiplexed on one HTTP/2 connection (as browsers send them).
const STREAMS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_in_flight_together_on_one_http2_connection_are_each_answered() {
    let site = site("", &[]).await;
    use base64::Engine as _;
    let out = site.dir.path().join("answers");
    std::fs::create_dir(&out).unwrap();
    // Each its own name and ID, so an answer can be matched to its query.
    let mut args: Vec<String> = ["-sk", "--http2", "--parallel", "--max-time", "20"]
        .map(String::from)
        .to_vec();
    args.extend(["--parallel-max".into(), STREAMS.to_string()]);
    args.extend(["-w".into(), "%{http_code} %{num_connects}\\n".into()]);
    for i in 0..STREAMS {
        let mut query = common::query_message(
            &format!("q{i}.blocked.test"),
            hickory_proto::rr::RecordType::A,
            false,
        );
        query.metadata.id = 1000 + i as u16;
        let encoded =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(query.to_vec().unwrap());
        args.push(format!(
            "https://{}/dns-query/{IPAD}?dns={encoded}",
            site.doh
        ));
        args.extend(["-o".into(), out.join(i.to_string()).display().to_string()]);
    }
    tokio::task::block_in_place(|| {
        let curl = Command::new("curl").args(&args).output().expect("curl");
        let report = String::from_utf8_lossy(&curl.stdout).into_owned();
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), STREAMS, "{report}");
        assert!(lines.iter().all(|l| l.starts_with("200 ")), "{report}");
        // One connection carried them all: the first transfer made it, the rest joined.
        let connects: u32 = lines
            .iter()
            .filter_map(|l| l.split(' ').nth(1)?.parse::<u32>().ok())
            .sum();
        assert_eq!(connects, 1, "{report}");
        for i in 0..STREAMS {
            let bytes = std::fs::read(out.join(i.to_string())).unwrap();
            let answer = hickory_proto::op::Message::from_vec(&bytes).unwrap();
            assert_eq!(answer.metadata.id, 1000 + i as u16, "answer {i}");
            assert_eq!(
                answer.queries[0].name().to_string(),
                format!("q{i}.blocked.test."),
                "answer {i}"
            );
            assert_eq!(
                answer.metadata.response_code,
                hickory_proto::op::ResponseCode::NXDomain,
                "answer {i}"
            );
        }
        for i in 0..STREAMS {
            let name = format!("q{i}.blocked.test");
            let found = rows(site.dir.path(), &name, 1);
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            assert_eq!(found[0].0, "iPad 7", "{name}: {found:?}");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_held_to_its_own_rate() {
    let site = site(
        "[encrypted.device_rate_limit]\nqps = 0.1\nburst = 3.0\n",
        &[],
    )
    .await;
    tokio::task::block_in_place(|| {
        let ask = |id: &str| {
            status(&doh(
                &site,
                "allowed.test",
                &format!("/dns-query/{id}"),
                false,
            ))
            .to_string()
        };
        let answers: Vec<String> = (0..5).map(|_| ask(IPAD)).collect();
        assert_eq!(
            &answers[..3],
            ["NOERROR", "NOERROR", "NOERROR"],
            "{answers:?}"
        );
        assert_eq!(&answers[3..], ["REFUSED", "REFUSED"], "{answers:?}");
        // Another device, from the same address, has its own bucket.
        assert_eq!(ask(LAPTOP), "NOERROR");
    });
}

/// Headless Chromium with its DNS over HTTPS set as the Chrome policy sets it
/// (`dns_over_https.mode = secure` and the device's template, in the browser's local
/// state), trusting Warden's self-signed certificate by its key: opening a blocked site
/// fails to resolve, and the block is in the audit log as the device's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_with_the_doh_policy_is_filtered_as_the_device() {
    let site = site("", &[]).await;
    let pem = std::fs::read(site.dir.path().join("data/tls/cert.pem")).unwrap();
    let der = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap()
    };
    let template = format!("https://{}/dns-query/{IPAD}", site.doh);
    let browser = common::browser::Browser::start_with(
        &[format!(
            "--ignore-certificate-errors-spki-list={}",
            spki_pin(&der)
        )],
        serde_json::json!({
            "dns_over_https.mode": "secure",
            "dns_over_https.templates": template,
        }),
    )
    .await;
    let opened = browser.goto("http://www.blocked.test/").await;
    browser.quit().await;
    let error = opened.expect_err("a blocked site does not load");
    assert!(error.contains("ERR_NAME_NOT_RESOLVED"), "{error}");
    let found = tokio::task::block_in_place(|| rows(site.dir.path(), "www.blocked.test", 1));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].0.as_str(), found[0].1.as_str()),
        ("iPad 7", "pupils")
    );
}

/// Accepts any certificate: the PROXY test below checks what the server does with the
/// header, not its certificate (the kdig tests check that).
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Over DoT from the balancer at 127.0.0.3: a PROXY header for `client`, then TLS for
/// the iPad's name, then one framed query for `name`; the answer's status, if any.
async fn dot_via_balancer(
    dot: SocketAddr,
    client: &str,
    name: &str,
) -> Option<hickory_proto::op::ResponseCode> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut tcp = socket.connect(dot).await.unwrap();
    tcp.write_all(&warden::dns::proxy::header_for(
        client.parse().unwrap(),
        dot,
    ))
    .await
    .ok()?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate))
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let server = rustls::pki_types::ServerName::try_from(format!("{IPAD}.{HOST}")).unwrap();
    let exchange = async {
        let mut tls = connector.connect(server, tcp).await.ok()?;
        let query = common::query_message(name, hickory_proto::rr::RecordType::A, true)
            .to_vec()
            .unwrap();
        tls.write_all(&(query.len() as u16).to_be_bytes())
            .await
            .ok()?;
        tls.write_all(&query).await.ok()?;
        let len = tls.read_u16().await.ok()?;
        let mut answer = vec![0u8; usize::from(len)];
        tls.read_exact(&mut answer).await.ok()?;
        let message = hickory_proto::op::Message::from_vec(&answer).ok()?;
        Some(message.metadata.response_code)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancers_proxy_header_names_the_client_of_an_encrypted_connection() {
    let site = site_with("proxy_protocol = [\"127.0.0.3\"]", "", &[]).await;
    let answer = dot_via_balancer(site.dot, "10.9.9.9:40000", "p.blocked.test").await;
    assert_eq!(answer, Some(hickory_proto::op::ResponseCode::NXDomain));
    tokio::task::block_in_place(|| {
        let db = rusqlite::Connection::open_with_flags(
            site.dir.path().join("audit.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let row: (String, String, String) = loop {
            let found = db.as_ref().ok().and_then(|db| {
                db.query_row(
                    "SELECT client_ip, coalesce(device, '-'), coalesce(sources, '') FROM events \
                     WHERE name = 'p.blocked.test'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .ok()
            });
            if let Some(row) = found {
                break row;
            }
            assert!(Instant::now() < deadline, "no audit row");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!((row.0.as_str(), row.1.as_str()), ("10.9.9.9", "iPad 7"));
        assert!(row.2.contains("address via proxy 127.0.0.3"), "{row:?}");
    });
    // Without its header, the balancer's connection is closed unanswered.
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut tcp = socket.connect(site.dot).await.unwrap();
    let _ = tcp
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7])
        .await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
    )
    .await
    .expect("closed within the header timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
