//! Pure protocol: the handlers of each received message kind.

use super::*;

impl<A: Address> LocalNode<A> {
    pub(super) fn on_version_mismatch(&mut self, from: A, v: VersionMismatch) {
        match &self.phase {
            Phase::Joining { bootstrap } if *bootstrap == from => {
                self.fail_join(JoinError::VersionMismatch {
                    min: v.min,
                    max: v.max,
                    ours: VERSION,
                });
            }
            _ => self.stats.dropped_unexpected += 1,
        }
    }

    pub(super) fn on_pong(&mut self, txn: u64, now: Instant) {
        match self.pending.remove(&txn) {
            Some(Pending {
                waiting: Waiting::Verify,
                to,
                ..
            }) => self.verified(to, now),
            Some(Pending {
                waiting: Waiting::Admit { node, roles },
                to,
                ..
            }) => {
                self.verified(to, now);
                for role in roles {
                    self.admitted(node.clone(), role, now);
                }
            }
            Some(Pending {
                waiting: Waiting::Ping { peer },
                to,
                ..
            }) => {
                self.verified(to, now);
                if self.table.predecessor().is_some_and(|p| p.id == peer.id) {
                    self.pred_seen = Some(now);
                }
                if let Some(p) = self.probed.iter_mut().find(|(id, _)| *id == peer.id) {
                    p.1 = true;
                }
            }
            Some(Pending {
                waiting: Waiting::PunchPing { peer },
                to,
                ..
            }) => {
                self.verified(to.clone(), now);
                self.punched(peer, to, now);
            }
            Some(other) => {
                // A Pong answering something else: put it back, count it.
                self.pending.insert(txn, other);
                self.stats.dropped_unexpected += 1;
            }
            None => self.stats.dropped_unexpected += 1,
        }
    }

    /// Whether `key` is ours: between our predecessor (exclusive) and us.
    /// Knowing no predecessor, we cannot tell otherwise and say yes. The
    /// reply is smaller than the request, so it needs no budget.
    pub(super) fn on_owner_check(&mut self, from: A, m: OwnerCheck) {
        if self.phase != Phase::Joined {
            return; // not in a ring: no answer is better than a wrong one
        }
        let yes = self
            .table
            .predecessor()
            .is_none_or(|p| Interval::open_closed(p.id, self.me.id).contains(&m.key));
        let reply = Message::<A>::Owns(Owns { txn: m.txn, yes }).encode();
        self.reply(from, reply);
    }

    pub(super) fn on_owns(&mut self, m: Owns, now: Instant) {
        let Some(Pending {
            waiting:
                Waiting::Confirm {
                    lookup,
                    owner,
                    hops,
                },
            to,
            ..
        }) = self.take_reply(m.txn, |w| matches!(w, Waiting::Confirm { .. }))
        else {
            return;
        };
        self.verified(to, now);
        if m.yes {
            if let Some(l) = self.lookups.remove(&lookup) {
                self.lookup_succeeded(lookup, l, owner, hops, now);
            }
            return;
        }
        // Alive, but the key lies before its predecessor: the route that
        // named it skipped the true owner (a node wrongly thought dead,
        // or one that just joined). Look again after one attempt's time,
        // once the tables had a chance to mend; the deadline still bounds
        // the whole lookup.
        self.stats.lookup_owners_disowned += 1;
        tracing::trace!(me = %self.me.id.short(), owner = ?owner.addr, "lookup owner disowns the key; looking again");
        let retry_at = now + self.attempt_timeout();
        if let Some(l) = self.lookups.get_mut(&lookup) {
            l.retry_at = retry_at;
            self.arm(retry_at);
        }
    }

