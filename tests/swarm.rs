//! Integration tests of Cicada's SwarmPeer: real `cicada node` processes on
//! loopback, and the API in process. Every wait is bounded; every child
//! process is killed when its guard drops.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use cicada::{Error, Hash, Hooks, PeerConfig, SwarmPeer};
use serde_json::Value;

// ------------------------------------------------------------------ harness

/// Process-heavy tests take this lock so that two rings of processes do not
/// compete for the machine's cores at once.
fn heavy() -> MutexGuard<'static, ()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    let m = LOCK.get_or_init(|| Mutex::new(()));
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Distinct free UDP ports on 127.0.0.1 (held together while picked).
fn free_ports(n: usize) -> Vec<u16> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket"))
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().expect("probe address").port())
        .collect()
}

type Events = Arc<(Mutex<Vec<Value>>, Condvar)>;

/// A running `cicada node --json`, killed on drop.
struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Events,
    addr: String,
    id: String,
    /// Stop with SIGTERM, never SIGKILL (a process killed inside the
    /// Ouroboros library can wedge the IRMd).
    gentle: bool,
}

const NODE_FLAGS: [&str; 7] = [
    "--json",
    "--stabilize-ms",
    "200",
    "--request-timeout-ms",
    "100",
    "--lookup-timeout-ms",
    "3000",
];

