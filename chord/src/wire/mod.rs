//! The wire format: a 4-byte header, then a postcard-encoded body.
//!
//! ```text
//! +------+------+---------+------+----------------------+
//! | 0xC1 | 0xCA | version | kind | body (postcard)      |
//! +------+------+---------+------+----------------------+
//! ```
//!
//! Every message is described in `docs/protocol.md`; golden-byte tests below
//! pin the encoding so that a change to it cannot go unnoticed.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{MAGIC, MAX_DATAGRAM, MAX_LIST_ON_WIRE, VERSION};
use crate::hash::Hash;
use crate::store::{Record, Refused};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 4;

/// A node as other nodes know it: its id and the address it is reached at.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeRef<A> {
    /// The node's place on the ring.
    pub id: Hash,
    /// Where the node receives datagrams; the core never looks inside.
    pub addr: A,
}

impl<A> NodeRef<A> {
    /// Pairs an id with an address.
    pub fn new(id: Hash, addr: A) -> NodeRef<A> {
        NodeRef { id, addr }
    }
}

/// Why a datagram was not accepted. Each is counted in [`crate::Stats`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a header.
    #[error("datagram of {0} bytes is shorter than the header")]
    TooShort(usize),
    /// More bytes than any datagram may have.
    #[error("datagram of {0} bytes exceeds the limit")]
    TooLong(usize),
    /// The first two bytes are not Cicada's.
    #[error("not a Cicada datagram (bad magic)")]
    BadMagic,
    /// A version this node does not speak.
    #[error("unsupported protocol version {0} (this node speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// A message kind this version does not define.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The body does not decode as the kind says.
    #[error("malformed {kind} body: {reason}")]
    Malformed {
        /// The kind the header announced.
        kind: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The body decoded but breaks a limit (list too long, hop count too high).
    #[error("{0}")]
    OverLimit(&'static str),
}

impl DecodeError {
    /// A short stable name for counting and logs.
    pub fn name(&self) -> &'static str {
        match self {
            DecodeError::TooShort(_) => "too_short",
            DecodeError::TooLong(_) => "too_long",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::OverLimit(_) => "over_limit",
        }
    }
}

/// Liveness probe; answered by [`Message::Pong`] with the same `txn`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Request id, random, echoed in the reply.
    pub txn: u64,
}

/// Asks the owner a lookup named whether it owns `key`: whether `key` lies
/// between its predecessor (exclusive) and itself (inclusive). Answered by
/// [`Message::Owns`], which is smaller than this request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerCheck {
    /// Request id, echoed in the reply.
    pub txn: u64,
    /// The key looked up.
    pub key: Hash,
}

/// Reply to [`OwnerCheck`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owns {
    /// The request's id.
    pub txn: u64,
    /// Whether the key lies between the responder's predecessor and the
    /// responder (true as well when it knows no predecessor).
    pub yes: bool,
}

/// "At which address do you see me?": asked by a node that does not know
/// the address others reach it at (bound to all interfaces), of the first
/// peer it talks to. Answered by [`Message::Observed`]. The padding keeps
/// the request at least as large as any answer to an address that has not
/// proved it receives (see the amplification guard in `docs/security.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observe {
    /// Request id, echoed in the reply.
    pub txn: u64,
    /// Zero bytes, [`OBSERVE_PAD`] of them; their content is ignored.
    pub pad: Vec<u8>,
}

/// Padding of an [`Observe`]: room for the reply's IPv6 socket address.
pub const OBSERVE_PAD: usize = 32;

/// Reply to [`Observe`]: the source address its request came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed<A> {
    /// The request's id.
    pub txn: u64,
    /// Where the request came from, as the replier saw it.
    pub seen: A,
}

/// Stabilize: "tell me your predecessor and successors", and with `notify`
/// "I believe I am your predecessor" (Chord's `notify`, folded in to save a
/// message per period).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetNeighbors<A> {
    /// Request id, echoed in [`Neighbors`].
    pub txn: u64,
    /// The asking node.
    pub sender: NodeRef<A>,
    /// Whether the sender wants to be considered as predecessor.
    pub notify: bool,
    /// Whether the reply should carry fingers (a joining node seeds its table).
    pub want_fingers: bool,
}

/// Reply to [`GetNeighbors`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbors<A> {
    /// The request's id.
    pub txn: u64,
    /// The responder's predecessor, if it has one.
    pub predecessor: Option<NodeRef<A>>,
    /// The responder's successor list, nearest first.
    pub successors: Vec<NodeRef<A>>,
    /// The responder's fingers, when asked for.
    pub fingers: Vec<NodeRef<A>>,
}

/// A recursive lookup travelling towards the predecessor of `key`. Each hop
/// acknowledges it with [`Message::HopAck`] so the previous hop can route
/// around a dead next hop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindSuccessor<A> {
    /// Per-hop request id, echoed in the hop's acknowledgement.
    pub txn: u64,
    /// The origin's id for the lookup, echoed in [`Found`].
    pub lookup: u64,
    /// The key whose successor is sought.
    pub key: Hash,
    /// Who asked, and receives the answer.
    pub origin: NodeRef<A>,
    /// Forwarding steps so far.
    pub hops: u8,
    /// Set by a joining node looking up its own id: the answer must not be a
    /// node with the origin's id (an earlier incarnation of it).
    pub joining: bool,
    /// Where the answer goes instead of the origin: the bootstrap of a
    /// joining node sets its own address, and relays the [`Found`] to the
    /// joiner, which may sit behind a NAT that lets in only the bootstrap.
    pub via: Option<A>,
}

/// The answer to a lookup, sent by the key's predecessor to the origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found<A> {
    /// The origin's lookup id.
    pub lookup: u64,
    /// The key that was looked up.
    pub key: Hash,
    /// The live node responsible for `key` (its successor).
    pub owner: NodeRef<A>,
    /// Forwarding steps the lookup took.
    pub hops: u8,
}

/// Acknowledges one hop of a forwarded message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopAck {
    /// The forwarded message's per-hop id.
    pub txn: u64,
}

/// A graceful leave: the leaving node hands its neighbours to each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave<A> {
    /// The node that leaves.
    pub sender: Hash,
    /// Its predecessor, for its successor to adopt.
    pub predecessor: Option<NodeRef<A>>,
    /// Its successor list, for its predecessor to adopt.
    pub successors: Vec<NodeRef<A>>,
}

/// "A node has appeared between you and your successor": sent by a node to
/// its old predecessor when a nearer one notified it, so that the old
/// predecessor stabilizes with the newcomer now instead of a period later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuccessorHint<A> {
    /// The node that appeared.
    pub node: NodeRef<A>,
}

