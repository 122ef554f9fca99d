//! The port abstraction: a port is a set of queue pairs, and each poll-mode core owns
//! exactly one [`PortQueue`], so nothing on the fast path is shared or locked.

use crate::Frame;

/// Most frames one `rx_burst` returns, and the TX batch size (DPDK l3fwd's 32).
pub const BURST: usize = 32;

/// Facts about a port that the network stack needs.
#[derive(Debug, Clone)]
pub struct PortInfo {
    /// Port name (DPDK device name, or `memory`).
    pub name: String,
    /// Driver (DPDK PMD name, or `memory`).
    pub driver: String,
    /// The port's Ethernet address.
    pub mac: [u8; 6],
    /// IP MTU in bytes (an Ethernet frame is at most `mtu + 14`).
    pub mtu: usize,
    /// Number of RX/TX queue pairs (one per poll-mode core).
    pub queues: usize,
}

/// Per-queue counters kept by the queue's owner and copied out by [`PortQueue::counters`].
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueCounters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Bursts handed to the NIC (for af_packet: `sendto` kicks, each a system call).
    pub tx_bursts: u64,
    /// Frames the NIC refused (TX ring full) or that found no buffer: freed and counted.
    pub tx_dropped: u64,
    /// Frames the port handed us that the data plane cannot use (e.g. chained mbufs).
    pub rx_dropped: u64,
    /// Buffers of the queue's pool in use now (RX ring, TX ring, held by the core): a
    /// gauge, flat under steady load; 0 where the port has no pool of its own.
    pub mbufs_in_use: u64,
}

/// One RX/TX queue pair, owned by one poll-mode core.
pub trait PortQueue: Send {
    /// Appends up to `max` received frames to `out`; returns how many.
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> usize;
    /// A writable frame of exactly `len` bytes, or `None` when no buffer is free.
    fn alloc_tx(&mut self, len: usize) -> Option<Frame>;
    /// Queues a frame for transmission; sends a burst when [`BURST`] are queued.
    fn send(&mut self, frame: Frame);
    /// Sends everything queued. Frames the NIC refuses are freed and counted, never
    /// retried in a spin.
    fn flush(&mut self);
    /// This queue's counters so far.
    fn counters(&self) -> QueueCounters;
    /// Called once on the poll-mode thread that will own the queue, before polling.
    fn on_core_start(&mut self) {}
}
