//! The lab itself (`scripts/netlab`): its topology and knobs do what the
//! manual (docs/testing.md) says. Two public hosts, two LANs behind their
//! own gateways (one endpoint-independent, one symmetric), dual-stack LANs
//! with routed, firewalled IPv6, lossy and delayed links, and a teardown
//! that leaves nothing behind.
//!
//! Each test brings up its own lab and runs this test binary's `#[ignore]`d
//! `udp_client` inside it: it sends from one UDP socket to the responders of
//! the public hosts (which answer with the address they saw) and prints what
//! came back on `@@` lines. Where the lab cannot be built the tests skip
//! through `tests/support/require.rs` (need `netlab`).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/require.rs"]
mod require;

#[path = "support/netlab.rs"]
mod netlab;
use netlab::Lab;

/// The environment variable that carries a client's instructions.
const CLIENT_ENV: &str = "NETLAB_TEST_CLIENT";

/// What a `udp_client` run in `role` saw: for each target, the answers (the
/// address the responder saw it at, as text) and the round trip of each,
/// and the targets that refused (an ICMP port unreachable came back).
struct Seen {
    answers: HashMap<SocketAddr, Vec<String>>,
    rtts: HashMap<SocketAddr, Vec<Duration>>,
    refused: Vec<SocketAddr>,
}

/// Runs `udp_client` in `role`: from one socket bound to `bind`, `count`
/// queries to each of `targets`, each waiting at most `wait` for its answer.
fn client(
    lab: &Lab,
    role: &str,
    bind: &str,
    targets: &[String],
    count: usize,
    wait: Duration,
) -> Seen {
    client_with(lab, role, bind, targets, count, wait, "")
}

/// [`client`] with extra `key=value` words for `udp_client` (`burst=yes`).
fn client_with(
    lab: &Lab,
    role: &str,
    bind: &str,
    targets: &[String],
    count: usize,
    wait: Duration,
    extra: &str,
) -> Seen {
    let spec = format!(
        "bind={bind} to={} count={count} wait_ms={} {extra}",
        targets.join(","),
        wait.as_millis()
    );
    let out = lab
        .exec_self(role, "udp_client")
        .env(CLIENT_ENV, &spec)
        .output()
        .expect("run the client in the lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client [{spec}] in {role} failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.status()
    );
    let mut seen = Seen {
        answers: HashMap::new(),
        rtts: HashMap::new(),
        refused: Vec::new(),
    };
    for line in stdout.lines() {
        if let Some(at) = line.find("@@ REFUSED ") {
            seen.refused
                .push(line[at + 11..].trim().parse().expect("refused target"));
            continue;
        }
        let Some(at) = line.find("@@ ANSWER ") else {
            continue;
        };
        let words: Vec<&str> = line[at + 10..].split_whitespace().collect();
        let [target, answer, micros] = words[..] else {
            panic!("bad client line {line}");
        };
        let target: SocketAddr = target.parse().expect("target");
        seen.answers
            .entry(target)
            .or_default()
            .push(answer.to_string());
        seen.rtts
            .entry(target)
            .or_default()
            .push(Duration::from_micros(micros.parse().expect("micros")));
    }
    seen
}

fn responder(lab: &Lab, public: &str) -> String {
    lab.var(&format!("{}_RESPONDER", public.to_uppercase()))
        .to_string()
}

/// The port in an `IP:PORT` answer, checking the IP.
fn port_at(answer: &str, ip: &str) -> u16 {
    let addr: SocketAddr = answer.parse().unwrap_or_else(|_| panic!("answer {answer}"));
    assert_eq!(addr.ip().to_string(), ip, "seen at {answer}");
    addr.port()
}