impl Node {
    fn start(port: u16, join: Option<&str>) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cicada"));
        cmd.arg("node")
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .args(NODE_FLAGS);
        if let Some(j) = join {
            cmd.arg("--join").arg(j);
        }
        Node::spawn(cmd, port)
    }

    /// Runs `cmd`, which prints JSON event lines, and waits for its `ready`.
    fn spawn(cmd: Command, port: u16) -> Node {
        Node::spawn_with(cmd, &format!("on port {port}"), false)
    }

    /// Like `spawn`; a `gentle` node is only ever stopped with SIGTERM.
    fn spawn_with(mut cmd: Command, label: &str, gentle: bool) -> Node {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start cicada node");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let events: Events = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let ev = events.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let (m, c) = &*ev;
                m.lock().unwrap().push(v);
                c.notify_all();
            }
        });
        let mut node = Node {
            child,
            stdin,
            events,
            addr: String::new(),
            id: String::new(),
            gentle,
        };
        let ready = node
            .wait_for(0, Duration::from_secs(20), |v| v["event"] == "ready")
            .unwrap_or_else(|| {
                let errors = node.all(|v| v["event"] == "error");
                panic!("node {label} never became ready: {errors:?}")
            });
        node.addr = ready["addr"].as_str().unwrap_or_default().to_string();
        node.id = ready["id"].as_str().unwrap_or_default().to_string();
        node
    }

    fn cmd(&mut self, line: &str) {
        if let Some(stdin) = &mut self.stdin {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    fn len(&self) -> usize {
        self.events.0.lock().unwrap().len()
    }

    /// The first event at or after index `from` that matches, waiting at most `timeout`.
    fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        self.wait_n(from, timeout, 1, pred).into_iter().next()
    }

    /// Events at or after `from` that match, once there are at least `n` of
    /// them or `timeout` has passed.
    fn wait_n(
        &self,
        from: usize,
        timeout: Duration,
        n: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.events;
        let mut evs = m.lock().unwrap();
        loop {
            let found: Vec<Value> = evs.iter().skip(from).filter(|v| pred(v)).cloned().collect();
            let now = Instant::now();
            if found.len() >= n || now >= deadline {
                return found;
            }
            evs = c.wait_timeout(evs, deadline - now).unwrap().0;
        }
    }

    fn all(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.events
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|v| pred(v))
            .cloned()
            .collect()
    }

    /// Asks for `peers` and returns (successor, predecessor).
    fn neighbours(&mut self) -> Option<(Value, Value)> {
        let from = self.len();
        self.cmd("peers");
        let v = self.wait_for(from, Duration::from_secs(5), |v| v["event"] == "peers")?;
        Some((v["successor"].clone(), v["predecessor"].clone()))
    }

    fn kill(&mut self) {
        if self.gentle {
            self.terminate(Duration::from_secs(15));
            return;
        }
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits at most `within` for the process to end;
    /// whether it did.
    fn terminate(&mut self, within: Duration) -> bool {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return true;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("process {} still running after SIGTERM", self.child.id());
        false
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn is(event: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["event"] == event
}

fn recv_of(data: String) -> impl Fn(&Value) -> bool {
    move |v| v["event"] == "recv" && v["data"] == data.as_str()
}

/// Waits until every live node's successor and predecessor are the true ones.
fn wait_ring(nodes: &mut [Node], live: &[usize], within: Duration) -> Result<(), String> {
    let mut ring: Vec<(String, String)> = live
        .iter()
        .map(|&i| (nodes[i].id.clone(), nodes[i].addr.clone()))
        .collect();
    ring.sort();
    let n = ring.len();
    let deadline = Instant::now() + within;
    loop {
        let mut wrong = Vec::new();
        for &i in live {
            let pos = ring
                .iter()
                .position(|(id, _)| *id == nodes[i].id)
                .unwrap_or(0);
            let want_succ = &ring[(pos + 1) % n].1;
            let want_pred = &ring[(pos + n - 1) % n].1;
            match nodes[i].neighbours() {
                Some((s, p)) if s == want_succ.as_str() && p == want_pred.as_str() => {}
                got => wrong.push(format!(
                    "{}: got {got:?}, want ({want_succ}, {want_pred})",
                    nodes[i].addr
                )),
            }
        }
        if wrong.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(wrong.join("\n"));
        }
        thread::sleep(Duration::from_millis(300));
    }
}

// -------------------------------------------------------- across processes

#[test]
fn sixteen_processes_route_send_broadcast_and_survive_kills() {
    let _g = heavy();
    let started = Instant::now();
    let ports = free_ports(16);
    let mut nodes: Vec<Node> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let bootstrap = (i > 0).then(|| nodes[i / 2].addr.clone());
        let node = Node::start(*port, bootstrap.as_deref());
        let joined = node.wait_for(0, Duration::from_secs(15), |v| {
            v["event"] == "joined" || v["event"] == "error"
        });
        match joined {
            Some(v) if v["event"] == "joined" => {}
            other => panic!("node {i} did not join: {other:?}"),
        }
        nodes.push(node);
    }
    let all: Vec<usize> = (0..16).collect();
    // A few stabilization periods (200 ms) suffice; the bound leaves room for a loaded CI machine.
    wait_ring(&mut nodes, &all, Duration::from_secs(10)).expect("the ring of 16 converges");
    eprintln!("ring of 16 correct after {:?}", started.elapsed());

    // Every node sends to every other node's address.
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        for (j, addr) in addrs.iter().enumerate() {
            if i != j {
                node.cmd(&format!("send {addr} m-{i}-{j}"));
            }
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let sent = node.wait_n(0, Duration::from_secs(30), 15, is("sent"));
        assert_eq!(sent.len(), 15, "node {i} saw {} send outcomes", sent.len());
        for s in &sent {
            assert_eq!(s["ok"], true, "node {i}: {s}");
        }
    }
    thread::sleep(Duration::from_millis(500)); // room for a duplicate to show
    for (j, node) in nodes.iter().enumerate() {
        let got: Vec<String> = node
            .all(is("recv"))
            .iter()
            .filter_map(|v| v["data"].as_str().map(str::to_string))
            .collect();
        let mut want: Vec<String> = (0..16)
            .filter(|&i| i != j)
            .map(|i| format!("m-{i}-{j}"))
            .collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        want.sort();
        assert_eq!(
            got_sorted, want,
            "node {j} received exactly its messages, once each"
        );
        for v in node.all(is("recv")) {
            let data = v["data"].as_str().unwrap_or_default();
            let sender: usize = data
                .split('-')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(99);
            assert_eq!(v["from"], addrs[sender].as_str(), "sender of {data}");
        }
    }
    eprintln!("240 sends delivered after {:?}", started.elapsed());

    // A broadcast reaches the 15 others once each.
    let marks: Vec<usize> = nodes.iter().map(Node::len).collect();
    nodes[0].cmd("broadcast b-0");
    for (i, node) in nodes.iter().enumerate().skip(1) {
        let got = node.wait_for(marks[i], Duration::from_secs(10), recv_of("b-0".into()));
        assert!(got.is_some(), "node {i} did not receive the broadcast");
    }
    thread::sleep(Duration::from_millis(500));
    for (i, node) in nodes.iter().enumerate() {
        let n = node.all(recv_of("b-0".into())).len();
        assert_eq!(
            n,
            usize::from(i != 0),
            "node {i} received the broadcast {n} times"
        );
    }
    eprintln!("broadcast done after {:?}", started.elapsed());

    // SIGKILL four; the rest keep routing.
    let dead = [3usize, 6, 10, 13];
    for &d in &dead {
        nodes[d].kill();
    }
    let live: Vec<usize> = (0..16).filter(|i| !dead.contains(i)).collect();
    wait_ring(&mut nodes, &live, Duration::from_secs(10)).expect("the ring of 12 converges");
    eprintln!("ring of 12 correct after {:?}", started.elapsed());
    let from = nodes[0].len();
    let sends_started = Instant::now();
    for (j, addr) in addrs.iter().enumerate().skip(1) {
        nodes[0].cmd(&format!("send {addr} k-{j}"));
    }
    let outcomes = nodes[0].wait_n(from, Duration::from_secs(30), 15, is("sent"));
    assert_eq!(
        outcomes.len(),
        15,
        "every send after the kills ends: {outcomes:?}"
    );
    let took = sends_started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "sends after the kills end promptly, took {took:?}"
    );
    for o in &outcomes {
        let data = o["data"].as_str().unwrap_or_default();
        let j: usize = data.trim_start_matches("k-").parse().unwrap_or(0);
        if dead.contains(&j) {
            assert_eq!(o["ok"], false, "send to dead node {j} must fail: {o}");
            assert!(o["error"].is_string(), "with a reason: {o}");
        } else {
            assert_eq!(o["ok"], true, "send to live node {j}: {o}");
        }
    }
    for &j in &live[1..] {
        assert!(
            nodes[j]
                .wait_for(0, Duration::from_secs(5), recv_of(format!("k-{j}")))
                .is_some(),
            "live node {j} got its message"
        );
    }
    eprintln!("whole scenario took {:?}", started.elapsed());
}

