//! The async face: [`AsyncFlow`], driven by one event thread that waits
//! on `fevent` for every async flow of the process and wakes the tasks.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::ffi::{self, Lib, SetPtr};
use crate::flow::{Flow, FlowProperties};
use crate::fqueue::FEventType;

/// How often the event thread wakes when idle, to retry writes that found
/// the transmit queue full (there is no "writable" event in 0.23).
const TICK: Duration = Duration::from_millis(20);

struct Entry {
    read: Option<Waker>,
    write: Option<Waker>,
    state: Arc<AtomicU8>,
}

struct Reactor {
    lib: &'static Lib,
    set: SetPtr,
    entries: Mutex<HashMap<i32, Entry>>,
    writers_waiting: AtomicBool,
}

static REACTOR: OnceLock<Reactor> = OnceLock::new();
/// Set at process exit: the event thread must leave `fevent` before the
/// library's destructor frees what it waits on.
static EXITING: AtomicBool = AtomicBool::new(false);
static STOPPED: (Mutex<bool>, std::sync::Condvar) = (Mutex::new(false), std::sync::Condvar::new());

fn stop_event_thread() {
    EXITING.store(true, Ordering::Release);
    let (m, cv) = &STOPPED;
    let g = m.lock().unwrap_or_else(|e| e.into_inner());
    let _ = cv.wait_timeout_while(g, Duration::from_secs(1), |stopped| !*stopped);
}
static REACTOR_INIT: Mutex<()> = Mutex::new(());

impl Reactor {
    fn entries(&self) -> MutexGuard<'_, HashMap<i32, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get() -> Result<&'static Reactor> {
        if let Some(r) = REACTOR.get() {
            return Ok(r);
        }
        let _g = REACTOR_INIT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = REACTOR.get() {
            return Ok(r);
        }
        let lib = ffi::lib()?;
        let set = lib.fset_create().ok_or(Error::Other {
            op: "fset_create",
            code: libc::ENOMEM,
        })?;
        let r = REACTOR.get_or_init(|| Reactor {
            lib,
            set,
            entries: Mutex::new(HashMap::new()),
            writers_waiting: AtomicBool::new(false),
        });
        if !ffi::at_exit(stop_event_thread) {
            tracing::warn!("could not register the exit hook of the event thread");
        }
        std::thread::Builder::new()
            .name("ouroboros-fevent".into())
            .spawn(move || r.run())
            .map_err(|e| Error::Other {
                op: "spawn event thread",
                code: e.raw_os_error().unwrap_or(libc::EAGAIN),
            })?;
        Ok(r)
    }

    fn run(&'static self) {
        let Some(q) = self.lib.fqueue_create() else {
            tracing::error!("fqueue_create failed: async flows will not be woken");
            return;
        };
        while !EXITING.load(Ordering::Acquire) {
            let r = self.lib.fevent(&self.set, &q, Some(TICK));
            let mut wake = Vec::new();
            if r >= 0 {
                loop {
                    let fd = self.lib.fqueue_next(&q);
                    if fd < 0 {
                        break;
                    }
                    let Some(t) = FEventType::from_raw(self.lib.fqueue_type(&q)) else {
                        continue;
                    };
                    let mut m = self.entries();
                    let Some(e) = m.get_mut(&fd) else { continue };
                    match t {
                        FEventType::FlowPkt => wake.extend(e.read.take()),
                        FEventType::FlowDown | FEventType::FlowDealloc => {
                            e.state.store(crate::flow::DOWN, Ordering::Release);
                            wake.extend(e.read.take());
                            wake.extend(e.write.take());
                        }
                        FEventType::FlowPeer => {
                            e.state.store(crate::flow::PEER, Ordering::Release);
                            wake.extend(e.read.take());
                            wake.extend(e.write.take());
                        }
                        FEventType::FlowUp | FEventType::FlowAlloc => {}
                    }
                }
            } else if r != -(libc::ETIMEDOUT as isize) {
                std::thread::sleep(TICK);
            }
            if self.writers_waiting.swap(false, Ordering::AcqRel) {
                for e in self.entries().values_mut() {
                    wake.extend(e.write.take());
                }
            }
            for w in wake {
                w.wake();
            }
        }
        self.lib.fqueue_destroy(q);
        let (m, cv) = &STOPPED;
        *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
}

/// Stops watching `fd` (called before a flow is deallocated).
pub(crate) fn forget(fd: i32) {
    if let Some(r) = REACTOR.get() {
        if r.entries().remove(&fd).is_some() {
            r.lib.fset_del(&r.set, fd);
        }
    }
}

#[derive(Clone, Copy)]
enum Dir {
    Read,
    Write,
}

/// A flow for async code (tokio or any other executor).
///
/// The flow is switched to non-blocking mode and watched by the binding's
/// single event thread (one `fevent` loop for all async flows of the
/// process, not a thread per flow), which wakes the task that waits on it.
/// One task may read while another writes. With the default `tokio`
/// feature it implements `tokio::io::AsyncRead` and `AsyncWrite` (each
/// `poll_read` takes bytes from one packet, each `poll_write` sends one
/// packet).
///
/// Allocation and accepting block: run them in `spawn_blocking`.
///
/// ```no_run
/// use cicada_ouroboros::{flow_alloc, AsyncFlow};
///
/// # async fn demo() -> Result<(), cicada_ouroboros::Error> {
/// let flow = tokio::task::spawn_blocking(|| flow_alloc("oecho", None, None))
///     .await
///     .expect("join")?;
/// let flow = AsyncFlow::new(flow)?;
/// flow.write(b"Client says hi!\0").await?;
/// let reply = flow.recv().await?;
/// println!("{}", String::from_utf8_lossy(&reply));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncFlow {
    flow: Option<Flow>,
}

