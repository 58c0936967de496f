//! I/O: none of its own; the link types below do it.
//!
//! Links: how datagrams leave and arrive. The driver is generic over the
//! crate-private `Link` trait; `UdpLink` and `OuroborosLink` implement it,
//! and a `SwarmPeer` runs the one driver over either through `PeerLink`.
//!
//! The API here is [`FlowStats`] (what [`crate::PeerStats::ouroboros`]
//! reports). The link types are not API: they are hidden from the
//! documentation and reachable only so that the CLI's benchmark can measure
//! a bare `UdpLink` as its baseline and the tests can drive a link on its
//! own, through the link types' own methods (binding, sending, receiving);
//! they may change in any release.

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use chord::Hash;
use tokio::net::UdpSocket;

use crate::addr::PeerAddr;

mod ouroboros;
mod udp;

pub use ouroboros::FlowStats;
pub(crate) use ouroboros::FlowStatsHandle;
#[doc(hidden)]
pub use ouroboros::OuroborosLink;
pub(crate) use udp::GSO_SEGMENT_MAX;
#[doc(hidden)]
pub use udp::{Gro, UdpLink, SOCKET_BUFFER};

/// Where a link that receives on a thread of its own hands datagrams
/// straight to the driver (see [`Link::deliver_to`]): called with a batch
/// of datagrams, which it empties.
pub(crate) type LinkSink<A> = Arc<dyn Fn(&mut Arrivals<A>) + Send + Sync>;

/// Datagrams received together, for a [`LinkSink`]: their bytes back to
/// back in one buffer (kept from batch to batch, so that a datagram costs
/// no allocation of its own), and each one's length and sender.
#[derive(Debug)]
pub(crate) struct Arrivals<A> {
    bytes: Vec<u8>,
    spans: Vec<(usize, A)>,
}

/// Bytes an [`Arrivals`] keeps allocated between batches, at most.
const ARRIVALS_KEPT: usize = 1 << 20;

impl<A> Default for Arrivals<A> {
    fn default() -> Self {
        Arrivals {
            bytes: Vec::new(),
            spans: Vec::new(),
        }
    }
}

impl<A> Arrivals<A> {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a datagram from `from`.
    pub fn push(&mut self, datagram: &[u8], from: A) {
        self.bytes.extend_from_slice(datagram);
        self.spans.push((datagram.len(), from));
    }

    /// Datagrams in the batch.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the batch holds no datagram.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Hands every datagram to `f` in the order they were pushed, with its
    /// sender, and empties the batch.
    pub fn take_each(&mut self, mut f: impl FnMut(&[u8], A)) {
        let mut at = 0;
        for (len, from) in self.spans.drain(..) {
            f(&self.bytes[at..at + len], from);
            at += len;
        }
        self.clear();
    }

    /// Empties the batch (a burst of large datagrams gives most of its
    /// buffer back).
    pub fn clear(&mut self) {
        self.spans.clear();
        self.bytes.clear();
        if self.bytes.capacity() > ARRIVALS_KEPT {
            self.bytes.shrink_to(ARRIVALS_KEPT / 4);
        }
    }
}

