//! API: the blocking calls; each blocks its thread on the peer's own runtime.
//!
//! A blocking facade over the async [`crate::SwarmPeer`], for code without a
//! tokio runtime. It owns a small runtime (one worker thread) on which the
//! async peer and its driver run; each method blocks on the async one. There
//! is one implementation: this is a wrapper, not a second peer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chord::Hash;
use tokio::runtime::Runtime;

use crate::addr::PeerAddr;
use crate::config::PeerConfig;
use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::peer::PeerStats;
use crate::remote::{Delivery, Received, RemoteNode, Route, SendOptions, SendTarget};

/// A blocking [`crate::SwarmPeer`]. Must not be used from inside an async
/// task (blocking there would stall the runtime); hooks, which run on their
/// own thread, may use it.
///
/// ```
/// let mut peer = cicada::blocking::SwarmPeer::new(cicada::Hooks::new())?;
/// peer.bind("127.0.0.1:0".parse().unwrap())?;
/// assert_eq!(peer.peers()?.len(), 0);
/// assert!(peer.try_recv()?.is_none());
/// peer.close();
/// assert!(matches!(peer.peers(), Err(cicada::Error::Closed)));
/// # Ok::<(), cicada::Error>(())
/// ```
#[derive(Debug)]
pub struct SwarmPeer {
    inner: crate::SwarmPeer,
    /// Taken by drop, which shuts it down.
    rt: Option<Runtime>,
    /// Set by `close`: every call after it fails with [`Error::Closed`].
    closed: AtomicBool,
}

impl SwarmPeer {
    /// An unbound peer with default configuration and these hooks.
    pub fn new(hooks: Hooks) -> Result<SwarmPeer> {
        SwarmPeer::with_config(PeerConfig::default(), hooks)
    }

