//! The peer tier: the seed's communicator (L196–L228) as a sans-IO state machine.
//!
//! No sockets, no threads, no clock: the caller feeds it datagrams
//! ([`Peer::on_message`]), ticks ([`Peer::on_tick`]) and local operations ([`Peer::add`],
//! [`Peer::update`], [`Peer::delete`], [`Peer::purge`], [`Peer::get`]), each with `now`
//! in Unix ms, and drains what it wants sent ([`Peer::poll_transmit`]) and what happened
//! ([`Peer::poll_event`]). [`crate::net`] drives it over UDP; the tests drive it over a
//! simulated network with loss, reordering, duplication and partitions.
//!
//! # Streams and delivery
//! Each node sends its writes (ADD, UPDATE, DELETE, PURGE) as one stream numbered
//! `1, 2, 3, ...` per incarnation, to every peer (unicast) or to the multicast group.
//! A receiver applies each message when it arrives, in any order: writes carry
//! last-writer-wins versions ([`crate::local`]), so applying them out of order or twice
//! yields the same table. The sequence numbers serve reliability (seed L200: duplicates
//! discarded, gaps detected and repaired):
//! - **ADD: positive acknowledgement** (L204). Each receiver ACKs an ADD as soon as it
//!   applied it. The sender retransmits to the members that have not ACKed after
//!   `ack_timeout_ms`, up to `ack_retries` times, then declares them down: an ADD never
//!   waits on a dead node.
//! - **UPDATE/DELETE/PURGE: negative acknowledgement** (L210). A receiver that sees a
//!   gap NACKs the missing ranges to the sender, which repairs them from its
//!   retransmit buffer. Receivers also send cumulative ACKs (every `ack_every`
//!   messages, and in each heartbeat's view); a message leaves the buffer once every
//!   live member has it (JGroups' STABLE). A NACK for a message no longer kept gets a
//!   GONE, and the receiver then copies the sender's table (a repair sync).
//! - **Heartbeats** every `heartbeat_ms` carry the sender's last sequence number, so
//!   the loss of a stream's last message is found without another message behind it,
//!   and a view of what the sender received from everyone. A member silent for
//!   `dead_after` heartbeats is declared down; it is up again when heard again.
//!
//! # Flow control (seed L216–L226)
//! With a multicast group the sender is a recipient of its own messages and keeps at
//! most `self_receipt_window` of them unreturned: when the network or its own input
//! queue is busy, they come back later and it sends more slowly (the seed's self-receipt
//! flow control, which also paces the ACKs it causes). Without multicast, the feedback
//! variant: at most `window` messages beyond what every live, ready member has
//! cumulatively acknowledged. A member that holds the window for longer than the ADD
//! retries would take is declared down. Writes wait in a bounded queue meanwhile; a full
//! queue drops and counts.
//!
//! # Joining
//! A node starts `syncing`: it asks a ready peer for a point-to-point copy (SYNC
//! REQUEST, then chunks each acknowledged, then DONE with the purges and a view of what
//! the snapshot held from each sender), applies it, anchors each sender's stream where
//! the snapshot left it, NACKs the rest, and reports `ready` (seed L196). With no ready
//! peer within `join_timeout_ms` it is the first node and ready at once.
//!
//! # Security
//! Every message is authenticated ([`crate::wire`]); a bad MAC is `forged`, a sequence
//! number already delivered from that incarnation is `replayed` (network duplicates
//! count there too), an older incarnation of a live member is `replayed`, and a source
//! address outside the configured peers (unicast mode) is `non_member`. All are
//! dropped. Values travel sealed ([`crate::seal`]).
//!
//! An incarnation is the node's start time in Unix ms: a larger one means the node
//! restarted and its stream starts again at 1. A smaller one is accepted only from a
//! member that is down (a node restarted with its clock set back); while the member is
//! up it is a replay.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crypto_offload::Secret;
use serde::Serialize;

use crate::local::{LocalTable, PurgeScope, Record, Snapshot, TableId, Version};
use crate::seal::{ClusterKey, SealError, Sealer};
use crate::wire::{
    Body, Header, Message, NodeState, ViewEntry, WireError, WireRecord, MAX_CHUNK_RECORDS,
    MAX_LIST, MAX_NAME, SYNC_DONE_INDEX,
};

/// Tuning of the peer protocol. Times in ms.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// This node's name (unique in the cluster).
    pub node: String,
    /// Unicast peers. Without `multicast`, also the membership: datagrams from other
    /// addresses are dropped.
    pub peers: Vec<SocketAddr>,
    /// The multicast group data and heartbeats go to (members are then whoever holds
    /// the cluster key).
    pub multicast: Option<SocketAddr>,
    pub ack_timeout_ms: u64,
    pub ack_retries: u32,
    pub heartbeat_ms: u64,
    /// Heartbeat intervals of silence after which a member is down.
    pub dead_after: u32,
    /// Unicast flow control: data messages beyond every ready member's cumulative ACK.
    pub window: u64,
    /// Multicast flow control: own messages sent but not yet received back.
    pub self_receipt_window: usize,
    /// Receivers send a cumulative ACK after this many data messages.
    pub ack_every: u64,
    /// Sent messages kept for repair at most.
    pub retransmit_capacity: usize,
    /// Local writes waiting for the flow control at most.
    pub max_queue: usize,
    /// Record bytes per sync chunk (a chunk should fit one unfragmented datagram).
    pub sync_chunk_bytes: usize,
    /// Sync chunks in flight.
    pub sync_window: usize,
    /// How long a starting node looks for a ready peer to copy before it is ready alone.
    pub join_timeout_ms: u64,
    /// Whether a starting node copies a peer's table first.
    pub sync_on_join: bool,
    /// How long a remote GET waits for replies at most (the caller's deadline is
    /// usually shorter).
    pub get_timeout_ms: u64,
}

impl PeerConfig {
    /// Defaults for a node called `node` with these peers.
    pub fn new(node: &str, peers: Vec<SocketAddr>, multicast: Option<SocketAddr>) -> Self {
        PeerConfig {
            node: node.to_string(),
            peers,
            multicast,
            ack_timeout_ms: 50,
            ack_retries: 3,
            heartbeat_ms: 200,
            dead_after: 5,
            window: 64,
            self_receipt_window: 8,
            ack_every: 16,
            retransmit_capacity: 65_536,
            max_queue: 131_072,
            sync_chunk_bytes: 1_200,
            sync_window: 8,
            join_timeout_ms: 1_000,
            sync_on_join: true,
            get_timeout_ms: 100,
        }
    }
}

/// A local write to replicate. The caller has already applied it to the local table
/// (the version comes from there).
pub enum Op {
    Add {
        table: TableId,
        key: Vec<u8>,
        value: Secret,
        expires_ms: u64,
        version: Version,
    },
    Update {
        table: TableId,
        key: Vec<u8>,
        value: Secret,
        expires_ms: u64,
        version: Version,
    },
    Delete {
        table: TableId,
        key: Vec<u8>,
        expires_ms: u64,
        version: Version,
    },
    Purge {
        scope: PurgeScope,
        version: Version,
    },
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Add { table, .. } => write!(f, "Add({table:?})"),
            Op::Update { table, .. } => write!(f, "Update({table:?})"),
            Op::Delete { table, .. } => write!(f, "Delete({table:?})"),
            Op::Purge { scope, .. } => write!(f, "Purge({scope:?})"),
        }
    }
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// One node.
    To(SocketAddr),
    /// Every configured unicast peer.
    AllPeers,
    /// The multicast group.
    Group,
}

/// A datagram to send.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub dest: Dest,
    pub bytes: Vec<u8>,
}

