//! API: the socket-like calls; commands handed to the driver, no protocol state here.
//!
//! [`SwarmPeer`]: a member of a Cicada swarm, used like a socket.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chord::{Hash, Path};
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::addr::PeerAddr;
use crate::config::PeerConfig;
use crate::driver::{Command, Counters, Handle, Incoming, Shared, Snapshot, StoreCall};
use crate::error::{Error, Operation, Result};
use crate::hooks::{HookQueue, Hooks};
use crate::link::{FlowStats, FlowStatsHandle, OuroborosLink};
use crate::link::{Link, PeerLink, UdpLink};
use crate::nat::NatStatus;
use crate::remote::{node_id, Delivery, Received, RemoteNode, Route, SendOptions, SendTarget};
use crate::secure::SecureStats;
use crate::transport::Transport;
use crate::view::SelfView;

/// Counters of a peer: the core's and the peer's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// The Chord core's counters (datagrams, malformed ones dropped, …).
    pub core: chord::Stats,
    /// Application messages received.
    pub received: u64,
    /// Broadcasts and unconfirmed datagrams (`send_datagram`) dropped
    /// because the receive queue was full (`core.dropped_no_room`). A
    /// confirmed message is never dropped so: it is refused as busy and
    /// its sender retries (`core.refused_busy` counts those refusals).
    pub recv_overflow: u64,
    /// `send` and `new_peer` hook calls dropped because the hook queue was
    /// full (each reported to [`crate::Hooks::on_dropped`]); `recv` hook
    /// calls are never dropped.
    pub hooks_dropped: u64,
    /// Errors the link reported on sending or receiving.
    pub link_errors: u64,
    /// Sends handed to the link: one per datagram, or one per run of
    /// datagrams of one size to one address (a single system call where
    /// the system segments them, UDP GSO). Against
    /// `core.datagrams_out`, how well sends were batched.
    pub link_sends: u64,
    /// Datagrams the link could not take on the thread that sent them and
    /// that waited for the background task instead (an Ouroboros reader
    /// thread finding a flow's ring full: it must not wait, since it is the
    /// thread that reads). They are sent, not lost. Counted each time a
    /// datagram is left so (one the reader thread takes up again and finds
    /// the ring still full counts twice).
    pub link_parked: u64,
    /// Times the peer's background task woke: for a datagram, a timer, a
    /// call handed to it under load, or a wake-up from a call (a deadline
    /// moved earlier). A lone call over UDP receives its own reply and
    /// does not wake it, so against `core.datagrams_in` this shows how
    /// much of the traffic cost a task wake-up (a thread wake-up, where
    /// the runtime's threads are idle).
    pub driver_wakeups: u64,
    /// The keyed link's counters (handshakes, datagrams dropped for a bad
    /// MAC, a replay, an unknown session…); `None` without a swarm key.
    pub secure: Option<SecureStats>,
    /// The Ouroboros link's counters (flows allocated and accepted,
    /// datagrams dropped, the largest batch of flow events, …); `None`
    /// over UDP.
    pub ouroboros: Option<FlowStats>,
}

struct Bound {
    /// Its identity, and where others see it.
    view: Arc<SelfView<PeerAddr>>,
    local: PeerAddr,
    /// The driver's shared side; taken by `close`, so that the link is
    /// released once the calls under way return.
    handle: RwLock<Option<Driver>>,
    inbox: tokio::sync::Mutex<mpsc::Receiver<Incoming<PeerAddr>>>,
    counters: Arc<Counters>,
    /// The Ouroboros link's counters, over Ouroboros.
    ouroboros: Option<FlowStatsHandle>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The gateway mapping of the socket's port, removed on close.
    mapping: tokio::sync::Mutex<Option<traversal::PortMapping>>,
    /// The mapping's external address.
    mapped: Option<SocketAddr>,
    /// Ids of the addresses sent to (a SHA-256 of the address text each),
    /// so that a stream of sends to one peer derives its id once. FxHash:
    /// at most [`ID_MEMORY`] entries, so even addresses chosen to collide
    /// cost a lookup no more than that many comparisons.
    ids: Mutex<FxHashMap<PeerAddr, Hash>>,
}

/// Most addresses whose ids a peer remembers; past it the memory is cleared.
const ID_MEMORY: usize = 256;

