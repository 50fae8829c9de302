//! List sources with a `url`: download, validate, and keep the last good copy.
//!
//! A download is never trusted until it has been parsed: it is streamed (within
//! `[sources] max_size` and `timeout`) into a temporary file beside the cache, parsed
//! with the list's format, and refused if it is empty, mostly unparsable (a login page
//! instead of a list), or shrunk below `[reload] min_ratio` of the last good copy or the
//! list's `min_entries`. Only then is it renamed over the cached copy, so the cache
//! always holds the last good list, and a failed refresh changes nothing. Engines read
//! the cached copy like any local list, so start-up without internet blocks what it
//! blocked before.
//!
//! Requests are conditional (`If-None-Match` / `If-Modified-Since` from the last good
//! download): a `304 Not Modified` costs nothing. A restricted feed's credentials come
//! from a file or an environment variable, are read at each download (so they can be
//! rotated without a restart), are marked sensitive, and never appear in a log line, an
//! error or a metric; URLs are logged without their query string or user info.
//!
//! Credentials go only to the origin (scheme, host and port) of the configured `url`.
//! Redirects are followed here, not by the HTTP client, so that each hop is checked: a
//! redirect within that origin keeps the credentials; one to another origin is refused
//! unless the list names that origin in `allow_redirect_to`, and even then the request
//! there carries no auth header. No request carries a `Referer` (it would repeat a token
//! in the URL's query string to the next host). The cached copy and its metadata are
//! created readable by Warden's user only (0600) in a folder only it can enter (0700): a
//! restricted list is as confidential as the audit log.
//!
//! [`refresh_forever`] runs one source's timer (`refresh`, with backoff after failures);
//! [`stale_lists`] flags locked lists whose source has not refreshed within `max_age`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::AsyncWriteExt;

use crate::config::{Config, ListConfig};
use crate::lists::{self, Format};
use crate::metrics::Metrics;
use crate::reload::Reloader;

/// Why a download did not replace the cached copy.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error("list {list:?}: cannot reach {url}: {reason}")]
    Transport {
        list: String,
        url: String,
        reason: String,
    },
    #[error("list {list:?}: {url} answered HTTP {status}")]
    Status {
        list: String,
        url: String,
        status: u16,
    },
    #[error("list {list:?}: download larger than [sources] max_size ({limit} bytes)")]
    TooLarge { list: String, limit: u64 },
    #[error("list {list:?}: download refused, keeping the last good copy: {reason}")]
    Rejected { list: String, reason: String },
    #[error("list {list:?}: credentials: {reason}")]
    Auth { list: String, reason: String },
    #[error("list {list:?}: {reason}; keeping the last good copy")]
    Redirect { list: String, reason: String },
    #[error("list {list:?}: {path}: {source}")]
    Io {
        list: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SourceError {
    fn io(list: &str, path: &Path) -> impl FnOnce(std::io::Error) -> SourceError {
        let (list, path) = (list.to_string(), path.to_path_buf());
        move |source| SourceError::Io { list, path, source }
    }
}

/// What a successful check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// New content, validated and cached.
    Updated { entries: u64, bytes: u64 },
    /// The server said 304: the cached copy is current.
    NotModified { entries: u64 },
}

/// What is remembered about the last good download, beside the cached copy.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Meta {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Entries in the cached copy.
    pub entries: u64,
    /// Last successful check (download or 304), Unix seconds.
    pub checked_at: u64,
    /// When the cached copy was downloaded, Unix seconds.
    pub fetched_at: u64,
}

/// One `[[lists]]` entry with a `url`, resolved against the config.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub name: String,
    pub url: reqwest::Url,
    pub format: Format,
    pub min_entries: u64,
    pub min_ratio: f64,
    pub refresh: Duration,
    /// The cached copy engines read.
    pub file: PathBuf,
    /// Most bytes a download may hold once decompressed (`[reload] max_list_bytes`).
    pub max_list_bytes: u64,
    /// Origins other than the url's that a redirect may lead to, each as
    /// `scheme://host[:port]` (how `Url::origin` writes them).
    pub allow_redirect_to: Vec<String>,
    auth_file: Option<PathBuf>,
    auth_env: Option<String>,
}

