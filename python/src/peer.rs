//! `cicada.swarmlib.SwarmPeer` over [`cicada::SwarmPeer`].

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use cicada::{Error, Hooks, Operation, RemoteNode, SendOptions, SendTarget};
use futures_util::FutureExt;
use pyo3::exceptions::{PyNotImplementedError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
};

use crate::hash::PyHash;
use crate::node::{addr_to_py, PyRemoteNode};
use crate::{block, guard, panic_error, to_pyerr};

/// Set by `_close_all` (at interpreter exit): hooks are no longer called.
static FINALIZING: AtomicBool = AtomicBool::new(false);

/// Every peer made in this process, for `_close_all`.
static OPEN: Mutex<Vec<Weak<PeerCore>>> = Mutex::new(Vec::new());

enum State {
    Unbound(Box<cicada::SwarmPeer>),
    Binding,
    Bound(Arc<cicada::SwarmPeer>),
    Closed,
}

/// What a `SwarmPeer` object owns; shared with the calls in flight.
struct PeerCore {
    state: Mutex<State>,
    /// Messages `recv` had taken for an asyncio caller that was cancelled
    /// meanwhile: handed out before the inbox's.
    stash: Mutex<VecDeque<(RemoteNode, Vec<u8>)>>,
    /// To make a fresh unbound peer when a bind is interrupted.
    hooks: Hooks,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PeerCore {
    fn bound(&self) -> Result<Arc<cicada::SwarmPeer>, Error> {
        match &*lock(&self.state) {
            State::Bound(p) => Ok(p.clone()),
            State::Unbound(_) | State::Binding => Err(Error::NotBound),
            State::Closed => Err(Error::Closed),
        }
    }

    /// Takes the unbound peer out for `bind`; the state is `Binding` until
    /// the returned guard finishes or is dropped.
    fn start_bind(self: &Arc<Self>) -> PyResult<(cicada::SwarmPeer, BindGuard)> {
        let mut st = lock(&self.state);
        match std::mem::replace(&mut *st, State::Binding) {
            State::Unbound(p) => Ok((
                *p,
                BindGuard {
                    core: self.clone(),
                    done: false,
                },
            )),
            other => {
                let e = match &other {
                    State::Binding => crate::cicada_error("bind is already under way"),
                    State::Bound(_) => to_pyerr(Error::AlreadyBound),
                    _ => to_pyerr(Error::Closed),
                };
                *st = other;
                Err(e)
            }
        }
    }

    fn pop_stash(&self) -> Option<(RemoteNode, Vec<u8>, bool)> {
        let mut s = lock(&self.stash);
        let (n, d) = s.pop_front()?;
        Some((n, d, !s.is_empty()))
    }

    fn close_now(&self) -> Option<Arc<cicada::SwarmPeer>> {
        match std::mem::replace(&mut *lock(&self.state), State::Closed) {
            State::Bound(p) => Some(p),
            _ => None,
        }
    }
}

/// Ends a bind: puts the bound peer in place, or (when the bind failed or
/// was interrupted) an unbound one so that `bind` may be tried again.
struct BindGuard {
    core: Arc<PeerCore>,
    done: bool,
}

impl BindGuard {
    fn finish(mut self, peer: cicada::SwarmPeer, ok: bool) {
        self.done = true;
        let mut st = lock(&self.core.state);
        if matches!(*st, State::Binding) {
            *st = if ok {
                State::Bound(Arc::new(peer))
            } else {
                State::Unbound(Box::new(peer))
            };
        }
    }
}

impl Drop for BindGuard {
    fn drop(&mut self) {
        if !self.done {
            let mut st = lock(&self.core.state);
            if matches!(*st, State::Binding) {
                *st = State::Unbound(Box::new(cicada::SwarmPeer::new(self.core.hooks.clone())));
            }
        }
    }
}

/// Closes every open peer (at interpreter exit) and stops calling hooks.
pub(crate) fn close_all(py: Python<'_>) -> PyResult<()> {
    FINALIZING.store(true, Ordering::SeqCst);
    let cores: Vec<Arc<PeerCore>> = lock(&OPEN).drain(..).filter_map(|w| w.upgrade()).collect();
    let peers: Vec<_> = cores.iter().filter_map(|c| c.close_now()).collect();
    block(py, async move {
        for p in peers {
            p.close().await;
        }
    })
}

/// Calls a Python hook with the GIL held; its exception goes to
/// `sys.unraisablehook`.
fn call_hook(f: &Py<PyAny>, node: &RemoteNode, data: Option<&[u8]>) {
    if FINALIZING.load(Ordering::SeqCst) {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Python::with_gil(|py| {
            let r = Py::new(py, PyRemoteNode { node: node.clone() }).and_then(|n| match data {
                Some(d) => f.call1(py, (n, PyBytes::new(py, d))),
                None => f.call1(py, (n,)),
            });
            if let Err(e) = r {
                e.write_unraisable(py, Some(f.bind(py)));
            }
        })
    }));
}

