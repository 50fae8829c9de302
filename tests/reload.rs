//! Hot reload: new rules swap in; garbage, empty or shrunken lists and broken configs are
//! refused with the old rules still serving; reloads under a steady query load fail no
//! query; file changes and SIGHUP trigger reloads; a reload stuck past `[reload]
//! timeout` is abandoned (the next one applies, its late result never does), and a stop
//! ends a stuck reload at once.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use warden::dns;
use warden::engine::Engine;
use warden::reload::{ReloadError, Reloader};
use warden::upstream::Forwarder;

struct Served {
    warden: std::net::SocketAddr,
    reloader: Arc<Reloader>,
    config: std::path::PathBuf,
    dir: tempfile::TempDir,
    _server: dns::RunningServer,
    _upstream_stop: tokio_util::sync::DropGuard,
}

async fn served() -> Served {
    served_with("", |reloader| reloader).await
}

/// [`served`] with `extra` appended to the config and the reloader set up by `setup`.
async fn served_with(extra: &str, setup: impl FnOnce(Reloader) -> Reloader) -> Served {
    let (_upstream, upstream_addr, token) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), upstream_addr, "");
    // The steady load comes from one loopback address: no rate limit here.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[server.rate_limit]\nqps = 0\n");
    text.push_str(extra);
    std::fs::write(&config, text).unwrap();
    let engine = Engine::load(&config).unwrap();
    let forwarder = Forwarder::new(&engine.config.upstream).unwrap();
    let shared = Arc::new(ArcSwap::from_pointee(engine));
    let reloader = Arc::new(setup(Reloader::new(&config, shared.clone())));
    let server = dns::start(
        &["127.0.0.1:0".parse().unwrap()],
        dns::Handler::new(shared, forwarder),
        WAIT,
    )
    .await
    .unwrap();
    Served {
        warden: server.addrs[0],
        reloader,
        config,
        dir,
        _server: server,
        _upstream_stop: token.drop_guard(),
    }
}

async fn rcode(addr: std::net::SocketAddr, name: &str) -> ResponseCode {
    udp(addr, name, RecordType::A, true)
        .await
        .metadata
        .response_code
}

