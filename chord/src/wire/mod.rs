//! The wire format: a 4-byte header, then a postcard-encoded body.
//!
//! ```text
//! +------+------+---------+------+----------------------+
//! | 0xC1 | 0xCA | version | kind | body (postcard)      |
//! +------+------+---------+------+----------------------+
//! ```
//!
//! Every message is described in `docs/protocol.md`; golden-byte tests (`tests.rs`)
//! pin the encoding so that a change to it cannot go unnoticed.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{MAGIC, MAX_DATAGRAM, MAX_LIST_ON_WIRE, VERSION};
use crate::hash::Hash;
mod nat;
mod store;

pub use nat::*;
pub use store::*;

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
mod tests;
