//! The standard experiment: build a ring by joins, measure lookups, kill a
//! fraction of the nodes at once, measure again.

use std::time::Duration;

use serde::Serialize;

use std::collections::BTreeMap;

use super::{DataEvent, LookupOutcome, Sim, SimConfig};
use crate::event::{MessageId, Target};
use crate::hash::Hash;

/// The least time a broadcast is followed (copies arriving late show as
/// duplicates).
const BROADCAST_SETTLE: Duration = Duration::from_secs(3);
/// The most time a broadcast is followed while live nodes still miss it.
const BROADCAST_WAIT_MAX: Duration = Duration::from_secs(20);
/// The resolution of a broadcast's completion time.
const BROADCAST_STEP: Duration = Duration::from_millis(100);

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Params {
    /// Nodes in the ring.
    pub nodes: usize,
    /// Lookups measured before the failure, and again after it.
    pub lookups: usize,
    /// Fraction of nodes killed at once after the ring converged (0 for none).
    pub fail: f64,
    /// How fast the ring grows while joining: at most this fraction of its
    /// size joins per stabilize period, so concurrent joins rarely land in
    /// the same gap. 0.5 builds 100,000 nodes in about 28 periods.
    pub growth: f64,
    /// Periods to wait after the ring is correct, for fingers to settle; the
    /// maintenance message rate is measured over them.
    pub settle_periods: u32,
    /// Periods between the failure and the lookups measured after it.
    pub recovery_periods: u32,
    /// Give up if the ring is not correct this many periods after the last join.
    pub max_converge_periods: u32,
    /// Routed sends measured (half to keys, half to exact node ids).
    pub sends: usize,
    /// Extra copies of each send along other routes.
    pub duplicates: u8,
    /// Broadcasts measured, one after another.
    pub broadcasts: usize,
    /// Fraction of nodes that acknowledge and then drop what they should forward.
    pub droppers: f64,
    /// Fraction of nodes killed just before the sends and broadcasts, with
    /// no time to stabilize.
    pub churn: f64,
    /// Payload size of sends and broadcasts, in bytes.
    pub payload: usize,
    /// The network and the nodes' configuration, with the seed.
    pub sim: SimConfig,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            nodes: 1000,
            lookups: 1000,
            fail: 0.0,
            growth: 0.5,
            settle_periods: 10,
            recovery_periods: 5,
            max_converge_periods: 60,
            sends: 0,
            duplicates: 0,
            broadcasts: 0,
            droppers: 0.0,
            churn: 0.0,
            payload: 100,
            sim: SimConfig::default(),
        }
    }
}

