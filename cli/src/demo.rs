//! `cicada demo`: a swarm of real `cicada node` processes on loopback.
//!
//! It starts N peers (this same executable, subcommand `node`), one joining
//! after another, waits until every successor and predecessor is the true
//! one, runs a workload (a lookup from every node, sends between random
//! pairs, one broadcast), kills a fraction of the peers with SIGKILL, waits
//! for the survivors' ring and runs the workload again. Every check is made
//! against the truth computed from the ids (`id = SHA-256("127.0.0.1:PORT")`,
//! or SHA-256 of the name over Ouroboros).
//!
//! With `--lab` (root only) the peers run in the hosts of a network lab
//! that the demo brings up with `scripts/netlab` and tears down at the end
//! (also on an error, SIGINT or SIGTERM): three public hosts and two LANs
//! behind UPnP gateways, every peer bound to all interfaces (`0.0.0.0:P` or
//! `[::]:P`), the LAN peers with `--map`. The ids are then checked against
//! the addresses the peers learned. The table says where each peer sits
//! (host, address, NAT status from its `nat` events).
//!
//! Every child is killed when its guard drops, and a SIGINT/SIGTERM handler
//! kills them all before the demo exits. With `--transport ouroboros` the
//! peers are `cicada node --ouroboros NAME --abrupt` processes: they are
//! never sent SIGKILL (a process killed inside the Ouroboros library can
//! wedge the IRMd); the churn sends SIGTERM, on which they end at once
//! without leaving, and the final cleanup asks them to `quit`.
//!
//! With `--ourolab MEDIUM` (root only, with `--transport ouroboros`) the
//! Ouroboros peers run on hosts of their own that the demo builds with
//! `scripts/ourolab` (an IRMd each, joined by an `eth-dix` or `eth-llc`
//! layer on links with no IP address, or by `udp4`), peer `i` on host
//! `h(i mod N + 1)`, and tears down at the end.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use cicada::Hash;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::svg;

/// Arguments of `cicada demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Number of peers (processes) to start.
    #[arg(long, default_value_t = 32)]
    nodes: usize,
    /// How the peers talk: `udp` (on 127.0.0.1) or `ouroboros` (names in
    /// `--layer`; needs a running IRMd).
    #[arg(long, default_value = "udp")]
    transport: String,
    /// The Ouroboros layer of `--transport ouroboros`.
    #[arg(long, default_value = "local_layer")]
    layer: String,
    /// Fraction of the peers killed (SIGKILL; SIGTERM without a graceful
    /// leave over Ouroboros) before the second workload.
    #[arg(long, default_value_t = 0.25)]
    churn: f64,
    /// Write a picture of the ring (SVG) to this file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Print the summary as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Seed of the random choices (pairs, keys, victims); random by default.
    #[arg(long)]
    seed: Option<u64>,
    /// Stabilize period of every peer, in milliseconds.
    #[arg(long, default_value_t = 200)]
    stabilize_ms: u64,
    /// Request timeout of every peer, in milliseconds. Much lower and a
    /// loaded machine sees retries; see the guide's "What the demo found".
    #[arg(long, default_value_t = 500)]
    request_timeout_ms: u64,
    /// Seconds to wait for a correct ring (after the joins, after the kills).
    #[arg(long, default_value_t = 60.0)]
    ring_timeout: f64,
    /// Spread the peers over a network lab (`scripts/netlab`, root only):
    /// public hosts and LANs behind UPnP gateways.
    #[arg(long)]
    lab: bool,
    /// The lab script of `--lab`; by default `scripts/netlab` in the current
    /// directory or one above it.
    #[arg(long)]
    netlab: Option<PathBuf>,
    /// With `--transport ouroboros`: spread the peers over Ouroboros hosts
    /// of their own (`scripts/ourolab`, root only), an IRMd each, joined by
    /// a layer of this medium: `eth-dix` or `eth-llc` (Ethernet, no IP
    /// address on any host) or `udp4`. The layer is `--layer`.
    #[arg(long, value_name = "MEDIUM")]
    ourolab: Option<String>,
    /// Hosts of `--ourolab` (1-9).
    #[arg(long, default_value_t = 3)]
    ourolab_hosts: usize,
    /// The lab script of `--ourolab`; by default `scripts/ourolab` in the
    /// current directory or one above it.
    #[arg(long)]
    ourolab_script: Option<PathBuf>,
}

// ------------------------------------------------------------------ the lab

/// A lab's script and the arguments that tear it down.
type LabDown = (PathBuf, Vec<String>);

/// The lab of `--lab` or `--ourolab` while it is up: its script and the
/// arguments that tear it down.
fn lab_state() -> &'static Mutex<Option<LabDown>> {
    static L: OnceLock<Mutex<Option<LabDown>>> = OnceLock::new();
    L.get_or_init(|| Mutex::new(None))
}

/// Tears the lab down (`netlab down P --kill-strays`, `ourolab down P`), if
/// one is up.
fn lab_down() {
    if let Some((script, down)) = lock(lab_state()).take() {
        let _ = Command::new("bash")
            .arg(&script)
            .args(&down)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Stops every peer and tears the lab down when dropped.
struct LabGuard;

impl Drop for LabGuard {
    fn drop(&mut self) {
        kill_all();
        lab_down();
    }
}

/// Hosts of the demo's lab (`NETLAB_PUBLIC=3`, two LANs of one host).
const LAB_KNOBS: [(&str, &str); 4] = [
    ("NETLAB_PUBLIC", "3"),
    ("NETLAB_LANS", "2"),
    ("NETLAB_HOSTS", "1"),
    ("NETLAB_IPV6", "yes"),
];

/// Whether this process runs as root (effective uid 0).
fn is_root() -> bool {
    crate::procfs::status_value("Uid", 1) == Some(0)
}

/// Finds a lab script: `given` (`--netlab`, `--ourolab-script`), else
/// `scripts/NAME` here or above.
fn find_script(given: Option<&PathBuf>, name: &str, flag: &str) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(format!("{flag} {}: no such file", p.display()))
        };
    }
    let here = std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?;
    here.ancestors()
        .map(|d| d.join("scripts").join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "the lab script scripts/{name} is missing: run from the repository or give {flag} PATH"
            )
        })
}

