//! Who is asking, and what applies to them now: client → group and device name
//! ([`clients`]), group → categories blocked at this moment ([`schedule`]), safe-search
//! rewrites ([`safe_search`]), DNS rebinding protection ([`rebinding`]) and the built-in
//! circumvention answers.
//!
//! Compiled once per snapshot from the config. The query path only looks things up:
//! one longest-prefix lookup for the client, and the group's category set for the
//! current minute, cached per group in two atomics (schedules are evaluated at most
//! once a minute per group, never per query).

pub mod clients;
pub mod rebinding;
pub mod safe_search;
pub mod schedule;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::config::{BlockResponse, Config, Mac, UserGroupConfig, YouTubeMode};
use crate::filter::{Block, CategorySet, Matcher, Verdict};
use crate::identity::{Directory, Session};
use clients::{ClientIndex, Leases, Membership};
use schedule::Window;

/// The built-in category of ways round the filter; defined even if the config does not.
pub use crate::config::CIRCUMVENTION;

/// The category of answers blocked by DNS rebinding protection ([`rebinding`]).
pub(crate) const REBINDING: &str = "rebinding";

/// The category of every `[[deny]]` list's blocks.
pub(crate) const GROUP_DENY: &str = "group-deny";

/// A built-in answer for a name used to get round the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    /// NXDOMAIN: Firefox's DoH canary (`use-application-dns.net`: "do not switch to
    /// DoH here"), iCloud Private Relay's `mask.icloud.com` / `mask-h2.icloud.com`.
    NxDomain,
    /// NOERROR with no records: `_dns.resolver.arpa` (RFC 9462 discovery of an encrypted
    /// resolver), so clients do not upgrade to one Warden cannot see.
    NoData,
}

/// The built-in circumvention answer for `name`, if any.
pub(crate) fn special(name: &str) -> Option<Special> {
    match name {
        "use-application-dns.net" | "mask.icloud.com" | "mask-h2.icloud.com" => {
            Some(Special::NxDomain)
        }
        "_dns.resolver.arpa" => Some(Special::NoData),
        _ => None,
    }
}

/// One group's compiled policy.
#[derive(Debug)]
pub struct Group {
    pub name: String,
    /// Blocked at all times (locked ones included).
    pub base: CategorySet,
    pub windows: Vec<Window>,
    pub safe_search: bool,
    pub youtube: YouTubeMode,
    pub block_response: Option<BlockResponse>,
    /// This group's own allow lists (`[[allow]] groups = [...]`).
    pub allow: Option<Matcher>,
    /// This group's own block lists (`[[deny]] groups = [...]`).
    pub deny: Option<Matcher>,
    /// `(minute since 1970, category set)` for the last minute evaluated.
    cache: (AtomicU64, AtomicU64),
}

impl Group {
    /// A block from this group's own deny lists that the main verdict does not outrank:
    /// it applies when the name is otherwise allowed and no allow entry (global or the
    /// group's) is at least as specific.
    pub(crate) fn denies<'a>(&'a self, name: &'a str, verdict: &Verdict<'_>) -> Option<Block<'a>> {
        let deny = self.deny.as_ref()?;
        let Verdict::Blocked(block) = deny.lookup(name, deny.all_categories()) else {
            return None;
        };
        let outranked = match verdict {
            Verdict::Blocked(_) => true, // blocked anyway: the main verdict says why
            Verdict::Allowed { exception } => {
                exception.is_some_and(|rule| rule.matched.len() >= block.rule.matched.len())
            }
        };
        (!outranked && !self.allows(name, &block)).then_some(block)
    }

    /// Does one of this group's own allow lists exempt `name` from `block`? Only with an
    /// entry at least as specific as the blocking one, and never from a locked block.
    pub fn allows(&self, name: &str, block: &Block<'_>) -> bool {
        if block.locked {
            return false;
        }
        let Some(allow) = &self.allow else {
            return false;
        };
        match allow.lookup(name, CategorySet::EMPTY) {
            Verdict::Allowed {
                exception: Some(rule),
            } => rule.matched.len() >= block.rule.matched.len(),
            _ => false,
        }
    }
}

