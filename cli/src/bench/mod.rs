//! I/O: measures peers and raw sockets on loopback, in one process.
//!
//! `cicada bench`: Cicada beside raw UDP, measured in the same run on
//! loopback, reported as ratios (these machines are shared and noisy), plus a
//! 64-peer swarm in one process, the memory of idle peers, and the
//! Ouroboros rows beside `ocbr`/`oping` (see `ouroboros/`).

mod ouroboros;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cicada::link::Link;
use cicada::{Hash, Hooks, PeerAddr, PeerConfig, Received, SwarmPeer};
use clap::Args;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// Arguments of `cicada bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Messages per throughput row.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Round trips per latency row.
    #[arg(long, default_value_t = 2_000)]
    round_trips: usize,
    /// Peers of the in-process swarm.
    #[arg(long, default_value_t = 64)]
    swarm: usize,
    /// Idle peers for the memory row.
    #[arg(long, default_value_t = 1_000)]
    idle: usize,
    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Print a dated Markdown table of the headline rows, their ratios and
    /// the settings at the end (for README's "Where it stands").
    #[arg(long)]
    markdown: bool,
    /// The Ouroboros layer of the Ouroboros rows.
    #[arg(long, default_value = "local_layer")]
    ouroboros_layer: String,
    /// Only the Ouroboros rows.
    #[arg(long)]
    only_ouroboros: bool,
    /// Skip the Ouroboros rows even where an IRMd runs (its `ocbr` flood
    /// loads a shared IRMd).
    #[arg(long, conflicts_with = "only_ouroboros")]
    no_ouroboros: bool,
    /// Add the Ouroboros row of unconfirmed datagrams (a flood, like
    /// `ocbr`'s). Off by default: a flood loads an IRMd that others may
    /// share.
    #[arg(long)]
    ouroboros_datagrams: bool,
    /// Add the Ouroboros row of routing round trips during a data flood,
    /// one flow per neighbour against one flow per traffic class (a flood:
    /// off by default).
    #[arg(long)]
    ouroboros_classes: bool,
    /// Datagrams a second of the flood of `--ouroboros-classes`.
    #[arg(long, default_value_t = 40_000)]
    ouroboros_flood_rate: u64,
    /// Only the row of `--ouroboros-classes`.
    #[arg(long, conflicts_with_all = ["only_ouroboros", "no_ouroboros"])]
    only_ouroboros_classes: bool,
    /// Run everything (Cicada and the baselines) on a current-thread tokio
    /// runtime instead of the default two worker threads.
    #[arg(long)]
    current_thread: bool,
    /// Internal: be the receiving peer of the Ouroboros rows, under this name.
    #[arg(long, hide = true)]
    ouroboros_serve: Option<String>,
    /// Internal: only measure `--idle` idle peers and print the resident
    /// bytes per peer (the memory row runs in a process of its own).
    #[arg(long, hide = true)]
    idle_only: bool,
    /// Internal: with `--idle-only`, the idle peers form a private swarm.
    #[arg(long, hide = true)]
    idle_keyed: bool,
}

