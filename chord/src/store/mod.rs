//! The DHT's value table, pure protocol: records, their validation and
//! merge rules, per-source quotas, the total bound and its eviction order,
//! and the digests replicas compare. No I/O; the node's glue
//! (`node/store.rs`) moves records between nodes.
//!
//! A key holds a small set of records, each identified within its key:
//!
//! | kind | key | identity | newer wins by |
//! | --- | --- | --- | --- |
//! | immutable | any | SHA-256 of the value | (same value: the later expiry) |
//! | signed | H(public key, salt) | the public key | sequence number |
//! | peer (topics) | H("cicada-topic:", topic) | SHA-256 of the value | (later expiry) |
//!
//! Merging is a union where each identity keeps its newest version, so
//! replicas that exchange records in any order converge.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::hash::{Hash, Interval};

/// Largest value a record may carry.
pub const MAX_VALUE: usize = 64 * 1024;
/// Longest salt of a signed record (BEP44's limit).
pub const MAX_SALT: usize = 64;
/// Buckets of a range digest (see [`Store::bucket_digests`]).
pub const DIGEST_BUCKETS: usize = 16;
/// Domain separation of signed records' signatures.
const SIGN_CONTEXT: &[u8] = b"cicada-store-v1";

/// The storage tunables; part of [`crate::Config`].
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// Replicas of each key, the owner included: the owner and the first
    /// `replicas - 1` nodes of its successor list.
    pub replicas: usize,
    /// Lifetime of a value when the writer gives none; the writer
    /// republishes to keep it longer.
    pub default_ttl: Duration,
    /// Longest lifetime accepted; longer ones are cut to it.
    pub max_ttl: Duration,
    /// Period of anti-entropy: each owner compares digests of its range
    /// with each replica. Membership changes trigger a round at once.
    pub sync_interval: Duration,
    /// How long a request (put, get, subscribe) to an owner waits for its
    /// answer before the owner is looked up again.
    pub request_timeout: Duration,
    /// How long a store operation may take, retries included.
    pub op_timeout: Duration,
    /// Bytes of values one source may have stored on a node.
    pub source_bytes: usize,
    /// Values one source may have stored on a node.
    pub source_values: usize,
    /// Puts per second one source may make to a node (token bucket).
    pub source_puts_per_s: u32,
    /// Puts one source may make in a burst.
    pub source_put_burst: u32,
    /// Bytes of values a node stores at most (all sources).
    pub max_bytes: usize,
    /// Values a node stores at most (all sources).
    pub max_values: usize,
    /// Records one key holds at most (signed ones and topic peers included).
    pub key_records: usize,
    /// Listen subscriptions one source may hold on a node.
    pub source_listens: usize,
    /// Listen subscriptions a node holds at most.
    pub max_listens: usize,
    /// How long a subscription lasts on a replica unless renewed; the
    /// listener renews it at half this.
    pub listen_ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            replicas: 3,
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(24 * 3600),
            sync_interval: Duration::from_secs(10),
            request_timeout: Duration::from_secs(2),
            op_timeout: Duration::from_secs(20),
            source_bytes: 8 << 20,
            source_values: 4096,
            source_puts_per_s: 50,
            source_put_burst: 200,
            max_bytes: 256 << 20,
            max_values: 200_000,
            key_records: 64,
            source_listens: 64,
            max_listens: 8192,
            listen_ttl: Duration::from_secs(120),
        }
    }
}

/// What kind of record, and what proves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A plain value: anyone may put it, it never changes.
    Immutable,
    /// A mutable value signed by the holder of `public_key`.
    Signed {
        /// The ed25519 public key.
        public_key: [u8; 32],
        /// Distinguishes several values of one key pair.
        salt: Vec<u8>,
        /// Version: replicas keep the highest.
        seq: u64,
        /// ed25519 signature (64 bytes) of the context, salt, seq and value.
        signature: Vec<u8>,
    },
    /// A peer announcing a topic: the value is the encoded node.
    Peer,
}

