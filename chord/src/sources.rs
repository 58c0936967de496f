//! Per-source accounting: a token bucket of requests for every address the
//! node hears from, the bytes exchanged with it, and whether it has proved
//! that it receives what is sent to it.
//!
//! Bounded in two ways, both without a per-entry ordering structure: the
//! table is two generations of maps, and the older one is dropped whole
//! when the newer one fills half of `max_sources` or has lived
//! [`GENERATION`]. An address heard again while in the older generation moves
//! to the newer one, so a source is forgotten only after a whole generation
//! of silence (or under a flood of newer sources). An entry is 20 bytes
//! besides its address (4-byte aligned, so 24 with a `u32` address); times
//! are kept as milliseconds since the table's first use, and the txn of a
//! deferred request (rare) in a map of its own. The older
//! generation only loses entries, so it gives its room back as it drains.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use siphasher::sip::SipHasher13;

/// How long a generation lasts: an address silent for between one and two
/// generations is forgotten. Neighbours are heard every stabilization
/// period, far more often; a forgotten address only loses its bucket (it
/// starts full again) and its verification (it is probed again).
pub(crate) const GENERATION: Duration = Duration::from_secs(30);

/// SipHash keyed with a secret drawn from the node's seed, so that an
/// attacker who picks its source addresses cannot make them collide.
#[derive(Clone, Debug)]
pub(crate) struct Keyed(u64, u64);

impl BuildHasher for Keyed {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.0, self.1)
    }
}

/// The source has answered a request: it receives at its address.
const VERIFIED: u8 = 1;
/// A verification probe went to it (at `probed_at`).
const PROBED: u8 = 2;
/// A `GetNeighbors` without fingers waits for its verification.
const DEFER_PLAIN: u8 = 4;
/// A `GetNeighbors` with fingers waits for its verification.
const DEFER_FINGERS: u8 = 8;
/// Either kind of deferred request.
const DEFERRED: u8 = DEFER_PLAIN | DEFER_FINGERS;

/// What the table knows of one address: 20 bytes, so that with a `u32`
/// address an entry is 24 (a deferred request's txn, rare, is kept in a
/// map of its own).
#[derive(Clone, Debug)]
struct Source {
    tokens: f32,
    /// Until the source is verified, the bytes received from it minus the
    /// bytes sent to it (an `i32`, saturating: its reply budget); from
    /// then on, the bits of an `f32`, the tokens of the separate bucket of
    /// its Data (full at verification, as it would have been: nothing
    /// draws on it before). Neither is needed while the other is, so they
    /// share four bytes.
    balance_or_data: u32,
    /// Milliseconds since the table's epoch (wrapping; entries never live
    /// long enough for a wrap to matter) of the last refill.
    last: u32,
    /// When the last verification probe went, same clock; valid if `PROBED`.
    probed_at: u32,
    /// `VERIFIED`, `PROBED`, and `DEFER_PLAIN` or `DEFER_FINGERS`.
    flags: u8,
    /// Replies larger than their request sent while unverified.
    free_used: u8,
}

impl Source {
    /// A source heard for the first time, `ms` after the epoch.
    fn fresh(burst: f32, ms: u32) -> Source {
        Source {
            tokens: burst,
            balance_or_data: 0,
            last: ms,
            probed_at: 0,
            flags: 0,
            free_used: 0,
        }
    }

    fn verified(&self) -> bool {
        self.flags & VERIFIED != 0
    }

    /// Bytes received minus bytes sent, counted until the source is verified.
    fn balance(&self) -> i32 {
        if self.verified() {
            0
        } else {
            self.balance_or_data as i32
        }
    }

    fn add_balance(&mut self, len: usize, sign: i32) {
        if !self.verified() {
            let len = i32::try_from(len).unwrap_or(i32::MAX);
            let b = (self.balance_or_data as i32).saturating_add(len.saturating_mul(sign));
            self.balance_or_data = b as u32;
        }
    }

    fn add_in(&mut self, len: usize) {
        self.add_balance(len, 1);
    }

