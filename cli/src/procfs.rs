//! I/O: reads `/proc/self/status`.
//!
//! Numbers this process's `/proc/self/status` gives (Linux): memory and
//! user ids, for the bench's, the simulator's and the demo's reports.

/// The `column`th whitespace-separated value (0 is the first after the
/// key) of the line starting with `key:`, as a number; `None` where the
/// file or the line is missing (not Linux).
pub fn status_value(key: &str, column: usize) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.split(':').next() == Some(key))?;
    line.split_whitespace().nth(column + 1)?.parse().ok()
}