/// Something the caller may want to act on.
#[derive(Debug)]
pub enum Event {
    /// The answer to [`Peer::get`]: the value from the first peer that had it, or
    /// `None` when every asked peer missed or the GET timed out.
    GetResult {
        req: u64,
        value: Option<Secret>,
    },
    /// The node finished joining (or found no one to join) and is ready.
    Ready,
    MemberUp {
        node: u32,
    },
    MemberDown {
        node: u32,
    },
}

/// Counters of the peer tier, for operators.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerCounters {
    /// Datagrams handed out to send / accepted after checks.
    pub sent: u64,
    pub received: u64,
    /// Data messages sent first time (not retransmits).
    pub data_sent: u64,
    pub data_received: u64,
    pub acks_sent: u64,
    pub acks_received: u64,
    pub nacks_sent: u64,
    pub nacks_received: u64,
    pub retransmits: u64,
    pub gone_sent: u64,
    pub gone_received: u64,
    /// Dropped: bad MAC (or no key in common).
    pub forged: u64,
    /// Dropped: already delivered (replays and network duplicates), or an old
    /// incarnation of a live member.
    pub replayed: u64,
    /// Dropped: from an address that is not a configured peer.
    pub non_member: u64,
    /// Dropped: authenticated but malformed, or a sealed value that did not open.
    pub malformed: u64,
    /// Dropped: a message claiming this node's id from another incarnation (two nodes
    /// whose names give the same id, or a copy of this node).
    pub id_conflicts: u64,
    /// Local writes dropped because the send queue was full.
    pub queue_dropped: u64,
    pub member_downs: u64,
    pub ack_failures: u64,
    pub window_stalls: u64,
    pub self_receipt_timeouts: u64,
    pub syncs_served: u64,
    pub syncs_completed: u64,
    pub syncs_failed: u64,
    pub sync_records_received: u64,
    pub gets_sent: u64,
    pub get_hits: u64,
    pub get_misses: u64,
    pub get_timeouts: u64,
    pub gets_served: u64,
}

/// One member as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStats {
    pub name: String,
    pub id: u32,
    pub addr: Option<String>,
    pub up: bool,
    pub state: NodeState,
    pub incarnation: u64,
    /// ms since it was last heard (`None`: never).
    pub last_heard_ago_ms: Option<u64>,
    /// Our messages it has not acknowledged yet.
    pub lag: u64,
    /// Its messages we know of and have not received yet.
    pub behind: u64,
}

/// Replicated writes kept for [`PeerStats::replication_delay_ms`].
const DELAY_SAMPLES: usize = 4096;

/// Percentiles of the replication delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Delay {
    pub p50: u64,
    pub p99: u64,
    pub samples: usize,
}

/// A snapshot of the peer tier for `show cluster`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerStats {
    pub node: String,
    pub id: u32,
    pub incarnation: u64,
    pub state: NodeState,
    pub multicast: bool,
    pub members: Vec<MemberStats>,
    pub last_seq: u64,
    /// Local writes waiting for the flow control.
    pub queue_depth: usize,
    /// Sent messages kept for repair.
    pub retransmit_buffer: usize,
    pub unacked_adds: usize,
    /// Largest lag of a live member behind this node's stream.
    pub replication_lag: u64,
    /// Smoothed time for a multicast message to come back to its sender (ms).
    pub self_receipt_rtt_ms: Option<f64>,
    /// Replication delay of the latest writes from other nodes (ms from the write at its
    /// origin to its application here): median and 99th percentile, and how many
    /// samples (at most the last 4,096); `None` before the first.
    pub replication_delay_ms: Option<Delay>,
    pub counters: PeerCounters,
}

/// A 1024-wide sliding window over control sequence numbers (RFC 6479 style, simple).
#[derive(Debug, Clone)]
struct ReplayWindow {
    top: u64,
    bits: [u64; 16],
}

impl ReplayWindow {
    const WIDTH: u64 = 1024;

    fn new() -> Self {
        ReplayWindow {
            top: 0,
            bits: [0; 16],
        }
    }

    /// True if `seq` is new (and marks it), false if seen or too old.
    fn check(&mut self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            let shift = seq - self.top;
            if shift >= Self::WIDTH {
                self.bits = [0; 16];
            } else {
                for s in self.top + 1..=seq {
                    let i = (s % Self::WIDTH) as usize;
                    self.bits[i / 64] &= !(1 << (i % 64));
                }
            }
            self.top = seq;
        } else if self.top - seq >= Self::WIDTH {
            return false;
        }
        let i = (seq % Self::WIDTH) as usize;
        let (w, b) = (i / 64, 1u64 << (i % 64));
        if self.bits[w] & b != 0 {
            return false;
        }
        self.bits[w] |= b;
        true
    }
}

/// Our receipt of one member's data stream.
#[derive(Debug, Clone)]
struct Recv {
    /// Whether we know where its stream starts for us (not while joining).
    anchored: bool,
    /// Every seq below this was received.
    next: u64,
    /// Received beyond `next`.
    ahead: BTreeSet<u64>,
    /// The highest seq known to exist (received or advertised).
    highest: u64,
    /// When a gap was first seen (NACKs wait a little for reordered messages).
    gap_since: Option<u64>,
    nack_at: u64,
    since_ack: u64,
    last_ack_ms: u64,
}

impl Recv {
    fn new(anchored: bool) -> Self {
        Recv {
            anchored,
            next: 1,
            ahead: BTreeSet::new(),
            highest: 0,
            gap_since: None,
            nack_at: 0,
            since_ack: 0,
            last_ack_ms: 0,
        }
    }

    /// Record `seq`; false if it was already received.
    fn receive(&mut self, seq: u64) -> bool {
        if seq < self.next || self.ahead.contains(&seq) {
            return false;
        }
        self.highest = self.highest.max(seq);
        if seq == self.next {
            self.next += 1;
            self.advance();
        } else {
            self.ahead.insert(seq);
        }
        true
    }

    fn advance(&mut self) {
        while self.ahead.remove(&self.next) {
            self.next += 1;
        }
        while self.ahead.first().is_some_and(|&s| s < self.next) {
            self.ahead.pop_first();
        }
        if self.highest < self.next {
            self.gap_since = None;
        }
    }

    /// Move the start forward (anchoring, or after a GONE).
    fn skip_to(&mut self, next: u64) {
        if next > self.next {
            self.next = next;
        }
        self.advance();
    }

    fn delivered(&self) -> u64 {
        self.next - 1
    }

    fn has_gap(&self) -> bool {
        self.anchored && self.highest >= self.next
    }

    /// The missing ranges, at most `MAX_LIST`.
    fn missing(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut from = self.next;
        for &s in &self.ahead {
            if out.len() == MAX_LIST {
                return out;
            }
            if s > from {
                out.push((from, s - 1));
            }
            from = s + 1;
        }
        if from <= self.highest && out.len() < MAX_LIST {
            out.push((from, self.highest));
        }
        out
    }
}

#[derive(Debug)]
struct Member {
    id: u32,
    name: String,
    addr: Option<SocketAddr>,
    up: bool,
    state: NodeState,
    incarnation: u64,
    last_heard_ms: Option<u64>,
    /// Their cumulative acknowledgement of our current stream.
    acked: u64,
    recv: Recv,
    ctl: ReplayWindow,
}

struct AddWait {
    sent_ms: u64,
    retries: u32,
    waiting: BTreeSet<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Join,
    Repair,
}

type SyncDone = (u32, Vec<ViewEntry>, Vec<(PurgeScope, Version)>);

struct IncomingSync {
    from: u32,
    purpose: Purpose,
    got: BTreeSet<u32>,
    /// DONE received: chunk count, view, purges.
    done: Option<SyncDone>,
    last_progress_ms: u64,
}

struct Chunk {
    bytes: Vec<u8>,
    sent_ms: u64,
    retries: u32,
}

