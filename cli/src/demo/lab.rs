//! I/O: the labs of `cicada demo --lab` (`scripts/netlab`) and `--ourolab`
//! (`scripts/ourolab`): brought up, torn down, the peers placed in them.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use super::peers::{kill_all, lock};

/// A lab's script and the arguments that tear it down.
type LabDown = (PathBuf, Vec<String>);

/// The lab of `--lab` or `--ourolab` while it is up: its script and the
/// arguments that tear it down.
pub(super) fn lab_state() -> &'static Mutex<Option<LabDown>> {
    static L: OnceLock<Mutex<Option<LabDown>>> = OnceLock::new();
    L.get_or_init(|| Mutex::new(None))
}

/// Tears the lab down (`netlab down P --kill-strays`, `ourolab down P`), if
/// one is up.
pub(super) fn lab_down() {
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

/// Finds a lab script: `given` (`--netlab`, `--ourolab-script`), else
/// `scripts/NAME` here or above.
pub(super) fn find_script(
    given: Option<&PathBuf>,
    name: &str,
    flag: &str,
) -> Result<PathBuf, String> {
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

/// Brings up the Ouroboros hosts of `--ourolab` (`ourolab up`); returns
/// what the script printed.
pub(super) fn ourolab_up(
    script: &std::path::Path,
    prefix: &str,
    medium: &str,
    hosts: usize,
    layer: &str,
) -> Result<String, String> {
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
    Ok(String::from_utf8_lossy(&up.stdout).trim().to_string())
}

/// Makes `name`, served on `host` of the Ouroboros lab, reachable from
/// every host (`ourolab name`).
pub(super) fn ourolab_name(
    script: &str,
    prefix: &str,
    host: &str,
    name: &str,
) -> Result<(), String> {
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
    /// More flags for the node.
    pub(super) extra: Vec<String>,
}
