//! List files that never end or never open, against the real binary: a FIFO, a link to
//! `/dev/zero`, a list over `[reload] max_list_bytes` and a gzip bomb are refused by
//! `warden config check` (exit 2, a message naming the list, no panic, within a bounded
//! time and memory), and by a running daemon's reload, whose old rules keep blocking
//! until a good list applies. SIGTERM stops the daemon at once even while a reload is
//! stuck on a file that never opens.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// The cap the tests configure: small, so an over-cap list is cheap to write.
const CAP: u64 = 64 * 1024;

/// The standard test config, with `extra` appended (e.g. a `[reload]` section).
fn config(dir: &Path, upstream: SocketAddr, extra: &str) -> std::path::PathBuf {
    let path = write_config(dir, upstream, "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();
    path
}

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A bad list file: what it is, what the refusal says, and how to put it at a path.
type BadList = (&'static str, &'static str, fn(&Path));

/// The bad list files.
fn bad_lists() -> Vec<BadList> {
    vec![
        ("a FIFO", "FIFO", |p| mkfifo(p)),
        ("a link to /dev/zero", "character device", |p| {
            std::os::unix::fs::symlink("/dev/zero", p).unwrap()
        }),
        ("a list over the cap", "more than 65536 bytes", |p| {
            let line = "over-the-cap.test\n";
            std::fs::write(p, line.repeat(2 * CAP as usize / line.len())).unwrap()
        }),
        ("a gzip bomb", "decompresses to more than 65536", |p| {
            std::fs::write(p, gzip(&vec![b'a'; 64 * CAP as usize])).unwrap()
        }),
    ]
}

/// Run `warden ARGS` with its address space capped at 2 GiB (reading `/dev/zero` whole
/// would pass that at once and abort), within 60 s; exit status and all output.
fn run_capped(args: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warden"));
    command
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            libc::setrlimit(libc::RLIMIT_AS, &limit);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let status = wait_within(&mut child, Duration::from_secs(60));
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let status = status.unwrap_or_else(|| panic!("warden {args:?} did not end in 60 s: {text}"));
    (status.code(), text)
}

/// The child's exit status if it ends within `limit` (else it is killed: `None`).
fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn config_check_refuses_lists_that_never_end_or_never_open_naming_them() {
    for (what, reason, make) in bad_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = config(
            dir.path(),
            "127.0.0.1:9".parse().unwrap(),
            &format!("[reload]\nmax_list_bytes = {CAP}\n"),
        );
        let list = dir.path().join("adult.txt");
        std::fs::remove_file(&list).unwrap();
        make(&list);
        let (code, out) = run_capped(&["config", "check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{what}: {out}");
        assert!(
            out.contains("\"adult\"") && out.contains("adult.txt") && out.contains(reason),
            "{what}: the message names the list, its file and the reason: {out}"
        );
        assert!(
            !out.contains("panicked") && !out.contains("backtrace") && !out.contains("memory"),
            "{what}: {out}"
        );
    }
    // The same list as a good file passes: the refusals above are about the files.
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "127.0.0.1:9".parse().unwrap(), "");
    let (code, out) = run_capped(&["config", "check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
}

fn rcode(runtime: &tokio::runtime::Runtime, dns: SocketAddr, name: &str) -> ResponseCode {
    runtime.block_on(async {
        udp(dns, name, RecordType::A, true)
            .await
            .metadata
            .response_code
    })
}

fn post_reload(admin: SocketAddr, dir: &Path) -> (u16, String) {
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    http("POST", admin, "/reload", &[("Authorization", &bearer)])
}

#[test]
fn a_daemon_refuses_such_lists_on_reload_keeps_blocking_and_applies_a_good_one() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        upstream_addr,
        &format!(
            "[reload]\nwatch_files = false\nmax_list_bytes = {CAP}\n[audit]\nenabled = false\n"
        ),
    );
    let warden = spawn_warden_full(&path, &[]);
    let admin = warden.admin.unwrap();
    let list = dir.path().join("adult.txt");
    assert_eq!(
        rcode(&runtime, warden.dns, "blocked.test."),
        ResponseCode::NXDomain
    );

    for (what, reason, make) in bad_lists() {
        std::fs::remove_file(&list).unwrap();
        make(&list);
        let started = Instant::now();
        let (status, body) = post_reload(admin, dir.path());
        assert_eq!(status, 422, "{what}: {body}");
        assert!(
            body.contains("adult") && body.contains(reason),
            "{what}: {body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: the reload took {:?}",
            started.elapsed()
        );
        // The rules in force stay: the old list still blocks.
        assert_eq!(
            rcode(&runtime, warden.dns, "www.blocked.test."),
            ResponseCode::NXDomain,
            "{what}"
        );
    }
    // A good list applies at the next reload.
    std::fs::remove_file(&list).unwrap();
    std::fs::write(&list, format!("{ADULT}now-blocked.test\n")).unwrap();
    let (status, body) = post_reload(admin, dir.path());
    assert_eq!(status, 200, "{body}");
    let answer = runtime.block_on(udp(warden.dns, "now-blocked.test.", RecordType::A, true));
    assert!(ede(&answer).is_some(), "blocked by the new list");
    let (_, metrics) = http("GET", admin, "/metrics", &[]);
    assert!(
        metrics.contains("warden_reload_failures_total 4"),
        "{metrics}"
    );
    assert!(stop_warden(warden.child).success());
}