    /// An unbound peer with this configuration and these hooks.
    pub fn with_config(cfg: PeerConfig, hooks: Hooks) -> Result<SwarmPeer> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cicada-peer")
            .enable_all()
            .build()?;
        Ok(SwarmPeer {
            inner: crate::SwarmPeer::with_config(cfg, hooks),
            rt: Some(rt),
            closed: AtomicBool::new(false),
        })
    }

    /// The async peer, unless closed.
    fn open(&self) -> Result<&crate::SwarmPeer> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(&self.inner)
    }

    fn run<'a, T, F>(&'a self, f: impl FnOnce(&'a crate::SwarmPeer) -> F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let inner = self.open()?;
        let rt = self.rt.as_ref().ok_or(Error::Closed)?;
        rt.block_on(f(inner))
    }

    /// Runs a `bind` variant on the async peer.
    fn bind_with<'a, T, F>(&'a mut self, f: impl FnOnce(&'a mut crate::SwarmPeer) -> F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let rt = self.rt.as_ref().ok_or(Error::Closed)?;
        rt.block_on(f(&mut self.inner))
    }

    /// See [`crate::SwarmPeer::bind`].
    pub fn bind(&mut self, local: SocketAddr) -> Result<()> {
        self.bind_with(|p| p.bind(local))
    }

    /// See [`crate::SwarmPeer::bind_with_external`].
    pub fn bind_with_external(&mut self, local: SocketAddr, external: SocketAddr) -> Result<()> {
        self.bind_with(|p| p.bind_with_external(local, external))
    }

    /// See [`crate::SwarmPeer::bind_ouroboros`].
    pub fn bind_ouroboros(&mut self, name: &str, layer: &str) -> Result<()> {
        self.bind_with(|p| p.bind_ouroboros(name, layer))
    }

    /// See [`crate::SwarmPeer::bind_transport`].
    pub fn bind_transport(&mut self, transport: crate::Transport) -> Result<PeerAddr> {
        self.bind_with(|p| p.bind_transport(transport))
    }

    /// See [`crate::SwarmPeer::bind_with_mapping`].
    pub fn bind_with_mapping(
        &mut self,
        local: SocketAddr,
        options: &crate::traversal::Options,
    ) -> Result<SocketAddr> {
        self.bind_with(|p| p.bind_with_mapping(local, options))
    }

    /// See [`crate::SwarmPeer::connect`].
    pub fn connect(&self, bootstrap: impl Into<PeerAddr>, timeout: Duration) -> Result<RemoteNode> {
        let bootstrap = bootstrap.into();
        self.run(|p| p.connect(bootstrap, timeout))
    }

    /// See [`crate::SwarmPeer::observe`].
    pub fn observe(&self, to: impl Into<PeerAddr>, timeout: Duration) -> Result<PeerAddr> {
        let to = to.into();
        self.run(|p| p.observe(to, timeout))
    }

    /// See [`crate::SwarmPeer::send`].
    pub fn send(&self, target: impl Into<SendTarget>, data: impl Into<Bytes>) -> Result<Delivery> {
        let (target, data) = (target.into(), data.into());
        self.run(|p| p.send(target, data))
    }

    /// See [`crate::SwarmPeer::send_with`].
    pub fn send_with(
        &self,
        target: impl Into<SendTarget>,
        data: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<Delivery> {
        let (target, data) = (target.into(), data.into());
        self.run(|p| p.send_with(target, data, options))
    }

    /// See [`crate::SwarmPeer::send_datagram`].
    pub fn send_datagram(
        &self,
        target: impl Into<SendTarget>,
        data: impl AsRef<[u8]>,
    ) -> Result<()> {
        let target = target.into();
        self.run(|p| p.send_datagram(target, data))
    }

    /// See [`crate::SwarmPeer::broadcast`].
    pub fn broadcast(&self, data: impl Into<Bytes>) -> Result<()> {
        let data = data.into();
        self.run(|p| p.broadcast(data))
    }

    /// See [`crate::SwarmPeer::recv`].
    pub fn recv(&self) -> Result<Received> {
        self.run(|p| p.recv())
    }

    /// See [`crate::SwarmPeer::try_recv`].
    pub fn try_recv(&self) -> Result<Option<Received>> {
        self.open()?.try_recv()
    }

    /// See [`crate::SwarmPeer::recv_timeout`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Received>> {
        self.run(|p| p.recv_timeout(timeout))
    }

    /// See [`crate::SwarmPeer::get_route`].
    pub fn get_route(&self, key: Hash) -> Result<Route> {
        self.run(|p| p.get_route(key))
    }

    /// See [`crate::SwarmPeer::put`].
    pub fn put(&self, key: Hash, value: impl Into<Vec<u8>>, ttl: Duration) -> Result<()> {
        let value = value.into();
        self.run(|p| p.put(key, value, ttl))
    }

    /// See [`crate::SwarmPeer::put_signed`].
    pub fn put_signed(
        &self,
        secret: &[u8; 32],
        salt: &[u8],
        seq: u64,
        value: impl Into<Vec<u8>>,
        cas: Option<u64>,
    ) -> Result<Hash> {
        let value = value.into();
        self.run(|p| p.put_signed(secret, salt, seq, value, cas))
    }

    /// See [`crate::SwarmPeer::get`].
    pub fn get(&self, key: Hash) -> Result<Vec<chord::store::Record>> {
        self.run(|p| p.get(key))
    }

    /// See [`crate::SwarmPeer::listen`]; read the receiver with
    /// `blocking_recv`.
    pub fn listen(&self, key: Hash) -> Result<tokio::sync::mpsc::Receiver<chord::store::Record>> {
        self.run(|p| p.listen(key))
    }

    /// See [`crate::SwarmPeer::announce`].
    pub fn announce(&self, topic: &[u8], ttl: Duration) -> Result<()> {
        self.run(|p| p.announce(topic, ttl))
    }

    /// See [`crate::SwarmPeer::find`].
    pub fn find(&self, topic: &[u8]) -> Result<Vec<RemoteNode>> {
        self.run(|p| p.find(topic))
    }

    /// See [`crate::SwarmPeer::peers`].
    pub fn peers(&self) -> Result<Vec<RemoteNode>> {
        self.run(|p| p.peers())
    }

    /// See [`crate::SwarmPeer::connect_host`].
    pub fn connect_host(&self, host: &str, port: u16, timeout: Duration) -> Result<RemoteNode> {
        self.run(|p| p.connect_host(host, port, timeout))
    }

    /// See [`crate::SwarmPeer::successor`].
    pub fn successor(&self) -> Result<Option<RemoteNode>> {
        self.run(|p| p.successor())
    }

    /// See [`crate::SwarmPeer::predecessor`].
    pub fn predecessor(&self) -> Result<Option<RemoteNode>> {
        self.run(|p| p.predecessor())
    }

    /// See [`crate::SwarmPeer::me`].
    pub fn me(&self) -> Result<RemoteNode> {
        self.open()?.me()
    }

    /// See [`crate::SwarmPeer::local_addr`].
    pub fn local_addr(&self) -> Result<PeerAddr> {
        self.open()?.local_addr()
    }

    /// See [`crate::SwarmPeer::hash`].
    pub fn hash(&self) -> Result<Hash> {
        self.open()?.hash()
    }

    /// See [`crate::SwarmPeer::listener`].
    pub fn listener(&self) -> Result<PeerAddr> {
        self.open()?.listener()
    }

    /// See [`crate::SwarmPeer::stats`].
    pub fn stats(&self) -> Result<PeerStats> {
        self.run(|p| p.stats())
    }

    /// See [`crate::SwarmPeer::disconnect`].
    pub fn disconnect(&self) -> Result<()> {
        self.run(|p| p.disconnect())
    }

    /// Stops the peer and releases its socket, waiting until both are
    /// done (see [`crate::SwarmPeer::close`]); every call after it fails
    /// with [`Error::Closed`]. Takes `&self`, so a peer shared between
    /// threads (in an `Arc`) can be closed by any of them; a call blocked
    /// in `recv` on another thread returns [`Error::Closed`]. Idempotent;
    /// drop does the same, and also stops the peer's runtime.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(rt) = &self.rt else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            rt.block_on(self.inner.close());
        } else {
            // Inside another runtime (a blocking peer dropped by an async
            // task), where `block_on` is refused: on a thread of its own.
            std::thread::scope(|s| {
                s.spawn(|| rt.block_on(self.inner.close()));
            });
        }
    }
}

impl Drop for SwarmPeer {
    fn drop(&mut self) {
        self.close();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
