//! I/O: measures a swarm over Ouroboros beside the C tools (processes, flows).
//!
//! The Ouroboros rows of `cicada bench`: a one-hop swarm over a local layer
//! beside the C tools on the same layer in the same run (`ocbr` for
//! throughput, `oping` for latency), as ratios.
//!
//! A process cannot allocate a flow to its own name, so the receiving peer
//! is a second process: this executable again, as
//! `cicada bench --ouroboros-serve NAME`. The C servers are bound to their
//! names with `irm`. Every Ouroboros process is stopped with SIGTERM (or by
//! closing its stdin), never SIGKILL.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cicada::{Hooks, PeerAddr, PeerConfig, SwarmPeer};
use serde_json::{json, Map, Value};

use super::{median, percentiles, pipelined_sends, send_datagrams, R};

/// Seconds the C `ocbr` client floods.
const OCBR_SECONDS: u32 = 2;
/// Turns of the throughput row, `ocbr` and Cicada in alternation.
const OCBR_TURNS: usize = 3;
/// Turns of the paced latency row, `oping` and Cicada in alternation: a
/// run of 2,000 pings of either alone met another machine state often
/// enough (`oping`'s p50 read 22 µs in one run and 40 µs in the next).
const OPING_TURNS: usize = 5;

/// What an `ocbr -l` server bound to `name` counted (packets per second)
/// while `flood` sent it 1 KiB packets for [`OCBR_SECONDS`].
fn counted_by_ocbr(layer: &str, name: &str, flood: impl FnOnce(&str) -> R<()>) -> R<f64> {
    let mut srv = CServer::start("ocbr", &["-l", "-i", "1", "-t", "2"], name, layer)?;
    let flooded = flood(name);
    std::thread::sleep(Duration::from_millis(1500));
    let out = srv.stop();
    flooded?;
    ocbr_pps(&out).ok_or_else(|| format!("no ocbr figures in {out:?}"))
}