struct OutgoingSync {
    addr: SocketAddr,
    snapshot: Snapshot,
    next_index: u32,
    inflight: BTreeMap<u32, Chunk>,
    view: Vec<ViewEntry>,
    purges: Vec<(PurgeScope, Version)>,
    done: Option<Chunk>,
}

struct PendingGet {
    table: TableId,
    key: Vec<u8>,
    asked: BTreeSet<u32>,
    deadline_ms: u64,
}

/// The peer replication state machine of one node.
pub struct Peer {
    cfg: PeerConfig,
    id: u32,
    incarnation: u64,
    key: Arc<ClusterKey>,
    sealer: Sealer,
    table: Arc<LocalTable>,
    state: NodeState,
    started_ms: u64,
    peer_set: HashSet<SocketAddr>,

    queue: VecDeque<Op>,
    last_seq: u64,
    ctl_seq: u64,
    rtx: VecDeque<Vec<u8>>,
    rtx_base: u64,
    adds: BTreeMap<u64, AddWait>,
    self_outstanding: VecDeque<(u64, u64)>,
    self_rtt_ms: Option<f64>,
    /// How long the latest replicated writes took to arrive (ms from their origin's
    /// write to their application here), newest last, at most [`DELAY_SAMPLES`].
    delays_ms: std::collections::VecDeque<u64>,
    window_stall_since: Option<u64>,
    window_probes: u64,

    members: BTreeMap<u32, Member>,
    syncs_in: BTreeMap<u64, IncomingSync>,
    syncs_out: HashMap<(u32, u64), OutgoingSync>,
    next_sync_id: u64,
    join_attempts: u64,
    gets: HashMap<u64, PendingGet>,
    next_req: u64,

    last_heartbeat_ms: Option<u64>,
    last_sweep_ms: u64,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    c: PeerCounters,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Peer({} {:08x} inc {} {:?} seq {})",
            self.cfg.node, self.id, self.incarnation, self.state, self.last_seq
        )
    }
}

impl Peer {
    /// A node starting at `now_ms` with incarnation `incarnation` (its start time in
    /// Unix ms, larger than any earlier run's). It replicates into `table`.
    pub fn new(
        cfg: PeerConfig,
        key: Arc<ClusterKey>,
        table: Arc<LocalTable>,
        incarnation: u64,
        now_ms: u64,
    ) -> Result<Peer, SealError> {
        let id = crate::node_id(&cfg.node);
        let sealer = key.sealer(id)?;
        let state = if cfg.sync_on_join {
            NodeState::Syncing
        } else {
            NodeState::Ready
        };
        let mut p = Peer {
            peer_set: cfg.peers.iter().copied().collect(),
            cfg,
            id,
            incarnation,
            key,
            sealer,
            table,
            state,
            started_ms: now_ms,
            queue: VecDeque::new(),
            last_seq: 0,
            ctl_seq: 0,
            rtx: VecDeque::new(),
            rtx_base: 1,
            adds: BTreeMap::new(),
            self_outstanding: VecDeque::new(),
            self_rtt_ms: None,
            delays_ms: std::collections::VecDeque::new(),
            window_stall_since: None,
            window_probes: 0,
            members: BTreeMap::new(),
            syncs_in: BTreeMap::new(),
            syncs_out: HashMap::new(),
            next_sync_id: 1,
            join_attempts: 0,
            gets: HashMap::new(),
            next_req: 1,
            last_heartbeat_ms: None,
            last_sweep_ms: now_ms,
            out: VecDeque::new(),
            events: VecDeque::new(),
            c: PeerCounters::default(),
        };
        if p.state == NodeState::Ready {
            p.events.push_back(Event::Ready);
        }
        Ok(p)
    }

    /// This node's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Syncing or ready.
    pub fn state(&self) -> NodeState {
        self.state
    }

    /// The table this node replicates into.
    pub fn table(&self) -> &Arc<LocalTable> {
        &self.table
    }

    // -----------------------------------------------------------------------------
    // Inputs: local operations

    /// Replicate a write already applied to the local table. Queued behind the flow
    /// control; dropped and counted when the queue is full.
    pub fn submit(&mut self, op: Op, now_ms: u64) {
        if self.queue.len() >= self.cfg.max_queue {
            self.c.queue_dropped += 1;
            return;
        }
        self.queue.push_back(op);
        self.pump(now_ms);
    }

    /// Replicate a local ADD (see [`LocalTable::add_local`] for the version).
    pub fn add(
        &mut self,
        table: TableId,
        key: &[u8],
        value: Secret,
        expires_ms: u64,
        version: Version,
        now_ms: u64,
    ) {
        let key = key.to_vec();
        self.submit(
            Op::Add {
                table,
                key,
                value,
                expires_ms,
                version,
            },
            now_ms,
        );
    }

    /// Replicate a local UPDATE.
    pub fn update(
        &mut self,
        table: TableId,
        key: &[u8],
        value: Secret,
        expires_ms: u64,
        version: Version,
        now_ms: u64,
    ) {
        let key = key.to_vec();
        self.submit(
            Op::Update {
                table,
                key,
                value,
                expires_ms,
                version,
            },
            now_ms,
        );
    }

    /// Replicate a local DELETE (the tombstone's version and expiry).
    pub fn delete(
        &mut self,
        table: TableId,
        key: &[u8],
        expires_ms: u64,
        version: Version,
        now_ms: u64,
    ) {
        let key = key.to_vec();
        self.submit(
            Op::Delete {
                table,
                key,
                expires_ms,
                version,
            },
            now_ms,
        );
    }

    /// Replicate a local PURGE.
    pub fn purge(&mut self, scope: PurgeScope, version: Version, now_ms: u64) {
        self.submit(Op::Purge { scope, version }, now_ms);
    }

    /// Ask every live peer for a key the local table missed; the first reply with the
    /// value wins. The answer comes as [`Event::GetResult`] with the returned id (at
    /// once, when no peer is up). A hit is also stored in the local table.
    pub fn get(&mut self, table: TableId, key: &[u8], now_ms: u64) -> u64 {
        let req = self.next_req;
        self.next_req += 1;
        let asked: BTreeSet<u32> = self
            .members
            .values()
            .filter(|m| m.up && m.addr.is_some())
            .map(|m| m.id)
            .collect();
        if asked.is_empty() {
            self.c.get_misses += 1;
            self.events.push_back(Event::GetResult { req, value: None });
            return req;
        }
        let body = Body::Get {
            req,
            table,
            key: key.to_vec(),
        };
        for id in &asked {
            if let Some(addr) = self.members.get(id).and_then(|m| m.addr) {
                self.send_control(Dest::To(addr), body.clone());
            }
        }
        self.c.gets_sent += 1;
        self.gets.insert(
            req,
            PendingGet {
                table,
                key: key.to_vec(),
                asked,
                deadline_ms: now_ms + self.cfg.get_timeout_ms,
            },
        );
        req
    }

    /// Give up on a GET the caller no longer waits for.
    pub fn cancel_get(&mut self, req: u64) {
        self.gets.remove(&req);
    }

    // -----------------------------------------------------------------------------
    // Outputs

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // -----------------------------------------------------------------------------
    // Sending

    fn data_dest(&self) -> Dest {
        if self.cfg.multicast.is_some() {
            Dest::Group
        } else {
            Dest::AllPeers
        }
    }

    fn encode(&mut self, seq: u64, body: Body) -> Option<Vec<u8>> {
        let m = Message {
            header: Header {
                sender: self.id,
                incarnation: self.incarnation,
                seq,
            },
            body,
        };
        match m.encode(&self.key) {
            Ok(b) => Some(b),
            Err(e) => {
                log::error!("cluster: cannot authenticate a message: {e}");
                None
            }
        }
    }

