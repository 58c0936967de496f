//! The swarm over Ouroboros across hosts: `scripts/ourolab` builds three
//! "hosts" on this machine (a network namespace and a mount namespace each,
//! with an IRMd of its own) joined by a udp4 layer, or by an `eth-dix` layer
//! on links with no IP address at all, and six `cicada node --ouroboros`
//! processes, two a host, swarm by name only. Packets between hosts cross
//! the layer's IPCPs (no direct shared-memory flow is possible between two
//! IRMds). Skipped through `require` (need `netlab` for the namespaces,
//! `ouroboros` for the IRMd) where the lab cannot be built.

use super::ouroboros::{all_pairs, broadcast_reaches_all, wait_joined_within};
use super::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What joins the hosts of a lab: an Ouroboros layer of one IPCP a host.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Medium {
    /// `ipcpd-udp4` on `eth0` with an IPv4 address, layer `udp_layer`.
    Udp4,
    /// `ipcpd-eth-dix` on `eth0` with no IP address, layer `eth_layer`.
    EthDix,
}

impl Medium {
    /// `OUROLAB_MEDIUM`.
    fn knob(self) -> &'static str {
        match self {
            Medium::Udp4 => "udp4",
            Medium::EthDix => "eth-dix",
        }
    }

    /// The layer's name (`OUROLAB_LAYER`, `--layer` of the nodes).
    fn layer(self) -> &'static str {
        match self {
            Medium::Udp4 => "udp_layer",
            Medium::EthDix => "eth_layer",
        }
    }
}

/// Node flags across hosts. Two faults of Ouroboros 0.23 set the request
/// timeout (see "Across hosts" in `docs/ouroboros.md`): a flow to a name on
/// another host takes about 1 s to allocate (the IRMd first waits 1 s for a
/// local process to accept it), and the udp4 IPCP now and then drops the
/// reply to an allocation (it arrives before the IPCP has recorded where
/// the request went), so that allocation fails after the link's 3 s
/// `ALLOC_TIMEOUT` and the next one, 0.5 s later, takes another 1 s. A
/// request's 3 tries must outlast that (2.5 s each; `NODE_FLAGS` gives
/// 0.1 s), or a join through a bootstrap whose first flow was lost fails;
/// and a join whose tries all failed is tried again for 40 s
/// (`--connect-timeout`): the Ethernet layers lose allocation replies too,
/// now and then several in a row.
const HOST_FLAGS: [&str; 9] = [
    "--json",
    "--stabilize-ms",
    "300",
    "--request-timeout-ms",
    "2500",
    "--lookup-timeout-ms",
    "15000",
    "--connect-timeout",
    "40",
];

/// `scripts/ourolab` of this checkout.
fn script() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|d| d.join("scripts/ourolab"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| here.join("scripts/ourolab"))
}

/// Whether a lab of `medium` can be built here (`ourolab check`); else
/// skips `test` through `require` (root and namespaces are `netlab`'s need,
/// the Ouroboros programs `ouroboros`'s).
fn lab_can_run(test: &str, medium: Medium) -> bool {
    let out = Command::new("bash")
        .arg(script())
        .arg("check")
        .env("OUROLAB_MEDIUM", medium.knob())
        .output();
    let why = match out {
        Ok(o) if o.status.success() => return true,
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Err(e) => format!("cannot run {}: {e}", script().display()),
    };
    let need = if why.contains("Ouroboros") {
        Need::Ouroboros
    } else {
        Need::Netlab
    };
    require::skip(need, test, format_args!("ourolab: {why}"));
    false
}

/// A lab of Ouroboros hosts; torn down on drop (`ourolab down`: SIGTERM to
/// what still runs in the hosts, then to their IRMds, then the namespaces
/// are deleted), a failed test included.
struct OuroLab {
    prefix: String,
    medium: Medium,
}