/// What an experiment measured. Deterministic for a given [`Params`]: the
/// driver fills in `wall_seconds`, `events_per_s`, `peak_rss_bytes` and
/// `peak_rss_bytes_per_node`, which are not.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Report {
    /// Nodes in the ring.
    pub nodes: usize,
    /// Lookups measured (before and, again, after the failure).
    pub lookups: usize,
    /// The seed.
    pub seed: u64,
    /// Whether every node's successor and predecessor were right before the lookups.
    pub ring_correct: bool,
    /// Virtual seconds from the first join until the ring was correct.
    pub join_seconds: f64,
    /// Fraction of lookups that ended at the key's true live successor.
    pub success_rate: f64,
    /// Mean forwarding hops of the successful lookups.
    pub hops_mean: f64,
    /// Median hops.
    pub hops_p50: u32,
    /// 99th percentile of hops.
    pub hops_p99: u32,
    /// Fraction of nodes killed.
    pub fail: f64,
    /// Nodes killed.
    pub killed: usize,
    /// Whether the ring of survivors was correct when the lookups after the failure began.
    pub ring_correct_after_fail: bool,
    /// Periods after the failure at which the lookups were made.
    pub recovery_periods: u32,
    /// Success rate of the lookups after the failure (live successor only).
    pub success_rate_after_fail: f64,
    /// Mean hops after the failure.
    pub hops_mean_after_fail: f64,
    /// 99th percentile of hops after the failure.
    pub hops_p99_after_fail: u32,
    /// Maintenance datagrams per node per second in the settled ring.
    pub messages_per_node_per_s: f64,
    /// Maintenance bytes per node per second in the settled ring.
    pub bytes_per_node_per_s: f64,
    /// Sends measured.
    pub sends: usize,
    /// Extra copies per send.
    pub duplicates: u8,
    /// Fraction of forwarders that dropped messages.
    pub droppers: f64,
    /// Nodes killed just before the traffic.
    pub churn_killed: usize,
    /// Fraction of sends confirmed by their true destination.
    pub send_delivered_rate: f64,
    /// Fraction of sends that ended in a failure event.
    pub send_failed_rate: f64,
    /// Failed sends by reason.
    pub send_failures: BTreeMap<String, usize>,
    /// Sends that ended in no event at all (must be 0).
    pub send_unresolved: usize,
    /// Sends confirmed by a node that is not their destination (must be 0).
    pub send_wrong_destination: usize,
    /// Mean forwarding hops of delivered sends.
    pub send_hops_mean: f64,
    /// Times a node's application saw the same message again (must be 0).
    pub duplicate_deliveries: usize,
    /// Broadcasts measured.
    pub broadcasts: usize,
    /// Broadcast datagrams sent per broadcast (N-1 in a stable ring).
    pub broadcast_messages_per_broadcast: f64,
    /// Mean fraction of live nodes (other than the origin) reached.
    pub broadcast_coverage: f64,
    /// Lowest coverage of any broadcast.
    pub broadcast_coverage_min: f64,
    /// Deepest receiver of any broadcast (forwarding steps from the origin).
    pub broadcast_depth_max: u32,
    /// Longest time any broadcast took to reach its last receiver, in
    /// virtual seconds, to the nearest 0.1 s after it (each broadcast is
    /// given up to 20 s). A dead node in a broadcast's tree costs the
    /// nodes below it one request timeout (0.5 s by default) before its
    /// parent has its arc re-covered.
    pub broadcast_seconds_max: f64,
    /// Virtual seconds simulated.
    pub sim_seconds: f64,
    /// Datagrams the network carried in the whole run.
    pub datagrams: u64,
    /// Events the simulator carried out in the whole run
    /// ([`Sim::events_processed`]: deliveries, timers, joins).
    pub events: u64,
    /// Bytes of node state per node, at the largest of the samples taken
    /// at the end of each phase and every virtual second of the lookups and
    /// sends ([`Sim::node_state_bytes`] over the nodes): the part of the
    /// memory that the protocol's tables decide, deterministic for a seed.
    pub node_state_bytes_per_node: f64,
    /// Bytes of the event queue per node at the same sample
    /// ([`Sim::queue_bytes`]).
    pub queue_bytes_per_node: f64,
    /// Wall-clock seconds of the run (set by the driver).
    pub wall_seconds: f64,
    /// `events` over `wall_seconds` (set by the driver): the simulator's speed.
    pub events_per_s: f64,
    /// Peak resident memory of the process (set by the driver).
    pub peak_rss_bytes: u64,
    /// `peak_rss_bytes` over `nodes` (set by the driver): everything the
    /// process held per simulated node at its peak.
    pub peak_rss_bytes_per_node: f64,
}

/// The largest memory of the nodes seen by [`Peak::sample`].
#[derive(Default)]
struct Peak {
    state: usize,
    queue: usize,
}

impl Peak {
    /// Notes the nodes' state and the queue now, if the largest yet.
    fn sample(&mut self, sim: &Sim) {
        let state = sim.node_state_bytes();
        if state > self.state {
            self.state = state;
            self.queue = sim.queue_bytes();
        }
    }
}

struct LookupStats {
    success_rate: f64,
    hops_mean: f64,
    hops_p50: u32,
    hops_p99: u32,
}

