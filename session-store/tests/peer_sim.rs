//! The peer protocol over a simulated network: plain Rust, one thread, a logical clock
//! in ms, and a seeded generator for loss, reordering, duplication and partitions.
//! Each node has an input queue of bounded size served at a bounded rate, so a sender
//! that outruns its receivers shows up as `overruns`.
//!
//! Addresses are labels inside the simulation; nothing here opens a socket.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use crypto_offload::Secret;
use session_store::peer::{Dest, Event, Peer, PeerConfig};
use session_store::wire::{Body, Message};
use session_store::{ClusterKey, LocalConfig, LocalTable, NodeState, PurgeScope, TableId};

const START: u64 = 1_700_000_000_000;
const LIFETIME: u64 = 3_600_000;
const T: TableId = TableId {
    kind: session_store::Kind::SESSION_ID,
    vserver: 1,
};

/// splitmix64: small, seeded, good enough to pick losses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Node {
    name: String,
    addr: SocketAddr,
    peer: Option<Peer>,
    table: Arc<LocalTable>,
    events: Vec<Event>,
    inbox: VecDeque<(SocketAddr, Vec<u8>)>,
    max_queue_seen: usize,
}

type Flight = Reverse<(u64, u64, usize, SocketAddr, Vec<u8>)>;

struct Sim {
    now: u64,
    nodes: Vec<Node>,
    key: Arc<ClusterKey>,
    rng: Rng,
    multicast: Option<SocketAddr>,
    loss: f64,
    dup: f64,
    reorder: f64,
    latency: u64,
    flight: BinaryHeap<Flight>,
    order: u64,
    blocked: HashSet<(usize, usize)>,
    rx_capacity: usize,
    rx_rate: usize,
    overruns: u64,
    /// Every datagram routed: (from, to, bytes).
    tap: Vec<(usize, usize, Vec<u8>)>,
    tapping: bool,
}

fn addr(i: usize) -> SocketAddr {
    format!("127.0.80.{}:7946", i + 1).parse().unwrap()
}

fn config(name: &str, me: usize, n: usize, multicast: Option<SocketAddr>) -> PeerConfig {
    let peers = (0..n).filter(|&j| j != me).map(addr).collect();
    PeerConfig::new(name, peers, multicast)
}

fn value(k: u32, gen: u8) -> Secret {
    let mut v = vec![gen; 48];
    v[..4].copy_from_slice(&k.to_be_bytes());
    Secret::new(v)
}

impl Sim {
    /// `n` node slots, the first `started` running.
    fn new(n: usize, started: usize, multicast: bool, seed: u64) -> Sim {
        let mut s = Sim {
            now: START,
            nodes: Vec::new(),
            key: Arc::new(ClusterKey::from_secret(&[7u8; 32]).unwrap()),
            rng: Rng(seed),
            multicast: multicast.then(|| "239.255.77.1:7946".parse().unwrap()),
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            latency: 1,
            flight: BinaryHeap::new(),
            order: 0,
            blocked: HashSet::new(),
            rx_capacity: 4096,
            rx_rate: 1000,
            overruns: 0,
            tap: Vec::new(),
            tapping: false,
        };
        for i in 0..n {
            s.nodes.push(Node {
                name: format!("n{i}"),
                addr: addr(i),
                peer: None,
                table: Arc::new(LocalTable::new(LocalConfig {
                    capacity: 200_000,
                    ..LocalConfig::default()
                })),
                events: Vec::new(),
                inbox: VecDeque::new(),
                max_queue_seen: 0,
            });
        }
        for i in 0..started {
            s.start(i);
        }
        s
    }

    fn start(&mut self, i: usize) {
        let n = self.nodes.len();
        let cfg = config(&self.nodes[i].name, i, n, self.multicast);
        self.start_with(i, cfg);
    }

