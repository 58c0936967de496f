//! Private swarms: [`SecureLink`] wraps any [`Link`] so that every datagram
//! between two peers holding the same [`SwarmKey`] is authenticated and
//! encrypted, and everything else is dropped and counted.
//!
//! Each pair of peers runs a Noise `NNpsk0` handshake (one round trip, the
//! swarm key as pre-shared key, fresh X25519 ephemeral keys for forward
//! secrecy), then seals each datagram with ChaCha20-Poly1305 under an
//! explicit 64-bit nonce, so that loss and reordering cost nothing and a
//! sliding window refuses replays. `docs/security.md` has the threat model
//! and the reasons; the sans-I/O state machine is [`SecureCore`], this
//! module's async shell only moves its datagrams and its time.

mod cipher;
mod core;
mod handshake;
mod key;
mod replay;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use snow::resolvers::CryptoResolver;
use tokio::sync::Notify;

use crate::link::Link;

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

thread_local! {
    /// Where a keyed link sets each received datagram aside while its
    /// plaintext is written over the receive buffer: one per thread (not
    /// one per peer), as large as the largest datagram it has opened.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
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

type Shared<A> = Arc<Mutex<SecureCore<A>>>;

fn lock<A>(core: &Shared<A>) -> MutexGuard<'_, SecureCore<A>> {
    // A panic while holding the lock cannot leave the core half-updated in a
    // way that matters more than stopping would: keep going.
    core.lock().unwrap_or_else(|p| p.into_inner())
}

/// A [`Link`] whose datagrams are authenticated and encrypted with a
/// [`SwarmKey`]: a peer without the key can neither read nor inject, and
/// what it sends is dropped and counted ([`SecureStats`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use cicada::link::{Link, UdpLink};
/// use cicada::secure::{SecureLink, SwarmKey};
/// let key = SwarmKey::generate().unwrap();
/// let a = SecureLink::new(UdpLink::bind("127.0.0.1:0".parse().unwrap()).await?, key.clone());
/// let b = SecureLink::new(UdpLink::bind("127.0.0.1:0".parse().unwrap()).await?, key);
/// a.send_to(b"hello", &b.local_addr()?).await?;
/// let mut buf = [0u8; 64];
/// let receiving = async {
///     let (n, from) = b.recv_from(&mut buf).await?;
///     assert_eq!(&buf[..n], b"hello");
///     std::io::Result::Ok(from)
/// };
/// // `a` must be receiving too, to take `b`'s handshake Response.
/// let mut abuf = [0u8; 64];
/// let from = tokio::select! {
///     r = receiving => r?,
///     _ = a.recv_from(&mut abuf) => unreachable!("b sends no data"),
/// };
/// assert_eq!(from, a.local_addr()?);
/// # Ok(()) }
/// ```
pub struct SecureLink<L: Link> {
    inner: L,
    core: Shared<L::Addr>,
    /// Wakes a waiting `recv_from` when a send started a handshake (its
    /// retry timer may be earlier than the one it sleeps until), or a
    /// handshake datagram taken elsewhere needs an answer sent.
    wake: Notify,
}

impl<L: Link> std::fmt::Debug for SecureLink<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureLink")
            .field("stats", &lock(&self.core).stats())
            .finish_non_exhaustive()
    }
}

/// A handle on a [`SecureLink`]'s counters that outlives moving the link
/// into a driver.
#[derive(Clone)]
pub struct SecureStatsHandle<A>(Shared<A>);

impl<A: Clone + Eq + std::hash::Hash> SecureStatsHandle<A> {
    /// The counters now.
    pub fn get(&self) -> SecureStats {
        lock(&self.0).stats()
    }

    /// Whether the link has an authenticated session with `peer`.
    pub fn has_session(&self, peer: &A) -> bool {
        lock(&self.0).has_session(peer)
    }
}

impl<L: Link> SecureLink<L> {
    /// Wraps `inner` with `key` and the default [`SecureConfig`].
    pub fn new(inner: L, key: SwarmKey) -> SecureLink<L> {
        SecureLink::with_config(inner, key, SecureConfig::default())
    }

