//! Pure: what the driver's lock guards, and commands and datagrams handed in; no I/O.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use chord::{LocalNode, LookupId, NodeRef};
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};

use super::claim::Kick;
use super::command::{Command, Incoming, Reached, Reply, Snapshot, StoreCall};
use super::counters::Counters;
use crate::config::PeerConfig;
use crate::error::Error;
use crate::hooks::{HookQueue, NewPeers};
use crate::link::Link;
use crate::stack::{Stack, Transmit};
use crate::view::SelfView;

/// Everything the lock guards: the core and what waits on it.
pub(super) struct State<L: Link> {
    /// The peer's one state machine: its Chord node and, keyed, its seal.
    pub(super) stack: Stack<L::Addr>,
    pub(super) cfg: PeerConfig,
    pub(super) seed: u64,
    pub(super) inbox: mpsc::Sender<Incoming<L::Addr>>,
    pub(super) hooks: HookQueue<L::Addr>,
    pub(super) counters: Arc<Counters>,
    pub(super) join_reply: Option<Reply<NodeRef<L::Addr>>>,
    pub(super) lookups: FxHashMap<LookupId, Reply<Reached<L::Addr>>>,
    pub(super) sends: FxHashMap<chord::MessageId, Reply<Reached<L::Addr>>>,
    pub(super) leave_replies: Vec<oneshot::Sender<()>>,
    /// Whom `new_peer` was called for.
    pub(super) new_peers: NewPeers,
    /// This peer's identity and where others see it.
    pub(super) view: Arc<SelfView<L::Addr>>,
    /// The peer the join under way goes through.
    pub(super) bootstrap: Option<L::Addr>,
    /// Callers of `observe` waiting for the answer of a peer.
    pub(super) observers: Vec<(L::Addr, oneshot::Sender<L::Addr>)>,
    /// Callers waiting for a store operation's outcome.
    pub(super) store_ops: FxHashMap<chord::StoreOp, Reply<chord::StoreEvent<L::Addr>>>,
    /// Listens under way, each with the queue of its listener.
    pub(super) listens: FxHashMap<chord::StoreOp, mpsc::Sender<chord::store::Record>>,
    /// The deadline the background task sleeps until (`None` while it is
    /// awake and will read the core's next one anyway): a call that makes
    /// an earlier one wakes it.
    pub(super) armed: Option<Instant>,
    /// Datagrams a link could not take on a thread where it cannot wait
    /// for room (an Ouroboros reader thread finding a flow's ring full),
    /// in order: the next flush sends them before the core's, and the
    /// background task, which can wait, is woken for them.
    pub(super) parked: VecDeque<Transmit<L::Addr>>,
    /// See [`Shared::receive_claimed`](super::Shared::receive_claimed).
    pub(super) kick: Arc<Kick>,
}

impl<L: Link> State<L> {
    /// Whether the core's next deadline lies before the one the background
    /// task sleeps until (which must then be woken to sleep less).
    pub(super) fn deadline_moved_earlier(&self) -> bool {
        match (self.stack.poll_timeout(), self.armed) {
            (Some(t), Some(armed)) => t < armed,
            _ => false,
        }
    }

