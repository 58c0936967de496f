//! Keyed and plain swarms of [`Stack`]s in the deterministic simulator:
//! ring formation, confirmed sends, handshake loss, replays, strangers,
//! unreachable peers, runs.

use std::time::Duration;

use chord::{Event, MessageId, Target};

use super::sim::Sim;
use super::Batching;
use crate::secure::SwarmKey;

fn key(b: u8) -> SwarmKey {
    SwarmKey::from_bytes([b; 32])
}

/// `n` stacks (keyed with `key` or plain): the first starts the swarm, the
/// others join through it one after another.
fn swarm(sim: &mut Sim, n: u32, key: Option<&SwarmKey>) -> Vec<u32> {
    let first = sim.add(key);
    sim.stacks[first as usize].create(sim.now);
    let mut all = vec![first];
    for _ in 1..n {
        let a = sim.add(key);
        sim.stacks[a as usize].join(first, sim.now);
        sim.run_for(Duration::from_millis(300));
        all.push(a);
    }
    sim.run_for(Duration::from_secs(20));
    all
}

/// Following successors from the first member visits every member once.
fn assert_ring(sim: &Sim, members: &[u32]) {
    let mut seen = vec![members[0]];
    for _ in 0..members.len() {
        let at = *seen.last().unwrap() as usize;
        let succ = sim.stacks[at].node().successor().expect("a successor");
        seen.push(succ.addr);
    }
    assert_eq!(seen[members.len()], seen[0], "a ring: {seen:?}");
    let mut distinct = seen[..members.len()].to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), members.len(), "{seen:?}");
}

/// Sends a confirmed message from `from` to `to`; its id.
fn send(sim: &mut Sim, from: u32, to: u32, data: &[u8]) -> MessageId {
    let now = sim.now;
    sim.stacks[from as usize]
        .send(Target::Node(Sim::id(to)), data.to_vec(), 0, None, now)
        .expect("accepted")
}

fn delivered(sim: &Sim, from: u32, id: MessageId) -> bool {
    sim.events[from as usize]
        .iter()
        .any(|e| matches!(e, Event::Delivered { id: d, .. } if *d == id))
}

#[test]
fn a_keyed_ring_forms_over_a_lossy_network_and_confirmed_sends_arrive_exactly_once() {
    let mut sim = Sim::new(1);
    sim.loss = 0.01;
    sim.duplicate = 0.02;
    let k = key(7);
    let members = swarm(&mut sim, 8, Some(&k));
    assert_ring(&sim, &members);
    let n = members.len() as u32;
    let ids: Vec<MessageId> = (0..n)
        .map(|i| send(&mut sim, i, (i + 1) % n, format!("send {i}").as_bytes()))
        .collect();
    sim.run_for(Duration::from_secs(10));
    for i in 0..n {
        assert!(delivered(&sim, i, ids[i as usize]), "send {i} confirmed");
        let from = (i + n - 1) % n;
        assert_eq!(sim.received(i), [format!("send {from}").into_bytes()]);
        let s = sim.stacks[i as usize].seal_stats().expect("keyed");
        assert!(s.sessions >= 1, "{s:?}");
        assert_eq!(s.dropped_bad_mac + s.dropped_unkeyed, 0, "{s:?}");
    }
    // Duplicated datagrams reached the seals, which dropped them as replays.
    let replays: u64 = sim
        .stacks
        .iter()
        .map(|s| s.seal_stats().unwrap().dropped_replay)
        .sum();
    assert!(replays > 0);
    // Nothing in the clear on the wire.
    assert!(sim
        .wire
        .iter()
        .all(|(_, _, d)| !d.starts_with(&chord::MAGIC)));
    assert!(!sim
        .wire
        .iter()
        .any(|(_, _, d)| d.windows(5).any(|w| w == b"send ")));
}

#[test]
fn lost_inits_and_a_lost_response_are_retried_and_the_join_completes() {
    let mut sim = Sim::new(2);
    let (mut inits, mut responses) = (0, 0);
    sim.drop = Some(Box::new(move |_, _, d: &[u8]| match d.first() {
        Some(1) if inits < 2 => {
            inits += 1;
            true
        }
        Some(2) if responses < 1 => {
            responses += 1;
            true
        }
        _ => false,
    }));
    let k = key(3);
    let b = sim.add(Some(&k));
    sim.stacks[b as usize].create(sim.now);
    let a = sim.add(Some(&k));
    sim.stacks[a as usize].join(b, sim.now);
    sim.run_for(Duration::from_secs(5));
    assert!(sim.joined(a), "{:?}", sim.events[a as usize]);
    let id = send(&mut sim, a, b, b"after the loss");
    sim.run_for(Duration::from_secs(2));
    assert!(delivered(&sim, a, id));
    assert_eq!(sim.received(b), [b"after the loss".to_vec()]);
    let s = sim.stacks[a as usize].seal_stats().unwrap();
    assert!(s.handshake_retries >= 2, "{s:?}");
    assert_eq!(s.handshakes_completed, 1, "{s:?}");
}

