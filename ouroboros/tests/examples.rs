//! The Rust `oecho`, `oping` and `ocbr` examples against a real IRMd: each
//! ends on the first SIGTERM or SIGINT, with its flows open, and a server
//! leaves no name behind (`irm name list` no longer shows the name it
//! created). The examples are the ones `cargo test` builds beside this test
//! (`target/<profile>/examples/`); where they are missing (a run filtered
//! to this test alone builds none) or no IRMd answers, each test skips
//! through `tests/support/require.rs` (need `ouroboros`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[path = "../../tests/support/require.rs"]
mod require;

const LAYER: &str = "local_layer";
/// How long an example may take to end after one signal.
const END_WITHIN: Duration = Duration::from_secs(5);

/// The tests take turns (several servers and flooding clients at once load
/// a shared IRMd).
static SERIAL: Mutex<()> = Mutex::new(());

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "cicada-ex-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The example `name` built beside this test binary, or `None` after a
/// SKIPPED line.
fn example(test: &str, name: &str) -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    // target/<profile>/deps/examples-HASH -> target/<profile>/examples/NAME
    let path = me.parent()?.parent()?.join("examples").join(name);
    if path.is_file() {
        return Some(path);
    }
    require::skip(
        require::Need::Ouroboros,
        test,
        format_args!(
            "the example {name} is not built ({}): run `cargo test -p cicada-ouroboros` (it builds the examples) or `cargo build -p cicada-ouroboros --examples` first",
            path.display()
        ),
    );
    None
}