    fn send_control(&mut self, dest: Dest, body: Body) {
        self.ctl_seq += 1;
        let seq = self.ctl_seq;
        if let Some(bytes) = self.encode(seq, body) {
            self.c.sent += 1;
            self.out.push_back(Transmit { dest, bytes });
        }
    }

    fn wire_record(
        &mut self,
        table: TableId,
        key: &[u8],
        value: Option<&Secret>,
        expires_ms: u64,
        version: Version,
    ) -> Option<WireRecord> {
        let sealed = match value {
            Some(v) => match self.sealer.seal(table, key, expires_ms, version, v.bytes()) {
                Ok(s) => Some(s),
                Err(e) => {
                    log::error!("cluster: cannot seal a record: {e}");
                    return None;
                }
            },
            None => None,
        };
        Some(WireRecord {
            table,
            key: key.to_vec(),
            expires_ms,
            version,
            sealed,
        })
    }

    /// Members whose acknowledgement pace the unicast window: up, ready, known.
    fn window_floor(&self) -> Option<(u64, u32)> {
        self.members
            .values()
            .filter(|m| m.up && m.state == NodeState::Ready && m.incarnation != 0)
            .map(|m| (m.acked, m.id))
            .min()
    }

    fn can_send(&mut self, now_ms: u64) -> bool {
        if self.cfg.multicast.is_some() {
            return self.self_outstanding.len() < self.cfg.self_receipt_window.max(1);
        }
        match self.window_floor() {
            Some((floor, _)) if self.last_seq.saturating_sub(floor) >= self.cfg.window.max(1) => {
                self.window_stall_since.get_or_insert(now_ms);
                false
            }
            _ => {
                self.window_stall_since = None;
                true
            }
        }
    }

    /// Send queued writes while the flow control allows.
    fn pump(&mut self, now_ms: u64) {
        while !self.queue.is_empty() && self.can_send(now_ms) {
            let Some(op) = self.queue.pop_front() else {
                break;
            };
            let is_add = matches!(op, Op::Add { .. });
            let body = match op {
                Op::Add {
                    table,
                    key,
                    value,
                    expires_ms,
                    version,
                } => self
                    .wire_record(table, &key, Some(&value), expires_ms, version)
                    .map(Body::Add),
                Op::Update {
                    table,
                    key,
                    value,
                    expires_ms,
                    version,
                } => self
                    .wire_record(table, &key, Some(&value), expires_ms, version)
                    .map(Body::Update),
                Op::Delete {
                    table,
                    key,
                    expires_ms,
                    version,
                } => self
                    .wire_record(table, &key, None, expires_ms, version)
                    .map(Body::Delete),
                Op::Purge { scope, version } => Some(Body::Purge { scope, version }),
            };
            let Some(body) = body else { continue };
            let seq = self.last_seq + 1;
            let Some(bytes) = self.encode(seq, body) else {
                continue;
            };
            self.last_seq = seq;
            self.rtx.push_back(bytes.clone());
            if self.rtx.len() > self.cfg.retransmit_capacity.max(1) {
                self.rtx.pop_front();
                self.rtx_base += 1;
            }
            if is_add {
                let waiting: BTreeSet<u32> = self
                    .members
                    .values()
                    .filter(|m| m.up && m.addr.is_some())
                    .map(|m| m.id)
                    .collect();
                if !waiting.is_empty() {
                    self.adds.insert(
                        seq,
                        AddWait {
                            sent_ms: now_ms,
                            retries: 0,
                            waiting,
                        },
                    );
                }
            }
            if self.cfg.multicast.is_some() {
                self.self_outstanding.push_back((seq, now_ms));
            }
            self.c.sent += 1;
            self.c.data_sent += 1;
            let dest = self.data_dest();
            self.out.push_back(Transmit { dest, bytes });
        }
    }

    fn rtx_get(&self, seq: u64) -> Option<&Vec<u8>> {
        if seq < self.rtx_base {
            return None;
        }
        self.rtx.get((seq - self.rtx_base) as usize)
    }

    /// Drop retransmit copies every live member has.
    fn free_stable(&mut self) {
        let stable = self
            .members
            .values()
            .filter(|m| m.up && m.incarnation != 0)
            .map(|m| m.acked)
            .min()
            .unwrap_or(self.last_seq);
        while self.rtx_base <= stable && !self.rtx.is_empty() {
            self.rtx.pop_front();
            self.rtx_base += 1;
        }
    }

    // -----------------------------------------------------------------------------
    // Receiving

    /// A datagram from `from`.
    pub fn on_message(&mut self, from: SocketAddr, bytes: &[u8], now_ms: u64) {
        let msg = match Message::decode(bytes, &self.key) {
            Ok(m) => m,
            Err(WireError::BadMac) => {
                self.c.forged += 1;
                return;
            }
            Err(_) => {
                self.c.malformed += 1;
                return;
            }
        };
        let h = msg.header;
        if h.sender == self.id {
            if h.incarnation != self.incarnation {
                self.c.id_conflicts += 1;
            } else if msg.body.is_data() {
                self.self_received(h.seq, now_ms);
            }
            return;
        }
        if self.cfg.multicast.is_none() && !self.peer_set.contains(&from) {
            self.c.non_member += 1;
            return;
        }
        if !self.accept_incarnation(h, from) {
            self.c.replayed += 1;
            return;
        }
        let is_data = msg.body.is_data();
        if !is_data {
            let Some(m) = self.members.get_mut(&h.sender) else {
                return;
            };
            if !m.ctl.check(h.seq) {
                self.c.replayed += 1;
                return;
            }
        }
        self.heard(h.sender, from, now_ms);
        self.c.received += 1;
        match msg.body {
            Body::Add(_) | Body::Update(_) | Body::Delete(_) | Body::Purge { .. } => {
                self.on_data(h, msg.body, now_ms)
            }
            Body::Ack {
                to,
                incarnation,
                upto,
                seqs,
            } => {
                if to == self.id && incarnation == self.incarnation {
                    self.on_ack(h.sender, upto, &seqs);
                }
            }
            Body::Nack {
                to,
                incarnation,
                ranges,
            } => {
                if to == self.id && incarnation == self.incarnation {
                    self.on_nack(h.sender, from, &ranges);
                }
            }
            Body::Gone {
                to,
                incarnation,
                below,
            } => {
                if to == self.id {
                    self.on_gone(h, incarnation, below, from, now_ms);
                }
            }
            Body::Heartbeat {
                last_seq,
                state,
                name,
                view,
            } => self.on_heartbeat(h, last_seq, state, &name, &view, now_ms),
            Body::SyncRequest { sync_id } => self.on_sync_request(h.sender, from, sync_id, now_ms),
            Body::SyncChunk {
                sync_id,
                index,
                records,
            } => self.on_sync_chunk(h.sender, from, sync_id, index, records, now_ms),
            Body::SyncDone {
                sync_id,
                chunks,
                view,
                purges,
            } => self.on_sync_done(h.sender, from, sync_id, chunks, view, purges, now_ms),
            Body::SyncAck { sync_id, index } => self.on_sync_ack(h.sender, sync_id, index, now_ms),
            Body::Get { req, table, key } => self.on_get(from, req, table, &key, now_ms),
            Body::GetReply { req, record } => self.on_get_reply(h.sender, req, record, now_ms),
        }
        self.pump(now_ms);
    }