impl OuroLab {
    /// Builds `hosts` hosts, or skips `test` and returns `None` where the
    /// lab cannot run (`ourolab check`: root and namespaces are `netlab`'s
    /// need, the Ouroboros programs `ouroboros`'s).
    fn up(test: &str, hosts: usize, medium: Medium) -> Option<OuroLab> {
        if !lab_can_run(test, medium) {
            return None;
        }
        static LABS: AtomicUsize = AtomicUsize::new(0);
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("o{}-{n}", std::process::id());
        let out = Command::new("bash")
            .arg(script())
            .args(["up", &prefix])
            .env("OUROLAB_HOSTS", hosts.to_string())
            .env("OUROLAB_LAYER", medium.layer())
            .env("OUROLAB_MEDIUM", medium.knob())
            .output()
            .expect("run ourolab up");
        let lab = OuroLab { prefix, medium };
        assert!(
            out.status.success(),
            "ourolab up {} failed:\n{}\n{}",
            lab.prefix,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
        Some(lab)
    }

    /// Makes `name`, served on `host`, reachable from every host.
    fn name(&self, host: &str, name: &str) {
        let out = Command::new("bash")
            .arg(script())
            .args(["name", host, name, "-p", &self.prefix])
            .output()
            .expect("run ourolab name");
        assert!(
            out.status.success(),
            "ourolab name {host} {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The first line of an IRMd's log (its IPCPs log there too) that shows
    /// one of Ouroboros 0.23's allocation faults of this lab's layer (see
    /// "Across hosts" in `docs/ouroboros.md`), if any.
    fn layer_fault(&self, hosts: usize) -> Option<String> {
        let rundir = std::env::var("OUROLAB_RUNDIR").unwrap_or_else(|_| "/run".into());
        (1..=hosts).find_map(|k| {
            let log = format!("{rundir}/ourolab-{}/h{k}.irmd.log", self.prefix);
            fault_in(self.medium, &log).map(|l| format!("h{k}: {l}"))
        })
    }

    /// Every address (`local`) configured in `host`'s network namespace, on
    /// any interface, IPv4 and IPv6 (link-local ones included).
    fn addresses(&self, host: &str) -> Vec<String> {
        let ns = format!("{}-{host}", self.prefix);
        let out = Command::new("ip")
            .args(["-n", &ns, "-j", "addr", "show"])
            .output()
            .expect("run ip");
        assert!(out.status.success(), "ip -n {ns} addr show failed");
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("ip -j addr of {ns}: {e}"));
        let links = v.as_array().expect("ip -j addr prints a list");
        assert!(!links.is_empty(), "{ns} has no interface at all");
        links
            .iter()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .map(|a| a["local"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// Packets (frames) received so far on `host`'s link (its `eth0`).
    fn rx_packets(&self, host: &str) -> u64 {
        let ns = format!("{}-{host}", self.prefix);
        let out = Command::new("ip")
            .args(["-n", &ns, "-j", "-s", "link", "show", "dev", "eth0"])
            .output()
            .expect("run ip");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .unwrap_or_else(|| panic!("no packet count for {ns}'s eth0: {v}"))
    }

    /// A `cicada node --ouroboros name` on `host`; the process is the node
    /// itself (`ourolab exec` ends in `exec nsenter`, which execs it), so
    /// the SIGTERM of `Node` reaches it.
    fn node(&self, host: &str, name: &str, join: Option<&str>, extra: &[&str]) -> Node {
        self.name(host, name);
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .args(["exec", host, &self.prefix, "--"])
            .arg(env!("CARGO_BIN_EXE_cicada"))
            .args(["node", "--ouroboros", name, "--layer", self.medium.layer()])
            .args(["--transport", "ouroboros"])
            .args(HOST_FLAGS)
            .args(extra);
        if let Some(j) = join {
            cmd.arg("--join").arg(j);
        }
        Node::spawn_with(cmd, name, true)
    }
}

impl Drop for OuroLab {
    fn drop(&mut self) {
        // With CICADA_TEST_LOGDIR set, the IRMds' logs are kept there.
        let mut cmd = Command::new("bash");
        cmd.arg(script()).args(["down", &self.prefix]);
        if let Some(dir) = std::env::var_os("CICADA_TEST_LOGDIR") {
            cmd.env("OUROLAB_KEEP_LOGS", dir);
        }
        let out = cmd.output();
        match out {
            Ok(o) if o.status.success() => {}
            other => eprintln!("ourolab down {} failed: {other:?}", self.prefix),
        }
    }
}

/// How many times the scenario may run on a fresh lab when it failed and
/// an IRMd's log shows one of 0.23's allocation faults of the layer.
const FAULT_TRIES: usize = 5;

/// Not in the default run: Ouroboros 0.23's udp4 IPCP loses about half of
/// these scenarios to its own races (docs/ouroboros.md, "Across hosts"),
/// and even five attempts on fresh labs fail now and then. Run it with
/// `cargo test -p cicada-cli --test processes ouro_hosts -- --ignored`.
#[test]
#[ignore = "Ouroboros 0.23's udp4 IPCP fails about half of these runs (docs/ouroboros.md, \"Across hosts\")"]
fn ouroboros_six_peers_on_three_hosts_swarm_by_name_and_survive_a_host() {
    swarm_on_a_lab(
        "ouroboros_six_peers_on_three_hosts_swarm_by_name_and_survive_a_host",
        Medium::Udp4,
    );
}

/// The same swarm over Ethernet with no IP: an `eth-dix` layer on veth
/// links, every host's namespace without a single address (checked), the
/// names found by the layer's broadcast queries. In the default run: 0.23's
/// Ethernet IPCPs lose some allocation replies (joins are tried again) and
/// now and then hang their allocation state; a run that failed with that
/// evidence in an IRMd's log runs again on a fresh lab (docs/ouroboros.md,
/// "Over Ethernet with no IP").
#[test]
fn ouroboros_six_peers_over_ethernet_without_ip_swarm_by_name_and_survive_a_host() {
    swarm_on_a_lab(
        "ouroboros_six_peers_over_ethernet_without_ip_swarm_by_name_and_survive_a_host",
        Medium::EthDix,
    );
}

/// Runs [`six_peers_on_three_hosts`] on a fresh lab, again (up to
/// [`FAULT_TRIES`] times) only when it failed and an IRMd's log shows one
/// of 0.23's allocation faults of the layer.
fn swarm_on_a_lab(test: &str, medium: Medium) {
    let _g = heavy();
    for attempt in 1..=FAULT_TRIES {
        let Some(lab) = OuroLab::up(test, HOSTS, medium) else {
            return;
        };
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            six_peers_on_three_hosts(&lab, attempt)
        }));
        let Err(panic) = run else { return };
        // A failure counts unless Ouroboros' own fault is in the logs: then
        // the scenario runs again on a fresh lab, up to FAULT_TRIES times.
        match lab.layer_fault(HOSTS) {
            Some(fault) if attempt < FAULT_TRIES => eprintln!(
                "KNOWN OUROBOROS 0.23 {} FAULT (attempt {attempt} of {FAULT_TRIES}): {fault}; \
                 running again on a fresh lab",
                medium.knob().to_uppercase()
            ),
            _ => std::panic::resume_unwind(panic),
        }
    }
}

const HOSTS: usize = 3;

/// The first line of the IRMd log `path` that shows one of Ouroboros
/// 0.23's allocation faults of `medium`'s layer, if any.
fn fault_in(medium: Medium, path: &str) -> Option<String> {
    let signs: &[&str] = match medium {
        Medium::Udp4 => &[
            "from wrong source",
            "Failed to respond to flow request",
            "IPCP alloc_resp timed out",
        ],
        // The reply to an allocation went to 00:00:00:00:00:00 (the
        // switch drops it) or the IPCP's allocation state hung: the
        // allocating IRMd times out, the accepting one may say so too.
        Medium::EthDix => &["IPCP alloc_resp timed out", "Flow allocation timed out"],
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find(|l| signs.iter().any(|s| l.contains(s)))
        .map(|l| plain(l).trim().to_string())
}

/// The IRMds of a lab whose environment holds `mark` (the demo's lab
/// inherits the test's `OUROLAB_KEEP_LOGS`) still running 30 s after the
/// demo ended, each given one more SIGTERM then (0.23's IRMd can wait
/// for a hung Ethernet IPCP after `ourolab down`'s 15 s; see
/// docs/ouroboros.md): their pids.
fn lab_irmds_after(mark: &std::path::Path) -> Vec<u32> {
    let mark = mark.to_string_lossy().into_owned();
    let running = || -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"));
                let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                comm.is_ok_and(|c| c.trim() == "irmd")
                    && String::from_utf8_lossy(&env).contains(&mark)
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    let left = running();
    for pid in &left {
        eprintln!("an IRMd of the demo's lab, {pid}, still runs: SIGTERM");
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    left
}

/// `cicada demo --ourolab eth-dix`: the demo builds three Ouroboros hosts
/// joined by an `eth-dix` layer with no IP address, runs six peers on them
/// (two a host), checks its ring, sends and broadcasts before and after
/// the churn, and tears its lab down: its JSON must say so, and no network
/// namespace of its lab may be left. A run that failed with one of 0.23's
/// Ethernet allocation faults in an IRMd's log (kept by the demo's
/// `ourolab down` through `OUROLAB_KEEP_LOGS`) runs again, as the swarm
/// tests above do.
#[test]
fn demo_over_an_ethernet_ourolab_reports_a_correct_ring_and_tears_its_lab_down() {
    let test = "demo_over_an_ethernet_ourolab_reports_a_correct_ring_and_tears_its_lab_down";
    if !lab_can_run(test, Medium::EthDix) {
        return;
    }
    let _g = heavy();
    let logs = std::env::temp_dir().join(format!("cicada-ourolab-demo-{}", std::process::id()));
    let script = script();
    let script = script.to_str().expect("a UTF-8 path");
    for attempt in 1..=FAULT_TRIES {
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).expect("make the log directory");
        let (code, out, err) = super::run_demo_env(
            &[
                "--transport",
                "ouroboros",
                "--layer",
                Medium::EthDix.layer(),
                "--ourolab",
                Medium::EthDix.knob(),
                "--ourolab-script",
                script,
                "--nodes",
                "6",
                "--json",
                "--seed",
                "11",
            ],
            &[("OUROLAB_KEEP_LOGS", logs.to_str().expect("a UTF-8 path"))],
            Duration::from_secs(400),
        );
        // The lab's prefix, from the demo's first line.
        let prefix = err
            .split_whitespace()
            .find_map(|w| w.strip_suffix("-h1.."))
            .map(str::to_string);
        let left: Vec<String> = match &prefix {
            Some(p) => {
                let ns = Command::new("ip").args(["netns", "list"]).output();
                let ns = ns.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
                ns.unwrap_or_default()
                    .lines()
                    .filter(|l| l.starts_with(&format!("{p}-")))
                    .map(str::to_string)
                    .collect()
            }
            None => Vec::new(),
        };
        if let (Some(p), false) = (&prefix, left.is_empty()) {
            // Not torn down (the demo failed to, or was killed): do it here.
            let down = Command::new("bash").arg(script).args(["down", p]).output();
            eprintln!("the demo left {left:?}; ourolab down {p}: {down:?}");
        }
        let irmds = lab_irmds_after(&logs);
        let check = || {
            assert_eq!(code, Some(0), "demo failed\nstdout:\n{out}\nstderr:\n{err}");
            let last = out.lines().last().unwrap_or_default();
            let v: Value =
                serde_json::from_str(last).unwrap_or_else(|e| panic!("last line {last:?}: {e}"));
            let p = prefix.as_deref().expect("the demo names its lab");
            assert_eq!(v["lab"], p, "{v}");
            assert_eq!(v["nodes"], 6, "{v}");
            assert_eq!(v["ok"], true, "{v}");
            assert_eq!(v["ring_correct"], true, "{v}");
            assert_eq!(v["send_delivered_rate"], 1.0, "{v}");
            assert_eq!(v["broadcast_coverage"], 1.0, "{v}");
            assert_eq!(v["after_churn"]["killed"], 1, "{v}");
            assert_eq!(v["after_churn"]["ring_correct"], true, "{v}");
            assert_eq!(v["after_churn"]["send_delivered_rate"], 1.0, "{v}");
            assert_eq!(v["after_churn"]["broadcast_coverage"], 1.0, "{v}");
            let peers = v["peers"].as_array().expect("a list of peers");
            let hosts: Vec<&str> = peers.iter().filter_map(|p| p["host"].as_str()).collect();
            assert_eq!(hosts, ["h1", "h2", "h3", "h1", "h2", "h3"], "{v}");
            assert!(left.is_empty(), "the demo left its namespaces: {left:?}");
            assert!(
                irmds.is_empty(),
                "the demo left its IRMds running: {irmds:?}"
            );
        };
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
        let Err(panic) = run else {
            let _ = std::fs::remove_dir_all(&logs);
            return;
        };
        let fault = prefix.as_ref().and_then(|p| {
            (1..=HOSTS).find_map(|k| {
                let log = logs.join(format!("{p}-h{k}.irmd.log"));
                fault_in(Medium::EthDix, log.to_str()?).map(|l| format!("h{k}: {l}"))
            })
        });
        match fault {
            Some(fault) if attempt < FAULT_TRIES && left.is_empty() => eprintln!(
                "KNOWN OUROBOROS 0.23 ETH-DIX FAULT (attempt {attempt} of {FAULT_TRIES}): \
                 {fault}; running the demo again"
            ),
            _ => {
                let _ = std::fs::remove_dir_all(&logs);
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// `line` without its terminal colour codes (`ESC [ ... m`).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Six peers, two on each of three hosts: a ring, all-pairs sends and a
/// broadcast; then the last host's peers end and the four left recover.
fn six_peers_on_three_hosts(lab: &OuroLab, attempt: usize) {
    const N: usize = 6;
    let started = Instant::now();
    // Peer i lives on host h(i % 3 + 1); the last host's peers end later.
    let host = |i: usize| format!("h{}", i % HOSTS + 1);
    let gone_host = format!("h{HOSTS}");
    let what = format!("ouroboros across hosts ({})", lab.medium.knob());
    let hosts: Vec<String> = (1..=HOSTS).map(|k| format!("h{k}")).collect();
    if lab.medium != Medium::Udp4 {
        // Nothing of IP anywhere on the hosts: no address on eth0, none on
        // lo (left down), no IPv6 link-local one.
        for h in &hosts {
            let addrs = lab.addresses(h);
            assert!(addrs.is_empty(), "{h} has IP addresses: {addrs:?}");
        }
    }
    // Dropped (SIGTERM) when this returns or panics, before the caller
    // tears the lab down.
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..N {
        let name = format!("c{}-{attempt}-x{i}", std::process::id());
        let join = (i > 0).then(|| nodes[0].addr.clone());
        let extra: &[&str] = if host(i) == gone_host {
            &["--abrupt"]
        } else {
            &[]
        };
        let node = lab.node(&host(i), &name, join.as_deref(), extra);
        assert_eq!(node.addr, name, "the address is the name");
        // The node's own --connect-timeout (40 s) ends it first.
        wait_joined_within(&node, i, Duration::from_secs(45));
        nodes.push(node);
    }
    let retries: usize = nodes.iter().map(|n| n.all(is("join_retry")).len()).sum();
    let all: Vec<usize> = (0..N).collect();
    wait_ring(&mut nodes, &all, Duration::from_secs(30)).expect("the ring of 6 converges");
    eprintln!("{what}: 6 joined with {retries} join retries");
    eprintln!("{what}: ring of 6 correct after {:?}", started.elapsed());
    let before: Vec<u64> = hosts.iter().map(|h| lab.rx_packets(h)).collect();
    all_pairs(&mut nodes, &all, "h");
    // The sends crossed the hosts' links (the layer's IPCPs), not a shared
    // memory: each host's two peers got at least 8 messages from the
    // other hosts, each its own packet.
    for (k, h) in hosts.iter().enumerate() {
        let got = lab.rx_packets(h) - before[k];
        assert!(got >= 8, "{h} received {got} packets during the sends");
        eprintln!("{what}: {h} received {got} packets during the sends");
    }
    eprintln!("{what}: 30 sends delivered after {:?}", started.elapsed());
    broadcast_reaches_all(&mut nodes, &all, 0, "hb-0");

    // The last host's peers end on SIGTERM at once (`--abrupt`: no leave),
    // as when a host goes away.
    let gone: Vec<usize> = (0..N).filter(|&i| host(i) == gone_host).collect();
    let sigterm = Instant::now();
    for &i in &gone {
        let _ = Command::new("kill")
            .args(["-TERM", &nodes[i].child().id().to_string()])
            .status();
    }
    for &i in &gone {
        let left = Duration::from_secs(5).saturating_sub(sigterm.elapsed());
        assert!(
            nodes[i].terminate(left),
            "the --abrupt node {i} ends within 5 s of SIGTERM"
        );
        assert!(
            nodes[i].all(is("closed")).is_empty(),
            "node {i} did not leave gracefully"
        );
    }
    let ended = sigterm.elapsed();
    let live: Vec<usize> = (0..N).filter(|i| !gone.contains(i)).collect();
    wait_ring(&mut nodes, &live, Duration::from_secs(60))
        .expect("the ring of the 4 left converges");
    eprintln!(
        "{what}: {gone_host}'s peers ended {ended:?} after SIGTERM; \
         ring of 4 correct {:?} after SIGTERM",
        sigterm.elapsed()
    );
    all_pairs(&mut nodes, &live, "r");
    broadcast_reaches_all(&mut nodes, &live, 1, "hb-1");
    eprintln!("{what}: done after {:?}", started.elapsed());
}
