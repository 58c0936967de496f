//! Coordinated hole punching through the ring, and the paths it opens.
//!
//! A peer behind a NAT that lets in only the peers it has sent to (most
//! NATs without a port mapping) cannot be reached first. When a request to
//! a peer that has never answered goes unanswered at its first timeout, the
//! node asks a peer that links to the target (a rendezvous: the peer whose
//! lookup answer named the target, or the target's ring neighbours in this
//! node's table) to introduce it. The scheme is DCUtR's:
//!
//! ```text
//! initiator A            rendezvous R             target T
//!   PunchRequest ------------>
//!                            PunchOffer ------------->   (seen: A's address as R sees it)
//!                            <------------ PunchAnswer
//!   <------------ PunchAnswer (seen: T's address as R sees it)
//!   (RTT measured)
//!   PunchSync --------------->
//!                            PunchSync -------------->
//!   after RTT/2: Ping --------------------------------->  at once: Ping --> A
//! ```
//!
//! Both sides then send Pings to each other's addresses (announced and
//! seen) at about the same instant; each NAT sees its side's Ping leave
//! before the other's arrives, and lets the other in as an answer. The
//! first Pong proves the path: it is marked punched, the requests waiting
//! for the target go out again at once, and the path is kept open by
//! keepalives. A punch tries at most [`ATTEMPTS`] rendezvous; one that
//! fails is remembered per target for [`FAILURE_MEMORY`] and not tried
//! again before that.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::{Address, LocalNode, Phase, Waiting};
use crate::hash::Hash;
use crate::wire::{
    Message, NodeRef, Ping, PunchAnswer, PunchOffer, PunchRelayed, PunchRequest, PunchSync,
};

/// Rendezvous a punch tries before it fails.
pub(super) const ATTEMPTS: usize = 2;
/// How long a failed punch is remembered: no new punch to that target
/// before then (a peer behind a symmetric NAT, or gone, costs one punch
/// per this period, not one per request).
pub(super) const FAILURE_MEMORY: Duration = Duration::from_secs(300);
/// Punches this node runs at once, as initiator; more wait for the next
/// timeout of a request to their target.
const SESSIONS: usize = 16;
/// Introductions this node carries at once, as rendezvous or as target.
const INTRODUCTIONS: usize = 32;
/// Failed punches remembered (the oldest is forgotten first).
const FAILURES: usize = 64;
/// Lookups of the owners of unconfirmed sends' targets at once (see
/// [`LocalNode::reach_out`]).
pub(super) const REACH_LOOKUPS: usize = 8;
/// Lookup answers remembered as the introducers of the owners they name.
const INTRODUCERS: usize = 8;

/// What a node knows of its own NAT, from where others see it (the driver
/// sets it with [`LocalNode::set_reach`]). It tells a punch's target whether
/// to answer that punching can work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reach {
    /// Nothing known (the default).
    #[default]
    Unknown,
    /// Reachable at its own address.
    Public,
    /// Reachable through a port mapped on its gateway.
    Mapped,
    /// Behind a NAT that maps one external address for all destinations
    /// (or whose mapping is not known yet): punching can work.
    Nat,
    /// Behind a NAT that maps per destination: punching cannot work.
    Symmetric,
}

/// How this node reaches a peer (see [`LocalNode::path`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Straight to the address the peer announces, no punch needed.
    Direct,
    /// Through a hole punched in the NATs between them; kept open by
    /// keepalives.
    Punched,
    /// Through a relay: the peer sits behind a NAT that maps per
    /// destination and holds a reservation with a public peer, or this
    /// node does (see `relay.rs`).
    Relayed,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Path::Direct => "direct",
            Path::Punched => "punched",
            Path::Relayed => "relayed",
        })
    }
}

/// A punch this node started.
#[derive(Clone, Debug)]
struct Session<A> {
    target: NodeRef<A>,
    /// The punch id: the txn of the current attempt's `PunchRequest`.
    txn: u64,
    /// Rendezvous not tried yet.
    candidates: Vec<A>,
    /// When the current attempt's request went out.
    asked_at: Instant,
    /// When to send the punch packets (half the measured round trip after
    /// the sync), once the target has answered.
    fire_at: Option<Instant>,
    /// Where the rendezvous sees the target.
    seen: Option<A>,
    /// The target was reached through a relay that stopped answering: a
    /// failure is not remembered (its new relay may be known soon).
    relayed: bool,
}

/// An introduction this node carries as rendezvous, or waits on as target.
#[derive(Clone, Debug)]
struct Introduction<A> {
    txn: u64,
    /// Rendezvous: the initiator's address. Target: the rendezvous's.
    from: A,
    /// Rendezvous: the target's address. Target: where the rendezvous sees
    /// the initiator.
    to: A,
    /// Target: the initiator.
    origin: Option<NodeRef<A>>,
    until: Instant,
}

/// A punched path.
#[derive(Clone, Copy, Debug)]
struct Punched {
    /// The last datagram from the peer.
    heard: Instant,
}

/// The node's hole-punching state.
#[derive(Clone, Debug)]
pub(super) struct PunchState<A> {
    reach: Reach,
    sessions: Vec<Session<A>>,
    /// As rendezvous.
    relaying: Vec<Introduction<A>>,
    /// As target, waiting for the sync.
    offered: Vec<Introduction<A>>,
    failed: Vec<(Hash, Instant)>,
    /// The address each lookup answer naming a node we had not verified
    /// came from: the owner's predecessor, which links to it.
    introducers: Vec<(Hash, A)>,
    paths: FxHashMap<A, Punched>,
}

