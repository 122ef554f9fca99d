//! The peer runtime over real UDP sockets on loopback: several nodes in one process,
//! each with its own thread and port, unicast and multicast.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crypto_offload::Secret;
use session_store::peer::{Op, PeerConfig};
use session_store::{
    unix_ms, ClusterKey, LocalConfig, LocalTable, NodeState, PeerRuntime, RuntimeOptions, TableId,
};

const T: TableId = TableId {
    kind: session_store::Kind::SESSION_ID,
    vserver: 1,
};

/// Free UDP ports on 127.0.0.1 (bound, then released for the nodes to take).
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    socks.iter().map(|s| s.local_addr().unwrap()).collect()
}

struct Node {
    rt: PeerRuntime,
    table: Arc<LocalTable>,
    id: u32,
}

/// `n` nodes on free ports. A port is free when `free_addrs` looks and may be taken by
/// another test's socket before the node binds it: then try other ports.
fn cluster(n: usize, multicast: Option<SocketAddr>) -> Vec<Node> {
    for _ in 0..20 {
        match try_cluster(n, multicast) {
            Ok(nodes) => return nodes,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no {n} free UDP ports in 20 tries");
}

fn try_cluster(n: usize, multicast: Option<SocketAddr>) -> std::io::Result<Vec<Node>> {
    let addrs = free_addrs(n);
    let key = Arc::new(ClusterKey::from_secret(&[3u8; 32]).unwrap());
    (0..n)
        .map(|i| {
            let name = format!("node{i}");
            let peers = if multicast.is_some() {
                vec![]
            } else {
                addrs.iter().copied().filter(|a| *a != addrs[i]).collect()
            };
            let mut cfg = PeerConfig::new(&name, peers, multicast);
            cfg.join_timeout_ms = 300;
            cfg.heartbeat_ms = 50;
            let table = Arc::new(LocalTable::new(LocalConfig::default()));
            let rt = PeerRuntime::start(
                addrs[i],
                cfg,
                key.clone(),
                table.clone(),
                RuntimeOptions::default(),
            )?;
            Ok(Node {
                rt,
                table,
                id: session_store::node_id(&name),
            })
        })
        .collect()
}

fn add(n: &Node, k: u32) {
    let now = unix_ms();
    let key = k.to_be_bytes();
    let value = Secret::new(vec![k as u8; 48]);
    let v = n
        .table
        .add_local(T, &key, value.clone(), now + 600_000, now, n.id)
        .unwrap();
    assert!(n.rt.submit(Op::Add {
        table: T,
        key: key.to_vec(),
        value,
        expires_ms: now + 600_000,
        version: v,
    }));
}

/// Poll `f` until it holds; a generous bound only guards against a hang.
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

fn replicate_and_get(multicast: Option<SocketAddr>) {
    let nodes = cluster(3, multicast);
    eventually("every node ready", || nodes.iter().all(|n| n.rt.ready()));
    eventually("members up", || {
        nodes.iter().all(|n| {
            n.rt.stats().is_some_and(|(s, _, _)| {
                s.members.len() == 2
                    && s.members
                        .iter()
                        .all(|m| m.up && m.state == NodeState::Ready)
            })
        })
    });
    for k in 0..500u32 {
        add(&nodes[k as usize % 3], k);
    }
    eventually("replication", || {
        let now = unix_ms();
        let d = nodes[0].table.digest(now);
        d.0 == 500 && nodes.iter().all(|n| n.table.digest(now) == d)
    });
    // A key only node 2 holds: node 0 asks the peers.
    let now = unix_ms();
    nodes[2].table.merge(
        session_store::Record {
            table: T,
            key: b"lonely".to_vec(),
            value: Some(Secret::new(b"value".to_vec())),
            expires_ms: now + 60_000,
            version: session_store::Version {
                updated_ms: now,
                origin: 1,
            },
        },
        now,
    );
    let mut hit = nodes[0].rt.get(T, b"lonely").unwrap();
    let mut miss = nodes[0].rt.get(T, b"absent").unwrap();
    let mut got = (None, None);
    eventually("remote get answers", || {
        if got.0.is_none() {
            got.0 = hit.poll();
        }
        if got.1.is_none() {
            got.1 = miss.poll();
        }
        got.0.is_some() && got.1.is_some()
    });
    assert_eq!(got.0.unwrap().unwrap().bytes(), b"value");
    assert!(got.1.unwrap().is_none());
    let (st, full, _) = nodes[0].rt.stats().unwrap();
    assert_eq!(full, 0);
    assert_eq!(
        st.counters.forged + st.counters.replayed + st.counters.non_member,
        0
    );
    if multicast.is_some() {
        eventually("self-receipt measured", || {
            nodes[0]
                .rt
                .stats()
                .is_some_and(|(s, _, _)| s.self_receipt_rtt_ms.is_some())
        });
    }
    for n in nodes {
        n.rt.shutdown();
    }
}

#[test]
fn unicast_peers_replicate_and_answer_gets() {
    replicate_and_get(None);
}

#[test]
fn multicast_group_replicates_and_answers_gets() {
    // A group per test process, so parallel runs do not hear each other.
    let last = (std::process::id() % 200) as u8 + 20;
    let port = free_addrs(1)[0].port();
    replicate_and_get(Some(format!("239.255.77.{last}:{port}").parse().unwrap()));
}

#[test]
fn strangers_and_garbage_are_dropped_and_counted() {
    let nodes = cluster(2, None);
    eventually("ready", || nodes.iter().all(|n| n.rt.ready()));
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = nodes[0].rt.local_addr();
    for _ in 0..5 {
        stranger.send_to(b"not a cluster message", target).unwrap();
    }
    eventually("counted", || {
        nodes[0].rt.stats().is_some_and(|(s, _, _)| {
            s.counters.forged + s.counters.malformed + s.counters.non_member >= 5
        })
    });
}

/// A 50,000-ADD burst between processes' worth of real sockets (three runtimes, each its
/// own thread and UDP port): the sender's flow control holds writes in its queue (it
/// does not overrun the receivers' socket buffers), and every node ends with every
/// entry, digests equal, no write refused.
#[test]
fn a_burst_of_50000_adds_is_paced_and_nothing_is_lost() {
    let nodes = cluster(3, None);
    eventually("every node ready", || nodes.iter().all(|n| n.rt.ready()));
    eventually("members up", || {
        nodes.iter().all(|n| {
            n.rt.stats()
                .is_some_and(|(s, _, _)| s.members.len() == 2 && s.members.iter().all(|m| m.up))
        })
    });
    for k in 0..50_000u32 {
        add(&nodes[0], k);
    }
    // While it drains, the sender's queue is seen holding writes back.
    let mut paced = 0;
    eventually("replication of the burst", || {
        if let Some((s, _, _)) = nodes[0].rt.stats() {
            paced = paced.max(s.queue_depth);
        }
        let now = unix_ms();
        let d = nodes[0].table.digest(now);
        d.0 == 50_000 && nodes.iter().all(|n| n.table.digest(now) == d)
    });
    assert!(paced > 0, "the flow control never held a write back");
    for n in &nodes {
        let (s, full, _) = n.rt.stats().unwrap();
        assert_eq!(full, 0, "a write refused at the channel");
        assert_eq!(s.counters.queue_dropped, 0);
    }
    for n in nodes {
        n.rt.shutdown();
    }
}
