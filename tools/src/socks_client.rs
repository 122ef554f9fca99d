//! The client side of a `socks5` vserver, shared by `tlsocks` (the user's proxy) and
//! `dgramload` (the datagram benchmark): the TLS control connection (OpenSSL's libssl,
//! the appliance's chain verified against a CA file and its name), SOCKS
//! authentication (RFC 1929 or a client certificate), and UDP associations with
//! secure datagrams (the README's format; keys from libssl's exporter, so the two TLS
//! implementations must agree) or plain RFC 1928 datagrams.

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use crypto_offload::datagram::{DatagramKeys, LABEL};
use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};
use openssl::x509::X509;
use socks_wire::datagram::{Header, ReplayWindow, HEADER_LEN, TAG_LEN};
use socks_wire::{cmd, method, rep, Addr, Credentials, Greeting, Reply, Request, UdpHeader};
use zeroize::Zeroizing;

/// How to reach and authenticate to the appliance (flattened into each tool's flags).
#[derive(clap::Args, Debug, Clone)]
pub struct ApplianceArgs {
    /// The appliance's socks5 vserver, HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// PEM file of the CAs that issue the appliance's certificate.
    #[arg(long)]
    pub ca: PathBuf,
    /// The name the appliance's certificate must carry (also sent as SNI).
    #[arg(long)]
    pub name: String,
    /// User name for the appliance's password authentication (RFC 1929).
    #[arg(long, requires = "password_file")]
    pub user: Option<String>,
    /// File whose first line is the password.
    #[arg(long, requires = "user")]
    pub password_file: Option<PathBuf>,
    /// Client certificate chain (PEM) to present to the appliance.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Seconds to wait for the appliance (TCP, TLS and SOCKS).
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// Everything a connection to the appliance needs.
pub struct Tunnel {
    pub server: Vec<SocketAddr>,
    pub server_text: String,
    name: String,
    connector: SslConnector,
    credentials: Option<Credentials>,
    certificate: bool,
    pub timeout: Duration,
}

impl Tunnel {
    /// Reads the CA, certificate, key and password files; a message naming the flag
    /// at fault otherwise.
    pub fn new(a: &ApplianceArgs) -> Result<Tunnel, String> {
        let server: Vec<SocketAddr> = a
            .server
            .to_socket_addrs()
            .map_err(|e| format!("--server {:?}: {e}", a.server))?
            .collect();
        if server.is_empty() {
            return Err(format!("--server {:?}: the name has no address", a.server));
        }
        let tls = |e: openssl::error::ErrorStack| format!("TLS: {e}");
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(tls)?;
        b.set_min_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
            .map_err(tls)?;
        b.set_verify(SslVerifyMode::PEER);
        let ca_err = |e: &dyn std::fmt::Display| format!("--ca {}: {e}", a.ca.display());
        let ca = std::fs::read(&a.ca).map_err(|e| ca_err(&e))?;
        let cas = X509::stack_from_pem(&ca).map_err(|e| ca_err(&e))?;
        if cas.is_empty() {
            return Err(ca_err(&"no certificate in it"));
        }
        for c in cas {
            b.cert_store_mut().add_cert(c).map_err(|e| ca_err(&e))?;
        }
        if let (Some(c), Some(k)) = (&a.cert, &a.key) {
            b.set_certificate_chain_file(c)
                .map_err(|e| format!("--cert {}: {e}", c.display()))?;
            let key_err = |e: &dyn std::fmt::Display| format!("--key {}: {e}", k.display());
            let key = std::fs::read(k).map_err(|e| key_err(&e))?;
            let key = PKey::private_key_from_pem(&key).map_err(|e| key_err(&e))?;
            b.set_private_key(&key).map_err(|e| key_err(&e))?;
            b.check_private_key()
                .map_err(|e| format!("--cert/--key do not match: {e}"))?;
        }
        let credentials = match (&a.user, &a.password_file) {
            (Some(u), Some(p)) => {
                let text = Zeroizing::new(
                    std::fs::read_to_string(p)
                        .map_err(|e| format!("--password-file {}: {e}", p.display()))?,
                );
                let pw = text.lines().next().unwrap_or("");
                if u.is_empty() || u.len() > 255 || pw.is_empty() || pw.len() > 255 {
                    return Err(
                        "the user name and the password must be 1 to 255 bytes (RFC 1929)".into(),
                    );
                }
                Some(Credentials {
                    user: u.as_bytes().to_vec(),
                    password: pw.as_bytes().to_vec(),
                })
            }
            _ => None,
        };
        Ok(Tunnel {
            server,
            server_text: a.server.clone(),
            name: a.name.clone(),
            connector: b.build(),
            credentials,
            certificate: a.cert.is_some(),
            timeout: Duration::from_secs(a.timeout.max(1)),
        })
    }

