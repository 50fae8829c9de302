//! Sign-ins from outside RADIUS: the sign-in feed (a logon script or agent posts who
//! signed in where to the admin listener's `/identity/signin`, with its feed's token)
//! and the sessions file (`user,address,until[,groups]` lines the admin or a script
//! keeps, re-read when it changes).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Session, Sessions, SignInError, Source};
use crate::config::FeedConfig;
use crate::lists::read_small;

/// The longest lifetime a feed may give a sign-in.
pub const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// The shortest token a feed may have: 32 characters is 190 bits from a password
/// generator, beyond guessing over HTTP.
pub const MIN_TOKEN_LEN: usize = 32;
/// The most of a sessions file read (a large site's every device).
const MAX_SESSIONS_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// A sign-in as a feed posts it (JSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub user: String,
    pub address: IpAddr,
    /// Directory groups ("Staff", "Year 7").
    #[serde(default)]
    pub groups: Vec<String>,
    /// How long it lasts (`8h`, `45m`; 1 second to 7 days); default `[identity]
    /// session_lifetime`.
    #[serde(default)]
    pub lifetime: Option<String>,
}

/// A sign-out as a feed posts it (JSON): the address, and the user if the feed knows it
/// (then only that user's sign-in there ends).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignOut {
    pub address: IpAddr,
    #[serde(default)]
    pub user: Option<String>,
}

/// Why a feed's request was refused.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(
        "a valid feed token is required: Authorization: Bearer <a [[identity.feeds]] token_file>"
    )]
    Token,
    #[error("lifetime {0:?}: a duration such as \"8h\" from 1 second to 7 days")]
    Lifetime(String),
    #[error("this feed's token is not accepted from {0} (its `from`)")]
    NotFrom(IpAddr),
    #[error(
        "an agents feed signs in or out only the address it posts from ({peer}), not {address}"
    )]
    NotOwnAddress { peer: IpAddr, address: IpAddr },
    #[error("{0}")]
    Refused(#[from] SignInError),
}

/// The feed whose token `presented` is, if any. Every configured token is compared (in
/// constant time), so the time taken says nothing about which one nearly matched. A
/// token file that cannot be read, or holds a token shorter than [`MIN_TOKEN_LEN`],
/// matches nothing (and is logged; [`token_problems`] names them at start and reload).
pub fn feed_for<'a>(
    feeds: &'a [FeedConfig],
    base: &Path,
    presented: &str,
) -> Option<&'a FeedConfig> {
    let presented = presented.trim().as_bytes();
    let mut found = None;
    for feed in feeds {
        let token = match token_of(feed, base) {
            Ok(token) => token,
            Err(problem) => {
                tracing::warn!("{problem}: the feed accepts nothing");
                continue;
            }
        };
        if crate::secret::matches(presented, token.as_bytes()) && found.is_none() {
            found = Some(feed);
        }
    }
    found
}

/// The token in `feed`'s token file (relative to `base`), or what is wrong with it.
fn token_of(feed: &FeedConfig, base: &Path) -> Result<String, String> {
    let path = base.join(&feed.token_file);
    let what = || {
        format!(
            "[[identity.feeds]] {:?} token_file {}",
            feed.name.get_ref(),
            path.display()
        )
    };
    let token = crate::secret::first_line(&path)
        .map_err(|error| format!("{}: {error}", what()))?
        .trim()
        .to_string();
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "{}: the token is shorter than {MIN_TOKEN_LEN} characters",
            what()
        ));
    }
    Ok(token)
}

/// What is wrong with each feed's token file, one message per feed that would accept
/// nothing (checked at start, where it stops Warden, and at each reload, where it is
/// logged: a token file is read at each request, so fixing it needs no reload).
pub fn token_problems(feeds: &[FeedConfig], base: &Path) -> Vec<String> {
    feeds
        .iter()
        .filter_map(|feed| token_of(feed, base).err())
        .collect()
}

/// Whether `feed`'s token may act on `address` when posted from `peer`: `peer` within
/// its `from`, and for an agents feed, `address` the poster's own.
pub fn authorize(feed: &FeedConfig, peer: IpAddr, address: IpAddr) -> Result<(), FeedError> {
    let peer = peer.to_canonical();
    if !feed.from.is_empty() && !feed.from.iter().any(|net| net.0.contains(&peer)) {
        return Err(FeedError::NotFrom(peer));
    }
    if feed.agents && address.to_canonical() != peer {
        return Err(FeedError::NotOwnAddress { peer, address });
    }
    Ok(())
}

