//! `RemoteNode`: another peer as this one knows it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher};

use cicada::{PeerAddr, RemoteNode};
use pyo3::basic::CompareOp;
use pyo3::prelude::*;

use crate::hash::PyHash;

/// Another peer of the swarm: its id (``hash``) and its address
/// (``chord_addr``, a ``(host, port)`` tuple). ``recv`` returns one as the
/// source of a message, hooks receive them, and ``send`` accepts one as a
/// target. Two are equal when id and address are.
#[pyclass(module = "cicada.swarmlib", name = "RemoteNode", frozen)]
pub struct PyRemoteNode {
    pub(crate) node: RemoteNode,
}

/// A `PeerAddr` as Python sees it: `(ip, port)` for UDP, the name for
/// Ouroboros.
pub(crate) fn addr_to_py(py: Python<'_>, addr: &PeerAddr) -> PyResult<Py<PyAny>> {
    match addr.udp() {
        Some(a) => Ok((a.ip().to_string(), a.port())
            .into_pyobject(py)?
            .into_any()
            .unbind()),
        None => Ok(addr.to_string().into_pyobject(py)?.into_any().unbind()),
    }
}

#[pymethods]
impl PyRemoteNode {
    /// The peer's id on the ring.
    #[getter]
    fn hash(&self) -> PyHash {
        PyHash::from_hash(self.node.id)
    }

    /// The peer's address, ``(ip, port)``.
    #[getter]
    fn chord_addr(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        addr_to_py(py, &self.node.addr)
    }

    fn __repr__(&self) -> String {
        format!("RemoteNode({}, {})", self.node.addr, self.node.id.short())
    }

    fn __hash__(&self) -> u64 {
        let mut s = DefaultHasher::new();
        self.node.id.hash(&mut s);
        s.finish()
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(o) = other.downcast::<PyRemoteNode>() else {
            return Ok(py.NotImplemented());
        };
        let eq = self.node == o.get().node;
        match op {
            CompareOp::Eq => Ok(pyo3::types::PyBool::new(py, eq)
                .to_owned()
                .into_any()
                .unbind()),
            CompareOp::Ne => Ok(pyo3::types::PyBool::new(py, !eq)
                .to_owned()
                .into_any()
                .unbind()),
            _ => Ok(py.NotImplemented()),
        }
    }
}
