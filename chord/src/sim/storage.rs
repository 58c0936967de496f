//! The storage experiment: a ring of nodes, values put into the DHT, then
//! churn (exponentially distributed sessions, each leave replaced by a
//! join) or a mass failure, gets throughout, and a count of the values no
//! live node holds any more.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{Sim, SimConfig};
use crate::event::{StoreEvent, StoreOp};
use crate::hash::{Hash, Interval};
use crate::node::LocalNode;

impl Sim {
    /// `addr` puts `value` under `key` (see [`LocalNode::put`]).
    pub fn put(&mut self, addr: u32, key: Hash, value: Vec<u8>, ttl_s: u32) -> StoreOp {
        let now = self.now;
        let op = self.slots[addr as usize].node.put(key, value, ttl_s, now);
        self.after(addr);
        op
    }

    /// `addr` puts a signed record (see [`LocalNode::put_signed`]).
    pub fn put_signed(
        &mut self,
        addr: u32,
        record: crate::store::Record,
        cas: Option<u64>,
    ) -> StoreOp {
        let now = self.now;
        let op = self.slots[addr as usize].node.put_signed(record, cas, now);
        self.after(addr);
        op
    }

    /// `addr` reads `key` (see [`LocalNode::get`]).
    pub fn get(&mut self, addr: u32, key: Hash) -> StoreOp {
        let now = self.now;
        let op = self.slots[addr as usize].node.get(key, now);
        self.after(addr);
        op
    }

    /// `addr` listens to `key` (see [`LocalNode::listen`]).
    pub fn listen(&mut self, addr: u32, key: Hash) -> StoreOp {
        let now = self.now;
        let op = self.slots[addr as usize].node.listen(key, now);
        self.after(addr);
        op
    }

    /// `addr` announces `topic` (see [`LocalNode::announce`]).
    pub fn announce(&mut self, addr: u32, topic: &[u8]) -> StoreOp {
        let now = self.now;
        let op = self.slots[addr as usize].node.announce(topic, 0, now);
        self.after(addr);
        op
    }

    /// `addr` looks for the peers of `topic` (see [`LocalNode::find`]).
    pub fn find(&mut self, addr: u32, topic: &[u8]) -> StoreOp {
        let now = self.now;
        let op = self.slots[addr as usize].node.find(topic, now);
        self.after(addr);
        op
    }

    /// The store events nodes reported since the last call.
    pub fn take_store_events(&mut self) -> Vec<(u32, StoreEvent<u32>)> {
        std::mem::take(&mut self.store_log)
    }

    /// How many live nodes hold a record under `key`.
    pub fn held_by_live(&self, key: &Hash) -> usize {
        let now = self.now;
        self.slots
            .iter()
            .filter(|s| s.alive && !s.node.stored(key, now).is_empty())
            .count()
    }

    /// Kills `addr` and frees its state, keeping what `take` reads of it.
    fn kill_and_free(&mut self, addr: u32) -> crate::store::StoreStats {
        let slot = &mut self.slots[addr as usize];
        slot.alive = false;
        let stats = slot.node.store_stats();
        let me = slot.node.me().clone();
        if let Ok(fresh) = LocalNode::new(self.node_cfg.clone(), me, 0, self.now) {
            slot.node = fresh;
        }
        stats
    }
}

/// Parameters of [`run`].
#[derive(Clone, Debug)]
pub struct Params {
    /// The network and node configuration (replicas in `sim.node.store`).
    pub sim: SimConfig,
    /// Nodes in the ring.
    pub nodes: usize,
    /// Values put before the churn.
    pub puts: usize,
    /// Gets, spread evenly over the churn (or after the failure).
    pub gets: usize,
    /// Bytes of each value.
    pub value_size: usize,
    /// Median session length; `None`: no churn.
    pub session_median: Option<Duration>,
    /// How long the churn lasts.
    pub churn: Duration,
    /// Fraction of nodes killed at once after the puts (0: none).
    pub fail: f64,
    /// Time given to repair after the churn or failure, before the count.
    pub settle: Duration,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            sim: SimConfig::default(),
            nodes: 200,
            puts: 1000,
            gets: 1000,
            value_size: 100,
            session_median: None,
            churn: Duration::from_secs(60),
            fail: 0.0,
            settle: Duration::from_secs(30),
        }
    }
}

