//! I/O: one peer driven by lines of text, reporting events on stdout.
//!
//! `cicada node`: runs one peer and carries out commands, one per line, from
//! a script file and then from stdin:
//!
//! ```text
//! send TARGET TEXT          TARGET = host:port or an Ouroboros name (that peer),
//!                           or 64 hex digits (a key's owner)
//! send-dup N TARGET TEXT    the same with N duplicates
//! broadcast TEXT
//! lookup KEY                KEY = 64 hex digits, or any text (hashed)
//! put KEY TEXT              store TEXT under KEY in the DHT (one hour)
//! put-signed NAME SEQ TEXT  store version SEQ of the mutable value signed
//!                           by the key pair whose secret is SHA-256(NAME)
//! get KEY                   the values stored under KEY
//! listen KEY                an `update` event for each value stored under KEY
//! announce TOPIC            name this peer under TOPIC (one hour)
//! find TOPIC                the peers that announced TOPIC
//! peers                     the routing state (each peer with its path: direct, punched or relayed), successor and predecessor
//! fingers                   the distinct fingers, nearest first
//! stats                     the counters
//! nat                       the NAT status (also printed whenever it changes)
//! observe ADDR              ask the peer at ADDR where it sees this one
//! wait SECONDS
//! hold SECONDS              stop reading received messages for SECONDS, as
//!                           a slow application would (senders are held
//!                           back once the receive queue is full)
//! leave                     leave the swarm gracefully, keep running
//! quit
//! ```
//!
//! Sends, broadcasts and lookups run in the background; their outcome is an
//! event. End of input does not stop the peer; `quit`, SIGINT or SIGTERM do,
//! after a graceful leave (with `--abrupt`, a signal ends the process at
//! once, without leaving).
//!
//! Over Ouroboros (`--ouroboros NAME [--layer LAYER]`) the commands and
//! events are the same, with names in place of `host:port`.
//!
//! Here the arguments and the peer's start; `commands.rs` carries out one
//! line; `tasks.rs` runs what goes on beside (receiving, the metrics
//! endpoint, the watch on the peer's own address, input, signals).

mod commands;
mod tasks;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cicada::{Hooks, PeerAddr, PeerConfig, SwarmPeer, Transport};
use serde_json::json;
use tokio::sync::watch;

use crate::output::Out;

use commands::{execute, Flow};
use tasks::{read_lines, receive, serve_metrics, shutdown_signal, watch_self};

/// Arguments of `cicada node`.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// Local UDP address to bind, HOST:PORT (port 0 picks one); with
    /// `--ouroboros` and `--transport auto`, the fallback when Ouroboros is
    /// unavailable (default 127.0.0.1:0).
    #[arg(long, required_unless_present = "ouroboros")]
    bind: Option<String>,
    /// Run over Ouroboros under this name (the peer's id is SHA-256 of it).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["external", "map"])]
    ouroboros: Option<String>,
    /// The Ouroboros layer to register the name in.
    #[arg(long, default_value = "local_layer", requires = "ouroboros")]
    layer: String,
    /// With `--ouroboros`: `auto` uses Ouroboros when the library loads and
    /// an IRMd answers and UDP (`--bind`) otherwise; `ouroboros` fails
    /// instead of falling back.
    #[arg(long, value_enum, default_value_t = TransportArg::Auto, requires = "ouroboros")]
    transport: TransportArg,
    /// On SIGINT/SIGTERM, end at once without a graceful leave (to test
    /// how the others recover).
    #[arg(long)]
    abrupt: bool,
    /// Address other peers reach this one at (its id derives from it).
    #[arg(long)]
    external: Option<String>,
    /// Map the bound UDP port on the NAT gateway (UPnP IGD, then NAT-PMP) and
    /// announce the mapped external address; the mapping is removed on exit.
    #[arg(long, conflicts_with = "external")]
    map: bool,
    /// A member of the swarm to join (HOST:PORT over UDP, a name over
    /// Ouroboros); without it this peer starts a swarm.
    #[arg(long)]
    join: Option<String>,
    /// Commands to run before reading stdin.
    #[arg(long)]
    script: Option<PathBuf>,
    /// One JSON object per event on stdout.
    #[arg(long)]
    json: bool,
    /// Stabilize period in milliseconds.
    #[arg(long, default_value_t = 1000)]
    stabilize_ms: u64,
    /// Keepalive interval of punched paths in milliseconds.
    #[arg(long, default_value_t = 25_000)]
    keepalive_ms: u64,
    /// Peers this node relays for at once, when reachable first (public
    /// or mapped).
    #[arg(long, default_value_t = 32)]
    relay_peers: usize,
    /// Bytes per second this node forwards as a relay, in all.
    #[arg(long, default_value_t = 1 << 20)]
    relay_rate: u64,
    /// Relay for nobody.
    #[arg(long)]
    no_relay: bool,
    /// Nodes that hold each value of the DHT store (the key's owner and
    /// its next successors).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Request timeout in milliseconds.
    #[arg(long, default_value_t = 500)]
    request_timeout_ms: u64,
    /// Lookup (and join) deadline in milliseconds.
    #[arg(long, default_value_t = 8000)]
    lookup_timeout_ms: u64,
    /// Serve this peer's metrics (Prometheus/OpenMetrics text) over HTTP at
    /// `http://HOST:PORT/metrics` (port 0 picks one; a `metrics` event says
    /// where).
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<String>,
    /// Deadline of a confirmed send (its retries included) in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    send_timeout_ms: u64,
    /// Seconds to wait for the join; a bootstrap that did not answer is
    /// asked again (a `join_retry` event) until they have passed.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Capacity of the receive queue.
    #[arg(long, default_value_t = cicada::config::DEFAULT_RECV_QUEUE)]
    recv_queue: usize,
    /// Join a private swarm: the file holds the swarm key, 64 hex digits on
    /// one line (`cicada keygen --out FILE` makes one). Every link is then
    /// authenticated and encrypted; peers without the key cannot join.
    #[arg(long)]
    swarm_key: Option<PathBuf>,
}

