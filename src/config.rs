//! API: the peer's tunables and their defaults; values only, no I/O.
//!
//! [`PeerConfig`]: the tunables of a [`crate::SwarmPeer`], and the limits of
//! its queues, each with the reason for its default.

use std::time::Duration;

use crate::secure::{SecureConfig, SwarmKey};

/// Application messages waiting for `recv`: enough to absorb a burst of a
/// swarm-wide broadcast storm; past it messages are dropped and counted.
pub const DEFAULT_RECV_QUEUE: usize = 1024;
/// Calls waiting for the peer's background task under load, and datagrams
/// the core may hold waiting for the link, before callers wait
/// (back-pressure): a burst of 256 sends in flight.
pub const DEFAULT_SEND_QUEUE: usize = 256;
/// Hook calls waiting for the hook thread; a hook slower than the traffic
/// loses calls (counted) instead of growing memory.
pub const DEFAULT_HOOK_QUEUE: usize = 4096;
/// Default wait of `connect` for the join to complete.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Receive buffer of a peer: 64 KiB, room for the largest datagram the
/// core accepts ([`chord::MAX_DATAGRAM`]) and for a coalesced receive of a
/// run of datagrams (UDP GRO).
pub const RECV_BUFFER: usize = 65_536;

/// Everything a [`crate::SwarmPeer`] can be tuned with: the Chord core's
/// [`chord::Config`] and the peer's own queues.
///
/// ```
/// use std::time::Duration;
/// let cfg = cicada::PeerConfig::default()
///     .stabilize_interval(Duration::from_millis(200))
///     .request_timeout(Duration::from_millis(100))
///     .recv_queue(64);
/// assert!(cfg.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PeerConfig {
    /// The core's tunables: intervals, timeouts, successor list length, payload limits.
    pub chord: chord::Config,
    /// Capacity of the receive queue ([`DEFAULT_RECV_QUEUE`]).
    pub recv_queue: usize,
    /// Calls waiting for the background task, and datagrams waiting for
    /// the link, past which callers wait ([`DEFAULT_SEND_QUEUE`]).
    pub send_queue: usize,
    /// Capacity of the hook queue ([`DEFAULT_HOOK_QUEUE`]).
    pub hook_queue: usize,
    /// Seed of the core's randomness; `None` draws one from the clock and the id.
    pub seed: Option<u64>,
    /// The key of a private swarm: with it every link is authenticated and
    /// encrypted (the seal of [`crate::stack::Stack`]) and peers without it cannot join.
    pub swarm_key: Option<SwarmKey>,
    /// The bounds of the keyed link (used with `swarm_key`).
    pub secure: SecureConfig,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            chord: chord::Config::default(),
            recv_queue: DEFAULT_RECV_QUEUE,
            send_queue: DEFAULT_SEND_QUEUE,
            hook_queue: DEFAULT_HOOK_QUEUE,
            seed: None,
            swarm_key: None,
            secure: SecureConfig::default(),
        }
    }
}

impl PeerConfig {
    /// Sets the period of stabilize, predecessor check and finger repair.
    pub fn stabilize_interval(mut self, d: Duration) -> Self {
        self.chord.stabilize_interval = d;
        self
    }

    /// Sets how long a punched path (see `docs/nat.md`) may stay quiet
    /// before a keepalive holds the NATs' bindings open (25 s by default:
    /// below the 30 s after which many NATs forget an idle UDP mapping).
    pub fn keepalive_interval(mut self, d: Duration) -> Self {
        self.chord.keepalive_interval = d;
        self
    }

    /// Sets what this peer offers as a relay when it is reachable first
    /// (public or mapped; see `docs/nat.md`, "Relays"): at most `peers`
    /// relayed peers at once (32 by default) and `bytes_per_s` forwarded
    /// in all (1 MiB/s by default). Beyond either it refuses and counts.
    /// `peers` 0 turns relaying off.
    pub fn relay_limits(mut self, peers: usize, bytes_per_s: u64) -> Self {
        self.chord.relay_peers = peers;
        self.chord.relay_rate = bytes_per_s;
        self
    }

