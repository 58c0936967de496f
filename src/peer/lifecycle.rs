//! API: bind, connect, disconnect, close; the driver started and stopped.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Bound, Driver, SwarmPeer};
use crate::addr::PeerAddr;
use crate::config::PeerConfig;
use crate::driver::{Command, Counters, Incoming, Shared};
use crate::error::{Error, Operation, Result};
use crate::hooks::HookQueue;
use crate::link::OuroborosLink;
use crate::link::{Link, PeerLink, UdpLink};
use crate::remote::{node_id, RemoteNode};
use crate::transport::Transport;
use crate::view::SelfView;

impl SwarmPeer {
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

/// Starts the driver over `link` on the current runtime.
fn spawn_driver(link: PeerLink, parts: DriverParts) -> Result<(Driver, JoinHandle<()>)> {
    let (view, cfg, seed, inbox, hooks, counters) = parts;
    let (shared, queue) = Shared::new(link, view, cfg, seed, inbox, hooks, counters)?;
    let shared = Arc::new(shared);
    let task = tokio::spawn(shared.clone().run(queue));
    Ok((shared, task))
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
