//! The facade: local, peer and repository tiers behind one non-blocking API.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::RedisServer;
use crypto_offload::Secret;
use session_store::{
    unix_ms, ClusterConfig, LocalConfig, PeerConfig, PurgeScope, RedisConfig, Store, StoreConfig,
    StoreError, StoreLookup, TableId,
};

const T: TableId = TableId {
    kind: session_store::Kind::SESSION_ID,
    vserver: 9,
};

fn key_file(tag: &str, mode: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ss-store-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("cluster.key");
    std::fs::write(&p, [0x5eu8; 32]).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Resolve a lookup the way a core does: poll until answered.
fn resolve(l: StoreLookup) -> Option<Vec<u8>> {
    match l {
        StoreLookup::Ready(v) => v.map(|s| s.bytes().to_vec()),
        StoreLookup::Pending(mut p) => loop {
            if let Some(v) = p.poll() {
                return v.map(|s| s.bytes().to_vec());
            }
            std::thread::sleep(Duration::from_micros(100));
        },
    }
}

#[test]
fn local_only_store_and_its_stats() {
    let s = Store::start(StoreConfig::local("a", LocalConfig::default())).unwrap();
    let now = unix_ms();
    assert!(s.add(T, b"k", Secret::new(b"v1".to_vec()), now + 1_000, now));
    assert_eq!(resolve(s.get(T, b"k", now)).unwrap(), b"v1");
    assert!(s.update(T, b"k", Secret::new(b"v2".to_vec()), now + 1_000, now));
    assert_eq!(resolve(s.get(T, b"k", now)).unwrap(), b"v2");
    assert!(matches!(s.get(T, b"other", now), StoreLookup::Ready(None)));
    s.delete(T, b"k", now);
    assert!(resolve(s.get(T, b"k", now)).is_none());
    assert!(s.add(T, b"j", Secret::new(b"v".to_vec()), now + 1_000, now));
    assert_eq!(s.purge(PurgeScope::All, now + 1), 1);
    assert!(s.ticket_ring(1, now, 3_600_000, 7_200_000).is_none());
    let st = s.stats();
    assert_eq!(st.lookups.lookups, 4);
    assert_eq!(st.lookups.hits_local, 2);
    assert_eq!(st.lookups.misses, 2);
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["local"]["entries"], 0);
    assert!(json["cluster"].is_null());
    assert!(json["lookups"]["hits_local"].is_number());
}

#[test]
fn a_world_readable_key_file_refuses_to_start() {
    let p = key_file("mode", 0o644);
    let mut cfg = StoreConfig::local("a", LocalConfig::default());
    cfg.key_file = Some(p.clone());
    cfg.redis = Some(RedisConfig::new(vec!["127.0.0.1:1".into()]));
    let e = Store::start(cfg).unwrap_err().to_string();
    assert!(e.contains(&p.display().to_string()), "{e}");
    assert!(
        e.contains("mode 0644; the key file must be owner-only (chmod 600)"),
        "{e}"
    );
    let mut cfg = StoreConfig::local("a", LocalConfig::default());
    cfg.redis = Some(RedisConfig::new(vec!["127.0.0.1:1".into()]));
    assert!(matches!(Store::start(cfg), Err(StoreError::NoKey)));
}

fn free_udp(n: usize) -> Vec<SocketAddr> {
    let s: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    s.iter().map(|s| s.local_addr().unwrap()).collect()
}

fn clustered(
    name: &str,
    me: SocketAddr,
    all: &[SocketAddr],
    key: &Path,
) -> Result<Store, StoreError> {
    let peers: Vec<SocketAddr> = all.iter().copied().filter(|a| *a != me).collect();
    let cluster = ClusterConfig {
        node: name.into(),
        listen: me,
        peers: peers.clone(),
        multicast: None,
        key_file: key.to_path_buf(),
    };
    let mut peer = PeerConfig::new(name, peers, None);
    peer.heartbeat_ms = 50;
    peer.join_timeout_ms = 300;
    let mut cfg = StoreConfig::local(name, LocalConfig::default());
    cfg.lookup_timeout = Duration::from_millis(200);
    cfg.key_file = Some(key.to_path_buf());
    cfg.cluster = Some(cluster);
    cfg.peer = Some(peer);
    Store::start(cfg)
}

