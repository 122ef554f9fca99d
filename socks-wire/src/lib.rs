//! The SOCKS v5 wire formats the appliance's `socks5` vservers and the `tlsocks` client
//! speak inside TLS: RFC 1928's greeting, method selection, request and reply, RFC
//! 1929's username/password sub-negotiation, and RFC 1928's UDP request header.
//!
//! Every parser takes the bytes received so far and answers `Ok(None)` while a message
//! is incomplete, `Ok(Some((message, length)))` once it is whole, or an error naming
//! what is wrong (never a panic); the encoders write exactly what the parsers read.
//! Messages are bounded by the formats themselves (at most 513 bytes for the
//! sub-negotiation, 262 for a request), so a reader needs no more buffer than that.
//!
//! [`datagram`] is the secure datagram format (protected UDP through an association)
//! and its replay window.
//!
//! What it must not do: resolve names, open sockets, check passwords or policy (the
//! handler does), hold keys, or keep state between messages (the replay window is the
//! one exception, and it is the caller's).

pub mod datagram;

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

/// SOCKS protocol version 5 (the first byte of a greeting, request and reply).
pub const VERSION: u8 = 5;
/// The username/password sub-negotiation's version (RFC 1929).
pub const AUTH_VERSION: u8 = 1;

/// Authentication methods (RFC 1928 §3).
pub mod method {
    pub const NONE: u8 = 0x00;
    pub const GSSAPI: u8 = 0x01;
    pub const PASSWORD: u8 = 0x02;
    /// "NO ACCEPTABLE METHODS".
    pub const NO_ACCEPTABLE: u8 = 0xff;
}

/// Request commands (RFC 1928 §4).
pub mod cmd {
    pub const CONNECT: u8 = 0x01;
    pub const BIND: u8 = 0x02;
    pub const UDP_ASSOCIATE: u8 = 0x03;
}

/// Reply codes (RFC 1928 §6).
pub mod rep {
    pub const SUCCEEDED: u8 = 0x00;
    pub const GENERAL_FAILURE: u8 = 0x01;
    pub const NOT_ALLOWED: u8 = 0x02;
    pub const NETWORK_UNREACHABLE: u8 = 0x03;
    pub const HOST_UNREACHABLE: u8 = 0x04;
    pub const CONNECTION_REFUSED: u8 = 0x05;
    pub const TTL_EXPIRED: u8 = 0x06;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;
}

/// Address types (RFC 1928 §5).
pub mod atyp {
    pub const IPV4: u8 = 0x01;
    pub const DOMAIN: u8 = 0x03;
    pub const IPV6: u8 = 0x04;
}

/// What is wrong with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The version byte is not what the message has (5, or 1 for RFC 1929).
    Version(u8),
    /// A greeting that offers no method (NMETHODS = 0).
    NoMethods,
    /// RFC 1929: an empty username or password (ULEN/PLEN are 1 to 255).
    EmptyCredential,
    /// An address type other than IPv4, domain name or IPv6 (reply 0x08).
    AddressType(u8),
    /// A domain name of length 0.
    EmptyDomain,
    /// A reserved field that must be zero is not.
    Reserved,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Version(v) => write!(
                f,
                "version {v} where SOCKS 5 (or RFC 1929's 1) was expected"
            ),
            Error::NoMethods => f.write_str("a greeting offering no authentication method"),
            Error::EmptyCredential => f.write_str("an empty username or password"),
            Error::AddressType(t) => write!(
                f,
                "address type {t:#04x} is not IPv4, a domain name or IPv6"
            ),
            Error::EmptyDomain => f.write_str("an empty domain name"),
            Error::Reserved => f.write_str("a reserved field is not zero"),
        }
    }
}

impl std::error::Error for Error {}

/// A parse result: `None` while the message is incomplete, else the message and the
/// bytes it took.
pub type Parsed<T> = Result<Option<(T, usize)>, Error>;

/// The client's greeting: the methods it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub methods: Vec<u8>,
}

