//! I/O: the swarm rows and the memory of idle peers, in one process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cicada::{Hash, PeerConfig, Received, SwarmPeer};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::{fast, peer, R};

/// Summed over `peers`: datagrams sent, datagrams dropped or refused for
/// any reason (core and driver), peers declared failed, and hints sent to
/// nodes whose successor list was stale (a send overshot its key).
pub(super) async fn swarm_counts(peers: &[Arc<SwarmPeer>]) -> [u64; 4] {
    let mut c = [0u64; 4];
    for p in peers {
        if let Ok(s) = p.stats().await {
            let k = &s.core;
            c[0] += k.datagrams_out;
            c[1] += k.dropped_malformed
                + k.dropped_version
                + k.dropped_unexpected
                + k.dropped_overload
                + k.dropped_hop_limit
                + k.reassembly_refused
                + k.undeliverable
                + k.dropped_rate_limited
                + k.dropped_amplification
                + k.dropped_bad_identity
                + s.link_errors
                + s.recv_overflow;
            c[2] += k.peers_failed;
            c[3] += k.stale_successor_hints;
        }
    }
    c
}

/// Lookups, and routed sends, the swarm row starts at once.
pub(super) const SWARM_OPS: usize = 4000;

pub(super) async fn swarm_rows(n: usize) -> R<Vec<(String, Value)>> {
    let mut peers = Vec::with_capacity(n);
    for i in 0..n {
        let p = Arc::new(peer(fast()).await?);
        if i > 0 {
            let first: &Arc<SwarmPeer> = &peers[0];
            p.connect(
                first.listener().map_err(|e| e.to_string())?,
                Duration::from_secs(10),
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        peers.push(p);
    }
    tokio::time::sleep(Duration::from_secs(4)).await; // stabilize and fix fingers
    let ops = SWARM_OPS;
    let start = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..ops {
        let p = peers[i % n].clone();
        set.spawn(async move { p.get_route(Hash::of(i.to_be_bytes())).await.map(|r| r.hops) });
    }
    let mut hops = 0u64;
    while let Some(r) = set.join_next().await {
        hops += r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())? as u64;
    }
    let lookups = ops as f64 / start.elapsed().as_secs_f64();
    let before = swarm_counts(&peers).await;
    let start = Instant::now();
    for i in 0..ops {
        let (p, q) = (peers[i % n].clone(), peers[(i * 7 + 3) % n].clone());
        let to = q.listener().map_err(|e| e.to_string())?;
        set.spawn(async move { p.send(to, vec![1u8; 100]).await.map(|d| d.hops) });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    let sends = ops as f64 / start.elapsed().as_secs_f64();
    // What the sends cost on the wire and what went wrong on the way: a
    // slow row (a send that waited for a retry) says why.
    let after = swarm_counts(&peers).await;
    let counts: [u64; 4] = std::array::from_fn(|i| after[i] - before[i]);
    // Drain what the sends delivered, then time one broadcast to all.
    for p in &peers {
        while p.try_recv().ok().flatten().is_some() {}
    }
    let start = Instant::now();
    peers[0]
        .broadcast(vec![2u8; 100])
        .await
        .map_err(|e| e.to_string())?;
    let mut waits = JoinSet::new();
    for p in peers.iter().skip(1) {
        let p = p.clone();
        waits.spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(5), p.recv()).await {
                    Ok(Ok(Received { data, .. })) if data.first() == Some(&2) => {
                        return Some(Instant::now())
                    }
                    Ok(Ok(_)) => continue,
                    _ => return None,
                }
            }
        });
    }
    let mut last = start;
    let mut reached = 0;
    while let Some(r) = waits.join_next().await {
        if let Ok(Some(t)) = r {
            reached += 1;
            last = last.max(t);
        }
    }
    let bcast_ms = last.duration_since(start).as_secs_f64() * 1e3;
    println!(
        "{:<34} {:>10.0} /s   (mean hops {:.2})",
        format!("swarm of {n}: lookups"),
        lookups,
        hops as f64 / ops as f64
    );
    println!(
        "{:<34} {:>10.0} /s   ({} datagrams, {} dropped, {} peers failed, {} stale-successor hints)",
        format!("swarm of {n}: routed sends"),
        sends,
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    );
    println!(
        "{:<34} {:>10.1} ms  ({reached}/{} reached)",
        format!("swarm of {n}: broadcast to all"),
        bcast_ms,
        n - 1
    );
    for p in &peers {
        p.close().await;
    }
    Ok(vec![
        ("swarm_peers".into(), json!(n)),
        ("swarm_lookups_per_s".into(), json!(lookups)),
        (
            "swarm_lookup_hops_mean".into(),
            json!(hops as f64 / ops as f64),
        ),
        ("swarm_sends_per_s".into(), json!(sends)),
        ("swarm_sends_datagrams".into(), json!(counts[0])),
        ("swarm_sends_dropped".into(), json!(counts[1])),
        ("swarm_sends_peers_failed".into(), json!(counts[2])),
        ("swarm_sends_stale_hints".into(), json!(counts[3])),
        ("swarm_broadcast_ms".into(), json!(bcast_ms)),
        ("swarm_broadcast_reached".into(), json!(reached)),
    ])
}

/// Resident bytes of this process now (0 where unknown).
pub(super) fn rss_bytes() -> u64 {
    crate::procfs::status_value("VmRSS", 0).map_or(0, |kb| kb * 1024)
}

/// [`idle_rss`] in a process of its own (this program, `bench --idle-only`).
/// In the bench's own process the peers would take memory that the rows
/// before freed and the allocator kept, and the row would read a fraction
/// of what a fresh process reads.
pub(super) fn idle_rss_alone(n: usize, current_thread: bool, keyed: bool) -> R<f64> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(exe);
    child.args(["bench", "--idle-only", "--idle", &n.to_string()]);
    if keyed {
        child.arg("--idle-keyed");
    }
    if current_thread {
        child.arg("--current-thread");
    }
    let out = child
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start the memory row's process: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .last()
        .and_then(|l| l.trim().parse::<f64>().ok())
        .filter(|_| out.status.success())
        .ok_or_else(|| format!("the memory row's process failed ({}): {text}", out.status))
}

/// Resident bytes per peer of `n` idle peers that form one swarm (a
/// private one, every datagram sealed, when `keyed`).
pub(super) async fn idle_rss(n: usize, keyed: bool) -> R<f64> {
    let before = rss_bytes();
    let mut peers: Vec<SwarmPeer> = Vec::with_capacity(n);
    let mut cfg = PeerConfig::default();
    if keyed {
        cfg = cfg.swarm_key(cicada::SwarmKey::generate().map_err(|e| e.to_string())?);
    }
    for i in 0..n {
        let p = peer(cfg.clone()).await?;
        if i > 0 {
            p.connect(
                peers[i / 2].listener().map_err(|e| e.to_string())?,
                Duration::from_secs(10),
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        peers.push(p);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let per = rss_bytes().saturating_sub(before) as f64 / n as f64;
    for p in &peers {
        p.close().await;
    }
    Ok(per)
}
