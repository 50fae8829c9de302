//! Reaching the trust's PostgreSQL: the settings read from `[fleet]` (the password from
//! its file or environment variable, never from the URL), and a connection encrypted with
//! rustls unless the database is on this machine.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

use super::FleetError;
use crate::config::{hosts_are_local, Config};

/// `[fleet]`, ready to connect with.
#[derive(Clone)]
pub struct Settings {
    /// This site's name (empty for the trust's own dashboard, which ships nothing).
    pub site: String,
    pub ship_interval: Duration,
    pub batch_rows: usize,
    /// Host, port and database, for messages.
    pub target: String,
    postgres: tokio_postgres::Config,
    /// `None` on this machine (a Unix socket or loopback): no TLS needed.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Settings {
    /// The settings of `config`'s `[fleet]`, or `None` when this site stands alone.
    pub fn from_config(config: &Config) -> Result<Option<Settings>, FleetError> {
        let Some(fleet) = &config.fleet else {
            return Ok(None);
        };
        let mut postgres: tokio_postgres::Config =
            fleet.database.get_ref().parse().map_err(|e| {
                FleetError::Config(format!("database is not a PostgreSQL URL: {e}"))
            })?;
        if let Some(file) = &fleet.password_file {
            postgres.password(read_password(&config.resolve(file))?);
        } else if let Some(var) = &fleet.password_env {
            let password = std::env::var(var).map_err(|_| {
                FleetError::Config(format!("password_env: ${var} is not set (or not UTF-8)"))
            })?;
            postgres.password(password);
        }
        postgres.application_name("warden");
        postgres.connect_timeout(Duration::from_secs(10));
        let asked = postgres.get_ssl_mode() == SslMode::Require;
        let tls = if hosts_are_local(&postgres) && !asked {
            // On this machine, plain unless the URL asks (`sslmode=require`): `prefer`
            // would try TLS against a local server's self-signed certificate and fail.
            postgres.ssl_mode(SslMode::Disable);
            None
        } else {
            // Encrypted or not at all (`prefer` would fall back to plain text), with the
            // server's certificate checked against the roots and its name.
            postgres.ssl_mode(SslMode::Require);
            let ca = fleet.ca_file.as_ref().map(|f| config.resolve(f));
            Some(Arc::new(client_tls(ca.as_deref())?))
        };
        Ok(Some(Settings {
            site: fleet
                .site
                .as_ref()
                .map(|s| s.get_ref().clone())
                .unwrap_or_default(),
            ship_interval: fleet.ship_interval,
            batch_rows: *fleet.batch_rows.get_ref(),
            target: target(&postgres),
            postgres,
            tls,
        }))
    }

    /// A new connection; its driver runs on the runtime until the client is dropped or
    /// the connection breaks.
    pub async fn connect(&self) -> Result<Client, FleetError> {
        let failed = |e: tokio_postgres::Error| self.database_error(e);
        let client = match &self.tls {
            None => {
                let (client, connection) = self.postgres.connect(NoTls).await.map_err(failed)?;
                tokio::spawn(drive(connection, self.target.clone()));
                client
            }
            Some(tls) => {
                let make = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                let (client, connection) = self.postgres.connect(make).await.map_err(failed)?;
                tokio::spawn(drive(connection, self.target.clone()));
                client
            }
        };
        Ok(client)
    }

    /// A new connection whose notifications (`LISTEN`) arrive on the receiver; the
    /// receiver ends when the connection does.
    pub async fn connect_listening(
        &self,
    ) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<String>), FleetError> {
        let failed = |e: tokio_postgres::Error| self.database_error(e);
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let client = match &self.tls {
            None => {
                let (client, connection) = self.postgres.connect(NoTls).await.map_err(failed)?;
                tokio::spawn(drive_listening(connection, sender, self.target.clone()));
                client
            }
            Some(tls) => {
                let make = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                let (client, connection) = self.postgres.connect(make).await.map_err(failed)?;
                tokio::spawn(drive_listening(connection, sender, self.target.clone()));
                client
            }
        };
        Ok((client, receiver))
    }

    pub(crate) fn database_error(&self, e: tokio_postgres::Error) -> FleetError {
        FleetError::Database {
            target: self.target.clone(),
            message: describe(&e),
        }
    }
}

/// A PostgreSQL error in one line: the server's own message where there is one.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

async fn drive<C>(connection: C, target: String)
where
    C: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = connection.await {
        tracing::debug!(
            "fleet database {target}: connection ended: {}",
            describe(&e)
        );
    }
}

/// Drive a connection, passing each notification's payload on (a notice or the
/// sender's receiver gone changes nothing; the connection's end drops the sender).
async fn drive_listening<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notifications: tokio::sync::mpsc::UnboundedSender<String>,
    target: String,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio_postgres::AsyncMessage;
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                let _ = notifications.send(n.payload().to_string());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(
                    "fleet database {target}: connection ended: {}",
                    describe(&e)
                );
                return;
            }
            None => return,
        }
    }
}

/// `host:port/database` (hosts joined by commas), for messages.
fn target(postgres: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let ports = postgres.get_ports();
    let hosts: Vec<String> = postgres
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    format!(
        "{}/{}",
        hosts.join(","),
        postgres.get_dbname().unwrap_or("?")
    )
}

/// The first line of a password file (a trailing newline is not part of it).
fn read_password(path: &Path) -> Result<String, FleetError> {
    use std::io::Read;
    let failed = |e: &dyn std::fmt::Display| {
        FleetError::Config(format!("password_file {}: {e}", path.display()))
    };
    // A regular file only (a FIFO in its place cannot hang the start), at most 4 KiB.
    let file = crate::lists::open_regular(path).map_err(|e| failed(&e))?;
    let mut text = String::new();
    file.take(4096)
        .read_to_string(&mut text)
        .map_err(|e| failed(&e))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err(FleetError::Config(format!(
            "password_file {} is empty",
            path.display()
        )));
    }
    Ok(password)
}

/// rustls with the public web roots, or only the CA certificates in `ca_file`.
fn client_tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, FleetError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| FleetError::Config(format!("ca_file {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert
                    .map_err(|e| FleetError::Config(format!("ca_file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| FleetError::Config(format!("ca_file {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(FleetError::Config(format!(
                    "ca_file {} holds no certificate",
                    path.display()
                )));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| FleetError::Config(format!("TLS: {e}")))
}
