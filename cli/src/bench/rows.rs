//! I/O: the one-hop UDP rows, plain and keyed, each beside its baseline.

use serde_json::{json, Value};

use super::sends::pair;
use super::swarm::{idle_rss_alone, swarm_rows};
use super::turns::{latency_turns, percentiles, throughput_turns, Baseline, LatencyBase, Sends};
use super::{fast, BenchArgs, R};

pub(super) async fn udp_rows(
    args: &BenchArgs,
    report: &mut serde_json::Map<String, Value>,
) -> R<()> {
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "one hop on loopback", "cicada", "raw UDP", "ratio"
    );

    // Two peers, one hop apart.
    let (a, b, b_addr) = pair(fast()).await?;

    for size in [64usize, 1024, 16 * 1024] {
        let t = throughput_turns(
            (&a, &b, &b_addr),
            size,
            args.messages,
            Sends::Confirmed,
            Baseline::RawUdp { unbatched: true },
        )
        .await?;
        rate_row(&format!("throughput {size} B"), t.ours, t.base);
        let unbatched = t.unbatched.unwrap_or(f64::NAN);
        rate_row("  vs unbatched UDP (send_to each)", t.ours, unbatched);
        let key = size_key(size);
        let names = [
            "throughput_msgs_per_s",
            "raw_udp_msgs_per_s",
            "throughput_ratio",
            "confirmed_fraction",
        ];
        t.record(report, names, key);
        report.insert(
            format!("raw_udp_arrived_fraction_{key}"),
            json!(t.base_reached),
        );
        report.insert(
            format!("raw_udp_unbatched_msgs_per_s_{key}"),
            json!(unbatched),
        );
        report.insert(
            format!("throughput_unbatched_ratio_{key}"),
            json!(t.ours / unbatched),
        );
    }

    // Unconfirmed datagrams: like for like with the raw flood, which no
    // one acknowledges either. Counted at the receiver.
    for size in [64usize, 1024] {
        let t = throughput_turns(
            (&a, &b, &b_addr),
            size,
            args.messages,
            Sends::Datagrams,
            Baseline::RawUdp { unbatched: false },
        )
        .await?;
        rate_row(&format!("datagrams {size} B (unconfirmed)"), t.ours, t.base);
        let names = [
            "datagram_msgs_per_s",
            "datagram_raw_udp_msgs_per_s",
            "datagram_throughput_ratio",
            "datagram_arrived_fraction",
        ];
        t.record(report, names, size_key(size));
    }

    // The pair above has received bursts, and so coalesces arriving runs
    // (UDP_GRO, see cicada::link::Gro), which makes every receive read control
    // messages; peers that have not (most that exchange small messages)
    // receive plainly. Both are measured: the rows below on a fresh pair,
    // this one on the pair that moved the bulk, beside a raw ping-pong
    // whose links coalesce as well.
    let after_bulk = match cicada::link::Gro::from_env() {
        cicada::link::Gro::Off => cicada::link::Gro::Off,
        _ => cicada::link::Gro::On,
    };
    let (bulk_times, bulk_raw_times) =
        latency_turns(&a, &b_addr, args.round_trips, LatencyBase::Raw(after_bulk)).await?;
    let (bulk_raw50, _) = percentiles(bulk_raw_times);
    let (bulk50, _) = percentiles(bulk_times);
    a.close().await;
    b.close().await;
    time_row("round trip p50 (after bulk)", bulk50, bulk_raw50);
    report.insert("latency_after_bulk_p50_us".into(), json!(bulk50 * 1e6));
    report.insert(
        "raw_udp_latency_after_bulk_p50_us".into(),
        json!(bulk_raw50 * 1e6),
    );
    report.insert(
        "latency_after_bulk_p50_ratio".into(),
        json!(bulk50 / bulk_raw50),
    );
    let (a, b, b_addr) = pair(fast()).await?;

    let fresh = LatencyBase::Raw(cicada::link::Gro::from_env());
    let (times, raw_times) = latency_turns(&a, &b_addr, args.round_trips, fresh).await?;
    let (raw50, raw99) = percentiles(raw_times);
    let (p50, p99) = percentiles(times);
    time_row("round trip p50 (64 B)", p50, raw50);
    time_row("round trip p99 (64 B)", p99, raw99);
    report.insert("latency_p50_us".into(), json!(p50 * 1e6));
    report.insert("latency_p99_us".into(), json!(p99 * 1e6));
    report.insert("raw_udp_latency_p50_us".into(), json!(raw50 * 1e6));
    report.insert("raw_udp_latency_p99_us".into(), json!(raw99 * 1e6));
    report.insert("latency_p50_ratio".into(), json!(p50 / raw50));
    report.insert("latency_p99_ratio".into(), json!(p99 / raw99));

    // The same from a task spawned on the runtime, where most
    // applications call from (the rows above run on the thread that
    // called `block_on`, which is not one of the runtime's workers). A
    // caller woken on a worker can make the runtime wake another worker,
    // which this row shows.
    let spawned = {
        let (a, b_addr) = (a.clone(), b_addr.clone());
        let n = args.round_trips;
        tokio::spawn(async move { latency_turns(&a, &b_addr, n, fresh).await })
            .await
            .map_err(|e| e.to_string())??
    };
    let (task_times, task_raw_times) = spawned;
    let (task_raw50, _) = percentiles(task_raw_times);
    let (task50, _) = percentiles(task_times);
    time_row("round trip p50 (from a task)", task50, task_raw50);
    report.insert("latency_task_p50_us".into(), json!(task50 * 1e6));
    report.insert(
        "raw_udp_latency_task_p50_us".into(),
        json!(task_raw50 * 1e6),
    );
    report.insert("latency_task_p50_ratio".into(), json!(task50 / task_raw50));
    a.close().await;
    b.close().await;

    keyed_rows(args, report).await?;

    let swarm = swarm_rows(args.swarm).await?;
    for (k, v) in &swarm {
        report.insert(k.clone(), v.clone());
    }
    for (keyed, label, key) in [
        (false, "", "rss_per_idle_peer_bytes"),
        (true, ", keyed", "rss_per_idle_keyed_peer_bytes"),
    ] {
        let rss = idle_rss_alone(args.idle, args.current_thread, keyed)?;
        println!(
            "{:<34} {:>10.0} B",
            format!("resident per idle peer ({}{label})", args.idle),
            rss
        );
        report.insert(key.into(), json!(rss));
    }
    Ok(())
}