    fn start_with(&mut self, i: usize, cfg: PeerConfig) {
        // A restart is a new process: an empty table and a later incarnation.
        self.nodes[i].table = Arc::new(LocalTable::new(LocalConfig {
            capacity: 200_000,
            ..LocalConfig::default()
        }));
        self.nodes[i].inbox.clear();
        self.nodes[i].events.clear();
        let p = Peer::new(
            cfg,
            self.key.clone(),
            self.nodes[i].table.clone(),
            self.now,
            self.now,
        )
        .unwrap();
        self.nodes[i].peer = Some(p);
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].peer = None;
        self.nodes[i].inbox.clear();
    }

    fn peer(&self, i: usize) -> &Peer {
        self.nodes[i].peer.as_ref().unwrap()
    }

    fn peer_mut(&mut self, i: usize) -> &mut Peer {
        self.nodes[i].peer.as_mut().unwrap()
    }

    fn idx(&self, a: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == a)
    }

    fn partition(&mut self, side: &[usize]) {
        for &a in side {
            for b in 0..self.nodes.len() {
                if !side.contains(&b) {
                    self.blocked.insert((a, b));
                    self.blocked.insert((b, a));
                }
            }
        }
    }

    fn route(&mut self, from: usize, dest: Dest, bytes: Vec<u8>) {
        let targets: Vec<usize> = match dest {
            Dest::To(a) => self.idx(a).into_iter().collect(),
            Dest::AllPeers => (0..self.nodes.len()).filter(|&j| j != from).collect(),
            Dest::Group => (0..self.nodes.len()).collect(),
        };
        for to in targets {
            if self.tapping {
                self.tap.push((from, to, bytes.clone()));
            }
            let at = self.now + self.latency;
            if to == from {
                // The multicast loop back to the sender: no network in between.
                self.order += 1;
                self.flight.push(Reverse((
                    at,
                    self.order,
                    to,
                    self.nodes[from].addr,
                    bytes.clone(),
                )));
                continue;
            }
            if self.blocked.contains(&(from, to)) || self.rng.chance(self.loss) {
                continue;
            }
            let copies = if self.rng.chance(self.dup) { 2 } else { 1 };
            for _ in 0..copies {
                let extra = if self.rng.chance(self.reorder) {
                    1 + self.rng.below(8)
                } else {
                    0
                };
                self.order += 1;
                self.flight.push(Reverse((
                    at + extra,
                    self.order,
                    to,
                    self.nodes[from].addr,
                    bytes.clone(),
                )));
            }
        }
    }

    fn drain(&mut self, i: usize) {
        loop {
            let Some(p) = self.nodes[i].peer.as_mut() else {
                return;
            };
            let t = p.poll_transmit();
            let mut events = Vec::new();
            while let Some(e) = p.poll_event() {
                events.push(e);
            }
            let q = p.queue_depth();
            let node = &mut self.nodes[i];
            node.events.extend(events);
            node.max_queue_seen = node.max_queue_seen.max(q);
            match t {
                Some(t) => self.route(i, t.dest, t.bytes),
                None => return,
            }
        }
    }

    fn step(&mut self) {
        self.now += 1;
        while let Some(Reverse((at, _, _, _, _))) = self.flight.peek() {
            if *at > self.now {
                break;
            }
            let Some(Reverse((_, _, to, from, bytes))) = self.flight.pop() else {
                break;
            };
            let node = &mut self.nodes[to];
            if node.peer.is_none() {
                continue;
            }
            if node.inbox.len() >= self.rx_capacity {
                self.overruns += 1;
                continue;
            }
            node.inbox.push_back((from, bytes));
        }
        let now = self.now;
        for i in 0..self.nodes.len() {
            if self.nodes[i].peer.is_none() {
                continue;
            }
            for _ in 0..self.rx_rate {
                let Some((from, bytes)) = self.nodes[i].inbox.pop_front() else {
                    break;
                };
                self.peer_mut(i).on_message(from, &bytes, now);
            }
            self.peer_mut(i).on_tick(now);
            self.drain(i);
        }
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].peer.is_some())
            .collect()
    }

    /// Whether every live node holds the same records and is done sending and repairing.
    fn converged(&self) -> bool {
        let alive = self.alive();
        let quiet = alive.iter().all(|&i| {
            let p = self.peer(i);
            p.queue_depth() == 0 && p.gap_free() && p.state() == NodeState::Ready
        });
        if !quiet {
            return false;
        }
        let d0 = self.nodes[alive[0]].table.digest(self.now);
        alive
            .iter()
            .all(|&i| self.nodes[i].table.digest(self.now) == d0)
    }

    /// Run until converged; panics with the state if it takes longer than `max_ms`.
    fn settle(&mut self, max_ms: u64) -> u64 {
        let start = self.now;
        // At least two heartbeats, so a lost tail would have been seen.
        self.run(500);
        // Digests cost a hash per record: look every 50 ms.
        while (self.now - start) % 50 != 0 || !self.converged() {
            if self.now - start > max_ms {
                let states: Vec<String> = self
                    .alive()
                    .iter()
                    .map(|&i| {
                        format!(
                            "{}: {:?} {:?}",
                            self.nodes[i].name,
                            self.nodes[i].table.digest(self.now),
                            self.peer(i).stats(self.now)
                        )
                    })
                    .collect();
                panic!("not converged after {max_ms} ms:\n{}", states.join("\n"));
            }
            self.step();
        }
        self.now - start
    }

    fn add(&mut self, i: usize, k: u32, gen: u8) {
        let now = self.now;
        let origin = self.peer(i).id();
        let v = self.nodes[i]
            .table
            .add_local(
                T,
                &k.to_be_bytes(),
                value(k, gen),
                now + LIFETIME,
                now,
                origin,
            )
            .unwrap();
        self.peer_mut(i)
            .add(T, &k.to_be_bytes(), value(k, gen), now + LIFETIME, v, now);
    }

    fn update(&mut self, i: usize, k: u32, gen: u8) -> bool {
        let now = self.now;
        let origin = self.peer(i).id();
        let Some(v) = self.nodes[i].table.update_local(
            T,
            &k.to_be_bytes(),
            value(k, gen),
            now + LIFETIME,
            now,
            origin,
        ) else {
            return false;
        };
        self.peer_mut(i)
            .update(T, &k.to_be_bytes(), value(k, gen), now + LIFETIME, v, now);
        true
    }

    fn delete(&mut self, i: usize, k: u32) {
        let now = self.now;
        let origin = self.peer(i).id();
        let (v, exp) = self.nodes[i]
            .table
            .delete_local(T, &k.to_be_bytes(), now, origin)
            .unwrap();
        self.peer_mut(i).delete(T, &k.to_be_bytes(), exp, v, now);
    }

    fn get(&self, i: usize, k: u32) -> Option<Vec<u8>> {
        self.nodes[i]
            .table
            .get(T, &k.to_be_bytes(), self.now)
            .map(|s| s.bytes().to_vec())
    }

    fn digest(&self, i: usize) -> (usize, u64) {
        self.nodes[i].table.digest(self.now)
    }
}