fn hooks_from(hooks: Option<&Bound<'_, PyAny>>) -> PyResult<Hooks> {
    let mut out = Hooks::new();
    let Some(hooks) = hooks.filter(|h| !h.is_none()) else {
        return Ok(out);
    };
    let dict = hooks.downcast::<PyDict>().map_err(|_| {
        PyTypeError::new_err("hooks must be a dict of {\"send\"|\"recv\"|\"new_peer\": callable}")
    })?;
    for (k, v) in dict.iter() {
        let key: String = k
            .extract()
            .map_err(|_| PyTypeError::new_err("hook names must be str"))?;
        if v.is_none() {
            continue;
        }
        if !v.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "hook {key:?} must be callable"
            )));
        }
        let f: Py<PyAny> = v.unbind();
        out = match key.as_str() {
            "send" => out.on_send(move |n, d| call_hook(&f, n, Some(d))),
            "recv" => out.on_recv(move |n, d| call_hook(&f, n, Some(d))),
            "new_peer" => out.on_new_peer(move |n| call_hook(&f, n, None)),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "unknown hook {key:?}: the hooks are \"send\", \"recv\" and \"new_peer\""
                )))
            }
        };
    }
    Ok(out)
}

/// A port argument: an int in [0, 65535].
pub(crate) fn port_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<u16> {
    if obj.downcast::<PyInt>().is_err() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be an int, not {}",
            obj.get_type().name()?
        )));
    }
    match obj.extract::<i64>() {
        Ok(p) if (0..=65535).contains(&p) => Ok(p as u16),
        _ => Err(PyValueError::new_err(format!(
            "{what} must be in [0, 65535], got {obj}"
        ))),
    }
}

fn str_arg(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    match obj.downcast::<PyString>() {
        Ok(s) => Ok(s.to_cow()?.to_string()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{what} must be a str, not {}",
            obj.get_type().name()?
        ))),
    }
}

/// Message data: bytes, bytearray or memoryview (not str).
fn data_arg(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = obj.downcast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    if obj.downcast::<PyMemoryView>().is_ok() {
        let b = obj.py().get_type::<PyBytes>().call1((obj,))?;
        return Ok(b.downcast::<PyBytes>()?.as_bytes().to_vec());
    }
    if obj.downcast::<PyString>().is_ok() {
        return Err(PyTypeError::new_err(
            "data must be bytes, not str (encode it, e.g. data.encode())",
        ));
    }
    Err(PyTypeError::new_err(format!(
        "data must be bytes, bytearray or memoryview, not {}",
        obj.get_type().name()?
    )))
}

