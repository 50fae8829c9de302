//! The certificate the encrypted listeners (DNS over TLS and over HTTPS) present:
//! from the admin's files (`[encrypted] cert_file`, `key_file`), re-read when they
//! change so a Let's Encrypt renewal applies to the next connection without a restart;
//! or, for a LAN-only set-up, a self-signed one made on first start and kept (its
//! SHA-256 fingerprint is logged, and put in the device profiles).
//!
//! The listeners read the certificate through [`Certs`], rustls's certificate resolver:
//! one atomic load per handshake. [`Certs::watch`] looks at the files every
//! [`WATCH_EVERY`] and swaps in a new pair once it parses and its key matches; a pair
//! half-written or broken is logged and the last good one kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use crate::config::{Config, EncryptedConfig};

/// How often the certificate's files are looked at.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Largest certificate chain or key file read.
const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// How long a self-signed certificate lasts: Apple's limit for a certificate a device
/// trusts through a profile.
const SELF_SIGNED_DAYS: i64 = 825;
/// A self-signed certificate this close to its end is made again at start.
const RENEW_BEFORE_DAYS: i64 = 30;

/// Why the certificate cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("cannot make a self-signed certificate for {host}: {reason}")]
    SelfSigned { host: String, reason: String },
    #[error("TLS set-up: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Made by Warden (and so to be put in the profiles for devices to trust).
    pub self_signed: bool,
}

impl CertFiles {
    /// The files `[encrypted]` names (relative to the config's folder), or the
    /// self-signed pair's place.
    pub fn of(config: &Config) -> CertFiles {
        let encrypted = &config.encrypted;
        match (&encrypted.cert_file, &encrypted.key_file) {
            (Some(cert), Some(key)) => CertFiles {
                cert: config.resolve(cert),
                key: config.resolve(key),
                self_signed: false,
            },
            _ => {
                let dir = config.resolve(&encrypted.self_signed_dir);
                CertFiles {
                    cert: dir.join("cert.pem"),
                    key: dir.join("key.pem"),
                    self_signed: true,
                }
            }
        }
    }
}

/// The certificate being served, and where it is re-read from.
#[derive(Debug)]
pub struct Certs {
    current: ArcSwap<Loaded>,
    files: CertFiles,
}

/// One certificate chain and key as read, with its leaf's fingerprint.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: String,
    stamp: (Stamp, Stamp),
}

/// A file's length and modification time, to notice a change.
type Stamp = Option<(u64, SystemTime)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

impl Certs {
    /// The certificate for `config`'s `[encrypted]`: its files, or the self-signed pair
    /// (made now if there is none, or it is near its end).
    pub fn load(config: &Config) -> Result<Arc<Certs>, TlsError> {
        let files = CertFiles::of(config);
        if files.self_signed {
            ensure_self_signed(&files, &config.encrypted)?;
        }
        let loaded = read_pair(&files)?;
        Ok(Arc::new(Certs {
            current: ArcSwap::from_pointee(loaded),
            files,
        }))
    }

    /// The SHA-256 fingerprint of the certificate served now (`AB:CD:…`).
    pub fn fingerprint(&self) -> String {
        self.current.load().fingerprint.clone()
    }

    /// The files it is read from.
    pub fn files(&self) -> &CertFiles {
        &self.files
    }

    /// Re-read the files if they changed since they were read; `Ok(true)` if a new
    /// certificate is now served. A broken pair leaves the last good one in place.
    pub fn refresh(&self) -> Result<bool, TlsError> {
        let now = (stamp(&self.files.cert), stamp(&self.files.key));
        if now == self.current.load().stamp {
            return Ok(false);
        }
        let loaded = read_pair(&self.files)?;
        let changed = loaded.fingerprint != self.fingerprint();
        self.current.store(Arc::new(loaded));
        Ok(changed)
    }

