//! API: the choice of link; a value, no I/O.
//!
//! [`Transport`]: which link a [`crate::SwarmPeer`] binds, with the fallback
//! from Ouroboros to UDP.

use std::net::SocketAddr;

/// Which link [`crate::SwarmPeer::bind_transport`] binds.
///
/// ```
/// use cicada::Transport;
/// let t = Transport::Auto {
///     name: "alice".into(),
///     layer: "local_layer".into(),
///     udp: "127.0.0.1:0".parse().unwrap(),
/// };
/// assert!(matches!(t, Transport::Auto { .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP, bound to this address.
    Udp(SocketAddr),
    /// Ouroboros: this name, registered in this layer.
    Ouroboros {
        /// The peer's name (its id is SHA-256 of it).
        name: String,
        /// The layer to register the name in.
        layer: String,
    },
    /// Ouroboros when the library loads and an IRMd answers, UDP on `udp`
    /// otherwise; the choice and its reason are logged.
    Auto {
        /// The name to bind over Ouroboros.
        name: String,
        /// The layer to register the name in.
        layer: String,
        /// The UDP address to bind when Ouroboros is unavailable.
        udp: SocketAddr,
    },
}
