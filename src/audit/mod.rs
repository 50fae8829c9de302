//! The audit log for the e-safety lead: every block recorded, reviewable, tamper-evident,
//! and kept only as long as the data-protection policy says.
//!
//! ## Path of a block event
//! 1. The query path calls [`Sink::record`]: the event is counted into an in-memory
//!    coalescer keyed by (client, person, name, categories), a sharded map with short
//!    locks (the person: the device's MAC and the signed-in user, so two people at one
//!    address are two rows, never one counted under the first's name). The
//!    query never waits on the disk, a channel or the writer.
//! 2. The writer task ([`writer`]) owns the SQLite connection. At least once per
//!    `flush_interval` it drains the coalescer and, in one transaction, adds each key's
//!    count to its open row (a repeat within `window` of the row's first sighting) or
//!    opens a new row.
//! 3. A row whose window has closed is *sealed*: given the next chain position `seq` and
//!    `hash = SHA-256(previous hash ‖ canonical row)` ([`store`]). `warden audit verify`
//!    recomputes the chain from the newest signed checkpoint ([`checkpoint`]; `--full`
//!    from the start). Rows left open by a crash are sealed at the next start.
//! 4. Once a day the writer starts a retention purge, which deletes the personal data of
//!    rows past their retention in small batches, one per tick ([`purge`]).
//!
//! ## Nothing lost, nothing unbounded
//! The coalescer holds at most `max_pending` distinct keys between two flushes, and at
//! most `max_pending_per_client` names of any one client. Past either, a block is counted
//! into its client's overflow entry (name `*`, categories kept), and past `2 ×
//! max_pending` keys into one global overflow entry (client `0.0.0.0`). The per-client
//! bound is what keeps a flooding device (malware trying generated names, a tunnel) from
//! costing the writer thousands of rows a second and the other devices their detail. So memory is bounded by about 2 × `max_pending` entries whatever the
//! flood, and every block is still counted: the sum of `count` over all rows equals the
//! number of blocked answers; only the per-name detail of a flood's excess is folded.
//!
//! The same holds while the disk is full or failing: the writer keeps a failed batch
//! (to the same bound, folding the same way) and retries it with backoff until a commit
//! succeeds; only then are its events counted as written ([`writer`]).

mod busy_names;
pub mod checkpoint;
pub mod outbox;
pub mod personal;
pub mod purge;
#[cfg(test)]
mod reads_tests;
pub mod records;
pub mod review;
#[cfg(test)]
mod scale_tests;
pub(crate) mod select;
pub mod store;
#[doc(hidden)]
pub mod synthetic;
mod tally;
pub mod writer;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use dashmap::DashMap;

pub use store::{AuditError, Retention, Store};
pub use writer::Writer;

/// What happened to the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Outcome {
    Blocked,
    /// Only recorded when `[audit] log_allowed = true` (off by default).
    Allowed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Blocked => "blocked",
            Outcome::Allowed => "allowed",
        }
    }
}

/// One block (or, with `log_allowed`, one allowed query), as the query path saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub time: SystemTime,
    pub client: IpAddr,
    /// Device name, when known (from client config or DHCP leases, later).
    pub device: Option<String>,
    pub group: String,
    pub name: String,
    pub qtype: String,
    /// Comma-separated category names.
    pub categories: String,
    /// A locked (statutory) category decided.
    pub locked: bool,
    pub list: String,
    pub line: u32,
    pub rule: String,
    /// The answer given: `nxdomain`, `null`, `ip` (or `forwarded` when allowed).
    pub response: String,
    /// The blocked CNAME target, when the block came through a CNAME chain.
    pub cname: Option<String>,
    pub outcome: Outcome,
    /// The MAC and signed-in user, when known, and where they came from.
    pub identity: Identity,
}

/// Who asked, beyond the address and device name: personal data like them (hashed into
/// the chain with them, purged with them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// The user signed in at the address.
    pub user: Option<String>,
    /// Where the address, MAC, user and group came from, e.g. `MAC from forwarder; user
    /// from RADIUS accounting; group by user`.
    pub sources: Option<String>,
}

