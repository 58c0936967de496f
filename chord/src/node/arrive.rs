//! Pure protocol: a data message arriving at a node: forwarded on, or
//! here (deduplicated, assembled from fragments, handed up, confirmed, or
//! refused while the application has no room), and a broadcast's fan-out.

use super::data::WHOLE;
use super::*;
use crate::delivery::Assembled;
use crate::event::MessageId;
use crate::wire::{Confirmed, Data, DataHeader, Delivered, Mode, Refusal, Undeliverable};

impl<A: Address> LocalNode<A> {
    /// A `Data` datagram arrived.
    pub(super) fn on_data(&mut self, from: A, data: Data<A>, now: Instant) {
        let txn = data.header.txn;
        self.confirmed_to = None;
        self.on_data_inner(from.clone(), data, now);
        // A destination that confirmed the message to the very node that
        // handed it over (a one-hop send) has proved the hop with that
        // `Delivered`: no HopAck besides it.
        // Hop id 0 (an unconfirmed datagram) asks for no acknowledgement.
        if self.confirmed_to.take().as_ref() != Some(&from) && txn != 0 {
            let ack = Message::<A>::HopAck(crate::wire::HopAck { txn });
            self.reply(from, ack.encode());
        }
    }

    pub(super) fn on_data_inner(&mut self, from: A, data: Data<A>, now: Instant) {
        if self.phase != Phase::Joined {
            return;
        }
        self.stats.data_forwarded += 1;
        let Data { header, payload } = data;
        if header.msg == 0 && (header.frags != 1 || header.mode == Mode::Broadcast) {
            // An unconfirmed datagram is one whole unicast message: without
            // a message id there is nothing to reassemble or deduplicate by.
            self.stats.datagrams_dropped += 1;
            return;
        }
        if header.last_hop {
            let key = header.target;
            if key == self.me.id && header.mode == Mode::Node {
                self.data_here(header, payload, now);
                return;
            }
            // The predecessor is cloned only where the message goes to it
            // (an address may be a name: a clone per message is not free).
            match (self.table.predecessor(), self.owns(&key)) {
                (Some(p), _) if p.id == key && header.mode == Mode::Node => {
                    let p = p.clone();
                    let mut h = header;
                    h.hops = h.hops.saturating_add(1);
                    self.forward_data(h, payload, p, Vec::new(), now);
                }
                (_, Some(true)) if header.mode == Mode::Node => {
                    self.refuse(&header, Refusal::NoSuchNode, now);
                }
                (_, Some(true)) => self.data_here(header, payload, now),
                (Some(p), Some(false)) => {
                    let p = p.clone();
                    // The sender's successor list is stale: it took us for
                    // the key's owner, but the key lies before our
                    // predecessor. Our fingers could lead straight back to
                    // the sender, which would send it here again, until
                    // the hop limit. Going back predecessor by predecessor
                    // comes strictly nearer the key at each step and stops
                    // at its owner; the sender learns of the nearer node.
                    self.hint_stale_successor(from, &p, now);
                    let mut h = header;
                    h.hops = h.hops.saturating_add(1);
                    self.forward_data(h, payload, p, Vec::new(), now);
                }
                // No predecessor yet: a node is routed on, a key taken.
                _ if header.mode == Mode::Node => {
                    self.route_data(header, payload, Vec::new(), now);
                }
                _ => self.data_here(header, payload, now),
            }
            return;
        }
        self.route_data(header, payload, Vec::new(), now);
    }