/// One value as it travels and is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The key it is stored under.
    pub key: Hash,
    /// Kind and proof.
    pub kind: Kind,
    /// The application's bytes.
    pub value: Vec<u8>,
    /// Seconds it has left to live.
    pub ttl_s: u32,
    /// The source charged for it: the hash of the address its put came
    /// from, as the owner saw it.
    pub writer: Hash,
}

/// The key a signed value of `public_key` with `salt` is stored under.
pub fn signed_key(public_key: &[u8; 32], salt: &[u8]) -> Hash {
    let mut b = Vec::with_capacity(32 + salt.len());
    b.extend_from_slice(public_key);
    b.extend_from_slice(salt);
    Hash::of(b)
}

/// The key peers announcing `topic` are stored under.
pub fn topic_key(topic: &[u8]) -> Hash {
    let mut b = b"cicada-topic:".to_vec();
    b.extend_from_slice(topic);
    Hash::of(b)
}

fn signed_bytes(salt: &[u8], seq: u64, value: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGN_CONTEXT.len() + 10 + salt.len() + value.len());
    m.extend_from_slice(SIGN_CONTEXT);
    m.push(salt.len() as u8);
    m.extend_from_slice(salt);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(value);
    m
}

/// Signs `value` as version `seq` of the signed value of `secret` (an
/// ed25519 secret key's 32 bytes) and `salt`: the record to put.
pub fn sign(secret: &[u8; 32], salt: &[u8], seq: u64, value: Vec<u8>) -> Record {
    let key = SigningKey::from_bytes(secret);
    let public_key = key.verifying_key().to_bytes();
    let signature = key
        .sign(&signed_bytes(salt, seq, &value))
        .to_bytes()
        .to_vec();
    Record {
        key: signed_key(&public_key, salt),
        kind: Kind::Signed {
            public_key,
            salt: salt.to_vec(),
            seq,
            signature,
        },
        value,
        ttl_s: 0,
        writer: Hash::ZERO,
    }
}

/// The public key of an ed25519 secret key.
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

impl Record {
    /// An immutable value.
    pub fn immutable(key: Hash, value: Vec<u8>) -> Record {
        Record {
            key,
            kind: Kind::Immutable,
            value,
            ttl_s: 0,
            writer: Hash::ZERO,
        }
    }

    /// Its identity within its key.
    pub fn id(&self) -> Hash {
        match &self.kind {
            Kind::Signed { public_key, .. } => Hash::of(public_key),
            Kind::Immutable | Kind::Peer => Hash::of(&self.value),
        }
    }

    /// Its version: the sequence number of a signed record, else 0.
    pub fn seq(&self) -> u64 {
        match &self.kind {
            Kind::Signed { seq, .. } => *seq,
            _ => 0,
        }
    }

    /// Bytes charged for it.
    pub fn size(&self) -> usize {
        self.value.len()
            + 64
            + match &self.kind {
                Kind::Signed { salt, .. } => 32 + 64 + salt.len(),
                _ => 0,
            }
    }

    /// Checks its size and, for a signed record, its key and signature.
    pub fn validate(&self) -> Result<(), Refused> {
        if self.value.len() > MAX_VALUE {
            return Err(Refused::TooLarge);
        }
        if let Kind::Signed {
            public_key,
            salt,
            seq,
            signature,
        } = &self.kind
        {
            if salt.len() > MAX_SALT {
                return Err(Refused::TooLarge);
            }
            if signed_key(public_key, salt) != self.key {
                return Err(Refused::BadSignature);
            }
            let Ok(vk) = VerifyingKey::from_bytes(public_key) else {
                return Err(Refused::BadSignature);
            };
            let Ok(sig) = <[u8; 64]>::try_from(signature.as_slice()) else {
                return Err(Refused::BadSignature);
            };
            let sig = Signature::from_bytes(&sig);
            if vk
                .verify(&signed_bytes(salt, *seq, &self.value), &sig)
                .is_err()
            {
                return Err(Refused::BadSignature);
            }
        }
        Ok(())
    }