/// A timeout in seconds: a positive int or float.
fn timeout_arg(obj: &Bound<'_, PyAny>) -> PyResult<Duration> {
    if obj.downcast::<PyInt>().is_err() && obj.downcast::<PyFloat>().is_err() {
        return Err(PyTypeError::new_err(format!(
            "timeout must be a number of seconds, not {}",
            obj.get_type().name()?
        )));
    }
    let t: f64 = obj.extract()?;
    if !(t.is_finite() && t > 0.0 && t < 1e9) {
        return Err(PyValueError::new_err(format!(
            "timeout must be a positive number of seconds, got {t}"
        )));
    }
    Ok(Duration::from_secs_f64(t))
}

/// `host:port` to a socket address, IPv4 first (a name such as `localhost`
/// may resolve to `::1` first, while peers are usually bound to IPv4).
async fn resolve(host: String, port: u16) -> Result<SocketAddr, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let name = format!("{host}:{port}");
    let n = name.clone();
    let found = tokio::task::spawn_blocking(move || {
        n.to_socket_addrs().map(|a| {
            let all: Vec<SocketAddr> = a.collect();
            all.iter().find(|a| a.is_ipv4()).or(all.first()).copied()
        })
    })
    .await
    .map_err(|_| Error::Resolve(name.clone()))?;
    match found {
        Ok(Some(a)) => Ok(a),
        _ => Err(Error::Resolve(name)),
    }
}

/// A send target before any name in it is resolved.
enum Target {
    Ready(SendTarget),
    Host(String, u16),
}

impl Target {
    async fn resolve(self) -> Result<SendTarget, Error> {
        match self {
            Target::Ready(t) => Ok(t),
            Target::Host(h, p) => Ok(resolve(h, p).await?.into()),
        }
    }
}

fn target_arg(obj: &Bound<'_, PyAny>) -> PyResult<Target> {
    if let Ok(h) = obj.downcast::<PyHash>() {
        return Ok(Target::Ready(SendTarget::Key(h.get().h)));
    }
    if let Ok(n) = obj.downcast::<PyRemoteNode>() {
        return Ok(Target::Ready(SendTarget::Node(n.get().node.id)));
    }
    if let Ok(p) = obj.downcast::<PySwarmPeer>() {
        return Ok(Target::Ready(match p.get().core.bound() {
            Ok(peer) => match peer.hash() {
                Ok(h) => SendTarget::Node(h),
                Err(_) => SendTarget::Unbound,
            },
            Err(_) => SendTarget::Unbound,
        }));
    }
    // The asyncio wrapper: its native peer.
    if let Ok(inner) = obj.getattr("_peer") {
        if inner.downcast::<PySwarmPeer>().is_ok() {
            return target_arg(&inner);
        }
    }
    if let Ok(t) = obj.downcast::<PyTuple>() {
        if t.len() != 2 {
            return Err(PyValueError::new_err(format!(
                "a target tuple is (host, port), got {} items",
                t.len()
            )));
        }
        let host = str_arg(&t.get_item(0)?, "the target's host")?;
        if host.is_empty() {
            return Err(PyValueError::new_err("the target's host is empty"));
        }
        let port = port_arg(&t.get_item(1)?, "the target's port")?;
        return Ok(Target::Host(host, port));
    }
    Err(PyTypeError::new_err(format!(
        "a target is a (host, port) tuple, a Hash, a RemoteNode or a SwarmPeer, not {}",
        obj.get_type().name()?
    )))
}

fn duplicates_arg(obj: &Bound<'_, PyAny>) -> PyResult<u8> {
    if obj.downcast::<PyInt>().is_err() {
        return Err(PyTypeError::new_err(format!(
            "duplicates must be an int, not {}",
            obj.get_type().name()?
        )));
    }
    match obj.extract::<i64>() {
        Ok(d) if (0..=255).contains(&d) => Ok(d as u8),
        _ => Err(PyValueError::new_err(format!(
            "duplicates must be in [0, 255], got {obj}"
        ))),
    }
}

