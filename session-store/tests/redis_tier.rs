//! The Redis repository tier against Debian's `redis-server`, started here on
//! 127.0.0.1 with a free port, no persistence, and killed by PID at the end
//! (`common::RedisServer`). A missing `redis-server` fails the test (tools/setup.sh
//! installs it).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::RedisServer;
use crypto_offload::Secret;
use session_store::{
    node_id, unix_ms, ClusterKey, LocalConfig, LocalTable, PurgeScope, RedisConfig, Repository,
    TableId, Version,
};

const T: TableId = TableId {
    kind: session_store::Kind::SESSION_ID,
    vserver: 4,
};
const SECRET: &[u8] = b"TOP-SECRET-master-secret-0123456789abcdef-xyz!";

fn key() -> Arc<ClusterKey> {
    Arc::new(ClusterKey::from_secret(&[0x42; 32]).unwrap())
}

fn config(servers: Vec<String>) -> RedisConfig {
    let mut c = RedisConfig::new(servers);
    c.io_timeout = Duration::from_millis(200);
    c.connect_timeout = Duration::from_millis(200);
    c.backoff_max = Duration::from_millis(400);
    c.ping_every = Duration::from_millis(100);
    c
}

fn repo(servers: Vec<String>, node: &str) -> (Repository, Arc<LocalTable>) {
    let table = Arc::new(LocalTable::new(LocalConfig::default()));
    let r = Repository::start(config(servers), key(), node_id(node), table.clone()).unwrap();
    (r, table)
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn put(r: &Repository, k: &[u8]) {
    let now = unix_ms();
    let v = Version {
        updated_ms: now,
        origin: 1,
    };
    r.put(T, k, Secret::new(SECRET.to_vec()), now + 60_000, v);
}

/// Look up with a deadline, polling like a core would; the answer and how long the
/// lookup took.
fn lookup(r: &Repository, k: &[u8], within: Duration) -> (Option<Vec<u8>>, Duration) {
    let t0 = Instant::now();
    let Some(mut l) = r.get(T, k, t0 + within) else {
        return (None, t0.elapsed());
    };
    loop {
        if let Some(v) = l.poll() {
            return (v.map(|s| s.bytes().to_vec()), t0.elapsed());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn read_back(r: &Repository, k: &[u8]) -> Option<Vec<u8>> {
    let mut last = None;
    eventually("a read", || {
        last = lookup(r, k, Duration::from_millis(500)).0;
        last.is_some()
    });
    last
}

#[test]
fn a_value_written_is_read_back_sealed_and_purged() {
    let server = RedisServer::start(None);
    let (a, _) = repo(vec![server.addr()], "a");
    let (b, b_table) = repo(vec![server.addr()], "b");
    eventually("connected", || a.up() && b.up());
    put(&a, b"session-1");
    put(&a, b"session-2");
    eventually("written", || a.stats().servers[0].writes >= 2);
    // Another node with the same cluster key reads it, and keeps it locally.
    assert_eq!(read_back(&b, b"session-1").unwrap(), SECRET);
    assert_eq!(
        b_table.get(T, b"session-1", unix_ms()).unwrap().bytes(),
        SECRET
    );
    // What Redis holds: our prefix, hex keys, and no plaintext.
    let scan = server.cli(&["--scan"]);
    let keys: Vec<&[u8]> = scan
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(keys.len(), 2, "{}", String::from_utf8_lossy(&scan));
    for k in &keys {
        assert!(k.starts_with(b"appliance:ss:010004"));
        let v = server.cli(&["--no-raw", "GET", std::str::from_utf8(k).unwrap()]);
        let raw = server.cli(&["--raw", "GET", std::str::from_utf8(k).unwrap()]);
        assert!(raw.len() > SECRET.len());
        for out in [&v, &raw] {
            assert!(!out.windows(SECRET.len()).any(|w| w == SECRET));
            assert!(!out.windows(10).any(|w| w == b"TOP-SECRET"));
        }
    }
    // A key under another cluster key does not open.
    let other = Arc::new(ClusterKey::from_secret(&[0x43; 32]).unwrap());
    let c = Repository::start(
        config(vec![server.addr()]),
        other,
        node_id("c"),
        Arc::new(LocalTable::new(LocalConfig::default())),
    )
    .unwrap();
    eventually("connected", || c.up());
    assert_eq!(lookup(&c, b"session-1", Duration::from_secs(2)).0, None);
    assert_eq!(c.stats().servers[0].corrupt, 1);
    // DELETE, then PURGE of the table.
    a.delete(T, b"session-1");
    eventually("deleted", || {
        lookup(&b, b"session-1", Duration::from_millis(500))
            .0
            .is_none()
    });
    a.purge(PurgeScope::Table(T));
    eventually("purged", || server.cli(&["--scan"]).is_empty());
    let s = b.stats();
    assert!(s.hits >= 1 && s.lookups >= 2, "{s:?}");
}

#[test]
fn frozen_redis_times_out_at_the_deadline_and_nothing_blocks() {
    let server = RedisServer::start(None);
    let (r, _) = repo(vec![server.addr()], "a");
    eventually("connected", || r.up());
    put(&r, b"k");
    assert_eq!(read_back(&r, b"k").unwrap(), SECRET);
    server.signal(libc::SIGSTOP);
    let deadline = Duration::from_millis(5);
    let t0 = Instant::now();
    for i in 0..20 {
        // Writes are posted too, and must not block either.
        put(&r, format!("w{i}").as_bytes());
        let (v, took) = lookup(&r, b"k", deadline);
        assert_eq!(v, None, "lookup {i} while frozen is a miss");
        // A generous bound on "did not block": the deadline plus scheduling slack,
        // far below the agent's 200 ms I/O timeout.
        assert!(
            took < Duration::from_millis(150),
            "lookup {i} took {took:?}"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(3));
    let s = r.stats();
    assert!(s.timeouts >= 1, "{s:?}");
    eventually("marked down", || !r.up());
    assert!(r.stats().servers[0].errors >= 1);
    server.signal(libc::SIGCONT);
    eventually("back up", || r.up());
    assert_eq!(read_back(&r, b"k").unwrap(), SECRET);
}

#[test]
fn killed_redis_is_reconnected_and_a_second_server_serves_meanwhile() {
    let first = RedisServer::start(None);
    let second = RedisServer::start(None);
    let (r, _) = repo(vec![first.addr(), second.addr()], "a");
    eventually("connected", || r.stats().servers.iter().all(|s| s.up));
    put(&r, b"k");
    eventually("written to both", || {
        r.stats().servers.iter().all(|s| s.writes >= 1)
    });
    let port = first.port;
    drop(first);
    eventually("first down", || !r.stats().servers[0].up);
    // Reads go to the second server meanwhile.
    assert_eq!(read_back(&r, b"k").unwrap(), SECRET);
    assert!(r.stats().servers[1].hits >= 1);
    // The first comes back (empty: no persistence) and is reconnected.
    let first = RedisServer::start(Some(port));
    eventually("reconnected", || {
        let s = r.stats();
        s.servers[0].up && s.servers[0].reconnects >= 1
    });
    put(&r, b"k2");
    eventually("written to the first again", || {
        first
            .cli(&["--scan"])
            .windows(13)
            .any(|w| w == b"appliance:ss:")
    });
    drop(second);
    eventually("second down", || !r.stats().servers[1].up);
    assert_eq!(read_back(&r, b"k2").unwrap(), SECRET);
}
