//! I/O: the traffic-class row: round trips through a flood, by flows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cicada::{Hooks, PeerAddr, SwarmPeer};
use serde_json::{json, Map, Value};

use super::super::{percentiles, R};
use super::serve::Receiver;
use super::{cfg, heading_or_skip, observes};

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
    let title = format!("routing during a flood ({layer}, {rate}/s)");
    if !heading_or_skip(
        &title,
        ["one flow", "two classes"],
        "ouroboros_classes",
        report,
    ) {
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
pub(super) const FLOOD_BURST: u64 = 256;

/// What one setting of [`classes_row`] measured: (p50, p99) round trips in
/// seconds idle and during the flood, round trips that timed out (1 s),
/// datagrams sent a second by the flood.
pub(super) struct ClassesTurn {
    idle: (f64, f64),
    busy: (f64, f64),
    lost: usize,
    flood_rate: f64,
}

pub(super) async fn classes_turn(
    layer: &str,
    two: bool,
    probes: usize,
    rate: u64,
) -> R<ClassesTurn> {
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
