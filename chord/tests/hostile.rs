//! Hostile input against hand-driven rings: floods of garbage and of
//! valid-looking requests from one source and from many, forged replies and
//! farewells, random sequences of well-formed messages. Memory stays
//! bounded, invariants hold, and honest nodes are still served.

use std::time::{Duration, Instant};

use chord::wire::{
    Data, DataHeader, FindSuccessor, Found, GetNeighbors, HopAck, Leave, Message, Mode, Neighbors,
    OwnerCheck, Owns, Ping, SuccessorHint,
};
use chord::{Config, Event, Hash, LocalNode, NodeRef, Target};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// The attacker's address: not a ring member.
const EVIL: u32 = 1000;

struct Net {
    nodes: Vec<LocalNode<u32>>,
    now: Instant,
    /// Bytes the ring sent to addresses outside it.
    to_outside: u64,
    events: Vec<(usize, Event<u32>)>,
}

impl Net {
    fn ring(n: usize, cfg: Config) -> Net {
        let now = Instant::now();
        let nodes = (0..n)
            .map(|i| {
                let me = NodeRef::new(Hash::of(format!("honest-{i}")), i as u32);
                LocalNode::new(cfg.clone(), me, i as u64 + 1, now).expect("valid config")
            })
            .collect();
        let mut net = Net {
            nodes,
            now,
            to_outside: 0,
            events: Vec::new(),
        };
        net.nodes[0].create(now);
        for i in 1..n {
            net.nodes[i].join(0, now);
            net.run(Duration::from_millis(300));
        }
        net.run(Duration::from_secs(10));
        net.check();
        net
    }

    /// Delivers every datagram among the ring at once; counts the rest.
    fn settle(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(t) = self.nodes[i].poll_transmit() {
                    moved = true;
                    match self.nodes.get_mut(t.to as usize) {
                        Some(to) => to.handle_datagram(self.now, i as u32, &t.bytes),
                        None => self.to_outside += t.bytes.len() as u64,
                    }
                }
                while let Some(e) = self.nodes[i].poll_event() {
                    self.events.push((i, e));
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn step(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        for n in self.nodes.iter_mut() {
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout(now);
            }
        }
        self.settle();
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step(Duration::from_millis(50));
        }
    }

    fn check(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            if let Err(e) = n.check_invariants() {
                panic!("node {i}: {e}");
            }
        }
    }

    fn inject(&mut self, to: usize, from: u32, bytes: &[u8]) {
        let now = self.now;
        self.nodes[to].handle_datagram(now, from, bytes);
    }

    /// Every node looks up a key and sends to it; all must succeed.
    fn honest_traffic_is_served(&mut self, skip: usize) {
        self.events.clear();
        let now = self.now;
        let mut lookups = 0;
        let mut sends = 0;
        for i in 0..self.nodes.len() {
            if i == skip {
                continue;
            }
            let key = Hash::of(format!("key-{i}-{now:?}"));
            self.nodes[i].lookup(key, now);
            lookups += 1;
            // Through the flooded node when possible: to its own id.
            let target = Target::Node(self.nodes[skip].id());
            self.nodes[i]
                .send(target, b"still here?".to_vec(), 0, now)
                .expect("send accepted");
            sends += 1;
        }
        self.settle();
        self.run(Duration::from_secs(3));
        let done = self
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::LookupDone { .. }))
            .count();
        let delivered = self
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Delivered { .. }))
            .count();
        assert_eq!(done, lookups, "every honest lookup succeeds");
        assert_eq!(delivered, sends, "every honest send is confirmed");
    }
}

fn evil_ref() -> NodeRef<u32> {
    NodeRef::new(Hash::of("evil"), EVIL)
}

fn find_successor(i: u64) -> Vec<u8> {
    Message::FindSuccessor(FindSuccessor {
        txn: i,
        lookup: i,
        key: Hash::of(i.to_be_bytes()),
        origin: evil_ref(),
        hops: 1,
        joining: false,
        via: None,
    })
    .encode()
}

