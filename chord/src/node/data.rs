//! Application messages: routed send with end-to-end acknowledgement and
//! duplicates, broadcast by interval splitting, fragmentation.
//!
//! A message moves hop by hop like a lookup (each hop acknowledged, a silent
//! hop routed around). The hop that believes the next node owns the target
//! marks the message `last_hop`; that node checks with its own predecessor
//! that it really is the owner, delivers, and acknowledges to the origin.
//!
//! Broadcast follows El-Ansary et al., "Efficient Broadcast in Structured P2P
//! Networks" (IPTPS 2003): a node responsible for the arc `(self, limit)`
//! sends the message to every node it knows in that arc, giving each the arc
//! up to the next one. In a stable ring every node receives it exactly once:
//! N-1 messages.

use bytes::Bytes;
use rand_core::RngCore;
use std::time::Instant;

use super::{LocalNode, Phase, Reroute, Waiting};
use crate::config::MAX_HOPS;
use smallvec::SmallVec;

use crate::event::{Event, MessageId, SendError, Target};
use crate::hash::{Hash, Interval};
use crate::node::Address;
use crate::routing::NextHop;
use crate::wire::{Data, DataHeader, Delivered, Message, Mode, NodeRef, Refusal, Undeliverable};

/// Marks the completion of a whole message in the dedup window.
pub(super) const WHOLE: u16 = u16::MAX;

/// A message this node sent and has not yet seen delivered.
#[derive(Clone, Debug)]
pub(super) struct Outgoing {
    target: Target,
    payload: Bytes,
    duplicates: u8,
    retry_at: Instant,
    deadline: Instant,
    /// First hops of earlier attempts: later attempts try others.
    avoid: SmallVec<[Hash; 2]>,
    refusals: u32,
    /// What `NoSuchNode` answers have done to this message.
    no_such_node: Verdict,
    /// Attempts answered `Busy` so far: the destination's application had
    /// no room (see `busy`).
    busy: u8,
    /// Whether this attempt has been answered busy already (its other
    /// copies' answers do not count again).
    busy_this_attempt: bool,
    /// The pending requests (txns) that handed a copy of this message to
    /// a first hop, so that the destination's `Delivered` finds the ones
    /// it proves without a scan of every pending request. Entries whose
    /// request is gone are dropped as new ones come.
    first_hops: SmallVec<[u64; 2]>,
}

/// Where `NoSuchNode` answers left an outgoing message. The first gets
/// one more attempt a request timeout later: a node that has just joined
/// is not yet in its successor's table (nor in the table of the node it
/// joined through) until that node has probed it, so the first verdict
/// on a fresh node can be early. The second stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// No `NoSuchNode` yet.
    None,
    /// One came: another attempt is due at `retry_at`.
    Recheck,
    /// That attempt has gone out.
    Rechecking,
    /// Refused again: the send fails with `NoSuchNode` at `deadline`
    /// unless a confirmation overtakes the verdict.
    Final,
}

impl Outgoing {
    pub(super) fn wake_at(&self) -> Instant {
        self.retry_at.min(self.deadline)
    }
}

enum Decision<A> {
    Here,
    Forward(NodeRef<A>, bool),
    Refuse(Refusal),
}

impl<A: Address> LocalNode<A> {
    /// Sends `payload` to `target` along `duplicates` extra routes with
    /// distinct first hops. Ends in exactly one [`Event::Delivered`] (the
    /// destination confirmed) or [`Event::SendFailed`].
    ///
    /// Refused at once when the node is not in a ring, the payload is larger
    /// than `max_payload`, or too many sends are outstanding. The payload
    /// (a `Vec<u8>`, a `Bytes`, ...) is kept for retries as it is, not copied.
    pub fn send(
        &mut self,
        target: Target,
        payload: impl Into<Bytes>,
        duplicates: u8,
        now: Instant,
    ) -> Result<MessageId, SendError> {
        self.send_by(
            target,
            payload,
            duplicates,
            now + self.cfg.send_timeout,
            now,
        )
    }

