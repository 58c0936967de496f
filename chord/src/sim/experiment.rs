//! The standard experiment: build a ring by joins, measure lookups, kill a
//! fraction of the nodes at once, measure again.

use std::time::Duration;

use serde::Serialize;

use super::{LookupOutcome, Sim, SimConfig};
use crate::hash::Hash;

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
            sim: SimConfig::default(),
        }
    }
}

/// What an experiment measured. Deterministic for a given [`Params`]: the
/// driver fills in `wall_seconds` and `peak_rss_bytes`, which are not.
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
    /// Virtual seconds simulated.
    pub sim_seconds: f64,
    /// Datagrams the network carried in the whole run.
    pub datagrams: u64,
    /// Wall-clock seconds of the run (set by the driver).
    pub wall_seconds: f64,
    /// Peak resident memory of the process (set by the driver).
    pub peak_rss_bytes: u64,
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

    // Build: run past the last join, retrying joins that failed, until correct.
    sim.run_until(last_join + period);
    for _ in 0..params.max_converge_periods {
        for a in sim.take_join_failures() {
            sim.schedule_join(a, period / 2);
        }
        if sim.live().len() == n && sim.ring_check().is_correct() {
            report.ring_correct = true;
            break;
        }
        sim.run_for(period);
    }
    report.join_seconds = sim.elapsed().as_secs_f64();

    // Settle, measuring the maintenance traffic of a quiet ring.
    let before = sim.net_stats().clone();
    let settle = period * params.settle_periods;
    sim.run_for(settle);
    let live = sim.live().len().max(1) as f64;
    let secs = settle.as_secs_f64().max(f64::MIN_POSITIVE);
    report.messages_per_node_per_s =
        (sim.net_stats().datagrams - before.datagrams) as f64 / live / secs;
    report.bytes_per_node_per_s = (sim.net_stats().bytes - before.bytes) as f64 / live / secs;
    report.ring_correct &= sim.ring_check().is_correct();

    let s = measure_lookups(&mut sim, params.lookups);
    report.success_rate = s.success_rate;
    report.hops_mean = s.hops_mean;
    report.hops_p50 = s.hops_p50;
    report.hops_p99 = s.hops_p99;

    if params.fail > 0.0 {
        let mut live = sim.live();
        let kill = ((params.fail * n as f64).floor() as usize).min(live.len().saturating_sub(1));
        // Partial Fisher-Yates: the first `kill` entries become a random sample.
        for i in 0..kill {
            let j = i + (sim.random_u64() % (live.len() - i) as u64) as usize;
            live.swap(i, j);
            sim.kill(live[i]);
        }
        report.killed = kill;
        sim.run_for(period * params.recovery_periods);
        report.ring_correct_after_fail = sim.ring_check().is_correct();
        let s = measure_lookups(&mut sim, params.lookups);
        report.success_rate_after_fail = s.success_rate;
        report.hops_mean_after_fail = s.hops_mean;
        report.hops_p99_after_fail = s.hops_p99;
    }
    report.sim_seconds = sim.elapsed().as_secs_f64();
    report.datagrams = sim.net_stats().datagrams;
    report
}

fn measure_lookups(sim: &mut Sim, count: usize) -> LookupStats {
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
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&sim.random_u64().to_be_bytes());
        }
        started.push(sim.lookup(origin, Hash::from_bytes(key)));
    }
    let limit = sim.elapsed() + sim.cfg.node.lookup_timeout * 2;
    while sim.open_lookups() > 0 && sim.elapsed() < limit {
        sim.run_for(Duration::from_millis(100));
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
