//! Per-client limits, so one looping or hostile device cannot starve the others:
//! - [`RateLimiter`]: a token bucket per client address for queries (UDP and TCP), so
//!   one device cannot flood upstream or the audit log;
//! - [`ConnectionTable`]: the open TCP connections, so one device holding many idle
//!   connections cannot lock everyone else out of TCP (the only way to fetch a
//!   truncated answer).
//!
//! Buckets live in a sharded map (one short lock per query, on the client's shard only).
//! The map is bounded: when it holds more than [`MAX_CLIENTS`] buckets, those idle long
//! enough to have refilled are swept out (a full bucket and a missing one behave the
//! same), so a spoofed-source flood costs bounded memory.
//!
//! The connection table keeps what unbound and dnsdist keep: a cap per client address,
//! a cap for everyone, and the idle connections ordered by when they went idle. At the
//! cap the oldest idle connection is closed to make room, so a newcomer is refused only
//! when every open connection is busy with a query; above three quarters of the cap the
//! idle timeout drops to [`ConnectionLimits::pressure_idle`], so a crowd of idle
//! connections drains within seconds. The table is plain data driven by the caller's
//! clock (the TCP listener in [`super::tcp`] holds it under a mutex), so its promises
//! are tested here without sockets or sleeps.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

/// Buckets kept before a sweep of idle ones.
pub(crate) const MAX_CLIENTS: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by client address (or by another key: an enrolled device's ID).
#[derive(Debug)]
pub(crate) struct RateLimiter<K: Eq + Hash = IpAddr> {
    buckets: DashMap<K, Bucket, foldhash::fast::RandomState>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    pub fn new() -> RateLimiter<K> {
        RateLimiter {
            buckets: DashMap::default(),
        }
    }

    /// May `client` ask one more query now, at `qps` sustained with bursts of `burst`?
    pub fn allow(&self, client: K, qps: f64, burst: f64, now: Instant) -> bool {
        if self.buckets.len() > MAX_CLIENTS {
            self.sweep(qps, burst, now);
        }
        let mut bucket = self.buckets.entry(client).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * qps).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forget buckets that would be full again by now.
    fn sweep(&self, qps: f64, burst: f64, now: Instant) {
        let refill = if qps > 0.0 {
            burst / qps
        } else {
            f64::INFINITY
        };
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last).as_secs_f64() < refill);
    }

    #[cfg(test)]
    pub fn clients(&self) -> usize {
        self.buckets.len()
    }
}

/// The limits a [`ConnectionTable`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    /// Open connections at once, all clients together (at least 1).
    pub max: usize,
    /// Open connections at once from one client address (at least 1).
    pub per_client: usize,
    /// How long a connection may sit idle.
    pub idle: Duration,
    /// How long it may sit idle while more than three quarters of `max` are open.
    pub pressure_idle: Duration,
}

/// Names one connection in a [`ConnectionTable`]; never reused.
pub(crate) type ConnectionId = u64;

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("the client already holds {0} TCP connections (tcp_connections_per_client)")]
    ClientLimit(usize),
    #[error("all {0} TCP connections are busy with queries (tcp_max_connections)")]
    Full(usize),
}

/// A connection let in, and how many idle ones were closed to make room for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admitted {
    pub id: ConnectionId,
    pub evicted: usize,
}

/// What an idle connection should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdleCheck {
    /// Close: idle too long, or already closed by the table (evicted).
    Close,
    /// Still welcome: ask again at this time.
    At(Instant),
}

/// Busy connections re-check at least this far apart (even with a zero idle timeout).
const MIN_POLL: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Entry {
    client: IpAddr,
    /// Queries read and not yet answered (and a message being read).
    busy: u32,
    /// When it last went idle (or was opened); meaningful while `busy == 0`.
    since: Instant,
    /// Cancelled when the table closes the connection.
    close: CancellationToken,
}

