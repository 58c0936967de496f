//! The core at scale, through the simulator: rings built by real joins,
//! lookups checked against the true ring, graceful leave, mass failure,
//! determinism.

use std::time::Duration;

use chord::sim::{self, Params, Sim, SimConfig};
use chord::{Event, Hash};

const PERIOD: Duration = Duration::from_secs(1);

/// Builds a ring of `n` nodes by staggered joins and runs until it is
/// correct, returning the simulator and the periods it took after the last join.
fn build(n: usize, seed: u64) -> (Sim, u32) {
    let mut sim = Sim::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    let addrs: Vec<u32> = (0..n).map(|_| sim.add_node()).collect();
    sim.create(addrs[0]);
    let scale = 1.0 / 1.5f64.ln();
    let mut last = Duration::ZERO;
    for (i, a) in addrs.iter().enumerate().skip(1) {
        last = Duration::from_secs_f64(scale * ((1 + i) as f64).ln());
        sim.schedule_join(*a, last);
    }
    sim.run_until(last + PERIOD);
    for periods in 0..30 {
        for a in sim.take_join_failures() {
            sim.schedule_join(a, PERIOD / 2);
        }
        if sim.live().len() == n && sim.ring_check().is_correct() {
            return (sim, periods);
        }
        sim.run_for(PERIOD);
    }
    panic!(
        "ring of {n} not correct 30 periods after the last join: {:?}, {} live",
        sim.ring_check(),
        sim.live().len()
    );
}

fn random_key(sim: &mut Sim) -> Hash {
    let mut key = [0u8; 32];
    for chunk in key.chunks_mut(8) {
        chunk.copy_from_slice(&sim.random_u64().to_be_bytes());
    }
    Hash::from_bytes(key)
}

/// Runs `count` lookups from random live nodes; returns (correct, hops of each).
fn lookups(sim: &mut Sim, count: usize) -> (usize, Vec<u32>) {
    let live = sim.live();
    for _ in 0..count {
        let origin = live[(sim.random_u64() % live.len() as u64) as usize];
        let key = random_key(sim);
        sim.lookup(origin, key);
    }
    for _ in 0..200 {
        if sim.open_lookups() == 0 {
            break;
        }
        sim.run_for(Duration::from_millis(100));
    }
    assert_eq!(sim.open_lookups(), 0, "lookups neither done nor failed");
    let truth = sim.truth();
    let outcomes = sim.take_lookups();
    assert_eq!(outcomes.len(), count);
    let mut hops = Vec::new();
    let mut correct = 0;
    for o in outcomes {
        if let Some((owner, h)) = o.result {
            if Some(owner.addr) == truth.successor_of(&o.key) {
                correct += 1;
                hops.push(h);
            }
        }
    }
    (correct, hops)
}

#[test]
fn joins_converge_to_the_correct_ring() {
    let (mut sim, periods) = build(1500, 11);
    let report = sim.ring_check();
    assert!(report.is_correct(), "{report:?}");
    assert_eq!(report.nodes, 1500);
    assert!(periods <= 5, "took {periods} periods after the last join");
    // A successor list learns one more correct entry per period (each node
    // copies its successor's): after r periods every list is exact.
    sim.run_for(PERIOD * 16);
    // Every node's successor list holds the next live nodes, in order.
    let truth_ring = {
        let mut r: Vec<(Hash, u32)> = sim.live().iter().map(|a| (sim.node(*a).id(), *a)).collect();
        r.sort();
        r
    };
    for (i, (_, a)) in truth_ring.iter().enumerate() {
        let list: Vec<u32> = sim.node(*a).successors().iter().map(|s| s.addr).collect();
        let expected: Vec<u32> = (1..=list.len())
            .map(|k| truth_ring[(i + k) % truth_ring.len()].1)
            .collect();
        assert_eq!(list, expected, "successor list of node {a}");
        assert_eq!(list.len(), 16);
    }
}

