//! `cicada node --metrics`: Prometheus metrics over HTTP, scraped and
//! parsed as a Prometheus server would.

use super::*;

/// `GET path` on `url`'s host; the status line and the body.
fn http_get(url: &str, path: &str) -> (String, String) {
    use std::io::Read;
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut conn = std::net::TcpStream::connect(&host).expect("connect to the metrics server");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// Samples of an OpenMetrics text: `name{labels}` to value. Every line is
/// a comment or a sample, and the text ends with `# EOF`.
fn samples(text: &str) -> std::collections::HashMap<String, f64> {
    assert!(text.trim_end().ends_with("# EOF"), "no # EOF: {text}");
    let mut m = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        m.insert(name.to_string(), value);
    }
    m
}

#[test]
fn a_node_serves_metrics_that_move_with_its_traffic() {
    let mut flags: Vec<&str> = NODE_FLAGS.to_vec();
    flags.extend(["--metrics", "127.0.0.1:0"]);
    let a = Node::start_with(0, None, &flags);
    let mut b = Node::start_with(0, Some(&a.addr.clone()), &flags);
    let url = |n: &Node| {
        n.wait_for(0, Duration::from_secs(10), |v| v["event"] == "metrics")
            .expect("a metrics event")["url"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (a_url, b_url) = (url(&a), url(&b));
    b.wait_for(0, Duration::from_secs(10), |v| v["event"] == "joined")
        .expect("joined");
    thread::sleep(Duration::from_millis(500));

    let (status, body) = http_get(&b_url, "/metrics");
    assert!(status.contains("200"), "{status}");
    let before = samples(&body);
    let confirmed = "cicada_sends_confirmed_total";
    assert_eq!(before.get(confirmed), Some(&0.0), "{body}");
    let from = b.len();
    for i in 0..5 {
        b.cmd(&format!("send {} m{i}", a.addr));
    }
    let sent = b.wait_n(from, Duration::from_secs(10), 5, |v| {
        v["event"] == "sent" && v["ok"] == true
    });
    assert_eq!(sent.len(), 5);
    b.cmd(&format!("lookup {}", a.id));
    b.wait_for(from, Duration::from_secs(10), |v| v["event"] == "lookup")
        .expect("lookup answered");

    let after = samples(&http_get(&b_url, "/metrics").1);
    assert_eq!(after[confirmed], 5.0);
    assert!(after["cicada_datagrams_out_total"] >= before["cicada_datagrams_out_total"] + 5.0);
    assert!(after["cicada_bytes_out_total"] > before["cicada_bytes_out_total"]);
    assert_eq!(after["cicada_lookup_hops_count"], 1.0);
    assert!(after["cicada_neighbours{path=\"direct\"}"] >= 1.0);
    assert!(after["cicada_ring_size_estimate"] >= 2.0);
    assert_eq!(after["cicada_sends_failed_total{reason=\"timeout\"}"], 0.0);
    let received = samples(&http_get(&a_url, "/metrics").1);
    assert_eq!(received["cicada_messages_received_total"], 5.0);

    let (status, _) = http_get(&b_url, "/nothing");
    assert!(status.contains("404"), "{status}");
}

/// `cicada demo --metrics`: every surviving peer serves its metrics while
/// the demo holds, its counters account for the demo's workload, and an
/// interrupt stops the endpoints with the peers.
#[test]
fn demo_with_metrics_serves_every_survivors_counters() {
    use std::sync::mpsc;
    let _heavy = heavy();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_cicada"))
        .args(["demo", "--nodes", "6", "--json", "--seed", "9"])
        .args(["--metrics", "--hold", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cicada demo");
    let stdout = demo.stdout.take().expect("piped stdout");
    let (lines, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // The summary's JSON, printed before the hold.
    let deadline = Instant::now() + Duration::from_secs(60);
    let summary: Value = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the demo printed its JSON summary within 60 s");
        if line.starts_with('{') {
            break serde_json::from_str(&line).expect("the summary is JSON");
        }
    };
    assert_eq!(summary["ok"], true, "{summary}");
    let peers = summary["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 6);
    let survivors: Vec<&Value> = peers.iter().filter(|p| p["killed"] == false).collect();
    assert_eq!(survivors.len(), 5, "{summary}");
    let (mut received, mut confirmed) = (0.0, 0.0);
    for p in &survivors {
        let url = p["metrics"]
            .as_str()
            .unwrap_or_else(|| panic!("no metrics url: {p}"));
        let (status, body) = http_get(url, "/metrics");
        assert!(status.contains("200"), "{url}: {status}");
        let m = samples(&body);
        received += m["cicada_messages_received_total"];
        confirmed += m["cicada_sends_confirmed_total"];
        assert!(m["cicada_datagrams_in_total"] > 0.0, "{url}");
        assert!(m["cicada_ring_size_estimate"] >= 2.0, "{url}");
    }
    // The survivors sent every send of the second workload (each
    // confirmed) and received each of them, and each survivor but the
    // origin received the broadcast; the first workload adds more.
    let after = &summary["after_churn"];
    let sends = after["sends"].as_f64().expect("sends");
    assert_eq!(after["send_delivered_rate"], 1.0, "{summary}");
    assert!(sends > 0.0);
    assert!(confirmed >= sends, "{confirmed} confirmed < {sends} sends");
    assert!(
        received >= sends + (survivors.len() - 1) as f64,
        "{received} received < {sends} sends + the broadcast"
    );
    // An interrupt stops every peer, and so their endpoints.
    let url = survivors[0]["metrics"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let _ = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        match demo.try_wait() {
            Ok(Some(s)) => break s.code(),
            _ if Instant::now() >= deadline => {
                let _ = demo.kill();
                panic!("the demo did not end on SIGTERM");
            }
            _ => thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(code, Some(130));
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    assert!(
        std::net::TcpStream::connect(host).is_err(),
        "{url} still served after the demo ended"
    );
}
