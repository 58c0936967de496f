//! I/O: the Ouroboros link: binding the name, starting the accept and reader
//! threads, writes onto flows; the parts live in `flows`, `hello`, `reader`.
//!
//! [`OuroborosLink`]: the swarm's datagrams over Ouroboros flows.
//!
//! The peer's name is registered in a layer and bound to the process; flows
//! are accepted from other peers and allocated to their names when the core
//! first sends to them. The driver writes a datagram straight onto the
//! flow (a non-blocking write, from the driver's task); one reader thread
//! waits on a flow set holding every flow of the link (`fevent`) and reads
//! one packet per event. Under a `SwarmPeer` it hands what it read, up to
//! [`READ_BATCH`] packets at a time, straight to the driver
//! ([`Link::deliver_to`]), which runs the core on them on this thread and
//! writes the replies they caused: a packet answered in the core (a
//! `Delivered`, a lookup hop) wakes no task, the only wake-up on its path
//! is the reader's own, as for a C program blocked in `flow_read`. Used on
//! its own, the link feeds one bounded queue instead, which `recv_from`
//! reads (an mpsc receive is cancel-safe, so nothing is lost when a
//! `select!` drops it).
//!
//! Reading exactly one packet per event, and never blocking between two
//! `fevent` calls, is what keeps a flood from crashing the process:
//! Ouroboros 0.23 queues one event per packet written, with no bound, and
//! `fevent` copies the whole queue into a heap array of 1,024 events (see
//! `docs/ouroboros.md`). Events not yet taken then never outnumber the
//! packets waiting in the flows' rings (at most 1,023 each), and the reader
//! returns to `fevent` after at most [`READ_BATCH`] reads. The
//! flows are raw (no FRCT): Ouroboros 0.23's FRCT misbehaves when a flow is
//! used from several threads, raw flows read by one thread and written by
//! another are fine.
//!
//! Each neighbour gets two flows, one per traffic class ([`Class`]): the
//! core's maintenance, lookups and confirmations on a low-delay flow, its
//! application data (`Data` datagrams) on a bandwidth flow, chosen per
//! datagram from the kind byte of its header. Both are unreliable (no
//! FRCT). A flood of data then fills only the bulk flow's ring, and the
//! reader thread reads what the low-delay flows brought first, so routing
//! does not queue behind data. [`OuroborosLink::set_class_flows`] (or
//! `CICADA_OUROBOROS_CLASSES=1`) puts everything on one flow instead.
//!
//! The first packet on every flow is a hello carrying the allocator's name:
//! an accepted flow does not say who allocated it, and the core needs the
//! sender's address. A flow that goes down, or stays idle for
//! [`FLOW_IDLE`], is dropped from the link; the next datagram to that name
//! allocates a new one. Nothing is reported to the core: datagrams to a
//! dead peer are lost, as over UDP, and the core's request timeouts notice
//! (`cli/tests/processes.rs` shows routing recover after a peer is killed).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cicada_ouroboros::{
    self as ouro, FEventQueue, FEventType, Flow, FlowProperties, FlowSet, Name, QoSSpec,
};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::addr::{valid_name, PeerAddr};
use crate::link::{Arrivals, Link, LinkSink};

mod flows;
mod hello;
mod reader;

use flows::*;
use hello::*;
use reader::*;

/// A flow with no traffic either way for this long is deallocated (the
/// core's maintenance talks to every neighbour each stabilize period, so
/// only flows of one-off sends go idle).
pub(crate) const FLOW_IDLE: Duration = Duration::from_secs(30);
/// Peer timeout asked of Ouroboros (the QoS `timeout`): the library sends
/// keepalives every quarter of it and declares the flow's peer gone after
/// this long without hearing from it.
pub(crate) const FLOW_PEER_TIMEOUT_MS: u32 = 5_000;
/// How long an allocation may take before the datagrams queued for it are
/// dropped.
pub(crate) const ALLOC_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed allocation, datagrams to that name are dropped for this
/// long instead of starting another allocation each time the core retries.
pub(crate) const ALLOC_BACKOFF: Duration = Duration::from_millis(500);
/// How long an accepted flow may take to send its hello.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// Most flows (allocated and accepted) at once; further accepted flows are
/// deallocated at once, further allocations refused.
pub(crate) const MAX_FLOWS: usize = 1024;
/// Datagrams waiting for a flow to a name while it is being allocated;
/// past it they are dropped, as a full socket buffer drops them.
pub(crate) const FLOW_QUEUE: usize = 512;
/// Datagrams from all flows waiting for the driver.
pub(crate) const INCOMING_QUEUE: usize = 4096;

