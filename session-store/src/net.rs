//! The peer tier's runtime: one thread that drives [`Peer`] over UDP on the kernel's
//! management network.
//!
//! Cores never touch the socket. They post writes and lookups to a bounded channel with
//! `try_send` ([`PeerRuntime::submit`], [`PeerRuntime::get`]): a full channel is
//! counted, never waited on. The thread drains the channel, reads datagrams, ticks the
//! state machine every millisecond, sends what it wants sent, and answers lookups
//! through one-slot channels the cores poll ([`PeerLookup::poll`]).
//!
//! Sockets: one UDP socket bound to `listen` sends everything and receives unicast.
//! With a multicast group, a second socket bound to the group's address and port (with
//! `SO_REUSEADDR`, so several nodes on one host can join) receives the group's traffic,
//! the node's own messages included (`IP_MULTICAST_LOOP`: the self-receipt the flow
//! control paces on); group messages leave through the `listen` address's interface
//! with TTL 1 (the management segment only).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};
use crypto_offload::Secret;

use crate::local::{LocalTable, TableId};
use crate::peer::{Dest, Event, Op, Peer, PeerConfig, PeerStats};
use crate::seal::ClusterKey;

/// Wall-clock Unix milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `[cluster]` section, as the appliance's config will hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster.
    pub node: String,
    /// This node's management address (UDP).
    pub listen: SocketAddr,
    /// Unicast peers.
    pub peers: Vec<SocketAddr>,
    /// A multicast group (IPv4) and port, instead of or beside the peers.
    pub multicast: Option<SocketAddr>,
    /// The shared secret (owner-only, 32 bytes or more).
    pub key_file: std::path::PathBuf,
}

impl ClusterConfig {
    /// The protocol settings for this node, with defaults for the tuning knobs.
    pub fn peer_config(&self) -> PeerConfig {
        PeerConfig::new(&self.node, self.peers.clone(), self.multicast)
    }
}

/// Runtime knobs that are not protocol.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Writes and lookups the cores may have posted and the thread not yet taken.
    pub channel_capacity: usize,
    /// Socket receive buffer asked for (bytes).
    pub recv_buffer: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            channel_capacity: 65_536,
            recv_buffer: 4 << 20,
        }
    }
}

enum Command {
    Op(Op),
    Get {
        table: TableId,
        key: Vec<u8>,
        reply: Sender<Option<Secret>>,
    },
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    ready: AtomicBool,
    channel_full: AtomicU64,
    send_errors: AtomicU64,
    stats: Mutex<Option<PeerStats>>,
}

/// A remote lookup in flight: [`PeerLookup::poll`] never blocks.
#[derive(Debug)]
pub struct PeerLookup {
    rx: Receiver<Option<Secret>>,
}

impl PeerLookup {
    /// `None`: not answered yet. `Some(None)`: every peer missed (or the tier went
    /// away). `Some(Some(v))`: a peer had it.
    pub fn poll(&mut self) -> Option<Option<Secret>> {
        match self.rx.try_recv() {
            Ok(v) => Some(v),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(None),
        }
    }
}

/// The running peer tier: its thread and the channel to it.
pub struct PeerRuntime {
    tx: Sender<Command>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for PeerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerRuntime({})", self.local_addr)
    }
}

fn ipv4(a: SocketAddr) -> io::Result<Ipv4Addr> {
    match a.ip() {
        IpAddr::V4(v) => Ok(v),
        IpAddr::V6(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{a}: multicast needs an IPv4 listen address"),
        )),
    }
}

fn sockets(
    listen: SocketAddr,
    multicast: Option<SocketAddr>,
    recv_buffer: usize,
) -> io::Result<(UdpSocket, Option<UdpSocket>)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if listen.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(recv_buffer);
    s.bind(&listen.into())?;
    s.set_nonblocking(true)?;
    let group = match multicast {
        None => None,
        Some(g) => {
            let (gip, iface) = (ipv4(g)?, ipv4(listen)?);
            if !gip.is_multicast() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{g} is not a multicast address"),
                ));
            }
            s.set_multicast_if_v4(&iface)?;
            s.set_multicast_loop_v4(true)?;
            s.set_multicast_ttl_v4(1)?;
            let m = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            m.set_reuse_address(true)?;
            let _ = m.set_recv_buffer_size(recv_buffer);
            m.bind(&g.into())?;
            m.join_multicast_v4(&gip, &iface)?;
            m.set_nonblocking(true)?;
            Some(m.into())
        }
    };
    Ok((s.into(), group))
}

impl PeerRuntime {
    /// Bind the sockets and start the thread. Errors are the sockets' (address in use,
    /// not a multicast address, ...).
    pub fn start(
        listen: SocketAddr,
        cfg: PeerConfig,
        key: Arc<ClusterKey>,
        table: Arc<LocalTable>,
        opts: RuntimeOptions,
    ) -> io::Result<PeerRuntime> {
        let (sock, group_sock) = sockets(listen, cfg.multicast, opts.recv_buffer)?;
        let local_addr = sock.local_addr()?;
        let now = unix_ms();
        let peer = Peer::new(cfg.clone(), key, table, now, now)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let (tx, rx) = bounded(opts.channel_capacity.max(1));
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("cluster-peer".into())
            .spawn(move || {
                Driver {
                    peer,
                    cfg,
                    sock,
                    group_sock,
                    rx,
                    shared: sh,
                    pending: HashMap::new(),
                }
                .run()
            })?;
        Ok(PeerRuntime {
            tx,
            shared,
            thread: Some(thread),
            local_addr,
        })
    }