impl<A> Default for PunchState<A> {
    fn default() -> Self {
        PunchState {
            reach: Reach::Unknown,
            sessions: Vec::new(),
            relaying: Vec::new(),
            offered: Vec::new(),
            failed: Vec::new(),
            introducers: Vec::new(),
            paths: FxHashMap::default(),
        }
    }
}

impl<A: Address> PunchState<A> {
    /// The earliest punch timer.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.sessions.iter().filter_map(|s| s.fire_at).min()
    }

    /// A datagram from `from` arrived: a punched path is alive.
    pub(super) fn heard(&mut self, from: &A, now: Instant) {
        if let Some(p) = self.paths.get_mut(from) {
            p.heard = now;
        }
    }

    /// Remembers that a lookup answer from `from` named `owner`.
    pub(super) fn note_introducer(&mut self, owner: &NodeRef<A>, from: &A) {
        if owner.addr == *from {
            return;
        }
        self.introducers.retain(|(id, _)| *id != owner.id);
        if self.introducers.len() >= INTRODUCERS {
            self.introducers.remove(0);
        }
        self.introducers.push((owner.id, from.clone()));
    }

    pub(super) fn heap_bytes(&self) -> usize {
        use crate::memory::{hash_table_bytes, vec_bytes};
        vec_bytes::<Session<A>>(self.sessions.capacity())
            + self
                .sessions
                .iter()
                .map(|s| vec_bytes::<A>(s.candidates.capacity()))
                .sum::<usize>()
            + vec_bytes::<Introduction<A>>(self.relaying.capacity() + self.offered.capacity())
            + vec_bytes::<(Hash, Instant)>(self.failed.capacity())
            + vec_bytes::<(Hash, A)>(self.introducers.capacity())
            + hash_table_bytes(self.paths.capacity(), std::mem::size_of::<(A, Punched)>())
    }
}

impl<A: Address> LocalNode<A> {
    /// Tells the node what it knows of its own NAT (see [`Reach`]): a node
    /// behind a NAT that maps per destination answers punches with
    /// "cannot work", so its peers do not try.
    pub fn set_reach(&mut self, reach: Reach) {
        self.punch.reach = reach;
    }

    /// What the node knows of its own NAT.
    pub fn reach(&self) -> Reach {
        self.punch.reach
    }

    /// Whether this node sits behind a NAT without a mapping (as its
    /// driver said, [`set_reach`](Self::set_reach)): the answers to its
    /// lookups come back through their first hop.
    pub(super) fn behind_nat(&self) -> bool {
        matches!(self.punch.reach, Reach::Nat | Reach::Symmetric)
    }

    /// A send of this node behind a NAT to `key` went unconfirmed for an
    /// attempt: the destination's `Delivered` goes straight to this node,
    /// whose NAT lets in only peers it has sent to, and the message went
    /// through others. The key's owner is looked up (the answer comes
    /// through the first hop) and probed, which opens the NAT to it (or,
    /// if it is behind a NAT too, punches); the next attempt's
    /// confirmation gets in.
    pub(super) fn reach_out(&mut self, key: Hash, now: Instant) {
        if self.phase != Phase::Joined {
            return;
        }
        let mut running = 0;
        for l in self.lookups.values() {
            if l.purpose == super::Purpose::Reach {
                if l.key == key {
                    return;
                }
                running += 1;
            }
        }
        if running >= REACH_LOOKUPS {
            return;
        }
        self.stats.reach_probes += 1;
        let id = self.start_lookup(key, super::Purpose::Reach, now);
        self.lookup_attempt(id, now);
    }

    /// The owner of an unconfirmed send's target: probed.
    pub(super) fn reached(&mut self, owner: NodeRef<A>, now: Instant) {
        // Probed even if it answered once: this node's NAT may have
        // forgotten the flow since.
        self.admit(owner, super::Role::Finger, now);
    }

    /// How this node reaches the peer at `addr`.
    pub fn path(&self, addr: &A) -> Path {
        if self.relay_served_src(addr).is_some() {
            // A relayed peer this node relays for: at its NAT's mapping.
            return Path::Direct;
        }
        match self.relay_route(addr) {
            // A relayed node reaches its own relay straight.
            Some(r) if r == addr => Path::Direct,
            Some(_) => Path::Relayed,
            None if self.punch.paths.contains_key(addr) => Path::Punched,
            None => Path::Direct,
        }
    }

    /// A request to `to` timed out. If `to` has never answered and is a
    /// node of the table (or the one a probe is for), a punch may open the
    /// way.
    pub(super) fn punch_on_timeout(&mut self, to: &A, waiting: &Waiting<A>, now: Instant) {
        // A joining node punches too: its successor may sit behind a NAT,
        // and the join completes only once that successor answers.
        let joining = matches!(self.phase, Phase::Joining { .. });
        // Through a relay that may have stopped answering (or, for a
        // relayed node, its own relay, which may not reach the target):
        // the target is asked (through a rendezvous) for the relay it
        // holds now. The route itself is forgotten only when the request
        // runs out of retries.
        let relayed = self.relay_route(to).is_some();
        if !(self.phase == Phase::Joined || joining) || (self.sources.is_verified(to) && !relayed) {
            return;
        }
        let target = match waiting {
            Waiting::Admit { node, .. } => Some(node.clone()),
            Waiting::Stabilize { peer } | Waiting::Ping { peer } => Some(peer.clone()),
            Waiting::Confirm { owner, .. } => Some(owner.clone()),
            Waiting::Data { next, .. } => self.table.get(next).cloned(),
            Waiting::Forward { next: Some(id), .. } => self.table.get(id).cloned(),
            _ => None,
        };
        if let Some(target) = target.filter(|t| t.addr == *to) {
            if relayed {
                self.punch.failed.retain(|(id, _)| *id != target.id);
            }
            self.start_punch(target, now);
            if relayed {
                if let Some(s) = self
                    .punch
                    .sessions
                    .iter_mut()
                    .find(|s| s.target.addr == *to)
                {
                    s.relayed = true;
                }
            }
        }
    }

