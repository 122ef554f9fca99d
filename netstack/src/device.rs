//! smoltcp's `Device` over one poll-mode core's port queue.
//!
//! The device is built per call and lends smoltcp exactly one received frame (the one
//! the flow table already matched) and the queue's TX side. That is what keeps
//! dispatch O(1): smoltcp's `Interface` only ever sees the frame and the one-socket
//! `SocketSet` we chose.
//!
//! ## Copies
//! A received payload byte is copied three times on its way through the L4 proxy:
//! 1. smoltcp copies it from the frame (the DPDK mbuf itself, lent in place by
//!    [`FrameRx`]) into the receiving socket's ring buffer: TCP reassembly needs the
//!    bytes to outlive the mbuf, and smoltcp owns its buffers;
//! 2. the proxy copies it from that socket's receive ring into the peer socket's send
//!    ring (`netstack` cannot share one ring between two smoltcp sockets);
//! 3. smoltcp copies it from the send ring into a fresh TX mbuf ([`QueueTx`] hands it
//!    the mbuf's data area directly), because a segment may need retransmitting after
//!    the mbuf is gone.
//!
//! Headers are written once, straight into the mbuf. A frame that arrives on the wrong
//! core moves to its owner without a copy (the mbuf pointer moves); only ARP frames,
//! which every core needs, are copied.

use dataplane::PortQueue;
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// One frame in, the queue's TX out.
pub(crate) struct OneFrame<'a> {
    pub rx: Option<&'a [u8]>,
    pub tx: &'a mut dyn PortQueue,
    pub caps: &'a DeviceCapabilities,
    pub scratch: &'a mut Vec<u8>,
    pub tx_no_buffer: &'a mut u64,
    /// TCP segments carrying data sent through this device.
    pub data_segments: &'a mut u64,
}

pub(crate) struct FrameRx<'a>(&'a [u8]);

pub(crate) struct QueueTx<'a> {
    tx: &'a mut dyn PortQueue,
    scratch: &'a mut Vec<u8>,
    tx_no_buffer: &'a mut u64,
    data_segments: &'a mut u64,
}

impl smoltcp::phy::RxToken for FrameRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl smoltcp::phy::TxToken for QueueTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self.tx.alloc_tx(len) {
            Some(mut frame) => {
                let r = f(&mut frame[..len]);
                if tcp_payload_len(&frame[..len]) > 0 {
                    *self.data_segments += 1;
                }
                self.tx.send(frame);
                r
            }
            None => {
                // No TX buffer: smoltcp still needs somewhere to write; the segment is
                // lost and TCP retransmits it.
                *self.tx_no_buffer += 1;
                self.scratch.resize(len, 0);
                f(&mut self.scratch[..len])
            }
        }
    }
}

impl OneFrame<'_> {
    fn tx(&mut self) -> QueueTx<'_> {
        QueueTx {
            tx: &mut *self.tx,
            scratch: &mut *self.scratch,
            tx_no_buffer: &mut *self.tx_no_buffer,
            data_segments: &mut *self.data_segments,
        }
    }
}

/// The TCP payload length of an Ethernet/IPv4 frame smoltcp wrote (0 for anything
/// else). Reads only within the frame.
fn tcp_payload_len(frame: &[u8]) -> usize {
    let Some(ip) = frame.get(14..) else { return 0 };
    if ip.len() < 20 || ip[9] != 6 {
        return 0;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let doff = ip.get(ihl + 12).map_or(0, |b| usize::from(b >> 4) * 4);
    total.saturating_sub(ihl + doff)
}

impl Device for OneFrame<'_> {
    type RxToken<'b>
        = FrameRx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = QueueTx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(FrameRx<'_>, QueueTx<'_>)> {
        let frame = self.rx.take()?;
        Some((FrameRx(frame), self.tx()))
    }

    fn transmit(&mut self, _now: Instant) -> Option<QueueTx<'_>> {
        Some(self.tx())
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

/// A device with no frames, for building an `Interface`.
pub(crate) struct NoDevice(pub DeviceCapabilities);

impl Device for NoDevice {
    type RxToken<'b>
        = FrameRx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = QueueTx<'b>
    where
        Self: 'b;
    fn receive(&mut self, _now: Instant) -> Option<(FrameRx<'_>, QueueTx<'_>)> {
        None
    }
    fn transmit(&mut self, _now: Instant) -> Option<QueueTx<'_>> {
        None
    }
    fn capabilities(&self) -> DeviceCapabilities {
        self.0.clone()
    }
}

/// Ethernet capabilities for a port with IP MTU `mtu`.
pub(crate) fn capabilities(mtu: usize) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ethernet;
    caps.max_transmission_unit = mtu + 14;
    caps.max_burst_size = Some(dataplane::BURST);
    caps
}