/// The open TCP connections: who holds them, which are busy, and which have been idle
/// longest. Invariants, after every call: at most `max` open; at most `per_client` open
/// per client address; a busy connection is never closed by the table.
#[derive(Debug)]
pub(crate) struct ConnectionTable {
    limits: ConnectionLimits,
    next: ConnectionId,
    open: HashMap<ConnectionId, Entry>,
    /// The idle connections, oldest first.
    idle: BTreeSet<(Instant, ConnectionId)>,
    per_client: HashMap<IpAddr, usize>,
}

impl ConnectionTable {
    pub fn new(limits: ConnectionLimits) -> ConnectionTable {
        ConnectionTable {
            limits: at_least_one(limits),
            next: 0,
            open: HashMap::new(),
            idle: BTreeSet::new(),
            per_client: HashMap::new(),
        }
    }

    /// Enforce `limits` from now on (a reload changed them). Open connections stay open:
    /// above a lowered cap, idle ones are closed as newcomers need their slots (or by
    /// the idle timeout); a client above its lowered own cap gets no new connection
    /// until it is below it. A new idle timeout applies at each connection's next idle
    /// check (at most [`ConnectionLimits::pressure_idle`] away).
    pub(crate) fn set_limits(&mut self, limits: ConnectionLimits) {
        self.limits = at_least_one(limits);
    }

    #[cfg(test)]
    /// The limits enforced now.
    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Let a new connection from `client` in at `now`, closing idle ones if needed:
    /// under pressure every one idle longer than `pressure_idle`, and at the cap the
    /// oldest idle one. `close` is cancelled when the table later closes this one.
    pub(crate) fn admit(
        &mut self,
        client: IpAddr,
        close: CancellationToken,
        now: Instant,
    ) -> Result<Admitted, Refusal> {
        let held = self.held_by(client);
        if held >= self.limits.per_client {
            return Err(Refusal::ClientLimit(held));
        }
        let mut evicted = 0;
        // With this one in, would the table be under pressure? Then the short idle
        // timeout applies from now: close those already past it.
        if (self.open.len() + 1) * 4 > self.limits.max * 3 {
            let cutoff = now.checked_sub(self.limits.pressure_idle);
            while let Some(&(since, id)) = self.idle.first() {
                if cutoff.is_none_or(|cutoff| since > cutoff) {
                    break;
                }
                self.evict(id);
                evicted += 1;
            }
        }
        while self.open.len() >= self.limits.max {
            let Some(&(_, oldest)) = self.idle.first() else {
                return Err(Refusal::Full(self.open.len()));
            };
            self.evict(oldest);
            evicted += 1;
        }
        let id = self.next;
        self.next += 1;
        self.open.insert(
            id,
            Entry {
                client,
                busy: 0,
                since: now,
                close,
            },
        );
        self.idle.insert((now, id));
        *self.per_client.entry(client).or_insert(0) += 1;
        Ok(Admitted { id, evicted })
    }

    /// Connection `id` started a message: it is busy, and not closed for idleness until
    /// it is idle again. `false` if the table has closed it already.
    pub(crate) fn begin(&mut self, id: ConnectionId) -> bool {
        let Some(entry) = self.open.get_mut(&id) else {
            return false;
        };
        if entry.busy == 0 {
            self.idle.remove(&(entry.since, id));
        }
        entry.busy = entry.busy.saturating_add(1);
        true
    }

    /// One message of connection `id` is done with (answered, or dropped); with none
    /// left it is idle from `now`.
    pub fn end(&mut self, id: ConnectionId, now: Instant) {
        let Some(entry) = self.open.get_mut(&id) else {
            return;
        };
        entry.busy = entry.busy.saturating_sub(1);
        if entry.busy == 0 {
            entry.since = now;
            self.idle.insert((now, id));
        }
    }

    /// Connection `id` has closed (a no-op if the table closed it).
    pub fn close(&mut self, id: ConnectionId) {
        let Some(entry) = self.open.remove(&id) else {
            return;
        };
        if entry.busy == 0 {
            self.idle.remove(&(entry.since, id));
        }
        if let Some(held) = self.per_client.get_mut(&entry.client) {
            *held -= 1;
            if *held == 0 {
                self.per_client.remove(&entry.client);
            }
        }
    }

