//! I/O: the UDP link: one tokio socket, datagrams sent in runs (GSO) and
//! received in runs (GRO), on the driver's task.

use super::*;

/// Send and receive buffer asked for each UDP socket: 4 MiB. The system
/// default (about 208 KiB on Linux) holds 200 datagrams of 1 KiB, less than
/// a burst of 256 sends in flight, and a datagram dropped there costs a
/// retry after `request_timeout`. Memory is only used while datagrams wait.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// A link over a tokio [`UdpSocket`], IPv4 or IPv6.
///
/// On Linux the socket batches both ways through `quinn-udp`:
/// - datagrams of one size to one address queued together leave in one
///   `sendmsg` with `UDP_SEGMENT` (generic segmentation offload: the kernel
///   cuts them); where the kernel refuses that, the link falls back to one
///   `send_to` per datagram for good;
/// - such a run arrives in one receive as well (`UDP_GRO`): the link keeps
///   the run and hands its datagrams out one by one, so a burst of 64 costs
///   one system call at each end instead of 64. A receive that may hold a
///   coalesced run must read its segment size from a control message
///   (`recvmmsg`), which costs more than a plain `recvfrom`: over loopback a
///   ping-pong takes 0.5 µs more a round trip that way (5.8 µs against 5.3
///   µs, a tenth). So by default ([`Gro::Adaptive`]) a link receives
///   plainly, with `UDP_GRO` off, until the first burst arrives. The
///   environment variable `CICADA_UDP_GRO` (`on`, `off` or `adaptive`) or
///   [`UdpLink::bind_gro`] choose otherwise.
///
/// Datagrams leave with fragmentation forbidden (`IP_PMTUDISC_PROBE`, as
/// QUIC does): one larger than the interface MTU fails with `EMSGSIZE`
/// (counted as a link error) instead of travelling as IP fragments, which
/// many paths drop. The core's default `max_fragment` (1,200 bytes) fits
/// any path. The environment variable `CICADA_UDP_GSO=0` turns the
/// segmented sends off (to compare, or to rule them out).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use cicada::link::UdpLink;
/// let link = UdpLink::bind("127.0.0.1:0".parse().unwrap()).await?;
/// assert_ne!(link.local_addr()?.port(), 0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct UdpLink {
    socket: UdpSocket,
    state: quinn_udp::UdpSocketState,
    /// Whether segmented sends are wanted (`CICADA_UDP_GSO`); cleared for
    /// good at the first refusal.
    gso: AtomicBool,
    /// The rest of a coalesced receive, not yet handed out.
    run: Mutex<Run>,
    /// Datagrams that arrived in a coalesced receive.
    coalesced: AtomicU64,
    /// Who is woken for arriving datagrams (see [`Link::claim_receive`]).
    receiver: Mutex<Receiver>,
    /// Whether the socket is IPv6: IPv4 destinations then go IPv4-mapped
    /// (a dual-stack socket bound to `[::]`).
    v6: bool,
}

/// Who waits for the socket's readability. tokio wakes only the task that
/// last asked through `poll_recv_ready` (where `readable()` would wake
/// every waiter), and this decides who may ask: a caller holding the
/// claim, else the driver's task (`task`, kept to hand the wait back to
/// it when the claim is given up).
#[derive(Debug, Default)]
struct Receiver {
    claimed: bool,
    task: Option<Waker>,
}

/// A coalesced receive: `len` bytes of `buf`, datagrams of `stride` bytes
/// back to back (the last may be shorter), all from `from`; those before
/// `at` are handed out already.
#[derive(Debug)]
struct Run {
    buf: Vec<u8>,
    len: usize,
    stride: usize,
    at: usize,
    from: SocketAddr,
    /// Whether receives may coalesce, kept with the run because every
    /// receive holds its lock.
    coalescing: Coalescing,
}

/// Whether a [`UdpLink`] has the system coalesce runs of arriving
/// datagrams (`UDP_GRO`, Linux), chosen when the link is bound.
///
/// Once on, `UDP_GRO` is never switched off: Linux reports the segment
/// size of a coalesced run only while it is on, so a run queued just
/// before switching it off would be handed out as one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gro {
    /// Off (each datagram costs the cheapest receive there is) until
    /// datagrams arrive in a burst that the system would have coalesced:
    /// 16 of one size from one sender received back to back, none of the
    /// receives between them finding the socket empty. On from then on.
    /// The default.
    #[default]
    Adaptive,
    /// On from the start, where the system offers it.
    On,
    /// Never on: the system hands a burst over one datagram a receive.
    Off,
}

