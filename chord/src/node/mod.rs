//! [`LocalNode`]: one Chord node as a state machine without I/O.

mod data;
mod identity;
mod punch;
mod relay;
mod store;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::{Config, ConfigError, MAX_FINGERS_SENT, MAX_HOPS, VERSION};
use crate::delivery::{Dedup, Reassembly};
use crate::event::{Event, JoinError, LookupId, Stats, Transmit};
use crate::hash::{Hash, Interval};
use crate::routing::{NextHop, RoutingTable};
use crate::sources::{Arrival, Sources};
use crate::vecmap::VecMap;
pub use punch::{Path, Reach};

use crate::wire::{
    DecodeError, FindSuccessor, Found, GetNeighbors, HopAck, Leave, Message, Neighbors, NodeRef,
    Observe, Observed, OwnerCheck, Owns, Ping, SuccessorHint, VersionMismatch,
};

/// What the core needs of an address: it stores, compares, encodes and hands
/// it back, and never looks inside. `u32` in the simulator, a socket address
/// over UDP, a name over Ouroboros.
pub trait Address: Clone + Eq + std::hash::Hash + Debug + Serialize + DeserializeOwned {}
impl<T: Clone + Eq + std::hash::Hash + Debug + Serialize + DeserializeOwned> Address for T {}

/// How long a node that failed stays out of the tables, so that a neighbour
/// that has not noticed yet cannot hand it straight back.
const DEAD_MEMORY_PERIODS: u32 = 3;
/// Retransmissions to one destination per request timeout. Past them, a
/// request that times out waits for a sign of life from its destination
/// (any answer) before it is sent again: a peer that stops answering with
/// thousands of requests outstanding (paused, overloaded, gone) is sent a
/// few, not all of them again at each timeout. Its retries are counted
/// down as before, so it is declared failed no later than without this.
const RETRANSMIT_BURST: u32 = 16;
/// How many recently failed nodes are remembered.
const DEAD_MEMORY_LEN: usize = 64;
/// Full `Neighbors` replies (larger than their request) sent to an address
/// before it is verified: a joining node needs its first answers at once,
/// and a forged source gets no more than these few.
const UNVERIFIED_FULL_REPLIES: u8 = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase<A> {
    /// Created, neither `create` nor `join` called yet.
    Idle,
    /// Looking up our place through a bootstrap peer.
    Joining { bootstrap: A },
    /// Part of a ring.
    Joined,
    /// Left gracefully; inert.
    Left,
}

#[derive(Clone, Debug)]
enum Waiting<A> {
    /// A liveness probe of the predecessor or of a successor-list entry.
    Ping { peer: NodeRef<A> },
    /// An `OwnerCheck` to the owner a user lookup found: the answer is
    /// reported only once the owner has shown it is alive and says the key
    /// is its own.
    Confirm {
        lookup: u64,
        owner: NodeRef<A>,
        hops: u32,
    },
    /// A probe of a node heard of second-hand, before it takes `role` in
    /// the routing table: its Pong proves it is reachable where it claims.
    Admit { node: NodeRef<A>, roles: Vec<Role> },
    /// Stabilize with a successor.
    Stabilize { peer: NodeRef<A> },
    /// A probe of an address that asked for more than it sent: its Pong
    /// proves it receives there. Silence means nothing (it may be forged).
    Verify,
    /// An application message handed to the next hop (the datagram is
    /// kept in the pending entry, to be rerouted if the hop stays silent).
    Data {
        next: Hash,
        exclude: Vec<Hash>,
        /// The message: a `Delivered` for it from `next` proves the hop.
        msg: u64,
        /// When the message is routed around a silent `next`.
        reroute: Reroute,
    },
    /// An `Observe`: where does that peer see this node? With `join`, the
    /// join through that peer goes on once it answers.
    Observe { join: bool },
    /// A lookup handed to the next hop, awaiting its acknowledgement.
    /// Boxed: inline it would make every pending request (and every empty
    /// slot of the table of them) about 100 bytes larger.
    Forward {
        msg: Box<FindSuccessor<A>>,
        next: Option<Hash>,
        exclude: Vec<Hash>,
    },
    /// A `PunchRequest` to a rendezvous, for a punch towards `target`.
    PunchRequest { target: Hash },
    /// A `RelayReserve` to `relay` (see `relay.rs`).
    Reserve { relay: A },
    /// A punch packet to `peer` (see `punch.rs`).
    PunchPing { peer: NodeRef<A> },
}

/// When a message handed to a silent hop is routed around it (see
/// `LocalNode::recover_arc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reroute {
    /// Once the hop has failed, after its retries.
    OnFailure,
    /// At the hop's first timeout, while the hop is still asked again: a
    /// broadcast child's arc.
    AtFirstTimeout,
    /// Done already: not again when the hop fails.
    Done,
}

/// The place a node heard of second-hand takes once it answers a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Successor,
    Predecessor,
    Finger,
    /// The answer of the lookup repairing this finger bucket.
    FixFinger(u32),
    /// A peer that failed earlier: if it answers, the network between us
    /// has healed, and it is offered every place it fits.
    Past,
}

/// A peer that failed, remembered to be probed now and then.
#[derive(Clone, Debug)]
struct PastPeer<A> {
    node: NodeRef<A>,
    failed_at: Instant,
    next_probe: Instant,
    backoff: Duration,
}

/// Retransmissions to one destination (see [`RETRANSMIT_BURST`]).
#[derive(Clone, Debug)]
struct Backoff {
    /// When the current request timeout's count began.
    since: Instant,
    /// Retransmissions sent since then.
    sent: u32,
    /// Requests whose retransmission waits for the destination to answer.
    held: Vec<u64>,
}

#[derive(Clone, Debug)]
struct Pending<A> {
    to: A,
    /// The encoded request, shared with the transmit queue (no copy).
    bytes: Bytes,
    deadline: Instant,
    retries_left: u32,
    /// Listed in its destination's [`Backoff::held`].
    held: bool,
    waiting: Waiting<A>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    User,
    Join,
    Finger(u32),
    /// The owner of a key an unconfirmed send of this node (behind a
    /// NAT) goes to: it is probed directly, which opens the NAT to its
    /// confirmations (see `punch.rs`).
    Reach,
    /// Finding the owner for a store operation (its id).
    Store(u64),
}

#[derive(Clone, Debug)]
struct Lookup {
    key: Hash,
    purpose: Purpose,
    retry_at: Instant,
    deadline: Instant,
}

/// One Chord node, without I/O.
///
/// Feed it every datagram that arrives with [`handle_datagram`], call
/// [`handle_timeout`] when the instant [`poll_timeout`] gave has passed, and
/// after each call send what [`poll_transmit`] hands out and act on what
/// [`poll_event`] reports. It reads no clock (time is passed in), owns no
/// socket, and draws randomness only from the seed it was given.
///
/// ```
/// use std::time::Instant;
/// use chord::{Config, Event, Hash, LocalNode, NodeRef};
///
/// let now = Instant::now();
/// let mut a = LocalNode::new(Config::default(), NodeRef::new(Hash::of("a"), 1u32), 1, now).unwrap();
/// let mut b = LocalNode::new(Config::default(), NodeRef::new(Hash::of("b"), 2u32), 2, now).unwrap();
/// a.create(now);
/// b.join(1, now);
/// // A two-node network, delivering instantly.
/// for _ in 0..10 {
///     while let Some(t) = a.poll_transmit() { b.handle_datagram(now, 1, &t.bytes); }
///     while let Some(t) = b.poll_transmit() { a.handle_datagram(now, 2, &t.bytes); }
/// }
/// assert_eq!(b.successor().map(|s| s.addr), Some(1));
/// assert!(std::iter::from_fn(|| b.poll_event()).any(|e| matches!(e, Event::Joined { .. })));
/// ```
///
/// [`handle_datagram`]: LocalNode::handle_datagram
/// [`handle_timeout`]: LocalNode::handle_timeout
/// [`poll_timeout`]: LocalNode::poll_timeout
/// [`poll_transmit`]: LocalNode::poll_transmit
/// [`poll_event`]: LocalNode::poll_event
#[derive(Clone, Debug)]
pub struct LocalNode<A> {
    /// Shared by the nodes of one process that are given the same one (the
    /// simulator's): about 200 bytes a node otherwise.
    cfg: Arc<Config>,
    me: NodeRef<A>,
    phase: Phase<A>,
    table: RoutingTable<A>,
    pred_seen: Option<Instant>,
    /// The last node told that its successor is stale (by a last hop that
    /// overshot the key), and when: a burst of such sends costs one hint.
    hinted: Option<(A, Instant)>,
    finger_cursor: u32,
    next_tick: Option<Instant>,
    /// No timer of the node is due before this (`poll_timeout`): lowered
    /// whenever a deadline is set, made exact by `handle_timeout`. It may
    /// be early (the entry that set it is gone), which costs one wake-up
    /// that finds nothing due; it is never late.
    wake: Option<Instant>,
    /// Keyed by our own random txn ids (never a peer's), so a plain Fx
    /// hash map: a B-tree moved whole entries on each insert and removal.
    pending: FxHashMap<u64, Pending<A>>,
    /// Destinations whose requests timed out lately: retransmissions sent
    /// to each in the current request timeout, and the requests held back
    /// past [`RETRANSMIT_BURST`] (sent when it answers anything). Keyed by
    /// addresses this node sent requests to; at most one entry per
    /// destination with a request pending, pruned on each tick.
    backoff: FxHashMap<A, Backoff>,
    /// Few at a time: a sorted vector (a B-tree allocates a node of
    /// eleven entries for the first).
    lookups: VecMap<u64, Lookup>,
    known: Vec<NodeRef<A>>,
    known_version: u64,
    dead: VecDeque<(Hash, Instant)>,
    /// Backup successors probed since the head was suspected, and whether
    /// each has answered.
    probed: Vec<(Hash, bool)>,
    outgoing: FxHashMap<u64, data::Outgoing>,
    seen: Dedup,
    reassembly: Reassembly,
    /// Token buckets, byte counts and verification of source addresses.
    sources: Sources<A>,
    /// How ids derive from addresses, if they must (see `with_identity`).
    identity: Option<Box<identity::Identity<A>>>,
    /// Peers that failed, probed with backoff to notice a healed partition.
    past: Vec<PastPeer<A>>,
    rng: ChaCha8Rng,
    transmits: VecDeque<Transmit<A>>,
    events: VecDeque<Event<A>>,
    stats: Stats,
    /// Set while a `Data` datagram is handled when it was confirmed to its
    /// origin: the address the `Delivered` went to.
    confirmed_to: Option<A>,
    /// Confirmations waiting to leave, per origin address (see
    /// `acknowledge`): flushed by `poll_transmit`.
    acks: Vec<(A, Vec<crate::wire::Confirmed>)>,
    /// Emptied lists of `acks`, kept to fill again (at most
    /// `SPARE_ACK_LISTS`, of 8 entries): a confirmation allocates nothing.
    spare_acks: Vec<Vec<crate::wire::Confirmed>>,
    /// How many more messages the application can take, beyond the
    /// `Received` events still in `events` (see `set_receive_room`).
    receive_room: usize,
    /// `Received` events in `events`, not yet polled.
    received_queued: usize,
    /// Whether `me.addr` is a placeholder (see `set_provisional`).
    provisional: bool,
    /// Joiners whose lookup answer this node relays (see `FindSuccessor::via`).
    relays: Vec<Relay<A>>,
    /// Hole punching: punches under way, introductions, punched paths.
    punch: punch::PunchState<A>,
    relay: relay::RelayState<A>,
    /// The DHT store, made on first use (see `node/store.rs`).
    store: Option<Box<store::StoreState<A>>>,
}