/// Who asked beyond the address, as far as it keeps rows apart: the device's MAC, its
/// name and the signed-in user. Two pupils at one address (one after the other on a
/// shared PC, or behind a forwarder that names no device) are two rows, each with its
/// own count; so are two enrolled devices behind one home router.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Person<'a> {
    pub mac: Option<crate::config::Mac>,
    pub user: Option<&'a str>,
    pub device: Option<&'a str>,
}

impl<'a> Person<'a> {
    /// Nobody known beyond the address (overflow entries fold people together).
    pub const NOBODY: Person<'static> = Person {
        mac: None,
        user: None,
        device: None,
    };

    /// The person `event` records (what its key was made from).
    pub fn of(event: &'a Event) -> Person<'a> {
        Person {
            mac: event
                .identity
                .mac
                .as_deref()
                .and_then(crate::config::Mac::parse),
            user: event.identity.user.as_deref(),
            device: event.device.as_deref(),
        }
    }

    /// Append to a key: a fixed layout (a MAC flag and its six octets, then the user's
    /// and the device's lengths and bytes), so no two people encode alike. `None` if
    /// `out` is full.
    fn encode<B: Extend<u8>>(&self, out: &mut B, room: impl Fn(usize) -> bool) -> Option<()> {
        let user = self.user.unwrap_or("").as_bytes();
        let device = self.device.unwrap_or("").as_bytes();
        let user_len = u16::try_from(user.len()).ok()?;
        let device_len = u16::try_from(device.len()).ok()?;
        if !room(1 + 6 + 2 + user.len() + 2 + device.len()) {
            return None;
        }
        match self.mac {
            Some(mac) => {
                out.extend([1]);
                out.extend(mac.0);
            }
            None => out.extend([0]),
        }
        out.extend(user_len.to_be_bytes());
        out.extend(user.iter().copied());
        out.extend(device_len.to_be_bytes());
        out.extend(device.iter().copied());
        Some(())
    }
}

/// The coalescing key: repeats of the same (client, person, outcome, categories, name)
/// are counted into one row. Raw bytes: address octets, person ([`Person::encode`]),
/// outcome, categories, U+001F, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key(Vec<u8>);

/// Longest key kept on the stack: 16 address octets, a person with a short user name,
/// outcome, categories (≤ 63 names of ≤ 64 bytes would be longer, but such keys simply
/// take the allocating path), separator, 253-byte name.
const KEY_INLINE: usize = 512;

/// A key built on the stack, for looking up repeats without allocating.
type KeyBuf = arrayvec::ArrayVec<u8, KEY_INLINE>;

impl Key {
    /// Encode into `out`; `None` if it does not fit (then use [`Key::new`]).
    fn encode(
        client: IpAddr,
        person: Person<'_>,
        outcome: Outcome,
        categories: &str,
        name: &str,
    ) -> Option<KeyBuf> {
        let mut out = KeyBuf::new();
        match client {
            IpAddr::V4(v4) => out.try_extend_from_slice(&v4.octets()).ok()?,
            IpAddr::V6(v6) => out.try_extend_from_slice(&v6.octets()).ok()?,
        }
        let room = out.remaining_capacity();
        person.encode(&mut out, |n| n <= room)?;
        out.try_push(outcome as u8).ok()?;
        out.try_extend_from_slice(categories.as_bytes()).ok()?;
        out.try_push(0x1f).ok()?; // categories never contain it
        out.try_extend_from_slice(name.as_bytes()).ok()?;
        Some(out)
    }

    /// The key of `client`'s overflow entry for `outcome` and `categories`.
    pub(crate) fn overflow(client: IpAddr, outcome: Outcome, categories: &str) -> Key {
        Key::new(client, Person::NOBODY, outcome, categories, OVERFLOW_NAME)
    }