    /// A fresh core for `me`, requiring ids to derive from addresses where
    /// the link says how.
    pub(super) fn node(
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

    pub(super) fn command(&mut self, c: Command<L::Addr>) {
        // Read under the lock, so the core's time never goes backwards.
        let now = Instant::now();
        match c {
            Command::Join { bootstrap, reply } => {
                if !self.stack.node().peers().is_empty() || self.join_reply.is_some() {
                    let _ = reply.send(Err(Error::AlreadyConnected));
                    return;
                }
                // The alone ring made at bind is replaced by a joining node.
                match Self::node(
                    &self.cfg,
                    self.stack.node().me().clone(),
                    self.seed ^ 0x9e37_79b9_7f4a_7c15,
                    now,
                ) {
                    Ok(mut n) => {
                        if self.stack.node().is_provisional() {
                            n.set_provisional();
                        }
                        self.stack.reset_node(n);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
                self.bootstrap = Some(bootstrap.clone());
                self.stack.join(bootstrap, now);
                self.join_reply = Some(reply);
            }
            Command::Send {
                target,
                payload,
                duplicates,
                timeout,
                reply,
            } => match self
                .stack
                .send(target, payload, duplicates, timeout.map(|t| now + t), now)
            {
                Ok(id) => {
                    self.sends.insert(id, reply);
                }
                Err(e) => {
                    self.counters.outcomes.send_failed(&e);
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Broadcast { payload, reply } => {
                // Accepted is all a broadcast promises: it has no single
                // destination to confirm.
                let r = self.stack.broadcast(payload, now);
                let _ = reply.send(r.map(|_| ()).map_err(Error::from));
            }
            Command::Store { call, reply } => {
                if !self.stack.node().is_joined() {
                    let _ = reply.send(Err(Error::NotJoined));
                    return;
                }
                let op = match *call {
                    StoreCall::Put { key, value, ttl_s } => self.stack.put(key, value, ttl_s, now),
                    StoreCall::PutSigned { record, cas } => self.stack.put_signed(record, cas, now),
                    StoreCall::Get { key } => self.stack.get(key, now),
                    StoreCall::Announce { topic, ttl_s } => self.stack.announce(&topic, ttl_s, now),
                    StoreCall::Find { topic } => self.stack.find(&topic, now),
                };
                self.store_ops.insert(op, reply);
            }
            Command::Listen {
                key,
                updates,
                reply,
            } => {
                if !self.stack.node().is_joined() {
                    let _ = reply.send(Err(Error::NotJoined));
                    return;
                }
                let op = self.stack.listen(key, now);
                self.listens.insert(op, updates);
                let _ = reply.send(Ok(()));
            }
            Command::Lookup { key, reply } => {
                if !self.stack.node().is_joined() {
                    let _ = reply.send(Err(Error::NotJoined));
                    return;
                }
                let id = self.stack.lookup(key, now);
                self.lookups.insert(id, reply);
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(Snapshot {
                    peers: self.stack.node().peers().to_vec(),
                    fingers: self.stack.node().fingers().to_vec(),
                    successor: self.stack.node().successor().cloned(),
                    predecessor: self.stack.node().predecessor().cloned(),
                    stats: self.stack.node().stats().clone(),
                    secure: self.stack.seal_stats(),
                    paths: self
                        .stack
                        .node()
                        .peers()
                        .iter()
                        .map(|n| self.stack.node().path(&n.addr))
                        .collect(),
                });
            }
            Command::Leave { reply } => {
                if self.stack.node().is_joined() {
                    self.leave_replies.push(reply);
                    self.stack.leave(now);
                } else {
                    let _ = reply.send(());
                }
            }
            Command::Observe { to, reply } => {
                // Callers that gave up waiting are forgotten here.
                self.observers.retain(|(_, r)| !r.is_closed());
                self.observers.push((to.clone(), reply));
                self.stack.observe(to, now);
            }
        }
    }

    /// Hands a received datagram (or the link's error) to the core and
    /// delivers the events that follow.
    pub(super) fn handle_and_deliver(
        &mut self,
        r: std::io::Result<(usize, L::Addr)>,
        buf: &[u8],
        counters: &Counters,
    ) {
        self.handle(r, buf, counters);
        self.events();
    }

    /// Hands a received datagram (or the link's error) to the core; the
    /// events that follow wait for the next [`events`](Self::events).
    pub(super) fn handle(
        &mut self,
        r: std::io::Result<(usize, L::Addr)>,
        buf: &[u8],
        counters: &Counters,
    ) {
        match r {
            Ok((n, from)) => {
                self.sync_room();
                // The clock is read under the lock, so the core's time
                // never goes backwards between callers.
                self.stack.handle_datagram(Instant::now(), from, &buf[..n]);
            }
            Err(e) => {
                // Unconnected UDP sockets can report errors of earlier
                // sends here (ICMP unreachable on some systems): not fatal.
                counters.link_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "receive error");
            }
        }
    }

    /// Hands a received run ([`Link::try_recv_run`]) to the stack, which
    /// opens it in place when keyed; says how many datagrams it held.
    pub(super) fn handle_run(
        &mut self,
        r: std::io::Result<(usize, usize, L::Addr)>,
        buf: &mut [u8],
        counters: &Counters,
    ) -> usize {
        match r {
            Ok((len, stride, from)) => {
                self.sync_room();
                // Under the lock, as in `handle`.
                self.stack
                    .handle_run(Instant::now(), from, buf, len, stride)
            }
            Err(e) => {
                self.handle(Err(e), buf, counters);
                1
            }
        }
    }
}
