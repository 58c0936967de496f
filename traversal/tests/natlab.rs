//! Port mapping against a real `miniupnpd`, in the network namespaces of
//! the project's lab, `scripts/netlab` (see docs/testing.md).
//!
//! Each `#[test]` here brings up its own lab (a unique prefix), then runs
//! this very test binary inside the lab's namespaces: the `#[ignore]`d
//! `agent` test in `lan1-1`/`lan1-2` (behind gateway `gw1`) maps a port and
//! serves an echo on it, driven by commands on its stdin; the `#[ignore]`d
//! `probe` test in `pub1` sends to the gateway's external address and checks
//! the answer (or the silence). The lab is torn down when the test ends,
//! whatever happens.
//!
//! Where the lab cannot be built (not root, no `ip netns`, nftables or
//! miniupnpd), each test skips through `tests/support/require.rs` (need
//! `netlab`): a loud SKIPPED line, or a failure under `CICADA_REQUIRE`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use traversal::{blocking, Error, Options, PortMapping, Protocol};

/// The environment variable that carries an agent's instructions.
const AGENT_ENV: &str = "TV_AGENT";
/// The environment variable that carries a probe's instructions.
const PROBE_ENV: &str = "TV_PROBE";
// ----------------------------------------------------------------------------- the lab

#[path = "../../tests/support/require.rs"]
mod require;

#[path = "../../tests/support/netlab.rs"]
mod netlab;
use netlab::Lab;

/// The LAN hosts the agents run on, behind `gw1`; the probes run on `pub1`.
const LAN1: &str = "lan1-1";
const LAN2: &str = "lan1-2";

impl Lab {
    /// The gateway's external address.
    fn gw_ip(&self) -> &str {
        self.ip("gw1")
    }

    /// `gw1`'s DNAT rules, as (protocol, external port, target).
    fn rules(&self) -> Vec<(Protocol, u16, String)> {
        let mappings = self.mappings("gw1");
        let mut rules = Vec::new();
        for line in mappings.lines().filter(|l| l.contains("dnat")) {
            // iif "wan0" @nh,72,8 0x11 th dport 4000 dnat ip to 10.0.1.11:4000
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |w: &str| {
                words
                    .iter()
                    .position(|x| *x == w)
                    .and_then(|i| words.get(i + 1))
            };
            let protocol = if line.contains("0x11") || line.contains("udp") {
                Protocol::Udp
            } else {
                Protocol::Tcp
            };
            if let (Some(port), Some(to)) =
                (after("dport").and_then(|p| p.parse().ok()), after("to"))
            {
                rules.push((protocol, port, to.to_string()));
            }
        }
        rules
    }

    fn has_rule(&self, protocol: Protocol, port: u16) -> bool {
        self.rules()
            .iter()
            .any(|(p, e, _)| *p == protocol && *e == port)
    }

    /// Runs a probe from `pub1` to `target`; panics (with its output) if the
    /// probe does not see what `expect` says.
    fn probe(&self, protocol: Protocol, target: SocketAddr, expect: &str) {
        let spec = format!(
            "proto={} target={target} expect={expect}",
            proto_name(protocol)
        );
        let out = self
            .exec_self("pub1", "probe")
            .env(PROBE_ENV, &spec)
            .output()
            .expect("run the probe");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "probe [{spec}] failed in lab {}:\n{stdout}\n{}\n{}",
            self.prefix,
            String::from_utf8_lossy(&out.stderr),
            self.status()
        );
        let verdict = stdout
            .lines()
            .find_map(|l| l.find("@@ PROBE").map(|at| &l[at..]))
            .unwrap_or("?");
        eprintln!("probe [{spec}]: {verdict}");
    }
}

fn proto_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Udp => "udp",
        Protocol::Tcp => "tcp",
    }
}

