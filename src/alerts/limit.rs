//! The rate limiter: one alert per (device, category) at once, then at most one digest
//! per `rate_window` while the blocks go on.
//!
//! The first block of a key alerts and opens a window. Blocks of that key inside the
//! window are held; when it ends they go out as one digest and a new window opens, so a
//! device that keeps hitting a category produces one message per window, not one per
//! block. A window that passes with nothing held closes the key: its next block alerts
//! at once again.
//!
//! Time is passed in (`now`), so the logic is tested without waiting.
//!
//! ## Bounded
//! At most `max_keys` keys are tracked, each holding at most [`DETAIL`] blocks in detail
//! (further ones are only counted). Blocks of a new key past `max_keys` do not alert one
//! by one: they are held in one shared overflow digest (key `*`/`*`), sent when its own
//! window ends. A network with that many devices hitting alerting categories in one
//! window needs a summary, not a thousand emails.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::sighting::{Key, Sighting};

/// Blocks held in detail per key; more are counted in [`Held::more`].
pub(crate) const DETAIL: usize = 100;

/// What to do with a block offered to the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Send an alert now.
    Alert,
    /// Held for the key's digest.
    Held,
}

/// The blocks of one key held until its window ended: one digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub key: Key,
    pub sightings: Vec<Sighting>,
    /// Blocks past [`DETAIL`], counted only.
    pub more: u64,
}

#[derive(Debug)]
struct Slot {
    ends: Instant,
    sightings: Vec<Sighting>,
    more: u64,
}

impl Slot {
    fn new(ends: Instant) -> Slot {
        Slot {
            ends,
            sightings: Vec::new(),
            more: 0,
        }
    }

    fn hold(&mut self, sighting: Sighting) {
        if self.sightings.len() < DETAIL {
            self.sightings.push(sighting);
        } else {
            self.more += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.sightings.is_empty() && self.more == 0
    }

    fn take(&mut self, key: Key) -> Held {
        Held {
            key,
            sightings: std::mem::take(&mut self.sightings),
            more: std::mem::take(&mut self.more),
        }
    }
}

/// Per-key windows and the blocks held in them.
#[derive(Debug)]
pub(crate) struct Limiter {
    window: Duration,
    max_keys: usize,
    slots: HashMap<Key, Slot>,
    overflow: Option<Slot>,
}

impl Limiter {
    /// A limiter with windows of `window` (zero: every block alerts) over at most
    /// `max_keys` keys.
    pub fn new(window: Duration, max_keys: usize) -> Limiter {
        Limiter {
            window,
            max_keys: max_keys.max(1),
            slots: HashMap::new(),
            overflow: None,
        }
    }

    /// Decide about one block of `key` seen at `now`.
    pub(crate) fn offer(&mut self, key: Key, sighting: Sighting, now: Instant) -> Offer {
        if self.window.is_zero() {
            return Offer::Alert;
        }
        if let Some(slot) = self.slots.get_mut(&key) {
            // Still in the window, or past it with a digest not yet taken by `due`.
            if now < slot.ends || !slot.is_empty() {
                slot.hold(sighting);
                return Offer::Held;
            }
            slot.ends = now + self.window;
            return Offer::Alert;
        }
        if self.slots.len() >= self.max_keys {
            let ends = now + self.window;
            self.overflow
                .get_or_insert_with(|| Slot::new(ends))
                .hold(sighting);
            return Offer::Held;
        }
        self.slots.insert(key, Slot::new(now + self.window));
        Offer::Alert
    }

    /// An alert for `key` went out at `opened` (before a restart): hold the key's next
    /// blocks until that window ends, as if it had never stopped.
    pub(crate) fn restore(&mut self, key: Key, opened: Instant) {
        if self.window.is_zero() || key.is_overflow() {
            return;
        }
        let ends = opened + self.window;
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.ends = slot.ends.max(ends);
        } else if self.slots.len() < self.max_keys {
            self.slots.insert(key, Slot::new(ends));
        }
    }

    /// The digests whose window has ended by `now`, oldest first. A key that had one
    /// starts a new window; a key whose window passed quietly is forgotten.
    pub fn due(&mut self, now: Instant) -> Vec<Held> {
        let mut out = Vec::new();
        let window = self.window;
        self.slots.retain(|key, slot| {
            if now < slot.ends {
                return true;
            }
            if slot.is_empty() {
                return false;
            }
            out.push(slot.take(key.clone()));
            slot.ends = now + window;
            true
        });
        if let Some(slot) = self.overflow.as_mut().filter(|s| now >= s.ends) {
            if !slot.is_empty() {
                out.push(slot.take(Key::overflow()));
            }
            self.overflow = None;
        }
        out.sort_by_key(|h| h.sightings.first().map_or(i64::MAX, |s| s.id));
        out
    }