    /// Look at the files every [`WATCH_EVERY`] until `stop`, serving a renewed
    /// certificate from the next handshake on.
    pub async fn watch(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut warned: Option<String> = None;
        let mut interval = tokio::time::interval(WATCH_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            match self.refresh() {
                Ok(true) => {
                    warned = None;
                    tracing::info!(cert = %self.files.cert.display(), fingerprint = %self.fingerprint(), "TLS certificate renewed: served from the next connection");
                }
                Ok(false) => {}
                Err(error) => {
                    let text = error.to_string();
                    if warned.as_deref() != Some(text.as_str()) {
                        tracing::warn!(%error, "TLS certificate not renewed: the last good one is still served");
                        warned = Some(text);
                    }
                }
            }
        }
    }

    /// A rustls server configuration that serves this certificate, offering
    /// `alpn` (none: no protocol negotiated).
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

/// Read and check a certificate chain and its key.
fn read_pair(files: &CertFiles) -> Result<Loaded, TlsError> {
    let stamps = (stamp(&files.cert), stamp(&files.key));
    let file_error = |path: &Path, reason: String| TlsError::File {
        path: path.to_path_buf(),
        reason,
    };
    let cert_pem = crate::lists::read_small_bytes(&files.cert, MAX_PEM_BYTES)
        .map_err(|e| file_error(&files.cert, e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&files.cert, format!("not PEM certificates: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(file_error(&files.cert, "holds no certificate".into()));
    };
    let fingerprint = fingerprint(leaf);
    let key_pem = crate::lists::read_small_bytes(&files.key, MAX_PEM_BYTES)
        .map_err(|e| file_error(&files.key, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| file_error(&files.key, format!("not a PEM private key: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| file_error(&files.key, format!("unusable key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        file_error(
            &files.key,
            format!("does not match {}: {e}", files.cert.display()),
        )
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        fingerprint,
        stamp: stamps,
    })
}

/// The SHA-256 fingerprint of a certificate, as browsers and `openssl x509
/// -fingerprint -sha256` show it.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// Make the self-signed pair in `files` unless a usable one is there: for the host
/// name and every name under it (`{device id}.{hostname}`), `localhost` and
/// `[encrypted] addresses`.
fn ensure_self_signed(files: &CertFiles, encrypted: &EncryptedConfig) -> Result<(), TlsError> {
    let host = encrypted.hostname.get_ref();
    if read_pair(files).is_ok() && still_fits(&files.cert, host) {
        return Ok(());
    }
    let failed = |reason: String| TlsError::SelfSigned {
        host: host.clone(),
        reason,
    };
    let mut names = vec![host.clone(), format!("*.{host}"), "localhost".to_string()];
    names.extend(encrypted.addresses.iter().map(|a| a.to_string()));
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| failed(e.to_string()))?;
    let today = chrono::Utc::now().date_naive();
    let day = |d: chrono::NaiveDate| {
        use chrono::Datelike;
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    params.not_before = day(today - chrono::Days::new(1));
    params.not_after = day(today + chrono::Days::new(SELF_SIGNED_DAYS as u64));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("Warden {host}"));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().map_err(|e| failed(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| failed(e.to_string()))?;
    let write = |path: &Path, text: &str| {
        crate::secret::write_private(path, text.as_bytes()).map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            reason: format!("cannot write: {e}"),
        })
    };
    // The key first: a crash between the two leaves a pair that does not match, which
    // the next start makes again.
    write(&files.key, &key.serialize_pem())?;
    write(&files.cert, &cert.pem())?;
    tracing::info!(cert = %files.cert.display(), fingerprint = %fingerprint(cert.der()), "made a self-signed TLS certificate for {host} (devices must be given it to trust: see `warden device profile`)");
    Ok(())
}

/// Whether the self-signed certificate at `path` can go on being served: it names
/// `host` (the host name may have changed since it was made) and does not end within
/// [`RENEW_BEFORE_DAYS`].
fn still_fits(path: &Path, host: &str) -> bool {
    let Ok(pem) = crate::lists::read_small_bytes(path, MAX_PEM_BYTES) else {
        return false;
    };
    let Some(Ok(der)) = CertificateDer::pem_slice_iter(&pem).next() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let names_host = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value.general_names.iter().any(|name| {
                matches!(name, x509_parser::extensions::GeneralName::DNSName(n) if n.eq_ignore_ascii_case(host))
            })
        });
    let lasts = not_after(&der)
        .is_some_and(|end| end - chrono::Utc::now() >= chrono::Duration::days(RENEW_BEFORE_DAYS));
    names_host && lasts
}

/// When a certificate ends.
pub fn not_after(der: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, extra: &str) -> Config {
        let path = dir.join("warden.toml");
        std::fs::write(
            &path,
            format!("[encrypted]\nhostname = \"warden.school.test\"\n{extra}"),
        )
        .unwrap();
        Config::load(&path).unwrap()
    }

