//! [`OuroborosLink`]: the swarm's datagrams over Ouroboros flows.
//!
//! The peer's name is registered in a layer and bound to the process; flows
//! are accepted from other peers and allocated to their names when the core
//! first sends to them. Each flow has exactly one owner, a tokio task that
//! reads it and writes it (Ouroboros 0.23 misbehaves when one flow is used
//! from several threads at once); the driver reaches it through a bounded
//! queue, and hears from all flows through one bounded queue that
//! `recv_from` reads (an mpsc receive is cancel-safe, so nothing is lost when
//! the driver's `select!` drops it).
//!
//! The first packet on every flow is a hello carrying the allocator's name:
//! an accepted flow does not say who allocated it, and the core needs the
//! sender's address. A flow that goes down, or stays idle for
//! [`FLOW_IDLE`], is deallocated and forgotten; the next datagram to that
//! name allocates a new one. Nothing is reported to the core: datagrams to a
//! dead peer are lost, as over UDP, and the core's request timeouts notice
//! (`tests/swarm.rs` shows routing recover after a peer is killed).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cicada_ouroboros::{self as ouro, AsyncFlow, Flow, Name, QoSSpec};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::addr::{valid_name, PeerAddr};
use crate::link::Link;

/// A flow with no traffic either way for this long is deallocated (the
/// core's maintenance talks to every neighbour each stabilize period, so
/// only flows of one-off sends go idle).
pub const FLOW_IDLE: Duration = Duration::from_secs(30);
/// Peer timeout asked of Ouroboros (the QoS `timeout`): the library sends
/// keepalives every quarter of it and declares the flow's peer gone after
/// this long without hearing from it.
pub const FLOW_PEER_TIMEOUT_MS: u32 = 5_000;
/// How long an allocation may take before the datagrams queued for it are
/// dropped.
pub const ALLOC_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed allocation, datagrams to that name are dropped for this
/// long instead of starting another allocation each time the core retries.
pub const ALLOC_BACKOFF: Duration = Duration::from_millis(500);
/// How long an accepted flow may take to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// Most flows (allocated and accepted) at once; further accepted flows are
/// deallocated at once, further allocations refused.
pub const MAX_FLOWS: usize = 1024;
/// Datagrams waiting for one flow's owner; past it they are dropped, as a
/// full socket buffer drops them.
pub const FLOW_QUEUE: usize = 512;
/// Datagrams from all flows waiting for the driver.
pub const INCOMING_QUEUE: usize = 4096;

/// The hello: this magic, one version byte, then the allocator's name.
const HELLO_MAGIC: &[u8; 8] = b"CICADA-H";
const HELLO_VERSION: u8 = 1;
/// How often a flow's owner checks whether it went idle.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// How long the accepting thread waits in one `flow_accept`, so that it
/// notices the link closing.
const ACCEPT_SLICE: Duration = Duration::from_secs(1);

/// Only one Ouroboros link per process: `flow_accept` cannot tell which of
/// the process's names a flow was allocated to.
static IN_USE: AtomicBool = AtomicBool::new(false);

/// The QoS of every flow: `raw` (no FRCT) with a short peer timeout.
///
/// The core already retransmits its requests and confirms sends end to
/// end, so FRCT's retransmission would only add a second, slower repair
/// loop and head-of-line blocking; 0.23's FRCT also loses and mixes packets
/// when flows are used from several threads.
pub fn flow_qos() -> QoSSpec {
    QoSSpec::raw().with_timeout(FLOW_PEER_TIMEOUT_MS)
}

/// Counters of an [`OuroborosLink`].
#[derive(Debug, Default)]
struct Counters {
    allocated: AtomicU64,
    accepted: AtomicU64,
    alloc_failed: AtomicU64,
    dropped: AtomicU64,
    closed: AtomicU64,
    leaked: AtomicU64,
}

/// What an [`OuroborosLink`] counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Flows this peer allocated.
    pub allocated: u64,
    /// Flows other peers allocated to this one and sent a valid hello on.
    pub accepted: u64,
    /// Allocations that failed (no such name, timeout, …).
    pub alloc_failed: u64,
    /// Datagrams dropped: queue full, allocation failed or backing off.
    pub dropped: u64,
    /// Flows closed (down, idle, or replaced and idle).
    pub closed: u64,
    /// Closed flows left allocated until the process exits because their
    /// peer may be gone (deallocating them could block forever in
    /// Ouroboros 0.23, see `docs/ouroboros.md`).
    pub leaked: u64,
    /// Flows open now.
    pub open: usize,
}

