//! A minimal W3C WebDriver client for the browser tests: start `chromedriver` on a free
//! loopback port, drive headless Chromium, and stop both when dropped. Only the commands
//! the tests need: open a page, find elements, type, click, read text, screenshots.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The element key the W3C protocol uses in element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
}

/// Where the Chromium binary and its driver are (Debian's `chromium`, `chromium-driver`).
fn find(candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
}

impl Browser {
    /// Start chromedriver and a headless Chromium session. Panics, saying what to
    /// install, when they are missing (`.ci/run` installs them).
    pub async fn start() -> Browser {
        let driver_bin = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
            .expect("chromedriver not found: apt-get install chromium chromium-driver");
        let chrome_bin = find(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"])
            .expect("chromium not found: apt-get install chromium chromium-driver");
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        use std::os::unix::process::CommandExt;
        let driver = Command::new(driver_bin)
            // Its own process group: Chromium inherits it, so dropping the Browser (even
            // when a test panics before `quit`) kills the browser too.
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == json!(true) {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome_bin,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1100,1000", "--no-first-run", "--no-proxy-server"]
            }
        }}});
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            client,
        };
        let created = browser.call("POST", "/session", caps).await;
        browser.session = created["sessionId"]
            .as_str()
            .expect("a WebDriver session id")
            .to_string();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        match self.try_call(method, path, &body).await {
            Ok(v) => v,
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    async fn try_call(&self, method: &str, path: &str, body: &Value) -> Result<Value, Value> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url).json(body),
        };
        let reply: Value = request
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("chromedriver answers JSON");
        if reply["value"]["error"].is_string() {
            return Err(reply["value"].clone());
        }
        Ok(reply["value"].clone())
    }

    /// The page's body text once the page has settled: a form's submission navigates
    /// after the click returns, so an element can go stale under us; retry (bounded).
    async fn settled_text(&self, selector: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .try_call(
                    "POST",
                    &self.at("/element"),
                    &json!({"using": "css selector", "value": selector}),
                )
                .await;
            if let Ok(v) = found {
                if let Some(id) = v[ELEMENT].as_str() {
                    let text = self
                        .try_call("GET", &self.at(&format!("/element/{id}/text")), &json!({}))
                        .await;
                    if let Ok(t) = text {
                        return t.as_str().unwrap_or_default().to_string();
                    }
                }
            }
            assert!(Instant::now() < deadline, "the page never settled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Open `http://addr/path`.
    pub async fn open(&self, addr: SocketAddr, path: &str) {
        self.call(
            "POST",
            &self.at("/url"),
            json!({"url": format!("http://{addr}{path}")}),
        )
        .await;
    }

    /// The element matching CSS `selector` (panics if none).
    pub async fn find(&self, selector: &str) -> String {
        let v = self
            .call(
                "POST",
                &self.at("/element"),
                json!({"using": "css selector", "value": selector}),
            )
            .await;
        v[ELEMENT].as_str().expect("element reference").to_string()
    }

    pub async fn type_into(&self, selector: &str, text: &str) {
        let id = self.find(selector).await;
        self.call("POST", &self.at(&format!("/element/{id}/clear")), json!({}))
            .await;
        self.call(
            "POST",
            &self.at(&format!("/element/{id}/value")),
            json!({"text": text}),
        )
        .await;
    }

    pub async fn click(&self, selector: &str) {
        let id = self.find(selector).await;
        self.call("POST", &self.at(&format!("/element/{id}/click")), json!({}))
            .await;
    }

    /// The visible text of the whole page (after any navigation in progress).
    pub async fn text(&self) -> String {
        // Let a navigation started by the last click begin before reading.
        tokio::time::sleep(Duration::from_millis(150)).await;
        self.settled_text("body").await
    }

    pub async fn url(&self) -> String {
        self.call("GET", &self.at("/url"), json!({}))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn attribute(&self, selector: &str, name: &str) -> Option<String> {
        let id = self.find(selector).await;
        self.call(
            "GET",
            &self.at(&format!("/element/{id}/attribute/{name}")),
            json!({}),
        )
        .await
        .as_str()
        .map(str::to_string)
    }

    /// The value of cookie `name` in the browser.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        let v = self
            .call("GET", &self.at(&format!("/cookie/{name}")), json!({}))
            .await;
        v["value"].as_str().map(str::to_string)
    }

    pub async fn delete_cookies(&self) {
        self.call("DELETE", &self.at("/cookie"), json!({})).await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let data = self.call("GET", &self.at("/screenshot"), json!({})).await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("base64 PNG")
    }

    /// End the session (the driver is killed on drop either way).
    pub async fn quit(self) {
        let path = self.at("");
        self.call("DELETE", &path, json!({})).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver's whole process group: chromedriver and every Chromium process.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
