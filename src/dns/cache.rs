//! The answer cache: allowed upstream answers kept as the very bytes we sent, so a
//! repeat question over UDP is answered by copying them and patching the ID, flags,
//! question case, TTLs and buffer size. No decoding, no record copies, no trip through
//! the resolver (whose own cache stays behind this one, for TCP and for misses).
//!
//! An entry is keyed by what decided the answer as well as by the question: the
//! client's group and the categories active for it now (a CNAME target blocked for one
//! group may be allowed for another, or at another hour), the query type, and the
//! client's EDNS (sent or not, DO bit). Each entry remembers the engine snapshot that
//! allowed it and is never served under another, so a reload takes effect at once. An
//! entry is fresh for its smallest TTL; the TTLs sent count down with its age.
//!
//! Memory is bounded by `[upstream] cache_size` entries (each at most one 1232-octet
//! answer and its key); when full, expired entries are swept out (at most once a
//! second), and a new answer that still does not fit is simply not kept. A reload may
//! change the bound ([`AnswerCache::set_capacity`]): a lower one applies as the
//! entries of the old snapshot are swept out, which they are at the first sweep.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use dashmap::DashMap;

use super::wire::{self, Layout, Query};
use crate::filter::CategorySet;

/// A cache key built on the stack: group, active categories, type, EDNS, then the
/// question's name in lower case (at most 255 octets).
pub type Key = ArrayVec<u8, 272>;

/// How often a full cache may be swept for expired entries.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The key for `query` from a client in group number `group` with `active` categories.
pub fn key(group: usize, active: CategorySet, query: &Query<'_>) -> Key {
    let mut key = Key::new();
    let edns = match query.edns {
        None => 0u8,
        Some(e) if e.dnssec_ok => 2,
        Some(_) => 1,
    };
    // The fixed part is 15 octets and a checked name at most 255: this always fits.
    let _ = key.try_extend_from_slice(&(group as u32).to_le_bytes());
    let _ = key.try_extend_from_slice(&active.0.to_le_bytes());
    let _ = key.try_extend_from_slice(&query.qtype.to_le_bytes());
    let _ = key.try_push(edns);
    for &b in query.name_wire() {
        let _ = key.try_push(b.to_ascii_lowercase());
    }
    key
}

struct Entry {
    bytes: Box<[u8]>,
    layout: Layout,
    authentic: bool,
    stored: Instant,
    /// Seconds it stays fresh: its smallest TTL.
    fresh_for: u32,
    /// The engine snapshot that allowed it.
    generation: u64,
}

impl Entry {
    fn age(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.stored).as_secs() as u32
    }
    fn fresh(&self, now: Instant, generation: u64) -> bool {
        self.generation == generation && self.age(now) < self.fresh_for
    }
}

/// Allowed answers by question and policy, as sent.
pub(crate) struct AnswerCache {
    entries: DashMap<Box<[u8]>, Entry, foldhash::fast::RandomState>,
    /// Most entries kept; a reload may change it while queries run.
    capacity: AtomicUsize,
    last_sweep: Mutex<Option<Instant>>,
}

impl AnswerCache {
    /// A cache of at most `capacity` answers (0 keeps none).
    pub fn new(capacity: usize) -> AnswerCache {
        AnswerCache {
            entries: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            capacity: AtomicUsize::new(capacity),
            last_sweep: Mutex::new(None),
        }
    }

    /// Keep at most `capacity` answers from now on (0 keeps none). Cheap when it does
    /// not change: the cache line is only written on a change.
    pub(crate) fn set_capacity(&self, capacity: usize) {
        if self.capacity.load(Ordering::Relaxed) != capacity {
            self.capacity.store(capacity, Ordering::Relaxed);
        }
    }

    /// Write the kept answer for `key`, patched for `query`, into `out` and say so;
    /// `false` if there is none fresh under snapshot `generation`, or it is too big for
    /// this client's buffer (the general path then truncates it properly).
    pub fn answer(
        &self,
        key: &[u8],
        query: &Query<'_>,
        generation: u64,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(entry) = self.entries.get(key) else {
            return false;
        };
        if !entry.fresh(now, generation) || entry.bytes.len() > usize::from(query.max_udp_payload())
        {
            return false;
        }
        out.clear();
        out.extend_from_slice(&entry.bytes);
        wire::patch(out, query, &entry.layout, entry.age(now), entry.authentic);
        true
    }

    /// Keep `response` (as written by [`wire::write_reply`], not truncated) under `key`,
    /// if it has a TTL to count down and there is room.
    pub fn insert(
        &self,
        key: &[u8],
        response: &[u8],
        authentic: bool,
        generation: u64,
        now: Instant,
    ) {
        let capacity = self.capacity.load(Ordering::Relaxed);
        if capacity == 0 {
            return;
        }
        let Some(layout) = Layout::of(response) else {
            return;
        };
        let fresh_for = layout.ttls.iter().map(|&(_, ttl)| ttl).min().unwrap_or(0);
        if fresh_for == 0 {
            return; // nothing says how long it may be kept
        }
        if self.entries.len() >= capacity && !self.entries.contains_key(key) {
            self.sweep(now, generation);
            if self.entries.len() >= capacity {
                return;
            }
        }
        self.entries.insert(
            key.into(),
            Entry {
                bytes: response.into(),
                layout,
                authentic,
                stored: now,
                fresh_for,
                generation,
            },
        );
    }