    /// Whether a message's incarnation is current (creating or resetting the member).
    fn accept_incarnation(&mut self, h: Header, from: SocketAddr) -> bool {
        let joining = self.state == NodeState::Syncing;
        let m = self.members.entry(h.sender).or_insert_with(|| Member {
            id: h.sender,
            name: String::new(),
            addr: Some(from),
            up: false,
            state: NodeState::Syncing,
            incarnation: 0,
            last_heard_ms: None,
            acked: 0,
            recv: Recv::new(!joining),
            ctl: ReplayWindow::new(),
        });
        if h.incarnation == m.incarnation {
            return true;
        }
        if m.incarnation != 0 && h.incarnation < m.incarnation && m.up {
            return false;
        }
        // A new life of this member (or the first we hear of it): its stream starts
        // at 1, and it knows nothing of ours.
        let known = m.incarnation != 0;
        m.incarnation = h.incarnation;
        m.recv = Recv::new(!joining || known);
        m.ctl = ReplayWindow::new();
        m.acked = 0;
        m.state = NodeState::Syncing;
        for w in self.adds.values_mut() {
            w.waiting.remove(&h.sender);
        }
        true
    }

    fn heard(&mut self, id: u32, from: SocketAddr, now_ms: u64) {
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        m.last_heard_ms = Some(now_ms);
        m.addr = Some(from);
        if !m.up {
            m.up = true;
            self.events.push_back(Event::MemberUp { node: id });
        }
    }

    fn self_received(&mut self, seq: u64, now_ms: u64) {
        while let Some(&(s, sent)) = self.self_outstanding.front() {
            if s > seq {
                break;
            }
            self.self_outstanding.pop_front();
            if s == seq {
                let sample = now_ms.saturating_sub(sent) as f64;
                self.self_rtt_ms = Some(match self.self_rtt_ms {
                    None => sample,
                    Some(r) => r + (sample - r) / 8.0,
                });
            }
        }
        self.pump(now_ms);
    }

    fn open_record(&mut self, r: WireRecord) -> Option<Record> {
        let value = match &r.sealed {
            Some(s) => match self
                .sealer
                .open(r.table, &r.key, r.expires_ms, r.version, s)
            {
                Ok(v) => Some(v),
                Err(_) => {
                    self.c.malformed += 1;
                    return None;
                }
            },
            None => None,
        };
        Some(Record {
            table: r.table,
            key: r.key,
            value,
            expires_ms: r.expires_ms,
            version: r.version,
        })
    }

    fn on_data(&mut self, h: Header, body: Body, now_ms: u64) {
        let Some(m) = self.members.get_mut(&h.sender) else {
            return;
        };
        let is_add = matches!(body, Body::Add(_));
        let new = m.recv.receive(h.seq);
        let (addr, incarnation) = (m.addr, m.incarnation);
        if new {
            if m.recv.has_gap() {
                m.recv.gap_since.get_or_insert(now_ms);
            }
            m.recv.since_ack += 1;
            self.c.data_received += 1;
            match body {
                Body::Add(r) | Body::Update(r) | Body::Delete(r) => {
                    if let Some(rec) = self.open_record(r) {
                        // The version is the origin's Unix ms at the write: the delay
                        // includes the clocks' difference (none on one machine).
                        if self.delays_ms.len() >= DELAY_SAMPLES {
                            self.delays_ms.pop_front();
                        }
                        self.delays_ms
                            .push_back(now_ms.saturating_sub(rec.version.updated_ms));
                        self.table.merge(rec, now_ms);
                    }
                }
                Body::Purge { scope, version } => {
                    self.table.merge_purge(scope, version);
                }
                _ => {}
            }
        } else {
            self.c.replayed += 1;
        }
        // Positive acknowledgement of an ADD; a duplicate is acknowledged again (our
        // ACK was lost, or the sender probes a stalled window); others every few.
        let Some(m) = self.members.get_mut(&h.sender) else {
            return;
        };
        if is_add || !new || m.recv.since_ack >= self.cfg.ack_every.max(1) {
            let body = Body::Ack {
                to: h.sender,
                incarnation,
                upto: m.recv.delivered(),
                seqs: if is_add && h.seq > m.recv.delivered() {
                    vec![h.seq]
                } else {
                    vec![]
                },
            };
            m.recv.since_ack = 0;
            m.recv.last_ack_ms = now_ms;
            if let Some(addr) = addr {
                self.c.acks_sent += 1;
                self.send_control(Dest::To(addr), body);
            }
        }
    }

    fn on_ack(&mut self, from: u32, upto: u64, seqs: &[u64]) {
        self.c.acks_received += 1;
        let Some(m) = self.members.get_mut(&from) else {
            return;
        };
        m.acked = m.acked.max(upto.min(self.last_seq));
        let upto = m.acked;
        let mut emptied = Vec::new();
        for (seq, w) in self.adds.range_mut(..=upto) {
            w.waiting.remove(&from);
            if w.waiting.is_empty() {
                emptied.push(*seq);
            }
        }
        for s in seqs {
            if let Some(w) = self.adds.get_mut(s) {
                w.waiting.remove(&from);
                if w.waiting.is_empty() {
                    emptied.push(*s);
                }
            }
        }
        for s in emptied {
            self.adds.remove(&s);
        }
        self.free_stable();
    }