/// Two public hosts and two LANs: behind the endpoint-independent gateway a
/// socket keeps one external port (its own) towards both public hosts;
/// behind the symmetric one it gets a different port per destination. Each
/// LAN host is seen at its own gateway's address; a public host reaches
/// another directly; nothing reaches a LAN from outside unasked. After the
/// lab is torn down, nothing of it is left.
#[test]
fn two_lans_behind_an_eim_and_a_symmetric_gateway() {
    let test = "two_lans_behind_an_eim_and_a_symmetric_gateway";
    let Some(lab) = Lab::up(
        test,
        &[
            ("NETLAB_PUBLIC", "2"),
            ("NETLAB_LANS", "2"),
            ("NETLAB_HOSTS", "1"),
            ("NETLAB_GW2_NAT", "symmetric"),
            ("NETLAB_GW2_UPNP", "no"),
        ],
    ) else {
        return;
    };
    let both = [responder(&lab, "pub1"), responder(&lab, "pub2")];
    let wait = Duration::from_secs(2);

    // Endpoint-independent: the source port is kept, towards both.
    let seen = client(&lab, "lan1-1", "0.0.0.0:40001", &both, 1, wait);
    for target in &both {
        let answers = &seen.answers[&target.parse().unwrap()];
        assert_eq!(port_at(&answers[0], lab.ip("gw1")), 40001, "via {target}");
    }

    // Symmetric: another port per destination, none of them the socket's.
    let seen = client(&lab, "lan2-1", "0.0.0.0:40002", &both, 1, wait);
    let ports: Vec<u16> = both
        .iter()
        .map(|t| port_at(&seen.answers[&t.parse().unwrap()][0], lab.ip("gw2")))
        .collect();
    eprintln!("symmetric gw2 mapped 40002 to {ports:?}");
    assert_ne!(ports[0], ports[1], "one external port for two destinations");

    // Public hosts reach each other directly, seen at their own addresses.
    let seen = client(&lab, "pub1", "0.0.0.0:40003", &both[1..], 1, wait);
    assert_eq!(
        seen.answers[&both[1].parse().unwrap()],
        [format!("{}:40003", lab.ip("pub1"))]
    );

    // Nothing unasked gets in: a LAN host's private address is unreachable
    // from outside, and a gateway without a mapping drops what comes (no
    // answer, and no refusal either, which a closed port of a public host
    // gives).
    let lan_host = format!("{}:3478", lab.ip("lan1-1"));
    let gw1 = format!("{}:40001", lab.ip("gw1"));
    let closed = format!("{}:9", lab.ip("pub1"));
    let seen = client(
        &lab,
        "pub2",
        "0.0.0.0:0",
        &[lan_host, gw1, closed.clone()],
        1,
        Duration::from_millis(500),
    );
    assert!(seen.answers.is_empty(), "{:?}", seen.answers);
    assert_eq!(seen.refused, [closed.parse().unwrap()]);

    // Torn down: no namespace, state or daemon of this lab is left.
    let prefix = lab.prefix.clone();
    let status = lab.status();
    drop(lab);
    let namespaces = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list")
            .stdout,
    )
    .into_owned();
    assert!(
        !namespaces
            .lines()
            .any(|l| l.starts_with(&format!("{prefix}-"))),
        "left behind: {namespaces}"
    );
    for left in [
        format!("/run/netlab-{prefix}"),
        format!("/run/netlab-{prefix}.lock"),
    ] {
        assert!(!Path::new(&left).exists(), "{left} left behind");
    }
    for line in status.lines().filter(|l| l.contains("miniupnpd pid")) {
        let pid = line
            .split("miniupnpd pid ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .expect("a pid");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "miniupnpd {pid} still runs"
        );
    }
}

/// `NETLAB_IPV6=yes`: beside IPv4 behind NAT, every host has an IPv6
/// address, routed without NAT: a LAN host is seen at its own address and
/// port. The gateways' firewalls drop what comes to a LAN unasked, from the
/// public segment or from another LAN, while the answers to what a LAN host
/// sent (an ICMP port unreachable too) come back.
#[test]
fn dual_stack_lans_are_routed_and_firewalled() {
    let test = "dual_stack_lans_are_routed_and_firewalled";
    let Some(lab) = Lab::up(
        test,
        &[
            ("NETLAB_IPV6", "yes"),
            ("NETLAB_LANS", "2"),
            ("NETLAB_HOSTS", "1"),
        ],
    ) else {
        return;
    };
    let wait = Duration::from_secs(2);
    let v6 = lab.var("PUB1_RESPONDER6").to_string();
    let v4 = lab.var("PUB1_RESPONDER").to_string();
    let seen = client(
        &lab,
        "lan1-1",
        "[::]:40011",
        std::slice::from_ref(&v6),
        1,
        wait,
    );
    assert_eq!(
        seen.answers[&v6.parse().unwrap()],
        [format!("[{}]:40011", lab.var("LAN1_1_IP6"))]
    );
    let seen = client(
        &lab,
        "lan1-1",
        "0.0.0.0:40012",
        std::slice::from_ref(&v4),
        1,
        wait,
    );
    assert_eq!(
        port_at(&seen.answers[&v4.parse().unwrap()][0], lab.ip("gw1")),
        40012
    );

    // A closed port of a public host refuses; a LAN host's does not answer.
    let closed = format!("[{}]:9", lab.var("PUB1_IP6"));
    let seen = client(
        &lab,
        "lan1-1",
        "[::]:0",
        std::slice::from_ref(&closed),
        1,
        wait,
    );
    assert_eq!(seen.refused, [closed.parse().unwrap()]);
    let lan1 = format!("[{}]:9", lab.var("LAN1_1_IP6"));
    for from in ["pub1", "lan2-1"] {
        let seen = client(
            &lab,
            from,
            "[::]:0",
            std::slice::from_ref(&lan1),
            1,
            Duration::from_millis(500),
        );
        assert!(
            seen.answers.is_empty() && seen.refused.is_empty(),
            "{from} reached {lan1}: {:?} {:?}",
            seen.answers,
            seen.refused
        );
    }
}

