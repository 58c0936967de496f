//! What a [`crate::LocalNode`] hands out: datagrams to send, events for the
//! application, and the counters it keeps.

use bytes::Bytes;

use crate::hash::Hash;
use crate::wire::NodeRef;

/// A datagram the driver must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit<A> {
    /// Where to send it.
    pub to: A,
    /// The encoded datagram (shared with the copy kept for a retry).
    pub bytes: Bytes,
}

/// Names a lookup started with [`crate::LocalNode::lookup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LookupId(pub u64);

/// Names a message sent with [`crate::LocalNode::send`] or
/// [`crate::LocalNode::broadcast`]; receivers see the origin's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub u64);

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// To whichever live node owns this key (its successor).
    Key(Hash),
    /// To exactly the node with this id; fails if no live node has it.
    Node(Hash),
}

/// Why a send was refused or failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The node is not part of a ring yet.
    #[error("not part of a swarm yet")]
    NotJoined,
    /// The payload is larger than the configured maximum.
    #[error("payload of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Too many sends are outstanding.
    #[error("too many messages in flight")]
    Overloaded,
    /// No live node has the target id.
    #[error("no live peer has that id")]
    NoSuchNode,
    /// No acknowledgement from the destination before the deadline.
    #[error("the destination did not confirm in time")]
    Timeout,
    /// This node left the ring before the message was confirmed.
    #[error("this peer left the swarm")]
    Left,
    /// The destination was reached but its application had no room for
    /// the message (its receive queue stayed full) until the deadline: it
    /// was not handed to the application.
    #[error("the destination's receive queue stayed full")]
    ReceiverBusy,
    /// No way on from here at the moment (the ring is healing): returned
    /// by `send_datagram`, which does not retry; `send` retries instead.
    #[error("no route to the destination from here at the moment")]
    NoRoute,
}

/// Why a join failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The bootstrap address never acknowledged.
    #[error("the bootstrap peer did not answer")]
    Unreachable,
    /// The bootstrap answered but the lookup of our place did not complete.
    #[error("joining timed out")]
    Timeout,
    /// The bootstrap speaks other protocol versions.
    #[error("the bootstrap peer speaks protocol versions {min}..={max}, this node speaks {ours}")]
    VersionMismatch {
        /// Oldest version the bootstrap speaks.
        min: u8,
        /// Newest version the bootstrap speaks.
        max: u8,
        /// The version this node speaks.
        ours: u8,
    },
    /// Another live node already has this node's id.
    #[error("another node in the swarm already has this id")]
    IdInUse,
}

/// Something the application may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<A> {
    /// This node is part of a ring: after [`crate::LocalNode::create`], or a
    /// join whose successor answered.
    Joined {
        /// Our successor (ourselves for a new ring).
        successor: NodeRef<A>,
    },
    /// A join gave up.
    JoinFailed {
        /// Why.
        reason: JoinError,
    },
    /// A lookup found the node responsible for its key.
    LookupDone {
        /// The lookup.
        id: LookupId,
        /// The key looked up.
        key: Hash,
        /// The live successor of `key`.
        owner: NodeRef<A>,
        /// Forwarding steps it took (0: this node knew).
        hops: u32,
    },
    /// A lookup gave up at its deadline.
    LookupFailed {
        /// The lookup.
        id: LookupId,
        /// The key looked up.
        key: Hash,
    },
    /// A peer entered this node's routing state (successors, predecessor or
    /// fingers). Emitted once each time it enters.
    PeerAdded(NodeRef<A>),
    /// A peer left this node's routing state: it failed, left, or was replaced.
    PeerRemoved(NodeRef<A>),
    /// This node left the ring gracefully; it sends nothing more.
    Left,
    /// A message sent with `send` reached its destination, which confirmed.
    Delivered {
        /// The message.
        id: MessageId,
        /// The node that received it.
        to: NodeRef<A>,
        /// Forwarding steps it took.
        hops: u32,
    },
    /// A message sent with `send` cannot be delivered.
    SendFailed {
        /// The message.
        id: MessageId,
        /// Why.
        reason: SendError,
    },
    /// A peer answered an [`Observe`](crate::wire::Observe): it sees this
    /// node at `seen` (behind a NAT, the address the NAT gave it).
    Observed {
        /// The peer that answered.
        by: A,
        /// The address it sees this node at.
        seen: A,
    },
    /// A node whose address was a placeholder
    /// ([`LocalNode::set_provisional`](crate::LocalNode::set_provisional))
    /// took the address its first contact sees it at, and the id derived
    /// from it: this is who it is from now on.
    AddressLearned {
        /// The node's new identity.
        me: NodeRef<A>,
    },
    /// An application message for this node, handed up once.
    Received {
        /// The node that sent it.
        from: NodeRef<A>,
        /// The sender's id for it.
        id: MessageId,
        /// The application's bytes.
        payload: Bytes,
        /// Whether it came by broadcast.
        broadcast: bool,
        /// Forwarding steps it took to arrive.
        hops: u32,
    },
    /// What a store operation (put, get, listen, announce, find) did.
    Store(StoreEvent<A>),
}

