//! Unit tests of `LocalNode` on hand-driven networks of a few nodes.

use std::time::{Duration, Instant};

use super::LocalNode;
use crate::config::{Config, VERSION};
use crate::event::{Event, JoinError, SendError, Target};
use crate::hash::Hash;
use crate::wire::{GetNeighbors, Message, Neighbors, NodeRef, Ping};

fn node(name: &str, addr: u32, now: Instant) -> LocalNode<u32> {
    LocalNode::new(
        Config::default(),
        NodeRef::new(Hash::of(name), addr),
        addr as u64,
        now,
    )
    .expect("default config is valid")
}

fn events(n: &mut LocalNode<u32>) -> Vec<Event<u32>> {
    std::iter::from_fn(|| n.poll_event()).collect()
}

/// Delivers every datagram among `nodes` (address = index) until quiet.
fn settle(nodes: &mut [LocalNode<u32>], now: Instant) {
    settle_except(nodes, now, usize::MAX, |_, _| {});
}

/// As [`settle`], but what is sent to node `silent` is lost; `tap` sees
/// every datagram sent, with its sender's index.
fn settle_except(
    nodes: &mut [LocalNode<u32>],
    now: Instant,
    silent: usize,
    mut tap: impl FnMut(usize, &crate::event::Transmit<u32>),
) {
    for _ in 0..50 {
        let mut moved = false;
        for i in 0..nodes.len() {
            while let Some(t) = nodes[i].poll_transmit() {
                moved = true;
                tap(i, &t);
                if t.to as usize == silent {
                    continue;
                }
                if let Some(to) = nodes.get_mut(t.to as usize) {
                    to.handle_datagram(now, i as u32, &t.bytes);
                }
            }
        }
        if !moved {
            return;
        }
    }
}

/// Runs `nodes` for `d` in steps, firing timers and delivering datagrams.
/// Two nodes, `a` (address 0) and `b` (1), joined and settled for 5 s,
/// their events so far taken; and the time then.
fn joined_pair() -> (Vec<LocalNode<u32>>, Instant) {
    let now = Instant::now();
    let mut nodes = vec![node("a", 0, now), node("b", 1, now)];
    nodes[0].create(now);
    nodes[1].join(0, now);
    let now = run(&mut nodes, now, Duration::from_secs(5));
    for n in nodes.iter_mut() {
        events(n);
    }
    (nodes, now)
}

fn run(nodes: &mut [LocalNode<u32>], start: Instant, d: Duration) -> Instant {
    let mut now = start;
    let step = Duration::from_millis(50);
    while now < start + d {
        now += step;
        for n in nodes.iter_mut() {
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout(now);
            }
        }
        settle(nodes, now);
    }
    now
}

/// Nodes a, b, c (addresses 0, 1, 2) joined through a and run for 5 s.
fn ring_of_three() -> (Vec<LocalNode<u32>>, Instant) {
    ring_of(&["a", "b", "c"])
}

/// Nodes named `names` (addresses 0, 1, …) joined through the first and
/// run for 5 s.
fn ring_of(names: &[&str]) -> (Vec<LocalNode<u32>>, Instant) {
    let now = Instant::now();
    let mut nodes: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| node(name, i as u32, now))
        .collect();
    nodes[0].create(now);
    for n in nodes.iter_mut().skip(1) {
        n.join(0, now);
    }
    let now = run(&mut nodes, now, Duration::from_secs(5));
    (nodes, now)
}

#[test]
fn three_nodes_form_a_ring() {
    let (mut nodes, now) = ring_of_three();
    let mut ids: Vec<(Hash, u32)> = nodes.iter().map(|n| (n.id(), n.me().addr)).collect();
    ids.sort();
    for (i, (_, addr)) in ids.iter().enumerate() {
        let n = &nodes[*addr as usize];
        assert_eq!(n.successor().map(|s| s.addr), Some(ids[(i + 1) % 3].1));
        assert_eq!(n.predecessor().map(|p| p.addr), Some(ids[(i + 2) % 3].1));
        assert_eq!(n.peers().len(), 2);
    }
    assert!(events(&mut nodes[1])
        .iter()
        .any(|e| matches!(e, Event::Joined { .. })));
    let _ = now;
}

#[test]
fn join_through_a_silent_bootstrap_fails_as_unreachable() {
    let mut now = Instant::now();
    let mut n = node("lonely", 0, now);
    n.join(7, now);
    for _ in 0..100 {
        while n.poll_transmit().is_some() {}
        now += Duration::from_millis(100);
        n.handle_timeout(now);
    }
    let ev = events(&mut n);
    assert!(ev.contains(&Event::JoinFailed {
        reason: JoinError::Unreachable
    }));
    assert!(!n.is_joined());
}

#[test]
fn join_to_another_version_fails_with_version_mismatch() {
    let now = Instant::now();
    let mut n = node("new", 0, now);
    n.join(1, now);
    let t = n.poll_transmit().expect("a join request");
    let mut foreign = t.bytes.to_vec();
    foreign[2] = VERSION + 1;
    // The bootstrap of another version answers with a VersionMismatch.
    let mut other = node("other", 1, now);
    other.create(now);
    other.handle_datagram(now, 0, &foreign);
    let reply = other.poll_transmit().expect("a version mismatch reply");
    assert_eq!(other.stats().dropped_version, 1);
    n.handle_datagram(now, 1, &reply.bytes);
    let ev = events(&mut n);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::JoinFailed {
            reason: JoinError::VersionMismatch { .. }
        }
    )));
}

#[test]
fn garbage_is_counted_and_ignored() {
    let now = Instant::now();
    let mut n = node("a", 0, now);
    n.create(now);
    for bytes in [
        &b""[..],
        b"hello",
        &[0xC1, 0xCA, VERSION, 250],
        &[0xC1, 0xCA, VERSION, 4, 0xff],
    ] {
        n.handle_datagram(now, 9, bytes);
    }
    assert_eq!(n.stats().dropped_malformed, 4);
    assert!(n.poll_transmit().is_none(), "nothing answers garbage");
    assert!(n.is_joined());
}

#[test]
fn unsolicited_replies_are_counted() {
    let now = Instant::now();
    let mut a = node("a", 0, now);
    a.create(now);
    let pong = crate::wire::Message::<u32>::Pong(crate::wire::Ping { txn: 42 }).encode();
    a.handle_datagram(now, 3, &pong);
    assert_eq!(a.stats().dropped_unexpected, 1);
}

#[test]
fn send_rules_at_the_api() {
    let now = Instant::now();
    let mut idle = node("idle", 0, now);
    assert_eq!(
        idle.send(Target::Key(Hash::ZERO), vec![1], 0, now),
        Err(SendError::NotJoined)
    );
    let mut a = node("a", 0, now);
    a.create(now);
    let big = vec![0; a.config().max_payload + 1];
    assert!(matches!(
        a.send(Target::Key(Hash::ZERO), big, 0, now),
        Err(SendError::TooLarge { .. })
    ));
    // Alone in the ring: a key is ours, another node's id is nobody's.
    let id = a
        .send(Target::Key(Hash::ZERO), b"mine".to_vec(), 0, now)
        .unwrap();
    let ev = events(&mut a);
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::Received { payload, .. } if payload[..] == b"mine"[..])));
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::Delivered { id: d, .. } if *d == id)));
    let id = a
        .send(Target::Node(Hash::of("nobody")), b"x".to_vec(), 0, now)
        .unwrap();
    // The first verdict gets a second attempt a request timeout later (a
    // node that has just joined may not be known yet); the second stands
    // once a confirmation had its chance to overtake it.
    let rt = a.config().request_timeout;
    assert!(events(&mut a).is_empty());
    a.handle_timeout(now + rt);
    assert!(events(&mut a).is_empty(), "failed on the first verdict");
    a.handle_timeout(now + rt * 2);
    assert!(events(&mut a).contains(&Event::SendFailed {
        id,
        reason: SendError::NoSuchNode
    }));
}

