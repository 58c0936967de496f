//! [`LocalNode`]: one Chord node as a state machine without I/O.

mod arrive;
mod commands;
mod data;
mod handlers;
mod identity;
mod inspect;
mod lookup;
mod maintain;
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