/// What [`run`] measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Nodes in the ring.
    pub nodes: usize,
    /// Replicas per key.
    pub replicas: usize,
    /// Values whose put the owner acknowledged.
    pub values_stored: usize,
    /// Puts that failed (not counted as values).
    pub puts_failed: usize,
    /// Stored values no live node holds at the end.
    pub values_lost: usize,
    /// Of them, those whose last `replicas` holders died one after
    /// another, each within one repair interval of the one before: outside
    /// the invariant, expected.
    pub values_lost_outside_invariant: usize,
    /// Of those, the ones whose last `replicas` holders all died within
    /// one repair interval.
    pub values_lost_at_once: usize,
    /// Of the values lost, the others: lost although no `replicas` of
    /// their holders died in such a sequence. The invariant says none;
    /// any is a protocol failure.
    pub values_lost_within_invariant: usize,
    /// The repair interval of the invariant, in seconds (see
    /// [`repair_interval`]).
    pub repair_interval_s: f64,
    /// Among lost values whose last `replicas` holders died, the longest
    /// time from the first to the last of those deaths, in seconds: how
    /// close the losses came to the repair interval.
    pub lost_holders_span_max_s: f64,
    /// Gets issued.
    pub gets: usize,
    /// Of them, those that returned the value.
    pub get_success_rate: f64,
    /// Mean forwarding steps of the lookups of successful gets.
    pub get_hops_mean: f64,
    /// Gets that failed (no answer before their deadline) although a live
    /// node held the value.
    pub gets_failed: usize,
    /// Gets answered without the value although a live node held it.
    pub gets_without_value: usize,
    /// Gets that failed or were answered without the value when no live
    /// node held it any more (a lost value).
    pub gets_of_lost_values: usize,
    /// Gets whose reader died before the answer (not counted as failed).
    pub gets_reader_died: usize,
    /// Of the gets of values a live node held, those that returned the
    /// value: successful / (successful + `gets_failed` +
    /// `gets_without_value`).
    pub get_success_rate_of_held_values: f64,
    /// Nodes that left (churn or failure).
    pub departures: usize,
    /// Nodes that joined to replace them.
    pub joins: usize,
    /// Repair bytes sent (anti-entropy, hand-off, read repair) per live
    /// node per second of the churn or recovery.
    pub repair_bytes_per_node_per_s: f64,
    /// Bytes copying puts to replicas, per node per second of the put phase.
    pub replication_bytes_per_node_per_s: f64,
    /// Bytes of records a live node holds at the end, on average.
    pub store_bytes_per_node: f64,
    /// Records a live node holds at the end, on average.
    pub store_values_per_node: f64,
    /// Records refused by any node (quota, signature, stale...).
    pub refused: u64,
    /// Virtual seconds simulated.
    pub sim_seconds: f64,
}

/// The repair interval of the invariant under `cfg`: the longest time
/// from the failure of a node holding a value to the anti-entropy round
/// that copies the value to a new replica, when no datagram is lost.
///
/// - The failed node's neighbour sends it a request at its next tick (at
///   most `stabilize_interval` × 1.2, ticks being jittered by ±20%) and
///   declares it dead after `failure_timeout()` (`request_timeout` ×
///   (`request_retries` + 1)).
/// - The news travels back one node per stabilize (a tick and a round
///   trip) to the owner whose replica set changed: `replicas` − 2 hops
///   for the last replica, at least one (a dead owner's successor learns
///   its new predecessor from the predecessor's next stabilize).
/// - The owner's round: digests, key digests, records, three one-way
///   latencies.
///
/// With the defaults: 1.2 + 1.5 + 1.36 + 0.24 = 4.3 s at 3 replicas,
/// 7.0 s at 5.
pub fn repair_interval(cfg: &SimConfig) -> Duration {
    let node = &cfg.node;
    let tick = node.stabilize_interval.mul_f64(1.2);
    let hop = tick + cfg.latency_max * 2;
    let hops = node.store.replicas.saturating_sub(2).max(1) as u32;
    tick + node.failure_timeout() + hop * hops + cfg.latency_max * 3
}

/// Which holders of each stored value died and when: the last `replicas`
/// deaths per value, enough to tell whether a lost value's holders all
/// failed within one repair interval. Memory: `replicas` entries per
/// value.
#[derive(Debug)]
struct Deaths {
    replicas: usize,
    window: Duration,
    /// Per tracked value: (node, time of death), oldest first.
    of: BTreeMap<Hash, Vec<(u32, Duration)>>,
}

impl Deaths {
    fn new(replicas: usize, window: Duration, values: impl IntoIterator<Item = Hash>) -> Deaths {
        Deaths {
            replicas: replicas.max(1),
            window,
            of: values.into_iter().map(|k| (k, Vec::new())).collect(),
        }
    }

    /// `addr` is about to die at `at`: note it for each value it holds as
    /// one of the value's `replicas` holders. A copy of a key outside the
    /// range the node holds for (from its `replicas`-th predecessor to
    /// itself, by the nodes' own predecessor pointers) is a stale one that
    /// a join left behind: no repair reads it, so its death is not one of
    /// the value's holders failing. Where the chain of predecessors is not
    /// known, every copy counts.
    fn dying(&mut self, sim: &Sim, addr: u32) {
        let at = sim.elapsed();
        let node = sim.node(addr);
        let mut start = node.predecessor().map(|p| (p.id, p.addr));
        for _ in 1..self.replicas {
            start = start.and_then(|(_, a)| {
                sim.is_live(a)
                    .then(|| sim.node(a).predecessor().map(|p| (p.id, p.addr)))
                    .flatten()
            });
        }
        let range = start.map(|(id, _)| Interval::open_closed(id, node.id()));
        for key in node.stored_keys() {
            if range.as_ref().is_some_and(|r| !r.contains(&key)) {
                continue;
            }
            if let Some(d) = self.of.get_mut(&key) {
                if d.len() == self.replicas {
                    d.remove(0);
                }
                d.push((addr, at));
            }
        }
    }

    /// Whether the loss of `key` is outside the invariant: its last
    /// `replicas` holders died one after another, each within one repair
    /// interval of the one before (a repair under way starts again when a
    /// holder fails before it is done).
    fn explained(&self, key: &Hash) -> bool {
        self.of.get(key).is_some_and(|d| {
            d.len() == self.replicas && d.windows(2).all(|w| w[1].1 - w[0].1 <= self.window)
        })
    }

    /// Whether `key`'s last `replicas` holders all died within one repair
    /// interval.
    fn at_once(&self, key: &Hash) -> bool {
        self.span(key).is_some_and(|s| s <= self.window)
    }

    /// The time from the first to the last death of `key`'s last
    /// `replicas` holders, if that many died.
    fn span(&self, key: &Hash) -> Option<Duration> {
        self.of
            .get(key)
            .filter(|d| d.len() == self.replicas)
            .map(|d| d[d.len() - 1].1 - d[0].1)
    }
}

