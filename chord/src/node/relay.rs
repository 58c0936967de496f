//! Relays: how a peer that cannot be reached first, even by punching (its
//! NAT maps per destination), is reached through a public peer.
//!
//! ```text
//! relayed peer B              relay R (public)                any peer P
//!   RelayTo{to: R, from: X_B} + RelayReserve{peer: X_B} -->   (every request timeout)
//!   <-- RelayReserved{ok}        X_B -> source of B
//!                                <-- RelayTo{to: X_B} + datagram for B
//!   <-- RelayFrom{from: P} + datagram
//!   RelayTo{to: P, from: X_B} + datagram -->
//!                                RelayFrom{from: X_B, relayed} + datagram -->
//! ```
//!
//! The node keeps the state and makes the decisions; the stack (which
//! seals, and must frame what it sealed) builds and opens the frames. A
//! relay holds at most `Config::relay_peers` relayed peers (their
//! announced address and where their datagrams come from) and forwards at
//! most `Config::relay_rate` bytes per second; past either, it refuses and
//! counts. A frame is forwarded only when its sender or its destination
//! holds a place: a relay is never an open relay. A relayed peer sends
//! everything framed, so that every peer knows it by its announced address
//! alone. A peer learns which relay reaches an address from the frames
//! that arrive through it, from a punch's target (`PunchRelayed`), and
//! from the pings a peer sends through its new relay; a request through a
//! relay that times out starts a punch that asks the target for its relay
//! again, and a route whose requests run out of retries is forgotten.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::{LocalNode, Phase, Reach, Waiting};
use crate::wire::{Message, RelayReserve, RelayReserved, RelayToHeader};

/// Relay routes this node remembers (the least recently heard one is
/// forgotten first).
const ROUTES: usize = 1024;
/// How long a relay that refused or went silent is passed over when a
/// relayed peer chooses one.
const AVOID: Duration = Duration::from_secs(30);
/// New routes kept for the stack to take.
const NEW_ROUTES: usize = 64;
/// Peers that offered a punch before this node had a relay, remembered
/// to be told where it is reached.
const ASKERS: usize = 16;
/// A relayed peer's place at its relay lasts this many request timeouts
/// after its last reservation or frame.
const HOLD_TIMEOUTS: u32 = 8;

/// A relayed peer, as its relay knows it.
#[derive(Clone, Debug)]
struct Served<A> {
    /// Where its datagrams come from (its NAT's mapping towards this node).
    src: A,
    until: Instant,
}

/// A relay that reaches a peer.
#[derive(Clone, Debug)]
struct Route<A> {
    relay: A,
    heard: Instant,
}

/// The node's relay state: as a relay, and as a relayed peer.
#[derive(Clone, Debug)]
pub(super) struct RelayState<A> {
    /// As a relay: announced address -> the peer's source.
    served: FxHashMap<A, Served<A>>,
    /// As a relay: source -> announced address.
    by_src: FxHashMap<A, A>,
    /// As a relay: bytes that may be forwarded now, and when last refilled.
    tokens: u64,
    refilled: Option<Instant>,
    /// As a relayed peer: the relay holding this node's reservation.
    relay: Option<A>,
    /// As a relayed peer: the relay being asked, and the request's txn.
    asking: Option<(A, u64)>,
    /// Relays that refused or went silent, and when.
    avoid: Vec<(A, Instant)>,
    /// When the reservation is next refreshed (or a relay next sought).
    next: Option<Instant>,
    /// Which relay reaches which announced address.
    routes: FxHashMap<A, Route<A>>,
    /// Peers that offered a punch while this node had no relay yet: told
    /// where it is reached once it has one.
    askers: Vec<A>,
    /// Peers reached through a relay they were not reached through before,
    /// for the stack (see [`LocalNode::pop_new_route`]).
    new_routes: Vec<A>,
}

impl<A> Default for RelayState<A> {
    fn default() -> Self {
        RelayState {
            served: FxHashMap::default(),
            by_src: FxHashMap::default(),
            tokens: 0,
            refilled: None,
            relay: None,
            asking: None,
            avoid: Vec::new(),
            next: None,
            routes: FxHashMap::default(),
            askers: Vec::new(),
            new_routes: Vec::new(),
        }
    }
}

