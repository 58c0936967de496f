//! I/O: the demo's checks of the running peers: the ring, a workload and its table.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use cicada::Hash;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::Peer;

/// A small xorshift generator: the demo's choices need no more.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub(super) fn key(&mut self) -> Hash {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        Hash::from_bytes(b)
    }
}

// ------------------------------------------------------------------ results

/// What one workload measured.
#[derive(Default, Clone)]
pub(super) struct Workload {
    pub(super) lookups: usize,
    pub(super) lookups_ok: usize,
    pub(super) hops: Vec<u32>,
    pub(super) sends: usize,
    pub(super) sends_delivered: usize,
    pub(super) duplicates_seen: usize,
    pub(super) broadcast_receivers: usize,
    pub(super) broadcast_reached: usize,
    pub(super) broadcast_messages: u64,
    pub(super) broadcast_origin: Option<usize>,
    /// What went wrong, one line each (the first few).
    pub(super) failures: Vec<String>,
}

impl Workload {
    pub(super) fn fail(&mut self, what: String) {
        if self.failures.len() < 10 {
            self.failures.push(what);
        }
    }
    pub(super) fn lookup_rate(&self) -> f64 {
        ratio(self.lookups_ok, self.lookups)
    }
    pub(super) fn send_rate(&self) -> f64 {
        ratio(self.sends_delivered, self.sends)
    }
    pub(super) fn coverage(&self) -> f64 {
        ratio(self.broadcast_reached, self.broadcast_receivers)
    }
    pub(super) fn hops_mean(&self) -> f64 {
        if self.hops.is_empty() {
            return 0.0;
        }
        self.hops.iter().map(|&h| h as f64).sum::<f64>() / self.hops.len() as f64
    }
    pub(super) fn hops_p99(&self) -> u32 {
        let mut h = self.hops.clone();
        h.sort_unstable();
        match h.len() {
            0 => 0,
            n => h[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1],
        }
    }
    pub(super) fn all_ok(&self) -> bool {
        self.lookups_ok == self.lookups
            && self.sends_delivered == self.sends
            && self.broadcast_reached == self.broadcast_receivers
    }
    pub(super) fn json(&self) -> serde_json::Map<String, Value> {
        let v = json!({
            "lookups": self.lookups,
            "lookup_success_rate": self.lookup_rate(),
            "hops_mean": self.hops_mean(),
            "hops_p99": self.hops_p99(),
            "sends": self.sends,
            "send_delivered_rate": self.send_rate(),
            "duplicates_delivered": self.duplicates_seen,
            "broadcast_coverage": self.coverage(),
            "broadcast_messages": self.broadcast_messages,
            "failures": self.failures,
        });
        match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }
}

pub(super) fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn print_table(
    n: usize,
    kills: usize,
    join_s: f64,
    heal_s: f64,
    ring: bool,
    ring_after: bool,
    b: &Workload,
    a: &Workload,
) {
    let yes = |x: bool| if x { "yes" } else { "NO" }.to_string();
    let rate = |ok: usize, all: usize| format!("{ok}/{all} ({:.0}%)", 100.0 * ratio(ok, all));
    let rows: Vec<(&str, String, String)> = vec![
        (
            "nodes",
            n.to_string(),
            format!("{} ({kills} killed)", n - kills),
        ),
        ("ring correct", yes(ring), yes(ring_after)),
        (
            "time to correct ring",
            format!("{join_s:.1} s"),
            format!("{heal_s:.1} s"),
        ),
        (
            "lookups correct",
            rate(b.lookups_ok, b.lookups),
            rate(a.lookups_ok, a.lookups),
        ),
        (
            "lookup hops mean / p99",
            format!("{:.2} / {}", b.hops_mean(), b.hops_p99()),
            format!("{:.2} / {}", a.hops_mean(), a.hops_p99()),
        ),
        (
            "sends delivered once",
            rate(b.sends_delivered, b.sends),
            rate(a.sends_delivered, a.sends),
        ),
        (
            "broadcast coverage",
            rate(b.broadcast_reached, b.broadcast_receivers),
            rate(a.broadcast_reached, a.broadcast_receivers),
        ),
        (
            "broadcast messages",
            b.broadcast_messages.to_string(),
            a.broadcast_messages.to_string(),
        ),
    ];
    println!();
    println!("{:<24} {:>18} {:>18}", "", "before churn", "after churn");
    println!("{}", "-".repeat(62));
    for (k, x, y) in rows {
        println!("{k:<24} {x:>18} {y:>18}");
    }
    println!();
}

