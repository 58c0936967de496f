//! I/O: the reader thread: waits on the flow set (`fevent`), reads one packet
//! per event and hands it to the driver or the queue; stops at process exit.

use super::*;

/// Set at process exit: reader threads leave `fevent` before the library's
/// destructor unmaps the flow set they wait on (a thread still waiting
/// there faults when it wakes).
pub(super) static EXITING: AtomicBool = AtomicBool::new(false);
/// Reader threads running, and its change.
pub(super) static READERS: (Mutex<usize>, std::sync::Condvar) =
    (Mutex::new(0), std::sync::Condvar::new());

/// The exit hook: asks every reader thread to stop and waits for them,
/// 1 s at most (each waits in `EVENT_SLICE`s).
pub(super) fn stop_readers() {
    EXITING.store(true, Ordering::Release);
    let (m, cv) = &READERS;
    let g = m.lock().unwrap_or_else(|e| e.into_inner());
    let _ = cv.wait_timeout_while(g, Duration::from_secs(1), |n| *n > 0);
}

/// Counts a reader thread while it lives.
pub(super) struct ReaderRunning;

impl ReaderRunning {
    pub(super) fn new() -> ReaderRunning {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            if !ouro::at_exit(stop_readers) {
                tracing::warn!("could not register the exit hook of the Ouroboros link");
            }
        });
        *lock(&READERS.0) += 1;
        ReaderRunning
    }
}

impl Drop for ReaderRunning {
    fn drop(&mut self) {
        *lock(&READERS.0) -= 1;
        READERS.1.notify_all();
    }
}

/// What the reader thread has still to do, taken from the library's events,
/// in two queues: what the low-delay flows brought is read first.
#[derive(Default)]
pub(super) struct Todos {
    pub(super) control: VecDeque<Todo>,
    pub(super) bulk: VecDeque<Todo>,
}

impl Todos {
    /// Queues `todo` of a flow behind what that flow had queued before.
    pub(super) fn push(&mut self, todo: Todo) {
        let slot = match &todo {
            Todo::Read(s) | Todo::Down(s, _) => s,
        };
        match slot.class {
            Class::Control => self.control.push_back(todo),
            Class::Bulk => self.bulk.push_back(todo),
        }
    }

    /// Queues `n` reads of `slot`.
    pub(super) fn reads(&mut self, slot: &Arc<Slot>, n: usize) {
        for _ in 0..n {
            self.push(Todo::Read(slot.clone()));
        }
    }

    pub(super) fn pop(&mut self) -> Option<Todo> {
        self.control.pop_front().or_else(|| self.bulk.pop_front())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.control.is_empty() && self.bulk.is_empty()
    }
}

/// One thing the reader thread has to do.
pub(super) enum Todo {
    /// Read one packet of the flow.
    Read(Arc<Slot>),
    /// The flow went down: forget it (what it held was read before).
    Down(Arc<Slot>, FEventType),
}

