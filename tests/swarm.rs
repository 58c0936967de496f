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

use cicada::{Error, Hash, Hooks, PeerConfig, SecureConfig, SwarmKey, SwarmPeer};
use require::Need;
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

/// The value of a `NODE_FLAGS` flag given in milliseconds.
fn flag_ms(name: &str) -> Duration {
    let at = NODE_FLAGS
        .iter()
        .position(|f| *f == name)
        .unwrap_or_else(|| panic!("{name} is not in NODE_FLAGS"));
    let ms = NODE_FLAGS[at + 1]
        .parse()
        .unwrap_or_else(|_| panic!("{name} in NODE_FLAGS is not a number"));
    Duration::from_millis(ms)
}

impl Node {
    fn start(port: u16, join: Option<&str>) -> Node {
        Node::start_with(port, join, &NODE_FLAGS)
    }

    /// Like `start`, with other flags than `NODE_FLAGS`.
    fn start_with(port: u16, join: Option<&str>, flags: &[&str]) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cicada"));
        cmd.arg("node")
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .args(flags);
        if let Some(j) = join {
            cmd.arg("--join").arg(j);
        }
        Node::spawn(cmd, port)
    }

    /// Runs `cmd`, which prints JSON event lines, and waits for its `ready`.
    fn spawn(cmd: Command, port: u16) -> Node {
        if port != 0 {
            return Node::spawn_with(cmd, &format!("on port {port}"), false);
        }
        // Bound to port 0: a label of its own all the same (it names the
        // node's log file under CICADA_TEST_LOGDIR).
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Node::spawn_with(cmd, &format!("on a free port, node {n}"), false)
    }

    /// Like `spawn`; a `gentle` node is only ever stopped with SIGTERM.
    fn spawn_with(mut cmd: Command, label: &str, gentle: bool) -> Node {
        // With CICADA_TEST_LOGDIR set, each node's stderr (its `RUST_LOG`
        // diagnostics) goes to a file there, named after the node.
        let stderr = std::env::var_os("CICADA_TEST_LOGDIR")
            .and_then(|dir| {
                let name: String = label
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                std::fs::File::create(std::path::Path::new(&dir).join(name + ".log")).ok()
            })
            .map_or_else(Stdio::null, Stdio::from);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
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
                // Say whether the process is still there (slow) or gone
                // (crashed, or never ran): a flake seen once said neither.
                let errors = node.all(|v| v["event"] == "error");
                let status = node.child.try_wait();
                let lines = node.len();
                panic!(
                    "node {label} never became ready within 20 s: errors {errors:?}, \
                     {lines} event lines, process {status:?} (Ok(None): still running)"
                )
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

    /// Asks for `peers` and returns the answer.
    fn peers(&mut self) -> Option<Value> {
        let from = self.len();
        self.cmd("peers");
        self.wait_for(from, Duration::from_secs(5), |v| v["event"] == "peers")
    }

    /// How many peers the node knows.
    fn known(&mut self) -> Option<usize> {
        self.peers()?["peers"].as_array().map(Vec::len)
    }

    /// The node's (successor, predecessor).
    fn neighbours(&mut self) -> Option<(Value, Value)> {
        let v = self.peers()?;
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

/// Asks `check` every 300 ms until it passes or `within` is over; the
/// last failure is the error. With `within` zero, asks once.
fn poll_until(
    within: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(300)),
        }
    }
}

/// Waits until every live node's successor and predecessor are the true ones.
fn wait_ring(nodes: &mut [Node], live: &[usize], within: Duration) -> Result<(), String> {
    let mut ring: Vec<(String, String)> = live
        .iter()
        .map(|&i| (nodes[i].id.clone(), nodes[i].addr.clone()))
        .collect();
    ring.sort();
    let n = ring.len();
    poll_until(within, || {
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
            Ok(())
        } else {
            Err(wrong.join("\n"))
        }
    })
}

/// Waits until every node in `live` knows all the others (a settled ring
/// of fewer nodes than a successor list holds).
fn wait_settled(nodes: &mut [Node], live: &[usize], within: Duration) -> Result<(), String> {
    let want = live.len() - 1;
    poll_until(within, || {
        let short: Vec<String> = live
            .iter()
            .filter_map(|&i| match nodes[i].known() {
                Some(k) if k >= want => None,
                got => Some(format!("{} knows {got:?} of {want}", nodes[i].addr)),
            })
            .collect();
        if short.is_empty() {
            Ok(())
        } else {
            Err(short.join("\n"))
        }
    })
}

// -------------------------------------------------------- across processes

