//! Pure protocol, no I/O: [`Stack`], the one state machine of a peer. It
//! composes the Chord core ([`chord::LocalNode`]) and, in a keyed swarm,
//! the seal ([`SecureCore`]: Noise handshakes, sealed datagrams, replay
//! windows) behind one interface, as str0m composes DTLS, ICE and SCTP
//! inside one `Rtc`:
//!
//! ```text
//! stack.handle_datagram(now, from, &bytes);  // every datagram that arrives
//! stack.handle_unreachable(now, &peer);      // a link says a peer is gone
//! stack.handle_timeout(now);                 // when poll_timeout() has passed
//! while let Some(t) = stack.poll_transmit(now, batching) { /* send the run t */ }
//! while let Some(e) = stack.poll_event()    { /* Joined, Delivered, Received … */ }
//! let wake_at = stack.poll_timeout();        // the one timer, of both machines
//! ```
//!
//! What the node sends goes through the seal (sealed, or queued while a
//! handshake runs) and then into runs of same-size datagrams per
//! destination ([`Transmit::segment_size`]), so that a link hands a run to
//! the system in one call. What arrives goes through the seal (opened,
//! handshakes answered, replays and strangers dropped and counted) and
//! the plaintext into the node. Without a key the seal is absent and
//! datagrams pass as they are.
//!
//! ```
//! # use std::time::Instant;
//! use cicada::chord::{Config, Hash, LocalNode, NodeRef};
//! use cicada::stack::{Batching, Stack};
//! let now = Instant::now();
//! let me = NodeRef::new(Hash::of("a"), 1u32);
//! let mut stack = Stack::new(LocalNode::new(Config::default(), me, 7, now).unwrap(), None);
//! stack.join(2, now);
//! // The join's first request, on its way to the bootstrap.
//! let t = stack.poll_transmit(now, Batching::NONE).unwrap();
//! assert_eq!((t.to, t.segments()), (2, 1));
//! assert!(stack.poll_timeout().is_some());
//! ```

mod output;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use chord::store::Record;
use chord::wire::{self, Message, RelayFromHeader, RelayToHeader, RELAY_FROM, RELAY_TO};
use chord::{Address, Event, Hash, LocalNode, LookupId, MessageId, SendError, StoreOp, Target};

use crate::secure::{SecureCore, SecureStats, DATA_OVERHEAD, MAX_PLAINTEXT};

use output::Runs;
pub use output::{Batching, Transmit};

/// Most datagrams the node hands over in one gathering of runs: enough to
/// fill several runs at once, few enough that the first leaves soon.
const GATHER: usize = 256;

/// Frames a relay holds for sending at once: past these, frames are
/// dropped and counted.
const FORWARDS: usize = 1024;

/// Whether `bytes` is a relay frame (which travels unsealed, keyed or not).
fn is_frame(bytes: &[u8]) -> bool {
    matches!(wire::peek_kind(bytes), Some(RELAY_TO) | Some(RELAY_FROM))
}