/// The true ring of `live`: their indices sorted by id.
pub(super) fn sorted(peers: &[Peer], live: &[usize]) -> Vec<usize> {
    let mut s = live.to_vec();
    s.sort_by_key(|&i| peers[i].id);
    s
}

/// Polls `peers` on every live node until every successor and predecessor
/// is the true one, or until `within`.
pub(super) fn wait_ring(
    peers: &mut [Peer],
    live: &[usize],
    within: Duration,
    stop: &AtomicBool,
) -> bool {
    let ring = sorted(peers, live);
    let m = ring.len();
    let pb = ProgressBar::new(m as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:40.green/blue}] {pos}/{len} nodes with the right neighbours",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix("ring");
    let deadline = Instant::now() + within;
    let ok = loop {
        let marks: Vec<usize> = ring.iter().map(|&i| peers[i].len()).collect();
        for &i in &ring {
            peers[i].cmd("peers");
        }
        let mut right = 0;
        for (k, &i) in ring.iter().enumerate() {
            let succ = &peers[ring[(k + 1) % m]].addr;
            let pred = &peers[ring[(k + m - 1) % m]].addr;
            let v = peers[i].wait_for(marks[k], Duration::from_secs(3), |v| v["event"] == "peers");
            if let Some(v) = v {
                if v["successor"].as_str() == Some(succ) && v["predecessor"].as_str() == Some(pred)
                {
                    right += 1;
                }
            }
        }
        pb.set_position(right as u64);
        if right == m {
            break true;
        }
        if Instant::now() >= deadline || stop.load(Ordering::SeqCst) {
            break false;
        }
        thread::sleep(Duration::from_millis(200));
    };
    pb.finish_and_clear();
    ok
}

/// The live node that owns `key`: the first id at or after it.
pub(super) fn owner(peers: &[Peer], ring: &[usize], key: &Hash) -> usize {
    ring.iter()
        .copied()
        .find(|&i| peers[i].id >= *key)
        .unwrap_or(ring[0])
}

