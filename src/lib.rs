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
//! [`chord::LocalNode`] and a [`Link`] carries its datagrams: [`UdpLink`],
//! or [`OuroborosLink`] over Ouroboros flows (peers addressed by name, see
//! [`SwarmPeer::bind_ouroboros`] and [`Transport`]).
#![warn(missing_docs)]

mod addr;
pub mod blocking;
mod config;
mod driver;
mod error;
mod hooks;
mod link;
mod metrics;
mod nat;
mod ouro_link;
mod peer;
mod remote;
mod secure;
mod transport;
mod view;

pub use chord;
/// The Ouroboros binding (loaded at run time; see `docs/ouroboros.md`).
pub use cicada_ouroboros as ouroboros;
pub use traversal;

pub use addr::{InvalidName, PeerAddr, MAX_NAME_LEN};
pub use chord::{Hash, Stats};
pub use config::{
    PeerConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HOOK_QUEUE, DEFAULT_RECV_QUEUE,
    DEFAULT_SEND_QUEUE, RECV_BUFFER,
};
pub use error::{Error, Result};
pub use hooks::{Hooks, HooksDropped};
pub use link::{Arrivals, Gro, Link, LinkSink, UdpLink, SOCKET_BUFFER};
pub use nat::{NatMapping, NatStatus};
pub use ouro_link::{
    flow_qos, FlowStats, OuroborosLink, ALLOC_BACKOFF, ALLOC_TIMEOUT, FLOW_IDLE,
    FLOW_PEER_TIMEOUT_MS, FLOW_QUEUE, HELLO_TIMEOUT, INCOMING_QUEUE, MAX_FLOWS,
};
pub use peer::{PeerStats, Received, SwarmPeer};
pub use remote::{node_id, Delivery, RemoteNode, Route, SendTarget};
pub use secure::{
    KeyError, ReplayWindow, SecureConfig, SecureCore, SecureLink, SecureStats, SecureStatsHandle,
    SendRefused, SwarmKey, DATA_OVERHEAD, DEFAULT_HANDSHAKE_ATTEMPTS, DEFAULT_HANDSHAKE_BURST,
    DEFAULT_HANDSHAKE_RATE, DEFAULT_HANDSHAKE_RETRY, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_PEERS,
    DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_PER_PEER, INIT_LEN, MAX_PLAINTEXT, NOISE_PARAMS,
    REPLAY_WINDOW, RESPONSE_LEN, SWARM_KEY_LEN,
};
pub use transport::Transport;
