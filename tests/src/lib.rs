//! Test helpers shared by the integration tests: a smoltcp host on the far side of an
//! in-memory wire (playing clients and backends), and the payload protocol the tests
//! check byte for byte.
//!
//! The host is plain smoltcp with one `SocketSet`, not our `netstack`, so the appliance
//! is tested against an independent TCP implementation.

pub mod cluster;
pub mod negative;
pub mod veth;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use dataplane::memory::MemoryPeer;
use sha2::{Digest, Sha256};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Cidr};

pub const APPLIANCE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const APPLIANCE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const HOST_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 3)];

/// Deterministic pseudo-random bytes (xorshift) for payloads.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

struct PeerDev<'a>(&'a mut MemoryPeer);
pub struct PeerRx(Vec<u8>);
pub struct PeerTx<'a>(&'a mut MemoryPeer);

impl RxToken for PeerRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}
impl TxToken for PeerTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut v = vec![0; len];
        let r = f(&mut v);
        self.0.send(v);
        r
    }
}
impl Device for PeerDev<'_> {
    type RxToken<'b>
        = PeerRx
    where
        Self: 'b;
    type TxToken<'b>
        = PeerTx<'b>
    where
        Self: 'b;
    fn receive(&mut self, _: Instant) -> Option<(PeerRx, PeerTx<'_>)> {
        let f = self.0.recv()?;
        Some((PeerRx(f), PeerTx(&mut *self.0)))
    }
    fn transmit(&mut self, _: Instant) -> Option<PeerTx<'_>> {
        Some(PeerTx(&mut *self.0))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

/// What a backend does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendBehaviour {
    /// Read `up` bytes (after the header), answer with their SHA-256 and `down` bytes.
    Serve,
    /// Like Serve, but reset the connection after sending `bytes` of the reply.
    DieAfter(usize),
}

struct BackendConn {
    behaviour: BackendBehaviour,
    buf: Vec<u8>,
    out: Option<(Vec<u8>, usize)>,
}

/// A client's progress.
#[derive(Debug)]
pub struct ClientConn {
    pub handle: SocketHandle,
    pub up: Vec<u8>,
    pub sent: usize,
    pub down_len: usize,
    pub seed: u64,
    pub got: Vec<u8>,
    pub done: bool,
    /// The peer's FIN was seen (orderly end).
    pub fin_seen: bool,
    /// Ended by RST/timeout rather than FIN.
    pub reset: bool,
}

impl ClientConn {
    /// The reply checks out: the SHA-256 of what we sent, then the seeded bytes.
    pub fn verified(&self) -> bool {
        let up = &self.up[self.up.iter().position(|&c| c == b'\n').unwrap() + 1..];
        let mut want = sha(up).to_vec();
        want.extend(pattern(self.seed.wrapping_add(1), self.down_len));
        self.done && !self.reset && self.got == want
    }
}

/// Header a client sends first: "up down seed\n".
fn header(up: usize, down: usize, seed: u64) -> Vec<u8> {
    format!("{up} {down} {seed}\n").into_bytes()
}

/// The far end of the wire: clients and backends on one smoltcp interface.
pub struct Host {
    iface: Interface,
    sockets: SocketSet<'static>,
    peer: MemoryPeer,
    start: std::time::Instant,
    listeners: HashMap<SocketHandle, (u16, BackendBehaviour)>,
    backends: HashMap<SocketHandle, BackendConn>,
    pub clients: Vec<ClientConn>,
    next_port: u16,
    buf: usize,
}