pub(super) fn workload(peers: &mut [Peer], live: &[usize], rng: &mut Rng, tag: &str) -> Workload {
    let ring = sorted(peers, live);
    let mut w = Workload::default();
    let long = Duration::from_secs(15);

    // Lookups: one random key from every node.
    let mut asked = Vec::new();
    for &i in live {
        let key = rng.key();
        let mark = peers[i].len();
        peers[i].cmd(&format!("lookup {key}"));
        asked.push((i, key, mark));
    }
    for (i, key, mark) in asked {
        w.lookups += 1;
        let ks = key.to_string();
        let v = peers[i].wait_for(mark, long, |v| {
            v["event"] == "lookup" && v["key"] == ks.as_str()
        });
        let want = peers[owner(peers, &ring, &key)].addr.as_str();
        match v {
            Some(v) if v["ok"] == true && v["owner"].as_str() == Some(want) => {
                w.lookups_ok += 1;
                if let Some(h) = v["hops"].as_u64() {
                    w.hops.push(h as u32);
                }
            }
            other => w.fail(format!(
                "lookup {} from {} (owner {want}): {}",
                key.short(),
                peers[i].addr,
                other.map_or("no answer".into(), |v| v.to_string())
            )),
        }
    }

    // Sends between random pairs; every third with two duplicates.
    let pairs = live.len().max(8);
    let marks: Vec<usize> = peers.iter().map(|p| p.len()).collect();
    let mut sent = Vec::new();
    for k in 0..pairs {
        let a = live[rng.below(live.len())];
        let mut b = live[rng.below(live.len())];
        while b == a {
            b = live[rng.below(live.len())];
        }
        let data = format!("demo-{tag}-send-{k}");
        let target = peers[b].addr.clone();
        if k % 3 == 0 {
            peers[a].cmd(&format!("send-dup 2 {target} {data}"));
        } else {
            peers[a].cmd(&format!("send {target} {data}"));
        }
        sent.push((a, b, data));
    }
    let mut confirmed = Vec::new();
    for (a, b, data) in &sent {
        let d = data.clone();
        let v = peers[*a].wait_for(marks[*a], long, move |v| {
            v["event"] == "sent" && v["data"] == d.as_str()
        });
        confirmed.push(v);
        let d = data.clone();
        peers[*b].wait_for(marks[*b], Duration::from_secs(2), move |v| {
            v["event"] == "recv" && v["data"] == d.as_str()
        });
    }
    // A moment for late duplicates to show themselves.
    thread::sleep(Duration::from_millis(300));
    for ((a, b, data), event) in sent.iter().zip(confirmed) {
        w.sends += 1;
        let got = peers[*b].count(marks[*b], |v| {
            v["event"] == "recv" && v["data"] == data.as_str()
        });
        if got > 1 {
            w.duplicates_seen += got - 1;
        }
        let ok = event.as_ref().is_some_and(|v| v["ok"] == true);
        if ok && got == 1 {
            w.sends_delivered += 1;
        } else {
            let (from, to) = (peers[*a].addr.clone(), peers[*b].addr.clone());
            w.fail(format!(
                "send {data} {from} -> {to}: received {got} times; sender said {}",
                event.map_or("nothing".into(), |v| v.to_string())
            ));
        }
    }

    // One broadcast from a random node.
    let origin = live[rng.below(live.len())];
    let before = broadcast_sent(peers, live);
    let marks: Vec<usize> = peers.iter().map(|p| p.len()).collect();
    let data = format!("demo-{tag}-broadcast");
    peers[origin].cmd(&format!("broadcast {data}"));
    let others: Vec<usize> = live.iter().copied().filter(|&i| i != origin).collect();
    w.broadcast_receivers = others.len();
    let deadline = Instant::now() + Duration::from_secs(10);
    for &i in &others {
        let left = deadline.saturating_duration_since(Instant::now());
        let d = data.clone();
        peers[i].wait_for(marks[i], left, move |v| {
            v["event"] == "recv" && v["data"] == d.as_str()
        });
    }
    thread::sleep(Duration::from_millis(300));
    for &i in &others {
        if peers[i].count(marks[i], |v| {
            v["event"] == "recv" && v["data"] == data.as_str()
        }) == 1
        {
            w.broadcast_reached += 1;
        }
    }
    for &i in &others {
        let got = peers[i].count(marks[i], |v| {
            v["event"] == "recv" && v["data"] == data.as_str()
        });
        if got != 1 {
            let addr = peers[i].addr.clone();
            w.fail(format!("broadcast {data} reached {addr} {got} times"));
        }
    }
    let after = broadcast_sent(peers, live);
    w.broadcast_messages = after.saturating_sub(before);
    w.broadcast_origin = Some(origin);
    w
}

/// The sum of the live nodes' `broadcast_sent` counters.
pub(super) fn broadcast_sent(peers: &mut [Peer], live: &[usize]) -> u64 {
    let marks: Vec<usize> = live.iter().map(|&i| peers[i].len()).collect();
    for &i in live {
        peers[i].cmd("stats");
    }
    live.iter()
        .zip(marks)
        .filter_map(|(&i, m)| {
            peers[i].wait_for(m, Duration::from_secs(3), |v| v["event"] == "stats")
        })
        .filter_map(|v| v["broadcast_sent"].as_u64())
        .sum()
}
