//! Cicada: a peer-to-peer overlay with a socket-like API.
pub use chord;
pub use traversal;
