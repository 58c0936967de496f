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

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cicada::nat::NatMapping;
use cicada::{
    Hash, Hooks, NatStatus, PeerAddr, PeerConfig, Received, SendOptions, SendTarget, SwarmPeer,
    Transport,
};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::output::Out;

/// Most datagrams one `flood` command sends.
const MAX_FLOOD: usize = 10_000_000;
/// Largest datagram payload a `flood` command takes (what `send_datagram`
/// accepts is smaller still, see `PeerConfig::max_fragment`).
const MAX_FLOOD_SIZE: usize = 65_536;

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

/// Answers `GET /metrics` with the peer's metrics, anything else with 404;
/// one request per connection. A client that sends no request line within
/// 5 s, or a longer one than 8 KiB, is dropped.
async fn serve_metrics(listener: tokio::net::TcpListener, peer: Arc<SwarmPeer>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            // Out of descriptors, say: try again in a moment, not at once.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let peer = peer.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    match conn.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        return true;
                    }
                }
                false
            })
            .await;
            if read != Ok(true) {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let line = request.lines().next().unwrap_or_default();
            let (status, kind, body) = match line.split_whitespace().take(2).collect::<Vec<_>>()[..]
            {
                ["GET", "/metrics"] => match peer.metrics().await {
                    Ok(text) => (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    ),
                    Err(e) => ("503 Service Unavailable", "text/plain", e.to_string()),
                },
                _ => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Prints an `address` event when this peer learns the address it is seen
/// at (bound to all interfaces), and a `nat` event whenever its NAT status
/// changes.
async fn watch_self(peer: Arc<SwarmPeer>, out: Out) {
    let mut me = peer.me().ok();
    let mut nat = None;
    loop {
        let now = peer.me().ok();
        if now != me {
            if let Some(m) = &now {
                out.emit(
                    json!({"event": "address", "id": m.id.to_string(), "addr": m.addr.to_string()}),
                );
            }
            me = now;
        }
        let status = peer.nat_status().ok();
        if status != nat {
            if let Some(s) = status {
                out.emit(nat_event(s));
            }
            nat = status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `nat` event for `s`.
fn nat_event(s: NatStatus) -> serde_json::Value {
    let (addr, mapping) = match s {
        NatStatus::Public { addr } => (Some(addr), None),
        NatStatus::Mapped { external } => (Some(external), None),
        NatStatus::BehindNat { seen, mapping } => (
            Some(seen),
            Some(match mapping {
                NatMapping::Unknown => "unknown",
                NatMapping::EndpointIndependent => "endpoint-independent",
                NatMapping::AddressDependent => "address-dependent",
            }),
        ),
        NatStatus::Unknown | NatStatus::Named => (None, None),
    };
    let status = match s {
        NatStatus::Unknown => "unknown",
        NatStatus::Named => "named",
        NatStatus::Public { .. } => "public",
        NatStatus::Mapped { .. } => "mapped",
        NatStatus::BehindNat { .. } => "nat",
    };
    json!({
        "event": "nat", "status": status,
        "addr": addr.map(|a| a.to_string()), "mapping": mapping,
    })
}

/// Prints every message received, except while held (`hold SECONDS`):
/// then it reads nothing until the hold ends.
async fn receive(peer: Arc<SwarmPeer>, out: Out, mut held: watch::Receiver<Instant>) {
    loop {
        let until = *held.borrow_and_update();
        if until > Instant::now() {
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = held.changed() => {}
            }
            continue;
        }
        // A hold that starts while waiting takes effect at once: the
        // queue's `recv` can be given up without losing a message.
        let received = tokio::select! {
            r = peer.recv() => r,
            changed = held.changed() => match changed {
                Ok(()) => continue,
                Err(_) => peer.recv().await,
            },
        };
        let Ok(Received {
            from, data, more, ..
        }) = received
        else {
            return;
        };
        out.emit(json!({
            "event": "recv",
            "from": from.addr.to_string(),
            "from_id": from.id.to_string(),
            "data": String::from_utf8_lossy(&data),
            "more": more,
        }));
    }
}

/// Lines of the script, then of stdin, read on a plain thread (a blocked
/// read of stdin must not hold the runtime up at exit).
fn read_lines(script: Option<PathBuf>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    let spawned = std::thread::Builder::new()
        .name("cicada-input".into())
        .spawn(move || {
            if let Some(path) = script {
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        for l in text.lines() {
                            if tx.blocking_send(l.to_string()).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ =
                            tx.blocking_send(format!("error cannot read {}: {e}", path.display()));
                    }
                }
            }
            for l in std::io::stdin().lines() {
                let Ok(l) = l else { break };
                if tx.blocking_send(l).is_err() {
                    return;
                }
            }
        });
    if spawned.is_err() {
        tracing::error!("cannot start the input thread");
    }
    rx
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Go,
    Quit,
}

fn parse_target(s: &str) -> Result<SendTarget, String> {
    if s.len() == 64 {
        if let Ok(h) = s.parse::<Hash>() {
            return Ok(SendTarget::Key(h));
        }
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(SendTarget::Addr(a.into()));
    }
    if let Some((host, port)) = s.rsplit_once(':') {
        if let Ok(p) = port.parse::<u16>() {
            return Ok(SendTarget::Host(host.to_string(), p));
        }
    }
    PeerAddr::ouroboros(s)
        .map(SendTarget::Addr)
        .map_err(|_| format!("bad target {s:?}: want host:port, a name or 64 hex digits"))
}

fn parse_key(s: &str) -> Hash {
    s.parse::<Hash>().unwrap_or_else(|_| Hash::of(s))
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.split_once(char::is_whitespace) {
        Some((w, rest)) => (w, rest.trim_start()),
        None => (s, ""),
    }
}

async fn execute(
    peer: &Arc<SwarmPeer>,
    out: Out,
    line: &str,
    hold: &watch::Sender<Instant>,
) -> Flow {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Flow::Go;
    }
    let (cmd, rest) = split_word(line);
    match cmd.to_ascii_lowercase().as_str() {
        "send" => spawn_send(peer, out, 0, rest),
        "send-dup" => {
            let (n, rest) = split_word(rest);
            match n.parse::<u8>() {
                Ok(n) => spawn_send(peer, out, n, rest),
                Err(_) => out.error(format!("send-dup: bad count {n:?}")),
            }
        }
        "datagram" => {
            let (target_text, data) = split_word(rest);
            let target = match parse_target(target_text) {
                Ok(t) => t,
                Err(e) => {
                    out.error(e);
                    return Flow::Go;
                }
            };
            let (p, target_text, data) = (peer.clone(), target_text.to_string(), data.to_string());
            tokio::spawn(async move {
                let r = p.send_datagram(target, data.as_bytes()).await;
                out.emit(json!({
                    "event": "sent", "target": target_text, "data": data, "unconfirmed": true,
                    "ok": r.is_ok(), "error": r.err().map(|e| e.to_string()),
                }));
            });
        }
        "flood" => {
            // flood COUNT SIZE TARGET: COUNT unconfirmed datagrams of SIZE
            // bytes, back to back, as a load generator.
            let (count, rest) = split_word(rest);
            let (size, target_text) = split_word(rest);
            let (Ok(count), Ok(size)) = (count.parse::<usize>(), size.parse::<usize>()) else {
                out.error(format!("flood: want COUNT SIZE TARGET, got {rest:?}"));
                return Flow::Go;
            };
            if count == 0 || count > MAX_FLOOD || size > MAX_FLOOD_SIZE {
                out.error(format!(
                    "flood: COUNT in 1..={MAX_FLOOD}, SIZE at most {MAX_FLOOD_SIZE}"
                ));
                return Flow::Go;
            }
            let target = match parse_target(target_text.trim()) {
                Ok(t) => t,
                Err(e) => {
                    out.error(e);
                    return Flow::Go;
                }
            };
            let (p, target_text) = (peer.clone(), target_text.trim().to_string());
            tokio::spawn(async move {
                let started = Instant::now();
                let (mut failed, mut error) = (0usize, None);
                for k in 0..count {
                    let mut data = format!("flood-{k}-").into_bytes();
                    data.resize(size.max(data.len()), b'x');
                    if let Err(e) = p.send_datagram(target.clone(), &data).await {
                        failed += 1;
                        error.get_or_insert_with(|| e.to_string());
                    }
                }
                out.emit(json!({
                    "event": "flood", "target": target_text, "count": count, "size": size,
                    "failed": failed, "seconds": started.elapsed().as_secs_f64(), "error": error,
                }));
            });
        }
        "broadcast" | "bcast" => {
            let (p, data) = (peer.clone(), rest.to_string());
            tokio::spawn(async move {
                let r = p.broadcast(data.clone().into_bytes()).await;
                out.emit(json!({
                    "event": "sent", "target": "broadcast", "data": data,
                    "ok": r.is_ok(), "error": r.err().map(|e| e.to_string()),
                }));
            });
        }
        "lookup" => {
            let key = parse_key(rest.trim());
            let p = peer.clone();
            tokio::spawn(async move {
                match p.get_route(key).await {
                    Ok(r) => out.emit(json!({
                        "event": "lookup", "key": key.to_string(), "ok": true,
                        "owner": r.owner.addr.to_string(), "owner_id": r.owner.id.to_string(), "hops": r.hops,
                    })),
                    Err(e) => out.emit(json!({
                        "event": "lookup", "key": key.to_string(), "ok": false, "error": e.to_string(),
                    })),
                }
            });
        }
        "put" => {
            let (key, text) = split_word(rest);
            let (key, text, p) = (parse_key(key), text.to_string(), peer.clone());
            tokio::spawn(async move {
                let r = p.put(key, text.as_bytes().to_vec(), Duration::ZERO).await;
                out.emit(json!({
                    "event": "put", "key": key.to_string(), "ok": r.is_ok(),
                    "error": r.err().map(|e| e.to_string()),
                }));
            });
        }
        "put-signed" => {
            let (name, rest) = split_word(rest);
            let (seq, text) = split_word(rest);
            let Ok(seq) = seq.parse::<u64>() else {
                out.error(format!("put-signed: want NAME SEQ TEXT, got {rest:?}"));
                return Flow::Go;
            };
            let secret = Hash::of(name).to_bytes();
            let (text, p) = (text.to_string(), peer.clone());
            tokio::spawn(async move {
                let r = p
                    .put_signed(&secret, b"", seq, text.into_bytes(), None)
                    .await;
                out.emit(json!({
                    "event": "put", "key": r.as_ref().ok().map(|k| k.to_string()), "seq": seq,
                    "ok": r.is_ok(), "error": r.err().map(|e| e.to_string()),
                }));
            });
        }
        "get" => {
            let (key, p) = (parse_key(rest.trim()), peer.clone());
            tokio::spawn(async move {
                match p.get(key).await {
                    Ok(records) => {
                        let values: Vec<_> = records
                            .iter()
                            .map(|r| json!({"value": String::from_utf8_lossy(&r.value), "seq": r.seq()}))
                            .collect();
                        out.emit(json!({"event": "get", "key": key.to_string(), "ok": true, "values": values}));
                    }
                    Err(e) => out.emit(json!({
                        "event": "get", "key": key.to_string(), "ok": false, "error": e.to_string(),
                    })),
                }
            });
        }
        "listen" => {
            let (key, p) = (parse_key(rest.trim()), peer.clone());
            tokio::spawn(async move {
                match p.listen(key).await {
                    Ok(mut updates) => {
                        out.emit(json!({"event": "listen", "key": key.to_string(), "ok": true}));
                        while let Some(r) = updates.recv().await {
                            out.emit(json!({
                                "event": "update", "key": key.to_string(),
                                "value": String::from_utf8_lossy(&r.value), "seq": r.seq(),
                            }));
                        }
                    }
                    Err(e) => out.emit(json!({
                        "event": "listen", "key": key.to_string(), "ok": false, "error": e.to_string(),
                    })),
                }
            });
        }
        "announce" => {
            let (topic, p) = (rest.trim().to_string(), peer.clone());
            tokio::spawn(async move {
                let r = p.announce(topic.as_bytes(), Duration::ZERO).await;
                out.emit(json!({
                    "event": "announce", "topic": topic, "ok": r.is_ok(),
                    "error": r.err().map(|e| e.to_string()),
                }));
            });
        }
        "find" => {
            let (topic, p) = (rest.trim().to_string(), peer.clone());
            tokio::spawn(async move {
                match p.find(topic.as_bytes()).await {
                    Ok(peers) => {
                        let list: Vec<_> = peers.iter().map(|n| n.addr.to_string()).collect();
                        out.emit(
                            json!({"event": "found", "topic": topic, "ok": true, "peers": list}),
                        );
                    }
                    Err(e) => out.emit(json!({
                        "event": "found", "topic": topic, "ok": false, "error": e.to_string(),
                    })),
                }
            });
        }
        "peers" => match (
            peer.paths().await,
            peer.successor().await,
            peer.predecessor().await,
        ) {
            (Ok(peers), Ok(succ), Ok(pred)) => {
                let list: Vec<_> = peers
                    .iter()
                    .map(|(p, path)| {
                        json!({"id": p.id.to_string(), "addr": p.addr.to_string(), "path": path.to_string()})
                    })
                    .collect();
                out.emit(json!({
                    "event": "peers", "peers": list,
                    "successor": succ.map(|s| s.addr.to_string()),
                    "predecessor": pred.map(|s| s.addr.to_string()),
                }));
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => out.error(e),
        },
        "fingers" => match peer.fingers().await {
            Ok(f) => {
                let list: Vec<_> = f
                    .iter()
                    .map(|p| json!({"id": p.id.to_string(), "addr": p.addr.to_string()}))
                    .collect();
                out.emit(json!({"event": "fingers", "fingers": list}));
            }
            Err(e) => out.error(e),
        },
        "nat" => match peer.nat_status() {
            Ok(st) => out.emit(nat_event(st)),
            Err(e) => out.error(e),
        },
        "observe" => {
            let target = rest.trim().to_string();
            let addr = match parse_target(&target) {
                Ok(SendTarget::Addr(a)) => a,
                Ok(SendTarget::Host(host, port)) => {
                    match (host.as_str(), port)
                        .to_socket_addrs()
                        .map(|mut a| a.next())
                    {
                        Ok(Some(a)) => PeerAddr::Udp(a),
                        _ => {
                            out.error(format!("observe: cannot resolve {target:?}"));
                            return Flow::Go;
                        }
                    }
                }
                Ok(_) => {
                    out.error(format!("observe: want an address, got {target:?}"));
                    return Flow::Go;
                }
                Err(e) => {
                    out.error(e);
                    return Flow::Go;
                }
            };
            let p = peer.clone();
            tokio::spawn(async move {
                let r = p.observe(addr, Duration::from_secs(5)).await;
                out.emit(json!({
                    "event": "observed", "target": target, "ok": r.is_ok(),
                    "seen": r.as_ref().ok().map(|a| a.to_string()),
                    "error": r.err().map(|e| e.to_string()),
                }));
            });
        }
        "stats" => match peer.stats().await {
            Ok(s) => out.emit(json!({
                "event": "stats",
                "datagrams_in": s.core.datagrams_in,
                "datagrams_out": s.core.datagrams_out,
                "dropped_malformed": s.core.dropped_malformed,
                "dropped_version": s.core.dropped_version,
                "dropped_unexpected": s.core.dropped_unexpected,
                "peers_failed": s.core.peers_failed,
                "broadcast_sent": s.core.broadcast_sent,
                "received": s.received,
                "recv_overflow": s.recv_overflow,
                "hooks_dropped": s.hooks_dropped,
                "link_errors": s.link_errors,
                "link_parked": s.link_parked,
                "driver_wakeups": s.driver_wakeups,
                "stale_successor_hints": s.core.stale_successor_hints,
                "retransmits_held": s.core.retransmits_held,
                "punches_started": s.core.punches_started,
                "punches_succeeded": s.core.punches_succeeded,
                "punches_failed": s.core.punches_failed,
                "punches_introduced": s.core.punches_introduced,
                "punches_answered": s.core.punches_answered,
                "keepalives_sent": s.core.keepalives_sent,
                "relay": relay_stats(&s.core),
                "secure": s.secure.map(|k| json!({
                    "sessions": k.sessions,
                    "handshakes_completed": k.handshakes_completed,
                    "handshakes_answered": k.handshakes_answered,
                    "handshakes_failed": k.handshakes_failed,
                    "dropped_malformed": k.dropped_malformed,
                    "dropped_unkeyed": k.dropped_unkeyed,
                    "dropped_bad_mac": k.dropped_bad_mac,
                    "dropped_replay": k.dropped_replay,
                    "dropped_unknown_session": k.dropped_unknown_session,
                    "dropped_rate_limited": k.dropped_rate_limited,
                })),
                "ouroboros": s.ouroboros.map(|f| json!({
                    "open": f.open,
                    "allocated": f.allocated,
                    "accepted": f.accepted,
                    "alloc_failed": f.alloc_failed,
                    "dropped": f.dropped,
                    "closed": f.closed,
                    "most_events": f.most_events,
                    "handed": f.handed,
                    "queued": f.queued,
                    "write_waits": f.write_waits,
                    "control_sent": f.control_sent,
                    "bulk_sent": f.bulk_sent,
                    "refused": f.refused,
                })),
            })),
            Err(e) => out.error(e),
        },
        "wait" | "sleep" => match rest.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => {
                tokio::time::sleep(Duration::from_secs_f64(s)).await
            }
            _ => out.error(format!("wait: bad number of seconds {rest:?}")),
        },
        "hold" => match rest.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => {
                hold.send_replace(Instant::now() + Duration::from_secs_f64(s));
                out.emit(json!({"event": "hold", "seconds": s}));
            }
            _ => out.error(format!("hold: want seconds in 0..=86400, got {rest:?}")),
        },
        "leave" | "disconnect" => match peer.disconnect().await {
            Ok(()) => out.emit(json!({"event": "left"})),
            Err(e) => out.error(e),
        },
        "quit" | "exit" => return Flow::Quit,
        "error" => out.error(rest),
        other => out.error(format!("unknown command {other:?}")),
    }
    Flow::Go
}

fn spawn_send(peer: &Arc<SwarmPeer>, out: Out, duplicates: u8, rest: &str) {
    let (target_text, data) = split_word(rest);
    let target = match parse_target(target_text) {
        Ok(t) => t,
        Err(e) => return out.error(e),
    };
    let (p, target_text, data) = (peer.clone(), target_text.to_string(), data.to_string());
    tokio::spawn(async move {
        match p
            .send_with(
                target,
                data.clone().into_bytes(),
                SendOptions::new().duplicates(duplicates),
            )
            .await
        {
            Ok(d) => out.emit(json!({
                "event": "sent", "target": target_text, "data": data, "ok": true,
                "to": d.to.addr.to_string(), "hops": d.hops,
            })),
            Err(e) => out.emit(json!({
                "event": "sent", "target": target_text, "data": data, "ok": false,
                "error": e.to_string(),
            })),
        }
    });
}

/// The relay counters of a `stats` event.
fn relay_stats(c: &cicada::chord::Stats) -> serde_json::Value {
    json!({
        "punches_relayed": c.punches_relayed,
        "reservations": c.relay_reservations,
        "lost": c.relays_lost,
        "frames": c.relayed_frames,
        "bytes": c.relayed_bytes,
        "dropped": c.relay_dropped,
        "refused": c.relay_refused,
    })
}
