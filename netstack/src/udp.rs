//! UDP ports bound on one core (a SOCKS association's relay port), beside the TCP
//! flow table and built the same way: each binding is a smoltcp `udp::Socket` in a
//! one-socket `SocketSet`, found by its local port in O(1) before smoltcp sees the
//! frame, and visited by egress only when the application wrote to it.
//!
//! Ports come from this core's class of ephemeral ports (congruent to the core's index
//! modulo the core count), so `dataplane::steer` sends the datagrams of a binding to the
//! core that made it, as it does for backend connections. A datagram to a port nobody
//! bound gets smoltcp's ICMP port unreachable. A binding's buffers are fixed
//! ([`UDP_SLOTS`] datagrams, [`UDP_BUFFER`] bytes per direction); a datagram that finds
//! them full is dropped (UDP: the sender's loss, as a full kernel socket buffer).

use smoltcp::socket::udp;

use super::*;

/// Datagrams a binding buffers per direction.
pub const UDP_SLOTS: usize = 256;
/// Bytes of datagram payload a binding buffers per direction.
pub const UDP_BUFFER: usize = 256 * 1024;

/// A UDP port bound on this core. Stale ids (of a closed binding) are detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpId {
    idx: u32,
    gen: u32,
}

pub(crate) struct Binding<T> {
    gen: u32,
    set: SocketSet<'static>,
    handle: SocketHandle,
    port: u16,
    dirty: bool,
    ready: bool,
    waiting_neighbor: bool,
    /// The last destination written to (whose neighbour egress may wait for).
    last_dst: Option<Ipv4Addr>,
    user: T,
}

impl<T> Binding<T> {
    fn socket(&mut self) -> &mut udp::Socket<'static> {
        self.set.get_mut::<udp::Socket>(self.handle)
    }
}

/// The binding `id` names, if it is still the one it named (generation check); a
/// free function so callers can borrow the stack's other fields beside it.
fn binding_mut<T>(bindings: &mut Slab<Binding<T>>, id: UdpId) -> Option<&mut Binding<T>> {
    bindings
        .get_mut(id.idx as usize)
        .filter(|b| b.gen == id.gen)
}

/// Why [`Stack::bind_udp`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindError {
    /// `max_connections` reached (bindings count as connections).
    TooMany,
    /// Every port of this core's class is bound.
    NoFreePort,
}

/// The UDP half of a [`Stack`].
pub(crate) struct Udp<T> {
    bindings: Slab<Binding<T>>,
    ports: HashMap<u16, UdpId, ahash::RandomState>,
    next_gen: u32,
    next_port: u16,
    dirty: Vec<UdpId>,
    batch: Vec<UdpId>,
    ready: Vec<UdpId>,
    neighbor_wait: Vec<UdpId>,
}