/// Take `request`, posted from `peer`, from `feed`: sign the user in until its lifetime
/// (or `default_life`). An agents feed's groups are not taken. Returns when it ends.
pub fn sign_in(
    sessions: &Sessions,
    feed: &FeedConfig,
    peer: IpAddr,
    request: SignIn,
    default_life: Duration,
    now: SystemTime,
) -> Result<SystemTime, FeedError> {
    authorize(feed, peer, request.address)?;
    let life = match &request.lifetime {
        None => default_life,
        Some(text) => humantime::parse_duration(text)
            .ok()
            .filter(|d| (Duration::from_secs(1)..=MAX_LIFETIME).contains(d))
            .ok_or_else(|| FeedError::Lifetime(text.clone()))?,
    };
    let until = now + life;
    let session = Session {
        user: request.user.trim().to_string(),
        groups: if feed.agents {
            Vec::new() // a pupil could post any; the directory file's count
        } else {
            request
                .groups
                .iter()
                .map(|g| g.trim().to_string())
                .collect()
        },
        mac: None,
        until,
        source: if feed.agents {
            Source::Agent(feed.name.get_ref().clone())
        } else {
            Source::Feed(feed.name.get_ref().clone())
        },
        id: None,
    };
    sessions.sign_in(request.address, session, now)?;
    Ok(until)
}

/// One problem in the sessions file: its line and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    pub line: usize,
    pub reason: String,
}

/// The sign-ins a sessions file holds, and its lines that could not be read.
pub type SessionsFile = (Vec<(IpAddr, Session)>, Vec<LineProblem>);

/// Read the sessions file: `user,address,until[,group;group…]` per line (`#` comments,
/// blank lines skipped; `until` RFC 3339). Lines past their `until` are left out; bad
/// lines are reported by number and left out.
pub fn read_sessions_file(path: &Path, now: SystemTime) -> Result<SessionsFile, std::io::Error> {
    let text = read_small(path, MAX_SESSIONS_FILE_BYTES)?;
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match session_line(line) {
            Ok((_, session)) if session.until <= now => {}
            Ok(entry) => entries.push(entry),
            Err(reason) => problems.push(LineProblem {
                line: i + 1,
                reason,
            }),
        }
    }
    Ok((entries, problems))
}

fn session_line(line: &str) -> Result<(IpAddr, Session), String> {
    let fields: Vec<&str> = line.splitn(4, ',').map(str::trim).collect();
    let [user, address, until, rest @ ..] = fields.as_slice() else {
        return Err("expected user,address,until[,groups]".to_string());
    };
    if !super::valid_text(user) {
        return Err(format!("user {user:?} cannot be kept"));
    }
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("{address:?} is not an IP address"))?;
    let until = super::rfc3339(until)
        .ok_or_else(|| format!("until {until:?} is not an RFC 3339 time (2026-12-04T16:00:00Z)"))?;
    let groups = super::group_list(rest.first().copied().unwrap_or(""))?;
    Ok((
        address,
        Session {
            user: user.to_string(),
            groups,
            mac: None,
            until,
            source: Source::File,
            id: None,
        },
    ))
}

/// How often the sessions file is looked at, and expired sign-ins swept.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The sign-ins' housekeeping, every [`WATCH_EVERY`]: expired sign-ins swept, the
/// sessions file followed, the state file written when the sign-ins changed, the count
/// kept in `/metrics`.
pub struct Watch {
    pub sessions_file: Option<PathBuf>,
    /// Where the sign-ins are kept across a restart (`None`: nothing feeds them).
    pub state_file: Option<PathBuf>,
    pub sessions: Arc<Sessions>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Watch {
    /// Run until `stop`; the state is written once more on the way out.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        let mut followed = Followed::default();
        let mut saved = u64::MAX;
        let mut interval = tokio::time::interval(WATCH_EVERY);
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = interval.tick() => false,
            };
            let now = SystemTime::now();
            self.sessions.expire(now);
            self.metrics.signed_in(self.sessions.len());
            if let Some(path) = &self.sessions_file {
                follow_sessions_file(path, &self.sessions, &mut followed, now);
            }
            if let Some(path) = &self.state_file {
                let generation = self.sessions.generation();
                if generation != saved {
                    match self.sessions.save(path, now) {
                        Ok(()) => saved = generation,
                        Err(error) => {
                            tracing::warn!(path = %path.display(), %error, "cannot write [identity] state_file; sign-ins would not survive a restart")
                        }
                    }
                }
            }
            if stopping {
                return;
            }
        }
    }
}

/// How the sessions file looked (by its metadata) when it was last looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Absent,
    Present {
        len: u64,
        modified: Option<SystemTime>,
    },
}

