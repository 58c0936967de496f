//! A deterministic discrete-event simulator: many [`LocalNode`]s in one
//! process, exchanging real encoded datagrams through a virtual network with
//! latency, loss and failures, in virtual time.
//!
//! It is just another driver of the core: it calls the same
//! `handle_datagram` / `handle_timeout` / `poll_*` as the UDP driver does.
//! Given the same seed it produces the same run, event for event.
//!
//! ```
//! use std::time::Duration;
//! use chord::sim::{Sim, SimConfig};
//!
//! let mut sim = Sim::new(SimConfig { seed: 7, ..SimConfig::default() });
//! let nodes: Vec<u32> = (0..20).map(|_| sim.add_node()).collect();
//! sim.create(nodes[0]);
//! for (i, n) in nodes.iter().enumerate().skip(1) {
//!     sim.schedule_join(*n, Duration::from_millis(100 * i as u64));
//! }
//! sim.run_for(Duration::from_secs(30));
//! assert!(sim.ring_check().is_correct());
//! ```

mod experiment;
mod queue;
pub mod storage;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::config::Config;
use crate::event::{Event, LookupId, MessageId, SendError, Target, Transmit};
use crate::hash::Hash;
use crate::node::LocalNode;
use crate::wire::{HopAck, Message, Mode, NodeRef};

pub use experiment::{run, Params, Report};
use queue::{Entry, Queue};

/// The virtual network and its nodes' configuration.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Configuration of every node.
    pub node: Config,
    /// Smallest one-way latency.
    pub latency_min: Duration,
    /// Largest one-way latency (uniform between the two).
    pub latency_max: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Seed of every random choice: node ids, latencies, losses, nodes' own seeds.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            node: Config::default(),
            latency_min: Duration::from_millis(10),
            latency_max: Duration::from_millis(80),
            loss: 0.0,
            seed: 1,
        }
    }
}

/// Counters of the virtual network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams sent by nodes.
    pub datagrams: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Datagrams lost to the configured loss rate.
    pub lost: u64,
    /// Datagrams sent to dead nodes.
    pub to_dead: u64,
    /// Datagrams dropped between the sides of a partition.
    pub partitioned: u64,
}

/// How a ring differs from the correct one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RingReport {
    /// Live nodes in the ring.
    pub nodes: usize,
    /// Live nodes whose successor is not the next live node.
    pub wrong_successor: usize,
    /// Live nodes whose predecessor is not the previous live node.
    pub wrong_predecessor: usize,
}

impl RingReport {
    /// True when every live node has the right successor and predecessor.
    pub fn is_correct(&self) -> bool {
        self.wrong_successor == 0 && self.wrong_predecessor == 0
    }
}

/// What became of a lookup started with [`Sim::lookup`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupOutcome {
    /// The node that started it.
    pub origin: u32,
    /// The key.
    pub key: Hash,
    /// The owner found, with the hop count; `None` if it failed.
    pub result: Option<(NodeRef<u32>, u32)>,
}

/// The true ring at one moment: every live node sorted by id.
#[derive(Clone, Debug)]
pub struct Truth {
    ring: Vec<(Hash, u32)>,
}

impl Truth {
    /// The live node responsible for `key` (its successor on the ring).
    pub fn successor_of(&self, key: &Hash) -> Option<u32> {
        if self.ring.is_empty() {
            return None;
        }
        let i = self.ring.partition_point(|(id, _)| id < key);
        Some(self.ring[i % self.ring.len()].1)
    }

    /// Number of live nodes.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether no node is live.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

#[derive(Debug)]
enum Action {
    Deliver {
        to: u32,
        from: u32,
        bytes: bytes::Bytes,
    },
    Timer {
        node: u32,
    },
    Join {
        node: u32,
    },
}

/// What happened to application messages, for experiments to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataEvent {
    /// `node` received message `msg` of `origin`.
    Received {
        /// The receiver.
        node: u32,
        /// The sender.
        origin: u32,
        /// The sender's message id.
        msg: MessageId,
        /// Whether by broadcast.
        broadcast: bool,
        /// Forwarding steps.
        hops: u32,
    },
    /// `origin`'s message was confirmed by `to`.
    Delivered {
        /// The sender.
        origin: u32,
        /// The message.
        msg: MessageId,
        /// The destination that confirmed.
        to: u32,
        /// Forwarding steps.
        hops: u32,
    },
    /// `origin`'s message failed.
    Failed {
        /// The sender.
        origin: u32,
        /// The message.
        msg: MessageId,
        /// Why.
        reason: SendError,
    },
}

