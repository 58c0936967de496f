//! Pure: the process's pool of receive buffers; no I/O.

use std::sync::Mutex;

use super::lock;
use crate::config::RECV_BUFFER;

/// Receive buffers of callers that receive (see [`Shared::receive_claimed`](super::Shared::receive_claimed))
/// and of background tasks draining a link that waits for readability
/// ([`Link::waits_readable`](crate::link::Link::waits_readable)), kept for the next one. One pool for the
/// whole process: a buffer kept per peer would add 64 KiB to every idle
/// peer.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Most receive buffers kept in [`SPARE`].
const SPARE_BUFFERS: usize = 8;

/// A receive buffer taken from [`SPARE`], put back when dropped.
pub(super) struct Spare {
    pub(super) buf: Vec<u8>,
}

impl Spare {
    /// A buffer for the largest datagram, from the pool if it has one.
    pub(super) fn take() -> Spare {
        let mut buf = lock(&SPARE).pop().unwrap_or_default();
        if buf.len() < RECV_BUFFER {
            buf.resize(RECV_BUFFER, 0);
        }
        Spare { buf }
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        let mut pool = lock(&SPARE);
        if pool.len() < SPARE_BUFFERS {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}
