//! I/O: the Ouroboros rows' receiving peer, in a process of its own.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cicada::{Hooks, SwarmPeer};

use super::super::R;
use super::cfg;
use super::tools::sigterm;

/// The receiving peer in its own process, stopped by closing its stdin.
/// A line `mark` on its stdin makes it print what it received since the
/// last mark: `COUNT SECONDS` (from the first message to the last).
pub(super) struct Receiver {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Receiver {
    pub(super) fn start(name: &str, layer: &str) -> R<Receiver> {
        Receiver::start_with(name, layer, &[])
    }

    /// [`Receiver::start`] with more environment variables.
    pub(super) fn start_with(name: &str, layer: &str, env: &[(&str, &str)]) -> R<Receiver> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args([
                "bench",
                "--ouroboros-serve",
                name,
                "--ouroboros-layer",
                layer,
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the receiving peer: {e}"))?;
        let stdout = child.stdout.take().ok_or("stdout not piped")?;
        let mut out = BufReader::new(stdout);
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let mut r = Receiver { child, out };
        if line.trim() != "ready" {
            r.stop();
            return Err(format!("the receiving peer did not start: {line:?}"));
        }
        Ok(r)
    }

    /// Messages received since the last mark, and the seconds from the
    /// first of them to the last.
    pub(super) fn mark(&mut self) -> R<(u64, f64)> {
        let stdin = self.child.stdin.as_mut().ok_or("receiver stopped")?;
        if let Err(e) = writeln!(stdin, "mark").and_then(|()| stdin.flush()) {
            std::thread::sleep(Duration::from_millis(200));
            return Err(format!(
                "the receiving peer is gone ({e}): {:?}",
                self.child.try_wait()
            ));
        }
        let mut line = String::new();
        self.out.read_line(&mut line).map_err(|e| e.to_string())?;
        let mut w = line.split_whitespace();
        match (
            w.next().and_then(|n| n.parse().ok()),
            w.next().and_then(|t| t.parse().ok()),
        ) {
            (Some(n), Some(t)) => Ok((n, t)),
            _ => Err(format!("the receiving peer said {line:?}")),
        }
    }

    pub(super) fn stop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        sigterm(&mut self.child, Duration::from_secs(5));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `cicada bench --ouroboros-serve NAME`: a peer that takes what it is sent
/// until its stdin closes.
pub async fn serve(name: &str, layer: &str) -> R<()> {
    let mut p = SwarmPeer::with_config(cfg(), Hooks::new());
    p.bind_ouroboros(name, layer)
        .await
        .map_err(|e| e.to_string())?;
    let p = Arc::new(p);
    // Since the last mark: messages, first and last arrival.
    type Tally = (u64, Option<(Instant, Instant)>);
    let tally: Arc<Mutex<Tally>> = Arc::new(Mutex::new((0, None)));
    let (q, t) = (p.clone(), tally.clone());
    let drain = tokio::spawn(async move {
        while q.recv().await.is_ok() {
            let now = Instant::now();
            let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
            t.0 += 1;
            t.1 = Some(t.1.map_or((now, now), |(first, _)| (first, now)));
        }
    });
    println!("ready");
    let _ = std::io::stdout().flush();
    let t = tally.clone();
    let total = tokio::task::spawn_blocking(move || {
        let mut total = 0;
        for line in std::io::stdin().lines() {
            if line.map_or(true, |l| l.trim() != "mark") {
                continue;
            }
            let (n, span) = std::mem::take(&mut *t.lock().unwrap_or_else(|e| e.into_inner()));
            total += n;
            let secs = span.map_or(0.0, |(first, last)| (last - first).as_secs_f64());
            println!("{n} {secs}");
            let _ = std::io::stdout().flush();
        }
        total
    })
    .await
    .unwrap_or(0);
    let flows = p.stats().await.ok().and_then(|s| s.ouroboros);
    p.close().await;
    drain.abort();
    let left = tally.lock().unwrap_or_else(|e| e.into_inner()).0;
    match flows {
        // Ouroboros 0.23 overflows the reader's heap past 1,024 events.
        Some(f) => eprintln!(
            "receiving peer {name}: {} messages, {} dropped by the link, at most {} flow events per fevent",
            total + left,
            f.dropped,
            f.most_events
        ),
        None => eprintln!("receiving peer {name}: {} messages", total + left),
    }
    Ok(())
}