/// `NETLAB_LOSS_PUB2=30`: about 30% of the packets are lost each way on
/// pub2's link (so about half the round trips fail), and none on pub1's.
#[test]
fn a_lossy_link_loses_about_what_it_is_told() {
    let test = "a_lossy_link_loses_about_what_it_is_told";
    let Some(lab) = Lab::up(
        test,
        &[
            ("NETLAB_PUBLIC", "2"),
            ("NETLAB_LANS", "1"),
            ("NETLAB_HOSTS", "1"),
            ("NETLAB_LOSS_PUB2", "30"),
        ],
    ) else {
        return;
    };
    let both = [responder(&lab, "pub1"), responder(&lab, "pub2")];
    let count = 200;
    let seen = client_with(
        &lab,
        "lan1-1",
        "0.0.0.0:0",
        &both,
        count,
        Duration::from_secs(1),
        "burst=yes",
    );
    let got = |t: &String| seen.answers.get(&t.parse().unwrap()).map_or(0, Vec::len);
    let (clean, lossy) = (got(&both[0]), got(&both[1]));
    eprintln!(
        "{count} round trips each: {clean} answered on the clean link, {lossy} on the lossy one"
    );
    assert_eq!(clean, count, "the clean link lost packets");
    // 0.7 * 0.7 = 49% expected; the bounds are about 7 standard deviations.
    assert!((50..=150).contains(&lossy), "{lossy} of {count}");
}

// ----------------------------------------------------------------------------- inside the lab

/// Inside the lab: binds the address `NETLAB_TEST_CLIENT` gives, sends
/// `count` queries to each target in turn (waiting for each answer at most
/// `wait_ms`; with `burst=yes`, all queries first and then the answers), and
/// prints `@@ ANSWER TARGET SEEN-AT MICROS` per answer and `@@ REFUSED
/// TARGET` when an ICMP port unreachable came back instead.
#[test]
#[ignore = "runs inside the lab, started by the other tests"]
fn udp_client() {
    let Ok(spec) = std::env::var(CLIENT_ENV) else {
        eprintln!("udp_client: nothing to do outside the lab");
        return;
    };
    let kv: HashMap<&str, &str> = spec
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect();
    let socket = UdpSocket::bind(kv["bind"]).expect("bind");
    let wait = Duration::from_millis(kv["wait_ms"].parse().expect("wait_ms"));
    let count: usize = kv["count"].parse().expect("count");
    let mut buf = [0u8; 512];
    for target in kv["to"].split(',') {
        let target: SocketAddr = target.parse().expect("target");
        // Connected, so that an ICMP port unreachable shows as a refusal
        // (and only the target's answers arrive); the local port stays. A
        // target without a route fails here: that is silence.
        if socket.connect(target).is_err() {
            continue;
        }
        if kv.get("burst") == Some(&"yes") {
            // All queries first (1 ms apart), then every answer until
            // `wait` has passed without one.
            for n in 0..count {
                let _ = socket.send(format!("q{n}").as_bytes());
                std::thread::sleep(Duration::from_millis(1));
            }
            socket.set_read_timeout(Some(wait)).expect("timeout");
            while let Ok(len) = socket.recv(&mut buf) {
                println!(
                    "@@ ANSWER {target} {} 0",
                    String::from_utf8_lossy(&buf[..len])
                );
            }
            continue;
        }
        for n in 0..count {
            let query = format!("q{n}");
            let sent = Instant::now();
            if let Err(e) = socket.send(query.as_bytes()) {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    println!("@@ REFUSED {target}");
                }
                continue;
            }
            socket.set_read_timeout(Some(wait)).expect("timeout");
            match socket.recv(&mut buf) {
                Ok(len) => println!(
                    "@@ ANSWER {target} {} {}",
                    String::from_utf8_lossy(&buf[..len]),
                    sent.elapsed().as_micros()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    println!("@@ REFUSED {target}");
                }
                Err(_) => {}
            }
        }
    }
}
