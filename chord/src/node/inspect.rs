//! Pure protocol: what a node can be asked about itself (state, tables, counters, sizes).

use super::*;

impl<A: Address> LocalNode<A> {
    /// This node's id.
    pub fn id(&self) -> Hash {
        self.me.id
    }

    /// This node's identity as others see it.
    pub fn me(&self) -> &NodeRef<A> {
        &self.me
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether the node is part of a ring.
    pub fn is_joined(&self) -> bool {
        self.phase == Phase::Joined
    }

    /// The immediate successor; `None` while alone in the ring.
    pub fn successor(&self) -> Option<&NodeRef<A>> {
        self.table.successor()
    }

    /// The successor list, nearest first.
    pub fn successors(&self) -> &[NodeRef<A>] {
        self.table.successors()
    }

    /// The predecessor, when known.
    pub fn predecessor(&self) -> Option<&NodeRef<A>> {
        self.table.predecessor()
    }

    /// The distinct fingers, nearest first.
    pub fn fingers(&self) -> &[NodeRef<A>] {
        self.table.fingers()
    }

    /// Every distinct peer in the routing state, sorted by id.
    pub fn peers(&self) -> &[NodeRef<A>] {
        &self.known
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Where a message for `key` would go from here, and whether this node
    /// already knows the key's owner: `(Some(owner), _)` or `(None, next hop)`.
    pub fn route(&self, key: &Hash) -> (Option<&NodeRef<A>>, Option<&NodeRef<A>>) {
        match self.table.next_hop(key, &[]) {
            NextHop::Owner(Some(o)) => (Some(o), None),
            NextHop::Owner(None) => (Some(&self.me), None),
            NextHop::Forward(n) => (None, Some(n)),
        }
    }

    /// Checks the node's invariants, for tests and fuzzing: the routing
    /// table's (see [`RoutingTable::check_invariants`]), and every table
    /// within its configured bound. `Err` names the first one broken.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        self.table.check_invariants()?;
        if let Some(t) = self.earliest_timer() {
            if self.wake.is_none_or(|w| w > t) {
                return Err(format!(
                    "poll_timeout {:?} is later than the earliest timer {t:?}",
                    self.wake
                ));
            }
        }
        let cfg = &self.cfg;
        let bounds = [
            ("pending requests", self.pending.len(), cfg.max_pending),
            ("outgoing sends", self.outgoing.len(), cfg.max_pending),
            ("dedup window", self.seen.len(), cfg.dedup_window),
            (
                "reassembly bytes",
                self.reassembly.bytes(),
                cfg.reassembly_bytes,
            ),
            ("sources", self.sources.len(), cfg.max_sources),
            ("dead memory", self.dead.len(), DEAD_MEMORY_LEN),
            ("past peers", self.past.len(), cfg.past_peers),
            ("probed backups", self.probed.len(), cfg.successor_list_len),
            (
                "maintenance lookups",
                self.lookups
                    .values()
                    .filter(|l| matches!(l.purpose, Purpose::Join | Purpose::Finger(_)))
                    .count(),
                Hash::BITS as usize + 1,
            ),
            (
                "reach lookups",
                self.lookups
                    .values()
                    .filter(|l| l.purpose == Purpose::Reach)
                    .count(),
                punch::REACH_LOOKUPS,
            ),
        ];
        for (what, len, max) in bounds {
            if len > max {
                return Err(format!("{what}: {len} > {max}"));
            }
        }
        self.sources.check()?;
        if self.phase == Phase::Idle && !self.table.successors().is_empty() {
            return Err("a node outside any ring has successors".into());
        }
        Ok(())
    }

    /// Per-source bookkeeping, for tests: addresses tracked, and how many
    /// were forgotten to make room.
    #[doc(hidden)]
    pub fn source_table(&self) -> (usize, u64) {
        (self.sources.len(), self.sources.evicted())
    }

    /// Requests awaiting a reply, for tests.
    #[doc(hidden)]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Bytes of memory this node holds: the struct itself and an estimate
    /// of the heap behind its tables, from their capacities (hash tables
    /// as `hashbrown` lays them out, datagrams waiting to leave or to be
    /// sent again at their length). The allocator's own overhead and what
    /// an address type holds on the heap are left out. The simulator sums
    /// it over its nodes to report bytes per node.
    ///
    /// ```
    /// use std::time::Instant;
    /// use chord::{Config, Hash, LocalNode, NodeRef};
    /// let node = LocalNode::new(Config::default(), NodeRef::new(Hash::of("a"), 1u32), 1, Instant::now()).unwrap();
    /// assert!(node.state_bytes() >= std::mem::size_of::<LocalNode<u32>>());
    /// ```
    pub fn state_bytes(&self) -> usize {
        use crate::memory::{hash_table_bytes, vec_bytes};
        use std::mem::size_of;
        let pending = hash_table_bytes(self.pending.capacity(), size_of::<(u64, Pending<A>)>())
            + self
                .pending
                .values()
                .map(|p| {
                    p.bytes.len()
                        + match &p.waiting {
                            Waiting::Admit { roles, .. } => vec_bytes::<Role>(roles.capacity()),
                            Waiting::Data { exclude, .. } => vec_bytes::<Hash>(exclude.capacity()),
                            Waiting::Forward { exclude, .. } => {
                                size_of::<FindSuccessor<A>>()
                                    + vec_bytes::<Hash>(exclude.capacity())
                            }
                            _ => 0,
                        }
                })
                .sum::<usize>();
        let backoff = hash_table_bytes(self.backoff.capacity(), size_of::<(A, Backoff)>())
            + self
                .backoff
                .values()
                .map(|b| vec_bytes::<u64>(b.held.capacity()))
                .sum::<usize>();
        let queues = vec_bytes::<Transmit<A>>(self.transmits.capacity())
            + self.transmits.iter().map(|t| t.bytes.len()).sum::<usize>()
            + vec_bytes::<Event<A>>(self.events.capacity())
            + vec_bytes::<(A, Vec<crate::wire::Confirmed>)>(self.acks.capacity())
            + vec_bytes::<Vec<crate::wire::Confirmed>>(self.spare_acks.capacity())
            + self
                .acks
                .iter()
                .map(|(_, l)| l.capacity())
                .chain(self.spare_acks.iter().map(Vec::capacity))
                .map(vec_bytes::<crate::wire::Confirmed>)
                .sum::<usize>();
        size_of::<Self>()
            + self.table.heap_bytes()
            + pending
            + backoff
            + vec_bytes::<(u64, Lookup)>(self.lookups.capacity())
            + vec_bytes::<NodeRef<A>>(self.known.capacity())
            + vec_bytes::<(Hash, Instant)>(self.dead.capacity())
            + vec_bytes::<(Hash, bool)>(self.probed.capacity())
            + vec_bytes::<Relay<A>>(self.relays.capacity())
            + hash_table_bytes(self.outgoing.capacity(), size_of::<(u64, data::Outgoing)>())
            + self.seen.heap_bytes()
            + self.reassembly.heap_bytes()
            + self.sources.heap_bytes()
            + self
                .identity
                .as_ref()
                .map_or(0, |i| size_of::<identity::Identity<A>>() + i.heap_bytes())
            + vec_bytes::<PastPeer<A>>(self.past.capacity())
            + self.punch.heap_bytes()
            + self.relay.heap_bytes()
            + queues
    }
}
