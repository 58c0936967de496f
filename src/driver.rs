//! The driver: one task that owns the [`LocalNode`], feeds it the datagrams
//! the link receives, the passing of time and the application's commands, and
//! carries out what it asks for (datagrams to send, events to deliver).
//!
//! Nothing else touches the node, so there is no lock around it; the
//! application talks to the driver through a bounded command channel and
//! one-shot replies, and hears from it through the bounded receive queue and
//! the hook queue.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chord::{Event, Hash, LocalNode, LookupId, NodeRef};
use tokio::sync::{mpsc, oneshot};

use crate::config::{PeerConfig, RECV_BUFFER};
use crate::error::Error;
use crate::hooks::HookQueue;
use crate::link::Link;

/// Most distinct peers remembered to call `new_peer` once each; past it the
/// memory is cleared and a peer seen before may be reported again.
const NEW_PEER_MEMORY: usize = 65_536;
/// How long the driver sleeps when the core asks for no timer at all.
const IDLE_WAKE: Duration = Duration::from_secs(3600);
/// Most ready datagrams (and commands) taken after one wake-up before the
/// transmits they caused go out: large enough to amortise the wake-up,
/// small enough that replies do not wait behind a long burst.
const DRAIN_BATCH: usize = 64;

/// Most runs gathered at once in one turn (distinct destinations and sizes).
const MAX_RUNS: usize = 8;

/// Datagrams of `size` bytes to `to`, back to back: the first as the core
/// made it (a run of one is sent from it, with no copy), the rest appended
/// in `bytes` (which then starts with a copy of the first).
struct Run<A> {
    to: A,
    size: usize,
    count: usize,
    first: Vec<u8>,
    bytes: Vec<u8>,
}

type Reply<T> = oneshot::Sender<Result<T, Error>>;
/// Where a lookup or a send ended: the peer, and the hops it took.
type Reached<A> = (NodeRef<A>, u32);

/// What the application asks of the driver.
pub(crate) enum Command<A> {
    Join {
        bootstrap: A,
        reply: Reply<NodeRef<A>>,
    },
    Send {
        target: chord::Target,
        payload: Bytes,
        duplicates: u8,
        reply: Reply<Reached<A>>,
    },
    Broadcast {
        payload: Vec<u8>,
        reply: Reply<()>,
    },
    Lookup {
        key: Hash,
        reply: Reply<Reached<A>>,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot<A>>,
    },
    Leave {
        reply: oneshot::Sender<()>,
    },
    Close,
}

/// The routing state and counters at one moment.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot<A> {
    pub peers: Vec<NodeRef<A>>,
    pub fingers: Vec<NodeRef<A>>,
    pub successor: Option<NodeRef<A>>,
    pub predecessor: Option<NodeRef<A>>,
    pub stats: chord::Stats,
}

/// An application message for `recv`.
pub(crate) struct Incoming<A> {
    pub from: NodeRef<A>,
    pub data: Bytes,
}

/// Counters the driver keeps beside the core's.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub recv_overflow: AtomicU64,
    pub hooks_dropped: Arc<AtomicU64>,
    pub link_errors: AtomicU64,
    pub received: AtomicU64,
    /// Calls to the link's send (one per datagram, or one per run).
    pub link_sends: AtomicU64,
}

pub(crate) struct Driver<L: Link> {
    link: L,
    node: LocalNode<L::Addr>,
    cfg: PeerConfig,
    seed: u64,
    commands: mpsc::Receiver<Command<L::Addr>>,
    inbox: mpsc::Sender<Incoming<L::Addr>>,
    hooks: HookQueue<L::Addr>,
    counters: Arc<Counters>,
    join_reply: Option<Reply<NodeRef<L::Addr>>>,
    lookups: HashMap<LookupId, Reply<Reached<L::Addr>>>,
    sends: HashMap<chord::MessageId, Reply<Reached<L::Addr>>>,
    leave_replies: Vec<oneshot::Sender<()>>,
    seen_peers: HashSet<Hash>,
    /// Runs of datagrams of one size to one address, gathered in one turn
    /// for one segmented send each.
    runs: Vec<Run<L::Addr>>,
}

