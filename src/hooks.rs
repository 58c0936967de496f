//! I/O: the hook thread, which runs the application's callbacks off the driver.
//!
//! [`Hooks`]: callbacks into what a peer sends, receives and learns.
//!
//! Hooks never run on the driver: the driver queues each call on a bounded
//! queue and a dedicated thread (`cicada-hooks`) makes it. A hook may
//! therefore block, or call back into its own peer (even through the
//! blocking facade), without stalling the peer.
//!
//! What happens when a hook is slower than the traffic:
//! - `recv` calls are never dropped: a message is confirmed to its sender
//!   only once there is room for it both in the receive queue and in the
//!   `recv` hook's share of the hook queue (back-pressure, see
//!   [`crate::SwarmPeer::send`]).
//! - `send` and `new_peer` calls beyond the queue's length are dropped,
//!   counted in [`crate::PeerStats::hooks_dropped`], and reported: the
//!   hook thread calls [`Hooks::on_dropped`] with the counts as soon as it
//!   catches up (and logs a warning when that hook is not set).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

use bytes::Bytes;
use chord::{Hash, NodeRef};

type PacketHook<A> = Arc<dyn Fn(&NodeRef<A>, &[u8]) + Send + Sync>;
type PeerHook<A> = Arc<dyn Fn(&NodeRef<A>) + Send + Sync>;
type DropHook = Arc<dyn Fn(HooksDropped) + Send + Sync>;

/// Hook calls dropped because the hook queue was full, reported to
/// [`Hooks::on_dropped`]: the counts since the previous report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HooksDropped {
    /// `send` calls dropped.
    pub send: u64,
    /// `new_peer` calls dropped.
    pub new_peer: u64,
}

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
    dropped: Option<DropHook>,
}

impl<A> Default for Hooks<A> {
    fn default() -> Self {
        Hooks {
            send: None,
            recv: None,
            new_peer: None,
            dropped: None,
        }
    }
}

impl<A> Clone for Hooks<A> {
    fn clone(&self) -> Self {
        Hooks {
            send: self.send.clone(),
            recv: self.recv.clone(),
            new_peer: self.new_peer.clone(),
            dropped: self.dropped.clone(),
        }
    }
}

