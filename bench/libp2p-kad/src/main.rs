//! The same 64-peer loopback workload on rust-libp2p Kademlia and on Cicada
//! (with a swarm key and without), each in a child process of its own (so
//! that one's memory and CPU time cannot hide in another's), every lookup
//! answer checked against the true owner, and a table of the three.
//!
//! Workload, for each: `--peers` peers in one process on 127.0.0.1, the
//! runtime's two worker threads; they join one by one through the first
//! peer (bootstrap time: the first join started to the last one done); a
//! quiet second; then `--lookups` lookups of random keys spread over the
//! peers, all started at once (or `--in-flight` at a time): lookups per second (to the last answer),
//! the p50 and p99 of the time from a lookup's start to its answer, the
//! process's CPU time (user + system) over the lookups divided by their
//! number, and resident memory per peer (the process's RSS after the
//! lookups minus its RSS before the first peer, over the peers).
//!
//! Every answer is checked against the true owner, computed from the full
//! set of peer ids: for Cicada the key's successor on the ring (the first
//! id at or after the key, wrapping), for libp2p the peer closest to the
//! key by XOR distance among all of them (the answer being the closest of
//! the peers the query returned and the asking peer itself, which a query
//! does not return). Wrong answers are counted and printed.
//!
//! libp2p: TCP + Noise + Yamux (every connection authenticated and
//! encrypted), Kademlia in server mode with its default configuration, and
//! identify (without it a peer that dials in is never added to a routing
//! table: Kademlia learns its listen address from identify); a
//! join is `add_address(first)` + `bootstrap()` awaited to its last step; a
//! lookup is `get_closest_peers(random PeerId)` awaited to its last step.
//! Cicada: `SwarmPeer` over UDP with the default `PeerConfig`, with a swarm
//! key (every datagram authenticated and encrypted, `cicada-keyed`) or
//! without (`cicada`); a join is `connect(first)`, a lookup
//! `get_route(random key)`.
//!
//! `cargo run --release -- [--peers 64] [--lookups 4000] [--in-flight W]`

use std::process::Command;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: cicada-libp2p-kad-bench [--peers N] [--lookups K] \
                     [--in-flight W] [--system libp2p|cicada-keyed|cicada]";

/// The systems, in the order of the table.
const SYSTEMS: [&str; 3] = ["libp2p", "cicada-keyed", "cicada"];