/// Replace a file the way list updates should: write aside, then rename over it.
fn replace(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rules_swap_in_and_bad_updates_keep_the_old_ones() {
    let s = served().await;
    let list = s.dir.path().join("adult.txt");
    assert_eq!(
        rcode(s.warden, "blocked.test.").await,
        ResponseCode::NXDomain
    );
    assert_eq!(
        rcode(s.warden, "allowed.test.").await,
        ResponseCode::NoError
    );

    // A bigger list with a new entry: accepted, and applies to the next query.
    let mut body: String = (0..100).map(|i| format!("filler{i}.test\n")).collect();
    body.push_str("blocked.test\nallowed.test\n");
    replace(&list, body.as_bytes());
    s.reloader.reload("test").await.unwrap();
    assert_eq!(
        rcode(s.warden, "allowed.test.").await,
        ResponseCode::NXDomain
    );
    assert_eq!(s.reloader.stats().generation.load(Ordering::Relaxed), 2);

    // Garbage, an empty file, a tenth of the list: each refused, naming the list.
    let tenth: String = (0..10).map(|i| format!("filler{i}.test\n")).collect();
    let bad: [&[u8]; 3] = [
        b"\x00\xff\xfe garbage \x01\n<html>oops</html>\n",
        b"",
        tenth.as_bytes(),
    ];
    for contents in bad {
        replace(&list, contents);
        match s.reloader.reload("test").await {
            Err(ReloadError::Shrunk { list, old, .. }) => {
                assert_eq!((list.as_str(), old), ("adult", 102));
            }
            other => panic!("expected a refused reload, got {other:?}"),
        }
        assert_eq!(
            rcode(s.warden, "allowed.test.").await,
            ResponseCode::NXDomain,
            "old rules serve"
        );
        assert_eq!(
            rcode(s.warden, "blocked.test.").await,
            ResponseCode::NXDomain
        );
    }
    // A broken config: refused too, with the position of the error.
    let good_config = std::fs::read_to_string(&s.config).unwrap();
    replace(
        &s.config,
        format!("{good_config}\n[blocking]\nresponse = \"nope\"\n").as_bytes(),
    );
    let err = s.reloader.reload("test").await.unwrap_err().to_string();
    assert!(err.contains("warden.toml"), "{err}");
    assert_eq!(
        rcode(s.warden, "allowed.test.").await,
        ResponseCode::NXDomain
    );
    let stats = s.reloader.stats();
    assert_eq!(stats.failures.load(Ordering::Relaxed), 4);
    assert_eq!(
        stats.generation.load(Ordering::Relaxed),
        2,
        "nothing bad was swapped in"
    );
    assert!(stats
        .last_error
        .lock()
        .unwrap()
        .as_deref()
        .unwrap_or("")
        .contains("warden.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_steady_load_fail_no_query_and_file_changes_apply_within_5s() {
    let s = served().await;
    let list = s.dir.path().join("adult.txt");
    let big = s.dir.path().join("big.txt");
    // One million rules, built here.
    let mut text = String::with_capacity(24_000_000);
    for i in 0..1_000_000 {
        text.push_str(&format!("host{i}.big-list.test\n"));
    }
    std::fs::write(&big, text).unwrap();
    let base_config = std::fs::read_to_string(&s.config).unwrap();
    let with_big = format!(
        "{base_config}\n[[lists]]\nname = \"big\"\ncategory = \"adult\"\npath = \"big.txt\"\n"
    );

    // A client asking steadily; every answer must be a real answer, in time.
    let stop = tokio_util::sync::CancellationToken::new();
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (addr, stop, answered, failed) =
            (s.warden, stop.clone(), answered.clone(), failed.clone());
        tokio::spawn(async move {
            let names = [
                "blocked.test.",
                "allowed.test.",
                "host77.big-list.test.",
                "www.alt.test.",
            ];
            let mut i = 0;
            while !stop.is_cancelled() {
                let msg = query_message(names[i % names.len()], RecordType::A, true);
                i += 1;
                match udp_exchange_within(addr, &msg.to_vec().unwrap(), Duration::from_secs(2))
                    .await
                {
                    Some(r)
                        if matches!(
                            r.metadata.response_code,
                            ResponseCode::NXDomain | ResponseCode::NoError
                        ) =>
                    {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    for round in 0..20 {
        // Alternate between two rule sets; rounds 9 and 10 carry the million-rule list.
        let entries = if round % 2 == 0 {
            "blocked.test\nalt.test\n"
        } else {
            "blocked.test\nother.test\n"
        };
        replace(&list, entries.as_bytes());
        let config = if round == 9 || round == 10 {
            &with_big
        } else {
            &base_config
        };
        replace(&s.config, config.as_bytes());
        s.reloader.reload("test").await.unwrap();
        // Upstream answers NXDOMAIN for these names too, so a block shows by its EDE.
        let big_loaded = round == 9 || round == 10;
        let r = udp(s.warden, "host77.big-list.test.", RecordType::A, true).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(
            ede(&r).is_some(),
            big_loaded,
            "round {round}: the big list's rule"
        );
        let r = udp(s.warden, "www.alt.test.", RecordType::A, true).await;
        assert_eq!(
            ede(&r).is_some(),
            round % 2 == 0,
            "round {round}: alt.test's rule"
        );
    }
    stop.cancel();
    client.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no query failed or timed out during reloads"
    );
    assert!(answered.load(Ordering::Relaxed) > 100);
    assert_eq!(s.reloader.stats().generation.load(Ordering::Relaxed), 21);

    // A file change alone (no explicit reload) applies within 5 seconds.
    let watcher_stop = tokio_util::sync::CancellationToken::new();
    let _watcher = warden::reload::watch(s.reloader.clone(), watcher_stop.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // the watch is in place
                                                          // Reading the lists (a backup, `zcat`, an admin's `less`) is not a change.
    std::fs::read(&list).unwrap();
    std::fs::read(&s.config).unwrap();
    tokio::time::sleep(warden::reload::DEBOUNCE * 3).await;
    assert_eq!(
        s.reloader.stats().generation.load(Ordering::Relaxed),
        21,
        "a read reloaded"
    );
    replace(&list, b"blocked.test\nalt.test\nallowed.test\n");
    let changed = Instant::now();
    loop {
        if rcode(s.warden, "allowed.test.").await == ResponseCode::NXDomain {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(5),
            "the change did not apply within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher_stop.cancel();
}

#[test]
fn sighup_reloads_the_real_binary() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_upstream, upstream_addr, _token) = runtime.block_on(start_upstream());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), upstream_addr, "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[reload]\nwatch_files = false\n[audit]\nenabled = false\n");
    std::fs::write(&config, text).unwrap();
    let (child, addr) = spawn_warden(&config);
    runtime.block_on(async {
        assert_eq!(rcode(addr, "allowed.test.").await, ResponseCode::NoError);
        replace(
            &dir.path().join("adult.txt"),
            b"blocked.test\n||tracker.test^\nallowed.test\n",
        );
        signal(&child, "-HUP");
        let sent = Instant::now();
        while rcode(addr, "allowed.test.").await != ResponseCode::NXDomain {
            assert!(
                sent.elapsed() < Duration::from_secs(5),
                "SIGHUP did not reload"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(stop_warden(child).success());
}

/// A build that stands in for a list on a stuck mount: while `hang` is set, each build
/// waits (at most a minute, so a failing test still ends) until the test releases it,
/// then reads the files as a real one does. `done` hears of each build that ends.
#[derive(Clone)]
struct StuckBuilds {
    hang: Arc<std::sync::atomic::AtomicBool>,
    release: Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>,
    released: std::sync::mpsc::Sender<()>,
    done: Arc<std::sync::Mutex<std::sync::mpsc::Sender<()>>>,
    calls: Arc<AtomicU64>,
}

impl StuckBuilds {
    fn new() -> (StuckBuilds, std::sync::mpsc::Receiver<()>) {
        let (released, release) = std::sync::mpsc::channel();
        let (done, finished) = std::sync::mpsc::channel();
        let builds = StuckBuilds {
            hang: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            release: Arc::new(std::sync::Mutex::new(release)),
            released,
            done: Arc::new(std::sync::Mutex::new(done)),
            calls: Arc::new(AtomicU64::new(0)),
        };
        (builds, finished)
    }

    fn install(&self, reloader: Reloader) -> Reloader {
        let builds = self.clone();
        reloader.with_builder(move |path, serving| {
            builds.calls.fetch_add(1, Ordering::SeqCst);
            if builds.hang.load(Ordering::SeqCst) {
                let _ = builds
                    .release
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(60));
            }
            let built = Engine::reload(path, serving);
            let _ = builds.done.lock().unwrap().send(());
            built
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_stuck_past_its_timeout_is_abandoned_and_the_next_one_applies() {
    let (builds, finished) = StuckBuilds::new();
    let s = served_with("[reload]\ntimeout = \"1s\"\n", |r| builds.install(r)).await;
    let list = s.dir.path().join("adult.txt");
    replace(&list, format!("{ADULT}allowed.test\n").as_bytes());

    // Stuck: abandoned after the timeout, counted, and the rules in force stay.
    builds.hang.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let err = s.reloader.reload("test").await.unwrap_err();
    assert!(
        matches!(err, ReloadError::TimedOut(t) if t == Duration::from_secs(1)),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(err.to_string().contains("[reload] timeout"), "{err}");
    let stats = s.reloader.stats();
    assert_eq!(stats.failures.load(Ordering::Relaxed), 1);
    assert_eq!(stats.generation.load(Ordering::Relaxed), 1);
    assert_eq!(
        rcode(s.warden, "allowed.test.").await,
        ResponseCode::NoError
    );
    assert_eq!(
        rcode(s.warden, "blocked.test.").await,
        ResponseCode::NXDomain
    );

    // The next reload does not wait for the stuck one, and applies.
    builds.hang.store(false, Ordering::SeqCst);
    s.reloader.reload("test").await.unwrap();
    assert_eq!(stats.generation.load(Ordering::Relaxed), 2);
    assert_eq!(
        rcode(s.warden, "allowed.test.").await,
        ResponseCode::NXDomain
    );
    finished.recv_timeout(Duration::from_secs(30)).unwrap();

    // The stuck build ends late: its result is thrown away, not swapped in.
    replace(&list, ADULT.as_bytes());
    builds.released.send(()).unwrap();
    finished.recv_timeout(Duration::from_secs(30)).unwrap();
    tokio::task::yield_now().await;
    assert_eq!(stats.generation.load(Ordering::Relaxed), 2);
    assert_eq!(
        rcode(s.warden, "allowed.test.").await,
        ResponseCode::NXDomain
    );

    // A mount that stays stuck: after MAX_ABANDONED stuck builds, reloads are refused
    // without starting another thread, until one ends.
    builds.hang.store(true, Ordering::SeqCst);
    for _ in 0..warden::reload::MAX_ABANDONED {
        let err = s.reloader.reload("test").await.unwrap_err();
        assert!(matches!(err, ReloadError::TimedOut(_)), "{err}");
    }
    let calls = builds.calls.load(Ordering::SeqCst);
    let err = s.reloader.reload("test").await.unwrap_err();
    assert!(
        matches!(err, ReloadError::Stuck(n) if n == warden::reload::MAX_ABANDONED),
        "{err}"
    );
    assert_eq!(builds.calls.load(Ordering::SeqCst), calls, "no new build");
    builds.hang.store(false, Ordering::SeqCst);
    for _ in 0..warden::reload::MAX_ABANDONED {
        builds.released.send(()).unwrap();
        finished.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    // A finished thread is counted as finished once the runtime has seen it end.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.reloader.reload("test").await {
            Ok(_) => break,
            Err(ReloadError::Stuck(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("the reload after the mount recovers: {other}"),
        }
    }
    assert_eq!(
        rcode(s.warden, "allowed.test.").await,
        ResponseCode::NoError
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_a_stuck_reload_at_once() {
    let (builds, finished) = StuckBuilds::new();
    let s = served_with("[reload]\ntimeout = \"1h\"\n", |r| builds.install(r)).await;
    builds.hang.store(true, Ordering::SeqCst);
    let reloader = s.reloader.clone();
    let stuck = tokio::spawn(async move { reloader.reload("test").await });
    // The build has started (it counts its call first) before the stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    while builds.calls.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the build starts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.reloader.stop_token().cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), stuck)
        .await
        .expect("the stop ends the reload at once")
        .unwrap();
    assert!(matches!(result, Err(ReloadError::Stopping)), "{result:?}");
    assert!(matches!(
        s.reloader.reload("after the stop").await,
        Err(ReloadError::Stopping)
    ));
    assert_eq!(s.reloader.stats().generation.load(Ordering::Relaxed), 1);
    builds.released.send(()).unwrap();
    finished.recv_timeout(Duration::from_secs(30)).unwrap();
}