    pub(super) fn on_get_neighbors(&mut self, from: A, m: GetNeighbors<A>, now: Instant) {
        if self.phase != Phase::Joined {
            return; // not in a ring: no answer is better than a wrong one
        }
        let sender = m.sender;
        if m.notify && sender.id != self.me.id && !self.is_dead(&sender.id, now) {
            // A lone node's successor is itself; a notify tells it of a
            // second, which heads the list once it is known to be there.
            let lone = self.table.successor().is_none();
            if self.admissible(&sender) {
                if lone {
                    self.table.set_successors([sender.clone()]);
                    self.send_stabilize(now);
                }
                self.consider_predecessor(sender, true, now);
            } else {
                if lone {
                    self.admit(sender.clone(), Role::Successor, now);
                }
                self.admit(sender, Role::Predecessor, now);
            }
        }
        let reply = self.neighbors_reply(m.txn, m.want_fingers);
        if self
            .sources
            .budget(&from)
            .is_none_or(|b| reply.len() as u64 <= b)
        {
            self.reply(from, reply);
            return;
        }
        // An unverified address asks for more bytes than it sent. It gets a
        // few full answers (a joining node needs them at once), and a probe
        // whose Pong verifies it; past those, its requests wait for that
        // Pong. A forged source thus draws at most UNVERIFIED_FULL_REPLIES
        // replies, then one Ping (smaller than its request) per
        // request_timeout.
        let probe = Message::<A>::Ping(Ping { txn: u64::MAX }).encode().len();
        let affordable = self
            .sources
            .budget(&from)
            .is_some_and(|b| probe as u64 <= b);
        if affordable && self.sources.probe_due(&from, now, self.cfg.request_timeout) {
            self.sources.sent(&from, probe);
            self.request(from.clone(), 0, Waiting::Verify, now, |txn| {
                Message::Ping(Ping { txn })
            });
        }
        if self.sources.take_free_reply(&from, UNVERIFIED_FULL_REPLIES) {
            // Counted apart from the byte budget, which stays for Pongs
            // and HopAcks.
            self.stats.replies_unverified += 1;
            self.push_transmit(from, reply);
        } else {
            self.stats.replies_deferred += 1;
            self.sources.defer(&from, m.txn, m.want_fingers);
        }
    }

    /// Adopts `node` (verified) as predecessor if it is nearer than the
    /// current one, or, when it notified us (`notified`), if the current one
    /// has been silent too long; the old predecessor is told of its new
    /// successor.
    pub(super) fn consider_predecessor(&mut self, node: NodeRef<A>, notified: bool, now: Instant) {
        if node.id == self.me.id || self.is_dead(&node.id, now) {
            return;
        }
        // A live predecessor stabilizes with us every period; one silent
        // for longer is probably dead, and the notifier is its successor.
        let stale = self
            .pred_seen
            .is_none_or(|t| now.saturating_duration_since(t) > self.cfg.stabilize_interval * 3 / 2);
        let adopt = match self.table.predecessor() {
            None => true,
            Some(p) if p.id == node.id => {
                self.pred_seen = Some(now);
                false
            }
            Some(p) => (notified && stale) || Interval::open(p.id, self.me.id).contains(&node.id),
        };
        if adopt {
            let old = self.table.predecessor().cloned();
            self.table.set_predecessor(Some(node.clone()));
            self.pred_seen = Some(now);
            if let Some(old) = old.filter(|o| o.id != node.id) {
                let hint = Message::SuccessorHint(SuccessorHint { node });
                self.push_transmit(old.addr, hint.encode());
            }
        }
    }

    /// Whether `node` may enter the routing table now: it is there already
    /// at the same address, or its address has answered a request of ours.
    pub(super) fn admissible(&self, node: &NodeRef<A>) -> bool {
        self.table
            .get(&node.id)
            .is_some_and(|n| n.addr == node.addr)
            || self.sources.is_verified(&node.addr)
    }

    /// Probes `node`, heard of second-hand, before it takes `role` in the
    /// table (unless a probe of it is out already). A node that never
    /// answers never enters.
    pub(super) fn admit(&mut self, node: NodeRef<A>, role: Role, now: Instant) {
        if node.id == self.me.id || node.addr == self.me.addr {
            return;
        }
        // One probe per node, whatever the places it may take.
        for p in self.pending.values_mut() {
            if let Waiting::Admit { node: q, roles } = &mut p.waiting {
                if q.id == node.id && q.addr == node.addr {
                    if !roles.contains(&role) {
                        roles.push(role);
                    }
                    return;
                }
            }
        }
        self.stats.admission_probes += 1;
        let (to, retries) = (node.addr.clone(), self.cfg.request_retries);
        let roles = vec![role];
        self.request(to, retries, Waiting::Admit { node, roles }, now, |txn| {
            Message::Ping(Ping { txn })
        });
    }

