//! I/O: writes events to stdout, one whole line each.
//!
//! Events of `cicada node`: one JSON object per line with `--json`, the same
//! fields as `event key=value …` for a person otherwise.

use std::io::Write;

use serde_json::Value;

/// Where events go: stdout, one line each, whole lines only.
#[derive(Clone, Copy, Debug)]
pub struct Out {
    pub json: bool,
}

impl Out {
    /// Prints one event; `v` is a JSON object with an `event` field.
    pub fn emit(&self, v: Value) {
        let line = if self.json { v.to_string() } else { human(&v) };
        let mut stdout = std::io::stdout().lock();
        // A closed stdout is no reason to stop the peer.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    /// Prints an error event.
    pub fn error(&self, message: impl std::fmt::Display) {
        self.emit(serde_json::json!({"event": "error", "message": message.to_string()}));
    }
}

/// Runs `task` on a current-thread runtime; an error (of the runtime or the
/// task) becomes an `error` event and exit code 1.
pub fn run<F>(out: Out, task: F) -> i32
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out.error(format!("cannot start the runtime: {e}"));
            return 1;
        }
    };
    match rt.block_on(task) {
        Ok(()) => 0,
        Err(e) => {
            out.error(e);
            1
        }
    }
}

fn human(v: &Value) -> String {
    let Some(obj) = v.as_object() else {
        return v.to_string();
    };
    let mut s = obj
        .get("event")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    for (k, val) in obj {
        if k == "event" {
            continue;
        }
        let text = match val {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        };
        s.push_str(&format!(" {k}={text}"));
    }
    s
}
