//! The ways a message reaches the lead: a webhook (JSON POST) and email (SMTP with
//! STARTTLS via `lettre`). One attempt each; the alerts task retries.
//!
//! Secrets stay out of errors and logs: the webhook's URL is shown as scheme, host and
//! port only (chat webhooks carry their token in the path), the Authorization header and
//! the SMTP password are read from their files at each attempt (a rotated secret is used
//! at once) and never printed.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use reqwest::header::{HeaderName, HeaderValue};

use super::error::AlertError;
use super::message::Letter;
use crate::config::{Config, StartTls};

/// How long one delivery attempt may take, connection included.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why one delivery attempt failed. The text is recorded with the attempt and logged:
/// it never holds a secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    #[error("webhook {url}: {reason}")]
    Webhook { url: String, reason: String },
    #[error("webhook {url}: the receiver answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("email via {host}: {reason}")]
    Email { host: String, reason: String },
    #[error("{0}")]
    Secret(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Where messages go.
pub(crate) enum Channel {
    Webhook(Webhook),
    Email(Email),
}

impl Channel {
    /// Every channel `[alerts]` configures.
    pub fn all(config: &Config) -> Result<Vec<Channel>, AlertError> {
        let alerts = &config.alerts;
        let mut channels = Vec::new();
        if let Some(url) = &alerts.webhook {
            let client = reqwest::Client::builder()
                .timeout(ATTEMPT_TIMEOUT)
                .connect_timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::limited(3))
                .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| AlertError::Setup(format!("webhook client: {e}")))?;
            channels.push(Channel::Webhook(Webhook {
                client,
                url: url.as_str().to_string(),
                auth_file: alerts
                    .webhook_auth_header_file
                    .as_ref()
                    .map(|p| config.resolve(p.get_ref())),
            }));
        }
        if let Some(email) = &alerts.email {
            channels.push(Channel::Email(Email {
                host: email.host.get_ref().clone(),
                port: email.port,
                starttls: email.starttls,
                username: email.username.clone(),
                password_file: email.password_file.as_ref().map(|p| config.resolve(p)),
                from: email.from.get_ref().0.clone(),
                to: email.to.iter().map(|t| t.0.clone()).collect(),
            }));
        }
        Ok(channels)
    }

    /// `webhook` or `email`: the label in metrics and in `alert_deliveries`.
    pub fn name(&self) -> &'static str {
        match self {
            Channel::Webhook(_) => "webhook",
            Channel::Email(_) => "email",
        }
    }

    /// One attempt, bounded by [`ATTEMPT_TIMEOUT`].
    pub async fn send(&self, letter: &Letter) -> Result<(), DeliveryError> {
        let attempt = async {
            match self {
                Channel::Webhook(w) => w.send(letter).await,
                Channel::Email(e) => e.send(letter).await,
            }
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(DeliveryError::Timeout(ATTEMPT_TIMEOUT)))
    }
}

/// `webhook = "https://…"`.
pub(crate) struct Webhook {
    client: reqwest::Client,
    url: String,
    auth_file: Option<PathBuf>,
}

impl Webhook {
    async fn send(&self, letter: &Letter) -> Result<(), DeliveryError> {
        let url = shown_url(&self.url);
        let mut request = self.client.post(&self.url).json(&letter.json);
        if let Some((name, value)) = self.auth_header()? {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| DeliveryError::Webhook {
            url: url.clone(),
            reason: causes(&e.without_url()),
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(DeliveryError::Status {
                url,
                status: status.as_u16(),
            });
        }
        Ok(())
    }

    /// The header from `webhook_auth_header_file`: `Name: value`, or a bare value for
    /// `Authorization`. Errors say what is wrong without quoting it.
    fn auth_header(&self) -> Result<Option<(HeaderName, HeaderValue)>, DeliveryError> {
        let Some(path) = &self.auth_file else {
            return Ok(None);
        };
        let secret = |reason: &str| {
            DeliveryError::Secret(format!(
                "webhook_auth_header_file {}: {reason}",
                path.display()
            ))
        };
        let line =
            std::fs::read_to_string(path).map_err(|e| secret(&format!("cannot read it: {e}")))?;
        let line = line.trim();
        let (name, value) = match line.split_once(':') {
            Some((name, value)) if !name.is_empty() && !name.contains(' ') => {
                (name.trim(), value.trim())
            }
            _ => ("Authorization", line),
        };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| secret("the header name is not a valid HTTP header name"))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| secret("the header value has characters HTTP forbids"))?;
        value.set_sensitive(true);
        Ok(Some((name, value)))
    }
}