#[test]
fn send_between_nodes_is_confirmed_and_delivered_once() {
    let (mut nodes, now) = ring_of_three();
    for n in nodes.iter_mut() {
        events(n);
    }
    let target = nodes[2].id();
    let id = nodes[0]
        .send(Target::Node(target), b"hi".to_vec(), 2, now)
        .unwrap();
    let now = run(&mut nodes, now, Duration::from_secs(1));
    let got: Vec<_> = events(&mut nodes[2])
        .into_iter()
        .filter(|e| matches!(e, Event::Received { .. }))
        .collect();
    assert_eq!(got.len(), 1, "three copies, one delivery: {got:?}");
    let done: Vec<_> = events(&mut nodes[0])
        .into_iter()
        .filter(|e| matches!(e, Event::Delivered { .. } | Event::SendFailed { .. }))
        .collect();
    assert_eq!(done.len(), 1);
    assert!(matches!(&done[0], Event::Delivered { id: d, to, .. } if *d == id && to.addr == 2));
    // After the target leaves, a send to it fails with an event, not silence.
    nodes[2].leave(now);
    let now = run(&mut nodes, now, Duration::from_secs(1));
    let id = nodes[0]
        .send(Target::Node(target), b"gone".to_vec(), 0, now)
        .unwrap();
    run(&mut nodes[..2], now, Duration::from_secs(12));
    let ev = events(&mut nodes[0]);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::SendFailed { id: d, .. } if *d == id)),
        "{ev:?}"
    );
}

/// A send given a deadline before the send timeout makes no attempt after
/// it and fails then.
#[test]
fn a_send_by_a_deadline_is_given_up_then() {
    let (mut nodes, now) = ring_of_three();
    for n in nodes.iter_mut() {
        events(n);
    }
    let target = nodes[2].id();
    // Node 2 hears nothing from here on: no confirmation comes.
    let deadline = now + Duration::from_millis(400);
    let id = nodes[0]
        .send_by(Target::Node(target), b"x".to_vec(), 0, deadline, now)
        .unwrap();
    let now = run(&mut nodes[..2], now, Duration::from_millis(350));
    assert_eq!(nodes[0].sends_in_flight(), 1);
    assert!(!events(&mut nodes[0])
        .iter()
        .any(|e| matches!(e, Event::SendFailed { .. })));
    let now = run(&mut nodes[..2], now, Duration::from_millis(100));
    let ev = events(&mut nodes[0]);
    assert!(
        ev.iter().any(|e| matches!(
            e,
            Event::SendFailed { id: d, reason: SendError::Timeout } if *d == id
        )),
        "{ev:?}"
    );
    assert_eq!(nodes[0].sends_in_flight(), 0);
    // Nothing more for that message: no transmit to node 2 from node 0.
    run(&mut nodes[..2], now, Duration::from_secs(2));
    assert_eq!(nodes[0].sends_in_flight(), 0);
}

/// Regression (fuzz target `node`, crash-0abc4d91): a stabilize request
/// retried for the first time was out of the pending table while the
/// backups were probed, so the probes could fill it and the retry went
/// back on top: `max_pending + 1` entries.
#[test]
fn retry_with_probes_never_exceeds_max_pending() {
    let mut now = Instant::now();
    let cfg = Config {
        max_pending: 4,
        successor_list_len: 3,
        ..Config::default()
    };
    let mut a = LocalNode::new(cfg.clone(), NodeRef::new(Hash::of("a"), 0u32), 1, now).unwrap();
    a.create(now);
    let peer = |name: &str, addr: u32| NodeRef::new(Hash::of(name), addr);
    let me = a.id();
    let mut list = vec![peer("b", 1), peer("c", 2), peer("d", 3)];
    list.sort_by_key(|n| me.distance_to(&n.id));
    a.table.set_successors(list);
    assert_eq!(a.successors().len(), 3);
    a.send_stabilize(now);
    a.ping(peer("x", 4), now);
    a.ping(peer("y", 5), now);
    assert_eq!(a.pending.len(), 3);
    for _ in 0..20 {
        now += cfg.request_timeout;
        a.handle_timeout(now);
        while a.poll_transmit().is_some() {}
        assert_eq!(a.check_invariants(), Ok(()));
    }
}

/// Fires `n`'s timers until it asks its successor for neighbours; returns
/// the txn of that `GetNeighbors`, dropping everything else it sent.
fn next_stabilize(n: &mut LocalNode<u32>, mut now: Instant) -> (u64, Instant) {
    let succ = n.successor().map(|s| s.addr);
    for _ in 0..100 {
        now += Duration::from_millis(100);
        if n.poll_timeout().is_some_and(|t| t <= now) {
            n.handle_timeout(now);
        }
        while let Some(t) = n.poll_transmit() {
            if Some(t.to) != succ {
                continue;
            }
            if let Ok(Message::GetNeighbors(g)) = Message::<u32>::decode(&t.bytes) {
                return (g.txn, now);
            }
        }
    }
    panic!("no stabilize within 10 s");
}

#[test]
fn nodes_heard_of_second_hand_enter_the_table_only_after_answering() {
    let (mut nodes, now) = ring_of_three();
    let a = &mut nodes[0];
    let succ = a.successor().cloned().expect("a has a successor");
    let (txn, now) = next_stabilize(a, now);
    let probes_before = a.stats().admission_probes;
    // The successor lies: it names two nodes nobody has heard from, one as
    // a backup successor (it answers probes) and one as a finger (silent).
    let honest = NodeRef::new(Hash::of("x"), 50);
    let silent = NodeRef::new(Hash::of("y"), 51);
    let reply = Message::Neighbors(Neighbors {
        txn,
        predecessor: Some(a.me().clone()),
        successors: vec![honest.clone()],
        fingers: vec![silent.clone()],
    });
    a.handle_datagram(now, succ.addr, &reply.encode());
    let named = |a: &LocalNode<u32>, addr: u32| a.peers().iter().any(|p| p.addr == addr);
    assert!(!named(a, 50) && !named(a, 51), "entered before answering");
    assert_eq!(a.stats().admission_probes - probes_before, 2);
    let sent: Vec<_> = std::iter::from_fn(|| a.poll_transmit()).collect();
    let pings = |to: u32| -> Vec<u64> {
        sent.iter()
            .filter(|t| t.to == to)
            .filter_map(|t| match Message::<u32>::decode(&t.bytes) {
                Ok(Message::Ping(p)) => Some(p.txn),
                _ => None,
            })
            .collect()
    };
    let probes = pings(50);
    assert_eq!(probes.len(), 1, "one probe of the backup");
    assert_eq!(pings(51).len(), 1, "one probe of the finger");
    // The backup answers from where it was said to be: it enters.
    let pong = Message::<u32>::Pong(Ping { txn: probes[0] }).encode();
    a.handle_datagram(now, 50, &pong);
    assert!(a.successors().iter().any(|s| s.id == honest.id));
    // The silent one never does, whatever the time.
    let mut later = now;
    for _ in 0..100 {
        later += Duration::from_millis(200);
        if a.poll_timeout().is_some_and(|t| t <= later) {
            a.handle_timeout(later);
        }
        while a.poll_transmit().is_some() {}
    }
    assert!(!named(a, 51));
    assert!(a.stats().admissions_failed >= 1);
    a.check_invariants().unwrap();
}

