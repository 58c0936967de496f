//! The same 64-peer loopback workload on rust-libp2p Kademlia and on Cicada,
//! each in a child process of its own (so that one's memory cannot hide in
//! the other's), and a table of the two.
//!
//! Workload, for both: `--peers` peers in one process on 127.0.0.1, the
//! runtime's two worker threads; they join one by one through the first
//! peer (bootstrap time: the first join started to the last one done); a
//! quiet second; then `--lookups` lookups of random keys spread over the
//! peers, all started at once (lookups per second, to the last answer);
//! then resident memory per peer (the process's RSS after the lookups minus
//! its RSS before the first peer, over the peers).
//!
//! libp2p: TCP + Noise + Yamux, Kademlia in server mode with its default
//! configuration; a join is `add_address(first)` + `bootstrap()` awaited to
//! its last step; a lookup is `get_closest_peers(random PeerId)` awaited to
//! its last step. Cicada: `SwarmPeer` over UDP with the default
//! `PeerConfig`; a join is `connect(first)`, a lookup `get_route(random key)`.
//!
//! `cargo run --release -- [--peers 64] [--lookups 4000]`

use std::process::Command;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: cicada-libp2p-kad-bench [--peers N] [--lookups K] [--system libp2p|cicada]";

struct Args {
    peers: usize,
    lookups: usize,
    system: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        peers: 64,
        lookups: 4000,
        system: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(USAGE)?;
        match k.as_str() {
            "--peers" => a.peers = v.parse().map_err(|_| USAGE)?,
            "--lookups" => a.lookups = v.parse().map_err(|_| USAGE)?,
            "--system" => a.system = Some(v),
            _ => return Err(USAGE.into()),
        }
    }
    Ok(a)
}

/// What one system measured.
#[derive(Debug)]
struct Figures {
    bootstrap_s: f64,
    lookups_per_s: f64,
    lookups_ok: usize,
    rss_per_peer: f64,
}

impl Figures {
    fn line(&self) -> String {
        format!(
            "{} {} {} {}",
            self.bootstrap_s, self.lookups_per_s, self.lookups_ok, self.rss_per_peer
        )
    }
    fn parse(s: &str) -> Option<Figures> {
        let v: Vec<f64> = s
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        (v.len() == 4).then(|| Figures {
            bootstrap_s: v[0],
            lookups_per_s: v[1],
            lookups_ok: v[2] as usize,
            rss_per_peer: v[3],
        })
    }
}

fn rss_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb * 1024.0)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match a.system.as_deref() {
        Some("libp2p") => match rt.block_on(kad::run(a.peers, a.lookups)) {
            Ok(f) => println!("{}", f.line()),
            Err(e) => {
                eprintln!("libp2p: {e}");
                std::process::exit(1);
            }
        },
        Some("cicada") => match rt.block_on(cicada_side::run(a.peers, a.lookups)) {
            Ok(f) => println!("{}", f.line()),
            Err(e) => {
                eprintln!("cicada: {e}");
                std::process::exit(1);
            }
        },
        Some(_) => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
        None => table(&a),
    }
}

/// A table row: its name, the figure it shows, and whether higher is better.
type Row<'a> = (&'a str, &'a dyn Fn(&Figures) -> f64, bool);

