//! The audit log for the e-safety lead: every block recorded, reviewable, tamper-evident,
//! and kept only as long as the data-protection policy says.
//!
//! ## Path of a block event
//! 1. The query path calls [`Sink::record`]: the event is counted into an in-memory
//!    coalescer keyed by (client, name, categories), a sharded map with short locks. The
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
//! The coalescer holds at most `max_pending` distinct keys between two flushes. Past
//! that, a block is counted into its client's overflow entry (name `*`, categories
//! kept), and past `max_pending` clients into one global overflow entry (client
//! `0.0.0.0`). So memory is bounded by about 2 × `max_pending` entries whatever the
//! flood, and every block is still counted: the sum of `count` over all rows equals the
//! number of blocked answers; only the per-name detail of a flood's excess is folded.
//!
//! The same holds while the disk is full or failing: the writer keeps a failed batch
//! (to the same bound, folding the same way) and retries it with backoff until a commit
//! succeeds; only then are its events counted as written ([`writer`]).

pub mod checkpoint;
pub mod purge;
#[cfg(test)]
mod reads_tests;
pub mod records;
pub mod review;
#[cfg(test)]
mod scale_tests;
mod select;
pub mod store;
#[doc(hidden)]
pub mod synthetic;
mod tally;
pub mod writer;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;

pub use store::{AuditError, Store};
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
}

/// The coalescing key: repeats of the same (client, outcome, categories, name) are counted
/// into one row. Raw bytes: address octets, outcome, categories, U+001F, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key(Vec<u8>);

/// Longest key: 16 address octets, outcome, categories (≤ 63 names of ≤ 64 bytes would be
/// longer, but such keys simply take the allocating path), separator, 253-byte name.
const KEY_INLINE: usize = 512;

/// A key built on the stack, for looking up repeats without allocating.
type KeyBuf = arrayvec::ArrayVec<u8, KEY_INLINE>;

impl Key {
    /// Encode into `out`; `None` if it does not fit (then use [`Key::new`]).
    fn encode(client: IpAddr, outcome: Outcome, categories: &str, name: &str) -> Option<KeyBuf> {
        let mut out = KeyBuf::new();
        match client {
            IpAddr::V4(v4) => out.try_extend_from_slice(&v4.octets()).ok()?,
            IpAddr::V6(v6) => out.try_extend_from_slice(&v6.octets()).ok()?,
        }
        out.try_push(outcome as u8).ok()?;
        out.try_extend_from_slice(categories.as_bytes()).ok()?;
        out.try_push(0x1f).ok()?; // categories never contain it
        out.try_extend_from_slice(name.as_bytes()).ok()?;
        Some(out)
    }

    /// The key of `client`'s overflow entry for `outcome` and `categories`.
    pub(crate) fn overflow(client: IpAddr, outcome: Outcome, categories: &str) -> Key {
        Key::new(client, outcome, categories, OVERFLOW_NAME)
    }

    pub(crate) fn new(client: IpAddr, outcome: Outcome, categories: &str, name: &str) -> Key {
        match Key::encode(client, outcome, categories, name) {
            Some(buf) => Key(buf.to_vec()),
            None => {
                let mut key = Vec::with_capacity(name.len() + categories.len() + 18);
                key.extend_from_slice(&match client {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                    IpAddr::V6(v6) => v6.octets(),
                });
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
    pending: DashMap<Key, Pending, foldhash::fast::RandomState>,
    max_pending: usize,
    received: AtomicU64,
    folded: AtomicU64,
}

impl Sink {
    /// A sink holding at most about `2 * max_pending` entries between flushes.
    pub fn new(max_pending: usize) -> Sink {
        Sink {
            inner: Arc::new(SinkInner {
                pending: DashMap::with_hasher(foldhash::fast::RandomState::default()),
                max_pending: max_pending.max(1),
                received: AtomicU64::new(0),
                folded: AtomicU64::new(0),
            }),
        }
    }

    /// Record one event. Never blocks on I/O; takes one shard lock of the map. `make`
    /// builds the full event, and is only called for the first event of a key: a repeat
    /// only counts.
    pub fn record(
        &self,
        client: IpAddr,
        outcome: Outcome,
        categories: &str,
        name: &str,
        make: impl FnOnce() -> Event,
    ) {
        let inner = &self.inner;
        inner.received.fetch_add(1, Ordering::Relaxed);
        let time = SystemTime::now();
        // A repeat (the common case under load) only counts: look it up without
        // allocating, from a key built on the stack.
        if let Some(buf) = Key::encode(client, outcome, categories, name) {
            if let Some(mut pending) = inner.pending.get_mut(&buf[..]) {
                pending.count += 1;
                pending.last = pending.last.max(time);
                return;
            }
        }
        let mut key = Key::new(client, outcome, categories, name);
        // Over the bound, fold the name into the client's overflow entry, then the
        // client into the global one: the count survives, the detail degrades.
        let mut fold = None;
        if inner.pending.len() >= inner.max_pending {
            inner.folded.fetch_add(1, Ordering::Relaxed);
            let mut overflow_client = client;
            key = Key::new(client, outcome, categories, OVERFLOW_NAME);
            if inner.pending.len() >= 2 * inner.max_pending && !inner.pending.contains_key(&key) {
                overflow_client = OVERFLOW_CLIENT;
                key = Key::new(OVERFLOW_CLIENT, outcome, categories, OVERFLOW_NAME);
            }
            fold = Some(overflow_client);
        }
        inner
            .pending
            .entry(key)
            .and_modify(|p| {
                p.count += 1;
                p.last = p.last.max(time);
            })
            .or_insert_with(|| {
                let mut event = make();
                event.time = time;
                if let Some(overflow_client) = fold {
                    fold_event(&mut event, overflow_client, "(flood: names folded)");
                }
                Pending {
                    count: 1,
                    first: time,
                    last: time,
                    event,
                }
            });
    }

    /// Take everything recorded so far. Events recorded meanwhile land in fresh entries
    /// and are taken by the next drain, so none is lost or counted twice.
    pub(crate) fn drain(&self) -> Vec<(Key, Pending)> {
        let keys: Vec<Key> = self.inner.pending.iter().map(|e| e.key().clone()).collect();
        keys.into_iter()
            .filter_map(|k| self.inner.pending.remove(&k))
            .collect()
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
        self.inner.pending.len()
    }
    /// The bound on distinct keys (the writer holds failed writes to the same bound).
    pub fn max_pending(&self) -> usize {
        self.inner.max_pending
    }
}

/// Turn `event` into its overflow entry's: the name folded, under `client` (the
/// event's own, or [`OVERFLOW_CLIENT`]), the rule column saying `why`.
pub(crate) fn fold_event(event: &mut Event, client: IpAddr, why: &str) {
    event.name = OVERFLOW_NAME.to_string();
    event.client = client;
    event.rule = why.to_string();
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
        sink.record(
            e.client,
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
}