#[test]
fn lookups_reach_the_true_successor_in_few_hops() {
    let (mut sim, _) = build(2000, 12);
    sim.run_for(PERIOD * 10); // let fingers settle
    let (correct, hops) = lookups(&mut sim, 2000);
    assert_eq!(correct, 2000);
    let mean = hops.iter().map(|h| *h as f64).sum::<f64>() / hops.len() as f64;
    let bound = 0.5 * (2000f64).log2() + 0.5;
    assert!(mean <= bound, "mean hops {mean} above {bound}");
    // A lookup from the owner's predecessor needs no hop at all (random
    // keys rarely fall there: ask for one that does).
    let origin = sim.live()[0];
    let succ = sim.node(origin).successors()[0].clone();
    sim.lookup(origin, succ.id);
    sim.run_for(PERIOD);
    let outcome = sim.take_lookups().pop().and_then(|o| o.result);
    assert_eq!(
        outcome.map(|(owner, h)| (owner.addr, h)),
        Some((succ.addr, 0))
    );
}

#[test]
fn graceful_leave_hands_neighbours_over() {
    let (mut sim, _) = build(800, 13);
    let live = sim.live();
    // Every tenth node in ring order: no two leavers are neighbours (a pair of
    // neighbours leaving at once hand each other over, which needs failure
    // detection; see ring_recovers_after_killing_thirty_percent).
    let mut ring: Vec<(Hash, u32)> = live.iter().map(|a| (sim.node(*a).id(), *a)).collect();
    ring.sort();
    let leavers: Vec<u32> = ring.iter().map(|(_, a)| *a).step_by(10).collect();
    let failures_before: u64 = live.iter().map(|a| sim.node(*a).stats().peers_failed).sum();
    for a in &leavers {
        sim.leave(*a);
    }
    // Faster than failure detection could manage (3 timeouts after a tick).
    sim.run_for(PERIOD / 2);
    let report = sim.ring_check();
    assert!(report.is_correct(), "{report:?}");
    assert_eq!(report.nodes, 800 - leavers.len());
    let failures_after: u64 = sim
        .live()
        .iter()
        .map(|a| sim.node(*a).stats().peers_failed)
        .sum();
    assert_eq!(
        failures_after, failures_before,
        "a leaver was taken for a failure"
    );
    let (correct, _) = lookups(&mut sim, 500);
    assert_eq!(correct, 500);
}

#[test]
fn ring_recovers_after_killing_thirty_percent() {
    let (mut sim, _) = build(1000, 14);
    let mut live = sim.live();
    for i in 0..300 {
        let j = i + (sim.random_u64() % (live.len() - i) as u64) as usize;
        live.swap(i, j);
        sim.kill(live[i]);
    }
    sim.run_for(PERIOD * 5);
    let report = sim.ring_check();
    assert!(report.is_correct(), "{report:?}");
    assert_eq!(report.nodes, 700);
    let (correct, _) = lookups(&mut sim, 1000);
    assert_eq!(correct, 1000);
}

#[test]
fn lookups_during_failure_end_and_never_invent_owners() {
    // Lookups started the instant a fifth of the nodes die: each ends in an
    // event, no answer names a dead node (the owner is asked before the
    // answer is reported), and an answer that is not the true live owner
    // names a live node that a repairing neighbour skipped, never an
    // invention. Before the owner was asked, 101 of these 300 answers named
    // a node that had just died.
    let (mut sim, _) = build(500, 15);
    let live = sim.live();
    let killed: Vec<u32> = live.iter().copied().step_by(5).collect();
    for a in &killed {
        sim.kill(*a);
    }
    let survivors = sim.live();
    for i in 0..300 {
        let origin = survivors[i % survivors.len()];
        let key = random_key(&mut sim);
        sim.lookup(origin, key);
    }
    for _ in 0..200 {
        if sim.open_lookups() == 0 {
            break;
        }
        sim.run_for(Duration::from_millis(100));
    }
    assert_eq!(
        sim.open_lookups(),
        0,
        "a lookup neither succeeded nor failed"
    );
    let after = sim.truth();
    let outcomes = sim.take_lookups();
    assert_eq!(outcomes.len(), 300);
    let (mut right, mut stale_dead, mut stale_live, mut failed) = (0, 0, 0, 0);
    for o in outcomes {
        match o.result {
            Some((owner, _)) if Some(owner.addr) == after.successor_of(&o.key) => right += 1,
            Some((owner, _)) if killed.contains(&owner.addr) => stale_dead += 1,
            Some((owner, _)) => {
                assert!(sim.is_live(owner.addr), "{owner:?} was never a member");
                stale_live += 1;
            }
            None => failed += 1,
        }
    }
    eprintln!("right {right} stale-dead {stale_dead} stale-live {stale_live} failed {failed}");
    assert_eq!(stale_dead, 0, "answers naming dead nodes");
    assert!(right >= 285, "only {right} of 300 right");
}

