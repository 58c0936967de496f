//! Pure protocol: what an application asks of a node (create, join, leave, lookups).

use super::*;

impl<A: Address> LocalNode<A> {
    /// Starts a new ring with this node as its only member.
    pub fn create(&mut self, now: Instant) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Joined;
        self.schedule_tick(now);
        self.events.push_back(Event::Joined {
            successor: self.me.clone(),
        });
    }

    /// Joins the ring that the node at `bootstrap` belongs to. Ends in
    /// [`Event::Joined`] or [`Event::JoinFailed`].
    pub fn join(&mut self, bootstrap: A, now: Instant) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Joining {
            bootstrap: bootstrap.clone(),
        };
        if self.provisional {
            // Learn where the bootstrap sees this node first: its id
            // derives from that address.
            let retries = self.cfg.request_retries;
            let sent = self.request(
                bootstrap,
                retries,
                Waiting::Observe { join: true },
                now,
                observe,
            );
            if sent.is_none() {
                self.fail_join(JoinError::Unreachable);
            }
            return;
        }
        self.find_place(bootstrap, now);
    }

    /// Looks up this node's place in the ring through `bootstrap` (the
    /// join proper).
    pub(super) fn find_place(&mut self, bootstrap: A, now: Instant) {
        let lookup = self.start_lookup(self.me.id, Purpose::Join, now);
        let msg = FindSuccessor {
            txn: 0,
            lookup,
            key: self.me.id,
            origin: self.me.clone(),
            hops: 1,
            joining: true,
            via: None,
        };
        self.forward(msg, bootstrap, None, Vec::new(), now);
    }

    /// Marks this node's address as a placeholder: its socket is bound to
    /// all interfaces (`0.0.0.0`, `[::]`), so it does not know the address
    /// others reach it at. It learns it from the first peer it talks to
    /// ([`Message::Observe`]) and takes it, with the id derived from it
    /// (see [`with_identity`](Self::with_identity)), reporting
    /// [`Event::AddressLearned`]:
    /// - joining, it asks the bootstrap before anything else;
    /// - alone (after [`create`](Self::create)), it answers nothing but
    ///   `Observe` until it knows: the first datagram from any peer makes it
    ///   ask that peer (the datagram is dropped and counted in
    ///   `dropped_provisional`; its sender retries).
    ///
    /// Without an identity rule the id stays as it was and only the
    /// address changes.
    pub fn set_provisional(&mut self) {
        self.provisional = true;
    }

    /// Whether this node's address is still a placeholder.
    pub fn is_provisional(&self) -> bool {
        self.provisional
    }

    /// Asks `to` at which address it sees this node; its answer is
    /// reported as [`Event::Observed`] (a NAT's mapping, or this node's
    /// own address). Nothing is reported if it does not answer.
    pub fn observe(&mut self, to: A, now: Instant) {
        let retries = self.cfg.request_retries;
        self.request(to, retries, Waiting::Observe { join: false }, now, observe);
    }

    /// Takes `addr` as this node's address (its first contact sees it
    /// there), with the id derived from it.
    pub(super) fn adopt(&mut self, addr: A) {
        self.provisional = false;
        let id = match &self.identity {
            Some(identity) => identity.derive(&addr),
            None => self.me.id,
        };
        self.me = NodeRef::new(id, addr.clone());
        self.table = RoutingTable::new(id, self.cfg.successor_list_len).with_address(addr);
        self.known_version = u64::MAX; // the fresh table differs: report it
        tracing::debug!(me = ?self.me, "address learned");
        self.events.push_back(Event::AddressLearned {
            me: self.me.clone(),
        });
    }

    pub(super) fn on_observed(&mut self, m: Observed<A>, now: Instant) {
        let Some(Pending {
            waiting: Waiting::Observe { join },
            to,
            ..
        }) = self.take_reply(m.txn, |w| matches!(w, Waiting::Observe { .. }))
        else {
            return;
        };
        self.verified(to.clone(), now);
        self.events.push_back(Event::Observed {
            by: to.clone(),
            seen: m.seen.clone(),
        });
        // A node alone takes the address (a joining one has no peers yet
        // either); one in a ring keeps the identity its peers know.
        if self.provisional && self.table.peers().next().is_none() {
            self.adopt(m.seen);
        }
        if join && matches!(&self.phase, Phase::Joining { bootstrap } if *bootstrap == to) {
            self.find_place(to, now);
        }
    }

    /// Looks up the live node responsible for `key`. Ends in
    /// [`Event::LookupDone`] or [`Event::LookupFailed`].
    pub fn lookup(&mut self, key: Hash, now: Instant) -> LookupId {
        let id = self.start_lookup(key, Purpose::User, now);
        self.lookup_attempt(id, now);
        self.sync_known();
        LookupId(id)
    }

    /// Leaves the ring gracefully: hands the predecessor and the successors
    /// to each other, then goes quiet. Pending lookups fail.
    pub fn leave(&mut self, now: Instant) {
        if self.phase == Phase::Left {
            return;
        }
        let _ = now;
        if self.phase == Phase::Joined {
            let msg = Message::Leave(Leave {
                sender: self.me.id,
                predecessor: self.table.predecessor().cloned(),
                successors: self.table.successors().to_vec(),
            })
            .encode();
            let mut targets: Vec<A> = Vec::new();
            if let Some(p) = self.table.predecessor() {
                targets.push(p.addr.clone());
            }
            if let Some(s) = self.table.successor() {
                if !targets.contains(&s.addr) {
                    targets.push(s.addr.clone());
                }
            }
            for to in targets {
                self.push_transmit(to, msg.clone());
            }
        }
        for (id, l) in std::mem::take(&mut self.lookups) {
            if l.purpose == Purpose::User {
                self.events.push_back(Event::LookupFailed {
                    id: LookupId(id),
                    key: l.key,
                });
            }
        }
        self.fail_outgoing();
        self.pending.clear();
        self.phase = Phase::Left;
        self.next_tick = None;
        self.events.push_back(Event::Left);
    }
}
