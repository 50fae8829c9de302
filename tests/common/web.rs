//! A small HTTP/1.1 client for the dashboard tests: keeps response headers (cookies,
//! redirects, security headers) and sends form bodies. Loopback only, bounded in time.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value a `Set-Cookie` header gives cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .find_map(|(_, v)| {
                let first = v.split(';').next()?;
                let (k, value) = first.split_once('=')?;
                (k == name).then(|| value.to_string())
            })
    }

    /// The value of the hidden input `name` in the page.
    pub fn hidden(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find('"')?;
        Some(self.body[start..start + end].to_string())
    }
}

/// Send one request; `cookie` is sent as the `Cookie` header, `form` as an
/// `application/x-www-form-urlencoded` body.
pub fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    cookie: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> Reply {
    let body = form.map(encode).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if form.is_some() {
        head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    if let Some(cookie) = cookie {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    raw(addr, &format!("{head}\r\n{body}"))
}

/// Send `text` as the whole request and parse the reply.
pub fn raw(addr: SocketAddr, text: &str) -> Reply {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(text.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        super::dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The lead's and the admin's passwords in [`dashboard_config`].
pub const LEAD_PASSWORD: &str = "lead password 1";
pub const ADMIN_PASSWORD: &str = "admin password 1";

/// [`super::write_config`] plus a fast audit flush, an organisation name, and two users
/// (`lead` and `admin`) made with the real `warden user add`.
pub fn dashboard_config(dir: &std::path::Path, upstream: SocketAddr) -> std::path::PathBuf {
    let path = super::write_config(dir, upstream, "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(
        "[audit]\nflush_interval = \"100ms\"\n[dashboard]\norganisation = \"Hillside School\"\n",
    );
    std::fs::write(&path, text).unwrap();
    add_user(&path, "lead", "lead", LEAD_PASSWORD);
    add_user(&path, "admin", "admin", ADMIN_PASSWORD);
    path
}

/// Add a dashboard user with the real `warden user add`, the password on stdin.
pub fn add_user(config: &std::path::Path, name: &str, role: &str, password: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["user", "add", name, "--role", role, "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "warden user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sign in through the form; returns the session cookie (`warden_session=…`).
pub fn sign_in(admin: SocketAddr, user: &str, password: &str) -> Result<String, Reply> {
    let form = request("GET", admin, "/login", None, None);
    let login_cookie = form.cookie("warden_login").expect("login cookie");
    let csrf = form.hidden("csrf").expect("csrf field");
    let reply = request(
        "POST",
        admin,
        "/login",
        Some(&format!("warden_login={login_cookie}")),
        Some(&[("csrf", &csrf), ("user", user), ("password", password)]),
    );
    match reply.cookie("warden_session") {
        Some(token) if reply.status == 303 => Ok(format!("warden_session={token}")),
        _ => Err(reply),
    }
}