#[test]
fn same_seed_same_report() {
    let params = Params {
        nodes: 300,
        lookups: 300,
        fail: 0.3,
        sim: SimConfig {
            seed: 99,
            loss: 0.01,
            ..SimConfig::default()
        },
        ..Params::default()
    };
    let a = sim::run(&params);
    let b = sim::run(&params);
    assert_eq!(a, b);
    assert!(a.ring_correct);
    // This seed once named a wrong live owner in each phase: a hop's lost
    // acknowledgement excluded the successor, and the successor was then
    // named the owner of a key past it. Every lookup is right now.
    assert_eq!(a.success_rate, 1.0, "{a:?}");
    assert_eq!(a.success_rate_after_fail, 1.0, "{a:?}");
    let c = sim::run(&Params {
        sim: SimConfig {
            seed: 100,
            ..params.sim.clone()
        },
        ..params.clone()
    });
    assert_ne!(a.datagrams, c.datagrams, "the seed changes the run");
}

#[test]
fn ring_survives_packet_loss() {
    let params = Params {
        nodes: 500,
        lookups: 500,
        sim: SimConfig {
            seed: 5,
            loss: 0.01,
            ..SimConfig::default()
        },
        ..Params::default()
    };
    let r = sim::run(&params);
    assert!(r.ring_correct, "{r:?}");
    assert!(r.success_rate >= 0.99, "{r:?}");
}

#[test]
fn peers_are_reported_once_as_they_enter() {
    let mut sim = Sim::new(SimConfig::default());
    sim.keep_events(true);
    let nodes: Vec<u32> = (0..6).map(|_| sim.add_node()).collect();
    sim.create(nodes[0]);
    for (i, n) in nodes.iter().enumerate().skip(1) {
        sim.schedule_join(*n, PERIOD * i as u32);
    }
    sim.run_for(PERIOD * 20);
    assert!(sim.ring_check().is_correct());
    let events = sim.take_events();
    for n in &nodes {
        let mut present = std::collections::BTreeSet::new();
        for (who, e) in &events {
            if who != n {
                continue;
            }
            match e {
                Event::PeerAdded(p) => assert!(present.insert(p.addr), "{p:?} added twice"),
                Event::PeerRemoved(p) => assert!(present.remove(&p.addr), "{p:?} removed unseen"),
                _ => {}
            }
        }
        let expected: std::collections::BTreeSet<u32> =
            sim.node(*n).peers().iter().map(|p| p.addr).collect();
        assert_eq!(
            present, expected,
            "node {n}: events disagree with the table"
        );
        assert!(!present.contains(n), "a node never reports itself");
    }
}

fn traffic(nodes: usize, seed: u64, f: impl FnOnce(&mut Params)) -> sim::Report {
    let mut params = Params {
        nodes,
        lookups: 0,
        settle_periods: 5,
        sim: SimConfig {
            seed,
            ..SimConfig::default()
        },
        ..Params::default()
    };
    f(&mut params);
    sim::run(&params)
}

#[test]
fn sends_and_broadcasts_in_a_stable_ring() {
    let r = traffic(3000, 21, |p| {
        p.sends = 2000;
        p.broadcasts = 3;
    });
    assert_eq!(r.send_delivered_rate, 1.0, "{r:?}");
    assert_eq!(r.send_unresolved, 0);
    assert_eq!(r.send_wrong_destination, 0);
    assert_eq!(r.duplicate_deliveries, 0);
    // Exactly N-1 messages, everyone once, depth within ceil(log2 N) + 1.
    assert_eq!(r.broadcast_messages_per_broadcast, 2999.0, "{r:?}");
    assert_eq!(r.broadcast_coverage_min, 1.0);
    assert!(r.broadcast_depth_max <= 13, "{r:?}");
    // No hop waits for a timeout: the last receiver has it within its
    // depth times the longest link latency (80 ms), plus the 0.1 s to
    // which the time is measured.
    let bound = f64::from(r.broadcast_depth_max) * 0.08 + 0.1;
    assert!(r.broadcast_seconds_max <= bound, "{r:?}");
}