impl<A: super::Address> RelayState<A> {
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.next
    }

    fn insert_route(&mut self, peer: A, route: Route<A>) {
        self.routes.insert(peer, route);
    }

    fn remove_route(&mut self, peer: &A) -> bool {
        self.routes.remove(peer).is_some()
    }

    /// Forgets the places held past their time.
    fn drop_expired_places(&mut self, now: Instant) {
        let by_src = &mut self.by_src;
        self.served.retain(|_, s| {
            let keep = s.until > now;
            if !keep {
                by_src.remove(&s.src);
            }
            keep
        });
    }

    pub(super) fn heap_bytes(&self) -> usize {
        use crate::memory::{hash_table_bytes, vec_bytes};
        hash_table_bytes(
            self.served.capacity(),
            std::mem::size_of::<(A, Served<A>)>(),
        ) + hash_table_bytes(self.by_src.capacity(), std::mem::size_of::<(A, A)>())
            + hash_table_bytes(self.routes.capacity(), std::mem::size_of::<(A, Route<A>)>())
            + vec_bytes::<(A, Instant)>(self.avoid.capacity())
            + vec_bytes::<A>(self.askers.capacity() + self.new_routes.capacity())
    }
}

impl<A: super::Address> LocalNode<A> {
    /// Whether this node relays for others: relaying is on
    /// (`Config::relay_peers` > 0) and it is not known to sit behind a NAT
    /// without a mapping.
    fn relays(&self) -> bool {
        self.cfg.relay_peers > 0 && !self.behind_nat()
    }

    /// Whether this node is reached through a relay (it holds a
    /// reservation).
    pub fn relayed(&self) -> bool {
        self.relay.relay.is_some()
    }

    /// The relay holding this node's reservation, if any.
    pub fn relay(&self) -> Option<&A> {
        self.relay.relay.as_ref()
    }

    /// Whether no relay state would change where a datagram goes: the
    /// stack's fast path skips the relay checks then.
    pub fn relay_idle(&self) -> bool {
        self.relay.relay.is_none()
            && self.relay.asking.is_none()
            && self.relay.routes.is_empty()
            && self.relay.served.is_empty()
    }

    /// As a relay: where the relayed peer announced at `peer` is reached
    /// (its source address), if this node relays for it.
    pub fn relay_served_src(&self, peer: &A) -> Option<&A> {
        if self.relay.served.is_empty() {
            return None;
        }
        self.relay.served.get(peer).map(|s| &s.src)
    }

    /// As a relay: the announced address of the relayed peer whose
    /// datagrams come from `src`, if this node relays for it.
    pub fn relay_served_peer(&self, src: &A) -> Option<&A> {
        if self.relay.by_src.is_empty() {
            return None;
        }
        self.relay.by_src.get(src)
    }

    /// The relay to hand a datagram for `to` to, framed, or `None` to
    /// send it as it is: a relay that reaches `to` (learned from frames or
    /// a punch); else, for a relayed node, its own relay, even for a
    /// datagram to the relay itself (so that every peer, the relay
    /// included, knows it by its announced address alone, and one seal
    /// session serves each pair); and for a node seeking a relay, the
    /// candidate it asks. A relay's own peers go straight to their source.
    pub fn relay_route(&self, to: &A) -> Option<&A> {
        if self.relay_idle() || self.relay_served_src(to).is_some() {
            return None;
        }
        if let Some(r) = self.relay.routes.get(to) {
            return Some(&r.relay);
        }
        if let Some(own) = &self.relay.relay {
            return Some(own);
        }
        match &self.relay.asking {
            Some((candidate, _)) if candidate == to => Some(candidate),
            _ => None,
        }
    }

    /// What a node behind a NAT that maps per destination claims as its
    /// address in the frames it hands to relays: its announced address
    /// (`None` for other nodes: a relay names them by their source).
    pub fn relay_claim(&self) -> Option<&A> {
        (self.reach() == Reach::Symmetric).then_some(&self.me.addr)
    }

    /// A frame from `src` for this node itself: the name of its sender
    /// (its claim, or `src`). A claim from a peer this node may relay for
    /// gives it a place here, so that what this node sends it reaches it.
    pub fn relay_arrived(&mut self, now: Instant, src: &A, claim: Option<A>) -> A {
        match claim {
            Some(c) => {
                if self.relays() && self.phase == Phase::Joined {
                    self.serve(c.clone(), src.clone(), now);
                }
                c
            }
            None => self
                .relay_served_peer(src)
                .cloned()
                .unwrap_or_else(|| src.clone()),
        }
    }

