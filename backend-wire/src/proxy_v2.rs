//! The PROXY protocol version 2 header (the HAProxy specification, "The PROXY
//! protocol", section 2.2): the binary preamble a proxy writes at the start of a
//! backend connection so the backend learns the client's address.
//!
//! The appliance writes one [`encode_tcp4`] header per backend connection of a
//! vserver with `proxy_protocol = true`. [`parse`] reads a header back (tests, the
//! fuzz target, and anyone checking what went out); it never panics and reports
//! what is wrong with a header it refuses.

use std::net::{Ipv4Addr, SocketAddrV4};

/// The 12 bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Length of a TCP-over-IPv4 header without TLVs.
pub const TCP4_LEN: usize = 16 + 12;

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// `LOCAL`: a connection the proxy made for itself (e.g. a health check); the
    /// receiver uses the real addresses.
    Local,
    /// `PROXY` for TCP over IPv4: the client (`src`) and the address it connected to.
    Tcp4 {
        src: SocketAddrV4,
        dst: SocketAddrV4,
    },
    /// `PROXY` for another family or transport (byte 13 of the header), addresses
    /// not decoded.
    Other { family: u8 },
}

/// Why bytes are not a version 2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// More bytes are needed: at least this many in all.
    Short(usize),
    BadSignature,
    /// The high nibble of byte 12 must be 2.
    BadVersion(u8),
    /// The low nibble of byte 12 must be 0 (LOCAL) or 1 (PROXY).
    BadCommand(u8),
    /// The address block is shorter than its family needs.
    AddressTooShort {
        family: u8,
        len: usize,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Short(n) => write!(f, "truncated: {n} bytes needed"),
            Error::BadSignature => write!(f, "no PROXY v2 signature"),
            Error::BadVersion(v) => write!(f, "version {v}, not 2"),
            Error::BadCommand(c) => write!(f, "command {c} is neither LOCAL nor PROXY"),
            Error::AddressTooShort { family, len } => {
                write!(
                    f,
                    "family 0x{family:02x} needs more than {len} address bytes"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

/// The header for a TCP connection from `src` to `dst`, both IPv4 (no TLVs).
pub fn encode_tcp4(src: SocketAddrV4, dst: SocketAddrV4) -> [u8; TCP4_LEN] {
    let mut h = [0u8; TCP4_LEN];
    h[..12].copy_from_slice(&SIGNATURE);
    h[12] = 0x21; // version 2, PROXY
    h[13] = 0x11; // AF_INET, STREAM
    h[14..16].copy_from_slice(&12u16.to_be_bytes());
    h[16..20].copy_from_slice(&src.ip().octets());
    h[20..24].copy_from_slice(&dst.ip().octets());
    h[24..26].copy_from_slice(&src.port().to_be_bytes());
    h[26..28].copy_from_slice(&dst.port().to_be_bytes());
    h
}

/// Reads the header at the start of `buf`: what it says and its whole length (TLVs
/// included, skipped).
pub fn parse(buf: &[u8]) -> Result<(Header, usize), Error> {
    let sig = buf.len().min(12);
    if buf[..sig] != SIGNATURE[..sig] {
        return Err(Error::BadSignature);
    }
    if buf.len() < 16 {
        return Err(Error::Short(16));
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(Error::BadVersion(version));
    }
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if buf.len() < total {
        return Err(Error::Short(total));
    }
    let header = match command {
        0 => Header::Local,
        1 if family == 0x11 => {
            if len < 12 {
                return Err(Error::AddressTooShort { family, len });
            }
            let a = &buf[16..28];
            let ip = |o: usize| Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]);
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            Header::Tcp4 {
                src: SocketAddrV4::new(ip(0), port(8)),
                dst: SocketAddrV4::new(ip(4), port(10)),
            }
        }
        1 => Header::Other { family },
        c => return Err(Error::BadCommand(c)),
    };
    Ok((header, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn encoded_header_has_the_specified_bytes_and_parses_back() {
        let h = encode_tcp4(a("192.0.2.7:40000"), a("10.0.0.1:443"));
        // Signature, v2 PROXY, TCP4, length 12, 192.0.2.7, 10.0.0.1, 40000, 443.
        assert_eq!(
            h[12..],
            [0x21, 0x11, 0, 12, 192, 0, 2, 7, 10, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb]
        );
        assert_eq!(
            parse(&h),
            Ok((
                Header::Tcp4 {
                    src: a("192.0.2.7:40000"),
                    dst: a("10.0.0.1:443")
                },
                28
            ))
        );
    }

    #[test]
    fn every_truncation_asks_for_more_and_nothing_else() {
        let h = encode_tcp4(a("192.0.2.7:1"), a("10.0.0.1:2"));
        for n in 0..h.len() {
            let want = if n < 16 { 16 } else { 28 };
            assert_eq!(parse(&h[..n]), Err(Error::Short(want)), "prefix {n}");
        }
    }

    #[test]
    fn bad_headers_say_what_is_wrong() {
        let mut h = encode_tcp4(a("192.0.2.7:1"), a("10.0.0.1:2")).to_vec();
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Err(Error::BadSignature));
        h[12] = 0x11;
        assert_eq!(parse(&h), Err(Error::BadVersion(1)));
        h[12] = 0x22;
        assert_eq!(parse(&h), Err(Error::BadCommand(2)));
        h[12] = 0x21;
        h[15] = 4;
        assert_eq!(
            parse(&h),
            Err(Error::AddressTooShort {
                family: 0x11,
                len: 4
            })
        );
        // LOCAL with TLVs: skipped whole.
        let mut l = SIGNATURE.to_vec();
        l.extend([0x20, 0x00, 0, 3, 1, 2, 3, 0xff]);
        assert_eq!(parse(&l), Ok((Header::Local, 19)));
    }
}