    /// As [`send`](Self::send), but given up at `deadline` when that is
    /// before the send timeout: no attempt is made after it, and
    /// [`Event::SendFailed`] reports it then (the message may still have
    /// arrived, as after any lost confirmation).
    pub fn send_by(
        &mut self,
        target: Target,
        payload: impl Into<Bytes>,
        duplicates: u8,
        deadline: Instant,
        now: Instant,
    ) -> Result<MessageId, SendError> {
        let payload = payload.into();
        self.check_sendable(payload.len())?;
        if self.outgoing.len() >= self.cfg.max_pending {
            return Err(SendError::Overloaded);
        }
        let id = self.fresh_id(|n, id| n.outgoing.contains_key(&id));
        self.outgoing.insert(
            id,
            Outgoing {
                target,
                payload,
                duplicates,
                retry_at: now,
                deadline: deadline.min(now + self.cfg.send_timeout),
                avoid: SmallVec::new(),
                refusals: 0,
                no_such_node: Verdict::None,
                busy: 0,
                busy_this_attempt: false,
                first_hops: SmallVec::new(),
            },
        );
        self.send_attempt(id, now);
        self.sync_known();
        Ok(MessageId(id))
    }

    /// Sends `payload` to every other live node of the ring, each once.
    /// There is no completion event: receivers see [`Event::Received`] with
    /// `broadcast: true`.
    pub fn broadcast(
        &mut self,
        payload: impl Into<Bytes>,
        now: Instant,
    ) -> Result<MessageId, SendError> {
        let payload = payload.into();
        self.check_sendable(payload.len())?;
        let id = self.fresh_id(|_, _| false);
        let me = self.me.clone();
        let parts = fragments(&payload, self.cfg.max_fragment);
        let count = parts.len() as u16;
        for (i, part) in parts.enumerate() {
            self.remember((me.id, id, i as u16), now);
            let header = DataHeader {
                txn: 0,
                msg: id,
                origin: me.clone(),
                target: me.id,
                mode: Mode::Broadcast,
                limit: me.id,
                hops: 0,
                last_hop: true,
                frag: i as u16,
                frags: count,
            };
            self.fan_out(&header, part, now);
        }
        self.sync_known();
        Ok(MessageId(id))
    }

    /// Sends `payload` towards `target` once, unconfirmed: no message id,
    /// no hop acknowledgements, no retries, no end-to-end confirmation,
    /// and no state kept here or at any hop. It is one datagram, so the
    /// payload must fit one fragment (`Config::max_fragment`).
    ///
    /// `Ok` says the datagram left (or was handed up here, when this node
    /// is the destination), not that it arrived; a refusal decided here
    /// (`NoSuchNode`, `NoRoute`) is returned at once. On the wire such a
    /// datagram is a `Data` with message id 0 and hop id 0 (ids are never
    /// 0 otherwise); its receiver sees [`Event::Received`] with
    /// `id: MessageId(0)`.
    pub fn send_datagram(
        &mut self,
        target: Target,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), SendError> {
        self.check_sendable(payload.len())?;
        if payload.len() > self.cfg.max_fragment {
            return Err(SendError::TooLarge {
                size: payload.len(),
                max: self.cfg.max_fragment,
            });
        }
        let (key, mode) = match target {
            Target::Key(k) => (k, Mode::Key),
            Target::Node(n) => (n, Mode::Node),
        };
        let mut header = self.first_header(0, key, mode, 0, 1);
        match self.decide(&header, &[]) {
            Decision::Here => self.data_here(header, Bytes::copy_from_slice(payload), now),
            Decision::Forward(next, last_hop) => {
                header.hops = 1;
                header.last_hop = last_hop;
                self.forward_datagram(header, Bytes::copy_from_slice(payload), &next.addr);
            }
            Decision::Refuse(Refusal::NoSuchNode) => return Err(SendError::NoSuchNode),
            Decision::Refuse(Refusal::NoRoute | Refusal::Busy) => return Err(SendError::NoRoute),
        }
        self.stats.datagrams_sent += 1;
        Ok(())
    }

