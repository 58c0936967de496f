//! Bounded bookkeeping for application messages: a window of ids already
//! seen (so each message is handed up once) and reassembly of fragments.

use bytes::Bytes;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use crate::hash::Hash;

/// Names one fragment of one message: origin id, message id, fragment index.
pub type FragmentKey = (Hash, u64, u16);

/// The ids of messages (and fragments) handed up recently, each remembered
/// for at least `retention` (longer than a sender keeps retrying), so that a
/// late retry is recognised however many messages arrived meanwhile; and at
/// most `cap` of them, so that a flood costs bounded memory. Only when the
/// cap is reached before ids expire is the oldest forgotten early (counted
/// in [`Dedup::evicted_early`]).
///
/// Keys are stored as 64-bit fingerprints under a secret key (SipHash keyed
/// from the node's seed): about 40 bytes per id instead of about 100, and a
/// sender that does not know the key cannot aim collisions.
///
/// ```
/// use std::time::{Duration, Instant};
/// use chord::{delivery::Dedup, Hash};
/// let now = Instant::now();
/// let mut seen = Dedup::new(1000, Duration::from_secs(10), (1, 2));
/// assert!(seen.insert((Hash::ZERO, 7, 0), now));
/// assert!(!seen.insert((Hash::ZERO, 7, 0), now + Duration::from_secs(9)));
/// assert!(seen.insert((Hash::ZERO, 7, 0), now + Duration::from_secs(11)));
/// ```
#[derive(Debug, Clone)]
pub struct Dedup {
    cap: usize,
    retention: Duration,
    key: (u64, u64),
    order: VecDeque<(Instant, u64)>,
    set: HashSet<u64, BuildNoHashHasher>,
    evicted_early: u64,
}

impl Dedup {
    /// Remembers each id for `retention`, at most `cap` ids; fingerprints
    /// are keyed with `key` (draw it from the node's seed).
    pub fn new(cap: usize, retention: Duration, key: (u64, u64)) -> Dedup {
        Dedup {
            cap: cap.max(1),
            retention,
            key,
            order: VecDeque::new(),
            set: HashSet::default(),
            evicted_early: 0,
        }
    }

    fn fingerprint(&self, key: &FragmentKey) -> u64 {
        let mut h = siphasher::sip::SipHasher13::new_with_keys(self.key.0, self.key.1);
        h.write(&key.0.to_bytes());
        h.write_u64(key.1);
        h.write_u16(key.2);
        h.finish()
    }

    /// Forgets the ids older than the retention.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, fp)) = self.order.front() {
            if now.saturating_duration_since(at) < self.retention {
                break;
            }
            self.order.pop_front();
            self.set.remove(&fp);
        }
    }

    /// Records `key` at `now`; true if it was not remembered yet.
    pub fn insert(&mut self, key: FragmentKey, now: Instant) -> bool {
        self.expire(now);
        let fp = self.fingerprint(&key);
        if self.set.contains(&fp) {
            return false;
        }
        if self.order.len() >= self.cap {
            if let Some((_, old)) = self.order.pop_front() {
                self.set.remove(&old);
                self.evicted_early += 1;
            }
        }
        self.order.push_back((now, fp));
        self.set.insert(fp);
        true
    }

    /// Whether `key` is remembered.
    pub fn contains(&self, key: &FragmentKey) -> bool {
        self.set.contains(&self.fingerprint(key))
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Bytes of the heap the window holds (an estimate from the capacities
    /// of its queue and set).
    pub fn heap_bytes(&self) -> usize {
        crate::memory::vec_bytes::<(Instant, u64)>(self.order.capacity())
            + crate::memory::hash_table_bytes(self.set.capacity(), std::mem::size_of::<u64>())
    }

    /// Ids forgotten before their retention ran out, because the cap was
    /// reached: each is a message that a late retry could hand up twice.
    pub fn evicted_early(&self) -> u64 {
        self.evicted_early
    }
}

/// The fingerprints are keyed SipHash outputs already: the set uses them as
/// they are instead of hashing them again.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildNoHashHasher;

/// The hasher of [`BuildNoHashHasher`]: passes a `u64` through.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHashHasher(u64);

impl Hasher for NoHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl BuildHasher for BuildNoHashHasher {
    type Hasher = NoHashHasher;
    fn build_hasher(&self) -> NoHashHasher {
        NoHashHasher(0)
    }
}

#[derive(Debug, Clone)]
struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    have: usize,
    bytes: usize,
    started: Instant,
}

