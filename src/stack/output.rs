//! Pure protocol, no I/O: the stack's output side, which gathers the
//! datagrams the stack makes into runs of one size to one destination, as
//! a link hands a run to the system in one call (UDP generic segmentation
//! offload).

use std::collections::VecDeque;

use bytes::Bytes;

/// Most runs gathered at once (distinct destinations and sizes): past it
/// the oldest leaves as it is.
const MAX_RUNS: usize = 8;
/// Runs the ready queue keeps room for between bursts.
const READY_KEPT: usize = 16;

/// Datagrams of one size to one destination, back to back: what a link
/// sends in one call (quinn-proto's `Transmit` with its `segment_size`).
/// A run of one is the datagram itself.
///
/// ```
/// use cicada::stack::Transmit;
/// let t = Transmit { to: 7u32, segment_size: 3, bytes: bytes::Bytes::from_static(b"onetwo!") };
/// assert_eq!(t.segments(), 3);
/// assert_eq!(t.datagrams().collect::<Vec<_>>(), [&b"one"[..], b"two", b"!"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit<A> {
    /// Where every datagram of the run goes.
    pub to: A,
    /// Bytes of each datagram but the last, which may be shorter.
    pub segment_size: usize,
    /// The datagrams back to back.
    pub bytes: Bytes,
}

impl<A> Transmit<A> {
    /// Datagrams in the run.
    pub fn segments(&self) -> usize {
        self.bytes.len().div_ceil(self.segment_size.max(1)).max(1)
    }

    /// The datagrams of the run, one by one.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        self.bytes.chunks(self.segment_size.max(1))
    }
}

/// What the link under a stack can send in one call: the shape of the
/// runs [`Stack::poll_transmit`](super::Stack::poll_transmit) gathers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Most datagrams in one run (1: every datagram goes alone).
    pub max_segments: usize,
    /// Largest datagram that may travel in a run of more than one.
    pub max_segment_size: usize,
}

impl Batching {
    /// No runs: every datagram goes alone (a link that cannot batch).
    pub const NONE: Batching = Batching {
        max_segments: 1,
        max_segment_size: 0,
    };
}

/// A run still taking datagrams: the first as it came (a run of one
/// leaves from it, with no copy), the rest appended to `bytes` (which
/// then starts with a copy of the first).
struct Open<A> {
    to: A,
    size: usize,
    count: usize,
    first: Bytes,
    bytes: Vec<u8>,
}

/// Runs being gathered and runs ready to leave, in the order they closed.
pub(super) struct Runs<A> {
    open: Vec<Open<A>>,
    ready: VecDeque<Transmit<A>>,
}

impl<A> Default for Runs<A> {
    fn default() -> Self {
        Runs {
            open: Vec::new(),
            ready: VecDeque::new(),
        }
    }
}

impl<A: PartialEq> Runs<A> {
    /// Adds a datagram for `to`: to the open run of its size and
    /// destination, or a new one. Datagrams to one address may so leave
    /// in another order than they were made, which UDP allows anyway.
    pub(super) fn push(&mut self, to: A, bytes: Bytes, b: Batching) {
        let size = bytes.len();
        if b.max_segments <= 1 || size > b.max_segment_size || size == 0 {
            self.ready.push_back(Transmit {
                to,
                segment_size: size.max(1),
                bytes,
            });
            return;
        }
        let at = match self.open.iter().position(|r| r.size == size && r.to == to) {
            Some(at) => {
                let r = &mut self.open[at];
                if r.count == 1 {
                    r.bytes = Vec::with_capacity(size * b.max_segments);
                    r.bytes.extend_from_slice(&r.first);
                }
                r.bytes.extend_from_slice(&bytes);
                r.count += 1;
                at
            }
            None => {
                if self.open.len() == MAX_RUNS {
                    self.close(0);
                }
                self.open.push(Open {
                    to,
                    size,
                    count: 1,
                    first: bytes,
                    bytes: Vec::new(),
                });
                self.open.len() - 1
            }
        };
        if self.open[at].count >= b.max_segments {
            self.close(at);
        }
    }

