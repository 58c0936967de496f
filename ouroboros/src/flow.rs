//! Flows: allocation, reading, writing and flow control.

use std::collections::HashMap;
use std::ffi::{c_int, CString};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{codes, Error, Result};
use crate::ffi::{self, Lib, RawQos};
use crate::qos::QoSSpec;

/// The largest packet Ouroboros 0.23 carries: its biggest pool blocks are
/// 1 MiB (headers included), available to root. Unprivileged processes get
/// per-user pools with 256 KiB blocks, and a udp4 layer carries 8980 B.
pub const MAX_PACKET_SIZE: usize = 1 << 20;

/// While no receive timeout is set, blocking reads wait in slices of this
/// length, so that a dead peer is noticed (a read without a timeout never
/// wakes when the peer dies in 0.23).
const READ_SLICE: Duration = Duration::from_millis(200);

/// Slots of a flow's transmit ring (`SSM_RBUFF_SIZE` 1024 in 0.23, of which
/// 1023 usable). A non-blocking `flow_write` to a full ring frees the
/// packet and still reports success, so the binding checks the queue length
/// first.
const TX_RING_USABLE: usize = 1023;

/// Longest pause between two tries of a blocking write that found the
/// packet pool (or the transmit ring) full.
const WRITE_BACKOFF_MAX: Duration = Duration::from_micros(500);

bitflags::bitflags! {
    /// Flow flags (`fccntl` `FLOWSFLAGS`/`FLOWGFLAGS`), the pyOuroboros
    /// `FlowProperties`.
    ///
    /// The binding always keeps [`NO_PARTIAL_READ`](Self::NO_PARTIAL_READ)
    /// set: it reads whole packets into a buffer of [`MAX_PACKET_SIZE`]
    /// and hands out the bytes itself, so no data is lost on short reads.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct FlowProperties: u32 {
        /// Read-only flow (`FLOWFRDONLY`, value 0: the absence of the
        /// access-mode bits).
        const READ_ONLY = 0o0;
        /// Write-only flow (`FLOWFWRONLY`).
        const WRITE_ONLY = 0o1;
        /// Read-write flow (`FLOWFRDWR`).
        const READ_WRITE = 0o2;
        /// The flow is down (`FLOWFDOWN`).
        const DOWN = 0o4;
        /// Non-blocking reads (`FLOWFRNOBLOCK`).
        const NON_BLOCKING_READ = 0o1000;
        /// Non-blocking writes (`FLOWFWNOBLOCK`).
        const NON_BLOCKING_WRITE = 0o2000;
        /// Non-blocking reads and writes (`FLOWFNONBLOCK`).
        const NON_BLOCKING = 0o3000;
        /// No partial reads (`FLOWFRNOPART`).
        const NO_PARTIAL_READ = 0o10000;
        /// No partial writes (`FLOWFWNOPART`).
        const NO_PARTIAL_WRITE = 0o20000;
    }
}

bitflags::bitflags! {
    /// FRCT (flow and retransmission control) flags of a flow.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct FrctFlags: u16 {
        /// Reliable flow: retransmission (`FRCTFRTX`).
        const RETRANSMISSION = 0o1;
        /// Feedback from the receiver (`FRCTFRESCNTL`).
        const RESOURCE_CONTROL = 0o2;
        /// Send unsent data before deallocating (`FRCTFLINGER`).
        const LINGER = 0o4;
    }
}

/// The identifier (flow descriptor) of an allocated flow, as reported by
/// [`FEventQueue::next`](crate::FEventQueue::next).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub(crate) i32);

impl FlowId {
    /// The C flow descriptor.
    pub fn raw(self) -> i32 {
        self.0
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fd {}", self.0)
    }
}

pub(crate) const ALIVE: u8 = 0;
pub(crate) const DOWN: u8 = 1;
pub(crate) const PEER: u8 = 2;

/// Names this process is bound to (see [`crate::Name`]), with a count.
pub(crate) fn bound_names() -> MutexGuard<'static, HashMap<String, usize>> {
    static BOUND: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    BOUND
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// One lock per destination name: concurrent `flow_alloc`s to the same
/// name race inside Ouroboros 0.23, so the binding runs them one at a time.
fn alloc_lock(name: &str) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut m = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    m.entry(name.to_owned()).or_default().clone()
}