/// Runs the experiment.
pub fn run(params: &Params) -> Report {
    let mut sim = Sim::new(params.sim.clone());
    let period = params.sim.node.stabilize_interval;
    let n = params.nodes.max(1);
    sim.reserve(n);
    let addrs: Vec<u32> = (0..n).map(|_| sim.add_node()).collect();
    sim.create(addrs[0]);
    let scale = period.as_secs_f64() / (1.0 + params.growth.max(0.01)).ln();
    let mut last_join = Duration::ZERO;
    for (i, a) in addrs.iter().enumerate().skip(1) {
        last_join = Duration::from_secs_f64(scale * ((1 + i) as f64).ln());
        sim.schedule_join(*a, last_join);
    }
    let mut report = Report {
        nodes: n,
        lookups: params.lookups,
        seed: params.sim.seed,
        fail: params.fail,
        recovery_periods: params.recovery_periods,
        ..Report::default()
    };

    let mut peak = Peak::default();
    // Build: run past the last join, retrying joins that failed, until correct.
    sim.run_until(last_join + period);
    peak.sample(&sim);
    for _ in 0..params.max_converge_periods {
        for a in sim.take_join_failures() {
            sim.schedule_join(a, period / 2);
        }
        if sim.live().len() == n && sim.ring_check().is_correct() {
            report.ring_correct = true;
            break;
        }
        sim.run_for(period);
        peak.sample(&sim);
    }
    report.join_seconds = sim.elapsed().as_secs_f64();

    // Settle, measuring the maintenance traffic of a quiet ring.
    let before = sim.net_stats().clone();
    let settle = period * params.settle_periods;
    sim.run_for(settle);
    peak.sample(&sim);
    let live = sim.live().len().max(1) as f64;
    let secs = settle.as_secs_f64().max(f64::MIN_POSITIVE);
    report.messages_per_node_per_s =
        (sim.net_stats().datagrams - before.datagrams) as f64 / live / secs;
    report.bytes_per_node_per_s = (sim.net_stats().bytes - before.bytes) as f64 / live / secs;
    report.ring_correct &= sim.ring_check().is_correct();

    let s = measure_lookups(&mut sim, params.lookups, &mut peak);
    report.success_rate = s.success_rate;
    report.hops_mean = s.hops_mean;
    report.hops_p50 = s.hops_p50;
    report.hops_p99 = s.hops_p99;

    if params.sends > 0 || params.broadcasts > 0 {
        measure_traffic(&mut sim, params, &mut report, &mut peak);
    }

    if params.fail > 0.0 {
        let before = sim.live().len();
        let survivors = kill_random(&mut sim, (params.fail * n as f64).floor() as usize);
        report.killed = before - survivors.len();
        sim.run_for(period * params.recovery_periods);
        report.ring_correct_after_fail = sim.ring_check().is_correct();
        let s = measure_lookups(&mut sim, params.lookups, &mut peak);
        report.success_rate_after_fail = s.success_rate;
        report.hops_mean_after_fail = s.hops_mean;
        report.hops_p99_after_fail = s.hops_p99;
    }
    report.sim_seconds = sim.elapsed().as_secs_f64();
    report.datagrams = sim.net_stats().datagrams;
    report.events = sim.events_processed();
    peak.sample(&sim);
    report.node_state_bytes_per_node = peak.state as f64 / n as f64;
    report.queue_bytes_per_node = peak.queue as f64 / n as f64;
    report
}

/// Kills `count` random live nodes; returns the survivors.
fn kill_random(sim: &mut Sim, count: usize) -> Vec<u32> {
    let mut live = sim.live();
    let count = count.min(live.len().saturating_sub(1));
    for i in 0..count {
        let j = i + (sim.random_u64() % (live.len() - i) as u64) as usize;
        live.swap(i, j);
        sim.kill(live[i]);
    }
    live.split_off(count)
}

