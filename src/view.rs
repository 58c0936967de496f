//! Pure: a peer's view of itself, shared under locks by the driver and the API; no I/O.
//!
//! [`SelfView`]: what a peer knows of itself (its identity, where others
//! see it), shared by the driver that learns it and the API that reports it.

use std::sync::{Mutex, RwLock};

use chord::NodeRef;

/// How many observations (`by`, `seen`) a peer keeps: the latest, one per
/// observer.
pub(crate) const OBSERVATIONS: usize = 8;

/// A peer's view of itself.
#[derive(Debug)]
pub(crate) struct SelfView<A> {
    /// Its identity: the placeholder it was bound with until a provisional
    /// peer learns its address, then the learned one.
    me: RwLock<NodeRef<A>>,
    /// Whether it started with a placeholder address.
    provisional: bool,
    /// Where peers see it: (observer, address seen), latest last.
    observed: Mutex<Vec<(A, A)>>,
}

impl<A: Clone + PartialEq> SelfView<A> {
    pub(crate) fn new(me: NodeRef<A>, provisional: bool) -> Self {
        SelfView {
            me: RwLock::new(me),
            provisional,
            observed: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn me(&self) -> NodeRef<A> {
        self.me.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_me(&self, me: NodeRef<A>) {
        *self.me.write().unwrap_or_else(|p| p.into_inner()) = me;
    }

    pub(crate) fn provisional(&self) -> bool {
        self.provisional
    }

    /// Records that `by` sees this peer at `seen` (replacing what `by`
    /// said before).
    pub(crate) fn observed(&self, by: A, seen: A) {
        let mut o = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        o.retain(|(b, _)| *b != by);
        if o.len() >= OBSERVATIONS {
            o.remove(0);
        }
        o.push((by, seen));
    }

    /// The observations, oldest first.
    pub(crate) fn observations(&self) -> Vec<(A, A)> {
        self.observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
