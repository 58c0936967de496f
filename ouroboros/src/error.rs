//! The error type of the binding.

use std::io;

/// Ouroboros' own error numbers (`<ouroboros/errno.h>`, 0.23).
pub mod codes {
    /// Flow is not allocated.
    pub const ENOTALLOC: i32 = 1000;
    /// Unknown IPCP type.
    pub const EIPCPTYPE: i32 = 1001;
    /// Failed to communicate with the IRMd.
    pub const EIRMD: i32 = 1002;
    /// Failed to communicate with an IPCP.
    pub const EIPCP: i32 = 1003;
    /// Target in wrong state.
    pub const EIPCPSTATE: i32 = 1004;
    /// Flow is down.
    pub const EFLOWDOWN: i32 = 1005;
    /// Flow is down (peer timed out).
    pub const EFLOWPEER: i32 = 1006;
    /// Naming error.
    pub const ENAME: i32 = 1007;
    /// Encryption error.
    pub const ECRYPT: i32 = 1008;
    /// Authentication error.
    pub const EAUTH: i32 = 1009;
}

/// Everything that can go wrong in the binding.
///
/// Variants that come from a library call keep the name of the call (`op`)
/// and the original (positive) error number (`code`), as returned negated by
/// the C library; [`Error::code`] gives it back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `libouroboros-dev.so.0.23` (or `libouroboros-irm`) cannot be loaded.
    #[error("Ouroboros not installed: {detail}")]
    NotInstalled {
        /// What the dynamic loader said.
        detail: String,
    },
    /// Another version of Ouroboros is installed, or a symbol is missing.
    #[error("wrong Ouroboros version (this binding needs 0.23): {detail}")]
    WrongVersion {
        /// What was found instead.
        detail: String,
    },
    /// No IRMd answers on its socket, so the library was not loaded.
    #[error("IRMd not running: {path}: {detail}")]
    IrmdNotRunning {
        /// The socket that was probed.
        path: String,
        /// Why the probe failed.
        detail: String,
    },
    /// A timeout expired (`ETIMEDOUT`).
    #[error("{op}: timed out")]
    Timeout {
        /// The call that failed.
        op: &'static str,
        /// The original error number.
        code: i32,
    },
    /// The operation would block on a non-blocking flow (`EAGAIN`).
    #[error("{op}: would block")]
    WouldBlock {
        /// The call that failed.
        op: &'static str,
        /// The original error number.
        code: i32,
    },
    /// The flow is down (`EFLOWDOWN`, or a `FlowDown`/`FlowDealloc` event).
    #[error("{op}: flow down")]
    FlowDown {
        /// The call that failed.
        op: &'static str,
        /// The original error number.
        code: i32,
    },
    /// The peer stopped answering keepalives (`EFLOWPEER`, `FlowPeer`).
    #[error("{op}: peer gone (keepalive timeout)")]
    PeerGone {
        /// The call that failed.
        op: &'static str,
        /// The original error number.
        code: i32,
    },
    /// The flow is not allocated (`ENOTALLOC`, `EBADF`).
    #[error("{op}: flow not allocated")]
    NotAllocated {
        /// The call that failed.
        op: &'static str,
        /// The original error number.
        code: i32,
    },
    /// No such name, or a naming error (`ENAME`, `ENOENT`).
    #[error("{op}: no such name")]
    NoSuchName {
        /// The call that failed.
        op: &'static str,
        /// The original error number.
        code: i32,
    },
    /// Not permitted (`EPERM`, `EACCES`).
    #[error("{op}: permission denied")]
    Permission {
        /// The call that failed.
        op: &'static str,
        /// The original error number.
        code: i32,
    },
    /// Encryption failed (`ECRYPT`).
    #[error("{op}: encryption error")]
    Crypt {
        /// The call that failed.
        op: &'static str,
        /// The original error number.
        code: i32,
    },
    /// Authentication failed (`EAUTH`).
    #[error("{op}: authentication error")]
    Auth {
        /// The call that failed.
        op: &'static str,
        /// The original error number.
        code: i32,
    },
    /// Talking to the IRMd failed (`EIRMD`, or a bare `-1` from the IRMd).
    #[error("{op}: failed to communicate with the IRMd (code {code})")]
    Irmd {
        /// The call that failed.
        op: &'static str,
        /// The original error number (1 for a bare -1).
        code: i32,
    },
    /// Talking to an IPCP failed (`EIPCP`, `EIPCPSTATE`, `EIPCPTYPE`).
    #[error("{op}: IPCP error (code {code})")]
    Ipcp {
        /// The call that failed.
        op: &'static str,
        /// The original error number.
        code: i32,
    },
    /// A packet does not fit in the buffer (`EMSGSIZE`).
    #[error("{op}: packet too large")]
    MessageTooLarge {
        /// The call that failed.
        op: &'static str,
        /// The original error number.
        code: i32,
    },
    /// An argument was refused (`EINVAL`, `ENOTSUP`).
    #[error("{op}: invalid argument (code {code})")]
    InvalidArgument {
        /// The call that failed.
        op: &'static str,
        /// The original error number.
        code: i32,
    },
    /// Any other error number.
    #[error("{op}: {}", describe(*.code))]
    Other {
        /// The call that failed.
        op: &'static str,
        /// The original error number.
        code: i32,
    },
    /// The [`Flow`](crate::Flow) was deallocated (or never allocated).
    #[error("flow is deallocated")]
    Deallocated,
    /// A name has an interior NUL or is longer than 255 bytes.
    #[error("invalid name {0:?}")]
    InvalidName(String),
    /// A flow to a name this process is bound to: Ouroboros 0.23 cannot
    /// allocate a flow to one's own name.
    #[error("cannot allocate a flow to {0:?}: this process is bound to that name")]
    OwnName(String),
    /// No IPCP of the given layer exists.
    #[error("no IPCP in layer {0:?}")]
    NoSuchLayer(String),
    /// Received bytes are not UTF-8 (`readline`).
    #[error("received data is not UTF-8")]
    NotUtf8,
}

