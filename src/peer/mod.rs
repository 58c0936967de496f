//! API: the socket-like calls; commands handed to the driver, no protocol state here.
//!
//! [`SwarmPeer`]: a member of a Cicada swarm, used like a socket.
//!
//! Its calls, by area: `lifecycle.rs` (bind, connect, disconnect, close),
//! `messages.rs` (send, send_datagram, broadcast, recv, get_route),
//! `store.rs` (put, get, listen, announce, find), `inspect.rs` (peers,
//! paths, identity, NAT status, stats, metrics). Every call that needs the
//! core goes through [`SwarmPeer::ask`] to the driver's one entry.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use chord::Hash;
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::addr::PeerAddr;
use crate::config::PeerConfig;
use crate::driver::{Command, Counters, Incoming, Shared};
use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::link::FlowStatsHandle;
use crate::link::PeerLink;
use crate::remote::{node_id, SendTarget};
use crate::view::SelfView;

mod inspect;
mod lifecycle;
mod messages;
mod store;

pub use inspect::PeerStats;
use lifecycle::resolve;

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
}

/// A peer's driver, over either link it can have, keyed or not.
type Driver = Arc<Shared<PeerLink>>;

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
