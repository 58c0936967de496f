//! I/O: Cicada's side of a row: floods, pipelined sends, round trips.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cicada::{PeerAddr, PeerConfig, SwarmPeer};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::task::JoinSet;

use super::{peer, R};

/// Unconfirmed one-hop datagrams per second as `b` receives them (from
/// its first to its last, as for the raw flood), and the fraction of the
/// `count` sent that arrived.
pub(super) async fn datagram_throughput(
    a: &Arc<SwarmPeer>,
    b: &Arc<SwarmPeer>,
    to: &PeerAddr,
    size: usize,
    count: usize,
) -> R<(f64, f64)> {
    let reader = {
        let b = b.clone();
        tokio::spawn(async move {
            let (mut n, mut first, mut last) = (0usize, None, Instant::now());
            while let Ok(Some(_)) = b.recv_timeout(Duration::from_millis(300)).await {
                last = Instant::now();
                first.get_or_insert(last);
                n += 1;
            }
            (n, first, last)
        })
    };
    send_datagrams(a, to, size, count).await?;
    let (n, first, last) = reader.await.map_err(|e| e.to_string())?;
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let rate = if secs > 0.0 { n as f64 / secs } else { 0.0 };
    Ok((rate, n as f64 / count as f64))
}

/// Sends `count` unconfirmed datagrams of `size` bytes from `a` to `to`
/// back to back, yielding every 64 as the raw flood does.
pub(super) async fn send_datagrams(
    a: &SwarmPeer,
    to: &PeerAddr,
    size: usize,
    count: usize,
) -> R<()> {
    let payload = vec![0x5au8; size];
    for i in 0..count {
        a.send_datagram(to, &payload)
            .await
            .map_err(|e| e.to_string())?;
        if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    Ok(())
}

/// Confirmed one-hop sends per second (256 in flight), and the fraction confirmed.
pub(super) async fn throughput(
    a: &Arc<SwarmPeer>,
    b: &Arc<SwarmPeer>,
    to: PeerAddr,
    size: usize,
    count: usize,
) -> R<(f64, f64)> {
    let reader = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while n < count {
                match tokio::time::timeout(Duration::from_secs(10), b.recv()).await {
                    Ok(Ok(_)) => n += 1,
                    _ => break,
                }
            }
            n
        })
    };
    let start = Instant::now();
    let (ok, first_error) = pipelined_sends(a, &to, size, count).await;
    let secs = start.elapsed().as_secs_f64();
    let received = reader.await.map_err(|e| e.to_string())?;
    if ok != count || received != count {
        println!(
            "  !! {size} B: {ok} confirmed, {received} received of {count}; first error: {}",
            first_error.unwrap_or_default()
        );
    }
    Ok((ok as f64 / secs, ok as f64 / count as f64))
}

/// Confirmed sends the throughput rows keep in flight: 256, or
/// `CICADA_BENCH_WINDOW` (at least 1).
pub(super) fn window() -> usize {
    std::env::var("CICADA_BENCH_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256usize)
        .max(1)
}

/// Two peers of configuration `cfg`, one hop apart and settled; and the
/// address of the second.
pub(super) async fn pair(cfg: PeerConfig) -> R<(Arc<SwarmPeer>, Arc<SwarmPeer>, PeerAddr)> {
    let a = Arc::new(peer(cfg.clone()).await?);
    let b = Arc::new(peer(cfg).await?);
    b.connect(
        a.listener().map_err(|e| e.to_string())?,
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b_addr = b.listener().map_err(|e| e.to_string())?;
    Ok((a, b, b_addr))
}

/// Sends `count` one-hop messages of `size` bytes from `a` to `to`, 256 in
/// flight (`CICADA_BENCH_WINDOW` sets another number); returns how many
/// were confirmed and the first error.
///
/// The sends in flight are futures polled together by this one task (as
/// the raw flood's sender is one task), not a task each: spawning a task
/// per send costs tokio 1.4 µs per message on a current-thread runtime and
/// 3.7 µs on two workers on a 2-core VM, a third of what the row measures.
/// `task_per_send` spawns one per send instead, for comparison.
pub(super) async fn pipelined_sends(
    a: &Arc<SwarmPeer>,
    to: &PeerAddr,
    size: usize,
    count: usize,
) -> (usize, Option<String>) {
    if std::env::var_os("CICADA_BENCH_TASK_PER_SEND").is_some() {
        return task_per_send(a, to, size, count).await;
    }
    let payload = bytes::Bytes::from(vec![0x5au8; size]);
    let window = window();
    let mut inflight = FuturesUnordered::new();
    let mut ok = 0usize;
    let mut first_error = None;
    let mut tally = |r: Option<cicada::Result<cicada::Delivery>>| match r {
        Some(Ok(_)) => ok += 1,
        Some(Err(e)) => {
            first_error.get_or_insert(e.to_string());
        }
        None => {}
    };
    for _ in 0..count {
        if inflight.len() >= window {
            tally(inflight.next().await);
        }
        inflight.push(a.send(to.clone(), payload.clone()));
    }
    while !inflight.is_empty() {
        tally(inflight.next().await);
    }
    (ok, first_error)
}

/// [`pipelined_sends`] with a task spawned for each send (with
/// `CICADA_BENCH_TASK_PER_SEND` set), to see what a task per send costs.
pub(super) async fn task_per_send(
    a: &Arc<SwarmPeer>,
    to: &PeerAddr,
    size: usize,
    count: usize,
) -> (usize, Option<String>) {
    let payload = bytes::Bytes::from(vec![0x5au8; size]);
    let mut inflight = JoinSet::new();
    let mut ok = 0usize;
    let mut first_error = None;
    let mut tally =
        |r: Option<Result<cicada::Result<cicada::Delivery>, tokio::task::JoinError>>| match r {
            Some(Ok(Ok(_))) => ok += 1,
            Some(Ok(Err(e))) => {
                first_error.get_or_insert(e.to_string());
            }
            _ => {}
        };
    for _ in 0..count {
        if inflight.len() >= 256 {
            tally(inflight.join_next().await);
        }
        let (a, p, to) = (a.clone(), payload.clone(), to.clone());
        inflight.spawn(async move { a.send(to, p).await });
    }
    while !inflight.is_empty() {
        tally(inflight.join_next().await);
    }
    (ok, first_error)
}

/// Times (seconds) of confirmed one-hop sends of 64 bytes: data there,
/// confirmation back.
pub(super) async fn latency(a: &SwarmPeer, to: PeerAddr, n: usize) -> R<Vec<f64>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        a.send(&to, vec![7u8; 64])
            .await
            .map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times)
}
