//! The core's own cost of a one-hop `send`, without I/O: two `LocalNode`s
//! with UDP-style identities (id = SHA-256 of `"ip:port"`, checked on every
//! message as `SwarmPeer` does), `--inflight` sends outstanding from one to
//! the other, datagrams handed across in memory. Prints nanoseconds per
//! confirmed message; run it under `valgrind --tool=callgrind` with two
//! message counts to get instructions per message, a figure noise cannot
//! change:
//!
//! ```sh
//! cargo build --release -p cicada-chord --example core_send
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/core_send --messages 20000   # and 40000: the
//! # difference of the two totals / 20000 = instructions per message
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chord::{Config, Event, Hash, LocalNode, NodeRef, Target};

fn node(port: u16, seed: u64, now: Instant) -> LocalNode<SocketAddr> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // As `cicada bench`: whole 1 KiB payloads, the per-source buckets lifted.
    let cfg = Config {
        max_fragment: 60_000,
        max_pending: 65_536,
        source_rate: 10_000_000,
        source_burst: 10_000_000,
        data_rate: 10_000_000,
        data_burst: 10_000_000,
        ..Config::default()
    };
    LocalNode::new(
        cfg,
        NodeRef::new(Hash::of(addr.to_string()), addr),
        seed,
        now,
    )
    .expect("a valid config")
    .with_identity(|a| Hash::of(a.to_string()))
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The datagrams on their way between `a` and `b`, in order.
#[derive(Default)]
struct Wire {
    to_b: std::collections::VecDeque<bytes::Bytes>,
    to_a: std::collections::VecDeque<bytes::Bytes>,
}

/// One step of the network: takes what both nodes want sent, then hands
/// each at most `per_step` of the oldest datagrams (so that messages stay
/// in flight, as they do on a real link); returns the `Delivered` events
/// `a` reported and the messages `b` received.
fn step(
    a: &mut LocalNode<SocketAddr>,
    b: &mut LocalNode<SocketAddr>,
    wire: &mut Wire,
    per_step: usize,
    now: Instant,
) -> (usize, usize) {
    let (a_addr, b_addr) = (a.me().addr, b.me().addr);
    let (mut delivered, mut received) = (0, 0);
    wire.to_b
        .extend(std::iter::from_fn(|| a.poll_transmit()).map(|t| t.bytes));
    wire.to_a
        .extend(std::iter::from_fn(|| b.poll_transmit()).map(|t| t.bytes));
    for _ in 0..per_step {
        let Some(d) = wire.to_b.pop_front() else {
            break;
        };
        b.handle_datagram(now, a_addr, &d);
    }
    for _ in 0..per_step {
        let Some(d) = wire.to_a.pop_front() else {
            break;
        };
        a.handle_datagram(now, b_addr, &d);
    }
    while let Some(e) = a.poll_event() {
        delivered += usize::from(matches!(e, Event::Delivered { .. }));
    }
    while let Some(e) = b.poll_event() {
        received += usize::from(matches!(e, Event::Received { .. }));
    }
    // The driver asks for the next timer after every wake-up.
    let _ = (a.poll_timeout(), b.poll_timeout());
    (delivered, received)
}

fn main() {
    let messages = arg("--messages", 20_000);
    let inflight = arg("--inflight", 256).max(1);
    let size = arg("--size", 1024);
    let mut now = Instant::now();
    let mut a = node(4000, 1, now);
    let mut b = node(4001, 2, now);
    a.create(now);
    b.join(a.me().addr, now);
    let mut wire = Wire::default();
    for _ in 0..20 {
        for _ in 0..10 {
            step(&mut a, &mut b, &mut wire, usize::MAX, now);
        }
        now += Duration::from_millis(600);
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    for _ in 0..10 {
        step(&mut a, &mut b, &mut wire, usize::MAX, now);
    }
    assert!(
        a.successor().is_some() && b.successor().is_some(),
        "the two nodes form a ring"
    );
    let to = Target::Node(b.id());
    let payload = vec![0x5au8; size];
    let start = Instant::now();
    let (mut sent, mut delivered, mut received, mut stalled) = (0usize, 0usize, 0usize, 0);
    while delivered < messages {
        // Top up to `inflight` outstanding, as the bench's 256 tasks do, a
        // few at a time (one driver wake-up's worth), then move datagrams.
        let mut batch = 0;
        while sent < messages && sent - delivered < inflight && batch < 16 {
            a.send(to, payload.clone(), 0, now)
                .expect("the send is accepted");
            sent += 1;
            batch += 1;
        }
        let (d, r) = step(&mut a, &mut b, &mut wire, 16, now);
        delivered += d;
        received += r;
        stalled = if d > 0 || batch > 0 { 0 } else { stalled + 1 };
        assert!(
            stalled < 1000,
            "no progress: {delivered} of {messages} delivered"
        );
    }
    let ns = start.elapsed().as_nanos() as f64 / messages as f64;
    assert_eq!(received, messages, "every message received once");
    println!(
        "{messages} one-hop sends of {size} B, {inflight} in flight: {ns:.0} ns per message (both nodes)"
    );
}
