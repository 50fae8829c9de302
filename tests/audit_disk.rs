//! The audit log on a full disk, through the real `warden serve`: blocks answered while
//! the disk is full are held, shown in `/metrics`, and all written once space returns;
//! a stop while it is still full exits with status 3 and says how many were not written.
//!
//! The audit file lives on a small tmpfs mounted by the test (CI runs as root), filled
//! to the last byte by a filler file. Without the right to mount, the tests fail saying
//! so: a disk-full test that silently passes would prove nothing.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// `warden serve`'s documented status for a stop with audit events not written.
const EXIT_AUDIT_UNWRITTEN: i32 = 3;

/// A tmpfs mounted on a fresh folder, unmounted on drop (also when a test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs on {} failed ({}): this test needs root (or \
             CAP_SYS_ADMIN), as in CI",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon a failed test left behind must not keep the mount busy.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fill the file system holding `path` to the last byte with the file `path`.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    // Big writes first, then smaller ones for the last partial blocks.
    for size in [1 << 16, 4096, 512, 1] {
        let chunk = vec![0u8; size];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    let _ = file.sync_all();
}

/// A Warden whose audit log is `audit.sqlite` on a fresh tmpfs.
struct Daemon {
    /// Taken by [`Daemon::stop`]; killed on drop if a test failed first.
    child: Option<std::process::Child>,
    dns: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    config: PathBuf,
    db: PathBuf,
    filler: PathBuf,
    admin: SocketAddr,
    runtime: tokio::runtime::Runtime,
    _upstream_stop: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
    // Last: unmounted after the daemon above is gone.
    _tmpfs: Tmpfs,
}

fn start() -> Daemon {
    let tmpfs = Tmpfs::mount("4m");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_upstream, upstream_addr, token) = runtime.block_on(start_upstream());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), upstream_addr, "");
    let db = tmpfs.path().join("audit.sqlite");
    let mut text = std::fs::read_to_string(&config).unwrap();
    // No rate limit: every query of the test is answered by a block, none refused.
    text.push_str(&format!(
        "[server.rate_limit]\nqps = 0\n[audit]\npath = {:?}\nflush_interval = \"100ms\"\n",
        db.to_str().unwrap()
    ));
    std::fs::write(&config, text).unwrap();
    let warden = spawn_warden_full(&config, &[]);
    let admin = warden.admin.expect("the admin listener is on");
    assert!(db.exists(), "the audit log is on the tmpfs");
    Daemon {
        child: Some(warden.child),
        dns: warden.dns,
        log: warden.log,
        config,
        db,
        filler: tmpfs.path().join("filler"),
        admin,
        runtime,
        _upstream_stop: token.drop_guard(),
        _dir: dir,
        _tmpfs: tmpfs,
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Daemon {
    /// SIGTERM the daemon and wait (bounded) for its exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        stop_warden(self.child.take().expect("still running"))
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Send one blocked query per name over UDP; returns how many block answers
    /// (NXDOMAIN) came back.
    fn block(&self, names: impl Iterator<Item = String>) -> u64 {
        let dns = self.dns;
        self.runtime.block_on(async move {
            let mut blocked = 0;
            for name in names {
                let r = udp(dns, &name, RecordType::A, false).await;
                if r.metadata.response_code == ResponseCode::NXDomain {
                    blocked += 1;
                }
            }
            blocked
        })
    }

    /// A metric's value (unlabelled families), from `/metrics`.
    fn metric(&self, name: &str) -> f64 {
        let (status, body) = http("GET", self.admin, "/metrics", &[]);
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"))
    }

    /// Poll `/metrics` (bounded) until `done` holds for the values of `names`.
    fn wait_for(&self, names: &[&str], within: Duration, done: impl Fn(&[f64]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let values: Vec<f64> = names.iter().map(|n| self.metric(n)).collect();
            if done(&values) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{names:?} = {values:?} after {within:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait (bounded) until the log has a line containing `text`.
    fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log_text().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the log never said {text:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ask the answering daemon something that is not blocked.
    fn still_answers(&self) {
        let dns = self.dns;
        let r = self
            .runtime
            .block_on(async move { udp(dns, "allowed.test.", RecordType::A, false).await });
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    }

    /// `sum(count)` over every row of the audit log.
    fn counted(&self) -> u64 {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        conn.query_row("SELECT coalesce(sum(count), 0) FROM events", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap() as u64
    }

    fn verify(&self) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["audit", "verify", "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }
}

fn names(prefix: &str, n: usize) -> impl Iterator<Item = String> + '_ {
    (0..n).map(move |i| format!("{prefix}{i}.blocked.test."))
}

const PENDING: &str = "warden_audit_pending";
const ERRORS: &str = "warden_audit_write_errors_total";
const ROWS: &str = "warden_audit_rows_written_total";

#[test]
fn blocks_answered_on_a_full_disk_are_all_written_once_space_returns() {
    let mut d = start();
    fill(&d.filler);
    let mut answered = d.block(names("full", 200));
    d.wait_for(&[ERRORS], Duration::from_secs(10), |v| v[0] > 0.0);
    // More blocks while the first ones are held, over several failed retries.
    answered += d.block(names("more", 100));
    assert_eq!(
        answered, 300,
        "every block is answered while the disk is full"
    );
    d.still_answers();
    // Held and shown: all 300 pending, writes failing, no row counted as written.
    d.wait_for(&[ERRORS, PENDING], Duration::from_secs(20), |v| {
        v[0] >= 3.0 && v[1] == 300.0
    });
    d.still_answers();
    assert_eq!(d.metric(ROWS), 0.0, "nothing counted as written");
    assert_eq!(d.counted(), 0);

    std::fs::remove_file(&d.filler).unwrap();
    // The retry waits at most 30 s; everything held is committed after it.
    d.wait_for(&[PENDING], Duration::from_secs(60), |v| v[0] == 0.0);
    assert!(d.metric(ROWS) >= 300.0);
    d.wait_for_log("audit writes recovered");
    let status = d.stop();
    assert!(status.success(), "{status:?}; log:\n{}", d.log_text());
    assert_eq!(
        d.counted(),
        answered,
        "sum(count) equals the block answers given"
    );
    let out = d.verify();
    assert!(out.contains("0 rows still open"), "{out}");
}

#[test]
fn a_stop_while_the_disk_is_full_exits_3_and_names_the_events_not_written() {
    let mut d = start();
    // Written before the disk fills: kept whatever happens next.
    let before = d.block(names("early", 10));
    d.wait_for(&[PENDING, ROWS], Duration::from_secs(10), |v| {
        v[0] == 0.0 && v[1] >= 10.0
    });
    fill(&d.filler);
    let lost = d.block(names("late", 50));
    assert_eq!((before, lost), (10, 50));
    d.wait_for(&[ERRORS, PENDING], Duration::from_secs(10), |v| {
        v[0] > 0.0 && v[1] == 50.0
    });
    let status = d.stop();
    assert_eq!(
        status.code(),
        Some(EXIT_AUDIT_UNWRITTEN),
        "log:\n{}",
        d.log_text()
    );
    d.wait_for_log("stopped with 50 events not written to the audit log");
    assert_eq!(d.counted(), before, "what was committed is still there");
    d.verify();
}
