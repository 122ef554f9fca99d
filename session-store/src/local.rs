//! The local tier: one bounded table per node, shared by every poll-mode core.
//!
//! # Records and tables
//! A record is the seed's `(key, data, time to live)` with a table identifier prepended
//! to the key (seed L166, L188): [`TableId`] is one byte of kind (TLS 1.2 session ids,
//! ticket keys, ...) and two of vserver, so a session of one vserver can never be found
//! under another, and two kinds of data may share key bytes. Virtual tables live in one
//! physical table, as the seed says; the three bytes are the whole cost.
//!
//! # Locking
//! The table is split into shards, each a mutex over a hash map and its eviction queue.
//! A caller holds one shard's lock for one map operation: never across I/O, and never
//! while taking another lock (writes take the purge markers' read lock first). A poll-mode core that finds a shard locked waits for at most one
//! map operation of another thread.
//!
//! # Hashing
//! Keys are chosen by clients: a TLS 1.2 session id arrives in the ClientHello and the
//! peer and repository tiers are fed from it. An unkeyed hash (the seed's BUZhash with a
//! fixed table, FNV, ...) lets anyone who knows it pick ids that all land in one bucket
//! and turn every lookup into a list walk (hash flooding). The shard choice and each
//! shard's map therefore use std's `RandomState`: SipHash-1-3 under a random 128-bit key
//! drawn per process, which an attacker cannot predict. BUZhash is only keyed if its
//! 256-word table is secret and random per process; SipHash gives that property with a
//! reviewed construction, so we use it instead.
//!
//! # Time and versions
//! Every time here is wall-clock Unix milliseconds passed in by the caller: the table
//! never reads a clock, and records cross nodes whose clocks differ a little. Each entry
//! carries a [`Version`] `(updated_ms, origin)`; a write replaces an entry only if its
//! version is newer (last writer wins), so replicas converge whatever order messages
//! arrive in. A local write bumps `updated_ms` past the entry it replaces, so a second
//! ADD in the same millisecond still wins. A DELETE leaves a tombstone (the version with
//! no value) until the entry would have expired plus [`LocalConfig::skew_ms`], so an ADD
//! delayed in the network cannot bring a deleted session back. A PURGE leaves a marker:
//! writes older than it are refused from then on.
//!
//! # Secrets
//! Values are [`Secret`]s: wiped when evicted, overwritten, deleted, expired or dropped
//! with the table.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

use crypto_offload::prim::{hash, HashAlg};
use crypto_offload::Secret;
use serde::Serialize;

/// Longest key (after the table id) a record may have: TLS session ids are at most 32
/// bytes and ticket key names 16.
pub const MAX_KEY: usize = 255;
/// Largest value a record may carry (an encoded session with a client identity); it
/// must fit a cluster datagram with its headers.
pub const MAX_VALUE: usize = 8192;
/// Bytes the table id adds in front of a key.
pub const TABLE_ID_LEN: usize = 3;

/// What kind of data a table holds (one byte on the wire and in every key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Kind(pub u8);

impl Kind {
    /// TLS 1.2 sessions by session id.
    pub const SESSION_ID: Kind = Kind(1);
    /// Ticket keys (when a ring is replicated rather than derived).
    pub const TICKET_KEY: Kind = Kind(2);
    /// Client identity / authentication state by session id (seed L186).
    pub const CLIENT_AUTH: Kind = Kind(3);
}

/// A virtual table: the kind of data and the vserver it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TableId {
    pub kind: Kind,
    pub vserver: u16,
}

impl TableId {
    /// The session-id table of `vserver`.
    pub fn sessions(vserver: u16) -> TableId {
        TableId {
            kind: Kind::SESSION_ID,
            vserver,
        }
    }

    /// The three bytes prepended to every key.
    pub fn to_bytes(self) -> [u8; TABLE_ID_LEN] {
        let v = self.vserver.to_be_bytes();
        [self.kind.0, v[0], v[1]]
    }

    /// The table id at the front of a full key.
    pub fn from_bytes(b: [u8; TABLE_ID_LEN]) -> TableId {
        TableId {
            kind: Kind(b[0]),
            vserver: u16::from_be_bytes([b[1], b[2]]),
        }
    }
}

/// Which tables a PURGE empties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PurgeScope {
    All,
    Table(TableId),
}

