//! [`ReplayWindow`]: which explicit nonces of a session have been seen, so
//! that a datagram is accepted at most once however the network reorders
//! or duplicates it (the sliding bitmap of RFC 6479, as IPsec and
//! WireGuard use).

/// Nonces this far behind the newest one seen are still accepted (if not
/// seen before); older ones are refused. 2,048 datagrams of reordering is
/// far more than a path reorders in practice, and costs 256 bytes a session.
pub const REPLAY_WINDOW: u64 = 2048;

const WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// The nonces seen of one session, within the window behind the newest.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// The highest nonce accepted, plus one (0: none yet).
    next: u64,
    /// Bit `n % REPLAY_WINDOW` is set when nonce `n` (within the window) was seen.
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            next: 0,
            bits: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// Whether `nonce` could be accepted: new, and not too old. Call before
    /// spending work on the datagram; call [`accept`](Self::accept) once it
    /// authenticated.
    pub fn check(&self, nonce: u64) -> bool {
        if nonce == u64::MAX {
            return false;
        }
        if nonce >= self.next {
            return true;
        }
        if self.next - nonce > REPLAY_WINDOW {
            return false;
        }
        let (w, b) = Self::slot(nonce);
        self.bits[w] & (1 << b) == 0
    }

    /// Records `nonce` as seen; returns false (and changes nothing) if
    /// [`check`](Self::check) would refuse it.
    pub fn accept(&mut self, nonce: u64) -> bool {
        if !self.check(nonce) {
            return false;
        }
        if nonce >= self.next {
            // Clear the slots the window slides past.
            let advance = nonce + 1 - self.next;
            if advance >= REPLAY_WINDOW {
                self.bits = [0; WORDS];
            } else {
                for n in self.next..=nonce {
                    let (w, b) = Self::slot(n);
                    self.bits[w] &= !(1 << b);
                }
            }
            self.next = nonce + 1;
        }
        let (w, b) = Self::slot(nonce);
        self.bits[w] |= 1 << b;
        true
    }

    fn slot(n: u64) -> (usize, u32) {
        let i = n % REPLAY_WINDOW;
        ((i / 64) as usize, (i % 64) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_nonce_once_in_any_order_within_the_window() {
        let mut w = ReplayWindow::default();
        for n in [5, 0, 3, 1, 2, 4, 10, 7] {
            assert!(w.accept(n), "{n}");
        }
        for n in [5, 0, 3, 1, 2, 4, 10, 7] {
            assert!(!w.check(n), "{n} seen");
            assert!(!w.accept(n), "{n} seen");
        }
        assert!(w.accept(6) && w.accept(8) && w.accept(9));
    }

    #[test]
    fn too_old_is_refused_and_a_jump_forgets_the_past() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(0));
        assert!(w.accept(REPLAY_WINDOW + 10));
        assert!(!w.accept(5), "behind the window");
        assert!(w.accept(11), "just inside the window, never seen");
        assert!(!w.accept(10), "exactly a window behind");
        assert!(!w.accept(u64::MAX));
        // Slots reused after sliding are clean.
        let mut w = ReplayWindow::default();
        for n in 0..10 * REPLAY_WINDOW {
            assert!(w.accept(n), "{n}");
            assert!(!w.accept(n), "{n}");
        }
    }
}
