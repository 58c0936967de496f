//! The FFI layer: the only module with `unsafe` code.
//!
//! The C declarations below were written by hand from the public headers of
//! Ouroboros 0.23 (`dev.h`, `fccntl.h`, `fqueue.h`, `qos.h`, `irm.h`,
//! `name.h`); no Ouroboros code is copied. The libraries are opened at run
//! time with `dlopen` by their exact sonames, and only after the IRMd socket
//! has answered a probe, because loading `libouroboros-dev` runs a
//! constructor that announces the process to the IRMd (it exits the process
//! when there is no IRMd and hangs on a stale socket).
//!
//! The test module `abi_check` compares every struct layout, constant and
//! function prototype declared here (and the constants of the other modules)
//! with the installed headers, by compiling a C program against them.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libc::{pid_t, size_t, ssize_t, timespec};

use crate::error::Error;

/// Soname of the application library for the 0.23 ABI.
pub const DEV_SONAME: &str = "libouroboros-dev.so.0.23";
/// Soname of the IRM (management) library for the 0.23 ABI.
pub const IRM_SONAME: &str = "libouroboros-irm.so.0.23";
/// Default IRMd socket of Ouroboros 0.23 (`SOCK_PATH "irm.sock"`).
pub const IRM_SOCK_PATH: &str = "/var/run/ouroboros/irm.sock";

/// `qosspec_t` of Ouroboros 0.23, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawQos {
    pub delay: u32,
    pub bandwidth: u64,
    pub availability: u8,
    pub loss: u32,
    pub ber: u32,
    pub in_order: u8,
    pub max_gap: u32,
    pub timeout: u32,
}

const _: () = assert!(std::mem::size_of::<RawQos>() == 40);

/// `NAME_SIZE` in `name.h`.
pub const NAME_SIZE: usize = 255;
const NAME_PATH_SIZE: usize = NAME_SIZE + 256;
/// `LAYER_NAME_SIZE` / `IPCP_NAME_SIZE` in `ipcp.h`.
const LAYER_NAME_SIZE: usize = 255;
/// `LB_RR` of `enum pol_balance` (`name.h`): round-robin load balancing,
/// the policy [`Lib::create_name`] asks for.
const LB_RR: c_int = 0;

/// `struct name_sec_paths`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawNameSecPaths {
    pub enc: [c_char; NAME_PATH_SIZE + 1],
    pub key: [c_char; NAME_PATH_SIZE + 1],
    pub crt: [c_char; NAME_PATH_SIZE + 1],
}

/// `struct name_info`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawNameInfo {
    pub name: [c_char; NAME_SIZE + 1],
    pub pol_lb: c_int,
    pub s: RawNameSecPaths,
    pub c: RawNameSecPaths,
}

/// `struct ipcp_list_info`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawIpcpListInfo {
    pub pid: pid_t,
    pub ipcp_type: c_int,
    pub name: [c_char; NAME_SIZE],
    pub layer: [c_char; LAYER_NAME_SIZE],
}

/// `fset_t` (`struct flow_set`): opaque, only handled through pointers.
#[repr(C)]
pub struct FsetT {
    _opaque: [u8; 0],
}

/// `fqueue_t` (`struct fqueue`): opaque, only handled through pointers.
#[repr(C)]
pub struct FqueueT {
    _opaque: [u8; 0],
}

/// A value of `enum fqtype`, as `fqueue_type` returns it.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct FqType(pub c_int);

