//! The identity check (`LocalNode::with_identity`) with a small cache of
//! addresses whose id was derived already.
//!
//! Deriving an id is costly for UDP peers (an address formatted to text and
//! hashed with SHA-256: about 3,000 instructions), and every message names
//! at least one node: every `Data` datagram names its origin. The cache is
//! direct-mapped, [`SLOTS`] entries of (address, derived id), allocated at
//! the first check, so a node that never checks identities (the simulator)
//! pays one pointer. A miss, or an address evicted by another that maps to
//! the same slot, costs one derivation, as without the cache; the cache only
//! ever holds ids `derive` computed, so it cannot change a verdict.

use std::hash::Hasher;

use crate::hash::Hash;

/// Entries of the cache: a node talks to its successors, fingers and
/// predecessor (about 20 addresses in a ring of thousands) far more often
/// than to anyone else. 32 entries of a `PeerAddr` and an id are 2 KiB per
/// peer.
const SLOTS: usize = 32;

/// How ids derive from addresses, and the addresses checked recently.
#[derive(Clone, Debug)]
pub(super) struct Identity<A> {
    derive: fn(&A) -> Hash,
    slots: Vec<Option<(A, Hash)>>,
    /// Checks answered from the cache, and derivations (for tests).
    pub(super) hits: u64,
    pub(super) misses: u64,
}

impl<A: Clone + Eq + std::hash::Hash> Identity<A> {
    pub(super) fn new(derive: fn(&A) -> Hash) -> Identity<A> {
        Identity {
            derive,
            slots: Vec::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// The id of `addr`.
    pub(super) fn derive(&self, addr: &A) -> Hash {
        (self.derive)(addr)
    }

    /// Bytes of the heap the cache holds.
    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<(A, Hash)>>()
    }

    /// Whether `id` is the id of `addr`.
    pub(super) fn matches(&mut self, addr: &A, id: &Hash) -> bool {
        if self.slots.is_empty() {
            self.slots = vec![None; SLOTS];
        }
        let slot = slot_of(addr);
        if let Some((a, derived)) = &self.slots[slot] {
            if a == addr {
                self.hits += 1;
                return derived == id;
            }
        }
        self.misses += 1;
        let derived = (self.derive)(addr);
        let ok = derived == *id;
        self.slots[slot] = Some((addr.clone(), derived));
        ok
    }
}

/// The slot of `addr`: a fast unkeyed hash (FxHash; std's SipHash cost
/// about 300 instructions per message here, and its fixed keys were no
/// secret either). An attacker who picks addresses that share a slot only
/// costs the node the derivations it made before there was a cache.
fn slot_of<A: std::hash::Hash>(addr: &A) -> usize {
    let mut h = rustc_hash::FxHasher::default();
    addr.hash(&mut h);
    h.finish() as usize % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(a: &String) -> Hash {
        Hash::of(a.as_bytes())
    }

    #[test]
    fn the_cache_gives_the_verdict_derive_gives() {
        let mut c = Identity::new(id_of);
        let addrs: Vec<String> = (0..500).map(|i| format!("10.0.0.{i}:4000")).collect();
        for round in 0..3 {
            for a in &addrs {
                assert!(c.matches(a, &id_of(a)), "round {round}: {a}");
                assert!(
                    !c.matches(a, &Hash::of("someone else")),
                    "round {round}: {a}"
                );
            }
        }
        // 500 addresses in 32 slots: most checks miss, none is wrong.
        assert!(c.misses > 0);
    }

    #[test]
    fn a_few_addresses_are_derived_once() {
        let mut c = Identity::new(id_of);
        let addrs: Vec<String> = (0..4).map(|i| format!("10.0.0.{i}:4000")).collect();
        for _ in 0..100 {
            for a in &addrs {
                assert!(c.matches(a, &id_of(a)));
            }
        }
        // Four addresses may share a slot; at worst they evict each other,
        // but not in every round.
        assert!(c.misses <= 4 + 99 * 2, "misses {}", c.misses);
        assert!(c.hits >= 100, "hits {}", c.hits);
    }
}