    /// TLS to the appliance and SOCKS authentication; the stream is blocking with no
    /// read timeout.
    pub fn open(&self) -> Result<SslStream<TcpStream>, String> {
        let tcp = TcpStream::connect_timeout(&self.server[0], self.timeout)
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(self.timeout))
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut s = self
            .connector
            .connect(&self.name, tcp)
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let mut offer = Vec::new();
        if self.certificate {
            offer.push(method::NONE);
        }
        if self.credentials.is_some() {
            offer.push(method::PASSWORD);
        }
        if offer.is_empty() {
            offer.push(method::NONE);
        }
        s.write_all(&Greeting { methods: offer }.encode())
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let m = read_msg(&mut s, &mut buf, socks_wire::parse_method_reply)?;
        match m {
            method::NONE => {}
            method::PASSWORD => {
                let c = self
                    .credentials
                    .as_ref()
                    .ok_or("the appliance asks for a password; give --user and --password-file")?;
                let msg = Zeroizing::new(c.encode());
                s.write_all(&msg).map_err(|e| e.to_string())?;
                if !read_msg(&mut s, &mut buf, socks_wire::parse_auth_reply)? {
                    return Err("authentication failed (user name or password)".into());
                }
            }
            method::NO_ACCEPTABLE => {
                return Err(
                    "the appliance accepts none of our methods (a password? a client certificate?)"
                        .into(),
                )
            }
            o => {
                return Err(format!(
                    "the appliance chose method {o:#04x}, which we did not offer"
                ))
            }
        }
        s.get_ref()
            .set_read_timeout(None)
            .map_err(|e| e.to_string())?;
        Ok(s)
    }
}

/// Reads one SOCKS message from a blocking stream with `parse`.
pub fn read_msg<T, S: Read>(
    s: &mut S,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> socks_wire::Parsed<T>,
) -> Result<T, String> {
    loop {
        match parse(buf) {
            Ok(Some((m, n))) => {
                buf.drain(..n);
                return Ok(m);
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        let mut b = [0u8; 512];
        let n = s.read(&mut b).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed in the middle of the SOCKS exchange".into());
        }
        buf.extend_from_slice(&b[..n]);
    }
}

/// A SOCKS reply code with what it means.
pub fn reply_name(code: u8) -> String {
    let what = match code {
        rep::GENERAL_FAILURE => "general failure",
        rep::NOT_ALLOWED => "not allowed by its policy",
        rep::NETWORK_UNREACHABLE => "network unreachable",
        rep::HOST_UNREACHABLE => "host unreachable",
        rep::CONNECTION_REFUSED => "connection refused",
        rep::TTL_EXPIRED => "TTL expired",
        rep::COMMAND_NOT_SUPPORTED => "command not supported",
        rep::ADDRESS_TYPE_NOT_SUPPORTED => "address type not supported",
        _ => "an unknown code",
    };
    format!("{code:#04x} ({what})")
}

/// Why a datagram from the relay was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Seen already, or older than the window.
    Replayed,
    /// Failed authentication, another association's, or unreadable.
    NotAuthentic,
}

/// A UDP association: its control connection (which must stay open), its socket
/// towards the relay, and (unless plain) its secure datagram state.
pub struct Association {
    pub tls: SslStream<TcpStream>,
    pub sock: UdpSocket,
    pub relay: SocketAddrV4,
    pub id: u32,
    keys: Option<DatagramKeys>,
    window: ReplayWindow,
    seq: u64,
}

