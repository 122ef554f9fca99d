//! `tlsocks`: a local SOCKS v5 proxy whose connections go over TLS to an appliance's
//! `socks5` vserver, so programs that speak SOCKS (`curl --socks5 127.0.0.1:1080`)
//! reach what the appliance lets them reach, with their traffic protected between here
//! and there.
//!
//!     tlsocks --server 10.77.0.1:1080 --ca ca.pem --name appliance.test \
//!             --user alice --password-file pw --listen 127.0.0.1:1080
//!
//! Each local client gets its own TLS connection (OpenSSL's libssl, the server's chain
//! verified against `--ca` and its name against `--name`; `--cert`/`--key` present a
//! client certificate). The local side asks for no credentials (it listens on a
//! loopback address by default); the appliance side authenticates with the password or
//! the certificate. A refusal from the appliance is passed to the local client as its
//! SOCKS reply code and printed, so the user sees why.
//!
//! `--udp LOCAL=TARGET` (repeatable) forwards the local UDP port LOCAL to TARGET
//! through a UDP association of its own: datagrams a local program sends to LOCAL go
//! to the appliance as secure datagrams (the README's format; keys from this TLS
//! connection's exporter, in its suite's AEAD), the appliance relays them to TARGET,
//! and TARGET's answers come back the same way to the local program that sent last.
//! When the association ends (the control connection closes, the appliance restarts)
//! it is made again with a backoff of 1 s doubling to 30 s, each failure printed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use openssl::pkey::PKey;
use openssl::ssl::{ErrorCode, SslConnector, SslMethod, SslStream, SslVerifyMode};
use openssl::x509::X509;
use socks_wire::{cmd, method, rep, Credentials, Greeting, Reply, Request};
use zeroize::Zeroizing;

