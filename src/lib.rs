//! Cicada: a peer-to-peer overlay with a socket-like API.
//!
//! Peers form a Chord ring; an application uses one object, [`SwarmPeer`],
//! as it would a socket: [`bind`](SwarmPeer::bind), optionally
//! [`connect`](SwarmPeer::connect) to a member of an existing swarm, then
//! [`send`](SwarmPeer::send) to a peer or a key, [`recv`](SwarmPeer::recv)
//! and [`broadcast`](SwarmPeer::broadcast).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), cicada::Error> {
//! let mut peer = cicada::SwarmPeer::new(cicada::Hooks::new());
//! peer.bind("127.0.0.1:0".parse().unwrap()).await?;
//! println!("peer {} listening on {}", peer.hash()?, peer.listener()?);
//! peer.close().await;
//! # Ok(()) }
//! ```
//!
//! The async API runs on tokio; [`blocking::SwarmPeer`] wraps it for code
//! without a runtime. Underneath, one driver task owns the sans-I/O
//! [`chord::LocalNode`] and a [`Link`] ([`UdpLink`] here) carries its datagrams.
#![warn(missing_docs)]

pub mod blocking;
pub mod cli;
mod config;
mod driver;
mod error;
mod hooks;
mod link;
mod peer;
mod remote;

pub use chord;
/// The Ouroboros binding (loaded at run time; see `docs/ouroboros.md`).
pub use cicada_ouroboros as ouroboros;
pub use traversal;

pub use chord::{Hash, Stats};
pub use config::{
    PeerConfig, DEFAULT_COMMAND_QUEUE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HOOK_QUEUE,
    DEFAULT_RECV_QUEUE, RECV_BUFFER,
};
pub use error::{Error, Result};
pub use hooks::Hooks;
pub use link::{Link, UdpLink, SOCKET_BUFFER};
pub use peer::{PeerStats, Received, SwarmPeer};
pub use remote::{node_id, Delivery, RemoteNode, Route, SendTarget};