/// The order of writes to one key across the cluster: newer `updated_ms` wins, then the
/// higher origin (a hash of the writing node's name), so every node picks the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Version {
    /// Unix ms of the write at its origin.
    pub updated_ms: u64,
    /// The writing node (see [`crate::node_id`]).
    pub origin: u32,
}

/// One record as it is replicated: a value, or a tombstone (`value: None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub table: TableId,
    pub key: Vec<u8>,
    pub value: Option<Secret>,
    /// Unix ms when it stops resuming (a tombstone: when it may be forgotten, before skew).
    pub expires_ms: u64,
    pub version: Version,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Stored (new, or newer than what was there).
    Stored,
    /// Not stored: the table holds this version or a newer one, or a purge covers it.
    Stale,
    /// Not stored: already expired.
    Expired,
    /// UPDATE of a key with no live entry.
    Missing,
    /// Not stored: key or value too long.
    TooLarge,
}

/// Sizing and timing of the table.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Entries (tombstones included) the table holds at most; the oldest go first.
    pub capacity: usize,
    /// Lock shards (rounded up to a power of two).
    pub shards: usize,
    /// How long a tombstone of a key this node did not hold is kept.
    pub tombstone_ms: u64,
    /// Clock difference between nodes tolerated: tombstones are kept this much longer
    /// than the entry they replace would have lived.
    pub skew_ms: u64,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            capacity: 100_000,
            shards: 16,
            tombstone_ms: 300_000,
            skew_ms: 5_000,
        }
    }
}

/// Counters of the local tier, for operators.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LocalStats {
    /// Records with a value held now (expired ones not yet swept included).
    pub entries: u64,
    pub tombstones: u64,
    pub capacity: u64,
    /// Key and value bytes held.
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
    /// Lookups that found an entry past its expiry (it is removed then).
    pub expired: u64,
    /// Entries dropped to make room.
    pub evictions: u64,
    /// Writes refused because the table held a newer version or a purge covered them.
    pub stale: u64,
}

struct Entry {
    value: Option<Secret>,
    expires_ms: u64,
    version: Version,
    /// Insertion stamp: matches the eviction queue's entry while that entry is current.
    gen: u64,
}

impl Entry {
    fn bytes(&self, key: &[u8]) -> usize {
        key.len() + self.value.as_ref().map_or(0, |v| v.bytes().len())
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<[u8]>, Entry, RandomState>,
    /// Keys in insertion order with their stamp; a stamp that no longer matches the
    /// map's entry is stale and skipped.
    order: VecDeque<(Box<[u8]>, u64)>,
    next_gen: u64,
    bytes: usize,
    tombstones: usize,
}

impl Shard {
    fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let e = self.map.remove(key)?;
        self.bytes -= e.bytes(key);
        if e.value.is_none() {
            self.tombstones -= 1;
        }
        Some(e)
    }

    /// Insert or replace; a replaced entry keeps its place in the eviction order.
    fn put(&mut self, key: &[u8], value: Option<Secret>, expires_ms: u64, version: Version) {
        let gen = match self.remove(key) {
            Some(old) => old.gen,
            None => {
                self.next_gen += 1;
                self.order.push_back((key.into(), self.next_gen));
                self.next_gen
            }
        };
        let e = Entry {
            value,
            expires_ms,
            version,
            gen,
        };
        self.bytes += e.bytes(key);
        if e.value.is_none() {
            self.tombstones += 1;
        }
        self.map.insert(key.into(), e);
    }

    /// Make room for one new key: drop the oldest entries. Returns how many.
    fn evict_for_one(&mut self, cap: usize) -> u64 {
        let mut n = 0;
        while self.map.len() >= cap {
            let Some((key, gen)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&key).is_some_and(|e| e.gen == gen) {
                self.remove(&key);
                n += 1;
            }
        }
        // Keys that left the map by other paths leave stale queue entries; compact
        // once they outnumber the live ones.
        if self.order.len() > 2 * cap.max(8) {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|e| e.gen == *g));
        }
        n
    }
}

#[derive(Default)]
struct Purges {
    all: Option<Version>,
    tables: HashMap<TableId, Version>,
}

impl Purges {
    /// Whether a write of `version` to `table` is older than a purge that covers it.
    fn covers(&self, table: TableId, version: Version) -> bool {
        self.all.is_some_and(|p| version < p)
            || self.tables.get(&table).is_some_and(|p| version < *p)
    }
}

