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
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use openssl::ssl::{ErrorCode, SslStream};
use socks_wire::{cmd, method, rep, Greeting, Reply, Request};
use tools::socks_client::{read_msg, reply_name, ApplianceArgs, Tunnel};

#[derive(Parser, Debug)]
#[command(
    name = "tlsocks",
    version,
    about = "A local SOCKS v5 proxy that tunnels to an appliance's socks5 vserver over TLS"
)]
struct Args {
    #[command(flatten)]
    appliance: ApplianceArgs,
    /// Where local SOCKS clients connect.
    #[arg(long, default_value = "127.0.0.1:1080")]
    listen: SocketAddr,
    /// LOCAL=TARGET: forward the local UDP port LOCAL (e.g. 127.0.0.1:5300) to the
    /// IPv4 TARGET (e.g. 10.78.0.2:53) through a protected association (repeatable).
    #[arg(long, value_name = "LOCAL=TARGET", value_parser = parse_udp)]
    udp: Vec<(SocketAddr, std::net::SocketAddrV4)>,
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
    let tunnel = Arc::new(Tunnel::new(&a.appliance).unwrap_or_else(|e| fail(e)));
    for &(local, target) in &a.udp {
        let sock = std::net::UdpSocket::bind(local)
            .unwrap_or_else(|e| fail(format!("--udp {local}: {e}")));
        let t = tunnel.clone();
        eprintln!(
            "tlsocks: UDP {local} -> {target} through {}",
            a.appliance.server
        );
        std::thread::spawn(move || udp::forward(&t, sock, target));
    }
    let listener =
        TcpListener::bind(a.listen).unwrap_or_else(|e| fail(format!("--listen {}: {e}", a.listen)));
    eprintln!(
        "tlsocks: SOCKS v5 on {} -> TLS to {} ({})",
        a.listen, a.appliance.server, a.appliance.name
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
    let mut tls = match t.open() {
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
    use std::net::{SocketAddrV4, UdpSocket};
    use tools::socks_client::{Association, Dropped};

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

    /// One association: open it, relay until it ends. `Ok` says why it ended.
    fn associate(t: &Tunnel, local: &UdpSocket, target: SocketAddrV4) -> Result<String, String> {
        let mut a = Association::open(t, false)?;
        a.tls
            .get_ref()
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        local.set_nonblocking(true).map_err(|e| e.to_string())?;
        a.sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        eprintln!(
            "tlsocks: UDP to {target}: association {} via relay {}",
            a.id, a.relay
        );
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
                    fd: a.sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: a.tls.get_ref().as_raw_fd(),
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
                match a.tls.ssl_read(&mut buf) {
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
                if let Err(e) = a.wrap(target, &buf[..n], &mut out) {
                    return Ok(e);
                }
                if let Err(e) = a.sock.send(&out) {
                    // An ICMP error from the relay: its port is gone.
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        return Ok("the relay port is closed".into());
                    }
                }
            }
            // From the relay: check, open, unwrap, hand to the local program.
            loop {
                let n = match a.sock.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        return Ok("the relay port is closed".into())
                    }
                    Err(e) => return Err(format!("relay UDP: {e}")),
                };
                match a.unwrap(&mut buf[..n]) {
                    Ok((_, data)) => {
                        if let Some(to) = app {
                            let _ = local.send_to(data, to);
                        }
                    }
                    Err(why) => {
                        dropped += 1;
                        if dropped.is_power_of_two() {
                            let what = match why {
                                Dropped::Replayed => "replayed",
                                Dropped::NotAuthentic => "not authentic",
                            };
                            eprintln!("tlsocks: UDP to {target}: {dropped} datagram(s) from the relay dropped (the last: {what})");
                        }
                    }
                }
            }
        }
    }
}