    /// The key `event` is coalesced under.
    pub(crate) fn of(event: &Event) -> Key {
        if event.name == OVERFLOW_NAME {
            return Key::overflow(event.client, event.outcome, &event.categories);
        }
        let person = Person::of(event);
        Key::new(
            event.client,
            person,
            event.outcome,
            &event.categories,
            &event.name,
        )
    }

    pub(crate) fn new(
        client: IpAddr,
        person: Person<'_>,
        outcome: Outcome,
        categories: &str,
        name: &str,
    ) -> Key {
        match Key::encode(client, person, outcome, categories, name) {
            Some(buf) => Key(buf.to_vec()),
            None => {
                let mut key = Vec::with_capacity(name.len() + categories.len() + 160);
                key.extend_from_slice(&match client {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                    IpAddr::V6(v6) => v6.octets(),
                });
                // A user name longer than u16 is refused at sign-in; never here.
                let _ = person.encode(&mut key, |_| true);
                key.push(outcome as u8);
                key.extend_from_slice(categories.as_bytes());
                key.push(0x1f);
                key.extend_from_slice(name.as_bytes());
                Key(key)
            }
        }
    }
}

/// `Vec<u8>` and `[u8]` hash alike, so a map keyed by `Key` can be searched by bytes.
impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

/// Events folded under one key since the last flush.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) count: u64,
    pub(crate) first: SystemTime,
    pub(crate) last: SystemTime,
    /// The first event's details (rule, list, response…).
    pub(crate) event: Event,
}

/// Name used for a client's overflow entry (per-name detail folded under a flood).
pub(crate) const OVERFLOW_NAME: &str = "*";
/// Client of the global overflow entry.
pub(crate) const OVERFLOW_CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// The query path's handle on the audit log. Cheap to clone.
#[derive(Clone)]
pub struct Sink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    /// What was recorded since the last drain. The writer swaps in a fresh period and
    /// takes the old one once no query holds it, so it never takes a lock the query path
    /// waits on: a writer preempted inside a shard lock (it runs at the lowest priority)
    /// stalled the DNS thread, which spun and yielded the core back to it for a tick.
    period: ArcSwap<Period>,
    max_pending: usize,
    max_per_client: usize,
    received: AtomicU64,
    folded: AtomicU64,
}

/// The entries of one flush period.
#[derive(Default)]
struct Period {
    pending: DashMap<Key, Pending, foldhash::fast::RandomState>,
    /// Distinct names each client added this period (its overflow entries not counted).
    clients: DashMap<IpAddr, usize, foldhash::fast::RandomState>,
    /// Entries in `pending`, kept beside it: `DashMap::len` locks every shard, and the
    /// bound is checked for every new name of a flood.
    held: AtomicUsize,
}

impl Sink {
    /// A sink holding at most about `2 * max_pending` entries between flushes, with no
    /// bound per client beyond that.
    pub fn new(max_pending: usize) -> Sink {
        Sink::with_client_bound(max_pending, max_pending)
    }

    /// A sink that also folds a client's names past `max_per_client` distinct ones
    /// between two flushes: one device flooding distinct blocked names (malware trying
    /// generated names, a tunnel, a scanner) then costs the writer one row per flush,
    /// not thousands, and cannot crowd other devices' detail out of the bound.
    pub fn with_client_bound(max_pending: usize, max_per_client: usize) -> Sink {
        Sink {
            inner: Arc::new(SinkInner {
                period: ArcSwap::from_pointee(Period::default()),
                max_pending: max_pending.max(1),
                max_per_client: max_per_client.max(1),
                received: AtomicU64::new(0),
                folded: AtomicU64::new(0),
            }),
        }
    }

