//! The DHT store's protocol on a node, pure protocol: the writer's and
//! reader's side (look the owner up, ask it, retry, read repair), the
//! owner's (ownership check, quotas, replication, subscriptions) and the
//! replicas' anti-entropy. The record table itself is `crate::store`.
//!
//! Replicas of a key: its owner and the first `replicas - 1` nodes of the
//! owner's successor list. Every node, once a period and at once when its
//! predecessor or its first successors change, compares digests of the
//! range it owns, `(predecessor, self]`, with each of those successors and
//! exchanges the records that differ, both ways. That one mechanism is
//! replication to a new replica, hand-off to a new owner (it pulls from
//! its successor), and re-replication after a failure (the new owner, or
//! the owner with a new successor, syncs at once).

use std::time::Instant;

use bytes::Bytes;
use rustc_hash::{FxHashMap, FxHashSet};

use super::{LocalNode, Phase, Purpose};
use crate::delivery::{Assembled, Reassembly};
use crate::event::{Event, StoreEvent, StoreOp};
use crate::hash::{Hash, Interval};
use crate::store::{self, Inserted, Kind, Record, Refused, Store, StoreStats};
use crate::wire::{self, Message, NodeRef, StoreFragment, StoreMessage};

use super::Address;

/// Body bytes of one store message before it is split in fragments.
const MAX_UNFRAGMENTED: usize = 1200;
/// Body bytes of records gathered in one `Replicate` or `Values`: one
/// largest value fits, with room for its signature.
const BATCH_BYTES: usize = store::MAX_VALUE + 1024;
/// Fragments of one store message at most.
const MAX_STORE_FRAGMENTS: u16 = ((BATCH_BYTES + 4096) / 1000 + 1) as u16;
/// Records a listener remembers having reported, per listen.
const LISTEN_SEEN: usize = 4096;
/// Puts an owner holds unacknowledged while their replicas confirm the
/// copies; past this, puts are refused with [`Refused::RateLimited`].
const MAX_PENDING_COPIES: usize = 4096;

/// Traffic classes counted in [`StoreStats`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Client requests and replies.
    Client,
    /// A put's copies to the replicas.
    Replication,
    /// Anti-entropy, hand-off, read repair.
    Repair,
}

#[derive(Clone, Debug)]
enum OpKind {
    Put { record: Record, cas: Option<u64> },
    Get,
    Find,
    Listen,
}

#[derive(Clone, Debug)]
enum OpState<A> {
    /// Looking the owner up.
    Lookup,
    /// Asked the owner; waiting since `at`.
    Asked { at: Instant },
    /// The owner held nothing: asked these replicas, waiting for answers.
    Replicas { owner: A, left: usize, at: Instant },
    /// A listen in place; renewed at `renew`.
    Listening { renew: Instant },
}

#[derive(Clone, Debug)]
struct Op<A> {
    key: Hash,
    kind: OpKind,
    deadline: Instant,
    state: OpState<A>,
    hops: u32,
    /// Listen only: (record identity, seq) already reported.
    seen: FxHashSet<(Hash, u64)>,
}

/// A subscription held by an owner.
#[derive(Clone, Debug)]
struct Listen<A> {
    key: Hash,
    to: A,
    source: Hash,
    txn: u64,
    until: Instant,
}

/// A put stored by the owner whose copies not every replica confirmed yet.
#[derive(Clone, Debug)]
struct PendingCopy<A> {
    /// The writer, and its put's id, to acknowledge.
    writer: A,
    writer_txn: u64,
    key: Hash,
    /// The record's identity (`Record::id`).
    record: Hash,
    /// Replicas that confirmed.
    confirmed: Vec<A>,
    /// When copies go again to those that did not.
    resend: Instant,
    /// Given up (the writer's own deadline has passed by then).
    deadline: Instant,
}

/// The store's state on one node; boxed, and made on first use, so that
/// a node that never stores costs one pointer.
#[derive(Clone, Debug)]
pub(super) struct StoreState<A> {
    pub(super) table: Store,
    ops: FxHashMap<u64, Op<A>>,
    /// Puts waiting for their replicas, by copy id.
    copies: FxHashMap<u64, PendingCopy<A>>,
    /// The copy id of a writer's put: (writer's source, its put id).
    copy_of: FxHashMap<(Hash, u64), u64>,
    listens: Vec<Listen<A>>,
    reassembly: Reassembly,
    next_sync: Option<Instant>,
    /// Predecessor and first successors at the last sync round.
    synced: Vec<Hash>,
    stats: StoreStats,
}