/// The reader thread: waits on the link's flow set, reads what arrived
/// (one packet per event, at most [`READ_BATCH`] between two waits), forgets
/// flows that went down, and deallocates flows gone idle.
///
/// It never blocks anywhere but in `fevent`: when the driver's queue is
/// full it holds the packet it read and waits in `fevent` again, taking
/// events into its own queue (`todo`), until there is room. Packets then
/// wait in the flows' rings, and writers find them full, as a full socket
/// buffer pushes back on a sender.
pub(super) fn read_loop(s: Arc<Shared>) {
    let _running = ReaderRunning::new();
    ON_READER.with(|r| r.set(true));
    let mut fq = match FEventQueue::new() {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(error = %e, "fqueue_create failed: the Ouroboros link reads nothing");
            return;
        }
    };
    let mut todo = Todos::default();
    let mut held: Option<(Vec<u8>, String)> = None;
    let mut batch: Arrivals<PeerAddr> = Arrivals::new();
    let mut last_idle_check = Instant::now();
    while !s.stop.load(Ordering::Acquire) && !EXITING.load(Ordering::Acquire) {
        let wait = if held.is_some() {
            HELD_WAIT
        } else if todo.is_empty() {
            EVENT_SLICE
        } else {
            Duration::ZERO
        };
        match s.set.wait(&mut fq, Some(wait)) {
            Ok(()) => {}
            Err(ouro::Error::Timeout { .. }) => {}
            Err(e) => {
                tracing::debug!(error = %e, "fevent failed");
                std::thread::sleep(EVENT_SLICE);
            }
        }
        // Packets that reached a flow before it joined the set raised no
        // event; read as many as it holds now.
        for slot in std::mem::take(&mut *lock(&s.fresh)) {
            let waiting = slot.flow().get_rx_queue_len().unwrap_or(0);
            todo.reads(&slot, waiting);
        }
        let mut events = 0u64;
        for (id, t) in &mut fq {
            events += 1;
            let Some(slot) = s.slots.get(&id.raw()).map(|e| e.value().clone()) else {
                continue;
            };
            match t {
                FEventType::FlowPkt => todo.push(Todo::Read(slot)),
                FEventType::FlowDown | FEventType::FlowDealloc | FEventType::FlowPeer => {
                    // What arrived before the flow went down still counts;
                    // nothing more can arrive.
                    let waiting = slot.flow().get_rx_queue_len().unwrap_or(0);
                    todo.reads(&slot, waiting);
                    todo.push(Todo::Down(slot, t));
                }
                FEventType::FlowUp | FEventType::FlowAlloc => {}
            }
        }
        s.counters.most_events.fetch_max(events, Ordering::Relaxed);
        let sink = s.sink.get();
        let mut reads = 0;
        loop {
            if let Some(p) = held.take() {
                // Counted first: `recv_from` may return it before this
                // thread runs again.
                s.counters.queued.fetch_add(1, Ordering::Relaxed);
                match s.incoming.try_send(p) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(p)) => {
                        s.counters.queued.fetch_sub(1, Ordering::Relaxed);
                        held = Some(p);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return, // the link is closing
                }
            }
            if reads == READ_BATCH {
                break;
            }
            match todo.pop() {
                Some(Todo::Read(slot)) => {
                    reads += 1;
                    if sink.is_some() {
                        s.read_one(&slot, |p, from| {
                            batch.push(p, PeerAddr::Ouroboros(from.to_owned()))
                        });
                    } else {
                        held = s.read_one(&slot, |p, from| (p.to_vec(), from.to_owned()));
                    }
                }
                Some(Todo::Down(slot, t)) => {
                    tracing::debug!(peer = %slot.peer, event = ?t, "flow down");
                    s.close(&slot, false);
                }
                None => break,
            }
        }
        if let (Some(sink), false) = (sink, batch.is_empty()) {
            // The driver runs the core on them here, and sends what they
            // caused, before the next `fevent`.
            s.counters
                .handed
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            sink(&mut batch);
            // The sink is meant to empty it; one that did not must not
            // have the same packets handed to it again.
            batch.clear();
        }
        if last_idle_check.elapsed() >= IDLE_CHECK {
            last_idle_check = Instant::now();
            s.bury();
            let now = s.now_ms();
            // Collected first: `close` removes from the table, which the
            // iteration holds locked shard by shard.
            let idle: Vec<Arc<Slot>> = s
                .slots
                .iter()
                .filter(|e| {
                    now.saturating_sub(e.value().last.load(Ordering::Relaxed))
                        > FLOW_IDLE.as_millis() as u64
                })
                .map(|e| e.value().clone())
                .collect();
            for slot in idle {
                // The peer is alive (its keepalives keep the flow up, it would
                // have gone down after FLOW_PEER_TIMEOUT_MS otherwise).
                tracing::debug!(peer = %slot.peer, "flow idle");
                s.close(&slot, true);
            }
        }
    }
}