impl<A> fmt::Debug for Hooks<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("send", &self.send.is_some())
            .field("recv", &self.recv.is_some())
            .field("new_peer", &self.new_peer.is_some())
            .field("dropped", &self.dropped.is_some())
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
    /// the peer it goes to and its bytes on the wire (as the original
    /// Cicada's `send` hook). Under a flood faster than the hook, calls
    /// beyond the hook queue are dropped and reported (see
    /// [`on_dropped`](Self::on_dropped)).
    pub fn on_send(mut self, f: impl Fn(&NodeRef<A>, &[u8]) + Send + Sync + 'static) -> Self {
        self.send = Some(Arc::new(f));
        self
    }

    /// Called for every application message delivered to this peer (the
    /// same ones `recv` returns, in the same order), with its sender and
    /// its data. Never dropped: while the hook's share of the hook queue is
    /// full, senders are held back (their messages are not confirmed until
    /// there is room), as they are while the receive queue is full. An
    /// application that only uses this hook must still drain `recv` (or
    /// make the receive queue long), since a message goes to both.
    pub fn on_recv(mut self, f: impl Fn(&NodeRef<A>, &[u8]) + Send + Sync + 'static) -> Self {
        self.recv = Some(Arc::new(f));
        self
    }

    /// Called once for each peer that joins this peer's routing state
    /// (successors, predecessor, fingers): not again while it stays there,
    /// nor when it comes back after leaving it unless 65,536 other peers
    /// came and went in between.
    pub fn on_new_peer(mut self, f: impl Fn(&NodeRef<A>) + Send + Sync + 'static) -> Self {
        self.new_peer = Some(Arc::new(f));
        self
    }

    /// Called, on the hook thread, when `send` or `new_peer` calls were
    /// dropped because the hook queue was full, with how many of each since
    /// the previous report; as soon as the thread has caught up with one
    /// more call. Without it, each report is a `tracing` warning.
    pub fn on_dropped(mut self, f: impl Fn(HooksDropped) + Send + Sync + 'static) -> Self {
        self.dropped = Some(Arc::new(f));
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

/// What the driver and the hook thread share: how full the queue is, per
/// kind of call, and the drops not yet reported.
#[derive(Debug, Default)]
struct Pending {
    /// `recv` calls queued and not yet made.
    recv: AtomicUsize,
    /// `send` and `new_peer` calls queued and not yet made.
    other: AtomicUsize,
    /// `send` calls dropped since the last report.
    send_dropped: AtomicU64,
    /// `new_peer` calls dropped since the last report.
    new_peer_dropped: AtomicU64,
}

/// The driver's end of the hooks: queues calls for the hook thread.
///
/// The channel holds up to twice `capacity` calls: `recv` calls take at
/// most `capacity` of it (the driver confirms no message beyond that, see
/// [`recv_room`](Self::recv_room)), `send` and `new_peer` calls at most
/// `capacity` together (beyond it they are dropped and reported), so a
/// `recv` call always finds room.
pub(crate) struct HookQueue<A> {
    tx: Option<SyncSender<Call<A>>>,
    capacity: usize,
    wants_send: bool,
    wants_recv: bool,
    wants_new_peer: bool,
    pending: Arc<Pending>,
    dropped: Arc<AtomicU64>,
}

impl<A: Send + 'static> HookQueue<A> {
    /// Starts the hook thread if any hook is set.
    pub(crate) fn start(hooks: Hooks<A>, capacity: usize, dropped: Arc<AtomicU64>) -> Self {
        let capacity = capacity.max(1);
        let mut q = HookQueue {
            tx: None,
            capacity,
            wants_send: hooks.send.is_some(),
            wants_recv: hooks.recv.is_some(),
            wants_new_peer: hooks.new_peer.is_some(),
            pending: Arc::default(),
            dropped,
        };
        if hooks.is_empty() {
            return q;
        }
        let (tx, rx) = sync_channel::<Call<A>>(2 * capacity);
        let pending = q.pending.clone();
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
                            pending.other.fetch_sub(1, Ordering::AcqRel);
                        }
                        Call::Recv(from, data) => {
                            if let Some(f) = &hooks.recv {
                                f(&from, &data)
                            }
                            pending.recv.fetch_sub(1, Ordering::AcqRel);
                        }
                        Call::NewPeer(peer) => {
                            if let Some(f) = &hooks.new_peer {
                                f(&peer)
                            }
                            pending.other.fetch_sub(1, Ordering::AcqRel);
                        }
                    }
                    report_drops(&pending, hooks.dropped.as_ref());
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

    /// How many more `recv` calls the queue can take now (unbounded
    /// without a `recv` hook). The count only grows until the driver
    /// queues one, so a figure read earlier is never too high.
    pub(crate) fn recv_room(&self) -> usize {
        if !self.wants_recv() {
            return usize::MAX;
        }
        self.capacity
            .saturating_sub(self.pending.recv.load(Ordering::Acquire))
    }

    pub(crate) fn sent(&self, to: NodeRef<A>, bytes: Bytes) {
        if self.wants_send {
            self.push_other(Call::Send(to, bytes), &self.pending.send_dropped);
        }
    }

    /// Queues a `recv` call; the caller has checked
    /// [`recv_room`](Self::recv_room) (through the core's receive room).
    pub(crate) fn received(&self, from: NodeRef<A>, data: Bytes) {
        let Some(tx) = &self.tx else { return };
        if !self.wants_recv {
            return;
        }
        self.pending.recv.fetch_add(1, Ordering::AcqRel);
        if tx.try_send(Call::Recv(from, data)).is_err() {
            // Only when the hook thread is gone (a hook panicked).
            self.pending.recv.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn new_peer(&self, peer: NodeRef<A>) {
        if self.wants_new_peer {
            self.push_other(Call::NewPeer(peer), &self.pending.new_peer_dropped);
        }
    }

    /// Queues a `send` or `new_peer` call, or drops it and adds it to
    /// `unreported`, its kind's count of drops not yet reported.
    fn push_other(&self, call: Call<A>, unreported: &AtomicU64) {
        let Some(tx) = &self.tx else { return };
        let queued = self.pending.other.fetch_add(1, Ordering::AcqRel);
        if queued < self.capacity && tx.try_send(call).is_ok() {
            return;
        }
        self.pending.other.fetch_sub(1, Ordering::AcqRel);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        unreported.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reports the drops since the last report, if any.
fn report_drops(pending: &Pending, hook: Option<&DropHook>) {
    let send = pending.send_dropped.swap(0, Ordering::Relaxed);
    let new_peer = pending.new_peer_dropped.swap(0, Ordering::Relaxed);
    if send == 0 && new_peer == 0 {
        return;
    }
    let dropped = HooksDropped { send, new_peer };
    match hook {
        Some(f) => f(dropped),
        None => tracing::warn!(
            send,
            new_peer,
            "hook calls dropped: the hook queue was full (a hook is slower than the traffic)"
        ),
    }
}

/// Which peers `new_peer` has been called for: every peer in the routing
/// state, and the last [`NEW_PEER_MEMORY`] that left it (oldest forgotten
/// first). Bounded by the routing state plus that many.
#[derive(Debug, Default)]
pub(crate) struct NewPeers {
    /// Peer id to whether it is in the routing state now.
    known: HashMap<Hash, bool>,
    /// Peers that left the routing state, oldest first (a peer may be
    /// listed more than once; only a peer still out is forgotten).
    left: VecDeque<Hash>,
}

/// How many peers that left the routing state [`NewPeers`] remembers.
pub(crate) const NEW_PEER_MEMORY: usize = 65_536;

impl NewPeers {
    /// A peer entered the routing state: whether `new_peer` is due.
    pub(crate) fn added(&mut self, id: Hash) -> bool {
        self.known.insert(id, true).is_none()
    }

    /// A peer left the routing state.
    pub(crate) fn removed(&mut self, id: Hash) {
        if let Some(inside) = self.known.get_mut(&id) {
            *inside = false;
            self.left.push_back(id);
        }
        while self.left.len() > NEW_PEER_MEMORY {
            let Some(old) = self.left.pop_front() else {
                break;
            };
            if self.known.get(&old) == Some(&false) {
                self.known.remove(&old);
            }
        }
    }

    /// Peers remembered (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.known.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_peer_is_due_once_while_a_peer_is_known_and_memory_is_bounded() {
        let mut peers = NewPeers::default();
        let a = Hash::of("a");
        assert!(peers.added(a));
        assert!(!peers.added(a), "still in the routing state");
        peers.removed(a);
        assert!(!peers.added(a), "back soon after: remembered");
        // A peer that stays in the routing state is never forgotten, however
        // many others come and go.
        for i in 0..(NEW_PEER_MEMORY + 10) {
            let h = Hash::of(format!("p{i}"));
            assert!(peers.added(h));
            peers.removed(h);
        }
        assert!(!peers.added(a));
        assert!(peers.len() <= NEW_PEER_MEMORY + 1);
        // The oldest that left is forgotten: due again.
        assert!(peers.added(Hash::of("p0")));
    }
}
