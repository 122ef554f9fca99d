//! SYN cookies (RFC 4987 §3.6): past a number of half-open connections a core answers
//! SYNs without keeping anything, and a connection is made only when the client's ACK
//! brings back a valid cookie.
//!
//! The cookie is the SYN-ACK's initial sequence number: 29 bits of a keyed hash
//! (SipHash under a per-stack random key) of the client's address and port, our port
//! and a 64-second time slot, and 3 bits naming the client's MSS from a table. An ACK
//! for no connection whose `ack - 1` matches the hash for the current or the previous
//! slot (64–128 s of validity) makes the connection, with that MSS. Like Linux
//! without timestamps, a cookie carries no window scale or SACK: such connections run
//! with a window of at most 64 KiB, and only while the flood lasts.
//!
//! The connection is then made by smoltcp's own state machine: the SYN is rebuilt from
//! the ACK (sequence number `seq - 1`, the cookie's MSS) and given to a fresh socket,
//! and the client's ACK follows, so the connection is an ordinary smoltcp connection
//! from then on. For the ACK to be acceptable, the socket's initial sequence number must
//! be the cookie: smoltcp draws it from its interface's random generator, so the SYN
//! goes through a one-off `Interface` seeded (by [`seed_for_isn`]) so that the first
//! number the socket draws is the cookie. That relies on smoltcp's generator (sPCG32,
//! one draw for the IPv4 identification in `Interface::new`, then the ISN); the tests
//! make a whole cookie connection, so a smoltcp that draws differently fails them, and
//! at run time such an ACK is refused (`syn_cookie_failed`), never mis-sequenced.

use std::hash::BuildHasher;
use std::net::Ipv4Addr;

use smoltcp::phy::DeviceCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

/// MSS values a cookie can carry (3 bits): the client gets the largest one not above
/// what it offered.
const MSS_TABLE: [u16; 8] = [536, 1200, 1300, 1360, 1400, 1440, 1452, 1460];

/// Seconds per time slot.
const SLOT_SECS: u64 = 64;

/// The per-stack cookie key.
pub(crate) struct SynCookies {
    key: std::collections::hash_map::RandomState,
}

impl SynCookies {
    pub(crate) fn new() -> Self {
        SynCookies {
            key: std::collections::hash_map::RandomState::new(),
        }
    }

    fn hash(&self, remote: u32, rport: u16, lport: u16, slot: u64) -> u32 {
        (self.key.hash_one((remote, rport, lport, slot)) >> 32) as u32
    }

    /// The cookie for a SYN from `remote:rport` to `lport` at `now_s`, offering MSS
    /// `mss` (536 when it offered none), and the MSS the cookie stands for.
    pub(crate) fn make(
        &self,
        remote: u32,
        rport: u16,
        lport: u16,
        now_s: u64,
        mss: u16,
    ) -> (u32, u16) {
        let idx = MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0);
        let h = self.hash(remote, rport, lport, now_s / SLOT_SECS);
        ((h & !7) | idx as u32, MSS_TABLE[idx])
    }

    /// The MSS a returned cookie (`ack - 1`) stands for, when it is one of ours of the
    /// current or the previous slot.
    pub(crate) fn check(
        &self,
        remote: u32,
        rport: u16,
        lport: u16,
        now_s: u64,
        cookie: u32,
    ) -> Option<u16> {
        let slot = now_s / SLOT_SECS;
        [slot, slot.wrapping_sub(1)]
            .into_iter()
            .any(|s| self.hash(remote, rport, lport, s) & !7 == cookie & !7)
            .then(|| MSS_TABLE[(cookie & 7) as usize])
    }
}

/// What a cookie exchange needs of a received TCP segment.
pub(crate) struct Segment {
    pub src_mac: EthernetAddress,
    pub dst_mac: EthernetAddress,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// The MSS option (a SYN's).
    pub mss: Option<u16>,
    pub psh: bool,
}