struct Entry {
    gen: u64,
    out: mpsc::Sender<Bytes>,
}

struct Shared {
    me: String,
    flows: Mutex<HashMap<String, Entry>>,
    backoff: Mutex<HashMap<String, Instant>>,
    incoming: mpsc::Sender<(Vec<u8>, String)>,
    runtime: tokio::runtime::Handle,
    tasks: Mutex<Vec<AbortHandle>>,
    next_gen: AtomicU64,
    live: AtomicUsize,
    stop: AtomicBool,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`Link`] over Ouroboros flows; peers are addressed by name.
///
/// Made by [`crate::SwarmPeer::bind_ouroboros`]; usable on its own too.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cicada::Error> {
/// use cicada::{Link, OuroborosLink, PeerAddr};
/// let link = OuroborosLink::bind("alice", "local_layer").await?;
/// link.send_to(b"hi", &PeerAddr::ouroboros("bob").unwrap()).await?;
/// let mut buf = vec![0; 2048];
/// let (n, from) = link.recv_from(&mut buf).await?;
/// println!("{n} bytes from {from}");
/// # Ok(()) }
/// ```
pub struct OuroborosLink {
    shared: Arc<Shared>,
    name: Mutex<Option<Name>>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, String)>>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for OuroborosLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OuroborosLink")
            .field("name", &self.shared.me)
            .finish_non_exhaustive()
    }
}

impl OuroborosLink {
    /// Binds `name` in `layer` (created in the IRMd if needed, registered,
    /// bound to this process) and starts accepting flows. Must be called
    /// inside a tokio runtime. Fails with [`crate::Error::Ouroboros`] when
    /// Ouroboros is missing or the name cannot be bound, and with
    /// [`crate::Error::OuroborosInUse`] when this process has a link already.
    pub async fn bind(name: &str, layer: &str) -> Result<OuroborosLink, crate::Error> {
        if !valid_name(name) {
            return Err(ouro::Error::InvalidName(name.to_owned()).into());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| crate::Error::NoRuntime)?;
        if IN_USE.swap(true, Ordering::AcqRel) {
            return Err(crate::Error::OuroborosInUse);
        }
        let (n, l) = (name.to_owned(), layer.to_owned());
        let bound = tokio::task::spawn_blocking(move || {
            ouro::check()?;
            Name::bind(&n, &[&l])
        })
        .await
        .unwrap_or(Err(ouro::Error::Deallocated));
        let name_guard = match bound {
            Ok(g) => g,
            Err(e) => {
                IN_USE.store(false, Ordering::Release);
                return Err(e.into());
            }
        };
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        let shared = Arc::new(Shared {
            me: name.to_owned(),
            flows: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
            incoming: tx,
            runtime,
            tasks: Mutex::new(Vec::new()),
            next_gen: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("cicada-ouro-accept".into())
            .spawn(move || accept_loop(s))
            .map_err(crate::Error::Io)?;
        tracing::debug!(%name, %layer, "ouroboros link bound");
        Ok(OuroborosLink {
            shared,
            name: Mutex::new(Some(name_guard)),
            incoming: tokio::sync::Mutex::new(rx),
            acceptor: Some(acceptor),
        })
    }

    /// The name this link is bound to.
    pub fn name(&self) -> &str {
        &self.shared.me
    }

    /// What the link counted so far.
    pub fn stats(&self) -> FlowStats {
        let c = &self.shared.counters;
        FlowStats {
            allocated: c.allocated.load(Ordering::Relaxed),
            accepted: c.accepted.load(Ordering::Relaxed),
            alloc_failed: c.alloc_failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            closed: c.closed.load(Ordering::Relaxed),
            leaked: c.leaked.load(Ordering::Relaxed),
            open: self.shared.live.load(Ordering::Relaxed),
        }
    }
}

impl Drop for OuroborosLink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for t in lock(&self.shared.tasks).drain(..) {
            t.abort();
        }
        lock(&self.shared.flows).clear();
        // Unbind and unregister now, not when the last task lets go.
        drop(lock(&self.name).take());
        IN_USE.store(false, Ordering::Release);
    }
}

