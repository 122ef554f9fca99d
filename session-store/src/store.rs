//! The facade the appliance wires in: one [`Store`] per process, shared (`Arc`) by every
//! poll-mode core, over the local table, the peer tier and the repository tier.
//!
//! - [`Store::get`] answers from the local table at once; on a miss, with another tier
//!   configured, it returns a [`PendingGet`] that asks the peers first (the first reply
//!   with the value wins), then the repository, all within `lookup_timeout`; polling it
//!   never blocks, and past the deadline it is a miss counted as a timeout.
//! - [`Store::add`], [`Store::update`], [`Store::delete`], [`Store::purge`] apply to the
//!   local table on the calling core and post the write to the peer thread and the Redis
//!   agents (`try_send`: a full queue is counted, never waited on).
//! - [`Store::stats`] is a serde snapshot for `appliancectl show session-store` /
//!   `show cluster` and the metrics.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crypto_offload::Secret;
use serde::Serialize;

use crate::local::{LocalConfig, LocalStats, LocalTable, PurgeScope, TableId};
use crate::net::{ClusterConfig, PeerLookup, PeerRuntime, RuntimeOptions};
use crate::peer::{Op, PeerConfig, PeerStats};
use crate::redis::{RedisConfig, RepoLookup, RepoStats, Repository};
use crate::seal::{ClusterKey, KeyError, RingKey};

/// Everything a [`Store`] needs. Without `cluster` and `redis` it is the local tier only.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This node's name (`[cluster] node`); the origin of its writes' versions.
    pub node: String,
    pub local: LocalConfig,
    /// How long a lookup that missed locally may wait for the other tiers.
    pub lookup_timeout: Duration,
    /// The cluster key file (`[cluster] key_file`): required with peers or Redis.
    pub key_file: Option<PathBuf>,
    /// `[cluster]`: the peer tier is on.
    pub cluster: Option<ClusterConfig>,
    /// Protocol tuning; `None`: [`ClusterConfig::peer_config`]'s defaults.
    pub peer: Option<PeerConfig>,
    pub runtime: RuntimeOptions,
    /// `[session_store] redis`: the repository tier is on.
    pub redis: Option<RedisConfig>,
}

impl StoreConfig {
    /// A local-only store for `node`.
    pub fn local(node: &str, local: LocalConfig) -> Self {
        StoreConfig {
            node: node.to_string(),
            local,
            lookup_timeout: Duration::from_millis(5),
            key_file: None,
            cluster: None,
            peer: None,
            runtime: RuntimeOptions::default(),
            redis: None,
        }
    }
}

/// Why a store did not start. Nothing starts half-configured.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the peer and repository tiers need a cluster key file ([cluster] key_file)")]
    NoKey,
    #[error("cluster listen {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("repository: {0}")]
    Repository(String),
}

#[derive(Debug, Default)]
struct Counters {
    lookups: AtomicU64,
    hits_local: AtomicU64,
    hits_peer: AtomicU64,
    hits_repository: AtomicU64,
    misses: AtomicU64,
    timeouts: AtomicU64,
}

/// Lookups by where they were answered, for operators.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LookupStats {
    pub lookups: u64,
    pub hits_local: u64,
    pub hits_peer: u64,
    pub hits_repository: u64,
    pub misses: u64,
    /// Lookups whose deadline passed (the handshake went on in full).
    pub timeouts: u64,
}

/// The peer tier's snapshot with the runtime's own counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterStats {
    #[serde(flatten)]
    pub peer: PeerStats,
    /// Writes or lookups refused because the channel to the peer thread was full.
    pub channel_full: u64,
    pub send_errors: u64,
}

/// Everything `show session-store` and `show cluster` print.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreStats {
    pub node: String,
    pub key_fingerprint: Option<String>,
    pub local: LocalStats,
    pub lookups: LookupStats,
    pub cluster: Option<ClusterStats>,
    pub repository: Option<RepoStats>,
}

/// The answer to [`Store::get`].
#[derive(Debug)]
pub enum StoreLookup {
    /// Answered at once (a local hit, or a miss with no other tier to ask).
    Ready(Option<Secret>),
    /// Asked the other tiers; poll it.
    Pending(PendingGet),
}

#[derive(Debug)]
enum Stage {
    Peers(PeerLookup),
    Repository(RepoLookup),
    Done,
}

/// A lookup in the peer and repository tiers. [`PendingGet::poll`] never blocks and
/// has the shape of `tls::PendingLookup::poll`, so the appliance wraps it as is.
#[derive(Debug)]
pub struct PendingGet {
    stage: Stage,
    table: TableId,
    key: Vec<u8>,
    deadline: Instant,
    repo: Option<Arc<Repository>>,
    counters: Arc<Counters>,
}