/// Three nodes start together, find no ready peer, and are ready alone.
fn started(n: usize, multicast: bool, seed: u64) -> Sim {
    let mut s = Sim::new(n, n, multicast, seed);
    s.run(1_100);
    for i in 0..n {
        assert_eq!(s.peer(i).state(), NodeState::Ready, "node {i}");
    }
    s
}

fn writes_replicate(multicast: bool) {
    let mut s = started(3, multicast, 1);
    for k in 0..300u32 {
        s.add(k as usize % 3, k, 1);
        if k % 3 == 0 {
            s.step();
        }
    }
    s.settle(5_000);
    // Updates and deletes, from other nodes than the writers.
    for k in 0..50u32 {
        assert!(s.update((k as usize + 1) % 3, k, 2));
    }
    for k in 100..130u32 {
        s.delete((k as usize + 2) % 3, k);
    }
    s.settle(5_000);
    for i in 0..3 {
        assert_eq!(s.digest(i).0, 270, "node {i}");
        assert_eq!(s.get(i, 7).unwrap(), value(7, 2).bytes());
        assert_eq!(s.get(i, 70).unwrap(), value(70, 1).bytes());
        assert!(s.get(i, 101).is_none());
    }
    assert_eq!(s.digest(0), s.digest(1));
    assert_eq!(s.digest(0), s.digest(2));
    let st = s.peer(0).stats(s.now);
    assert_eq!(st.members.len(), 2);
    assert!(st
        .members
        .iter()
        .all(|m| m.up && m.state == NodeState::Ready));
    assert_eq!(st.counters.forged + st.counters.non_member, 0);
    assert!(st.counters.acks_received > 0);
    if multicast {
        assert!(st.self_receipt_rtt_ms.is_some());
    }
}

#[test]
fn writes_replicate_unicast() {
    writes_replicate(false);
}

#[test]
fn writes_replicate_multicast() {
    writes_replicate(true);
}