/// The same one-hop rows between two peers of a private swarm (every
/// datagram sealed with the swarm key), as ratios to an unkeyed pair: each
/// row takes turns with the same row on a fresh unkeyed pair, so that both
/// meet the same load.
pub(super) async fn keyed_rows(
    args: &BenchArgs,
    report: &mut serde_json::Map<String, Value>,
) -> R<()> {
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "private swarm (swarm key)", "keyed", "unkeyed", "ratio"
    );
    let key = cicada::SwarmKey::generate().map_err(|e| e.to_string())?;
    let (a, b, b_addr) = pair(fast().swarm_key(key)).await?;
    let (ua, ub, ub_addr) = pair(fast()).await?;
    for size in [64usize, 1024, 16 * 1024] {
        let t = throughput_turns(
            (&a, &b, &b_addr),
            size,
            args.messages,
            Sends::Confirmed,
            Baseline::Pair((&ua, &ub, &ub_addr)),
        )
        .await?;
        rate_row(&format!("throughput {size} B"), t.ours, t.base);
        let names = [
            "keyed_throughput_msgs_per_s",
            "keyed_unkeyed_msgs_per_s",
            "keyed_throughput_ratio",
            "keyed_confirmed_fraction",
        ];
        t.record(report, names, size_key(size));
    }
    let (times, unkeyed_times) = latency_turns(
        &a,
        &b_addr,
        args.round_trips,
        LatencyBase::Pair(&ua, &ub_addr),
    )
    .await?;
    let (p50, p99) = percentiles(times);
    let (u50, u99) = percentiles(unkeyed_times);
    for (name, k, u) in [("p50", p50, u50), ("p99", p99, u99)] {
        time_row(&format!("round trip {name} (64 B)"), k, u);
        report.insert(format!("keyed_latency_{name}_us"), json!(k * 1e6));
        report.insert(format!("keyed_unkeyed_latency_{name}_us"), json!(u * 1e6));
        report.insert(format!("keyed_latency_{name}_ratio"), json!(k / u));
    }
    ua.close().await;
    ub.close().await;
    if let Some(s) = a.stats().await.map_err(|e| e.to_string())?.secure {
        let dropped = s.dropped_bad_mac + s.dropped_replay + s.dropped_unknown_session;
        report.insert("keyed_dropped".into(), json!(dropped));
    }
    a.close().await;
    b.close().await;
    Ok(())
}

/// One table row of rates: `ours` beside `base`, and their ratio.
pub(super) fn rate_row(label: &str, ours: f64, base: f64) {
    println!(
        "{:<34} {:>10.0} m/s {:>10.0} m/s {:>8.2}",
        label,
        ours,
        base,
        ours / base
    );
}

/// A row of times (seconds, printed in µs) beside the baseline's.
pub(super) fn time_row(label: &str, ours: f64, base: f64) {
    println!(
        "{:<34} {:>11.1} us {:>11.1} us {:>8.2}",
        label,
        ours * 1e6,
        base * 1e6,
        ours / base
    );
}

/// The JSON key suffix of a payload size: `64`, `1k` or `16k`.
pub(super) fn size_key(size: usize) -> &'static str {
    match size {
        64 => "64",
        1024 => "1k",
        _ => "16k",
    }
}
