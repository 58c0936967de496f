//! I/O: the stack run on a link's own receive thread, off the runtime.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use super::flush::Flush;
use super::{lock, Shared};
use crate::link::{Arrivals, Link, LinkSink};

impl<L: Link> Shared<L> {
    /// Where a link that receives on a thread of its own hands its
    /// datagrams ([`Link::deliver_to`]): [`deliver`](Self::deliver). The
    /// sink holds the driver weakly: the link is the driver's, a strong
    /// reference would keep both alive.
    pub(super) fn sink(self: &Arc<Self>) -> LinkSink<L::Addr> {
        let weak = Arc::downgrade(self);
        Arc::new(move |batch: &mut Arrivals<L::Addr>| match weak.upgrade() {
            Some(driver) => driver.deliver(batch),
            None => batch.clear(),
        })
    }

    /// Hands datagrams the link's own thread received to the core, on that
    /// thread, sends what they made (unless someone holds the flush role:
    /// it sends ours too), and only then delivers the events they caused,
    /// so that a reply leaves before any task is woken here. A reply to a
    /// waiting call completes it from this thread. No other task is woken
    /// unless a deadline moved earlier or sends are left over.
    fn deliver(&self, batch: &mut Arrivals<L::Addr>) {
        let earlier = {
            let mut g = lock(&self.state);
            let Some(st) = g.as_mut() else {
                batch.clear();
                return;
            };
            // Read under the lock, so the core's time never goes backwards.
            let now = Instant::now();
            st.sync_room();
            batch.take_each(|p, from| st.stack.handle_datagram(now, from, p));
            st.deadline_moved_earlier()
        };
        if earlier {
            self.wake.notify_one();
        }
        complete(self.flush_now(Flush::Try));
        let left = self.with(|st| {
            st.events();
            st.stack.queued_transmits() > 0
        });
        if left == Some(true) {
            // An event's handling queued a datagram (none does today).
            self.wake.notify_one();
        }
    }
}

/// Polls `f` to completion on a thread outside the runtime, for a future
/// that never waits but for an immediate yield (see [`Link::deliver_to`]):
/// the flush a link's own thread runs with [`Flush::Try`].
fn complete<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}
