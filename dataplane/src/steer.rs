//! Software flow steering: every frame of a connection reaches the core that owns it.
//!
//! A NIC's RSS spreads frames over queues by a hash the appliance does not control
//! (the kernel's, for `net_af_packet`; a NIC's Toeplitz key otherwise), and the client
//! side and backend side of one proxied connection are two different 4-tuples. So the
//! owner is decided by a rule the appliance does control, and a frame that lands on the
//! wrong core is handed to its owner over a bounded channel (the `Frame` itself moves,
//! mbuf included: no copy):
//!
//! * a TCP frame to one of our **listening ports** belongs to core
//!   `hash(client address, client port) % cores`, with a hash keyed at random per
//!   process ([`SteerKey`], SipHash): a client that picks its source ports cannot aim
//!   all its connections at one core, since it cannot know which ports go where;
//! * a TCP frame to an **ephemeral port** (a backend connection the appliance opened)
//!   belongs to core `port % cores`, because a core only ever picks local ports that
//!   are congruent to its own index (see [`ephemeral_owner`]);
//! * a UDP datagram to an ephemeral port (a SOCKS association's relay port) belongs
//!   to core `port % cores` by the same rule: the core of the association binds it;
//! * ARP goes to **every** core, since each core's stack keeps its own neighbour cache;
//! * anything else (ICMP, stray frames) is handled where it arrives.
//!
//! With one core nothing is steered. Frames a full channel cannot take are dropped and
//! counted, like frames a full NIC ring refuses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::Frame;

/// First local port used for connections the appliance opens (IANA's dynamic range).
pub const EPHEMERAL_FIRST: u16 = 49152;

/// Where a frame must be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// On this core.
    Here,
    /// On the given core.
    Core(usize),
    /// On every core (ARP).
    All,
}

/// The core that owns local ephemeral port `port` among `cores`.
#[inline]
pub fn ephemeral_owner(port: u16, cores: usize) -> usize {
    usize::from(port) % cores.max(1)
}

/// The per-process key of the client hash; every core's [`Steering`] holds the same one.
#[derive(Debug, Clone)]
pub struct SteerKey(std::collections::hash_map::RandomState);

impl SteerKey {
    /// A new random key (SipHash keys from the OS's random source).
    pub fn random() -> Self {
        SteerKey(std::collections::hash_map::RandomState::new())
    }
}

/// The core that owns a client connection from `addr:port` to a listening port.
#[inline]
pub fn client_owner(key: &SteerKey, addr: [u8; 4], port: u16, cores: usize) -> usize {
    use std::hash::BuildHasher;
    if cores <= 1 {
        return 0;
    }
    let h = key.0.hash_one((addr, port));
    ((h >> 32) as usize) % cores
}

/// The steering rule of one core.
#[derive(Debug, Clone)]
pub struct Steering {
    cores: usize,
    me: usize,
    addr: [u8; 4],
    key: SteerKey,
    listening: Box<[u64; 1024]>,
}

impl Steering {
    /// Rule for core `me` of `cores`, for the appliance address `addr`; `key` must be
    /// the same on every core.
    pub fn new(
        me: usize,
        cores: usize,
        addr: [u8; 4],
        key: SteerKey,
        listen_ports: &[u16],
    ) -> Self {
        let mut listening = Box::new([0u64; 1024]);
        for &p in listen_ports {
            listening[usize::from(p) / 64] |= 1 << (p % 64);
        }
        Self {
            cores: cores.max(1),
            me,
            addr,
            key,
            listening,
        }
    }

    /// Steers `port` as a listening port from now on (a reload added a vserver).
    /// Ports are never removed: connections accepted on a port that a reload
    /// dropped must still reach the core that owns them.
    pub fn add_listening(&mut self, port: u16) {
        self.listening[usize::from(port) / 64] |= 1 << (port % 64);
    }

    fn is_listening(&self, port: u16) -> bool {
        self.listening[usize::from(port) / 64] & (1 << (port % 64)) != 0
    }