    /// Close `id` on the table's initiative: it leaves the table now (its slot is free
    /// at once) and its task is told through its token.
    fn evict(&mut self, id: ConnectionId) {
        if let Some(entry) = self.open.get(&id) {
            entry.close.cancel();
        }
        self.close(id);
    }

    /// Should connection `id` close for idleness at `now`, and if not, when to ask
    /// again. A busy connection is asked again a short while later (it may be idle by
    /// then, and pressure may have come meanwhile). A connection told to close leaves
    /// the table at once, so the next one asked sees the pressure it leaves behind.
    pub(crate) fn idle_check(&mut self, id: ConnectionId, now: Instant) -> IdleCheck {
        let check = self.idle_due(id, now);
        if check == IdleCheck::Close {
            self.evict(id);
        }
        check
    }

    fn idle_due(&self, id: ConnectionId, now: Instant) -> IdleCheck {
        let Some(entry) = self.open.get(&id) else {
            return IdleCheck::Close;
        };
        let short = self.limits.pressure_idle.min(self.limits.idle);
        let recheck = |at: Option<Instant>| {
            IdleCheck::At(at.unwrap_or_else(|| now + Duration::from_secs(3600)))
        };
        if entry.busy > 0 {
            return recheck(now.checked_add(short.max(MIN_POLL)));
        }
        let limit = if self.pressured() {
            short
        } else {
            self.limits.idle
        };
        let due = entry.since.checked_add(limit);
        if due.is_some_and(|due| due <= now) {
            return IdleCheck::Close;
        }
        // Not under pressure: look again when the short timeout would be up, in case
        // pressure has come by then.
        match entry.since.checked_add(short) {
            Some(early) if early > now && due.is_none_or(|due| early < due) => IdleCheck::At(early),
            _ => recheck(due),
        }
    }

    /// More than three quarters of the cap open.
    pub(crate) fn pressured(&self) -> bool {
        self.open.len() * 4 > self.limits.max * 3
    }

    #[cfg(test)]
    /// Connections open.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// Connections open from `client`.
    pub(crate) fn held_by(&self, client: IpAddr) -> usize {
        self.per_client.get(&client).copied().unwrap_or(0)
    }
}

