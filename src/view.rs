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
pub(crate) struct SelfView<A> {
    /// Its identity: the placeholder it was bound with until a provisional
    /// peer learns its address, then the learned one.
    me: RwLock<NodeRef<A>>,
    /// Whether it started with a placeholder address.
    provisional: bool,
    /// Where peers see it: (observer, address seen), latest last.
    observed: Mutex<Vec<(A, A)>>,
    /// What the observations say of its NAT, for the core's hole punching
    /// (see `chord::Reach`); `None` where that cannot be worked out.
    reach: Option<Reacher<A>>,
}

/// Works out a peer's [`chord::Reach`] from its observations.
pub(crate) type Reacher<A> = Box<dyn Fn(&[(A, A)]) -> chord::Reach + Send + Sync>;

impl<A> std::fmt::Debug for SelfView<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfView").finish_non_exhaustive()
    }
}

impl<A: Clone + PartialEq> SelfView<A> {
    pub(crate) fn new(me: NodeRef<A>, provisional: bool) -> Self {
        SelfView {
            me: RwLock::new(me),
            provisional,
            observed: Mutex::new(Vec::new()),
            reach: None,
        }
    }

    /// Sets how the peer's [`chord::Reach`] follows from its observations.
    pub(crate) fn with_reach(mut self, reach: Reacher<A>) -> Self {
        self.reach = Some(reach);
        self
    }

    /// What the observations so far say of the peer's NAT.
    pub(crate) fn reach(&self) -> Option<chord::Reach> {
        let f = self.reach.as_ref()?;
        Some(f(&self.observations()))
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
