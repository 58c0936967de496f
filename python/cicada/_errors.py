"""The exceptions of the ``cicada`` package (re-exported by ``cicada``).

Every error the Rust core reports is a :class:`CicadaError`; the ones that
have a natural builtin counterpart also inherit from it, so that
``except TimeoutError`` or ``except ConnectionError`` catch them.
Bad arguments raise plain ``TypeError`` or ``ValueError``.
"""


class CicadaError(Exception):
    """Base class of the errors the Cicada core reports (not bound yet,
    already bound, closed, not part of a swarm, overloaded, ...)."""


class CicadaTimeoutError(CicadaError, TimeoutError):
    """A call did not complete in time: ``connect`` past its timeout, a
    ``send`` the destination did not confirm (or kept refusing because its
    receive queue stayed full), ``recv(timeout=...)`` with nothing to
    receive."""


class CicadaConnectionError(CicadaError, ConnectionError):
    """The swarm could not be reached or the target is gone: the bootstrap
    did not answer, a host name did not resolve, no live peer has the
    target's id, no route, a lookup failed."""


class CicadaValueError(CicadaError, ValueError):
    """The core refused a value: a message larger than the maximum."""


class CicadaOSError(CicadaError, OSError):
    """A socket operation failed (``errno`` is set when the OS gave one),
    e.g. binding an address in use."""


class PortMappingError(CicadaError, ConnectionError):
    """No gateway mapped the port (no UPnP IGD or NAT-PMP gateway answered,
    or it refused)."""
