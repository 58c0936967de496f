//! I/O: a `cicada node --json` process seen from outside, for the demo and the tests.
//!
//! [`Process`] starts a command with its stdin and stdout piped, and a
//! thread reads its stdout: each line that is a JSON object is an event,
//! kept in order (lines of anything else are counted, see
//! [`Process::bad_lines`]), and the end of the output is one more event,
//! `{"event":"eof"}`. A caller writes commands to stdin
//! ([`Process::cmd`]) and waits, with a bound, for the events it expects
//! ([`Process::wait_for`], [`Process::wait_n`]), given the index to look
//! from ([`Process::len`] before the command), so that an answer to an
//! earlier command is not taken for the answer to this one. A wait ends
//! early at the end of the output: a process that died is not waited for.
//!
//! `cicada demo` runs its peers through it, and so do the tests of the
//! `cicada` command (`cli/tests/processes.rs`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The events read so far, and a condition variable signalled on each.
type Events = Arc<(Mutex<Vec<Value>>, Condvar)>;

/// `m` locked, whether or not a thread panicked holding it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A child process that prints one JSON event per line (`cicada node
/// --json`). Dropping it does not stop the process: its owner decides how
/// ([`Process::kill`], [`Process::terminate`], a `quit` command).
#[derive(Debug)]
pub struct Process {
    child: Arc<Mutex<Child>>,
    stdin: Option<ChildStdin>,
    events: Events,
    bad_lines: Arc<AtomicUsize>,
}

impl Process {
    /// Starts `cmd` with stdin and stdout piped (stderr as `cmd` has it)
    /// and the thread that reads its events.
    pub fn spawn(mut cmd: Command) -> std::io::Result<Process> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdin = child.stdin.take();
        let events: Events = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let bad_lines = Arc::new(AtomicUsize::new(0));
        let (ev, bad) = (events.clone(), bad_lines.clone());
        let reader = thread::Builder::new()
            .name("cicada-harness".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) if v.is_object() => {
                            let (m, c) = &*ev;
                            lock(m).push(v);
                            c.notify_all();
                        }
                        _ => {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let (m, c) = &*ev;
                lock(m).push(json!({"event": "eof"}));
                c.notify_all();
            });
        if let Err(e) = reader {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(Process {
            child: Arc::new(Mutex::new(child)),
            stdin,
            events,
            bad_lines,
        })
    }

    /// Waits at most `within` for the `ready` event and returns it; an
    /// `error` event or the end of the output first, or nothing in time,
    /// is an error that says what came and whether the process still runs.
    pub fn ready(&self, within: Duration) -> Result<Value, String> {
        let first = self.wait_for(0, within, |v| {
            v["event"] == "ready" || v["event"] == "error" || v["event"] == "eof"
        });
        match first {
            Some(v) if v["event"] == "ready" => Ok(v),
            other => {
                let errors = self.all(|v| v["event"] == "error");
                let status = self.child().try_wait();
                Err(format!(
                    "not ready within {within:?}: {} (errors {errors:?}, {} event lines, \
                     process {status:?}; Ok(None): still running)",
                    other.map_or_else(|| "nothing came".to_string(), |v| v.to_string()),
                    self.len(),
                ))
            }
        }
    }

    /// The child process, locked.
    pub fn child(&self) -> MutexGuard<'_, Child> {
        lock(&self.child)
    }

    /// The child process, shared (a signal handler that must stop every
    /// child keeps it, weakly).
    pub fn shared_child(&self) -> &Arc<Mutex<Child>> {
        &self.child
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child().id()
    }

    /// Writes `line` to the process's stdin; after a failed write (the
    /// process is gone) the stdin is closed and later lines are dropped.
    pub fn cmd(&mut self, line: &str) {
        if let Some(stdin) = &mut self.stdin {
            if writeln!(stdin, "{line}")
                .and_then(|_| stdin.flush())
                .is_err()
            {
                self.stdin = None;
            }
        }
    }

    /// Closes the process's stdin (`cicada node` then ends, once it has
    /// carried out what it read).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// How many events came so far (the index a wait for the answer to the
    /// next command starts from).
    pub fn len(&self) -> usize {
        lock(&self.events.0).len()
    }

    /// Whether no event came yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lines of the output that were not JSON objects.
    pub fn bad_lines(&self) -> usize {
        self.bad_lines.load(Ordering::Relaxed)
    }

    /// The first event at or after index `from` that matches, waiting at
    /// most `timeout`.
    pub fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        self.wait_n(from, timeout, 1, pred).into_iter().next()
    }

    /// The events at or after index `from` that match, once there are at
    /// least `n` of them, `timeout` has passed, or the output ended.
    pub fn wait_n(
        &self,
        from: usize,
        timeout: Duration,
        n: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.events;
        let mut evs = lock(m);
        loop {
            let found: Vec<Value> = evs.iter().skip(from).filter(|v| pred(v)).cloned().collect();
            let now = Instant::now();
            let ended = evs.last().is_some_and(|v| v["event"] == "eof");
            if found.len() >= n || now >= deadline || ended {
                return found;
            }
            evs = c
                .wait_timeout(evs, deadline - now)
                .map(|r| r.0)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Every event so far that matches.
    pub fn all(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        lock(&self.events.0)
            .iter()
            .filter(|v| pred(v))
            .cloned()
            .collect()
    }

    /// How many events at or after index `from` match.
    pub fn count(&self, from: usize, pred: impl Fn(&Value) -> bool) -> usize {
        lock(&self.events.0)
            .iter()
            .skip(from)
            .filter(|v| pred(v))
            .count()
    }

    /// The latest event that matches.
    pub fn latest(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        lock(&self.events.0).iter().rev().find(|v| pred(v)).cloned()
    }

    /// Stops the process with SIGKILL and reaps it.
    pub fn kill(&self) {
        kill(&mut self.child());
    }

    /// Sends SIGTERM and waits at most `within` for the process to end;
    /// whether it did.
    pub fn terminate(&self, within: Duration) -> bool {
        terminate(&mut self.child(), within)
    }
}

/// Stops `child` with SIGKILL and reaps it.
pub fn kill(child: &mut Child) {
    let _ = child.kill(); // SIGKILL on Unix
    let _ = child.wait();
}

/// Sends `child` SIGTERM and waits at most `within` for it to end; whether
/// it did (a process still running is left alone and reported on stderr).
pub fn terminate(child: &mut Child, within: Duration) -> bool {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return true;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("process {} still running after SIGTERM", child.id());
    false
}