    /// Drop expired entries and those of older snapshots, at most once a second.
    fn sweep(&self, now: Instant, generation: u64) {
        {
            let mut last = crate::sync::lock(&self.last_sweep);
            if last.is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY) {
                return;
            }
            *last = Some(now);
        }
        self.entries.retain(|_, entry| entry.fresh(now, generation));
    }

    #[cfg(test)]
    /// Answers kept (fresh or not yet swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::answer::Reply;
    use crate::metrics::QueryOutcome;
    use hickory_server::proto::op::{Edns, Message, Query as HQuery, ResponseCode};
    use hickory_server::proto::rr::rdata::A;
    use hickory_server::proto::rr::{Name, RData, Record, RecordType};

    fn packet(name: &str, id: u16, edns: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.add_query(HQuery::query(
            Name::from_ascii(name).unwrap(),
            RecordType::A,
        ));
        if edns {
            m.set_edns(Edns::new());
        }
        m.to_vec().unwrap()
    }

    fn response(query: &Query<'_>, ttl: u32) -> Vec<u8> {
        let record = Record::from_rdata(query.name().unwrap(), ttl, RData::A(A::new(192, 0, 2, 1)));
        let reply = Reply {
            rcode: ResponseCode::NoError,
            answers: vec![record],
            authorities: Vec::new(),
            ede: None,
            authentic: false,
            outcome: QueryOutcome::Allowed,
        };
        let mut out = Vec::new();
        wire::write_reply(query, &reply, query.max_udp_payload(), &mut out);
        out
    }

    #[test]
    fn serves_a_kept_answer_until_its_ttl_runs_out() {
        let cache = AnswerCache::new(10);
        let first = packet("a.test.", 1, false);
        let q = Query::parse(&first).unwrap();
        let k = key(0, CategorySet::EMPTY, &q);
        let t0 = Instant::now();
        cache.insert(&k, &response(&q, 60), false, 7, t0);

        let again = packet("A.test.", 2, false);
        let q2 = Query::parse(&again).unwrap();
        let k2 = key(0, CategorySet::EMPTY, &q2);
        assert_eq!(k, k2, "case does not matter");
        let mut out = Vec::new();
        assert!(cache.answer(&k2, &q2, 7, t0 + Duration::from_secs(20), &mut out));
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 2);
        assert_eq!(m.answers[0].ttl, 40);
        assert!(
            !cache.answer(&k2, &q2, 7, t0 + Duration::from_secs(60), &mut out),
            "expired"
        );
        assert!(!cache.answer(&k2, &q2, 8, t0, &mut out), "another snapshot");
    }

    #[test]
    fn keys_by_group_categories_and_edns() {
        let plain = packet("a.test.", 1, false);
        let with_edns = packet("a.test.", 1, true);
        let (q, qe) = (
            Query::parse(&plain).unwrap(),
            Query::parse(&with_edns).unwrap(),
        );
        let base = key(0, CategorySet::EMPTY, &q);
        assert_ne!(base, key(1, CategorySet::EMPTY, &q));
        assert_ne!(base, key(0, CategorySet(4), &q));
        assert_ne!(base, key(0, CategorySet::EMPTY, &qe));
    }

    #[test]
    fn stays_within_capacity_and_keeps_no_zero_ttl() {
        let cache = AnswerCache::new(2);
        let now = Instant::now();
        for (i, name) in ["a.test.", "b.test.", "c.test."].iter().enumerate() {
            let p = packet(name, 1, false);
            let q = Query::parse(&p).unwrap();
            cache.insert(
                &key(0, CategorySet::EMPTY, &q),
                &response(&q, 60),
                false,
                1,
                now,
            );
            assert_eq!(cache.len(), (i + 1).min(2));
        }
        let p = packet("d.test.", 1, false);
        let q = Query::parse(&p).unwrap();
        let zero = AnswerCache::new(10);
        zero.insert(
            &key(0, CategorySet::EMPTY, &q),
            &response(&q, 0),
            false,
            1,
            now,
        );
        assert!(zero.is_empty());
        // Once the kept ones expire, a sweep makes room.
        let later = now + Duration::from_secs(61);
        cache.insert(
            &key(0, CategorySet::EMPTY, &q),
            &response(&q, 60),
            false,
            1,
            later,
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_new_capacity_applies_to_the_next_snapshot_s_answers() {
        let cache = AnswerCache::new(10);
        let now = Instant::now();
        let keep = |name: &str, generation: u64| {
            let p = packet(name, 1, false);
            let q = Query::parse(&p).unwrap();
            let k = key(0, CategorySet::EMPTY, &q);
            cache.insert(&k, &response(&q, 60), false, generation, now);
        };
        for name in ["a.test.", "b.test.", "c.test.", "d.test."] {
            keep(name, 1);
        }
        assert_eq!(cache.len(), 4);
        // A reload lowers the bound: the old snapshot's answers make way, and no more
        // than two of the new one's are kept.
        cache.set_capacity(2);
        for name in ["e.test.", "f.test.", "g.test."] {
            keep(name, 2);
        }
        assert_eq!(cache.len(), 2);
        // 0 keeps nothing new.
        cache.set_capacity(0);
        keep("h.test.", 3);
        assert_eq!(cache.len(), 2);
    }
}