    /// Sends an unconfirmed datagram (message id 0) on to `to`, keeping
    /// nothing: hop id 0 asks for no acknowledgement.
    pub(super) fn forward_datagram(&mut self, header: DataHeader<A>, payload: Bytes, to: &A) {
        let bytes = Message::Data(Data {
            header: DataHeader { txn: 0, ..header },
            payload,
        })
        .encode();
        self.push_transmit(to.clone(), bytes);
    }

    pub(super) fn check_sendable(&self, len: usize) -> Result<(), SendError> {
        match self.phase {
            Phase::Joined => {}
            Phase::Left => return Err(SendError::Left),
            _ => return Err(SendError::NotJoined),
        }
        if len > self.cfg.max_payload {
            return Err(SendError::TooLarge {
                size: len,
                max: self.cfg.max_payload,
            });
        }
        Ok(())
    }

    /// Sends every copy of every fragment of an outgoing message once more.
    pub(super) fn send_attempt(&mut self, id: u64, now: Instant) {
        let retry = self.cfg.send_attempt_timeout;
        let Some(o) = self.outgoing.get_mut(&id) else {
            return;
        };
        o.retry_at = now + retry;
        o.refusals = 0;
        o.busy_this_attempt = false;
        if o.no_such_node == Verdict::Recheck {
            o.no_such_node = Verdict::Rechecking;
        }
        let wake = o.wake_at();
        let (target, mode) = match o.target {
            Target::Key(k) => (k, Mode::Key),
            Target::Node(n) => (n, Mode::Node),
        };
        let copies = o.duplicates as usize + 1;
        // Out of the entry while the copies go (routing may touch the
        // entry), so that each fragment is copied once, into its datagram.
        let payload = std::mem::take(&mut o.payload);
        let mut avoid = o.avoid.clone();
        self.arm(wake);
        let parts = fragments(&payload, self.cfg.max_fragment);
        let count = parts.len() as u16;
        for copy in 0..copies {
            let mut first = None;
            if copy == 0 && !avoid.is_empty() && self.no_route_avoiding(target, mode, &avoid) {
                // Every first hop was tried already (for a neighbour, the
                // only one is the destination itself): avoiding them would
                // refuse this attempt at once, so start the rotation over.
                avoid.clear();
            }
            for (i, part) in parts.clone().enumerate() {
                let header = self.first_header(id, target, mode, i as u16, count);
                first = self.route_data(header, part, avoid.to_vec(), now);
            }
            match first {
                Some(hop) => avoid.push(hop),
                None => break, // delivered here or refused: no route to vary
            }
        }
        if let Some(o) = self.outgoing.get_mut(&id) {
            o.avoid = avoid;
            o.payload = payload;
        }
    }

    /// Whether a message from here to `target` would be refused for want
    /// of a route when the first hops in `avoid` are excluded.
    pub(super) fn no_route_avoiding(&self, target: Hash, mode: Mode, avoid: &[Hash]) -> bool {
        let probe = self.first_header(0, target, mode, 0, 1);
        matches!(
            self.decide(&probe, avoid),
            Decision::Refuse(Refusal::NoRoute)
        )
    }

    /// The header of fragment `frag` of `frags` of message `msg` as it
    /// leaves its origin (this node).
    pub(super) fn first_header(
        &self,
        msg: u64,
        target: Hash,
        mode: Mode,
        frag: u16,
        frags: u16,
    ) -> DataHeader<A> {
        DataHeader {
            txn: 0,
            msg,
            origin: self.me.clone(),
            target,
            mode,
            limit: Hash::ZERO,
            hops: 0,
            last_hop: false,
            frag,
            frags,
        }
    }

    /// Moves a message one step; returns the next hop's id if it was sent on.
    pub(super) fn route_data(
        &mut self,
        mut header: DataHeader<A>,
        payload: Bytes,
        exclude: Vec<Hash>,
        now: Instant,
    ) -> Option<Hash> {
        match self.decide(&header, &exclude) {
            Decision::Here => {
                self.data_here(header, payload, now);
                None
            }
            Decision::Forward(next, last_hop) => {
                header.hops = header.hops.saturating_add(1);
                header.last_hop = last_hop;
                let id = next.id;
                self.forward_data(header, payload, next, exclude, now);
                Some(id)
            }
            Decision::Refuse(reason) => {
                self.refuse(&header, reason, now);
                None
            }
        }
    }