    /// The address the unicast socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Post a write (already applied locally) for replication. Never blocks: `false`
    /// when the channel is full (counted).
    pub fn submit(&self, op: Op) -> bool {
        match self.tx.try_send(Command::Op(op)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.channel_full.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Ask the peers for a key the local table missed. Never blocks: `None` when the
    /// channel is full (counted; treat as a miss).
    pub fn get(&self, table: TableId, key: &[u8]) -> Option<PeerLookup> {
        let (reply, rx) = bounded(1);
        let cmd = Command::Get {
            table,
            key: key.to_vec(),
            reply,
        };
        match self.tx.try_send(cmd) {
            Ok(()) => Some(PeerLookup { rx }),
            Err(_) => {
                self.shared.channel_full.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Whether the node has joined (synced or found no one to sync from).
    pub fn ready(&self) -> bool {
        self.shared.ready.load(Ordering::Relaxed)
    }

    /// The protocol's latest stats (refreshed every 100 ms), with the runtime's own
    /// counters: posts refused by a full channel, and failed sends.
    pub fn stats(&self) -> Option<(PeerStats, u64, u64)> {
        let s = self
            .shared
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        Some((
            s,
            self.shared.channel_full.load(Ordering::Relaxed),
            self.shared.send_errors.load(Ordering::Relaxed),
        ))
    }

    /// Stop the thread and wait for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PeerRuntime {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Driver {
    peer: Peer,
    cfg: PeerConfig,
    sock: UdpSocket,
    group_sock: Option<UdpSocket>,
    rx: Receiver<Command>,
    shared: Arc<Shared>,
    pending: HashMap<u64, Sender<Option<Secret>>>,
}

impl Driver {
    fn run(mut self) {
        let mut buf = vec![0u8; 65_536];
        let mut last_tick = 0;
        let mut last_stats = 0;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now = unix_ms();
            self.take_commands(now);
            self.wait_readable(1);
            let now = unix_ms();
            self.read(&mut buf, now);
            if now != last_tick {
                last_tick = now;
                self.peer.on_tick(now);
            }
            self.flush();
            if now >= last_stats + 100 {
                last_stats = now;
                *self.shared.stats.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(self.peer.stats(now));
            }
        }
    }

    fn take_commands(&mut self, now: u64) {
        for _ in 0..4_096 {
            match self.rx.try_recv() {
                Ok(Command::Op(op)) => self.peer.submit(op, now),
                Ok(Command::Get { table, key, reply }) => {
                    let req = self.peer.get(table, &key, now);
                    self.pending.insert(req, reply);
                }
                Err(_) => break,
            }
        }
    }

    /// Sleep until a socket is readable or `ms` pass.
    fn wait_readable(&self, ms: i32) {
        let mut fds = [libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }; 2];
        let mut n = 1;
        if let Some(g) = &self.group_sock {
            fds[1].fd = g.as_raw_fd();
            n = 2;
        }
        // SAFETY: `fds` is a valid array of `n` pollfd structs that outlives the call.
        unsafe {
            libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, ms);
        }
    }

    fn read(&mut self, buf: &mut [u8], now: u64) {
        for _ in 0..1_024 {
            let mut got = false;
            for s in std::iter::once(&self.sock).chain(self.group_sock.as_ref()) {
                if let Ok((n, from)) = s.recv_from(buf) {
                    self.peer.on_message(from, &buf[..n], now);
                    got = true;
                }
            }
            if !got {
                break;
            }
        }
    }

    fn flush(&mut self) {
        while let Some(ev) = self.peer.poll_event() {
            match ev {
                Event::GetResult { req, value } => {
                    if let Some(tx) = self.pending.remove(&req) {
                        let _ = tx.try_send(value);
                    }
                }
                Event::Ready => {
                    log::info!("cluster: {} ready", self.cfg.node);
                    self.shared.ready.store(true, Ordering::Relaxed);
                }
                Event::MemberUp { node } => log::info!("cluster: member {node:08x} up"),
                Event::MemberDown { node } => log::warn!("cluster: member {node:08x} down"),
            }
        }
        while let Some(t) = self.peer.poll_transmit() {
            match t.dest {
                Dest::To(a) => self.send(&t.bytes, a),
                Dest::AllPeers => {
                    for i in 0..self.cfg.peers.len() {
                        self.send(&t.bytes, self.cfg.peers[i]);
                    }
                }
                Dest::Group => {
                    if let Some(g) = self.cfg.multicast {
                        self.send(&t.bytes, g);
                    }
                }
            }
        }
    }

    fn send(&self, bytes: &[u8], to: SocketAddr) {
        if self.sock.send_to(bytes, to).is_err() {
            // A full send buffer or an unreachable peer: the protocol repairs loss.
            self.shared.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}