impl AsyncFlow {
    /// Makes `flow` async.
    pub fn new(flow: Flow) -> Result<AsyncFlow> {
        let (lib, fd) = flow.live()?;
        let r = Reactor::get()?;
        let flags = flow.get_flags()?;
        flow.set_flags(flags | FlowProperties::NON_BLOCKING)?;
        r.entries().insert(
            fd,
            Entry {
                read: None,
                write: None,
                state: flow.state_handle(),
            },
        );
        let ret = lib.fset_add(&r.set, fd);
        if ret < 0 {
            r.entries().remove(&fd);
            return Err(Error::from_ret("fset_add", ret.into()));
        }
        Ok(AsyncFlow { flow: Some(flow) })
    }

    /// The underlying flow (in non-blocking mode).
    pub fn get_ref(&self) -> Result<&Flow> {
        self.flow.as_ref().ok_or(Error::Deallocated)
    }

    /// Turns this back into a blocking [`Flow`].
    pub fn into_inner(mut self) -> Result<Flow> {
        let flow = self.flow.take().ok_or(Error::Deallocated)?;
        if let Some(id) = flow.id() {
            forget(id.raw());
        }
        let flags = flow.get_flags()?;
        flow.set_flags(flags - FlowProperties::NON_BLOCKING)?;
        Ok(flow)
    }

    fn poll_io<T>(
        &self,
        cx: &mut Context<'_>,
        dir: Dir,
        mut op: impl FnMut(&Flow) -> Result<T>,
    ) -> Poll<Result<T>> {
        let flow = match self.get_ref() {
            Ok(f) => f,
            Err(e) => return Poll::Ready(Err(e)),
        };
        match op(flow) {
            Err(Error::WouldBlock { .. }) => {}
            r => return Poll::Ready(r),
        }
        let (Some(id), Some(r)) = (flow.id(), REACTOR.get()) else {
            return Poll::Ready(Err(Error::Deallocated));
        };
        {
            let mut m = r.entries();
            let Some(e) = m.get_mut(&id.raw()) else {
                return Poll::Ready(Err(Error::Deallocated));
            };
            match dir {
                Dir::Read => e.read = Some(cx.waker().clone()),
                Dir::Write => {
                    e.write = Some(cx.waker().clone());
                    r.writers_waiting.store(true, Ordering::Release);
                }
            }
        }
        // Try again: the event may have come before the waker was stored.
        match op(flow) {
            Err(Error::WouldBlock { .. }) => match flow.dead_error("flow_read") {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            r => Poll::Ready(r),
        }
    }

    /// Polls for one whole packet.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Vec<u8>>> {
        self.poll_io(cx, Dir::Read, |f| f.recv())
    }

    /// Polls to read up to `buf.len()` bytes (see [`Flow::read_into`]).
    pub fn poll_read_into(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize>> {
        self.poll_io(cx, Dir::Read, |f| f.read_into(buf))
    }

    /// Polls to write `buf` as one packet.
    pub fn poll_write_packet(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize>> {
        self.poll_io(cx, Dir::Write, |f| f.write(buf))
    }

    /// Receives one whole packet.
    pub async fn recv(&self) -> Result<Vec<u8>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Reads up to `count` bytes (see [`Flow::read`]).
    pub async fn read(&self, count: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0; count];
        let n = poll_fn(|cx| self.poll_read_into(cx, &mut buf)).await?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Writes `buf` as one packet.
    pub async fn write(&self, buf: &[u8]) -> Result<usize> {
        poll_fn(|cx| self.poll_write_packet(cx, buf)).await
    }
}

impl Drop for AsyncFlow {
    fn drop(&mut self) {
        if let Some(id) = self.flow.as_ref().and_then(Flow::id) {
            forget(id.raw());
        }
    }
}

#[cfg(feature = "tokio")]
mod tokio_impl {
    use super::*;
    use std::io;
    use std::pin::Pin;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    impl AsyncRead for AsyncFlow {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let dst = buf.initialize_unfilled();
            match self.poll_read_into(cx, dst) {
                Poll::Ready(Ok(n)) => {
                    buf.advance(n);
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                Poll::Pending => Poll::Pending,
            }
        }
    }

    impl AsyncWrite for AsyncFlow {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_packet(cx, buf).map_err(io::Error::from)
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}