    /// Starts a punch towards `target`, unless one runs already, one failed
    /// lately, or no rendezvous is known.
    pub(super) fn start_punch(&mut self, target: NodeRef<A>, now: Instant) {
        if target.id == self.me.id || target.addr == self.me.addr {
            return;
        }
        // A session whose requests were dropped wholesale (a failed join,
        // a leave) is forgotten once a lookup's time has passed.
        let stale = self.cfg.lookup_timeout;
        self.punch.sessions.retain(|s| now < s.asked_at + stale);
        if self.punch.sessions.iter().any(|s| s.target.id == target.id) {
            return;
        }
        self.punch
            .failed
            .retain(|(_, at)| now < *at + FAILURE_MEMORY);
        if self.punch.failed.iter().any(|(id, _)| *id == target.id) {
            self.stats.punches_suppressed += 1;
            return;
        }
        if self.punch.sessions.len() >= SESSIONS {
            return;
        }
        let candidates = self.rendezvous_for(&target);
        if candidates.is_empty() {
            return;
        }
        self.stats.punches_started += 1;
        tracing::debug!(me = %self.me.id.short(), target = ?target.addr, "punching");
        self.punch.sessions.push(Session {
            target,
            txn: 0,
            candidates,
            asked_at: now,
            fire_at: None,
            seen: None,
            relayed: false,
        });
        let at = self.punch.sessions.len() - 1;
        self.punch_attempt(at, now);
    }

    /// Peers that may link to `target`, most likely first: the one whose
    /// lookup answer named it, then its ring neighbours in our table (its
    /// successor stabilizes with it every period). Only peers that have
    /// answered us.
    fn rendezvous_for(&self, target: &NodeRef<A>) -> Vec<A> {
        let mut out: Vec<A> = Vec::new();
        let mut add = |a: &A, me: &Self| {
            let fresh = *a != target.addr && *a != me.me.addr && !out.contains(a);
            if fresh && out.len() < ATTEMPTS && me.sources.is_verified(a) {
                out.push(a.clone());
            }
        };
        if let Some((_, a)) = self
            .punch
            .introducers
            .iter()
            .find(|(id, _)| *id == target.id)
        {
            add(a, self);
        }
        let after = self
            .known
            .iter()
            .filter(|n| n.id != target.id)
            .min_by_key(|n| target.id.distance_to(&n.id));
        let before = self
            .known
            .iter()
            .filter(|n| n.id != target.id)
            .min_by_key(|n| n.id.distance_to(&target.id));
        for n in after.into_iter().chain(before) {
            add(&n.addr, self);
        }
        out
    }

    /// Sends the `PunchRequest` of session `at` to its next rendezvous, or
    /// fails the punch when none is left.
    fn punch_attempt(&mut self, at: usize, now: Instant) {
        let session = &mut self.punch.sessions[at];
        let Some(rendezvous) = session.candidates.first().cloned() else {
            self.punch_failed(at, now);
            return;
        };
        session.candidates.remove(0);
        session.asked_at = now;
        session.fire_at = None;
        let target = session.target.clone();
        let (origin, retries) = (self.me.clone(), 1);
        let waiting = Waiting::PunchRequest { target: target.id };
        let txn = self.request(rendezvous, retries, waiting, now, |txn| {
            Message::PunchRequest(PunchRequest {
                txn,
                origin,
                target,
            })
        });
        match txn {
            Some(txn) => self.punch.sessions[at].txn = txn,
            None => self.punch_failed(at, now),
        }
    }

    /// Session `at` is out of rendezvous, or its target cannot be punched.
    fn punch_failed(&mut self, at: usize, now: Instant) {
        let s = self.punch.sessions.swap_remove(at);
        self.stats.punches_failed += 1;
        tracing::debug!(me = %self.me.id.short(), target = ?s.target.addr, "punch failed");
        if s.relayed {
            return;
        }
        if self.punch.failed.len() >= FAILURES {
            self.punch.failed.remove(0);
        }
        self.punch.failed.push((s.target.id, now));
    }

    /// The `PunchRequest` (or every punch packet) of session `txn` went
    /// unanswered: the next rendezvous is tried.
    pub(super) fn punch_attempt_failed(&mut self, target: &Hash, now: Instant) {
        if let Some(at) = self
            .punch
            .sessions
            .iter()
            .position(|s| s.target.id == *target)
        {
            self.punch_attempt(at, now);
        }
    }

