//! Integration tests against a real IRMd (`.ci/ouroboros.sh up` starts one
//! with `local_layer`). Where Ouroboros is missing, each test skips through
//! `tests/support/require.rs` (need `ouroboros`): a loud SKIPPED line, or a
//! failure under `CICADA_REQUIRE`.
//!
//! Most tests talk to a helper process: this test binary started again with
//! `--ignored --exact helpers::<mode>` and the `CICADA_OURO_HELPER_*`
//! environment, since Ouroboros 0.23 cannot allocate a flow to a name of the
//! allocating process. Helpers are stopped with SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cicada_ouroboros::{
    flow_accept, flow_alloc, flow_join, AsyncFlow, Error, FEventQueue, FEventType, Flow,
    FlowProperties, FlowSet, FrctFlags, Name, QoSSpec,
};

const LAYER: &str = "local_layer";
/// The broadcast layer `.ci/ouroboros.sh up` bootstraps (`ipcpd-broadcast`).
const BC_LAYER: &str = "bc_layer";
const QOS_CONC: QoSSpec = QoSSpec::raw();
const T: Option<Duration> = Some(Duration::from_secs(10));

/// The tests take turns: in-process `flow_accept` takes flows for every name
/// the process is bound to, and Ouroboros 0.23 loses or mixes up packets
/// (and once crashed) with several FRCT flows used from different threads
/// of one process.
static SERIAL: Mutex<()> = Mutex::new(());

