//! A complete Cicada peer on `std::net::UdpSocket` and one plain loop: no
//! tokio, no threads beyond main. It drives the same `chord::LocalNode` that
//! `SwarmPeer` drives under tokio and the simulator drives in virtual time,
//! and interoperates with both kinds of peers.
//!
//! ```sh
//! cargo run --example std_peer -- --bind 127.0.0.1:7001 --join 127.0.0.1:7000 \
//!     --send 127.0.0.1:7000=hello --broadcast hi-all --seconds 10
//! ```
//!
//! Events are printed as JSON lines, like `cicada node --json`.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use cicada::chord::{Config, Event, Hash, LocalNode, NodeRef, Target};
use clap::Parser;

/// Arguments of the std peer.
#[derive(Parser, Debug)]
struct Args {
    /// Address to bind (and to be known by: its hash is the node's id).
    #[arg(long)]
    bind: SocketAddr,
    /// A member of the swarm to join through; without it, start a swarm.
    #[arg(long)]
    join: Option<SocketAddr>,
    /// `HOST:PORT=TEXT`: once joined (and settled), send TEXT to that peer.
    #[arg(long)]
    send: Vec<String>,
    /// Once joined (and settled), broadcast this text.
    #[arg(long)]
    broadcast: Option<String>,
    /// Look up this 64-hex-digit key once joined.
    #[arg(long)]
    lookup: Option<Hash>,
    /// Seconds to wait after joining before the sends, broadcast and lookup.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Stabilize period in milliseconds.
    #[arg(long, default_value_t = 1000)]
    stabilize_ms: u64,
}

fn json(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let cfg = Config {
        stabilize_interval: Duration::from_millis(args.stabilize_ms),
        request_timeout: Duration::from_millis((args.stabilize_ms / 2).max(50)),
        ..Config::default()
    };
    let socket = UdpSocket::bind(args.bind)?;
    let me = NodeRef::new(Hash::of(args.bind.to_string()), args.bind);
    let start = Instant::now();
    // Ids derive from addresses: a message naming a peer under another id
    // is dropped.
    let mut node = LocalNode::new(cfg, me, start.elapsed().as_nanos() as u64, start)
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .with_identity(|a: &SocketAddr| Hash::of(a.to_string()));
    match args.join {
        Some(b) => node.join(b, start),
        None => node.create(start),
    }
    println!(
        r#"{{"event":"ready","id":"{}","addr":"{}"}}"#,
        node.id(),
        args.bind
    );
    let end = start + Duration::from_secs_f64(args.seconds);
    let (mut act_at, mut acted) = (None, false);
    let mut buf = vec![0u8; 65_536];

    // The whole driver: datagrams and deadlines in, datagrams and events out.
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let pending_act = act_at.filter(|_| !acted).unwrap_or(end);
        let wake = node.poll_timeout().unwrap_or(end).min(end).min(pending_act);
        socket.set_read_timeout(Some(
            wake.saturating_duration_since(now)
                .max(Duration::from_millis(1)),
        ))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => node.handle_datagram(Instant::now(), from, &buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        if node.poll_timeout().is_some_and(|t| t <= now) {
            node.handle_timeout(now);
        }
        if !acted && act_at.is_some_and(|t| t <= now) {
            acted = true;
            act(&mut node, &args, now);
        }
        while let Some(t) = node.poll_transmit() {
            socket.send_to(&t.bytes, t.to)?;
        }
        while let Some(e) = node.poll_event() {
            if matches!(e, Event::Joined { .. }) && act_at.is_none() {
                act_at = Some(now + Duration::from_secs_f64(args.settle));
            }
            report(e);
        }
    }
    node.leave(Instant::now());
    while let Some(t) = node.poll_transmit() {
        socket.send_to(&t.bytes, t.to)?;
    }
    Ok(())
}

/// Carries out the scheduled sends, broadcast and lookup.
fn act(node: &mut LocalNode<SocketAddr>, args: &Args, now: Instant) {
    for spec in &args.send {
        let Some((to, text)) = spec.split_once('=') else {
            println!(
                r#"{{"event":"error","message":{}}}"#,
                json(&format!("bad --send {spec}"))
            );
            continue;
        };
        let target = Target::Node(Hash::of(to));
        match node.send(target, text.as_bytes().to_vec(), 0, now) {
            Ok(id) => println!(
                r#"{{"event":"sending","target":{},"msg":{}}}"#,
                json(to),
                id.0
            ),
            Err(e) => println!(
                r#"{{"event":"sent","target":{},"ok":false,"error":{}}}"#,
                json(to),
                json(&e.to_string())
            ),
        }
    }
    if let Some(text) = &args.broadcast {
        if let Err(e) = node.broadcast(text.as_bytes().to_vec(), now) {
            println!(r#"{{"event":"error","message":{}}}"#, json(&e.to_string()));
        }
    }
    if let Some(key) = args.lookup {
        node.lookup(key, now);
    }
}

fn report(e: Event<SocketAddr>) {
    match e {
        Event::Joined { successor } => {
            println!(r#"{{"event":"joined","successor":"{}"}}"#, successor.addr)
        }
        Event::JoinFailed { reason } => println!(
            r#"{{"event":"error","message":{}}}"#,
            json(&reason.to_string())
        ),
        Event::PeerAdded(p) => {
            println!(r#"{{"event":"peer","id":"{}","addr":"{}"}}"#, p.id, p.addr)
        }
        Event::Received {
            from,
            payload,
            broadcast,
            ..
        } => println!(
            r#"{{"event":"recv","from":"{}","from_id":"{}","data":{},"broadcast":{broadcast}}}"#,
            from.addr,
            from.id,
            json(&String::from_utf8_lossy(&payload))
        ),
        Event::Delivered { id, to, .. } => println!(
            r#"{{"event":"sent","msg":{},"target":"{}","ok":true}}"#,
            id.0, to.addr
        ),
        Event::SendFailed { id, reason } => println!(
            r#"{{"event":"sent","msg":{},"ok":false,"error":{}}}"#,
            id.0,
            json(&reason.to_string())
        ),
        Event::LookupDone {
            key, owner, hops, ..
        } => println!(
            r#"{{"event":"lookup","key":"{key}","owner":"{}","hops":{hops}}}"#,
            owner.addr
        ),
        Event::LookupFailed { key, .. } => {
            println!(r#"{{"event":"lookup","key":"{key}","error":"failed"}}"#)
        }
        _ => {}
    }
}