    /// A punch packet to `peer` went unanswered after its retries.
    pub(super) fn punch_ping_expired(&mut self, peer: &NodeRef<A>, now: Instant) {
        let other = self
            .pending
            .values()
            .any(|p| matches!(&p.waiting, Waiting::PunchPing { peer: q } if q.id == peer.id));
        let ours = self
            .punch
            .sessions
            .iter()
            .any(|s| s.target.id == peer.id && s.fire_at.is_none() && s.seen.is_some());
        if !other && ours {
            self.punch_attempt_failed(&peer.id, now);
        }
    }

    /// As rendezvous: introduces the sender to `target`, if this node links
    /// to it.
    pub(super) fn on_punch_request(&mut self, from: A, m: PunchRequest<A>, now: Instant) {
        let linked = self
            .table
            .get(&m.target.id)
            .is_some_and(|n| n.addr == m.target.addr);
        if self.phase != Phase::Joined || !linked || m.target.id == self.me.id {
            self.stats.dropped_unexpected += 1;
            return;
        }
        self.punch.relaying.retain(|r| r.until > now);
        if let Some(r) = self
            .punch
            .relaying
            .iter_mut()
            .find(|r| r.txn == m.txn && r.from == from)
        {
            // A retry: pass it on again.
            r.until = now + self.cfg.lookup_timeout;
        } else if self.punch.relaying.len() < INTRODUCTIONS {
            self.punch.relaying.push(Introduction {
                txn: m.txn,
                from: from.clone(),
                to: m.target.addr.clone(),
                origin: None,
                until: now + self.cfg.lookup_timeout,
            });
        } else {
            self.stats.dropped_overload += 1;
            return;
        }
        self.stats.punches_introduced += 1;
        let offer = Message::PunchOffer(PunchOffer {
            txn: m.txn,
            origin: m.origin,
            seen: from,
        });
        self.push_transmit(m.target.addr, offer.encode());
    }

    /// As target: someone wants a direct path; answer through the
    /// rendezvous and wait for its sync.
    pub(super) fn on_punch_offer(&mut self, from: A, m: PunchOffer<A>, now: Instant) {
        if self.phase != Phase::Joined || m.origin.id == self.me.id {
            self.stats.dropped_unexpected += 1;
            return;
        }
        if let Some(relay) = self.relay().cloned() {
            // Reached through a relay: the initiator reaches it there.
            let answer = Message::PunchRelayed(PunchRelayed {
                txn: m.txn,
                target: self.me.clone(),
                relay,
            });
            self.reply(from, answer.encode());
            return;
        }
        let punchable = self.punch.reach != Reach::Symmetric;
        if !punchable {
            self.relay_asked(m.origin.addr.clone());
        }
        self.punch.offered.retain(|o| o.until > now);
        let known = self
            .punch
            .offered
            .iter()
            .any(|o| o.txn == m.txn && o.from == from);
        if punchable && !known {
            if self.punch.offered.len() >= INTRODUCTIONS {
                self.stats.dropped_overload += 1;
                return;
            }
            self.punch.offered.push(Introduction {
                txn: m.txn,
                from: from.clone(),
                to: m.seen,
                origin: Some(m.origin),
                until: now + self.cfg.lookup_timeout,
            });
        }
        let answer = Message::PunchAnswer(PunchAnswer {
            txn: m.txn,
            target: self.me.clone(),
            seen: self.me.addr.clone(),
            punchable,
        });
        self.reply(from, answer.encode());
    }

    /// As rendezvous, the target's answer: passed on to the initiator with
    /// the target's address as seen here. As initiator: the round trip is
    /// measured, the sync sent, and the punch packets timed.
    pub(super) fn on_punch_answer(&mut self, from: A, m: PunchAnswer<A>, now: Instant) {
        if let Some(r) = self
            .punch
            .relaying
            .iter()
            .find(|r| r.txn == m.txn && r.to == from && r.until > now)
        {
            let to = r.from.clone();
            let answer = Message::PunchAnswer(PunchAnswer { seen: from, ..m });
            self.push_transmit(to, answer.encode());
            return;
        }
        let Some((rendezvous, at)) = self.punch_reply(m.txn, m.target.id, now) else {
            return;
        };
        if !m.punchable {
            // Its NAT maps per destination: no punch can work.
            self.punch_failed(at, now);
            return;
        }
        let rtt = now.saturating_duration_since(self.punch.sessions[at].asked_at);
        let fire = now + rtt / 2;
        let s = &mut self.punch.sessions[at];
        s.fire_at = Some(fire);
        s.seen = Some(m.seen);
        self.arm(fire);
        let sync = Message::<A>::PunchSync(PunchSync { txn: m.txn }).encode();
        self.push_transmit(rendezvous, sync);
    }

    /// The rendezvous's reply to this node's punch request `txn` for
    /// `target`: the rendezvous (now verified) and the punch session's
    /// index; `None` for a reply nothing waits for (counted when the
    /// session is gone).
    fn punch_reply(&mut self, txn: u64, target: Hash, now: Instant) -> Option<(A, usize)> {
        let pending = self.take_reply(txn, |w| matches!(w, Waiting::PunchRequest { .. }))?;
        self.verified(pending.to.clone(), now);
        let at = self
            .punch
            .sessions
            .iter()
            .position(|s| s.txn == txn && s.target.id == target);
        if at.is_none() {
            self.stats.dropped_unexpected += 1;
        }
        Some((pending.to, at?))
    }

