"""Interacting with Cicada: :class:`SwarmPeer`, a member of a swarm used
like a socket (``bind``, ``connect``, ``send``, ``recv``, ``broadcast``).

See ``docs/python.md`` for how it maps to the original ``swarmlib``.
"""

from ._native import RemoteNode, SwarmPeer

__all__ = ["SwarmPeer", "RemoteNode"]
