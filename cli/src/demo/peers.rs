//! I/O: the demo's peer processes: started, asked, stopped, killed on a signal.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use cicada::Hash;
use cicada_cli::harness::{self, Process};

use super::lab::{lab_down, Launch};

/// Every child, weakly, for the signal handler.
fn registry() -> &'static Mutex<Vec<Weak<Mutex<Child>>>> {
    static R: OnceLock<Mutex<Vec<Weak<Mutex<Child>>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Vec::new()))
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Set when the children run over Ouroboros: they are stopped with
/// SIGTERM, never SIGKILL.
pub(super) static GENTLE: AtomicBool = AtomicBool::new(false);

/// Set when the children run on the hosts of `--ourolab`: their names live
/// in the lab's IRMds, which go away with the lab.
pub(super) static OUROLAB: AtomicBool = AtomicBool::new(false);

/// Stops a child (SIGKILL, or SIGTERM when [`GENTLE`]) and reaps it; a
/// gentle child still running after 10 s is left alone.
fn stop_child(c: &mut Child) {
    if GENTLE.load(Ordering::Relaxed) {
        harness::terminate(c, Duration::from_secs(10));
    } else {
        harness::kill(c);
    }
}

/// Kills every registered child and reaps it.
pub(super) fn kill_all() {
    let children: Vec<_> = lock(registry()).iter().filter_map(Weak::upgrade).collect();
    for c in children {
        stop_child(&mut lock(&c));
    }
}

/// On SIGINT or SIGTERM: kill every child, tear the lab down, exit 130.
pub(super) fn install_signal_handler(stop: Arc<AtomicBool>) -> Result<(), String> {
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

/// One `cicada node --json` process; stopped when dropped.
pub(super) struct Peer {
    pub(super) process: Process,
    pub(super) addr: String,
    pub(super) id: Hash,
    pub(super) alive: bool,
    pub(super) host: String,
    /// Where it serves its metrics (`--metrics`).
    pub(super) metrics: Option<String>,
}

impl std::ops::Deref for Peer {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Peer {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

impl Peer {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        exe: &std::path::Path,
        launch: &Launch,
        ouroboros: Option<(&str, &str)>,
        join: Option<&str>,
        stabilize_ms: u64,
        request_timeout_ms: u64,
        lookup_timeout_ms: u64,
        metrics: bool,
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
        if metrics {
            cmd.args(["--metrics", "127.0.0.1:0"]);
        }
        cmd.args(&launch.extra);
        cmd.arg("--json")
            .args(["--stabilize-ms", &stabilize_ms.to_string()])
            .args(["--request-timeout-ms", &request_timeout_ms.to_string()])
            .args(["--lookup-timeout-ms", &lookup_timeout_ms.to_string()])
            .stderr(Stdio::null());
        if let Some(j) = join {
            cmd.args(["--join", j]);
        }
        let process =
            Process::spawn(cmd).map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        lock(registry()).push(Arc::downgrade(process.shared_child()));
        let mut peer = Peer {
            process,
            addr: String::new(),
            id: Hash::ZERO,
            alive: true,
            host: launch.host.clone(),
            metrics: None,
        };
        let ready = peer
            .ready(Duration::from_secs(20))
            .map_err(|e| format!("a node failed to start: {e}"))?;
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

    /// Its NAT status from its latest `nat` event: `public`, `mapped`,
    /// `nat (endpoint-independent)`, ...; `unknown` before any.
    pub(super) fn nat(&self) -> String {
        match self.latest(|v| v["event"] == "nat") {
            Some(v) => match v["mapping"].as_str() {
                Some(m) if m != "unknown" => {
                    format!("{} ({m})", v["status"].as_str().unwrap_or("?"))
                }
                _ => v["status"].as_str().unwrap_or("unknown").to_string(),
            },
            None => "unknown".into(),
        }
    }

    pub(super) fn kill(&mut self) {
        self.alive = false;
        self.close_stdin();
        stop_child(&mut self.child()); // SIGKILL on Unix (SIGTERM over Ouroboros)
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
            self.close_stdin();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if matches!(self.child().try_wait(), Ok(Some(_))) {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }
}
