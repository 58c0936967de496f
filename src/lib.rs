//! Cicada: a peer-to-peer overlay with a socket-like API.
//!
//! Peers form a Chord ring; an application uses one object, [`SwarmPeer`],
//! as it would a socket: [`bind`](SwarmPeer::bind), optionally
//! [`connect`](SwarmPeer::connect) to a member of an existing swarm, then
//! [`send`](SwarmPeer::send) to a peer or a key (or
//! [`send_with`](SwarmPeer::send_with) and [`SendOptions`]: duplicates, a
//! time limit), [`recv`](SwarmPeer::recv) (a [`Received`]: `from`, `data`,
//! `more`) and [`broadcast`](SwarmPeer::broadcast).
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
//! [`chord::LocalNode`] and a link carries its datagrams: a UDP socket, or
//! Ouroboros flows (peers addressed by name, see
//! [`SwarmPeer::bind_ouroboros`] and [`Transport`]).
//!
//! The crate root holds what an application uses; the rest is in modules:
//! [`addr`] (names and their limits), [`config`] (the defaults behind
//! [`PeerConfig`]), [`hooks`], [`link`] (the links' [`link::FlowStats`]; the
//! links themselves are internal), [`nat`], [`secure`] (the seal of a keyed swarm and its tunables), [`stack`] (the sans-I/O state machine of a peer).
#![warn(missing_docs)]

pub mod addr;
pub mod blocking;
pub mod config;
mod driver;
mod error;
pub mod hooks;
pub mod link;
mod metrics;
pub mod nat;
mod peer;
mod remote;
pub mod secure;
pub mod stack;
mod transport;
mod view;

pub use chord;
/// The Ouroboros binding (loaded at run time; see `docs/ouroboros.md`).
pub use cicada_ouroboros as ouroboros;
pub use traversal;

pub use addr::PeerAddr;
pub use chord::{Hash, Path};
pub use config::PeerConfig;
pub use error::{Error, Operation, Result};
pub use hooks::Hooks;
pub use nat::NatStatus;
pub use peer::{PeerStats, SwarmPeer};
pub use remote::{node_id, Delivery, Received, RemoteNode, Route, SendOptions, SendTarget};
pub use secure::SwarmKey;
pub use transport::Transport;