/// The hello: this magic, one version byte, then (version 2) the flow's
/// class, then the allocator's name. Version 1 (no class byte) is a flow
/// that carries every class.
const HELLO_MAGIC: &[u8; 8] = b"CICADA-H";
const HELLO_VERSION: u8 = 1;
const HELLO_VERSION_CLASS: u8 = 2;
/// The kind byte (after the magic and the version) of the core's `Data`
/// datagrams (`chord::wire`): application messages, fragments and
/// broadcasts. Every other kind is maintenance, lookups or confirmations.
const DATA_KIND: u8 = 10;
/// A datagram that is not a plain Cicada one (sealed with a swarm key, its
/// kind hidden) goes on the bulk flow from this size on.
const SEALED_BULK: usize = 512;

/// A traffic class: which of a neighbour's flows a datagram takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Class {
    /// Maintenance, lookups, confirmations (and everything, with one class
    /// per neighbour): a low-delay flow.
    Control,
    /// Application data: a bandwidth flow.
    Bulk,
}

impl Class {
    /// The class of a datagram, from the kind byte of its header.
    fn of(bytes: &[u8]) -> Class {
        match bytes {
            [m0, m1, _version, kind, ..] if [*m0, *m1] == chord::MAGIC => {
                if *kind == DATA_KIND {
                    Class::Bulk
                } else {
                    Class::Control
                }
            }
            _ if bytes.len() >= SEALED_BULK => Class::Bulk,
            _ => Class::Control,
        }
    }

    /// The other class.
    fn other(self) -> Class {
        match self {
            Class::Control => Class::Bulk,
            Class::Bulk => Class::Control,
        }
    }