/// A datagram transport the driver can run a peer over: crate-private, the
/// driver's contract with its links.
///
/// What every link has: its address ([`local_addr`](Self::local_addr)),
/// sending a datagram or a run of them ([`send_to`](Self::send_to),
/// [`send_segments`](Self::send_segments) up to
/// [`max_segments`](Self::max_segments)), and receiving
/// ([`recv_from`](Self::recv_from), and what is ready already with
/// [`try_recv_run`](Self::try_recv_run)). The rest are the driver's fast
/// paths, each with a default that leaves it off: a caller's claim to
/// receive its reply itself ([`claim_receive`](Self::claim_receive),
/// [`release_receive`](Self::release_receive),
/// [`poll_recv_claimed`](Self::poll_recv_claimed),
/// [`holds_received`](Self::holds_received)), waiting for readability
/// without a buffer ([`waits_readable`](Self::waits_readable),
/// [`readable`](Self::readable)), and a receive thread that hands its
/// datagrams straight to the driver ([`deliver_to`](Self::deliver_to)).
///
/// `recv_from` must be cancel-safe: the driver waits on it in a `select!`
/// beside timers and commands, and drops the future when another branch
/// wins. No datagram may be lost by that.
pub(crate) trait Link: Send + Sync + 'static {
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
    ///
    /// A link that has no room now and cannot wait for it on the calling
    /// thread (a thread of its own that delivers through a [`LinkSink`])
    /// returns [`io::ErrorKind::WouldBlock`]: the driver then keeps the
    /// datagram, and those after it, for its background task, which sends
    /// them again from the runtime, where the link may wait. Any other
    /// error drops the datagram (counted in `link_errors`).
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
        send_each(self, bytes, segment, to)
    }

    /// Datagrams that have arrived already, without waiting: `None` when
    /// none is ready (or the link cannot tell: the default). The driver
    /// drains what is ready after each wake-up, so a burst costs one
    /// wake-up, not one each. A link that takes several datagrams from the
    /// system in one receive (a coalesced run) hands them over together,
    /// without copying each aside: `(len, stride, from)`, the datagrams back
    /// to back in `buf[..len]`, each `stride` bytes long but the last (which
    /// may be shorter), all from `from`; one datagram is `stride` = `len`.
    fn try_recv_run(&self, buf: &mut [u8]) -> Option<io::Result<(usize, usize, Self::Addr)>> {
        let _ = buf;
        None
    }

    /// Whether the link holds datagrams it has taken from the system but
    /// not handed out yet (the rest of a coalesced run): a task that
    /// received and stops receiving wakes the driver to take them.
    fn holds_received(&self) -> bool {
        false
    }

    /// Makes the task of `cx` the one woken for arriving datagrams (from
    /// now on, and in [`poll_recv_claimed`](Self::poll_recv_claimed))
    /// until [`release_receive`](Self::release_receive): the task waiting
    /// in [`readable`](Self::readable) is not woken meanwhile, so a
    /// datagram a caller receives itself wakes one task, not two. The
    /// driver lets a caller waiting for a reply receive it itself this
    /// way. False when another task holds the claim, or the link has none
    /// (the default: receiving stays with the driver's task).
    fn claim_receive(&self, cx: &mut Context<'_>) -> bool {
        let _ = cx;
        false
    }

    /// Gives up a claim of [`claim_receive`](Self::claim_receive): the
    /// task waiting in [`readable`](Self::readable) is woken for arriving
    /// datagrams again (at once, if one is waiting already).
    fn release_receive(&self) {}

    /// With the claim of [`claim_receive`](Self::claim_receive): receives
    /// one datagram, or registers the calling task to be woken when one
    /// arrives. Without it, may never be woken. The default never is.
    fn poll_recv_claimed(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, Self::Addr)>> {
        let _ = (cx, buf);
        Poll::Pending
    }

    /// Whether [`readable`](Self::readable) waits for datagrams. The
    /// driver then keeps no receive buffer while it waits: it takes one
    /// from a pool shared by the whole process only to drain, with
    /// [`try_recv_run`](Self::try_recv_run), what has arrived. A buffer
    /// kept per peer for the largest datagram (64 KiB) is most of an idle
    /// peer's memory once it has been written. `false` (the default): the
    /// driver waits in [`recv_from`](Self::recv_from) with a buffer of its
    /// own.
    fn waits_readable(&self) -> bool {
        false
    }

    /// Waits until a datagram is probably ready for
    /// [`try_recv_run`](Self::try_recv_run) (it may wake for nothing).
    /// Only used when [`waits_readable`](Self::waits_readable) says so;
    /// the default never returns.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::pending()
    }

    /// Asks a link that receives on a thread of its own to hand every
    /// datagram it receives from now on to `sink`, on that thread, instead
    /// of queueing it for [`recv_from`](Self::recv_from); says whether it
    /// will (the default: `false`, and `sink` is dropped).
    ///
    /// The driver's sink runs the peer's core there and sends what that
    /// made at once, so a datagram answered in the core wakes no task.
    /// The sink sends by polling [`send_to`](Self::send_to) to completion
    /// without a runtime: a link that returns `true` must never wait in it
    /// for anything but an immediate yield.
    fn deliver_to(&self, sink: LinkSink<Self::Addr>) -> bool {
        let _ = sink;
        false
    }
}

