//! I/O: the driver: the peer's [`Stack`] behind a lock, and its one entry.
//!
//! The stack is shared by the peer's background task and the application's
//! calls. The background task ([`Shared::run`]) feeds the stack the datagrams the
//! link receives and the passing of time. An application call
//! ([`Shared::call`]: `send`, `get_route`, `connect`...) made while at most
//! [`DIRECT_SENDS`] calls are under way runs on the caller's own task: it
//! takes the lock, hands the stack its command, delivers the events that follow, sends the datagrams
//! its command made and (over UDP) receives its reply itself, so a lone
//! send crosses no hand-off to another task (hand-offs are most of a round
//! trip's cost on loopback). One such caller at a time holds the *claim*
//! to receive: while it does, the background task is not woken for the
//! datagrams the caller takes, and the caller looks at its reply without
//! waiting on it (see [`Shared::receive_claimed`]), so a confirmed send
//! wakes no task but the caller's. Under load calls go through the command queue
//! to the background task instead, which takes a burst under one lock and
//! sends everything queued in runs (one system call for many datagrams).
//!
//! The lock is a plain mutex, held for the core's work and never across a
//! wait. Sending is serialised apart from it by the *flush role*: whoever
//! holds it (caller or background task) sends until the core's queue is
//! empty, so datagrams made while someone else sends are not left behind.
//!
//! The files, one concern each: here [`Shared`] and [`Shared::call`], the
//! one entry of the API (claim, submit, flush, receive); `command.rs` the
//! commands and their replies; `counters.rs` the driver's counters and the
//! calls under way; `state.rs` what the lock guards and how commands and
//! datagrams reach the stack; `events.rs` the stack's events delivered to
//! replies, the receive queue and the hooks; `claim.rs` a lone caller's
//! claim to receive; `flush.rs` the flush role; `send.rs` runs handed to
//! the link; `pool.rs` the receive buffers; `run.rs` the background task;
//! `link_thread.rs` the entry of a link's own receive thread.

mod claim;
mod command;
mod counters;
mod events;
mod flush;
mod link_thread;
mod pool;
mod run;
mod send;
mod state;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Instant;

use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::config::PeerConfig;
use crate::error::Error;
use crate::hooks::{HookQueue, NewPeers};
use crate::link::Link;
use crate::secure::SecureCore;
use crate::stack::Stack;
use crate::view::SelfView;

use claim::{Claimed, Kick};
pub(crate) use command::{Command, Incoming, Queue, Snapshot, StoreCall};
use counters::Call;
pub(crate) use counters::Counters;
use flush::{Flush, FlushRole};
use state::State;

/// Calls under way (and sends in flight) up to which a call runs the core
/// on the caller's task and sends its datagrams itself. Past it the call
/// goes to the background
/// task through the command queue, as a burst of calls is handled best:
/// one task takes the lock once for many of them and sends what they made
/// in runs, instead of every caller contending for the lock and waking the
/// task for its datagrams.
const DIRECT_SENDS: usize = 4;

/// The driver of one peer: its link, and its core behind a lock.
pub(crate) struct Shared<L: Link> {
    link: L,
    /// `None` once closed.
    state: Mutex<Option<State<L>>>,
    /// The flush role.
    flushing: FlushRole<L::Addr>,
    /// Wakes the background task: an earlier deadline, datagrams left for
    /// it to send, or closing.
    wake: Notify,
    counters: Arc<Counters>,
    /// Datagrams the core may hold before a caller waits to send them.
    send_queue: usize,
    /// Calls handed to the background task under load.
    commands: mpsc::Sender<Command<L::Addr>>,
    /// Wakes the caller holding the claim to receive when a reply is
    /// completed anywhere but on its own task.
    kick: Arc<Kick>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The core is left consistent between its calls; a panic elsewhere
    // while holding the lock does not make it unusable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<L: Link> Shared<L> {
    /// What a call leaves to do once the core has its command: deliver
    /// the events, wake the background task if the next deadline moved
    /// earlier, and say who sends the datagrams (see [`Flush`]).
    fn after_call(&self, mut g: MutexGuard<'_, Option<State<L>>>) -> Flush {
        let Some(st) = g.as_mut() else {
            return Flush::No;
        };
        st.events();
        let earlier = st.deadline_moved_earlier();
        let queued = st.stack.queued_transmits() + st.parked.len();
        let direct = st.stack.node().sends_in_flight() <= DIRECT_SENDS;
        drop(g);
        let how = if queued == 0 {
            Flush::No
        } else if queued > self.send_queue {
            Flush::Wait
        } else if direct {
            Flush::Try
        } else {
            Flush::No
        };
        if earlier || (queued > 0 && how == Flush::No) {
            self.wake.notify_one();
        }
        how
    }