/// Runs `cicada bench`; returns the exit code.
pub fn main(args: BenchArgs) -> i32 {
    let mut builder = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    if args.idle_only {
        return match rt.block_on(idle_rss(args.idle, args.idle_keyed)) {
            Ok(per) => {
                println!("{per}");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        };
    }
    if let Some(name) = &args.ouroboros_serve {
        return match rt.block_on(ouroboros::serve(name, &args.ouroboros_layer)) {
            Ok(()) => 0,
            Err(e) => {
                println!("error: {e}");
                1
            }
        };
    }
    match rt.block_on(run(&args)) {
        Ok(report) => {
            if args.json {
                println!("{report}");
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

pub(crate) type R<T> = Result<T, String>;

fn fast() -> PeerConfig {
    let mut cfg = PeerConfig::default()
        .stabilize_interval(Duration::from_millis(500))
        .recv_queue(65_536);
    // Loopback carries 64 KiB datagrams: no need to split 16 KiB payloads.
    cfg.chord.max_fragment = 60_000;
    cfg.chord.max_pending = 65_536;
    // The per-source buckets (docs/security.md: 400 requests/s, and
    // 100,000 Data/s from a verified neighbour) bound what one address may
    // send; the bench measures the data path, so it lifts both (and says
    // so in its header).
    cfg.chord.source_rate = SOURCE_RATE;
    cfg.chord.source_burst = SOURCE_RATE;
    cfg.chord.data_rate = SOURCE_RATE;
    cfg.chord.data_burst = SOURCE_RATE;
    cfg
}

/// Requests per second one source may send in the bench's peers.
const SOURCE_RATE: u32 = 10_000_000;

async fn peer(cfg: PeerConfig) -> R<SwarmPeer> {
    let mut p = SwarmPeer::with_config(cfg, Hooks::new());
    p.bind(local()).await.map_err(|e| e.to_string())?;
    Ok(p)
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn run(args: &BenchArgs) -> R<Value> {
    let mut report = serde_json::Map::new();
    // Figures taken with another window are not comparable: say which.
    report.insert("bench_window".into(), json!(window()));
    let settings = settings(args).await?;
    println!("settings (a user's default in parentheses where it differs):");
    for (k, v) in &settings {
        println!("  {k}: {v}");
    }
    report.insert(
        "settings".into(),
        Value::Object(settings.into_iter().map(|(k, v)| (k, json!(v))).collect()),
    );
    if !args.only_ouroboros && !args.only_ouroboros_classes {
        udp_rows(args, &mut report).await?;
    }
    if !args.no_ouroboros && !args.only_ouroboros_classes {
        ouroboros::rows(
            args.messages,
            args.round_trips,
            &args.ouroboros_layer,
            args.ouroboros_datagrams,
            &mut report,
        )
        .await?;
    }
    if args.only_ouroboros_classes || (args.ouroboros_classes && !args.no_ouroboros) {
        ouroboros::classes_row(
            &args.ouroboros_layer,
            args.round_trips,
            args.ouroboros_flood_rate,
            &mut report,
        )
        .await?;
    }
    if args.markdown {
        println!();
        print!("{}", markdown(&report));
    }
    Ok(Value::Object(report))
}

/// The bench's settings that a user's defaults do not share, each with the
/// default beside it, and how the raw baseline is made: printed above the
/// rows and recorded under `settings` in the JSON.
async fn settings(args: &BenchArgs) -> R<Vec<(String, String)>> {
    let (ours, theirs) = (fast(), PeerConfig::default());
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| "unset".into());
    let link = cicada::link::UdpLink::bind(local())
        .await
        .map_err(|e| e.to_string())?;
    let (rcv, snd) = granted_buffers()?;
    let mut s = vec![
        (
            "runtime",
            if args.current_thread {
                "tokio current-thread (--current-thread)".to_string()
            } else {
                "tokio multi-thread, 2 worker threads".to_string()
            },
        ),
        (
            "messages_per_throughput_run",
            format!("{} (each row: median of {ROUNDS} runs in turns with its baseline)", args.messages),
        ),
        (
            "round_trips_per_latency_row",
            format!(
                "{} x {ROUNDS}, in turns of {LATENCY_TURN} with the baseline",
                args.round_trips
            ),
        ),
        (
            "confirmed_sends_in_flight",
            format!("{} (CICADA_BENCH_WINDOW={})", window(), env("CICADA_BENCH_WINDOW")),
        ),
        (
            "source_rate_and_data_rate",
            format!(
                "{SOURCE_RATE}/s, bursts {SOURCE_RATE} (default {}/s burst {}, data {}/s burst {})",
                theirs.chord.source_rate,
                theirs.chord.source_burst,
                theirs.chord.data_rate,
                theirs.chord.data_burst
            ),
        ),
        (
            "max_fragment",
            format!(
                "{} bytes: 16 KiB payloads travel in one datagram (default {})",
                ours.chord.max_fragment, theirs.chord.max_fragment
            ),
        ),
        (
            "max_pending",
            format!("{} (default {})", ours.chord.max_pending, theirs.chord.max_pending),
        ),
        (
            "recv_queue",
            format!("{} (default {})", ours.recv_queue, theirs.recv_queue),
        ),
        (
            "stabilize_interval",
            format!(
                "{:?} (default {:?})",
                ours.chord.stabilize_interval, theirs.chord.stabilize_interval
            ),
        ),
        (
            "raw_udp_baseline",
            format!(
                "cicada's UdpLink with no protocol above it: sends in runs of up to {} datagrams \
                 (one GSO sendmsg for datagrams up to {} bytes, one send_to each above), \
                 receives drained with GRO/recvmmsg as the link does",
                link.max_segments(),
                GSO_SEGMENT_MAX
            ),
        ),
        (
            "socket_buffers",
            format!(
                "{} bytes asked, as the link asks, by both Cicada and the raw baseline; \
                 the kernel granted receive {rcv}, send {snd} (doubled, capped by \
                 net.core.rmem_max/wmem_max); the unbatched row keeps the default",
                cicada::link::SOCKET_BUFFER
            ),
        ),
        (
            "CICADA_UDP_GRO",
            format!("{} (unset: adaptive, as for users)", env("CICADA_UDP_GRO")),
        ),
        ("CICADA_UDP_GSO", format!("{} (unset: on)", env("CICADA_UDP_GSO"))),
        (
            "swarm",
            format!(
                "{} peers, {SWARM_OPS} concurrent lookups and routed sends of 100 B; idle-memory row {} peers (default config)",
                args.swarm, args.idle
            ),
        ),
    ];
    if std::env::var_os("CICADA_BENCH_TASK_PER_SEND").is_some() {
        s.push((
            "CICADA_BENCH_TASK_PER_SEND",
            "set: a task per confirmed send".into(),
        ));
    }
    Ok(s.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// Datagrams up to this size leave a link in segmented runs; larger ones
/// one `send_to` each (the link's rule, `GSO_SEGMENT_MAX` in `src/link/udp.rs`).
const GSO_SEGMENT_MAX: usize = 1_452;

/// The receive and send buffers the kernel grants a UDP socket that asks
/// for [`cicada::link::SOCKET_BUFFER`], as [`cicada::link::UdpLink`] does.
fn granted_buffers() -> R<(usize, usize)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| e.to_string())?;
    let _ = s.set_recv_buffer_size(cicada::link::SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(cicada::link::SOCKET_BUFFER);
    Ok((
        s.recv_buffer_size().map_err(|e| e.to_string())?,
        s.send_buffer_size().map_err(|e| e.to_string())?,
    ))
}

async fn udp_rows(args: &BenchArgs, report: &mut serde_json::Map<String, Value>) -> R<()> {
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
async fn keyed_rows(args: &BenchArgs, report: &mut serde_json::Map<String, Value>) -> R<()> {
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
fn rate_row(label: &str, ours: f64, base: f64) {
    println!(
        "{:<34} {:>10.0} m/s {:>10.0} m/s {:>8.2}",
        label,
        ours,
        base,
        ours / base
    );
}

/// A row of times (seconds, printed in µs) beside the baseline's.
fn time_row(label: &str, ours: f64, base: f64) {
    println!(
        "{:<34} {:>11.1} us {:>11.1} us {:>8.2}",
        label,
        ours * 1e6,
        base * 1e6,
        ours / base
    );
}

/// The JSON key suffix of a payload size: `64`, `1k` or `16k`.
fn size_key(size: usize) -> &'static str {
    match size {
        64 => "64",
        1024 => "1k",
        _ => "16k",
    }
}

/// Messages per second the link alone moves: two [`cicada::link::UdpLink`]s
/// (the socket buffers, GSO sends and adaptive GRO receives of every
/// peer's link) with no protocol above them. The sender hands the link
/// runs of as many datagrams as it sends in one call
/// ([`Link::max_segments`], 64 at most), as the driver does with a queue
/// of datagrams of one size to one address; the receiver waits until the
/// socket is readable and drains it run by run, as the driver does. Counted
/// at the receiver, from its first receive to its last; also the fraction
/// of `count` that arrived (datagrams the receiver has no room for are
/// dropped by the system, and the rate is then the receiver's).
async fn raw_throughput(size: usize, count: usize) -> R<(f64, f64)> {
    let rx = Arc::new(
        cicada::link::UdpLink::bind(local())
            .await
            .map_err(|e| e.to_string())?,
    );
    let tx = cicada::link::UdpLink::bind(local())
        .await
        .map_err(|e| e.to_string())?;
    let to = rx.local_addr().map_err(|e| e.to_string())?;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; cicada::config::RECV_BUFFER];
        // All datagrams, and those after the first receive: the rate
        // counts only those that arrived after its time (a run of 64
        // arrives in one receive).
        let (mut after, mut n, mut first, mut last) = (0usize, 0usize, None, Instant::now());
        while let Ok(Ok(())) = tokio::time::timeout(Duration::from_millis(300), rx.readable()).await
        {
            while let Some(Ok((len, stride, _))) = rx.try_recv_run(&mut buf) {
                last = Instant::now();
                let count = len.div_ceil(stride.max(1));
                if first.is_some() {
                    after += count;
                }
                first.get_or_insert(last);
                n += count;
            }
        }
        (after, n, first, last)
    });
    let run = tx.max_segments().max(1);
    let payload = vec![0x5au8; size * run];
    let mut sent = 0;
    while sent < count {
        let k = run.min(count - sent);
        tx.send_segments(&payload[..k * size], size, &to)
            .await
            .map_err(|e| e.to_string())?;
        sent += k;
        tokio::task::yield_now().await;
    }
    let (after, n, first, last) = reader.await.map_err(|e| e.to_string())?;
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let rate = if secs > 0.0 { after as f64 / secs } else { 0.0 };
    Ok((rate, n as f64 / count as f64))
}

/// Messages per second a pair of plain tokio sockets moves with one
/// `send_to` per datagram and the system's default socket buffers, counted
/// at the receiver: the unbatched extra row, below what the machine can do.
async fn raw_unbatched_throughput(size: usize, count: usize) -> R<f64> {
    let rx = UdpSocket::bind(local()).await.map_err(|e| e.to_string())?;
    let tx = UdpSocket::bind(local()).await.map_err(|e| e.to_string())?;
    let to = rx.local_addr().map_err(|e| e.to_string())?;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let (mut n, mut first, mut last) = (0u64, None, Instant::now());
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(300), rx.recv(&mut buf)).await
        {
            last = Instant::now();
            first.get_or_insert(last);
            n += 1;
        }
        (n, first, last)
    });
    let payload = vec![0x5au8; size];
    for i in 0..count {
        tx.send_to(&payload, to).await.map_err(|e| e.to_string())?;
        if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    let (n, first, last) = reader.await.map_err(|e| e.to_string())?;
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    Ok(if secs > 0.0 { n as f64 / secs } else { 0.0 })
}

/// Unconfirmed one-hop datagrams per second as `b` receives them (from
/// its first to its last, as for the raw flood), and the fraction of the
/// `count` sent that arrived.
async fn datagram_throughput(
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
pub(crate) async fn send_datagrams(
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
async fn throughput(
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
pub(crate) fn window() -> usize {
    std::env::var("CICADA_BENCH_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256usize)
        .max(1)
}

/// Two peers of configuration `cfg`, one hop apart and settled; and the
/// address of the second.
async fn pair(cfg: PeerConfig) -> R<(Arc<SwarmPeer>, Arc<SwarmPeer>, PeerAddr)> {
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
pub(crate) async fn pipelined_sends(
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
async fn task_per_send(
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

/// Runs of each throughput and latency row, taking turns with the baseline.
const ROUNDS: usize = 5;

/// What a throughput row sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sends {
    /// Confirmed sends.
    Confirmed,
    /// Unconfirmed datagrams.
    Datagrams,
}

/// What a throughput row takes turns with.
enum Baseline<'a> {
    /// The link alone ([`raw_throughput`]), and the unbatched loop
    /// ([`raw_unbatched_throughput`]) as well when `unbatched`.
    RawUdp { unbatched: bool },
    /// Confirmed sends between two other peers (the keyed rows' unkeyed pair).
    Pair(Peers<'a>),
}

/// A sending peer, a receiving peer, and the receiver's address.
type Peers<'a> = (&'a Arc<SwarmPeer>, &'a Arc<SwarmPeer>, &'a PeerAddr);

/// What a throughput row measured: medians over its runs.
struct Turns {
    /// Cicada's messages per second.
    ours: f64,
    /// The baseline's.
    base: f64,
    /// The unbatched raw loop's, when asked for.
    unbatched: Option<f64>,
    /// The smallest fraction of Cicada's sends confirmed (or of its
    /// datagrams arrived) in one run.
    reached: f64,
    /// The smallest fraction of the raw baseline's datagrams that arrived
    /// in one run (1 for a pair of peers).
    base_reached: f64,
}

impl Turns {
    /// Records the row in the JSON report under `names` (Cicada's rate,
    /// the baseline's, their ratio, the fraction confirmed or arrived),
    /// each followed by `_` and the size's `key`.
    fn record(&self, report: &mut serde_json::Map<String, Value>, names: [&str; 4], key: &str) {
        let [ours, base, ratio, reached] = names;
        report.insert(format!("{ours}_{key}"), json!(self.ours));
        report.insert(format!("{base}_{key}"), json!(self.base));
        report.insert(format!("{ratio}_{key}"), json!(self.ours / self.base));
        report.insert(format!("{reached}_{key}"), json!(self.reached));
    }
}

/// A throughput row run [`ROUNDS`] times, taking turns with `baseline`
/// (its run first). A single run of each can move 4x with where the
/// scheduler puts its two tasks; turns and medians let both meet the same
/// load.
async fn throughput_turns(
    (a, b, to): Peers<'_>,
    size: usize,
    count: usize,
    sends: Sends,
    baseline: Baseline<'_>,
) -> R<Turns> {
    let (mut ours, mut bases, mut unbatched) = (Vec::new(), Vec::new(), Vec::new());
    let (mut reached, mut base_reached) = (1.0f64, 1.0f64);
    for _ in 0..ROUNDS {
        match baseline {
            Baseline::RawUdp { unbatched: extra } => {
                let (rate, arrived) = raw_throughput(size, count).await?;
                bases.push(rate);
                base_reached = base_reached.min(arrived);
                if extra {
                    unbatched.push(raw_unbatched_throughput(size, count).await?);
                }
            }
            Baseline::Pair((x, y, t)) => {
                bases.push(throughput(x, y, t.clone(), size, count).await?.0)
            }
        }
        let (rate, fraction) = match sends {
            Sends::Datagrams => datagram_throughput(a, b, to, size, count).await?,
            Sends::Confirmed => throughput(a, b, to.clone(), size, count).await?,
        };
        ours.push(rate);
        reached = reached.min(fraction);
    }
    Ok(Turns {
        ours: median(ours),
        base: median(bases),
        unbatched: (!unbatched.is_empty()).then(|| median(unbatched)),
        reached,
        base_reached,
    })
}

/// Round trips per turn of the latency row: Cicada's and the baseline's
/// take turns this often, so that both meet the same scheduling. On two
/// worker threads a ping-pong (raw UDP's as much as Cicada's) runs for
/// hundreds of milliseconds at a time in one of two modes (on a 2-core VM,
/// 8-20 µs or 65-95 µs a round trip) by where the threads that wake each
/// other sit; turns of 2,000 round trips put the two sides in different
/// modes in about half the runs.
const LATENCY_TURN: usize = 25;

/// What a latency row takes turns with.
#[derive(Clone, Copy)]
enum LatencyBase<'a> {
    /// A raw ping-pong between two links of this coalescing ([`RawPing`]).
    Raw(cicada::link::Gro),
    /// Confirmed sends of 64 bytes from another peer to this address (the
    /// keyed row's unkeyed pair).
    Pair(&'a SwarmPeer, &'a PeerAddr),
}

/// The latency row's samples, `n` × [`ROUNDS`] round trips of Cicada's
/// and as many of the baseline's, taken in turns of [`LATENCY_TURN`]:
/// percentiles are taken over all of them.
async fn latency_turns(
    a: &SwarmPeer,
    to: &PeerAddr,
    n: usize,
    base: LatencyBase<'_>,
) -> R<(Vec<f64>, Vec<f64>)> {
    let total = n * ROUNDS;
    let raw = match base {
        LatencyBase::Raw(gro) => Some(RawPing::start(gro).await?),
        LatencyBase::Pair(..) => None,
    };
    let (mut ours, mut bases) = (Vec::with_capacity(total), Vec::with_capacity(total));
    while ours.len() < total {
        let k = LATENCY_TURN.min(total - ours.len());
        match (&raw, base) {
            (Some(raw), _) => bases.extend(raw.round_trips(k).await?),
            (None, LatencyBase::Pair(x, t)) => bases.extend(latency(x, t.clone(), k).await?),
            (None, LatencyBase::Raw(_)) => {}
        }
        ours.extend(latency(a, to.clone(), k).await?);
    }
    Ok((ours, bases))
}

/// The middle of `v` (the upper middle of an even count; 0 when empty).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|x, y| x.total_cmp(y));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub(crate) fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|x, y| x.total_cmp(y));
    let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.5), at(0.99))
}

/// A raw UDP ping-pong of 64 bytes on loopback between two
/// [`cicada::link::UdpLink`]s (the socket buffers and receives of a peer's link,
/// coalescing as asked): a client link and an echo task, kept for the
/// whole latency row.
struct RawPing {
    client: cicada::link::UdpLink,
    echo: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl RawPing {
    async fn start(gro: cicada::link::Gro) -> R<RawPing> {
        let echo = cicada::link::UdpLink::bind_gro(local(), gro)
            .await
            .map_err(|e| e.to_string())?;
        let to = echo.local_addr().map_err(|e| e.to_string())?;
        let server = tokio::spawn(async move {
            let mut buf = vec![0u8; cicada::config::RECV_BUFFER];
            while let Ok((len, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..len], &from).await;
            }
        });
        let client = cicada::link::UdpLink::bind_gro(local(), gro)
            .await
            .map_err(|e| e.to_string())?;
        Ok(RawPing {
            client,
            echo: to,
            server,
        })
    }

    /// Round-trip times (seconds) of `n` pings.
    async fn round_trips(&self, n: usize) -> R<Vec<f64>> {
        let mut buf = vec![0u8; cicada::config::RECV_BUFFER];
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            self.client
                .send_to(&[7u8; 64], &self.echo)
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::timeout(Duration::from_secs(1), self.client.recv_from(&mut buf))
                .await
                .map_err(|_| "raw ping lost".to_string())?
                .map_err(|e| e.to_string())?;
            times.push(t.elapsed().as_secs_f64());
        }
        Ok(times)
    }
}

impl Drop for RawPing {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Times (seconds) of confirmed one-hop sends of 64 bytes: data there,
/// confirmation back.
async fn latency(a: &SwarmPeer, to: PeerAddr, n: usize) -> R<Vec<f64>> {
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

/// Summed over `peers`: datagrams sent, datagrams dropped or refused for
/// any reason (core and driver), peers declared failed, and hints sent to
/// nodes whose successor list was stale (a send overshot its key).
async fn swarm_counts(peers: &[Arc<SwarmPeer>]) -> [u64; 4] {
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
const SWARM_OPS: usize = 4000;

async fn swarm_rows(n: usize) -> R<Vec<(String, Value)>> {
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
fn rss_bytes() -> u64 {
    crate::procfs::status_value("VmRSS", 0).map_or(0, |kb| kb * 1024)
}

/// [`idle_rss`] in a process of its own (this program, `bench --idle-only`).
/// In the bench's own process the peers would take memory that the rows
/// before freed and the allocator kept, and the row would read a fraction
/// of what a fresh process reads.
fn idle_rss_alone(n: usize, current_thread: bool, keyed: bool) -> R<f64> {
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
async fn idle_rss(n: usize, keyed: bool) -> R<f64> {
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

/// The headline rows of `report` as a dated Markdown table, with the
/// machine, the command line and the settings, for README's "Where it
/// stands".
fn markdown(report: &serde_json::Map<String, Value>) -> String {
    use std::fmt::Write;
    let get = |k: &str| report.get(k).and_then(Value::as_f64);
    let mut out = String::new();
    let cmd: Vec<String> = std::env::args().skip(1).collect();
    let _ = writeln!(
        out,
        "Measured {} on {} ({} cores by `nproc`, Linux {}), release build, `cicada {}`. \
         Each ratio is against a baseline measured in the same run, in turns with it.\n",
        utc_date(),
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel(),
        cmd.join(" ")
    );
    let _ = writeln!(out, "| row | Cicada | baseline | ratio |");
    let _ = writeln!(out, "| --- | ---: | ---: | ---: |");
    let mut row =
        |name: &str, ours: Option<f64>, base: Option<f64>, unit: &str, scale: f64, what: &str| {
            let (Some(o), b) = (ours, base) else { return };
            let fmt = |v: f64| {
                let v = v * scale;
                if v >= 100.0 {
                    group(v.round() as u64)
                } else {
                    format!("{v:.1}")
                }
            };
            match b {
                Some(b) => {
                    let _ = writeln!(
                        out,
                        "| {name} | {} {unit} | {} {unit} ({what}) | {:.2} |",
                        fmt(o),
                        fmt(b),
                        o / b
                    );
                }
                None => {
                    let _ = writeln!(out, "| {name} | {} {unit} | | |", fmt(o));
                }
            }
        };
    let raw = "raw UDP, the link's batching";
    for (label, k) in [("64 B", "64"), ("1 KiB", "1k"), ("16 KiB", "16k")] {
        row(
            &format!("confirmed sends, {label}"),
            get(&format!("throughput_msgs_per_s_{k}")),
            get(&format!("raw_udp_msgs_per_s_{k}")),
            "msg/s",
            1.0,
            raw,
        );
    }
    row(
        "confirmed sends, 1 KiB, beside an unbatched loop",
        get("throughput_msgs_per_s_1k"),
        get("raw_udp_unbatched_msgs_per_s_1k"),
        "msg/s",
        1.0,
        "raw UDP, one send_to each, default buffers",
    );
    for (label, k) in [("64 B", "64"), ("1 KiB", "1k")] {
        row(
            &format!("unconfirmed datagrams, {label}"),
            get(&format!("datagram_msgs_per_s_{k}")),
            get(&format!("datagram_raw_udp_msgs_per_s_{k}")),
            "msg/s",
            1.0,
            raw,
        );
    }
    let ping = "raw UDP ping-pong";
    row(
        "round trip p50, 64 B",
        get("latency_p50_us"),
        get("raw_udp_latency_p50_us"),
        "µs",
        1.0,
        ping,
    );
    row(
        "round trip p99, 64 B",
        get("latency_p99_us"),
        get("raw_udp_latency_p99_us"),
        "µs",
        1.0,
        ping,
    );
    row(
        "round trip p50, from a task",
        get("latency_task_p50_us"),
        get("raw_udp_latency_task_p50_us"),
        "µs",
        1.0,
        ping,
    );
    row(
        "round trip p50, after bulk (GRO on)",
        get("latency_after_bulk_p50_us"),
        get("raw_udp_latency_after_bulk_p50_us"),
        "µs",
        1.0,
        "raw UDP ping-pong, GRO on",
    );
    let unkeyed = "the same, unkeyed";
    row(
        "swarm key: confirmed sends, 1 KiB",
        get("keyed_throughput_msgs_per_s_1k"),
        get("keyed_unkeyed_msgs_per_s_1k"),
        "msg/s",
        1.0,
        unkeyed,
    );
    row(
        "swarm key: round trip p50",
        get("keyed_latency_p50_us"),
        get("keyed_unkeyed_latency_p50_us"),
        "µs",
        1.0,
        unkeyed,
    );
    let n = get("swarm_peers").unwrap_or(0.0);
    row(
        &format!("{n} peers: lookups"),
        get("swarm_lookups_per_s"),
        None,
        "/s",
        1.0,
        "",
    );
    row(
        &format!("{n} peers: routed sends"),
        get("swarm_sends_per_s"),
        None,
        "/s",
        1.0,
        "",
    );
    row(
        &format!("{n} peers: broadcast to all"),
        get("swarm_broadcast_ms"),
        None,
        "ms",
        1.0,
        "",
    );
    row(
        "memory per idle peer",
        get("rss_per_idle_peer_bytes"),
        None,
        "B",
        1.0,
        "",
    );
    row(
        "memory per idle peer, swarm key",
        get("rss_per_idle_keyed_peer_bytes"),
        None,
        "B",
        1.0,
        "",
    );
    if let Some(Value::Object(settings)) = report.get("settings") {
        let _ = writeln!(
            out,
            "\nSettings (a user's default in parentheses where it differs):\n"
        );
        for (k, v) in settings {
            let _ = writeln!(out, "- `{k}`: {}", v.as_str().unwrap_or_default());
        }
    }
    out
}

/// `n` with thousands separated by commas.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Today's date (UTC), `YYYY-MM-DD`.
fn utc_date() -> String {
    civil_date(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// The UTC date (`YYYY-MM-DD`) of `secs` seconds since 1970-01-01.
fn civil_date(secs: u64) -> String {
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The CPU's model name (`/proc/cpuinfo`), or "an unknown CPU".
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "an unknown CPU".into())
}

/// The kernel's release (`/proc/sys/kernel/osrelease`).
fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_groups() {
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(999), "999");
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(951_782_400), "2000-02-29");
        assert_eq!(civil_date(1_796_601_600 + 86_399), "2026-12-07");
        assert_eq!(civil_date(4_107_542_400), "2100-03-01");
    }
}