    fn byte(self) -> u8 {
        match self {
            Class::Control => 0,
            Class::Bulk => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Class> {
        match b {
            0 => Some(Class::Control),
            1 => Some(Class::Bulk),
            _ => None,
        }
    }

    /// The QoS of this class's flows: unreliable (`in_order` off, so the
    /// library creates no FRCT instance, and `loss` 1, so no
    /// retransmission even if it did), with the peer timeout of
    /// [`flow_qos`]. Control asks for 0.23's voice cube (delay 50 ms,
    /// availability 5, bandwidth and gap within the voice limits), bulk for
    /// its video cube (unbounded bandwidth); a unicast layer schedules by
    /// cube, the shim layers (local, udp4, Ethernet) carry the QoS and do
    /// not act on it.
    fn qos(self) -> QoSSpec {
        let raw = flow_qos();
        match self {
            Class::Control => QoSSpec {
                delay: 50,
                bandwidth: 100_000,
                availability: 5,
                max_gap: 50,
                ..raw
            },
            Class::Bulk => QoSSpec {
                delay: 100,
                bandwidth: u64::MAX,
                availability: 3,
                max_gap: 100,
                ..raw
            },
        }
    }
}

/// Whether new links open a flow per class (2, the default) or one flow
/// per neighbour (1); 0 until read from `CICADA_OUROBOROS_CLASSES`.
static CLASSES: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether links bound from now on use a flow per class.
fn class_flows() -> bool {
    match CLASSES.load(Ordering::Relaxed) {
        0 => {
            let one = std::env::var("CICADA_OUROBOROS_CLASSES").is_ok_and(|v| v.trim() == "1");
            let _ = CLASSES.compare_exchange(
                0,
                if one { 1 } else { 2 },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            CLASSES.load(Ordering::Relaxed) == 2
        }
        n => n == 2,
    }
}
/// How often the reader thread checks for idle flows.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// A flow that went down is deallocated once it has been down this long
/// and its transmit queue is empty (see [`Shared::bury`]).
const DEAD_GRACE: Duration = Duration::from_secs(1);
/// A flow that went down and still has packets queued towards its peer
/// after this long is left to the library (deallocating it would block).
const DEAD_GIVE_UP: Duration = Duration::from_secs(10);
/// How long the reader thread waits in one `fevent`, so that it notices
/// the link closing.
const EVENT_SLICE: Duration = Duration::from_millis(100);
/// Packets the reader thread reads between two `fevent` calls, at most.
const READ_BATCH: usize = 64;
/// While the driver's queue is full, how long the reader thread waits in
/// `fevent` (taking events, reading nothing) before it offers the packet
/// it holds again.
const HELD_WAIT: Duration = Duration::from_micros(500);
/// How long the accepting thread waits in one `flow_accept`, so that it
/// notices the link closing.
const ACCEPT_SLICE: Duration = Duration::from_secs(1);
/// A write that finds the packet pool or the flow's queue full yields this
/// many times to the runtime and tries again at once (a full pool empties
/// in microseconds when the peer reads).
const WRITE_RETRIES: usize = 16;
/// Past those, a write from a task waits for room in pauses of this long
/// (the runtime's timer resolution), as a full UDP socket buffer makes its
/// sender wait: a flow's ring holds 1,023 packets, several milliseconds of
/// the peer's reading, so a sender that keeps more in flight than that
/// must be slowed, not have its packets dropped and retried half a second
/// later.
const WRITE_PAUSE: Duration = Duration::from_millis(1);
/// How long the writes to one flow may wait for room in all in any
/// [`WAIT_WINDOW`]; past it, writes to that flow that find it full are
/// dropped at once until the window ends. A peer that reads too slowly for
/// this is stuck or overwhelmed, and the writes to every other peer wait
/// behind the writes to it. (A budget per window, not per stall: Ouroboros
/// 0.23 accepts a write to a full ring now and then, dropping it, so a
/// stuck peer's flow seems to move.)
const WRITE_WAIT: Duration = Duration::from_millis(200);
/// See [`WRITE_WAIT`].
const WAIT_WINDOW: Duration = Duration::from_secs(1);

thread_local! {
    /// Set on the link's reader thread. A write there never waits for room:
    /// that thread is the one that reads, and two readers each waiting for
    /// room in the other's ring would stall both.
    static ON_READER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Only one Ouroboros link per process: `flow_accept` cannot tell which of
/// the process's names a flow was allocated to.
static IN_USE: AtomicBool = AtomicBool::new(false);

/// The QoS of every flow: `raw` (no FRCT) with a short peer timeout.
///
/// The core already retransmits its requests and confirms sends end to
/// end, so FRCT's retransmission would only add a second, slower repair
/// loop and head-of-line blocking; 0.23's FRCT also loses and mixes packets
/// when flows are used from several threads.
pub(crate) fn flow_qos() -> QoSSpec {
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
    released: AtomicU64,
    most_events: AtomicU64,
    handed: AtomicU64,
    queued: AtomicU64,
    write_waits: AtomicU64,
    over_budget: AtomicU64,
    control_sent: AtomicU64,
    bulk_sent: AtomicU64,
    refused: AtomicU64,
    /// Flows open (or being allocated) now.
    live: AtomicUsize,
}

/// Reads an [`OuroborosLink`]'s counters after the link has moved into its
/// driver (see [`crate::PeerStats::ouroboros`]).
#[derive(Clone, Debug)]
pub(crate) struct FlowStatsHandle(Arc<Counters>);

impl FlowStatsHandle {
    pub(crate) fn get(&self) -> FlowStats {
        let c = &self.0;
        FlowStats {
            allocated: c.allocated.load(Ordering::Relaxed),
            accepted: c.accepted.load(Ordering::Relaxed),
            alloc_failed: c.alloc_failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            closed: c.closed.load(Ordering::Relaxed),
            leaked: c.leaked.load(Ordering::Relaxed),
            released: c.released.load(Ordering::Relaxed),
            open: c.live.load(Ordering::Relaxed),
            most_events: c.most_events.load(Ordering::Relaxed),
            handed: c.handed.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            write_waits: c.write_waits.load(Ordering::Relaxed),
            over_budget: c.over_budget.load(Ordering::Relaxed),
            control_sent: c.control_sent.load(Ordering::Relaxed),
            bulk_sent: c.bulk_sent.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }
}

/// What the Ouroboros link of a peer counted so far (see
/// [`crate::SwarmPeer::bind_ouroboros`]).
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
    /// Flows that went down and were deallocated once nothing was queued
    /// towards their peer.
    pub released: u64,
    /// Flows open now.
    pub open: usize,
    /// The most events one `fevent` returned so far. Ouroboros 0.23
    /// overflows the reader's heap past 1,024 (see `docs/ouroboros.md`);
    /// this shows how close a run came.
    pub most_events: u64,
    /// Packets the reader thread handed straight to the peer's core
    /// (the driver's sink, the way a `SwarmPeer` runs the link).
    pub handed: u64,
    /// Packets the reader thread queued for `recv_from` (the link
    /// used on its own).
    pub queued: u64,
    /// Writes that found a flow's ring (or the packet pool) full and waited
    /// for room (in pauses of 1 ms; the writes to one flow wait at most
    /// 200 ms in any second, and those that find no room past that are
    /// counted in `dropped`).
    pub write_waits: u64,
    /// Of `dropped`, writes that found a flow full after the writes to it
    /// had waited their 200 ms of the current second.
    pub over_budget: u64,
    /// Datagrams written on low-delay flows (maintenance, lookups,
    /// confirmations); with one flow per neighbour, every datagram.
    pub control_sent: u64,
    /// Datagrams written on bulk flows (application data).
    pub bulk_sent: u64,
    /// Accepted flows deallocated unread because their allocator asked for
    /// in-order delivery (an FRCT flow, which Cicada does not use).
    pub refused: u64,
}

/// A link over Ouroboros flows; peers are addressed by name.
///
/// Made by [`crate::SwarmPeer::bind_ouroboros`]; usable on its own too.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cicada::Error> {
/// use cicada::link::OuroborosLink;
/// use cicada::PeerAddr;
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
    threads: Vec<std::thread::JoinHandle<()>>,
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
            let set = FlowSet::new()?;
            Name::bind(&n, &[&l]).map(|g| (g, set))
        })
        .await
        .unwrap_or(Err(ouro::Error::Deallocated));
        let (name_guard, set) = match bound {
            Ok(g) => g,
            Err(e) => {
                IN_USE.store(false, Ordering::Release);
                return Err(e.into());
            }
        };
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        let shared = Arc::new(Shared {
            me: name.to_owned(),
            epoch: Instant::now(),
            classes: class_flows(),
            routes: DashMap::new(),
            slots: DashMap::new(),
            graveyard: Mutex::new(Vec::new()),
            fresh: Mutex::new(Vec::new()),
            set: Arc::new(set),
            backoff: Mutex::new(HashMap::new()),
            incoming: tx,
            sink: OnceLock::new(),
            runtime,
            next_gen: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            counters: Arc::new(Counters::default()),
        });
        let mut threads = Vec::new();
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("cicada-ouro-accept".into())
            .spawn(move || accept_loop(s))
            .and_then(|t| {
                threads.push(t);
                let s = shared.clone();
                std::thread::Builder::new()
                    .name("cicada-ouro-read".into())
                    .spawn(move || read_loop(s))
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                shared.stop.store(true, Ordering::Release);
                for t in threads {
                    let _ = t.join();
                }
                drop(name_guard);
                IN_USE.store(false, Ordering::Release);
                return Err(crate::Error::Io(e));
            }
        }
        tracing::debug!(%name, %layer, "ouroboros link bound");
        Ok(OuroborosLink {
            shared,
            name: Mutex::new(Some(name_guard)),
            incoming: tokio::sync::Mutex::new(rx),
            threads,
        })
    }