#[test]
fn node_process_stops_on_quit_and_signals_but_not_end_of_input() {
    let _g = heavy();
    let ports = free_ports(2);
    // `quit` stops it gracefully.
    let mut a = Node::start(ports[0], None);
    a.cmd("quit");
    assert!(a
        .wait_for(0, Duration::from_secs(5), is("closed"))
        .is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Ok(Some(s)) = a.child.try_wait() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "quit exits 0: {status:?}"
    );

    // End of input does not stop it; SIGTERM does.
    let mut b = Node::start(ports[1], None);
    drop(b.stdin.take());
    thread::sleep(Duration::from_millis(800));
    assert!(
        matches!(b.child.try_wait(), Ok(None)),
        "end of input must not stop the peer"
    );
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(b.child.id().to_string())
        .status();
    assert!(killed.is_ok_and(|s| s.success()));
    assert!(
        b.wait_for(0, Duration::from_secs(5), is("closed"))
            .is_some(),
        "SIGTERM closes gracefully"
    );
}

#[test]
fn node_process_reports_bad_commands_and_lookups() {
    let _g = heavy();
    let ports = free_ports(2);
    let a = Node::start(ports[0], None);
    let mut b = Node::start(ports[1], Some(&a.addr));
    assert!(b
        .wait_for(0, Duration::from_secs(10), is("joined"))
        .is_some());
    assert!(b
        .wait_for(0, Duration::from_secs(5), |v| v["event"] == "peer"
            && v["addr"] == a.addr.as_str())
        .is_some());
    b.cmd("frobnicate");
    assert!(b.wait_for(0, Duration::from_secs(5), is("error")).is_some());
    b.cmd(&format!("lookup {}", a.id));
    let l = b
        .wait_for(0, Duration::from_secs(5), is("lookup"))
        .expect("lookup answers");
    assert_eq!(l["owner"], a.addr.as_str(), "{l}");
    assert_eq!(l["key"], a.id.as_str());
}

#[test]
fn sim_subcommand_runs_the_simulator() {
    let out = Command::new(env!("CARGO_BIN_EXE_cicada"))
        .args(["sim", "--nodes", "30", "--lookups", "30", "--json"])
        .output()
        .expect("run cicada sim");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(v["nodes"], 30);
    assert_eq!(v["ring_correct"], true);
}

// ----------------------------------------------------------------- in process

