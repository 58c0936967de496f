//! Per-source accounting: a token bucket of requests for every address the
//! node hears from, the bytes exchanged with it, and whether it has proved
//! that it receives what is sent to it. Bounded: past `max_sources` entries
//! the least recently heard address is forgotten.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// SipHash keyed with a secret drawn from the node's seed, so that an
/// attacker who picks its source addresses cannot make them collide.
#[derive(Clone, Debug)]
pub(crate) struct Keyed(u64, u64);

impl BuildHasher for Keyed {
    type Hasher = DefaultHasher;
    fn build_hasher(&self) -> DefaultHasher {
        let mut h = DefaultHasher::new();
        h.write_u64(self.0);
        h.write_u64(self.1);
        h
    }
}

#[derive(Clone, Debug)]
struct Source {
    tokens: f64,
    last: Instant,
    bytes_in: u64,
    bytes_out: u64,
    verified: bool,
    probed_at: Option<Instant>,
    /// Replies larger than their request sent while unverified.
    free_used: u32,
    /// A `GetNeighbors` (txn, want_fingers) awaiting verification.
    deferred: Option<(u64, bool)>,
    stamp: u64,
}

/// What the node knows of every address it heard from recently.
#[derive(Clone, Debug)]
pub(crate) struct Sources<A> {
    rate: f64,
    burst: f64,
    cap: usize,
    map: HashMap<A, Source, Keyed>,
    lru: BTreeMap<u64, A>,
    clock: u64,
    evicted: u64,
}

impl<A: Clone + Eq + std::hash::Hash> Sources<A> {
    /// `rate` requests per second, bursts of `burst`, `cap` addresses.
    pub(crate) fn new(rate: u32, burst: u32, cap: usize, key: (u64, u64)) -> Sources<A> {
        Sources {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            cap: cap.max(1),
            map: HashMap::with_hasher(Keyed(key.0, key.1)),
            lru: BTreeMap::new(),
            clock: 0,
            evicted: 0,
        }
    }

    /// The entry of `addr`, created (evicting the least recent) if absent,
    /// and marked most recently used.
    fn touch(&mut self, addr: &A, now: Instant) -> &mut Source {
        self.clock += 1;
        let stamp = self.clock;
        if let Some(old) = self.map.get(addr).map(|s| s.stamp) {
            self.lru.remove(&old);
        } else {
            while self.map.len() >= self.cap {
                let Some((_, victim)) = self.lru.pop_first() else {
                    break;
                };
                self.map.remove(&victim);
                self.evicted += 1;
            }
        }
        self.lru.insert(stamp, addr.clone());
        let burst = self.burst;
        let s = self.map.entry(addr.clone()).or_insert(Source {
            tokens: burst,
            last: now,
            bytes_in: 0,
            bytes_out: 0,
            verified: false,
            probed_at: None,
            free_used: 0,
            deferred: None,
            stamp,
        });
        s.stamp = stamp;
        s
    }

    /// Records a datagram of `len` bytes from `addr`.
    pub(crate) fn received(&mut self, addr: &A, len: usize, now: Instant) {
        let s = self.touch(addr, now);
        s.bytes_in = s.bytes_in.saturating_add(len as u64);
    }

    /// Takes one request token from `addr`'s bucket; false if it has none.
    pub(crate) fn allow(&mut self, addr: &A, now: Instant) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        let s = self.touch(addr, now);
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.last = s.last.max(now);
        s.tokens = (s.tokens + elapsed * rate).min(burst);
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// `addr` answered a request sent to it: it really receives there.
    pub(crate) fn verify(&mut self, addr: &A, now: Instant) {
        self.touch(addr, now).verified = true;
    }

    /// Bytes that may still be sent to `addr` in reply: `None` for a
    /// verified address (no limit), otherwise what it sent minus what it got.
    pub(crate) fn budget(&self, addr: &A) -> Option<u64> {
        match self.map.get(addr) {
            Some(s) if s.verified => None,
            Some(s) => Some(s.bytes_in.saturating_sub(s.bytes_out)),
            None => Some(0),
        }
    }