impl Source {
    /// Every list with a `url` in `config`.
    pub fn all(config: &Config) -> Vec<Source> {
        config
            .lists
            .iter()
            .filter_map(|list| Source::from_config(config, list))
            .collect()
    }

    fn from_config(config: &Config, list: &ListConfig) -> Option<Source> {
        let url = list.url.as_ref()?.0.clone();
        Some(Source {
            name: list.name.get_ref().clone(),
            url,
            format: list.format,
            min_entries: list.min_entries,
            min_ratio: config.reload.min_ratio,
            refresh: list.refresh,
            file: list.file(config),
            max_list_bytes: config.reload.max_list_bytes,
            allow_redirect_to: list
                .allow_redirect_to
                .iter()
                .map(|o| o.get_ref().0.clone())
                .collect(),
            auth_file: list.auth_header_file.as_ref().map(|p| config.resolve(p)),
            auth_env: list.auth_header_env.clone(),
        })
    }

    /// The URL as it may be logged: no user info, query string or fragment.
    pub(crate) fn shown_url(&self) -> String {
        redact(&self.url)
    }

    fn meta_file(&self) -> PathBuf {
        self.file.with_extension("meta.json")
    }

    /// The last good download's metadata (default if none or unreadable).
    pub fn meta(&self) -> Meta {
        read_meta(&self.meta_file()).unwrap_or_default()
    }

    /// The extra header for this source, read now (so a rotated token is used at once).
    fn auth_header(&self) -> Result<Option<(HeaderName, HeaderValue)>, SourceError> {
        let auth_err = |reason: String| SourceError::Auth {
            list: self.name.clone(),
            reason,
        };
        let line = match (&self.auth_file, &self.auth_env) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                auth_err(format!(
                    "cannot read auth_header_file {}: {e}",
                    path.display()
                ))
            })?,
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| auth_err(format!("environment variable {var} is not set")))?,
            (None, None) => return Ok(None),
        };
        let line = line.trim();
        let (name, value) = match line.split_once(':') {
            Some((name, value)) if !name.contains(' ') => (name.trim(), value.trim()),
            _ => ("Authorization", line),
        };
        // Say what is wrong without quoting the secret.
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| auth_err("the header name is not a valid HTTP header name".into()))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| auth_err("the header value has characters HTTP forbids".into()))?;
        value.set_sensitive(true);
        Ok(Some((name, value)))
    }
}

