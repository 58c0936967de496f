//! I/O: measures peers and raw sockets on loopback, in one process.
//!
//! `cicada bench`: Cicada beside raw UDP, measured in the same run on
//! loopback, reported as ratios (these machines are shared and noisy), plus a
//! 64-peer swarm in one process, the memory of idle peers, and the
//! Ouroboros rows beside `ocbr`/`oping` (see `ouroboros/`).
//!
//! Here the arguments, the run and its settings; `rows.rs` the one-hop UDP
//! rows, `raw.rs` their raw baselines, `sends.rs` Cicada's side of a row,
//! `turns.rs` runs in turns with a baseline and their statistics,
//! `swarm.rs` the swarm and idle-memory rows, `report.rs` the Markdown
//! table, `ouroboros/` the Ouroboros rows.

mod ouroboros;
mod raw;
mod report;
mod rows;
mod sends;
mod swarm;
mod turns;

use std::net::SocketAddr;
use std::time::Duration;

use cicada::{Hooks, PeerConfig, SwarmPeer};
use clap::Args;
use serde_json::{json, Value};

use report::markdown;
use rows::udp_rows;
use sends::{pipelined_sends, send_datagrams, window};
use swarm::{idle_rss, SWARM_OPS};
use turns::{median, percentiles, LATENCY_TURN, ROUNDS};

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
