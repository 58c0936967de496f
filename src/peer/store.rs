//! API: the DHT store's calls; commands handed to the driver.

use std::time::Duration;

use chord::Hash;
use tokio::sync::mpsc;

use super::SwarmPeer;
use crate::addr::PeerAddr;
use crate::driver::{Command, StoreCall};
use crate::error::{Error, Operation, Result};
use crate::remote::RemoteNode;

impl SwarmPeer {
    async fn store(&self, call: StoreCall) -> Result<chord::StoreEvent<PeerAddr>> {
        let op = match &call {
            StoreCall::Put { .. } | StoreCall::PutSigned { .. } => Operation::Put,
            StoreCall::Get { .. } => Operation::Get,
            StoreCall::Announce { .. } => Operation::Announce,
            StoreCall::Find { .. } => Operation::Find,
        };
        let call = Box::new(call);
        match self.ask(|reply| Command::Store { call, reply }).await?? {
            chord::StoreEvent::Failed {
                refused: Some(r), ..
            } => Err(Error::StoreRefused(r)),
            chord::StoreEvent::Failed { refused: None, .. } => Err(Error::Timeout {
                op,
                after: self.cfg.chord.store.op_timeout,
            }),
            e => Ok(e),
        }
    }

    /// Stores `value` (at most 64 KiB) under `key` in the swarm's DHT for
    /// `ttl` (zero: one hour), on the key's owner and the next replicas
    /// on the ring (see `docs/storage.md`). Values are immutable: a key
    /// holds every distinct value put under it, each until its TTL runs
    /// out; the writer republishes to keep one longer. Fails with
    /// [`Error::StoreRefused`] (quota, size) or [`Error::Timeout`].
    pub async fn put(&self, key: Hash, value: impl Into<Vec<u8>>, ttl: Duration) -> Result<()> {
        let value = value.into();
        let ttl_s = ttl.as_secs().min(u32::MAX as u64) as u32;
        self.store(StoreCall::Put { key, value, ttl_s })
            .await
            .map(|_| ())
    }

    /// Stores version `seq` of the mutable value signed with the ed25519
    /// secret key `secret` under `salt`, and returns its key,
    /// H(public key, salt). With `cas`, the owner stores it only if the
    /// version it holds is `cas` (0: none). Replicas verify the signature
    /// and refuse older versions ([`Error::StoreRefused`]).
    pub async fn put_signed(
        &self,
        secret: &[u8; 32],
        salt: &[u8],
        seq: u64,
        value: impl Into<Vec<u8>>,
        cas: Option<u64>,
    ) -> Result<Hash> {
        let record = chord::store::sign(secret, salt, seq, value.into());
        let key = record.key;
        self.store(StoreCall::PutSigned { record, cas }).await?;
        Ok(key)
    }

    /// The records stored under `key` (empty: none), each with its value
    /// and, for a signed one, its public key and sequence number.
    pub async fn get(&self, key: Hash) -> Result<Vec<chord::store::Record>> {
        match self.store(StoreCall::Get { key }).await? {
            chord::StoreEvent::Got { records, .. } => Ok(records),
            _ => Ok(Vec::new()),
        }
    }

    /// Listens to `key`: the records it holds now, then each new one
    /// (every distinct record once), until the receiver is dropped. A
    /// notification lost on the way is made up for at the subscription's
    /// next renewal (within a minute).
    pub async fn listen(&self, key: Hash) -> Result<mpsc::Receiver<chord::store::Record>> {
        let (updates, rx) = mpsc::channel(256);
        self.ask(|reply| Command::Listen {
            key,
            updates,
            reply,
        })
        .await??;
        Ok(rx)
    }

    /// Announces this peer under `topic` for `ttl` (zero: one hour):
    /// [`find`](Self::find) of the topic names it. Re-announce to stay.
    pub async fn announce(&self, topic: &[u8], ttl: Duration) -> Result<()> {
        let ttl_s = ttl.as_secs().min(u32::MAX as u64) as u32;
        let topic = topic.to_vec();
        self.store(StoreCall::Announce { topic, ttl_s })
            .await
            .map(|_| ())
    }

    /// The peers that announced `topic` and whose announcement has not
    /// expired.
    pub async fn find(&self, topic: &[u8]) -> Result<Vec<RemoteNode>> {
        let topic = topic.to_vec();
        match self.store(StoreCall::Find { topic }).await? {
            chord::StoreEvent::Peers { peers, .. } => Ok(peers),
            _ => Ok(Vec::new()),
        }
    }
}
