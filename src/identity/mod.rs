//! Who is signed in at which address: the live map from a device's address to the
//! person using it, fed by RADIUS accounting ([`radius`]), sign-in feeds and a sessions
//! file ([`feed`]), read by the query path for the audit log and for groups that follow
//! the person (`[[users_to_groups]]`).
//!
//! Every sign-in has an end: its source's own (a feed's lifetime, a file's `until`) or
//! `[identity] session_lifetime` from its last renewal; past it the address is nobody's
//! again. A Stop ends it at once. Sign-ins live in memory, outside the engine snapshot
//! (they change by the second, and a reload must not drop them); the query path reads
//! them with one lookup in a sharded map, none at all while nobody is signed in.

pub mod feed;
pub mod radius;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;

use crate::config::Mac;
use crate::lists::read_small;

/// Where a sign-in came from, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// RADIUS accounting.
    Radius,
    /// The sign-in feed `[[identity.feeds]]` of this name.
    Feed(String),
    /// The sign-in feed of this name with `agents = true`: the device's own claim, so
    /// recorded in the audit log but never choosing a group.
    Agent(String),
    /// `[identity] sessions_file`.
    File,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Radius => f.write_str("radius"),
            Source::Feed(name) => write!(f, "signin:{name}"),
            Source::Agent(name) => write!(f, "agent:{name}"),
            Source::File => f.write_str("file"),
        }
    }
}

impl std::str::FromStr for Source {
    type Err = ();

    /// The form [`Source`]'s `Display` writes (as the state file keeps it).
    fn from_str(text: &str) -> Result<Source, ()> {
        match text {
            "radius" => Ok(Source::Radius),
            "file" => Ok(Source::File),
            other => match other.split_once(':') {
                Some(("signin", feed)) => Ok(Source::Feed(feed.to_string())),
                Some(("agent", feed)) => Ok(Source::Agent(feed.to_string())),
                _ => Err(()),
            },
        }
    }
}

impl Source {
    /// Whether a sign-in from here may choose the person's group (a device's claim
    /// about itself may not).
    pub fn chooses_group(&self) -> bool {
        !matches!(self, Source::Agent(_))
    }

    /// How the dashboard and the audit log say where a sign-in came from.
    pub fn describe(&self) -> String {
        match self {
            Source::Radius => "RADIUS accounting".to_string(),
            Source::Feed(name) => format!("sign-in feed {name}"),
            Source::Agent(name) => format!("the device's own sign-in (feed {name})"),
            Source::File => "sessions file".to_string(),
        }
    }
}

/// One person signed in at one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    /// Directory groups the sign-in carried (RADIUS `Class`/`Filter-Id`, the feed's
    /// `groups`); the directory file adds its own for the user.
    pub groups: Vec<String>,
    /// The device's MAC, when the source gave it (RADIUS `Calling-Station-Id`).
    pub mac: Option<Mac>,
    pub until: SystemTime,
    pub source: Source,
    /// The source's own name for the session (RADIUS `Acct-Session-Id`), by which a
    /// Stop without an address ends it.
    pub id: Option<String>,
}

/// The longest user name kept: far beyond any directory's, and a bound on what one
/// packet or request can make us store.
pub const MAX_USER_LEN: usize = 128;
/// At most this many directory groups per sign-in, each at most [`MAX_USER_LEN`].
pub const MAX_GROUPS: usize = 32;
/// At most this many people signed in at once: a large trust site has a few thousand
/// devices; the bound keeps a flood of forged sign-ins from taking the memory.
pub const MAX_SESSIONS: usize = 200_000;

/// Why a sign-in was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error(
        "user name {0} is empty, longer than {MAX_USER_LEN} characters or holds a control character"
    )]
    BadUser(String),
    #[error("{0}")]
    BadGroups(String),
    #[error("the sign-in ends before it starts")]
    Expired,
    #[error("{MAX_SESSIONS} sign-ins are held already")]
    Full,
}