/// Kills `addr`, noting which values died with it.
fn kill_noting(sim: &mut Sim, deaths: &mut Deaths, addr: u32) -> crate::store::StoreStats {
    deaths.dying(sim, addr);
    sim.kill_and_free(addr)
}

fn pick(sim: &mut Sim, from: &[u32]) -> u32 {
    from[(sim.random_u64() % from.len() as u64) as usize]
}

fn joined_live(sim: &Sim) -> Vec<u32> {
    (0..sim.slots.len() as u32)
        .filter(|a| sim.slots[*a as usize].alive && sim.slots[*a as usize].node.is_joined())
        .collect()
}

/// Runs the experiment.
pub fn run(params: &Params) -> Report {
    let mut sim = Sim::new(params.sim.clone());
    let period = params.sim.node.stabilize_interval;
    let n = params.nodes.max(2);
    let mut report = Report {
        nodes: n,
        replicas: params.sim.node.store.replicas,
        gets: params.gets,
        ..Report::default()
    };
    sim.reserve(n);
    let addrs: Vec<u32> = (0..n).map(|_| sim.add_node()).collect();
    sim.create(addrs[0]);
    let scale = period.as_secs_f64() / 1.2f64.ln();
    let mut last = Duration::ZERO;
    for (i, a) in addrs.iter().enumerate().skip(1) {
        last = Duration::from_secs_f64(scale * ((1 + i) as f64).ln());
        sim.schedule_join(*a, last);
    }
    sim.run_until(last + period);
    for _ in 0..120 {
        for a in sim.take_join_failures() {
            sim.schedule_join(a, period / 2);
        }
        if joined_live(&sim).len() == n && sim.ring_check().is_correct() {
            break;
        }
        sim.run_for(period);
    }

    // Puts, spread over a minute (a source's put rate is bounded).
    let mut values: BTreeMap<Hash, Vec<u8>> = BTreeMap::new();
    let mut put_ops: BTreeMap<(u32, StoreOp), Hash> = BTreeMap::new();
    let live = joined_live(&sim);
    let steps = 60usize;
    let put_window = Duration::from_secs(60);
    let before = total_stats(&sim);
    for step in 0..steps {
        let from = params.puts * step / steps;
        let to = params.puts * (step + 1) / steps;
        for i in from..to {
            let key = Hash::of(format!("value:{}:{i}", params.sim.seed));
            let mut value = vec![0u8; params.value_size];
            let tag = (i as u64).to_be_bytes();
            for (j, b) in value.iter_mut().enumerate() {
                *b = tag[j % 8] ^ (j as u8);
            }
            let at = pick(&mut sim, &live);
            let op = sim.put(at, key, value.clone(), 0);
            put_ops.insert((at, op), key);
            values.insert(key, value);
        }
        sim.run_for(put_window / steps as u32);
    }
    sim.run_for(params.sim.node.store.op_timeout + period * 2);
    let replicated = total_stats(&sim).replication_bytes_out - before.replication_bytes_out;
    report.replication_bytes_per_node_per_s =
        replicated as f64 / n as f64 / (put_window.as_secs_f64() + 1.0);
    let mut stored: Vec<Hash> = Vec::new();
    for (addr, e) in sim.take_store_events() {
        match e {
            StoreEvent::Stored { op, key } if put_ops.remove(&(addr, op)).is_some() => {
                stored.push(key)
            }
            StoreEvent::Failed { op, .. } if put_ops.remove(&(addr, op)).is_some() => {
                report.puts_failed += 1
            }
            _ => {}
        }
    }
    report.puts_failed += put_ops.len();
    report.values_stored = stored.len();
    let interval = repair_interval(&params.sim);
    report.repair_interval_s = interval.as_secs_f64();
    let mut deaths = Deaths::new(report.replicas, interval, stored.iter().copied());

    // Churn or failure, with gets spread over it.
    let start = sim.elapsed();
    let repair_before = total_stats(&sim).repair_bytes_out;
    let mut repair_dead = 0u64;
    let mut gets: BTreeMap<(u32, StoreOp), Hash> = BTreeMap::new();
    let mut tally = GetTally::default();
    let mut node_seconds = 0.0;
    if params.fail > 0.0 {
        let mut live = joined_live(&sim);
        let kill = ((params.fail * live.len() as f64) as usize).min(live.len() - 1);
        for i in 0..kill {
            let j = i + (sim.random_u64() % (live.len() - i) as u64) as usize;
            live.swap(i, j);
            repair_dead += kill_noting(&mut sim, &mut deaths, live[i]).repair_bytes_out;
        }
        report.departures = kill;
    }
    let window = if params.session_median.is_some() {
        params.churn
    } else {
        params.settle
    };
    let secs = window.as_secs().max(1) as usize;
    // Exponential sessions: a node dies in each second with probability
    // 1 - exp(-ln2 / median).
    let p_die = params
        .session_median
        .map_or(0.0, |m| 1.0 - (-(2f64.ln()) / m.as_secs_f64()).exp());
    let mut pending_joins: Vec<u32> = Vec::new();
    for s in 0..secs {
        let live = joined_live(&sim);
        node_seconds += live.len() as f64;
        if p_die > 0.0 {
            for a in &live {
                if (sim.random_u64() >> 11) as f64 / (1u64 << 53) as f64 >= p_die {
                    continue;
                }
                repair_dead += kill_noting(&mut sim, &mut deaths, *a).repair_bytes_out;
                report.departures += 1;
                let fresh = sim.add_node();
                pending_joins.push(fresh);
            }
            let live: Vec<u32> = live.into_iter().filter(|a| sim.is_live(*a)).collect();
            for a in pending_joins.drain(..) {
                let b = pick(&mut sim, &live);
                sim.join(a, b);
                report.joins += 1;
            }
            for a in sim.take_join_failures() {
                if sim.is_live(a) {
                    let b = pick(&mut sim, &live);
                    sim.join(a, b);
                }
            }
        }
        let from = params.gets * s / secs;
        let to = params.gets * (s + 1) / secs;
        let live = joined_live(&sim);
        for _ in from..to {
            if stored.is_empty() {
                break;
            }
            let key = stored[(sim.random_u64() % stored.len() as u64) as usize];
            let at = pick(&mut sim, &live);
            let op = sim.get(at, key);
            gets.insert((at, op), key);
        }
        sim.run_for(Duration::from_secs(1));
        tally_gets(&mut sim, &mut gets, &values, &mut tally);
    }
    let elapsed = (sim.elapsed() - start).as_secs_f64();
    if params.session_median.is_some() {
        sim.run_for(params.settle);
    }
    sim.run_for(params.sim.node.store.op_timeout);
    tally_gets(&mut sim, &mut gets, &values, &mut tally);
    report.get_success_rate = tally.ok as f64 / params.gets.max(1) as f64;
    report.get_hops_mean = tally.hops as f64 / tally.ok.max(1) as f64;
    // A get still open belongs to a reader that died (its state went with
    // it) or failed to finish in time.
    for (&(reader, _), key) in &gets {
        if !sim.is_live(reader) {
            report.gets_reader_died += 1;
        } else if sim.held_by_live(key) == 0 {
            tally.of_lost += 1;
        } else {
            tally.failed += 1;
        }
    }
    report.gets_failed = tally.failed;
    report.gets_without_value = tally.without_value;
    report.gets_of_lost_values = tally.of_lost;
    report.get_success_rate_of_held_values =
        tally.ok as f64 / (tally.ok + tally.failed + tally.without_value).max(1) as f64;
    let repair = total_stats(&sim).repair_bytes_out + repair_dead - repair_before;
    let mean_nodes = node_seconds / secs as f64;
    report.repair_bytes_per_node_per_s = repair as f64 / mean_nodes.max(1.0) / elapsed.max(1.0);
    let held: std::collections::BTreeSet<Hash> = joined_live(&sim)
        .into_iter()
        .flat_map(|a| sim.node(a).stored_keys())
        .collect();
    for k in stored.iter().filter(|k| !held.contains(k)) {
        report.values_lost += 1;
        if let Some(span) = deaths.span(k) {
            report.lost_holders_span_max_s = report.lost_holders_span_max_s.max(span.as_secs_f64());
        }
        if deaths.explained(k) {
            report.values_lost_outside_invariant += 1;
            report.values_lost_at_once += usize::from(deaths.at_once(k));
        } else {
            report.values_lost_within_invariant += 1;
            tracing::debug!(?k, deaths = ?deaths.of.get(k), "lost within the invariant");
        }
    }
    let live = joined_live(&sim);
    let (mut bytes, mut count) = (0usize, 0usize);
    for a in &live {
        let (c, b) = sim.node(*a).store_len();
        bytes += b;
        count += c;
    }
    report.store_bytes_per_node = bytes as f64 / live.len().max(1) as f64;
    report.store_values_per_node = count as f64 / live.len().max(1) as f64;
    report.refused = total_stats(&sim).refused;
    report.sim_seconds = sim.elapsed().as_secs_f64();
    report
}

