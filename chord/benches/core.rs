//! Hot paths of the core: encoding and decoding each message, a routing
//! decision in a full table, broadcast interval splitting.
//!
//! `cargo bench -p cicada-chord`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use chord::routing::RoutingTable;
use chord::sim::{Sim, SimConfig};
use chord::wire::{
    Data, DataHeader, FindSuccessor, GetNeighbors, HopAck, Message, Mode, Neighbors, Ping,
};
use chord::{Hash, NodeRef};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn node(i: u64) -> NodeRef<SocketAddr> {
    let addr: SocketAddr = format!("10.0.{}.{}:4000", i / 250, i % 250 + 1)
        .parse()
        .expect("a valid address");
    NodeRef::new(Hash::of(addr.to_string()), addr)
}

fn messages() -> Vec<(&'static str, Message<SocketAddr>)> {
    let me = node(0);
    let list: Vec<_> = (1..=16).map(node).collect();
    vec![
        ("ping", Message::Ping(Ping { txn: u64::MAX / 3 })),
        ("hop_ack", Message::HopAck(HopAck { txn: u64::MAX / 3 })),
        (
            "get_neighbors",
            Message::GetNeighbors(GetNeighbors {
                txn: 7,
                sender: me.clone(),
                notify: true,
                want_fingers: false,
            }),
        ),
        (
            "neighbors_16",
            Message::Neighbors(Neighbors {
                txn: 7,
                predecessor: Some(me.clone()),
                successors: list,
                fingers: vec![],
            }),
        ),
        (
            "find_successor",
            Message::FindSuccessor(FindSuccessor {
                txn: 7,
                lookup: 9,
                key: Hash::of("key"),
                origin: me.clone(),
                hops: 3,
                joining: false,
                via: None,
            }),
        ),
        (
            "data_1k",
            Message::Data(Data {
                header: DataHeader {
                    txn: 7,
                    msg: 9,
                    origin: me,
                    target: Hash::of("key"),
                    mode: Mode::Key,
                    limit: Hash::ZERO,
                    hops: 3,
                    last_hop: false,
                    frag: 0,
                    frags: 1,
                },
                payload: vec![0x5a; 1024].into(),
            }),
        ),
    ]
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    for (name, msg) in messages() {
        let bytes = msg.encode();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| black_box(&msg).encode())
        });
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| Message::<SocketAddr>::decode(black_box(&bytes)))
        });
    }
    g.finish();
}

fn routing(c: &mut Criterion) {
    // A full table as in a ring of about 2^20 nodes: 16 successors, 20 fingers.
    let me = Hash::of("me");
    let mut table: RoutingTable<SocketAddr> = RoutingTable::new(me, 16);
    let succ: Vec<_> = (1..=16u64)
        .map(|i| {
            let mut n = node(i);
            n.id = me.wrapping_add(&Hash::pow2(200).wrapping_add(&Hash::pow2(180 + i as u32)));
            n
        })
        .collect();
    table.set_successors(succ);
    for bit in 236..256 {
        let mut n = node(100 + bit as u64);
        n.id = me
            .wrapping_add(&Hash::pow2(bit))
            .wrapping_add(&Hash::pow2(200));
        table.insert_finger(n);
    }
    let keys: Vec<Hash> = (0..64).map(|i: u32| Hash::of(i.to_be_bytes())).collect();
    c.bench_function("routing/next_hop_full_table", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(table.next_hop(&keys[i], &[]).clone());
        })
    });
}

fn broadcast(c: &mut Criterion) {
    // Interval splitting at the origin of a broadcast in a settled 2,000-node ring.
    let mut sim = Sim::new(SimConfig::default());
    let nodes: Vec<u32> = (0..2000).map(|_| sim.add_node()).collect();
    sim.create(nodes[0]);
    for (i, n) in nodes.iter().enumerate().skip(1) {
        sim.schedule_join(
            *n,
            Duration::from_secs_f64(((1 + i) as f64).ln() / 1.5f64.ln()),
        );
    }
    sim.run_for(Duration::from_secs(40));
    let origin = sim.node(nodes[0]);
    let mut table: RoutingTable<u32> = RoutingTable::new(origin.id(), 16);
    table.set_successors(origin.successors().to_vec());
    for f in origin.fingers() {
        table.insert_finger(f.clone());
    }
    let me = origin.id();
    c.bench_function("broadcast/split_whole_ring_at_a_node_of_2000", |b| {
        b.iter(|| black_box(table.broadcast_children(black_box(&me))))
    });
}

criterion_group!(benches, codec, routing, broadcast);
criterion_main!(benches);