/// The source a request is charged to: the hash of its address's encoding.
fn source_of<A: Address>(a: &A) -> Hash {
    Hash::of(postcard::to_allocvec(a).unwrap_or_default())
}

impl<A: Address> LocalNode<A> {
    fn store_state(&mut self) -> &mut StoreState<A> {
        let cfg = self.cfg.store.clone();
        let max_bytes = self.cfg.reassembly_bytes;
        let age = self.cfg.store.request_timeout * 2;
        self.store.get_or_insert_with(|| {
            Box::new(StoreState {
                table: Store::new(cfg),
                ops: FxHashMap::default(),
                copies: FxHashMap::default(),
                copy_of: FxHashMap::default(),
                listens: Vec::new(),
                reassembly: Reassembly::new(max_bytes, age).with_max_fragments(MAX_STORE_FRAGMENTS),
                next_sync: None,
                synced: Vec::new(),
                stats: StoreStats::default(),
            })
        })
    }

    /// Stores `value` under `key` for `ttl_s` seconds (0: the default
    /// TTL). Reported by [`StoreEvent::Stored`] or [`StoreEvent::Failed`].
    /// The writer republishes to keep a value past its TTL.
    pub fn put(&mut self, key: Hash, value: Vec<u8>, ttl_s: u32, now: Instant) -> StoreOp {
        let record = Record {
            ttl_s,
            ..Record::immutable(key, value)
        };
        self.start_op(key, OpKind::Put { record, cas: None }, now)
    }

    /// Stores a signed mutable value: `record` as [`store::sign`] made it
    /// (with `ttl_s` set if wanted). With `cas`, the owner stores it only
    /// if the value it holds has sequence number `cas` (0: none held).
    /// Replicas verify the signature and refuse older sequence numbers.
    pub fn put_signed(&mut self, record: Record, cas: Option<u64>, now: Instant) -> StoreOp {
        self.start_op(record.key, OpKind::Put { record, cas }, now)
    }

    /// Reads the records of `key`: [`StoreEvent::Got`] (empty when the key
    /// holds nothing) or [`StoreEvent::Failed`].
    pub fn get(&mut self, key: Hash, now: Instant) -> StoreOp {
        self.start_op(key, OpKind::Get, now)
    }

    /// Listens to `key`: a [`StoreEvent::Update`] for each record it holds
    /// now and each new one, each reported once, until
    /// [`unlisten`](Self::unlisten). The subscription lives on the key's
    /// owner and is renewed every half `StoreConfig::listen_ttl`, which
    /// also moves it to a new owner.
    pub fn listen(&mut self, key: Hash, now: Instant) -> StoreOp {
        self.start_op(key, OpKind::Listen, now)
    }

    /// Stops a listen.
    pub fn unlisten(&mut self, op: StoreOp) {
        if let Some(s) = &mut self.store {
            s.ops.remove(&op.0);
        }
    }

    /// Announces this node under `topic` for `ttl_s` seconds (0: the
    /// default TTL): [`find`](Self::find) of the topic names it.
    pub fn announce(&mut self, topic: &[u8], ttl_s: u32, now: Instant) -> StoreOp {
        let key = store::topic_key(topic);
        let record = Record {
            key,
            kind: Kind::Peer,
            value: postcard::to_allocvec(&self.me).unwrap_or_default(),
            ttl_s,
            writer: Hash::ZERO,
        };
        self.start_op(key, OpKind::Put { record, cas: None }, now)
    }

    /// The peers that announced `topic`: [`StoreEvent::Peers`].
    pub fn find(&mut self, topic: &[u8], now: Instant) -> StoreOp {
        self.start_op(store::topic_key(topic), OpKind::Find, now)
    }

    /// The store's counters (zero until the node first stores).
    pub fn store_stats(&self) -> StoreStats {
        self.store.as_ref().map_or_else(StoreStats::default, |s| {
            let t = s.table.stats();
            StoreStats {
                stored: t.stored,
                refused: t.refused + s.stats.refused,
                refused_quota: t.refused_quota + s.stats.refused_quota,
                refused_signature: t.refused_signature,
                refused_stale: t.refused_stale,
                evicted: t.evicted,
                expired: t.expired,
                ..s.stats.clone()
            }
        })
    }

    /// Records held, and their bytes.
    pub fn store_len(&self) -> (usize, usize) {
        self.store
            .as_ref()
            .map_or((0, 0), |s| (s.table.len(), s.table.bytes()))
    }

