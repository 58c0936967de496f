//! Links: how datagrams leave and arrive. The driver is generic over
//! [`Link`]; [`UdpLink`] and [`crate::OuroborosLink`] implement it, and a
//! `SwarmPeer` runs the one driver over either through `PeerLink`.

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;

use chord::Hash;
use tokio::net::UdpSocket;

use crate::addr::PeerAddr;
use crate::ouro_link::OuroborosLink;

/// A datagram transport the driver can run a peer over.
///
/// `recv_from` must be cancel-safe: the driver waits on it in a `select!`
/// beside timers and commands, and drops the future when another branch
/// wins. No datagram may be lost by that.
pub trait Link: Send + Sync + 'static {
    /// How peers are addressed over this link.
    type Addr: chord::Address + Display + Send + Sync + 'static;

    /// The address this link receives on.
    fn local_addr(&self) -> io::Result<Self::Addr>;

    /// How a peer's id derives from its address on this link, if it must
    /// (see [`chord::LocalNode::with_identity`]): messages naming a peer
    /// under any other id are dropped. `None` lets peers choose their ids.
    fn identity() -> Option<fn(&Self::Addr) -> Hash> {
        None
    }

    /// Sends one datagram.
    fn send_to(&self, bytes: &[u8], to: &Self::Addr)
        -> impl Future<Output = io::Result<()>> + Send;

    /// Waits for the next datagram; returns its length in `buf` and its sender.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, Self::Addr)>> + Send;

    /// A datagram that has arrived already, without waiting: `None` when
    /// none is ready (or the link cannot tell). The driver drains what is
    /// ready after each wake-up, so a burst costs one wake-up, not one each.
    fn try_recv_from(&self, buf: &mut [u8]) -> Option<io::Result<(usize, Self::Addr)>> {
        let _ = buf;
        None
    }
}

/// Send and receive buffer asked for each UDP socket: 4 MiB. The system
/// default (about 208 KiB on Linux) holds 200 datagrams of 1 KiB, less than
/// a burst of 256 sends in flight, and a datagram dropped there costs a
/// retry after `request_timeout`. Memory is only used while datagrams wait.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// A [`Link`] over a tokio [`UdpSocket`], IPv4 or IPv6.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use cicada::{Link, UdpLink};
/// let link = UdpLink::bind("127.0.0.1:0".parse().unwrap()).await?;
/// assert_ne!(link.local_addr()?.port(), 0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct UdpLink {
    socket: UdpSocket,
}

impl UdpLink {
    /// Binds a UDP socket on `addr` (port 0 picks a free one), with send
    /// and receive buffers of [`SOCKET_BUFFER`] bytes where the system
    /// allows (Linux caps them at `net.core.rmem_max`/`wmem_max`).
    pub async fn bind(addr: SocketAddr) -> io::Result<UdpLink> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        // Best effort: a smaller buffer only costs drops under bursts.
        if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
            tracing::debug!(error = %e, "cannot set the receive buffer size");
        }
        if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
            tracing::debug!(error = %e, "cannot set the send buffer size");
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        Ok(UdpLink { socket })
    }

    /// Wraps a socket bound already.
    pub fn from_socket(socket: UdpSocket) -> UdpLink {
        UdpLink { socket }
    }
}

impl Link for UdpLink {
    type Addr = SocketAddr;

    fn identity() -> Option<fn(&SocketAddr) -> Hash> {
        // The same rule as `node_id`: SHA-256 of "ip:port".
        Some(|a| Hash::of(a.to_string()))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    async fn send_to(&self, bytes: &[u8], to: &SocketAddr) -> io::Result<()> {
        self.socket.send_to(bytes, to).await.map(|_| ())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        // UdpSocket::recv_from is cancel-safe.
        self.socket.recv_from(buf).await
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> Option<io::Result<(usize, SocketAddr)>> {
        match self.socket.try_recv_from(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            r => Some(r),
        }
    }
}

/// The link of a [`crate::SwarmPeer`]: UDP or Ouroboros, both addressed by
/// [`PeerAddr`], so that one driver serves both.
#[derive(Debug)]
pub(crate) enum PeerLink {
    Udp(UdpLink),
    Ouroboros(OuroborosLink),
}

impl Link for PeerLink {
    type Addr = PeerAddr;

    fn identity() -> Option<fn(&PeerAddr) -> Hash> {
        Some(crate::remote::node_id)
    }

    fn local_addr(&self) -> io::Result<PeerAddr> {
        match self {
            PeerLink::Udp(l) => l.local_addr().map(PeerAddr::Udp),
            PeerLink::Ouroboros(l) => l.local_addr(),
        }
    }

    async fn send_to(&self, bytes: &[u8], to: &PeerAddr) -> io::Result<()> {
        match (self, to) {
            (PeerLink::Udp(l), PeerAddr::Udp(a)) => l.send_to(bytes, a).await,
            (PeerLink::Ouroboros(l), to) => l.send_to(bytes, to).await,
            (PeerLink::Udp(_), PeerAddr::Ouroboros(n)) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("cannot reach the Ouroboros name {n} over UDP"),
            )),
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, PeerAddr)> {
        match self {
            PeerLink::Udp(l) => l.recv_from(buf).await.map(|(n, a)| (n, PeerAddr::Udp(a))),
            PeerLink::Ouroboros(l) => l.recv_from(buf).await,
        }
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> Option<io::Result<(usize, PeerAddr)>> {
        match self {
            PeerLink::Udp(l) => l
                .try_recv_from(buf)
                .map(|r| r.map(|(n, a)| (n, PeerAddr::Udp(a)))),
            PeerLink::Ouroboros(l) => l.try_recv_from(buf),
        }
    }
}