/// Returns None (after `skipped`) when Ouroboros is not usable,
/// else the turn of the calling test.
fn ready(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    if !ready_inner(test) {
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

fn ready_inner(test: &str) -> bool {
    if !cicada_ouroboros::irmd_running() {
        skipped(test, format_args!("no IRMd answers on {} (Ouroboros not installed or irmd not started; run .ci/ouroboros.sh up)",
            cicada_ouroboros::IRM_SOCK_PATH
        ));
        return false;
    }
    if let Err(e) = cicada_ouroboros::check() {
        skipped(
            test,
            format_args!("{} not usable: {e}", cicada_ouroboros::DEV_SONAME),
        );
        return false;
    }
    match cicada_ouroboros::list_ipcps() {
        Ok(l) if l.iter().any(|i| i.layer == LAYER) => true,
        Ok(_) => {
            skipped(
                test,
                format_args!("no IPCP in layer {LAYER} (run .ci/ouroboros.sh up)"),
            );
            false
        }
        Err(e) => {
            skipped(test, format_args!("cannot list IPCPs: {e}"));
            false
        }
    }
}

#[path = "../../tests/support/require.rs"]
mod require;

/// `test` cannot run: Ouroboros (or a part of it) is missing.
fn skipped(test: &str, why: std::fmt::Arguments<'_>) {
    require::skip(require::Need::Ouroboros, test, why);
}

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "cicada-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A child process, stopped with SIGTERM (never SIGKILL) on drop.
struct Proc {
    child: Child,
    out: Option<BufReader<ChildStdout>>,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line of stdout containing `what`.
    fn wait_for(&mut self, what: &str) -> bool {
        let Some(out) = self.out.as_mut() else {
            return false;
        };
        let mut line = String::new();
        loop {
            line.clear();
            match out.read_line(&mut line) {
                Ok(0) | Err(_) => return false,
                Ok(_) if line.contains(what) => return true,
                Ok(_) => {}
            }
        }
    }

    fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Starts a helper (see the `helpers` module) serving `name`.
fn helper(mode: &str, name: &str) -> Proc {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            &format!("helpers::{mode}"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CICADA_OURO_HELPER_NAME", name)
        .env("CICADA_OURO_HELPER_LAYER", LAYER)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn helper");
    let out = child.stdout.take().map(BufReader::new);
    let mut p = Proc { child, out };
    assert!(p.wait_for("HELPER READY"), "helper {mode} did not start");
    p
}

fn which(tool: &str) -> Option<String> {
    for dir in ["/usr/local/bin", "/usr/bin", "/usr/local/sbin", "/usr/sbin"] {
        let p = format!("{dir}/{tool}");
        if std::path::Path::new(&p).exists() {
            return Some(p);
        }
    }
    None
}

fn irm(args: &[&str]) -> bool {
    which("irm")
        .map(|irm| {
            Command::new(irm)
                .args(args)
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .unwrap_or(false)
}

#[test]
fn read_write_and_std_io_over_a_flow() {
    let Some(_serial) = ready("read_write_and_std_io_over_a_flow") else {
        return;
    };
    let name = unique("rw");
    let _h = helper("echo", &name);
    let mut f = flow_alloc(&name, Some(QoSSpec::raw()), T).expect("flow_alloc");
    assert!(f.is_allocated());
    f.set_rcv_timeout(T).unwrap();

    assert_eq!(f.write(b"hello").unwrap(), 5);
    assert_eq!(f.recv().unwrap(), b"hello");

    // A short read keeps the rest of the packet for the next reads.
    f.write(b"0123456789").unwrap();
    assert_eq!(f.read(4).unwrap(), b"0123");
    assert_eq!(f.read(4).unwrap(), b"4567");
    assert_eq!(f.read(100).unwrap(), b"89");

    // Every UTF-8 byte goes out (8 characters, 10 bytes): pyOuroboros
    // 0.23 writes as many bytes as the string has characters.
    assert_eq!(f.writeline("a line ✓").unwrap(), "a line ✓".len());
    assert_eq!(f.readline(2048).unwrap(), "a line ✓");

    // A large packet arrives whole (no partial read, no spurious 0).
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    f.write(&big).unwrap();
    assert_eq!(f.recv().unwrap(), big);
    f.write(b"after").unwrap();
    assert_eq!(f.recv().unwrap(), b"after");

    // std::io::Read / Write.
    writeln!(f, "through std::io").unwrap();
    let mut buf = [0u8; 64];
    let n = Read::read(&mut f, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"through std::io\n");
    let mut r = &f;
    (&f).write_all(b"by ref").unwrap();
    let n = Read::read(&mut r, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"by ref");
}

#[test]
fn qos_presets_and_frct_flags() {
    let Some(_serial) = ready("qos_presets_and_frct_flags") else {
        return;
    };
    // Each preset runs in a child process of its own: libouroboros 0.23
    // itself now and then segfaults inside `flow_read` (in
    // `ssm_pk_buff_head`) on these preset flows, and a crash must not take
    // the whole test binary with it. It comes in anything from one run in
    // five to two children in three, mostly on the last preset, `data`
    // (FRCT with retransmission), at times several in a row (see
    // docs/ouroboros.md, Known limits). With one preset a
    // child, a crash costs a retry of that preset only (a few
    // milliseconds), so it can be retried more often. A crash is reported
    // loudly; a crash every time, or any assertion failing, fails the test.
    const QOS_ATTEMPTS: u32 = 10;
    use std::os::unix::process::ExitStatusExt;
    let exe = std::env::current_exe().expect("current_exe");
    for (preset, qos) in qos_presets().iter().enumerate() {
        let mut passed = false;
        for attempt in 1..=QOS_ATTEMPTS {
            let status = Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "helpers::qos",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("CICADA_OURO_QOS_CHILD", preset.to_string())
                .status()
                .expect("spawn the qos child");
            if status.success() {
                passed = true;
                break;
            }
            assert_eq!(
                status.signal(),
                Some(11),
                "the qos child of {qos:?} failed: {status:?}"
            );
            eprintln!(
                "KNOWN OUROBOROS 0.23 CRASH: libouroboros segfaulted in the qos child of \
                 {qos:?} (attempt {attempt} of {QOS_ATTEMPTS}); see docs/ouroboros.md"
            );
        }
        assert!(
            passed,
            "libouroboros crashed {QOS_ATTEMPTS} times in a row on {qos:?}"
        );
    }
}

/// The QoS presets `qos_presets_and_frct_flags` checks, one child each.
fn qos_presets() -> [QoSSpec; 6] {
    [
        QoSSpec::raw(),
        QoSSpec::raw_no_errors(),
        QoSSpec::best_effort(),
        QoSSpec::video(),
        QoSSpec::voice(),
        QoSSpec::data(),
    ]
}

/// The body of `qos_presets_and_frct_flags` for one preset, run in a
/// child process.
fn qos_preset_child(qos: QoSSpec) {
    // One helper per flow: several FRCT flows served from different
    // threads of one process misbehave in 0.23 (see docs/ouroboros.md).
    let name = unique("qos");
    let _h = helper("echo", &name);
    let f = flow_alloc(&name, Some(qos), T).expect("flow_alloc with a preset");
    let got = f.get_qos().unwrap();
    assert_eq!(got.loss, qos.loss, "{qos:?} -> {got:?}");
    assert_eq!(got.in_order, qos.in_order);
    // A preset that allows loss may lose a packet (0.23 loses the first one
    // on in-order lossy flows more often than not): try a few times, a
    // second each. One without loss must echo at once.
    let (attempts, wait) = if qos.loss > 0 {
        (5, Some(Duration::from_secs(1)))
    } else {
        (1, T)
    };
    f.set_rcv_timeout(wait).unwrap();
    let echoed = (0..attempts).any(|_| {
        f.write(b"q").unwrap();
        matches!(f.recv(), Ok(b) if b == b"q")
    });
    assert!(echoed, "no echo over {qos:?} in {attempts} attempts");
    if qos.in_order {
        // FRCT runs on in-order flows.
        let fl = f.get_frct_flags().expect("frct flags on an FRCT flow");
        assert_eq!(fl.contains(FrctFlags::RETRANSMISSION), qos.loss == 0);
        f.set_frct_flags(fl | FrctFlags::LINGER).unwrap();
        // 0.23 can only clear FRCT flags (RTX stays as the QoS set it).
        assert_eq!(
            f.get_frct_flags()
                .unwrap()
                .contains(FrctFlags::RETRANSMISSION),
            qos.loss == 0
        );
    } else {
        assert!(matches!(f.get_frct_flags(), Err(Error::Permission { .. })));
    }
}

#[test]
fn timeouts_flags_and_queue_lengths() {
    let Some(_serial) = ready("timeouts_flags_and_queue_lengths") else {
        return;
    };
    let name = unique("timeo");
    let _h = helper("echo", &name);
    let f = flow_alloc(&name, None, T).expect("flow_alloc");

    assert_eq!(f.get_rcv_timeout().unwrap(), None);
    f.set_rcv_timeout(Some(Duration::from_millis(150))).unwrap();
    assert_eq!(
        f.get_rcv_timeout().unwrap(),
        Some(Duration::from_millis(150))
    );
    let t0 = Instant::now();
    let e = f.read(10).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert_eq!(e.code(), Some(libc::ETIMEDOUT));
    assert!(t0.elapsed() >= Duration::from_millis(100));
    assert!(t0.elapsed() < Duration::from_secs(3));

    assert_eq!(f.get_snd_timeout().unwrap(), None);
    f.set_snd_timeout(Some(Duration::from_millis(500))).unwrap();
    assert_eq!(
        f.get_snd_timeout().unwrap(),
        Some(Duration::from_millis(500))
    );
    f.set_snd_timeout(None).unwrap();
    assert_eq!(f.get_snd_timeout().unwrap(), None);

    let flags = f.get_flags().unwrap();
    assert!(flags.contains(FlowProperties::READ_WRITE));
    assert!(flags.contains(FlowProperties::NO_PARTIAL_READ));
    // The binding keeps the library flow in non-blocking write mode (it
    // waits itself); the flags say what the user asked for.
    assert!(!flags.contains(FlowProperties::NON_BLOCKING_WRITE));
    f.set_flags(flags | FlowProperties::NON_BLOCKING_WRITE)
        .unwrap();
    assert!(f
        .get_flags()
        .unwrap()
        .contains(FlowProperties::NON_BLOCKING_WRITE));
    f.set_flags(flags | FlowProperties::NON_BLOCKING_READ)
        .unwrap();
    assert!(f
        .get_flags()
        .unwrap()
        .contains(FlowProperties::NON_BLOCKING_READ));
    assert!(matches!(f.read(10), Err(Error::WouldBlock { .. })));

    // Queue lengths: the echoes pile up in the receive queue.
    assert_eq!(f.get_tx_queue_len().unwrap(), 0);
    for _ in 0..3 {
        f.write(b"x").unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.get_rx_queue_len().unwrap() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // A raw flow may drop packets (seen when the IRMd's pool runs low).
    let queued = f.get_rx_queue_len().unwrap();
    assert!((1..=3).contains(&queued), "rx queue {queued}");
    f.set_flags(FlowProperties::READ_WRITE).unwrap();
    f.set_rcv_timeout(T).unwrap();
    // 0.23 now and then counts a packet in the receive queue's length that
    // no read returns (docs/ouroboros.md, known limits): every echo read is
    // whole, at least one is read, and none beyond what was counted.
    let mut read = 0;
    for _ in 0..queued {
        match f.recv() {
            Ok(echo) => {
                assert_eq!(echo, b"x");
                read += 1;
            }
            Err(Error::Timeout { .. }) => break,
            Err(e) => panic!("reading a queued echo: {e}"),
        }
    }
    assert!(
        read >= 1,
        "none of the {queued} echoes counted in the queue could be read"
    );
    f.set_rcv_timeout(Some(Duration::from_millis(50))).unwrap();
    assert!(matches!(f.recv(), Err(Error::Timeout { .. })));
}

#[test]
fn dealloc_then_alloc_again() {
    let Some(_serial) = ready("dealloc_then_alloc_again") else {
        return;
    };
    let name = unique("realloc");
    let _h = helper("echo", &name);
    let mut f = flow_alloc(&name, None, T).expect("flow_alloc");
    f.dealloc().unwrap();
    assert!(!f.is_allocated());
    assert!(matches!(f.write(b"x"), Err(Error::Deallocated)));
    assert!(matches!(f.read(1), Err(Error::Deallocated)));
    assert!(matches!(f.get_qos(), Err(Error::Deallocated)));
    f.dealloc().unwrap(); // twice is fine

    f.alloc(&name, Some(QoSSpec::raw_no_errors()), T)
        .expect("re-alloc");
    f.set_rcv_timeout(T).unwrap();
    f.write(b"again").unwrap();
    assert_eq!(f.recv().unwrap(), b"again");

    let mut g = Flow::unallocated();
    assert!(matches!(g.read(1), Err(Error::Deallocated)));
    g.alloc(&name, None, T)
        .expect("alloc on an unallocated object");
    g.set_rcv_timeout(T).unwrap();
    g.write(b"g").unwrap();
    assert_eq!(g.recv().unwrap(), b"g");
}

#[test]
fn unknown_name_is_a_typed_error() {
    let Some(_serial) = ready("unknown_name_is_a_typed_error") else {
        return;
    };
    let name = unique("nobody-home");
    let e = flow_alloc(&name, None, Some(Duration::from_secs(3))).unwrap_err();
    assert!(e.code().is_some(), "{e:?}");
    assert!(!e.is_unavailable());
    eprintln!("flow_alloc to an unknown name: {e} ({e:?})");
}

#[test]
fn flow_set_and_event_queue() {
    let Some(_serial) = ready("flow_set_and_event_queue") else {
        return;
    };
    let name = unique("fset");
    let _h = helper("echo", &name);
    let a = flow_alloc(&name, None, T).unwrap();
    let b = flow_alloc(&name, None, T).unwrap();
    let mut set = FlowSet::with_flows(&[&a, &b]).unwrap();
    assert!(set.contains(&a) && set.contains(&b));
    let mut fq = FEventQueue::new().unwrap();

    // Nothing can happen on an empty set: the wait times out.
    let empty = FlowSet::new().unwrap();
    let e = empty
        .wait(&mut fq, Some(Duration::from_millis(100)))
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");

    b.write(b"to b").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        if set.wait(&mut fq, Some(Duration::from_secs(1))).is_ok() {
            for (id, t) in &mut fq {
                if t == FEventType::FlowPkt {
                    seen = Some(id);
                }
            }
        }
    }
    assert_eq!(seen, b.id());
    b.set_rcv_timeout(T).unwrap();
    assert_eq!(b.recv().unwrap(), b"to b");

    set.remove(&b);
    assert!(!set.contains(&b));
    set.zero();
    assert!(!set.contains(&a));
    set.add(&a).unwrap();
    assert!(set.contains(&a));
}

#[test]
fn flow_down_when_the_peer_process_ends() {
    let Some(_serial) = ready("flow_down_when_the_peer_process_ends") else {
        return;
    };
    let name = unique("down");
    let mut h = helper("echo", &name);
    // No receive timeout: the read must still end when the peer dies.
    let f = flow_alloc(&name, Some(QoSSpec::raw().with_timeout(3000)), T).unwrap();
    f.write(b"ping").unwrap();
    assert_eq!(f.recv().unwrap(), b"ping");

    let t0 = Instant::now();
    h.terminate();
    let e = f.recv().unwrap_err();
    eprintln!("read after the peer ended: {e} after {:?}", t0.elapsed());
    assert!(e.is_flow_dead(), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(15));
    // Once the binding saw the flow die, writes say so too.
    assert!(f.write(b"x").unwrap_err().is_flow_dead());
}

#[test]
fn own_name_is_refused_and_accept_sees_peer_qos() {
    let Some(_serial) = ready("own_name_is_refused_and_accept_sees_peer_qos") else {
        return;
    };
    let name = unique("accept");
    let n = Name::bind(&name, &[LAYER]).expect("Name::bind");
    assert_eq!(n.name(), name);
    assert!(cicada_ouroboros::list_names().unwrap().contains(&name));
    assert!(matches!(flow_alloc(&name, None, T), Err(Error::OwnName(_))));

    let _h = helper("client", &name);
    let f = flow_accept(T).expect("flow_accept");
    // The helper asks for qos_raw_no_errors with a 7 s peer timeout (the
    // IRMd delivers the nearest QoS cube it has).
    eprintln!("accepted with {:?}", f.qos());
    assert!(!f.qos().in_order);
    f.set_rcv_timeout(T).unwrap();
    assert_eq!(f.readline(100).unwrap(), "hello from the client");
    f.writeline("bye").unwrap();
    drop(f);

    // Timeout of an accept with nobody calling.
    let t0 = Instant::now();
    let e = flow_accept(Some(Duration::from_millis(200))).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));

    drop(n);
    assert!(!cicada_ouroboros::list_names().unwrap().contains(&name));
}

#[test]
fn concurrent_allocs_to_one_name() {
    let Some(_serial) = ready("concurrent_allocs_to_one_name") else {
        return;
    };
    let name = unique("conc");
    let _h = helper("echo", &name);
    let flows: Vec<Flow> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|_| s.spawn(|| flow_alloc(&name, Some(QOS_CONC), T)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("thread").expect("flow_alloc"))
            .collect()
    });
    for (i, f) in flows.iter().enumerate() {
        f.set_rcv_timeout(T).unwrap();
        f.write(format!("flow {i}").as_bytes()).unwrap();
    }
    for (i, f) in flows.iter().enumerate() {
        assert_eq!(f.recv().unwrap(), format!("flow {i}").as_bytes());
    }
}

#[test]
fn async_flows_on_one_event_thread() {
    let Some(_serial) = ready("async_flows_on_one_event_thread") else {
        return;
    };
    let name = unique("async");
    let _h = helper("echo", &name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..4u32 {
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                let f = tokio::task::spawn_blocking(move || flow_alloc(&name, None, T))
                    .await
                    .unwrap()
                    .unwrap();
                let f = AsyncFlow::new(f).unwrap();
                for j in 0..50u32 {
                    let msg = format!("{i}:{j}");
                    f.write(msg.as_bytes()).await.unwrap();
                    let got = tokio::time::timeout(Duration::from_secs(10), f.recv())
                        .await
                        .expect("async recv timed out")
                        .unwrap();
                    assert_eq!(got, msg.as_bytes());
                }
                // tokio::io traits.
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut f = f;
                f.write_all(b"tokio io").await.unwrap();
                let mut buf = [0u8; 32];
                let n = AsyncReadExt::read(&mut f, &mut buf).await.unwrap();
                assert_eq!(&buf[..n], b"tokio io");
                f.into_inner().unwrap()
            }));
        }
        for t in tasks {
            let f = t.await.unwrap();
            assert!(!f
                .get_flags()
                .unwrap()
                .contains(FlowProperties::NON_BLOCKING_READ));
        }
    });
}