impl Greeting {
    /// `VER NMETHODS METHODS...`
    pub fn parse(b: &[u8]) -> Parsed<Greeting> {
        let Some(&ver) = b.first() else {
            return Ok(None);
        };
        if ver != VERSION {
            return Err(Error::Version(ver));
        }
        let Some(&n) = b.get(1) else {
            return Ok(None);
        };
        if n == 0 {
            return Err(Error::NoMethods);
        }
        let end = 2 + usize::from(n);
        match b.get(2..end) {
            None => Ok(None),
            Some(m) => Ok(Some((
                Greeting {
                    methods: m.to_vec(),
                },
                end,
            ))),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![VERSION, self.methods.len() as u8];
        v.extend_from_slice(&self.methods[..self.methods.len().min(255)]);
        v
    }
}

/// The server's method selection: `VER METHOD`.
pub fn method_reply(method: u8) -> [u8; 2] {
    [VERSION, method]
}

/// Reads a method selection (the client's side).
pub fn parse_method_reply(b: &[u8]) -> Parsed<u8> {
    match b {
        [] | [_] => Ok(None),
        [v, ..] if *v != VERSION => Err(Error::Version(*v)),
        [_, m, ..] => Ok(Some((*m, 2))),
    }
}

/// RFC 1929's request: `VER ULEN UNAME PLEN PASSWD`. The password is the caller's to
/// wipe once checked.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: Vec<u8>,
    pub password: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("Credentials")
            .field("user", &String::from_utf8_lossy(&self.user))
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn parse(b: &[u8]) -> Parsed<Credentials> {
        let Some(&ver) = b.first() else {
            return Ok(None);
        };
        if ver != AUTH_VERSION {
            return Err(Error::Version(ver));
        }
        let Some(&ulen) = b.get(1) else {
            return Ok(None);
        };
        let ulen = usize::from(ulen);
        let Some(&plen) = b.get(2 + ulen) else {
            return Ok(None);
        };
        let plen = usize::from(plen);
        if ulen == 0 || plen == 0 {
            return Err(Error::EmptyCredential);
        }
        let end = 3 + ulen + plen;
        if b.len() < end {
            return Ok(None);
        }
        Ok(Some((
            Credentials {
                user: b[2..2 + ulen].to_vec(),
                password: b[3 + ulen..end].to_vec(),
            },
            end,
        )))
    }

    /// The request (the client's side); names longer than 255 bytes are cut.
    pub fn encode(&self) -> Vec<u8> {
        let u = &self.user[..self.user.len().min(255)];
        let p = &self.password[..self.password.len().min(255)];
        let mut v = vec![AUTH_VERSION, u.len() as u8];
        v.extend_from_slice(u);
        v.push(p.len() as u8);
        v.extend_from_slice(p);
        v
    }
}

/// RFC 1929's reply: `VER STATUS`, 0 for success.
pub fn auth_reply(ok: bool) -> [u8; 2] {
    [AUTH_VERSION, if ok { 0 } else { 1 }]
}

/// Reads RFC 1929's reply (the client's side): whether it succeeded.
pub fn parse_auth_reply(b: &[u8]) -> Parsed<bool> {
    match b {
        [] | [_] => Ok(None),
        [v, ..] if *v != AUTH_VERSION => Err(Error::Version(*v)),
        [_, s, ..] => Ok(Some((*s == 0, 2))),
    }
}

/// An address as SOCKS carries it, with its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    V4(SocketAddrV4),
    /// A name (1 to 255 bytes, not necessarily valid) and a port.
    Domain(Vec<u8>, u16),
    V6(Ipv6Addr, u16),
}

