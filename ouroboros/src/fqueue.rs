//! Waiting on many flows at once: [`FlowSet`] and [`FEventQueue`].

use std::time::Duration;

use crate::error::{Error, Result};
use crate::ffi::{self, Lib, QueuePtr, SetPtr};
use crate::flow::{Flow, FlowId};

/// The type of a flow event (`enum fqtype`); the discriminants are the C
/// values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FEventType {
    /// A packet is ready to be read (`FLOW_PKT`).
    FlowPkt = 0x01,
    /// The flow went down (`FLOW_DOWN`).
    FlowDown = 0x02,
    /// The flow came (back) up (`FLOW_UP`).
    FlowUp = 0x04,
    /// A flow was allocated (`FLOW_ALLOC`).
    FlowAlloc = 0x08,
    /// The flow was deallocated (`FLOW_DEALLOC`).
    FlowDealloc = 0x10,
    /// The peer stopped answering keepalives (`FLOW_PEER`).
    FlowPeer = 0x20,
}

impl FEventType {
    /// Every event type.
    pub(crate) const ALL: [FEventType; 6] = [
        FEventType::FlowPkt,
        FEventType::FlowDown,
        FEventType::FlowUp,
        FEventType::FlowAlloc,
        FEventType::FlowDealloc,
        FEventType::FlowPeer,
    ];

    /// Maps the C value; `None` for an unknown one.
    pub fn from_raw(v: i32) -> Option<FEventType> {
        FEventType::ALL.into_iter().find(|&e| e as i32 == v)
    }

    /// Whether the event means the flow is dead (down, deallocated, or the
    /// peer timed out).
    pub fn is_flow_dead(self) -> bool {
        matches!(
            self,
            FEventType::FlowDown | FEventType::FlowDealloc | FEventType::FlowPeer
        )
    }
}

/// A set of flows to wait on (`fset_t`), destroyed on drop.
///
/// In Ouroboros 0.23 a flow belongs to at most one set at a time; a flow
/// used through [`AsyncFlow`](crate::AsyncFlow) is in the binding's own set
/// and must not be added to another.
///
/// ```no_run
/// use cicada_ouroboros::{flow_accept, FEventQueue, FEventType, FlowSet};
/// use std::time::Duration;
///
/// # fn main() -> Result<(), cicada_ouroboros::Error> {
/// let a = flow_accept(None)?;
/// let b = flow_accept(None)?;
/// let set = FlowSet::with_flows(&[&a, &b])?;
/// let mut fq = FEventQueue::new()?;
/// set.wait(&mut fq, Some(Duration::from_secs(1)))?;
/// for (id, t) in &mut fq {
///     let f = if Some(id) == a.id() { &a } else { &b };
///     if t == FEventType::FlowPkt {
///         println!("{:?}", f.recv()?);
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FlowSet {
    lib: &'static Lib,
    set: Option<SetPtr>,
}

impl FlowSet {
    /// An empty set.
    pub fn new() -> Result<FlowSet> {
        let lib = ffi::lib()?;
        let set = lib.fset_create().ok_or(Error::Other {
            op: "fset_create",
            code: libc::ENOMEM,
        })?;
        Ok(FlowSet {
            lib,
            set: Some(set),
        })
    }

    /// A set holding `flows`.
    pub fn with_flows(flows: &[&Flow]) -> Result<FlowSet> {
        let s = FlowSet::new()?;
        for f in flows {
            s.add(f)?;
        }
        Ok(s)
    }

    /// Adds a flow. The library locks the set itself, so flows can be
    /// added and removed from any thread, also while another thread waits
    /// on the set.
    pub fn add(&self, flow: &Flow) -> Result<()> {
        let (_, fd) = flow.live()?;
        let Some(set) = &self.set else {
            return Err(Error::Deallocated);
        };
        let r = self.lib.fset_add(set, fd);
        if r < 0 {
            return Err(Error::from_ret("fset_add", r.into()));
        }
        Ok(())
    }

    /// Removes a flow (nothing happens if it is not in the set).
    pub fn remove(&self, flow: &Flow) {
        if let (Some(id), Some(set)) = (flow.id(), &self.set) {
            self.lib.fset_del(set, id.0);
        }
    }

    /// Whether the set holds `flow`.
    pub fn contains(&self, flow: &Flow) -> bool {
        match (flow.id(), &self.set) {
            (Some(id), Some(set)) => self.lib.fset_has(set, id.0),
            _ => false,
        }
    }

    /// Removes every flow.
    pub fn zero(&mut self) {
        if let Some(set) = &self.set {
            self.lib.fset_zero(set);
        }
    }

    /// Waits until an event on a flow of the set, or `timeout` (`None` =
    /// forever; then [`Error::Timeout`]), and fills `fq`.
    pub fn wait(&self, fq: &mut FEventQueue, timeout: Option<Duration>) -> Result<()> {
        let (Some(set), Some(q)) = (&self.set, &fq.q) else {
            return Err(Error::Deallocated);
        };
        let r = self.lib.fevent(set, q, timeout);
        if r < 0 {
            return Err(Error::from_ret("fevent", r as i64));
        }
        Ok(())
    }
}

impl Drop for FlowSet {
    fn drop(&mut self) {
        if let Some(p) = self.set.take() {
            // Take the flows out before the set goes away.
            self.lib.fset_zero(&p);
            self.lib.fset_destroy(p);
        }
    }
}

/// Pending events filled by [`FlowSet::wait`] (`fqueue_t`), destroyed on
/// drop. Iterate it (`fq.next()`) to get `(FlowId, FEventType)` pairs.
#[derive(Debug)]
pub struct FEventQueue {
    lib: &'static Lib,
    q: Option<QueuePtr>,
}

impl FEventQueue {
    /// An empty queue.
    pub fn new() -> Result<FEventQueue> {
        let lib = ffi::lib()?;
        let q = lib.fqueue_create().ok_or(Error::Other {
            op: "fqueue_create",
            code: libc::ENOMEM,
        })?;
        Ok(FEventQueue { lib, q: Some(q) })
    }
}

impl Iterator for FEventQueue {
    type Item = (FlowId, FEventType);

    /// The next event: the flow and what happened to it; `None` when the
    /// queue is empty (wait again).
    fn next(&mut self) -> Option<(FlowId, FEventType)> {
        let q = self.q.as_ref()?;
        loop {
            let fd = self.lib.fqueue_next(q);
            if fd < 0 {
                return None;
            }
            if let Some(t) = FEventType::from_raw(self.lib.fqueue_type(q)) {
                return Some((FlowId(fd), t));
            }
        }
    }
}

impl Drop for FEventQueue {
    fn drop(&mut self) {
        if let Some(q) = self.q.take() {
            self.lib.fqueue_destroy(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_match_fqueue_h() {
        assert_eq!(FEventType::from_raw(1), Some(FEventType::FlowPkt));
        assert_eq!(FEventType::from_raw(1 << 5), Some(FEventType::FlowPeer));
        assert_eq!(FEventType::from_raw(3), None);
        assert!(FEventType::FlowDealloc.is_flow_dead());
        assert!(!FEventType::FlowUp.is_flow_dead());
    }
}