#[derive(Parser, Debug)]
#[command(
    name = "tlsocks",
    version,
    about = "A local SOCKS v5 proxy that tunnels to an appliance's socks5 vserver over TLS"
)]
struct Args {
    /// The appliance's socks5 vserver, HOST:PORT.
    #[arg(long)]
    server: String,
    /// PEM file of the CAs that issue the appliance's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// The name the appliance's certificate must carry (also sent as SNI).
    #[arg(long)]
    name: String,
    /// User name for the appliance's password authentication (RFC 1929).
    #[arg(long, requires = "password_file")]
    user: Option<String>,
    /// File whose first line is the password.
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,
    /// Client certificate chain (PEM) to present to the appliance.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Where local SOCKS clients connect.
    #[arg(long, default_value = "127.0.0.1:1080")]
    listen: SocketAddr,
    /// LOCAL=TARGET: forward the local UDP port LOCAL (e.g. 127.0.0.1:5300) to the
    /// IPv4 TARGET (e.g. 10.78.0.2:53) through a protected association (repeatable).
    #[arg(long, value_name = "LOCAL=TARGET", value_parser = parse_udp)]
    udp: Vec<(SocketAddr, std::net::SocketAddrV4)>,
    /// Seconds to wait for the appliance (TCP, TLS and SOCKS).
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

/// Everything a tunnel needs, shared by the local connections' threads.
struct Tunnel {
    server: Vec<SocketAddr>,
    server_text: String,
    name: String,
    connector: SslConnector,
    credentials: Option<Credentials>,
    certificate: bool,
    timeout: Duration,
}

fn parse_udp(s: &str) -> Result<(SocketAddr, std::net::SocketAddrV4), String> {
    let (l, t) = s
        .split_once('=')
        .ok_or("expected LOCAL=TARGET, e.g. 127.0.0.1:5300=10.78.0.2:53")?;
    let l = l
        .parse()
        .map_err(|e| format!("LOCAL {l:?}: {e} (an address and port)"))?;
    let t = t
        .parse()
        .map_err(|e| format!("TARGET {t:?}: {e} (an IPv4 address and port)"))?;
    Ok((l, t))
}

fn fail(msg: String) -> ! {
    eprintln!("tlsocks: {msg}");
    std::process::exit(2);
}

fn main() {
    let a = Args::parse();
    let server: Vec<SocketAddr> = a
        .server
        .to_socket_addrs()
        .unwrap_or_else(|e| fail(format!("--server {:?}: {e}", a.server)))
        .collect();
    if server.is_empty() {
        fail(format!("--server {:?}: the name has no address", a.server));
    }
    let mut b = SslConnector::builder(SslMethod::tls_client())
        .unwrap_or_else(|e| fail(format!("TLS: {e}")));
    b.set_min_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
        .unwrap_or_else(|e| fail(format!("TLS: {e}")));
    b.set_verify(SslVerifyMode::PEER);
    let ca = std::fs::read(&a.ca).unwrap_or_else(|e| fail(format!("--ca {}: {e}", a.ca.display())));
    let cas =
        X509::stack_from_pem(&ca).unwrap_or_else(|e| fail(format!("--ca {}: {e}", a.ca.display())));
    if cas.is_empty() {
        fail(format!("--ca {}: no certificate in it", a.ca.display()));
    }
    for c in cas {
        b.cert_store_mut()
            .add_cert(c)
            .unwrap_or_else(|e| fail(format!("--ca {}: {e}", a.ca.display())));
    }
    if let (Some(c), Some(k)) = (&a.cert, &a.key) {
        b.set_certificate_chain_file(c)
            .unwrap_or_else(|e| fail(format!("--cert {}: {e}", c.display())));
        let key = std::fs::read(k).unwrap_or_else(|e| fail(format!("--key {}: {e}", k.display())));
        let key = PKey::private_key_from_pem(&key)
            .unwrap_or_else(|e| fail(format!("--key {}: {e}", k.display())));
        b.set_private_key(&key)
            .unwrap_or_else(|e| fail(format!("--key {}: {e}", k.display())));
        b.check_private_key()
            .unwrap_or_else(|e| fail(format!("--cert/--key do not match: {e}")));
    }
    let credentials = match (&a.user, &a.password_file) {
        (Some(u), Some(p)) => {
            let text = Zeroizing::new(
                std::fs::read_to_string(p)
                    .unwrap_or_else(|e| fail(format!("--password-file {}: {e}", p.display()))),
            );
            let pw = text.lines().next().unwrap_or("");
            if u.is_empty() || u.len() > 255 || pw.is_empty() || pw.len() > 255 {
                fail("the user name and the password must be 1 to 255 bytes (RFC 1929)".into());
            }
            Some(Credentials {
                user: u.as_bytes().to_vec(),
                password: pw.as_bytes().to_vec(),
            })
        }
        _ => None,
    };
    let tunnel = Arc::new(Tunnel {
        server,
        server_text: a.server.clone(),
        name: a.name.clone(),
        connector: b.build(),
        credentials,
        certificate: a.cert.is_some(),
        timeout: Duration::from_secs(a.timeout.max(1)),
    });
    for &(local, target) in &a.udp {
        let sock = std::net::UdpSocket::bind(local)
            .unwrap_or_else(|e| fail(format!("--udp {local}: {e}")));
        let t = tunnel.clone();
        eprintln!("tlsocks: UDP {local} -> {target} through {}", a.server);
        std::thread::spawn(move || udp::forward(&t, sock, target));
    }
    let listener =
        TcpListener::bind(a.listen).unwrap_or_else(|e| fail(format!("--listen {}: {e}", a.listen)));
    eprintln!(
        "tlsocks: SOCKS v5 on {} -> TLS to {} ({})",
        a.listen, a.server, a.name
    );
    for local in listener.incoming() {
        let Ok(local) = local else { continue };
        let t = tunnel.clone();
        std::thread::spawn(move || {
            let peer = local.peer_addr().map(|p| p.to_string()).unwrap_or_default();
            if let Err(e) = serve(&t, local) {
                eprintln!("tlsocks: {peer}: {e}");
            }
        });
    }
}

/// Reads one SOCKS message from a blocking stream with `parse`.
fn read_msg<T, S: Read>(
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

/// One local client: its SOCKS request, repeated to the appliance over TLS, then bytes
/// both ways.
fn serve(t: &Tunnel, mut local: TcpStream) -> Result<(), String> {
    let mut lbuf = Vec::new();
    let g = read_msg(&mut local, &mut lbuf, Greeting::parse)?;
    if !g.methods.contains(&method::NONE) {
        let _ = local.write_all(&socks_wire::method_reply(method::NO_ACCEPTABLE));
        return Err("the local client offers no method we take (no authentication)".into());
    }
    local
        .write_all(&socks_wire::method_reply(method::NONE))
        .map_err(|e| e.to_string())?;
    let req = read_msg(&mut local, &mut lbuf, Request::parse)?;
    if req.cmd != cmd::CONNECT {
        let _ = local.write_all(&Reply::failure(rep::COMMAND_NOT_SUPPORTED).encode());
        return Err(format!(
            "command {:#04x} is not relayed (CONNECT only)",
            req.cmd
        ));
    }
    let mut tls = match open(t) {
        Ok(s) => s,
        Err(e) => {
            let _ = local.write_all(&Reply::failure(rep::GENERAL_FAILURE).encode());
            return Err(format!("appliance {}: {e}", t.server_text));
        }
    };
    let mut rbuf = Vec::new();
    let reply = (|| {
        tls.write_all(&req.encode()).map_err(|e| e.to_string())?;
        read_msg(&mut tls, &mut rbuf, Reply::parse)
    })();
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            let _ = local.write_all(&Reply::failure(rep::GENERAL_FAILURE).encode());
            return Err(format!("appliance {}: {e}", t.server_text));
        }
    };
    local
        .write_all(&reply.encode())
        .map_err(|e| e.to_string())?;
    if reply.rep != rep::SUCCEEDED {
        return Err(format!(
            "CONNECT {}: the appliance answered {}",
            req.dst,
            reply_name(reply.rep)
        ));
    }
    // Bytes that came behind the messages on either side.
    if !lbuf.is_empty() {
        tls.write_all(&lbuf).map_err(|e| e.to_string())?;
    }
    if !rbuf.is_empty() {
        local.write_all(&rbuf).map_err(|e| e.to_string())?;
    }
    relay(local, tls)
}