    /// The keys this node holds records of (as owner or replica).
    pub fn stored_keys(&self) -> Vec<Hash> {
        self.store
            .as_ref()
            .map_or_else(Vec::new, |s| s.table.keys().copied().collect())
    }

    /// The records this node holds under `key` (as owner or replica).
    pub fn stored(&self, key: &Hash, now: Instant) -> Vec<Record> {
        self.store
            .as_ref()
            .map_or_else(Vec::new, |s| s.table.get(key, now))
    }

    fn start_op(&mut self, key: Hash, kind: OpKind, now: Instant) -> StoreOp {
        let deadline = now + self.cfg.store.op_timeout;
        let id = self.fresh_id(|n, id| n.store.as_ref().is_some_and(|s| s.ops.contains_key(&id)));
        self.store_state().ops.insert(
            id,
            Op {
                key,
                kind,
                deadline,
                state: OpState::Lookup,
                hops: 0,
                seen: FxHashSet::default(),
            },
        );
        self.op_lookup(id, now);
        StoreOp(id)
    }

    fn op_lookup(&mut self, id: u64, now: Instant) {
        let Some(key) = self
            .store
            .as_ref()
            .and_then(|s| s.ops.get(&id))
            .map(|o| o.key)
        else {
            return;
        };
        let lookup = self.start_lookup(key, Purpose::Store(id), now);
        if let Some(op) = self.store.as_mut().and_then(|s| s.ops.get_mut(&id)) {
            op.state = OpState::Lookup;
        }
        self.lookup_attempt(lookup, now);
    }

    /// The lookup of an operation's owner found it.
    pub(super) fn store_owner_found(
        &mut self,
        id: u64,
        owner: NodeRef<A>,
        hops: u32,
        now: Instant,
    ) {
        let Some(op) = self.store.as_mut().and_then(|s| s.ops.get_mut(&id)) else {
            return;
        };
        op.hops = hops;
        op.state = OpState::Asked { at: now };
        let key = op.key;
        let msg = match &op.kind {
            OpKind::Put { record, cas } => StoreMessage::Put {
                txn: id,
                record: record.clone(),
                cas: *cas,
            },
            OpKind::Get | OpKind::Find => StoreMessage::Get {
                txn: id,
                key,
                direct: false,
                listen: false,
            },
            OpKind::Listen => StoreMessage::Get {
                txn: id,
                key,
                direct: false,
                listen: true,
            },
        };
        self.store_send(owner.addr, &msg, Class::Client);
    }

    /// The lookup of an operation's owner failed: look again until the
    /// operation's deadline.
    pub(super) fn store_lookup_failed(&mut self, id: u64, now: Instant) {
        self.retry_op(id, now);
    }

    fn fail_op(&mut self, id: u64, refused: Option<Refused>) {
        if let Some(op) = self.store.as_mut().and_then(|s| s.ops.remove(&id)) {
            self.events.push_back(Event::Store(StoreEvent::Failed {
                op: StoreOp(id),
                key: op.key,
                refused,
            }));
        }
    }

    fn finish_op(&mut self, id: u64, event: StoreEvent<A>) {
        if let Some(s) = &mut self.store {
            s.ops.remove(&id);
        }
        self.events.push_back(Event::Store(event));
    }

    /// Sends a store message, in fragments if it is large.
    fn store_send(&mut self, to: A, msg: &StoreMessage<A>, class: Class) {
        let body = wire::encode_store_body(msg);
        let mut sent = 0;
        if body.len() <= MAX_UNFRAGMENTED {
            let mut out = Vec::with_capacity(wire::HEADER_LEN + body.len());
            out.extend_from_slice(&crate::config::MAGIC);
            out.push(crate::config::VERSION);
            out.push(17);
            out.extend_from_slice(&body);
            sent += out.len();
            self.push_transmit(to, out);
        } else {
            let id = self.rng_u64();
            let pieces: Vec<&[u8]> = body.chunks(MAX_UNFRAGMENTED).collect();
            let frags = pieces.len() as u16;
            for (i, p) in pieces.into_iter().enumerate() {
                let bytes = Message::<A>::StoreFragment(StoreFragment {
                    id,
                    frag: i as u16,
                    frags,
                    bytes: p.to_vec(),
                })
                .encode();
                sent += bytes.len();
                self.push_transmit(to.clone(), bytes);
            }
        }
        let s = self.store_state();
        match class {
            Class::Client => s.stats.client_bytes_out += sent as u64,
            Class::Replication => s.stats.replication_bytes_out += sent as u64,
            Class::Repair => s.stats.repair_bytes_out += sent as u64,
        }
    }