    /// The name this link is bound to.
    pub fn name(&self) -> &str {
        &self.shared.me
    }

    /// Whether links bound from now on (in this process) open two flows
    /// per neighbour, a low-delay one for maintenance, lookups and
    /// confirmations and a bandwidth one for application data (`true`, the
    /// default), or carry everything on one flow (`false`). The default can
    /// be set with `CICADA_OUROBOROS_CLASSES=1` (one flow) or `2`. Peers
    /// of either setting talk to each other.
    pub fn set_class_flows(two: bool) {
        CLASSES.store(if two { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// Whether this link opens a flow per traffic class (see
    /// [`set_class_flows`](Self::set_class_flows)).
    pub fn class_flows(&self) -> bool {
        self.shared.classes
    }

    /// What the link counted so far.
    pub fn stats(&self) -> FlowStats {
        self.stats_handle().get()
    }

    /// A handle that reads the counters after the link has moved.
    pub(crate) fn stats_handle(&self) -> FlowStatsHandle {
        FlowStatsHandle(self.shared.counters.clone())
    }
}

impl Drop for OuroborosLink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // The reader thread may wait for room in the incoming queue.
        self.incoming.get_mut().close();
        for t in self.threads.drain(..) {
            // The reader thread itself drops the link when the driver it
            // hands packets to ends while it runs the sink: it sees `stop`
            // on its next turn.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        self.shared.routes.clear();
        self.shared.slots.clear();
        lock(&self.shared.graveyard).clear();
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
        OuroborosLink::send_to(self, bytes, to).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, PeerAddr)> {
        OuroborosLink::recv_from(self, buf).await
    }

    fn try_recv_run(&self, buf: &mut [u8]) -> Option<io::Result<(usize, usize, PeerAddr)>> {
        self.try_recv_from(buf)
            .map(|r| r.map(|(n, from)| (n, n.max(1), from)))
    }

    /// The reader thread hands packets to `sink` from now on, up to
    /// 64 at a time (`READ_BATCH`). Sends on that thread never wait but for
    /// a yield (a full pool or ring is retried `WRITE_RETRIES` times,
    /// then handed back to the driver with `WouldBlock`).
    fn deliver_to(&self, sink: LinkSink<PeerAddr>) -> bool {
        self.shared.sink.set(sink).is_ok()
    }
}

impl OuroborosLink {
    /// Sends one datagram to the peer named `to`, on its flow (allocated
    /// first if there is none: the datagram waits behind the allocation).
    pub async fn send_to(&self, bytes: &[u8], to: &PeerAddr) -> io::Result<()> {
        let PeerAddr::Ouroboros(name) = to else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{to} is not an Ouroboros name"),
            ));
        };
        let class = self.shared.class_for(bytes);
        let Some(slot) = self.shared.route(name, class, bytes)? else {
            return Ok(()); // queued behind the allocation
        };
        let mut tries = 0;
        let mut waited = false;
        loop {
            match slot.flow().write(bytes) {
                Ok(_) => {
                    self.shared.touch(&slot);
                    self.shared.count_sent(slot.class);
                    return Ok(());
                }
                Err(ouro::Error::WouldBlock { .. })
                    if tries < WRITE_RETRIES && self.shared.may_wait(&slot) =>
                {
                    tries += 1;
                    tokio::task::yield_now().await;
                }
                Err(ouro::Error::WouldBlock { .. })
                    if ON_READER.with(|r| r.get())
                        || tokio::runtime::Handle::try_current().is_err() =>
                {
                    // The reader thread (or no runtime): it must not wait.
                    // `WouldBlock` hands the datagram back to the driver,
                    // which leaves it to its background task.
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Err(ouro::Error::WouldBlock { .. }) => {
                    if !self.shared.may_wait(&slot) {
                        self.shared.drop_one();
                        self.shared
                            .counters
                            .over_budget
                            .fetch_add(1, Ordering::Relaxed);
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "no room in the flow to {name}: waited {WRITE_WAIT:?} this second"
                            ),
                        ));
                    }
                    if !waited {
                        waited = true;
                        self.shared
                            .counters
                            .write_waits
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    let t = Instant::now();
                    tokio::time::sleep(WRITE_PAUSE).await;
                    let ms = (t.elapsed().as_millis() as u64).max(1);
                    slot.waited_ms.fetch_add(ms, Ordering::Relaxed);
                }
                Err(e) => {
                    self.shared.drop_one();
                    if e.is_flow_dead() {
                        tracing::debug!(peer = %slot.peer, error = %e, "flow down on write");
                        self.shared.close(&slot, false);
                    }
                    return Err(e.into());
                }
            }
        }
    }

    /// Waits for the next datagram the reader thread queued (a link not
    /// under a driver queues what it reads); its length in `buf` and its
    /// sender. Cancel-safe.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, PeerAddr)> {
        let mut rx = self.incoming.lock().await;
        loop {
            // Cancel-safe: a datagram is either still in the queue or returned.
            let Some((data, from)) = rx.recv().await else {
                return Err(io::Error::new(io::ErrorKind::NotConnected, "link closed"));
            };
            if data.len() > buf.len() {
                self.shared.drop_one();
                continue;
            }
            buf[..data.len()].copy_from_slice(&data);
            return Ok((data.len(), PeerAddr::Ouroboros(from)));
        }
    }

    /// A datagram the reader thread queued already, without waiting.
    fn try_recv_from(&self, buf: &mut [u8]) -> Option<io::Result<(usize, PeerAddr)>> {
        let mut rx = self.incoming.try_lock().ok()?;
        loop {
            let (data, from) = rx.try_recv().ok()?;
            if data.len() > buf.len() {
                self.shared.drop_one();
                continue;
            }
            buf[..data.len()].copy_from_slice(&data);
            return Some(Ok((data.len(), PeerAddr::Ouroboros(from))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_garbage() {
        assert_eq!(
            parse_hello(&hello("node-3", None)),
            Some(("node-3".to_owned(), None))
        );
        for c in [Class::Control, Class::Bulk] {
            assert_eq!(
                parse_hello(&hello("node-3", Some(c))),
                Some(("node-3".to_owned(), Some(c)))
            );
        }
        assert_eq!(parse_hello(b""), None);
        assert_eq!(parse_hello(b"CICADA-H"), None);
        assert_eq!(parse_hello(b"CICADA-H\x01"), None);
        assert_eq!(parse_hello(b"CICADA-H\x02"), None);
        assert_eq!(parse_hello(b"CICADA-H\x02\x00"), None);
        assert_eq!(parse_hello(b"CICADA-H\x02\x07abc"), None);
        assert_eq!(parse_hello(b"CICADA-H\x03abc"), None);
        assert_eq!(parse_hello(b"CICADA-H\x01a\0b"), None);
        assert_eq!(parse_hello(b"CICADA-H\x01\xff\xfe"), None);
        let long = hello(&"x".repeat(300), None);
        assert_eq!(parse_hello(&long), None);
    }

    /// The class follows the core's kind byte: `Data` is bulk, every other
    /// kind (maintenance, lookups, confirmations) is control; a sealed
    /// datagram (no Cicada header) goes by size.
    #[test]
    fn class_of_each_kind() {
        use chord::wire::{Data, DataHeader, Message, Mode, NodeRef};
        use chord::Hash;
        let me = NodeRef::new(Hash::of("a"), PeerAddr::Ouroboros("a".into()));
        let data = Message::Data(Data {
            header: DataHeader {
                txn: 1,
                msg: 2,
                origin: me.clone(),
                target: Hash::of("b"),
                mode: Mode::Node,
                limit: Hash::of("b"),
                hops: 0,
                last_hop: true,
                frag: 0,
                frags: 1,
            },
            payload: Bytes::from_static(b"hello"),
        });
        assert_eq!(data.kind(), DATA_KIND);
        assert_eq!(Class::of(&data.encode()), Class::Bulk);
        let delivered = chord::wire::encode_delivered(&me, &[]);
        assert_eq!(Class::of(&delivered), Class::Control);
        for kind in (0u8..=16).filter(|&k| k != DATA_KIND) {
            let mut d = chord::MAGIC.to_vec();
            d.extend_from_slice(&[chord::VERSION, kind, 0, 0]);
            assert_eq!(Class::of(&d), Class::Control, "kind {kind}");
        }
        assert_eq!(Class::of(&[0u8; SEALED_BULK - 1]), Class::Control);
        assert_eq!(Class::of(&[0u8; SEALED_BULK]), Class::Bulk);
        assert_eq!(Class::of(b""), Class::Control);
    }

    /// Both classes are unreliable: no FRCT (`in_order` off), no
    /// retransmission (`loss` not 0), and the peer timeout of every flow.
    #[test]
    fn class_qos_is_unreliable() {
        for c in [Class::Control, Class::Bulk] {
            let q = c.qos();
            assert!(!q.in_order, "{c:?}");
            assert_ne!(q.loss, 0, "{c:?}");
            assert_eq!(q.timeout, FLOW_PEER_TIMEOUT_MS, "{c:?}");
        }
        assert!(Class::Control.qos().delay < Class::Bulk.qos().delay);
        assert!(Class::Bulk.qos().bandwidth > Class::Control.qos().bandwidth);
    }
}
