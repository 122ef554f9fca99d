//! TLS sessions as the engine sees them, kept in the node's one session store
//! (`session_store::Store`, started by [`start`]).
//!
//! - **Session IDs (TLS 1.2):** each `tls` vserver with a `session_cache` is a table of
//!   the store ([`table_of`]: a 16-bit id from its name, the same on every node, so a
//!   session of one vserver never resumes on another). The engine's
//!   `tls::SessionStore` is [`VserverSessions`]: a lookup answers at once from the local
//!   table, or, in a cluster, asks the peers and the repository and is polled by the
//!   handshake until `[session_store] lookup_timeout`, past which the handshake goes
//!   on in full. Without `[cluster]` the store is this node's alone.
//! - **Tickets (TLS 1.2 tickets, TLS 1.3 PSK):** without a cluster, each vserver's ring
//!   makes its own random keys. In a cluster, its keys are derived from the cluster key
//!   for each rotation epoch ([`ClusterTickets`]), so every node seals and opens with the
//!   same keys and rotates at the same moment, with no message exchanged.
//!
//! Times are the cores' clock ([`crate::now_ms`]: Unix milliseconds).

use std::sync::Arc;

use crypto_offload::{Secret, SourcedKey, TicketKeySource, TicketKeys};
use session_store::{
    ClusterConfig as StoreCluster, LocalConfig, PendingGet, RedisConfig, Store, StoreConfig,
    StoreLookup, TableId,
};

use crate::config::{Config, Vserver};

/// The session table id of the vserver named `name`: the first two bytes of SHA-256
/// over a label and the name (stable across restarts, reloads and nodes).
pub fn table_of(name: &str) -> u16 {
    let mut b = b"appliance vserver sessions ".to_vec();
    b.extend_from_slice(name.as_bytes());
    let h = crypto_offload::prim::hash(crypto_offload::HashAlg::Sha256, &b).unwrap_or_default();
    u16::from_be_bytes([
        h.first().copied().unwrap_or(0),
        h.get(1).copied().unwrap_or(0),
    ])
}

/// Starts this node's store: the local table (sized by `[session_store] entries`, or
/// the vservers' `session_cache` together), and with `[cluster]` the peer tier and with
/// `[session_store] redis` the repository tier. Errors name what failed.
pub fn start(cfg: &Config) -> Result<Arc<Store>, String> {
    let node = cfg
        .cluster
        .as_ref()
        .map_or_else(|| "local".to_string(), |c| c.node.clone());
    let capacity = cfg
        .session_store
        .entries
        .unwrap_or_else(|| cfg.vservers.iter().map(|v| v.session_cache).sum::<usize>())
        .max(1);
    let mut sc = StoreConfig::local(
        &node,
        LocalConfig {
            capacity,
            ..LocalConfig::default()
        },
    );
    sc.lookup_timeout = cfg.session_store.lookup_timeout;
    if let Some(c) = &cfg.cluster {
        sc.key_file = Some(c.key_file.clone());
    }
    // The peer tier, when there are peers to find (without any, only the repository is
    // shared).
    if let Some(c) = cfg
        .cluster
        .as_ref()
        .filter(|c| !c.peers.is_empty() || c.multicast.is_some())
    {
        sc.cluster = Some(StoreCluster {
            node: c.node.clone(),
            listen: std::net::SocketAddr::V4(c.listen),
            peers: c
                .peers
                .iter()
                .map(|&p| std::net::SocketAddr::V4(p))
                .collect(),
            multicast: c.multicast.map(std::net::SocketAddr::V4),
            key_file: c.key_file.clone(),
        });
    }
    if !cfg.session_store.redis.is_empty() {
        sc.redis = Some(RedisConfig::new(
            cfg.session_store
                .redis
                .iter()
                .map(|a| a.to_string())
                .collect(),
        ));
    }
    let store = Store::start(sc).map_err(|e| format!("session store: {e}"))?;
    Ok(Arc::new(store))
}

/// Gives a `tls` vserver its session-ID table in `store`, the store's lookup deadline,
/// and in a cluster its cluster-derived ticket keys. Tickets of a vserver outside a
/// cluster stay the ring its configuration made (carried over by reloads).
pub fn attach(v: &mut Vserver, store: &Arc<Store>, cfg: &Config) {
    let Some(t) = &v.tls else { return };
    let mut t = (**t).clone();
    let table = table_of(&v.name);
    t.resumption.store = (v.session_cache > 0).then(|| {
        Arc::new(VserverSessions {
            store: store.clone(),
            table: TableId::sessions(table),
            capacity: v.session_cache,
        }) as Arc<dyn tls::SessionStore>
    });
    t.resumption.lookup_timeout_ms = cfg.session_store.lookup_timeout.as_millis() as u64;
    if cfg.cluster.is_some() {
        if let Some(own) = &t.resumption.tickets {
            let (rotation_ms, lifetime_ms) = (own.rotation_ms(), own.lifetime_ms());
            t.resumption.tickets = Some(Arc::new(TicketKeys::sourced(
                rotation_ms,
                lifetime_ms,
                Box::new(ClusterTickets {
                    store: store.clone(),
                    vserver: table,
                    rotation_ms,
                    lifetime_ms,
                }),
            )));
        }
    }
    v.tls = Some(Arc::new(t));
}

/// One vserver's TLS 1.2 sessions in the node's store.
pub struct VserverSessions {
    store: Arc<Store>,
    table: TableId,
    capacity: usize,
}

impl std::fmt::Debug for VserverSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VserverSessions({:?} in {:?})", self.table, self.store)
    }
}

/// A lookup in the other tiers, polled by the handshake.
struct Pending(PendingGet);

impl tls::PendingLookup for Pending {
    fn poll(&mut self) -> Option<Option<Secret>> {
        self.0.poll()
    }
}

impl tls::SessionStore for VserverSessions {
    fn put(&self, id: &[u8], session: Secret, expires_ms: u64) {
        self.store
            .add(self.table, id, session, expires_ms, crate::now_ms());
    }

    fn lookup(&self, id: &[u8], now_ms: u64) -> tls::Lookup {
        match self.store.get(self.table, id, now_ms) {
            StoreLookup::Ready(hit) => tls::Lookup::Ready(hit),
            StoreLookup::Pending(p) => tls::Lookup::Pending(Box::new(Pending(p))),
        }
    }

    /// Sessions the node's store holds now, all vservers together.
    fn len(&self) -> usize {
        self.store.local().len()
    }

    fn capacity(&self) -> Option<usize> {
        Some(self.capacity)
    }
}

/// A vserver's ticket keys derived from the cluster key: the same on every node.
pub struct ClusterTickets {
    store: Arc<Store>,
    vserver: u16,
    rotation_ms: u64,
    lifetime_ms: u64,
}

impl TicketKeySource for ClusterTickets {
    fn keys(&self, now_ms: u64) -> Vec<SourcedKey> {
        self.store
            .ticket_ring(self.vserver, now_ms, self.rotation_ms, self.lifetime_ms)
            .unwrap_or_default()
            .into_iter()
            .map(|k| SourcedKey {
                name: k.name,
                key: k.key,
                sealing: k.sealing,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ids_are_stable_and_spread() {
        assert_eq!(table_of("web"), table_of("web"));
        let ids: std::collections::HashSet<u16> =
            (0..1000).map(|i| table_of(&format!("vs{i}"))).collect();
        // 1,000 names into 65,536 ids: a handful of collisions at most.
        assert!(ids.len() > 990, "{}", ids.len());
    }
}