    /// Decides where `frame` is processed. Malformed frames stay here (the stack
    /// counts and drops them); this function never panics on any input.
    pub fn classify(&self, frame: &[u8]) -> Dest {
        use crate::wire::{parse, Parsed};
        if self.cores == 1 {
            return Dest::Here;
        }
        let t = match parse(frame) {
            Parsed::Arp => return Dest::All,
            Parsed::Ipv4 {
                dst, tcp: Some(t), ..
            } if dst == self.addr => t,
            // A SOCKS relay port: bound by the core of the association's control
            // connection, from that core's class of ephemeral ports.
            Parsed::Ipv4 {
                dst, udp: Some(u), ..
            } if dst == self.addr && u.dport >= EPHEMERAL_FIRST => {
                let owner = ephemeral_owner(u.dport, self.cores);
                return if owner == self.me {
                    Dest::Here
                } else {
                    Dest::Core(owner)
                };
            }
            _ => return Dest::Here,
        };
        let owner = if self.is_listening(t.dport) {
            client_owner(&self.key, t.src, t.sport, self.cores)
        } else if t.dport >= EPHEMERAL_FIRST {
            ephemeral_owner(t.dport, self.cores)
        } else {
            return Dest::Here;
        };
        if owner == self.me {
            Dest::Here
        } else {
            Dest::Core(owner)
        }
    }
}

/// Counters of one core's steering (single writer, readable from any thread).
#[derive(Debug, Default, serde::Serialize)]
pub struct SteerStats {
    /// Frames this core handed to another core.
    pub sent: AtomicU64,
    /// Frames other cores handed to this one.
    pub received: AtomicU64,
    /// Frames dropped because the owner's channel was full.
    pub dropped: AtomicU64,
}

/// One core's end of the steering mesh.
pub struct SteerEndpoint {
    me: usize,
    to: Vec<Sender<Frame>>,
    inbox: Receiver<Frame>,
    pub stats: Arc<SteerStats>,
}

/// Frames one core's inbox holds before steering drops.
pub const STEER_RING: usize = 4096;

/// Channels between every pair of `cores` cores; endpoint `i` belongs to core `i`.
pub fn mesh(cores: usize) -> Vec<SteerEndpoint> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..cores).map(|_| bounded(STEER_RING)).unzip();
    rxs.into_iter()
        .enumerate()
        .map(|(me, inbox)| SteerEndpoint {
            me,
            to: txs.clone(),
            inbox,
            stats: Arc::default(),
        })
        .collect()
}

impl SteerEndpoint {
    fn bump(c: &AtomicU64) {
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Hands `frame` to core `core`.
    pub fn send(&self, core: usize, frame: Frame) {
        match self.to[core].try_send(frame) {
            Ok(()) => Self::bump(&self.stats.sent),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                Self::bump(&self.stats.dropped)
            }
        }
    }

    /// Hands a heap copy of `frame` to every other core.
    pub fn broadcast(&self, frame: &Frame) {
        for core in (0..self.to.len()).filter(|&c| c != self.me) {
            self.send(core, frame.to_heap());
        }
    }

