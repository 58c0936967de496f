//! Links: how datagrams leave and arrive. The driver is generic over
//! [`Link`], so another transport (an Ouroboros flow) slots in beside
//! [`UdpLink`] without touching it.

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

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