pub(crate) fn c_name(name: &str) -> Result<CString> {
    if name.is_empty() || name.len() > ffi::NAME_SIZE {
        return Err(Error::InvalidName(name.to_owned()));
    }
    CString::new(name).map_err(|_| Error::InvalidName(name.to_owned()))
}

#[derive(Default)]
struct Rx {
    /// Buffer of capacity MAX_PACKET_SIZE once used; `buf[pos..]` is what is
    /// left of the last packet.
    buf: Vec<u8>,
    pos: usize,
}

/// An Ouroboros flow.
///
/// A flow is deallocated when it is dropped (the Rust form of
/// pyOuroboros' `with` statement) or by [`Flow::dealloc`]; after that,
/// every call returns [`Error::Deallocated`] until [`Flow::alloc`]
/// allocates it again. Reading and writing take `&self`, so one thread may
/// read while another writes; deallocation needs `&mut self` or ownership,
/// so safe code cannot deallocate a flow another thread is blocked on.
///
/// ```no_run
/// use cicada_ouroboros::{flow_alloc, QoSSpec};
/// use std::time::Duration;
///
/// # fn main() -> Result<(), cicada_ouroboros::Error> {
/// let flow = flow_alloc("oecho", Some(QoSSpec::raw()), Some(Duration::from_secs(5)))?;
/// flow.set_rcv_timeout(Some(Duration::from_secs(2)))?;
/// flow.write(b"Client says hi!\0")?;
/// let reply = flow.recv()?;
/// println!("{} bytes back", reply.len());
/// # Ok(())
/// # }
/// ```
pub struct Flow {
    fd: c_int,
    lib: Option<&'static Lib>,
    qos: QoSSpec,
    rx: Mutex<Rx>,
    /// The receive timeout the user asked for (the library is given
    /// READ_SLICE while this is None).
    rcv_timeo: Mutex<Option<Duration>>,
    /// The send timeout the user asked for: the binding implements blocking
    /// writes itself (see [`Flow::write`]).
    snd_timeo: Mutex<Option<Duration>>,
    /// Whether the user asked for non-blocking writes (the library flow is
    /// always in non-blocking write mode).
    nb_write: AtomicBool,
    state: Arc<AtomicU8>,
}

impl fmt::Debug for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flow")
            .field("fd", &self.fd)
            .field("qos", &self.qos)
            .finish_non_exhaustive()
    }
}

/// Allocates a flow to `name`, with an optional QoS (`None` = the
/// library's default, `qos_raw`) and timeout (`None` = the IRMd's, 20 s).
///
/// ```no_run
/// # fn main() -> Result<(), cicada_ouroboros::Error> {
/// let f = cicada_ouroboros::flow_alloc("oecho", None, None)?;
/// f.write(b"hi\0")?;
/// # Ok(())
/// # }
/// ```
pub fn flow_alloc(name: &str, qos: Option<QoSSpec>, timeout: Option<Duration>) -> Result<Flow> {
    let mut f = Flow::unallocated();
    f.alloc(name, qos, timeout)?;
    Ok(f)
}

/// Accepts the next incoming flow for the names this process is bound to,
/// waiting at most `timeout` (`None` = forever). [`Flow::qos`] gives the QoS
/// the peer asked for.
///
/// ```no_run
/// # fn main() -> Result<(), cicada_ouroboros::Error> {
/// let f = cicada_ouroboros::flow_accept(None)?;
/// println!("peer asked for {:?}", f.qos());
/// # Ok(())
/// # }
/// ```
pub fn flow_accept(timeout: Option<Duration>) -> Result<Flow> {
    let lib = ffi::lib()?;
    let mut q = RawQos::default();
    let fd = lib.flow_accept(&mut q, timeout);
    if fd < 0 {
        return Err(Error::from_ret("flow_accept", fd.into()));
    }
    Flow::init(lib, fd, QoSSpec::from_raw(q))
}