#[derive(Debug)]
struct Slot {
    node: LocalNode<u32>,
    dropper: bool,
    /// Side of the current partition; datagrams cross only within a side.
    side: u8,
    alive: bool,
    joined: bool,
    timer: Option<Instant>,
}

/// The simulator. Node addresses are their indices (`u32`).
#[derive(Debug)]
pub struct Sim {
    cfg: SimConfig,
    /// The nodes' configuration, shared by all of them.
    node_cfg: std::sync::Arc<Config>,
    base: Instant,
    now: Instant,
    slots: Vec<Slot>,
    queue: Queue<Action>,
    /// Buffers of [`Sim::after`], kept to be filled again.
    out_buf: Vec<Transmit<u32>>,
    event_buf: Vec<Event<u32>>,
    seq: u64,
    /// Events taken from the queue and carried out.
    dispatched: u64,
    rng: ChaCha8Rng,
    joined: Vec<u32>,
    open: BTreeMap<(u32, LookupId), Hash>,
    join_failures: Vec<u32>,
    data_log: Vec<DataEvent>,
    finished: Vec<LookupOutcome>,
    events: Vec<(u32, Event<u32>)>,
    keep_events: bool,
    net: NetStats,
    /// Store events, kept for `storage` (see `Sim::take_store_events`).
    store_log: Vec<(u32, crate::event::StoreEvent<u32>)>,
}

impl Sim {
    /// An empty network.
    pub fn new(cfg: SimConfig) -> Sim {
        // The one clock reading: the origin of virtual time. Everything after
        // it is `base + virtual duration`, so runs do not depend on it.
        let base = Instant::now();
        Sim {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            node_cfg: std::sync::Arc::new(cfg.node.clone()),
            cfg,
            base,
            now: base,
            slots: Vec::new(),
            queue: Queue::new(),
            out_buf: Vec::new(),
            event_buf: Vec::new(),
            seq: 0,
            dispatched: 0,
            joined: Vec::new(),
            open: BTreeMap::new(),
            join_failures: Vec::new(),
            data_log: Vec::new(),
            finished: Vec::new(),
            events: Vec::new(),
            keep_events: false,
            net: NetStats::default(),
            store_log: Vec::new(),
        }
    }

    /// Keeps every event nodes report (beyond lookups), for [`Sim::take_events`].
    pub fn keep_events(&mut self, keep: bool) {
        self.keep_events = keep;
    }

    /// Adds a node (not yet in any ring) and returns its address.
    pub fn add_node(&mut self) -> u32 {
        let addr = self.slots.len() as u32;
        let id = Hash::of(format!("sim:{}:{}", self.cfg.seed, addr));
        self.add_node_with_id(id)
    }

    /// Adds a node with a chosen id.
    pub fn add_node_with_id(&mut self, id: Hash) -> u32 {
        let addr = self.slots.len() as u32;
        let seed = self.rng.next_u64();
        let node = LocalNode::new(
            self.node_cfg.clone(),
            NodeRef::new(id, addr),
            seed,
            self.now,
        )
        .expect("the simulator's node configuration is valid");
        self.slots.push(Slot {
            node,
            dropper: false,
            side: 0,
            alive: true,
            joined: false,
            timer: None,
        });
        addr
    }

    /// Makes room for `additional` more nodes at once (an experiment that
    /// knows its size saves the vector's doublings).
    pub fn reserve(&mut self, additional: usize) {
        self.slots.reserve_exact(additional);
    }

    /// Virtual time elapsed since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    /// The current virtual instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Number of nodes ever added.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The node at `addr`.
    pub fn node(&self, addr: u32) -> &LocalNode<u32> {
        &self.slots[addr as usize].node
    }

    /// Whether the node at `addr` is alive and has joined.
    pub fn is_live(&self, addr: u32) -> bool {
        let s = &self.slots[addr as usize];
        s.alive && s.joined
    }

    /// Addresses of live, joined nodes.
    pub fn live(&self) -> Vec<u32> {
        (0..self.slots.len() as u32)
            .filter(|a| self.is_live(*a))
            .collect()
    }