    /// `node` answered its admission probe: it takes `role`, if that
    /// place is still its own.
    pub(super) fn admitted(&mut self, node: NodeRef<A>, role: Role, now: Instant) {
        if role == Role::Past {
            // It failed us once and answers again: it is not dead.
            self.past.retain(|p| p.node.id != node.id);
            self.dead.retain(|(id, _)| *id != node.id);
        }
        if self.is_dead(&node.id, now) || self.phase != Phase::Joined {
            return;
        }
        match role {
            Role::Successor => {
                if self.table.successors().iter().any(|n| n.id == node.id) {
                    return;
                }
                let head = self.table.successor().map(|s| s.id);
                let me = self.me.id;
                let mut list = self.table.successors().to_vec();
                list.push(node);
                list.sort_by_key(|n| me.distance_to(&n.id));
                self.table.set_successors(list);
                if self.table.successor().map(|s| s.id) != head {
                    self.send_stabilize(now);
                }
            }
            Role::Predecessor => self.consider_predecessor(node, true, now),
            Role::Finger => self.table.insert_finger(node),
            Role::FixFinger(bucket) => self.table.fix_finger(bucket, node),
            Role::Past => {
                if self.table.get(&node.id).is_some() {
                    return;
                }
                self.stats.past_peers_found += 1;
                tracing::debug!(me = %self.me.id.short(), peer = %node.id.short(), "a past peer answers again");
                let nearer = self
                    .table
                    .successor()
                    .is_none_or(|s| Interval::open(self.me.id, s.id).contains(&node.id));
                if nearer {
                    // It heads the successor list once it answers a stabilize.
                    self.stabilize_with(node.clone(), false, now);
                }
                self.consider_predecessor(node.clone(), false, now);
                self.table.insert_finger(node);
            }
        }
    }

    /// The encoded answer to a `GetNeighbors`, from the current state.
    pub(super) fn neighbors_reply(&self, txn: u64, want_fingers: bool) -> Vec<u8> {
        let fingers = if want_fingers {
            let mut f: Vec<NodeRef<A>> = self.table.fingers().to_vec();
            f.truncate(MAX_FINGERS_SENT);
            f
        } else {
            Vec::new()
        };
        Message::Neighbors(Neighbors {
            txn,
            predecessor: self.table.predecessor().cloned(),
            successors: self.table.successors().to_vec(),
            fingers,
        })
        .encode()
    }

    /// `addr` answered a request sent to it: it is verified, and a
    /// `GetNeighbors` of its that was waiting for that is answered now.
    /// Whether a request to `to` that timed out goes out again now; if
    /// not, it is held until `to` answers something ([`RETRANSMIT_BURST`]).
    pub(super) fn may_retransmit(&mut self, to: &A, now: Instant) -> bool {
        let window = self.cfg.request_timeout;
        let b = self.backoff.entry(to.clone()).or_insert(Backoff {
            since: now,
            sent: 0,
            held: Vec::new(),
        });
        if now >= b.since + window {
            b.since = now;
            b.sent = 0;
        }
        if b.sent < RETRANSMIT_BURST {
            b.sent += 1;
            return true;
        }
        false
    }

    /// `addr` answered: the retransmissions held for it go now, each with
    /// a whole request timeout to be answered in.
    pub(super) fn release_held(&mut self, addr: &A, now: Instant) {
        let Some(b) = self.backoff.remove(addr) else {
            return;
        };
        let deadline = now + self.cfg.request_timeout;
        let mut sent = false;
        for txn in b.held {
            if let Some(p) = self.pending.get_mut(&txn).filter(|p| p.held) {
                p.held = false;
                p.deadline = deadline;
                let (to, bytes) = (p.to.clone(), p.bytes.clone());
                self.push_transmit(to, bytes);
                sent = true;
            }
        }
        if sent {
            self.arm(deadline);
        }
    }

    pub(super) fn verified(&mut self, addr: A, now: Instant) {
        if !self.backoff.is_empty() {
            self.release_held(&addr, now);
        }
        if let Some((txn, want_fingers)) = self.sources.verify_and_take_deferred(&addr, now) {
            if self.phase == Phase::Joined {
                let reply = self.neighbors_reply(txn, want_fingers);
                self.reply(addr, reply);
            }
        }
    }

    /// Sends a reply to the address a request came from, unless that
    /// address is unverified and the reply would bring what it was sent
    /// above what it sent (a forged source would turn the node into an
    /// amplifier); such replies are dropped and counted.
    pub(super) fn reply(&mut self, to: A, bytes: Vec<u8>) {
        if self
            .sources
            .budget(&to)
            .is_some_and(|b| bytes.len() as u64 > b)
        {
            self.stats.dropped_amplification += 1;
            return;
        }
        self.sources.sent(&to, bytes.len());
        self.push_transmit(to, bytes);
    }

