//! Port mapping (UPnP IGD, then NAT-PMP) for peers behind a NAT gateway.