/// The bind address: `""` is every interface (IPv4).
fn local_host(addr: &Bound<'_, PyAny>) -> PyResult<String> {
    let a = str_arg(addr, "addr")?;
    Ok(if a.is_empty() {
        Ipv4Addr::UNSPECIFIED.to_string()
    } else {
        a
    })
}

fn node_py(py: Python<'_>, node: RemoteNode) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, PyRemoteNode { node })?.into_any())
}

fn received_py(
    py: Python<'_>,
    (node, data, more): (RemoteNode, Vec<u8>, bool),
) -> PyResult<Py<PyAny>> {
    let t = (
        Py::new(py, PyRemoteNode { node })?,
        PyBytes::new(py, &data),
        more,
    );
    Ok(t.into_pyobject(py)?.into_any().unbind())
}

/// Cancels a call made through `cicada.aio` (its task on the runtime).
#[pyclass(module = "cicada._native", frozen)]
pub struct AbortHandle {
    h: tokio::task::AbortHandle,
}

#[pymethods]
impl AbortHandle {
    /// Cancels the call if it is still running.
    fn abort(&self) {
        self.h.abort();
    }
}

type Conv<T> = Box<dyn FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send>;

/// Runs `fut` on the runtime for an asyncio caller: returns an asyncio
/// future of `event_loop` and a handle to cancel the call. The result is
/// handed to the loop with `call_soon_threadsafe(cicada.aio._complete, …)`;
/// a value the future no longer wants (it was cancelled) goes to `reject`.
fn spawn_async<T, F>(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    fut: F,
    conv: Conv<T>,
    reject: Option<Py<PyAny>>,
) -> PyResult<(Py<PyAny>, AbortHandle)>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
{
    let rt = crate::runtime()?;
    let pyfut = event_loop.call_method0("create_future")?.unbind();
    let complete = py.import("cicada.aio")?.getattr("_complete")?.unbind();
    let lp = event_loop.clone().unbind();
    let f2 = pyfut.clone_ref(py);
    let task = rt.spawn(async move {
        let out = std::panic::AssertUnwindSafe(fut).catch_unwind().await;
        // Not awaited: once the result is handed over, cancelling the task
        // must not lose it.
        tokio::task::spawn_blocking(move || {
            Python::with_gil(|py| {
                let (ok, value) = match out {
                    Ok(Ok(v)) => match conv(py, v) {
                        Ok(v) => (true, v),
                        Err(e) => (false, e.into_value(py).into_any()),
                    },
                    Ok(Err(e)) => (false, to_pyerr(e).into_value(py).into_any()),
                    Err(p) => (false, panic_error(p).into_value(py).into_any()),
                };
                let reject = reject.map(|r| r.into_any());
                let none = py.None();
                let rj = reject.as_ref().map(|r| r.clone_ref(py)).unwrap_or(none);
                let r = lp.call_method1(
                    py,
                    "call_soon_threadsafe",
                    (complete, f2, ok, value.clone_ref(py), rj),
                );
                if r.is_err() && ok {
                    // The loop is closed: keep a received message for the next recv.
                    if let Some(reject) = reject {
                        if let Err(e) = reject.call1(py, (value,)) {
                            e.write_unraisable(py, None);
                        }
                    }
                }
            })
        });
    });
    Ok((
        pyfut,
        AbortHandle {
            h: task.abort_handle(),
        },
    ))
}

/// A member of a Cicada swarm, used like a socket.
///
/// ``hooks`` is a dict with any of the keys ``"send"`` (called as
/// ``send(RemoteNode, bytes)`` for every datagram this peer sends,
/// maintenance included), ``"recv"`` (``recv(RemoteNode, bytes)`` for
/// every application message received) and ``"new_peer"``
/// (``new_peer(RemoteNode)`` for each peer entering the routing state).
/// Hooks run on the peer's hook thread, with the GIL held; an exception in
/// one goes to ``sys.unraisablehook`` and the peer carries on.
///
/// Call ``bind`` first, then ``connect`` to join an existing swarm (without
/// it, the peer is the first member of a new one). Blocking calls release
/// the GIL, and Ctrl-C interrupts them. Use it as a context manager, or
/// call ``close``.
#[pyclass(module = "cicada.swarmlib", name = "SwarmPeer", frozen)]
pub struct PySwarmPeer {
    core: Arc<PeerCore>,
}

