//! `[identity]` and `[[users_to_groups]]`: who is signed in at which address, from where
//! Warden learns it (RADIUS accounting, a sign-in feed, a sessions file, a directory
//! file), and which Warden group a person's directory group puts them in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::value::{duration_in, Net};

/// `[identity]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// How long a sign-in lasts when its source gives no end of its own (a RADIUS Start
    /// never followed by a Stop or an update, a feed entry without a lifetime): after
    /// it the address is nobody's again. Interim updates and new sign-ins renew it.
    #[serde(default = "default_session_lifetime", deserialize_with = "lifetime")]
    pub session_lifetime: Duration,
    /// A CSV file of `user,directory group;directory group…` (an export from the
    /// directory), read at each reload: the directory groups of users whose sign-in does
    /// not carry them (most RADIUS set-ups).
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// A CSV file of `user,address,until[,directory groups]` that the admin (or a script)
    /// keeps, re-read when it changes. `until` is RFC 3339.
    #[serde(default)]
    pub sessions_file: Option<PathBuf>,
    /// RADIUS accounting (RFC 2866) from the Wi-Fi controller or 802.1X switch.
    #[serde(default)]
    pub radius: Option<RadiusConfig>,
    /// `[[identity.feeds]]`: sign-in feeds for logon scripts and agents, each with its
    /// own token, posting to the admin listener's `/identity/signin`.
    #[serde(default)]
    pub feeds: Vec<FeedConfig>,
    /// Where the sign-ins are kept across a restart (readable by Warden only), so a
    /// restart does not put everyone back in their device's group until the next
    /// RADIUS update or feed post.
    #[serde(default = "default_state_file")]
    pub state_file: PathBuf,
}

impl IdentityConfig {
    /// Whether anything feeds sign-ins (RADIUS, a feed, a sessions file).
    pub fn has_sources(&self) -> bool {
        self.radius.is_some() || !self.feeds.is_empty() || self.sessions_file.is_some()
    }
}

fn default_state_file() -> PathBuf {
    PathBuf::from("data/signins.json")
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            session_lifetime: default_session_lifetime(),
            directory: None,
            sessions_file: None,
            radius: None,
            feeds: Vec::new(),
            state_file: default_state_file(),
        }
    }
}

/// `[identity.radius]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadiusConfig {
    /// Where to receive Accounting-Request packets (UDP; RADIUS accounting's port is
    /// 1813).
    pub listen: SocketAddr,
    /// A file holding the shared secret (first line), readable by Warden only. A
    /// packet whose authenticator does not match it is dropped and counted.
    pub secret_file: PathBuf,
    /// The addresses allowed to send accounting (the controllers, as addresses or
    /// networks); others are dropped and counted. Required: accounting signs people in,
    /// so only the controllers may send it.
    pub clients: Spanned<Vec<Net>>,
}

/// `[[identity.feeds]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Recorded as where a sign-in came from (`signin:NAME`).
    pub name: Spanned<String>,
    /// A file holding this feed's token (first line, at least 32 characters), sent as
    /// `Authorization: Bearer TOKEN`.
    pub token_file: PathBuf,
    /// Who may post with this token (addresses or networks, as the admin listener sees
    /// them); default: anyone who reaches the admin listener. A server-side feed (the
    /// domain controller's collector) should name its server.
    #[serde(default)]
    pub from: Vec<Net>,
    /// The token sits on the devices themselves (a logon script on every PC), where a
    /// pupil could read it: a post may then sign in or out only the address it comes
    /// from, and its sign-in is recorded as the device's own claim, which never chooses
    /// a group. Such posts must reach the admin listener directly, not through a proxy.
    #[serde(default)]
    pub agents: bool,
}

/// `[[users_to_groups]]`: people in directory group `directory_group` (or the one user
/// `user`) filter as Warden group `group`. The first entry that matches a person wins,
/// in the order written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserGroupConfig {
    /// A directory group name, as the directory writes it ("Year 7", "Staff");
    /// compared without regard to case.
    #[serde(default)]
    pub directory_group: Option<String>,
    /// One user name (compared without regard to case), for an exception.
    #[serde(default)]
    pub user: Option<String>,
    pub group: Spanned<String>,
}

impl UserGroupConfig {
    /// Does this entry match a person with these directory groups?
    pub fn matches(&self, user: &str, directory_groups: &[String]) -> bool {
        if let Some(name) = &self.user {
            return name.eq_ignore_ascii_case(user);
        }
        self.directory_group.as_ref().is_some_and(|wanted| {
            directory_groups
                .iter()
                .any(|g| g.trim().eq_ignore_ascii_case(wanted.trim()))
        })
    }
}

/// A school day and then some.
fn default_session_lifetime() -> Duration {
    Duration::from_secs(12 * 3600)
}

/// A minute to a week.
fn lifetime<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_in::<D, 60_000, { 7 * 24 * 3_600_000 }>(d)
}