    fn config_named(dir: &Path, host: &str) -> Config {
        let path = dir.join("renamed.toml");
        std::fs::write(&path, format!("[encrypted]\nhostname = \"{host}\"\n")).unwrap();
        Config::load(&path).unwrap()
    }

    /// Give `path` the modification time `secs` after 2020 began.
    fn touch(path: &Path, secs: u64) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800 + secs);
        file.set_modified(at).unwrap();
    }

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "addresses = [\"192.0.2.53\"]\n");
        let certs = Certs::load(&config).unwrap();
        let first = certs.fingerprint();
        assert_eq!(first.len(), 32 * 3 - 1);
        let files = certs.files().clone();
        assert!(files.self_signed);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
        }
        // Started again: the same certificate, so enrolled devices still trust it.
        let again = Certs::load(&config).unwrap();
        assert_eq!(again.fingerprint(), first);
        let pem = std::fs::read(&files.cert).unwrap();
        let der = CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let names: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        // x509-parser shows an IP address in hex: 192.0.2.53.
        for wanted in ["warden.school.test", "*.warden.school.test", "c0:00:02:35"] {
            assert!(
                names.iter().any(|n| n.contains(wanted)),
                "{wanted}: {names:?}"
            );
        }
        let days = (not_after(&der).unwrap() - chrono::Utc::now()).num_days();
        assert!(
            (SELF_SIGNED_DAYS - 2..=SELF_SIGNED_DAYS).contains(&days),
            "{days}"
        );
        // Under another host name: made again, for that name.
        let renamed = config_named(dir.path(), "warden.other.test");
        assert_ne!(Certs::load(&renamed).unwrap().fingerprint(), first);
    }

    #[test]
    fn a_replaced_pair_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "");
        let certs = Certs::load(&config).unwrap();
        let first = certs.fingerprint();
        assert!(!certs.refresh().unwrap(), "nothing changed");
        // Another pair (as a renewal writes it) is served after the next look.
        let other = rcgen::generate_simple_self_signed(vec!["warden.school.test".into()]).unwrap();
        let files = certs.files().clone();
        std::fs::write(&files.key, other.signing_key.serialize_pem()).unwrap();
        std::fs::write(&files.cert, other.cert.pem()).unwrap();
        // File times are coarse: each write is given its own, as a later one would have.
        touch(&files.key, 1);
        touch(&files.cert, 1);
        assert!(certs.refresh().unwrap());
        assert_eq!(certs.fingerprint(), fingerprint(other.cert.der()));
        assert_ne!(certs.fingerprint(), first);
        // A key that does not match (half a renewal) keeps the last good pair.
        let third = rcgen::generate_simple_self_signed(vec!["x.test".into()]).unwrap();
        std::fs::write(&files.key, third.signing_key.serialize_pem()).unwrap();
        touch(&files.key, 2);
        let error = certs.refresh().unwrap_err().to_string();
        assert!(error.contains("does not match"), "{error}");
        assert_eq!(certs.fingerprint(), fingerprint(other.cert.der()));
        // Garbage in the certificate file: named, and the last good pair kept.
        std::fs::write(&files.cert, "not a certificate").unwrap();
        touch(&files.cert, 3);
        assert!(certs.refresh().is_err());
        assert_eq!(certs.fingerprint(), fingerprint(other.cert.der()));
    }

    #[test]
    fn files_that_are_missing_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "cert_file = \"c.pem\"\nkey_file = \"k.pem\"\n");
        let error = Certs::load(&config).unwrap_err().to_string();
        assert!(error.contains("c.pem"), "{error}");
    }
}
