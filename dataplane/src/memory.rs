//! The in-memory wire: a port whose far end is a [`MemoryPeer`] in the same process.
//! It exists for tests and benchmarks; the daemon never uses it.
//!
//! The peer spreads frames over the port's queues with its own hash of the IPv4
//! addresses and ports, the way a NIC's RSS would: deliberately unrelated to which core
//! owns a flow, so multi-core tests exercise software steering.

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::port::{PortInfo, PortQueue, QueueCounters, BURST};
use crate::Frame;

/// Frames a queue (or the peer) holds before the wire drops, like a NIC ring.
pub const WIRE_RING: usize = 8192;

/// The appliance's end of an in-memory wire.
pub struct MemoryPort {
    info: PortInfo,
    queues: Vec<MemoryQueue>,
}

/// The far end of an in-memory wire: what a test uses to play the network.
pub struct MemoryPeer {
    to_port: Vec<Sender<Vec<u8>>>,
    from_port: Receiver<Vec<u8>>,
    /// Frames the peer could not deliver because a queue's ring was full.
    pub dropped: u64,
}

/// One queue pair of a [`MemoryPort`].
pub struct MemoryQueue {
    rx: Receiver<Vec<u8>>,
    tx: Sender<Vec<u8>>,
    pending: Vec<Frame>,
    counters: QueueCounters,
}

/// A new wire with `queues` queue pairs and the given port MAC and MTU.
pub fn wire(queues: usize, mac: [u8; 6], mtu: usize) -> (MemoryPort, MemoryPeer) {
    let queues = queues.max(1);
    let (up_tx, up_rx) = bounded(WIRE_RING * queues);
    let mut to_port = Vec::with_capacity(queues);
    let mut qs = Vec::with_capacity(queues);
    for _ in 0..queues {
        let (tx, rx) = bounded(WIRE_RING);
        to_port.push(tx);
        qs.push(MemoryQueue {
            rx,
            tx: up_tx.clone(),
            pending: Vec::with_capacity(BURST),
            counters: QueueCounters::default(),
        });
    }
    let info = PortInfo {
        name: "memory".into(),
        driver: "memory".into(),
        mac,
        mtu,
        queues,
    };
    (
        MemoryPort { info, queues: qs },
        MemoryPeer {
            to_port,
            from_port: up_rx,
            dropped: 0,
        },
    )
}

impl MemoryPort {
    /// The port's facts.
    pub fn info(&self) -> &PortInfo {
        &self.info
    }

    /// Hands out the queues, one per poll-mode core.
    pub fn into_queues(self) -> Vec<MemoryQueue> {
        self.queues
    }
}

impl MemoryPeer {
    /// Puts a frame on the wire towards the port; `false` if the queue's ring was full.
    pub fn send(&mut self, frame: Vec<u8>) -> bool {
        let q = rss_queue(&frame, self.to_port.len());
        match self.to_port[q].try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped += 1;
                false
            }
        }
    }

    /// The next frame the port transmitted, if any.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        self.from_port.try_recv().ok()
    }

    /// Waits up to `timeout` for a frame from the port.
    pub fn recv_timeout(&mut self, timeout: std::time::Duration) -> Option<Vec<u8>> {
        self.from_port.recv_timeout(timeout).ok()
    }
}