impl PySwarmPeer {
    fn bind_future(
        &self,
        addr: &Bound<'_, PyAny>,
        port: &Bound<'_, PyAny>,
        external_ip: Option<&Bound<'_, PyAny>>,
        external_port: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<impl Future<Output = Result<(), Error>> + Send + 'static> {
        let host = local_host(addr)?;
        let port = port_arg(port, "port")?;
        let external = match (
            external_ip.filter(|o| !o.is_none()),
            external_port.filter(|o| !o.is_none()),
        ) {
            (None, None) => None,
            (Some(ip), Some(p)) => {
                Some((str_arg(ip, "external_ip")?, port_arg(p, "external_port")?))
            }
            _ => {
                return Err(PyValueError::new_err(
                    "external_ip and external_port must be given together",
                ))
            }
        };
        let (mut peer, g) = self.core.start_bind()?;
        Ok(async move {
            let r = async {
                let local = resolve(host, port).await?;
                match external {
                    Some((ip, p)) => {
                        let ext = resolve(ip, p).await?;
                        peer.bind_with_external(local, ext).await
                    }
                    None => peer.bind(local).await,
                }
            }
            .await;
            g.finish(peer, r.is_ok());
            r
        })
    }

    fn connect_future(
        &self,
        host: &Bound<'_, PyAny>,
        port: &Bound<'_, PyAny>,
        timeout: &Bound<'_, PyAny>,
    ) -> PyResult<impl Future<Output = Result<RemoteNode, Error>> + Send + 'static> {
        let host = str_arg(host, "host")?;
        if host.is_empty() {
            return Err(PyValueError::new_err("host is empty"));
        }
        let port = port_arg(port, "port")?;
        let timeout = timeout_arg(timeout)?;
        let p = self.core.bound().map_err(to_pyerr)?;
        Ok(async move {
            let a = resolve(host, port).await?;
            p.connect(a, timeout).await
        })
    }

    fn send_future(
        &self,
        target: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        duplicates: &Bound<'_, PyAny>,
    ) -> PyResult<impl Future<Output = Result<RemoteNode, Error>> + Send + 'static> {
        let target = target_arg(target)?;
        let data = data_arg(data)?;
        let dup = duplicates_arg(duplicates)?;
        let p = self.core.bound().map_err(to_pyerr)?;
        Ok(async move {
            let t = target.resolve().await?;
            let options = SendOptions::new().duplicates(dup);
            Ok(p.send_with(t, data, options).await?.to)
        })
    }

    fn broadcast_future(
        &self,
        data: &Bound<'_, PyAny>,
        visited: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<impl Future<Output = Result<(), Error>> + Send + 'static> {
        if let Some(v) = visited.filter(|v| !v.is_none()) {
            if v.len()? != 0 {
                return Err(PyNotImplementedError::new_err(
                    "broadcast(visited=...) is not supported: a broadcast reaches every peer",
                ));
            }
        }
        let data = data_arg(data)?;
        let p = self.core.bound().map_err(to_pyerr)?;
        Ok(async move { p.broadcast(data).await })
    }

    fn route_future(
        &self,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<impl Future<Output = Result<RemoteNode, Error>> + Send + 'static> {
        let key = match key.downcast::<PyHash>() {
            Ok(h) => h.get().h,
            Err(_) => {
                return Err(PyTypeError::new_err(format!(
                    "get_route takes a Hash, not {}",
                    key.get_type().name()?
                )))
            }
        };
        let p = self.core.bound().map_err(to_pyerr)?;
        Ok(async move { Ok(p.get_route(key).await?.owner) })
    }

    fn close_future(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let p = self.core.close_now();
        async move {
            if let Some(p) = p {
                p.close().await;
            }
            Ok(())
        }
    }
}