    /// The deferred request's kind, forgotten: whether it wants fingers.
    fn take_deferred_kind(&mut self) -> Option<bool> {
        let kind = self.flags & DEFERRED;
        self.flags &= !DEFERRED;
        (kind != 0).then_some(kind == DEFER_FINGERS)
    }

    /// Marks the source verified; its Data bucket starts full.
    fn verify(&mut self, data_burst: f32) {
        if !self.verified() {
            self.flags |= VERIFIED;
            self.balance_or_data = data_burst.to_bits();
        }
    }

    /// Takes one token from the Data bucket of a verified source.
    fn take_data(&mut self) -> bool {
        let mut tokens = f32::from_bits(self.balance_or_data);
        let taken = self.verified() && take(&mut tokens);
        if taken {
            self.balance_or_data = tokens.to_bits();
        }
        taken
    }

    /// Refills both buckets to `ms` after the epoch.
    fn refill(&mut self, ms: u32, r: Rates) {
        let elapsed = ms.wrapping_sub(self.last);
        if elapsed < u32::MAX / 2 {
            // Not behind the last refill (times passed in may go back).
            self.last = ms;
            let secs = elapsed as f32 / 1000.0;
            self.tokens = (self.tokens + secs * r.rate).min(r.burst);
            if self.verified() {
                let data = f32::from_bits(self.balance_or_data);
                self.balance_or_data = (data + secs * r.data_rate).min(r.data_burst).to_bits();
            }
        }
    }
}

/// Takes one token from a bucket; false if it has none.
fn take(tokens: &mut f32) -> bool {
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        true
    } else {
        false
    }
}

#[derive(Clone, Copy)]
struct Rates {
    rate: f32,
    burst: f32,
    data_rate: f32,
    data_burst: f32,
}

/// What kind of datagram arrived, for [`Sources::arrived`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// An answer to something this node asked: costs no token.
    Reply,
    /// An application message: the Data bucket once its source is verified.
    Data,
    /// Any other request.
    Request,
}

/// What the node knows of every address it heard from recently.
#[derive(Clone, Debug)]
pub(crate) struct Sources<A> {
    rate: f32,
    burst: f32,
    data_rate: f32,
    data_burst: f32,
    cap: usize,
    /// The generation being filled.
    young: HashMap<A, Source, Keyed>,
    /// The previous generation, dropped whole at the next turn.
    old: HashMap<A, Source, Keyed>,
    /// The txns of deferred requests (see [`Sources::defer`]), of
    /// addresses in either generation.
    deferred: HashMap<A, u64, Keyed>,
    /// When the table was first used; all times are relative to it.
    epoch: Option<Instant>,
    /// When `young` was started, relative to `epoch`.
    turned: Duration,
    evicted: u64,
}

impl<A: Clone + Eq + std::hash::Hash> Sources<A> {
    /// `rate` requests per second, bursts of `burst`, `cap` addresses.
    pub(crate) fn new(rate: u32, burst: u32, cap: usize, key: (u64, u64)) -> Sources<A> {
        Sources {
            rate: rate as f32,
            burst: burst.max(1) as f32,
            data_rate: rate as f32,
            data_burst: burst.max(1) as f32,
            cap: cap.max(2),
            young: HashMap::with_hasher(Keyed(key.0, key.1)),
            old: HashMap::with_hasher(Keyed(key.0, key.1)),
            deferred: HashMap::with_hasher(Keyed(key.0, key.1)),
            epoch: None,
            turned: Duration::ZERO,
            evicted: 0,
        }
    }

