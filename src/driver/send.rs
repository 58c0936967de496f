//! I/O: runs handed to the link, parked when it cannot take them now.
//!
//! Destinations the link cannot reach are reported to the stack.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{lock, Shared};
use crate::link::Link;
use crate::stack::{Batching, Transmit};

impl<L: Link> Shared<L> {
    /// Sends `batch`, runs the stack gathered per destination and size
    /// ([`crate::stack::Stack::poll_transmit`]): a run of several in one call
    /// ([`Link::send_segments`]), a lone datagram with [`Link::send_to`].
    ///
    /// True when the link said [`WouldBlock`](std::io::ErrorKind::WouldBlock)
    /// (it cannot wait for room on this thread): that run and the rest of
    /// `batch` are parked for the background task, and the caller stops.
    pub(super) async fn send_batch(&self, batch: &mut Vec<Transmit<L::Addr>>) -> bool {
        let mut it = batch.drain(..);
        while let Some(t) = it.next() {
            let result = if t.segments() > 1 {
                self.link
                    .send_segments(&t.bytes, t.segment_size, &t.to)
                    .await
            } else {
                self.link.send_to(&t.bytes, &t.to).await
            };
            if matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                let rest: Vec<_> = std::iter::once(t).chain(it.by_ref()).collect();
                let datagrams: usize = rest.iter().map(Transmit::segments).sum();
                self.counters
                    .link_parked
                    .fetch_add(datagrams as u64, Ordering::Relaxed);
                self.park(rest);
                return true;
            }
            self.sent(result, &t.to);
        }
        false
    }

    /// What the stack's runs may be: as many datagrams as the link sends
    /// in one call, each no larger than a segmented UDP send carries.
    pub(super) fn batching(&self) -> Batching {
        Batching {
            max_segments: self.link.max_segments(),
            max_segment_size: crate::link::GSO_SEGMENT_MAX,
        }
    }

    /// Puts `rest` (in order) before whatever waits in `parked`.
    pub(super) fn park(&self, rest: Vec<Transmit<L::Addr>>) {
        let mut g = lock(&self.state);
        if let Some(st) = g.as_mut() {
            for t in rest.into_iter().rev() {
                st.parked.push_front(t);
            }
        }
    }

    pub(super) fn sent(&self, result: std::io::Result<()>, to: &L::Addr) {
        self.counters.link_sends.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            self.counters.link_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%to, error = %e, "send error");
            if unreachable(&e) {
                self.unreachable(to);
            }
        }
    }

    /// A link said `to` cannot be reached: the stack fails it at once
    /// (see [`crate::stack::Stack::handle_unreachable`]); what that changes is
    /// delivered now, and the background task sends what it made.
    fn unreachable(&self, to: &L::Addr) {
        let made = self.with(|st| {
            st.stack.handle_unreachable(Instant::now(), to);
            st.events();
            st.stack.queued_transmits() > 0 || st.deadline_moved_earlier()
        });
        if made == Some(true) {
            self.wake.notify_one();
        }
    }
}

/// Whether a send's error says the destination cannot be reached (an
/// Ouroboros flow that could not be allocated or went down, a network
/// that refused), rather than that this one datagram was lost.
fn unreachable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        NotConnected | ConnectionRefused | ConnectionReset | HostUnreachable | NetworkUnreachable
    )
}
