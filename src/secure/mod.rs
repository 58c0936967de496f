//! Pure protocol, no I/O: the seal of a private swarm. Every datagram
//! between two peers holding the same [`SwarmKey`] is authenticated and
//! encrypted, and everything else is dropped and counted.
//!
//! Each pair of peers runs a Noise `NNpsk0` handshake (one round trip, the
//! swarm key as pre-shared key, fresh X25519 ephemeral keys for forward
//! secrecy), then seals each datagram with ChaCha20-Poly1305 under an
//! explicit 64-bit nonce, so that loss and reordering cost nothing and a
//! sliding window refuses replays. `docs/security.md` has the threat model
//! and the reasons. The state machine is [`SecureCore`]; a peer's
//! [`Stack`](crate::stack::Stack) runs it between the Chord node and the
//! link, on the stack's one clock, over any link.

mod cipher;
mod core;
mod handshake;
mod key;
mod replay;
#[cfg(test)]
mod tests;

use std::time::Duration;

use snow::resolvers::CryptoResolver;

pub use self::core::{
    SecureCore, SendRefused, DATA_OVERHEAD, INIT_LEN, MAX_PLAINTEXT, NOISE_PARAMS, RESPONSE_LEN,
};
pub use key::{KeyError, SwarmKey, SWARM_KEY_LEN};
pub use replay::{ReplayWindow, REPLAY_WINDOW};

/// Fills `b` from the operating system's generator (through Noise's resolver).
pub(crate) fn random_bytes(b: &mut [u8]) -> Result<(), snow::Error> {
    let mut rng = snow::resolvers::DefaultResolver
        .resolve_rng()
        .ok_or(snow::Error::Rng)?;
    rng.try_fill_bytes(b)
}

/// Default wait for a handshake Response before the Init is sent again.
pub const DEFAULT_HANDSHAKE_RETRY: Duration = Duration::from_millis(500);
/// Default Inits sent before a handshake is given up (about 3 s with the
/// default retry, within the core's default lookup and join deadline).
pub const DEFAULT_HANDSHAKE_ATTEMPTS: u32 = 6;
/// Default most peers with sessions (or handshakes): as many as the core's
/// source table, so a swarm the core can serve fits.
pub const DEFAULT_MAX_PEERS: usize = 4096;
/// Default idle time after which a peer's sessions are forgotten: several
/// stabilize periods, so live neighbours never expire; a later datagram
/// just runs a new handshake.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// Default datagrams queued for one peer while its handshake runs: a
/// stabilize round and a few sends.
pub const DEFAULT_QUEUE_PER_PEER: usize = 32;
/// Default bytes queued for all peers while handshakes run.
pub const DEFAULT_QUEUE_BYTES: usize = 1 << 20;
/// Default handshake steps that cost a DH processed per second. A whole
/// handshake, both sides, measured 0.6-1.0 ms on a loaded 2-core machine
/// (`examples/secure_cost.rs`); a responder's share is about half, so a
/// flood of valid Inits costs at most about a tenth of a core, and a swarm
/// of thousands still handshakes within seconds.
pub const DEFAULT_HANDSHAKE_RATE: u32 = 200;
/// Default burst of handshakes above the rate.
pub const DEFAULT_HANDSHAKE_BURST: u32 = 100;

/// The tunables of a keyed link, each a bound on what peers (or strangers)
/// can cost it.
///
/// ```
/// let cfg = cicada::secure::SecureConfig::default();
/// assert_eq!(cfg.handshake_attempts, cicada::secure::DEFAULT_HANDSHAKE_ATTEMPTS);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecureConfig {
    /// Wait for a Response before sending a new Init.
    pub handshake_retry: Duration,
    /// Inits sent before giving up (and dropping what was queued).
    pub handshake_attempts: u32,
    /// Most peers tracked; past it one without a session, else the one
    /// idle longest, is evicted.
    pub max_peers: usize,
    /// Idle time after which a peer's sessions are forgotten.
    pub idle_timeout: Duration,
    /// Datagrams queued for one peer while its handshake runs.
    pub queue_per_peer: usize,
    /// Bytes queued for all peers while handshakes run.
    pub queue_bytes: usize,
    /// Handshake messages that cost a DH processed per second.
    pub handshake_rate: u32,
    /// Burst allowed above `handshake_rate`.
    pub handshake_burst: u32,
}

impl Default for SecureConfig {
    fn default() -> Self {
        SecureConfig {
            handshake_retry: DEFAULT_HANDSHAKE_RETRY,
            handshake_attempts: DEFAULT_HANDSHAKE_ATTEMPTS,
            max_peers: DEFAULT_MAX_PEERS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            queue_per_peer: DEFAULT_QUEUE_PER_PEER,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            handshake_rate: DEFAULT_HANDSHAKE_RATE,
            handshake_burst: DEFAULT_HANDSHAKE_BURST,
        }
    }
}

/// Counters of a keyed link. Every datagram that is not delivered is
/// counted in exactly one `dropped_*` field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecureStats {
    /// Peers tracked now (with a session, a handshake, or queued datagrams).
    pub peers: u64,
    /// Peers with a session to send with now.
    pub sessions: u64,
    /// Handshakes this side started.
    pub handshakes_initiated: u64,
    /// Handshakes this side started that completed.
    pub handshakes_completed: u64,
    /// Inits of other peers answered.
    pub handshakes_answered: u64,
    /// Inits sent again after no Response came.
    pub handshake_retries: u64,
    /// Handshakes given up after every attempt.
    pub handshakes_failed: u64,
    /// Datagrams authenticated and delivered.
    pub datagrams_opened: u64,
    /// Dropped: too short, unknown type, wrong length.
    pub dropped_malformed: u64,
    /// Dropped: a plain Cicada datagram (a peer without a swarm key).
    pub dropped_unkeyed: u64,
    /// Dropped: authentication failed (another key, or tampered with).
    pub dropped_bad_mac: u64,
    /// Dropped: a nonce seen before or too old, or an Init replayed.
    pub dropped_replay: u64,
    /// Dropped: a datagram under an index with no session here.
    pub dropped_unknown_session: u64,
    /// Dropped: a handshake message over the handshake budget.
    pub dropped_rate_limited: u64,
    /// Refused: no room to queue a datagram while its handshake runs.
    pub dropped_queue_full: u64,
    /// Dropped: queued datagrams of a handshake given up, or of a peer evicted.
    pub dropped_handshake_failed: u64,
    /// Refused: a datagram larger than [`MAX_PLAINTEXT`].
    pub dropped_too_large: u64,
    /// Peers evicted to make room (table full).
    pub peers_evicted: u64,
    /// Peers forgotten after `idle_timeout`.
    pub peers_expired: u64,
}
