//! I/O: the Ouroboros C tools (`ocbr`, `oping`) and a raw flow.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::R;

/// Seconds the C `ocbr` client floods.
pub(super) const OCBR_SECONDS: u32 = 2;

/// Turns of the throughput row, `ocbr` and Cicada in alternation.
pub(super) const OCBR_TURNS: usize = 3;

/// Turns of the paced latency row, `oping` and Cicada in alternation: a
/// run of 2,000 pings of either alone met another machine state often
/// enough (`oping`'s p50 read 22 µs in one run and 40 µs in the next).
pub(super) const OPING_TURNS: usize = 5;

/// What an `ocbr -l` server bound to `name` counted (packets per second)
/// while `flood` sent it 1 KiB packets for [`OCBR_SECONDS`].
pub(super) fn counted_by_ocbr(
    layer: &str,
    name: &str,
    flood: impl FnOnce(&str) -> R<()>,
) -> R<f64> {
    let mut srv = CServer::start("ocbr", &["-l", "-i", "1", "-t", "2"], name, layer)?;
    let flooded = flood(name);
    std::thread::sleep(Duration::from_millis(1500));
    let out = srv.stop();
    flooded?;
    ocbr_pps(&out).ok_or_else(|| format!("no ocbr figures in {out:?}"))
}

/// One flood of the C `ocbr` client.
pub(super) fn ocbr_flood(name: &str) -> R<()> {
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
pub(super) fn raw_flood(name: &str) -> R<()> {
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

/// Runs `irm ARGS`, quietly; whether it succeeded.
pub(super) fn irm(args: &[&str]) -> bool {
    Command::new("irm")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub(super) fn sigterm(c: &mut Child, within: Duration) {
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
pub(super) struct CServer {
    child: Child,
    name: String,
    out: std::thread::JoinHandle<String>,
    stopped: bool,
}

impl CServer {
    pub(super) fn start(tool: &str, args: &[&str], name: &str, layer: &str) -> R<CServer> {
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
    pub(super) fn stop(&mut self) -> String {
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
pub(super) fn oping_run(name: &str, count: usize) -> R<Vec<f64>> {
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
pub(super) fn oping_request(id: u32) -> [u8; 24] {
    let mut m = [0u8; 24];
    m[4..8].copy_from_slice(&id.to_be_bytes());
    m
}

/// Whether `reply` is the `oping` server's echo of request `id`.
pub(super) fn is_oping_reply(reply: &[u8], id: u32) -> bool {
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
pub(super) enum RawFlow {
    Blocking(Arc<cicada::ouroboros::Flow>),
    Async(cicada::ouroboros::AsyncFlow),
}

impl RawFlow {
    pub(super) async fn open(name: &str, asynchronous: bool) -> R<RawFlow> {
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
    pub(super) async fn pings(&self, first: u32, n: usize) -> R<Vec<f64>> {
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
pub(super) fn ocbr_pps(server_out: &str) -> Option<f64> {
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
pub(super) fn oping_times(out: &str) -> Vec<f64> {
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
