//! A node's routing state: predecessor, successor list and finger table.
//!
//! Fingers are kept compactly. Chord's finger `i` is the first node at
//! distance `>= 2^i`; in a ring of N nodes only about log2(N) of the 256
//! fingers differ, so the table keeps at most one node per *bucket*
//! `[2^i, 2^(i+1))` (the first one known there), sorted by distance. The
//! finger `i` of the paper is then the first entry at or beyond bucket `i`.

use crate::hash::{Hash, Interval};
use crate::wire::NodeRef;

/// Where a message for a key should go next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextHop<'a, A> {
    /// This node is the key's predecessor: the key belongs to this node
    /// (`None`, a lone node) or to the successor given.
    Owner(Option<&'a NodeRef<A>>),
    /// The key is further on: forward to the closest preceding node known.
    Forward(&'a NodeRef<A>),
}

/// Predecessor, successor list and fingers of one node.
#[derive(Clone, Debug)]
pub struct RoutingTable<A> {
    me: Hash,
    me_addr: Option<A>,
    max_successors: usize,
    predecessor: Option<NodeRef<A>>,
    successors: Vec<NodeRef<A>>,
    fingers: Vec<NodeRef<A>>,
    version: u64,
}

impl<A: Clone + PartialEq> RoutingTable<A> {
    /// An empty table for node `me` that keeps up to `max_successors`.
    pub fn new(me: Hash, max_successors: usize) -> RoutingTable<A> {
        RoutingTable {
            me,
            me_addr: None,
            max_successors: max_successors.max(1),
            predecessor: None,
            successors: Vec::new(),
            fingers: Vec::new(),
            version: 0,
        }
    }

    /// Tells the table this node's own address: entries that claim it
    /// under another id (a stale incarnation, or a lie) would make the node
    /// send to itself, and are refused like entries with its id.
    pub fn with_address(mut self, addr: A) -> RoutingTable<A> {
        self.me_addr = Some(addr);
        self
    }

    /// Whether `n` is this node, by id or by address.
    fn is_me(&self, n: &NodeRef<A>) -> bool {
        n.id == self.me || self.me_addr.as_ref() == Some(&n.addr)
    }

    /// Checks the table's invariants: no entry for this node, successors
    /// strictly increasing in distance and at most the configured number,
    /// fingers strictly increasing in distance with at most one per bucket.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.predecessor.as_ref().is_some_and(|p| self.is_me(p)) {
            return Err("predecessor is this node".into());
        }
        if self.successors.len() > self.max_successors {
            return Err(format!(
                "{} successors, at most {}",
                self.successors.len(),
                self.max_successors
            ));
        }
        for (name, list) in [("successor", &self.successors), ("finger", &self.fingers)] {
            let mut last = Hash::ZERO;
            let mut last_bucket = None;
            for n in list.iter() {
                if self.is_me(n) {
                    return Err(format!("{name} list holds this node"));
                }
                let d = self.me.distance_to(&n.id);
                if d <= last {
                    return Err(format!("{name} list not strictly sorted by distance"));
                }
                last = d;
                if name == "finger" {
                    let b = self.me.bucket_of(&n.id);
                    if b.is_none() || b == last_bucket {
                        return Err("two fingers in one bucket".into());
                    }
                    last_bucket = b;
                }
            }
        }
        Ok(())
    }

    /// Bytes of the heap the table holds (its lists' capacities).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<NodeRef<A>>() * (self.successors.capacity() + self.fingers.capacity())
    }

    /// A number that changes whenever the set of nodes in the table may
    /// have changed; equal numbers mean nothing changed.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The immediate successor, `None` while this node is alone.
    pub fn successor(&self) -> Option<&NodeRef<A>> {
        self.successors.first()
    }

    /// The successor list, nearest first.
    pub fn successors(&self) -> &[NodeRef<A>] {
        &self.successors
    }

    /// The predecessor, if known.
    pub fn predecessor(&self) -> Option<&NodeRef<A>> {
        self.predecessor.as_ref()
    }

    /// Distinct fingers, nearest first.
    pub fn fingers(&self) -> &[NodeRef<A>] {
        &self.fingers
    }

    /// Sets the predecessor.
    pub fn set_predecessor(&mut self, pred: Option<NodeRef<A>>) {
        let pred = pred.filter(|p| !self.is_me(p));
        if pred.as_ref().map(|p| p.id) != self.predecessor.as_ref().map(|p| p.id) {
            self.version += 1;
        }
        self.predecessor = pred;
    }

    /// Replaces the successor list with `list`, normalised: without this
    /// node, cut where the list wraps around back to this node, without
    /// repeats, strictly increasing in distance, at most the configured length.
    pub fn set_successors(&mut self, list: impl IntoIterator<Item = NodeRef<A>>) {
        let mut out: Vec<NodeRef<A>> = Vec::with_capacity(self.max_successors);
        let mut last = Hash::ZERO;
        for n in list {
            if n.id == self.me {
                break; // wrapped around the ring
            }
            if self.is_me(&n) {
                continue; // our address under another id: a stale incarnation
            }
            let d = self.me.distance_to(&n.id);
            if d <= last {
                continue; // repeat, or out of order
            }
            last = d;
            out.push(n);
            if out.len() == self.max_successors {
                break;
            }
        }
        let same = out.len() == self.successors.len()
            && out.iter().zip(&self.successors).all(|(a, b)| a.id == b.id);
        if !same {
            self.version += 1;
        }
        self.successors = out;
    }

    /// Removes `id` from every part of the table; true if it was anywhere.
    pub fn remove(&mut self, id: &Hash) -> bool {
        let mut found = false;
        if self.predecessor.as_ref().is_some_and(|p| p.id == *id) {
            self.predecessor = None;
            found = true;
        }
        let before = self.successors.len() + self.fingers.len();
        self.successors.retain(|n| n.id != *id);
        self.fingers.retain(|n| n.id != *id);
        found |= before != self.successors.len() + self.fingers.len();
        if found {
            self.version += 1;
        }
        found
    }

    /// Removes `id` from the fingers and from the successor list except its
    /// head (whose death only the failure detector declares). True if removed.
    pub fn demote(&mut self, id: &Hash) -> bool {
        let before = self.successors.len() + self.fingers.len();
        if self.successors.len() > 1 {
            let head = self.successors[0].id;
            self.successors.retain(|n| n.id != *id || n.id == head);
        }
        self.fingers.retain(|n| n.id != *id);
        let changed = before != self.successors.len() + self.fingers.len();
        if changed {
            self.version += 1;
        }
        changed
    }

    /// Whether [`insert_finger`](Self::insert_finger) would take `n`: its
    /// bucket is empty, or `n` is nearer the bucket's start than the node
    /// there. Nothing changes.
    pub fn wants_finger(&self, n: &NodeRef<A>) -> bool {
        if self.is_me(n) {
            return false;
        }
        let Some(bucket) = self.me.bucket_of(&n.id) else {
            return false;
        };
        let d = self.me.distance_to(&n.id);
        let pos = self
            .fingers
            .partition_point(|f| self.me.distance_to(&f.id) < d);
        if self.fingers.get(pos).is_some_and(|f| f.id == n.id) {
            return false;
        }
        !(pos > 0 && self.me.bucket_of(&self.fingers[pos - 1].id) == Some(bucket))
    }

    /// Offers `n` as a finger: it goes into its bucket if the bucket is empty
    /// or `n` is nearer the bucket's start than the node there.
    pub fn insert_finger(&mut self, n: NodeRef<A>) {
        if self.is_me(&n) {
            return;
        }
        let Some(bucket) = self.me.bucket_of(&n.id) else {
            return;
        };
        let d = self.me.distance_to(&n.id);
        let pos = self
            .fingers
            .partition_point(|f| self.me.distance_to(&f.id) < d);
        if self.fingers.get(pos).is_some_and(|f| f.id == n.id) {
            return;
        }
        // The entry after `pos` may share the bucket; `n` is nearer, so it wins.
        if let Some(next) = self.fingers.get(pos) {
            if self.me.bucket_of(&next.id) == Some(bucket) {
                self.fingers[pos] = n;
                self.version += 1;
                return;
            }
        }
        // The entry before `pos` may share the bucket and is nearer: keep it.
        if pos > 0 && self.me.bucket_of(&self.fingers[pos - 1].id) == Some(bucket) {
            return;
        }
        // Grown a few entries at a time: a ring of N nodes gives about
        // log2(N) + 4 fingers, and doubling would leave most nodes up to
        // half a list (hundreds of bytes) of room they never use.
        if self.fingers.len() == self.fingers.capacity() {
            self.fingers.reserve_exact(4);
        }
        self.fingers.insert(pos, n);
        self.version += 1;
    }

    /// Records a finger lookup's answer: `owner` is the successor of
    /// `me + 2^bucket`, so no live node lies in `[me + 2^bucket, owner)` and
    /// any finger there is stale.
    pub fn fix_finger(&mut self, bucket: u32, owner: NodeRef<A>) {
        if self.is_me(&owner) {
            return;
        }
        let lo = Hash::pow2(bucket);
        let hi = self.me.distance_to(&owner.id);
        if hi >= lo {
            let before = self.fingers.len();
            self.fingers.retain(|f| {
                let d = self.me.distance_to(&f.id);
                d < lo || d >= hi
            });
            if before != self.fingers.len() {
                self.version += 1;
            }
        }
        self.insert_finger(owner);
    }

    /// The bucket of the immediate successor: fingers in or below it are the
    /// successor itself and need no repair.
    pub fn successor_bucket(&self) -> Option<u32> {
        self.successor().and_then(|s| self.me.bucket_of(&s.id))
    }

    /// Where a message for `key` goes next, skipping nodes in `exclude`
    /// (those that failed to acknowledge it already). When every node
    /// before `key` is excluded, the successor is still the only way on,
    /// and it is returned as a hop even though excluded: it is never named
    /// the owner of a key past it (a lost acknowledgement once made the
    /// successor the "owner" of keys it does not hold).
    pub fn next_hop(&self, key: &Hash, exclude: &[Hash]) -> NextHop<'_, A> {
        let Some(succ) = self.successor() else {
            return NextHop::Owner(None);
        };
        if Interval::open_closed(self.me, succ.id).contains(key) {
            return NextHop::Owner(Some(succ));
        }
        NextHop::Forward(self.closest_preceding(key, exclude).unwrap_or(succ))
    }

    /// The known node in `(me, key)` nearest to `key`, from the fingers and
    /// the successor list, not in `exclude`.
    pub fn closest_preceding(&self, key: &Hash, exclude: &[Hash]) -> Option<&NodeRef<A>> {
        let limit = self.me.distance_to(key);
        let mut best: Option<(&NodeRef<A>, Hash)> = None;
        for n in self
            .fingers
            .iter()
            .rev()
            .chain(self.successors.iter().rev())
        {
            let d = self.me.distance_to(&n.id);
            if d == Hash::ZERO || d >= limit || exclude.contains(&n.id) {
                continue;
            }
            if best.is_none_or(|(_, bd)| d > bd) {
                best = Some((n, d));
            }
        }
        best.map(|(n, _)| n)
    }

    /// How a broadcast covering the arc `(me, limit)` splits: every known
    /// node in the arc (fingers and successors), nearest first, each with the
    /// end of the sub-arc it covers in turn (the next child, or `limit`).
    /// `limit == me` covers the whole ring.
    pub fn broadcast_children(&self, limit: &Hash) -> Vec<(NodeRef<A>, Hash)> {
        let arc = Interval::open(self.me, *limit);
        let mut children: Vec<&NodeRef<A>> = self
            .fingers
            .iter()
            .chain(self.successors.iter())
            .filter(|n| arc.contains(&n.id))
            .collect();
        children.sort_by_key(|n| self.me.distance_to(&n.id));
        children.dedup_by(|a, b| a.id == b.id);
        let ends: Vec<Hash> = children
            .iter()
            .skip(1)
            .map(|n| n.id)
            .chain(std::iter::once(*limit))
            .collect();
        children.into_iter().cloned().zip(ends).collect()
    }

    /// Every node the table refers to (with repeats).
    pub fn peers(&self) -> impl Iterator<Item = &NodeRef<A>> {
        self.predecessor
            .iter()
            .chain(self.successors.iter())
            .chain(self.fingers.iter())
    }

    /// Finds a node of the table by id.
    pub fn get(&self, id: &Hash) -> Option<&NodeRef<A>> {
        self.peers().find(|n| n.id == *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(x: u64) -> NodeRef<u32> {
        let mut b = [0u8; 32];
        b[24..].copy_from_slice(&x.to_be_bytes());
        NodeRef::new(Hash::from_bytes(b), x as u32)
    }

    fn table(me: u64) -> RoutingTable<u32> {
        RoutingTable::new(n(me).id, 4)
    }

    #[test]
    fn successor_list_is_normalised() {
        let mut t = table(100);
        t.set_successors([n(110), n(105), n(110), n(120), n(100), n(130)]);
        let ids: Vec<u32> = t.successors().iter().map(|s| s.addr).collect();
        assert_eq!(ids, vec![110, 120]); // out-of-order 105 dropped, cut at self
        t.set_successors([n(101), n(102), n(103), n(104), n(105)]);
        assert_eq!(t.successors().len(), 4);
    }

    #[test]
    fn one_finger_per_bucket_nearest_wins() {
        let mut t = table(0);
        t.insert_finger(n(9)); // bucket 3: [8, 16)
        t.insert_finger(n(12));
        assert_eq!(
            t.fingers().iter().map(|f| f.addr).collect::<Vec<_>>(),
            vec![9]
        );
        t.insert_finger(n(8));
        assert_eq!(
            t.fingers().iter().map(|f| f.addr).collect::<Vec<_>>(),
            vec![8]
        );
        t.insert_finger(n(40)); // bucket 5
        t.insert_finger(n(3)); // bucket 1
        assert_eq!(
            t.fingers().iter().map(|f| f.addr).collect::<Vec<_>>(),
            vec![3, 8, 40]
        );
    }

    #[test]
    fn wants_finger_agrees_with_insert_finger() {
        let mut t = table(0);
        // A pseudo-random walk of offers: whenever wants_finger says yes the
        // table changes, and whenever it says no it does not.
        let mut x: u64 = 12345;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let cand = n(x >> 52);
            let wanted = t.wants_finger(&cand);
            let before = t.version();
            t.insert_finger(cand);
            assert_eq!(wanted, t.version() != before, "offer {}", x >> 52);
            t.check_invariants().unwrap();
        }
    }

    #[test]
    fn fix_finger_drops_stale_entries() {
        let mut t = table(0);
        t.insert_finger(n(17)); // bucket 4
        t.insert_finger(n(40)); // bucket 5
        t.fix_finger(4, n(50)); // successor(16) is 50: 17 and 40 are stale
        assert_eq!(
            t.fingers().iter().map(|f| f.addr).collect::<Vec<_>>(),
            vec![50]
        );
    }

    #[test]
    fn next_hop_routes_to_closest_preceding() {
        let mut t = table(0);
        t.set_successors([n(10), n(20)]);
        t.insert_finger(n(64));
        t.insert_finger(n(130));
        assert_eq!(t.next_hop(&n(5).id, &[]), NextHop::Owner(Some(&n(10))));
        assert_eq!(t.next_hop(&n(10).id, &[]), NextHop::Owner(Some(&n(10))));
        assert_eq!(t.next_hop(&n(100).id, &[]), NextHop::Forward(&n(64)));
        assert_eq!(t.next_hop(&n(130).id, &[]), NextHop::Forward(&n(64)));
        assert_eq!(t.next_hop(&n(131).id, &[]), NextHop::Forward(&n(130)));
        assert_eq!(
            t.next_hop(&n(131).id, &[n(130).id]),
            NextHop::Forward(&n(64))
        );
        assert_eq!(
            t.next_hop(&n(131).id, &[n(130).id, n(64).id, n(20).id]),
            NextHop::Forward(&n(10))
        );
        assert_eq!(table(0).next_hop(&n(5).id, &[]), NextHop::Owner(None));
    }

    #[test]
    fn next_hop_never_names_an_owner_past_the_successor() {
        let mut t = table(0);
        t.set_successors([n(10), n(20)]);
        t.insert_finger(n(64));
        // Every node before the key excluded: the successor is the way on,
        // not the owner of a key 120 past it.
        let all = [n(10).id, n(20).id, n(64).id];
        assert_eq!(t.next_hop(&n(130).id, &all), NextHop::Forward(&n(10)));
        // A key it does hold it still owns, excluded or not.
        assert_eq!(t.next_hop(&n(7).id, &all), NextHop::Owner(Some(&n(10))));
    }

    #[test]
    fn broadcast_children_tile_the_arc() {
        let mut t = table(0);
        t.set_successors([n(10), n(20)]);
        t.insert_finger(n(20));
        t.insert_finger(n(70));
        t.insert_finger(n(300));
        let whole = t.broadcast_children(&n(0).id);
        let got: Vec<(u32, Hash)> = whole.iter().map(|(c, l)| (c.addr, *l)).collect();
        assert_eq!(
            got,
            vec![
                (10, n(20).id),
                (20, n(70).id),
                (70, n(300).id),
                (300, n(0).id)
            ]
        );
        // A sub-arc gets only the nodes inside it.
        let part: Vec<u32> = t
            .broadcast_children(&n(70).id)
            .iter()
            .map(|(c, _)| c.addr)
            .collect();
        assert_eq!(part, vec![10, 20]);
    }

    #[test]
    fn check_invariants_catches_broken_tables() {
        let mut t = table(100).with_address(100);
        t.set_successors([n(110), n(120)]);
        t.insert_finger(n(300));
        assert_eq!(t.check_invariants(), Ok(()));
        // The normalising setters cannot produce these: poke the fields.
        let mut bad = t.clone();
        bad.successors.reverse();
        assert!(bad.check_invariants().is_err(), "unsorted successors");
        let mut bad = t.clone();
        bad.successors.push(n(100));
        assert!(bad.check_invariants().is_err(), "self in successors");
        let mut bad = t.clone();
        bad.fingers.push(n(301));
        assert!(bad.check_invariants().is_err(), "two fingers in one bucket");
        let mut bad = t.clone();
        bad.predecessor = Some(NodeRef::new(n(5).id, 100));
        assert!(
            bad.check_invariants().is_err(),
            "our address under another id"
        );
        let mut bad = t.clone();
        bad.successors = (101..110).map(n).collect();
        assert!(bad.check_invariants().is_err(), "too many successors");
        // Entries with our address under another id never get in.
        t.set_successors([NodeRef::new(n(111).id, 100), n(120)]);
        t.insert_finger(NodeRef::new(n(500).id, 100));
        t.set_predecessor(Some(NodeRef::new(n(50).id, 100)));
        assert_eq!(t.successors().len(), 1);
        assert_eq!(t.fingers().len(), 1);
        assert!(t.predecessor().is_none());
    }

    #[test]
    fn remove_and_demote() {
        let mut t = table(0);
        t.set_successors([n(10), n(20), n(30)]);
        t.insert_finger(n(20));
        t.set_predecessor(Some(n(500)));
        assert!(!t.demote(&n(10).id)); // the head stays
        assert!(t.demote(&n(20).id));
        assert_eq!(t.successors().len(), 2);
        assert!(t.fingers().is_empty());
        assert!(t.remove(&n(500).id));
        assert!(t.predecessor().is_none());
        assert!(t.remove(&n(10).id));
        assert_eq!(t.successor(), Some(&n(30)));
        assert!(!t.remove(&n(999).id));
    }
}