    /// `Some(true)` if this node owns `key`, `None` when it cannot tell
    /// (no predecessor known yet).
    pub(super) fn owns(&self, key: &Hash) -> Option<bool> {
        match self.table.predecessor() {
            Some(p) => Some(Interval::open_closed(p.id, self.me.id).contains(key)),
            None if self.table.successor().is_none() => Some(true),
            None => None,
        }
    }

    fn decide(&self, header: &DataHeader<A>, exclude: &[Hash]) -> Decision<A> {
        let key = &header.target;
        let here = match header.mode {
            Mode::Node => *key == self.me.id,
            Mode::Key | Mode::Broadcast => self.owns(key) == Some(true),
        };
        if here {
            return Decision::Here;
        }
        if header.hops >= MAX_HOPS {
            return Decision::Refuse(Refusal::NoRoute);
        }
        if self.table.successor().is_none() {
            // Alone: every key is ours, but no other node exists.
            return match header.mode {
                Mode::Node => Decision::Refuse(Refusal::NoSuchNode),
                _ => Decision::Here,
            };
        }
        // The owner may be in the successor list: go straight there.
        let mut prev = self.me.id;
        for s in self.table.successors() {
            if Interval::open_closed(prev, s.id).contains(key) {
                if exclude.contains(&s.id) {
                    continue; // silent: the next one owns the key now
                }
                return Decision::Forward(s.clone(), true);
            }
            prev = s.id;
        }
        // The node sent to is in the table (the predecessor, a finger):
        // straight to it as the last hop. Routing by fingers stops short of
        // a key, at a node before it, which costs a hop; and when that node
        // is silent, it left no way on at all until it was declared dead,
        // though the target itself was known and answering.
        if header.mode == Mode::Node {
            if let Some(n) = self.table.get(key).filter(|n| !exclude.contains(&n.id)) {
                return Decision::Forward(n.clone(), true);
            }
        }
        match self.table.next_hop(key, exclude) {
            // Data whose every way on failed is refused (the origin tries
            // again); only lookups go back to a silent successor.
            NextHop::Forward(n) if !exclude.contains(&n.id) => Decision::Forward(n.clone(), false),
            _ => Decision::Refuse(Refusal::NoRoute),
        }
    }

    pub(super) fn forward_data(
        &mut self,
        header: DataHeader<A>,
        payload: Bytes,
        next: NodeRef<A>,
        exclude: Vec<Hash>,
        now: Instant,
    ) {
        if header.msg == 0 {
            self.forward_datagram(header, payload, &next.addr);
            return;
        }
        // A silent forwarder is routed around at once (the datagram is kept
        // in the pending entry for that); the destination itself is asked
        // again first, as any request is: slow is not dead, and there is no
        // other way to it.
        let retries = if header.last_hop {
            self.cfg.request_retries
        } else {
            0
        };
        let (msg, mine) = (header.msg, header.origin.id == self.me.id);
        let waiting = Waiting::Data {
            next: next.id,
            exclude,
            msg,
            reroute: if header.mode == Mode::Broadcast && retries > 0 {
                Reroute::AtFirstTimeout
            } else {
                Reroute::OnFailure
            },
        };
        let txn = self.request(next.addr, retries, waiting, now, |txn| {
            Message::Data(Data {
                header: DataHeader { txn, ..header },
                payload,
            })
        });
        if let (Some(txn), true) = (txn, mine) {
            if let Some(o) = self.outgoing.get_mut(&msg) {
                let pending = &self.pending;
                o.first_hops.retain(|t| pending.contains_key(t));
                o.first_hops.push(txn);
            }
        }
    }