#[test]
fn a_message_naming_a_node_under_a_false_id_is_dropped() {
    fn id_of(addr: &u32) -> Hash {
        Hash::of(format!("node-{addr}"))
    }
    let now = Instant::now();
    let mut nodes: Vec<LocalNode<u32>> = (0..3)
        .map(|a| {
            LocalNode::new(Config::default(), NodeRef::new(id_of(&a), a), a as u64, now)
                .expect("valid")
                .with_identity(id_of)
        })
        .collect();
    nodes[0].create(now);
    nodes[1].join(0, now);
    nodes[2].join(0, now);
    let now = run(&mut nodes, now, Duration::from_secs(5));
    assert!(
        nodes.iter().all(|n| n.peers().len() == 2),
        "honest ids form a ring"
    );
    assert!(nodes.iter().all(|n| n.stats().dropped_bad_identity == 0));
    // Node 2 claims an id of its choosing (just after node 0, to become
    // its predecessor's successor): node 0 drops the notify.
    let before: Vec<Hash> = nodes[0].peers().iter().map(|p| p.id).collect();
    let mut chosen = nodes[0].id().to_bytes();
    chosen[31] = chosen[31].wrapping_sub(1);
    let liar = NodeRef::new(Hash::from_bytes(chosen), 2u32);
    let notify = Message::GetNeighbors(GetNeighbors {
        txn: 7,
        sender: liar,
        notify: true,
        want_fingers: false,
    });
    nodes[0].handle_datagram(now, 2, &notify.encode());
    assert_eq!(nodes[0].stats().dropped_bad_identity, 1);
    assert!(nodes[0].poll_transmit().is_none(), "no answer to a liar");
    let after: Vec<Hash> = nodes[0].peers().iter().map(|p| p.id).collect();
    assert_eq!(before, after);
}

/// Regression (`cicada bench`, 256 sends in flight): when the destination's
/// confirmation of the first attempt was lost, the retry excluded the first
/// hop of that attempt. For a destination that is a direct neighbour that
/// hop is the destination itself, the only way there: every retry was
/// refused at once, retried at once, and the send failed at its deadline
/// although the destination had the message (and the core spun meanwhile).
#[test]
fn retry_after_a_lost_confirmation_reaches_a_neighbour_again() {
    use crate::wire::Message;
    let (mut nodes, mut now) = joined_pair();
    let target = nodes[1].id();
    let id = nodes[0]
        .send(Target::Node(target), b"hi".to_vec(), 0, now)
        .unwrap();
    // Deliver a's datagrams, drop b's first confirmation.
    let mut dropped = 0;
    let mut timeouts = 0;
    let end = now + Duration::from_secs(12);
    while now < end {
        for i in 0..2 {
            while let Some(t) = nodes[i].poll_transmit() {
                let lost = i == 1
                    && dropped == 0
                    && matches!(Message::<u32>::decode(&t.bytes), Ok(Message::Delivered(_)));
                if lost {
                    dropped += 1;
                    continue;
                }
                nodes[t.to as usize].handle_datagram(now, i as u32, &t.bytes);
            }
        }
        match nodes[0].poll_timeout() {
            Some(t) if t <= now && timeouts < 10_000 => {
                timeouts += 1;
                nodes[0].handle_timeout(now);
                continue;
            }
            _ => {}
        }
        if nodes[1].poll_timeout().is_some_and(|t| t <= now) {
            nodes[1].handle_timeout(now);
        }
        now += Duration::from_millis(10);
    }
    assert_eq!(dropped, 1);
    let ev = events(&mut nodes[0]);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Delivered { id: d, .. } if *d == id)),
        "{ev:?}"
    );
    let received = events(&mut nodes[1])
        .into_iter()
        .filter(|e| matches!(e, Event::Received { .. }))
        .count();
    assert_eq!(received, 1, "handed up once");
    // 12 s of stabilize (1 s), request timeouts and one send retry: a few
    // dozen wake-ups, not one per step spent refusing the same retry.
    assert!(timeouts < 200, "{timeouts} wake-ups");
}

/// A one-hop send costs two datagrams: the destination's `Delivered` to
/// the node that handed it the message proves the hop, so no `HopAck` goes
/// besides it, and the sender neither retransmits nor reroutes.
#[test]
fn one_hop_send_is_confirmed_without_a_hop_ack() {
    use crate::wire::Message;
    let (mut nodes, now) = joined_pair();
    let b = nodes[1].id();
    let id = nodes[0]
        .send(Target::Node(b), b"hi".to_vec(), 0, now)
        .unwrap();
    let data: Vec<_> = std::iter::from_fn(|| nodes[0].poll_transmit()).collect();
    assert_eq!(data.len(), 1);
    nodes[1].handle_datagram(now, 0, &data[0].bytes);
    let replies: Vec<_> = std::iter::from_fn(|| nodes[1].poll_transmit()).collect();
    let kinds: Vec<_> = replies
        .iter()
        .map(|t| Message::<u32>::decode(&t.bytes).map(|m| std::mem::discriminant(&m)))
        .collect();
    assert_eq!(replies.len(), 1, "{kinds:?}");
    assert!(matches!(
        Message::<u32>::decode(&replies[0].bytes),
        Ok(Message::Delivered(_))
    ));
    nodes[0].handle_datagram(now, 1, &replies[0].bytes);
    assert!(events(&mut nodes[0])
        .iter()
        .any(|e| matches!(e, Event::Delivered { id: d, .. } if *d == id)));
    // The hop is proven: past the request timeout nothing is sent again.
    let later = now + nodes[0].config().request_timeout * 2;
    nodes[0].handle_timeout(later);
    let again: Vec<_> = std::iter::from_fn(|| nodes[0].poll_transmit())
        .filter(|t| matches!(Message::<u32>::decode(&t.bytes), Ok(Message::Data(_))))
        .collect();
    assert!(again.is_empty(), "{} Data sent again", again.len());
}