fn data(i: u64, frags: u16) -> Vec<u8> {
    Message::Data(Data {
        header: DataHeader {
            txn: i,
            msg: i,
            origin: evil_ref(),
            target: Hash::of(i.to_be_bytes()),
            mode: Mode::Key,
            limit: Hash::ZERO,
            hops: 1,
            last_hop: false,
            frag: 0,
            frags,
        },
        payload: vec![7; 100].into(),
    })
    .encode()
}

fn get_neighbors(i: u64) -> Vec<u8> {
    Message::GetNeighbors(GetNeighbors {
        txn: i,
        sender: evil_ref(),
        notify: false,
        want_fingers: true,
    })
    .encode()
}

/// 100,000 datagrams from one address over 10 virtual seconds into one
/// node of a ring of eight, interleaved with the ring's own traffic.
fn flood(make: impl Fn(u64) -> Vec<u8>) -> (Net, u64) {
    let cfg = Config::default();
    let mut net = Net::ring(8, cfg.clone());
    let victim = 3;
    let mut received = 0u64;
    for i in 0..100_000u64 {
        let bytes = make(i);
        received += bytes.len() as u64;
        net.inject(victim, EVIL, &bytes);
        if i % 500 == 499 {
            net.step(Duration::from_millis(50));
            let n = &net.nodes[victim];
            assert!(
                n.pending_len() <= cfg.source_burst as usize + cfg.source_rate as usize,
                "one source holds at most a bucket's worth of pending requests: {}",
                n.pending_len()
            );
            net.check();
        }
    }
    let n = &net.nodes[victim];
    let s = n.stats();
    // 10 virtual seconds: at most one burst plus 10 s of rate were accepted.
    let accepted = 100_000 - s.dropped_rate_limited;
    assert!(
        accepted <= (cfg.source_burst + 10 * cfg.source_rate + cfg.source_rate / 10) as u64,
        "accepted {accepted}"
    );
    assert!(s.dropped_rate_limited >= 95_000, "{s:?}");
    assert!(
        n.source_table().0 <= 8,
        "at most the ring's seven peers and the attacker"
    );
    (net, received)
}

#[test]
fn flood_of_find_successor_from_one_source() {
    let (mut net, received) = flood(find_successor);
    // Each accepted lookup is acknowledged (smaller than it) and answered
    // to its origin (about its size): no amplification.
    assert!(
        net.to_outside <= received,
        "{} > {received}",
        net.to_outside
    );
    net.honest_traffic_is_served(3);
    net.check();
}

#[test]
fn flood_of_data_from_one_source() {
    // Fragments announcing 65,535 siblings, 100 bytes each.
    let (mut net, _) = flood(|i| data(i, u16::MAX));
    let n = &net.nodes[3];
    assert!(n.stats().reassembly_refused > 0 || n.stats().dropped_rate_limited > 0);
    net.honest_traffic_is_served(3);
    net.check();
    let (mut net, received) = flood(|i| data(i, 1));
    assert!(net.to_outside <= received);
    net.honest_traffic_is_served(3);
}

#[test]
fn flood_of_get_neighbors_from_a_forged_source() {
    let (mut net, received) = flood(get_neighbors);
    let s = net.nodes[3].stats().clone();
    // The attacker never answers the probe: a few full replies (besides
    // those the seven honest peers got when they joined), then only what
    // its own bytes pay for.
    assert!(s.replies_unverified <= 4 + 7, "{s:?}");
    assert!(s.replies_deferred > 0, "{s:?}");
    let full_reply = 1500; // a Neighbors reply with 16 successors and fingers, generously
    assert!(
        net.to_outside <= 4 * full_reply + received / 2,
        "sent {} for {received} received",
        net.to_outside
    );
    net.honest_traffic_is_served(3);
}

#[test]
fn flood_of_garbage_costs_nothing_but_a_counter() {
    let mut net = Net::ring(4, Config::default());
    let mut x = 0x1234_5678_u64;
    for i in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut bytes = x.to_le_bytes().repeat(1 + (i % 20));
        if i % 2 == 0 {
            // Behind a valid header: the body decoder's turn.
            bytes.splice(0..0, [0xC1, 0xCA, 1, (i % 14) as u8]);
        }
        net.inject(1, EVIL, &bytes);
    }
    let s = net.nodes[1].stats().clone();
    assert!(s.dropped_malformed + s.dropped_version >= 90_000, "{s:?}");
    assert!(net.to_outside <= 100_000, "{}", net.to_outside);
    net.check();
    net.honest_traffic_is_served(1);
}