impl<L: Link> Driver<L> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        link: L,
        me: NodeRef<L::Addr>,
        cfg: PeerConfig,
        seed: u64,
        commands: mpsc::Receiver<Command<L::Addr>>,
        inbox: mpsc::Sender<Incoming<L::Addr>>,
        hooks: HookQueue<L::Addr>,
        counters: Arc<Counters>,
    ) -> Result<Self, Error> {
        let now = Instant::now();
        let mut node = Self::node(&cfg, me, seed, now)?;
        // Alone until `connect`: the first member of its own swarm.
        node.create(now);
        Ok(Driver {
            link,
            node,
            cfg,
            seed,
            commands,
            inbox,
            hooks,
            counters,
            join_reply: None,
            lookups: HashMap::new(),
            sends: HashMap::new(),
            leave_replies: Vec::new(),
            seen_peers: HashSet::new(),
            runs: Vec::new(),
        })
    }

    /// A fresh core for `me`, requiring ids to derive from addresses where
    /// the link says how.
    fn node(
        cfg: &PeerConfig,
        me: NodeRef<L::Addr>,
        seed: u64,
        now: Instant,
    ) -> Result<LocalNode<L::Addr>, Error> {
        let node = LocalNode::new(cfg.chord.clone(), me, seed, now)?;
        Ok(match L::identity() {
            Some(derive) => node.with_identity(derive),
            None => node,
        })
    }

    /// Runs until `Close`, or until every handle to the peer is gone.
    pub(crate) async fn run(mut self) {
        let mut buf = vec![0u8; RECV_BUFFER];
        // One timer, moved only when the core's next deadline moves (not
        // a new one registered on every wake-up).
        let sleep = tokio::time::sleep(IDLE_WAKE);
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            self.flush().await;
            let wake = match self.node.poll_timeout() {
                Some(t) => t,
                None => armed.unwrap_or_else(|| Instant::now() + IDLE_WAKE),
            };
            if armed != Some(wake) {
                sleep.as_mut().reset(wake.into());
                armed = Some(wake);
            }
            tokio::select! {
                r = self.link.recv_from(&mut buf) => self.datagram(r, &buf),
                _ = &mut sleep => {
                    // Fired: re-armed on the next turn, whatever the deadline.
                    armed = None;
                    self.node.handle_timeout(Instant::now());
                }
                c = self.commands.recv() => match c {
                    Some(Command::Close) | None => break,
                    Some(c) => self.command(c),
                },
            }
            // Whatever else is ready already is taken now, before the
            // transmits go out: a burst costs one trip through the select
            // (and one timer registration), not one per datagram.
            if !self.drain(&mut buf) {
                break;
            }
        }
        tracing::debug!(id = %self.node.id().short(), "driver stopped");
        // Dropping the pending reply senders tells every waiting caller `Closed`.
    }

    fn datagram(&mut self, r: std::io::Result<(usize, L::Addr)>, buf: &[u8]) {
        match r {
            Ok((n, from)) => self.node.handle_datagram(Instant::now(), from, &buf[..n]),
            Err(e) => {
                // Unconnected UDP sockets can report errors of earlier
                // sends here (ICMP unreachable on some systems): not fatal.
                self.counters.link_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "receive error");
            }
        }
    }

    /// Takes up to [`DRAIN_BATCH`] ready datagrams and commands without
    /// waiting; false when the peer is to stop.
    fn drain(&mut self, buf: &mut [u8]) -> bool {
        for _ in 0..DRAIN_BATCH {
            let mut idle = true;
            if let Some(r) = self.link.try_recv_from(buf) {
                self.datagram(r, buf);
                idle = false;
            }
            match self.commands.try_recv() {
                Ok(Command::Close) | Err(mpsc::error::TryRecvError::Disconnected) => return false,
                Ok(c) => {
                    self.command(c);
                    idle = false;
                }
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if idle {
                break;
            }
        }
        true
    }

    fn command(&mut self, c: Command<L::Addr>) {
        let now = Instant::now();
        match c {
            Command::Join { bootstrap, reply } => {
                if !self.node.peers().is_empty() || self.join_reply.is_some() {
                    let _ = reply.send(Err(Error::AlreadyConnected));
                    return;
                }
                // The alone ring made at bind is replaced by a joining node.
                match Self::node(
                    &self.cfg,
                    self.node.me().clone(),
                    self.seed ^ 0x9e37_79b9_7f4a_7c15,
                    now,
                ) {
                    Ok(n) => self.node = n,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
                self.node.join(bootstrap, now);
                self.join_reply = Some(reply);
            }
            Command::Send {
                target,
                payload,
                duplicates,
                reply,
            } => self.send(target, payload, duplicates, reply, now),
            Command::Broadcast { payload, reply } => self.broadcast(payload, reply, now),
            Command::Lookup { key, reply } => {
                if !self.node.is_joined() {
                    let _ = reply.send(Err(Error::NotJoined));
                    return;
                }
                let id = self.node.lookup(key, now);
                self.lookups.insert(id, reply);
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(Snapshot {
                    peers: self.node.peers().to_vec(),
                    fingers: self.node.fingers().to_vec(),
                    successor: self.node.successor().cloned(),
                    predecessor: self.node.predecessor().cloned(),
                    stats: self.node.stats().clone(),
                });
            }
            Command::Leave { reply } => {
                if self.node.is_joined() {
                    self.leave_replies.push(reply);
                    self.node.leave(now);
                } else {
                    let _ = reply.send(());
                }
            }
            Command::Close => {}
        }
    }

    fn send(
        &mut self,
        target: chord::Target,
        payload: Bytes,
        duplicates: u8,
        reply: Reply<Reached<L::Addr>>,
        now: Instant,
    ) {
        match self.node.send(target, payload, duplicates, now) {
            Ok(id) => {
                self.sends.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    fn broadcast(&mut self, payload: Vec<u8>, reply: Reply<()>, now: Instant) {
        match self.node.broadcast(payload, now) {
            // Accepted is all a broadcast promises: it has no single destination to confirm.
            Ok(_) => {
                let _ = reply.send(Ok(()));
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// Sends what the core wants sent and delivers what it reports.
    ///
    /// Where the link can send a run of datagrams in one call
    /// ([`Link::send_segments`]: up to [`Link::max_segments`] datagrams of
    /// one size to one address), the datagrams of this turn are gathered
    /// into such runs first. Consecutive datagrams rarely match: ids are
    /// variable-length integers on the wire, so two messages of one kind
    /// often differ by a byte. Datagrams to one address may leave in
    /// another order than the core made them, which UDP allows anyway.
    async fn flush(&mut self) {
        let max = self.link.max_segments();
        while let Some(t) = self.node.poll_transmit() {
            let size = t.bytes.len();
            if max <= 1 || size > crate::link::GSO_SEGMENT_MAX {
                let result = self.link.send_to(&t.bytes, &t.to).await;
                self.sent(result, &t.to);
                self.sent_hook(&t);
                continue;
            }
            self.sent_hook(&t);
            let at = match self
                .runs
                .iter()
                .position(|r| r.size == size && r.to == t.to)
            {
                Some(at) => {
                    let r = &mut self.runs[at];
                    if r.count == 1 {
                        r.bytes = Vec::with_capacity(size * max);
                        r.bytes.extend_from_slice(&r.first);
                    }
                    r.bytes.extend_from_slice(&t.bytes);
                    r.count += 1;
                    at
                }
                None => {
                    if self.runs.len() == MAX_RUNS {
                        // Too many destinations and sizes at once: the
                        // oldest run leaves now.
                        self.send_run(0).await;
                    }
                    self.runs.push(Run {
                        to: t.to,
                        size,
                        count: 1,
                        first: t.bytes,
                        bytes: Vec::new(),
                    });
                    self.runs.len() - 1
                }
            };
            if self.runs[at].count >= max {
                self.send_run(at).await;
            }
        }
        while !self.runs.is_empty() {
            self.send_run(0).await;
        }
        while let Some(e) = self.node.poll_event() {
            self.event(e);
        }
    }

    /// Sends run `at` (one call for all its datagrams) and closes it.
    async fn send_run(&mut self, at: usize) {
        let r = self.runs.remove(at);
        let result = if r.count > 1 {
            self.link.send_segments(&r.bytes, r.size, &r.to).await
        } else {
            self.link.send_to(&r.first, &r.to).await
        };
        self.sent(result, &r.to);
    }

    fn sent(&self, result: std::io::Result<()>, to: &L::Addr) {
        self.counters.link_sends.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            self.counters.link_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%to, error = %e, "send error");
        }
    }

    /// The `send` hook's call for `t`, with its own copy (only when set).
    fn sent_hook(&self, t: &chord::Transmit<L::Addr>) {
        if self.hooks.wants_send() {
            let id = Hash::of(t.to.to_string());
            self.hooks
                .sent(NodeRef::new(id, t.to.clone()), t.bytes.clone());
        }
    }

    fn event(&mut self, e: Event<L::Addr>) {
        match e {
            Event::Joined { successor } => {
                tracing::debug!(id = %self.node.id().short(), successor = %successor.addr, "joined");
                if let Some(r) = self.join_reply.take() {
                    let _ = r.send(Ok(successor));
                }
            }
            Event::JoinFailed { reason } => {
                tracing::debug!(%reason, "join failed");
                if let Some(r) = self.join_reply.take() {
                    let _ = r.send(Err(reason.into()));
                }
                // Back to being the first member of a swarm of one.
                self.node.create(Instant::now());
            }
            Event::LookupDone {
                id, owner, hops, ..
            } => {
                if let Some(r) = self.lookups.remove(&id) {
                    let _ = r.send(Ok((owner, hops)));
                }
            }
            Event::LookupFailed { id, key } => {
                if let Some(r) = self.lookups.remove(&id) {
                    let _ = r.send(Err(Error::LookupFailed(key)));
                }
            }
            Event::PeerAdded(peer) => {
                if self.seen_peers.len() >= NEW_PEER_MEMORY {
                    self.seen_peers.clear();
                }
                if self.seen_peers.insert(peer.id) {
                    self.hooks.new_peer(peer);
                }
            }
            Event::PeerRemoved(_) => {}
            Event::Left => {
                for r in self.leave_replies.drain(..) {
                    let _ = r.send(());
                }
            }
            Event::Delivered { id, to, hops } => {
                if let Some(r) = self.sends.remove(&id) {
                    let _ = r.send(Ok((to, hops)));
                }
            }
            Event::SendFailed { id, reason } => {
                if let Some(r) = self.sends.remove(&id) {
                    let _ = r.send(Err(reason.into()));
                }
            }
            Event::Received { from, payload, .. } => self.received(from, payload),
        }
    }

    fn received(&mut self, from: NodeRef<L::Addr>, payload: Vec<u8>) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let data = Bytes::from(payload);
        if self.hooks.wants_recv() {
            self.hooks.received(from.clone(), data.clone());
        }
        if self.inbox.try_send(Incoming { from, data }).is_err() {
            self.counters.recv_overflow.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("receive queue full: message dropped");
        }
    }
}