fn reply_name(code: u8) -> String {
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

/// TLS to the appliance and SOCKS authentication.
fn open(t: &Tunnel) -> Result<SslStream<TcpStream>, String> {
    let tcp =
        TcpStream::connect_timeout(&t.server[0], t.timeout).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(t.timeout))
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut s = t
        .connector
        .connect(&t.name, tcp)
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let mut offer = Vec::new();
    if t.certificate {
        offer.push(method::NONE);
    }
    if t.credentials.is_some() {
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
            let c = t
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

/// Moves bytes both ways until both sides have closed: local EOF becomes close_notify,
/// the appliance's close_notify (or EOF) becomes a FIN to the local client.
fn relay(mut local: TcpStream, mut tls: SslStream<TcpStream>) -> Result<(), String> {
    tls.get_ref()
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    let (mut local_open, mut remote_open) = (true, true);
    let mut buf = vec![0u8; 16 * 1024];
    while local_open || remote_open {
        // Everything libssl can give without waiting.
        while remote_open {
            match tls.ssl_read(&mut buf) {
                Ok(0) => remote_open = false,
                Ok(n) => local.write_all(&buf[..n]).map_err(|e| e.to_string())?,
                Err(e) if e.code() == ErrorCode::WANT_READ => break,
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => remote_open = false,
                Err(e) if e.code() == ErrorCode::SYSCALL && e.io_error().is_none() => {
                    remote_open = false
                }
                Err(e) => return Err(format!("from the appliance: {e}")),
            }
            if !remote_open {
                let _ = local.shutdown(std::net::Shutdown::Write);
            }
        }
        if !local_open && !remote_open {
            break;
        }
        let mut fds = [
            libc::pollfd {
                fd: local.as_raw_fd(),
                events: if local_open { libc::POLLIN } else { 0 },
                revents: 0,
            },
            libc::pollfd {
                fd: tls.get_ref().as_raw_fd(),
                events: if remote_open { libc::POLLIN } else { 0 },
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, 1000) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.to_string());
        }
        if local_open && fds[0].revents != 0 {
            let n = local.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                local_open = false;
                let _ = tls.shutdown();
            } else {
                write_tls(&mut tls, &buf[..n])?;
            }
        }
    }
    Ok(())
}