fn fast() -> PeerConfig {
    PeerConfig::default()
        .stabilize_interval(Duration::from_millis(200))
        .request_timeout(Duration::from_millis(100))
        .lookup_timeout(Duration::from_secs(3))
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn bound(hooks: Hooks, cfg: PeerConfig) -> SwarmPeer {
    let mut p = SwarmPeer::with_config(cfg, hooks);
    p.bind(localhost()).await.expect("bind");
    p
}

/// `n` peers joined one by one into one swarm.
async fn swarm(n: usize, cfg: PeerConfig) -> Vec<SwarmPeer> {
    let mut peers = vec![bound(Hooks::new(), cfg.clone()).await];
    for _ in 1..n {
        let p = bound(Hooks::new(), cfg.clone()).await;
        p.connect(peers[0].listener().unwrap(), Duration::from_secs(5))
            .await
            .expect("connect");
        peers.push(p);
    }
    peers
}

async fn settle(peers: &[SwarmPeer]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut ok = true;
        for p in peers {
            if p.peers().await.map_or(0, |v| v.len()) < peers.len() - 1 {
                ok = false;
            }
        }
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn calls_before_bind_are_clear_errors() {
    let p = SwarmPeer::new(Hooks::new());
    assert!(matches!(p.hash(), Err(Error::NotBound)));
    assert!(matches!(p.listener(), Err(Error::NotBound)));
    assert!(matches!(p.peers().await, Err(Error::NotBound)));
    assert!(matches!(p.recv().await, Err(Error::NotBound)));
    assert!(matches!(p.try_recv(), Err(Error::NotBound)));
    assert!(matches!(
        p.send(Hash::of("k"), &b"x"[..], 0).await,
        Err(Error::NotBound)
    ));
    assert!(matches!(
        p.connect(localhost(), Duration::from_secs(1)).await,
        Err(Error::NotBound)
    ));
    let unbound = SwarmPeer::new(Hooks::new());
    let mut q = bound(Hooks::new(), fast()).await;
    assert!(matches!(
        q.send(&unbound, &b"x"[..], 0).await,
        Err(Error::NotBound)
    ));
    assert!(matches!(
        q.bind(localhost()).await,
        Err(Error::AlreadyBound)
    ));
    q.close().await;
    p.close().await; // closing an unbound peer is harmless
}

#[tokio::test]
async fn close_releases_the_port_and_is_idempotent() {
    let p = bound(Hooks::new(), fast()).await;
    let addr = p.local_addr().unwrap().udp().unwrap();
    p.close().await;
    p.close().await;
    assert!(p.is_closed());
    assert!(matches!(p.peers().await, Err(Error::Closed)));
    assert!(matches!(p.recv().await, Err(Error::Closed)));
    let mut again = SwarmPeer::with_config(fast(), Hooks::new());
    again
        .bind(addr)
        .await
        .expect("the port is free at once after close");
    // Dropping releases it too (shortly, without waiting).
    drop(again);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut third = SwarmPeer::with_config(fast(), Hooks::new());
        match third.bind(addr).await {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => panic!("port not released after drop: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test]
async fn connect_to_nobody_fails_with_an_error_in_bounded_time() {
    let p = bound(Hooks::new(), fast()).await;
    let nobody: SocketAddr = format!("127.0.0.1:{}", free_ports(1)[0]).parse().unwrap();
    let t = Instant::now();
    let r = p.connect(nobody, Duration::from_secs(5)).await;
    assert!(
        matches!(
            r,
            Err(Error::Join(chord::JoinError::Unreachable)) | Err(Error::Timeout)
        ),
        "{r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(6));
    // Still usable as the first member of its own swarm.
    let q = bound(Hooks::new(), fast()).await;
    q.connect(p.listener().unwrap(), Duration::from_secs(5))
        .await
        .expect("joins the failed one");
}

#[tokio::test]
async fn malformed_datagrams_are_dropped_and_counted_and_the_peer_keeps_working() {
    let peers = swarm(2, fast()).await;
    let target = peers[0].listener().unwrap();
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let garbage: [&[u8]; 5] = [
        b"hello",
        &[0xC1],
        &[0xC1, 0xCA, 1, 250, 1, 2, 3],
        &[0xC1, 0xCA, 1, 2, 0xff, 0xff, 0xff, 0xff, 0xff],
        &[0u8; 2000],
    ];
    for g in garbage {
        junk.send_to(g, &target).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let s = peers[0].stats().await.unwrap();
        if s.core.dropped_malformed >= 5 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(stats.core.dropped_malformed >= 5, "{stats:?}");
    let route = peers[1]
        .get_route(peers[0].hash().unwrap())
        .await
        .expect("still routing");
    assert_eq!(route.owner.addr, target);
    let route = peers[0]
        .get_route(peers[1].hash().unwrap())
        .await
        .expect("still routing");
    assert_eq!(route.owner.addr, peers[1].listener().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_fire_and_cannot_deadlock_the_peer() {
    let sent = Arc::new(AtomicUsize::new(0));
    let bad_magic = Arc::new(AtomicUsize::new(0));
    let new_peers: Arc<Mutex<Vec<Hash>>> = Arc::default();
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let (s, b, np, r) = (
        sent.clone(),
        bad_magic.clone(),
        new_peers.clone(),
        received.clone(),
    );
    // A hook that calls back into its own peer, and one that blocks a while.
    let me: Arc<OnceLock<Arc<SwarmPeer>>> = Arc::default();
    let me_in_hook = me.clone();
    let handle = tokio::runtime::Handle::current();
    let hooks = Hooks::new()
        .on_send(move |_to, bytes| {
            s.fetch_add(1, Ordering::Relaxed);
            if !bytes.starts_with(&chord::MAGIC) {
                b.fetch_add(1, Ordering::Relaxed);
            }
        })
        .on_new_peer(move |p| {
            np.lock().unwrap().push(p.id);
            if let Some(me) = me_in_hook.get() {
                let me = me.clone();
                // Waits on the peer from the hook thread: must not deadlock.
                let _ = handle.block_on(me.peers());
            }
            thread::sleep(Duration::from_millis(20));
        })
        .on_recv(move |_from, data| r.lock().unwrap().push(data.to_vec()));
    let hooked = Arc::new(bound(hooks, fast()).await);
    let _ = me.set(hooked.clone());
    let mut others = Vec::new();
    for _ in 0..3 {
        let p = bound(Hooks::new(), fast()).await;
        p.connect(hooked.listener().unwrap(), Duration::from_secs(5))
            .await
            .expect("connect");
        others.push(p);
    }
    // The peer answers promptly while its hooks are busy.
    let t = Instant::now();
    hooked.peers().await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert!(
        sent.load(Ordering::Relaxed) > 0,
        "send hook fires for maintenance traffic"
    );
    assert_eq!(
        bad_magic.load(Ordering::Relaxed),
        0,
        "send hook sees whole datagrams"
    );
    let mut ids = new_peers.lock().unwrap().clone();
    let calls = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(calls, ids.len(), "new_peer fires once per peer");
    let mut want: Vec<Hash> = others.iter().map(|p| p.hash().unwrap()).collect();
    want.sort();
    assert_eq!(
        ids, want,
        "new_peer fired for each peer that entered the routing state"
    );

    // The recv hook sees every application message recv returns.
    for (i, p) in others.iter().enumerate() {
        p.send(&*hooked, format!("hi {i}").into_bytes(), 0)
            .await
            .expect("send to the hooked peer");
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let (_, data, _) = hooked
            .recv_timeout(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("a message");
        got.push(data.to_vec());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut seen = received.lock().unwrap().clone();
    seen.sort();
    got.sort();
    assert_eq!(seen, got);
    hooked.close().await;
}

#[tokio::test]
async fn recv_reports_more_and_counts_overflow() {
    let cfg = fast().recv_queue(3);
    let peers = swarm(2, cfg).await;
    settle(&peers).await;
    let (a, b) = (&peers[0], &peers[1]);
    for i in 0..5 {
        a.send(b.listener().unwrap(), format!("m{i}").into_bytes(), 0)
            .await
            .expect("delivered");
    }
    let mut mores = Vec::new();
    let mut datas = Vec::new();
    while let Some((from, data, more)) = b.try_recv().unwrap() {
        assert_eq!(from.addr, a.listener().unwrap());
        assert_eq!(from.id, a.hash().unwrap());
        mores.push(more);
        datas.push(String::from_utf8_lossy(&data).to_string());
    }
    assert_eq!(datas, ["m0", "m1", "m2"]);
    assert_eq!(mores, [true, true, false]);
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.recv_overflow, 2);
    assert_eq!(stats.received, 5);
    assert!(b
        .recv_timeout(Duration::from_millis(100))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn send_by_key_reaches_the_owner_and_to_a_closed_peer_fails() {
    let peers = swarm(3, fast()).await;
    settle(&peers).await;
    let key = Hash::of("some key");
    let route = peers[0].get_route(key).await.unwrap();
    let d = peers[0]
        .send(key, &b"keyed"[..], 0)
        .await
        .expect("delivered to the owner");
    assert_eq!(d.to, route.owner);
    let owner = peers
        .iter()
        .find(|p| p.hash().unwrap() == route.owner.id)
        .unwrap();
    let (_, data, _) = owner
        .recv_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("owner got it");
    assert_eq!(&data[..], b"keyed");
    let gone = peers[2].listener().unwrap();
    peers[2].close().await;
    let t = Instant::now();
    let r = peers[0].send(gone, &b"late"[..], 0).await;
    assert!(r.is_err(), "send to a closed peer must fail: {r:?}");
    assert!(t.elapsed() < Duration::from_secs(15));
}

#[test]
fn bind_outside_a_runtime_is_an_error_not_a_panic() {
    let mut p = SwarmPeer::new(Hooks::new());
    let r = futures_lite_block_on(p.bind(localhost()));
    assert!(matches!(r, Err(Error::NoRuntime)), "{r:?}");
}

/// Polls a future to completion on this thread, without any runtime.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

#[test]
fn blocking_facade_wraps_the_async_peer() {
    use cicada::blocking;
    let mut a = blocking::SwarmPeer::with_config(fast(), Hooks::new()).unwrap();
    a.bind(localhost()).unwrap();
    let mut b = blocking::SwarmPeer::with_config(fast(), Hooks::new()).unwrap();
    assert!(matches!(b.peers(), Err(Error::NotBound)));
    b.bind(localhost()).unwrap();
    b.connect(a.listener().unwrap(), Duration::from_secs(5))
        .unwrap();
    let route = b.get_route(a.hash().unwrap()).unwrap();
    assert_eq!(route.owner.addr, a.listener().unwrap());
    assert!(b.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
    let addr = a.listener().unwrap().udp().unwrap();
    a.close();
    a.close();
    let mut c = blocking::SwarmPeer::new(Hooks::new()).unwrap();
    c.bind(addr).expect("port released by close");
}

#[tokio::test]
async fn ipv6_peers_join_when_the_host_has_ipv6() {
    let any6: SocketAddr = "[::1]:0".parse().unwrap();
    if std::net::UdpSocket::bind(any6).is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let mut a = SwarmPeer::with_config(fast(), Hooks::new());
    a.bind(any6).await.unwrap();
    let mut b = SwarmPeer::with_config(fast(), Hooks::new());
    b.bind(any6).await.unwrap();
    assert!(a.listener().unwrap().is_ipv6());
    b.connect(a.listener().unwrap(), Duration::from_secs(5))
        .await
        .unwrap();
    let r = b.get_route(a.hash().unwrap()).await.unwrap();
    assert_eq!(r.owner.addr, a.listener().unwrap());
}

#[tokio::test]
async fn connect_reports_a_version_mismatch() {
    // A fake bootstrap that answers anything with "I speak versions 7..=9".
    let fake = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap();
    let answer =
        chord::wire::Message::<SocketAddr>::VersionMismatch(chord::wire::VersionMismatch {
            min: 7,
            max: 9,
        })
        .encode();
    let server = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((_, from)) = fake.recv_from(&mut buf).await {
            let _ = fake.send_to(&answer, from).await;
        }
    });
    let p = bound(Hooks::new(), fast()).await;
    let r = p.connect(fake_addr, Duration::from_secs(5)).await;
    assert!(
        matches!(
            r,
            Err(Error::Join(chord::JoinError::VersionMismatch {
                min: 7,
                max: 9,
                ..
            }))
        ),
        "{r:?}"
    );
    server.abort();
}

#[tokio::test]
async fn oversized_sends_fail_with_a_typed_error() {
    let mut cfg = fast().max_payload(1000);
    cfg.chord.max_fragment = 200; // 1000 bytes travel as several fragments
    let peers = swarm(2, cfg).await;
    let r = peers[0]
        .send(peers[1].listener().unwrap(), vec![0u8; 1001], 0)
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Send(chord::SendError::TooLarge {
                size: 1001,
                max: 1000
            }))
        ),
        "{r:?}"
    );
    // Large but allowed payloads are fragmented by the core and arrive whole.
    let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    peers[0]
        .send(peers[1].listener().unwrap(), big.clone(), 0)
        .await
        .expect("delivered");
    let (_, data, _) = peers[1]
        .recv_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("arrives");
    assert_eq!(&data[..], &big[..]);
}

#[test]
fn node_process_sends_to_keys_and_with_duplicates() {
    let _g = heavy();
    let ports = free_ports(3);
    let mut a = Node::start(ports[0], None);
    let b = Node::start(ports[1], Some(&a.addr));
    let c = Node::start(ports[2], Some(&a.addr));
    for n in [&b, &c] {
        assert!(n
            .wait_for(0, Duration::from_secs(10), is("joined"))
            .is_some());
    }
    // To a key: exactly b's id, so b owns it.
    a.cmd(&format!("send {} keyed", b.id));
    let s = a
        .wait_for(0, Duration::from_secs(10), |v| {
            v["event"] == "sent" && v["data"] == "keyed"
        })
        .expect("outcome");
    assert_eq!(s["ok"], true, "{s}");
    assert_eq!(s["to"], b.addr.as_str());
    assert!(b
        .wait_for(0, Duration::from_secs(5), recv_of("keyed".into()))
        .is_some());
    // With duplicates: still received once.
    a.cmd(&format!("send-dup 2 {} dup", c.addr));
    let s = a
        .wait_for(0, Duration::from_secs(10), |v| {
            v["event"] == "sent" && v["data"] == "dup"
        })
        .expect("outcome");
    assert_eq!(s["ok"], true, "{s}");
    assert!(c
        .wait_for(0, Duration::from_secs(5), recv_of("dup".into()))
        .is_some());
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        c.all(recv_of("dup".into())).len(),
        1,
        "a duplicated send is received once"
    );
    // Malformed datagrams to the process are counted in `stats`.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        junk.send_to(b"not cicada", &a.addr).unwrap();
    }
    thread::sleep(Duration::from_millis(200));
    let from = a.len();
    a.cmd("stats");
    let st = a
        .wait_for(from, Duration::from_secs(5), is("stats"))
        .expect("stats");
    assert!(st["dropped_malformed"].as_u64().unwrap_or(0) >= 3, "{st}");
}

#[tokio::test]
async fn disconnect_leaves_gracefully_and_the_others_notice() {
    let peers = swarm(3, fast()).await;
    settle(&peers).await;
    let leaver = peers[2].me().unwrap();
    peers[2].disconnect().await.expect("leaves");
    assert!(matches!(
        peers[2].get_route(Hash::of("k")).await,
        Err(Error::NotJoined)
    ));
    assert!(peers[2]
        .send(peers[0].listener().unwrap(), &b"x"[..], 0)
        .await
        .is_err());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut gone = true;
        for p in &peers[..2] {
            if p.peers().await.unwrap().contains(&leaver) {
                gone = false;
            }
        }
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the others still list the peer that left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = peers[0].send(leaver.addr, &b"late"[..], 0).await;
    assert!(r.is_err(), "{r:?}");
}

// ------------------------------------------------- the std driver (no tokio)

/// `examples/std_peer`, built by `cargo test` beside this test binary.
fn std_peer_exe() -> std::path::PathBuf {
    let mut p = std::env::current_exe().expect("test binary path");
    p.pop(); // deps
    p.pop(); // profile dir
    p.push("examples");
    p.push(format!("std_peer{}", std::env::consts::EXE_SUFFIX));
    p
}

#[test]
fn a_std_socket_peer_interoperates_with_tokio_peers() {
    let _g = heavy();
    let exe = std_peer_exe();
    assert!(
        exe.exists(),
        "{} not built (cargo test builds examples)",
        exe.display()
    );
    let ports = free_ports(4);
    let mut nodes = vec![Node::start(ports[0], None)];
    let first = nodes[0].addr.clone();
    for p in &ports[1..3] {
        nodes.push(Node::start(*p, Some(&first)));
    }
    // The std peer joins through a tokio peer; once settled it sends to
    // another and broadcasts.
    let target = nodes[1].addr.clone();
    let mut cmd = Command::new(&exe);
    cmd.args(["--bind", &format!("127.0.0.1:{}", ports[3])])
        .args(["--join", &first])
        .args(["--stabilize-ms", "200", "--settle", "2", "--seconds", "20"])
        .args(["--send", &format!("{target}=from-std")])
        .args(["--broadcast", "std-says-hi"]);
    let std_peer = Node::spawn(cmd, ports[3]);
    let std_addr = std_peer.addr.clone();
    assert_eq!(
        std_peer.id,
        Hash::of(&std_addr).to_string(),
        "the std peer's id is the hash of its address, as for tokio peers"
    );
    assert!(
        std_peer
            .wait_for(0, Duration::from_secs(10), is("joined"))
            .is_some(),
        "std peer did not join"
    );
    // std -> tokio: routed send, confirmed, received once.
    let sent = std_peer.wait_for(0, Duration::from_secs(15), is("sent"));
    assert_eq!(
        sent.as_ref().map(|v| v["ok"].clone()),
        Some(Value::Bool(true)),
        "{sent:?}"
    );
    assert!(nodes[1]
        .wait_for(0, Duration::from_secs(5), recv_of("from-std".into()))
        .is_some());
    // std -> everyone: the broadcast reaches each tokio peer.
    for n in &nodes {
        assert!(
            n.wait_for(0, Duration::from_secs(10), recv_of("std-says-hi".into()))
                .is_some(),
            "{} missed the std peer's broadcast",
            n.addr
        );
    }
    // tokio -> std: a send to its address and a broadcast.
    nodes[2].cmd(&format!("send {std_addr} to-std"));
    nodes[0].cmd("broadcast tokio-says-hi");
    assert!(std_peer
        .wait_for(0, Duration::from_secs(10), recv_of("to-std".into()))
        .is_some());
    assert!(std_peer
        .wait_for(0, Duration::from_secs(10), recv_of("tokio-says-hi".into()))
        .is_some());
    thread::sleep(Duration::from_millis(500));
    // Exactly once, everywhere.
    for data in ["to-std", "tokio-says-hi"] {
        assert_eq!(
            std_peer.all(recv_of(data.into())).len(),
            1,
            "{data} at the std peer"
        );
    }
    for n in &nodes {
        assert_eq!(n.all(recv_of("std-says-hi".into())).len(), 1);
    }
    assert_eq!(nodes[1].all(recv_of("from-std".into())).len(), 1);
}

// ------------------------------------------- a peer behind NAT (the NAT lab)

#[path = "support/natlab.rs"]
mod natlab;

#[path = "swarm/ouroboros.rs"]
mod ouroboros;

/// Starts `cicada node` inside the lab's `role` namespace.
fn node_in(lab: &natlab::Lab, role: &str, port: u16, extra: &[&str]) -> Node {
    let mut cmd = lab.exec(role);
    cmd.arg(env!("CARGO_BIN_EXE_cicada"))
        .arg("node")
        .args(NODE_FLAGS)
        .args(extra);
    Node::spawn(cmd, port)
}

/// Sends from `a` to `b` by address and checks the confirmation and the
/// single delivery.
fn exchange(a: &mut Node, b: &Node, text: &str) {
    let (from_a, from_b) = (a.len(), b.len());
    a.cmd(&format!("send {} {text}", b.addr));
    let sent = a.wait_for(from_a, Duration::from_secs(10), is("sent"));
    assert_eq!(
        sent.as_ref().map(|v| v["ok"].clone()),
        Some(Value::Bool(true)),
        "{} -> {}: {sent:?}",
        a.addr,
        b.addr
    );
    let got = b.wait_for(from_b, Duration::from_secs(5), recv_of(text.into()));
    let got = got.unwrap_or_else(|| panic!("{} never received {text}", b.addr));
    assert_eq!(
        got["from"],
        a.addr.as_str(),
        "the sender is known by its external address"
    );
}

#[test]
fn a_peer_behind_nat_maps_its_port_and_swarms_with_the_internet() {
    let _g = heavy();
    let Some(lab) = natlab::Lab::up("a_peer_behind_nat_maps_its_port", &[]) else {
        return;
    };
    for lan_bootstraps in [true, false] {
        let (lan_port, wan_port) = if lan_bootstraps {
            (41000, 41001)
        } else {
            (42000, 42001)
        };
        let lan_bind = format!("0.0.0.0:{lan_port}");
        let wan_bind = format!("198.18.0.1:{wan_port}");
        let (mut lan, mut wan) = if lan_bootstraps {
            let lan = node_in(&lab, "lan1", lan_port, &["--bind", &lan_bind, "--map"]);
            let wan = node_in(
                &lab,
                "wan",
                wan_port,
                &["--bind", &wan_bind, "--join", &lan.addr],
            );
            (lan, wan)
        } else {
            let wan = node_in(&lab, "wan", wan_port, &["--bind", &wan_bind]);
            let lan = node_in(
                &lab,
                "lan1",
                lan_port,
                &["--bind", &lan_bind, "--map", "--join", &wan.addr],
            );
            (lan, wan)
        };
        // The peer behind the NAT is known by the gateway's address.
        assert!(
            lan.addr.starts_with("198.18.0.2:"),
            "lan peer announces {}",
            lan.addr
        );
        assert_eq!(lan.id, Hash::of(&lan.addr).to_string());
        let port: u16 = lan
            .addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        assert!(
            lab.status().contains(&format!("dport {port}")),
            "no DNAT rule for {port}"
        );
        for n in [&lan, &wan] {
            assert!(n
                .wait_for(0, Duration::from_secs(10), is("joined"))
                .is_some());
        }
        exchange(&mut wan, &lan, &format!("wan-to-lan-{lan_bootstraps}"));
        exchange(&mut lan, &wan, &format!("lan-to-wan-{lan_bootstraps}"));
        for lan_sends in [true, false] {
            let (a, b) = if lan_sends {
                (&mut lan, &wan)
            } else {
                (&mut wan, &lan)
            };
            let text = format!("bcast-from-{}", a.addr);
            a.cmd(&format!("broadcast {text}"));
            assert!(
                b.wait_for(0, Duration::from_secs(10), recv_of(text.clone()))
                    .is_some(),
                "{} missed {text}",
                b.addr
            );
        }
        // A graceful exit removes the mapping from the gateway.
        lan.cmd("quit");
        let gone = Instant::now() + Duration::from_secs(10);
        while lab.status().contains(&format!("dport {port}")) && Instant::now() < gone {
            thread::sleep(Duration::from_millis(200));
        }
        assert!(
            !lab.status().contains(&format!("dport {port}")),
            "mapping left behind"
        );
        wan.cmd("quit");
    }
}

// ------------------------------------------------------------------ demo

/// Runs `cicada demo ARGS`, killed after `limit`; returns (exit code, stdout, stderr).
fn run_demo(args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    run_demo_env(args, &[], limit)
}

/// Like `run_demo`, with extra environment variables.
fn run_demo_env(
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cicada"))
        .envs(env.iter().copied())
        .arg("demo")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cicada demo");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st.code(),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    (
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

#[test]
fn demo_of_eight_processes_reports_a_correct_ring_and_full_delivery() {
    let _heavy = heavy();
    let svg = std::env::temp_dir().join(format!("cicada-demo-test-{}.svg", std::process::id()));
    let svg_arg = svg.to_string_lossy().to_string();
    let started = Instant::now();
    let (code, out, err) = run_demo(
        &["--nodes", "8", "--json", "--seed", "42", "--svg", &svg_arg],
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    assert_eq!(
        code,
        Some(0),
        "demo failed or timed out\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(took < Duration::from_secs(40), "the demo took {took:?}");
    let last = out.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("last line {last:?}: {e}"));
    assert_eq!(v["nodes"], 8);
    assert_eq!(v["ring_correct"], true, "{v}");
    assert!(v["join_seconds"].as_f64().is_some_and(|s| s > 0.0), "{v}");
    assert_eq!(v["lookup_success_rate"], 1.0, "{v}");
    assert!(v["hops_mean"].as_f64().is_some_and(|h| h >= 0.0), "{v}");
    assert_eq!(v["send_delivered_rate"], 1.0, "{v}");
    assert_eq!(v["broadcast_coverage"], 1.0, "{v}");
    // A broadcast in N - 1 messages.
    assert_eq!(v["broadcast_messages"], 7, "{v}");
    assert_eq!(v["bad_lines"], 0, "{v}");
    let after = &v["after_churn"];
    assert_eq!(after["killed"], 2, "{v}");
    assert_eq!(after["ring_correct"], true, "{v}");
    assert_eq!(after["lookup_success_rate"], 1.0, "{v}");
    assert_eq!(after["send_delivered_rate"], 1.0, "{v}");
    // All survivors reached.
    assert_eq!(after["broadcast_coverage"], 1.0, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    // The picture: six live peers drawn, two crosses.
    let picture = std::fs::read_to_string(&svg).expect("the demo wrote its SVG");
    let _ = std::fs::remove_file(&svg);
    assert!(picture.starts_with("<svg") && picture.trim_end().ends_with("</svg>"));
    assert_eq!(
        picture.matches("<title>").count(),
        6,
        "live peers in the picture"
    );
    assert!(
        picture.contains("marker-end"),
        "no broadcast tree or fingers drawn"
    );
}

#[test]
fn demo_refuses_what_it_cannot_do() {
    // Without an IRMd (the probe pointed at a socket where none answers),
    // --transport ouroboros fails at once and says why.
    let (code, _, err) = run_demo_env(
        &["--transport", "ouroboros"],
        &[(
            cicada::ouroboros::PROBE_SOCK_ENV,
            "/nonexistent/cicada/irm.sock",
        )],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("needs a running Ouroboros IRMd"), "{err}");
    let (code, _, err) = run_demo(&["--nodes", "1"], Duration::from_secs(10));
    assert_eq!(code, Some(2), "{err}");
}