    fn on_nack(&mut self, from: u32, addr: SocketAddr, ranges: &[(u64, u64)]) {
        self.c.nacks_received += 1;
        let mut budget = 512u64;
        let mut gone = false;
        let mut resend = Vec::new();
        'ranges: for &(a, b) in ranges {
            for seq in a..=b.min(self.last_seq) {
                if budget == 0 {
                    break 'ranges;
                }
                match self.rtx_get(seq) {
                    Some(bytes) => {
                        resend.push(bytes.clone());
                        budget -= 1;
                    }
                    None => gone = true,
                }
            }
        }
        for bytes in resend {
            self.c.retransmits += 1;
            self.c.sent += 1;
            self.out.push_back(Transmit {
                dest: Dest::To(addr),
                bytes,
            });
        }
        if gone {
            self.c.gone_sent += 1;
            let body = Body::Gone {
                to: from,
                incarnation: self.incarnation,
                below: self.rtx_base,
            };
            self.send_control(Dest::To(addr), body);
        }
    }

    fn on_gone(&mut self, h: Header, incarnation: u64, below: u64, from: SocketAddr, now_ms: u64) {
        let Some(m) = self.members.get_mut(&h.sender) else {
            return;
        };
        if incarnation != m.incarnation || below <= m.recv.next {
            return;
        }
        self.c.gone_received += 1;
        m.recv.skip_to(below);
        // What we missed is gone from its buffer: copy its table instead.
        let syncing_from = self.syncs_in.values().any(|s| s.from == h.sender);
        if !syncing_from {
            self.start_sync(h.sender, from, Purpose::Repair, now_ms);
        }
    }

    fn on_heartbeat(
        &mut self,
        h: Header,
        last_seq: u64,
        state: NodeState,
        name: &[u8],
        view: &[ViewEntry],
        now_ms: u64,
    ) {
        let me = (self.id, self.incarnation);
        let last = self.last_seq;
        let Some(m) = self.members.get_mut(&h.sender) else {
            return;
        };
        m.state = state;
        if m.name.is_empty() {
            m.name = String::from_utf8_lossy(&name[..name.len().min(MAX_NAME)]).into_owned();
        }
        if last_seq > m.recv.highest {
            m.recv.highest = last_seq;
            if m.recv.has_gap() {
                m.recv.gap_since.get_or_insert(now_ms);
            }
        }
        if let Some(v) = view.iter().find(|v| (v.node, v.incarnation) == me) {
            m.acked = m.acked.max(v.upto.min(last));
            let upto = m.acked;
            let id = m.id;
            let mut emptied = Vec::new();
            for (seq, w) in self.adds.range_mut(..=upto) {
                w.waiting.remove(&id);
                if w.waiting.is_empty() {
                    emptied.push(*seq);
                }
            }
            for s in emptied {
                self.adds.remove(&s);
            }
        }
        self.free_stable();
    }

    // -----------------------------------------------------------------------------
    // Sync (join and repair)

    fn view(&self) -> Vec<ViewEntry> {
        let mut v = vec![ViewEntry {
            node: self.id,
            incarnation: self.incarnation,
            upto: self.last_seq,
        }];
        v.extend(
            self.members
                .values()
                .filter(|m| m.incarnation != 0 && m.recv.anchored)
                .map(|m| ViewEntry {
                    node: m.id,
                    incarnation: m.incarnation,
                    upto: m.recv.delivered(),
                }),
        );
        v.truncate(MAX_LIST);
        v
    }

    fn start_sync(&mut self, from: u32, addr: SocketAddr, purpose: Purpose, now_ms: u64) {
        let sync_id = self.next_sync_id;
        self.next_sync_id += 1;
        self.syncs_in.insert(
            sync_id,
            IncomingSync {
                from,
                purpose,
                got: BTreeSet::new(),
                done: None,
                last_progress_ms: now_ms,
            },
        );
        self.send_control(Dest::To(addr), Body::SyncRequest { sync_id });
    }

    fn on_sync_request(&mut self, from: u32, addr: SocketAddr, sync_id: u64, now_ms: u64) {
        if self.state != NodeState::Ready || self.syncs_out.contains_key(&(from, sync_id)) {
            return;
        }
        // One sync per requester: a new request replaces an older one.
        self.syncs_out.retain(|(to, _), _| *to != from);
        self.c.syncs_served += 1;
        let out = OutgoingSync {
            addr,
            snapshot: self.table.snapshot(),
            next_index: 0,
            inflight: BTreeMap::new(),
            view: self.view(),
            purges: self.table.purge_markers(),
            done: None,
        };
        self.syncs_out.insert((from, sync_id), out);
        self.pump_sync(from, sync_id, now_ms);
    }

    fn pump_sync(&mut self, to: u32, sync_id: u64, now_ms: u64) {
        let Some(mut s) = self.syncs_out.remove(&(to, sync_id)) else {
            return;
        };
        while s.inflight.len() < self.cfg.sync_window.max(1) && !s.snapshot.done() {
            let recs = self
                .table
                .next_chunk(&mut s.snapshot, self.cfg.sync_chunk_bytes, now_ms);
            let mut records = Vec::with_capacity(recs.len());
            for r in recs.into_iter().take(MAX_CHUNK_RECORDS) {
                if let Some(w) =
                    self.wire_record(r.table, &r.key, r.value.as_ref(), r.expires_ms, r.version)
                {
                    records.push(w);
                }
            }
            if records.is_empty() {
                continue;
            }
            let index = s.next_index;
            s.next_index += 1;
            self.ctl_seq += 1;
            let body = Body::SyncChunk {
                sync_id,
                index,
                records,
            };
            if let Some(bytes) = self.encode(self.ctl_seq, body) {
                self.c.sent += 1;
                self.out.push_back(Transmit {
                    dest: Dest::To(s.addr),
                    bytes: bytes.clone(),
                });
                s.inflight.insert(
                    index,
                    Chunk {
                        bytes,
                        sent_ms: now_ms,
                        retries: 0,
                    },
                );
            }
        }
        if s.snapshot.done() && s.inflight.is_empty() && s.done.is_none() {
            self.ctl_seq += 1;
            let body = Body::SyncDone {
                sync_id,
                chunks: s.next_index,
                view: s.view.clone(),
                purges: s.purges.clone(),
            };
            if let Some(bytes) = self.encode(self.ctl_seq, body) {
                self.c.sent += 1;
                self.out.push_back(Transmit {
                    dest: Dest::To(s.addr),
                    bytes: bytes.clone(),
                });
                s.done = Some(Chunk {
                    bytes,
                    sent_ms: now_ms,
                    retries: 0,
                });
            }
        }
        self.syncs_out.insert((to, sync_id), s);
    }

    fn on_sync_ack(&mut self, from: u32, sync_id: u64, index: u32, now_ms: u64) {
        let Some(s) = self.syncs_out.get_mut(&(from, sync_id)) else {
            return;
        };
        if index == SYNC_DONE_INDEX {
            if s.done.is_some() {
                self.syncs_out.remove(&(from, sync_id));
            }
            return;
        }
        s.inflight.remove(&index);
        self.pump_sync(from, sync_id, now_ms);
    }

    fn on_sync_chunk(
        &mut self,
        from: u32,
        addr: SocketAddr,
        sync_id: u64,
        index: u32,
        records: Vec<WireRecord>,
        now_ms: u64,
    ) {
        let Some(s) = self.syncs_in.get(&sync_id) else {
            return;
        };
        if s.from != from {
            return;
        }
        let new = !s.got.contains(&index);
        self.send_control(Dest::To(addr), Body::SyncAck { sync_id, index });
        if new {
            for r in records {
                if let Some(rec) = self.open_record(r) {
                    self.c.sync_records_received += 1;
                    self.table.merge(rec, now_ms);
                }
            }
        }
        if let Some(s) = self.syncs_in.get_mut(&sync_id) {
            s.got.insert(index);
            s.last_progress_ms = now_ms;
        }
        self.finish_sync(sync_id, now_ms);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_sync_done(
        &mut self,
        from: u32,
        addr: SocketAddr,
        sync_id: u64,
        chunks: u32,
        view: Vec<ViewEntry>,
        purges: Vec<(PurgeScope, Version)>,
        now_ms: u64,
    ) {
        let Some(s) = self.syncs_in.get_mut(&sync_id) else {
            // Already finished: the source missed our ACK of DONE.
            self.send_control(
                Dest::To(addr),
                Body::SyncAck {
                    sync_id,
                    index: SYNC_DONE_INDEX,
                },
            );
            return;
        };
        if s.from != from {
            return;
        }
        s.done = Some((chunks, view, purges));
        s.last_progress_ms = now_ms;
        self.send_control(
            Dest::To(addr),
            Body::SyncAck {
                sync_id,
                index: SYNC_DONE_INDEX,
            },
        );
        self.finish_sync(sync_id, now_ms);
    }

    fn finish_sync(&mut self, sync_id: u64, now_ms: u64) {
        let complete = self.syncs_in.get(&sync_id).is_some_and(|s| {
            s.done
                .as_ref()
                .is_some_and(|(n, _, _)| (0..*n).all(|i| s.got.contains(&i)))
        });
        if !complete {
            return;
        }
        let Some(s) = self.syncs_in.remove(&sync_id) else {
            return;
        };
        let Some((_, view, purges)) = s.done else {
            return;
        };
        for (scope, version) in purges {
            self.table.merge_purge(scope, version);
        }
        self.c.syncs_completed += 1;
        if s.purpose != Purpose::Join || self.state == NodeState::Ready {
            return;
        }
        // Anchor each sender's stream where the snapshot left it; later messages are
        // NACKed from there. Senders it did not know start at 1.
        for v in view {
            if v.node == self.id {
                continue;
            }
            let Some(m) = self.members.get_mut(&v.node) else {
                // Not heard yet: remember as a member with that life, anchored.
                let mut recv = Recv::new(true);
                recv.skip_to(v.upto + 1);
                self.members.insert(
                    v.node,
                    Member {
                        id: v.node,
                        name: String::new(),
                        addr: None,
                        up: false,
                        state: NodeState::Syncing,
                        incarnation: v.incarnation,
                        last_heard_ms: None,
                        acked: 0,
                        recv,
                        ctl: ReplayWindow::new(),
                    },
                );
                continue;
            };
            if m.incarnation == v.incarnation || m.incarnation == 0 {
                m.incarnation = v.incarnation;
                m.recv.anchored = true;
                m.recv.skip_to(v.upto + 1);
            }
        }
        for m in self.members.values_mut() {
            m.recv.anchored = true;
            if m.recv.has_gap() {
                m.recv.gap_since.get_or_insert(now_ms);
            }
        }
        self.become_ready();
    }

    fn become_ready(&mut self) {
        if self.state != NodeState::Ready {
            self.state = NodeState::Ready;
            for m in self.members.values_mut() {
                m.recv.anchored = true;
            }
            self.syncs_in.retain(|_, s| s.purpose != Purpose::Join);
            self.events.push_back(Event::Ready);
        }
    }

    // -----------------------------------------------------------------------------
    // GET

    fn on_get(&mut self, addr: SocketAddr, req: u64, table: TableId, key: &[u8], now_ms: u64) {
        self.c.gets_served += 1;
        let record = match self.table.get_record(table, key, now_ms) {
            Some(r) if r.value.is_some() => {
                self.wire_record(r.table, &r.key, r.value.as_ref(), r.expires_ms, r.version)
            }
            _ => None,
        };
        self.send_control(Dest::To(addr), Body::GetReply { req, record });
    }

    fn on_get_reply(&mut self, from: u32, req: u64, record: Option<WireRecord>, now_ms: u64) {
        let Some(g) = self.gets.get_mut(&req) else {
            return;
        };
        if !g.asked.remove(&from) {
            return;
        }
        let (table, key) = (g.table, g.key.clone());
        let hit = match record {
            Some(r) if r.table == table && r.key == key => self.open_record(r),
            _ => None,
        };
        match hit {
            Some(rec) if rec.value.is_some() && rec.expires_ms > now_ms => {
                let value = rec.value.clone();
                self.table.merge(rec, now_ms);
                self.gets.remove(&req);
                self.c.get_hits += 1;
                self.events.push_back(Event::GetResult { req, value });
            }
            _ => {
                if self.gets.get(&req).is_some_and(|g| g.asked.is_empty()) {
                    self.gets.remove(&req);
                    self.c.get_misses += 1;
                    self.events.push_back(Event::GetResult { req, value: None });
                }
            }
        }
    }

    // -----------------------------------------------------------------------------
    // Time

    /// Timers: heartbeats, liveness, ADD retransmits, NACKs, ACKs, syncs, joining.
    /// Call it every few ms (a tenth of `ack_timeout_ms` is plenty).
    pub fn on_tick(&mut self, now_ms: u64) {
        let hb_due = self
            .last_heartbeat_ms
            .is_none_or(|t| now_ms >= t + self.cfg.heartbeat_ms);
        if hb_due {
            self.last_heartbeat_ms = Some(now_ms);
            self.heartbeat();
        }
        self.check_liveness(now_ms);
        self.retry_adds(now_ms);
        self.check_window(now_ms);
        self.expire_self_receipts(now_ms);
        self.send_nacks_and_acks(now_ms);
        self.tick_syncs(now_ms);
        self.tick_join(now_ms);
        self.expire_gets(now_ms);
        if now_ms >= self.last_sweep_ms + 1_000 {
            self.last_sweep_ms = now_ms;
            self.table.sweep(now_ms);
        }
        self.free_stable();
        self.pump(now_ms);
    }

    fn heartbeat(&mut self) {
        let body = Body::Heartbeat {
            last_seq: self.last_seq,
            state: self.state,
            name: self.cfg.node.as_bytes()[..self.cfg.node.len().min(MAX_NAME)].to_vec(),
            view: self.view(),
        };
        let dest = self.data_dest();
        self.send_control(dest, body);
    }

    fn member_down(&mut self, id: u32) {
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if !m.up {
            return;
        }
        m.up = false;
        self.c.member_downs += 1;
        self.events.push_back(Event::MemberDown { node: id });
        for w in self.adds.values_mut() {
            w.waiting.remove(&id);
        }
        self.adds.retain(|_, w| !w.waiting.is_empty());
        self.syncs_out.retain(|(to, _), _| *to != id);
        let mut answered = Vec::new();
        for (req, g) in self.gets.iter_mut() {
            if g.asked.remove(&id) && g.asked.is_empty() {
                answered.push(*req);
            }
        }
        for req in answered {
            self.gets.remove(&req);
            self.c.get_misses += 1;
            self.events.push_back(Event::GetResult { req, value: None });
        }
    }

    fn check_liveness(&mut self, now_ms: u64) {
        let silent = self.cfg.heartbeat_ms * u64::from(self.cfg.dead_after.max(1));
        let dead: Vec<u32> = self
            .members
            .values()
            .filter(|m| m.up && m.last_heard_ms.is_some_and(|t| now_ms >= t + silent))
            .map(|m| m.id)
            .collect();
        for id in dead {
            self.member_down(id);
        }
    }

    fn retry_adds(&mut self, now_ms: u64) {
        let timeout = self.cfg.ack_timeout_ms;
        let due: Vec<u64> = self
            .adds
            .iter()
            .filter(|(_, w)| now_ms >= w.sent_ms + timeout)
            .map(|(s, _)| *s)
            .collect();
        let mut failed = BTreeSet::new();
        for seq in due {
            let Some(w) = self.adds.get_mut(&seq) else {
                continue;
            };
            if w.retries >= self.cfg.ack_retries {
                failed.extend(w.waiting.iter().copied());
                self.adds.remove(&seq);
                continue;
            }
            w.retries += 1;
            w.sent_ms = now_ms;
            let waiting: Vec<u32> = w.waiting.iter().copied().collect();
            let Some(bytes) = self.rtx_get(seq).cloned() else {
                continue;
            };
            for id in waiting {
                if let Some(addr) = self.members.get(&id).and_then(|m| m.addr) {
                    self.c.retransmits += 1;
                    self.c.sent += 1;
                    self.out.push_back(Transmit {
                        dest: Dest::To(addr),
                        bytes: bytes.clone(),
                    });
                }
            }
        }
        for id in failed {
            self.c.ack_failures += 1;
            self.member_down(id);
        }
    }

    /// A full unicast window that does not move: every `ack_timeout_ms` the oldest
    /// message the slowest member has not acknowledged goes to it again (a lost tail or
    /// a lost ACK is repaired at once, not at the next heartbeat; a duplicate is
    /// re-acknowledged). After `ack_retries` such probes the member is declared down,
    /// so no write waits on it.
    fn check_window(&mut self, now_ms: u64) {
        if self.cfg.multicast.is_some() || self.queue.is_empty() {
            self.window_stall_since = None;
        }
        let Some(since) = self.window_stall_since else {
            self.window_probes = 0;
            return;
        };
        let probes = now_ms.saturating_sub(since) / self.cfg.ack_timeout_ms.max(1);
        if probes <= self.window_probes {
            return;
        }
        self.window_probes = probes;
        let Some((floor, id)) = self.window_floor() else {
            return;
        };
        if probes > u64::from(self.cfg.ack_retries) {
            self.c.window_stalls += 1;
            self.member_down(id);
            self.window_stall_since = None;
            self.window_probes = 0;
            return;
        }
        let slow: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.up && m.state == NodeState::Ready && m.acked == floor)
            .filter_map(|m| m.addr)
            .collect();
        if let Some(bytes) = self.rtx_get(floor + 1).cloned() {
            for addr in slow {
                self.c.retransmits += 1;
                self.c.sent += 1;
                self.out.push_back(Transmit {
                    dest: Dest::To(addr),
                    bytes: bytes.clone(),
                });
            }
        }
    }

    fn expire_self_receipts(&mut self, now_ms: u64) {
        // Our own copy lost (a full socket buffer): stop waiting for it.
        while let Some(&(_, sent)) = self.self_outstanding.front() {
            if now_ms < sent + self.cfg.ack_timeout_ms {
                break;
            }
            self.self_outstanding.pop_front();
            self.c.self_receipt_timeouts += 1;
        }
    }

    fn send_nacks_and_acks(&mut self, now_ms: u64) {
        let nack_delay = (self.cfg.ack_timeout_ms / 5).max(1);
        let mut sends = Vec::new();
        for m in self.members.values_mut() {
            let (Some(addr), true) = (m.addr, m.up) else {
                continue;
            };
            if m.recv.has_gap() {
                let since = *m.recv.gap_since.get_or_insert(now_ms);
                if now_ms >= since + nack_delay && now_ms >= m.recv.nack_at {
                    m.recv.nack_at = now_ms + self.cfg.ack_timeout_ms;
                    let ranges = m.recv.missing();
                    if !ranges.is_empty() {
                        sends.push((
                            addr,
                            Body::Nack {
                                to: m.id,
                                incarnation: m.incarnation,
                                ranges,
                            },
                        ));
                    }
                }
            }
            if m.recv.since_ack > 0 && now_ms >= m.recv.last_ack_ms + self.cfg.ack_timeout_ms / 2 {
                m.recv.since_ack = 0;
                m.recv.last_ack_ms = now_ms;
                sends.push((
                    addr,
                    Body::Ack {
                        to: m.id,
                        incarnation: m.incarnation,
                        upto: m.recv.delivered(),
                        seqs: vec![],
                    },
                ));
            }
        }
        for (addr, body) in sends {
            match body {
                Body::Nack { .. } => self.c.nacks_sent += 1,
                _ => self.c.acks_sent += 1,
            }
            self.send_control(Dest::To(addr), body);
        }
    }

    fn tick_syncs(&mut self, now_ms: u64) {
        let timeout = self.cfg.ack_timeout_ms;
        let retries = self.cfg.ack_retries;
        // Outgoing: retransmit unacknowledged chunks; give up after the retries.
        let mut dead = Vec::new();
        let mut resend = Vec::new();
        for (k, s) in self.syncs_out.iter_mut() {
            for c in s.inflight.values_mut().chain(s.done.iter_mut()) {
                if now_ms >= c.sent_ms + timeout {
                    if c.retries >= retries * 2 {
                        dead.push(*k);
                        break;
                    }
                    c.retries += 1;
                    c.sent_ms = now_ms;
                    resend.push((s.addr, c.bytes.clone()));
                }
            }
        }
        for (addr, bytes) in resend {
            self.c.sent += 1;
            self.c.retransmits += 1;
            self.out.push_back(Transmit {
                dest: Dest::To(addr),
                bytes,
            });
        }
        for k in dead {
            self.syncs_out.remove(&k);
        }
        // Incoming: a sync with no progress for as long is abandoned (a join retries).
        let stall = timeout * (u64::from(retries) + 1) * 2;
        let stalled: Vec<u64> = self
            .syncs_in
            .iter()
            .filter(|(_, s)| now_ms >= s.last_progress_ms + stall)
            .map(|(id, _)| *id)
            .collect();
        for id in stalled {
            if let Some(s) = self.syncs_in.remove(&id) {
                self.c.syncs_failed += 1;
                log::warn!("cluster: sync from {:08x} stalled; abandoned", s.from);
            }
        }
    }

    fn tick_join(&mut self, now_ms: u64) {
        if self.state == NodeState::Ready
            || self.syncs_in.values().any(|s| s.purpose == Purpose::Join)
        {
            return;
        }
        let ready: Vec<(u32, SocketAddr)> = self
            .members
            .values()
            .filter(|m| m.up && m.state == NodeState::Ready)
            .filter_map(|m| m.addr.map(|a| (m.id, a)))
            .collect();
        if ready.is_empty() {
            if now_ms >= self.started_ms + self.cfg.join_timeout_ms {
                self.become_ready();
            }
            return;
        }
        let (id, addr) = ready[(self.join_attempts % ready.len() as u64) as usize];
        self.join_attempts += 1;
        self.start_sync(id, addr, Purpose::Join, now_ms);
    }

    fn expire_gets(&mut self, now_ms: u64) {
        let late: Vec<u64> = self
            .gets
            .iter()
            .filter(|(_, g)| now_ms >= g.deadline_ms)
            .map(|(r, _)| *r)
            .collect();
        for req in late {
            self.gets.remove(&req);
            self.c.get_timeouts += 1;
            self.events.push_back(Event::GetResult { req, value: None });
        }
    }

    // -----------------------------------------------------------------------------
    // Operators

    /// Counters only (cheap).
    pub fn counters(&self) -> &PeerCounters {
        &self.c
    }

    /// Local writes waiting for the flow control.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Whether every anchored stream of a live member is received without a gap up to
    /// what it advertised (tests and `show cluster`).
    pub fn gap_free(&self) -> bool {
        self.members
            .values()
            .filter(|m| m.up)
            .all(|m| !m.recv.anchored || m.recv.highest < m.recv.next)
    }

    /// A snapshot for operators at `now_ms`.
    pub fn stats(&self, now_ms: u64) -> PeerStats {
        let members: Vec<MemberStats> = self
            .members
            .values()
            .map(|m| MemberStats {
                name: if m.name.is_empty() {
                    format!("{:08x}", m.id)
                } else {
                    m.name.clone()
                },
                id: m.id,
                addr: m.addr.map(|a| a.to_string()),
                up: m.up,
                state: m.state,
                incarnation: m.incarnation,
                last_heard_ago_ms: m.last_heard_ms.map(|t| now_ms.saturating_sub(t)),
                lag: self.last_seq.saturating_sub(m.acked),
                behind: m.recv.highest.saturating_sub(m.recv.delivered()),
            })
            .collect();
        let replication_lag = members
            .iter()
            .filter(|m| m.up)
            .map(|m| m.lag)
            .max()
            .unwrap_or(0);
        PeerStats {
            node: self.cfg.node.clone(),
            id: self.id,
            incarnation: self.incarnation,
            state: self.state,
            multicast: self.cfg.multicast.is_some(),
            members,
            last_seq: self.last_seq,
            queue_depth: self.queue.len(),
            retransmit_buffer: self.rtx.len(),
            unacked_adds: self.adds.len(),
            replication_lag,
            self_receipt_rtt_ms: self.self_rtt_ms,
            replication_delay_ms: (!self.delays_ms.is_empty()).then(|| {
                let mut v: Vec<u64> = self.delays_ms.iter().copied().collect();
                v.sort_unstable();
                let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
                Delay {
                    p50: at(0.5),
                    p99: at(0.99),
                    samples: v.len(),
                }
            }),
            counters: self.c.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_accepts_each_seq_once() {
        let mut w = ReplayWindow::new();
        assert!(!w.check(0));
        assert!(w.check(1));
        assert!(!w.check(1));
        assert!(w.check(5));
        assert!(w.check(3), "reordered within the window");
        assert!(!w.check(3));
        assert!(w.check(2_000));
        assert!(!w.check(5), "older than the window");
        assert!(w.check(1_999));
        assert!(w.check(2_000 - 1_023));
        assert!(!w.check(2_000 - 1_024));
    }

    #[test]
    fn recv_tracks_gaps_and_duplicates() {
        let mut r = Recv::new(true);
        assert!(r.receive(1));
        assert!(r.receive(4));
        assert!(!r.receive(4));
        assert!(!r.receive(1));
        assert_eq!(r.delivered(), 1);
        assert_eq!(r.missing(), vec![(2, 3)]);
        r.highest = 9;
        assert_eq!(r.missing(), vec![(2, 3), (5, 9)]);
        assert!(r.receive(2));
        assert!(r.receive(3));
        assert_eq!(r.delivered(), 4);
        assert_eq!(r.missing(), vec![(5, 9)]);
        r.skip_to(8);
        assert_eq!(r.missing(), vec![(8, 9)]);
        assert!(r.receive(8) && r.receive(9));
        assert!(!r.has_gap());
    }
}
