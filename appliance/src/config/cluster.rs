//! `[cluster]` (this node's place among the appliances that share TLS sessions) and
//! `[session_store]` (the store's repository tier, its lookup deadline and size).
//!
//! The key file is read here, so `appliance --check` already refuses one that other
//! users may read, naming it; the daemon reads it again when it starts the store.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawCluster, RawSessionStore};
use super::{Checker, ConfigError};

/// `[cluster]`: this node's name, address and the cluster key. With `peers` or
/// `multicast` the peer tier is on; with neither, the node shares sessions through the
/// repository only (`[session_store] redis`, sealed under the key), as the seed's
/// multi-tier mode has proxies that talk to the repository alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster.
    pub node: String,
    /// This node's address on the management network (UDP; the kernel's stack).
    pub listen: SocketAddrV4,
    /// The other nodes, and/or the multicast group they all join.
    pub peers: Vec<SocketAddrV4>,
    pub multicast: Option<SocketAddrV4>,
    /// The shared secret (32 bytes or more, owner-only).
    pub key_file: PathBuf,
}

/// `[session_store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStoreConfig {
    /// The repository tier: Redis servers (`host:port`), in order.
    pub redis: Vec<SocketAddr>,
    /// How long a TLS 1.2 session-ID lookup that misses locally waits for the peers
    /// and the repository before the handshake goes on in full.
    pub lookup_timeout: Duration,
    /// Sessions this node keeps (all vservers together); `None`: the sum of the
    /// vservers' `session_cache`.
    pub entries: Option<usize>,
}

impl Default for SessionStoreConfig {
    fn default() -> Self {
        SessionStoreConfig {
            redis: Vec::new(),
            lookup_timeout: Duration::from_millis(5),
            entries: None,
        }
    }
}

impl Checker<'_> {
    pub(super) fn cluster(
        &self,
        raw: Option<RawCluster>,
        data_address: std::net::Ipv4Addr,
    ) -> Result<Option<ClusterConfig>, ConfigError> {
        let Some(r) = raw else { return Ok(None) };
        if r.node.is_empty()
            || r.node.len() > 64
            || !r
                .node
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            return Err(self.err(
                "cluster.node",
                format!(
                    "{:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                    r.node
                ),
            ));
        }
        let addr = |field: &str, v: &str| -> Result<SocketAddrV4, ConfigError> {
            v.parse().map_err(|_| {
                self.err(
                    field,
                    format!("{v:?} is not an IPv4 address:port, like \"10.80.0.1:7946\""),
                )
            })
        };
        let listen = addr("cluster.listen", &r.listen)?;
        if *listen.ip() == data_address {
            return Err(self.err(
                "cluster.listen",
                format!("{} is the data plane's address; the cluster talks on the kernel's management network", listen.ip()),
            ));
        }
        let mut peers = Vec::new();
        for (i, p) in r.peers.iter().enumerate() {
            let field = format!("cluster.peers[{i}]");
            let a = addr(&field, p)?;
            if a == listen {
                return Err(self.err(&field, format!("{a} is this node's own listen address")));
            }
            if peers.contains(&a) {
                return Err(self.err(&field, format!("{a} is listed twice")));
            }
            peers.push(a);
        }
        let multicast = match &r.multicast {
            None => None,
            Some(m) => {
                let a = addr("cluster.multicast", m)?;
                if !a.ip().is_multicast() {
                    return Err(self.err(
                        "cluster.multicast",
                        format!(
                            "{} is not a multicast group (224.0.0.0/4), like \"239.255.77.1:7946\"",
                            a.ip()
                        ),
                    ));
                }
                Some(a)
            }
        };
        let key_file = PathBuf::from(&r.key_file);
        session_store::ClusterKey::load(&key_file)
            .map_err(|e| self.err("cluster.key_file", e.to_string()))?;
        Ok(Some(ClusterConfig {
            node: r.node,
            listen,
            peers,
            multicast,
            key_file,
        }))
    }

    pub(super) fn session_store(
        &self,
        r: RawSessionStore,
        cluster: Option<&ClusterConfig>,
    ) -> Result<SessionStoreConfig, ConfigError> {
        let mut redis = Vec::new();
        for (i, s) in r.redis.iter().enumerate() {
            let field = format!("session_store.redis[{i}]");
            let a: SocketAddr = s.parse().map_err(|_| {
                self.err(
                    &field,
                    format!("{s:?} is not an address:port, like \"10.80.0.100:6379\""),
                )
            })?;
            redis.push(a);
        }
        if !redis.is_empty() && cluster.is_none() {
            return Err(self.err(
                "session_store.redis",
                "needs a [cluster] table with key_file: sessions are sealed under the cluster key before they leave the node",
            ));
        }
        let lookup_timeout = self.duration(
            "session_store.lookup_timeout",
            &r.lookup_timeout,
            Duration::from_millis(5),
        )?;
        if lookup_timeout < Duration::from_millis(1) || lookup_timeout > Duration::from_secs(1) {
            return Err(self.err("session_store.lookup_timeout", "must be between 1ms and 1s"));
        }
        let entries = match r.entries {
            None => None,
            Some(_) => {
                Some(self.int_in("session_store.entries", r.entries, 0usize, 1, 100_000_000)?)
            }
        };
        Ok(SessionStoreConfig {
            redis,
            lookup_timeout,
            entries,
        })
    }
}