/// Bytes charged for each message held in reassembly, besides its data.
pub const PARTIAL_OVERHEAD: usize = 128;
/// Bytes charged per announced fragment of a message held in reassembly.
pub const SLOT_OVERHEAD: usize = std::mem::size_of::<Option<Vec<u8>>>();

/// Fragments awaiting their siblings, bounded in bytes and in age.
#[derive(Debug, Clone)]
pub struct Reassembly {
    max_bytes: usize,
    max_fragments: u16,
    max_age: Duration,
    bytes: usize,
    partial: BTreeMap<(Hash, u64), Partial>,
}

/// What a fragment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    /// The message is complete.
    Complete(Bytes),
    /// More fragments are needed.
    Incomplete,
    /// The fragment was refused: inconsistent, or over the memory bound.
    Refused,
}

impl Reassembly {
    /// Holds at most `max_bytes` of fragments, each message for at most `max_age`.
    pub fn new(max_bytes: usize, max_age: Duration) -> Reassembly {
        Reassembly {
            max_bytes,
            max_fragments: u16::MAX,
            max_age,
            bytes: 0,
            partial: BTreeMap::new(),
        }
    }

    /// Refuses messages announced in more than `max` fragments.
    pub fn with_max_fragments(mut self, max: u16) -> Reassembly {
        self.max_fragments = max.max(1);
        self
    }

    /// Adds fragment `index` of `count` of message `(origin, msg)`.
    ///
    /// Each message held is charged [`PARTIAL_OVERHEAD`] bytes plus
    /// [`SLOT_OVERHEAD`] per announced fragment on top of its data, so
    /// that empty fragments announcing many siblings cannot hold memory
    /// beyond the bound.
    pub fn add(
        &mut self,
        origin: Hash,
        msg: u64,
        index: u16,
        count: u16,
        data: impl Into<Bytes>,
        now: Instant,
    ) -> Assembled {
        let data = data.into();
        if count <= 1 {
            return Assembled::Complete(data);
        }
        let data = Vec::from(data);
        if index >= count || count > self.max_fragments {
            return Assembled::Refused;
        }
        self.expire(now);
        let key = (origin, msg);
        if !self.partial.contains_key(&key) {
            let overhead = PARTIAL_OVERHEAD + SLOT_OVERHEAD * count as usize;
            if self.bytes + overhead + data.len() > self.max_bytes {
                return Assembled::Refused;
            }
            self.bytes += overhead;
            self.partial.insert(
                key,
                Partial {
                    parts: vec![None; count as usize],
                    have: 0,
                    bytes: overhead,
                    started: now,
                },
            );
        }
        let Some(entry) = self.partial.get_mut(&key) else {
            return Assembled::Refused;
        };
        if entry.parts.len() != count as usize {
            return Assembled::Refused;
        }
        if entry.parts[index as usize].is_some() {
            return Assembled::Incomplete;
        }
        if self.bytes + data.len() > self.max_bytes {
            return Assembled::Refused;
        }
        self.bytes += data.len();
        entry.bytes += data.len();
        entry.parts[index as usize] = Some(data);
        entry.have += 1;
        if entry.have < count as usize {
            return Assembled::Incomplete;
        }
        let Some(done) = self.partial.remove(&key) else {
            return Assembled::Refused;
        };
        self.bytes -= done.bytes;
        let mut out = Vec::with_capacity(done.parts.iter().flatten().map(Vec::len).sum());
        for part in done.parts.into_iter().flatten() {
            out.extend_from_slice(&part);
        }
        Assembled::Complete(out.into())
    }

    /// Drops messages older than the age bound.
    pub fn expire(&mut self, now: Instant) {
        let max_age = self.max_age;
        let mut freed = 0;
        self.partial.retain(|_, p| {
            let keep = now.saturating_duration_since(p.started) < max_age;
            if !keep {
                freed += p.bytes;
            }
            keep
        });
        self.bytes -= freed;
    }

    /// Bytes held (data and overhead).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of the heap held: the fragments with what they are charged
    /// ([`Reassembly::bytes`]) and the index of messages.
    pub fn heap_bytes(&self) -> usize {
        self.bytes + crate::memory::btree_bytes::<(Hash, u64), Partial>(self.partial.len())
    }

    /// Messages held awaiting fragments.
    pub fn len(&self) -> usize {
        self.partial.len()
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.partial.is_empty()
    }

