//! [`SecureCore`]: the sans-I/O state machine of a keyed link. It turns
//! plaintext datagrams into sealed ones and back, runs the Noise handshakes
//! that make the sessions, and keeps every table bounded. Time comes in as
//! `now`; what must go out waits in [`SecureCore::poll_transmit`].
//!
//! The wire format (all integers big-endian):
//!
//! ```text
//! Init      0x01 | sender index u32 | Noise NNpsk0 message 1 (e, encrypted timestamp u64)   61 bytes
//! Response  0x02 | sender index u32 | receiver index u32 | Noise message 2 (e, ee)          57 bytes
//! Data      0x03 | receiver index u32 | nonce u64 | ciphertext of the datagram, 16-byte tag  29 + n bytes
//! ```
//!
//! A Data datagram with nothing inside confirms a new session (the
//! initiator sends one when it has nothing queued) and is not delivered.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash as StdHash;
use std::time::{Duration, Instant};

use snow::params::NoiseParams;
use snow::{HandshakeState, StatelessTransportState};

use super::replay::ReplayWindow;
use super::{SecureConfig, SecureStats, SwarmKey};

/// The Noise protocol: no static keys (a peer's identity is its address,
/// checked by the core), the swarm key mixed in before the first message.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Bound into every handshake: a peer of another protocol or version fails it.
pub(super) const PROLOGUE: &[u8] = b"cicada swarm key v1";

pub(super) const INIT: u8 = 0x01;
pub(super) const RESPONSE: u8 = 0x02;
pub(super) const DATA: u8 = 0x03;
pub(super) const TAG: usize = 16;
pub(super) const DH_LEN: usize = 32;
/// Bytes of an Init: type, index, ephemeral key, encrypted timestamp.
pub const INIT_LEN: usize = 1 + 4 + DH_LEN + 8 + TAG;
/// Bytes of a Response: type, two indexes, ephemeral key, empty payload's tag.
/// Never more than an Init: answering an unverified sender cannot amplify.
pub const RESPONSE_LEN: usize = 1 + 4 + 4 + DH_LEN + TAG;
const _: () = assert!(RESPONSE_LEN <= INIT_LEN);
/// Bytes a Data datagram adds to the one it carries.
pub const DATA_OVERHEAD: usize = 1 + 4 + 8 + TAG;
/// Largest datagram a keyed link carries: a UDP datagram's limit less the
/// overhead (Noise's own limit, 65,535 bytes of ciphertext, is larger).
pub const MAX_PLAINTEXT: usize = chord::MAX_DATAGRAM - DATA_OVERHEAD;
/// Ephemeral keys of accepted Inits remembered, so that a recorded Init
/// replayed from any address is refused without a DH.
pub(super) const SEEN_INITS: usize = 8192;

/// Why a datagram could not be sent.
#[derive(Debug, PartialEq, Eq)]
pub enum SendRefused {
    /// Larger than [`MAX_PLAINTEXT`].
    TooLarge,
    /// No room to queue it while the handshake runs (counted).
    QueueFull,
}

/// One direction-pair of keys with a peer, made by a completed handshake.
pub(super) struct Session {
    pub(super) local: u32,
    pub(super) remote: u32,
    pub(super) transport: StatelessTransportState,
    pub(super) send_nonce: u64,
    pub(super) replay: ReplayWindow,
}

/// Our handshake with a peer, awaiting its Response.
pub(super) struct Pending {
    pub(super) local: u32,
    pub(super) hs: HandshakeState,
    pub(super) attempts: u32,
    pub(super) retry_at: Instant,
}

