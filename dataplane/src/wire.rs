//! Just enough Ethernet / IPv4 / TCP / UDP header parsing for the data plane's own decisions:
//! which core owns a frame ([`crate::steer`]) and which connection it belongs to (the
//! network stack's flow table). One parser for both, so the two can never disagree on
//! what a valid header is. smoltcp does the full parse (and checksums) afterwards.
//!
//! [`parse`] never panics: every length is checked before it is used, and anything
//! inconsistent is [`Parsed::Malformed`].

/// What a frame is, as far as the data plane cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Too short or inconsistent to be Ethernet / IPv4 / TCP.
    Malformed,
    /// Another ethertype (IPv6, ...), or an IPv4 fragment.
    Unsupported,
    Arp,
    /// IPv4 with a consistent header; `tcp` when it carries a consistent TCP header,
    /// `udp` when it carries a consistent UDP header (at most one of them).
    Ipv4 {
        dst: [u8; 4],
        tcp: Option<TcpHeader>,
        udp: Option<UdpHeader>,
    },
}

/// The flow identity of a UDP datagram (a SOCKS relay's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpHeader {
    pub src: [u8; 4],
    pub sport: u16,
    pub dport: u16,
}

/// The flow identity, flags, sequence number and payload length of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader {
    pub src: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub seq: u32,
    /// Bytes after the TCP header, within the IP packet's total length.
    pub payload: u16,
}

impl TcpHeader {
    /// SYN set; ACK, RST and FIN clear: a connection attempt.
    pub fn is_syn_only(&self) -> bool {
        self.flags & 0x17 == 0x02
    }
}

/// Classifies an Ethernet frame.
pub fn parse(frame: &[u8]) -> Parsed {
    if frame.len() < 14 {
        return Parsed::Malformed;
    }
    match [frame[12], frame[13]] {
        [0x08, 0x06] => return Parsed::Arp,
        [0x08, 0x00] => {}
        _ => return Parsed::Unsupported,
    }
    let ip = &frame[14..];
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Parsed::Malformed;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || total < ihl || total > ip.len() {
        return Parsed::Malformed;
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return Parsed::Unsupported; // more-fragments flag or a fragment offset
    }
    let dst = [ip[16], ip[17], ip[18], ip[19]];
    let src = [ip[12], ip[13], ip[14], ip[15]];
    if ip[9] == 17 {
        let udp = &ip[ihl..total];
        if udp.len() < 8 || usize::from(u16::from_be_bytes([udp[4], udp[5]])) != udp.len() {
            return Parsed::Malformed;
        }
        return Parsed::Ipv4 {
            dst,
            tcp: None,
            udp: Some(UdpHeader {
                src,
                sport: u16::from_be_bytes([udp[0], udp[1]]),
                dport: u16::from_be_bytes([udp[2], udp[3]]),
            }),
        };
    }
    if ip[9] != 6 {
        return Parsed::Ipv4 {
            dst,
            tcp: None,
            udp: None,
        };
    }
    let tcp = &ip[ihl..total];
    let data_offset = tcp.get(12).map_or(0, |b| usize::from(b >> 4) * 4);
    if tcp.len() < 20 || data_offset < 20 || data_offset > tcp.len() {
        return Parsed::Malformed;
    }
    Parsed::Ipv4 {
        dst,
        tcp: Some(TcpHeader {
            src,
            sport: u16::from_be_bytes([tcp[0], tcp[1]]),
            dport: u16::from_be_bytes([tcp[2], tcp[3]]),
            flags: tcp[13],
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            // `tcp` is at most a 16-bit total length long.
            payload: u16::try_from(tcp.len() - data_offset).unwrap_or(u16::MAX),
        }),
        udp: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn() -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 2]);
        f[30..34].copy_from_slice(&[10, 0, 0, 1]);
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[38..42].copy_from_slice(&0x0102_0304u32.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = 0x02;
        f
    }

    #[test]
    fn the_payload_length_comes_from_the_ip_total_length_not_the_frame() {
        // Six bytes of data, then Ethernet padding the IP header does not count.
        let mut f = syn();
        f.extend_from_slice(b"abcdef\0\0\0\0");
        f[16..18].copy_from_slice(&46u16.to_be_bytes());
        match parse(&f) {
            Parsed::Ipv4 { tcp: Some(t), .. } => assert_eq!(t.payload, 6),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_a_syn() {
        match parse(&syn()) {
            Parsed::Ipv4 {
                dst: [10, 0, 0, 1],
                tcp: Some(t),
                udp: None,
            } => {
                assert_eq!((t.src, t.sport, t.dport), ([10, 0, 0, 2], 1234, 80));
                assert!(t.is_syn_only());
                assert_eq!((t.seq, t.payload), (0x0102_0304, 0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_inconsistent_headers_and_never_panics() {
        let f = syn();
        for n in 0..f.len() {
            let _ = parse(&f[..n]);
        }
        let bad = |i: usize, v: u8| {
            let mut g = f.clone();
            g[i] = v;
            parse(&g)
        };
        assert_eq!(
            bad(14, 0x4f),
            Parsed::Malformed,
            "header length past the end"
        );
        assert_eq!(bad(14, 0x44), Parsed::Malformed, "header length below 20");
        assert_eq!(
            bad(17, 0xff),
            Parsed::Malformed,
            "total length past the end"
        );
        assert_eq!(bad(46, 0x40), Parsed::Malformed, "TCP data offset below 5");
        assert_eq!(bad(20, 0x20), Parsed::Unsupported, "more-fragments flag");
        assert_eq!(bad(13, 0xdd), Parsed::Unsupported, "not IPv4 or ARP");
        assert_eq!(
            bad(23, 1),
            Parsed::Ipv4 {
                dst: [10, 0, 0, 1],
                tcp: None,
                udp: None,
            }
        );
    }

    #[test]
    fn parses_a_udp_header_and_checks_its_length() {
        // The SYN frame as a UDP datagram: 8-byte header and 12 bytes of data.
        let mut f = syn();
        f[23] = 17;
        f[38..40].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(
            parse(&f),
            Parsed::Ipv4 {
                dst: [10, 0, 0, 1],
                tcp: None,
                udp: Some(UdpHeader {
                    src: [10, 0, 0, 2],
                    sport: 1234,
                    dport: 80
                }),
            }
        );
        f[38..40].copy_from_slice(&21u16.to_be_bytes());
        assert_eq!(
            parse(&f),
            Parsed::Malformed,
            "UDP length past the IP packet"
        );
        for n in 0..f.len() {
            let _ = parse(&f[..n]);
        }
    }
}