/// A segment to send: Ethernet, IPv4 and TCP with no payload.
pub(crate) struct Frame {
    eth: EthernetRepr,
    ip: Ipv4Repr,
    tcp: TcpRepr<'static>,
}

impl Frame {
    pub(crate) fn len(&self) -> usize {
        14 + self.ip.buffer_len() + self.tcp.buffer_len()
    }
}

impl Segment {
    /// Parses an Ethernet/IPv4/TCP frame (checksums as the device checks them); `None`
    /// for anything else.
    pub(crate) fn parse(frame: &[u8], caps: &DeviceCapabilities) -> Option<Segment> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return None;
        }
        let ipp = Ipv4Packet::new_checked(eth.payload()).ok()?;
        let ip = Ipv4Repr::parse(&ipp, &caps.checksum).ok()?;
        if ip.next_header != IpProtocol::Tcp {
            return None;
        }
        let tcpp = TcpPacket::new_checked(ipp.payload()).ok()?;
        let (src, dst) = (IpAddress::Ipv4(ip.src_addr), IpAddress::Ipv4(ip.dst_addr));
        let tcp = TcpRepr::parse(&tcpp, &src, &dst, &caps.checksum).ok()?;
        Some(Segment {
            src_mac: eth.src_addr(),
            dst_mac: eth.dst_addr(),
            src: ip.src_addr,
            dst: ip.dst_addr,
            sport: tcp.src_port,
            dport: tcp.dst_port,
            seq: tcp.seq_number.0 as u32,
            ack: tcp.ack_number.map_or(0, |a| a.0 as u32),
            window: tcp.window_len,
            mss: tcp.max_seg_size,
            psh: tcpp.psh(),
        })
    }

    /// Our SYN-ACK to this SYN: sequence number `cookie`, our MSS, no other option.
    pub(crate) fn syn_ack(&self, our_mac: [u8; 6], cookie: u32, mss: u16, window: u16) -> Frame {
        Frame {
            eth: EthernetRepr {
                src_addr: EthernetAddress(our_mac),
                dst_addr: self.src_mac,
                ethertype: EthernetProtocol::Ipv4,
            },
            ip: Ipv4Repr {
                src_addr: self.dst,
                dst_addr: self.src,
                next_header: IpProtocol::Tcp,
                payload_len: 24,
                hop_limit: 64,
            },
            tcp: TcpRepr {
                src_port: self.dport,
                dst_port: self.sport,
                control: TcpControl::Syn,
                seq_number: TcpSeqNumber(cookie as i32),
                ack_number: Some(TcpSeqNumber(self.seq.wrapping_add(1) as i32)),
                window_len: window,
                window_scale: None,
                max_seg_size: Some(mss),
                sack_permitted: false,
                sack_ranges: [None; 3],
                timestamp: None,
                payload: &[],
            },
        }
    }

    /// The SYN this ACK answers, as far as the cookie tells: its sequence number (one
    /// before the ACK's), the cookie's MSS, no other option.
    pub(crate) fn rebuilt_syn(&self, mss: u16) -> Frame {
        Frame {
            eth: EthernetRepr {
                src_addr: self.src_mac,
                dst_addr: self.dst_mac,
                ethertype: EthernetProtocol::Ipv4,
            },
            ip: Ipv4Repr {
                src_addr: self.src,
                dst_addr: self.dst,
                next_header: IpProtocol::Tcp,
                payload_len: 24,
                hop_limit: 64,
            },
            tcp: TcpRepr {
                src_port: self.sport,
                dst_port: self.dport,
                control: TcpControl::Syn,
                seq_number: TcpSeqNumber(self.seq.wrapping_sub(1) as i32),
                ack_number: None,
                window_len: self.window,
                window_scale: None,
                max_seg_size: Some(mss),
                sack_permitted: false,
                sack_ranges: [None; 3],
                timestamp: None,
                payload: &[],
            },
        }
    }
}