impl Stamp {
    fn of(path: &Path) -> Stamp {
        match std::fs::metadata(path) {
            Ok(m) => Stamp::Present {
                len: m.len(),
                modified: m.modified().ok(),
            },
            Err(_) => Stamp::Absent,
        }
    }
}

/// What [`follow_sessions_file`] remembers between looks: the file as last taken in,
/// and as last found unreadable (so that failure is warned of once, yet retried on
/// every look until a read succeeds).
#[derive(Debug, Default)]
struct Followed {
    taken: Option<Stamp>,
    failed: Option<Stamp>,
}

/// Re-read the sessions file at `path` unless it is unchanged since it was last taken
/// in; a file that disappeared ends its sign-ins.
fn follow_sessions_file(
    path: &Path,
    sessions: &Sessions,
    followed: &mut Followed,
    now: SystemTime,
) {
    let stamp = Stamp::of(path);
    if followed.taken == Some(stamp) {
        return;
    }
    let (entries, problems) = match stamp {
        Stamp::Absent => (Vec::new(), Vec::new()),
        Stamp::Present { .. } => match read_sessions_file(path, now) {
            Ok(read) => read,
            Err(error) => {
                if followed.failed != Some(stamp) {
                    tracing::warn!(path = %path.display(), %error, "[identity] sessions_file unreadable: its sign-ins are kept as they were until it can be read");
                }
                followed.failed = Some(stamp);
                return;
            }
        },
    };
    followed.taken = Some(stamp);
    followed.failed = None;
    for p in &problems {
        tracing::warn!("{}:{}: {} (line skipped)", path.display(), p.line, p.reason);
    }
    tracing::info!(path = %path.display(), signed_in = entries.len(), skipped = problems.len(), "sessions file read");
    sessions.replace_from(&Source::File, entries, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(dir: &Path, name: &str, token: &str) -> FeedConfig {
        let path = dir.join(format!("{name}.token"));
        std::fs::write(&path, format!("{token}\n")).unwrap();
        FeedConfig {
            name: toml::Spanned::new(0..0, name.to_string()),
            token_file: path,
            from: Vec::new(),
            agents: false,
        }
    }

    #[test]
    fn only_a_feeds_own_token_of_fit_length_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let good = "k".repeat(40);
        let feeds = vec![
            feed(dir.path(), "short", "tooshort"),
            feed(dir.path(), "logon", &good),
        ];
        assert_eq!(
            feed_for(&feeds, dir.path(), &good).map(|f| f.name.get_ref().as_str()),
            Some("logon")
        );
        assert!(feed_for(&feeds, dir.path(), "tooshort").is_none());
        assert!(feed_for(&feeds, dir.path(), &"k".repeat(39)).is_none());
        assert!(feed_for(&feeds, dir.path(), "").is_none());
        let problems = token_problems(&feeds, dir.path());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("\"short\" token_file"), "{problems:?}");
        let missing = FeedConfig {
            token_file: dir.path().join("absent.token"),
            ..feeds[1].clone()
        };
        let problems = token_problems(&[missing], dir.path());
        assert!(problems[0].contains("absent.token"), "{problems:?}");
    }

    #[test]
    fn a_feed_sign_in_lasts_its_lifetime_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let f = feed(dir.path(), "logon", &"k".repeat(40));
        let sessions = Sessions::new();
        let now = SystemTime::now();
        let request = |lifetime: Option<&str>| SignIn {
            user: "jsmith".into(),
            address: "10.0.1.5".parse().unwrap(),
            groups: vec!["Staff".into()],
            lifetime: lifetime.map(str::to_string),
        };
        let until = sign_in(
            &sessions,
            &f,
            "10.0.1.5".parse().unwrap(),
            request(Some("2m")),
            Duration::from_secs(3600),
            now,
        )
        .unwrap();
        assert_eq!(until, now + Duration::from_secs(120));
        let s = sessions.find("10.0.1.5".parse().unwrap(), now).unwrap();
        assert_eq!(s.source.to_string(), "signin:logon");
        assert!(sessions.find("10.0.1.5".parse().unwrap(), until).is_none());
        for bad in ["0s", "8 fortnights", "30d"] {
            assert!(matches!(
                sign_in(
                    &sessions,
                    &f,
                    "10.0.1.5".parse().unwrap(),
                    request(Some(bad)),
                    Duration::from_secs(60),
                    now
                ),
                Err(FeedError::Lifetime(_))
            ));
        }
    }

    #[test]
    fn a_feed_acts_only_from_its_networks_and_an_agent_only_for_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = feed(dir.path(), "dc", &"k".repeat(40));
        server.from = vec!["10.0.0.2".parse().unwrap()];
        let sessions = Sessions::new();
        let now = SystemTime::now();
        let life = Duration::from_secs(3600);
        let staff_at = |address: &str| SignIn {
            user: "jsmith".into(),
            address: address.parse().unwrap(),
            groups: vec!["Staff".into()],
            lifetime: None,
        };
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        // The server signs anyone in, with their groups; no one else may use its token.
        sign_in(
            &sessions,
            &server,
            ip("10.0.0.2"),
            staff_at("10.0.1.5"),
            life,
            now,
        )
        .unwrap();
        assert_eq!(
            sessions.find(ip("10.0.1.5"), now).unwrap().groups,
            ["Staff"]
        );
        let elsewhere = sign_in(
            &sessions,
            &server,
            ip("10.0.1.9"),
            staff_at("10.0.1.9"),
            life,
            now,
        );
        assert!(
            matches!(elsewhere, Err(FeedError::NotFrom(_))),
            "{elsewhere:?}"
        );
        assert!(sessions.find(ip("10.0.1.9"), now).is_none());

        // An agent (its token on every PC) signs in only its own address, as a claim
        // that chooses no group.
        let mut agent = feed(dir.path(), "pcs", &"a".repeat(40));
        agent.agents = true;
        let other = sign_in(
            &sessions,
            &agent,
            ip("10.0.1.7"),
            staff_at("10.0.1.5"),
            life,
            now,
        );
        assert!(
            matches!(other, Err(FeedError::NotOwnAddress { .. })),
            "{other:?}"
        );
        assert_eq!(
            sessions.find(ip("10.0.1.5"), now).unwrap().groups,
            ["Staff"]
        );
        sign_in(
            &sessions,
            &agent,
            ip("10.0.1.7"),
            staff_at("10.0.1.7"),
            life,
            now,
        )
        .unwrap();
        let claimed = sessions.find(ip("10.0.1.7"), now).unwrap();
        assert!(claimed.groups.is_empty());
        assert_eq!(claimed.source, Source::Agent("pcs".into()));
        assert!(!claimed.source.chooses_group());
        assert!(authorize(&agent, ip("10.0.1.7"), ip("10.0.1.5")).is_err());
        assert!(authorize(&agent, ip("::ffff:10.0.1.7"), ip("10.0.1.7")).is_ok());
    }

    #[test]
    fn the_sessions_file_takes_good_lines_and_names_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.csv");
        std::fs::write(
            &path,
            "# user,address,until,groups\n\
             pupil7,10.0.0.7,2099-01-01T00:00:00Z,Year 7\n\
             old,10.0.0.8,2000-01-01T00:00:00Z\n\
             bad,not-an-ip,2099-01-01T00:00:00Z\n\
             jsmith,fd00::5,2099-01-01T08:00:00+01:00,Staff;Teachers\n\
             short-line\n",
        )
        .unwrap();
        let (entries, problems) = read_sessions_file(&path, SystemTime::now()).unwrap();
        let users: Vec<&str> = entries.iter().map(|(_, s)| s.user.as_str()).collect();
        assert_eq!(users, ["pupil7", "jsmith"]);
        assert_eq!(entries[1].1.groups, ["Staff", "Teachers"]);
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [4, 6]);
    }

    #[test]
    fn an_unreadable_sessions_file_is_retried_until_read_though_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.csv");
        let sessions = Sessions::new();
        let mut followed = Followed::default();
        let now = SystemTime::now();
        let pupil: IpAddr = "10.0.0.7".parse().unwrap();
        std::fs::write(&path, "pupil7,10.0.0.7,2099-01-01T00:00:00Z\n").unwrap();
        follow_sessions_file(&path, &sessions, &mut followed, now);
        assert!(sessions.find(pupil, now).is_some());
        // The file becomes one that cannot be read (a FIFO): the sign-in is kept.
        std::fs::remove_file(&path).unwrap();
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let fifo_modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        follow_sessions_file(&path, &sessions, &mut followed, now);
        assert!(sessions.find(pupil, now).is_some());
        // Replaced by an empty regular file that looks the same by its metadata (the
        // same length and time): it is read all the same, and ends the sign-in.
        std::fs::remove_file(&path).unwrap();
        let file = std::fs::File::create(&path).unwrap();
        file.set_modified(fifo_modified).unwrap();
        drop(file);
        follow_sessions_file(&path, &sessions, &mut followed, now);
        assert!(sessions.find(pupil, now).is_none());
        assert_eq!(followed.failed, None);
    }
}