impl Gro {
    /// Reads `CICADA_UDP_GRO` (`on`, `off`, `adaptive`); the default when
    /// unset or unknown.
    pub fn from_env() -> Gro {
        match std::env::var("CICADA_UDP_GRO").as_deref() {
            Ok("on") | Ok("1") => Gro::On,
            Ok("off") | Ok("0") => Gro::Off,
            _ => Gro::Adaptive,
        }
    }
}

/// Datagrams of one size from one sender received back to back after
/// which [`Gro::Adaptive`] switches `UDP_GRO` on: what it would have
/// coalesced. (64, a full run, was too many: a receiver that keeps up
/// with 64-byte messages empties its socket before, and stayed at 0.76 of
/// raw UDP's throughput where one with `UDP_GRO` on made 0.84-1.02.)
const GRO_BURST: u32 = 16;

/// The receive side of [`Gro`]: whether the socket coalesces now, and the
/// count that switches an adaptive link.
#[derive(Debug)]
struct Coalescing {
    mode: Gro,
    /// Whether `UDP_GRO` is on: receives then read control messages.
    on: bool,
    /// Datagrams of one size from one sender (`last`) received since a
    /// receive last found the socket empty or brought another.
    streak: u32,
    last: Option<(SocketAddr, usize)>,
}

impl Coalescing {
    /// Counts a datagram of `len` bytes received from `from` (while off).
    fn received(&mut self, socket: &UdpSocket, from: SocketAddr, len: usize) {
        if self.on || self.mode != Gro::Adaptive {
            return;
        }
        if self.last == Some((from, len)) {
            self.streak += 1;
        } else {
            (self.streak, self.last) = (1, Some((from, len)));
        }
        if self.streak >= GRO_BURST {
            // Safe at any time: from now on runs are coalesced and
            // receives read their segment size.
            match set_gro(socket, true) {
                Ok(()) => {
                    self.on = true;
                    tracing::debug!("a burst arrived: UDP_GRO on");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "UDP_GRO cannot be switched on");
                    self.mode = Gro::Off;
                }
            }
        }
    }

    /// Counts a receive that found the socket empty: the end of a burst.
    fn drained(&mut self) {
        (self.streak, self.last) = (0, None);
    }
}

/// Switches `UDP_GRO` on the socket.
#[cfg(target_os = "linux")]
fn set_gro<S: std::os::fd::AsFd>(socket: &S, on: bool) -> io::Result<()> {
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::UdpGroSegment, &on)
        .map_err(io::Error::from)
}

/// No `UDP_GRO` elsewhere.
#[cfg(not(target_os = "linux"))]
fn set_gro<S>(_socket: &S, _on: bool) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

impl Run {
    /// Copies the next datagram of the run into `out`: its length (cut to
    /// `out`, as a UDP receive cuts) and its sender.
    fn take(&mut self, out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        if self.at >= self.len {
            return None;
        }
        let end = (self.at + self.stride).min(self.len);
        let n = (end - self.at).min(out.len());
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at = end;
        if self.at >= self.len && self.buf.capacity() > RUN_KEPT {
            // Handed out whole: an idle link keeps no large buffer.
            self.buf = Vec::new();
        }
        Some((n, self.from))
    }
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
/// Largest buffer a link keeps once its run is handed out.
const RUN_KEPT: usize = 4_096;
/// Room for any receive, coalesced or not: the largest UDP payload, as
/// [`crate::config::RECV_BUFFER`].
const RUN_BUFFER: usize = crate::config::RECV_BUFFER;

impl UdpLink {
    /// Binds a UDP socket on `addr` (port 0 picks a free one), with send
    /// and receive buffers of [`SOCKET_BUFFER`] bytes where the system
    /// allows (Linux caps them at `net.core.rmem_max`/`wmem_max`).
    pub async fn bind(addr: SocketAddr) -> io::Result<UdpLink> {
        UdpLink::bind_gro(addr, Gro::from_env()).await
    }