    /// Sends `records` in batches of at most [`BATCH_BYTES`].
    fn send_records(&mut self, to: &A, records: Vec<Record>, class: Class) {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for r in records {
            let size = r.size();
            if !batch.is_empty() && bytes + size > BATCH_BYTES {
                let msg = StoreMessage::Replicate {
                    records: std::mem::take(&mut batch),
                };
                self.store_send(to.clone(), &msg, class);
                bytes = 0;
            }
            bytes += size;
            batch.push(r);
        }
        if !batch.is_empty() {
            self.store_send(
                to.clone(),
                &StoreMessage::Replicate { records: batch },
                class,
            );
        }
    }

    /// A fragment of a store message.
    pub(super) fn on_store_fragment(&mut self, from: A, m: StoreFragment, now: Instant) {
        if self.phase != Phase::Joined {
            return;
        }
        let origin = source_of(&from);
        let s = self.store_state();
        match s
            .reassembly
            .add(origin, m.id, m.frag, m.frags, Bytes::from(m.bytes), now)
        {
            Assembled::Complete(body) => match wire::decode_store::<A>(&body) {
                Ok(msg) => self.on_store(from, msg, now),
                Err(_) => self.stats.dropped_malformed += 1,
            },
            Assembled::Incomplete => {}
            Assembled::Refused => self.stats.reassembly_refused += 1,
        }
    }

    /// The replicas of the keys this node owns, itself excluded.
    fn replica_set(&self) -> Vec<NodeRef<A>> {
        let r = self.cfg.store.replicas.saturating_sub(1);
        self.table
            .successors()
            .iter()
            .filter(|n| n.id != self.me.id)
            .take(r)
            .cloned()
            .collect()
    }

    /// The range this node owns, if it knows its predecessor.
    fn owned_range(&self) -> Option<Interval> {
        self.table
            .predecessor()
            .map(|p| Interval::open_closed(p.id, self.me.id))
    }

    /// A store message.
    pub(super) fn on_store(&mut self, from: A, m: StoreMessage<A>, now: Instant) {
        if self.phase != Phase::Joined {
            return;
        }
        match m {
            StoreMessage::Put { txn, record, cas } => self.on_put(from, txn, record, cas, now),
            StoreMessage::PutAck { txn, refused } => {
                let Some(op) = self.store.as_ref().and_then(|s| s.ops.get(&txn)) else {
                    return;
                };
                let key = op.key;
                match refused {
                    None => self.finish_op(
                        txn,
                        StoreEvent::Stored {
                            op: StoreOp(txn),
                            key,
                        },
                    ),
                    // A new owner between the lookup and the put: look again.
                    Some(Refused::NotOwner) => self.retry_op(txn, now),
                    Some(r) => self.fail_op(txn, Some(r)),
                }
            }
            StoreMessage::Get {
                txn,
                key,
                direct,
                listen,
            } => self.on_get(from, txn, key, direct, listen, now),
            StoreMessage::Values {
                txn,
                key,
                records,
                replicas,
                refused,
            } => self.on_values(from, txn, key, records, replicas, refused, now),
            StoreMessage::Replicate { records } => {
                for r in records {
                    let _ = self.hold(r, now);
                }
            }
            StoreMessage::Copy { txn, records } => {
                // Confirmed even where the table refused a record (its
                // quota): the replica answered, and holding is best effort
                // within its bounds.
                for r in records {
                    let _ = self.hold(r, now);
                }
                self.store_send(from, &StoreMessage::Copied { txn }, Class::Replication);
            }
            StoreMessage::Copied { txn } => self.on_copied(from, txn),
            StoreMessage::SyncDigest {
                txn,
                start,
                end,
                buckets,
            } => {
                let range = Interval::open_closed(start, end);
                let mine = self.store_state().table.bucket_digests(&range, now);
                let differ: Vec<u8> = (0..mine.len())
                    .filter(|i| buckets.get(*i) != Some(&mine[*i]))
                    .map(|i| i as u8)
                    .collect();
                if differ.is_empty() {
                    return;
                }
                let mut keys = self.store_state().table.key_digests(&range, &differ, now);
                // A range larger than any owner's (a confused or hostile
                // asker) gets the first keys only; later rounds go on.
                keys.truncate(wire::MAX_STORE_LIST);
                let msg = StoreMessage::SyncKeys {
                    txn,
                    start,
                    end,
                    buckets: differ,
                    keys,
                };
                self.store_send(from, &msg, Class::Repair);
            }
            StoreMessage::SyncKeys {
                start,
                end,
                buckets,
                keys,
                ..
            } => {
                let range = Interval::open_closed(start, end);
                let mine = self.store_state().table.key_digests(&range, &buckets, now);
                let theirs: FxHashMap<Hash, u64> = keys.iter().copied().collect();
                let ours: FxHashMap<Hash, u64> = mine.iter().copied().collect();
                let push: Vec<Record> = mine
                    .iter()
                    .filter(|(k, d)| theirs.get(k) != Some(d))
                    .flat_map(|(k, _)| self.stored(k, now))
                    .collect();
                let want: Vec<Hash> = keys
                    .iter()
                    .filter(|(k, d)| ours.get(k) != Some(d))
                    .map(|(k, _)| *k)
                    .collect();
                if !push.is_empty() {
                    self.send_records(&from, push, Class::Repair);
                }
                for chunk in want.chunks(wire::MAX_STORE_LIST) {
                    let msg = StoreMessage::Want {
                        keys: chunk.to_vec(),
                    };
                    self.store_send(from.clone(), &msg, Class::Repair);
                }
            }
            StoreMessage::Want { keys } => {
                let records: Vec<Record> = keys.iter().flat_map(|k| self.stored(k, now)).collect();
                if !records.is_empty() {
                    self.send_records(&from, records, Class::Repair);
                }
            }
        }
    }

