//! The NAT lab (`shared/netlab/natlab`) for tests: finds it, says why it
//! cannot be built here (the tests then print a loud SKIPPED line and pass),
//! brings a lab up with a unique prefix, runs commands in its namespaces, and
//! tears it down on drop. Shared by `traversal/tests/natlab.rs` and
//! `tests/swarm.rs` through `#[path]`.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `$NATLAB`, or `shared/netlab/natlab` beside the checkout (CI clones the
/// repository with `shared/` beside it).
pub fn natlab_path() -> PathBuf {
    if let Some(p) = std::env::var_os("NATLAB") {
        return PathBuf::from(p);
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|d| d.join("shared/netlab/natlab"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| here.join("../shared/netlab/natlab"))
}

fn command_ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin"])
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file());
    found
}

/// Why the lab cannot be built here, if it cannot.
pub fn lab_unavailable() -> Option<String> {
    let natlab = natlab_path();
    if !natlab.is_file() {
        return Some(format!(
            "natlab not found at {} (set NATLAB)",
            natlab.display()
        ));
    }
    if effective_uid() != Some(0) {
        return Some("not running as root".into());
    }
    for program in ["ip", "nft", "python3"] {
        if find_program(program).is_none() {
            return Some(format!("{program} is not installed"));
        }
    }
    let miniupnpd = std::env::var_os("NATLAB_MINIUPNPD")
        .map(PathBuf::from)
        .or_else(|| find_program("miniupnpd"));
    if !miniupnpd.is_some_and(|p| p.is_file()) {
        return Some("miniupnpd is not installed (Debian package miniupnpd-nftables)".into());
    }
    if !command_ok(Command::new("ip").args(["netns", "list"])) {
        return Some("`ip netns` does not work".into());
    }
    let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
    let probe = format!("tvprobe-{}-{n}", std::process::id());
    if !command_ok(Command::new("ip").args(["netns", "add", &probe])) {
        return Some("cannot create a network namespace".into());
    }
    let _ = command_ok(Command::new("ip").args(["netns", "del", &probe]));
    None
}

/// Prints past libtest's output capture, so that CI logs show it.
/// Starts on a fresh line: libtest may have printed `test name ... `.
pub fn loud(line: &str) {
    let _ = writeln!(std::io::stderr(), "\n{line}");
}

pub struct Lab {
    pub natlab: PathBuf,
    pub prefix: String,
}

static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Lab {
    /// Brings up a fresh lab with the given knobs, or says SKIPPED and
    /// returns `None` when this machine cannot build one.
    pub fn up(test: &str, knobs: &[(&str, &str)]) -> Option<Lab> {
        if let Some(reason) = lab_unavailable() {
            loud(&format!(
                "SKIPPED: {test}: the NAT lab cannot be built here: {reason}"
            ));
            return None;
        }
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("tv{}-{n}", std::process::id() % 1_000_000);
        let lab = Lab {
            natlab: natlab_path(),
            prefix,
        };
        let mut cmd = Command::new("bash");
        cmd.arg(&lab.natlab).args(["up", &lab.prefix]);
        for knob in [
            "NATLAB_UPNP",
            "NATLAB_NATPMP",
            "NATLAB_SECURE_MODE",
            "NATLAB_PREFIX",
        ] {
            cmd.env_remove(knob);
        }
        for (k, v) in knobs {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run natlab up");
        assert!(
            out.status.success(),
            "natlab up {} failed:\n{}\n{}",
            lab.prefix,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{test}: lab {} is up {knobs:?}", lab.prefix);
        Some(lab)
    }

    /// A command that runs what is appended to it in `role`'s namespace.
    pub fn exec(&self, role: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(&self.natlab)
            .args(["exec", role, &self.prefix, "--"]);
        cmd
    }

    /// A command running this test binary's ignored test `test` in `role`.
    pub fn exec_self(&self, role: &str, test: &str) -> Command {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new("bash");
        cmd.arg(&self.natlab)
            .args(["exec", role, &self.prefix, "--"])
            .arg(exe)
            .args([
                "--exact",
                test,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ]);
        cmd
    }

    /// What `natlab status` says (addresses, daemons, the gateway's DNAT rules).
    pub fn status(&self) -> String {
        let out = Command::new("bash")
            .arg(&self.natlab)
            .args(["status", &self.prefix])
            .output()
            .expect("run natlab status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = Command::new("bash")
            .arg(&self.natlab)
            .args(["down", &self.prefix, "--kill-strays"])
            .output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            loud(&format!("natlab down {} failed: {out:?}", self.prefix));
        }
    }
}
