"""Routing on the ring: :class:`Hash`, a 256-bit id (a peer's, or a key's)
that can also be a ``send`` target (the peer owning that key)."""

from .._native import Hash

__all__ = ["Hash"]