#[derive(Default)]
pub(super) struct Peer {
    /// The session we send with.
    ///
    /// Sessions (about 150 bytes, and the replay window's 256-byte bitmap
    /// once a datagram arrives out of order) and handshakes (880) are
    /// boxed: a peer table's empty slots and a peer's absent sessions then
    /// cost a pointer each.
    pub(super) current: Option<Box<Session>>,
    /// The session `current` replaced: still accepted for receiving, so
    /// datagrams in flight during a re-handshake are not lost.
    pub(super) previous: Option<Box<Session>>,
    /// A session the peer made by its Init, not yet confirmed by a datagram
    /// of the peer under it. A replayed Init can therefore never displace a
    /// working session; the first datagram under it promotes it.
    pub(super) next: Option<Box<Session>>,
    pub(super) pending: Option<Box<Pending>>,
    /// Datagrams waiting for the handshake.
    pub(super) queue: VecDeque<Vec<u8>>,
    /// The highest timestamp of an Init accepted from this address.
    pub(super) last_init: u64,
    /// Last authenticated datagram from, or datagram to, this peer.
    pub(super) active: Option<Instant>,
    /// When a datagram under an unknown index last made us start a handshake.
    pub(super) last_reinit: Option<Instant>,
}

impl Peer {
    pub(super) fn confirmed(&self) -> bool {
        self.current.is_some() || self.previous.is_some()
    }

    pub(super) fn indexes(&self) -> impl Iterator<Item = u32> + '_ {
        [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
            .map(|s| s.local)
            .chain(self.pending.as_ref().map(|p| p.local))
    }
}

/// A token bucket: at most `burst` at once, refilled at `rate` a second.
pub(super) struct Bucket {
    pub(super) tokens: f64,
    pub(super) rate: f64,
    pub(super) burst: f64,
    pub(super) at: Instant,
}

impl Bucket {
    pub(super) fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now.max(self.at);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The sessions of one keyed link with all its peers (see the module
/// documentation for the wire format).
pub struct SecureCore<A> {
    pub(super) key: SwarmKey,
    pub(super) cfg: SecureConfig,
    pub(super) params: NoiseParams,
    /// Every peer by address. A datagram's receiver index is looked up
    /// among the sessions of the peer it came from (an address is a peer's
    /// identity here), so no table of indexes is needed: an index is
    /// unique among one peer's sessions and handshake.
    pub(super) peers: HashMap<A, Peer>,
    /// Indexes handed out when the system gives no randomness.
    pub(super) fallback_index: u32,
    pub(super) out: VecDeque<(A, Vec<u8>)>,
    pub(super) queued_bytes: usize,
    pub(super) handshakes: Bucket,
    /// Ephemeral keys of accepted Inits, as 64-bit fingerprints under
    /// `init_key` (a third of the room of the keys themselves): a recorded
    /// Init replayed is refused; an Init refused by a collision would take
    /// 2^64 tries of a sender that does not know the key.
    pub(super) seen_inits: HashSet<u64>,
    pub(super) seen_order: VecDeque<u64>,
    /// The secret key of the fingerprints (SipHash, random per core).
    pub(super) init_key: std::hash::RandomState,
    pub(super) stats: SecureStats,
    /// Wall-clock nanoseconds at `created`: Init timestamps grow across restarts.
    pub(super) wall_base: u64,
    pub(super) created: Instant,
    pub(super) last_stamp: u64,
    pub(super) next_housekeeping: Instant,
    pub(super) earliest_retry: Option<Instant>,
}

pub(super) fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

impl<A: Clone + Eq + StdHash> SecureCore<A> {
    /// A core for `key`. `wall_nanos` is the wall clock (nanoseconds since
    /// the Unix epoch) at `now`: handshake timestamps count from it, so a
    /// restarted peer's Inits are newer than its previous life's.
    pub fn new(key: SwarmKey, cfg: SecureConfig, wall_nanos: u64, now: Instant) -> Self {
        let params: NoiseParams = NOISE_PARAMS
            .parse()
            .unwrap_or_else(|_| unreachable!("a valid Noise protocol name"));
        let handshakes = Bucket {
            tokens: f64::from(cfg.handshake_burst),
            rate: f64::from(cfg.handshake_rate),
            burst: f64::from(cfg.handshake_burst),
            at: now,
        };
        SecureCore {
            key,
            cfg,
            params,
            peers: HashMap::new(),
            fallback_index: 0,
            out: VecDeque::new(),
            queued_bytes: 0,
            handshakes,
            seen_inits: HashSet::new(),
            seen_order: VecDeque::new(),
            init_key: std::hash::RandomState::new(),
            stats: SecureStats::default(),
            wall_base: wall_nanos,
            created: now,
            last_stamp: 0,
            next_housekeeping: now + HOUSEKEEPING,
            earliest_retry: None,
        }
    }

    /// The counters.
    pub fn stats(&self) -> SecureStats {
        let mut s = self.stats.clone();
        s.peers = self.peers.len() as u64;
        s.sessions = self.peers.values().filter(|p| p.current.is_some()).count() as u64;
        s
    }

    /// Whether a handshake with `peer` completed and its session is kept.
    pub fn has_session(&self, peer: &A) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.confirmed() || p.next.is_some())
    }

