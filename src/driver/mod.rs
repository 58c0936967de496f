//! The driver: the peer's [`Stack`] behind a lock, shared by the peer's
//! background task and the application's calls.
//!
//! The background task ([`Shared::run`]) feeds the stack the datagrams the
//! link receives and the passing of time. An application call
//! ([`Shared::call`]: `send`, `get_route`, `connect`...) made while at most
//! [`DIRECT_SENDS`] calls are under way runs on the caller's own task: it
//! takes the lock, hands the stack its command, delivers the events that follow, sends the datagrams
//! its command made and (over UDP) receives its reply itself, so a lone
//! send crosses no hand-off to another task (hand-offs are most of a round
//! trip's cost on loopback). One such caller at a time holds the *claim*
//! to receive: while it does, the background task is not woken for the
//! datagrams the caller takes, and the caller looks at its reply without
//! waiting on it (see [`Handle::receive_claimed`]), so a confirmed send
//! wakes no task but the caller's. Under load calls go through the command queue
//! to the background task instead, which takes a burst under one lock and
//! sends everything queued in runs (one system call for many datagrams).
//!
//! The lock is a plain mutex, held for the core's work and never across a
//! wait. Sending is serialised apart from it by the *flush role*: whoever
//! holds it (caller or background task) sends until the core's queue is
//! empty, so datagrams made while someone else sends are not left behind.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chord::{Event, Hash, LocalNode, LookupId, NodeRef};
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::config::{PeerConfig, RECV_BUFFER};
use crate::error::Error;
use crate::hooks::{HookQueue, NewPeers};
use crate::link::{Arrivals, Link, LinkSink};
use crate::metrics::Outcomes;
use crate::secure::{SecureCore, SecureStats};
use crate::stack::{Batching, Stack, Transmit};
use crate::view::SelfView;

/// How long the driver sleeps when the core asks for no timer at all.
const IDLE_WAKE: Duration = Duration::from_secs(3600);
/// Most ready datagrams taken after one wake-up before the transmits they
/// caused go out: large enough to amortise the wake-up, small enough that
/// replies do not wait behind a long burst.
const DRAIN_BATCH: usize = 64;
/// Most transmits taken from the core in one round of a flush. Larger than
/// what one drain makes (a wake-up's datagram, then [`DRAIN_BATCH`] more,
/// each answered), so that a turn's datagrams leave in one round and not
/// as 64 and a straggler sent alone.
const FLUSH_BATCH: usize = 256;
/// Rounds of [`FLUSH_BATCH`] transmits one holder of the flush role sends
/// before it hands what is left to the background task: a caller that
/// became the sender for everyone does not stay so for long.
const FLUSH_ROUNDS: usize = 4;
/// Calls under way (and sends in flight) up to which a call runs the core
/// on the caller's task and sends its datagrams itself. Past it the call
/// goes to the background
/// task through the command queue, as a burst of calls is handled best:
/// one task takes the lock once for many of them and sends what they made
/// in runs, instead of every caller contending for the lock and waking the
/// task for its datagrams.
const DIRECT_SENDS: usize = 4;

type Reply<T> = oneshot::Sender<Result<T, Error>>;
/// The background task's end of the command queue.
pub(crate) type Queue<A> = mpsc::Receiver<Command<A>>;
/// Where a lookup or a send ended: the peer, and the hops it took.
type Reached<A> = (NodeRef<A>, u32);

/// What the application asks of the core.
pub(crate) enum Command<A> {
    Join {
        bootstrap: A,
        reply: Reply<NodeRef<A>>,
    },
    Send {
        target: chord::Target,
        payload: Bytes,
        duplicates: u8,
        reply: Reply<Reached<A>>,
    },
    Broadcast {
        payload: Vec<u8>,
        reply: Reply<()>,
    },
    Lookup {
        key: Hash,
        reply: Reply<Reached<A>>,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot<A>>,
    },
    Leave {
        reply: oneshot::Sender<()>,
    },
    /// Ask `to` where it sees this peer; the reply is the address seen.
    Observe {
        to: A,
        reply: oneshot::Sender<A>,
    },
    /// A store operation; the reply is its outcome.
    Store {
        call: Box<StoreCall>,
        reply: Reply<chord::StoreEvent<A>>,
    },
    /// Listen to a key: each new record goes to `updates` until it closes.
    Listen {
        key: Hash,
        updates: mpsc::Sender<chord::store::Record>,
        reply: Reply<()>,
    },
}

/// The store operations `SwarmPeer` offers (see `chord::LocalNode::put`).
pub(crate) enum StoreCall {
    Put {
        key: Hash,
        value: Vec<u8>,
        ttl_s: u32,
    },
    PutSigned {
        record: chord::store::Record,
        cas: Option<u64>,
    },
    Get {
        key: Hash,
    },
    Announce {
        topic: Vec<u8>,
        ttl_s: u32,
    },
    Find {
        topic: Vec<u8>,
    },
}

/// The routing state and counters at one moment.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot<A> {
    pub peers: Vec<NodeRef<A>>,
    pub fingers: Vec<NodeRef<A>>,
    pub successor: Option<NodeRef<A>>,
    pub predecessor: Option<NodeRef<A>>,
    pub stats: chord::Stats,
    /// The path to each of `peers`, in the same order.
    pub paths: Vec<chord::Path>,
    /// The seal's counters, in a keyed swarm.
    pub secure: Option<SecureStats>,
}

/// An application message for `recv`.
pub(crate) struct Incoming<A> {
    pub from: NodeRef<A>,
    pub data: Bytes,
}

