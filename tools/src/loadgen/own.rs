//! `--engine own`: the appliance engine's TLS 1.3 client role ([`tls::ClientConn`]) as
//! loadgen's client. It does per handshake what a client must (one (EC)DHE with the
//! server's fresh share, the key schedule, the server's Finished checked, the client
//! Finished) and, unless told not to, verifies the chain, the name and the server's
//! CertificateVerify. The cheapenings are the flags, each named in the report:
//! `--no-verify`, `--reuse-key-share`, `--reuse-ticket`. None of them changes what the
//! server does per handshake: it still makes a key share, signs, derives and encrypts.

use std::cell::RefCell;
use std::io;

use driver::pump;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crypto_offload::ServerVerifier;
use tls::client::{group_of, suite_name};
use tls::msgs::{group, scheme, suite};
use tls::KeyShare;
use tls::{ClientConfig, ClientConn, Ticket};

use super::args::Args;
use super::engine::{io_failure, Conn, Engine, Io, Negotiated};
use super::net::Stream;
use super::report::{Failure, Kind};

/// Tickets kept per thread for single-use resumption; more are dropped.
const MAX_TICKETS: usize = 4096;

thread_local! {
    /// The key share reused by every connection of the thread (`--reuse-key-share`).
    static SHARE: RefCell<Option<KeyShare>> = const { RefCell::new(None) };
    /// Tickets not offered yet (or, with `--reuse-ticket`, the one offered every time).
    static TICKETS: RefCell<Vec<Ticket>> = const { RefCell::new(Vec::new()) };
}

/// Milliseconds on one clock for the whole process (ticket ages).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[derive(Clone)]
pub struct Own {
    cfg: Arc<ClientConfig>,
    group: crypto_offload::Group,
    reuse_share: bool,
    reuse_ticket: bool,
    resume: bool,
}

fn names<T>(flag: &str, list: &str, known: &[(&[&str], T)]) -> Result<Vec<T>, String>
where
    T: Copy,
{
    list.split(':')
        .map(|n| {
            known
                .iter()
                .find(|(names, _)| names.iter().any(|k| k.eq_ignore_ascii_case(n)))
                .map(|&(_, v)| v)
                .ok_or_else(|| {
                    let all: Vec<&str> = known.iter().map(|(names, _)| names[0]).collect();
                    format!(
                        "{flag}: {n:?} is not one --engine own offers ({})",
                        all.join(", ")
                    )
                })
        })
        .collect()
}

impl Own {
    /// The client configuration from the command line; a name it does not know is an
    /// error naming its flag.
    pub fn new(a: &Args) -> Result<Own, String> {
        let mut cfg = ClientConfig::default();
        if let Some(l) = &a.ciphersuites {
            cfg.suites = names(
                "--ciphersuites",
                l,
                &[
                    (&["TLS_AES_128_GCM_SHA256"], suite::TLS13_AES_128_GCM_SHA256),
                    (&["TLS_AES_256_GCM_SHA384"], suite::TLS13_AES_256_GCM_SHA384),
                    (
                        &["TLS_CHACHA20_POLY1305_SHA256"],
                        suite::TLS13_CHACHA20_POLY1305_SHA256,
                    ),
                ],
            )?;
        }
        if let Some(l) = &a.groups {
            cfg.groups = names(
                "--groups",
                l,
                &[
                    (&["X25519MLKEM768"], group::X25519MLKEM768),
                    (&["X25519"], group::X25519),
                    (&["P-256", "prime256v1", "secp256r1"], group::SECP256R1),
                    (&["P-384", "secp384r1"], group::SECP384R1),
                    (&["P-521", "secp521r1"], group::SECP521R1),
                    (&["X448"], group::X448),
                ],
            )?;
        }
        if let Some(l) = &a.sigalgs {
            cfg.schemes = names(
                "--sigalgs",
                l,
                &[
                    (
                        &["ecdsa_secp256r1_sha256", "ECDSA+SHA256"],
                        scheme::ECDSA_SECP256R1_SHA256,
                    ),
                    (
                        &["ecdsa_secp384r1_sha384", "ECDSA+SHA384"],
                        scheme::ECDSA_SECP384R1_SHA384,
                    ),
                    (
                        &["rsa_pss_rsae_sha256", "RSA-PSS+SHA256"],
                        scheme::RSA_PSS_RSAE_SHA256,
                    ),
                    (
                        &["rsa_pss_rsae_sha384", "RSA-PSS+SHA384"],
                        scheme::RSA_PSS_RSAE_SHA384,
                    ),
                    (
                        &["rsa_pss_rsae_sha512", "RSA-PSS+SHA512"],
                        scheme::RSA_PSS_RSAE_SHA512,
                    ),
                ],
            )?;
        }
        cfg.alpn = a.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        cfg.server_name = a.sni.clone();
        if a.verify {
            let name = a.sni.clone().unwrap_or_else(|| a.target.ip().to_string());
            let pem = match &a.ca {
                Some(p) => Some(
                    std::fs::read(p)
                        .map_err(|e| format!("--ca: cannot read {}: {e}", p.display()))?,
                ),
                None => None,
            };
            let v = ServerVerifier::new(pem.as_deref(), &name).map_err(|e| match &a.ca {
                Some(p) => format!("--ca: {}: {e}", p.display()),
                None => format!("cannot load the system CAs (use --ca or --no-verify): {e}"),
            })?;
            cfg.verifier = Some(Arc::new(v));
        }
        cfg.validate().map_err(|e| format!("--engine own: {e}"))?;
        // The share is for the first group offered (no HelloRetryRequest: the server
        // must take it).
        let group = group_of(cfg.groups[0]).ok_or("--groups: no usable group")?;
        Ok(Own {
            cfg: Arc::new(cfg),
            group,
            reuse_share: a.reuse_key_share,
            reuse_ticket: a.reuse_ticket,
            resume: a.resume.is_some(),
        })
    }