fn measure_traffic(sim: &mut Sim, params: &Params, report: &mut Report, peak: &mut Peak) {
    let n = sim.live().len();
    report.sends = params.sends;
    report.duplicates = params.duplicates;
    report.droppers = params.droppers;
    report.broadcasts = params.broadcasts;
    // Droppers first (they stay), then the churn (no time to heal).
    let mut honest = sim.live();
    let droppers = (params.droppers * n as f64).floor() as usize;
    for i in 0..droppers.min(honest.len().saturating_sub(1)) {
        let j = i + (sim.random_u64() % (honest.len() - i) as u64) as usize;
        honest.swap(i, j);
        sim.set_dropper(honest[i], true);
    }
    let honest: Vec<u32> = honest.split_off(droppers.min(honest.len().saturating_sub(1)));
    if params.churn > 0.0 {
        let kill = (params.churn * n as f64).floor() as usize;
        let _ = kill_random(sim, kill);
        report.churn_killed = kill;
    }
    let honest: Vec<u32> = honest.into_iter().filter(|a| sim.is_live(*a)).collect();
    let live = sim.live();
    let truth = sim.truth();
    sim.take_data_events();

    // Sends: half to the owner of a random key, half to a random live node.
    let mut sent: BTreeMap<(u32, MessageId), Option<u32>> = BTreeMap::new();
    for i in 0..params.sends {
        let origin = honest[(sim.random_u64() % honest.len() as u64) as usize];
        let (target, dest) = if i % 2 == 0 {
            let key = random_key(sim);
            (Target::Key(key), truth.successor_of(&key))
        } else {
            let d = live[(sim.random_u64() % live.len() as u64) as usize];
            (Target::Node(sim.node(d).id()), Some(d))
        };
        if let Ok(id) = sim.send(
            origin,
            target,
            vec![0x5a; params.payload],
            params.duplicates,
        ) {
            sent.insert((origin, id), dest);
        }
    }
    let limit = sim.elapsed() + sim.cfg.node.send_timeout * 2;
    let mut events = Vec::new();
    let mut resolved = 0;
    let mut steps = 0u32;
    while resolved < sent.len() && sim.elapsed() < limit {
        sim.run_for(Duration::from_millis(100));
        steps += 1;
        if steps % 10 == 1 {
            peak.sample(sim);
        }
        for e in sim.take_data_events() {
            if matches!(e, DataEvent::Delivered { .. } | DataEvent::Failed { .. }) {
                resolved += 1;
            }
            events.push(e);
        }
    }
    sim.run_for(Duration::from_secs(1)); // let late copies arrive, to count them
    events.extend(sim.take_data_events());
    let mut outcome: BTreeMap<(u32, MessageId), bool> = BTreeMap::new();
    let mut received: BTreeMap<(u32, u32, MessageId), usize> = BTreeMap::new();
    let mut hops = Vec::new();
    for e in &events {
        match e {
            DataEvent::Delivered {
                origin,
                msg,
                to,
                hops: h,
            } => {
                let right = sent.get(&(*origin, *msg)) == Some(&Some(*to));
                if !right {
                    report.send_wrong_destination += 1;
                }
                outcome.insert((*origin, *msg), right);
                hops.push(*h);
            }
            DataEvent::Failed {
                origin,
                msg,
                reason,
            } => {
                *report
                    .send_failures
                    .entry(format!("{reason:?}"))
                    .or_default() += 1;
                outcome.insert((*origin, *msg), false);
            }
            DataEvent::Received {
                node, origin, msg, ..
            } => {
                *received.entry((*node, *origin, *msg)).or_default() += 1;
            }
        }
    }
    let total = params.sends.max(1) as f64;
    let delivered = outcome.values().filter(|ok| **ok).count();
    report.send_delivered_rate = delivered as f64 / total;
    report.send_failed_rate = outcome.values().filter(|ok| !**ok).count() as f64 / total;
    report.send_unresolved = sent.len() - outcome.len() + (params.sends - sent.len());
    report.send_hops_mean = mean(&hops);

    // Broadcasts, one at a time. Each is given at least
    // BROADCAST_SETTLE (copies arriving late would show as duplicates) and
    // then as long as it takes to reach every live node, up to
    // BROADCAST_WAIT_MAX; the time its last receiver got it is recorded.
    let mut coverage_sum = 0.0;
    let mut coverage_min: f64 = 1.0;
    let mut messages = 0u64;
    let mut depth = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..params.broadcasts {
        let origin = honest[(sim.random_u64() % honest.len() as u64) as usize];
        let before: u64 = (0..sim.len() as u32)
            .map(|a| sim.node(a).stats().broadcast_sent)
            .sum();
        let Ok(id) = sim.broadcast(origin, vec![0xb0; params.payload]) else {
            continue;
        };
        let others = sim.live().len().saturating_sub(1).max(1);
        let (mut reached, mut waited, mut last) = (0usize, Duration::ZERO, Duration::ZERO);
        while waited < BROADCAST_SETTLE || (reached < others && waited < BROADCAST_WAIT_MAX) {
            sim.run_for(BROADCAST_STEP);
            waited += BROADCAST_STEP;
            for e in sim.take_data_events() {
                if let DataEvent::Received {
                    node,
                    origin: o,
                    msg,
                    hops,
                    ..
                } = e
                {
                    let count = received.entry((node, o, msg)).or_default();
                    *count += 1;
                    if msg == id && o == origin && *count == 1 && sim.is_live(node) {
                        reached += 1;
                        depth = depth.max(hops);
                        last = waited;
                    }
                }
            }
        }
        let after: u64 = (0..sim.len() as u32)
            .map(|a| sim.node(a).stats().broadcast_sent)
            .sum();
        messages += after - before;
        slowest = slowest.max(last);
        let cov = reached as f64 / others as f64;
        coverage_sum += cov;
        coverage_min = coverage_min.min(cov);
    }
    if params.broadcasts > 0 {
        report.broadcast_messages_per_broadcast = messages as f64 / params.broadcasts as f64;
        report.broadcast_coverage = coverage_sum / params.broadcasts as f64;
        report.broadcast_coverage_min = coverage_min;
        report.broadcast_depth_max = depth;
        report.broadcast_seconds_max = slowest.as_secs_f64();
    }
    report.duplicate_deliveries = received.values().map(|c| c.saturating_sub(1)).sum();
}

