//! The simulator's event queue: a calendar of one-millisecond slots over
//! the next few seconds, and a heap for what lies beyond.
//!
//! It hands entries out in exactly the order of one binary heap keyed by
//! `(at, seq)`, so a run does not depend on how the queue is built. A
//! single heap of a million nodes' events (a few million entries) costs
//! some twenty cache misses per pop; here an entry is appended to its
//! slot's vector when pushed, and only the entries of the slot being
//! drained form a heap, small enough to stay in cache.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Width of a slot, in nanoseconds of virtual time.
const SLOT_NS: u64 = 1_000_000;
/// Slots in the calendar: entries due within this many slots of the one
/// being drained go to their slot, later ones to the far heap. Datagrams
/// (tens of milliseconds) and stabilization timers (a second) fall within.
const SLOTS: u64 = 4096;

/// One scheduled action, due `at` nanoseconds after the simulator's start;
/// `seq` orders the actions due at the same instant by when they were pushed.
#[derive(Debug)]
pub(super) struct Entry<T> {
    pub(super) at: u64,
    pub(super) seq: u64,
    pub(super) action: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A priority queue of [`Entry`]s, earliest `(at, seq)` first.
///
/// Invariant: every entry in `near` is in slot `cur` or earlier; every
/// entry in `wheel` is in a slot after `cur` and fewer than [`SLOTS`]
/// after it, in `wheel[slot % SLOTS]`; every entry in `far` is later.
#[derive(Debug)]
pub(super) struct Queue<T> {
    cur: u64,
    near: BinaryHeap<Reverse<Entry<T>>>,
    wheel: Vec<Vec<Entry<T>>>,
    in_wheel: usize,
    far: BinaryHeap<Reverse<Entry<T>>>,
}

impl<T> Queue<T> {
    pub(super) fn new() -> Queue<T> {
        Queue {
            cur: 0,
            near: BinaryHeap::new(),
            wheel: (0..SLOTS).map(|_| Vec::new()).collect(),
            in_wheel: 0,
            far: BinaryHeap::new(),
        }
    }

    /// Schedules `e`.
    pub(super) fn push(&mut self, e: Entry<T>) {
        let slot = e.at / SLOT_NS;
        if slot <= self.cur {
            self.near.push(Reverse(e));
        } else if slot < self.cur + SLOTS {
            self.wheel[(slot % SLOTS) as usize].push(e);
            self.in_wheel += 1;
        } else {
            self.far.push(Reverse(e));
        }
    }

    /// The earliest entry, removed, if it is due at or before `end`.
    pub(super) fn pop_until(&mut self, end: u64) -> Option<Entry<T>> {
        while self.near.is_empty() {
            if !self.advance(end / SLOT_NS) {
                return None;
            }
        }
        if self.near.peek().is_some_and(|Reverse(e)| e.at <= end) {
            self.near.pop().map(|Reverse(e)| e)
        } else {
            None
        }
    }

    /// Moves on to the next slot that holds entries, if it is no later than
    /// `limit`; false if there is none.
    fn advance(&mut self, limit: u64) -> bool {
        loop {
            let next = if self.in_wheel > 0 {
                self.cur + 1
            } else if let Some(Reverse(e)) = self.far.peek() {
                e.at / SLOT_NS
            } else {
                return false;
            };
            if next > limit {
                return false;
            }
            self.cur = next;
            let horizon = self.cur + SLOTS;
            while let Some(Reverse(e)) = self.far.peek() {
                if e.at / SLOT_NS >= horizon {
                    break;
                }
                let Some(Reverse(e)) = self.far.pop() else {
                    break;
                };
                self.push(e);
            }
            let slot = std::mem::take(&mut self.wheel[(self.cur % SLOTS) as usize]);
            if !slot.is_empty() {
                self.in_wheel -= slot.len();
                self.near.extend(slot.into_iter().map(Reverse));
                return true;
            }
            if !self.near.is_empty() {
                return true;
            }
        }
    }

    /// Every entry, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Entry<T>> {
        self.near
            .iter()
            .chain(self.far.iter())
            .map(|Reverse(e)| e)
            .chain(self.wheel.iter().flatten())
    }

    /// Bytes the queue's vectors hold (entries and room for more).
    pub(super) fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<Entry<T>>();
        let room = self.near.capacity()
            + self.far.capacity()
            + self.wheel.iter().map(Vec::capacity).sum::<usize>();
        room * entry + self.wheel.capacity() * std::mem::size_of::<Vec<Entry<T>>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::{RngCore, SeedableRng};

    #[test]
    fn pops_in_the_order_of_one_heap() {
        // Random pushes interleaved with pops, against a plain heap: times
        // within a slot, across slots, beyond the calendar, and ties.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut q = Queue::new();
        let mut reference = BinaryHeap::new();
        let mut seq = 0;
        let mut now = 0u64;
        for round in 0..20_000u64 {
            for _ in 0..(rng.next_u64() % 3) {
                seq += 1;
                let ahead = match rng.next_u64() % 5 {
                    0 => 0,
                    1 => rng.next_u64() % SLOT_NS,
                    2 => rng.next_u64() % (80 * SLOT_NS),
                    3 => rng.next_u64() % (2 * SLOTS * SLOT_NS),
                    _ => (rng.next_u64() % 4) * SLOT_NS,
                };
                q.push(Entry {
                    at: now + ahead,
                    seq,
                    action: round,
                });
                reference.push(Reverse((now + ahead, seq)));
            }
            // Run to a random end, as `run_until` does; time then stands
            // at the end even when nothing was due.
            let end = now + rng.next_u64() % (3 * SLOT_NS);
            loop {
                let want = reference.peek().filter(|Reverse((at, _))| *at <= end);
                let got = q.pop_until(end);
                assert_eq!(got.as_ref().map(|e| (e.at, e.seq)), want.map(|r| r.0));
                let Some(e) = got else { break };
                reference.pop();
                now = e.at;
            }
            now = now.max(end);
        }
        assert_eq!(q.iter().count(), reference.len());
    }
}