/// Writes all of `b` on a non-blocking TLS stream, waiting for room as needed.
fn write_tls(tls: &mut SslStream<TcpStream>, mut b: &[u8]) -> Result<(), String> {
    while !b.is_empty() {
        match tls.ssl_write(b) {
            Ok(n) => b = &b[n..],
            Err(e) if e.code() == ErrorCode::WANT_WRITE || e.code() == ErrorCode::WANT_READ => {
                let mut fd = libc::pollfd {
                    fd: tls.get_ref().as_raw_fd(),
                    events: if e.code() == ErrorCode::WANT_WRITE {
                        libc::POLLOUT
                    } else {
                        libc::POLLIN
                    },
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut fd, 1, 1000) };
            }
            Err(e) => return Err(format!("to the appliance: {e}")),
        }
    }
    Ok(())
}

/// `--udp`: one local UDP port forwarded through a secure datagram association.
mod udp {
    use super::*;
    use crypto_offload::datagram::{DatagramKeys, LABEL};
    use socks_wire::datagram::{Header, ReplayWindow, HEADER_LEN, TAG_LEN};
    use socks_wire::{Addr, UdpHeader};
    use std::net::{SocketAddrV4, UdpSocket};

    /// Keeps the forwarder running: each association until it ends, then a new one
    /// after a backoff (1 s, doubling to 30 s; back to 1 s after one that worked).
    pub fn forward(t: &Tunnel, local: UdpSocket, target: SocketAddrV4) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let began = std::time::Instant::now();
            match associate(t, &local, target) {
                Ok(why) => eprintln!("tlsocks: UDP to {target}: association ended ({why}); again"),
                Err(e) => eprintln!(
                    "tlsocks: UDP to {target}: {e}; trying again in {} s",
                    backoff.as_secs()
                ),
            }
            if began.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_secs(1);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// The association's keys from the control connection, as the appliance derives
    /// them (`crypto_offload::datagram`), with libssl's exporter.
    fn keys(tls: &SslStream<TcpStream>, id: u32) -> Result<DatagramKeys, String> {
        let ssl = tls.ssl();
        let suite = ssl
            .current_cipher()
            .map(|c| u16::from_be_bytes(c.protocol_id()))
            .ok_or("no cipher suite")?;
        let alg = tls::suite_aead(suite).ok_or(format!(
            "suite {suite:#06x} has no AEAD for secure datagrams"
        ))?;
        let mut m = Zeroizing::new(vec![0u8; DatagramKeys::material_len(alg)]);
        ssl.export_keying_material(
            &mut m,
            std::str::from_utf8(LABEL).unwrap_or(""),
            Some(&id.to_be_bytes()),
        )
        .map_err(|e| format!("keying material exporter: {e}"))?;
        DatagramKeys::from_material(alg, &m, false).map_err(|e| e.to_string())
    }