impl Addr {
    /// `ATYP ADDR PORT` at the start of `b`.
    pub fn parse(b: &[u8]) -> Parsed<Addr> {
        let Some(&t) = b.first() else {
            return Ok(None);
        };
        let (addr_len, start) = match t {
            atyp::IPV4 => (4, 1),
            atyp::IPV6 => (16, 1),
            atyp::DOMAIN => match b.get(1) {
                None => return Ok(None),
                Some(0) => return Err(Error::EmptyDomain),
                Some(&n) => (usize::from(n), 2),
            },
            o => return Err(Error::AddressType(o)),
        };
        let end = start + addr_len + 2;
        if b.len() < end {
            return Ok(None);
        }
        let a = &b[start..start + addr_len];
        let port = u16::from_be_bytes([b[end - 2], b[end - 1]]);
        let addr = match t {
            atyp::IPV4 => Addr::V4(SocketAddrV4::new(
                Ipv4Addr::new(a[0], a[1], a[2], a[3]),
                port,
            )),
            atyp::IPV6 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(a);
                Addr::V6(Ipv6Addr::from(o), port)
            }
            _ => Addr::Domain(a.to_vec(), port),
        };
        Ok(Some((addr, end)))
    }

    pub fn encode_into(&self, v: &mut Vec<u8>) {
        match self {
            Addr::V4(a) => {
                v.push(atyp::IPV4);
                v.extend_from_slice(&a.ip().octets());
                v.extend_from_slice(&a.port().to_be_bytes());
            }
            Addr::V6(ip, port) => {
                v.push(atyp::IPV6);
                v.extend_from_slice(&ip.octets());
                v.extend_from_slice(&port.to_be_bytes());
            }
            Addr::Domain(name, port) => {
                let n = &name[..name.len().min(255)];
                v.push(atyp::DOMAIN);
                v.push(n.len() as u8);
                v.extend_from_slice(n);
                v.extend_from_slice(&port.to_be_bytes());
            }
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::V4(a) => write!(f, "{a}"),
            Addr::V6(ip, port) => write!(f, "[{ip}]:{port}"),
            Addr::Domain(n, port) => {
                write!(f, "{}:{port}", String::from_utf8_lossy(n).escape_debug())
            }
        }
    }
}

/// A request: `VER CMD RSV ATYP DST.ADDR DST.PORT`. The command is kept raw so that an
/// unknown one can be answered with 0x07.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub cmd: u8,
    pub dst: Addr,
}

impl Request {
    pub fn parse(b: &[u8]) -> Parsed<Request> {
        let Some(&ver) = b.first() else {
            return Ok(None);
        };
        if ver != VERSION {
            return Err(Error::Version(ver));
        }
        if b.len() < 3 {
            return Ok(None);
        }
        if b[2] != 0 {
            return Err(Error::Reserved);
        }
        Ok(Addr::parse(&b[3..])?.map(|(dst, n)| (Request { cmd: b[1], dst }, 3 + n)))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![VERSION, self.cmd, 0];
        self.dst.encode_into(&mut v);
        v
    }
}

/// A reply: `VER REP RSV ATYP BND.ADDR BND.PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub rep: u8,
    pub bound: Addr,
}

impl Reply {
    /// A reply with the unspecified IPv4 address (failures carry no address).
    pub fn failure(rep: u8) -> Reply {
        Reply {
            rep,
            bound: Addr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![VERSION, self.rep, 0];
        self.bound.encode_into(&mut v);
        v
    }

    pub fn parse(b: &[u8]) -> Parsed<Reply> {
        Request::parse(b).map(|o| {
            o.map(|(r, n)| {
                (
                    Reply {
                        rep: r.cmd,
                        bound: r.dst,
                    },
                    n,
                )
            })
        })
    }
}

/// The header of a UDP datagram through a SOCKS relay (RFC 1928 §7):
/// `RSV(2) FRAG ATYP DST.ADDR DST.PORT`, then the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    pub frag: u8,
    pub dst: Addr,
}

impl UdpHeader {
    /// The header and the offset of the data; a datagram is whole or it is wrong, so
    /// an incomplete header is an error here, not `None`.
    pub fn parse(b: &[u8]) -> Result<(UdpHeader, usize), UdpError> {
        if b.len() < 4 {
            return Err(UdpError::Truncated);
        }
        if b[0] != 0 || b[1] != 0 {
            return Err(UdpError::Wire(Error::Reserved));
        }
        match Addr::parse(&b[3..]) {
            Ok(Some((dst, n))) => Ok((UdpHeader { frag: b[2], dst }, 3 + n)),
            Ok(None) => Err(UdpError::Truncated),
            Err(e) => Err(UdpError::Wire(e)),
        }
    }