/// Everything about clients and groups in one snapshot.
#[derive(Debug)]
pub struct Policy {
    pub groups: Vec<Group>,
    by_name: BTreeMap<String, usize>,
    default_group: usize,
    clients: ClientIndex,
    /// `[[clients]] mac` entries.
    macs: HashMap<Mac, Membership>,
    leases: Leases,
    /// `[[users_to_groups]]`, in order, with each entry's group number.
    users_to_groups: Vec<(UserGroupConfig, usize)>,
    directory: Directory,
    /// `[server] trusted_forwarders`.
    forwarders: Vec<ipnet::IpNet>,
    locked: CategorySet,
    pub tz: Tz,
    /// `[server] allow_networks`.
    allowed: Vec<ipnet::IpNet>,
    /// `[[devices]]`, by ID.
    devices: HashMap<String, Enrolled>,
}

/// An enrolled device (`[[devices]]`), as its ID finds it.
#[derive(Debug)]
pub struct Enrolled {
    pub name: String,
    /// Its group's number.
    group: usize,
    /// The person it belongs to, if one.
    pub user: Option<String>,
}

/// Who belongs where, compiled from `[[clients]]` and `[[users_to_groups]]` with the
/// groups' numbers.
struct Members {
    by_address: ClientIndex,
    by_mac: HashMap<Mac, Membership>,
    users_to_groups: Vec<(UserGroupConfig, usize)>,
}

impl Members {
    fn build(config: &Config, by_name: &BTreeMap<String, usize>) -> Members {
        let member = |c: &crate::config::ClientConfig| {
            let group = *by_name.get(c.group.get_ref())?;
            Some(Membership {
                group,
                name: c.name.clone(),
            })
        };
        let clients = &config.clients;
        Members {
            by_address: ClientIndex::new(
                clients.iter().filter_map(|c| Some((c.cidr?.0, member(c)?))),
            ),
            by_mac: clients
                .iter()
                .filter_map(|c| Some((*c.mac.as_ref()?.get_ref(), member(c)?)))
                .collect(),
            users_to_groups: config
                .users_to_groups
                .iter()
                .filter_map(|u| Some((u.clone(), *by_name.get(u.group.get_ref())?)))
                .collect(),
        }
    }
}

/// `[[devices]]` by ID, each with its group's number.
fn enrolled_devices(
    config: &Config,
    by_name: &BTreeMap<String, usize>,
) -> HashMap<String, Enrolled> {
    config
        .devices
        .iter()
        .filter_map(|d| {
            let device = Enrolled {
                name: d.name.clone(),
                group: *by_name.get(d.group.get_ref())?,
                user: d.user.clone(),
            };
            Some((d.id.get_ref().clone(), device))
        })
        .collect()
}

/// What applies to one client.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub group: &'a Group,
    /// The group's number in this snapshot (for cache keys).
    pub group_id: usize,
    pub device: Option<&'a str>,
    /// The device's MAC, when known, and how it was learned.
    pub mac: Option<(Mac, MacFrom)>,
    /// What chose the group.
    pub group_from: GroupFrom,
    /// The enrolled device the query's ID named, if any (then nothing else about the
    /// query's source applied).
    pub enrolled: Option<&'a Enrolled>,
}

/// How a device's MAC was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacFrom {
    /// An EDNS option from a trusted forwarder.
    Query,
    /// The DHCP leases, by address.
    Lease,
    /// The sign-in (RADIUS `Calling-Station-Id`).
    SignIn,
}

/// What chose a client's group, most specific first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupFrom {
    /// An enrolled device's ID (`[[devices]]`), over DNS over TLS or HTTPS.
    Device,
    /// The signed-in person (`[[users_to_groups]]`).
    User,
    /// A `[[clients]] mac` entry.
    Mac,
    /// A `[[clients]] cidr` entry.
    Address,
    /// `[server] default_group`.
    Default,
    /// Warden's own self-test, checking the group it names.
    SelfTest,
}

impl MacFrom {
    /// As the audit log says it: "MAC from …".
    pub fn describe(self) -> &'static str {
        match self {
            MacFrom::Query => "MAC from forwarder",
            MacFrom::Lease => "MAC from DHCP lease",
            MacFrom::SignIn => "MAC from sign-in",
        }
    }
}