#[pymethods]
impl PySwarmPeer {
    #[new]
    #[pyo3(signature = (hooks=None))]
    fn new(hooks: Option<&Bound<'_, PyAny>>) -> PyResult<PySwarmPeer> {
        guard(|| {
            let hooks = hooks_from(hooks)?;
            let core = Arc::new(PeerCore {
                state: Mutex::new(State::Unbound(Box::new(cicada::SwarmPeer::new(
                    hooks.clone(),
                )))),
                stash: Mutex::new(VecDeque::new()),
                hooks,
            });
            let mut open = lock(&OPEN);
            open.retain(|w| w.strong_count() > 0);
            open.push(Arc::downgrade(&core));
            Ok(PySwarmPeer { core })
        })
    }

    /// Binds to ``addr``:``port`` and starts the peer. ``addr`` is an IP
    /// address, a host name, or ``""`` for every interface (the peer then
    /// learns the address others reach it at from its first contact).
    /// ``port`` 0 picks a free one. ``external_ip`` and ``external_port``
    /// (both or neither) set the address announced to the swarm, from
    /// which the peer's id is derived: a port mapping's external address.
    #[pyo3(signature = (addr, port, external_ip=None, external_port=None))]
    fn bind(
        &self,
        py: Python<'_>,
        addr: &Bound<'_, PyAny>,
        port: &Bound<'_, PyAny>,
        external_ip: Option<&Bound<'_, PyAny>>,
        external_port: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        guard(|| {
            let f = self.bind_future(addr, port, external_ip, external_port)?;
            block(py, f)?.map_err(to_pyerr)
        })
    }

    /// Joins the swarm that the peer at ``host``:``port`` belongs to,
    /// waiting at most ``timeout`` seconds. Returns that peer.
    #[pyo3(signature = (host, port, timeout=None), text_signature = "($self, host, port, timeout=10)")]
    fn connect(
        &self,
        py: Python<'_>,
        host: &Bound<'_, PyAny>,
        port: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        guard(|| {
            let ten = 10i64.into_pyobject(py)?.into_any();
            let f = self.connect_future(host, port, timeout.unwrap_or(&ten))?;
            let n = block(py, f)?.map_err(to_pyerr)?;
            node_py(py, n)
        })
    }

    /// Sends ``data`` to ``target`` and waits until the destination has it
    /// (queued for its ``recv``). ``target`` is a ``(host, port)`` tuple, a
    /// ``RemoteNode`` or a ``SwarmPeer`` (exactly that peer), or a ``Hash``
    /// (whichever peer owns that key). ``duplicates`` routes that many
    /// extra copies through other peers. Returns the peer that received it.
    #[pyo3(signature = (target, data, duplicates=None), text_signature = "($self, target, data, duplicates=0)")]
    fn send(
        &self,
        py: Python<'_>,
        target: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        duplicates: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        guard(|| {
            let zero = 0i64.into_pyobject(py)?.into_any();
            let f = self.send_future(target, data, duplicates.unwrap_or(&zero))?;
            let n = block(py, f)?.map_err(to_pyerr)?;
            node_py(py, n)
        })
    }

    /// Sends ``data`` to every other peer of the swarm (once each, not
    /// confirmed). ``visited`` must be empty: excluding peers is not
    /// supported.
    #[pyo3(signature = (data, visited=None))]
    fn broadcast(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        visited: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        guard(|| {
            let f = self.broadcast_future(data, visited)?;
            block(py, f)?.map_err(to_pyerr)
        })
    }