    /// Wraps `inner` with `key` and `cfg`.
    pub fn with_config(inner: L, key: SwarmKey, cfg: SecureConfig) -> SecureLink<L> {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        SecureLink {
            inner,
            core: Arc::new(Mutex::new(SecureCore::new(key, cfg, wall, Instant::now()))),
            wake: Notify::new(),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> SecureStats {
        lock(&self.core).stats()
    }

    /// A handle to read the counters after the link moved into a driver.
    pub fn stats_handle(&self) -> SecureStatsHandle<L::Addr> {
        SecureStatsHandle(self.core.clone())
    }

    /// The wrapped link.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// Hands the `n` bytes received into `buf` from `from` to the keyed
    /// core; an application datagram's plaintext replaces them in `buf`
    /// (never longer), and its length is returned. `None`: a handshake
    /// datagram (its answer waits in the core's transmits) or one dropped.
    fn open(&self, from: &L::Addr, buf: &mut [u8], n: usize) -> Option<usize> {
        match self.open_run(from, buf, n, n) {
            (0, _) => None,
            (len, _) => Some(len),
        }
    }

    /// [`SecureCore::open_run`] under one lock, with this thread's scratch.
    fn open_run(
        &self,
        from: &L::Addr,
        buf: &mut [u8],
        len: usize,
        stride: usize,
    ) -> (usize, usize) {
        SCRATCH.with_borrow_mut(|scratch| {
            lock(&self.core).open_run(Instant::now(), from, buf, len, stride, scratch)
        })
    }

    /// One datagram from the inner link, sealed or not. A link that waits
    /// for readability is waited on that way, so that a caller holding
    /// its claim to receive ([`Link::claim_receive`]) is the only task
    /// woken meanwhile. Cancel-safe: the receive itself does not wait.
    async fn receive(&self, buf: &mut [u8]) -> io::Result<(usize, L::Addr)> {
        if !self.inner.waits_readable() {
            return self.inner.recv_from(buf).await;
        }
        loop {
            self.inner.readable().await?;
            if let Some(r) = self.inner.try_recv_from(buf) {
                return r;
            }
        }
    }

    /// One round of the keyed core's work between datagrams, for
    /// `recv_from` and `readable`: what the core wants sent goes out, then
    /// `arrival` is awaited beside the core's next deadline and a wake-up.
    /// `Some` with what `arrival` gave; `None` when the deadline came first
    /// (handled) or the wake-up did. Cancel-safe where `arrival` is.
    async fn serve<T>(&self, arrival: impl std::future::Future<Output = T>) -> Option<T> {
        // Errors of handshake sends are the network's loss: retried.
        let _ = self.transmit().await;
        let wake = lock(&self.core).poll_timeout();
        tokio::select! {
            r = arrival => Some(r),
            _ = tokio::time::sleep_until(wake.into()) => {
                lock(&self.core).handle_timeout(Instant::now());
                None
            }
            _ = self.wake.notified() => None,
        }
    }

    /// Puts on the wire what the core wants sent, one datagram at a time
    /// (a cancelled call loses at most the one in flight, as a lossy
    /// network would).
    async fn transmit(&self) -> io::Result<()> {
        let mut result = Ok(());
        loop {
            let next = lock(&self.core).poll_transmit();
            let Some((to, d)) = next else {
                return result;
            };
            if let Err(e) = self.inner.send_to(&d, &to).await {
                result = Err(e);
            }
        }
    }
}

impl<L: Link> Link for SecureLink<L> {
    type Addr = L::Addr;

    fn local_addr(&self) -> io::Result<L::Addr> {
        self.inner.local_addr()
    }

    fn identity() -> Option<fn(&L::Addr) -> chord::Hash> {
        // Keyed or not, ids derive from addresses as the inner link says.
        L::identity()
    }

    async fn send_to(&self, bytes: &[u8], to: &L::Addr) -> io::Result<()> {
        let (sent, earlier) = {
            let mut core = lock(&self.core);
            let before = core.poll_timeout();
            let sent = core.send(Instant::now(), to, bytes);
            (sent, core.poll_timeout() < before)
        };
        if earlier {
            // A handshake started, with a retry before the wait in
            // `recv_from` ends. Not on every send: each wake-up of that
            // task is one of a thread, where the runtime's are idle.
            self.wake.notify_one();
        }
        match sent {
            Ok(()) => self.transmit().await,
            Err(SendRefused::TooLarge) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("datagram larger than a keyed link carries ({MAX_PLAINTEXT} bytes)"),
            )),
            Err(SendRefused::QueueFull) => {
                self.transmit().await?;
                Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "handshake under way and its queue is full: datagram dropped",
                ))
            }
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, L::Addr)> {
        loop {
            let Some(r) = self.serve(self.receive(buf)).await else {
                continue;
            };
            let (n, from) = r?;
            // From here to the return nothing awaits: cancel-safe.
            if let Some(len) = self.open(&from, buf, n) {
                return Ok((len, from));
            }
        }
    }

    fn holds_received(&self) -> bool {
        self.inner.holds_received()
    }

    fn waits_readable(&self) -> bool {
        // Then the driver keeps no receive buffer of its own for a keyed
        // peer either (64 KiB each), and drains with `try_recv_run`.
        self.inner.waits_readable()
    }

    async fn readable(&self) -> io::Result<()> {
        // The keyed core's work that `recv_from` does between datagrams
        // (handshake answers and retries, housekeeping) is done here while
        // the driver waits; cancel-safe as `recv_from` is.
        loop {
            if let Some(r) = self.serve(self.inner.readable()).await {
                return r;
            }
        }
    }

    fn claim_receive(&self, cx: &mut Context<'_>) -> bool {
        // A caller may receive its reply itself where the inner link lets
        // it; handshake datagrams it takes on the way are handed to the
        // keyed core, and their answers sent by the task in `recv_from`.
        self.inner.claim_receive(cx)
    }

    fn release_receive(&self) {
        self.inner.release_receive()
    }

    fn poll_recv_claimed(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, L::Addr)>> {
        loop {
            let (n, from) = match std::task::ready!(self.inner.poll_recv_claimed(cx, buf)) {
                Ok(r) => r,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if let Some(len) = self.open(&from, buf, n) {
                return Poll::Ready(Ok((len, from)));
            }
            // A handshake datagram (or one dropped): its answer, if any,
            // goes from the task waiting in `recv_from`.
            self.wake.notify_one();
        }
    }

    fn max_segments(&self) -> usize {
        self.inner.max_segments()
    }

    async fn send_segments(&self, bytes: &[u8], segment: usize, to: &L::Addr) -> io::Result<()> {
        // Sealed under one lock and handed to the inner link as one run
        // (each datagram DATA_OVERHEAD longer) where a session is up; one
        // by one through `send_to` otherwise (queued for the handshake).
        let mut sealed = Vec::new();
        let ready = lock(&self.core).seal_segments(Instant::now(), to, bytes, segment, &mut sealed);
        if ready {
            return self
                .inner
                .send_segments(&sealed, segment + DATA_OVERHEAD, to)
                .await;
        }
        crate::link::send_each(self, bytes, segment, to).await
    }

    fn try_recv_run(&self, buf: &mut [u8]) -> Option<io::Result<(usize, usize, L::Addr)>> {
        // A run the inner link received whole is opened whole, in place;
        // handshake datagrams among it are taken (their answers go at the
        // next `recv_from`).
        loop {
            let (len, stride, from) = match self.inner.try_recv_run(buf)? {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            match self.open_run(&from, buf, len, stride) {
                (0, _) => self.wake.notify_one(),
                (n, plain_stride) => return Some(Ok((n, plain_stride, from))),
            }
        }
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> Option<io::Result<(usize, L::Addr)>> {
        // What the inner link has ready already; handshake datagrams among
        // it are taken (their answers go at the next `recv_from`).
        loop {
            let (n, from) = match self.inner.try_recv_from(buf)? {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            if let Some(len) = self.open(&from, buf, n) {
                return Some(Ok((len, from)));
            }
            self.wake.notify_one();
        }
    }
}