/// Counters the driver keeps beside the core's.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub hooks_dropped: Arc<AtomicU64>,
    pub link_errors: AtomicU64,
    pub received: AtomicU64,
    /// Calls to the link's send (one per datagram, or one per run).
    pub link_sends: AtomicU64,
    /// Datagrams the link could not take on a thread where it cannot wait
    /// (see `State::parked`), left to the background task.
    pub link_parked: AtomicU64,
    /// Turns of the background task's wait (see `PeerStats::driver_wakeups`).
    pub driver_wakeups: AtomicU64,
    /// Calls of the application under way (see [`Call`]): whether a call
    /// runs on the caller's task (see [`DIRECT_SENDS`]).
    pub calls: AtomicUsize,
    /// How the application's sends and lookups ended (for metrics).
    pub outcomes: Outcomes,
}

/// One application call under way, counted in [`Counters::calls`] until
/// it is dropped (returned or cancelled).
pub(crate) struct Call<'a>(&'a Counters);

impl<'a> Call<'a> {
    /// Counts a call; true in the second place when it is one of at most
    /// [`DIRECT_SENDS`] under way.
    pub(crate) fn start(counters: &'a Counters) -> (Self, bool) {
        let before = counters.calls.fetch_add(1, Ordering::Relaxed);
        (Call(counters), before < DIRECT_SENDS)
    }

    /// Whether at most [`DIRECT_SENDS`] calls are under way (this one
    /// among them).
    pub(crate) fn lone(counters: &Counters) -> bool {
        counters.calls.load(Ordering::Relaxed) <= DIRECT_SENDS
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Who sends the datagrams a call made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Nothing to send, or the background task sends it.
    No,
    /// The caller sends them, unless someone else is sending already (who
    /// then takes them too).
    Try,
    /// The core holds more than the send queue allows: the caller waits
    /// for the flush role and sends (back-pressure).
    Wait,
}

/// The peer's side of the driver, as [`crate::SwarmPeer`] sees it.
pub(crate) trait Handle<A>: Send + Sync {
    /// Hands the core `c` on the caller's task and delivers the events
    /// that follow; says who sends the datagrams it made. After
    /// [`close`](Self::close), `c` is dropped (its reply says `Closed`).
    /// Under load (`lone` false: more than [`DIRECT_SENDS`] calls under
    /// way) `c` comes back: [`Shared::call`] hands it to the background
    /// task through the command queue instead.
    fn submit(&self, c: Command<A>, lone: bool) -> Result<Flush, Command<A>>;
    /// Hands the core an unconfirmed datagram
    /// ([`chord::LocalNode::send_datagram`]); says who sends it.
    fn datagram(&self, target: chord::Target, payload: &[u8]) -> Result<Flush, Error>;
    /// Makes the task of `cx` the one task that receives from the link
    /// ([`Link::claim_receive`]), until
    /// [`release_receive`](Self::release_receive); false when another
    /// caller is, or the link keeps receiving to the background task. A reply that comes back to a lone call is then received
    /// and handed to the core on the caller's task, and wakes no other.
    /// Taken before the call's datagrams leave, so that a quick reply
    /// finds it taken.
    fn claim_receive(&self, cx: &mut std::task::Context<'_>) -> bool;
    /// Gives up [`claim_receive`](Self::claim_receive)'s claim: the
    /// background task receives again.
    fn release_receive(&self);
    /// With the claim: waits for one datagram from the link and hands it
    /// to the core, or returns without one when a reply was completed
    /// elsewhere (a timeout on the background task, another call's
    /// events, closing). The claimant polls its reply with `try_recv`
    /// between two of these, never registering on it: completing its own
    /// reply on its own task must not wake it (tokio reschedules a task
    /// that wakes itself, and on a multi-thread runtime wakes another
    /// worker to take it: a thread wake-up per round trip).
    fn receive_claimed(&self) -> impl Future<Output = ()> + Send + '_;
    /// Stops the peer: every waiting call gets `Closed`, the background
    /// task ends on its next wake-up (which this causes).
    fn close(&self);
    /// Whether [`close`](Self::close) has run.
    fn is_closed(&self) -> bool;
}

/// Everything the lock guards: the core and what waits on it.
struct State<L: Link> {
    /// The peer's one state machine: its Chord node and, keyed, its seal.
    stack: Stack<L::Addr>,
    cfg: PeerConfig,
    seed: u64,
    inbox: mpsc::Sender<Incoming<L::Addr>>,
    hooks: HookQueue<L::Addr>,
    counters: Arc<Counters>,
    join_reply: Option<Reply<NodeRef<L::Addr>>>,
    lookups: FxHashMap<LookupId, Reply<Reached<L::Addr>>>,
    sends: FxHashMap<chord::MessageId, Reply<Reached<L::Addr>>>,
    leave_replies: Vec<oneshot::Sender<()>>,
    /// Whom `new_peer` was called for.
    new_peers: NewPeers,
    /// This peer's identity and where others see it.
    view: Arc<SelfView<L::Addr>>,
    /// The peer the join under way goes through.
    bootstrap: Option<L::Addr>,
    /// Callers of `observe` waiting for the answer of a peer.
    observers: Vec<(L::Addr, oneshot::Sender<L::Addr>)>,
    /// Callers waiting for a store operation's outcome.
    store_ops: FxHashMap<chord::StoreOp, Reply<chord::StoreEvent<L::Addr>>>,
    /// Listens under way, each with the queue of its listener.
    listens: FxHashMap<chord::StoreOp, mpsc::Sender<chord::store::Record>>,
    /// The deadline the background task sleeps until (`None` while it is
    /// awake and will read the core's next one anyway): a call that makes
    /// an earlier one wakes it.
    armed: Option<Instant>,
    /// Datagrams a link could not take on a thread where it cannot wait
    /// for room (an Ouroboros reader thread finding a flow's ring full),
    /// in order: the next flush sends them before the core's, and the
    /// background task, which can wait, is woken for them.
    parked: VecDeque<Transmit<L::Addr>>,
    /// See [`Shared::kick`].
    kick: Arc<Kick>,
}

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

/// The claimant's wake-up for replies completed elsewhere (see
/// [`Handle::receive_claimed`]).
#[derive(Debug, Default)]
struct Kick {
    /// Whether a caller holds the claim: without one a completed reply
    /// (every confirmation under load) costs a load, not a lock.
    claimed: AtomicBool,
    state: Mutex<KickState>,
}

#[derive(Debug, Default)]
struct KickState {
    /// The claimant's task, while it waits.
    waker: Option<Waker>,
    /// A reply was completed since the claimant last looked.
    kicked: bool,
}

impl Kick {
    /// Says a reply was completed, waking the claimant if one waits.
    fn kick(&self) {
        // The claim is taken before the claimant's command reaches the
        // core (under the state lock, as this runs), so its reply always
        // finds it set.
        if !self.claimed.load(Ordering::SeqCst) {
            return;
        }
        let mut k = lock(&self.state);
        k.kicked = true;
        if let Some(w) = &k.waker {
            w.wake_by_ref();
        }
    }