/// The bounded, sharded, thread-safe local table.
pub struct LocalTable {
    cfg: LocalConfig,
    per_shard: usize,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    purges: RwLock<Purges>,
    hits: AtomicU64,
    misses: AtomicU64,
    expired: AtomicU64,
    evictions: AtomicU64,
    stale: AtomicU64,
}

impl fmt::Debug for LocalTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalTable({}/{})", self.len(), self.cfg.capacity)
    }
}

/// A key with its table id in front, on the stack (no allocation per lookup).
struct FullKey {
    buf: [u8; TABLE_ID_LEN + MAX_KEY],
    len: usize,
}

impl FullKey {
    fn new(table: TableId, key: &[u8]) -> Option<FullKey> {
        if key.len() > MAX_KEY {
            return None;
        }
        let mut buf = [0u8; TABLE_ID_LEN + MAX_KEY];
        buf[..TABLE_ID_LEN].copy_from_slice(&table.to_bytes());
        buf[TABLE_ID_LEN..TABLE_ID_LEN + key.len()].copy_from_slice(key);
        Some(FullKey {
            buf,
            len: TABLE_ID_LEN + key.len(),
        })
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn split_key(full: &[u8]) -> (TableId, &[u8]) {
    let mut id = [0u8; TABLE_ID_LEN];
    id.copy_from_slice(&full[..TABLE_ID_LEN]);
    (TableId::from_bytes(id), &full[TABLE_ID_LEN..])
}

impl LocalTable {
    /// An empty table.
    pub fn new(cfg: LocalConfig) -> LocalTable {
        let shards = cfg.shards.clamp(1, 1024).next_power_of_two();
        let capacity = cfg.capacity.max(1);
        let per_shard = capacity.div_ceil(shards);
        LocalTable {
            cfg: LocalConfig { capacity, ..cfg },
            per_shard,
            hasher: RandomState::new(),
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            purges: RwLock::new(Purges::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        }
    }

    /// The configuration (capacity rounded as used).
    pub fn config(&self) -> &LocalConfig {
        &self.cfg
    }

    fn shard(&self, full: &[u8]) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(full) as usize) & (self.shards.len() - 1);
        // Each critical section is one map operation: a panic inside leaves no torn
        // state that matters more than a lost entry, so a poisoned lock is still used.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shard_at(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes hold the purge markers' read lock across their check and their insert, so
    /// a purge (which takes the write lock to set its marker, then sweeps) either sees
    /// the write or the write sees the marker. Always taken before a shard lock.
    fn purges(&self) -> RwLockReadGuard<'_, Purges> {
        self.purges.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The value under `(table, key)` if it is live at `now_ms`. Counts a hit or a miss.
    pub fn get(&self, table: TableId, key: &[u8], now_ms: u64) -> Option<Secret> {
        let hit = self.get_record(table, key, now_ms).and_then(|r| r.value);
        let c = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        c.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// The whole record (value, expiry, version) if it is live at `now_ms`; a tombstone
    /// is returned as a record without a value. Counts no hit or miss (peers ask this).
    pub fn get_record(&self, table: TableId, key: &[u8], now_ms: u64) -> Option<Record> {
        let full = FullKey::new(table, key)?;
        let mut s = self.shard(full.bytes());
        let e = s.map.get(full.bytes())?;
        if e.value.is_some() && now_ms >= e.expires_ms {
            s.remove(full.bytes());
            drop(s);
            self.expired.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Record {
            table,
            key: key.to_vec(),
            value: e.value.clone(),
            expires_ms: e.expires_ms,
            version: e.version,
        })
    }

    /// A local ADD (upsert): stores `value` until `expires_ms` with a version newer than
    /// whatever the key held, and returns that version (to replicate with the record).
    /// `None` when the key or value is too long, the record is already expired, or a
    /// purge newer than `now_ms` covers it (only with clock skew).
    pub fn add_local(
        &self,
        table: TableId,
        key: &[u8],
        value: Secret,
        expires_ms: u64,
        now_ms: u64,
        origin: u32,
    ) -> Option<Version> {
        self.write_local(table, key, Some(value), expires_ms, now_ms, origin, false)
    }

    /// A local UPDATE: replaces the value of a live entry (and its expiry); `None` when
    /// there is none. Returns the new version.
    pub fn update_local(
        &self,
        table: TableId,
        key: &[u8],
        value: Secret,
        expires_ms: u64,
        now_ms: u64,
        origin: u32,
    ) -> Option<Version> {
        self.write_local(table, key, Some(value), expires_ms, now_ms, origin, true)
    }

    /// A local DELETE: leaves a tombstone until the entry would have expired (or for
    /// [`LocalConfig::tombstone_ms`] when there was none). Returns the tombstone's
    /// version and expiry, to replicate.
    pub fn delete_local(
        &self,
        table: TableId,
        key: &[u8],
        now_ms: u64,
        origin: u32,
    ) -> Option<(Version, u64)> {
        let full = FullKey::new(table, key)?;
        let mut s = self.shard(full.bytes());
        let (version, expires_ms) = match s.map.get(full.bytes()) {
            Some(e) => {
                let exp = if e.value.is_some() && now_ms < e.expires_ms {
                    e.expires_ms
                } else {
                    now_ms.saturating_add(self.cfg.tombstone_ms)
                };
                (bump(e.version, now_ms, origin), exp)
            }
            None => (
                Version {
                    updated_ms: now_ms,
                    origin,
                },
                now_ms.saturating_add(self.cfg.tombstone_ms),
            ),
        };
        if !s.map.contains_key(full.bytes()) {
            let n = s.evict_for_one(self.per_shard);
            self.evictions.fetch_add(n, Ordering::Relaxed);
        }
        s.put(full.bytes(), None, expires_ms, version);
        Some((version, expires_ms))
    }

    #[allow(clippy::too_many_arguments)]
    fn write_local(
        &self,
        table: TableId,
        key: &[u8],
        value: Option<Secret>,
        expires_ms: u64,
        now_ms: u64,
        origin: u32,
        only_existing: bool,
    ) -> Option<Version> {
        if value.as_ref().is_some_and(|v| v.bytes().len() > MAX_VALUE) || expires_ms <= now_ms {
            return None;
        }
        let full = FullKey::new(table, key)?;
        let purges = self.purges();
        let mut s = self.shard(full.bytes());
        let version = match s.map.get(full.bytes()) {
            Some(e) if only_existing && (e.value.is_none() || now_ms >= e.expires_ms) => {
                return None
            }
            Some(e) => bump(e.version, now_ms, origin),
            None if only_existing => return None,
            None => Version {
                updated_ms: now_ms,
                origin,
            },
        };
        if purges.covers(table, version) {
            self.stale.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        drop(purges);
        if !s.map.contains_key(full.bytes()) {
            let n = s.evict_for_one(self.per_shard);
            self.evictions.fetch_add(n, Ordering::Relaxed);
        }
        s.put(full.bytes(), value, expires_ms, version);
        Some(version)
    }

    /// Merge a record from another node (ADD, UPDATE, DELETE as a tombstone, a sync
    /// chunk, a repository or peer answer): stored only if its version is newer than
    /// what the key holds and no purge covers it.
    pub fn merge(&self, rec: Record, now_ms: u64) -> Applied {
        if rec
            .value
            .as_ref()
            .is_some_and(|v| v.bytes().len() > MAX_VALUE)
        {
            return Applied::TooLarge;
        }
        let keep_until = if rec.value.is_some() {
            rec.expires_ms
        } else {
            rec.expires_ms.saturating_add(self.cfg.skew_ms)
        };
        if keep_until <= now_ms {
            return Applied::Expired;
        }
        let Some(full) = FullKey::new(rec.table, &rec.key) else {
            return Applied::TooLarge;
        };
        let purges = self.purges();
        if purges.covers(rec.table, rec.version) {
            drop(purges);
            self.stale.fetch_add(1, Ordering::Relaxed);
            return Applied::Stale;
        }
        let mut s = self.shard(full.bytes());
        drop(purges);
        match s.map.get(full.bytes()) {
            Some(e) if e.version >= rec.version => {
                drop(s);
                self.stale.fetch_add(1, Ordering::Relaxed);
                return Applied::Stale;
            }
            Some(_) => {}
            None => {
                let n = s.evict_for_one(self.per_shard);
                self.evictions.fetch_add(n, Ordering::Relaxed);
            }
        }
        s.put(full.bytes(), rec.value, rec.expires_ms, rec.version);
        Applied::Stored
    }

    /// A local PURGE: empties the tables in `scope` and refuses older writes from now
    /// on. Returns the purge's version (to replicate) and how many records went.
    pub fn purge_local(&self, scope: PurgeScope, now_ms: u64, origin: u32) -> (Version, usize) {
        let version = Version {
            updated_ms: now_ms,
            origin,
        };
        (version, self.merge_purge(scope, version))
    }

    /// Apply a purge from another node: drops records of `scope` older than `version`
    /// and remembers it so older writes arriving late are refused.
    pub fn merge_purge(&self, scope: PurgeScope, version: Version) -> usize {
        {
            let mut p = self.purges.write().unwrap_or_else(|p| p.into_inner());
            let slot = match scope {
                PurgeScope::All => &mut p.all,
                PurgeScope::Table(t) => {
                    let v = p.tables.entry(t).or_default();
                    *v = (*v).max(version);
                    return self.drop_older(scope, version);
                }
            };
            *slot = Some(slot.map_or(version, |v| v.max(version)));
        }
        self.drop_older(scope, version)
    }

    fn drop_older(&self, scope: PurgeScope, version: Version) -> usize {
        let mut n = 0;
        for i in 0..self.shards.len() {
            let mut s = self.shard_at(i);
            let doomed: Vec<Box<[u8]>> = s
                .map
                .iter()
                .filter(|(k, e)| {
                    let (t, _) = split_key(k);
                    e.version < version
                        && (scope == PurgeScope::All || scope == PurgeScope::Table(t))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in doomed {
                s.remove(&k);
                n += 1;
            }
        }
        n
    }

    /// The purges this table remembers (for a joining node).
    pub fn purge_markers(&self) -> Vec<(PurgeScope, Version)> {
        let p = self.purges();
        let mut v: Vec<_> = p.all.map(|v| (PurgeScope::All, v)).into_iter().collect();
        v.extend(p.tables.iter().map(|(t, v)| (PurgeScope::Table(*t), *v)));
        v
    }

    /// Drop expired entries and tombstones past their time. Returns how many went.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let skew = self.cfg.skew_ms;
        let mut n = 0;
        for i in 0..self.shards.len() {
            let mut s = self.shard_at(i);
            let doomed: Vec<Box<[u8]>> = s
                .map
                .iter()
                .filter(|(_, e)| match e.value {
                    Some(_) => now_ms >= e.expires_ms,
                    None => now_ms >= e.expires_ms.saturating_add(skew),
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in doomed {
                s.remove(&k);
                n += 1;
            }
        }
        n
    }

    /// Records with a value held now (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|i| {
                let s = self.shard_at(i);
                s.map.len() - s.tombstones
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters and sizes.
    pub fn stats(&self) -> LocalStats {
        let mut st = LocalStats {
            capacity: self.cfg.capacity as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            ..LocalStats::default()
        };
        for i in 0..self.shards.len() {
            let s = self.shard_at(i);
            st.entries += (s.map.len() - s.tombstones) as u64;
            st.tombstones += s.tombstones as u64;
            st.bytes += s.bytes as u64;
        }
        st
    }

    /// `(records, digest)` over the records with a value live at `now_ms`: the digest
    /// is a sum of SHA-256 prefixes of (table, key, value, expiry, version), so it does
    /// not depend on insertion order, shard layout or the per-process hash key, and two
    /// nodes that converged report the same pair.
    pub fn digest(&self, now_ms: u64) -> (usize, u64) {
        let mut n = 0;
        let mut sum = 0u64;
        for i in 0..self.shards.len() {
            let s = self.shard_at(i);
            for (k, e) in &s.map {
                let Some(v) = &e.value else { continue };
                if now_ms >= e.expires_ms {
                    continue;
                }
                let mut b = Vec::with_capacity(k.len() + v.bytes().len() + 32);
                b.extend_from_slice(&(k.len() as u32).to_be_bytes());
                b.extend_from_slice(k);
                b.extend_from_slice(v.bytes());
                b.extend_from_slice(&e.expires_ms.to_be_bytes());
                b.extend_from_slice(&e.version.updated_ms.to_be_bytes());
                b.extend_from_slice(&e.version.origin.to_be_bytes());
                // SHA-256 of our own bytes cannot fail short of a broken library; a
                // zero then only makes the digests disagree, which a test would show.
                let h = hash(HashAlg::Sha256, &b).unwrap_or_default();
                let mut w = [0u8; 8];
                if h.len() >= 8 {
                    w.copy_from_slice(&h[..8]);
                }
                sum = sum.wrapping_add(u64::from_be_bytes(w));
                n += 1;
            }
        }
        (n, sum)
    }

    /// Start a snapshot for a joining node: the keys held now, read back in chunks by
    /// [`LocalTable::next_chunk`] (values as they are when the chunk is read; keys
    /// added later reach the joiner through replication).
    pub fn snapshot(&self) -> Snapshot {
        let mut keys = Vec::new();
        for i in 0..self.shards.len() {
            keys.extend(self.shard_at(i).map.keys().cloned());
        }
        Snapshot { keys, pos: 0 }
    }

    /// The next records of a snapshot (tombstones included, expired entries skipped),
    /// about `max_bytes` of keys and values; empty when the snapshot is done.
    pub fn next_chunk(&self, snap: &mut Snapshot, max_bytes: usize, now_ms: u64) -> Vec<Record> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while snap.pos < snap.keys.len() && (out.is_empty() || bytes < max_bytes) {
            let full = &snap.keys[snap.pos];
            let (table, key) = split_key(full);
            if let Some(r) = self.get_record(table, key, now_ms) {
                let size = key.len() + r.value.as_ref().map_or(0, |v| v.bytes().len()) + 32;
                if !out.is_empty() && bytes + size > max_bytes {
                    break;
                }
                bytes += size;
                out.push(r);
            }
            snap.pos += 1;
        }
        out
    }
}

/// Keys captured by [`LocalTable::snapshot`] and how far a sync has read them.
#[derive(Debug, Default)]
pub struct Snapshot {
    keys: Vec<Box<[u8]>>,
    pos: usize,
}

impl Snapshot {
    /// Whether every key has been read.
    pub fn done(&self) -> bool {
        self.pos >= self.keys.len()
    }

    /// Keys captured.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A version newer than `old` for a local write at `now_ms`: later than both, so a
/// write wins over the one it replaces even within one millisecond or behind a peer
/// whose clock runs ahead.
fn bump(old: Version, now_ms: u64, origin: u32) -> Version {
    let updated_ms = if now_ms > old.updated_ms {
        now_ms
    } else {
        old.updated_ms.saturating_add(1)
    };
    Version { updated_ms, origin }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TableId = TableId {
        kind: Kind::SESSION_ID,
        vserver: 7,
    };

    fn secret(b: &[u8]) -> Secret {
        Secret::new(b.to_vec())
    }

    fn table(capacity: usize) -> LocalTable {
        LocalTable::new(LocalConfig {
            capacity,
            shards: 4,
            tombstone_ms: 1_000,
            skew_ms: 100,
        })
    }

    fn rec(key: &[u8], value: Option<&[u8]>, expires_ms: u64, updated_ms: u64) -> Record {
        Record {
            table: T,
            key: key.to_vec(),
            value: value.map(secret),
            expires_ms,
            version: Version {
                updated_ms,
                origin: 9,
            },
        }
    }

    #[test]
    fn add_get_upsert_and_counters() {
        let t = table(100);
        assert!(t
            .add_local(T, b"id1", secret(b"one"), 5_000, 1_000, 1)
            .is_some());
        assert_eq!(t.get(T, b"id1", 1_001).unwrap().bytes(), b"one");
        // A second ADD in the same millisecond replaces the first (the seed's upsert).
        let v1 = t.get_record(T, b"id1", 1_000).unwrap().version;
        let v2 = t
            .add_local(T, b"id1", secret(b"two"), 5_000, 1_000, 1)
            .unwrap();
        assert!(v2 > v1);
        assert_eq!(t.get(T, b"id1", 1_002).unwrap().bytes(), b"two");
        assert!(t.get(T, b"nope", 1_002).is_none());
        let st = t.stats();
        assert_eq!((st.entries, st.hits, st.misses), (1, 2, 1));
        assert_eq!(st.bytes, 3 + 3 + 3);
    }

    #[test]
    fn tables_are_separate() {
        let other = TableId::sessions(8);
        let tickets = TableId {
            kind: Kind::TICKET_KEY,
            vserver: 7,
        };
        t_add(&table(10), T, other, tickets);
        fn t_add(t: &LocalTable, a: TableId, b: TableId, c: TableId) {
            t.add_local(a, b"same", secret(b"a"), 100, 0, 1).unwrap();
            assert!(t.get(b, b"same", 1).is_none());
            assert!(t.get(c, b"same", 1).is_none());
            t.add_local(b, b"same", secret(b"b"), 100, 0, 1).unwrap();
            assert_eq!(t.get(a, b"same", 1).unwrap().bytes(), b"a");
            assert_eq!(t.get(b, b"same", 1).unwrap().bytes(), b"b");
        }
    }

    #[test]
    fn expiry_is_by_the_callers_clock() {
        let t = table(10);
        t.add_local(T, b"k", secret(b"v"), 2_000, 1_000, 1).unwrap();
        assert!(t.get(T, b"k", 1_999).is_some());
        assert!(t.get(T, b"k", 2_000).is_none());
        assert_eq!(t.stats().expired, 1);
        assert_eq!(t.len(), 0);
        // Already expired when written: refused.
        assert!(t
            .add_local(T, b"k", secret(b"v"), 2_000, 2_000, 1)
            .is_none());
        assert_eq!(t.merge(rec(b"k", Some(b"v"), 10, 5), 10), Applied::Expired);
    }

    #[test]
    fn capacity_evicts_oldest_first() {
        let t = LocalTable::new(LocalConfig {
            capacity: 3,
            shards: 1,
            ..LocalConfig::default()
        });
        for k in [b"a", b"b", b"c"] {
            t.add_local(T, k, secret(k), 100, 0, 1).unwrap();
        }
        // Overwriting "a" keeps its place: it is still the oldest.
        t.add_local(T, b"a", secret(b"A"), 100, 0, 1).unwrap();
        t.add_local(T, b"d", secret(b"d"), 100, 0, 1).unwrap();
        assert!(t.get(T, b"a", 1).is_none());
        for k in [b"b", b"c", b"d"] {
            assert!(t.get(T, k, 1).is_some());
        }
        assert_eq!(t.stats().evictions, 1);
        assert_eq!(t.len(), 3);
        // Many keys through a small table: bounded, eviction queue compacts.
        for i in 0..1_000u32 {
            t.add_local(T, &i.to_be_bytes(), secret(b"x"), 100, 0, 1)
                .unwrap();
            if i % 3 == 0 {
                t.delete_local(T, &i.to_be_bytes(), 0, 1);
            }
        }
        assert!(t.stats().entries + t.stats().tombstones <= 3);
    }

    #[test]
    fn update_only_replaces_live_entries() {
        let t = table(10);
        assert!(t.update_local(T, b"k", secret(b"v"), 100, 0, 1).is_none());
        t.add_local(T, b"k", secret(b"v"), 100, 0, 1).unwrap();
        assert!(t.update_local(T, b"k", secret(b"w"), 200, 1, 1).is_some());
        assert_eq!(t.get(T, b"k", 150).unwrap().bytes(), b"w");
        assert!(t.update_local(T, b"k", secret(b"x"), 300, 250, 1).is_none());
    }

    #[test]
    fn last_writer_wins_whatever_the_order() {
        let a = table(10);
        let b = table(10);
        let old = rec(b"k", Some(b"old"), 1_000, 10);
        let new = rec(b"k", Some(b"new"), 1_000, 20);
        assert_eq!(a.merge(old.clone(), 0), Applied::Stored);
        assert_eq!(a.merge(new.clone(), 0), Applied::Stored);
        assert_eq!(b.merge(new.clone(), 0), Applied::Stored);
        assert_eq!(b.merge(old, 0), Applied::Stale);
        assert_eq!(
            b.merge(new, 0),
            Applied::Stale,
            "a duplicate is not applied twice"
        );
        assert_eq!(a.digest(0), b.digest(0));
        assert_eq!(a.get(T, b"k", 0).unwrap().bytes(), b"new");
        // Equal times: the higher origin wins on every node.
        let mut x = rec(b"j", Some(b"x"), 1_000, 30);
        x.version.origin = 1;
        let mut y = rec(b"j", Some(b"y"), 1_000, 30);
        y.version.origin = 2;
        a.merge(x.clone(), 0);
        a.merge(y.clone(), 0);
        b.merge(y, 0);
        b.merge(x, 0);
        assert_eq!(a.digest(0), b.digest(0));
    }

    #[test]
    fn delete_leaves_a_tombstone_a_late_add_cannot_pass() {
        let t = table(10);
        t.merge(rec(b"k", Some(b"v"), 5_000, 10), 0);
        let (v, exp) = t.delete_local(T, b"k", 20, 1).unwrap();
        assert!(v.updated_ms >= 20);
        assert_eq!(exp, 5_000, "kept until the entry would have expired");
        assert!(t.get(T, b"k", 21).is_none());
        // The ADD the delete replaced arrives again (a retransmit): refused.
        assert_eq!(
            t.merge(rec(b"k", Some(b"v"), 5_000, 10), 30),
            Applied::Stale
        );
        assert_eq!(t.stats().tombstones, 1);
        assert_eq!(t.len(), 0);
        // A delete of an unknown key also fences older writes.
        t.delete_local(T, b"u", 100, 1).unwrap();
        assert_eq!(
            t.merge(rec(b"u", Some(b"v"), 5_000, 50), 101),
            Applied::Stale
        );
        // Tombstones go after their time plus skew.
        assert_eq!(t.sweep(1_199), 0);
        assert_eq!(
            t.sweep(1_200),
            1,
            "the unknown key's tombstone: 1_000 ms + skew"
        );
        assert_eq!(t.sweep(5_099), 0);
        assert_eq!(t.sweep(5_100), 1);
        assert_eq!(t.stats().tombstones, 0);
    }

    #[test]
    fn purge_all_or_one_table_and_fence_older_writes() {
        let t = table(100);
        let other = TableId::sessions(8);
        t.add_local(T, b"a", secret(b"1"), 1_000, 10, 1).unwrap();
        t.add_local(other, b"b", secret(b"2"), 1_000, 10, 1)
            .unwrap();
        let (_, n) = t.purge_local(PurgeScope::Table(T), 20, 1);
        assert_eq!(n, 1);
        assert!(t.get(T, b"a", 21).is_none());
        assert!(t.get(other, b"b", 21).is_some());
        // A write made before the purge, arriving after it, is refused.
        assert_eq!(
            t.merge(rec(b"a", Some(b"1"), 1_000, 15), 22),
            Applied::Stale
        );
        let (_, n) = t.purge_local(PurgeScope::All, 30, 1);
        assert_eq!(n, 1);
        assert!(t.is_empty());
        assert_eq!(t.purge_markers().len(), 2);
        // Writes after the purge are fine.
        assert!(t.add_local(T, b"a", secret(b"3"), 1_000, 31, 1).is_some());
    }

    #[test]
    fn too_large_is_refused() {
        let t = table(10);
        assert!(t
            .add_local(T, &[0; MAX_KEY + 1], secret(b"v"), 10, 0, 1)
            .is_none());
        assert!(t
            .add_local(T, b"k", Secret::new(vec![0; MAX_VALUE + 1]), 10, 0, 1)
            .is_none());
        let mut r = rec(b"k", Some(b"v"), 10, 1);
        r.key = vec![0; MAX_KEY + 1];
        assert_eq!(t.merge(r, 0), Applied::TooLarge);
        assert!(t.get(T, &[0; MAX_KEY + 1], 0).is_none());
    }

    #[test]
    fn snapshot_in_chunks_copies_everything() {
        let src = table(10_000);
        for i in 0..1_000u32 {
            src.add_local(T, &i.to_be_bytes(), secret(&[i as u8; 40]), 10_000, 0, 1)
                .unwrap();
        }
        src.delete_local(T, &5u32.to_be_bytes(), 1, 1);
        let dst = table(10_000);
        let mut snap = src.snapshot();
        assert_eq!(snap.len(), 1_000);
        let mut chunks = 0;
        loop {
            let c = src.next_chunk(&mut snap, 1_200, 2);
            if c.is_empty() {
                break;
            }
            assert!(c.len() <= 1_200 / 40);
            chunks += 1;
            for r in c {
                assert_eq!(dst.merge(r, 2), Applied::Stored);
            }
        }
        assert!(snap.done());
        assert!(chunks > 30);
        assert_eq!(dst.digest(3), src.digest(3));
        assert_eq!(dst.digest(3).0, 999);
        assert_eq!(dst.stats().tombstones, 1);
    }

    #[test]
    fn shared_by_threads() {
        let t = std::sync::Arc::new(table(100_000));
        let hs: Vec<_> = (0..4u32)
            .map(|n| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000u32 {
                        let k = [n.to_be_bytes(), i.to_be_bytes()].concat();
                        t.add_local(T, &k, secret(b"v"), 100, 0, n).unwrap();
                        assert!(t.get(T, &k, 1).is_some());
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(t.len(), 8_000);
        assert_eq!(t.stats().hits, 8_000);
    }
}