/// Runs the node; returns the exit code.
pub fn main(args: NodeArgs) -> i32 {
    let out = Out { json: args.json };
    crate::output::run(out, run(args, out))
}

fn resolve(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {s}"))
}

/// `--transport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TransportArg {
    Auto,
    Ouroboros,
}

/// Decides the transport: Ouroboros or UDP, and why.
async fn choose(args: &NodeArgs, bind: SocketAddr) -> (Transport, String) {
    let Some(name) = args.ouroboros.clone() else {
        return (Transport::Udp(bind), "--bind given".into());
    };
    let layer = args.layer.clone();
    if args.transport == TransportArg::Ouroboros {
        return (
            Transport::Ouroboros { name, layer },
            "--transport ouroboros".into(),
        );
    }
    match tokio::task::spawn_blocking(cicada::ouroboros::check).await {
        Ok(Ok(())) => (
            Transport::Ouroboros { name, layer },
            "the library loads and the IRMd answers".into(),
        ),
        Ok(Err(e)) => (Transport::Udp(bind), format!("Ouroboros unavailable: {e}")),
        Err(e) => (Transport::Udp(bind), format!("Ouroboros check failed: {e}")),
    }
}

async fn run(args: NodeArgs, out: Out) -> Result<(), String> {
    let bind = resolve(args.bind.as_deref().unwrap_or("127.0.0.1:0"))?;
    let external = args.external.as_deref().map(resolve).transpose()?;
    let (transport, why) = choose(&args, bind).await;
    let over_ouroboros = matches!(transport, Transport::Ouroboros { .. });
    out.emit(json!({
        "event": "transport",
        "transport": if over_ouroboros { "ouroboros" } else { "udp" },
        "reason": why,
    }));
    let join: Option<PeerAddr> = match args.join.as_deref() {
        None => None,
        Some(j) if over_ouroboros => Some(
            j.parse::<PeerAddr>()
                .map_err(|e| format!("bad --join {j:?}: {e}"))?,
        ),
        Some(j) => Some(resolve(j)?.into()),
    };
    let mut cfg = PeerConfig::default()
        .stabilize_interval(Duration::from_millis(args.stabilize_ms))
        .request_timeout(Duration::from_millis(args.request_timeout_ms))
        .keepalive_interval(Duration::from_millis(args.keepalive_ms))
        .relay_limits(
            if args.no_relay { 0 } else { args.relay_peers },
            args.relay_rate,
        )
        .replicas(args.replicas)
        .lookup_timeout(Duration::from_millis(args.lookup_timeout_ms))
        .send_timeout(Duration::from_millis(args.send_timeout_ms))
        .recv_queue(args.recv_queue);
    if let Some(path) = &args.swarm_key {
        cfg = cfg.swarm_key(cicada::SwarmKey::read_file(path).map_err(|e| e.to_string())?);
    }
    let hooks = Hooks::new()
        .on_new_peer(move |p| {
            out.emit(json!({"event": "peer", "id": p.id.to_string(), "addr": p.addr.to_string()}))
        })
        .on_dropped(move |d| {
            out.emit(json!({"event": "hooks_dropped", "send": d.send, "new_peer": d.new_peer}))
        });
    let mut peer = SwarmPeer::with_config(cfg, hooks);
    if over_ouroboros {
        peer.bind_transport(transport)
            .await
            .map_err(|e| format!("cannot bind over Ouroboros: {e}"))?;
    } else if args.map {
        let options = cicada::traversal::Options::default();
        let external = peer
            .bind_with_mapping(bind, &options)
            .await
            .map_err(|e| format!("cannot bind {bind} with a port mapping: {e}"))?;
        out.emit(json!({"event": "mapped", "external": external.to_string()}));
    } else {
        match external {
            Some(e) => peer.bind_with_external(bind, e).await,
            None => peer.bind(bind).await,
        }
        .map_err(|e| format!("cannot bind {bind}: {e}"))?;
    }
    let me = peer.me().map_err(|e| e.to_string())?;
    out.emit(json!({"event": "ready", "id": me.id.to_string(), "addr": me.addr.to_string()}));

    let successor = match join {
        Some(j) => {
            // A bootstrap that did not answer is asked again while the
            // join's time lasts: over Ouroboros a lost flow allocation
            // (0.23's layers drop some, see docs/ouroboros.md) costs seconds,
            // and the core's tries of one join may all fall in that time.
            let deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout.max(0.0));
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match peer.connect(j.clone(), left).await {
                    Ok(s) => break s.addr,
                    Err(cicada::Error::Join(cicada::chord::JoinError::Unreachable))
                        if deadline.saturating_duration_since(Instant::now())
                            > Duration::from_millis(500) =>
                    {
                        out.emit(json!({"event": "join_retry", "bootstrap": j.to_string(),
                            "reason": "the bootstrap peer did not answer"}));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(format!("cannot join {j}: {e}")),
                }
            }
        }
        None => me.addr,
    };
    let me = peer.me().map_err(|e| e.to_string())?;
    out.emit(json!({
        "event": "joined", "successor": successor.to_string(),
        "id": me.id.to_string(), "addr": me.addr.to_string(),
    }));

    let peer = Arc::new(peer);
    tokio::spawn(watch_self(peer.clone(), out));
    if let Some(addr) = &args.metrics {
        let listener = tokio::net::TcpListener::bind(resolve(addr)?)
            .await
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        let at = listener.local_addr().map_err(|e| e.to_string())?;
        out.emit(json!({"event": "metrics", "url": format!("http://{at}/metrics")}));
        tokio::spawn(serve_metrics(listener, peer.clone()));
    }
    let (hold, held) = watch::channel(Instant::now());
    tokio::spawn(receive(peer.clone(), out, held));

    let lines = read_lines(args.script.clone());
    if args.abrupt {
        tokio::spawn(async {
            shutdown_signal().await;
            // No leave, no close: the process ends here (the Ouroboros
            // library's destructor still runs, so the IRMd is not wedged).
            std::process::exit(0);
        });
    }
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut lines = Some(lines);
    loop {
        let next = async {
            match &mut lines {
                Some(l) => l.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => break,
            line = next => match line {
                // End of input does not stop the peer.
                None => lines = None,
                Some(line) => {
                    let step = execute(&peer, out, &line, &hold);
                    tokio::select! {
                        _ = &mut shutdown => break,
                        flow = step => if flow == Flow::Quit { break },
                    }
                }
            },
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), peer.disconnect()).await;
    // A second signal while closing ends the wait.
    tokio::select! {
        _ = peer.close() => {}
        _ = shutdown_signal() => {}
    }
    out.emit(json!({"event": "closed"}));
    Ok(())
}