    /// The claimant's look: whether it was kicked since the last one
    /// (clearing it); otherwise `waker` is woken by the next kick.
    fn take(&self, waker: &Waker) -> bool {
        let mut k = lock(&self.state);
        if std::mem::take(&mut k.kicked) {
            return true;
        }
        if !k.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            k.waker = Some(waker.clone());
        }
        false
    }

    /// A claim is taken: replies completed from now on are told.
    fn arm(&self) {
        self.claimed.store(true, Ordering::SeqCst);
    }

    /// The claim is given up: no task to wake.
    fn clear(&self) {
        self.claimed.store(false, Ordering::SeqCst);
        let mut k = lock(&self.state);
        k.waker = None;
        k.kicked = false;
    }
}

thread_local! {
    /// True while the claimant hands a datagram it received to the core:
    /// replies completed then need no [`Kick`] (the claimant looks at its
    /// own right after).
    static CLAIMANT_HANDLING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`CLAIMANT_HANDLING`] set for as long as it lives (reset even if the
/// handling panics).
struct ClaimantHandling;

impl ClaimantHandling {
    fn enter() -> Self {
        CLAIMANT_HANDLING.with(|h| h.set(true));
        ClaimantHandling
    }
}

impl Drop for ClaimantHandling {
    fn drop(&mut self) {
        CLAIMANT_HANDLING.with(|h| h.set(false));
    }
}

/// Receive buffers of callers that receive (see [`Handle::receive_claimed`])
/// and of background tasks draining a link that waits for readability
/// ([`Link::waits_readable`]), kept for the next one. One pool for the
/// whole process: a buffer kept per peer would add 64 KiB to every idle
/// peer.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Most receive buffers kept in [`SPARE`].
const SPARE_BUFFERS: usize = 8;

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

    /// Hands the stack an unconfirmed datagram and sends it as the flush
    /// role says (see [`call`](Self::call)).
    pub(crate) async fn send_unconfirmed(
        &self,
        target: chord::Target,
        payload: &[u8],
    ) -> Result<(), Error> {
        let how = self.datagram(target, payload)?;
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

    /// The background task: runs until the peer is closed. `queue` is the
    /// receiving end of the command queue [`Shared::new`] made.
    pub(crate) async fn run(self: Arc<Self>, mut queue: Queue<L::Addr>) {
        // A link that receives on a thread of its own runs the core there
        // (see [`Shared::deliver`]). The sink holds the driver weakly: the
        // link is the driver's, a strong reference would keep both alive.
        let weak = Arc::downgrade(&self);
        let sink: LinkSink<L::Addr> =
            Arc::new(move |batch: &mut Arrivals<L::Addr>| match weak.upgrade() {
                Some(driver) => driver.deliver(batch),
                None => batch.clear(),
            });
        let direct = self.link.deliver_to(sink);
        if direct {
            tracing::debug!("the link's thread hands datagrams to the core");
        }
        // A link that can wait for readability without a buffer drains
        // into one of the process's pooled buffers; otherwise the task
        // keeps one of its own, unless the link's thread hands everything
        // to the core (then this task receives nothing: no buffer, no
        // wait on the link).
        let pooled = self.link.waits_readable();
        let mut own = if pooled || direct {
            Vec::new()
        } else {
            vec![0u8; RECV_BUFFER]
        };
        // One timer, moved only when the core's next deadline moves (not
        // a new one registered on every wake-up).
        let sleep = tokio::time::sleep(IDLE_WAKE);
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            self.flush_now(Flush::Try).await;
            let wake = self.with(|st| {
                // What the datagrams drained last turn caused, delivered
                // only now that their replies have left: waking a task
                // that waits in `recv` costs a system call, which a
                // confirmation should not wait behind.
                st.events();
                let wake = match st.stack.poll_timeout() {
                    Some(t) => t,
                    None => armed.unwrap_or_else(|| Instant::now() + IDLE_WAKE),
                };
                st.armed = Some(wake);
                wake
            });
            let Some(wake) = wake else { break };
            if armed != Some(wake) {
                sleep.as_mut().reset(wake.into());
                armed = Some(wake);
            }
            tokio::select! {
                // In this order, not a random one (tokio's default costs a
                // random number a turn): a due timer and a wake-up first,
                // then commands, then datagrams; the drain below takes
                // both of the last two anyway, so neither starves.
                biased;
                _ = &mut sleep => {
                    // Fired: re-armed on the next turn, whatever the deadline.
                    armed = None;
                    self.with(|st| {
                        st.armed = None;
                        st.stack.handle_timeout(Instant::now());
                        st.events();
                    });
                }
                _ = self.wake.notified() => {}
                Some(c) = queue.recv() => {
                    self.with(|st| {
                        st.command(c);
                        st.events();
                    });
                }
                // The deadline is read again at the top of the loop.
                r = arrival(&self.link, &mut own, pooled), if !direct => {
                    if let Some(r) = r {
                        // Events wait for the top of the loop, after the
                        // flush, as for the datagrams drained below.
                        self.with(|st| st.handle(r, &own, &self.counters));
                    }
                }
            }
            self.counters.driver_wakeups.fetch_add(1, Ordering::Relaxed);
            // Whatever else has arrived already is taken now, before the
            // transmits go out: a burst costs one trip through the select
            // (and one timer registration), not one per datagram.
            // The lock is held over the whole drain (receives that do not
            // wait): one acquisition per burst, not one per datagram, which
            // on two worker threads the callers' sends would contend for.
            let mut spare = pooled.then(Spare::take);
            let buf = match spare.as_mut() {
                Some(s) => &mut s.buf,
                None => &mut own,
            };
            let mut g = lock(&self.state);
            if let Some(st) = g.as_mut() {
                // Up to DRAIN_BATCH datagrams (a run received whole may
                // pass it by less than one run) and DRAIN_BATCH commands.
                let (mut datagrams, mut commands) = (0, 0);
                loop {
                    let mut idle = true;
                    if datagrams < DRAIN_BATCH {
                        if let Some(r) = self.link.try_recv_run(buf) {
                            // Events wait for the top of the loop (see there).
                            datagrams += st.handle_run(r, buf, &self.counters);
                            idle = false;
                        }
                    }
                    if commands < DRAIN_BATCH {
                        if let Ok(c) = queue.try_recv() {
                            st.command(c);
                            st.events();
                            commands += 1;
                            idle = false;
                        }
                    }
                    if idle {
                        break;
                    }
                }
            }
        }
        tracing::debug!("driver stopped");
    }

    /// Hands datagrams the link's own thread received to the core, on that
    /// thread, sends what they made (unless someone holds the flush role:
    /// it sends ours too), and only then delivers the events they caused,
    /// so that a reply leaves before any task is woken here. A reply to a
    /// waiting call completes it from this thread. No other task is woken
    /// unless a deadline moved earlier or sends are left over.
    fn deliver(&self, batch: &mut Arrivals<L::Addr>) {
        let earlier = {
            let mut g = lock(&self.state);
            let Some(st) = g.as_mut() else {
                batch.clear();
                return;
            };
            // Read under the lock, so the core's time never goes backwards.
            let now = Instant::now();
            st.sync_room();
            batch.take_each(|p, from| st.stack.handle_datagram(now, from, p));
            st.deadline_moved_earlier()
        };
        if earlier {
            self.wake.notify_one();
        }
        complete(self.flush_now(Flush::Try));
        let left = self.with(|st| {
            st.events();
            st.stack.queued_transmits() > 0
        });
        if left == Some(true) {
            // An event's handling queued a datagram (none does today).
            self.wake.notify_one();
        }
    }

    /// Hands a received datagram to the core. Says whether that moved the
    /// core's next deadline before the one the background task sleeps
    /// until (a caller that received it must then wake the task), and
    /// whether datagrams wait to be sent.
    fn handle_received(&self, r: std::io::Result<(usize, L::Addr)>, buf: &[u8]) -> (bool, bool) {
        self.with(|st| {
            st.handle_and_deliver(r, buf, &self.counters);
            let queued = st.stack.queued_transmits() + st.parked.len() > 0;
            (st.deadline_moved_earlier(), queued)
        })
        .unwrap_or((false, false))
    }

    /// Sends what the core has queued: with the flush role, taken as `how`
    /// says, until the queue is empty or [`FLUSH_ROUNDS`] rounds are done
    /// (the background task is then woken to go on).
    async fn flush_now(&self, how: Flush) {
        match how {
            Flush::No => return,
            Flush::Wait => self.flushing.acquire().await,
            Flush::Try => {
                if !self.flushing.try_acquire() {
                    // The holder sends ours too: it stops only on an empty
                    // queue.
                    return;
                }
            }
        }
        let mut role = Role {
            role: &self.flushing,
            scratch: Some(std::mem::take(&mut *lock(&self.flushing.scratch))),
            wake: &self.wake,
        };
        for _ in 0..FLUSH_ROUNDS {
            let Some(Scratch { batch, .. }) = role.scratch.as_mut() else {
                return;
            };
            {
                let mut g = lock(&self.state);
                let Some(st) = g.as_mut() else {
                    role.give_up();
                    return;
                };
                let batching = self.batching();
                // Read under the lock, so the stack's time never goes
                // backwards between callers.
                let now = Instant::now();
                let mut taken = 0;
                while taken < FLUSH_BATCH {
                    let Some(t) = st
                        .parked
                        .pop_front()
                        .or_else(|| st.stack.poll_transmit(now, batching))
                    else {
                        break;
                    };
                    taken += t.segments();
                    batch.push(t);
                }
                st.sent_hooks();
                if st.deadline_moved_earlier() {
                    // The seal started a handshake, whose retry is due
                    // before the background task's wake-up.
                    self.wake.notify_one();
                }
                if batch.is_empty() {
                    // Given up while the state is still locked: whoever
                    // queues a datagram after this finds the role free.
                    role.give_up();
                    return;
                }
            }
            let Some(Scratch { batch }) = role.scratch.as_mut() else {
                return;
            };
            if self.send_batch(batch).await {
                // Parked: `role`, dropped, wakes the background task.
                return;
            }
        }
        // More is queued: `role` wakes the background task as it goes.
    }

    /// Sends `batch`, runs the stack gathered per destination and size
    /// ([`Stack::poll_transmit`]): a run of several in one call
    /// ([`Link::send_segments`]), a lone datagram with [`Link::send_to`].
    ///
    /// True when the link said [`WouldBlock`](std::io::ErrorKind::WouldBlock)
    /// (it cannot wait for room on this thread): that run and the rest of
    /// `batch` are parked for the background task, and the caller stops.
    async fn send_batch(&self, batch: &mut Vec<Transmit<L::Addr>>) -> bool {
        let mut it = batch.drain(..);
        while let Some(t) = it.next() {
            let result = if t.segments() > 1 {
                self.link
                    .send_segments(&t.bytes, t.segment_size, &t.to)
                    .await
            } else {
                self.link.send_to(&t.bytes, &t.to).await
            };
            if matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                let rest: Vec<_> = std::iter::once(t).chain(it.by_ref()).collect();
                let datagrams: usize = rest.iter().map(Transmit::segments).sum();
                self.counters
                    .link_parked
                    .fetch_add(datagrams as u64, Ordering::Relaxed);
                self.park(rest);
                return true;
            }
            self.sent(result, &t.to);
        }
        false
    }

