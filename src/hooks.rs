//! [`Hooks`]: callbacks into what a peer sends, receives and learns.
//!
//! Hooks never run on the driver: the driver queues each call on a bounded
//! channel and a dedicated thread (`cicada-hooks`) makes it. A hook may
//! therefore block, or call back into its own peer (even through the
//! blocking facade), without stalling the peer. When a hook is so slow that
//! the queue fills, further calls are dropped and counted in
//! [`crate::PeerStats::hooks_dropped`] rather than buffered without bound.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use bytes::Bytes;
use chord::NodeRef;

type PacketHook<A> = Arc<dyn Fn(&NodeRef<A>, &[u8]) + Send + Sync>;
type PeerHook<A> = Arc<dyn Fn(&NodeRef<A>) + Send + Sync>;

/// Callbacks a peer makes, each optional. `A` is the link's address type:
/// [`crate::PeerAddr`] for a [`crate::SwarmPeer`], so hooks receive
/// [`crate::RemoteNode`]s.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// let sent = Arc::new(AtomicUsize::new(0));
/// let s = sent.clone();
/// let hooks = cicada::Hooks::new()
///     .on_send(move |_to, bytes| { s.fetch_add(bytes.len(), Ordering::Relaxed); })
///     .on_recv(|from, data| { let _ = (from, data); })
///     .on_new_peer(|peer| { let _ = peer; });
/// # let _ = hooks;
/// ```
pub struct Hooks<A = crate::PeerAddr> {
    send: Option<PacketHook<A>>,
    recv: Option<PacketHook<A>>,
    new_peer: Option<PeerHook<A>>,
}

impl<A> Default for Hooks<A> {
    fn default() -> Self {
        Hooks {
            send: None,
            recv: None,
            new_peer: None,
        }
    }
}

impl<A> Clone for Hooks<A> {
    fn clone(&self) -> Self {
        Hooks {
            send: self.send.clone(),
            recv: self.recv.clone(),
            new_peer: self.new_peer.clone(),
        }
    }
}

impl<A> fmt::Debug for Hooks<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("send", &self.send.is_some())
            .field("recv", &self.recv.is_some())
            .field("new_peer", &self.new_peer.is_some())
            .finish()
    }
}

impl Hooks {
    /// No hooks, for a [`crate::SwarmPeer`] (hooks receive [`crate::RemoteNode`]s).
    /// For another link type, start from `Hooks::<Addr>::default()`.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<A> Hooks<A> {
    /// Called for every datagram this peer sends, maintenance included, with
    /// the peer it goes to and its bytes on the wire.
    pub fn on_send(mut self, f: impl Fn(&NodeRef<A>, &[u8]) + Send + Sync + 'static) -> Self {
        self.send = Some(Arc::new(f));
        self
    }

    /// Called for every application message this peer receives (the same
    /// ones `recv` returns), with its sender and its data.
    pub fn on_recv(mut self, f: impl Fn(&NodeRef<A>, &[u8]) + Send + Sync + 'static) -> Self {
        self.recv = Some(Arc::new(f));
        self
    }

    /// Called once for each peer that enters this peer's routing state
    /// (successors, predecessor, fingers) for the first time.
    pub fn on_new_peer(mut self, f: impl Fn(&NodeRef<A>) + Send + Sync + 'static) -> Self {
        self.new_peer = Some(Arc::new(f));
        self
    }

    fn is_empty(&self) -> bool {
        self.send.is_none() && self.recv.is_none() && self.new_peer.is_none()
    }
}

enum Call<A> {
    Send(NodeRef<A>, Bytes),
    Recv(NodeRef<A>, Bytes),
    NewPeer(NodeRef<A>),
}

/// The driver's end of the hooks: queues calls for the hook thread.
pub(crate) struct HookQueue<A> {
    tx: Option<SyncSender<Call<A>>>,
    wants_send: bool,
    wants_recv: bool,
    wants_new_peer: bool,
    dropped: Arc<AtomicU64>,
}

impl<A: Send + 'static> HookQueue<A> {
    /// Starts the hook thread if any hook is set.
    pub(crate) fn start(hooks: Hooks<A>, capacity: usize, dropped: Arc<AtomicU64>) -> Self {
        let mut q = HookQueue {
            tx: None,
            wants_send: hooks.send.is_some(),
            wants_recv: hooks.recv.is_some(),
            wants_new_peer: hooks.new_peer.is_some(),
            dropped,
        };
        if hooks.is_empty() {
            return q;
        }
        let (tx, rx) = sync_channel::<Call<A>>(capacity.max(1));
        let spawned = std::thread::Builder::new()
            .name("cicada-hooks".into())
            .spawn(move || {
                // Ends when the driver drops its sender.
                while let Ok(call) = rx.recv() {
                    match call {
                        Call::Send(to, bytes) => {
                            if let Some(f) = &hooks.send {
                                f(&to, &bytes)
                            }
                        }
                        Call::Recv(from, data) => {
                            if let Some(f) = &hooks.recv {
                                f(&from, &data)
                            }
                        }
                        Call::NewPeer(peer) => {
                            if let Some(f) = &hooks.new_peer {
                                f(&peer)
                            }
                        }
                    }
                }
            });
        match spawned {
            Ok(_) => q.tx = Some(tx),
            Err(e) => tracing::error!(error = %e, "cannot start the hook thread; hooks disabled"),
        }
        q
    }

    pub(crate) fn wants_send(&self) -> bool {
        self.wants_send && self.tx.is_some()
    }

    /// Whether a `recv` hook is set: the driver clones a message for it
    /// only then.
    pub(crate) fn wants_recv(&self) -> bool {
        self.wants_recv && self.tx.is_some()
    }

    pub(crate) fn sent(&self, to: NodeRef<A>, bytes: Bytes) {
        if self.wants_send {
            self.push(Call::Send(to, bytes));
        }
    }

    pub(crate) fn received(&self, from: NodeRef<A>, data: Bytes) {
        if self.wants_recv {
            self.push(Call::Recv(from, data));
        }
    }

    pub(crate) fn new_peer(&self, peer: NodeRef<A>) {
        if self.wants_new_peer {
            self.push(Call::NewPeer(peer));
        }
    }

    fn push(&self, call: Call<A>) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(call) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
