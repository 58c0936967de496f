//! Tunables of a node, and the hard limits that protect it from its input.
//!
//! Every number here is either a [`Config`] field (the driver may change it)
//! or a named constant (a protocol limit), each with the reason it has the
//! value it has.

use std::time::Duration;

/// The first two bytes of every Cicada datagram; anything else is not ours.
pub const MAGIC: [u8; 2] = [0xC1, 0xCA];
/// The wire-format version this core speaks.
pub const VERSION: u8 = 3;
/// Largest datagram accepted or produced: the largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// Largest node list accepted in one message: a successor list of the
/// largest allowed length plus a finger table fits, anything longer is hostile.
pub const MAX_LIST_ON_WIRE: usize = 96;
/// Longest successor list a node may be configured with: beyond this the
/// stabilize reply outgrows a datagram with IPv6 addresses.
pub const MAX_SUCCESSOR_LIST: usize = 64;
/// Fingers sent to a joining node: enough for a ring of 2^32 nodes.
pub const MAX_FINGERS_SENT: usize = 32;
/// Largest payload a node may be configured to accept: beyond this a
/// message is better streamed than routed through a ring.
pub const MAX_PAYLOAD_LIMIT: usize = 1 << 20;

/// How long a message answered busy (the destination's application had no
/// room for it) waits before its next attempt, at most; each further busy
/// answer doubles it, up to [`BUSY_RETRY_MAX`], and the wait is a random
/// value between half of it and all of it. Short, because an application
/// that drains its queue makes room at once.
pub const BUSY_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(10);

/// The longest wait between two attempts of a message answered busy (or
/// `Config::send_attempt_timeout`, if shorter). A held-back message costs
/// its destination at most a few copies a second, and is taken within this
/// long of the application making room.
pub const BUSY_RETRY_MAX: std::time::Duration = std::time::Duration::from_millis(250);

/// A lookup forwarded more often than this is in a routing loop (a ring of
/// 2^64 nodes needs 64 hops with a complete finger table) and is dropped.
pub const MAX_HOPS: u8 = 64;

/// A node's tunables. The defaults suit the internet; tests and the
/// simulator use the same values unless they say otherwise.
///
/// ```
/// use std::time::Duration;
/// let cfg = chord::Config { stabilize_interval: Duration::from_millis(200), ..Default::default() };
/// assert!(cfg.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Length r of the successor list. With r = 16 a ring survives the
    /// simultaneous loss of half its nodes with probability 1 - 2^-16 per node.
    pub successor_list_len: usize,
    /// Period of stabilize, predecessor check and finger repair. The ring heals
    /// within a few periods of a change; shorter costs more messages.
    pub stabilize_interval: Duration,
    /// How long to wait for a reply before sending a request again. Well above
    /// a round trip on the internet, so a slow peer is not taken for a dead one.
    pub request_timeout: Duration,
    /// Retries of an unanswered maintenance request before its peer is
    /// declared dead; one lost datagram must not evict a live neighbour.
    pub request_retries: u32,
    /// How long a lookup may take end to end, across retries, before it fails.
    pub lookup_timeout: Duration,
    /// Fingers repaired per stabilize period. A ring of N nodes has about
    /// log2(N) distinct fingers, so each is refreshed every log2(N) periods.
    pub fingers_per_tick: usize,
    /// Most requests and forwarded lookups awaiting a reply at once; past it
    /// new ones are refused and counted, so a flood costs bounded memory.
    pub max_pending: usize,
    /// Largest application payload accepted by `send` and `broadcast`;
    /// larger ones are refused at the API, not truncated.
    pub max_payload: usize,
    /// Largest payload put in one datagram; larger payloads are split. 1200
    /// bytes plus headers fit the smallest common path MTU (IPv6's 1280).
    pub max_fragment: usize,
    /// How long a send may take, across retries, before it fails.
    pub send_timeout: std::time::Duration,
    /// How long one attempt of a send waits for the destination's
    /// confirmation before all copies go again, by other first hops. Hops
    /// are acknowledged one by one, so silence this long means a forwarder
    /// dropped the message (or it was lost), not that a node died.
    pub send_attempt_timeout: std::time::Duration,
    /// Most message ids remembered to hand each message up once. Each id is
    /// kept for `send_timeout + send_attempt_timeout` (the longest a retry
    /// can come late) and about 40 bytes: the default holds 21,000
    /// messages/s for those 12 s in at most about 10 MB, allocated only as
    /// traffic needs it. Past it the oldest ids are forgotten early
    /// (`Stats::dedup_evicted_early`).
    pub dedup_window: usize,
    /// Bytes of fragments held awaiting their siblings, at most.
    pub reassembly_bytes: usize,
    /// Requests (Ping, GetNeighbors, FindSuccessor, Data, Leave,
    /// SuccessorHint) accepted per second from one source address; past it
    /// they are dropped and counted. A node's honest neighbours send a few
    /// per second, so one flooding address cannot fill `max_pending`, the
    /// dedup window or the send queue.
    pub source_rate: u32,
    /// Requests one source may send in a burst after being quiet; bounds
    /// what one address holds of `max_pending` to about
    /// `source_burst + source_rate * request_timeout`.
    pub source_burst: u32,
    /// Data datagrams accepted per second from one *verified* source (an
    /// address that has answered one of our requests), counted apart from
    /// `source_rate`: applications stream messages to their neighbours far
    /// faster than maintenance runs, and an address that answers cannot be
    /// a forged one. Still bounded, so that one insider cannot flood
    /// without limit. Unverified sources' Data go by `source_rate`.
    pub data_rate: u32,
    /// Data datagrams a verified source may send in a burst.
    pub data_burst: u32,
    /// Source addresses tracked at once (token bucket, bytes in and out,
    /// whether verified); the least recently heard is forgotten first, so
    /// the table costs bounded memory whatever the number of sources.
    pub max_sources: usize,
    /// Peers remembered after they failed. They are probed now and then,
    /// so that when a network partition heals, the two rings it split the
    /// swarm into find each other and merge (Chord alone never does).
    pub past_peers: usize,
    /// How long a failed peer is remembered and probed. A partition that
    /// lasts longer heals only by joining again through a bootstrap peer.
    pub past_peer_ttl: Duration,
    /// Longest wait between two probes of one remembered peer; the wait
    /// starts at one stabilization period and doubles up to this. It
    /// bounds how long after a partition heals the rings start to merge.
    pub past_probe_max: Duration,
    /// A punched path (see `docs/protocol.md`, "Hole punching") quiet for
    /// this long is pinged, once per interval, to hold the NATs' bindings
    /// open: below the 30 s after which many NATs (Linux's conntrack among
    /// them) forget a UDP mapping that saw no answer.
    pub keepalive_interval: Duration,
    /// Peers this node relays for at once when it is reachable first
    /// (public or mapped): reservations and the relayed peers' claims
    /// beyond these are refused and counted. 0: relays for nobody.
    pub relay_peers: usize,
    /// Bytes per second this node forwards as a relay, in all (a burst of
    /// one second's worth); past it frames are dropped and counted.
    pub relay_rate: u64,
    /// The DHT store's tunables (replicas, quotas, anti-entropy period).
    pub store: crate::store::StoreConfig,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            successor_list_len: 16,
            stabilize_interval: Duration::from_secs(1),
            request_timeout: Duration::from_millis(500),
            request_retries: 2,
            lookup_timeout: Duration::from_secs(8),
            fingers_per_tick: 1,
            max_pending: 4096,
            max_payload: 64 * 1024,
            max_fragment: 1200,
            send_timeout: Duration::from_secs(10),
            send_attempt_timeout: Duration::from_secs(2),
            dedup_window: 262_144,
            reassembly_bytes: 4 << 20,
            source_rate: 400,
            source_burst: 400,
            data_rate: 100_000,
            data_burst: 20_000,
            max_sources: 4096,
            past_peers: 32,
            past_peer_ttl: Duration::from_secs(600),
            past_probe_max: Duration::from_secs(8),
            keepalive_interval: Duration::from_secs(25),
            relay_peers: 32,
            relay_rate: 1 << 20,
            store: crate::store::StoreConfig::default(),
        }
    }
}