    /// Bytes the nodes hold: each node's [`LocalNode::state_bytes`] and the
    /// rest of its slot here, summed over every node ever added.
    pub fn node_state_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| {
                std::mem::size_of::<Slot>() - std::mem::size_of::<LocalNode<u32>>()
                    + s.node.state_bytes()
            })
            .sum()
    }

    /// Bytes of the event queue: its room, and the datagrams under way.
    pub fn queue_bytes(&self) -> usize {
        self.queue.heap_bytes()
            + self
                .queue
                .iter()
                .map(|e| match &e.action {
                    Action::Deliver { bytes, .. } => bytes.len(),
                    _ => 0,
                })
                .sum::<usize>()
    }

    /// Events the simulator has carried out: datagrams delivered (or
    /// dropped at a dead node), timers fired, joins started.
    pub fn events_processed(&self) -> u64 {
        self.dispatched
    }

    /// Counters of the network.
    pub fn net_stats(&self) -> &NetStats {
        &self.net
    }

    /// Makes `addr` the first node of a ring.
    pub fn create(&mut self, addr: u32) {
        let now = self.now;
        self.slots[addr as usize].node.create(now);
        self.after(addr);
    }

    /// Starts `addr` joining through `bootstrap` now.
    pub fn join(&mut self, addr: u32, bootstrap: u32) {
        let now = self.now;
        self.slots[addr as usize].node.join(bootstrap, now);
        self.after(addr);
    }

    /// Makes `addr` join after `delay`, through a live member picked at random then.
    pub fn schedule_join(&mut self, addr: u32, delay: Duration) {
        let at = self.now + delay;
        self.push(at, Action::Join { node: addr });
    }

    /// Kills `addr` at once: it sends and receives nothing more.
    pub fn kill(&mut self, addr: u32) {
        self.slots[addr as usize].alive = false;
    }

    /// Makes `addr` leave gracefully; it is dead once its farewells are sent.
    pub fn leave(&mut self, addr: u32) {
        let now = self.now;
        self.slots[addr as usize].node.leave(now);
        self.after(addr);
        self.slots[addr as usize].alive = false;
    }

    /// Starts a lookup of `key` at `addr`; its outcome shows in
    /// [`Sim::take_lookups`] once it ends.
    pub fn lookup(&mut self, addr: u32, key: Hash) -> LookupId {
        let now = self.now;
        let id = self.slots[addr as usize].node.lookup(key, now);
        self.open.insert((addr, id), key);
        self.after(addr);
        id
    }

    /// Lookups that ended since the last call.
    pub fn take_lookups(&mut self) -> Vec<LookupOutcome> {
        std::mem::take(&mut self.finished)
    }

    /// Lookups started and not yet ended.
    pub fn open_lookups(&self) -> usize {
        self.open.len()
    }

    /// Sends an application message from `addr`; its fate shows in
    /// [`Sim::take_data_events`].
    pub fn send(
        &mut self,
        addr: u32,
        target: Target,
        payload: Vec<u8>,
        duplicates: u8,
    ) -> Result<MessageId, SendError> {
        let now = self.now;
        let r = self.slots[addr as usize]
            .node
            .send(target, payload, duplicates, now);
        self.after(addr);
        r
    }

    /// Broadcasts from `addr`.
    pub fn broadcast(&mut self, addr: u32, payload: Vec<u8>) -> Result<MessageId, SendError> {
        let now = self.now;
        let r = self.slots[addr as usize].node.broadcast(payload, now);
        self.after(addr);
        r
    }

    /// Makes `addr` a dropper: it acknowledges every message it should
    /// forward and then silently drops it (a faulty or malicious forwarder).
    /// It still receives what is meant for it.
    pub fn set_dropper(&mut self, addr: u32, dropper: bool) {
        self.slots[addr as usize].dropper = dropper;
    }

    /// Splits the network: from now on a datagram is delivered only if its
    /// sender and receiver are on the same side (`side(addr)`). Datagrams
    /// already under way still arrive.
    pub fn partition(&mut self, side: impl Fn(u32) -> u8) {
        for (a, slot) in self.slots.iter_mut().enumerate() {
            slot.side = side(a as u32);
        }
    }

    /// Sets the probability that a datagram is lost from now on
    /// ([`SimConfig::loss`] at the start).
    pub fn set_loss(&mut self, loss: f64) {
        self.cfg.loss = loss;
    }

    /// Ends a partition: every node reaches every other again.
    pub fn heal(&mut self) {
        for slot in &mut self.slots {
            slot.side = 0;
        }
    }

    /// Application-message events since the last call.
    pub fn take_data_events(&mut self) -> Vec<DataEvent> {
        std::mem::take(&mut self.data_log)
    }

    /// Nodes whose join failed since the last call.
    pub fn take_join_failures(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.join_failures)
    }

    /// Events kept since the last call (see [`Sim::keep_events`]).
    pub fn take_events(&mut self) -> Vec<(u32, Event<u32>)> {
        std::mem::take(&mut self.events)
    }

    /// Runs the network until virtual time `elapsed` since the start.
    pub fn run_until(&mut self, elapsed: Duration) {
        let end = self.base + elapsed;
        let end_ns = nanos(elapsed);
        while let Some(entry) = self.queue.pop_until(end_ns) {
            self.dispatched += 1;
            self.now = self.base + Duration::from_nanos(entry.at);
            self.dispatch(entry.action);
        }
        self.now = self.now.max(end);
    }

    /// Runs the network for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.elapsed() + d;
        self.run_until(until);
    }

    /// Compares every live node's successor and predecessor with the truth.
    pub fn ring_check(&self) -> RingReport {
        self.ring_check_among(|_| true)
    }

    /// Like [`Sim::ring_check`], for the ring the live nodes with
    /// `member(addr)` should form on their own (one side of a partition).
    pub fn ring_check_among(&self, member: impl Fn(u32) -> bool) -> RingReport {
        let mut ring = self.sorted_live();
        ring.retain(|(_, a)| member(*a));
        let n = ring.len();
        let mut report = RingReport {
            nodes: n,
            ..RingReport::default()
        };
        for (i, (_, addr)) in ring.iter().enumerate() {
            let node = self.node(*addr);
            let (succ, pred) = if n == 1 {
                (None, None)
            } else {
                (Some(ring[(i + 1) % n].1), Some(ring[(i + n - 1) % n].1))
            };
            if node.successor().map(|s| s.addr) != succ {
                report.wrong_successor += 1;
            }
            if node.predecessor().map(|p| p.addr) != pred {
                report.wrong_predecessor += 1;
            }
        }
        report
    }

    /// The live node truly responsible for `key`, by looking at every node.
    /// To check many keys, take a [`Sim::truth`] once instead.
    pub fn true_successor(&self, key: &Hash) -> Option<u32> {
        self.truth().successor_of(key)
    }

    /// The true ring of live nodes as it is now, for checking answers.
    pub fn truth(&self) -> Truth {
        Truth {
            ring: self.sorted_live(),
        }
    }

    fn sorted_live(&self) -> Vec<(Hash, u32)> {
        let mut ring: Vec<(Hash, u32)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.alive && s.joined)
            .map(|(a, s)| (s.node.id(), a as u32))
            .collect();
        ring.sort();
        ring
    }

    /// A random number from the simulator's generator (for experiments).
    pub fn random_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn push(&mut self, at: Instant, action: Action) {
        self.seq += 1;
        self.queue.push(Entry {
            at: nanos(at - self.base),
            seq: self.seq,
            action,
        });
    }

    fn dispatch(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::Deliver { to, from, bytes } => {
                let slot = &mut self.slots[to as usize];
                if !slot.alive {
                    self.net.to_dead += 1;
                    return;
                }
                if slot.dropper {
                    if let Ok(Message::Data(d)) = Message::<u32>::decode(&bytes) {
                        if !d.header.last_hop && d.header.mode != Mode::Broadcast {
                            let ack = Message::<u32>::HopAck(HopAck { txn: d.header.txn });
                            let at = self.now + self.latency();
                            self.push(
                                at,
                                Action::Deliver {
                                    to: from,
                                    from: to,
                                    bytes: ack.encode().into(),
                                },
                            );
                            return;
                        }
                    }
                }
                let slot = &mut self.slots[to as usize];
                slot.node.handle_datagram(now, from, &bytes);
                self.after(to);
            }
            Action::Timer { node } => {
                let slot = &mut self.slots[node as usize];
                if !slot.alive || slot.timer.is_none_or(|t| t > now) {
                    return; // stale: rescheduled since
                }
                slot.timer = None;
                slot.node.handle_timeout(now);
                self.after(node);
            }
            Action::Join { node } => {
                if !self.slots[node as usize].alive || self.joined.is_empty() {
                    return;
                }
                let pick = (self.rng.next_u64() % self.joined.len() as u64) as usize;
                let bootstrap = self.joined[pick];
                self.join(node, bootstrap);
            }
        }
    }

    /// Carries out what node `addr` asked for after it was called.
    fn after(&mut self, addr: u32) {
        let mut out = std::mem::take(&mut self.out_buf);
        let mut events = std::mem::take(&mut self.event_buf);
        let slot = &mut self.slots[addr as usize];
        while let Some(t) = slot.node.poll_transmit() {
            out.push(t);
        }
        while let Some(e) = slot.node.poll_event() {
            events.push(e);
        }
        let next = slot.node.poll_timeout();
        let alive = slot.alive;
        let side = slot.side;
        if next != slot.timer {
            slot.timer = next;
            if let Some(t) = next {
                self.push(t.max(self.now), Action::Timer { node: addr });
            }
        }
        if alive {
            for t in out.drain(..) {
                self.net.datagrams += 1;
                self.net.bytes += t.bytes.len() as u64;
                if self
                    .slots
                    .get(t.to as usize)
                    .is_some_and(|s| s.side != side)
                {
                    self.net.partitioned += 1;
                    continue;
                }
                if self.cfg.loss > 0.0 && self.unit() < self.cfg.loss {
                    self.net.lost += 1;
                    continue;
                }
                let at = self.now + self.latency();
                self.push(
                    at,
                    Action::Deliver {
                        to: t.to,
                        from: addr,
                        bytes: t.bytes,
                    },
                );
            }
        }
        out.clear();
        self.out_buf = out;
        for e in events.drain(..) {
            self.on_event(addr, e);
        }
        self.event_buf = events;
    }

    fn on_event(&mut self, addr: u32, e: Event<u32>) {
        match &e {
            Event::Joined { .. } => {
                let slot = &mut self.slots[addr as usize];
                if !slot.joined {
                    slot.joined = true;
                    self.joined.push(addr);
                }
            }
            Event::LookupDone {
                id, owner, hops, ..
            } => self.finish_lookup(addr, *id, Some((owner.clone(), *hops))),
            Event::LookupFailed { id, .. } => self.finish_lookup(addr, *id, None),
            Event::JoinFailed { .. } => self.join_failures.push(addr),
            Event::Received {
                from,
                id,
                broadcast,
                hops,
                ..
            } => self.data_log.push(DataEvent::Received {
                node: addr,
                origin: from.addr,
                msg: *id,
                broadcast: *broadcast,
                hops: *hops,
            }),
            Event::Delivered { id, to, hops } => self.data_log.push(DataEvent::Delivered {
                origin: addr,
                msg: *id,
                to: to.addr,
                hops: *hops,
            }),
            Event::SendFailed { id, reason } => self.data_log.push(DataEvent::Failed {
                origin: addr,
                msg: *id,
                reason: reason.clone(),
            }),
            Event::Store(s) => self.store_log.push((addr, s.clone())),
            _ => {}
        }
        if self.keep_events {
            self.events.push((addr, e));
        }
    }

    fn finish_lookup(&mut self, addr: u32, id: LookupId, result: Option<(NodeRef<u32>, u32)>) {
        if let Some(key) = self.open.remove(&(addr, id)) {
            self.finished.push(LookupOutcome {
                origin: addr,
                key,
                result,
            });
        }
    }

    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn latency(&mut self) -> Duration {
        let lo = self.cfg.latency_min.as_nanos() as u64;
        let hi = self.cfg.latency_max.as_nanos() as u64;
        let span = hi.saturating_sub(lo);
        let extra = if span == 0 {
            0
        } else {
            self.rng.next_u64() % (span + 1)
        };
        Duration::from_nanos(lo + extra)
    }
}

/// Nanoseconds of a virtual duration (a run of 584 years would overflow).
fn nanos(d: Duration) -> u64 {
    d.as_nanos().try_into().unwrap_or(u64::MAX)
}