impl PendingGet {
    /// `None`: not answered yet. `Some(Some(v))`: a peer or the repository had it (it is
    /// in the local table now too). `Some(None)`: a miss, or the deadline passed.
    pub fn poll(&mut self) -> Option<Option<Secret>> {
        loop {
            match &mut self.stage {
                Stage::Done => return Some(None),
                Stage::Peers(p) => match p.poll() {
                    Some(Some(v)) => {
                        self.counters.hits_peer.fetch_add(1, Ordering::Relaxed);
                        self.stage = Stage::Done;
                        return Some(Some(v));
                    }
                    Some(None) => {
                        // Every peer missed: the repository next, within the same deadline.
                        let r = self
                            .repo
                            .as_ref()
                            .and_then(|r| r.get(self.table, &self.key, self.deadline));
                        match r {
                            Some(r) => self.stage = Stage::Repository(r),
                            None => return self.finish_miss(),
                        }
                    }
                    None => return self.check_deadline(),
                },
                Stage::Repository(r) => match r.poll() {
                    Some(Some(v)) => {
                        self.counters
                            .hits_repository
                            .fetch_add(1, Ordering::Relaxed);
                        self.stage = Stage::Done;
                        return Some(Some(v));
                    }
                    // The repository counts its own timeouts; a miss here either way.
                    Some(None) => {
                        if Instant::now() >= self.deadline {
                            self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                            self.stage = Stage::Done;
                            return Some(None);
                        }
                        return self.finish_miss();
                    }
                    None => return None,
                },
            }
        }
    }

    fn finish_miss(&mut self) -> Option<Option<Secret>> {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        self.stage = Stage::Done;
        Some(None)
    }

    fn check_deadline(&mut self) -> Option<Option<Secret>> {
        if Instant::now() < self.deadline {
            return None;
        }
        self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
        self.stage = Stage::Done;
        Some(None)
    }
}

impl Drop for PendingGet {
    /// A lookup given up before it was answered (the engine's own deadline passed
    /// first) is a timeout too.
    fn drop(&mut self) {
        if !matches!(self.stage, Stage::Done) {
            self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The session store of one node.
pub struct Store {
    node: String,
    origin: u32,
    local: Arc<LocalTable>,
    key: Option<Arc<ClusterKey>>,
    peers: Option<PeerRuntime>,
    repo: Option<Arc<Repository>>,
    lookup_timeout: Duration,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Store({}: local{}{})",
            self.node,
            if self.peers.is_some() { " + peers" } else { "" },
            if self.repo.is_some() { " + redis" } else { "" }
        )
    }
}

impl Store {
    /// Load the key, bind the cluster socket, start the threads. Errors name what failed
    /// (the key file and its mode, the listen address).
    pub fn start(cfg: StoreConfig) -> Result<Store, StoreError> {
        let origin = crate::node_id(&cfg.node);
        let local = Arc::new(LocalTable::new(cfg.local.clone()));
        let needs_key = cfg.cluster.is_some() || cfg.redis.is_some();
        let key = match (&cfg.key_file, needs_key) {
            (Some(p), _) => Some(Arc::new(ClusterKey::load(p)?)),
            (None, true) => return Err(StoreError::NoKey),
            (None, false) => None,
        };
        let peers = match (&cfg.cluster, &key) {
            (Some(c), Some(k)) => {
                let pc = cfg.peer.clone().unwrap_or_else(|| c.peer_config());
                Some(
                    PeerRuntime::start(c.listen, pc, k.clone(), local.clone(), cfg.runtime.clone())
                        .map_err(|source| StoreError::Listen {
                            addr: c.listen,
                            source,
                        })?,
                )
            }
            _ => None,
        };
        let repo = match (&cfg.redis, &key) {
            (Some(r), Some(k)) if !r.servers.is_empty() => Some(Arc::new(
                Repository::start(r.clone(), k.clone(), origin, local.clone())
                    .map_err(|e| StoreError::Repository(e.to_string()))?,
            )),
            _ => None,
        };
        Ok(Store {
            node: cfg.node,
            origin,
            local,
            key,
            peers,
            repo,
            lookup_timeout: cfg.lookup_timeout,
            counters: Arc::new(Counters::default()),
        })
    }

    /// The local table (for tests and operators).
    pub fn local(&self) -> &Arc<LocalTable> {
        &self.local
    }

    /// Whether the peer tier has joined (always true without one).
    pub fn ready(&self) -> bool {
        self.peers.as_ref().is_none_or(|p| p.ready())
    }

