//! Bounded bookkeeping for application messages: a window of ids already
//! seen (so each message is handed up once) and reassembly of fragments.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::hash::Hash;

/// Names one fragment of one message: origin id, message id, fragment index.
pub type FragmentKey = (Hash, u64, u16);

/// A window of the most recent keys seen; the oldest fall out past `cap`.
#[derive(Debug, Clone)]
pub struct Dedup {
    cap: usize,
    order: VecDeque<FragmentKey>,
    set: BTreeMap<FragmentKey, ()>,
}

impl Dedup {
    /// A window of `cap` keys.
    pub fn new(cap: usize) -> Dedup {
        Dedup {
            cap: cap.max(1),
            order: VecDeque::new(),
            set: BTreeMap::new(),
        }
    }

    /// Records `key`; true if it was not in the window yet.
    pub fn insert(&mut self, key: FragmentKey) -> bool {
        if self.set.contains_key(&key) {
            return false;
        }
        if self.order.len() >= self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(key);
        self.set.insert(key, ());
        true
    }

    /// Whether `key` is in the window.
    pub fn contains(&self, key: &FragmentKey) -> bool {
        self.set.contains_key(key)
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
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
    Complete(Vec<u8>),
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
        data: Vec<u8>,
        now: Instant,
    ) -> Assembled {
        if count <= 1 {
            return Assembled::Complete(data);
        }
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
        Assembled::Complete(out)
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
    fn dedup_window_forgets_the_oldest() {
        let mut d = Dedup::new(2);
        let k = |n| (Hash::ZERO, n, 0);
        assert!(d.insert(k(1)));
        assert!(!d.insert(k(1)));
        assert!(d.insert(k(2)));
        assert!(d.insert(k(3)));
        assert!(!d.contains(&k(1)));
        assert_eq!(d.len(), 2);
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
            Assembled::Complete(b"hello".to_vec())
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

    /// Regression: empty fragments announcing 65,535 siblings each used to
    /// allocate a 1.5 MB slot vector while being charged 0 bytes, so a few
    /// hundred datagrams held gigabytes. Now each message is charged for
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