    /// Tells `to`, which sent us a last hop for a key before our
    /// predecessor `p`, that `p` lies between it and us: it stabilizes with
    /// `p` now instead of at its next period. One hint per sender per
    /// stabilization period, however many sends overshoot meanwhile.
    pub(super) fn hint_stale_successor(&mut self, to: A, p: &NodeRef<A>, now: Instant) {
        if to == p.addr || to == self.me.addr {
            return;
        }
        let period = self.cfg.stabilize_interval;
        if self
            .hinted
            .as_ref()
            .is_some_and(|(a, t)| *a == to && now.saturating_duration_since(*t) < period)
        {
            return;
        }
        self.hinted = Some((to.clone(), now));
        self.stats.stale_successor_hints += 1;
        let hint = Message::SuccessorHint(SuccessorHint { node: p.clone() });
        self.push_transmit(to, hint.encode());
    }

    /// This node is the destination (or a broadcast receiver).
    pub(super) fn data_here(&mut self, header: DataHeader<A>, payload: Bytes, now: Instant) {
        let origin = header.origin.id;
        if header.mode == Mode::Broadcast {
            if !Interval::closed_open(header.target, header.limit).contains(&self.me.id) {
                return; // routed to cover an arc with no live node in it
            }
            if !self.remember((origin, header.msg, header.frag), now) {
                self.stats.duplicates_suppressed += 1;
                return;
            }
            self.stats.max_broadcast_hops = self.stats.max_broadcast_hops.max(header.hops as u32);
            self.fan_out(&header, payload.clone(), now);
            self.assemble(header, payload, true, now);
            return;
        }
        if header.msg == 0 {
            // An unconfirmed datagram: whole (checked on arrival), with no
            // id to deduplicate or confirm by.
            if !self.has_room() {
                self.stats.dropped_no_room += 1;
                return;
            }
            self.hand_up(Event::Received {
                from: header.origin,
                id: MessageId(0),
                payload,
                broadcast: false,
                hops: header.hops as u32,
            });
            return;
        }
        // A message in one datagram is marked at once (one fingerprint of
        // its id, not two). Fragments are not marked one by one:
        // reassembly ignores a copy of a fragment it holds, and a fragment
        // it refused (full, or expired) must be accepted from the next
        // retry, or the message could never complete and never be
        // confirmed. Only the whole message is marked, once complete.
        // A message is marked only once it is handed up: one the
        // application has no room for is refused as busy, unmarked, so
        // that a retry can be taken once there is room.
        let whole = (origin, header.msg, WHOLE);
        let split = header.frags > 1;
        let fresh = if split || !self.has_room() {
            !self.seen.contains(&whole)
        } else {
            self.remember(whole, now)
        };
        if !fresh {
            self.stats.duplicates_suppressed += 1;
            self.acknowledge(&header, now);
            return;
        }
        if !split && !self.has_room() {
            self.refuse_busy(&header, now);
            return;
        }
        self.assemble(header, payload, split, now);
    }

    /// Records a message (or fragment) id in the dedup window; true if new.
    pub(super) fn remember(&mut self, key: crate::delivery::FragmentKey, now: Instant) -> bool {
        let new = self.seen.insert(key, now);
        self.stats.dedup_evicted_early = self.seen.evicted_early();
        new
    }

    /// Hands the message up once whole; `mark` records it in the dedup
    /// window then (unless the caller has).
    pub(super) fn assemble(
        &mut self,
        header: DataHeader<A>,
        payload: Bytes,
        mark: bool,
        now: Instant,
    ) {
        let origin = header.origin.id;
        match self
            .reassembly
            .add(origin, header.msg, header.frag, header.frags, payload, now)
        {
            Assembled::Complete(whole) => {
                let broadcast = header.mode == Mode::Broadcast;
                if !self.has_room() {
                    // Reassembled but not handed up: a confirmed message is
                    // refused (its origin sends every fragment again), a
                    // broadcast is dropped.
                    if broadcast {
                        self.stats.dropped_no_room += 1;
                    } else {
                        self.refuse_busy(&header, now);
                    }
                    return;
                }
                if mark {
                    self.remember((origin, header.msg, WHOLE), now);
                }
                if !broadcast {
                    self.acknowledge(&header, now);
                }
                self.hand_up(Event::Received {
                    from: header.origin,
                    id: MessageId(header.msg),
                    payload: whole,
                    broadcast,
                    hops: header.hops as u32,
                });
            }
            Assembled::Incomplete => {}
            Assembled::Refused => self.stats.reassembly_refused += 1,
        }
    }