type FlowAllocFn = unsafe extern "C" fn(*const c_char, *mut RawQos, *const timespec) -> c_int;
type FlowAcceptFn = unsafe extern "C" fn(*mut RawQos, *const timespec) -> c_int;
type FlowJoinFn = unsafe extern "C" fn(*const c_char, *const timespec) -> c_int;
type FlowDeallocFn = unsafe extern "C" fn(c_int) -> c_int;
type FlowWriteFn = unsafe extern "C" fn(c_int, *const c_void, size_t) -> ssize_t;
type FlowReadFn = unsafe extern "C" fn(c_int, *mut c_void, size_t) -> ssize_t;
type FccntlFn = unsafe extern "C" fn(c_int, c_int, ...) -> c_int;
type FsetCreateFn = unsafe extern "C" fn() -> *mut FsetT;
type FsetFn = unsafe extern "C" fn(*mut FsetT);
type FqueueCreateFn = unsafe extern "C" fn() -> *mut FqueueT;
type FqueueDestroyFn = unsafe extern "C" fn(*mut FqueueT);
type FsetAddFn = unsafe extern "C" fn(*mut FsetT, c_int) -> c_int;
type FsetHasFn = unsafe extern "C" fn(*const FsetT, c_int) -> bool;
type FsetDelFn = unsafe extern "C" fn(*mut FsetT, c_int);
type FqueueNextFn = unsafe extern "C" fn(*mut FqueueT) -> c_int;
type FqueueTypeFn = unsafe extern "C" fn(*mut FqueueT) -> FqType;
type FeventFn = unsafe extern "C" fn(*mut FsetT, *mut FqueueT, *const timespec) -> ssize_t;

type IrmCreateNameFn = unsafe extern "C" fn(*mut RawNameInfo) -> c_int;
type IrmNameFn = unsafe extern "C" fn(*const c_char) -> c_int;
type IrmNamePidFn = unsafe extern "C" fn(*const c_char, pid_t) -> c_int;
type IrmPidNameFn = unsafe extern "C" fn(pid_t, *const c_char) -> c_int;
type IrmListIpcpsFn = unsafe extern "C" fn(*mut *mut RawIpcpListInfo) -> ssize_t;
type IrmListNamesFn = unsafe extern "C" fn(*mut *mut RawNameInfo) -> ssize_t;

/// The loaded libraries and the entry points the binding uses.
pub struct Lib {
    flow_alloc: FlowAllocFn,
    flow_accept: FlowAcceptFn,
    flow_join: FlowJoinFn,
    flow_dealloc: FlowDeallocFn,
    flow_write: FlowWriteFn,
    flow_read: FlowReadFn,
    fccntl: FccntlFn,
    fset_create: FsetCreateFn,
    fset_destroy: FsetFn,
    fqueue_create: FqueueCreateFn,
    fqueue_destroy: FqueueDestroyFn,
    fset_zero: FsetFn,
    fset_add: FsetAddFn,
    fset_has: FsetHasFn,
    fset_del: FsetDelFn,
    fqueue_next: FqueueNextFn,
    fqueue_type: FqueueTypeFn,
    fevent: FeventFn,
    irm: Option<IrmFns>,
    // The libraries are never closed: their destructors must run at process
    // exit, not while flows may still be in use.
    _dev: libloading::Library,
    _irm: Option<libloading::Library>,
}

impl std::fmt::Debug for Lib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lib")
            .field("dev", &DEV_SONAME)
            .field("irm", &self.irm.is_some())
            .finish()
    }
}

struct IrmFns {
    create_name: IrmCreateNameFn,
    destroy_name: IrmNameFn,
    reg_name: IrmNamePidFn,
    unreg_name: IrmNamePidFn,
    bind_process: IrmPidNameFn,
    unbind_process: IrmPidNameFn,
    list_ipcps: IrmListIpcpsFn,
    list_names: IrmListNamesFn,
}

static LIB: OnceLock<Lib> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// Timeout of the IRMd probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The socket the probe asks: [`IRM_SOCK_PATH`], or the path in the
/// environment variable [`PROBE_SOCK_ENV`] when it is set.
pub fn probe_path() -> std::path::PathBuf {
    match std::env::var_os(PROBE_SOCK_ENV) {
        Some(p) if !p.is_empty() => p.into(),
        _ => IRM_SOCK_PATH.into(),
    }
}

