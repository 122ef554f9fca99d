//! Secure datagrams: UDP through a SOCKS association protected record by record, each
//! carrying its own explicit nonce so that loss and reordering cost nothing (no state
//! chained across datagrams), and duplicates are told by that nonce.
//!
//! ```text
//!  0        1              5                      13
//! +--------+--------------+----------------------+----------------------------+--------+
//! | flags  | association  | sequence number      | AEAD( RFC 1928 UDP header  | tag    |
//! | 0x80|v | id (u32 BE)  | (u64 BE, per sender) |       + data )             | 16     |
//! +--------+--------------+----------------------+----------------------------+--------+
//! ```
//! - **flags** sits where RFC 1928's UDP header has its first reserved byte (always 0),
//!   so a receiver tells protected (bit 0x80 set) from plain datagrams on one port;
//!   the low bits are the format version ([`VERSION`], 1).
//! - **association id**: which association the datagram belongs to (not its source
//!   address, so a client behind a NAT that moves keeps its association).
//! - **sequence number**: the sender's counter, from 0, one per datagram and direction;
//!   the AEAD nonce is the direction's static IV XOR the counter (as TLS 1.3 records),
//!   so nonces never repeat under a key, and the receiver's replay window reads it.
//! - The first 13 bytes are the AEAD's additional data; 29 bytes of overhead in all.
//!
//! Keys come from the control connection's TLS exporter (label
//! `EXPORTER-appliance-datagram`, context the association id): one key and IV per
//! direction, in the control connection's AEAD. This module is the wire format and the
//! replay window; deriving the keys, sealing and opening are `crypto_offload::datagram`'s.

use std::fmt;

/// The format version in the flags byte's low bits.
pub const VERSION: u8 = 1;
/// The flags byte's protected bit.
pub const PROTECTED: u8 = 0x80;
/// Bytes before the ciphertext (flags, association id, sequence number): the AAD.
pub const HEADER_LEN: usize = 13;
/// The AEAD tag's length.
pub const TAG_LEN: usize = 16;

/// What the first byte says a datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RFC 1928 §7: RSV(2) = 0, FRAG, ...
    Plain,
    /// A secure datagram of this format version.
    Protected,
    /// Neither (another version, or reserved bits set).
    Unknown,
}

pub fn kind(datagram: &[u8]) -> Kind {
    match datagram.first() {
        Some(0) => Kind::Plain,
        Some(&b) if b == PROTECTED | VERSION => Kind::Protected,
        _ => Kind::Unknown,
    }
}

/// A secure datagram's clear part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub association: u32,
    pub seq: u64,
}

/// Why a datagram is not a secure datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramError {
    /// Shorter than a header and a tag.
    Truncated,
    /// The flags byte is not this format's.
    NotProtected(u8),
}

impl fmt::Display for DatagramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatagramError::Truncated => {
                f.write_str("shorter than a secure datagram's header and tag")
            }
            DatagramError::NotProtected(b) => write!(
                f,
                "flags byte {b:#04x} is not a version {VERSION} secure datagram"
            ),
        }
    }
}

impl std::error::Error for DatagramError {}

impl Header {
    /// The header, and where the ciphertext (then the tag) starts and the tag starts.
    pub fn parse(d: &[u8]) -> Result<(Header, std::ops::Range<usize>), DatagramError> {
        if d.len() < HEADER_LEN + TAG_LEN {
            return Err(DatagramError::Truncated);
        }
        if d[0] != PROTECTED | VERSION {
            return Err(DatagramError::NotProtected(d[0]));
        }
        let association = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&d[5..13]);
        Ok((
            Header {
                association,
                seq: u64::from_be_bytes(s),
            },
            HEADER_LEN..d.len() - TAG_LEN,
        ))
    }

    /// The 13 header bytes (the AAD).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = PROTECTED | VERSION;
        h[1..5].copy_from_slice(&self.association.to_be_bytes());
        h[5..13].copy_from_slice(&self.seq.to_be_bytes());
        h
    }
}

/// The exporter context for an association's keys: its id.
pub fn exporter_context(association: u32) -> [u8; 4] {
    association.to_be_bytes()
}

/// An anti-replay window (RFC 6479): a bitmap of the last `size` sequence numbers
/// below the highest seen, in 64-bit blocks, moved in whole blocks so a check is a
/// few word operations. Check a datagram's number before opening it
/// ([`ReplayWindow::check`]), and record it only after it opened
/// ([`ReplayWindow::accept`]), so forgeries cannot move the window (RFC 4303 §3.4.3).
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// One block more than the window, so the window's oldest block is never the one
    /// being reused.
    bits: Vec<u64>,
    /// The highest sequence number accepted, plus one (0: none yet).
    top: u64,
    size: u64,
}

/// Why a sequence number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Seen already.
    Duplicate,
    /// Older than the window: it cannot be told from a duplicate.
    TooOld,
}