    /// Sets how many nodes hold each value of the DHT store: the key's
    /// owner and the next `n - 1` on its successor list (3 by default; at
    /// least 1, at most the successor list's length plus one). A value
    /// survives fewer than `n` of its holders failing within one repair
    /// interval (see `docs/storage.md`).
    pub fn replicas(mut self, n: usize) -> Self {
        let most = self.chord.successor_list_len + 1;
        self.chord.store.replicas = n.clamp(1, most);
        self
    }

    /// Sets how long a request waits for its reply before it is sent again.
    /// The lookup deadline is kept at least this long.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.chord.request_timeout = d;
        self.chord.lookup_timeout = self.chord.lookup_timeout.max(d);
        self
    }

    /// Sets how long a lookup (and a join) may take end to end.
    pub fn lookup_timeout(mut self, d: Duration) -> Self {
        self.chord.lookup_timeout = d;
        self
    }

    /// Sets how long a confirmed `send` may take end to end (its retries
    /// included) before it fails; 10 s by default. A send's first attempt
    /// waits at most this long for its confirmation too.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cfg = cicada::PeerConfig::default().send_timeout(Duration::from_secs(3));
    /// assert!(cfg.validate().is_ok());
    /// ```
    pub fn send_timeout(mut self, d: Duration) -> Self {
        self.chord.send_timeout = d;
        self.chord.send_attempt_timeout = self.chord.send_attempt_timeout.min(d);
        self
    }

    /// Sets the length of the successor list.
    pub fn successor_list_len(mut self, n: usize) -> Self {
        self.chord.successor_list_len = n;
        self
    }

    /// Sets the largest application message `send` and `broadcast` accept
    /// (the core splits it into fragments on the wire).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.chord.max_payload = bytes;
        self
    }

    /// Sets the capacity of the receive queue.
    pub fn recv_queue(mut self, n: usize) -> Self {
        self.recv_queue = n;
        self
    }

    /// Sets the capacity of the hook queue.
    pub fn hook_queue(mut self, n: usize) -> Self {
        self.hook_queue = n;
        self
    }

    /// Fixes the seed of the core's randomness (for reproducible tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Makes the peer a member of the private swarm of `key`: every link is
    /// authenticated and encrypted, and peers without the key can neither
    /// join, read nor inject (see `docs/security.md`).
    ///
    /// ```
    /// let key = cicada::SwarmKey::generate().unwrap();
    /// let cfg = cicada::PeerConfig::default().swarm_key(key);
    /// assert!(cfg.swarm_key.is_some());
    /// ```
    pub fn swarm_key(mut self, key: SwarmKey) -> Self {
        self.swarm_key = Some(key);
        self
    }

    /// Sets the bounds of the keyed link (handshake retries, table and
    /// queue sizes, handshake budget).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cicada::{secure::SecureConfig, PeerConfig};
    /// let ok = SecureConfig { handshake_retry: Duration::from_millis(100), ..Default::default() };
    /// assert!(PeerConfig::default().secure_config(ok).validate().is_ok());
    /// let none = SecureConfig { handshake_attempts: 0, ..Default::default() };
    /// assert!(PeerConfig::default().secure_config(none).validate().is_err());
    /// let zero = SecureConfig { handshake_retry: Duration::ZERO, ..Default::default() };
    /// assert!(PeerConfig::default().secure_config(zero).validate().is_err());
    /// ```
    pub fn secure_config(mut self, cfg: SecureConfig) -> Self {
        self.secure = cfg;
        self
    }

    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<(), chord::ConfigError> {
        self.chord.validate()?;
        if self.recv_queue == 0 || self.send_queue == 0 || self.hook_queue == 0 {
            return Err(chord::ConfigError("queue capacities must be positive"));
        }
        let s = &self.secure;
        if s.handshake_attempts == 0 || s.max_peers == 0 || s.queue_per_peer == 0 {
            return Err(chord::ConfigError(
                "handshake attempts, peers and queue of the keyed link must be positive",
            ));
        }
        if s.handshake_rate == 0 || s.handshake_burst == 0 {
            return Err(chord::ConfigError("the handshake budget must be positive"));
        }
        if s.handshake_retry.is_zero() || s.idle_timeout < std::time::Duration::from_secs(1) {
            return Err(chord::ConfigError(
                "the handshake retry must be positive and the idle timeout at least 1 s",
            ));
        }
        Ok(())
    }
}
