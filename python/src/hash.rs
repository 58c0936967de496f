//! `cicada.chordlib.routing.Hash`: a 256-bit id on the ring.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher};

use cicada::Hash;
use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyInt, PyString};

/// What `__reduce__` returns: the class and `(None, hex digest)`.
type Reduced<'py> = (Bound<'py, PyAny>, (Py<PyAny>, String));

/// A place on the ring: the SHA-256 of a value, or a digest given as is.
///
/// ``Hash(value=...)`` hashes ``value`` (``str``, as UTF-8, or bytes);
/// ``Hash(hashed=...)`` takes a digest already made: 64 hex digits, 32
/// bytes, or an ``int`` below ``2**256``. Give exactly one. Hashes compare
/// as 256-bit unsigned integers (big-endian digests), hash, and convert
/// with ``int()``, ``str()`` (the hex digest) and ``bytes()``.
#[pyclass(module = "cicada.chordlib.routing", name = "Hash", frozen)]
pub struct PyHash {
    pub(crate) h: Hash,
    value: Option<Py<PyAny>>,
}

impl PyHash {
    /// A `Hash` with no known value.
    pub(crate) fn from_hash(h: Hash) -> PyHash {
        PyHash { h, value: None }
    }
}

#[pymethods]
impl PyHash {
    #[new]
    #[pyo3(signature = (value=None, hashed=None))]
    fn new(
        value: Option<&Bound<'_, PyAny>>,
        hashed: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyHash> {
        crate::guard(|| match (value, hashed) {
            (Some(v), None) => {
                let h = if let Ok(s) = v.downcast::<PyString>() {
                    Hash::of(s.to_cow()?.as_bytes())
                } else if let Ok(b) = v.downcast::<PyBytes>() {
                    Hash::of(b.as_bytes())
                } else if let Ok(b) = v.downcast::<PyByteArray>() {
                    Hash::of(b.to_vec())
                } else {
                    return Err(PyTypeError::new_err(format!(
                        "Hash value must be str or bytes, not {}",
                        v.get_type().name()?
                    )));
                };
                Ok(PyHash {
                    h,
                    value: Some(v.clone().unbind()),
                })
            }
            (None, Some(d)) => Ok(PyHash {
                h: parse_hashed(d)?,
                value: None,
            }),
            (None, None) => Err(PyTypeError::new_err("Hash() needs value= or hashed=")),
            (Some(_), Some(_)) => Err(PyTypeError::new_err(
                "Hash() takes value= or hashed=, not both",
            )),
        })
    }

    /// The digest as 64 lowercase hex digits.
    #[getter]
    fn hashed(&self) -> String {
        self.h.to_string()
    }

    /// The value this hash was made from, or ``None`` when it was given as
    /// a digest.
    #[getter]
    fn value(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.value.as_ref().map(|v| v.clone_ref(py))
    }

    /// The digest as 32 big-endian bytes.
    #[getter]
    fn digest<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.h.to_bytes())
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.digest(py)
    }

    fn __int__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.get_type::<PyInt>()
            .call_method1("from_bytes", (self.digest(py), "big"))
    }

    fn __str__(&self) -> String {
        self.h.to_string()
    }

    fn __repr__(&self) -> String {
        format!("Hash(hashed='{}')", self.h)
    }

    fn __hash__(&self) -> u64 {
        let mut s = DefaultHasher::new();
        self.h.hash(&mut s);
        s.finish()
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(o) = other.downcast::<PyHash>() else {
            return Ok(py.NotImplemented());
        };
        let r = op.matches(self.h.cmp(&o.get().h));
        Ok(pyo3::types::PyBool::new(py, r)
            .to_owned()
            .into_any()
            .unbind())
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Reduced<'py>> {
        let py = slf.py();
        Ok((
            slf.get_type().into_any(),
            (py.None(), slf.get().h.to_string()),
        ))
    }
}

/// A digest given to `Hash(hashed=...)`.
fn parse_hashed(d: &Bound<'_, PyAny>) -> PyResult<Hash> {
    if let Ok(s) = d.downcast::<PyString>() {
        let s = s.to_cow()?;
        return s.parse::<Hash>().map_err(|_| {
            PyValueError::new_err(format!("hashed must be 64 hex digits, got {s:?}"))
        });
    }
    if let Ok(b) = d.downcast::<PyBytes>() {
        return digest_bytes(b.as_bytes());
    }
    if let Ok(b) = d.downcast::<PyByteArray>() {
        return digest_bytes(&b.to_vec());
    }
    if d.downcast::<PyInt>().is_ok() {
        let bytes = d
            .call_method1("to_bytes", (32, "big"))
            .map_err(|_| PyValueError::new_err("hashed as an int must be in [0, 2**256)"))?;
        return digest_bytes(bytes.downcast::<PyBytes>()?.as_bytes());
    }
    Err(PyTypeError::new_err(format!(
        "hashed must be str (hex), bytes or int, not {}",
        d.get_type().name()?
    )))
}

fn digest_bytes(b: &[u8]) -> PyResult<Hash> {
    let arr: [u8; 32] = b.try_into().map_err(|_| {
        PyValueError::new_err(format!("hashed as bytes must be 32 long, got {}", b.len()))
    })?;
    Ok(Hash::from_bytes(arr))
}