    /// The next datagram to put on the wire.
    pub fn poll_transmit(&mut self) -> Option<(A, Vec<u8>)> {
        self.out.pop_front()
    }

    /// Datagrams waiting for [`poll_transmit`](Self::poll_transmit).
    pub fn queued_transmits(&self) -> usize {
        self.out.len()
    }

    /// Whether a datagram for `peer` would be sealed at once (a session
    /// to send with is up), rather than queued for a handshake.
    pub fn can_seal(&self, peer: &A) -> bool {
        self.peers.get(peer).is_some_and(|p| p.current.is_some())
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run.
    pub fn poll_timeout(&self) -> Instant {
        match self.earliest_retry {
            Some(r) => r.min(self.next_housekeeping),
            None => self.next_housekeeping,
        }
    }

    /// Seals `plain` for `to`, or queues it and starts a handshake when
    /// there is no session yet.
    pub fn send(&mut self, now: Instant, to: &A, plain: &[u8]) -> Result<(), SendRefused> {
        if plain.len() > MAX_PLAINTEXT {
            self.stats.dropped_too_large += 1;
            return Err(SendRefused::TooLarge);
        }
        if let Some(peer) = self.peers.get_mut(to) {
            if let Some(s) = &mut peer.current {
                peer.active = Some(now);
                if let Some(d) = seal(s, plain) {
                    self.out.push_back((to.clone(), d));
                }
                return Ok(());
            }
        }
        if !self.peers.contains_key(to) {
            self.make_room(now);
        }
        let full = {
            let peer = self.peers.entry(to.clone()).or_default();
            peer.queue.len() >= self.cfg.queue_per_peer
                || self.queued_bytes + plain.len() > self.cfg.queue_bytes
        };
        let started = self.peers.get(to).is_some_and(|p| p.pending.is_some());
        if !started {
            self.initiate(now, to, 1);
        }
        if full {
            self.stats.dropped_queue_full += 1;
            return Err(SendRefused::QueueFull);
        }
        if let Some(peer) = self.peers.get_mut(to) {
            peer.queue.push_back(plain.to_vec());
            peer.active.get_or_insert(now);
            self.queued_bytes += plain.len();
        }
        Ok(())
    }

    /// Seals the datagrams `plain` holds back to back (each `segment`
    /// bytes, the last may be shorter) for `to`, appending them to `out` in
    /// the same layout, each [`DATA_OVERHEAD`] bytes longer: a run the
    /// inner link can hand to the system in one call. False, with `out`
    /// unchanged, when there is no session with `to` yet, `plain` is
    /// empty, or `segment` exceeds [`MAX_PLAINTEXT`]: [`send`](Self::send)
    /// each datagram then, which queues, starts a handshake or refuses.
    ///
    /// ```
    /// # use std::time::Instant;
    /// use cicada::secure::{SecureConfig, SecureCore, SwarmKey};
    /// let now = Instant::now();
    /// let mut a = SecureCore::new(SwarmKey::from_bytes([7; 32]), SecureConfig::default(), 1, now);
    /// let mut out = Vec::new();
    /// // No handshake with peer 2 yet: nothing sealed.
    /// assert!(!a.seal_segments(now, &2u32, b"onetwo", 3, &mut out));
    /// assert!(out.is_empty());
    /// ```
    pub fn seal_segments(
        &mut self,
        now: Instant,
        to: &A,
        plain: &[u8],
        segment: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        if plain.is_empty() || segment == 0 || segment > MAX_PLAINTEXT {
            return false;
        }
        let Some(peer) = self.peers.get_mut(to) else {
            return false;
        };
        let Some(s) = &mut peer.current else {
            return false;
        };
        let start = out.len();
        out.reserve(plain.len() + plain.len().div_ceil(segment) * DATA_OVERHEAD);
        for chunk in plain.chunks(segment) {
            if !seal_into(s, chunk, out) {
                out.truncate(start);
                return false;
            }
        }
        peer.active = Some(now);
        true
    }

    /// Handles one datagram from the wire; returns the plaintext it carried,
    /// if it was a Data datagram that authenticated. Anything else is a
    /// handshake (handled) or dropped and counted.
    pub fn handle_datagram(&mut self, now: Instant, from: &A, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut plain = vec![0u8; bytes.len().saturating_sub(DATA_OVERHEAD)];
        let n = self.handle_datagram_into(now, from, bytes, &mut plain)?;
        plain.truncate(n);
        Some(plain)
    }

    /// Opens in place a run of `len` bytes in `buf` received from `from`:
    /// datagrams `stride` bytes apart, the last maybe shorter (as a link
    /// that coalesces receives hands them over). The plaintexts of those
    /// that authenticate are left back to back from the start of `buf`,
    /// each `stride - DATA_OVERHEAD` bytes but the last (the overhead is
    /// the same for every Data datagram, so they keep one stride); the
    /// others are handshakes (handled) or dropped and counted, as by
    /// [`handle_datagram`](Self::handle_datagram). Returns the plaintexts'
    /// total length (0: none) and their stride. `scratch` holds each
    /// datagram aside while its plaintext is written over it.
    pub fn open_run(
        &mut self,
        now: Instant,
        from: &A,
        buf: &mut [u8],
        len: usize,
        stride: usize,
        scratch: &mut Vec<u8>,
    ) -> (usize, usize) {
        let stride = stride.max(1);
        let len = len.min(buf.len());
        let mut out = 0;
        for at in (0..len).step_by(stride) {
            let end = (at + stride).min(len);
            scratch.clear();
            scratch.extend_from_slice(&buf[at..end]);
            // Never past `end`: a plaintext is shorter than its datagram.
            if let Some(n) = self.handle_datagram_into(now, from, scratch, &mut buf[out..end]) {
                out += n;
            }
        }
        (out, stride.saturating_sub(DATA_OVERHEAD).max(1))
    }

    /// [`handle_datagram`](Self::handle_datagram) writing the plaintext
    /// into `out` instead of a new vector: its length is returned, always
    /// `bytes.len() - DATA_OVERHEAD`. `out` must hold that many bytes; a
    /// shorter one gets nothing (the datagram is dropped and counted as
    /// malformed).
    pub fn handle_datagram_into(
        &mut self,
        now: Instant,
        from: &A,
        bytes: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        match bytes.first() {
            Some(&DATA) if bytes.len() >= DATA_OVERHEAD => {
                if out.len() < bytes.len() - DATA_OVERHEAD {
                    self.stats.dropped_malformed += 1;
                    return None;
                }
                self.data(now, from, bytes, out)
            }
            Some(&INIT) if bytes.len() == INIT_LEN => {
                self.init(now, from, bytes);
                None
            }
            Some(&RESPONSE) if bytes.len() == RESPONSE_LEN => {
                self.response(now, from, bytes);
                None
            }
            first => {
                if first == Some(&chord::MAGIC[0]) {
                    tracing::debug!("a datagram without the swarm key: dropped");
                    self.stats.dropped_unkeyed += 1;
                } else {
                    self.stats.dropped_malformed += 1;
                }
                None
            }
        }
    }

    /// Sends the Init of a handshake with `peer` that waits for an answer
    /// again now, as one more attempt: the way to the peer changed (a
    /// relay reaches it now), and the retry timer would leave what waits
    /// for the handshake queued for a whole retry period.
    pub fn retry_handshake_now(&mut self, now: Instant, peer: &A) {
        let Some(attempts) = self
            .peers
            .get(peer)
            .and_then(|p| p.pending.as_ref())
            .map(|h| h.attempts)
        else {
            return;
        };
        if attempts < self.cfg.handshake_attempts {
            self.stats.handshake_retries += 1;
            self.initiate(now, peer, attempts + 1);
        }
    }

    /// Retries handshakes, gives up on those out of attempts, forgets idle peers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.earliest_retry.is_some_and(|r| r <= now) {
            let due: Vec<A> = self
                .peers
                .iter()
                .filter(|(_, p)| p.pending.as_ref().is_some_and(|h| h.retry_at <= now))
                .map(|(a, _)| a.clone())
                .collect();
            for a in due {
                let attempts = self.peers[&a].pending.as_ref().map_or(0, |h| h.attempts);
                if attempts >= self.cfg.handshake_attempts {
                    self.give_up(&a);
                } else {
                    self.stats.handshake_retries += 1;
                    self.initiate(now, &a, attempts + 1);
                }
            }
            self.earliest_retry = self
                .peers
                .values()
                .filter_map(|p| p.pending.as_ref().map(|h| h.retry_at))
                .min();
        }
        if self.next_housekeeping <= now {
            self.next_housekeeping = now + HOUSEKEEPING;
            let idle = self.cfg.idle_timeout;
            let expired: Vec<A> = self
                .peers
                .iter()
                .filter(|(_, p)| {
                    p.pending.is_none()
                        && p.active
                            .is_none_or(|t| now.saturating_duration_since(t) >= idle)
                })
                .map(|(a, _)| a.clone())
                .collect();
            for a in expired {
                self.stats.peers_expired += 1;
                self.remove(&a);
            }
        }
    }

    // ------------------------------------------------------------------ data

    fn data(&mut self, now: Instant, from: &A, bytes: &[u8], out: &mut [u8]) -> Option<usize> {
        let local = be_u32(&bytes[1..])?;
        let nonce = be_u64(&bytes[5..])?;
        if !self
            .peers
            .get(from)
            .is_some_and(|p| p.indexes().any(|i| i == local))
        {
            self.stats.dropped_unknown_session += 1;
            self.unknown_session(now, from, bytes.len());
            return None;
        }
        let peer = self.peers.get_mut(from)?;
        let slot = if peer.current.as_ref().is_some_and(|s| s.local == local) {
            &mut peer.current
        } else if peer.previous.as_ref().is_some_and(|s| s.local == local) {
            &mut peer.previous
        } else if peer.next.as_ref().is_some_and(|s| s.local == local) {
            &mut peer.next
        } else {
            // The index of our pending handshake: no session under it yet.
            self.stats.dropped_unknown_session += 1;
            return None;
        };
        let session = slot.as_mut()?;
        if !session.replay.check(nonce) {
            self.stats.dropped_replay += 1;
            return None;
        }
        let plain = match session.transport.read_message(nonce, &bytes[13..], out) {
            Ok(n) => n,
            Err(_) => {
                self.stats.dropped_bad_mac += 1;
                return None;
            }
        };
        session.replay.accept(nonce);
        peer.active = Some(now);
        if peer.next.as_ref().is_some_and(|s| s.local == local) {
            // The peer proved it holds the session its Init made: promote it.
            peer.previous = peer.current.take();
            peer.current = peer.next.take();
            // What waited for our own handshake can go under this one.
            // Taken whole: an emptied queue would keep its room for the
            // peer's lifetime.
            let queued = std::mem::take(&mut peer.queue);
            if let Some(s) = peer.current.as_mut() {
                for q in &queued {
                    self.queued_bytes = self.queued_bytes.saturating_sub(q.len());
                    if let Some(d) = seal(s, q) {
                        self.out.push_back((from.clone(), d));
                    }
                }
            }
        }
        if plain == 0 {
            // A session confirmation, nothing to deliver.
            return None;
        }
        self.stats.datagrams_opened += 1;
        Some(plain)
    }

    /// A Data datagram under an index we do not know: the sender has a
    /// session we lost (we restarted, or forgot it). Start a handshake so
    /// it gets a new one, at most once per retry period per peer, only for
    /// a datagram at least as large as the Init (no amplification), and
    /// within the handshake budget.
    fn unknown_session(&mut self, now: Instant, from: &A, len: usize) {
        if len < INIT_LEN {
            return;
        }
        if let Some(p) = self.peers.get(from) {
            let recent = p
                .last_reinit
                .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.handshake_retry);
            if p.pending.is_some() || recent {
                return;
            }
        }
        if !self.handshakes.take(now) {
            // The datagram is counted already (unknown session); only the
            // answer is skipped.
            return;
        }
        if !self.peers.contains_key(from) {
            self.make_room(now);
        }
        let peer = self.peers.entry(from.clone()).or_default();
        peer.last_reinit = Some(now);
        peer.active.get_or_insert(now);
        // One Init, never retried: the sender is not verified, so it draws
        // no more than it sent; its next datagram may draw another.
        self.stats.handshakes_initiated += 1;
        self.initiate(now, from, self.cfg.handshake_attempts);
    }

    // ----------------------------------------------------------------- table

    /// Makes room for one more peer: evicts one that never completed a
    /// handshake if there is one, else the one idle longest.
    pub(super) fn make_room(&mut self, _now: Instant) {
        if self.peers.len() < self.cfg.max_peers {
            return;
        }
        let victim = self
            .peers
            .iter()
            .min_by_key(|(_, p)| (p.confirmed(), p.active))
            .map(|(a, _)| a.clone());
        if let Some(a) = victim {
            self.stats.peers_evicted += 1;
            self.remove(&a);
        }
    }

    pub(super) fn remove(&mut self, a: &A) {
        if let Some(p) = self.peers.remove(a) {
            let bytes: usize = p.queue.iter().map(Vec::len).sum();
            self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
            self.stats.dropped_handshake_failed += p.queue.len() as u64;
        }
    }
}

/// How often idle peers are looked for.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

pub(super) fn seal(s: &mut Session, plain: &[u8]) -> Option<Vec<u8>> {
    let mut d = Vec::with_capacity(DATA_OVERHEAD + plain.len());
    seal_into(s, plain, &mut d).then_some(d)
}

/// Appends the Data datagram carrying `plain` to `out`; false (and `out`
/// as it was) if the cipher refused.
fn seal_into(s: &mut Session, plain: &[u8], out: &mut Vec<u8>) -> bool {
    let nonce = s.send_nonce;
    s.send_nonce += 1;
    let start = out.len();
    out.push(DATA);
    out.extend_from_slice(&s.remote.to_be_bytes());
    out.extend_from_slice(&nonce.to_be_bytes());
    out.resize(start + DATA_OVERHEAD + plain.len(), 0);
    match s
        .transport
        .write_message(nonce, plain, &mut out[start + 13..])
    {
        Ok(n) if 13 + n == DATA_OVERHEAD + plain.len() => true,
        _ => {
            out.truncate(start);
            false
        }
    }
}