    /// What the stack's runs may be: as many datagrams as the link sends
    /// in one call, each no larger than a segmented UDP send carries.
    fn batching(&self) -> Batching {
        Batching {
            max_segments: self.link.max_segments(),
            max_segment_size: crate::link::GSO_SEGMENT_MAX,
        }
    }

    /// Puts `rest` (in order) before whatever waits in `parked`.
    fn park(&self, rest: Vec<Transmit<L::Addr>>) {
        let mut g = lock(&self.state);
        if let Some(st) = g.as_mut() {
            for t in rest.into_iter().rev() {
                st.parked.push_front(t);
            }
        }
    }

    fn sent(&self, result: std::io::Result<()>, to: &L::Addr) {
        self.counters.link_sends.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            self.counters.link_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%to, error = %e, "send error");
            if unreachable(&e) {
                self.unreachable(to);
            }
        }
    }

    /// A link said `to` cannot be reached: the stack fails it at once
    /// (see [`Stack::handle_unreachable`]); what that changes is
    /// delivered now, and the background task sends what it made.
    fn unreachable(&self, to: &L::Addr) {
        let made = self.with(|st| {
            st.stack.handle_unreachable(Instant::now(), to);
            st.events();
            st.stack.queued_transmits() > 0 || st.deadline_moved_earlier()
        });
        if made == Some(true) {
            self.wake.notify_one();
        }
    }
}

