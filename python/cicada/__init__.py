"""Cicada: a peer-to-peer swarm used like a socket, on the Rust core.

The modules keep the original Cicada's names::

    from cicada import swarmlib, traversal
    from cicada.chordlib import routing

    with swarmlib.SwarmPeer() as peer:
        peer.bind("127.0.0.1", 5000)
        peer.connect("127.0.0.1", 5001)
        peer.send(("127.0.0.1", 5001), b"hello")

``cicada.aio`` has the same calls for asyncio. Errors are
:class:`CicadaError` and its subclasses (which also inherit from
``TimeoutError``, ``ConnectionError``, ``ValueError`` or ``OSError`` where
one fits); bad arguments raise ``TypeError`` or ``ValueError``.
"""

import atexit as _atexit

from . import _native
from ._errors import (
    CicadaConnectionError,
    CicadaError,
    CicadaOSError,
    CicadaTimeoutError,
    CicadaValueError,
    PortMappingError,
)

__all__ = [
    "CicadaError",
    "CicadaTimeoutError",
    "CicadaConnectionError",
    "CicadaValueError",
    "CicadaOSError",
    "PortMappingError",
    "swarmlib",
    "traversal",
    "chordlib",
    "aio",
]
__version__ = "0.1.0"

# Close every peer before the interpreter shuts down, so that no hook runs
# on a half-finalized interpreter.
_atexit.register(_native._close_all)


def __getattr__(name):
    # Submodules on first use, as `cicada.swarmlib` after `import cicada`.
    if name in ("swarmlib", "traversal", "chordlib", "aio"):
        import importlib

        return importlib.import_module("." + name, __name__)
    raise AttributeError("module 'cicada' has no attribute %r" % name)