    /// Time since the epoch (set on first use).
    fn since_epoch(&mut self, now: Instant) -> Duration {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch)
    }

    /// Starts a new generation, forgetting the oldest.
    fn turn(&mut self, at: Duration) {
        let fresh = HashMap::with_hasher(self.young.hasher().clone());
        let mut young = std::mem::replace(&mut self.young, fresh);
        // From now on it only loses entries: no room to grow is needed.
        young.shrink_to_fit();
        let dropped = std::mem::replace(&mut self.old, young);
        self.evicted += dropped.len() as u64;
        if !self.deferred.is_empty() {
            for a in dropped.keys() {
                self.deferred.remove(a);
            }
            if self.deferred.is_empty() {
                self.deferred.shrink_to_fit();
            }
        }
        self.turned = at;
    }

    /// Takes `addr`'s entry out of the old generation, shrinking that map
    /// to fit once it is half empty: each address heard again moves to the
    /// young one, so without this a node would hold two full-sized maps for
    /// one generation's worth of sources. (Each shrink at least halves the
    /// map, so they cost no more than the moves themselves.)
    fn take_old(&mut self, addr: &A) -> Option<Source> {
        let entry = self.old.remove(addr)?;
        if self.old.len() * 2 < self.old.capacity() {
            self.old.shrink_to_fit();
        }
        Some(entry)
    }

    /// Bytes of the heap the table holds (an estimate from its maps'
    /// capacities, as `hashbrown` lays them out).
    pub(crate) fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(A, Source)>();
        crate::memory::hash_table_bytes(self.young.capacity(), entry)
            + crate::memory::hash_table_bytes(self.old.capacity(), entry)
            + crate::memory::hash_table_bytes(
                self.deferred.capacity(),
                std::mem::size_of::<(A, u64)>(),
            )
    }

    /// Applies `f` to the entry of `addr`, created if absent, in the young
    /// generation. An address already there (every datagram of a busy
    /// neighbour) costs one hash lookup.
    fn with<R>(&mut self, addr: &A, now: Instant, f: impl FnOnce(&mut Source, u32) -> R) -> R {
        let t = self.since_epoch(now);
        let ms = t.as_millis() as u32;
        if t < self.turned + GENERATION {
            if let Some(s) = self.young.get_mut(addr) {
                return f(s, ms);
            }
        } else {
            let silent = t >= self.turned + GENERATION * 2;
            self.turn(t);
            if silent {
                // Nothing heard for two generations: nothing is recent.
                self.turn(t);
            }
        }
        let burst = self.burst;
        let mut entry = self
            .take_old(addr)
            .unwrap_or_else(|| Source::fresh(burst, ms));
        // Each generation holds at most half the cap, so both together
        // never exceed it.
        if self.young.len() >= self.cap / 2 {
            self.turn(t);
        }
        let r = f(&mut entry, ms);
        self.young.insert(addr.clone(), entry);
        r
    }

    /// The entry of `addr` in either generation, without moving it.
    fn find(&self, addr: &A) -> Option<&Source> {
        self.young.get(addr).or_else(|| self.old.get(addr))
    }

    /// The entry of `addr` in either generation, mutably, without moving it.
    fn find_mut(&mut self, addr: &A) -> Option<&mut Source> {
        match self.young.get_mut(addr) {
            Some(s) => Some(s),
            None => self.old.get_mut(addr),
        }
    }

    #[cfg(test)]
    /// Records a datagram of `len` bytes from `addr`.
    pub(crate) fn received(&mut self, addr: &A, len: usize, now: Instant) {
        self.with(addr, now, |s, _| s.add_in(len));
    }

    /// Records a datagram of `len` bytes from `addr` and, for a request,
    /// takes a token: from the Data bucket for `Data` of a verified
    /// source, from the request bucket otherwise. False if the request is
    /// over its rate. One lookup for [`received`](Self::received),
    /// [`is_verified`](Self::is_verified) and [`allow`](Self::allow) or
    /// [`allow_data`](Self::allow_data) together.
    pub(crate) fn arrived(&mut self, addr: &A, len: usize, kind: Arrival, now: Instant) -> bool {
        let rates = self.rates();
        self.with(addr, now, |s, ms| {
            s.add_in(len);
            match kind {
                Arrival::Reply => true,
                Arrival::Data if s.verified() => {
                    s.refill(ms, rates);
                    s.take_data()
                }
                Arrival::Data | Arrival::Request => {
                    s.refill(ms, rates);
                    take(&mut s.tokens)
                }
            }
        })
    }

    fn rates(&self) -> Rates {
        Rates {
            rate: self.rate,
            burst: self.burst,
            data_rate: self.data_rate,
            data_burst: self.data_burst,
        }
    }

    /// Gives Data from verified sources a bucket of its own (by default
    /// the same rate and burst as other requests).
    pub(crate) fn with_data_bucket(mut self, rate: u32, burst: u32) -> Sources<A> {
        self.data_rate = rate as f32;
        self.data_burst = burst.max(1) as f32;
        self
    }

    #[cfg(test)]
    /// Takes one request token from `addr`'s bucket; false if it has none.
    pub(crate) fn allow(&mut self, addr: &A, now: Instant) -> bool {
        let rates = self.rates();
        self.with(addr, now, |s, ms| {
            s.refill(ms, rates);
            take(&mut s.tokens)
        })
    }

    #[cfg(test)]
    /// Takes one token from `addr`'s Data bucket (for verified sources);
    /// false if it has none.
    pub(crate) fn allow_data(&mut self, addr: &A, now: Instant) -> bool {
        let rates = self.rates();
        self.with(addr, now, |s, ms| {
            s.refill(ms, rates);
            s.take_data()
        })
    }

    #[cfg(test)]
    /// `addr` answered a request sent to it: it really receives there.
    pub(crate) fn verify(&mut self, addr: &A, now: Instant) {
        let data_burst = self.data_burst;
        self.with(addr, now, |s, _| s.verify(data_burst));
    }

    /// [`verify`](Self::verify) and [`take_deferred`](Self::take_deferred)
    /// in one lookup.
    pub(crate) fn verify_and_take_deferred(
        &mut self,
        addr: &A,
        now: Instant,
    ) -> Option<(u64, bool)> {
        let data_burst = self.data_burst;
        let fingers = self.with(addr, now, |s, _| {
            s.verify(data_burst);
            s.take_deferred_kind()
        })?;
        Some((self.deferred.remove(addr)?, fingers))
    }

    /// Bytes that may still be sent to `addr` in reply: `None` for a
    /// verified address (no limit), otherwise what it sent minus what it got.
    pub(crate) fn budget(&self, addr: &A) -> Option<u64> {
        match self.find(addr) {
            Some(s) if s.verified() => None,
            Some(s) => Some(s.balance().max(0) as u64),
            None => Some(0),
        }
    }

    /// Whether `addr` has answered a request (and is still remembered).
    pub(crate) fn is_verified(&self, addr: &A) -> bool {
        self.find(addr).is_some_and(Source::verified)
    }

    /// Records `len` bytes sent to `addr` (if it is tracked).
    pub(crate) fn sent(&mut self, addr: &A, len: usize) {
        if let Some(s) = self.find_mut(addr) {
            s.add_balance(len, -1);
        }
    }

    /// Whether a verification probe may go to `addr` now (none in the last
    /// `every`); if so, records that one goes.
    pub(crate) fn probe_due(&mut self, addr: &A, now: Instant, every: Duration) -> bool {
        let ms = self.since_epoch(now).as_millis() as u32;
        let every = every.as_millis().min(u128::from(u32::MAX / 2)) as u32;
        let Some(s) = self.find_mut(addr) else {
            return false;
        };
        if s.verified() || (s.flags & PROBED != 0 && ms.wrapping_sub(s.probed_at) < every) {
            return false;
        }
        s.flags |= PROBED;
        s.probed_at = ms;
        true
    }

    /// Whether `addr` may still get one of `max` replies larger than its
    /// requests before it is verified; if so, counts it.
    pub(crate) fn take_free_reply(&mut self, addr: &A, max: u8) -> bool {
        match self.find_mut(addr) {
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
        if let Some(s) = self.find_mut(addr) {
            s.flags &= !DEFERRED;
            s.flags |= if want_fingers {
                DEFER_FINGERS
            } else {
                DEFER_PLAIN
            };
            self.deferred.insert(addr.clone(), txn);
        }
    }

    #[cfg(test)]
    /// The request deferred for `addr`, if any, forgetting it.
    pub(crate) fn take_deferred(&mut self, addr: &A) -> Option<(u64, bool)> {
        let fingers = self.find_mut(addr)?.take_deferred_kind()?;
        Some((self.deferred.remove(addr)?, fingers))
    }

    /// Addresses tracked.
    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Checks the table's own consistency.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.len() > self.cap {
            return Err(format!("{} sources tracked, cap {}", self.len(), self.cap));
        }
        if self.young.len() > self.cap / 2 || self.old.len() > self.cap / 2 {
            return Err(format!(
                "generations of {} and {} sources, half the cap is {}",
                self.young.len(),
                self.old.len(),
                self.cap / 2
            ));
        }
        if self.young.keys().any(|a| self.old.contains_key(a)) {
            return Err("an address is in both generations".into());
        }
        let deferring = self
            .young
            .values()
            .chain(self.old.values())
            .filter(|s| s.flags & DEFERRED != 0)
            .count();
        if deferring != self.deferred.len()
            || self
                .deferred
                .keys()
                .any(|a| self.find(a).is_none_or(|s| s.flags & DEFERRED == 0))
        {
            return Err("deferred txns do not match the entries that defer".into());
        }
        Ok(())
    }

    /// Addresses forgotten to make room or for silence, since the node
    /// started.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrived_takes_from_the_bucket_the_kind_of_datagram_calls_for() {
        let t0 = Instant::now();
        let mut s = Sources::<u32>::new(10, 5, 8, (1, 2)).with_data_bucket(10, 3);
        // Replies take nothing, and count their bytes.
        assert!((0..20).all(|_| s.arrived(&1, 10, Arrival::Reply, t0)));
        assert_eq!(s.budget(&1), Some(200));
        // Data of an unverified source goes by the request bucket.
        let n = |s: &mut Sources<u32>, kind| (0..20).filter(|_| s.arrived(&1, 1, kind, t0)).count();
        assert_eq!(n(&mut s, Arrival::Data), 5);
        assert_eq!(n(&mut s, Arrival::Request), 0);
        // Verified, its Data has a bucket of its own; other requests still wait.
        s.verify(&1, t0);
        assert_eq!(n(&mut s, Arrival::Data), 3);
        assert_eq!(n(&mut s, Arrival::Request), 0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(n(&mut s, Arrival::Request), 0, "t0 still");
        assert_eq!(
            (0..20)
                .filter(|_| s.arrived(&1, 1, Arrival::Request, t1))
                .count(),
            5
        );
    }

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
        // Time going back neither refills nor breaks the bucket.
        assert!(s.allow(&2, t1));
    }

    #[test]
    fn table_is_bounded_and_keeps_what_is_heard_again() {
        let t0 = Instant::now();
        let mut s = Sources::<u32>::new(10, 5, 4, (1, 2));
        s.received(&0, 10, t0);
        s.received(&1, 10, t0);
        // Young is full (2 = cap / 2): 2 starts a new generation.
        s.received(&2, 10, t0);
        // 0 is heard again: it moves to the young generation.
        s.received(&0, 1, t0);
        assert_eq!(s.len(), 3);
        s.check().unwrap();
        // 3 turns the generations again: 1, never heard again, goes.
        s.received(&3, 1, t0);
        assert_eq!(s.budget(&1), Some(0));
        assert_eq!(s.budget(&0), Some(11));
        assert_eq!(s.evicted(), 1);
        assert!(s.len() <= 4);
        s.check().unwrap();
    }

    #[test]
    fn silent_sources_are_forgotten_after_two_generations() {
        let t0 = Instant::now();
        let mut s = Sources::<u32>::new(10, 5, 4096, (1, 2));
        s.received(&1, 10, t0);
        s.received(&2, 10, t0);
        let t1 = t0 + GENERATION + Duration::from_secs(1);
        s.received(&2, 10, t1);
        assert_eq!(s.len(), 2, "one generation of silence is remembered");
        let t2 = t1 + GENERATION + Duration::from_secs(1);
        s.received(&2, 10, t2);
        assert_eq!(s.budget(&1), Some(0));
        assert_eq!(s.budget(&2), Some(30));
        assert_eq!(s.len(), 1);
        // A long silence forgets everything at once.
        let t3 = t2 + GENERATION * 5;
        s.received(&3, 1, t3);
        assert_eq!(s.len(), 1);
        assert_eq!(s.budget(&2), Some(0));
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
        assert!(s.probe_due(&1, t0 + Duration::from_secs(2), Duration::from_secs(1)));
        s.verify(&1, t0);
        assert_eq!(s.budget(&1), None);
        assert!(!s.probe_due(&1, t0 + Duration::from_secs(5), Duration::from_secs(1)));
    }

    #[test]
    fn deferred_request_is_taken_once() {
        let t0 = Instant::now();
        let mut s = Sources::<u32>::new(10, 5, 8, (1, 2));
        s.received(&1, 50, t0);
        assert_eq!(s.take_deferred(&1), None);
        s.defer(&1, 7, false);
        s.defer(&1, 9, true);
        assert_eq!(s.take_deferred(&1), Some((9, true)));
        assert_eq!(s.take_deferred(&1), None);
        assert!(s.take_free_reply(&1, 1));
        assert!(!s.take_free_reply(&1, 1));
    }

    #[test]
    fn data_of_verified_sources_has_its_own_bucket() {
        let t0 = Instant::now();
        let mut s = Sources::<u32>::new(10, 5, 8, (1, 2)).with_data_bucket(1000, 100);
        assert_eq!((0..20).filter(|_| s.allow(&1, t0)).count(), 5);
        // Unverified, it has no Data bucket.
        assert!(!s.allow_data(&1, t0));
        s.verify(&1, t0);
        // Requests are spent; the Data bucket is not.
        assert_eq!((0..200).filter(|_| s.allow_data(&1, t0)).count(), 100);
        let t1 = t0 + Duration::from_millis(50);
        assert_eq!((0..200).filter(|_| s.allow_data(&1, t1)).count(), 50);
        assert_eq!((0..20).filter(|_| s.allow(&1, t1)).count(), 0);
    }

    #[test]
    fn entries_stay_small() {
        assert!(std::mem::size_of::<Source>() <= 20);
        assert_eq!(std::mem::align_of::<Source>(), 4);
        assert!(std::mem::size_of::<(u32, Source)>() <= 24);
    }

    #[test]
    fn deferred_request_lives_and_dies_with_its_entry() {
        let t0 = Instant::now();
        let mut s = Sources::<u32>::new(10, 5, 4, (1, 2));
        s.received(&1, 50, t0);
        s.defer(&1, 7, true);
        s.received(&2, 10, t0);
        // 3 turns the generations; 1 is in the old one, its txn kept.
        s.received(&3, 10, t0);
        s.received(&5, 10, t0);
        s.check().unwrap();
        // 1 heard again moves to the young generation, which is full: the
        // generations turn while its entry is in neither.
        s.received(&1, 10, t0);
        s.check().unwrap();
        assert_eq!(s.verify_and_take_deferred(&1, t0), Some((7, true)));
        // 4 defers, then is forgotten with its generation: so is its txn.
        s.received(&4, 50, t0);
        s.defer(&4, 9, false);
        for a in 10..14 {
            s.received(&a, 10, t0);
        }
        assert_eq!(s.budget(&4), Some(0), "forgotten");
        s.check().unwrap();
        assert!(s.deferred.is_empty());
    }

    #[test]
    fn deferred_txn_keeps_all_64_bits() {
        let t0 = Instant::now();
        let mut s = Sources::<u32>::new(10, 5, 8, (1, 2));
        s.received(&1, 50, t0);
        s.defer(&1, 0xDEAD_BEEF_0123_4567, true);
        assert_eq!(s.take_deferred(&1), Some((0xDEAD_BEEF_0123_4567, true)));
    }

    #[test]
    fn old_generation_gives_back_its_room_as_it_drains() {
        let t0 = Instant::now();
        let mut s = Sources::<u32>::new(10, 5, 4096, (1, 2));
        for a in 0..200 {
            s.received(&a, 10, t0);
        }
        let full = s.heap_bytes();
        // A generation later every source is heard again, one by one, and
        // moves to the young map: the old one must not stay full-sized.
        let t1 = t0 + GENERATION + Duration::from_secs(1);
        for a in 0..200 {
            s.received(&a, 10, t1);
        }
        assert_eq!(s.len(), 200);
        s.check().unwrap();
        assert!(
            s.heap_bytes() < full * 3 / 2,
            "{} bytes for 200 sources, {full} before they moved",
            s.heap_bytes()
        );
    }
}