/// A caller's claim to receive from the link ([`Handle::claim_receive`]),
/// given up when dropped: the call returned, stopped being lone, or was
/// cancelled.
struct Claimed<'a, L: Link>(&'a Shared<L>);

impl<L: Link> Drop for Claimed<'_, L> {
    fn drop(&mut self) {
        self.0.release_receive();
    }
}

/// The flush role: at most one holder at a time sends what the core has
/// queued. An atomic flag rather than an async mutex: taking and giving it
/// up is on the path of every lone call, and a caller that only tries
/// ([`Flush::Try`]) should pay a compare-and-swap for it, not the mutex's
/// waiter bookkeeping.
struct FlushRole<A> {
    held: AtomicBool,
    /// Callers waiting for the role ([`Flush::Wait`]), woken through `free`.
    waiters: AtomicUsize,
    free: Notify,
    /// The holder's buffers, kept here between holders to reuse their
    /// allocations; only a holder takes them.
    scratch: Mutex<Scratch<A>>,
}

/// Buffers of a holder of the flush role.
struct Scratch<A> {
    /// Runs taken from the stack for one round.
    batch: Vec<Transmit<A>>,
}

impl<A> Default for Scratch<A> {
    fn default() -> Self {
        Scratch { batch: Vec::new() }
    }
}

impl<A> Default for FlushRole<A> {
    fn default() -> Self {
        FlushRole {
            held: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            free: Notify::new(),
            scratch: Mutex::new(Scratch::default()),
        }
    }
}

impl<A> FlushRole<A> {
    /// Takes the role if it is free.
    fn try_acquire(&self) -> bool {
        !self.held.swap(true, Ordering::SeqCst)
    }

    /// Takes the role, waiting until it is free. Cancel-safe: dropped while
    /// waiting, it holds nothing and leaves no waiter counted.
    async fn acquire(&self) {
        loop {
            if self.try_acquire() {
                return;
            }
            let _waiting = Waiting::count(&self.waiters);
            let free = self.free.notified();
            tokio::pin!(free);
            free.as_mut().enable();
            // Sequentially consistent with `release`: either this sees the
            // role given up, or the releaser sees this waiter and notifies.
            if self.try_acquire() {
                return;
            }
            free.await;
        }
    }

    /// Gives the role up, waking one waiter.
    fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.free.notify_one();
        }
    }
}

/// One caller counted in [`FlushRole::waiters`] while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        Waiting(waiters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The flush role while held; let go of it by [`give_up`](Self::give_up)
/// with the queue seen empty, or by dropping it (the queue may not be
/// empty: the background task is woken to send the rest). Dropping covers
/// a caller whose call was cancelled in the middle of sending.
struct Role<'a, A> {
    role: &'a FlushRole<A>,
    /// The holder's buffers, `None` once given up.
    scratch: Option<Scratch<A>>,
    wake: &'a Notify,
}

impl<A> Role<'_, A> {
    /// Puts the buffers back (emptied) and gives the role up.
    fn give_up(&mut self) {
        if let Some(mut scratch) = self.scratch.take() {
            // Cancelled with runs taken: they are lost, as datagrams on
            // the network may be (the core retries what needs it).
            scratch.batch.clear();
            *lock(&self.role.scratch) = scratch;
            self.role.release();
        }
    }
}

