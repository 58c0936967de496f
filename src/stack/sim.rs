//! Pure protocol, no I/O: a deterministic network of [`Stack`]s for the
//! tests. A virtual clock, datagrams in flight in a priority queue with a
//! seeded latency, loss and duplication, a hook that drops chosen
//! datagrams, and a log of what crossed the wire (to replay it).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use chord::{Config, Event, Hash, LocalNode, NodeRef};

use super::{Batching, Stack};
use crate::secure::{SecureConfig, SecureCore, SwarmKey};

/// Picks datagrams to drop: `(from, to, bytes)`, true to lose it.
pub(super) type Drop = Box<dyn FnMut(u32, u32, &[u8]) -> bool>;

/// Where the NATs of symmetric stacks put their mappings: stack `i`'s
/// mapping towards address `d` (below 1000) is `MAPPED + i * 1000 + d`,
/// but towards stack 0 (the bootstrap, which tells it where it is seen)
/// it is `i`, the address it announces.
pub(super) const MAPPED: u32 = 1_000_000;

/// A run in flight: due time, order of sending, sender, receiver, bytes,
/// segment size.
type Flight = Reverse<(Instant, u64, u32, u32, Vec<u8>, usize)>;

pub(super) struct Sim {
    pub now: Instant,
    pub stacks: Vec<Stack<u32>>,
    /// Every event each stack reported, in order.
    pub events: Vec<Vec<Event<u32>>>,
    /// Every run that left a stack and was not dropped: (from, to, bytes).
    pub wire: Vec<(u32, u32, Vec<u8>)>,
    /// Chance that a run is lost, and that one is delivered twice.
    pub loss: f64,
    pub duplicate: f64,
    pub drop: Option<Drop>,
    pub batching: Batching,
    pub chord: Config,
    pub secure: SecureConfig,
    /// Stacks behind a NAT that maps per destination and lets in only
    /// the destination of each mapping: only stack 0 reaches the address
    /// they announce.
    pub symmetric: Vec<bool>,
    /// Stacks that are gone: they send, receive and time out no more.
    pub dead: Vec<bool>,
    flights: BinaryHeap<Flight>,
    seq: u64,
    rng: u64,
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        Sim {
            now: Instant::now(),
            stacks: Vec::new(),
            events: Vec::new(),
            wire: Vec::new(),
            loss: 0.0,
            duplicate: 0.0,
            drop: None,
            batching: Batching::NONE,
            chord: Config::default(),
            secure: SecureConfig {
                handshake_retry: Duration::from_millis(100),
                ..SecureConfig::default()
            },
            symmetric: Vec::new(),
            dead: Vec::new(),
            flights: BinaryHeap::new(),
            seq: 0,
            rng: seed,
        }
    }

    /// splitmix64: the network's randomness, from the seed alone.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// The id of the stack at `addr`.
    pub fn id(addr: u32) -> Hash {
        Hash::of(addr.to_string())
    }

    /// Adds a stack (keyed with `key`, or plain) at the next address.
    pub fn add(&mut self, key: Option<&SwarmKey>) -> u32 {
        let addr = self.stacks.len() as u32;
        let me = NodeRef::new(Sim::id(addr), addr);
        let seed = self.next();
        let node = LocalNode::new(self.chord.clone(), me, seed, self.now).expect("config");
        let seal = key.map(|k| {
            let wall = 1_000_000_000 + u64::from(addr);
            SecureCore::new(k.clone(), self.secure.clone(), wall, self.now)
        });
        self.stacks.push(Stack::new(node, seal));
        self.events.push(Vec::new());
        self.symmetric.push(false);
        self.dead.push(false);
        addr
    }

    /// Puts `bytes` on the wire from `from` to `to` now, as a stranger or
    /// a replaying attacker would (not logged, never dropped).
    pub fn inject(&mut self, from: u32, to: u32, bytes: &[u8]) {
        self.seq += 1;
        let at = self.now + Duration::from_millis(1);
        self.flights.push(Reverse((
            at,
            self.seq,
            from,
            to,
            bytes.to_vec(),
            bytes.len(),
        )));
    }

    /// Sends what every stack has to send, and collects their events.
    fn flush(&mut self) {
        for i in 0..self.stacks.len() {
            if self.dead[i] {
                continue;
            }
            while let Some(t) = self.stacks[i].poll_transmit(self.now, self.batching) {
                let mut from = i as u32;
                if self.symmetric[i] {
                    // A mapping of its own towards each destination; none
                    // towards another NAT's mapping.
                    if t.to >= 1000 {
                        continue;
                    }
                    if t.to != 0 {
                        from = MAPPED + from * 1000 + t.to;
                    }
                }
                if let Some(drop) = &mut self.drop {
                    if drop(from, t.to, &t.bytes) {
                        continue;
                    }
                }
                self.wire.push((from, t.to, t.bytes.to_vec()));
                let copies = if self.chance(self.duplicate) { 2 } else { 1 };
                for _ in 0..copies {
                    if self.chance(self.loss) {
                        continue;
                    }
                    let latency = Duration::from_micros(1_000 + self.next() % 2_000);
                    self.seq += 1;
                    let f = (
                        self.now + latency,
                        self.seq,
                        from,
                        t.to,
                        t.bytes.to_vec(),
                        t.segment_size,
                    );
                    self.flights.push(Reverse(f));
                }
            }
            while let Some(e) = self.stacks[i].poll_event() {
                self.events[i].push(e);
            }
        }
    }

    /// Runs the network for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..10_000_000 {
            self.flush();
            let delivery = self.flights.peek().map(|Reverse(f)| f.0);
            let timer = self
                .stacks
                .iter()
                .zip(&self.dead)
                .filter(|(_, dead)| !**dead)
                .filter_map(|(s, _)| s.poll_timeout())
                .min();
            let next = match (delivery, timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            while self
                .flights
                .peek()
                .is_some_and(|Reverse(f)| f.0 <= self.now)
            {
                let Some(Reverse((_, _, from, to, mut bytes, stride))) = self.flights.pop() else {
                    break;
                };
                let at = if to >= MAPPED {
                    // Into a NAT's mapping: only from its destination.
                    let (i, d) = ((to - MAPPED) / 1000, (to - MAPPED) % 1000);
                    if d != from {
                        continue;
                    }
                    i as usize
                } else if self.symmetric.get(to as usize) == Some(&true) && from != 0 {
                    continue;
                } else {
                    to as usize
                };
                if self.dead.get(at) == Some(&true) {
                    continue;
                }
                if let Some(s) = self.stacks.get_mut(at) {
                    let len = bytes.len();
                    s.handle_run(self.now, from, &mut bytes, len, stride);
                }
            }
            for (i, s) in self.stacks.iter_mut().enumerate() {
                if self.dead[i] {
                    continue;
                }
                if s.poll_timeout().is_some_and(|t| t <= self.now) {
                    s.handle_timeout(self.now);
                }
            }
        }
        self.flush();
        self.now = self.now.max(end);
    }

    /// The payloads stack `i` received, in order.
    pub fn received(&self, i: u32) -> Vec<Vec<u8>> {
        self.events[i as usize]
            .iter()
            .filter_map(|e| match e {
                Event::Received { payload, .. } => Some(payload.to_vec()),
                _ => None,
            })
            .collect()
    }

    /// Whether stack `i` reported joining a swarm.
    pub fn joined(&self, i: u32) -> bool {
        self.events[i as usize]
            .iter()
            .any(|e| matches!(e, Event::Joined { .. }))
    }
}
