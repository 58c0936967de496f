//! Pure protocol: the periodic tick: stabilize, predecessor check, finger repair, failure memory.

use super::*;

impl<A: Address> LocalNode<A> {
    pub(super) fn schedule_tick(&mut self, now: Instant) {
        // Jitter of +-20% keeps nodes from falling into lock step.
        let base = self.cfg.stabilize_interval;
        let jitter = (self.rng.next_u32() % 401) as f64 / 1000.0 + 0.8;
        let at = now + base.mul_f64(jitter);
        self.next_tick = Some(at);
        self.arm(at);
    }

    pub(super) fn tick(&mut self, now: Instant) {
        self.schedule_tick(now);
        // A hash map keeps its largest size: a burst (a join, a flood of
        // sends) would leave every idle node holding its peak.
        trim(&mut self.pending);
        trim(&mut self.outgoing);
        trim_queue(&mut self.transmits);
        trim_queue(&mut self.events);
        // Destinations quiet for a request timeout, with nothing held that
        // is still pending, are forgotten.
        let (pending, window) = (&self.pending, self.cfg.request_timeout);
        self.backoff.retain(|_, b| {
            b.held.retain(|t| pending.contains_key(t));
            now < b.since + window || !b.held.is_empty()
        });
        if self.phase != Phase::Joined {
            return;
        }
        self.dead
            .retain(|(_, at)| now < *at + self.cfg.stabilize_interval * DEAD_MEMORY_PERIODS);
        self.send_stabilize(now);
        self.check_predecessor(now);
        self.probe_past(now);
        self.keepalives(now);
        self.relay_expire(now);
        for _ in 0..self.cfg.fingers_per_tick {
            self.fix_next_finger(now);
        }
        self.store_tick(now);
    }

    pub(super) fn send_stabilize(&mut self, now: Instant) {
        self.send_stabilize_with(now, false)
    }

    pub(super) fn send_stabilize_with(&mut self, now: Instant, want_fingers: bool) {
        if let Some(succ) = self.table.successor().cloned() {
            self.stabilize_with(succ, want_fingers, now);
        }
    }

    /// Asks `peer` for its neighbours and notifies it, unless already asking.
    pub(super) fn stabilize_with(&mut self, peer: NodeRef<A>, want_fingers: bool, now: Instant) {
        let already = self
            .pending
            .values()
            .any(|p| matches!(&p.waiting, Waiting::Stabilize { peer: q } if q.id == peer.id));
        if already {
            return;
        }
        let sender = self.me.clone();
        let (to, retries) = (peer.addr.clone(), self.cfg.request_retries);
        self.request(to, retries, Waiting::Stabilize { peer }, now, |txn| {
            Message::GetNeighbors(GetNeighbors {
                txn,
                sender,
                notify: true,
                want_fingers,
            })
        });
    }

    pub(super) fn check_predecessor(&mut self, now: Instant) {
        let Some(pred) = self.table.predecessor().cloned() else {
            return;
        };
        // Our predecessor stabilizes with us every period; only a silent one
        // is probed.
        let silent = self
            .pred_seen
            .is_none_or(|t| now.saturating_duration_since(t) > self.cfg.stabilize_interval * 2);
        if silent {
            self.ping(pred, now);
        }
    }

    pub(super) fn ping(&mut self, peer: NodeRef<A>, now: Instant) {
        let already = self
            .pending
            .values()
            .any(|p| matches!(&p.waiting, Waiting::Ping { peer: q } if q.id == peer.id));
        if already {
            return;
        }
        let (to, retries) = (peer.addr.clone(), self.cfg.request_retries);
        self.request(to, retries, Waiting::Ping { peer }, now, |txn| {
            Message::Ping(Ping { txn })
        });
    }

    pub(super) fn fix_next_finger(&mut self, now: Instant) {
        let Some(low) = self.table.successor_bucket() else {
            return;
        };
        // Fingers in or below the successor's bucket are the successor itself.
        let first = low + 1;
        if first >= Hash::BITS {
            return;
        }
        if self.finger_cursor < first || self.finger_cursor >= Hash::BITS {
            self.finger_cursor = first;
        }
        let bucket = self.finger_cursor;
        self.finger_cursor += 1;
        if self
            .lookups
            .values()
            .any(|l| l.purpose == Purpose::Finger(bucket))
        {
            return;
        }
        let key = self.me.id.wrapping_add(&Hash::pow2(bucket));
        let id = self.start_lookup(key, Purpose::Finger(bucket), now);
        self.lookup_attempt(id, now);
    }

    /// Sends a message that awaits an answer: refused (and counted) when too
    /// many are pending; otherwise it gets a fresh `txn`, is remembered until
    /// answered, and is sent again `retries` times if it is not.
    pub(super) fn request(
        &mut self,
        to: A,
        retries: u32,
        waiting: Waiting<A>,
        now: Instant,
        message: impl FnOnce(u64) -> Message<A>,
    ) -> Option<u64> {
        if self.pending.len() >= self.cfg.max_pending {
            self.stats.dropped_overload += 1;
            return None;
        }
        let txn = self.fresh_txn();
        let bytes = Bytes::from(message(txn).encode());
        let deadline = now + self.cfg.request_timeout;
        self.arm(deadline);
        self.pending.insert(
            txn,
            Pending {
                to: to.clone(),
                bytes: bytes.clone(),
                deadline,
                retries_left: retries,
                held: false,
                waiting,
            },
        );
        self.push_transmit(to, bytes);
        Some(txn)
    }