#[test]
fn sixteen_processes_route_send_broadcast_and_survive_kills() {
    let _g = heavy();
    let started = Instant::now();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..16 {
        let bootstrap = (i > 0).then(|| nodes[i / 2].addr.clone());
        // Port 0: see `ring_with`.
        let node = Node::start(0, bootstrap.as_deref());
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

/// A small deterministic generator for test choices; the seed is printed
/// so that a failing run can be replayed (`CICADA_TEST_SEED`).
struct Lcg(u64);

impl Lcg {
    fn from_env() -> Lcg {
        let seed = std::env::var("CICADA_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("CICADA_TEST_SEED={seed}");
        Lcg(seed)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// Starts `n` nodes, each joining through an earlier one, and waits for a
/// correct ring.
fn ring_of(n: usize, within: Duration) -> Vec<Node> {
    ring_with(n, within, &NODE_FLAGS)
}

/// Like `ring_of`, with other node flags.
///
/// Each node binds port 0 and reports the port it got (its `ready` event):
/// ports probed free beforehand and bound seconds later were taken in the
/// meantime by another test's socket once in a CI run ("Address already
/// in use" for node 20 of 32).
fn ring_with(n: usize, within: Duration, flags: &[&str]) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let bootstrap = (i > 0).then(|| nodes[i / 2].addr.clone());
        let node = Node::start_with(0, bootstrap.as_deref(), flags);
        match node.wait_for(0, Duration::from_secs(15), |v| {
            v["event"] == "joined" || v["event"] == "error"
        }) {
            Some(v) if v["event"] == "joined" || i == 0 => {}
            other => panic!("node {i} did not join: {other:?}"),
        }
        nodes.push(node);
    }
    let all: Vec<usize> = (0..n).collect();
    wait_ring(&mut nodes, &all, within).unwrap_or_else(|e| panic!("ring of {n}: {e}"));
    nodes
}

/// Checks every send outcome of `senders` against what the receivers
/// printed: a send reported delivered was received exactly once by its
/// target (or, for a target marked `x` in `fate`, killed, at most once), a
/// send reported failed was received at most once, and every send has an
/// outcome. Returns (delivered, failed).
fn check_outcomes(nodes: &[Node], senders: &[usize], sent: usize, fate: &str) -> (usize, usize) {
    let addrs: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    let (mut delivered, mut failed) = (0, 0);
    let mut all = Vec::new();
    for &i in senders {
        let outcomes = nodes[i].wait_n(0, Duration::from_secs(30), sent, |v| {
            v["event"] == "sent" && v["target"] != "broadcast"
        });
        assert_eq!(outcomes.len(), sent, "node {i}: every send has an outcome");
        all.extend(outcomes);
    }
    // A receiver prints a message a moment after it confirms it.
    thread::sleep(Duration::from_millis(500));
    {
        for o in all {
            let data = o["data"].as_str().unwrap_or_default().to_string();
            let target = o["target"].as_str().unwrap_or_default();
            let j = addrs
                .iter()
                .position(|a| *a == target)
                .expect("a known target");
            let got = nodes[j].all(recv_of(data.clone())).len();
            let survivor = fate.as_bytes().get(j).is_none_or(|c| *c != b'x');
            if o["ok"] == true {
                delivered += 1;
                assert_eq!(o["to"], target, "{o}");
                if survivor {
                    assert_eq!(
                        got, 1,
                        "{data} to survivor {j} reported delivered, received {got} times"
                    );
                } else {
                    assert!(got <= 1, "{data} to {j} received {got} times");
                }
            } else {
                failed += 1;
                assert!(o["error"].is_string(), "a failure says why: {o}");
                assert!(got <= 1, "{data} to {j} received {got} times");
            }
        }
    }
    (delivered, failed)
}

#[test]
fn thirty_two_processes_keep_their_promises_while_a_quarter_is_killed() {
    let _g = heavy();
    let mut rng = Lcg::from_env();
    let started = Instant::now();
    let n = 32;
    let mut nodes = ring_of(n, Duration::from_secs(20));
    eprintln!("ring of {n} correct after {:?}", started.elapsed());
    // Eight victims, chosen now; the survivors send and broadcast.
    let mut fate = vec![b'.'; n];
    while fate.iter().filter(|c| **c == b'x').count() < n / 4 {
        fate[rng.below(n)] = b'x';
    }
    let fate = String::from_utf8(fate).unwrap_or_default();
    let victims: Vec<usize> = (0..n).filter(|&i| fate.as_bytes()[i] == b'x').collect();
    let live: Vec<usize> = (0..n).filter(|i| !victims.contains(i)).collect();
    eprintln!("fate {fate}");
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    // For 3 s, every 100 ms, each survivor sends to a random node; the
    // victims die one by one at random moments in that window.
    let rounds = 30;
    let mut kill_at: Vec<usize> = victims.iter().map(|_| rng.below(rounds)).collect();
    kill_at.sort();
    let mut next_victim = 0;
    let mut last_kill = Instant::now();
    let mut broadcasts = Vec::new();
    for r in 0..rounds {
        for &i in &live {
            let j = rng.below(n);
            if j != i {
                nodes[i].cmd(&format!("send {} c-{i}-{r}", addrs[j]));
            } else {
                nodes[i].cmd(&format!("send {} c-{i}-{r}", addrs[(j + 1) % n]));
            }
        }
        if r % 10 == 5 {
            let b = live[rng.below(live.len())];
            nodes[b].cmd(&format!("broadcast cb-{r}"));
            broadcasts.push(b);
        }
        while next_victim < kill_at.len() && kill_at[next_victim] == r {
            nodes[victims[next_victim]].kill();
            last_kill = Instant::now();
            next_victim += 1;
        }
        thread::sleep(Duration::from_millis(100));
    }
    // The promise: once a death is detected (at the next stabilize, at most
    // 1.2 periods away with jitter, plus a request timeout and its two
    // retries) and two periods pass, the ring of survivors is correct,
    // every lookup names the true owner, and a broadcast reaches every
    // survivor once. Checked at that moment, with no further waiting
    // (the periods and timeouts the nodes run with, from NODE_FLAGS).
    let (period, timeout) = (flag_ms("--stabilize-ms"), flag_ms("--request-timeout-ms"));
    let promise = period * 6 / 5 + timeout * 3 + period * 2;
    thread::sleep(promise.saturating_sub(last_kill.elapsed()));
    eprintln!(
        "checking the ring {:?} after the last kill",
        last_kill.elapsed()
    );
    wait_ring(&mut nodes, &live, Duration::ZERO)
        .expect("the ring of survivors is correct two periods after the deaths are detected");
    let mut ring: Vec<(Hash, &str)> = live
        .iter()
        .map(|&i| {
            (
                nodes[i].id.parse::<Hash>().expect("hex id"),
                addrs[i].as_str(),
            )
        })
        .collect();
    ring.sort();
    let mut asked = Vec::new();
    for &i in &live {
        let key = Hash::of(format!("key-{i}-{}", rng.below(1 << 30)));
        let from = nodes[i].len();
        nodes[i].cmd(&format!("lookup {key}"));
        asked.push((i, key, from));
    }
    for (i, key, from) in asked {
        let v = nodes[i]
            .wait_for(from, Duration::from_secs(10), is("lookup"))
            .expect("a lookup outcome");
        let owner = ring.iter().find(|(id, _)| *id >= key).unwrap_or(&ring[0]).1;
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["owner"], owner, "lookup of {key} from {i}");
    }
    let b = live[0];
    let marks: Vec<usize> = nodes.iter().map(Node::len).collect();
    nodes[b].cmd("broadcast after");
    for &i in &live {
        if i == b {
            continue;
        }
        assert!(
            nodes[i]
                .wait_for(marks[i], Duration::from_secs(10), recv_of("after".into()))
                .is_some(),
            "survivor {i} got the broadcast after the kills"
        );
    }
    thread::sleep(Duration::from_millis(300));
    for &i in &live {
        assert_eq!(
            nodes[i].all(recv_of("after".into())).len(),
            usize::from(i != b)
        );
    }
    // Every send has its outcome: delivered exactly once if reported so,
    // never received twice otherwise.
    let (delivered, failed) = check_outcomes(&nodes, &live, rounds, &fate);
    eprintln!(
        "{} sends: {delivered} delivered, {failed} failed; outcomes all in {:?} after the last kill",
        delivered + failed,
        last_kill.elapsed()
    );
    // Sends to survivors overwhelmingly succeed; failures come from sends
    // to victims (and the few whose route broke at the moment of a kill).
    let to_victims = live
        .iter()
        .flat_map(|&i| nodes[i].all(|v| v["event"] == "sent" && v["target"] != "broadcast"))
        .filter(|o| {
            let t = o["target"].as_str().unwrap_or_default();
            victims.iter().any(|&v| addrs[v] == t)
        })
        .count();
    assert!(
        failed <= to_victims + (delivered + failed) / 20,
        "{failed} failures, {to_victims} sends to victims"
    );
    eprintln!("whole churn scenario took {:?}", started.elapsed());
}

#[test]
fn a_graceful_leave_loses_nothing_that_was_acknowledged() {
    let _g = heavy();
    let mut rng = Lcg::from_env();
    let n = 8;
    let mut nodes = ring_of(n, Duration::from_secs(15));
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let leaver = 1 + rng.below(n - 1);
    let others: Vec<usize> = (0..n).filter(|&i| i != leaver).collect();
    let rounds = 20;
    for r in 0..rounds {
        for &i in &others {
            let j = (i + 1 + rng.below(n - 1)) % n;
            nodes[i].cmd(&format!("send {} g-{i}-{r}", addrs[j]));
        }
        if r == rounds / 2 {
            nodes[leaver].cmd("leave");
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(nodes[leaver]
        .wait_for(0, Duration::from_secs(10), is("left"))
        .is_some());
    // The leaver stays up: what it confirmed it must have printed.
    let mut fate = vec![b'.'; n];
    fate[leaver] = b'l';
    let fate = String::from_utf8(fate).unwrap_or_default();
    let (delivered, failed) = check_outcomes(&nodes, &others, rounds, &fate);
    // Every send to a node that stays is delivered: a leave is no failure.
    for &i in &others {
        for o in nodes[i].all(|v| v["event"] == "sent" && v["ok"] == false) {
            assert_eq!(
                o["target"],
                addrs[leaver].as_str(),
                "only sends to the leaver may fail: {o}"
            );
        }
    }
    eprintln!(
        "graceful leave: {delivered} delivered, {failed} failed (to the leaver after it left)"
    );
    assert!(delivered > 0);
    wait_ring(&mut nodes, &others, Duration::from_secs(5)).expect("the others close the ring");
}

/// An nftables table that drops UDP on loopback between two sets of ports,
/// deleted on drop. `None` when the test has to skip (need `nft`: root and
/// `nft`).
struct Partition {
    table: String,
}

/// The test that cuts the ring with a [`Partition`].
const PARTITION_TEST: &str = "a_partition_between_processes_heals_into_one_ring";

impl Partition {
    fn new(a: &[u16], b: &[u16]) -> Option<Partition> {
        let table = format!("cicada_partition_{}", std::process::id());
        let set = |ports: &[u16]| {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let script = format!(
            "add table inet {table}\n\
             add chain inet {table} out {{ type filter hook output priority 0; }}\n\
             add rule inet {table} out udp sport {{ {a} }} udp dport {{ {b} }} drop\n\
             add rule inet {table} out udp sport {{ {b} }} udp dport {{ {a} }} drop\n",
            a = set(a),
            b = set(b),
        );
        let mut child = match Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                require::skip(Need::Nft, PARTITION_TEST, format!("cannot run `nft`: {e}"));
                return None;
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        match child.wait_with_output() {
            Ok(o) if o.status.success() => Some(Partition { table }),
            Ok(o) => {
                require::skip(
                    Need::Nft,
                    PARTITION_TEST,
                    format!(
                        "nft could not install the drop rules (root needed): {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                );
                None
            }
            Err(e) => {
                require::skip(Need::Nft, PARTITION_TEST, format!("nft failed: {e}"));
                None
            }
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

#[test]
fn a_partition_between_processes_heals_into_one_ring() {
    let _g = heavy();
    let n = 12;
    // Timeouts that other tests running beside this one cannot trip: a
    // node wrongly declared dead would be a second failure on top of the
    // partition (it heals too, but slower than this test waits).
    let flags = [
        "--json",
        "--stabilize-ms",
        "250",
        "--request-timeout-ms",
        "250",
        "--lookup-timeout-ms",
        "3000",
    ];
    let mut nodes = ring_with(n, Duration::from_secs(15), &flags);
    // A ring just formed knows little: a node whose few known peers are
    // all across the cut has nobody on its own side to turn to (seen: one
    // left alone until the network healed). Cut a settled ring, in which
    // every node knows every other.
    let all: Vec<usize> = (0..n).collect();
    wait_settled(&mut nodes, &all, Duration::from_secs(15)).expect("the ring settles");
    // Interleaved halves by id, so that every node's successor is across.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| nodes[x].id.cmp(&nodes[y].id));
    let side_a: Vec<usize> = order.iter().copied().step_by(2).collect();
    let side_b: Vec<usize> = order.iter().copied().skip(1).step_by(2).collect();
    let port = |i: &usize| {
        nodes[*i]
            .addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .expect("a port")
    };
    let ports_a: Vec<u16> = side_a.iter().map(port).collect();
    let ports_b: Vec<u16> = side_b.iter().map(port).collect();
    let Some(cut) = Partition::new(&ports_a, &ports_b) else {
        return;
    };
    let started = Instant::now();
    wait_ring(&mut nodes, &side_a, Duration::from_secs(20)).expect("side a forms its own ring");
    wait_ring(&mut nodes, &side_b, Duration::from_secs(20)).expect("side b forms its own ring");
    eprintln!("two rings of {} after {:?}", n / 2, started.elapsed());
    // Let the halves live apart a while: past-peer probes back off.
    thread::sleep(Duration::from_secs(3));
    drop(cut);
    let healed = Instant::now();
    // Probes back off to at most 8 s (past_probe_max); merging follows.
    wait_ring(&mut nodes, &all, Duration::from_secs(20)).expect("one ring after healing");
    eprintln!("one ring of {n} {:?} after healing", healed.elapsed());
    // And it routes: a send across the former cut arrives.
    let (a, b) = (side_a[0], side_b[0]);
    let target = nodes[b].addr.clone();
    nodes[a].cmd(&format!("send {target} across"));
    assert!(nodes[b]
        .wait_for(0, Duration::from_secs(10), recv_of("across".into()))
        .is_some());
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
    // Bytes per simulated node, in every run: what the process held at
    // its peak (at least the nodes' own state), and the nodes' state alone.
    let rss = v["peak_rss_bytes_per_node"].as_f64().unwrap_or(0.0);
    let state = v["node_state_bytes_per_node"].as_f64().unwrap_or(0.0);
    let struct_size = std::mem::size_of::<chord::LocalNode<u32>>() as f64;
    assert!(state >= struct_size && rss > state, "{last}");
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

/// A lone call over UDP receives its own reply (and any other datagram
/// meanwhile) on its own task: the sender's background task is not woken
/// once per confirmation. Were both tasks waiting on the socket, tokio
/// would wake both, and this would count one wake-up per send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_sends_do_not_wake_the_background_task() {
    // Maintenance every 30 s: nothing but the sends and their replies.
    let cfg = fast().stabilize_interval(Duration::from_secs(30));
    let a = bound(Hooks::new(), cfg.clone()).await;
    let b = bound(Hooks::new(), cfg).await;
    b.connect(a.listener().unwrap(), Duration::from_secs(5))
        .await
        .unwrap();
    let to = b.listener().unwrap();
    a.send(&to, &b"warm"[..], 0).await.unwrap();
    let before = a.stats().await.unwrap();
    for _ in 0..500 {
        a.send(&to, &b"x"[..], 0).await.unwrap();
    }
    let after = a.stats().await.unwrap();
    let replies = after.core.datagrams_in - before.core.datagrams_in;
    let wakeups = after.driver_wakeups - before.driver_wakeups;
    assert!(replies >= 500, "{replies} datagrams in for 500 sends");
    assert!(
        wakeups < 50,
        "the background task woke {wakeups} times for 500 lone sends"
    );
}

/// Up to four calls at once are lone (they run on their callers' tasks)
/// but only one at a time holds the claim to receive: the others wait
/// for replies the claimant or the background task completes. Callers
/// that come and go, with other traffic arriving meanwhile, must all
/// finish: a reply no one is woken for would hang its call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lone_calls_share_the_claim_without_losing_a_reply() {
    let cfg = fast();
    let a = Arc::new(bound(Hooks::new(), cfg.clone()).await);
    let b = Arc::new(bound(Hooks::new(), cfg).await);
    b.connect(a.listener().unwrap(), Duration::from_secs(5))
        .await
        .unwrap();
    let (to_b, to_a) = (b.listener().unwrap(), a.listener().unwrap());
    // B's application reads what it gets (a send is confirmed only once
    // it is queued for B's application, so a queue nobody reads would
    // hold the senders back).
    let reader = {
        let b = b.clone();
        tokio::spawn(async move { while b.recv().await.is_ok() {} })
    };
    // Unconfirmed traffic towards A all along: datagrams a claimant
    // receives that answer no call.
    let noise = {
        let b = b.clone();
        tokio::spawn(async move {
            for _ in 0..2_000 {
                let _ = b.send_datagram(&to_a, &b"noise"[..]).await;
                tokio::task::yield_now().await;
            }
        })
    };
    let mut callers = Vec::new();
    for k in 0..4u32 {
        let (a, to_b) = (a.clone(), to_b.clone());
        callers.push(tokio::spawn(async move {
            for i in 0..300u32 {
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    a.send(&to_b, format!("{k}/{i}").into_bytes(), 0),
                )
                .await;
                match r {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("caller {k}, send {i}: {e}"),
                    Err(_) => panic!("caller {k}, send {i}: no answer in 5 s"),
                }
                if i % 10 == k {
                    // Calls that stop and start again, so that the claim
                    // changes hands in every state.
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for c in callers {
        c.await.expect("a caller failed");
    }
    noise.await.unwrap();
    reader.abort();
}

/// A lone call receiving for itself does not wait on its reply's channel
/// (completing it on its own task would wake it needlessly); a reply
/// completed elsewhere must still end the call: a timeout on the
/// background task, or closing the peer.
#[test]
fn a_receiving_lone_call_ends_on_a_timeout_and_on_close() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // B lives on a runtime of its own, driven by a thread until `stop`:
    // then it is silent without closing its socket (no ICMP error wakes
    // anyone).
    let rt_b = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let quiet = fast().stabilize_interval(Duration::from_secs(30));
    let b = rt_b.block_on(bound(Hooks::new(), quiet.clone()));
    let b_addr = b.listener().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = {
        let stop = stop.clone();
        thread::spawn(move || {
            rt_b.block_on(async {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            (rt_b, b)
        })
    };
    // A1 gives up on a request after 100 ms and on a send after 2 s
    // (failing it as `NoSuchNode` or `Timeout`, by what it learnt first);
    // A2 on a request after 5 s.
    let mut short = quiet.clone();
    short.chord.send_attempt_timeout = Duration::from_millis(500);
    short.chord.send_timeout = Duration::from_secs(2);
    let a1 = rt.block_on(bound(Hooks::new(), short));
    let a2 = Arc::new(rt.block_on(bound(
        Hooks::new(),
        quiet.request_timeout(Duration::from_secs(5)),
    )));
    for a in [&a1, &*a2] {
        rt.block_on(a.connect(b_addr.clone(), Duration::from_secs(5)))
            .expect("join B");
        rt.block_on(a.send(&b_addr, &b"hello"[..], 0))
            .expect("B answers while driven");
    }
    stop.store(true, Ordering::Relaxed);
    let (_rt_b, _b) = driver.join().unwrap();

    // The request times out on A1's background task.
    let t = Instant::now();
    let r = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), a1.send(&b_addr, &b"lost"[..], 0)).await
    });
    let r = r.expect("the call did not end when its request timed out");
    assert!(r.is_err(), "a send to a silent peer succeeded: {r:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A2 is closed while its call waits (its request would time out only
    // after 5 s).
    let closer = {
        let a2 = a2.clone();
        rt.spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            a2.close().await;
        })
    };
    let t = Instant::now();
    let r = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), a2.send(&b_addr, &b"lost"[..], 0)).await
    });
    let r = r.expect("the call did not end when its peer closed");
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    rt.block_on(closer).unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_an_id_its_address_does_not_give_is_ignored() {
    use cicada::chord::wire::{GetNeighbors, Message, NodeRef};
    let peers = swarm(2, fast()).await;
    settle(&peers).await;
    let target = peers[0].listener().unwrap().udp().unwrap();
    let liar = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = liar.local_addr().unwrap();
    // A notify from a stranger claiming an id of its choosing (just below
    // the peer's own, to become its predecessor), then the same with the
    // id its address really gives.
    let mut chosen = peers[0].hash().unwrap().to_bytes();
    chosen[31] = chosen[31].wrapping_sub(1);
    for id in [Hash::from_bytes(chosen), cicada::node_id(&at.into())] {
        let msg = Message::GetNeighbors(GetNeighbors {
            txn: 1,
            sender: NodeRef::new(id, at),
            notify: true,
            want_fingers: false,
        });
        liar.send_to(&msg.encode(), target).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let s = peers[0].stats().await.unwrap();
        if s.core.dropped_bad_identity >= 1 && s.core.admission_probes >= 1
            || Instant::now() > deadline
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stats.core.dropped_bad_identity, 1, "{stats:?}");
    // The honest claim is probed, not taken: the socket never answers the
    // Ping, so the stranger never becomes a neighbour.
    assert!(stats.core.admission_probes >= 1, "{stats:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let known = peers[0].peers().await.unwrap();
    assert!(known.iter().all(|p| p.addr != at), "{known:?}");
}

#[tokio::test]
async fn malformed_datagrams_are_dropped_and_counted_and_the_peer_keeps_working() {
    let peers = swarm(2, fast()).await;
    let target = peers[0].listener().unwrap();
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let garbage: [&[u8]; 5] = [
        b"hello",
        &[0xC1],
        &[0xC1, 0xCA, cicada::chord::VERSION, 250, 1, 2, 3],
        &[
            0xC1,
            0xCA,
            cicada::chord::VERSION,
            2,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
        ],
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

/// `recv` says whether more are queued; a full queue refuses what it
/// cannot hold (the sender learns it), and drops nothing it confirmed.
#[tokio::test]
async fn recv_reports_more_and_a_full_queue_refuses() {
    let cfg = fast().recv_queue(3).send_timeout(Duration::from_secs(1));
    let peers = swarm(2, cfg).await;
    settle(&peers).await;
    let (a, b) = (&peers[0], &peers[1]);
    for i in 0..3 {
        a.send(b.listener().unwrap(), format!("m{i}").into_bytes(), 0)
            .await
            .expect("delivered");
    }
    let full = a.send(b.listener().unwrap(), b"m3".to_vec(), 0).await;
    assert!(
        matches!(full, Err(Error::Send(chord::SendError::ReceiverBusy))),
        "{full:?}"
    );
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
    assert_eq!(stats.recv_overflow, 0);
    assert_eq!(stats.received, 3);
    assert!(stats.core.refused_busy > 0);
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
    if let Err(e) = std::net::UdpSocket::bind(any6) {
        require::skip(
            Need::Ipv6,
            "ipv6_peers_join_when_the_host_has_ipv6",
            format!("cannot bind [::1]: {e}"),
        );
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
    let a = Node::start(ports[0], None);
    let b = Node::start(ports[1], Some(&a.addr));
    let c = Node::start(ports[2], Some(&a.addr));
    for n in [&b, &c] {
        assert!(n
            .wait_for(0, Duration::from_secs(10), is("joined"))
            .is_some());
    }
    // Sends start once the ring is right: until a new node's first
    // stabilize reaches its successor, that successor still answers for
    // its id that no such node exists (see docs/architecture.md).
    let mut nodes = vec![a, b, c];
    wait_ring(&mut nodes, &[0, 1, 2], Duration::from_secs(10)).expect("a ring of three");
    let [mut a, b, c]: [Node; 3] = match nodes.try_into() {
        Ok(n) => n,
        Err(_) => unreachable!("three nodes"),
    };
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
    // Unconfirmed: reported as sent once it left, received as any message.
    a.cmd(&format!("datagram {} unconfirmed", c.addr));
    let s = a
        .wait_for(0, Duration::from_secs(5), |v| {
            v["event"] == "sent" && v["data"] == "unconfirmed"
        })
        .expect("outcome");
    assert_eq!(
        (&s["ok"], &s["unconfirmed"]),
        (&Value::Bool(true), &Value::Bool(true)),
        "{s}"
    );
    assert!(c
        .wait_for(0, Duration::from_secs(5), recv_of("unconfirmed".into()))
        .is_some());
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

#[path = "support/require.rs"]
mod require;

#[path = "support/netlab.rs"]
mod netlab;

#[path = "swarm/ouroboros.rs"]
mod ouroboros;

#[path = "swarm/ouro_hosts.rs"]
mod ouro_hosts;

/// Starts `cicada node` inside the lab's `role` namespace.
fn node_in(lab: &netlab::Lab, role: &str, port: u16, extra: &[&str]) -> Node {
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
    let Some(lab) = netlab::Lab::up("a_peer_behind_nat_maps_its_port", &[]) else {
        return;
    };
    let mapped = |port: u16| lab.mappings("gw1").contains(&format!("dport {port} "));
    for lan_bootstraps in [true, false] {
        let (lan_port, wan_port) = if lan_bootstraps {
            (41000, 41001)
        } else {
            (42000, 42001)
        };
        let lan_bind = format!("0.0.0.0:{lan_port}");
        let wan_bind = format!("{}:{wan_port}", lab.ip("pub1"));
        let (mut lan, mut wan) = if lan_bootstraps {
            let lan = node_in(&lab, "lan1-1", lan_port, &["--bind", &lan_bind, "--map"]);
            let wan = node_in(
                &lab,
                "pub1",
                wan_port,
                &["--bind", &wan_bind, "--join", &lan.addr],
            );
            (lan, wan)
        } else {
            let wan = node_in(&lab, "pub1", wan_port, &["--bind", &wan_bind]);
            let lan = node_in(
                &lab,
                "lan1-1",
                lan_port,
                &["--bind", &lan_bind, "--map", "--join", &wan.addr],
            );
            (lan, wan)
        };
        // The peer behind the NAT is known by the gateway's address.
        assert!(
            lan.addr.starts_with(&format!("{}:", lab.ip("gw1"))),
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
        assert!(mapped(port), "no DNAT rule for {port}");
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
        while mapped(port) && Instant::now() < gone {
            thread::sleep(Duration::from_millis(200));
        }
        assert!(!mapped(port), "mapping left behind");
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

// ------------------------------------------------------------ private swarm

fn keyed(key: &SwarmKey) -> PeerConfig {
    fast().swarm_key(key.clone()).secure_config(SecureConfig {
        handshake_retry: Duration::from_millis(100),
        ..SecureConfig::default()
    })
}

/// Waits until every peer of `peers` received one message each of `want`
/// (and then a little longer, to catch duplicates); returns what each got.
async fn collect(peers: &[&SwarmPeer], want: usize) -> Vec<Vec<String>> {
    let mut got = vec![Vec::new(); peers.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && got.iter().any(|g| g.len() < want) {
        for (i, p) in peers.iter().enumerate() {
            while let Some((_, data, _)) = p.try_recv().unwrap() {
                got[i].push(String::from_utf8_lossy(&data).to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, p) in peers.iter().enumerate() {
        while let Some((_, data, _)) = p.try_recv().unwrap() {
            got[i].push(String::from_utf8_lossy(&data).to_string());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_swarm_forms_a_ring_and_delivers_sends_and_broadcasts_exactly_once() {
    let key = SwarmKey::generate().unwrap();
    let peers = swarm(5, keyed(&key)).await;
    settle(&peers).await;
    // The ring: following successors from any peer visits all five.
    let mut seen = vec![peers[0].listener().unwrap()];
    for _ in 0..5 {
        let at = peers
            .iter()
            .find(|p| p.listener().unwrap() == *seen.last().unwrap())
            .unwrap();
        seen.push(at.successor().await.unwrap().expect("a successor").addr);
    }
    assert_eq!(seen[5], seen[0], "successors close a ring: {seen:?}");
    let mut distinct = seen[..5].to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "{seen:?}");
    // Each peer sends to the next; then one broadcast.
    for (i, p) in peers.iter().enumerate() {
        let to = peers[(i + 1) % 5].listener().unwrap();
        p.send(to, format!("send {i}").into_bytes(), 0)
            .await
            .expect("delivered");
    }
    peers[0].broadcast(&b"to all"[..]).await.expect("accepted");
    let refs: Vec<&SwarmPeer> = peers.iter().collect();
    let got = collect(&refs, 2).await;
    for (i, g) in got.iter().enumerate() {
        let mut want = vec![format!("send {}", (i + 4) % 5)];
        if i != 0 {
            want.push("to all".into());
        }
        let mut g = g.clone();
        g.sort();
        want.sort();
        assert_eq!(g, want, "peer {i}");
    }
    for p in &peers {
        let s = p.stats().await.unwrap().secure.expect("keyed");
        assert!(s.sessions >= 1, "{s:?}");
        assert_eq!(
            s.dropped_bad_mac + s.dropped_replay + s.dropped_unkeyed,
            0,
            "{s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_the_key_cannot_join_and_what_strangers_inject_is_dropped_and_counted() {
    let key = SwarmKey::generate().unwrap();
    let peers = swarm(3, keyed(&key)).await;
    settle(&peers).await;
    let target = peers[0].listener().unwrap();
    let members: Vec<cicada::PeerAddr> = peers.iter().map(|p| p.listener().unwrap()).collect();

    let other = bound(Hooks::new(), keyed(&SwarmKey::generate().unwrap())).await;
    let t = Instant::now();
    let r = other.connect(target.clone(), Duration::from_secs(5)).await;
    assert!(
        matches!(&r, Err(Error::NoHandshake(a)) if *a == target),
        "{r:?}"
    );
    assert!(r.unwrap_err().to_string().contains("swarm key"));
    assert!(t.elapsed() < Duration::from_secs(6));

    let plain = bound(Hooks::new(), fast()).await;
    let r = plain.connect(target.clone(), Duration::from_secs(5)).await;
    assert!(r.is_err(), "{r:?}");

    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = peers[0].stats().await.unwrap();
    let s = before.secure.clone().unwrap();
    assert!(s.dropped_bad_mac >= 1, "the other key's Inits: {s:?}");
    assert!(
        s.dropped_unkeyed >= 1,
        "the unkeyed peer's datagrams: {s:?}"
    );
    assert_eq!(s.handshakes_answered as usize, s.peers as usize, "{s:?}");

    // Raw datagrams from a stranger: a plain Cicada header, a Data datagram
    // under an invented index, an Init of random bytes, garbage.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut data = [3u8; 80];
    data[1..5].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    let mut init = [0x5au8; cicada::INIT_LEN];
    init[0] = 1;
    let sent: [&[u8]; 4] = [&[0xC1, 0xCA, 1, 1, 0, 0], &data[..], &init[..], b"hello"];
    let target = target.udp().unwrap();
    for d in sent {
        junk.send_to(d, target).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let a = peers[0].stats().await.unwrap().secure.unwrap();
        if a.dropped_malformed > s.dropped_malformed || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(after.dropped_unkeyed, s.dropped_unkeyed + 1, "{after:?}");
    assert_eq!(after.dropped_unknown_session, s.dropped_unknown_session + 1);
    assert_eq!(after.dropped_bad_mac, s.dropped_bad_mac + 1);
    assert_eq!(after.dropped_malformed, s.dropped_malformed + 1);
    // The Data datagram was large enough to draw one Init back, no more.
    let mut buf = [0u8; 200];
    junk.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut back = Vec::new();
    while let Ok((n, _)) = junk.recv_from(&mut buf) {
        back.push(n);
    }
    assert!(back.iter().all(|&n| n <= data.len()), "{back:?}");
    assert!(back.len() <= 1, "{back:?}");

    // Nobody outside got in, nothing was delivered.
    for p in &peers {
        let st = p.stats().await.unwrap();
        assert_eq!(st.received, 0);
        for q in p.peers().await.unwrap() {
            assert!(members.contains(&q.addr), "a stranger in the tables: {q:?}");
        }
    }
    assert!(other.peers().await.unwrap().is_empty());
    assert!(plain.peers().await.unwrap().is_empty());
}

/// Datagrams a relay forwarded: (from A to B?, bytes).
type WireLog = Arc<Mutex<Vec<(bool, Vec<u8>)>>>;

/// A UDP relay between two peers that records every datagram it forwards
/// and drops those `lose` picks. Peer A is announced at `a_face`, B at
/// `b_face`; A sends to `b_face`, the relay forwards from `a_face`.
struct Relay {
    a_face: SocketAddr,
    b_face: SocketAddr,
    a_sock: Arc<tokio::net::UdpSocket>,
    /// B's face, until `start` moves it into the forwarding task.
    b_sock: Option<tokio::net::UdpSocket>,
    log: WireLog,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn new() -> Relay {
        let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Relay {
            a_face: a.local_addr().unwrap(),
            b_face: b.local_addr().unwrap(),
            a_sock: Arc::new(a),
            b_sock: Some(b),
            log: Arc::new(Mutex::new(Vec::new())),
            task: None,
        }
    }

    fn start(
        &mut self,
        a_real: SocketAddr,
        b_real: SocketAddr,
        mut lose: impl FnMut(bool, &[u8]) -> bool + Send + 'static,
    ) {
        let b = self.b_sock.take().expect("started once");
        let a = self.a_sock.clone();
        let log = self.log.clone();
        self.task = Some(tokio::spawn(async move {
            let (mut ba, mut bb) = (vec![0u8; 65536], vec![0u8; 65536]);
            loop {
                let (to_b, n) = tokio::select! {
                    r = b.recv_from(&mut bb) => match r {
                        Ok((n, from)) if from == a_real => (true, n),
                        _ => continue,
                    },
                    r = a.recv_from(&mut ba) => match r {
                        Ok((n, from)) if from == b_real => (false, n),
                        _ => continue,
                    },
                };
                let bytes = if to_b {
                    bb[..n].to_vec()
                } else {
                    ba[..n].to_vec()
                };
                if lose(to_b, &bytes) {
                    continue;
                }
                log.lock().unwrap().push((to_b, bytes.clone()));
                let _ = if to_b {
                    a.send_to(&bytes, b_real).await
                } else {
                    b.send_to(&bytes, a_real).await
                };
            }
        }));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Two peers through a relay: A joins B, sends `n` messages, B answers one.
/// Returns the peers, the relay and what B received.
async fn through_relay(
    cfg: PeerConfig,
    n: usize,
    lose: impl FnMut(bool, &[u8]) -> bool + Send + 'static,
) -> (SwarmPeer, SwarmPeer, Relay, Vec<String>) {
    let mut relay = Relay::new().await;
    let mut a = SwarmPeer::with_config(cfg.clone(), Hooks::new());
    a.bind_with_external(localhost(), relay.a_face)
        .await
        .unwrap();
    let mut b = SwarmPeer::with_config(cfg, Hooks::new());
    b.bind_with_external(localhost(), relay.b_face)
        .await
        .unwrap();
    relay.start(
        a.local_addr().unwrap().udp().unwrap(),
        b.local_addr().unwrap().udp().unwrap(),
        lose,
    );
    a.connect(relay.b_face, Duration::from_secs(5))
        .await
        .expect("joins through the relay");
    for i in 0..n {
        a.send(
            relay.b_face,
            format!("TOP-SECRET-PAYLOAD {i}").into_bytes(),
            0,
        )
        .await
        .expect("delivered");
    }
    b.send(relay.a_face, &b"TOP-SECRET-ANSWER"[..], 0)
        .await
        .expect("delivered back");
    let got = collect(&[&b], n).await.remove(0);
    (a, b, relay, got)
}

fn wire_contains(relay: &Relay, needle: &[u8]) -> bool {
    relay
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|(_, d)| d.windows(needle.len()).any(|w| w == needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_links_carry_no_plaintext_survive_handshake_loss_and_refuse_replays() {
    // Control: without a key the payload crosses the relay in the clear,
    // so the recorder would see it.
    let (_, _, relay, got) = through_relay(fast(), 3, |_, _| false).await;
    assert_eq!(got.len(), 3);
    assert!(wire_contains(&relay, b"TOP-SECRET-PAYLOAD"));
    drop(relay);

    // Keyed: the first two Inits and the first Response are lost. (Not
    // data: a two-peer swarm losing every tenth datagram fails sends with
    // or without a key, a core issue reported separately.)
    let key = SwarmKey::generate().unwrap();
    let (mut inits, mut responses) = (0, 0);
    let lose = move |_: bool, d: &[u8]| match d.first() {
        Some(1) if inits < 2 => {
            inits += 1;
            true
        }
        Some(2) if responses < 1 => {
            responses += 1;
            true
        }
        _ => false,
    };
    // Three handshake messages lost cost three retries: at 30 ms they fit
    // in the 300 ms the core gives a join request (100 ms, two retries).
    let cfg = keyed(&key).secure_config(SecureConfig {
        handshake_retry: Duration::from_millis(30),
        ..SecureConfig::default()
    });
    let (a, b, relay, got) = through_relay(cfg, 10, lose).await;
    let mut got = got;
    got.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("TOP-SECRET-PAYLOAD {i}")).collect();
    want.sort();
    assert_eq!(got, want, "each exactly once");
    let (_, answer, _) = a
        .recv_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the answer");
    assert_eq!(&answer[..], b"TOP-SECRET-ANSWER");
    assert!(
        !wire_contains(&relay, b"TOP-SECRET"),
        "plaintext on the wire"
    );
    assert!(
        relay
            .log
            .lock()
            .unwrap()
            .iter()
            .all(|(_, d)| !d.starts_with(&chord::MAGIC)),
        "a plain Cicada datagram on the wire"
    );
    let sa = a.stats().await.unwrap().secure.unwrap();
    assert!(sa.handshake_retries >= 2, "{sa:?}");

    // Replay everything A sent to B, from A's face: all refused.
    let replay: Vec<Vec<u8>> = relay
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(to_b, _)| *to_b)
        .map(|(_, d)| d.clone())
        .collect();
    let before = b.stats().await.unwrap();
    for d in &replay {
        relay
            .a_sock
            .send_to(d, b.local_addr().unwrap().udp().unwrap())
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let want_replays = before.secure.as_ref().unwrap().dropped_replay + replay.len() as u64;
    let after = loop {
        let s = b.stats().await.unwrap();
        if s.secure.as_ref().unwrap().dropped_replay >= want_replays || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(after.secure.unwrap().dropped_replay, want_replays);
    assert_eq!(after.received, before.received, "a replay was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_at_the_same_address_handshakes_again() {
    let key = SwarmKey::generate().unwrap();
    let peers = swarm(3, keyed(&key)).await;
    settle(&peers).await;
    let addr = peers[2].listener().unwrap().udp().unwrap();
    for p in &peers[..2] {
        p.send(addr, &b"before"[..], 0).await.expect("delivered");
    }
    peers[2].close().await;
    let mut again = SwarmPeer::with_config(keyed(&key), Hooks::new());
    again.bind(addr).await.expect("the same port");
    again
        .connect(peers[0].listener().unwrap(), Duration::from_secs(5))
        .await
        .expect("rejoins");
    for p in &peers[..2] {
        p.send(addr, &b"to the new one"[..], 0)
            .await
            .expect("reaches the restarted peer");
        again
            .send(p.listener().unwrap(), &b"from the new one"[..], 0)
            .await
            .expect("from the restarted peer");
    }
    let got = collect(&[&again], 2).await.remove(0);
    assert_eq!(got, ["to the new one", "to the new one"]);
    let s = again.stats().await.unwrap().secure.unwrap();
    assert_eq!(s.dropped_bad_mac, 0, "{s:?}");
}

/// `cicada node --swarm-key FILE`, joining `join` if given.
fn keyed_node(port: u16, join: Option<&str>, key_file: &std::path::Path) -> Node {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cicada"));
    cmd.arg("node")
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .args(NODE_FLAGS)
        .arg("--swarm-key")
        .arg(key_file);
    if let Some(j) = join {
        cmd.arg("--join").arg(j);
    }
    Node::spawn(cmd, port)
}

#[test]
fn node_processes_with_a_swarm_key_file_swarm_and_keep_others_out() {
    let _g = heavy();
    let dir = std::env::temp_dir().join(format!("cicada-swarmkey-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ours, theirs, bad) = (dir.join("ours"), dir.join("theirs"), dir.join("bad"));
    for f in [&ours, &theirs, &bad] {
        let _ = std::fs::remove_file(f);
    }
    let keygen = Command::new(env!("CARGO_BIN_EXE_cicada"))
        .args(["keygen", "--out"])
        .arg(&ours)
        .status()
        .unwrap();
    assert!(keygen.success());
    SwarmKey::generate().unwrap().write_file(&theirs).unwrap();
    std::fs::write(&bad, "0123 not a key\n").unwrap();

    let ports = free_ports(4);
    let a = keyed_node(ports[0], None, &ours);
    let mut b = keyed_node(ports[1], Some(&a.addr), &ours);
    assert!(b
        .wait_for(0, Duration::from_secs(10), is("joined"))
        .is_some());
    b.cmd(&format!("send {} keyed hello", a.addr));
    assert!(a
        .wait_for(0, Duration::from_secs(10), recv_of("keyed hello".into()))
        .is_some());
    b.cmd("stats");
    let s = b
        .wait_for(0, Duration::from_secs(5), is("stats"))
        .expect("stats");
    assert!(
        s["secure"]["handshakes_completed"].as_u64() >= Some(1),
        "{s}"
    );

    // Another key: the join fails with a clear error, the process exits 1.
    let mut c = keyed_node(ports[2], Some(&a.addr), &theirs);
    let e = c
        .wait_for(0, Duration::from_secs(10), is("error"))
        .expect("an error");
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(msg.contains("swarm key"), "{msg}");
    assert_eq!(c.child.wait().unwrap().code(), Some(1));
    // No key: the join fails too.
    let mut d = Node::start(ports[3], Some(&a.addr));
    assert!(d
        .wait_for(0, Duration::from_secs(10), is("error"))
        .is_some());
    assert_eq!(d.child.wait().unwrap().code(), Some(1));

    // A malformed key file: a clear error before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_cicada"))
        .args(["node", "--bind", "127.0.0.1:0", "--json", "--swarm-key"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("64 hex digits"), "{text}");
    assert!(!text.contains("ready"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_handshakes_is_bounded_and_members_keep_talking() {
    let key = SwarmKey::generate().unwrap();
    let peers = swarm(2, keyed(&key)).await;
    settle(&peers).await;
    let target = peers[0].listener().unwrap().udp().unwrap();
    let flooder = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // 3,000 forged Inits (no key), then 1,000 valid ones from an insider's
    // state machine (each newer than the last, so none is a replay).
    let now = Instant::now();
    let mut insider = cicada::SecureCore::new(key.clone(), SecureConfig::default(), 1, now);
    let mut sent_bytes = 0usize;
    let t = Instant::now();
    for i in 0..4000u32 {
        let d = if i < 3000 {
            let mut d = vec![(i % 251) as u8; cicada::INIT_LEN];
            d[0] = 1;
            d
        } else {
            insider.send(now, &i, b"x").unwrap();
            insider.poll_transmit().unwrap().1
        };
        sent_bytes += d.len();
        flooder.send_to(&d, target).await.unwrap();
        if i % 200 == 199 {
            // Members talk during the flood.
            peers[1]
                .send(target, &b"during the flood"[..], 0)
                .await
                .expect("a member is served during the flood");
        }
    }
    let secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = peers[0].stats().await.unwrap().secure.unwrap();
    eprintln!("flood of 4,000 Inits in {secs:.2} s: {s:?}");
    // The forged ones cost no DH; the valid ones at most the budget.
    assert!(s.dropped_bad_mac >= 2900, "{s:?}");
    let budget = f64::from(cicada::DEFAULT_HANDSHAKE_BURST)
        + f64::from(cicada::DEFAULT_HANDSHAKE_RATE) * (secs + 0.5);
    assert!(
        (s.handshakes_answered as f64) <= budget + 1.0,
        "{s:?} in {secs:.2} s"
    );
    assert!(
        s.dropped_rate_limited > 0 || s.handshakes_answered >= 1000,
        "{s:?}"
    );
    assert!(s.peers <= cicada::DEFAULT_MAX_PEERS as u64, "{s:?}");
    // No amplification: the flooder got back fewer bytes than it sent.
    let mut buf = [0u8; 200];
    let mut back = 0usize;
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(200), flooder.recv_from(&mut buf)).await
    {
        back += n;
    }
    assert!(back <= sent_bytes, "{back} back for {sent_bytes}");
    assert_eq!(back % cicada::RESPONSE_LEN, 0, "only Responses come back");
    assert_eq!(
        peers[0].stats().await.unwrap().received,
        20,
        "every member's message, nothing else"
    );
    peers[1]
        .send(target, &b"after the flood"[..], 0)
        .await
        .expect("a member is served after the flood");
}

#[path = "swarm/link.rs"]
mod link;

#[path = "swarm/promises.rs"]
mod promises;

#[path = "swarm/addresses.rs"]
mod addresses;

#[path = "swarm/metrics.rs"]
mod metrics;

#[tokio::test]
async fn unconfirmed_datagrams_reach_every_peer_once() {
    let peers = swarm(8, fast()).await;
    settle(&peers).await;
    for (i, from) in peers.iter().enumerate() {
        for (j, to) in peers.iter().enumerate() {
            if i != j {
                from.send_datagram(to.listener().unwrap(), format!("{i}->{j}"))
                    .await
                    .expect("sent");
            }
        }
    }
    // To a key: whichever peer owns it.
    peers[0]
        .send_datagram(Hash::of("a key"), b"keyed")
        .await
        .expect("sent");
    let mut keyed = 0;
    for (j, p) in peers.iter().enumerate() {
        let mut got = Vec::new();
        while let Some((from, data, _)) = p.recv_timeout(Duration::from_millis(500)).await.unwrap()
        {
            if &data[..] == b"keyed" {
                keyed += 1;
                continue;
            }
            let text = String::from_utf8(data.to_vec()).unwrap();
            let i: usize = text.split("->").next().unwrap().parse().unwrap();
            assert_eq!(from.addr, peers[i].listener().unwrap());
            assert!(text.ends_with(&format!("->{j}")), "{text} at {j}");
            got.push(i);
        }
        got.sort();
        let expect: Vec<usize> = (0..peers.len()).filter(|i| *i != j).collect();
        assert_eq!(got, expect, "at peer {j}");
    }
    assert_eq!(keyed, 1);
    let stats = peers[0].stats().await.unwrap();
    assert_eq!(stats.core.datagrams_sent, peers.len() as u64);
    // Larger than one datagram: refused, not split.
    let max = chord::Config::default().max_fragment;
    assert!(matches!(
        peers[0]
            .send_datagram(peers[1].listener().unwrap(), vec![0u8; max + 1])
            .await,
        Err(Error::Send(chord::SendError::TooLarge { .. }))
    ));
}

#[path = "swarm/lab.rs"]
mod lab;