impl Host {
    pub fn new(peer: MemoryPeer, buf: usize) -> Self {
        let mut peer = peer;
        let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(HOST_MAC)));
        cfg.random_seed = 99;
        let mut iface = Interface::new(cfg, &mut PeerDev(&mut peer), Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            for ip in HOST_IPS {
                let _ = a.push(IpCidr::Ipv4(Ipv4Cidr::new(ip, 24)));
            }
        });
        Host {
            iface,
            sockets: SocketSet::new(vec![]),
            peer,
            start: std::time::Instant::now(),
            listeners: HashMap::new(),
            backends: HashMap::new(),
            clients: Vec::new(),
            next_port: 20000,
            buf,
        }
    }

    fn socket(&self) -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; self.buf]),
            tcp::SocketBuffer::new(vec![0; self.buf]),
        )
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    /// Listens on `ip:port` with `pool` listening sockets (smoltcp has no backlog).
    pub fn backend(&mut self, ip: Ipv4Addr, port: u16, pool: usize, behaviour: BackendBehaviour) {
        for _ in 0..pool {
            let mut s = self.socket();
            s.listen(smoltcp::wire::IpListenEndpoint {
                addr: Some(ip.into()),
                port,
            })
            .unwrap();
            let h = self.sockets.add(s);
            self.listeners.insert(h, (port, behaviour));
        }
    }

    /// Starts a client to the appliance's `port`.
    pub fn client(&mut self, port: u16, up: usize, down: usize, seed: u64) -> usize {
        let mut s = self.socket();
        self.next_port += 1;
        s.connect(
            self.iface.context(),
            (APPLIANCE_IP, port),
            (HOST_IPS[0], self.next_port),
        )
        .unwrap();
        let h = self.sockets.add(s);
        let mut payload = header(up, down, seed);
        payload.extend(pattern(seed, up));
        self.clients.push(ClientConn {
            handle: h,
            up: payload,
            sent: 0,
            down_len: down,
            seed,
            got: Vec::new(),
            done: false,
            fin_seen: false,
            reset: false,
        });
        self.clients.len() - 1
    }

    /// Starts a client to the appliance's `port` that sends exactly `bytes` (no
    /// header) and then waits: for protocol tests (a stalled or hostile client).
    /// `got` collects what comes back; `done` is set once the appliance closed.
    pub fn raw_client(&mut self, port: u16, bytes: Vec<u8>) -> usize {
        let i = self.client(port, 0, 0, 0);
        self.clients[i].up = bytes;
        i
    }

    /// Injects a raw frame towards the appliance.
    pub fn inject(&mut self, frame: Vec<u8>) {
        self.peer.send(frame);
    }

    /// One round: network in/out, then every application step.
    pub fn poll(&mut self) {
        let now = self.now();
        self.iface
            .poll(now, &mut PeerDev(&mut self.peer), &mut self.sockets);
        self.step_backends();
        self.step_clients();
        self.iface
            .poll(now, &mut PeerDev(&mut self.peer), &mut self.sockets);
    }

    fn step_backends(&mut self) {
        let listening: Vec<_> = self.listeners.iter().map(|(h, v)| (*h, *v)).collect();
        for (h, (port, behaviour)) in listening {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if s.is_active() && !s.is_listening() {
                let ep = s.listen_endpoint();
                self.listeners.remove(&h);
                self.backends.insert(
                    h,
                    BackendConn {
                        behaviour,
                        buf: Vec::new(),
                        out: None,
                    },
                );
                // Refill the pool: smoltcp has no backlog.
                let mut n = self.socket();
                n.listen(ep).unwrap();
                let nh = self.sockets.add(n);
                self.listeners.insert(nh, (port, behaviour));
            }
        }
        let mut finished = Vec::new();
        for (h, b) in self.backends.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(*h);
            while s.can_recv() {
                let _ = s.recv(|d| {
                    b.buf.extend_from_slice(d);
                    (d.len(), ())
                });
            }
            if b.out.is_none() {
                if let Some(nl) = b.buf.iter().position(|&c| c == b'\n') {
                    let head = String::from_utf8_lossy(&b.buf[..nl]).to_string();
                    let f: Vec<u64> = head.split(' ').map(|x| x.parse().unwrap()).collect();
                    let (up, down, seed) = (f[0] as usize, f[1] as usize, f[2]);
                    if b.buf.len() >= nl + 1 + up {
                        let mut reply = sha(&b.buf[nl + 1..nl + 1 + up]).to_vec();
                        reply.extend(pattern(seed.wrapping_add(1), down));
                        b.out = Some((reply, 0));
                    }
                }
            }
            if let Some((reply, off)) = &mut b.out {
                let limit = match b.behaviour {
                    BackendBehaviour::Serve => reply.len(),
                    BackendBehaviour::DieAfter(n) => n.min(reply.len()),
                };
                if *off < limit && s.can_send() {
                    *off += s.send_slice(&reply[*off..limit]).unwrap_or(0);
                }
                if *off == limit {
                    match b.behaviour {
                        BackendBehaviour::Serve => s.close(),
                        // Dies once what it sent has been delivered: a RST mid-reply.
                        BackendBehaviour::DieAfter(_) if s.send_queue() == 0 => s.abort(),
                        BackendBehaviour::DieAfter(_) => {}
                    }
                }
            }
            if matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) {
                finished.push(*h);
            }
        }
        for h in finished {
            self.backends.remove(&h);
            self.sockets.remove(h);
        }
    }

    fn step_clients(&mut self) {
        for c in self.clients.iter_mut().filter(|c| !c.done) {
            let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
            if c.sent < c.up.len() && s.can_send() {
                c.sent += s.send_slice(&c.up[c.sent..]).unwrap_or(0);
            }
            while s.can_recv() {
                let _ = s.recv(|d| {
                    c.got.extend_from_slice(d);
                    (d.len(), ())
                });
            }
            if matches!(
                s.state(),
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::TimeWait
                    | tcp::State::Closing
            ) {
                c.fin_seen = true;
            }
            if s.state() == tcp::State::CloseWait && !s.can_recv() {
                s.close();
            }
            if matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) {
                c.done = true;
                c.reset = !c.fin_seen;
            }
        }
    }

    /// Polls until every client is done or `timeout` passes; returns whether all are.
    pub fn run_until_done(&mut self, timeout: std::time::Duration) -> bool {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < timeout {
            self.poll();
            if self.clients.iter().all(|c| c.done) {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }
}