    /// Records `len` bytes sent to `addr` (if it is tracked).
    pub(crate) fn sent(&mut self, addr: &A, len: usize) {
        if let Some(s) = self.map.get_mut(addr) {
            s.bytes_out = s.bytes_out.saturating_add(len as u64);
        }
    }

    /// Whether a verification probe may go to `addr` now (none in the last
    /// `every`); if so, records that one goes.
    pub(crate) fn probe_due(&mut self, addr: &A, now: Instant, every: Duration) -> bool {
        let Some(s) = self.map.get_mut(addr) else {
            return false;
        };
        if s.verified || s.probed_at.is_some_and(|t| now < t + every) {
            return false;
        }
        s.probed_at = Some(now);
        true
    }

    /// Whether `addr` may still get one of `max` replies larger than its
    /// requests before it is verified; if so, counts it.
    pub(crate) fn take_free_reply(&mut self, addr: &A, max: u32) -> bool {
        match self.map.get_mut(addr) {
            Some(s) if s.free_used < max => {
                s.free_used += 1;
                true
            }
            _ => false,
        }
    }

    /// Remembers the latest `GetNeighbors` of `addr`, to answer once it is
    /// verified (one per address: a newer request replaces an older one).
    pub(crate) fn defer(&mut self, addr: &A, txn: u64, want_fingers: bool) {
        if let Some(s) = self.map.get_mut(addr) {
            s.deferred = Some((txn, want_fingers));
        }
    }

    /// The request deferred for `addr`, if any, forgetting it.
    pub(crate) fn take_deferred(&mut self, addr: &A) -> Option<(u64, bool)> {
        self.map.get_mut(addr).and_then(|s| s.deferred.take())
    }

    /// Addresses tracked.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Checks the table's own consistency.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.map.len() > self.cap {
            return Err(format!(
                "{} sources tracked, cap {}",
                self.map.len(),
                self.cap
            ));
        }
        if self.map.len() != self.lru.len() {
            return Err(format!(
                "source map has {} entries, LRU {}",
                self.map.len(),
                self.lru.len()
            ));
        }
        for (stamp, addr) in &self.lru {
            if self.map.get(addr).map(|s| s.stamp) != Some(*stamp) {
                return Err("LRU order and source map disagree".into());
            }
        }
        Ok(())
    }

    /// Addresses forgotten to make room, since the node started.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate_and_caps_at_burst() {
        let t0 = Instant::now();
        let mut s = Sources::<u32>::new(10, 5, 4, (1, 2));
        assert_eq!((0..20).filter(|_| s.allow(&1, t0)).count(), 5);
        // Half a second later: 5 more tokens, not 10 (burst caps it).
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..20).filter(|_| s.allow(&1, t1)).count(), 5);
        let t2 = t1 + Duration::from_secs(100);
        assert_eq!((0..20).filter(|_| s.allow(&1, t2)).count(), 5);
        // Another source has its own bucket.
        assert!(s.allow(&2, t2));
    }

    #[test]
    fn table_is_bounded_least_recent_first() {
        let t0 = Instant::now();
        let mut s = Sources::<u32>::new(10, 5, 3, (1, 2));
        for a in 0..3 {
            s.received(&a, 10, t0);
        }
        s.received(&0, 1, t0); // 0 is now the most recent
        s.received(&9, 1, t0); // evicts 1
        assert_eq!(s.len(), 3);
        assert_eq!(s.budget(&1), Some(0));
        assert_eq!(s.budget(&0), Some(11));
        assert_eq!(s.evicted(), 1);
        s.check().unwrap();
    }

    #[test]
    fn budget_is_bytes_in_minus_out_until_verified() {
        let t0 = Instant::now();
        let mut s = Sources::<u32>::new(10, 5, 3, (1, 2));
        s.received(&1, 50, t0);
        s.sent(&1, 20);
        assert_eq!(s.budget(&1), Some(30));
        assert!(s.probe_due(&1, t0, Duration::from_secs(1)));
        assert!(!s.probe_due(&1, t0, Duration::from_secs(1)));
        s.verify(&1, t0);
        assert_eq!(s.budget(&1), None);
        assert!(!s.probe_due(&1, t0 + Duration::from_secs(5), Duration::from_secs(1)));
    }
}
