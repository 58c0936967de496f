//! Pure: the stack's events delivered to replies, queues and hooks; no I/O.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use chord::{Event, Hash, NodeRef};
use tokio::sync::mpsc;

use super::claim::CLAIMANT_HANDLING;
use super::command::Incoming;
use super::state::State;
use crate::error::Error;
use crate::link::Link;

impl<L: Link> State<L> {
    /// Delivers every event the core has reported. A batch delivered away
    /// from the claimant's own handling may have completed its reply,
    /// which it does not wait on (see `Shared::receive_claimed`): it is
    /// told to look (a spurious look costs it one turn of its loop).
    pub(super) fn events(&mut self) {
        let mut any = false;
        while let Some(e) = self.stack.poll_event() {
            self.event(e);
            any = true;
        }
        if any && !CLAIMANT_HANDLING.with(|h| h.get()) {
            self.kick.kick();
        }
        self.sync_room();
    }

    /// The `send` hook's calls for what the node sent (the stack keeps
    /// copies only when the hook is set).
    pub(super) fn sent_hooks(&mut self) {
        while let Some(t) = self.stack.poll_sent() {
            let id = Hash::of(t.to.to_string());
            self.hooks.sent(NodeRef::new(id, t.to), t.bytes);
        }
    }

    pub(super) fn event(&mut self, e: Event<L::Addr>) {
        match e {
            Event::Joined { successor } => {
                tracing::debug!(id = %self.stack.node().id().short(), successor = %successor.addr, "joined");
                // Where the bootstrap and the successor see this peer:
                // whether it is behind a NAT, and how that NAT maps.
                let now = Instant::now();
                if let Some(b) = self.bootstrap.take() {
                    if self.view.observations().iter().all(|(by, _)| *by != b) {
                        self.stack.observe(b.clone(), now);
                    }
                    if successor.addr != b && successor.id != self.stack.node().id() {
                        self.stack.observe(successor.addr.clone(), now);
                    }
                }
                if let Some(r) = self.join_reply.take() {
                    let _ = r.send(Ok(successor));
                }
            }
            Event::Observed { by, seen } => {
                // Recorded first: a caller woken by the answer sees it in
                // the NAT status.
                self.view.observed(by.clone(), seen.clone());
                if let Some(reach) = self.view.reach() {
                    self.stack.set_reach(reach);
                }
                let (answered, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.observers)
                    .into_iter()
                    .partition(|(to, _)| *to == by);
                self.observers = waiting;
                for (_, reply) in answered {
                    let _ = reply.send(seen.clone());
                }
            }
            Event::AddressLearned { me } => {
                tracing::info!(addr = %me.addr, id = %me.id.short(), "learned this peer's address");
                self.view.set_me(me);
            }
            Event::JoinFailed { reason } => {
                tracing::debug!(%reason, "join failed");
                if let Some(r) = self.join_reply.take() {
                    let _ = r.send(Err(reason.into()));
                }
                // Back to being the first member of a swarm of one.
                self.stack.create(Instant::now());
            }
            Event::LookupDone {
                id, owner, hops, ..
            } => {
                if let Some(r) = self.lookups.remove(&id) {
                    self.counters.outcomes.lookup_hops.observe(f64::from(hops));
                    let _ = r.send(Ok((owner, hops)));
                }
            }
            Event::LookupFailed { id, key } => {
                if let Some(r) = self.lookups.remove(&id) {
                    self.counters
                        .outcomes
                        .lookups_failed
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = r.send(Err(Error::LookupFailed(key)));
                }
            }
            Event::PeerAdded(peer) => {
                if self.new_peers.added(peer.id) {
                    self.hooks.new_peer(peer);
                }
            }
            Event::PeerRemoved(peer) => self.new_peers.removed(peer.id),
            Event::Left => {
                for r in self.leave_replies.drain(..) {
                    let _ = r.send(());
                }
            }
            Event::Delivered { id, to, hops } => {
                if let Some(r) = self.sends.remove(&id) {
                    self.counters
                        .outcomes
                        .sends_confirmed
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = r.send(Ok((to, hops)));
                }
            }
            Event::SendFailed { id, reason } => {
                if let Some(r) = self.sends.remove(&id) {
                    self.counters.outcomes.send_failed(&reason);
                    let _ = r.send(Err(reason.into()));
                }
            }
            Event::Received { from, payload, .. } => self.received(from, payload),
            Event::Store(e) => self.store_event(e),
        }
    }

    /// Routes a store outcome to its caller, a listened key's news to its
    /// listener (a listener that went away ends its listen).
    pub(super) fn store_event(&mut self, e: chord::StoreEvent<L::Addr>) {
        use chord::StoreEvent;
        let op = match &e {
            StoreEvent::Update { op, record, .. } => {
                let gone = match self.listens.get(op) {
                    Some(tx) => matches!(
                        tx.try_send(record.clone()),
                        Err(mpsc::error::TrySendError::Closed(_))
                    ),
                    None => true,
                };
                if gone {
                    self.listens.remove(op);
                    self.stack.unlisten(*op);
                }
                return;
            }
            StoreEvent::Stored { op, .. }
            | StoreEvent::Got { op, .. }
            | StoreEvent::Peers { op, .. }
            | StoreEvent::Failed { op, .. } => *op,
        };
        if let Some(r) = self.store_ops.remove(&op) {
            let _ = r.send(Ok(e));
        } else if let Some(tx) = self.listens.remove(&op) {
            // A listen that failed for good: its queue closes.
            drop(tx);
        }
    }

    /// Hands a message to the application. The core delivered it only
    /// with room for it in both queues (see [`sync_room`](Self::sync_room)),
    /// so neither can be full.
    pub(super) fn received(&mut self, from: NodeRef<L::Addr>, data: Bytes) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        if self.hooks.wants_recv() {
            self.hooks.received(from.clone(), data.clone());
        }
        if self.inbox.try_send(Incoming { from, data }).is_err() {
            // Only once the receiving side is gone (the peer is closing).
            tracing::debug!("receive queue closed: message dropped");
        }
    }

    /// Tells the core how many more messages the application can take:
    /// the free places of the receive queue, and of the `recv` hook's
    /// share of the hook queue when that hook is set. Both only grow
    /// between two calls (only this driver fills them), so the core never
    /// hands up a message there is no room for. Called before datagrams
    /// are handed to the core and after events are delivered.
    pub(super) fn sync_room(&mut self) {
        let room = self.inbox.capacity().min(self.hooks.recv_room());
        self.stack.set_receive_room(room);
    }
}