#[test]
fn async_read_ends_when_the_peer_process_ends() {
    let Some(_serial) = ready("async_read_ends_when_the_peer_process_ends") else {
        return;
    };
    let name = unique("adown");
    let mut h = helper("echo", &name);
    let f = flow_alloc(&name, Some(QoSSpec::raw().with_timeout(3000)), T).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = AsyncFlow::new(f).unwrap();
    rt.block_on(async {
        f.write(b"hi").await.unwrap();
        assert_eq!(f.recv().await.unwrap(), b"hi");
        h.terminate();
        let r = tokio::time::timeout(Duration::from_secs(15), f.recv())
            .await
            .expect("async read did not end after the peer died");
        let e = r.unwrap_err();
        assert!(e.is_flow_dead(), "{e:?}");
    });
}

#[test]
fn rust_client_to_c_oecho_server() {
    let Some(_serial) = ready("rust_client_to_c_oecho_server") else {
        return;
    };
    let Some(oecho) = which("oecho") else {
        skipped(
            "rust_client_to_c_oecho_server",
            format_args!("the C oecho is not installed"),
        );
        return;
    };
    let name = unique("c-oecho");
    let child = Command::new(oecho)
        .arg("-l")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn oecho");
    let _p = Proc { child, out: None };
    let pid = _p.pid().to_string();
    assert!(irm(&["name", "create", &name]), "irm name create");
    assert!(irm(&["name", "register", &name, "layer", LAYER]));
    // The C server needs a moment to announce itself to the IRMd.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !irm(&["bind", "process", &pid, "name", &name]) {
        assert!(Instant::now() < deadline, "irm bind process");
        std::thread::sleep(Duration::from_millis(50));
    }
    let f = flow_alloc(&name, None, T).expect("flow_alloc to C oecho");
    f.set_rcv_timeout(T).unwrap();
    f.write(b"Client says hi!\0").unwrap();
    assert_eq!(f.readline(256).unwrap(), "Client says hi!");
    drop(f);
    irm(&["name", "destroy", &name]);
}