impl ReplayWindow {
    /// A window of `size` datagrams (rounded up to a multiple of 64; 64..=8192).
    pub fn new(size: u32) -> Self {
        let size = u64::from(size.clamp(64, 8192)).div_ceil(64) * 64;
        ReplayWindow {
            bits: vec![0; (size / 64) as usize + 1],
            top: 0,
            size,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn slot(&self, seq: u64) -> (usize, u64) {
        let block = (seq / 64) as usize % self.bits.len();
        (block, 1u64 << (seq % 64))
    }

    /// Whether `seq` may be opened: newer than anything seen, or inside the window
    /// and not seen.
    pub fn check(&self, seq: u64) -> Result<(), Replay> {
        // The last number cannot be told apart once seen (the window's top saturates):
        // senders stop before it (a new association), receivers refuse it.
        if seq == u64::MAX {
            return Err(Replay::TooOld);
        }
        if self.top == 0 || seq >= self.top {
            return Ok(());
        }
        let highest = self.top - 1;
        if highest - seq >= self.size {
            return Err(Replay::TooOld);
        }
        let (b, m) = self.slot(seq);
        if self.bits[b] & m != 0 {
            Err(Replay::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Records `seq` (which [`ReplayWindow::check`] allowed and which opened).
    pub fn accept(&mut self, seq: u64) {
        if self.check(seq).is_err() {
            return;
        }
        if self.top == 0 || seq >= self.top {
            // Clear the blocks the window moves past (at most all of them).
            let first_new = if self.top == 0 {
                seq / 64
            } else {
                (self.top - 1) / 64 + 1
            };
            let last_new = seq / 64;
            let n = self.bits.len() as u64;
            if last_new >= first_new {
                for blk in first_new..=last_new.min(first_new + n - 1) {
                    let i = (blk % n) as usize;
                    self.bits[i] = 0;
                }
            }
            self.top = seq.saturating_add(1);
        }
        let (b, m) = self.slot(seq);
        self.bits[b] |= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_are_named() {
        let h = Header {
            association: 0xdead_beef,
            seq: 0x0102_0304_0506_0708,
        };
        let mut d = h.encode().to_vec();
        d.extend_from_slice(b"ciphertext");
        d.extend_from_slice(&[0xaa; TAG_LEN]);
        let (got, body) = Header::parse(&d).unwrap();
        assert_eq!(got, h);
        assert_eq!(&d[body], b"ciphertext");
        assert_eq!(kind(&d), Kind::Protected);
        assert_eq!(kind(&[0, 0, 0, 1]), Kind::Plain);
        assert_eq!(kind(&[0x82]), Kind::Unknown);
        assert_eq!(Header::parse(&d[..28]), Err(DatagramError::Truncated));
        d[0] = 0x81 | 0x40;
        assert_eq!(Header::parse(&d), Err(DatagramError::NotProtected(0xc1)));
    }

    #[test]
    fn the_window_takes_each_number_once_in_any_order_within_its_size() {
        let mut w = ReplayWindow::new(64);
        for seq in [5u64, 3, 9, 4, 0] {
            w.check(seq).unwrap();
            w.accept(seq);
        }
        for seq in [5u64, 3, 9, 4, 0] {
            assert_eq!(w.check(seq), Err(Replay::Duplicate), "{seq}");
        }
        // Far ahead: the old ones fall out of the window.
        w.accept(1000);
        assert_eq!(w.check(9), Err(Replay::TooOld));
        assert_eq!(w.check(1000 - 63), Ok(()));
        assert_eq!(w.check(1000 - 64), Err(Replay::TooOld));
        assert_eq!(w.check(1000), Err(Replay::Duplicate));
        w.accept(1000 - 63);
        assert_eq!(w.check(1000 - 63), Err(Replay::Duplicate));
        // A jump of three blocks clears the blocks it reuses (the bitmap is a ring),
        // and keeps what is still inside the window.
        let mut w = ReplayWindow::new(256);
        for s in 0..200 {
            w.accept(s);
        }
        w.accept(200 + 64 * 3);
        for s in 200..200 + 64 * 3 {
            assert_eq!(w.check(s), Ok(()), "{s} never seen");
        }
        for s in 137..200 {
            assert_eq!(w.check(s), Err(Replay::Duplicate), "{s} seen");
        }
        assert_eq!(w.check(136), Err(Replay::TooOld));
    }

    #[test]
    fn the_window_against_a_set_over_a_shuffled_stream() {
        // Every number 0..5000 twice, shuffled within a span of 50: each accepted once.
        let mut w = ReplayWindow::new(64);
        let mut x = 0x1234_5678u64;
        let mut seqs: Vec<u64> = (0..5000).flat_map(|s| [s, s]).collect();
        for i in 0..seqs.len() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let j = (i + (x % 50) as usize).min(seqs.len() - 1);
            seqs.swap(i, j);
        }
        let mut seen = std::collections::HashSet::new();
        let mut accepted = 0;
        for s in seqs {
            match w.check(s) {
                Ok(()) => {
                    assert!(seen.insert(s), "{s} accepted twice");
                    w.accept(s);
                    accepted += 1;
                }
                Err(Replay::Duplicate) => assert!(seen.contains(&s)),
                Err(Replay::TooOld) => {}
            }
        }
        assert!(accepted > 4900, "{accepted}");
    }
}