fn converges_under_loss(multicast: bool, seed: u64) {
    let mut s = started(4, multicast, seed);
    s.loss = 0.10;
    s.reorder = 0.25;
    s.dup = 0.10;
    for k in 0..2_000u32 {
        let i = (k % 4) as usize;
        match k % 10 {
            0..=6 => s.add(i, k, 1),
            7 | 8 => {
                let target = k - 7;
                s.update(i, target, 3);
            }
            _ => s.delete(i, k - 9),
        }
        s.step();
    }
    s.settle(20_000);
    let d = s.digest(0);
    assert!(d.0 > 1_000);
    let mut nacks = 0;
    let mut retransmits = 0;
    let mut replayed = 0;
    for i in 0..4 {
        assert_eq!(s.digest(i), d, "node {i}");
        let c = &s.peer(i).stats(s.now).counters;
        nacks += c.nacks_sent;
        retransmits += c.retransmits;
        replayed += c.replayed;
        assert_eq!(c.forged, 0);
    }
    assert!(nacks > 0, "loss was repaired by NACKs");
    assert!(retransmits > 0);
    assert!(replayed > 0, "network duplicates were dropped");
}

#[test]
fn converges_under_loss_reordering_duplication_unicast() {
    converges_under_loss(false, 2);
}

#[test]
fn converges_under_loss_reordering_duplication_multicast() {
    converges_under_loss(true, 3);
}

#[test]
fn lost_last_message_is_repaired_by_the_heartbeat() {
    let mut s = started(3, false, 4);
    s.add(0, 1, 1);
    s.settle(2_000);
    let nacks_before = s.peer(2).stats(s.now).counters.nacks_sent;
    // The UPDATE (NACK-based, no ACK wait) to node 2 is lost, and nothing follows it.
    s.blocked.insert((0, 2));
    assert!(s.update(0, 1, 9));
    s.step();
    s.blocked.clear();
    s.run(5);
    assert_eq!(s.get(1, 1).unwrap(), value(1, 9).bytes());
    assert_eq!(s.get(2, 1).unwrap(), value(1, 1).bytes(), "lost on the way");
    // Only node 0's next heartbeat (200 ms) tells node 2 that seq 2 exists.
    s.run(250);
    assert_eq!(s.get(2, 1).unwrap(), value(1, 9).bytes());
    assert!(s.peer(2).stats(s.now).counters.nacks_sent > nacks_before);
    assert!(s.peer(0).stats(s.now).counters.retransmits > 0);
}

fn burst(multicast: bool) {
    let mut s = started(3, multicast, 5);
    // Receivers take at most 40 datagrams per ms into a 256-deep queue.
    s.rx_rate = 40;
    s.rx_capacity = 256;
    for k in 0..50_000u32 {
        s.add(0, k, 1);
    }
    assert!(
        s.peer(0).queue_depth() > 40_000,
        "the burst waits in the queue"
    );
    let took = s.settle(60_000);
    for i in 0..3 {
        assert_eq!(s.digest(i).0, 50_000, "node {i}");
        assert_eq!(s.digest(i), s.digest(0));
    }
    assert_eq!(s.overruns, 0, "no receiver queue overflowed");
    let st = s.peer(0).stats(s.now);
    assert_eq!(st.counters.data_sent, 50_000);
    assert_eq!(st.counters.queue_dropped, 0);
    assert_eq!(st.counters.member_downs, 0, "pacing declared no one dead");
    assert!(took > 1_000, "paced over {took} ms, not sent at once");
    if multicast {
        assert!(st.self_receipt_rtt_ms.is_some());
    }
}

#[test]
fn burst_of_50000_adds_is_paced_without_loss_unicast() {
    burst(false);
}

#[test]
fn burst_of_50000_adds_is_paced_without_loss_multicast() {
    burst(true);
}