/// How a [`Data`] message is addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// To whichever live node owns the key `target`.
    Key,
    /// To exactly the node whose id is `target`; fails if none is live.
    Node,
    /// A broadcast: the receiver covers the arc from itself to `limit`.
    /// Routed (not final) it goes to the first live node at or after `target`.
    Broadcast,
}

/// The routing part of an application message; the payload follows it raw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataHeader<A> {
    /// Per-hop request id, echoed in the hop's acknowledgement.
    pub txn: u64,
    /// The origin's message id.
    pub msg: u64,
    /// Who sent the message, and receives the end-to-end acknowledgement.
    pub origin: NodeRef<A>,
    /// The key or node id the message goes to.
    pub target: Hash,
    /// How `target` is read.
    pub mode: Mode,
    /// Broadcast only: the end (exclusive) of the arc the receiver covers.
    pub limit: Hash,
    /// Forwarding steps so far.
    pub hops: u8,
    /// The sender believes the receiver is the destination.
    pub last_hop: bool,
    /// This fragment's index.
    pub frag: u16,
    /// Number of fragments of the message (1: not split).
    pub frags: u16,
}

/// An application message (unicast or broadcast) or one fragment of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data<A> {
    /// Addressing and routing.
    pub header: DataHeader<A>,
    /// The application's bytes (or this fragment of them).
    pub payload: Bytes,
}

/// End-to-end acknowledgement: the destination has these whole messages,
/// all from the origin it is sent to. A destination confirms together the
/// messages of one origin that it handled in one go (between two
/// `poll_transmit` drains), at most [`MAX_LIST_ON_WIRE`] per datagram.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered<A> {
    /// The node that received them.
    pub owner: NodeRef<A>,
    /// The messages, each with the forwarding steps it took.
    pub msgs: Vec<Confirmed>,
}

/// [`Delivered`] borrowed, for encoding: the same bytes.
#[derive(Serialize)]
struct DeliveredRef<'a, A> {
    owner: &'a NodeRef<A>,
    msgs: &'a [Confirmed],
}

/// Encodes a [`Message::Delivered`] from borrowed parts, as
/// [`Message::encode`] would (a node confirming builds no message, and
/// keeps its list to fill again).
pub fn encode_delivered<A: Serialize>(owner: &NodeRef<A>, msgs: &[Confirmed]) -> Vec<u8> {
    let value = DeliveredRef { owner, msgs };
    // Most fit 256 bytes: encoded there and copied to a vector of their
    // exact length, which `Bytes` takes over without allocating again
    // (a vector with room to spare costs it an allocation of its own).
    let mut small = [0u8; ENCODE_ROOM];
    small[..2].copy_from_slice(&MAGIC);
    small[2] = VERSION;
    small[3] = DELIVERED;
    if let Ok(body) = postcard::to_slice(&value, &mut small[HEADER_LEN..]) {
        let len = HEADER_LEN + body.len();
        return small[..len].to_vec();
    }
    let mut out = Vec::with_capacity(ENCODE_ROOM);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(DELIVERED);
    let res = append(&mut out, &value);
    debug_assert!(res.is_ok(), "postcard encoding failed: {res:?}");
    out
}

/// The kind byte of [`Message::Delivered`].
const DELIVERED: u8 = 11;

/// One message of a [`Delivered`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmed {
    /// The origin's message id.
    pub msg: u64,
    /// Forwarding steps the message took.
    pub hops: u8,
}

/// Why a message cannot be delivered, reported to its origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// No live node has the target id.
    NoSuchNode,
    /// The forwarder ran out of routes or hops.
    NoRoute,
    /// The destination is there, but its application has no room for the
    /// message now (its receive queue is full): nothing was handed up, and
    /// a later retry may be taken.
    Busy,
}

/// A forwarder's report that a message cannot be delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undeliverable {
    /// The origin's message id.
    pub msg: u64,
    /// Why.
    pub reason: Refusal,
}

/// Sent in reply to a datagram of an unsupported version. Its layout is
/// the same in every version: header (with kind 0) and two raw bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionMismatch {
    /// Oldest version the sender speaks.
    pub min: u8,
    /// Newest version the sender speaks.
    pub max: u8,
}

/// "Introduce me to `target`": sent by a node that cannot reach `target`
/// directly (it sits behind a NAT that lets in only peers it has sent to)
/// to a peer that links to it, the rendezvous, which passes it on as a
/// [`PunchOffer`]. Answered, through the rendezvous, by [`PunchAnswer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PunchRequest<A> {
    /// The initiator's id for this punch, carried by every message of it.
    pub txn: u64,
    /// The initiator.
    pub origin: NodeRef<A>,
    /// The node it wants a direct path to.
    pub target: NodeRef<A>,
}

/// A [`PunchRequest`] passed on by the rendezvous to its target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PunchOffer<A> {
    /// The initiator's punch id.
    pub txn: u64,
    /// The initiator.
    pub origin: NodeRef<A>,
    /// Where the rendezvous sees the initiator (its NAT's mapping).
    pub seen: A,
}

/// The target's answer to a [`PunchOffer`], sent to the rendezvous, which
/// passes it on to the initiator with `seen` set to where it sees the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PunchAnswer<A> {
    /// The initiator's punch id.
    pub txn: u64,
    /// The target.
    pub target: NodeRef<A>,
    /// Where the rendezvous sees the target (set by the rendezvous).
    pub seen: A,
    /// Whether the target thinks punching can work: false when its NAT
    /// maps per destination (symmetric), and the initiator gives up.
    pub punchable: bool,
}

/// "Punch now": the initiator, through the rendezvous, to the target. The
/// initiator sends its punch packets half a measured round trip later, when
/// this reaches the target, which sends its own at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PunchSync {
    /// The initiator's punch id.
    pub txn: u64,
}

/// "Relay for me": a peer that cannot be reached first (behind a NAT that
/// maps per destination) asks a public peer to forward what others send
/// to `peer`, its announced address, to the address this request came
/// from. Sent again every request timeout while the reservation is held.
/// Answered by [`RelayReserved`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayReserve<A> {
    /// The request's id.
    pub txn: u64,
    /// The address the asking peer announces (its id is derived from it).
    pub peer: A,
}

/// The answer to a [`RelayReserve`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayReserved {
    /// The request's id.
    pub txn: u64,
    /// Whether the reservation is held (false: this peer does not relay,
    /// or has no room).
    pub ok: bool,
}