#[test]
fn c_oecho_client_to_rust_server() {
    let Some(_serial) = ready("c_oecho_client_to_rust_server") else {
        return;
    };
    let Some(oecho) = which("oecho") else {
        skipped(
            "c_oecho_client_to_rust_server",
            format_args!("the C oecho is not installed"),
        );
        return;
    };
    // The C client always calls the name "oecho".
    let _n = Name::bind("oecho", &[LAYER]).expect("bind oecho");
    let client = std::thread::spawn(move || {
        Command::new(oecho)
            .stderr(Stdio::inherit())
            .output()
            .expect("run C oecho")
    });
    let f = flow_accept(T).expect("accept from C oecho");
    f.set_rcv_timeout(T).unwrap();
    let msg = f.recv().unwrap();
    assert_eq!(msg, b"Client says hi!\0");
    f.write(&msg).unwrap();
    let out = client.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Server replied with Client says hi!"),
        "C oecho said: {stdout}"
    );
}

#[test]
fn name_management() {
    let Some(_serial) = ready("name_management") else {
        return;
    };
    let name = unique("names");
    cicada_ouroboros::create_name(&name).unwrap();
    assert!(cicada_ouroboros::list_names().unwrap().contains(&name));
    cicada_ouroboros::register_name(&name, LAYER).unwrap();
    assert!(matches!(
        cicada_ouroboros::register_name(&name, "no-such-layer"),
        Err(Error::NoSuchLayer(_))
    ));
    cicada_ouroboros::unregister_name(&name, LAYER).unwrap();
    cicada_ouroboros::destroy_name(&name).unwrap();
    assert!(!cicada_ouroboros::list_names().unwrap().contains(&name));
    assert!(matches!(
        cicada_ouroboros::create_name("bad\0name"),
        Err(Error::InvalidName(_))
    ));
}