/// A list's download metadata, if there is a readable one. Read like a list file (a
/// regular file only, opened without blocking, at most 64 KiB): it is read at each
/// metrics scrape, which a FIFO put in its place must not hang.
fn read_meta(path: &Path) -> Option<Meta> {
    use std::io::Read;
    let file = lists::open_regular(path).ok()?;
    let mut bytes = Vec::new();
    file.take(64 * 1024).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Strip user info, query and fragment from a URL for logs and errors.
fn redact(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// The HTTP client shared by every download.
#[derive(Clone)]
pub(crate) struct Fetcher {
    client: reqwest::Client,
    max_size: u64,
}

impl Fetcher {
    pub fn new(config: &Config) -> Result<Fetcher, SourceError> {
        let client = reqwest::Client::builder()
            // Redirects are followed (and checked) by `send`, and nothing says where a
            // request came from: see the module doc.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .timeout(config.sources.timeout)
            .connect_timeout(config.sources.timeout.min(Duration::from_secs(15)))
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::Transport {
                list: String::new(),
                url: String::new(),
                reason: e.to_string(),
            })?;
        Ok(Fetcher {
            client,
            max_size: config.sources.max_size,
        })
    }

    /// Check `source` once: a conditional GET, then validate and cache new content.
    /// `progress` is told the bytes received so far and the expected total, if known.
    pub(crate) async fn fetch(
        &self,
        source: &Source,
        progress: &(dyn Fn(u64, Option<u64>) + Sync),
    ) -> Result<Fetched, SourceError> {
        let list = source.name.as_str();
        let url = source.shown_url();
        let transport = |e: reqwest::Error| SourceError::Transport {
            list: list.to_string(),
            url: url.clone(),
            // Without the URL: reqwest's message would repeat it unredacted.
            reason: e.without_url().to_string(),
        };
        let have_copy = source.file.exists();
        let meta = if have_copy {
            source.meta()
        } else {
            Meta::default()
        };
        let mut response = self.send(source, &conditional(&meta), &transport).await?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED && have_copy {
            let meta = Meta {
                checked_at: unix_now(),
                ..meta
            };
            write_meta(source, &meta)?;
            tighten(&source.file);
            return Ok(Fetched::NotModified {
                entries: meta.entries,
            });
        }
        if !status.is_success() {
            return Err(SourceError::Status {
                list: list.to_string(),
                url,
                status: status.as_u16(),
            });
        }
        let too_large = || SourceError::TooLarge {
            list: list.to_string(),
            limit: self.max_size,
        };
        let expected = response.content_length();
        if expected.is_some_and(|n| n > self.max_size) {
            return Err(too_large());
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header(reqwest::header::ETAG);
        let last_modified = header(reqwest::header::LAST_MODIFIED);

        let (entries, bytes) = self
            .store(source, &mut response, meta.entries, &transport, progress)
            .await?;
        let now = unix_now();
        write_meta(
            source,
            &Meta {
                etag,
                last_modified,
                entries,
                checked_at: now,
                fetched_at: now,
            },
        )?;
        Ok(Fetched::Updated { entries, bytes })
    }
}

/// Conditional-request headers from the last good download.
fn conditional(meta: &Meta) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(etag) = meta
        .etag
        .as_deref()
        .and_then(|e| HeaderValue::from_str(e).ok())
    {
        headers.insert(reqwest::header::IF_NONE_MATCH, etag);
    }
    if let Some(date) = meta
        .last_modified
        .as_deref()
        .and_then(|d| HeaderValue::from_str(d).ok())
    {
        headers.insert(reqwest::header::IF_MODIFIED_SINCE, date);
    }
    headers
}

/// Redirects followed per download.
pub(crate) const MAX_REDIRECTS: usize = 5;

impl Fetcher {
    /// GET the source's url, following redirects by the rules in the module doc. Returns
    /// the first response that is not a redirect (a 304 included).
    async fn send(
        &self,
        source: &Source,
        conditional: &HeaderMap,
        transport: &(dyn Fn(reqwest::Error) -> SourceError + Sync),
    ) -> Result<reqwest::Response, SourceError> {
        let refused = |reason: String| SourceError::Redirect {
            list: source.name.clone(),
            reason,
        };
        let configured = source.url.clone();
        let origin = configured.origin().ascii_serialization();
        let auth = source.auth_header()?;
        let mut url = configured.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.client.get(url.clone()).headers(conditional.clone());
            if url.origin().ascii_serialization() == origin {
                if let Some((name, value)) = &auth {
                    request = request.header(name.clone(), value.clone());
                }
            }
            let response = request.send().await.map_err(transport)?;
            let status = response.status();
            if !status.is_redirection() || status == reqwest::StatusCode::NOT_MODIFIED {
                return Ok(response);
            }
            let next = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|location| url.join(location).ok())
                .ok_or_else(|| {
                    refused(format!(
                        "{} answered HTTP {} without a usable Location",
                        redact(&url),
                        status.as_u16()
                    ))
                })?;
            let target = next.origin().ascii_serialization();
            if target != origin && !source.allow_redirect_to.contains(&target) {
                return Err(refused(format!(
                    "{} redirects to {target}, another origin; refused (to accept it, name \
                     {target:?} in the list's allow_redirect_to; credentials are never sent there)",
                    redact(&url)
                )));
            }
            url = same_origin_user(next, &configured, target == origin);
        }
        Err(refused(format!(
            "more than {MAX_REDIRECTS} redirects from {}",
            source.shown_url()
        )))
    }

    /// Stream the body into a temporary file beside the cache (same folder: the final
    /// rename is atomic), never holding the whole list in memory; validate it against
    /// the last good copy's `previous` entries and rename it over that copy.
    async fn store(
        &self,
        source: &Source,
        response: &mut reqwest::Response,
        previous: u64,
        transport: &(dyn Fn(reqwest::Error) -> SourceError + Sync),
        progress: &(dyn Fn(u64, Option<u64>) + Sync),
    ) -> Result<(u64, u64), SourceError> {
        let list = source.name.as_str();
        let expected = response.content_length();
        let dir = source.file.parent().unwrap_or(Path::new("."));
        private_dir(dir).map_err(SourceError::io(list, dir))?;
        let partial = source.file.with_extension("partial");
        let result = async {
            let file = create_private(&partial).map_err(SourceError::io(list, &partial))?;
            let mut out = tokio::fs::File::from_std(file);
            let mut bytes = 0u64;
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                bytes += chunk.len() as u64;
                if bytes > self.max_size {
                    return Err(SourceError::TooLarge {
                        list: list.to_string(),
                        limit: self.max_size,
                    });
                }
                out.write_all(&chunk)
                    .await
                    .map_err(SourceError::io(list, &partial))?;
                progress(bytes, expected);
            }
            out.sync_all()
                .await
                .map_err(SourceError::io(list, &partial))?;
            let entries = validate(source, &partial, previous)?;
            std::fs::rename(&partial, &source.file).map_err(SourceError::io(list, &source.file))?;
            Ok((entries, bytes))
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    }
}