/// Brings up the Ouroboros hosts of `--ourolab` (`ourolab up`).
fn ourolab_up(
    script: &std::path::Path,
    prefix: &str,
    medium: &str,
    hosts: usize,
    layer: &str,
) -> Result<(), String> {
    let check = Command::new("bash")
        .arg(script)
        .arg("check")
        .env("OUROLAB_MEDIUM", medium)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !check.status.success() {
        return Err(format!(
            "the Ouroboros lab cannot run here: {}",
            String::from_utf8_lossy(&check.stdout).trim()
        ));
    }
    *lock(lab_state()) = Some((script.to_path_buf(), vec!["down".into(), prefix.into()]));
    let up = Command::new("bash")
        .arg(script)
        .args(["up", prefix])
        .env("OUROLAB_MEDIUM", medium)
        .env("OUROLAB_HOSTS", hosts.to_string())
        .env("OUROLAB_LAYER", layer)
        .output()
        .map_err(|e| format!("cannot run ourolab up: {e}"))?;
    if !up.status.success() {
        return Err(format!(
            "ourolab up {prefix} failed: {}",
            String::from_utf8_lossy(&up.stderr).trim()
        ));
    }
    say(String::from_utf8_lossy(&up.stdout).trim().to_string());
    Ok(())
}

/// Makes `name`, served on `host` of the Ouroboros lab, reachable from
/// every host (`ourolab name`).
fn ourolab_name(script: &str, prefix: &str, host: &str, name: &str) -> Result<(), String> {
    let out = Command::new("bash")
        .arg(script)
        .args(["name", host, name, "-p", prefix])
        .output()
        .map_err(|e| format!("cannot run ourolab name: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ourolab name {host} {name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Brings up the lab `prefix` and returns its variables (`netlab env`).
fn lab_up(script: &std::path::Path, prefix: &str) -> Result<LabEnv, String> {
    let check = Command::new("bash")
        .arg(script)
        .args(["check", "lab"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !check.status.success() {
        return Err(format!(
            "the lab cannot run here: {}",
            String::from_utf8_lossy(&check.stdout).trim()
        ));
    }
    *lock(lab_state()) = Some((
        script.to_path_buf(),
        vec!["down".into(), prefix.into(), "--kill-strays".into()],
    ));
    let mut cmd = Command::new("bash");
    cmd.arg(script).args(["up", prefix]);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("NETLAB_") && k != "NETLAB_MINIUPNPD" && k != "NETLAB_RUNDIR" {
            cmd.env_remove(k);
        }
    }
    let up = cmd
        .envs(LAB_KNOBS)
        .output()
        .map_err(|e| format!("cannot run netlab up: {e}"))?;
    if !up.status.success() {
        return Err(format!(
            "netlab up {prefix} failed: {}",
            String::from_utf8_lossy(&up.stderr).trim()
        ));
    }
    let env = Command::new("bash")
        .arg(script)
        .args(["env", prefix])
        .output()
        .map_err(|e| format!("cannot run netlab env: {e}"))?;
    Ok(String::from_utf8_lossy(&env.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect())
}

/// Where peer `i` of the lab runs: (host, bind address, port mapping).
/// Peers 2 and 5 sit on the LANs (one mapped peer per gateway: the
/// gateways do not hairpin), the others on the three public hosts, bound
/// to `0.0.0.0` and `[::]` in turn.
fn lab_place(i: usize) -> (String, String, bool) {
    let port = 43000 + i;
    match i {
        2 => ("lan1-1".into(), format!("0.0.0.0:{port}"), true),
        5 => ("lan2-1".into(), format!("0.0.0.0:{port}"), true),
        _ => {
            let any = if i.is_multiple_of(2) {
                "0.0.0.0"
            } else {
                "[::]"
            };
            let public = i - usize::from(i > 2) - usize::from(i > 5);
            (
                format!("pub{}", public % 3 + 1),
                format!("{any}:{port}"),
                false,
            )
        }
    }
}

/// A lab's variables (`netlab env`), name and value.
type LabEnv = Vec<(String, String)>;

/// How a peer is started: where, and bound to what.
struct Launch {
    /// The lab host, or `local`.
    host: String,
    /// Words run before the executable (`bash netlab exec ROLE P --`).
    wrap: Vec<String>,
    bind: String,
    map: bool,
    /// More flags for the node.
    extra: Vec<String>,
}

// ------------------------------------------------------------------ children

/// Every child, weakly, for the signal handler.
fn registry() -> &'static Mutex<Vec<Weak<Mutex<Child>>>> {
    static R: OnceLock<Mutex<Vec<Weak<Mutex<Child>>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Vec::new()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Set when the children run over Ouroboros: they are stopped with
/// SIGTERM, never SIGKILL.
static GENTLE: AtomicBool = AtomicBool::new(false);

/// Set when the children run on the hosts of `--ourolab`: their names live
/// in the lab's IRMds, which go away with the lab.
static OUROLAB: AtomicBool = AtomicBool::new(false);

/// Stops a child (SIGKILL, or SIGTERM when [`GENTLE`]) and reaps it; a
/// gentle child still running after 10 s is left alone.
fn stop_child(c: &mut Child) {
    if !GENTLE.load(Ordering::Relaxed) {
        let _ = c.kill();
        let _ = c.wait();
        return;
    }
    if matches!(c.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(c.try_wait(), Ok(Some(_))) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("peer process {} did not end on SIGTERM", c.id());
}

/// Kills every registered child and reaps it.
fn kill_all() {
    let children: Vec<_> = lock(registry()).iter().filter_map(Weak::upgrade).collect();
    for c in children {
        stop_child(&mut lock(&c));
    }
}

/// On SIGINT or SIGTERM: kill every child, tear the lab down, exit 130.
fn install_signal_handler(stop: Arc<AtomicBool>) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    thread::Builder::new()
        .name("cicada-demo-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                stop.store(true, Ordering::SeqCst);
                kill_all();
                lab_down();
                eprintln!("\ninterrupted: every peer stopped");
                std::process::exit(130);
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

type Events = Arc<(Mutex<Vec<Value>>, Condvar)>;

/// One `cicada node --json` process; killed when dropped.
struct Peer {
    child: Arc<Mutex<Child>>,
    stdin: Option<ChildStdin>,
    events: Events,
    addr: String,
    id: Hash,
    alive: bool,
    host: String,
}

impl Peer {
    #[allow(clippy::too_many_arguments)]
    fn start(
        exe: &std::path::Path,
        launch: &Launch,
        ouroboros: Option<(&str, &str)>,
        join: Option<&str>,
        stabilize_ms: u64,
        request_timeout_ms: u64,
        bad_lines: &Arc<AtomicUsize>,
    ) -> Result<Peer, String> {
        let mut cmd = match launch.wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        match ouroboros {
            Some((name, layer)) => cmd
                .args(["node", "--ouroboros", name, "--layer", layer])
                .args(["--transport", "ouroboros", "--abrupt"]),
            None => cmd.args(["node", "--bind", &launch.bind]),
        };
        if launch.map {
            cmd.arg("--map");
        }
        cmd.args(&launch.extra);
        cmd.arg("--json")
            .args(["--stabilize-ms", &stabilize_ms.to_string()])
            .args(["--request-timeout-ms", &request_timeout_ms.to_string()])
            .args(["--lookup-timeout-ms", "4000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(j) = join {
            cmd.args(["--join", j]);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdout = child.stdout.take();
        let stdin = child.stdin.take();
        let child = Arc::new(Mutex::new(child));
        lock(registry()).push(Arc::downgrade(&child));
        let events: Events = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let mut peer = Peer {
            child,
            stdin,
            events: events.clone(),
            addr: String::new(),
            id: Hash::ZERO,
            alive: true,
            host: launch.host.clone(),
        };
        let stdout = stdout.ok_or("the node's stdout is not piped")?;
        let bad = bad_lines.clone();
        thread::Builder::new()
            .name("cicada-demo-reader".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) if v.is_object() => {
                            let (m, c) = &*events;
                            lock(m).push(v);
                            c.notify_all();
                        }
                        _ => {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // End of output: wake anyone waiting so they see the end.
                let (m, c) = &*events;
                lock(m).push(json!({"event": "eof"}));
                c.notify_all();
            })
            .map_err(|e| format!("cannot start a reader thread: {e}"))?;
        let ready = peer
            .wait_for(0, Duration::from_secs(20), |v| {
                v["event"] == "ready" || v["event"] == "eof" || v["event"] == "error"
            })
            .ok_or("a node did not start within 20 s")?;
        if ready["event"] != "ready" {
            return Err(format!("a node failed to start: {ready}"));
        }
        peer.addr = ready["addr"].as_str().unwrap_or_default().to_string();
        peer.id = ready["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("a node's ready event has no id: {ready}"))?;
        if peer.id != Hash::of(&peer.addr) {
            return Err(format!(
                "node {} has id {}, not SHA-256 of its address",
                peer.addr, peer.id
            ));
        }
        Ok(peer)
    }

    fn cmd(&mut self, line: &str) {
        if let Some(stdin) = &mut self.stdin {
            if writeln!(stdin, "{line}")
                .and_then(|_| stdin.flush())
                .is_err()
            {
                self.stdin = None;
            }
        }
    }

    fn len(&self) -> usize {
        lock(&self.events.0).len()
    }

    fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        self.wait_n(from, timeout, 1, pred).into_iter().next()
    }

    /// Matching events at or after `from`, once there are `n` or at timeout.
    fn wait_n(
        &self,
        from: usize,
        timeout: Duration,
        n: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.events;
        let mut evs = lock(m);
        loop {
            let found: Vec<Value> = evs.iter().skip(from).filter(|v| pred(v)).cloned().collect();
            let now = Instant::now();
            let ended = evs.last().is_some_and(|v| v["event"] == "eof");
            if found.len() >= n || now >= deadline || ended {
                return found;
            }
            evs = c
                .wait_timeout(evs, deadline - now)
                .map(|r| r.0)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn count(&self, from: usize, pred: impl Fn(&Value) -> bool) -> usize {
        lock(&self.events.0)
            .iter()
            .skip(from)
            .filter(|v| pred(v))
            .count()
    }

    /// Its NAT status from its latest `nat` event: `public`, `mapped`,
    /// `nat (endpoint-independent)`, ...; `unknown` before any.
    fn nat(&self) -> String {
        let latest = lock(&self.events.0)
            .iter()
            .rev()
            .find(|v| v["event"] == "nat")
            .cloned();
        match latest {
            Some(v) => match v["mapping"].as_str() {
                Some(m) if m != "unknown" => {
                    format!("{} ({m})", v["status"].as_str().unwrap_or("?"))
                }
                _ => v["status"].as_str().unwrap_or("unknown").to_string(),
            },
            None => "unknown".into(),
        }
    }

    fn kill(&mut self) {
        self.alive = false;
        self.stdin = None;
        stop_child(&mut lock(&self.child)); // SIGKILL on Unix (SIGTERM over Ouroboros)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if !self.alive && GENTLE.load(Ordering::Relaxed) && !OUROLAB.load(Ordering::Relaxed) {
            // Killed by the churn over Ouroboros: its name is still in the
            // IRMd; remove it (best effort, needs `irm`).
            let _ = Command::new("irm")
                .args(["name", "destroy", &self.addr])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if self.alive && GENTLE.load(Ordering::Relaxed) {
            // Over Ouroboros: a clean exit unbinds and unregisters the name.
            self.cmd("quit");
            self.stdin = None;
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if matches!(lock(&self.child).try_wait(), Ok(Some(_))) {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }
}

// ------------------------------------------------------------------ random

/// A small xorshift generator: the demo's choices need no more.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn key(&mut self) -> Hash {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        Hash::from_bytes(b)
    }
}

// ------------------------------------------------------------------ results

/// What one workload measured.
#[derive(Default, Clone)]
struct Workload {
    lookups: usize,
    lookups_ok: usize,
    hops: Vec<u32>,
    sends: usize,
    sends_delivered: usize,
    duplicates_seen: usize,
    broadcast_receivers: usize,
    broadcast_reached: usize,
    broadcast_messages: u64,
    broadcast_origin: Option<usize>,
    /// What went wrong, one line each (the first few).
    failures: Vec<String>,
}

impl Workload {
    fn fail(&mut self, what: String) {
        if self.failures.len() < 10 {
            self.failures.push(what);
        }
    }
    fn lookup_rate(&self) -> f64 {
        ratio(self.lookups_ok, self.lookups)
    }
    fn send_rate(&self) -> f64 {
        ratio(self.sends_delivered, self.sends)
    }
    fn coverage(&self) -> f64 {
        ratio(self.broadcast_reached, self.broadcast_receivers)
    }
    fn hops_mean(&self) -> f64 {
        if self.hops.is_empty() {
            return 0.0;
        }
        self.hops.iter().map(|&h| h as f64).sum::<f64>() / self.hops.len() as f64
    }
    fn hops_p99(&self) -> u32 {
        let mut h = self.hops.clone();
        h.sort_unstable();
        match h.len() {
            0 => 0,
            n => h[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1],
        }
    }
    fn all_ok(&self) -> bool {
        self.lookups_ok == self.lookups
            && self.sends_delivered == self.sends
            && self.broadcast_reached == self.broadcast_receivers
    }
    fn json(&self) -> serde_json::Map<String, Value> {
        let v = json!({
            "lookups": self.lookups,
            "lookup_success_rate": self.lookup_rate(),
            "hops_mean": self.hops_mean(),
            "hops_p99": self.hops_p99(),
            "sends": self.sends,
            "send_delivered_rate": self.send_rate(),
            "duplicates_delivered": self.duplicates_seen,
            "broadcast_coverage": self.coverage(),
            "broadcast_messages": self.broadcast_messages,
            "failures": self.failures,
        });
        match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

// ------------------------------------------------------------------ the demo

/// Runs the demo; returns the exit code.
pub fn main(args: DemoArgs) -> i32 {
    match run(args) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            kill_all();
            lab_down();
            eprintln!("error: {e}");
            2
        }
    }
}

/// A line for the person watching, on stderr (stdout holds the summary).
fn say(msg: String) {
    eprintln!("{msg}");
}

fn run(args: DemoArgs) -> Result<bool, String> {
    let over_ouroboros = match args.transport.as_str() {
        "udp" => false,
        "ouroboros" => {
            // A probe only: the demo process itself stays out of Ouroboros.
            // The hosts of --ourolab have IRMds of their own.
            if args.ourolab.is_none() && !cicada::ouroboros::irmd_running() {
                return Err(format!(
                    "--transport ouroboros needs a running Ouroboros IRMd: none answers on {} \
                     (see docs/ouroboros.md; .ci/ouroboros.sh up starts one with local_layer)",
                    cicada::ouroboros::IRM_SOCK_PATH
                ));
            }
            GENTLE.store(true, Ordering::Relaxed);
            true
        }
        other => return Err(format!("--transport {other:?}: want udp or ouroboros")),
    };
    if args.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    if !(0.0..1.0).contains(&args.churn) {
        return Err("--churn must be in [0, 1)".into());
    }
    if args.lab && over_ouroboros {
        return Err("--lab runs the peers over UDP: drop --transport ouroboros".into());
    }
    if let Some(m) = &args.ourolab {
        if !over_ouroboros {
            return Err("--ourolab runs Ouroboros peers: add --transport ouroboros".into());
        }
        if args.lab {
            return Err("--ourolab and --lab are two different labs: choose one".into());
        }
        if !matches!(m.as_str(), "eth-dix" | "eth-llc" | "udp4") {
            return Err(format!("--ourolab {m:?}: want eth-dix, eth-llc or udp4"));
        }
        if !(1..=9).contains(&args.ourolab_hosts) {
            return Err("--ourolab-hosts must be 1 to 9".into());
        }
        if !is_root() {
            return Err(
                "--ourolab needs root: it builds network and mount namespaces and starts an \
                 IRMd in each (scripts/ourolab); run it as root"
                    .into(),
            );
        }
    }
    if args.lab && !is_root() {
        return Err(
            "--lab needs root: it builds the lab's network namespaces (scripts/netlab); \
             run it as root, or without --lab"
                .into(),
        );
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    install_signal_handler(stop.clone())?;
    // The lab, torn down when `_lab` drops (after the peers, declared later).
    let mut lab: Option<(String, String, LabEnv)> = None;
    // The Ouroboros lab of --ourolab: its script and prefix.
    let mut ourolab: Option<(String, String)> = None;
    let _lab = if let Some(medium) = &args.ourolab {
        let script = find_script(args.ourolab_script.as_ref(), "ourolab", "--ourolab-script")?;
        let prefix = format!("od{}", std::process::id());
        say(format!(
            "bringing up {} Ouroboros hosts {prefix}-h1.. joined by {medium} layer {} ({})",
            args.ourolab_hosts,
            args.layer,
            script.display()
        ));
        OUROLAB.store(true, Ordering::Relaxed);
        ourolab_up(&script, &prefix, medium, args.ourolab_hosts, &args.layer)?;
        ourolab = Some((script.display().to_string(), prefix));
        Some(LabGuard)
    } else if args.lab {
        let script = find_script(args.netlab.as_ref(), "netlab", "--netlab")?;
        let prefix = format!("demo{}", std::process::id());
        say(format!(
            "bringing up the lab {prefix} ({})",
            script.display()
        ));
        let env = lab_up(&script, &prefix)?;
        lab = Some((script.display().to_string(), prefix, env));
        Some(LabGuard)
    } else {
        None
    };
    let lab_var = |name: &str| -> String {
        lab.as_ref()
            .and_then(|(_, _, env)| env.iter().find(|(k, _)| k == name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9)
    });
    let mut rng = Rng(seed | 1);
    let bad_lines = Arc::new(AtomicUsize::new(0));
    let n = args.nodes;
    let ring_timeout = Duration::from_secs_f64(args.ring_timeout.max(1.0));
    // Across Ouroboros hosts a flow takes about 1 s to allocate and 0.23's
    // layers lose some allocations: requests get 2.5 s at least, and a join
    // is tried again for 40 s (docs/ouroboros.md, "Across hosts").
    let (request_timeout_ms, join_wait) = if ourolab.is_some() {
        (args.request_timeout_ms.max(2500), Duration::from_secs(45))
    } else {
        (args.request_timeout_ms, Duration::from_secs(20))
    };

    // ---- joins
    let started = Instant::now();
    let pb = ProgressBar::new(n as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40.cyan/blue}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix("joining");
    let mut peers: Vec<Peer> = Vec::with_capacity(n);
    for i in 0..n {
        let join = if i == 0 {
            None
        } else {
            Some(peers[rng.below(i)].addr.clone())
        };
        let name = format!("cicada-demo-{}-{i}", std::process::id());
        let launch = match (&lab, &ourolab) {
            (_, Some((script, prefix))) => {
                let host = format!("h{}", i % args.ourolab_hosts + 1);
                ourolab_name(script, prefix, &host, &name)?;
                Launch {
                    wrap: vec![
                        "bash".into(),
                        script.clone(),
                        "exec".into(),
                        host.clone(),
                        prefix.clone(),
                        "--".into(),
                    ],
                    host,
                    bind: String::new(),
                    map: false,
                    extra: vec!["--connect-timeout".into(), "40".into()],
                }
            }
            (Some((script, prefix, _)), None) => {
                let (host, bind, map) = lab_place(i);
                Launch {
                    wrap: vec![
                        "bash".into(),
                        script.clone(),
                        "exec".into(),
                        host.clone(),
                        prefix.clone(),
                        "--".into(),
                    ],
                    host,
                    bind,
                    map,
                    extra: Vec::new(),
                }
            }
            (None, None) => Launch {
                host: "local".into(),
                wrap: Vec::new(),
                bind: "127.0.0.1:0".into(),
                map: false,
                extra: Vec::new(),
            },
        };
        let mut p = Peer::start(
            &exe,
            &launch,
            over_ouroboros.then_some((name.as_str(), args.layer.as_str())),
            join.as_deref(),
            args.stabilize_ms,
            request_timeout_ms,
            &bad_lines,
        )?;
        let joined = p.wait_for(0, join_wait, |v| {
            v["event"] == "joined" || v["event"] == "error" || v["event"] == "eof"
        });
        match joined {
            Some(v) if v["event"] == "joined" => {
                if lab.is_some() {
                    // Bound to all interfaces: it joined under the address
                    // its bootstrap sees it at; the first peer will learn
                    // its own from its first contact, pub1's.
                    p.addr = if i == 0 {
                        format!("{}:{}", lab_var("NETLAB_PUB1_IP"), 43000)
                    } else {
                        v["addr"].as_str().unwrap_or_default().to_string()
                    };
                    p.id = Hash::of(&p.addr);
                    if i > 0 && v["id"].as_str() != Some(p.id.to_string().as_str()) {
                        return Err(format!(
                            "node {i} joined as {} with id {}, not SHA-256 of its address",
                            p.addr, v["id"]
                        ));
                    }
                }
            }
            other => {
                p.kill();
                return Err(format!(
                    "node {} ({}) did not join: {}",
                    i,
                    p.addr,
                    other
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "timeout".into())
                ));
            }
        }
        pb.set_message(p.addr.clone());
        peers.push(p);
        pb.inc(1);
    }
    pb.finish_and_clear();
    if lab.is_some() {
        let learned = peers[0].wait_for(0, Duration::from_secs(10), |v| v["event"] == "address");
        let want = peers[0].addr.clone();
        if learned.as_ref().and_then(|v| v["addr"].as_str()) != Some(want.as_str()) {
            return Err(format!(
                "the first peer should have learned it is {want}: {learned:?}"
            ));
        }
    }
    let joins_done = started.elapsed().as_secs_f64();
    say(format!(
        "{n} peers joined in {joins_done:.1} s; waiting for the ring"
    ));

    let all: Vec<usize> = (0..n).collect();
    let ring_ok = wait_ring(&mut peers, &all, ring_timeout, &stop);
    let join_seconds = started.elapsed().as_secs_f64();
    say(if ring_ok {
        format!("ring correct after {join_seconds:.1} s")
    } else {
        format!("ring NOT correct after {join_seconds:.1} s")
    });

    let before = workload(&mut peers, &all, &mut rng, "a");
    say("workload done; killing peers".into());

    // ---- churn
    let kills = ((n as f64) * args.churn).floor() as usize;
    let kills = kills.min(n - 2);
    let mut order: Vec<usize> = all.clone();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut victims: Vec<usize> = order[..kills].to_vec();
    victims.sort_unstable();
    for &v in &victims {
        peers[v].kill();
    }
    let survivors: Vec<usize> = all
        .iter()
        .copied()
        .filter(|i| !victims.contains(i))
        .collect();
    let churn_started = Instant::now();
    let ring_ok_after = wait_ring(&mut peers, &survivors, ring_timeout, &stop);
    let heal_seconds = churn_started.elapsed().as_secs_f64();
    say(format!(
        "killed {kills}; survivors' ring {} after {heal_seconds:.1} s",
        if ring_ok_after {
            "correct"
        } else {
            "NOT correct"
        }
    ));
    // Let a few stabilize rounds refresh the fingers that pointed to the dead.
    if ring_ok_after {
        thread::sleep(Duration::from_millis(args.stabilize_ms * 5));
    }
    let after = workload(&mut peers, &survivors, &mut rng, "b");

    // ---- picture
    let mut svg_written = None;
    if let Some(path) = &args.svg {
        let picture = picture(&mut peers, &survivors, &victims, &after);
        match std::fs::write(path, picture) {
            Ok(()) => svg_written = Some(path.display().to_string()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }

    let ok = ring_ok && ring_ok_after && before.all_ok() && after.all_ok();
    // ---- where the peers sit
    let nat: Vec<String> = peers.iter().map(Peer::nat).collect();
    let counts = |which: &[usize]| -> String {
        let mut c: Vec<(String, usize)> = Vec::new();
        for &i in which {
            match c.iter_mut().find(|(k, _)| *k == nat[i]) {
                Some((_, k)) => *k += 1,
                None => c.push((nat[i].clone(), 1)),
            }
        }
        c.sort();
        c.iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (nat_before, nat_after) = (counts(&all), counts(&survivors));
    if n <= 64 || args.lab || ourolab.is_some() {
        println!();
        println!("{:>4}  {:<8} {:<24} NAT", "peer", "host", "address");
        println!("{}", "-".repeat(62));
        for (i, p) in peers.iter().enumerate() {
            let fate = if victims.contains(&i) { "killed" } else { "" };
            let line = format!("{i:>4}  {:<8} {:<24} {:<26} {fate}", p.host, p.addr, nat[i]);
            println!("{}", line.trim_end());
        }
    }
    // ---- summary
    println!();
    println!("NAT status: {nat_before}");
    print_table(
        n,
        kills,
        join_seconds,
        heal_seconds,
        ring_ok,
        ring_ok_after,
        &before,
        &after,
    );
    if let Some(p) = &svg_written {
        println!("picture: {p}");
    }
    println!(
        "{}",
        if ok {
            "demo OK: everything that should have worked did"
        } else {
            "demo FAILED: see the table"
        }
    );
    for f in before.failures.iter().chain(&after.failures) {
        println!("failed: {f}");
    }
    if args.json {
        let mut a = after.json();
        a.insert("killed".into(), json!(kills));
        a.insert("survivors".into(), json!(survivors.len()));
        a.insert("ring_correct".into(), json!(ring_ok_after));
        a.insert("ring_seconds".into(), json!(heal_seconds));
        let mut top = before.json();
        top.insert("nodes".into(), json!(n));
        top.insert("ring_correct".into(), json!(ring_ok));
        top.insert("join_seconds".into(), json!(join_seconds));
        top.insert("after_churn".into(), Value::Object(a));
        top.insert("ok".into(), json!(ok));
        top.insert("seed".into(), json!(seed));
        top.insert("bad_lines".into(), json!(bad_lines.load(Ordering::Relaxed)));
        top.insert("svg".into(), json!(svg_written));
        top.insert("nat".into(), json!(nat_before));
        a_nat(&mut top, &nat_after);
        top.insert(
            "lab".into(),
            json!(lab
                .as_ref()
                .map(|(_, prefix, _)| prefix.clone())
                .or_else(|| ourolab.as_ref().map(|(_, prefix)| prefix.clone()))),
        );
        let list: Vec<Value> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                json!({
                    "host": p.host, "addr": p.addr, "id": p.id.to_string(),
                    "nat": nat[i], "killed": victims.contains(&i),
                })
            })
            .collect();
        top.insert("peers".into(), Value::Array(list));
        println!("{}", Value::Object(top));
    }
    drop(peers);
    Ok(ok)
}

/// Puts the survivors' NAT counts into the summary's `after_churn`.
fn a_nat(top: &mut serde_json::Map<String, Value>, nat_after: &str) {
    if let Some(Value::Object(a)) = top.get_mut("after_churn") {
        a.insert("nat".into(), json!(nat_after));
    }
}

#[allow(clippy::too_many_arguments)]
fn print_table(
    n: usize,
    kills: usize,
    join_s: f64,
    heal_s: f64,
    ring: bool,
    ring_after: bool,
    b: &Workload,
    a: &Workload,
) {
    let yes = |x: bool| if x { "yes" } else { "NO" }.to_string();
    let rate = |ok: usize, all: usize| format!("{ok}/{all} ({:.0}%)", 100.0 * ratio(ok, all));
    let rows: Vec<(&str, String, String)> = vec![
        (
            "nodes",
            n.to_string(),
            format!("{} ({kills} killed)", n - kills),
        ),
        ("ring correct", yes(ring), yes(ring_after)),
        (
            "time to correct ring",
            format!("{join_s:.1} s"),
            format!("{heal_s:.1} s"),
        ),
        (
            "lookups correct",
            rate(b.lookups_ok, b.lookups),
            rate(a.lookups_ok, a.lookups),
        ),
        (
            "lookup hops mean / p99",
            format!("{:.2} / {}", b.hops_mean(), b.hops_p99()),
            format!("{:.2} / {}", a.hops_mean(), a.hops_p99()),
        ),
        (
            "sends delivered once",
            rate(b.sends_delivered, b.sends),
            rate(a.sends_delivered, a.sends),
        ),
        (
            "broadcast coverage",
            rate(b.broadcast_reached, b.broadcast_receivers),
            rate(a.broadcast_reached, a.broadcast_receivers),
        ),
        (
            "broadcast messages",
            b.broadcast_messages.to_string(),
            a.broadcast_messages.to_string(),
        ),
    ];
    println!();
    println!("{:<24} {:>18} {:>18}", "", "before churn", "after churn");
    println!("{}", "-".repeat(62));
    for (k, x, y) in rows {
        println!("{k:<24} {x:>18} {y:>18}");
    }
    println!();
}

/// The true ring of `live`: their indices sorted by id.
fn sorted(peers: &[Peer], live: &[usize]) -> Vec<usize> {
    let mut s = live.to_vec();
    s.sort_by_key(|&i| peers[i].id);
    s
}

/// Polls `peers` on every live node until every successor and predecessor
/// is the true one, or until `within`.
fn wait_ring(peers: &mut [Peer], live: &[usize], within: Duration, stop: &AtomicBool) -> bool {
    let ring = sorted(peers, live);
    let m = ring.len();
    let pb = ProgressBar::new(m as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:40.green/blue}] {pos}/{len} nodes with the right neighbours",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix("ring");
    let deadline = Instant::now() + within;
    let ok = loop {
        let marks: Vec<usize> = ring.iter().map(|&i| peers[i].len()).collect();
        for &i in &ring {
            peers[i].cmd("peers");
        }
        let mut right = 0;
        for (k, &i) in ring.iter().enumerate() {
            let succ = &peers[ring[(k + 1) % m]].addr;
            let pred = &peers[ring[(k + m - 1) % m]].addr;
            let v = peers[i].wait_for(marks[k], Duration::from_secs(3), |v| v["event"] == "peers");
            if let Some(v) = v {
                if v["successor"].as_str() == Some(succ) && v["predecessor"].as_str() == Some(pred)
                {
                    right += 1;
                }
            }
        }
        pb.set_position(right as u64);
        if right == m {
            break true;
        }
        if Instant::now() >= deadline || stop.load(Ordering::SeqCst) {
            break false;
        }
        thread::sleep(Duration::from_millis(200));
    };
    pb.finish_and_clear();
    ok
}

/// The live node that owns `key`: the first id at or after it.
fn owner(peers: &[Peer], ring: &[usize], key: &Hash) -> usize {
    ring.iter()
        .copied()
        .find(|&i| peers[i].id >= *key)
        .unwrap_or(ring[0])
}

fn workload(peers: &mut [Peer], live: &[usize], rng: &mut Rng, tag: &str) -> Workload {
    let ring = sorted(peers, live);
    let mut w = Workload::default();
    let long = Duration::from_secs(15);

    // Lookups: one random key from every node.
    let mut asked = Vec::new();
    for &i in live {
        let key = rng.key();
        let mark = peers[i].len();
        peers[i].cmd(&format!("lookup {key}"));
        asked.push((i, key, mark));
    }
    for (i, key, mark) in asked {
        w.lookups += 1;
        let ks = key.to_string();
        let v = peers[i].wait_for(mark, long, |v| {
            v["event"] == "lookup" && v["key"] == ks.as_str()
        });
        let want = peers[owner(peers, &ring, &key)].addr.as_str();
        match v {
            Some(v) if v["ok"] == true && v["owner"].as_str() == Some(want) => {
                w.lookups_ok += 1;
                if let Some(h) = v["hops"].as_u64() {
                    w.hops.push(h as u32);
                }
            }
            other => w.fail(format!(
                "lookup {} from {} (owner {want}): {}",
                key.short(),
                peers[i].addr,
                other.map_or("no answer".into(), |v| v.to_string())
            )),
        }
    }

    // Sends between random pairs; every third with two duplicates.
    let pairs = live.len().max(8);
    let marks: Vec<usize> = peers.iter().map(Peer::len).collect();
    let mut sent = Vec::new();
    for k in 0..pairs {
        let a = live[rng.below(live.len())];
        let mut b = live[rng.below(live.len())];
        while b == a {
            b = live[rng.below(live.len())];
        }
        let data = format!("demo-{tag}-send-{k}");
        let target = peers[b].addr.clone();
        if k % 3 == 0 {
            peers[a].cmd(&format!("send-dup 2 {target} {data}"));
        } else {
            peers[a].cmd(&format!("send {target} {data}"));
        }
        sent.push((a, b, data));
    }
    let mut confirmed = Vec::new();
    for (a, b, data) in &sent {
        let d = data.clone();
        let v = peers[*a].wait_for(marks[*a], long, move |v| {
            v["event"] == "sent" && v["data"] == d.as_str()
        });
        confirmed.push(v);
        let d = data.clone();
        peers[*b].wait_for(marks[*b], Duration::from_secs(2), move |v| {
            v["event"] == "recv" && v["data"] == d.as_str()
        });
    }
    // A moment for late duplicates to show themselves.
    thread::sleep(Duration::from_millis(300));
    for ((a, b, data), event) in sent.iter().zip(confirmed) {
        w.sends += 1;
        let got = peers[*b].count(marks[*b], |v| {
            v["event"] == "recv" && v["data"] == data.as_str()
        });
        if got > 1 {
            w.duplicates_seen += got - 1;
        }
        let ok = event.as_ref().is_some_and(|v| v["ok"] == true);
        if ok && got == 1 {
            w.sends_delivered += 1;
        } else {
            let (from, to) = (peers[*a].addr.clone(), peers[*b].addr.clone());
            w.fail(format!(
                "send {data} {from} -> {to}: received {got} times; sender said {}",
                event.map_or("nothing".into(), |v| v.to_string())
            ));
        }
    }

    // One broadcast from a random node.
    let origin = live[rng.below(live.len())];
    let before = broadcast_sent(peers, live);
    let marks: Vec<usize> = peers.iter().map(Peer::len).collect();
    let data = format!("demo-{tag}-broadcast");
    peers[origin].cmd(&format!("broadcast {data}"));
    let others: Vec<usize> = live.iter().copied().filter(|&i| i != origin).collect();
    w.broadcast_receivers = others.len();
    let deadline = Instant::now() + Duration::from_secs(10);
    for &i in &others {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = data.clone();
        peers[i].wait_for(marks[i], left, move |v| {
            v["event"] == "recv" && v["data"] == d.as_str()
        });
    }
    thread::sleep(Duration::from_millis(300));
    for &i in &others {
        if peers[i].count(marks[i], |v| {
            v["event"] == "recv" && v["data"] == data.as_str()
        }) == 1
        {
            w.broadcast_reached += 1;
        }
    }
    for &i in &others {
        let got = peers[i].count(marks[i], |v| {
            v["event"] == "recv" && v["data"] == data.as_str()
        });
        if got != 1 {
            let addr = peers[i].addr.clone();
            w.fail(format!("broadcast {data} reached {addr} {got} times"));
        }
    }
    let after = broadcast_sent(peers, live);
    w.broadcast_messages = after.saturating_sub(before);
    w.broadcast_origin = Some(origin);
    w
}

/// The sum of the live nodes' `broadcast_sent` counters.
fn broadcast_sent(peers: &mut [Peer], live: &[usize]) -> u64 {
    let marks: Vec<usize> = live.iter().map(|&i| peers[i].len()).collect();
    for &i in live {
        peers[i].cmd("stats");
    }
    live.iter()
        .zip(marks)
        .filter_map(|(&i, m)| {
            peers[i].wait_for(m, Duration::from_secs(3), |v| v["event"] == "stats")
        })
        .filter_map(|v| v["broadcast_sent"].as_u64())
        .sum()
}

/// Asks the live nodes for their fingers and draws the ring.
fn picture(peers: &mut [Peer], live: &[usize], dead: &[usize], w: &Workload) -> String {
    let ring = sorted(peers, live);
    let marks: Vec<usize> = ring.iter().map(|&i| peers[i].len()).collect();
    for &i in &ring {
        peers[i].cmd("fingers");
    }
    let live_ids: std::collections::HashSet<Hash> = ring.iter().map(|&i| peers[i].id).collect();
    let fingers: Vec<Vec<Hash>> = ring
        .iter()
        .zip(marks)
        .map(|(&i, m)| {
            peers[i]
                .wait_for(m, Duration::from_secs(3), |v| v["event"] == "fingers")
                .and_then(|v| v["fingers"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|f| f["id"].as_str().and_then(|s| s.parse::<Hash>().ok()))
                .filter(|h| live_ids.contains(h))
                .collect()
        })
        .collect();
    let ids: Vec<Hash> = ring.iter().map(|&i| peers[i].id).collect();
    let labels: Vec<String> = ring.iter().map(|&i| peers[i].addr.clone()).collect();
    let origin = w
        .broadcast_origin
        .and_then(|o| ring.iter().position(|&i| i == o))
        .unwrap_or(0);
    let dead_ids: Vec<Hash> = dead.iter().map(|&i| peers[i].id).collect();
    let chosen = (origin + ring.len() / 2) % ring.len();
    svg::render(&svg::Ring {
        ids: &ids,
        labels: &labels,
        fingers: &fingers,
        dead: &dead_ids,
        chosen,
        origin,
        successors: 16,
    })
}