#[test]
fn a_burst_from_one_origin_is_confirmed_in_one_datagram_per_drain() {
    use crate::wire::Message;
    let (mut nodes, now) = joined_pair();
    let b = nodes[1].id();
    let max = crate::config::MAX_LIST_ON_WIRE;
    let count = max + 5;
    let ids: Vec<_> = (0..count)
        .map(|i| {
            nodes[0]
                .send(Target::Node(b), vec![i as u8; 10], 0, now)
                .unwrap()
        })
        .collect();
    let data: Vec<_> = std::iter::from_fn(|| nodes[0].poll_transmit()).collect();
    assert_eq!(data.len(), count);
    for d in &data {
        nodes[1].handle_datagram(now, 0, &d.bytes);
    }
    // One full Delivered left as soon as it held the most a list may, the
    // rest together at the drain; no HopAck.
    assert_eq!(nodes[1].queued_transmits(), 2);
    let replies: Vec<_> = std::iter::from_fn(|| nodes[1].poll_transmit()).collect();
    let sizes: Vec<usize> = replies
        .iter()
        .map(|t| match Message::<u32>::decode(&t.bytes) {
            Ok(Message::Delivered(d)) => d.msgs.len(),
            other => panic!("not a Delivered: {other:?}"),
        })
        .collect();
    assert_eq!(sizes, vec![max, 5]);
    assert_eq!(events(&mut nodes[1]).len(), count);
    for r in &replies {
        nodes[0].handle_datagram(now, 1, &r.bytes);
    }
    let delivered: Vec<_> = events(&mut nodes[0])
        .into_iter()
        .filter_map(|e| match e {
            Event::Delivered { id, hops, .. } => Some((id, hops)),
            _ => None,
        })
        .collect();
    assert_eq!(delivered.len(), count);
    assert!(ids.iter().all(|id| delivered.iter().any(|(d, _)| d == id)));
    // Each hop is proven by its confirmation: nothing is sent again.
    let later = now + nodes[0].config().request_timeout * 2;
    nodes[0].handle_timeout(later);
    let again = std::iter::from_fn(|| nodes[0].poll_transmit())
        .filter(|t| matches!(Message::<u32>::decode(&t.bytes), Ok(Message::Data(_))))
        .count();
    assert_eq!(again, 0);
}

#[test]
fn the_tables_of_a_burst_are_given_back_once_it_is_over() {
    let (mut nodes, now) = joined_pair();
    let b = nodes[1].id();
    for i in 0..500 {
        nodes[0]
            .send(Target::Node(b), vec![i as u8; 10], 0, now)
            .unwrap();
    }
    let peak = (nodes[0].outgoing.capacity(), nodes[0].pending.capacity());
    assert!(peak.0 >= 500 && peak.1 >= 500, "{peak:?}");
    let later = run(&mut nodes, now, Duration::from_secs(3));
    assert_eq!(nodes[0].sends_in_flight(), 0);
    let _ = later;
    let after = (nodes[0].outgoing.capacity(), nodes[0].pending.capacity());
    assert!(
        after.0 <= 16 && after.1 <= 16,
        "kept {after:?} after a peak of {peak:?}"
    );
}

/// Regression: fragments were marked in the dedup window before reassembly
/// took them, so a fragment that a full reassembly refused was taken for a
/// duplicate on every retry and the message never completed (in `cicada
/// bench`, 16 KiB sends in 1,200-byte fragments, 256 in flight, can fill
/// the 4 MiB reassembly). Now only whole
/// messages are marked, and the retry after the reassembly has room
/// completes it.
#[test]
fn fragments_refused_by_a_full_reassembly_are_taken_from_a_retry() {
    let now = Instant::now();
    let small = Config {
        max_fragment: 100,
        max_payload: 1000,
        reassembly_bytes: 1000
            + crate::delivery::PARTIAL_OVERHEAD
            + crate::delivery::SLOT_OVERHEAD * 10,
        ..Config::default()
    };
    let mut nodes = vec![
        LocalNode::new(small.clone(), NodeRef::new(Hash::of("a"), 0u32), 0, now).unwrap(),
        LocalNode::new(small, NodeRef::new(Hash::of("b"), 1u32), 1, now).unwrap(),
    ];
    nodes[0].create(now);
    nodes[1].join(0, now);
    let now = run(&mut nodes, now, Duration::from_secs(5));
    for n in nodes.iter_mut() {
        events(n);
    }
    // Another origin's half-received message fills most of b's reassembly.
    nodes[1]
        .reassembly
        .add(Hash::of("x"), 1, 0, 10, vec![0; 100], now);
    let b = nodes[1].id();
    let payload: Vec<u8> = (0..1000).map(|i| i as u8).collect();
    let id = nodes[0]
        .send(Target::Node(b), payload.clone(), 0, now)
        .unwrap();
    let now = run(&mut nodes, now, Duration::from_secs(1));
    assert!(nodes[1].stats().reassembly_refused > 0, "the bound was hit");
    // The other message is abandoned (as if aged out): room again before
    // a's first retry.
    nodes[1].reassembly.expire(now + Duration::from_secs(3600));
    run(&mut nodes, now, Duration::from_secs(8));
    let got: Vec<_> = events(&mut nodes[1])
        .into_iter()
        .filter_map(|e| match e {
            Event::Received { payload, .. } => Some(payload),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 1, "handed up once");
    assert!(got[0] == payload, "whole");
    let ev = events(&mut nodes[0]);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Delivered { id: d, .. } if *d == id)),
        "{ev:?}"
    );
}

/// The three nodes of `ring_of_three` by address, in ring order of ids.
fn in_ring_order(nodes: &[LocalNode<u32>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|&i| nodes[i].id());
    order
}

#[test]
fn an_owner_check_is_answered_from_the_predecessor() {
    use crate::wire::{OwnerCheck, Owns};
    let (mut nodes, now) = ring_of_three();
    let order = in_ring_order(&nodes);
    let (pred, x) = (order[0], order[1]);
    let (p_id, x_id) = (nodes[pred].id(), nodes[x].id());
    let cases = [
        (x_id, true),                              // the owner's own id is its own
        (p_id.wrapping_add(&Hash::pow2(0)), true), // just past the predecessor
        (p_id, false),                             // the predecessor's id is not
        (nodes[order[2]].id(), false),             // nor the third node's
    ];
    for (txn, (key, want)) in cases.into_iter().enumerate() {
        let txn = txn as u64 + 1;
        let ask = Message::<u32>::OwnerCheck(OwnerCheck { txn, key }).encode();
        nodes[x].handle_datagram(now, 9, &ask);
        let replies: Vec<_> = std::iter::from_fn(|| nodes[x].poll_transmit())
            .filter(|t| t.to == 9)
            .collect();
        assert_eq!(replies.len(), 1, "one answer to the check of {key}");
        assert!(replies[0].bytes.len() <= ask.len(), "no amplification");
        assert_eq!(
            Message::<u32>::decode(&replies[0].bytes),
            Ok(Message::Owns(Owns { txn, yes: want })),
            "is {key} owned by {x_id}?"
        );
    }
}

/// A lookup answer naming a live node that is not the key's owner (what a
/// route past a node wrongly thought dead gives) is not reported: the
/// named node disowns the key, and the lookup runs again and finds the
/// true owner.
#[test]
fn a_lookup_answer_naming_a_node_that_disowns_the_key_is_not_reported() {
    use crate::wire::Found;
    let (mut nodes, now) = ring_of_three();
    let order = in_ring_order(&nodes);
    // The key is the third node's id: the origin routes it through the
    // second node (it answers only keys up to its own successor itself).
    let (origin, wrong, owner) = (order[0], order[1], order[2]);
    let key = nodes[owner].id();
    let id = nodes[origin].lookup(key, now);
    // The route's own messages are lost; a forged answer names `wrong`,
    // which is alive, but the key lies past it.
    while nodes[origin].poll_transmit().is_some() {}
    let found = Found {
        lookup: id.0,
        key,
        owner: nodes[wrong].me().clone(),
        hops: 1,
    };
    nodes[origin].handle_datagram(now, wrong as u32, &Message::Found(found).encode());
    let checks: Vec<_> = std::iter::from_fn(|| nodes[origin].poll_transmit()).collect();
    assert_eq!(checks.len(), 1, "one OwnerCheck to the named owner");
    assert_eq!(checks[0].to, wrong as u32);
    nodes[wrong].handle_datagram(now, origin as u32, &checks[0].bytes);
    let answer = nodes[wrong].poll_transmit().expect("an answer");
    nodes[origin].handle_datagram(now, wrong as u32, &answer.bytes);
    assert!(
        !events(&mut nodes[origin])
            .iter()
            .any(|e| matches!(e, Event::LookupDone { .. })),
        "a disowned answer is not reported"
    );
    assert_eq!(nodes[origin].stats().lookup_owners_disowned, 1);
    // Looked up again, it finds the owner.
    run(&mut nodes, now, Duration::from_secs(3));
    let done: Vec<_> = events(&mut nodes[origin])
        .into_iter()
        .filter_map(|e| match e {
            Event::LookupDone { id: d, owner, .. } if d == id => Some(owner.addr),
            _ => None,
        })
        .collect();
    assert_eq!(done, vec![owner as u32], "the true owner, once");
}