/// The next hop's URL; within the configured origin, with the configured URL's user
/// info if the redirect gave none (it is the origin's credential too).
fn same_origin_user(mut next: reqwest::Url, configured: &reqwest::Url, same: bool) -> reqwest::Url {
    if same && next.username().is_empty() && !configured.username().is_empty() {
        let _ = next.set_username(configured.username());
        let _ = next.set_password(configured.password());
    }
    next
}

/// Create `dir` (and its parents) readable by Warden's user only. A cache folder left
/// more open by an older version is tightened: it may hold restricted lists.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::info!(dir = %dir.display(), "making the list cache folder private (0700)");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    builder.create(dir)
}

/// Create `path` afresh, readable and writable by Warden's user only (0600) from the
/// moment it exists. A leftover file is removed first: opening an existing file would
/// keep its mode.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Make a cached copy written by an older version (0644) private; it is otherwise only
/// replaced when its content changes. Best effort: the copy is still used if this fails.
fn tighten(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0);
        if open {
            if let Err(error) =
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            {
                tracing::warn!(path = %path.display(), %error, "cannot make the cached list private");
            }
        }
    }
}

/// Parse the downloaded file and decide whether it may replace the last good copy
/// (which had `previous` entries). Returns its entry count.
fn validate(source: &Source, file: &Path, previous: u64) -> Result<u64, SourceError> {
    let rejected = |reason: String| SourceError::Rejected {
        list: source.name.clone(),
        reason,
    };
    let parsed = lists::load_file_capped(file, source.format, source.max_list_bytes)
        .map_err(|e| rejected(e.to_string()))?;
    let entries = parsed.report.accepted;
    if let Some(warning) = parsed.report.warning() {
        return Err(rejected(format!(
            "it does not look like a list ({warning})"
        )));
    }
    if entries == 0 {
        return Err(rejected("it holds no usable entries".into()));
    }
    let ratio_floor = (previous as f64 * source.min_ratio).ceil() as u64;
    let floor = ratio_floor.max(source.min_entries);
    if entries < floor {
        return Err(rejected(format!(
            "it has {entries} entries, below the floor of {floor} (last good copy: {previous}; \
             [reload] min_ratio {}, min_entries {})",
            source.min_ratio, source.min_entries
        )));
    }
    Ok(entries)
}