/// Outcomes of the gets so far.
#[derive(Default)]
struct GetTally {
    /// Gets that returned the value.
    ok: usize,
    /// Sum of their lookups' hops.
    hops: u64,
    /// Gets that failed.
    failed: usize,
    /// Gets answered without the value.
    without_value: usize,
    /// Gets that failed or were answered without the value when no live
    /// node held it any more.
    of_lost: usize,
}

fn tally_gets(
    sim: &mut Sim,
    gets: &mut BTreeMap<(u32, StoreOp), Hash>,
    values: &BTreeMap<Hash, Vec<u8>>,
    tally: &mut GetTally,
) {
    for (addr, e) in sim.take_store_events() {
        match e {
            StoreEvent::Got {
                op, records, hops, ..
            } => {
                if let Some(key) = gets.remove(&(addr, op)) {
                    if records.iter().any(|r| Some(&r.value) == values.get(&key)) {
                        tally.ok += 1;
                        tally.hops += hops as u64;
                    } else if sim.held_by_live(&key) == 0 {
                        tally.of_lost += 1;
                    } else {
                        tally.without_value += 1;
                    }
                }
            }
            StoreEvent::Failed { op, .. } => {
                if let Some(key) = gets.remove(&(addr, op)) {
                    if sim.held_by_live(&key) == 0 {
                        tally.of_lost += 1;
                    } else {
                        tally.failed += 1;
                    }
                }
            }
            _ => {}
        }
    }
}

fn total_stats(sim: &Sim) -> crate::store::StoreStats {
    let mut t = crate::store::StoreStats::default();
    for s in &sim.slots {
        let x = s.node.store_stats();
        t.repair_bytes_out += x.repair_bytes_out;
        t.replication_bytes_out += x.replication_bytes_out;
        t.refused += x.refused;
    }
    t
}