struct Args {
    peers: usize,
    lookups: usize,
    /// Lookups in flight at once (all of them by default).
    in_flight: usize,
    system: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        peers: 64,
        lookups: 4000,
        in_flight: usize::MAX,
        system: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(USAGE)?;
        match k.as_str() {
            "--peers" => a.peers = v.parse().map_err(|_| USAGE)?,
            "--lookups" => a.lookups = v.parse().map_err(|_| USAGE)?,
            "--in-flight" => a.in_flight = v.parse().map_err(|_| USAGE)?,
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
    /// Lookups that returned an answer in time.
    answered: usize,
    /// Answers that named another peer than the true owner.
    wrong: usize,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_lookup: f64,
    rss_per_peer: f64,
}

impl Figures {
    fn line(&self) -> String {
        format!(
            "figures {} {} {} {} {} {} {} {}",
            self.bootstrap_s,
            self.lookups_per_s,
            self.answered,
            self.wrong,
            self.p50_ms,
            self.p99_ms,
            self.cpu_us_per_lookup,
            self.rss_per_peer
        )
    }
    fn parse(s: &str) -> Option<Figures> {
        let v: Vec<f64> = s
            .strip_prefix("figures ")?
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        (v.len() == 8).then(|| Figures {
            bootstrap_s: v[0],
            lookups_per_s: v[1],
            answered: v[2] as usize,
            wrong: v[3] as usize,
            p50_ms: v[4],
            p99_ms: v[5],
            cpu_us_per_lookup: v[6],
            rss_per_peer: v[7],
        })
    }
}

/// The lookup phase as each side measures it.
struct Lookups {
    /// Seconds from each lookup's start to its answer (answered ones).
    times: Vec<f64>,
    /// Wall seconds of the whole phase.
    wall: f64,
    /// CPU seconds of the process over the phase.
    cpu: f64,
    wrong: usize,
}

impl Lookups {
    fn figures(mut self, bootstrap_s: f64, lookups: usize, rss_per_peer: f64) -> Figures {
        self.times.sort_by(|a, b| a.total_cmp(b));
        let at = |p: f64| {
            let n = self.times.len();
            if n == 0 {
                f64::NAN
            } else {
                self.times[((p * n as f64).ceil() as usize).clamp(1, n) - 1] * 1e3
            }
        };
        Figures {
            bootstrap_s,
            lookups_per_s: lookups as f64 / self.wall,
            answered: self.times.len(),
            wrong: self.wrong,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            cpu_us_per_lookup: self.cpu / lookups as f64 * 1e6,
            rss_per_peer,
        }
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

/// CPU seconds (user + system) the process has used, all threads.
fn cpu_seconds() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given.
    let u = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) != 0 {
            return f64::NAN;
        }
        u.assume_init()
    };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
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
    let result = match a.system.as_deref() {
        Some("libp2p") => rt.block_on(kad::run(a.peers, a.lookups, a.in_flight)),
        Some("cicada-keyed") => {
            rt.block_on(cicada_side::run(a.peers, a.lookups, a.in_flight, true))
        }
        Some("cicada") => rt.block_on(cicada_side::run(a.peers, a.lookups, a.in_flight, false)),
        Some(_) => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
        None => {
            table(&a);
            return;
        }
    };
    match result {
        Ok(f) => println!("{}", f.line()),
        Err(e) => {
            eprintln!("{}: {e}", a.system.unwrap_or_default());
            std::process::exit(1);
        }
    }
}

/// A table row: its name, the figure it shows, and whether higher is better.
type Row<'a> = (&'a str, &'a dyn Fn(&Figures) -> f64, bool);