    pub fn encode_into(&self, v: &mut Vec<u8>) {
        v.extend_from_slice(&[0, 0, self.frag]);
        self.dst.encode_into(v);
    }
}

/// What is wrong with a UDP datagram's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpError {
    Truncated,
    Wire(Error),
}

impl fmt::Display for UdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UdpError::Truncated => f.write_str("a truncated SOCKS UDP header"),
            UdpError::Wire(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for UdpError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_waits_for_its_last_byte_then_parses_whole() {
        let req = Request {
            cmd: cmd::CONNECT,
            dst: Addr::V4("10.77.0.2:8080".parse().unwrap()),
        };
        let name = Request {
            cmd: cmd::CONNECT,
            dst: Addr::Domain(b"example.com".to_vec(), 443),
        };
        let v6 = Reply {
            rep: rep::SUCCEEDED,
            bound: Addr::V6("2001:db8::1".parse().unwrap(), 1080),
        };
        let creds = Credentials {
            user: b"alice".to_vec(),
            password: b"secret".to_vec(),
        };
        let g = Greeting {
            methods: vec![method::NONE, method::PASSWORD],
        };
        for bytes in [req.encode(), name.encode()] {
            for cut in 0..bytes.len() {
                assert_eq!(Request::parse(&bytes[..cut]), Ok(None), "{cut}");
            }
            let mut more = bytes.clone();
            more.extend_from_slice(b"trailing");
            let (r, n) = Request::parse(&more).unwrap().unwrap();
            assert_eq!((r.encode(), n), (bytes.clone(), bytes.len()));
        }
        let b = v6.encode();
        assert_eq!(Reply::parse(&b), Ok(Some((v6, b.len()))));
        let b = creds.encode();
        for cut in 0..b.len() {
            assert_eq!(Credentials::parse(&b[..cut]), Ok(None));
        }
        assert_eq!(Credentials::parse(&b), Ok(Some((creds, b.len()))));
        let b = g.encode();
        assert_eq!(Greeting::parse(&b), Ok(Some((g, 4))));
        assert_eq!(parse_method_reply(&method_reply(2)), Ok(Some((2, 2))));
        assert_eq!(parse_auth_reply(&auth_reply(false)), Ok(Some((false, 2))));
    }

    #[test]
    fn wrong_messages_are_named() {
        // A TLS ClientHello where a greeting belongs (a client that forgot the tunnel).
        assert_eq!(Greeting::parse(&[0x16, 3, 1]), Err(Error::Version(0x16)));
        assert_eq!(Greeting::parse(&[5, 0]), Err(Error::NoMethods));
        assert_eq!(
            Credentials::parse(&[1, 0, 1, b'x']),
            Err(Error::EmptyCredential)
        );
        assert_eq!(
            Credentials::parse(&[5, 1, b'u', 1, b'p']),
            Err(Error::Version(5))
        );
        assert_eq!(
            Request::parse(&[5, 1, 0, 9, 1, 2]),
            Err(Error::AddressType(9))
        );
        assert_eq!(
            Request::parse(&[5, 1, 0, 3, 0, 0, 80]),
            Err(Error::EmptyDomain)
        );
        assert_eq!(Request::parse(&[5, 1, 1, 1]), Err(Error::Reserved));
        assert_eq!(Request::parse(&[4, 1, 0, 80]), Err(Error::Version(4)));
    }

    #[test]
    fn udp_headers_round_trip_and_truncation_is_an_error() {
        let h = UdpHeader {
            frag: 0,
            dst: Addr::V4("10.77.0.2:5353".parse().unwrap()),
        };
        let mut b = Vec::new();
        h.encode_into(&mut b);
        let hl = b.len();
        b.extend_from_slice(b"payload");
        assert_eq!(UdpHeader::parse(&b), Ok((h, hl)));
        for cut in 0..hl {
            assert!(UdpHeader::parse(&b[..cut]).is_err(), "{cut}");
        }
        assert_eq!(
            UdpHeader::parse(&[0, 1, 0, 1, 1, 2, 3, 4, 0, 53]),
            Err(UdpError::Wire(Error::Reserved))
        );
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials {
            user: b"alice".to_vec(),
            password: b"hunter2".to_vec(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