fn parse_kv(spec: &str) -> HashMap<String, String> {
    spec.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ----------------------------------------------------------------------------- agents (driven from outside)

/// A running `agent` inside the lab, with its `@@` lines.
struct Agent {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    fn spawn(lab: &Lab, role: &str, spec: &str) -> Agent {
        let name = format!("{role}[{spec}]");
        let mut child = lab
            .exec_self(role, "agent")
            .env(AGENT_ENV, spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn an agent");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("agent stdout");
        let stderr = child.stderr.take().expect("agent stderr");
        for (stream, tx) in [
            (Box::new(stdout) as Box<dyn Read + Send>, Some(tx)),
            (Box::new(stderr) as Box<dyn Read + Send>, None),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    // libtest may print "test agent ... " before our first line.
                    if let (Some(tx), Some(at)) = (&tx, line.find("@@ ")) {
                        let _ = tx.send(line[at..].to_string());
                    }
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        Agent {
            name,
            stdin: child.stdin.take(),
            child,
            lines,
            log,
        }
    }

    fn dump(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Waits for the next `@@ WORD ...` line and returns its key=value pairs.
    fn expect(&self, word: &str, within: Duration) -> HashMap<String, String> {
        parse_kv(&self.expect_line(word, within))
    }

    /// Waits for the next `@@ WORD ...` line and returns the rest of it.
    fn expect_line(&self, word: &str, within: Duration) -> String {
        match self.lines.recv_timeout(within) {
            Ok(line) => match line[3..].strip_prefix(word) {
                Some(body) => body.trim().to_string(),
                None => panic!(
                    "agent {} said `{line}`, expected {word}; its log:\n{}",
                    self.name,
                    self.dump()
                ),
            },
            Err(_) => panic!(
                "agent {} did not say {word} within {within:?}; its log:\n{}",
                self.name,
                self.dump()
            ),
        }
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("agent stdin");
        writeln!(stdin, "{command}").expect("write to the agent");
        stdin.flush().expect("flush the agent's stdin");
    }

    /// Expects the agent to have mapped a port; returns (method, external, local).
    fn mapped(&self) -> (String, SocketAddr, SocketAddr) {
        let kv = self.expect("MAPPED", Duration::from_secs(30));
        let addr = |k: &str| -> SocketAddr {
            kv.get(k)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("agent {}: bad {k} in {kv:?}", self.name))
        };
        (kv["method"].clone(), addr("external"), addr("local"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "quit");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----------------------------------------------------------------------------- the tests

/// UPnP IGD maps a UDP and a TCP port of lan1-1; pub1 reaches both through
/// the external address and gets the answers back. Closing the UDP mapping
/// and dropping the TCP one remove their DNAT rules, and new flows from pub1
/// no longer arrive.
#[test]
fn upnp_maps_udp_and_tcp_and_removes_them() {
    let Some(lab) = Lab::up("upnp_maps_udp_and_tcp_and_removes_them", &[]) else {
        return;
    };
    let (gw, lan1) = (lab.gw_ip(), lab.ip(LAN1));
    let mut udp = Agent::spawn(&lab, LAN1, "proto=udp port=41000");
    let mut tcp = Agent::spawn(&lab, LAN1, "proto=tcp port=41001");
    let (method, u_ext, u_local) = udp.mapped();
    assert_eq!(method, "upnp");
    assert_eq!(u_ext, format!("{gw}:41000").parse().unwrap());
    assert_eq!(u_local, format!("{lan1}:41000").parse().unwrap());
    let (method, t_ext, t_local) = tcp.mapped();
    assert_eq!(method, "upnp");
    assert_eq!(t_ext, format!("{gw}:41001").parse().unwrap());
    assert_eq!(t_local, format!("{lan1}:41001").parse().unwrap());

    let rules = lab.rules();
    assert!(
        rules.contains(&(Protocol::Udp, 41000, format!("{lan1}:41000"))),
        "{rules:?}"
    );
    assert!(
        rules.contains(&(Protocol::Tcp, 41001, format!("{lan1}:41001"))),
        "{rules:?}"
    );
    lab.probe(Protocol::Udp, u_ext, "reply:lan1-1");
    lab.probe(Protocol::Tcp, t_ext, "reply:lan1-1");

    udp.send("close");
    let kv = udp.expect("CLOSED", Duration::from_secs(10));
    assert_eq!(kv.get("ok").map(String::as_str), Some("true"), "{kv:?}");
    assert!(
        !lab.has_rule(Protocol::Udp, 41000),
        "{}",
        lab.mappings("gw1")
    );
    lab.probe(Protocol::Udp, u_ext, "silence");

    tcp.send("drop");
    tcp.expect("DROPPED", Duration::from_secs(10));
    assert!(
        !lab.has_rule(Protocol::Tcp, 41001),
        "{}",
        lab.mappings("gw1")
    );
    lab.probe(Protocol::Tcp, t_ext, "silence");

    // Refusals: miniupnpd's rules deny external ports below 1024 (606), and
    // 2869 is its own HTTP port (729), for which we take another port.
    let denied = Agent::spawn(&lab, LAN1, "proto=udp port=41002 ext=80 methods=upnp");
    let kv = denied.expect("ERROR", Duration::from_secs(30));
    let message = denied.expect_line("MESSAGE", Duration::from_secs(5));
    eprintln!("UPnP, external port 80: {message}");
    assert_eq!(
        (kv["kind"].as_str(), kv["code"].as_str()),
        ("refused", "606"),
        "{message}"
    );
    assert!(message.contains("Action not authorized"), "{message}");
    let busy = Agent::spawn(&lab, LAN1, "proto=tcp port=41003 ext=2869 methods=upnp");
    let (method, b_ext, _) = busy.mapped();
    assert_eq!(method, "upnp");
    assert_ne!(b_ext.port(), 2869);
    assert!(
        lab.has_rule(Protocol::Tcp, b_ext.port()),
        "{}",
        lab.mappings("gw1")
    );
    lab.probe(Protocol::Tcp, b_ext, "reply:lan1-1");
}

/// With UPnP off, NAT-PMP maps UDP (async type) and TCP (blocking type);
/// a short lease is renewed; lan1-2 asking for the same port gets another
/// one; removal works.
#[test]
fn natpmp_maps_when_upnp_is_off() {
    let Some(lab) = Lab::up("natpmp_maps_when_upnp_is_off", &[("NETLAB_UPNP", "no")]) else {
        return;
    };
    let (gw, lan1) = (lab.gw_ip(), lab.ip(LAN1));
    let started = Instant::now();
    let mut udp = Agent::spawn(&lab, LAN1, "proto=udp port=42000 lease=2");
    let mut tcp = Agent::spawn(&lab, LAN1, "proto=tcp port=42001 blocking=yes");
    let udp2 = Agent::spawn(&lab, LAN2, "proto=udp port=42000");
    let (method, u_ext, u_local) = udp.mapped();
    assert_eq!(method, "natpmp");
    assert_eq!(u_ext.ip().to_string(), gw);
    assert_eq!(u_local, format!("{lan1}:42000").parse().unwrap());
    let (method, t_ext, _) = tcp.mapped();
    assert_eq!(method, "natpmp");
    assert_eq!(t_ext, format!("{gw}:42001").parse().unwrap());
    let (method, u2_ext, _) = udp2.mapped();
    assert_eq!(method, "natpmp");
    assert_ne!(
        u2_ext.port(),
        u_ext.port(),
        "lan1-1 and lan1-2 got the same external port"
    );
    assert!(
        u_ext.port() == 42000 || u2_ext.port() == 42000,
        "{u_ext} {u2_ext}"
    );
    eprintln!(
        "NAT-PMP: mapped after {:?} (UPnP discovery timed out first)",
        started.elapsed()
    );

    lab.probe(Protocol::Udp, u_ext, "reply:lan1-1");
    lab.probe(Protocol::Tcp, t_ext, "reply:lan1-1");
    lab.probe(Protocol::Udp, u2_ext, "reply:lan1-2");

    // The 2 s lease must be renewed: after 4 lease periods a new flow still gets through.
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        lab.has_rule(Protocol::Udp, u_ext.port()),
        "{}",
        lab.mappings("gw1")
    );
    lab.probe(Protocol::Udp, u_ext, "reply:lan1-1");

    udp.send("drop");
    udp.expect("DROPPED", Duration::from_secs(10));
    assert!(
        !lab.has_rule(Protocol::Udp, u_ext.port()),
        "{}",
        lab.mappings("gw1")
    );
    lab.probe(Protocol::Udp, u_ext, "silence");

    tcp.send("close");
    let kv = tcp.expect("CLOSED", Duration::from_secs(10));
    assert_eq!(kv.get("ok").map(String::as_str), Some("true"), "{kv:?}");
    assert!(
        !lab.has_rule(Protocol::Tcp, 42001),
        "{}",
        lab.mappings("gw1")
    );
    lab.probe(Protocol::Tcp, t_ext, "silence");
    // lan1-2's mapping is untouched by lan1-1's removal.
    lab.probe(Protocol::Udp, u2_ext, "reply:lan1-2");

    // miniupnpd's rules only allow ports 1024-65535. Asked for external port
    // 80, NAT-PMP picks an allowed one itself; for internal port 500 there is
    // none, and it refuses with result code 2.
    let moved = Agent::spawn(&lab, LAN1, "proto=udp port=42003 ext=80 methods=natpmp");
    let (_, m_ext, _) = moved.mapped();
    assert!(m_ext.port() >= 1024, "{m_ext}");
    lab.probe(Protocol::Udp, m_ext, "reply:lan1-1");
    let denied = Agent::spawn(&lab, LAN1, "proto=udp port=500 methods=natpmp");
    let kv = denied.expect("ERROR", Duration::from_secs(30));
    let message = denied.expect_line("MESSAGE", Duration::from_secs(5));
    eprintln!("NAT-PMP, internal port 500: {message}");
    assert_eq!(
        (kv["kind"].as_str(), kv["code"].as_str()),
        ("refused", "2"),
        "{message}"
    );
    assert!(message.contains("Not Authorized/Refused"), "{message}");
}

/// With neither UPnP nor NAT-PMP, mapping fails with both reasons, fast.
#[test]
fn no_mapping_service_fails_clearly_and_quickly() {
    let Some(lab) = Lab::up(
        "no_mapping_service_fails_clearly_and_quickly",
        &[("NETLAB_UPNP", "no"), ("NETLAB_NATPMP", "no")],
    ) else {
        return;
    };
    let agent = Agent::spawn(&lab, LAN1, "proto=udp port=43000");
    let kv = agent.expect("ERROR", Duration::from_secs(30));
    let ms: u64 = kv["ms"].parse().expect("ms");
    let message = agent.expect_line("MESSAGE", Duration::from_secs(5));
    eprintln!("both off: failed after {ms} ms: {message}");
    assert_eq!(kv["kind"], "both_failed", "{kv:?} {message}");
    assert!(message.contains("UPnP IGD: no gateway found"), "{message}");
    assert!(message.contains("NAT-PMP: not supported"), "{message}");
    assert!(ms < 6_000, "took {ms} ms");
    assert!(lab.rules().is_empty());
}

/// UPnP: a 2 s lease is renewed for several periods; lan1-1 and lan1-2 asking
/// for the same external port both get working, different ports.
#[test]
fn upnp_renews_short_leases_and_shares_a_port_between_hosts() {
    let Some(lab) = Lab::up(
        "upnp_renews_short_leases_and_shares_a_port_between_hosts",
        &[],
    ) else {
        return;
    };
    let lan1_ip = lab.ip(LAN1);
    let lan1 = Agent::spawn(&lab, LAN1, "proto=udp port=44000 lease=2");
    let (method, ext1, _) = lan1.mapped();
    assert_eq!(method, "upnp");
    assert_eq!(ext1.port(), 44000);
    let lan2 = Agent::spawn(&lab, LAN2, "proto=udp port=44000 lease=2");
    let (method, ext2, local2) = lan2.mapped();
    assert_eq!(method, "upnp");
    assert_ne!(ext2.port(), 44000, "lan2 got the port lan1 holds");
    assert_eq!(local2, format!("{}:44000", lab.ip(LAN2)).parse().unwrap());
    let rules = lab.rules();
    assert!(
        rules.contains(&(Protocol::Udp, 44000, format!("{lan1_ip}:44000"))),
        "{rules:?}"
    );
    assert!(
        rules.contains(&(
            Protocol::Udp,
            ext2.port(),
            format!("{}:44000", lab.ip(LAN2))
        )),
        "{rules:?}"
    );
    lab.probe(Protocol::Udp, ext1, "reply:lan1-1");
    lab.probe(Protocol::Udp, ext2, "reply:lan1-2");

    std::thread::sleep(Duration::from_secs(8));
    assert!(
        lab.has_rule(Protocol::Udp, 44000),
        "{}",
        lab.mappings("gw1")
    );
    assert!(
        lab.has_rule(Protocol::Udp, ext2.port()),
        "{}",
        lab.mappings("gw1")
    );
    lab.probe(Protocol::Udp, ext1, "reply:lan1-1");
    lab.probe(Protocol::Udp, ext2, "reply:lan1-2");
}

// ----------------------------------------------------------------------------- inside the lab

/// Inside the lab: maps a port as `TV_AGENT` says, serves an echo on it
/// (answers are prefixed with the lab role), and obeys `close`, `drop` and
/// `quit` on stdin. Reports with `@@` lines on stdout.
#[test]
#[ignore = "runs inside the NAT lab, started by the other tests"]
fn agent() {
    let Ok(spec) = std::env::var(AGENT_ENV) else {
        eprintln!("agent: nothing to do outside the NAT lab");
        return;
    };
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target("traversal", tracing::Level::DEBUG)
            .with_default(tracing::Level::INFO);
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(std::io::stderr)
            .finish()
            .with(filter)
            .try_init();
    }
    let kv = parse_kv(&spec);
    let protocol = match kv.get("proto").map(String::as_str) {
        Some("tcp") => Protocol::Tcp,
        _ => Protocol::Udp,
    };
    let port: u16 = kv["port"].parse().expect("port");
    let mut options = Options::default();
    if let Some(lease) = kv.get("lease") {
        options = options.with_lease(Duration::from_secs(lease.parse().expect("lease")));
    }
    if let Some(ext) = kv.get("ext") {
        options = options.with_external_port(ext.parse().expect("ext"));
    }
    match kv.get("methods").map(String::as_str) {
        Some("upnp") => options = options.with_natpmp(false),
        Some("natpmp") => options = options.with_upnp(false),
        _ => {}
    }
    let blocking = kv.get("blocking").is_some_and(|v| v == "yes");
    let role = std::env::var("NETLAB_ROLE").unwrap_or_else(|_| "?".into());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        serve_echo(protocol, port, role).await;
        let started = Instant::now();
        let mapping = if blocking {
            tokio::task::block_in_place(|| {
                blocking::PortMapping::with_options(port, protocol, &options)
            })
            .map(Held::Blocking)
        } else {
            PortMapping::with_options(port, protocol, &options)
                .await
                .map(Held::Async)
        };
        let mut mapping = match mapping {
            Ok(m) => Some(m),
            Err(e) => {
                let kind = match &e {
                    Error::BothFailed { .. } => "both_failed",
                    Error::NoGateway { .. } => "no_gateway",
                    Error::Refused { .. } => "refused",
                    Error::Timeout { .. } => "timeout",
                    Error::Unsupported { .. } => "unsupported",
                    _ => "other",
                };
                let code = e.code().map_or("none".to_string(), |c| c.to_string());
                println!(
                    "@@ ERROR kind={kind} code={code} ms={}",
                    started.elapsed().as_millis()
                );
                println!("@@ MESSAGE {e}");
                return;
            }
        };
        if let Some(m) = &mapping {
            let (method, external, local, lease) = m.describe();
            println!("@@ MAPPED method={method} external={external} local={local} lease={lease:?}");
        }
        let stdin = tokio::io::BufReader::new(tokio::io::stdin());
        let mut lines = tokio::io::AsyncBufReadExt::lines(stdin);
        while let Ok(Some(line)) = lines.next_line().await {
            match line.trim() {
                "close" => {
                    if let Some(m) = mapping.take() {
                        let result = m.close().await;
                        println!(
                            "@@ CLOSED ok={} error={:?}",
                            result.is_ok(),
                            result.err().map(|e| e.to_string())
                        );
                    }
                }
                "drop" => {
                    let m = mapping.take();
                    tokio::task::block_in_place(|| drop(m));
                    println!("@@ DROPPED");
                }
                "quit" => break,
                other => println!("@@ HUH {other}"),
            }
        }
        tokio::task::block_in_place(|| drop(mapping));
    });
}

enum Held {
    Async(PortMapping),
    Blocking(blocking::PortMapping),
}

impl Held {
    fn describe(&self) -> (&'static str, SocketAddr, SocketAddr, Duration) {
        match self {
            Held::Async(m) => (
                m.method().as_str(),
                m.external_addr(),
                m.local_addr(),
                m.lease(),
            ),
            Held::Blocking(m) => (
                m.method().as_str(),
                m.external_addr(),
                m.local_addr(),
                m.lease(),
            ),
        }
    }

    async fn close(self) -> Result<(), Error> {
        match self {
            Held::Async(m) => m.close().await,
            Held::Blocking(m) => tokio::task::block_in_place(|| m.close()),
        }
    }
}

/// Echoes what arrives on `port`, prefixed with `role:`.
async fn serve_echo(protocol: Protocol, port: u16, role: String) {
    match protocol {
        Protocol::Udp => {
            let socket = tokio::net::UdpSocket::bind(("0.0.0.0", port))
                .await
                .expect("bind udp");
            tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                    let mut answer = format!("{role}:").into_bytes();
                    answer.extend_from_slice(&buf[..n]);
                    let _ = socket.send_to(&answer, from).await;
                }
            });
        }
        Protocol::Tcp => {
            let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
                .await
                .expect("bind tcp");
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let role = role.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = [0u8; 1500];
                        if let Ok(n) = stream.read(&mut buf).await {
                            let mut answer = format!("{role}:").into_bytes();
                            answer.extend_from_slice(&buf[..n]);
                            let _ = stream.write_all(&answer).await;
                        }
                    });
                }
            });
        }
    }
}