/// Runs each system in a child process and prints the table.
fn table(a: &Args) {
    let me = std::env::current_exe().expect("own path");
    let mut results = Vec::new();
    for system in SYSTEMS {
        let out = Command::new(&me)
            .args(["--peers", &a.peers.to_string()])
            .args(["--lookups", &a.lookups.to_string()])
            .args(["--in-flight", &a.in_flight.min(a.lookups).to_string()])
            .args(["--system", system])
            .output()
            .expect("run a child");
        let text = String::from_utf8_lossy(&out.stdout);
        for l in text
            .lines()
            .filter(|l| l.starts_with("wrong ") || l.starts_with("note "))
        {
            println!("{system}: {l}");
        }
        let f = text.lines().last().and_then(Figures::parse);
        if f.is_none() {
            eprintln!(
                "{system} failed: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        results.push(f);
    }
    let get = |i: usize, pick: &dyn Fn(&Figures) -> f64| {
        results[i].as_ref().map(pick).unwrap_or(f64::NAN)
    };
    println!(
        "{} peers on loopback, {} lookups, {} in flight {:>12} {:>12} {:>12} {:>10} {:>10}",
        a.peers,
        a.lookups,
        a.in_flight.min(a.lookups),
        SYSTEMS[0],
        SYSTEMS[1],
        SYSTEMS[2],
        "keyed is",
        "unkeyed is"
    );
    let rows: [Row; 8] = [
        ("bootstrap, all peers (s)", &|f| f.bootstrap_s, false),
        ("lookups per second", &|f| f.lookups_per_s, true),
        ("lookup p50 (ms)", &|f| f.p50_ms, false),
        ("lookup p99 (ms)", &|f| f.p99_ms, false),
        ("CPU per lookup (us)", &|f| f.cpu_us_per_lookup, false),
        ("resident bytes per peer", &|f| f.rss_per_peer, false),
        ("lookups answered", &|f| f.answered as f64, true),
        ("wrong answers", &|f| f.wrong as f64, false),
    ];
    for (name, pick, higher_better) in rows {
        let v: Vec<f64> = (0..3).map(|i| get(i, pick)).collect();
        let factor = |c: f64| {
            let x = if higher_better { c / v[0] } else { v[0] / c };
            if x.is_finite() {
                format!("x{x:.2}")
            } else {
                "-".into()
            }
        };
        println!(
            "{name:<36} {:>12.3} {:>12.3} {:>12.3} {:>10} {:>10}",
            v[0],
            v[1],
            v[2],
            factor(v[1]),
            factor(v[2])
        );
    }
    println!("(\"x\" factors: how many times better than libp2p; above 1 is better)");
}

mod kad {
    use super::*;
    use futures::StreamExt;
    use libp2p::kad::{self, store::MemoryStore, KBucketKey, QueryResult};
    use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
    use libp2p::{identify, noise, tcp, yamux, Multiaddr, PeerId};
    use std::sync::Arc;
    use tokio::sync::{mpsc, oneshot, Semaphore};

    /// Kademlia, and identify to learn the listen addresses of peers that
    /// dial in.
    #[derive(NetworkBehaviour)]
    #[behaviour(to_swarm = "Event")]
    struct Behaviour {
        kad: kad::Behaviour<MemoryStore>,
        identify: identify::Behaviour,
    }

    #[allow(clippy::large_enum_variant)]
    enum Event {
        Kad(kad::Event),
        Identify(identify::Event),
    }

    impl From<kad::Event> for Event {
        fn from(e: kad::Event) -> Self {
            Event::Kad(e)
        }
    }

    impl From<identify::Event> for Event {
        fn from(e: identify::Event) -> Self {
            Event::Identify(e)
        }
    }

    /// A query's outcome: for a lookup, the peers it returned.
    type Reply = oneshot::Sender<Option<Vec<PeerId>>>;

    enum Cmd {
        Bootstrap(PeerId, Multiaddr, Reply),
        Lookup(PeerId, Reply),
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
                Behaviour {
                    kad: kad::Behaviour::with_config(
                        id,
                        MemoryStore::new(id),
                        kad::Config::new(kad::PROTOCOL_NAME),
                    ),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/cicada-bench/1".into(),
                        key.public(),
                    )),
                }
            })
            .map_err(|e| e.to_string())?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
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
            let mut waiting: std::collections::HashMap<kad::QueryId, Reply> = Default::default();
            loop {
                tokio::select! {
                    c = rx.recv() => match c {
                        Some(Cmd::Bootstrap(peer, addr, reply)) => {
                            swarm.behaviour_mut().kad.add_address(&peer, addr);
                            match swarm.behaviour_mut().kad.bootstrap() {
                                Ok(q) => { waiting.insert(q, reply); }
                                Err(_) => { let _ = reply.send(None); }
                            }
                        }
                        Some(Cmd::Lookup(key, reply)) => {
                            let q = swarm.behaviour_mut().kad.get_closest_peers(key);
                            waiting.insert(q, reply);
                        }
                        None => break,
                    },
                    e = swarm.select_next_some() => {
                        // A peer that dialled us is known by its listen
                        // addresses only through identify, as in any
                        // libp2p deployment: without them Kademlia cannot
                        // add it to the routing table.
                        if let SwarmEvent::Behaviour(Event::Identify(identify::Event::Received { peer_id, info, .. })) = &e {
                            for a in &info.listen_addrs {
                                swarm.behaviour_mut().kad.add_address(peer_id, a.clone());
                            }
                        }
                        if let SwarmEvent::Behaviour(Event::Kad(kad::Event::OutboundQueryProgressed { id, result, step, .. })) = e {
                            if !step.last {
                                continue;
                            }
                            let found = match result {
                                QueryResult::Bootstrap(r) => r.ok().map(|_| Vec::new()),
                                QueryResult::GetClosestPeers(r) => r
                                    .ok()
                                    .map(|ok| ok.peers.into_iter().map(|p| p.peer_id).collect()),
                                _ => None,
                            };
                            if let Some(r) = waiting.remove(&id) {
                                let _ = r.send(found);
                            }
                        }
                    }
                }
            }
        });
        Ok((id, addr, tx))
    }

    /// The peer of `among` closest to `key` by XOR distance.
    fn closest(key: PeerId, among: impl IntoIterator<Item = PeerId>) -> Option<PeerId> {
        let k = KBucketKey::from(key);
        among
            .into_iter()
            .min_by_key(|p| KBucketKey::from(*p).distance(&k))
    }

    pub async fn run(n: usize, lookups: usize, in_flight: usize) -> Result<Figures, String> {
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
                if tokio::time::timeout(Duration::from_secs(30), rx)
                    .await
                    .map_err(|_| "bootstrap timed out")?
                    .ok()
                    .flatten()
                    .is_none()
                {
                    return Err(format!("bootstrap of peer {i} failed"));
                }
            }
            peers.push(p);
        }
        let bootstrap_s = start.elapsed().as_secs_f64();
        let ids: Vec<PeerId> = peers.iter().map(|p| p.0).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (start, cpu) = (Instant::now(), cpu_seconds());
        let gate = Arc::new(Semaphore::new(in_flight.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..lookups {
            let (key, peer, gate) = (PeerId::random(), peers[i % n].2.clone(), gate.clone());
            set.spawn(async move {
                let _permit = gate.acquire_owned().await.ok()?;
                let (tx, rx) = oneshot::channel();
                let asked = Instant::now();
                peer.send(Cmd::Lookup(key, tx)).await.ok()?;
                let found = tokio::time::timeout(Duration::from_secs(60), rx)
                    .await
                    .ok()?
                    .ok()??;
                Some((i % n, key, asked.elapsed().as_secs_f64(), found))
            });
        }
        let mut answers = Vec::with_capacity(lookups);
        while let Some(r) = set.join_next().await {
            if let Ok(Some(a)) = r {
                answers.push(a);
            }
        }
        let wall = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        let rss_per_peer = (rss_bytes() - before) / n as f64;
        let mut times = Vec::with_capacity(answers.len());
        let mut wrong = 0;
        for (from, key, t, found) in answers {
            times.push(t);
            let answer = closest(key, found.iter().copied().chain([ids[from]]));
            let truth = closest(key, ids.iter().copied());
            if answer != truth {
                wrong += 1;
                println!(
                    "wrong key {key}: asked peer {from}, answer {answer:?}, true closest {truth:?} ({} peers returned)",
                    found.len()
                );
            }
        }
        let l = Lookups {
            times,
            wall,
            cpu,
            wrong,
        };
        Ok(l.figures(bootstrap_s, lookups, rss_per_peer))
    }
}