/// `[alerts.email]`.
pub(crate) struct Email {
    host: String,
    port: u16,
    starttls: StartTls,
    username: Option<String>,
    password_file: Option<PathBuf>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Email {
    async fn send(&self, letter: &Letter) -> Result<(), DeliveryError> {
        let failed = |reason: String| DeliveryError::Email {
            host: format!("{}:{}", self.host, self.port),
            reason,
        };
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(letter.subject.clone())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let email = builder
            .body(letter.text.clone())
            .map_err(|e| failed(e.to_string()))?;
        // Built per attempt (alerts are rare): the password file is read now, so a
        // changed password is used without a restart.
        let tls = |host: &str| TlsParameters::new(host.to_string()).map_err(|e| failed(causes(&e)));
        let tls = match self.starttls {
            StartTls::Required => Tls::Required(tls(&self.host)?),
            StartTls::Opportunistic => Tls::Opportunistic(tls(&self.host)?),
            StartTls::None => Tls::None,
        };
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(tls)
            .timeout(Some(ATTEMPT_TIMEOUT));
        if let (Some(user), Some(path)) = (&self.username, &self.password_file) {
            let password = std::fs::read_to_string(path).map_err(|e| {
                DeliveryError::Secret(format!(
                    "[alerts.email] password_file {}: cannot read it: {e}",
                    path.display()
                ))
            })?;
            transport =
                transport.credentials(Credentials::new(user.clone(), password.trim().to_string()));
        }
        transport
            .build()
            .send(email)
            .await
            .map(|_| ())
            .map_err(|e| failed(causes(&e)))
    }
}

/// An error and its causes on one line (`error sending request: connection refused`).
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// A URL as it may be logged: scheme, host and port, nothing that could be a token.
pub(crate) fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}/…", u.scheme()),
            (Some(host), None) => format!("{}://{host}/…", u.scheme()),
            _ => "(invalid url)".to_string(),
        },
        Err(_) => "(invalid url)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_shown_without_path_or_credentials() {
        assert_eq!(
            shown_url("https://user:pw@hooks.example/services/T0/B0/SECRET?x=1"),
            "https://hooks.example/…"
        );
        assert_eq!(shown_url("http://127.0.0.1:9/x"), "http://127.0.0.1:9/…");
    }

    #[test]
    fn the_auth_header_file_gives_a_sensitive_header_and_errors_hide_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hook.auth");
        let hook = |content: &str| {
            std::fs::write(&file, content).unwrap();
            Webhook {
                client: reqwest::Client::new(),
                url: "https://hooks.example/x".into(),
                auth_file: Some(file.clone()),
            }
            .auth_header()
        };
        let (name, value) = hook("Bearer s3cret\n").unwrap().unwrap();
        assert_eq!(name, "authorization");
        assert_eq!(value, "Bearer s3cret");
        assert!(value.is_sensitive());
        let (name, _) = hook("X-Api-Key: s3cret").unwrap().unwrap();
        assert_eq!(name, "x-api-key");
        let err = hook("Bearer s3cret\u{7}").unwrap_err().to_string();
        assert!(
            err.contains("webhook_auth_header_file") && !err.contains("s3cret"),
            "{err}"
        );
    }
}
