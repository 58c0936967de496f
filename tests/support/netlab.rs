//! The project's network lab (`scripts/netlab`) for tests: brings a lab up
//! with a unique prefix and the knobs a test asks for (or skips the test
//! through [`crate::require`] where the lab cannot be built), runs commands
//! in its namespaces, tells its addresses, and tears it down on drop.
//! Shared by `traversal/tests/natlab.rs`, `tests/netlab.rs` and
//! `cli/tests/processes.rs` through `#[path]`; each declares `mod require`
//! beside it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::require::{self, Need};

/// `scripts/netlab` of this checkout.
pub fn script() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|d| d.join("scripts/netlab"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| here.join("scripts/netlab"))
}

/// What `netlab check WHAT` says: `Ok` when the lab (`lab`) or netem
/// (`netem`) works here, else why not.
pub fn check(what: &str) -> Result<(), String> {
    let script = script();
    if !script.is_file() {
        return Err(format!("{} is missing", script.display()));
    }
    let out = Command::new("bash")
        .arg(&script)
        .args(["check", what])
        .output()
        .map_err(|e| format!("cannot run bash {}: {e}", script.display()))?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{said}{}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A running lab; torn down (`netlab down --kill-strays`) on drop.
pub struct Lab {
    pub script: PathBuf,
    pub prefix: String,
    /// The lab's `NETLAB_*` variables (`netlab env`).
    pub env: HashMap<String, String>,
}

static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Lab {
    /// Brings up a fresh lab with the given `NETLAB_*` knobs (see
    /// `scripts/netlab`), or skips `test` (need `netlab`) and returns
    /// `None`. Panics if the lab can be built here but `up` fails (as it
    /// does for a netem knob on a kernel without netem).
    pub fn up(test: &str, knobs: &[(&str, &str)]) -> Option<Lab> {
        require::or_skip(Need::Netlab, test, check("lab"))?;
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("t{}-{n}", std::process::id());
        let script = script();
        let mut cmd = Command::new("bash");
        cmd.arg(&script).args(["up", &prefix]);
        // The lab is what `knobs` say, whatever this process inherited
        // (the miniupnpd binary and the state directory excepted).
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("NETLAB_") && k != "NETLAB_MINIUPNPD" && k != "NETLAB_RUNDIR" {
                cmd.env_remove(k);
            }
        }
        cmd.envs(knobs.iter().copied());
        let out = cmd.output().expect("run netlab up");
        let mut lab = Lab {
            script,
            prefix,
            env: HashMap::new(),
        };
        assert!(
            out.status.success(),
            "netlab up {} {knobs:?} failed:\n{}\n{}",
            lab.prefix,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = lab.run(&["env"]);
        lab.env = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        eprintln!("{test}: lab {} is up {knobs:?}", lab.prefix);
        Some(lab)
    }

    /// Runs `netlab ARGS... PREFIX` and returns its stdout.
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .arg(&self.prefix)
            .output()
            .expect("run netlab");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The lab variable `NETLAB_{name}` (e.g. `GW1_IP`, `LAN1_2_IP`).
    pub fn var(&self, name: &str) -> &str {
        let key = format!("NETLAB_{name}");
        self.env
            .get(&key)
            .unwrap_or_else(|| panic!("lab {} has no {key}: {:?}", self.prefix, self.env))
    }

    /// The IPv4 address of `role` (`pub1`, `lan1-2`; a gateway's external one).
    pub fn ip(&self, role: &str) -> &str {
        self.var(&format!("{}_IP", role.to_uppercase().replace('-', "_")))
    }

    /// A command that runs what is appended to it in `role`'s namespace.
    pub fn exec(&self, role: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(&self.script)
            .args(["exec", role, &self.prefix, "--"]);
        cmd
    }

    /// A command running this test binary's ignored test `test` in `role`.
    pub fn exec_self(&self, role: &str, test: &str) -> Command {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = self.exec(role);
        cmd.arg(exe).args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]);
        cmd
    }

    /// What `netlab status` says (hosts, daemons, every gateway's mappings).
    pub fn status(&self) -> String {
        self.run(&["status"])
    }

    /// The DNAT rules miniupnpd holds on gateway `gw`, one a line.
    pub fn mappings(&self, gw: &str) -> String {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(["mappings", gw, &self.prefix])
            .output()
            .expect("run netlab mappings");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(["down", &self.prefix, "--kill-strays"])
            .output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!("netlab down {} failed: {out:?}", self.prefix);
        }
    }
}