mod cicada_side {
    use super::*;
    use cicada::{node_id, Hash, Hooks, PeerConfig, SwarmKey, SwarmPeer};
    use std::net::SocketAddr;
    use std::sync::Arc;

    /// The owner of `key` on a ring of the sorted `ids`: its successor,
    /// the first id at or after it, wrapping to the first.
    pub(crate) fn successor(ids: &[Hash], key: &Hash) -> Hash {
        ids[ids.partition_point(|id| id < key) % ids.len()]
    }

    /// Counters summed over `peers`: the core's requests over a source's
    /// rate limit, replies held by the amplification guard, replies
    /// deferred, owners looked up again, drops for overload; the swarm
    /// key's handshakes, retries, failures, handshake messages over the
    /// budget, datagrams refused or dropped while waiting for a handshake,
    /// and datagrams dropped on arrival.
    async fn counters(peers: &[Arc<SwarmPeer>]) -> [u64; 11] {
        let mut c = [0u64; 11];
        for p in peers {
            let Ok(st) = p.stats().await else { continue };
            c[0] += st.core.dropped_rate_limited;
            c[1] += st.core.dropped_amplification;
            c[2] += st.core.replies_deferred;
            c[3] += st.core.lookup_owners_silent + st.core.lookup_owners_disowned;
            c[4] += st.core.dropped_overload;
            if let Some(s) = st.secure {
                c[5] += s.handshakes_initiated;
                c[6] += s.handshake_retries;
                c[7] += s.handshakes_failed;
                c[8] += s.dropped_rate_limited;
                c[9] += s.dropped_queue_full + s.dropped_handshake_failed;
                c[10] += s.dropped_unknown_session
                    + s.dropped_replay
                    + s.dropped_bad_mac
                    + s.dropped_malformed;
            }
        }
        c
    }

