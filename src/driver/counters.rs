//! Pure: the driver's counters and the calls under way; no I/O.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::DIRECT_SENDS;
use crate::metrics::Outcomes;

/// Counters the driver keeps beside the core's.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub hooks_dropped: Arc<AtomicU64>,
    pub link_errors: AtomicU64,
    pub received: AtomicU64,
    /// Calls to the link's send (one per datagram, or one per run).
    pub link_sends: AtomicU64,
    /// Datagrams the link could not take on a thread where it cannot wait
    /// (see `State::parked`), left to the background task.
    pub link_parked: AtomicU64,
    /// Turns of the background task's wait (see `PeerStats::driver_wakeups`).
    pub driver_wakeups: AtomicU64,
    /// Calls of the application under way (see [`Call`]): whether a call
    /// runs on the caller's task (see [`DIRECT_SENDS`]).
    pub calls: AtomicUsize,
    /// How the application's sends and lookups ended (for metrics).
    pub outcomes: Outcomes,
}

/// One application call under way, counted in [`Counters::calls`] until
/// it is dropped (returned or cancelled).
pub(crate) struct Call<'a>(&'a Counters);

impl<'a> Call<'a> {
    /// Counts a call; true in the second place when it is one of at most
    /// [`DIRECT_SENDS`] under way.
    pub(crate) fn start(counters: &'a Counters) -> (Self, bool) {
        let before = counters.calls.fetch_add(1, Ordering::Relaxed);
        (Call(counters), before < DIRECT_SENDS)
    }

    /// Whether at most [`DIRECT_SENDS`] calls are under way (this one
    /// among them).
    pub(crate) fn lone(counters: &Counters) -> bool {
        counters.calls.load(Ordering::Relaxed) <= DIRECT_SENDS
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::Relaxed);
    }
}
