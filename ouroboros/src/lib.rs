//! A safe Rust binding of the [Ouroboros](https://ouroboros.rocks)
//! application API (`libouroboros-dev` 0.23), at parity with pyOuroboros.
//!
//! The C libraries are loaded at run time by their exact 0.23 sonames
//! (`libouroboros-dev.so.0.23`, `libouroboros-irm.so.0.23`), and only after
//! the IRMd has answered on its socket, so this crate builds and runs on
//! machines without Ouroboros: every call then fails with a typed
//! [`Error`] ([`Error::NotInstalled`], [`Error::IrmdNotRunning`],
//! [`Error::WrongVersion`]). [`available`] tells whether Ouroboros can be
//! used.
//!
//! | pyOuroboros | here |
//! | --- | --- |
//! | `flow_alloc(name, qos)` / `flow_accept()` / `flow_join(name)` | [`flow_alloc`] / [`flow_accept`] / [`flow_join`] |
//! | `with ... as f` / `f.dealloc()` / `f.alloc(name)` | drop / [`Flow::dealloc`] / [`Flow::alloc`] |
//! | `read`, `readline`, `write`, `writeline` | [`Flow::read`], [`Flow::readline`], [`Flow::write`], [`Flow::writeline`], plus [`std::io::Read`]/[`std::io::Write`] |
//! | `QoSSpec` | [`QoSSpec`] |
//! | `set_/get_snd_timeout`, `..._rcv_timeout`, `get_qos`, queue lengths, flags | methods of [`Flow`], [`FlowProperties`], [`FrctFlags`] |
//! | `FlowSet`, `FEventQueue`, `FEventType` | [`FlowSet`], [`FEventQueue`], [`FEventType`] |
//! | (irm commands) | [`Name`], [`create_name`], [`register_name`], [`bind_process`], … |
//! | — | [`AsyncFlow`] for async code |
//!
//! ```no_run
//! use cicada_ouroboros::{available, flow_alloc, QoSSpec};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), cicada_ouroboros::Error> {
//! if !available() {
//!     eprintln!("no Ouroboros here");
//!     return Ok(());
//! }
//! let f = flow_alloc("oecho", Some(QoSSpec::raw()), Some(Duration::from_secs(3)))?;
//! f.set_rcv_timeout(Some(Duration::from_secs(3)))?;
//! f.write(b"Client says hi!\0")?;
//! println!("Server replied with {}", f.readline(4096)?);
//! # Ok(())
//! # }
//! ```
//!
//! Guards against Ouroboros 0.23 behaviour: reads are whole-packet
//! (`FLOWFRNOPART`, buffer of [`MAX_PACKET_SIZE`]); blocking reads wake up
//! periodically to notice a dead peer; `flow_alloc`s to one name are
//! serialized; allocating to a name this process is bound to is refused;
//! deallocation needs ownership, so it cannot race a blocked reader.
//!
//! The C declarations (the `#[repr(C)]` structs, every constant copied from
//! a header, the prototype of every loaded function) are written by hand
//! for 0.23 and checked against the installed headers by a unit test:
//! `cargo test -p cicada-ouroboros --lib abi_check` writes a C program that
//! includes `<ouroboros/*.h>` and prints each struct's size and alignment,
//! each field's offset and size, each constant and whether each prototype
//! matches, compiles it with `cc`, and fails naming every item that differs.
//! Without `cc` or the headers it prints `SKIPPED: … (requirement:
//! ouroboros)` and passes, unless `CICADA_REQUIRE` lists `ouroboros` or
//! `all`. Build settings of Ouroboros that no installed header carries (the
//! IRMd socket path, the packet-pool block size, the ring size) cannot be
//! checked this way.

#![warn(missing_docs)]

mod error;
mod event;
mod ffi;
mod flow;
mod fqueue;
mod name;
mod qos;

pub use error::{codes, Error, Result};
pub use event::AsyncFlow;
pub use ffi::{at_exit, DEV_SONAME, IRM_SOCK_PATH, IRM_SONAME, PROBE_SOCK_ENV};
pub use flow::{
    flow_accept, flow_alloc, flow_join, Flow, FlowId, FlowProperties, FrctFlags, MAX_PACKET_SIZE,
};
pub use fqueue::{FEventQueue, FEventType, FlowSet};
pub use name::{
    bind_process, create_name, destroy_name, list_ipcps, list_names, register_name, unbind_process,
    unregister_name, IpcpInfo, Name,
};
pub use qos::{QoSSpec, DEFAULT_PEER_TIMEOUT_MS};

/// Whether Ouroboros can be used: an IRMd answers on
/// [`IRM_SOCK_PATH`] and `libouroboros-dev.so.0.23` loads. Loads the
/// library on success (the process is then known to the IRMd).
pub fn available() -> bool {
    ffi::lib().is_ok()
}

/// Like [`available`], but says what is missing.
pub fn check() -> Result<()> {
    ffi::lib().map(|_| ())
}

/// Whether an IRMd answers on [`IRM_SOCK_PATH`] (or the path in
/// [`PROBE_SOCK_ENV`]), without loading anything.
pub fn irmd_running() -> bool {
    ffi::probe_irmd(&ffi::probe_path(), std::time::Duration::from_secs(2)).is_ok()
}

/// A flag that is set when the process gets SIGTERM, SIGINT or SIGHUP, in
/// place of the default action (dying on the spot).
///
/// A process killed while it is inside `libouroboros-dev` can leave the
/// IRMd's shared packet pool locked (seen with 0.23: every other Ouroboros
/// process then hangs). Long-running programs should call this once, use
/// timeouts on their blocking calls, and return from `main` when the flag
/// is set: the flows are then deallocated and the library's destructor runs.
/// A second signal after the flag is set ends the process (status 1).
///
/// ```no_run
/// use std::sync::atomic::Ordering;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let stop = cicada_ouroboros::termination_flag()?;
/// while !stop.load(Ordering::Relaxed) {
///     match cicada_ouroboros::flow_accept(Some(Duration::from_millis(200))) {
///         Ok(flow) => drop(flow),
///         Err(cicada_ouroboros::Error::Timeout { .. }) => continue,
///         Err(e) => return Err(e.into()),
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub fn termination_flag() -> std::io::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};
    static FLAG: Mutex<Option<Arc<AtomicBool>>> = Mutex::new(None);
    let mut g = FLAG.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = g.as_ref() {
        return Ok(f.clone());
    }
    let f = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        // A second signal, once the flag is set, ends the process (exit
        // status 1) for a program that cannot stop by itself.
        signal_hook::flag::register_conditional_shutdown(sig, 1, f.clone())?;
        signal_hook::flag::register(sig, f.clone())?;
    }
    *g = Some(f.clone());
    Ok(f)
}