/// The live sign-ins, by the device's address.
#[derive(Debug)]
pub struct Sessions {
    by_address: DashMap<IpAddr, Arc<Session>>,
    /// Entries held (a cheap "anyone signed in?" for the query path), re-read after
    /// every change.
    count: AtomicUsize,
    /// Held by every change, so changes and their recounts do not interleave; it holds
    /// the session IDs recently ended (see [`Sessions::ended`]).
    writing: std::sync::Mutex<Ended>,
    /// Bumped by every change: the state file is written when it moved.
    changes: std::sync::atomic::AtomicU64,
    /// `[identity] session_lifetime` in milliseconds, as the last reload set it.
    lifetime_ms: std::sync::atomic::AtomicU64,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            by_address: DashMap::new(),
            count: AtomicUsize::new(0),
            writing: std::sync::Mutex::new(Ended::default()),
            changes: std::sync::atomic::AtomicU64::new(0),
            lifetime_ms: std::sync::atomic::AtomicU64::new(DEFAULT_LIFETIME_MS),
        }
    }
}

/// `[identity] session_lifetime`'s default (12 hours), until a config sets one.
const DEFAULT_LIFETIME_MS: u64 = 12 * 3_600_000;

/// A user name or directory group fit to keep: not empty, bounded, no control
/// characters (they go into the audit log, the dashboard and PostgreSQL).
pub fn valid_text(text: &str) -> bool {
    !text.trim().is_empty()
        && text.chars().count() <= MAX_USER_LEN
        && !text.chars().any(char::is_control)
}

/// `text` quoted for an error message: control characters escaped, cut at 40
/// characters (it may be anything a packet or a request held).
pub fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(40).flat_map(char::escape_debug).collect();
    if text.chars().count() > 40 {
        out.push('…');
    }
    format!("\"{out}\"")
}

/// Why `groups` cannot be kept, naming the group at fault; `Ok` if they can.
fn check_groups(groups: &[String]) -> Result<(), String> {
    if groups.len() > MAX_GROUPS {
        return Err(format!(
            "{} directory groups; at most {MAX_GROUPS}",
            groups.len()
        ));
    }
    match groups.iter().find(|g| !valid_text(g)) {
        Some(bad) => Err(format!(
            "directory group {} is empty, longer than {MAX_USER_LEN} characters or holds a control character",
            shown(bad)
        )),
        None => Ok(()),
    }
}

