//! What the event loop needs from a TLS client library, and the libssl (OpenSSL 3)
//! implementation of it. The loop owns sockets, timing and HTTP; an engine owns only
//! the TLS connection over a non-blocking stream it is handed (kernel socket or the
//! `--dpdk` stack's connection, see [`super::net`]).

use std::cell::RefCell;
use std::io;

use foreign_types::ForeignType;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslSession, SslSessionCacheMode, SslStream,
    SslVerifyMode, SslVersion,
};
use openssl::x509::X509VerifyResult;

use super::args::{Args, Resume, Version};
use super::net::Stream;
use super::report::{Failure, Kind};

/// The outcome of a read or write that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// This many bytes moved.
    Done(usize),
    /// Nothing moved: wait for the socket.
    Blocked,
    /// The peer closed (close_notify or TCP FIN).
    Eof,
}

/// What a finished handshake negotiated.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub resumed: bool,
    pub version: &'static str,
    pub cipher: String,
}

/// One TLS client connection over a non-blocking stream.
pub trait Conn {
    /// Moves the handshake on: `Ok(true)` once it is complete.
    fn handshake(&mut self) -> Result<bool, Failure>;
    fn read(&mut self, buf: &mut [u8]) -> Result<Io, Failure>;
    fn write(&mut self, buf: &[u8]) -> Result<Io, Failure>;
    /// Sends close_notify if it can without waiting; never waits for the peer's.
    fn close(&mut self);
    fn negotiated(&self) -> Negotiated;
    /// Resume mode: this connection must still receive a ticket before it is done
    /// (an engine that uses each ticket once); libssl's does not.
    fn ticket_pending(&self) -> bool {
        false
    }
}

/// Makes connections. One per event-loop thread; resumption state is per thread.
pub trait Engine {
    type Conn: Conn;
    fn open(&self, tcp: Stream) -> Result<Self::Conn, Failure>;
    /// A session to resume is held (resume mode primes one with a full handshake first).
    fn has_session(&self) -> bool;
}

thread_local! {
    /// The latest session the thread's connections were given (the new-session
    /// callback runs on the thread that drives the connection). It is never handed to
    /// a connection itself: libssl marks a TLS 1.3 session not resumable once a
    /// handshake has used it, so each connection gets a copy (see [`fresh_copy`]).
    static SESSION: RefCell<Option<SslSession>> = const { RefCell::new(None) };
}

extern "C" {
    // libssl ≥ 1.1.1; not wrapped by the `openssl` crate.
    fn SSL_SESSION_dup(src: *const openssl_sys::SSL_SESSION) -> *mut openssl_sys::SSL_SESSION;
}

/// A copy of `s` that no handshake has used. The copy shares the peer certificate
/// (reference-counted), so it costs an allocation, not a parse.
fn fresh_copy(s: &SslSession) -> Option<SslSession> {
    // SAFETY: `s` is a valid session; SSL_SESSION_dup returns a new owned session or
    // NULL, and `from_ptr` takes ownership of exactly that reference.
    unsafe {
        let p = SSL_SESSION_dup(s.as_ptr());
        (!p.is_null()).then(|| SslSession::from_ptr(p))
    }
}

/// libssl as the client: the reference, for results comparable with other tools.
#[derive(Clone)]
pub struct Libssl {
    ctx: SslContext,
    sni: Option<String>,
    verify_ip: Option<std::net::IpAddr>,
    verify: bool,
    resume: bool,
}

impl Libssl {
    /// Builds the shared context. A setting OpenSSL rejects is an error naming its flag.
    pub fn new(a: &Args) -> Result<Libssl, String> {
        fn flag(f: &'static str) -> impl Fn(openssl::error::ErrorStack) -> String {
            move |e| format!("{f}: OpenSSL rejects it: {e}")
        }
        let mut b = SslContext::builder(SslMethod::tls_client())
            .map_err(|e| format!("cannot create an OpenSSL context: {e}"))?;
        let (min, max) = match a.version {
            Version::Any => (SslVersion::TLS1_2, SslVersion::TLS1_3),
            Version::Tls12 => (SslVersion::TLS1_2, SslVersion::TLS1_2),
            Version::Tls13 => (SslVersion::TLS1_3, SslVersion::TLS1_3),
        };
        b.set_min_proto_version(Some(min)).map_err(flag("--tls"))?;
        b.set_max_proto_version(Some(max)).map_err(flag("--tls"))?;
        if let Some(c) = &a.ciphers {
            b.set_cipher_list(c).map_err(flag("--ciphers"))?;
        }
        if let Some(c) = &a.ciphersuites {
            b.set_ciphersuites(c).map_err(flag("--ciphersuites"))?;
        }
        if let Some(g) = &a.groups {
            b.set_groups_list(g).map_err(flag("--groups"))?;
        }
        if let Some(s) = &a.sigalgs {
            b.set_sigalgs_list(s).map_err(flag("--sigalgs"))?;
        }
        if !a.alpn.is_empty() {
            let mut wire = Vec::new();
            for p in &a.alpn {
                wire.push(p.len() as u8);
                wire.extend_from_slice(p.as_bytes());
            }
            b.set_alpn_protos(&wire).map_err(flag("--alpn"))?;
        }
        if a.verify {
            b.set_verify(SslVerifyMode::PEER);
            match &a.ca {
                Some(ca) => b
                    .set_ca_file(ca)
                    .map_err(|e| format!("--ca: cannot load {}: {e}", ca.display()))?,
                None => b.set_default_verify_paths().map_err(|e| {
                    format!("cannot load the system CAs (use --ca or --no-verify): {e}")
                })?,
            }
        } else {
            b.set_verify(SslVerifyMode::NONE);
        }
        let resume = a.resume.is_some();
        if resume {
            b.set_session_cache_mode(SslSessionCacheMode::CLIENT);
            b.set_new_session_callback(|_, s| SESSION.with(|c| *c.borrow_mut() = Some(s)));
        }
        match a.resume {
            // Without a ticket the server can only resume by session ID.
            Some(Resume::SessionId) => b.set_options(SslOptions::NO_TICKET),
            _ => b.clear_options(SslOptions::NO_TICKET),
        };
        let verify_ip = match &a.sni {
            Some(_) => None,
            None => Some(a.target.ip()),
        };
        Ok(Libssl {
            ctx: b.build(),
            sni: a.sni.clone(),
            verify_ip,
            verify: a.verify,
            resume,
        })
    }
}