    pub(super) fn on_neighbors(&mut self, m: Neighbors<A>, now: Instant) {
        let Some(Pending {
            waiting: Waiting::Stabilize { peer },
            to,
            ..
        }) = self.take_reply(m.txn, |w| matches!(w, Waiting::Stabilize { .. }))
        else {
            return;
        };
        self.verified(to, now);
        if matches!(self.phase, Phase::Joining { .. }) {
            self.phase = Phase::Joined;
            self.schedule_tick(now);
            self.events.push_back(Event::Joined {
                successor: peer.clone(),
            });
        }
        if self.is_dead(&peer.id, now) {
            // It answered, then left: its farewell overtook this reply.
            self.stats.dropped_unexpected += 1;
            return;
        }
        if let Some(s) = self.table.successor() {
            if s.id != peer.id && !Interval::open(self.me.id, s.id).contains(&peer.id) {
                // A hinted node that a nearer successor overtook meanwhile.
                return;
            }
        }
        // Nodes named here enter the table only once they are known to be
        // where they claim: at once if verified already, after answering a
        // probe otherwise.
        for f in m.fingers {
            if self.is_dead(&f.id, now) || !self.table.wants_finger(&f) {
                continue;
            }
            if self.admissible(&f) {
                self.table.insert_finger(f);
            } else {
                self.admit(f, Role::Finger, now);
            }
        }
        let mut list: Vec<NodeRef<A>> = Vec::with_capacity(m.successors.len() + 2);
        let mut better = None;
        let mut unverified = None;
        if let Some(p) = m.predecessor {
            if p.id != self.me.id
                && Interval::open(self.me.id, peer.id).contains(&p.id)
                && !self.is_dead(&p.id, now)
            {
                if self.admissible(&p) {
                    list.push(p.clone());
                    better = Some(p);
                } else {
                    unverified = Some(p);
                }
            }
        }
        list.push(peer);
        let mut probe = Vec::new();
        for n in m.successors {
            if self.is_dead(&n.id, now) {
                continue;
            }
            if self.admissible(&n) {
                list.push(n);
            } else {
                probe.push(n);
            }
        }
        self.table.set_successors(list);
        for n in probe {
            self.admit(n, Role::Successor, now);
        }
        if better.is_some() {
            // A nearer successor appeared: stabilize with it (and notify it) now.
            self.send_stabilize(now);
        } else if let Some(p) = unverified {
            // A nearer successor we have not heard from: it heads the list
            // once it answers a stabilize of its own.
            self.stabilize_with(p, false, now);
        }
    }

    pub(super) fn on_find_successor(&mut self, from: A, m: FindSuccessor<A>, now: Instant) {
        let ack = Message::<A>::HopAck(HopAck { txn: m.txn }).encode();
        self.reply(from.clone(), ack);
        if self.phase != Phase::Joined {
            return;
        }
        if m.hops >= MAX_HOPS {
            self.stats.dropped_hop_limit += 1;
            return;
        }
        self.stats.lookups_forwarded += 1;
        let mut m = m;
        if !m.joining && m.via.as_ref() == Some(&self.me.addr) && m.origin.addr == from {
            // The first hop of an origin behind a NAT, asked to relay.
            self.relays
                .retain(|r| r.until > now && r.lookup != m.lookup);
            if self.relays.len() < JOIN_RELAYS {
                self.relays.push(Relay {
                    to: from.clone(),
                    lookup: m.lookup,
                    until: now + self.cfg.lookup_timeout,
                });
            } else {
                m.via = None;
            }
        }
        if m.joining && m.via.is_none() && m.origin.addr == from && from != self.me.addr {
            // A joiner's first hop: the answer comes back through here,
            // since the joiner may be behind a NAT that lets in only us.
            self.relays
                .retain(|r| r.until > now && !(r.lookup == m.lookup && r.to == from));
            if self.relays.len() < JOIN_RELAYS {
                self.relays.push(Relay {
                    to: from,
                    lookup: m.lookup,
                    until: now + self.cfg.lookup_timeout,
                });
                m.via = Some(self.me.addr.clone());
            }
        }
        self.route_lookup(m, Vec::new(), now);
    }

    pub(super) fn on_hop_ack(&mut self, txn: u64, now: Instant) {
        match self.pending.remove(&txn) {
            Some(Pending {
                waiting: Waiting::Forward { .. } | Waiting::Data { .. },
                to,
                ..
            }) => self.verified(to, now),
            Some(other) => {
                self.pending.insert(txn, other);
                self.stats.dropped_unexpected += 1;
            }
            None => self.stats.dropped_unexpected += 1,
        }
    }

