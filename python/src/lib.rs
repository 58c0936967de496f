//! `cicada._native`: the Rust core of the `cicada` Python package.
//!
//! A thin layer over [`cicada::SwarmPeer`] and [`cicada::traversal`]: it
//! converts arguments, runs the async calls on one tokio runtime owned by
//! this module, and maps errors to Python exceptions. The Python modules
//! (`cicada.swarmlib`, `cicada.traversal`, `cicada.chordlib.routing`,
//! `cicada.aio`) re-export what is defined here under the original
//! Cicada's names.
//!
//! Rules at the boundary:
//! - every blocking call releases the GIL and wakes every
//!   [`SLICE`] to run `PyErr_CheckSignals`, so Ctrl-C interrupts it (the
//!   call's future is dropped, which cancels it);
//! - a panic never reaches Python as such: each entry point catches it and
//!   raises `cicada.CicadaError`;
//! - hooks run on the peer's hook thread with the GIL held; an exception
//!   in a hook goes to `sys.unraisablehook` and the peer carries on.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

mod errors;
mod hash;
mod mapping;
mod node;
mod peer;

pub(crate) use errors::{cicada_error, to_pyerr};

/// How long a blocking call waits with the GIL released before it checks
/// for signals (Ctrl-C) and waits again.
pub(crate) const SLICE: Duration = Duration::from_millis(100);

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime every peer of this process runs on (two worker threads,
/// made on first use).
pub(crate) fn runtime() -> PyResult<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cicada-py")
        .enable_all()
        .build()
        .map_err(|e| to_pyerr(cicada::Error::Io(e)))?;
    // Another thread may have won the race: its runtime is kept, this one dropped.
    let _ = RUNTIME.set(rt);
    Ok(RUNTIME.get().expect("set above"))
}

/// Runs `f`, turning a panic into `cicada.CicadaError` instead of letting
/// PyO3 raise its `PanicException` (a `BaseException`).
pub(crate) fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(panic_error(payload)),
    }
}

/// `cicada.CicadaError` for a caught panic.
pub(crate) fn panic_error(payload: Box<dyn std::any::Any + Send>) -> PyErr {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    cicada_error(format!(
        "internal error in cicada (please report it): {what}"
    ))
}

/// Waits for `fut` on the runtime with the GIL released, checking for
/// signals every [`SLICE`]: a `KeyboardInterrupt` (or any exception a
/// signal handler raises) drops the future, cancelling the call.
pub(crate) fn block<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime()?;
    let mut fut = Box::pin(fut);
    loop {
        let slice = py.allow_threads(|| {
            rt.block_on(async { tokio::time::timeout(SLICE, &mut fut).await.ok() })
        });
        if let Some(out) = slice {
            return Ok(out);
        }
        py.check_signals()?;
    }
}

/// Closes every peer still open; `cicada` registers it with `atexit`, so
/// that no hook runs while the interpreter shuts down.
#[pyfunction]
fn _close_all(py: Python<'_>) -> PyResult<()> {
    guard(|| peer::close_all(py))
}

/// The native part of the `cicada` package; use `cicada.swarmlib`,
/// `cicada.traversal`, `cicada.chordlib.routing` and `cicada.aio`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<hash::PyHash>()?;
    m.add_class::<node::PyRemoteNode>()?;
    m.add_class::<peer::PySwarmPeer>()?;
    m.add_class::<mapping::PyPortMapping>()?;
    m.add_class::<mapping::PyMapper>()?;
    m.add_class::<peer::AbortHandle>()?;
    m.add_function(wrap_pyfunction!(_close_all, m)?)?;
    Ok(())
}
