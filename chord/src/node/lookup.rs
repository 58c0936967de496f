//! Pure protocol: lookups (started, routed, answered, retried, failed).

use super::*;

impl<A: Address> LocalNode<A> {
    pub(super) fn start_lookup(&mut self, key: Hash, purpose: Purpose, now: Instant) -> u64 {
        let id = self.fresh_id(|n, id| n.lookups.contains_key(&id));
        let l = Lookup {
            key,
            purpose,
            retry_at: now + self.attempt_timeout(),
            deadline: now + self.cfg.lookup_timeout,
        };
        self.arm(l.retry_at.min(l.deadline));
        self.lookups.insert(id, l);
        id
    }

    /// Time one attempt of a lookup gets before the origin tries again.
    pub(super) fn attempt_timeout(&self) -> Duration {
        self.cfg.failure_timeout() * 2
    }

    pub(super) fn lookup_attempt(&mut self, id: u64, now: Instant) {
        let retry_at = now + self.attempt_timeout();
        let Some(l) = self.lookups.get_mut(&id) else {
            return;
        };
        l.retry_at = retry_at;
        let (key, purpose) = (l.key, l.purpose);
        self.arm(retry_at);
        if purpose == Purpose::Join {
            // Retry through the bootstrap.
            if let Phase::Joining { bootstrap } = &self.phase {
                let bootstrap = bootstrap.clone();
                let msg = FindSuccessor {
                    txn: 0,
                    lookup: id,
                    key,
                    origin: self.me.clone(),
                    hops: 1,
                    joining: true,
                    via: None,
                };
                self.forward(msg, bootstrap, None, Vec::new(), now);
            }
            return;
        }
        if self.phase != Phase::Joined {
            return; // retried once joined, or failed at the deadline
        }
        let msg = FindSuccessor {
            txn: 0,
            lookup: id,
            key,
            origin: self.me.clone(),
            hops: 0,
            joining: false,
            via: None,
        };
        self.route_lookup(msg, Vec::new(), now);
    }

    /// Moves a lookup one step: answers it if this node is the key's
    /// predecessor, forwards it to the closest preceding node otherwise.
    pub(super) fn route_lookup(&mut self, msg: FindSuccessor<A>, exclude: Vec<Hash>, now: Instant) {
        let owner = match self.table.next_hop(&msg.key, &exclude) {
            NextHop::Forward(n) => {
                let (to, id) = (n.addr.clone(), n.id);
                let mut msg = msg;
                msg.hops = msg.hops.saturating_add(1);
                if self.behind_nat() && msg.origin.id == self.me.id && !msg.joining {
                    // The answer comes from the key's predecessor, which
                    // this node's NAT would not let in: the first hop,
                    // which it sends to, relays it (see `FindSuccessor::via`).
                    msg.via = Some(to.clone());
                }
                self.forward(msg, to, Some(id), exclude, now);
                return;
            }
            NextHop::Owner(o) => o.cloned(),
        };
        let owner = if msg.joining {
            // The joiner asks for its own successor: skip an earlier
            // incarnation of it (same id) that may still be in our tables.
            self.table
                .successors()
                .iter()
                .find(|n| n.id != msg.origin.id)
                .cloned()
                .unwrap_or_else(|| self.me.clone())
        } else {
            owner.unwrap_or_else(|| self.me.clone())
        };
        let found = Found {
            lookup: msg.lookup,
            key: msg.key,
            owner,
            hops: msg.hops,
        };
        if msg.origin.id == self.me.id && msg.origin.addr == self.me.addr {
            self.on_found(found, now);
            return;
        }
        let to = match msg.via {
            // This node relays for the joiner: answer it straight away.
            Some(via) if via == self.me.addr => {
                self.relays.retain(|r| r.lookup != msg.lookup);
                msg.origin.addr
            }
            Some(via) => via,
            None => msg.origin.addr,
        };
        self.push_transmit(to, Message::Found(found).encode());
    }

    pub(super) fn forward(
        &mut self,
        msg: FindSuccessor<A>,
        to: A,
        next: Option<Hash>,
        exclude: Vec<Hash>,
        now: Instant,
    ) {
        // A join's first hop is retried (its id is unknown, there is no
        // other route); later hops are rerouted at once instead.
        let retries = if next.is_none() {
            self.cfg.request_retries
        } else {
            0
        };
        let sent = msg.clone();
        let waiting = Waiting::Forward {
            msg: Box::new(msg),
            next,
            exclude,
        };
        self.request(to, retries, waiting, now, |txn| {
            Message::FindSuccessor(FindSuccessor { txn, ..sent })
        });
    }

    pub(super) fn lookup_succeeded(
        &mut self,
        id: u64,
        l: Lookup,
        owner: NodeRef<A>,
        hops: u32,
        now: Instant,
    ) {
        match l.purpose {
            Purpose::User => self.events.push_back(Event::LookupDone {
                id: LookupId(id),
                key: l.key,
                owner,
                hops,
            }),
            Purpose::Reach => self.reached(owner, now),
            Purpose::Finger(bucket) => {
                if !self.is_dead(&owner.id, now) {
                    if self.admissible(&owner) {
                        self.table.fix_finger(bucket, owner);
                    } else {
                        self.admit(owner, Role::FixFinger(bucket), now);
                    }
                }
            }
            Purpose::Join => {
                if owner.id == self.me.id {
                    if owner.addr != self.me.addr {
                        self.fail_join(JoinError::IdInUse);
                    } else {
                        // Only our own earlier incarnation is there: start over.
                        self.phase = Phase::Idle;
                        self.create(now);
                    }
                    return;
                }
                self.table.set_successors([owner]);
                self.send_stabilize_with(now, true);
            }
            Purpose::Store(op) => self.store_owner_found(op, owner, hops, now),
        }
    }

    pub(super) fn lookup_failed(&mut self, id: u64, now: Instant) {
        let Some(l) = self.lookups.remove(&id) else {
            return;
        };
        match l.purpose {
            Purpose::User => self.events.push_back(Event::LookupFailed {
                id: LookupId(id),
                key: l.key,
            }),
            Purpose::Join => {
                let reason = if self
                    .pending
                    .values()
                    .any(|p| matches!(&p.waiting, Waiting::Forward { next: None, .. }))
                {
                    JoinError::Unreachable
                } else {
                    JoinError::Timeout
                };
                self.fail_join(reason);
            }
            Purpose::Finger(_) | Purpose::Reach => {}
            Purpose::Store(op) => self.store_lookup_failed(op, now),
        }
    }

    pub(super) fn fail_join(&mut self, reason: JoinError) {
        if !matches!(self.phase, Phase::Joining { .. }) {
            return;
        }
        self.phase = Phase::Idle;
        self.lookups.retain(|_, l| l.purpose != Purpose::Join);
        self.pending.clear();
        self.table = RoutingTable::new(self.me.id, self.cfg.successor_list_len);
        self.known_version = u64::MAX; // the fresh table differs: report it

        self.events.push_back(Event::JoinFailed { reason });
    }
}
