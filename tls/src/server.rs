//! The public face: [`ServerConn`], one TLS server connection, sans-IO.
//!
//! # Driving a connection
//! Inputs: [`ServerConn::read_tls`] (bytes from the client), [`ServerConn::complete`]
//! (a finished crypto job), [`ServerConn::send`] (plaintext for the client),
//! [`ServerConn::close`], [`ServerConn::handle_timeout`].
//! Outputs: [`ServerConn::take_job`] (crypto to run), [`ServerConn::pending_tls`] /
//! [`ServerConn::consume_tls`] (bytes for the client), [`ServerConn::plaintext`] /
//! [`ServerConn::consume_plaintext`] (bytes for the backend), [`ServerConn::deadline`].
//!
//! After any input, call [`ServerConn::process`]; then run the job if there is one and
//! hand its result to `complete`; then write out `pending_tls`. With record offload on,
//! application records are protected by record jobs the caller runs too
//! ([`crate::offload`]). Time is an argument
//! (milliseconds on any monotonic clock the caller likes); the engine has no clock,
//! socket or thread.
//!
//! # Errors
//! A failure moves the connection to a closed state, queues the alert
//! [`Error::alert`] chose (protected if keys are in use) and returns the error; the
//! caller writes out what is pending and closes the transport.
//!
//! # Legal message sequences
//! ```text
//! TLS 1.3 full:      CH  -> [job] -> SH (CCS) {EE Cert CV Fin}        <- {Fin}  -> traffic
//! TLS 1.3 with HRR:  CH1 -> HRR (CCS)  <- CH2 -> [job] -> ... as above
//! TLS 1.3 resumed:   CH  -> [job] -> SH (CCS) {EE Fin}                <- {Fin}  -> {NST} traffic
//! TLS 1.2 full:      CH  -> [job] -> SH Cert SKE SHD   <- CKE -> [job] <- CCS <- {Fin}
//!                                                  -> (NST) CCS {Fin}     -> traffic
//! TLS 1.2 resumed:   CH  -> [job] -> SH CCS {Fin}      <- CCS <- {Fin}    -> traffic
//! TLS 1.2 by ID:     CH  -> (store lookup, bounded wait) -> resumed or full as above
//! ```
//! A TLS 1.3 full handshake also ends with {NST} when tickets are on. With client
//! certificates asked for (full handshakes only):
//! ```text
//! TLS 1.3:  ... {EE CR Cert CV Fin}  <- {Cert} (<- {CV}) -> [job] <- {Fin} -> ({NST}) traffic
//! TLS 1.2:  ... SH Cert SKE CR SHD   <- Cert <- CKE (<- CV) -> [job] <- CCS <- {Fin} ...
//! ```
//! (CV only after a non-empty Certificate; the job verifies chain and signature.)
//! Each arrow state accepts only the next message named; anything else is
//! unexpected_message. TLS 1.3 clients may send one plaintext CCS before their
//! Finished (middlebox compatibility); it is ignored.

use std::sync::Arc;

use crypto_offload::{AeadAlg, Done, Group, HashAlg, Job, KeyKind, Secret, SigAlg};

use crate::jobs::{take, DigestCount};

use crate::config::{ServerConfig, SniRouter};
use crate::conn::Core;
use crate::error::{alert, Error};
use crate::msgs::{content, group, hs, scheme, suite, version, ClientHello};
use crate::record::{self, Content};
use crate::session::PendingLookup;
use crate::tls12::Candidate;

/// RFC 8446 §4.2.10: the server skips rejected early data "up to the configured
/// max_early_data_size". This one never offers early data, so it has no such size of
/// its own; it skips what clients holding another server's ticket send under the
/// common 16 KiB allowance (NGINX's and OpenSSL's default), counted as record bytes
/// with room for per-record overhead. More ends the handshake (unexpected_message).
pub const EARLY_DATA_SKIP_LIMIT: usize = 16_384 + 4_096;

/// Largest handshake message accepted (a ClientHello or client certificate chain).
pub const MAX_HANDSHAKE_MESSAGE: usize = 1 << 17;
/// Decrypted application bytes held for the backend before the engine stops decrypting.
pub const MAX_PLAINTEXT_BUFFERED: usize = 64 * 1024;
/// Protected bytes held for the client before [`ServerConn::send`] accepts no more.
pub const MAX_TLS_BUFFERED: usize = 64 * 1024;

/// What one [`ServerConn::seal_staged`] call produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sealed {
    pub records: usize,
    /// Plaintext bytes in them.
    pub bytes: usize,
}

/// What the handshake negotiated, and what it cost.
#[derive(Debug, Clone, Default)]
pub struct HandshakeInfo {
    pub version: u16,
    pub suite: u16,
    pub group: u16,
    pub scheme: u16,
    pub sni: Option<String>,
    pub alpn: Option<Vec<u8>>,
    /// Index of the site (in `ServerConfig::sites`) SNI chose.
    pub site: usize,
    pub extended_master_secret: bool,
    pub hello_retry: bool,
    /// Bytes of 0-RTT records skipped (RFC 8446 §4.2.10: early data is never taken).
    pub early_data_skipped: u64,
    /// An OCSP response was stapled (the client asked, and the certificate had a valid
    /// one).
    pub ocsp_stapled: bool,
    /// How the handshake resumed, if it did.
    pub resumed: Option<Resumed>,
    /// The client's verified certificate (DER) and its subject, when it sent one (a
    /// resumed session keeps the one it was made with).
    pub peer_certificate: Option<Vec<u8>>,
    pub peer_subject: Option<String>,
    /// Crypto jobs this handshake needed.
    pub jobs: u32,
    /// Transcript hashing: running hashes started and bytes fed, over all jobs.
    pub digest: DigestCount,
}