    /// The next hop of a message did not acknowledge it, after its
    /// retries: it is demoted, and the message routed around it unless
    /// that was done already (a broadcast child's arc, at the first
    /// timeout).
    pub(super) fn data_hop_failed(
        &mut self,
        bytes: &[u8],
        next: Hash,
        exclude: Vec<Hash>,
        reroute: Reroute,
        now: Instant,
    ) {
        self.demote(&next, now);
        if self.table.successor().is_some_and(|s| s.id == next) {
            self.send_stabilize(now);
        }
        if reroute != Reroute::Done {
            self.recover_arc(bytes, next, exclude, now);
        }
    }

    /// Routes the message kept in a silent hop's pending entry around
    /// that hop (a message for exactly `next` is refused instead, as
    /// undeliverable): to the key's live owner but `next` for a unicast, to the
    /// first live node at or after the child's id for a broadcast (which
    /// covers what is left of the child's arc). For a broadcast this runs
    /// at the hop's first timeout, not after its retries: a dead child
    /// would otherwise hold up its whole subtree for the retries'
    /// duration (1.5 s by default) at each level where one died, and a
    /// child that was only slow receives the copy twice and drops the
    /// second as a duplicate.
    pub(super) fn recover_arc(
        &mut self,
        bytes: &[u8],
        next: Hash,
        mut exclude: Vec<Hash>,
        now: Instant,
    ) {
        let Ok(Message::Data(Data {
            mut header,
            payload,
        })) = Message::<A>::decode(bytes)
        else {
            return;
        };
        if header.mode == Mode::Node && header.target == next {
            // The very node it was meant for is silent, after retries. That
            // is not proof that it is gone (it may be overloaded): the origin
            // tries again, and once the ring has healed around a dead node its
            // successor answers NoSuchNode with authority.
            self.refuse(&header, Refusal::NoRoute, now);
            return;
        }
        exclude.push(next);
        header.hops = header.hops.saturating_sub(1);
        header.last_hop = false;
        if self.phase == Phase::Joined {
            self.route_data(header, payload, exclude, now);
        }
    }

    pub(super) fn on_delivered(&mut self, from: A, m: Delivered<A>, now: Instant) {
        // Sent to the destination itself, the message needs no HopAck: this
        // confirmation proves the hop (and ends its retries).
        // Only the origin hears `Delivered`, and its copies' first hops are
        // listed in the outgoing entry (none once it is gone: a late
        // confirmation of a message delivered already).
        let mut proved = false;
        for c in &m.msgs {
            let Some(o) = self.outgoing.remove(&c.msg) else {
                // A later copy of something already delivered: expected.
                continue;
            };
            for txn in &o.first_hops {
                let hop = self.pending.get(txn).is_some_and(|p| {
                    p.to == from && matches!(p.waiting, Waiting::Data { msg, .. } if msg == c.msg)
                });
                if hop {
                    self.pending.remove(txn);
                    proved = true;
                }
            }
            self.events.push_back(Event::Delivered {
                id: MessageId(c.msg),
                to: m.owner.clone(),
                hops: c.hops as u32,
            });
        }
        if proved {
            self.verified(from, now);
        }
    }

    pub(super) fn on_undeliverable(&mut self, m: Undeliverable, now: Instant) {
        if m.reason == Refusal::Busy {
            self.busy(m.msg, now);
            return;
        }
        let Some(o) = self.outgoing.get_mut(&m.msg) else {
            return;
        };
        match m.reason {
            Refusal::NoSuchNode => {
                let later = now + self.cfg.request_timeout;
                match o.no_such_node {
                    Verdict::None => {
                        // Perhaps early (see `Verdict`): once more, later.
                        o.no_such_node = Verdict::Recheck;
                        o.retry_at = later.min(o.deadline);
                    }
                    // Another copy's answer to the same attempt.
                    Verdict::Recheck => return,
                    Verdict::Rechecking | Verdict::Final => {
                        // The destination may have received a copy whose
                        // hop acknowledgement came late: give its
                        // confirmation one request timeout to arrive,
                        // then fail with this reason.
                        o.no_such_node = Verdict::Final;
                        o.deadline = o.deadline.min(later);
                        o.retry_at = o.deadline;
                    }
                }
                let wake = o.wake_at();
                self.arm(wake);
            }
            Refusal::Busy => unreachable!("handled by `busy`"),
            Refusal::NoRoute => {
                o.refusals += 1;
                if o.refusals > o.duplicates as u32 {
                    o.retry_at = now; // every copy refused: try again now
                    self.arm(now);
                }
            }
        }
    }