/// The target of a [`PunchOffer`] is reached through a relay: its answer,
/// through the rendezvous, instead of a [`PunchAnswer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PunchRelayed<A> {
    /// The initiator's punch id.
    pub txn: u64,
    /// The target.
    pub target: NodeRef<A>,
    /// The relay that forwards datagrams to the target.
    pub relay: A,
}

/// The header of a datagram handed to a relay (kind 30): the datagram to
/// pass on follows, as raw bytes to the end (sealed for `to` in a keyed
/// swarm, so that the relay can neither read nor forge it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayToHeader<A> {
    /// Where the datagram goes (an announced address).
    pub to: A,
    /// The sender's announced address, when the sender is itself relayed
    /// (the relay then forwards answers to it as well); `None` otherwise,
    /// and the relay names the sender by the address it came from.
    pub from: Option<A>,
}

/// The header of a datagram a relay passes on (kind 31): the datagram
/// follows, as raw bytes to the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayFromHeader<A> {
    /// Who sent it, as the relay names it: the sender's announced address
    /// if it is relayed, else the address it came from.
    pub from: A,
    /// Whether the sender holds a place at this relay (it is reached
    /// through it: the receiver learns so).
    pub relayed: bool,
}

/// A datagram to or from a relay, with its header (kinds 30 and 31).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayFrame<H> {
    /// Where it goes or whom it comes from.
    pub header: H,
    /// The datagram carried, whole.
    pub payload: Bytes,
}

/// A storage message (kind 17): puts, gets, replication, anti-entropy and
/// subscriptions between nodes (see `docs/storage.md`). One larger than a
/// datagram travels in [`StoreFragment`]s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreMessage<A> {
    /// Writer to owner: store `record`; with `cas`, only if the signed
    /// record held has that sequence number (0: none). Answered by `PutAck`.
    Put {
        /// Request id, echoed.
        txn: u64,
        /// The record (its `writer` is set by the owner).
        record: Record,
        /// Compare-and-swap on the held sequence number.
        cas: Option<u64>,
    },
    /// Owner to writer: how the put went.
    PutAck {
        /// The put's id.
        txn: u64,
        /// `None`: stored by the owner and confirmed by each of its
        /// replicas; else why not.
        refused: Option<Refused>,
    },
    /// Reader to owner (or, `direct`, to a replica): the records of `key`.
    /// Answered by `Values`. With `listen`, also subscribes the sender to
    /// new records of the key (until `StoreConfig::listen_ttl`).
    Get {
        /// Request id, echoed.
        txn: u64,
        /// The key.
        key: Hash,
        /// Sent to a replica, not the owner: no ownership check.
        direct: bool,
        /// Subscribe too.
        listen: bool,
    },
    /// The records of a key; a notification of a listened key too.
    Values {
        /// The request's (or subscription's) id.
        txn: u64,
        /// The key.
        key: Hash,
        /// Its records (all of them, or the new one for a notification).
        records: Vec<Record>,
        /// An owner that holds nothing for the key names its replicas,
        /// for the reader to ask them.
        replicas: Vec<NodeRef<A>>,
        /// Why the request was not served (`NotOwner`), if it was not.
        refused: Option<Refused>,
    },
    /// Records for the receiver to hold as a replica (hand-off, repair,
    /// read repair). Not acknowledged: anti-entropy finds what was lost.
    Replicate {
        /// The records.
        records: Vec<Record>,
    },
    /// Anti-entropy, owner to replica: digests of the owner's range
    /// `(start, end]`, [`crate::store::DIGEST_BUCKETS`] buckets.
    SyncDigest {
        /// Request id, echoed.
        txn: u64,
        /// Range start (exclusive): the owner's predecessor.
        start: Hash,
        /// Range end (inclusive): the owner.
        end: Hash,
        /// One digest per bucket.
        buckets: Vec<u64>,
    },
    /// Anti-entropy, replica to owner: the buckets whose digests differ,
    /// and the replica's key digests in them.
    SyncKeys {
        /// The digest's id.
        txn: u64,
        /// Range start, as in the digest.
        start: Hash,
        /// Range end, as in the digest.
        end: Hash,
        /// Buckets that differ.
        buckets: Vec<u8>,
        /// The replica's keys in them, with their digests.
        keys: Vec<(Hash, u64)>,
    },
    /// "Send me your records of these keys" (answered by `Replicate`).
    Want {
        /// The keys.
        keys: Vec<Hash>,
    },
    /// Owner to replica: a put's records, to hold and confirm with
    /// `Copied`. The owner acknowledges the put once every replica it
    /// knows has confirmed.
    Copy {
        /// The copy's id, echoed.
        txn: u64,
        /// The records.
        records: Vec<Record>,
    },
    /// Replica to owner: the records of `Copy` `txn` are held.
    Copied {
        /// The copy's id.
        txn: u64,
    },
}

/// One piece of a [`StoreMessage`] too large for a datagram (kind 18): the
/// message's postcard body, cut in `frags` pieces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreFragment {
    /// The sender's id for the message.
    pub id: u64,
    /// This piece's index.
    pub frag: u16,
    /// Number of pieces.
    pub frags: u16,
    /// The piece.
    pub bytes: Vec<u8>,
}

/// Most records, keys or nodes a store message may list.
pub const MAX_STORE_LIST: usize = 4096;

/// Decodes the body of a [`StoreMessage`] (whole, or reassembled from
/// fragments), checking its lists against [`MAX_STORE_LIST`].
pub fn decode_store<A: DeserializeOwned>(bytes: &[u8]) -> Result<StoreMessage<A>, DecodeError> {
    let m: StoreMessage<A> = body("Store", bytes)?;
    let long = match &m {
        StoreMessage::Values {
            records, replicas, ..
        } => records.len().max(replicas.len()),
        StoreMessage::Replicate { records } | StoreMessage::Copy { records, .. } => records.len(),
        StoreMessage::SyncKeys { keys, buckets, .. } => keys.len().max(buckets.len()),
        StoreMessage::SyncDigest { buckets, .. } => buckets.len(),
        StoreMessage::Want { keys } => keys.len(),
        _ => 0,
    };
    if long > MAX_STORE_LIST {
        return Err(DecodeError::OverLimit("store list longer than the limit"));
    }
    Ok(m)
}