/// The datagrams `bytes` holds back to back, `segment` bytes each (the
/// last may be shorter), sent one by one with `send_to`: all are tried and
/// the first error is returned. What [`Link::send_segments`] does where a
/// link cannot batch (or, for a keyed link, has no session yet).
pub(crate) async fn send_each<L: Link + ?Sized>(
    link: &L,
    bytes: &[u8],
    segment: usize,
    to: &L::Addr,
) -> io::Result<()> {
    let mut result = Ok(());
    for d in bytes.chunks(segment.max(1)) {
        if let Err(e) = link.send_to(d, to).await {
            result = result.and(Err(e));
        }
    }
    result
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
            _ => send_each(self, bytes, segment, to).await,
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, PeerAddr)> {
        match self {
            PeerLink::Udp(l) => l.recv_from(buf).await.map(|(n, a)| (n, PeerAddr::from(a))),
            PeerLink::Ouroboros(l) => l.recv_from(buf).await,
        }
    }

    fn holds_received(&self) -> bool {
        match self {
            PeerLink::Udp(l) => l.holds_received(),
            PeerLink::Ouroboros(l) => l.holds_received(),
        }
    }

    fn claim_receive(&self, cx: &mut Context<'_>) -> bool {
        match self {
            PeerLink::Udp(l) => l.claim_receive(cx),
            PeerLink::Ouroboros(l) => l.claim_receive(cx),
        }
    }

    fn release_receive(&self) {
        match self {
            PeerLink::Udp(l) => l.release_receive(),
            PeerLink::Ouroboros(l) => l.release_receive(),
        }
    }

    fn poll_recv_claimed(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, PeerAddr)>> {
        match self {
            PeerLink::Udp(l) => l
                .poll_recv_claimed(cx, buf)
                .map(|r| r.map(|(n, from)| (n, PeerAddr::from(from)))),
            PeerLink::Ouroboros(l) => l.poll_recv_claimed(cx, buf),
        }
    }

    fn waits_readable(&self) -> bool {
        match self {
            PeerLink::Udp(l) => l.waits_readable(),
            PeerLink::Ouroboros(l) => l.waits_readable(),
        }
    }

    async fn readable(&self) -> io::Result<()> {
        match self {
            PeerLink::Udp(l) => l.readable().await,
            PeerLink::Ouroboros(l) => l.readable().await,
        }
    }

    fn try_recv_run(&self, buf: &mut [u8]) -> Option<io::Result<(usize, usize, PeerAddr)>> {
        match self {
            PeerLink::Udp(l) => l
                .try_recv_run(buf)
                .map(|r| r.map(|(n, stride, a)| (n, stride, PeerAddr::from(a)))),
            PeerLink::Ouroboros(l) => l.try_recv_run(buf),
        }
    }

    fn deliver_to(&self, sink: LinkSink<PeerAddr>) -> bool {
        match self {
            PeerLink::Udp(_) => false,
            PeerLink::Ouroboros(l) => l.deliver_to(sink),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Arrivals;

    /// A batch hands its datagrams out in order, each with its sender, and
    /// is empty afterwards.
    #[test]
    fn arrivals_hand_out_each_datagram_in_order() {
        let mut batch = Arrivals::new();
        batch.push(b"one", "a");
        batch.push(b"three", "b");
        assert_eq!(batch.len(), 2);
        let mut seen = Vec::new();
        batch.take_each(|d, from| seen.push((d.to_vec(), from)));
        assert_eq!(seen, [(b"one".to_vec(), "a"), (b"three".to_vec(), "b")]);
        assert!(batch.is_empty());
    }
}