impl Association {
    /// UDP ASSOCIATE on a fresh control connection; `plain`: RFC 1928 datagrams with
    /// no protection (the vserver must have `plain_udp`).
    pub fn open(t: &Tunnel, plain: bool) -> Result<Association, String> {
        let mut tls = t
            .open()
            .map_err(|e| format!("appliance {}: {e}", t.server_text))?;
        let req = Request {
            cmd: cmd::UDP_ASSOCIATE,
            dst: Addr::V4(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0)),
        };
        tls.write_all(&req.encode()).map_err(|e| e.to_string())?;
        tls.get_ref()
            .set_read_timeout(Some(t.timeout))
            .map_err(|e| e.to_string())?;
        let mut rbuf = Vec::new();
        let reply = read_msg(&mut tls, &mut rbuf, Reply::parse)?;
        if reply.rep != rep::SUCCEEDED {
            return Err(format!(
                "UDP ASSOCIATE: the appliance answered {}",
                reply_name(reply.rep)
            ));
        }
        let Addr::V4(bound) = reply.bound else {
            return Err(format!(
                "UDP ASSOCIATE: relay address {} is not IPv4",
                reply.bound
            ));
        };
        // A relay address of 0.0.0.0 means the appliance's own address.
        let server_ip = match t.server[0] {
            SocketAddr::V4(a) => *a.ip(),
            SocketAddr::V6(_) => return Err("the appliance must have an IPv4 address".into()),
        };
        let ip = if bound.ip().is_unspecified() {
            server_ip
        } else {
            *bound.ip()
        };
        let relay = SocketAddrV4::new(ip, bound.port());
        let id = u32::from(bound.port());
        let keys = if plain {
            None
        } else {
            Some(datagram_keys(&tls, id)?)
        };
        // Datagrams go from the control connection's address (the appliance drops
        // others), from a port of our own.
        let from_ip = tls.get_ref().local_addr().map_err(|e| e.to_string())?.ip();
        let sock = UdpSocket::bind(SocketAddr::new(from_ip, 0)).map_err(|e| e.to_string())?;
        sock.connect(relay).map_err(|e| e.to_string())?;
        Ok(Association {
            tls,
            sock,
            relay,
            id,
            keys,
            window: ReplayWindow::new(64),
            seq: 0,
        })
    }

    /// Writes into `out` the datagram carrying `data` to `target`.
    pub fn wrap(
        &mut self,
        target: SocketAddrV4,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        out.clear();
        let head = UdpHeader {
            frag: 0,
            dst: Addr::V4(target),
        };
        let Some(keys) = self.keys.as_mut() else {
            head.encode_into(out);
            out.extend_from_slice(data);
            return Ok(());
        };
        let seq = self.seq;
        if seq >= keys.seal_limit() {
            return Err(format!(
                "{seq} datagrams sealed, the AEAD's limit: a new association is needed"
            ));
        }
        out.extend_from_slice(
            &Header {
                association: self.id,
                seq,
            }
            .encode(),
        );
        head.encode_into(out);
        out.extend_from_slice(data);
        out.extend_from_slice(&[0u8; TAG_LEN]);
        keys.seal(seq, out).map_err(|e| format!("sealing: {e}"))?;
        self.seq += 1;
        Ok(())
    }

    /// The data of a datagram from the relay (opened in place) and whom it came from.
    pub fn unwrap<'a>(&mut self, d: &'a mut [u8]) -> Result<(SocketAddrV4, &'a [u8]), Dropped> {
        let inner: &[u8] = match self.keys.as_mut() {
            None => d,
            Some(keys) => {
                let (h, _) = Header::parse(d).map_err(|_| Dropped::NotAuthentic)?;
                if h.association != self.id {
                    return Err(Dropped::NotAuthentic);
                }
                self.window.check(h.seq).map_err(|_| Dropped::Replayed)?;
                keys.open(h.seq, d).map_err(|_| Dropped::NotAuthentic)?;
                self.window.accept(h.seq);
                let n = d.len();
                &d[HEADER_LEN..n - TAG_LEN]
            }
        };
        let (h, at) = UdpHeader::parse(inner).map_err(|_| Dropped::NotAuthentic)?;
        let Addr::V4(from) = h.dst else {
            return Err(Dropped::NotAuthentic);
        };
        Ok((from, &inner[at..]))
    }
}

/// The association's keys from the control connection, as the appliance derives
/// them (`crypto_offload::datagram`), with libssl's exporter.
pub fn datagram_keys(tls: &SslStream<TcpStream>, id: u32) -> Result<DatagramKeys, String> {
    let ssl = tls.ssl();
    let suite = ssl
        .current_cipher()
        .map(|c| u16::from_be_bytes(c.protocol_id()))
        .ok_or("no cipher suite")?;
    let alg = tls::suite_aead(suite).ok_or(format!(
        "suite {suite:#06x} has no AEAD for secure datagrams"
    ))?;
    let mut m = Zeroizing::new(vec![0u8; DatagramKeys::material_len(alg)]);
    let label = std::str::from_utf8(LABEL).map_err(|e| e.to_string())?;
    ssl.export_keying_material(&mut m, label, Some(&id.to_be_bytes()))
        .map_err(|e| format!("keying material exporter: {e}"))?;
    DatagramKeys::from_material(alg, &m, false).map_err(|e| e.to_string())
}