/// One flood of the C `ocbr` client.
fn ocbr_flood(name: &str) -> R<()> {
    let mut c = Command::new("ocbr")
        .args([
            "-n",
            name,
            "-s",
            "1024",
            "-f",
            "-d",
            &OCBR_SECONDS.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("ocbr client: {e}"))?;
    // The C client has no send timeout: when the library's pool wait misses
    // its wake-up (docs/ouroboros.md) it would wait forever. Bound it.
    let deadline = Instant::now() + Duration::from_secs(u64::from(OCBR_SECONDS) + 10);
    while Instant::now() < deadline && !matches!(c.try_wait(), Ok(Some(_))) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !matches!(c.try_wait(), Ok(Some(_))) {
        println!("  (the C ocbr client stalled in flow_write and was stopped)");
    }
    sigterm(&mut c, Duration::from_secs(5));
    Ok(())
}

/// The raw-flow baseline of the throughput row: the same flood from a
/// thread of this process writing to a flow of the binding (blocking
/// writes, as the C client's): what Rust on Ouroboros moves with no core,
/// no confirmation and no peer of ours at the other end.
fn raw_flood(name: &str) -> R<()> {
    let flow = cicada::ouroboros::flow_alloc(name, None, Some(Duration::from_secs(5)))
        .map_err(|e| format!("raw flow to the ocbr server: {e}"))?;
    flow.set_snd_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let packet = [7u8; 1024];
    let until = Instant::now() + Duration::from_secs(u64::from(OCBR_SECONDS));
    while Instant::now() < until {
        for _ in 0..64 {
            flow.write(&packet).map_err(|e| format!("raw flood: {e}"))?;
        }
    }
    Ok(())
}

/// The two peers' configuration. The per-source rate limits (400 requests/s
/// and 100,000 data datagrams/s by default, defences against floods) are
/// lifted: the row measures the data path between two trusted peers, as
/// `ocbr` does; with the data limit on, runs longer than its burst of
/// 20,000 would stall for a retry.
fn cfg() -> PeerConfig {
    let mut cfg = PeerConfig::default()
        .stabilize_interval(Duration::from_millis(500))
        .recv_queue(65_536);
    cfg.chord.max_pending = 65_536;
    cfg.chord.source_rate = 1_000_000;
    cfg.chord.source_burst = 65_536;
    cfg.chord.data_rate = 1_000_000;
    cfg.chord.data_burst = 1_000_000;
    cfg
}

/// Runs `irm ARGS`, quietly; whether it succeeded.
fn irm(args: &[&str]) -> bool {
    Command::new("irm")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn sigterm(c: &mut Child, within: Duration) {
    if matches!(c.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if matches!(c.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("process {} did not end on SIGTERM", c.id());
}

/// A C server (`ocbr -l`, `oping -l`) bound to a fresh name; its stdout
/// line-buffered (through `stdbuf` when there is one) into a string.
struct CServer {
    child: Child,
    name: String,
    out: std::thread::JoinHandle<String>,
    stopped: bool,
}

impl CServer {
    fn start(tool: &str, args: &[&str], name: &str, layer: &str) -> R<CServer> {
        irm(&["name", "create", name]);
        if !irm(&["name", "register", name, "layer", layer]) {
            return Err(format!("irm could not register {name} in {layer}"));
        }
        let stdbuf = Command::new("stdbuf")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok();
        let mut cmd = if stdbuf {
            let mut c = Command::new("stdbuf");
            c.arg("-oL").arg(tool);
            c
        } else {
            Command::new(tool)
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {tool}: {e}"))?;
        let mut stdout = child.stdout.take().ok_or("stdout not piped")?;
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        // stdbuf execs the tool: the pid is the tool's.
        std::thread::sleep(Duration::from_millis(300));
        let pid = child.id().to_string();
        if !irm(&["bind", "process", &pid, "name", name]) {
            let mut s = CServer {
                child,
                name: name.into(),
                out,
                stopped: false,
            };
            s.stop();
            return Err(format!("irm could not bind {tool} to {name}"));
        }
        Ok(CServer {
            child,
            name: name.into(),
            out,
            stopped: false,
        })
    }

    /// Stops the server (SIGTERM) and returns what it printed; once.
    fn stop(&mut self) -> String {
        if std::mem::replace(&mut self.stopped, true) {
            return String::new();
        }
        sigterm(&mut self.child, Duration::from_secs(5));
        irm(&["name", "destroy", &self.name]);
        let out = std::mem::replace(&mut self.out, std::thread::spawn(String::new));
        out.join().unwrap_or_default()
    }
}

impl Drop for CServer {
    /// A row that fails half-way leaves no C server behind.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Round-trip times (seconds) of `count` pings of `oping`, one a
/// millisecond, to the server at `name`.
fn oping_run(name: &str, count: usize) -> R<Vec<f64>> {
    let out = Command::new("oping")
        .args(["-n", name, "-c", &count.to_string(), "-i", "1"])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("oping client: {e}"))?;
    let times = oping_times(&String::from_utf8_lossy(&out.stdout));
    if times.is_empty() {
        return Err("oping printed no round trips".into());
    }
    Ok(times)
}

/// An `oping` echo request of 24 bytes (the C tool's packed
/// `struct oping_msg`: type 0, id, and a timestamp the server does not read).
fn oping_request(id: u32) -> [u8; 24] {
    let mut m = [0u8; 24];
    m[4..8].copy_from_slice(&id.to_be_bytes());
    m
}

/// Whether `reply` is the `oping` server's echo of request `id`.
fn is_oping_reply(reply: &[u8], id: u32) -> bool {
    reply.len() >= 8 && reply[..4] == 1u32.to_be_bytes() && reply[4..8] == id.to_be_bytes()
}

/// The raw-flow baselines of the latency row: a flow of this process to
/// the `oping -l` server, pinged with the C tool's own packets, one a
/// millisecond. `Blocking` writes and reads on one thread, as `oping`'s
/// client does; `Async` is a tokio task on [`cicada::ouroboros::AsyncFlow`],
/// woken by the binding's event thread, as any async program on
/// Ouroboros 0.23 is (it has no descriptor to hand to epoll). Neither has
/// a core, a confirmation or a second peer process of ours: what Cicada
/// adds is the difference.
enum RawFlow {
    Blocking(Arc<cicada::ouroboros::Flow>),
    Async(cicada::ouroboros::AsyncFlow),
}

impl RawFlow {
    async fn open(name: &str, asynchronous: bool) -> R<RawFlow> {
        let name = name.to_owned();
        let flow = tokio::task::spawn_blocking(move || {
            cicada::ouroboros::flow_alloc(&name, None, Some(Duration::from_secs(5)))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("raw flow to the oping server: {e}"))?;
        if asynchronous {
            Ok(RawFlow::Async(
                cicada::ouroboros::AsyncFlow::new(flow).map_err(|e| e.to_string())?,
            ))
        } else {
            flow.set_rcv_timeout(Some(Duration::from_secs(1)))
                .map_err(|e| e.to_string())?;
            Ok(RawFlow::Blocking(Arc::new(flow)))
        }
    }

    /// Times (seconds) of `n` paced round trips; `first` is the first id.
    async fn pings(&self, first: u32, n: usize) -> R<Vec<f64>> {
        match self {
            RawFlow::Async(f) => {
                let mut times = Vec::with_capacity(n);
                for id in (first..).take(n) {
                    let t = Instant::now();
                    f.write(&oping_request(id))
                        .await
                        .map_err(|e| e.to_string())?;
                    loop {
                        let reply = tokio::time::timeout(Duration::from_secs(1), f.recv())
                            .await
                            .map_err(|_| format!("no echo of ping {id} within 1 s"))?
                            .map_err(|e| e.to_string())?;
                        if is_oping_reply(&reply, id) {
                            break;
                        }
                    }
                    times.push(t.elapsed().as_secs_f64());
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(times)
            }
            RawFlow::Blocking(f) => {
                let f = f.clone();
                tokio::task::spawn_blocking(move || {
                    let mut times = Vec::with_capacity(n);
                    for id in (first..).take(n) {
                        let t = Instant::now();
                        f.write(&oping_request(id)).map_err(|e| e.to_string())?;
                        while !f
                            .recv_with(|r| is_oping_reply(r, id))
                            .map_err(|e| format!("ping {id}: {e}"))?
                        {}
                        times.push(t.elapsed().as_secs_f64());
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Ok(times)
                })
                .await
                .map_err(|e| e.to_string())?
            }
        }
    }
}

/// Packets per second `ocbr -l` reported over the intervals that saw packets.
fn ocbr_pps(server_out: &str) -> Option<f64> {
    let (mut packets, mut ms) = (0f64, 0f64);
    for l in server_out.lines().filter(|l| l.starts_with("Flow")) {
        // "Flow   64:    346861 packets (   355185664 bytes) in      1002 ms => ..."
        let words: Vec<&str> = l.split_whitespace().collect();
        let p = words.iter().position(|w| *w == "packets")?;
        let n: f64 = words.get(p.checked_sub(1)?)?.parse().ok()?;
        let i = words.iter().position(|w| *w == "in")?;
        let t: f64 = words.get(i + 1)?.parse().ok()?;
        if n > 0.0 {
            packets += n;
            ms += t;
        }
    }
    (ms > 0.0).then(|| packets / (ms / 1000.0))
}

/// Round-trip times, in seconds, of `oping`'s lines (`time=30.000 µs`, `time=1.2 ms`).
fn oping_times(out: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|l| {
            let rest = l.split("time=").nth(1)?;
            let mut w = rest.split_whitespace();
            let v: f64 = w.next()?.parse().ok()?;
            let scale = match w.next()? {
                "ms" => 1e-3,
                "µs" | "us" => 1e-6,
                "s" => 1.0,
                _ => return None,
            };
            Some(v * scale)
        })
        .collect()
}

/// The receiving peer in its own process, stopped by closing its stdin.
/// A line `mark` on its stdin makes it print what it received since the
/// last mark: `COUNT SECONDS` (from the first message to the last).
struct Receiver {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Receiver {
    fn start(name: &str, layer: &str) -> R<Receiver> {
        Receiver::start_with(name, layer, &[])
    }

    /// [`Receiver::start`] with more environment variables.
    fn start_with(name: &str, layer: &str, env: &[(&str, &str)]) -> R<Receiver> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args([
                "bench",
                "--ouroboros-serve",
                name,
                "--ouroboros-layer",
                layer,
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the receiving peer: {e}"))?;
        let stdout = child.stdout.take().ok_or("stdout not piped")?;
        let mut out = BufReader::new(stdout);
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let mut r = Receiver { child, out };
        if line.trim() != "ready" {
            r.stop();
            return Err(format!("the receiving peer did not start: {line:?}"));
        }
        Ok(r)
    }

    /// Messages received since the last mark, and the seconds from the
    /// first of them to the last.
    fn mark(&mut self) -> R<(u64, f64)> {
        let stdin = self.child.stdin.as_mut().ok_or("receiver stopped")?;
        if let Err(e) = writeln!(stdin, "mark").and_then(|()| stdin.flush()) {
            std::thread::sleep(Duration::from_millis(200));
            return Err(format!(
                "the receiving peer is gone ({e}): {:?}",
                self.child.try_wait()
            ));
        }
        let mut line = String::new();
        self.out.read_line(&mut line).map_err(|e| e.to_string())?;
        let mut w = line.split_whitespace();
        match (
            w.next().and_then(|n| n.parse().ok()),
            w.next().and_then(|t| t.parse().ok()),
        ) {
            (Some(n), Some(t)) => Ok((n, t)),
            _ => Err(format!("the receiving peer said {line:?}")),
        }
    }

    fn stop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        sigterm(&mut self.child, Duration::from_secs(5));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `cicada bench --ouroboros-serve NAME`: a peer that takes what it is sent
/// until its stdin closes.
pub async fn serve(name: &str, layer: &str) -> R<()> {
    let mut p = SwarmPeer::with_config(cfg(), Hooks::new());
    p.bind_ouroboros(name, layer)
        .await
        .map_err(|e| e.to_string())?;
    let p = Arc::new(p);
    // Since the last mark: messages, first and last arrival.
    type Tally = (u64, Option<(Instant, Instant)>);
    let tally: Arc<Mutex<Tally>> = Arc::new(Mutex::new((0, None)));
    let (q, t) = (p.clone(), tally.clone());
    let drain = tokio::spawn(async move {
        while q.recv().await.is_ok() {
            let now = Instant::now();
            let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
            t.0 += 1;
            t.1 = Some(t.1.map_or((now, now), |(first, _)| (first, now)));
        }
    });
    println!("ready");
    let _ = std::io::stdout().flush();
    let t = tally.clone();
    let total = tokio::task::spawn_blocking(move || {
        let mut total = 0;
        for line in std::io::stdin().lines() {
            if line.map_or(true, |l| l.trim() != "mark") {
                continue;
            }
            let (n, span) = std::mem::take(&mut *t.lock().unwrap_or_else(|e| e.into_inner()));
            total += n;
            let secs = span.map_or(0.0, |(first, last)| (last - first).as_secs_f64());
            println!("{n} {secs}");
            let _ = std::io::stdout().flush();
        }
        total
    })
    .await
    .unwrap_or(0);
    let flows = p.stats().await.ok().and_then(|s| s.ouroboros);
    p.close().await;
    drain.abort();
    let left = tally.lock().unwrap_or_else(|e| e.into_inner()).0;
    match flows {
        // Ouroboros 0.23 overflows the reader's heap past 1,024 events.
        Some(f) => eprintln!(
            "receiving peer {name}: {} messages, {} dropped by the link, at most {} flow events per fevent",
            total + left,
            f.dropped,
            f.most_events
        ),
        None => eprintln!("receiving peer {name}: {} messages", total + left),
    }
    Ok(())
}

/// The Ouroboros rows; a SKIPPED line when no IRMd answers.
pub async fn rows(
    messages: usize,
    round_trips: usize,
    layer: &str,
    datagrams: bool,
    report: &mut Map<String, Value>,
) -> R<()> {
    println!();
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        format!("one hop over Ouroboros ({layer})"),
        "cicada",
        "C tool",
        "ratio"
    );
    if !cicada::ouroboros::irmd_running() {
        println!(
            "  SKIPPED: no Ouroboros IRMd answers on {} (docs/ouroboros.md)",
            cicada::ouroboros::IRM_SOCK_PATH
        );
        report.insert("ouroboros".into(), json!("skipped: no IRMd"));
        return Ok(());
    }
    let pid = std::process::id();

    // The `oping` server, on the same layer, for the latency turns below.
    let oping_name = format!("cicada-bench-oping-{pid}");
    let mut oping = CServer::start("oping", &["-l"], &oping_name, layer)?;

    // Cicada: this process and a receiving peer process.
    let b_name = format!("cicada-bench-b-{pid}");
    let mut receiver = Receiver::start(&b_name, layer)?;
    let mut a = SwarmPeer::with_config(cfg(), Hooks::new());
    a.bind_ouroboros(&format!("cicada-bench-a-{pid}"), layer)
        .await
        .map_err(|e| e.to_string())?;
    let a = Arc::new(a);
    let to = PeerAddr::ouroboros(b_name.as_str()).map_err(|e| e.to_string())?;
    a.connect(to.clone(), Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Turns with `ocbr`: one 2 s flood of it swung from 180k to 530k
    // packets/s between runs on one idle machine (where the scheduler put
    // its two processes), so each side's figure is the median of
    // OCBR_TURNS, taken in alternation.
    let (mut ocbrs, mut ours_turns, mut confirmed) = (Vec::new(), Vec::new(), 1.0f64);
    let mut raws = Vec::new();
    for turn in 0..OCBR_TURNS {
        ocbrs.push(counted_by_ocbr(
            layer,
            &format!("cicada-bench-ocbr-{pid}-{turn}"),
            ocbr_flood,
        )?);
        let (layer2, name) = (layer.to_owned(), format!("cicada-bench-raw-{pid}-{turn}"));
        raws.push(
            tokio::task::spawn_blocking(move || counted_by_ocbr(&layer2, &name, raw_flood))
                .await
                .map_err(|e| e.to_string())??,
        );
        let (rate, fraction) = throughput(&a, &to, 1024, messages).await;
        ours_turns.push(rate);
        confirmed = confirmed.min(fraction);
    }
    let turns: Vec<String> = ocbrs
        .iter()
        .zip(&ours_turns)
        .map(|(c, o)| format!("{:.0}k/{:.0}k", o / 1e3, c / 1e3))
        .collect();
    report.insert("ocbr_turns_msgs_per_s_1k".into(), json!(ocbrs));
    report.insert("ouroboros_turns_msgs_per_s_1k".into(), json!(ours_turns));
    let (ocbr, ours) = (median(ocbrs), median(ours_turns));
    if let Ok(st) = a.stats().await {
        tracing::debug!(?st, "after the throughput row");
        if confirmed < 1.0 {
            println!("  (sender: {} link errors)", st.link_errors);
        }
        if let Some(f) = &st.ouroboros {
            eprintln!(
                "sending peer: {} dropped by the link, {} writes waited for room, {} datagrams parked by the reader",
                f.dropped, f.write_waits, st.link_parked
            );
        }
    }
    // An overloaded run can make the core declare the receiver dead for a
    // moment: wait until it is back before timing round trips.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !a
            .peers()
            .await
            .is_ok_and(|p| p.iter().any(|n| n.addr == to))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Paced round trips, taking turns with `oping`; percentiles over the
    // pooled samples of each.
    let (mut paced, mut theirs) = (Vec::new(), Vec::new());
    let (mut raw_blocking, mut raw_async) = (Vec::new(), Vec::new());
    let per_turn = round_trips.div_ceil(OPING_TURNS).max(1);
    let blocking = RawFlow::open(&oping_name, false).await?;
    let asynchronous = RawFlow::open(&oping_name, true).await?;
    for turn in 0..OPING_TURNS {
        let first = (turn * per_turn) as u32;
        theirs.extend(oping_run(&oping_name, per_turn)?);
        raw_blocking.extend(blocking.pings(first, per_turn).await?);
        paced.extend(latency(&a, &to, per_turn, true).await?);
        raw_async.extend(asynchronous.pings(first, per_turn).await?);
    }
    drop((blocking, asynchronous));
    oping.stop();
    let ((p50, p99), (c50, c99)) = (percentiles(paced), percentiles(theirs));
    let ((rb50, rb99), (ra50, ra99)) = (percentiles(raw_blocking), percentiles(raw_async));
    // Informational: the same back to back, as the UDP rows measure them.
    let (b50, b99) = percentiles(latency(&a, &to, round_trips, false).await?);
    // Last, as it may crash the receiving process (see `--ouroboros-datagrams`).
    let flood = if datagrams {
        Some(datagram_flood(&a, &to, &mut receiver, messages).await)
    } else {
        None
    };
    a.close().await;
    receiver.stop();

    println!(
        "{:<34} {:>10.0} m/s {:>10.0} m/s {:>8.2}",
        "throughput 1024 B (ocbr)",
        ours,
        ocbr,
        ours / ocbr
    );
    println!(
        "  (medians of {OCBR_TURNS} turns, cicada/ocbr: {})",
        turns.join(", ")
    );
    let raw = median(raws.clone());
    println!(
        "{:<34} {:>10.0} m/s {:>10.0} m/s {:>8.2}   (turns {})",
        "  raw flow, one thread",
        raw,
        ocbr,
        raw / ocbr,
        raws.iter()
            .map(|r| format!("{:.0}k", r / 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{:<34} {:>11.2}x the raw flow's rate",
        "  cicada's confirmed 1 KiB is",
        ours / raw
    );
    report.insert("raw_flow_msgs_per_s_1k".into(), json!(raw));
    report.insert("raw_flow_turns_msgs_per_s_1k".into(), json!(raws));
    report.insert(
        "ouroboros_throughput_ratio_raw_1k".into(),
        json!(ours / raw),
    );
    match &flood {
        Some(Ok((datagrams, arrived))) => {
            println!(
                "{:<34} {:>10.0} m/s {:>10.0} m/s {:>8.2}   ({:.0}% arrived; {:.2}x the raw flow's rate)",
                "datagrams 1024 B, unconfirmed",
                datagrams,
                ocbr,
                datagrams / ocbr,
                arrived * 100.0,
                datagrams / raw
            );
            report.insert(
                "ouroboros_datagram_ratio_raw_1k".into(),
                json!(datagrams / raw),
            );
            report.insert("ouroboros_datagram_msgs_per_s_1k".into(), json!(datagrams));
            report.insert(
                "ouroboros_datagram_throughput_ratio_1k".into(),
                json!(datagrams / ocbr),
            );
            report.insert(
                "ouroboros_datagram_arrived_fraction_1k".into(),
                json!(arrived),
            );
        }
        Some(Err(e)) => {
            println!("  datagrams 1024 B, unconfirmed: FAILED: {e}");
            report.insert("ouroboros_datagram_error".into(), json!(e));
        }
        None => {}
    }
    for (label, ours, c) in [("p50", p50, c50), ("p99", p99, c99)] {
        println!(
            "{:<34} {:>11.1} us {:>11.1} us {:>8.2}",
            format!("round trip {label} 64 B (oping)"),
            ours * 1e6,
            c * 1e6,
            ours / c
        );
    }
    for (label, raw50, raw99) in [
        ("raw flow, one thread", rb50, rb99),
        ("raw flow, async task", ra50, ra99),
    ] {
        println!(
            "{:<34} {:>11.1} us {:>11.1} us {:>8.2}   (p99 {:.1} us, {:.2})",
            format!("  p50 {label}"),
            raw50 * 1e6,
            c50 * 1e6,
            raw50 / c50,
            raw99 * 1e6,
            raw99 / c99
        );
    }
    println!(
        "{:<34} {:>11.2}x of the raw async flow's p50",
        "  cicada's p50 is",
        p50 / ra50
    );
    println!(
        "{:<34} {:>11.1} us {:>14} {:>8}",
        "round trip p50 64 B back to back",
        b50 * 1e6,
        "",
        ""
    );
    println!(
        "{:<34} {:>11.1} us {:>14} {:>8}",
        "round trip p99 64 B back to back",
        b99 * 1e6,
        "",
        ""
    );
    report.insert(
        "ouroboros_latency_back_to_back_p50_us".into(),
        json!(b50 * 1e6),
    );
    report.insert(
        "ouroboros_latency_back_to_back_p99_us".into(),
        json!(b99 * 1e6),
    );
    report.insert("ouroboros_layer".into(), json!(layer));
    report.insert("ouroboros_throughput_msgs_per_s_1k".into(), json!(ours));
    report.insert("ocbr_msgs_per_s_1k".into(), json!(ocbr));
    report.insert("ouroboros_throughput_ratio_1k".into(), json!(ours / ocbr));
    report.insert("ouroboros_confirmed_fraction_1k".into(), json!(confirmed));
    report.insert("ouroboros_latency_p50_us".into(), json!(p50 * 1e6));
    report.insert("ouroboros_latency_p99_us".into(), json!(p99 * 1e6));
    report.insert("oping_latency_p50_us".into(), json!(c50 * 1e6));
    report.insert("oping_latency_p99_us".into(), json!(c99 * 1e6));
    report.insert("ouroboros_latency_p50_ratio".into(), json!(p50 / c50));
    report.insert("raw_flow_latency_p50_us".into(), json!(rb50 * 1e6));
    report.insert("raw_flow_latency_p99_us".into(), json!(rb99 * 1e6));
    report.insert("raw_async_flow_latency_p50_us".into(), json!(ra50 * 1e6));
    report.insert("raw_async_flow_latency_p99_us".into(), json!(ra99 * 1e6));
    report.insert(
        "ouroboros_latency_p50_ratio_raw_async".into(),
        json!(p50 / ra50),
    );
    report.insert("ouroboros_latency_p99_ratio".into(), json!(p99 / c99));
    Ok(())
}

/// Round trips of the routing (an `Observe` and its answer, as the core's
/// maintenance and lookups travel) to a peer process, idle and while this
/// process floods that peer with unconfirmed 1,000-byte datagrams (`rate` a
/// second, 40,000 by default, in bursts of 256): one flow
/// per neighbour (`CICADA_OUROBOROS_CLASSES=1` on both sides) against one
/// flow per class (the default: maintenance on a low-delay flow, data on a
/// bandwidth flow). A flood loads the IRMd: off by default
/// (`--ouroboros-classes`).
pub async fn classes_row(
    layer: &str,
    probes: usize,
    rate: u64,
    report: &mut Map<String, Value>,
) -> R<()> {
    println!();
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        format!("routing during a flood ({layer}, {rate}/s)"),
        "one flow",
        "two classes",
        "ratio"
    );
    if !cicada::ouroboros::irmd_running() {
        println!(
            "  SKIPPED: no Ouroboros IRMd answers on {} (docs/ouroboros.md)",
            cicada::ouroboros::IRM_SOCK_PATH
        );
        report.insert("ouroboros_classes".into(), json!("skipped: no IRMd"));
        return Ok(());
    }
    let one = classes_turn(layer, false, probes, rate).await?;
    let two = classes_turn(layer, true, probes, rate).await?;
    cicada::link::OuroborosLink::set_class_flows(true);
    let rows = [
        ("round trip p50, idle", one.idle.0, two.idle.0),
        ("round trip p99, idle", one.idle.1, two.idle.1),
        ("round trip p50, during the flood", one.busy.0, two.busy.0),
        ("round trip p99, during the flood", one.busy.1, two.busy.1),
    ];
    for (label, a, b) in rows {
        println!(
            "{:<34} {:>11.1} us {:>11.1} us {:>8.2}",
            label,
            a * 1e6,
            b * 1e6,
            b / a
        );
    }
    println!(
        "{:<34} {:>10.0} m/s {:>10.0} m/s {:>8.2}   (round trips lost: {} / {})",
        "  flood sent",
        one.flood_rate,
        two.flood_rate,
        two.flood_rate / one.flood_rate,
        one.lost,
        two.lost
    );
    for (tag, t) in [("one", &one), ("two", &two)] {
        report.insert(
            format!("ouroboros_classes_{tag}_idle_p50_us"),
            json!(t.idle.0 * 1e6),
        );
        report.insert(
            format!("ouroboros_classes_{tag}_idle_p99_us"),
            json!(t.idle.1 * 1e6),
        );
        report.insert(
            format!("ouroboros_classes_{tag}_flood_p50_us"),
            json!(t.busy.0 * 1e6),
        );
        report.insert(
            format!("ouroboros_classes_{tag}_flood_p99_us"),
            json!(t.busy.1 * 1e6),
        );
        report.insert(
            format!("ouroboros_classes_{tag}_flood_msgs_per_s"),
            json!(t.flood_rate),
        );
        report.insert(format!("ouroboros_classes_{tag}_lost"), json!(t.lost));
    }
    report.insert("ouroboros_classes_flood_rate".into(), json!(rate));
    report.insert(
        "ouroboros_classes_flood_p50_ratio".into(),
        json!(two.busy.0 / one.busy.0),
    );
    report.insert(
        "ouroboros_classes_flood_p99_ratio".into(),
        json!(two.busy.1 / one.busy.1),
    );
    Ok(())
}

/// How many datagrams of the flood of [`classes_row`] leave at each tick
/// of its pacing.
const FLOOD_BURST: u64 = 256;

/// What one setting of [`classes_row`] measured: (p50, p99) round trips in
/// seconds idle and during the flood, round trips that timed out (1 s),
/// datagrams sent a second by the flood.
struct ClassesTurn {
    idle: (f64, f64),
    busy: (f64, f64),
    lost: usize,
    flood_rate: f64,
}

async fn classes_turn(layer: &str, two: bool, probes: usize, rate: u64) -> R<ClassesTurn> {
    let pid = std::process::id();
    let tag = if two { "2" } else { "1" };
    cicada::link::OuroborosLink::set_class_flows(two);
    let b_name = format!("cicada-bench-qb{tag}-{pid}");
    let mut receiver = Receiver::start_with(&b_name, layer, &[("CICADA_OUROBOROS_CLASSES", tag)])?;
    let mut a = SwarmPeer::with_config(cfg(), Hooks::new());
    a.bind_ouroboros(&format!("cicada-bench-qa{tag}-{pid}"), layer)
        .await
        .map_err(|e| e.to_string())?;
    let a = Arc::new(a);
    let to = PeerAddr::ouroboros(b_name.as_str()).map_err(|e| e.to_string())?;
    a.connect(to.clone(), Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    // Both flows of each side up before the timing (a datagram opens the
    // bulk one).
    a.send_datagram(to.clone(), [0u8; 16])
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle, _) = observes(&a, &to, probes).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (fa, fto, fstop) = (a.clone(), to.clone(), stop.clone());
    let flood = tokio::spawn(async move {
        let payload = vec![0u8; 1000];
        let (start, mut sent) = (Instant::now(), 0u64);
        // Paced, in bursts of FLOOD_BURST: the same load in both settings
        // (a flood as fast as it goes measures the contention for the
        // sender's core, not the flows).
        let mut tick = tokio::time::interval(Duration::from_secs_f64(
            FLOOD_BURST as f64 / rate.max(1) as f64,
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while !fstop.load(std::sync::atomic::Ordering::Relaxed) {
            tick.tick().await;
            for _ in 0..FLOOD_BURST {
                if fa.send_datagram(fto.clone(), &payload).await.is_ok() {
                    sent += 1;
                }
            }
        }
        sent as f64 / start.elapsed().as_secs_f64()
    });
    // The flood fills the rings first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (busy, lost) = observes(&a, &to, probes).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flood_rate = flood.await.unwrap_or(0.0);
    if let Ok(st) = a.stats().await {
        if let Some(f) = st.ouroboros {
            eprintln!(
                "sending peer ({} flow(s) a neighbour): {} datagrams on control flows, {} on bulk flows, {} dropped by the link, {} link errors, {} parked",
                if two { 2 } else { 1 },
                f.control_sent,
                f.bulk_sent,
                f.dropped,
                st.link_errors,
                st.link_parked
            );
        }
    }
    a.close().await;
    receiver.stop();
    if idle.is_empty() || busy.is_empty() {
        return Err(format!(
            "no round trip answered (one flow per class: {two}; {lost} lost during the flood)"
        ));
    }
    Ok(ClassesTurn {
        idle: percentiles(idle),
        busy: percentiles(busy),
        lost,
        flood_rate,
    })
}

/// Times (seconds) of `n` round trips of an `Observe` to `to`, one every
/// 5 ms, and how many got no answer within 1 s.
async fn observes(a: &SwarmPeer, to: &PeerAddr, n: usize) -> (Vec<f64>, usize) {
    let (mut times, mut lost) = (Vec::with_capacity(n), 0);
    for _ in 0..n {
        let t = Instant::now();
        match a.observe(to.clone(), Duration::from_secs(1)).await {
            Ok(_) => times.push(t.elapsed().as_secs_f64()),
            Err(_) => lost += 1,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (times, lost)
}

/// Unconfirmed 1 KiB datagrams, counted at the receiver as `ocbr` counts:
/// the like-for-like row for `ocbr`'s flood, which no one acknowledges.
/// Messages per second and the fraction that arrived.
async fn datagram_flood(
    a: &SwarmPeer,
    to: &PeerAddr,
    receiver: &mut Receiver,
    messages: usize,
) -> R<(f64, f64)> {
    receiver.mark()?;
    send_datagrams(a, to, 1024, messages).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (arrived, secs) = receiver.mark()?;
    let rate = if secs > 0.0 {
        arrived as f64 / secs
    } else {
        0.0
    };
    Ok((rate, arrived as f64 / messages as f64))
}

/// Confirmed one-hop sends per second ([`crate::bench::window`] in flight, 256 by default), and the fraction confirmed.
async fn throughput(a: &Arc<SwarmPeer>, to: &PeerAddr, size: usize, count: usize) -> (f64, f64) {
    let start = Instant::now();
    let (ok, first_error) = pipelined_sends(a, to, size, count).await;
    let secs = start.elapsed().as_secs_f64();
    if ok != count {
        println!(
            "  !! {size} B over Ouroboros: {ok} confirmed of {count}; first error: {}",
            first_error.unwrap_or_default()
        );
    }
    (ok as f64 / secs, ok as f64 / count as f64)
}

/// Times (seconds) of `n` confirmed one-hop sends of 64 B, one per
/// millisecond as `oping -i 1` pings when `paced`, else back to back (as
/// the UDP rows).
async fn latency(a: &SwarmPeer, to: &PeerAddr, n: usize, paced: bool) -> R<Vec<f64>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        a.send(to, vec![7u8; 64]).await.map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64());
        if paced {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_c_tools_output() {
        let out = "Server started, interval is 1 s, timeout is 1 s.\nNew flow.\n\
            Flow   64:    346861 packets (   355185664 bytes) in      1002 ms => 346086.8038 pps, 2835.1431 Mbps\n\
            Flow   64:    483681 packets (   495289344 bytes) in      1003 ms => 481835.5698 pps, 3947.1970 Mbps\n\
            Flow   64:         0 packets (           0 bytes) in      1001 ms =>    0.0000 pps,    0.0000 Mbps\n";
        let pps = ocbr_pps(out).unwrap();
        assert!((pps - (346861.0 + 483681.0) / 2.005).abs() < 1.0, "{pps}");
        assert_eq!(ocbr_pps("Server started\n"), None);
        let t = oping_times(
            "64 bytes from x: seq=0 time=1.848 ms\n64 bytes from x: seq=1 time=30.000 µs\nnoise\n",
        );
        assert_eq!(t.len(), 2);
        assert!((t[0] - 1.848e-3).abs() < 1e-9 && (t[1] - 30e-6).abs() < 1e-12);
    }

    #[test]
    fn speaks_the_oping_packet_format() {
        let mut m = oping_request(0x0102_0304);
        assert_eq!(m.len(), 24, "the C tool's packed struct");
        assert_eq!(
            &m[..8],
            &[0, 0, 0, 0, 1, 2, 3, 4],
            "type 0, id in network order"
        );
        assert!(!is_oping_reply(&m, 0x0102_0304), "a request is not a reply");
        m[3] = 1; // what the server does: type = htonl(ECHO_REPLY)
        assert!(is_oping_reply(&m, 0x0102_0304));
        assert!(!is_oping_reply(&m, 0x0102_0305), "another ping's echo");
        assert!(!is_oping_reply(&m[..7], 0x0102_0304), "too short");
    }
}