fn write_meta(source: &Source, meta: &Meta) -> Result<(), SourceError> {
    let path = source.meta_file();
    let temp = path.with_extension("json.partial");
    let bytes = serde_json::to_vec_pretty(meta).unwrap_or_default();
    let write = |mut file: std::fs::File| {
        use std::io::Write;
        file.write_all(&bytes)?;
        file.sync_all()
    };
    create_private(&temp)
        .and_then(write)
        .map_err(SourceError::io(&source.name, &temp))?;
    std::fs::rename(&temp, &path).map_err(SourceError::io(&source.name, &path))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// First retry after a failure; doubled per further failure, up to [`MAX_BACKOFF`]
/// (or the source's own refresh interval, if shorter).
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(30);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(3600);

fn backoff(failures: u32, refresh: Duration) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF).min(refresh)
}

/// When `source` is next due: `refresh` after its last successful check; if it has no
/// copy, [`FIRST_BACKOFF`] (start-up has just tried, in [`prime_missing`]).
fn first_wait(source: &Source) -> Duration {
    if !source.file.exists() {
        return FIRST_BACKOFF;
    }
    let due = source.meta().checked_at + source.refresh.as_secs();
    Duration::from_secs(due.saturating_sub(unix_now()))
}

/// Check `source` every `refresh` (backing off after failures) until `stop`; after
/// each download that changes the list, reload the rules.
pub(crate) async fn refresh_forever(
    source: Source,
    fetcher: Fetcher,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut wait = first_wait(&source);
    let mut failures = u32::from(!source.file.exists());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match fetcher.fetch(&source, &|_, _| {}).await {
            Ok(fetched) => {
                failures = 0;
                wait = source.refresh;
                let result = match fetched {
                    Fetched::Updated { entries, bytes } => {
                        tracing::info!(
                            list = source.name,
                            entries,
                            bytes,
                            url = source.shown_url(),
                            "list downloaded"
                        );
                        "updated"
                    }
                    Fetched::NotModified { .. } => {
                        tracing::debug!(list = source.name, "list not modified");
                        "not_modified"
                    }
                };
                metrics.list_refreshed(&source.name, result, SystemTime::now());
                if result == "updated" {
                    let reason = format!("list {:?} downloaded", source.name);
                    // A rejected reload is logged and counted by the reloader itself.
                    let _ = reloader.reload(&reason).await;
                }
            }
            Err(error) => {
                failures += 1;
                wait = backoff(failures, source.refresh);
                metrics.list_refresh_failed(&source.name);
                tracing::error!(%error, retry_in = ?wait, "list refresh failed; the last good copy stays in force");
            }
        }
    }
}

/// Download, before the first engine is built, every list that has no cached copy yet
/// (a first start), all at once and each within `[sources] timeout`. Failures are
/// logged; those lists start empty and their refresher keeps trying.
pub(crate) async fn prime_missing(config: &Config, metrics: &Metrics) {
    let missing: Vec<Source> = Source::all(config)
        .into_iter()
        .filter(|s| !s.file.exists())
        .collect();
    if missing.is_empty() {
        return;
    }
    let fetcher = match Fetcher::new(config) {
        Ok(f) => f,
        Err(error) => {
            tracing::error!(%error, "cannot start downloading lists");
            return;
        }
    };
    tracing::info!(
        lists = missing.len(),
        "downloading lists that have no cached copy yet"
    );
    let downloads = missing.into_iter().map(|source| {
        let fetcher = fetcher.clone();
        async move {
            let result = fetcher.fetch(&source, &|_, _| {}).await;
            (source, result)
        }
    });
    for (source, result) in futures_join_all(downloads).await {
        match result {
            Ok(_) => metrics.list_refreshed(&source.name, "updated", SystemTime::now()),
            Err(error) => {
                metrics.list_refresh_failed(&source.name);
                tracing::error!(%error, "no copy of this list yet: it blocks nothing until a download succeeds");
            }
        }
    }
}