#[test]
fn a_send_to_a_node_that_has_just_joined_is_not_refused_for_good() {
    let now = Instant::now();
    let mut nodes = vec![node("a", 0, now), node("b", 1, now)];
    nodes[0].create(now);
    events(&mut nodes[0]);
    nodes[1].join(0, now);
    // Datagrams go one way at a time, until b has joined.
    let mut joined = false;
    for _ in 0..20 {
        for i in [1, 0] {
            let out: Vec<_> = std::iter::from_fn(|| nodes[i].poll_transmit()).collect();
            for t in out {
                nodes[t.to as usize].handle_datagram(now, i as u32, &t.bytes);
            }
            if i == 1 {
                continue;
            }
            joined = events(&mut nodes[1])
                .iter()
                .any(|e| matches!(e, Event::Joined { .. }));
            if joined {
                break;
            }
        }
        if joined {
            break;
        }
    }
    assert!(joined, "b never joined");
    let b = nodes[1].id();
    // The moment this is about: a has not admitted b yet.
    assert!(nodes[0].peers().iter().all(|p| p.id != b));
    let id = nodes[0]
        .send(Target::Node(b), b"hello".to_vec(), 0, now)
        .unwrap();
    run(&mut nodes, now, Duration::from_secs(3));
    let ev = events(&mut nodes[0]);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Delivered { id: d, .. } if *d == id)),
        "{ev:?}"
    );
}

/// Datagrams handed out by every node so far.
fn sent_total(nodes: &[LocalNode<u32>]) -> u64 {
    nodes.iter().map(|n| n.stats().datagrams_out).sum()
}

#[test]
fn an_unconfirmed_datagram_arrives_once_and_nothing_comes_back() {
    let (mut nodes, now) = ring_of_three();
    for n in nodes.iter_mut() {
        events(n);
    }
    for (to, target) in [
        (2usize, Target::Node(nodes[2].id())),
        (1, Target::Node(nodes[1].id())),
    ] {
        let before = sent_total(&nodes);
        nodes[0].send_datagram(target, b"tick", now).unwrap();
        settle(&mut nodes, now);
        let got: Vec<_> = events(&mut nodes[to])
            .into_iter()
            .filter_map(|e| match e {
                Event::Received {
                    id, payload, hops, ..
                } => Some((id, payload, hops)),
                _ => None,
            })
            .collect();
        assert_eq!(got.len(), 1, "{got:?}");
        let (id, payload, hops) = &got[0];
        assert_eq!((id.0, &payload[..]), (0, &b"tick"[..]));
        // One datagram per hop and nothing else: no hop acknowledgement,
        // no confirmation.
        assert_eq!(sent_total(&nodes) - before, *hops as u64);
        assert!(events(&mut nodes[0]).is_empty());
    }
    // Nothing is kept for it anywhere.
    assert!(nodes.iter().all(|n| n.pending_len() == 0));
    assert_eq!(nodes[0].stats().datagrams_sent, 2);
}

#[test]
fn an_unconfirmed_datagram_to_a_key_reaches_its_owner() {
    let (mut nodes, now) = ring_of_three();
    for n in nodes.iter_mut() {
        events(n);
    }
    let key = Hash::of("some key");
    let owner = nodes[0].route(&key).0.map(|o| o.addr);
    nodes[1].send_datagram(Target::Key(key), b"k", now).unwrap();
    settle(&mut nodes, now);
    let at: Vec<usize> = (0..3)
        .filter(|i| {
            events(&mut nodes[*i])
                .iter()
                .any(|e| matches!(e, Event::Received { payload, .. } if payload[..] == b"k"[..]))
        })
        .collect();
    assert_eq!(at.len(), 1);
    let mut ids: Vec<(Hash, usize)> = (0..3).map(|i| (nodes[i].id(), i)).collect();
    ids.sort();
    let expect = ids.iter().find(|(id, _)| *id >= key).unwrap_or(&ids[0]).1;
    assert_eq!(at[0], expect, "route said {owner:?}");
}

#[test]
fn unconfirmed_datagrams_refuse_what_they_cannot_carry() {
    let now = Instant::now();
    let mut a = node("a", 0, now);
    a.create(now);
    let max = a.config().max_fragment;
    assert_eq!(
        a.send_datagram(Target::Key(Hash::ZERO), &vec![0; max + 1], now),
        Err(SendError::TooLarge { size: max + 1, max })
    );
    // Alone: another node's id is nobody's, said at once.
    assert_eq!(
        a.send_datagram(Target::Node(Hash::of("nobody")), b"x", now),
        Err(SendError::NoSuchNode)
    );
    // In a ring, the owner of the id drops it and counts it; nobody answers.
    let (mut nodes, now) = ring_of_three();
    let before = sent_total(&nodes);
    nodes[0]
        .send_datagram(Target::Node(Hash::of("nobody")), b"x", now)
        .unwrap();
    settle(&mut nodes, now);
    let dropped: u64 = nodes.iter().map(|n| n.stats().datagrams_dropped).sum();
    assert_eq!(dropped, 1);
    assert!(sent_total(&nodes) - before <= 2, "something answered");
}

#[test]
fn a_split_or_broadcast_datagram_without_an_id_is_dropped() {
    use crate::wire::{Data, DataHeader, Mode};
    let (mut nodes, now) = ring_of_three();
    for n in nodes.iter_mut() {
        events(n);
    }
    let origin = nodes[0].me().clone();
    let target = nodes[1].id();
    for (mode, frags) in [(Mode::Node, 2u16), (Mode::Broadcast, 1)] {
        let bytes = Message::Data(Data {
            header: DataHeader {
                txn: 0,
                msg: 0,
                origin: origin.clone(),
                target,
                mode,
                limit: target,
                hops: 1,
                last_hop: true,
                frag: 0,
                frags,
            },
            payload: bytes::Bytes::from_static(b"x"),
        })
        .encode();
        nodes[1].handle_datagram(now, 0, &bytes);
    }
    assert!(events(&mut nodes[1])
        .iter()
        .all(|e| !matches!(e, Event::Received { .. })));
    assert_eq!(nodes[1].stats().datagrams_dropped, 2);
    assert!(
        nodes[1].poll_transmit().is_none(),
        "a datagram was answered"
    );
}

