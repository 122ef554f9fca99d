//! A SOCKS UDP association (RFC 1928 §7) of a `socks5` vserver: its relay port on
//! this core, the client it serves, and the secure datagrams of the README's format
//! (`socks_wire::datagram`): keys from the control connection's exporter, the replay
//! window, the counters. The control connection's handler (`conn::socks`) owns it and
//! steps it when the port received something; the association ends with the control
//! connection.
//!
//! What is relayed:
//! - from the **client** (the control connection's address; its port is the one the
//!   request named, or the last that sent a valid datagram: a secure datagram from a
//!   new port of that address is taken when it authenticates): a secure datagram
//!   (first byte `0x81`) is checked against the replay window, opened, and its RFC
//!   1928 header read; a plain one (first byte 0) only when the vserver has
//!   `plain_udp`. The header's target must be an IPv4 address the allow/deny policy
//!   allows; FRAG≠0 is dropped (no reassembly);
//! - from a **target** the client sent to: wrapped in an RFC 1928 header naming the
//!   target, protected as the client's last datagram was (secure unless the client
//!   speaks plain), and sent to the client;
//! - from **anyone else**: dropped and counted.
//!
//! Duplicates are dropped, counted and logged (at most one line a second per
//! association); forgeries are dropped silently and counted, and past
//! [`INTEGRITY_LIMIT`] of them the association (and its control connection) ends, as
//! DTLS 1.3 does past its limit (RFC 9147 §4.5.3). Lost and reordered datagrams are
//! normal. Datagram crypto runs on the poll core: one AEAD call on at most a frame's
//! worth of bytes costs less than a hand-off to the pool.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use crypto_offload::datagram::DatagramKeys;
use crypto_offload::prim::AeadAlg;
use driver::Cx;
use netstack::UdpId;
use socks_wire::datagram::{self, Header, Kind, Replay, ReplayWindow, HEADER_LEN, TAG_LEN};
use socks_wire::{Addr, UdpHeader};

use crate::config::SocksConfig;
use crate::stats::{add, ProxyStats as Stats};

/// Forged or corrupted secure datagrams an association takes before it ends: the
/// integrity limit of ChaCha20-Poly1305 (RFC 9001 §6.6, 2^36; AES-GCM's is 2^52), the
/// tightest of the suites the keys may use. Not lower: anyone who can send from the
/// client's address could otherwise end an association with a burst of garbage.
pub const INTEGRITY_LIMIT: u64 = 1 << 36;
/// Targets an association remembers (replies are taken only from them).
const TARGETS: usize = 64;
/// IPv4 + UDP headers.
const IP_UDP: usize = 28;
/// The RFC 1928 UDP header with an IPv4 address.
const SOCKS_V4_HEADER: usize = 10;

/// Why an association ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// More forgeries than [`INTEGRITY_LIMIT`].
    IntegrityLimit,
    /// The send key sealed as many datagrams as its AEAD may
    /// ([`DatagramKeys::seal_limit`]): the client makes a new association.
    Exhausted,
}

/// One association.
pub struct Association {
    pub udp: UdpId,
    /// The relay port (also the association id of its secure datagrams).
    pub port: u16,
    client_ip: Ipv4Addr,
    client_port: Option<u16>,
    /// `None` when the control connection cannot export keys (TLS 1.2 without the
    /// extended master secret): plain datagrams only, if allowed.
    keys: Option<DatagramKeys>,
    window: ReplayWindow,
    send_seq: u64,
    /// The client's last valid datagram was protected: replies are too.
    protected: bool,
    targets: Vec<SocketAddrV4>,
    forgeries: u64,
    cfg: Arc<SocksConfig>,
    /// Datagrams and payload bytes each way (for the access log).
    pub up: (u64, u64),
    pub down: (u64, u64),
    last_replay_log_us: u64,
}

impl Association {
    /// An association for `client` (from the control connection; `port` 0: not
    /// known yet) on the relay port `port` bound as `udp`.
    pub fn new(
        udp: UdpId,
        port: u16,
        client: SocketAddrV4,
        keys: Option<DatagramKeys>,
        cfg: Arc<SocksConfig>,
    ) -> Self {
        Association {
            udp,
            port,
            client_ip: *client.ip(),
            client_port: (client.port() != 0).then_some(client.port()),
            keys,
            window: ReplayWindow::new(cfg.replay_window),
            send_seq: 0,
            protected: true,
            targets: Vec::new(),
            forgeries: 0,
            cfg,
            up: (0, 0),
            down: (0, 0),
            last_replay_log_us: 0,
        }
    }

