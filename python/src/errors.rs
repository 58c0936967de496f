//! Rust errors as Python exceptions. The exception classes live in
//! `cicada/_errors.py` (they inherit from both `CicadaError` and a builtin
//! such as `TimeoutError`, which PyO3's `create_exception!` cannot do).

use cicada::chord::{JoinError, SendError};
use cicada::Error;
use pyo3::prelude::*;

/// An instance of `cicada._errors.<class>` with these arguments, or the
/// error importing it raised.
fn make(class: &str, msg: String, errno: Option<i32>) -> PyErr {
    Python::with_gil(|py| {
        let made = py
            .import("cicada._errors")
            .and_then(|m| m.getattr(class))
            .and_then(|cls| match errno {
                Some(errno) => cls.call1((errno, msg)),
                None => cls.call1((msg,)),
            });
        match made {
            Ok(value) => PyErr::from_value(value),
            Err(e) => e,
        }
    })
}

/// `cicada.CicadaError(msg)`.
pub(crate) fn cicada_error(msg: impl Into<String>) -> PyErr {
    make("CicadaError", msg.into(), None)
}

/// The Python exception for a Rust error (see `docs/python.md`).
pub(crate) fn to_pyerr(e: Error) -> PyErr {
    let msg = e.to_string();
    match &e {
        Error::Timeout { .. }
        | Error::Join(JoinError::Timeout)
        | Error::Send(SendError::Timeout | SendError::ReceiverBusy) => {
            make("CicadaTimeoutError", msg, None)
        }
        Error::Join(_)
        | Error::NoHandshake(_)
        | Error::Resolve(_)
        | Error::LookupFailed(_)
        | Error::Send(
            SendError::NoSuchNode | SendError::NoRoute | SendError::Left | SendError::NotJoined,
        ) => make("CicadaConnectionError", msg, None),
        Error::Send(SendError::TooLarge { .. }) => make("CicadaValueError", msg, None),
        Error::PortMapping(_) => make("PortMappingError", msg, None),
        Error::Io(io) => match io.raw_os_error() {
            Some(errno) => make("CicadaOSError", msg, Some(errno)),
            None => make("CicadaOSError", msg, None),
        },
        _ => make("CicadaError", msg, None),
    }
}
