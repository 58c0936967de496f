//! I/O: the background task: link arrivals, the one timer, queued commands.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::command::Queue;
use super::flush::Flush;
use super::pool::Spare;
use super::{lock, Shared};
use crate::config::RECV_BUFFER;
use crate::link::Link;

/// How long the driver sleeps when the core asks for no timer at all.
const IDLE_WAKE: Duration = Duration::from_secs(3600);
/// Most ready datagrams taken after one wake-up before the transmits they
/// caused go out: large enough to amortise the wake-up, small enough that
/// replies do not wait behind a long burst.
pub(super) const DRAIN_BATCH: usize = 64;

impl<L: Link> Shared<L> {
    /// The background task: runs until the peer is closed. `queue` is the
    /// receiving end of the command queue [`Shared::new`] made.
    pub(crate) async fn run(self: Arc<Self>, mut queue: Queue<L::Addr>) {
        // A link that receives on a thread of its own runs the core there.
        let direct = self.link.deliver_to(self.sink());
        if direct {
            tracing::debug!("the link's thread hands datagrams to the core");
        }
        // A link that can wait for readability without a buffer drains
        // into one of the process's pooled buffers; otherwise the task
        // keeps one of its own, unless the link's thread hands everything
        // to the core (then this task receives nothing: no buffer, no
        // wait on the link).
        let pooled = self.link.waits_readable();
        let mut own = if pooled || direct {
            Vec::new()
        } else {
            vec![0u8; RECV_BUFFER]
        };
        // One timer, moved only when the core's next deadline moves (not
        // a new one registered on every wake-up).
        let sleep = tokio::time::sleep(IDLE_WAKE);
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            self.flush_now(Flush::Try).await;
            let wake = self.with(|st| {
                // What the datagrams drained last turn caused, delivered
                // only now that their replies have left: waking a task
                // that waits in `recv` costs a system call, which a
                // confirmation should not wait behind.
                st.events();
                let wake = match st.stack.poll_timeout() {
                    Some(t) => t,
                    None => armed.unwrap_or_else(|| Instant::now() + IDLE_WAKE),
                };
                st.armed = Some(wake);
                wake
            });
            let Some(wake) = wake else { break };
            if armed != Some(wake) {
                sleep.as_mut().reset(wake.into());
                armed = Some(wake);
            }
            tokio::select! {
                // In this order, not a random one (tokio's default costs a
                // random number a turn): a due timer and a wake-up first,
                // then commands, then datagrams; the drain below takes
                // both of the last two anyway, so neither starves.
                biased;
                _ = &mut sleep => {
                    // Fired: re-armed on the next turn, whatever the deadline.
                    armed = None;
                    self.with(|st| {
                        st.armed = None;
                        st.stack.handle_timeout(Instant::now());
                        st.events();
                    });
                }
                _ = self.wake.notified() => {}
                Some(c) = queue.recv() => {
                    self.with(|st| {
                        st.command(c);
                        st.events();
                    });
                }
                // The deadline is read again at the top of the loop.
                r = arrival(&self.link, &mut own, pooled), if !direct => {
                    if let Some(r) = r {
                        // Events wait for the top of the loop, after the
                        // flush, as for the datagrams drained below.
                        self.with(|st| st.handle(r, &own, &self.counters));
                    }
                }
            }
            self.counters.driver_wakeups.fetch_add(1, Ordering::Relaxed);
            // Whatever else has arrived already is taken now, before the
            // transmits go out: a burst costs one trip through the select
            // (and one timer registration), not one per datagram.
            // The lock is held over the whole drain (receives that do not
            // wait): one acquisition per burst, not one per datagram, which
            // on two worker threads the callers' sends would contend for.
            let mut spare = pooled.then(Spare::take);
            let buf = match spare.as_mut() {
                Some(s) => &mut s.buf,
                None => &mut own,
            };
            let mut g = lock(&self.state);
            if let Some(st) = g.as_mut() {
                // Up to DRAIN_BATCH datagrams (a run received whole may
                // pass it by less than one run) and DRAIN_BATCH commands.
                let (mut datagrams, mut commands) = (0, 0);
                loop {
                    let mut idle = true;
                    if datagrams < DRAIN_BATCH {
                        if let Some(r) = self.link.try_recv_run(buf) {
                            // Events wait for the top of the loop (see there).
                            datagrams += st.handle_run(r, buf, &self.counters);
                            idle = false;
                        }
                    }
                    if commands < DRAIN_BATCH {
                        if let Ok(c) = queue.try_recv() {
                            st.command(c);
                            st.events();
                            commands += 1;
                            idle = false;
                        }
                    }
                    if idle {
                        break;
                    }
                }
            }
        }
        tracing::debug!("driver stopped");
    }
}

/// What the background task waits for on the link: a datagram received
/// into `own`, or (`pooled`) only the news that one can be taken, with
/// `None`.
async fn arrival<L: Link>(
    link: &L,
    own: &mut [u8],
    pooled: bool,
) -> Option<std::io::Result<(usize, L::Addr)>> {
    if pooled {
        link.readable().await.err().map(Err)
    } else {
        Some(link.recv_from(own).await)
    }
}
