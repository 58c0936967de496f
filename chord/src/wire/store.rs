//! Pure: the storage messages (kinds 17-18) and their limits.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{body, DecodeError, NodeRef};
use crate::hash::Hash;
use crate::store::{Record, Refused};

/// A storage message (kind 17): puts, gets, replication, anti-entropy and
/// subscriptions between nodes (see `docs/storage.md`). One larger than a
/// datagram travels in [`StoreFragment`]s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreMessage<A> {
    /// Writer to owner: store `record`; with `cas`, only if the signed
    /// record held has that sequence number (0: none). Answered by `PutAck`.
    Put {
        /// Request id, echoed.
        txn: u64,
        /// The record (its `writer` is set by the owner).
        record: Record,
        /// Compare-and-swap on the held sequence number.
        cas: Option<u64>,
    },
    /// Owner to writer: how the put went.
    PutAck {
        /// The put's id.
        txn: u64,
        /// `None`: stored by the owner and confirmed by each of its
        /// replicas; else why not.
        refused: Option<Refused>,
    },
    /// Reader to owner (or, `direct`, to a replica): the records of `key`.
    /// Answered by `Values`. With `listen`, also subscribes the sender to
    /// new records of the key (until `StoreConfig::listen_ttl`).
    Get {
        /// Request id, echoed.
        txn: u64,
        /// The key.
        key: Hash,
        /// Sent to a replica, not the owner: no ownership check.
        direct: bool,
        /// Subscribe too.
        listen: bool,
    },
    /// The records of a key; a notification of a listened key too.
    Values {
        /// The request's (or subscription's) id.
        txn: u64,
        /// The key.
        key: Hash,
        /// Its records (all of them, or the new one for a notification).
        records: Vec<Record>,
        /// An owner that holds nothing for the key names its replicas,
        /// for the reader to ask them.
        replicas: Vec<NodeRef<A>>,
        /// Why the request was not served (`NotOwner`), if it was not.
        refused: Option<Refused>,
    },
    /// Records for the receiver to hold as a replica (hand-off, repair,
    /// read repair). Not acknowledged: anti-entropy finds what was lost.
    Replicate {
        /// The records.
        records: Vec<Record>,
    },
    /// Anti-entropy, owner to replica: digests of the owner's range
    /// `(start, end]`, [`crate::store::DIGEST_BUCKETS`] buckets.
    SyncDigest {
        /// Request id, echoed.
        txn: u64,
        /// Range start (exclusive): the owner's predecessor.
        start: Hash,
        /// Range end (inclusive): the owner.
        end: Hash,
        /// One digest per bucket.
        buckets: Vec<u64>,
    },
    /// Anti-entropy, replica to owner: the buckets whose digests differ,
    /// and the replica's key digests in them.
    SyncKeys {
        /// The digest's id.
        txn: u64,
        /// Range start, as in the digest.
        start: Hash,
        /// Range end, as in the digest.
        end: Hash,
        /// Buckets that differ.
        buckets: Vec<u8>,
        /// The replica's keys in them, with their digests.
        keys: Vec<(Hash, u64)>,
    },
    /// "Send me your records of these keys" (answered by `Replicate`).
    Want {
        /// The keys.
        keys: Vec<Hash>,
    },
    /// Owner to replica: a put's records, to hold and confirm with
    /// `Copied`. The owner acknowledges the put once every replica it
    /// knows has confirmed.
    Copy {
        /// The copy's id, echoed.
        txn: u64,
        /// The records.
        records: Vec<Record>,
    },
    /// Replica to owner: the records of `Copy` `txn` are held.
    Copied {
        /// The copy's id.
        txn: u64,
    },
}

/// One piece of a [`StoreMessage`] too large for a datagram (kind 18): the
/// message's postcard body, cut in `frags` pieces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreFragment {
    /// The sender's id for the message.
    pub id: u64,
    /// This piece's index.
    pub frag: u16,
    /// Number of pieces.
    pub frags: u16,
    /// The piece.
    pub bytes: Vec<u8>,
}

/// Most records, keys or nodes a store message may list.
pub const MAX_STORE_LIST: usize = 4096;

/// Decodes the body of a [`StoreMessage`] (whole, or reassembled from
/// fragments), checking its lists against [`MAX_STORE_LIST`].
pub fn decode_store<A: DeserializeOwned>(bytes: &[u8]) -> Result<StoreMessage<A>, DecodeError> {
    let m: StoreMessage<A> = body("Store", bytes)?;
    let long = match &m {
        StoreMessage::Values {
            records, replicas, ..
        } => records.len().max(replicas.len()),
        StoreMessage::Replicate { records } | StoreMessage::Copy { records, .. } => records.len(),
        StoreMessage::SyncKeys { keys, buckets, .. } => keys.len().max(buckets.len()),
        StoreMessage::SyncDigest { buckets, .. } => buckets.len(),
        StoreMessage::Want { keys } => keys.len(),
        _ => 0,
    };
    if long > MAX_STORE_LIST {
        return Err(DecodeError::OverLimit("store list longer than the limit"));
    }
    Ok(m)
}

/// Encodes a [`StoreMessage`]'s body (without the header): the bytes
/// [`StoreFragment`]s carry.
pub fn encode_store_body<A: Serialize>(m: &StoreMessage<A>) -> Vec<u8> {
    postcard::to_allocvec(m).unwrap_or_default()
}
