//! The PROXY protocol version 2 header (the HAProxy specification, "The PROXY
//! protocol", section 2.2): the binary preamble a proxy writes at the start of a
//! backend connection so the backend learns the client's address.
//!
//! The appliance writes one [`encode_tcp4`] header per backend connection of a
//! vserver with `proxy_protocol = true`; a `tls` vserver's carries what the TLS
//! handshake settled as TLVs ([`encode_tcp4_tls`]: ALPN, authority (SNI), and the SSL
//! TLV with version, cipher and client certificate, as HAProxy sends them). [`parse`]
//! reads a header back and [`tlvs`] its TLVs (tests, the fuzz target, and anyone
//! checking what went out); neither panics, both report what is wrong.

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
    /// A TLV whose length runs past the header (or the TLV holding it).
    BadTlv,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Short(n) => write!(f, "truncated: {n} bytes needed"),
            Error::BadSignature => write!(f, "no PROXY v2 signature"),
            Error::BadVersion(v) => write!(f, "version {v}, not 2"),
            Error::BadCommand(c) => write!(f, "command {c} is neither LOCAL nor PROXY"),
            Error::BadTlv => write!(f, "a TLV runs past its header"),
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

/// TLV types (the specification's section 2.2.1 onwards).
pub mod tlv {
    pub const ALPN: u8 = 0x01;
    pub const AUTHORITY: u8 = 0x02;
    pub const SSL: u8 = 0x20;
    pub const SSL_VERSION: u8 = 0x21;
    pub const SSL_CN: u8 = 0x22;
    pub const SSL_CIPHER: u8 = 0x23;
    /// The SSL TLV's `client` bits.
    pub const CLIENT_SSL: u8 = 0x01;
    pub const CLIENT_CERT_CONN: u8 = 0x02;
    pub const CLIENT_CERT_SESS: u8 = 0x04;
}

/// What a TLS connection tells its backend (each field optional as the handshake had
/// it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    pub alpn: Option<Vec<u8>>,
    /// The server name the client asked for.
    pub authority: Option<Vec<u8>>,
    /// "TLSv1.3", "TLSv1.2".
    pub version: String,
    pub cipher: String,
    /// The client presented a certificate on this connection (verified: the engine
    /// refuses one that does not verify) / its session was authenticated with one.
    pub cert_conn: bool,
    pub cert_sess: bool,
    /// The client certificate's subject common name.
    pub cn: Option<Vec<u8>>,
}

/// One TLV: its type and value.
pub type Tlv<'a> = (u8, &'a [u8]);

fn put_tlv(v: &mut Vec<u8>, typ: u8, value: &[u8]) {
    // Values here are names and a few flags: well under 64 KiB.
    let n = value.len().min(usize::from(u16::MAX));
    v.push(typ);
    v.extend_from_slice(&(n as u16).to_be_bytes());
    v.extend_from_slice(&value[..n]);
}

/// The header for a TCP connection from `src` to `dst` with `info`'s TLVs: ALPN and
/// authority when known, and always the SSL TLV (`client` bits, `verify` 0, version,
/// cipher, and the client certificate's CN when there was one).
pub fn encode_tcp4_tls(src: SocketAddrV4, dst: SocketAddrV4, info: &TlsInfo) -> Vec<u8> {
    let mut v = encode_tcp4(src, dst).to_vec();
    if let Some(a) = &info.alpn {
        put_tlv(&mut v, tlv::ALPN, a);
    }
    if let Some(a) = &info.authority {
        put_tlv(&mut v, tlv::AUTHORITY, a);
    }
    let mut client = tlv::CLIENT_SSL;
    if info.cert_conn {
        client |= tlv::CLIENT_CERT_CONN;
    }
    if info.cert_sess {
        client |= tlv::CLIENT_CERT_SESS;
    }
    let mut ssl = vec![client];
    // verify: 0 only when a client certificate was presented and verified (the
    // specification's "non-zero otherwise"), so a backend cannot take an anonymous
    // client for an authenticated one.
    let verify: u32 = if info.cert_sess { 0 } else { 1 };
    ssl.extend_from_slice(&verify.to_be_bytes());
    put_tlv(&mut ssl, tlv::SSL_VERSION, info.version.as_bytes());
    if let Some(cn) = &info.cn {
        put_tlv(&mut ssl, tlv::SSL_CN, cn);
    }
    put_tlv(&mut ssl, tlv::SSL_CIPHER, info.cipher.as_bytes());
    put_tlv(&mut v, tlv::SSL, &ssl);
    let len = (v.len() - 16) as u16;
    v[14..16].copy_from_slice(&len.to_be_bytes());
    v
}