    /// The digest of its identity and version.
    fn digest(&self) -> u64 {
        let mut b = self.id().to_bytes().to_vec();
        b.extend_from_slice(&self.seq().to_be_bytes());
        let h = Hash::of(b).to_bytes();
        u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
    }
}

/// Why a record was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refused {
    /// Value over [`MAX_VALUE`] or salt over [`MAX_SALT`].
    TooLarge,
    /// A signed record whose key or signature does not verify.
    BadSignature,
    /// A signed record older than (or conflicting with) the one held.
    Stale,
    /// The compare-and-swap's expected sequence number is not the one held.
    CasMismatch,
    /// The source is over its bytes or values quota on this node.
    Quota,
    /// The source put faster than its rate.
    RateLimited,
    /// The key holds as many records as it may.
    KeyFull,
    /// The node is full and this source holds the most: nothing of
    /// others is evicted for it.
    StoreFull,
    /// The receiver does not own the key (the writer looks it up again).
    NotOwner,
    /// A topic announcement naming another address than its sender's.
    Forged,
}

/// How an insertion went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// A record not held before (or a newer version of one).
    New,
    /// The same record again: its expiry was extended if later.
    Refreshed,
}

/// Counters of a store; they only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Records stored new (puts, replication, repair).
    pub stored: u64,
    /// Records refused, by any reason of [`Refused`].
    pub refused: u64,
    /// Of them, over a source's quota or rate.
    pub refused_quota: u64,
    /// Of them, with a bad signature.
    pub refused_signature: u64,
    /// Of them, older than held or failing a compare-and-swap.
    pub refused_stale: u64,
    /// Records evicted to make room (see [`Store::insert`]).
    pub evicted: u64,
    /// Records that expired.
    pub expired: u64,
    /// Bytes sent for clients: requests, answers, notifications.
    pub client_bytes_out: u64,
    /// Bytes sent copying puts to replicas.
    pub replication_bytes_out: u64,
    /// Bytes sent for repair: digests, key lists, records exchanged by
    /// anti-entropy, read repair.
    pub repair_bytes_out: u64,
    /// Gets (and listens) answered.
    pub gets_served: u64,
    /// Subscriptions refused (per-source or total bound).
    pub listens_refused: u64,
    /// Notifications sent to listeners.
    pub notifications_sent: u64,
    /// Records a reader pushed back to an owner that lacked them.
    pub read_repairs: u64,
    /// Digest comparisons started with a replica.
    pub sync_rounds: u64,
    /// A put's copies sent again to replicas that had not confirmed them.
    pub copies_resent: u64,
    /// Puts whose replicas did not all confirm before the writer's
    /// deadline: held by the owner, never acknowledged (the writer's put
    /// fails with a timeout; anti-entropy still copies the record).
    pub copies_abandoned: u64,
}

#[derive(Clone, Debug)]
struct Entry {
    record: Record,
    expires: Instant,
    /// Insertion order, for "oldest first" eviction.
    order: u64,
}

#[derive(Clone, Debug, Default)]
struct Usage {
    bytes: usize,
    values: usize,
    tokens: f64,
    refilled: Option<Instant>,
}

/// The records a node holds, bounded.
///
/// Eviction order when the node is full (`max_bytes`, `max_values`):
/// expired records first (always dropped), then the oldest record of the
/// source that holds the most bytes. A source never evicts records of a
/// source that holds fewer bytes than itself: at its turn to be the
/// largest its own put is refused instead. So a flood, from one source or
/// many, displaces the largest holders first and the well-behaved
/// (small) writers last.
#[derive(Clone, Debug)]
pub struct Store {
    cfg: StoreConfig,
    keys: BTreeMap<Hash, Vec<Entry>>,
    usage: FxHashMap<Hash, Usage>,
    bytes: usize,
    values: usize,
    order: u64,
    stats: StoreStats,
}