/// The id of a store operation, as `LocalNode::put` and the others return it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreOp(pub u64);

/// The outcome of a store operation, or a listened key's news.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent<A> {
    /// A put (or announce) was stored by the key's owner, which sends it
    /// on to the replicas.
    Stored {
        /// The operation.
        op: StoreOp,
        /// The key.
        key: Hash,
    },
    /// The records of a key (none: the key holds nothing).
    Got {
        /// The operation.
        op: StoreOp,
        /// The key.
        key: Hash,
        /// Its records.
        records: Vec<crate::store::Record>,
        /// Forwarding steps the lookup of its owner took.
        hops: u32,
    },
    /// The peers that announced a topic (see `LocalNode::find`).
    Peers {
        /// The operation.
        op: StoreOp,
        /// The topic's key.
        key: Hash,
        /// The peers.
        peers: Vec<NodeRef<A>>,
        /// Forwarding steps the lookup of its owner took.
        hops: u32,
    },
    /// A listened key has a record this listener had not seen: each
    /// (key, record identity, sequence number) is reported once.
    Update {
        /// The listen operation.
        op: StoreOp,
        /// The key.
        key: Hash,
        /// The record.
        record: crate::store::Record,
    },
    /// An operation failed: refused by the owner (`Some`), or no owner
    /// answered before `StoreConfig::op_timeout` (`None`).
    Failed {
        /// The operation.
        op: StoreOp,
        /// The key.
        key: Hash,
        /// Why the owner refused it, if it did.
        refused: Option<crate::store::Refused>,
    },
}

