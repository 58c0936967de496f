//! Pure protocol: the deterministic simulator of the real state machine (reads /proc once).
//!
//! `cicada sim`: the simulator's arguments and report, shared by the
//! command and `examples/sim.rs` (which includes this file), so that both
//! are written once.

use std::time::{Duration, Instant};

use cicada::chord::sim::{self, Params, SimConfig};

/// Arguments of the simulator (`cicada sim`, `examples/sim.rs`).
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Number of nodes, joined one by one.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Lookups measured before the failure and again after it.
    #[arg(long, default_value_t = 1000)]
    pub lookups: usize,
    /// Fraction of nodes killed at once after the ring converged.
    #[arg(long, default_value_t = 0.0)]
    pub fail: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Probability that a datagram is lost.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Smallest one-way latency in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub latency_min_ms: u64,
    /// Largest one-way latency in milliseconds.
    #[arg(long, default_value_t = 80)]
    pub latency_max_ms: u64,
    /// Periods between the failure and the lookups measured after it.
    #[arg(long, default_value_t = 5)]
    pub recovery_periods: u32,
    /// Routed sends measured (half to keys, half to exact node ids).
    #[arg(long, default_value_t = 0)]
    pub sends: usize,
    /// Extra copies of each send along other routes.
    #[arg(long, default_value_t = 0)]
    pub duplicates: u8,
    /// Broadcasts measured.
    #[arg(long, default_value_t = 0)]
    pub broadcasts: usize,
    /// Fraction of nodes that silently drop what they should forward.
    #[arg(long, default_value_t = 0.0)]
    pub droppers: f64,
    /// Fraction of nodes killed just before the sends and broadcasts.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Payload of each send and broadcast, in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Values put into the DHT: runs the storage experiment instead (puts,
    /// then churn with `--session-median` or a failure with `--fail`, with
    /// gets throughout, then a count of the values no live node holds).
    #[arg(long, default_value_t = 0)]
    pub puts: usize,
    /// Storage experiment: gets, spread over the churn or the recovery.
    #[arg(long, default_value_t = 1000)]
    pub gets: usize,
    /// Storage experiment: bytes of each value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Storage experiment: replicas of each key (the owner included).
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Storage experiment: median session in seconds (exponentially
    /// distributed; each leave is replaced by a join). 0: no churn.
    #[arg(long, default_value_t = 0.0)]
    pub session_median: f64,
    /// Storage experiment: seconds of churn.
    #[arg(long, default_value_t = 1800)]
    pub churn_seconds: u64,
    /// Storage experiment: seconds given to recovery after the churn or
    /// failure before values are counted.
    #[arg(long, default_value_t = 30)]
    pub settle_seconds: u64,
    /// Print the report as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

/// The storage experiment (`--puts`).
fn run_storage(args: &SimArgs) -> Result<Vec<String>, String> {
    if args.replicas == 0 || args.value_size > cicada::chord::store::MAX_VALUE {
        return Err("--replicas must be at least 1 and --value-size at most 65536".into());
    }
    let mut cfg = SimConfig {
        seed: args.seed,
        loss: args.loss,
        latency_min: Duration::from_millis(args.latency_min_ms),
        latency_max: Duration::from_millis(args.latency_max_ms.max(args.latency_min_ms)),
        ..SimConfig::default()
    };
    cfg.node.store.replicas = args.replicas;
    let params = sim::storage::Params {
        sim: cfg,
        nodes: args.nodes,
        puts: args.puts,
        gets: args.gets,
        value_size: args.value_size,
        session_median: (args.session_median > 0.0)
            .then(|| Duration::from_secs_f64(args.session_median)),
        churn: Duration::from_secs(args.churn_seconds),
        fail: args.fail,
        settle: Duration::from_secs(args.settle_seconds),
    };
    let start = Instant::now();
    let report = sim::storage::run(&params);
    let wall = start.elapsed().as_secs_f64();
    let mut lines = vec![
        format!(
            "nodes {}   replicas {}   values stored {} (puts failed {})   lost {}",
            report.nodes, report.replicas, report.values_stored, report.puts_failed, report.values_lost
        ),
        format!(
            "lost within the invariant {}   outside it {} (each of the last {} holders died within one repair interval, {:.2} s, of the one before; all within one interval: {}; longest span {:.2} s)",
            report.values_lost_within_invariant, report.values_lost_outside_invariant, report.replicas, report.repair_interval_s, report.values_lost_at_once, report.lost_holders_span_max_s
        ),
        format!(
            "gets {}   success {:.4}, of held values {:.4} (failed {}, without the value {}, of lost values {}, reader died {})   hops mean {:.2}",
            report.gets, report.get_success_rate, report.get_success_rate_of_held_values, report.gets_failed, report.gets_without_value, report.gets_of_lost_values, report.gets_reader_died, report.get_hops_mean
        ),
        format!(
            "departures {}   joins {}",
            report.departures, report.joins
        ),
        format!(
            "repair {:.0} B/node/s   replication {:.0} B/node/s   store {:.0} B and {:.1} values per node   {:.0} virtual s in {:.1} wall s   peak RSS {:.0} MiB",
            report.repair_bytes_per_node_per_s, report.replication_bytes_per_node_per_s, report.store_bytes_per_node, report.store_values_per_node, report.sim_seconds, wall, peak_rss_bytes() as f64 / 1048576.0
        ),
    ];
    if args.json {
        let mut v = serde_json::to_value(&report).map_err(|e| e.to_string())?;
        v["wall_seconds"] = wall.into();
        v["peak_rss_bytes"] = peak_rss_bytes().into();
        lines.push(v.to_string());
    }
    Ok(lines)
}

fn peak_rss_bytes() -> u64 {
    crate::procfs::status_value("VmHWM", 0).map_or(0, |kb| kb * 1024)
}

/// Runs the simulator and returns the lines of its report (the JSON line
/// last with `--json`), or a message for a usage error.
pub fn run_sim(args: &SimArgs) -> Result<Vec<String>, String> {
    let fractions = [args.fail, args.loss, args.droppers, args.churn];
    if fractions.iter().any(|f| !(0.0..1.0).contains(f)) {
        return Err("--fail, --loss, --droppers and --churn must be in [0, 1)".into());
    }
    if args.puts > 0 {
        return run_storage(args);
    }
    let params = Params {
        nodes: args.nodes,
        lookups: args.lookups,
        fail: args.fail,
        recovery_periods: args.recovery_periods,
        sends: args.sends,
        duplicates: args.duplicates,
        broadcasts: args.broadcasts,
        droppers: args.droppers,
        churn: args.churn,
        payload: args.payload,
        sim: SimConfig {
            seed: args.seed,
            loss: args.loss,
            latency_min: Duration::from_millis(args.latency_min_ms),
            latency_max: Duration::from_millis(args.latency_max_ms.max(args.latency_min_ms)),
            ..SimConfig::default()
        },
        ..Params::default()
    };
    let start = Instant::now();
    let mut report = sim::run(&params);
    report.wall_seconds = start.elapsed().as_secs_f64();
    report.events_per_s = report.events as f64 / report.wall_seconds.max(f64::MIN_POSITIVE);
    report.peak_rss_bytes = peak_rss_bytes();
    report.peak_rss_bytes_per_node = report.peak_rss_bytes as f64 / report.nodes.max(1) as f64;

    let mut lines = vec![
        format!(
            "nodes {:>9}   ring correct {}   built in {:.1} virtual s",
            report.nodes, report.ring_correct, report.join_seconds
        ),
        format!(
            "lookups {:>7}   success {:.4}   hops mean {:.2}  p50 {}  p99 {}",
            report.lookups, report.success_rate, report.hops_mean, report.hops_p50, report.hops_p99
        ),
    ];
    if report.killed > 0 {
        lines.push(format!(
            "killed {:>8}   after {} periods: ring correct {}   success {:.4}   hops mean {:.2}  p99 {}",
            report.killed, report.recovery_periods, report.ring_correct_after_fail, report.success_rate_after_fail, report.hops_mean_after_fail, report.hops_p99_after_fail
        ));
    }
    if report.sends > 0 {
        lines.push(format!(
            "sends {:>9}   x{} copies   delivered {:.4}   failed {:.4}   unresolved {}   wrong destination {}   hops mean {:.2}",
            report.sends, report.duplicates as u32 + 1, report.send_delivered_rate, report.send_failed_rate, report.send_unresolved, report.send_wrong_destination, report.send_hops_mean
        ));
    }
    if report.broadcasts > 0 {
        lines.push(format!(
            "broadcasts {:>4}   messages each {:.1}   coverage mean {:.4} min {:.4}   depth max {}   last receiver after {:.1} s",
            report.broadcasts,
            report.broadcast_messages_per_broadcast,
            report.broadcast_coverage,
            report.broadcast_coverage_min,
            report.broadcast_depth_max,
            report.broadcast_seconds_max
        ));
    }
    if report.sends > 0 || report.broadcasts > 0 {
        lines.push(format!(
            "duplicate deliveries {}   (churn killed {}, droppers {:.2})",
            report.duplicate_deliveries, report.churn_killed, report.droppers
        ));
    }
    lines.push(format!(
        "maintenance {:.2} msgs/node/s ({:.0} B/node/s)   {:.0} virtual s in {:.1} wall s ({:.0} events/s)   peak RSS {:.0} MiB",
        report.messages_per_node_per_s, report.bytes_per_node_per_s, report.sim_seconds, report.wall_seconds, report.events_per_s, report.peak_rss_bytes as f64 / 1048576.0
    ));
    lines.push(format!(
        "memory per node: {:.0} B resident at the peak   {:.0} B of node state   {:.0} B of event queue",
        report.peak_rss_bytes_per_node, report.node_state_bytes_per_node, report.queue_bytes_per_node
    ));
    if args.json {
        lines.push(serde_json::to_string(&report).map_err(|e| e.to_string())?);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: super::SimArgs,
    }

    #[test]
    fn run_sim_reports_json_last() {
        let cli = Cli::parse_from(["sim", "--nodes", "20", "--lookups", "20", "--json"]);
        let lines = super::run_sim(&cli.sim).unwrap();
        let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(last["nodes"], 20);
        assert_eq!(last["ring_correct"], true);
        assert!(last["events"].as_u64().unwrap() > last["datagrams"].as_u64().unwrap());
        assert!(last["events_per_s"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn run_sim_runs_the_storage_experiment() {
        let cli = Cli::parse_from([
            "sim",
            "--nodes",
            "30",
            "--puts",
            "100",
            "--gets",
            "50",
            "--session-median",
            "600",
            "--churn-seconds",
            "20",
            "--json",
        ]);
        let lines = super::run_sim(&cli.sim).unwrap();
        let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(last["values_stored"], 100);
        assert_eq!(last["values_lost"], 0);
        assert_eq!(last["values_lost_within_invariant"], 0);
        assert_eq!(last["values_lost_at_once"], 0);
        assert!(last["repair_interval_s"].as_f64().unwrap() > 0.0);
        for k in [
            "get_success_rate",
            "get_hops_mean",
            "repair_bytes_per_node_per_s",
            "store_bytes_per_node",
        ] {
            assert!(last[k].is_number(), "{k}");
        }
    }

    #[test]
    fn run_sim_refuses_fractions_out_of_range() {
        let cli = Cli::parse_from(["sim", "--nodes", "20", "--loss", "1.5"]);
        assert!(super::run_sim(&cli.sim).is_err());
    }
}