    /// The association id of its secure datagrams: its relay port.
    pub fn id(&self) -> u32 {
        u32::from(self.port)
    }

    /// The server's keys of the association on relay port `port`, from the control
    /// connection's exporter, in its suite's AEAD.
    pub fn keys_from(t: &tls::ServerConn, port: u16) -> Result<DatagramKeys, String> {
        let alg: AeadAlg = tls::suite_aead(t.info().suite)
            .ok_or_else(|| format!("suite {:#06x} has no datagram AEAD", t.info().suite))?;
        let m = t
            .export_keying_material(
                crypto_offload::datagram::LABEL,
                Some(&datagram::exporter_context(u32::from(port))),
                DatagramKeys::material_len(alg),
            )
            .map_err(|e| e.to_string())?;
        DatagramKeys::from_material(alg, m.bytes(), true).map_err(|e| e.to_string())
    }

    /// Relays every datagram the port holds. `buf` is scratch of 64 KiB.
    pub fn step(
        &mut self,
        cx: &mut Cx<'_>,
        stats: &Stats,
        vserver: &str,
        buf: &mut [u8],
    ) -> Result<(), End> {
        let mtu = cx.stack.config().mtu;
        while let Some((n, from)) = cx.stack.udp_recv(self.udp, buf) {
            let same_ip = *from.ip() == self.client_ip;
            let client_endpoint = same_ip && self.client_port == Some(from.port());
            // The client's address, a new port, and a secure datagram: a NAT that
            // moved the client; its authentication decides (the association id binds
            // it, not the port). Plain datagrams must come from the known port.
            let moved = same_ip
                && (self.client_port.is_none() || datagram::kind(&buf[..n]) == Kind::Protected);
            if client_endpoint {
                self.client_datagram(cx, stats, vserver, &mut buf[..n], from, mtu)?;
            } else if self.targets.contains(&from) {
                self.target_datagram(cx, stats, vserver, &buf[..n], from, mtu)?;
            } else if moved {
                self.client_datagram(cx, stats, vserver, &mut buf[..n], from, mtu)?;
            } else {
                add(&stats.dgram_foreign, 1);
            }
        }
        Ok(())
    }

    fn client_datagram(
        &mut self,
        cx: &mut Cx<'_>,
        stats: &Stats,
        vserver: &str,
        d: &mut [u8],
        from: SocketAddrV4,
        mtu: usize,
    ) -> Result<(), End> {
        let inner = match datagram::kind(d) {
            Kind::Protected => {
                let Some(keys) = self.keys.as_mut() else {
                    add(&stats.dgram_auth_failed, 1);
                    return Ok(());
                };
                let (h, _) = match Header::parse(d) {
                    Ok(x) => x,
                    Err(_) => {
                        add(&stats.dgram_malformed, 1);
                        return Ok(());
                    }
                };
                if h.association != u32::from(self.port) {
                    return self.forged(stats, vserver);
                }
                match self.window.check(h.seq) {
                    Ok(()) => {}
                    Err(Replay::Duplicate) => {
                        add(&stats.dgram_replayed, 1);
                        if cx.now_us.saturating_sub(self.last_replay_log_us) >= 1_000_000 {
                            self.last_replay_log_us = cx.now_us;
                            log::info!(
                                "vserver {vserver}: association {}: duplicate datagram {} from {from} dropped",
                                self.port,
                                h.seq
                            );
                        }
                        return Ok(());
                    }
                    Err(Replay::TooOld) => {
                        add(&stats.dgram_too_old, 1);
                        return Ok(());
                    }
                }
                if keys.open(h.seq, d).is_err() {
                    return self.forged(stats, vserver);
                }
                self.window.accept(h.seq);
                self.protected = true;
                &d[HEADER_LEN..d.len() - TAG_LEN]
            }
            Kind::Plain if self.cfg.plain_udp => {
                self.protected = false;
                &d[..]
            }
            Kind::Plain => {
                add(&stats.dgram_plain_refused, 1);
                return Ok(());
            }
            Kind::Unknown => {
                add(&stats.dgram_malformed, 1);
                return Ok(());
            }
        };
        // Authentic (or plain and allowed): this is the client's port from now on.
        self.client_port = Some(from.port());
        let (h, at) = match UdpHeader::parse(inner) {
            Ok(x) => x,
            Err(_) => {
                add(&stats.dgram_malformed, 1);
                return Ok(());
            }
        };
        if h.frag != 0 {
            add(&stats.dgram_fragment_dropped, 1);
            return Ok(());
        }
        let Addr::V4(to) = h.dst else {
            add(&stats.dgram_refused_policy, 1);
            return Ok(());
        };
        if to.port() == 0 || !self.cfg.allowed(to) || !self.cfg.routable(*to.ip()) {
            add(&stats.dgram_refused_policy, 1);
            return Ok(());
        }
        let data = &inner[at..];
        if data.len() + IP_UDP > mtu {
            add(&stats.dgram_too_big, 1);
            return Ok(());
        }
        if !self.targets.contains(&to) {
            if self.targets.len() == TARGETS {
                self.targets.remove(0);
            }
            self.targets.push(to);
        }
        match cx.stack.udp_send(self.udp, to, data.len()) {
            Some(out) => {
                out.copy_from_slice(data);
                self.up.0 += 1;
                self.up.1 += data.len() as u64;
                add(&stats.dgram_up, 1);
                add(&stats.dgram_bytes_up, data.len() as u64);
            }
            None => add(&stats.dgram_send_full, 1),
        }
        Ok(())
    }