#[test]
fn flood_from_many_sources_keeps_the_source_table_bounded() {
    let cfg = Config {
        max_sources: 64,
        ..Config::default()
    };
    let mut net = Net::ring(4, cfg);
    for i in 0..100_000u32 {
        let bytes = Message::<u32>::Ping(Ping { txn: i as u64 }).encode();
        net.inject(2, 10_000 + i, &bytes);
        if i % 1000 == 999 {
            net.step(Duration::from_millis(50));
        }
    }
    let (len, evicted) = net.nodes[2].source_table();
    assert!(len <= 64);
    assert!(evicted >= 100_000 - 64);
    net.check();
    net.honest_traffic_is_served(2);
    net.check();
}

#[test]
fn pong_to_an_unverified_address_is_never_larger_than_the_ping() {
    let mut net = Net::ring(3, Config::default());
    let ping = Message::<u32>::Ping(Ping { txn: 1 }).encode();
    net.inject(0, EVIL, &ping);
    net.settle();
    assert_eq!(net.to_outside, ping.len() as u64);
}

#[test]
fn forged_leave_and_hint_change_nothing() {
    let mut net = Net::ring(4, Config::default());
    let succ = net.nodes[0].successor().cloned().expect("a successor");
    // "My successor leaves", sent from the attacker's address.
    let leave = Message::Leave(Leave {
        sender: succ.id,
        predecessor: None,
        successors: vec![evil_ref()],
    })
    .encode();
    net.inject(0, EVIL, &leave);
    assert_eq!(net.nodes[0].successor(), Some(&succ));
    assert!(!net.nodes[0].peers().iter().any(|p| p.addr == EVIL));
    // Forged replies: txns are 64-bit random, these match nothing.
    for txn in 0..1000 {
        let neighbors = Message::Neighbors(Neighbors {
            txn,
            predecessor: Some(evil_ref()),
            successors: vec![evil_ref()],
            fingers: vec![evil_ref()],
        })
        .encode();
        net.inject(0, succ.addr, &neighbors);
        net.inject(0, EVIL, &Message::<u32>::HopAck(HopAck { txn }).encode());
        let found = Message::Found(Found {
            lookup: txn,
            key: Hash::ZERO,
            owner: evil_ref(),
            hops: 1,
        })
        .encode();
        net.inject(0, EVIL, &found);
    }
    assert!(!net.nodes[0].peers().iter().any(|p| p.addr == EVIL));
    assert!(net.nodes[0].stats().dropped_unexpected >= 3000);
    // A node claiming our own address under another id never enters.
    let me = net.nodes[0].me().clone();
    let hint = Message::SuccessorHint(SuccessorHint {
        node: NodeRef::new(Hash::of("not me"), me.addr),
    })
    .encode();
    net.inject(0, succ.addr, &hint);
    net.run(Duration::from_secs(3));
    assert!(!net.nodes[0].peers().iter().any(|p| p.addr == me.addr));
    net.check();
}

