//! Small network helpers.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

/// The local IPv4 address on the interface that routes to `target`.
///
/// Connecting a UDP socket sends nothing: the kernel only picks the route and
/// the source address, which we read back.
pub(crate) fn local_ipv4_toward(target: SocketAddr) -> io::Result<Ipv4Addr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect(target)?;
    match socket.local_addr()? {
        SocketAddr::V4(a) if !a.ip().is_unspecified() => Ok(*a.ip()),
        other => Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("no IPv4 source address toward {target} (got {other})"),
        )),
    }
}

/// A small xorshift generator for picking candidate ports; not for secrets.
pub(crate) struct PortPicker(u64);

impl PortPicker {
    pub(crate) fn new(seed: u64) -> PortPicker {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        PortPicker((seed ^ nanos ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A port in 32768..=65535 (the range gateways hand out themselves).
    pub(crate) fn next_port(&mut self) -> u16 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        32768 + (x % 32768) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_routes_from_loopback() {
        let ip = local_ipv4_toward("127.0.0.1:9".parse().unwrap()).unwrap();
        assert!(ip.is_loopback());
    }

    #[test]
    fn picked_ports_are_in_range_and_vary() {
        let mut p = PortPicker::new(42);
        let ports: Vec<u16> = (0..64).map(|_| p.next_port()).collect();
        assert!(ports.iter().all(|&x| x >= 32768));
        let mut uniq = ports.clone();
        uniq.sort_unstable();
        uniq.dedup();
        assert!(uniq.len() > 50);
    }
}