    /// A frame from `relay` names `peer` as its sender: `peer` is reached
    /// through `relay`.
    pub fn relay_learn(&mut self, peer: A, relay: A, now: Instant) {
        if peer == relay || peer == self.me.addr || relay == self.me.addr {
            return;
        }
        if !self.relay.routes.contains_key(&peer) {
            // A punch to it that failed is forgotten: it is reached now.
            let ids: Vec<crate::hash::Hash> = self
                .known
                .iter()
                .filter(|n| n.addr == peer)
                .map(|n| n.id)
                .collect();
            self.forget_punch_failures(&ids);
        }
        if let Some(r) = self.relay.routes.get_mut(&peer) {
            if r.relay == relay {
                r.heard = now;
                return;
            }
        } else if self.relay.routes.len() >= ROUTES {
            if let Some(oldest) = self
                .relay
                .routes
                .iter()
                .min_by_key(|(_, r)| r.heard)
                .map(|(a, _)| a.clone())
            {
                self.relay.remove_route(&oldest);
            }
        }
        if self.relay.new_routes.len() < NEW_ROUTES && !self.relay.new_routes.contains(&peer) {
            self.relay.new_routes.push(peer.clone());
        }
        self.relay.insert_route(peer, Route { relay, heard: now });
    }

    /// A peer reached through a relay it was not reached through before
    /// (the stack restarts a keyed handshake waiting for it, which went
    /// the old way).
    pub fn pop_new_route(&mut self) -> Option<A> {
        self.relay.new_routes.pop()
    }

    /// Whether a route through a relay is known for `to`.
    pub(super) fn has_relay_route(&self, to: &A) -> bool {
        self.relay.routes.contains_key(to)
    }

    /// Forgets the route to `to`, a request to which ran out of retries,
    /// unless it was learned within the last request timeout (that
    /// request may have left before, another way). Whether a route was
    /// forgotten.
    pub(super) fn forget_relay_route(&mut self, to: &A, now: Instant) -> bool {
        let fresh = now.checked_sub(self.cfg.request_timeout);
        match self.relay.routes.get(to) {
            Some(r) if fresh.is_none_or(|t| r.heard <= t) => self.relay.remove_route(to),
            _ => false,
        }
    }

    /// Counts a frame dropped by the stack (malformed, too large, or a
    /// frame inside a frame).
    pub fn relay_frame_dropped(&mut self) {
        self.stats.relay_dropped += 1;
    }

    /// As a relay, a frame from `src` for `header.to` of `len` bytes:
    /// whether to forward it, and if so the address to send it to, the
    /// name of its sender for the receiver, and whether the sender holds
    /// a place here. Refused (and counted) when
    /// relaying is off, neither end holds a place here, or the byte rate
    /// is spent.
    pub fn relay_forward(
        &mut self,
        now: Instant,
        src: &A,
        header: RelayToHeader<A>,
        len: usize,
    ) -> Option<(A, A, bool)> {
        if !self.relays() || self.phase != Phase::Joined || header.to == self.me.addr {
            self.stats.relay_dropped += 1;
            return None;
        }
        let hold = self.cfg.request_timeout * HOLD_TIMEOUTS;
        // The sender: a relayed peer that reserved here, one that claims
        // its address in the frame (it holds a place from then on, if
        // there is room), or anyone else, named by its source.
        let (name, sender_held) = if let Some(peer) = self.relay.by_src.get(src).cloned() {
            if let Some(s) = self.relay.served.get_mut(&peer) {
                s.until = now + hold;
            }
            (peer, true)
        } else if let Some(claim) = header.from {
            if !self.serve(claim.clone(), src.clone(), now) {
                return None;
            }
            (claim, true)
        } else {
            (src.clone(), false)
        };
        let dest = match self.relay.served.get(&header.to) {
            Some(s) if s.until > now => s.src.clone(),
            _ if sender_held => header.to,
            _ => {
                self.stats.relay_dropped += 1;
                return None;
            }
        };
        if !self.relay_tokens(len as u64, now) {
            self.stats.relay_dropped += 1;
            return None;
        }
        self.stats.relayed_frames += 1;
        self.stats.relayed_bytes += len as u64;
        Some((dest, name, sender_held))
    }