    /// As rendezvous, a relayed target's answer: passed on to the
    /// initiator. As initiator: the target is reached through its relay
    /// from now on, and what waits for it goes there at once.
    pub(super) fn on_punch_relayed(&mut self, from: A, m: PunchRelayed<A>, now: Instant) {
        if let Some(at) = self
            .punch
            .relaying
            .iter()
            .position(|r| r.txn == m.txn && r.to == from && r.until > now)
        {
            let r = self.punch.relaying.swap_remove(at);
            self.push_transmit(r.from, Message::PunchRelayed(m).encode());
            return;
        }
        let Some((_, at)) = self.punch_reply(m.txn, m.target.id, now) else {
            return;
        };
        let s = self.punch.sessions.swap_remove(at);
        self.stats.punches_relayed += 1;
        self.punch.failed.retain(|(id, _)| *id != s.target.id);
        tracing::debug!(me = %self.me.id.short(), target = ?s.target.addr, relay = ?m.relay, "reached through a relay");
        self.relay_learn(s.target.addr.clone(), m.relay, now);
        self.resend_to(&s.target.addr, now);
    }

    /// Forgets the failed punches to the nodes `ids`.
    pub(super) fn forget_punch_failures(&mut self, ids: &[Hash]) {
        if !ids.is_empty() {
            self.punch.failed.retain(|(id, _)| !ids.contains(id));
        }
    }

    /// Sends the requests waiting for `to` again at once, with a fresh
    /// timeout (a new way there opened).
    pub(super) fn resend_to(&mut self, to: &A, now: Instant) {
        let deadline = now + self.cfg.request_timeout;
        let mut again = Vec::new();
        for p in self.pending.values_mut() {
            if p.to == *to && !matches!(p.waiting, Waiting::PunchPing { .. }) {
                p.deadline = deadline;
                p.held = false;
                again.push(p.bytes.clone());
            }
        }
        if !again.is_empty() {
            self.arm(deadline);
        }
        for bytes in again {
            self.push_transmit(to.clone(), bytes);
        }
    }

    /// As rendezvous: the initiator's sync goes on to the target. As
    /// target: punch now.
    pub(super) fn on_punch_sync(&mut self, from: A, m: PunchSync, now: Instant) {
        if let Some(at) = self
            .punch
            .relaying
            .iter()
            .position(|r| r.txn == m.txn && r.from == from && r.until > now)
        {
            let r = self.punch.relaying.swap_remove(at);
            self.push_transmit(r.to, Message::<A>::PunchSync(m).encode());
            return;
        }
        let Some(at) = self
            .punch
            .offered
            .iter()
            .position(|o| o.txn == m.txn && o.from == from && o.until > now)
        else {
            self.stats.dropped_unexpected += 1;
            return;
        };
        let o = self.punch.offered.swap_remove(at);
        if let Some(origin) = o.origin {
            self.send_punch_packets(origin, o.to, now);
        }
    }

    /// Pings `peer` at its announced address and at `seen`, each a request
    /// of its own with the usual retries.
    fn send_punch_packets(&mut self, peer: NodeRef<A>, seen: A, now: Instant) {
        let mut addrs = vec![peer.addr.clone()];
        if seen != peer.addr {
            addrs.push(seen);
        }
        for to in addrs {
            self.stats.punch_packets += 1;
            let (waiting, retries) = (
                Waiting::PunchPing { peer: peer.clone() },
                self.cfg.request_retries,
            );
            self.request(to, retries, waiting, now, |txn| Message::Ping(Ping { txn }));
        }
    }

    /// Fires the punch packets whose time has come.
    pub(super) fn punch_timers(&mut self, now: Instant) {
        let mut due = Vec::new();
        for s in &mut self.punch.sessions {
            if s.fire_at.is_some_and(|t| t <= now) {
                s.fire_at = None;
                let seen = s.seen.clone().unwrap_or_else(|| s.target.addr.clone());
                due.push((s.target.clone(), seen));
            }
        }
        for (target, seen) in due {
            self.send_punch_packets(target, seen, now);
        }
    }

    /// A punch packet to `peer` was answered from `to`: the path is open.
    /// The requests waiting for that address go out again at once.
    pub(super) fn punched(&mut self, peer: NodeRef<A>, to: A, now: Instant) {
        let fresh = self
            .punch
            .paths
            .insert(to.clone(), Punched { heard: now })
            .is_none();
        if let Some(at) = self
            .punch
            .sessions
            .iter()
            .position(|s| s.target.id == peer.id)
        {
            self.punch.sessions.swap_remove(at);
            self.stats.punches_succeeded += 1;
            tracing::debug!(me = %self.me.id.short(), peer = ?to, "punched");
        } else if fresh {
            self.stats.punches_answered += 1;
        }
        self.punch.failed.retain(|(id, _)| *id != peer.id);
        self.resend_to(&to, now);
    }

