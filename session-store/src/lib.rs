//! The cluster-wide TLS session cache (seed 000, issue 23).
//!
//! This crate owns everything about the shared session cache except TLS itself: the
//! record format and the local table ([`local`]), the cluster key and the sealing of
//! everything that leaves a node ([`seal`]), the cluster wire format ([`wire`]), the peer
//! replication protocol as a sans-IO state machine ([`peer`]), the threads that drive it
//! over UDP ([`net`]), the Redis repository agent ([`redis`]), and the [`Store`] facade
//! that ties the tiers together for the appliance.
//!
//! Values are opaque bytes: the crate knows nothing of TLS sessions, DPDK or smoltcp.
//!
//! # Wiring it in
//! The daemon builds one [`Store`] from `[cluster]` and `[session_store]` and shares
//! it with every core; a core looks up and stores without blocking:
//! ```no_run
//! use std::time::Duration;
//! use session_store::{
//!     unix_ms, ClusterConfig, LocalConfig, RedisConfig, Store, StoreConfig, StoreLookup, TableId,
//! };
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = ClusterConfig {
//!     node: "a".into(),
//!     listen: "10.80.0.1:7946".parse()?,
//!     peers: vec!["10.80.0.2:7946".parse()?, "10.80.0.3:7946".parse()?],
//!     multicast: None,
//!     key_file: "cluster.key".into(),
//! };
//! let mut cfg = StoreConfig::local("a", LocalConfig::default());
//! cfg.lookup_timeout = Duration::from_millis(5);
//! cfg.key_file = Some(cluster.key_file.clone());
//! cfg.cluster = Some(cluster);
//! cfg.redis = Some(RedisConfig::new(vec!["10.80.0.100:6379".into()]));
//! let store = std::sync::Arc::new(Store::start(cfg)?); // threads start here
//!
//! // On a poll-mode core:
//! let table = TableId::sessions(1);
//! match store.get(table, b"session id", unix_ms()) {
//!     StoreLookup::Ready(hit) => { /* resume or go on in full */ }
//!     StoreLookup::Pending(mut p) => {
//!         // Poll on later loop passes: None = not yet; Some(hit) = the answer.
//!         let _ = p.poll();
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # What it must not do
//! - Block a caller that is a poll-mode core. Core-facing calls ([`Store::get`],
//!   [`Store::add`], ..., and polling a pending lookup) take a shard lock for one map
//!   operation at most and post to bounded queues with `try_send`: a full queue is
//!   counted, never waited on. Sockets, Redis and sealing run on the crate's own threads.
//! - Read a clock in the table or the protocol: times are wall-clock Unix milliseconds
//!   passed in by the caller (records cross machines), and the protocol engine takes
//!   `now` as an argument so tests drive it with a logical clock.
//! - Let a secret leave the node unsealed, appear in a log or `Debug` output, or outlive
//!   its use unwiped.

pub mod local;
pub mod net;
pub mod peer;
pub mod redis;
pub mod seal;
pub mod store;
pub mod wire;

pub use self::redis::{RedisConfig, RepoLookup, RepoStats, Repository, ServerStats};
pub use local::{
    Applied, Kind, LocalConfig, LocalStats, LocalTable, PurgeScope, Record, Snapshot, TableId,
    Version,
};
pub use net::{unix_ms, ClusterConfig, PeerLookup, PeerRuntime, RuntimeOptions};
pub use peer::{Delay, Dest, Event, Op, Peer, PeerConfig, PeerCounters, PeerStats, Transmit};
pub use seal::{ticket_epoch, ClusterKey, KeyError, RingKey, SealError, Sealer};
pub use store::{
    ClusterStats, LookupStats, PendingGet, Store, StoreConfig, StoreError, StoreLookup, StoreStats,
};
pub use wire::NodeState;

/// A node's 32-bit id, derived from its configured name: the first four bytes of
/// SHA-256("session-store node" || name). It is the `origin` of the node's versions and
/// the sender id in its messages; names are unique in a cluster (a collision of two
/// names' ids is detected and counted by the peer tier).
pub fn node_id(name: &str) -> u32 {
    let mut b = Vec::with_capacity(18 + name.len());
    b.extend_from_slice(b"session-store node");
    b.extend_from_slice(name.as_bytes());
    let h = crypto_offload::prim::hash(crypto_offload::HashAlg::Sha256, &b).unwrap_or_default();
    let mut w = [0u8; 4];
    if h.len() >= 4 {
        w.copy_from_slice(&h[..4]);
    }
    u32::from_be_bytes(w)
}