/// Runs each system in a child process and prints the table.
fn table(a: &Args) {
    let me = std::env::current_exe().expect("own path");
    let mut results = Vec::new();
    for system in ["libp2p", "cicada"] {
        let out = Command::new(&me)
            .args(["--peers", &a.peers.to_string()])
            .args(["--lookups", &a.lookups.to_string()])
            .args(["--system", system])
            .output()
            .expect("run a child");
        let text = String::from_utf8_lossy(&out.stdout);
        let f = text.lines().last().and_then(Figures::parse);
        if f.is_none() {
            eprintln!(
                "{system} failed: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        results.push((system, f));
    }
    let get = |i: usize, pick: &dyn Fn(&Figures) -> f64| {
        results[i].1.as_ref().map(pick).unwrap_or(f64::NAN)
    };
    println!(
        "{} peers on loopback, {} lookups        {:>14} {:>14} {:>10}",
        a.peers, a.lookups, "libp2p kad", "cicada", "cicada is"
    );
    let rows: [Row; 3] = [
        ("bootstrap, all peers (s)", &|f| f.bootstrap_s, false),
        ("lookups per second", &|f| f.lookups_per_s, true),
        ("resident bytes per peer", &|f| f.rss_per_peer, false),
    ];
    for (name, pick, higher_better) in rows {
        let (l, c) = (get(0, pick), get(1, pick));
        let factor = if higher_better { c / l } else { l / c };
        let verdict = if factor >= 1.0 { "ahead" } else { "behind" };
        println!("{name:<40} {l:>14.3} {c:>14.3} {verdict:>6} x{factor:.2}");
    }
    println!(
        "{:<40} {:>14} {:>14}",
        "lookups answered",
        results[0].1.as_ref().map_or(0, |f| f.lookups_ok),
        results[1].1.as_ref().map_or(0, |f| f.lookups_ok)
    );
}

mod kad {
    use super::*;
    use futures::StreamExt;
    use libp2p::kad::{self, store::MemoryStore, QueryResult};
    use libp2p::swarm::SwarmEvent;
    use libp2p::{noise, tcp, yamux, Multiaddr, PeerId};
    use tokio::sync::{mpsc, oneshot};

    enum Cmd {
        Bootstrap(PeerId, Multiaddr, oneshot::Sender<bool>),
        Lookup(PeerId, oneshot::Sender<bool>),
    }

    /// One libp2p peer in a task of its own; returns its id, address and
    /// command channel.
    async fn spawn_peer() -> Result<(PeerId, Multiaddr, mpsc::Sender<Cmd>), String> {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| e.to_string())?
            .with_behaviour(|key| {
                let id = key.public().to_peer_id();
                kad::Behaviour::with_config(
                    id,
                    MemoryStore::new(id),
                    kad::Config::new(kad::PROTOCOL_NAME),
                )
            })
            .map_err(|e| e.to_string())?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        swarm.behaviour_mut().set_mode(Some(kad::Mode::Server));
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().map_err(|_| "multiaddr")?)
            .map_err(|e| e.to_string())?;
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let id = *swarm.local_peer_id();
        let (tx, mut rx) = mpsc::channel::<Cmd>(8192);
        tokio::spawn(async move {
            let mut waiting: std::collections::HashMap<kad::QueryId, oneshot::Sender<bool>> =
                Default::default();
            loop {
                tokio::select! {
                    c = rx.recv() => match c {
                        Some(Cmd::Bootstrap(peer, addr, reply)) => {
                            swarm.behaviour_mut().add_address(&peer, addr);
                            match swarm.behaviour_mut().bootstrap() {
                                Ok(q) => { waiting.insert(q, reply); }
                                Err(_) => { let _ = reply.send(false); }
                            }
                        }
                        Some(Cmd::Lookup(key, reply)) => {
                            let q = swarm.behaviour_mut().get_closest_peers(key);
                            waiting.insert(q, reply);
                        }
                        None => break,
                    },
                    e = swarm.select_next_some() => {
                        if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed { id, result, step, .. }) = e {
                            if !step.last {
                                continue;
                            }
                            let ok = match result {
                                QueryResult::Bootstrap(r) => r.is_ok(),
                                QueryResult::GetClosestPeers(r) => r.is_ok_and(|ok| !ok.peers.is_empty()),
                                _ => false,
                            };
                            if let Some(r) = waiting.remove(&id) {
                                let _ = r.send(ok);
                            }
                        }
                    }
                }
            }
        });
        Ok((id, addr, tx))
    }

    pub async fn run(n: usize, lookups: usize) -> Result<Figures, String> {
        let before = rss_bytes();
        let mut peers = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            let p = spawn_peer().await?;
            if i > 0 {
                let (first_id, first_addr) = {
                    let f: &(PeerId, Multiaddr, mpsc::Sender<Cmd>) = &peers[0];
                    (f.0, f.1.clone())
                };
                let (tx, rx) = oneshot::channel();
                p.2.send(Cmd::Bootstrap(first_id, first_addr, tx))
                    .await
                    .map_err(|_| "peer task gone")?;
                if !tokio::time::timeout(Duration::from_secs(30), rx)
                    .await
                    .map_err(|_| "bootstrap timed out")?
                    .unwrap_or(false)
                {
                    return Err(format!("bootstrap of peer {i} failed"));
                }
            }
            peers.push(p);
        }
        let bootstrap_s = start.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        let mut waits = Vec::with_capacity(lookups);
        for i in 0..lookups {
            let (tx, rx) = oneshot::channel();
            peers[i % n]
                .2
                .send(Cmd::Lookup(PeerId::random(), tx))
                .await
                .map_err(|_| "peer task gone")?;
            waits.push(rx);
        }
        let mut ok = 0;
        for w in waits {
            if tokio::time::timeout(Duration::from_secs(60), w)
                .await
                .is_ok_and(|r| r.unwrap_or(false))
            {
                ok += 1;
            }
        }
        let lookups_per_s = lookups as f64 / start.elapsed().as_secs_f64();
        let rss_per_peer = (rss_bytes() - before) / n as f64;
        Ok(Figures {
            bootstrap_s,
            lookups_per_s,
            lookups_ok: ok,
            rss_per_peer,
        })
    }
}

mod cicada_side {
    use super::*;
    use cicada::{Hash, Hooks, PeerConfig, SwarmPeer};
    use std::net::SocketAddr;
    use std::sync::Arc;

    pub async fn run(n: usize, lookups: usize) -> Result<Figures, String> {
        let before = rss_bytes();
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut peers: Vec<Arc<SwarmPeer>> = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            let mut p = SwarmPeer::with_config(PeerConfig::default(), Hooks::new());
            p.bind(local).await.map_err(|e| e.to_string())?;
            if i > 0 {
                let first = peers[0].listener().map_err(|e| e.to_string())?;
                p.connect(first, Duration::from_secs(30))
                    .await
                    .map_err(|e| format!("join of peer {i}: {e}"))?;
            }
            peers.push(Arc::new(p));
        }
        let bootstrap_s = start.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..lookups {
            let p = peers[i % n].clone();
            let key = Hash::of(format!("key {i} {:?}", Instant::now()));
            set.spawn(async move { p.get_route(key).await.is_ok() });
        }
        let mut ok = 0;
        while let Some(r) = set.join_next().await {
            if r.unwrap_or(false) {
                ok += 1;
            }
        }
        let lookups_per_s = lookups as f64 / start.elapsed().as_secs_f64();
        let rss_per_peer = (rss_bytes() - before) / n as f64;
        for p in &peers {
            p.close().await;
        }
        Ok(Figures {
            bootstrap_s,
            lookups_per_s,
            lookups_ok: ok,
            rss_per_peer,
        })
    }
}