/// Regression (the bench's routed-sends stall): `a` still takes `b` for
/// its successor while two nodes, `n` then `p`, have joined between them
/// (`a` has not stabilized since).
/// A send from `a` to `n` goes to `b` as its last hop; `b` does not own
/// `n`, and its fingers lead back to `a`. It bounced between the two until
/// the hop limit refused it, for every send, until `a` stabilized. Now `b`
/// hands it to its predecessor, nearer the key, and tells `a` of `p`.
#[test]
fn a_last_hop_past_the_key_goes_back_through_the_predecessor() {
    let (mut nodes, now) = ring_of(&["a", "b", "c", "d"]);
    let order = in_ring_order(&nodes);
    let (a, n, p, b) = (order[0], order[1], order[2], order[3]);
    for node in nodes.iter_mut() {
        events(node);
    }
    let (n_id, p_id) = (nodes[n].id(), nodes[p].id());
    nodes[a].table.remove(&n_id);
    nodes[a].table.remove(&p_id);
    // `b`'s list holds only `a` (as in a ring longer than the list): the
    // nearest node it knows before `n` is `a`.
    let a_ref = nodes[a].me().clone();
    nodes[b].table.set_successors(vec![a_ref]);
    assert_eq!(nodes[a].successor().map(|s| s.addr), Some(b as u32));
    assert_eq!(nodes[b].predecessor().map(|s| s.addr), Some(p as u32));

    // A burst: every send overshoots before `a` hears of `p`.
    let ids: Vec<_> = (0..10u8)
        .map(|i| nodes[a].send(Target::Node(n_id), vec![i], 0, now).unwrap())
        .collect();
    // No timer fires: nothing stabilizes `a` but what the sends cause.
    settle(&mut nodes, now);
    let got = events(&mut nodes[n])
        .into_iter()
        .filter(|e| matches!(e, Event::Received { .. }))
        .count();
    assert_eq!(got, 10);
    let delivered: Vec<_> = events(&mut nodes[a])
        .into_iter()
        .filter_map(|e| match e {
            Event::Delivered { id, hops, .. } => Some((id, hops)),
            _ => None,
        })
        .collect();
    assert_eq!(delivered.len(), 10, "{delivered:?}");
    for (id, hops) in delivered {
        assert!(ids.contains(&id));
        assert!(hops <= 3, "a -> b -> p -> n, not round a loop: {hops}");
    }
    let refused: u64 = nodes.iter().map(|x| x.stats().undeliverable).sum();
    assert_eq!(refused, 0, "no refusal on the way");
    assert_eq!(
        nodes[b].stats().stale_successor_hints,
        1,
        "one hint a burst"
    );
    // The hint reached `a`: its successor is nearer than `b` now.
    let succ = nodes[a].successor().map(|s| s.addr);
    assert!(succ == Some(n as u32) || succ == Some(p as u32), "{succ:?}");
}

/// A send to a node the table holds (here the predecessor, which the
/// successor list does not reach) goes straight to it as the last hop,
/// not through the nearest node before it. That node may be silent: the
/// send would wait for it to time out, then find no other way on and wait
/// for the next attempt (2.5 s in the Ouroboros test that pauses a node),
/// though its target is known and answering.
#[test]
fn a_send_to_a_node_in_the_table_goes_straight_to_it() {
    let (mut nodes, now) = ring_of_three();
    let order = in_ring_order(&nodes);
    let (x, y, z) = (order[0], order[1], order[2]);
    for node in nodes.iter_mut() {
        events(node);
    }
    // `x`'s list reaches only `y` (as in a ring longer than the list);
    // `z` is its predecessor.
    let y_ref = nodes[y].me().clone();
    nodes[x].table.set_successors(vec![y_ref]);
    assert_eq!(nodes[x].predecessor().map(|p| p.addr), Some(z as u32));
    let z_id = nodes[z].id();
    for i in 0..10u8 {
        nodes[x].send(Target::Node(z_id), vec![i], 0, now).unwrap();
    }
    // `y` is paused: whatever is sent to it is lost. No timer fires.
    for _ in 0..10 {
        for i in [x, z] {
            while let Some(t) = nodes[i].poll_transmit() {
                if t.to as usize != y {
                    nodes[t.to as usize].handle_datagram(now, i as u32, &t.bytes);
                }
            }
        }
    }
    let received = events(&mut nodes[z])
        .into_iter()
        .filter(|e| matches!(e, Event::Received { .. }))
        .count();
    assert_eq!(received, 10, "z has every message without a timeout");
    let hops: Vec<u32> = events(&mut nodes[x])
        .into_iter()
        .filter_map(|e| match e {
            Event::Delivered { hops, .. } => Some(hops),
            _ => None,
        })
        .collect();
    assert_eq!(hops, vec![1; 10], "each confirmed, in one hop");
}

