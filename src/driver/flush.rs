//! I/O: the flush role: one holder at a time sends what the stack queued.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::Notify;

use super::{lock, Shared};
use crate::link::Link;
use crate::stack::Transmit;

/// Most transmits taken from the core in one round of a flush. Larger than
/// what one drain makes (a wake-up's datagram, then [`DRAIN_BATCH`](super::run::DRAIN_BATCH) more,
/// each answered), so that a turn's datagrams leave in one round and not
/// as 64 and a straggler sent alone.
const FLUSH_BATCH: usize = 256;

/// Rounds of [`FLUSH_BATCH`] transmits one holder of the flush role sends
/// before it hands what is left to the background task: a caller that
/// became the sender for everyone does not stay so for long.
const FLUSH_ROUNDS: usize = 4;

/// Who sends the datagrams a call made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Nothing to send, or the background task sends it.
    No,
    /// The caller sends them, unless someone else is sending already (who
    /// then takes them too).
    Try,
    /// The core holds more than the send queue allows: the caller waits
    /// for the flush role and sends (back-pressure).
    Wait,
}

impl<L: Link> Shared<L> {
    /// Sends what the core has queued: with the flush role, taken as `how`
    /// says, until the queue is empty or [`FLUSH_ROUNDS`] rounds are done
    /// (the background task is then woken to go on).
    pub(super) async fn flush_now(&self, how: Flush) {
        match how {
            Flush::No => return,
            Flush::Wait => self.flushing.acquire().await,
            Flush::Try => {
                if !self.flushing.try_acquire() {
                    // The holder sends ours too: it stops only on an empty
                    // queue.
                    return;
                }
            }
        }
        let mut role = Role {
            role: &self.flushing,
            scratch: Some(std::mem::take(&mut *lock(&self.flushing.scratch))),
            wake: &self.wake,
        };
        for _ in 0..FLUSH_ROUNDS {
            let Some(Scratch { batch, .. }) = role.scratch.as_mut() else {
                return;
            };
            {
                let mut g = lock(&self.state);
                let Some(st) = g.as_mut() else {
                    role.give_up();
                    return;
                };
                let batching = self.batching();
                // Read under the lock, so the stack's time never goes
                // backwards between callers.
                let now = Instant::now();
                let mut taken = 0;
                while taken < FLUSH_BATCH {
                    let Some(t) = st
                        .parked
                        .pop_front()
                        .or_else(|| st.stack.poll_transmit(now, batching))
                    else {
                        break;
                    };
                    taken += t.segments();
                    batch.push(t);
                }
                st.sent_hooks();
                if st.deadline_moved_earlier() {
                    // The seal started a handshake, whose retry is due
                    // before the background task's wake-up.
                    self.wake.notify_one();
                }
                if batch.is_empty() {
                    // Given up while the state is still locked: whoever
                    // queues a datagram after this finds the role free.
                    role.give_up();
                    return;
                }
            }
            let Some(Scratch { batch }) = role.scratch.as_mut() else {
                return;
            };
            if self.send_batch(batch).await {
                // Parked: `role`, dropped, wakes the background task.
                return;
            }
        }
        // More is queued: `role` wakes the background task as it goes.
    }
}

/// The flush role: at most one holder at a time sends what the core has
/// queued. An atomic flag rather than an async mutex: taking and giving it
/// up is on the path of every lone call, and a caller that only tries
/// ([`Flush::Try`]) should pay a compare-and-swap for it, not the mutex's
/// waiter bookkeeping.
pub(super) struct FlushRole<A> {
    held: AtomicBool,
    /// Callers waiting for the role ([`Flush::Wait`]), woken through `free`.
    waiters: AtomicUsize,
    free: Notify,
    /// The holder's buffers, kept here between holders to reuse their
    /// allocations; only a holder takes them.
    scratch: Mutex<Scratch<A>>,
}

/// Buffers of a holder of the flush role.
struct Scratch<A> {
    /// Runs taken from the stack for one round.
    batch: Vec<Transmit<A>>,
}

impl<A> Default for Scratch<A> {
    fn default() -> Self {
        Scratch { batch: Vec::new() }
    }
}

impl<A> Default for FlushRole<A> {
    fn default() -> Self {
        FlushRole {
            held: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            free: Notify::new(),
            scratch: Mutex::new(Scratch::default()),
        }
    }
}

impl<A> FlushRole<A> {
    /// Takes the role if it is free.
    fn try_acquire(&self) -> bool {
        !self.held.swap(true, Ordering::SeqCst)
    }

    /// Takes the role, waiting until it is free. Cancel-safe: dropped while
    /// waiting, it holds nothing and leaves no waiter counted.
    async fn acquire(&self) {
        loop {
            if self.try_acquire() {
                return;
            }
            let _waiting = Waiting::count(&self.waiters);
            let free = self.free.notified();
            tokio::pin!(free);
            free.as_mut().enable();
            // Sequentially consistent with `release`: either this sees the
            // role given up, or the releaser sees this waiter and notifies.
            if self.try_acquire() {
                return;
            }
            free.await;
        }
    }

    /// Gives the role up, waking one waiter.
    fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.free.notify_one();
        }
    }
}

/// One caller counted in [`FlushRole::waiters`] while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        Waiting(waiters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The flush role while held; let go of it by [`give_up`](Self::give_up)
/// with the queue seen empty, or by dropping it (the queue may not be
/// empty: the background task is woken to send the rest). Dropping covers
/// a caller whose call was cancelled in the middle of sending.
struct Role<'a, A> {
    role: &'a FlushRole<A>,
    /// The holder's buffers, `None` once given up.
    scratch: Option<Scratch<A>>,
    wake: &'a Notify,
}

impl<A> Role<'_, A> {
    /// Puts the buffers back (emptied) and gives the role up.
    fn give_up(&mut self) {
        if let Some(mut scratch) = self.scratch.take() {
            // Cancelled with runs taken: they are lost, as datagrams on
            // the network may be (the core retries what needs it).
            scratch.batch.clear();
            *lock(&self.role.scratch) = scratch;
            self.role.release();
        }
    }
}

impl<A> Drop for Role<'_, A> {
    fn drop(&mut self) {
        if self.scratch.is_some() {
            self.give_up();
            self.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Holders of the flush role never overlap, every waiter gets it in
    /// the end, and a waiter cancelled while waiting leaves nothing behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_flush_role_has_one_holder_and_every_waiter_gets_it() {
        let role = Arc::new(FlushRole::<std::net::SocketAddr>::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for k in 0..6 {
            let (role, inside, taken) = (role.clone(), inside.clone(), taken.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..2_000 {
                    // Half the tasks only try, as a lone call does.
                    if k % 2 == 0 || i % 3 == 0 {
                        role.acquire().await;
                    } else if !role.try_acquire() {
                        continue;
                    }
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                    inside.fetch_sub(1, Ordering::SeqCst);
                    taken.fetch_add(1, Ordering::Relaxed);
                    role.release();
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("a waiter was never woken")
                .expect("a task panicked");
        }
        // Every waiting acquisition got the role: 3 tasks × 2,000, and a
        // third of the other tasks' turns.
        assert!(taken.load(Ordering::Relaxed) >= 3 * 2_000 + 3 * 667);

        // Cancelled while the role is held: no waiter stays counted, and
        // the role is free again once released.
        assert!(role.try_acquire());
        let waited = tokio::time::timeout(Duration::from_millis(20), role.acquire()).await;
        assert!(waited.is_err(), "acquired a held role");
        assert_eq!(role.waiters.load(Ordering::SeqCst), 0);
        role.release();
        assert!(role.try_acquire());
        role.release();
    }
}
