//! Headless Chromium for the browser tests, driven through `chromedriver` with the
//! `fantoccini` WebDriver client: start the driver on a port it picks itself, open a
//! session, and stop both when dropped (even when a test panics first).
//!
//! A click that submits a form or follows a link returns before the page it causes has
//! loaded, so [`Browser::click_and_wait`] waits (bounded) until the old document is gone
//! and the new one has loaded: reading the page straight after a click would race the
//! navigation.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Map, Value};

/// How long any single wait on the browser may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);
/// How often a wait checks its condition.
const POLL: Duration = Duration::from_millis(50);

pub struct Browser {
    driver: Child,
    client: Client,
}

/// Where the Chromium binary and its driver are (Debian's `chromium`, `chromium-driver`).
fn find(candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
}

/// Start chromedriver with `--port=0`, so the kernel picks a free port and no other
/// process can take it between a probe and the driver's bind, and read the port it
/// reports on stdout (bounded in time). Panics, saying what to install, when missing.
fn start_driver() -> (Child, u16) {
    use std::os::unix::process::CommandExt;
    let driver_bin = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
        .expect("chromedriver not found: apt-get install chromium chromium-driver");
    let mut driver = Command::new(driver_bin)
        // Its own process group: Chromium inherits it, so dropping the Browser (even
        // when a test panics before `quit`) kills the browser too.
        .process_group(0)
        .args(["--port=0", "--allowed-ips=127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let stdout = driver.stdout.take().expect("chromedriver's stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut said = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let port = line
                .split("started successfully on port ")
                .nth(1)
                .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok());
            said.push(line);
            if let Some(port) = port {
                let _ = tx.send(Ok(port));
            }
        }
        // The driver closed its stdout: it exited; report what it said if no port yet.
        let _ = tx.send(Err(said.join("\n")));
    });
    let failure = match rx.recv_timeout(PATIENCE) {
        Ok(Ok(port)) => return (driver, port),
        Ok(Err(said)) => format!("chromedriver exited without a port:\n{said}"),
        Err(_) => format!("chromedriver did not report its port within {PATIENCE:?}"),
    };
    kill_group(&mut driver);
    panic!("{failure}");
}

/// Whether `err` says the element belongs to a document that has been replaced.
/// Chromedriver says "stale element reference"; some versions say "no such element"
/// for a reference from a previous document.
impl Browser {
    /// Start chromedriver and a headless Chromium session.
    pub async fn start() -> Browser {
        Browser::start_with(&[], json!({})).await
    }

    /// [`Browser::start`] with more command-line `args` and `local_state` preferences
    /// (the browser-wide settings an enterprise policy sets, such as DNS over HTTPS).
    pub async fn start_with(args: &[String], local_state: Value) -> Browser {
        let chrome_bin = find(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"])
            .expect("chromium not found: apt-get install chromium chromium-driver");
        let (mut driver, port) = start_driver();
        let mut caps = Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        let mut all_args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1100,1000",
            "--no-first-run",
            "--no-proxy-server",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        all_args.extend(args.iter().cloned());
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chrome_bin,
                "args": all_args,
                "localState": local_state,
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(caps);
        let url = format!("http://127.0.0.1:{port}");
        let connecting = builder.connect(&url);
        let failure = match tokio::time::timeout(PATIENCE, connecting).await {
            Ok(Ok(client)) => return Browser { driver, client },
            Ok(Err(e)) => format!("a WebDriver session: {e}"),
            Err(_) => format!("no WebDriver session within {PATIENCE:?}"),
        };
        kill_group(&mut driver);
        panic!("{failure}");
    }

    /// Go to `url`: `Err` with the browser's reason when the page cannot load (a name
    /// that does not resolve, a refused connection).
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.client.goto(url).await.map_err(|e| e.to_string())
    }