impl GroupFrom {
    /// As the audit log says it: "group by …".
    pub fn describe(self) -> &'static str {
        match self {
            GroupFrom::Device => "group by enrolled device ID",
            GroupFrom::User => "group by user",
            GroupFrom::Mac => "group by MAC",
            GroupFrom::Address => "group by address",
            GroupFrom::Default => "default group",
            GroupFrom::SelfTest => "self-test",
        }
    }
}

/// What is known of a client before policy applies: the device's address (the query's
/// source, or what a trusted forwarder says), a MAC a trusted forwarder gave, and who is
/// signed in there.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'s> {
    /// The device's address (`None`: asked about a person or MAC alone, as `warden check
    /// --user` may be, so no address entry applies).
    pub address: Option<IpAddr>,
    pub mac: Option<Mac>,
    pub session: Option<&'s Session>,
    /// The device ID the query came with (DoH path, DoT TLS name), if any.
    pub device_id: Option<&'s str>,
}

/// Inputs the engine has compiled already: the matcher (for category numbers) and the
/// per-group allow matchers.
pub struct Parts {
    pub allow: BTreeMap<String, Matcher>,
    pub deny: BTreeMap<String, Matcher>,
    pub leases: Leases,
    pub directory: Directory,
}

impl Policy {
    /// Compile the policy. The config has been validated, so names resolve; anything
    /// that does not is skipped rather than trusted.
    pub fn build(config: &Config, matcher: &Matcher, mut parts: Parts) -> Policy {
        let locked = matcher.locked();
        let ids = |names: &mut dyn Iterator<Item = &str>| {
            names
                .filter_map(|c| matcher.category_id(c))
                .fold(CategorySet::EMPTY, |s, id| s.with(id))
        };
        let tz = config.server.tz();
        let group_names: Vec<String> = if config.groups.is_empty() {
            vec![config.default_group().to_string()]
        } else {
            config.groups.keys().cloned().collect()
        };
        let mut groups = Vec::new();
        for name in &group_names {
            let settings = config.groups.get(name);
            let mut blocks: Vec<&str> = config.group_blocks(name).unwrap_or_default();
            let circumvention_on = settings.is_none_or(|g| *g.circumvention.get_ref());
            if circumvention_on {
                blocks.push(CIRCUMVENTION);
            } else {
                blocks.retain(|c| *c != CIRCUMVENTION);
            }
            let base = ids(&mut blocks.into_iter()).union(locked);
            let windows = settings
                .map(|g| {
                    g.schedule
                        .iter()
                        .map(|w| {
                            let block = ids(&mut w.block.iter().map(|c| c.get_ref().as_str()));
                            let allow = ids(&mut w.allow.iter().map(|c| c.get_ref().as_str()));
                            Window::new(w, block, allow)
                        })
                        .collect()
                })
                .unwrap_or_default();
            groups.push(Group {
                name: name.clone(),
                base,
                windows,
                safe_search: settings.is_some_and(|g| g.safe_search),
                youtube: settings.map(|g| g.youtube).unwrap_or_default(),
                block_response: settings.and_then(|g| g.block_response),
                allow: parts.allow.remove(name),
                deny: parts.deny.remove(name),
                cache: (AtomicU64::new(u64::MAX), AtomicU64::new(0)),
            });
        }
        let by_name: BTreeMap<String, usize> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.clone(), i))
            .collect();
        let default_group = by_name.get(config.default_group()).copied().unwrap_or(0);
        let devices = enrolled_devices(config, &by_name);
        let members = Members::build(config, &by_name);
        Policy {
            groups,
            by_name,
            default_group,
            clients: members.by_address,
            macs: members.by_mac,
            users_to_groups: members.users_to_groups,
            directory: parts.directory,
            forwarders: config
                .server
                .trusted_forwarders
                .iter()
                .map(|n| n.0)
                .collect(),
            leases: parts.leases,
            locked,
            tz,
            allowed: config.server.allow_networks.iter().map(|n| n.0).collect(),
            devices,
        }
    }

    /// The enrolled device with ID `id`, if there is one.
    pub(crate) fn enrolled(&self, id: &str) -> Option<&Enrolled> {
        self.devices.get(id)
    }

    /// May `client` use this resolver at all (`[server] allow_networks`)?
    pub(crate) fn admits(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.allowed.iter().any(|net| net.contains(&client))
    }

    /// The group and device name of `client` by its address alone (nobody signed in,
    /// no MAC given): see [`Policy::identify`].
    pub fn who(&self, client: IpAddr) -> Who<'_> {
        self.identify(&Seen {
            address: Some(client),
            mac: None,
            session: None,
            device_id: None,
        })
    }

    /// Is `source` a trusted forwarder, whose identity options are believed?
    pub(crate) fn trusts_forwarder(&self, source: IpAddr) -> bool {
        let source = source.to_canonical();
        !self.forwarders.is_empty() && self.forwarders.iter().any(|net| net.contains(&source))
    }

    /// What applies to the client `seen` describes. An enrolled device's ID decides
    /// alone: its group, its name. Otherwise the group follows the person first:
    /// the signed-in user's `[[users_to_groups]]` entry, else the device's `[[clients]]
    /// mac` entry, else the most specific `[[clients]] cidr` entry for its address, else
    /// the default group. The device's name comes from its MAC or address entry, else
    /// the DHCP leases; its MAC from the query, else the leases, else the sign-in.
    pub fn identify(&self, seen: &Seen<'_>) -> Who<'_> {
        if let Some((group, enrolled)) = seen
            .device_id
            .and_then(|id| self.enrolled(id))
            .map(|d| (d.group, d))
        {
            // An enrolled device is itself wherever it is: off site its address is a
            // stranger's, so nothing else about the query applies.
            return Who {
                group: &self.groups[group],
                group_id: group,
                device: Some(&enrolled.name),
                mac: None,
                group_from: GroupFrom::Device,
                enrolled: Some(enrolled),
            };
        }
        let address = seen.address.map(|a| a.to_canonical());
        // A lease's MAC is only as good as the address: a device that takes another's
        // address by hand takes its lease's MAC too (a MAC from the query is the
        // forwarder's own sighting).
        let lease = address.and_then(|a| self.leases.by_address.get(&a));
        let mac = seen
            .mac
            .map(|m| (m, MacFrom::Query))
            .or_else(|| lease.and_then(|l| l.mac).map(|m| (m, MacFrom::Lease)))
            .or_else(|| {
                seen.session
                    .and_then(|s| s.mac)
                    .map(|m| (m, MacFrom::SignIn))
            });
        let by_mac = mac.and_then(|(m, _)| self.macs.get(&m));
        let by_address = address.and_then(|a| self.clients.lookup(a));
        let (group, group_from) = if let Some(g) = seen.session.and_then(|s| self.user_group(s)) {
            (g, GroupFrom::User)
        } else if let Some(m) = by_mac {
            (m.group, GroupFrom::Mac)
        } else if let Some(m) = by_address {
            (m.group, GroupFrom::Address)
        } else {
            (self.default_group, GroupFrom::Default)
        };
        let device = by_mac
            .and_then(|m| m.name.as_deref())
            .or_else(|| by_address.and_then(|m| m.name.as_deref()))
            .or_else(|| lease.and_then(|l| l.name.as_deref()))
            .or_else(|| {
                mac.and_then(|(m, _)| self.leases.name_by_mac.get(&m))
                    .map(String::as_str)
            });
        Who {
            group: &self.groups[group],
            group_id: group,
            device,
            mac,
            group_from,
            enrolled: None,
        }
    }

    /// The group `[[users_to_groups]]` gives the person signed in as `session`: the
    /// first entry naming them or one of their directory groups (the sign-in's own and
    /// the directory file's).
    /// A device's own claim (an agents feed) chooses nothing.
    fn user_group(&self, session: &Session) -> Option<usize> {
        if !session.source.chooses_group() {
            return None;
        }
        let listed = self.directory.groups_of(&session.user);
        self.users_to_groups
            .iter()
            .find(|(entry, _)| {
                entry.matches(&session.user, &session.groups)
                    || entry.matches(&session.user, listed)
            })
            .map(|(_, group)| *group)
    }

    /// The directory groups known for `user` (from the directory file).
    pub(crate) fn directory_groups(&self, user: &str) -> &[String] {
        self.directory.groups_of(user)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.by_name.get(name).map(|&i| &self.groups[i])
    }

    pub fn default_group(&self) -> &Group {
        &self.groups[self.default_group]
    }

    /// The self-test checking `group` (see [`crate::dns::probe`]), if the group exists.
    pub(crate) fn self_test_who(&self, group: &str) -> Option<Who<'_>> {
        let &group_id = self.by_name.get(group)?;
        Some(Who {
            group: &self.groups[group_id],
            group_id,
            device: None,
            mac: None,
            group_from: GroupFrom::SelfTest,
            enrolled: None,
        })
    }

    /// An unnamed client of the default group.
    pub(crate) fn default_who(&self) -> Who<'_> {
        Who {
            group: self.default_group(),
            group_id: self.default_group,
            device: None,
            mac: None,
            group_from: GroupFrom::Default,
            enrolled: None,
        }
    }

    /// The categories `group` blocks now.
    pub(crate) fn active_now(&self, group: &Group) -> CategorySet {
        self.active(group, Utc::now())
    }

    /// The categories `group` blocks at `now`, cached per minute: the query path's form
    /// (the handler passes its clock's time, so tests can move it).
    pub fn active(&self, group: &Group, now: DateTime<Utc>) -> CategorySet {
        if group.windows.is_empty() {
            return group.base;
        }
        let minute = (now.timestamp() / 60) as u64;
        let (stamp, set) = &group.cache;
        // The set is stored before the stamp (release) and read after it (acquire): a
        // reader that sees this minute's stamp sees this minute's set. Two threads may
        // both recompute at a minute's turn; they store the same value.
        if stamp.load(Ordering::Acquire) == minute {
            return CategorySet(set.load(Ordering::Relaxed));
        }
        let active = self.active_at(group, now).0;
        set.store(active.0, Ordering::Relaxed);
        stamp.store(minute, Ordering::Release);
        active
    }

    /// The categories `group` blocks at `at`, and the schedule windows open then.
    pub(crate) fn active_at<'a>(
        &self,
        group: &'a Group,
        at: DateTime<Utc>,
    ) -> (CategorySet, Vec<&'a Window>) {
        schedule::active(group.base, self.locked, &group.windows, at, self.tz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> (Policy, Matcher) {
        let config = Config::parse(text, std::path::Path::new("w.toml")).unwrap();
        let mut b = crate::filter::MatcherBuilder::new();
        for (name, c) in &config.categories {
            b.add_category(name, c.locked).unwrap();
        }
        let matcher = b.build().unwrap();
        let parts = Parts {
            allow: BTreeMap::new(),
            deny: BTreeMap::new(),
            leases: Leases::default(),
            directory: Directory::default(),
        };
        (Policy::build(&config, &matcher, parts), matcher)
    }

    #[test]
    fn clients_resolve_to_groups_with_the_default_for_the_rest() {
        let (p, matcher) = policy(
            "[server]\ndefault_group = \"guests\"\n[categories.adult]\n[categories.t]\nlocked = true\n\
             [groups.guests]\nblock = [\"adult\"]\n[groups.staff]\n[groups.pupils]\nblock = [\"adult\"]\n\
             [[clients]]\ncidr = \"10.0.0.0/16\"\ngroup = \"pupils\"\n\
             [[clients]]\ncidr = \"10.0.5.0/24\"\ngroup = \"staff\"\n\
             [[clients]]\ncidr = \"10.0.5.9\"\ngroup = \"pupils\"\nname = \"kiosk\"\n\
             [[clients]]\ncidr = \"fd00:1::/48\"\ngroup = \"staff\"\n",
        );
        let table = [
            ("10.0.1.1", "pupils", None),
            ("10.0.5.1", "staff", None),
            ("10.0.5.9", "pupils", Some("kiosk")),
            ("::ffff:10.0.5.9", "pupils", Some("kiosk")),
            ("fd00:1:0:7::1", "staff", None),
            ("fd00:2::1", "guests", None),
            ("192.168.0.10", "guests", None),
        ];
        for (ip, group, device) in table {
            let who = p.who(ip.parse().unwrap());
            assert_eq!(
                (who.group.name.as_str(), who.device),
                (group, device),
                "{ip}"
            );
        }
        // Staff block nothing of their own, but the locked category and circumvention
        // are on for every group.
        let staff = p.group("staff").unwrap();
        let names: Vec<&str> = ["adult", "t", CIRCUMVENTION]
            .into_iter()
            .filter(|c| staff.base.contains(matcher.category_id(c).unwrap()))
            .collect();
        assert_eq!(names, ["t", CIRCUMVENTION]);
    }
}