thread_local! {
    /// Where a keyed stack writes the plaintext of a datagram it opens
    /// (or sets a run's datagrams aside while opening it in place): one per
    /// thread, not one per peer, as large as the largest datagram opened.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The state machine of one peer: its Chord node, its seal when the swarm
/// is keyed, and the runs waiting to leave (see the module documentation).
pub struct Stack<A> {
    node: LocalNode<A>,
    /// Boxed: an unkeyed peer pays a pointer for it, not the seal's tables.
    seal: Option<Box<SecureCore<A>>>,
    runs: Runs<A>,
    /// Whether plaintext copies of what leaves are kept for
    /// [`poll_sent`](Self::poll_sent).
    watch_sent: bool,
    sent: VecDeque<chord::Transmit<A>>,
    /// Frames this stack, as a relay, passes on, not yet in runs.
    forwards: VecDeque<(A, Bytes)>,
}

impl<A: Address> Stack<A> {
    /// A stack of `node` and, for a keyed swarm, `seal`.
    pub fn new(node: LocalNode<A>, seal: Option<SecureCore<A>>) -> Self {
        Stack {
            node,
            seal: seal.map(Box::new),
            runs: Runs::default(),
            watch_sent: false,
            sent: VecDeque::new(),
            forwards: VecDeque::new(),
        }
    }

    /// The Chord node, to read its tables and counters.
    pub fn node(&self) -> &LocalNode<A> {
        &self.node
    }

    /// Puts a fresh node in place of the current one (a join starts over
    /// from a node of its own); the seal and its sessions stay.
    pub fn reset_node(&mut self, node: LocalNode<A>) {
        self.node = node;
    }

    /// Whether the swarm is keyed.
    pub fn is_keyed(&self) -> bool {
        self.seal.is_some()
    }

    /// The seal's counters, in a keyed swarm.
    pub fn seal_stats(&self) -> Option<SecureStats> {
        self.seal.as_deref().map(SecureCore::stats)
    }

    /// Whether datagrams to and from `peer` are authenticated: a keyed
    /// handshake with it completed (always true without a key).
    pub fn has_session(&self, peer: &A) -> bool {
        self.seal.as_ref().is_none_or(|s| s.has_session(peer))
    }

    // ----------------------------------------------------------------- input

    /// Handles one datagram from `from`: opened by the seal (a handshake
    /// is answered, anything that does not authenticate dropped and
    /// counted), then handed to the node.
    pub fn handle_datagram(&mut self, now: Instant, from: A, bytes: &[u8]) {
        if is_frame(bytes) {
            self.receive(now, from, bytes);
            return;
        }
        // A relayed peer this stack relays for is known (and sealed for)
        // by the address it announces.
        let from = match self.node.relay_served_peer(&from) {
            Some(peer) => peer.clone(),
            None => from,
        };
        let Some(seal) = &mut self.seal else {
            self.node.handle_datagram(now, from, bytes);
            return;
        };
        let node = &mut self.node;
        SCRATCH.with_borrow_mut(|plain| {
            if plain.len() < bytes.len() {
                plain.resize(bytes.len(), 0);
            }
            if let Some(n) = seal.handle_datagram_into(now, &from, bytes, plain) {
                node.handle_datagram(now, from, &plain[..n]);
            }
        });
    }

    /// A datagram from the link address `from`, when relays are in play:
    /// a relay frame (never sealed itself: it carries a datagram sealed
    /// end to end) is forwarded, as a relay, or opened, as its receiver;
    /// anything else is opened (keyed) and handed to the node, named by
    /// its sender's announced address if that is a relayed peer this
    /// stack relays for.
    fn receive(&mut self, now: Instant, from: A, bytes: &[u8]) {
        match wire::peek_kind(bytes) {
            Some(RELAY_TO) => {
                let Ok(Message::RelayTo(f)) = Message::<A>::decode(bytes) else {
                    self.node.relay_frame_dropped();
                    return;
                };
                if f.header.to == self.node.me().addr {
                    let name = self.node.relay_arrived(now, &from, f.header.from);
                    self.deliver(now, name, &f.payload);
                    return;
                }
                let len = f.payload.len();
                let Some((to, from, relayed)) = self.node.relay_forward(now, &from, f.header, len)
                else {
                    return;
                };
                let header = RelayFromHeader { from, relayed };
                let out = wire::encode_relay_frame(RELAY_FROM, &header, &f.payload);
                if self.forwards.len() < FORWARDS {
                    self.forwards.push_back((to, out.into()));
                } else {
                    self.node.relay_frame_dropped();
                }
            }
            Some(RELAY_FROM) => {
                let Ok(Message::RelayFrom(f)) = Message::<A>::decode(bytes) else {
                    self.node.relay_frame_dropped();
                    return;
                };
                if f.header.relayed {
                    self.node.relay_learn(f.header.from.clone(), from, now);
                }
                self.deliver(now, f.header.from, &f.payload);
            }
            _ => {
                let name = self.node.relay_served_peer(&from).cloned().unwrap_or(from);
                self.deliver(now, name, bytes);
            }
        }
    }

    /// A datagram from the peer named `from` (sealed in a keyed swarm),
    /// to the node. A frame inside a frame is dropped: one level of
    /// relaying, never more.
    fn deliver(&mut self, now: Instant, from: A, bytes: &[u8]) {
        let opened;
        let plain = match &mut self.seal {
            None => bytes,
            Some(seal) => match seal.handle_datagram(now, &from, bytes) {
                Some(p) => {
                    opened = p;
                    &opened[..]
                }
                None => return,
            },
        };
        if is_frame(plain) {
            self.node.relay_frame_dropped();
            return;
        }
        self.node.handle_datagram(now, from, plain);
    }

    /// Handles a run received whole from `from`: `len` bytes of `buf`,
    /// datagrams `stride` bytes apart (the last may be shorter), as a link
    /// that coalesces receives hands them over. A keyed stack opens them
    /// in place. Returns how many datagrams the run held.
    pub fn handle_run(
        &mut self,
        now: Instant,
        from: A,
        buf: &mut [u8],
        len: usize,
        stride: usize,
    ) -> usize {
        let len = len.min(buf.len());
        let stride = stride.max(1);
        let count = len.div_ceil(stride).max(1);
        let served = self.node.relay_served_peer(&from).is_some();
        if served || buf[..len].chunks(stride).any(is_frame) {
            if len == 0 {
                self.receive(now, from, &[]);
                return count;
            }
            for d in buf[..len].chunks(stride) {
                self.receive(now, from.clone(), d);
            }
            return count;
        }
        let (len, stride) = match &mut self.seal {
            None => (len, stride),
            Some(seal) => {
                let opened = SCRATCH.with_borrow_mut(|scratch| {
                    seal.open_run(now, &from, buf, len, stride, scratch)
                });
                if opened.0 == 0 {
                    return count;
                }
                opened
            }
        };
        if len == 0 {
            // An empty datagram: the node counts it as malformed.
            self.node.handle_datagram(now, from, &[]);
            return count;
        }
        for d in buf[..len].chunks(stride) {
            self.node.handle_datagram(now, from.clone(), d);
        }
        count
    }

    /// Handles a link's report that `peer` cannot be reached (a flow gone
    /// down, a destination refused): the node fails it at once (see
    /// [`LocalNode::handle_unreachable`]). The seal keeps its sessions: a
    /// peer that comes back at the address needs no new handshake.
    pub fn handle_unreachable(&mut self, now: Instant, peer: &A) {
        self.node.handle_unreachable(now, peer);
    }

    /// Handles the passing of time: the node's and the seal's timers that
    /// are due (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
        if let Some(seal) = &mut self.seal {
            if seal.poll_timeout() <= now {
                seal.handle_timeout(now);
            }
        }
    }

    // ---------------------------------------------------------------- output

    /// The next run of datagrams to send, shaped for a link that sends as
    /// `batching` says. Runs are gathered from up to `GATHER` (256) datagrams
    /// of the node at a time, each sealed (or queued for its handshake)
    /// on the way; the seal's own datagrams (handshakes) go too.
    pub fn poll_transmit(&mut self, now: Instant, batching: Batching) -> Option<Transmit<A>> {
        if let Some(t) = self.runs.pop() {
            return Some(t);
        }
        // A peer reached through a relay now: a handshake with it that
        // went the old way goes again, the new way.
        while let Some(peer) = self.node.pop_new_route() {
            if let Some(seal) = &mut self.seal {
                seal.retry_handshake_now(now, &peer);
            }
        }
        match self.queued_transmits() {
            0 => return None,
            // A lone datagram without a key (a lone call's request, its
            // acknowledgement): nothing to gather it with, it leaves as
            // the node made it.
            1 if self.seal.is_none() && self.forwards.is_empty() && self.node.relay_idle() => {
                let t = self.node.poll_transmit()?;
                if self.watch_sent {
                    self.sent.push_back(t.clone());
                }
                let segment_size = t.bytes.len().max(1);
                return Some(Transmit {
                    to: t.to,
                    segment_size,
                    bytes: t.bytes,
                });
            }
            _ => {}
        }
        self.gather(now, batching);
        self.runs.pop()
    }

    fn gather(&mut self, now: Instant, b: Batching) {
        while let Some((to, bytes)) = self.forwards.pop_front() {
            self.runs.push(to, bytes, b);
        }
        for _ in 0..GATHER {
            self.drain_seal(b);
            let Some(t) = self.node.poll_transmit() else {
                break;
            };
            if self.watch_sent {
                self.sent.push_back(t.clone());
            }
            if self.node.relay_idle() {
                self.push_out(now, t.to, t.bytes, b);
                continue;
            }
            // A relayed peer this node relays for: at its source. One
            // reached through a relay: framed, to the relay (keyed: sealed
            // for the peer first, framed as it leaves the seal).
            if let Some(src) = self.node.relay_served_src(&t.to).cloned() {
                self.push_served(now, t.to, src, t.bytes, b);
            } else if let Some(relay) = self.node.relay_route(&t.to).cloned() {
                match &mut self.seal {
                    None => {
                        let framed = self.frame(&t.to, &t.bytes);
                        self.runs.push(relay, framed.into(), b);
                    }
                    Some(seal) => {
                        let _ = seal.send(now, &t.to, &t.bytes);
                    }
                }
            } else {
                self.push_out(now, t.to, t.bytes, b);
            }
        }
        self.drain_seal(b);
        self.runs.close_all();
    }

    /// A datagram for `to`, framed for the relay that reaches it.
    fn frame(&self, to: &A, bytes: &[u8]) -> Vec<u8> {
        let header = RelayToHeader {
            to: to.clone(),
            from: self.node.relay_claim().cloned(),
        };
        wire::encode_relay_frame(RELAY_TO, &header, bytes)
    }

    /// A datagram of the node for the relayed peer `peer`, which this
    /// stack relays for, to its source `src`: sealed (keyed) under the
    /// peer's announced address.
    fn push_served(&mut self, now: Instant, peer: A, src: A, bytes: Bytes, b: Batching) {
        match &mut self.seal {
            None => self.runs.push(src, bytes, b),
            Some(seal) if seal.can_seal(&peer) && bytes.len() <= MAX_PLAINTEXT => {
                let size = bytes.len() + DATA_OVERHEAD;
                let plain = &bytes;
                self.runs.push_with(src, size, b, |out| {
                    seal.seal_segments(now, &peer, plain, plain.len(), out)
                });
            }
            Some(seal) => {
                let _ = seal.send(now, &peer, &bytes);
            }
        }
    }

    /// A datagram of the node to the link address `to`, sealed on the way
    /// in a keyed swarm.
    fn push_out(&mut self, now: Instant, to: A, bytes: Bytes, b: Batching) {
        match &mut self.seal {
            None => self.runs.push(to, bytes, b),
            // Sealed now, or queued while its handshake runs (a
            // refusal is counted in the seal's statistics; the node
            // retries what needs it).
            Some(seal) if seal.can_seal(&to) && bytes.len() <= MAX_PLAINTEXT => {
                // Sealed straight into its run.
                let size = bytes.len() + DATA_OVERHEAD;
                let plain = &bytes;
                let dest = to.clone();
                self.runs.push_with(to, size, b, |out| {
                    seal.seal_segments(now, &dest, plain, plain.len(), out)
                });
            }
            Some(seal) => {
                let _ = seal.send(now, &to, &bytes);
            }
        }
    }

    /// Moves what the seal has made (sealed datagrams, handshakes) into
    /// runs; what is for a peer reached through a relay is framed and
    /// sealed again, for the relay.
    fn drain_seal(&mut self, b: Batching) {
        let Some(seal) = &mut self.seal else {
            return;
        };
        while let Some((to, d)) = seal.poll_transmit() {
            if self.node.relay_idle() {
                self.runs.push(to, Bytes::from(d), b);
                continue;
            }
            if let Some(src) = self.node.relay_served_src(&to) {
                self.runs.push(src.clone(), Bytes::from(d), b);
                continue;
            }
            match self.node.relay_route(&to).cloned() {
                None => self.runs.push(to, Bytes::from(d), b),
                Some(relay) => {
                    let header = RelayToHeader {
                        to,
                        from: self.node.relay_claim().cloned(),
                    };
                    let framed = wire::encode_relay_frame(RELAY_TO, &header, &d);
                    self.runs.push(relay, framed.into(), b);
                }
            }
        }
    }

    /// Datagrams (of the node, the seal, or gathered in runs) waiting for
    /// [`poll_transmit`](Self::poll_transmit); 0 when it would give none.
    pub fn queued_transmits(&self) -> usize {
        self.node.queued_transmits()
            + self.runs.len()
            + self.forwards.len()
            + self.seal.as_deref().map_or(0, SecureCore::queued_transmits)
    }

    /// Keeps (`true`) or stops keeping a plaintext copy of every datagram
    /// the node hands to the seal and the runs, for
    /// [`poll_sent`](Self::poll_sent) (an application's `send` hook).
    pub fn watch_sent(&mut self, on: bool) {
        self.watch_sent = on;
        if !on {
            self.sent.clear();
        }
    }

    /// The next plaintext datagram the node sent, while
    /// [`watch_sent`](Self::watch_sent) is on.
    pub fn poll_sent(&mut self) -> Option<chord::Transmit<A>> {
        self.sent.pop_front()
    }

    /// The next event of the node.
    pub fn poll_event(&mut self) -> Option<Event<A>> {
        self.node.poll_event()
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run: the
    /// earlier of the node's and the seal's timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let seal = self.seal.as_deref().map(SecureCore::poll_timeout);
        match (self.node.poll_timeout(), seal) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // -------------------------------------------------------------- commands

    /// Starts a swarm of one ([`LocalNode::create`]).
    pub fn create(&mut self, now: Instant) {
        self.node.create(now);
    }

    /// Joins through `bootstrap` ([`LocalNode::join`]).
    pub fn join(&mut self, bootstrap: A, now: Instant) {
        self.node.join(bootstrap, now);
    }

    /// Looks up the owner of `key` ([`LocalNode::lookup`]).
    pub fn lookup(&mut self, key: Hash, now: Instant) -> LookupId {
        self.node.lookup(key, now)
    }

    /// Stores an immutable value ([`LocalNode::put`]).
    pub fn put(&mut self, key: Hash, value: Vec<u8>, ttl_s: u32, now: Instant) -> StoreOp {
        self.node.put(key, value, ttl_s, now)
    }

    /// Stores a signed mutable value ([`LocalNode::put_signed`]).
    pub fn put_signed(&mut self, record: Record, cas: Option<u64>, now: Instant) -> StoreOp {
        self.node.put_signed(record, cas, now)
    }

    /// Reads the values of `key` ([`LocalNode::get`]).
    pub fn get(&mut self, key: Hash, now: Instant) -> StoreOp {
        self.node.get(key, now)
    }

    /// Subscribes to new values of `key` ([`LocalNode::listen`]).
    pub fn listen(&mut self, key: Hash, now: Instant) -> StoreOp {
        self.node.listen(key, now)
    }

    /// Ends a subscription ([`LocalNode::unlisten`]).
    pub fn unlisten(&mut self, op: StoreOp) {
        self.node.unlisten(op);
    }

    /// Names this node under `topic` ([`LocalNode::announce`]).
    pub fn announce(&mut self, topic: &[u8], ttl_s: u32, now: Instant) -> StoreOp {
        self.node.announce(topic, ttl_s, now)
    }

    /// Finds the nodes that announced `topic` ([`LocalNode::find`]).
    pub fn find(&mut self, topic: &[u8], now: Instant) -> StoreOp {
        self.node.find(topic, now)
    }

    /// Sends a confirmed message ([`LocalNode::send`]), given up at
    /// `deadline` if that comes before the send timeout
    /// ([`LocalNode::send_by`]).
    pub fn send(
        &mut self,
        target: Target,
        payload: impl Into<Bytes>,
        duplicates: u8,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Result<MessageId, SendError> {
        match deadline {
            Some(d) => self.node.send_by(target, payload, duplicates, d, now),
            None => self.node.send(target, payload, duplicates, now),
        }
    }

    /// Sends an unconfirmed datagram ([`LocalNode::send_datagram`]).
    pub fn send_datagram(
        &mut self,
        target: Target,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), SendError> {
        self.node.send_datagram(target, payload, now)
    }

    /// Sends to every member ([`LocalNode::broadcast`]).
    pub fn broadcast(
        &mut self,
        payload: impl Into<Bytes>,
        now: Instant,
    ) -> Result<MessageId, SendError> {
        self.node.broadcast(payload, now)
    }

    /// Leaves the swarm gracefully ([`LocalNode::leave`]).
    pub fn leave(&mut self, now: Instant) {
        self.node.leave(now);
    }

    /// Asks `to` where it sees this peer ([`LocalNode::observe`]).
    pub fn observe(&mut self, to: A, now: Instant) {
        self.node.observe(to, now);
    }

    /// How many more messages the application can take
    /// ([`LocalNode::set_receive_room`]).
    pub fn set_receive_room(&mut self, room: usize) {
        self.node.set_receive_room(room);
    }

    /// Tells the node how others can reach it (public, mapped, behind a
    /// NAT), as the driver learns it from its observations.
    pub fn set_reach(&mut self, reach: chord::Reach) {
        self.node.set_reach(reach);
    }
}