/// Joins the broadcast layer `name` (a flow to every member).
///
/// ```no_run
/// # fn main() -> Result<(), cicada_ouroboros::Error> {
/// let f = cicada_ouroboros::flow_join("my_broadcast_layer", None)?;
/// f.write(b"to everyone")?;
/// # Ok(())
/// # }
/// ```
pub fn flow_join(name: &str, timeout: Option<Duration>) -> Result<Flow> {
    let lib = ffi::lib()?;
    let c = c_name(name)?;
    let fd = lib.flow_join(&c, timeout);
    if fd < 0 {
        return Err(Error::from_ret("flow_join", fd.into()));
    }
    Flow::init(lib, fd, QoSSpec::raw())
}

fn check(op: &'static str, r: c_int) -> Result<()> {
    if r < 0 {
        Err(Error::from_ret(op, r.into()))
    } else {
        Ok(())
    }
}

impl Flow {
    /// A flow object that is not allocated (pyOuroboros' `Flow()`); use
    /// [`Flow::alloc`] on it. Loads nothing.
    pub fn unallocated() -> Flow {
        Flow {
            fd: -1,
            lib: None,
            qos: QoSSpec::raw(),
            rx: Mutex::new(Rx::default()),
            rcv_timeo: Mutex::new(None),
            snd_timeo: Mutex::new(None),
            nb_write: AtomicBool::new(false),
            state: Arc::new(AtomicU8::new(ALIVE)),
        }
    }

    fn init(lib: &'static Lib, fd: c_int, qos: QoSSpec) -> Result<Flow> {
        let mut f = Flow::unallocated();
        f.adopt(lib, fd, qos)?;
        Ok(f)
    }

    fn adopt(&mut self, lib: &'static Lib, fd: c_int, qos: QoSSpec) -> Result<()> {
        self.fd = fd;
        self.lib = Some(lib);
        self.qos = qos;
        self.state = Arc::new(AtomicU8::new(ALIVE));
        *self.rx.get_mut().unwrap_or_else(|e| e.into_inner()) = Rx::default();
        *self.rcv_timeo.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        *self.snd_timeo.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        *self.nb_write.get_mut() = false;
        // Whole packets only (a short read would lose the rest of the
        // packet), reads that wake up to notice a dead peer, and writes
        // that never block inside the library (see `Flow::write`).
        let flags = (FlowProperties::READ_WRITE
            | FlowProperties::NO_PARTIAL_WRITE
            | FlowProperties::NO_PARTIAL_READ
            | FlowProperties::NON_BLOCKING_WRITE)
            .bits();
        let r = check("fccntl(FLOWSFLAGS)", lib.set_flags(fd, flags)).and_then(|_| {
            check(
                "fccntl(FLOWSRCVTIMEO)",
                lib.set_timeout(fd, false, Some(READ_SLICE)),
            )
        });
        if let Err(e) = r {
            let _ = self.dealloc();
            return Err(e);
        }
        Ok(())
    }

    /// (Re-)allocates this flow object to `name` (pyOuroboros'
    /// `f.alloc(name)`); a flow it held before is deallocated first.
    ///
    /// Allocations to the same name are serialized within the process (they
    /// race inside Ouroboros 0.23), and an allocation to a name this process
    /// is bound to through [`crate::Name`] fails with [`Error::OwnName`].
    pub fn alloc(
        &mut self,
        name: &str,
        qos: Option<QoSSpec>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        if self.fd >= 0 {
            self.dealloc()?;
        }
        let c = c_name(name)?;
        if bound_names().contains_key(name) {
            return Err(Error::OwnName(name.to_owned()));
        }
        let lib = ffi::lib()?;
        let lock = alloc_lock(name);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut raw = qos.map(QoSSpec::to_raw);
        let fd = lib.flow_alloc(&c, raw.as_mut(), timeout);
        if fd < 0 {
            return Err(Error::from_ret("flow_alloc", fd.into()));
        }
        let q = raw.map(QoSSpec::from_raw).unwrap_or_default();
        let r = self.adopt(lib, fd, q);
        drop(_g);
        r
    }