    /// Waits for the next message: ``(source, data, more)``, where
    /// ``source`` is a ``RemoteNode`` and ``more`` says whether further
    /// messages are queued already. With ``timeout`` (seconds), raises
    /// ``TimeoutError`` when none came in time.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let timeout = timeout
                .filter(|t| !t.is_none())
                .map(timeout_arg)
                .transpose()?;
            let p = self.core.bound().map_err(to_pyerr)?;
            if let Some(m) = self.core.pop_stash() {
                return received_py(py, m);
            }
            let r = match timeout {
                None => block(py, p.recv())?.map_err(to_pyerr)?,
                Some(t) => block(py, p.recv_timeout(t))?
                    .map_err(to_pyerr)?
                    .ok_or_else(|| {
                        to_pyerr(Error::Timeout {
                            op: Operation::Recv,
                            after: t,
                        })
                    })?,
            };
            let more = r.more || !lock(&self.core.stash).is_empty();
            received_py(py, (r.from, r.data.to_vec(), more))
        })
    }

    /// The peer that owns ``key`` (a ``Hash``), looked up in the swarm.
    fn get_route(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let f = self.route_future(key)?;
            let n = block(py, f)?.map_err(to_pyerr)?;
            node_py(py, n)
        })
    }

    /// Leaves the swarm, stops the peer and releases its socket.
    /// Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| block(py, self.close_future())?.map_err(to_pyerr))
    }

    /// Leaves the swarm gracefully (neighbours are handed to each other);
    /// the socket stays open until ``close``.
    fn disconnect(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| {
            let p = self.core.bound().map_err(to_pyerr)?;
            block(py, async move { p.disconnect().await })?.map_err(to_pyerr)
        })
    }

    /// This peer's id (a ``Hash``), derived from its announced address.
    #[getter]
    fn hash(&self) -> PyResult<PyHash> {
        guard(|| {
            let p = self.core.bound().map_err(to_pyerr)?;
            Ok(PyHash::from_hash(p.hash().map_err(to_pyerr)?))
        })
    }

    /// The address this peer announces, ``(ip, port)``.
    #[getter]
    fn listener(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let p = self.core.bound().map_err(to_pyerr)?;
            addr_to_py(py, &p.listener().map_err(to_pyerr)?)
        })
    }

    /// The peers in this peer's routing state (``RemoteNode`` objects, sorted by id).
    #[getter]
    fn peers(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let p = self.core.bound().map_err(to_pyerr)?;
            let nodes = block(py, async move { p.peers().await })?.map_err(to_pyerr)?;
            let items = nodes
                .into_iter()
                .map(|n| Py::new(py, PyRemoteNode { node: n }))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, items)?.into_any().unbind())
        })
    }

    /// This peer's successor on the ring (``None`` alone in its swarm).
    #[getter]
    fn successor(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        guard(|| {
            let p = self.core.bound().map_err(to_pyerr)?;
            let n = block(py, async move { p.successor().await })?.map_err(to_pyerr)?;
            n.map(|n| node_py(py, n)).transpose()
        })
    }

    /// This peer's predecessor on the ring, if it knows one.
    #[getter]
    fn predecessor(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        guard(|| {
            let p = self.core.bound().map_err(to_pyerr)?;
            let n = block(py, async move { p.predecessor().await })?.map_err(to_pyerr)?;
            n.map(|n| node_py(py, n)).transpose()
        })
    }

    /// Whether ``close`` has run.
    #[getter]
    fn closed(&self) -> bool {
        matches!(*lock(&self.core.state), State::Closed)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match &*lock(&self.core.state) {
            State::Bound(p) => match (p.listener(), p.hash()) {
                (Ok(a), Ok(h)) => format!("<SwarmPeer {a} {}>", h.short()),
                _ => "<SwarmPeer>".to_string(),
            },
            State::Unbound(_) | State::Binding => "<SwarmPeer unbound>".to_string(),
            State::Closed => "<SwarmPeer closed>".to_string(),
        }
    }

    // The asyncio face (`cicada.aio`): each returns (future, AbortHandle).

    #[pyo3(signature = (event_loop, addr, port, external_ip=None, external_port=None))]
    fn _bind_async(
        &self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        addr: &Bound<'_, PyAny>,
        port: &Bound<'_, PyAny>,
        external_ip: Option<&Bound<'_, PyAny>>,
        external_port: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Py<PyAny>, AbortHandle)> {
        guard(|| {
            let f = self.bind_future(addr, port, external_ip, external_port)?;
            spawn_async(py, event_loop, f, Box::new(|py, ()| Ok(py.None())), None)
        })
    }

    fn _connect_async(
        &self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        host: &Bound<'_, PyAny>,
        port: &Bound<'_, PyAny>,
        timeout: &Bound<'_, PyAny>,
    ) -> PyResult<(Py<PyAny>, AbortHandle)> {
        guard(|| {
            let f = self.connect_future(host, port, timeout)?;
            spawn_async(py, event_loop, f, Box::new(node_py), None)
        })
    }

    fn _send_async(
        &self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        target: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        duplicates: &Bound<'_, PyAny>,
    ) -> PyResult<(Py<PyAny>, AbortHandle)> {
        guard(|| {
            let f = self.send_future(target, data, duplicates)?;
            spawn_async(py, event_loop, f, Box::new(node_py), None)
        })
    }

    #[pyo3(signature = (event_loop, data, visited=None))]
    fn _broadcast_async(
        &self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        visited: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Py<PyAny>, AbortHandle)> {
        guard(|| {
            let f = self.broadcast_future(data, visited)?;
            spawn_async(py, event_loop, f, Box::new(|py, ()| Ok(py.None())), None)
        })
    }

    fn _recv_async(
        slf: &Bound<'_, Self>,
        event_loop: &Bound<'_, PyAny>,
    ) -> PyResult<(Py<PyAny>, AbortHandle)> {
        let py = slf.py();
        guard(|| {
            let core = slf.get().core.clone();
            let p = core.bound().map_err(to_pyerr)?;
            let reject = slf.getattr("_unrecv")?.unbind();
            let f = async move {
                if let Some(m) = core.pop_stash() {
                    return Ok(m);
                }
                let m = p.recv().await?;
                let more = m.more || !lock(&core.stash).is_empty();
                Ok((m.from, m.data.to_vec(), more))
            };
            spawn_async(py, event_loop, f, Box::new(received_py), Some(reject))
        })
    }

    fn _get_route_async(
        &self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<(Py<PyAny>, AbortHandle)> {
        guard(|| {
            let f = self.route_future(key)?;
            spawn_async(py, event_loop, f, Box::new(node_py), None)
        })
    }

    fn _close_async(
        &self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
    ) -> PyResult<(Py<PyAny>, AbortHandle)> {
        guard(|| {
            let f = self.close_future();
            spawn_async(py, event_loop, f, Box::new(|py, ()| Ok(py.None())), None)
        })
    }

    fn _peers_async(
        &self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
    ) -> PyResult<(Py<PyAny>, AbortHandle)> {
        guard(|| {
            let p = self.core.bound().map_err(to_pyerr)?;
            let f = async move { p.peers().await };
            let conv: Conv<Vec<RemoteNode>> = Box::new(|py, nodes| {
                let items = nodes
                    .into_iter()
                    .map(|n| Py::new(py, PyRemoteNode { node: n }))
                    .collect::<PyResult<Vec<_>>>()?;
                Ok(PyList::new(py, items)?.into_any().unbind())
            });
            spawn_async(py, event_loop, f, conv, None)
        })
    }

    /// Puts back a message an asyncio `recv` took after it was cancelled.
    fn _unrecv(&self, item: &Bound<'_, PyAny>) -> PyResult<()> {
        let (n, d, _more): (Bound<'_, PyRemoteNode>, Vec<u8>, bool) = item.extract()?;
        lock(&self.core.stash).push_front((n.get().node.clone(), d));
        Ok(())
    }
}