impl<T> Udp<T> {
    pub(crate) fn new(core: usize, cores: usize) -> Self {
        Udp {
            bindings: Slab::new(),
            ports: HashMap::default(),
            next_gen: 1,
            next_port: first_ephemeral(core, cores),
            dirty: Vec::new(),
            batch: Vec::new(),
            ready: Vec::new(),
            neighbor_wait: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.bindings.len()
    }

    pub(crate) fn port_bound(&self, port: u16) -> Option<UdpId> {
        self.ports.get(&port).copied()
    }

    fn get(&mut self, id: UdpId) -> Option<&mut Binding<T>> {
        binding_mut(&mut self.bindings, id)
    }

    fn mark_dirty(&mut self, id: UdpId) {
        if let Some(b) = self.get(id) {
            if !b.dirty {
                b.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    fn mark_ready(&mut self, id: UdpId) {
        if let Some(b) = self.get(id) {
            if !b.ready {
                b.ready = true;
                self.ready.push(id);
            }
        }
    }

    /// An ARP reply came: bindings that could not send try again.
    pub(crate) fn neighbor_known(&mut self) {
        for id in std::mem::take(&mut self.neighbor_wait) {
            if let Some(b) = self.get(id) {
                b.waiting_neighbor = false;
            }
            self.mark_dirty(id);
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.dirty.is_empty() || !self.ready.is_empty()
    }
}

impl<T: Default> Stack<T> {
    /// Binds a UDP port of this core's class (see the module docs); `user` comes back
    /// with [`Stack::udp_user`]. The port is the binding's until [`Stack::close_udp`].
    pub fn bind_udp(&mut self, user: T) -> Result<(UdpId, u16), BindError> {
        if self.conns.len() + self.udp.len() >= self.cfg.max_connections {
            return Err(BindError::TooMany);
        }
        let (core, cores) = (self.cfg.core, self.cfg.cores.max(1));
        let first = first_ephemeral(core, cores);
        let span = (usize::from(u16::MAX - first) / cores) + 1;
        let mut port = self.udp.next_port;
        let mut found = None;
        for _ in 0..span {
            if port < first {
                port = first;
            }
            if !self.udp.ports.contains_key(&port) {
                found = Some(port);
            }
            port = port
                .checked_add(cores as u16)
                .and_then(|p| class_port_at(p, core, cores))
                .unwrap_or(first);
            if found.is_some() {
                break;
            }
        }
        let port = found.ok_or(BindError::NoFreePort)?;
        self.udp.next_port = port;
        let rx = udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; UDP_SLOTS],
            vec![0u8; UDP_BUFFER],
        );
        let tx = udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; UDP_SLOTS],
            vec![0u8; UDP_BUFFER],
        );
        let mut sock = udp::Socket::new(rx, tx);
        // Bound to the port only: the stack has one address.
        sock.bind(port).map_err(|_| BindError::NoFreePort)?;
        let mut set = SocketSet::new(Vec::<SocketStorage>::with_capacity(1));
        let handle = set.add(sock);
        let gen = self.udp.next_gen;
        self.udp.next_gen = (self.udp.next_gen.wrapping_add(1) & GEN_MASK).max(1);
        let idx = self.udp.bindings.insert(Binding {
            gen,
            set,
            handle,
            port,
            dirty: false,
            ready: false,
            waiting_neighbor: false,
            last_dst: None,
            user,
        }) as u32;
        let id = UdpId { idx, gen };
        self.udp.ports.insert(port, id);
        bump!(self.stats, udp_bound);
        Ok((id, port))
    }

    /// Takes the next datagram that came to a binding into `buf` (which must hold
    /// 65,507 bytes: a longer datagram cannot come); its length and sender.
    pub fn udp_recv(&mut self, id: UdpId, buf: &mut [u8]) -> Option<(usize, SocketAddrV4)> {
        let b = self.udp.get(id)?;
        match b.socket().recv_slice(buf) {
            Ok((n, meta)) => {
                let IpAddress::Ipv4(ip) = meta.endpoint.addr;
                Some((n, SocketAddrV4::new(ip, meta.endpoint.port)))
            }
            Err(_) => None,
        }
    }

    /// Room for a datagram of `len` bytes from a binding to `to`, to be filled by the
    /// caller; it leaves in the next egress pass. `None` when the binding's send
    /// buffers are full (the datagram is lost, as UDP may lose it) or it is gone.
    pub fn udp_send(&mut self, id: UdpId, to: SocketAddrV4, len: usize) -> Option<&mut [u8]> {
        self.udp.mark_dirty(id);
        let b = self.udp.get(id)?;
        b.last_dst = Some(*to.ip());
        let ep = IpEndpoint::new(IpAddress::Ipv4(*to.ip()), to.port());
        match b.set.get_mut::<udp::Socket>(b.handle).send(len, ep) {
            Ok(buf) => Some(buf),
            Err(_) => {
                bump!(self.stats, udp_send_full);
                None
            }
        }
    }

    /// The application's data of a binding.
    pub fn udp_user(&mut self, id: UdpId) -> Option<&mut T> {
        Some(&mut self.udp.get(id)?.user)
    }

    /// The port a binding holds.
    pub fn udp_port(&mut self, id: UdpId) -> Option<u16> {
        Some(self.udp.get(id)?.port)
    }

    /// Closes a binding: its port is free again, datagrams not yet sent are dropped.
    pub fn close_udp(&mut self, id: UdpId) {
        let Some(b) = self.udp.bindings.get(id.idx as usize) else {
            return;
        };
        if b.gen != id.gen {
            return;
        }
        let b = self.udp.bindings.remove(id.idx as usize);
        if self.udp.ports.get(&b.port) == Some(&id) {
            self.udp.ports.remove(&b.port);
        }
        bump!(self.stats, udp_closed);
    }

    /// Bindings that received datagrams since the last call.
    pub fn take_udp_ready(&mut self, out: &mut Vec<UdpId>) {
        for id in self.udp.ready.drain(..) {
            if let Some(b) = binding_mut(&mut self.udp.bindings, id) {
                b.ready = false;
                out.push(id);
            }
        }
    }

    /// A datagram to one of our UDP ports (its header already checked by
    /// `dataplane::wire`): into its binding, or smoltcp's ICMP port unreachable.
    pub(crate) fn udp_ingress(
        &mut self,
        dport: u16,
        frame: &[u8],
        tx: &mut dyn PortQueue,
        now: Instant,
    ) {
        let Some(id) = self.udp.port_bound(dport) else {
            bump!(self.stats, udp_no_port);
            self.ingress_with(None, None, frame, tx, now);
            return;
        };
        let mut segments = 0;
        let mut dev = OneFrame {
            rx: Some(frame),
            tx,
            caps: &self.caps,
            scratch: &mut self.scratch,
            tx_no_buffer: &mut self.tx_no_buffer,
            data_segments: &mut segments,
        };
        let Some(b) = binding_mut(&mut self.udp.bindings, id) else {
            return;
        };
        let before = b.socket().recv_queue();
        self.iface.poll_ingress_single(now, &mut dev, &mut b.set);
        if b.socket().recv_queue() == before {
            // Bad checksum, or the binding's buffers are full.
            bump!(self.stats, udp_dropped);
        }
        self.udp.mark_ready(id);
    }

    /// Sends what the touched bindings queued.
    pub(crate) fn udp_egress(&mut self, tx: &mut dyn PortQueue, now: Instant) {
        let mut batch = std::mem::take(&mut self.udp.batch);
        std::mem::swap(&mut batch, &mut self.udp.dirty);
        let now_us = now.total_micros();
        for id in batch.drain(..) {
            let Some(b) = binding_mut(&mut self.udp.bindings, id) else {
                continue;
            };
            b.dirty = false;
            let mut segments = 0;
            let mut dev = OneFrame {
                rx: None,
                tx: &mut *tx,
                caps: &self.caps,
                scratch: &mut self.scratch,
                tx_no_buffer: &mut self.tx_no_buffer,
                data_segments: &mut segments,
            };
            let mut sent = 0;
            while sent < UDP_SLOTS
                && self.iface.poll_egress(now, &mut dev, &mut b.set)
                    == smoltcp::iface::PollResult::SocketStateChanged
            {
                sent += 1;
            }
            let left = b.socket().send_queue() > 0;
            if left && sent == 0 && !b.waiting_neighbor {
                // Held back, most likely by a missing ARP entry: ask now, and try
                // again when an ARP frame comes (as TCP connections do).
                b.waiting_neighbor = true;
                self.udp.neighbor_wait.push(id);
                if let Some(ip) = b.last_dst {
                    request_neighbor(&self.cfg, &mut self.arp_sent, ip, tx, now_us);
                }
            } else if left && sent > 0 {
                // Over its share for this pass (or the TX ring was full): again next.
                self.udp.mark_dirty(id);
            }
        }
        self.udp.batch = batch;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Pair;
    use super::*;

    #[test]
    fn bound_ports_exchange_datagrams_and_unbound_ones_are_refused() {
        let mut p = Pair::new();
        let (a, pa) = p.a.bind_udp(7).unwrap();
        let (b, pb) = p.b.bind_udp(8).unwrap();
        assert!(pa >= dataplane::steer::EPHEMERAL_FIRST && pb >= pa);
        let to_a = SocketAddrV4::new(p.a.cfg.addr, pa);
        // The first datagram waits for ARP, then goes; 300 more than the buffers hold
        // in one go are sent over several passes.
        for i in 0..300u32 {
            let buf = p.b.udp_send(b, to_a, 4).unwrap();
            buf.copy_from_slice(&i.to_be_bytes());
            if i % 100 == 99 {
                p.run();
                let mut got = Vec::new();
                p.a.take_udp_ready(&mut got);
                assert_eq!(got, vec![a]);
                let mut buf = vec![0u8; 65_536];
                for j in i - 99..=i {
                    let (n, from) = p.a.udp_recv(a, &mut buf).unwrap();
                    assert_eq!(&buf[..n], &j.to_be_bytes());
                    assert_eq!(from, SocketAddrV4::new(p.b.cfg.addr, pb));
                }
                assert!(p.a.udp_recv(a, &mut buf).is_none());
            }
        }
        assert_eq!(*p.a.udp_user(a).unwrap(), 7);
        // Closed: the port answers ICMP port unreachable, and a new binding may take it.
        p.a.close_udp(a);
        assert!(p.a.udp_recv(a, &mut [0u8; 64]).is_none(), "stale id");
        p.b.udp_send(b, to_a, 3).unwrap().copy_from_slice(b"bye");
        p.b.egress(&mut p.qb, p.now);
        let frames = std::mem::take(&mut p.qb.sent);
        for f in &frames {
            p.a.ingress(f, &mut p.qa, p.now);
        }
        assert_eq!(p.a.stats.udp_no_port.load(Ordering::Relaxed), 1);
        let icmp =
            p.qa.sent
                .iter()
                .any(|f| f.len() > 35 && f[23] == 1 && f[34] == 3);
        assert!(icmp, "no ICMP destination unreachable");
    }

    #[test]
    fn ports_stay_in_the_cores_class_and_run_out_cleanly() {
        let mut c = super::super::tests::cfg(1);
        c.core = 1;
        c.cores = 4;
        c.max_connections = 100_000;
        let mut s: Stack<u32> = Stack::new(c, Instant::from_millis(0));
        let mut ports = std::collections::HashSet::new();
        loop {
            match s.bind_udp(0) {
                Ok((_, p)) => {
                    assert_eq!(dataplane::steer::ephemeral_owner(p, 4), 1, "{p}");
                    assert!(ports.insert(p), "{p} twice");
                }
                Err(e) => {
                    assert_eq!(e, BindError::NoFreePort);
                    break;
                }
            }
        }
        assert_eq!(ports.len(), (65_536 - 49_152) / 4);
        let mut c = super::super::tests::cfg(1);
        c.max_connections = 2;
        let mut s: Stack<u32> = Stack::new(c, Instant::from_millis(0));
        s.bind_udp(0).unwrap();
        s.bind_udp(0).unwrap();
        assert_eq!(s.bind_udp(0), Err(BindError::TooMany));
    }
}