impl Store {
    /// An empty store.
    pub fn new(cfg: StoreConfig) -> Store {
        Store {
            cfg,
            keys: BTreeMap::new(),
            usage: FxHashMap::default(),
            bytes: 0,
            values: 0,
            order: 0,
            stats: StoreStats::default(),
        }
    }

    /// The tunables.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Bytes held (as charged by [`Record::size`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.values
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.values == 0
    }

    /// Keys held.
    pub fn keys(&self) -> impl Iterator<Item = &Hash> {
        self.keys.keys()
    }

    /// Takes a put token of `writer`: false (and counted) past its rate.
    pub fn take_put_token(&mut self, writer: Hash, now: Instant) -> bool {
        let (rate, burst) = (
            self.cfg.source_puts_per_s as f64,
            self.cfg.source_put_burst as f64,
        );
        let u = self.usage.entry(writer).or_default();
        let elapsed = u.refilled.map_or(f64::INFINITY, |t| {
            now.saturating_duration_since(t).as_secs_f64()
        });
        u.tokens = (u.tokens + elapsed * rate).min(burst);
        u.refilled = Some(now);
        if u.tokens >= 1.0 {
            u.tokens -= 1.0;
            true
        } else {
            self.stats.refused += 1;
            self.stats.refused_quota += 1;
            false
        }
    }

    /// Stores `record` (validated here), with the CAS `cas` if given:
    /// the sequence number the held signed record must have (0: none held).
    pub fn insert(
        &mut self,
        record: Record,
        cas: Option<u64>,
        now: Instant,
    ) -> Result<Inserted, Refused> {
        let r = self.insert_inner(record, cas, now);
        match r {
            Ok(Inserted::New) => self.stats.stored += 1,
            Ok(Inserted::Refreshed) => {}
            Err(e) => {
                self.stats.refused += 1;
                match e {
                    Refused::Quota | Refused::StoreFull | Refused::RateLimited => {
                        self.stats.refused_quota += 1
                    }
                    Refused::BadSignature => self.stats.refused_signature += 1,
                    Refused::Stale | Refused::CasMismatch => self.stats.refused_stale += 1,
                    _ => {}
                }
            }
        }
        r
    }

    fn insert_inner(
        &mut self,
        record: Record,
        cas: Option<u64>,
        now: Instant,
    ) -> Result<Inserted, Refused> {
        record.validate()?;
        let ttl = Duration::from_secs(record.ttl_s as u64).min(self.cfg.max_ttl);
        let ttl = if ttl.is_zero() {
            self.cfg.default_ttl
        } else {
            ttl
        };
        let expires = now + ttl;
        let id = record.id();
        let size = record.size();
        let held = self
            .keys
            .get(&record.key)
            .and_then(|es| es.iter().position(|e| e.record.id() == id));
        if let Some(c) = cas {
            let cur = held
                .and_then(|i| self.keys.get(&record.key).map(|es| es[i].record.seq()))
                .unwrap_or(0);
            if cur != c {
                return Err(Refused::CasMismatch);
            }
        }
        if let Some(i) = held {
            let es = self.keys.get_mut(&record.key).expect("held");
            let e = &mut es[i];
            let (old, new) = (e.record.seq(), record.seq());
            if new < old || (new == old && e.record.value != record.value) {
                return Err(Refused::Stale);
            }
            if new == old {
                e.expires = e.expires.max(expires);
                return Ok(Inserted::Refreshed);
            }
            // A newer signed version: replaces the old one, charged anew.
            let old = es.remove(i);
            self.uncharge(&old.record);
        } else if self
            .keys
            .get(&record.key)
            .is_some_and(|es| es.len() >= self.cfg.key_records)
        {
            return Err(Refused::KeyFull);
        }
        let writer = record.writer;
        let u = self.usage.entry(writer).or_default();
        if u.bytes + size > self.cfg.source_bytes || u.values + 1 > self.cfg.source_values {
            return Err(Refused::Quota);
        }
        while self.bytes + size > self.cfg.max_bytes || self.values + 1 > self.cfg.max_values {
            self.expire(now);
            if self.bytes + size <= self.cfg.max_bytes && self.values < self.cfg.max_values {
                break;
            }
            let mine = self.usage.get(&writer).map_or(0, |u| u.bytes);
            let Some((victim, _)) = self
                .usage
                .iter()
                .filter(|(_, u)| u.values > 0)
                .max_by_key(|(w, u)| (u.bytes, **w))
                .map(|(w, u)| (*w, u.bytes))
                .filter(|(w, b)| *w != writer && *b > mine + size)
            else {
                return Err(Refused::StoreFull);
            };
            self.evict_oldest_of(victim);
        }
        self.order += 1;
        let u = self.usage.entry(writer).or_default();
        u.bytes += size;
        u.values += 1;
        self.bytes += size;
        self.values += 1;
        self.keys.entry(record.key).or_default().push(Entry {
            record,
            expires,
            order: self.order,
        });
        Ok(Inserted::New)
    }

    fn uncharge(&mut self, r: &Record) {
        let size = r.size();
        self.bytes -= size;
        self.values -= 1;
        if let Some(u) = self.usage.get_mut(&r.writer) {
            u.bytes -= size;
            u.values -= 1;
            if u.values == 0 && u.refilled.is_none() {
                self.usage.remove(&r.writer);
            }
        }
    }

    fn evict_oldest_of(&mut self, victim: Hash) {
        let mut best: Option<(u64, Hash, usize)> = None;
        for (k, es) in &self.keys {
            for (i, e) in es.iter().enumerate() {
                if e.record.writer == victim && best.is_none_or(|(o, _, _)| e.order < o) {
                    best = Some((e.order, *k, i));
                }
            }
        }
        if let Some((_, k, i)) = best {
            let es = self.keys.get_mut(&k).expect("found");
            let e = es.remove(i);
            if es.is_empty() {
                self.keys.remove(&k);
            }
            self.uncharge(&e.record);
            self.stats.evicted += 1;
        }
    }

    /// Drops expired records, and forgets put buckets that are full again.
    pub fn expire(&mut self, now: Instant) {
        let mut gone = Vec::new();
        self.keys.retain(|_, es| {
            es.retain(|e| {
                let keep = e.expires > now;
                if !keep {
                    gone.push(e.record.clone());
                }
                keep
            });
            !es.is_empty()
        });
        for r in gone {
            self.uncharge(&r);
            self.stats.expired += 1;
        }
        let (rate, burst) = (
            self.cfg.source_puts_per_s as f64,
            self.cfg.source_put_burst as f64,
        );
        self.usage.retain(|_, u| {
            let full = u.refilled.is_none_or(|t| {
                u.tokens + now.saturating_duration_since(t).as_secs_f64() * rate >= burst
            });
            if full {
                u.refilled = None;
            }
            u.values > 0 || !full
        });
    }

    /// The records under `key` that have not expired, with their
    /// remaining lifetimes.
    pub fn get(&self, key: &Hash, now: Instant) -> Vec<Record> {
        self.keys
            .get(key)
            .map(|es| {
                es.iter()
                    .filter(|e| e.expires > now)
                    .map(|e| with_ttl(e, now))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The records of the keys in `range`.
    pub fn in_range(&self, range: &Interval, now: Instant) -> Vec<Record> {
        self.keys
            .iter()
            .filter(|(k, _)| range.contains(k))
            .flat_map(|(_, es)| {
                es.iter()
                    .filter(|e| e.expires > now)
                    .map(|e| with_ttl(e, now))
            })
            .collect()
    }

    /// Digest of one key's records (identities and versions).
    pub fn key_digest(&self, key: &Hash, now: Instant) -> u64 {
        self.keys.get(key).map_or(0, |es| {
            es.iter()
                .filter(|e| e.expires > now)
                .fold(0u64, |acc, e| acc.wrapping_add(e.record.digest()))
        })
    }

    /// Digests of the keys in `range`, by bucket (a key's bucket is its
    /// lowest four bits): two replicas compare these first, then the key
    /// digests of the buckets that differ, then exchange only the records
    /// of keys that differ.
    pub fn bucket_digests(&self, range: &Interval, now: Instant) -> Vec<u64> {
        let mut out = vec![0u64; DIGEST_BUCKETS];
        for k in self.keys.keys().filter(|k| range.contains(k)) {
            let d = self.key_digest(k, now);
            if d != 0 {
                let b = bucket(k);
                out[b] = out[b].wrapping_add(d ^ hash64(k));
            }
        }
        out
    }

    /// The key digests of the keys in `range` whose bucket is in `buckets`.
    pub fn key_digests(&self, range: &Interval, buckets: &[u8], now: Instant) -> Vec<(Hash, u64)> {
        self.keys
            .keys()
            .filter(|k| range.contains(k) && buckets.contains(&(bucket(k) as u8)))
            .map(|k| (*k, self.key_digest(k, now)))
            .filter(|(_, d)| *d != 0)
            .collect()
    }

    /// Heap bytes held (records and indexes), roughly.
    pub fn heap_bytes(&self) -> usize {
        self.bytes + self.keys.len() * 64 + self.usage.len() * 64
    }
}

fn with_ttl(e: &Entry, now: Instant) -> Record {
    let mut r = e.record.clone();
    r.ttl_s = e
        .expires
        .saturating_duration_since(now)
        .as_secs()
        .clamp(1, u32::MAX as u64) as u32;
    r
}

/// A key's digest bucket.
pub fn bucket(k: &Hash) -> usize {
    (k.to_bytes()[31] as usize) % DIGEST_BUCKETS
}

fn hash64(k: &Hash) -> u64 {
    let b = k.to_bytes();
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: &str, writer: u8) -> Record {
        Record {
            writer: Hash::from_bytes([writer; 32]),
            ..Record::immutable(Hash::of(key), value.as_bytes().to_vec())
        }
    }

    #[test]
    fn signed_records_verify_and_order_by_seq() {
        let now = Instant::now();
        let mut s = Store::new(StoreConfig::default());
        let secret = [7u8; 32];
        let v1 = sign(&secret, b"salt", 1, b"one".to_vec());
        assert_eq!(v1.key, signed_key(&public_key(&secret), b"salt"));
        assert_eq!(s.insert(v1.clone(), None, now), Ok(Inserted::New));
        // A tampered value fails its signature.
        let mut bad = sign(&secret, b"salt", 2, b"two".to_vec());
        bad.value = b"evil".to_vec();
        assert_eq!(s.insert(bad, None, now), Err(Refused::BadSignature));
        // Another key pair cannot write under this key.
        let mut other = sign(&[8u8; 32], b"salt", 5, b"x".to_vec());
        other.key = v1.key;
        assert_eq!(s.insert(other, None, now), Err(Refused::BadSignature));
        let v3 = sign(&secret, b"salt", 3, b"three".to_vec());
        assert_eq!(
            s.insert(v3.clone(), Some(2), now),
            Err(Refused::CasMismatch)
        );
        assert_eq!(s.insert(v3.clone(), Some(1), now), Ok(Inserted::New));
        assert_eq!(s.insert(v1, None, now), Err(Refused::Stale));
        let conflicting = sign(&secret, b"salt", 3, b"other".to_vec());
        assert_eq!(s.insert(conflicting, None, now), Err(Refused::Stale));
        let got = s.get(&v3.key, now);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].value, b"three");
        assert_eq!(s.len(), 1);
        assert_eq!(s.stats().refused_signature, 2);
        assert_eq!(s.stats().refused_stale, 3);
    }

    #[test]
    fn immutable_values_union_and_expire() {
        let now = Instant::now();
        let mut s = Store::new(StoreConfig::default());
        let mut a = rec("k", "a", 1);
        a.ttl_s = 10;
        assert_eq!(s.insert(a.clone(), None, now), Ok(Inserted::New));
        assert_eq!(s.insert(a.clone(), None, now), Ok(Inserted::Refreshed));
        assert_eq!(s.insert(rec("k", "b", 2), None, now), Ok(Inserted::New));
        assert_eq!(s.get(&Hash::of("k"), now).len(), 2);
        s.expire(now + Duration::from_secs(11));
        assert_eq!(
            s.get(&Hash::of("k"), now + Duration::from_secs(11)).len(),
            1
        );
        assert_eq!(s.stats().expired, 1);
    }

    #[test]
    fn a_flood_is_bounded_and_evicts_the_largest_writer_first() {
        let now = Instant::now();
        let cfg = StoreConfig {
            max_values: 100,
            source_values: 1000,
            ..StoreConfig::default()
        };
        let mut s = Store::new(cfg);
        for i in 0..10 {
            s.insert(rec(&format!("good{i}"), "v", 1), None, now)
                .unwrap();
        }
        let mut refused = 0;
        for i in 0..1000 {
            if s.insert(rec(&format!("flood{i}"), "v", 2), None, now)
                .is_err()
            {
                refused += 1;
            }
        }
        assert_eq!(s.len(), 100);
        assert_eq!(refused, 910);
        for i in 0..10 {
            assert_eq!(s.get(&Hash::of(format!("good{i}")), now).len(), 1);
        }
        // Many flooders: the largest loses first; the good writer, at less
        // than a fair share (100 values among 8 writers), never.
        for w in 3..9u8 {
            for i in 0..20 {
                let _ = s.insert(rec(&format!("f{w}-{i}"), "v", w), None, now);
            }
        }
        assert_eq!(s.len(), 100);
        for i in 0..10 {
            assert_eq!(s.get(&Hash::of(format!("good{i}")), now).len(), 1);
        }
        assert!(s.stats().evicted > 0);
        assert!(s.stats().refused_quota > 0);
    }

    #[test]
    fn per_source_quota_and_rate() {
        let now = Instant::now();
        let cfg = StoreConfig {
            source_values: 5,
            source_put_burst: 3,
            source_puts_per_s: 1,
            ..StoreConfig::default()
        };
        let mut s = Store::new(cfg);
        for i in 0..5 {
            s.insert(rec(&format!("{i}"), "v", 1), None, now).unwrap();
        }
        assert_eq!(s.insert(rec("x", "v", 1), None, now), Err(Refused::Quota));
        assert_eq!(s.insert(rec("x", "v", 2), None, now), Ok(Inserted::New));
        let w = Hash::from_bytes([9; 32]);
        assert!((0..3).all(|_| s.take_put_token(w, now)));
        assert!(!s.take_put_token(w, now));
        assert!(s.take_put_token(w, now + Duration::from_secs(1)));
    }

    #[test]
    fn digests_differ_exactly_where_records_differ() {
        let now = Instant::now();
        let mut a = Store::new(StoreConfig::default());
        let mut b = Store::new(StoreConfig::default());
        for i in 0..50 {
            let r = rec(&format!("{i}"), "v", 1);
            a.insert(r.clone(), None, now).unwrap();
            if i != 17 {
                b.insert(r, None, now).unwrap();
            }
        }
        let all = Interval::open_closed(Hash::ZERO, Hash::ZERO);
        let (da, db) = (a.bucket_digests(&all, now), b.bucket_digests(&all, now));
        let differ: Vec<u8> = (0..DIGEST_BUCKETS)
            .filter(|i| da[*i] != db[*i])
            .map(|i| i as u8)
            .collect();
        assert_eq!(differ, vec![bucket(&Hash::of("17")) as u8]);
        let ka = a.key_digests(&all, &differ, now);
        let kb = b.key_digests(&all, &differ, now);
        let missing: Vec<Hash> = ka
            .iter()
            .filter(|k| !kb.contains(k))
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(missing, vec![Hash::of("17")]);
    }
}