#[test]
fn joining_node_syncs_then_reports_ready() {
    let mut s = Sim::new(4, 3, false, 6);
    s.run(1_100);
    for k in 0..3_000u32 {
        s.add(k as usize % 3, k, 1);
        if k % 10 == 0 {
            s.step();
        }
    }
    s.delete(1, 5);
    s.settle(10_000);
    s.start(3);
    s.step();
    assert_eq!(s.peer(3).state(), NodeState::Syncing);
    // Writes go on while it copies.
    for k in 3_000..3_100u32 {
        s.add(0, k, 1);
        s.step();
    }
    s.settle(20_000);
    assert!(s.nodes[3].events.iter().any(|e| matches!(e, Event::Ready)));
    assert_eq!(s.digest(3), s.digest(0));
    assert_eq!(s.digest(3).0, 3_099);
    let c = &s.peer(3).stats(s.now).counters;
    assert_eq!(c.syncs_completed, 1);
    assert!(c.sync_records_received >= 2_999);
    assert!(s.get(3, 5).is_none(), "the tombstone came with the copy");
    assert!(
        s.peer(0).stats(s.now).counters.syncs_served
            + s.peer(1).stats(s.now).counters.syncs_served
            + s.peer(2).stats(s.now).counters.syncs_served
            >= 1
    );
}

#[test]
fn dead_node_is_detected_and_adds_do_not_block() {
    let mut s = started(3, false, 7);
    s.add(0, 1, 1);
    s.settle(2_000);
    s.kill(2);
    for k in 10..110u32 {
        s.add(0, k, 1);
        s.step();
    }
    s.run(1_500);
    let st = s.peer(0).stats(s.now);
    let c = st.members.iter().find(|m| m.name == "n2").unwrap();
    assert!(!c.up, "{st:?}");
    assert_eq!(st.queue_depth, 0, "writes went on without node 2");
    assert_eq!(st.unacked_adds, 0);
    assert!(st.counters.member_downs >= 1);
    assert_eq!(s.digest(1), s.digest(0));
    assert_eq!(s.digest(0).0, 101);
    // It comes back as a new process: empty, it joins and catches up.
    s.start(2);
    s.settle(10_000);
    assert_eq!(s.digest(2), s.digest(0));
    assert!(s
        .peer(0)
        .stats(s.now)
        .members
        .iter()
        .all(|m| m.up && m.state == NodeState::Ready));
}

#[test]
fn a_partition_that_heals_converges() {
    let mut s = started(3, false, 8);
    for k in 0..100u32 {
        s.add(0, k, 1);
    }
    s.settle(5_000);
    s.partition(&[2]);
    for k in 100..300u32 {
        s.add(0, k, 1);
        s.add(2, k + 1_000, 1);
        s.step();
    }
    assert!(s.update(2, 5, 7), "written on the minority side");
    s.delete(0, 6);
    s.run(2_000);
    assert_ne!(s.digest(0), s.digest(2));
    assert!(!s
        .peer(0)
        .stats(s.now)
        .members
        .iter()
        .any(|m| m.name == "n2" && m.up));
    s.blocked.clear();
    s.settle(20_000);
    assert_eq!(s.digest(0).0, 100 + 200 + 200 - 1);
    for i in 0..3 {
        assert_eq!(s.get(i, 5).unwrap(), value(5, 7).bytes());
        assert!(s.get(i, 6).is_none());
        assert!(s.get(i, 1_150).is_some());
    }
    let c = &s.peer(2).stats(s.now).counters;
    assert!(c.gone_received > 0 && c.syncs_completed > 0, "{c:?}");
}

#[test]
fn forged_replayed_and_non_member_messages_are_dropped_and_counted() {
    let mut s = started(3, false, 9);
    s.tapping = true;
    s.add(0, 1, 1);
    s.settle(2_000);
    s.tapping = false;
    let add = s
        .tap
        .iter()
        .find(|(from, to, b)| {
            *from == 0
                && *to == 1
                && matches!(Message::decode(b, &s.key).map(|m| m.body), Ok(Body::Add(_)))
        })
        .map(|(_, _, b)| b.clone())
        .unwrap();
    let now = s.now;
    let from0 = s.nodes[0].addr;
    let before = s.peer(1).stats(now).counters;
    // Replayed: delivered again.
    s.peer_mut(1).on_message(from0, &add, now);
    // Forged: one byte changed.
    let mut forged = add.clone();
    forged[30] ^= 1;
    s.peer_mut(1).on_message(from0, &forged, now);
    // Forged: a well-formed ADD for a new key under another cluster key.
    let mut m = Message::decode(&add, &s.key).unwrap();
    m.header.seq = 2;
    if let Body::Add(r) = &mut m.body {
        r.key = 99u32.to_be_bytes().to_vec();
    }
    let other = ClusterKey::from_secret(&[8u8; 32]).unwrap();
    s.peer_mut(1)
        .on_message(from0, &m.encode(&other).unwrap(), now);
    // Non-member: a valid message from an address that is not a peer.
    s.peer_mut(1)
        .on_message("127.0.99.1:7946".parse().unwrap(), &add, now);
    let after = s.peer(1).stats(now).counters;
    assert_eq!(after.replayed - before.replayed, 1);
    assert_eq!(after.forged - before.forged, 2);
    assert_eq!(after.non_member - before.non_member, 1);
    assert!(s.get(1, 99).is_none());
    assert_eq!(after.data_received, before.data_received);
    s.settle(2_000);
}