fn describe(code: i32) -> String {
    format!("{} (code {code})", io::Error::from_raw_os_error(code))
}

/// The result type of the binding.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps the negated error number returned by a library call.
    pub fn from_ret(op: &'static str, ret: i64) -> Error {
        let code = i32::try_from(ret.unsigned_abs()).unwrap_or(i32::MAX);
        use codes::*;
        match code {
            // EPERM is 1 too: from the IRM calls, -1 is the IRMd's bare
            // failure.
            1 if op.starts_with("irm_") => Error::Irmd { op, code },
            libc::ETIMEDOUT => Error::Timeout { op, code },
            libc::EAGAIN => Error::WouldBlock { op, code },
            EFLOWDOWN => Error::FlowDown { op, code },
            EFLOWPEER => Error::PeerGone { op, code },
            ENOTALLOC | libc::EBADF => Error::NotAllocated { op, code },
            ENAME | libc::ENOENT => Error::NoSuchName { op, code },
            libc::EPERM | libc::EACCES => Error::Permission { op, code },
            ECRYPT => Error::Crypt { op, code },
            EAUTH => Error::Auth { op, code },
            EIRMD => Error::Irmd { op, code },
            EIPCP | EIPCPSTATE | EIPCPTYPE => Error::Ipcp { op, code },
            libc::EMSGSIZE => Error::MessageTooLarge { op, code },
            libc::EINVAL | libc::ENOTSUP => Error::InvalidArgument { op, code },
            _ => Error::Other { op, code },
        }
    }

    /// The original (positive) error number, for errors that came from the
    /// library.
    pub fn code(&self) -> Option<i32> {
        match self {
            Error::Timeout { code, .. }
            | Error::WouldBlock { code, .. }
            | Error::FlowDown { code, .. }
            | Error::PeerGone { code, .. }
            | Error::NotAllocated { code, .. }
            | Error::NoSuchName { code, .. }
            | Error::Permission { code, .. }
            | Error::Crypt { code, .. }
            | Error::Auth { code, .. }
            | Error::Irmd { code, .. }
            | Error::Ipcp { code, .. }
            | Error::MessageTooLarge { code, .. }
            | Error::InvalidArgument { code, .. }
            | Error::Other { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether this error means the flow is dead (peer gone or flow down or
    /// deallocated): nothing more will be read from it.
    pub fn is_flow_dead(&self) -> bool {
        matches!(
            self,
            Error::FlowDown { .. }
                | Error::PeerGone { .. }
                | Error::NotAllocated { .. }
                | Error::Deallocated
        )
    }

    /// Whether Ouroboros itself is missing (not installed, wrong version, no
    /// IRMd): callers may fall back to another transport.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::NotInstalled { .. } | Error::WrongVersion { .. } | Error::IrmdNotRunning { .. }
        )
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Timeout { .. } => io::ErrorKind::TimedOut,
            Error::WouldBlock { .. } => io::ErrorKind::WouldBlock,
            Error::FlowDown { .. } | Error::PeerGone { .. } => io::ErrorKind::ConnectionReset,
            Error::NotAllocated { .. } | Error::Deallocated => io::ErrorKind::NotConnected,
            Error::NoSuchName { .. } | Error::NoSuchLayer(_) => io::ErrorKind::NotFound,
            Error::Permission { .. } => io::ErrorKind::PermissionDenied,
            Error::InvalidArgument { .. } | Error::InvalidName(_) | Error::OwnName(_) => {
                io::ErrorKind::InvalidInput
            }
            Error::NotUtf8 | Error::MessageTooLarge { .. } => io::ErrorKind::InvalidData,
            Error::NotInstalled { .. } | Error::WrongVersion { .. } => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_variants_and_are_kept() {
        let e = Error::from_ret("flow_read", -(libc::ETIMEDOUT as i64));
        assert!(matches!(e, Error::Timeout { .. }));
        assert_eq!(e.code(), Some(libc::ETIMEDOUT));
        let e = Error::from_ret("flow_read", -1005);
        assert!(matches!(e, Error::FlowDown { .. }) && e.is_flow_dead());
        assert!(matches!(
            Error::from_ret("x", -1006),
            Error::PeerGone { .. }
        ));
        assert!(matches!(
            Error::from_ret("x", -1007),
            Error::NoSuchName { .. }
        ));
        assert!(matches!(Error::from_ret("x", -1008), Error::Crypt { .. }));
        assert!(matches!(Error::from_ret("x", -1009), Error::Auth { .. }));
        assert!(matches!(
            Error::from_ret("irm_reg_name", -1),
            Error::Irmd { code: 1, .. }
        ));
        assert!(matches!(
            Error::from_ret("fccntl", -1),
            Error::Permission { .. }
        ));
        assert!(matches!(
            Error::from_ret("x", -1000),
            Error::NotAllocated { .. }
        ));
        let e = Error::from_ret("x", -(libc::ENOSPC as i64));
        assert_eq!(e.code(), Some(libc::ENOSPC));
        assert!(e.to_string().starts_with("x: "));
        let io: io::Error = Error::from_ret("x", -1005).into();
        assert_eq!(io.kind(), io::ErrorKind::ConnectionReset);
    }
}