#[test]
fn replayed_datagrams_are_dropped_and_counted_and_never_delivered_twice() {
    let mut sim = Sim::new(3);
    let k = key(9);
    let members = swarm(&mut sim, 2, Some(&k));
    let (a, b) = (members[1], members[0]);
    for i in 0..10 {
        send(&mut sim, a, b, format!("payload {i}").as_bytes());
    }
    sim.run_for(Duration::from_secs(2));
    let got = sim.received(b);
    assert_eq!(got.len(), 10);
    let before = sim.stacks[b as usize].seal_stats().unwrap().dropped_replay;
    // Everything A ever sent B, once more, from A's address.
    let replay: Vec<Vec<u8>> = sim
        .wire
        .iter()
        .filter(|(from, to, _)| *from == a && *to == b)
        .map(|(_, _, d)| d.clone())
        .collect();
    assert!(replay.len() > 10);
    for d in &replay {
        sim.inject(a, b, d);
    }
    sim.run_for(Duration::from_secs(2));
    let after = sim.stacks[b as usize].seal_stats().unwrap().dropped_replay;
    assert_eq!(after, before + replay.len() as u64);
    assert_eq!(sim.received(b), got, "a replay was delivered");
}

#[test]
fn a_peer_with_another_key_or_none_is_never_admitted_and_is_counted() {
    let mut sim = Sim::new(4);
    let k = key(1);
    let members = swarm(&mut sim, 3, Some(&k));
    let other = sim.add(Some(&key(2)));
    let plain = sim.add(None);
    sim.stacks[other as usize].join(members[0], sim.now);
    sim.stacks[plain as usize].join(members[0], sim.now);
    sim.run_for(Duration::from_secs(20));
    for stranger in [other, plain] {
        assert!(!sim.joined(stranger));
        assert!(sim.events[stranger as usize]
            .iter()
            .any(|e| matches!(e, Event::JoinFailed { .. })));
    }
    for &m in &members {
        let node = sim.stacks[m as usize].node();
        assert!(
            node.peers().iter().all(|p| members.contains(&p.addr)),
            "a stranger in the tables of {m}"
        );
        assert!(sim.received(m).is_empty());
    }
    let s = sim.stacks[members[0] as usize].seal_stats().unwrap();
    assert!(s.dropped_bad_mac >= 1, "the other key's Inits: {s:?}");
    assert!(s.dropped_unkeyed >= 1, "the plain peer's datagrams: {s:?}");
    assert!(!sim.stacks[members[0] as usize].has_session(&other));
    assert_ring(&sim, &members);
}

#[test]
fn an_unreachable_successor_is_failed_at_once() {
    let mut sim = Sim::new(5);
    let members = swarm(&mut sim, 4, None);
    let s0 = &mut sim.stacks[members[0] as usize];
    let succ = s0.node().successor().expect("a successor").clone();
    let failed = s0.node().stats().peers_failed;
    // An address nobody has: nothing changes.
    s0.handle_unreachable(sim.now, &99);
    assert_eq!(s0.node().stats().peers_failed, failed);
    s0.handle_unreachable(sim.now, &succ.addr);
    assert_eq!(s0.node().stats().peers_failed, failed + 1);
    assert!(s0.node().peers().iter().all(|p| p.addr != succ.addr));
    assert_ne!(s0.node().successor().map(|s| s.addr), Some(succ.addr));
}

#[test]
fn datagrams_of_one_size_leave_in_runs_and_arrive_whole_keyed_or_not() {
    for k in [None, Some(key(5))] {
        let mut sim = Sim::new(6);
        sim.batching = Batching {
            max_segments: 16,
            max_segment_size: 1_452,
        };
        let members = swarm(&mut sim, 2, k.as_ref());
        let (a, b) = (members[1], members[0]);
        let now = sim.now;
        for _ in 0..40 {
            sim.stacks[a as usize]
                .send_datagram(Target::Node(Sim::id(b)), &[0x55; 300], now)
                .expect("accepted");
        }
        let wire_before = sim.wire.len();
        sim.run_for(Duration::from_secs(1));
        assert_eq!(sim.received(b).len(), 40, "keyed: {}", k.is_some());
        let runs = sim.wire[wire_before..]
            .iter()
            .filter(|(from, _, d)| *from == a && d.len() > 1_000)
            .count();
        assert!((1..=4).contains(&runs), "{runs} runs for 40 datagrams");
        // The payload crosses the wire in the clear only without a key.
        let clear = sim
            .wire
            .iter()
            .any(|(_, _, d)| d.windows(300).any(|w| w == [0x55; 300]));
        assert_eq!(clear, k.is_none(), "keyed: {}", k.is_some());
    }
}