    fn forged(&mut self, stats: &Stats, vserver: &str) -> Result<(), End> {
        add(&stats.dgram_auth_failed, 1);
        self.forgeries += 1;
        if self.forgeries > INTEGRITY_LIMIT {
            log::warn!(
                "vserver {vserver}: association {}: more than {INTEGRITY_LIMIT} datagrams failed authentication; ended",
                self.port
            );
            return Err(End::IntegrityLimit);
        }
        Ok(())
    }

    fn target_datagram(
        &mut self,
        cx: &mut Cx<'_>,
        stats: &Stats,
        vserver: &str,
        data: &[u8],
        from: SocketAddrV4,
        mtu: usize,
    ) -> Result<(), End> {
        let Some(cport) = self.client_port else {
            add(&stats.dgram_foreign, 1);
            return Ok(());
        };
        let client = SocketAddrV4::new(self.client_ip, cport);
        let protect = self.protected && self.keys.is_some();
        let overhead = if protect { HEADER_LEN + TAG_LEN } else { 0 };
        let len = overhead + SOCKS_V4_HEADER + data.len();
        if len + IP_UDP > mtu {
            add(&stats.dgram_too_big, 1);
            return Ok(());
        }
        if let (true, Some(k)) = (protect, self.keys.as_ref()) {
            if self.send_seq >= k.seal_limit() {
                log::info!(
                    "vserver {vserver}: association {}: {} datagrams sealed, the AEAD's limit; ended (the client makes a new one)",
                    self.port,
                    self.send_seq
                );
                return Err(End::Exhausted);
            }
        }
        let seq = self.send_seq;
        let Some(out) = cx.stack.udp_send(self.udp, client, len) else {
            add(&stats.dgram_send_full, 1);
            return Ok(());
        };
        let body = &mut out[if protect { HEADER_LEN } else { 0 }..];
        body[..4].copy_from_slice(&[0, 0, 0, 1]);
        body[4..8].copy_from_slice(&from.ip().octets());
        body[8..10].copy_from_slice(&from.port().to_be_bytes());
        body[10..10 + data.len()].copy_from_slice(data);
        if let (true, Some(keys)) = (protect, self.keys.as_mut()) {
            out[..HEADER_LEN].copy_from_slice(
                &Header {
                    association: u32::from(self.port),
                    seq,
                }
                .encode(),
            );
            if keys.seal(seq, out).is_err() {
                // Cannot happen with a buffer of the right layout; never send it clear.
                out.fill(0);
                add(&stats.dgram_send_full, 1);
                return Ok(());
            }
            self.send_seq += 1;
        }
        self.down.0 += 1;
        self.down.1 += data.len() as u64;
        add(&stats.dgram_down, 1);
        add(&stats.dgram_bytes_down, data.len() as u64);
        Ok(())
    }
}
