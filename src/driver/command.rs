//! Pure: the commands the API hands the driver, and their replies; no I/O.

use bytes::Bytes;
use chord::{Hash, NodeRef};
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::secure::SecureStats;

pub(super) type Reply<T> = oneshot::Sender<Result<T, Error>>;
/// The background task's end of the command queue.
pub(crate) type Queue<A> = mpsc::Receiver<Command<A>>;
/// Where a lookup or a send ended: the peer, and the hops it took.
pub(super) type Reached<A> = (NodeRef<A>, u32);

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
        /// Given up after this (at most the send timeout).
        timeout: Option<std::time::Duration>,
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