    pub(super) fn on_found(&mut self, m: Found<A>, now: Instant) {
        if let Some(at) = self
            .relays
            .iter()
            .position(|r| r.lookup == m.lookup && r.until > now)
        {
            // The answer to a joiner this node relays for.
            let to = self.relays.swap_remove(at).to;
            self.push_transmit(to, Message::Found(m).encode());
            return;
        }
        let Some(l) = self.lookups.get(&m.lookup) else {
            self.stats.dropped_unexpected += 1;
            return;
        };
        if l.key != m.key {
            self.stats.dropped_unexpected += 1;
            return;
        }
        let me = m.owner.id == self.me.id && m.owner.addr == self.me.addr;
        if matches!(l.purpose, Purpose::User | Purpose::Store(_)) && !me {
            // The node that answered may not know yet that the owner it
            // names has just died: ask the owner itself first.
            let asking = self.pending.values().any(
                |p| matches!(&p.waiting, Waiting::Confirm { lookup, .. } if *lookup == m.lookup),
            );
            if asking {
                return;
            }
            let hold = now + self.attempt_timeout();
            if let Some(l) = self.lookups.get_mut(&m.lookup) {
                l.retry_at = l.retry_at.max(hold);
            }
            let waiting = Waiting::Confirm {
                lookup: m.lookup,
                owner: m.owner.clone(),
                hops: m.hops as u32,
            };
            let (to, retries) = (m.owner.addr, self.cfg.request_retries);
            let key = m.key;
            self.request(to, retries, waiting, now, |txn| {
                Message::OwnerCheck(OwnerCheck { txn, key })
            });
            return;
        }
        let Some(l) = self.lookups.remove(&m.lookup) else {
            return;
        };
        self.lookup_succeeded(m.lookup, l, m.owner, m.hops as u32, now);
    }

    pub(super) fn on_successor_hint(&mut self, from: A, node: NodeRef<A>, now: Instant) {
        // A hint may come from any node (the one that has us as its old
        // predecessor): it costs its sender a token, and its target one
        // stabilize request (with retries), never a reply to the sender.
        let _ = from;
        if self.phase != Phase::Joined
            || node.id == self.me.id
            || node.addr == self.me.addr
            || self.is_dead(&node.id, now)
        {
            self.stats.dropped_unexpected += 1;
            return;
        }
        let nearer = match self.table.successor() {
            None => true,
            Some(s) => Interval::open(self.me.id, s.id).contains(&node.id),
        };
        if !nearer {
            return;
        }
        // Stabilize with it now; it heads the list only once it answers, so a
        // false hint costs one unanswered request and changes nothing.
        self.stabilize_with(node, false, now);
    }

    pub(super) fn on_leave(&mut self, from: A, m: Leave<A>, now: Instant) {
        // Only the node itself says it leaves: the address it has in our
        // tables must be the one the farewell came from.
        if self.table.get(&m.sender).is_none_or(|n| n.addr != from) {
            self.stats.dropped_unexpected += 1;
            return;
        }
        let was_succ = self.table.successor().is_some_and(|s| s.id == m.sender);
        let was_pred = self.table.predecessor().is_some_and(|p| p.id == m.sender);
        self.table.remove(&m.sender);
        self.remember_dead(m.sender, now);
        if was_succ {
            // The leaver's successors are second-hand: those not verified
            // yet are probed first.
            let me = self.me.id;
            let (mut list, probe): (Vec<_>, Vec<_>) = m
                .successors
                .into_iter()
                .filter(|n| n.id != m.sender)
                .partition(|n| self.admissible(n));
            list.extend(self.table.successors().iter().cloned());
            list.sort_by_key(|n| me.distance_to(&n.id));
            self.table.set_successors(list);
            for n in probe {
                self.admit(n, Role::Successor, now);
            }
            self.send_stabilize(now);
        }
        if was_pred {
            let pred = m.predecessor.filter(|p| p.id != m.sender);
            self.table.set_predecessor(None);
            self.pred_seen = Some(now);
            if let Some(p) = pred {
                if self.admissible(&p) {
                    self.table.set_predecessor(Some(p));
                } else {
                    self.admit(p, Role::Predecessor, now);
                }
            }
        }
    }
}