impl<A> Drop for Role<'_, A> {
    fn drop(&mut self) {
        if self.scratch.is_some() {
            self.give_up();
            self.wake.notify_one();
        }
    }
}

/// A receive buffer taken from [`SPARE`], put back when dropped.
struct Spare {
    buf: Vec<u8>,
}

impl Spare {
    /// A buffer for the largest datagram, from the pool if it has one.
    fn take() -> Spare {
        let mut buf = lock(&SPARE).pop().unwrap_or_default();
        if buf.len() < RECV_BUFFER {
            buf.resize(RECV_BUFFER, 0);
        }
        Spare { buf }
    }
}

/// Whether a send's error says the destination cannot be reached (an
/// Ouroboros flow that could not be allocated or went down, a network
/// that refused), rather than that this one datagram was lost.
fn unreachable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        NotConnected | ConnectionRefused | ConnectionReset | HostUnreachable | NetworkUnreachable
    )
}

/// Polls `f` to completion on a thread outside the runtime, for a future
/// that never waits but for an immediate yield (see [`Link::deliver_to`]):
/// the flush a link's own thread runs with [`Flush::Try`].
fn complete<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// What the background task waits for on the link: a datagram received
/// into `own`, or (`pooled`) only the news that one can be taken, with
/// `None`.
async fn arrival<L: Link>(
    link: &L,
    own: &mut [u8],
    pooled: bool,
) -> Option<std::io::Result<(usize, L::Addr)>> {
    if pooled {
        link.readable().await.err().map(Err)
    } else {
        Some(link.recv_from(own).await)
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        let mut pool = lock(&SPARE);
        if pool.len() < SPARE_BUFFERS {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

impl<L: Link> Handle<L::Addr> for Shared<L> {
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

    fn datagram(&self, target: chord::Target, payload: &[u8]) -> Result<Flush, Error> {
        let mut g = lock(&self.state);
        let Some(st) = g.as_mut() else {
            return Err(Error::Closed);
        };
        st.stack.send_datagram(target, payload, Instant::now())?;
        Ok(self.after_call(g))
    }

    fn claim_receive(&self, cx: &mut std::task::Context<'_>) -> bool {
        let claimed = self.link.claim_receive(cx);
        if claimed {
            self.kick.arm();
        }
        claimed
    }

    fn release_receive(&self) {
        self.kick.clear();
        self.link.release_receive();
    }

    async fn receive_claimed(&self) {
        let mut buf = Spare::take();
        // Cancel-safe: a datagram is received whole or not at all, and
        // handled before the next wait.
        let received = std::future::poll_fn(|cx| {
            if self.kick.take(cx.waker()) {
                return Poll::Ready(None);
            }
            self.link.poll_recv_claimed(cx, &mut buf.buf).map(Some)
        })
        .await;
        let Some(r) = received else {
            return; // a reply was completed elsewhere
        };
        let (earlier, queued) = {
            let _handling = ClaimantHandling::enter();
            self.handle_received(r, &buf.buf)
        };
        if earlier || self.link.holds_received() {
            // A timer due before the background task's, or the rest of
            // a run for it to take.
            self.wake.notify_one();
        }
        if queued {
            self.flush_now(Flush::Try).await;
        }
    }

    fn close(&self) {
        // Dropping the state drops every waiting reply (`Closed`), the
        // receive queue's sender and the hook queue.
        let state = lock(&self.state).take();
        drop(state);
        self.wake.notify_one();
        // A claimant's reply was dropped with the state: it must look.
        self.kick.kick();
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).is_none()
    }
}

impl<L: Link> State<L> {
    /// Whether the core's next deadline lies before the one the background
    /// task sleeps until (which must then be woken to sleep less).
    fn deadline_moved_earlier(&self) -> bool {
        match (self.stack.poll_timeout(), self.armed) {
            (Some(t), Some(armed)) => t < armed,
            _ => false,
        }
    }

    /// A fresh core for `me`, requiring ids to derive from addresses where
    /// the link says how.
    fn node(
        cfg: &PeerConfig,
        me: NodeRef<L::Addr>,
        seed: u64,
        now: Instant,
    ) -> Result<LocalNode<L::Addr>, Error> {
        let node = LocalNode::new(cfg.chord.clone(), me, seed, now)?;
        Ok(match L::identity() {
            Some(derive) => node.with_identity(derive),
            None => node,
        })
    }

    fn command(&mut self, c: Command<L::Addr>) {
        // Read under the lock, so the core's time never goes backwards.
        let now = Instant::now();
        match c {
            Command::Join { bootstrap, reply } => {
                if !self.stack.node().peers().is_empty() || self.join_reply.is_some() {
                    let _ = reply.send(Err(Error::AlreadyConnected));
                    return;
                }
                // The alone ring made at bind is replaced by a joining node.
                match Self::node(
                    &self.cfg,
                    self.stack.node().me().clone(),
                    self.seed ^ 0x9e37_79b9_7f4a_7c15,
                    now,
                ) {
                    Ok(mut n) => {
                        if self.stack.node().is_provisional() {
                            n.set_provisional();
                        }
                        self.stack.reset_node(n);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
                self.bootstrap = Some(bootstrap.clone());
                self.stack.join(bootstrap, now);
                self.join_reply = Some(reply);
            }
            Command::Send {
                target,
                payload,
                duplicates,
                reply,
            } => match self.stack.send(target, payload, duplicates, now) {
                Ok(id) => {
                    self.sends.insert(id, reply);
                }
                Err(e) => {
                    self.counters.outcomes.send_failed(&e);
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Broadcast { payload, reply } => {
                // Accepted is all a broadcast promises: it has no single
                // destination to confirm.
                let r = self.stack.broadcast(payload, now);
                let _ = reply.send(r.map(|_| ()).map_err(Error::from));
            }
            Command::Store { call, reply } => {
                if !self.stack.node().is_joined() {
                    let _ = reply.send(Err(Error::NotJoined));
                    return;
                }
                let op = match *call {
                    StoreCall::Put { key, value, ttl_s } => self.stack.put(key, value, ttl_s, now),
                    StoreCall::PutSigned { record, cas } => self.stack.put_signed(record, cas, now),
                    StoreCall::Get { key } => self.stack.get(key, now),
                    StoreCall::Announce { topic, ttl_s } => self.stack.announce(&topic, ttl_s, now),
                    StoreCall::Find { topic } => self.stack.find(&topic, now),
                };
                self.store_ops.insert(op, reply);
            }
            Command::Listen {
                key,
                updates,
                reply,
            } => {
                if !self.stack.node().is_joined() {
                    let _ = reply.send(Err(Error::NotJoined));
                    return;
                }
                let op = self.stack.listen(key, now);
                self.listens.insert(op, updates);
                let _ = reply.send(Ok(()));
            }
            Command::Lookup { key, reply } => {
                if !self.stack.node().is_joined() {
                    let _ = reply.send(Err(Error::NotJoined));
                    return;
                }
                let id = self.stack.lookup(key, now);
                self.lookups.insert(id, reply);
            }
            Command::Snapshot { reply } => {
                let _ = reply.send(Snapshot {
                    peers: self.stack.node().peers().to_vec(),
                    fingers: self.stack.node().fingers().to_vec(),
                    successor: self.stack.node().successor().cloned(),
                    predecessor: self.stack.node().predecessor().cloned(),
                    stats: self.stack.node().stats().clone(),
                    secure: self.stack.seal_stats(),
                    paths: self
                        .stack
                        .node()
                        .peers()
                        .iter()
                        .map(|n| self.stack.node().path(&n.addr))
                        .collect(),
                });
            }
            Command::Leave { reply } => {
                if self.stack.node().is_joined() {
                    self.leave_replies.push(reply);
                    self.stack.leave(now);
                } else {
                    let _ = reply.send(());
                }
            }
            Command::Observe { to, reply } => {
                // Callers that gave up waiting are forgotten here.
                self.observers.retain(|(_, r)| !r.is_closed());
                self.observers.push((to.clone(), reply));
                self.stack.observe(to, now);
            }
        }
    }

    /// Hands a received datagram (or the link's error) to the core and
    /// delivers the events that follow.
    fn handle_and_deliver(
        &mut self,
        r: std::io::Result<(usize, L::Addr)>,
        buf: &[u8],
        counters: &Counters,
    ) {
        self.handle(r, buf, counters);
        self.events();
    }

    /// Hands a received datagram (or the link's error) to the core; the
    /// events that follow wait for the next [`events`](Self::events).
    fn handle(&mut self, r: std::io::Result<(usize, L::Addr)>, buf: &[u8], counters: &Counters) {
        match r {
            Ok((n, from)) => {
                self.sync_room();
                // The clock is read under the lock, so the core's time
                // never goes backwards between callers.
                self.stack.handle_datagram(Instant::now(), from, &buf[..n]);
            }
            Err(e) => {
                // Unconnected UDP sockets can report errors of earlier
                // sends here (ICMP unreachable on some systems): not fatal.
                counters.link_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "receive error");
            }
        }
    }

    /// Hands a received run ([`Link::try_recv_run`]) to the stack, which
    /// opens it in place when keyed; says how many datagrams it held.
    fn handle_run(
        &mut self,
        r: std::io::Result<(usize, usize, L::Addr)>,
        buf: &mut [u8],
        counters: &Counters,
    ) -> usize {
        match r {
            Ok((len, stride, from)) => {
                self.sync_room();
                // Under the lock, as in `handle`.
                self.stack
                    .handle_run(Instant::now(), from, buf, len, stride)
            }
            Err(e) => {
                self.handle(Err(e), buf, counters);
                1
            }
        }
    }

    /// Delivers every event the core has reported. A batch delivered away
    /// from the claimant's own handling may have completed its reply,
    /// which it does not wait on (see `Handle::receive_claimed`): it is
    /// told to look (a spurious look costs it one turn of its loop).
    fn events(&mut self) {
        let mut any = false;
        while let Some(e) = self.stack.poll_event() {
            self.event(e);
            any = true;
        }
        if any && !CLAIMANT_HANDLING.with(|h| h.get()) {
            self.kick.kick();
        }
        self.sync_room();
    }

    /// The `send` hook's calls for what the node sent (the stack keeps
    /// copies only when the hook is set).
    fn sent_hooks(&mut self) {
        while let Some(t) = self.stack.poll_sent() {
            let id = Hash::of(t.to.to_string());
            self.hooks.sent(NodeRef::new(id, t.to), t.bytes);
        }
    }

    fn event(&mut self, e: Event<L::Addr>) {
        match e {
            Event::Joined { successor } => {
                tracing::debug!(id = %self.stack.node().id().short(), successor = %successor.addr, "joined");
                // Where the bootstrap and the successor see this peer:
                // whether it is behind a NAT, and how that NAT maps.
                let now = Instant::now();
                if let Some(b) = self.bootstrap.take() {
                    if self.view.observations().iter().all(|(by, _)| *by != b) {
                        self.stack.observe(b.clone(), now);
                    }
                    if successor.addr != b && successor.id != self.stack.node().id() {
                        self.stack.observe(successor.addr.clone(), now);
                    }
                }
                if let Some(r) = self.join_reply.take() {
                    let _ = r.send(Ok(successor));
                }
            }
            Event::Observed { by, seen } => {
                // Recorded first: a caller woken by the answer sees it in
                // the NAT status.
                self.view.observed(by.clone(), seen.clone());
                if let Some(reach) = self.view.reach() {
                    self.stack.set_reach(reach);
                }
                let (answered, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.observers)
                    .into_iter()
                    .partition(|(to, _)| *to == by);
                self.observers = waiting;
                for (_, reply) in answered {
                    let _ = reply.send(seen.clone());
                }
            }
            Event::AddressLearned { me } => {
                tracing::info!(addr = %me.addr, id = %me.id.short(), "learned this peer's address");
                self.view.set_me(me);
            }
            Event::JoinFailed { reason } => {
                tracing::debug!(%reason, "join failed");
                if let Some(r) = self.join_reply.take() {
                    let _ = r.send(Err(reason.into()));
                }
                // Back to being the first member of a swarm of one.
                self.stack.create(Instant::now());
            }
            Event::LookupDone {
                id, owner, hops, ..
            } => {
                if let Some(r) = self.lookups.remove(&id) {
                    self.counters.outcomes.lookup_hops.observe(f64::from(hops));
                    let _ = r.send(Ok((owner, hops)));
                }
            }
            Event::LookupFailed { id, key } => {
                if let Some(r) = self.lookups.remove(&id) {
                    self.counters
                        .outcomes
                        .lookups_failed
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = r.send(Err(Error::LookupFailed(key)));
                }
            }
            Event::PeerAdded(peer) => {
                if self.new_peers.added(peer.id) {
                    self.hooks.new_peer(peer);
                }
            }
            Event::PeerRemoved(peer) => self.new_peers.removed(peer.id),
            Event::Left => {
                for r in self.leave_replies.drain(..) {
                    let _ = r.send(());
                }
            }
            Event::Delivered { id, to, hops } => {
                if let Some(r) = self.sends.remove(&id) {
                    self.counters
                        .outcomes
                        .sends_confirmed
                        .fetch_add(1, Ordering::Relaxed);
                    let _ = r.send(Ok((to, hops)));
                }
            }
            Event::SendFailed { id, reason } => {
                if let Some(r) = self.sends.remove(&id) {
                    self.counters.outcomes.send_failed(&reason);
                    let _ = r.send(Err(reason.into()));
                }
            }
            Event::Received { from, payload, .. } => self.received(from, payload),
            Event::Store(e) => self.store_event(e),
        }
    }

    /// Routes a store outcome to its caller, a listened key's news to its
    /// listener (a listener that went away ends its listen).
    fn store_event(&mut self, e: chord::StoreEvent<L::Addr>) {
        use chord::StoreEvent;
        let op = match &e {
            StoreEvent::Update { op, record, .. } => {
                let gone = match self.listens.get(op) {
                    Some(tx) => matches!(
                        tx.try_send(record.clone()),
                        Err(mpsc::error::TrySendError::Closed(_))
                    ),
                    None => true,
                };
                if gone {
                    self.listens.remove(op);
                    self.stack.unlisten(*op);
                }
                return;
            }
            StoreEvent::Stored { op, .. }
            | StoreEvent::Got { op, .. }
            | StoreEvent::Peers { op, .. }
            | StoreEvent::Failed { op, .. } => *op,
        };
        if let Some(r) = self.store_ops.remove(&op) {
            let _ = r.send(Ok(e));
        } else if let Some(tx) = self.listens.remove(&op) {
            // A listen that failed for good: its queue closes.
            drop(tx);
        }
    }

    /// Hands a message to the application. The core delivered it only
    /// with room for it in both queues (see [`sync_room`](Self::sync_room)),
    /// so neither can be full.
    fn received(&mut self, from: NodeRef<L::Addr>, data: Bytes) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        if self.hooks.wants_recv() {
            self.hooks.received(from.clone(), data.clone());
        }
        if self.inbox.try_send(Incoming { from, data }).is_err() {
            // Only once the receiving side is gone (the peer is closing).
            tracing::debug!("receive queue closed: message dropped");
        }
    }

    /// Tells the core how many more messages the application can take:
    /// the free places of the receive queue, and of the `recv` hook's
    /// share of the hook queue when that hook is set. Both only grow
    /// between two calls (only this driver fills them), so the core never
    /// hands up a message there is no room for. Called before datagrams
    /// are handed to the core and after events are delivered.
    fn sync_room(&mut self) {
        let room = self.inbox.capacity().min(self.hooks.recv_room());
        self.stack.set_receive_room(room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holders of the flush role never overlap, every waiter gets it in
    /// the end, and a waiter cancelled while waiting leaves nothing behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_flush_role_has_one_holder_and_every_waiter_gets_it() {
        let role = Arc::new(FlushRole::<std::net::SocketAddr>::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for k in 0..6 {
            let (role, inside, taken) = (role.clone(), inside.clone(), taken.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..2_000 {
                    // Half the tasks only try, as a lone call does.
                    if k % 2 == 0 || i % 3 == 0 {
                        role.acquire().await;
                    } else if !role.try_acquire() {
                        continue;
                    }
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                    inside.fetch_sub(1, Ordering::SeqCst);
                    taken.fetch_add(1, Ordering::Relaxed);
                    role.release();
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("a waiter was never woken")
                .expect("a task panicked");
        }
        // Every waiting acquisition got the role: 3 tasks × 2,000, and a
        // third of the other tasks' turns.
        assert!(taken.load(Ordering::Relaxed) >= 3 * 2_000 + 3 * 667);

        // Cancelled while the role is held: no waiter stays counted, and
        // the role is free again once released.
        assert!(role.try_acquire());
        let waited = tokio::time::timeout(Duration::from_millis(20), role.acquire()).await;
        assert!(waited.is_err(), "acquired a held role");
        assert_eq!(role.waiters.load(Ordering::SeqCst), 0);
        role.release();
        assert!(role.try_acquire());
        role.release();
    }
}