/// Environment variable that replaces [`IRM_SOCK_PATH`] for the IRMd probe
/// only (the library itself always uses its built-in path). Pointing it at a
/// path where no IRMd answers makes this process behave as on a machine
/// without Ouroboros, while the IRMd keeps running for everyone else: this is
/// how the fallback to UDP is tested.
pub const PROBE_SOCK_ENV: &str = "CICADA_OUROBOROS_IRM_SOCK";

/// Returns the loaded library, loading it on first use after probing the
/// IRMd. A failed attempt is not cached: the next call tries again.
pub fn lib() -> Result<&'static Lib, Error> {
    if let Some(l) = LIB.get() {
        return Ok(l);
    }
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(l) = LIB.get() {
        return Ok(l);
    }
    probe_irmd(&probe_path(), PROBE_TIMEOUT)?;
    let l = load()?;
    Ok(LIB.get_or_init(|| l))
}

/// Whether the library was loaded already in this process.
#[cfg(test)]
pub fn loaded() -> bool {
    LIB.get().is_some()
}

/// `IRM_LIST_IPCPS` of `enum irm_msg_code` in the IRMd's protocol
/// (`irm.proto`, not an installed header).
const IRM_MSG_LIST_IPCPS: u8 = 4;
/// `IRM_REPLY` of `enum irm_msg_code` (`irm.proto`).
const IRM_MSG_REPLY: u8 = 27;

/// Checks that an IRMd answers on `path`: sends it an `irm_msg` with code
/// `IRM_LIST_IPCPS` (protobuf field 1, varint 4) and waits for any reply with
/// a timeout. This never loads the library.
pub fn probe_irmd(path: &Path, timeout: Duration) -> Result<(), Error> {
    let not_running = |detail: String| Error::IrmdNotRunning {
        path: path.display().to_string(),
        detail,
    };
    if !path.exists() {
        return Err(not_running("socket does not exist".into()));
    }
    let mut s =
        seqpacket_connect(path, timeout).map_err(|e| not_running(format!("connect: {e}")))?;
    s.write_all(&[0x08, IRM_MSG_LIST_IPCPS])
        .map_err(|e| not_running(format!("write: {e}")))?;
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => Err(not_running(
            "the IRMd closed the socket without answering".into(),
        )),
        // A reply starts with field 1 (code) set to IRM_REPLY.
        Ok(n) if n >= 2 && buf[0] == 0x08 && buf[1] == IRM_MSG_REPLY => Ok(()),
        Ok(_) => Err(not_running(
            "unexpected reply (not an Ouroboros 0.23 IRMd?)".into(),
        )),
        Err(e) => Err(not_running(format!("no answer within {timeout:?}: {e}"))),
    }
}

fn sockaddr(path: &Path) -> std::io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (d, &b) in addr.sun_path.iter_mut().zip(bytes) {
        *d = b as c_char;
    }
    Ok((
        addr,
        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
    ))
}