impl Bound {
    /// The driver's handle; `None` once closed.
    fn handle(&self) -> Option<Driver> {
        self.handle
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The id of the peer at `addr` ([`node_id`]), remembered.
    fn id_of(&self, addr: PeerAddr) -> Hash {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = ids.get(&addr) {
            return *id;
        }
        let id = node_id(&addr);
        if ids.len() >= ID_MEMORY {
            ids.clear();
        }
        ids.insert(addr, id);
        id
    }
}

/// A member of a Cicada swarm, used like a socket: `bind` first (to a UDP
/// address, or [`bind_ouroboros`](Self::bind_ouroboros) to a name in an
/// Ouroboros layer, or [`bind_transport`](Self::bind_transport) to choose),
/// then `connect` to join an existing swarm (without it the peer is the first
/// member of its own), then `send`, `recv`, `broadcast`.
///
/// Every method but `bind` takes `&self`, so a peer can be shared (in an
/// `Arc`) between a task that receives and others that send.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cicada::Error> {
/// use std::time::Duration;
/// use cicada::SwarmPeer;
///
/// let mut first = SwarmPeer::new(cicada::Hooks::new());
/// first.bind("127.0.0.1:0".parse().unwrap()).await?;
/// let mut second = SwarmPeer::new(cicada::Hooks::new());
/// second.bind("127.0.0.1:0".parse().unwrap()).await?;
/// second.connect(first.listener()?, Duration::from_secs(5)).await?;
/// let route = second.get_route(first.hash()?).await?;
/// assert_eq!(route.owner.addr, first.listener()?);
/// first.close().await;
/// second.close().await;
/// # Ok(()) }
/// ```
pub struct SwarmPeer {
    cfg: PeerConfig,
    hooks: Hooks,
    bound: Option<Bound>,
}

impl std::fmt::Debug for SwarmPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("SwarmPeer");
        if let Some(b) = &self.bound {
            let me = b.view.me();
            d.field("id", &me.id).field("addr", &me.addr);
        } else {
            d.field("bound", &false);
        }
        d.finish()
    }
}

impl SwarmPeer {
    /// An unbound peer with default configuration and these hooks.
    pub fn new(hooks: Hooks) -> SwarmPeer {
        SwarmPeer::with_config(PeerConfig::default(), hooks)
    }

    /// An unbound peer with this configuration and these hooks.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cfg = cicada::PeerConfig::default().stabilize_interval(Duration::from_millis(200));
    /// let peer = cicada::SwarmPeer::with_config(cfg, cicada::Hooks::new());
    /// assert!(matches!(peer.hash(), Err(cicada::Error::NotBound)));
    /// ```
    pub fn with_config(cfg: PeerConfig, hooks: Hooks) -> SwarmPeer {
        SwarmPeer {
            cfg,
            hooks,
            bound: None,
        }
    }

    /// Binds to `local` and starts the peer; its id is derived from the
    /// address it is bound to (with port 0, the port picked).
    pub async fn bind(&mut self, local: SocketAddr) -> Result<()> {
        self.bind_inner(local, None).await
    }

    /// Binds to `local` but announces `external` to other peers (an address
    /// mapped on a NAT, see [`crate::traversal`]); the id is derived from
    /// `external`.
    pub async fn bind_with_external(
        &mut self,
        local: SocketAddr,
        external: SocketAddr,
    ) -> Result<()> {
        self.bind_inner(local, Some(external)).await
    }

    /// Binds to `local`, maps the socket's port on the NAT gateway (UPnP
    /// IGD, then NAT-PMP, see [`crate::traversal`]), and announces the mapped
    /// external address, from which the id is derived. The mapping is
    /// renewed while the peer lives and removed by [`close`](Self::close).
    /// Returns the external address.
    ///
    /// ```no_run
    /// # async fn f() -> cicada::Result<()> {
    /// let mut peer = cicada::SwarmPeer::new(cicada::Hooks::new());
    /// let external = peer
    ///     .bind_with_mapping("0.0.0.0:0".parse().unwrap(), &cicada::traversal::Options::default())
    ///     .await?;
    /// println!("reachable at {external}");
    /// # Ok(()) }
    /// ```
    pub async fn bind_with_mapping(
        &mut self,
        local: SocketAddr,
        options: &traversal::Options,
    ) -> Result<SocketAddr> {
        self.check_bindable()?;
        let link = UdpLink::bind(local).await?;
        let port = link.local_addr()?.port();
        let mapping =
            traversal::PortMapping::with_options(port, traversal::Protocol::Udp, options).await?;
        let external = mapping.external_addr();
        tracing::info!(%external, method = %mapping.method(), "port mapped");
        self.start(PeerLink::Udp(link), Some(external.into()), Some(mapping))?;
        Ok(external)
    }

