//! I/O: runs `cicada node` processes and checks what they report.
//!
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
//!
//! Here the run; `demo/peers.rs` the peer processes and the signal handler,
//! `demo/lab.rs` the labs, `demo/workload.rs` the checks and the table.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cicada::Hash;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::svg;

mod lab;
mod peers;
mod workload;

use lab::{
    find_script, is_root, lab_down, lab_place, lab_up, ourolab_name, ourolab_up, LabEnv, LabGuard,
    Launch,
};
use peers::{install_signal_handler, kill_all, Peer, GENTLE, OUROLAB};
use workload::{print_table, sorted, wait_ring, workload, Rng, Workload};

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
    /// Every peer serves its Prometheus metrics over HTTP on 127.0.0.1
    /// (`cicada node --metrics 127.0.0.1:0`); the table, the JSON and a
    /// line on stderr say where. The survivors stay up after the summary
    /// (see `--hold`).
    #[arg(long)]
    metrics: bool,
    /// Seconds the surviving peers stay up after the summary, for a
    /// scrape; with `--metrics` until interrupted (Ctrl-C) unless given.
    #[arg(long, value_name = "SECONDS")]
    hold: Option<f64>,
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
    if args.lab && args.metrics {
        return Err(
            "--metrics serves on each peer's 127.0.0.1, which the lab's hosts do not share \
             with this one: drop --lab or --metrics"
                .into(),
        );
    }
    if args.hold.is_some_and(|h| !(h >= 0.0 && h.is_finite())) {
        return Err("--hold must be a number of seconds, 0 or more".into());
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
        if args.metrics {
            return Err(
                "--metrics serves on each peer's 127.0.0.1, which the Ouroboros lab's hosts do \
                 not share with this one: drop --ourolab or --metrics"
                    .into(),
            );
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
        let up = ourolab_up(&script, &prefix, medium, args.ourolab_hosts, &args.layer)?;
        say(up);
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
    let n = args.nodes;
    let ring_timeout = Duration::from_secs_f64(args.ring_timeout.max(1.0));
    // Across Ouroboros hosts a flow takes about 1 s to allocate and 0.23's
    // layers lose some allocations: requests get 2.5 s at least, a lookup
    // 12 s (a hop to a peer the churn ended costs its request's tries), and
    // a join is tried again for 40 s (docs/ouroboros.md, "Across hosts").
    let (request_timeout_ms, lookup_timeout_ms, join_wait) = if ourolab.is_some() {
        (
            args.request_timeout_ms.max(2500),
            12_000,
            Duration::from_secs(45),
        )
    } else {
        (args.request_timeout_ms, 4000, Duration::from_secs(20))
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
    // `bash SCRIPT exec HOST PREFIX -- cmd…` runs cmd in a lab host's
    // namespace (the netlab and ourolab scripts both take it).
    let lab_exec = |script: &String, host: &String, prefix: &String| -> Vec<String> {
        let words = ["bash", script, "exec", host, prefix, "--"];
        words.iter().map(|w| w.to_string()).collect()
    };
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
                    wrap: lab_exec(script, &host, prefix),
                    host,
                    bind: String::new(),
                    map: false,
                    extra: vec!["--connect-timeout".into(), "40".into()],
                }
            }
            (Some((script, prefix, _)), None) => {
                let (host, bind, map) = lab_place(i);
                Launch {
                    wrap: lab_exec(script, &host, prefix),
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
            lookup_timeout_ms,
            args.metrics,
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
        if args.metrics {
            let served = p.wait_for(0, Duration::from_secs(10), |v| v["event"] == "metrics");
            match served.as_ref().and_then(|v| v["url"].as_str()) {
                Some(url) => p.metrics = Some(url.to_string()),
                None => {
                    p.kill();
                    return Err(format!(
                        "node {i} ({}) serves no metrics: {served:?}",
                        p.addr
                    ));
                }
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
    if args.metrics {
        say(format!(
            "metrics: {} (peer 0; the table lists every peer's)",
            peers[0].metrics.as_deref().unwrap_or("?")
        ));
    }

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
        let head = format!(
            "{:>4}  {:<8} {:<24} {:<26} {:<6}  {}",
            "peer",
            "host",
            "address",
            "NAT",
            "",
            if args.metrics { "metrics" } else { "" }
        );
        println!("{}", head.trim_end());
        println!("{}", "-".repeat(if args.metrics { 110 } else { 62 }));
        for (i, p) in peers.iter().enumerate() {
            let fate = if victims.contains(&i) { "killed" } else { "" };
            let url = p.metrics.as_deref().filter(|_| !victims.contains(&i));
            let line = format!(
                "{i:>4}  {:<8} {:<24} {:<26} {fate:<6}  {}",
                p.host,
                p.addr,
                nat[i],
                url.unwrap_or_default()
            );
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
        let bad_lines: usize = peers.iter().map(|p| p.bad_lines()).sum();
        top.insert("bad_lines".into(), json!(bad_lines));
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
                    "metrics": p.metrics,
                })
            })
            .collect();
        top.insert("peers".into(), Value::Array(list));
        println!("{}", Value::Object(top));
    }
    hold(&args, &peers, &survivors, &stop);
    drop(peers);
    Ok(ok)
}

/// Keeps the survivors up after the summary: `--hold` seconds, or with
/// `--metrics` and no `--hold` until interrupted (the signal handler then
/// stops every peer and exits).
fn hold(args: &DemoArgs, peers: &[Peer], survivors: &[usize], stop: &AtomicBool) {
    let until = match (args.hold, args.metrics) {
        (Some(secs), _) if secs > 0.0 => Some(Instant::now() + Duration::from_secs_f64(secs)),
        (None, true) => None,
        _ => return,
    };
    if args.metrics {
        let urls: Vec<&str> = survivors
            .iter()
            .filter_map(|&i| peers[i].metrics.as_deref())
            .collect();
        say(format!(
            "serving the metrics of {} peers {}, e.g. curl {}",
            urls.len(),
            match args.hold {
                Some(secs) => format!("for {secs} s"),
                None => "until interrupted (Ctrl-C)".into(),
            },
            urls.first().copied().unwrap_or("?")
        ));
    } else {
        say(format!(
            "holding the peers for {} s",
            args.hold.unwrap_or(0.0)
        ));
    }
    // stdout is read by scripts (`--json`): what is printed is whole.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    while until.is_none_or(|t| Instant::now() < t) && !stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(100));
    }
}

/// Puts the survivors' NAT counts into the summary's `after_churn`.
fn a_nat(top: &mut serde_json::Map<String, Value>, nat_after: &str) {
    if let Some(Value::Object(a)) = top.get_mut("after_churn") {
        a.insert("nat".into(), json!(nat_after));
    }
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
