//! A blocking facade over the async [`crate::SwarmPeer`], for code without a
//! tokio runtime. It owns a small runtime (one worker thread) on which the
//! async peer and its driver run; each method blocks on the async one. There
//! is one implementation: this is a wrapper, not a second peer.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use chord::Hash;
use tokio::runtime::Runtime;

use crate::addr::PeerAddr;
use crate::config::PeerConfig;
use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::peer::{PeerStats, Received};
use crate::remote::{Delivery, RemoteNode, Route, SendTarget};

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
/// # Ok::<(), cicada::Error>(())
/// ```
#[derive(Debug)]
pub struct SwarmPeer {
    inner: Option<crate::SwarmPeer>,
    rt: Option<Runtime>,
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
            inner: Some(crate::SwarmPeer::with_config(cfg, hooks)),
            rt: Some(rt),
        })
    }

    fn run<'a, T, F>(&'a self, f: impl FnOnce(&'a crate::SwarmPeer) -> F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let (Some(inner), Some(rt)) = (&self.inner, &self.rt) else {
            return Err(Error::Closed);
        };
        rt.block_on(f(inner))
    }

    /// See [`crate::SwarmPeer::bind`].
    pub fn bind(&mut self, local: SocketAddr) -> Result<()> {
        let (Some(inner), Some(rt)) = (&mut self.inner, &self.rt) else {
            return Err(Error::Closed);
        };
        rt.block_on(inner.bind(local))
    }

    /// See [`crate::SwarmPeer::bind_with_external`].
    pub fn bind_with_external(&mut self, local: SocketAddr, external: SocketAddr) -> Result<()> {
        let (Some(inner), Some(rt)) = (&mut self.inner, &self.rt) else {
            return Err(Error::Closed);
        };
        rt.block_on(inner.bind_with_external(local, external))
    }

    /// See [`crate::SwarmPeer::bind_ouroboros`].
    pub fn bind_ouroboros(&mut self, name: &str, layer: &str) -> Result<()> {
        let (Some(inner), Some(rt)) = (&mut self.inner, &self.rt) else {
            return Err(Error::Closed);
        };
        rt.block_on(inner.bind_ouroboros(name, layer))
    }

    /// See [`crate::SwarmPeer::bind_transport`].
    pub fn bind_transport(&mut self, transport: crate::Transport) -> Result<PeerAddr> {
        let (Some(inner), Some(rt)) = (&mut self.inner, &self.rt) else {
            return Err(Error::Closed);
        };
        rt.block_on(inner.bind_transport(transport))
    }

    /// See [`crate::SwarmPeer::bind_with_mapping`].
    pub fn bind_with_mapping(
        &mut self,
        local: SocketAddr,
        options: &crate::traversal::Options,
    ) -> Result<SocketAddr> {
        let (Some(inner), Some(rt)) = (&mut self.inner, &self.rt) else {
            return Err(Error::Closed);
        };
        rt.block_on(inner.bind_with_mapping(local, options))
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
    pub fn send(
        &self,
        target: impl Into<SendTarget>,
        data: impl Into<Bytes>,
        duplicates: u8,
    ) -> Result<Delivery> {
        let (target, data) = (target.into(), data.into());
        self.run(|p| p.send(target, data, duplicates))
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
        self.inner.as_ref().ok_or(Error::Closed)?.try_recv()
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
        self.inner.as_ref().ok_or(Error::Closed)?.me()
    }

    /// See [`crate::SwarmPeer::local_addr`].
    pub fn local_addr(&self) -> Result<PeerAddr> {
        self.inner.as_ref().ok_or(Error::Closed)?.local_addr()
    }

    /// See [`crate::SwarmPeer::hash`].
    pub fn hash(&self) -> Result<Hash> {
        self.inner.as_ref().ok_or(Error::Closed)?.hash()
    }

    /// See [`crate::SwarmPeer::listener`].
    pub fn listener(&self) -> Result<PeerAddr> {
        self.inner.as_ref().ok_or(Error::Closed)?.listener()
    }

    /// See [`crate::SwarmPeer::stats`].
    pub fn stats(&self) -> Result<PeerStats> {
        self.run(|p| p.stats())
    }

    /// See [`crate::SwarmPeer::disconnect`].
    pub fn disconnect(&self) -> Result<()> {
        self.run(|p| p.disconnect())
    }

    /// Stops the peer, releases its socket and its runtime. Idempotent; drop
    /// does the same.
    pub fn close(&mut self) {
        if let (Some(inner), Some(rt)) = (&self.inner, &self.rt) {
            if tokio::runtime::Handle::try_current().is_err() {
                rt.block_on(inner.close());
            }
        }
        self.inner = None;
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for SwarmPeer {
    fn drop(&mut self) {
        self.close();
    }
}