fn seqpacket_socket() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created descriptor we own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Connects a `SOCK_SEQPACKET` Unix socket (what the 0.23 IRMd listens on
/// under Linux) with send/receive timeouts set before `connect`, so that a
/// full backlog does not block either.
fn seqpacket_connect(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use std::os::fd::AsRawFd;
    let (addr, len) = sockaddr(path)?;
    let fd = seqpacket_socket()?;
    // A UnixStream is only a wrapper over read/write/setsockopt here, which
    // work the same on a seqpacket socket.
    let s = UnixStream::from(fd);
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    // SAFETY: addr is a valid sockaddr_un of length len.
    let r = unsafe {
        libc::connect(
            s.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s)
}

/// A listening seqpacket socket that never answers (for tests).
#[cfg(test)]
fn silent_seqpacket_listener(path: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    let (addr, len) = sockaddr(path)?;
    let fd = seqpacket_socket()?;
    // SAFETY: valid descriptor and sockaddr_un.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    // SAFETY: valid descriptor.
    if r < 0 || unsafe { libc::listen(fd.as_raw_fd(), 4) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Looks for other versions of `libouroboros-dev` in the usual library
/// directories, without loading them, to explain a failed load.
fn other_versions() -> Vec<String> {
    let mut found = Vec::new();
    for dir in [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib64",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
    ] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("libouroboros-dev.so") && n != DEV_SONAME {
                    found.push(format!("{dir}/{n}"));
                }
            }
        }
    }
    found
}

/// Copies a function pointer out of `lib`.
///
/// # Safety
/// `T` must be the exact function-pointer type of the C symbol `name`.
unsafe fn sym<T: Copy>(lib: &libloading::Library, name: &[u8]) -> Result<T, Error> {
    // SAFETY: the caller guarantees that T matches the symbol's C type.
    let s: libloading::Symbol<'_, T> =
        unsafe { lib.get(name) }.map_err(|e| Error::WrongVersion {
            detail: format!(
                "symbol {} missing: {e}",
                String::from_utf8_lossy(name.strip_suffix(b"\0").unwrap_or(name))
            ),
        })?;
    Ok(*s)
}

fn load() -> Result<Lib, Error> {
    // SAFETY: loading runs the library's constructor, which announces the
    // process to the IRMd; we probed that an IRMd answers just before. The
    // library has no other initialisation requirements.
    let dev = unsafe { libloading::Library::new(DEV_SONAME) }.map_err(|e| {
        let others = other_versions();
        if others.is_empty() {
            Error::NotInstalled {
                detail: format!("{DEV_SONAME}: {e}"),
            }
        } else {
            Error::WrongVersion {
                detail: format!("need {DEV_SONAME}, found {}", others.join(", ")),
            }
        }
    })?;
    // SAFETY: libouroboros-irm has no constructor side effects beyond libc.
    let irm_lib = match unsafe { libloading::Library::new(IRM_SONAME) } {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("{IRM_SONAME} not loaded ({e}): name management unavailable");
            None
        }
    };
    // SAFETY (all `sym` calls below): each type alias above was written from
    // the prototype of the same-named function in the 0.23 headers.
    let irm = match &irm_lib {
        Some(l) => unsafe {
            Some(IrmFns {
                create_name: sym(l, b"irm_create_name\0")?,
                destroy_name: sym(l, b"irm_destroy_name\0")?,
                reg_name: sym(l, b"irm_reg_name\0")?,
                unreg_name: sym(l, b"irm_unreg_name\0")?,
                bind_process: sym(l, b"irm_bind_process\0")?,
                unbind_process: sym(l, b"irm_unbind_process\0")?,
                list_ipcps: sym(l, b"irm_list_ipcps\0")?,
                list_names: sym(l, b"irm_list_names\0")?,
            })
        },
        None => None,
    };
    // SAFETY: see above.
    unsafe {
        Ok(Lib {
            flow_alloc: sym(&dev, b"flow_alloc\0")?,
            flow_accept: sym(&dev, b"flow_accept\0")?,
            flow_join: sym(&dev, b"flow_join\0")?,
            flow_dealloc: sym(&dev, b"flow_dealloc\0")?,
            flow_write: sym(&dev, b"flow_write\0")?,
            flow_read: sym(&dev, b"flow_read\0")?,
            fccntl: sym(&dev, b"fccntl\0")?,
            fset_create: sym(&dev, b"fset_create\0")?,
            fset_destroy: sym(&dev, b"fset_destroy\0")?,
            fqueue_create: sym(&dev, b"fqueue_create\0")?,
            fqueue_destroy: sym(&dev, b"fqueue_destroy\0")?,
            fset_zero: sym(&dev, b"fset_zero\0")?,
            fset_add: sym(&dev, b"fset_add\0")?,
            fset_has: sym(&dev, b"fset_has\0")?,
            fset_del: sym(&dev, b"fset_del\0")?,
            fqueue_next: sym(&dev, b"fqueue_next\0")?,
            fqueue_type: sym(&dev, b"fqueue_type\0")?,
            fevent: sym(&dev, b"fevent\0")?,
            irm,
            _dev: dev,
            _irm: irm_lib,
        })
    }
}