/// Counters a node keeps; they only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to [`crate::LocalNode::handle_datagram`].
    pub datagrams_in: u64,
    /// Datagrams handed out through [`crate::LocalNode::poll_transmit`].
    pub datagrams_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Datagrams dropped because they were not Cicada's or did not decode.
    pub dropped_malformed: u64,
    /// Datagrams dropped because they spoke another version.
    pub dropped_version: u64,
    /// Well-formed datagrams that answered nothing pending (late, duplicate, forged).
    pub dropped_unexpected: u64,
    /// Requests refused because too many were pending.
    pub dropped_overload: u64,
    /// Lookups dropped for exceeding the hop limit.
    pub dropped_hop_limit: u64,
    /// Lookups forwarded on behalf of others.
    pub lookups_forwarded: u64,
    /// Peers declared dead after unanswered requests.
    pub peers_failed: u64,
    /// Application datagrams received to deliver or forward.
    pub data_forwarded: u64,
    /// Broadcast datagrams sent to children.
    pub broadcast_sent: u64,
    /// Copies of messages already handed up (duplicates, retries), dropped.
    pub duplicates_suppressed: u64,
    /// Deepest broadcast received (forwarding steps from its origin).
    pub max_broadcast_hops: u32,
    /// Fragments refused by reassembly (inconsistent or over the memory bound).
    pub reassembly_refused: u64,
    /// Messages reported undeliverable to their origin.
    pub undeliverable: u64,
    /// Unconfirmed datagrams sent from here (`LocalNode::send_datagram`).
    pub datagrams_sent: u64,
    /// Unconfirmed datagrams dropped here: no route on, no such node, or
    /// malformed (split in fragments, or a broadcast without an id).
    pub datagrams_dropped: u64,
    /// Requests dropped because their source address had used up its
    /// token bucket (`Config::source_rate`, `Config::source_burst`).
    pub dropped_rate_limited: u64,
    /// Replies not sent because the address is unverified and the reply
    /// would exceed the bytes received from it (amplification guard).
    pub dropped_amplification: u64,
    /// Neighbors replies larger than their request sent to an address not
    /// yet verified (at most a few per address; see `docs/security.md`).
    pub replies_unverified: u64,
    /// Neighbors replies held back until the asking address answers a
    /// verification probe (it had used up its unverified replies).
    pub replies_deferred: u64,
    /// Messages dropped because they named a node under an id that its
    /// address does not derive to (see `LocalNode::with_identity`).
    pub dropped_bad_identity: u64,
    /// Probes sent to nodes heard of second-hand before they may enter the
    /// routing table.
    pub admission_probes: u64,
    /// Nodes heard of second-hand that never answered their probe, and so
    /// never entered the table.
    pub admissions_failed: u64,
    /// Probes of peers that failed earlier (see `Config::past_peers`).
    pub past_probes: u64,
    /// Peers that failed earlier and answered such a probe, outside the
    /// routing table: a healed partition, or a peer back from an outage.
    pub past_peers_found: u64,
    /// User lookups whose answer named an owner that did not answer its
    /// `OwnerCheck` (dead or unreachable); each was looked up again.
    pub lookup_owners_silent: u64,
    /// User lookups whose answer named a live node that said the key is
    /// not its own (it lies before its predecessor); each was looked up
    /// again one attempt later.
    pub lookup_owners_disowned: u64,
    /// Message ids forgotten before their retention ran out because the
    /// dedup window (`Config::dedup_window`) was full: a late retry of one
    /// of them would be handed up twice.
    pub dedup_evicted_early: u64,
    /// Hints sent to a node whose successor list is stale: it sent us a
    /// message as its last hop for a key that lies before our predecessor
    /// (the message goes on to the predecessor). At most one per sender
    /// per stabilization period, however many messages overshoot.
    pub stale_successor_hints: u64,
    /// Retransmissions held back because their destination had been sent
    /// its share for this request timeout without answering (see
    /// `Config::request_timeout`); each goes out when the destination
    /// answers anything, or its request fails when its retries run out.
    pub retransmits_held: u64,
    /// Confirmed messages refused with [`crate::wire::Refusal::Busy`]
    /// because the application had no room for them (see
    /// `LocalNode::set_receive_room`); each origin retries until its deadline.
    pub refused_busy: u64,
    /// Datagrams a node with a placeholder address dropped because it did
    /// not know its own address yet (each sender retries; see
    /// `LocalNode::set_provisional`).
    pub dropped_provisional: u64,
    /// Broadcasts and unconfirmed datagrams for this node dropped because
    /// the application had no room for them (nobody waits for either).
    pub dropped_no_room: u64,
    /// Hole punches this node started (see `docs/protocol.md`, "Hole
    /// punching"): a request to a peer that never answered timed out.
    pub punches_started: u64,
    /// Punches that opened a path (the target answered a punch packet).
    pub punches_succeeded: u64,
    /// Punches that failed: every rendezvous tried, or the target said its
    /// NAT cannot be punched. Each is remembered for a while.
    pub punches_failed: u64,
    /// Punches not started because one to the same target failed lately.
    pub punches_suppressed: u64,
    /// Introductions this node passed on as a rendezvous.
    pub punches_introduced: u64,
    /// Paths this node opened as the target of another's punch.
    pub punches_answered: u64,
    /// Punch packets sent (one per address of the other side).
    pub punch_packets: u64,
    /// Keepalives sent on punched paths that were quiet for
    /// `Config::keepalive_interval`.
    pub keepalives_sent: u64,
    /// Owners of unconfirmed sends' targets looked up and probed by this
    /// node behind a NAT, to open its NAT to their confirmations.
    pub reach_probes: u64,
    /// Reservations this node (behind a NAT that maps per destination)
    /// obtained from a relay, refreshes not counted.
    pub relay_reservations: u64,
    /// Relays this node left because they stopped answering or refused.
    pub relays_lost: u64,
    /// Punches whose target answered that it is reached through a relay
    /// (the initiator then reaches it there).
    pub punches_relayed: u64,
    /// As a relay: datagrams forwarded.
    pub relayed_frames: u64,
    /// As a relay: bytes forwarded.
    pub relayed_bytes: u64,
    /// As a relay: frames dropped (past `relay_rate`, neither end holding
    /// a reservation, relaying off, or too large).
    pub relay_dropped: u64,
    /// As a relay: reservations and claims refused (relaying off, no room
    /// among `relay_peers`, or the address held by another source).
    pub relay_refused: u64,
}