    /// The pending request `txn`, if what it waits for is what `expected`
    /// accepts; a reply that matches nothing, or another kind of request,
    /// is counted as unexpected (and the request left pending).
    pub(super) fn take_reply(
        &mut self,
        txn: u64,
        expected: impl Fn(&Waiting<A>) -> bool,
    ) -> Option<Pending<A>> {
        match self.pending.remove(&txn) {
            Some(p) if expected(&p.waiting) => Some(p),
            Some(other) => {
                self.pending.insert(txn, other);
                self.stats.dropped_unexpected += 1;
                None
            }
            None => {
                self.stats.dropped_unexpected += 1;
                None
            }
        }
    }

    pub(super) fn pending_expired(&mut self, txn: u64, now: Instant) {
        let Some(mut p) = self.pending.remove(&txn) else {
            return;
        };
        if p.retries_left == self.cfg.request_retries || p.retries_left == 0 {
            self.punch_on_timeout(&p.to, &p.waiting, now);
        }
        if p.retries_left == 0 {
            self.forget_relay_route(&p.to, now);
        }
        if p.retries_left > 0 {
            let first_retry = p.retries_left == self.cfg.request_retries;
            // A broadcast child's arc is re-covered now, once (below, after
            // the entry is back in the table).
            let recover = match &mut p.waiting {
                Waiting::Data {
                    next,
                    exclude,
                    reroute: reroute @ Reroute::AtFirstTimeout,
                    ..
                } => {
                    *reroute = Reroute::Done;
                    Some((*next, exclude.clone(), p.bytes.clone()))
                }
                _ => None,
            };
            let suspect = matches!(&p.waiting, Waiting::Stabilize { peer }
                if first_retry && self.table.successor().is_some_and(|s| s.id == peer.id));
            p.retries_left -= 1;
            p.deadline = now + self.cfg.request_timeout;
            self.arm(p.deadline);
            // A request held already stays so: the destination's share of
            // retransmissions goes to the others.
            if !p.held && self.may_retransmit(&p.to, now) {
                self.push_transmit(p.to.clone(), p.bytes.clone());
            } else {
                self.stats.retransmits_held += 1;
                if !p.held {
                    p.held = true;
                    if let Some(b) = self.backoff.get_mut(&p.to) {
                        b.held.push(txn);
                    }
                }
            }
            // Back in the table before anything else is requested: the
            // probes below must count it against max_pending (found by the
            // `node` fuzz target: pending reached max_pending + 1).
            self.pending.insert(txn, p);
            if let Some((next, exclude, bytes)) = recover {
                self.recover_arc(&bytes, next, exclude, now);
            }
            if suspect {
                self.suspect_successor(now);
            }
            return;
        }
        match p.waiting {
            Waiting::Ping { peer } | Waiting::Stabilize { peer } => self.peer_failed(&peer, now),
            Waiting::Verify => {}
            Waiting::Observe { join } => {
                if join {
                    self.fail_join(JoinError::Unreachable);
                }
            }
            Waiting::Admit { .. } => self.stats.admissions_failed += 1,
            Waiting::PunchRequest { target } => self.punch_attempt_failed(&target, now),
            Waiting::Reserve { relay } => self.relay_lost(relay, now),
            Waiting::PunchPing { peer } => self.punch_ping_expired(&peer, now),
            Waiting::Confirm { lookup, owner, .. } => {
                // The owner named is dead (or unreachable): forget it and
                // look again; the deadline still bounds the whole lookup.
                self.stats.lookup_owners_silent += 1;
                self.peer_failed(&owner, now);
                if self.lookups.contains_key(&lookup) {
                    self.lookup_attempt(lookup, now);
                }
            }
            Waiting::Data {
                next,
                exclude,
                reroute,
                ..
            } => self.data_hop_failed(&p.bytes, next, exclude, reroute, now),
            Waiting::Forward {
                msg,
                next,
                mut exclude,
            } => match next {
                None => {
                    // The bootstrap never acknowledged the join.
                    self.fail_join(JoinError::Unreachable);
                }
                Some(id) => {
                    // Route around the silent hop; it leaves the fingers and
                    // the backup successors, the failure detector decides the rest.
                    self.demote(&id, now);
                    if self.table.successor().is_some_and(|s| s.id == id) {
                        self.send_stabilize(now);
                    }
                    exclude.push(id);
                    let mut msg = *msg;
                    msg.hops = msg.hops.saturating_sub(1);
                    if self.phase == Phase::Joined {
                        self.route_lookup(msg, exclude, now);
                    }
                }
            },
        }
    }