    /// One association: open it, relay until it ends. `Ok` says why it ended.
    fn associate(t: &Tunnel, local: &UdpSocket, target: SocketAddrV4) -> Result<String, String> {
        let mut tls = open(t).map_err(|e| format!("appliance {}: {e}", t.server_text))?;
        let req = Request {
            cmd: cmd::UDP_ASSOCIATE,
            dst: Addr::V4(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0)),
        };
        tls.write_all(&req.encode()).map_err(|e| e.to_string())?;
        let mut rbuf = Vec::new();
        tls.get_ref()
            .set_read_timeout(Some(t.timeout))
            .map_err(|e| e.to_string())?;
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
        let relay_ip = if bound.ip().is_unspecified() {
            server_ip
        } else {
            *bound.ip()
        };
        let relay = SocketAddrV4::new(relay_ip, bound.port());
        let id = u32::from(bound.port());
        let mut keys = keys(&tls, id)?;
        // Datagrams go from the control connection's address (the appliance drops
        // others), from a port of our own.
        let from_ip = tls.get_ref().local_addr().map_err(|e| e.to_string())?.ip();
        let sock = UdpSocket::bind(SocketAddr::new(from_ip, 0)).map_err(|e| e.to_string())?;
        sock.connect(relay).map_err(|e| e.to_string())?;
        tls.get_ref()
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        local.set_nonblocking(true).map_err(|e| e.to_string())?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        eprintln!("tlsocks: UDP to {target}: association {id} via relay {relay}");
        let mut window = ReplayWindow::new(64);
        let mut seq: u64 = 0;
        let mut app: Option<SocketAddr> = None;
        let mut buf = vec![0u8; 65_536];
        let mut out = Vec::with_capacity(65_536);
        let mut dropped = 0u64;
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: local.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: tls.get_ref().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: three valid pollfds.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 3, 1000) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.to_string());
            }
            // The control connection: anything but "nothing yet" ends the association.
            if fds[2].revents != 0 {
                match tls.ssl_read(&mut buf) {
                    Ok(0) => return Ok("the appliance closed the control connection".into()),
                    Ok(_) => {}
                    Err(e) if e.code() == ErrorCode::WANT_READ => {}
                    Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                        return Ok("the appliance closed the control connection".into())
                    }
                    Err(e) => return Ok(format!("control connection: {e}")),
                }
            }
            // From local programs: wrap, seal, send.
            loop {
                let (n, from) = match local.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("local UDP: {e}")),
                };
                app = Some(from);
                out.clear();
                out.extend_from_slice(
                    &Header {
                        association: id,
                        seq,
                    }
                    .encode(),
                );
                UdpHeader {
                    frag: 0,
                    dst: Addr::V4(target),
                }
                .encode_into(&mut out);
                out.extend_from_slice(&buf[..n]);
                out.extend_from_slice(&[0u8; TAG_LEN]);
                keys.seal(seq, &mut out)
                    .map_err(|e| format!("sealing: {e}"))?;
                seq += 1;
                if let Err(e) = sock.send(&out) {
                    // ICMP errors from the relay (port gone: the association ended).
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        return Ok("the relay port is closed".into());
                    }
                }
            }
            // From the relay: check, open, unwrap, hand to the local program.
            loop {
                let n = match sock.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        return Ok("the relay port is closed".into())
                    }
                    Err(e) => return Err(format!("relay UDP: {e}")),
                };
                let d = &mut buf[..n];
                let seq = match Header::parse(d) {
                    Ok((h, _)) if h.association == id && window.check(h.seq).is_ok() => Some(h.seq),
                    _ => None,
                };
                let ok = seq.is_some_and(|seq| keys.open(seq, d).is_ok());
                if let (true, Some(seq)) = (ok, seq) {
                    window.accept(seq);
                }
                if !ok {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        eprintln!("tlsocks: UDP to {target}: {dropped} datagram(s) from the relay dropped (replayed or not authentic)");
                    }
                    continue;
                }
                let inner = &d[HEADER_LEN..n - TAG_LEN];
                let Ok((_, at)) = UdpHeader::parse(inner) else {
                    continue;
                };
                if let Some(to) = app {
                    let _ = local.send_to(&inner[at..], to);
                }
            }
        }
    }
}
