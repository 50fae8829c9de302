//! Per-client rate limiting: a token bucket per client address, so one looping device
//! cannot starve the others or flood the audit log.
//!
//! Buckets live in a sharded map (one short lock per query, on the client's shard only).
//! The map is bounded: when it holds more than [`MAX_CLIENTS`] buckets, those idle long
//! enough to have refilled are swept out (a full bucket and a missing one behave the
//! same), so a spoofed-source flood costs bounded memory.

use std::net::IpAddr;
use std::time::Instant;

use dashmap::DashMap;

/// Buckets kept before a sweep of idle ones.
pub const MAX_CLIENTS: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by client address.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: DashMap<IpAddr, Bucket, foldhash::fast::RandomState>,
}

impl RateLimiter {
    pub fn new() -> RateLimiter {
        RateLimiter::default()
    }

    /// May `client` ask one more query now, at `qps` sustained with bursts of `burst`?
    pub fn allow(&self, client: IpAddr, qps: f64, burst: f64, now: Instant) -> bool {
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

    pub fn clients(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