    fn share(&self) -> Result<KeyShare, Failure> {
        let fresh = || {
            KeyShare::generate(self.group).map_err(|e| Failure::new(Kind::Handshake, e.to_string()))
        };
        if !self.reuse_share {
            return fresh();
        }
        SHARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.is_none() {
                *s = Some(fresh()?);
            }
            Ok(s.clone().expect("set above"))
        })
    }
}

impl Engine for Own {
    type Conn = OwnConn;

    fn open(&self, tcp: Stream) -> Result<OwnConn, Failure> {
        let share = self.share()?;
        let ticket = if !self.resume {
            None
        } else if self.reuse_ticket {
            TICKETS.with(|t| t.borrow().first().cloned())
        } else {
            TICKETS.with(|t| t.borrow_mut().pop())
        };
        let c = ClientConn::new(self.cfg.clone(), share, ticket.as_ref(), now_ms())
            .map_err(|e| Failure::new(Kind::Handshake, e.to_string()))?;
        Ok(OwnConn {
            tcp,
            c,
            keep_tickets: self.resume,
            reuse_ticket: self.reuse_ticket,
            got_ticket: false,
        })
    }

    fn has_session(&self) -> bool {
        TICKETS.with(|t| !t.borrow().is_empty())
    }
}

pub struct OwnConn {
    tcp: Stream,
    c: ClientConn,
    keep_tickets: bool,
    reuse_ticket: bool,
    got_ticket: bool,
}

/// What a failed connection's error is, for the report.
fn failure(e: &tls::Error, handshaking: bool) -> Failure {
    use tls::Error as E;
    let kind = match e {
        E::PeerAlert(_) => Kind::Alert,
        E::BadCertificate { .. } | E::BadCertificateVerify => Kind::Verify,
        _ if handshaking => Kind::Handshake,
        _ => Kind::Tls,
    };
    Failure::new(kind, e.to_string())
}

impl OwnConn {
    /// Writes what the engine has queued; `false` if the socket took less.
    fn flush(&mut self) -> Result<bool, Failure> {
        pump::flush(&mut self.c, &mut self.tcp).map_err(|e| match e.kind() {
            io::ErrorKind::WriteZero => Failure::new(Kind::Closed, "the socket took nothing"),
            _ => io_failure(&e),
        })
    }

    /// Reads from the socket into the engine: `Some(false)` when the socket had
    /// nothing, `None` at the end of input, `Err` on the engine's failure (its alert is
    /// sent first).
    fn fill(&mut self) -> Result<Option<bool>, Failure> {
        if self.c.tls_room() == 0 {
            // The server closed (close_notify), or the engine takes nothing more:
            // an end, never a loop.
            return Ok(None);
        }
        match pump::fill(&mut self.tcp, &mut self.c) {
            Ok(0) => return Ok(Some(false)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io_failure(&e)),
        }
        let handshaking = self.c.is_handshaking();
        if let Err(e) = self.c.process(now_ms()) {
            let _ = self.flush();
            return Err(failure(&e, handshaking));
        }
        self.keep_ticket();
        self.flush()?;
        Ok(Some(true))
    }

    /// Hands a ticket this connection received to the thread's next connections.
    fn keep_ticket(&mut self) {
        if !self.keep_tickets || self.got_ticket {
            return;
        }
        if let Some(t) = self.c.ticket() {
            self.got_ticket = true;
            TICKETS.with(|all| {
                let mut all = all.borrow_mut();
                if (all.is_empty() || !self.reuse_ticket) && all.len() < MAX_TICKETS {
                    all.push(t.clone());
                }
            });
        }
    }
}

impl Conn for OwnConn {
    fn handshake(&mut self) -> Result<bool, Failure> {
        loop {
            if self.c.is_established() {
                // The client Finished waits for what follows it (close_notify, a
                // request): one segment instead of two. Every later call flushes.
                return Ok(true);
            }
            if !self.flush()? {
                return Ok(false);
            }
            match self.fill()? {
                None => {
                    return Err(Failure::new(
                        Kind::Closed,
                        "the server closed during the handshake",
                    ))
                }
                Some(false) => return Ok(false),
                Some(true) => {}
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<Io, Failure> {
        loop {
            let p = self.c.plaintext();
            if !p.is_empty() {
                let n = p.len().min(buf.len());
                buf[..n].copy_from_slice(&p[..n]);
                self.c.consume_plaintext(n);
                return Ok(Io::Done(n));
            }
            if self.c.peer_closed() {
                return Ok(Io::Eof);
            }
            self.flush()?;
            match self.fill()? {
                None => return Ok(Io::Eof),
                Some(false) => return Ok(Io::Blocked),
                Some(true) => {}
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> Result<Io, Failure> {
        let n = self
            .c
            .send(buf)
            .map_err(|e| Failure::new(Kind::Tls, e.to_string()))?;
        self.flush()?;
        Ok(if n == 0 { Io::Blocked } else { Io::Done(n) })
    }

    fn close(&mut self) {
        self.c.close();
        let _ = self.flush();
    }

    fn negotiated(&self) -> Negotiated {
        let i = self.c.info();
        Negotiated {
            resumed: i.resumed,
            version: "TLSv1.3",
            cipher: suite_name(i.suite).to_string(),
        }
    }

    fn ticket_pending(&self) -> bool {
        self.keep_tickets && !self.reuse_ticket && !self.got_ticket
    }
}