    /// Stores a record as owner or replica; tells listeners of a new one.
    fn hold(&mut self, record: Record, now: Instant) -> Result<Inserted, Refused> {
        let key = record.key;
        let r = self.store_state().table.insert(record.clone(), None, now);
        if r == Ok(Inserted::New) {
            self.notify(key, &record, now);
        }
        r
    }

    fn on_put(&mut self, from: A, txn: u64, mut record: Record, cas: Option<u64>, now: Instant) {
        let source = source_of(&from);
        record.writer = source;
        let refused = if self.owns(&record.key) == Some(false) {
            Some(Refused::NotOwner)
        } else if record.kind == Kind::Peer
            && postcard::from_bytes::<NodeRef<A>>(&record.value).map_or(true, |n| n.addr != from)
        {
            Some(Refused::Forged)
        } else if let Some(&copy) = self.store_state().copy_of.get(&(source, txn)) {
            // The writer asked again while the replicas confirm: copy
            // again to those that have not.
            self.send_copies(copy, now);
            return;
        } else if !self.store_state().table.take_put_token(source, now) {
            Some(Refused::RateLimited)
        } else if self.store_state().copies.len() >= MAX_PENDING_COPIES {
            let s = self.store_state();
            s.stats.refused += 1;
            s.stats.refused_quota += 1;
            Some(Refused::RateLimited)
        } else {
            let key = record.key;
            match self.store_state().table.insert(record.clone(), cas, now) {
                Ok(inserted) => {
                    if inserted == Inserted::New {
                        self.notify(key, &record, now);
                    }
                    // Copies go to the replicas even for a refresh: one
                    // that missed the first copy gets it now. The writer
                    // hears once every replica holds the record.
                    if self.replica_set().is_empty() {
                        None
                    } else {
                        let copy = self.rng_u64();
                        let deadline = now + self.cfg.store.op_timeout;
                        let s = self.store_state();
                        s.copy_of.insert((source, txn), copy);
                        s.copies.insert(
                            copy,
                            PendingCopy {
                                writer: from,
                                writer_txn: txn,
                                key,
                                record: record.id(),
                                confirmed: Vec::new(),
                                resend: now,
                                deadline,
                            },
                        );
                        self.send_copies(copy, now);
                        return;
                    }
                }
                Err(e) => Some(e),
            }
        };
        self.store_send(from, &StoreMessage::PutAck { txn, refused }, Class::Client);
    }

