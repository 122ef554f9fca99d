//! Transmittal conditions (DESIGN.md method 4): when plaintext a backend sent is sealed
//! into a TLS record for the client.
//!
//! Plaintext is staged in the connection's engine ([`tls::ServerConn::stage`]) and
//! sealed when the first of these holds, each configurable per vserver
//! (`[vserver.transmit]`) and counted in the proxy's stats (`tx_seal_*`):
//! - **quantum**: a full record's worth is staged; records of exactly that size are
//!   sealed and the rest waits. The size is `quantum` bytes (default 2^14, the largest
//!   record), or with `quantum_segments = N` whatever fills N TCP segments of the
//!   data plane's MSS once the record's header and tag are added;
//! - **http**: an HTTP/1.1 response ended (`Content-Length`, the chunked terminator,
//!   or a bodiless status; see the `http1` crate), when the vserver is HTTP-aware;
//! - **fin**: the backend closed its side and everything it sent has been read;
//! - **psh**: a backend segment with PSH arrived and everything it sent has been read
//!   (the backend's TCP marks the end of each write this way);
//! - **timer**: the oldest staged byte has waited `timer` (default 1 ms; `0ms` seals
//!   whatever each read brought, that is, no coalescing).
//!
//! When a condition other than the quantum holds, everything staged is sealed, the end
//! of one response and the start of the next together: the first message and part of
//! the second are coalesced into one record.
//!
//! Copies: staging costs one copy per byte more than sealing as bytes arrive (backend
//! socket buffer → stage → record in the output buffer, sealed there in place). It
//! could go by staging straight into the output buffer behind a reserved record
//! header; not done yet.
//!
//! Why 1 ms for the timer: it is the most a byte waits when no other condition fires,
//! so it bounds the latency coalescing adds. One millisecond is a small fraction of any
//! client's round trip beyond the data centre (10 ms and up), and it is long enough for
//! a backend on the same LAN to deliver a 16 KiB record at 130 Mbit/s or more, so a
//! streaming backend fills whole records before it fires.

use std::time::Duration;

/// How large a full record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantum {
    /// Plaintext bytes per record.
    Bytes(usize),
    /// Records sized to fill this many TCP segments of the data plane's MSS.
    Segments(usize),
}

/// `[vserver.transmit]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransmitConfig {
    pub quantum: Quantum,
    /// Longest a staged byte waits; zero seals at once.
    pub timer: Duration,
    pub fin: bool,
    pub psh: bool,
    /// The vserver speaks HTTP/1.1 to its backends: seal at each response's end.
    pub http: bool,
}

impl Default for TransmitConfig {
    fn default() -> Self {
        TransmitConfig {
            quantum: Quantum::Bytes(tls::record::MAX_FRAGMENT),
            timer: Duration::from_millis(1),
            fin: true,
            psh: true,
            http: false,
        }
    }
}

impl TransmitConfig {
    /// Plaintext bytes in a full record for a connection whose records carry
    /// `overhead` bytes besides the plaintext, on a port whose MSS is `mss`.
    pub fn record_size(&self, mss: usize, overhead: usize) -> usize {
        let n = match self.quantum {
            Quantum::Bytes(n) => n,
            Quantum::Segments(k) => (k * mss).saturating_sub(overhead),
        };
        n.clamp(1, tls::record::MAX_FRAGMENT)
    }
}

/// Why staged plaintext was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Quantum,
    HttpEnd,
    Fin,
    Psh,
    Timer,
}

/// One client connection's transmittal state.
#[derive(Debug, Default)]
pub struct TxState {
    /// When the oldest staged byte was staged (µs on the worker's clock).
    pub since_us: Option<u64>,
    /// Follows the backend's responses (HTTP-aware vservers; dropped on a framing
    /// error, after which the other conditions still apply).
    pub framer: Option<backend_wire::http1::ResponseFramer>,
    /// A response ended within what is staged.
    pub response_ended: bool,
    /// The timer deadline already queued on the worker.
    pub armed_us: Option<u64>,
}

impl TxState {
    pub fn new(cfg: &TransmitConfig) -> Self {
        TxState {
            framer: cfg.http.then(backend_wire::http1::ResponseFramer::new),
            ..TxState::default()
        }
    }

    /// Which condition, if any, seals everything staged now. `drained`: everything the
    /// backend sent has been read; `closed`: the backend sent its FIN; `psh`: a PSH
    /// arrived since the last look.
    pub fn full_flush(
        &self,
        cfg: &TransmitConfig,
        now_us: u64,
        drained: bool,
        closed: bool,
        psh: bool,
    ) -> Option<Reason> {
        let since = self.since_us?;
        if self.response_ended {
            Some(Reason::HttpEnd)
        } else if cfg.fin && drained && closed {
            Some(Reason::Fin)
        } else if cfg.psh && drained && psh {
            Some(Reason::Psh)
        } else if now_us >= since.saturating_add(cfg.timer.as_micros() as u64) {
            Some(Reason::Timer)
        } else {
            None
        }
    }

    /// When the timer fires for what is staged now.
    pub fn deadline(&self, cfg: &TransmitConfig) -> Option<u64> {
        self.since_us
            .map(|s| s.saturating_add(cfg.timer.as_micros() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sizes() {
        let mut c = TransmitConfig::default();
        assert_eq!(c.record_size(1460, 22), 16384);
        c.quantum = Quantum::Segments(4);
        // TLS 1.3 AES-GCM: 5 header + 1 type + 16 tag.
        assert_eq!(c.record_size(1460, 22), 4 * 1460 - 22);
        c.quantum = Quantum::Segments(100);
        assert_eq!(c.record_size(1460, 22), 16384);
        c.quantum = Quantum::Bytes(100);
        assert_eq!(c.record_size(1460, 22), 100);
    }

    #[test]
    fn conditions_in_order() {
        let c = TransmitConfig::default();
        let mut s = TxState::new(&c);
        assert_eq!(
            s.full_flush(&c, 10, true, true, true),
            None,
            "nothing staged"
        );
        s.since_us = Some(100);
        assert_eq!(s.full_flush(&c, 100, true, true, true), Some(Reason::Fin));
        assert_eq!(s.full_flush(&c, 100, true, false, true), Some(Reason::Psh));
        assert_eq!(
            s.full_flush(&c, 100, false, true, true),
            None,
            "more to read"
        );
        assert_eq!(s.full_flush(&c, 1099, false, false, false), None);
        assert_eq!(
            s.full_flush(&c, 1100, false, false, false),
            Some(Reason::Timer)
        );
        assert_eq!(s.deadline(&c), Some(1100));
        s.response_ended = true;
        assert_eq!(
            s.full_flush(&c, 100, false, false, false),
            Some(Reason::HttpEnd)
        );
        let off = TransmitConfig {
            fin: false,
            psh: false,
            ..c
        };
        s.response_ended = false;
        assert_eq!(s.full_flush(&off, 100, true, true, true), None);
        let now = TransmitConfig {
            timer: Duration::ZERO,
            ..off
        };
        assert_eq!(
            s.full_flush(&now, 100, false, false, false),
            Some(Reason::Timer)
        );
        assert!(TxState::new(&TransmitConfig { http: true, ..c })
            .framer
            .is_some());
    }
}