/// Run futures concurrently and collect their outputs in order (a small `join_all`).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        if let Ok(value) = handle.await {
            out.push(value);
        }
    }
    out
}

/// A locked list whose source is older than its `max_age`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stale {
    pub list: String,
    pub age: Duration,
    pub max_age: Duration,
}

/// The lists with a `max_age` and whether each is stale now: a `url` list by its last
/// successful check, a local file by its modification time.
pub(crate) fn stale_lists(config: &Config, now: SystemTime) -> Vec<(String, Option<Stale>)> {
    config
        .lists
        .iter()
        .filter_map(|list| {
            let max_age = list.max_age?;
            let file = list.file(config);
            let refreshed = if list.url.is_some() {
                let meta = read_meta(&file.with_extension("meta.json"));
                meta.map(|m| SystemTime::UNIX_EPOCH + Duration::from_secs(m.checked_at))
            } else {
                std::fs::metadata(&file).and_then(|m| m.modified()).ok()
            };
            // Never refreshed at all counts as infinitely old.
            let age = refreshed
                .map(|t| now.duration_since(t).unwrap_or_default())
                .unwrap_or(Duration::MAX);
            let name = list.name.get_ref().clone();
            let stale = (age > max_age).then(|| Stale {
                list: name.clone(),
                age,
                max_age,
            });
            Some((name, stale))
        })
        .collect()
}

/// What the list copies on disk say about each `url` list's freshness, for the metrics
/// at each scrape: a `warden lists update` run as another process refreshes the cache
/// without telling the daemon. Reads one small metadata file per list.
pub fn freshness(config: &Config, now: SystemTime) -> Vec<crate::metrics::ListFreshness> {
    let stale: std::collections::HashMap<String, bool> = stale_lists(config, now)
        .into_iter()
        .map(|(list, stale)| (list, stale.is_some()))
        .collect();
    config
        .lists
        .iter()
        .filter(|list| list.url.is_some())
        .map(|list| {
            let name = list.name.get_ref();
            let meta = read_meta(&list.file(config).with_extension("meta.json"));
            crate::metrics::ListFreshness {
                list: name.clone(),
                checked_at: meta
                    .filter(|m| m.checked_at > 0)
                    .map(|m| SystemTime::UNIX_EPOCH + Duration::from_secs(m.checked_at)),
                stale: stale.get(name).copied(),
            }
        })
        .collect()
}

/// Log a stale locked list: at ERROR, saying so plainly, if the serving rules have no
/// copy of it at all (it is not in force); else at WARN (it keeps blocking).
fn warn_stale(list: &str, stale: &Stale, in_force: bool) {
    let max_age = humantime::format_duration(stale.max_age).to_string();
    if !in_force {
        tracing::error!(
            list,
            max_age,
            "locked list is NOT in force: no copy of it exists (it has never been downloaded), \
             so it blocks nothing; check the feed's url and credentials"
        );
        return;
    }
    let age = if stale.age == Duration::MAX {
        "never refreshed".to_string()
    } else {
        humantime::format_duration(Duration::from_secs(stale.age.as_secs())).to_string()
    };
    tracing::warn!(
        list,
        age,
        max_age,
        "locked list is stale: its source has not refreshed within max_age; it keeps blocking"
    );
}

