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