/// A valid-looking message built with the encoder, naming ring members
/// and strangers.
fn arb_message(ids: Vec<NodeRef<u32>>) -> impl Strategy<Value = Message<u32>> {
    let who = {
        let ids = ids.clone();
        (any::<bool>(), any::<usize>(), any::<[u8; 32]>(), 0u32..1100).prop_map(
            move |(ring, i, id, addr)| {
                if ring {
                    ids[i % ids.len()].clone()
                } else {
                    NodeRef::new(Hash::from_bytes(id), addr)
                }
            },
        )
    };
    let list = proptest::collection::vec(who.clone(), 0..20);
    let key = any::<[u8; 32]>().prop_map(Hash::from_bytes);
    prop_oneof![
        any::<u64>().prop_map(|txn| Message::Ping(Ping { txn })),
        any::<u64>().prop_map(|txn| Message::Pong(Ping { txn })),
        (any::<u64>(), key.clone())
            .prop_map(|(txn, key)| Message::OwnerCheck(OwnerCheck { txn, key })),
        (any::<u64>(), any::<bool>()).prop_map(|(txn, yes)| Message::Owns(Owns { txn, yes })),
        (any::<u64>(), who.clone(), any::<bool>(), any::<bool>()).prop_map(
            |(txn, sender, notify, want_fingers)| Message::GetNeighbors(GetNeighbors {
                txn,
                sender,
                notify,
                want_fingers
            })
        ),
        (
            any::<u64>(),
            proptest::option::of(who.clone()),
            list.clone(),
            list.clone()
        )
            .prop_map(
                |(txn, predecessor, successors, fingers)| Message::Neighbors(Neighbors {
                    txn,
                    predecessor,
                    successors,
                    fingers
                })
            ),
        (
            any::<u64>(),
            key.clone(),
            who.clone(),
            0u8..70,
            any::<bool>()
        )
            .prop_map(|(txn, key, origin, hops, joining)| Message::FindSuccessor(
                FindSuccessor {
                    txn,
                    lookup: txn,
                    key,
                    origin,
                    hops,
                    joining,
                    via: None
                }
            )),
        any::<u64>().prop_map(|txn| Message::HopAck(HopAck { txn })),
        (who.clone(), proptest::option::of(who.clone()), list.clone()).prop_map(
            |(sender, predecessor, successors)| Message::Leave(Leave {
                sender: sender.id,
                predecessor,
                successors
            })
        ),
        who.clone()
            .prop_map(|node| Message::SuccessorHint(SuccessorHint { node })),
        (
            any::<u64>(),
            who.clone(),
            key.clone(),
            0u8..3,
            key,
            0u8..70,
            any::<bool>(),
            0u16..4,
            1u16..4,
            0usize..300
        )
            .prop_map(
                |(txn, origin, target, mode, limit, hops, last_hop, frag, frags, len)| {
                    Message::Data(Data {
                        header: DataHeader {
                            txn,
                            msg: txn % 8,
                            origin,
                            target,
                            mode: [Mode::Key, Mode::Node, Mode::Broadcast][mode as usize],
                            limit,
                            hops,
                            last_hop,
                            frag: frag % frags,
                            frags,
                        },
                        payload: vec![1; len].into(),
                    })
                }
            ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Random sequences of well-formed messages from ring members and
    /// strangers, interleaved with time, never break any node's invariants.
    #[test]
    fn random_message_sequences_keep_invariants(
        seq in proptest::collection::vec(
            (0usize..4, 0u32..1100, 0u64..400, any::<u64>()), 1..150),
        seed in any::<u64>(),
    ) {
        let small = Config {
            successor_list_len: 3,
            max_pending: 32,
            dedup_window: 16,
            max_sources: 8,
            ..Config::default()
        };
        let mut net = Net::ring(4, small);
        let ids: Vec<NodeRef<u32>> = net.nodes.iter().map(|n| n.me().clone()).collect();
        let strategy = arb_message(ids);
        let mut runner = proptest::test_runner::TestRunner::new_with_rng(
            Default::default(),
            proptest::test_runner::TestRng::from_seed(
                proptest::test_runner::RngAlgorithm::ChaCha,
                &{
                    let mut s = [0u8; 32];
                    s[..8].copy_from_slice(&seed.to_le_bytes());
                    s
                },
            ),
        );
        for (to, from, wait_ms, _) in seq {
            let msg = strategy.new_tree(&mut runner).map_err(|e| TestCaseError::fail(e.to_string()))?.current();
            net.inject(to, from, &msg.encode());
            if wait_ms > 300 {
                net.step(Duration::from_millis(wait_ms));
            } else {
                net.settle();
            }
            for (i, n) in net.nodes.iter().enumerate() {
                prop_assert!(n.check_invariants().is_ok(), "node {}: {:?} after {:?}", i, n.check_invariants(), msg);
            }
        }
    }
}