    /// A hop did not acknowledge: it leaves the fingers and the backup
    /// successors (the failure detector decides the rest), and is
    /// remembered among the past peers, to be probed later in case it was
    /// only slow.
    pub(super) fn demote(&mut self, id: &Hash, now: Instant) {
        if let Some(n) = self.table.get(id).cloned() {
            self.remember_past(&n, now);
        }
        self.table.demote(id);
    }

    /// A peer did not answer a request and its retries: it is dead to us.
    pub(super) fn peer_failed(&mut self, peer: &NodeRef<A>, now: Instant) {
        self.stats.peers_failed += 1;
        let was_succ = self.table.successor().is_some_and(|s| s.id == peer.id);
        self.table.remove(&peer.id);
        self.remember_dead(peer.id, now);
        self.remember_past(peer, now);
        tracing::debug!(me = %self.me.id.short(), peer = %peer.id.short(), "peer failed");
        if was_succ {
            // The backups were probed when the head fell silent. Those probed
            // before the first one that answered had the same time and kept
            // quiet: skip them. (A live one skipped by mistake comes back
            // through the next stabilize, as its successor's predecessor.)
            let list = self.table.successors();
            let answered = |id: &Hash| self.probed.iter().any(|(p, ok)| p == id && *ok);
            if let Some(first) = list.iter().position(|n| answered(&n.id)) {
                let silent: Vec<Hash> = list[..first]
                    .iter()
                    .map(|n| n.id)
                    .filter(|id| self.probed.iter().any(|(p, ok)| p == id && !*ok))
                    .collect();
                tracing::trace!(me = %self.me.id.short(), silent = silent.len(), "skipping silent backups");
                for id in silent {
                    // Silent, maybe only slow: remembered, and probed later.
                    if let Some(n) = self.table.get(&id).cloned() {
                        self.remember_past(&n, now);
                    }
                    self.table.remove(&id);
                }
            } else {
                self.suspect_successor(now);
            }
            self.probed.clear();
            if self.table.successor().is_none() {
                // Every successor is gone: the nearest finger is the best
                // guess, and stabilize walks back from it through predecessors.
                let fingers = self.table.fingers().to_vec();
                tracing::trace!(me = %self.me.id.short(), fingers = fingers.len(), "every successor gone");
                self.table.set_successors(fingers);
            }
            self.send_stabilize(now);
        }
    }

    /// The head of the successor list is slow to answer: probe every backup
    /// at once, so that a run of dead successors costs one timeout, not one
    /// timeout each.
    pub(super) fn suspect_successor(&mut self, now: Instant) {
        let backups: Vec<NodeRef<A>> = self.table.successors().iter().skip(1).cloned().collect();
        self.probed = backups.iter().map(|n| (n.id, false)).collect();
        for n in backups {
            self.ping(n, now);
        }
    }

    pub(super) fn remember_dead(&mut self, id: Hash, now: Instant) {
        if self.dead.len() >= DEAD_MEMORY_LEN {
            self.dead.pop_front();
        }
        self.dead.push_back((id, now));
    }

    /// Remembers a failed peer, to probe with backoff (the oldest failure
    /// is forgotten first when the memory is full).
    pub(super) fn remember_past(&mut self, peer: &NodeRef<A>, now: Instant) {
        if self.cfg.past_peers == 0 || self.past.iter().any(|p| p.node.id == peer.id) {
            return;
        }
        if self.past.len() >= self.cfg.past_peers {
            if let Some(oldest) = (0..self.past.len()).min_by_key(|&i| self.past[i].failed_at) {
                self.past.swap_remove(oldest);
            }
        }
        let backoff = self.cfg.stabilize_interval;
        self.past.push(PastPeer {
            node: peer.clone(),
            failed_at: now,
            next_probe: now + backoff,
            backoff,
        });
    }

    /// Probes the remembered peer most overdue (one per tick, the nearest
    /// successor-wise among equals), and forgets those past their time.
    pub(super) fn probe_past(&mut self, now: Instant) {
        let ttl = self.cfg.past_peer_ttl;
        self.past.retain(|p| now < p.failed_at + ttl);
        let me = self.me.id;
        let due = (0..self.past.len())
            .filter(|&i| self.past[i].next_probe <= now)
            .min_by_key(|&i| me.distance_to(&self.past[i].node.id));
        let Some(i) = due else {
            return;
        };
        let max = self.cfg.past_probe_max;
        let p = &mut self.past[i];
        p.next_probe = now + p.backoff;
        p.backoff = (p.backoff * 2).min(max);
        let node = p.node.clone();
        tracing::trace!(me = %self.me.id.short(), peer = %node.id.short(), "probing a past peer");
        self.stats.past_probes += 1;
        self.admit(node, Role::Past, now);
    }

    pub(super) fn is_dead(&self, id: &Hash, now: Instant) -> bool {
        let window = self.cfg.stabilize_interval * DEAD_MEMORY_PERIODS;
        self.dead
            .iter()
            .any(|(d, at)| d == id && now < *at + window)
    }
}
