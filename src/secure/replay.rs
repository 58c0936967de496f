//! [`ReplayWindow`]: which explicit nonces of a session have been seen, so
//! that a datagram is accepted at most once however the network reorders
//! or duplicates it (the sliding bitmap of RFC 6479, as IPsec and
//! WireGuard use).

/// Nonces this far behind the newest one seen are still accepted (if not
/// seen before); older ones are refused. 2,048 datagrams of reordering is
/// far more than a path reorders in practice, and costs 256 bytes a
/// session, allocated at the first nonce that arrives out of order: a
/// session whose datagrams all came in order (an idle neighbour's, or any
/// on a path that neither loses nor reorders) holds no bitmap.
pub const REPLAY_WINDOW: u64 = 2048;

const WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// The nonces seen of one session, within the window behind the newest.
///
/// ```
/// use cicada::secure::ReplayWindow;
/// let mut w = ReplayWindow::default();
/// assert!(w.accept(0) && w.accept(2));
/// assert!(!w.accept(2), "a replay");
/// assert!(w.accept(1), "late, but new");
/// ```
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    /// The highest nonce accepted, plus one (0: none yet).
    next: u64,
    /// Bit `n % REPLAY_WINDOW` is set when nonce `n` (within the window)
    /// was seen. `None` while every nonce below `next` was accepted, in
    /// order: then every nonce in the window was seen.
    bits: Option<Box<[u64; WORDS]>>,
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
        match &self.bits {
            // Everything below `next` was seen.
            None => false,
            Some(bits) => {
                let (w, b) = Self::slot(nonce);
                bits[w] & (1 << b) == 0
            }
        }
    }

    /// Records `nonce` as seen; returns false (and changes nothing) if
    /// [`check`](Self::check) would refuse it.
    pub fn accept(&mut self, nonce: u64) -> bool {
        if !self.check(nonce) {
            return false;
        }
        if self.bits.is_none() && nonce == self.next {
            // In order, as before: still no gap to remember.
            self.next = nonce + 1;
            return true;
        }
        // The first gap: every slot of the window was seen until now. (Slots
        // of nonces at or past `next` set this way are cleared below before
        // the window reaches them, and `check` does not read them before.)
        let bits = self.bits.get_or_insert_with(|| Box::new([u64::MAX; WORDS]));
        if nonce >= self.next {
            // Clear the slots the window slides past.
            let advance = nonce + 1 - self.next;
            if advance >= REPLAY_WINDOW {
                **bits = [0; WORDS];
            } else {
                for n in self.next..=nonce {
                    let (w, b) = Self::slot(n);
                    bits[w] &= !(1 << b);
                }
            }
            self.next = nonce + 1;
        }
        let (w, b) = Self::slot(nonce);
        bits[w] |= 1 << b;
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

    /// The bitmap of a window that never skipped a nonce, for comparing.
    fn reference_accept(
        seen: &mut std::collections::BTreeSet<u64>,
        next: &mut u64,
        n: u64,
    ) -> bool {
        if n == u64::MAX || (n < *next && *next - n > REPLAY_WINDOW) || seen.contains(&n) {
            return false;
        }
        seen.insert(n);
        *next = (*next).max(n + 1);
        true
    }

    #[test]
    fn in_order_nonces_hold_no_bitmap_and_a_gap_allocates_one() {
        let mut w = ReplayWindow::default();
        for n in 0..5000 {
            assert!(w.accept(n));
        }
        assert!(w.bits.is_none());
        for n in [0, 4000, 4999] {
            assert!(!w.check(n), "{n} was seen");
        }
        // A gap: 5001 first, 5000 late.
        assert!(w.accept(5001));
        assert!(w.bits.is_some());
        assert!(!w.accept(4999) && !w.accept(5001));
        assert!(w.accept(5000));
        assert!(!w.accept(5000));
    }

    #[test]
    fn any_order_matches_a_set_of_every_nonce_seen() {
        // A deterministic shuffle with duplicates, jumps and old nonces.
        let mut w = ReplayWindow::default();
        let (mut seen, mut next) = (std::collections::BTreeSet::new(), 0u64);
        let mut x = 12345u64;
        let mut base = 0u64;
        for i in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = match i % 7 {
                // Mostly in order, some out of order, a few far behind or ahead.
                0..=3 => next,
                4 => base + (x >> 33) % 64,
                5 => next.saturating_sub((x >> 40) % (REPLAY_WINDOW + 50)),
                _ => next + (x >> 50) % 3000,
            };
            base = next;
            let expected = reference_accept(&mut seen, &mut next, n);
            assert_eq!(w.accept(n), expected, "nonce {n} at step {i}");
        }
    }

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