    /// [`bind`](Self::bind) with the coalescing of arriving runs chosen
    /// (`bind` reads it from `CICADA_UDP_GRO`, [`Gro::Adaptive`] unless set).
    pub async fn bind_gro(addr: SocketAddr, gro: Gro) -> io::Result<UdpLink> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            // `[::]` is both families, whatever the system's default
            // (`net.ipv6.bindv6only`): IPv4 peers arrive IPv4-mapped.
            if let Err(e) = socket.set_only_v6(false) {
                tracing::debug!(error = %e, "cannot make the socket dual-stack");
            }
        }
        // Best effort: a smaller buffer only costs drops under bursts.
        if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
            tracing::debug!(error = %e, "cannot set the receive buffer size");
        }
        if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
            tracing::debug!(error = %e, "cannot set the send buffer size");
        }
        // Before the bind, so that no datagram can arrive between quinn-udp
        // switching UDP_GRO on and this switching it off (a run coalesced
        // then would be handed out whole: see `Gro`).
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        let on = state.gro_segments() > 1 && (gro == Gro::On || set_gro(&socket, false).is_err());
        socket.bind(&addr.into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        UdpLink::with_state(socket, state, gro, on)
    }

    /// Wraps a socket bound already, switching on the batching the system
    /// offers (see [`UdpLink`]): `UDP_GRO` as [`Gro::On`].
    pub fn from_socket(socket: UdpSocket) -> io::Result<UdpLink> {
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        let on = state.gro_segments() > 1;
        UdpLink::with_state(socket, state, Gro::On, on)
    }

    fn with_state(
        socket: UdpSocket,
        state: quinn_udp::UdpSocketState,
        mode: Gro,
        on: bool,
    ) -> io::Result<UdpLink> {
        let from = socket.local_addr()?;
        Ok(UdpLink {
            v6: from.is_ipv6(),
            socket,
            state,
            gso: AtomicBool::new(std::env::var_os("CICADA_UDP_GSO").is_none_or(|v| v != "0")),
            run: Mutex::new(Run {
                buf: Vec::new(),
                len: 0,
                stride: 1,
                at: 0,
                from,
                coalescing: Coalescing {
                    mode,
                    on,
                    streak: 0,
                    last: None,
                },
            }),
            coalesced: AtomicU64::new(0),
            receiver: Mutex::new(Receiver::default()),
        })
    }

    /// How many datagrams arrived in coalesced receives (several in one
    /// system call) since the link was made.
    pub fn coalesced(&self) -> u64 {
        self.coalesced.load(Ordering::Relaxed)
    }

    /// Whether the system coalesces arriving runs now (`UDP_GRO` on; see
    /// [`Gro`]).
    pub fn gro_on(&self) -> bool {
        self.run().coalescing.on
    }

    /// The driver task's wait for a datagram ([`Link::readable`]): ready
    /// when one is, unless a caller holds the claim to receive (then only
    /// the caller is woken, and giving the claim up wakes this task if a
    /// datagram is waiting).
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.holds_received() {
            return Poll::Ready(Ok(()));
        }
        let mut r = self.receiver();
        if !r.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            r.task = Some(cx.waker().clone());
        }
        if r.claimed {
            return Poll::Pending;
        }
        // Under the lock: a caller claiming after this registers after it,
        // and so is the one woken.
        self.socket.poll_recv_ready(cx)
    }

    fn receiver(&self) -> std::sync::MutexGuard<'_, Receiver> {
        self.receiver.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The run left from a coalesced receive. A panic elsewhere while it
    /// was held leaves it consistent (every field is set before use), so a
    /// poisoned lock is taken over.
    fn run(&self) -> std::sync::MutexGuard<'_, Run> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One receive without waiting: the next datagram of the run, or a new
    /// receive from the socket (`WouldBlock` when none is there).
    ///
    /// The receive lands in `out` itself where it can hold any datagram;
    /// only the rest of a coalesced run is copied aside, so an idle link
    /// keeps no buffer of its own.
    fn receive(&self, out: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut guard = self.run();
        let run = &mut *guard;
        if let Some(r) = run.take(out) {
            return Ok(r);
        }
        if out.len() < RUN_BUFFER && run.coalescing.on {
            // A caller's buffer too small for a run: receive into ours.
            run.buf.resize(RUN_BUFFER, 0);
            let m = self.recv_into(&mut run.coalescing, &mut run.buf)?;
            let stride = m.stride.clamp(1, m.len.max(1));
            (run.len, run.stride, run.at, run.from) = (m.len, stride, 0, m.addr);
            self.count_run(m.len, stride);
            return run
                .take(out)
                .ok_or_else(|| io::ErrorKind::WouldBlock.into());
        }
        let m = self.recv_into(&mut run.coalescing, out)?;
        let stride = m.stride.clamp(1, m.len.max(1));
        if m.len > stride {
            run.buf.clear();
            run.buf.extend_from_slice(&out[stride..m.len]);
            run.len = m.len - stride;
            run.stride = stride;
            run.at = 0;
            run.from = m.addr;
            self.count_run(m.len, stride);
        }
        Ok((stride.min(m.len), m.addr))
    }

    /// One system receive into `buf`: a plain one (cut to `buf`, as UDP
    /// cuts) unless a coalesced run may come, and counted for
    /// [`Gro::Adaptive`].
    fn recv_into(
        &self,
        coalescing: &mut Coalescing,
        buf: &mut [u8],
    ) -> io::Result<quinn_udp::RecvMeta> {
        let received = if coalescing.on {
            let mut meta = [quinn_udp::RecvMeta::default()];
            let mut bufs = [io::IoSliceMut::new(buf)];
            match self.state.recv((&self.socket).into(), &mut bufs, &mut meta) {
                Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                Ok(_) => Ok(meta[0]),
                Err(e) => Err(e),
            }
        } else {
            // tokio's own `recvfrom`. Called inside our `try_io` (the
            // socket was seen readable), its readiness check passes; a
            // `WouldBlock` clears the readiness once in each.
            self.socket.try_recv_from(buf).map(|(len, addr)| {
                let mut m = quinn_udp::RecvMeta::default();
                (m.len, m.stride, m.addr) = (len, len, addr);
                m
            })
        };
        match &received {
            Ok(m) => coalescing.received(&self.socket, m.addr, m.len),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => coalescing.drained(),
            Err(_) => {}
        }
        received
    }

    fn count_run(&self, len: usize, stride: usize) {
        if len > stride {
            let count = len.div_ceil(stride) as u64;
            self.coalesced.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// `to` as this socket sends to it: IPv4-mapped on an IPv6 socket.
    fn destination(&self, to: &SocketAddr) -> SocketAddr {
        match to {
            SocketAddr::V4(a) if self.v6 => {
                SocketAddr::new(std::net::IpAddr::V6(a.ip().to_ipv6_mapped()), a.port())
            }
            _ => *to,
        }
    }

    /// One `sendmsg` of `bytes` cut by the kernel into datagrams of
    /// `segment` bytes (`UDP_SEGMENT`).
    async fn send_gso(&self, bytes: &[u8], segment: usize, to: &SocketAddr) -> io::Result<()> {
        let transmit = quinn_udp::Transmit {
            destination: self.destination(to),
            ecn: None,
            contents: bytes,
            segment_size: Some(segment),
            src_ip: None,
        };
        self.socket
            .async_io(tokio::io::Interest::WRITABLE, || {
                self.state.try_send((&self.socket).into(), &transmit)
            })
            .await
    }
}

impl UdpLink {
    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends one datagram to `to`.
    pub async fn send_to(&self, bytes: &[u8], to: &SocketAddr) -> io::Result<()> {
        self.socket
            .send_to(bytes, self.destination(to))
            .await
            .map(|_| ())
    }

    /// Most datagrams [`send_segments`](Self::send_segments) hands to the
    /// system in one call: 64 with segmentation offload, otherwise 1.
    pub fn max_segments(&self) -> usize {
        if self.gso.load(Ordering::Relaxed) {
            self.state.max_gso_segments().min(GSO_SEGMENTS)
        } else {
            1
        }
    }

    /// Sends the datagrams `bytes` holds back to back, each `segment` bytes
    /// long (the last may be shorter), to `to`: in one segmented send per
    /// group where the system takes it (UDP generic segmentation offload),
    /// one by one otherwise. All are tried; the first error is returned.
    pub async fn send_segments(
        &self,
        bytes: &[u8],
        segment: usize,
        to: &SocketAddr,
    ) -> io::Result<()> {
        let segment = segment.max(1);
        // A segmented send is one UDP datagram to the kernel: at most
        // GSO_BYTES in all, and GSO_SEGMENTS pieces.
        let per_call = (GSO_BYTES / segment).clamp(1, GSO_SEGMENTS);
        let mut result = Ok(());
        for group in bytes.chunks(per_call * segment) {
            if group.len() > segment && segment <= GSO_SEGMENT_MAX && self.max_segments() > 1 {
                match self.send_gso(group, segment, to).await {
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
            if let Err(e) = send_each(self, group, segment, to).await {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// Waits for the next datagram; its length in `buf` and its sender.
    /// Cancel-safe: a datagram is received whole or not at all.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        // Cancel-safe: the receive itself runs inside one poll, whole or
        // not at all.
        if let Some(r) = self.run().take(buf) {
            return Ok(r);
        }
        self.socket
            .async_io(tokio::io::Interest::READABLE, || self.receive(buf))
            .await
    }

    /// A datagram that has arrived already, without waiting; `None` when
    /// none is ready.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> Option<io::Result<(usize, SocketAddr)>> {
        match self
            .socket
            .try_io(tokio::io::Interest::READABLE, || self.receive(buf))
        {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // try_io only runs the receive when the socket was seen
                // readable; a run left over is handed out regardless.
                self.run().take(buf).map(Ok)
            }
            r => Some(r),
        }
    }

    /// Like [`try_recv_from`](Self::try_recv_from), but a coalesced run is
    /// handed over whole: `(len, stride, from)`, the datagrams back to back
    /// in `buf[..len]`, each `stride` bytes long but the last.
    pub fn try_recv_run(&self, buf: &mut [u8]) -> Option<io::Result<(usize, usize, SocketAddr)>> {
        if buf.len() < RUN_BUFFER {
            return self
                .try_recv_from(buf)
                .map(|r| r.map(|(n, from)| (n, n.max(1), from)));
        }
        let received = self.socket.try_io(tokio::io::Interest::READABLE, || {
            let mut run = self.run();
            // What a caller's receive left over goes first, one by one.
            if let Some((n, from)) = run.take(buf) {
                return Ok((n, n.max(1), from));
            }
            // A whole run lands in `buf` and is handed over as it is:
            // no copy aside, none per datagram.
            let m = self.recv_into(&mut run.coalescing, buf)?;
            let stride = m.stride.clamp(1, m.len.max(1));
            self.count_run(m.len, stride);
            Ok((m.len, stride, m.addr))
        });
        match received {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self
                .run()
                .take(buf)
                .map(|(n, from)| Ok((n, n.max(1), from))),
            r => Some(r),
        }
    }

    /// Waits until a datagram is probably ready (it may wake for nothing).
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_readable(cx)).await
    }
}

impl Link for UdpLink {
    type Addr = SocketAddr;

    fn identity() -> Option<fn(&SocketAddr) -> Hash> {
        // The same rule as `node_id`: SHA-256 of "ip:port".
        Some(|a| Hash::of(a.to_string()))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        UdpLink::local_addr(self)
    }

    async fn send_to(&self, bytes: &[u8], to: &SocketAddr) -> io::Result<()> {
        UdpLink::send_to(self, bytes, to).await
    }

    fn max_segments(&self) -> usize {
        UdpLink::max_segments(self)
    }

    async fn send_segments(&self, bytes: &[u8], segment: usize, to: &SocketAddr) -> io::Result<()> {
        UdpLink::send_segments(self, bytes, segment, to).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        UdpLink::recv_from(self, buf).await
    }

    fn try_recv_run(&self, buf: &mut [u8]) -> Option<io::Result<(usize, usize, SocketAddr)>> {
        UdpLink::try_recv_run(self, buf)
    }

    fn holds_received(&self) -> bool {
        let run = self.run();
        run.at < run.len
    }

    fn waits_readable(&self) -> bool {
        true
    }

    async fn readable(&self) -> io::Result<()> {
        UdpLink::readable(self).await
    }

    fn claim_receive(&self, cx: &mut Context<'_>) -> bool {
        let mut r = self.receiver();
        if std::mem::replace(&mut r.claimed, true) {
            return false;
        }
        // Registered at once, before the caller sends: a reply that comes
        // back before its first receive wakes it, not the driver's task.
        // (Ready: a datagram is waiting, which that receive takes.)
        let _ = self.socket.poll_recv_ready(cx);
        true
    }

    fn release_receive(&self) {
        let mut r = self.receiver();
        r.claimed = false;
        let Some(task) = r.task.as_ref() else {
            return; // it registers itself when it first waits
        };
        // Hand the wait back: the task is registered again, or woken now
        // if a datagram is waiting already.
        let mut cx = Context::from_waker(task);
        loop {
            if self.holds_received() {
                task.wake_by_ref();
                return;
            }
            match self.socket.poll_recv_ready(&mut cx) {
                Poll::Pending => return, // registered
                Poll::Ready(Err(_)) => {
                    task.wake_by_ref();
                    return;
                }
                // Readiness is only cleared by a receive that finds the
                // socket empty, and the claimant stopped after its reply:
                // most often it is stale. A peek of nothing says (and
                // clears it), for the price of a system call instead of a
                // wake-up of the task.
                Poll::Ready(Ok(())) => match self.socket.try_peek_sender() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The end of the claimant's drain, as a receive
                        // finding the socket empty would have said.
                        self.run().coalescing.drained();
                        continue;
                    }
                    _ => {
                        task.wake_by_ref();
                        return;
                    }
                },
            }
        }
    }

    fn poll_recv_claimed(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        if let Some(r) = self.run().take(buf) {
            return Poll::Ready(Ok(r));
        }
        loop {
            if let Err(e) = std::task::ready!(self.socket.poll_recv_ready(cx)) {
                return Poll::Ready(Err(e));
            }
            // Whole or not at all, within this poll (cancel-safe).
            match self
                .socket
                .try_io(tokio::io::Interest::READABLE, || self.receive(buf))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}