    /// Sends a pending put's record to each replica that has not confirmed
    /// it, or acknowledges the put when none is left.
    fn send_copies(&mut self, copy: u64, now: Instant) {
        let replicas = self.replica_set();
        let resend = self.cfg.store.request_timeout / 4;
        let Some(p) = self.store.as_mut().and_then(|s| s.copies.get_mut(&copy)) else {
            return;
        };
        let waiting: Vec<A> = replicas
            .into_iter()
            .map(|n| n.addr)
            .filter(|a| !p.confirmed.contains(a))
            .collect();
        let first = p.confirmed.is_empty() && p.resend == now;
        p.resend = now + resend;
        let (key, id) = (p.key, p.record);
        let records: Vec<Record> = self
            .stored(&key, now)
            .into_iter()
            .filter(|r| r.id() == id)
            .collect();
        // Nothing left to copy (replaced by a newer version, or gone) is
        // as done as every replica confirming.
        if waiting.is_empty() || records.is_empty() {
            self.finish_copy(copy);
            return;
        }
        if !first {
            self.store_state().stats.copies_resent += waiting.len() as u64;
        }
        for to in waiting {
            let msg = StoreMessage::Copy {
                txn: copy,
                records: records.clone(),
            };
            self.store_send(to, &msg, Class::Replication);
        }
    }

    /// Acknowledges a put whose replicas all hold its record.
    fn finish_copy(&mut self, copy: u64) {
        let Some(s) = self.store.as_mut() else {
            return;
        };
        let Some(p) = s.copies.remove(&copy) else {
            return;
        };
        s.copy_of.remove(&(source_of(&p.writer), p.writer_txn));
        let msg = StoreMessage::PutAck {
            txn: p.writer_txn,
            refused: None,
        };
        self.store_send(p.writer, &msg, Class::Client);
    }

    /// A replica confirmed a copy.
    fn on_copied(&mut self, from: A, copy: u64) {
        let replicas = self.replica_set();
        let Some(p) = self.store.as_mut().and_then(|s| s.copies.get_mut(&copy)) else {
            return;
        };
        if !p.confirmed.contains(&from) {
            p.confirmed.push(from);
        }
        if replicas.iter().all(|n| p.confirmed.contains(&n.addr)) {
            self.finish_copy(copy);
        }
    }

    /// Resends copies not confirmed in time; gives up on those past their
    /// deadline.
    fn copies_tick(&mut self, now: Instant) {
        let Some(s) = &self.store else {
            return;
        };
        let mut due: Vec<(u64, bool)> = s
            .copies
            .iter()
            .filter(|(_, p)| p.resend <= now || p.deadline <= now)
            .map(|(id, p)| (*id, p.deadline <= now))
            .collect();
        due.sort_unstable();
        for (copy, expired) in due {
            if expired {
                let s = self.store_state();
                if let Some(p) = s.copies.remove(&copy) {
                    s.copy_of.remove(&(source_of(&p.writer), p.writer_txn));
                    s.stats.copies_abandoned += 1;
                }
            } else {
                self.send_copies(copy, now);
            }
        }
    }