/// `limits` with both caps at least 1 (a cap of 0 would refuse every connection).
fn at_least_one(limits: ConnectionLimits) -> ConnectionLimits {
    ConnectionLimits {
        max: limits.max.max(1),
        per_client: limits.per_client.max(1),
        ..limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_burst_then_the_sustained_rate_per_client() {
        let limiter = RateLimiter::new();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        let allowed = (0..30).filter(|_| limiter.allow(a, 10.0, 20.0, t0)).count();
        assert_eq!(allowed, 20, "the burst");
        assert!(
            limiter.allow(b, 10.0, 20.0, t0),
            "another client is unaffected"
        );
        // Half a second later, five more tokens.
        let t1 = t0 + Duration::from_millis(500);
        let allowed = (0..30).filter(|_| limiter.allow(a, 10.0, 20.0, t1)).count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn idle_buckets_are_swept_when_the_map_is_full() {
        let limiter = RateLimiter::new();
        let t0 = Instant::now();
        for i in 0..=MAX_CLIENTS as u32 {
            limiter.allow(IpAddr::from(i.to_be_bytes()), 10.0, 20.0, t0);
        }
        assert_eq!(limiter.clients(), MAX_CLIENTS + 1);
        // Three seconds later every bucket has refilled: the next query sweeps them.
        limiter.allow(
            "10.9.9.9".parse().unwrap(),
            10.0,
            20.0,
            t0 + Duration::from_secs(3),
        );
        assert_eq!(limiter.clients(), 1);
    }

    // ---- the TCP connection table ----

    const T0_OFFSET: Duration = Duration::from_secs(3600);

    fn limits(max: usize, per_client: usize) -> ConnectionLimits {
        ConnectionLimits {
            max,
            per_client,
            idle: Duration::from_secs(60),
            pressure_idle: Duration::from_secs(2),
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    /// A start time with room before it (pressure cut-offs subtract from `now`).
    fn t0() -> Instant {
        Instant::now() + T0_OFFSET
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let mut table = ConnectionTable::new(limits(4, 100));
        let t0 = t0();
        let tokens: Vec<_> = (0..4).map(|_| CancellationToken::new()).collect();
        let ids: Vec<_> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let now = t0 + ms(i as u64);
                table.admit(ip(1), t.clone(), now).unwrap().id
            })
            .collect();
        let newcomer = table
            .admit(ip(2), CancellationToken::new(), t0 + ms(10))
            .unwrap();
        assert_eq!(newcomer.evicted, 1);
        assert!(tokens[0].is_cancelled(), "the oldest idle one is closed");
        assert!(tokens[1..].iter().all(|t| !t.is_cancelled()));
        assert_eq!(table.open(), 4);
        assert_eq!(table.idle_check(ids[0], t0 + ms(10)), IdleCheck::Close);
        assert_eq!(table.held_by(ip(1)), 3);
    }

    #[test]
    fn a_busy_connection_is_never_closed_to_make_room() {
        let mut table = ConnectionTable::new(limits(2, 100));
        let t0 = t0();
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        let a_id = table.admit(ip(1), a.clone(), t0).unwrap().id;
        table.admit(ip(1), b.clone(), t0 + ms(1)).unwrap();
        assert!(table.begin(a_id), "the older one is mid-query");
        let c = CancellationToken::new();
        let c_id = table.admit(ip(2), c.clone(), t0 + ms(2)).unwrap().id;
        assert!(b.is_cancelled() && !a.is_cancelled(), "the idle one went");
        assert!(table.begin(c_id));
        let refused = table.admit(ip(3), CancellationToken::new(), t0 + ms(3));
        assert_eq!(refused, Err(Refusal::Full(2)), "all busy: refused");
        assert!(!a.is_cancelled() && !c.is_cancelled());
        // Idle again: the one that finished first is the oldest idle.
        table.end(a_id, t0 + ms(4));
        table.end(c_id, t0 + ms(5));
        table
            .admit(ip(3), CancellationToken::new(), t0 + ms(6))
            .unwrap();
        assert!(a.is_cancelled() && !c.is_cancelled());
        assert!(!table.begin(a_id), "a closed connection cannot become busy");
    }

    #[test]
    fn a_client_at_its_limit_is_refused_and_others_are_not() {
        let mut table = ConnectionTable::new(limits(100, 2));
        let t0 = t0();
        let first = table.admit(ip(1), CancellationToken::new(), t0).unwrap().id;
        table.admit(ip(1), CancellationToken::new(), t0).unwrap();
        let over = table.admit(ip(1), CancellationToken::new(), t0);
        assert_eq!(over, Err(Refusal::ClientLimit(2)));
        table.admit(ip(2), CancellationToken::new(), t0).unwrap();
        table.close(first);
        assert_eq!(table.held_by(ip(1)), 1);
        table.admit(ip(1), CancellationToken::new(), t0).unwrap();
        // An IPv4-mapped address is a different key here: the listener canonicalises.
        assert_eq!(table.open(), 3);
    }

    #[test]
    fn new_limits_apply_to_the_next_connection_and_keep_the_open_ones() {
        let mut table = ConnectionTable::new(limits(100, 3));
        let t0 = t0();
        let tokens: Vec<_> = (0..3).map(|_| CancellationToken::new()).collect();
        let ids: Vec<_> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| table.admit(ip(1), t.clone(), t0 + ms(i as u64)).unwrap().id)
            .collect();
        // A reload lowers the client's cap to 1: its three stay, a fourth is refused
        // until it is below the new cap.
        table.set_limits(limits(100, 1));
        assert_eq!(table.limits().per_client, 1);
        assert!(tokens.iter().all(|t| !t.is_cancelled()));
        let over = table.admit(ip(1), CancellationToken::new(), t0 + ms(5));
        assert_eq!(over, Err(Refusal::ClientLimit(3)));
        table.close(ids[0]);
        table.close(ids[1]);
        let still = table.admit(ip(1), CancellationToken::new(), t0 + ms(6));
        assert_eq!(still, Err(Refusal::ClientLimit(1)));
        table.close(ids[2]);
        table
            .admit(ip(1), CancellationToken::new(), t0 + ms(7))
            .unwrap();
        // A lowered cap for everyone: a newcomer closes idle ones down to it.
        for last in 2..6 {
            table
                .admit(ip(last), CancellationToken::new(), t0 + ms(10))
                .unwrap();
        }
        assert_eq!(table.open(), 5);
        table.set_limits(limits(2, 1));
        let newcomer = table
            .admit(ip(9), CancellationToken::new(), t0 + ms(20))
            .unwrap();
        assert_eq!(newcomer.evicted, 4);
        assert_eq!(table.open(), 2);
        // Caps of 0 mean 1, as at start.
        table.set_limits(limits(0, 0));
        assert_eq!((table.limits().max, table.limits().per_client), (1, 1));
    }

    #[test]
    fn under_pressure_the_idle_timeout_is_short() {
        let mut table = ConnectionTable::new(limits(4, 100));
        let t0 = t0();
        let admit = |table: &mut ConnectionTable, at: u64| {
            table
                .admit(ip(1), CancellationToken::new(), t0 + ms(at))
                .unwrap()
        };
        let a = admit(&mut table, 0).id;
        let b = admit(&mut table, 0).id;
        // Half full: the configured timeout, with a look when the short one is up.
        assert_eq!(
            table.idle_check(a, t0 + ms(1)),
            IdleCheck::At(t0 + ms(2000))
        );
        assert_eq!(
            table.idle_check(a, t0 + ms(2500)),
            IdleCheck::At(t0 + ms(60_000))
        );
        // Three of four open is not yet pressure; the fourth brings it, and on its
        // arrival the two idle for more than two seconds are closed.
        assert_eq!(admit(&mut table, 2500).evicted, 0);
        let d = admit(&mut table, 2500);
        assert_eq!(d.evicted, 2);
        assert_eq!(table.idle_check(a, t0 + ms(2500)), IdleCheck::Close);
        assert_eq!(table.idle_check(b, t0 + ms(2500)), IdleCheck::Close);
        assert_eq!(table.open(), 2);
        assert!(!table.pressured());
        let e = admit(&mut table, 3000);
        assert_eq!(
            admit(&mut table, 3000).evicted,
            0,
            "none idle for two seconds"
        );
        assert!(table.pressured());
        // Under pressure the first to reach two idle seconds closes…
        assert_eq!(
            table.idle_check(d.id, t0 + ms(4000)),
            IdleCheck::At(t0 + ms(4500))
        );
        assert_eq!(table.idle_check(d.id, t0 + ms(4500)), IdleCheck::Close);
        // …which ends the pressure: the others are back on the configured timeout.
        assert!(!table.pressured());
        assert_eq!(
            table.idle_check(e.id, t0 + ms(4500)),
            IdleCheck::At(t0 + ms(5000))
        );
        assert_eq!(
            table.idle_check(e.id, t0 + ms(5000)),
            IdleCheck::At(t0 + ms(63_000))
        );
    }

    #[test]
    fn a_busy_connection_does_not_time_out_and_its_idle_time_starts_at_its_last_answer() {
        let mut table = ConnectionTable::new(limits(100, 100));
        let t0 = t0();
        let id = table.admit(ip(1), CancellationToken::new(), t0).unwrap().id;
        assert!(table.begin(id));
        let late = t0 + Duration::from_secs(100);
        assert_eq!(table.idle_check(id, late), IdleCheck::At(late + ms(2000)));
        table.end(id, late);
        assert_ne!(
            table.idle_check(id, late + Duration::from_secs(59)),
            IdleCheck::Close
        );
        assert_eq!(
            table.idle_check(id, late + Duration::from_secs(60)),
            IdleCheck::Close
        );
    }

    #[test]
    fn zero_limits_and_timeouts_neither_lock_out_nor_spin() {
        let zero = ConnectionLimits {
            max: 0,
            per_client: 0,
            idle: Duration::ZERO,
            pressure_idle: Duration::ZERO,
        };
        let mut table = ConnectionTable::new(zero);
        let t0 = t0();
        let id = table.admit(ip(1), CancellationToken::new(), t0).unwrap().id;
        assert!(table.begin(id));
        // Busy with a zero timeout: asked again a little later, not at once.
        assert_eq!(table.idle_check(id, t0), IdleCheck::At(t0 + MIN_POLL));
        table.end(id, t0);
        assert_eq!(table.idle_check(id, t0), IdleCheck::Close);
    }

    /// One step of a random workload for the connection table.
    #[derive(Debug, Clone)]
    enum Op {
        /// A connection from client `0..4`, after `dt` milliseconds.
        Admit(u8, u64),
        /// A message starts on the `n`th connection ever opened (modulo).
        Begin(usize),
        /// A message ends there, after `dt` milliseconds.
        End(usize, u64),
        /// The client closes it.
        Close(usize),
        /// Time passes; every open connection checks its idleness.
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..4, 0u64..1500).prop_map(|(c, dt)| Op::Admit(c, dt)),
            2 => any::<usize>().prop_map(Op::Begin),
            2 => (any::<usize>(), 0u64..1500).prop_map(|(n, dt)| Op::End(n, dt)),
            1 => any::<usize>().prop_map(Op::Close),
            1 => (0u64..5000).prop_map(Op::Wait),
        ]
    }

    /// What the test knows of a connection it opened.
    struct Model {
        id: ConnectionId,
        client: IpAddr,
        token: CancellationToken,
        busy: u32,
        since: Instant,
        closed_by_client: bool,
    }

    impl Model {
        fn open(&self) -> bool {
            !self.closed_by_client && !self.token.is_cancelled()
        }
    }

    /// Check an admission against what the table promised, given the state before it.
    fn check_admit(
        table: &ConnectionTable,
        conns: &[Model],
        before: &[bool],
        client: IpAddr,
        result: Result<Admitted, Refusal>,
        now: Instant,
    ) -> Result<(), TestCaseError> {
        let lim = table.limits;
        let was_open = |m: &(usize, &Model)| before[m.0];
        let held = conns
            .iter()
            .enumerate()
            .filter(|m| was_open(m) && m.1.client == client)
            .count();
        let open = conns.iter().enumerate().filter(was_open).count();
        let idle = conns
            .iter()
            .enumerate()
            .filter(|m| was_open(m) && m.1.busy == 0)
            .count();
        let evicted: Vec<&Model> = conns
            .iter()
            .enumerate()
            .filter(|m| was_open(m) && !m.1.open())
            .map(|m| m.1)
            .collect();
        prop_assert!(evicted.iter().all(|m| m.busy == 0), "a busy one was closed");
        match result {
            Err(Refusal::ClientLimit(n)) => {
                prop_assert!(held >= lim.per_client && n == held)
            }
            Err(Refusal::Full(_)) => prop_assert!(
                held < lim.per_client && open >= lim.max && idle == 0,
                "refused with {idle} idle of {open}"
            ),
            Ok(admitted) => {
                prop_assert!(held < lim.per_client);
                prop_assert_eq!(admitted.evicted, evicted.len());
                // Oldest first: every idle survivor went idle no earlier than any evicted.
                let newest_evicted = evicted.iter().map(|m| m.since).max();
                for m in conns.iter().filter(|m| m.open() && m.busy == 0) {
                    prop_assert!(newest_evicted.is_none_or(|e| m.since >= e));
                    if table.pressured() && m.id != admitted.id {
                        prop_assert!(m.since + lim.pressure_idle > now, "stale idle kept");
                    }
                }
            }
        }
        Ok(())
    }

    /// Invariants that hold after every step.
    fn check_state(table: &ConnectionTable, conns: &[Model]) -> Result<(), TestCaseError> {
        let lim = table.limits;
        let open: Vec<&Model> = conns.iter().filter(|m| m.open()).collect();
        prop_assert_eq!(table.open(), open.len());
        prop_assert!(table.open() <= lim.max);
        for client in (0..4).map(ip) {
            let held = open.iter().filter(|m| m.client == client).count();
            prop_assert_eq!(table.held_by(client), held);
            prop_assert!(held <= lim.per_client);
        }
        let idle = open.iter().filter(|m| m.busy == 0).count();
        prop_assert_eq!(table.idle.len(), idle);
        Ok(())
    }

    fn apply(
        table: &mut ConnectionTable,
        conns: &mut Vec<Model>,
        op: Op,
        now: &mut Instant,
    ) -> Result<(), TestCaseError> {
        let pick = |n: usize, len: usize| (len > 0).then(|| n % len);
        match op {
            Op::Admit(client, dt) => {
                *now += ms(dt);
                let before: Vec<bool> = conns.iter().map(Model::open).collect();
                let token = CancellationToken::new();
                let result = table.admit(ip(client), token.clone(), *now);
                check_admit(table, conns, &before, ip(client), result, *now)?;
                if let Ok(admitted) = result {
                    conns.push(Model {
                        id: admitted.id,
                        client: ip(client),
                        token,
                        busy: 0,
                        since: *now,
                        closed_by_client: false,
                    });
                }
            }
            Op::Begin(n) => {
                if let Some(m) = pick(n, conns.len()).map(|i| &mut conns[i]) {
                    prop_assert_eq!(table.begin(m.id), m.open());
                    m.busy += u32::from(m.open());
                }
            }
            Op::End(n, dt) => {
                *now += ms(dt);
                if let Some(m) = pick(n, conns.len()).map(|i| &mut conns[i]) {
                    if m.busy > 0 {
                        table.end(m.id, *now);
                        m.busy -= 1;
                        if m.busy == 0 {
                            m.since = *now;
                        }
                    }
                }
            }
            Op::Close(n) => {
                if let Some(m) = pick(n, conns.len()).map(|i| &mut conns[i]) {
                    table.close(m.id);
                    m.closed_by_client = true;
                }
            }
            Op::Wait(dt) => {
                *now += ms(dt);
                let lim = table.limits;
                for m in conns.iter().filter(|m| m.open()) {
                    // The pressure as this connection is asked (closing it may end it).
                    let limit = if table.pressured() {
                        lim.pressure_idle
                    } else {
                        lim.idle
                    };
                    let due = m.busy == 0 && m.since + limit <= *now;
                    let check = table.idle_check(m.id, *now);
                    prop_assert_eq!(check == IdleCheck::Close, due, "busy {}", m.busy);
                    if let IdleCheck::At(at) = check {
                        prop_assert!(at > *now, "asked to look again at once");
                    }
                }
            }
        }
        check_state(table, conns)
    }

    proptest! {
        /// Whatever the clients do: the caps hold, a newcomer is refused only when its
        /// client is at its limit or every connection is busy, idle connections are
        /// closed oldest first, a busy one never, and an idle one times out exactly when
        /// its (possibly shortened) timeout is up.
        #[test]
        fn the_connection_table_keeps_its_promises(
            max in 1usize..12,
            per_client in 1usize..16,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let mut table = ConnectionTable::new(limits(max, per_client));
            let mut conns = Vec::new();
            let mut now = t0();
            for op in ops {
                apply(&mut table, &mut conns, op, &mut now)?;
            }
        }
    }
}