    /// Record one event. Never blocks on I/O or on the writer; takes a few shard locks
    /// of maps only other queries use. `make` builds the full event, and is only called
    /// for the first event of a key: a repeat only counts.
    pub fn record(
        &self,
        client: IpAddr,
        person: Person<'_>,
        outcome: Outcome,
        categories: &str,
        name: &str,
        make: impl FnOnce() -> Event,
    ) {
        let inner = &self.inner;
        inner.received.fetch_add(1, Ordering::Relaxed);
        let period = inner.period.load();
        // A repeat (the common case under load) only counts, and moves `last` by the
        // coarse clock: a precise reading was over 1% of a blocked query's CPU.
        let coarse = coarse_now();
        if period.count_repeat(client, person, outcome, categories, name, coarse) {
            return;
        }
        // Over a bound, fold the name into the client's overflow entry, then the client
        // into the global one: the count survives, the detail degrades.
        let fold = inner.fold_target(&period, client, outcome, categories);
        let key = match fold {
            None => Key::new(client, person, outcome, categories, name),
            Some(target) => {
                inner.folded.fetch_add(1, Ordering::Relaxed);
                // A flood's every query lands here: count it without allocating.
                let nobody = Person::NOBODY;
                if period.count_repeat(target, nobody, outcome, categories, OVERFLOW_NAME, coarse) {
                    return;
                }
                Key::overflow(target, outcome, categories)
            }
        };
        // A first sighting is evidence: the precise time.
        let time = SystemTime::now();
        let mut inserted = false;
        period
            .pending
            .entry(key)
            .and_modify(|p| {
                p.count += 1;
                p.last = p.last.max(time);
            })
            .or_insert_with(|| {
                period.held.fetch_add(1, Ordering::Relaxed);
                inserted = true;
                let mut event = make();
                event.time = time;
                if let Some(target) = fold {
                    fold_event(&mut event, target, "(flood: names folded)");
                }
                Pending {
                    count: 1,
                    first: time,
                    last: time,
                    event,
                }
            });
        if inserted && fold.is_none() {
            *period.clients.entry(client).or_insert(0) += 1;
        }
    }

    /// Take everything recorded so far. Queries record into a fresh period from the
    /// swap on; one still holding the old period finishes into it before it is taken, so
    /// no event is lost or counted twice.
    pub(crate) fn drain(&self) -> Vec<(Key, Pending)> {
        let mut old = self.inner.period.swap(Arc::new(Period::default()));
        let period = loop {
            match Arc::try_unwrap(old) {
                Ok(period) => break period,
                // A query is inside `record` (a few microseconds): let it finish.
                Err(shared) => {
                    old = shared;
                    std::thread::yield_now();
                }
            }
        };
        period.pending.into_iter().collect()
    }

    /// Events recorded since start.
    pub fn received(&self) -> u64 {
        self.inner.received.load(Ordering::Relaxed)
    }
    /// Events whose name was folded into an overflow entry.
    pub fn folded(&self) -> u64 {
        self.inner.folded.load(Ordering::Relaxed)
    }
    /// Distinct keys waiting for the writer.
    pub(crate) fn queue_depth(&self) -> usize {
        self.inner.period.load().held.load(Ordering::Relaxed)
    }
    /// The bound on distinct keys (the writer holds failed writes to the same bound).
    pub fn max_pending(&self) -> usize {
        self.inner.max_pending
    }
}

impl Period {
    /// Count one more event of the key if it is already pending; false if it is not.
    /// The key is built on the stack: no allocation.
    fn count_repeat(
        &self,
        client: IpAddr,
        person: Person<'_>,
        outcome: Outcome,
        categories: &str,
        name: &str,
        time: SystemTime,
    ) -> bool {
        let Some(buf) = Key::encode(client, person, outcome, categories, name) else {
            return false;
        };
        match self.pending.get_mut(&buf[..]) {
            Some(mut pending) => {
                pending.count += 1;
                pending.last = pending.last.max(time);
                true
            }
            None => false,
        }
    }
}