/// A node's announced identity, for tests.
#[cfg(test)]
fn me(sim: &Sim, a: u32) -> crate::wire::NodeRef<u32> {
    sim.node(a).me().clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{self, Refused};

    /// A joined ring of `n` nodes.
    fn ring(n: usize, seed: u64) -> (Sim, Vec<u32>) {
        let (sim, nodes) = joined(
            n,
            SimConfig {
                seed,
                ..SimConfig::default()
            },
            Duration::from_secs(40),
        );
        assert!(sim.ring_check().is_correct());
        (sim, nodes)
    }

    /// `n` nodes of `cfg` joined one by one, then run for `settle`.
    fn joined(n: usize, cfg: SimConfig, settle: Duration) -> (Sim, Vec<u32>) {
        let mut sim = Sim::new(cfg);
        let nodes: Vec<u32> = (0..n).map(|_| sim.add_node()).collect();
        sim.create(nodes[0]);
        for (i, a) in nodes.iter().enumerate().skip(1) {
            sim.schedule_join(*a, Duration::from_millis(100 * i as u64));
        }
        sim.run_for(settle);
        (sim, nodes)
    }

    fn outcome(sim: &mut Sim, addr: u32, op: StoreOp) -> StoreEvent<u32> {
        for _ in 0..60 {
            sim.run_for(Duration::from_millis(500));
            let mut events = sim.take_store_events();
            if let Some(i) = events.iter().position(|(a, e)| {
                *a == addr
                    && match e {
                        StoreEvent::Stored { op: o, .. }
                        | StoreEvent::Got { op: o, .. }
                        | StoreEvent::Peers { op: o, .. }
                        | StoreEvent::Failed { op: o, .. } => *o == op,
                        StoreEvent::Update { .. } => false,
                    }
            }) {
                return events.swap_remove(i).1;
            }
        }
        panic!("no outcome for {op:?}");
    }

    /// The live nodes holding `key`.
    fn holders(sim: &Sim, nodes: &[u32], key: &Hash) -> Vec<u32> {
        let now = sim.now();
        nodes
            .iter()
            .copied()
            .filter(|a| sim.is_live(*a) && !sim.node(*a).stored(key, now).is_empty())
            .collect()
    }

    /// The true owner and its r - 1 successors among live nodes.
    fn replica_set(sim: &Sim, key: &Hash, r: usize) -> Vec<u32> {
        let truth = sim.truth();
        let mut out = Vec::new();
        let mut k = *key;
        for _ in 0..r {
            let o = truth.successor_of(&k).unwrap();
            out.push(o);
            k = sim.node(o).id().wrapping_add(&Hash::pow2(0));
        }
        out.sort();
        out
    }

    #[test]
    fn put_get_round_trip_on_r_replicas() {
        let (mut sim, nodes) = ring(20, 3);
        let key = Hash::of("hello");
        let op = sim.put(nodes[4], key, b"world".to_vec(), 0);
        assert!(matches!(
            outcome(&mut sim, nodes[4], op),
            StoreEvent::Stored { .. }
        ));
        sim.run_for(Duration::from_secs(2));
        let mut h = holders(&sim, &nodes, &key);
        h.sort();
        assert_eq!(h, replica_set(&sim, &key, 3));
        let op = sim.get(nodes[11], key);
        match outcome(&mut sim, nodes[11], op) {
            StoreEvent::Got { records, .. } => {
                assert_eq!(records.len(), 1);
                assert_eq!(records[0].value, b"world");
            }
            e => panic!("{e:?}"),
        }
        let op = sim.get(nodes[11], Hash::of("absent"));
        match outcome(&mut sim, nodes[11], op) {
            StoreEvent::Got { records, .. } => assert!(records.is_empty()),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn large_values_travel_in_fragments() {
        let (mut sim, nodes) = ring(10, 4);
        let key = Hash::of("big");
        let value: Vec<u8> = (0..store::MAX_VALUE).map(|i| (i % 251) as u8).collect();
        let op = sim.put(nodes[1], key, value.clone(), 0);
        assert!(matches!(
            outcome(&mut sim, nodes[1], op),
            StoreEvent::Stored { .. }
        ));
        let op = sim.get(nodes[7], key);
        match outcome(&mut sim, nodes[7], op) {
            StoreEvent::Got { records, .. } => assert_eq!(records[0].value, value),
            e => panic!("{e:?}"),
        }
        let op = sim.put(nodes[1], key, vec![0; store::MAX_VALUE + 1], 0);
        assert_eq!(
            outcome(&mut sim, nodes[1], op),
            StoreEvent::Failed {
                op,
                key,
                refused: Some(Refused::TooLarge)
            }
        );
    }

    #[test]
    fn signed_values_refuse_old_seq_bad_signature_and_failed_cas() {
        let (mut sim, nodes) = ring(12, 5);
        let secret = [42u8; 32];
        let v1 = store::sign(&secret, b"s", 1, b"v1".to_vec());
        let key = v1.key;
        let op = sim.put_signed(nodes[2], v1.clone(), None);
        assert!(matches!(
            outcome(&mut sim, nodes[2], op),
            StoreEvent::Stored { .. }
        ));
        let v2 = store::sign(&secret, b"s", 2, b"v2".to_vec());
        let op = sim.put_signed(nodes[3], v2.clone(), Some(0));
        let refused = |op| StoreEvent::Failed {
            op,
            key,
            refused: Some(Refused::CasMismatch),
        };
        assert_eq!(outcome(&mut sim, nodes[3], op), refused(op));
        let op = sim.put_signed(nodes[3], v2, Some(1));
        assert!(matches!(
            outcome(&mut sim, nodes[3], op),
            StoreEvent::Stored { .. }
        ));
        let op = sim.put_signed(nodes[5], v1, None);
        assert_eq!(
            outcome(&mut sim, nodes[5], op),
            StoreEvent::Failed {
                op,
                key,
                refused: Some(Refused::Stale)
            }
        );
        let mut forged = store::sign(&secret, b"s", 9, b"v9".to_vec());
        forged.value = b"evil".to_vec();
        let op = sim.put_signed(nodes[5], forged, None);
        assert_eq!(
            outcome(&mut sim, nodes[5], op),
            StoreEvent::Failed {
                op,
                key,
                refused: Some(Refused::BadSignature)
            }
        );
        sim.run_for(Duration::from_secs(2));
        // Every replica holds version 2, none an older or forged one.
        let now = sim.now();
        for a in replica_set(&sim, &key, 3) {
            let held = sim.node(a).stored(&key, now);
            assert_eq!(held.len(), 1, "replica {a}");
            assert_eq!((held[0].seq(), &held[0].value[..]), (2, &b"v2"[..]));
        }
    }

    #[test]
    fn a_join_takes_over_the_values_it_now_owns() {
        let (mut sim, nodes) = ring(16, 6);
        let keys: Vec<Hash> = (0..200).map(|i| Hash::of(format!("k{i}"))).collect();
        for (i, k) in keys.iter().enumerate() {
            let at = nodes[i % nodes.len()];
            sim.put(at, *k, vec![i as u8; 10], 0);
        }
        sim.run_for(Duration::from_secs(10));
        let newcomers: Vec<u32> = (0..8).map(|_| sim.add_node()).collect();
        for a in &newcomers {
            sim.join(*a, nodes[0]);
        }
        sim.run_for(Duration::from_secs(30));
        assert!(sim.ring_check().is_correct());
        let mut all = nodes.clone();
        all.extend(&newcomers);
        let mut owned_by_new = 0;
        for k in &keys {
            let mut h = holders(&sim, &all, k);
            h.sort();
            let want = replica_set(&sim, k, 3);
            assert!(
                want.iter().all(|a| h.contains(a)),
                "{k:?}: {h:?} lacks some of {want:?}"
            );
            owned_by_new += usize::from(newcomers.contains(&sim.true_successor(k).unwrap()));
        }
        assert!(
            owned_by_new > 0,
            "no newcomer owns a key: the test shows nothing"
        );
    }

    #[test]
    fn a_kill_is_repaired_to_r_replicas_again() {
        let (mut sim, nodes) = ring(20, 7);
        let keys: Vec<Hash> = (0..100).map(|i| Hash::of(format!("k{i}"))).collect();
        for (i, k) in keys.iter().enumerate() {
            sim.put(nodes[i % nodes.len()], *k, vec![1; 10], 0);
        }
        sim.run_for(Duration::from_secs(10));
        // Kill the owner and first replica of one key: one copy is left.
        let set = {
            let truth = sim.truth();
            let o = truth.successor_of(&keys[0]).unwrap();
            let next = truth
                .successor_of(&sim.node(o).id().wrapping_add(&Hash::pow2(0)))
                .unwrap();
            [o, next]
        };
        for a in set {
            sim.kill(a);
        }
        assert_eq!(holders(&sim, &nodes, &keys[0]).len(), 1);
        sim.run_for(Duration::from_secs(20));
        for k in &keys {
            let mut h = holders(&sim, &nodes, k);
            h.sort();
            assert_eq!(h.len(), 3, "{k:?}");
            assert_eq!(h, replica_set(&sim, k, 3));
        }
    }

    /// "Stored" means every replica holds the value, even where the copies
    /// were lost on the way: the owner acknowledges a put once its
    /// replicas confirmed, so the owner may die the next moment.
    #[test]
    fn stored_means_held_by_every_replica_despite_loss() {
        let (mut sim, nodes) = ring(16, 21);
        sim.set_loss(0.05);
        let mut resent = false;
        for v in 0..30 {
            let key = Hash::of(format!("lossy-{v}"));
            let writer = nodes[v % nodes.len()];
            let op = sim.put(writer, key, b"v".to_vec(), 0);
            match outcome(&mut sim, writer, op) {
                StoreEvent::Stored { .. } => {
                    let h = holders(&sim, &nodes, &key);
                    for a in replica_set(&sim, &key, 3) {
                        assert!(h.contains(&a), "value {v}: replica {a} lacks it");
                    }
                }
                e => panic!("value {v}: {e:?}"),
            }
            resent |= nodes
                .iter()
                .any(|a| sim.node(*a).store_stats().copies_resent > 0);
        }
        assert!(resent, "5% loss lost some copy, and it was sent again");
    }

    #[test]
    fn anti_entropy_repairs_a_replica_that_missed_a_put() {
        let (mut sim, nodes) = ring(12, 8);
        let key = Hash::of("missed");
        let set = replica_set(&sim, &key, 3);
        let owner = sim.true_successor(&key).unwrap();
        let lagging = *set.iter().find(|a| **a != owner).unwrap();
        // The replica is down while the put happens, then comes back
        // (a partition of one node, not a failure: it stays in the ring).
        sim.partition(|a| u8::from(a == lagging));
        let op = sim.put(
            nodes.iter().copied().find(|a| *a != lagging).unwrap(),
            key,
            b"v".to_vec(),
            0,
        );
        sim.run_for(Duration::from_millis(800));
        sim.heal();
        let _ = op;
        assert!(
            holders(&sim, &nodes, &key).len() < 3
                || sim.node(lagging).stored(&key, sim.now()).is_empty()
        );
        sim.run_for(Duration::from_secs(25));
        let mut h = holders(&sim, &nodes, &key);
        h.sort();
        assert_eq!(h, replica_set(&sim, &key, 3));
        let repair: u64 = nodes
            .iter()
            .map(|a| sim.node(*a).store_stats().repair_bytes_out)
            .sum();
        assert!(repair > 0);
    }

    #[test]
    fn a_put_flood_is_bounded_and_counted_without_evicting_others() {
        let mut cfg = SimConfig {
            seed: 9,
            ..SimConfig::default()
        };
        cfg.node.store.source_values = 50;
        let (mut sim, nodes) = joined(8, cfg, Duration::from_secs(30));
        let good: Vec<Hash> = (0..20).map(|i| Hash::of(format!("good{i}"))).collect();
        for k in &good {
            sim.put(nodes[1], *k, b"good".to_vec(), 0);
        }
        sim.run_for(Duration::from_secs(5));
        let mut ops = Vec::new();
        for i in 0..2000 {
            ops.push(sim.put(nodes[2], Hash::of(format!("flood{i}")), vec![7; 100], 0));
        }
        sim.run_for(Duration::from_secs(30));
        let events = sim.take_store_events();
        let refused = events
            .iter()
            .filter(|(a, e)| {
                *a == nodes[2]
                    && matches!(
                        e,
                        StoreEvent::Failed {
                            refused: Some(_),
                            ..
                        }
                    )
            })
            .count();
        assert!(refused > 1000, "{refused} refused");
        let now = sim.now();
        let flood_held: usize = nodes
            .iter()
            .map(|a| {
                (0..2000)
                    .filter(|i| {
                        !sim.node(*a)
                            .stored(&Hash::of(format!("flood{i}")), now)
                            .is_empty()
                    })
                    .count()
            })
            .sum();
        // Each node holds at most its per-source quota of the flooder's
        // values, as owner of some and replica of others' (charged to the
        // flooder by the owner that took the put).
        assert!(flood_held <= 50 * nodes.len(), "{flood_held}");
        for k in &good {
            assert_eq!(holders(&sim, &nodes, k).len(), 3, "good value lost");
        }
        let counted: u64 = nodes
            .iter()
            .map(|a| sim.node(*a).store_stats().refused_quota)
            .sum();
        assert!(counted as usize >= refused);
    }

    #[test]
    fn a_listener_sees_each_update_once() {
        let (mut sim, nodes) = ring(12, 10);
        let secret = [3u8; 32];
        let key = store::sign(&secret, b"", 1, vec![]).key;
        let op = sim.listen(nodes[6], key);
        sim.run_for(Duration::from_secs(3));
        for seq in 1..=5u64 {
            let r = store::sign(&secret, b"", seq, format!("v{seq}").into_bytes());
            sim.put_signed(nodes[seq as usize], r, None);
            sim.run_for(Duration::from_secs(2));
        }
        // Renewals (every listen_ttl / 2) answer with the current record
        // again: the listener must not report it twice.
        sim.run_for(sim.node(nodes[0]).config().store.listen_ttl * 2);
        let updates: Vec<u64> = sim
            .take_store_events()
            .into_iter()
            .filter_map(|(a, e)| match e {
                StoreEvent::Update { op: o, record, .. } if a == nodes[6] && o == op => {
                    Some(record.seq())
                }
                _ => None,
            })
            .collect();
        assert_eq!(updates, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_listener_misses_nothing_when_notifications_are_lost() {
        let (mut sim, nodes) = ring(12, 11);
        let key = Hash::of("news");
        let op = sim.listen(nodes[6], key);
        sim.run_for(Duration::from_secs(3));
        // Cut the listener off while three values are put: their
        // notifications are lost; the renewal brings them.
        sim.partition(|a| u8::from(a == nodes[6]));
        for i in 0..3u8 {
            sim.put(nodes[1], key, vec![i], 0);
        }
        sim.run_for(Duration::from_secs(2));
        sim.heal();
        sim.run_for(sim.node(nodes[0]).config().store.listen_ttl);
        let mut got: Vec<Vec<u8>> = sim
            .take_store_events()
            .into_iter()
            .filter_map(|(a, e)| match e {
                StoreEvent::Update { op: o, record, .. } if a == nodes[6] && o == op => {
                    Some(record.value)
                }
                _ => None,
            })
            .collect();
        got.sort();
        assert_eq!(got, vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn subscriptions_are_bounded_per_source() {
        let mut cfg = SimConfig {
            seed: 13,
            ..SimConfig::default()
        };
        cfg.node.store.source_listens = 2;
        let (mut sim, nodes) = joined(8, cfg, Duration::from_secs(30));
        let key = Hash::of("watched");
        let ops: Vec<StoreOp> = (0..3).map(|_| sim.listen(nodes[3], key)).collect();
        sim.run_for(Duration::from_secs(5));
        let failed: Vec<StoreOp> = sim
            .take_store_events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                StoreEvent::Failed {
                    op,
                    refused: Some(Refused::Quota),
                    ..
                } => Some(op),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 1);
        assert!(ops.contains(&failed[0]));
        let counted: u64 = nodes
            .iter()
            .map(|a| sim.node(*a).store_stats().listens_refused)
            .sum();
        assert_eq!(counted, 1);
    }

    #[test]
    fn topics_name_the_peers_that_announced() {
        let (mut sim, nodes) = ring(12, 12);
        for a in &nodes[..4] {
            sim.announce(*a, b"chat");
        }
        sim.run_for(Duration::from_secs(3));
        let op = sim.find(nodes[9], b"chat");
        match outcome(&mut sim, nodes[9], op) {
            StoreEvent::Peers { peers, .. } => {
                let mut got: Vec<u32> = peers.iter().map(|p| p.addr).collect();
                got.sort();
                assert_eq!(got, nodes[..4].to_vec());
                assert_eq!(peers[0], me(&sim, peers[0].addr));
            }
            e => panic!("{e:?}"),
        }
    }

    /// A loss is outside the invariant only if the value's last
    /// `replicas` holders died one after another, each within one repair
    /// interval of the one before: all three at once is (and is counted
    /// "at once"); three deaths 0.75 interval apart is (not at once);
    /// three deaths further apart than an interval is not. The holders of
    /// the last two are cut off, so that no repair runs in between.
    #[test]
    fn losses_are_classified_against_the_invariant() {
        let (mut sim, nodes) = ring(16, 14);
        let (together, chained, apart) = (
            Hash::of("together"),
            Hash::of("chained-0"),
            Hash::of("apart"),
        );
        for (i, k) in [together, chained, apart].into_iter().enumerate() {
            let op = sim.put(nodes[i], k, b"v".to_vec(), 0);
            assert!(matches!(
                outcome(&mut sim, nodes[i], op),
                StoreEvent::Stored { .. }
            ));
        }
        sim.run_for(Duration::from_secs(3));
        let interval = repair_interval(&sim.cfg);
        let mut deaths = Deaths::new(3, interval, [together, chained, apart]);
        let set = holders(&sim, &nodes, &together);
        assert_eq!(set, replica_set(&sim, &together, 3));
        for a in set {
            kill_noting(&mut sim, &mut deaths, a);
        }
        sim.run_for(Duration::from_secs(5));
        assert!(holders(&sim, &nodes, &together).is_empty());
        assert!(deaths.explained(&together), "{:?}", deaths.of[&together]);
        assert!(deaths.at_once(&together), "{:?}", deaths.of[&together]);

        for (k, gap, explained) in [
            (chained, interval.mul_f64(0.75), true),
            (apart, interval + Duration::from_secs(1), false),
        ] {
            let set = holders(&sim, &nodes, &k);
            assert_eq!(set, replica_set(&sim, &k, 3));
            let cut = set.clone();
            sim.partition(move |a| u8::from(cut.contains(&a)) * (1 + a as u8));
            for a in set {
                kill_noting(&mut sim, &mut deaths, a);
                sim.run_for(gap);
            }
            sim.heal();
            assert!(holders(&sim, &nodes, &k).is_empty());
            assert_eq!(deaths.of[&k].len(), 3);
            assert_eq!(deaths.explained(&k), explained, "{:?}", deaths.of[&k]);
            assert!(!deaths.at_once(&k), "{:?}", deaths.of[&k]);
        }
    }

    /// The invariant's other side: `replicas` holders failing, but never
    /// all within one repair interval, lose nothing. For each value, two of
    /// its three holders die at once and the third one repair interval
    /// later, or one first and the other two an interval later, in every
    /// order.
    #[test]
    fn failures_spread_over_the_repair_interval_lose_nothing() {
        let (mut sim, mut nodes) = ring(40, 15);
        let interval = repair_interval(&sim.cfg);
        let mut case = 0;
        for first in 0..3 {
            for two_first in [true, false] {
                let key = Hash::of(format!("spread-{case}"));
                case += 1;
                let writer = *nodes.iter().find(|a| sim.is_live(**a)).unwrap();
                let op = sim.put(writer, key, b"v".to_vec(), 0);
                assert!(matches!(
                    outcome(&mut sim, writer, op),
                    StoreEvent::Stored { .. }
                ));
                sim.run_for(Duration::from_secs(3));
                // Holders in ring order from the owner.
                let set = {
                    let truth = sim.truth();
                    let mut set = Vec::new();
                    let mut k = key;
                    for _ in 0..3 {
                        let o = truth.successor_of(&k).unwrap();
                        set.push(o);
                        k = sim.node(o).id().wrapping_add(&Hash::pow2(0));
                    }
                    set
                };
                let mut h = holders(&sim, &nodes, &key);
                h.sort();
                let mut want = set.clone();
                want.sort();
                assert_eq!(h, want, "case {case}");
                let (early, late): (Vec<u32>, Vec<u32>) = if two_first {
                    let late = set[first];
                    (
                        set.iter().copied().filter(|a| *a != late).collect(),
                        vec![late],
                    )
                } else {
                    let early = set[first];
                    (
                        vec![early],
                        set.iter().copied().filter(|a| *a != early).collect(),
                    )
                };
                for a in early {
                    sim.kill(a);
                }
                sim.run_for(interval);
                for a in late {
                    sim.kill(a);
                }
                sim.run_for(Duration::from_secs(15));
                assert!(
                    !holders(&sim, &nodes, &key).is_empty(),
                    "case {case}: first {first}, two first {two_first}: lost"
                );
                // Replace the dead, so the ring keeps its size.
                for _ in 0..3 {
                    let a = sim.add_node();
                    sim.join(a, writer);
                    nodes.push(a);
                }
                sim.run_for(Duration::from_secs(10));
            }
        }
    }

    #[test]
    fn the_experiment_loses_nothing_under_mild_churn() {
        let params = Params {
            nodes: 60,
            puts: 300,
            gets: 300,
            session_median: Some(Duration::from_secs(600)),
            churn: Duration::from_secs(60),
            ..Params::default()
        };
        let r = run(&params);
        assert_eq!(r.values_stored, 300, "{r:?}");
        assert_eq!(r.values_lost, 0, "{r:?}");
        assert!(r.get_success_rate > 0.99, "{r:?}");
        assert!(r.departures > 0, "{r:?}");
        assert!(r.repair_bytes_per_node_per_s > 0.0, "{r:?}");
    }
}