/// A joiner whose lookup's answer comes back through this node.
#[derive(Clone, Debug)]
struct Relay<A> {
    to: A,
    lookup: u64,
    until: Instant,
}

/// Most joiners a node relays answers for at once: joins through one
/// bootstrap are few at a time, and a flood of joins only fills the list
/// (later ones are answered directly, as without relaying).
const JOIN_RELAYS: usize = 16;

/// Emptied confirmation lists a node keeps.
const SPARE_ACK_LISTS: usize = 4;

/// Gives back most of a map's room once it is three quarters empty,
/// keeping twice what it holds (all of it when empty): called once a
/// stabilize period, so a map regrows at most once a period.
fn trim<V>(map: &mut FxHashMap<u64, V>) {
    if map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// [`trim`] for a queue the driver drains after every call.
fn trim_queue<T>(queue: &mut VecDeque<T>) {
    if queue.len() * 4 < queue.capacity() {
        queue.shrink_to(queue.len() * 2);
    }
}

impl<A: Address> LocalNode<A> {
    /// A node with identity `me` (its id and the address others reach it
    /// at), drawing its randomness from `seed`. The configuration may be a
    /// [`Config`] or an `Arc<Config>` that many nodes share.
    pub fn new(
        cfg: impl Into<Arc<Config>>,
        me: NodeRef<A>,
        seed: u64,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        let cfg: Arc<Config> = cfg.into();
        cfg.validate()?;
        let _ = now;
        let reassembly = Reassembly::new(cfg.reassembly_bytes, cfg.send_timeout)
            .with_max_fragments(cfg.max_fragments());
        // The hash key comes from a stream of its own, so that the node's
        // other random choices do not depend on it.
        let mut key_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_50C5_0000_0001);
        let key = (key_rng.next_u64(), key_rng.next_u64());
        let sources = Sources::new(cfg.source_rate, cfg.source_burst, cfg.max_sources, key)
            .with_data_bucket(cfg.data_rate, cfg.data_burst);
        // A retry can arrive up to send_timeout after the first copy, plus
        // one attempt's worth of delay in the network.
        let retention = cfg.send_timeout + cfg.send_attempt_timeout;
        let seen = Dedup::new(
            cfg.dedup_window,
            retention,
            (key_rng.next_u64(), key_rng.next_u64()),
        );
        Ok(LocalNode {
            table: RoutingTable::new(me.id, cfg.successor_list_len).with_address(me.addr.clone()),
            cfg,
            me,
            phase: Phase::Idle,
            pred_seen: None,
            hinted: None,
            finger_cursor: 0,
            next_tick: None,
            wake: None,
            pending: FxHashMap::default(),
            backoff: FxHashMap::default(),
            lookups: VecMap::new(),
            known: Vec::new(),
            known_version: 0,
            dead: VecDeque::new(),
            probed: Vec::new(),
            outgoing: FxHashMap::default(),
            seen,
            reassembly,
            sources,
            identity: None,
            past: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            confirmed_to: None,
            acks: Vec::new(),
            spare_acks: Vec::new(),
            receive_room: usize::MAX,
            received_queued: 0,
            provisional: false,
            relays: Vec::new(),
            punch: punch::PunchState::default(),
            relay: relay::RelayState::default(),
            store: None,
        })
    }

    /// Requires every node named in a message to have the id `derive`
    /// gives for its address (for UDP peers, the SHA-256 of `"ip:port"`).
    /// A message naming a node whose id does not match is dropped and
    /// counted in [`Stats::dropped_bad_identity`], so that no node can pick
    /// its place on the ring or pose under another node's id. Off by
    /// default: simulations and custom DHTs choose ids freely.
    ///
    /// ```
    /// use std::time::Instant;
    /// use chord::{Config, Hash, LocalNode, NodeRef};
    ///
    /// fn id_of(addr: &String) -> Hash { Hash::of(addr.as_bytes()) }
    /// let me = NodeRef::new(id_of(&"a".to_string()), "a".to_string());
    /// let node = LocalNode::new(Config::default(), me, 1, Instant::now())
    ///     .unwrap()
    ///     .with_identity(id_of);
    /// assert!(node.stats().dropped_bad_identity == 0);
    /// ```
    pub fn with_identity(mut self, derive: fn(&A) -> Hash) -> Self {
        self.identity = Some(Box::new(identity::Identity::new(derive)));
        self
    }

    // ----------------------------------------------------------------- accessors

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

    // ------------------------------------------------------------------ commands

    /// Starts a new ring with this node as its only member.
    pub fn create(&mut self, now: Instant) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Joined;
        self.schedule_tick(now);
        self.events.push_back(Event::Joined {
            successor: self.me.clone(),
        });
    }

    /// Joins the ring that the node at `bootstrap` belongs to. Ends in
    /// [`Event::Joined`] or [`Event::JoinFailed`].
    pub fn join(&mut self, bootstrap: A, now: Instant) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Joining {
            bootstrap: bootstrap.clone(),
        };
        if self.provisional {
            // Learn where the bootstrap sees this node first: its id
            // derives from that address.
            let retries = self.cfg.request_retries;
            let sent = self.request(
                bootstrap,
                retries,
                Waiting::Observe { join: true },
                now,
                observe,
            );
            if sent.is_none() {
                self.fail_join(JoinError::Unreachable);
            }
            return;
        }
        self.find_place(bootstrap, now);
    }

    /// Looks up this node's place in the ring through `bootstrap` (the
    /// join proper).
    fn find_place(&mut self, bootstrap: A, now: Instant) {
        let lookup = self.start_lookup(self.me.id, Purpose::Join, now);
        let msg = FindSuccessor {
            txn: 0,
            lookup,
            key: self.me.id,
            origin: self.me.clone(),
            hops: 1,
            joining: true,
            via: None,
        };
        self.forward(msg, bootstrap, None, Vec::new(), now);
    }

    /// Marks this node's address as a placeholder: its socket is bound to
    /// all interfaces (`0.0.0.0`, `[::]`), so it does not know the address
    /// others reach it at. It learns it from the first peer it talks to
    /// ([`Message::Observe`]) and takes it, with the id derived from it
    /// (see [`with_identity`](Self::with_identity)), reporting
    /// [`Event::AddressLearned`]:
    /// - joining, it asks the bootstrap before anything else;
    /// - alone (after [`create`](Self::create)), it answers nothing but
    ///   `Observe` until it knows: the first datagram from any peer makes it
    ///   ask that peer (the datagram is dropped and counted in
    ///   `dropped_provisional`; its sender retries).
    ///
    /// Without an identity rule the id stays as it was and only the
    /// address changes.
    pub fn set_provisional(&mut self) {
        self.provisional = true;
    }

    /// Whether this node's address is still a placeholder.
    pub fn is_provisional(&self) -> bool {
        self.provisional
    }

    /// Asks `to` at which address it sees this node; its answer is
    /// reported as [`Event::Observed`] (a NAT's mapping, or this node's
    /// own address). Nothing is reported if it does not answer.
    pub fn observe(&mut self, to: A, now: Instant) {
        let retries = self.cfg.request_retries;
        self.request(to, retries, Waiting::Observe { join: false }, now, observe);
    }

    /// Takes `addr` as this node's address (its first contact sees it
    /// there), with the id derived from it.
    fn adopt(&mut self, addr: A) {
        self.provisional = false;
        let id = match &self.identity {
            Some(identity) => identity.derive(&addr),
            None => self.me.id,
        };
        self.me = NodeRef::new(id, addr.clone());
        self.table = RoutingTable::new(id, self.cfg.successor_list_len).with_address(addr);
        self.known_version = u64::MAX; // the fresh table differs: report it
        tracing::debug!(me = ?self.me, "address learned");
        self.events.push_back(Event::AddressLearned {
            me: self.me.clone(),
        });
    }

    fn on_observed(&mut self, m: Observed<A>, now: Instant) {
        let Some(Pending {
            waiting: Waiting::Observe { join },
            to,
            ..
        }) = self.take_reply(m.txn, |w| matches!(w, Waiting::Observe { .. }))
        else {
            return;
        };
        self.verified(to.clone(), now);
        self.events.push_back(Event::Observed {
            by: to.clone(),
            seen: m.seen.clone(),
        });
        // A node alone takes the address (a joining one has no peers yet
        // either); one in a ring keeps the identity its peers know.
        if self.provisional && self.table.peers().next().is_none() {
            self.adopt(m.seen);
        }
        if join && matches!(&self.phase, Phase::Joining { bootstrap } if *bootstrap == to) {
            self.find_place(to, now);
        }
    }

    /// Looks up the live node responsible for `key`. Ends in
    /// [`Event::LookupDone`] or [`Event::LookupFailed`].
    pub fn lookup(&mut self, key: Hash, now: Instant) -> LookupId {
        let id = self.start_lookup(key, Purpose::User, now);
        self.lookup_attempt(id, now);
        self.sync_known();
        LookupId(id)
    }

    /// Leaves the ring gracefully: hands the predecessor and the successors
    /// to each other, then goes quiet. Pending lookups fail.
    pub fn leave(&mut self, now: Instant) {
        if self.phase == Phase::Left {
            return;
        }
        let _ = now;
        if self.phase == Phase::Joined {
            let msg = Message::Leave(Leave {
                sender: self.me.id,
                predecessor: self.table.predecessor().cloned(),
                successors: self.table.successors().to_vec(),
            })
            .encode();
            let mut targets: Vec<A> = Vec::new();
            if let Some(p) = self.table.predecessor() {
                targets.push(p.addr.clone());
            }
            if let Some(s) = self.table.successor() {
                if !targets.contains(&s.addr) {
                    targets.push(s.addr.clone());
                }
            }
            for to in targets {
                self.push_transmit(to, msg.clone());
            }
        }
        for (id, l) in std::mem::take(&mut self.lookups) {
            if l.purpose == Purpose::User {
                self.events.push_back(Event::LookupFailed {
                    id: LookupId(id),
                    key: l.key,
                });
            }
        }
        self.fail_outgoing();
        self.pending.clear();
        self.phase = Phase::Left;
        self.next_tick = None;
        self.events.push_back(Event::Left);
    }

    // ------------------------------------------------------------ driver surface

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit<A>> {
        if !self.acks.is_empty() {
            // Drained in place: the list of lists keeps its room.
            let mut acks = std::mem::take(&mut self.acks);
            for (to, msgs) in acks.drain(..) {
                self.push_delivered(to, msgs);
            }
            self.acks = acks;
        }
        let t = self.transmits.pop_front()?;
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += t.bytes.len() as u64;
        Some(t)
    }

    /// Datagrams waiting for [`poll_transmit`](Self::poll_transmit). A
    /// driver shared by several tasks uses it to decide who sends them.
    pub fn queued_transmits(&self) -> usize {
        self.transmits.len() + self.acks.len()
    }

    /// Application messages accepted by [`send`](Self::send) and not yet
    /// delivered or failed.
    pub fn sends_in_flight(&self) -> usize {
        self.outgoing.len()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event<A>> {
        let e = self.events.pop_front();
        if let Some(Event::Received { .. }) = e {
            self.received_queued -= 1;
        }
        e
    }

    /// Tells the node how many more messages the application can take now
    /// (for example the free places of its receive queue), not counting
    /// the [`Event::Received`] events the node holds that have not been
    /// polled yet. A confirmed message that finds no room is not handed up
    /// and not confirmed: its origin is told the destination is busy
    /// ([`crate::wire::Refusal::Busy`]) and retries until its deadline,
    /// then fails with [`crate::SendError::ReceiverBusy`]. Broadcasts and
    /// unconfirmed datagrams that find no room are dropped and counted in
    /// [`Stats::dropped_no_room`]. Unlimited until first called.
    pub fn set_receive_room(&mut self, room: usize) {
        self.receive_room = room;
    }

    /// Whether the application can take one more message.
    fn has_room(&self) -> bool {
        self.received_queued < self.receive_room
    }

    /// Hands a message up (the caller has checked `has_room`).
    fn hand_up(&mut self, event: Event<A>) {
        self.received_queued += 1;
        self.events.push_back(event);
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    /// Calling it early or late is harmless.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wake
    }

    /// The earliest timer of every pending request, lookup and message,
    /// and of the periodic tick: a scan of them all.
    fn earliest_timer(&self) -> Option<Instant> {
        let pending = self.pending.values().map(|p| p.deadline);
        let lookups = self.lookups.values().map(|l| l.retry_at.min(l.deadline));
        let outgoing = self.outgoing.values().map(|o| o.wake_at());
        pending
            .chain(lookups)
            .chain(outgoing)
            .chain(self.next_tick)
            .chain(self.punch.next_timer())
            .chain(self.relay.next_timer())
            .min()
    }

    /// Handles the passing of time: retransmits, failure detection, and the
    /// periodic stabilize, predecessor check and finger repair.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(txn, _)| *txn)
            .collect();
        // In id order, as a B-tree gave them: the simulator's runs do not
        // depend on the hash map's layout.
        expired.sort_unstable();
        for txn in expired {
            self.pending_expired(txn, now);
        }
        let due: Vec<u64> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.retry_at <= now || l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(l) = self.lookups.get(&id) else {
                continue;
            };
            if l.deadline <= now {
                self.lookup_failed(id, now);
            } else {
                self.lookup_attempt(id, now);
            }
        }
        self.outgoing_timeouts(now);
        self.punch_timers(now);
        self.relay_timers(now);
        if self.next_tick.is_some_and(|t| t <= now) {
            self.tick(now);
        }
        self.store_neighbours_changed(now);
        self.sync_known();
        self.wake = self.earliest_timer();
    }

    /// Makes sure `poll_timeout` is no later than `at`.
    fn arm(&mut self, at: Instant) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    /// Handles a link's report that `addr` cannot be reached (a flow gone
    /// down, a destination the network refused): every peer at `addr` is
    /// failed now, as one that stopped answering is after its retries,
    /// instead of when its requests time out. An address the node does
    /// not know changes nothing.
    pub fn handle_unreachable(&mut self, now: Instant, addr: &A) {
        if self.phase == Phase::Left {
            return;
        }
        let mut gone: Vec<NodeRef<A>> = self
            .table
            .peers()
            .filter(|p| p.addr == *addr)
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        gone.sort_by_key(|p| p.id);
        gone.dedup_by(|a, b| a.id == b.id);
        for p in &gone {
            self.peer_failed(p, now);
        }
        self.sync_known();
    }

    /// Handles one datagram from `from`. Malformed or unexpected datagrams
    /// are counted and dropped; nothing that arrives can make this panic.
    pub fn handle_datagram(&mut self, now: Instant, from: A, bytes: &[u8]) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        if self.phase == Phase::Left {
            return;
        }
        let msg = match Message::<A>::decode(bytes) {
            Ok(m) => m,
            Err(DecodeError::UnsupportedVersion(v)) => {
                self.stats.dropped_version += 1;
                tracing::debug!(?from, version = v, "unsupported protocol version");
                // Answer so the sender learns why; never more bytes than it sent.
                let reply = Message::<A>::VersionMismatch(VersionMismatch {
                    min: VERSION,
                    max: VERSION,
                })
                .encode();
                if reply.len() <= bytes.len() {
                    self.push_transmit(from, reply);
                }
                return;
            }
            Err(e) => {
                self.stats.dropped_malformed += 1;
                tracing::debug!(?from, error = %e, "dropped datagram");
                return;
            }
        };
        if let Some(identity) = &mut self.identity {
            if msg.nodes().any(|n| !identity.matches(&n.addr, &n.id)) {
                self.stats.dropped_bad_identity += 1;
                tracing::debug!(?from, "dropped a message naming a node under a false id");
                return;
            }
        }
        // Requests cost state and replies: each takes a token of its
        // source's bucket (a verified neighbour's Data has a bucket of its
        // own). Replies only match what this node asked for.
        let kind = match msg {
            Message::Data(_) | Message::Store(_) | Message::StoreFragment(_) => Arrival::Data,
            Message::Ping(_)
            | Message::OwnerCheck(_)
            | Message::GetNeighbors(_)
            | Message::FindSuccessor(_)
            | Message::Leave(_)
            | Message::SuccessorHint(_)
            | Message::Observe(_)
            | Message::PunchRequest(_)
            | Message::PunchOffer(_)
            | Message::PunchSync(_)
            | Message::RelayReserve(_) => Arrival::Request,
            _ => Arrival::Reply,
        };
        let allowed = self.sources.arrived(&from, bytes.len(), kind, now);
        if !allowed {
            self.stats.dropped_rate_limited += 1;
            return;
        }
        if self.provisional && !matches!(msg, Message::Observe(_) | Message::Observed(_)) {
            // Nothing it says of itself would be true yet: ask the sender
            // where it sees this node (once at a time); the sender retries.
            self.stats.dropped_provisional += 1;
            let asking = self
                .pending
                .values()
                .any(|p| matches!(p.waiting, Waiting::Observe { .. }));
            if self.phase == Phase::Joined && !asking {
                self.observe(from, now);
            }
            return;
        }
        if self.table.predecessor().is_some_and(|p| p.addr == from) {
            self.pred_seen = Some(now);
        }
        self.punch.heard(&from, now);
        match msg {
            Message::VersionMismatch(v) => self.on_version_mismatch(from, v),
            Message::Ping(p) => {
                let reply = Message::<A>::Pong(Ping { txn: p.txn }).encode();
                self.reply(from, reply);
            }
            Message::Pong(p) => self.on_pong(p.txn, now),
            Message::GetNeighbors(m) => self.on_get_neighbors(from, m, now),
            Message::Neighbors(m) => self.on_neighbors(m, now),
            Message::FindSuccessor(m) => self.on_find_successor(from, m, now),
            Message::HopAck(a) => self.on_hop_ack(a.txn, now),
            Message::Found(m) => {
                if !self.admissible(&m.owner) {
                    self.punch.note_introducer(&m.owner, &from);
                }
                self.on_found(m, now)
            }
            Message::Leave(m) => self.on_leave(from, m, now),
            Message::SuccessorHint(m) => self.on_successor_hint(from, m.node, now),
            Message::Data(m) => self.on_data(from, m, now),
            Message::Delivered(m) => self.on_delivered(from, m, now),
            Message::Undeliverable(m) => self.on_undeliverable(m, now),
            Message::OwnerCheck(m) => self.on_owner_check(from, m),
            Message::Owns(m) => self.on_owns(m, now),
            Message::Observe(m) => {
                let reply = Message::Observed(Observed {
                    txn: m.txn,
                    seen: from.clone(),
                })
                .encode();
                self.reply(from, reply);
            }
            Message::Observed(m) => self.on_observed(m, now),
            Message::PunchRequest(m) => self.on_punch_request(from, m, now),
            Message::PunchOffer(m) => self.on_punch_offer(from, m, now),
            Message::PunchAnswer(m) => self.on_punch_answer(from, m, now),
            Message::PunchSync(m) => self.on_punch_sync(from, m, now),
            Message::PunchRelayed(m) => self.on_punch_relayed(from, m, now),
            Message::RelayReserve(m) => self.on_relay_reserve(from, m, now),
            Message::RelayReserved(m) => self.on_relay_reserved(m, now),
            // Frames are the stack's: one that reaches the node came
            // inside another frame, or from a stack that does not relay.
            Message::RelayTo(_) | Message::RelayFrom(_) => self.stats.relay_dropped += 1,
            Message::Store(m) => self.on_store(from, m, now),
            Message::StoreFragment(m) => self.on_store_fragment(from, m, now),
        }
        self.store_neighbours_changed(now);
        self.sync_known();
    }

    // ------------------------------------------------------------------ handlers

    fn on_version_mismatch(&mut self, from: A, v: VersionMismatch) {
        match &self.phase {
            Phase::Joining { bootstrap } if *bootstrap == from => {
                self.fail_join(JoinError::VersionMismatch {
                    min: v.min,
                    max: v.max,
                    ours: VERSION,
                });
            }
            _ => self.stats.dropped_unexpected += 1,
        }
    }

    fn on_pong(&mut self, txn: u64, now: Instant) {
        match self.pending.remove(&txn) {
            Some(Pending {
                waiting: Waiting::Verify,
                to,
                ..
            }) => self.verified(to, now),
            Some(Pending {
                waiting: Waiting::Admit { node, roles },
                to,
                ..
            }) => {
                self.verified(to, now);
                for role in roles {
                    self.admitted(node.clone(), role, now);
                }
            }
            Some(Pending {
                waiting: Waiting::Ping { peer },
                to,
                ..
            }) => {
                self.verified(to, now);
                if self.table.predecessor().is_some_and(|p| p.id == peer.id) {
                    self.pred_seen = Some(now);
                }
                if let Some(p) = self.probed.iter_mut().find(|(id, _)| *id == peer.id) {
                    p.1 = true;
                }
            }
            Some(Pending {
                waiting: Waiting::PunchPing { peer },
                to,
                ..
            }) => {
                self.verified(to.clone(), now);
                self.punched(peer, to, now);
            }
            Some(other) => {
                // A Pong answering something else: put it back, count it.
                self.pending.insert(txn, other);
                self.stats.dropped_unexpected += 1;
            }
            None => self.stats.dropped_unexpected += 1,
        }
    }

    /// Whether `key` is ours: between our predecessor (exclusive) and us.
    /// Knowing no predecessor, we cannot tell otherwise and say yes. The
    /// reply is smaller than the request, so it needs no budget.
    fn on_owner_check(&mut self, from: A, m: OwnerCheck) {
        if self.phase != Phase::Joined {
            return; // not in a ring: no answer is better than a wrong one
        }
        let yes = self
            .table
            .predecessor()
            .is_none_or(|p| Interval::open_closed(p.id, self.me.id).contains(&m.key));
        let reply = Message::<A>::Owns(Owns { txn: m.txn, yes }).encode();
        self.reply(from, reply);
    }

    fn on_owns(&mut self, m: Owns, now: Instant) {
        let Some(Pending {
            waiting:
                Waiting::Confirm {
                    lookup,
                    owner,
                    hops,
                },
            to,
            ..
        }) = self.take_reply(m.txn, |w| matches!(w, Waiting::Confirm { .. }))
        else {
            return;
        };
        self.verified(to, now);
        if m.yes {
            if let Some(l) = self.lookups.remove(&lookup) {
                self.lookup_succeeded(lookup, l, owner, hops, now);
            }
            return;
        }
        // Alive, but the key lies before its predecessor: the route that
        // named it skipped the true owner (a node wrongly thought dead,
        // or one that just joined). Look again after one attempt's time,
        // once the tables had a chance to mend; the deadline still bounds
        // the whole lookup.
        self.stats.lookup_owners_disowned += 1;
        tracing::trace!(me = %self.me.id.short(), owner = ?owner.addr, "lookup owner disowns the key; looking again");
        let retry_at = now + self.attempt_timeout();
        if let Some(l) = self.lookups.get_mut(&lookup) {
            l.retry_at = retry_at;
            self.arm(retry_at);
        }
    }

    fn on_get_neighbors(&mut self, from: A, m: GetNeighbors<A>, now: Instant) {
        if self.phase != Phase::Joined {
            return; // not in a ring: no answer is better than a wrong one
        }
        let sender = m.sender;
        if m.notify && sender.id != self.me.id && !self.is_dead(&sender.id, now) {
            // A lone node's successor is itself; a notify tells it of a
            // second, which heads the list once it is known to be there.
            let lone = self.table.successor().is_none();
            if self.admissible(&sender) {
                if lone {
                    self.table.set_successors([sender.clone()]);
                    self.send_stabilize(now);
                }
                self.consider_predecessor(sender, true, now);
            } else {
                if lone {
                    self.admit(sender.clone(), Role::Successor, now);
                }
                self.admit(sender, Role::Predecessor, now);
            }
        }
        let reply = self.neighbors_reply(m.txn, m.want_fingers);
        if self
            .sources
            .budget(&from)
            .is_none_or(|b| reply.len() as u64 <= b)
        {
            self.reply(from, reply);
            return;
        }
        // An unverified address asks for more bytes than it sent. It gets a
        // few full answers (a joining node needs them at once), and a probe
        // whose Pong verifies it; past those, its requests wait for that
        // Pong. A forged source thus draws at most UNVERIFIED_FULL_REPLIES
        // replies, then one Ping (smaller than its request) per
        // request_timeout.
        let probe = Message::<A>::Ping(Ping { txn: u64::MAX }).encode().len();
        let affordable = self
            .sources
            .budget(&from)
            .is_some_and(|b| probe as u64 <= b);
        if affordable && self.sources.probe_due(&from, now, self.cfg.request_timeout) {
            self.sources.sent(&from, probe);
            self.request(from.clone(), 0, Waiting::Verify, now, |txn| {
                Message::Ping(Ping { txn })
            });
        }
        if self.sources.take_free_reply(&from, UNVERIFIED_FULL_REPLIES) {
            // Counted apart from the byte budget, which stays for Pongs
            // and HopAcks.
            self.stats.replies_unverified += 1;
            self.push_transmit(from, reply);
        } else {
            self.stats.replies_deferred += 1;
            self.sources.defer(&from, m.txn, m.want_fingers);
        }
    }

    /// Adopts `node` (verified) as predecessor if it is nearer than the
    /// current one, or, when it notified us (`notified`), if the current one
    /// has been silent too long; the old predecessor is told of its new
    /// successor.
    fn consider_predecessor(&mut self, node: NodeRef<A>, notified: bool, now: Instant) {
        if node.id == self.me.id || self.is_dead(&node.id, now) {
            return;
        }
        // A live predecessor stabilizes with us every period; one silent
        // for longer is probably dead, and the notifier is its successor.
        let stale = self
            .pred_seen
            .is_none_or(|t| now.saturating_duration_since(t) > self.cfg.stabilize_interval * 3 / 2);
        let adopt = match self.table.predecessor() {
            None => true,
            Some(p) if p.id == node.id => {
                self.pred_seen = Some(now);
                false
            }
            Some(p) => (notified && stale) || Interval::open(p.id, self.me.id).contains(&node.id),
        };
        if adopt {
            let old = self.table.predecessor().cloned();
            self.table.set_predecessor(Some(node.clone()));
            self.pred_seen = Some(now);
            if let Some(old) = old.filter(|o| o.id != node.id) {
                let hint = Message::SuccessorHint(SuccessorHint { node });
                self.push_transmit(old.addr, hint.encode());
            }
        }
    }

    /// Whether `node` may enter the routing table now: it is there already
    /// at the same address, or its address has answered a request of ours.
    fn admissible(&self, node: &NodeRef<A>) -> bool {
        self.table
            .get(&node.id)
            .is_some_and(|n| n.addr == node.addr)
            || self.sources.is_verified(&node.addr)
    }

    /// Probes `node`, heard of second-hand, before it takes `role` in the
    /// table (unless a probe of it is out already). A node that never
    /// answers never enters.
    fn admit(&mut self, node: NodeRef<A>, role: Role, now: Instant) {
        if node.id == self.me.id || node.addr == self.me.addr {
            return;
        }
        // One probe per node, whatever the places it may take.
        for p in self.pending.values_mut() {
            if let Waiting::Admit { node: q, roles } = &mut p.waiting {
                if q.id == node.id && q.addr == node.addr {
                    if !roles.contains(&role) {
                        roles.push(role);
                    }
                    return;
                }
            }
        }
        self.stats.admission_probes += 1;
        let (to, retries) = (node.addr.clone(), self.cfg.request_retries);
        let roles = vec![role];
        self.request(to, retries, Waiting::Admit { node, roles }, now, |txn| {
            Message::Ping(Ping { txn })
        });
    }

    /// `node` answered its admission probe: it takes `role`, if that
    /// place is still its own.
    fn admitted(&mut self, node: NodeRef<A>, role: Role, now: Instant) {
        if role == Role::Past {
            // It failed us once and answers again: it is not dead.
            self.past.retain(|p| p.node.id != node.id);
            self.dead.retain(|(id, _)| *id != node.id);
        }
        if self.is_dead(&node.id, now) || self.phase != Phase::Joined {
            return;
        }
        match role {
            Role::Successor => {
                if self.table.successors().iter().any(|n| n.id == node.id) {
                    return;
                }
                let head = self.table.successor().map(|s| s.id);
                let me = self.me.id;
                let mut list = self.table.successors().to_vec();
                list.push(node);
                list.sort_by_key(|n| me.distance_to(&n.id));
                self.table.set_successors(list);
                if self.table.successor().map(|s| s.id) != head {
                    self.send_stabilize(now);
                }
            }
            Role::Predecessor => self.consider_predecessor(node, true, now),
            Role::Finger => self.table.insert_finger(node),
            Role::FixFinger(bucket) => self.table.fix_finger(bucket, node),
            Role::Past => {
                if self.table.get(&node.id).is_some() {
                    return;
                }
                self.stats.past_peers_found += 1;
                tracing::debug!(me = %self.me.id.short(), peer = %node.id.short(), "a past peer answers again");
                let nearer = self
                    .table
                    .successor()
                    .is_none_or(|s| Interval::open(self.me.id, s.id).contains(&node.id));
                if nearer {
                    // It heads the successor list once it answers a stabilize.
                    self.stabilize_with(node.clone(), false, now);
                }
                self.consider_predecessor(node.clone(), false, now);
                self.table.insert_finger(node);
            }
        }
    }

    /// The encoded answer to a `GetNeighbors`, from the current state.
    fn neighbors_reply(&self, txn: u64, want_fingers: bool) -> Vec<u8> {
        let fingers = if want_fingers {
            let mut f: Vec<NodeRef<A>> = self.table.fingers().to_vec();
            f.truncate(MAX_FINGERS_SENT);
            f
        } else {
            Vec::new()
        };
        Message::Neighbors(Neighbors {
            txn,
            predecessor: self.table.predecessor().cloned(),
            successors: self.table.successors().to_vec(),
            fingers,
        })
        .encode()
    }

    /// `addr` answered a request sent to it: it is verified, and a
    /// `GetNeighbors` of its that was waiting for that is answered now.
    /// Whether a request to `to` that timed out goes out again now; if
    /// not, it is held until `to` answers something ([`RETRANSMIT_BURST`]).
    fn may_retransmit(&mut self, to: &A, now: Instant) -> bool {
        let window = self.cfg.request_timeout;
        let b = self.backoff.entry(to.clone()).or_insert(Backoff {
            since: now,
            sent: 0,
            held: Vec::new(),
        });
        if now >= b.since + window {
            b.since = now;
            b.sent = 0;
        }
        if b.sent < RETRANSMIT_BURST {
            b.sent += 1;
            return true;
        }
        false
    }

    /// `addr` answered: the retransmissions held for it go now, each with
    /// a whole request timeout to be answered in.
    fn release_held(&mut self, addr: &A, now: Instant) {
        let Some(b) = self.backoff.remove(addr) else {
            return;
        };
        let deadline = now + self.cfg.request_timeout;
        let mut sent = false;
        for txn in b.held {
            if let Some(p) = self.pending.get_mut(&txn).filter(|p| p.held) {
                p.held = false;
                p.deadline = deadline;
                let (to, bytes) = (p.to.clone(), p.bytes.clone());
                self.push_transmit(to, bytes);
                sent = true;
            }
        }
        if sent {
            self.arm(deadline);
        }
    }

    fn verified(&mut self, addr: A, now: Instant) {
        if !self.backoff.is_empty() {
            self.release_held(&addr, now);
        }
        if let Some((txn, want_fingers)) = self.sources.verify_and_take_deferred(&addr, now) {
            if self.phase == Phase::Joined {
                let reply = self.neighbors_reply(txn, want_fingers);
                self.reply(addr, reply);
            }
        }
    }

    /// Sends a reply to the address a request came from, unless that
    /// address is unverified and the reply would bring what it was sent
    /// above what it sent (a forged source would turn the node into an
    /// amplifier); such replies are dropped and counted.
    fn reply(&mut self, to: A, bytes: Vec<u8>) {
        if self
            .sources
            .budget(&to)
            .is_some_and(|b| bytes.len() as u64 > b)
        {
            self.stats.dropped_amplification += 1;
            return;
        }
        self.sources.sent(&to, bytes.len());
        self.push_transmit(to, bytes);
    }

    fn on_neighbors(&mut self, m: Neighbors<A>, now: Instant) {
        let Some(Pending {
            waiting: Waiting::Stabilize { peer },
            to,
            ..
        }) = self.take_reply(m.txn, |w| matches!(w, Waiting::Stabilize { .. }))
        else {
            return;
        };
        self.verified(to, now);
        if matches!(self.phase, Phase::Joining { .. }) {
            self.phase = Phase::Joined;
            self.schedule_tick(now);
            self.events.push_back(Event::Joined {
                successor: peer.clone(),
            });
        }
        if self.is_dead(&peer.id, now) {
            // It answered, then left: its farewell overtook this reply.
            self.stats.dropped_unexpected += 1;
            return;
        }
        if let Some(s) = self.table.successor() {
            if s.id != peer.id && !Interval::open(self.me.id, s.id).contains(&peer.id) {
                // A hinted node that a nearer successor overtook meanwhile.
                return;
            }
        }
        // Nodes named here enter the table only once they are known to be
        // where they claim: at once if verified already, after answering a
        // probe otherwise.
        for f in m.fingers {
            if self.is_dead(&f.id, now) || !self.table.wants_finger(&f) {
                continue;
            }
            if self.admissible(&f) {
                self.table.insert_finger(f);
            } else {
                self.admit(f, Role::Finger, now);
            }
        }
        let mut list: Vec<NodeRef<A>> = Vec::with_capacity(m.successors.len() + 2);
        let mut better = None;
        let mut unverified = None;
        if let Some(p) = m.predecessor {
            if p.id != self.me.id
                && Interval::open(self.me.id, peer.id).contains(&p.id)
                && !self.is_dead(&p.id, now)
            {
                if self.admissible(&p) {
                    list.push(p.clone());
                    better = Some(p);
                } else {
                    unverified = Some(p);
                }
            }
        }
        list.push(peer);
        let mut probe = Vec::new();
        for n in m.successors {
            if self.is_dead(&n.id, now) {
                continue;
            }
            if self.admissible(&n) {
                list.push(n);
            } else {
                probe.push(n);
            }
        }
        self.table.set_successors(list);
        for n in probe {
            self.admit(n, Role::Successor, now);
        }
        if better.is_some() {
            // A nearer successor appeared: stabilize with it (and notify it) now.
            self.send_stabilize(now);
        } else if let Some(p) = unverified {
            // A nearer successor we have not heard from: it heads the list
            // once it answers a stabilize of its own.
            self.stabilize_with(p, false, now);
        }
    }

    fn on_find_successor(&mut self, from: A, m: FindSuccessor<A>, now: Instant) {
        let ack = Message::<A>::HopAck(HopAck { txn: m.txn }).encode();
        self.reply(from.clone(), ack);
        if self.phase != Phase::Joined {
            return;
        }
        if m.hops >= MAX_HOPS {
            self.stats.dropped_hop_limit += 1;
            return;
        }
        self.stats.lookups_forwarded += 1;
        let mut m = m;
        if !m.joining && m.via.as_ref() == Some(&self.me.addr) && m.origin.addr == from {
            // The first hop of an origin behind a NAT, asked to relay.
            self.relays
                .retain(|r| r.until > now && r.lookup != m.lookup);
            if self.relays.len() < JOIN_RELAYS {
                self.relays.push(Relay {
                    to: from.clone(),
                    lookup: m.lookup,
                    until: now + self.cfg.lookup_timeout,
                });
            } else {
                m.via = None;
            }
        }
        if m.joining && m.via.is_none() && m.origin.addr == from && from != self.me.addr {
            // A joiner's first hop: the answer comes back through here,
            // since the joiner may be behind a NAT that lets in only us.
            self.relays
                .retain(|r| r.until > now && !(r.lookup == m.lookup && r.to == from));
            if self.relays.len() < JOIN_RELAYS {
                self.relays.push(Relay {
                    to: from,
                    lookup: m.lookup,
                    until: now + self.cfg.lookup_timeout,
                });
                m.via = Some(self.me.addr.clone());
            }
        }
        self.route_lookup(m, Vec::new(), now);
    }

    fn on_hop_ack(&mut self, txn: u64, now: Instant) {
        match self.pending.remove(&txn) {
            Some(Pending {
                waiting: Waiting::Forward { .. } | Waiting::Data { .. },
                to,
                ..
            }) => self.verified(to, now),
            Some(other) => {
                self.pending.insert(txn, other);
                self.stats.dropped_unexpected += 1;
            }
            None => self.stats.dropped_unexpected += 1,
        }
    }

    fn on_found(&mut self, m: Found<A>, now: Instant) {
        if let Some(at) = self
            .relays
            .iter()
            .position(|r| r.lookup == m.lookup && r.until > now)
        {
            // The answer to a joiner this node relays for.
            let to = self.relays.swap_remove(at).to;
            self.push_transmit(to, Message::Found(m).encode());
            return;
        }
        let Some(l) = self.lookups.get(&m.lookup) else {
            self.stats.dropped_unexpected += 1;
            return;
        };
        if l.key != m.key {
            self.stats.dropped_unexpected += 1;
            return;
        }
        let me = m.owner.id == self.me.id && m.owner.addr == self.me.addr;
        if matches!(l.purpose, Purpose::User | Purpose::Store(_)) && !me {
            // The node that answered may not know yet that the owner it
            // names has just died: ask the owner itself first.
            let asking = self.pending.values().any(
                |p| matches!(&p.waiting, Waiting::Confirm { lookup, .. } if *lookup == m.lookup),
            );
            if asking {
                return;
            }
            let hold = now + self.attempt_timeout();
            if let Some(l) = self.lookups.get_mut(&m.lookup) {
                l.retry_at = l.retry_at.max(hold);
            }
            let waiting = Waiting::Confirm {
                lookup: m.lookup,
                owner: m.owner.clone(),
                hops: m.hops as u32,
            };
            let (to, retries) = (m.owner.addr, self.cfg.request_retries);
            let key = m.key;
            self.request(to, retries, waiting, now, |txn| {
                Message::OwnerCheck(OwnerCheck { txn, key })
            });
            return;
        }
        let Some(l) = self.lookups.remove(&m.lookup) else {
            return;
        };
        self.lookup_succeeded(m.lookup, l, m.owner, m.hops as u32, now);
    }

    fn on_successor_hint(&mut self, from: A, node: NodeRef<A>, now: Instant) {
        // A hint may come from any node (the one that has us as its old
        // predecessor): it costs its sender a token, and its target one
        // stabilize request (with retries), never a reply to the sender.
        let _ = from;
        if self.phase != Phase::Joined
            || node.id == self.me.id
            || node.addr == self.me.addr
            || self.is_dead(&node.id, now)
        {
            self.stats.dropped_unexpected += 1;
            return;
        }
        let nearer = match self.table.successor() {
            None => true,
            Some(s) => Interval::open(self.me.id, s.id).contains(&node.id),
        };
        if !nearer {
            return;
        }
        // Stabilize with it now; it heads the list only once it answers, so a
        // false hint costs one unanswered request and changes nothing.
        self.stabilize_with(node, false, now);
    }

    fn on_leave(&mut self, from: A, m: Leave<A>, now: Instant) {
        // Only the node itself says it leaves: the address it has in our
        // tables must be the one the farewell came from.
        if self.table.get(&m.sender).is_none_or(|n| n.addr != from) {
            self.stats.dropped_unexpected += 1;
            return;
        }
        let was_succ = self.table.successor().is_some_and(|s| s.id == m.sender);
        let was_pred = self.table.predecessor().is_some_and(|p| p.id == m.sender);
        self.table.remove(&m.sender);
        self.remember_dead(m.sender, now);
        if was_succ {
            // The leaver's successors are second-hand: those not verified
            // yet are probed first.
            let me = self.me.id;
            let (mut list, probe): (Vec<_>, Vec<_>) = m
                .successors
                .into_iter()
                .filter(|n| n.id != m.sender)
                .partition(|n| self.admissible(n));
            list.extend(self.table.successors().iter().cloned());
            list.sort_by_key(|n| me.distance_to(&n.id));
            self.table.set_successors(list);
            for n in probe {
                self.admit(n, Role::Successor, now);
            }
            self.send_stabilize(now);
        }
        if was_pred {
            let pred = m.predecessor.filter(|p| p.id != m.sender);
            self.table.set_predecessor(None);
            self.pred_seen = Some(now);
            if let Some(p) = pred {
                if self.admissible(&p) {
                    self.table.set_predecessor(Some(p));
                } else {
                    self.admit(p, Role::Predecessor, now);
                }
            }
        }
    }

    // ------------------------------------------------------------------- lookups

    fn start_lookup(&mut self, key: Hash, purpose: Purpose, now: Instant) -> u64 {
        let id = self.fresh_id(|n, id| n.lookups.contains_key(&id));
        let l = Lookup {
            key,
            purpose,
            retry_at: now + self.attempt_timeout(),
            deadline: now + self.cfg.lookup_timeout,
        };
        self.arm(l.retry_at.min(l.deadline));
        self.lookups.insert(id, l);
        id
    }

    /// Time one attempt of a lookup gets before the origin tries again.
    fn attempt_timeout(&self) -> Duration {
        self.cfg.failure_timeout() * 2
    }

    fn lookup_attempt(&mut self, id: u64, now: Instant) {
        let retry_at = now + self.attempt_timeout();
        let Some(l) = self.lookups.get_mut(&id) else {
            return;
        };
        l.retry_at = retry_at;
        let (key, purpose) = (l.key, l.purpose);
        self.arm(retry_at);
        if purpose == Purpose::Join {
            // Retry through the bootstrap.
            if let Phase::Joining { bootstrap } = &self.phase {
                let bootstrap = bootstrap.clone();
                let msg = FindSuccessor {
                    txn: 0,
                    lookup: id,
                    key,
                    origin: self.me.clone(),
                    hops: 1,
                    joining: true,
                    via: None,
                };
                self.forward(msg, bootstrap, None, Vec::new(), now);
            }
            return;
        }
        if self.phase != Phase::Joined {
            return; // retried once joined, or failed at the deadline
        }
        let msg = FindSuccessor {
            txn: 0,
            lookup: id,
            key,
            origin: self.me.clone(),
            hops: 0,
            joining: false,
            via: None,
        };
        self.route_lookup(msg, Vec::new(), now);
    }

    /// Moves a lookup one step: answers it if this node is the key's
    /// predecessor, forwards it to the closest preceding node otherwise.
    fn route_lookup(&mut self, msg: FindSuccessor<A>, exclude: Vec<Hash>, now: Instant) {
        let owner = match self.table.next_hop(&msg.key, &exclude) {
            NextHop::Forward(n) => {
                let (to, id) = (n.addr.clone(), n.id);
                let mut msg = msg;
                msg.hops = msg.hops.saturating_add(1);
                if self.behind_nat() && msg.origin.id == self.me.id && !msg.joining {
                    // The answer comes from the key's predecessor, which
                    // this node's NAT would not let in: the first hop,
                    // which it sends to, relays it (see `FindSuccessor::via`).
                    msg.via = Some(to.clone());
                }
                self.forward(msg, to, Some(id), exclude, now);
                return;
            }
            NextHop::Owner(o) => o.cloned(),
        };
        let owner = if msg.joining {
            // The joiner asks for its own successor: skip an earlier
            // incarnation of it (same id) that may still be in our tables.
            self.table
                .successors()
                .iter()
                .find(|n| n.id != msg.origin.id)
                .cloned()
                .unwrap_or_else(|| self.me.clone())
        } else {
            owner.unwrap_or_else(|| self.me.clone())
        };
        let found = Found {
            lookup: msg.lookup,
            key: msg.key,
            owner,
            hops: msg.hops,
        };
        if msg.origin.id == self.me.id && msg.origin.addr == self.me.addr {
            self.on_found(found, now);
            return;
        }
        let to = match msg.via {
            // This node relays for the joiner: answer it straight away.
            Some(via) if via == self.me.addr => {
                self.relays.retain(|r| r.lookup != msg.lookup);
                msg.origin.addr
            }
            Some(via) => via,
            None => msg.origin.addr,
        };
        self.push_transmit(to, Message::Found(found).encode());
    }

    fn forward(
        &mut self,
        msg: FindSuccessor<A>,
        to: A,
        next: Option<Hash>,
        exclude: Vec<Hash>,
        now: Instant,
    ) {
        // A join's first hop is retried (its id is unknown, there is no
        // other route); later hops are rerouted at once instead.
        let retries = if next.is_none() {
            self.cfg.request_retries
        } else {
            0
        };
        let sent = msg.clone();
        let waiting = Waiting::Forward {
            msg: Box::new(msg),
            next,
            exclude,
        };
        self.request(to, retries, waiting, now, |txn| {
            Message::FindSuccessor(FindSuccessor { txn, ..sent })
        });
    }

    fn lookup_succeeded(&mut self, id: u64, l: Lookup, owner: NodeRef<A>, hops: u32, now: Instant) {
        match l.purpose {
            Purpose::User => self.events.push_back(Event::LookupDone {
                id: LookupId(id),
                key: l.key,
                owner,
                hops,
            }),
            Purpose::Reach => self.reached(owner, now),
            Purpose::Finger(bucket) => {
                if !self.is_dead(&owner.id, now) {
                    if self.admissible(&owner) {
                        self.table.fix_finger(bucket, owner);
                    } else {
                        self.admit(owner, Role::FixFinger(bucket), now);
                    }
                }
            }
            Purpose::Join => {
                if owner.id == self.me.id {
                    if owner.addr != self.me.addr {
                        self.fail_join(JoinError::IdInUse);
                    } else {
                        // Only our own earlier incarnation is there: start over.
                        self.phase = Phase::Idle;
                        self.create(now);
                    }
                    return;
                }
                self.table.set_successors([owner]);
                self.send_stabilize_with(now, true);
            }
            Purpose::Store(op) => self.store_owner_found(op, owner, hops, now),
        }
    }

    fn lookup_failed(&mut self, id: u64, now: Instant) {
        let Some(l) = self.lookups.remove(&id) else {
            return;
        };
        match l.purpose {
            Purpose::User => self.events.push_back(Event::LookupFailed {
                id: LookupId(id),
                key: l.key,
            }),
            Purpose::Join => {
                let reason = if self
                    .pending
                    .values()
                    .any(|p| matches!(&p.waiting, Waiting::Forward { next: None, .. }))
                {
                    JoinError::Unreachable
                } else {
                    JoinError::Timeout
                };
                self.fail_join(reason);
            }
            Purpose::Finger(_) | Purpose::Reach => {}
            Purpose::Store(op) => self.store_lookup_failed(op, now),
        }
    }

    fn fail_join(&mut self, reason: JoinError) {
        if !matches!(self.phase, Phase::Joining { .. }) {
            return;
        }
        self.phase = Phase::Idle;
        self.lookups.retain(|_, l| l.purpose != Purpose::Join);
        self.pending.clear();
        self.table = RoutingTable::new(self.me.id, self.cfg.successor_list_len);
        self.known_version = u64::MAX; // the fresh table differs: report it

        self.events.push_back(Event::JoinFailed { reason });
    }

    // ---------------------------------------------------------------- maintenance

    fn schedule_tick(&mut self, now: Instant) {
        // Jitter of +-20% keeps nodes from falling into lock step.
        let base = self.cfg.stabilize_interval;
        let jitter = (self.rng.next_u32() % 401) as f64 / 1000.0 + 0.8;
        let at = now + base.mul_f64(jitter);
        self.next_tick = Some(at);
        self.arm(at);
    }

    fn tick(&mut self, now: Instant) {
        self.schedule_tick(now);
        // A hash map keeps its largest size: a burst (a join, a flood of
        // sends) would leave every idle node holding its peak.
        trim(&mut self.pending);
        trim(&mut self.outgoing);
        trim_queue(&mut self.transmits);
        trim_queue(&mut self.events);
        // Destinations quiet for a request timeout, with nothing held that
        // is still pending, are forgotten.
        let (pending, window) = (&self.pending, self.cfg.request_timeout);
        self.backoff.retain(|_, b| {
            b.held.retain(|t| pending.contains_key(t));
            now < b.since + window || !b.held.is_empty()
        });
        if self.phase != Phase::Joined {
            return;
        }
        self.dead
            .retain(|(_, at)| now < *at + self.cfg.stabilize_interval * DEAD_MEMORY_PERIODS);
        self.send_stabilize(now);
        self.check_predecessor(now);
        self.probe_past(now);
        self.keepalives(now);
        self.relay_expire(now);
        for _ in 0..self.cfg.fingers_per_tick {
            self.fix_next_finger(now);
        }
        self.store_tick(now);
    }

    fn send_stabilize(&mut self, now: Instant) {
        self.send_stabilize_with(now, false)
    }

    fn send_stabilize_with(&mut self, now: Instant, want_fingers: bool) {
        if let Some(succ) = self.table.successor().cloned() {
            self.stabilize_with(succ, want_fingers, now);
        }
    }

    /// Asks `peer` for its neighbours and notifies it, unless already asking.
    fn stabilize_with(&mut self, peer: NodeRef<A>, want_fingers: bool, now: Instant) {
        let already = self
            .pending
            .values()
            .any(|p| matches!(&p.waiting, Waiting::Stabilize { peer: q } if q.id == peer.id));
        if already {
            return;
        }
        let sender = self.me.clone();
        let (to, retries) = (peer.addr.clone(), self.cfg.request_retries);
        self.request(to, retries, Waiting::Stabilize { peer }, now, |txn| {
            Message::GetNeighbors(GetNeighbors {
                txn,
                sender,
                notify: true,
                want_fingers,
            })
        });
    }

    fn check_predecessor(&mut self, now: Instant) {
        let Some(pred) = self.table.predecessor().cloned() else {
            return;
        };
        // Our predecessor stabilizes with us every period; only a silent one
        // is probed.
        let silent = self
            .pred_seen
            .is_none_or(|t| now.saturating_duration_since(t) > self.cfg.stabilize_interval * 2);
        if silent {
            self.ping(pred, now);
        }
    }

    fn ping(&mut self, peer: NodeRef<A>, now: Instant) {
        let already = self
            .pending
            .values()
            .any(|p| matches!(&p.waiting, Waiting::Ping { peer: q } if q.id == peer.id));
        if already {
            return;
        }
        let (to, retries) = (peer.addr.clone(), self.cfg.request_retries);
        self.request(to, retries, Waiting::Ping { peer }, now, |txn| {
            Message::Ping(Ping { txn })
        });
    }

    fn fix_next_finger(&mut self, now: Instant) {
        let Some(low) = self.table.successor_bucket() else {
            return;
        };
        // Fingers in or below the successor's bucket are the successor itself.
        let first = low + 1;
        if first >= Hash::BITS {
            return;
        }
        if self.finger_cursor < first || self.finger_cursor >= Hash::BITS {
            self.finger_cursor = first;
        }
        let bucket = self.finger_cursor;
        self.finger_cursor += 1;
        if self
            .lookups
            .values()
            .any(|l| l.purpose == Purpose::Finger(bucket))
        {
            return;
        }
        let key = self.me.id.wrapping_add(&Hash::pow2(bucket));
        let id = self.start_lookup(key, Purpose::Finger(bucket), now);
        self.lookup_attempt(id, now);
    }

    /// Sends a message that awaits an answer: refused (and counted) when too
    /// many are pending; otherwise it gets a fresh `txn`, is remembered until
    /// answered, and is sent again `retries` times if it is not.
    fn request(
        &mut self,
        to: A,
        retries: u32,
        waiting: Waiting<A>,
        now: Instant,
        message: impl FnOnce(u64) -> Message<A>,
    ) -> Option<u64> {
        if self.pending.len() >= self.cfg.max_pending {
            self.stats.dropped_overload += 1;
            return None;
        }
        let txn = self.fresh_txn();
        let bytes = Bytes::from(message(txn).encode());
        let deadline = now + self.cfg.request_timeout;
        self.arm(deadline);
        self.pending.insert(
            txn,
            Pending {
                to: to.clone(),
                bytes: bytes.clone(),
                deadline,
                retries_left: retries,
                held: false,
                waiting,
            },
        );
        self.push_transmit(to, bytes);
        Some(txn)
    }

    /// The pending request `txn`, if what it waits for is what `expected`
    /// accepts; a reply that matches nothing, or another kind of request,
    /// is counted as unexpected (and the request left pending).
    fn take_reply(
        &mut self,
        txn: u64,
        expected: impl Fn(&Waiting<A>) -> bool,
    ) -> Option<Pending<A>> {
        match self.pending.remove(&txn) {
            Some(p) if expected(&p.waiting) => Some(p),
            Some(other) => {
                self.pending.insert(txn, other);
                self.stats.dropped_unexpected += 1;
                None
            }
            None => {
                self.stats.dropped_unexpected += 1;
                None
            }
        }
    }

    fn pending_expired(&mut self, txn: u64, now: Instant) {
        let Some(mut p) = self.pending.remove(&txn) else {
            return;
        };
        if p.retries_left == self.cfg.request_retries || p.retries_left == 0 {
            self.punch_on_timeout(&p.to, &p.waiting, now);
        }
        if p.retries_left == 0 {
            self.forget_relay_route(&p.to, now);
        }
        if p.retries_left > 0 {
            let first_retry = p.retries_left == self.cfg.request_retries;
            // A broadcast child's arc is re-covered now, once (below, after
            // the entry is back in the table).
            let recover = match &mut p.waiting {
                Waiting::Data {
                    next,
                    exclude,
                    reroute: reroute @ Reroute::AtFirstTimeout,
                    ..
                } => {
                    *reroute = Reroute::Done;
                    Some((*next, exclude.clone(), p.bytes.clone()))
                }
                _ => None,
            };
            let suspect = matches!(&p.waiting, Waiting::Stabilize { peer }
                if first_retry && self.table.successor().is_some_and(|s| s.id == peer.id));
            p.retries_left -= 1;
            p.deadline = now + self.cfg.request_timeout;
            self.arm(p.deadline);
            // A request held already stays so: the destination's share of
            // retransmissions goes to the others.
            if !p.held && self.may_retransmit(&p.to, now) {
                self.push_transmit(p.to.clone(), p.bytes.clone());
            } else {
                self.stats.retransmits_held += 1;
                if !p.held {
                    p.held = true;
                    if let Some(b) = self.backoff.get_mut(&p.to) {
                        b.held.push(txn);
                    }
                }
            }
            // Back in the table before anything else is requested: the
            // probes below must count it against max_pending (found by the
            // `node` fuzz target: pending reached max_pending + 1).
            self.pending.insert(txn, p);
            if let Some((next, exclude, bytes)) = recover {
                self.recover_arc(&bytes, next, exclude, now);
            }
            if suspect {
                self.suspect_successor(now);
            }
            return;
        }
        match p.waiting {
            Waiting::Ping { peer } | Waiting::Stabilize { peer } => self.peer_failed(&peer, now),
            Waiting::Verify => {}
            Waiting::Observe { join } => {
                if join {
                    self.fail_join(JoinError::Unreachable);
                }
            }
            Waiting::Admit { .. } => self.stats.admissions_failed += 1,
            Waiting::PunchRequest { target } => self.punch_attempt_failed(&target, now),
            Waiting::Reserve { relay } => self.relay_lost(relay, now),
            Waiting::PunchPing { peer } => self.punch_ping_expired(&peer, now),
            Waiting::Confirm { lookup, owner, .. } => {
                // The owner named is dead (or unreachable): forget it and
                // look again; the deadline still bounds the whole lookup.
                self.stats.lookup_owners_silent += 1;
                self.peer_failed(&owner, now);
                if self.lookups.contains_key(&lookup) {
                    self.lookup_attempt(lookup, now);
                }
            }
            Waiting::Data {
                next,
                exclude,
                reroute,
                ..
            } => self.data_hop_failed(&p.bytes, next, exclude, reroute, now),
            Waiting::Forward {
                msg,
                next,
                mut exclude,
            } => match next {
                None => {
                    // The bootstrap never acknowledged the join.
                    self.fail_join(JoinError::Unreachable);
                }
                Some(id) => {
                    // Route around the silent hop; it leaves the fingers and
                    // the backup successors, the failure detector decides the rest.
                    self.demote(&id, now);
                    if self.table.successor().is_some_and(|s| s.id == id) {
                        self.send_stabilize(now);
                    }
                    exclude.push(id);
                    let mut msg = *msg;
                    msg.hops = msg.hops.saturating_sub(1);
                    if self.phase == Phase::Joined {
                        self.route_lookup(msg, exclude, now);
                    }
                }
            },
        }
    }

    /// A hop did not acknowledge: it leaves the fingers and the backup
    /// successors (the failure detector decides the rest), and is
    /// remembered among the past peers, to be probed later in case it was
    /// only slow.
    fn demote(&mut self, id: &Hash, now: Instant) {
        if let Some(n) = self.table.get(id).cloned() {
            self.remember_past(&n, now);
        }
        self.table.demote(id);
    }

    /// A peer did not answer a request and its retries: it is dead to us.
    fn peer_failed(&mut self, peer: &NodeRef<A>, now: Instant) {
        self.stats.peers_failed += 1;
        let was_succ = self.table.successor().is_some_and(|s| s.id == peer.id);
        self.table.remove(&peer.id);
        self.remember_dead(peer.id, now);
        self.remember_past(peer, now);
        tracing::debug!(me = %self.me.id.short(), peer = %peer.id.short(), "peer failed");
        if was_succ {
            // The backups were probed when the head fell silent. Those probed
            // before the first one that answered had the same time and kept
            // quiet: skip them. (A live one skipped by mistake comes back
            // through the next stabilize, as its successor's predecessor.)
            let list = self.table.successors();
            let answered = |id: &Hash| self.probed.iter().any(|(p, ok)| p == id && *ok);
            if let Some(first) = list.iter().position(|n| answered(&n.id)) {
                let silent: Vec<Hash> = list[..first]
                    .iter()
                    .map(|n| n.id)
                    .filter(|id| self.probed.iter().any(|(p, ok)| p == id && !*ok))
                    .collect();
                tracing::trace!(me = %self.me.id.short(), silent = silent.len(), "skipping silent backups");
                for id in silent {
                    // Silent, maybe only slow: remembered, and probed later.
                    if let Some(n) = self.table.get(&id).cloned() {
                        self.remember_past(&n, now);
                    }
                    self.table.remove(&id);
                }
            } else {
                self.suspect_successor(now);
            }
            self.probed.clear();
            if self.table.successor().is_none() {
                // Every successor is gone: the nearest finger is the best
                // guess, and stabilize walks back from it through predecessors.
                let fingers = self.table.fingers().to_vec();
                tracing::trace!(me = %self.me.id.short(), fingers = fingers.len(), "every successor gone");
                self.table.set_successors(fingers);
            }
            self.send_stabilize(now);
        }
    }

    /// The head of the successor list is slow to answer: probe every backup
    /// at once, so that a run of dead successors costs one timeout, not one
    /// timeout each.
    fn suspect_successor(&mut self, now: Instant) {
        let backups: Vec<NodeRef<A>> = self.table.successors().iter().skip(1).cloned().collect();
        self.probed = backups.iter().map(|n| (n.id, false)).collect();
        for n in backups {
            self.ping(n, now);
        }
    }

    fn remember_dead(&mut self, id: Hash, now: Instant) {
        if self.dead.len() >= DEAD_MEMORY_LEN {
            self.dead.pop_front();
        }
        self.dead.push_back((id, now));
    }

    /// Remembers a failed peer, to probe with backoff (the oldest failure
    /// is forgotten first when the memory is full).
    fn remember_past(&mut self, peer: &NodeRef<A>, now: Instant) {
        if self.cfg.past_peers == 0 || self.past.iter().any(|p| p.node.id == peer.id) {
            return;
        }
        if self.past.len() >= self.cfg.past_peers {
            if let Some(oldest) = (0..self.past.len()).min_by_key(|&i| self.past[i].failed_at) {
                self.past.swap_remove(oldest);
            }
        }
        let backoff = self.cfg.stabilize_interval;
        self.past.push(PastPeer {
            node: peer.clone(),
            failed_at: now,
            next_probe: now + backoff,
            backoff,
        });
    }

    /// Probes the remembered peer most overdue (one per tick, the nearest
    /// successor-wise among equals), and forgets those past their time.
    fn probe_past(&mut self, now: Instant) {
        let ttl = self.cfg.past_peer_ttl;
        self.past.retain(|p| now < p.failed_at + ttl);
        let me = self.me.id;
        let due = (0..self.past.len())
            .filter(|&i| self.past[i].next_probe <= now)
            .min_by_key(|&i| me.distance_to(&self.past[i].node.id));
        let Some(i) = due else {
            return;
        };
        let max = self.cfg.past_probe_max;
        let p = &mut self.past[i];
        p.next_probe = now + p.backoff;
        p.backoff = (p.backoff * 2).min(max);
        let node = p.node.clone();
        tracing::trace!(me = %self.me.id.short(), peer = %node.id.short(), "probing a past peer");
        self.stats.past_probes += 1;
        self.admit(node, Role::Past, now);
    }

    fn is_dead(&self, id: &Hash, now: Instant) -> bool {
        let window = self.cfg.stabilize_interval * DEAD_MEMORY_PERIODS;
        self.dead
            .iter()
            .any(|(d, at)| d == id && now < *at + window)
    }

    // --------------------------------------------------------------------- misc

    fn push_transmit(&mut self, to: A, bytes: impl Into<Bytes>) {
        self.transmits.push_back(Transmit {
            to,
            bytes: bytes.into(),
        });
    }

    fn fresh_txn(&mut self) -> u64 {
        self.fresh_id(|n, id| n.pending.contains_key(&id))
    }

    fn fresh_id(&mut self, taken: impl Fn(&Self, u64) -> bool) -> u64 {
        loop {
            let id = self.rng.next_u64();
            if id != 0 && !taken(self, id) {
                return id;
            }
        }
    }

    /// Reports peers that entered or left the routing state since last time.
    fn sync_known(&mut self) {
        if self.table.version() == self.known_version {
            return;
        }
        self.known_version = self.table.version();
        tracing::trace!(
            me = %self.me.id.short(),
            succ = ?self.table.successors().iter().map(|n| n.id.short()).collect::<Vec<_>>(),
            pred = ?self.table.predecessor().map(|n| n.id.short()),
            fingers = self.table.fingers().len(),
            past = self.past.len(),
            "table"
        );
        let mut now_known: Vec<NodeRef<A>> = self.table.peers().cloned().collect();
        now_known.sort_by_key(|a| a.id);
        now_known.dedup_by(|a, b| a.id == b.id);
        // Kept until the table changes again: successors and fingers
        // overlap, so the list is often a third shorter than collected.
        now_known.shrink_to_fit();
        if now_known.len() == self.known.len()
            && now_known.iter().zip(&self.known).all(|(a, b)| a.id == b.id)
        {
            return;
        }
        let (mut i, mut j) = (0, 0);
        while i < self.known.len() || j < now_known.len() {
            let old = self.known.get(i);
            let new = now_known.get(j);
            match (old, new) {
                (Some(o), Some(n)) if o.id == n.id => {
                    i += 1;
                    j += 1;
                }
                (Some(o), Some(n)) if o.id < n.id => {
                    self.events.push_back(Event::PeerRemoved(o.clone()));
                    i += 1;
                }
                (Some(o), None) => {
                    self.events.push_back(Event::PeerRemoved(o.clone()));
                    i += 1;
                }
                (_, Some(n)) => {
                    self.events.push_back(Event::PeerAdded(n.clone()));
                    j += 1;
                }
                (None, None) => break,
            }
        }
        self.known = now_known;
    }
}

/// An `Observe` request with id `txn`.
fn observe<A>(txn: u64) -> Message<A> {
    Message::Observe(Observe {
        txn,
        pad: vec![0; crate::wire::OBSERVE_PAD],
    })
}