    pub(crate) fn new(
        link: L,
        view: Arc<SelfView<L::Addr>>,
        cfg: PeerConfig,
        seed: u64,
        inbox: mpsc::Sender<Incoming<L::Addr>>,
        hooks: HookQueue<L::Addr>,
        counters: Arc<Counters>,
    ) -> Result<(Self, Queue<L::Addr>), Error> {
        let now = Instant::now();
        let mut node = State::<L>::node(&cfg, view.me(), seed, now)?;
        if view.provisional() {
            node.set_provisional();
        }
        // Alone until `connect`: the first member of its own swarm.
        node.create(now);
        // Keyed: the seal, whose Init timestamps count from the wall clock
        // so that a restarted peer's are newer than its previous life's.
        let seal = cfg.swarm_key.clone().map(|key| {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            SecureCore::new(key, cfg.secure.clone(), wall, now)
        });
        let mut stack = Stack::new(node, seal);
        stack.watch_sent(hooks.wants_send());
        let send_queue = cfg.send_queue;
        let (commands, queue) = mpsc::channel(send_queue);
        let kick = Arc::new(Kick::default());
        let state = State {
            kick: kick.clone(),
            stack,
            cfg,
            seed,
            inbox,
            hooks,
            counters: counters.clone(),
            join_reply: None,
            lookups: FxHashMap::default(),
            sends: FxHashMap::default(),
            leave_replies: Vec::new(),
            new_peers: NewPeers::default(),
            view,
            bootstrap: None,
            observers: Vec::new(),
            store_ops: FxHashMap::default(),
            listens: FxHashMap::default(),
            armed: None,
            parked: VecDeque::new(),
        };
        let shared = Shared {
            link,
            state: Mutex::new(Some(state)),
            flushing: FlushRole::default(),
            wake: Notify::new(),
            counters,
            send_queue,
            commands,
            kick,
        };
        Ok((shared, queue))
    }

