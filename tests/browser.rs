//! The dashboard in headless Chromium (Debian `chromium` + `chromium-driver`, which
//! `.ci/run` installs), against the real binary: a wrong password is refused; the lead
//! signs in, sees a block the test caused over DNS, filters by category, opens it, reviews
//! it with a note and exports the CSV; a lead cannot reach the admin pages; an admin adds
//! an allow entry and the next DNS query for that name is forwarded.
//!
//! Screenshots of the overview and an event page are written to `target/screenshots/`,
//! and to `docs/screenshots/` with `UPDATE_SCREENSHOTS=1` (how the README's were made).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::dashboard::{dashboard_config, ADMIN_PASSWORD, LEAD_PASSWORD};
use common::*;
use hickory_proto::rr::RecordType;

/// Wait (bounded) until the audit log holds a row for `name`.
async fn wait_for_row(db: &Path, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = rusqlite::Connection::open(db)
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM events WHERE name = ?1", [name], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .unwrap_or(0);
        if found > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "no audit row for {name}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn save_screenshot(name: &str, png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("target/screenshots")];
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        dirs.push(root.join("docs/screenshots"));
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

/// A logon script's sign-in of `user` at `address`, through the feed with `token`.
fn feed_sign_in(admin: SocketAddr, token: &str, user: &str, address: &str) {
    let body = format!(r#"{{"user": "{user}", "address": "{address}"}}"#);
    let reply = tokio::task::block_in_place(|| {
        common::dashboard::send("POST", admin, "/identity/signin", |r| {
            r.header("Authorization", format!("Bearer {token}"))
                .header("Content-Type", "application/json")
                .body(body)
        })
    });
    assert_eq!(reply.status, 200, "{}", reply.body);
}

async fn sign_in(browser: &Browser, admin: SocketAddr, user: &str, password: &str) -> String {
    browser.open(admin, "/login").await;
    browser.type_into("#user", user).await;
    browser.type_into("#password", password).await;
    browser.click_and_wait("form[action='/login'] button").await;
    browser.text().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_reviews_a_block_and_an_admin_allows_a_site_in_a_browser() {
    let (upstream, upstream_addr, _token) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dashboard_config(dir.path(), upstream_addr);
    let warden = spawn_warden_full(&path, &[]);
    let admin = warden.admin.expect("admin address logged");
    let db = dir.path().join("data/audit.sqlite");

    // Blocks caused over DNS: one adult, one on the statutory (locked) list.
    udp(warden.dns, "pupil.tracker.test.", RecordType::A, true).await;
    udp(warden.dns, "locked.test.", RecordType::A, true).await;
    wait_for_row(&db, "pupil.tracker.test").await;
    wait_for_row(&db, "locked.test").await;

    let browser = Browser::start().await;

    // A wrong password is refused.
    let page = sign_in(&browser, admin, "lead", "not my password").await;
    assert!(page.contains("do not match"), "{page}");
    assert!(browser.url().await.ends_with("/login"));

    // The lead signs in and sees the serious block waiting on the overview.
    let page = sign_in(&browser, admin, "lead", LEAD_PASSWORD).await;
    assert!(page.contains("Overview"), "{page}");
    assert!(
        page.contains("Serious blocks to review") && page.contains("locked.test"),
        "{page}"
    );
    save_screenshot("overview.png", &browser.screenshot().await);

    // Events: both blocks, then only the adult one when filtered by category.
    browser.open(admin, "/events").await;
    let page = browser.text().await;
    assert!(
        page.contains("pupil.tracker.test") && page.contains("locked.test"),
        "{page}"
    );
    browser.select("#category", "adult").await;
    browser.click_and_wait("form.filters button").await;
    let page = browser.text().await;
    assert!(browser.url().await.contains("category=adult"));
    assert!(
        page.contains("pupil.tracker.test") && !page.contains("locked.test"),
        "{page}"
    );

    // Open it and review it with a note.
    browser.click_and_wait("table.events tbody a").await;
    let page = browser.text().await;
    assert!(page.contains("Blocked: pupil.tracker.test"), "{page}");
    assert!(page.contains("Not yet reviewed"));
    browser.select("#outcome", "incident").await;
    browser
        .type_into("#note", "Talked to the pupil; parents informed.")
        .await;
    browser
        .click_and_wait("form[action$='/review'] button")
        .await;
    let page = browser.text().await;
    assert!(page.contains("Your review was saved"), "{page}");
    assert!(
        page.contains("incident by lead") && page.contains("parents informed"),
        "{page}"
    );
    save_screenshot("event.png", &browser.screenshot().await);

    // Export the filtered events: the CSV link keeps the filter; its rows are right.
    browser.open(admin, "/events?category=adult").await;
    let href = browser
        .attribute("a[download]", "href")
        .await
        .expect("an export link");
    // Without a start date of its own, the export covers the last 30 days, and says so.
    assert!(
        href.contains("/export.csv?since=") && href.contains("&category=adult"),
        "{href}"
    );
    let session = browser
        .cookie("warden_session")
        .await
        .expect("a session cookie");
    let url = if href.starts_with("http") {
        href.clone()
    } else {
        format!("http://{admin}{href}")
    };
    let csv = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .get(&url)
        .header(reqwest::header::COOKIE, format!("warden_session={session}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(csv.status(), 200);
    let csv = csv.text().await.expect("the CSV's body");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{csv}");
    assert!(
        rows[0].contains("pupil.tracker.test") && rows[0].contains("incident"),
        "{}",
        rows[0]
    );
    assert!(rows[0].contains("parents informed"));

    // A lead cannot reach the admin pages.
    browser.open(admin, "/admin").await;
    assert!(browser.text().await.contains("Only an admin"));

    // Sign out; the admin allows a site; the next DNS query for it is forwarded.
    browser.open(admin, "/").await;
    browser.click_and_wait("header form button").await;
    assert!(browser.url().await.ends_with("/login"));
    let page = sign_in(&browser, admin, "admin", ADMIN_PASSWORD).await;
    assert!(page.contains("Admin"), "{page}");
    let before = upstream.count("blocked.test.");
    udp(warden.dns, "blocked.test.", RecordType::A, true).await;
    assert_eq!(
        upstream.count("blocked.test."),
        before,
        "blocked before the entry"
    );
    browser.open(admin, "/admin").await;
    browser.type_into("#name", "blocked.test").await;
    browser
        .type_into("#reason", "Needed for the online-safety lesson")
        .await;
    browser
        .click_and_wait("form[action='/admin/allow'] button")
        .await;
    let page = browser.text().await;
    assert!(page.contains("blocked.test is now allowed"), "{page}");
    let reply = udp(warden.dns, "blocked.test.", RecordType::A, true).await;
    assert_eq!(
        upstream.count("blocked.test."),
        before + 1,
        "forwarded after: {reply:?}"
    );

    browser.quit().await;
    stop_warden(warden.child);
}

/// A query from the trusted forwarder (127.0.0.1) for the device at `subnet` with
/// `mac` (dnsmasq's raw `add-mac` option).
async fn forwarded_query(dns: SocketAddr, name: &str, subnet: &str, mac: [u8; 6]) {
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    let mut msg = query_message(name, RecordType::A, true);
    let edns = msg.edns.as_mut().unwrap();
    let subnet = ClientSubnet::new(subnet.parse().unwrap(), 32, 0);
    edns.options_mut().insert(EdnsOption::Subnet(subnet));
    edns.options_mut()
        .insert(EdnsOption::Unknown(65001, mac.to_vec()));
    udp_exchange(dns, &msg.to_vec().unwrap())
        .await
        .expect("an answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_filters_by_user_and_sees_the_user_and_mac_of_a_block() {
    let (_upstream, upstream_addr, _token) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dashboard_config(dir.path(), upstream_addr);
    // The router at 127.0.0.1 passes each device's address and MAC; a logon script
    // signs pupils in through the feed.
    let token = "browser-feed-token-0123456789abcdefghij";
    std::fs::write(dir.path().join("feed.token"), token).unwrap();
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[server]\n",
        "[server]\ntrusted_forwarders = [\"127.0.0.1\"]\n",
        1,
    ) + "[[identity.feeds]]\nname = \"logon\"\ntoken_file = \"feed.token\"\n";
    std::fs::write(&path, text).unwrap();
    let warden = spawn_warden_full(&path, &[]);
    let admin = warden.admin.expect("admin address logged");
    let db = dir.path().join("data/audit.sqlite");

    for address in ["10.1.1.7", "10.1.1.8"] {
        feed_sign_in(admin, token, "pupil7", address);
    }
    // pupil7 on two devices, and someone else's block.
    let ipad = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x07];
    let laptop = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x08];
    forwarded_query(warden.dns, "pupil.tracker.test.", "10.1.1.7", ipad).await;
    forwarded_query(warden.dns, "laptop.tracker.test.", "10.1.1.8", laptop).await;
    forwarded_query(
        warden.dns,
        "other.tracker.test.",
        "10.1.1.9",
        [0xaa, 0, 0, 0, 0, 9],
    )
    .await;
    for name in [
        "pupil.tracker.test",
        "laptop.tracker.test",
        "other.tracker.test",
    ] {
        wait_for_row(&db, name).await;
    }

    let browser = Browser::start().await;
    let page = sign_in(&browser, admin, "lead", LEAD_PASSWORD).await;
    assert!(page.contains("Overview"), "{page}");
    browser.open(admin, "/events").await;
    browser.type_into("#user", "pupil7").await;
    browser.click_and_wait("form.filters button").await;
    assert!(browser.url().await.contains("user=pupil7"));
    let page = browser.text().await;
    assert!(
        page.contains("pupil.tracker.test")
            && page.contains("laptop.tracker.test")
            && !page.contains("other.tracker.test"),
        "{page}"
    );
    browser
        .click_and_wait("table.events tbody a[href^='/events/']")
        .await;
    let page = browser.text().await;
    assert!(page.contains("Blocked: "), "{page}");
    assert!(page.contains("User") && page.contains("pupil7"), "{page}");
    assert!(
        page.contains("aa:bb:cc:dd:ee:07") || page.contains("aa:bb:cc:dd:ee:08"),
        "{page}"
    );
    assert!(page.contains("user from sign-in feed logon"), "{page}");
    assert!(
        page.contains("pupil7's other recent blocks, on any device"),
        "{page}"
    );
    save_screenshot("event-user.png", &browser.screenshot().await);
    // The user links to the person's blocks on every device.
    browser.open(admin, "/events?user=nobody").await;
    assert!(browser.text().await.contains("No events match"));

    browser.quit().await;
    stop_warden(warden.child);
}

/// The review report's sections, as the page, the file and the PDF title them.
const REPORT_SECTIONS: [&str; 7] = [
    "1. What is filtered, for whom",
    "2. Changes in the period",
    "3. Outcomes",
    "4. Self-test history",
    "5. Allow entries over a year old",
    "6. Coverage: what DNS filtering can and cannot do",
    "7. Review record",
];

/// `text` holds every section and none of `identifying`.
fn assert_governors_version(text: &str, identifying: &[&str]) {
    for section in REPORT_SECTIONS {
        assert!(text.contains(section), "{section:?} missing:\n{text}");
    }
    for value in identifying {
        assert!(
            !text.contains(value),
            "{value:?} in the governors' version:\n{text}"
        );
    }
}

/// `pdftotext FILE -`: the PDF's text (poppler-utils, which `.ci/run` installs).
fn pdf_text(pdf: &Path) -> String {
    let out = std::process::Command::new("pdftotext")
        .args(["-layout", pdf.to_str().unwrap(), "-"])
        .output()
        .expect("pdftotext runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Layout may break a heading across spaces: compare with single spaces.
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_review_report_renders_prints_to_pdf_and_names_no_one_for_governors() {
    let (_upstream, upstream_addr, _token) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dashboard_config(dir.path(), upstream_addr);
    // A named device, and a pupil signed in through a feed.
    let token = "report-feed-token-0123456789abcdefghij";
    std::fs::write(dir.path().join("feed.token"), token).unwrap();
    let text = std::fs::read_to_string(&path).unwrap()
        + "[[clients]]\ncidr = \"127.0.0.2\"\ngroup = \"default\"\nname = \"ipad-3\"\n\
           [[identity.feeds]]\nname = \"logon\"\ntoken_file = \"feed.token\"\n";
    std::fs::write(&path, text).unwrap();
    common::dashboard::add_user(&path, "gov", "governor", "governor password 1");
    let warden = spawn_warden_full(&path, &[]);
    let admin = warden.admin.expect("admin address logged");
    let db = dir.path().join("data/audit.sqlite");
    feed_sign_in(admin, token, "pupil7", "127.0.0.3");
    // A serious block on the named device, an adult block by the signed-in pupil.
    udp_from(
        "127.0.0.2".parse().unwrap(),
        warden.dns,
        "locked.test.",
        RecordType::A,
    )
    .await;
    udp_from(
        "127.0.0.3".parse().unwrap(),
        warden.dns,
        "pupil.tracker.test.",
        RecordType::A,
    )
    .await;
    wait_for_row(&db, "locked.test").await;
    wait_for_row(&db, "pupil.tracker.test").await;
    let identifying = ["127.0.0.2", "127.0.0.3", "ipad-3", "pupil7"];

    // The admin allows a site for a lesson, naming the device in the reason.
    let browser = Browser::start().await;
    sign_in(&browser, admin, "admin", ADMIN_PASSWORD).await;
    browser.open(admin, "/admin").await;
    browser.type_into("#name", "lesson.test").await;
    browser
        .type_into("#reason", "Year 9 lesson, asked for on ipad-3")
        .await;
    browser
        .click_and_wait("form[action='/admin/allow'] button")
        .await;
    assert!(browser.text().await.contains("lesson.test is now allowed"));
    browser.open(admin, "/").await;
    browser.click_and_wait("header form button").await;

    // The lead's full report names the device of the serious block.
    sign_in(&browser, admin, "lead", LEAD_PASSWORD).await;
    browser.open(admin, "/report?since=12m").await;
    let page = browser.text().await;
    for section in REPORT_SECTIONS {
        assert!(page.contains(section), "{section:?} missing:\n{page}");
    }
    assert!(page.contains("Filtering review: full report"), "{page}");
    assert!(
        page.contains("ipad-3") && page.contains("locked.test"),
        "{page}"
    );
    assert!(
        page.contains("lesson.test") && page.contains("Year 9 lesson"),
        "{page}"
    );
    save_screenshot("report.png", &browser.screenshot().await);
    // The lead may look at the governors' version too.
    browser.open(admin, "/report?since=12m&governors=yes").await;
    assert_governors_version(&browser.text().await, &identifying);
    browser.open(admin, "/").await;
    browser.click_and_wait("header form button").await;

    // A governor gets the governors' version, whatever the address asks for.
    sign_in(&browser, admin, "gov", "governor password 1").await;
    browser.open(admin, "/report?since=12m&governors=no").await;
    let page = browser.text().await;
    assert!(
        page.contains("Filtering review: governors' report"),
        "{page}"
    );
    assert!(
        page.contains("lesson.test") && page.contains("Year 9 lesson"),
        "{page}"
    );
    assert_governors_version(&page, &identifying);
    browser.quit().await;

    // The same report as a file, printed to PDF by headless Chromium.
    let html = dir.path().join("report.html");
    let pdf = dir.path().join("report.pdf");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "report",
            "--config",
            path.to_str().unwrap(),
            "--since",
            "12m",
        ])
        .args(["--governors", "--out", html.to_str().unwrap()])
        .args(["--pdf", pdf.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_governors_version(&std::fs::read_to_string(&html).unwrap(), &identifying);
    let text = pdf_text(&pdf);
    assert_governors_version(&text, &identifying);
    assert!(text.contains("Hillside School"), "{text}");
    let png = dir.path().join("page");
    let status = std::process::Command::new("pdftoppm")
        .args(["-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile"])
        .arg(&pdf)
        .arg(&png)
        .status()
        .unwrap();
    assert!(status.success());
    let first_page = std::fs::read(dir.path().join("page.png")).unwrap();
    save_screenshot("report-pdf-page-1.png", &first_page);
    stop_warden(warden.child);
}

/// POST the block page's form to `page` as the browser of `host` would, from `source`:
/// the status.
async fn file_request(source: &str, page: SocketAddr, host: &str, what: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(page))
        .await
        .unwrap()
        .unwrap();
    let body = format!("what={}&name=", what.replace(' ', "+"));
    let head = format!(
        "POST /request HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// POST a request whose body is one byte over the block page's limit, head and body in
/// one write (the server reads it all before refusing, so it closes cleanly): the status.
async fn post_oversized(page: SocketAddr) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!("what={}", "x".repeat(4097 - 5));
    let request = format!(
        "POST /request HTTP/1.1\r\nHost: tracker.test\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(page).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// Requests in the audit database.
fn request_rows(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM unblock_requests", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_the_block_page_is_approved_for_its_group_and_the_site_resolves() {
    let (upstream, upstream_addr, _token) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dashboard_config(dir.path(), upstream_addr);
    // Blocked names answer the block page's address; pupils (default) and staff both
    // block adult; 127.0.0.9 is a member of staff.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "[blocking]\n",
            "[blocking]\nresponse = \"ip\"\nblock_ip = [\"127.0.0.1\"]\n",
        )
        .replace(
            "organisation = \"Hillside School\"\n",
            "organisation = \"Hillside School\"\ncontact = \"Ms Patel\"\nblock_page = \"127.0.0.1:0\"\n",
        )
        + "[groups.default]\nblock = [\"adult\"]\n[groups.staff]\nblock = [\"adult\"]\n\
           [[clients]]\ncidr = \"127.0.0.9\"\ngroup = \"staff\"\n";
    std::fs::write(&path, text).unwrap();
    let warden = spawn_warden_full(&path, &[]);
    let admin = warden.admin.expect("admin address logged");
    let db = dir.path().join("data/audit.sqlite");
    let log = warden.log_text();
    let page: SocketAddr = log
        .split("block page on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("the block page's address is logged:\n{log}"));

    // A pupil's browser lands on the block page for blocked.test and files a request.
    let rules =
        "--host-resolver-rules=MAP blocked.test 127.0.0.1,MAP locked.test 127.0.0.1".to_string();
    let browser = Browser::start_with(&[rules], serde_json::json!({})).await;
    browser
        .goto(&format!("http://blocked.test:{}/", page.port()))
        .await
        .unwrap();
    let text = browser.text().await;
    assert!(
        text.contains("blocked.test is blocked")
            && text.contains("Think this was blocked wrongly?"),
        "{text}"
    );
    browser
        .type_into("#what", "Our history homework on the Tudors")
        .await;
    browser.type_into("#name", "Sam").await;
    browser
        .click_and_wait("form[action='/request'] button")
        .await;
    let text = browser.text().await;
    assert!(
        text.contains("Request sent") && text.contains("number 1"),
        "{text}"
    );
    // A locked category offers no form, and takes no request.
    browser
        .goto(&format!("http://locked.test:{}/", page.port()))
        .await
        .unwrap();
    let text = browser.text().await;
    assert!(
        text.contains("cannot be unblocked on request") && text.contains("Ms Patel"),
        "{text}"
    );
    assert!(!text.contains("Think this was blocked wrongly?"), "{text}");
    assert_eq!(
        file_request("127.0.0.1", page, "locked.test", "please").await,
        403
    );
    assert_eq!(request_rows(&db), 1);

    // The admin approves it for the pupil's group.
    sign_in(&browser, admin, "admin", ADMIN_PASSWORD).await;
    browser.open(admin, "/requests").await;
    let text = browser.text().await;
    assert!(
        text.contains("Request 1: blocked.test")
            && text.contains("Our history homework on the Tudors")
            && text.contains("Sam"),
        "{text}"
    );
    browser.click_and_wait("form.approve button").await;
    let text = browser.text().await;
    assert!(
        text.contains("blocked.test is now allowed (request 1)"),
        "{text}"
    );

    // The pupil's next visit resolves; staff, another group, are still blocked.
    let before = upstream.count("blocked.test.");
    let answer = udp(warden.dns, "blocked.test.", RecordType::A, true).await;
    assert_eq!(ede(&answer), None, "{answer:?}");
    assert_eq!(upstream.count("blocked.test."), before + 1, "forwarded");
    let staff = udp_from(
        "127.0.0.9".parse().unwrap(),
        warden.dns,
        "blocked.test.",
        RecordType::A,
    )
    .await;
    assert!(ede(&staff).is_some(), "still blocked for staff: {staff:?}");
    // The entry says why, and for whom.
    browser.open(admin, "/admin").await;
    let text = browser.text().await;
    assert!(
        text.contains("group default")
            && text.contains("request 1 from the block page: Our history homework"),
        "{text}"
    );
    browser.open(admin, "/").await;
    browser.click_and_wait("header form button").await;

    // The lead sees the decision.
    sign_in(&browser, admin, "lead", LEAD_PASSWORD).await;
    browser.open(admin, "/requests").await;
    let text = browser.text().await;
    assert!(
        text.contains("None waiting") && text.contains("approved (group default)"),
        "{text}"
    );
    browser.quit().await;

    // Bad input is refused and nothing is stored: no description, a body over the limit.
    assert_eq!(
        file_request("127.0.0.6", page, "tracker.test", "").await,
        400
    );
    assert_eq!(post_oversized(page).await, 413);
    assert_eq!(request_rows(&db), 1);

    // Twenty requests from one device in a minute are limited; another device is not.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(file_request("127.0.0.1", page, "tracker.test", "for a lesson").await);
    }
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        accepted <= 5 && limited >= 15 && accepted + limited == 20,
        "{statuses:?}"
    );
    assert_eq!(request_rows(&db), 1 + accepted as i64);
    assert_eq!(
        file_request("127.0.0.5", page, "tracker.test", "for a lesson").await,
        200
    );
    stop_warden(warden.child);
}