/// The turn of the calling test, or `None` after a SKIPPED line when no
/// IRMd with `local_layer` answers.
fn ready(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    if !cicada_ouroboros::irmd_running() {
        require::skip(
            require::Need::Ouroboros,
            test,
            format_args!(
                "no IRMd answers on {} (run .ci/ouroboros.sh up)",
                cicada_ouroboros::IRM_SOCK_PATH
            ),
        );
        return None;
    }
    match cicada_ouroboros::list_ipcps() {
        Ok(l) if l.iter().any(|i| i.layer == LAYER) => {}
        other => {
            require::skip(
                require::Need::Ouroboros,
                test,
                format_args!("no IPCP in layer {LAYER}: {other:?}"),
            );
            return None;
        }
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

fn names() -> Vec<String> {
    cicada_ouroboros::list_names().expect("irm name list")
}

/// An example process; on drop it gets SIGTERM (never SIGKILL) if it still
/// runs, and is waited for.
struct Example {
    child: Child,
    out: BufReader<ChildStdout>,
    what: String,
}

impl Example {
    fn start(path: &PathBuf, args: &[&str]) -> Example {
        let mut child = Command::new(path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        let out = BufReader::new(child.stdout.take().expect("piped"));
        let what = format!("{} {}", path.display(), args.join(" "));
        Example { child, out, what }
    }

    /// Reads stdout until a line containing `what` (false at its end).
    fn wait_line(&mut self, what: &str) -> bool {
        let mut line = String::new();
        loop {
            line.clear();
            match self.out.read_line(&mut line) {
                Ok(0) | Err(_) => return false,
                Ok(_) if line.contains(what) => return true,
                Ok(_) => {}
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {}", self.what);
    }

    /// Sends one `sig` and waits for the exit: its status, and how long it
    /// took; `None` when it still ran after [`END_WITHIN`].
    fn end_on(&mut self, sig: &str) -> Option<(std::process::ExitStatus, Duration)> {
        self.signal(sig);
        let t = Instant::now();
        while t.elapsed() < END_WITHIN {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some((st, t.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(15) {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("{} still runs after a second SIGTERM", self.what);
        }
    }
}

/// Ends `ex` with one `sig` and checks it ended by itself, successfully.
fn ends_once(ex: &mut Example, sig: &str) {
    match ex.end_on(sig) {
        Some((st, took)) => {
            eprintln!("{} ended {took:?} after {sig}: {st}", ex.what);
            assert!(st.success(), "{} ended with {st} after {sig}", ex.what);
        }
        None => panic!("{} still runs {END_WITHIN:?} after {sig}", ex.what),
    }
}

/// A server started with `--layer` has its name listed, and after one
/// signal (with a client flow open, when `client` starts one) it has ended
/// and the name is gone.
fn server_cleans_up(
    test: &str,
    example_name: &str,
    ready_line: &str,
    sig: &str,
    client: impl FnOnce(&PathBuf, &str) -> Vec<Example>,
) {
    let Some(_turn) = ready(test) else { return };
    let Some(path) = example(test, example_name) else {
        return;
    };
    let name = unique(example_name);
    let mut server = Example::start(&path, &["-l", "-n", &name, "--layer", LAYER]);
    assert!(
        server.wait_line(ready_line),
        "{} did not start",
        server.what
    );
    assert!(
        names().contains(&name),
        "{name} is not listed while the server runs"
    );
    let mut clients = client(&path, &name);
    ends_once(&mut server, sig);
    assert!(
        !names().contains(&name),
        "{name} is still listed after the server ended"
    );
    for c in &mut clients {
        // The server is gone: the clients see it, or end on one SIGTERM.
        ends_once(c, "-TERM");
    }
}

#[test]
fn oecho_server_ends_on_one_sigterm_and_removes_its_name() {
    server_cleans_up(
        "oecho_server_ends_on_one_sigterm_and_removes_its_name",
        "oecho",
        "Starting the server",
        "-TERM",
        |_, _| Vec::new(),
    );
}

#[test]
fn oecho_server_ends_on_one_sigint_and_removes_its_name() {
    server_cleans_up(
        "oecho_server_ends_on_one_sigint_and_removes_its_name",
        "oecho",
        "Starting the server",
        "-INT",
        |_, _| Vec::new(),
    );
}

/// With a raw client and a reliable (`data`, FRCT) client pinging it, the
/// `oping` server ends on one SIGTERM (its flows deallocated, none hanging
/// in `flow_dealloc`), and so do the clients afterwards.
#[test]
fn oping_server_with_raw_and_reliable_clients_ends_on_one_sigterm() {
    server_cleans_up(
        "oping_server_with_raw_and_reliable_clients_ends_on_one_sigterm",
        "oping",
        "server started",
        "-TERM",
        |path, name| {
            ["raw", "data"]
                .iter()
                .map(|qos| {
                    let mut c =
                        Example::start(path, &["-n", name, "-c", "100000", "-i", "20", "-q", qos]);
                    assert!(c.wait_line("Pinging"), "{} did not start", c.what);
                    c
                })
                .collect()
        },
    );
}

/// With a client flooding it, the `ocbr` server ends on one SIGTERM; the
/// client then ends on one SIGTERM too.
#[test]
fn ocbr_server_with_a_flooding_client_ends_on_one_sigterm() {
    server_cleans_up(
        "ocbr_server_with_a_flooding_client_ends_on_one_sigterm",
        "ocbr",
        "started",
        "-TERM",
        |path, name| {
            let c = Example::start(path, &["-n", name, "-d", "60", "-f"]);
            std::thread::sleep(Duration::from_millis(500));
            vec![c]
        },
    );
}

/// Clients end on the first signal while they run (`oping` on SIGINT,
/// `ocbr` flooding on SIGTERM), their servers still up; then the servers.
#[test]
fn oping_and_ocbr_clients_end_on_one_signal() {
    let test = "oping_and_ocbr_clients_end_on_one_signal";
    let Some(_turn) = ready(test) else { return };
    let (Some(oping), Some(ocbr)) = (example(test, "oping"), example(test, "ocbr")) else {
        return;
    };
    let (pn, cn) = (unique("oping-srv"), unique("ocbr-srv"));
    let mut ps = Example::start(&oping, &["-l", "-n", &pn, "--layer", LAYER]);
    let mut cs = Example::start(&ocbr, &["-l", "-n", &cn, "--layer", LAYER]);
    assert!(ps.wait_line("started"), "{}", ps.what);
    assert!(cs.wait_line("started"), "{}", cs.what);
    let mut pc = Example::start(&oping, &["-n", &pn, "-c", "100000", "-i", "20"]);
    assert!(pc.wait_line("Pinging"), "{} did not start", pc.what);
    let mut cc = Example::start(&ocbr, &["-n", &cn, "-d", "60", "-f"]);
    std::thread::sleep(Duration::from_millis(500));
    ends_once(&mut pc, "-INT");
    ends_once(&mut cc, "-TERM");
    ends_once(&mut ps, "-TERM");
    ends_once(&mut cs, "-TERM");
    let left = names();
    assert!(
        !left.contains(&pn) && !left.contains(&cn),
        "a server's name is still listed"
    );
}