    /// Runs one application command and waits for its reply: the one
    /// entry of the API into the driver. `make` builds the command around
    /// its reply sender.
    ///
    /// A call made while at most [`DIRECT_SENDS`] are under way runs on
    /// the caller's task (see the module documentation): the command goes
    /// to the stack at once, the caller sends what it made if the flush
    /// role is free, and a call answered over the network (a send, a
    /// join, a lookup) takes the link's claim to receive before anything
    /// leaves and receives its reply itself while it stays lone. Under
    /// load the command goes through the queue to the background task,
    /// which batches.
    pub(crate) async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command<L::Addr>,
    ) -> Result<T, Error> {
        let (_call, lone) = Call::start(&self.counters);
        let (tx, mut rx) = oneshot::channel();
        let command = make(tx);
        // Calls answered at once (`peers`, `stats`) take no claim.
        let networked = matches!(
            command,
            Command::Send { .. }
                | Command::Join { .. }
                | Command::Lookup { .. }
                | Command::Store { .. }
        );
        let claim = if lone && networked {
            std::future::poll_fn(|cx| Poll::Ready(self.claim_receive(cx)))
                .await
                .then(|| Claimed(self))
        } else {
            None
        };
        let how = match self.submit(command, lone) {
            Ok(how) => how,
            Err(c) => {
                // Under load: to the background task (waiting while its
                // queue is full), which sends in runs.
                self.commands.send(c).await.map_err(|_| Error::Closed)?;
                Flush::No
            }
        };
        // Only a call that sends its own datagrams receives: one that must
        // wait to send (back-pressure), or left them to the background
        // task (under load), gives the claim up at once.
        let claim = claim.filter(|_| how == Flush::Try);
        self.flush_now(how).await;
        if claim.is_some() {
            // Only while the call stays lone: once others are under way,
            // receiving (and sending what each datagram makes, one at a
            // time) is left to the background task, which batches.
            while Call::lone(&self.counters) {
                // Looked at, never waited on (see `receive_claimed`).
                match rx.try_recv() {
                    Ok(r) => return Ok(r),
                    Err(oneshot::error::TryRecvError::Closed) => return Err(Error::Closed),
                    Err(oneshot::error::TryRecvError::Empty) => {}
                }
                self.receive_claimed().await;
            }
        }
        // Given up before waiting: the background task receives the reply.
        drop(claim);
        rx.await.map_err(|_| Error::Closed)
    }

    /// Hands the core `c` on the caller's task and delivers the events
    /// that follow; says who sends the datagrams it made. After
    /// [`close`](Self::close), `c` is dropped (its reply says `Closed`).
    /// Under load (`lone` false: more than [`DIRECT_SENDS`] calls under
    /// way) `c` comes back: [`Shared::call`] hands it to the background
    /// task through the command queue instead.
    fn submit(&self, c: Command<L::Addr>, lone: bool) -> Result<Flush, Command<L::Addr>> {
        if !lone {
            return Err(c);
        }
        let mut g = lock(&self.state);
        let Some(st) = g.as_mut() else {
            return Ok(Flush::No);
        };
        st.command(c);
        Ok(self.after_call(g))
    }

    /// Hands the core an unconfirmed datagram
    /// ([`chord::LocalNode::send_datagram`]); says who sends it.
    fn submit_datagram(&self, target: chord::Target, payload: &[u8]) -> Result<Flush, Error> {
        let mut g = lock(&self.state);
        let Some(st) = g.as_mut() else {
            return Err(Error::Closed);
        };
        st.stack.send_datagram(target, payload, Instant::now())?;
        Ok(self.after_call(g))
    }

    /// Hands the stack an unconfirmed datagram and sends it as the flush
    /// role says (see [`call`](Self::call)).
    pub(crate) async fn send_unconfirmed(
        &self,
        target: chord::Target,
        payload: &[u8],
    ) -> Result<(), Error> {
        let how = self.submit_datagram(target, payload)?;
        self.flush_now(how).await;
        Ok(())
    }

    /// Whether datagrams to and from `peer` are authenticated: a keyed
    /// handshake with it completed (always true without a key, and false
    /// once closed).
    pub(crate) fn has_session(&self, peer: &L::Addr) -> bool {
        self.with(|st| st.stack.has_session(peer)).unwrap_or(false)
    }

    /// `f` on the state under the lock; `None` once closed.
    fn with<T>(&self, f: impl FnOnce(&mut State<L>) -> T) -> Option<T> {
        lock(&self.state).as_mut().map(f)
    }

    /// Stops the peer: every waiting call gets `Closed`, the background
    /// task ends on its next wake-up (which this causes).
    pub(crate) fn close(&self) {
        // Dropping the state drops every waiting reply (`Closed`), the
        // receive queue's sender and the hook queue.
        let state = lock(&self.state).take();
        drop(state);
        self.wake.notify_one();
        // A claimant's reply was dropped with the state: it must look.
        self.kick.kick();
    }

    /// Whether [`close`](Self::close) has run.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).is_none()
    }
}