/// The TLVs of the header at the start of `buf` (whose address block `family` has),
/// each as (type, value), in order; an SSL TLV's value includes its sub-TLVs (read
/// them with [`ssl_tlv`]).
pub fn tlvs(buf: &[u8]) -> Result<Vec<Tlv<'_>>, Error> {
    let (_, total) = parse(buf)?;
    let addr_len = match buf[13] {
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        _ => 0,
    };
    let start = (16 + addr_len).min(total);
    walk(&buf[start..total])
}

/// TLVs back to back in `b`.
fn walk(mut b: &[u8]) -> Result<Vec<Tlv<'_>>, Error> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 3 {
            return Err(Error::BadTlv);
        }
        let n = usize::from(u16::from_be_bytes([b[1], b[2]]));
        let v = b.get(3..3 + n).ok_or(Error::BadTlv)?;
        out.push((b[0], v));
        b = &b[3 + n..];
    }
    Ok(out)
}

/// An SSL TLV's value: its `client` bits, `verify` field and sub-TLVs.
pub fn ssl_tlv(value: &[u8]) -> Result<(u8, u32, Vec<Tlv<'_>>), Error> {
    if value.len() < 5 {
        return Err(Error::BadTlv);
    }
    let verify = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    Ok((value[0], verify, walk(&value[5..])?))
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
        // A TLV longer than the header.
        let mut t = encode_tcp4(a("192.0.2.7:1"), a("10.0.0.1:2")).to_vec();
        t.extend([0x02, 0, 9, b'x']);
        let n = (t.len() - 16) as u16;
        t[14..16].copy_from_slice(&n.to_be_bytes());
        assert_eq!(tlvs(&t), Err(Error::BadTlv));
        // LOCAL with TLVs: skipped whole.
        let mut l = SIGNATURE.to_vec();
        l.extend([0x20, 0x00, 0, 3, 1, 2, 3, 0xff]);
        assert_eq!(parse(&l), Ok((Header::Local, 19)));
    }

    #[test]
    fn tls_tlvs_read_back_as_written() {
        let info = TlsInfo {
            alpn: Some(b"h2".to_vec()),
            authority: Some(b"shop.example".to_vec()),
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_128_GCM_SHA256".into(),
            cert_conn: true,
            cert_sess: true,
            cn: Some(b"alice".to_vec()),
        };
        let h = encode_tcp4_tls(a("192.0.2.7:40000"), a("10.0.0.1:443"), &info);
        let (hdr, n) = parse(&h).unwrap();
        assert_eq!(n, h.len());
        assert_eq!(
            hdr,
            Header::Tcp4 {
                src: a("192.0.2.7:40000"),
                dst: a("10.0.0.1:443")
            }
        );
        let t = tlvs(&h).unwrap();
        assert_eq!(t[0], (tlv::ALPN, &b"h2"[..]));
        assert_eq!(t[1], (tlv::AUTHORITY, &b"shop.example"[..]));
        assert_eq!(t[2].0, tlv::SSL);
        let (client, verify, sub) = ssl_tlv(t[2].1).unwrap();
        assert_eq!(
            (client, verify),
            (
                tlv::CLIENT_SSL | tlv::CLIENT_CERT_CONN | tlv::CLIENT_CERT_SESS,
                0
            )
        );
        assert_eq!(
            sub,
            vec![
                (tlv::SSL_VERSION, &b"TLSv1.3"[..]),
                (tlv::SSL_CN, &b"alice"[..]),
                (tlv::SSL_CIPHER, &b"TLS_AES_128_GCM_SHA256"[..]),
            ]
        );
        // Without ALPN, SNI or a certificate: the SSL TLV alone.
        let bare = TlsInfo {
            version: "TLSv1.2".into(),
            cipher: "x".into(),
            ..TlsInfo::default()
        };
        let h = encode_tcp4_tls(a("192.0.2.7:1"), a("10.0.0.1:2"), &bare);
        let t = tlvs(&h).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(ssl_tlv(t[0].1).unwrap().0, tlv::CLIENT_SSL);
        assert_eq!(
            ssl_tlv(t[0].1).unwrap().1,
            1,
            "no certificate: not verified"
        );
    }
}