#[test]
fn remote_get_first_hit_wins_and_misses_are_answered() {
    let mut s = started(3, false, 10);
    // A record only node 2 holds (as after a restart of the others, or an eviction).
    let now = s.now;
    s.nodes[2].table.merge(
        session_store::Record {
            table: T,
            key: b"only-on-2".to_vec(),
            value: Some(Secret::new(b"secret".to_vec())),
            expires_ms: now + LIFETIME,
            version: session_store::Version {
                updated_ms: now,
                origin: 1,
            },
        },
        now,
    );
    let hit = s.peer_mut(0).get(T, b"only-on-2", now);
    let miss = s.peer_mut(0).get(T, b"nowhere", now);
    s.run(10);
    let mut answers = Vec::new();
    s.nodes[0].events.retain(|e| match e {
        Event::GetResult { req, value } => {
            answers.push((*req, value.as_ref().map(|v| v.bytes().to_vec())));
            false
        }
        _ => true,
    });
    answers.sort();
    assert_eq!(answers, vec![(hit, Some(b"secret".to_vec())), (miss, None)]);
    // The hit is kept locally now.
    assert_eq!(
        s.nodes[0]
            .table
            .get(T, b"only-on-2", s.now)
            .unwrap()
            .bytes(),
        b"secret"
    );
    let c = &s.peer(0).stats(s.now).counters;
    assert_eq!((c.get_hits, c.get_misses), (1, 1));
    // No peer up: answered at once.
    s.kill(1);
    s.kill(2);
    s.run(1_500);
    let now = s.now;
    let req = s.peer_mut(0).get(T, b"nowhere", now);
    s.drain(0);
    assert!(s.nodes[0]
        .events
        .iter()
        .any(|e| matches!(e, Event::GetResult { req: r, value: None } if *r == req)));
}

#[test]
fn purge_reaches_every_node() {
    let mut s = started(3, true, 11);
    let other = TableId::sessions(2);
    for k in 0..100u32 {
        s.add(k as usize % 3, k, 1);
    }
    let now = s.now;
    let origin = s.peer(0).id();
    let v = s.nodes[0]
        .table
        .add_local(other, b"x", value(0, 0), now + LIFETIME, now, origin)
        .unwrap();
    s.peer_mut(0)
        .add(other, b"x", value(0, 0), now + LIFETIME, v, now);
    s.settle(5_000);
    assert_eq!(s.digest(2).0, 101);
    s.run(5);
    let now = s.now;
    let origin = s.peer(1).id();
    let (v, n) = s.nodes[1]
        .table
        .purge_local(PurgeScope::Table(T), now, origin);
    assert_eq!(n, 100);
    s.peer_mut(1).purge(PurgeScope::Table(T), v, now);
    s.settle(5_000);
    for i in 0..3 {
        assert_eq!(s.digest(i).0, 1, "node {i}");
        assert!(s.nodes[i].table.get(other, b"x", s.now).is_some());
    }
}

/// The control for the burst tests: the same burst with the window opened wide
/// overruns the receivers, so it is the flow control that keeps the burst lossless.
#[test]
fn burst_without_flow_control_overruns_receivers() {
    let mut s = Sim::new(3, 0, false, 5);
    for i in 0..3 {
        let mut cfg = config(&format!("n{i}"), i, 3, None);
        cfg.window = u64::MAX;
        s.start_with(i, cfg);
    }
    s.run(1_100);
    s.rx_rate = 40;
    s.rx_capacity = 256;
    for k in 0..50_000u32 {
        s.add(0, k, 1);
    }
    s.run(100);
    assert!(s.overruns > 10_000, "overruns: {}", s.overruns);
}