#[test]
fn sends_and_broadcasts_right_after_ten_percent_die() {
    let r = traffic(3000, 22, |p| {
        p.sends = 2000;
        p.broadcasts = 3;
        p.churn = 0.1;
    });
    assert_eq!(r.churn_killed, 300);
    assert!(r.send_delivered_rate >= 0.99, "{r:?}");
    // Every send that was not delivered says so.
    assert_eq!(r.send_unresolved, 0, "{r:?}");
    assert_eq!(r.send_wrong_destination, 0, "{r:?}");
    assert!((r.send_delivered_rate + r.send_failed_rate - 1.0).abs() < 1e-9);
    // A broadcast right after the deaths still reaches every live node,
    // exactly once. A child that died unnoticed has its arc re-covered
    // at the hand-over's first timeout (0.5 s), not after its retries
    // (1.5 s): over seeds 10-29 of this very setup the last receiver had
    // it after 0.8-1.8 s, against 1.8-3.5 s when the retries came first.
    assert_eq!(r.broadcast_coverage_min, 1.0, "{r:?}");
    assert!(r.broadcast_seconds_max <= 2.0, "{r:?}");
    assert_eq!(r.duplicate_deliveries, 0);
}

#[test]
fn duplicates_route_around_droppers() {
    let with = traffic(2000, 23, |p| {
        p.sends = 2000;
        p.duplicates = 2;
        p.droppers = 0.1;
    });
    let without = traffic(2000, 23, |p| {
        p.sends = 2000;
        p.droppers = 0.1;
    });
    assert!(with.send_delivered_rate >= 0.99, "{with:?}");
    assert!(
        without.send_delivered_rate < with.send_delivered_rate,
        "{without:?}"
    );
    assert_eq!(with.send_unresolved, 0);
    assert_eq!(with.duplicate_deliveries, 0, "three copies, one delivery");
}

#[test]
fn large_payloads_are_split_and_reassembled() {
    let r = traffic(300, 24, |p| {
        p.sends = 200;
        p.broadcasts = 2;
        p.payload = 20_000; // 17 fragments of 1200 bytes
    });
    assert_eq!(r.send_delivered_rate, 1.0, "{r:?}");
    assert_eq!(r.broadcast_coverage_min, 1.0, "{r:?}");
    assert_eq!(r.duplicate_deliveries, 0);
}

/// Splits a ring of `n` into two interleaved halves for `apart`, checks
/// that each half forms its own ring, heals, and returns the periods until
/// the whole ring is correct again.
fn partition_and_heal(n: usize, seed: u64, apart: Duration) -> (Sim, u32) {
    let (mut sim, _) = build(n, seed);
    sim.run_for(PERIOD * 5);
    // By address parity: ids are random, so the halves interleave on the
    // ring and every node loses about half its successors and fingers.
    sim.partition(|a| (a % 2) as u8);
    sim.run_for(apart);
    for side in 0..2u32 {
        let report = sim.ring_check_among(|a| a % 2 == side);
        assert!(report.is_correct(), "side {side} while apart: {report:?}");
    }
    assert!(!sim.ring_check().is_correct(), "two rings, not one");
    sim.heal();
    for periods in 1..=60 {
        sim.run_for(PERIOD);
        if sim.ring_check().is_correct() {
            return (sim, periods);
        }
    }
    panic!(
        "not one ring 60 periods after healing: {:?}",
        sim.ring_check()
    );
}

#[test]
fn a_partitioned_ring_merges_back_into_one_when_the_network_heals() {
    for (apart, bound) in [(10u64, 8u32), (60, 12)] {
        let (mut sim, periods) = partition_and_heal(600, 31, PERIOD * apart as u32);
        let live = sim.live();
        let probes: u64 = live.iter().map(|a| sim.node(*a).stats().past_probes).sum();
        eprintln!(
            "apart {apart} periods: one ring {periods} periods after healing; {:.2} past-peer probes per node",
            probes as f64 / live.len() as f64
        );
        // Backoff of past-peer probes is capped at 8 periods (the default
        // past_probe_max): merging starts within that, and takes a few
        // periods more.
        assert!(periods <= bound, "{periods} periods after {apart} apart");
        let (correct, _) = lookups(&mut sim, 600);
        assert_eq!(correct, 600, "lookups after the merge");
    }
}