impl SinkInner {
    /// Where a new name of `client`'s goes: `None` for its own entry; the client (its
    /// overflow entry) once it or the sink is over its bound; the global overflow client
    /// once the sink holds twice its bound and the client has no overflow entry yet.
    fn fold_target(
        &self,
        period: &Period,
        client: IpAddr,
        outcome: Outcome,
        categories: &str,
    ) -> Option<IpAddr> {
        let over_client = period
            .clients
            .get(&client)
            .is_some_and(|n| *n >= self.max_per_client);
        let held = period.held.load(Ordering::Relaxed);
        if !over_client && held < self.max_pending {
            return None;
        }
        if held >= 2 * self.max_pending {
            let nobody = Person::NOBODY;
            let own = match Key::encode(client, nobody, outcome, categories, OVERFLOW_NAME) {
                Some(buf) => period.pending.contains_key(&buf[..]),
                None => period
                    .pending
                    .contains_key(&Key::overflow(client, outcome, categories)),
            };
            if !own {
                return Some(OVERFLOW_CLIENT);
            }
        }
        Some(client)
    }
}

/// Turn `event` into its overflow entry's: the name folded, under `client` (the
/// event's own, or [`OVERFLOW_CLIENT`]), the rule column saying `why`.
pub(crate) fn fold_event(event: &mut Event, client: IpAddr, why: &str) {
    event.name = OVERFLOW_NAME.to_string();
    event.client = client;
    event.rule = why.to_string();
    // Folded together, the blocks are no one person's.
    event.identity = Identity::default();
}

/// The wall clock to within a few milliseconds (the kernel's last tick), read without
/// the cost of a precise reading; `SystemTime::now()` where there is no such clock.
fn coarse_now() -> SystemTime {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the call's duration.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
            if let (Ok(secs), Ok(nanos)) = (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec)) {
                return SystemTime::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
            }
        }
    }
    SystemTime::now()
}

/// `SystemTime` as RFC 3339 UTC with milliseconds (`2026-11-22T06:58:00.123Z`). Times
/// before 1970 (which the format cannot show) are shown as 1970-01-01.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time.max(SystemTime::UNIX_EPOCH)).to_string()
}