    /// Takes `n` bytes of the relay's rate, if there are that many.
    fn relay_tokens(&mut self, n: u64, now: Instant) -> bool {
        let rate = self.cfg.relay_rate;
        let r = &mut self.relay;
        let elapsed = r
            .refilled
            .map_or(Duration::from_secs(1), |t| now.saturating_duration_since(t));
        let add = (rate as u128 * elapsed.as_micros() / 1_000_000) as u64;
        if add > 0 || r.refilled.is_none() {
            r.tokens = r.tokens.saturating_add(add).min(rate);
            r.refilled = Some(now);
        }
        if r.tokens < n {
            return false;
        }
        r.tokens -= n;
        true
    }

    /// Gives (or keeps) `peer`, whose datagrams come from `src`, a place
    /// at this relay. Refused when relaying is off, when another source
    /// holds the address, or when every place is taken.
    fn serve(&mut self, peer: A, src: A, now: Instant) -> bool {
        if !self.relays() || peer == self.me.addr || src == self.me.addr {
            self.stats.relay_refused += 1;
            return false;
        }
        let hold = self.cfg.request_timeout * HOLD_TIMEOUTS;
        let r = &mut self.relay;
        if let Some(s) = r.served.get_mut(&peer) {
            if s.src == src || s.until <= now {
                if s.src != src {
                    r.by_src.remove(&s.src);
                    s.src = src.clone();
                }
                s.until = now + hold;
                r.by_src.insert(src, peer);
                return true;
            }
            self.stats.relay_refused += 1;
            return false;
        }
        if r.served.len() >= self.cfg.relay_peers {
            r.drop_expired_places(now);
            if r.served.len() >= self.cfg.relay_peers {
                self.stats.relay_refused += 1;
                return false;
            }
        }
        // One source, one relayed peer.
        if let Some(old) = r.by_src.insert(src.clone(), peer.clone()) {
            r.served.remove(&old);
        }
        r.served.insert(
            peer,
            Served {
                src,
                until: now + hold,
            },
        );
        true
    }

    /// As a relay: a peer asks for a place.
    pub(super) fn on_relay_reserve(&mut self, from: A, m: RelayReserve<A>, now: Instant) {
        // The request came framed, named by the peer's claim, which gave
        // it its place already (refreshed here); or straight from its
        // source.
        let ok = if self.phase != Phase::Joined {
            false
        } else if m.peer == from {
            match self.relay_served_src(&from).cloned() {
                Some(src) => self.serve(m.peer, src, now),
                None => {
                    self.stats.relay_refused += 1;
                    false
                }
            }
        } else {
            self.serve(m.peer, from.clone(), now)
        };
        let reply = Message::<A>::RelayReserved(RelayReserved { txn: m.txn, ok }).encode();
        self.reply(from, reply);
    }

    /// As a relayed peer: a relay's answer.
    pub(super) fn on_relay_reserved(&mut self, m: RelayReserved, now: Instant) {
        let Some(p) = self.take_reply(m.txn, |w| matches!(w, Waiting::Reserve { .. })) else {
            return;
        };
        let Waiting::Reserve { relay } = p.waiting else {
            return;
        };
        if self.relay.asking.as_ref().is_some_and(|(_, t)| *t == m.txn) {
            self.relay.asking = None;
        }
        if !m.ok {
            self.relay_lost(relay, now);
            return;
        }
        self.verified(relay.clone(), now);
        if self.relay.relay.as_ref() != Some(&relay) {
            self.stats.relay_reservations += 1;
            tracing::debug!(me = %self.me.id.short(), ?relay, "reserved a relay");
            self.relay.relay = Some(relay);
            // Whatever waits for an answer goes out again at once, through
            // the new relay.
            self.resend_all(now);
            self.announce_relay(now);
        }
    }

    /// Pings, through the new relay, every peer of the table and every
    /// peer that tried to punch this node lately: each learns from the
    /// frame which relay reaches this node (and forgets a punch that
    /// failed). Silence means nothing.
    fn announce_relay(&mut self, now: Instant) {
        let mut to: Vec<A> = self.known.iter().map(|n| n.addr.clone()).collect();
        for a in std::mem::take(&mut self.relay.askers) {
            if !to.contains(&a) {
                to.push(a);
            }
        }
        for a in to {
            if Some(&a) != self.relay.relay.as_ref() {
                self.request(a, 0, Waiting::Verify, now, |txn| {
                    Message::Ping(crate::wire::Ping { txn })
                });
            }
        }
    }

    /// A peer offered a punch while this node, behind a NAT that maps per
    /// destination, holds no relay yet: it is told once there is one.
    pub(super) fn relay_asked(&mut self, peer: A) {
        if self.relay.askers.len() < ASKERS && !self.relay.askers.contains(&peer) {
            self.relay.askers.push(peer);
        }
    }

