//! Pure (but for reading the machine's name and date): the Markdown report.

use serde_json::Value;

/// The headline rows of `report` as a dated Markdown table, with the
/// machine, the command line and the settings, for README's "Where it
/// stands".
pub(super) fn markdown(report: &serde_json::Map<String, Value>) -> String {
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
pub(super) fn group(n: u64) -> String {
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
pub(super) fn utc_date() -> String {
    civil_date(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// The UTC date (`YYYY-MM-DD`) of `secs` seconds since 1970-01-01.
pub(super) fn civil_date(secs: u64) -> String {
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
pub(super) fn cpu_model() -> String {
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
pub(super) fn kernel() -> String {
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