    #[cfg(test)]
    /// When the next digest is due, if any block is held.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.slots
            .values()
            .chain(&self.overflow)
            .filter(|s| !s.is_empty())
            .map(|s| s.ends)
            .min()
    }

    /// Blocks held for digests.
    pub fn held(&self) -> usize {
        self.slots
            .values()
            .chain(&self.overflow)
            .map(|s| s.sightings.len() + s.more as usize)
            .sum()
    }

    /// The oldest audit event held (not yet sent in any message).
    pub(crate) fn first_held_id(&self) -> Option<i64> {
        self.slots
            .values()
            .chain(&self.overflow)
            .filter_map(|s| s.sightings.first().map(|x| x.id))
            .min()
    }

    #[cfg(test)]
    /// Keys tracked (the overflow digest not included).
    pub fn keys(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: i64, client: &str, name: &str) -> Sighting {
        Sighting {
            id,
            time: "2026-11-22T09:14:03.120Z".into(),
            client: client.into(),
            device: None,
            group: "pupils".into(),
            name: name.into(),
            categories: "terrorism".into(),
            list: "ctiru".into(),
            rule: name.into(),
            count: 1,
            mac: None,
            user: None,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn first_block_alerts_repeats_wait_for_one_digest_at_the_end_of_the_window() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut l = Limiter::new(HOUR, 10);
        let key = Key::new("10.0.0.7", "terrorism");
        assert_eq!(
            l.offer(key.clone(), seen(1, "10.0.0.7", "a.test"), at(0)),
            Offer::Alert
        );
        assert_eq!(
            l.offer(key.clone(), seen(2, "10.0.0.7", "b.test"), at(60)),
            Offer::Held
        );
        assert_eq!(
            l.offer(key.clone(), seen(3, "10.0.0.7", "c.test"), at(120)),
            Offer::Held
        );
        // Another device and another category are other keys.
        let other = Key::new("10.0.0.8", "terrorism");
        assert_eq!(
            l.offer(other, seen(4, "10.0.0.8", "a.test"), at(130)),
            Offer::Alert
        );
        let self_harm = Key::new("10.0.0.7", "self-harm");
        assert_eq!(
            l.offer(self_harm, seen(5, "10.0.0.7", "s.test"), at(140)),
            Offer::Alert
        );
        assert_eq!(l.held(), 2);
        assert_eq!(l.first_held_id(), Some(2));
        assert_eq!(l.next_due(), Some(at(3600)));

        assert!(l.due(at(3599)).is_empty(), "nothing before the window ends");
        let digests = l.due(at(3600));
        assert_eq!(digests.len(), 1);
        assert_eq!(digests[0].key, key);
        let names: Vec<&str> = digests[0]
            .sightings
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["b.test", "c.test"]);
        assert_eq!((l.held(), l.first_held_id()), (0, None));

        // The digest opened a new window: blocks in it are held for the next digest…
        assert_eq!(
            l.offer(key.clone(), seen(6, "10.0.0.7", "d.test"), at(4000)),
            Offer::Held
        );
        assert_eq!(l.due(at(7200)).len(), 1);
        // …and a window that passes quietly closes the key: the next block alerts again.
        assert!(l.due(at(10_800)).is_empty());
        assert_eq!(
            l.offer(key, seen(7, "10.0.0.7", "e.test"), at(10_801)),
            Offer::Alert
        );
    }

    #[test]
    fn a_block_after_the_window_but_before_due_joins_the_pending_digest() {
        let t0 = Instant::now();
        let mut l = Limiter::new(HOUR, 10);
        let key = Key::new("10.0.0.7", "terrorism");
        l.offer(key.clone(), seen(1, "c", "a.test"), t0);
        l.offer(
            key.clone(),
            seen(2, "c", "b.test"),
            t0 + Duration::from_secs(10),
        );
        let late = t0 + HOUR + Duration::from_secs(1);
        assert_eq!(l.offer(key, seen(3, "c", "c.test"), late), Offer::Held);
        let digests = l.due(late);
        assert_eq!(
            digests[0].sightings.len(),
            2,
            "one digest, not a digest and an alert"
        );
    }

    #[test]
    fn memory_is_bounded_past_max_keys_and_detail() {
        let t0 = Instant::now();
        let mut l = Limiter::new(HOUR, 3);
        for i in 0..10 {
            let client = format!("10.0.0.{i}");
            let offer = l.offer(
                Key::new(&client, "terrorism"),
                seen(i, &client, "x.test"),
                t0,
            );
            let expected = if i < 3 { Offer::Alert } else { Offer::Held };
            assert_eq!(offer, expected, "client {i}");
        }
        assert_eq!(l.keys(), 3);
        let key = Key::new("10.0.0.0", "terrorism");
        for i in 0..(DETAIL as i64 + 50) {
            l.offer(key.clone(), seen(100 + i, "10.0.0.0", "y.test"), t0);
        }
        assert_eq!(l.held(), 7 + DETAIL + 50);
        let digests = l.due(t0 + HOUR);
        assert_eq!(digests.len(), 2);
        let overflow = digests.iter().find(|d| d.key.is_overflow()).unwrap();
        assert_eq!((overflow.sightings.len(), overflow.more), (7, 0));
        let busy = digests.iter().find(|d| d.key == key).unwrap();
        assert_eq!((busy.sightings.len(), busy.more), (DETAIL, 50));
        assert_eq!(l.held(), 0);
    }

    #[test]
    fn a_zero_window_alerts_every_block_and_holds_nothing() {
        let mut l = Limiter::new(Duration::ZERO, 3);
        let now = Instant::now();
        for i in 0..5 {
            let key = Key::new("10.0.0.7", "terrorism");
            assert_eq!(
                l.offer(key, seen(i, "10.0.0.7", "a.test"), now),
                Offer::Alert
            );
        }
        assert_eq!((l.keys(), l.held()), (0, 0));
    }

    #[test]
    fn a_restored_window_holds_repeats_after_a_restart() {
        let now = Instant::now();
        let mut l = Limiter::new(HOUR, 10);
        let key = Key::new("10.0.0.7", "terrorism");
        l.restore(key.clone(), now);
        l.restore(Key::overflow(), now);
        assert_eq!(l.keys(), 1, "the overflow digest has no window to restore");
        assert_eq!(
            l.offer(key.clone(), seen(9, "10.0.0.7", "b.test"), now),
            Offer::Held
        );
        assert_eq!(l.due(now + HOUR).len(), 1);
    }
}