    /// Once a period: places past their time and routes not heard from
    /// for two keepalive intervals are forgotten (a node without either
    /// takes the stack's fast path again).
    pub(super) fn relay_expire(&mut self, now: Instant) {
        let r = &mut self.relay;
        if !r.served.is_empty() {
            r.drop_expired_places(now);
        }
        if !r.routes.is_empty() {
            let quiet = self.cfg.keepalive_interval * 2;
            r.routes
                .retain(|_, route| now.saturating_duration_since(route.heard) < quiet);
        }
    }

    /// A reservation request to `relay` went unanswered or was refused:
    /// another relay is sought at once.
    pub(super) fn relay_lost(&mut self, relay: A, now: Instant) {
        if self.relay.asking.as_ref().is_some_and(|(a, _)| *a == relay) {
            self.relay.asking = None;
        }
        self.relay
            .avoid
            .retain(|(a, at)| *a != relay && now < *at + AVOID);
        self.relay.avoid.push((relay.clone(), now));
        if self.relay.relay.as_ref() == Some(&relay) {
            self.stats.relays_lost += 1;
            tracing::debug!(me = %self.me.id.short(), ?relay, "lost its relay");
            self.relay.relay = None;
        }
        self.relay.next = Some(now);
        self.arm(now);
    }

    /// Sends every pending request again now, with a fresh timeout (the
    /// way to its destination changed).
    fn resend_all(&mut self, now: Instant) {
        let deadline = now + self.cfg.request_timeout;
        let mut again = Vec::new();
        for p in self.pending.values_mut() {
            if !matches!(p.waiting, Waiting::Reserve { .. }) {
                p.deadline = deadline;
                p.held = false;
                again.push((p.to.clone(), p.bytes.clone()));
            }
        }
        if !again.is_empty() {
            self.arm(deadline);
        }
        for (to, bytes) in again {
            self.push_transmit(to, bytes);
        }
    }

    /// The relay timer: a node behind a NAT that maps per destination
    /// refreshes its reservation every request timeout (which also holds
    /// its NAT's mapping towards the relay open), or seeks a relay.
    pub(super) fn relay_timers(&mut self, now: Instant) {
        let wanted = self.phase == Phase::Joined && self.reach() == Reach::Symmetric;
        if !wanted {
            self.relay.relay = None;
            self.relay.next = None;
            return;
        }
        if self.relay.next.is_some_and(|at| at > now) {
            return;
        }
        let timeout = self.cfg.request_timeout;
        self.relay.next = Some(now + timeout);
        self.arm(now + timeout);
        if self.relay.asking.is_some() {
            return;
        }
        let target = match self.relay.relay.clone() {
            Some(r) => Some(r),
            None => self.relay_candidate(now),
        };
        let Some(relay) = target else {
            return;
        };
        let peer = self.me.addr.clone();
        // One retry: a relay that misses a refresh and its retry (two
        // request timeouts) is left, before the requests that go through
        // it run out of theirs; those are sent again at once through the
        // next relay.
        let waiting = Waiting::Reserve {
            relay: relay.clone(),
        };
        if let Some(txn) = self.request(relay.clone(), 1, waiting, now, |txn| {
            Message::RelayReserve(RelayReserve { txn, peer })
        }) {
            self.relay.asking = Some((relay, txn));
        }
    }

    /// A peer to ask for a reservation: one of the table that has answered
    /// this node, is not reached through a relay itself, and has not
    /// refused or gone silent lately (or, if all have, the one that did so
    /// longest ago).
    fn relay_candidate(&self, now: Instant) -> Option<A> {
        let avoided = |a: &A| {
            self.relay
                .avoid
                .iter()
                .find(|(x, at)| x == a && now < *at + AVOID)
                .map(|(_, at)| *at)
        };
        let mut best: Option<(Option<Instant>, A)> = None;
        for n in &self.known {
            let a = &n.addr;
            if *a == self.me.addr || !self.sources.is_verified(a) || self.has_relay_route(a) {
                continue;
            }
            let key = avoided(a);
            let better = match &best {
                None => true,
                Some((None, _)) => false,
                Some((Some(t), _)) => key.is_none_or(|k| k < *t),
            };
            if better {
                best = Some((key, a.clone()));
            }
        }
        best.map(|(_, a)| a)
    }
}