/// Encodes a [`StoreMessage`]'s body (without the header): the bytes
/// [`StoreFragment`]s carry.
pub fn encode_store_body<A: Serialize>(m: &StoreMessage<A>) -> Vec<u8> {
    postcard::to_allocvec(m).unwrap_or_default()
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<A> {
    /// Kind 0: the sender does not speak the version it received.
    VersionMismatch(VersionMismatch),
    /// Kind 1.
    Ping(Ping),
    /// Kind 2: reply to [`Message::Ping`] (same body).
    Pong(Ping),
    /// Kind 3.
    GetNeighbors(GetNeighbors<A>),
    /// Kind 4.
    Neighbors(Neighbors<A>),
    /// Kind 5.
    FindSuccessor(FindSuccessor<A>),
    /// Kind 6.
    HopAck(HopAck),
    /// Kind 7.
    Found(Found<A>),
    /// Kind 8.
    Leave(Leave<A>),
    /// Kind 9.
    SuccessorHint(SuccessorHint<A>),
    /// Kind 10.
    Data(Data<A>),
    /// Kind 11.
    Delivered(Delivered<A>),
    /// Kind 12.
    Undeliverable(Undeliverable),
    /// Kind 13.
    OwnerCheck(OwnerCheck),
    /// Kind 14: reply to [`Message::OwnerCheck`].
    Owns(Owns),
    /// Kind 15.
    Observe(Observe),
    /// Kind 16: reply to [`Message::Observe`].
    Observed(Observed<A>),
    /// Kind 24.
    PunchRequest(PunchRequest<A>),
    /// Kind 25.
    PunchOffer(PunchOffer<A>),
    /// Kind 26: reply to [`Message::PunchOffer`], relayed as the reply to
    /// [`Message::PunchRequest`].
    PunchAnswer(PunchAnswer<A>),
    /// Kind 27.
    PunchSync(PunchSync),
    /// Kind 28.
    RelayReserve(RelayReserve<A>),
    /// Kind 29: reply to [`Message::RelayReserve`].
    RelayReserved(RelayReserved),
    /// Kind 30: a datagram for a relay to pass on.
    RelayTo(RelayFrame<RelayToHeader<A>>),
    /// Kind 31: a datagram a relay passes on.
    RelayFrom(RelayFrame<RelayFromHeader<A>>),
    /// Kind 32: reply to [`Message::PunchOffer`] from a relayed target,
    /// passed on as the reply to [`Message::PunchRequest`].
    PunchRelayed(PunchRelayed<A>),
    /// Kind 17.
    Store(StoreMessage<A>),
    /// Kind 18.
    StoreFragment(StoreFragment),
}

impl<A> Message<A> {
    /// Every node the message names (senders, owners, origins, lists).
    pub fn nodes(&self) -> impl Iterator<Item = &NodeRef<A>> {
        let (one, lists): (Option<&NodeRef<A>>, [&[NodeRef<A>]; 2]) = match self {
            Message::GetNeighbors(m) => (Some(&m.sender), [&[], &[]]),
            Message::Neighbors(m) => (m.predecessor.as_ref(), [&m.successors[..], &m.fingers[..]]),
            Message::FindSuccessor(m) => (Some(&m.origin), [&[], &[]]),
            Message::Found(m) => (Some(&m.owner), [&[], &[]]),
            Message::Leave(m) => (m.predecessor.as_ref(), [&m.successors[..], &[]]),
            Message::SuccessorHint(m) => (Some(&m.node), [&[], &[]]),
            Message::Data(m) => (Some(&m.header.origin), [&[], &[]]),
            Message::Delivered(m) => (Some(&m.owner), [&[], &[]]),
            Message::PunchRequest(m) => (Some(&m.origin), [std::slice::from_ref(&m.target), &[]]),
            Message::PunchOffer(m) => (Some(&m.origin), [&[], &[]]),
            Message::PunchAnswer(m) => (Some(&m.target), [&[], &[]]),
            Message::PunchRelayed(m) => (Some(&m.target), [&[], &[]]),
            Message::Store(StoreMessage::Values { replicas, .. }) => (None, [&replicas[..], &[]]),
            Message::Store(_) | Message::StoreFragment(_) => (None, [&[], &[]]),
            Message::VersionMismatch(_)
            | Message::Ping(_)
            | Message::Pong(_)
            | Message::HopAck(_)
            | Message::Undeliverable(_)
            | Message::OwnerCheck(_)
            | Message::Owns(_)
            | Message::Observe(_)
            | Message::Observed(_)
            | Message::PunchSync(_)
            | Message::RelayReserve(_)
            | Message::RelayReserved(_)
            | Message::RelayTo(_)
            | Message::RelayFrom(_) => (None, [&[], &[]]),
        };
        one.into_iter().chain(lists.into_iter().flatten())
    }
}

fn body<T: DeserializeOwned>(kind: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| DecodeError::Malformed {
            kind,
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed {
            kind,
            reason: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}

fn check_list<A>(list: &[NodeRef<A>]) -> Result<(), DecodeError> {
    if list.len() > MAX_LIST_ON_WIRE {
        return Err(DecodeError::OverLimit("node list longer than the limit"));
    }
    Ok(())
}

impl<A: Serialize + DeserializeOwned> Message<A> {
    /// The kind byte of this message.
    pub fn kind(&self) -> u8 {
        match self {
            Message::VersionMismatch(_) => 0,
            Message::Ping(_) => 1,
            Message::Pong(_) => 2,
            Message::GetNeighbors(_) => 3,
            Message::Neighbors(_) => 4,
            Message::FindSuccessor(_) => 5,
            Message::HopAck(_) => 6,
            Message::Found(_) => 7,
            Message::Leave(_) => 8,
            Message::SuccessorHint(_) => 9,
            Message::Data(_) => 10,
            Message::Delivered(_) => DELIVERED,
            Message::Undeliverable(_) => 12,
            Message::OwnerCheck(_) => 13,
            Message::Owns(_) => 14,
            Message::Observe(_) => 15,
            Message::Observed(_) => 16,
            Message::PunchRequest(_) => 24,
            Message::PunchOffer(_) => 25,
            Message::PunchAnswer(_) => 26,
            Message::PunchSync(_) => 27,
            Message::RelayReserve(_) => 28,
            Message::RelayReserved(_) => 29,
            Message::RelayTo(_) => RELAY_TO,
            Message::RelayFrom(_) => RELAY_FROM,
            Message::PunchRelayed(_) => 32,
            Message::Store(_) => 17,
            Message::StoreFragment(_) => 18,
        }
    }

    /// Encodes the message, header included.
    pub fn encode(&self) -> Vec<u8> {
        // Room for the whole datagram at once: a Data header is about 120
        // bytes besides its payload (growing the buffer on the way cost a
        // reallocation and a copy of the payload per step).
        let room = match self {
            Message::Data(m) => ENCODE_ROOM + m.payload.len(),
            Message::RelayTo(m) => ENCODE_ROOM + m.payload.len(),
            Message::RelayFrom(m) => ENCODE_ROOM + m.payload.len(),
            _ => ENCODE_ROOM,
        };
        let mut out = Vec::with_capacity(room);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.kind());
        let res = match self {
            Message::VersionMismatch(v) => {
                out.push(v.min);
                out.push(v.max);
                Ok(())
            }
            Message::Ping(m) | Message::Pong(m) => append(&mut out, m),
            Message::GetNeighbors(m) => append(&mut out, m),
            Message::Neighbors(m) => append(&mut out, m),
            Message::FindSuccessor(m) => append(&mut out, m),
            Message::HopAck(m) => append(&mut out, m),
            Message::Found(m) => append(&mut out, m),
            Message::Leave(m) => append(&mut out, m),
            Message::SuccessorHint(m) => append(&mut out, m),
            Message::Data(m) => {
                let r = append(&mut out, &m.header);
                out.extend_from_slice(&m.payload);
                r
            }
            Message::Delivered(m) => append(
                &mut out,
                &DeliveredRef {
                    owner: &m.owner,
                    msgs: &m.msgs,
                },
            ),
            Message::Undeliverable(m) => append(&mut out, m),
            Message::OwnerCheck(m) => append(&mut out, m),
            Message::Owns(m) => append(&mut out, m),
            Message::Observe(m) => append(&mut out, m),
            Message::Observed(m) => append(&mut out, m),
            Message::PunchRequest(m) => append(&mut out, m),
            Message::PunchOffer(m) => append(&mut out, m),
            Message::PunchAnswer(m) => append(&mut out, m),
            Message::PunchSync(m) => append(&mut out, m),
            Message::RelayReserve(m) => append(&mut out, m),
            Message::RelayReserved(m) => append(&mut out, m),
            Message::RelayTo(m) => {
                let r = append(&mut out, &m.header);
                out.extend_from_slice(&m.payload);
                r
            }
            Message::RelayFrom(m) => {
                let r = append(&mut out, &m.header);
                out.extend_from_slice(&m.payload);
                r
            }
            Message::PunchRelayed(m) => append(&mut out, m),
            Message::Store(m) => append(&mut out, m),
            Message::StoreFragment(m) => append(&mut out, m),
        };
        // Serializing our own in-memory values into a Vec cannot fail: postcard
        // only fails on sequences of unknown length, which we do not have.
        debug_assert!(res.is_ok(), "postcard encoding failed: {res:?}");
        out
    }

    /// Decodes a datagram. Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Message<A>, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        if bytes.len() > MAX_DATAGRAM {
            return Err(DecodeError::TooLong(bytes.len()));
        }
        if bytes[0..2] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let (version, kind, rest) = (bytes[2], bytes[3], &bytes[HEADER_LEN..]);
        if kind == 0 {
            // Version-independent by design.
            return match rest {
                [min, max] => Ok(Message::VersionMismatch(VersionMismatch {
                    min: *min,
                    max: *max,
                })),
                _ => Err(DecodeError::Malformed {
                    kind: "VersionMismatch",
                    reason: "body must be two bytes".into(),
                }),
            };
        }
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let msg =
            match kind {
                1 => Message::Ping(body("Ping", rest)?),
                2 => Message::Pong(body("Pong", rest)?),
                3 => Message::GetNeighbors(body("GetNeighbors", rest)?),
                4 => {
                    let m: Neighbors<A> = body("Neighbors", rest)?;
                    check_list(&m.successors)?;
                    check_list(&m.fingers)?;
                    Message::Neighbors(m)
                }
                5 => Message::FindSuccessor(body("FindSuccessor", rest)?),
                6 => Message::HopAck(body("HopAck", rest)?),
                7 => Message::Found(body("Found", rest)?),
                8 => {
                    let m: Leave<A> = body("Leave", rest)?;
                    check_list(&m.successors)?;
                    Message::Leave(m)
                }
                9 => Message::SuccessorHint(body("SuccessorHint", rest)?),
                10 => {
                    let (header, payload) = postcard::take_from_bytes::<DataHeader<A>>(rest)
                        .map_err(|e| DecodeError::Malformed {
                            kind: "Data",
                            reason: e.to_string(),
                        })?;
                    if header.frags == 0 || header.frag >= header.frags {
                        return Err(DecodeError::OverLimit("fragment index out of range"));
                    }
                    Message::Data(Data {
                        header,
                        payload: Bytes::copy_from_slice(payload),
                    })
                }
                11 => {
                    let m: Delivered<A> = body("Delivered", rest)?;
                    if m.msgs.len() > MAX_LIST_ON_WIRE {
                        return Err(DecodeError::OverLimit(
                            "confirmation list longer than the limit",
                        ));
                    }
                    Message::Delivered(m)
                }
                12 => Message::Undeliverable(body("Undeliverable", rest)?),
                13 => Message::OwnerCheck(body("OwnerCheck", rest)?),
                14 => Message::Owns(body("Owns", rest)?),
                15 => {
                    let m: Observe = body("Observe", rest)?;
                    if m.pad.len() > OBSERVE_PAD {
                        return Err(DecodeError::OverLimit(
                            "observe padding longer than the limit",
                        ));
                    }
                    Message::Observe(m)
                }
                16 => Message::Observed(body("Observed", rest)?),
                24 => Message::PunchRequest(body("PunchRequest", rest)?),
                25 => Message::PunchOffer(body("PunchOffer", rest)?),
                26 => Message::PunchAnswer(body("PunchAnswer", rest)?),
                27 => Message::PunchSync(body("PunchSync", rest)?),
                28 => Message::RelayReserve(body("RelayReserve", rest)?),
                29 => Message::RelayReserved(body("RelayReserved", rest)?),
                RELAY_TO => Message::RelayTo(frame("RelayTo", rest)?),
                RELAY_FROM => Message::RelayFrom(frame("RelayFrom", rest)?),
                32 => Message::PunchRelayed(body("PunchRelayed", rest)?),
                17 => Message::Store(decode_store(rest)?),
                18 => {
                    let m: StoreFragment = body("StoreFragment", rest)?;
                    if m.frags == 0 || m.frag >= m.frags {
                        return Err(DecodeError::OverLimit("fragment index out of range"));
                    }
                    Message::StoreFragment(m)
                }
                other => return Err(DecodeError::UnknownKind(other)),
            };
        Ok(msg)
    }
}