/// Every minute, flag (metric and log) locked lists older than their `max_age`. Those
/// with a copy keep blocking: a stale statutory list is far better than none. One with
/// no copy at all is not in force, and the log says so at ERROR.
pub(crate) async fn watch_staleness(
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut warned = std::collections::HashMap::<String, SystemTime>::new();
    loop {
        let engine = reloader.current();
        for (list, stale) in stale_lists(&engine.config, SystemTime::now()) {
            metrics.list_stale(&list, stale.is_some());
            match stale {
                Some(stale) => {
                    // Warn when it goes stale, then once an hour while it stays so.
                    let due = warned.get(&list).is_none_or(|t| {
                        t.elapsed().unwrap_or_default() > Duration::from_secs(3600)
                    });
                    if due {
                        let in_force = engine.lists.iter().any(|l| l.name == list && !l.missing);
                        warn_stale(&list, &stale, in_force);
                        warned.insert(list, SystemTime::now());
                    }
                }
                None => {
                    warned.remove(&list);
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_logged_without_secrets() {
        assert_eq!(
            redact(
                &reqwest::Url::parse("https://user:pw@feeds.example/ctiru.txt?key=SECRET#x")
                    .unwrap()
            ),
            "https://feeds.example/ctiru.txt"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_limits() {
        let day = Duration::from_secs(86_400);
        assert_eq!(backoff(1, day), Duration::from_secs(30));
        assert_eq!(backoff(2, day), Duration::from_secs(60));
        assert_eq!(backoff(5, day), Duration::from_secs(480));
        assert_eq!(backoff(40, day), MAX_BACKOFF);
        assert_eq!(
            backoff(40, Duration::from_secs(120)),
            Duration::from_secs(120)
        );
    }

    fn source(dir: &Path) -> Source {
        Source {
            name: "feed".into(),
            url: reqwest::Url::parse("http://127.0.0.1:9/feed").unwrap(),
            format: Format::Auto,
            min_entries: 0,
            min_ratio: 0.5,
            refresh: Duration::from_secs(3600),
            file: dir.join("feed.list"),
            max_list_bytes: lists::DEFAULT_MAX_LIST_BYTES,
            allow_redirect_to: Vec::new(),
            auth_file: None,
            auth_env: None,
        }
    }

    #[test]
    fn metadata_is_read_only_from_a_regular_file_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let s = source(dir.path());
        let meta = Meta {
            entries: 7,
            checked_at: 42,
            ..Meta::default()
        };
        write_meta(&s, &meta).unwrap();
        assert_eq!(s.meta().checked_at, 42);
        std::fs::remove_file(s.meta_file()).unwrap();
        let c_path = std::ffi::CString::new(s.meta_file().to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // No writer: a blocking read would wait for ever.
        assert_eq!(s.meta().checked_at, 0);
    }

    #[test]
    fn auth_header_line_forms() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = source(dir.path());
        let token = dir.path().join("token");
        s.auth_file = Some(token.clone());
        std::fs::write(&token, "X-Api-Key: abc123\n").unwrap();
        let (name, value) = s.auth_header().unwrap().unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("x-api-key", "abc123")
        );
        assert!(value.is_sensitive());
        std::fs::write(&token, "Bearer abc 123\n").unwrap();
        let (name, value) = s.auth_header().unwrap().unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("authorization", "Bearer abc 123")
        );
        std::fs::write(&token, "Bearer bad\u{7}secret\n").unwrap();
        let err = s.auth_header().unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        std::fs::remove_file(&token).unwrap();
        let err = s.auth_header().unwrap_err().to_string();
        assert!(
            err.contains("auth_header_file") && err.contains("feed"),
            "{err}"
        );
    }

    #[test]
    fn validation_refuses_empty_garbage_and_shrunk_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let s = source(dir.path());
        let file = dir.path().join("download");
        let many: String = (0..100).map(|i| format!("site{i}.test\n")).collect();
        std::fs::write(&file, &many).unwrap();
        assert_eq!(validate(&s, &file, 150).unwrap(), 100);
        let err = validate(&s, &file, 300).unwrap_err().to_string();
        assert!(err.contains("below the floor of 150"), "{err}");
        std::fs::write(&file, "").unwrap();
        assert!(validate(&s, &file, 0)
            .unwrap_err()
            .to_string()
            .contains("no usable entries"));
        std::fs::write(
            &file,
            "<html>\n<body>Please sign in</body>\n<p>a.test</p>\nx y z\n",
        )
        .unwrap();
        assert!(validate(&s, &file, 0).is_err());
    }
}