    /// Look `key` up in `table`: the local table now, the other tiers within the
    /// lookup timeout. Never blocks.
    pub fn get(&self, table: TableId, key: &[u8], now_ms: u64) -> StoreLookup {
        self.counters.lookups.fetch_add(1, Ordering::Relaxed);
        if let Some(v) = self.local.get(table, key, now_ms) {
            self.counters.hits_local.fetch_add(1, Ordering::Relaxed);
            return StoreLookup::Ready(Some(v));
        }
        let deadline = Instant::now() + self.lookup_timeout;
        let stage = if let Some(p) = self.peers.as_ref().and_then(|p| p.get(table, key)) {
            Stage::Peers(p)
        } else if let Some(r) = self.repo.as_ref().and_then(|r| r.get(table, key, deadline)) {
            Stage::Repository(r)
        } else {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return StoreLookup::Ready(None);
        };
        StoreLookup::Pending(PendingGet {
            stage,
            table,
            key: key.to_vec(),
            deadline,
            repo: self.repo.clone(),
            counters: self.counters.clone(),
        })
    }

    /// ADD (upsert) `value` under `key` until `expires_ms`, here and in the other tiers.
    /// `false` if the local table refused it (too large, already expired).
    pub fn add(
        &self,
        table: TableId,
        key: &[u8],
        value: Secret,
        expires_ms: u64,
        now_ms: u64,
    ) -> bool {
        let Some(version) =
            self.local
                .add_local(table, key, value.clone(), expires_ms, now_ms, self.origin)
        else {
            return false;
        };
        if let Some(r) = &self.repo {
            r.put(table, key, value.clone(), expires_ms, version);
        }
        if let Some(p) = &self.peers {
            p.submit(Op::Add {
                table,
                key: key.to_vec(),
                value,
                expires_ms,
                version,
            });
        }
        true
    }

    /// UPDATE a live entry; `false` when there is none here.
    pub fn update(
        &self,
        table: TableId,
        key: &[u8],
        value: Secret,
        expires_ms: u64,
        now_ms: u64,
    ) -> bool {
        let Some(version) =
            self.local
                .update_local(table, key, value.clone(), expires_ms, now_ms, self.origin)
        else {
            return false;
        };
        if let Some(r) = &self.repo {
            r.put(table, key, value.clone(), expires_ms, version);
        }
        if let Some(p) = &self.peers {
            p.submit(Op::Update {
                table,
                key: key.to_vec(),
                value,
                expires_ms,
                version,
            });
        }
        true
    }

    /// DELETE everywhere (a tombstone in the local and peer tiers).
    pub fn delete(&self, table: TableId, key: &[u8], now_ms: u64) {
        let Some((version, expires_ms)) = self.local.delete_local(table, key, now_ms, self.origin)
        else {
            return;
        };
        if let Some(r) = &self.repo {
            r.delete(table, key);
        }
        if let Some(p) = &self.peers {
            p.submit(Op::Delete {
                table,
                key: key.to_vec(),
                expires_ms,
                version,
            });
        }
    }

    /// PURGE everywhere (`appliancectl flush session-store`). Returns how many local
    /// records went.
    pub fn purge(&self, scope: PurgeScope, now_ms: u64) -> usize {
        let (version, n) = self.local.purge_local(scope, now_ms, self.origin);
        if let Some(r) = &self.repo {
            r.purge(scope);
        }
        if let Some(p) = &self.peers {
            p.submit(Op::Purge { scope, version });
        }
        n
    }

    /// The cluster ticket keys `vserver` needs at `now_ms` (see
    /// [`ClusterKey::ticket_ring`]); `None` without a cluster key.
    pub fn ticket_ring(
        &self,
        vserver: u16,
        now_ms: u64,
        rotation_ms: u64,
        lifetime_ms: u64,
    ) -> Option<Vec<RingKey>> {
        self.key
            .as_ref()
            .map(|k| k.ticket_ring(vserver, now_ms, rotation_ms, lifetime_ms))
    }

    /// A snapshot of every tier's counters.
    pub fn stats(&self) -> StoreStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.counters;
        StoreStats {
            node: self.node.clone(),
            key_fingerprint: self.key.as_ref().map(|k| k.fingerprint_hex()),
            local: self.local.stats(),
            lookups: LookupStats {
                lookups: l(&c.lookups),
                hits_local: l(&c.hits_local),
                hits_peer: l(&c.hits_peer),
                hits_repository: l(&c.hits_repository),
                misses: l(&c.misses),
                timeouts: l(&c.timeouts),
            },
            cluster: self.peers.as_ref().and_then(|p| p.stats()).map(
                |(peer, channel_full, send_errors)| ClusterStats {
                    peer,
                    channel_full,
                    send_errors,
                },
            ),
            repository: self.repo.as_ref().map(|r| r.stats()),
        }
    }

    /// Stop the threads (the peer thread at once; Redis agents once no lookup holds
    /// them).
    pub fn shutdown(self) {
        if let Some(p) = self.peers {
            p.shutdown();
        }
    }
}