    /// Open `http://addr/path` (returns once the page has loaded).
    pub async fn open(&self, addr: SocketAddr, path: &str) {
        let url = format!("http://{addr}{path}");
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The element matching CSS `selector` (panics, naming it, if none).
    async fn element(&self, selector: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("element {selector}: {e}"))
    }

    /// Replace the text of the input matching `selector`.
    pub async fn type_into(&self, selector: &str, text: &str) {
        let input = self.element(selector).await;
        input
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {selector}: {e}"));
        input
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {selector}: {e}"));
    }

    /// Choose the option with `value` in the `<select>` matching `selector`.
    pub async fn select(&self, selector: &str, value: &str) {
        self.element(selector)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("select {value} in {selector}: {e}"));
    }

    /// Click what matches `selector` (a submit button or a link) and wait, bounded,
    /// for the page it causes: first until the current document is gone (a mark set
    /// on its `window` before the click is no longer there), then until the new one
    /// has finished loading. While a document is being replaced the browser may answer
    /// with any WebDriver error (a stale element, "node does not belong to the
    /// document"); those mean "not yet", never "failed".
    pub async fn click_and_wait(&self, selector: &str) {
        self.client
            .execute("window.__wardenOldPage = true; return true", Vec::new())
            .await
            .unwrap_or_else(|e| panic!("marking the page before clicking {selector}: {e}"));
        self.element(selector)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {selector}: {e}"));
        let deadline = Instant::now() + PATIENCE;
        loop {
            let still_old = self
                .client
                .execute("return window.__wardenOldPage === true", Vec::new())
                .await;
            match still_old {
                Ok(Value::Bool(false)) => break,
                Ok(_) | Err(CmdError::Standard(_)) => {}
                Err(e) => panic!("waiting for the page after clicking {selector}: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "clicking {selector} did not lead to a new page within {PATIENCE:?}"
            );
            tokio::time::sleep(POLL).await;
        }
        self.wait_until_loaded(selector).await;
    }

    /// Wait (bounded) until the current document's `readyState` is `complete`.
    async fn wait_until_loaded(&self, after: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let state = self
                .client
                .execute("return document.readyState", Vec::new())
                .await;
            match state {
                Ok(Value::String(s)) if s == "complete" => return,
                // A document that is still being replaced can refuse scripts for a moment.
                Ok(_) | Err(CmdError::Standard(_)) => {}
                Err(e) => panic!("reading the page's state after {after}: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "the page after {after} did not finish loading within {PATIENCE:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The visible text of the whole page.
    pub async fn text(&self) -> String {
        self.element("body")
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("the page's text: {e}"))
    }

    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .unwrap_or_else(|e| panic!("the current URL: {e}"))
            .to_string()
    }

    /// The attribute `name` of the element matching `selector`.
    pub async fn attribute(&self, selector: &str, name: &str) -> Option<String> {
        self.element(selector)
            .await
            .attr(name)
            .await
            .unwrap_or_else(|e| panic!("attribute {name} of {selector}: {e}"))
    }

    /// The value of cookie `name` in the browser, if it has one.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        match self.client.get_named_cookie(name).await {
            Ok(cookie) => Some(cookie.value().to_string()),
            Err(CmdError::Standard(e)) if e.error == ErrorStatus::NoSuchCookie => None,
            Err(e) => panic!("cookie {name}: {e}"),
        }
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("a screenshot: {e}"))
    }

    /// End the session (the driver is killed on drop either way).
    pub async fn quit(self) {
        self.client
            .clone()
            .close()
            .await
            .unwrap_or_else(|e| panic!("closing the session: {e}"));
    }
}

/// Kill the driver's whole process group: chromedriver and every Chromium process.
fn kill_group(driver: &mut Child) {
    if let Ok(group) = libc::pid_t::try_from(driver.id()) {
        // SAFETY: kill(2) on the process group this helper made (`process_group(0)`).
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    let _ = driver.kill();
    let _ = driver.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}