/// How a handshake resumed a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// TLS 1.2, session ID found in the store.
    SessionId,
    /// TLS 1.2, RFC 5077 ticket.
    Ticket,
    /// TLS 1.3 ticket, PSK with (EC)DHE.
    PskDheKe,
    /// TLS 1.3 ticket, PSK only.
    PskKe,
}

#[derive(Clone, Copy)]
pub(crate) struct SuiteInfo {
    pub hash: HashAlg,
    pub aead: AeadAlg,
    /// TLS 1.2 only: the suite requires an ECDSA (true) or RSA (false) certificate.
    pub ecdsa: Option<bool>,
}

/// The record AEAD of cipher suite `s` (TLS 1.2 or 1.3), if the engine serves it:
/// what a `socks5` vserver's secure datagrams are protected with.
pub fn suite_aead(s: u16) -> Option<AeadAlg> {
    suite_info(s).map(|i| i.aead)
}

pub(crate) fn suite_info(s: u16) -> Option<SuiteInfo> {
    use AeadAlg::*;
    use HashAlg::*;
    let (hash, aead, ecdsa) = match s {
        suite::TLS13_AES_128_GCM_SHA256 => (Sha256, Aes128Gcm, None),
        suite::TLS13_AES_256_GCM_SHA384 => (Sha384, Aes256Gcm, None),
        suite::TLS13_CHACHA20_POLY1305_SHA256 => (Sha256, Chacha20Poly1305, None),
        suite::ECDHE_ECDSA_AES128_GCM_SHA256 => (Sha256, Aes128Gcm, Some(true)),
        suite::ECDHE_ECDSA_AES256_GCM_SHA384 => (Sha384, Aes256Gcm, Some(true)),
        suite::ECDHE_ECDSA_CHACHA20_POLY1305 => (Sha256, Chacha20Poly1305, Some(true)),
        suite::ECDHE_RSA_AES128_GCM_SHA256 => (Sha256, Aes128Gcm, Some(false)),
        suite::ECDHE_RSA_AES256_GCM_SHA384 => (Sha384, Aes256Gcm, Some(false)),
        suite::ECDHE_RSA_CHACHA20_POLY1305 => (Sha256, Chacha20Poly1305, Some(false)),
        _ => return None,
    };
    Some(SuiteInfo { hash, aead, ecdsa })
}

pub(crate) fn group_of(g: u16) -> Option<Group> {
    match g {
        group::X25519 => Some(Group::X25519),
        group::SECP256R1 => Some(Group::P256),
        group::SECP384R1 => Some(Group::P384),
        group::SECP521R1 => Some(Group::P521),
        group::X448 => Some(Group::X448),
        group::X25519MLKEM768 => Some(Group::X25519MlKem768),
        _ => None,
    }
}

pub(crate) fn sig_alg_of(s: u16) -> SigAlg {
    match s {
        scheme::ECDSA_SECP256R1_SHA256 => SigAlg::EcdsaSha256,
        scheme::ECDSA_SECP384R1_SHA384 => SigAlg::EcdsaSha384,
        scheme::ECDSA_SECP521R1_SHA512 => SigAlg::EcdsaSha512,
        scheme::RSA_PSS_RSAE_SHA256 => SigAlg::RsaPssSha256,
        scheme::RSA_PSS_RSAE_SHA384 => SigAlg::RsaPssSha384,
        scheme::RSA_PSS_RSAE_SHA512 => SigAlg::RsaPssSha512,
        scheme::RSA_PKCS1_SHA256 => SigAlg::RsaPkcs1Sha256,
        scheme::RSA_PKCS1_SHA384 => SigAlg::RsaPkcs1Sha384,
        _ => SigAlg::RsaPkcs1Sha512,
    }
}

/// The signature scheme to use with a key of `kind`, from what the client offers.
/// TLS 1.3 binds ECDSA schemes to curves and forbids PKCS#1 v1.5 (RFC 8446 §4.2.3).
pub(crate) fn pick_scheme(kind: KeyKind, tls13: bool, ch: &ClientHello) -> Option<u16> {
    pick_scheme_of(kind, tls13, |s| ch.offers_scheme(s))
}

/// [`pick_scheme`] from any list of accepted schemes (a CertificateRequest's, for
/// the client role).
pub(crate) fn pick_scheme_of(
    kind: KeyKind,
    tls13: bool,
    accepts: impl Fn(u16) -> bool,
) -> Option<u16> {
    use scheme::*;
    let prefs: &[u16] = match (kind, tls13) {
        (KeyKind::EcdsaP256, true) => &[ECDSA_SECP256R1_SHA256],
        (KeyKind::EcdsaP384, true) => &[ECDSA_SECP384R1_SHA384],
        (KeyKind::EcdsaP256, false) => &[
            ECDSA_SECP256R1_SHA256,
            ECDSA_SECP384R1_SHA384,
            ECDSA_SECP521R1_SHA512,
        ],
        (KeyKind::EcdsaP384, false) => &[
            ECDSA_SECP384R1_SHA384,
            ECDSA_SECP256R1_SHA256,
            ECDSA_SECP521R1_SHA512,
        ],
        (KeyKind::Rsa { .. }, true) => &[
            RSA_PSS_RSAE_SHA256,
            RSA_PSS_RSAE_SHA384,
            RSA_PSS_RSAE_SHA512,
        ],
        (KeyKind::Rsa { .. }, false) => &[
            RSA_PSS_RSAE_SHA256,
            RSA_PSS_RSAE_SHA384,
            RSA_PSS_RSAE_SHA512,
            RSA_PKCS1_SHA256,
            RSA_PKCS1_SHA384,
            RSA_PKCS1_SHA512,
        ],
    };
    prefs.iter().copied().find(|&s| accepts(s))
}