/// Runs `f` at process exit, before the library's destructor (`atexit`
/// handlers registered after `dlopen` run before `_dl_fini`). Hooks run in
/// the reverse order of their registration. Returns false if the exit
/// handler could not be registered with libc.
pub fn at_exit(f: fn()) -> bool {
    static HOOKS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    extern "C" fn run() {
        let hooks = std::mem::take(&mut *HOOKS.lock().unwrap_or_else(|e| e.into_inner()));
        for f in hooks.into_iter().rev() {
            // A panic must not unwind into libc.
            let _ = std::panic::catch_unwind(f);
        }
    }
    HOOKS.lock().unwrap_or_else(|e| e.into_inner()).push(f);
    // SAFETY: `run` is a plain extern "C" fn without arguments that never
    // unwinds.
    *REGISTERED.get_or_init(|| unsafe { libc::atexit(run) == 0 })
}

/// Converts an optional duration to a `timespec` (saturating).
pub fn to_timespec(d: Duration) -> timespec {
    timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

fn ts_ptr(t: &Option<timespec>) -> *const timespec {
    t.as_ref()
        .map_or(std::ptr::null(), |t| t as *const timespec)
}

// fccntl commands (fccntl.h).
const FLOWSRCVTIMEO: c_int = 0o1;
const FLOWSSNDTIMEO: c_int = 0o3;
const FLOWGQOSSPEC: c_int = 0o5;
const FLOWSFLAGS: c_int = 0o6;
const FLOWGFLAGS: c_int = 0o7;
const FLOWGRXQLEN: c_int = 0o10;
const FLOWGTXQLEN: c_int = 0o11;
const FRCTSFLAGS: c_int = 0o1000;
const FRCTGFLAGS: c_int = 0o2000;

/// An owned `fset_t *` (non-null; only made by [`Lib::fset_create`]).
#[derive(Debug)]
pub struct SetPtr(*mut FsetT);
/// An owned `fqueue_t *` (non-null; only made by [`Lib::fqueue_create`]).
#[derive(Debug)]
pub struct QueuePtr(*mut FqueueT);
// SAFETY: `fset_t`/`fqueue_t` are heap objects of the library; the flow
// set operations lock the shared set with its own mutex, so a set may be
// used from any thread, and concurrently for add/del/has while another
// thread waits on it. A queue is only used through `&mut` or by one owner.
unsafe impl Send for SetPtr {}
// SAFETY: see above (fset_add/fset_del/fset_has/fevent lock internally).
unsafe impl Sync for SetPtr {}
// SAFETY: see above; a queue is never shared, only moved.
unsafe impl Send for QueuePtr {}

impl Lib {
    pub fn flow_alloc(
        &self,
        name: &CStr,
        qos: Option<&mut RawQos>,
        timeo: Option<Duration>,
    ) -> c_int {
        let t = timeo.map(to_timespec);
        let q = qos.map_or(std::ptr::null_mut(), |q| q as *mut RawQos);
        // SAFETY: name is NUL-terminated, q is null or a valid qosspec_t the
        // library may update, the timespec outlives the call.
        unsafe { (self.flow_alloc)(name.as_ptr(), q, ts_ptr(&t)) }
    }

    pub fn flow_accept(&self, qos: &mut RawQos, timeo: Option<Duration>) -> c_int {
        let t = timeo.map(to_timespec);
        // SAFETY: qos points to a valid qosspec_t; timespec outlives the call.
        unsafe { (self.flow_accept)(qos as *mut RawQos, ts_ptr(&t)) }
    }

    pub fn flow_join(&self, name: &CStr, timeo: Option<Duration>) -> c_int {
        let t = timeo.map(to_timespec);
        // SAFETY: NUL-terminated name; timespec outlives the call.
        unsafe { (self.flow_join)(name.as_ptr(), ts_ptr(&t)) }
    }

    pub fn flow_dealloc(&self, fd: c_int) -> c_int {
        // SAFETY: plain integer argument; the safe layer makes sure no other
        // thread uses fd at this point (dealloc needs ownership/&mut).
        unsafe { (self.flow_dealloc)(fd) }
    }

    pub fn flow_write(&self, fd: c_int, buf: &[u8]) -> ssize_t {
        // SAFETY: buf is valid for buf.len() bytes of reading.
        unsafe { (self.flow_write)(fd, buf.as_ptr().cast(), buf.len()) }
    }

    /// Reads into the spare capacity of `buf` and sets its length.
    pub fn flow_read(&self, fd: c_int, buf: &mut Vec<u8>) -> ssize_t {
        buf.clear();
        let cap = buf.capacity();
        // SAFETY: the pointer is valid for `cap` bytes of writing; the
        // library writes at most `cap` bytes.
        let n = unsafe { (self.flow_read)(fd, buf.as_mut_ptr().cast(), cap) };
        if n > 0 {
            let n = (n as usize).min(cap);
            // SAFETY: the library initialised the first n bytes.
            unsafe { buf.set_len(n) };
        }
        n
    }

    pub fn set_timeout(&self, fd: c_int, snd: bool, t: Option<Duration>) -> c_int {
        let cmd = if snd { FLOWSSNDTIMEO } else { FLOWSRCVTIMEO };
        let ts = t.map(to_timespec);
        // SAFETY: the command takes a `struct timespec *` (NULL = none).
        unsafe { (self.fccntl)(fd, cmd, ts_ptr(&ts)) }
    }

    pub fn get_qos(&self, fd: c_int) -> Result<RawQos, c_int> {
        let mut q = RawQos::default();
        // SAFETY: the command writes a qosspec_t through the pointer.
        let r = unsafe { (self.fccntl)(fd, FLOWGQOSSPEC, &mut q as *mut RawQos) };
        if r < 0 {
            Err(r)
        } else {
            Ok(q)
        }
    }

    pub fn get_queue_len(&self, fd: c_int, tx: bool) -> Result<usize, c_int> {
        let cmd = if tx { FLOWGTXQLEN } else { FLOWGRXQLEN };
        let mut n: size_t = 0;
        // SAFETY: the command writes a size_t through the pointer.
        let r = unsafe { (self.fccntl)(fd, cmd, &mut n as *mut size_t) };
        if r < 0 {
            Err(r)
        } else {
            Ok(n)
        }
    }

    pub fn set_flags(&self, fd: c_int, flags: u32) -> c_int {
        // SAFETY: the command reads a uint32_t vararg (promoted as u32).
        unsafe { (self.fccntl)(fd, FLOWSFLAGS, flags) }
    }

    pub fn get_flags(&self, fd: c_int) -> Result<u32, c_int> {
        let mut f: u32 = 0;
        // SAFETY: the command writes a uint32_t through the pointer.
        let r = unsafe { (self.fccntl)(fd, FLOWGFLAGS, &mut f as *mut u32) };
        if r < 0 {
            Err(r)
        } else {
            Ok(f)
        }
    }

    pub fn set_frct_flags(&self, fd: c_int, flags: u16) -> c_int {
        // SAFETY: the command reads the flags as a uint32_t vararg.
        unsafe { (self.fccntl)(fd, FRCTSFLAGS, u32::from(flags)) }
    }

    pub fn get_frct_flags(&self, fd: c_int) -> Result<u16, c_int> {
        let mut f: u16 = 0;
        // SAFETY: the command writes a uint16_t through the pointer.
        let r = unsafe { (self.fccntl)(fd, FRCTGFLAGS, &mut f as *mut u16) };
        if r < 0 {
            Err(r)
        } else {
            Ok(f)
        }
    }

    pub fn fset_create(&self) -> Option<SetPtr> {
        // SAFETY: no arguments; returns NULL on failure.
        let p = unsafe { (self.fset_create)() };
        (!p.is_null()).then_some(SetPtr(p))
    }

    pub fn fset_destroy(&self, p: SetPtr) {
        // SAFETY: p came from fset_create and is consumed here, so it is not
        // used afterwards.
        unsafe { (self.fset_destroy)(p.0) }
    }

    pub fn fqueue_create(&self) -> Option<QueuePtr> {
        // SAFETY: no arguments; returns NULL on failure.
        let p = unsafe { (self.fqueue_create)() };
        (!p.is_null()).then_some(QueuePtr(p))
    }

    pub fn fqueue_destroy(&self, p: QueuePtr) {
        // SAFETY: p came from fqueue_create and is consumed here.
        unsafe { (self.fqueue_destroy)(p.0) }
    }

    // The set and queue pointers passed to the methods below are valid,
    // non-null handles: SetPtr/QueuePtr are only made by the create
    // functions and are consumed by the destroy functions.
    pub fn fset_zero(&self, s: &SetPtr) {
        // SAFETY: valid fset handle.
        unsafe { (self.fset_zero)(s.0) }
    }

    pub fn fset_add(&self, s: &SetPtr, fd: c_int) -> c_int {
        // SAFETY: valid fset handle.
        unsafe { (self.fset_add)(s.0, fd) }
    }

    pub fn fset_has(&self, s: &SetPtr, fd: c_int) -> bool {
        // SAFETY: valid fset handle.
        unsafe { (self.fset_has)(s.0, fd) }
    }

    pub fn fset_del(&self, s: &SetPtr, fd: c_int) {
        // SAFETY: valid fset handle.
        unsafe { (self.fset_del)(s.0, fd) }
    }

    pub fn fqueue_next(&self, q: &QueuePtr) -> c_int {
        // SAFETY: valid fqueue handle.
        unsafe { (self.fqueue_next)(q.0) }
    }

    pub fn fqueue_type(&self, q: &QueuePtr) -> c_int {
        // SAFETY: valid fqueue handle.
        unsafe { (self.fqueue_type)(q.0) }.0
    }

    pub fn fevent(&self, s: &SetPtr, q: &QueuePtr, timeo: Option<Duration>) -> ssize_t {
        let t = timeo.map(to_timespec);
        // SAFETY: valid handles; timespec outlives the call.
        unsafe { (self.fevent)(s.0, q.0, ts_ptr(&t)) }
    }

    fn irm(&self) -> Result<&IrmFns, Error> {
        self.irm.as_ref().ok_or_else(|| Error::NotInstalled {
            detail: format!("{IRM_SONAME} could not be loaded"),
        })
    }

    pub fn create_name(&self, name: &str) -> Result<c_int, Error> {
        let f = self.irm()?;
        // SAFETY: RawNameInfo is plain old data; all-zero is a valid value
        // (empty paths).
        let mut info: RawNameInfo = unsafe { std::mem::zeroed() };
        info.pol_lb = LB_RR;
        copy_str(&mut info.name, name)?;
        // SAFETY: info is a valid, NUL-terminated name_info.
        Ok(unsafe { (f.create_name)(&mut info) })
    }

    pub fn destroy_name(&self, name: &CStr) -> Result<c_int, Error> {
        let f = self.irm()?;
        // SAFETY: NUL-terminated string.
        Ok(unsafe { (f.destroy_name)(name.as_ptr()) })
    }

    pub fn reg_name(&self, name: &CStr, ipcp: pid_t, reg: bool) -> Result<c_int, Error> {
        let f = self.irm()?;
        let func = if reg { f.reg_name } else { f.unreg_name };
        // SAFETY: NUL-terminated string and a pid.
        Ok(unsafe { func(name.as_ptr(), ipcp) })
    }

    pub fn bind_process(&self, pid: pid_t, name: &CStr, bind: bool) -> Result<c_int, Error> {
        let f = self.irm()?;
        let func = if bind {
            f.bind_process
        } else {
            f.unbind_process
        };
        // SAFETY: a pid and a NUL-terminated string.
        Ok(unsafe { func(pid, name.as_ptr()) })
    }

    /// Lists IPCPs as (pid, type, name, layer).
    pub fn list_ipcps(&self) -> Result<Result<Vec<IpcpRow>, c_int>, Error> {
        let f = self.irm()?;
        let mut p: *mut RawIpcpListInfo = std::ptr::null_mut();
        // SAFETY: the library stores a malloc'ed array of n entries in p.
        let n = unsafe { (f.list_ipcps)(&mut p) };
        if n < 0 {
            return Ok(Err(n as c_int));
        }
        let mut out = Vec::new();
        if !p.is_null() {
            for i in 0..n as usize {
                // SAFETY: p points to n initialised entries.
                let e = unsafe { &*p.add(i) };
                out.push((
                    e.pid,
                    e.ipcp_type,
                    cstr_field(&e.name),
                    cstr_field(&e.layer),
                ));
            }
            // SAFETY: the array was allocated with malloc by the library.
            unsafe { libc::free(p.cast()) };
        }
        Ok(Ok(out))
    }

    /// Lists the names known to the IRMd.
    pub fn list_names(&self) -> Result<Result<Vec<String>, c_int>, Error> {
        let f = self.irm()?;
        let mut p: *mut RawNameInfo = std::ptr::null_mut();
        // SAFETY: the library stores a malloc'ed array of n entries in p.
        let n = unsafe { (f.list_names)(&mut p) };
        if n < 0 {
            return Ok(Err(n as c_int));
        }
        let mut out = Vec::new();
        if !p.is_null() {
            for i in 0..n as usize {
                // SAFETY: p points to n initialised entries.
                let e = unsafe { &*p.add(i) };
                out.push(cstr_field(&e.name));
            }
            // SAFETY: the array was allocated with malloc by the library.
            unsafe { libc::free(p.cast()) };
        }
        Ok(Ok(out))
    }
}

/// (pid, type, name, layer) of an IPCP.
pub type IpcpRow = (pid_t, i32, String, String);

fn cstr_field(a: &[c_char]) -> String {
    let bytes: Vec<u8> = a
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn copy_str(dst: &mut [c_char], s: &str) -> Result<(), Error> {
    let c = CString::new(s).map_err(|_| Error::InvalidName(s.to_owned()))?;
    let b = c.as_bytes_with_nul();
    if b.len() > dst.len() {
        return Err(Error::InvalidName(s.to_owned()));
    }
    for (d, &x) in dst.iter_mut().zip(b) {
        *d = x as c_char;
    }
    Ok(())
}

#[cfg(test)]
mod abi_check;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_0_23_headers() {
        assert_eq!(std::mem::size_of::<RawQos>(), 40);
        assert_eq!(std::mem::offset_of!(RawQos, availability), 16);
        assert_eq!(std::mem::offset_of!(RawQos, timeout), 36);
        assert_eq!(std::mem::offset_of!(RawNameInfo, pol_lb), 256);
        assert_eq!(std::mem::size_of::<RawNameInfo>(), 256 + 4 + 2 * 3 * 512);
        assert_eq!(std::mem::size_of::<RawIpcpListInfo>(), 520);
    }

    #[test]
    fn probe_of_a_missing_socket_is_a_typed_error() {
        let e = probe_irmd(Path::new("/nonexistent/irm.sock"), PROBE_TIMEOUT).unwrap_err();
        assert!(matches!(e, Error::IrmdNotRunning { .. }));
    }

    #[test]
    fn probe_of_a_silent_socket_times_out() {
        let dir = std::env::temp_dir().join(format!("cicada-oprobe-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join("irm.sock");
        let _ = std::fs::remove_file(&p);
        let listener = silent_seqpacket_listener(&p).unwrap();
        let t0 = std::time::Instant::now();
        let e = probe_irmd(&p, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, Error::IrmdNotRunning { .. }));
        assert!(t0.elapsed() < Duration::from_secs(5));
        drop(listener);
        // A stale socket (no listener) is refused at once.
        let e = probe_irmd(&p, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, Error::IrmdNotRunning { .. }));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn timespec_conversion() {
        let t = to_timespec(Duration::from_millis(1500));
        assert_eq!((t.tv_sec, t.tv_nsec), (1, 500_000_000));
    }
}