impl Link for OuroborosLink {
    type Addr = PeerAddr;

    fn local_addr(&self) -> io::Result<PeerAddr> {
        Ok(PeerAddr::Ouroboros(self.shared.me.clone()))
    }

    async fn send_to(&self, bytes: &[u8], to: &PeerAddr) -> io::Result<()> {
        let PeerAddr::Ouroboros(name) = to else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{to} is not an Ouroboros name"),
            ));
        };
        self.shared.send(name, Bytes::copy_from_slice(bytes))
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, PeerAddr)> {
        let mut rx = self.incoming.lock().await;
        loop {
            // Cancel-safe: a datagram is either still in the queue or returned.
            let Some((data, from)) = rx.recv().await else {
                return Err(io::Error::new(io::ErrorKind::NotConnected, "link closed"));
            };
            if data.len() > buf.len() {
                self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            buf[..data.len()].copy_from_slice(&data);
            return Ok((data.len(), PeerAddr::Ouroboros(from)));
        }
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> Option<io::Result<(usize, PeerAddr)>> {
        let mut rx = self.incoming.try_lock().ok()?;
        loop {
            let (data, from) = rx.try_recv().ok()?;
            if data.len() > buf.len() {
                self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            buf[..data.len()].copy_from_slice(&data);
            return Some(Ok((data.len(), PeerAddr::Ouroboros(from))));
        }
    }
}

impl Shared {
    fn drop_one(&self) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn send(self: &Arc<Self>, name: &str, bytes: Bytes) -> io::Result<()> {
        if name == self.me {
            self.drop_one();
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no flow to our own name",
            ));
        }
        let mut flows = lock(&self.flows);
        if let Some(e) = flows.get(name) {
            return match e.out.try_send(bytes) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.drop_one();
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    flows.remove(name);
                    self.drop_one();
                    Err(io::ErrorKind::NotConnected.into())
                }
            };
        }
        {
            let mut backoff = lock(&self.backoff);
            if let Some(t) = backoff.get(name) {
                if t.elapsed() < ALLOC_BACKOFF {
                    self.drop_one();
                    return Err(io::ErrorKind::NotConnected.into());
                }
                backoff.remove(name);
            }
        }
        if self.live.load(Ordering::Relaxed) >= MAX_FLOWS || self.stop.load(Ordering::Acquire) {
            self.drop_one();
            return Err(io::Error::other("too many flows"));
        }
        // Allocation: one per name at a time (the entry exists while it runs,
        // so further datagrams queue behind it), never to our own name.
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        let _ = tx.try_send(bytes);
        let gen = self.next_gen.fetch_add(1, Ordering::Relaxed);
        flows.insert(name.to_owned(), Entry { gen, out: tx });
        drop(flows);
        self.live.fetch_add(1, Ordering::Relaxed);
        let s = self.clone();
        let peer = name.to_owned();
        let h = self.runtime.spawn(async move {
            let p = peer.clone();
            let me = s.me.clone();
            let r = tokio::task::spawn_blocking(move || allocate(&p, &me))
                .await
                .unwrap_or(Err(ouro::Error::Deallocated));
            match r.and_then(AsyncFlow::new) {
                Ok(flow) => {
                    s.counters.allocated.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(to = %peer, "flow allocated");
                    own_flow(s, flow, peer, gen, Some(rx)).await;
                }
                Err(e) => {
                    tracing::debug!(to = %peer, error = %e, "flow allocation failed");
                    s.counters.alloc_failed.fetch_add(1, Ordering::Relaxed);
                    s.counters
                        .dropped
                        .fetch_add(rx.len() as u64, Ordering::Relaxed);
                    lock(&s.backoff).insert(peer.clone(), Instant::now());
                    s.forget(&peer, gen);
                    s.live.fetch_sub(1, Ordering::Relaxed);
                }
            }
        });
        self.track(h.abort_handle());
        Ok(())
    }

    fn track(&self, h: AbortHandle) {
        let mut t = lock(&self.tasks);
        if t.len() >= 64 {
            t.retain(|h| !h.is_finished());
        }
        t.push(h);
    }

    /// Removes the entry of `peer` if it is still the one of generation `gen`.
    fn forget(&self, peer: &str, gen: u64) {
        let mut flows = lock(&self.flows);
        if flows.get(peer).is_some_and(|e| e.gen == gen) {
            flows.remove(peer);
        }
    }

    /// Makes an accepted flow the one datagrams to `peer` go out on (the
    /// newest flow wins; the one it replaces keeps being read until idle).
    fn adopt(&self, peer: &str) -> Option<(u64, mpsc::Receiver<Bytes>)> {
        if self.stop.load(Ordering::Acquire) {
            return None;
        }
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        let gen = self.next_gen.fetch_add(1, Ordering::Relaxed);
        lock(&self.flows).insert(peer.to_owned(), Entry { gen, out: tx });
        Some((gen, rx))
    }
}