    /// The bound on [`Reassembly::bytes`].
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_cap_forgets_the_oldest_and_counts_it() {
        let now = Instant::now();
        let mut d = Dedup::new(2, Duration::from_secs(10), (1, 2));
        let k = |n| (Hash::ZERO, n, 0);
        assert!(d.insert(k(1), now));
        assert!(!d.insert(k(1), now));
        assert!(d.insert(k(2), now));
        assert!(d.insert(k(3), now));
        assert!(!d.contains(&k(1)));
        assert_eq!(d.len(), 2);
        assert_eq!(d.evicted_early(), 1);
    }

    /// Issue #10: a window of 8,192 ids lasted 0.8 s at 10,000 messages/s,
    /// less than the 10 s a sender retries, so a late retry of an evicted
    /// message was handed up again. Ids are now kept for the retention
    /// whatever the rate, and forgotten after it (bounded memory).
    #[test]
    fn dedup_remembers_for_the_retention_at_any_rate() {
        let start = Instant::now();
        let retention = Duration::from_secs(12);
        let mut d = Dedup::new(1 << 20, retention, (3, 4));
        let first = (Hash::of("origin"), 1, 0);
        assert!(d.insert(first, start));
        // 10,000 other messages a second for 11 s.
        for i in 0..110_000u64 {
            let t = start + Duration::from_micros(100 * i);
            assert!(d.insert((Hash::of("other"), i, 0), t));
        }
        let late = start + Duration::from_secs(11);
        assert!(!d.insert(first, late), "a retry 11 s later is a duplicate");
        assert_eq!(d.evicted_early(), 0);
        // Past the retention everything older is forgotten: memory follows
        // the rate times the retention, not the history.
        let later = start + retention + Duration::from_secs(12);
        assert!(d.insert((Hash::of("new"), 0, 0), later));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn reassembles_in_any_order_and_bounds_memory() {
        let now = Instant::now();
        // Room for 10 data bytes besides the bookkeeping of one 3-part message.
        let mut r = Reassembly::new(
            10 + PARTIAL_OVERHEAD + 3 * SLOT_OVERHEAD,
            Duration::from_secs(1),
        );
        assert_eq!(
            r.add(Hash::ZERO, 1, 1, 2, b"lo".to_vec(), now),
            Assembled::Incomplete
        );
        assert_eq!(
            r.add(Hash::ZERO, 1, 1, 2, b"lo".to_vec(), now),
            Assembled::Incomplete
        );
        assert_eq!(
            r.add(Hash::ZERO, 1, 0, 2, b"hel".to_vec(), now),
            Assembled::Complete(Bytes::from_static(b"hello"))
        );
        assert_eq!(r.bytes(), 0);
        assert_eq!(
            r.add(Hash::ZERO, 2, 0, 3, vec![0; 8], now),
            Assembled::Incomplete
        );
        assert_eq!(
            r.add(Hash::ZERO, 2, 1, 3, vec![0; 8], now),
            Assembled::Refused
        );
        assert_eq!(
            r.add(Hash::ZERO, 2, 3, 3, vec![0; 1], now),
            Assembled::Refused
        );
        assert_eq!(
            r.add(Hash::ZERO, 2, 0, 4, vec![0; 1], now),
            Assembled::Refused
        );
        r.expire(now + Duration::from_secs(2));
        assert_eq!(r.bytes(), 0);
    }

    /// Regression: empty fragments announcing 65,535 siblings each would
    /// allocate a 1.5 MB slot vector while being charged 0 bytes, so a few
    /// hundred datagrams would hold gigabytes. Each message is charged for
    /// its slots, and announced counts are capped.
    #[test]
    fn empty_fragments_cannot_hold_unbounded_memory() {
        let now = Instant::now();
        let mut r = Reassembly::new(1 << 20, Duration::from_secs(10));
        for msg in 0..10_000 {
            r.add(Hash::ZERO, msg, 0, u16::MAX, Vec::new(), now);
        }
        assert!(r.bytes() <= 1 << 20);
        assert!(r.len() <= (1 << 20) / (PARTIAL_OVERHEAD + SLOT_OVERHEAD * u16::MAX as usize) + 1);
        let mut r = Reassembly::new(1 << 20, Duration::from_secs(10)).with_max_fragments(8);
        assert_eq!(
            r.add(Hash::ZERO, 1, 0, 9, Vec::new(), now),
            Assembled::Refused
        );
        for msg in 0..100_000 {
            r.add(Hash::ZERO, msg, 0, 2, Vec::new(), now);
        }
        assert!(r.bytes() <= 1 << 20);
        assert!(r.len() <= (1 << 20) / PARTIAL_OVERHEAD);
    }
}
