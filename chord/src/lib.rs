//! The sans-I/O Chord core of Cicada.
//!
//! Everything here is a pure state machine: no sockets, threads, clocks or
//! randomness it was not handed. A driver feeds a [`LocalNode`] the datagrams
//! that arrive and the passing of time, and carries out what it asks for:
//!
//! ```text
//! node.handle_datagram(now, from, &bytes);   // every datagram that arrives
//! node.handle_timeout(now);                  // when poll_timeout() has passed
//! while let Some(t) = node.poll_transmit() { /* send t.bytes to t.to */ }
//! while let Some(e) = node.poll_event()    { /* Joined, LookupDone, PeerAdded … */ }
//! ```
//!
//! The same code runs under tokio, in a blocking loop over `std::net`, and in
//! the deterministic simulator of [`sim`].

#![warn(missing_docs)]

mod config;
pub mod delivery;
mod event;
mod hash;
mod memory;
mod node;
pub mod routing;
pub mod sim;
mod sources;
pub mod store;
mod vecmap;
pub mod wire;

pub use config::{
    Config, ConfigError, MAGIC, MAX_DATAGRAM, MAX_FINGERS_SENT, MAX_HOPS, MAX_LIST_ON_WIRE,
    MAX_PAYLOAD_LIMIT, MAX_SUCCESSOR_LIST, VERSION,
};
pub use event::{
    Event, JoinError, LookupId, MessageId, SendError, Stats, StoreEvent, StoreOp, Target, Transmit,
};
pub use hash::{Hash, Interval, ParseHashError};
pub use node::{Address, LocalNode, Path, Reach};
pub use wire::{DecodeError, NodeRef};
