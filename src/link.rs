//! Links: how datagrams leave and arrive. The driver is generic over
//! [`Link`]; [`UdpLink`] and [`crate::OuroborosLink`] implement it, and a
//! `SwarmPeer` runs the one driver over either through `PeerLink`.

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

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

    /// Most datagrams [`send_segments`](Self::send_segments) hands to the
    /// system in one call: 1 (the default) when the link cannot batch.
    fn max_segments(&self) -> usize {
        1
    }

    /// Sends the datagrams `bytes` holds back to back, each `segment`
    /// bytes long (the last may be shorter), to `to`. A link that can
    /// (UDP generic segmentation offload) passes them to the system in one
    /// call; the default sends them one by one. All are tried; the first
    /// error is returned.
    fn send_segments(
        &self,
        bytes: &[u8],
        segment: usize,
        to: &Self::Addr,
    ) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            let mut result = Ok(());
            for d in bytes.chunks(segment.max(1)) {
                if let Err(e) = self.send_to(d, to).await {
                    result = result.and(Err(e));
                }
            }
            result
        }
    }

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
/// On 64-bit Linux, datagrams of one size to one address queued together
/// leave in one `sendmsg` with `UDP_SEGMENT` (generic segmentation
/// offload: the kernel cuts them); where the kernel refuses that, the link
/// falls back to one `send_to` per datagram for good. The environment
/// variable `CICADA_UDP_GSO=0` turns it off (to compare, or to rule it out).
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
    /// Whether the system takes segmented sends (`UDP_SEGMENT`); cleared
    /// for good at the first refusal.
    gso: AtomicBool,
}

/// Most datagrams sent in one segmented call: Linux takes up to 64.
const GSO_SEGMENTS: usize = 64;
/// Most bytes in one segmented call: the payload of one UDP datagram
/// (65,507 over IPv4, less IPv6's longer header, rounded down).
const GSO_BYTES: usize = 65_000;
/// Largest datagram sent segmented: a segment must fit the path MTU (the
/// kernel refuses larger ones), and 1,452 bytes fit a 1,500-byte MTU under
/// IPv6 and IPv4 headers. Larger datagrams go one by one.
pub(crate) const GSO_SEGMENT_MAX: usize = 1_452;

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
        Ok(UdpLink::from_socket(socket))
    }

    /// Wraps a socket bound already.
    pub fn from_socket(socket: UdpSocket) -> UdpLink {
        UdpLink {
            socket,
            gso: AtomicBool::new(
                cfg!(all(target_os = "linux", target_pointer_width = "64"))
                    && std::env::var_os("CICADA_UDP_GSO").is_none_or(|v| v != "0"),
            ),
        }
    }

    /// One `sendmsg` of `bytes` cut by the kernel into datagrams of
    /// `segment` bytes (`UDP_SEGMENT`).
    async fn send_gso(&self, bytes: &[u8], segment: u16, to: &SocketAddr) -> io::Result<()> {
        let control = udp_segment_control(segment);
        let addr = socket2::SockAddr::from(*to);
        self.socket
            .async_io(tokio::io::Interest::WRITABLE, || {
                let iov = [std::io::IoSlice::new(bytes)];
                let msg = socket2::MsgHdr::new()
                    .with_addr(&addr)
                    .with_buffers(&iov)
                    .with_control(&control);
                socket2::SockRef::from(&self.socket).sendmsg(&msg, 0)
            })
            .await
            .map(|_| ())
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

    fn max_segments(&self) -> usize {
        if self.gso.load(Ordering::Relaxed) {
            GSO_SEGMENTS
        } else {
            1
        }
    }

    async fn send_segments(&self, bytes: &[u8], segment: usize, to: &SocketAddr) -> io::Result<()> {
        let segment = segment.max(1);
        // A segmented send is one UDP datagram to the kernel: at most
        // GSO_BYTES in all, and GSO_SEGMENTS pieces.
        let per_call = (GSO_BYTES / segment).clamp(1, GSO_SEGMENTS);
        let mut result = Ok(());
        for group in bytes.chunks(per_call * segment) {
            if group.len() > segment
                && segment <= GSO_SEGMENT_MAX
                && self.gso.load(Ordering::Relaxed)
            {
                match self.send_gso(group, segment as u16, to).await {
                    Ok(()) => continue,
                    // No segmentation here (EIO: no checksum offload;
                    // EINVAL: not supported): one by one from now on.
                    Err(e) if matches!(e.raw_os_error(), Some(5) | Some(22)) => {
                        tracing::debug!(error = %e, "segmented UDP sends refused; sending one by one");
                        self.gso.store(false, Ordering::Relaxed);
                    }
                    Err(e) => {
                        result = result.and(Err(e));
                        continue;
                    }
                }
            }
            for d in group.chunks(segment) {
                if let Err(e) = self.send_to(d, to).await {
                    result = result.and(Err(e));
                }
            }
        }
        result
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

/// The control message asking the kernel to cut a send into datagrams of
/// `segment` bytes: a `cmsghdr` (Linux, 64-bit: length as `usize`, level
/// and type as `i32`) for `SOL_UDP` (17) / `UDP_SEGMENT` (103), then the
/// size as a `u16`, padded to 8 bytes (`CMSG_SPACE(2)` = 24, `CMSG_LEN(2)`
/// = 18). Written out by hand so that no unsafe `libc` macro is needed;
/// only used where `UdpLink::gso` starts true (Linux, 64-bit).
fn udp_segment_control(segment: u16) -> [u8; 24] {
    let mut c = [0u8; 24];
    c[0..8].copy_from_slice(&18u64.to_ne_bytes());
    c[8..12].copy_from_slice(&17i32.to_ne_bytes());
    c[12..16].copy_from_slice(&103i32.to_ne_bytes());
    c[16..18].copy_from_slice(&segment.to_ne_bytes());
    c
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

    fn max_segments(&self) -> usize {
        match self {
            PeerLink::Udp(l) => l.max_segments(),
            PeerLink::Ouroboros(_) => 1,
        }
    }

    async fn send_segments(&self, bytes: &[u8], segment: usize, to: &PeerAddr) -> io::Result<()> {
        match (self, to) {
            (PeerLink::Udp(l), PeerAddr::Udp(a)) => l.send_segments(bytes, segment, a).await,
            _ => {
                let mut result = Ok(());
                for d in bytes.chunks(segment.max(1)) {
                    if let Err(e) = self.send_to(d, to).await {
                        result = result.and(Err(e));
                    }
                }
                result
            }
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