fn hello(me: &str) -> Vec<u8> {
    let mut h = Vec::with_capacity(HELLO_MAGIC.len() + 1 + me.len());
    h.extend_from_slice(HELLO_MAGIC);
    h.push(HELLO_VERSION);
    h.extend_from_slice(me.as_bytes());
    h
}

/// The name in a hello, if `p` is a valid one.
fn parse_hello(p: &[u8]) -> Option<String> {
    let rest = p.strip_prefix(HELLO_MAGIC.as_slice())?;
    let (&v, name) = rest.split_first()?;
    if v != HELLO_VERSION {
        return None;
    }
    let name = std::str::from_utf8(name).ok()?;
    valid_name(name).then(|| name.to_owned())
}

/// Allocates a flow to `peer` and sends the hello (blocking; run off the runtime).
fn allocate(peer: &str, me: &str) -> ouro::Result<Flow> {
    let flow = ouro::flow_alloc(peer, Some(flow_qos()), Some(ALLOC_TIMEOUT))?;
    if let Err(e) = flow.write(&hello(me)) {
        // The peer may be gone: not deallocated (see `Owned`).
        std::mem::forget(flow);
        return Err(e);
    }
    Ok(flow)
}

fn accept_loop(s: Arc<Shared>) {
    while !s.stop.load(Ordering::Acquire) {
        match ouro::flow_accept(Some(ACCEPT_SLICE)) {
            Ok(flow) => {
                if s.live.load(Ordering::Relaxed) >= MAX_FLOWS {
                    tracing::debug!("too many flows: accepted flow deallocated");
                    continue;
                }
                s.live.fetch_add(1, Ordering::Relaxed);
                let s2 = s.clone();
                let h = s.runtime.spawn(accepted(s2, flow));
                s.track(h.abort_handle());
            }
            Err(ouro::Error::Timeout { .. }) => {}
            Err(e) => {
                tracing::debug!(error = %e, "flow_accept failed");
                std::thread::sleep(ACCEPT_SLICE);
            }
        }
    }
}

/// Reads the hello of an accepted flow, then owns it.
async fn accepted(s: Arc<Shared>, flow: Flow) {
    let r = tokio::task::spawn_blocking(move || {
        let first = flow
            .set_rcv_timeout(Some(HELLO_TIMEOUT))
            .and_then(|_| flow.recv())
            .and_then(|first| flow.set_rcv_timeout(None).map(|_| first));
        match first {
            Ok(first) => Ok((flow, first)),
            Err(e) => {
                // No hello: the peer may be gone, so not deallocated (see `Owned`).
                std::mem::forget(flow);
                Err(e)
            }
        }
    })
    .await;
    let (flow, first) = match r {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "accepted flow sent no hello");
            s.live.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        Err(_) => {
            s.live.fetch_sub(1, Ordering::Relaxed);
            return;
        }
    };
    let Some(peer) = parse_hello(&first).filter(|p| *p != s.me) else {
        tracing::debug!("accepted flow without a valid hello: deallocated");
        s.live.fetch_sub(1, Ordering::Relaxed);
        // Its peer may be gone: not deallocated (see `Owned`).
        s.counters.leaked.fetch_add(1, Ordering::Relaxed);
        std::mem::forget(flow);
        return;
    };
    let flow = match AsyncFlow::new(flow) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(error = %e, "accepted flow unusable");
            s.live.fetch_sub(1, Ordering::Relaxed);
            return;
        }
    };
    let Some((gen, rx)) = s.adopt(&peer) else {
        s.live.fetch_sub(1, Ordering::Relaxed);
        return;
    };
    s.counters.accepted.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(from = %peer, "flow accepted");
    own_flow(s, flow, peer, gen, Some(rx)).await;
}