    /// Adds a datagram of `size` bytes for `to` that `write` appends to
    /// a buffer (false: it wrote nothing), straight into the open run of
    /// its size and destination: a datagram made for the run (sealed) is
    /// not copied into it afterwards.
    pub(super) fn push_with(
        &mut self,
        to: A,
        size: usize,
        b: Batching,
        write: impl FnOnce(&mut Vec<u8>) -> bool,
    ) {
        if b.max_segments <= 1 || size > b.max_segment_size || size == 0 {
            let mut bytes = Vec::with_capacity(size);
            if write(&mut bytes) {
                self.ready.push_back(Transmit {
                    to,
                    segment_size: size.max(1),
                    bytes: bytes.into(),
                });
            }
            return;
        }
        let at = match self.open.iter().position(|r| r.size == size && r.to == to) {
            Some(at) => {
                let r = &mut self.open[at];
                if r.count == 1 && r.bytes.is_empty() {
                    r.bytes.reserve(size * 2);
                    r.bytes.extend_from_slice(&r.first);
                }
                if !write(&mut r.bytes) {
                    return;
                }
                r.count += 1;
                at
            }
            None => {
                let mut bytes = Vec::with_capacity(size);
                if !write(&mut bytes) {
                    return;
                }
                if self.open.len() == MAX_RUNS {
                    self.close(0);
                }
                self.open.push(Open {
                    to,
                    size,
                    count: 1,
                    first: Bytes::new(),
                    bytes,
                });
                self.open.len() - 1
            }
        };
        if self.open[at].count >= b.max_segments {
            self.close(at);
        }
    }

    fn close(&mut self, at: usize) {
        let r = self.open.remove(at);
        let bytes = if r.count > 1 || !r.bytes.is_empty() {
            Bytes::from(r.bytes)
        } else {
            r.first
        };
        self.ready.push_back(Transmit {
            to: r.to,
            segment_size: r.size,
            bytes,
        });
    }

    /// Closes every open run: they are ready to leave.
    pub(super) fn close_all(&mut self) {
        while !self.open.is_empty() {
            self.close(0);
        }
    }

    /// The next ready run. The queue's room goes once it is empty past a
    /// few runs: an idle peer keeps none of a burst's.
    pub(super) fn pop(&mut self) -> Option<Transmit<A>> {
        let t = self.ready.pop_front();
        if self.ready.is_empty() && self.ready.capacity() > READY_KEPT {
            self.ready = VecDeque::new();
        }
        t
    }

    /// Runs ready or still open.
    pub(super) fn len(&self) -> usize {
        self.ready.len() + self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GSO: Batching = Batching {
        max_segments: 3,
        max_segment_size: 100,
    };

    fn all(runs: &mut Runs<u8>) -> Vec<(u8, usize, Vec<u8>)> {
        runs.close_all();
        std::iter::from_fn(|| runs.pop())
            .map(|t| (t.to, t.segment_size, t.bytes.to_vec()))
            .collect()
    }

    #[test]
    fn datagrams_of_one_size_to_one_destination_form_runs_of_at_most_the_limit() {
        let mut r = Runs::default();
        for d in [&b"aa"[..], b"bb", b"x", b"cc", b"dd", b"yy"] {
            let to = if d == b"yy" { 2 } else { 1 };
            r.push(to, Bytes::copy_from_slice(d), GSO);
        }
        assert_eq!(
            all(&mut r),
            [
                (1, 2, b"aabbcc".to_vec()), // closed full, first
                (1, 1, b"x".to_vec()),
                (1, 2, b"dd".to_vec()),
                (2, 2, b"yy".to_vec()),
            ]
        );
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn without_batching_or_past_the_size_limit_every_datagram_goes_alone() {
        let mut r = Runs::default();
        r.push(1, Bytes::from_static(b"aa"), Batching::NONE);
        r.push(1, Bytes::from_static(b"bb"), Batching::NONE);
        let big = vec![7u8; 101];
        r.push(1, Bytes::from(big.clone()), GSO);
        r.push(1, Bytes::from(big.clone()), GSO);
        let out = all(&mut r);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|(_, size, b)| b.len() == *size));
    }

    #[test]
    fn datagrams_written_into_runs_join_those_pushed_whole() {
        let mut r = Runs::default();
        r.push(1, Bytes::from_static(b"aa"), GSO);
        r.push_with(1, 2, GSO, |v| {
            v.extend_from_slice(b"bb");
            true
        });
        r.push_with(2, 2, GSO, |v| {
            v.extend_from_slice(b"cc");
            true
        });
        r.push_with(2, 2, GSO, |_| false);
        r.push_with(3, 200, GSO, |v| {
            v.resize(200, 7);
            true
        });
        // Past the size limit: ready at once, ahead of the open runs.
        let out = all(&mut r);
        assert_eq!((out[0].0, out[0].1, out[0].2.len()), (3, 200, 200));
        assert_eq!(out[1], (1, 2, b"aabb".to_vec()));
        assert_eq!(out[2], (2, 2, b"cc".to_vec()));
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn past_the_most_runs_at_once_the_oldest_leaves() {
        let mut r = Runs::default();
        for to in 0..=MAX_RUNS as u8 {
            r.push(to, Bytes::from_static(b"zz"), GSO);
        }
        assert_eq!(r.pop().map(|t| t.to), Some(0));
        assert_eq!(r.len(), MAX_RUNS);
    }
}