    /// Once a period: punched paths to peers of the table that have been
    /// quiet for `keepalive_interval` are pinged (the Pong, like any
    /// datagram, holds the NATs' bindings open); paths to peers outside the
    /// table are forgotten once quiet for two intervals.
    pub(super) fn keepalives(&mut self, now: Instant) {
        if self.punch.paths.is_empty() {
            return;
        }
        let interval = self.cfg.keepalive_interval;
        let peers: Vec<NodeRef<A>> = self.table.peers().cloned().collect();
        // A path to a peer outside the table is kept while the peer uses
        // it (its own keepalives arrive).
        self.punch.paths.retain(|addr, p| {
            now.saturating_duration_since(p.heard) < interval * 2
                || peers.iter().any(|n| n.addr == *addr)
        });
        for peer in peers {
            let quiet = self
                .punch
                .paths
                .get(&peer.addr)
                .is_some_and(|p| now.saturating_duration_since(p.heard) >= interval);
            if quiet {
                if let Some(p) = self.punch.paths.get_mut(&peer.addr) {
                    // One keepalive per interval, answered or not.
                    p.heard = now;
                }
                self.stats.keepalives_sent += 1;
                self.ping(peer, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use super::{Path, Reach};
    use crate::config::Config;
    use crate::event::{Event, Target};
    use crate::hash::Hash;
    use crate::node::{LocalNode, Role};
    use crate::wire::{Message, NodeRef};

    /// Nodes (address = index) of which some sit behind NATs that let in
    /// only datagrams from addresses they have sent to (endpoint-independent
    /// mapping, address-dependent filtering; the announced address is the
    /// mapping, so it is the index as well).
    struct Net {
        nodes: Vec<LocalNode<u32>>,
        natted: Vec<bool>,
        /// (node behind a NAT, address it sent to).
        opened: HashSet<(usize, u32)>,
        /// Datagrams each NAT dropped, by (to, from).
        dropped: Vec<(usize, usize)>,
        /// Every datagram's kind, by (from, to).
        log: Vec<(usize, u32, u8)>,
        now: Instant,
    }

    fn id(first: u8) -> Hash {
        let mut b = [0u8; 32];
        b[0] = first;
        Hash::from_bytes(b)
    }

    impl Net {
        fn new() -> Net {
            Net {
                nodes: Vec::new(),
                natted: Vec::new(),
                opened: HashSet::new(),
                dropped: Vec::new(),
                log: Vec::new(),
                now: Instant::now(),
            }
        }

        /// Adds a node with id `first`00.. and joins it through `bootstrap`
        /// (or creates the ring), then runs for `settle`.
        fn add(&mut self, first: u8, natted: bool, cfg: Config, bootstrap: Option<u32>) -> usize {
            let addr = self.nodes.len() as u32;
            let mut n = LocalNode::new(
                cfg,
                NodeRef::new(id(first), addr),
                7 + addr as u64,
                self.now,
            )
            .unwrap();
            match bootstrap {
                Some(b) => n.join(b, self.now),
                None => n.create(self.now),
            }
            self.nodes.push(n);
            self.natted.push(natted);
            addr as usize
        }

        fn deliver(&mut self) {
            for _ in 0..50 {
                let mut moved = false;
                for i in 0..self.nodes.len() {
                    while let Some(t) = self.nodes[i].poll_transmit() {
                        moved = true;
                        self.log.push((i, t.to, t.bytes[3]));
                        if self.natted[i] {
                            self.opened.insert((i, t.to));
                        }
                        let to = t.to as usize;
                        if to >= self.nodes.len() {
                            continue;
                        }
                        if self.natted[to] && !self.opened.contains(&(to, i as u32)) {
                            self.dropped.push((to, i));
                            continue;
                        }
                        let now = self.now;
                        self.nodes[to].handle_datagram(now, i as u32, &t.bytes);
                    }
                }
                if !moved {
                    return;
                }
            }
        }

        fn run(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.now += Duration::from_millis(10);
                let now = self.now;
                for n in self.nodes.iter_mut() {
                    if n.poll_timeout().is_some_and(|t| t <= now) {
                        n.handle_timeout(now);
                    }
                }
                self.deliver();
            }
        }

        fn sent(&self, from: usize, to: u32, kind: u8) -> usize {
            self.log
                .iter()
                .filter(|&&(f, t, k)| f == from && t == to && k == kind)
                .count()
        }

        fn sent_kind(&self, kind: u8) -> usize {
            self.log.iter().filter(|&&(_, _, k)| k == kind).count()
        }
    }

    /// A node behind a NAT that talks to its ring neighbours only: no
    /// finger repair, one successor.
    fn quiet() -> Config {
        Config {
            fingers_per_tick: 0,
            successor_list_len: 1,
            ..Config::default()
        }
    }

    /// Public b (0x10), the NATed target t (0x40), its successor s (0x50)
    /// and u (0x60), settled (t, s and u keep one successor and repair no
    /// fingers, so t never hears of a); then the public initiator a (0xb8)
    /// joins through b and at once wants t as a finger (as when a lookup
    /// answer names it).
    fn scenario(t_natted: bool, t_reach: Reach) -> (Net, usize, usize) {
        let mut net = Net::new();
        let b = net.add(0x10, false, Config::default(), None);
        net.run(Duration::from_millis(100));
        let t = net.add(0x40, t_natted, quiet(), Some(b as u32));
        net.nodes[t].set_reach(t_reach);
        net.run(Duration::from_secs(3));
        let s = net.add(0x50, false, quiet(), Some(b as u32));
        net.run(Duration::from_secs(3));
        net.add(0x60, false, quiet(), Some(b as u32));
        net.run(Duration::from_secs(5));
        assert_eq!(net.nodes[t].successor().map(|n| n.addr), Some(s as u32));
        let a = net.add(0xb8, false, Config::default(), Some(b as u32));
        net.run(Duration::from_millis(300));
        assert!(net.nodes[a].is_joined());
        assert!(
            !net.opened.contains(&(t, a as u32)),
            "t sent to a before the test begins"
        );
        let target = net.nodes[t].me().clone();
        let now = net.now;
        net.nodes[a].admit(target, Role::Finger, now);
        (net, a, t)
    }

    /// The finger behind a filtering NAT refuses the initiator's probe; a
    /// punch through its successor opens the path both ways, it becomes a
    /// finger, and a message to it is confirmed.
    #[test]
    fn a_finger_behind_a_filtering_nat_is_reached_after_a_punch() {
        let (mut net, a, t) = scenario(true, Reach::Nat);
        net.run(Duration::from_secs(2));
        assert!(
            net.dropped.iter().any(|&(to, from)| to == t && from == a),
            "the NAT never refused the initiator: nothing to punch"
        );
        let st = net.nodes[a].stats().clone();
        assert_eq!((st.punches_started, st.punches_succeeded), (1, 1), "{st:?}");
        assert_eq!(st.punches_failed, 0);
        assert_eq!(net.nodes[a].path(&(t as u32)), Path::Punched);
        assert_eq!(net.nodes[t].path(&(a as u32)), Path::Punched);
        assert!(net.nodes[t].stats().punches_answered >= 1);
        let introduced: u64 = net.nodes.iter().map(|n| n.stats().punches_introduced).sum();
        assert!(introduced >= 1);
        assert!(
            net.nodes[a].fingers().iter().any(|f| f.addr == t as u32),
            "t never became a finger of a"
        );
        // Messages go straight there and are confirmed.
        let now = net.now;
        let tid = net.nodes[t].id();
        net.nodes[a]
            .send(Target::Node(tid), b"through the hole".to_vec(), 0, now)
            .unwrap();
        net.run(Duration::from_secs(1));
        let ev: Vec<Event<u32>> = std::iter::from_fn(|| net.nodes[a].poll_event()).collect();
        assert!(
            ev.iter().any(|e| matches!(e, Event::Delivered { .. })),
            "{ev:?}"
        );
    }

    /// Without the NAT, the probe is answered: no punch.
    #[test]
    fn no_punch_when_the_target_is_public() {
        let (mut net, a, t) = scenario(false, Reach::Public);
        net.run(Duration::from_secs(2));
        assert!(net.dropped.is_empty());
        for n in &net.nodes {
            assert_eq!(n.stats().punches_started, 0);
        }
        assert_eq!(net.sent_kind(24), 0, "a PunchRequest was sent");
        assert_eq!(net.nodes[a].path(&(t as u32)), Path::Direct);
        assert!(net.nodes[a].fingers().iter().any(|f| f.addr == t as u32));
    }

    /// A target behind a NAT that maps per destination says so: the punch
    /// fails at once, is remembered, and the next probes that time out
    /// start none (for FAILURE_MEMORY), however often they are tried.
    #[test]
    fn failed_punches_are_remembered_and_bounded() {
        let (mut net, a, t) = scenario(true, Reach::Symmetric);
        net.run(Duration::from_secs(2));
        let st = net.nodes[a].stats().clone();
        assert_eq!((st.punches_started, st.punches_failed), (1, 1), "{st:?}");
        assert_eq!(net.sent(a, 0, 24) + net.sent(a, 2, 24), 1);
        // Tried again and again: no new punch.
        for _ in 0..20 {
            let target = net.nodes[t].me().clone();
            let now = net.now;
            net.nodes[a].admit(target, Role::Finger, now);
            net.run(Duration::from_secs(2));
        }
        let st = net.nodes[a].stats().clone();
        assert_eq!(st.punches_started, 1, "{st:?}");
        assert!(st.punches_suppressed >= 20, "{st:?}");
        let requests = net
            .log
            .iter()
            .filter(|&&(f, _, k)| f == a && k == 24)
            .count();
        assert_eq!(requests, 1);
        assert_eq!(net.nodes[a].path(&(t as u32)), Path::Direct);
    }

    /// A target that never answers (gone, or unreachable): each rendezvous
    /// is asked with one retry, then the punch fails; at most
    /// ATTEMPTS * 2 requests.
    #[test]
    fn a_silent_target_costs_a_bounded_punch() {
        let (mut net, a, t) = scenario(true, Reach::Nat);
        // t's NAT drops everything: it never sends again.
        let quiet_t = t;
        net.nodes[quiet_t].leave(net.now);
        net.natted[quiet_t] = true;
        net.opened.retain(|(i, _)| *i != quiet_t);
        while net.nodes[quiet_t].poll_transmit().is_some() {}
        net.run(Duration::from_secs(10));
        let st = net.nodes[a].stats().clone();
        assert!(st.punches_started <= 1, "{st:?}");
        let requests = net
            .log
            .iter()
            .filter(|&&(f, _, k)| f == a && k == 24)
            .count();
        assert!(requests <= super::ATTEMPTS * 2, "{requests} punch requests");
        let _ = Message::<u32>::decode(&[]);
    }

    /// A punched path that goes quiet is pinged once per keepalive
    /// interval, and not more.
    #[test]
    fn punched_paths_are_kept_alive_without_flooding() {
        let (mut net, a, t) = scenario(true, Reach::Nat);
        net.run(Duration::from_secs(2));
        assert_eq!(net.nodes[a].path(&(t as u32)), Path::Punched);
        let before = net.nodes[a].stats().keepalives_sent + net.nodes[t].stats().keepalives_sent;
        net.run(Duration::from_secs(100));
        let after = net.nodes[a].stats().keepalives_sent + net.nodes[t].stats().keepalives_sent;
        let sent = after - before;
        // 100 s / 25 s: about four, from whichever side's timer fires first.
        assert!((2..=8).contains(&sent), "{sent} keepalives");
        assert_eq!(net.nodes[a].path(&(t as u32)), Path::Punched);
        assert!(net.nodes[a].fingers().iter().any(|f| f.addr == t as u32));
    }

    /// A node joining finds its successor behind a NAT: the stabilize
    /// that completes its join goes unanswered until a punch through the
    /// bootstrap (which relayed the join's answer, and links to the
    /// successor) opens the way; then it joins.
    #[test]
    fn a_joiner_whose_successor_is_behind_a_nat_punches_its_way_in() {
        let mut net = Net::new();
        let b = net.add(0x10, false, Config::default(), None);
        net.run(Duration::from_millis(100));
        let t = net.add(0x40, true, Config::default(), Some(b as u32));
        net.run(Duration::from_secs(3));
        assert!(net.nodes[t].is_joined());
        // j lies just before t: t is its successor.
        let j = net.add(0x30, false, Config::default(), Some(b as u32));
        net.run(Duration::from_secs(3));
        assert!(
            net.dropped.iter().any(|&(to, from)| to == t && from == j),
            "t's NAT never refused j"
        );
        assert!(net.nodes[j].is_joined(), "{:?}", net.nodes[j].stats());
        assert_eq!(net.nodes[j].successor().map(|n| n.addr), Some(t as u32));
        assert_eq!(net.nodes[j].stats().punches_succeeded, 1);
        assert_eq!(net.nodes[j].path(&(t as u32)), Path::Punched);
    }

    /// The ring of eight of `far_lookup`, settled, o's NAT closed to all
    /// but its ring neighbours: the net, o, and the nodes' first id bytes.
    fn natted_ring(reach: Reach) -> (Net, usize, [u8; 8]) {
        let mut net = Net::new();
        let firsts = [0x10, 0x20, 0x30, 0x50, 0x70, 0x90, 0xb0, 0xd0];
        net.add(firsts[0], false, quiet(), None);
        net.run(Duration::from_millis(100));
        for f in &firsts[1..] {
            net.add(*f, *f == 0x20, quiet(), Some(0));
            net.run(Duration::from_secs(2));
        }
        net.run(Duration::from_secs(5));
        let o = 1;
        net.nodes[o].set_reach(reach);
        // Its NAT forgets the flows to all but its ring neighbours (idle
        // for longer than its timeout, say).
        let near =
            [net.nodes[o].successor(), net.nodes[o].predecessor()].map(|n| n.map(|n| n.addr));
        net.opened
            .retain(|&(i, a)| i != o || near.contains(&Some(a)));
        assert!(!near.contains(&Some(4)));
        (net, o, firsts)
    }

    /// A ring of eight that know only their neighbours, o (0x20) behind a
    /// NAT; o looks up a key just past a node k (0x70) its NAT is closed
    /// to, so that k answers. Told it is behind a NAT, o has its first hop relay the
    /// answer; not told, the answer is lost at its NAT. Returns o's events
    /// and the owner's id.
    fn far_lookup(reach: Reach) -> (Vec<Event<u32>>, Hash) {
        let (mut net, o, firsts) = natted_ring(reach);
        let k = 4;
        let mut key = [0u8; 32];
        key[0] = firsts[k];
        key[31] = 1;
        let now = net.now;
        net.nodes[o].lookup(Hash::from_bytes(key), now);
        net.run(Duration::from_secs(3));
        let events = std::iter::from_fn(|| net.nodes[o].poll_event()).collect();
        (events, id(firsts[k + 1]))
    }

    #[test]
    fn lookups_from_behind_a_nat_are_answered_through_their_first_hop() {
        let done = |(ev, want): &(Vec<Event<u32>>, Hash)| {
            ev.iter()
                .any(|e| matches!(e, Event::LookupDone { owner, .. } if owner.id == *want))
        };
        let relayed = far_lookup(Reach::Nat);
        assert!(done(&relayed), "{:?}", relayed.0);
        let lost = far_lookup(Reach::Unknown);
        assert!(!done(&lost), "{:?}", lost.0);
    }

    /// o, behind a NAT, sends to a node its NAT is closed to, through
    /// others: the confirmation is lost at its NAT until o, told it is
    /// behind one, looks the destination up and probes it; then a retry is
    /// confirmed. Not told, the send fails.
    fn far_send(reach: Reach) -> (Vec<Event<u32>>, u64) {
        let (mut net, o, firsts) = natted_ring(reach);
        let now = net.now;
        net.nodes[o]
            .send(Target::Node(id(firsts[4])), b"far".to_vec(), 0, now)
            .unwrap();
        net.run(Duration::from_secs(12));
        let events = std::iter::from_fn(|| net.nodes[o].poll_event()).collect();
        (events, net.nodes[o].stats().reach_probes)
    }

    #[test]
    fn sends_from_behind_a_nat_are_confirmed_once_the_destination_is_probed() {
        let (ev, probes) = far_send(Reach::Nat);
        assert!(
            ev.iter().any(|e| matches!(e, Event::Delivered { .. })),
            "{ev:?}"
        );
        assert!(probes >= 1);
        let (ev, probes) = far_send(Reach::Unknown);
        assert!(
            ev.iter().any(|e| matches!(e, Event::SendFailed { .. })),
            "{ev:?}"
        );
        assert_eq!(probes, 0);
    }
}
