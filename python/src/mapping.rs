//! `cicada.traversal.PortMapping` over [`cicada::traversal::PortMapping`].

use std::net::SocketAddr;
use std::sync::Mutex;

use cicada::traversal::{Options, PortMapping, Protocol};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::peer::port_arg;
use crate::{block, cicada_error, guard, to_pyerr};

/// What the gateway told about the mapping (``pm.mapper``).
#[pyclass(module = "cicada.traversal", name = "Mapper", frozen)]
pub struct PyMapper {
    /// The gateway's external IP address, as text.
    #[pyo3(get)]
    external_ip: String,
    /// How the mapping was made: ``"upnp"`` or ``"natpmp"``.
    #[pyo3(get)]
    method: String,
}

/// A port mapping on the NAT gateway (UPnP IGD, then NAT-PMP), made by
/// ``with`` (or ``open()``) and removed when the block ends (or by
/// ``close()``); it is renewed meanwhile.
///
/// ``port`` is the local port to map, ``protocol`` ``"udp"`` (the swarm's)
/// or ``"tcp"``. Inside the block: ``eport`` (the external port, not
/// always ``port``), ``mapper.external_ip``, ``local_address`` (this host's
/// address toward the gateway) and ``port``. Raises
/// ``cicada.PortMappingError`` (a ``ConnectionError``) when no gateway
/// maps it.
#[pyclass(module = "cicada.traversal", name = "PortMapping", frozen)]
pub struct PyPortMapping {
    port: u16,
    protocol: Protocol,
    lease: f64,
    mapping: Mutex<Option<PortMapping>>,
}

impl PyPortMapping {
    fn with<T>(&self, f: impl FnOnce(&PortMapping) -> T) -> PyResult<T> {
        let m = self.mapping.lock().unwrap_or_else(|p| p.into_inner());
        match &*m {
            Some(m) => Ok(f(m)),
            None => Err(cicada_error(
                "the port is not mapped: use `with PortMapping(...) as pm:` or call open()",
            )),
        }
    }

    fn external(&self) -> PyResult<SocketAddr> {
        self.with(|m| m.external_addr())
    }
}

#[pymethods]
impl PyPortMapping {
    #[new]
    #[pyo3(signature = (port, protocol="udp", lease=3600.0))]
    fn new(port: &Bound<'_, PyAny>, protocol: &str, lease: f64) -> PyResult<PyPortMapping> {
        guard(|| {
            let port = port_arg(port, "port")?;
            let protocol = match protocol.to_ascii_lowercase().as_str() {
                "udp" => Protocol::Udp,
                "tcp" => Protocol::Tcp,
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "protocol must be \"udp\" or \"tcp\", got {protocol:?}"
                    )))
                }
            };
            if !(lease.is_finite() && (0.0..1e9).contains(&lease)) {
                return Err(PyValueError::new_err(format!(
                    "lease must be a number of seconds >= 0, got {lease}"
                )));
            }
            Ok(PyPortMapping {
                port,
                protocol,
                lease,
                mapping: Mutex::new(None),
            })
        })
    }

    /// Asks the gateway for the mapping (blocks a few seconds at most).
    fn open(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| {
            if self
                .mapping
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
            {
                return Ok(());
            }
            let opts =
                Options::default().with_lease(std::time::Duration::from_secs_f64(self.lease));
            let (port, protocol) = (self.port, self.protocol);
            let m = block(py, async move {
                PortMapping::with_options(port, protocol, &opts).await
            })?
            .map_err(|e| to_pyerr(e.into()))?;
            *self.mapping.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
            Ok(())
        })
    }

    /// Removes the mapping from the gateway. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| {
            let m = self
                .mapping
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(m) = m {
                block(py, m.close())?.map_err(|e| to_pyerr(e.into()))?;
            }
            Ok(())
        })
    }

    fn __enter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<Self>> {
        slf.get().open(py)?;
        Ok(slf)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    /// The local port that is mapped.
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// ``"udp"`` or ``"tcp"``.
    #[getter]
    fn protocol(&self) -> String {
        self.protocol.to_string().to_ascii_lowercase()
    }

    /// The external port the gateway mapped (may differ from ``port``).
    #[getter]
    fn eport(&self) -> PyResult<u16> {
        guard(|| Ok(self.external()?.port()))
    }

    /// This host's address toward the gateway, as text.
    #[getter]
    fn local_address(&self) -> PyResult<String> {
        guard(|| self.with(|m| m.local_addr().ip().to_string()))
    }

    /// The gateway's side: ``mapper.external_ip``, ``mapper.method``.
    #[getter]
    fn mapper(&self) -> PyResult<PyMapper> {
        guard(|| {
            let ip = self.external()?.ip().to_string();
            let method = self.with(|m| m.method().as_str().to_string())?;
            Ok(PyMapper {
                external_ip: ip,
                method,
            })
        })
    }

    fn __repr__(&self) -> String {
        match self.external() {
            Ok(e) => format!("<PortMapping {} {} -> {e}>", self.protocol(), self.port),
            Err(_) => format!(
                "<PortMapping {} {} (not mapped)>",
                self.protocol(),
                self.port
            ),
        }
    }
}