    /// The destination of outgoing message `id` had no room for it: the
    /// next attempt waits `BUSY_RETRY_FIRST`, doubled after each attempt
    /// answered busy up to `BUSY_RETRY_MAX`, of which a random half: the
    /// messages held back by one full queue come back spread out, not all
    /// at once to find room for a few.
    pub(super) fn busy(&mut self, id: u64, now: Instant) {
        use crate::config::{BUSY_RETRY_FIRST, BUSY_RETRY_MAX};
        let draw = self.rng.next_u32();
        let cap = BUSY_RETRY_MAX.min(self.cfg.send_attempt_timeout);
        let Some(o) = self.outgoing.get_mut(&id) else {
            return;
        };
        if o.busy_this_attempt {
            return; // another copy's answer to the same attempt
        }
        o.busy_this_attempt = true;
        o.busy = o.busy.saturating_add(1);
        let full = BUSY_RETRY_FIRST
            .saturating_mul(1 << (o.busy - 1).min(16))
            .min(cap);
        let wait = full / 2 + (full / 2).mul_f64(f64::from(draw) / f64::from(u32::MAX));
        o.retry_at = (now + wait).min(o.deadline);
        let wake = o.wake_at();
        self.arm(wake);
    }

    /// Retries and deadlines of outgoing messages.
    pub(super) fn outgoing_timeouts(&mut self, now: Instant) {
        let mut due: Vec<u64> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.wake_at() <= now)
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable(); // id order, whatever the map's layout
        for id in due {
            let Some(o) = self.outgoing.get(&id) else {
                continue;
            };
            if o.deadline <= now {
                let reason = if o.no_such_node != Verdict::None {
                    SendError::NoSuchNode
                } else if o.busy > 0 {
                    SendError::ReceiverBusy
                } else {
                    SendError::Timeout
                };
                self.outgoing.remove(&id);
                self.events.push_back(Event::SendFailed {
                    id: MessageId(id),
                    reason,
                });
            } else {
                if self.behind_nat() {
                    // Unconfirmed: maybe the destination's confirmations
                    // find this node's NAT closed. Probe it directly.
                    let key = match o.target {
                        Target::Key(k) | Target::Node(k) => k,
                    };
                    self.reach_out(key, now);
                }
                self.send_attempt(id, now);
            }
        }
    }

    /// Fails every outgoing message (on leave).
    pub(super) fn fail_outgoing(&mut self) {
        let mut ids: Vec<u64> = std::mem::take(&mut self.outgoing).into_keys().collect();
        ids.sort_unstable();
        for id in ids {
            self.events.push_back(Event::SendFailed {
                id: MessageId(id),
                reason: SendError::Left,
            });
        }
    }
}

/// Splits a payload into pieces of at most `max` bytes, each sharing the
/// payload's buffer (one empty piece for an empty payload).
fn fragments(payload: &Bytes, max: usize) -> Fragments<'_> {
    let max = max.max(1);
    Fragments {
        payload,
        max,
        at: 0,
        count: payload.len().div_ceil(max).max(1),
    }
}

/// The pieces of a payload, as [`fragments`] cuts them.
#[derive(Clone)]
struct Fragments<'a> {
    payload: &'a Bytes,
    max: usize,
    at: usize,
    count: usize,
}

impl Fragments<'_> {
    fn len(&self) -> usize {
        self.count
    }
}

impl Iterator for Fragments<'_> {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.at >= self.count {
            return None;
        }
        let start = self.at * self.max;
        let end = (start + self.max).min(self.payload.len());
        self.at += 1;
        Some(self.payload.slice(start.min(end)..end))
    }
}
