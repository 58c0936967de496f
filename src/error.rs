//! API: the errors calls fail with; values only, no I/O.
//!
//! [`Error`]: everything a [`crate::SwarmPeer`] call can fail with.

use chord::Hash;

/// Why a [`crate::SwarmPeer`] call failed.
///
/// ```
/// let e = cicada::Error::NotBound;
/// assert_eq!(e.to_string(), "the peer is not bound: call bind first");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A call other than `bind` came before `bind`.
    #[error("the peer is not bound: call bind first")]
    NotBound,
    /// `bind` was called outside a tokio runtime (use
    /// [`crate::blocking::SwarmPeer`] from code without one).
    #[error("bind needs a tokio runtime; use cicada::blocking::SwarmPeer without one")]
    NoRuntime,
    /// `bind` was called twice.
    #[error("the peer is already bound")]
    AlreadyBound,
    /// `connect` on a peer that already has peers in its routing state.
    #[error("the peer is already part of a swarm")]
    AlreadyConnected,
    /// The peer is not part of a swarm: it left (`disconnect`), or a join is
    /// still under way.
    #[error("the peer is not part of a swarm")]
    NotJoined,
    /// The peer was closed (or its driver stopped).
    #[error("the peer is closed")]
    Closed,
    /// A socket operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A host name did not resolve to an address.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] chord::ConfigError),
    /// Joining the swarm failed: unreachable bootstrap, version mismatch, id in use.
    #[error("joining failed: {0}")]
    Join(#[from] chord::JoinError),
    /// With a swarm key, `connect` found no authenticated link to the
    /// bootstrap: it holds another key or none, or it is unreachable.
    #[error("no authenticated link to {0}: it does not hold this swarm key (another key, or none), or it is unreachable")]
    NoHandshake(crate::addr::PeerAddr),
    /// The operation `op` did not complete within `after`, the time its
    /// caller allowed (`connect`'s timeout, [`crate::SendOptions::timeout`],
    /// …). A send whose destination did not confirm before the peer's own
    /// `send_timeout` fails with [`Error::Send`] and
    /// [`chord::SendError::Timeout`] instead; [`Error::is_timeout`] is true
    /// for both.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// The operation that timed out.
        op: Operation,
        /// How long it was allowed.
        after: std::time::Duration,
    },
    /// The owner of a key refused a store operation: over a quota, a bad
    /// signature, an older sequence number, a failed compare-and-swap, a
    /// value over 64 KiB (see `docs/storage.md`).
    #[error("the key's owner refused the operation: {0:?}")]
    StoreRefused(chord::store::Refused),
    /// A lookup (`get_route`) did not find the key's owner before its deadline.
    #[error("lookup of {0} failed")]
    LookupFailed(Hash),
    /// A send or broadcast was refused or did not reach its destination.
    #[error("send failed: {0}")]
    Send(#[from] chord::SendError),
    /// The port could not be mapped on the NAT gateway.
    #[error("port mapping failed: {0}")]
    PortMapping(#[from] traversal::Error),
    /// Ouroboros is missing (library, IRMd) or refused a call (binding the
    /// name, …).
    #[error("Ouroboros: {0}")]
    Ouroboros(#[from] cicada_ouroboros::Error),
    /// This process has an Ouroboros link already (one per process: it
    /// cannot allocate flows to its own names, and accepting cannot tell
    /// its names apart).
    #[error("this process has a peer on Ouroboros already (one per process)")]
    OuroborosInUse,
    /// `connect` to an address this peer's UDP socket cannot send to: an
    /// IPv6 address from a socket bound to an IPv4 one (`0.0.0.0:P`
    /// included), or an IPv4 address from one bound to a specific IPv6
    /// address. A socket bound to `[::]:P` is dual-stack and reaches both.
    #[error(
        "this peer's socket {local} cannot reach {remote}: IPv4 and IPv6 do not mix \
         (bind [::]:PORT, dual-stack, to reach both)"
    )]
    AddressFamily {
        /// The address the peer's socket is bound to.
        local: std::net::SocketAddr,
        /// The address it cannot reach.
        remote: std::net::SocketAddr,
    },
}

impl Error {
    /// Whether this is a timeout of any kind: a call that did not complete
    /// in the time its caller allowed ([`Error::Timeout`]), a send that its
    /// destination did not confirm in time, or a join that timed out.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cicada::{Error, Operation};
    /// let e = Error::Timeout { op: Operation::Send, after: Duration::from_secs(5) };
    /// assert!(e.is_timeout());
    /// assert_eq!(e.to_string(), "send timed out after 5s");
    /// assert!(Error::Send(cicada::chord::SendError::Timeout).is_timeout());
    /// assert!(!Error::Closed.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::Send(chord::SendError::Timeout)
                | Error::Join(chord::JoinError::Timeout)
        )
    }
}

/// The [`crate::SwarmPeer`] operation an [`Error::Timeout`] is about; its
/// text is the method's name.
///
/// ```
/// assert_eq!(cicada::Operation::Connect.to_string(), "connect");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Joining a swarm ([`crate::SwarmPeer::connect`]).
    Connect,
    /// A confirmed send ([`crate::SwarmPeer::send_with`]).
    Send,
    /// Waiting for a message ([`crate::SwarmPeer::recv`] with a time limit).
    Recv,
    /// Asking a peer where it sees this one ([`crate::SwarmPeer::observe`]).
    Observe,
    /// Storing a value ([`crate::SwarmPeer::put`], [`crate::SwarmPeer::put_signed`]).
    Put,
    /// Reading a key's values ([`crate::SwarmPeer::get`]).
    Get,
    /// Naming this peer under a topic ([`crate::SwarmPeer::announce`]).
    Announce,
    /// Finding the peers of a topic ([`crate::SwarmPeer::find`]).
    Find,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Connect => "connect",
            Operation::Send => "send",
            Operation::Recv => "recv",
            Operation::Observe => "observe",
            Operation::Put => "put",
            Operation::Get => "get",
            Operation::Announce => "announce",
            Operation::Find => "find",
        })
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
