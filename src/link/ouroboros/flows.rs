//! I/O: the flow table (routes by name and class, open flows by
//! descriptor), writes onto flows, allocation of new flows, release of dead ones.

use super::*;

/// One open flow of the link. Written by the driver, read by the reader
/// thread; released when the last reference goes (see [`Slot::drop`]).
pub(super) struct Slot {
    pub(super) flow: Option<Flow>,
    pub(super) fd: i32,
    pub(super) peer: String,
    /// The route it serves (always `Control` with one flow per neighbour).
    pub(super) class: Class,
    pub(super) gen: u64,
    /// Milliseconds since the link's epoch of the last packet either way.
    pub(super) last: AtomicU64,
    /// Set when the peer is known alive: deallocate on drop.
    pub(super) dealloc: AtomicBool,
    /// The writes to this flow wait for room at most [`WRITE_WAIT`] in any
    /// [`WAIT_WINDOW`], so that a stuck peer cannot hold up the writes to
    /// every other peer (they wait behind): the start of the current window
    /// (milliseconds since the link's epoch) and the milliseconds waited in
    /// it.
    pub(super) wait_window: AtomicU64,
    pub(super) waited_ms: AtomicU64,
    pub(super) set: Arc<FlowSet>,
    pub(super) counters: Arc<Counters>,
}

impl Slot {
    pub(super) fn flow(&self) -> &Flow {
        self.flow.as_ref().expect("present until dropped")
    }
}

/// `flow_dealloc` of Ouroboros 0.23 waits, holding the library's process
/// lock, until the peer has read every packet still queued towards it (the
/// library's own keepalives included), which never happens when the peer is
/// gone; every later allocation or accept of the process then hangs. So
/// only a flow whose peer is known alive (it went idle while the peer's
/// keepalives kept coming) is deallocated; a flow that went down, or that
/// is dropped because the link closes, is left allocated (counted as
/// `leaked`) for the library's destructor at exit, which does not wait.
impl Drop for Slot {
    fn drop(&mut self) {
        let Some(f) = self.flow.take() else { return };
        self.set.remove(&f);
        if self.dealloc.load(Ordering::Acquire) {
            drop(f);
        } else {
            self.counters.leaked.fetch_add(1, Ordering::Relaxed);
            std::mem::forget(f);
        }
    }
}

/// Where datagrams to a name go.
pub(super) enum Route {
    /// A flow is being allocated; datagrams wait for it.
    Pending { gen: u64, queue: Vec<Bytes> },
    /// The newest flow to the name.
    Ready(Arc<Slot>),
}