    /// Confirms a message to its origin. Confirmations to one origin wait
    /// in `acks` until the next `poll_transmit` and leave together, one
    /// `Delivered` for all of them: a burst of messages from one origin
    /// costs a datagram back per drain, not one per message, and no wait
    /// (the driver drains after every batch it hands in).
    pub(super) fn acknowledge(&mut self, header: &DataHeader<A>, now: Instant) {
        let confirmed = Confirmed {
            msg: header.msg,
            hops: header.hops,
        };
        if header.origin.id == self.me.id {
            let ack = Delivered {
                owner: self.me.clone(),
                msgs: vec![confirmed],
            };
            let me = self.me.addr.clone();
            self.on_delivered(me, ack, now);
            return;
        }
        let to = &header.origin.addr;
        self.confirmed_to = Some(to.clone());
        let at = match self.acks.iter().position(|(a, _)| a == to) {
            Some(at) => at,
            None => {
                let list = self.spare_acks.pop().unwrap_or_default();
                self.acks.push((to.clone(), list));
                self.acks.len() - 1
            }
        };
        self.acks[at].1.push(confirmed);
        if self.acks[at].1.len() >= crate::config::MAX_LIST_ON_WIRE {
            let (to, msgs) = self.acks.swap_remove(at);
            self.push_delivered(to, msgs);
        }
    }

    /// Queues one `Delivered` for `msgs` to `to`, and keeps the emptied
    /// list to fill again.
    pub(super) fn push_delivered(&mut self, to: A, mut msgs: Vec<Confirmed>) {
        let bytes = crate::wire::encode_delivered(&self.me, &msgs);
        self.push_transmit(to, bytes);
        // Small lists only: an idle node keeps at most 4 x 8 entries.
        if self.spare_acks.len() < super::SPARE_ACK_LISTS && msgs.capacity() <= 8 {
            msgs.clear();
            self.spare_acks.push(msgs);
        }
    }

    /// Tells the origin of a confirmed message that the application has
    /// no room for it now.
    pub(super) fn refuse_busy(&mut self, header: &DataHeader<A>, now: Instant) {
        self.stats.refused_busy += 1;
        self.refuse(header, Refusal::Busy, now);
    }

    pub(super) fn refuse(&mut self, header: &DataHeader<A>, reason: Refusal, now: Instant) {
        if header.mode == Mode::Broadcast {
            return; // nobody waits for a broadcast
        }
        if header.msg == 0 {
            // Nobody waits for an unconfirmed datagram either.
            self.stats.datagrams_dropped += 1;
            return;
        }
        self.stats.undeliverable += 1;
        let msg = Undeliverable {
            msg: header.msg,
            reason,
        };
        if header.origin.id == self.me.id {
            self.on_undeliverable(msg, now);
        } else {
            self.push_transmit(
                header.origin.addr.clone(),
                Message::<A>::Undeliverable(msg).encode(),
            );
        }
    }

    /// Hands a broadcast on to every known node in `(self, header.limit)`.
    pub(super) fn fan_out(&mut self, header: &DataHeader<A>, payload: Bytes, now: Instant) {
        for (child, limit) in self.table.broadcast_children(&header.limit) {
            let h = DataHeader {
                txn: 0,
                msg: header.msg,
                origin: header.origin.clone(),
                target: child.id,
                mode: Mode::Broadcast,
                limit,
                hops: header.hops.saturating_add(1),
                last_hop: true,
                frag: header.frag,
                frags: header.frags,
            };
            self.stats.broadcast_sent += 1;
            self.forward_data(h, payload.clone(), child, Vec::new(), now);
        }
    }
}