/// Directory groups written `Staff; Year 7` (a sessions or directory file's field):
/// trimmed, empty ones dropped, each checked.
pub(crate) fn group_list(text: &str) -> Result<Vec<String>, String> {
    let groups: Vec<String> = text
        .split(';')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect();
    check_groups(&groups)?;
    Ok(groups)
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions::default()
    }

    /// How long a sign-in lasts when its source gives no end of its own (`[identity]
    /// session_lifetime`, which a reload may change).
    pub fn lifetime(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lifetime_ms.load(Ordering::Relaxed))
    }

    /// Set by the start and by each reload.
    pub fn set_lifetime(&self, lifetime: std::time::Duration) {
        let ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        self.lifetime_ms.store(ms, Ordering::Relaxed);
    }

    /// Sign `session.user` in at `address`, replacing whoever was signed in there.
    pub fn sign_in(
        &self,
        address: IpAddr,
        session: Session,
        now: SystemTime,
    ) -> Result<(), SignInError> {
        let _writing = crate::sync::lock(&self.writing);
        self.insert(address, session, now)?;
        self.recount(true);
        Ok(())
    }

    /// [`Sessions::sign_in`] with the writing lock held (the count left to the caller).
    fn insert(
        &self,
        address: IpAddr,
        session: Session,
        now: SystemTime,
    ) -> Result<(), SignInError> {
        if !valid_text(&session.user) {
            return Err(SignInError::BadUser(shown(&session.user)));
        }
        check_groups(&session.groups).map_err(SignInError::BadGroups)?;
        if session.until <= now {
            return Err(SignInError::Expired);
        }
        let address = address.to_canonical();
        if !self.by_address.contains_key(&address) && self.len() >= MAX_SESSIONS {
            self.by_address.retain(|_, s| s.until > now);
            if self.by_address.len() >= MAX_SESSIONS {
                return Err(SignInError::Full);
            }
        }
        self.by_address.insert(address, Arc::new(session));
        Ok(())
    }

    /// End the sign-in at `address`, if `user` (when given) is who is signed in there:
    /// a late Stop for the previous user of an address must not sign out the next.
    /// Returns whether one ended.
    pub fn sign_out(&self, address: IpAddr, user: Option<&str>) -> bool {
        let _writing = crate::sync::lock(&self.writing);
        let address = address.to_canonical();
        let removed = self
            .by_address
            .remove_if(&address, |_, s| {
                user.is_none_or(|u| u.eq_ignore_ascii_case(&s.user))
            })
            .is_some();
        self.recount(removed);
        removed
    }

    /// End the session the source calls `id` wherever it is (a RADIUS Stop that names
    /// no address), and remember for a while that it ended, so a late or replayed
    /// update of it signs no one back in. Returns whether one ended.
    pub fn end_session(&self, source: &Source, id: &str, now: SystemTime) -> bool {
        let mut writing = crate::sync::lock(&self.writing);
        writing.add(id, now);
        let before = self.by_address.len();
        self.by_address
            .retain(|_, s| !(&s.source == source && s.id.as_deref() == Some(id)));
        let removed = self.by_address.len() != before;
        self.recount(removed);
        removed
    }

    /// Whether the session `id` ended lately (within [`ENDED_KEPT`]).
    pub fn ended(&self, id: &str, now: SystemTime) -> bool {
        crate::sync::lock(&self.writing).holds(id, now)
    }

    /// Who is signed in at `address` at `now`, if anyone.
    pub fn find(&self, address: IpAddr, now: SystemTime) -> Option<Arc<Session>> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let session = self.by_address.get(&address.to_canonical())?.clone();
        (session.until > now).then_some(session)
    }

    /// Drop every sign-in past its end.
    pub fn expire(&self, now: SystemTime) {
        let _writing = crate::sync::lock(&self.writing);
        let before = self.by_address.len();
        self.by_address.retain(|_, s| s.until > now);
        self.recount(self.by_address.len() != before);
    }

    /// Mutations are rare (a sign-in, not a query): the count is simply re-read, so the
    /// query path's "anyone signed in?" can never say no while someone is. `changed`
    /// moves the generation (the state file is written when it moves).
    fn recount(&self, changed: bool) {
        self.count.store(self.by_address.len(), Ordering::Relaxed);
        if changed {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A number that changes whenever the sign-ins do.
    pub fn generation(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Write the sign-ins in force to `path` (atomically, readable by Warden only).
    pub fn save(&self, path: &Path, now: SystemTime) -> std::io::Result<()> {
        let saved: Vec<Saved> = self
            .snapshot(now)
            .into_iter()
            .map(|(address, s)| Saved {
                address,
                user: s.user.clone(),
                groups: s.groups.clone(),
                mac: s.mac.map(|m| m.to_string()),
                until: chrono::DateTime::<chrono::Utc>::from(s.until).to_rfc3339(),
                source: s.source.to_string(),
                id: s.id.clone(),
            })
            .collect();
        let text = serde_json::to_string(&saved).map_err(std::io::Error::other)?;
        crate::secret::write_private(path, text.as_bytes())
    }

    /// Take back the sign-ins `save` wrote that are still in force and whose source
    /// still feeds sign-ins (`live`), each ending no later than `lifetime` from now (a
    /// lifetime shortened since applies); a missing file is none, an unreadable one is
    /// reported (and nothing is taken from it).
    pub fn restore(
        &self,
        path: &Path,
        now: SystemTime,
        lifetime: std::time::Duration,
        live: impl Fn(&Source) -> bool,
    ) -> std::io::Result<usize> {
        let text = match read_small(path, MAX_STATE_BYTES) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let saved: Vec<Saved> = serde_json::from_str(&text).map_err(std::io::Error::other)?;
        let mut taken = 0;
        for s in saved {
            let (Some(until), Ok(source)) = (rfc3339(&s.until), s.source.parse::<Source>()) else {
                continue;
            };
            if !live(&source) {
                continue;
            }
            let session = Session {
                user: s.user,
                groups: s.groups,
                mac: s.mac.as_deref().and_then(Mac::parse),
                until: until.min(now + lifetime),
                source,
                id: s.id,
            };
            if self.sign_in(s.address, session, now).is_ok() {
                taken += 1;
            }
        }
        Ok(taken)
    }

    /// Replace every sign-in from `source` with `entries` (a re-read sessions file):
    /// the file's lines are its whole truth.
    /// The swap is whole: no query sees the file's people signed out in between, and
    /// no other sign-in lands half-way.
    pub fn replace_from(&self, source: &Source, entries: Vec<(IpAddr, Session)>, now: SystemTime) {
        let _writing = crate::sync::lock(&self.writing);
        self.by_address.retain(|_, s| &s.source != source);
        for (address, session) in entries {
            // A bad line was reported when the file was read; one that slips through
            // here is skipped, never half-taken.
            let _ = self.insert(address, session, now);
        }
        self.recount(true);
    }

    /// Sign-ins held (expired ones until the next sweep included).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everyone signed in now, by address (for the dashboard and `/metrics`).
    pub fn snapshot(&self, now: SystemTime) -> Vec<(IpAddr, Arc<Session>)> {
        let mut all: Vec<(IpAddr, Arc<Session>)> = self
            .by_address
            .iter()
            .filter(|e| e.value().until > now)
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        all.sort_by_key(|(address, _)| *address);
        all
    }
}

/// Why the identity listeners cannot start.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("[identity.radius] listen {addr}: cannot bind: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("[identity.radius] secret_file {path}: {reason}")]
    Secret {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{0}")]
    FeedToken(String),
}

/// Start what feeds `sessions` from `config`'s `[identity]`: the RADIUS accounting
/// listener (if configured) and the watcher that reads the sessions file and sweeps
/// expired sign-ins (always). Both end with `stop`. Returns the RADIUS listener's
/// address, if any.
pub async fn start(
    config: &crate::config::Config,
    sessions: &Arc<Sessions>,
    metrics: &Arc<crate::metrics::Metrics>,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Option<std::net::SocketAddr>, IdentityError> {
    let settings = &config.identity;
    if let Some(problem) = feed::token_problems(&settings.feeds, &config.base_dir)
        .into_iter()
        .next()
    {
        return Err(IdentityError::FeedToken(problem));
    }
    let state = settings
        .has_sources()
        .then(|| config.resolve(&settings.state_file));
    if let Some(path) = &state {
        let live = |source: &Source| match source {
            Source::Radius => settings.radius.is_some(),
            Source::File => settings.sessions_file.is_some(),
            Source::Feed(name) | Source::Agent(name) => settings.feeds.iter().any(|f| {
                f.name.get_ref() == name && f.agents == matches!(source, Source::Agent(_))
            }),
        };
        match sessions.restore(path, SystemTime::now(), settings.session_lifetime, live) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(path = %path.display(), "{n} sign-ins taken back from before the restart")
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "[identity] state_file unreadable: sign-ins start empty")
            }
        }
    }
    let file = settings.sessions_file.as_ref().map(|p| config.resolve(p));
    let watch = feed::Watch {
        sessions_file: file,
        state_file: state,
        sessions: sessions.clone(),
        metrics: metrics.clone(),
    };
    tokio::spawn(watch.run(stop.clone()));
    let Some(radius) = &settings.radius else {
        return Ok(None);
    };
    let path = config.resolve(&radius.secret_file);
    let secret = crate::secret::first_line(&path).map_err(|e| IdentityError::Secret {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if secret.is_empty() {
        return Err(IdentityError::Secret {
            path,
            reason: "holds no secret (its first line is empty)".to_string(),
        });
    }
    let addr = radius.listen;
    let socket = tokio::net::UdpSocket::bind(addr)
        .await
        .map_err(|source| IdentityError::Bind { addr, source })?;
    let bound = socket
        .local_addr()
        .map_err(|source| IdentityError::Bind { addr, source })?;
    let clients = radius.clients.get_ref().iter().map(|n| n.0).collect();
    let counter = metrics.clone();
    let listener = radius::Listener {
        socket,
        secret: secret.into_bytes(),
        clients,
        sessions: sessions.clone(),
        count: Box::new(move |result| counter.radius_packet(result)),
        warned: std::sync::Mutex::new(None),
    };
    tokio::spawn(listener.run(stop.clone()));
    Ok(Some(bound))
}

/// One sign-in as the state file keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    address: IpAddr,
    user: String,
    groups: Vec<String>,
    mac: Option<String>,
    until: String,
    source: String,
    #[serde(default)]
    id: Option<String>,
}

/// An RFC 3339 time (`2026-12-04T16:00:00Z`, any offset) as a `SystemTime`.
pub(crate) fn rfc3339(text: &str) -> Option<SystemTime> {
    let time = chrono::DateTime::parse_from_rfc3339(text.trim()).ok()?;
    Some(SystemTime::from(time.with_timezone(&chrono::Utc)))
}

/// How long an ended session's ID is remembered: longer than a controller retries or
/// buffers accounting.
pub const ENDED_KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// At most this many ended session IDs are remembered (the oldest forgotten first).
const MAX_ENDED: usize = 100_000;

/// Session IDs ended lately, with when: a late Interim-Update, or a captured Start
/// replayed, for a session that has ended signs no one back in.
#[derive(Debug, Default)]
pub struct Ended {
    at: HashMap<String, SystemTime>,
}

impl Ended {
    fn add(&mut self, id: &str, now: SystemTime) {
        if self.at.len() >= MAX_ENDED {
            self.at
                .retain(|_, at| now.duration_since(*at).unwrap_or_default() < ENDED_KEPT);
            if self.at.len() >= MAX_ENDED {
                if let Some(oldest) = self
                    .at
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone())
                {
                    self.at.remove(&oldest);
                }
            }
        }
        let id: String = id.chars().take(MAX_USER_LEN).collect();
        self.at.insert(id, now);
    }

    fn holds(&self, id: &str, now: SystemTime) -> bool {
        let id: String = id.chars().take(MAX_USER_LEN).collect();
        self.at
            .get(&id)
            .is_some_and(|at| now.duration_since(*at).unwrap_or_default() < ENDED_KEPT)
    }
}