    pub async fn run(
        n: usize,
        lookups: usize,
        in_flight: usize,
        keyed: bool,
    ) -> Result<Figures, String> {
        let before = rss_bytes();
        let mut cfg = PeerConfig::default();
        if keyed {
            cfg = cfg.swarm_key(SwarmKey::generate().map_err(|e| e.to_string())?);
        }
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut peers: Vec<Arc<SwarmPeer>> = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            let mut p = SwarmPeer::with_config(cfg.clone(), Hooks::new());
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
        let mut ids = peers
            .iter()
            .map(|p| p.listener().map(|a| node_id(&a)))
            .collect::<Result<Vec<Hash>, _>>()
            .map_err(|e| e.to_string())?;
        ids.sort();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let at_start = counters(&peers).await;
        let (start, cpu) = (Instant::now(), cpu_seconds());
        let gate = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..lookups {
            let (p, gate) = (peers[i % n].clone(), gate.clone());
            let key = Hash::of(format!("key {i} {:?}", Instant::now()));
            set.spawn(async move {
                let _permit = gate.acquire_owned().await;
                let asked = Instant::now();
                let r = p.get_route(key).await;
                (
                    i % n,
                    key,
                    asked.elapsed().as_secs_f64(),
                    r.map(|r| r.owner.id),
                )
            });
        }
        let mut answers = Vec::with_capacity(lookups);
        while let Some(r) = set.join_next().await {
            if let Ok((from, key, t, Ok(owner))) = r {
                answers.push((from, key, t, owner));
            }
        }
        let wall = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        let rss_per_peer = (rss_bytes() - before) / n as f64;
        let mut times = Vec::with_capacity(answers.len());
        let mut wrong = 0;
        for (from, key, t, owner) in answers {
            times.push(t);
            let truth = successor(&ids, &key);
            if owner != truth {
                wrong += 1;
                println!(
                    "wrong key {key}: asked peer {from}, answer {owner}, true successor {truth}"
                );
            }
        }
        // What the swarm key and the core's defences did during the
        // lookups: a lookup that waits for a handshake, or whose request
        // was dropped and sent again, shows here.
        let after = counters(&peers).await;
        let d: Vec<u64> = after.iter().zip(&at_start).map(|(a, b)| a - b).collect();
        println!(
            "note during the lookups, core: {} requests over a source's rate limit, {} replies held \
             by the amplification guard, {} replies deferred until verified, {} owners looked up \
             again, {} dropped for overload",
            d[0], d[1], d[2], d[3], d[4]
        );
        if keyed {
            println!(
                "note during the lookups, swarm key: {} handshakes, {} retried, {} failed, {} \
                 handshake messages over the budget, {} datagrams refused or dropped while waiting \
                 for one, {} dropped on arrival (unknown session, replay, bad MAC, malformed)",
                d[5], d[6], d[7], d[8], d[9], d[10]
            );
        }
        for p in &peers {
            p.close().await;
        }
        let l = Lookups {
            times,
            wall,
            cpu,
            wrong,
        };
        Ok(l.figures(bootstrap_s, lookups, rss_per_peer))
    }
}

#[cfg(test)]
mod tests {
    use super::cicada_side::successor;
    use cicada::Hash;

    fn h(b: u8) -> Hash {
        let mut bytes = [0u8; 32];
        bytes[0] = b;
        Hash::from_bytes(bytes)
    }

    #[test]
    fn the_successor_is_the_first_id_at_or_after_the_key_wrapping() {
        let ids = [h(10), h(20), h(30)];
        assert_eq!(successor(&ids, &h(10)), h(10)); // a peer owns its own id
        assert_eq!(successor(&ids, &h(11)), h(20));
        assert_eq!(successor(&ids, &h(30)), h(30));
        assert_eq!(successor(&ids, &h(31)), h(10)); // past the last: wraps
        assert_eq!(successor(&ids, &Hash::ZERO), h(10));
    }
}
