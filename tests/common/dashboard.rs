//! The dashboard tests' side of HTTP, on `reqwest` (blocking: those tests are plain
//! `#[test]`s): send a request with an explicit cookie and form, and keep what the tests
//! check in the reply (status, headers, the cookies it sets, the body). Redirects are
//! not followed, since the tests assert them. Also: a dashboard config with two users
//! made by the real `warden user add`, and sign-in through the form.

use std::net::SocketAddr;

use reqwest::blocking::RequestBuilder;
use reqwest::header::{HeaderMap, COOKIE};
use reqwest::Method;

/// A cookie a reply set, with the attributes the tests check.
#[derive(Debug, Clone)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    pub http_only: bool,
    pub same_site_strict: bool,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub cookies: Vec<SetCookie>,
    pub body: String,
}

impl Reply {
    /// Read the whole of `response` (panics, saying which request, if it cannot).
    fn read(what: &str, response: reqwest::blocking::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let cookies = response
            .cookies()
            .map(|c| SetCookie {
                name: c.name().to_string(),
                value: c.value().to_string(),
                http_only: c.http_only(),
                same_site_strict: c.same_site_strict(),
            })
            .collect();
        let body = response
            .text()
            .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"));
        Reply {
            status,
            headers,
            cookies,
            body,
        }
    }

    /// The first header called `name` (case-insensitive), if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The cookie `name` as this reply sets it.
    pub fn set_cookie(&self, name: &str) -> Option<&SetCookie> {
        self.cookies.iter().find(|c| c.name == name)
    }

    /// The value this reply gives cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookie(name).map(|c| c.value.clone())
    }

    /// The value of the hidden input `name` in the page.
    pub fn hidden(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find('"')?;
        Some(self.body[start..start + end].to_string())
    }
}

/// Build a request to `http://addr/path` with the shared client, let `build` add to it,
/// send it and read the reply. For what [`request`] cannot say (another content type,
/// a `Host` header naming a blocked site).
pub fn send(
    method: &str,
    addr: SocketAddr,
    path: &str,
    build: impl FnOnce(RequestBuilder) -> RequestBuilder,
) -> Reply {
    let what = format!("{method} {path}");
    let method = Method::from_bytes(method.as_bytes())
        .unwrap_or_else(|e| panic!("{what}: not a method: {e}"));
    let request = super::http_client().request(method, format!("http://{addr}{path}"));
    let response = build(request)
        .send()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    Reply::read(&what, response)
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
    send(method, addr, path, |mut request| {
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        if let Some(form) = form {
            request = request.form(form);
        }
        request
    })
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
    add_user_of(config, name, role, password, &[]);
}

/// [`add_user`] bound to `sites` on the fleet dashboard (`--site` each).
pub fn add_user_of(
    config: &std::path::Path,
    name: &str,
    role: &str,
    password: &str,
    sites: &[&str],
) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["user", "add", name, "--role", role])
        .args(sites.iter().flat_map(|s| ["--site", s]))
        .arg("--config")
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

/// Sign in through the form; returns the session cookie (`warden_session=…`), or the
/// reply that refused it.
pub fn sign_in(admin: SocketAddr, user: &str, password: &str) -> Result<String, Box<Reply>> {
    sign_in_with_code(admin, user, password, "")
}

/// [`sign_in`] with a two-factor code (TOTP or recovery) in the form.
pub fn sign_in_with_code(
    admin: SocketAddr,
    user: &str,
    password: &str,
    code: &str,
) -> Result<String, Box<Reply>> {
    let form = request("GET", admin, "/login", None, None);
    let login_cookie = form.cookie("warden_login").expect("login cookie");
    let csrf = form.hidden("csrf").expect("csrf field");
    let reply = request(
        "POST",
        admin,
        "/login",
        Some(&format!("warden_login={login_cookie}")),
        Some(&[
            ("csrf", &csrf),
            ("user", user),
            ("password", password),
            ("code", code),
        ]),
    );
    match reply.cookie("warden_session") {
        Some(token) if reply.status == 303 => Ok(format!("warden_session={token}")),
        _ => Err(Box::new(reply)),
    }
}

/// `warden user 2fa NAME` for the user in `config`: the secret and recovery codes it
/// printed.
pub fn enrol_second_factor(config: &std::path::Path, name: &str) -> (Vec<u8>, Vec<String>) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["user", "2fa", name, "--config"])
        .arg(config)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("Secret: "))
        .expect("the secret is printed");
    let secret = totp_rs::Secret::Encoded(secret.trim().to_string())
        .to_bytes()
        .unwrap();
    let codes: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .map(str::to_string)
        .collect();
    assert_eq!(codes.len(), 10, "{text}");
    assert!(text.contains("otpauth://totp/"), "{text}");
    (secret, codes)
}

/// The TOTP code for `secret` at `offset` seconds from now.
pub fn totp_code(secret: &[u8], offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        0,
        30,
        secret.to_vec(),
        None,
        String::new(),
    )
    .generate((now + offset) as u64)
}