/// A destination that stops answering with many requests outstanding is
/// sent a few of them again at each request timeout, not all: the rest
/// wait for it to answer anything, and then go at once. Its requests
/// still run out of retries when they did before.
#[test]
fn a_silent_destination_gets_a_few_retransmissions_and_the_rest_when_it_answers() {
    use crate::wire::Message;
    let (mut nodes, start) = joined_pair();
    let b = nodes[1].id();
    let timeout = nodes[0].config().request_timeout;
    let ids: Vec<_> = (0..100u8)
        .map(|i| {
            nodes[0]
                .send(Target::Node(b), vec![i; 10], 0, start)
                .expect("accepted")
        })
        .collect();
    let is_data = |bytes: &[u8]| matches!(Message::<u32>::decode(bytes), Ok(Message::Data(_)));
    // b is paused: whatever a sends is lost, and b says nothing.
    let data_out = |n: &mut LocalNode<u32>| {
        std::iter::from_fn(|| n.poll_transmit())
            .filter(|t| is_data(&t.bytes))
            .count()
    };
    assert_eq!(data_out(&mut nodes[0]), 100, "the first copies");
    let mut now = start + timeout + Duration::from_millis(1);
    nodes[0].handle_timeout(now);
    let again = data_out(&mut nodes[0]);
    assert_eq!(
        again,
        super::RETRANSMIT_BURST as usize,
        "retransmitted at the first timeout"
    );
    assert_eq!(nodes[0].stats().retransmits_held, 100 - again as u64);

    // b comes back; from now on everything is delivered. The next timeout
    // retransmits the few again, b confirms them, and that answer sends
    // the held ones at once: every message arrives, each handed up once.
    now += timeout;
    let end = now + Duration::from_secs(1);
    let mut sent_back = 0;
    while now < end {
        for n in nodes.iter_mut() {
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout(now);
            }
        }
        for i in 0..2 {
            while let Some(t) = nodes[i].poll_transmit() {
                if i == 0 && is_data(&t.bytes) {
                    sent_back += 1;
                }
                nodes[t.to as usize].handle_datagram(now, i as u32, &t.bytes);
            }
        }
        now += Duration::from_millis(10);
    }
    let delivered: Vec<_> = events(&mut nodes[0])
        .into_iter()
        .filter_map(|e| match e {
            Event::Delivered { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(
        delivered.len(),
        100,
        "{sent_back} Data sent after b came back"
    );
    assert!(ids.iter().all(|id| delivered.contains(id)));
    let received = events(&mut nodes[1])
        .into_iter()
        .filter(|e| matches!(e, Event::Received { .. }))
        .count();
    assert_eq!(received, 100, "each handed up once");
    // The few went twice while b was away; the rest once after it answered.
    assert_eq!(sent_back, 100, "Data sent after b came back");
}

/// With nothing answered, requests held back fail when their retries run
/// out, as they would have if sent: holding them never delays a verdict.
#[test]
fn held_retransmissions_fail_no_later_than_sent_ones() {
    let (mut nodes, start) = joined_pair();
    let b = nodes[1].id();
    let cfg = nodes[0].config().clone();
    for i in 0..50u8 {
        nodes[0]
            .send(Target::Node(b), vec![i; 10], 0, start)
            .expect("accepted");
    }
    // The hop requests that carry the 50 messages to b.
    let hops: Vec<u64> = nodes[0]
        .pending
        .iter()
        .filter(|(_, p)| matches!(p.waiting, super::Waiting::Data { .. }))
        .map(|(txn, _)| *txn)
        .collect();
    assert_eq!(hops.len(), 50);
    // b is gone: nothing reaches it, nothing comes back.
    let mut now = start;
    let verdict = start + cfg.request_timeout * (cfg.request_retries + 1);
    let mut failed_hops_at = None;
    while now <= verdict + Duration::from_millis(20) {
        while nodes[0].poll_transmit().is_some() {}
        if nodes[0].poll_timeout().is_some_and(|t| t <= now) {
            nodes[0].handle_timeout(now);
        }
        let left = hops
            .iter()
            .filter(|t| nodes[0].pending.contains_key(t))
            .count();
        if left == 0 && failed_hops_at.is_none() {
            failed_hops_at = Some(now);
        }
        now += Duration::from_millis(5);
    }
    assert!(nodes[0].stats().retransmits_held > 0, "some were held");
    let at = failed_hops_at.expect("every request to b ran out of retries");
    assert!(
        at <= verdict + Duration::from_millis(10),
        "the last request to b ended {:?} after the verdict was due",
        at.saturating_duration_since(verdict)
    );
}

/// A broadcast child that does not acknowledge has its arc re-covered at
/// the hand-over's first timeout, while the child is still asked again;
/// when the child's retries run out the arc is not re-covered twice.
#[test]
fn a_silent_broadcast_child_has_its_arc_re_covered_at_the_first_timeout() {
    use crate::wire::Mode;
    let (mut nodes, start) = ring_of(&["a", "b", "c", "d"]);
    let order = in_ring_order(&nodes);
    let (x, y) = (order[0], order[1]);
    for node in nodes.iter_mut() {
        events(node);
    }
    let y_id = nodes[y].id();
    // Delivers everything but what goes to `y` (which is silent); returns
    // the broadcast copies `x` sent: (to, target, last hop).
    let exchange = |nodes: &mut [LocalNode<u32>], now: Instant| {
        let mut sent = Vec::new();
        settle_except(nodes, now, y, |i, t| {
            if let (true, Ok(Message::Data(d))) = (i == x, Message::<u32>::decode(&t.bytes)) {
                if d.header.mode == Mode::Broadcast {
                    sent.push((t.to, d.header.target, d.header.last_hop));
                }
            }
        });
        sent
    };
    nodes[x].broadcast(vec![9u8; 20], start).expect("accepted");
    let first = exchange(&mut nodes, start);
    assert!(first.contains(&(y as u32, y_id, true)), "{first:?}");
    // At the first timeout `y` is asked again, and its arc goes to
    // someone else at once, routed to the first live node at or after
    // `y`'s id.
    let timeout = nodes[x].config().request_timeout;
    let mut now = start + timeout + Duration::from_millis(1);
    nodes[x].handle_timeout(now);
    let again = exchange(&mut nodes, now);
    assert!(
        again.contains(&(y as u32, y_id, true)),
        "retried: {again:?}"
    );
    let rerouted: Vec<_> = again
        .iter()
        .filter(|(to, target, _)| *to != y as u32 && *target == y_id)
        .collect();
    assert_eq!(rerouted.len(), 1, "y's arc re-covered once: {again:?}");
    // Its retries run out later; the arc is not re-covered again.
    let retries = nodes[x].config().request_retries;
    for _ in 0..retries {
        now += timeout;
        nodes[x].handle_timeout(now);
        let later = exchange(&mut nodes, now);
        assert!(
            later.iter().all(|(to, _, _)| *to == y as u32),
            "only y is asked again: {later:?}"
        );
    }
}

fn received(n: &mut LocalNode<u32>) -> Vec<Vec<u8>> {
    events(n)
        .into_iter()
        .filter_map(|e| match e {
            Event::Received { payload, .. } => Some(payload.to_vec()),
            _ => None,
        })
        .collect()
}

fn outcomes(n: &mut LocalNode<u32>) -> Vec<Event<u32>> {
    events(n)
        .into_iter()
        .filter(|e| matches!(e, Event::Delivered { .. } | Event::SendFailed { .. }))
        .collect()
}

/// A destination whose application has no room neither hands a message up
/// nor confirms it; the origin retries, and the message is handed up and
/// confirmed exactly once when room appears. Duplicates and fragments obey
/// the same rule.
#[test]
fn a_message_is_confirmed_only_once_the_application_has_room_for_it() {
    let (mut nodes, now) = ring_of_three();
    for n in nodes.iter_mut() {
        events(n);
    }
    nodes[2].set_receive_room(0);
    let target = Target::Node(nodes[2].id());
    let big = vec![7u8; Config::default().max_fragment * 3 + 5];
    let small = nodes[0].send(target, b"small".to_vec(), 2, now).unwrap();
    let split = nodes[0].send(target, big.clone(), 0, now).unwrap();
    let now = run(&mut nodes, now, Duration::from_secs(3));
    assert!(received(&mut nodes[2]).is_empty(), "handed up without room");
    assert!(outcomes(&mut nodes[0]).is_empty(), "confirmed without room");
    assert!(nodes[2].stats().refused_busy >= 2);

    // Room for one: exactly one of the two is taken at its next attempt.
    nodes[2].set_receive_room(1);
    let now = run(&mut nodes, now, Duration::from_secs(3));
    let first = received(&mut nodes[2]);
    assert_eq!(first.len(), 1, "room for one, so one");
    let done = outcomes(&mut nodes[0]);
    assert_eq!(done.len(), 1);
    // Polled, so room for one again: the other one comes.
    let now = run(&mut nodes, now, Duration::from_secs(3));
    let second = received(&mut nodes[2]);
    assert_eq!(second.len(), 1);
    let mut all = [first, second].concat();
    all.sort_by_key(|m| m.len());
    assert!(
        all[0] == b"small" && all[1] == big,
        "the two messages, whole"
    );
    let mut done = [done, outcomes(&mut nodes[0])].concat();
    done.sort_by_key(|e| match e {
        Event::Delivered { id, .. } => id.0,
        _ => u64::MAX,
    });
    let mut ids = [small.0, split.0];
    ids.sort();
    for (e, id) in done.iter().zip(ids) {
        assert!(
            matches!(e, Event::Delivered { id: d, .. } if d.0 == id),
            "{e:?}"
        );
    }
    // Nothing more: every retry after the confirmation is a duplicate.
    run(&mut nodes, now, Duration::from_secs(12));
    assert!(received(&mut nodes[2]).is_empty());
    assert!(outcomes(&mut nodes[0]).is_empty());
}

/// A destination that never makes room: the send fails with
/// `ReceiverBusy` at its deadline, and nothing was handed up.
#[test]
fn a_destination_that_never_makes_room_fails_the_send_as_busy() {
    let (mut nodes, now) = ring_of_three();
    for n in nodes.iter_mut() {
        events(n);
    }
    nodes[1].set_receive_room(0);
    let target = Target::Node(nodes[1].id());
    let id = nodes[0].send(target, b"x".to_vec(), 1, now).unwrap();
    run(&mut nodes, now, Duration::from_secs(12));
    assert!(received(&mut nodes[1]).is_empty());
    let done = outcomes(&mut nodes[0]);
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(
        matches!(&done[0], Event::SendFailed { id: d, reason: SendError::ReceiverBusy } if *d == id),
        "{done:?}"
    );
    // Busy answers back off to at most one attempt per 125-250 ms, for each
    // of the two copies: nowhere near the 2,000 of polling every 10 ms.
    let refused = nodes[1].stats().refused_busy;
    assert!((2..=200).contains(&refused), "{refused} busy refusals");
}

/// Broadcasts and unconfirmed datagrams that find no room are dropped and
/// counted; one the application has room for is handed up.
#[test]
fn unconfirmed_messages_without_room_are_dropped_and_counted() {
    let (mut nodes, now) = ring_of_three();
    for n in nodes.iter_mut() {
        events(n);
    }
    nodes[1].set_receive_room(0);
    nodes[0].broadcast(b"all".to_vec(), now).unwrap();
    let target = Target::Node(nodes[1].id());
    nodes[0].send_datagram(target, b"dg", now).unwrap();
    run(&mut nodes, now, Duration::from_secs(1));
    assert!(received(&mut nodes[1]).is_empty());
    assert_eq!(nodes[1].stats().dropped_no_room, 2);
    assert_eq!(received(&mut nodes[2]), vec![b"all".to_vec()]);
}

fn id_of(addr: &u32) -> Hash {
    Hash::of(format!("node-{addr}"))
}

/// A node with a placeholder address (a socket bound to all interfaces),
/// id rule `id_of`.
fn provisional(addr: u32, now: Instant) -> LocalNode<u32> {
    let mut n = LocalNode::new(Config::default(), NodeRef::new(id_of(&addr), addr), 7, now)
        .expect("default config is valid")
        .with_identity(id_of);
    n.set_provisional();
    n
}

fn ruled(addr: u32, now: Instant) -> LocalNode<u32> {
    LocalNode::new(
        Config::default(),
        NodeRef::new(id_of(&addr), addr),
        addr as u64,
        now,
    )
    .expect("default config is valid")
    .with_identity(id_of)
}

/// A joiner that does not know its address learns it from the bootstrap
/// before anything else, takes the id derived from it, and joins under it.
#[test]
fn a_provisional_joiner_learns_its_address_from_the_bootstrap() {
    let now = Instant::now();
    let mut nodes = vec![ruled(0, now), provisional(999, now)];
    nodes[0].create(now);
    nodes[1].join(0, now);
    let now = run(&mut nodes, now, Duration::from_secs(3));
    let ev = events(&mut nodes[1]);
    assert!(
        ev.iter().any(
            |e| matches!(e, Event::AddressLearned { me } if me.addr == 1 && me.id == id_of(&1))
        ),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|e| matches!(e, Event::Joined { .. })),
        "{ev:?}"
    );
    assert!(!nodes[1].is_provisional());
    assert_eq!(nodes[1].me().addr, 1);
    assert_eq!(nodes[0].successor().map(|s| s.addr), Some(1));
    assert_eq!(nodes[0].successor().map(|s| s.id), Some(id_of(&1)));
    assert_eq!(nodes[1].successor().map(|s| s.addr), Some(0));
    assert_eq!(nodes[0].stats().dropped_bad_identity, 0);
    let _ = now;
}

/// A node that starts a swarm without knowing its address answers nothing
/// until its first contact has told it; then that contact's join goes
/// through (its retries), and the ring holds both true addresses.
#[test]
fn a_provisional_starter_learns_its_address_from_its_first_contact() {
    let now = Instant::now();
    let mut nodes = vec![provisional(999, now), ruled(1, now), ruled(2, now)];
    nodes[0].create(now);
    events(&mut nodes[0]);
    nodes[1].join(0, now);
    let now = run(&mut nodes, now, Duration::from_secs(3));
    nodes[2].join(0, now);
    run(&mut nodes, now, Duration::from_secs(5));
    let ev = events(&mut nodes[0]);
    assert!(
        ev.iter().any(
            |e| matches!(e, Event::AddressLearned { me } if me.addr == 0 && me.id == id_of(&0))
        ),
        "{ev:?}"
    );
    assert!(nodes[0].stats().dropped_provisional > 0);
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n.me().addr, i as u32);
        assert_eq!(n.peers().len(), 2, "node {i}: {:?}", n.peers());
        assert!(n.peers().iter().all(|p| p.id == id_of(&p.addr)), "node {i}");
    }
}