/// An owned flow, released safely when dropped (also when its task is
/// aborted). `flow_dealloc` of Ouroboros 0.23 waits, holding the library's
/// process lock, until the peer has read every packet still queued towards
/// it (the library's own keepalives included), which never happens when the
/// peer is gone; every later allocation or accept of the process then hangs.
/// So only a flow whose peer is known alive (it went idle while the peer's
/// keepalives kept coming) is deallocated; a flow that went down, or that is
/// dropped because the link closes, is left allocated (counted as `leaked`)
/// for the library's destructor at exit, which does not wait.
struct Owned {
    flow: Option<AsyncFlow>,
    shared: Arc<Shared>,
    /// Set when the peer is known alive: deallocate on drop.
    dealloc: bool,
}

impl std::ops::Deref for Owned {
    type Target = AsyncFlow;
    fn deref(&self) -> &AsyncFlow {
        self.flow.as_ref().expect("present until dropped")
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let Some(f) = self.flow.take() else { return };
        let Ok(f) = f.into_inner() else { return };
        if self.dealloc {
            drop(f);
        } else {
            self.shared.counters.leaked.fetch_add(1, Ordering::Relaxed);
            std::mem::forget(f);
        }
    }
}

/// The one owner of a flow: reads it, writes what the driver queued, and
/// deallocates it when it goes down or idle.
async fn own_flow(
    s: Arc<Shared>,
    flow: AsyncFlow,
    peer: String,
    gen: u64,
    mut out: Option<mpsc::Receiver<Bytes>>,
) {
    let mut flow = Owned {
        flow: Some(flow),
        shared: s.clone(),
        dealloc: false,
    };
    let mut last = Instant::now();
    let mut tick = tokio::time::interval(IDLE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = flow.recv() => match r {
                Ok(p) if p.is_empty() => {}
                Ok(p) => {
                    last = Instant::now();
                    if s.incoming.send((p, peer.clone())).await.is_err() {
                        break; // the link is gone
                    }
                }
                Err(e) if e.is_flow_dead() => {
                    tracing::debug!(%peer, error = %e, "flow down");
                    break;
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "flow read error");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            m = async { match out.as_mut() { Some(o) => o.recv().await, None => std::future::pending().await } } => match m {
                Some(b) => {
                    last = Instant::now();
                    if let Err(e) = flow.write(&b).await {
                        s.drop_one();
                        if e.is_flow_dead() {
                            tracing::debug!(%peer, error = %e, "flow down on write");
                            break;
                        }
                    }
                }
                // Replaced by a newer flow: read what still comes, until idle.
                None => out = None,
            },
            _ = tick.tick() => if last.elapsed() > FLOW_IDLE {
                // The peer is alive (its keepalives keep the flow up, it would
                // have gone down after FLOW_PEER_TIMEOUT_MS otherwise).
                tracing::debug!(%peer, "flow idle");
                flow.dealloc = true;
                break;
            },
        }
    }
    s.forget(&peer, gen);
    s.counters.closed.fetch_add(1, Ordering::Relaxed);
    s.live.fetch_sub(1, Ordering::Relaxed);
    drop(flow);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_garbage() {
        assert_eq!(parse_hello(&hello("node-3")).as_deref(), Some("node-3"));
        assert_eq!(parse_hello(b""), None);
        assert_eq!(parse_hello(b"CICADA-H"), None);
        assert_eq!(parse_hello(b"CICADA-H\x01"), None);
        assert_eq!(parse_hello(b"CICADA-H\x02abc"), None);
        assert_eq!(parse_hello(b"CICADA-H\x01a\0b"), None);
        assert_eq!(parse_hello(b"CICADA-H\x01\xff\xfe"), None);
        let long = hello(&"x".repeat(300));
        assert_eq!(parse_hello(&long), None);
    }
}