impl Engine for Libssl {
    type Conn = LibsslConn;

    fn open(&self, tcp: Stream) -> Result<LibsslConn, Failure> {
        let setup = |e: openssl::error::ErrorStack| Failure::new(Kind::Handshake, e.to_string());
        let mut ssl = Ssl::new(&self.ctx).map_err(setup)?;
        if let Some(name) = &self.sni {
            ssl.set_hostname(name).map_err(setup)?;
        }
        if self.verify {
            match (&self.sni, self.verify_ip) {
                (Some(name), _) => ssl.param_mut().set_host(name).map_err(setup)?,
                (None, Some(ip)) => ssl.param_mut().set_ip(ip).map_err(setup)?,
                (None, None) => {}
            }
        }
        if self.resume {
            SESSION.with(|c| -> Result<(), Failure> {
                if let Some(s) = c.borrow().as_ref().and_then(fresh_copy) {
                    // SAFETY: the session was made by a context with the same settings
                    // (this one), which is what SSL_set_session requires.
                    unsafe { ssl.set_session(&s).map_err(setup)? };
                }
                Ok(())
            })?;
        }
        ssl.set_connect_state();
        let s = SslStream::new(ssl, tcp).map_err(setup)?;
        Ok(LibsslConn { s })
    }

    fn has_session(&self) -> bool {
        SESSION.with(|c| c.borrow().is_some())
    }
}

pub struct LibsslConn {
    s: SslStream<Stream>,
}

impl LibsslConn {
    /// Classifies a libssl error that is not a "want read/write".
    fn failure(&self, e: openssl::ssl::Error, handshaking: bool) -> Result<Io, Failure> {
        match e.code() {
            ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => return Ok(Io::Blocked),
            ErrorCode::ZERO_RETURN => return Ok(Io::Eof),
            _ => {}
        }
        if let Some(io) = e.io_error() {
            if io.kind() == io::ErrorKind::WouldBlock {
                return Ok(Io::Blocked);
            }
            return Err(io_failure(io));
        }
        let reason = e
            .ssl_error()
            .and_then(|st| st.errors().first())
            .and_then(|x| x.reason())
            .unwrap_or("")
            .to_string();
        // The peer closing TCP without close_notify: EOF to the caller, which knows
        // whether the response was complete.
        if e.code() == ErrorCode::SYSCALL || reason.contains("unexpected eof") {
            return if handshaking {
                Err(Failure::new(
                    Kind::Closed,
                    "the server closed during the handshake",
                ))
            } else {
                Ok(Io::Eof)
            };
        }
        let verify = self.s.ssl().verify_result();
        if handshaking && verify != X509VerifyResult::OK {
            return Err(Failure::new(Kind::Verify, verify.error_string()));
        }
        let kind = if reason.contains("alert") {
            Kind::Alert
        } else if handshaking {
            Kind::Handshake
        } else {
            Kind::Tls
        };
        let detail = if reason.is_empty() {
            e.to_string()
        } else {
            reason
        };
        Err(Failure::new(kind, detail))
    }
}

/// A socket error's kind.
pub fn io_failure(e: &io::Error) -> Failure {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionRefused => Kind::ConnectRefused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Kind::Reset,
        _ => Kind::Io,
    };
    Failure::new(kind, e.to_string())
}

impl Conn for LibsslConn {
    fn handshake(&mut self) -> Result<bool, Failure> {
        match self.s.connect() {
            Ok(()) => Ok(true),
            Err(e) => match self.failure(e, true)? {
                Io::Blocked => Ok(false),
                _ => Err(Failure::new(
                    Kind::Closed,
                    "the server closed during the handshake",
                )),
            },
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<Io, Failure> {
        match self.s.ssl_read(buf) {
            Ok(0) => Ok(Io::Eof),
            Ok(n) => Ok(Io::Done(n)),
            Err(e) => self.failure(e, false),
        }
    }

    fn write(&mut self, buf: &[u8]) -> Result<Io, Failure> {
        match self.s.ssl_write(buf) {
            Ok(n) => Ok(Io::Done(n)),
            Err(e) => self.failure(e, false),
        }
    }

    fn close(&mut self) {
        // One attempt: queues close_notify; the socket is closed right after.
        let _ = self.s.shutdown();
    }

    fn negotiated(&self) -> Negotiated {
        let ssl = self.s.ssl();
        Negotiated {
            resumed: ssl.session_reused(),
            version: ssl.version_str(),
            cipher: ssl
                .current_cipher()
                .map_or_else(|| "none".to_string(), |c| c.name().to_string()),
        }
    }
}
