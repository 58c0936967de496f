//! The handshakes of [`SecureCore`]: Noise `NNpsk0` with the swarm key as
//! PSK. Writing and retrying Inits, answering them (checked before any DH,
//! refused when replayed, within the handshake budget), reading Responses.

use std::hash::Hash as StdHash;
use std::time::Instant;

use super::core::{
    be_u32, seal, Pending, SecureCore, Session, DH_LEN, INIT, INIT_LEN, PROLOGUE, RESPONSE,
    RESPONSE_LEN, SEEN_INITS,
};
use super::replay::ReplayWindow;

impl<A: Clone + Eq + StdHash> SecureCore<A> {
    pub(super) fn builder(&self) -> snow::Builder<'_> {
        let b =
            snow::Builder::with_resolver(self.params.clone(), Box::new(super::cipher::Resolver));
        // Neither can fail: the PSK is 32 bytes, the prologue is a constant.
        let b = match b.psk(0, self.key.as_bytes()) {
            Ok(b) => b,
            Err(_) => unreachable!("a 32-byte PSK"),
        };
        match b.prologue(PROLOGUE) {
            Ok(b) => b,
            Err(_) => unreachable!("a prologue"),
        }
    }

    /// A receiver index for a new session or handshake with `peer`, none
    /// of whose others has it.
    pub(super) fn fresh_index(&mut self, peer: &A) -> u32 {
        loop {
            let mut b = [0u8; 4];
            if super::random_bytes(&mut b).is_err() {
                // No OS randomness: fall back on a counter (indexes need
                // only be distinct, not secret).
                self.fallback_index = self.fallback_index.wrapping_add(1);
                b = self.fallback_index.to_be_bytes();
            }
            let i = u32::from_be_bytes(b);
            let taken = self
                .peers
                .get(peer)
                .is_some_and(|p| p.indexes().any(|x| x == i));
            if i != 0 && !taken {
                return i;
            }
        }
    }

    pub(super) fn stamp(&mut self, now: Instant) -> u64 {
        let t = self
            .wall_base
            .saturating_add(now.saturating_duration_since(self.created).as_nanos() as u64);
        self.last_stamp = t.max(self.last_stamp.saturating_add(1));
        self.last_stamp
    }

    /// Sends a (new) Init to `to`, replacing any handshake under way.
    pub(super) fn initiate(&mut self, now: Instant, to: &A, attempt: u32) {
        let Ok(mut hs) = self.builder().build_initiator() else {
            return;
        };
        let local = self.fresh_index(to);
        let stamp = self.stamp(now).to_be_bytes();
        let mut msg = vec![0u8; INIT_LEN];
        msg[0] = INIT;
        msg[1..5].copy_from_slice(&local.to_be_bytes());
        match hs.write_message(&stamp, &mut msg[5..]) {
            Ok(n) if 5 + n == INIT_LEN => {}
            _ => {
                tracing::warn!("cannot write a Noise handshake message");
                return;
            }
        }
        if attempt == 1 {
            self.stats.handshakes_initiated += 1;
        }
        let retry_at = now + self.cfg.handshake_retry;
        let Some(peer) = self.peers.get_mut(to) else {
            return;
        };
        peer.pending = Some(Box::new(Pending {
            local,
            hs,
            attempts: attempt,
            retry_at,
        }));
        self.earliest_retry = Some(self.earliest_retry.map_or(retry_at, |r| r.min(retry_at)));
        self.out.push_back((to.clone(), msg));
    }

    pub(super) fn give_up(&mut self, a: &A) {
        let Some(peer) = self.peers.get_mut(a) else {
            return;
        };
        peer.pending = None;
        self.stats.handshakes_failed += 1;
        let dropped = peer.queue.len() as u64;
        let bytes: usize = peer.queue.iter().map(Vec::len).sum();
        peer.queue = Default::default();
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        self.stats.dropped_handshake_failed += dropped;
        tracing::debug!(dropped, "handshake gave up");
        if !peer.confirmed() && peer.next.is_none() {
            self.remove(a);
        }
    }

    pub(super) fn init(&mut self, now: Instant, from: &A, bytes: &[u8]) {
        let Some(remote) = be_u32(&bytes[1..]) else {
            return;
        };
        let Ok(mut hs) = self.builder().build_responder() else {
            return;
        };
        // Message 1 of NNpsk0 costs no DH: checking it is a hash and an AEAD.
        let mut stamp = [0u8; 8];
        match hs.read_message(&bytes[5..], &mut stamp) {
            Ok(8) => {}
            _ => {
                self.stats.dropped_bad_mac += 1;
                return;
            }
        }
        let stamp = u64::from_be_bytes(stamp);
        let mut e = [0u8; DH_LEN];
        e.copy_from_slice(&bytes[5..5 + DH_LEN]);
        if self.seen_inits.contains(&self.init_fingerprint(&e))
            || self.peers.get(from).is_some_and(|p| stamp <= p.last_init)
        {
            self.stats.dropped_replay += 1;
            return;
        }
        // Answering costs an ephemeral key and a DH: rate-limited.
        if !self.handshakes.take(now) {
            self.stats.dropped_rate_limited += 1;
            return;
        }
        let local = self.fresh_index(from);
        let mut msg = vec![0u8; RESPONSE_LEN];
        msg[0] = RESPONSE;
        msg[1..5].copy_from_slice(&local.to_be_bytes());
        msg[5..9].copy_from_slice(&remote.to_be_bytes());
        let transport = match hs.write_message(&[], &mut msg[9..]) {
            Ok(n) if 9 + n == RESPONSE_LEN => hs.into_stateless_transport_mode(),
            _ => return,
        };
        let Ok(transport) = transport else {
            return;
        };
        self.remember_init(e);
        if !self.peers.contains_key(from) {
            self.make_room(now);
        }
        let peer = self.peers.entry(from.clone()).or_default();
        peer.last_init = stamp;
        peer.active = Some(now);
        peer.next = Some(Box::new(Session {
            local,
            remote,
            transport,
            send_nonce: 0,
            replay: ReplayWindow::default(),
        }));
        self.stats.handshakes_answered += 1;
        self.out.push_back((from.clone(), msg));
    }

    /// The fingerprint under which an Init's ephemeral key is remembered.
    pub(super) fn init_fingerprint(&self, e: &[u8; DH_LEN]) -> u64 {
        use std::hash::BuildHasher;
        self.init_key.hash_one(e)
    }

    pub(super) fn remember_init(&mut self, e: [u8; DH_LEN]) {
        if self.seen_order.len() >= SEEN_INITS {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen_inits.remove(&old);
            }
        }
        let f = self.init_fingerprint(&e);
        self.seen_inits.insert(f);
        self.seen_order.push_back(f);
    }

    pub(super) fn response(&mut self, now: Instant, from: &A, bytes: &[u8]) {
        let (Some(remote), Some(local)) = (be_u32(&bytes[1..]), be_u32(&bytes[5..])) else {
            return;
        };
        let ours = self
            .peers
            .get(from)
            .and_then(|p| p.pending.as_ref())
            .is_some_and(|p| p.local == local);
        if !ours {
            self.stats.dropped_unknown_session += 1;
            return;
        }
        // Reading message 2 costs a DH: rate-limited.
        if !self.handshakes.take(now) {
            self.stats.dropped_rate_limited += 1;
            return;
        }
        let Some(peer) = self.peers.get_mut(from) else {
            return;
        };
        let Some(mut pending) = peer.pending.take() else {
            return;
        };
        let mut empty = [0u8; 0];
        if !matches!(pending.hs.read_message(&bytes[9..], &mut empty), Ok(0)) {
            // A forgery (snow restores the state): the handshake stays under way.
            peer.pending = Some(pending);
            self.stats.dropped_bad_mac += 1;
            return;
        }
        let Ok(transport) = pending.hs.into_stateless_transport_mode() else {
            return;
        };
        let mut session = Session {
            local,
            remote,
            transport,
            send_nonce: 0,
            replay: ReplayWindow::default(),
        };
        self.stats.handshakes_completed += 1;
        peer.active = Some(now);
        // Everything that waited goes out now, in order.
        // Taken whole: an emptied queue would keep its room for the peer's
        // lifetime.
        let queued = std::mem::take(&mut peer.queue);
        for plain in &queued {
            self.queued_bytes = self.queued_bytes.saturating_sub(plain.len());
            if let Some(d) = seal(&mut session, plain) {
                self.out.push_back((from.clone(), d));
            }
        }
        if queued.is_empty() {
            // Nothing to send: an empty datagram confirms the session to the
            // responder all the same, so it switches to it (after a restart
            // of ours it may still be sending under a session we lost).
            if let Some(d) = seal(&mut session, &[]) {
                self.out.push_back((from.clone(), d));
            }
        }
        peer.previous = peer.current.replace(Box::new(session));
    }
}
