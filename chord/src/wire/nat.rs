//! Pure: the messages of hole punching and relaying (kinds 24-32).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::NodeRef;

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