/// `observe` reports where a peer sees this node; an Observe's answer is
/// never larger than the request (amplification).
#[test]
fn observe_reports_the_address_a_peer_sees() {
    let (mut nodes, now) = joined_pair();
    nodes[0].observe(1, now);
    let mut sizes = Vec::new();
    settle_except(&mut nodes, now, usize::MAX, |_, t| {
        sizes.push(t.bytes.len())
    });
    let ev = events(&mut nodes[0]);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Observed { by: 1, seen: 0 })),
        "{ev:?}"
    );
    assert_eq!(sizes.len(), 2);
    assert!(
        sizes[1] <= sizes[0],
        "reply {} > request {}",
        sizes[1],
        sizes[0]
    );
}

/// A joiner behind a NAT that lets in only the peers it has sent to joins
/// through any bootstrap, not only through its future predecessor: the
/// bootstrap relays the answer of its lookup.
#[test]
fn a_joiner_behind_a_filtering_nat_joins_through_any_bootstrap() {
    let names = ["a", "b", "c", "d", "e", "f"];
    let (mut nodes, mut now) = ring_of(&names);
    let joiner = nodes.len();
    nodes.push(node("behind-nat", joiner as u32, now));
    // The bootstrap: a node that will not be the joiner's predecessor.
    let order = {
        let mut ids: Vec<(Hash, usize)> =
            nodes.iter().enumerate().map(|(i, n)| (n.id(), i)).collect();
        ids.sort();
        ids
    };
    let at = order.iter().position(|(_, i)| *i == joiner).unwrap();
    let predecessor = order[(at + order.len() - 1) % order.len()].1;
    let bootstrap = (0..joiner).find(|i| *i != predecessor).unwrap();
    nodes[joiner].join(bootstrap as u32, now);
    let mut contacted = std::collections::HashSet::new();
    let step = Duration::from_millis(50);
    let end = now + Duration::from_secs(5);
    while now < end {
        now += step;
        for n in nodes.iter_mut() {
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout(now);
            }
        }
        for _ in 0..50 {
            let mut moved = false;
            for i in 0..nodes.len() {
                while let Some(t) = nodes[i].poll_transmit() {
                    moved = true;
                    if i == joiner {
                        contacted.insert(t.to as usize);
                    }
                    if t.to as usize == joiner && !contacted.contains(&i) {
                        continue; // the NAT drops it
                    }
                    nodes[t.to as usize].handle_datagram(now, i as u32, &t.bytes);
                }
            }
            if !moved {
                break;
            }
        }
    }
    let ev = events(&mut nodes[joiner]);
    assert!(
        ev.iter().any(|e| matches!(e, Event::Joined { .. })),
        "{ev:?}"
    );
    // Without the bootstrap's relay this fails: the answer to the join's
    // lookup comes from the joiner's predecessor, which it has not sent to.
}