    fn on_get(&mut self, from: A, txn: u64, key: Hash, direct: bool, listen: bool, now: Instant) {
        self.store_state().stats.gets_served += 1;
        if !direct && self.owns(&key) == Some(false) {
            let msg = StoreMessage::Values {
                txn,
                key,
                records: Vec::new(),
                replicas: Vec::new(),
                refused: Some(Refused::NotOwner),
            };
            self.store_send(from, &msg, Class::Client);
            return;
        }
        if listen {
            let source = source_of(&from);
            let until = now + self.cfg.store.listen_ttl;
            let (per_source, max) = (self.cfg.store.source_listens, self.cfg.store.max_listens);
            let s = self.store_state();
            s.listens.retain(|l| l.until > now);
            if let Some(l) = s
                .listens
                .iter_mut()
                .find(|l| l.key == key && l.to == from && l.txn == txn)
            {
                l.until = until;
            } else if s.listens.len() < max
                && s.listens.iter().filter(|l| l.source == source).count() < per_source
            {
                s.listens.push(Listen {
                    key,
                    to: from.clone(),
                    source,
                    txn,
                    until,
                });
            } else {
                s.stats.refused += 1;
                s.stats.refused_quota += 1;
                s.stats.listens_refused += 1;
                let msg = StoreMessage::Values {
                    txn,
                    key,
                    records: Vec::new(),
                    replicas: Vec::new(),
                    refused: Some(Refused::Quota),
                };
                self.store_send(from, &msg, Class::Client);
                return;
            }
        }
        let mut records = self.stored(&key, now);
        let mut size = 0;
        records.retain(|r| {
            size += r.size();
            size <= BATCH_BYTES
        });
        let replicas = if records.is_empty() && !direct {
            self.replica_set()
        } else {
            Vec::new()
        };
        let msg = StoreMessage::Values {
            txn,
            key,
            records,
            replicas,
            refused: None,
        };
        self.store_send(from, &msg, Class::Client);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_values(
        &mut self,
        from: A,
        txn: u64,
        key: Hash,
        records: Vec<Record>,
        replicas: Vec<NodeRef<A>>,
        refused: Option<Refused>,
        now: Instant,
    ) {
        // A notification of a listened key.
        if let Some(op) = self.store.as_mut().and_then(|s| s.ops.get_mut(&txn)) {
            if op.key != key {
                self.stats.dropped_unexpected += 1;
                return;
            }
            if matches!(op.kind, OpKind::Listen) {
                if let Some(r) = refused {
                    if r == Refused::NotOwner {
                        self.retry_op(txn, now);
                    } else {
                        self.fail_op(txn, Some(r));
                    }
                    return;
                }
                if matches!(op.state, OpState::Asked { .. }) {
                    op.state = OpState::Listening {
                        renew: now + self.cfg.store.listen_ttl / 2,
                    };
                }
                let mut updates = Vec::new();
                for r in records {
                    if r.validate().is_err() {
                        continue;
                    }
                    if op.seen.len() >= LISTEN_SEEN {
                        op.seen.clear();
                    }
                    if op.seen.insert((r.id(), r.seq())) {
                        updates.push(r);
                    }
                }
                for record in updates {
                    self.events.push_back(Event::Store(StoreEvent::Update {
                        op: StoreOp(txn),
                        key,
                        record,
                    }));
                }
                return;
            }
        } else {
            self.stats.dropped_unexpected += 1;
            return;
        }
        let Some(op) = self.store.as_mut().and_then(|s| s.ops.get_mut(&txn)) else {
            return;
        };
        let hops = op.hops;
        if refused == Some(Refused::NotOwner) {
            self.retry_op(txn, now);
            return;
        }
        let records: Vec<Record> = records
            .into_iter()
            .filter(|r| r.key == key && r.validate().is_ok())
            .collect();
        match op.state.clone() {
            OpState::Asked { .. } if records.is_empty() && !replicas.is_empty() => {
                let left = replicas.len();
                op.state = OpState::Replicas {
                    owner: from,
                    left,
                    at: now,
                };
                for n in replicas {
                    let msg = StoreMessage::Get {
                        txn,
                        key,
                        direct: true,
                        listen: false,
                    };
                    self.store_send(n.addr, &msg, Class::Client);
                }
            }
            OpState::Replicas { owner, left, .. } => {
                if records.is_empty() && left > 1 {
                    if let OpState::Replicas { left, .. } = &mut op.state {
                        *left -= 1;
                    }
                    return;
                }
                if !records.is_empty() {
                    // Read repair: the owner lacked what a replica held.
                    self.store_state().stats.read_repairs += 1;
                    self.send_records(&owner, records.clone(), Class::Repair);
                }
                self.complete_read(txn, key, records, hops);
            }
            OpState::Asked { .. } => self.complete_read(txn, key, records, hops),
            _ => {}
        }
    }

    fn complete_read(&mut self, txn: u64, key: Hash, records: Vec<Record>, hops: u32) {
        let find = self
            .store
            .as_ref()
            .and_then(|s| s.ops.get(&txn))
            .is_some_and(|o| matches!(o.kind, OpKind::Find));
        let op = StoreOp(txn);
        let event = if find {
            let peers = records
                .iter()
                .filter(|r| r.kind == Kind::Peer)
                .filter_map(|r| postcard::from_bytes::<NodeRef<A>>(&r.value).ok())
                .collect();
            StoreEvent::Peers {
                op,
                key,
                peers,
                hops,
            }
        } else {
            StoreEvent::Got {
                op,
                key,
                records,
                hops,
            }
        };
        self.finish_op(txn, event);
    }

    /// Looks the operation's owner up again, or fails the operation past
    /// its deadline.
    fn retry_op(&mut self, id: u64, now: Instant) {
        let Some(op) = self.store.as_ref().and_then(|s| s.ops.get(&id)) else {
            return;
        };
        if now >= op.deadline {
            self.fail_op(id, None);
        } else {
            self.op_lookup(id, now);
        }
    }

    /// Sends a new record to the listeners of its key.
    fn notify(&mut self, key: Hash, record: &Record, now: Instant) {
        let Some(s) = &self.store else {
            return;
        };
        let to: Vec<(A, u64)> = s
            .listens
            .iter()
            .filter(|l| l.key == key && l.until > now)
            .map(|l| (l.to.clone(), l.txn))
            .collect();
        for (addr, txn) in to {
            let msg = StoreMessage::Values {
                txn,
                key,
                records: vec![record.clone()],
                replicas: Vec::new(),
                refused: None,
            };
            self.store_state().stats.notifications_sent += 1;
            self.store_send(addr, &msg, Class::Client);
        }
    }

    /// Once a stabilize period: operations' retries, subscriptions'
    /// renewals, expiry, and anti-entropy when due or when the neighbours
    /// changed.
    pub(super) fn store_tick(&mut self, now: Instant) {
        let Some(s) = &mut self.store else {
            return;
        };
        let timeout = self.cfg.store.request_timeout;
        let mut retry = Vec::new();
        let mut fail = Vec::new();
        for (id, op) in &s.ops {
            match &op.state {
                OpState::Listening { renew } => {
                    if *renew <= now {
                        retry.push(*id);
                    }
                }
                OpState::Asked { at, .. } | OpState::Replicas { at, .. } => {
                    if now >= op.deadline {
                        fail.push(*id);
                    } else if *at + timeout <= now {
                        retry.push(*id);
                    }
                }
                OpState::Lookup => {}
            }
        }
        self.copies_tick(now);
        let mut ids: Vec<u64> = retry.iter().chain(&fail).copied().collect();
        ids.sort_unstable();
        for id in ids {
            if fail.contains(&id) {
                self.fail_op(id, None);
            } else {
                if let Some(op) = self.store.as_mut().and_then(|s| s.ops.get_mut(&id)) {
                    // A listen renewed gets a fresh deadline.
                    op.deadline = op.deadline.max(now + self.cfg.store.op_timeout);
                }
                self.op_lookup(id, now);
            }
        }
        let s = self.store_state();
        s.table.expire(now);
        s.listens.retain(|l| l.until > now);
        s.reassembly.expire(now);
        let mut neighbours: Vec<Hash> = self.replica_set().iter().map(|n| n.id).collect();
        neighbours.extend(self.table.predecessor().map(|p| p.id));
        let interval = self.cfg.store.sync_interval;
        let s = self.store_state();
        let due = s.next_sync.is_none_or(|t| t <= now) || s.synced != neighbours;
        if !due {
            return;
        }
        s.synced = neighbours;
        s.next_sync = Some(now + interval);
        self.sync_round(now);
    }

    /// Starts an anti-entropy round at once when the predecessor or the
    /// first successors changed since the last one (called after every
    /// datagram and timeout; a tick would be up to a period later, and the
    /// repair interval bounds what churn can lose).
    pub(super) fn store_neighbours_changed(&mut self, now: Instant) {
        let Some(s) = &self.store else {
            return;
        };
        let r = self.cfg.store.replicas.saturating_sub(1);
        let succ = self
            .table
            .successors()
            .iter()
            .filter(|n| n.id != self.me.id)
            .take(r)
            .map(|n| n.id);
        let pred = self.table.predecessor().map(|p| p.id);
        let same = succ.chain(pred).eq(s.synced.iter().copied());
        if !same && self.phase == Phase::Joined {
            let mut neighbours: Vec<Hash> = self.replica_set().iter().map(|n| n.id).collect();
            neighbours.extend(pred);
            let interval = self.cfg.store.sync_interval;
            let s = self.store_state();
            s.synced = neighbours;
            s.next_sync = Some(now + interval);
            self.sync_round(now);
        }
    }

    /// Compares digests of the owned range with each replica.
    fn sync_round(&mut self, now: Instant) {
        let Some(range) = self.owned_range() else {
            return;
        };
        let buckets = self.store_state().table.bucket_digests(&range, now);
        let txn = self.rng_u64();
        for n in self.replica_set() {
            let msg = StoreMessage::SyncDigest {
                txn,
                start: range.start,
                end: range.end,
                buckets: buckets.clone(),
            };
            self.store_state().stats.sync_rounds += 1;
            self.store_send(n.addr, &msg, Class::Repair);
        }
    }

    fn rng_u64(&mut self) -> u64 {
        use rand_core::RngCore;
        self.rng.next_u64()
    }

    /// Store operations that have not finished.
    pub fn store_ops(&self) -> usize {
        self.store.as_ref().map_or(0, |s| s.ops.len())
    }
}