/// `flow_join`: two processes join the broadcast layer; what one writes the
/// other reads (the broadcast IPCP forwards a packet to every other joined
/// flow), both ways.
#[test]
fn flow_join_broadcast_layer_between_processes() {
    let Some(_serial) = ready("flow_join_broadcast_layer_between_processes") else {
        return;
    };
    match cicada_ouroboros::list_ipcps() {
        Ok(l) if l.iter().any(|i| i.layer == BC_LAYER) => {}
        _ => {
            skipped(
                "flow_join_broadcast_layer_between_processes",
                format_args!("no broadcast IPCP in layer {BC_LAYER} (run .ci/ouroboros.sh up)"),
            );
            return;
        }
    }
    // The helper joins the layer and answers every `ping X` it reads with
    // `pong X`.
    let _h = helper("join", BC_LAYER);
    let f = flow_join(BC_LAYER, T).expect("flow_join");
    assert!(f.is_allocated());
    f.set_rcv_timeout(Some(Duration::from_millis(200))).unwrap();
    let tag = unique("bc");
    let want = format!("pong {tag}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = false;
    // The helper's join may still be settling in the IPCP: ping until the
    // answer comes, within the deadline.
    while !got && Instant::now() < deadline {
        f.writeline(&format!("ping {tag}")).unwrap();
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            match f.readline(2048) {
                Ok(l) if l == want => {
                    got = true;
                    break;
                }
                Ok(_) => {} // another member's packet, or our ping repeated
                Err(Error::Timeout { .. }) => {}
                Err(e) => panic!("read on the joined flow: {e}"),
            }
        }
    }
    assert!(got, "no `{want}` on the broadcast layer within 10 s");
    // A name that is not a broadcast layer cannot be joined.
    assert!(flow_join("cicada-no-such-layer", Some(Duration::from_secs(3))).is_err());
}