/// What the connection waits for. Each state holds only what is valid in it.
pub(crate) enum State {
    /// The first ClientHello.
    ClientHello,
    /// The second ClientHello, after a HelloRetryRequest.
    RetriedClientHello(Box<crate::tls13::Retry>),
    /// A TLS 1.2 session ID lookup is in flight; the ClientHello waits with it.
    SessionLookup(Box<SessionLookup>),
    /// A crypto job is out; only its completion moves the connection on.
    Job(Pending),
    Tls13ClientCert(Box<crate::tls13::AwaitClientCert>),
    Tls13ClientCv(Box<crate::tls13::AwaitClientCert>),
    Tls13Finished(Box<crate::tls13::AwaitFinished>),
    Tls12ClientCert(Box<crate::tls12::AwaitClientKx>),
    Tls12ClientKx(Box<crate::tls12::AwaitClientKx>),
    Tls12ClientCv(Box<crate::tls12::AwaitClientKx>),
    Tls12Ccs(Box<crate::tls12::AwaitFinished>),
    Tls12Finished(Box<crate::tls12::AwaitFinished>),
    Traffic(Box<Traffic>),
    Closed,
}

/// Which completion a [`State::Job`] waits for, with what the next state needs.
pub(crate) enum Pending {
    Tls13Flight(Box<crate::tls13::FlightCtx>),
    Tls12Kx(Box<crate::tls12::KxCtx>),
    Tls12Finish(Box<crate::tls12::FinishCtx>),
    Tls12Resume(Box<crate::tls12::ResumeCtx>),
    Tls13ClientAuth(Box<crate::tls13::ClientAuthCtx>),
}

pub(crate) struct SessionLookup {
    hello: Vec<u8>,
    pending: Box<dyn PendingLookup>,
    /// Past this, the lookup counts as a miss.
    until_ms: u64,
}

/// Application traffic. TLS 1.3 keeps its traffic secrets for KeyUpdate.
pub(crate) struct Traffic {
    pub tls13: Option<crate::tls13::Secrets>,
}

/// One TLS server connection.
pub struct ServerConn {
    pub(crate) cfg: Arc<ServerConfig>,
    /// Configurations to choose from by SNI (then `cfg` is the chosen one).
    router: Option<Arc<SniRouter>>,
    /// Which configuration the ClientHello chose (0 without a router).
    chosen: Option<usize>,
    pub(crate) state: State,
    /// Records, buffers, the joiner and record offload: what both roles share.
    pub(crate) core: Core,
    job: Option<Job>,
    deadline: Option<u64>,
    /// The latest time the caller gave (at creation or in `handle_timeout`): sessions
    /// and tickets are dated and checked with it.
    pub(crate) now_ms: u64,
    pub(crate) info: HandshakeInfo,
    /// TLS 1.3: the client may send one compatibility CCS before its Finished.
    pub(crate) ccs_allowed: bool,
    /// RFC 8446 §4.2.10: while the client's 0-RTT records may come, how many more
    /// bytes of them are dropped. Early data is never accepted; a client that sends
    /// some (it holds a ticket from a server that allows it) has its records skipped,
    /// up to [`EARLY_DATA_SKIP_LIMIT`] bytes.
    pub(crate) early_skip: Option<usize>,
    pub(crate) error: Option<Error>,
    /// The ClientHello asked for a stapled OCSP response (RFC 6066 §8).
    pub(crate) status_request: bool,
    /// The first answer (ServerHello or HelloRetryRequest) has been written.
    answered: bool,
    /// Feature `hostile`: records to seal under the TLS 1.3 handshake key before the
    /// encrypted flight.
    #[cfg(feature = "hostile")]
    pub(crate) hostile_before_flight: Vec<(u8, Vec<u8>)>,
}

/// What a hostile server does that a correct one never would, for conformance tests of
/// the client role (feature `hostile`, enabled only by this crate's own tests).
#[cfg(feature = "hostile")]
impl ServerConn {
    /// Seal each `(content type, inner plaintext)` as one record under the TLS 1.3
    /// handshake key, ahead of EncryptedExtensions (a protected ChangeCipherSpec, say).
    pub fn hostile_before_flight(&mut self, records: Vec<(u8, Vec<u8>)>) {
        self.hostile_before_flight = records;
    }

    /// Seal each `(content type, inner plaintext)` as one record under the current
    /// write key, whatever it holds (data after close_notify, say).
    pub fn hostile_seal(&mut self, records: &[(u8, &[u8])]) -> Result<(), Error> {
        self.core.hostile_seal(records)
    }
}

impl ServerConn {
    /// A new connection; the handshake must finish by `now + handshake_timeout_ms`.
    pub fn new(cfg: Arc<ServerConfig>, now_ms: u64) -> Self {
        Self::build(cfg, None, now_ms)
    }

    /// A connection on a listener shared by several configurations: the ClientHello's
    /// SNI chooses one ([`SniRouter`]); [`ServerConn::chosen_config`] then says which.
    pub fn with_router(router: Arc<SniRouter>, now_ms: u64) -> Self {
        Self::build(router.configs()[0].clone(), Some(router), now_ms)
    }

    fn build(cfg: Arc<ServerConfig>, router: Option<Arc<SniRouter>>, now_ms: u64) -> Self {
        let deadline = Some(now_ms.saturating_add(cfg.handshake_timeout_ms));
        ServerConn {
            cfg,
            router,
            chosen: None,
            state: State::ClientHello,
            core: Core::new(MAX_HANDSHAKE_MESSAGE),
            job: None,
            deadline,
            now_ms,
            info: HandshakeInfo::default(),
            ccs_allowed: false,
            early_skip: None,
            error: None,
            status_request: false,
            answered: false,
            #[cfg(feature = "hostile")]
            hostile_before_flight: Vec::new(),
        }
    }

    // ----- getters

    /// The server's first answer to the client (its ServerHello flight, or a
    /// HelloRetryRequest) has been written to [`ServerConn::pending_tls`].
    pub fn answered(&self) -> bool {
        self.answered
    }