    /// Deallocates the flow. Afterwards it is neither readable nor
    /// writable ([`Error::Deallocated`]). Deallocating an unallocated flow
    /// does nothing.
    pub fn dealloc(&mut self) -> Result<()> {
        let fd = std::mem::replace(&mut self.fd, -1);
        self.state.store(DOWN, Ordering::Release);
        match self.lib {
            Some(lib) if fd >= 0 => {
                crate::event::forget(fd);
                check("flow_dealloc", lib.flow_dealloc(fd))
            }
            _ => Ok(()),
        }
    }

    /// Deallocates the flow once nothing is queued towards its peer,
    /// waiting up to `wait` for the peer to read what is, and returns
    /// `true`; or leaves the flow allocated and returns `false`.
    ///
    /// In 0.23 `flow_dealloc` waits, without a timeout, until the flow's
    /// transmit queue is empty, which never happens once the peer is gone
    /// with packets still queued towards it (a server that ended under a
    /// flooding client): the process would hang in the deallocation (or in
    /// the library's destructor) and need a second signal. A flow whose
    /// queue is still not empty after `wait` is therefore not deallocated:
    /// the library's destructor releases it at exit without that wait, and
    /// the IRMd reclaims the flows of a process that ended. A reliable
    /// flow's `LINGER` flag is cleared before the deallocation: 0.23 would
    /// otherwise keep the flow until the peer acknowledged everything sent,
    /// without a bound while the peer stays active; what the peer has not
    /// acknowledged by then is not sent again.
    ///
    /// ```no_run
    /// # fn main() -> cicada_ouroboros::Result<()> {
    /// use std::time::Duration;
    /// let flow = cicada_ouroboros::flow_alloc("ocbr", None, None)?;
    /// flow.write(b"last words")?;
    /// if !flow.dealloc_or_leave(Duration::from_secs(1)) {
    ///     eprintln!("the peer did not read what was sent: flow left to the library");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn dealloc_or_leave(mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            match self.get_tx_queue_len() {
                Ok(n) if n > 0 && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(n) if n > 0 => {
                    tracing::debug!(
                        fd = self.fd,
                        queued = n,
                        "flow left allocated: its peer does not read"
                    );
                    self.state.store(DOWN, Ordering::Release);
                    if self.fd >= 0 {
                        crate::event::forget(self.fd);
                    }
                    std::mem::forget(self);
                    return false;
                }
                _ => {
                    // 0.23's `flow_dealloc` of a reliable flow with
                    // `LINGER` reads until the peer has acknowledged all
                    // that was sent, with no bound while the peer keeps the
                    // flow active (a client still pinging a server that
                    // ends): the wait allowed is over, so no lingering.
                    if let Ok(f) = self.get_frct_flags() {
                        if f.contains(FrctFlags::LINGER) {
                            let _ = self.set_frct_flags(f - FrctFlags::LINGER);
                        }
                    }
                    if let Err(e) = self.dealloc() {
                        tracing::debug!("flow_dealloc: {e}");
                    }
                    return true;
                }
            }
        }
    }

    /// Whether the flow is allocated.
    pub fn is_allocated(&self) -> bool {
        self.fd >= 0
    }

    /// The flow's identifier, `None` when deallocated.
    pub fn id(&self) -> Option<FlowId> {
        (self.fd >= 0).then_some(FlowId(self.fd))
    }

    /// The QoS of the allocation: for an accepted flow, what the peer asked
    /// for; for an allocated one, what the library settled on.
    pub fn qos(&self) -> QoSSpec {
        self.qos
    }

    pub(crate) fn live(&self) -> Result<(&'static Lib, c_int)> {
        match self.lib {
            Some(l) if self.fd >= 0 => Ok((l, self.fd)),
            _ => Err(Error::Deallocated),
        }
    }

    pub(crate) fn state_handle(&self) -> Arc<AtomicU8> {
        self.state.clone()
    }

    pub(crate) fn dead_error(&self, op: &'static str) -> Option<Error> {
        match self.state.load(Ordering::Acquire) {
            DOWN => Some(Error::FlowDown {
                op,
                code: codes::EFLOWDOWN,
            }),
            PEER => Some(Error::PeerGone {
                op,
                code: codes::EFLOWPEER,
            }),
            _ => None,
        }
    }

    fn note(&self, e: &Error) {
        match e {
            Error::FlowDown { .. } => self.state.store(DOWN, Ordering::Release),
            Error::PeerGone { .. } => self.state.store(PEER, Ordering::Release),
            _ => {}
        }
    }

    /// Reads the next packet into `rx.buf` (pos = 0).
    fn fill(&self, rx: &mut Rx) -> Result<()> {
        let (lib, fd) = self.live()?;
        if rx.buf.capacity() < MAX_PACKET_SIZE {
            rx.buf = Vec::with_capacity(MAX_PACKET_SIZE);
        }
        let user_timeout = *self.rcv_timeo.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let n = lib.flow_read(fd, &mut rx.buf);
            if n >= 0 {
                rx.pos = 0;
                return Ok(());
            }
            rx.buf.clear();
            rx.pos = 0;
            let e = Error::from_ret("flow_read", n as i64);
            if matches!(e, Error::Timeout { .. }) && user_timeout.is_none() {
                // Our own slice expired: wait on, unless the flow died.
                if let Some(e) = self.dead_error("flow_read") {
                    return Err(e);
                }
                continue;
            }
            self.note(&e);
            return Err(e);
        }
    }

    /// Reads one whole packet (or what is left of one a [`Flow::read`] did
    /// not take).
    pub fn recv(&self) -> Result<Vec<u8>> {
        let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        if rx.pos >= rx.buf.len() {
            self.fill(&mut rx)?;
        }
        let out = rx.buf[rx.pos..].to_vec();
        rx.pos = rx.buf.len();
        Ok(out)
    }

    /// Reads one whole packet (or what is left of one a [`Flow::read`] did
    /// not take) and hands it to `f` where it lies, in the flow's own
    /// receive buffer: no allocation, for a reader that copies the packet
    /// somewhere of its own anyway. Returns what `f` returned.
    pub fn recv_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        if rx.pos >= rx.buf.len() {
            self.fill(&mut rx)?;
        }
        let r = f(&rx.buf[rx.pos..]);
        rx.pos = rx.buf.len();
        Ok(r)
    }

    /// Reads up to `count` bytes (pyOuroboros' `read(count)`): from the
    /// next packet, or from what is left of the last one. Bytes of a packet
    /// beyond `count` are kept for the next read, not lost.
    pub fn read(&self, count: usize) -> Result<Vec<u8>> {
        let mut out = vec![0; count];
        let n = self.read_into(&mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Reads up to `buf.len()` bytes into `buf`, like [`Flow::read`].
    pub fn read_into(&self, buf: &mut [u8]) -> Result<usize> {
        let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        if rx.pos >= rx.buf.len() {
            self.fill(&mut rx)?;
        }
        let avail = &rx.buf[rx.pos..];
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        rx.pos += n;
        Ok(n)
    }

    /// Reads up to `count` bytes as a string (pyOuroboros'
    /// `readline(count)`); fails with [`Error::NotUtf8`] on invalid UTF-8.
    /// Trailing NUL bytes (as C programs such as `oecho` send) are removed.
    pub fn readline(&self, count: usize) -> Result<String> {
        let mut b = self.read(count)?;
        while b.last() == Some(&0) {
            b.pop();
        }
        String::from_utf8(b).map_err(|_| Error::NotUtf8)
    }

    /// Writes `buf` as one packet; returns the number of bytes written.
    ///
    /// Ouroboros 0.23 reports success when writing to a dead peer; once the
    /// binding has seen the flow go down (a read, or an event of the async
    /// face), writes fail with [`Error::FlowDown`] / [`Error::PeerGone`].
    ///
    /// A blocking write (the default) waits while the shared packet pool or
    /// the flow's transmit queue is full, up to the send timeout. The
    /// binding does that wait itself, by retrying a non-blocking write with
    /// a short backoff: the library's own blocking wait in 0.23 can miss
    /// its wake-up (a block freed by the reader between the failed
    /// allocation and the wait, or freed into another process's pool shard
    /// while this one holds no block in flight) and then sleeps until the
    /// send timeout or forever, stalling a flood.
    pub fn write(&self, buf: &[u8]) -> Result<usize> {
        let (lib, fd) = self.live()?;
        if let Some(e) = self.dead_error("flow_write") {
            return Err(e);
        }
        match self.try_write(lib, fd, buf) {
            Err(Error::WouldBlock { .. }) if !self.nb_write.load(Ordering::Relaxed) => {}
            r => return r,
        }
        let timeout = *self.snd_timeo.lock().unwrap_or_else(|e| e.into_inner());
        let start = Instant::now();
        let mut pause = Duration::from_micros(2);
        let mut tries = 0u32;
        loop {
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Err(Error::Timeout {
                    op: "flow_write",
                    code: libc::ETIMEDOUT,
                });
            }
            if let Some(e) = self.dead_error("flow_write") {
                return Err(e);
            }
            tries += 1;
            if tries <= 4 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(pause);
                pause = (pause * 2).min(WRITE_BACKOFF_MAX);
            }
            match self.try_write(lib, fd, buf) {
                Err(Error::WouldBlock { .. }) => {}
                r => return r,
            }
        }
    }

    /// One non-blocking write; [`Error::WouldBlock`] when the pool or the
    /// transmit ring is full.
    fn try_write(&self, lib: &'static Lib, fd: c_int, buf: &[u8]) -> Result<usize> {
        // A full ring would make the library drop the packet and say it
        // was sent.
        if lib
            .get_queue_len(fd, true)
            .is_ok_and(|n| n >= TX_RING_USABLE)
        {
            return Err(Error::WouldBlock {
                op: "flow_write",
                code: libc::EAGAIN,
            });
        }
        let n = lib.flow_write(fd, buf);
        if n < 0 {
            let e = Error::from_ret("flow_write", n as i64);
            self.note(&e);
            return Err(e);
        }
        Ok(n as usize)
    }

    /// Writes a string as one packet (pyOuroboros' `writeline`); no newline
    /// or NUL is added.
    pub fn writeline(&self, s: &str) -> Result<usize> {
        self.write(s.as_bytes())
    }

    /// Sets the timeout of blocking writes (`None` = block).
    pub fn set_snd_timeout(&self, t: Option<Duration>) -> Result<()> {
        let (lib, fd) = self.live()?;
        let mut g = self.snd_timeo.lock().unwrap_or_else(|e| e.into_inner());
        check("fccntl(FLOWSSNDTIMEO)", lib.set_timeout(fd, true, t))?;
        *g = t;
        Ok(())
    }

    /// Sets the timeout of blocking reads (`None` = block until a packet
    /// arrives or the flow goes down).
    pub fn set_rcv_timeout(&self, t: Option<Duration>) -> Result<()> {
        let (lib, fd) = self.live()?;
        let mut g = self.rcv_timeo.lock().unwrap_or_else(|e| e.into_inner());
        check(
            "fccntl(FLOWSRCVTIMEO)",
            lib.set_timeout(fd, false, Some(t.unwrap_or(READ_SLICE))),
        )?;
        *g = t;
        Ok(())
    }

    /// The timeout of blocking writes (`None` = none).
    pub fn get_snd_timeout(&self) -> Result<Option<Duration>> {
        self.live()?;
        Ok(*self.snd_timeo.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The timeout of blocking reads (`None` = none).
    pub fn get_rcv_timeout(&self) -> Result<Option<Duration>> {
        self.live()?;
        Ok(*self.rcv_timeo.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The flow's QoS as the library holds it (`FLOWGQOSSPEC`).
    pub fn get_qos(&self) -> Result<QoSSpec> {
        let (lib, fd) = self.live()?;
        lib.get_qos(fd)
            .map(QoSSpec::from_raw)
            .map_err(|r| Error::from_ret("fccntl(FLOWGQOSSPEC)", r.into()))
    }

    /// Number of packets waiting in the receive queue.
    pub fn get_rx_queue_len(&self) -> Result<usize> {
        let (lib, fd) = self.live()?;
        lib.get_queue_len(fd, false)
            .map_err(|r| Error::from_ret("fccntl(FLOWGRXQLEN)", r.into()))
    }

    /// Number of packets waiting in the transmit queue.
    pub fn get_tx_queue_len(&self) -> Result<usize> {
        let (lib, fd) = self.live()?;
        lib.get_queue_len(fd, true)
            .map_err(|r| Error::from_ret("fccntl(FLOWGTXQLEN)", r.into()))
    }

    /// Sets the flow flags. [`FlowProperties::NO_PARTIAL_READ`] is always
    /// added (see [`FlowProperties`]). Blocking writes are done by the
    /// binding (see [`Flow::write`]): the library flow stays in
    /// non-blocking write mode whatever is asked, and
    /// [`get_flags`](Self::get_flags) reports what was asked.
    pub fn set_flags(&self, flags: FlowProperties) -> Result<()> {
        let (lib, fd) = self.live()?;
        let f =
            (flags | FlowProperties::NO_PARTIAL_READ | FlowProperties::NON_BLOCKING_WRITE).bits();
        check("fccntl(FLOWSFLAGS)", lib.set_flags(fd, f))?;
        self.nb_write.store(
            flags.contains(FlowProperties::NON_BLOCKING_WRITE),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// The flow flags.
    pub fn get_flags(&self) -> Result<FlowProperties> {
        let (lib, fd) = self.live()?;
        let f = lib
            .get_flags(fd)
            .map(FlowProperties::from_bits_retain)
            .map_err(|r| Error::from_ret("fccntl(FLOWGFLAGS)", r.into()))?;
        Ok(if self.nb_write.load(Ordering::Relaxed) {
            f
        } else {
            f - FlowProperties::NON_BLOCKING_WRITE
        })
    }

    /// Sets the FRCT flags; fails with [`Error::Permission`] on a flow
    /// without FRCT (a raw QoS).
    pub fn set_frct_flags(&self, flags: FrctFlags) -> Result<()> {
        let (lib, fd) = self.live()?;
        check("fccntl(FRCTSFLAGS)", lib.set_frct_flags(fd, flags.bits()))
    }

    /// The FRCT flags; fails with [`Error::Permission`] on a flow without
    /// FRCT (a raw QoS).
    pub fn get_frct_flags(&self) -> Result<FrctFlags> {
        let (lib, fd) = self.live()?;
        lib.get_frct_flags(fd)
            .map(FrctFlags::from_bits_retain)
            .map_err(|r| Error::from_ret("fccntl(FRCTGFLAGS)", r.into()))
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        if let Err(e) = self.dealloc() {
            tracing::debug!("flow_dealloc on drop: {e}");
        }
    }
}

impl io::Read for &Flow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        Ok(self.read_into(buf)?)
    }
}

impl io::Read for Flow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &*self, buf)
    }
}