fn mean(values: &[u32]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().map(|v| *v as f64).sum::<f64>() / values.len() as f64
    }
}

fn random_key(sim: &mut Sim) -> Hash {
    let mut key = [0u8; 32];
    for chunk in key.chunks_mut(8) {
        chunk.copy_from_slice(&sim.random_u64().to_be_bytes());
    }
    Hash::from_bytes(key)
}

fn measure_lookups(sim: &mut Sim, count: usize, peak: &mut Peak) -> LookupStats {
    let live = sim.live();
    if count == 0 || live.is_empty() {
        return LookupStats {
            success_rate: 0.0,
            hops_mean: 0.0,
            hops_p50: 0,
            hops_p99: 0,
        };
    }
    let mut started = Vec::with_capacity(count);
    for _ in 0..count {
        let origin = live[(sim.random_u64() % live.len() as u64) as usize];
        let key = random_key(sim);
        started.push(sim.lookup(origin, key));
    }
    let limit = sim.elapsed() + sim.cfg.node.lookup_timeout * 2;
    let mut steps = 0u32;
    while sim.open_lookups() > 0 && sim.elapsed() < limit {
        sim.run_for(Duration::from_millis(100));
        steps += 1;
        if steps % 10 == 1 {
            peak.sample(sim);
        }
    }
    let outcomes: Vec<LookupOutcome> = sim.take_lookups();
    let truth = sim.truth();
    let mut hops: Vec<u32> = Vec::with_capacity(outcomes.len());
    for o in &outcomes {
        if let Some((owner, h)) = &o.result {
            if Some(owner.addr) == truth.successor_of(&o.key) {
                hops.push(*h);
            }
        }
    }
    hops.sort_unstable();
    let ok = hops.len();
    LookupStats {
        success_rate: ok as f64 / count as f64,
        hops_mean: if ok == 0 {
            0.0
        } else {
            hops.iter().map(|h| *h as f64).sum::<f64>() / ok as f64
        },
        hops_p50: percentile(&hops, 0.50),
        hops_p99: percentile(&hops, 0.99),
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