/// Writes `f` into `buf` (exactly `f.len()` bytes), checksums as the device wants.
pub(crate) fn emit(f: &Frame, buf: &mut [u8], caps: &DeviceCapabilities) {
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    f.eth.emit(&mut eth);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    f.ip.emit(&mut ip, &caps.checksum);
    let (src, dst) = (
        IpAddress::Ipv4(f.ip.src_addr),
        IpAddress::Ipv4(f.ip.dst_addr),
    );
    let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
    f.tcp.emit(&mut tcp, &src, &dst, &caps.checksum);
}

// smoltcp's generator (src/rand.rs): sPCG32, state' = state * M + A, output the state
// shifted by 29 - (top 3 bits).
const M: u64 = 0xbb2e_fcec_3c39_611d;
const A: u64 = 0x7590_ef39;

fn output(s: u64) -> u32 {
    (s >> (29 - (s >> 61))) as u32
}

/// The multiplicative inverse of an odd number modulo 2^64 (Newton's iteration).
fn inverse(m: u64) -> u64 {
    let mut x = m; // correct to 3 bits for odd m
    for _ in 0..5 {
        x = x.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(x)));
    }
    x
}

/// An interface seed whose generator gives `isn` on its second draw: the first is
/// the IPv4 identification `Interface::new` takes (which must not be 0, or smoltcp
/// draws again), the second the initial sequence number of the first TCP socket that
/// handles a SYN.
pub(crate) fn seed_for_isn(isn: u32) -> u64 {
    let inv = inverse(M);
    // Any state whose top 3 bits are 0 and bits 29..61 are `isn` outputs `isn`; the
    // low 29 bits are free, and pick a first draw that is not 0.
    for low in 0u64..(1 << 29) {
        let s2 = (u64::from(isn) << 29) | low;
        let s1 = s2.wrapping_sub(A).wrapping_mul(inv);
        let n = output(s1);
        if (n ^ (n >> 16)) as u16 != 0 {
            return s1.wrapping_sub(A).wrapping_mul(inv);
        }
    }
    unreachable!("2^29 candidates, 1 in 65536 of them rejected")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What smoltcp does from a seed: one u16 draw (repeated while 0), then a u32.
    fn smoltcp_draws(seed: u64) -> u32 {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(M).wrapping_add(A);
            output(s)
        };
        loop {
            let n = next();
            if (n ^ (n >> 16)) as u16 != 0 {
                break;
            }
        }
        next()
    }

    #[test]
    fn the_seed_gives_the_cookie_as_second_draw() {
        assert_eq!(inverse(M).wrapping_mul(M), 1);
        for isn in [0, 1, 7, 0x8000_0000, u32::MAX, 0x1234_5678] {
            assert_eq!(smoltcp_draws(seed_for_isn(isn)), isn, "{isn:#x}");
        }
    }

    #[test]
    fn cookies_check_within_two_slots_and_carry_the_mss() {
        let c = SynCookies::new();
        let (isn, mss) = c.make(0x0a00_0002, 40_000, 443, 1_000, 1460);
        assert_eq!(mss, 1460);
        assert_eq!(c.check(0x0a00_0002, 40_000, 443, 1_000, isn), Some(1460));
        assert_eq!(
            c.check(0x0a00_0002, 40_000, 443, 1_000 + 64, isn),
            Some(1460)
        );
        assert_eq!(c.check(0x0a00_0002, 40_000, 443, 1_000 + 128, isn), None);
        assert_eq!(c.check(0x0a00_0002, 40_001, 443, 1_000, isn), None);
        assert_eq!(c.check(0x0a00_0003, 40_000, 443, 1_000, isn), None);
        assert_eq!(c.check(0x0a00_0002, 40_000, 443, 1_000, isn ^ 8), None);
        let (_, small) = c.make(1, 2, 3, 0, 1000);
        assert_eq!(small, 536);
        let (_, mid) = c.make(1, 2, 3, 0, 1410);
        assert_eq!(mid, 1400);
        // Another stack's key does not take it.
        assert_eq!(
            SynCookies::new().check(0x0a00_0002, 40_000, 443, 1_000, isn),
            None
        );
    }
}