    /// Binds to the Ouroboros name `name` in `layer`: creates the name in the
    /// IRMd if needed, registers it in the layer, binds this process to it,
    /// accepts flows, and allocates flows to other peers' names when it
    /// first sends to them. The id is SHA-256 of the name. One peer per
    /// process can be bound to Ouroboros (a process cannot allocate a flow
    /// to a name it is bound to, and accepting cannot tell two names apart).
    /// Fails with [`Error::Ouroboros`] when the library or the IRMd is
    /// missing; [`bind_transport`](Self::bind_transport) with
    /// [`Transport::Auto`] falls back to UDP instead.
    ///
    /// ```no_run
    /// # async fn f() -> cicada::Result<()> {
    /// let mut peer = cicada::SwarmPeer::new(cicada::Hooks::new());
    /// peer.bind_ouroboros("alice", "local_layer").await?;
    /// peer.connect(cicada::PeerAddr::ouroboros("bob").unwrap(), std::time::Duration::from_secs(5)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn bind_ouroboros(&mut self, name: &str, layer: &str) -> Result<()> {
        self.check_bindable()?;
        let link = OuroborosLink::bind(name, layer).await?;
        self.start(PeerLink::Ouroboros(link), None, None)
    }

    /// Binds over the chosen transport and returns the address the peer is
    /// reached at. With [`Transport::Auto`], Ouroboros is used when the
    /// library loads and the IRMd answers, UDP otherwise; a log line (at
    /// `info`) says which and why.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cicada::Result<()> {
    /// use cicada::{SwarmPeer, Transport};
    /// let mut peer = SwarmPeer::new(cicada::Hooks::new());
    /// let addr = peer.bind_transport(Transport::Udp("127.0.0.1:0".parse().unwrap())).await?;
    /// assert!(addr.udp().is_some());
    /// # peer.close().await;
    /// # Ok(()) }
    /// ```
    pub async fn bind_transport(&mut self, transport: Transport) -> Result<PeerAddr> {
        match transport {
            Transport::Udp(a) => self.bind(a).await?,
            Transport::Ouroboros { name, layer } => self.bind_ouroboros(&name, &layer).await?,
            Transport::Auto { name, layer, udp } => {
                self.check_bindable()?;
                let ouro = tokio::task::spawn_blocking(cicada_ouroboros::check)
                    .await
                    .unwrap_or(Err(cicada_ouroboros::Error::Deallocated));
                match ouro {
                    Ok(()) => {
                        tracing::info!(%name, %layer, "transport: Ouroboros (library loaded, IRMd answers)");
                        self.bind_ouroboros(&name, &layer).await?
                    }
                    Err(e) => {
                        tracing::info!(%udp, reason = %e, "transport: UDP (Ouroboros unavailable)");
                        self.bind(udp).await?
                    }
                }
            }
        }
        self.listener()
    }

    fn check_bindable(&self) -> Result<()> {
        if self.bound.is_some() {
            return Err(Error::AlreadyBound);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        self.cfg.validate()?;
        Ok(())
    }

    async fn bind_inner(&mut self, local: SocketAddr, external: Option<SocketAddr>) -> Result<()> {
        self.check_bindable()?;
        let link = UdpLink::bind(local).await?;
        self.start(PeerLink::Udp(link), external.map(PeerAddr::from), None)
    }

    /// Starts the driver on a bound link.
    fn start(
        &mut self,
        link: PeerLink,
        external: Option<PeerAddr>,
        mapping: Option<traversal::PortMapping>,
    ) -> Result<()> {
        let local = link.local_addr()?;
        // Bound to all interfaces with nothing to announce: the address is
        // a placeholder until the first contact says where it sees us.
        let provisional =
            external.is_none() && local.udp().is_some_and(|a| a.ip().is_unspecified());
        let external = external.unwrap_or_else(|| local.clone());
        let me = RemoteNode::new(node_id(&external), external.clone());
        let mut view = SelfView::new(me.clone(), provisional);
        if let Some(udp) = local.udp() {
            // The core's hole punching needs to know whether this peer's NAT
            // maps per destination (it then answers punches "cannot work").
            let own = if udp.ip().is_unspecified() {
                crate::nat::own_ips()
            } else {
                Vec::new()
            };
            let mapped = mapping.as_ref().map(|m| m.external_addr());
            view = view.with_reach(Box::new(move |observed: &[(PeerAddr, PeerAddr)]| {
                let observations: Vec<(SocketAddr, SocketAddr)> = observed
                    .iter()
                    .filter_map(|(by, seen)| Some((by.udp()?, seen.udp()?)))
                    .collect();
                crate::nat::classify(udp, &own, mapped, &observations).reach()
            }));
        }
        let view = Arc::new(view);
        let seed = self.cfg.seed.unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ u64::from_be_bytes(me.id.to_bytes()[..8].try_into().unwrap_or([0; 8]))
        });
        let counters = Arc::new(Counters::default());
        let (in_tx, in_rx) = mpsc::channel(self.cfg.recv_queue);
        let hooks = HookQueue::start(
            self.hooks.clone(),
            self.cfg.hook_queue,
            counters.hooks_dropped.clone(),
        );
        let cfg = self.cfg.clone();
        let parts = (view.clone(), cfg, seed, in_tx, hooks, counters.clone());
        let ouroboros = match &link {
            PeerLink::Ouroboros(l) => Some(l.stats_handle()),
            PeerLink::Udp(_) => None,
        };
        // Keyed or not, over either link: one driver, whose stack seals
        // when the configuration holds a swarm key.
        let (handle, task) = spawn_driver(link, parts)?;
        tracing::debug!(id = %me.id.short(), %local, %external, "bound");
        self.bound = Some(Bound {
            view,
            local,
            handle: RwLock::new(Some(handle)),
            inbox: tokio::sync::Mutex::new(in_rx),
            counters,
            ouroboros,
            task: Mutex::new(Some(task)),
            mapped: mapping.as_ref().map(|m| m.external_addr()),
            mapping: tokio::sync::Mutex::new(mapping),
            ids: Mutex::new(FxHashMap::default()),
        });
        Ok(())
    }

    fn bound(&self) -> Result<&Bound> {
        self.bound.as_ref().ok_or(Error::NotBound)
    }

    /// Runs a command through the driver and waits for its reply (see
    /// `Shared::call`).
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command<PeerAddr>,
    ) -> Result<T> {
        let handle = self.bound()?.handle().ok_or(Error::Closed)?;
        handle.call(make).await
    }

    /// Joins the swarm that the peer at `bootstrap` (a `SocketAddr` or a
    /// [`PeerAddr`], on this peer's transport) belongs to, waiting at
    /// most `timeout`. Fails with [`Error::Join`] (unreachable, version
    /// mismatch, id in use) or [`Error::Timeout`] (`op`:
    /// [`Operation::Connect`]), and with a swarm key with
    /// [`Error::NoHandshake`] when no authenticated link to `bootstrap` came
    /// up (it holds another key, or none); after a failure the peer is
    /// again the only member of its own swarm and may try again. The join
    /// itself is bounded by the core's `lookup_timeout`; when `timeout` is
    /// shorter and passes first, the join goes on in the background and may
    /// still complete (`peers()` tells).
    pub async fn connect(
        &self,
        bootstrap: impl Into<PeerAddr>,
        timeout: Duration,
    ) -> Result<RemoteNode> {
        let bootstrap: PeerAddr = bootstrap.into();
        if let (Some(local), Some(remote)) = (self.bound()?.local.udp(), bootstrap.udp()) {
            if !family_reaches(local, remote) {
                return Err(Error::AddressFamily { local, remote });
            }
        }
        let to = bootstrap.clone();
        let ask = self.ask(|reply| Command::Join {
            bootstrap: to,
            reply,
        });
        let r = match tokio::time::timeout(timeout, ask).await {
            Ok(r) => r?,
            Err(_) => Err(Error::Timeout {
                op: Operation::Connect,
                after: timeout,
            }),
        };
        match (&r, self.bound()?.handle()) {
            // Say why when the keyed link never got through.
            (Err(Error::Timeout { .. } | Error::Join(chord::JoinError::Unreachable)), Some(h))
                if !h.has_session(&bootstrap) =>
            {
                Err(Error::NoHandshake(bootstrap))
            }
            _ => r,
        }
    }

    /// Like [`connect`](Self::connect), to a host name and port.
    pub async fn connect_host(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<RemoteNode> {
        let addr = resolve(host, port).await?;
        self.connect(addr, timeout).await
    }

    /// Sends `data` to `target` and waits until the destination confirmed it:
    /// [`send_with`](Self::send_with) with the default [`SendOptions`] (no
    /// extra copies; waiting until the peer's
    /// [`send_timeout`](PeerConfig::send_timeout) at most).
    ///
    /// A target naming a peer (an address, a `(host, port)`, a
    /// [`RemoteNode`], a `&SwarmPeer`) reaches exactly that peer or fails
    /// when it is gone; a [`Hash`](struct@Hash) reaches whichever live peer owns the key.
    ///
    /// **`Ok` means received.** The destination confirms a message only
    /// once it is in its application's hands: queued for `recv` (and for
    /// the `recv` hook, when one is set), exactly once however many copies
    /// or retries arrive. While the destination's receive queue is full it
    /// answers "busy" instead, and this send tries again (after 10 ms,
    /// doubling to at most 250 ms) until there is room or the send timeout
    /// ([`PeerConfig::send_timeout`], 10 s by default) passes; then it fails
    /// with [`chord::SendError::ReceiverBusy`] and the message was not
    /// delivered. Other failures: [`chord::SendError::NoSuchNode`] (the
    /// target peer is gone), [`chord::SendError::Timeout`] (no answer;
    /// the message may or may not have arrived, as with any lost
    /// acknowledgement), and refusals before anything is sent (not joined,
    /// too large, too many in flight).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cicada::Error> {
    /// use std::time::Duration;
    /// use cicada::SwarmPeer;
    ///
    /// let mut a = SwarmPeer::new(cicada::Hooks::new());
    /// a.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// let mut b = SwarmPeer::new(cicada::Hooks::new());
    /// b.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// b.connect(a.listener()?, Duration::from_secs(5)).await?;
    /// let delivery = b.send(a.listener()?, "hello").await?;
    /// assert_eq!(delivery.to.addr, a.listener()?);
    /// let got = a.recv().await?;
    /// assert_eq!((got.from.addr, &got.data[..]), (b.listener()?, &b"hello"[..]));
    /// # Ok(()) }
    /// ```
    pub async fn send(
        &self,
        target: impl Into<SendTarget>,
        data: impl Into<Bytes>,
    ) -> Result<Delivery> {
        self.send_confirmed(target.into(), data.into(), 0).await
    }

    /// Like [`send`](Self::send), with [`SendOptions`]: extra copies
    /// routed through other peers (`duplicates`), for resilience against
    /// peers that drop messages, and the longest this call waits
    /// (`timeout`).
    ///
    /// When `timeout` passes before the destination confirmed, the call
    /// fails with [`Error::Timeout`] ([`Operation::Send`]). The message is
    /// not withdrawn: the peer goes on trying until its own
    /// [`send_timeout`](PeerConfig::send_timeout), so it may still arrive,
    /// as after any lost acknowledgement. A `timeout` longer than
    /// `send_timeout` does not extend those attempts.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cicada::Error> {
    /// use std::time::Duration;
    /// use cicada::{SendOptions, SwarmPeer};
    ///
    /// let mut a = SwarmPeer::new(cicada::Hooks::new());
    /// a.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// let mut b = SwarmPeer::new(cicada::Hooks::new());
    /// b.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// b.connect(a.listener()?, Duration::from_secs(5)).await?;
    /// let options = SendOptions::new().duplicates(1).timeout(Duration::from_secs(2));
    /// b.send_with(a.listener()?, "twice routed, once received", options).await?;
    /// assert_eq!(&a.recv().await?.data[..], b"twice routed, once received");
    /// # Ok(()) }
    /// ```
    pub async fn send_with(
        &self,
        target: impl Into<SendTarget>,
        data: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<Delivery> {
        let sent = self.send_confirmed(target.into(), data.into(), options.duplicates);
        match options.timeout {
            None => sent.await,
            Some(after) => tokio::time::timeout(after, sent)
                .await
                .unwrap_or(Err(Error::Timeout {
                    op: Operation::Send,
                    after,
                })),
        }
    }

    /// A confirmed send, waiting for its outcome.
    async fn send_confirmed(
        &self,
        target: SendTarget,
        payload: Bytes,
        duplicates: u8,
    ) -> Result<Delivery> {
        let target = self.target(target).await?;
        let (to, hops) = self
            .ask(|reply| Command::Send {
                target,
                payload,
                duplicates,
                reply,
            })
            .await??;
        Ok(Delivery { to, hops })
    }

    /// Sends `data` to `target` once, unconfirmed, the way a UDP socket
    /// sends: no acknowledgement at any hop, no retry, no confirmation,
    /// and nothing kept anywhere for it. For state that the next message
    /// makes stale anyway (positions in a game, sensor readings).
    ///
    /// `Ok` says the datagram left this peer, not that it arrived; a
    /// datagram lost on the way, or dropped by a peer with no way on, is
    /// gone without a word (counted in the dropping peer's
    /// `core.datagrams_dropped`), and so is one that finds the receiver's
    /// queue full (counted in its `recv_overflow`). The receiver gets it
    /// from `recv` like any message. It must fit one datagram: at most `max_fragment` bytes
    /// (1,200 by default), else [`Error::Send`] with
    /// [`TooLarge`](chord::SendError::TooLarge). Fails at once with
    /// `NoSuchNode` or `NoRoute` when this peer already knows it cannot
    /// go on. Targets as for [`send`](Self::send).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cicada::Error> {
    /// use std::time::Duration;
    /// use cicada::SwarmPeer;
    ///
    /// let mut a = SwarmPeer::new(cicada::Hooks::new());
    /// a.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// let mut b = SwarmPeer::new(cicada::Hooks::new());
    /// b.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// b.connect(a.listener()?, Duration::from_secs(5)).await?;
    /// b.send_datagram(a.listener()?, b"position 3,4").await?;
    /// let got = a.recv_timeout(Duration::from_secs(5)).await?;
    /// assert_eq!(got.map(|m| m.data.to_vec()), Some(b"position 3,4".to_vec()));
    /// # Ok(()) }
    /// ```
    pub async fn send_datagram(
        &self,
        target: impl Into<SendTarget>,
        data: impl AsRef<[u8]>,
    ) -> Result<()> {
        let target = self.target(target.into()).await?;
        let handle = self.bound()?.handle().ok_or(Error::Closed)?;
        handle.send_unconfirmed(target, data.as_ref()).await
    }

    /// The core's target for `t`: a peer's id (derived from its address),
    /// or a key.
    async fn target(&self, t: SendTarget) -> Result<chord::Target> {
        Ok(match t {
            SendTarget::Addr(a) => chord::Target::Node(self.bound()?.id_of(a)),
            SendTarget::Host(h, p) => chord::Target::Node(node_id(&resolve(&h, p).await?.into())),
            SendTarget::Node(id) => chord::Target::Node(id),
            SendTarget::Key(k) => chord::Target::Key(k),
            SendTarget::Unbound => return Err(Error::NotBound),
        })
    }

    /// Sends `data` to every other peer of the swarm, each receiving it once.
    /// Resolves when the broadcast is accepted: nobody confirms a
    /// broadcast, and a peer whose receive queue is full drops it (counted
    /// in its `recv_overflow`).
    pub async fn broadcast(&self, data: impl Into<Bytes>) -> Result<()> {
        let payload = data.into().to_vec();
        self.ask(|reply| Command::Broadcast { payload, reply })
            .await?
    }

    /// Waits for the next application message: its sender, its data, and
    /// whether more are queued already (see [`Received`]). Fails with [`Error::Closed`] once the
    /// peer is closed and the queue is empty.
    pub async fn recv(&self) -> Result<Received> {
        let b = self.bound()?;
        let mut inbox = b.inbox.lock().await;
        let m = inbox.recv().await.ok_or(Error::Closed)?;
        Ok(Received {
            from: m.from,
            data: m.data,
            more: !inbox.is_empty(),
        })
    }

    /// The next application message if one is queued, without waiting.
    pub fn try_recv(&self) -> Result<Option<Received>> {
        let b = self.bound()?;
        let Ok(mut inbox) = b.inbox.try_lock() else {
            return Ok(None); // another task is receiving
        };
        match inbox.try_recv() {
            Ok(m) => Ok(Some(Received {
                from: m.from,
                data: m.data,
                more: !inbox.is_empty(),
            })),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(Error::Closed),
        }
    }

    /// Like [`recv`](Self::recv), but gives up after `timeout` with `Ok(None)`.
    pub async fn recv_timeout(&self, timeout: Duration) -> Result<Option<Received>> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Looks up the live peer responsible for `key`, and the hops it took.
    pub async fn get_route(&self, key: Hash) -> Result<Route> {
        let (owner, hops) = self.ask(|reply| Command::Lookup { key, reply }).await??;
        Ok(Route { owner, hops })
    }

    async fn store(&self, call: StoreCall) -> Result<chord::StoreEvent<PeerAddr>> {
        let op = match &call {
            StoreCall::Put { .. } | StoreCall::PutSigned { .. } => Operation::Put,
            StoreCall::Get { .. } => Operation::Get,
            StoreCall::Announce { .. } => Operation::Announce,
            StoreCall::Find { .. } => Operation::Find,
        };
        let call = Box::new(call);
        match self.ask(|reply| Command::Store { call, reply }).await?? {
            chord::StoreEvent::Failed {
                refused: Some(r), ..
            } => Err(Error::StoreRefused(r)),
            chord::StoreEvent::Failed { refused: None, .. } => Err(Error::Timeout {
                op,
                after: self.cfg.chord.store.op_timeout,
            }),
            e => Ok(e),
        }
    }

    /// Stores `value` (at most 64 KiB) under `key` in the swarm's DHT for
    /// `ttl` (zero: one hour), on the key's owner and the next replicas
    /// on the ring (see `docs/storage.md`). Values are immutable: a key
    /// holds every distinct value put under it, each until its TTL runs
    /// out; the writer republishes to keep one longer. Fails with
    /// [`Error::StoreRefused`] (quota, size) or [`Error::Timeout`].
    pub async fn put(&self, key: Hash, value: impl Into<Vec<u8>>, ttl: Duration) -> Result<()> {
        let value = value.into();
        let ttl_s = ttl.as_secs().min(u32::MAX as u64) as u32;
        self.store(StoreCall::Put { key, value, ttl_s })
            .await
            .map(|_| ())
    }

    /// Stores version `seq` of the mutable value signed with the ed25519
    /// secret key `secret` under `salt`, and returns its key,
    /// H(public key, salt). With `cas`, the owner stores it only if the
    /// version it holds is `cas` (0: none). Replicas verify the signature
    /// and refuse older versions ([`Error::StoreRefused`]).
    pub async fn put_signed(
        &self,
        secret: &[u8; 32],
        salt: &[u8],
        seq: u64,
        value: impl Into<Vec<u8>>,
        cas: Option<u64>,
    ) -> Result<Hash> {
        let record = chord::store::sign(secret, salt, seq, value.into());
        let key = record.key;
        self.store(StoreCall::PutSigned { record, cas }).await?;
        Ok(key)
    }

    /// The records stored under `key` (empty: none), each with its value
    /// and, for a signed one, its public key and sequence number.
    pub async fn get(&self, key: Hash) -> Result<Vec<chord::store::Record>> {
        match self.store(StoreCall::Get { key }).await? {
            chord::StoreEvent::Got { records, .. } => Ok(records),
            _ => Ok(Vec::new()),
        }
    }

    /// Listens to `key`: the records it holds now, then each new one
    /// (every distinct record once), until the receiver is dropped. A
    /// notification lost on the way is made up for at the subscription's
    /// next renewal (within a minute).
    pub async fn listen(&self, key: Hash) -> Result<mpsc::Receiver<chord::store::Record>> {
        let (updates, rx) = mpsc::channel(256);
        self.ask(|reply| Command::Listen {
            key,
            updates,
            reply,
        })
        .await??;
        Ok(rx)
    }

    /// Announces this peer under `topic` for `ttl` (zero: one hour):
    /// [`find`](Self::find) of the topic names it. Re-announce to stay.
    pub async fn announce(&self, topic: &[u8], ttl: Duration) -> Result<()> {
        let ttl_s = ttl.as_secs().min(u32::MAX as u64) as u32;
        let topic = topic.to_vec();
        self.store(StoreCall::Announce { topic, ttl_s })
            .await
            .map(|_| ())
    }

    /// The peers that announced `topic` and whose announcement has not
    /// expired.
    pub async fn find(&self, topic: &[u8]) -> Result<Vec<RemoteNode>> {
        let topic = topic.to_vec();
        match self.store(StoreCall::Find { topic }).await? {
            chord::StoreEvent::Peers { peers, .. } => Ok(peers),
            _ => Ok(Vec::new()),
        }
    }

    async fn snapshot(&self) -> Result<Snapshot<PeerAddr>> {
        self.ask(|reply| Command::Snapshot { reply }).await
    }

    /// Every peer in this peer's routing state, sorted by id.
    pub async fn peers(&self) -> Result<Vec<RemoteNode>> {
        Ok(self.snapshot().await?.peers)
    }

    /// Every peer in this peer's routing state, sorted by id, with the
    /// path this peer reaches it by: [`Path::Direct`] (at the address it
    /// announces: public, or a port mapped on its gateway),
    /// [`Path::Punched`] (through a hole punched in the NATs between them)
    /// or [`Path::Relayed`] (through a relay: the peer, or this one, sits
    /// behind a NAT that maps per destination; see `docs/nat.md`).
    pub async fn paths(&self) -> Result<Vec<(RemoteNode, Path)>> {
        let snap = self.snapshot().await?;
        Ok(snap.peers.into_iter().zip(snap.paths).collect())
    }

    /// The distinct fingers of this peer's routing table, nearest first
    /// (what `cicada demo` draws for its chosen node).
    pub async fn fingers(&self) -> Result<Vec<RemoteNode>> {
        Ok(self.snapshot().await?.fingers)
    }

    /// The next peer on the ring; `None` while alone.
    pub async fn successor(&self) -> Result<Option<RemoteNode>> {
        Ok(self.snapshot().await?.successor)
    }

    /// The previous peer on the ring, when known.
    pub async fn predecessor(&self) -> Result<Option<RemoteNode>> {
        Ok(self.snapshot().await?.predecessor)
    }

    /// This peer's metrics in the OpenMetrics text format (what Prometheus
    /// scrapes; `cicada node --metrics ADDR` serves it on `/metrics`):
    /// datagrams and bytes in and out, confirmed and failed sends (by
    /// reason), the hops of lookups, the ring's estimated size, neighbours,
    /// drops by reason, keyed sessions and Ouroboros flows. Every name
    /// starts with `cicada_`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cicada::Result<()> {
    /// let mut peer = cicada::SwarmPeer::new(cicada::Hooks::new());
    /// peer.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// let text = peer.metrics().await?;
    /// assert!(text.contains("cicada_datagrams_out_total"));
    /// # Ok(()) }
    /// ```
    pub async fn metrics(&self) -> Result<String> {
        let snap = self.snapshot().await?;
        let b = self.bound()?;
        let c = &b.counters;
        Ok(crate::metrics::render(crate::metrics::Inputs {
            me: b.view.me().id,
            core: &snap.stats,
            peers: &snap.peers,
            paths: &snap.paths,
            received: c.received.load(Ordering::Relaxed),
            hooks_dropped: c.hooks_dropped.load(Ordering::Relaxed),
            link_errors: c.link_errors.load(Ordering::Relaxed),
            link_sends: c.link_sends.load(Ordering::Relaxed),
            outcomes: &c.outcomes,
            secure: snap.secure.clone(),
            flows: b.ouroboros.as_ref().map(FlowStatsHandle::get),
        }))
    }

    /// Whether this peer is reachable at its own address, through a port
    /// mapped on its NAT gateway, or only from behind a NAT, and how that
    /// NAT maps; from where its bootstrap and its successor see it (each is
    /// asked once the peer has joined, see [`NatStatus`]). Over Ouroboros,
    /// [`NatStatus::Named`].
    ///
    /// A peer bound to all interfaces (`0.0.0.0:P`, `[::]:P`) announces
    /// the address its bootstrap sees it at (or, when it starts a swarm,
    /// the one its first contact sees it at) and derives its id from it;
    /// behind a NAT that is the NAT's mapping, which other peers can reach
    /// only if the NAT lets them.
    pub fn nat_status(&self) -> Result<NatStatus> {
        let b = self.bound()?;
        let Some(local) = b.local.udp() else {
            return Ok(NatStatus::Named);
        };
        let observations: Vec<(SocketAddr, SocketAddr)> = b
            .view
            .observations()
            .into_iter()
            .filter_map(|(by, seen)| Some((by.udp()?, seen.udp()?)))
            .collect();
        let own = if local.ip().is_unspecified() {
            crate::nat::own_ips()
        } else {
            Vec::new()
        };
        Ok(crate::nat::classify(local, &own, b.mapped, &observations))
    }

    /// Asks the peer at `to` where it sees this one (as STUN does) and
    /// returns that address, waiting at most `timeout` for the answer
    /// ([`Error::Timeout`] with [`Operation::Observe`] without one). The answer also counts towards
    /// [`nat_status`](Self::nat_status): a peer behind a NAT learns how
    /// its NAT maps once two observers at different IP addresses have
    /// answered, and asking one more (for example a peer on another host
    /// than its bootstrap and successor) settles it. `to` need not be a
    /// member of this peer's swarm, only a Cicada peer on the same
    /// transport.
    pub async fn observe(&self, to: impl Into<PeerAddr>, timeout: Duration) -> Result<PeerAddr> {
        let to = to.into();
        let asked = self.ask(|reply| Command::Observe { to, reply });
        tokio::time::timeout(timeout, asked)
            .await
            .unwrap_or(Err(Error::Timeout {
                op: Operation::Observe,
                after: timeout,
            }))
    }

    /// This peer's id.
    pub fn hash(&self) -> Result<Hash> {
        Ok(self.bound()?.view.me().id)
    }

    /// This peer as others know it: its id and external address.
    pub fn me(&self) -> Result<RemoteNode> {
        Ok(self.bound()?.view.me())
    }

    /// The address other peers reach this one at (the external address, or
    /// the Ouroboros name).
    pub fn listener(&self) -> Result<PeerAddr> {
        Ok(self.bound()?.view.me().addr)
    }

    /// The local address the link is bound to (the UDP socket's, or the
    /// Ouroboros name).
    pub fn local_addr(&self) -> Result<PeerAddr> {
        Ok(self.bound()?.local.clone())
    }

    /// The counters.
    pub async fn stats(&self) -> Result<PeerStats> {
        let snap = self.snapshot().await?;
        let (core, secure) = (snap.stats, snap.secure);
        let c = &self.bound()?.counters;
        Ok(PeerStats {
            recv_overflow: core.dropped_no_room,
            core,
            received: c.received.load(Ordering::Relaxed),
            hooks_dropped: c.hooks_dropped.load(Ordering::Relaxed),
            link_errors: c.link_errors.load(Ordering::Relaxed),
            link_sends: c.link_sends.load(Ordering::Relaxed),
            link_parked: c.link_parked.load(Ordering::Relaxed),
            driver_wakeups: c.driver_wakeups.load(Ordering::Relaxed),
            secure,
            ouroboros: self.bound()?.ouroboros.as_ref().map(FlowStatsHandle::get),
        })
    }

    /// Leaves the swarm gracefully: hands this peer's neighbours to each
    /// other, then stays silent. The socket stays open until `close`.
    pub async fn disconnect(&self) -> Result<()> {
        self.ask(|reply| Command::Leave { reply }).await
    }

    /// Stops the driver and releases the socket; waits until both are done.
    /// Idempotent; dropping the peer does the same without waiting.
    pub async fn close(&self) {
        let Some(b) = &self.bound else { return };
        let handle = b.handle.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            h.close();
        }
        let task = b.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        if let Some(mapping) = b.mapping.lock().await.take() {
            if let Err(e) = mapping.close().await {
                tracing::warn!(error = %e, "removing the port mapping failed");
            }
        }
    }

    /// Whether [`close`](Self::close) has run (or the driver stopped).
    pub fn is_closed(&self) -> bool {
        self.bound
            .as_ref()
            .is_some_and(|b| b.handle().is_none_or(|h| h.is_closed()))
    }
}