#[test]
fn a_config_replaced_by_a_fifo_is_refused_at_once_and_the_stop_is_clean() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let dir = tempfile::tempdir().unwrap();
    // A reload timeout far longer than the test: a reload that hung would hang the test.
    let path = config(
        dir.path(),
        upstream_addr,
        "[reload]\nwatch_files = false\ntimeout = \"1h\"\n[audit]\nenabled = false\n",
    );
    let mut warden = spawn_warden_full(&path, &[]);
    let admin = warden.admin.unwrap();

    // The config becomes a FIFO no one writes. It is opened without blocking and refused
    // as not a regular file, so the reload fails at once instead of hanging for ever.
    // (A reload that does hang, on a stuck mount, is ended by the stop: tests/reload.rs.)
    std::fs::rename(&path, dir.path().join("warden.toml.good")).unwrap();
    mkfifo(&path);
    let (status, body) = post_reload(admin, dir.path());
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("not a regular file"), "{body}");
    // DNS is answered from the rules in force.
    assert_eq!(
        rcode(&runtime, warden.dns, "blocked.test."),
        ResponseCode::NXDomain
    );
    signal(&warden.child, "-TERM");
    let status = wait_within(&mut warden.child, Duration::from_secs(5));
    let log = warden.log_text();
    assert!(
        status.is_some_and(|s| s.success()),
        "stopped within 5 s, cleanly ({status:?}):\n{log}"
    );
}

#[test]
fn the_reading_limits_are_validated_with_clear_errors() {
    let parse = |text: &str| warden::config::Config::parse(text, Path::new("w.toml"));
    let defaults = parse("").unwrap();
    assert_eq!(defaults.reload.max_list_bytes, 512 * 1024 * 1024);
    assert_eq!(defaults.reload.timeout, Duration::from_secs(300));
    let set = parse("[reload]\nmax_list_bytes = 2048\ntimeout = \"90s\"\n").unwrap();
    assert_eq!(set.reload.max_list_bytes, 2048);
    assert_eq!(set.reload.timeout, Duration::from_secs(90));
    for (text, expect) in [
        (
            "[reload]\nmax_list_bytes = 0\n",
            "w.toml:2: [reload] max_list_bytes: must be at least 1024",
        ),
        (
            "[reload]\ntimeout = \"0s\"\n",
            "w.toml:2: [reload] timeout: must be between 1s and 1h",
        ),
        (
            "[reload]\ntimeout = \"2h\"\n",
            "w.toml:2: [reload] timeout: must be between 1s and 1h",
        ),
        (
            "[categories.a]\n[[lists]]\nname = \"l\"\ncategory = \"a\"\npath = \"l.txt\"\n\
             allow_redirect_to = [\"https://cdn.example\"]\n",
            "w.toml:6: list \"l\": allow_redirect_to needs a url",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(expect), "{text}: {err}");
    }
}
