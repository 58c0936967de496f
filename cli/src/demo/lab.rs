//! I/O: the network lab of `cicada demo --lab`: brought up, torn down, the peers placed in it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use super::{kill_all, lock};

/// The lab of `--lab` while it is up: its script and prefix.
pub(super) fn lab_state() -> &'static Mutex<Option<(PathBuf, String)>> {
    static L: OnceLock<Mutex<Option<(PathBuf, String)>>> = OnceLock::new();
    L.get_or_init(|| Mutex::new(None))
}

/// Tears the lab down (`netlab down --kill-strays`), if one is up.
pub(super) fn lab_down() {
    if let Some((script, prefix)) = lock(lab_state()).take() {
        let _ = Command::new("bash")
            .arg(&script)
            .args(["down", &prefix, "--kill-strays"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Stops every peer and tears the lab down when dropped.
pub(super) struct LabGuard;

impl Drop for LabGuard {
    fn drop(&mut self) {
        kill_all();
        lab_down();
    }
}

/// Hosts of the demo's lab (`NETLAB_PUBLIC=3`, two LANs of one host).
pub(super) const LAB_KNOBS: [(&str, &str); 4] = [
    ("NETLAB_PUBLIC", "3"),
    ("NETLAB_LANS", "2"),
    ("NETLAB_HOSTS", "1"),
    ("NETLAB_IPV6", "yes"),
];

/// Whether this process runs as root (effective uid 0).
pub(super) fn is_root() -> bool {
    crate::procfs::status_value("Uid", 1) == Some(0)
}

/// Finds the lab script: `--netlab`, else `scripts/netlab` here or above.
pub(super) fn find_netlab(given: Option<&PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(format!("--netlab {}: no such file", p.display()))
        };
    }
    let here = std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?;
    here.ancestors()
        .map(|d| d.join("scripts/netlab"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "--lab needs the lab script scripts/netlab: run from the repository or give --netlab PATH"
                .to_string()
        })
}

/// Brings up the lab `prefix` and returns its variables (`netlab env`).
pub(super) fn lab_up(script: &std::path::Path, prefix: &str) -> Result<LabEnv, String> {
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
    *lock(lab_state()) = Some((script.to_path_buf(), prefix.to_string()));
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
pub(super) fn lab_place(i: usize) -> (String, String, bool) {
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
pub(super) type LabEnv = Vec<(String, String)>;

/// How a peer is started: where, and bound to what.
pub(super) struct Launch {
    /// The lab host, or `local`.
    pub(super) host: String,
    /// Words run before the executable (`bash netlab exec ROLE P --`).
    pub(super) wrap: Vec<String>,
    pub(super) bind: String,
    pub(super) map: bool,
}