/// Two clustered nodes on free ports. A port is free when `free_udp` looks and may be
/// taken by another test's socket before the node binds it: then try other ports.
fn cluster_pair(key: &Path) -> (Store, Store) {
    let taken = |e: &StoreError| {
        matches!(e, StoreError::Listen { source, .. }
            if source.kind() == std::io::ErrorKind::AddrInUse)
    };
    for _ in 0..20 {
        let addrs = free_udp(2);
        let a = match clustered("a", addrs[0], &addrs, key) {
            Ok(a) => a,
            Err(e) if taken(&e) => continue,
            Err(e) => panic!("{e}"),
        };
        match clustered("b", addrs[1], &addrs, key) {
            Ok(b) => return (a, b),
            Err(e) if taken(&e) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no two free UDP ports in 20 tries");
}

#[test]
fn a_session_made_on_one_node_resumes_on_another() {
    let key = key_file("peers", 0o600);
    let (a, b) = cluster_pair(&key);
    eventually("ready", || a.ready() && b.ready());
    eventually("members up", || {
        [&a, &b].iter().all(|s| {
            s.stats()
                .cluster
                .is_some_and(|c| c.peer.members.iter().any(|m| m.up))
        })
    });
    let now = unix_ms();
    assert!(a.add(
        T,
        b"sid",
        Secret::new(b"master".to_vec()),
        now + 60_000,
        now
    ));
    eventually("replicated", || {
        b.local().get(T, b"sid", unix_ms()).is_some()
    });
    assert_eq!(resolve(b.get(T, b"sid", unix_ms())).unwrap(), b"master");
    // A record node a holds that was never replicated: b asks its peers.
    let now = unix_ms();
    a.local().merge(
        session_store::Record {
            table: T,
            key: b"only-a".to_vec(),
            value: Some(Secret::new(b"remote".to_vec())),
            expires_ms: now + 60_000,
            version: session_store::Version {
                updated_ms: now,
                origin: 7,
            },
        },
        now,
    );
    assert!(matches!(b.get(T, b"only-a", now), StoreLookup::Pending(_)));
    let st = b.stats();
    assert_eq!(st.lookups.hits_local, 1);
    assert_eq!(
        st.lookups.timeouts, 1,
        "dropped unanswered: counted as a timeout"
    );
    // Ask again and wait.
    assert_eq!(resolve(b.get(T, b"only-a", unix_ms())).unwrap(), b"remote");
    assert!(b.stats().lookups.hits_peer >= 1);
    // A cluster-wide purge.
    a.purge(PurgeScope::Table(T), unix_ms());
    eventually("purged on b", || b.local().is_empty());
    let json = serde_json::to_value(b.stats()).unwrap();
    assert!(json["cluster"]["members"].is_array());
    assert!(json["cluster"]["counters"]["forged"].is_number());
    assert_eq!(
        a.stats().key_fingerprint,
        b.stats().key_fingerprint,
        "same key file"
    );
    let ra = a.ticket_ring(9, now, 3_600_000, 7_200_000).unwrap();
    let rb = b.ticket_ring(9, now, 3_600_000, 7_200_000).unwrap();
    assert_eq!(
        ra.iter().map(|k| k.name).collect::<Vec<_>>(),
        rb.iter().map(|k| k.name).collect::<Vec<_>>()
    );
    a.shutdown();
    b.shutdown();
}

#[test]
fn a_local_miss_is_answered_by_the_repository() {
    let server = RedisServer::start(None);
    let port = server.port;
    let key = key_file("redis", 0o600);
    let store = |name: &str| {
        let mut cfg = StoreConfig::local(name, LocalConfig::default());
        cfg.lookup_timeout = Duration::from_millis(500);
        cfg.key_file = Some(key.clone());
        cfg.redis = Some(RedisConfig::new(vec![format!("127.0.0.1:{port}")]));
        Store::start(cfg).unwrap()
    };
    let a = store("a");
    let b = store("b");
    eventually("connected", || {
        [&a, &b].iter().all(|s| {
            s.stats()
                .repository
                .is_some_and(|r| r.servers.iter().all(|s| s.up))
        })
    });
    let now = unix_ms();
    assert!(a.add(
        T,
        b"sid",
        Secret::new(b"from-redis".to_vec()),
        now + 60_000,
        now
    ));
    eventually("stored", || {
        a.stats().repository.unwrap().servers[0].writes >= 1
    });
    assert_eq!(resolve(b.get(T, b"sid", unix_ms())).unwrap(), b"from-redis");
    // Kept locally: the next lookup is local.
    assert!(matches!(
        b.get(T, b"sid", unix_ms()),
        StoreLookup::Ready(Some(_))
    ));
    let st = b.stats();
    assert_eq!((st.lookups.hits_repository, st.lookups.hits_local), (1, 1));
    assert!(resolve(b.get(T, b"nothing", unix_ms())).is_none());
    assert_eq!(b.stats().lookups.misses, 1);
}