/// The most of a state file read (far beyond [`MAX_SESSIONS`] sign-ins).
const MAX_STATE_BYTES: u64 = 256 * 1024 * 1024;

/// The most of a directory file read (a trust's whole directory is a few MiB).
const MAX_DIRECTORY_BYTES: u64 = 64 * 1024 * 1024;

/// Directory groups by user name (lower case), from `[identity] directory`: lines of
/// `user,group;group…`. Lines that do not parse are reported by number and skipped.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    groups: HashMap<String, Vec<String>>,
}

impl Directory {
    /// Read the directory file at `path`; problems are `(line, why)`.
    pub fn read(path: &Path) -> Result<(Directory, Vec<(usize, String)>), std::io::Error> {
        let text = read_small(path, MAX_DIRECTORY_BYTES)?;
        let mut groups = HashMap::new();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, list)) = line.split_once(',') else {
                problems.push((i + 1, "expected user,group;group…".to_string()));
                continue;
            };
            let user = user.trim();
            if !valid_text(user) {
                problems.push((i + 1, format!("user {} cannot be kept", shown(user))));
                continue;
            }
            match group_list(list) {
                Ok(list) => {
                    groups.insert(user.to_lowercase(), list);
                }
                Err(reason) => problems.push((i + 1, reason)),
            }
        }
        Ok((Directory { groups }, problems))
    }

    /// `user`'s directory groups, as the file lists them.
    pub fn groups_of(&self, user: &str) -> &[String] {
        self.groups
            .get(&user.to_lowercase())
            .map_or(&[], Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn session(user: &str, until: SystemTime) -> Session {
        Session {
            user: user.to_string(),
            groups: vec!["Year 7".to_string()],
            mac: None,
            until,
            source: Source::Radius,
            id: None,
        }
    }

    #[test]
    fn a_sign_in_holds_until_its_end_and_a_late_stop_for_someone_else_is_ignored() {
        let sessions = Sessions::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        assert!(sessions.find(ip, now).is_none());
        sessions
            .sign_in(ip, session("pupil7", now + Duration::from_secs(60)), now)
            .unwrap();
        assert_eq!(sessions.find(ip, now).unwrap().user, "pupil7");
        // IPv4-mapped form of the same address.
        assert!(sessions
            .find("::ffff:10.0.0.5".parse().unwrap(), now)
            .is_some());
        assert!(sessions.find(ip, now + Duration::from_secs(60)).is_none());
        assert!(!sessions.sign_out(ip, Some("someone-else")));
        assert!(sessions.sign_out(ip, Some("PUPIL7")));
        assert!(sessions.find(ip, now).is_none());
        assert!(sessions.is_empty());
    }

    #[test]
    fn bad_sign_ins_are_refused_whole() {
        let sessions = Sessions::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let later = now + Duration::from_secs(60);
        let refusal = |s: Session| sessions.sign_in(ip, s, now).unwrap_err().to_string();
        assert!(refusal(session("", later)).contains("user name \"\" is empty"));
        // A control character is named escaped, never written raw into a log.
        assert!(refusal(session("a\u{0}b", later)).contains(r#""a\0b""#));
        assert_eq!(
            sessions.sign_in(ip, session("pupil7", now), now),
            Err(SignInError::Expired)
        );
        let mut many = session("pupil7", later);
        many.groups = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
        assert!(refusal(many).contains("33 directory groups"));
        let mut odd = session("pupil7", later);
        odd.groups = vec!["Staff".into(), "Year\n7".into()];
        assert!(refusal(odd).contains(r#"directory group "Year\n7""#));
        assert!(sessions.is_empty());
    }

    #[test]
    fn replacing_a_source_leaves_the_others() {
        let sessions = Sessions::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let later = now + Duration::from_secs(600);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        sessions
            .sign_in(a, session("radius-user", later), now)
            .unwrap();
        let mut from_file = session("file-user", later);
        from_file.source = Source::File;
        sessions.sign_in(b, from_file.clone(), now).unwrap();
        sessions.replace_from(&Source::File, Vec::new(), now);
        assert!(sessions.find(b, now).is_none());
        assert_eq!(sessions.find(a, now).unwrap().user, "radius-user");
        assert_eq!(sessions.len(), 1);
        sessions.expire(later);
        assert_eq!(sessions.len(), 0);
    }

    #[test]
    fn the_generation_moves_only_when_the_sign_ins_change() {
        let sessions = Sessions::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let g0 = sessions.generation();
        sessions.expire(now);
        assert!(!sessions.sign_out(ip, None));
        assert_eq!(
            sessions.generation(),
            g0,
            "nothing changed, nothing to save"
        );
        sessions
            .sign_in(ip, session("pupil7", now + Duration::from_secs(60)), now)
            .unwrap();
        let g1 = sessions.generation();
        assert_ne!(g1, g0);
        sessions.expire(now + Duration::from_secs(30));
        assert_eq!(sessions.generation(), g1);
        sessions.expire(now + Duration::from_secs(61));
        assert_ne!(sessions.generation(), g1, "an expiry is a change");
        assert!(sessions.is_empty());
    }

    #[test]
    fn sign_ins_survive_a_save_and_restore_and_expired_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/signins.json");
        let now = SystemTime::now();
        let sessions = Sessions::new();
        let mut radius = session("pupil7", now + Duration::from_secs(600));
        radius.mac = Some(Mac([0xaa, 0xbb, 0xcc, 0, 0, 7]));
        radius.id = Some("acct-1".into());
        sessions
            .sign_in("10.0.0.7".parse().unwrap(), radius.clone(), now)
            .unwrap();
        let mut feed = session("jsmith", now + Duration::from_secs(5));
        feed.source = Source::Feed("logon".into());
        sessions
            .sign_in("fd00::5".parse().unwrap(), feed.clone(), now)
            .unwrap();
        let before = sessions.generation();
        sessions.save(&path, now).unwrap();
        assert_eq!(sessions.generation(), before, "saving changes nothing");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "personal data: owner only");
        }
        let day = Duration::from_secs(86_400);
        let all = |_: &Source| true;
        let restored = Sessions::new();
        assert_eq!(restored.restore(&path, now, day, all).unwrap(), 2);
        let got = restored.find("10.0.0.7".parse().unwrap(), now).unwrap();
        assert_eq!(got.user, "pupil7");
        assert_eq!(got.mac, radius.mac);
        assert_eq!(got.source, Source::Radius);
        assert_eq!(got.id.as_deref(), Some("acct-1"));
        let got = restored.find("fd00::5".parse().unwrap(), now).unwrap();
        assert_eq!(got.source, Source::Feed("logon".into()));
        // Later, the feed's sign-in has ended: it is not taken back.
        let later = Sessions::new();
        let then = now + Duration::from_secs(60);
        assert_eq!(later.restore(&path, then, day, all).unwrap(), 1);
        // A lifetime shortened since the save applies; a source no longer configured
        // gives nothing back.
        let shorter = Sessions::new();
        assert_eq!(
            shorter
                .restore(&path, now, Duration::from_secs(60), all)
                .unwrap(),
            2
        );
        let got = shorter.find("10.0.0.7".parse().unwrap(), now).unwrap();
        assert_eq!(got.until, now + Duration::from_secs(60));
        let radius_only = Sessions::new();
        let no_feeds = |s: &Source| *s == Source::Radius;
        assert_eq!(radius_only.restore(&path, now, day, no_feeds).unwrap(), 1);
        assert!(radius_only.find("fd00::5".parse().unwrap(), now).is_none());
        // A missing file is no sign-ins; a corrupt one an error, nothing taken.
        let none = dir.path().join("none.json");
        assert_eq!(Sessions::new().restore(&none, now, day, all).unwrap(), 0);
        std::fs::write(&path, "{ not json").unwrap();
        let corrupt = Sessions::new();
        assert!(corrupt.restore(&path, now, day, all).is_err());
        assert!(corrupt.is_empty());
    }

    #[test]
    fn the_directory_file_reads_groups_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.csv");
        std::fs::write(
            &path,
            "# user,groups\npupil7,Year 7;Pupils\nJSmith, Staff \nno-comma-here\n",
        )
        .unwrap();
        let (directory, problems) = Directory::read(&path).unwrap();
        assert_eq!(directory.groups_of("PUPIL7"), ["Year 7", "Pupils"]);
        assert_eq!(directory.groups_of("jsmith"), ["Staff"]);
        assert!(directory.groups_of("nobody").is_empty());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, 4);
    }
}