    pub fn is_handshaking(&self) -> bool {
        !matches!(self.state, State::Traffic(_) | State::Closed)
    }
    /// The handshake is done and application data flows.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Traffic(_))
    }

    /// Keying material from the connection's secrets (RFC 5705 for TLS 1.2, RFC 8446
    /// §7.5 for TLS 1.3), as OpenSSL's `SSL_export_keying_material` computes it:
    /// `len` bytes for `label` and `context` (`None`: no context, which TLS 1.2 tells
    /// from an empty one). Only once the handshake is complete; labels the protocol
    /// uses itself are refused.
    pub fn export_keying_material(
        &self,
        label: &[u8],
        context: Option<&[u8]>,
        len: usize,
    ) -> Result<crypto_offload::Secret, Error> {
        if !self.exporter_allowed() {
            return Err(Error::Misuse(
                "keying material from a TLS 1.2 connection without the extended master secret",
            ));
        }
        self.core.export(self.is_established(), label, context, len)
    }
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }
    /// The client sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.core.peer_closed
    }
    pub fn info(&self) -> &HandshakeInfo {
        &self.info
    }
    /// The index of the configuration this connection runs under, once the ClientHello
    /// has been read: the [`SniRouter`]'s choice, or 0 for a connection made with one
    /// configuration. `None` before (or if the ClientHello was unreadable).
    pub fn chosen_config(&self) -> Option<usize> {
        self.chosen
    }
    /// The error that closed the connection, if one did.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }
    /// When [`ServerConn::handle_timeout`] must be called (the handshake deadline).
    pub fn deadline(&self) -> Option<u64> {
        if !self.is_handshaking() {
            return None;
        }
        match &self.state {
            State::SessionLookup(l) => {
                Some(self.deadline.map_or(l.until_ms, |d| d.min(l.until_ms)))
            }
            _ => self.deadline,
        }
    }
    /// Whether the handshake waits for a session store's answer (a lookup in flight):
    /// the caller should process the connection again soon, event or not.
    pub fn awaiting_lookup(&self) -> bool {
        matches!(self.state, State::SessionLookup(_))
    }

    /// How many TLS bytes [`ServerConn::read_tls`] would take now.
    pub fn tls_room(&self) -> usize {
        if self.is_closed() {
            0
        } else {
            self.core.tls_room()
        }
    }

    // ----- inputs

    /// Take up to [`ServerConn::tls_room`] bytes from the client; returns how many.
    pub fn read_tls(&mut self, data: &[u8]) -> usize {
        if self.is_closed() {
            return 0;
        }
        self.core.read_tls(data)
    }

    /// Advance on whatever input is buffered.
    pub fn process(&mut self) -> Result<(), Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.core.loan.is_some() {
            return Ok(()); // records wait for the keys to come back
        }
        let r = self.process_records();
        self.check(r)
    }

    /// The crypto job the connection needs run, if any.
    pub fn take_job(&mut self) -> Option<Job> {
        self.job.take()
    }

    /// Apply a finished job, then carry on processing.
    pub fn complete(
        &mut self,
        done: Result<Done, crypto_offload::CryptoError>,
    ) -> Result<(), Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let r = self.apply(done).and_then(|_| self.process_records());
        self.check(r)
    }

    /// Queue plaintext for the client as protected records at once; returns how much
    /// was taken (0 before the handshake is done or while the output buffer is full).
    /// The same as [`ServerConn::stage`] then sealing everything staged.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, Error> {
        let n = self.stage(data);
        self.seal_staged(record::MAX_FRAGMENT, true)?;
        Ok(n)
    }

    /// How much plaintext [`ServerConn::stage`] would take now: the output bound less
    /// what is staged and what waits to go out.
    pub fn stage_room(&self) -> usize {
        if !self.is_established() || self.core.close_sent {
            return 0;
        }
        MAX_TLS_BUFFERED.saturating_sub(self.core.queued_out())
    }

    /// Hold plaintext for the client without sealing it yet, so that several small
    /// writes can leave as one record (the caller decides when, by its transmittal
    /// conditions, and calls [`ServerConn::seal_staged`]). Returns how much was taken.
    pub fn stage(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.stage_room());
        self.core.staged.extend_from_slice(&data[..n]);
        n
    }

    /// Plaintext bytes staged and not yet sealed (with record offload: not yet cut
    /// into records).
    pub fn staged(&self) -> usize {
        self.core.staged.len() - self.core.committed
    }

    /// Per-record overhead on the wire under the current write key: header, explicit
    /// nonce, TLS 1.3 content type and tag (plus padding, if configured, not counted).
    pub fn record_overhead(&self) -> usize {
        match self.core.write.as_ref().map(|w| w.mode) {
            Some(record::Protection::Tls13) => record::HEADER + 1 + crypto_offload::TAG_LEN,
            Some(record::Protection::Tls12Gcm) => record::HEADER + 8 + crypto_offload::TAG_LEN,
            Some(record::Protection::Tls12Chacha) | None => {
                record::HEADER + crypto_offload::TAG_LEN
            }
        }
    }

    /// Seal staged plaintext into records of at most `max_record` bytes (clamped to
    /// 1..=2^14): all of it when `all`, else only full-size records, the remainder
    /// staying staged. The records go to [`ServerConn::pending_tls`].
    pub fn seal_staged(&mut self, max_record: usize, all: bool) -> Result<Sealed, Error> {
        let q = max_record.clamp(1, record::MAX_FRAGMENT);
        let mut done = Sealed::default();
        if self.staged() == 0 || !self.is_established() {
            return Ok(done);
        }
        if self.core.offload {
            return Ok(self.core.cut_staged(q, all));
        }
        let pad = self.cfg.record_padding;
        let staged = std::mem::take(&mut self.core.staged);
        let mut pos = 0;
        let mut result = Ok(());
        while staged.len() - pos >= q || (all && pos < staged.len()) {
            let n = (staged.len() - pos).min(q);
            result = self.write_protected(content::APPLICATION_DATA, &staged[pos..pos + n], pad);
            if result.is_err() {
                break;
            }
            pos += n;
            done.records += 1;
            done.bytes += n;
        }
        // Keep what was not sealed, reusing the buffer.
        let mut staged = staged;
        staged.drain(..pos);
        self.core.staged = staged;
        self.check(result)?;
        Ok(done)
    }

    /// Send close_notify; nothing more can be sent afterwards.
    pub fn close(&mut self) {
        if self.core.close_sent || self.core.close_wanted || self.is_closed() {
            return;
        }
        let established = self.is_established();
        if self.core.offload && self.core.close_after_records(established) {
            return;
        }
        // Staged plaintext leaves before the close_notify: nothing is lost.
        let _ = self.seal_staged(record::MAX_FRAGMENT, true);
        self.core.close_sent = true;
        let _ = self.write_alert(alert::CLOSE_NOTIFY);
    }

    /// Give up a session lookup past its deadline (the handshake goes on in full), and
    /// fail the handshake if its own deadline has passed.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Result<(), Error> {
        self.now_ms = self.now_ms.max(now_ms);
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if matches!(&self.state, State::SessionLookup(l) if now_ms >= l.until_ms) {
            let State::SessionLookup(l) = std::mem::replace(&mut self.state, State::Closed) else {
                return Err(Error::Misuse("lookup state"));
            };
            let r = self
                .on_client_hello(l.hello, None, Some(None))
                .and_then(|_| self.process_records());
            self.check(r)?;
        }
        match self.deadline {
            Some(d) if self.is_handshaking() && now_ms >= d => {
                self.check(Err(Error::HandshakeTimeout))
            }
            _ => Ok(()),
        }
    }

    // ----- outputs

    /// Protected bytes waiting to go to the client.
    pub fn pending_tls(&self) -> &[u8] {
        self.core.pending_tls()
    }
    pub fn consume_tls(&mut self, n: usize) {
        self.core.consume_tls(n)
    }
    /// Decrypted application bytes waiting to go to the backend.
    pub fn plaintext(&self) -> &[u8] {
        self.core.plaintext()
    }
    pub fn consume_plaintext(&mut self, n: usize) {
        self.core.consume_plaintext(n)
    }

    /// [`ServerConn::consume_plaintext`] for bytes that held a secret (a password
    /// inside the tunnel): they are overwritten with zeros first.
    pub fn consume_plaintext_wiping(&mut self, n: usize) {
        let end = (self.core.app_pos + n).min(self.core.app_in.len());
        zeroize::Zeroize::zeroize(&mut self.core.app_in[self.core.app_pos..end]);
        crate::codec::consume(&mut self.core.app_in, &mut self.core.app_pos, n);
    }

    /// Frees the capacity of every buffer that holds nothing now (TLS input and output,
    /// the handshake joiner, decrypted plaintext, staged plaintext): for a connection
    /// about to sit idle, so that it holds no buffer memory until bytes come again
    /// (they allocate anew). Nothing buffered is touched; harmless at any time.
    pub fn release_idle_buffers(&mut self) {
        self.core.release_idle_buffers()
    }

    /// Keying material needs the extended master secret in TLS 1.2 (RFC 7627 §5.4:
    /// without it the master secret is not bound to the handshake, and what is
    /// exported from it could be shared with another connection).
    fn exporter_allowed(&self) -> bool {
        self.info.version != crate::msgs::version::TLS12 || self.info.extended_master_secret
    }

    // ----- internals

    /// [`ServerConn::check`] of an error.
    pub(crate) fn check_fail(&mut self, e: Error) -> Result<(), Error> {
        self.check(Err(e))
    }

    /// On error: remember it, queue its alert, close. The one place alerts are chosen.
    fn check(&mut self, r: Result<(), Error>) -> Result<(), Error> {
        if let Err(e) = &r {
            if self.error.is_none() {
                if let Some(a) = e.alert() {
                    let _ = self.write_alert(a);
                }
                self.error = Some(e.clone());
                self.state = State::Closed;
                self.job = None;
            }
        }
        r
    }

    fn write_alert(&mut self, desc: u8) -> Result<(), Error> {
        self.core.write_alert(desc)
    }

    pub(crate) fn write_plain_handshake(&mut self, msgs: &[&[u8]]) {
        self.answered = true;
        // Coalesce the messages into as few records as possible (one write).
        let total: usize = msgs.iter().map(|m| m.len()).sum();
        if total <= record::MAX_FRAGMENT {
            self.core.out.extend_from_slice(&[content::HANDSHAKE, 3, 3]);
            self.core
                .out
                .extend_from_slice(&(total as u16).to_be_bytes());
            for m in msgs {
                self.core.out.extend_from_slice(m);
            }
        } else {
            let joined: Vec<u8> = msgs.concat();
            record::write_plain(&mut self.core.out, content::HANDSHAKE, &joined);
        }
    }

    pub(crate) fn write_ccs(&mut self) {
        record::write_plain(&mut self.core.out, content::CHANGE_CIPHER_SPEC, &[1]);
    }

    /// Protected handshake messages, coalesced into full records.
    pub(crate) fn write_protected_handshake(&mut self, msgs: &[&[u8]]) -> Result<(), Error> {
        let joined: Vec<u8>;
        let data: &[u8] = if msgs.len() == 1 {
            msgs[0]
        } else {
            joined = msgs.concat();
            &joined
        };
        for chunk in data.chunks(record::MAX_FRAGMENT) {
            self.write_protected(content::HANDSHAKE, chunk, self.cfg.record_padding)?;
        }
        Ok(())
    }

    fn write_protected(&mut self, typ: u8, data: &[u8], pad: usize) -> Result<(), Error> {
        let w = self
            .core
            .write
            .as_mut()
            .ok_or(Error::Misuse("no write key"))?;
        w.seal(&mut self.core.out, typ, data, pad)
    }

    pub(crate) fn emit_job(&mut self, job: Job, pending: Pending) {
        self.info.jobs += 1;
        self.job = Some(job);
        self.state = State::Job(pending);
    }

    pub(crate) fn hs_buffer_empty(&self) -> bool {
        self.core.hs_buf.is_empty()
    }

    pub(crate) fn process_records(&mut self) -> Result<(), Error> {
        loop {
            if let State::SessionLookup(l) = &mut self.state {
                let Some(answer) = l.pending.poll() else {
                    return Ok(());
                };
                let State::SessionLookup(l) = std::mem::replace(&mut self.state, State::Closed)
                else {
                    return Err(Error::Misuse("lookup state"));
                };
                self.on_client_hello(l.hello, None, Some(answer))?;
                continue;
            }
            if matches!(self.state, State::Job(_) | State::Closed) || self.core.peer_closed {
                return Ok(());
            }
            if let Some(msg) = self.core.hs_buf.next_message()? {
                self.handle_handshake(msg)?;
                continue;
            }
            if self.core.app_in.len() - self.core.app_pos >= MAX_PLAINTEXT_BUFFERED {
                return Ok(()); // the backend is behind: leave records buffered
            }
            if self.core.next_for_job(self.is_established())? {
                return Ok(()); // for the next record job (`take_records`)
            }
            let Some(rec) = self.core.deframer.next_record()? else {
                return Ok(());
            };
            self.handle_record(rec)?;
        }
    }

    fn handle_record(&mut self, rec: record::RawRecord) -> Result<(), Error> {
        let header = self.core.deframer.header(&rec);
        let tls13 = self.info.version == version::TLS13;
        // RFC 8446 §5: a plaintext CCS may arrive between ClientHello and Finished.
        if tls13 && header[0] == content::CHANGE_CIPHER_SPEC {
            let body = self.core.deframer.body_mut(&rec);
            if !self.ccs_allowed || body != [1] {
                return Err(Error::UnexpectedMessage("change_cipher_spec"));
            }
            self.ccs_allowed = false;
            return Ok(());
        }
        // RFC 8446 §4.2.10: 0-RTT records from a client whose early data we do not
        // take. After a HelloRetryRequest (no read key yet) they are the records typed
        // application_data before the second ClientHello; otherwise the ones that do
        // not open under the client's handshake key, before the first that does.
        if tls13 && self.early_skip.is_some() && !self.is_established() {
            let retried = matches!(self.state, State::RetriedClientHello(_));
            if retried && self.core.read.is_none() && header[0] == content::APPLICATION_DATA {
                return self.skip_early(&rec);
            }
            if let Some(r) = self.core.read.as_mut() {
                let body = self.core.deframer.body_mut(&rec);
                return match r.open(header, body) {
                    Ok((typ, s, e)) => {
                        self.early_skip = None;
                        self.on_record(typ, &rec, s, e)
                    }
                    Err(_) => self.skip_early(&rec),
                };
            }
        }
        // A peer that failed before it had our keys (it could not check our Finished,
        // say) sends its alert in plaintext: an alert-typed record of two bytes while
        // TLS 1.3 protection is on is that, not a record that fails to open
        // (bad_record_mac). It ends the connection as the peer's abort; no alert
        // answers it. TLS 1.3 protected records are always typed application_data.
        if tls13
            && self.core.read.is_some()
            && header[0] == content::ALERT
            && rec.end - rec.start == 2
        {
            let body = self.core.deframer.body_mut(&rec);
            return Err(Error::PeerAlert(body[1]));
        }
        let (typ, s, e) = match self.core.read.as_mut() {
            Some(r) => {
                let body = self.core.deframer.body_mut(&rec);
                r.open(header, body)?
            }
            None => (header[0], 0, rec.end - rec.start),
        };
        // Protected records were length-checked by `Cipher::open`.
        if self.core.read.is_none() && e - s > record::MAX_FRAGMENT {
            return Err(Error::RecordOverflow);
        }
        self.on_record(typ, &rec, s, e)
    }

    /// Drops one 0-RTT record, within the budget.
    fn skip_early(&mut self, rec: &record::RawRecord) -> Result<(), Error> {
        let len = rec.end - rec.start;
        let left = self.early_skip.unwrap_or(0);
        if len > left {
            return Err(Error::UnexpectedMessage("more early data than is skipped"));
        }
        self.early_skip = Some(left - len);
        self.info.early_data_skipped += len as u64;
        Ok(())
    }

    /// A record's content (type `typ`, bytes `s..e` of its body), after any opening.
    pub(crate) fn on_record(
        &mut self,
        typ: u8,
        rec: &record::RawRecord,
        s: usize,
        e: usize,
    ) -> Result<(), Error> {
        let tls13 = self.info.version == version::TLS13;
        let established = self.is_established() && self.core.read.is_some();
        let body = &self.core.deframer.body_mut(rec)[s..e];
        match self
            .core
            .inbound
            .content(typ, body, tls13, !self.core.hs_buf.is_empty())?
        {
            Content::Handshake => self.core.hs_buf.push(body),
            Content::PeerClosed => {
                self.core.peer_closed = true;
                Ok(())
            }
            Content::Nothing => Ok(()),
            Content::ChangeCipherSpec => self.on_ccs12(),
            Content::AppData => {
                if !established {
                    return Err(Error::UnexpectedMessage(
                        "application data before the handshake finished",
                    ));
                }
                self.core.app_in.extend_from_slice(body);
                Ok(())
            }
        }
    }

    fn on_ccs12(&mut self) -> Result<(), Error> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Tls12Ccs(w) => self.tls12_ccs(w),
            other => {
                self.state = other;
                Err(Error::UnexpectedMessage("change_cipher_spec"))
            }
        }
    }

    fn handle_handshake(&mut self, msg: Vec<u8>) -> Result<(), Error> {
        let typ = msg[0];
        match std::mem::replace(&mut self.state, State::Closed) {
            State::ClientHello if typ == hs::CLIENT_HELLO => self.on_client_hello(msg, None, None),
            State::RetriedClientHello(r) if typ == hs::CLIENT_HELLO => {
                self.on_client_hello(msg, Some(r), None)
            }
            State::Tls13ClientCert(w) if typ == hs::CERTIFICATE => {
                self.tls13_client_certificate(w, msg)
            }
            State::Tls13ClientCv(w) if typ == hs::CERTIFICATE_VERIFY => {
                self.tls13_client_verify(w, msg)
            }
            State::Tls13Finished(w) if typ == hs::FINISHED => self.tls13_finished(*w, &msg),
            State::Tls12ClientCert(w) if typ == hs::CERTIFICATE => {
                self.tls12_client_certificate(w, msg)
            }
            State::Tls12ClientKx(w) if typ == hs::CLIENT_KEY_EXCHANGE => {
                self.tls12_client_kx(w, msg)
            }
            State::Tls12ClientCv(w) if typ == hs::CERTIFICATE_VERIFY => {
                self.tls12_client_verify(w, msg)
            }
            State::Tls12Finished(w) if typ == hs::FINISHED => self.tls12_finished(*w, &msg),
            State::Traffic(t) => self.traffic_handshake(t, &msg),
            _ => Err(Error::UnexpectedMessage("handshake message out of order")),
        }
    }

    fn traffic_handshake(&mut self, t: Box<Traffic>, msg: &[u8]) -> Result<(), Error> {
        let typ = msg[0];
        match t.tls13 {
            Some(_) if typ == hs::KEY_UPDATE => self.tls13_key_update(t, msg),
            None if typ == hs::CLIENT_HELLO => {
                // RFC 5746: renegotiation is refused with a warning; the connection goes on.
                self.state = State::Traffic(t);
                self.write_alert(alert::NO_RENEGOTIATION)
            }
            _ => Err(Error::UnexpectedMessage(
                "handshake message after the handshake",
            )),
        }
    }

    fn apply(&mut self, done: Result<Done, crypto_offload::CryptoError>) -> Result<(), Error> {
        let State::Job(pending) = std::mem::replace(&mut self.state, State::Closed) else {
            return Err(Error::Misuse("completion without a pending job"));
        };
        let done = done?;
        // Each pending step takes its own result type back; another is a misuse.
        let wrong = |_| Error::Misuse("completion of the wrong job");
        match pending {
            Pending::Tls13Flight(ctx) => self.tls13_flight_done(*ctx, take(done).map_err(wrong)?),
            Pending::Tls12Kx(ctx) => self.tls12_kx_done(*ctx, take(done).map_err(wrong)?),
            Pending::Tls12Finish(ctx) => self.tls12_finish_done(*ctx, take(done).map_err(wrong)?),
            Pending::Tls12Resume(ctx) => self.tls12_resume_done(*ctx, take(done).map_err(wrong)?),
            Pending::Tls13ClientAuth(ctx) => {
                self.tls13_client_auth_done(*ctx, take(done).map_err(wrong)?)
            }
        }
    }

    /// Common ClientHello processing: version, SNI, ALPN; then the version's own
    /// negotiation on the parsed hello, and its first step on the owned message.
    /// `looked_up` is a session store's late answer for this (TLS 1.2) hello.
    fn on_client_hello(
        &mut self,
        msg: Vec<u8>,
        retry: Option<Box<crate::tls13::Retry>>,
        looked_up: Option<Option<Secret>>,
    ) -> Result<(), Error> {
        let plan = {
            let ch = ClientHello::parse(&msg[4..])?;
            if retry.is_none() {
                self.route(ch.sni);
            }
            self.status_request = ch.status_request;
            // RFC 8446 appendix D.5: "Any endpoint receiving a Hello message with
            // ClientHello.legacy_version or ServerHello.legacy_version set to 0x0300 MUST
            // abort the handshake with a 'protocol_version' alert" (and so for anything
            // older), whatever supported_versions offers.
            if ch.legacy_version <= 0x0300 {
                return Err(Error::ProtocolVersion);
            }
            let offers13 = ch
                .versions()
                .is_some_and(|mut v| v.any(|x| x == version::TLS13));
            let offers12 = match ch.versions() {
                Some(mut v) => v.any(|x| x == version::TLS12),
                None => ch.legacy_version >= version::TLS12,
            };
            let tls13 = if self.cfg.tls13 && offers13 {
                true
            } else if self.cfg.tls12 && offers12 {
                false
            } else {
                return Err(Error::ProtocolVersion);
            };
            if retry.is_some() && !tls13 {
                return Err(Error::IllegalParameter(
                    "second ClientHello changed the version",
                ));
            }
            // RFC 7507: a fallback retry from a client that could have had our best version.
            if ch.offers_suite(suite::FALLBACK_SCSV) && self.cfg.tls13 && !tls13 {
                return Err(Error::InappropriateFallback);
            }
            if retry.is_none() {
                self.choose_site_and_alpn(&ch)?;
            }
            if tls13 {
                // RFC 8446 §4.2.10: early data follows the first hello only ("A client
                // MUST NOT include the early_data extension in its followup
                // ClientHello").
                if retry.is_some() && ch.early_data {
                    return Err(Error::IllegalParameter(
                        "early_data in the second ClientHello",
                    ));
                }
                self.early_skip =
                    (retry.is_none() && ch.early_data).then_some(EARLY_DATA_SKIP_LIMIT);
                self.info.version = version::TLS13;
                Plan::Tls13(self.tls13_negotiate(&ch, retry.as_deref())?)
            } else {
                self.info.version = version::TLS12;
                match self.tls12_candidate(&ch, looked_up) {
                    Candidate::Wait(pending) => Plan::Wait(pending),
                    Candidate::Found(s, how, renew) => {
                        Plan::Tls12(self.tls12_negotiate(&ch, Some((s, how, renew)))?)
                    }
                    Candidate::None => Plan::Tls12(self.tls12_negotiate(&ch, None)?),
                }
            }
        };
        match plan {
            Plan::Tls13(p) => self.tls13_start(p, msg, retry),
            Plan::Tls12(p) => self.tls12_start(p, msg),
            Plan::Wait(pending) => {
                let until_ms = self
                    .now_ms
                    .saturating_add(self.cfg.resumption.lookup_timeout_ms);
                self.state = State::SessionLookup(Box::new(SessionLookup {
                    hello: msg,
                    pending,
                    until_ms,
                }));
                Ok(())
            }
        }
    }

    /// With an SNI router, switch to the configuration the client's name chooses;
    /// before anything else in the ClientHello is looked at.
    fn route(&mut self, sni: Option<&[u8]>) {
        if let Some(router) = &self.router {
            let i = router.choose(sni);
            let chosen = router.configs()[i].clone();
            // The handshake deadline counts from the first byte under the chosen
            // configuration's own timeout.
            self.deadline = self.deadline.map(|d| {
                d.saturating_sub(self.cfg.handshake_timeout_ms)
                    .saturating_add(chosen.handshake_timeout_ms)
            });
            self.cfg = chosen;
            self.chosen = Some(i);
        } else {
            self.chosen = Some(0);
        }
    }

    fn choose_site_and_alpn(&mut self, ch: &ClientHello) -> Result<(), Error> {
        self.info.site = ch
            .sni
            .and_then(|n| crate::config::best_match(self.cfg.sites.iter().enumerate(), n))
            .unwrap_or(0);
        self.info.sni = ch.sni.map(|n| String::from_utf8_lossy(n).into_owned());
        let site = &self.cfg.sites[self.info.site];
        // RFC 7301 §3.2: with no protocol in common the server answers
        // no_application_protocol; a site without ALPN configured ignores the offer.
        if let (false, Some(offered)) = (site.alpn.is_empty(), ch.alpn()) {
            let offered: Vec<&[u8]> = offered.collect();
            match site.alpn.iter().find(|p| offered.contains(&p.as_slice())) {
                Some(p) => self.info.alpn = Some(p.clone()),
                None => return Err(Error::NoApplicationProtocol),
            }
        }
        Ok(())
    }

    /// Whether the server acknowledges SNI (RFC 6066 §3): the name chose a site.
    pub(crate) fn sni_acknowledged(&self) -> bool {
        self.info
            .sni
            .as_deref()
            .is_some_and(|n| self.cfg.sites[self.info.site].serves(n.as_bytes()))
    }

    pub(crate) fn site_certs(&self) -> &[Arc<crate::config::CertifiedKey>] {
        &self.cfg.sites[self.info.site].certs
    }

    /// The session this connection makes (for a ticket or the store): the negotiated
    /// name and protocol, dated now; the secret and the peer are filled in later.
    pub(crate) fn new_session(&self, version: u16, suite: u16) -> crate::session::Session {
        crate::session::Session {
            version,
            suite,
            ems: false,
            created_ms: self.now_ms,
            lifetime_s: self.cfg.resumption.lifetime_s,
            age_add: 0,
            sni: self
                .info
                .sni
                .as_ref()
                .map(|n| n.to_ascii_lowercase().into_bytes()),
            alpn: self.info.alpn.clone(),
            peer: None,
            secret: Secret::default(),
        }
    }

    /// A ticket for `s`, sealed by whichever job derives its secret (`None` without
    /// ticket keys).
    pub(crate) fn ticket_request(
        &self,
        s: &crate::session::Session,
    ) -> Option<crate::jobs::TicketRequest> {
        let keys = self.cfg.resumption.tickets.as_ref()?;
        Some(crate::jobs::TicketRequest {
            keys: keys.clone(),
            now_ms: self.now_ms,
            state: s.encode_state(),
            lifetime_s: s.lifetime_s,
            age_add: s.age_add,
        })
    }

    /// The client-auth settings a client-certificate state relies on.
    pub(crate) fn client_auth(&self) -> Result<Arc<crate::config::ClientAuth>, Error> {
        self.cfg
            .client_auth
            .clone()
            .ok_or(Error::Misuse("client certificate without client auth"))
    }

    /// The chain of a client Certificate message (either version); an empty one is
    /// refused when certificates are required.
    pub(crate) fn client_chain(&self, msg: &[u8], tls13: bool) -> Result<Vec<Vec<u8>>, Error> {
        let chain = crate::msgs::parse_certificate(&msg[4..], tls13)?;
        if chain.is_empty() && self.client_auth()?.required {
            return Err(Error::CertificateRequired { tls13 });
        }
        Ok(chain)
    }

    /// A session resumes here only if it satisfies today's client-auth policy: a
    /// vserver that requires certificates does not resume anonymous sessions.
    pub(crate) fn peer_acceptable(&self, s: &crate::session::Session) -> bool {
        let required = self.cfg.client_auth.as_ref().is_some_and(|a| a.required);
        !required || s.peer.is_some()
    }

    /// A resumed session's client identity.
    pub(crate) fn restore_peer(&mut self, peer: Option<Vec<u8>>) {
        self.info.peer_subject = peer
            .as_deref()
            .and_then(|d| crypto_offload::prim::certificate_subject(d).ok());
        self.info.peer_certificate = peer;
    }

    pub(crate) fn start_traffic(&mut self, tls13: Option<crate::tls13::Secrets>) {
        self.state = State::Traffic(Box::new(Traffic { tls13 }));
        self.deadline = None;
    }
}

/// What a ClientHello negotiated, owned, so the message itself can move on.
enum Plan {
    Tls13(crate::tls13::Plan),
    Tls12(crate::tls12::Plan),
    /// A session store lookup must answer first.
    Wait(Box<dyn PendingLookup>),
}