/// A relay frame: its header, then the datagram carried to the end.
fn frame<H: DeserializeOwned>(
    kind: &'static str,
    rest: &[u8],
) -> Result<RelayFrame<H>, DecodeError> {
    let (header, payload) =
        postcard::take_from_bytes::<H>(rest).map_err(|e| DecodeError::Malformed {
            kind,
            reason: e.to_string(),
        })?;
    Ok(RelayFrame {
        header,
        payload: Bytes::copy_from_slice(payload),
    })
}

/// The kind byte of [`Message::RelayTo`].
pub const RELAY_TO: u8 = 30;
/// The kind byte of [`Message::RelayFrom`].
pub const RELAY_FROM: u8 = 31;

/// The kind of a datagram with a valid Cicada header of this version.
pub fn peek_kind(bytes: &[u8]) -> Option<u8> {
    (bytes.len() >= HEADER_LEN && bytes[0..2] == MAGIC && bytes[2] == VERSION).then(|| bytes[3])
}

/// Encodes a relay frame of kind `kind` ([`RELAY_TO`] or [`RELAY_FROM`])
/// with `header` around `payload`, without building a [`Message`].
pub fn encode_relay_frame<H: Serialize>(kind: u8, header: &H, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENCODE_ROOM + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    let r = append(&mut out, header);
    debug_assert!(r.is_ok(), "postcard encoding failed: {r:?}");
    out.extend_from_slice(payload);
    out
}