impl io::Write for &Flow {
    /// Writes `buf` as one packet.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(Flow::write(self, buf)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Write for Flow {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut &*self, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unallocated_flow_refuses_io_without_loading_anything() {
        let f = Flow::unallocated();
        assert!(matches!(f.write(b"x"), Err(Error::Deallocated)));
        assert!(matches!(f.read(10), Err(Error::Deallocated)));
        assert!(matches!(f.get_flags(), Err(Error::Deallocated)));
        assert!(f.id().is_none());
        assert!(!ffi::loaded() || f.id().is_none());
    }

    #[test]
    fn names_are_checked() {
        assert!(matches!(c_name(""), Err(Error::InvalidName(_))));
        assert!(matches!(c_name("a\0b"), Err(Error::InvalidName(_))));
        assert!(matches!(
            c_name(&"x".repeat(256)),
            Err(Error::InvalidName(_))
        ));
        assert!(c_name("oecho").is_ok());
    }

    #[test]
    fn flag_values_match_fccntl_h() {
        assert_eq!(FlowProperties::NON_BLOCKING.bits(), 0o3000);
        assert_eq!(FlowProperties::NO_PARTIAL_READ.bits(), 0o10000);
        // FLOWFWNOPART, as the header has it (a parity difference: see
        // docs/ouroboros.md).
        assert_eq!(FlowProperties::NO_PARTIAL_WRITE.bits(), 0o20000);
        assert_eq!(FrctFlags::LINGER.bits(), 4);
    }
}
