//! Fuzz target: a ring of four `LocalNode<u32>` (addresses 0..4, built once
//! by real joins, cloned for every input) driven by an arbitrary list of
//! operations: raw datagrams and valid-looking messages from any address
//! (ring members included, so forged sources too), delivery among the ring,
//! the passing of time, and the commands of the API. After every operation
//! every node's invariants must hold (`LocalNode::check_invariants`).
//!
//! The nodes use small limits (pending, dedup, reassembly, sources) so that
//! the fuzzer reaches their edges.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use chord::wire::{
    Confirmed, Data, DataHeader, Delivered, FindSuccessor, Found, GetNeighbors, HopAck, Leave,
    Message, Mode, Neighbors, OwnerCheck, Owns, Ping, Refusal, SuccessorHint, Undeliverable,
    VersionMismatch,
};
use chord::{Config, Hash, LocalNode, NodeRef, Target};
use libfuzzer_sys::fuzz_target;

const RING: usize = 4;

fn config() -> Config {
    Config {
        successor_list_len: 3,
        max_pending: 48,
        dedup_window: 32,
        max_payload: 4096,
        max_fragment: 256,
        reassembly_bytes: 8192,
        source_rate: 50,
        source_burst: 20,
        max_sources: 8,
        stabilize_interval: Duration::from_millis(500),
        request_timeout: Duration::from_millis(200),
        send_attempt_timeout: Duration::from_millis(500),
        send_timeout: Duration::from_secs(2),
        lookup_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

struct Start {
    now: Instant,
    nodes: Vec<LocalNode<u32>>,
}

fn deliver(nodes: &mut [LocalNode<u32>], now: Instant, budget: usize) {
    let mut moved = 0;
    loop {
        let mut any = false;
        for i in 0..nodes.len() {
            while let Some(t) = nodes[i].poll_transmit() {
                any = true;
                moved += 1;
                if let Some(to) = nodes.get_mut(t.to as usize) {
                    to.handle_datagram(now, i as u32, &t.bytes);
                }
                if moved >= budget {
                    return;
                }
            }
            while nodes[i].poll_event().is_some() {}
        }
        if !any {
            return;
        }
    }
}

fn start() -> &'static Start {
    static START: OnceLock<Start> = OnceLock::new();
    START.get_or_init(|| {
        let mut now = Instant::now();
        let mut nodes: Vec<LocalNode<u32>> = (0..RING)
            .map(|i| {
                let me = NodeRef::new(Hash::of(format!("node{i}")), i as u32);
                LocalNode::new(config(), me, i as u64, now).expect("valid config")
            })
            .collect();
        nodes[0].create(now);
        for n in nodes.iter_mut().skip(1) {
            n.join(0, now);
        }
        for _ in 0..200 {
            now += Duration::from_millis(50);
            for n in nodes.iter_mut() {
                if n.poll_timeout().is_some_and(|t| t <= now) {
                    n.handle_timeout(now);
                }
            }
            deliver(&mut nodes, now, 10_000);
        }
        assert!(nodes.iter().all(|n| n.is_joined()), "the ring formed");
        Start { now, nodes }
    })
}

/// A node named by the fuzzer: one of the ring (its true identity), or
/// any id at any address.
#[derive(Arbitrary, Debug, Clone)]
enum Who {
    Ring(u8),
    Any([u8; 32], u8),
    Id(u8, u8),
}

fn who(w: &Who, ids: &[NodeRef<u32>]) -> NodeRef<u32> {
    match w {
        Who::Ring(i) => ids[*i as usize % ids.len()].clone(),
        Who::Any(id, addr) => NodeRef::new(Hash::from_bytes(*id), u32::from(*addr)),
        // A ring member's id at another address: impersonation.
        Who::Id(i, addr) => NodeRef::new(ids[*i as usize % ids.len()].id, u32::from(*addr)),
    }
}

#[derive(Arbitrary, Debug)]
enum Key {
    Raw([u8; 32]),
    Near(u8, u8),
}

fn key(k: &Key, ids: &[NodeRef<u32>]) -> Hash {
    match k {
        Key::Raw(b) => Hash::from_bytes(*b),
        // A key on a ring member's id, or just past it.
        Key::Near(i, d) => ids[*i as usize % ids.len()]
            .id
            .wrapping_add(&Hash::pow2(u32::from(*d) % Hash::BITS)),
    }
}

/// A txn: a small guess, or one of the few the node really has pending is
/// out of reach (64-bit random), which is the point.
#[derive(Arbitrary, Debug)]
enum Crafted {
    Version(u8, u8),
    Ping(u64),
    Pong(u64),
    GetNeighbors {
        txn: u64,
        sender: Who,
        notify: bool,
        fingers: bool,
    },
    Neighbors {
        txn: u64,
        pred: Option<Who>,
        succ: Vec<Who>,
        fingers: Vec<Who>,
    },
    FindSuccessor {
        txn: u64,
        lookup: u64,
        key: Key,
        origin: Who,
        hops: u8,
        joining: bool,
    },
    HopAck(u64),
    Found {
        lookup: u64,
        key: Key,
        owner: Who,
        hops: u8,
    },
    Leave {
        sender: Who,
        pred: Option<Who>,
        succ: Vec<Who>,
    },
    Hint(Who),
    Data {
        txn: u64,
        msg: u64,
        origin: Who,
        target: Key,
        mode: u8,
        limit: Key,
        hops: u8,
        last: bool,
        frag: u16,
        frags: u16,
        len: u16,
    },
    Delivered {
        msg: u64,
        owner: Who,
        hops: u8,
        /// Further confirmations in the same datagram (ids msg+1, ...).
        more: u8,
    },
    Undeliverable {
        msg: u64,
        reason: u8,
    },
    OwnerCheck {
        txn: u64,
        key: Key,
    },
    Owns {
        txn: u64,
        yes: bool,
    },
}

fn craft(c: &Crafted, ids: &[NodeRef<u32>]) -> Vec<u8> {
    let list = |v: &Vec<Who>| v.iter().take(100).map(|w| who(w, ids)).collect::<Vec<_>>();
    let msg: Message<u32> = match c {
        Crafted::Version(min, max) => Message::VersionMismatch(VersionMismatch {
            min: *min,
            max: *max,
        }),
        Crafted::Ping(t) => Message::Ping(Ping { txn: *t }),
        Crafted::Pong(t) => Message::Pong(Ping { txn: *t }),
        Crafted::GetNeighbors {
            txn,
            sender,
            notify,
            fingers,
        } => Message::GetNeighbors(GetNeighbors {
            txn: *txn,
            sender: who(sender, ids),
            notify: *notify,
            want_fingers: *fingers,
        }),
        Crafted::Neighbors {
            txn,
            pred,
            succ,
            fingers,
        } => Message::Neighbors(Neighbors {
            txn: *txn,
            predecessor: pred.as_ref().map(|w| who(w, ids)),
            successors: list(succ),
            fingers: list(fingers),
        }),
        Crafted::FindSuccessor {
            txn,
            lookup,
            key: k,
            origin,
            hops,
            joining,
        } => Message::FindSuccessor(FindSuccessor {
            txn: *txn,
            lookup: *lookup,
            key: key(k, ids),
            origin: who(origin, ids),
            hops: *hops,
            joining: *joining,
            via: None,
        }),
        Crafted::HopAck(t) => Message::HopAck(HopAck { txn: *t }),
        Crafted::Found {
            lookup,
            key: k,
            owner,
            hops,
        } => Message::Found(Found {
            lookup: *lookup,
            key: key(k, ids),
            owner: who(owner, ids),
            hops: *hops,
        }),
        Crafted::Leave { sender, pred, succ } => Message::Leave(Leave {
            sender: who(sender, ids).id,
            predecessor: pred.as_ref().map(|w| who(w, ids)),
            successors: list(succ),
        }),
        Crafted::Hint(w) => Message::SuccessorHint(SuccessorHint { node: who(w, ids) }),
        Crafted::Data {
            txn,
            msg,
            origin,
            target,
            mode,
            limit,
            hops,
            last,
            frag,
            frags,
            len,
        } => Message::Data(Data {
            header: DataHeader {
                txn: *txn,
                msg: *msg,
                origin: who(origin, ids),
                target: key(target, ids),
                mode: match mode % 3 {
                    0 => Mode::Key,
                    1 => Mode::Node,
                    _ => Mode::Broadcast,
                },
                limit: key(limit, ids),
                hops: *hops,
                last_hop: *last,
                frag: *frag,
                frags: *frags,
            },
            payload: vec![0x5a; usize::from(*len) % 1500].into(),
        }),
        Crafted::Delivered {
            msg,
            owner,
            hops,
            more,
        } => Message::Delivered(Delivered {
            owner: who(owner, ids),
            msgs: (0..=u64::from(*more % 8))
                .map(|i| Confirmed {
                    msg: msg.wrapping_add(i),
                    hops: *hops,
                })
                .collect(),
        }),
        Crafted::Undeliverable { msg, reason } => Message::Undeliverable(Undeliverable {
            msg: *msg,
            reason: match reason % 3 {
                0 => Refusal::NoSuchNode,
                1 => Refusal::NoRoute,
                _ => Refusal::Busy,
            },
        }),
        Crafted::OwnerCheck { txn, key: k } => Message::OwnerCheck(OwnerCheck {
            txn: *txn,
            key: key(k, ids),
        }),
        Crafted::Owns { txn, yes } => Message::Owns(Owns {
            txn: *txn,
            yes: *yes,
        }),
    };
    msg.encode()
}

#[derive(Arbitrary, Debug)]
enum Op {
    Raw {
        to: u8,
        from: u8,
        bytes: Vec<u8>,
    },
    Crafted {
        to: u8,
        from: u8,
        msg: Crafted,
    },
    /// Replays a datagram a ring node sent (a forged or repeated copy),
    /// from any address, possibly with a byte flipped.
    Replay {
        node: u8,
        to: u8,
        from: u8,
        flip: Option<(u16, u8)>,
    },
    Deliver(u8),
    Drop(u8),
    Advance(u16),
    Lookup {
        node: u8,
        key: Key,
    },
    Send {
        node: u8,
        key: Key,
        exact: bool,
        len: u16,
        dup: u8,
    },
    Broadcast {
        node: u8,
        len: u16,
    },
    /// An unconfirmed datagram (message and hop id 0).
    Datagram {
        node: u8,
        key: Key,
        exact: bool,
        len: u16,
    },
    Leave(u8),
    Flood {
        to: u8,
        from: u8,
        msg: Crafted,
        count: u8,
    },
}

/// The node with id `k` when `exact`, else the owner of key `k`.
fn target(k: Hash, exact: bool) -> Target {
    if exact {
        Target::Node(k)
    } else {
        Target::Key(k)
    }
}

fn check(nodes: &[LocalNode<u32>], op: &Op) {
    for (i, n) in nodes.iter().enumerate() {
        if let Err(e) = n.check_invariants() {
            panic!("node {i} broke an invariant after {op:?}: {e}");
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let s = start();
    let mut now = s.now;
    let mut nodes = s.nodes.clone();
    let ids: Vec<NodeRef<u32>> = nodes.iter().map(|n| n.me().clone()).collect();
    let mut sent: Vec<(u32, Vec<u8>)> = Vec::new();
    let idx = |b: u8| b as usize % RING;
    for op in ops.iter().take(24) {
        match op {
            Op::Raw { to, from, bytes } => {
                nodes[idx(*to)].handle_datagram(now, u32::from(*from), bytes)
            }
            Op::Crafted { to, from, msg } => {
                let bytes = craft(msg, &ids);
                nodes[idx(*to)].handle_datagram(now, u32::from(*from), &bytes);
            }
            Op::Flood {
                to,
                from,
                msg,
                count,
            } => {
                let bytes = craft(msg, &ids);
                for _ in 0..(*count % 16) {
                    nodes[idx(*to)].handle_datagram(now, u32::from(*from), &bytes);
                }
            }
            Op::Replay {
                node,
                to,
                from,
                flip,
            } => {
                if let Some(t) = nodes[idx(*node)].poll_transmit() {
                    sent.push((t.to, t.bytes.to_vec()));
                }
                if let Some((_, bytes)) = sent.last() {
                    let mut bytes = bytes.clone();
                    if let Some((at, x)) = flip {
                        if !bytes.is_empty() {
                            let at = *at as usize % bytes.len();
                            bytes[at] ^= x;
                        }
                    }
                    nodes[idx(*to)].handle_datagram(now, u32::from(*from), &bytes);
                }
            }
            Op::Deliver(n) => deliver(&mut nodes, now, usize::from(*n % 64) + 1),
            Op::Drop(n) => {
                for _ in 0..*n {
                    if nodes[idx(*n)].poll_transmit().is_none() {
                        break;
                    }
                }
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(*ms) % 5000);
                for n in nodes.iter_mut() {
                    if n.poll_timeout().is_some_and(|t| t <= now) {
                        n.handle_timeout(now);
                    }
                }
            }
            Op::Lookup { node, key: k } => {
                nodes[idx(*node)].lookup(key(k, &ids), now);
            }
            Op::Send {
                node,
                key: k,
                exact,
                len,
                dup,
            } => {
                let target = target(key(k, &ids), *exact);
                let _ =
                    nodes[idx(*node)].send(target, vec![1; usize::from(*len) % 1500], dup % 3, now);
            }
            Op::Datagram {
                node,
                key: k,
                exact,
                len,
            } => {
                let target = target(key(k, &ids), *exact);
                let payload = vec![3; usize::from(*len) % 1500];
                let _ = nodes[idx(*node)].send_datagram(target, &payload, now);
            }
            Op::Broadcast { node, len } => {
                let _ = nodes[idx(*node)].broadcast(vec![2; usize::from(*len) % 1500], now);
            }
            Op::Leave(n) => nodes[idx(*n)].leave(now),
        }
        // Keep the queues from growing without end when nothing delivers.
        for n in nodes.iter_mut() {
            while n.poll_event().is_some() {}
        }
        check(&nodes, op);
    }
    deliver(&mut nodes, now, 64);
    check(&nodes, &Op::Deliver(0));
});
