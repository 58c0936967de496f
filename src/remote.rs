//! API: the targets, options and results of calls; values only, no I/O.
//!
//! Who a message is for and who it came from: [`RemoteNode`], [`SendTarget`],
//! [`SendOptions`], and what a send, a receive or a lookup resolves to
//! ([`Delivery`], [`Received`], [`Route`]). API: plain values, no I/O.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use chord::{Hash, NodeRef};

use crate::addr::PeerAddr;

/// Another peer of the swarm as this one knows it: its id and its address
/// (a UDP socket address or an Ouroboros name).
///
/// ```
/// let addr: cicada::PeerAddr = "127.0.0.1:5000".parse().unwrap();
/// let n = cicada::RemoteNode::new(cicada::node_id(&addr), addr);
/// assert_eq!(n.addr.udp().unwrap().port(), 5000);
/// ```
pub type RemoteNode = NodeRef<PeerAddr>;

/// The id of the peer whose external address is `addr`: SHA-256 of the
/// address as text, `ip:port` (`[ip6]:port` for IPv6) for UDP and the
/// bare name for Ouroboros.
///
/// ```
/// let addr = "127.0.0.1:5000".parse().unwrap();
/// assert_eq!(cicada::node_id(&addr), cicada::Hash::of("127.0.0.1:5000"));
/// let name = cicada::PeerAddr::ouroboros("alice").unwrap();
/// assert_eq!(cicada::node_id(&name), cicada::Hash::of("alice"));
/// ```
pub fn node_id(addr: &PeerAddr) -> Hash {
    Hash::of(addr.to_string())
}

/// Where [`crate::SwarmPeer::send`] sends. Usually built with `.into()` from
/// a `SocketAddr`, a [`PeerAddr`], a `(host, port)` pair, a [`Hash`](struct@Hash), a [`RemoteNode`] or a
/// `&SwarmPeer`.
///
/// A target that names a peer (address, host, node, peer) reaches exactly that
/// peer or fails when it is gone; a [`Hash`](struct@Hash) reaches whichever live peer owns
/// the key.
///
/// ```
/// use cicada::{Hash, SendTarget};
/// let by_addr: SendTarget = "127.0.0.1:5000".parse::<std::net::SocketAddr>().unwrap().into();
/// let by_host: SendTarget = ("localhost", 5000).into();
/// let by_key: SendTarget = Hash::of("some key").into();
/// assert!(matches!(by_key, SendTarget::Key(_)));
/// # let _ = (by_addr, by_host);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendTarget {
    /// The peer at this address (UDP socket address or Ouroboros name).
    Addr(PeerAddr),
    /// The peer at this host name and port (resolved when sending).
    Host(String, u16),
    /// The peer with exactly this id.
    Node(Hash),
    /// Whichever live peer owns this key.
    Key(Hash),
    /// A [`crate::SwarmPeer`] that is not bound yet; sending to it fails with
    /// [`crate::Error::NotBound`].
    Unbound,
}

impl From<SocketAddr> for SendTarget {
    fn from(a: SocketAddr) -> Self {
        SendTarget::Addr(a.into())
    }
}

impl From<PeerAddr> for SendTarget {
    fn from(a: PeerAddr) -> Self {
        SendTarget::Addr(a)
    }
}

impl From<&PeerAddr> for SendTarget {
    fn from(a: &PeerAddr) -> Self {
        SendTarget::Addr(a.clone())
    }
}

impl From<(IpAddr, u16)> for SendTarget {
    fn from((ip, port): (IpAddr, u16)) -> Self {
        SendTarget::Addr(SocketAddr::new(ip, port).into())
    }
}

impl From<(&str, u16)> for SendTarget {
    fn from((host, port): (&str, u16)) -> Self {
        SendTarget::Host(host.to_string(), port)
    }
}

impl From<(String, u16)> for SendTarget {
    fn from((host, port): (String, u16)) -> Self {
        SendTarget::Host(host, port)
    }
}

impl From<Hash> for SendTarget {
    fn from(key: Hash) -> Self {
        SendTarget::Key(key)
    }
}

impl From<&RemoteNode> for SendTarget {
    fn from(n: &RemoteNode) -> Self {
        SendTarget::Node(n.id)
    }
}

impl From<RemoteNode> for SendTarget {
    fn from(n: RemoteNode) -> Self {
        SendTarget::Node(n.id)
    }
}

/// How [`crate::SwarmPeer::send_with`] sends: built from the default
/// (what [`crate::SwarmPeer::send`] uses) with the setters below.
///
/// ```
/// use std::time::Duration;
/// let options = cicada::SendOptions::new().duplicates(2).timeout(Duration::from_secs(3));
/// assert_eq!((options.duplicates, options.timeout), (2, Some(Duration::from_secs(3))));
/// assert_eq!(cicada::SendOptions::default().timeout, None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendOptions {
    /// Extra copies routed through other peers (distinct first hops), for
    /// resilience against peers that drop messages; the destination hands
    /// the message to its application once however many arrive. Default 0.
    pub duplicates: u8,
    /// The longest the call waits for the destination's confirmation
    /// before it fails with [`crate::Error::Timeout`]; `None` (the
    /// default) waits until the peer's own
    /// [`send_timeout`](crate::PeerConfig::send_timeout).
    pub timeout: Option<Duration>,
}

impl SendOptions {
    /// The default: no extra copies, no time limit of the call's own.
    pub fn new() -> SendOptions {
        SendOptions::default()
    }

    /// Routes `n` extra copies through other peers.
    pub fn duplicates(mut self, n: u8) -> SendOptions {
        self.duplicates = n;
        self
    }

    /// Waits at most `timeout` for the confirmation.
    pub fn timeout(mut self, timeout: Duration) -> SendOptions {
        self.timeout = Some(timeout);
        self
    }
}

/// A message [`crate::SwarmPeer::recv`] returns.
///
/// ```
/// # fn show(m: cicada::Received) {
/// let cicada::Received { from, data, more, .. } = m;
/// println!("{} bytes from {}{}", data.len(), from.addr, if more { ", more queued" } else { "" });
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Received {
    /// The peer that sent it (a target for the answer).
    pub from: RemoteNode,
    /// The message.
    pub data: Bytes,
    /// Whether more messages were queued already when this one was taken:
    /// a receiver can take them without waiting ([`try_recv`]).
    ///
    /// [`try_recv`]: crate::SwarmPeer::try_recv
    pub more: bool,
}

/// A send that the destination confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The peer that received the message.
    pub to: RemoteNode,
    /// Overlay hops it took.
    pub hops: u32,
}

/// The answer of [`crate::SwarmPeer::get_route`]: the live owner of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The peer responsible for the key.
    pub owner: RemoteNode,
    /// Overlay hops the lookup took (0: this peer knew).
    pub hops: u32,
}
