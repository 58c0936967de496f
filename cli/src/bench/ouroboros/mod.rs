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
//!
//! Here the rows; `tools.rs` the C tools and a raw flow; `serve.rs` the
//! receiving process; `classes.rs` the traffic-class row.

mod classes;
mod serve;
mod tools;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cicada::{Hooks, PeerAddr, PeerConfig, SwarmPeer};
use serde_json::{json, Map, Value};

use super::{median, percentiles, pipelined_sends, send_datagrams, R};

pub use classes::classes_row;
pub use serve::serve;
use serve::Receiver;
use tools::{
    counted_by_ocbr, ocbr_flood, oping_run, raw_flood, CServer, RawFlow, OCBR_TURNS, OPING_TURNS,
};

/// The two peers' configuration. The per-source rate limits (400 requests/s
/// and 100,000 data datagrams/s by default, defences against floods) are
/// lifted: the row measures the data path between two trusted peers, as
/// `ocbr` does; with the data limit on, runs longer than its burst of
/// 20,000 would stall for a retry.
/// Prints the heading of a table of Ouroboros rows; where no IRMd answers,
/// says so, marks `key` skipped in the report and returns false.
fn heading_or_skip(
    title: &str,
    columns: [&str; 2],
    key: &str,
    report: &mut Map<String, Value>,
) -> bool {
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        title, columns[0], columns[1], "ratio"
    );
    if cicada::ouroboros::irmd_running() {
        return true;
    }
    println!(
        "  SKIPPED: no Ouroboros IRMd answers on {} (docs/ouroboros.md)",
        cicada::ouroboros::IRM_SOCK_PATH
    );
    report.insert(key.into(), json!("skipped: no IRMd"));
    false
}

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

/// The Ouroboros rows; a SKIPPED line when no IRMd answers.
pub async fn rows(
    messages: usize,
    round_trips: usize,
    layer: &str,
    datagrams: bool,
    report: &mut Map<String, Value>,
) -> R<()> {
    println!();
    let title = format!("one hop over Ouroboros ({layer})");
    if !heading_or_skip(&title, ["cicada", "C tool"], "ouroboros", report) {
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