/// Bytes reserved by `encode` besides a Data payload: more than any
/// message but the lists (`Neighbors`, `Leave`) needs.
const ENCODE_ROOM: usize = 256;

fn append<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), postcard::Error> {
    let buf = std::mem::take(out);
    *out = postcard::to_extend(value, buf)?;
    Ok(())
}

/// Reads the version of a datagram whose header is otherwise valid, for
/// answering an unsupported version with [`VersionMismatch`].
pub fn peek_version(bytes: &[u8]) -> Option<u8> {
    (bytes.len() >= HEADER_LEN && bytes[0..2] == MAGIC).then(|| bytes[2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn node(n: u8, addr: u32) -> NodeRef<u32> {
        NodeRef::new(Hash::from_bytes([n; 32]), addr)
    }

    fn samples() -> Vec<(Message<u32>, &'static str)> {
        vec![
            (
                Message::VersionMismatch(VersionMismatch { min: 1, max: 1 }),
                "c1ca03000101",
            ),
            (Message::Ping(Ping { txn: 300 }), "c1ca0301ac02"),
            (Message::Pong(Ping { txn: 300 }), "c1ca0302ac02"),
            (
                Message::GetNeighbors(GetNeighbors {
                    txn: 1,
                    sender: node(0xaa, 7),
                    notify: true,
                    want_fingers: false,
                }),
                "c1ca030301 20 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa070100",
            ),
            (
                Message::Neighbors(Neighbors {
                    txn: 2,
                    predecessor: Some(node(1, 1)),
                    successors: vec![node(2, 2)],
                    fingers: vec![],
                }),
                "c1ca0304 02 01 20 0101010101010101010101010101010101010101010101010101010101010101 01 \
                 01 20 0202020202020202020202020202020202020202020202020202020202020202 02 00",
            ),
            (
                Message::FindSuccessor(FindSuccessor {
                    txn: 3,
                    lookup: 4,
                    key: Hash::from_bytes([0x10; 32]),
                    origin: node(5, 5),
                    hops: 2,
                    joining: false,
                    via: Some(9),
                }),
                "c1ca0305 03 04 20 1010101010101010101010101010101010101010101010101010101010101010 \
                 20 0505050505050505050505050505050505050505050505050505050505050505 05 02 00 01 09",
            ),
            (Message::HopAck(HopAck { txn: 3 }), "c1ca030603"),
            (
                Message::Found(Found {
                    lookup: 4,
                    key: Hash::from_bytes([0x10; 32]),
                    owner: node(6, 6),
                    hops: 2,
                }),
                "c1ca0307 04 20 1010101010101010101010101010101010101010101010101010101010101010 \
                 20 0606060606060606060606060606060606060606060606060606060606060606 06 02",
            ),
            (
                Message::Leave(Leave {
                    sender: Hash::from_bytes([9; 32]),
                    predecessor: None,
                    successors: vec![],
                }),
                "c1ca0308 20 0909090909090909090909090909090909090909090909090909090909090909 00 00",
            ),
            (
                Message::Data(Data {
                    header: DataHeader {
                        txn: 1,
                        msg: 2,
                        origin: node(3, 3),
                        target: Hash::from_bytes([4; 32]),
                        mode: Mode::Node,
                        limit: Hash::ZERO,
                        hops: 5,
                        last_hop: true,
                        frag: 0,
                        frags: 1,
                    },
                    payload: Bytes::from_static(b"hi"),
                }),
                "c1ca030a 01 02 20 0303030303030303030303030303030303030303030303030303030303030303 03 \
                 20 0404040404040404040404040404040404040404040404040404040404040404 01 \
                 20 0000000000000000000000000000000000000000000000000000000000000000 05 01 00 01 6869",
            ),
            (
                Message::Delivered(Delivered {
                    owner: node(6, 6),
                    msgs: vec![Confirmed { msg: 2, hops: 3 }, Confirmed { msg: 300, hops: 1 }],
                }),
                "c1ca030b 20 0606060606060606060606060606060606060606060606060606060606060606 06 02 02 03 ac02 01",
            ),
            (
                Message::Undeliverable(Undeliverable { msg: 2, reason: Refusal::NoSuchNode }),
                "c1ca030c 02 00",
            ),
            (
                Message::Undeliverable(Undeliverable { msg: 3, reason: Refusal::Busy }),
                "c1ca030c 03 02",
            ),
            (
                Message::Observe(Observe { txn: 5, pad: vec![0; 2] }),
                "c1ca030f 05 02 0000",
            ),
            (
                Message::Observed(Observed { txn: 300, seen: 7 }),
                "c1ca0310 ac02 07",
            ),
            (
                Message::PunchRequest(PunchRequest {
                    txn: 300,
                    origin: node(1, 1),
                    target: node(2, 2),
                }),
                "c1ca0318 ac02 20 0101010101010101010101010101010101010101010101010101010101010101 01 \
                 20 0202020202020202020202020202020202020202020202020202020202020202 02",
            ),
            (
                Message::PunchOffer(PunchOffer { txn: 5, origin: node(1, 1), seen: 300 }),
                "c1ca0319 05 20 0101010101010101010101010101010101010101010101010101010101010101 01 ac02",
            ),
            (
                Message::PunchAnswer(PunchAnswer {
                    txn: 5,
                    target: node(2, 2),
                    seen: 9,
                    punchable: true,
                }),
                "c1ca031a 05 20 0202020202020202020202020202020202020202020202020202020202020202 02 09 01",
            ),
            (Message::PunchSync(PunchSync { txn: 300 }), "c1ca031b ac02"),
            (
                Message::RelayReserve(RelayReserve { txn: 5, peer: 7 }),
                "c1ca031c 05 07",
            ),
            (
                Message::RelayReserved(RelayReserved { txn: 300, ok: true }),
                "c1ca031d ac02 01",
            ),
            (
                Message::RelayTo(RelayFrame {
                    header: RelayToHeader { to: 7, from: Some(300) },
                    payload: Bytes::from_static(&[0xaa, 0xbb]),
                }),
                "c1ca031e 07 01ac02 aabb",
            ),
            (
                Message::RelayFrom(RelayFrame {
                    header: RelayFromHeader { from: 7, relayed: true },
                    payload: Bytes::from_static(&[0xaa]),
                }),
                "c1ca031f 07 01 aa",
            ),
            (
                Message::PunchRelayed(PunchRelayed { txn: 5, target: node(2, 2), relay: 9 }),
                "c1ca0320 05 20 0202020202020202020202020202020202020202020202020202020202020202 02 09",
            ),
            (
                Message::Store(StoreMessage::Get {
                    txn: 5,
                    key: Hash::from_bytes([0x10; 32]),
                    direct: true,
                    listen: false,
                }),
                "c1ca0311 02 05 20 1010101010101010101010101010101010101010101010101010101010101010 01 00",
            ),
            (
                Message::Store(StoreMessage::PutAck { txn: 300, refused: Some(Refused::CasMismatch) }),
                "c1ca0311 01 ac02 01 03",
            ),
            (
                Message::Store(StoreMessage::Replicate {
                    records: vec![Record {
                        key: Hash::from_bytes([1; 32]),
                        kind: crate::store::Kind::Immutable,
                        value: b"hi".to_vec(),
                        ttl_s: 60,
                        writer: Hash::from_bytes([2; 32]),
                    }],
                }),
                "c1ca0311 04 01 20 0101010101010101010101010101010101010101010101010101010101010101 00 02 6869 3c \
                 20 0202020202020202020202020202020202020202020202020202020202020202",
            ),
            (
                Message::StoreFragment(StoreFragment { id: 7, frag: 1, frags: 3, bytes: vec![0xaa] }),
                "c1ca0312 07 01 03 01 aa",
            ),
            (
                Message::SuccessorHint(SuccessorHint { node: node(0x0b, 300) }),
                "c1ca0309 20 0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b ac02",
            ),
        ]
    }

    #[test]
    fn golden_bytes() {
        for (msg, expected) in samples() {
            let expected: String = expected.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = msg.encode();
            assert_eq!(hex(&bytes), expected, "encoding of {msg:?}");
            if let Message::Delivered(d) = &msg {
                assert_eq!(hex(&encode_delivered(&d.owner, &d.msgs)), expected);
            }
            assert_eq!(Message::<u32>::decode(&bytes), Ok(msg));
        }
    }

    /// The borrowed encoding of a confirmation list is the message's,
    /// short (on the stack) and long (past 256 bytes).
    #[test]
    fn delivered_lists_encode_alike_borrowed() {
        for n in [0, 1, 20, 96] {
            let msgs: Vec<Confirmed> = (0..n)
                .map(|i| Confirmed {
                    msg: u64::MAX - i,
                    hops: 7,
                })
                .collect();
            let owner = node(9, u32::MAX);
            let whole = Message::Delivered(Delivered {
                owner: owner.clone(),
                msgs: msgs.clone(),
            })
            .encode();
            assert_eq!(encode_delivered(&owner, &msgs), whole, "{n} confirmations");
            assert_eq!(whole.len() > ENCODE_ROOM, n >= 20, "both paths taken");
        }
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(Message::<u32>::decode(b"C"), Err(DecodeError::TooShort(1)));
        assert_eq!(Message::<u32>::decode(b"GET /"), Err(DecodeError::BadMagic));
        assert_eq!(
            Message::<u32>::decode(&[0xC1, 0xCA, 9, 1, 0]),
            Err(DecodeError::UnsupportedVersion(9))
        );
        assert_eq!(
            Message::<u32>::decode(&[0xC1, 0xCA, VERSION, 200]),
            Err(DecodeError::UnknownKind(200))
        );
        assert!(matches!(
            Message::<u32>::decode(&[0xC1, 0xCA, VERSION, 1]),
            Err(DecodeError::Malformed { kind: "Ping", .. })
        ));
        assert!(matches!(
            Message::<u32>::decode(&[0xC1, 0xCA, VERSION, 6, 1, 2]),
            Err(DecodeError::Malformed { .. })
        ));
        assert_eq!(
            Message::<u32>::decode(&vec![0u8; MAX_DATAGRAM + 1]),
            Err(DecodeError::TooLong(MAX_DATAGRAM + 1))
        );
    }

    #[test]
    fn rejects_overlong_lists() {
        let msg = Message::Neighbors(Neighbors {
            txn: 1,
            predecessor: None,
            successors: (0..MAX_LIST_ON_WIRE as u32 + 1)
                .map(|i| node(1, i))
                .collect(),
            fingers: vec![],
        });
        assert!(matches!(
            Message::<u32>::decode(&msg.encode()),
            Err(DecodeError::OverLimit(_))
        ));
    }

    #[test]
    fn huge_length_prefix_does_not_allocate_wildly() {
        // Neighbors with a successor count of 2^32-1 and no data behind it.
        let bytes = [0xC1, 0xCA, VERSION, 4, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(Message::<u32>::decode(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::<u32>::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_behind_a_valid_header(kind in 0u8..32, body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut bytes = vec![0xC1, 0xCA, VERSION, kind];
            bytes.extend(body);
            let _ = Message::<std::net::SocketAddr>::decode(&bytes);
        }

        #[test]
        fn round_trip(txn in any::<u64>(), lookup in any::<u64>(), key in any::<[u8; 32]>(), hops in 0u8..64, addr in any::<u32>(), n in 0usize..20) {
            let origin = NodeRef::new(Hash::from_bytes(key), addr);
            let list: Vec<_> = (0..n).map(|i| NodeRef::new(Hash::of(i.to_be_bytes()), addr ^ i as u32)).collect();
            let msgs = vec![
                Message::Ping(Ping { txn }),
                Message::Pong(Ping { txn }),
                Message::GetNeighbors(GetNeighbors { txn, sender: origin.clone(), notify: n % 2 == 0, want_fingers: n % 3 == 0 }),
                Message::Neighbors(Neighbors { txn, predecessor: (n % 2 == 0).then(|| origin.clone()), successors: list.clone(), fingers: list.clone() }),
                Message::FindSuccessor(FindSuccessor { txn, lookup, key: Hash::from_bytes(key), origin: origin.clone(), hops, joining: n % 2 == 1, via: (n % 3 == 0).then_some(addr) }),
                Message::HopAck(HopAck { txn }),
                Message::Found(Found { lookup, key: Hash::from_bytes(key), owner: origin.clone(), hops }),
                Message::Leave(Leave { sender: Hash::from_bytes(key), predecessor: Some(origin.clone()), successors: list }),
                Message::SuccessorHint(SuccessorHint { node: origin.clone() }),
                Message::Data(Data { header: DataHeader { txn, msg: lookup, origin: origin.clone(), target: Hash::from_bytes(key), mode: Mode::Broadcast, limit: Hash::from_bytes(key), hops, last_hop: n % 2 == 0, frag: 0, frags: 1 + n as u16 }, payload: vec![7; n * 50].into() }),
                Message::Delivered(Delivered { owner: origin.clone(), msgs: vec![Confirmed { msg: lookup, hops }; n % 4] }),
                Message::Undeliverable(Undeliverable { msg: lookup, reason: Refusal::NoRoute }),
                Message::OwnerCheck(OwnerCheck { txn, key: Hash::from_bytes(key) }),
                Message::Owns(Owns { txn, yes: n % 2 == 0 }),
                Message::Observe(Observe { txn, pad: vec![0; n.min(OBSERVE_PAD)] }),
                Message::Observed(Observed { txn, seen: addr }),
                Message::PunchRequest(PunchRequest { txn, origin: origin.clone(), target: origin.clone() }),
                Message::PunchOffer(PunchOffer { txn, origin: origin.clone(), seen: addr }),
                Message::PunchAnswer(PunchAnswer { txn, target: origin.clone(), seen: addr, punchable: n % 2 == 0 }),
                Message::PunchSync(PunchSync { txn }),
                Message::RelayReserve(RelayReserve { txn, peer: addr }),
                Message::RelayReserved(RelayReserved { txn, ok: n % 2 == 0 }),
                Message::RelayTo(RelayFrame { header: RelayToHeader { to: addr, from: (n % 2 == 0).then_some(addr) }, payload: vec![7; n * 50].into() }),
                Message::RelayFrom(RelayFrame { header: RelayFromHeader { from: addr, relayed: n % 2 == 1 }, payload: vec![7; n * 50].into() }),
                Message::PunchRelayed(PunchRelayed { txn, target: origin.clone(), relay: addr }),
            ];
            for m in msgs {
                prop_assert_eq!(Message::<u32>::decode(&m.encode()), Ok(m));
            }
        }

        /// Every kind, with socket addresses (IPv4 and IPv6) as the UDP
        /// driver uses them, and the version-independent VersionMismatch.
        #[test]
        fn round_trip_every_kind_with_socket_addresses(
            txn in any::<u64>(), key in any::<[u8; 32]>(), v6 in any::<bool>(),
            ip in any::<[u8; 16]>(), port in any::<u16>(), n in 0usize..20,
            min in any::<u8>(), max in any::<u8>(), frags in 1u16..100, payload in proptest::collection::vec(any::<u8>(), 0..1300),
        ) {
            use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
            let ip = if v6 { IpAddr::V6(Ipv6Addr::from(ip)) } else { IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])) };
            let addr = SocketAddr::new(ip, port);
            let me = NodeRef::new(Hash::from_bytes(key), addr);
            let list: Vec<_> = (0..n).map(|i| NodeRef::new(Hash::of(i.to_be_bytes()), SocketAddr::new(ip, port ^ i as u16))).collect();
            let h = Hash::from_bytes(key);
            let msgs: Vec<Message<SocketAddr>> = vec![
                Message::VersionMismatch(VersionMismatch { min, max }),
                Message::Ping(Ping { txn }),
                Message::Pong(Ping { txn }),
                Message::GetNeighbors(GetNeighbors { txn, sender: me.clone(), notify: v6, want_fingers: !v6 }),
                Message::Neighbors(Neighbors { txn, predecessor: Some(me.clone()), successors: list.clone(), fingers: list.clone() }),
                Message::FindSuccessor(FindSuccessor { txn, lookup: !txn, key: h, origin: me.clone(), hops: 63, joining: v6, via: v6.then_some(addr) }),
                Message::HopAck(HopAck { txn }),
                Message::Found(Found { lookup: txn, key: h, owner: me.clone(), hops: 1 }),
                Message::Leave(Leave { sender: h, predecessor: None, successors: list }),
                Message::SuccessorHint(SuccessorHint { node: me.clone() }),
                Message::Data(Data { header: DataHeader { txn, msg: !txn, origin: me.clone(), target: h, mode: Mode::Key, limit: Hash::ZERO, hops: 0, last_hop: v6, frag: frags - 1, frags }, payload: payload.clone().into() }),
                Message::Delivered(Delivered { owner: me.clone(), msgs: vec![Confirmed { msg: txn, hops: 9 }] }),
                Message::Undeliverable(Undeliverable { msg: txn, reason: Refusal::NoSuchNode }),
                Message::OwnerCheck(OwnerCheck { txn, key: h }),
                Message::Owns(Owns { txn, yes: v6 }),
                Message::Observe(Observe { txn, pad: vec![0; OBSERVE_PAD] }),
                Message::Observed(Observed { txn, seen: addr }),
                Message::PunchRequest(PunchRequest { txn, origin: me.clone(), target: me.clone() }),
                Message::PunchOffer(PunchOffer { txn, origin: me.clone(), seen: addr }),
                Message::PunchAnswer(PunchAnswer { txn, target: me.clone(), seen: addr, punchable: v6 }),
                Message::PunchSync(PunchSync { txn }),
                Message::RelayReserve(RelayReserve { txn, peer: addr }),
                Message::RelayReserved(RelayReserved { txn, ok: v6 }),
                Message::RelayTo(RelayFrame { header: RelayToHeader { to: addr, from: v6.then_some(addr) }, payload: payload.clone().into() }),
                Message::RelayFrom(RelayFrame { header: RelayFromHeader { from: addr, relayed: v6 }, payload: payload.clone().into() }),
                Message::PunchRelayed(PunchRelayed { txn, target: me.clone(), relay: addr }),
            ];
            for m in msgs {
                let bytes = m.encode();
                prop_assert!(bytes.len() <= MAX_DATAGRAM);
                prop_assert_eq!(Message::<SocketAddr>::decode(&bytes), Ok(m));
            }
        }
    }
}