/// A [`Config`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {0}")]
pub struct ConfigError(pub &'static str);

impl Config {
    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.successor_list_len == 0 || self.successor_list_len > MAX_SUCCESSOR_LIST {
            return Err(ConfigError("successor_list_len must be in 1..=64"));
        }
        if self.stabilize_interval.is_zero() || self.request_timeout.is_zero() {
            return Err(ConfigError("intervals and timeouts must be positive"));
        }
        if self.send_attempt_timeout.is_zero() || self.send_timeout < self.send_attempt_timeout {
            return Err(ConfigError(
                "send_timeout must be at least send_attempt_timeout > 0",
            ));
        }
        if self.lookup_timeout < self.request_timeout {
            return Err(ConfigError(
                "lookup_timeout must be at least request_timeout",
            ));
        }
        if self.max_payload > MAX_PAYLOAD_LIMIT {
            return Err(ConfigError("max_payload must be at most 1 MiB"));
        }
        if self.max_fragment < 64 || self.max_fragment > 60_000 {
            return Err(ConfigError("max_fragment must be in 64..=60000"));
        }
        if self.max_payload / self.max_fragment >= u16::MAX as usize {
            return Err(ConfigError("max_payload needs too many fragments"));
        }
        let bookkeeping = crate::delivery::PARTIAL_OVERHEAD
            + crate::delivery::SLOT_OVERHEAD * self.max_fragments() as usize;
        if self.reassembly_bytes < self.max_payload + bookkeeping {
            return Err(ConfigError(
                "reassembly_bytes must hold at least one payload",
            ));
        }
        if self.source_rate == 0
            || self.source_burst == 0
            || self.max_sources == 0
            || self.data_rate == 0
            || self.data_burst == 0
        {
            return Err(ConfigError(
                "source_rate, source_burst, data_rate, data_burst and max_sources must be positive",
            ));
        }
        if self.keepalive_interval.is_zero() {
            return Err(ConfigError("keepalive_interval must be positive"));
        }
        if self.past_probe_max.is_zero() {
            return Err(ConfigError("past_probe_max must be positive"));
        }
        if self.max_pending == 0 || self.dedup_window == 0 {
            return Err(ConfigError("max_pending and dedup_window must be positive"));
        }
        Ok(())
    }

    /// Most fragments a message of `max_payload` bytes is split into.
    pub fn max_fragments(&self) -> u16 {
        self.max_payload
            .div_ceil(self.max_fragment.max(1))
            .clamp(1, u16::MAX as usize) as u16
    }

    /// Time after which an unanswered maintenance request declares its peer dead.
    pub fn failure_timeout(&self) -> Duration {
        self.request_timeout * (self.request_retries + 1)
    }
}