/// Inside the lab, in `pub1`: sends to `TV_PROBE`'s target from a fresh
/// source port and checks for `expect=reply:ROLE` or `expect=silence`.
#[test]
#[ignore = "runs inside the NAT lab, started by the other tests"]
fn probe() {
    let Ok(spec) = std::env::var(PROBE_ENV) else {
        eprintln!("probe: nothing to do outside the NAT lab");
        return;
    };
    let kv = parse_kv(&spec);
    let target: SocketAddr = kv["target"].parse().expect("target");
    let expect = kv["expect"].as_str();
    let nonce = format!("probe-{}", std::process::id());
    let answer = match kv["proto"].as_str() {
        "tcp" => tcp_exchange(target, &nonce),
        _ => udp_exchange(target, &nonce),
    };
    println!("@@ PROBE target={target} expect={expect} answer={answer:?}");
    match expect.strip_prefix("reply:") {
        Some(role) => assert_eq!(answer.as_deref(), Some(format!("{role}:{nonce}").as_str())),
        None => assert_eq!(answer, None, "expected silence"),
    }
}

fn udp_exchange(target: SocketAddr, nonce: &str) -> Option<String> {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        socket.send_to(nonce.as_bytes(), target).expect("send");
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(from, target, "answer from the wrong address");
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            Err(_) => continue,
        }
    }
    None
}

fn tcp_exchange(target: SocketAddr, nonce: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_millis(1500)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    stream.write_all(nonce.as_bytes()).ok()?;
    let mut buf = [0u8; 1500];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}