    /// Appends up to `max` frames other cores handed us.
    pub fn recv_burst(&self, out: &mut Vec<Frame>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.inbox.try_recv() {
                Ok(f) => {
                    out.push(f);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        for _ in 0..n {
            Self::bump(&self.stats.received);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: [u8; 4] = [10, 0, 0, 1];

    fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes()); // IPv4 total length
        f[23] = 6;
        f[46] = 5 << 4; // TCP data offset
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn client_flows_go_to_their_hashed_owner_from_any_core() {
        let key = SteerKey::random();
        let rules: Vec<_> = (0..2)
            .map(|i| Steering::new(i, 2, ME, key.clone(), &[80]))
            .collect();
        let mut owners = [0usize; 2];
        for sport in 1000..1200 {
            let f = tcp([10, 0, 0, 9], sport, ME, 80);
            let owner = client_owner(&key, [10, 0, 0, 9], sport, 2);
            owners[owner] += 1;
            for (i, r) in rules.iter().enumerate() {
                let want = if i == owner {
                    Dest::Here
                } else {
                    Dest::Core(owner)
                };
                assert_eq!(r.classify(&f), want);
            }
        }
        assert!(owners[0] > 50 && owners[1] > 50, "{owners:?}");
    }

    /// A client that learned which of its source ports reach one core of one process
    /// (an unkeyed hash would let it compute that offline) gains nothing on another
    /// process: its keyed owners are spread again.
    #[test]
    fn the_client_hash_is_keyed_per_process() {
        let (a, b) = (SteerKey::random(), SteerKey::random());
        let aimed: Vec<u16> = (1000..3000)
            .filter(|&p| client_owner(&a, [10, 0, 0, 9], p, 4) == 0)
            .collect();
        assert!(aimed.len() > 350, "{}", aimed.len());
        let mut on_b = [0usize; 4];
        for &p in &aimed {
            on_b[client_owner(&b, [10, 0, 0, 9], p, 4)] += 1;
        }
        assert!(on_b.iter().all(|&n| n > aimed.len() / 8), "{on_b:?}");
    }

    #[test]
    fn backend_flows_go_to_the_core_of_their_local_port() {
        let r0 = Steering::new(0, 2, ME, SteerKey::random(), &[80]);
        assert_eq!(
            r0.classify(&tcp([10, 0, 0, 2], 8080, ME, 50001)),
            Dest::Core(1)
        );
        assert_eq!(
            r0.classify(&tcp([10, 0, 0, 2], 8080, ME, 50002)),
            Dest::Here
        );
    }

    #[test]
    fn relay_datagrams_go_to_the_core_of_their_port() {
        let r0 = Steering::new(0, 2, ME, SteerKey::random(), &[80]);
        let udp = |dport: u16| {
            let mut f = tcp([10, 0, 0, 2], 5353, ME, dport);
            f[23] = 17;
            f[38..40].copy_from_slice(&20u16.to_be_bytes()); // UDP length
            f
        };
        assert_eq!(r0.classify(&udp(50001)), Dest::Core(1));
        assert_eq!(r0.classify(&udp(50002)), Dest::Here);
        // Below the ephemeral range nothing of ours is bound: it stays.
        assert_eq!(r0.classify(&udp(5300)), Dest::Here);
    }

    #[test]
    fn arp_goes_everywhere_and_odd_frames_stay() {
        let r = Steering::new(0, 2, ME, SteerKey::random(), &[80]);
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(r.classify(&arp), Dest::All);
        assert_eq!(r.classify(&[0u8; 3]), Dest::Here);
        // Truncated IPv4 header, and a header length pointing past the end.
        let mut f = tcp([10, 0, 0, 2], 1, ME, 80);
        f.truncate(20);
        assert_eq!(r.classify(&f), Dest::Here);
        let mut f = tcp([10, 0, 0, 2], 1, ME, 80);
        f[14] = 0x4f;
        assert_eq!(r.classify(&f), Dest::Here);
        // Not for us, and not TCP.
        assert_eq!(
            r.classify(&tcp([10, 0, 0, 2], 1, [10, 0, 0, 7], 80)),
            Dest::Here
        );
        // Single core: nothing moves.
        assert_eq!(
            Steering::new(0, 1, ME, SteerKey::random(), &[80]).classify(&arp),
            Dest::Here
        );
    }

    #[test]
    fn classify_never_panics_on_any_short_prefix() {
        let r = Steering::new(1, 3, ME, SteerKey::random(), &[80]);
        let f = tcp([10, 0, 0, 2], 1234, ME, 80);
        for n in 0..f.len() {
            let _ = r.classify(&f[..n]);
        }
    }

    #[test]
    fn mesh_moves_frames_and_counts_drops() {
        let m = mesh(2);
        m[0].send(1, Frame::from_vec(vec![1]));
        m[0].broadcast(&Frame::from_vec(vec![2]));
        let mut out = Vec::new();
        assert_eq!(m[1].recv_burst(&mut out, 8), 2);
        assert_eq!(m[0].recv_burst(&mut out, 8), 0);
        for _ in 0..STEER_RING + 5 {
            m[0].send(1, Frame::from_vec(vec![3]));
        }
        assert_eq!(m[0].stats.dropped.load(Ordering::Relaxed), 5);
    }
}