pub(super) struct Shared {
    pub(super) me: String,
    pub(super) epoch: Instant,
    /// A flow per class of each neighbour ([`Shared::classes`]), or one.
    pub(super) classes: bool,
    pub(super) routes: DashMap<(String, Class), Route>,
    /// Every open flow, by descriptor (also flows replaced by a newer one,
    /// still read until idle).
    pub(super) slots: DashMap<i32, Arc<Slot>>,
    /// Flows that went down, waiting to be released (see [`Shared::bury`]).
    pub(super) graveyard: Mutex<Vec<(Instant, Arc<Slot>)>>,
    /// Flows added to the set since the reader thread last looked: what
    /// arrived on them before raised no event.
    pub(super) fresh: Mutex<Vec<Arc<Slot>>>,
    pub(super) set: Arc<FlowSet>,
    pub(super) backoff: Mutex<HashMap<String, Instant>>,
    pub(super) incoming: mpsc::Sender<(Vec<u8>, String)>,
    /// Where the reader thread hands packets once the driver has asked
    /// ([`Link::deliver_to`]); until then they go to `incoming`.
    pub(super) sink: OnceLock<LinkSink<PeerAddr>>,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) next_gen: AtomicU64,
    pub(super) stop: AtomicBool,
    pub(super) counters: Arc<Counters>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(super) fn drop_one(&self) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The route class of a datagram: its own class, or `Control` (the one
    /// flow) with one flow per neighbour.
    pub(super) fn class_for(&self, bytes: &[u8]) -> Class {
        if self.classes {
            Class::of(bytes)
        } else {
            Class::Control
        }
    }

    /// The route class of a flow whose hello said `class` (`None`: a
    /// version-1 hello, a flow for everything).
    pub(super) fn route_class(&self, class: Option<Class>) -> Class {
        match class {
            Some(c) if self.classes => c,
            _ => Class::Control,
        }
    }

    pub(super) fn count_sent(&self, class: Class) {
        let c = match class {
            Class::Control => &self.counters.control_sent,
            Class::Bulk => &self.counters.bulk_sent,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether the writes to `slot` may still wait for room in the current
    /// window (see [`WRITE_WAIT`]), starting a new window once the last
    /// one is over. When not, a write that finds the flow full is dropped
    /// without even the yields.
    pub(super) fn may_wait(&self, slot: &Slot) -> bool {
        let now = self.now_ms();
        if now.saturating_sub(slot.wait_window.load(Ordering::Relaxed))
            >= WAIT_WINDOW.as_millis() as u64
        {
            slot.wait_window.store(now, Ordering::Relaxed);
            slot.waited_ms.store(0, Ordering::Relaxed);
        }
        slot.waited_ms.load(Ordering::Relaxed) < WRITE_WAIT.as_millis() as u64
    }

    pub(super) fn touch(&self, slot: &Slot) {
        slot.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The flow of `class` to write a datagram to `name` on (the other
    /// class's while this one's is being allocated or backing off), or
    /// `None` when the datagram was queued behind an allocation (started
    /// here if needed).
    pub(super) fn route(
        self: &Arc<Self>,
        name: &str,
        class: Class,
        bytes: &[u8],
    ) -> io::Result<Option<Arc<Slot>>> {
        if name == self.me {
            self.drop_one();
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no flow to our own name",
            ));
        }
        let key = (name.to_owned(), class);
        // While this class's flow is being allocated (or cannot be), the
        // other class's flow to the name carries its datagrams: the first
        // data to a neighbour does not wait for (or get dropped behind) a
        // second allocation, which takes a second across hosts. (Read, and
        // its shard released, before the entry below locks its own shard:
        // both keys may share one.)
        let other = match self
            .routes
            .get(&(name.to_owned(), class.other()))
            .as_deref()
        {
            Some(Route::Ready(slot)) if self.classes => Some(slot.clone()),
            _ => None,
        };
        // The entry holds the key's shard until the pending route is in:
        // one allocation per name and class.
        let routes = match self.routes.entry(key.clone()) {
            Entry::Occupied(mut o) => match o.get_mut() {
                Route::Ready(slot) => return Ok(Some(slot.clone())),
                Route::Pending { .. } if other.is_some() => return Ok(other),
                Route::Pending { queue, .. } => {
                    if queue.len() >= FLOW_QUEUE {
                        self.drop_one();
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    queue.push(Bytes::copy_from_slice(bytes));
                    return Ok(None);
                }
            },
            Entry::Vacant(v) => v,
        };
        {
            // One back-off per name: a peer that cannot be reached on one
            // class cannot be on the other.
            let mut backoff = lock(&self.backoff);
            if let Some(t) = backoff.get(name) {
                if t.elapsed() < ALLOC_BACKOFF {
                    if other.is_some() {
                        return Ok(other);
                    }
                    self.drop_one();
                    return Err(io::ErrorKind::NotConnected.into());
                }
                backoff.remove(name);
            }
        }
        if self.counters.live.load(Ordering::Relaxed) >= MAX_FLOWS
            || self.stop.load(Ordering::Acquire)
        {
            self.drop_one();
            return Err(io::Error::other("too many flows"));
        }
        // Allocation: one per name at a time (the route exists while it
        // runs, so further datagrams queue behind it), never to our own name.
        let gen = self.next_gen.fetch_add(1, Ordering::Relaxed);
        let queue = match other {
            Some(_) => Vec::new(),
            None => vec![Bytes::copy_from_slice(bytes)],
        };
        drop(routes.insert(Route::Pending { gen, queue }));
        self.counters.live.fetch_add(1, Ordering::Relaxed);
        let s = self.clone();
        let peer = name.to_owned();
        let hello_class = self.classes.then_some(class);
        // Not tracked: an allocation cannot be interrupted; one that ends
        // after the link closed leaves its flow to the library (`register`).
        drop(
            self.runtime
                .spawn_blocking(move || match allocate(&peer, &s.me, hello_class) {
                    Ok(flow) => {
                        s.counters.allocated.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(to = %peer, ?class, "flow allocated");
                        s.register(flow, peer, class, Some(gen));
                    }
                    Err(e) => {
                        tracing::debug!(to = %peer, error = %e, "flow allocation failed");
                        s.counters.alloc_failed.fetch_add(1, Ordering::Relaxed);
                        lock(&s.backoff).insert(peer.clone(), Instant::now());
                        s.unpend(&peer, class, Some(gen));
                        s.counters.live.fetch_sub(1, Ordering::Relaxed);
                    }
                }),
        );
        Ok(other)
    }

    /// Makes `flow` (allocated by us for the pending route of generation
    /// `pending`, or accepted with `None`) the one datagrams of `class` to
    /// `peer` go out on, writes what waited for it, and has the reader
    /// thread watch it. Blocking: runs off the runtime. `live` already
    /// counts it.
    pub(super) fn register(
        self: &Arc<Self>,
        flow: Flow,
        peer: String,
        class: Class,
        pending: Option<u64>,
    ) {
        let flags = flow.get_flags().map(|f| f | FlowProperties::NON_BLOCKING);
        if let Err(e) = flags.and_then(|f| flow.set_flags(f)) {
            tracing::debug!(%peer, error = %e, "flow unusable");
            self.counters.leaked.fetch_add(1, Ordering::Relaxed);
            std::mem::forget(flow);
            self.unpend(&peer, class, pending);
            self.counters.live.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let Some(id) = flow.id() else {
            self.unpend(&peer, class, pending);
            self.counters.live.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        let slot = Arc::new(Slot {
            fd: id.raw(),
            flow: Some(flow),
            peer: peer.clone(),
            class,
            gen: self.next_gen.fetch_add(1, Ordering::Relaxed),
            last: AtomicU64::new(self.now_ms()),
            dealloc: AtomicBool::new(false),
            wait_window: AtomicU64::new(0),
            waited_ms: AtomicU64::new(0),
            set: self.set.clone(),
            counters: self.counters.clone(),
        });
        if self.stop.load(Ordering::Acquire) {
            self.counters.live.fetch_sub(1, Ordering::Relaxed);
            return; // dropped: left to the library
        }
        self.slots.insert(slot.fd, slot.clone());
        if let Err(e) = self.set.add(slot.flow()) {
            tracing::debug!(%peer, error = %e, "fset_add failed");
            self.close(&slot, false);
            self.unpend(&peer, class, pending);
            return;
        }
        lock(&self.fresh).push(slot.clone());
        // The newest flow to a name wins; a flow it replaces is still read
        // until idle. What waited behind an allocation to the name in this
        // class leaves on this flow, whether it is ours or one the peer
        // opened to us first (both sides allocating at once).
        let queued = match self
            .routes
            .insert((peer.clone(), class), Route::Ready(slot.clone()))
        {
            Some(Route::Pending { queue, .. }) => queue,
            _ => Vec::new(),
        };
        for b in queued {
            match slot.flow().write(&b) {
                Ok(_) => self.count_sent(class),
                Err(_) => self.drop_one(),
            }
        }
    }

    /// Removes the pending route of `class` to `peer` of generation `gen`
    /// (if it is still there) and counts what waited in it as dropped.
    pub(super) fn unpend(&self, peer: &str, class: Class, gen: Option<u64>) {
        let Some(gen) = gen else { return };
        let key = (peer.to_owned(), class);
        let removed = self.routes.remove_if(
            &key,
            |_, r| matches!(r, Route::Pending { gen: g, .. } if *g == gen),
        );
        if let Some((_, Route::Pending { queue, .. })) = removed {
            self.counters
                .dropped
                .fetch_add(queue.len() as u64, Ordering::Relaxed);
        }
    }

    /// Forgets a flow (down, idle or replaced and idle); it is released
    /// when the last reference goes, deallocated only if `alive`.
    pub(super) fn close(&self, slot: &Arc<Slot>, alive: bool) {
        let removed = self.slots.remove_if(&slot.fd, |_, s| Arc::ptr_eq(s, slot));
        let Some((_, removed)) = removed else { return };
        let key = (slot.peer.clone(), slot.class);
        drop(self.routes.remove_if(
            &key,
            |_, r| matches!(r, Route::Ready(r) if r.gen == slot.gen),
        ));
        removed.dealloc.store(alive, Ordering::Release);
        self.counters.closed.fetch_add(1, Ordering::Relaxed);
        self.counters.live.fetch_sub(1, Ordering::Relaxed);
        if !alive && !self.stop.load(Ordering::Acquire) {
            lock(&self.graveyard).push((Instant::now(), removed));
        }
    }

    /// Releases the flows that went down. `flow_dealloc` in 0.23 blocks
    /// (holding the process lock) only while the flow's transmit queue is
    /// not empty: nobody reads it once the peer is gone. Once a flow is
    /// marked down the library sends no more keepalives on it and the link
    /// writes nothing more to it (it is out of the routes), so a flow that
    /// has been down for [`DEAD_GRACE`] with an empty transmit queue is
    /// deallocated; one whose queue is still not empty after
    /// [`DEAD_GIVE_UP`] is left to the library (counted as leaked).
    pub(super) fn bury(&self) {
        let ready: Vec<Arc<Slot>> = {
            let mut g = lock(&self.graveyard);
            let mut ready = Vec::new();
            g.retain(|(since, slot)| {
                if since.elapsed() < DEAD_GRACE {
                    return true;
                }
                if slot.flow().get_tx_queue_len().is_ok_and(|n| n == 0) {
                    slot.dealloc.store(true, Ordering::Release);
                    ready.push(slot.clone());
                    false
                } else {
                    since.elapsed() < DEAD_GIVE_UP
                }
            });
            ready
        };
        for slot in ready {
            tracing::debug!(peer = %slot.peer, "flow that went down released");
            self.counters.released.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads one packet of `slot` and hands it to `f` where it lies (see
    /// [`Flow::recv_with`]): `None` for nothing (a keepalive, an invalid
    /// packet the library dropped, an empty ring, a dead flow).
    pub(super) fn read_one<T>(
        &self,
        slot: &Arc<Slot>,
        f: impl FnOnce(&[u8], &str) -> T,
    ) -> Option<T> {
        match slot
            .flow()
            .recv_with(|p| (!p.is_empty()).then(|| f(p, &slot.peer)))
        {
            Ok(Some(t)) => {
                self.touch(slot);
                Some(t)
            }
            Ok(None) | Err(ouro::Error::WouldBlock { .. }) => None,
            Err(e) if e.is_flow_dead() => {
                tracing::debug!(peer = %slot.peer, error = %e, "flow down");
                self.close(slot, false);
                None
            }
            Err(e) => {
                tracing::debug!(peer = %slot.peer, error = %e, "flow read error");
                None
            }
        }
    }
}