/// Everything a driver needs besides its link.
type DriverParts = (
    Arc<SelfView<PeerAddr>>,
    PeerConfig,
    u64,
    mpsc::Sender<Incoming<PeerAddr>>,
    HookQueue<PeerAddr>,
    Arc<Counters>,
);

/// A peer's driver, over either link it can have, keyed or not.
type Driver = Arc<Shared<PeerLink>>;

/// Starts the driver over `link` on the current runtime.
fn spawn_driver(link: PeerLink, parts: DriverParts) -> Result<(Driver, JoinHandle<()>)> {
    let (view, cfg, seed, inbox, hooks, counters) = parts;
    let (shared, queue) = Shared::new(link, view, cfg, seed, inbox, hooks, counters)?;
    let shared = Arc::new(shared);
    let task = tokio::spawn(shared.clone().run(queue));
    Ok((shared, task))
}

impl Drop for SwarmPeer {
    fn drop(&mut self) {
        if let Some(b) = &self.bound {
            if let Ok(mut t) = b.task.lock() {
                if let Some(task) = t.take() {
                    task.abort();
                }
            }
        }
    }
}

impl From<&SwarmPeer> for SendTarget {
    fn from(p: &SwarmPeer) -> Self {
        match p.hash() {
            Ok(id) => SendTarget::Node(id),
            Err(_) => SendTarget::Unbound,
        }
    }
}

/// Resolves `host:port` to its first address, off the runtime's threads.
pub(crate) async fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    let name = format!("{host}:{port}");
    let n = name.clone();
    let found = tokio::task::spawn_blocking(move || n.to_socket_addrs().map(|mut a| a.next()))
        .await
        .map_err(|_| Error::Resolve(name.clone()))?;
    match found {
        Ok(Some(a)) => Ok(a),
        _ => Err(Error::Resolve(name)),
    }
}

/// Whether a UDP socket bound to `local` can send to `remote`: an IPv4
/// socket reaches IPv4 only; an IPv6 one bound to `[::]` (dual-stack)
/// reaches both, one bound to a specific IPv6 address IPv6 only.
fn family_reaches(local: SocketAddr, remote: SocketAddr) -> bool {
    let mapped_v4 = |a: &SocketAddr| match a {
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
        SocketAddr::V4(_) => true,
    };
    match local {
        SocketAddr::V4(_) => mapped_v4(&remote),
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => true,
        SocketAddr::V6(_) => remote.is_ipv6() && !mapped_v4(&remote),
    }
}