/// Three public stacks (0 starts the swarm) and two behind NATs that map
/// per destination (3 and 4, which only 0 reaches at the address they
/// announce): the two reserve relays, join the ring, and exchange
/// confirmed sends both ways, each received once, through relays that
/// read nothing in a keyed swarm. Then the relay of 3 dies: 3 holds a
/// reservation with another within two stabilize periods, the ring heals,
/// and sends both ways are confirmed and received once again. Twenty
/// seeds, each a different run; `loss` of the datagrams lost.
fn relayed_peers_recover_when_their_relay_dies(key: Option<&SwarmKey>, seed: u64, loss: f64) {
    let mut sim = Sim::new(seed);
    sim.loss = loss;
    sim.chord.stabilize_interval = Duration::from_millis(500);
    sim.chord.request_timeout = Duration::from_millis(100);
    let first = sim.add(key);
    sim.stacks[0].set_reach(chord::Reach::Public);
    sim.stacks[0].create(sim.now);
    for _ in 1..5 {
        let a = sim.add(key);
        if a >= 3 {
            sim.symmetric[a as usize] = true;
            sim.stacks[a as usize].set_reach(chord::Reach::Symmetric);
        } else {
            sim.stacks[a as usize].set_reach(chord::Reach::Public);
        }
        sim.stacks[a as usize].join(first, sim.now);
        sim.run_for(Duration::from_secs(2));
    }
    sim.run_for(Duration::from_secs(10));
    let all = [0, 1, 2, 3, 4];
    for i in [3, 4] {
        assert!(sim.joined(i), "{i} joined");
        let relay = sim.stacks[i as usize].node().relay().copied();
        assert!(relay.is_some_and(|r| r < 3), "{i}'s relay: {relay:?}");
    }
    assert_ring(&sim, &all);
    let path = |sim: &Sim, from: u32, to: u32| sim.stacks[from as usize].node().path(&to);
    assert_eq!(path(&sim, 3, 4), chord::Path::Relayed);
    assert_eq!(path(&sim, 4, 3), chord::Path::Relayed);
    let exchange = |sim: &mut Sim, round: &str| {
        let a = send(sim, 3, 4, format!("{round} 3 to 4").as_bytes());
        let b = send(sim, 4, 3, format!("{round} 4 to 3").as_bytes());
        sim.run_for(Duration::from_secs(5));
        assert!(delivered(sim, 3, a), "{round}: 3 to 4 confirmed");
        assert!(delivered(sim, 4, b), "{round}: 4 to 3 confirmed");
    };
    exchange(&mut sim, "first");
    let forwarded: u64 = (0..3)
        .map(|i| sim.stacks[i].node().stats().relayed_frames)
        .sum();
    assert!(forwarded > 0);
    if key.is_some() {
        assert!(!sim
            .wire
            .iter()
            .any(|(_, _, d)| d.windows(6).any(|w| w == b"3 to 4" || w == b"4 to 3")));
    }

    let dead = sim.stacks[3].node().relay().copied().unwrap();
    sim.dead[dead as usize] = true;
    let lost = sim.now;
    let period = sim.chord.stabilize_interval;
    let mut moved = None;
    while sim.now < lost + period * 4 {
        sim.run_for(Duration::from_millis(10));
        let r = sim.stacks[3].node().relay().copied();
        if r.is_some_and(|r| r != dead) {
            moved = Some(sim.now - lost);
            break;
        }
    }
    let moved = moved.expect("3 found another relay");
    assert!(
        moved <= period * 2,
        "3 moved to another relay after {moved:?}"
    );
    assert!(sim.stacks[3].node().stats().relays_lost >= 1);
    sim.run_for(Duration::from_secs(10));
    let live: Vec<u32> = all.iter().copied().filter(|&i| i != dead).collect();
    assert_ring(&sim, &live);
    exchange(&mut sim, "second");
    for (i, j) in [(3, 4), (4, 3)] {
        let got = sim.received(j);
        for round in ["first", "second"] {
            let want = format!("{round} {i} to {j}").into_bytes();
            assert_eq!(got.iter().filter(|p| **p == want).count(), 1, "{got:?}");
        }
    }
}

#[test]
fn relayed_peers_recover_when_their_relay_dies_plain() {
    for seed in 1..=20 {
        relayed_peers_recover_when_their_relay_dies(None, seed, 0.0);
    }
}

#[test]
fn relayed_peers_recover_when_their_relay_dies_keyed() {
    for seed in 1..=20 {
        relayed_peers_recover_when_their_relay_dies(Some(&key(9)), seed, 0.0);
    }
}

#[test]
fn relayed_peers_recover_when_their_relay_dies_over_a_lossy_network() {
    for seed in 1..=20 {
        relayed_peers_recover_when_their_relay_dies(None, seed, 0.01);
        relayed_peers_recover_when_their_relay_dies(Some(&key(9)), seed, 0.01);
    }
}