/// `ago` before `now`, but never before 1970 (a long retention or `--since 100y`).
pub fn before(now: SystemTime, ago: std::time::Duration) -> SystemTime {
    now.checked_sub(ago)
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .max(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sink: &Sink, client: [u8; 4], name: &str) {
        let e = event(client, name);
        let recorded = e.clone();
        sink.record(
            e.client,
            Person::of(&recorded),
            e.outcome,
            &e.categories.clone(),
            &e.name.clone(),
            || e,
        );
    }

    fn event(client: [u8; 4], name: &str) -> Event {
        Event {
            time: SystemTime::now(),
            client: IpAddr::from(client),
            device: None,
            group: "default".into(),
            name: name.into(),
            qtype: "A".into(),
            categories: "adult".into(),
            locked: false,
            list: "l".into(),
            line: 1,
            rule: name.into(),
            response: "nxdomain".into(),
            cname: None,
            outcome: Outcome::Blocked,
            identity: Default::default(),
        }
    }

    #[test]
    fn coalesces_repeats_and_stays_bounded_without_losing_counts() {
        let sink = Sink::new(4);
        for _ in 0..10 {
            record(&sink, [10, 0, 0, 1], "a.test");
        }
        for i in 0..100 {
            record(&sink, [10, 0, 0, 2], &format!("n{i}.test"));
        }
        for i in 0..100u8 {
            record(&sink, [10, 0, 1, i], "z.test");
        }
        assert!(sink.queue_depth() <= 2 * 4 + 1, "{}", sink.queue_depth());
        let drained = sink.drain();
        let total: u64 = drained.iter().map(|(_, p)| p.count).sum();
        assert_eq!(total, 210, "every event counted");
        assert_eq!(sink.received(), 210);
        let a = drained
            .iter()
            .find(|(_, p)| p.event.name == "a.test")
            .unwrap();
        assert_eq!(a.1.count, 10);
        assert!(drained
            .iter()
            .any(|(_, p)| p.event.name == OVERFLOW_NAME && p.event.client == OVERFLOW_CLIENT));
        assert_eq!(sink.queue_depth(), 0);
    }

    /// Record `name` blocked for whoever `identity` names at `client`.
    fn record_person(sink: &Sink, client: [u8; 4], name: &str, identity: Identity) {
        let mut e = event(client, name);
        e.identity = identity;
        let recorded = e.clone();
        sink.record(
            e.client,
            Person::of(&recorded),
            e.outcome,
            "adult",
            name,
            || e,
        );
    }

    #[test]
    fn two_people_at_one_address_are_two_rows_each_with_its_own_count() {
        let sink = Sink::new(100);
        let as_user = |user: &str| Identity {
            user: Some(user.to_string()),
            ..Identity::default()
        };
        let as_mac = |mac: &str| Identity {
            mac: Some(mac.to_string()),
            ..Identity::default()
        };
        for _ in 0..3 {
            record_person(&sink, [10, 0, 0, 1], "x.test", as_user("pupil7"));
        }
        record_person(&sink, [10, 0, 0, 1], "x.test", as_user("pupil8"));
        record_person(&sink, [10, 0, 0, 1], "x.test", as_mac("aa:bb:cc:dd:ee:01"));
        record_person(&sink, [10, 0, 0, 1], "x.test", as_mac("aa:bb:cc:dd:ee:02"));
        record_person(&sink, [10, 0, 0, 1], "x.test", Identity::default());
        let drained = sink.drain();
        let counts: HashMap<(Option<String>, Option<String>), u64> = drained
            .iter()
            .map(|(key, p)| {
                assert_eq!(key, &Key::of(&p.event), "each row sits under its own key");
                let who = (p.event.identity.user.clone(), p.event.identity.mac.clone());
                (who, p.count)
            })
            .collect();
        assert_eq!(counts.len(), 5, "{counts:?}");
        assert_eq!(counts[&(Some("pupil7".to_string()), None)], 3);
        assert_eq!(counts[&(Some("pupil8".to_string()), None)], 1);
        assert_eq!(counts[&(None, Some("aa:bb:cc:dd:ee:02".to_string()))], 1);
        // A user name no longer than u16 but past the inline key still keys apart.
        let long = "u".repeat(600);
        record_person(&sink, [10, 0, 0, 1], "x.test", as_user(&long));
        record_person(&sink, [10, 0, 0, 1], "x.test", as_user(&long));
        record_person(&sink, [10, 0, 0, 1], "x.test", as_user(&format!("{long}v")));
        let drained = sink.drain();
        assert_eq!(drained.len(), 2);
        assert_eq!(drained.iter().map(|(_, p)| p.count).sum::<u64>(), 3);
    }

    fn record_as(sink: &Sink, client: IpAddr, name: &str) {
        let mut e = event([0, 0, 0, 0], name);
        e.client = client;
        sink.record(client, Person::NOBODY, e.outcome, "adult", name, || {
            e.clone()
        });
    }

    /// Named (not folded) entries per client in a drain.
    fn named_per_client(drained: &[(Key, Pending)]) -> HashMap<IpAddr, usize> {
        let mut named = HashMap::new();
        for (_, p) in drained {
            if p.event.name != OVERFLOW_NAME {
                *named.entry(p.event.client).or_insert(0) += 1;
            }
        }
        named
    }

    use std::collections::HashMap;

    #[test]
    fn a_flooding_client_is_folded_at_its_bound_and_others_keep_their_detail() {
        let sink = Sink::with_client_bound(1000, 10);
        let flooder = IpAddr::from([10, 0, 0, 9]);
        let other = IpAddr::from([10, 0, 0, 2]);
        for i in 0..500 {
            record_as(&sink, flooder, &format!("dga{i}.test"));
            if i % 10 == 0 {
                record_as(&sink, other, &format!("n{}.test", i / 10));
            }
        }
        // A name already pending keeps counting under its own key.
        record_as(&sink, flooder, "dga0.test");
        // The flooder's 490 names past its bound, the other client's 40 past its own.
        assert_eq!(sink.folded(), 490 + 40);
        let drained = sink.drain();
        let named = named_per_client(&drained);
        assert_eq!(named[&flooder], 10);
        assert_eq!(named[&other], 10, "the other client's bound is its own");
        let overflow = drained
            .iter()
            .find(|(_, p)| p.event.client == flooder && p.event.name == OVERFLOW_NAME)
            .expect("the flooder's overflow entry");
        assert_eq!(overflow.1.count, 490);
        assert_eq!(overflow.1.event.rule, "(flood: names folded)");
        let first = drained
            .iter()
            .find(|(_, p)| p.event.name == "dga0.test")
            .unwrap();
        assert_eq!(first.1.count, 2);
        let total: u64 = drained.iter().map(|(_, p)| p.count).sum();
        assert_eq!(total, sink.received());
        // The bound is per flush: the next period keeps ten new names again.
        for i in 500..520 {
            record_as(&sink, flooder, &format!("dga{i}.test"));
        }
        assert_eq!(named_per_client(&sink.drain())[&flooder], 10);
        assert_eq!(sink.queue_depth(), 0);
    }

    /// Drains racing with queries on other threads: every event is taken exactly once,
    /// from whichever period it landed in.
    #[test]
    fn drains_racing_with_records_lose_and_double_count_nothing() {
        let sink = Sink::with_client_bound(50, 5);
        let per_thread = 20_000u64;
        let recorders: Vec<_> = (0..3u8)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        let name = format!("n{}.test", i % 97);
                        record_as(&sink, IpAddr::from([10, 2, 0, t]), &name);
                    }
                })
            })
            .collect();
        let mut taken = 0u64;
        while recorders.iter().any(|r| !r.is_finished()) {
            taken += sink.drain().iter().map(|(_, p)| p.count).sum::<u64>();
        }
        for r in recorders {
            r.join().unwrap();
        }
        taken += sink.drain().iter().map(|(_, p)| p.count).sum::<u64>();
        assert_eq!(taken, 3 * per_thread);
        assert_eq!(sink.received(), 3 * per_thread);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the events and bounds: every event is counted exactly once across
        /// the drains; between two drains no client keeps more than its bound of named
        /// entries, and the sink holds at most 2 × its bound plus one global overflow
        /// entry (one categories set here).
        #[test]
        fn counts_survive_and_bounds_hold(
            max_pending in 1usize..40,
            per_client in 1usize..12,
            periods in proptest::collection::vec(
                proptest::collection::vec((0u8..20, 0u16..60), 0..300),
                1..4,
            ),
        ) {
            let sink = Sink::with_client_bound(max_pending, per_client);
            let mut total = 0u64;
            let mut sent = 0u64;
            for period in &periods {
                for (client, name) in period {
                    record_as(&sink, IpAddr::from([10, 1, 0, *client]), &format!("n{name}.test"));
                    sent += 1;
                }
                proptest::prop_assert!(sink.queue_depth() <= 2 * max_pending + 1);
                let drained = sink.drain();
                let named = named_per_client(&drained);
                for (client, n) in &named {
                    proptest::prop_assert!(*n <= per_client, "{} named entries for {}", n, client);
                }
                // Distinct names per client this period; if the entries they make
                // (named up to the bound, one overflow past it) fit the sink's bound,
                // only the per-client bound folded: each client keeps exactly its first
                // `per_client` names.
                let mut distinct: HashMap<u8, std::collections::HashSet<u16>> = HashMap::new();
                for (client, name) in period {
                    distinct.entry(*client).or_default().insert(*name);
                }
                let entries: usize = distinct
                    .values()
                    .map(|d| d.len().min(per_client) + usize::from(d.len() > per_client))
                    .sum();
                if entries <= max_pending {
                    for (client, d) in &distinct {
                        let ip = IpAddr::from([10, 1, 0, *client]);
                        proptest::prop_assert_eq!(named.get(&ip).copied(), Some(d.len().min(per_client)));
                    }
                }
                total += drained.iter().map(|(_, p)| p.count).sum::<u64>();
            }
            proptest::prop_assert_eq!(total, sent);
            proptest::prop_assert_eq!(sink.received(), sent);
            proptest::prop_assert_eq!(sink.queue_depth(), 0);
        }
    }
}
