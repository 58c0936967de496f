//! I/O: a lone caller's claim to receive its own reply from the link.
//!
//! The kick wakes the claimant for a reply completed anywhere else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Poll, Waker};

use super::flush::Flush;
use super::pool::Spare;
use super::{lock, Shared};
use crate::link::Link;

/// A caller's claim to receive from the link ([`Shared::claim_receive`]),
/// given up when dropped: the call returned, stopped being lone, or was
/// cancelled.
pub(super) struct Claimed<'a, L: Link>(pub(super) &'a Shared<L>);

impl<L: Link> Drop for Claimed<'_, L> {
    fn drop(&mut self) {
        self.0.release_receive();
    }
}

/// The claimant's wake-up for replies completed elsewhere (see
/// [`Shared::receive_claimed`]).
#[derive(Debug, Default)]
pub(super) struct Kick {
    /// Whether a caller holds the claim: without one a completed reply
    /// (every confirmation under load) costs a load, not a lock.
    claimed: AtomicBool,
    state: Mutex<KickState>,
}

#[derive(Debug, Default)]
struct KickState {
    /// The claimant's task, while it waits.
    waker: Option<Waker>,
    /// A reply was completed since the claimant last looked.
    kicked: bool,
}

impl Kick {
    /// Says a reply was completed, waking the claimant if one waits.
    pub(super) fn kick(&self) {
        // The claim is taken before the claimant's command reaches the
        // core (under the state lock, as this runs), so its reply always
        // finds it set.
        if !self.claimed.load(Ordering::SeqCst) {
            return;
        }
        let mut k = lock(&self.state);
        k.kicked = true;
        if let Some(w) = &k.waker {
            w.wake_by_ref();
        }
    }

    /// The claimant's look: whether it was kicked since the last one
    /// (clearing it); otherwise `waker` is woken by the next kick.
    pub(super) fn take(&self, waker: &Waker) -> bool {
        let mut k = lock(&self.state);
        if std::mem::take(&mut k.kicked) {
            return true;
        }
        if !k.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            k.waker = Some(waker.clone());
        }
        false
    }

    /// A claim is taken: replies completed from now on are told.
    pub(super) fn arm(&self) {
        self.claimed.store(true, Ordering::SeqCst);
    }

    /// The claim is given up: no task to wake.
    pub(super) fn clear(&self) {
        self.claimed.store(false, Ordering::SeqCst);
        let mut k = lock(&self.state);
        k.waker = None;
        k.kicked = false;
    }
}

thread_local! {
    /// True while the claimant hands a datagram it received to the core:
    /// replies completed then need no [`Kick`] (the claimant looks at its
    /// own right after).
    pub(super) static CLAIMANT_HANDLING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`CLAIMANT_HANDLING`] set for as long as it lives (reset even if the
/// handling panics).
struct ClaimantHandling;

impl ClaimantHandling {
    fn enter() -> Self {
        CLAIMANT_HANDLING.with(|h| h.set(true));
        ClaimantHandling
    }
}

impl Drop for ClaimantHandling {
    fn drop(&mut self) {
        CLAIMANT_HANDLING.with(|h| h.set(false));
    }
}

impl<L: Link> Shared<L> {
    /// Makes the task of `cx` the one task that receives from the link
    /// ([`Link::claim_receive`]), until
    /// [`release_receive`](Self::release_receive); false when another
    /// caller is, or the link keeps receiving to the background task. A reply that comes back to a lone call is then received
    /// and handed to the core on the caller's task, and wakes no other.
    /// Taken before the call's datagrams leave, so that a quick reply
    /// finds it taken.
    pub(super) fn claim_receive(&self, cx: &mut std::task::Context<'_>) -> bool {
        let claimed = self.link.claim_receive(cx);
        if claimed {
            self.kick.arm();
        }
        claimed
    }

    /// Gives up [`claim_receive`](Self::claim_receive)'s claim: the
    /// background task receives again.
    pub(super) fn release_receive(&self) {
        self.kick.clear();
        self.link.release_receive();
    }

    /// With the claim: waits for one datagram from the link and hands it
    /// to the core, or returns without one when a reply was completed
    /// elsewhere (a timeout on the background task, another call's
    /// events, closing). The claimant polls its reply with `try_recv`
    /// between two of these, never registering on it: completing its own
    /// reply on its own task must not wake it (tokio reschedules a task
    /// that wakes itself, and on a multi-thread runtime wakes another
    /// worker to take it: a thread wake-up per round trip).
    pub(super) async fn receive_claimed(&self) {
        let mut buf = Spare::take();
        // Cancel-safe: a datagram is received whole or not at all, and
        // handled before the next wait.
        let received = std::future::poll_fn(|cx| {
            if self.kick.take(cx.waker()) {
                return Poll::Ready(None);
            }
            self.link.poll_recv_claimed(cx, &mut buf.buf).map(Some)
        })
        .await;
        let Some(r) = received else {
            return; // a reply was completed elsewhere
        };
        let (earlier, queued) = {
            let _handling = ClaimantHandling::enter();
            self.handle_received(r, &buf.buf)
        };
        if earlier || self.link.holds_received() {
            // A timer due before the background task's, or the rest of
            // a run for it to take.
            self.wake.notify_one();
        }
        if queued {
            self.flush_now(Flush::Try).await;
        }
    }

    /// Hands a received datagram to the core. Says whether that moved the
    /// core's next deadline before the one the background task sleeps
    /// until (a caller that received it must then wake the task), and
    /// whether datagrams wait to be sent.
    fn handle_received(&self, r: std::io::Result<(usize, L::Addr)>, buf: &[u8]) -> (bool, bool) {
        self.with(|st| {
            st.handle_and_deliver(r, buf, &self.counters);
            let queued = st.stack.queued_transmits() + st.parked.len() > 0;
            (st.deadline_moved_earlier(), queued)
        })
        .unwrap_or((false, false))
    }
}