/// The peer's stand-in for NIC RSS: FNV-1a over IPv4 addresses and L4 ports (a
/// symmetric hash, so both directions of one 4-tuple land on one queue, but it knows
/// nothing of which core owns the flow). Non-IPv4 frames go to queue 0.
fn rss_queue(frame: &[u8], queues: usize) -> usize {
    if queues == 1 || frame.len() < 14 + 20 + 4 || frame[12..14] != [0x08, 0x00] {
        return 0;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let (a, b) = (&ip[12..16], &ip[16..20]);
    let ports = ip.get(ihl..ihl + 4).unwrap_or(&[0, 0, 0, 0]);
    let (pa, pb) = (&ports[0..2], &ports[2..4]);
    // Order the endpoints so the hash is symmetric.
    let (first, second) = if (a, pa) <= (b, pb) {
        ((a, pa), (b, pb))
    } else {
        ((b, pb), (a, pa))
    };
    let mut h: u32 = 0x811c_9dc5;
    for byte in first
        .0
        .iter()
        .chain(first.1)
        .chain(second.0)
        .chain(second.1)
    {
        h = (h ^ u32::from(*byte)).wrapping_mul(0x0100_0193);
    }
    (h as usize) % queues
}

impl PortQueue for MemoryQueue {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.rx.try_recv() {
                Ok(bytes) => {
                    self.counters.rx_frames += 1;
                    self.counters.rx_bytes += bytes.len() as u64;
                    out.push(Frame::from_vec(bytes));
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }

    fn alloc_tx(&mut self, len: usize) -> Option<Frame> {
        Some(Frame::from_vec(vec![0; len]))
    }

    fn send(&mut self, frame: Frame) {
        self.pending.push(frame);
        if self.pending.len() >= BURST {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.counters.tx_bursts += 1;
        }
        for frame in self.pending.drain(..) {
            let len = frame.len() as u64;
            match self.tx.try_send(frame.to_vec()) {
                Ok(()) => {
                    self.counters.tx_frames += 1;
                    self.counters.tx_bytes += len;
                }
                Err(_) => self.counters.tx_dropped += 1,
            }
        }
    }

    fn counters(&self) -> QueueCounters {
        self.counters
    }
}

/// A queue with no wire at all: it receives nothing and keeps every frame sent, for
/// driving a stack by hand in unit tests, benchmarks and fuzz targets.
#[derive(Debug, Default)]
pub struct CaptureQueue {
    /// Frames sent, oldest first; take them to deliver them elsewhere.
    pub sent: Vec<Vec<u8>>,
}

impl PortQueue for CaptureQueue {
    fn rx_burst(&mut self, _: &mut Vec<Frame>, _: usize) -> usize {
        0
    }
    fn alloc_tx(&mut self, len: usize) -> Option<Frame> {
        Some(Frame::from_vec(vec![0; len]))
    }
    fn send(&mut self, frame: Frame) {
        self.sent.push(frame.to_vec())
    }
    fn flush(&mut self) {}
    fn counters(&self) -> QueueCounters {
        QueueCounters::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 12..14 + 16].copy_from_slice(&src);
        f[14 + 16..14 + 20].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn rss_is_symmetric_and_spreads() {
        let mut seen = [0usize; 4];
        for port in 1000..1400u16 {
            let a = tcp_frame([10, 0, 0, 2], port, [10, 0, 0, 1], 80);
            let b = tcp_frame([10, 0, 0, 1], 80, [10, 0, 0, 2], port);
            assert_eq!(rss_queue(&a, 4), rss_queue(&b, 4));
            seen[rss_queue(&a, 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn frames_cross_the_wire_both_ways() {
        let (port, mut peer) = wire(1, [2, 0, 0, 0, 0, 1], 1500);
        let mut q = port.into_queues().pop().unwrap();
        assert!(peer.send(vec![1, 2, 3]));
        let mut out = Vec::new();
        assert_eq!(q.rx_burst(&mut out, 8), 1);
        assert_eq!(&out[0][..], &[1, 2, 3]);
        let mut f = q.alloc_tx(2).unwrap();
        f.copy_from_slice(&[9, 8]);
        q.send(f);
        assert!(peer.recv().is_none(), "nothing leaves before a flush");
        q.flush();
        assert_eq!(peer.recv().unwrap(), vec![9, 8]);
        assert_eq!(q.counters().tx_frames, 1);
        // Two frames in one flush are one burst; a flush with nothing queued is none.
        for _ in 0..2 {
            let f = q.alloc_tx(1).unwrap();
            q.send(f);
        }
        q.flush();
        q.flush();
        assert_eq!((q.counters().tx_frames, q.counters().tx_bursts), (3, 2));
    }
}