/// Helper processes for the tests above; they do nothing unless started by
/// a test (with `CICADA_OURO_HELPER_NAME` set).
mod helpers {
    use super::*;

    #[test]
    #[ignore = "helper process, started by the other tests"]
    fn qos() {
        let preset = std::env::var("CICADA_OURO_QOS_CHILD").ok();
        if let Some(i) = preset.and_then(|v| v.parse::<usize>().ok()) {
            qos_preset_child(qos_presets()[i]);
        }
    }

    fn env() -> Option<(String, String)> {
        Some((
            std::env::var("CICADA_OURO_HELPER_NAME").ok()?,
            std::env::var("CICADA_OURO_HELPER_LAYER").ok()?,
        ))
    }

    fn announce() {
        // Leave when the test process is gone (it may have crashed without
        // stopping us).
        let parent = std::os::unix::process::parent_id();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            if std::os::unix::process::parent_id() != parent {
                // Stop like on SIGTERM.
                if let Ok(f) = cicada_ouroboros::termination_flag() {
                    f.store(true, Ordering::Relaxed);
                }
                // A worker may be stuck writing to the dead test's flow
                // (FRCT waits for its acknowledgements): end as a second
                // SIGTERM would, with `exit` (the library's destructor
                // runs; never a kill inside the library). Left running, a
                // helper holds the IRMd and the test run's output pipe.
                std::thread::sleep(Duration::from_secs(2));
                // That destructor can hang too (a
                // worker in `flow_dealloc` waiting for the dead peer to
                // drain its ring, the destructor joining the library's
                // receive thread): if the process still runs 5 s into
                // `exit`, it ends without running the rest. Its threads
                // wait on condition variables there, holding no lock of
                // the shared pool, and the IRMd reclaims a dead process's
                // flows.
                std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_secs(5));
                    // SAFETY: `_exit` only ends the process; nothing of
                    // ours is left to clean up in a helper being torn down.
                    unsafe { libc::_exit(1) }
                });
                std::process::exit(1);
            }
        });
        println!("HELPER READY");
        let _ = std::io::stdout().flush();
    }

    /// Binds the name and echoes every packet of every flow until SIGTERM,
    /// then deallocates its flows and returns (dying inside the library
    /// can wedge the IRMd's packet pool).
    #[test]
    #[ignore = "helper process, started by the other tests"]
    fn echo() {
        let Some((name, layer)) = env() else { return };
        let stop = cicada_ouroboros::termination_flag().expect("signal handler");
        let _n = Name::bind(&name, &[&layer]).expect("helper bind");
        announce();
        let slice = Some(Duration::from_millis(100));
        let mut workers = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let f = match flow_accept(slice) {
                Ok(f) => f,
                Err(Error::Timeout { .. }) => continue,
                Err(e) => {
                    eprintln!("helper accept: {e}");
                    continue;
                }
            };
            let stop = stop.clone();
            workers.push(std::thread::spawn(move || {
                if f.set_rcv_timeout(slice).is_err() {
                    return;
                }
                while !stop.load(Ordering::Relaxed) {
                    match f.recv() {
                        Ok(p) => {
                            if f.write(&p).is_err() {
                                return;
                            }
                        }
                        Err(Error::Timeout { .. }) => {}
                        Err(_) => return,
                    }
                }
            }));
        }
        for w in workers {
            let _ = w.join();
        }
    }

    /// Allocates a flow to the name with qos_raw_no_errors, says hello, waits for
    /// the answer.
    #[test]
    #[ignore = "helper process, started by the other tests"]
    fn client() {
        let Some((name, _)) = env() else { return };
        announce();
        let f = flow_alloc(&name, Some(QoSSpec::raw_no_errors().with_timeout(7000)), T)
            .expect("helper alloc");
        f.writeline("hello from the client").unwrap();
        f.set_rcv_timeout(T).unwrap();
        let _ = f.readline(100);
    }

    /// Joins the broadcast layer named by `CICADA_OURO_HELPER_NAME` and
    /// answers every `ping X` line it reads with `pong X`, until SIGTERM.
    #[test]
    #[ignore = "helper process, started by the other tests"]
    fn join() {
        let Some((layer, _)) = env() else { return };
        let stop = cicada_ouroboros::termination_flag().expect("signal handler");
        let f = flow_join(&layer, T).expect("helper flow_join");
        f.set_rcv_timeout(Some(Duration::from_millis(100))).unwrap();
        announce();
        while !stop.load(Ordering::Relaxed) {
            match f.readline(2048) {
                Ok(l) => {
                    if let Some(tag) = l.strip_prefix("ping ") {
                        if f.writeline(&format!("pong {tag}")).is_err() {
                            return;
                        }
                    }
                }
                Err(Error::Timeout { .. }) => {}
                Err(_) => return,
            }
        }
    }
}
