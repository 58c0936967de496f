"""NAT traversal: :class:`PortMapping` asks the gateway for a port mapping
(UPnP IGD, then NAT-PMP) for as long as a ``with`` block lasts."""

from ._native import Mapper, PortMapping

__all__ = ["PortMapping", "Mapper"]
